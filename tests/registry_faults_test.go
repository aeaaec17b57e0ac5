package tests

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	. "github.com/pve-image/pve-image/tests/testenv"
)

// faultImage is an image with one layer large enough to be cut in the
// middle (incompressible, so its blob is as large as its content).
type faultImage struct {
	img            v1.Image
	victim, config v1.Hash
	victimSize     int64
}

func newFaultImage(t *testing.T) faultImage {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 768<<10)
	for i := range data {
		data[i] = byte(r.UintN(256))
	}
	big := Layer(t, File("data/random", string(data)))
	img := Image(t, amd64, v1.Config{Entrypoint: []string{"/app"}},
		Layer(t, File("etc/os-release", "ID=alpine\n")), big)
	victim, _ := big.Digest()
	size, _ := big.Size()
	cfg, _ := img.ConfigName()
	return faultImage{img: img, victim: victim, config: cfg, victimSize: size}
}

// TestRegistryFaultsRecovered: one passing fault at a time between
// pve-image and the CNCF registry; each convert succeeds, with the number
// of requests the retry or the resumed download needs.
func TestRegistryFaultsRecovered(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	fi := newFaultImage(t)
	reg.Push(t, "app:1", fi.img)
	victim, half, quarter := fi.victim.String(), fi.victimSize/2, fi.victimSize/4
	tests := []struct {
		name   string
		fault  Fault
		flags  []string
		path   string   // requests counted here
		gets   int      // GETs to path
		ranges []string // Range headers of those GETs, when set
		stderr string   // in the log, when set
		// quiet: net/http itself retries a GET whose reused connection
		// closed before any answer, so pve-image may see no failure.
		quiet bool
	}{
		{name: "connection dropped once", fault: Fault{Path: victim, Times: 1, Drop: true}, path: victim, gets: 2, quiet: true},
		{name: "blob cut off once", fault: Fault{Path: victim, Times: 1, Cut: true, Truncate: half}, path: victim, gets: 2,
			ranges: []string{"", fmt.Sprintf("bytes=%d-", half)}},
		{name: "500 once", fault: Fault{Path: victim, Times: 1, Status: 500}, path: victim, gets: 2},
		{name: "503 twice", fault: Fault{Path: victim, Times: 2, Status: 503}, path: victim, gets: 3},
		{name: "429 with Retry-After", fault: Fault{Path: victim, Times: 1, Status: 429, RetryAfter: "1"}, path: victim, gets: 2,
			stderr: "wait=1s"},
		{name: "stalled once", fault: Fault{Path: victim, Times: 1, Stall: true, Truncate: quarter}, flags: []string{"--stall-timeout", "500ms"},
			path: victim, gets: 2, ranges: []string{"", fmt.Sprintf("bytes=%d-", quarter)}},
		{name: "manifest 503 once", fault: Fault{Kind: "manifest", Times: 1, Status: 503}, path: "/manifests/1", gets: 2},
		{name: "manifest cut off once", fault: Fault{Kind: "manifest", Times: 1, Cut: true, Truncate: 20}, path: "/manifests/1", gets: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			proxy := StartProxy(t, reg.Host)
			proxy.AddFault(tc.fault)
			c := newCLI(t)
			out := filepath.Join(t.TempDir(), "app.tar.zst")
			r := c.ok(append(append([]string{}, tc.flags...), "convert", "--init", "none", proxy.Host+"/app:1", "-o", out)...)
			if n := proxy.CountPath("GET", tc.path); n != tc.gets {
				t.Errorf("%d GETs of %s, want %d", n, tc.path, tc.gets)
			}
			if tc.ranges != nil && !slices.Equal(proxy.Ranges(tc.path), tc.ranges) {
				t.Errorf("Range headers %q, want %q", proxy.Ranges(tc.path), tc.ranges)
			}
			if tc.stderr != "" && !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, r.stderr)
			}
			if !tc.quiet && !strings.Contains(r.stderr, "retrying") {
				t.Errorf("the retry is not logged:\n%s", r.stderr)
			}
			if _, err := os.Stat(out); err != nil {
				t.Error(err)
			}
			c.ok("cache", "verify")
		})
	}
}

