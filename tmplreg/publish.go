package tmplreg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/internal/ctxio"
	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// Template is a template file to publish.
type Template struct {
	// Key is the cache key it was built under (template.Builder.Key); ""
	// publishes it under human tags only, for a template file whose key
	// is not known.
	Key string
	// Path is the file; Meta its metadata with File, Size and SHA256 those
	// of the file.
	Path string
	Meta template.Meta
	// Settings and Encoder are what it was converted with.
	Settings Settings
	Encoder  string
}

// TemplateOf describes a converted template for publishing.
func TemplateOf(r *template.Result, opts template.Options) Template {
	m := r.Meta
	m.File, m.Size, m.SHA256 = r.Entry.File, r.Entry.Size, r.Entry.SHA256
	return Template{Key: r.Entry.Key, Path: r.Path(), Meta: m, Settings: SettingsOf(opts), Encoder: opts.Compression.Encoder()}
}

// PublishOptions say how to tag a published template.
type PublishOptions struct {
	// Tag is the human tag of the index of the source tag's platforms;
	// "" derives it from the file name (<name>_<tag>). The platform's own
	// artifact gets Tag_<arch>.
	Tag string
	// NoHumanTags publishes under the key tag alone.
	NoHumanTags bool
	// Siblings are other platforms the source tag was (or will be)
	// published for: their artifacts, when there, join the index.
	Siblings []v1.Platform
}

// Published says what Publish did.
type Published struct {
	// Ref is REGISTRY/REPO@sha256:... of the template's manifest.
	Ref    string
	Digest v1.Hash
	// Tags are the tags now naming it (or the index holding it).
	Tags []string
	// Uploaded is false when the registry held the template already.
	Uploaded bool
}

// Publish stores t in the registry: its blobs, then its manifest under
// KeyTag (when t has a key), then the human tags. A registry refusing any
// of it leaves no tag pointing at anything incomplete: blobs go first, and
// manifests are only accepted by registries once their blobs are there.
func (s *Store) Publish(ctx context.Context, t Template, po PublishOptions) (*Published, error) {
	e, err := s.upstream()
	if err != nil {
		return nil, err
	}
	pusher, err := remote.NewPusher(e.RemoteOptions(ctx)...)
	if err != nil {
		return nil, explain("push templates to", e, err)
	}
	puller, err := remote.NewPuller(e.RemoteOptions(ctx)...)
	if err != nil {
		return nil, explain("push templates to", e, err)
	}
	cfg := s.configOf(t)
	indexTag, platTag := "", ""
	if !po.NoHumanTags {
		if indexTag, platTag, err = humanTagsFor(t, po.Tag); err != nil {
			return nil, err
		}
	}
	if t.Key == "" && platTag == "" {
		return nil, fmt.Errorf("template %s: no key and no tag to publish it under", t.Meta.File)
	}
	out := &Published{}
	raw, have, err := s.existing(ctx, e, puller, t)
	if err != nil {
		return nil, err
	}
	if !have {
		if raw, err = s.upload(ctx, e, pusher, t, cfg); err != nil {
			return nil, err
		}
		out.Uploaded = true
	}
	m := rawManifest{raw: raw, mt: types.OCIManifestSchema1}
	out.Digest, _, _ = v1.SHA256(bytes.NewReader(raw))
	out.Ref = e.Repo.Digest(out.Digest.String()).String()
	var tags []string
	if t.Key != "" {
		tags = append(tags, KeyTag(t.Key))
	}
	if platTag != "" {
		tags = append(tags, platTag)
	}
	for _, tag := range tags {
		if tag == KeyTag(t.Key) && have {
			continue // found under it
		}
		if err := pusher.Put(ctx, e.Repo.Tag(tag), m); err != nil {
			return nil, explain("push templates to", e, err)
		}
	}
	out.Tags = tags
	if indexTag != "" {
		if err := s.composeIndex(ctx, e, pusher, puller, indexTag, cfg, po.Siblings); err != nil {
			return out, err
		}
		out.Tags = append(out.Tags, indexTag)
	}
	s.log.Debug("published template", "template", t.Meta.File, "ref", out.Ref, "tags", out.Tags, "uploaded", out.Uploaded)
	return out, nil
}

