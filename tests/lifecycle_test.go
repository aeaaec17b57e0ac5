package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/lifecycle"
	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// serviceScript is the program of the update tests' images, run by
// pve-image-init: it says its version, then reads the note it keeps in
// its volume, or writes one the first time; then it waits to be stopped.
const serviceScript = `echo VERSION=%s
if [ -f /data/note ]; then echo "NOTE=$(cat /data/note)"; else cat /proc/sys/kernel/random/uuid > /data/note; echo "WROTE=$(cat /data/note)"; fi
exec sleep 1000000`

// serviceImage is busybox with serviceScript as its command and /data as
// its volume; crash makes one whose program fails at once.
func serviceImage(t testing.TB, version string, crash bool) v1.Image {
	script := fmt.Sprintf(serviceScript, version)
	if crash {
		script = "echo VERSION=" + version + "; echo crashing; exit 3"
	}
	entries := []Entry{Exec("bin/busybox", busybox(t)), File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
		File("etc/group", "root:x:0:\n"), File("data/seed", "from the image "+version+"\n"), Dir("tmp/")}
	for _, a := range []string{"sh", "echo", "cat", "sleep", "ls", "rm", "test", "[", "ip", "grep"} {
		entries = append(entries, Symlink("bin/"+a, "busybox"))
	}
	return Image(t, amd64, v1.Config{Entrypoint: []string{"/bin/sh", "-c", script}, Volumes: map[string]struct{}{"/data": {}}}, Layer(t, entries...))
}

// lifeSim is the simulator with real containers, which the lifecycle
// tests need: the program's own reading and writing of its volume.
func lifeSim(t testing.TB) *pvesim.Server {
	t.Helper()
	RequireLXC(t)
	return startSim(t, pvesim.Options{RealLXC: true})
}

