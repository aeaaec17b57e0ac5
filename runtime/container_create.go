package runtime

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/imgconv/runspec"
	"github.com/pve-image/pve-image/lifecycle"
	"github.com/pve-image/pve-image/pvestore"
	"github.com/pve-image/pve-image/template"
)

// CreateContainer creates a Proxmox container from the image's template.
// The CRI config is merged over the image's as Kubernetes defines it:
// command replaces Entrypoint (and drops Cmd), args replace Cmd, env adds to
// and overrides the image's, working dir and run-as user override the
// image's. Memory and CPU limits come from the Linux resources, the NIC
// from the pod's address, mount points from the mounts (mounts.go). A
// container runs alone in its pod: a Proxmox container has its own
// network namespace, and the pod has one address.
func (s *Server) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	if err := s.needProxmox(); err != nil {
		return nil, err
	}
	arrived := time.Now()
	c := req.GetConfig()
	if c.GetMetadata().GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "container config needs metadata with a name")
	}
	var sb *sandboxRecord
	var img *imageRecord
	var busy string
	s.state.view(func(st *stateFile) {
		if x := st.Sandboxes[req.GetPodSandboxId()]; x != nil {
			cp := *x
			sb = &cp
		}
		if x := s.findImage(st, c.GetImage().GetImage()); x != nil {
			cp := *x
			img = &cp
		}
		busy = runningBeside(st, req.GetPodSandboxId(), "")
	})
	switch {
	case sb == nil:
		return nil, status.Errorf(codes.NotFound, "pod sandbox %q not found", req.GetPodSandboxId())
	case sb.State != runtimeapi.PodSandboxState_SANDBOX_READY:
		return nil, status.Errorf(codes.FailedPrecondition, "pod sandbox %s is not ready", sb.ID)
	case busy != "":
		return nil, notBeside(c.GetMetadata().GetName(), busy, sb.Metadata)
	case img == nil:
		return nil, status.Errorf(codes.NotFound, "image %q not found: pull it first", c.GetImage().GetImage())
	}
	if err := checkContainerAsks(c); err != nil {
		return nil, err
	}
	// The template's metadata is read under a hold: a RemoveImage or a
	// prune must not take it away in between.
	hold := cache.NewHold()
	e, err := s.cfg.Builder.Cache.LookupTemplate(cache.WithHold(ctx, hold), img.CacheKey)
	if err != nil {
		hold.Close()
		return nil, status.Errorf(codes.FailedPrecondition, "image %s: its template is no longer cached: pull it again", img.ID)
	}
	meta, err := template.ReadMeta(e.Dir)
	if err != nil {
		hold.Close()
		return nil, grpcError(err)
	}
	// With --node auto the container goes to the node placement picks,
	// and the template with it (from the cache, still held).
	node, volid := s.cfg.Node, img.Volid
	if node == lifecycle.Auto {
		node, volid, err = s.placePod(ctx, c, e, img)
	}
	hold.Close()
	if err != nil {
		return nil, grpcError(err)
	}

	over, err := overrides(c, &meta)
	if err != nil {
		return nil, err
	}
	plan, err := planMounts(c, s.bindMountsBlocked())
	if err != nil {
		return nil, err
	}
	native := s.cfg.Proxmox.Version().Native()
	shim := meta.Run.Init == "shim"
	supervised := shim && s.cfg.LXC != nil
	switch {
	case !shim:
		// A system image boots its own init, which hands nothing of its
		// environment to the services it starts: kubelet's variables
		// (always sent) could not reach them anyway.
		if len(over.Env) > 0 {
			s.log.Warn("system image: the pod's env, working dir and user do not apply", "image", img.ID, "container", c.GetMetadata().GetName())
		}
		over.Env = nil
	case !native:
		return nil, status.Errorf(codes.FailedPrecondition, "Proxmox %s on %s cannot run pods of application images: kubelet passes env, and only Proxmox 9.1 and later can give a container env and a command", s.cfg.Proxmox.Version().Version, node)
	default:
		over.Env = append(over.Env, podEnv(sb, plan, supervised)...)
	}
	pc, err := meta.PVEConfig(native, over)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	id := newID()
	opts := map[string]string{
		"ostemplate":   volid,
		"unprivileged": "1",
		"hostname":     hostname(sb, c),
		"description":  s.podDescription(fmt.Sprintf("pve-image CRI container %s (%s) of pod %s/%s", c.GetMetadata().GetName(), id[:12], sb.Metadata.GetNamespace(), sb.Metadata.GetName())),
		"tags":         "pve-image;pod-" + tagSafe(sb.Metadata.GetUid()),
	}
	if !shim && len(sb.DNS.GetServers()) > 0 {
		// Proxmox writes resolv.conf for the distributions it manages.
		opts["nameserver"] = strings.Join(sb.DNS.GetServers(), " ")
		if len(sb.DNS.GetSearches()) > 0 {
			opts["searchdomain"] = strings.Join(sb.DNS.GetSearches(), " ")
		}
	}
	for i, mp := range plan.points {
		opts["mp"+strconv.Itoa(i)] = mp
	}
	applyResources(opts, c.GetLinux().GetResources())
	if s.cfg.RootfsStorage != "" {
		gb := int(math.Ceil(float64(meta.RootfsSize+max(meta.RootfsSize/2, 512<<20)) / (1 << 30)))
		opts["rootfs"] = fmt.Sprintf("%s:%d", s.cfg.RootfsStorage, gb)
	} else if opts["rootfs"], err = s.pve().RootfsFor(ctx, node, meta.RootfsSize); err != nil {
		return nil, grpcError(err)
	}
	nic := nicOption(s.cfg.Bridge, podMAC(sb.ID), sb.IPs, sb.Gateways)
	if !shim && meta.Run.OSType == "unmanaged" && native {
		// Nothing in an unmanaged system image configures eth0.
		nic += ",host-managed=1"
	}
	spec := pc.Spec(opts, []string{nic})
	vmid, base, err := s.makeContainer(ctx, node, spec)
	if err != nil {
		return nil, grpcError(err)
	}
	// Pending until recorded or undone: the start-up sweep leaves it, and
	// its template container stays.
	defer s.bases.done(vmid)
	// Undo a creation nobody will know of, even if kubelet has given up
	// on this call.
	undo := func() { s.pve().DestroyContainer(context.WithoutCancel(ctx), node, vmid, true) }
	if supervised && !s.cfg.LXC.Has(strconv.Itoa(vmid)) {
		undo()
		return nil, status.Errorf(codes.FailedPrecondition, "container %d was created on node %s, but its LXC config is not under %s here: this pve-image cri is not on node %s (give the right --node, or --lxc-path)", vmid, node, s.cfg.LXC.Path, node)
	}
	logPath := c.GetLogPath()
	if logPath != "" && !filepath.IsAbs(logPath) && sb.LogDir != "" {
		logPath = filepath.Join(sb.LogDir, logPath)
	}
	rec := &containerRecord{ID: id, SandboxID: sb.ID, Metadata: c.GetMetadata(), Image: imageName(c.GetImage(), img), ImageRef: img.ID,
		Node: node, VMID: vmid, State: runtimeapi.ContainerState_CONTAINER_CREATED, CreatedAt: time.Now().UnixNano(),
		Labels: c.GetLabels(), Annotations: c.GetAnnotations(), LogPath: logPath, Resources: c.GetLinux().GetResources(),
		Supervised: supervised, Shim: shim, Mounts: c.GetMounts(), Base: base, CreateRequested: arrived.UnixNano()}
	if shim {
		rec.TerminationLog = plan.terminationLog
	}
	if err := s.state.update(func(st *stateFile) error { st.Containers[id] = rec; return nil }); err != nil {
		undo()
		return nil, grpcError(err)
	}
	s.cfg.Metrics.created.WithLabelValues(rec.rootfs()).Inc()
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

