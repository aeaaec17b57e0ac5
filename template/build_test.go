package template

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

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
	igzip := needIgzip(t)
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

func needIgzip(t *testing.T) string {
	t.Helper()
	igzip, err := imgconv.LookIgzip()
	if igzip == "" {
		testenv.Missing(t, fmt.Sprintf("igzip not installed or not working (Debian package isal): %v", err))
	}
	return igzip
}

// TestBrokenIgzip: an igzip that fails on every layer (here: exit 127, a
// library missing) does not fail the conversion: the layers, verified by
// their digests, are decoded again in the process, the template is the
// same, and a warning names igzip. A layer that really is corrupt is still
// reported so, as the built-in decoder's finding.
func TestBrokenIgzip(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	good := testenv.Image(t, amd64, v1.Config{Cmd: []string{"/bin/sh"}},
		testenv.Layer(t, testenv.File("etc/os-release", "ID=debian\n"), testenv.File("big", text(5, 3<<20))))
	reg.Push(t, "broken/good:1", good)
	bad := testenv.Gzip(testenv.Tar(t, testenv.File("big", text(6, 3<<20)), testenv.File("b", "b")))
	bad[len(bad)/2] ^= 0xff
	corrupt := testenv.Image(t, amd64, v1.Config{Cmd: []string{"/bin/sh"}}, testenv.RawLayer(bad, types.OCILayer))
	reg.Push(t, "broken/corrupt:1", corrupt)

	broken := filepath.Join(t.TempDir(), "igzip")
	script := "#!/bin/sh\necho 'igzip: error while loading shared libraries: libisal.so.2' >&2\nexit 127\n"
	if err := os.WriteFile(broken, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	convert := func(ref, gunzip string, log *bytes.Buffer) (*Result, error) {
		t.Helper()
		r, err := registry.ParseReference(reg.Host+ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := cache.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		b := &Builder{Cache: c, Puller: registry.NewPuller(c, registry.Options{}), Version: "test", Gunzip: gunzip,
			Log: slog.New(slog.NewTextHandler(log, nil))}
		return b.Convert(context.Background(), r, Options{Compression: Zstd, Init: InitNone})
	}
	var log bytes.Buffer
	want, err := convert("/broken/good:1", BuiltinGunzip, &log)
	if err != nil {
		t.Fatal(err)
	}
	want.Close()
	got, err := convert("/broken/good:1", broken, &log)
	if err != nil {
		t.Fatalf("with a broken igzip: %v", err)
	}
	got.Close()
	if got.Entry.SHA256 != want.Entry.SHA256 {
		t.Errorf("with a broken igzip: template sha256:%s, want sha256:%s", got.Entry.SHA256, want.Entry.SHA256)
	}
	if !strings.Contains(log.String(), "igzip failed") || !strings.Contains(log.String(), "libisal.so.2") {
		t.Errorf("no warning naming igzip's failure in the log:\n%s", log.String())
	}
	for _, gunzip := range []string{BuiltinGunzip, broken} {
		_, err := convert("/broken/corrupt:1", gunzip, &log)
		if !errors.Is(err, imgconv.ErrCorrupt) || errors.Is(err, imgconv.ErrExternalGunzip) {
			t.Errorf("corrupt layer, gunzip %s: got %v, want the built-in decoder's ErrCorrupt", gunzip, err)
		}
	}
}

// TestGunzipEnv: PVE_IMAGE_GUNZIP=builtin turns igzip off for every
// Builder that has not chosen; an unknown value is refused.
func TestGunzipEnv(t *testing.T) {
	for _, tc := range []struct {
		env, set, want string
		bad            bool
	}{
		{env: "builtin", want: ""},
		{env: "builtin", set: "/opt/igzip", want: "/opt/igzip"},
		{env: "gzip", bad: true},
	} {
		t.Setenv(GunzipEnv, tc.env)
		got, err := (&Builder{Gunzip: tc.set}).gunzip()
		if tc.bad != (err != nil) || got != tc.want {
			t.Errorf("%s=%s, Gunzip %q: got %q, %v; want %q, error %v", GunzipEnv, tc.env, tc.set, got, err, tc.want, tc.bad)
		}
	}
	t.Setenv(GunzipEnv, "")
	look, _ := imgconv.LookIgzip()
	if got, err := (&Builder{}).gunzip(); err != nil || got != look {
		t.Errorf("default: got %q, %v; want %q", got, err, look)
	}
}
