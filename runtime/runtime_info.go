package runtime

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Version answers kubelet's handshake: it accepts only version "0.1.0"
// and all four fields set (cri.md §1.4).
func (s *Server) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "pve-image", RuntimeVersion: s.cfg.Version, RuntimeApiVersion: "v1"}, nil
}

// Status reports RuntimeReady (Proxmox answers the node's container list,
// when a Proxmox is configured: the same cached list every other call
// uses) and NetworkReady (a pod range to give pods addresses from).
func (s *Server) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	rt := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	nw := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if s.cfg.Proxmox != nil {
		if _, err := s.refresh(ctx); err != nil {
			rt.Status, rt.Reason, rt.Message = false, "ProxmoxUnreachable", err.Error()
		}
		var err error
		s.state.view(func(st *stateFile) { _, err = s.podNetwork(st) })
		if err != nil {
			nw.Status, nw.Reason, nw.Message = false, "NetworkPluginNotReady", status.Convert(err).Message()
		}
	}
	resp := &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{rt, nw}}}
	if req.GetVerbose() {
		info := map[string]any{"node": s.cfg.Node, "bridge": s.cfg.Bridge, "proxmox": s.cfg.Proxmox != nil,
			"onNode": s.cfg.LXC != nil, "notOnNode": s.cfg.LXCUnavailable}
		if s.cfg.Proxmox != nil {
			info["proxmoxVersion"] = s.cfg.Proxmox.Version().Version
		}
		s.state.view(func(st *stateFile) {
			if n, err := s.podNetwork(st); err == nil {
				info["podCIDRs"], info["podGateways"] = fmt.Sprint(n.prefixes), fmt.Sprint(n.gateways)
			}
		})
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

// UpdateRuntimeConfig takes the pod CIDR kubelet sends (its podCIDR, or
// the node's): pods get addresses from it unless the daemon was given a
// range of its own.
func (s *Server) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	cidr := req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()
	if cidr == "" {
		return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
	}
	if _, err := ParsePodCIDRs(cidr); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(s.cfg.PodCIDRs) > 0 {
		s.log.Info("kubelet's pod CIDR is not used: the daemon has its own", "kubelet", cidr, "daemon", s.cfg.PodCIDRs)
	}
	err := s.state.update(func(st *stateFile) error {
		if st.PodCIDR == cidr {
			return errUnchanged
		}
		st.PodCIDR = cidr
		return nil
	})
	return &runtimeapi.UpdateRuntimeConfigResponse{}, grpcError(err)
}
