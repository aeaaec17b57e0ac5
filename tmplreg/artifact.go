package tmplreg

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/template"
)

// Media types of the artifact.
const (
	// ArtifactType is the artifactType of a template's manifest and of the
	// index of a source tag's platforms.
	ArtifactType = "application/vnd.pve-image.template.v1"
	// ConfigMediaType is the config blob's: a Config, JSON.
	ConfigMediaType types.MediaType = "application/vnd.pve-image.template.config.v1+json"
	// LayerMediaTypePrefix starts the media type of the template's blobs;
	// the rest names what the file is: .tar, .tar+zstd, .tar+gzip,
	// .tar+xz, .oci-archive.
	LayerMediaTypePrefix = "application/vnd.pve-image.template.layer.v1"
)

// Annotations on the manifest (and, for the index, on its entries).
const (
	AnnotationKey        = "io.github.pve-image.template.key"
	AnnotationSHA256     = "io.github.pve-image.template.sha256"
	AnnotationSize       = "io.github.pve-image.template.size"
	AnnotationPlatform   = "io.github.pve-image.template.platform"
	AnnotationSource     = "io.github.pve-image.template.source"
	AnnotationOptions    = "io.github.pve-image.template.options"
	AnnotationChunk      = "io.github.pve-image.template.chunk"
	annotationTitle      = "org.opencontainers.image.title"
	annotationDesc       = "org.opencontainers.image.description"
	annotationBaseName   = "org.opencontainers.image.base.name"
	annotationBaseDigest = "org.opencontainers.image.base.digest"
)

// Limits on what is read from a registry before it is checked.
const (
	maxManifest = 4 << 20
	maxConfig   = 4 << 20
	maxChunks   = 10000
)

// KeyTag is the tag of the template of a cache key: any machine computes
// it from the image digest and the options, with no listing.
func KeyTag(key string) string { return "tmpl-" + key }

// Settings are the conversion options a template was made with, as the
// config records them (the key covers them; these say it in words).
type Settings struct {
	Compression   string `json:"compression"`
	Level         int    `json:"level"`
	SquashHighIDs bool   `json:"squashHighIDs"`
	Init          string `json:"init"`
	// Shim is the SHA-256 of the pve-image-init put in, if any.
	Shim   string `json:"shim,omitempty"`
	Format string `json:"format"`
}

// SettingsOf describes opts as Builder.Key sees them: defaults filled in.
func SettingsOf(opts template.Options) Settings {
	level := opts.Level
	if level == 0 {
		level = opts.Compression.DefaultLevel()
	}
	init := opts.Init
	if init == "" {
		init = template.InitAuto
	}
	s := Settings{Compression: string(opts.Compression), Level: level, SquashHighIDs: opts.SquashHighIDs, Init: string(init), Format: string(opts.Format)}
	if s.Format == "" {
		s.Format = string(template.FormatTemplate)
	}
	if opts.Shim != nil && init != template.InitNone {
		s.Shim = opts.Shim.SHA256
	}
	if opts.Format == template.FormatOCIArchive {
		s.Compression = ""
	}
	return s
}

// Source is the image a template was made from.
type Source struct {
	// Ref is the reference as it was asked for; Repository and Tag name it
	// for people.
	Ref            string `json:"ref"`
	Repository     string `json:"repository"`
	Tag            string `json:"tag,omitempty"`
	ManifestDigest string `json:"manifestDigest"`
	IndexDigest    string `json:"indexDigest,omitempty"`
	ConfigDigest   string `json:"configDigest"`
	Platform       string `json:"platform"`
}

// Config is the artifact's config blob.
type Config struct {
	SchemaVersion int `json:"schemaVersion"`
	// Key is the cache key the template was built under; "" for a template
	// file published without one.
	Key    string `json:"key,omitempty"`
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Chunks is how many blobs the file is stored in.
	Chunks    int      `json:"chunks"`
	Source    Source   `json:"source"`
	Settings  Settings `json:"settings"`
	Converter string   `json:"converter"`
	Encoder   string   `json:"encoder"`
	// Meta is the template's full metadata, as the cache keeps it beside
	// the file (less Ref, which depends on how it was asked for).
	Meta template.Meta `json:"meta"`
}

// optionsID names the options and the code that made a template, without
// the image: the templates of one source tag gathered into an index must
// agree on it.
func (c *Config) optionsID() string {
	j, _ := json.Marshal(struct {
		S                  Settings
		Converter, Encoder string
	}{c.Settings, c.Converter, c.Encoder})
	sum := sha256.Sum256(j)
	return hex.EncodeToString(sum[:8])
}

// sourceID names the source tag's resolution: the index it resolved to,
// or the manifest for single-platform images.
func (c *Config) sourceID() string {
	if c.Source.IndexDigest != "" {
		return c.Source.IndexDigest
	}
	return c.Source.ManifestDigest
}

// layerMediaType says what the stored file is.
func layerMediaType(s Settings) types.MediaType {
	if s.Format == string(template.FormatOCIArchive) {
		return LayerMediaTypePrefix + ".oci-archive"
	}
	switch template.Compression(s.Compression) {
	case template.Zstd:
		return LayerMediaTypePrefix + ".tar+zstd"
	case template.Gzip:
		return LayerMediaTypePrefix + ".tar+gzip"
	case template.XZ:
		return LayerMediaTypePrefix + ".tar+xz"
	}
	return LayerMediaTypePrefix + ".tar"
}

// tagRE is the distribution spec's tag grammar.
var tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}$`)

// ValidTag reports whether a registry takes t as a tag.
func ValidTag(t string) bool { return tagRE.MatchString(t) }

// HumanTags are the tags people use for a template file name
// <name>_<tag>_<arch><suffix>: <name>_<tag> for the index across
// platforms and <name>_<tag>_<arch> for the platform's artifact. ok is false
// when the name has no such shape.
func HumanTags(file string) (index, platform string, ok bool) {
	stem := file
	for _, suf := range []string{".tar.zst", ".tar.gz", ".tar.xz", ".tar.bz2", ".tar"} {
		if s, ok := strings.CutSuffix(stem, suf); ok {
			stem = s
			break
		}
	}
	i := strings.LastIndexByte(stem, '_')
	if i <= 0 || strings.IndexByte(stem, '_') == i {
		return "", "", false
	}
	return stem[:i], stem, ValidTag(stem)
}

// platformTag is the tag of one platform's artifact under index tag t.
func platformTag(t string, p v1.Platform) string {
	return t + "_" + template.Sanitize(template.PVEArch(p))
}

// check makes sure a config blob describes a template that can be
// written: a plain file name, a SHA-256, sizes that add up.
func (c *Config) check(layerTotal int64, chunks int) error {
	switch {
	case c.SchemaVersion != 1:
		return fmt.Errorf("config schema version %d, want 1", c.SchemaVersion)
	case !template.ValidName(c.File):
		return fmt.Errorf("config names the file %q, not a template name", c.File)
	case len(c.SHA256) != 64 || strings.Trim(c.SHA256, "0123456789abcdef") != "":
		return fmt.Errorf("config has no SHA-256 (%q)", c.SHA256)
	case c.Size != layerTotal:
		return fmt.Errorf("config says %d bytes, the layers hold %d", c.Size, layerTotal)
	case c.Chunks != chunks:
		return fmt.Errorf("config says %d chunks, the manifest has %d", c.Chunks, chunks)
	}
	return nil
}