// runningBeside names a running container of the pod other than id: a
// pod's containers run one at a time (one address, one network
// namespace per Proxmox container).
func runningBeside(st *stateFile, sandboxID, id string) string {
	for _, cid := range sortedKeys(st.Containers) {
		if o := st.Containers[cid]; cid != id && o.SandboxID == sandboxID && o.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			return o.Metadata.GetName()
		}
	}
	return ""
}

func notBeside(name, busy string, pod *runtimeapi.PodSandboxMetadata) error {
	return status.Errorf(codes.FailedPrecondition, "container %q cannot run beside %q in pod %s/%s: pve-image runs each container as its own Proxmox container with the pod's one address, so the containers of a pod cannot share a network namespace and must run one after another (init containers do); put them into separate pods",
		name, busy, pod.GetNamespace(), pod.GetName())
}

// bindMountsBlocked says why kubelet's directories cannot be bind-mounted
// into containers, or "" when they can.
func (s *Server) bindMountsBlocked() string {
	switch {
	case s.cfg.LXC == nil:
		return "containers run on Proxmox node " + s.cfg.Node + ", and kubelet's directories are on this machine, which is not that node (" + s.cfg.LXCUnavailable + "); run kubelet and pve-image cri on the node"
	case !s.cfg.Proxmox.MayBindMount():
		return "Proxmox creates bind mount points only for the user root@pam (API tokens, even root's, cannot), and pve-image cri logs in as " + s.cfg.Proxmox.Principal() + "; run it with --pve-user root@pam and --pve-password (or the config file's proxmox.user and password)"
	}
	return ""
}

