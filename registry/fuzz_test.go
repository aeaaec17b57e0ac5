package registry

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// FuzzParseReference: no input panics; what parses names no "." or ".."
// repository segment and reads back to itself.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"alpine", "docker://alpine:3.20", "ghcr.io/o/app@sha256:" + hex64, "localhost:5000/a/b:c",
		"oci:/srv/layout:v1", "oci-archive:/tmp/a.tar", "docker-archive:x.tar:app:1",
		"127.0.0.1:1/../../etc/passwd:x", "foo://bar", "a/./b", "docker://", "a:b:c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReference(s, []string{"registry.lan:5000"})
		if err != nil {
			return
		}
		if r.Transport != Docker {
			if r.Path == "" {
				t.Fatalf("%q: %s reference without a path", s, r.Transport)
			}
			return
		}
		repo := r.Name.Context().RepositoryStr()
		if slices.Contains(strings.Split(repo, "/"), "..") || slices.Contains(strings.Split(repo, "/"), ".") {
			t.Fatalf("%q: repository %q has a . or .. segment", s, repo)
		}
		again, err := ParseReference(r.String(), []string{"registry.lan:5000"})
		if err != nil {
			t.Fatalf("%q reads as %q, which does not parse: %v", s, r.String(), err)
		}
		if again.String() != r.String() {
			t.Fatalf("%q reads as %q, then as %q", s, r.String(), again.String())
		}
	})
}

// FuzzOCIArchive and FuzzDockerArchive: an archive of any content is
// resolved and fetched, or refused with an error; never a panic or a hang.
func FuzzOCIArchive(f *testing.F) {
	f.Add(ociArchive(f))
	f.Add(dockerArchive(f)) // the wrong kind
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) { pullArchive(t, OCIArchive, data) })
}

func FuzzDockerArchive(f *testing.F) {
	f.Add(dockerArchive(f))
	f.Add(ociArchive(f))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) { pullArchive(t, DockerArchive, data) })
}

func pullArchive(t *testing.T, tr Transport, data []byte) {
	dir := t.TempDir()
	p := filepath.Join(dir, "image.tar")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	pl := NewPuller(newDirStore(t), Options{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}})
	ctx := context.Background()
	res, err := pl.Resolve(ctx, Reference{Transport: tr, Path: p})
	if err != nil {
		return
	}
	defer res.Close()
	img, err := pl.Fetch(ctx, res)
	if err != nil {
		return
	}
	// What was fetched is readable as an image.
	if _, err := img.ConfigFile(); err != nil {
		return
	}
	ls, _ := img.Layers()
	for _, l := range ls {
		if rc, err := l.Compressed(); err == nil {
			rc.Close()
		}
	}
}

func seedImage(tb testing.TB) v1.Image {
	img, err := random.Image(64, 2)
	if err != nil {
		tb.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		tb.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		tb.Fatal(err)
	}
	return img
}

func ociArchive(tb testing.TB) []byte {
	dir := tb.TempDir()
	lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		tb.Fatal(err)
	}
	img := mutate.MediaType(seedImage(tb), types.OCIManifestSchema1)
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: "1"})); err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if err := TarLayout(filepath.Join(dir, "layout"), &buf, seedTime); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func dockerArchive(tb testing.TB) []byte {
	tag, err := name.NewTag("example.com/app:1")
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(tag, seedImage(tb), &buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

var seedTime = time.Unix(1700000000, 0)

// TestArchiveSeeds: the fuzz targets start from archives that pull.
func TestArchiveSeeds(t *testing.T) {
	for _, tc := range []struct {
		tr   Transport
		data []byte
	}{{OCIArchive, ociArchive(t)}, {DockerArchive, dockerArchive(t)}} {
		p := filepath.Join(t.TempDir(), "image.tar")
		if err := os.WriteFile(p, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		pl := NewPuller(newDirStore(t), Options{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}})
		res, err := pl.Resolve(context.Background(), Reference{Transport: tc.tr, Path: p})
		if err != nil {
			t.Fatalf("%s: %v", tc.tr, err)
		}
		_, err = pl.Fetch(context.Background(), res)
		res.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.tr, err)
		}
	}
}
