package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/tests/pvelxc"
	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

const simToken = "pve-image@pve!ci"
const simSecret = "0b9a3e7c-5d1f-4f0e-9a6b-2c8d1e4f7a90"

// startSim runs the Proxmox simulator with a token holding every privilege;
// with real containers when this machine can run them.
func startSim(t testing.TB, o pvesim.Options) *pvesim.Server {
	t.Helper()
	if o.Bridges == nil {
		o.Bridges = []string{"vmbr0"}
	}
	if o.RealLXC && pvelxc.Check() != nil {
		o.RealLXC = false
	}
	s := pvesim.New(o)
	s.AddToken(pvesim.Token{ID: simToken, Secret: simSecret, Privs: []string{"*"}})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// pveArgs are the connection flags for a simulator.
func pveArgs(s *pvesim.Server, extra ...string) []string {
	return append([]string{"--pve-url", s.URL(), "--pve-token", simToken + "=" + simSecret, "--pve-fingerprint", s.Fingerprint(), "--node", "pve1"}, extra...)
}

func TestPushIsIdempotentAndListed(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", appImage(t, "push", v1.Config{}))
	sim := startSim(t, pvesim.Options{})
	c := newCLI(t)
	volid := c.ok(append([]string{"push", reg.Host + "/app:1"}, pveArgs(sim)...)...).out()
	if !regexp.MustCompile(`^local:vztmpl/127\.0\.0\.1-\d+-app_1_amd64\.[0-9a-f]{12}\.tar\.zst$`).MatchString(volid) {
		t.Fatalf("volid %q", volid)
	}
	name := strings.TrimPrefix(volid, "local:vztmpl/")
	stored := filepath.Join(sim.StoragePath("pve1", "local"), "template", "cache", name)
	cached := c.ok("convert", reg.Host+"/app:1").out()
	if a, b := readFile(t, stored), readFile(t, cached); a != b {
		t.Fatal("the uploaded template differs from the cached one")
	}
	again := c.ok(append([]string{"push", reg.Host + "/app:1"}, pveArgs(sim)...)...)
	if sim.Uploads() != 1 || !strings.Contains(again.stderr, "already on pve1/local") {
		t.Errorf("second push: %d uploads, stderr %q", sim.Uploads(), again.stderr)
	}
	ls := c.ok(append([]string{"ls"}, pveArgs(sim)...)...).stdout
	if !strings.Contains(ls, volid) || !strings.Contains(ls, reg.Host+"/app") || !strings.Contains(ls, "sha256:") {
		t.Errorf("ls:\n%s", ls)
	}
	c.ok(append([]string{"rm", name}, pveArgs(sim)...)...)
	if _, err := os.Stat(stored); !os.IsNotExist(err) {
		t.Error("rm left the template on the storage")
	}
	c.fails(append([]string{"rm", name}, pveArgs(sim)...), "remove "+volid)
}

// TestPushSharedAndAllNodes: a shared storage takes one upload; local
// storages get one per node with --all-nodes. The import task of an upload
// to pve2 runs on pve1 (the node receiving the request), so it is polled
// there.
func TestPushSharedAndAllNodes(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", appImage(t, "nodes", v1.Config{}))
	sim := startSim(t, pvesim.Options{})
	c := newCLI(t)
	c.ok(append([]string{"push", reg.Host + "/app:1", "--all-nodes"}, pveArgs(sim, "--storage", "shared")...)...)
	if sim.Uploads() != 1 {
		t.Errorf("shared storage: %d uploads, want 1", sim.Uploads())
	}
	volid := c.ok(append([]string{"push", reg.Host + "/app:1", "--all-nodes"}, pveArgs(sim)...)...).out()
	if sim.Uploads() != 3 {
		t.Errorf("local storage on two nodes: %d uploads in all, want 3", sim.Uploads())
	}
	name := strings.TrimPrefix(volid, "local:vztmpl/")
	for _, node := range []string{"pve1", "pve2"} {
		if _, err := os.Stat(filepath.Join(sim.StoragePath(node, "local"), "template", "cache", name)); err != nil {
			t.Errorf("%s: %v", node, err)
		}
	}
	// Only pve2's upload for pve2's storage, from scratch.
	c.ok(append([]string{"push", reg.Host + "/app:1"}, pveArgs(sim, "--node", "pve2")...)...)
}

func TestPushFaults(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", appImage(t, "faults", v1.Config{}))
	sim := startSim(t, pvesim.Options{})
	c := newCLI(t)
	ref := reg.Host + "/app:1"

	sim.CorruptNextUpload()
	r := c.fails(append([]string{"push", ref}, pveArgs(sim)...), "checksum mismatch", "task imgcopy on pve1 failed")
	if files, _ := filepath.Glob(filepath.Join(sim.StoragePath("pve1", "local"), "template", "cache", "*")); len(files) != 0 {
		t.Errorf("a template with a bad checksum was kept: %v", files)
	}
	_ = r

	sim.DropNextUpload(100000)
	c.ok(append([]string{"push", ref}, pveArgs(sim)...)...)
	if n := sim.Requests("POST", "/nodes/pve1/storage/local/upload"); n != 3 {
		t.Errorf("upload requests %d: want the refused one, the dropped one and the retry", n)
	}
}

func TestProxmoxAuthFaults(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", appImage(t, "auth", v1.Config{}))
	sim := startSim(t, pvesim.Options{})
	sim.AddToken(pvesim.Token{ID: "reader@pve!ro", Secret: "reader-secret-123", Privs: []string{"Datastore.Audit", "Sys.Audit", "VM.Audit"}})
	sim.AddUser(pvesim.User{Name: "alice@pve", Password: "alice-pass-123", Privs: []string{"*"}})
	c := newCLI(t)
	ref := reg.Host + "/app:1"
	base := []string{"--pve-url", sim.URL(), "--pve-fingerprint", sim.Fingerprint(), "--node", "pve1"}

	r := c.fails(append([]string{"push", ref, "--pve-token", simToken + "=wrong-secret-456"}, base...), "API token was not accepted")
	if strings.Contains(r.stderr, "wrong-secret-456") {
		t.Error("the secret appears in the error")
	}
	c.fails(append([]string{"push", ref, "--pve-token", "reader@pve!ro=reader-secret-123"}, base...),
		"Permission check failed", "Datastore.AllocateTemplate", "/storage/local")
	r = c.fails(append([]string{"ls", "--pve-user", "alice@pve", "--pve-password", "wrong-password-789"}, base...), "refused the credentials")
	if strings.Contains(r.stderr, "wrong-password-789") {
		t.Error("the password appears in the error")
	}
	c.ok(append([]string{"push", ref, "--pve-user", "alice@pve", "--pve-password", "alice-pass-123"}, base...)...)

	before := sim.Requests("GET", "/")
	wrong := strings.Repeat("AB:", 31) + "CD"
	c.fails([]string{"ls", "--pve-url", sim.URL(), "--pve-token", simToken + "=" + simSecret, "--pve-fingerprint", wrong, "--node", "pve1"},
		"does not match the pinned")
	if after := sim.Requests("GET", "/"); after != before {
		t.Errorf("a request reached the server through a wrong fingerprint (%d -> %d)", before, after)
	}
	r = c.ok("ls", "--pve-url", sim.URL(), "--pve-token", simToken+"="+simSecret, "--pve-insecure", "--node", "pve1")
	if !strings.Contains(r.stderr, "WARNING: --pve-insecure") {
		t.Errorf("no warning for --pve-insecure: %q", r.stderr)
	}
}

// TestConfigContexts: settings come from the flag, else the environment,
// else the config file's context.
func TestConfigContexts(t *testing.T) {
	sim := startSim(t, pvesim.Options{})
	c := newCLI(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte("current-context: broken\ncontexts:\n  - name: lab\n    url: "+sim.URL()+"\n    token: "+simToken+"="+simSecret+
		"\n    fingerprint: \""+sim.Fingerprint()+"\"\n    node: pve1\n  - name: broken\n    url: https://127.0.0.1:1\n    token: x@pve!y=z\n    node: pve1\n"), 0o600)
	c.env = append(c.env, "PVE_IMAGE_CONFIG="+cfg)
	c.fails([]string{"ls"}, "connect to https://127.0.0.1:1")
	c.ok("ls", "--pve-context", "lab")
	c.env = append(c.env, "PVE_CONTEXT=lab")
	c.ok("ls")
	c.fails([]string{"ls", "--pve-url", "https://127.0.0.1:1"}, "connect to https://127.0.0.1:1")
	c.env = append(c.env, "PVE_URL=https://127.0.0.1:1")
	c.fails([]string{"ls"}, "connect to https://127.0.0.1:1")
}

func ctConfig(t *testing.T, sim *pvesim.Server, vmid int) map[string]string {
	t.Helper()
	ct, ok := sim.Container("pve1", vmid)
	if !ok {
		t.Fatalf("container %d is not on pve1", vmid)
	}
	return ct.Config
}

// TestRunApplication creates and starts an application container on
// Proxmox 9.1: native entrypoint/env with the user's variables merged,
// console mode, host-managed NICs, unmanaged ostype; with LXC here it runs
// for real and its console shows the program.
func TestRunApplication(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "web:1", appImage(t, "run", v1.Config{Entrypoint: []string{"/app"}, Cmd: []string{"report", "wait-signal"}, Env: []string{"PATH=/bin", "MODE=image"}}))
	sim := startSim(t, pvesim.Options{RealLXC: true})
	c := newCLI(t)
	out := c.ok(append([]string{"run", reg.Host + "/web:1", "--env", "MODE=user", "--hostname", "web", "--memory", "256"}, pveArgs(sim, "--rootfs", "shared:1")...)...).out()
	vmid, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("run printed %q", out)
	}
	cfg := ctConfig(t, sim, vmid)
	for k, want := range map[string]string{"ostype": "unmanaged", "arch": "amd64", "cmode": "console", "entrypoint": "/sbin/pve-image-init",
		"hostname": "web", "memory": "256", "unprivileged": "1"} {
		if cfg[k] != want {
			t.Errorf("config %s = %q, want %q", k, cfg[k], want)
		}
	}
	if env := strings.Split(cfg["env"], "\x00"); !strs(env).has("MODE=user") || !strs(env).has("PATH=/bin") {
		t.Errorf("env %q", env)
	}
	if !strings.Contains(cfg["net0"], "host-managed=1") || !strings.Contains(cfg["net0"], "bridge=vmbr0") {
		t.Errorf("net0 %q", cfg["net0"])
	}
	ct, _ := sim.Container("pve1", vmid)
	if ct.Status != "running" {
		t.Fatalf("container %d is %s", vmid, ct.Status)
	}
	if pvelxc.Check() == nil {
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(ct.Console, "waiting for a signal"); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("console:\n%s", ct.Console)
			}
			ct, _ = sim.Container("pve1", vmid)
		}
		if !strings.Contains(ct.Console, `"MODE=user"`) {
			t.Errorf("the program did not get the user's env:\n%s", ct.Console)
		}
	}
}