// waitConsole waits until the container's console holds every want.
func waitConsole(t testing.TB, sim *pvesim.Server, node string, vmid int, wants ...string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ct, ok := sim.Container(node, vmid)
		if ok {
			missing := false
			for _, w := range wants {
				missing = missing || !strings.Contains(ct.Console, w)
			}
			if !missing {
				return ct.Console
			}
		}
		if time.Now().After(deadline) {
			con := ""
			if ok {
				con = ct.Console
			}
			t.Fatalf("CT %d on %s: console lacks %q:\n%s", vmid, node, wants, con)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var reWrote = regexp.MustCompile(`WROTE=(\S+)`)

// note is what the program wrote into its volume the first time.
func note(t testing.TB, console string) string {
	t.Helper()
	m := reWrote.FindStringSubmatch(console)
	if m == nil {
		t.Fatalf("the program wrote no note:\n%s", console)
	}
	return m[1]
}

func atoiVMID(t testing.TB, r result) int {
	t.Helper()
	n, err := strconv.Atoi(r.out())
	if err != nil {
		t.Fatalf("run printed %q: %v\n%s", r.stdout, err, r.stderr)
	}
	return n
}

// pveClient is a Proxmox client of the simulator, for what pve-image has no
// command for (setting config, starting and stopping).
func pveClient(t testing.TB, sim *pvesim.Server) *proxmox.Client {
	t.Helper()
	cl, err := proxmox.Dial(context.Background(), proxmox.Config{URL: sim.URL(), Token: simToken + "=" + simSecret, Fingerprint: sim.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func record(t testing.TB, cfg map[string]string) *lifecycle.Record {
	t.Helper()
	_, rec, err := lifecycle.ParseDescription(cfg["description"])
	if err != nil || rec == nil {
		t.Fatalf("no pve-image record in the description %q: %v", cfg["description"], err)
	}
	return rec
}

func hwaddr(cfg map[string]string) string { return proxmox.ParseNIC(cfg["net0"]).Get("hwaddr") }

// backups lists the archives of vmid on the node's local storage.
func backups(t testing.TB, sim *pvesim.Server, node string, vmid int) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(sim.StoragePath(node, "local"), "dump", fmt.Sprintf("vzdump-lxc-%d-*.tar.zst", vmid)))
	return files
}

// TestLifecycleUpdateAndRollback: a container made by run is updated to a
// new digest of its tag under the same VMID, with its MAC address, the
// user's config and its volume's data, which the new program reads; the
// same digest again is "up to date"; rollback returns to the old image,
// data kept.
func TestLifecycleUpdateAndRollback(t *testing.T) {
	sim := lifeSim(t)
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "svc:1", serviceImage(t, "v1", false))
	c := newCLI(t)
	ref := reg.Host + "/svc:1"
	vmid := atoiVMID(t, c.ok(append([]string{"run", ref, "--hostname", "svc", "--memory", "256", "--cores", "1", "--net", "name=eth0,bridge=vmbr0"},
		pveArgs(sim, "--rootfs", "shared:1")...)...))
	first := note(t, waitConsole(t, sim, "pve1", vmid, "VERSION=v1", "WROTE="))
	before := ctConfig(t, sim, vmid)
	if !strings.Contains(before["mp0"], "mp=/data") || !strings.Contains(before["mp0"], "backup=1") {
		t.Fatalf("the image's volume is not a mount point with backup=1: %q", before["mp0"])
	}
	// What the user set after run must survive the update.
	cl := pveClient(t, sim)
	user := "billing service\nowner: ops"
	if err := cl.SetContainerConfig(context.Background(), "pve1", vmid, map[string]string{"tags": "prod;web", "onboot": "1",
		"startup": "order=2", "description": user + "\n" + before["description"]}); err != nil {
		t.Fatal(err)
	}
	oldDigest := record(t, before).Digest

	reg.Push(t, "svc:1", serviceImage(t, "v2", false))
	r := c.ok(append([]string{"update", strconv.Itoa(vmid), "--health-timeout", "2s"}, pveArgs(sim)...)...)
	if !strings.Contains(r.stdout, "update") {
		t.Errorf("update printed %q", r.stdout)
	}
	con := waitConsole(t, sim, "pve1", vmid, "VERSION=v2", "NOTE="+first)
	if strings.Contains(con, "WROTE=") {
		t.Errorf("the updated program found no note:\n%s", con)
	}
	after := ctConfig(t, sim, vmid)
	for _, k := range []string{"hostname", "memory", "cores", "swap", "tags", "onboot", "startup", "unprivileged", "ostype"} {
		if after[k] != before[k] && k != "tags" && k != "onboot" && k != "startup" {
			t.Errorf("%s: %q before, %q after", k, before[k], after[k])
		}
	}
	if after["tags"] != "prod;web" || after["onboot"] != "1" || after["startup"] != "order=2" {
		t.Errorf("user config lost: tags %q onboot %q startup %q", after["tags"], after["onboot"], after["startup"])
	}
	if hwaddr(after) != hwaddr(before) || hwaddr(after) == "" {
		t.Errorf("MAC %q before, %q after", hwaddr(before), hwaddr(after))
	}
	if !strings.HasPrefix(after["description"], user+"\n") {
		t.Errorf("description %q lost the user's text", after["description"])
	}
	rec := record(t, after)
	if rec.Digest == oldDigest || rec.Rollback == nil || rec.Rollback.Digest != oldDigest {
		t.Errorf("record after the update: %+v", rec)
	}
	if proxmox.VolumeOwner(proxmox.ParseMountPoint("mp0", after["mp0"]).Volume()) != vmid {
		t.Errorf("mp0 %q is not CT %d's", after["mp0"], vmid)
	}
	if ids := sim.Containers("pve1"); len(ids) != 1 || ids[0] != vmid {
		t.Errorf("containers after the update: %v (a temporary one left?)", ids)
	}
	if b := backups(t, sim, "pve1", vmid); len(b) != 1 {
		t.Errorf("archives of CT %d: %v, want the rollback point alone", vmid, b)
	}

	r = c.ok(append([]string{"update", strconv.Itoa(vmid)}, pveArgs(sim)...)...)
	if !strings.Contains(r.stdout, "up to date") {
		t.Errorf("second update: %q", r.stdout)
	}

	c.ok(append([]string{"rollback", strconv.Itoa(vmid), "--health-timeout", "2s"}, pveArgs(sim)...)...)
	waitConsole(t, sim, "pve1", vmid, "VERSION=v1", "NOTE="+first)
	back := ctConfig(t, sim, vmid)
	if rb := record(t, back); rb.Digest != oldDigest || rb.Rollback != nil {
		t.Errorf("record after the rollback: %+v", rb)
	}
	if hwaddr(back) != hwaddr(before) {
		t.Errorf("MAC after the rollback %q, want %q", hwaddr(back), hwaddr(before))
	}
	if b := backups(t, sim, "pve1", vmid); len(b) != 0 {
		t.Errorf("archives left after the rollback: %v", b)
	}
	c.fails(append([]string{"rollback", strconv.Itoa(vmid)}, pveArgs(sim)...), "has no rollback point")
	if _, err := os.Stat(filepath.Join(c.cache, "lifecycle")); err != nil {
		t.Errorf("journal directory: %v", err)
	}
}

// lifeCheck fails t unless CT vmid is consistent after an update, a
// rollback or their undoing: it runs version with the program's note read
// from its volume, its MAC is mac, its volume is its own, no temporary
// container is left, and no journal.
func lifeCheck(t testing.TB, c *cli, sim *pvesim.Server, vmid int, version, firstNote, mac string) {
	t.Helper()
	waitConsole(t, sim, "pve1", vmid, "VERSION="+version, "NOTE="+firstNote)
	cfg := ctConfig(t.(*testing.T), sim, vmid)
	if hwaddr(cfg) != mac {
		t.Errorf("MAC %q, want %q", hwaddr(cfg), mac)
	}
	if proxmox.VolumeOwner(proxmox.ParseMountPoint("mp0", cfg["mp0"]).Volume()) != vmid {
		t.Errorf("mp0 %q is not CT %d's", cfg["mp0"], vmid)
	}
	if ids := sim.Containers("pve1"); len(ids) != 1 || ids[0] != vmid {
		t.Errorf("containers %v: want CT %d alone", ids, vmid)
	}
	if ct, _ := sim.Container("pve1", vmid); ct.Status != "running" {
		t.Errorf("CT %d is %s", vmid, ct.Status)
	}
	c.fails(append([]string{"update", "--resume", strconv.Itoa(vmid)}, pveArgs(sim)...), "no interrupted update")
}

// TestLifecycleUpdateCrashUndone: a new image whose program crashes at
// start is undone: the container runs the old image again under the same
// VMID, MAC and volume, and nothing of the attempt is left.
func TestLifecycleUpdateCrashUndone(t *testing.T) {
	sim := lifeSim(t)
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "svc:1", serviceImage(t, "v1", false))
	c := newCLI(t)
	vmid := atoiVMID(t, c.ok(append([]string{"run", reg.Host + "/svc:1", "--net", "name=eth0,bridge=vmbr0"}, pveArgs(sim, "--rootfs", "shared:1")...)...))
	first := note(t, waitConsole(t, sim, "pve1", vmid, "WROTE="))
	mac := hwaddr(ctConfig(t, sim, vmid))

	reg.Push(t, "svc:2", serviceImage(t, "v2", true))
	r := c.fails(append([]string{"update", strconv.Itoa(vmid), "--image", reg.Host + "/svc:2", "--health-timeout", "3s"}, pveArgs(sim)...),
		"its console shows why", "was undone")
	if !strings.Contains(r.stdout, "undone") {
		t.Errorf("stdout %q", r.stdout)
	}
	lifeCheck(t, c, sim, vmid, "v1", first, mac)
	if rec := record(t, ctConfig(t, sim, vmid)); rec.Image != reg.Host+"/svc:1" || rec.Rollback != nil {
		t.Errorf("record after the undone update: %+v", rec)
	}
	if b := backups(t, sim, "pve1", vmid); len(b) != 0 {
		t.Errorf("archives left: %v", b)
	}
}

// TestLifecycleResumeAfterKill kills pve-image (SIGKILL) after every step
// of an update, and after every step of the undoing of one whose restore
// fails as a Proxmox task; each time update --resume ends it in a
// consistent state: the new image, or the old one, with the volume's data.
// One container serves all rounds, updated back and forth between two
// tags.
func TestLifecycleResumeAfterKill(t *testing.T) {
	sim := lifeSim(t)
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "svc:a", serviceImage(t, "a", false))
	reg.Push(t, "svc:b", serviceImage(t, "b", false))
	c := newCLI(t)
	vmid := atoiVMID(t, c.ok(append([]string{"run", reg.Host + "/svc:a", "--net", "name=eth0,bridge=vmbr0"}, pveArgs(sim, "--rootfs", "shared:1")...)...))
	first := note(t, waitConsole(t, sim, "pve1", vmid, "WROTE="))
	mac := hwaddr(ctConfig(t, sim, vmid))
	current, other := "a", "b"
	update := func(target string) []string {
		return append([]string{"update", strconv.Itoa(vmid), "--image", reg.Host + "/svc:" + target, "--health-timeout", "1s"}, pveArgs(sim)...)
	}
	resume := append([]string{"update", "--resume", strconv.Itoa(vmid)}, pveArgs(sim)...)

	// The forward steps: 12 for a container with one volume.
	for n := 1; n <= 12; n++ {
		c.env = []string{"PVE_IMAGE_CRASH_AFTER_STEP=" + strconv.Itoa(n)}
		r := c.run(update(other)...)
		c.env = nil
		if r.err == nil {
			t.Fatalf("round %d: the update was not killed:\n%s", n, r.stderr)
		}
		c.ok(resume...)
		current, other = other, current
		t.Run(fmt.Sprintf("killed after step %d", n), func(t *testing.T) { lifeCheck(t, c, sim, vmid, current, first, mac) })
	}
	// The undoing of an update whose restore fails: 5 forward steps are
	// done, then 7 steps undo it.
	for n := 6; n <= 12; n++ {
		sim.FailNextTask("vzrestore", "simulated failure of the restore")
		c.env = []string{"PVE_IMAGE_CRASH_AFTER_STEP=" + strconv.Itoa(n)}
		r := c.run(update(other)...)
		c.env = nil
		if r.err == nil {
			t.Fatalf("undo round %d: the update succeeded:\n%s", n, r.stderr)
		}
		c.fails(resume, "was undone", "simulated failure of the restore")
		t.Run(fmt.Sprintf("undo killed after step %d", n), func(t *testing.T) { lifeCheck(t, c, sim, vmid, current, first, mac) })
	}
}

