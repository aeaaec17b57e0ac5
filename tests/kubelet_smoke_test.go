package tests

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestKubeletHarness checks the harness that runs a real kubelet
// (testenv.StartKubelet) against `pve-image cri` on the Proxmox simulator:
// kubelet starts and answers /healthz, picks up a static pod manifest,
// lists the pod under its static-pod name, and pulls the pod's image
// through the daemon. It asserts nothing about the pod running: that is
// for the kubelet tests proper.
func TestKubeletHarness(t *testing.T) {
	RequireKubelet(t)
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "library/kweb:1", appImage(t, "kubelet-harness", v1.Config{Entrypoint: []string{"/app"}, Cmd: []string{"report", "wait-signal"}}))
	sim := startSim(t, pvesim.Options{})
	c := newCLI(t)
	d := startCRI(t, c, pveArgs(sim, "--rootfs-storage", "shared")...)
	// At -v 3 kubelet logs the events it would post (Pulling, Pulled, ...).
	k := StartKubelet(t, KubeletOptions{CRIEndpoint: d.Socket, Verbosity: 3})

	if code, body := k.Get(t, "/healthz"); code != http.StatusOK || body != "ok" {
		t.Fatalf("kubelet /healthz: %d %q", code, body)
	}
	if pods := k.Pods(t); len(pods) != 0 {
		t.Errorf("a new kubelet lists pods: %v", pods)
	}

	image := reg.Host + "/library/kweb:1"
	k.WritePod(t, "kweb", fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: kweb
  labels: {app: kweb}
spec:
  containers:
  - name: app
    image: %s
    args: [report, wait-signal]
`, image))
	pod := k.WaitPod(t, "kweb", 30*time.Second, func(p Pod) bool { return p.Metadata.UID != "" })
	if pod.Metadata.Name != "kweb-"+k.NodeName || pod.Metadata.Namespace != "default" {
		t.Errorf("static pod listed as %s/%s, want default/kweb-%s", pod.Metadata.Namespace, pod.Metadata.Name, k.NodeName)
	}
	if src := pod.Metadata.Annotations["kubernetes.io/config.source"]; src != "file" {
		t.Errorf("config.source annotation %q, want file:\n%s", src, pod)
	}
	if p, ok := k.PodByName(t, "kweb"); !ok || p.Metadata.UID != pod.Metadata.UID {
		t.Errorf("PodByName(kweb) = %v %v", p.Metadata, ok)
	}
	if p, ok := k.PodByName(t, pod.Metadata.Name); !ok || p.Metadata.UID != pod.Metadata.UID {
		t.Errorf("PodByName(%s) = %v %v", pod.Metadata.Name, p.Metadata, ok)
	}

	// kubelet pulls the image through the daemon's ImageService.
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if imgs := d.crictlOK(t, "images"); strings.Contains(imgs, reg.Host+"/library/kweb") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubelet did not pull %s; crictl images:\n%s", image, d.crictlOK(t, "images"))
		}
	}
	// And it says so in its log.
	pulled := `reason="Pulled" message="Successfully pulled image \"` + image + `\"`
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(k.Log(), pulled); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("kubelet's log lacks the Pulled event (%s)", pulled)
			break
		}
	}

	// Removing the manifest removes the pod.
	k.RemovePod(t, "kweb")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, ok := k.PodByName(t, "kweb"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pod still listed 30s after its manifest was removed")
		}
	}
}
