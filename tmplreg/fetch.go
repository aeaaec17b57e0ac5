package tmplreg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// artifact is a template's manifest and config as read from a registry,
// checked against each other.
type artifact struct {
	raw    []byte
	digest v1.Hash
	m      *v1.Manifest
	cfg    *Config
}

// invalidError is an artifact that is not what the key tag promises: wrong
// types, sizes that do not add up, a config for another key. Such an
// artifact is refused, never used.
type invalidError struct {
	tag string
	err error
}

func (e *invalidError) Error() string { return fmt.Sprintf("artifact %s: %v", e.tag, e.err) }
func (e *invalidError) Unwrap() error { return e.err }

// lookupAt reads and checks the artifact under key's tag at e.
func (s *Store) lookupAt(ctx context.Context, e *registry.Endpoint, p *remote.Puller, key string) (*artifact, error) {
	tag := KeyTag(key)
	d, err := p.Get(ctx, e.Repo.Tag(tag))
	if err != nil {
		return nil, err
	}
	invalid := func(format string, args ...any) (*artifact, error) {
		return nil, &invalidError{tag: e.Repo.Tag(tag).String(), err: fmt.Errorf(format, args...)}
	}
	if d.Size > maxManifest {
		return invalid("manifest of %d bytes; the limit is %d", d.Size, maxManifest)
	}
	if d.MediaType != types.OCIManifestSchema1 {
		return invalid("a %s, not an OCI image manifest", d.MediaType)
	}
	m, err := v1.ParseManifest(bytes.NewReader(d.Manifest))
	if err != nil {
		return invalid("manifest: %v", err)
	}
	switch {
	case m.ArtifactType != ArtifactType:
		return invalid("artifactType %q, not %q", m.ArtifactType, ArtifactType)
	case m.Config.MediaType != ConfigMediaType:
		return invalid("config is a %q, not %q", m.Config.MediaType, ConfigMediaType)
	case m.Config.Size <= 0 || m.Config.Size > maxConfig:
		return invalid("config of %d bytes; the limit is %d", m.Config.Size, maxConfig)
	case len(m.Layers) == 0 || len(m.Layers) > maxChunks:
		return invalid("%d layers; want 1 to %d", len(m.Layers), maxChunks)
	case m.Annotations[AnnotationKey] != key:
		return invalid("annotated with key %q", m.Annotations[AnnotationKey])
	}
	var total int64
	for _, l := range m.Layers {
		if !strings.HasPrefix(string(l.MediaType), LayerMediaTypePrefix) || l.Size < 0 {
			return invalid("layer %s is a %q of %d bytes", l.Digest, l.MediaType, l.Size)
		}
		total += l.Size
	}
	raw, err := s.readBlob(ctx, e, m.Config, maxConfig)
	if err != nil {
		var ie *invalidError
		if errors.As(err, &ie) {
			ie.tag = e.Repo.Tag(tag).String()
		}
		return nil, err
	}
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return invalid("config: %v", err)
	}
	if err := cfg.check(total, len(m.Layers)); err != nil {
		return invalid("%v", err)
	}
	if cfg.Key != key {
		return invalid("config is for key %q", cfg.Key)
	}
	return &artifact{raw: d.Manifest, digest: d.Digest, m: m, cfg: &cfg}, nil
}

// readBlob reads a small blob whole, bounded and checked against its
// digest.
func (s *Store) readBlob(ctx context.Context, e *registry.Endpoint, d v1.Descriptor, limit int64) ([]byte, error) {
	l, err := remote.Layer(e.Repo.Digest(d.Digest.String()), e.RemoteOptions(ctx)...)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil && !isDigestError(err) {
		return nil, err
	}
	sum := sha256.Sum256(b)
	if int64(len(b)) != d.Size || hex.EncodeToString(sum[:]) != d.Digest.Hex {
		return nil, &invalidError{err: fmt.Errorf("blob %s: %d bytes hashing to sha256:%s; declared %d bytes", d.Digest, len(b), hex.EncodeToString(sum[:]), d.Size)}
	}
	return b, nil
}

// isDigestError is go-containerregistry's verifying reader refusing what
// it read; the check here says it with both digests.
func isDigestError(err error) bool {
	return strings.Contains(err.Error(), "error verifying")
}

// want checks an artifact's config against the image it is fetched for.
func want(cfg *Config, req template.RemoteRequest) error {
	res := req.Resolved
	switch {
	case cfg.Source.ManifestDigest != res.Digest.String():
		return fmt.Errorf("it was made from manifest %s, not %s", cfg.Source.ManifestDigest, res.Digest)
	case cfg.Source.ConfigDigest != res.Manifest.Config.Digest.String():
		return fmt.Errorf("it was made from config %s, not %s", cfg.Source.ConfigDigest, res.Manifest.Config.Digest)
	case cfg.Source.Platform != registry.PlatformString(res.Platform):
		return fmt.Errorf("it is for %s, not %s", cfg.Source.Platform, registry.PlatformString(res.Platform))
	case cfg.Settings != SettingsOf(req.Options):
		return fmt.Errorf("it was made with %+v, not %+v", cfg.Settings, SettingsOf(req.Options))
	case cfg.Meta.SHA256 != "" && cfg.Meta.SHA256 != cfg.SHA256:
		return fmt.Errorf("its metadata says sha256 %s, its config %s", cfg.Meta.SHA256, cfg.SHA256)
	}
	return nil
}

