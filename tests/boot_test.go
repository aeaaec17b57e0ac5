package tests

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/template"
	"github.com/pve-image/pve-image/tests/pvelxc"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// Boot tests: templates unpacked as Proxmox unpacks them, started as
// unprivileged LXC containers, judged by what their console shows.

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// busybox is the static busybox of the host (Debian's busybox-static).
func busybox(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if b, err := os.ReadFile(p); err == nil {
			return string(b)
		}
	}
	Missing(t, "busybox not found (apt-get install busybox-static)")
	return ""
}

func convertImage(t *testing.T, c *cli, reg *Registry, name string, img v1.Image, args ...string) string {
	t.Helper()
	reg.Push(t, name, img)
	return c.ok(append(append([]string{"convert"}, args...), reg.Host+"/"+name)...).out()
}

func wantConsole(t *testing.T, ct *Container, wants ...string) {
	t.Helper()
	con := ct.Console()
	for _, w := range wants {
		if !strings.Contains(con, w) {
			t.Errorf("console lacks %q", w)
		}
	}
}

// TestBootBusyboxAppNumericUser: a busybox application image with a numeric
// USER runs its program with the image's argv, env, working directory and
// ids, gets a DHCP lease, leaves no zombies, and stops with its StopSignal.
func TestBootBusyboxAppNumericUser(t *testing.T) {
	RequireLXC(t)
	bb := busybox(t)
	app := readFile(t, testApp)
	reg := StartRegistry(t, RegistryOptions{})
	img := Image(t, amd64, v1.Config{
		Entrypoint: []string{"/usr/bin/testapp"}, Cmd: []string{"report", "orphans", "5", "wait-signal"},
		Env: []string{"FOO=bar baz"}, User: "1234:1234", WorkingDir: "/work", StopSignal: "SIGQUIT",
	},
		Layer(t, Exec("bin/busybox", bb), Symlink("bin/sh", "busybox"), File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")),
		Layer(t, Exec("usr/bin/testapp", app)),
	)
	c := newCLI(t)
	tpl := convertImage(t, c, reg, "bbapp:1", img)
	br := StartBridge(t)
	ct := StartContainer(t, ContainerOptions{Template: tpl, Bridge: br})
	ct.WaitConsole(t, "waiting for a signal", 30*time.Second)
	wantConsole(t, ct,
		`argv=["/usr/bin/testapp" "report" "orphans" "5" "wait-signal"]`,
		`"FOO=bar baz"`, `"HOME=/"`, `"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"`,
		"cwd=/work", "uid=1234 gid=1234", "hostname="+ct.Name, "zombies=0", "from DHCP, gateway")
	if !regexp.MustCompile(`eth0: 10\.242\.\d+\.\d+/24 from DHCP`).MatchString(ct.Console()) {
		t.Errorf("no DHCP lease on eth0")
	}
	took := ct.Stop(t, 30*time.Second)
	wantConsole(t, ct, "halt requested: sending signal 3", "got signal SIGQUIT", "program exited with status 0")
	if took > 15*time.Second {
		t.Errorf("stopping took %s", took)
	}
}

// TestBootNamedUser: USER names a user of the image's /etc/passwd; its
// groups from /etc/group come along.
func TestBootNamedUser(t *testing.T) {
	RequireLXC(t)
	reg := StartRegistry(t, RegistryOptions{})
	img := Image(t, amd64, v1.Config{Entrypoint: []string{"/usr/bin/testapp", "report"}, Cmd: []string{"wait-signal"}, User: "app"},
		Layer(t, Exec("bin/busybox", busybox(t)), Symlink("bin/sh", "busybox"),
			File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
			File("etc/group", "root:x:0:\nstaff:x:50:app\napp:x:1000:\n"),
			Owned(Dir("home/app/"), 1000, 1000), Exec("usr/bin/testapp", readFile(t, testApp))))
	tpl := convertImage(t, newCLI(t), reg, "named:1", img)
	ct := StartContainer(t, ContainerOptions{Template: tpl})
	ct.WaitConsole(t, "waiting for a signal", 30*time.Second)
	wantConsole(t, ct, "uid=1000 gid=1000 groups=[50]", `"HOME=/home/app"`, "cwd=/")
	ct.Stop(t, 30*time.Second)
	wantConsole(t, ct, "got signal SIGTERM")
}

// TestBootDistroless: one static binary, no shell, an /etc/passwd with root
// only and a numeric USER; its exit status 3 is the container's.
func TestBootDistroless(t *testing.T) {
	RequireLXC(t)
	reg := StartRegistry(t, RegistryOptions{})
	img := Image(t, amd64, v1.Config{Entrypoint: []string{"/app"}, Cmd: []string{"report", "exit", "3"}, User: "65532:65532"},
		Layer(t, File("etc/passwd", "root:x:0:0:root:/root:/sbin/nologin\n"), Exec("app", readFile(t, testApp))))
	c := newCLI(t)
	tpl := convertImage(t, c, reg, "distroless:1", img)
	ct := StartContainer(t, ContainerOptions{Template: tpl})
	if code := ct.Wait(t, 30*time.Second); code != 3 {
		t.Errorf("container exited with %d, want 3", code)
	}
	wantConsole(t, ct, "uid=65532 gid=65532", "exiting with 3", "pve-image-init: program exited with status 3")
}

// TestConvertUnknownUser: a USER the image does not have is an error, never
// a silent root.
func TestConvertUnknownUser(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "ghost:1", Image(t, amd64, v1.Config{Entrypoint: []string{"/app"}, User: "ghost"},
		Layer(t, File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), Exec("app", "#!/bin/sh\n"))))
	c := newCLI(t)
	c.fails([]string{"convert", reg.Host + "/ghost:1"}, "image "+reg.Host+"/ghost:1", `USER "ghost"`, `user "ghost": not found in the image (/etc/passwd)`)
	if ls := c.ok("cache", "ls").stdout; !strings.Contains(ls, "0 template(s)") {
		t.Errorf("a failed convert left a template:\n%s", ls)
	}
}

