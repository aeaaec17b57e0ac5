package runtime

import (
	"bytes"
	"context"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/template"
)

// RemoveImage removes an image, found by any of its names, with all its
// tags, its template and what the cache holds for it alone; removing a
// missing image succeeds.
func (s *Server) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	var tmpl string
	s.state.view(func(st *stateFile) {
		if img := s.findImage(st, req.GetImage().GetImage()); img != nil {
			tmpl = img.Template
		}
	})
	// Held until the template is gone, so that a pull recording an image
	// with the same template waits, and then puts it back.
	defer s.lockTemplate(tmpl)()
	var gone *imageRecord
	err := s.state.update(func(st *stateFile) error {
		if img := s.findImage(st, req.GetImage().GetImage()); img != nil {
			gone = img
			delete(st.Images, img.ID)
			return nil
		}
		return errUnchanged
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
	if gone != nil {
		s.dropCached(ctx, gone)
		if gone.Volid != "" && s.cfg.Proxmox != nil {
			// Its template containers go now unless clones use them;
			// the last clone's removal takes them then.
			s.dropBases(ctx, gone.Volid)
		}
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// dropCached removes what the conversion cache holds for this image alone:
// its template and the blobs no remaining image uses. kubelet's image
// garbage collection removes images to free the disk ImageFsInfo reports,
// and the cache is on it. What a pull (here or in another process) holds
// meanwhile stays: the cache skips entries in use.
func (s *Server) dropCached(ctx context.Context, gone *imageRecord) {
	var rest []string
	s.state.view(func(st *stateFile) {
		for _, img := range st.Images {
			rest = append(rest, img.CacheKey)
		}
	})
	if slices.Contains(rest, gone.CacheKey) || gone.CacheKey == "" {
		return
	}
	c := s.cfg.Builder.Cache
	needed := map[v1.Hash]bool{}
	for _, key := range rest {
		for _, h := range s.cachedBlobs(ctx, key) {
			needed[h] = true
		}
	}
	// Read before the removal, and released: a lock of our own on the
	// template would make the cache keep it as in use.
	blobs := s.cachedBlobs(ctx, gone.CacheKey)
	if ok, err := c.RemoveTemplate(gone.CacheKey); err != nil {
		s.log.Warn("cached template stays", "key", gone.CacheKey, "err", err)
	} else if !ok {
		s.log.Debug("cached template stays: in use", "key", gone.CacheKey)
	}
	for _, h := range blobs {
		if needed[h] {
			continue
		}
		if ok, err := c.RemoveBlob(h); err != nil {
			s.log.Warn("cached blob stays", "blob", h, "err", err)
		} else if !ok {
			s.log.Debug("cached blob stays: in use", "blob", h)
		}
	}
}

// cachedBlobs lists the blobs the cached template of key was made from:
// index, manifest, config and layers. The template is locked while its
// metadata is read, and looked up without marking it used: a removal must
// not refresh what prune ages.
func (s *Server) cachedBlobs(ctx context.Context, key string) []v1.Hash {
	if key == "" {
		return nil
	}
	hold := cache.NewHold()
	defer hold.Close()
	c := s.cfg.Builder.Cache
	e, err := c.LookupTemplate(cache.WithHold(ctx, hold), key)
	if err != nil {
		return nil
	}
	m, err := template.ReadMeta(e.Dir)
	if err != nil {
		return nil
	}
	var out []v1.Hash
	for _, d := range []string{m.IndexDigest, m.ManifestDigest, m.ConfigDigest} {
		if h, err := v1.NewHash(d); err == nil {
			out = append(out, h)
		}
	}
	mh, err := v1.NewHash(m.ManifestDigest)
	if err != nil {
		return out
	}
	b, err := c.ReadBlob(mh)
	if err != nil {
		return out
	}
	man, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return out
	}
	for _, l := range man.Layers {
		out = append(out, l.Digest)
	}
	return out
}
