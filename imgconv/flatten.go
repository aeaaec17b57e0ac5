package imgconv

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
)

// Default limits against size bombs. Large CUDA images expand to ~20 GiB and
// ~500k entries; these leave room above that while still stopping a layer
// that inflates without end.
const (
	DefaultMaxSize    = 64 << 30
	DefaultMaxEntries = 5_000_000
)

// Options control Flatten.
type Options struct {
	// Image names the image in errors.
	Image string
	// TempDir holds the spill files (unlinked at creation). Empty means
	// os.TempDir().
	TempDir string
	// MaxSize limits the total uncompressed bytes over all layers; 0 means
	// DefaultMaxSize, a negative value means no limit.
	MaxSize int64
	// MaxEntries limits the total tar entries over all layers; 0 means
	// DefaultMaxEntries, a negative value means no limit.
	MaxEntries int64
	// SquashHighIDs maps uids and gids of 65536 and above to 65534 instead of
	// refusing them.
	SquashHighIDs bool
	// FactsOnly skips keeping file contents: the result answers Facts but
	// cannot be written.
	FactsOnly bool
	// Parallel is the number of layers decoded at once; 0 means GOMAXPROCS.
	Parallel int
	// Stream picks the layer whose decoding is left for TarWriter.Stream,
	// where it overlaps compressing the output and needs no spill: 0 means
	// the largest layer (by compressed size), -1 none, k > 0 layer k-1.
	Stream int
	// Gunzip, if set, is an external gzip decoder (the path of Igzip, see
	// LookIgzip) for gzip layers of 1 MiB and more; "" decodes every
	// layer in this process. The bytes written do not depend on it. Its
	// failures are ErrExternalGunzip.
	Gunzip string
	// gunzipFrom overrides the 1 MiB, for tests.
	gunzipFrom int64
	// gunzipped, if set, is told of each layer the external decoder
	// reads, for tests to know it ran.
	gunzipped func(fromFile bool)
}

type flattener struct {
	opts      Options
	budget    budget
	bufs      sync.Pool // *[]byte copy buffers
	minGunzip int64     // the smallest gzip layer Options.Gunzip decodes
}

func newFlattener(opts Options) *flattener {
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	f := &flattener{opts: opts, minGunzip: minExternalGunzip}
	if opts.gunzipFrom > 0 {
		f.minGunzip = opts.gunzipFrom
	}
	f.budget.maxBytes = limit(opts.MaxSize, DefaultMaxSize)
	f.budget.maxEntries = limit(opts.MaxEntries, DefaultMaxEntries)
	f.bufs.New = func() any { b := make([]byte, 256<<10); return &b }
	return f
}

// Rootfs is a flattened image: the merged tree of all layers with file
// contents held in spill files until written. Close releases the spills.
//
// One layer may still be pending: Flatten leaves the largest layer to be
// decoded while the template is written (TarWriter.Stream). Until then the
// tree lacks that layer and the layers above it, so Facts, ReadFile and
// AddFile wait for Stream.
type Rootfs struct {
	tree    *tree
	spills  []*spill
	plnk    map[string]*inode
	dropped map[string]int // xattr names dropped over all layers
	facts   bool           // contents were not kept
	f       *flattener
	pending *pendingLayer
}

// pendingLayer is the layer Flatten left for streaming, with the layers
// above it decoded but not yet applied.
type pendingLayer struct {
	index int
	layer Layer
	upper []*decodedLayer
	ui    *upperIndex
}

// Flatten applies layers, bottom first, following the OCI image-spec layer
// rules. Layers are decoded concurrently and merged in order; one layer (see
// Options.Stream) is left for TarWriter.Stream.
func Flatten(ctx context.Context, layers []Layer, opts Options) (*Rootfs, error) {
	f := newFlattener(opts)
	par := opts.Parallel
	if par <= 0 {
		par = runtime.GOMAXPROCS(0)
	}
	stream := -1
	switch {
	case opts.FactsOnly || opts.Stream < 0 || len(layers) == 0:
	case opts.Stream > 0:
		stream = min(opts.Stream-1, len(layers)-1)
	default:
		stream = largest(layers)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		d   *decodedLayer
		err error
	}
	results := make([]chan result, len(layers))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	// Start layers in order so that the merge below, which also goes in
	// order, rarely waits on a layer that has not started.
	go func() {
		sem := make(chan struct{}, par)
		for i, l := range layers {
			if i == stream {
				results[i] <- result{}
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] <- result{err: ctx.Err()}
				continue
			}
			go func() {
				d, err := f.decodeLayer(ctx, i, l)
				<-sem
				results[i] <- result{d, err}
			}()
		}
	}()

	r := &Rootfs{tree: newTree(), spills: make([]*spill, len(layers)), plnk: map[string]*inode{}, facts: opts.FactsOnly, f: f}
	if stream >= 0 {
		r.pending = &pendingLayer{index: stream, layer: layers[stream]}
	}
	var firstErr error
	for i := range layers {
		res := <-results[i]
		if res.d != nil {
			r.spills[i] = res.d.spill
		}
		if firstErr != nil || i == stream {
			continue
		}
		if res.err != nil {
			firstErr = res.err
			cancel()
			continue
		}
		r.addDropped(res.d.dropped)
		if stream >= 0 && i > stream {
			r.pending.upper = append(r.pending.upper, res.d)
			continue
		}
		if err := r.apply(res.d); err != nil {
			firstErr = r.layerError(res.d, err)
			cancel()
			continue
		}
		res.d.entries = nil
	}
	if firstErr != nil {
		r.Close()
		return nil, firstErr
	}
	if r.pending != nil {
		r.pending.ui = newUpperIndex(r.pending.upper)
	}
	return r, nil
}

