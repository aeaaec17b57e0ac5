package runtime

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemoveImage removes an image, found by any of its names, with all its
// tags and its template; removing a missing image succeeds.
func (s *Server) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	var gone *imageRecord
	err := s.state.update(func(st *stateFile) error {
		if img := s.findImage(st, req.GetImage().GetImage()); img != nil {
			gone = img
			delete(st.Images, img.ID)
		}
		return nil
	})
	if err != nil {
		return nil, grpcError(err)
	}
	if gone != nil && gone.Template != "" {
		inUse := false
		s.state.view(func(st *stateFile) {
			for _, other := range st.Images {
				inUse = inUse || other.Template == gone.Template
			}
		})
		if !inUse {
			if err := s.cfg.Store.Remove(ctx, gone.Template); err != nil {
				s.log.Warn("template stays in the store", "template", gone.Template, "err", err)
			}
		}
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}