type strs []string

func (s strs) has(x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// TestRunLegacyProxmox: Proxmox 8 has no entrypoint or env options: the
// template's /sbin/init (pve-image-init) runs the program, and --env is
// refused with a reason.
func TestRunLegacyProxmox(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "web:1", appImage(t, "legacy", v1.Config{}))
	sim := startSim(t, pvesim.Options{Version: "8.4.1"})
	c := newCLI(t)
	vmid, _ := strconv.Atoi(c.ok(append([]string{"run", reg.Host + "/web:1", "--start=false"}, pveArgs(sim, "--rootfs", "shared:1")...)...).out())
	cfg := ctConfig(t, sim, vmid)
	if cfg["entrypoint"] != "" || cfg["env"] != "" || cfg["ostype"] != "unmanaged" || strings.Contains(cfg["net0"], "host-managed") {
		t.Errorf("legacy config %q", cfg)
	}
	c.fails(append([]string{"run", reg.Host + "/web:1", "--env", "A=1"}, pveArgs(sim, "--rootfs", "shared:1")...), "need Proxmox 9.1 or later")
}

// TestRunSystemImage: a system image boots its own init, with the ostype
// Proxmox detects and nesting for systemd.
func TestRunSystemImage(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	img := Image(t, amd64, v1.Config{Cmd: []string{"/sbin/init"}}, Layer(t,
		Exec("usr/lib/systemd/systemd", readFile(t, testApp)), Symlink("sbin/init", "../usr/lib/systemd/systemd"),
		File("etc/os-release", "ID=debian\n"), File("etc/debian_version", "12.7\n")))
	reg.Push(t, "debian-systemd:12", img)
	sim := startSim(t, pvesim.Options{})
	c := newCLI(t)
	vmid, _ := strconv.Atoi(c.ok(append([]string{"run", reg.Host + "/debian-systemd:12", "--start=false"}, pveArgs(sim, "--rootfs", "shared:1")...)...).out())
	cfg := ctConfig(t, sim, vmid)
	if cfg["ostype"] != "debian" || cfg["features"] != "nesting=1" || cfg["entrypoint"] != "" {
		t.Errorf("system image config %q", cfg)
	}
}

