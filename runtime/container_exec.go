package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// Exec, exec probes and port-forward reach containers with LXC's own tools
// on the node, as `pct exec` does: lxc-attach runs the command in all of
// the container's namespaces, its cgroup and LSM profile, as root of the
// container; in an application image pve-image-init's exec helper then
// becomes the program's user, with its environment and working directory.
// Who may exec into a container is who may use the CRI socket (root, and
// kubelet, which checks its own clients); the streaming server that
// carries kubectl exec listens on loopback and serves each session once,
// under a random token, as containerd's does.

// maxExecOutput bounds what ExecSync keeps of each stream: kubelet's gRPC
// limit is 16 MiB for the whole answer.
const maxExecOutput = 6 << 20

// defaultPath is the PATH exec gets in a system image, whose environment
// the daemon does not know.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// execGrace is how long lxc-attach may take to end after its command, and
// how long a command that left a process holding its output (sh -c 'x &')
// keeps the call waiting for that output.
const execGrace = 5 * time.Second

// execTarget is a running container exec can reach.
func (s *Server) execTarget(id string) (*containerRecord, error) {
	if err := s.needNode("exec"); err != nil {
		return nil, err
	}
	c := s.container(id)
	switch {
	case c == nil:
		return nil, status.Errorf(codes.NotFound, "container %q not found", id)
	case c.State != runtimeapi.ContainerState_CONTAINER_RUNNING:
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is not running", id)
	}
	return c, nil
}

// attachCommand is the lxc-attach command that runs argv in c; helper are
// the flags of pve-image-init's exec helper, used in application images.
func (s *Server) attachCommand(ctx context.Context, c *containerRecord, helper []string, argv []string) *exec.Cmd {
	var cmd *exec.Cmd
	if c.Shim {
		args := append([]string{runspec.InitPath, "exec"}, helper...)
		args = append(append(args, "--"), argv...)
		cmd = s.cfg.LXC.Command(ctx, strconv.Itoa(c.VMID), nil, args...)
	} else {
		cmd = s.cfg.LXC.Command(ctx, strconv.Itoa(c.VMID), []string{defaultPath}, argv...)
	}
	// A background process the command left holds its stdout: Wait must
	// not wait for that for ever.
	cmd.WaitDelay = execGrace
	return cmd
}

// killExec ends the command of exec id in c (its caller left).
func (s *Server) killExec(c *containerRecord, id string) {
	if !c.Shim {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), execGrace)
	defer cancel()
	s.cfg.LXC.Command(ctx, strconv.Itoa(c.VMID), nil, runspec.InitPath, "exec-kill", id).Run()
}

// ExecSync runs a command to its end (exec probes, crictl exec -s). The
// timeout is the helper's to enforce: killing lxc-attach would leave the
// command running in the container.
func (s *Server) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	c, err := s.execTarget(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if len(req.GetCmd()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no command")
	}
	timeout := time.Duration(req.GetTimeout()) * time.Second
	helper := []string{"--stdin-ends-it"}
	if timeout > 0 {
		helper = append(helper, "--timeout", strconv.FormatInt(req.GetTimeout(), 10))
	}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cmd := s.attachCommand(actx, c, helper, req.GetCmd())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		return nil, status.Error(codes.Internal, err.Error())
	}
	var stdout, stderr cappedBuffer
	stdout.max, stderr.max = maxExecOutput, maxExecOutput
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, status.Errorf(codes.Internal, "lxc-attach: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); stdin.Close(); cancel() }()
	// After the caller left or the time is up, closing stdin makes the
	// helper kill the command; lxc-attach is killed if it still waits.
	giveUp := func() {
		stdin.Close()
		time.AfterFunc(execGrace, cancel)
	}
	var limit <-chan time.Time
	if timeout > 0 {
		limit = time.After(timeout + execGrace)
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		giveUp()
		return nil, grpcError(ctx.Err())
	case <-limit:
		giveUp()
		err = <-done
	}
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
		if code < 0 {
			code = unknownExitCode
		}
	case err != nil:
		return nil, status.Errorf(codes.Internal, "lxc-attach: %v", err)
	}
	// The helper kills a command that outlives the timeout (SIGKILL: 137);
	// one that finished in time, lxc-attach's own start included, did not
	// time out.
	if timeout > 0 && time.Since(start) >= timeout && (code == 128+int(syscall.SIGKILL) || code == unknownExitCode) {
		return nil, status.Errorf(codes.DeadlineExceeded, "command %q timed out after %s", req.GetCmd(), timeout)
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitCode: int32(code)}, nil
}

// cappedBuffer keeps the first max bytes written and drops the rest.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// Exec hands out a URL of the streaming server for an interactive command
// (kubectl exec, crictl exec).
func (s *Server) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if _, err := s.execTarget(req.GetContainerId()); err != nil {
		return nil, err
	}
	srv, err := s.stream.server()
	if err != nil {
		return nil, err
	}
	return srv.GetExec(req)
}

// Attach is refused: the program's stdin is not kept open, and its output
// is in its log.
func (s *Server) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	return nil, status.Error(codes.Unimplemented, "Attach: pve-image keeps no stdin open for a container's program, and its output is in the container's log: use kubectl logs -f to follow it, kubectl exec to work inside")
}