// largest is the index of the layer with the most compressed bytes, the
// last of equals; -1 when sizes are unknown.
func largest(layers []Layer) int {
	best, size := -1, int64(-1)
	for i, l := range layers {
		s, ok := l.(interface{ Size() (int64, error) })
		if !ok {
			return -1
		}
		n, err := s.Size()
		if err != nil {
			return -1
		}
		if n >= size {
			best, size = i, n
		}
	}
	return best
}

func (r *Rootfs) addDropped(m map[string]int) {
	for k, v := range m {
		if r.dropped == nil {
			r.dropped = map[string]int{}
		}
		r.dropped[k] += v
	}
}

func (r *Rootfs) layerError(d *decodedLayer, err error) error {
	if errors.Is(err, ErrRestart) {
		return err
	}
	return &Error{Image: r.f.opts.Image, Layer: d.digest, Path: pathOf(err), Err: errors.Unwrap(err)}
}

func limit(v, def int64) int64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// Close releases the spill files.
func (r *Rootfs) Close() error {
	for _, s := range r.spills {
		s.close()
	}
	return nil
}

// pathError carries the member path of a merge failure up to Flatten, which
// adds the image and layer.
type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string { return e.path + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

func pathOf(err error) string {
	var pe *pathError
	if errors.As(err, &pe) {
		return pe.path
	}
	return ""
}

// apply merges one layer. Whiteouts and opaque markers go first and see only
// the lower layers, so an entry the same layer re-creates survives whatever
// the order of the two in the tar. Entries then apply in tar order, the last
// of duplicates winning.
func (r *Rootfs) apply(d *decodedLayer) error {
	t := r.tree
	var removed *pathTrie[*node]
	hide := func(p string, n *node) {
		if removed == nil {
			removed = &pathTrie[*node]{}
		}
		removed.set(p, n)
	}
	for _, e := range d.entries {
		switch e.kind {
		case entryWhiteout:
			n := t.lookup(e.path)
			if n == nil {
				continue
			}
			if n.anyEmitted() {
				return &pathError{e.raw, ErrRestart}
			}
			t.remove(e.path)
			hide(e.path, n)
		case entryOpaque:
			if n := t.lookup(e.path); n != nil && n.kids != nil {
				for name, k := range n.kids {
					if k.anyEmitted() {
						return &pathError{e.raw, ErrRestart}
					}
					hide(joinPath(e.path, name), k)
				}
				clear(n.kids)
			}
		}
	}
	for _, e := range d.entries {
		var err error
		switch e.kind {
		case entryPut:
			_, err = t.put(e.path, e.ino)
		case entryLink:
			if e.link == e.path {
				continue
			}
			ino := r.linkTarget(e.link, removed)
			switch {
			case ino == nil:
				err = fmt.Errorf("%w (%q)", ErrBadHardlink, e.link)
			case ino.skipped:
				err = ErrRestart
			default:
				_, err = t.put(e.path, ino)
			}
		case entryPlnk:
			r.plnk[e.path] = e.ino
		}
		if err != nil {
			return &pathError{e.raw, err}
		}
	}
	return nil
}

// linkTarget finds the inode a hardlink names: in the tree as it stands, in
// what this layer's whiteouts just hid (a link to a lower file the same layer
// deletes keeps that file's content), or in the AUFS link store.
func (r *Rootfs) linkTarget(p string, removed *pathTrie[*node]) *inode {
	n := r.tree.lookup(p)
	if n == nil {
		// The nearest hidden ancestor (or p itself), walked down.
		if root, rest, ok := removed.deepest(p); ok {
			for n = root; n != nil && rest != ""; {
				var c string
				c, rest, _ = strings.Cut(rest, "/")
				n = n.kids[c]
			}
		}
	}
	if n == nil {
		if ino := r.plnk[p]; ino != nil {
			return ino
		}
		return nil
	}
	if n.ino.typ == tar.TypeDir {
		return nil
	}
	return n.ino
}
