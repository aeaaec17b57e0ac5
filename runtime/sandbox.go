package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func newID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// RunPodSandbox records a pod, a group of containers that carry its uid,
// and gives it its addresses. It creates nothing on Proxmox until a
// container is created; what a Proxmox container cannot give the pod is
// refused here (checkPodAsks).
func (s *Server) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	c := req.GetConfig()
	if c.GetMetadata().GetName() == "" || c.GetMetadata().GetUid() == "" {
		return nil, status.Error(codes.InvalidArgument, "pod sandbox config needs metadata with name and uid")
	}
	if h := req.GetRuntimeHandler(); h != "" && h != "pve-image" {
		return nil, status.Errorf(codes.InvalidArgument, "unknown runtime handler %q (only pve-image)", h)
	}
	if err := checkPodAsks(c); err != nil {
		return nil, err
	}
	ns := c.GetLinux().GetSecurityContext().GetNamespaceOptions()
	sb := &sandboxRecord{ID: newID(), Metadata: c.GetMetadata(), State: runtimeapi.PodSandboxState_SANDBOX_READY,
		CreatedAt: time.Now().UnixNano(), Labels: c.GetLabels(), Annotations: c.GetAnnotations(),
		Hostname: c.GetHostname(), LogDir: c.GetLogDirectory(), Handler: req.GetRuntimeHandler(), DNS: c.GetDnsConfig(),
		Namespaces: &runtimeapi.NamespaceOption{Network: ns.GetNetwork(), Pid: ns.GetPid(), Ipc: ns.GetIpc()}}
	err := s.state.update(func(st *stateFile) error {
		net, err := s.podNetwork(st)
		if err != nil {
			return err
		}
		used := map[netip.Addr]bool{}
		for _, other := range st.Sandboxes {
			if other.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				continue
			}
			for _, ip := range other.IPs {
				if p, err := netip.ParsePrefix(ip); err == nil {
					used[p.Addr()] = true
				}
			}
		}
		ips, err := net.allocate(used)
		if err != nil {
			return err
		}
		for _, p := range ips {
			gw, _ := net.gateway(p.Addr())
			sb.IPs, sb.Gateways = append(sb.IPs, p.String()), append(sb.Gateways, gw.String())
		}
		st.Sandboxes[sb.ID] = sb
		return nil
	})
	if err != nil {
		return nil, grpcError(err)
	}
	s.log.Info("pod sandbox", "pod", c.GetMetadata().GetNamespace()+"/"+c.GetMetadata().GetName(), "id", sb.ID[:12], "ips", sb.IPs)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: sb.ID}, nil
}

// podNetwork is the daemon's pod ranges, else kubelet's.
func (s *Server) podNetwork(st *stateFile) (*podNetwork, error) {
	prefixes := s.cfg.PodCIDRs
	if len(prefixes) == 0 && st.PodCIDR != "" {
		var err error
		if prefixes, err = ParsePodCIDRs(st.PodCIDR); err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "kubelet's pod CIDR: %v", err)
		}
	}
	if len(prefixes) == 0 {
		return nil, status.Error(codes.FailedPrecondition, "no pod network: pve-image cri gives pods addresses from a pod range on the bridge, and has none (give --pod-cidr, or set podCIDR in kubelet's configuration or on the node)")
	}
	return newPodNetwork(prefixes, s.cfg.PodGateways)
}

func (s *Server) sandboxContainers(id string) []string {
	var ids []string
	s.state.view(func(st *stateFile) {
		for _, cid := range sortedKeys(st.Containers) {
			if st.Containers[cid].SandboxID == id {
				ids = append(ids, cid)
			}
		}
	})
	return ids
}

// StopPodSandbox stops the pod's containers; stopping a stopped or missing
// pod succeeds.
func (s *Server) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	id := req.GetPodSandboxId()
	for _, cid := range s.sandboxContainers(id) {
		if _, err := s.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: cid, Timeout: 10}); err != nil {
			return nil, err
		}
	}
	err := s.state.update(func(st *stateFile) error {
		if sb := st.Sandboxes[id]; sb != nil {
			sb.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		}
		return nil
	})
	return &runtimeapi.StopPodSandboxResponse{}, grpcError(err)
}

// RemovePodSandbox removes the pod's containers and the pod; removing a
// missing pod succeeds.
func (s *Server) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	id := req.GetPodSandboxId()
	for _, cid := range s.sandboxContainers(id) {
		if _, err := s.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cid}); err != nil {
			return nil, err
		}
	}
	err := s.state.update(func(st *stateFile) error { delete(st.Sandboxes, id); return nil })
	return &runtimeapi.RemovePodSandboxResponse{}, grpcError(err)
}

