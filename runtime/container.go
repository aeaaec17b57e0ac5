package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/lifecycle"
	"github.com/pve-image/pve-image/proxmox"
)

func (s *Server) container(id string) *containerRecord {
	var c *containerRecord
	s.state.view(func(st *stateFile) {
		if x := st.Containers[id]; x != nil {
			cp := *x
			c = &cp
		}
	})
	return c
}

// updateContainer changes the stored record of id in place, so that what
// others changed meanwhile (refresh marking it exited) is kept.
func (s *Server) updateContainer(id string, fn func(c *containerRecord)) error {
	return s.state.update(func(st *stateFile) error {
		c := st.Containers[id]
		if c == nil {
			return errUnchanged
		}
		fn(c)
		return nil
	})
}

// StartContainer starts the Proxmox container. Proxmox's start task ends
// once the container is up; a program that exits at once is then found
// exited by the watcher (supervised) or the next status call.
func (s *Server) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	if err := s.needProxmox(); err != nil {
		return nil, err
	}
	defer s.lockContainer(req.GetContainerId())()
	c := s.container(req.GetContainerId())
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "container %q not found", req.GetContainerId())
	}
	if c.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is %s, not created", c.ID, c.State)
	}
	var busy string
	var pod *runtimeapi.PodSandboxMetadata
	s.state.view(func(st *stateFile) {
		busy = runningBeside(st, c.SandboxID, c.ID)
		if sb := st.Sandboxes[c.SandboxID]; sb != nil {
			pod = sb.Metadata
		}
	})
	if busy != "" {
		return nil, notBeside(c.Metadata.GetName(), busy, pod)
	}
	started := time.Now().UnixNano()
	// The start runs to its end even if kubelet gives up on the call: a
	// container Proxmox starts after we stopped listening would run on,
	// unrecorded, with the pod's address.
	err := s.pve().StartContainer(context.WithoutCancel(ctx), c.Node, c.VMID)
	if err != nil {
		if st, exists, serr := s.proxmoxStatus(context.WithoutCancel(ctx), c); serr == nil && exists && st.Status == "running" {
			s.log.Warn("the start task failed, but the container runs", "vmid", c.VMID, "err", err)
			err = nil
		}
	}
	if err != nil {
		// As containerd: a container that could not start has exited,
		// so that kubelet makes a new one rather than waiting on it.
		s.updateContainer(c.ID, func(c *containerRecord) {
			c.State, c.ExitCode, c.Reason, c.Message = runtimeapi.ContainerState_CONTAINER_EXITED, 128, "StartError", err.Error()
			c.StartedAt, c.FinishedAt = started, time.Now().UnixNano()
		})
		return nil, grpcError(err)
	}
	if !c.Supervised {
		s.writeLogNotice(c)
	}
	err = s.updateContainer(c.ID, func(c *containerRecord) {
		c.State, c.StartedAt = runtimeapi.ContainerState_CONTAINER_RUNNING, started
	})
	if err == nil && c.CreateRequested > 0 {
		s.cfg.Metrics.createToRunning.WithLabelValues(c.rootfs()).Observe(time.Since(time.Unix(0, c.CreateRequested)).Seconds())
	}
	if err == nil && c.Supervised {
		// Follow it from now on; the watcher finds it by itself too.
		s.follow(ctx, c.ID)
	}
	return &runtimeapi.StartContainerResponse{}, grpcError(err)
}

// writeLogNotice puts one line into the log file of a container whose
// output the daemon cannot collect (it is not on the node), where kubectl
// logs looks.
func (s *Server) writeLogNotice(c *containerRecord) {
	if c.LogPath == "" {
		return
	}
	msg := fmt.Sprintf("%s stdout F pve-image: the output of this container is on the console of Proxmox CT %d on node %s (pct console %d): pve-image cri collects output only when it runs on that node (%s)\n",
		time.Now().UTC().Format(time.RFC3339Nano), c.VMID, c.Node, c.VMID, s.cfg.LXCUnavailable)
	if err := os.MkdirAll(filepath.Dir(c.LogPath), 0o755); err == nil {
		f, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err == nil {
			_, err = f.WriteString(msg)
			f.Close()
		}
		if err != nil {
			s.log.Warn("container log", "path", c.LogPath, "err", err)
		}
	}
}

