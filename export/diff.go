package export

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pve-image/pve-image/imgconv"
)

// inode is what is compared of a name: its type, attributes and content.
// Hardlinked names share one.
type inode struct {
	typ          byte
	mode         int64
	uid, gid     int
	mtime        int64
	size         int64
	sum          [sha256.Size]byte // regular files
	link         string            // symlink target
	xattrs       []xattr           // sorted by name
	major, minor int64
	// names are its names, in the order they came.
	names []string
}

// xattr is an extended attribute. Values are bytes, not text:
// security.capability always holds NULs.
type xattr struct{ name, value string }

// same reports whether a and b are the same file to whoever reads it:
// everything but which other names it has.
func (a *inode) same(b *inode) bool {
	return a.typ == b.typ && a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.mtime == b.mtime &&
		a.size == b.size && a.sum == b.sum && a.link == b.link && slices.Equal(a.xattrs, b.xattrs) && a.major == b.major && a.minor == b.minor
}

// sameNames reports whether a and b are the same hardlink set.
func sameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	as, bs := slices.Clone(a), slices.Clone(b)
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}

// treePath turns a member name of a tar imgconv wrote ("./a/b", "./d/")
// into a tree path ("a/b", "d"; "" for the root).
func treePath(name string) string {
	return strings.Trim(strings.TrimPrefix(name, "./"), "/")
}

// inodeOf reads a header's attributes; the content is hashed by the caller.
func inodeOf(h *tar.Header) *inode {
	ino := &inode{typ: h.Typeflag, mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid, mtime: h.ModTime.Unix(),
		major: h.Devmajor, minor: h.Devminor}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		ino.typ, ino.size = tar.TypeReg, h.Size
	case tar.TypeSymlink:
		ino.link = h.Linkname
	}
	for k, v := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			ino.xattrs = append(ino.xattrs, xattr{name, v})
		}
	}
	slices.SortFunc(ino.xattrs, func(a, b xattr) int { return strings.Compare(a.name, b.name) })
	return ino
}

// xattrRecords are an inode's extended attributes as PAX records.
func (ino *inode) xattrRecords() map[string]string {
	if len(ino.xattrs) == 0 {
		return nil
	}
	out := make(map[string]string, len(ino.xattrs))
	for _, x := range ino.xattrs {
		out["SCHILY.xattr."+x.name] = x.value
	}
	return out
}

// baseline is the template a container was made from: what each name
// was when Proxmox unpacked it.
type baseline map[string]*inode

// readBaseline reads a template (a tar imgconv wrote: each path once,
// each hardlink after the name it links to), hashing file contents.
func readBaseline(ctx context.Context, r io.Reader) (baseline, error) {
	tr := tar.NewReader(r)
	b := baseline{}
	for n := 0; ; n++ {
		if n&255 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
		p := treePath(h.Name)
		if h.Typeflag == tar.TypeLink {
			ino := b[treePath(h.Linkname)]
			if ino == nil {
				return nil, fmt.Errorf("member %s: hardlink to %s, which comes not before it", quote(h.Name), quote(h.Linkname))
			}
			ino.names = append(ino.names, p)
			b[p] = ino
			continue
		}
		ino := inodeOf(h)
		if ino.typ == tar.TypeReg {
			hs := sha256.New()
			if _, err := io.Copy(hs, tr); err != nil {
				return nil, err
			}
			hs.Sum(ino.sum[:0])
		}
		ino.names = []string{p}
		b[p] = ino
	}
}

// record is one name of the archive's tree, in the tree's order.
type record struct {
	path string
	ino  *inode
	// first is the name a hardlink links to, the first of its inode;
	// "" for the first.
	first string
	// off is where a regular file's content is in the spill; -1 when
	// it was not kept (the template has it as it is).
	off int64
}

// spill keeps file contents between reading the tree and writing the
// layer.
type spill struct {
	f   *os.File
	off int64
}

// changes is the comparison of an archive's tree with its template.
type changes struct {
	base    baseline // nil: no template, the tree is the layer
	mounts  []string // mount point paths
	records []*record
	byPath  map[string]*record
	spill   *spill
}

// scan reads the tree as imgconv writes it, keeping the content of every
// file the layer may need: all but those the template has unchanged.
func (c *changes) scan(ctx context.Context, rootfs *imgconv.Rootfs) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := rootfs.WriteTar(ctx, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	err := c.read(ctx, tar.NewReader(pr))
	pr.CloseWithError(errors.New("stopped reading"))
	if werr := <-done; werr != nil && err == nil {
		err = werr
	}
	return err
}