func (sb *sandboxRecord) toProto() *runtimeapi.PodSandbox {
	return &runtimeapi.PodSandbox{Id: sb.ID, Metadata: sb.Metadata, State: sb.State, CreatedAt: sb.CreatedAt,
		Labels: sb.Labels, Annotations: sb.Annotations, RuntimeHandler: sb.Handler}
}

// PodSandboxStatus describes a pod, with its addresses and the namespace
// modes it asked for (kubelet starts a pod again when either is off); a
// missing pod is NotFound.
func (s *Server) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	var sb *sandboxRecord
	s.state.view(func(st *stateFile) {
		if x := st.Sandboxes[req.GetPodSandboxId()]; x != nil {
			cp := *x
			sb = &cp
		}
	})
	if sb == nil {
		return nil, status.Errorf(codes.NotFound, "pod sandbox %q not found", req.GetPodSandboxId())
	}
	net := &runtimeapi.PodSandboxNetworkStatus{}
	for i, ip := range sb.IPs {
		addr := ip
		if p, err := netip.ParsePrefix(ip); err == nil {
			addr = p.Addr().String()
		}
		if i == 0 {
			net.Ip = addr
		} else {
			net.AdditionalIps = append(net.AdditionalIps, &runtimeapi.PodIP{Ip: addr})
		}
	}
	ns := sb.Namespaces
	if ns == nil {
		ns = &runtimeapi.NamespaceOption{}
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{
		Id: sb.ID, Metadata: sb.Metadata, State: sb.State, CreatedAt: sb.CreatedAt, Labels: sb.Labels,
		Annotations: sb.Annotations, RuntimeHandler: sb.Handler, Network: net,
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: ns}},
	}}
	if req.GetVerbose() {
		info := map[string]any{"ips": sb.IPs, "gateways": sb.Gateways, "bridge": s.cfg.Bridge, "node": s.cfg.Node}
		if ifs := s.podInterfaces(ctx, sb.ID); ifs != nil {
			info["interfaces"] = ifs
		}
		b, _ := json.Marshal(info)
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

// podInterface is a NIC of the pod's running container as Proxmox's
// interfaces endpoint reports it.
type podInterface struct {
	Name      string   `json:"name"`
	HWAddr    string   `json:"hwaddr"`
	Addresses []string `json:"addresses"`
}

// podInterfaces asks Proxmox which addresses the pod's running container
// has (GET .../interfaces: `ip a` in its network namespace), for verbose
// status only: crictl inspectp shows them, with what the container's own
// setup added (an IPv6 link-local address, a system image's addresses).
// The pod's address kubelet sees stays the allocated one, known before any
// container exists; kubelet asks for status every second, and that must
// not cost a Proxmox call per pod. nil when no container runs or Proxmox
// does not answer.
func (s *Server) podInterfaces(ctx context.Context, sandboxID string) []podInterface {
	if s.cfg.Proxmox == nil {
		return nil
	}
	var node string
	var vmid int
	s.state.view(func(st *stateFile) {
		for _, id := range sortedKeys(st.Containers) {
			if c := st.Containers[id]; c.SandboxID == sandboxID && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				node, vmid = c.Node, c.VMID
			}
		}
	})
	if vmid == 0 {
		return nil
	}
	ifs, err := s.pve().Interfaces(ctx, node, vmid)
	if err != nil {
		s.log.Warn("interfaces of the pod's container", "vmid", vmid, "err", err)
		return nil
	}
	out := []podInterface{}
	for _, i := range ifs {
		if i.Name == "lo" {
			continue
		}
		pi := podInterface{Name: i.Name, HWAddr: i.HWAddr, Addresses: []string{}}
		for _, a := range i.Addresses {
			pi.Addresses = append(pi.Addresses, a.CIDR())
		}
		out = append(out, pi)
	}
	return out
}

// ListPodSandbox lists pods, filtered by id, state and labels.
func (s *Server) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	resp := &runtimeapi.ListPodSandboxResponse{}
	s.state.view(func(st *stateFile) {
		for _, id := range sortedKeys(st.Sandboxes) {
			sb := st.Sandboxes[id]
			if f != nil && ((f.Id != "" && f.Id != id) || (f.State != nil && f.State.State != sb.State) || !matchLabels(sb.Labels, f.LabelSelector)) {
				continue
			}
			resp.Items = append(resp.Items, sb.toProto())
		}
	})
	return resp, nil
}

// matchLabels reports whether have holds every label of want, as
// containerd filters: a label must be present, even with an empty value.
func matchLabels(have, want map[string]string) bool {
	for k, v := range want {
		if x, ok := have[k]; !ok || x != v {
			return false
		}
	}
	return true
}
