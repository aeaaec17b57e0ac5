package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

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

	pulls   sync.Map // image key → *sync.Mutex: one pull of an image at a time
	ctLocks sync.Map // container ID → *sync.Mutex
	tmLocks sync.Map // template name → *sync.Mutex: a pull's store and record against a removal
	cpu     cpuMeter
	list    containerList
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
// that collects supervised containers' output and exit statuses, and the
// streaming server of exec and port-forward.
func (s *Server) Start(ctx context.Context) error {
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

// Listen opens a listener for an endpoint: unix:///path (a stale socket is
// removed, the parent directory created, the socket made 0660) or
// tcp://host:port.
func Listen(endpoint string) (net.Listener, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "unix":
		p := u.Path
		if p == "" {
			p = u.Opaque
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			return nil, err
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", p, err)
		}
		l, err := net.Listen("unix", p)
		if err != nil {
			return nil, err
		}
		if err := os.Chmod(p, 0o660); err != nil {
			l.Close()
			return nil, err
		}
		return l, nil
	case "tcp":
		return net.Listen("tcp", u.Host)
	}
	return nil, fmt.Errorf("listen %q: want unix:///path or tcp://host:port", endpoint)
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
