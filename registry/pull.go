package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// BlobStore is where pulled blobs go. *cache.Cache is one.
type BlobStore interface {
	HasBlob(h v1.Hash) bool
	OpenBlob(h v1.Hash) (*os.File, error)
	ReadBlob(h v1.Hash) ([]byte, error)
	// PutBlob stores what open returns as blob h, refusing content that
	// does not hash to h. It calls open only if h is absent.
	PutBlob(ctx context.Context, h v1.Hash, open func() (io.ReadCloser, error)) (int64, error)
}

// Progress hears about blob downloads. Implementations must be safe for
// concurrent use: layers download in parallel.
type Progress interface {
	Start(d v1.Descriptor)
	Advance(d v1.Descriptor, n int64)
	// Done reports the end of one blob: fetched, already present
	// (cached), or failed.
	Done(d v1.Descriptor, cached bool, err error)
}

// Options configure a Puller.
type Options struct {
	// Platform selects the manifest from multi-platform images; the zero
	// value means HostPlatform().
	Platform v1.Platform
	// Insecure lists registries (host or host:port) reached over plain
	// HTTP; localhost and 127.0.0.0/8 always are.
	Insecure []string
	// Username and Password, when set, authenticate to the image's own
	// registry ahead of the keychain; Auth does the same with any of
	// Docker's forms (identity token, registry token) and wins over them.
	Username, Password string
	Auth               *authn.AuthConfig
	// Keychain finds credentials; nil means Docker's config.json and
	// credential helpers (authn.DefaultKeychain).
	Keychain authn.Keychain
	// Transport carries registry requests; nil means remote.DefaultTransport.
	Transport http.RoundTripper
	// Mirrors are tried before the registries they stand in for.
	Mirrors Mirrors
	// Jobs is how many layers download at once; 0 means 3, as Docker.
	Jobs int
	// Version goes into the User-Agent.
	Version string
	// Progress, if set, hears about downloads.
	Progress Progress
	// Retries is how many times a registry request that failed in a
	// passing way (connection dropped or refused, 408, 429, 5xx, stalled)
	// is tried again, and how many times an interrupted blob download is
	// resumed; 0 means DefaultRetries, negative none.
	Retries int
	// StallTimeout fails a request (to be retried) when no bytes arrive
	// for this long; 0 means DefaultStallTimeout.
	StallTimeout time.Duration
	// Offline resolves registry references from the store alone: tags to
	// the digest they last resolved to, and every blob must be present.
	Offline bool
	// Tags remembers what registry tags resolve to, for Offline and for
	// falling back to the last digest while a registry is unreachable;
	// nil means the store, if it is a TagStore.
	Tags TagStore
	// Log hears retries and fallbacks; nil discards them.
	Log *slog.Logger
}

// Puller resolves references and fetches their blobs into a store.
type Puller struct {
	store  BlobStore
	opts   Options
	policy *retryPolicy
	log    *slog.Logger
	// feedLimit bounds what each layer's feed buffers (feedLimit, the
	// constant, unless a test says otherwise).
	feedLimit int
}

