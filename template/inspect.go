package template

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/imgconv"
	"github.com/pve-image/pve-image/registry"
)

// Inspect describes an image as its template would be. When the cache holds
// the template for opts, its metadata answers; otherwise the layers are
// fetched and flattened without writing anything.
func (b *Builder) Inspect(ctx context.Context, ref registry.Reference, opts Options) (Meta, error) {
	// What inspect reads stays in the cache while it reads it.
	hold := cache.NewHold()
	defer hold.Close()
	ctx = cache.WithHold(ctx, hold)
	res, err := b.Puller.Resolve(ctx, ref)
	if err != nil {
		return Meta{}, err
	}
	defer res.Close()
	if e, err := b.Cache.LookupTemplate(ctx, b.Key(res, opts)); err == nil {
		if m, err := ReadMeta(e.Dir); err == nil {
			m.Ref = ref.String()
			return m, nil
		}
	} else if !errors.Is(err, cache.ErrNotFound) {
		return Meta{}, err
	}
	dl, err := b.Puller.Start(ctx, res)
	if err != nil {
		return Meta{}, err
	}
	meta, layers, err := b.describe(res, dl.Image())
	var rootfs *imgconv.Rootfs
	if err == nil {
		rootfs, err = imgconv.Flatten(ctx, layers, imgconv.Options{
			Image: ref.String(), TempDir: b.Cache.TempDir(), FactsOnly: true,
			MaxSize: opts.MaxSize, MaxEntries: opts.MaxEntries, SquashHighIDs: opts.SquashHighIDs,
		})
	}
	if derr := dl.Stop(); derr != nil {
		if rootfs != nil {
			rootfs.Close()
		}
		err = derr
	}
	if err != nil {
		return Meta{}, err
	}
	defer rootfs.Close()
	addFacts(&meta, rootfs)
	mode := opts.Init
	if mode == "" {
		mode = InitAuto
	}
	// Inspect describes; only conversion refuses. What conversion would
	// refuse (no command, an unknown USER) is reported, not failed on.
	if meta.Run, err = runInfo(rootfs, &meta, mode); err != nil {
		meta.Run.Refusal = err.Error()
	}
	meta.Entries, meta.RootfsSize = rootfs.Size()
	return meta, nil
}

// ImageArchive says whether the .tar at path is an image archive rather
// than a template: an OCI layout (oci-layout and index.json at its root)
// or what `docker save` writes (manifest.json), and the transport that
// reads it.
func ImageArchive(path string) (transport string, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var layout, index, dockerManifest bool
	for range 10000 {
		h, err := tr.Next()
		if err != nil {
			break
		}
		switch strings.TrimPrefix(h.Name, "./") {
		case "oci-layout":
			layout = true
		case "index.json":
			index = true
		case "manifest.json":
			dockerManifest = true
		}
	}
	switch {
	case layout && index:
		return "oci-archive", true
	case dockerManifest:
		return "docker-archive", true
	}
	return "", false
}

// InspectFile describes a template file: what Proxmox will detect in it and,
// for templates pve-image wrote, the image it came from.
func InspectFile(ctx context.Context, path, tempDir string) (Meta, error) {
	l, err := newFileLayer(path)
	if err != nil {
		return Meta{}, err
	}
	rootfs, err := imgconv.Flatten(ctx, []imgconv.Layer{l}, imgconv.Options{Image: path, TempDir: tempDir, FactsOnly: true, MaxSize: -1, MaxEntries: -1, SquashHighIDs: true})
	if err != nil {
		return Meta{}, err
	}
	defer rootfs.Close()
	var m Meta
	if b, ok := rootfs.ReadFile(MetaPath); ok {
		if err := json.Unmarshal(b, &m); err != nil {
			return Meta{}, fmt.Errorf("%s: /%s: %w", path, MetaPath, err)
		}
	}
	// What the template shows now, plus what the conversion dropped on the
	// way in (devices, xattrs), which only the embedded facts remember.
	embedded := m.Facts.Warnings
	m.Facts = rootfs.Facts()
	for _, w := range embedded {
		if !slices.Contains(m.Facts.Warnings, w) {
			m.Facts.Warnings = append(m.Facts.Warnings, w)
		}
	}
	if m.Arch != "" && !SupportedArch(m.Arch) {
		m.Facts.Warnings = append(m.Facts.Warnings, fmt.Sprintf("Proxmox has no arch %q", m.Arch))
	}
	m.Entries, m.RootfsSize = rootfs.Size()
	m.File, m.Size, m.SHA256 = filepath.Base(path), l.size, l.digest.Hex
	if c, err := CompressionFromName(path); err == nil {
		m.Compression = string(c)
	}
	if !ValidName(filepath.Base(path)) {
		m.Facts.Warnings = append(m.Facts.Warnings, fmt.Sprintf("Proxmox does not take %q as a template name", filepath.Base(path)))
	}
	return m, nil
}

// fileLayer presents a template file as a single layer.
type fileLayer struct {
	path   string
	size   int64
	digest v1.Hash
}

func newFileLayer(path string) (*fileLayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &fileLayer{path: path, size: n, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}, nil
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return "", nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
