package imgconv

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/tests/testenv"
)

// Short names for the shared test-layer builders.
type te = testenv.Entry

var (
	file     = testenv.File
	dir      = testenv.Dir
	symlink  = testenv.Symlink
	hardlink = testenv.Hardlink
	tarOf    = testenv.Tar
)

// whiteout is any member by its full name, typically a .wh. file.
func whiteout(name string) te { return te{Name: name} }

// memLayer is a layer held in memory; its digest is computed, so corrupting
// blob after creation makes the layer lie about its content.
type memLayer struct {
	blob []byte
	mt   types.MediaType
	dig  v1.Hash
}

func newMemLayer(blob []byte, mt types.MediaType) *memLayer {
	sum := sha256.Sum256(blob)
	return &memLayer{blob: blob, mt: mt, dig: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
}

func (l *memLayer) Digest() (v1.Hash, error)            { return l.dig, nil }
func (l *memLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *memLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}

// sizedLayer is a layer that knows its compressed size, as layers from a
// registry or the cache do: the external gzip decoder takes such layers
// (from Options.gunzipFrom bytes), and Flatten streams the largest of them
// by default. memLayer itself has no size, so that the tests written for
// it keep finding errors in Flatten rather than in WriteTar.
type sizedLayer struct {
	Layer
	size int64
}

func (l sizedLayer) Size() (int64, error) { return l.size, nil }

func withSize(l Layer, blob []byte) Layer { return sizedLayer{Layer: l, size: int64(len(blob))} }

// sizedMem is a memLayer of blob with its size.
func sizedMem(blob []byte) Layer { return withSize(newMemLayer(blob, types.OCILayer), blob) }

func gz(t testing.TB, b []byte) []byte  { return testenv.Gzip(b) }
func zst(t testing.TB, b []byte) []byte { return testenv.Zstd(b) }

func gzLayer(t testing.TB, entries ...te) Layer {
	return newMemLayer(gz(t, tarOf(t, entries...)), types.OCILayer)
}

// member is a flattened entry as read back from WriteTar's output.
type member struct {
	name, link, body string
	typ              byte
	mode             int64
	uid, gid         int
	xattrs           map[string]string
}

func (m member) String() string {
	s := fmt.Sprintf("%s %c", m.name, m.typ)
	switch m.typ {
	case tar.TypeReg:
		s += fmt.Sprintf(" %q", m.body)
	case tar.TypeSymlink, tar.TypeLink:
		s += " -> " + m.link
	}
	return s
}

func flatten(t testing.TB, opts Options, layers ...Layer) (*Rootfs, error) {
	t.Helper()
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	return Flatten(context.Background(), layers, opts)
}

func writeAll(t testing.TB, r *Rootfs) ([]byte, WriteStats) {
	t.Helper()
	var buf bytes.Buffer
	st, err := r.WriteTar(context.Background(), &buf)
	if err != nil {
		t.Fatalf("WriteTar: %v", err)
	}
	return buf.Bytes(), st
}

func readMembers(t testing.TB, b []byte) []member {
	t.Helper()
	var out []member
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read template: %v", err)
		}
		body, _ := io.ReadAll(tr)
		m := member{name: hdr.Name, link: hdr.Linkname, body: string(body), typ: hdr.Typeflag, mode: hdr.Mode, uid: hdr.Uid, gid: hdr.Gid}
		for k, v := range hdr.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if m.xattrs == nil {
					m.xattrs = map[string]string{}
				}
				m.xattrs[x] = v
			}
		}
		out = append(out, m)
	}
}

// summary renders members as lines, skipping the root, for compact
// expectations.
func summary(ms []member) []string {
	var s []string
	for _, m := range ms {
		if m.name == "./" {
			continue
		}
		s = append(s, m.String())
	}
	return s
}

