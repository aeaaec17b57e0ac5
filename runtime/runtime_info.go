package runtime

import (
	"context"
	"encoding/json"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Version answers kubelet's handshake: it accepts only version "0.1.0"
// and all four fields set (cri.md §1.4).
func (s *Server) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "pve-image", RuntimeVersion: s.cfg.Version, RuntimeApiVersion: "v1"}, nil
}

// Status reports RuntimeReady (Proxmox answers, when one is configured)
// and NetworkReady (containers get their NICs from Proxmox bridges, so
// there is no network plugin to wait for).
func (s *Server) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	rt := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	if s.cfg.Proxmox != nil {
		if _, err := s.cfg.Proxmox.Nodes(ctx); err != nil {
			rt.Status, rt.Reason, rt.Message = false, "ProxmoxUnreachable", err.Error()
		}
	}
	resp := &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		rt, {Type: runtimeapi.NetworkReady, Status: true},
	}}}
	if req.GetVerbose() {
		info := map[string]any{"node": s.cfg.Node, "bridge": s.cfg.Bridge, "proxmox": s.cfg.Proxmox != nil}
		if s.cfg.Proxmox != nil {
			info["proxmoxVersion"] = s.cfg.Proxmox.Version().Version
		}
		b, _ := json.Marshal(info)
		resp.Info = map[string]string{"config": string(b)}
	}
	return resp, nil
}

// RuntimeConfig tells kubelet the cgroup driver; kubelet 1.37 refuses
// runtimes that do not answer (cri.md §1.5).
func (s *Server) RuntimeConfig(context.Context, *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	d := runtimeapi.CgroupDriver_SYSTEMD
	if s.cfg.CgroupDriver == "cgroupfs" {
		d = runtimeapi.CgroupDriver_CGROUPFS
	}
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: d}}, nil
}

// UpdateRuntimeConfig takes the pod CIDR kubelet sends; Proxmox's bridges
// do the addressing, so there is nothing to change.
func (s *Server) UpdateRuntimeConfig(context.Context, *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}

const noStreaming = "pve-image runs containers through the Proxmox API, which has no exec, attach or port-forward for API tokens; use `pct enter`/`pct exec` on the node"

// Exec, ExecSync, Attach and PortForward are not implemented (noStreaming).
func (s *Server) Exec(context.Context, *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	return nil, status.Error(codes.Unimplemented, "Exec: "+noStreaming)
}

func (s *Server) ExecSync(context.Context, *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	return nil, status.Error(codes.Unimplemented, "ExecSync: "+noStreaming)
}

func (s *Server) Attach(context.Context, *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	return nil, status.Error(codes.Unimplemented, "Attach: "+noStreaming)
}

func (s *Server) PortForward(context.Context, *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	return nil, status.Error(codes.Unimplemented, "PortForward: "+noStreaming)
}

// ReopenContainerLog has nothing to reopen: container output goes to the
// Proxmox console, not to log files.
func (s *Server) ReopenContainerLog(context.Context, *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
