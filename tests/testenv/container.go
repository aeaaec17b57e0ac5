package testenv

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// Container is an unprivileged LXC container started as Proxmox starts
// one (package pvelxc), stopped and removed when the test ends.
type Container struct {
	*pvelxc.Container
}

// ContainerOptions describe a container.
type ContainerOptions struct {
	Template string
	pvelxc.Options
	// Bridge attaches eth0 to a test bridge; nil means no network.
	Bridge *Bridge
}

// RequireLXC skips unless unprivileged LXC containers can run here.
func RequireLXC(t testing.TB) {
	t.Helper()
	RequireUserns(t)
}

// StartContainer unpacks a template and starts a container from it.
func StartContainer(t testing.TB, o ContainerOptions) *Container {
	t.Helper()
	RequireLXC(t)
	if o.Bridge != nil {
		o.Options.Bridge = o.Bridge.Name
	}
	ct, err := pvelxc.Create(lxcDir(t), pvelxc.RandomName("pvit"), o.Template, o.Options)
	if err != nil {
		t.Fatal(err)
	}
	c := &Container{ct}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Kill()
		if t.Failed() {
			t.Logf("console of %s:\n%s", c.Name, c.Console())
			t.Logf("LXC log (errors):\n%s", c.LogErrors())
		}
	})
	return c
}

// WaitConsole waits until the console shows want.
func (c *Container) WaitConsole(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(c.Console(), want) {
		if !c.Running() {
			if strings.Contains(c.Console(), want) {
				return
			}
			t.Fatalf("container %s ended before printing %q", c.Name, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s did not print %q within %s", c.Name, want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop halts the container as `pct shutdown` does and returns how long it
// took; not stopping within timeout fails the test.
func (c *Container) Stop(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := c.Shutdown(timeout); err != nil {
		t.Fatalf("container %s: %v", c.Name, err)
	}
	return time.Since(start)
}

// Wait waits for the container to stop by itself and returns its init's
// exit status.
func (c *Container) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(timeout):
		t.Fatalf("container %s still runs after %s", c.Name, timeout)
	}
	return c.ExitCode()
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
	b := &Bridge{Name: pvelxc.RandomName("pvbr")[:12]}
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
