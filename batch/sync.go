package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/pvestore"
	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
	"github.com/pve-image/pve-image/tmplreg"
)

// SyncOptions say which storages a sync makes hold the build file's
// templates.
type SyncOptions struct {
	// Nodes or AllNodes, and Storage; empty takes output.proxmox's.
	Nodes    []string
	AllNodes bool
	Storage  string
	// Prune removes templates pve-image made for the same images beyond
	// the Keep newest (the file's count first); DryRun only says what
	// would change.
	Prune  bool
	Keep   int
	DryRun bool
}

// SyncReport is what a sync did on the storages, and the items it could
// not even resolve.
type SyncReport struct {
	*pvestore.Report
	// Items are the build file's images and platforms that failed before
	// any storage was looked at (Status failed).
	Items []*Result
}

// Err is every failure: nodes, templates, items.
func (r *SyncReport) Err() error {
	var errs []error
	for _, it := range r.Items {
		errs = append(errs, fmt.Errorf("%s %s: %s", it.Ref, it.Platform, it.Error))
	}
	return errors.Join(append(errs, r.Report.Err())...)
}

// Sync makes the storages hold every template of the build file (at the
// lock's digests, where it has them; the lock is not written). It finds
// each template's name and size from the cache, else the template
// registry's metadata, so that a storage already holding everything costs
// no download; what must be uploaded is fetched or converted then.
func (r *Runner) Sync(ctx context.Context, f *File, o SyncOptions) (*SyncReport, error) {
	if o.Keep < 1 {
		return nil, fmt.Errorf("--keep %d: keep at least 1", o.Keep)
	}
	nodes, allNodes, storage := o.Nodes, o.AllNodes, o.Storage
	if px := f.Output.Proxmox; px != nil && len(nodes) == 0 && !allNodes {
		nodes, allNodes = px.Nodes, px.AllNodes
	}
	if storage == "" && f.Output.Proxmox != nil {
		storage = f.Output.Proxmox.Storage
	}
	if storage == "" {
		storage = "local"
	}
	if len(nodes) == 0 && !allNodes {
		return nil, errors.New("no nodes: give --node N or --all-nodes (or output.proxmox in the build file)")
	}
	if r.Proxmox == nil {
		return nil, errors.New("no Proxmox connection")
	}
	ru, err := r.start(f)
	if err != nil {
		return nil, err
	}
	items := f.Items(Shard{})
	lock, err := LoadLock(LockPath(f.Path))
	if err != nil {
		return nil, err
	}
	if err := ru.pin(ctx, items, lock, false); err != nil {
		return nil, err
	}
	cl, err := r.Proxmox(ctx)
	if err != nil {
		return nil, err
	}
	hold := cache.NewHold()
	defer hold.Close()
	hctx := cache.WithHold(ctx, hold)
	wants := make([]*pvestore.Want, len(items))
	fails := make([]*Result, len(items))
	var closers []func()
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(hctx)
	g.SetLimit(r.parallel())
	for i, it := range items {
		g.Go(func() error {
			w, closer, err := ru.want(gctx, it)
			mu.Lock()
			defer mu.Unlock()
			if closer != nil {
				closers = append(closers, closer)
			}
			if err != nil {
				fails[i] = &Result{Ref: it.Ref, Platform: it.PlatformString(), Status: Failed, Error: err.Error(), Line: it.Image.Line, Destinations: []string{}}
				return nil
			}
			wants[i] = w
			return nil
		})
	}
	g.Wait()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep := &SyncReport{}
	var want []pvestore.Want
	seen := map[string]bool{}
	for i := range items {
		if fails[i] != nil {
			rep.Items = append(rep.Items, fails[i])
			continue
		}
		if !seen[wants[i].Name] {
			seen[wants[i].Name] = true
			want = append(want, *wants[i])
		}
	}
	targets, failed, err := pvestore.Targets(ctx, cl, nodes, allNodes, storage)
	if err != nil {
		return nil, err
	}
	rep.Report = pvestore.Sync(hctx, cl, targets, want, pvestore.SyncOptions{Prune: o.Prune, Keep: o.Keep, DryRun: o.DryRun, Progress: r.UploadProgress})
	rep.Failed = append(failed, rep.Failed...)
	return rep, ctx.Err()
}

// want says which template an item puts on the storages, without
// fetching it when the cache or the template registry can tell.
func (ru *run) want(ctx context.Context, it *Item) (*pvestore.Want, func(), error) {
	b := ru.builder(it, nil)
	rs, err := ru.resolve(ctx, it, b)
	if err != nil {
		return nil, nil, err
	}
	closer := func() { rs.Close() }
	opts := ru.opts[it.Image]
	key := b.Key(rs, opts)
	file := template.NameFor(rs, opts)
	var sum string
	var size int64
	if e, err := ru.r.Cache.LookupTemplate(ctx, key); err == nil {
		sum, size = e.SHA256, e.Size
	} else if cfg, lerr := ru.lookupConfig(ctx, key); lerr == nil {
		sum, size = cfg.SHA256, cfg.Size
	} else {
		tr, err := b.ConvertResolved(ctx, rs, opts)
		if err != nil {
			return nil, closer, err
		}
		sum, size = tr.Entry.SHA256, tr.Entry.Size
	}
	w := &pvestore.Want{Name: template.StorageName(file, sum), Size: size, SHA256: sum,
		Open: func(ctx context.Context) (string, func(), error) { return ru.open(ctx, b, rs, opts, sum) }}
	return w, closer, nil
}

// lookupConfig asks the template registry what the template of key is,
// without downloading it.
func (ru *run) lookupConfig(ctx context.Context, key string) (*tmplreg.Config, error) {
	if ru.lookup == nil {
		return nil, errors.New("no template registry")
	}
	return ru.lookup.Lookup(ctx, key)
}

// open gets the template into the cache (from the template registry, or
// converted) for an upload, held until done.
func (ru *run) open(ctx context.Context, b *template.Builder, rs *registry.Resolved, opts template.Options, sum string) (string, func(), error) {
	hold := cache.NewHold()
	tr, err := b.ConvertResolved(cache.WithHold(ctx, hold), rs, opts)
	if err != nil {
		hold.Close()
		return "", nil, err
	}
	if tr.Entry.SHA256 != sum {
		hold.Close()
		return "", nil, fmt.Errorf("the template's bytes (sha256:%s) are not those the template registry described (sha256:%s)", tr.Entry.SHA256, sum)
	}
	return tr.Path(), func() { hold.Close() }, nil
}