// TestRegistryFaultsRefused: faults a retry does not mend, and content
// larger than declared or allowed, fail with a message naming the blob and
// what is wrong, after a bounded number of requests and bytes, and leave
// nothing behind.
func TestRegistryFaultsRefused(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	fi := newFaultImage(t)
	reg.Push(t, "app:1", fi.img)
	victim, config := fi.victim.String(), fi.config.String()
	const pad = 256 << 20
	tests := []struct {
		name   string
		fault  Fault
		tamper func(path string, body []byte) []byte
		flags  []string
		path   string
		gets   int
		wants  []string
	}{
		{name: "503 always", fault: Fault{Path: victim, Status: 503}, flags: []string{"--retries", "2"}, path: victim, gets: 3,
			wants: []string{"layer " + victim, "503 Service Unavailable", "gave up after 3 attempts"}},
		{name: "stalled always", fault: Fault{Path: victim, Stall: true, Truncate: 1000}, flags: []string{"--stall-timeout", "300ms", "--retries", "1"},
			path: victim, gets: 2, wants: []string{"layer " + victim, "registry stalled: no data for 300ms", "gave up after 2 attempts"}},
		{name: "Retry-After too long", fault: Fault{Path: victim, Status: 429, RetryAfter: "3600"}, path: victim, gets: 1,
			wants: []string{"layer " + victim, "429 Too Many Requests", "asks to retry after 1h0m0s"}},
		{name: "layer longer than declared", fault: Fault{Path: victim, Pad: pad}, path: victim, gets: 1,
			wants: []string{"layer " + victim, fmt.Sprintf("announces %d bytes", fi.victimSize+pad), fmt.Sprintf("declares as %d bytes", fi.victimSize)}},
		{name: "layer longer than declared, chunked", fault: Fault{Path: victim, Pad: pad, Chunked: true}, path: victim, gets: 1,
			wants: []string{"layer " + victim, fmt.Sprintf("more data than the %d bytes the manifest declares", fi.victimSize)}},
		{name: "config longer than declared", fault: Fault{Path: config, Pad: pad, Chunked: true}, path: config, gets: 1,
			wants: []string{"config " + config, "more data than"}},
		{name: "config declared huge", tamper: func(path string, body []byte) []byte {
			if !strings.Contains(path, "/manifests/") {
				return body
			}
			m, _ := fi.img.Manifest()
			return []byte(strings.Replace(string(body), fmt.Sprintf(`"size":%d,"digest":"%s"`, m.Config.Size, config), `"size":314572800,"digest":"`+config+`"`, 1))
		}, path: config, gets: 0, wants: []string{"config " + config, "declared as 314572800 bytes (300.0 MiB)", "configs are limited to 4.0 MiB"}},
		{name: "manifest too large", tamper: func(path string, body []byte) []byte {
			if !strings.Contains(path, "/manifests/") {
				return body
			}
			return append(body, strings.Repeat(" ", 5<<20)...)
		}, path: "/manifests/1", gets: 1, wants: []string{"manifest", "manifests are limited to 4.0 MiB"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			proxy := StartProxy(t, reg.Host)
			if tc.fault != (Fault{}) {
				proxy.AddFault(tc.fault)
			}
			if tc.tamper != nil {
				proxy.SetTamper(tc.tamper)
			}
			c := newCLI(t)
			out := filepath.Join(t.TempDir(), "app.tar.zst")
			ref := proxy.Host + "/app:1"
			c.fails(append(append([]string{}, tc.flags...), "convert", ref, "-o", out), append(tc.wants, "image "+ref)...)
			if n := proxy.CountPath("GET", tc.path); n != tc.gets {
				t.Errorf("%d GETs of %s, want %d", n, tc.path, tc.gets)
			}
			if sent := proxy.BytesSent(tc.path); sent > 64<<20 {
				t.Errorf("the proxy sent %d bytes of %s before pve-image stopped reading", sent, tc.path)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("-o %s exists after a failed convert", out)
			}
			if h, err := v1.NewHash(tc.path); err == nil {
				if _, err := os.Stat(filepath.Join(c.cache, "blobs", h.Algorithm, h.Hex)); err == nil {
					t.Errorf("blob %s reached the cache", h)
				}
			}
			if ls := c.ok("cache", "ls").stdout; !strings.Contains(ls, "0 template(s)") {
				t.Errorf("a failed convert left a template:\n%s", ls)
			}
			c.ok("cache", "verify")
		})
	}
}
