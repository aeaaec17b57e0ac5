package pvesim

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// buildTestapp builds tests/testapp statically, the init of the template.
func buildTestapp(t *testing.T) []byte {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(t.TempDir(), "testapp")
	cmd := exec.Command(goBin, "build", "-o", out, "./tests/testapp")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building testapp: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRealLXC runs a container through the API with real unprivileged LXC:
// upload, create, start, console, shutdown timeout, forced stop, an init
// that exits by itself, destroy.
func TestRealLXC(t *testing.T) {
	if err := pvelxc.Check(); err != nil {
		if os.Getenv("PVE_IMAGE_REQUIRE_ALL") == "1" {
			t.Fatalf("required component missing: %v", err)
		}
		t.Skipf("skipped: %v", err)
	}
	s := newSim(t, Options{RealLXC: true})
	tpl := makeTemplate(t, t.TempDir(), "testapp_1_amd64.tar.zst", map[string]tfile{
		"sbin/init": {mode: 0o755, data: buildTestapp(t)},
		"etc/hosts": {data: []byte("127.0.0.1 localhost\n")},
	})
	data, err := os.ReadFile(tpl)
	if err != nil {
		t.Fatal(err)
	}
	up := mustOK(t, upload(t, s, rootAuth, "pve1", "local",
		field("content", "vztmpl"), field("checksum-algorithm", "sha256"), field("checksum", sha256hex(data)),
		filePart("filename", "testapp_1_amd64.tar.zst", data)))
	if st := waitTask(t, s, up.str()); st["exitstatus"] != "OK" {
		t.Fatalf("upload: %v", st)
	}

	_, st := createCT(t, s, rootAuth, "pve1", url.Values{
		"vmid": {"100"}, "ostemplate": {"local:vztmpl/testapp_1_amd64.tar.zst"}, "rootfs": {"local-lvm:1"},
		"ostype": {"unmanaged"}, "arch": {"amd64"}, "hostname": {"simct"}, "memory": {"256"},
		"entrypoint": {"/sbin/init report wait-signal"}, "env": {"FOO=bar\x00HELLO=world"}, "cmode": {"console"},
		"net0": {"name=eth0,bridge=vmbr0,ip=dhcp"},
	})
	if st["exitstatus"] != "OK" {
		t.Fatalf("create: %v\n%s", st, taskLogText(t, s, st["upid"].(string)))
	}
	ct, _ := s.Container("pve1", 100)
	t.Cleanup(func() {
		if t.Failed() {
			if c, ok := s.Container("pve1", 100); ok {
				t.Logf("console:\n%s", c.Console)
			}
		}
	})
	if ct.Status != "stopped" {
		t.Fatalf("after create: %+v", ct)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "pve1", "lxc", "100", "rootfs", "sbin", "init")); err != nil {
		t.Fatalf("template not unpacked: %v", err)
	}

	run := func(path string, params url.Values) map[string]any {
		t.Helper()
		r := mustOK(t, api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/100/status/"+path, params))
		return waitTask(t, s, r.str())
	}
	console := func() string { c, _ := s.Container("pve1", 100); return c.Console }
	status := func() string {
		return mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/lxc/100/status/current", nil)).obj()["status"].(string)
	}

	if st := run("start", nil); st["exitstatus"] != "OK" {
		t.Fatalf("start: %v\n%s", st, taskLogText(t, s, st["upid"].(string)))
	}
	waitFor(t, "the console", 30*time.Second, func() bool { return strings.Contains(console(), "testapp: waiting for a signal") })
	for _, want := range []string{"FOO=bar", "HELLO=world", "hostname=simct", `argv=["/sbin/init" "report" "wait-signal"]`} {
		if !strings.Contains(console(), want) {
			t.Errorf("console lacks %q:\n%s", want, console())
		}
	}
	if status() != "running" {
		t.Fatal("not running")
	}
	// vmbr0 does not exist here: the simulator made a stand-in bridge,
	// and the container's NIC is attached to it.
	ports, _ := filepath.Glob("/sys/class/net/" + s.hostBridges["vmbr0"] + "/brif/*")
	if len(ports) != 1 {
		t.Errorf("bridge %s (vmbr0) has ports %v", s.hostBridges["vmbr0"], ports)
	}

	// testapp ignores the halt signal, so a clean shutdown times out.
	st = run("shutdown", url.Values{"timeout": {"2"}})
	if st["exitstatus"] != "container did not stop" {
		t.Fatalf("shutdown: %v", st)
	}
	if status() != "running" {
		t.Fatal("stopped although the shutdown timed out")
	}
	if st := run("shutdown", url.Values{"timeout": {"1"}, "forceStop": {"1"}}); st["exitstatus"] != "OK" {
		t.Fatalf("forced shutdown: %v", st)
	}
	if status() != "stopped" {
		t.Fatal("still running")
	}

	// An init that exits by itself; the config change applies at start.
	mustOK(t, api(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/100/config", url.Values{"entrypoint": {"/sbin/init report exit 3"}}))
	if st := run("start", nil); st["exitstatus"] != "OK" {
		t.Fatalf("start: %v", st)
	}
	waitFor(t, "init to exit", 30*time.Second, func() bool { return status() == "stopped" })
	c, _ := s.Container("pve1", 100)
	if !strings.Contains(c.Console, "testapp: exiting with 3") || c.ExitCode != 3 {
		t.Fatalf("exit code %d, console:\n%s", c.ExitCode, c.Console)
	}
	t.Logf("console of CT 100:\n%s", c.Console)

	r := mustOK(t, api(t, s, rootAuth, "DELETE", "/nodes/pve1/lxc/100", nil))
	if st := waitTask(t, s, r.str()); st["exitstatus"] != "OK" {
		t.Fatalf("destroy: %v", st)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "pve1", "lxc", "100")); !os.IsNotExist(err) {
		t.Fatalf("container directory left: %v", err)
	}
}

// TestRealLXCCreateFailureCleansUp checks that a create failing after the
// template was unpacked removes the unpacked container.
func TestRealLXCCreateFailureCleansUp(t *testing.T) {
	if err := pvelxc.Check(); err != nil {
		if os.Getenv("PVE_IMAGE_REQUIRE_ALL") == "1" {
			t.Fatalf("required component missing: %v", err)
		}
		t.Skipf("skipped: %v", err)
	}
	s := newSim(t, Options{RealLXC: true})
	vol := putTemplate(t, s, "pve1", "local", "d.tar.zst", debianFiles())
	s.FailNextTask("vzcreate", "injected")
	_, st := createCT(t, s, rootAuth, "pve1", url.Values{"vmid": {"101"}, "ostemplate": {vol}, "rootfs": {"shared:1"}})
	if st["exitstatus"] != "unable to create CT 101 - injected" {
		t.Fatalf("%v", st)
	}
	if l := leftovers(s, 101); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
}
