package template

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/imgconv"
	"github.com/pve-image/pve-image/registry"
)

// Options say how to convert. Everything here that changes the template's
// bytes is part of the cache key.
type Options struct {
	Compression Compression
	// Level is the compression level; 0 means the compressor's default.
	Level int
	// SquashHighIDs maps uids and gids of 65536 and above to 65534.
	SquashHighIDs bool
	// MaxSize and MaxEntries bound the expanded image (imgconv.Options).
	MaxSize, MaxEntries int64
	// Init says what the template boots; Shim is the init put in for
	// InitShim and for application images under InitAuto.
	Init InitMode
	Shim *Shim
	// Format is a flattened template (default) or an OCI archive.
	Format Format
}

// Builder converts images into cached templates.
type Builder struct {
	Cache  *cache.Cache
	Puller *registry.Puller
	// Version is the converter's version, part of every cache key.
	Version string
	Log     *slog.Logger
	// Remote, if set, is asked for a ready template (remote.go) before an
	// image is converted.
	Remote Remote
	// Gunzip is the external gzip decoder for large gzip layers
	// (imgconv.Options.Gunzip): "" takes igzip from PATH when it is
	// there and works, unless the environment says PVE_IMAGE_GUNZIP=builtin;
	// BuiltinGunzip never uses one. Templates are the same bytes
	// whichever decodes.
	Gunzip string
}

// BuiltinGunzip, as Builder.Gunzip or as the value of PVE_IMAGE_GUNZIP,
// decodes every layer in the process.
const BuiltinGunzip = "builtin"

// GunzipEnv names the environment variable that opts out of igzip.
const GunzipEnv = "PVE_IMAGE_GUNZIP"

// gunzip is the external decoder to use, "" for none. The environment is
// read here, once for every caller (convert, batch, the CRI daemon), as the
// way out should igzip misbehave somewhere the probe does not see.
func (b *Builder) gunzip() (string, error) {
	choice := b.Gunzip
	if choice == "" {
		switch env := os.Getenv(GunzipEnv); env {
		case "", Igzip:
		case BuiltinGunzip:
			choice = BuiltinGunzip
		default:
			return "", fmt.Errorf("%s=%q: want %q or %q", GunzipEnv, env, BuiltinGunzip, Igzip)
		}
	}
	switch choice {
	case "":
		p, err := imgconv.LookIgzip()
		if err != nil && b.Log != nil {
			b.Log.Debug("igzip is not used; gzip layers are decoded in the process", "reason", err)
		}
		return p, nil
	case BuiltinGunzip:
		return "", nil
	}
	return choice, nil
}

// Igzip, as the value of PVE_IMAGE_GUNZIP, is the default: igzip when it
// is installed and works.
const Igzip = imgconv.Igzip

// Result is a converted template.
type Result struct {
	Entry cache.Entry
	Meta  Meta
	// Hit is true when the template came from the cache.
	Hit bool
	// Fetched is true when it was not in the cache but came ready from
	// the template registry (Builder.Remote): not converted here.
	Fetched bool

	hold *cache.Hold // nil when the caller's context brought the Hold
}

// Path is the template file in the cache.
func (r *Result) Path() string { return r.Entry.Path() }

// Close releases what the result holds in the cache: its template and the
// blobs it was resolved and built from, which no prune or removal, in any
// process, takes until then. The end of the process releases them too,
// so a command that converts and exits need not close; a daemon must.
func (r *Result) Close() error { return r.hold.Close() }

// Key derives the cache key: everything that determines the template's
// bytes. Limits are left out: they decide whether a conversion succeeds,
// not what it writes.
func (b *Builder) Key(r *registry.Resolved, opts Options) string {
	level := opts.Level
	if level == 0 {
		level = opts.Compression.DefaultLevel()
	}
	init := opts.Init
	if init == "" {
		init = InitAuto
	}
	shim := ""
	if opts.Shim != nil && init != InitNone {
		shim = opts.Shim.SHA256
	}
	k := struct {
		Converter, Encoder, Manifest, Config, Platform string
		Compression                                    Compression
		Level                                          int
		SquashHighIDs                                  bool
		Init                                           InitMode
		Shim                                           string
		Format                                         Format
	}{b.Version, opts.Compression.Encoder(), r.Digest.String(), r.Manifest.Config.Digest.String(),
		registry.PlatformString(r.Platform), opts.Compression, level, opts.SquashHighIDs, init, shim, opts.Format}
	j, _ := json.Marshal(k)
	sum := sha256.Sum256(j)
	return hex.EncodeToString(sum[:])
}