// NewPuller returns a Puller storing into store.
func NewPuller(store BlobStore, opts Options) *Puller {
	if opts.Platform.OS == "" {
		opts.Platform = HostPlatform()
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 3
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	if opts.Transport == nil {
		opts.Transport = remote.DefaultTransport
	}
	if ts, ok := store.(TagStore); ok && opts.Tags == nil {
		opts.Tags = ts
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Puller{store: store, opts: opts, policy: newRetryPolicy(opts.Retries, opts.StallTimeout, log), log: log, feedLimit: feedLimit}
}

// Resolved is a reference pinned to the manifest of one platform. Its
// manifest (and index, if any) are in the store.
type Resolved struct {
	Ref Reference
	// Repository and Tag name the image for people and file names: the
	// reference's, or what an archive's own metadata says.
	Repository, Tag string
	Digest          v1.Hash // of the platform's manifest
	IndexDigest     v1.Hash // of the index it was chosen from; zero if none
	MediaType       types.MediaType
	RawManifest     []byte
	Manifest        *v1.Manifest
	Platform        v1.Platform
	// FromCache says the tag was resolved from the store (Offline, or the
	// registry was unreachable), to the digest it resolved to at
	// TagResolved.
	FromCache   bool
	TagResolved time.Time

	src source
}

// Close releases the source (an open archive).
func (r *Resolved) Close() error {
	if r.src != nil {
		return r.src.close()
	}
	return nil
}

// Resolve finds the manifest ref names for the Puller's platform. A
// registry tag costs one manifest request when the platform's manifest and
// config are already stored; a digest whose manifest is stored costs none.
func (p *Puller) Resolve(ctx context.Context, ref Reference) (*Resolved, error) {
	src, err := p.source(ref)
	if err != nil {
		return nil, err
	}
	r, err := p.resolve(ctx, ref, src)
	if err != nil {
		src.close()
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	return r, nil
}

func (p *Puller) resolve(ctx context.Context, ref Reference, src source) (*Resolved, error) {
	r := &Resolved{Ref: ref, src: src, Repository: ref.Repository(), Tag: ref.TagOrDigest()}
	desc, raw, err := p.root(ctx, ref, src, r)
	if err != nil {
		return nil, err
	}
	if n, ok := src.(namer); ok {
		switch repo, tag := n.name(); {
		case repo != "":
			r.Repository, r.Tag = repo, tag
		case r.Tag == "":
			r.Tag = tag
		}
	}
	if desc.MediaType.IsSchema1() {
		return nil, fmt.Errorf("Docker schema 1 manifests (%s) are not supported; push the image again with a current client", desc.MediaType)
	}
	if desc.MediaType.IsIndex() {
		r.IndexDigest = desc.Digest
		if desc, err = p.choose(raw); err != nil {
			return nil, err
		}
		if raw, err = p.manifestBytes(ctx, src, desc); err != nil {
			return nil, err
		}
	}
	if !desc.MediaType.IsImage() {
		return nil, fmt.Errorf("%s is a %q, not an image manifest", desc.Digest, desc.MediaType)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	switch m.Config.MediaType {
	case types.OCIConfigJSON, types.DockerConfigJSON, "":
	default:
		return nil, fmt.Errorf("manifest %s is not a container image: its config is a %q", desc.Digest, m.Config.MediaType)
	}
	r.Digest, r.MediaType, r.RawManifest, r.Manifest = desc.Digest, desc.MediaType, raw, &m
	if desc.Platform != nil {
		r.Platform = *desc.Platform
		return r, nil
	}
	// A single-platform image says its platform only in its config.
	cfg, err := p.configFile(ctx, r)
	if err != nil {
		return nil, err
	}
	r.Platform = v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	if r.Platform.OS == "" && r.Platform.Architecture == "" {
		// Some builders (crane append without a base) leave the platform
		// out; nothing contradicts the one asked for.
		r.Platform = p.opts.Platform
	}
	if !matchPlatform(r.Platform, p.opts.Platform) {
		return nil, fmt.Errorf("image is for %s only, not %s (choose it with --platform %s)",
			PlatformString(r.Platform), PlatformString(p.opts.Platform), PlatformString(r.Platform))
	}
	return r, nil
}

// root returns the reference's top manifest or index, from the store when a
// digest names it. A tag's digest is remembered; when its registry cannot
// be reached, the digest it last resolved to is used, with a warning.
func (p *Puller) root(ctx context.Context, ref Reference, src source, r *Resolved) (v1.Descriptor, []byte, error) {
	if d, ok := ref.digest(); ok {
		if desc, raw, ok := p.storedManifest(d); ok {
			return desc, raw, nil
		}
	}
	desc, raw, err := src.root(ctx)
	if err != nil {
		if desc, raw, ok := p.staleTag(ref, err, r); ok {
			return desc, raw, nil
		}
		return desc, nil, err
	}
	if o, ok := src.(*offlineSource); ok {
		r.FromCache, r.TagResolved = true, o.resolved
		return desc, raw, nil
	}
	if d, ok := ref.digest(); ok && d != desc.Digest {
		return desc, nil, fmt.Errorf("registry returned manifest %s for %s", desc.Digest, d)
	}
	if _, err := p.store.PutBlob(ctx, desc.Digest, bytesOpener(raw)); err != nil {
		return desc, nil, fmt.Errorf("manifest: %w", err)
	}
	if _, isTag := ref.Name.(name.Tag); isTag && ref.Transport == Docker && p.opts.Tags != nil {
		if err := p.opts.Tags.PutTag(ref.String(), desc.Digest); err != nil {
			p.log.Warn("cannot remember what the tag resolved to", "image", ref.String(), "error", err)
		}
	}
	return desc, raw, nil
}

// storedManifest reads a manifest or index from the store.
func (p *Puller) storedManifest(d v1.Hash) (v1.Descriptor, []byte, bool) {
	if !p.store.HasBlob(d) {
		return v1.Descriptor{}, nil, false
	}
	raw, err := p.store.ReadBlob(d)
	if err != nil {
		return v1.Descriptor{}, nil, false
	}
	mt, ok := sniffMediaType(raw)
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}, raw, ok
}

func (r Reference) digest() (v1.Hash, bool) {
	if r.Transport != Docker {
		return v1.Hash{}, false
	}
	d, ok := r.Name.(interface{ DigestStr() string })
	if !ok {
		return v1.Hash{}, false
	}
	h, err := v1.NewHash(d.DigestStr())
	return h, err == nil
}

// sniffMediaType reads a stored manifest's own mediaType field, or guesses
// from its shape when the field is absent (allowed for OCI).
func sniffMediaType(raw []byte) (types.MediaType, bool) {
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Config    json.RawMessage `json:"config"`
	}
	if json.Unmarshal(raw, &probe) != nil {
		return "", false
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType, true
	case probe.Manifests != nil:
		return types.OCIImageIndex, true
	case probe.Config != nil:
		return types.OCIManifestSchema1, true
	}
	return "", false
}

// choose picks the platform's manifest from an index, or says which
// platforms there are.
func (p *Puller) choose(raw []byte) (v1.Descriptor, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("index: %w", err)
	}
	want := p.opts.Platform
	var avail []string
	var loose *v1.Descriptor
	for i, d := range idx.Manifests {
		if d.Platform == nil || d.Platform.OS == "unknown" || !d.MediaType.IsImage() {
			continue // attestations and nested indexes carry no platform of their own
		}
		avail = append(avail, PlatformString(*d.Platform))
		if !matchPlatform(*d.Platform, want) {
			continue
		}
		if d.Platform.Variant == want.Variant {
			return d, nil
		}
		if loose == nil {
			loose = &idx.Manifests[i]
		}
	}
	if loose != nil {
		return *loose, nil
	}
	slices.Sort(avail)
	return v1.Descriptor{}, fmt.Errorf("no manifest for platform %s; the image has: %s",
		PlatformString(want), strings.Join(slices.Compact(avail), ", "))
}

func (p *Puller) manifestBytes(ctx context.Context, src source, d v1.Descriptor) ([]byte, error) {
	if p.store.HasBlob(d.Digest) {
		// A blob removed or found damaged since is fetched again.
		if raw, err := p.store.ReadBlob(d.Digest); err == nil {
			return raw, nil
		}
	}
	if err := checkDeclared(d, "manifest"); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d.Digest, err)
	}
	rc, err := src.blob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	raw, err := io.ReadAll(&sizedReader{r: rc, size: d.Size})
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d.Digest, err)
	}
	if _, err := p.store.PutBlob(ctx, d.Digest, bytesOpener(raw)); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return raw, nil
}

