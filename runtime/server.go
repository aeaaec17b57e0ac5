package runtime

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/lxcnode"
	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// Config configures the CRI services.
type Config struct {
	// Builder converts images; its Puller's options are the base of every
	// pull (platform, mirrors, insecure registries).
	Builder *template.Builder
	Puller  registry.Options
	// Convert are the conversion options (compression, init, shim).
	Convert template.Options
	// Store receives the templates.
	Store TemplateStore
	// Proxmox runs containers; nil leaves the RuntimeService's container
	// calls failing with FailedPrecondition.
	Proxmox *proxmox.Client
	Node    string // the node containers are created on
	Bridge  string // bridge of each container's eth0; default vmbr0
	// RootfsStorage holds container root disks; empty picks one.
	RootfsStorage string
	// LinkedClones is LinkedClonesAuto (the default: pods' root disks are
	// linked clones of a template container per image where the storage
	// allows it) or LinkedClonesNever (Proxmox unpacks the template for
	// every container).
	LinkedClones string
	// StateDir keeps the image, pod and container records.
	StateDir string
	// CgroupDriver is reported by RuntimeConfig: systemd (Proxmox nodes
	// run systemd) or cgroupfs.
	CgroupDriver string
	// PinnedImages are never garbage-collected by kubelet (by reference).
	PinnedImages []string
	// PodCIDRs are the ranges pods get addresses from; when empty, the
	// pod CIDR kubelet sends (UpdateRuntimeConfig). PodGateways are the
	// node's addresses in them (default: each range's first address).
	PodCIDRs    []netip.Prefix
	PodGateways []netip.Addr
	// LXC reaches the containers on the node, when the daemon runs on it
	// as root: exit statuses, output, exec, bind mounts of kubelet's
	// directories. Without it (LXCUnavailable says why) those fail with
	// that reason.
	LXC            *lxcnode.Node
	LXCUnavailable string
	// StreamingAddr is where the exec and port-forward server listens
	// (kubelet proxies to it): default 127.0.0.1 at a free port.
	StreamingAddr string
	Version       string
	Log           *slog.Logger
	Metrics       *Metrics
}

// Server implements runtime.v1's ImageService and RuntimeService.
type Server struct {
	runtimeapi.UnimplementedImageServiceServer
	runtimeapi.UnimplementedRuntimeServiceServer

	cfg   Config
	state *store
	log   *slog.Logger

	pulls   singleflight.Group // image and credentials → the pull in flight
	ctLocks sync.Map           // container ID → *sync.Mutex
	tmLocks sync.Map           // template name → *sync.Mutex: a pull's store and record against a removal
	cpu     cpuMeter
	list    containerList
	bases   bases // template containers of linked clones (clones.go)
	vmids   vmids // VMIDs of creates in flight (vmid.go)
	watches watches
	stream  streamingServer
}

// New opens the state and returns the server.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.Bridge == "" {
		cfg.Bridge = "vmbr0"
	}
	if cfg.CgroupDriver == "" {
		cfg.CgroupDriver = "systemd"
	}
	if cfg.StreamingAddr == "" {
		cfg.StreamingAddr = "127.0.0.1:0"
	}
	switch cfg.LinkedClones {
	case "":
		cfg.LinkedClones = LinkedClonesAuto
	case LinkedClonesAuto, LinkedClonesNever:
	default:
		return nil, fmt.Errorf("linked clones %q: want %s or %s", cfg.LinkedClones, LinkedClonesAuto, LinkedClonesNever)
	}
	if cfg.LXC == nil && cfg.LXCUnavailable == "" {
		cfg.LXCUnavailable = "no LXC path was given"
	}
	if _, err := newPodNetwork(cfg.PodCIDRs, cfg.PodGateways); err != nil {
		return nil, err
	}
	st, err := openStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, state: st, log: cfg.Log}, nil
}

// Start runs what works beside the gRPC calls until ctx ends: the watcher
// that collects supervised containers' output and exit statuses, the
// streaming server of exec and port-forward, and once the removal of what
// a daemon of this owner left behind: template containers no clone uses,
// and containers it made but never recorded (clones.go).
func (s *Server) Start(ctx context.Context) error {
	if s.cfg.Proxmox != nil {
		go s.sweepBases(ctx)
	}
	if s.cfg.LXC != nil && s.cfg.Proxmox != nil {
		if err := s.stream.start(ctx, s, s.cfg.StreamingAddr); err != nil {
			return err
		}
		go s.watch(ctx)
	}
	return nil
}

