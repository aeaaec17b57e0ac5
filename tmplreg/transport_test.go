package tmplreg

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"

	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// fault makes the registry misbehave for requests of method to paths
// containing path, times times (negative: for ever).
type fault struct {
	method, path string
	times        int
	// status answers with it, and Retry-After when set.
	status     int
	retryAfter string
	// stallAfter sends the headers and this many body bytes, then nothing.
	stallAfter int64
	stall      bool
	// unread takes none of the request body and answers nothing.
	unread bool
}

// faultRegistry is go-containerregistry's in-memory registry behind
// faults, recording every request.
type faultRegistry struct {
	host string
	mu   sync.Mutex
	f    []*fault
	reqs []string // "METHOD path"
}

func startFaultRegistry(t *testing.T) *faultRegistry {
	t.Helper()
	fr := &faultRegistry{}
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	// A handler that takes no more stays until the test ends: the server
	// notices a client gone only while it reads.
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fr.mu.Lock()
		fr.reqs = append(fr.reqs, r.Method+" "+r.URL.Path)
		var f *fault
		for _, c := range fr.f {
			if c.method == r.Method && strings.Contains(r.URL.Path, c.path) && c.times != 0 {
				c.times--
				f = c
				break
			}
		}
		fr.mu.Unlock()
		hang := func() {
			select {
			case <-r.Context().Done():
			case <-done:
			}
		}
		switch {
		case f == nil:
			h.ServeHTTP(w, r)
		case f.unread:
			hang()
		case f.status != 0:
			if f.retryAfter != "" {
				w.Header().Set("Retry-After", f.retryAfter)
			}
			w.WriteHeader(f.status)
		case f.stall:
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes()[:f.stallAfter])
			w.(http.Flusher).Flush()
			hang()
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	fr.host = strings.TrimPrefix(srv.URL, "http://")
	return fr
}

func (fr *faultRegistry) add(f *fault) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fr.f = append(fr.f, f)
}

// count is how many requests of method went to paths containing path.
func (fr *faultRegistry) count(method, path string) int {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	n := 0
	for _, r := range fr.reqs {
		if m, p, _ := strings.Cut(r, " "); m == method && strings.Contains(p, path) {
			n++
		}
	}
	return n
}

// lockedBuffer collects log lines written from any goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const testStall = 500 * time.Millisecond

// faultStore is a store at fr retrying twice, with a short stall timeout,
// logging into logs.
func faultStore(t *testing.T, fr *faultRegistry, logs io.Writer) *Store {
	t.Helper()
	s, err := New(fr.host+"/templates", Options{Retries: 2, StallTimeout: testStall, Keychain: authn.NewMultiKeychain(),
		Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFetchPassingTrouble: template lookups and downloads go through the
// registry package's transport, so they honour Retry-After, give up on
// a stalled download and fetch it again, and retry 5xx, as pulls do.
func TestFetchPassingTrouble(t *testing.T) {
	for _, tc := range []struct {
		name string
		// fault is applied to the path "manifest" or "blob" (the template's
		// blob) names.
		fault  fault
		on     string
		ok     bool
		gets   int    // GETs of that path
		log    string // in the log
		errMsg string
	}{
		{name: "429 with Retry-After", fault: fault{method: "GET", times: 1, status: 429, retryAfter: "1"}, on: "manifest", ok: true,
			gets: 2, log: "wait=1s"},
		{name: "blob stalls midway once", fault: fault{method: "GET", times: 1, stall: true, stallAfter: 1000}, on: "blob", ok: true,
			gets: 2, log: "registry stalled: no data for 500ms"},
		{name: "503 twice", fault: fault{method: "GET", times: 2, status: 503}, on: "blob", ok: true, gets: 3},
		{name: "503 for ever", fault: fault{method: "GET", times: -1, status: 503}, on: "manifest", gets: 3,
			errMsg: "(503 Service Unavailable) (gave up after 3 attempts)"},
		{name: "blob stalls for ever", fault: fault{method: "GET", times: -1, stall: true, stallAfter: 1000}, on: "blob", gets: 3,
			errMsg: "registry stalled: no data for 500ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr := startFaultRegistry(t)
			var logs lockedBuffer
			s := faultStore(t, fr, &logs)
			f := newFixture(t, 4000, "linux/amd64", "")
			if _, err := s.Publish(context.Background(), f.t, PublishOptions{NoHumanTags: true}); err != nil {
				t.Fatal(err)
			}
			path := "/manifests/" + KeyTag(f.t.Key)
			if tc.on == "blob" {
				path = "/blobs/sha256:" + f.t.Meta.SHA256
			}
			tc.fault.path = path
			fr.add(&tc.fault)
			published := fr.count("GET", path) // publishing looked the key up
			dir := t.TempDir()
			_, err := s.FetchTemplate(context.Background(), f.request(dir))
			switch {
			case tc.ok && err != nil:
				t.Fatalf("fetch: %v\nlog:\n%s", err, logs.String())
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.errMsg)):
				t.Fatalf("error %v, want %q", err, tc.errMsg)
			}
			if n := fr.count("GET", path) - published; n != tc.gets {
				t.Errorf("%d GETs of %s, want %d", n, path, tc.gets)
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs.String())
			}
			if tc.ok {
				if readFile(t, f.t.Path) != readFile(t, dir+"/"+f.t.Meta.File) {
					t.Error("fetched bytes differ")
				}
				return
			}
			// Retries spent: the registry is not asked again for a while.
			before := fr.count("GET", "")
			_, err = s.FetchTemplate(context.Background(), f.request(t.TempDir()))
			if !errors.Is(err, template.ErrRemoteMiss) || fr.count("GET", "") != before {
				t.Errorf("second lookup: %v, %d requests", err, fr.count("GET", "")-before)
			}
		})
	}
}