// ConfigFile returns the resolved image's config, fetching it into the store
// if needed.
func (p *Puller) ConfigFile(ctx context.Context, r *Resolved) (*v1.ConfigFile, error) {
	cfg, err := p.configFile(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", r.Ref, err)
	}
	return cfg, nil
}

func (p *Puller) configFile(ctx context.Context, r *Resolved) (*v1.ConfigFile, error) {
	err := checkDeclared(r.Manifest.Config, "config")
	if err == nil {
		err = p.fetchBlob(ctx, r.src, r.Manifest.Config, false)
	}
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", r.Manifest.Config.Digest, err)
	}
	raw, err := p.store.ReadBlob(r.Manifest.Config.Digest)
	if err != nil {
		return nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", r.Manifest.Config.Digest, err)
	}
	return cfg, nil
}

// Fetch brings the config and every layer of r into the store, layers in
// parallel, and returns the image as the store holds it.
func (p *Puller) Fetch(ctx context.Context, r *Resolved) (v1.Image, error) {
	d, err := p.Start(ctx, r)
	if err != nil {
		return nil, err
	}
	if err := d.Wait(); err != nil {
		return nil, err
	}
	return d.Image(), nil
}

// Download is a fetch under way: the config is stored, layers are arriving.
type Download struct {
	img    v1.Image
	store  BlobStore
	cancel context.CancelFunc
	g      *errgroup.Group
	blobs  map[v1.Hash]*pendingBlob
}