// needNode says why a node-local feature cannot work: the daemon is not
// on the containers' Proxmox node, as root, with LXC's tools.
func (s *Server) needNode(what string) error {
	if s.cfg.LXC == nil {
		return status.Errorf(codes.FailedPrecondition, "%s needs pve-image cri running as root on the Proxmox node of the containers (%s), where it reaches them with LXC's tools: %s", what, s.cfg.Node, s.cfg.LXCUnavailable)
	}
	return nil
}

// maxMsgSize is kubelet's receive limit (cri-client): the gRPC default of
// 4 MiB is too small for long image and container lists.
const maxMsgSize = 16 << 20

// GRPCServer builds the gRPC server with both services registered.
func (s *Server) GRPCServer() *grpc.Server {
	g := grpc.NewServer(grpc.MaxRecvMsgSize(maxMsgSize), grpc.MaxSendMsgSize(maxMsgSize),
		grpc.ChainUnaryInterceptor(s.cfg.Metrics.interceptor, s.logCalls))
	runtimeapi.RegisterImageServiceServer(g, s)
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	return g
}

func (s *Server) logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := next(ctx, req)
	method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	if err != nil {
		s.log.Warn("CRI call failed", "method", method, "took", time.Since(start).Round(time.Millisecond), "err", err)
	} else if method != "ListPodSandbox" && method != "ListContainers" && method != "Status" && method != "ImageFsInfo" {
		s.log.Debug("CRI call", "method", method, "took", time.Since(start).Round(time.Millisecond))
	}
	return resp, err
}

// ListenOptions say how a TCP endpoint is secured. The CRI has no
// authentication of its own, and whoever can call it runs containers with
// the daemon's Proxmox credentials: a TCP endpoint off the loopback
// interface is served only with TLS and client certificates, or when
// Insecure says to anyway.
type ListenOptions struct {
	// CertFile and KeyFile are the server's certificate and key (PEM);
	// clients must present a certificate that ClientCAFile's CAs signed
	// (tls.RequireAndVerifyClientCert). All three or none.
	CertFile, KeyFile, ClientCAFile string
	// Insecure serves a non-loopback TCP endpoint without TLS, with a
	// warning in Log.
	Insecure bool
	Log      *slog.Logger
}

func (o ListenOptions) tls() bool { return o.CertFile != "" || o.KeyFile != "" || o.ClientCAFile != "" }

// Listen opens a listener for an endpoint: unix:///path or tcp://host:port.
// A unix socket replaces only a stale socket, one nobody answers on; the
// parent directory is created and the socket made 0660. A TCP endpoint is
// served with TLS when o says so, and off the loopback interface only
// with TLS or o.Insecure.
func Listen(endpoint string, o ListenOptions) (net.Listener, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "unix":
		if o.tls() {
			return nil, fmt.Errorf("listen %s: TLS (--tls-cert, --tls-key, --tls-client-ca) is for tcp:// endpoints; a unix socket is guarded by its file permissions", endpoint)
		}
		p := u.Path
		if p == "" {
			p = u.Opaque
		}
		if p == "" {
			return nil, fmt.Errorf("listen %q: no path; want unix:///path", endpoint)
		}
		return listenUnix(p)
	case "tcp":
		return listenTCP(endpoint, u.Host, o)
	}
	return nil, fmt.Errorf("listen %q: want unix:///path or tcp://host:port", endpoint)
}

func listenUnix(p string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return nil, fmt.Errorf("listen unix://%s: %w", p, err)
	}
	if err := removeStaleSocket(p); err != nil {
		return nil, fmt.Errorf("listen unix://%s: %w", p, err)
	}
	l, err := net.Listen("unix", p)
	if err != nil {
		return nil, fmt.Errorf("listen unix://%s: %w", p, err)
	}
	if err := os.Chmod(p, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen unix://%s: %w", p, err)
	}
	return l, nil
}

// removeStaleSocket clears the way for a socket at p: nothing there, or a
// socket left by a daemon that died (connecting is refused), which it
// removes. Anything else stays, and the error says what it is: a file that
// is not a socket, or a socket some process serves on (a daemon already
// running would otherwise lose its socket to this one without a word).
func removeStaleSocket(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s is %s, not a socket; it is left alone: remove it yourself if it is not needed, or listen elsewhere", p, fileKind(fi.Mode()))
	}
	conn, err := net.DialTimeout("unix", p, 5*time.Second)
	if err == nil {
		owner := socketPeer(conn)
		conn.Close()
		return fmt.Errorf("another process serves on the socket %s%s (a pve-image cri already running?): stop it first, or listen elsewhere", p, owner)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot tell whether the socket %s is in use (%w); it is left alone: remove it yourself if it is stale", p, err)
	}
	// Nobody listens: the socket of a daemon that is gone.
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", p, err)
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeSymlink:
		return "a symbolic link"
	case fs.ModeNamedPipe:
		return "a named pipe"
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		return "a device"
	}
	return "not a socket (" + m.Type().String() + ")"
}