// humanTagsFor is the index tag and the platform tag for t. A template
// whose platform is unknown (not made by pve-image) is tagged with tag
// alone, and no index.
func humanTagsFor(t Template, tag string) (index, platform string, err error) {
	if t.Meta.Platform == "" {
		if tag == "" || !ValidTag(tag) {
			return "", "", fmt.Errorf("template %s says nothing of its image; give the tag to publish it under (--to REGISTRY/REPO:TAG)", t.Meta.File)
		}
		return "", tag, nil
	}
	p, err := registry.ParsePlatform(t.Meta.Platform)
	if err != nil {
		return "", "", fmt.Errorf("template %s: platform: %w", t.Meta.File, err)
	}
	if tag == "" {
		idx, _, ok := HumanTags(t.Meta.File)
		if !ok {
			return "", "", fmt.Errorf("template %s: its name gives no tag (want <name>_<tag>_<arch>); give one with --to REGISTRY/REPO:TAG", t.Meta.File)
		}
		tag = idx
	}
	platform = platformTag(tag, p)
	if !ValidTag(tag) || !ValidTag(platform) {
		return "", "", fmt.Errorf("tag %q: a registry takes [A-Za-z0-9_][A-Za-z0-9_.-], at most 128 characters (with _%s)", tag, template.PVEArch(p))
	}
	return tag, platform, nil
}

// configOf is the config blob of t.
func (s *Store) configOf(t Template) *Config {
	m := t.Meta
	m.Ref, m.Proxmox = "", nil
	src := Source{Ref: t.Meta.Ref, Repository: t.Meta.Repository, ManifestDigest: t.Meta.ManifestDigest,
		IndexDigest: t.Meta.IndexDigest, ConfigDigest: t.Meta.ConfigDigest, Platform: t.Meta.Platform}
	if t.Meta.Ref != "" {
		if ref, err := registry.ParseReference(t.Meta.Ref, s.opts.Insecure); err == nil {
			src.Tag = ref.TagOrDigest()
		}
	}
	chunks := int((t.Meta.Size + s.opts.ChunkSize - 1) / s.opts.ChunkSize)
	if chunks == 0 {
		chunks = 1
	}
	return &Config{SchemaVersion: 1, Key: t.Key, File: t.Meta.File, Size: t.Meta.Size, SHA256: t.Meta.SHA256, Chunks: chunks,
		Source: src, Settings: t.Settings, Converter: t.Meta.Converter, Encoder: t.Encoder, Meta: m}
}

// existing returns the manifest stored under t's key tag when it is t's
// (same bytes): nothing then needs uploading.
func (s *Store) existing(ctx context.Context, e *registry.Endpoint, p *remote.Puller, t Template) ([]byte, bool, error) {
	if t.Key == "" {
		return nil, false, nil
	}
	a, err := s.lookupAt(ctx, e, p, t.Key)
	switch {
	case notFound(err):
		return nil, false, nil
	case err != nil:
		// A damaged artifact under the key is replaced, not trusted.
		if isInvalid(err) {
			s.log.Warn("template registry: replacing an invalid artifact", "tag", KeyTag(t.Key), "error", err)
			return nil, false, nil
		}
		return nil, false, explain("push templates to", e, err)
	}
	if a.cfg.SHA256 != t.Meta.SHA256 || a.cfg.Size != t.Meta.Size {
		s.log.Warn("template registry: the artifact under the key holds other bytes; replacing it", "tag", KeyTag(t.Key),
			"stored", a.cfg.SHA256, "ours", t.Meta.SHA256)
		return nil, false, nil
	}
	return a.raw, true, nil
}

// upload sends t's blobs and config and returns its manifest.
func (s *Store) upload(ctx context.Context, e *registry.Endpoint, p *remote.Pusher, t Template, cfg *Config) ([]byte, error) {
	chunks, err := s.chunks(ctx, t, cfg)
	if err != nil {
		return nil, err
	}
	var layers []v1.Descriptor
	for _, c := range chunks {
		l, err := partial.CompressedToLayer(c)
		if err != nil {
			return nil, err
		}
		if err := p.Upload(ctx, e.Repo, l); err != nil {
			return nil, explain("push templates to", e, fmt.Errorf("upload %s: %w", c.title, err))
		}
		layers = append(layers, c.descriptor())
	}
	cj, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cl := static.NewLayer(cj, ConfigMediaType)
	if err := p.Upload(ctx, e.Repo, cl); err != nil {
		return nil, explain("push templates to", e, fmt.Errorf("upload config: %w", err))
	}
	cd, _ := cl.Digest()
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  ArtifactType,
		Config:        v1.Descriptor{MediaType: ConfigMediaType, Digest: cd, Size: int64(len(cj))},
		Layers:        layers,
		Annotations:   s.annotations(cfg),
	}
	return json.Marshal(m)
}

