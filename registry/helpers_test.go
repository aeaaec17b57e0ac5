package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// dirStore is a BlobStore and TagStore in a temporary directory, checking
// digests as the cache does.
type dirStore struct {
	dir  string
	mu   sync.Mutex
	tags map[string]v1.Hash
}

func newDirStore(t testing.TB) *dirStore {
	return &dirStore{dir: t.TempDir(), tags: map[string]v1.Hash{}}
}

func (s *dirStore) path(h v1.Hash) string { return filepath.Join(s.dir, h.Algorithm+"-"+h.Hex) }

func (s *dirStore) HasBlob(h v1.Hash) bool {
	_, err := os.Stat(s.path(h))
	return err == nil
}

func (s *dirStore) OpenBlob(h v1.Hash) (*os.File, error) { return os.Open(s.path(h)) }
func (s *dirStore) ReadBlob(h v1.Hash) ([]byte, error)   { return os.ReadFile(s.path(h)) }

func (s *dirStore) PutBlob(ctx context.Context, h v1.Hash, open func() (io.ReadCloser, error)) (int64, error) {
	if s.HasBlob(h) {
		return 0, nil
	}
	rc, err := open()
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", h, err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	n, err := io.Copy(&buf, rc)
	if err != nil {
		return n, fmt.Errorf("blob %s: %w", h, err)
	}
	sum := sha256.Sum256(buf.Bytes())
	if got := hex.EncodeToString(sum[:]); got != h.Hex {
		return n, fmt.Errorf("blob %s: digest mismatch: content hashes to sha256:%s", h, got)
	}
	return n, os.WriteFile(s.path(h), buf.Bytes(), 0o644)
}

func (s *dirStore) PutTag(ref string, d v1.Hash) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tags[ref] = d
	return nil
}

func (s *dirStore) Tag(ref string) (v1.Hash, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.tags[ref]
	if !ok {
		return v1.Hash{}, time.Time{}, errors.New("not in cache")
	}
	return d, time.Unix(1700000000, 0), nil
}

func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// fakeImage is a one-layer image as a registry serves it.
type fakeImage struct {
	manifest, config, layer []byte
}

func newFakeImage(t testing.TB, layerSize int) fakeImage {
	t.Helper()
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := bytes.Repeat([]byte("0123456789abcdef"), layerSize/16+1)[:layerSize]
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(config)), Digest: digestOf(config)},
		Layers: []v1.Descriptor{{MediaType: types.OCILayer, Size: int64(len(layer)), Digest: digestOf(layer)}}}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return fakeImage{manifest: raw, config: config, layer: layer}
}

// fault changes how the fake registry answers matching requests.
type fault struct {
	path       string // suffix of the request path
	times      int    // how many matching requests; 0 means all
	status     int
	retryAfter string
	drop       bool // close the connection without an answer
	truncate   int  // send this many bytes of the body, then break the connection
	stall      bool // after truncate bytes, send nothing more
	pad        int  // append this many bytes
	chunked    bool // with pad: no Content-Length
}

// fakeRegistry serves one image under app:1 by the Distribution API, with
// faults, and records requests.
type fakeRegistry struct {
	t      testing.TB
	srv    *httptest.Server
	img    fakeImage
	mu     sync.Mutex
	faults []*fault
	reqs   []string // "GET /v2/... Range"
}

func startFakeRegistry(t testing.TB, img fakeImage) *fakeRegistry {
	r := &fakeRegistry{t: t, img: img}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *fakeRegistry) host() string { return strings.TrimPrefix(r.srv.URL, "http://") }

func (r *fakeRegistry) addFault(f fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, &f)
}

// count is how many requests went to paths ending in suffix.
func (r *fakeRegistry) count(suffix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, q := range r.reqs {
		p, _, _ := strings.Cut(q, " range=")
		if strings.HasSuffix(p, suffix) {
			n++
		}
	}
	return n
}

func (r *fakeRegistry) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reqs...)
}

func (r *fakeRegistry) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Method+" "+req.URL.Path+" range="+req.Header.Get("Range"))
	var f *fault
	for _, c := range r.faults {
		if strings.HasSuffix(req.URL.Path, c.path) && c.times >= 0 {
			f = c
			if c.times > 0 {
				if c.times--; c.times == 0 {
					c.times = -1
				}
			}
			break
		}
	}
	r.mu.Unlock()

	var body []byte
	var mt string
	switch p := req.URL.Path; {
	case p == "/v2/":
		w.WriteHeader(http.StatusOK)
		return
	case p == "/v2/app/manifests/1" || p == "/v2/app/manifests/"+digestOf(r.img.manifest).String():
		body, mt = r.img.manifest, string(types.OCIManifestSchema1)
	case p == "/v2/app/blobs/"+digestOf(r.img.config).String():
		body, mt = r.img.config, "application/octet-stream"
	case p == "/v2/app/blobs/"+digestOf(r.img.layer).String():
		body, mt = r.img.layer, "application/octet-stream"
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}`)
		return
	}
	w.Header().Set("Content-Type", mt)
	if f == nil {
		http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(body))
		return
	}
	switch {
	case f.drop:
		panic(http.ErrAbortHandler)
	case f.status == http.StatusNotFound:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.status)
		io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"1"}}]}`)
		return
	case f.status != 0:
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		w.WriteHeader(f.status)
		return
	}
	if f.pad > 0 {
		if !f.chunked {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)+f.pad))
		}
		w.WriteHeader(http.StatusOK)
		w.Write(body)
		chunk := make([]byte, 32<<10)
		for n := 0; n < f.pad; n += len(chunk) {
			if _, err := w.Write(chunk[:min(len(chunk), f.pad-n)]); err != nil {
				return
			}
		}
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body[:f.truncate])
	w.(http.Flusher).Flush()
	if f.stall {
		<-req.Context().Done()
		return
	}
	panic(http.ErrAbortHandler)
}

// recordSleeps makes p's retries wait for nothing and records the waits.
func recordSleeps(p *Puller) *[]time.Duration {
	var mu sync.Mutex
	waits := &[]time.Duration{}
	p.policy.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		*waits = append(*waits, d)
		return ctx.Err()
	}
	return waits
}

// emptyKeychain finds no credentials, whatever ~/.docker holds.
type emptyKeychain struct{}

func (emptyKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.Anonymous, nil
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
