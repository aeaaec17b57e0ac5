package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// nodeOf is the node that has CT vmid.
func nodeOf(t testing.TB, sim *pvesim.Server, vmid int) string {
	t.Helper()
	for _, n := range []string{"pve1", "pve2"} {
		if _, ok := sim.Container(n, vmid); ok {
			return n
		}
	}
	t.Fatalf("no node has CT %d", vmid)
	return ""
}

var (
	idle = pvesim.NodeLoad{CPU: 0.05, MaxCPU: 8, Mem: 2 << 30, MaxMem: 32 << 30}
	busy = pvesim.NodeLoad{CPU: 0.9, MaxCPU: 8, Mem: 30 << 30, MaxMem: 32 << 30}
)

// TestPlacement: run --node auto takes the online node with the most free
// memory and CPU among those with the storages the container needs, and
// puts the template on a shared storage once.
func TestPlacement(t *testing.T) {
	sim := startSim(t, pvesim.Options{})
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "web:1", appImage(t, "placement", v1.Config{}))
	c := newCLI(t)
	run := func(extra ...string) (int, result) {
		r := c.ok(append(append([]string{"run", reg.Host + "/web:1", "--start=false"}, extra...),
			"--pve-url", sim.URL(), "--pve-token", simToken+"="+simSecret, "--pve-fingerprint", sim.Fingerprint(), "--node", "auto")...)
		return atoiVMID(t, r), r
	}

	sim.SetNodeLoad("pve1", busy)
	sim.SetNodeLoad("pve2", idle)
	a, r := run("--storage", "shared", "--rootfs", "shared:1")
	if n := nodeOf(t, sim, a); n != "pve2" || !strings.Contains(r.stderr, "placed on pve2") {
		t.Errorf("placed on %s; want the idle pve2:\n%s", n, r.stderr)
	}
	sim.SetNodeLoad("pve1", idle)
	sim.SetNodeLoad("pve2", busy)
	if b, _ := run("--storage", "shared", "--rootfs", "shared:1"); nodeOf(t, sim, b) != "pve1" {
		t.Errorf("second container on %s, want pve1", nodeOf(t, sim, b))
	}
	if n := sim.Uploads(); n != 1 {
		t.Errorf("%d uploads to the shared storage for two nodes, want 1", n)
	}

	// Only pve2 has the storage named for the root disk: it wins though busy.
	sim.RestrictStorage("local-lvm", "pve2")
	if d, _ := run("--rootfs", "local-lvm:1"); nodeOf(t, sim, d) != "pve2" {
		t.Errorf("container with local-lvm on %s, want pve2, the only node with it", nodeOf(t, sim, d))
	}
	// An offline node is never chosen.
	sim.SetNodeLoad("pve1", pvesim.NodeLoad{Status: "offline"})
	if e, _ := run("--rootfs", "shared:1"); nodeOf(t, sim, e) != "pve2" {
		t.Errorf("placed on %s while pve1 is offline", nodeOf(t, sim, e))
	}
	// No node fits: the reasons, and nothing created.
	before := len(sim.Containers("pve2"))
	r2 := c.fails([]string{"run", reg.Host + "/web:1", "--memory", "4096", "--rootfs", "local-lvm:1",
		"--pve-url", sim.URL(), "--pve-token", simToken + "=" + simSecret, "--pve-fingerprint", sim.Fingerprint(), "--node", "auto"},
		"no node can take the container", "pve1: node is offline", "the container asks 4096 MiB")
	if len(sim.Containers("pve2")) != before {
		t.Errorf("a refused placement created a container:\n%s", r2.stderr)
	}
}

// TestMigrate: a running container moves to another node by restart, with
// its volume on a local storage and its data; the template follows to the
// target's local storage; what Proxmox refuses is reported with the
// reason.
func TestMigrate(t *testing.T) {
	sim := lifeSim(t)
	sim.AddUser(pvesim.User{Name: "root@pam", Password: "pw", Privs: []string{"*"}})
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "svc:1", serviceImage(t, "v1", false))
	c := newCLI(t)
	vmid := atoiVMID(t, c.ok(append([]string{"run", reg.Host + "/svc:1", "--net", "name=eth0,bridge=vmbr0", "--volume", "/data=local-lvm:1"},
		pveArgs(sim, "--rootfs", "local-lvm:1")...)...))
	first := note(t, waitConsole(t, sim, "pve1", vmid, "WROTE="))

	r := c.ok(append([]string{"migrate", strconv.Itoa(vmid), "--to", "pve2"}, pveArgs(sim)...)...)
	if !strings.Contains(r.stdout, "pve1 -> pve2") {
		t.Errorf("migrate printed %q", r.stdout)
	}
	if nodeOf(t, sim, vmid) != "pve2" {
		t.Fatal("the container did not move")
	}
	waitConsole(t, sim, "pve2", vmid, "NOTE="+first)
	if ct, _ := sim.Container("pve2", vmid); ct.Status != "running" {
		t.Errorf("CT %d on pve2 is %s", vmid, ct.Status)
	}
	if vols := sim.Volumes("pve2", "local-lvm"); len(vols) != 1 || vols[0].Owner != vmid {
		t.Errorf("volumes on pve2: %+v", vols)
	}
	tmpl, _ := filepath.Glob(filepath.Join(sim.StoragePath("pve2", "local"), "template", "cache", "*svc_1_amd64*"))
	if len(tmpl) != 1 {
		t.Errorf("the template did not follow to pve2: %v", tmpl)
	}
	c.fails(append([]string{"migrate", strconv.Itoa(vmid), "--to", "pve2"}, pveArgs(sim)...), "is on pve2 already")

	// A bind mount of the node's is refused by Proxmox, with what to do.
	host := t.TempDir()
	os.Chmod(host, 0o755)
	root := []string{"--pve-url", sim.URL(), "--pve-user", "root@pam", "--pve-password", "pw", "--pve-fingerprint", sim.Fingerprint(), "--node", "pve1"}
	bound := atoiVMID(t, c.ok(append([]string{"run", reg.Host + "/svc:1", "--start=false", "--volume", "/data=" + host, "--rootfs", "shared:1"}, root...)...))
	c.fails(append([]string{"migrate", strconv.Itoa(bound), "--to", "pve2"}, root...),
		"cannot migrate local bind mount point 'mp0'", "shared=1")
	if nodeOf(t, sim, bound) != "pve1" {
		t.Error("a refused migration moved the container")
	}
}
