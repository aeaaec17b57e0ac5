package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Container is an unprivileged LXC container started the way Proxmox
// starts one: its rootfs unpacked by Proxmox's tar command, `lxc-start -F`
// in the background, ids mapped 0→100000 (65536).
type Container struct {
	Name    string
	Dir     string // the LXC path (-P); Dir/Name/config
	Rootfs  string
	console string
	log     string
	cmd     *exec.Cmd
	done    chan struct{}
}

// ContainerOptions describe the config, as Proxmox would write it.
type ContainerOptions struct {
	Template string
	// OSType picks /usr/share/lxc/config/<ostype>.common.conf (Proxmox
	// uses common.conf for unmanaged).
	OSType string
	// InitCmd is lxc.init.cmd: Proxmox 9.1 writes the container's
	// entrypoint there. Empty boots /sbin/init.
	InitCmd string
	// Env is Proxmox 9.1's env option, one variable per element.
	Env []string
	// HaltSignal is lxc.signal.halt.
	HaltSignal string
	// Bridge attaches eth0 (veth) to a test bridge; nil means no network.
	Bridge *Bridge
}

// RequireLXC skips unless unprivileged LXC containers can run here.
func RequireLXC(t testing.TB) {
	t.Helper()
	RequireUserns(t)
	if _, err := exec.LookPath("lxc-start"); err != nil {
		Missing(t, "lxc-start not found (apt-get install lxc)")
	}
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// StartContainer unpacks a template and starts a container from it.
func StartContainer(t testing.TB, o ContainerOptions) *Container {
	t.Helper()
	RequireLXC(t)
	rootfs := ExtractAsProxmox(t, o.Template)
	c := &Container{Name: randomName("pvit"), Dir: filepath.Dir(rootfs), Rootfs: rootfs, done: make(chan struct{})}
	c.console = filepath.Join(c.Dir, "console.log")
	c.log = filepath.Join(c.Dir, "lxc.log")
	include := "common.conf"
	if o.OSType != "" && o.OSType != "unmanaged" {
		if _, err := os.Stat("/usr/share/lxc/config/" + o.OSType + ".common.conf"); err == nil {
			include = o.OSType + ".common.conf"
		}
	}
	cfg := []string{
		"lxc.arch = amd64",
		"lxc.include = /usr/share/lxc/config/" + include,
		"lxc.include = /usr/share/lxc/config/userns.conf",
		"lxc.apparmor.profile = unconfined",
		"lxc.monitor.unshare = 1",
		fmt.Sprintf("lxc.idmap = u 0 %d %d", MapBase, MapSize),
		fmt.Sprintf("lxc.idmap = g 0 %d %d", MapBase, MapSize),
		"lxc.tty.max = 2",
		"lxc.environment = TERM=linux",
		"lxc.uts.name = " + c.Name,
		"lxc.rootfs.path = dir:" + rootfs,
		"lxc.console.logfile = " + c.console,
	}
	if o.InitCmd != "" {
		cfg = append(cfg, "lxc.init.cmd = "+o.InitCmd)
	}
	// Proxmox's LXC 6 writes env as lxc.environment.runtime; Debian's
	// LXC 5 has only lxc.environment, which reaches init the same way.
	for _, e := range o.Env {
		cfg = append(cfg, "lxc.environment = "+e)
	}
	if o.HaltSignal != "" {
		cfg = append(cfg, "lxc.signal.halt = "+o.HaltSignal)
	}
	if o.Bridge != nil {
		cfg = append(cfg, "lxc.net.0.type = veth", "lxc.net.0.link = "+o.Bridge.Name, "lxc.net.0.name = eth0",
			"lxc.net.0.hwaddr = 02:00:"+randomHex(4, ":"), "lxc.net.0.veth.pair = "+randomName("vt"))
	} else {
		cfg = append(cfg, "lxc.net.0.type = empty")
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, c.Name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, c.Name, "config"), []byte(strings.Join(cfg, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(c.Dir, "lxc-start.out"))
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command("lxc-start", "-n", c.Name, "-P", c.Dir, "-F", "-l", "INFO", "-o", c.log)
	c.cmd.Stdout, c.cmd.Stderr = out, out
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("lxc-start: %v", err)
	}
	go func() { c.cmd.Wait(); out.Close(); close(c.done) }()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			exec.Command("lxc-stop", "-n", c.Name, "-P", c.Dir, "-k").Run()
			<-c.done
		}
		if t.Failed() {
			t.Logf("console of %s:\n%s", c.Name, c.Console())
			b, _ := os.ReadFile(c.log)
			t.Logf("LXC log (errors):\n%s", grepLines(string(b), "ERROR|WARN|ended"))
		}
	})
	return c
}

