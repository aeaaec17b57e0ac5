package template

import (
	"context"
	"fmt"
	"math/rand"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/imgconv"
	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/tests/testenv"
)

// text is n bytes of words, compressible as files in images are.
func text(seed int64, n int) string {
	r := rand.New(rand.NewSource(seed))
	var b strings.Builder
	for b.Len() < n {
		b.WriteString([]string{"layer ", "whiteout ", "template ", "proxmox ", "zstd "}[r.Intn(5)])
		fmt.Fprintf(&b, "%x ", r.Int63())
	}
	return b.String()[:n]
}

// TestTemplateBytesSameEverywhere: a template's bytes depend on the image
// and the options, not on the machine: not on how many cores it has, nor
// on whether igzip decodes the layers. Layers are large enough (1 MiB and
// more compressed) for igzip to take them, and read as they download.
func TestTemplateBytesSameEverywhere(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	img := testenv.Image(t, amd64, v1.Config{Cmd: []string{"/bin/sh"}},
		testenv.Layer(t, testenv.Dir("etc/"), testenv.File("etc/os-release", "ID=debian\n"),
			testenv.File("usr/share/doc/a", text(1, 3<<20)), testenv.File("usr/lib/b", text(2, 3<<20)),
			testenv.Hardlink("usr/lib/b2", "usr/lib/b")),
		testenv.Layer(t, testenv.File("srv/big", text(3, 5<<20)), testenv.File("srv/small", "s")),
		testenv.Layer(t, testenv.Whiteout("usr/share", "doc"), testenv.File("usr/lib/b", "replaced"), testenv.File("srv/c", text(4, 1<<20))),
	)
	reg.Push(t, "same/app:1", img)
	ls, _ := img.Layers()
	for i, l := range ls {
		if n, _ := l.Size(); i < 2 && n < 1<<20 {
			t.Fatalf("layer %d is %d bytes compressed: too small for igzip to take it", i, n)
		}
	}
	ref, err := registry.ParseReference(reg.Host+"/same/app:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	igzip := imgconv.LookIgzip()
	if igzip == "" {
		testenv.Missing(t, "igzip not installed (Debian package isal)")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	var first string
	for _, procs := range []int{1, 2} {
		for _, gunzip := range []string{BuiltinGunzip, igzip} {
			runtime.GOMAXPROCS(procs)
			c, err := cache.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			b := &Builder{Cache: c, Puller: registry.NewPuller(c, registry.Options{}), Version: "test", Gunzip: gunzip}
			res, err := b.Convert(context.Background(), ref, Options{Compression: Zstd, Init: InitNone})
			if err != nil {
				t.Fatalf("GOMAXPROCS %d, gunzip %s: %v", procs, gunzip, err)
			}
			res.Close()
			if first == "" {
				first = res.Entry.SHA256
				continue
			}
			if res.Entry.SHA256 != first {
				t.Errorf("GOMAXPROCS %d, gunzip %s: template sha256:%s, first sha256:%s", procs, gunzip, res.Entry.SHA256, first)
			}
		}
	}
}
