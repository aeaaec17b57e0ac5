package runtime

import (
	"context"
	"encoding/json"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/template"
)

// ImageStatus describes an image found by ID, tag or digest; a missing
// image is a response without one, not an error. Verbose adds the
// template's metadata under "info".
func (s *Server) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	var img *imageRecord
	s.state.view(func(st *stateFile) {
		if found := s.findImage(st, req.GetImage().GetImage()); found != nil {
			cp := *found
			img = &cp
		}
	})
	if img == nil {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	resp := &runtimeapi.ImageStatusResponse{Image: img.toProto()}
	if req.GetVerbose() {
		info := map[string]any{"template": img.Template, "volid": img.Volid}
		// Held while its metadata is read, so that a removal racing this
		// status cannot take the directory in between; looked up without
		// marking it used, as a status is no use.
		hold := cache.NewHold()
		defer hold.Close()
		if e, err := s.cfg.Builder.Cache.LookupTemplate(cache.WithHold(ctx, hold), img.CacheKey); err == nil {
			if m, err := template.ReadMeta(e.Dir); err == nil {
				info["meta"] = m
			}
		}
		b, _ := json.Marshal(info)
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}
