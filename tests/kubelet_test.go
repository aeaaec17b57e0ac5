package tests

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestKubelet runs static pods with a real kubelet v1.37.2 whose whole
// runtime is pve-image cri, on the Proxmox simulator with real LXC, the
// daemon on the "node" (--lxc-path) and logged in as root@pam. Pods run
// side by side: a long-running one with exec probes, a hostPath volume and
// a log kubelet serves; Jobs that succeed and fail; OnFailure restarts; a
// failing liveness probe; a missing image; a hostNetwork pod (refused with
// the reason, never churned); a changed manifest. At the end every
// manifest goes and nothing is left, on Proxmox either.
func TestKubelet(t *testing.T) {
	RequireKubelet(t)
	sim := startNodeSim(t)
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "library/bb:1", shellImage(t, v1.Config{Entrypoint: []string{"/app"}, Cmd: []string{"report", "wait-signal"}, Env: []string{"PATH=/bin"}}))
	// No --pod-cidr: the pod range is kubelet's (UpdateRuntimeConfig).
	d := nodeDaemon(t, newCLI(t), sim, reg, "")
	k := StartKubelet(t, KubeletOptions{CRIEndpoint: d.Socket, Verbosity: 3, PodCIDR: "10.88.11.0/24", ClusterDNS: []string{"10.96.0.10"}})
	image := reg.Host + "/library/bb:1"

	data := filepath.Join(k.Dir, "data")
	os.MkdirAll(data, 0o755)
	os.WriteFile(filepath.Join(data, "hello"), []byte("from a hostPath volume\n"), 0o644)

	pod := func(name, restart, body string) {
		k.WritePod(t, name, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\nspec:\n  restartPolicy: %s\n  terminationGracePeriodSeconds: 3\n%s", name, restart, body))
	}
	container := func(command string, extra string) string {
		return fmt.Sprintf("  containers:\n  - name: app\n    image: %s\n    command: [sh, -c, %q]\n%s", image, command, extra)
	}
	pod("long", "Always", container(`echo "hello from long"; cat /data/hello; touch /tmp/ready; i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 2; done`, `
    readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1}
    livenessProbe: {exec: {command: ["true"]}, periodSeconds: 2}
    volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
  volumes: [{name: data, hostPath: {path: `+data+`, type: Directory}}]
`))
	pod("job-ok", "Never", container(`echo "job done"; exit 0`, ""))
	pod("job-fail", "Never", container(`echo "job failed" >&2; exit 3`, ""))
	pod("onfailure", "OnFailure", container(`echo "failing"; exit 3`, ""))
	pod("liveness", "Always", container(`touch /tmp/alive; sleep 4; rm /tmp/alive; while true; do sleep 1; done`, `
    livenessProbe: {exec: {command: [cat, /tmp/alive]}, periodSeconds: 1, failureThreshold: 1}
`))
	k.WritePod(t, "missing", fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: missing\nspec:\n  containers:\n  - name: app\n    image: %s/library/nope:1\n", reg.Host))
	pod("hostnet", "Always", "  hostNetwork: true\n"+container("sleep 3600", ""))
	pod("change", "Always", container(`echo "version 1"; while true; do sleep 1; done`, ""))

	running := func(p Pod) bool {
		c, ok := p.Container("app")
		return ok && c.State.Running != nil
	}
	long := k.WaitPod(t, "long", 3*time.Minute, func(p Pod) bool {
		c, ok := p.Container("app")
		return ok && c.Ready && p.Condition("Ready") == "True"
	})
	firstSeen := time.Now()
	requestsBefore := sim.RequestsExact("GET", "/nodes/pve1/lxc")
	if ip, err := netip.ParseAddr(long.Status.PodIP); err != nil || !netip.MustParsePrefix("10.88.11.0/24").Contains(ip) {
		t.Errorf("pod IP %q, want one of kubelet's podCIDR", long.Status.PodIP)
	}

	t.Run("job succeeds", func(t *testing.T) {
		p := k.WaitPod(t, "job-ok", 2*time.Minute, func(p Pod) bool { return p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed" })
		c, _ := p.Container("app")
		if p.Status.Phase != "Succeeded" || c.State.Terminated == nil || c.State.Terminated.ExitCode != 0 || c.State.Terminated.Reason != "Completed" {
			t.Errorf("a job that exits 0:\n%s", p)
		}
		if logs := k.ContainerLogs(t, "default", "job-ok", "app"); logs != "job done\n" {
			t.Errorf("its log: %q", logs)
		}
	})
	t.Run("job fails", func(t *testing.T) {
		p := k.WaitPod(t, "job-fail", 2*time.Minute, func(p Pod) bool { return p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed" })
		c, _ := p.Container("app")
		if p.Status.Phase != "Failed" || c.State.Terminated == nil || c.State.Terminated.ExitCode != 3 || c.State.Terminated.Reason != "Error" {
			t.Errorf("a job that exits 3:\n%s", p)
		}
	})
	t.Run("OnFailure restarts", func(t *testing.T) {
		p := k.WaitPod(t, "onfailure", 2*time.Minute, func(p Pod) bool { c, _ := p.Container("app"); return c.RestartCount >= 1 })
		c, _ := p.Container("app")
		if c.LastState.Terminated == nil || c.LastState.Terminated.ExitCode != 3 {
			t.Errorf("restarted after exit 3:\n%s", p)
		}
	})
	t.Run("failing liveness probe restarts", func(t *testing.T) {
		p := k.WaitPod(t, "liveness", 2*time.Minute, func(p Pod) bool { c, _ := p.Container("app"); return c.RestartCount >= 1 })
		c, _ := p.Container("app")
		if c.LastState.Terminated == nil {
			t.Errorf("restarted without a last state:\n%s", p)
		}
		if !strings.Contains(k.Log(), "failed liveness probe, will be restarted") {
			t.Errorf("kubelet's log does not say the liveness probe failed")
		}
	})
	t.Run("missing image", func(t *testing.T) {
		p := k.WaitPod(t, "missing", 2*time.Minute, func(p Pod) bool {
			c, _ := p.Container("app")
			return c.State.Waiting != nil && (c.State.Waiting.Reason == "ImagePullBackOff" || c.State.Waiting.Reason == "ErrImagePull")
		})
		if c, _ := p.Container("app"); !strings.Contains(c.State.Waiting.Message, "library/nope:1") {
			t.Errorf("the pull error does not name the image:\n%s", p)
		}
	})
	t.Run("hostNetwork is refused, not churned", func(t *testing.T) {
		for deadline := time.Now().Add(time.Minute); !strings.Contains(k.Log(), "asks for the node's network (hostNetwork: true)"); time.Sleep(500 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("kubelet never reported the refusal; daemon log:\n%s", d.log())
			}
		}
		if p, _ := k.PodByName(t, "hostnet"); running(p) {
			t.Errorf("a hostNetwork pod runs:\n%s", p)
		}
		if pods := d.crictlOK(t, "pods", "--name", "hostnet", "-q"); strings.TrimSpace(pods) != "" {
			t.Errorf("sandboxes of the refused pod: %q", pods)
		}
	})
	t.Run("a changed manifest replaces the container", func(t *testing.T) {
		k.WaitPod(t, "change", 2*time.Minute, running)
		old := strings.TrimSpace(d.crictlOK(t, "ps", "-q", "--name", "app", "--label", "io.kubernetes.pod.name="+k.PodName("change")))
		pod("change", "Always", container(`echo "version 2"; while true; do sleep 1; done`, ""))
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
			p, ok := k.PodByName(t, "change")
			// Between the versions kubelet answers 400 for the logs.
			if _, logs := k.Get(t, "/containerLogs/default/"+k.PodName("change")+"/app"); ok && running(p) && strings.Contains(logs, "version 2") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the new version never ran:\n%s", p)
			}
		}
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
			if ps := d.crictlOK(t, "ps", "-q"); old == "" || !strings.Contains(ps, old) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the old container %s still runs", old)
			}
		}
	})

	t.Run("a long-running pod keeps its sandbox", func(t *testing.T) {
		if wait := time.Minute - time.Since(firstSeen); wait > 0 {
			time.Sleep(wait)
		}
		p, _ := k.PodByName(t, "long")
		c, _ := p.Container("app")
		if !running(p) || !c.Ready || c.RestartCount != 0 || p.Metadata.UID != long.Metadata.UID || p.Status.PodIP != long.Status.PodIP {
			t.Errorf("after a minute:\n%s", p)
		}
		if pods := strings.Fields(d.crictlOK(t, "pods", "-q", "--label", "io.kubernetes.pod.uid="+long.Metadata.UID)); len(pods) != 1 {
			t.Errorf("the pod has %d sandboxes, want 1", len(pods))
		}
		if ctrs := strings.Fields(d.crictlOK(t, "ps", "-a", "-q", "--label", "io.kubernetes.pod.uid="+long.Metadata.UID)); len(ctrs) != 1 {
			t.Errorf("the pod has %d containers, want 1", len(ctrs))
		}
		if strings.Contains(k.Log(), "has no IP address. Need to start a new one") || strings.Contains(k.Log(), "Sandbox for pod has changed") {
			t.Error("kubelet wanted a new sandbox for a pod")
		}
		// kubelet asks for every container's state every second; one
		// container list a second answers all of it.
		secs := time.Since(firstSeen).Seconds()
		if n := sim.RequestsExact("GET", "/nodes/pve1/lxc") - requestsBefore; float64(n) > secs+2 {
			t.Errorf("%d container list requests in %.0f s", n, secs)
		}
		if n := sim.Requests("GET", "/nodes/pve1/lxc/") - 0; n > 40 {
			t.Errorf("%d requests about single containers: status calls should not reach Proxmox", n)
		}
	})
	t.Run("logs", func(t *testing.T) {
		logs := k.ContainerLogs(t, "default", "long", "app")
		for _, want := range []string{"hello from long\n", "from a hostPath volume\n", "tick 1\n"} {
			if !strings.Contains(logs, want) {
				t.Errorf("/containerLogs lacks %q:\n%s", want, logs)
			}
		}
		id := strings.TrimSpace(d.crictlOK(t, "ps", "-q", "--label", "io.kubernetes.pod.uid="+long.Metadata.UID))
		if out := d.crictlOK(t, "logs", id); !strings.Contains(out, "hello from long") {
			t.Errorf("crictl logs:\n%s", out)
		}
		// kubectl logs -f: new lines arrive while kubelet follows the file.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", k.URL+"/containerLogs/default/"+k.PodName("long")+"/app?follow=true&sinceSeconds=1", nil)
		resp, err := k.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		seen := 0
		for sc.Scan() && seen < 2 {
			if strings.HasPrefix(sc.Text(), "tick ") {
				seen++
			}
		}
		if seen < 2 {
			t.Errorf("following the log gave %d new ticks in 20 s", seen)
		}
	})

	t.Run("deleted manifests leave nothing", func(t *testing.T) {
		for _, name := range []string{"long", "job-ok", "job-fail", "onfailure", "liveness", "missing", "hostnet", "change"} {
			k.RemovePod(t, name)
		}
		for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(2 * time.Second) {
			pods, ctrs := d.crictlOK(t, "pods", "-q"), d.crictlOK(t, "ps", "-a", "-q")
			cts := sim.Containers("pve1")
			if strings.TrimSpace(pods+ctrs) == "" && len(cts) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("left after the manifests went: pods %q containers %q Proxmox containers %v", pods, ctrs, cts)
			}
		}
	})
}