// RemoveContainer stops and destroys the Proxmox container; removing a
// missing container succeeds. A container Proxmox cannot be asked about is
// kept, so that nothing is leaked. The last clone of a template container
// whose image is gone takes it along (clones.go).
func (s *Server) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	defer s.lockContainer(req.GetContainerId())()
	c := s.container(req.GetContainerId())
	if c == nil {
		return &runtimeapi.RemoveContainerResponse{}, nil
	}
	if err := s.needProxmox(); err != nil {
		return nil, err
	}
	start := time.Now()
	_, exists, err := s.proxmoxStatus(ctx, c)
	if err != nil {
		return nil, err
	}
	s.watches.drop(c.ID)
	if exists {
		if err := s.destroy(ctx, c); err != nil {
			return nil, grpcError(err)
		}
	}
	s.cpu.forget(c.ID)
	os.Remove(s.cursorPath(c.ID))
	err = s.state.update(func(st *stateFile) error { delete(st.Containers, c.ID); return nil })
	if err != nil {
		return nil, grpcError(err)
	}
	if exists {
		s.cfg.Metrics.removeTime.WithLabelValues(c.rootfs()).Observe(time.Since(start).Seconds())
	}
	if c.Base != nil {
		s.dropBase(ctx, c.Base.key())
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// rootfs says how the container's root disk was made, for metrics.
func (c *containerRecord) rootfs() string {
	if c.Base != nil {
		return rootfsClone
	}
	return rootfsExtract
}

// destroy removes c's Proxmox container. A container that is still
// stopping (its init just ended) fails Proxmox's forced stop ("is not
// running") for a moment: the destroy is tried again while it exists.
func (s *Server) destroy(ctx context.Context, c *containerRecord) error {
	var err error
	delay := 50 * time.Millisecond
	for attempt := 0; attempt < 10; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(delay):
			}
			delay = min(2*delay, time.Second)
			if _, exists, serr := s.proxmoxStatus(ctx, c); serr != nil {
				return err
			} else if !exists {
				return nil
			}
		}
		if err = s.pve().DestroyContainer(ctx, c.Node, c.VMID, true); err == nil {
			return nil
		}
	}
	return err
}

// proxmoxStatus asks Proxmox about c's container. Only Proxmox saying it
// is not there makes exists false; any other failure is an error, so that
// a hiccup never passes for a container that is gone.
func (s *Server) proxmoxStatus(ctx context.Context, c *containerRecord) (st proxmox.ContainerState, exists bool, err error) {
	st, err = s.pve().ContainerStatus(ctx, c.Node, c.VMID)
	switch {
	case errors.Is(err, proxmox.ErrNotFound):
		return st, false, nil
	case err != nil:
		return st, false, grpcError(err)
	}
	return st, true, nil
}

// unknownExitCode is what containerd reports when a container's exit
// status cannot be known.
const unknownExitCode = 255

func (s *Server) listNode(ctx context.Context) ([]proxmox.ContainerState, error) {
	if s.cfg.Node != lifecycle.Auto {
		return s.pve().Containers(ctx, s.cfg.Node)
	}
	// Placed pods are on the nodes their records name. Each node's own
	// list is asked, not /cluster/resources: that one is pvestatd's view,
	// up to 10 s old, in which a container just started may still be
	// stopped, and would be taken as exited.
	var nodes []string
	s.state.view(func(st *stateFile) {
		for _, c := range st.Containers {
			if c.Node != "" && !slices.Contains(nodes, c.Node) {
				nodes = append(nodes, c.Node)
			}
		}
	})
	slices.Sort(nodes)
	var all []proxmox.ContainerState
	for _, n := range nodes {
		list, err := s.pve().Containers(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n, err)
		}
		all = append(all, list...)
	}
	return all, nil
}

// refresh brings running records up to date with the node's container
// list (one request a second at most, whoever asks): a container whose
// Proxmox container stopped has exited. Supervised containers are the
// watcher's, which knows their exit status; for the others Proxmox
// reports none, so it is the unknown one, as containerd reports for a
// lost task: a failure is never taken for a success.
func (s *Server) refresh(ctx context.Context) (map[int]proxmox.ContainerState, error) {
	if s.cfg.Proxmox == nil {
		return nil, nil
	}
	byID, taken, err := s.list.get(ctx, s.listNode)
	if err != nil {
		s.log.Warn("list Proxmox containers", "err", err)
		return nil, err
	}
	var gone []string
	var exist []bool
	s.state.view(func(st *stateFile) {
		for _, id := range sortedKeys(st.Containers) {
			c := st.Containers[id]
			pc, ok := byID[c.VMID]
			// A container started after the list was taken may be listed
			// as stopped: leave it to the next refresh.
			if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING || (ok && pc.Status == "running") || c.StartedAt > taken.UnixNano() {
				continue
			}
			if c.Supervised && s.cfg.LXC != nil && ok {
				continue
			}
			gone, exist = append(gone, id), append(exist, ok)
		}
	})
	for i, id := range gone {
		s.markGone(id, exist[i])
	}
	return byID, nil
}

func (c *containerRecord) toProto() *runtimeapi.Container {
	return &runtimeapi.Container{Id: c.ID, PodSandboxId: c.SandboxID, Metadata: c.Metadata,
		Image: &runtimeapi.ImageSpec{Image: c.Image}, ImageRef: c.ImageRef, ImageId: c.ImageRef, State: c.State,
		CreatedAt: c.CreatedAt, Labels: c.Labels, Annotations: c.Annotations}
}