// Convert returns the template for ref, from the cache when it holds one for
// the same image and options, otherwise pulling what is missing and
// converting. Everything it reads from the cache is held (cache.Hold)
// until the Result is closed; when ctx carries a Hold, that one holds
// instead, and closing the Result does nothing.
func (b *Builder) Convert(ctx context.Context, ref registry.Reference, opts Options) (*Result, error) {
	return b.ConvertThen(ctx, ref, opts, nil)
}

// ConvertResolved is Convert for an already resolved image.
func (b *Builder) ConvertResolved(ctx context.Context, res *registry.Resolved, opts Options) (*Result, error) {
	ctx, own := withHold(ctx)
	r, err := b.convertResolved(ctx, res, opts)
	if err != nil {
		own.Close()
		return nil, err
	}
	r.hold = own
	return r, nil
}

func (b *Builder) convertResolved(ctx context.Context, res *registry.Resolved, opts Options) (*Result, error) {
	if err := opts.Compression.CheckLevel(opts.Level); err != nil {
		return nil, err
	}
	key := b.Key(res, opts)
	fetched := false
	entry, built, err := b.Cache.PutTemplate(ctx, key, func(ctx context.Context, dir string) (string, string, error) {
		if file, sum, ok, err := b.fromRemote(ctx, key, res, opts, dir); ok || err != nil {
			fetched = ok && err == nil
			return file, sum, err
		}
		return b.build(ctx, res, opts, dir)
	})
	if err != nil {
		return nil, err
	}
	meta, err := ReadMeta(entry.Dir)
	if err != nil {
		return nil, err
	}
	// The same bytes may have been built first for another reference (a
	// digest, another registry): the name is always the one asked for.
	if entry, err = b.Cache.AliasTemplate(entry, templateName(res, opts)); err != nil {
		return nil, err
	}
	meta.Ref, meta.Repository, meta.File = res.Ref.String(), res.Repository, entry.File
	return &Result{Entry: entry, Meta: meta, Hit: !built, Fetched: built && fetched}, nil
}

// templateName is the file name of the template of res: named after the
// reference as asked (its repository, and tag or digest).
func templateName(res *registry.Resolved, opts Options) string {
	tag := res.Tag
	if tag == "" {
		tag = res.Digest.String()
	}
	c := opts.Compression
	if opts.Format == FormatOCIArchive {
		c = None
	}
	return FileName(res.Repository, tag, res.Platform, c)
}

// ReadMeta reads the metadata beside a cached template.
func ReadMeta(dir string) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return m, fmt.Errorf("template metadata: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("template metadata %s: %w", dir, err)
	}
	return m, nil
}

