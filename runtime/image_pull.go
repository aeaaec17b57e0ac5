package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// PullImage pulls an image, converts it into a template (from the cache when
// it was converted before), puts the template into the store and records
// the image under the name it was pulled by. Concurrent pulls of one image
// with the same credentials do the work once and share its result (kubelet
// pulls an image for every pod that starts at once with imagePullPolicy
// Always); the cache's locks cover other processes. A cancelled pull
// records nothing (a template it already put into the store stays there,
// and the next pull finds it); those that shared it pull again.
func (s *Server) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	start := time.Now()
	id, err := s.pull(ctx, req)
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.cfg.Metrics.pulls.WithLabelValues(result).Inc()
	s.cfg.Metrics.pullTime.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, grpcError(err)
	}
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}

func (s *Server) pull(ctx context.Context, req *runtimeapi.PullImageRequest) (string, error) {
	ref, err := parseImage(req.GetImage().GetImage())
	if err != nil {
		return "", err
	}
	auth, err := authFor(req.GetAuth(), ref)
	if err != nil {
		return "", err
	}
	key := ref.String()
	if auth != nil {
		b, _ := json.Marshal(auth)
		sum := sha256.Sum256(b)
		key += "\x00" + hex.EncodeToString(sum[:])
	}
	for {
		ch := s.pulls.DoChan(key, func() (any, error) { return s.pullOnce(ctx, ref, auth) })
		select {
		case r := <-ch:
			if r.Err != nil && r.Shared && ctx.Err() == nil && (errors.Is(r.Err, context.Canceled) || errors.Is(r.Err, context.DeadlineExceeded)) {
				continue // the caller whose pull it was gave up; this one did not
			}
			if r.Err != nil {
				return "", r.Err
			}
			return r.Val.(string), nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// pullOnce is one pull of ref, and its record.
func (s *Server) pullOnce(ctx context.Context, ref registry.Reference, auth *authn.AuthConfig) (string, error) {
	opts := s.cfg.Puller
	opts.Auth = auth
	b := *s.cfg.Builder
	b.Puller = registry.NewPuller(b.Cache, opts)
	// The result holds its template (and blobs) in the cache until the
	// image is recorded: a RemoveImage or prune meanwhile, here or in
	// another process, leaves them alone.
	var volid string
	unlock := func() {}
	defer func() { unlock() }()
	res, err := b.ConvertThen(ctx, ref, s.cfg.Convert, func(ctx context.Context, res *template.Result) error {
		name := template.StorageName(res.Entry.File, res.Entry.SHA256)
		// A removal of another image with this template must not delete
		// it between the store and the record.
		unlock()
		unlock = s.lockTemplate(name)
		if _, api := s.cfg.Store.(*PVEStore); api {
			// An upload is time spent in Proxmox, not the daemon's own.
			defer s.pve().timed(ctx, "upload")()
		}
		var err error
		volid, err = s.cfg.Store.Put(ctx, res.Path(), name, res.Entry.SHA256, res.Entry.Size)
		return err
	})
	if err != nil {
		return "", err
	}
	defer res.Close()
	switch {
	case res.Hit:
		s.cfg.Metrics.cacheHits.Inc()
	case res.Fetched:
		s.cfg.Metrics.fetched.Inc()
	default:
		s.cfg.Metrics.conversions.Inc()
	}
	name := template.StorageName(res.Entry.File, res.Entry.SHA256)
	if err := ctx.Err(); err != nil {
		return "", err
	}
	m := res.Meta
	tag, digest := "", ""
	if t := ref.TagOrDigest(); t != "" && !isDigest(t) {
		tag = ref.String()
	}
	top := m.ManifestDigest
	if m.IndexDigest != "" {
		top = m.IndexDigest
	}
	digest = ref.Repository() + "@" + top
	err = s.state.update(func(st *stateFile) error {
		img := st.Images[m.ConfigDigest]
		if img == nil {
			img = &imageRecord{ID: m.ConfigDigest}
			st.Images[m.ConfigDigest] = img
		}
		// A tag names one image: it leaves the image it named before.
		for _, other := range st.Images {
			if other != img {
				other.RepoTags = slices.DeleteFunc(other.RepoTags, func(t string) bool { return t == tag })
			}
		}
		if tag != "" && !slices.Contains(img.RepoTags, tag) {
			img.RepoTags = append(img.RepoTags, tag)
			slices.Sort(img.RepoTags)
		}
		if !slices.Contains(img.RepoDigests, digest) {
			img.RepoDigests = append(img.RepoDigests, digest)
			slices.Sort(img.RepoDigests)
		}
		img.Size, img.User, img.Template, img.Volid, img.CacheKey = res.Entry.Size, m.Config.User, name, volid, res.Entry.Key
		img.Pinned = s.pinned(img)
		return nil
	})
	if err != nil {
		return "", err
	}
	return m.ConfigDigest, nil
}

func isDigest(s string) bool { _, ok := isImageID(s); return ok }

func (s *Server) pinned(img *imageRecord) bool {
	for _, p := range s.cfg.PinnedImages {
		r, err := registry.ParseReference(p, nil)
		if err == nil && (slices.Contains(img.RepoTags, r.String()) || slices.Contains(img.RepoDigests, r.String())) {
			return true
		}
	}
	return false
}
