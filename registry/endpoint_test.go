package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestPlainHTTP(t *testing.T) {
	insecure := []string{"registry.lan:5000", "build.lan", "10.0.0.7"}
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"localhost:5000", true},
		{"cache.localhost:443", true},
		{"127.0.0.1:5000", true},
		{"127.3.2.1", true},
		{"[::1]:5000", true},
		{"registry.lan:5000", true},
		{"REGISTRY.lan:5000", true},
		{"registry.lan:5001", false}, // listed with another port
		{"build.lan:5000", true},     // listed without a port: any port
		{"10.0.0.7:5000", true},
		{"10.0.0.8:5000", false}, // RFC 1918, but not listed
		{"192.168.1.5", false},
		{"ghcr.io", false},
	} {
		if got := PlainHTTP(tc.host, insecure); got != tc.want {
			t.Errorf("PlainHTTP(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

// slowBody yields n bytes in pieces, pausing before each: a body that
// takes much longer than the stall timeout to send in all, but keeps
// moving.
type slowBody struct {
	left  int
	piece int
	pause time.Duration
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	time.Sleep(b.pause)
	n := min(len(p), b.piece, b.left)
	clear(p[:n])
	b.left -= n
	return n, nil
}

// zeros is a body of n zero bytes, made as they are read.
type zeros struct{ left int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), z.left))
	clear(p[:n])
	z.left -= int64(n)
	return n, nil
}

// TestUploadStall: the stall timeout counts request-body bytes sent, so a
// long upload that keeps moving succeeds; one the registry stops taking
// fails with a StallError.
func TestUploadStall(t *testing.T) {
	const stall = 300 * time.Millisecond
	for _, tc := range []struct {
		name string
		// body is what is uploaded; read, how much the server reads of it
		// before it stops taking any (-1: all of it).
		body  func() io.Reader
		size  int64
		read  int64
		stall bool
	}{
		// 60 pieces 25 ms apart: 1.5 s in all, five stall timeouts.
		{name: "slow upload that keeps moving", body: func() io.Reader { return &slowBody{left: 60 << 10, piece: 1 << 10, pause: 25 * time.Millisecond} },
			size: 60 << 10, read: -1},
		// Larger than the socket buffers of both ends, which the client
		// fills before nothing moves any more.
		{name: "registry takes nothing", body: func() io.Reader { return &zeros{left: 256 << 20} }, size: 256 << 20, read: 0, stall: true},
		{name: "registry stops taking it midway", body: func() io.Reader { return &zeros{left: 256 << 20} }, size: 256 << 20, read: 1 << 20, stall: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got int64
			var mu sync.Mutex
			// The server notices a client gone only while it reads the
			// body; done ends the handler that reads no more.
			done := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var n int64
				if tc.read < 0 {
					n, _ = io.Copy(io.Discard, r.Body)
				} else {
					n, _ = io.CopyN(io.Discard, r.Body, tc.read)
					<-done
				}
				mu.Lock()
				got = n
				mu.Unlock()
				w.WriteHeader(http.StatusCreated)
			}))
			defer srv.Close()
			defer close(done)
			tr := NewTransport(TransportOptions{StallTimeout: stall, Retries: -1})
			req, err := http.NewRequest(http.MethodPatch, srv.URL+"/v2/app/blobs/uploads/1", tc.body())
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.size
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if resp != nil {
				resp.Body.Close()
			}
			var se *StallError
			switch {
			case tc.stall && !errors.As(err, &se):
				t.Fatalf("error %v, want a StallError", err)
			case tc.stall && se.Timeout != stall:
				t.Errorf("stall after %s, want %s", se.Timeout, stall)
			case !tc.stall && err != nil:
				t.Fatalf("upload failed: %v", err)
			case !tc.stall && resp.StatusCode != http.StatusCreated:
				t.Fatalf("status %d", resp.StatusCode)
			}
			if !tc.stall {
				mu.Lock()
				defer mu.Unlock()
				if got != tc.size {
					t.Errorf("the registry received %d bytes, want %d", got, tc.size)
				}
			}
		})
	}
}

// faultyRegistry is go-containerregistry's in-memory registry behind a
// handler that fails chosen requests and counts them all.
type faultyRegistry struct {
	host   string
	mu     sync.Mutex
	faults []*uploadFault
	counts map[string]int // "METHOD kind": kind is manifest, blob or upload
}

// uploadFault answers requests of method to a kind of path with status,
// breaks the connection (drop) or answers nothing (hang), times times
// (negative: for ever).
type uploadFault struct {
	method, kind string
	times        int
	status       int
	drop         bool
	hang         bool
}

