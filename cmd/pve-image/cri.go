package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/lifecycle"
	"github.com/pve-image/pve-image/lxcnode"
	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/runtime"
	"github.com/pve-image/pve-image/template"
)

// criConfig is the daemon's config file; flags given on the command line
// override it.
type criConfig struct {
	Listen          string              `yaml:"listen"`
	TLSCert         string              `yaml:"tlsCert"`
	TLSKey          string              `yaml:"tlsKey"`
	TLSClientCA     string              `yaml:"tlsClientCA"`
	InsecureListen  bool                `yaml:"insecureListen"`
	MetricsListen   string              `yaml:"metricsListen"`
	StateDir        string              `yaml:"stateDir"`
	TemplateDir     string              `yaml:"templateDir"`
	TemplateStorage string              `yaml:"templateStorage"`
	Bridge          string              `yaml:"bridge"`
	RootfsStorage   string              `yaml:"rootfsStorage"`
	LinkedClones    string              `yaml:"linkedClones"`
	CgroupDriver    string              `yaml:"cgroupDriver"`
	PodCIDR         string              `yaml:"podCIDR"`
	PodGateway      string              `yaml:"podGateway"`
	LXCPath         string              `yaml:"lxcPath"`
	StreamingListen string              `yaml:"streamingListen"`
	PinnedImages    []string            `yaml:"pinnedImages"`
	RegistryMirrors map[string][]string `yaml:"registryMirrors"`
	RegistryConfig  string              `yaml:"registryConfig"`
	Proxmox         *pveContext         `yaml:"proxmox"`
	// TemplateRegistry is --template-registry: ready templates are taken
	// from there before converting.
	TemplateRegistry string `yaml:"templateRegistry"`
}

