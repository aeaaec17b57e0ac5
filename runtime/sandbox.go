package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

// RunPodSandbox records a pod: a group of containers that carry its uid. It
// creates nothing on Proxmox until a container is created.
func (s *Server) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	c := req.GetConfig()
	if c.GetMetadata().GetName() == "" || c.GetMetadata().GetUid() == "" {
		return nil, status.Error(codes.InvalidArgument, "pod sandbox config needs metadata with name and uid")
	}
	if h := req.GetRuntimeHandler(); h != "" && h != "pve-image" {
		return nil, status.Errorf(codes.InvalidArgument, "unknown runtime handler %q (only pve-image)", h)
	}
	sb := &sandboxRecord{ID: newID(), Metadata: c.GetMetadata(), State: runtimeapi.PodSandboxState_SANDBOX_READY,
		CreatedAt: time.Now().UnixNano(), Labels: c.GetLabels(), Annotations: c.GetAnnotations(),
		Hostname: c.GetHostname(), LogDir: c.GetLogDirectory(), Handler: req.GetRuntimeHandler()}
	if err := s.state.update(func(st *stateFile) error { st.Sandboxes[sb.ID] = sb; return nil }); err != nil {
		return nil, grpcError(err)
	}
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: sb.ID}, nil
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

// PodSandboxStatus describes a pod; a missing pod is NotFound.
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
	return &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{
		Id: sb.ID, Metadata: sb.Metadata, State: sb.State, CreatedAt: sb.CreatedAt, Labels: sb.Labels,
		Annotations: sb.Annotations, RuntimeHandler: sb.Handler, Network: &runtimeapi.PodSandboxNetworkStatus{},
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{}}},
	}}, nil
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