// checkInvariants asserts what every template must satisfy whatever the
// input: "./" names, a root first, parents before children, hardlinks after
// their targets, no device nodes, no whiteouts, no duplicates.
func checkInvariants(t testing.TB, ms []member) {
	t.Helper()
	seen := map[string]byte{}
	for i, m := range ms {
		if i == 0 {
			if m.name != "./" || m.typ != tar.TypeDir {
				t.Fatalf("first member is %s, want the root directory ./", m)
			}
			seen["."] = tar.TypeDir
			continue
		}
		if !strings.HasPrefix(m.name, "./") {
			t.Fatalf("member %q lacks the ./ prefix", m.name)
		}
		p := strings.TrimSuffix(m.name, "/")
		if _, dup := seen[p]; dup {
			t.Fatalf("member %q appears twice", m.name)
		}
		parent := p[:strings.LastIndexByte(p, '/')]
		if seen[parent] != tar.TypeDir {
			t.Fatalf("member %q comes before its parent directory", m.name)
		}
		if strings.HasPrefix(p[strings.LastIndexByte(p, '/')+1:], ".wh.") {
			t.Fatalf("whiteout %q leaked into the output", m.name)
		}
		switch m.typ {
		case tar.TypeChar, tar.TypeBlock:
			t.Fatalf("device node %q in the output", m.name)
		case tar.TypeLink:
			if typ, ok := seen[m.link]; !ok || typ == tar.TypeDir {
				t.Fatalf("hardlink %q -> %q does not follow a non-directory target", m.name, m.link)
			}
		}
		if m.uid >= 65536 || m.gid >= 65536 {
			t.Fatalf("member %q has ids %d:%d", m.name, m.uid, m.gid)
		}
		// What Linux can create: GNU tar passes the name without a
		// directory's trailing slash, and link targets as they are.
		if len(p) > maxMemberLen || len(m.link) > maxMemberLen {
			t.Fatalf("member %s (link %s) is longer than %d bytes", quoteShort(m.name), quoteShort(m.link), maxMemberLen)
		}
		for _, c := range strings.Split(p, "/") {
			if len(c) > maxNameLen {
				t.Fatalf("member %s has a name of %d bytes", quoteShort(m.name), len(c))
			}
		}
		seen[p] = m.typ
	}
}

// normalize describes the tree a template unpacks to, independent of member
// order and of which name of a hardlink set carries the content: a line per
// path, sorted, hardlinked names marked with the set's first name.
func normalize(ms []member) []string {
	byName := map[string]member{}
	group := map[string]string{} // name -> name holding the content
	for _, m := range ms {
		byName[m.name] = m
		if m.typ == tar.TypeLink {
			group[m.name] = m.link
		}
	}
	members := map[string][]string{}
	for n, target := range group {
		members[target] = append(members[target], n)
	}
	var out []string
	for _, m := range ms {
		line := fmt.Sprintf("%s %c %o %d:%d", strings.TrimSuffix(m.name, "/"), m.typ, m.mode, m.uid, m.gid)
		src := m
		if m.typ == tar.TypeLink {
			src = byName[m.link]
			line = fmt.Sprintf("%s %c %o %d:%d", m.name, src.typ, src.mode, src.uid, src.gid)
		}
		switch src.typ {
		case tar.TypeReg:
			line += fmt.Sprintf(" %q", src.body)
		case tar.TypeSymlink:
			line += " -> " + src.link
		}
		root := m.name
		if m.typ == tar.TypeLink {
			root = m.link
		}
		if set := members[root]; len(set) > 0 {
			all := append([]string{root}, set...)
			slices.Sort(all)
			line += " linked:" + strings.Join(all, ",")
		}
		keys := make([]string, 0, len(src.xattrs))
		for k, v := range src.xattrs {
			keys = append(keys, k+"="+v)
		}
		slices.Sort(keys)
		if len(keys) > 0 {
			line += " xattrs:" + strings.Join(keys, ",")
		}
		out = append(out, line)
	}
	slices.Sort(out)
	return out
}
