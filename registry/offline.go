package registry

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TagStore remembers the digest each registry tag last resolved to, keyed
// by the normalised reference (docker.io/library/alpine:3.20).
// *cache.Cache is one.
type TagStore interface {
	PutTag(ref string, d v1.Hash) error
	// Tag returns the digest and when the tag last resolved to it.
	Tag(ref string) (v1.Hash, time.Time, error)
}

// offlineSource serves a registry reference from the store alone.
type offlineSource struct {
	ref      Reference
	store    BlobStore
	tags     TagStore
	resolved time.Time
}

func (s *offlineSource) root(context.Context) (v1.Descriptor, []byte, error) {
	if d, ok := s.ref.digest(); ok {
		return v1.Descriptor{}, nil, fmt.Errorf("offline: manifest %s is not in the cache", d)
	}
	if s.tags == nil {
		return v1.Descriptor{}, nil, fmt.Errorf("offline: tags cannot be resolved without a record of them")
	}
	d, when, err := s.tags.Tag(s.ref.String())
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("offline: the tag has not been pulled into this cache (%w); pull it once while the registry is reachable", err)
	}
	raw, err := s.store.ReadBlob(d)
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("offline: the tag resolved to %s on %s, which is no longer in the cache: %w", d, when.Format(time.RFC3339), err)
	}
	mt, ok := sniffMediaType(raw)
	if !ok {
		return v1.Descriptor{}, nil, fmt.Errorf("offline: cached manifest %s is not a manifest", d)
	}
	s.resolved = when
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}, raw, nil
}

func (s *offlineSource) blob(_ context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	return nil, fmt.Errorf("offline: %s is not in the cache", d.Digest)
}

func (s *offlineSource) close() error { return nil }

// staleTag answers for a tag whose registry could not be reached with the
// digest it last resolved to, if the store still holds that manifest.
func (p *Puller) staleTag(ref Reference, cause error, r *Resolved) (v1.Descriptor, []byte, bool) {
	if _, isTag := ref.Name.(name.Tag); !isTag || ref.Transport != Docker || p.opts.Tags == nil || !unreachable(cause) {
		return v1.Descriptor{}, nil, false
	}
	d, when, err := p.opts.Tags.Tag(ref.String())
	if err != nil {
		return v1.Descriptor{}, nil, false
	}
	desc, raw, ok := p.storedManifest(d)
	if !ok {
		return v1.Descriptor{}, nil, false
	}
	r.FromCache, r.TagResolved = true, when
	p.log.Warn("registry unreachable; using the digest the tag last resolved to", "image", ref.String(),
		"digest", d.String(), "resolved", when.Format(time.RFC3339), "error", cause)
	return desc, raw, true
}