// TestPublishPassingTrouble: an upload is started again as a whole when it
// fails or stops moving (a StallError once the retries are spent), and no
// request is retried at two levels. (That an upload is not taken for a
// stall while it moves is registry's TestUploadStall.)
func TestPublishPassingTrouble(t *testing.T) {
	// Larger than what the sockets of both ends buffer before an upload
	// that nothing takes stops moving.
	const big = 48 << 20
	for _, tc := range []struct {
		name    string
		size    int
		fault   fault
		ok      bool
		counts  map[string]int // "METHOD path" → requests
		log     string
		errMsg  string
		errType any
	}{
		{name: "the registry takes nothing of the upload once", size: big, fault: fault{method: "PATCH", path: "/blobs/uploads/", times: 1, unread: true},
			ok: true, counts: map[string]int{"PATCH /blobs/uploads/": 3}, log: "registry stalled: no data for 500ms"},
		{name: "PATCH 503 once", size: 4000, fault: fault{method: "PATCH", path: "/blobs/uploads/", times: 1, status: 503},
			ok: true, counts: map[string]int{"PATCH /blobs/uploads/": 3, "POST /blobs/uploads/": 3}},
		{name: "HEAD 503 for ever", size: 4000, fault: fault{method: "HEAD", path: "/blobs/", times: -1, status: 503},
			counts: map[string]int{"HEAD /blobs/": 3, "POST /blobs/uploads/": 0}, errMsg: "(gave up after 3 attempts)"},
		{name: "the registry takes nothing, for ever", size: big, fault: fault{method: "PATCH", path: "/blobs/uploads/", times: -1, unread: true},
			counts: map[string]int{"PATCH /blobs/uploads/": 3}, errType: new(*registry.StallError)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr := startFaultRegistry(t)
			var logs lockedBuffer
			s := faultStore(t, fr, &logs)
			s.opts.ChunkSize = big
			fr.add(&tc.fault)
			f := newFixture(t, tc.size, "linux/amd64", "")
			_, err := s.Publish(context.Background(), f.t, PublishOptions{NoHumanTags: true})
			switch {
			case tc.ok && err != nil:
				t.Fatalf("publish: %v\nlog:\n%s", err, logs.String())
			case !tc.ok && err == nil:
				t.Fatal("published")
			case tc.errMsg != "" && !strings.Contains(err.Error(), tc.errMsg):
				t.Errorf("error %v, want %q", err, tc.errMsg)
			case tc.errType != nil && !errors.As(err, tc.errType):
				t.Errorf("error %v, want a %T", err, tc.errType)
			}
			for k, want := range tc.counts {
				m, p, _ := strings.Cut(k, " ")
				if n := fr.count(m, p); n != want {
					t.Errorf("%d requests %s, want %d", n, k, want)
				}
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs.String())
			}
			if tc.ok {
				got, err := s.Lookup(context.Background(), f.t.Key)
				if err != nil || got.SHA256 != f.t.Meta.SHA256 {
					t.Errorf("lookup after publishing: %+v, %v", got, err)
				}
			}
		})
	}
}
