package batch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/imgconv"
	"github.com/pve-image/pve-image/internal/ctxio"
	"github.com/pve-image/pve-image/pvestore"
	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
	"github.com/pve-image/pve-image/tmplreg"
)

// Events hears a build's progress. Implementations must be safe for
// concurrent use: items run in parallel.
type Events interface {
	Started(it *Item)
	// Fetched reports the bytes of an item's blobs downloaded so far, of
	// total known so far.
	Fetched(it *Item, done, total int64)
	Finished(it *Item, r *Result)
}

// Runner builds and syncs the templates of build files.
type Runner struct {
	Cache *cache.Cache
	// Registry is the base of every Puller's options (credentials,
	// mirrors, retries ...); Platform and Progress are set per item.
	Registry registry.Options
	// Version is the converter's version, part of every key.
	Version string
	// TemplateRegistry, if set, is where ready templates are looked up,
	// over the build file's template-registry and output.registry.
	TemplateRegistry string
	// Templates configures the template registry stores (credentials,
	// transport); chunk sizes come from the build file.
	Templates tmplreg.Options
	// Proxmox connects to Proxmox, for output.proxmox and Sync.
	Proxmox func(ctx context.Context) (pvestore.Client, error)
	// Shim loads pve-image-init: from path, or from the default places
	// when path is "" (nil, nil: none found, which only application images
	// need).
	Shim func(path string) (*template.Shim, error)
	// Parallel is how many items run at once; 0 means the number of
	// cores.
	Parallel int
	Events   Events
	Log      *slog.Logger
	// UploadProgress hears Proxmox uploads.
	UploadProgress pvestore.Progress
}

// BuildOptions say what Build does.
type BuildOptions struct {
	Shard Shard
	// Locked builds exactly the lock's digests and fails before any work
	// when an image is missing from it; Update resolves every tag again
	// and rewrites the lock. Neither: the lock's digests where it has
	// them, new images resolved and added.
	Locked, Update bool
	// DryRun resolves and reports what would be done, and writes nothing
	// (no lock, no template, no output).
	DryRun bool
	// LockOnly resolves and writes the lock, and builds nothing: a CI
	// pipeline's first job, whose lock every shard then builds --locked.
	LockOnly bool
}

func (r *Runner) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.DiscardHandler)
}

// run is the state of one Build or Sync.
type run struct {
	r       *Runner
	f       *File
	opts    map[*Image]template.Options
	lookup  *recordingRemote // nil without a template registry
	publish *tmplreg.Store   // nil without output.registry
	pins    map[string]v1.Hash
	pinErrs map[string]error

	targetsOnce sync.Once
	cl          pvestore.Client
	targets     []pvestore.Target
	targetsErr  error
}

