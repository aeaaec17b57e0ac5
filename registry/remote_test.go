package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFetchFaults pulls through one fault at a time: passing faults are
// retried (Retry-After honoured) or resumed with a Range request, the
// others fail with a message naming the layer and what was wrong.
func TestFetchFaults(t *testing.T) {
	const size = 256 << 10
	img := newFakeImage(t, size)
	layer := digestOf(img.layer).String()
	manifest := "/manifests/1"
	tests := []struct {
		name     string
		f        fault
		retries  int
		requests int             // to the faulty path
		waits    []time.Duration // recorded exactly, when set
		ranged   string          // the Range header of the last request
		err      []string        // substrings of the error; none for success
	}{
		{name: "500 once", f: fault{path: layer, times: 1, status: 500}, requests: 2},
		{name: "503 twice", f: fault{path: layer, times: 2, status: 503}, requests: 3},
		{name: "429 with Retry-After", f: fault{path: layer, times: 1, status: 429, retryAfter: "7"}, requests: 2, waits: []time.Duration{7 * time.Second}},
		{name: "manifest 502 once", f: fault{path: manifest, times: 1, status: 502}, requests: 2},
		{name: "dropped", f: fault{path: layer, times: 1, drop: true}, requests: 2},
		{name: "cut off after the headers", f: fault{path: layer, times: 1}, requests: 2},
		{name: "truncated", f: fault{path: layer, times: 1, truncate: size / 2}, requests: 2, ranged: fmt.Sprintf("bytes=%d-", size/2)},
		{name: "truncated manifest", f: fault{path: manifest, times: 1, truncate: 10}, requests: 2},
		{name: "stalled", f: fault{path: layer, times: 1, truncate: size / 4, stall: true}, requests: 2, ranged: fmt.Sprintf("bytes=%d-", size/4)},
		{name: "503 always", f: fault{path: layer, status: 503}, retries: 2, requests: 3,
			err: []string{"layer " + layer, "503 Service Unavailable", "gave up after 3 attempts"}},
		{name: "stalled always", f: fault{path: layer, truncate: 100, stall: true}, retries: 1, requests: 2,
			err: []string{"layer " + layer, "registry stalled: no data for 50ms", "gave up after 2 attempts"}},
		{name: "Retry-After too long", f: fault{path: layer, status: 429, retryAfter: "3600"}, requests: 1,
			err: []string{"layer " + layer, "asks to retry after 1h0m0s"}},
		{name: "404", f: fault{path: layer, status: 404}, requests: 1, err: []string{"layer " + layer, "404"}},
		{name: "longer, announced", f: fault{path: layer, pad: 64 << 20}, requests: 1,
			err: []string{"layer " + layer, fmt.Sprintf("announces %d bytes", size+64<<20), fmt.Sprintf("declares as %d bytes", size)}},
		{name: "longer, chunked", f: fault{path: layer, pad: 64 << 20, chunked: true}, requests: 1,
			err: []string{"layer " + layer, fmt.Sprintf("more data than the %d bytes the manifest declares", size)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := startFakeRegistry(t, img)
			reg.addFault(tc.f)
			store := newDirStore(t)
			p := NewPuller(store, Options{Retries: tc.retries, StallTimeout: 50 * time.Millisecond})
			waits := recordSleeps(p)
			ref, err := ParseReference(reg.host()+"/app:1", nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			res, err := p.Resolve(ctx, ref)
			if err == nil {
				defer res.Close()
				_, err = p.Fetch(ctx, res)
			}
			if n := reg.count(tc.f.path); n != tc.requests {
				t.Errorf("%d requests to %s, want %d: %q", n, tc.f.path, tc.requests, reg.requests())
			}
			if tc.waits != nil && fmt.Sprint(*waits) != fmt.Sprint(tc.waits) {
				t.Errorf("waited %v, want %v", *waits, tc.waits)
			}
			if tc.ranged != "" {
				reqs := reg.requests()
				if last := reqs[len(reqs)-1]; !strings.HasSuffix(last, "range="+tc.ranged) {
					t.Errorf("last request %q, want Range %s", last, tc.ranged)
				}
			}
			if tc.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !store.HasBlob(digestOf(img.layer)) {
					t.Error("layer not stored")
				}
				return
			}
			if err == nil {
				t.Fatal("pull succeeded")
			}
			t.Logf("error: %v", err)
			for _, w := range append(tc.err, "image "+ref.String()) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if store.HasBlob(digestOf(img.layer)) {
				t.Error("layer stored after a failure")
			}
		})
	}
}