func startFaultyRegistry(t *testing.T, faults ...*uploadFault) *faultyRegistry {
	t.Helper()
	fr := &faultyRegistry{faults: faults, counts: map[string]int{}}
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := requestKind(r.URL.Path)
		fr.mu.Lock()
		fr.counts[r.Method+" "+k]++
		var f *uploadFault
		for _, c := range fr.faults {
			if c.method == r.Method && c.kind == k && c.times != 0 {
				c.times--
				f = c
				break
			}
		}
		fr.mu.Unlock()
		switch {
		case f != nil && f.drop:
			panic(http.ErrAbortHandler)
		case f != nil && f.hang:
			<-r.Context().Done()
			return
		case f != nil:
			w.WriteHeader(f.status)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	fr.host = strings.TrimPrefix(srv.URL, "http://")
	return fr
}

func requestKind(path string) string {
	switch {
	case strings.Contains(path, "/blobs/uploads/"):
		return "upload"
	case strings.Contains(path, "/blobs/"):
		return "blob"
	case strings.Contains(path, "/manifests/"):
		return "manifest"
	}
	return path
}

func (fr *faultyRegistry) count(key string) int {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return fr.counts[key]
}

// TestUploadRetries: a blob upload or manifest PUT that fails is started
// again as a whole by go-containerregistry, at most Retries times; a
// request the transport already retried (HEAD, GET) does not restart the
// upload, so nothing is retried at two levels.
func TestUploadRetries(t *testing.T) {
	const retries = 2
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	for _, tc := range []struct {
		name   string
		faults []*uploadFault
		// manifest writes the whole image, else the one layer.
		manifest bool
		ok       bool
		want     map[string]int
	}{
		{name: "PATCH 503 once: the upload restarts", faults: []*uploadFault{{method: "PATCH", kind: "upload", times: 1, status: 503}}, ok: true,
			want: map[string]int{"HEAD blob": 2, "POST upload": 2, "PATCH upload": 2, "PUT upload": 1}},
		{name: "PATCH dropped once: the upload restarts", faults: []*uploadFault{{method: "PATCH", kind: "upload", times: 1, drop: true}}, ok: true,
			want: map[string]int{"POST upload": 2, "PATCH upload": 2, "PUT upload": 1}},
		{name: "commit 500 once", faults: []*uploadFault{{method: "PUT", kind: "upload", times: 1, status: 500}}, ok: true,
			want: map[string]int{"POST upload": 2, "PATCH upload": 2, "PUT upload": 2}},
		{name: "POST 429 for ever: each attempt sends it once", faults: []*uploadFault{{method: "POST", kind: "upload", times: -1, status: 429}},
			want: map[string]int{"HEAD blob": retries + 1, "POST upload": retries + 1, "PATCH upload": 0}},
		{name: "HEAD 503 for ever: retried by the transport alone", faults: []*uploadFault{{method: "HEAD", kind: "blob", times: -1, status: 503}},
			want: map[string]int{"HEAD blob": retries + 1, "POST upload": 0}},
		{name: "HEAD stalls for ever: retried by the transport alone", faults: []*uploadFault{{method: "HEAD", kind: "blob", times: -1, hang: true}},
			want: map[string]int{"HEAD blob": retries + 1, "POST upload": 0}},
		{name: "manifest PUT 503 once", manifest: true, faults: []*uploadFault{{method: "PUT", kind: "manifest", times: 1, status: 503}}, ok: true,
			want: map[string]int{"PUT manifest": 2}},
		{name: "401 is not retried", faults: []*uploadFault{{method: "PATCH", kind: "upload", times: -1, status: 401}},
			want: map[string]int{"POST upload": 1, "PATCH upload": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr := startFaultyRegistry(t, tc.faults...)
			ref, err := ParseReference(fr.host+"/app:1", nil)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			opts, err := RemoteOptions(context.Background(), Options{Retries: retries, StallTimeout: 500 * time.Millisecond,
				Keychain: emptyKeychain{}, Log: slogTo(&logs)}, ref.Name.Context())
			if err != nil {
				t.Fatal(err)
			}
			if tc.manifest {
				err = remote.Write(ref.Name, img, opts...)
			} else {
				err = remote.WriteLayer(ref.Name.Context(), layers[0], opts...)
			}
			if tc.ok != (err == nil) {
				t.Fatalf("error %v", err)
			}
			for k, n := range tc.want {
				if got := fr.count(k); got != n {
					t.Errorf("%d requests %s, want %d (log: %s)", got, k, n, logs.String())
				}
			}
		})
	}
}

// TestRemoteOptionsCredentials: the credentials given go to the
// repository's own registry, ahead of the keychain; Auth wins over
// Username and Password.
func TestRemoteOptionsCredentials(t *testing.T) {
	basic := func(u, p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) }
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"username and password", Options{Username: "me", Password: "secret"}, basic("me", "secret")},
		{"auth wins", Options{Username: "me", Password: "secret", Auth: &authn.AuthConfig{Username: "bot", Password: "token"}}, basic("bot", "token")},
		{"keychain", Options{Keychain: staticKeychain{registry: "", auth: authn.FromConfig(authn.AuthConfig{Username: "kc", Password: "x"})}}, basic("kc", "x")},
		{"none", Options{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var sent string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				a := r.Header.Get("Authorization")
				if r.URL.Path == "/v2/" && a == "" && tc.want != "" {
					w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				if strings.Contains(r.URL.Path, "/manifests/") {
					mu.Lock()
					sent = a
					mu.Unlock()
				}
				w.WriteHeader(http.StatusNotFound)
			}))
			defer srv.Close()
			host := strings.TrimPrefix(srv.URL, "http://")
			if sk, ok := tc.o.Keychain.(staticKeychain); ok {
				sk.registry = host
				tc.o.Keychain = sk
			}
			if tc.o.Keychain == nil {
				tc.o.Keychain = emptyKeychain{}
			}
			ref, err := name.ParseReference(host+"/app:1", name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			opts, err := RemoteOptions(context.Background(), tc.o, ref.Context())
			if err != nil {
				t.Fatal(err)
			}
			remote.Head(ref, opts...)
			mu.Lock()
			defer mu.Unlock()
			if sent != tc.want {
				t.Errorf("Authorization %q, want %q", sent, tc.want)
			}
		})
	}
}