// TestRunSystemImageBoots: `run` of a system image (busybox init here, an
// Alpine by its os-release) through the API to a real running container
// whose console shows its init at work.
func TestRunSystemImageBoots(t *testing.T) {
	RequireLXC(t)
	reg := StartRegistry(t, RegistryOptions{})
	inittab := "::sysinit:/bin/echo SYSTEM-INIT-RAN\n::respawn:/bin/sleep 1000\n::shutdown:/bin/echo SYSTEM-SHUTDOWN\n"
	reg.Push(t, "alpine-init:3", Image(t, amd64, v1.Config{Cmd: []string{"/sbin/init"}},
		Layer(t, Exec("bin/busybox", busybox(t)), Symlink("bin/sh", "busybox"), Symlink("bin/echo", "busybox"), Symlink("bin/sleep", "busybox"),
			Symlink("sbin/init", "/bin/busybox"), File("etc/inittab", inittab), Dir("run/"), Dir("proc/"), Dir("sys/"), Dir("dev/"),
			File("etc/os-release", "ID=alpine\nVERSION_ID=3.20.3\n"), File("etc/alpine-release", "3.20.3\n"))))
	sim := startSim(t, pvesim.Options{RealLXC: true})
	c := newCLI(t)
	vmid, err := strconv.Atoi(c.ok(append([]string{"run", reg.Host + "/alpine-init:3"}, pveArgs(sim, "--rootfs", "shared:1")...)...).out())
	if err != nil {
		t.Fatal(err)
	}
	cfg := ctConfig(t, sim, vmid)
	if cfg["ostype"] != "alpine" || cfg["entrypoint"] != "" || cfg["cmode"] != "" {
		t.Errorf("system image config %q", cfg)
	}
	ct, _ := sim.Container("pve1", vmid)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(ct.Console, "SYSTEM-INIT-RAN"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("container %d (%s) console:\n%s", vmid, ct.Status, ct.Console)
		}
		ct, _ = sim.Container("pve1", vmid)
	}
	if ct.Status != "running" {
		t.Errorf("container %d is %s", vmid, ct.Status)
	}
}