func (c *changes) read(ctx context.Context, tr *tar.Reader) error {
	c.byPath = map[string]*record{}
	buf := make([]byte, 256<<10)
	for n := 0; ; n++ {
		if n&255 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		rec := &record{path: treePath(h.Name), off: -1}
		if h.Typeflag == tar.TypeLink {
			rec.first = treePath(h.Linkname)
			first := c.byPath[rec.first]
			if first == nil {
				return fmt.Errorf("member %s: hardlink to %s, which comes not before it", quote(h.Name), quote(h.Linkname))
			}
			rec.ino = first.ino
			rec.ino.names = append(rec.ino.names, rec.path)
		} else {
			rec.ino = inodeOf(h)
			rec.ino.names = []string{rec.path}
			if rec.ino.typ == tar.TypeReg {
				if err := c.keep(rec, tr, buf); err != nil {
					return fmt.Errorf("member %s: %w", quote(h.Name), err)
				}
			}
		}
		c.records = append(c.records, rec)
		c.byPath[rec.path] = rec
	}
}

// keep hashes a file's content into the spill, and gives the room back
// when the template has the same file under the same name, alone: the
// layer never needs that content (links to it reach the template's).
func (c *changes) keep(rec *record, r io.Reader, buf []byte) error {
	hs := sha256.New()
	start := c.spill.off
	if _, err := c.spill.f.Seek(start, io.SeekStart); err != nil {
		return err
	}
	n, err := io.CopyBuffer(io.MultiWriter(hs, c.spill.f), r, buf)
	if err != nil {
		return err
	}
	if n != rec.ino.size {
		return fmt.Errorf("content is %d bytes, header says %d", n, rec.ino.size)
	}
	hs.Sum(rec.ino.sum[:0])
	if b := c.baseFor(rec.path); b != nil && len(b.names) == 1 && b.same(rec.ino) {
		return nil // the room is taken again by the next file
	}
	rec.off = start
	c.spill.off = start + n
	return nil
}

// baseFor is the template's inode at p, unless p is left out of the
// layer (or there is no template).
func (c *changes) baseFor(p string) *inode {
	if c.base == nil || excluded(p, c.mounts) {
		return nil
	}
	return c.base[p]
}

// entry is one member of the layer.
type entry struct {
	path string
	kind byte // 'e' an entry of the tree, 'w' a whiteout of path, 'o' an opaque marker in directory path
	rec  *record
	// linkTo is the name a hardlink entry links to; "" writes the
	// inode's content (a regular file).
	linkTo string
	// content is the record whose spilled content a file gets.
	content *record
}

// plan decides the layer's members: with a template, what changed;
// without, everything.
func (c *changes) plan() ([]entry, error) {
	emitted := map[string]bool{}
	var out []entry
	// layerFirst is, per inode, the name the layer has its content at.
	layerFirst := map[*inode]string{}
	for _, rec := range c.records {
		if c.base != nil && excluded(rec.path, c.mounts) {
			continue
		}
		b := c.baseFor(rec.path)
		changed := b == nil || !b.same(rec.ino)
		switch {
		case changed:
		case rec.first != "":
			// A link to another file than it was, or to the same one
			// with other names.
			changed = !sameNames(b.names, rec.ino.names)
		case len(b.names) > 1:
			// The first name of a file the template had under several
			// names, not the same ones now: the layer gives it its names
			// anew (the template's file keeps the names it still has).
			changed = !sameNames(b.names, rec.ino.names)
		}
		if !changed {
			continue
		}
		emitted[rec.path] = true
		e := entry{path: rec.path, kind: 'e', rec: rec}
		// Any inode but a directory may have several names (symlinks,
		// fifos and devices too): the second and later are hardlinks.
		if rec.ino.typ != tar.TypeDir {
			if lf, ok := layerFirst[rec.ino]; ok {
				e.linkTo = lf
			} else if rec.first != "" && c.lowerHas(rec.first) {
				// The template has the file this name links to as it is:
				// the link reaches it there.
				e.linkTo = rec.first
			} else {
				src := rec
				if rec.first != "" {
					src = c.byPath[rec.first]
				}
				if src.off < 0 && src.ino.size > 0 {
					return nil, fmt.Errorf("%s: the content of %s was not kept", rec.path, src.path)
				}
				e.content = src
				layerFirst[rec.ino] = rec.path
			}
		}
		out = append(out, e)
	}
	if c.base == nil {
		return out, nil
	}

	// What of the template stays below each directory, and what it had
	// there at all.
	keeps, had := map[string]bool{}, map[string]bool{}
	for p := range c.base {
		if p == "" {
			continue
		}
		had[parentOf(p)] = true
		_, inArchive := c.byPath[p]
		if excluded(p, c.mounts) || inArchive && !emitted[p] {
			for d := parentOf(p); ; d = parentOf(d) {
				if keeps[d] {
					break
				}
				keeps[d] = true
				if d == "" {
					break
				}
			}
		}
	}
	isDir := func(p string) bool { r := c.byPath[p]; return r != nil && r.ino.typ == tar.TypeDir }
	// A directory the template had with children, none of which is left
	// as it was, was replaced: an opaque marker hides the template's
	// children, and the layer holds all it has now (it does: every one
	// is new or changed).
	opaque := map[string]bool{}
	for _, rec := range c.records {
		p := rec.path
		b := c.baseFor(p)
		if rec.ino.typ != tar.TypeDir || b == nil || b.typ != tar.TypeDir || !had[p] || keeps[p] {
			continue
		}
		if underAny(p, opaque) {
			continue
		}
		opaque[p] = true
		out = append(out, entry{path: p, kind: 'o'})
		if !emitted[p] {
			emitted[p] = true
			out = append(out, entry{path: p, kind: 'e', rec: c.byPath[p]})
		}
	}
	// Deleted names: a whiteout for the topmost of each deleted subtree,
	// under a directory that is there still.
	for p := range c.base {
		if p == "" || excluded(p, c.mounts) {
			continue
		}
		if _, ok := c.byPath[p]; ok {
			continue
		}
		dir := parentOf(p)
		if !isDir(dir) || opaque[dir] || underAny(dir, opaque) {
			continue
		}
		out = append(out, entry{path: p, kind: 'w'})
	}
	// The directories holding a change go in too, as they are now: layers
	// carry the parents of what they change.
	for _, e := range slices.Clone(out) {
		for d := parentOf(e.path); d != "" && !emitted[d]; d = parentOf(d) {
			emitted[d] = true
			out = append(out, entry{path: d, kind: 'e', rec: c.byPath[d]})
		}
	}
	return out, nil
}