// podEnv is what the init needs from the pod: its files and supervision.
func podEnv(sb *sandboxRecord, plan mountPlan, supervised bool) []string {
	var env []string
	if supervised {
		env = append(env, runspec.EnvSupervised+"=1")
	}
	if plan.hosts != nil {
		env = append(env, runspec.EnvHosts+"="+string(runspec.AppendJSONString(nil, *plan.hosts)))
	}
	if sb.DNS != nil {
		env = append(env, runspec.EnvResolv+"="+string(runspec.AppendJSONString(nil, resolvConf(sb.DNS))))
	}
	if plan.terminationLog != nil {
		env = append(env, runspec.EnvTerminationLog+"="+plan.terminationLog.Container)
	}
	return env
}

// checkContainerAsks refuses what an unprivileged Proxmox container
// cannot give a container.
func checkContainerAsks(c *runtimeapi.ContainerConfig) error {
	sc := c.GetLinux().GetSecurityContext()
	name := c.GetMetadata().GetName()
	switch {
	case sc.GetPrivileged():
		return status.Errorf(codes.InvalidArgument, "container %s asks to be privileged: pve-image creates only unprivileged Proxmox containers; run it without privileged, or on another runtime", name)
	case sc.GetNamespaceOptions().GetPid() == runtimeapi.NamespaceMode_TARGET:
		return status.Errorf(codes.InvalidArgument, "container %s asks to share another container's process namespace (an ephemeral debug container): each Proxmox container has its own; use kubectl exec instead", name)
	case len(c.GetDevices()) > 0:
		return status.Errorf(codes.InvalidArgument, "container %s asks for devices: Proxmox passes devices through only for root@pam, and pve-image does not", name)
	}
	return nil
}

// imageName is the image as kubectl should show it: what the user wrote,
// else the image's first tag, else what kubelet sent (its ID).
func imageName(spec *runtimeapi.ImageSpec, img *imageRecord) string {
	if u := spec.GetUserSpecifiedImage(); u != "" {
		return u
	}
	if len(img.RepoTags) > 0 {
		return img.RepoTags[0]
	}
	return spec.GetImage()
}

// overrides turns the CRI config into changes over the image's run config.
func overrides(c *runtimeapi.ContainerConfig, m *template.Meta) (template.Overrides, error) {
	var o template.Overrides
	switch {
	case len(c.GetCommand()) > 0:
		o.Entrypoint = append(slices.Clone(c.GetCommand()), c.GetArgs()...)
	case len(c.GetArgs()) > 0:
		o.Entrypoint = append(slices.Clone(m.Config.Entrypoint), c.GetArgs()...)
	}
	for _, kv := range c.GetEnvs() {
		if kv.GetKey() == "" || strings.HasPrefix(kv.GetKey(), "PVE_IMAGE_") {
			return o, status.Errorf(codes.InvalidArgument, "env %q is not allowed", kv.GetKey())
		}
		o.Env = append(o.Env, kv.GetKey()+"="+string(kv.GetValue()))
	}
	if wd := c.GetWorkingDir(); wd != "" {
		o.Env = append(o.Env, runspec.EnvCwd+"="+wd)
	}
	sc := c.GetLinux().GetSecurityContext()
	if u := sc.GetRunAsUser(); u != nil {
		o.Env = append(o.Env, runspec.EnvUID+"="+strconv.FormatInt(u.GetValue(), 10))
	} else if name := sc.GetRunAsUsername(); name != "" {
		// kubelet hands back the image's own user by name; the template
		// runs as that already. Another name is looked up in the image's
		// /etc/passwd when the container starts.
		if image, _, _ := strings.Cut(m.Config.User, ":"); name != image {
			o.Env = append(o.Env, runspec.EnvUser+"="+name)
		}
	}
	if g := sc.GetRunAsGroup(); g != nil {
		o.Env = append(o.Env, runspec.EnvGID+"="+strconv.FormatInt(g.GetValue(), 10))
	}
	if sc.GetNoNewPrivs() {
		o.Env = append(o.Env, runspec.EnvNoNewPrivs+"=1")
	}
	if drop := sc.GetCapabilities().GetDropCapabilities(); len(drop) > 0 {
		if _, err := runspec.ParseCapabilities(drop); err != nil {
			return o, status.Errorf(codes.InvalidArgument, "capabilities to drop: %v", err)
		}
		o.Env = append(o.Env, runspec.EnvCapDrop+"="+strings.Join(drop, ","))
	}
	if sc.GetReadonlyRootfs() {
		o.Env = append(o.Env, runspec.EnvReadonlyRoot+"=1")
	}
	if gs := sc.GetSupplementalGroups(); len(gs) > 0 {
		var parts []string
		for _, g := range gs {
			parts = append(parts, strconv.FormatInt(g, 10))
		}
		o.Env = append(o.Env, runspec.EnvGroups+"="+strings.Join(parts, ","))
	}
	if len(o.Entrypoint) > 0 && m.Run.Init != "shim" {
		return o, status.Error(codes.FailedPrecondition, "the image's template has no pve-image-init, so its command cannot be changed")
	}
	return o, nil
}