// TestRefusedBeforeFetching: sizes that cannot be right are refused from
// the manifest alone, and manifests are read only up to the limit.
func TestRefusedBeforeFetching(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*fakeImage)
		wants  []string
		config int // requests for the config blob
	}{
		{"huge config", func(i *fakeImage) {
			i.manifest = []byte(strings.Replace(string(i.manifest), fmt.Sprintf(`"size":%d`, len(i.config)), `"size":314572800`, 1))
		}, []string{"config sha256:", "declared as 314572800 bytes (300.0 MiB)", "configs are limited to 4.0 MiB"}, 0},
		{"huge manifest", func(i *fakeImage) {
			i.manifest = append(i.manifest, strings.Repeat(" ", 5<<20)...)
		}, []string{"manifest: the registry announces", "manifests are limited to 4.0 MiB"}, 0},
		{"negative layer", func(i *fakeImage) {
			i.manifest = []byte(strings.Replace(string(i.manifest), fmt.Sprintf(`"size":%d`, len(i.layer)), `"size":-1`, 1))
		}, []string{"layer sha256:", "declared with a negative size (-1)"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := newFakeImage(t, 1024)
			cfg := digestOf(img.config).String()
			tc.edit(&img)
			reg := startFakeRegistry(t, img)
			p := NewPuller(newDirStore(t), Options{})
			ref, _ := ParseReference(reg.host()+"/app:1", nil)
			res, err := p.Resolve(context.Background(), ref)
			if err == nil {
				_, err = p.Fetch(context.Background(), res)
				res.Close()
			}
			if err == nil {
				t.Fatal("pull succeeded")
			}
			t.Logf("error: %v", err)
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if n := reg.count(cfg); n != tc.config {
				t.Errorf("%d config requests, want %d", n, tc.config)
			}
		})
	}
}