// annotations say on the manifest what it is, for people and for the
// index's composer.
func (s *Store) annotations(cfg *Config) map[string]string {
	a := map[string]string{
		annotationTitle:    cfg.File,
		annotationDesc:     fmt.Sprintf("Proxmox VE container template of %s for %s, made by %s", cfg.Source.Repository, cfg.Source.Platform, cfg.Converter),
		AnnotationSHA256:   cfg.SHA256,
		AnnotationSize:     strconv.FormatInt(cfg.Size, 10),
		AnnotationPlatform: cfg.Source.Platform,
		AnnotationSource:   cfg.sourceID(),
		AnnotationOptions:  cfg.optionsID(),
		annotationBaseName: baseName(cfg.Source),
	}
	if cfg.Source.ManifestDigest != "" {
		a[annotationBaseDigest] = cfg.Source.ManifestDigest
	}
	if cfg.Key != "" {
		a[AnnotationKey] = cfg.Key
	}
	return a
}

// chunk is one blob of a template file: bytes [off, off+size).
type chunk struct {
	path      string
	off, size int64
	digest    v1.Hash
	mt        types.MediaType
	title     string
	n, of     int
}

func (c *chunk) Digest() (v1.Hash, error)            { return c.digest, nil }
func (c *chunk) Size() (int64, error)                { return c.size, nil }
func (c *chunk) MediaType() (types.MediaType, error) { return c.mt, nil }
func (c *chunk) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(c.path)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, c.off, c.size), f}, nil
}

func (c *chunk) descriptor() v1.Descriptor {
	d := v1.Descriptor{MediaType: c.mt, Digest: c.digest, Size: c.size, Annotations: map[string]string{annotationTitle: c.title}}
	if c.of > 1 {
		d.Annotations[AnnotationChunk] = fmt.Sprintf("%d/%d", c.n, c.of)
	}
	return d
}