// build pulls, flattens and writes one template into dir.
func (b *Builder) build(ctx context.Context, res *registry.Resolved, opts Options, dir string) (string, string, error) {
	start := time.Now()
	// Layers flatten as they arrive: decoding the first overlaps
	// downloading the rest.
	dl, err := b.Puller.Start(ctx, res)
	if err != nil {
		return "", "", err
	}
	meta, layers, err := b.describe(res, dl.Image())
	if err != nil {
		dl.Stop()
		return "", "", err
	}
	name := templateName(res, opts)
	path := filepath.Join(dir, name)
	if opts.Format == FormatOCIArchive {
		return b.buildOCIArchive(ctx, res, dl, meta, dir, name)
	}
	gunzip, err := b.gunzip()
	if err != nil {
		dl.Stop()
		return "", "", err
	}
	iopts := imgconv.Options{
		Image:         res.Ref.String(),
		TempDir:       b.Cache.TempDir(),
		MaxSize:       opts.MaxSize,
		MaxEntries:    opts.MaxEntries,
		SquashHighIDs: opts.SquashHighIDs,
		Gunzip:        gunzip,
	}
	sum, st, err := b.writeTemplate(ctx, path, layers, iopts, &meta, opts)
	if errors.Is(err, imgconv.ErrRestart) {
		// The streamed layer was out of the order streaming needs; write
		// again with every layer spilled first.
		if b.Log != nil {
			b.Log.Debug("streamed write restarted", "image", res.Ref.String(), "reason", err)
		}
		iopts.Stream = -1
		sum, st, err = b.writeTemplate(ctx, path, layers, iopts, &meta, opts)
	}
	// Layers are read as they arrive, before their digest is checked: a
	// failure in a layer's content may be a blob the registry changed,
	// which its download reports once it ends.
	verified := false
	var ie *imgconv.Error
	if errors.As(err, &ie) && ie.Layer != "" {
		if h, herr := v1.NewHash(ie.Layer); herr == nil {
			if verr := dl.Verify(h); verr != nil && !errors.Is(verr, context.Canceled) {
				err = verr
			} else {
				verified = verr == nil
			}
		}
	}
	// A layer igzip refused that its digest vouches for is decoded again
	// by the built-in decoder before the image is blamed: the layer is
	// corrupt only if that fails as well, and a conversion it completes
	// says igzip is at fault. A layer whose download started over while
	// it was read is read again, from the stored blob.
	if verified && ctx.Err() == nil && (errors.Is(err, imgconv.ErrExternalGunzip) || errors.Is(err, registry.ErrFeedRestarted)) {
		// The same layer streamed as before (or none, after a restart):
		// the bytes depend on which.
		first := err
		if errors.Is(err, imgconv.ErrExternalGunzip) {
			iopts.Gunzip = ""
		}
		sum, st, err = b.writeTemplate(ctx, path, layers, iopts, &meta, opts)
		if err == nil && b.Log != nil && errors.Is(first, imgconv.ErrExternalGunzip) {
			b.Log.Warn("igzip failed on a layer the built-in decoder reads; converted without igzip (set "+GunzipEnv+"=builtin to skip it)",
				"image", res.Ref.String(), "igzip", gunzip, "error", first)
		}
	}
	// A download error reaches the flattener as a failed layer read; the
	// download's own error says more.
	if derr := dl.Stop(); derr != nil {
		err = derr
	}
	if err != nil {
		return "", "", err
	}
	meta.Compression = string(opts.Compression)
	meta.RootfsSize, meta.Entries = st.Bytes, st.Entries
	meta.File, meta.SHA256 = name, sum
	if fi, err := os.Stat(path); err == nil {
		meta.Size = fi.Size()
	}
	j, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), append(j, '\n'), 0o644); err != nil {
		return "", "", err
	}
	if b.Log != nil {
		b.Log.Debug("converted", "image", res.Ref.String(), "template", name, "took", time.Since(start).Round(time.Millisecond),
			"entries", st.Entries, "bytes", st.Bytes, "size", meta.Size)
	}
	return name, sum, nil
}

// buildOCIArchive writes the image as an OCI archive once all its blobs
// are in.
func (b *Builder) buildOCIArchive(ctx context.Context, res *registry.Resolved, dl *registry.Download, meta Meta, dir, name string) (string, string, error) {
	if err := dl.Wait(); err != nil {
		return "", "", err
	}
	sum, err := writeOCIArchive(filepath.Join(dir, name), res, b.Cache, meta.Created)
	if err != nil {
		return "", "", fmt.Errorf("image %s: write OCI archive: %w", res.Ref, err)
	}
	meta.Compression, meta.File, meta.SHA256 = "oci-archive", name, sum
	if fi, err := os.Stat(filepath.Join(dir, name)); err == nil {
		meta.Size = fi.Size()
	}
	j, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), append(j, '\n'), 0o644); err != nil {
		return "", "", err
	}
	return name, sum, nil
}