// PortForward hands out a URL of the streaming server that connects to a
// port in the pod's network namespace (kubectl port-forward).
func (s *Server) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if err := s.needNode("port-forward"); err != nil {
		return nil, err
	}
	if _, err := s.podContainer(req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	srv, err := s.stream.server()
	if err != nil {
		return nil, err
	}
	return srv.GetPortForward(req)
}

// podContainer is the running container of a pod: the one that has the
// pod's network namespace.
func (s *Server) podContainer(sandboxID string) (*containerRecord, error) {
	var found *containerRecord
	s.state.view(func(st *stateFile) {
		for _, id := range sortedKeys(st.Containers) {
			if c := st.Containers[id]; c.SandboxID == sandboxID && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				cp := *c
				found = &cp
			}
		}
	})
	if found == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "pod sandbox %s has no running container, so no network namespace to reach", sandboxID)
	}
	return found, nil
}

// streamingServer serves the URLs Exec and PortForward hand out.
type streamingServer struct {
	mu  sync.Mutex
	srv streaming.Server
}

func (ss *streamingServer) server() (streaming.Server, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.srv == nil {
		return nil, status.Error(codes.FailedPrecondition, "the streaming server is not running")
	}
	return ss.srv, nil
}

// start listens on addr and serves until ctx ends.
func (ss *streamingServer) start(ctx context.Context, s *Server, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("streaming server: %w", err)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = l.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: "http", Host: l.Addr().String()}
	srv, err := streaming.NewServer(cfg, streamRuntime{s})
	if err != nil {
		l.Close()
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second}
	go hs.Serve(l)
	go func() { <-ctx.Done(); hs.Close() }()
	ss.mu.Lock()
	ss.srv = srv
	ss.mu.Unlock()
	s.log.Info("streaming server (exec, port-forward)", "url", cfg.BaseURL.String())
	return nil
}

// streamRuntime runs the streaming server's sessions.
type streamRuntime struct{ s *Server }

// Exec runs an interactive command: on a terminal lxc-attach makes in the
// container when tty is set, else with the caller's streams. Its exit
// status goes back to kubectl.
func (r streamRuntime) Exec(ctx context.Context, id string, argv []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, err := r.s.execTarget(id)
	if err != nil {
		return err
	}
	var helper []string
	execID := newID()[:32]
	switch {
	case tty:
		// Closing the terminal hangs the session up.
		helper = []string{"--tty"}
	case in == nil:
		helper = []string{"--stdin-ends-it"}
	default:
		// stdin is the caller's: the command is ended by name.
		helper = []string{"--id", execID}
	}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	cmd := r.s.attachCommand(actx, c, helper, argv)
	var waitErr error
	if tty {
		waitErr = runOnTerminal(ctx, cmd, in, out, resize)
	} else {
		waitErr = runWithStreams(ctx, cmd, in, out, errw, func() { r.s.killExec(c, execID) })
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if code := ee.ExitCode(); code != 0 {
			return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
		}
		return nil
	}
	return waitErr
}

// runWithStreams runs cmd with the session's streams; stdin is copied by
// hand, since exec.Cmd would wait for a reader that may never end. When
// the session ends first, stop ends the command.
func runWithStreams(ctx context.Context, cmd *exec.Cmd, in io.Reader, out, errw io.Writer, stop func()) error {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if out != nil {
		cmd.Stdout = out
	}
	if errw != nil {
		cmd.Stderr = errw
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	if in != nil {
		go func() { io.Copy(stdin, in); stdin.Close() }()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		stdin.Close() // the helper (--stdin-ends-it) ends the command
		stop()
		return ctx.Err()
	}
}

// runOnTerminal runs cmd on a new terminal whose other side is the
// session: lxc-attach sees a terminal and makes one in the container.
func runOnTerminal(ctx context.Context, cmd *exec.Cmd, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) error {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return err
	}
	defer ptmx.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		tty.Close()
		return err
	}
	tty.Close()
	go func() {
		for size := range resize {
			pty.Setsize(ptmx, &pty.Winsize{Rows: size.Height, Cols: size.Width})
		}
	}()
	if in != nil {
		go io.Copy(ptmx, in)
	}
	copied := make(chan struct{})
	go func() {
		if out != nil {
			io.Copy(out, ptmx) // ends with EIO once the terminal closes
		}
		close(copied)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Closing the terminal hangs up the session in the container.
		ptmx.Close()
		select {
		case err = <-done:
		case <-time.After(execGrace):
			err = ctx.Err()
		}
	}
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	return err
}

// Attach is refused (see Server.Attach).
func (r streamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return status.Error(codes.Unimplemented, "attach is not supported")
}

// PortForward connects the stream to port on the pod's loopback, from
// inside the pod's network namespace.
func (r streamRuntime) PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	c, err := r.s.podContainer(sandboxID)
	if err != nil {
		return err
	}
	init, err := r.s.cfg.LXC.Init(ctx, strconv.Itoa(c.VMID))
	if err != nil {
		return err
	}
	defer init.Close()
	conn, err := init.DialTCP(ctx, int(port))
	if err != nil {
		return fmt.Errorf("port %d of pod sandbox %s: %w", port, sandboxID, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	go func() {
		io.Copy(conn, stream)
		conn.CloseWrite()
	}()
	io.Copy(stream, conn)
	return nil
}
