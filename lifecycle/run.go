package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/template"
)

// RunRequest is a container to make from an image.
type RunRequest struct {
	Image string
	// Node is the node, or Auto to place the container.
	Node string
	VMID int // 0: the cluster's next free one
	// Hostname defaults to the image's name.
	Hostname  string
	MemoryMiB int // default 512
	Cores     int // 0: all
	// Rootfs is STORAGE:GiB; default a rootdir storage of the node,
	// sized from the image, and at least MinRootfsGiB.
	Rootfs       string
	MinRootfsGiB int
	// Nets are netN values (run --net).
	Nets []string
	// Volumes are run's --volume flags.
	Volumes []string
	// Env, Entrypoint and DNS go over the image's run config.
	Env        []string
	Entrypoint []string
	DNS        template.DNS
	// Start starts the container and waits until it runs.
	Start bool
}

// RunResult is the container made.
type RunResult struct {
	VMID     int
	Node     string
	Warnings string // Proxmox's task warnings, "WARNINGS: n"
}

// maxDescription is the description's limit in Proxmox's schema.
const maxDescription = 8192

// Run converts the image, places the container when asked, puts the
// template on the node, and creates (and starts) an unprivileged container
// with the image's run config, the user's NICs, volumes and overrides, and
// a Record of all of it in its description. Whatever this Proxmox cannot
// give the container is refused before anything is uploaded or created;
// a failed creation leaves no container.
func (m *Manager) Run(ctx context.Context, r RunRequest) (*RunResult, error) {
	if r.MemoryMiB == 0 {
		r.MemoryMiB = 512
	}
	if r.Rootfs != "" {
		if s, gb, ok := strings.Cut(r.Rootfs, ":"); !ok || s == "" || gb == "" {
			return nil, fmt.Errorf("--rootfs %q: want STORAGE:GB", r.Rootfs)
		}
	}
	t, err := m.Template(ctx, r.Image)
	if err != nil {
		return nil, err
	}
	meta := &t.Meta
	ver := m.PVE.Version()
	native := ver.Native()
	over := template.Overrides{Env: r.Env, Entrypoint: r.Entrypoint, DNS: r.DNS}
	if _, err := meta.PVEConfig(native, over); err != nil {
		return nil, err
	}
	nics, err := meta.PlanNICs(r.Nets, native)
	if err != nil {
		return nil, err
	}
	// Checked before anything is placed or uploaded; the storage of
	// volumes the user did not name one for is the root disk's, known
	// once the node is.
	vopts := template.VolumeOptions{Storage: "rootfs", SizeGiB: template.DefaultVolumeGiB, MayBind: m.PVE.MayBindMount(), KeepAttrs: keepAttrs(ver)}
	vols, err := meta.PlanVolumes(r.Volumes, vopts)
	if err != nil {
		return nil, err
	}

	node := r.Node
	if node == Auto {
		p, err := m.Place(ctx, runNeeds(r, vols, m.TemplateStorage))
		if err != nil {
			return nil, err
		}
		node = p.Node
		m.say("placed on %s (%s)", node, strings.Join(p.Why, "; "))
	}
	rootfs := r.Rootfs
	if rootfs == "" {
		if rootfs, err = m.PVE.RootfsFor(ctx, node, meta.RootfsSize); err != nil {
			return nil, fmt.Errorf("%w; name one with --rootfs STORAGE:GB", err)
		}
		if s, gib, _ := strings.Cut(rootfs, ":"); r.MinRootfsGiB > 0 {
			if n, err := strconv.Atoi(gib); err == nil && n < r.MinRootfsGiB {
				rootfs = s + ":" + strconv.Itoa(r.MinRootfsGiB)
			}
		}
	}
	vopts.Storage = rootfsStorage(rootfs)
	if vols, err = meta.PlanVolumes(r.Volumes, vopts); err != nil {
		return nil, err
	}
	if over.DNS, err = m.defaultDNS(ctx, node, meta, native, nics, over.DNS); err != nil {
		return nil, err
	}
	pc, err := meta.PVEConfig(native, over)
	if err != nil {
		return nil, err
	}
	for _, n := range pc.Notes {
		m.say("note: %s", n)
	}
	volid, err := m.EnsureTemplate(ctx, node, t)
	if err != nil {
		return nil, err
	}
	rec := &Record{Image: r.Image, Digest: t.Digest, Env: r.Env, Entrypoint: r.Entrypoint, DNS: over.DNS}
	opts := map[string]string{"ostemplate": volid, "unprivileged": "1", "memory": strconv.Itoa(r.MemoryMiB),
		"hostname": r.Hostname, "rootfs": rootfs, "description": rec.Description("")}
	if len(opts["description"]) > maxDescription {
		return nil, fmt.Errorf("the container's record (image, --env, --entrypoint, --dns) is %d characters; Proxmox keeps descriptions of at most %d", len(opts["description"]), maxDescription)
	}
	if opts["hostname"] == "" {
		opts["hostname"] = HostnameFor(meta)
	}
	if r.Cores > 0 {
		opts["cores"] = strconv.Itoa(r.Cores)
	}
	for i, v := range vols {
		opts["mp"+strconv.Itoa(i)] = v.Value
	}
	spec := pc.Spec(opts, nics)
	spec.VMID, spec.Start = r.VMID, r.Start
	vmid, warn, err := m.PVE.Launch(ctx, node, spec)
	res := &RunResult{VMID: vmid, Node: node, Warnings: warn}
	if err != nil {
		return res, err
	}
	return res, nil
}

