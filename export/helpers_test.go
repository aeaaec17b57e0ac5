package export

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/pve-image/pve-image/imgconv"
)

// ent is a tar member for fixtures.
type ent struct {
	name   string
	typ    byte
	body   string
	mode   int64
	uid    int
	gid    int
	link   string
	mtime  int64
	xattrs map[string]string
}

func file(name, body string) ent { return ent{name: name, typ: tar.TypeReg, body: body, mode: 0o644} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeLink, link: target, mode: 0o644}
}
func (e ent) at(t int64) ent         { e.mtime = t; return e }
func (e ent) perm(m int64) ent       { e.mode = m; return e }
func (e ent) owner(uid, gid int) ent { e.uid, e.gid = uid, gid; return e }
func (e ent) xattr(k, v string) ent {
	x := map[string]string{}
	for a, b := range e.xattrs {
		x[a] = b
	}
	x[k] = v
	e.xattrs = x
	return e
}

const fixtureTime = 1700000000

// mkTar writes entries as a PAX tar.
func mkTar(t testing.TB, entries ...ent) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		mt := e.mtime
		if mt == 0 {
			mt = fixtureTime
		}
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, Linkname: e.link,
			ModTime: time.Unix(mt, 0), Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// testConf is a container config as pct.conf holds it.
const testConf = `#made by hand
arch: amd64
cores: 2
hostname: web
memory: 256
net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:AA:BB:CC,ip=dhcp,type=veth
ostype: debian
rootfs: local-lvm:vm-100-disk-0,size=4G
swap: 128
unprivileged: 1
`

// vzdump is an archive as vzdump writes it: pct.conf, pct.fw, then the
// root file system.
func vzdump(t testing.TB, conf string, entries ...ent) []byte {
	t.Helper()
	all := []ent{file("./etc/vzdump/pct.conf", conf).at(fixtureTime + 100), file("./etc/vzdump/pct.fw", "")}
	return mkTar(t, append(all, entries...)...)
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// bytesLayer is a layer held in memory.
type bytesLayer struct{ b []byte }

func (l bytesLayer) Digest() (v1.Hash, error) {
	sum := sha256.Sum256(l.b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, nil
}
func (l bytesLayer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }
func (l bytesLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.b)), nil
}

// flatten flattens tars as layers, bottom first.
func flatten(t testing.TB, layers ...[]byte) *imgconv.Rootfs {
	t.Helper()
	ls := make([]imgconv.Layer, len(layers))
	for i, l := range layers {
		ls[i] = bytesLayer{l}
	}
	r, err := imgconv.Flatten(context.Background(), ls, imgconv.Options{Image: "test", TempDir: t.TempDir(), Stream: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// writeTar writes a flattened tree.
func writeTar(t testing.TB, r *imgconv.Rootfs) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := r.WriteTar(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// listing lists a tar imgconv wrote: one line per name with its type,
// attributes, content hash, link target and the names it shares its
// content with, skipping what skip says.
func listing(t testing.TB, b []byte, skip func(p string) bool) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	type info struct {
		line  string
		group *[]string
	}
	var order []string
	byName := map[string]*info{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := treePath(h.Name)
		if skip != nil && skip(p) {
			continue
		}
		if h.Typeflag == tar.TypeLink {
			first := byName[treePath(h.Linkname)]
			if first == nil {
				t.Fatalf("%s links to %s, not listed", h.Name, h.Linkname)
			}
			*first.group = append(*first.group, p)
			byName[p] = &info{line: first.line, group: first.group}
			order = append(order, p)
			continue
		}
		body, _ := io.ReadAll(tr)
		sum := sha256.Sum256(body)
		var xs []string
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				xs = append(xs, k[len("SCHILY.xattr."):]+"="+v)
			}
		}
		sort.Strings(xs)
		line := fmt.Sprintf("%c %04o %d:%d t=%d size=%d sha=%x link=%q xattrs=%v", h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime.Unix(), len(body), sum[:6], h.Linkname, xs)
		g := []string{p}
		byName[p] = &info{line: line, group: &g}
		order = append(order, p)
	}
	out := make([]string, 0, len(order))
	for _, p := range order {
		in := byName[p]
		g := append([]string{}, *in.group...)
		sort.Strings(g)
		names := ""
		if len(g) > 1 {
			names = " names=" + strings.Join(g, ",")
		}
		out = append(out, p+" "+in.line+names)
	}
	sort.Strings(out)
	return out
}

// layerMembers lists a tar's member names in order.
func layerMembers(t testing.TB, b []byte) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
}

// readOCIArchive reads the one image of an oci-archive.
func readOCIArchive(t testing.TB, file string) v1.Image {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		body, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("index %+v: %v", m, err)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