// TestRunFaults: a failed create leaves no container; concurrent runs get
// distinct VMIDs.
func TestRunFaults(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "web:1", appImage(t, "fail", v1.Config{}))
	sim := startSim(t, pvesim.Options{})
	c := newCLI(t)
	args := append([]string{"run", reg.Host + "/web:1", "--start=false"}, pveArgs(sim, "--rootfs", "shared:1")...)
	c.ok(append([]string{"push", reg.Host + "/web:1"}, pveArgs(sim)...)...)
	sim.FailNextTask("vzcreate", "unable to create CT - simulated disk full")
	c.fails(append(args, "--vmid", "150"), "simulated disk full", "task vzcreate 150 on pve1 failed")
	if _, ok := sim.Container("pve1", 150); ok {
		t.Error("a failed create left container 150")
	}
	var wg sync.WaitGroup
	ids := make([]string, 3)
	for i := range ids {
		wg.Add(1)
		go func() { defer wg.Done(); ids[i] = c.ok(args...).out() }()
	}
	wg.Wait()
	if ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2] {
		t.Errorf("concurrent runs got VMIDs %v", ids)
	}
}

// TestPushOCIArchive: the OCI layout Proxmox 9.1's importer reads.
func TestPushOCIArchive(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", appImage(t, "oci", v1.Config{}))
	sim := startSim(t, pvesim.Options{})
	c := newCLI(t)
	volid := c.ok(append([]string{"push", "--format", "oci-archive", reg.Host + "/app:1"}, pveArgs(sim)...)...).out()
	if !strings.HasSuffix(volid, ".tar") {
		t.Fatalf("volid %q", volid)
	}
	list, err := exec.Command("tar", "-tf", filepath.Join(sim.StoragePath("pve1", "local"), "template", "cache", strings.TrimPrefix(volid, "local:vztmpl/"))).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(list)), "\n")
	if lines[0] != "oci-layout" || lines[1] != "index.json" || !strings.HasPrefix(lines[2], "blobs/") {
		t.Errorf("archive lists %q", lines)
	}
	var idx struct {
		Manifests []struct {
			MediaType string `json:"mediaType"`
		} `json:"manifests"`
	}
	b, _ := exec.Command("tar", "-xOf", filepath.Join(sim.StoragePath("pve1", "local"), "template", "cache", strings.TrimPrefix(volid, "local:vztmpl/")), "index.json").Output()
	if json.Unmarshal(b, &idx); len(idx.Manifests) != 1 || idx.Manifests[0].MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("index.json %s", b)
	}
}