// lowerHas reports whether the template has the file at p as the archive
// has it, under the same names or alone, so that a link in the layer to
// p reaches the same file.
func (c *changes) lowerHas(p string) bool {
	rec := c.byPath[p]
	b := c.baseFor(p)
	return rec != nil && b != nil && b.same(rec.ino) && (len(b.names) == 1 || sameNames(b.names, rec.ino.names))
}

func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

// underAny reports whether p is below one of dirs.
func underAny(p string, dirs map[string]bool) bool {
	for d := parentOf(p); ; d = parentOf(d) {
		if dirs[d] && d != p {
			return true
		}
		if d == "" {
			return false
		}
	}
}

// treeKey orders paths as imgconv writes a tree: parents before
// children, siblings in byte order (a path's components compared in
// turn). A whiteout sorts by its own name (.wh.NAME), an opaque marker
// first in its directory, after the directory itself.
func treeKey(e entry) string {
	switch e.kind {
	case 'w':
		return joinTree(parentOf(e.path), ".wh."+baseOf(e.path))
	case 'o':
		return joinTree(e.path, "\x00.wh..wh..opq")
	}
	return e.path
}

func baseOf(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

func joinTree(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}

// compareTree compares paths component by component.
func compareTree(a, b string) int {
	for {
		ca, ra, moreA := strings.Cut(a, "/")
		cb, rb, moreB := strings.Cut(b, "/")
		if c := strings.Compare(ca, cb); c != 0 {
			return c
		}
		switch {
		case !moreA && !moreB:
			return 0
		case !moreA:
			return -1
		case !moreB:
			return 1
		}
		a, b = ra, rb
	}
}

// writeLayer writes the entries as a tar, in the tree's order. Whiteouts
// and opaque markers are empty regular files dated at.
func (c *changes) writeLayer(w io.Writer, entries []entry, at time.Time) error {
	slices.SortStableFunc(entries, func(a, b entry) int { return compareTree(treeKey(a), treeKey(b)) })
	tw := tar.NewWriter(w)
	for _, e := range entries {
		var h *tar.Header
		switch e.kind {
		case 'w':
			h = &tar.Header{Name: "./" + joinTree(parentOf(e.path), ".wh."+baseOf(e.path)), Typeflag: tar.TypeReg, Mode: 0o644, ModTime: at, Format: tar.FormatPAX}
		case 'o':
			h = &tar.Header{Name: "./" + joinTree(e.path, ".wh..wh..opq"), Typeflag: tar.TypeReg, Mode: 0o644, ModTime: at, Format: tar.FormatPAX}
		default:
			h = e.header()
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("write %s: %w", h.Name, err)
		}
		if e.content != nil && h.Size > 0 {
			if _, err := io.Copy(tw, io.NewSectionReader(c.spill.f, e.content.off, e.content.ino.size)); err != nil {
				return fmt.Errorf("write %s: %w", h.Name, err)
			}
		}
	}
	return tw.Close()
}

// header is the tar header of an entry of the tree.
func (e entry) header() *tar.Header {
	ino := e.rec.ino
	name := "./" + e.path
	if e.path == "" {
		name = "./"
	}
	h := &tar.Header{Name: name, Mode: ino.mode, Uid: ino.uid, Gid: ino.gid, ModTime: time.Unix(ino.mtime, 0), Format: tar.FormatPAX,
		PAXRecords: ino.xattrRecords(), Typeflag: ino.typ, Devmajor: ino.major, Devminor: ino.minor}
	switch {
	case ino.typ == tar.TypeDir:
		if e.path != "" {
			h.Name += "/"
		}
	case e.linkTo != "":
		h.Typeflag, h.Linkname, h.PAXRecords = tar.TypeLink, "./"+e.linkTo, nil
	case ino.typ == tar.TypeSymlink:
		h.Linkname = ino.link
	case ino.typ == tar.TypeReg:
		h.Size = ino.size
	}
	return h
}