// TestBootSystemImage: an image whose command is its init (busybox init
// here) keeps its /sbin/init, gets the ostype Proxmox detects, and boots it.
func TestBootSystemImage(t *testing.T) {
	RequireLXC(t)
	reg := StartRegistry(t, RegistryOptions{})
	inittab := "::sysinit:/bin/echo SYSTEM-INIT-RAN as $$\n::respawn:/bin/sleep 1000\n::shutdown:/bin/echo SYSTEM-SHUTDOWN\n"
	img := Image(t, amd64, v1.Config{Cmd: []string{"/sbin/init"}},
		Layer(t, Exec("bin/busybox", busybox(t)), Symlink("bin/sh", "busybox"), Symlink("bin/echo", "busybox"), Symlink("bin/sleep", "busybox"),
			Symlink("sbin/init", "/bin/busybox"), File("etc/inittab", inittab), Dir("run/"), Dir("proc/"), Dir("sys/"), Dir("dev/"),
			File("etc/os-release", "ID=alpine\nVERSION_ID=3.20.3\n"), File("etc/alpine-release", "3.20.3\n")))
	c := newCLI(t)
	tpl := convertImage(t, c, reg, "system:1", img)
	var m template.Meta
	if err := json.Unmarshal([]byte(c.ok("inspect", "--json", tpl).stdout), &m); err != nil {
		t.Fatal(err)
	}
	if m.Run.Kind != "system" || m.Run.Init != "none" || m.Run.OSType != "alpine" || m.Run.InitSystem != "busybox" {
		t.Fatalf("run info %+v", m.Run)
	}
	ct := StartContainer(t, ContainerOptions{Template: tpl, Options: pvelxc.Options{OSType: "alpine"}})
	if _, err := os.Lstat(ct.Rootfs + "/sbin/pve-image-init"); !os.IsNotExist(err) {
		t.Error("the shim went into a system image")
	}
	if target, _ := os.Readlink(ct.Rootfs + "/sbin/init"); target != "/bin/busybox" {
		t.Errorf("/sbin/init -> %q, want the image's /bin/busybox", target)
	}
	ct.WaitConsole(t, "SYSTEM-INIT-RAN", 30*time.Second)
	// lxc-stop sends SIGPWR, which busybox init takes as "halt": it runs
	// the shutdown actions and ends.
	ct.Stop(t, 30*time.Second)
	wantConsole(t, ct, "SYSTEM-SHUTDOWN")
}

// TestBootProxmoxNative: Proxmox 9.1 starts the container with inspect's
// native config: lxc.init.cmd from entrypoint, the env list with the user's
// variables merged over the image's.
func TestBootProxmoxNative(t *testing.T) {
	RequireLXC(t)
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "native:1", Image(t, amd64, v1.Config{Entrypoint: []string{"/app"}, Cmd: []string{"report", "wait-signal"},
		Env: []string{"PATH=/opt/bin:/bin", "MODE=image", "KEEP=1"}},
		Layer(t, Exec("app", readFile(t, testApp)))))
	c := newCLI(t)
	ref := reg.Host + "/native:1"
	tpl := c.ok("convert", ref).out()
	var m template.Meta
	if err := json.Unmarshal([]byte(c.ok("inspect", "--json", "--env", "MODE=user", "--env", "EXTRA=x", ref).stdout), &m); err != nil {
		t.Fatal(err)
	}
	n := m.Proxmox.Native
	if n.Options["entrypoint"] != "/sbin/pve-image-init" || n.Options["cmode"] != "console" || n.NetOptions != "host-managed=1" || n.Options["ostype"] != "unmanaged" {
		t.Fatalf("native config %+v", n)
	}
	env := strings.Split(n.Options["env"], "\x00")
	ct := StartContainer(t, ContainerOptions{Template: tpl, Options: pvelxc.Options{InitCmd: n.Options["entrypoint"], Env: env}})
	ct.WaitConsole(t, "waiting for a signal", 30*time.Second)
	wantConsole(t, ct, `"MODE=user"`, `"EXTRA=x"`, `"KEEP=1"`, `"PATH=/opt/bin:/bin"`)
	ct.Stop(t, 30*time.Second)
}

// TestBootWithoutShimLeavesZombies shows what the shim prevents, and that
// the zombie count above can fail: the same program run as PID 1, as
// Proxmox 9.1's own import runs it, leaves its orphans unreaped.
func TestBootWithoutShimLeavesZombies(t *testing.T) {
	RequireLXC(t)
	reg := StartRegistry(t, RegistryOptions{})
	img := Image(t, amd64, v1.Config{Entrypoint: []string{"/app"}, Cmd: []string{"report", "orphans", "5"}},
		Layer(t, Exec("app", readFile(t, testApp))))
	tpl := convertImage(t, newCLI(t), reg, "pid1:1", img, "--init", "none")
	ct := StartContainer(t, ContainerOptions{Template: tpl, Options: pvelxc.Options{InitCmd: "/app report orphans 5"}})
	ct.Wait(t, 30*time.Second)
	wantConsole(t, ct, "zombies=5")
}
