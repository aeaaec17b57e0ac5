package testenv

import (
	"archive/tar"
	"bytes"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Entry is one member of a hand-written layer.
type Entry struct {
	Name string
	Type byte // default TypeReg, or TypeDir when Name ends in "/"
	Body string
	Link string
	Mode int64 // default 0644 for files, 0755 for directories
	UID  int
	GID  int
	PAX  map[string]string
}

func File(name, body string) Entry { return Entry{Name: name, Body: body} }
func Exec(name, body string) Entry { return Entry{Name: name, Body: body, Mode: 0o755} }
func Dir(name string) Entry        { return Entry{Name: name, Type: tar.TypeDir} }
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Link: target}
}
func Hardlink(name, target string) Entry { return Entry{Name: name, Type: tar.TypeLink, Link: target} }
func Whiteout(dir, name string) Entry    { return Entry{Name: join(dir, ".wh."+name)} }
func Opaque(dir string) Entry            { return Entry{Name: join(dir, ".wh..wh..opq")} }
func Device(name string, typ byte) Entry { return Entry{Name: name, Type: typ} }
func Owned(e Entry, uid, gid int) Entry  { e.UID, e.GID = uid, gid; return e }
func WithMode(e Entry, mode int64) Entry { e.Mode = mode; return e }
func WithPAX(e Entry, kv ...string) Entry {
	e.PAX = map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		e.PAX[kv[i]] = kv[i+1]
	}
	return e
}

func join(dir, base string) string {
	if dir == "" {
		return base
	}
	return strings.TrimSuffix(dir, "/") + "/" + base
}

// ModTime is the mtime of every test entry.
var ModTime = time.Unix(1700000000, 0)

// Tar writes entries as an uncompressed tar.
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.Type
		if typ == 0 {
			typ = tar.TypeReg
			if strings.HasSuffix(e.Name, "/") {
				typ = tar.TypeDir
			}
		}
		mode := e.Mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		hdr := &tar.Header{Name: e.Name, Typeflag: typ, Mode: mode, Uid: e.UID, Gid: e.GID,
			ModTime: ModTime, Linkname: e.Link, PAXRecords: e.PAX, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.Body))
		}
		if typ == tar.TypeChar || typ == tar.TypeBlock {
			hdr.Devmajor, hdr.Devminor = 1, 3
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("test layer member %s: %v", e.Name, err)
		}
		if typ == tar.TypeReg {
			io.WriteString(tw, e.Body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Gzip compresses b.
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// Zstd compresses b.
func Zstd(b []byte) []byte {
	enc, _ := zstd.NewWriter(nil)
	return enc.EncodeAll(b, nil)
}

// Layer is a gzip layer of entries with the OCI media type.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	return static.NewLayer(Gzip(Tar(t, entries...)), types.OCILayer)
}

// ZstdLayer is a zstd layer of entries.
func ZstdLayer(t testing.TB, entries ...Entry) v1.Layer {
	return static.NewLayer(Zstd(Tar(t, entries...)), types.OCILayerZStd)
}

// RawLayer is a layer of blob with media type mt, whatever blob holds.
func RawLayer(blob []byte, mt types.MediaType) v1.Layer { return static.NewLayer(blob, mt) }

// Image assembles an image for platform p with config c.
func Image(t testing.TB, p v1.Platform, c v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config = c
	cf.Created = v1.Time{Time: ModTime}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1)
}

// Index assembles a multi-platform index.
func Index(t testing.TB, imgs map[string]v1.Image) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, ps := range slices.Sorted(maps.Keys(imgs)) {
		parts := strings.Split(ps, "/")
		p := v1.Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) > 2 {
			p.Variant = parts[2]
		}
		adds = append(adds, mutate.IndexAddendum{Add: imgs[ps], Descriptor: v1.Descriptor{Platform: &p}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

// Push writes img (a v1.Image or v1.ImageIndex) to ref on a test
// registry, with the registry's credentials if it has them.
func (r *Registry) Push(t testing.TB, ref string, img any) {
	t.Helper()
	n, err := name.ParseReference(r.Host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{}
	if r.User != "" {
		opts = append(opts, remote.WithAuth(&basic{r.User, r.Password}))
	}
	switch x := img.(type) {
	case v1.Image:
		err = remote.Write(n, x, opts...)
	case v1.ImageIndex:
		err = remote.WriteIndex(n, x, opts...)
	}
	if err != nil {
		t.Fatalf("push %s: %v", n, err)
	}
}