// applyResources maps Linux resources onto Proxmox options: memory in MiB
// (at least 16), CPU quota/period as cpulimit, shares as cpuunits.
func applyResources(opts map[string]string, r *runtimeapi.LinuxContainerResources) {
	if r == nil {
		return
	}
	if m := r.GetMemoryLimitInBytes(); m > 0 {
		opts["memory"] = strconv.FormatInt(max(16, (m+(1<<20)-1)>>20), 10)
		opts["swap"] = "0"
	}
	if q, p := r.GetCpuQuota(), r.GetCpuPeriod(); q > 0 && p > 0 {
		opts["cpulimit"] = strconv.FormatFloat(float64(q)/float64(p), 'f', 2, 64)
	}
	if sh := r.GetCpuShares(); sh > 0 {
		opts["cpuunits"] = strconv.FormatInt(min(max(sh, 1), 10000), 10)
	}
}

func hostname(sb *sandboxRecord, c *runtimeapi.ContainerConfig) string {
	h := sb.Hostname
	if h == "" {
		h = sb.Metadata.GetName()
	}
	if h == "" {
		h = c.GetMetadata().GetName()
	}
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if out == "" {
		out = "pod"
	}
	return out[:min(len(out), 63)]
}

// tagSafe keeps what Proxmox allows in tags.
func tagSafe(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' || r == '_' || r == '.' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// placePod picks the node of a pod's container (--node auto): the node
// with the most free memory and CPU that has the template's storage and
// the root disks' (lifecycle.Place), and puts the template there from the
// cache unless that storage has it (a shared one has it for every node).
func (s *Server) placePod(ctx context.Context, c *runtimeapi.ContainerConfig, e cache.Entry, img *imageRecord) (node, volid string, err error) {
	mem := 512
	if m := c.GetLinux().GetResources().GetMemoryLimitInBytes(); m > 0 {
		mem = int(max(16, (m+(1<<20)-1)>>20))
	}
	sid, name, _ := strings.Cut(img.Volid, ":")
	name = strings.TrimPrefix(name, "vztmpl/")
	needs := lifecycle.Needs{MemoryMiB: mem, Storages: []string{sid}, Rootdir: s.cfg.RootfsStorage == ""}
	if s.cfg.RootfsStorage != "" && s.cfg.RootfsStorage != sid {
		needs.Storages = append(needs.Storages, s.cfg.RootfsStorage)
	}
	p, err := (&lifecycle.Manager{PVE: s.cfg.Proxmox, Log: s.log}).Place(ctx, needs)
	if err != nil {
		return "", "", status.Error(codes.ResourceExhausted, err.Error())
	}
	s.log.Info("pod placed", "pod", c.GetMetadata().GetName(), "node", p.Node, "why", strings.Join(p.Why, "; "))
	if _, _, err := pvestore.Push(ctx, s.cfg.Proxmox, pvestore.File{Path: e.Path(), Name: name, SHA256: e.SHA256, Size: e.Size}, p.Node, sid,
		pvestore.PushOptions{Log: s.log}); err != nil {
		return "", "", fmt.Errorf("put the template on node %s: %w", p.Node, err)
	}
	return p.Node, img.Volid, nil
}
