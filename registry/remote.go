package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/internal/bytesize"
)

// remoteSource reads from a registry, or from its mirrors first. It
// authenticates once per endpoint and reuses the transport for every
// request. Manifests and blobs are fetched with plain GETs, so that the
// blob store's hash is the only one computed over them, sizes are bounded
// as they are read, and interrupted blob downloads resume where they
// stopped.
type remoteSource struct {
	ref       name.Reference
	endpoints []*endpoint // mirrors in order, then the registry
	chosen    *endpoint   // the endpoint that answered for the manifest
}

type endpoint struct {
	repo    name.Repository
	auth    authn.Authenticator
	base    http.RoundTripper
	resolve bool // may resolve tags
	policy  *retryPolicy
	// plainHTTP says the endpoint may be reached without TLS
	// (--insecure-registry, loopback, an http:// mirror).
	plainHTTP bool

	mu     sync.Mutex
	authed http.RoundTripper
}

func (e *endpoint) transport(ctx context.Context) (http.RoundTripper, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.authed != nil {
		return e.authed, nil
	}
	t, err := transport.NewWithContext(ctx, e.repo.Registry, e.auth, e.base, []string{e.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, e.explain(err)
	}
	e.authed = t
	return t, nil
}

// manifestAccept lists every manifest type, schema 1 included so that such
// images are refused by name rather than as "not found".
var manifestAccept = strings.Join([]string{
	string(types.OCIImageIndex), string(types.OCIManifestSchema1),
	string(types.DockerManifestList), string(types.DockerManifestSchema2),
	string(types.DockerManifestSchema1), string(types.DockerManifestSchema1Signed),
}, ", ")

func (e *endpoint) url(kind, ref string) string {
	u := url.URL{Scheme: e.repo.Scheme(), Host: e.repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/%s/%s", e.repo.RepositoryStr(), kind, ref)}
	return u.String()
}

// get sends a GET (retried by the endpoint's transport) and checks its
// status.
func (e *endpoint) get(ctx context.Context, u string, header http.Header, ok ...int) (*http.Response, error) {
	t, err := e.transport(ctx)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: t}).Do(req)
	if err != nil {
		// The client's "Get URL:" prefix repeats what our errors say.
		var ue *url.Error
		var re *responseError
		if errors.As(err, &ue) && errors.As(ue.Err, &re) {
			err = ue.Err
		}
		return nil, e.explain(err)
	}
	if err := checkResponse(resp, ok...); err != nil {
		resp.Body.Close()
		return nil, e.explain(err)
	}
	return resp, nil
}

// manifest fetches a manifest or index by tag or digest, reading at most
// MaxManifestSize. A body cut short is fetched again, within the retry
// policy.
func (e *endpoint) manifest(ctx context.Context, ref string) (v1.Descriptor, []byte, error) {
	for attempt := 1; ; attempt++ {
		d, raw, err := e.manifestOnce(ctx, ref)
		if err == nil || !retryableError(err) || ctx.Err() != nil || errors.As(err, new(*GaveUpError)) {
			return d, raw, err
		}
		if attempt > e.policy.retries {
			return d, raw, &GaveUpError{Attempts: attempt, Err: err}
		}
		if werr := e.policy.wait(ctx, attempt, 0, "manifest "+ref, err); werr != nil {
			return d, raw, werr
		}
	}
}

func (e *endpoint) manifestOnce(ctx context.Context, ref string) (v1.Descriptor, []byte, error) {
	what := "manifest"
	if strings.HasPrefix(ref, "sha256:") {
		what += " " + ref
	}
	resp, err := e.get(ctx, e.url("manifests", ref), http.Header{"Accept": {manifestAccept}}, http.StatusOK)
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > MaxManifestSize {
		return v1.Descriptor{}, nil, fmt.Errorf("%s: the registry announces %d bytes (%s); manifests are limited to %s",
			what, resp.ContentLength, bytesize.Format(resp.ContentLength), bytesize.Format(MaxManifestSize))
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(raw) > MaxManifestSize {
		return v1.Descriptor{}, nil, fmt.Errorf("%s: larger than %s, the limit for manifests", what, bytesize.Format(MaxManifestSize))
	}
	if resp.ContentLength >= 0 && int64(len(raw)) < resp.ContentLength {
		return v1.Descriptor{}, nil, fmt.Errorf("%s: %w", what, io.ErrUnexpectedEOF)
	}
	sum := sha256.Sum256(raw)
	d := v1.Descriptor{Size: int64(len(raw)), Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil && isManifest(types.MediaType(mt)) {
		d.MediaType = types.MediaType(mt)
	} else if mt, ok := sniffMediaType(raw); ok {
		d.MediaType = mt
	} else {
		return v1.Descriptor{}, nil, fmt.Errorf("%s: the registry sent %q, which is not a manifest", what, resp.Header.Get("Content-Type"))
	}
	return d, raw, nil
}

// blob opens a blob for reading. Content longer than the descriptor says
// is refused on the Content-Length alone; a download that breaks, stalls
// or ends early continues with a Range request from where it stopped.
func (e *endpoint) blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	r := &resumingBody{ctx: ctx, e: e, d: d}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

type resumingBody struct {
	ctx     context.Context
	e       *endpoint
	d       v1.Descriptor
	body    io.ReadCloser
	off     int64 // bytes delivered
	resumes int
	pending error // the error that ended the last read, dealt with on the next
	failed  error // why the download cannot go on
}

// open requests the blob from r.off on.
func (r *resumingBody) open() error {
	var h http.Header
	if r.off > 0 {
		h = http.Header{"Range": {fmt.Sprintf("bytes=%d-", r.off)}}
	}
	resp, err := r.e.get(r.ctx, r.e.url("blobs", r.d.Digest.String()), h, http.StatusOK, http.StatusPartialContent)
	if err != nil {
		return err
	}
	skip := int64(0)
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		start, ok := contentRangeStart(resp.Header.Get("Content-Range"))
		if !ok || start != r.off {
			resp.Body.Close()
			return fmt.Errorf("asked for bytes from %d on, the registry sent Content-Range %q", r.off, resp.Header.Get("Content-Range"))
		}
	case r.off > 0:
		// The server ignored Range and sends it all again.
		skip = r.off
	}
	if resp.ContentLength >= 0 && resp.ContentLength-skip > r.d.Size-r.off {
		resp.Body.Close()
		return &SizeError{Declared: r.d.Size, Got: r.off + resp.ContentLength - skip, Announced: true}
	}
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, resp.Body, skip); err != nil {
			resp.Body.Close()
			return err
		}
	}
	r.body = resp.Body
	return nil
}