// socketPeer names the process on the other end of a unix connection
// (SO_PEERCRED), for the error: " (pid 123: pve-image cri ...)", or "".
func socketPeer(conn net.Conn) string {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return ""
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ""
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cred == nil || cred.Pid == 0 {
		return ""
	}
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cred.Pid))
	if c := strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")); c != "" {
		return fmt.Sprintf(" (pid %d: %s)", cred.Pid, c)
	}
	return fmt.Sprintf(" (pid %d)", cred.Pid)
}

func listenTCP(endpoint, hostport string, o ListenOptions) (net.Listener, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w; want tcp://host:port", endpoint, err)
	}
	var cfg *tls.Config
	if o.tls() {
		if cfg, err = serverTLS(o); err != nil {
			return nil, fmt.Errorf("listen %s: %w", endpoint, err)
		}
	} else if !loopback(host) && !o.Insecure {
		return nil, fmt.Errorf("listen %s: refusing to serve the CRI off the loopback interface without authentication: "+
			"whoever reaches the port would run containers with the daemon's Proxmox credentials. Serve TLS with client "+
			"certificates (--tls-cert, --tls-key, --tls-client-ca), listen on 127.0.0.1 or a unix socket, or accept the "+
			"risk with --insecure-listen", endpoint)
	}
	l, err := net.Listen("tcp", hostport)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", endpoint, err)
	}
	if cfg != nil {
		return tls.NewListener(l, cfg), nil
	}
	if !loopback(host) && o.Log != nil {
		o.Log.Warn("serving the CRI without authentication (--insecure-listen): whoever reaches this address runs containers with the daemon's Proxmox credentials",
			"listen", endpoint)
	}
	return l, nil
}

// loopback reports whether host, as a listen address, is on the loopback
// interface only. An empty host or 0.0.0.0 is every interface; a name
// other than localhost could resolve anywhere.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// serverTLS is the TLS of a TCP endpoint: the server's key pair, and
// client certificates required and verified against the client CAs.
func serverTLS(o ListenOptions) (*tls.Config, error) {
	if o.CertFile == "" || o.KeyFile == "" || o.ClientCAFile == "" {
		return nil, errors.New("TLS needs all of --tls-cert, --tls-key and --tls-client-ca: without client certificates anyone who reaches the port could use the CRI")
	}
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", o.CertFile, o.KeyFile, err)
	}
	pem, err := os.ReadFile(o.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-client-ca %s: no PEM certificate in it", o.ClientCAFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		// The gRPC server reads HTTP/2 from the TLS connection; gRPC
		// clients insist on ALPN's h2.
		NextProtos: []string{"h2"},
	}, nil
}

// Serve runs g on l until ctx ends, then stops gracefully, and hard after
// grace: in-flight pulls can take long, and a stuck one must not keep the
// daemon from stopping.
func Serve(ctx context.Context, g *grpc.Server, l net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		g.Stop()
	}
	return nil
}

func (s *Server) needProxmox() error {
	if s.cfg.Proxmox == nil {
		return status.Error(codes.FailedPrecondition, "no Proxmox connection is configured: containers cannot run (the image service works without one)")
	}
	return nil
}

func (s *Server) lockContainer(id string) func() { return lockKey(&s.ctLocks, id) }

func (s *Server) lockTemplate(name string) func() { return lockKey(&s.tmLocks, name) }

// tryLockContainer locks id's mutex if it is free: the watcher leaves a
// container that a call (a stop that waits out its grace period) holds.
func (s *Server) tryLockContainer(id string) (unlock func(), ok bool) {
	mu, _ := s.ctLocks.LoadOrStore(id, &sync.Mutex{})
	if !mu.(*sync.Mutex).TryLock() {
		return nil, false
	}
	return mu.(*sync.Mutex).Unlock, true
}

// lockKey locks the mutex of key in m. The mutexes stay: one per container
// or template the daemon has seen, a few dozen bytes each.
func lockKey(m *sync.Map, key string) func() {
	mu, _ := m.LoadOrStore(key, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	return mu.(*sync.Mutex).Unlock
}
