package runtime

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListImages lists the images, in ID order; a filter names one image by ID,
// tag or digest.
func (s *Server) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	resp := &runtimeapi.ListImagesResponse{}
	s.state.view(func(st *stateFile) {
		if f := req.GetFilter().GetImage().GetImage(); f != "" {
			if img := s.findImage(st, f); img != nil {
				resp.Images = append(resp.Images, img.toProto())
			}
			return
		}
		for _, id := range sortedKeys(st.Images) {
			resp.Images = append(resp.Images, st.Images[id].toProto())
		}
	})
	return resp, nil
}