type pendingBlob struct {
	done   chan struct{}
	err    error
	digest v1.Hash
	size   int64
	feed   *feed
}

// Start fetches the config, then starts fetching the layers in parallel
// and returns at once. Reading a layer of Image waits for that layer only,
// so layers can be used while later ones still download; a layer read
// while it downloads gets its bytes as they arrive (feed).
func (p *Puller) Start(ctx context.Context, r *Resolved) (*Download, error) {
	if _, err := p.configFile(ctx, r); err != nil {
		return nil, fmt.Errorf("image %s: %w", r.Ref, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.Jobs)
	d := &Download{store: p.store, cancel: cancel, g: g, blobs: map[v1.Hash]*pendingBlob{}}
	for _, l := range r.Manifest.Layers {
		if d.blobs[l.Digest] == nil {
			d.blobs[l.Digest] = &pendingBlob{done: make(chan struct{}), digest: l.Digest, size: l.Size, feed: newFeed(p.feedLimit)}
		}
	}
	started := map[v1.Hash]bool{}
	go func() {
		for _, l := range r.Manifest.Layers {
			if started[l.Digest] {
				continue
			}
			started[l.Digest] = true
			pb := d.blobs[l.Digest]
			// Go blocks while Jobs downloads run, which keeps them in
			// layer order: the flattener reads layers in that order.
			g.Go(func() error {
				err := checkDeclared(l, "layer")
				if err == nil {
					err = p.fetchBlobTee(gctx, r.src, l, true, pb.feed)
				}
				if err != nil {
					err = fmt.Errorf("image %s: layer %s: %w", r.Ref, l.Digest, err)
				}
				pb.err = err
				pb.feed.end()
				close(pb.done)
				return err
			})
		}
	}()
	d.img = &waitingImage{Image: mustStored(p.store, r), d: d}
	return d, nil
}

func mustStored(store BlobStore, r *Resolved) v1.Image {
	img, _ := StoredImage(store, r.RawManifest, r.Manifest, r.MediaType)
	return img
}

// Image is the image being fetched.
func (d *Download) Image() v1.Image { return d.img }

// Wait returns when every layer is stored, with the first error.
func (d *Download) Wait() error {
	for _, pb := range d.blobs {
		<-pb.done
	}
	return d.g.Wait()
}

// Stop cancels downloads still running, waits for them, and returns the
// first error of a download that failed on its own (not by this cancel).
func (d *Download) Stop() error {
	d.cancel()
	d.Wait()
	for _, pb := range d.blobs {
		if pb.err != nil && !errors.Is(pb.err, context.Canceled) {
			return pb.err
		}
	}
	return nil
}

// Verify waits for layer h's download to end and returns its error: a
// layer read as it arrived was read before its digest was checked, so a
// failure found in its content may be the registry's (a tampered blob)
// rather than the image's.
func (d *Download) Verify(h v1.Hash) error {
	if d.blobs[h] == nil {
		return nil
	}
	return d.wait(h)
}

func (d *Download) wait(h v1.Hash) error {
	pb := d.blobs[h]
	if pb == nil {
		return nil
	}
	<-pb.done
	return pb.err
}

// waitingImage is a stored image whose layers wait for their download.
type waitingImage struct {
	v1.Image
	d *Download
}

func (w *waitingImage) Layers() ([]v1.Layer, error) {
	ls, err := w.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = &waitingLayer{Layer: l, d: w.d}
	}
	return out, nil
}