func randomHex(n int, sep string) string {
	b := make([]byte, n)
	rand.Read(b)
	parts := make([]string, n)
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, sep)
}

func grepLines(s, pattern string) string {
	re := regexp.MustCompile(pattern)
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Console is what the container printed so far.
func (c *Container) Console() string {
	b, _ := os.ReadFile(c.console)
	return string(b)
}

// WaitConsole waits until the console shows want.
func (c *Container) WaitConsole(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(c.Console(), want) {
		select {
		case <-c.done:
			if strings.Contains(c.Console(), want) {
				return
			}
			t.Fatalf("container %s ended before printing %q", c.Name, want)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s did not print %q within %s", c.Name, want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop asks the container to halt as `pct shutdown` does (lxc-stop sends
// the halt signal; --nokill so a timeout shows as a failure) and returns how
// long it took.
func (c *Container) Stop(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	out, err := exec.Command("lxc-stop", "-n", c.Name, "-P", c.Dir, "--nokill", "-t", strconv.Itoa(int(timeout.Seconds()))).CombinedOutput()
	if err != nil {
		t.Fatalf("lxc-stop did not stop %s within %s: %v\n%s", c.Name, timeout, err, out)
	}
	c.Wait(t, 10*time.Second)
	return time.Since(start)
}

var childEnded = regexp.MustCompile(`Child <\d+> ended on error \((\d+)\)`)

// Wait waits for the container to stop by itself and returns its init's
// exit status, which LXC records only in its log (lxc.md).
func (c *Container) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		t.Fatalf("container %s still runs after %s", c.Name, timeout)
	}
	b, _ := os.ReadFile(c.log)
	if m := childEnded.FindStringSubmatch(string(b)); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// Bridge is a Linux bridge with a DHCP server (dnsmasq) for test
// containers: a network of the test's own, in its own address range.
type Bridge struct {
	Name    string
	Gateway string
}

// StartBridge creates the bridge and its DHCP server for the test.
func StartBridge(t testing.TB) *Bridge {
	t.Helper()
	RequireRoot(t)
	dnsmasq, err := exec.LookPath("dnsmasq")
	if err != nil {
		Missing(t, "dnsmasq not found (apt-get install dnsmasq-base)")
	}
	b := &Bridge{Name: randomName("pvbr")[:12]}
	n := 10 + int(b.Name[len(b.Name)-1])%200
	b.Gateway = fmt.Sprintf("10.242.%d.1", n)
	run := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	run("link", "add", "name", b.Name, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", b.Name).Run() })
	run("addr", "add", b.Gateway+"/24", "dev", b.Name)
	run("link", "set", b.Name, "up")
	dir := t.TempDir()
	cmd := exec.Command(dnsmasq, "--keep-in-foreground", "--interface="+b.Name, "--bind-interfaces", "--except-interface=lo",
		"--port=0", "--no-resolv", "--no-hosts", "--pid-file="+filepath.Join(dir, "pid"),
		"--dhcp-leasefile="+filepath.Join(dir, "leases"),
		fmt.Sprintf("--dhcp-range=10.242.%d.50,10.242.%d.150,255.255.255.0,1h", n, n),
		"--dhcp-option=option:dns-server,"+b.Gateway, "--dhcp-option=option:domain-name,pve-image.test")
	if out, err := cmd.StdoutPipe(); err == nil {
		go func() {
			buf := make([]byte, 4096)
			for {
				if _, err := out.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("dnsmasq: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return b
}