// TestLifecyclePlanAndRefusals: --dry-run prints the plan and changes
// nothing; a stopped container is updated and left stopped; what an update
// cannot do without losing something is refused before anything is done.
func TestLifecyclePlanAndRefusals(t *testing.T) {
	sim := startSim(t, pvesim.Options{})
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "svc:1", serviceImage(t, "v1", false))
	c := newCLI(t)
	vmid := atoiVMID(t, c.ok(append([]string{"run", reg.Host + "/svc:1", "--start=false", "--net", "name=eth0,bridge=vmbr0"}, pveArgs(sim, "--rootfs", "shared:1")...)...))
	id := strconv.Itoa(vmid)
	reg.Push(t, "svc:1", serviceImage(t, "v2", false))
	uploads := sim.Uploads()

	r := c.ok(append([]string{"update", id, "--dry-run"}, pveArgs(sim)...)...)
	for _, w := range []string{"update of CT " + id + " on pve1", "from " + reg.Host + "/svc:1@sha256:", "to   " + reg.Host + "/svc:1@sha256:",
		"move mp0 (shared:" + id + "/vm-" + id + "-disk-1.raw) of CT " + id, "restore the new root file system over CT " + id, "nothing was changed"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("dry run lacks %q:\n%s", w, r.stdout)
		}
	}
	if sim.Uploads() != uploads || len(sim.Containers("pve1")) != 1 || len(backups(t, sim, "pve1", vmid)) != 0 {
		t.Errorf("the dry run changed something: %d uploads, containers %v", sim.Uploads()-uploads, sim.Containers("pve1"))
	}

	c.ok(append([]string{"update", id, "--health-timeout", "0s"}, pveArgs(sim)...)...)
	if ct, _ := sim.Container("pve1", vmid); ct.Status != "stopped" {
		t.Errorf("a stopped container was left %s", ct.Status)
	}

	cl := pveClient(t, sim)
	ctx := context.Background()
	reg.Push(t, "svc:1", serviceImage(t, "v3", false))
	cl.SetContainerConfig(ctx, "pve1", vmid, map[string]string{"protection": "1"})
	c.fails(append([]string{"update", id}, pveArgs(sim)...), "is protected", "--protection 0")
	cl.SetContainerConfig(ctx, "pve1", vmid, map[string]string{"delete": "protection"})

	other := atoiVMID(t, c.ok(append([]string{"run", reg.Host + "/svc:1", "--start=false"}, pveArgs(sim, "--rootfs", "shared:1")...)...))
	cl.SetContainerConfig(ctx, "pve1", other, map[string]string{"description": "made by hand"})
	c.fails(append([]string{"update", strconv.Itoa(other)}, pveArgs(sim)...), "was not made by pve-image run")
	c.fails(append([]string{"update", "4242"}, pveArgs(sim)...), "CT 4242", "no node of the cluster has it")
	c.fails(append([]string{"rollback", strconv.Itoa(other)}, pveArgs(sim)...), "no pve-image record")
}