// describe gathers an image's Meta, less what only the flattened tree and
// the written template can tell, and its layers.
func (b *Builder) describe(res *registry.Resolved, img v1.Image) (Meta, []imgconv.Layer, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return Meta{}, nil, fmt.Errorf("image %s: config: %w", res.Ref, err)
	}
	ls, err := img.Layers()
	if err != nil {
		return Meta{}, nil, fmt.Errorf("image %s: %w", res.Ref, err)
	}
	layers := make([]imgconv.Layer, len(ls))
	var csize int64
	for i, l := range ls {
		layers[i] = l
		if n, err := l.Size(); err == nil {
			csize += n
		}
	}
	meta := Meta{
		Converter:      "pve-image " + b.Version,
		Ref:            res.Ref.String(),
		Repository:     res.Repository,
		ManifestDigest: res.Digest.String(),
		ConfigDigest:   res.Manifest.Config.Digest.String(),
		Platform:       registry.PlatformString(res.Platform),
		Arch:           PVEArch(res.Platform),
		Config:         RunConfigOf(cfg.Config),
		Layers:         len(ls),
		CompressedSize: csize,
	}
	if !cfg.Created.IsZero() {
		meta.Created = cfg.Created.UTC()
	}
	if res.IndexDigest != (v1.Hash{}) {
		meta.IndexDigest = res.IndexDigest.String()
	}
	return meta, layers, nil
}

// addFacts completes meta from the flattened tree.
func addFacts(meta *Meta, rootfs *imgconv.Rootfs) {
	meta.Facts = rootfs.Facts()
	if !SupportedArch(meta.Arch) {
		meta.Facts.Warnings = append(meta.Facts.Warnings, fmt.Sprintf("Proxmox has no arch %q: containers cannot be created from this template", meta.Arch))
	}
	if a := meta.Facts.ShellArch; a != "" && a != meta.Arch {
		meta.Facts.Warnings = append(meta.Facts.Warnings, fmt.Sprintf("/bin/sh is built for %s but the image says %s", a, meta.Arch))
	}
}

// addRun decides what the template boots and puts the shim in when it is
// the shim.
func (b *Builder) addRun(rootfs *imgconv.Rootfs, meta *Meta, opts Options) error {
	mode := opts.Init
	if mode == "" {
		mode = InitAuto
	}
	ri, err := runInfo(rootfs, meta, mode)
	if err != nil {
		return &imgconv.Error{Image: meta.Ref, Err: err}
	}
	meta.Run = ri
	if ri.Init == "shim" {
		if err := installShim(rootfs, meta, opts.Shim); err != nil {
			if errors.Is(err, imgconv.ErrRestart) {
				return err
			}
			return &imgconv.Error{Image: meta.Ref, Err: err}
		}
	}
	return nil
}

// writeTemplate flattens the layers and writes the compressed tar to path,
// returning its SHA-256. The largest layer is decoded while the output is
// compressed (imgconv's streaming); meta gets the facts once that layer is
// in, and goes into the template as MetaPath. path is in the build's private
// directory: the cache renames it into place only when all succeeded.
func (b *Builder) writeTemplate(ctx context.Context, path string, layers []imgconv.Layer, o imgconv.Options, meta *Meta, opts Options) (string, imgconv.WriteStats, error) {
	rootfs, err := imgconv.Flatten(ctx, layers, o)
	if err != nil {
		return "", imgconv.WriteStats{}, err
	}
	defer rootfs.Close()
	f, err := os.Create(path)
	if err != nil {
		return "", imgconv.WriteStats{}, err
	}
	defer f.Close()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(newWriteback(f), h), 1<<20)
	zw, err := opts.Compression.NewWriter(bw, opts.Level)
	if err != nil {
		return "", imgconv.WriteStats{}, err
	}
	tw := rootfs.NewTarWriter(zw)
	var st imgconv.WriteStats
	err = tw.Stream(ctx)
	if err == nil {
		addFacts(meta, rootfs)
		err = b.addRun(rootfs, meta, opts)
	}
	if err == nil {
		embedded := *meta
		embedded.Ref = ""
		j, _ := json.MarshalIndent(embedded, "", "  ")
		err = rootfs.AddFile(MetaPath, 0o644, 0, 0, meta.Created, append(j, '\n'))
	}
	if err == nil {
		st, err = tw.Finish()
	}
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", st, err
	}
	return hex.EncodeToString(h.Sum(nil)), st, nil
}
