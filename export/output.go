package export

import (
	"context"
	"errors"
	"fmt"
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

// writeLayout adds img to the OCI layout at dir (made when missing),
// replacing an image of the same tag.
func writeLayout(dir, tag string, img v1.Image) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "index.json")); !errors.Is(serr, os.ErrNotExist) {
			return fmt.Errorf("oci:%s: %w", dir, err)
		}
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return fmt.Errorf("oci:%s: %w", dir, err)
		}
	}
	if tag == "" {
		err = p.AppendImage(img)
	} else {
		err = p.ReplaceImage(img, match.Annotation(refNameAnnotation, tag), layout.WithAnnotations(map[string]string{refNameAnnotation: tag}))
	}
	if err != nil {
		return fmt.Errorf("oci:%s: %w", dir, err)
	}
	return nil
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
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-")
	if err != nil {
		return fmt.Errorf("oci-archive:%s: %w", file, err)
	}
	defer os.Remove(f.Name())
	err = registry.TarLayout(dir, f, created)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), file)
	}
	if err != nil {
		return fmt.Errorf("oci-archive:%s: %w", file, err)
	}
	return nil
}
