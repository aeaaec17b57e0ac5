package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// templateCTs lists the template containers on pve1.
func templateCTs(sim *pvesim.Server) []int {
	var out []int
	for _, id := range sim.Containers("pve1") {
		if ct, ok := sim.Container("pve1", id); ok && ct.Config["template"] == "1" {
			out = append(out, id)
		}
	}
	return out
}

func (d *criDaemon) vmid(t *testing.T, id string) int {
	t.Helper()
	var insp struct {
		Info struct{ VMID int } `json:"info"`
	}
	if err := json.Unmarshal([]byte(d.crictlOK(t, "inspect", "-o", "json", id)), &insp); err != nil {
		t.Fatal(err)
	}
	return insp.Info.VMID
}

// TestCRILinkedClones runs pods on the LVM-thin storage with real LXC:
// their containers are linked clones of one template container of the
// image (made once, for pods created at once too), with the pod's
// address, MAC, hostname, command and volume; a restarted daemon takes
// the template container again; removing the image leaves it to the
// clones that use it, and the last one takes it along. With
// --linked-clones never, Proxmox unpacks the template as before.
func TestCRILinkedClones(t *testing.T) {
	sim := startNodeSim(t)
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "library/bb:1", shellImage(t, v1.Config{Entrypoint: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}))
	c := newCLI(t)
	args := lifecycleArgs(sim, reg, "local-lvm", "10.88.20.0/24")
	d := startCRI(t, c, args...)
	d.crictlOK(t, "pull", "bb:1")
	dir, err := os.MkdirTemp("", "criclone-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.MkdirAll(filepath.Join(dir, "data"), 0o755)
	os.WriteFile(filepath.Join(dir, "data", "hello"), []byte("from the host\n"), 0o644)

	pod := podSpec(t, dir, "web", nil)
	podID := strings.TrimSpace(d.crictlOK(t, "runp", pod))
	script := "cat /data/hello; ip -4 addr show eth0 | grep inet; echo mac=$(cat /sys/class/net/eth0/address); echo host=$(cat /proc/sys/kernel/hostname); echo ready; exec sleep 3600"
	main := strings.TrimSpace(d.crictlOK(t, "create", podID, ctrSpec(t, dir, "main", map[string]any{
		"command": []string{"sh", "-c", script},
		"mounts":  []map[string]any{{"container_path": "/data", "host_path": filepath.Join(dir, "data"), "readonly": true}},
	}), pod))
	vmid := d.vmid(t, main)
	tmpls := templateCTs(sim)
	if len(tmpls) != 1 {
		t.Fatalf("template containers %v, want one", tmpls)
	}
	tc := ctConfig(t, sim, tmpls[0])
	if !strings.Contains(tc["tags"], "pve-image-template") || !strings.Contains(tc["description"], "pve-image-template: ") || !strings.HasPrefix(tc["rootfs"], "local-lvm:base-") {
		t.Errorf("template container config %v", tc)
	}
	cfg := ctConfig(t, sim, vmid)
	if cfg["rootfs"] != fmt.Sprintf("local-lvm:vm-%d-disk-0,size=1G", vmid) || cfg["hostname"] != "web" || !strings.HasPrefix(cfg["mp0"], filepath.Join(dir, "data")+",mp=/data") ||
		!strings.Contains(cfg["net0"], "ip=10.88.20.2/24") || !strings.Contains(cfg["tags"], "pod-uid-web") || cfg["template"] != "" ||
		!strings.Contains(cfg["description"], "\npve-image-owner: ") {
		t.Errorf("the pod's linked clone: %v", cfg)
	}
	mac := regexp.MustCompile(`hwaddr=([0-9A-Fa-f:]+)`).FindStringSubmatch(cfg["net0"])
	d.crictlOK(t, "start", main)
	log := waitFile(t, filepath.Join(dir, "logs", "web", "main.log"), "stdout F ready", 30*time.Second)
	for _, want := range []string{"stdout F from the host\n", "inet 10.88.20.2/24", "stdout F host=web\n", "stdout F mac=" + strings.ToLower(mac[1]) + "\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
	if ps := d.crictlOK(t, "ps", "-a", "-q"); strings.TrimSpace(ps) != main {
		t.Errorf("crictl ps -a: %q: the template container is no pod's", ps)
	}

	// Pods created at once wait for each other's clone, and all run.
	cl := d.clients(t)
	ctx := context.Background()
	const n = 6
	pods := make([]*benchPod, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range pods {
		pods[i] = newBenchPod(dir, fmt.Sprintf("par%d", i))
		wg.Go(func() { _, errs[i] = pods[i].start(ctx, cl, &callTimes{}, "bb:1") })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pod %d of %d created at once: %v", i, n, err)
		}
		if ct, ok := sim.Container("pve1", d.vmid(t, pods[i].container)); !ok || ct.Status != "running" || !strings.HasPrefix(ct.Config["rootfs"], "local-lvm:vm-") {
			t.Errorf("pod %d: %+v", i, ct)
		}
	}
	if got := templateCTs(sim); len(got) != 1 {
		t.Errorf("template containers after %d creates at once: %v", n, got)
	}
	m := d.metrics(t)
	for _, want := range []string{`pve_image_containers_created_total{rootfs="linked-clone"} 7`, `pve_image_template_containers_total{event="created"} 1`,
		`pve_image_container_create_to_running_seconds_count{rootfs="linked-clone"} 7`, `pve_image_proxmox_call_duration_seconds_count{call="clone"} 7`,
		`pve_image_linked_clone_queue_wait_seconds_count 7`, `pve_image_grpc_request_proxmox_duration_seconds_count{method="/runtime.v1.RuntimeService/CreateContainer"} 7`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// A restarted daemon finds its template container by its mark.
	d.kill(t)
	d = startCRI(t, c, args...)
	again := newBenchPod(dir, "again")
	if _, err := again.start(ctx, d.clients(t), &callTimes{}, "bb:1"); err != nil {
		t.Fatal(err)
	}
	if got := templateCTs(sim); len(got) != 1 || got[0] != tmpls[0] {
		t.Errorf("template containers after a restart: %v, want %v", got, tmpls)
	}

	// The image goes; its template container stays for its clones, and
	// goes with the last of them.
	d.crictlOK(t, "rmi", "bb:1")
	if got := templateCTs(sim); len(got) != 1 {
		t.Fatalf("template containers after rmi with clones running: %v", got)
	}
	cl = d.clients(t)
	for _, p := range append(pods, again) {
		if err := p.stop(ctx, cl, &callTimes{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := templateCTs(sim); len(got) != 1 {
		t.Fatalf("template containers with one clone left: %v", got)
	}
	if m := d.metrics(t); !strings.Contains(m, `pve_image_container_stop_duration_seconds_count{rootfs="linked-clone"} 7`) {
		t.Errorf("metrics lack the stops of linked clones:\n%s", grepLines(m, "pve_image_container_stop"))
	}
	d.crictlOK(t, "rmp", "-f", podID)
	if got := templateCTs(sim); len(got) != 0 {
		t.Errorf("template containers after the last clone went: %v", got)
	}
	if m := d.metrics(t); !strings.Contains(m, `pve_image_template_containers_total{event="removed"} 1`) {
		t.Errorf("metrics lack the removal:\n%s", grepLines(m, "pve_image_template"))
	}
	if left := sim.Containers("pve1"); len(left) != 0 {
		t.Errorf("containers left: %v", left)
	}

	// --linked-clones never: unpacked, no template container.
	d.kill(t)
	d = startCRI(t, c, append(args, "--linked-clones", "never")...)
	d.crictlOK(t, "pull", "bb:1")
	never := newBenchPod(dir, "never")
	if _, err := never.start(ctx, d.clients(t), &callTimes{}, "bb:1"); err != nil {
		t.Fatal(err)
	}
	if got := templateCTs(sim); len(got) != 0 {
		t.Errorf("template containers with --linked-clones never: %v", got)
	}
	if m := d.metrics(t); !strings.Contains(m, `pve_image_containers_created_total{rootfs="extract"} 1`) {
		t.Errorf("metrics:\n%s", grepLines(m, "pve_image_containers_created"))
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
