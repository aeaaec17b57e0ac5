package template

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/registry"
)

// Remote is a store of ready templates shared between machines — a
// template registry (package tmplreg) — asked before an image is
// converted. It is looked up by the cache key (Builder.Key), which names the
// converter's version and the encoder: a store shared by machines then
// never hands out bytes that this build of pve-image would not write
// itself.
type Remote interface {
	// FetchTemplate writes the template stored for req.Key into
	// req.Dir/req.File and returns its metadata, with File, Size and
	// SHA256 those of the bytes written; the bytes must have been checked
	// against the SHA-256 the store recorded. An error wrapping
	// ErrRemoteMiss means the store has no template for the key.
	FetchTemplate(ctx context.Context, req RemoteRequest) (Meta, error)
}

// RemoteRequest asks a Remote for one template.
type RemoteRequest struct {
	// Key is the cache key (Builder.Key) of the template wanted.
	Key string
	// Resolved is the image it is wanted for, Options how it would be
	// converted.
	Resolved *registry.Resolved
	Options  Options
	// Dir is an empty directory of the cache's; File the name to write the
	// template under.
	Dir, File string
}

// ErrRemoteMiss is wrapped by a Remote's errors for templates it does not
// hold.
var ErrRemoteMiss = errors.New("no such template in the template registry")

// fromRemote tries b.Remote for the template of key, writing it and its
// meta.json into dir as build would. ok says whether it did. Anything but a
// miss or a cancelled ctx is logged as a warning and answered with !ok, so
// that the image is converted locally instead: a damaged, mismatching or
// unreachable store must not stop a conversion that can be done here. dir
// is left empty whenever ok is false.
func (b *Builder) fromRemote(ctx context.Context, key string, res *registry.Resolved, opts Options, dir string) (file, sum string, ok bool, err error) {
	if b.Remote == nil {
		return "", "", false, nil
	}
	name := templateName(res, opts)
	meta, err := b.Remote.FetchTemplate(ctx, RemoteRequest{Key: key, Resolved: res, Options: opts, Dir: dir, File: name})
	if err == nil {
		err = checkRemoteMeta(meta, res, name, dir)
	}
	if err == nil {
		// As build writes it: the reference as asked for, which the
		// store does not keep.
		meta.File, meta.Ref = name, res.Ref.String()
		var j []byte
		if j, err = json.MarshalIndent(meta, "", "  "); err == nil {
			err = os.WriteFile(filepath.Join(dir, "meta.json"), append(j, '\n'), 0o644)
		}
	}
	if err == nil {
		if b.Log != nil {
			b.Log.Debug("template from the template registry", "image", res.Ref.String(), "template", name, "key", key)
		}
		return name, meta.SHA256, true, nil
	}
	clearDir(dir)
	if ctx.Err() != nil {
		return "", "", false, ctx.Err()
	}
	if !errors.Is(err, ErrRemoteMiss) && b.Log != nil {
		b.Log.Warn("template registry: not using its template; converting locally", "image", res.Ref.String(), "error", err)
	}
	return "", "", false, nil
}

// checkRemoteMeta makes sure what a Remote handed over describes this image
// and is the file it wrote, whatever the Remote checked itself: a store
// answering for the wrong key is refused here.
func checkRemoteMeta(m Meta, res *registry.Resolved, name, dir string) error {
	switch {
	case m.ManifestDigest != res.Digest.String():
		return fmt.Errorf("its template is of manifest %s, not %s", m.ManifestDigest, res.Digest)
	case m.ConfigDigest != res.Manifest.Config.Digest.String():
		return fmt.Errorf("its template is of config %s, not %s", m.ConfigDigest, res.Manifest.Config.Digest)
	case m.Platform != registry.PlatformString(res.Platform):
		return fmt.Errorf("its template is for %s, not %s", m.Platform, registry.PlatformString(res.Platform))
	case len(m.SHA256) != 64 || strings.Trim(m.SHA256, "0123456789abcdef") != "":
		return fmt.Errorf("its template has no SHA-256 (%q)", m.SHA256)
	}
	fi, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	if fi.Size() != m.Size {
		return fmt.Errorf("its template has %d bytes, its metadata says %d", fi.Size(), m.Size)
	}
	return nil
}

// clearDir empties dir, so that a build can start over in it.
func clearDir(dir string) {
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		os.RemoveAll(filepath.Join(dir, de.Name()))
	}
}

// NameFor is the file name the template of res converted with opts gets in
// the cache and in output directories: <name>_<tag>_<arch><suffix>.
func NameFor(res *registry.Resolved, opts Options) string { return templateName(res, opts) }

// IndexPlatforms lists the platforms of the index with digest index (a
// Meta's IndexDigest), as the cache holds it; none for "" (single-platform
// images) or when the cache does not hold it.
func (b *Builder) IndexPlatforms(index string) []v1.Platform {
	h, err := v1.NewHash(index)
	if err != nil {
		return nil
	}
	raw, err := b.Cache.ReadBlob(h)
	if err != nil {
		return nil
	}
	var idx v1.IndexManifest
	if json.Unmarshal(raw, &idx) != nil {
		return nil
	}
	var out []v1.Platform
	for _, d := range idx.Manifests {
		if d.Platform != nil && d.Platform.OS != "unknown" && d.MediaType.IsImage() {
			out = append(out, *d.Platform)
		}
	}
	return out
}