type waitingLayer struct {
	v1.Layer
	d *Download
}

// Compressed returns the stored blob once it is in, or, while it still
// downloads, a reader of the bytes as they arrive whose end comes only
// after the blob proved to match its digest.
func (l *waitingLayer) Compressed() (io.ReadCloser, error) {
	h, err := l.Digest()
	if err != nil {
		return nil, err
	}
	pb := l.d.blobs[h]
	if pb != nil && pb.feed.attach() {
		return &feedReader{pb: pb, open: l.Layer.Compressed}, nil
	}
	if err := l.d.wait(h); err != nil {
		return nil, err
	}
	return l.Layer.Compressed()
}

// feedLimit bounds what a feed buffers for its reader. A reader that keeps
// up with the download (a remote registry, a fast decoder) never comes
// near it; one that falls behind reads the rest from the stored blob.
const feedLimit = 16 << 20

// feed hands a layer's bytes from its download to one reader as they
// arrive, before the blob is stored. What it buffers is bounded: a feed
// nobody reads yet drops its bytes at the limit (the reader, when it comes,
// waits for the stored blob), and one whose reader falls behind stops
// taking more (the reader goes on from the stored blob where the feed
// stopped).
type feed struct {
	mu       sync.Mutex
	cond     sync.Cond
	limit    int
	chunks   [][]byte // arrived, not yet read
	buffered int      // bytes in chunks
	attached bool     // a reader takes from the feed
	stopped  bool     // no more bytes come: dropped, or the limit was hit
	ended    bool     // the download is over, whatever its outcome
	// restarted: the download started over, and what the feed gave came
	// from an attempt that failed (see restart).
	restarted bool
}

func newFeed(limit int) *feed {
	f := &feed{limit: limit}
	f.cond.L = &f.mu
	return f
}

const feedChunk = 1 << 20

// add takes a copy of p, which the download just read.
func (f *feed) add(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || len(p) == 0 {
		return
	}
	if f.buffered+len(p) > f.limit {
		f.stopped = true
		if !f.attached {
			f.chunks, f.buffered = nil, 0
		}
		f.cond.Broadcast()
		return
	}
	for len(p) > 0 {
		if n := len(f.chunks); n == 0 || len(f.chunks[n-1]) == cap(f.chunks[n-1]) {
			f.chunks = append(f.chunks, make([]byte, 0, feedChunk))
		}
		last := &f.chunks[len(f.chunks)-1]
		k := min(len(p), cap(*last)-len(*last))
		*last = append(*last, p[:k]...)
		p = p[k:]
		f.buffered += k
	}
	f.cond.Broadcast()
}

// restart forgets what was fed when the download starts over. A reader
// that took nothing yet reads the stored blob; one that took bytes fails
// (ErrFeedRestarted) rather than go on with the stored blob after bytes of
// another attempt, which no digest covered.
func (f *feed) restart() {
	f.mu.Lock()
	f.stopped, f.restarted = true, true
	f.chunks, f.buffered = nil, 0
	f.cond.Broadcast()
	f.mu.Unlock()
}

// detach drops the feed's reader: what is buffered goes, and no more is
// taken (a layer abandoned halfway holds no memory until its download
// ends).
func (f *feed) detach() {
	f.mu.Lock()
	f.stopped = true
	f.chunks, f.buffered = nil, 0
	f.cond.Broadcast()
	f.mu.Unlock()
}

// ErrFeedRestarted says that a layer read as it downloaded cannot go on:
// the download started over after the reader had taken bytes from it. The
// stored blob, once in, is to be read again from its start.
var ErrFeedRestarted = errors.New("the layer's download started over while it was read; read it again from the stored blob")

