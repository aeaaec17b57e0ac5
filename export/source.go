package export

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// source finds the image a container was made from (its Proxmox record
// names it, its image.json agrees): its layers, config and manifest, and
// the template the container was made from, read as the baseline its
// changes are measured against. done releases what it holds in the cache.
func (e *Exporter) source(ctx context.Context, o *origin) (b *base, bl baseline, done func(), err error) {
	ref, meta := o.ref, o.meta
	fail := func(err error) (*base, baseline, func(), error) {
		return nil, nil, nil, fmt.Errorf("the container was made from %s (its Proxmox record says so), whose layers are the exported image's first ones; "+
			"it cannot be had: %w\n  Export with --single-layer to make one layer of the whole root file system instead", ref, err)
	}
	if e.Builder == nil {
		return fail(fmt.Errorf("no image converter"))
	}
	r, err := registry.ParseReference(ref, e.Registry.Insecure)
	if err != nil {
		return fail(err)
	}
	if r.Transport != registry.Docker {
		return fail(fmt.Errorf("not a registry image"))
	}
	res, err := e.Builder.Puller.Resolve(ctx, r)
	if err != nil {
		return fail(err)
	}
	defer res.Close()
	opts := e.Convert
	opts.Format = template.FormatTemplate
	// The template's init as it was: what --init auto makes of the image
	// (the same cache entry as run's), or what was asked instead.
	shim, autoShim := meta.Run.Init == "shim", meta.Run.Kind != "system"
	switch {
	case shim == autoShim:
		opts.Init = template.InitAuto
	case shim:
		opts.Init = template.InitShim
	default:
		opts.Init = template.InitNone
	}
	tr, err := e.Builder.ConvertResolved(ctx, res, opts)
	if err != nil {
		return fail(fmt.Errorf("converting it again, to compare the container with its template: %w", err))
	}
	ok := false
	defer func() {
		if !ok {
			tr.Close()
		}
	}()
	img, err := e.Builder.Puller.Fetch(ctx, res)
	if err != nil {
		return fail(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return fail(err)
	}
	ls, err := img.Layers()
	if err != nil {
		return fail(err)
	}
	if len(ls) != len(res.Manifest.Layers) {
		return fail(fmt.Errorf("its manifest lists %d layers, the image %d", len(res.Manifest.Layers), len(ls)))
	}
	repo := r.Name.Context()
	b = &base{config: cfg, manifest: res.Manifest, mt: res.MediaType, name: registry.Normalize(r.Name)}
	for i, l := range ls {
		// Mountable: a push to the source's registry mounts the blob
		// from the source's repository instead of uploading it.
		b.layers = append(b.layers, &remote.MountableLayer{Layer: l, Reference: repo.Digest(res.Manifest.Layers[i].Digest.String())})
	}
	f, err := os.Open(tr.Path())
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	stream, closeStream, err := decompressTemplate(f)
	if err != nil {
		return fail(fmt.Errorf("template %s: %w", tr.Path(), err))
	}
	defer closeStream()
	if bl, err = readBaseline(ctx, stream); err != nil {
		return fail(fmt.Errorf("template %s: %w", tr.Path(), err))
	}
	ok = true
	return b, bl, func() { tr.Close() }, nil
}

// decompressTemplate opens a template whatever its compression (every one
// template.Compression writes).
func decompressTemplate(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, err := br.Peek(6)
	if err != nil && err != io.EOF {
		return nil, nil, err
	}
	switch {
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<32))
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(head, xzMagic):
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return xr, func() {}, nil
	case bytes.HasPrefix(head, bzip2Magic):
		return bzip2.NewReader(br), func() {}, nil
	}
	return br, func() {}, nil
}
