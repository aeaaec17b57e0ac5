package runtime

import (
	"bytes"
	"context"
	"os"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

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
		s.dropCached(gone)
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// dropCached removes what the conversion cache holds for this image alone:
// its template and the blobs no remaining image uses. kubelet's image
// garbage collection removes images to free the disk ImageFsInfo reports,
// and the cache is on it.
func (s *Server) dropCached(gone *imageRecord) {
	var rest []string
	s.state.view(func(st *stateFile) {
		for _, img := range st.Images {
			rest = append(rest, img.CacheKey)
		}
	})
	if slices.Contains(rest, gone.CacheKey) {
		return
	}
	// Listing the entries reads them without marking them used, as
	// Cache.Template would: a removal must not refresh what prune ages.
	c := s.cfg.Builder.Cache
	entries, err := c.Templates()
	if err != nil {
		s.log.Warn("cached template stays", "key", gone.CacheKey, "err", err)
		return
	}
	dirs := map[string]string{}
	for _, e := range entries {
		dirs[e.Key] = e.Dir
	}
	needed := map[v1.Hash]bool{}
	for _, key := range rest {
		for _, h := range s.cachedBlobs(dirs[key]) {
			needed[h] = true
		}
	}
	blobs := s.cachedBlobs(dirs[gone.CacheKey])
	if _, err := c.RemoveTemplate(gone.CacheKey); err != nil {
		s.log.Warn("cached template stays", "key", gone.CacheKey, "err", err)
	}
	for _, h := range blobs {
		if !needed[h] {
			if _, err := c.RemoveBlob(h); err != nil {
				s.log.Warn("cached blob stays", "blob", h, "err", err)
			}
		}
	}
}

// cachedBlobs lists the blobs a cached template (its directory) was made
// from: index, manifest, config and layers.
func (s *Server) cachedBlobs(dir string) []v1.Hash {
	if dir == "" {
		return nil
	}
	m, err := template.ReadMeta(dir)
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
	b, err := os.ReadFile(s.cfg.Builder.Cache.BlobPath(mh))
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
