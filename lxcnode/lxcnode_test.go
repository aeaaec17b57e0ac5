package lxcnode

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// startContainer runs a busybox container the way Proxmox does, named by
// a VMID under its own LXC path.
func startContainer(t *testing.T) (*Node, string, *pvelxc.Container) {
	t.Helper()
	if err := pvelxc.Check(); err != nil {
		if os.Getenv("PVE_IMAGE_REQUIRE_ALL") == "1" {
			t.Fatalf("required component missing: %v", err)
		}
		t.Skipf("skipped: %v", err)
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox: %v (apt-get install busybox-static)", err)
	}
	dir, err := os.MkdirTemp("", "lxcnode-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"./", "./bin/", "./etc/", "./tmp/", "./proc/", "./sys/", "./dev/"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./bin/busybox", Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	file := func(name, body string, mode int64) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))})
		tw.Write([]byte(body))
	}
	file("./etc/hostname", "inside\n", 0o644)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "./etc/escape", Linkname: "/etc/passwd-of-the-host"})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "./etc/up", Linkname: "../../../../../../etc/hostname"})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeFifo, Name: "./etc/fifo", Mode: 0o644})
	tw.Close()
	tmpl := filepath.Join(dir, "bb_1_amd64.tar")
	os.WriteFile(tmpl, buf.Bytes(), 0o644)
	lxcPath := filepath.Join(dir, "lxc")
	name := "4242"
	c, err := pvelxc.Create(lxcPath, name, tmpl, pvelxc.Options{OSType: "unmanaged", InitCmd: "/bin/busybox sleep 3600"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Destroy() })
	n, err := Open(lxcPath)
	if err != nil {
		t.Fatal(err)
	}
	return n, name, c
}

func TestInitFilesAndSignals(t *testing.T) {
	n, name, c := startContainer(t)
	ctx := context.Background()
	var init *Init
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if init, err = n.Init(ctx, name); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no init: %v", err)
		}
	}
	defer init.Close()
	if !n.Has(name) || n.Has("4243") {
		t.Error("Has does not tell containers apart")
	}
	if b, err := init.ReadFile("/etc/hostname", 100); err != nil || string(b) != "inside\n" {
		t.Errorf("ReadFile: %q %v", b, err)
	}
	if _, err := init.ReadFile("/etc/hostname", 3); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a file over the limit: %v", err)
	}
	if b, err := init.ReadAt("/etc/hostname", 2, 3); err != nil || string(b) != "sid" {
		t.Errorf("ReadAt: %q %v", b, err)
	}
	// Symlinks resolve inside the container: an absolute one does not
	// reach the host's file, a climbing one stops at the container's root.
	os.WriteFile("/etc/passwd-of-the-host", []byte("secret"), 0o600)
	defer os.Remove("/etc/passwd-of-the-host")
	if b, err := init.ReadFile("/etc/escape", 100); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an absolute symlink read %q, %v: the host's file", b, err)
	}
	if b, err := init.ReadFile("/etc/up", 100); err != nil || string(b) != "inside\n" {
		t.Errorf("a climbing symlink read %q, %v", b, err)
	}
	if _, err := init.ReadFile("/etc/fifo", 100); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a FIFO: %v", err)
	}
	if ok, err := init.Exists("/etc/hostname"); !ok || err != nil {
		t.Errorf("Exists: %v %v", ok, err)
	}
	if ok, err := init.Exists("/nope"); ok || err != nil {
		t.Errorf("Exists of nothing: %v %v", ok, err)
	}

	out, err := n.Command(ctx, name, []string{"PATH=/bin", "GREETING=hi"}, "/bin/busybox", "sh", "-c", "echo $GREETING $(cat /etc/hostname); exit 3").CombinedOutput()
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || strings.TrimSpace(string(out)) != "hi inside" {
		t.Errorf("Command: %q %v", out, err)
	}

	// A port inside the container's network namespace (whose loopback
	// pve-image-init would bring up).
	if out, err := n.Command(ctx, name, nil, "/bin/busybox", "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	go n.Command(ctx, name, nil, "/bin/busybox", "sh", "-c", "echo hello-from-port | /bin/busybox nc -l -p 8080").Run()
	var conn *net.TCPConn
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if conn, err = init.DialTCP(ctx, 8080); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DialTCP: %v", err)
		}
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if line != "hello-from-port\n" {
		t.Errorf("through the port: %q", line)
	}
	if _, err := net.DialTimeout("tcp", "127.0.0.1:8080", 200*time.Millisecond); err == nil {
		t.Error("the container's port is open on the host's loopback too: the dial did not happen inside")
	}

	if !init.Alive() {
		t.Fatal("not alive")
	}
	if err := init.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the container did not stop")
	}
	if init.Alive() {
		t.Error("alive after it stopped")
	}
	if _, err := init.ReadFile("/etc/hostname", 100); !errors.Is(err, ErrNotRunning) {
		t.Errorf("reading from a stopped container: %v", err)
	}
	if _, err := n.Init(ctx, name); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Init of a stopped container: %v", err)
	}
}