// FetchTemplate implements template.Remote: it looks the key's tag up at
// the mirrors, then the registry, and downloads the first valid artifact
// found, checking every blob and the whole file. A registry that refused
// access or could not be reached is not asked again by this Store.
func (s *Store) FetchTemplate(ctx context.Context, req template.RemoteRequest) (template.Meta, error) {
	if err := s.brokenErr(); err != nil {
		return template.Meta{}, fmt.Errorf("%w (not asked: %v)", template.ErrRemoteMiss, err)
	}
	eps, err := s.readEndpoints()
	if err != nil {
		return template.Meta{}, err
	}
	var errs []error
	for _, e := range eps {
		p, err := remote.NewPuller(e.RemoteOptions(ctx)...)
		if err != nil {
			return template.Meta{}, err
		}
		a, err := s.lookupAt(ctx, e, p, req.Key)
		if notFound(err) {
			continue
		}
		if err == nil {
			if werr := want(a.cfg, req); werr != nil {
				err = &invalidError{tag: e.Repo.Tag(KeyTag(req.Key)).String(), err: werr}
			}
		}
		if err == nil {
			err = s.download(ctx, e, a, filepath.Join(req.Dir, req.File))
			if err == nil {
				m := a.cfg.Meta
				m.File, m.Size, m.SHA256 = req.File, a.cfg.Size, a.cfg.SHA256
				return m, nil
			}
			os.Remove(filepath.Join(req.Dir, req.File))
		}
		if ctx.Err() != nil {
			return template.Meta{}, ctx.Err()
		}
		errs = append(errs, explain("look up templates in", e, err))
	}
	if len(errs) == 0 {
		return template.Meta{}, fmt.Errorf("%s:%s: %w", s.repo, KeyTag(req.Key), template.ErrRemoteMiss)
	}
	err = errors.Join(errs...)
	if unreachable(err) {
		s.setBroken(err)
	}
	return template.Meta{}, err
}

// Lookup returns the config of the template of key, without downloading
// the template: what it is, its file name, size and SHA-256. An error
// wrapping template.ErrRemoteMiss says the store has none.
func (s *Store) Lookup(ctx context.Context, key string) (*Config, error) {
	if err := s.brokenErr(); err != nil {
		return nil, fmt.Errorf("%w (not asked: %v)", template.ErrRemoteMiss, err)
	}
	eps, err := s.readEndpoints()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, e := range eps {
		p, err := remote.NewPuller(e.RemoteOptions(ctx)...)
		if err != nil {
			return nil, err
		}
		a, err := s.lookupAt(ctx, e, p, key)
		if err == nil {
			return a.cfg, nil
		}
		if !notFound(err) {
			errs = append(errs, explain("look up templates in", e, err))
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%s:%s: %w", s.repo, KeyTag(key), template.ErrRemoteMiss)
	}
	err = errors.Join(errs...)
	if unreachable(err) {
		s.setBroken(err)
	}
	return nil, err
}

// download writes the artifact's blobs, in order, into path, each checked
// against its digest and the whole against the config's SHA-256. A blob
// whose download breaks is fetched again from its start, within the
// retries.
func (s *Store) download(ctx context.Context, e *registry.Endpoint, a *artifact, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	whole := sha256.New()
	var off int64
	for _, l := range a.m.Layers {
		// The whole file's hash goes back to this point when the blob is
		// fetched again.
		state, err := whole.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return err
		}
		for attempt := 0; ; attempt++ {
			err = s.downloadBlob(ctx, e, l, io.MultiWriter(f, whole))
			if err == nil || ctx.Err() != nil || attempt >= s.opts.Retries || !brokeMidway(err) {
				break
			}
			s.log.Warn("template registry: blob download broke; fetching it again", "blob", l.Digest, "error", err)
			if _, err = f.Seek(off, io.SeekStart); err == nil {
				err = f.Truncate(off)
			}
			if err == nil {
				err = whole.(encoding.BinaryUnmarshaler).UnmarshalBinary(state)
			}
			if err != nil {
				break
			}
		}
		if err != nil {
			return err
		}
		off += l.Size
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != a.cfg.SHA256 {
		return &invalidError{tag: a.digest.String(), err: fmt.Errorf("the template's blobs make a file hashing to sha256:%s, the config says %s", got, a.cfg.SHA256)}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// brokeMidway says whether a blob download failed while its body was
// coming (the connection broke, ended early or stalled): worth fetching
// again. An answer the registry gave, and a request the transport
// already retried, are not.
func brokeMidway(err error) bool {
	var te *transport.Error
	return !isInvalid(err) && !errors.As(err, new(*registry.GaveUpError)) && !errors.As(err, &te)
}

func isInvalid(err error) bool {
	var ie *invalidError
	return errors.As(err, &ie)
}

// downloadBlob writes blob l to w, bounded by its declared size, and
// checks its digest.
func (s *Store) downloadBlob(ctx context.Context, e *registry.Endpoint, l v1.Descriptor, w io.Writer) error {
	rl, err := remote.Layer(e.Repo.Digest(l.Digest.String()), e.RemoteOptions(ctx)...)
	if err != nil {
		return err
	}
	rc, err := rl.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(w, h), io.LimitReader(rc, l.Size+1), make([]byte, 1<<20))
	if err != nil && !isDigestError(err) {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != l.Size || got != l.Digest.Hex {
		return &invalidError{tag: l.Digest.String(), err: fmt.Errorf("blob %s: %d bytes hashing to sha256:%s; declared %d bytes", l.Digest, n, got, l.Size)}
	}
	return nil
}

func (s *Store) brokenErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil && time.Since(s.brokenAt) > brokenFor {
		s.broken = nil
	}
	return s.broken
}

func (s *Store) setBroken(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken == nil {
		s.broken, s.brokenAt = err, time.Now()
		s.log.Warn("template registry: not asking it again for a while", "registry", s.repo.RegistryStr(), "for", brokenFor, "error", err)
	}
}
