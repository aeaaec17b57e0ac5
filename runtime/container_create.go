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

	"github.com/pve-image/pve-image/template"
)

// CreateContainer creates a Proxmox container from the image's template.
// The CRI config is merged over the image's as Kubernetes defines it:
// command replaces Entrypoint (and drops Cmd), args replace Cmd, env adds to
// and overrides the image's, working dir and run-as user override the
// image's. Memory and CPU limits come from the Linux resources.
func (s *Server) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	if err := s.needProxmox(); err != nil {
		return nil, err
	}
	c := req.GetConfig()
	if c.GetMetadata().GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "container config needs metadata with a name")
	}
	var sb *sandboxRecord
	var img *imageRecord
	s.state.view(func(st *stateFile) {
		if x := st.Sandboxes[req.GetPodSandboxId()]; x != nil {
			cp := *x
			sb = &cp
		}
		if x := s.findImage(st, c.GetImage().GetImage()); x != nil {
			cp := *x
			img = &cp
		}
	})
	if sb == nil {
		return nil, status.Errorf(codes.NotFound, "pod sandbox %q not found", req.GetPodSandboxId())
	}
	if img == nil {
		return nil, status.Errorf(codes.NotFound, "image %q not found: pull it first", c.GetImage().GetImage())
	}
	e, err := s.cfg.Builder.Cache.Template(img.CacheKey)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "image %s: its template is no longer cached: pull it again", img.ID)
	}
	meta, err := template.ReadMeta(e.Dir)
	if err != nil {
		return nil, grpcError(err)
	}

	over, err := overrides(c, &meta)
	if err != nil {
		return nil, err
	}
	native := s.cfg.Proxmox.Version().Native()
	switch {
	case meta.Run.Init != "shim":
		// A system image boots its own init, which hands nothing of its
		// environment to the services it starts: kubelet's variables
		// (always sent) could not reach them anyway.
		if len(over.Env) > 0 {
			s.log.Warn("system image: the pod's env, working dir and user do not apply", "image", img.ID, "container", c.GetMetadata().GetName())
		}
		over.Env = nil
	case !native:
		return nil, status.Errorf(codes.FailedPrecondition, "Proxmox %s on %s cannot run pods of application images: kubelet passes env, and only Proxmox 9.1 and later can give a container env and a command", s.cfg.Proxmox.Version().Version, s.cfg.Node)
	}
	pc, err := meta.PVEConfig(native, over)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	id := newID()
	opts := map[string]string{
		"ostemplate":   img.Volid,
		"unprivileged": "1",
		"hostname":     hostname(sb, c),
		"description":  fmt.Sprintf("pve-image CRI container %s (%s) of pod %s/%s", c.GetMetadata().GetName(), id[:12], sb.Metadata.GetNamespace(), sb.Metadata.GetName()),
		"tags":         "pve-image;pod-" + tagSafe(sb.Metadata.GetUid()),
	}
	applyResources(opts, c.GetLinux().GetResources())
	if s.cfg.RootfsStorage != "" {
		gb := int(math.Ceil(float64(meta.RootfsSize+max(meta.RootfsSize/2, 512<<20)) / (1 << 30)))
		opts["rootfs"] = fmt.Sprintf("%s:%d", s.cfg.RootfsStorage, gb)
	} else if opts["rootfs"], err = s.cfg.Proxmox.RootfsFor(ctx, s.cfg.Node, meta.RootfsSize); err != nil {
		return nil, grpcError(err)
	}
	spec := pc.Spec(opts, []string{"name=eth0,bridge=" + s.cfg.Bridge + ",ip=dhcp"})
	vmid, _, err := s.cfg.Proxmox.Launch(ctx, s.cfg.Node, spec)
	if err != nil {
		return nil, grpcError(err)
	}
	logPath := c.GetLogPath()
	if logPath != "" && !filepath.IsAbs(logPath) && sb.LogDir != "" {
		logPath = filepath.Join(sb.LogDir, logPath)
	}
	rec := &containerRecord{ID: id, SandboxID: sb.ID, Metadata: c.GetMetadata(), Image: imageName(c.GetImage(), img), ImageRef: img.ID,
		Node: s.cfg.Node, VMID: vmid, State: runtimeapi.ContainerState_CONTAINER_CREATED, CreatedAt: time.Now().UnixNano(),
		Labels: c.GetLabels(), Annotations: c.GetAnnotations(), LogPath: logPath, Resources: c.GetLinux().GetResources()}
	if err := s.state.update(func(st *stateFile) error { st.Containers[id] = rec; return nil }); err != nil {
		// Unrecorded, it would be nobody's: remove it even if kubelet has
		// given up on this call.
		s.cfg.Proxmox.DestroyContainer(context.WithoutCancel(ctx), s.cfg.Node, vmid, true)
		return nil, grpcError(err)
	}
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
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
		o.Env = append(o.Env, "PVE_IMAGE_CWD="+wd)
	}
	sc := c.GetLinux().GetSecurityContext()
	if u := sc.GetRunAsUser(); u != nil {
		o.Env = append(o.Env, "PVE_IMAGE_UID="+strconv.FormatInt(u.GetValue(), 10))
	}
	if g := sc.GetRunAsGroup(); g != nil {
		o.Env = append(o.Env, "PVE_IMAGE_GID="+strconv.FormatInt(g.GetValue(), 10))
	}
	if sc.GetRunAsUsername() != "" {
		return o, status.Errorf(codes.InvalidArgument, "run_as_username %q: give run_as_user as a number", sc.GetRunAsUsername())
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
