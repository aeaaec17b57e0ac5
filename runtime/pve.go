package runtime

import (
	"context"
	"time"

	"github.com/pve-image/pve-image/proxmox"
)

// pve is the Proxmox client as the runtime calls it: every call is timed,
// into pve_image_proxmox_call_duration_seconds and into the share of the
// CRI call it serves (pve_image_grpc_request_proxmox_duration_seconds).
// What is left of a CRI call's time is the daemon's own.
type pve struct {
	c *proxmox.Client
	m *Metrics
}

func (s *Server) pve() pve { return pve{s.cfg.Proxmox, s.cfg.Metrics} }

// timed starts timing a call; the returned func ends it.
func (p pve) timed(ctx context.Context, call string) func() {
	start := time.Now()
	return func() {
		d := time.Since(start)
		p.m.proxmoxTime.WithLabelValues(call).Observe(d.Seconds())
		addProxmoxTime(ctx, d)
	}
}

func (p pve) Launch(ctx context.Context, node string, s proxmox.ContainerSpec) (int, string, error) {
	defer p.timed(ctx, "create")()
	return p.c.Launch(ctx, node, s)
}

func (p pve) LinkedClone(ctx context.Context, node string, vmid int, o proxmox.CloneOptions) (int, error) {
	defer p.timed(ctx, "clone")()
	return p.c.LinkedClone(ctx, node, vmid, o)
}

func (p pve) MakeTemplate(ctx context.Context, node string, vmid int) error {
	defer p.timed(ctx, "template")()
	return p.c.MakeTemplate(ctx, node, vmid)
}

func (p pve) StartContainer(ctx context.Context, node string, vmid int) error {
	defer p.timed(ctx, "start")()
	return p.c.StartContainer(ctx, node, vmid)
}

func (p pve) StopContainer(ctx context.Context, node string, vmid int) error {
	defer p.timed(ctx, "stop")()
	return p.c.StopContainer(ctx, node, vmid)
}

func (p pve) ShutdownContainer(ctx context.Context, node string, vmid, timeoutSec int, force bool) error {
	defer p.timed(ctx, "shutdown")()
	return p.c.ShutdownContainer(ctx, node, vmid, timeoutSec, force)
}

func (p pve) DestroyContainer(ctx context.Context, node string, vmid int, force bool) error {
	defer p.timed(ctx, "destroy")()
	return p.c.DestroyContainer(ctx, node, vmid, force)
}

func (p pve) ContainerStatus(ctx context.Context, node string, vmid int) (proxmox.ContainerState, error) {
	defer p.timed(ctx, "status")()
	return p.c.ContainerStatus(ctx, node, vmid)
}

func (p pve) Containers(ctx context.Context, node string) ([]proxmox.ContainerState, error) {
	defer p.timed(ctx, "list")()
	return p.c.Containers(ctx, node)
}

func (p pve) SetContainerConfig(ctx context.Context, node string, vmid int, opts map[string]string) error {
	defer p.timed(ctx, "config")()
	return p.c.SetContainerConfig(ctx, node, vmid, opts)
}

func (p pve) ReadConfig(ctx context.Context, node string, vmid int) (proxmox.CTConfig, error) {
	defer p.timed(ctx, "config-read")()
	return p.c.ReadConfig(ctx, node, vmid)
}

func (p pve) RootfsFor(ctx context.Context, node string, size int64) (string, error) {
	defer p.timed(ctx, "storage")()
	return p.c.RootfsFor(ctx, node, size)
}

func (p pve) Storage(ctx context.Context, node, storage string) (proxmox.StorageInfo, error) {
	defer p.timed(ctx, "storage")()
	return p.c.Storage(ctx, node, storage)
}

func (p pve) NextID(ctx context.Context) (int, error) {
	defer p.timed(ctx, "nextid")()
	return p.c.NextID(ctx)
}

func (p pve) Nodes(ctx context.Context) ([]string, error) {
	defer p.timed(ctx, "nodes")()
	return p.c.Nodes(ctx)
}

func (p pve) Interfaces(ctx context.Context, node string, vmid int) ([]proxmox.Interface, error) {
	defer p.timed(ctx, "interfaces")()
	return p.c.Interfaces(ctx, node, vmid)
}
