package runtime

import (
	"context"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StopContainer stops a container within the timeout (kubelet's grace
// period): the image's StopSignal first, a kill when the time is up.
// Stopping a stopped, stopping or missing container succeeds.
func (s *Server) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	defer s.lockContainer(req.GetContainerId())()
	c := s.container(req.GetContainerId())
	if c == nil || c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return &runtimeapi.StopContainerResponse{}, nil
	}
	if err := s.needProxmox(); err != nil {
		return nil, err
	}
	timeout := time.Duration(max(req.GetTimeout(), 0)) * time.Second
	start := time.Now()
	var err error
	if c.Supervised && s.cfg.LXC != nil {
		err = s.stopSupervised(ctx, c, timeout)
	} else {
		err = s.stopUnsupervised(ctx, c, timeout)
	}
	if err == nil {
		s.cfg.Metrics.stopTime.WithLabelValues(c.rootfs()).Observe(time.Since(start).Seconds())
	}
	return &runtimeapi.StopContainerResponse{}, grpcError(err)
}

// stopSupervised sends the init the halt signal, which it turns into the
// image's StopSignal, and waits for the program's exit status; when the
// time is up, Proxmox stops the container hard and the program counts as
// killed (137, as containerd reports SIGKILL).
func (s *Server) stopSupervised(ctx context.Context, c *containerRecord, timeout time.Duration) error {
	// The stop must finish even if kubelet gives up on the call: a
	// half-stopped container would run on unrecorded.
	ctx = context.WithoutCancel(ctx)
	deadline := time.Now().Add(timeout)
	signalled := false
	// Most programs end within milliseconds of their signal: look soon,
	// then less often.
	delay := 10 * time.Millisecond
	for time.Now().Before(deadline) {
		if s.follow(ctx, c.ID) {
			return nil
		}
		// follow finds the init; a failed lookup is tried again within
		// the grace period rather than taken for a kill.
		if w := s.watches.get(c.ID); w != nil && !signalled {
			signalled = w.init.Signal(syscall.SIGPWR) == nil
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
	if timeout > 0 && s.follow(ctx, c.ID) {
		return nil
	}
	if err := s.hardStop(ctx, c); err != nil {
		return err
	}
	s.watches.drop(c.ID)
	return s.updateContainer(c.ID, func(r *containerRecord) {
		if r.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			r.State, r.ExitCode, r.FinishedAt, r.Reason = runtimeapi.ContainerState_CONTAINER_EXITED, 128+int32(syscall.SIGKILL), time.Now().UnixNano(), "Error"
			r.Message = "killed: the program did not stop within " + timeout.String()
		}
	})
}

// hardStop stops a container at once; one that stopped meanwhile is fine.
func (s *Server) hardStop(ctx context.Context, c *containerRecord) error {
	err := s.pve().StopContainer(ctx, c.Node, c.VMID)
	if err == nil {
		return nil
	}
	if st, exists, serr := s.proxmoxStatus(ctx, c); serr == nil && (!exists || st.Status == "stopped") {
		return nil
	}
	return err
}

// stopUnsupervised asks Proxmox to shut the container down, which sends
// the halt signal and kills after the timeout. Proxmox reports no exit
// status, so it is the unknown one.
func (s *Server) stopUnsupervised(ctx context.Context, c *containerRecord, timeout time.Duration) error {
	st, exists, err := s.proxmoxStatus(ctx, c)
	if err != nil {
		return err
	}
	if exists && st.Status == "running" {
		if timeout <= 0 {
			err = s.pve().StopContainer(ctx, c.Node, c.VMID)
		} else {
			err = s.pve().ShutdownContainer(ctx, c.Node, c.VMID, int(max(timeout/time.Second, 1)), true)
		}
		if err != nil {
			// The program may have ended while Proxmox stopped it: the
			// task fails, the container is stopped all the same.
			if st, exists, serr := s.proxmoxStatus(ctx, c); serr != nil || (exists && st.Status == "running") {
				return err
			}
		}
	}
	return s.updateContainer(c.ID, func(r *containerRecord) {
		if r.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			r.State, r.ExitCode, r.FinishedAt, r.Reason = runtimeapi.ContainerState_CONTAINER_EXITED, unknownExitCode, time.Now().UnixNano(), "Unknown"
			r.Message = "stopped; Proxmox does not report the program's exit status (the console of CT " + strconv.Itoa(r.VMID) + " shows it)"
		}
	})
}

// ReopenContainerLog starts a new log file at the container's log path,
// after kubelet has moved the old one away (log rotation).
func (s *Server) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	defer s.lockContainer(req.GetContainerId())()
	c := s.container(req.GetContainerId())
	switch {
	case c == nil:
		return nil, status.Errorf(codes.NotFound, "container %q not found", req.GetContainerId())
	case c.State != runtimeapi.ContainerState_CONTAINER_RUNNING:
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is not running", c.ID)
	case !c.Supervised || s.cfg.LXC == nil:
		return &runtimeapi.ReopenContainerLogResponse{}, nil // nothing is written after the notice
	}
	if s.watches.get(c.ID) == nil && s.follow(ctx, c.ID) {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is not running", c.ID)
	}
	if err := s.reopenLog(c.ID); err != nil {
		return nil, status.Errorf(codes.Internal, "reopen the log of container %s: %v", c.ID, err)
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
