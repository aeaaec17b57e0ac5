package lxcnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultPath is where Proxmox keeps its containers' LXC configs.
const DefaultPath = "/var/lib/lxc"

// Node is this machine's LXC, with containers under Path.
type Node struct {
	Path string
}

// ErrNotRunning: the container has no init (it is stopped, or not here).
var ErrNotRunning = errors.New("the container is not running on this node")

// Open checks that this process can reach containers under path: it is
// root, LXC's tools are installed and path is a directory.
func Open(path string) (*Node, error) {
	if path == "" {
		path = DefaultPath
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("not root: reaching containers with LXC's tools needs root on the Proxmox node")
	}
	for _, tool := range []string{"lxc-info", "lxc-attach"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found: LXC's tools are not installed here, so this is not a Proxmox node", tool)
		}
	}
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("LXC path %s is not a directory here: this is not the Proxmox node", path)
	}
	return &Node{Path: path}, nil
}

// Has reports whether container name has an LXC config here: Proxmox
// writes it on the node the container lives on.
func (n *Node) Has(name string) bool {
	_, err := os.Stat(n.Path + "/" + name + "/config")
	return err == nil
}

// Init is a running container's init process, held by a pidfd so that a
// reused PID never stands for it.
type Init struct {
	PID   int
	pidfd int

	// closeMu keeps the pidfd from being closed while a signal uses it:
	// a closed number may already belong to another container's init.
	closeMu sync.RWMutex
	closed  bool
}

// Init finds the init of container name.
func (n *Node) Init(ctx context.Context, name string) (*Init, error) {
	pid, err := n.initPID(ctx, name)
	if err != nil {
		return nil, err
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("container %s: init %d: %w", name, pid, ErrNotRunning)
	}
	// The PID may have ended and been reused between lxc-info and
	// pidfd_open: it must still be the container's init.
	if again, err := n.initPID(ctx, name); err != nil || again != pid {
		unix.Close(fd)
		return nil, fmt.Errorf("container %s: %w", name, ErrNotRunning)
	}
	return &Init{PID: pid, pidfd: fd}, nil
}

func (n *Node) initPID(ctx context.Context, name string) (int, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "lxc-info", "-n", name, "-P", n.Path, "-p", "-H")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("lxc-info %s: %v: %s", name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	s := strings.TrimSpace(string(out))
	if s == "" {
		return 0, fmt.Errorf("container %s: %w", name, ErrNotRunning)
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("lxc-info %s: unexpected pid %q", name, s)
	}
	return pid, nil
}

// Close releases the pidfd; later calls do nothing.
func (i *Init) Close() error {
	i.closeMu.Lock()
	defer i.closeMu.Unlock()
	if i.closed {
		return nil
	}
	i.closed = true
	return unix.Close(i.pidfd)
}

// send sends sig (0: none) through the pidfd, unless it is closed.
func (i *Init) send(sig syscall.Signal) error {
	i.closeMu.RLock()
	defer i.closeMu.RUnlock()
	if i.closed {
		return ErrNotRunning
	}
	return unix.PidfdSendSignal(i.pidfd, sig, nil, 0)
}

// Alive reports whether the init still runs.
func (i *Init) Alive() bool { return i.send(0) == nil }

// Signal sends sig to the init.
func (i *Init) Signal(sig syscall.Signal) error {
	if err := i.send(sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return ErrNotRunning
		}
		return err
	}
	return nil
}

// ErrTooLarge is a file beyond the size a reader accepts.
var ErrTooLarge = errors.New("file too large")

// open opens path inside the container, resolved as if the container's
// root were the root: symlinks and ".." stay inside. Only regular files
// open, without blocking (a FIFO in its place must not hang the caller).
func (i *Init) open(path string) (*os.File, error) {
	root, err := unix.Open("/proc/"+strconv.Itoa(i.PID)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("container root: %w", ErrNotRunning)
	}
	defer unix.Close(root)
	// /proc/PID is that of our init only while the pidfd's process lives.
	if !i.Alive() {
		return nil, ErrNotRunning
	}
	fd, err := unix.Openat2(root, path, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: path, Err: errors.New("not a regular file")}
	}
	return f, nil
}

// ReadFile reads a whole file of at most max bytes inside the container.
func (i *Init) ReadFile(path string, max int64) ([]byte, error) {
	f, err := i.open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w (over %d bytes)", path, ErrTooLarge, max)
	}
	return b, nil
}

// ReadAt reads up to max bytes of a file inside the container from off;
// fewer at its end.
func (i *Init) ReadAt(path string, off int64, max int) ([]byte, error) {
	f, err := i.open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Size the buffer by what is there: followers read mostly nothing.
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() <= off {
		return nil, nil
	}
	b := make([]byte, min(int64(max), fi.Size()-off))
	n, err := f.ReadAt(b, off)
	if err == io.EOF {
		err = nil
	}
	return b[:n], err
}

func errNotRunningIfClosed(closed bool) error {
	if closed {
		return ErrNotRunning
	}
	return nil
}

// ReadDir lists the names in a directory inside the container, resolved
// as open resolves.
func (i *Init) ReadDir(path string) ([]string, error) {
	root, err := unix.Open("/proc/"+strconv.Itoa(i.PID)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("container root: %w", ErrNotRunning)
	}
	defer unix.Close(root)
	if !i.Alive() {
		return nil, ErrNotRunning
	}
	fd, err := unix.Openat2(root, path, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	return f.Readdirnames(-1)
}

// Exists reports whether path is a regular file inside the container.
func (i *Init) Exists(path string) (bool, error) {
	f, err := i.open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	f.Close()
	return true, nil
}

// Command prepares argv to run in container name with lxc-attach, in all
// its namespaces, with env as its whole environment (LXC adds the
// container's lxc.environment).
func (n *Node) Command(ctx context.Context, name string, env []string, argv ...string) *exec.Cmd {
	args := []string{"-n", name, "-P", n.Path, "--clear-env"}
	for _, kv := range env {
		args = append(args, "--set-var", kv)
	}
	args = append(args, "--")
	args = append(args, argv...)
	return exec.CommandContext(ctx, "lxc-attach", args...)
}

// DialTCP connects to port on the container's loopback, from inside its
// network namespace: the socket is made on a thread that entered the
// namespace through the init's pidfd, and the thread goes back (or, if it
// cannot, ends with its goroutine).
func (i *Init) DialTCP(ctx context.Context, port int) (*net.TCPConn, error) {
	type result struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("own network namespace: %w", err)}
			return
		}
		defer unix.Close(self)
		i.closeMu.RLock()
		err = errNotRunningIfClosed(i.closed)
		if err == nil {
			err = unix.Setns(i.pidfd, unix.CLONE_NEWNET)
		}
		i.closeMu.RUnlock()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("enter the container's network namespace: %w", err)}
			return
		}
		// As containerd: the port on the IPv4 loopback, else on IPv6's.
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			if c6, err6 := d.DialContext(ctx, "tcp6", net.JoinHostPort("::1", strconv.Itoa(port))); err6 == nil {
				c, err = c6, nil
			}
		}
		if unix.Setns(self, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		if err != nil {
			ch <- result{nil, err}
			return
		}
		ch <- result{c.(*net.TCPConn), nil}
	}()
	r := <-ch
	return r.c, r.err
}