func contentRangeStart(v string) (int64, bool) {
	v, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, false
	}
	first, _, ok := strings.Cut(v, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(first, 10, 64)
	return n, err == nil
}

func (r *resumingBody) Read(p []byte) (int, error) {
	for {
		if r.failed != nil {
			return 0, r.failed
		}
		if r.pending != nil {
			err := r.pending
			r.pending = nil
			if r.failed = r.resume(err); r.failed != nil {
				return 0, r.failed
			}
		}
		if r.body == nil {
			return 0, errors.New("read after close")
		}
		if r.off >= r.d.Size {
			// Past the declared size: pass on whatever comes, for the
			// sizedReader above to refuse.
			n, err := r.body.Read(p[:min(len(p), 1)])
			if n > 0 || err == nil {
				return n, nil
			}
			return 0, io.EOF
		}
		if rest := r.d.Size - r.off; int64(len(p)) > rest {
			p = p[:rest]
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		switch {
		case err == io.EOF && r.off < r.d.Size:
			err = &SizeError{Declared: r.d.Size, Got: r.off}
		case err == io.EOF:
			err = nil
		}
		r.pending = err
		if n > 0 {
			return n, nil
		}
	}
}

// resume continues the download after err, or returns why it cannot.
// Failures of the new request count against the same retries.
func (r *resumingBody) resume(err error) error {
	for {
		var gaveUp *GaveUpError
		if !retryableError(err) || r.ctx.Err() != nil || errors.As(err, &gaveUp) {
			return err
		}
		if r.resumes >= r.e.policy.retries {
			return &GaveUpError{Attempts: r.resumes + 1, Err: err}
		}
		r.resumes++
		if r.body != nil {
			r.body.Close()
			r.body = nil
		}
		if werr := r.e.policy.wait(r.ctx, r.resumes, 0, "blob "+r.d.Digest.String()+" from byte "+strconv.FormatInt(r.off, 10), err); werr != nil {
			return werr
		}
		if err = r.open(); err == nil {
			return nil
		}
	}
}

func (r *resumingBody) Close() error {
	if r.body == nil {
		return nil
	}
	err := r.body.Close()
	r.body = nil
	return err
}

func (s *remoteSource) identifier() string {
	if d, ok := s.ref.(name.Digest); ok {
		return d.DigestStr()
	}
	return s.ref.Identifier()
}

// root asks each endpoint in turn; the first to answer serves the rest of
// the pull. Mirrors that may not resolve tags are skipped for tags.
func (s *remoteSource) root(ctx context.Context) (v1.Descriptor, []byte, error) {
	id := s.identifier()
	var errs []error
	for _, e := range s.endpoints {
		if !e.resolve && !strings.HasPrefix(id, "sha256:") {
			continue
		}
		d, raw, err := e.manifest(ctx, id)
		if err == nil {
			s.chosen = e
			return d, raw, nil
		}
		if ctx.Err() != nil {
			return v1.Descriptor{}, nil, err
		}
		errs = append(errs, fmt.Errorf("%s: %w", e.repo.RegistryStr(), err))
	}
	if len(errs) == 1 {
		return v1.Descriptor{}, nil, errors.Unwrap(errs[0])
	}
	return v1.Descriptor{}, nil, errors.Join(errs...)
}

// order is the endpoints to fetch content from: the one that served the
// manifest first.
func (s *remoteSource) order() []*endpoint {
	if s.chosen == nil {
		return s.endpoints
	}
	out := []*endpoint{s.chosen}
	for _, e := range s.endpoints {
		if e != s.chosen {
			out = append(out, e)
		}
	}
	return out
}

func (s *remoteSource) blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	var first error
	for _, e := range s.order() {
		var rc io.ReadCloser
		var err error
		if isManifest(d.MediaType) {
			var got v1.Descriptor
			var raw []byte
			if got, raw, err = e.manifest(ctx, d.Digest.String()); err == nil {
				if got.Digest != d.Digest {
					err = fmt.Errorf("registry returned manifest %s for %s", got.Digest, d.Digest)
				} else {
					rc = io.NopCloser(bytes.NewReader(raw))
				}
			}
		} else {
			rc, err = e.blob(ctx, d)
		}
		if err == nil {
			return rc, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
		var se *SizeError
		if errors.As(err, &se) {
			break // content, not reachability: another endpoint does not help
		}
	}
	return nil, first
}

func (s *remoteSource) close() error { return nil }

func isManifest(mt types.MediaType) bool { return mt.IsImage() || mt.IsIndex() || mt.IsSchema1() }