// end says the download is over. Bytes nobody took go: a reader that comes
// now reads the stored blob.
func (f *feed) end() {
	f.mu.Lock()
	f.ended, f.stopped = true, true
	if !f.attached {
		f.chunks, f.buffered = nil, 0
	}
	f.cond.Broadcast()
	f.mu.Unlock()
}

// attach claims the feed for a reader; false when it has nothing to give
// (the download is over, or its bytes were dropped) or is claimed already.
func (f *feed) attach() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.attached || f.stopped && f.buffered == 0 {
		return false
	}
	f.attached = true
	return true
}

// next waits for fed bytes and copies them into p; 0 when no more will
// come through the feed, with restarted when the download started over.
func (f *feed) next(p []byte) (n int, restarted bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.buffered == 0 && !f.stopped {
		f.cond.Wait()
	}
	for n < len(p) && len(f.chunks) > 0 {
		c := f.chunks[0]
		k := copy(p[n:], c)
		n += k
		if k == len(c) {
			f.chunks[0] = nil
			f.chunks = f.chunks[1:]
		} else {
			f.chunks[0] = c[k:]
		}
	}
	f.buffered -= n
	return n, n == 0 && f.restarted
}

// feedReader reads a layer through its feed, then from the stored blob.
type feedReader struct {
	pb   *pendingBlob
	open func() (io.ReadCloser, error) // the stored blob
	off  int64                         // bytes read
	file io.ReadCloser                 // the stored blob, once the feed ran dry
	err  error
}

func (r *feedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.file == nil {
		n, restarted := r.pb.feed.next(p)
		if n > 0 {
			r.off += int64(n)
			return n, nil
		}
		if restarted && r.off > 0 {
			r.err = fmt.Errorf("layer %s: %w", r.pb.digest, ErrFeedRestarted)
			return 0, r.err
		}
		// The feed gave what it had: the rest, and the verdict on all
		// of it, come with the stored blob.
		<-r.pb.done
		if r.pb.err != nil {
			r.err = r.pb.err
			return 0, r.err
		}
		if r.off == r.pb.size {
			r.err = io.EOF
			return 0, io.EOF
		}
		f, err := r.open()
		if err == nil {
			if s, ok := f.(io.Seeker); ok {
				_, err = s.Seek(r.off, io.SeekStart)
			} else {
				_, err = io.CopyN(io.Discard, f, r.off)
			}
			if err != nil {
				f.Close()
			}
		}
		if err != nil {
			r.err = err
			return 0, err
		}
		r.file = f
	}
	n, err := r.file.Read(p)
	r.off += int64(n)
	return n, err
}

// Close detaches the reader from the feed, which then drops what it holds.
func (r *feedReader) Close() error {
	r.pb.feed.detach()
	if r.err == nil {
		r.err = os.ErrClosed
	}
	if r.file != nil {
		return r.file.Close()
	}
	return nil
}

func (p *Puller) fetchBlob(ctx context.Context, src source, d v1.Descriptor, report bool) error {
	return p.fetchBlobTee(ctx, src, d, report, nil)
}

// fetchBlobTee stores blob d, handing what it downloads to tee as well.
func (p *Puller) fetchBlobTee(ctx context.Context, src source, d v1.Descriptor, report bool, tee *feed) error {
	pr := p.opts.Progress
	if !report {
		pr = nil
	}
	fetched := false
	_, err := p.store.PutBlob(ctx, d.Digest, func() (io.ReadCloser, error) {
		if fetched && tee != nil {
			tee.restart()
			tee = nil
		}
		fetched = true
		if pr != nil {
			pr.Start(d)
		}
		rc, err := src.blob(ctx, d)
		if err != nil {
			return nil, err
		}
		// Never read past the declared size: a hostile server would
		// otherwise fill the disk before the digest refuses it.
		rc = &sizedReader{r: rc, size: d.Size}
		if tee != nil {
			rc = &teeReader{ReadCloser: rc, f: tee}
		}
		if pr == nil {
			return rc, nil
		}
		return &progressReader{ReadCloser: rc, d: d, p: pr}, nil
	})
	if pr != nil {
		pr.Done(d, !fetched, err)
	}
	return err
}