// TestAccessErrors: a 401 says which registry and repository, and whether
// credentials were sent, without the registry's detail as a Go map.
func TestAccessErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"private","Action":"pull"}]}]}`)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	tests := []struct {
		name       string
		user, pass string
		wants      []string
	}{
		{"none", "", "", []string{"registry " + host, `repository "private"`, "401 UNAUTHORIZED: authentication required", "no credentials were sent"}},
		{"wrong", "tester", "wrong", []string{"registry " + host, `repository "private"`, `the credentials sent for user "tester" were rejected`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPuller(newDirStore(t), Options{Username: tc.user, Password: tc.pass, Keychain: emptyKeychain{}})
			ref, _ := ParseReference(host+"/private:1", nil)
			_, err := p.Resolve(context.Background(), ref)
			if err == nil {
				t.Fatal("resolved")
			}
			t.Logf("error: %v", err)
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "map[") {
				t.Errorf("error %q prints a Go map", err)
			}
			var ae *AccessError
			if !errors.As(err, &ae) || ae.Status != 401 {
				t.Errorf("error %T is no 401 AccessError", err)
			}
		})
	}
}

// TestPlainHTTPHint: a registry that answers HTTPS with plain HTTP points
// at --insecure-registry, and is reached with it; private (RFC 1918)
// addresses too, which go-containerregistry alone would try over HTTP.
func TestPlainHTTPHint(t *testing.T) {
	reg := startFakeRegistry(t, newFakeImage(t, 100))
	// Any host name reaches the test server, so that the registry is not
	// loopback (which is plain HTTP without asking).
	dial := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, reg.host())
	}}
	for _, name := range []string{"registry.example:5000", "10.1.2.3:5000"} {
		t.Run(name, func(t *testing.T) {
			ref, err := ParseReference(name+"/app:1", nil)
			if err != nil {
				t.Fatal(err)
			}
			p := NewPuller(newDirStore(t), Options{Transport: dial, Keychain: emptyKeychain{}})
			before := len(reg.requests())
			_, err = p.Resolve(context.Background(), ref)
			if err == nil || !strings.Contains(err.Error(), "speaks plain HTTP") || !strings.Contains(err.Error(), "--insecure-registry "+name) {
				t.Fatalf("error %v, want the --insecure-registry hint", err)
			}
			if n := len(reg.requests()) - before; n != 0 {
				t.Errorf("%d requests reached the registry over HTTP without --insecure-registry", n)
			}
			ref, _ = ParseReference(name+"/app:1", []string{name})
			p = NewPuller(newDirStore(t), Options{Transport: dial, Insecure: []string{name}, Keychain: emptyKeychain{}})
			res, err := p.Resolve(context.Background(), ref)
			if err != nil {
				t.Fatalf("with --insecure-registry: %v", err)
			}
			res.Close()
		})
	}
}

// TestTagFallback: a tag whose registry cannot be reached resolves to the
// digest it last resolved to, with a warning; --offline never asks; a tag
// never pulled, or one the registry says is gone, does not fall back.
func TestTagFallback(t *testing.T) {
	img := newFakeImage(t, 1000)
	reg := startFakeRegistry(t, img)
	store := newDirStore(t)
	ctx := context.Background()
	ref, _ := ParseReference(reg.host()+"/app:1", nil)
	pull := func(opts Options) (*Resolved, error) {
		p := NewPuller(store, opts)
		recordSleeps(p)
		res, err := p.Resolve(ctx, ref)
		if err != nil {
			return nil, err
		}
		defer res.Close()
		_, err = p.Fetch(ctx, res)
		return res, err
	}
	first, err := pull(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if first.FromCache {
		t.Error("first pull came from the cache")
	}
	if d, _, err := store.Tag(ref.String()); err != nil || d != digestOf(img.manifest) {
		t.Fatalf("tag remembered as %v, %v", d, err)
	}

	n := len(reg.requests())
	res, err := pull(Options{Offline: true})
	if err != nil || !res.FromCache || res.Digest != first.Digest {
		t.Fatalf("offline: %+v, %v", res, err)
	}
	if len(reg.requests()) != n {
		t.Errorf("offline pull made %d requests", len(reg.requests())-n)
	}
	other, _ := ParseReference(reg.host()+"/app:2", nil)
	if _, err := NewPuller(store, Options{Offline: true}).Resolve(ctx, other); err == nil || !strings.Contains(err.Error(), "has not been pulled into this cache") {
		t.Errorf("offline, unknown tag: %v", err)
	}

	reg.addFault(fault{path: "/manifests/1", status: 404})
	if _, err := pull(Options{}); err == nil || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Errorf("a tag the registry no longer has: %v", err)
	}

	reg.srv.Close()
	var log strings.Builder
	res, err = pull(Options{Retries: 1, Log: slogTo(&log)})
	if err != nil || !res.FromCache || res.Digest != first.Digest {
		t.Fatalf("registry down: %+v, %v", res, err)
	}
	if !strings.Contains(log.String(), "registry unreachable; using the digest the tag last resolved to") {
		t.Errorf("no warning:\n%s", log.String())
	}
}

// TestLayoutBounds: an OCI layout's index and manifests are bounded like a
// registry's, and blobs must have the size their descriptor declares.
func TestLayoutBounds(t *testing.T) {
	img := newFakeImage(t, 100)
	md := digestOf(img.manifest)
	index := func(size int) string {
		return fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d}]}`, md, size)
	}
	tests := []struct {
		name  string
		index string
		want  string
	}{
		{"index too large", index(len(img.manifest)) + strings.Repeat(" ", 5<<20), "index.json is larger than 4.0 MiB"},
		{"manifest declared huge", index(5 << 20), "declared as 5242880 bytes (5.0 MiB); manifests are limited to 4.0 MiB"},
		{"manifest longer than declared", index(10), "more data than the 10 bytes the manifest declares"},
		{"manifest shorter than declared", index(len(img.manifest) + 1), fmt.Sprintf("content ended after %d of the %d bytes", len(img.manifest), len(img.manifest)+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755)
			os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
			os.WriteFile(filepath.Join(dir, "index.json"), []byte(tc.index), 0o644)
			os.WriteFile(filepath.Join(dir, "blobs", "sha256", md.Hex), img.manifest, 0o644)
			_, err := NewPuller(newDirStore(t), Options{}).Resolve(context.Background(), Reference{Transport: OCI, Path: dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