// runNeeds is what placement must find on a node for r.
func runNeeds(r RunRequest, vols []template.Volume, templateStorage string) Needs {
	n := Needs{MemoryMiB: r.MemoryMiB, Storages: []string{templateStorage}}
	seen := map[string]bool{templateStorage: true}
	add := func(s string) {
		if s != "" && !seen[s] {
			seen[s] = true
			n.Storages = append(n.Storages, s)
		}
	}
	if r.Rootfs != "" {
		add(rootfsStorage(r.Rootfs))
	} else {
		n.Rootdir = true
	}
	for _, v := range vols {
		add(v.Storage)
	}
	return n
}

// defaultDNS gives an application container whose addresses are all
// static the node's DNS settings when the user named none: Proxmox writes
// no resolv.conf into unmanaged containers, and without DHCP nothing else
// would (proxmox-lifecycle.md §6). Proxmox gives the distributions it
// manages the node's settings the same way.
func (m *Manager) defaultDNS(ctx context.Context, node string, meta *template.Meta, native bool, nics []string, dns template.DNS) (template.DNS, error) {
	if !dns.Empty() || !native || meta.Run.Init != "shim" {
		return dns, nil
	}
	static, dhcp := false, false
	for _, v := range nics {
		nic := proxmox.ParseNIC(v)
		for _, k := range []string{"ip", "ip6"} {
			switch a := nic.Get(k); a {
			case "", "manual", "auto":
			case "dhcp":
				dhcp = true
			default:
				static = true
			}
		}
	}
	if !static || dhcp {
		return dns, nil
	}
	search, servers, err := m.PVE.NodeDNS(ctx, node)
	if err != nil {
		var ae *proxmox.APIError
		if errors.As(err, &ae) {
			return dns, fmt.Errorf("the container's addresses are static, so it needs DNS settings, and reading node %s's failed: %w; give --dns", node, err)
		}
		return dns, err
	}
	dns.Servers = servers
	if search != "" {
		dns.Search = strings.Fields(search)
	}
	if len(servers) > 0 {
		m.say("note: DNS from node %s: %s (give --dns to choose)", node, strings.Join(servers, " "))
	}
	return dns, nil
}

func rootfsStorage(rootfs string) string {
	s, _, _ := strings.Cut(rootfs, ":")
	return s
}

// keepAttrs reports whether volumes may ask for keepattrs: pve-container
// 6.1.2 added the mount point option, which Proxmox 9.2 ships; 9.1 may
// refuse it.
func keepAttrs(v proxmox.Version) bool {
	s := v.Version
	if s == "" {
		s = v.Release
	}
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	if len(parts) < 2 {
		return false
	}
	maj, _ := strconv.Atoi(parts[0])
	mn, _ := strconv.Atoi(parts[1])
	return maj > 9 || maj == 9 && mn >= 2
}

// HostnameFor makes a hostname from the image's name.
func HostnameFor(m *template.Meta) string {
	name := m.Repository
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	h := strings.Trim(b.String(), "-")
	if h == "" || h[0] >= '0' && h[0] <= '9' {
		h = "ct-" + h
	}
	return h[:min(len(h), 63)]
}