func (a *app) criCommand() *cobra.Command {
	var cfgPath string
	var c criConfig
	var pf pveFlags
	var cf convertFlags
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "cri [--listen unix:///run/pve-image/cri.sock] [--config FILE]",
		Short: "Serve the Kubernetes CRI: images as Proxmox templates, pods as Proxmox containers",
		Long: `Serve runtime.v1's ImageService and RuntimeService over gRPC for kubelet and
crictl. PullImage pulls, converts and stores templates (in --template-dir, a
local Proxmox storage directory, or over the API into --storage); containers
are Proxmox LXC containers created from them on --node. See the README for
the KubeletConfiguration and the systemd unit (scripts/systemd). With
--node auto each pod's container goes to the node with the most free memory
and CPU that has the storages it needs, as run --node auto does; pods are
then served as off the node (no output, exit statuses, exec or volumes).

The CRI has no authentication of its own: a tcp:// --listen off the
loopback interface is refused unless served over TLS with client
certificates (--tls-cert, --tls-key, --tls-client-ca) or --insecure-listen
says to. A unix socket is replaced only when it is stale.

Settings come from flags, then the YAML --config file (same names in
camelCase, e.g. tlsClientCA; proxmox: holds url, token, fingerprint, node,
storage ...). Unknown keys in the file are errors.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath != "" {
				b, err := os.ReadFile(cfgPath)
				if err != nil {
					return fmt.Errorf("--config: %w", err)
				}
				var file criConfig
				if err := decodeYAMLStrict(cfgPath, b, &file); err != nil {
					return err
				}
				mergeCRIConfig(cmd, &c, file, &pf, a)
			}
			return a.serveCRI(cmd.Context(), c, &pf, &cf, grace)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "YAML config file")
	f.StringVar(&c.Listen, "listen", "unix:///run/pve-image/cri.sock", "gRPC endpoint: unix:///path or tcp://host:port (off loopback only with --tls-* or --insecure-listen)")
	f.StringVar(&c.TLSCert, "tls-cert", "", "serve a tcp:// --listen over TLS with this certificate (PEM); needs --tls-key and --tls-client-ca")
	f.StringVar(&c.TLSKey, "tls-key", "", "the --tls-cert's private key (PEM)")
	f.StringVar(&c.TLSClientCA, "tls-client-ca", "", "CA certificates (PEM) clients' certificates must be signed by; clients without one are refused")
	f.BoolVar(&c.InsecureListen, "insecure-listen", false, "serve a tcp:// --listen off loopback without TLS: anyone reaching it controls containers with this daemon's Proxmox credentials")
	f.StringVar(&c.MetricsListen, "metrics-listen", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9102)")
	f.StringVar(&c.StateDir, "state-dir", "", "where pods, containers and images are recorded (default: <cache-dir>/cri)")
	f.StringVar(&c.TemplateDir, "template-dir", "", "local template directory, e.g. /var/lib/vz/template/cache on a Proxmox node (default: push over the API to --storage)")
	f.StringVar(&c.TemplateStorage, "template-storage", "local", "the Proxmox storage --template-dir belongs to")
	f.StringVar(&c.Bridge, "bridge", "vmbr0", "bridge for containers' eth0")
	f.StringVar(&c.RootfsStorage, "rootfs-storage", "", "storage for container root disks (default: the node's first rootdir storage)")
	f.StringVar(&c.LinkedClones, "linked-clones", runtime.LinkedClonesAuto, "auto: where --rootfs-storage clones copy-on-write (lvmthin, zfspool, rbd, btrfs), pods' root disks are linked clones of one template container per image and node; never: Proxmox unpacks the template for every container")
	f.StringVar(&c.CgroupDriver, "cgroup-driver", "systemd", "cgroup driver to report to kubelet: systemd or cgroupfs")
	f.StringVar(&c.PodCIDR, "pod-cidr", "", "range pods get their addresses from, on --bridge; IPv4, IPv6 or both comma-separated (default: kubelet's podCIDR)")
	f.StringVar(&c.PodGateway, "pod-gateway", "", "the node's address in the pod range, pods' default route; comma-separated per family (default: each range's first address)")
	f.StringVar(&c.LXCPath, "lxc-path", "", "where the node's LXC containers live (default "+lxcnode.DefaultPath+", used when this machine is --node): exec, logs, exit statuses and volumes need it")
	f.StringVar(&c.StreamingListen, "streaming-listen", "127.0.0.1:0", "address of the exec and port-forward server kubelet proxies to")
	f.StringArrayVar(&c.PinnedImages, "pinned-image", nil, "image kubelet must not garbage-collect (repeatable)")
	f.DurationVar(&grace, "shutdown-grace", 10*time.Second, "on SIGTERM, wait this long for calls in flight, then stop hard")
	pf.register(cmd, true)
	cmd.Flags().Lookup("node").Usage = nodeAutoUsage
	cf.register(cmd)
	return cmd
}

// mergeCRIConfig fills what no flag set from the file.
func mergeCRIConfig(cmd *cobra.Command, c *criConfig, file criConfig, pf *pveFlags, a *app) {
	set := func(flag string, dst *string, v string) {
		if !cmd.Flags().Changed(flag) && v != "" {
			*dst = v
		}
	}
	set("listen", &c.Listen, file.Listen)
	set("tls-cert", &c.TLSCert, file.TLSCert)
	set("tls-key", &c.TLSKey, file.TLSKey)
	set("tls-client-ca", &c.TLSClientCA, file.TLSClientCA)
	if !cmd.Flags().Changed("insecure-listen") {
		c.InsecureListen = file.InsecureListen
	}
	set("metrics-listen", &c.MetricsListen, file.MetricsListen)
	set("state-dir", &c.StateDir, file.StateDir)
	set("template-dir", &c.TemplateDir, file.TemplateDir)
	set("template-storage", &c.TemplateStorage, file.TemplateStorage)
	set("bridge", &c.Bridge, file.Bridge)
	set("rootfs-storage", &c.RootfsStorage, file.RootfsStorage)
	set("linked-clones", &c.LinkedClones, file.LinkedClones)
	set("cgroup-driver", &c.CgroupDriver, file.CgroupDriver)
	set("pod-cidr", &c.PodCIDR, file.PodCIDR)
	set("pod-gateway", &c.PodGateway, file.PodGateway)
	set("lxc-path", &c.LXCPath, file.LXCPath)
	set("streaming-listen", &c.StreamingListen, file.StreamingListen)
	if !cmd.Flags().Changed("pinned-image") {
		c.PinnedImages = file.PinnedImages
	}
	for host, urls := range file.RegistryMirrors {
		for _, u := range urls {
			a.mirrors = append(a.mirrors, host+"="+u)
		}
	}
	if a.hostsDir == "" {
		a.hostsDir = file.RegistryConfig
	}
	if a.templateRegistry == "" {
		a.templateRegistry = file.TemplateRegistry
	}
	if p := file.Proxmox; p != nil {
		// The file comes after flags and the environment, as everywhere.
		setPVE := func(flag, env string, dst *string, v string) {
			if os.Getenv(env) == "" {
				set(flag, dst, v)
			}
		}
		setPVE("pve-url", "PVE_URL", &pf.url, p.URL)
		setPVE("pve-token", "PVE_TOKEN", &pf.token, p.Token)
		setPVE("pve-user", "PVE_USER", &pf.user, p.User)
		setPVE("pve-password", "PVE_PASSWORD", &pf.password, p.Password)
		setPVE("pve-fingerprint", "PVE_FINGERPRINT", &pf.fingerprint, p.Fingerprint)
		setPVE("node", "PVE_NODE", &pf.node, p.Node)
		setPVE("storage", "PVE_STORAGE", &pf.storage, p.Storage)
		if !cmd.Flags().Changed("pve-insecure") && os.Getenv("PVE_INSECURE") == "" {
			pf.insecure = p.Insecure
		}
	}
}

func (a *app) serveCRI(ctx context.Context, c criConfig, pf *pveFlags, cf *convertFlags, grace time.Duration) error {
	// The endpoint first: a daemon already serving on it must keep it, and
	// this one must not go on to watch its containers as well.
	l, err := runtime.Listen(c.Listen, runtime.ListenOptions{CertFile: c.TLSCert, KeyFile: c.TLSKey, ClientCAFile: c.TLSClientCA,
		Insecure: c.InsecureListen, Log: a.log})
	if err != nil {
		return err
	}
	defer l.Close()
	b, err := a.builder(nil)
	if err != nil {
		return err
	}
	opts, err := cf.options(template.Zstd)
	if err != nil {
		return err
	}
	// The registry flags (platform, mirrors, retries, stall timeout,
	// offline) apply to kubelet's pulls; credentials are kubelet's, per
	// pull.
	puller, err := a.registryOptions(nil)
	if err != nil {
		return err
	}
	puller.Username, puller.Password = "", ""
	pc, err := pf.resolve()
	if err != nil {
		return err
	}
	var cl *proxmox.Client
	if pc.URL != "" {
		if cl, _, err = a.dial(ctx, pf); err != nil {
			return err
		}
		if err := needNode(pc); err != nil {
			return err
		}
	}
	var store runtime.TemplateStore
	switch {
	case c.TemplateDir != "":
		store = &runtime.DirStore{Dir: c.TemplateDir, Storage: c.TemplateStorage}
	case cl != nil:
		storeNode, err := templateNode(ctx, cl, pc.Node)
		if err != nil {
			return err
		}
		store = &runtime.PVEStore{Client: cl, Node: storeNode, Storage: pc.Storage, CacheDir: b.Cache.Dir()}
	default:
		return errors.New("no template store: give --template-dir, or a Proxmox connection (--pve-url ...) to push templates to --storage")
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join(b.Cache.Dir(), "cri")
	}
	cidrs, err := runtime.ParsePodCIDRs(c.PodCIDR)
	if err != nil {
		return fmt.Errorf("--pod-cidr: %w", err)
	}
	var gateways []netip.Addr
	for _, g := range strings.Split(c.PodGateway, ",") {
		if g = strings.TrimSpace(g); g == "" {
			continue
		}
		a, err := netip.ParseAddr(g)
		if err != nil {
			return fmt.Errorf("--pod-gateway %q: %w", g, err)
		}
		gateways = append(gateways, a)
	}
	var lxc *lxcnode.Node
	var lxcWhy string
	if cl != nil && pc.Node == lifecycle.Auto {
		// Pods go to any node: what needs the daemon on a pod's node
		// (output, exit statuses, exec, volumes) is refused with this.
		lxcWhy = "--node auto places pods on any node of the cluster, and this daemon is on one node at most"
	} else if cl != nil {
		lxc, lxcWhy = onNode(pc.Node, c.LXCPath)
		if lxc == nil {
			a.log.Warn("not on the Proxmox node: exec, logs, exit statuses and volumes of containers are not available", "node", pc.Node, "why", lxcWhy)
		}
	}
	metrics := runtime.NewMetrics()
	srv, err := runtime.New(runtime.Config{
		Builder: b, Puller: puller,
		Convert: opts, Store: store, Proxmox: cl, Node: pc.Node, Bridge: c.Bridge, RootfsStorage: c.RootfsStorage, LinkedClones: c.LinkedClones,
		StateDir: c.StateDir, CgroupDriver: c.CgroupDriver, PinnedImages: c.PinnedImages, Version: fullVersion(),
		PodCIDRs: cidrs, PodGateways: gateways, LXC: lxc, LXCUnavailable: lxcWhy, StreamingAddr: c.StreamingListen,
		Log: a.log, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	if c.MetricsListen != "" {
		ml, err := net.Listen("tcp", c.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ml)
		defer hs.Close()
	}
	a.log.Info("serving CRI", "listen", c.Listen, "metrics", c.MetricsListen, "proxmox", pc.URL != "", "node", pc.Node)
	fmt.Fprintf(a.stderr, "pve-image cri: serving on %s\n", c.Listen)
	return runtime.Serve(ctx, srv.GRPCServer(), l, grace)
}

// templateNode is the node templates are pushed to: --node, or with
// --node auto the first node of the cluster (each pod's container takes
// the template to its own node when that one lacks it).
func templateNode(ctx context.Context, cl *proxmox.Client, node string) (string, error) {
	if node != lifecycle.Auto {
		return node, nil
	}
	nodes, err := cl.Nodes(ctx)
	if err != nil {
		return "", err
	}
	if len(nodes) == 0 {
		return "", errors.New("--node auto: the cluster lists no nodes")
	}
	return nodes[0], nil
}

// onNode opens the node's LXC when the daemon runs on the containers'
// Proxmox node: an --lxc-path given says so; the default one counts only
// when this machine's name is the node's (Proxmox names nodes by host
// name). Otherwise it says why not.
func onNode(node, path string) (*lxcnode.Node, string) {
	if path == "" {
		host, _ := os.Hostname()
		if short, _, _ := strings.Cut(host, "."); short != node {
			return nil, fmt.Sprintf("this machine is %q, not node %q (give --lxc-path if it is)", host, node)
		}
	}
	n, err := lxcnode.Open(path)
	if err != nil {
		return nil, err.Error()
	}
	return n, ""
}
