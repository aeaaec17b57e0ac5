package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestBadImages: each broken image fails with an error naming the image, the
// layer and the path where there is one, and leaves no template in the
// cache and nothing at -o.
func TestBadImages(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	base := Layer(t, File("etc/os-release", "ID=alpine\n"))
	good := Gzip(Tar(t, File("f", strings.Repeat("x", 200000))))
	corrupt := append([]byte{}, good...)
	corrupt[len(corrupt)/2] ^= 0xff
	cases := []struct {
		name  string
		layer v1.Layer
		wants []string
	}{
		{"escape", Layer(t, File("a/../../etc/shadow", "x")), []string{"a/../../etc/shadow", "escapes the root"}},
		{"through-symlink", Layer(t, Symlink("etc", "/host-etc"), File("etc/passwd", "x")), []string{"etc/passwd", "through a symbolic link"}},
		{"high-uid", Layer(t, Owned(File("srv/data", "x"), 100000, 0)), []string{"srv/data", "65536", "--squash-high-ids"}},
		{"long-name", Layer(t, File(strings.Repeat("n", 256), "x")), []string{"longer than 255 bytes"}},
		{"deep-path", Layer(t, File(strings.Repeat("d/", 10000)+"f", "x")), []string{"(20001 bytes)", "longer than 4095 bytes"}},
		{"long-symlink", Layer(t, Symlink("l", strings.Repeat("x/", 2048))), []string{`"l"`, "symlink target of 4096 bytes"}},
		{"corrupt", RawLayer(corrupt, types.OCILayer), []string{"corrupt or truncated"}},
		{"truncated", RawLayer(good[:len(good)/3], types.OCILayer), []string{"corrupt or truncated"}},
		{"media-type", RawLayer(good, "application/vnd.example.chart.v1+tar"), []string{"unsupported layer media type"}},
		{"dangling-hardlink", Layer(t, Hardlink("b", "missing")), []string{`"b"`, "hardlink target"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := Image(t, amd64, v1.Config{}, base, tc.layer)
			reg.Push(t, "bad:"+tc.name, img)
			d, _ := tc.layer.Digest()
			c := newCLI(t)
			out := filepath.Join(t.TempDir(), "out.tar.zst")
			ref := reg.Host + "/bad:" + tc.name
			c.fails([]string{"convert", ref, "-o", out}, append(tc.wants, "image "+ref, "layer "+d.String())...)
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("-o %s exists after a failed convert", out)
			}
			if ls := c.ok("cache", "ls").stdout; !strings.Contains(ls, "0 template(s)") {
				t.Errorf("a failed convert left a template:\n%s", ls)
			}
			if files, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*")); len(files) > 0 {
				t.Errorf("temporary files left beside -o: %v", files)
			}
			c.ok("cache", "verify")
		})
	}
}

func TestSquashHighIDs(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "high:1", Image(t, amd64, v1.Config{}, Layer(t, Owned(File("srv/data", "x"), 100000, 200000))))
	c := newCLI(t)
	path := c.ok("convert", "--init", "none", "--squash-high-ids", reg.Host+"/high:1").out()
	for _, n := range ReadTree(t, ExtractAsProxmox(t, path)) {
		if n.Path == "srv/data" && (n.UID != 65534 || n.GID != 65534) {
			t.Errorf("srv/data owned by %d:%d, want 65534:65534", n.UID, n.GID)
		}
	}
}

// TestTamperedBlob: a registry (or a proxy) serving a layer whose bytes do not
// match its digest is caught before anything reaches the cache.
func TestTamperedBlob(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	img := smallImage(t, "tamper")
	reg.Push(t, "app:1", img)
	layers, _ := img.Layers()
	victim, _ := layers[1].Digest()
	proxy := StartProxy(t, reg.Host)
	proxy.SetTamper(func(path string, body []byte) []byte {
		if strings.HasSuffix(path, victim.String()) {
			return append([]byte{}, append(body[:len(body)-1], body[len(body)-1]^1)...)
		}
		return body
	})
	c := newCLI(t)
	c.fails([]string{"convert", proxy.Host + "/app:1"}, "layer "+victim.String())
	if _, err := os.Stat(filepath.Join(c.cache, "blobs", "sha256", victim.Hex)); !os.IsNotExist(err) {
		t.Error("the tampered blob reached the cache")
	}
	c.ok("cache", "verify")
}