// Build builds the file's templates of the shard and delivers them to the
// file's outputs. Items fail on their own: the report says which and why,
// and the others finish. The error is for what stops the whole build
// before any work (an *InvalidError: an image missing from the lock with
// Locked, an init binary that cannot be read) or a cancelled ctx.
func (r *Runner) Build(ctx context.Context, f *File, o BuildOptions) (*Report, error) {
	switch {
	case o.Locked && o.Update:
		return nil, errors.New("--locked and --update: give one")
	case o.LockOnly && (o.Locked || o.DryRun):
		return nil, errors.New("--lock-only writes the lock: not with --locked or --dry-run")
	}
	ru, err := r.start(f)
	if err != nil {
		return nil, err
	}
	items := f.Items(o.Shard)
	lock, err := LoadLock(LockPath(f.Path))
	if err != nil {
		return nil, err
	}
	writeLock := !o.Locked && !o.DryRun
	need := items
	if writeLock {
		// A lock holds every image of the file, whichever shard writes it.
		need = f.Items(Shard{})
	}
	if o.Locked {
		var missing []*FileError
		for _, it := range items {
			if lockable(it.Image.Reference) && lock.Digests[it.Ref] == (v1.Hash{}) {
				missing = append(missing, &FileError{File: f.Path, Line: it.Image.Line, Key: fmt.Sprintf("images[%d].ref", it.Image.Index),
					Msg: fmt.Sprintf("%s is not in %s (--locked builds only what it pins; run pve-image build --update to add it)", it.Ref, lock.Path)})
			}
		}
		if len(missing) > 0 {
			return nil, &InvalidError{Errs: dedupErrs(missing)}
		}
	}
	if err := ru.pin(ctx, need, lock, o.Update); err != nil {
		return nil, err
	}
	if writeLock {
		next := map[string]v1.Hash{}
		for _, it := range need {
			if d, ok := ru.pins[it.Ref]; ok {
				next[it.Ref] = d
			} else if d, ok := lock.Digests[it.Ref]; ok {
				next[it.Ref] = d // could not be resolved again: its items fail, its pin stays
			}
		}
		if !lock.equal(next) {
			lock.Digests = next
			if err := lock.Write(); err != nil {
				return nil, err
			}
		}
	}
	if o.LockOnly {
		return &Report{Results: []*Result{}}, nil
	}
	if f.Output.Dir != "" && !o.DryRun {
		if err := os.MkdirAll(ru.outDir(), 0o755); err != nil {
			return nil, fmt.Errorf("output.dir: %w", err)
		}
	}
	// Every item is resolved first (manifests only), so that two that
	// would write one file name are caught before any work, the later
	// one in the file failing, whatever finishes first.
	jobs := make([]*job, len(items))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.parallel() * 2)
	for i, it := range items {
		g.Go(func() error {
			jobs[i] = ru.prepare(gctx, it)
			return nil
		})
	}
	g.Wait()
	defer func() {
		for _, j := range jobs {
			j.close()
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ru.conflicts(jobs)
	rep := &Report{Results: make([]*Result, len(items))}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(r.parallel())
	for i, j := range jobs {
		g.Go(func() error {
			if r.Events != nil {
				r.Events.Started(j.it)
			}
			res := ru.buildJob(gctx, j, o.DryRun)
			rep.Results[i] = res
			if r.Events != nil {
				r.Events.Finished(j.it, res)
			}
			return nil
		})
	}
	g.Wait()
	for i, res := range rep.Results {
		if res == nil { // never started: the build was cancelled
			rep.Results[i] = &Result{Ref: items[i].Ref, Platform: items[i].PlatformString(), Status: Failed,
				Error: "not started: the build was interrupted", Line: items[i].Image.Line, Destinations: []string{}}
		}
	}
	return rep, ctx.Err()
}

// job is an item resolved, with what its build needs.
type job struct {
	it   *Item
	hold *cache.Hold
	b    *template.Builder
	rs   *registry.Resolved
	opts template.Options
	key  string
	// name is the template's file name: in output.dir, and the human tag
	// in output.registry.
	name string
	err  error
}

func (j *job) close() {
	if j.rs != nil {
		j.rs.Close()
	}
	j.hold.Close()
}

// prepare resolves an item; a failure is kept in the job, for its result.
func (ru *run) prepare(ctx context.Context, it *Item) *job {
	j := &job{it: it, hold: cache.NewHold(), opts: ru.opts[it.Image]}
	ctx = cache.WithHold(ctx, j.hold)
	var progress registry.Progress
	if ru.r.Events != nil {
		progress = &itemProgress{it: it, ev: ru.r.Events}
	}
	j.b = ru.builder(it, progress)
	if j.rs, j.err = ru.resolve(ctx, it, j.b); j.err == nil {
		j.key = j.b.Key(j.rs, j.opts)
		j.name = template.NameFor(j.rs, j.opts)
	}
	return j
}

// conflicts fails the later of two jobs that would write one file name
// (output.dir) or human tag (output.registry) with other bytes.
func (ru *run) conflicts(jobs []*job) {
	if ru.f.Output.Dir == "" && ru.f.Output.Registry == "" {
		return
	}
	first := map[string]*job{}
	for _, j := range jobs {
		if j.err != nil {
			continue
		}
		f, ok := first[j.name]
		switch {
		case !ok:
			first[j.name] = j
		case f.key != j.key:
			j.err = fmt.Errorf("%s would be written with other options by images[%d] (line %d) too; name them apart (another tag, or separate build files)",
				j.name, f.it.Image.Index, f.it.Image.Line)
		}
	}
}

func (r *Runner) parallel() int {
	if r.Parallel > 0 {
		return r.Parallel
	}
	return runtime.NumCPU()
}

// dedupErrs keeps one error per line and key.
func dedupErrs(errs []*FileError) []*FileError {
	seen := map[string]bool{}
	var out []*FileError
	for _, e := range errs {
		if k := e.Error(); !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	return out
}

// lockable says whether a reference can move, and so is pinned in the
// lock: registry tags and local archives; digests pin themselves.
func lockable(ref registry.Reference) bool {
	if ref.Transport != registry.Docker {
		return true
	}
	_, isTag := ref.Name.(name.Tag)
	return isTag
}

// start checks what the file needs before any work: conversion options
// (and init binaries), template registries.
func (r *Runner) start(f *File) (*run, error) {
	ru := &run{r: r, f: f, opts: map[*Image]template.Options{}, pins: map[string]v1.Hash{}, pinErrs: map[string]error{}}
	shims := map[string]*template.Shim{}
	var errs []*FileError
	for i := range f.Images {
		im := &f.Images[i]
		o, err := r.options(f, im, shims)
		if err != nil {
			errs = append(errs, &FileError{File: f.Path, Line: im.Line, Key: fmt.Sprintf("images[%d]", im.Index), Msg: err.Error()})
			continue
		}
		ru.opts[im] = o
	}
	if len(errs) > 0 {
		return nil, &InvalidError{Errs: errs}
	}
	lookup := r.TemplateRegistry
	if lookup == "" {
		lookup = f.TemplateRegistry
	}
	if lookup == "" {
		lookup = f.Output.Registry
	}
	topts := r.Templates
	topts.Log = r.log()
	if lookup != "" {
		s, err := tmplreg.New(lookup, topts)
		if err != nil {
			return nil, err
		}
		ru.lookup = &recordingRemote{Store: s, fetched: map[string]bool{}}
	}
	if f.Output.Registry != "" {
		popts := topts
		popts.ChunkSize = f.Output.ChunkSize
		s, err := tmplreg.New(f.Output.Registry, popts)
		if err != nil {
			return nil, err
		}
		ru.publish = s
	}
	return ru, nil
}

// options turns an image's build file options into convert's.
func (r *Runner) options(f *File, im *Image, shims map[string]*template.Shim) (template.Options, error) {
	c := im.Convert
	o := template.Options{Compression: template.Zstd, MaxSize: 64 << 30, MaxEntries: imgconv.DefaultMaxEntries, Init: template.InitAuto}
	if c.Compression != nil {
		o.Compression = compressions[*c.Compression]
	}
	if c.Format != nil && *c.Format == "oci-archive" {
		o.Format, o.Compression = template.FormatOCIArchive, template.None
	}
	if c.Level != nil {
		o.Level = *c.Level
	}
	if c.SquashHighIDs != nil {
		o.SquashHighIDs = *c.SquashHighIDs
	}
	if c.MaxSize != nil {
		o.MaxSize = *c.MaxSize
	}
	if c.MaxEntries != nil {
		o.MaxEntries = *c.MaxEntries
	}
	if c.Init != nil {
		m, err := template.ParseInitMode(*c.Init)
		if err != nil {
			return o, err
		}
		o.Init = m
	}
	if o.Init == template.InitNone || r.Shim == nil {
		return o, nil
	}
	path := ""
	if c.InitBinary != nil {
		path = *c.InitBinary
		if !filepath.IsAbs(path) {
			path = filepath.Join(f.Dir, path)
		}
	}
	shim, ok := shims[path]
	if !ok {
		var err error
		if shim, err = r.Shim(path); err != nil {
			return o, fmt.Errorf("init-binary: %w", err)
		}
		shims[path] = shim
	}
	o.Shim = shim
	return o, nil
}

// pin finds the digest each reference of items resolves to: the lock's,
// unless update, else the registry's now. A reference that cannot be
// resolved fails its items (pinErrs), not the build.
func (ru *run) pin(ctx context.Context, items []*Item, lock *Lock, update bool) error {
	var todo []*Item
	seen := map[string]bool{}
	for _, it := range items {
		if seen[it.Ref] || !lockable(it.Image.Reference) {
			continue
		}
		seen[it.Ref] = true
		if d, ok := lock.Digests[it.Ref]; ok && !update {
			ru.pins[it.Ref] = d
			continue
		}
		todo = append(todo, it)
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(ru.r.parallel() * 2)
	for _, it := range todo {
		g.Go(func() error {
			d, err := ru.resolveRoot(gctx, it)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				ru.pinErrs[it.Ref] = err
			} else {
				ru.pins[it.Ref] = d
			}
			return nil
		})
	}
	g.Wait()
	return ctx.Err()
}

// resolveRoot is the digest a reference resolves to at its source: the
// index's, or the manifest's for single-platform images. Each of the
// image's platforms is tried in turn: one the image lacks fails its own
// item later, not the others.
func (ru *run) resolveRoot(ctx context.Context, it *Item) (v1.Hash, error) {
	hold := cache.NewHold()
	defer hold.Close()
	var first error
	for _, p := range it.Image.Platforms {
		res, err := ru.puller(&Item{Image: it.Image, Ref: it.Ref, Platform: p}, nil).Resolve(cache.WithHold(ctx, hold), it.Image.Reference)
		if err == nil {
			defer res.Close()
			return rootDigest(res), nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return v1.Hash{}, first
}

func rootDigest(res *registry.Resolved) v1.Hash {
	if res.IndexDigest != (v1.Hash{}) {
		return res.IndexDigest
	}
	return res.Digest
}

// puller is a Puller for the item's platform.
func (ru *run) puller(it *Item, progress registry.Progress) *registry.Puller {
	o := ru.r.Registry
	o.Platform, o.Progress = it.Platform, progress
	return registry.NewPuller(ru.r.Cache, o)
}

func (ru *run) builder(it *Item, progress registry.Progress) *template.Builder {
	b := &template.Builder{Cache: ru.r.Cache, Puller: ru.puller(it, progress), Version: ru.r.Version, Log: ru.r.log()}
	if ru.lookup != nil {
		b.Remote = ru.lookup
	}
	return b
}

// resolve resolves an item at its pinned digest. Registry tags are
// resolved by digest and keep their tag for naming; local sources must
// still resolve to the digest pinned.
func (ru *run) resolve(ctx context.Context, it *Item, b *template.Builder) (*registry.Resolved, error) {
	if err, ok := ru.pinErrs[it.Ref]; ok {
		return nil, err
	}
	ref := it.Image.Reference
	pin, pinned := ru.pins[it.Ref]
	if pinned && ref.Transport == registry.Docker {
		byDigest, err := registry.ParseReference(ref.Name.Context().String()+"@"+pin.String(), ru.r.Registry.Insecure)
		if err != nil {
			return nil, err
		}
		res, err := b.Puller.Resolve(ctx, byDigest)
		if err != nil {
			return nil, err
		}
		// Named after the tag the build file gives, as an unpinned
		// build would name it; the bytes do not depend on it.
		res.Ref, res.Tag = ref, ref.TagOrDigest()
		return res, nil
	}
	res, err := b.Puller.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	if pinned && rootDigest(res) != pin {
		res.Close()
		return nil, fmt.Errorf("image %s now resolves to %s; the lock file pins %s (run pve-image build --update to take the new one)", ref, rootDigest(res), pin)
	}
	return res, nil
}

// buildJob converts one item and delivers it.
func (ru *run) buildJob(ctx context.Context, j *job, dryRun bool) *Result {
	start := time.Now()
	it := j.it
	res := &Result{Ref: it.Ref, Platform: it.PlatformString(), Line: it.Image.Line, Destinations: []string{}}
	err := j.err
	if err == nil {
		// The job's hold, under this context: cancelling the build
		// cancels the item.
		err = ru.buildJobInto(cache.WithHold(ctx, j.hold), j, dryRun, res)
	}
	res.Seconds = float64(time.Since(start).Milliseconds()) / 1000
	if err != nil {
		res.Status, res.Error = Failed, err.Error()
	}
	return res
}

func (ru *run) buildJobInto(ctx context.Context, j *job, dryRun bool, res *Result) error {
	b, rs, opts := j.b, j.rs, j.opts
	res.Digest, res.Key = rs.Digest.String(), j.key
	if dryRun {
		return ru.plan(ctx, rs, opts, res)
	}
	for attempt := 0; ; attempt++ {
		tr, err := b.ConvertResolved(ctx, rs, opts)
		if err != nil {
			return err
		}
		res.Status, res.Origin = Built, FromConverted
		switch {
		case tr.Hit:
			res.Status, res.Origin = Cached, FromCache
		case ru.lookup.took(res.Key):
			res.Status, res.Origin = Cached, FromRegistry
		}
		res.File, res.SHA256, res.Size = tr.Path(), tr.Entry.SHA256, tr.Entry.Size
		res.Destinations = []string{}
		err = ru.deliver(ctx, j.it, opts, tr, res)
		if errors.Is(err, cache.ErrDigestMismatch) && attempt == 0 {
			// The cached bytes rotted since they were built: build again
			// and deliver what is right.
			ru.r.log().Warn("cached template is damaged; building it again", "template", tr.Path(), "error", err)
			if err = ru.r.Cache.DropTemplate(ctx, tr.Entry); err == nil {
				continue
			}
		}
		return err
	}
}

// plan fills a dry run's result: cached when the cache or the template
// registry has the template, else planned.
func (ru *run) plan(ctx context.Context, rs *registry.Resolved, opts template.Options, res *Result) error {
	res.Status = Planned
	if e, err := ru.r.Cache.LookupTemplate(ctx, res.Key); err == nil {
		res.Status, res.Origin = Cached, FromCache
		res.File, res.SHA256, res.Size = e.Path(), e.SHA256, e.Size
		return nil
	}
	if ru.lookup != nil {
		if cfg, err := ru.lookup.Lookup(ctx, res.Key); err == nil {
			res.Status, res.Origin = Cached, FromRegistry
			res.File, res.SHA256, res.Size = template.NameFor(rs, opts), cfg.SHA256, cfg.Size
		}
	}
	return nil
}

func (ru *run) outDir() string {
	d := ru.f.Output.Dir
	if !filepath.IsAbs(d) {
		d = filepath.Join(ru.f.Dir, d)
	}
	return d
}

// deliver puts the template where the build file says: output.dir,
// output.registry, output.proxmox. Every destination is tried; the error
// joins those that failed.
func (ru *run) deliver(ctx context.Context, it *Item, opts template.Options, tr *template.Result, res *Result) error {
	var errs []error
	if ru.f.Output.Dir != "" {
		dst := filepath.Join(ru.outDir(), tr.Entry.File)
		err := copyIfChanged(ctx, tr, dst)
		if errors.Is(err, cache.ErrDigestMismatch) {
			return err
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("output.dir: %w", err))
		} else {
			res.File = dst
			res.Destinations = append(res.Destinations, "dir:"+dst)
		}
	}
	if ru.publish != nil {
		// The other platforms of the image in this file join the human
		// tag's index, whichever runner publishes them.
		pub, err := ru.publish.Publish(ctx, tmplreg.TemplateOf(tr, opts), tmplreg.PublishOptions{Siblings: it.Image.Platforms})
		if errors.Is(err, cache.ErrDigestMismatch) {
			return err
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("output.registry: %w", err))
		}
		if pub != nil {
			res.Destinations = append(res.Destinations, "registry:"+pub.Ref)
		}
	}
	if px := ru.f.Output.Proxmox; px != nil {
		cl, targets, err := ru.proxmoxTargets(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("output.proxmox: %w", err))
		} else {
			w := pvestore.Want{Name: template.StorageName(tr.Entry.File, tr.Entry.SHA256), Size: tr.Entry.Size, SHA256: tr.Entry.SHA256,
				Open: func(context.Context) (string, func(), error) { return tr.Path(), nil, nil }}
			rep := pvestore.Sync(ctx, cl, targets, []pvestore.Want{w}, pvestore.SyncOptions{Progress: ru.r.UploadProgress})
			for _, ev := range rep.Events {
				res.Destinations = append(res.Destinations, "proxmox:"+ev.Node+"/"+ev.Volid)
			}
			if err := rep.Err(); err != nil {
				errs = append(errs, fmt.Errorf("output.proxmox: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// copyIfChanged copies the template to dst unless dst holds its bytes
// already: a build run again after an interruption redoes nothing it
// finished.
func copyIfChanged(ctx context.Context, tr *template.Result, dst string) error {
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() && fi.Size() == tr.Entry.Size {
		if sum, err := fileSHA256(ctx, dst); err == nil && sum == tr.Entry.SHA256 {
			return nil
		}
	}
	return template.CopyFile(ctx, tr.Path(), dst, tr.Entry.SHA256)
}

func fileSHA256(ctx context.Context, p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, ctxio.Reader(ctx, f), make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// proxmoxTargets connects once and finds output.proxmox's storages.
func (ru *run) proxmoxTargets(ctx context.Context) (pvestore.Client, []pvestore.Target, error) {
	ru.targetsOnce.Do(func() {
		px := ru.f.Output.Proxmox
		if ru.r.Proxmox == nil {
			ru.targetsErr = errors.New("no Proxmox connection")
			return
		}
		if ru.cl, ru.targetsErr = ru.r.Proxmox(ctx); ru.targetsErr != nil {
			return
		}
		storage := px.Storage
		if storage == "" {
			storage = "local"
		}
		var failed []*pvestore.NodeError
		ru.targets, failed, ru.targetsErr = pvestore.Targets(ctx, ru.cl, px.Nodes, px.AllNodes, storage)
		if ru.targetsErr == nil && len(failed) > 0 {
			errs := make([]string, len(failed))
			for i, f := range failed {
				errs[i] = f.Error()
			}
			ru.targetsErr = errors.New(strings.Join(errs, "; "))
		}
	})
	return ru.cl, ru.targets, ru.targetsErr
}

// recordingRemote is the template registry as the Builders see it; it
// notes which keys it served, so that the report can say a template came
// from there.
type recordingRemote struct {
	*tmplreg.Store
	mu      sync.Mutex
	fetched map[string]bool
}

func (r *recordingRemote) FetchTemplate(ctx context.Context, req template.RemoteRequest) (template.Meta, error) {
	m, err := r.Store.FetchTemplate(ctx, req)
	if err == nil {
		r.mu.Lock()
		r.fetched[req.Key] = true
		r.mu.Unlock()
	}
	return m, err
}

func (r *recordingRemote) took(key string) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetched[key]
}

// itemProgress sums an item's blob downloads for Events.Fetched.
type itemProgress struct {
	it          *Item
	ev          Events
	mu          sync.Mutex
	done, total int64
}

func (p *itemProgress) Start(d v1.Descriptor) {
	p.mu.Lock()
	p.total += d.Size
	done, total := p.done, p.total
	p.mu.Unlock()
	p.ev.Fetched(p.it, done, total)
}

func (p *itemProgress) Advance(d v1.Descriptor, n int64) {
	p.mu.Lock()
	p.done += n
	done, total := p.done, p.total
	p.mu.Unlock()
	p.ev.Fetched(p.it, done, total)
}

func (p *itemProgress) Done(v1.Descriptor, bool, error) {}