// ListContainers lists containers, filtered by id, state, pod and labels.
func (s *Server) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	s.refresh(ctx)
	f := req.GetFilter()
	resp := &runtimeapi.ListContainersResponse{}
	s.state.view(func(st *stateFile) {
		for _, id := range sortedKeys(st.Containers) {
			c := st.Containers[id]
			if f != nil && ((f.Id != "" && f.Id != id) || (f.State != nil && f.State.State != c.State) ||
				(f.PodSandboxId != "" && f.PodSandboxId != c.SandboxID) || !matchLabels(c.Labels, f.LabelSelector)) {
				continue
			}
			resp.Containers = append(resp.Containers, c.toProto())
		}
	})
	return resp, nil
}

// ContainerStatus describes a container; a missing one is NotFound.
func (s *Server) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	s.refresh(ctx)
	c := s.container(req.GetContainerId())
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "container %q not found", req.GetContainerId())
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{
		Id: c.ID, Metadata: c.Metadata, State: c.State, CreatedAt: c.CreatedAt, StartedAt: c.StartedAt, FinishedAt: c.FinishedAt,
		ExitCode: c.ExitCode, Image: &runtimeapi.ImageSpec{Image: c.Image}, ImageRef: c.ImageRef, ImageId: c.ImageRef,
		Reason: c.Reason, Message: c.Message, Labels: c.Labels, Annotations: c.Annotations, LogPath: c.LogPath,
		Resources: &runtimeapi.ContainerResources{Linux: c.Resources}, Mounts: c.Mounts,
	}}
	if req.GetVerbose() {
		resp.Info = map[string]string{"info": `{"node":"` + c.Node + `","vmid":` + strconv.Itoa(c.VMID) + `}`}
	}
	return resp, nil
}

func (s *Server) stats(c *containerRecord, pc proxmox.ContainerState, now int64) *runtimeapi.ContainerStats {
	cores := max(pc.CPUs, 1)
	total := s.cpu.add(c.ID, pc.CPU*cores, pc.Uptime, now)
	return &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{Id: c.ID, Metadata: c.Metadata, Labels: c.Labels, Annotations: c.Annotations},
		Cpu: &runtimeapi.CpuUsage{Timestamp: now,
			UsageNanoCores:       &runtimeapi.UInt64Value{Value: uint64(pc.CPU * cores * 1e9)},
			UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: total}},
		Memory: &runtimeapi.MemoryUsage{Timestamp: now, WorkingSetBytes: &runtimeapi.UInt64Value{Value: uint64(max(pc.Mem, 0))},
			UsageBytes: &runtimeapi.UInt64Value{Value: uint64(max(pc.Mem, 0))}, AvailableBytes: &runtimeapi.UInt64Value{Value: uint64(max(pc.MaxMem-pc.Mem, 0))}},
		WritableLayer: &runtimeapi.FilesystemUsage{Timestamp: now, FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: "/"},
			UsedBytes: &runtimeapi.UInt64Value{Value: uint64(max(pc.Disk, 0))}},
	}
}

// ContainerStats reports a container's usage from Proxmox's status.
func (s *Server) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	byID, _ := s.refresh(ctx)
	c := s.container(req.GetContainerId())
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "container %q not found", req.GetContainerId())
	}
	return &runtimeapi.ContainerStatsResponse{Stats: s.stats(c, byID[c.VMID], time.Now().UnixNano())}, nil
}

// ListContainerStats reports every listed container's usage.
func (s *Server) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	byID, _ := s.refresh(ctx)
	f := req.GetFilter()
	now := time.Now().UnixNano()
	resp := &runtimeapi.ListContainerStatsResponse{}
	s.state.view(func(st *stateFile) {
		for _, id := range sortedKeys(st.Containers) {
			c := st.Containers[id]
			if f != nil && ((f.Id != "" && f.Id != id) || (f.PodSandboxId != "" && f.PodSandboxId != c.SandboxID) || !matchLabels(c.Labels, f.LabelSelector)) {
				continue
			}
			resp.Stats = append(resp.Stats, s.stats(c, byID[c.VMID], now))
		}
	})
	return resp, nil
}

// UpdateContainerResources changes memory and CPU limits with a config PUT.
func (s *Server) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	if err := s.needProxmox(); err != nil {
		return nil, err
	}
	defer s.lockContainer(req.GetContainerId())()
	c := s.container(req.GetContainerId())
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "container %q not found", req.GetContainerId())
	}
	opts := map[string]string{}
	applyResources(opts, req.GetLinux())
	if len(opts) > 0 {
		if err := s.pve().SetContainerConfig(ctx, c.Node, c.VMID, opts); err != nil {
			return nil, grpcError(err)
		}
	}
	err := s.updateContainer(c.ID, func(c *containerRecord) { c.Resources = req.GetLinux() })
	return &runtimeapi.UpdateContainerResourcesResponse{}, grpcError(err)
}
