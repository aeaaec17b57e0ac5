package pvesim

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
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

// probeSource is a static helper the RealLXC tests run in their containers
// with lxc-attach: "cat FILE" prints a file, "write FILE TEXT" writes one.
const probeSource = `package main

import (
	"fmt"
	"os"
)

func main() {
	var err error
	switch os.Args[1] {
	case "cat":
		var b []byte
		if b, err = os.ReadFile(os.Args[2]); err == nil {
			os.Stdout.Write(b)
		}
	case "write":
		err = os.WriteFile(os.Args[2], []byte(os.Args[3]), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
`

func buildProbe(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "probe.go"), []byte(probeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-o", "probe", "probe.go")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the probe: %v\n%s", err, b)
	}
	b, err := os.ReadFile(filepath.Join(dir, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func requireLXC(t *testing.T) {
	t.Helper()
	if err := pvelxc.Check(); err != nil {
		if os.Getenv("PVE_IMAGE_REQUIRE_ALL") == "1" {
			t.Fatalf("required component missing: %v", err)
		}
		t.Skipf("skipped: %v", err)
	}
}

// TestRealLXCBindMountsAndNetwork runs a container with bind mounts and a
// static host-managed NIC: the host's files inside, ro read-only, the
// address and default route on eth0 (seen through the interfaces
// endpoint), a symlink planted over a mount point's parent refused at
// the next start, and destroy leaving the host directories alone.
func TestRealLXCBindMountsAndNetwork(t *testing.T) {
	requireLXC(t)
	s := newSim(t, Options{RealLXC: true})
	vol := putTemplate(t, s, "pve1", "local", "probe_1_amd64.tar.zst", map[string]tfile{
		"sbin/init": {mode: 0o755, data: buildTestapp(t)},
		"bin/probe": {mode: 0o755, data: buildProbe(t)},
	})
	ticket, csrf := login(t, s, "root@pam", "rootpw")

	dir := hostDir(t)
	rw, ro := filepath.Join(dir, "rw"), filepath.Join(dir, "ro")
	for _, d := range []string{rw, ro} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(rw, 0o777) // the container's root is uid 100000 on the host
	os.WriteFile(filepath.Join(rw, "hello.txt"), []byte("hello from the host\n"), 0o644)
	os.WriteFile(filepath.Join(ro, "ro.txt"), []byte("read only\n"), 0o644)

	_, st := createCT(t, s, ticketAuth(ticket, csrf), "pve1", url.Values{
		"vmid": {"100"}, "ostemplate": {vol}, "rootfs": {"local-lvm:1"}, "ostype": {"unmanaged"}, "arch": {"amd64"},
		"entrypoint": {"/sbin/init report wait-signal"}, "cmode": {"console"},
		"net0": {"name=eth0,bridge=vmbr0,host-managed=1,ip=10.99.0.5/24,gw=10.99.0.1,ip6=fd00:99::5/64,gw6=fd00:99::1"},
		// mp1 is inside mp0, so it is mounted after it, in rw's tree.
		"mp1": {ro + ",mp=/mnt/data/ro,ro=1"},
		"mp0": {rw + ",mp=/mnt/data"},
	})
	if st["exitstatus"] != "OK" {
		t.Fatalf("create: %v\n%s", st, taskLogText(t, s, st["upid"].(string)))
	}
	t.Cleanup(func() {
		if c, ok := s.Container("pve1", 100); ok && t.Failed() {
			t.Logf("console:\n%s", c.Console)
		}
	})
	lxcPath := s.LXCPath("pve1")
	run := func(path string) (map[string]any, string) {
		t.Helper()
		r := mustOK(t, api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/100/status/"+path, nil))
		st := waitTask(t, s, r.str())
		return st, taskLogText(t, s, r.str())
	}
	if st, log := run("start"); st["exitstatus"] != "OK" {
		t.Fatalf("start: %v\n%s", st, log)
	}
	waitFor(t, "the console", 30*time.Second, func() bool {
		c, _ := s.Container("pve1", 100)
		return strings.Contains(c.Console, "testapp: waiting for a signal")
	})

	probe := func(args ...string) (string, error) {
		out, err := exec.Command("lxc-attach", append([]string{"-n", "100", "-P", lxcPath, "--clear-env", "--", "/bin/probe"}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := probe("cat", "/mnt/data/hello.txt"); err != nil || out != "hello from the host\n" {
		t.Errorf("reading the bind-mounted file: %q %v", out, err)
	}
	if out, err := probe("write", "/mnt/data/new.txt", "from the container"); err != nil {
		t.Errorf("writing to the rw mount: %q %v", out, err)
	} else if b, _ := os.ReadFile(filepath.Join(rw, "new.txt")); string(b) != "from the container" {
		t.Errorf("host sees %q", b)
	}
	if out, err := probe("cat", "/mnt/data/ro/ro.txt"); err != nil || out != "read only\n" {
		t.Errorf("reading the ro mount: %q %v", out, err)
	}
	if out, err := probe("write", "/mnt/data/ro/x", "x"); err == nil || !strings.Contains(out, "read-only file system") {
		t.Errorf("writing to the ro mount: %q %v", out, err)
	}

	// The static address through the interfaces endpoint, and the
	// default route LXC added.
	ifs := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/lxc/100/interfaces", nil)).list()
	addrs := map[string][]string{}
	for _, i := range ifs {
		name, _ := i["name"].(string)
		list, _ := i["ip-addresses"].([]any)
		for _, a := range list {
			m := a.(map[string]any)
			addrs[name] = append(addrs[name], fmt.Sprintf("%s %s/%v", m["ip-address-type"], m["ip-address"], m["prefix"]))
		}
		if name == "eth0" && (i["hwaddr"] != i["hardware-address"] || i["inet"] != "10.99.0.5/24") {
			t.Errorf("eth0: %v", i)
		}
	}
	for name, want := range map[string]string{"lo": "inet 127.0.0.1/8", "eth0": "inet 10.99.0.5/24"} {
		if !slices.Contains(addrs[name], want) {
			t.Errorf("%s lacks %q: %v", name, want, addrs)
		}
	}
	if !slices.Contains(addrs["eth0"], "inet6 fd00:99::5/64") {
		t.Errorf("eth0 lacks its IPv6 address: %v", addrs)
	}
	pid, err := exec.Command("lxc-info", "-n", "100", "-P", lxcPath, "-pH").Output()
	if err != nil {
		t.Fatalf("lxc-info: %v", err)
	}
	routes, err := exec.Command("nsenter", "-t", strings.TrimSpace(string(pid)), "--net", "--", "ip", "route", "show", "default").Output()
	if err != nil || !strings.Contains(string(routes), "default via 10.99.0.1 dev eth0") {
		t.Errorf("default route: %q %v", routes, err)
	}

	// The env pattern is Proxmox's: no newline.
	r := api(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/100/config", url.Values{"env": {"A=x\ny"}})
	if r.code != 400 || r.errs()["env"] != "value does not match the regex pattern" {
		t.Errorf("env with a newline: %v", r)
	}

	// A symlink over a mount point's parent in the rootfs (what the
	// container itself could plant) is refused at the next start.
	if st, _ := run("stop"); st["exitstatus"] != "OK" {
		t.Fatalf("stop: %v", st)
	}
	mnt := filepath.Join(lxcPath, "100", "rootfs", "mnt")
	if err := os.RemoveAll(mnt); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/tmp", mnt); err != nil {
		t.Fatal(err)
	}
	if st, log := run("start"); st["exitstatus"] != "startup for container '100' failed" || !strings.Contains(log, "symlink encountered at: //./mnt") {
		t.Fatalf("start with a symlink: %v\n%s", st, log)
	}
	os.Remove(mnt)
	if st, log := run("start"); st["exitstatus"] != "OK" {
		t.Fatalf("start after removing the symlink: %v\n%s", st, log)
	}

	r = mustOK(t, api(t, s, rootAuth, "DELETE", "/nodes/pve1/lxc/100", url.Values{"force": {"1"}}))
	if st := waitTask(t, s, r.str()); st["exitstatus"] != "WARNINGS: 1" {
		t.Fatalf("destroy: %v", st)
	}
	for _, f := range []string{filepath.Join(rw, "hello.txt"), filepath.Join(rw, "new.txt"), filepath.Join(ro, "ro.txt")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("destroy touched the host directory: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(lxcPath, "100")); !os.IsNotExist(err) {
		t.Errorf("container directory left: %v", err)
	}
}