// teeReader passes what the blob store reads to a feed.
type teeReader struct {
	io.ReadCloser
	f *feed
}

func (t *teeReader) Read(b []byte) (int, error) {
	n, err := t.ReadCloser.Read(b)
	t.f.add(b[:n])
	return n, err
}

func bytesOpener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

type progressReader struct {
	io.ReadCloser
	d v1.Descriptor
	p Progress
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.ReadCloser.Read(b)
	if n > 0 {
		r.p.Advance(r.d, int64(n))
	}
	return n, err
}

// source builds the source for a reference.
func (p *Puller) source(ref Reference) (source, error) {
	switch ref.Transport {
	case Docker:
		if p.opts.Offline {
			return &offlineSource{ref: ref, store: p.store, tags: p.opts.Tags}, nil
		}
		return p.remote(ref)
	case OCI:
		if fi, err := os.Stat(ref.Path); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("image %s: %s is not a directory", ref, ref.Path)
		}
		return &layoutSource{fsys: os.DirFS(ref.Path), tag: ref.Tag, label: ref.String()}, nil
	case OCIArchive:
		t, err := openTarFS(ref.Path)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		return &layoutSource{fsys: t, tag: ref.Tag, label: ref.String(), c: t}, nil
	case DockerArchive:
		t, err := openTarFS(ref.Path)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		return &dockerArchiveSource{fsys: t, tag: ref.Tag, label: ref.String()}, nil
	}
	return nil, fmt.Errorf("image %s: %w", ref, errNoSource)
}

// remote builds the endpoints of a registry reference: its mirrors, then the
// registry itself unless a mirror replaces it.
func (p *Puller) remote(ref Reference) (source, error) {
	eps, err := endpoints(p.opts, p.policy, ref.Name.Context())
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	src := &remoteSource{ref: ref.Name}
	for _, e := range eps {
		src.endpoints = append(src.endpoints, &endpoint{repo: e.Repo, auth: e.Auth, base: e.Transport,
			resolve: e.Resolve, policy: p.policy, plainHTTP: e.PlainHTTP})
	}
	return src, nil
}

type staticKeychain struct {
	registry string
	auth     authn.Authenticator
}

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.registry {
		return k.auth, nil
	}
	return authn.Anonymous, nil
}

// StoredImage is the image whose manifest is raw, served from blobs in
// store.
func StoredImage(store BlobStore, raw []byte, m *v1.Manifest, mt types.MediaType) (v1.Image, error) {
	return partial.CompressedToImage(&storedImage{store: store, raw: raw, m: m, mt: mt})
}

type storedImage struct {
	store BlobStore
	raw   []byte
	m     *v1.Manifest
	mt    types.MediaType
}

func (s *storedImage) RawConfigFile() ([]byte, error)      { return s.store.ReadBlob(s.m.Config.Digest) }
func (s *storedImage) MediaType() (types.MediaType, error) { return s.mt, nil }
func (s *storedImage) RawManifest() ([]byte, error)        { return s.raw, nil }
func (s *storedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range s.m.Layers {
		if l.Digest == h {
			return &storedLayer{store: s.store, d: l}, nil
		}
	}
	if s.m.Config.Digest == h {
		return &storedLayer{store: s.store, d: s.m.Config}, nil
	}
	return nil, fmt.Errorf("no layer %s in manifest", h)
}

type storedLayer struct {
	store BlobStore
	d     v1.Descriptor
}

func (l *storedLayer) Digest() (v1.Hash, error)            { return l.d.Digest, nil }
func (l *storedLayer) Size() (int64, error)                { return l.d.Size, nil }
func (l *storedLayer) MediaType() (types.MediaType, error) { return l.d.MediaType, nil }
func (l *storedLayer) Compressed() (io.ReadCloser, error) {
	f, err := l.store.OpenBlob(l.d.Digest)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.d.Digest, err)
	}
	return f, nil
}
