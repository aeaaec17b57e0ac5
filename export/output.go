package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/logs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/pve-image/pve-image/internal/atomicfile"
	"github.com/pve-image/pve-image/registry"
)

// refNameAnnotation names an image in an OCI layout (oci:DIR:TAG).
const refNameAnnotation = "org.opencontainers.image.ref.name"

// checkDestination parses where the image goes, before any work is done.
func (e *Exporter) checkDestination(to string) (registry.Reference, error) {
	if to == "" {
		return registry.Reference{}, errors.New("no destination: give --to REF, oci:DIR[:TAG] or oci-archive:FILE[:TAG]")
	}
	ref, err := registry.ParseReference(to, e.Registry.Insecure)
	if err != nil {
		return ref, fmt.Errorf("--to: %w", err)
	}
	switch ref.Transport {
	case registry.DockerArchive:
		return ref, errors.New("--to docker-archive: is not written; use oci-archive:FILE or oci:DIR")
	case registry.Docker:
		if _, ok := ref.Name.(name.Digest); ok {
			return ref, fmt.Errorf("--to %s: a digest cannot be pushed to; give a tag", to)
		}
	}
	return ref, nil
}

// write puts img where ref says and returns its digest.
func (e *Exporter) write(ctx context.Context, ref registry.Reference, img v1.Image, created time.Time) (v1.Hash, error) {
	digest, err := img.Digest()
	if err != nil {
		return digest, err
	}
	switch ref.Transport {
	case registry.OCI:
		return digest, writeLayout(ref.Path, ref.Tag, img)
	case registry.OCIArchive:
		return digest, writeOCIArchive(ref.Path, ref.Tag, img, created)
	}
	opts, err := registry.RemoteOptions(ctx, e.Registry, ref.Name.Context())
	if err != nil {
		return digest, err
	}
	logs.Warn.SetOutput(os.Stderr)
	logs.Progress.SetOutput(os.Stderr)
	if err := remote.Write(ref.Name, img, opts...); err != nil {
		return digest, fmt.Errorf("push %s: %w", ref, err)
	}
	return digest, nil
}

// writeLayout adds img to the OCI layout at dir, replacing an image of the
// same tag; an image without a tag that the layout holds already is not
// added again. A new layout is written beside dir and renamed into place,
// so that a failure leaves no half-written one; into an existing layout,
// the blobs go first and the index last, so a failure leaves at most
// blobs nothing refers to.
func writeLayout(dir, tag string, img v1.Image) error {
	if _, err := os.Stat(filepath.Join(dir, "index.json")); errors.Is(err, os.ErrNotExist) {
		return newLayout(dir, tag, img)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return fmt.Errorf("oci:%s: %w", dir, err)
	}
	if err := addToLayout(p, tag, img); err != nil {
		return fmt.Errorf("oci:%s: %w", dir, err)
	}
	return nil
}

// newLayout writes a layout holding img at dir, which must not exist or
// be an empty directory.
func newLayout(dir, tag string, img v1.Image) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("oci:%s: a directory that is not an OCI image layout (no index.json); name a new directory or an existing layout", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("oci:%s: %w", dir, err)
	}
	clean := filepath.Clean(dir)
	tmp, err := os.MkdirTemp(filepath.Dir(clean), "."+filepath.Base(clean)+".tmp-")
	if err != nil {
		return fmt.Errorf("oci:%s: %w", dir, err)
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err == nil {
		err = addToLayout(p, tag, img)
	}
	if err == nil {
		err = os.Chmod(tmp, 0o755)
	}
	if err == nil {
		// An empty directory gives way (os.Remove takes nothing else).
		if rerr := os.Remove(clean); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = rerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, clean)
	}
	if err != nil {
		return fmt.Errorf("oci:%s: %w", dir, err)
	}
	return nil
}

func addToLayout(p layout.Path, tag string, img v1.Image) error {
	if tag != "" {
		return p.ReplaceImage(img, match.Annotation(refNameAnnotation, tag), layout.WithAnnotations(map[string]string{refNameAnnotation: tag}))
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range m.Manifests {
		if d.Digest == digest {
			// Held already (tagged or not): the blobs again, no second
			// entry in the index.
			return p.WriteImage(img)
		}
	}
	return p.AppendImage(img)
}

// writeOCIArchive writes img as a tar of an OCI layout at file: the layout
// is made beside it, archived with every time set to created (the same
// image gives the same bytes), and renamed into place.
func writeOCIArchive(file, tag string, img v1.Image, created time.Time) error {
	dir, err := os.MkdirTemp(filepath.Dir(file), "."+filepath.Base(file)+".layout-")
	if err != nil {
		return fmt.Errorf("oci-archive:%s: %w", file, err)
	}
	defer os.RemoveAll(dir)
	if err := writeLayout(dir, tag, img); err != nil {
		return err
	}
	if err := atomicfile.Write(file, func(w io.Writer) error { return registry.TarLayout(dir, w, created) }); err != nil {
		return fmt.Errorf("oci-archive:%s: %w", file, err)
	}
	return nil
}