// chunks cuts t's file into cfg.Chunks blobs and hashes each, checking the
// whole against the SHA-256 it was recorded with: a cached file whose
// bytes rotted is not published (the error wraps cache.ErrDigestMismatch,
// so the caller can build it again).
func (s *Store) chunks(ctx context.Context, t Template, cfg *Config) ([]*chunk, error) {
	f, err := os.Open(t.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() != t.Meta.Size {
		return nil, fmt.Errorf("template %s: %w: %d bytes, recorded as %d", t.Path, cache.ErrDigestMismatch, fi.Size(), t.Meta.Size)
	}
	whole := sha256.New()
	var out []*chunk
	buf := make([]byte, 1<<20)
	for i := 0; i < cfg.Chunks; i++ {
		off := int64(i) * s.opts.ChunkSize
		size := min(s.opts.ChunkSize, fi.Size()-off)
		h := sha256.New()
		if _, err := io.CopyBuffer(io.MultiWriter(h, whole), ctxio.Reader(ctx, io.NewSectionReader(f, off, size)), buf); err != nil {
			return nil, fmt.Errorf("template %s: %w", t.Path, err)
		}
		c := &chunk{path: t.Path, off: off, size: size, mt: layerMediaType(cfg.Settings), title: cfg.File, n: i + 1, of: cfg.Chunks,
			digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}
		if cfg.Chunks > 1 {
			c.title = fmt.Sprintf("%s.part-%04d", cfg.File, i+1)
		}
		out = append(out, c)
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != t.Meta.SHA256 {
		return nil, fmt.Errorf("template %s: %w: its bytes hash to sha256:%s, not %s", t.Path, cache.ErrDigestMismatch, got, t.Meta.SHA256)
	}
	return out, nil
}

// rawManifest is a manifest or index to PUT as it is.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// composeIndex writes the index of the source tag's platforms under tag:
// every platform artifact (Tag_<arch>) made from the same resolution of
// the source tag with the same options. Publishers of other platforms may
// write it at the same time (CI shards), and registries have no
// compare-and-swap; each publisher pushed its platform's tag before
// composing, and composes again until what it reads after writing is what
// it wrote. The last writer then always holds every platform pushed before
// it, so no platform is lost from the index.
func (s *Store) composeIndex(ctx context.Context, e *registry.Endpoint, pusher *remote.Pusher, puller *remote.Puller, tag string, cfg *Config, siblings []v1.Platform) error {
	own, err := registry.ParsePlatform(cfg.Source.Platform)
	if err != nil {
		return err
	}
	candidates := append([]v1.Platform{own}, siblings...)
	if d, err := puller.Get(ctx, e.Repo.Tag(tag)); err == nil && d.MediaType.IsIndex() && d.Size <= maxManifest {
		if idx, err := v1.ParseIndexManifest(bytes.NewReader(d.Manifest)); err == nil {
			for _, m := range idx.Manifests {
				if m.Platform != nil {
					candidates = append(candidates, *m.Platform)
				}
			}
		}
	} else if err != nil && !notFound(err) {
		return explain("push templates to", e, err)
	}
	var last []byte
	for range 8 {
		raw, err := s.gather(ctx, e, puller, tag, cfg, candidates)
		if err != nil {
			return err
		}
		if bytes.Equal(raw, last) {
			return nil
		}
		if err := pusher.Put(ctx, e.Repo.Tag(tag), rawManifest{raw: raw, mt: types.OCIImageIndex}); err != nil {
			return explain("push templates to", e, err)
		}
		last = raw
	}
	return fmt.Errorf("index %s:%s: still changing under other publishers after 8 writes", e.Repo, tag)
}

// gather reads the platform artifacts under tag's platform tags and
// returns the index of those belonging to cfg's source and options.
func (s *Store) gather(ctx context.Context, e *registry.Endpoint, puller *remote.Puller, tag string, cfg *Config, candidates []v1.Platform) ([]byte, error) {
	seen := map[string]bool{}
	var ms []v1.Descriptor
	for _, p := range candidates {
		pt := platformTag(tag, p)
		if seen[pt] {
			continue
		}
		seen[pt] = true
		d, err := puller.Get(ctx, e.Repo.Tag(pt))
		if notFound(err) {
			continue
		}
		if err != nil {
			return nil, explain("push templates to", e, err)
		}
		if d.Size > maxManifest || d.MediaType != types.OCIManifestSchema1 {
			continue
		}
		m, err := v1.ParseManifest(bytes.NewReader(d.Manifest))
		if err != nil || m.ArtifactType != ArtifactType {
			continue
		}
		a := m.Annotations
		if a[AnnotationSource] != cfg.sourceID() || a[AnnotationOptions] != cfg.optionsID() {
			continue // another resolution of the tag, or other options
		}
		plat, err := registry.ParsePlatform(a[AnnotationPlatform])
		if err != nil {
			continue
		}
		ann := map[string]string{annotationTitle: a[annotationTitle], AnnotationSHA256: a[AnnotationSHA256]}
		if k := a[AnnotationKey]; k != "" {
			ann[AnnotationKey] = k
		}
		ms = append(ms, v1.Descriptor{MediaType: types.OCIManifestSchema1, ArtifactType: ArtifactType, Digest: d.Digest, Size: d.Size,
			Platform: &plat, Annotations: ann})
	}
	slices.SortFunc(ms, func(a, b v1.Descriptor) int {
		return cmpString(registry.PlatformString(*a.Platform), registry.PlatformString(*b.Platform))
	})
	if ms == nil {
		ms = []v1.Descriptor{}
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, ArtifactType: ArtifactType, Manifests: ms,
		Annotations: map[string]string{annotationBaseName: baseName(cfg.Source), AnnotationSource: cfg.sourceID(), AnnotationOptions: cfg.optionsID()}}
	return json.Marshal(idx)
}

// baseName is the source as people name it: repository and tag.
func baseName(s Source) string {
	if s.Tag == "" || strings.Contains(s.Tag, ":") {
		return s.Repository
	}
	return s.Repository + ":" + s.Tag
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
