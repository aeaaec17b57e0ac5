package imgconv

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"
)

// WriteStats describes what was written.
type WriteStats struct {
	Entries        int   // members written
	Bytes          int64 // file content bytes written
	DevicesDropped int   // device nodes left out: an unprivileged container cannot create them
}

// TarWriter writes a Rootfs as one PAX tar: members named "./...", numeric
// ids only, parents before children, each hardlink after the name it links
// to, no device nodes. Members of a streamed layer come in that layer's
// order (Stream); everything else follows in byte order of names (Finish).
// The same Rootfs and options always give the same bytes.
type TarWriter struct {
	r       *Rootfs
	tw      *tar.Writer
	readers []*spillReader
	st      WriteStats
}

// NewTarWriter starts writing r to w.
func (r *Rootfs) NewTarWriter(w io.Writer) *TarWriter {
	return &TarWriter{r: r, tw: tar.NewWriter(w), readers: make([]*spillReader, len(r.spills))}
}

// WriteTar writes the whole tree: Stream, then Finish.
func (r *Rootfs) WriteTar(ctx context.Context, w io.Writer) (WriteStats, error) {
	t := r.NewTarWriter(w)
	if err := t.Stream(ctx); err != nil {
		return t.st, err
	}
	return t.Finish()
}

// Finish writes every member not yet written and the tar trailer.
func (t *TarWriter) Finish() (WriteStats, error) {
	r := t.r
	if r.facts {
		return t.st, errors.New("imgconv: rootfs was flattened for facts only and holds no contents")
	}
	if r.pending != nil {
		return t.st, errors.New("imgconv: Finish before Stream")
	}
	if !r.tree.root.emitted {
		if err := t.writeNode("", r.tree.root, nil, nil, nil); err != nil {
			return t.st, err
		}
	}
	err := r.tree.walk(func(p string, n *node) error {
		if n.emitted {
			return nil
		}
		return t.writeNode(p, n, nil, nil, nil)
	})
	if err != nil {
		return t.st, err
	}
	return t.st, t.tw.Close()
}

// writeNode writes the member for node n at path p. Content comes from
// content when the entry is being streamed (e, d describe it), else from a
// spill or memory.
func (t *TarWriter) writeNode(p string, n *node, e *entry, d *decodedLayer, content io.Reader) error {
	n.emitted = true
	ino := n.ino
	var ui *upperIndex
	if t.r.pending != nil {
		ui = t.r.pending.ui
	}
	attrs := ui.attrs(p, ino)
	name := "./" + p
	if p == "" {
		name = "./"
	}
	hdr := &tar.Header{
		Name:    name,
		Mode:    attrs.mode,
		Uid:     attrs.uid,
		Gid:     attrs.gid,
		ModTime: time.Unix(attrs.mtime, 0),
		Format:  tar.FormatPAX,
	}
	if len(attrs.xattrs) > 0 {
		hdr.PAXRecords = make(map[string]string, len(attrs.xattrs))
		for _, x := range attrs.xattrs {
			hdr.PAXRecords["SCHILY.xattr."+x.name] = x.value
		}
	}
	switch ino.typ {
	case tar.TypeDir:
		hdr.Typeflag = tar.TypeDir
		if p != "" {
			hdr.Name += "/"
		}
	case tar.TypeChar, tar.TypeBlock:
		t.st.DevicesDropped++
		return nil
	default:
		if ino.firstName != "" {
			hdr.Typeflag, hdr.Linkname, hdr.PAXRecords = tar.TypeLink, ino.firstName, nil
			break
		}
		ino.firstName = name
		hdr.Typeflag = ino.typ
		switch ino.typ {
		case tar.TypeSymlink:
			hdr.Linkname = ino.target
		case tar.TypeReg:
			hdr.Size = ino.size
		}
	}
	if err := t.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	t.st.Entries++
	if hdr.Typeflag != tar.TypeReg || ino.size == 0 {
		return nil
	}
	var err error
	if content != nil {
		err = t.r.f.copyContent(e, d, content, t.tw)
	} else {
		err = t.copyStored(ino)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	t.st.Bytes += ino.size
	return nil
}

// copyStored writes a file's content from memory or its spill.
func (t *TarWriter) copyStored(ino *inode) error {
	if ino.layer < 0 {
		if int64(len(ino.data)) != ino.size {
			return fmt.Errorf("content of %d bytes is not held", ino.size)
		}
		_, err := t.tw.Write(ino.data)
		return err
	}
	sp := t.r.spills[ino.layer]
	if sp.w != nil {
		// The streamed layer's spill is still being written: make what
		// it holds so far readable.
		if err := sp.w.Flush(); err != nil {
			return fmt.Errorf("spill: %w", err)
		}
	}
	sr := t.readers[ino.layer]
	if sr == nil {
		sr = &spillReader{f: sp.f, buf: make([]byte, 1<<20)}
		t.readers[ino.layer] = sr
	}
	return sr.copy(t.tw, ino.off, ino.size)
}

// spillReader serves file contents from a spill. Files come back in about the
// order they went in, so a window read ahead serves runs of small files with
// one read each instead of one per file.
type spillReader struct {
	f          *os.File
	buf        []byte
	start, end int64 // the spill range held in buf[:end-start]
}

func (s *spillReader) copy(w io.Writer, off, size int64) error {
	if off >= s.start && off+size <= s.end {
		_, err := w.Write(s.buf[off-s.start : off+size-s.start])
		return err
	}
	if size <= int64(len(s.buf))/4 {
		n, err := s.f.ReadAt(s.buf, off)
		if int64(n) < size {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("spill: %w", err)
		}
		s.start, s.end = off, off+int64(n)
		_, err = w.Write(s.buf[:size])
		return err
	}
	for size > 0 {
		n, err := s.f.ReadAt(s.buf[:min(int64(len(s.buf)), size)], off)
		if n > 0 {
			if _, werr := w.Write(s.buf[:n]); werr != nil {
				return werr
			}
			off, size = off+int64(n), size-int64(n)
			s.start, s.end = 0, 0
		}
		if err != nil && size > 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("spill: %w", err)
		}
	}
	return nil
}

// AddFile puts a file held in memory into the tree, as an upper layer would,
// replacing what is there. Its directory is found as a process in the
// container would find it: symlinks followed (/sbin may lead to /usr/sbin),
// missing directories created (0755, root). It is how converters add what an
// image lacks, such as an init.
func (r *Rootfs) AddFile(p string, mode int64, uid, gid int, mtime time.Time, data []byte) error {
	ino := &inode{typ: tar.TypeReg, mode: mode & 0o7777, uid: uid, gid: gid, mtime: mtime.Unix(), size: int64(len(data)), layer: -1, data: data}
	ino.elf = parseELF(data)
	return r.add(p, ino)
}

// AddSymlink puts a symbolic link into the tree like AddFile.
func (r *Rootfs) AddSymlink(p, target string, mtime time.Time) error {
	return r.add(p, &inode{typ: tar.TypeSymlink, mode: 0o777, mtime: mtime.Unix(), target: target, layer: -1})
}

func (r *Rootfs) add(p string, ino *inode) error {
	if r.pending != nil {
		return errors.New("imgconv: the tree is changed before its streamed layer is in (TarWriter.Stream)")
	}
	dir, base := splitPath(strings.Trim(p, "/"))
	if base == "" || base == "." || base == ".." {
		return fmt.Errorf("add %q: %w", p, ErrUnsafePath)
	}
	real, err := r.realPath(dir)
	if err != nil {
		return fmt.Errorf("add %q: %w", p, err)
	}
	// The image's symlinks may lead somewhere too long for the template.
	full := joinPath(real, base)
	if err := checkPath(full); err != nil {
		return fmt.Errorf("add %q (as %s): %w", p, quoteShort(full), err)
	}
	if ino.typ == tar.TypeSymlink {
		if err := checkTarget(ino.target); err != nil {
			return fmt.Errorf("add %q: %w", p, err)
		}
	}
	if _, err := r.tree.put(full, ino); err != nil {
		return fmt.Errorf("add %q: %w", p, err)
	}
	return nil
}

// realPath resolves the directory p as the kernel would inside the
// container, following symlinks (absolute ones from the root); components
// that do not exist are kept as they are, to be created.
func (r *Rootfs) realPath(p string) (string, error) {
	p = strings.Trim(p, "/")
	for hops := 0; hops < 40; hops++ {
		real, next, err := r.walkDir(p)
		if err != nil || next == "" {
			return real, err
		}
		p = next
	}
	return "", errors.New("too many levels of symbolic links")
}

// walkDir descends p. It returns the real path when p has no symlink on the
// way, or else the path to try next, with that symlink's target in its place.
func (r *Rootfs) walkDir(p string) (real, next string, err error) {
	n, done := r.tree.root, ""
	for rest := p; rest != ""; {
		var c string
		c, rest, _ = strings.Cut(rest, "/")
		switch c {
		case "", ".":
			continue
		case "..":
			if n.parent != nil {
				n = n.parent
				done = n.path()
			}
			continue
		}
		k := n.kids[c]
		switch {
		case k == nil:
			return strings.Trim(path.Clean("/"+joinPath(joinPath(done, c), rest)), "/"), "", nil
		case k.ino.typ == tar.TypeSymlink:
			target := k.ino.target
			if !strings.HasPrefix(target, "/") {
				target = joinPath(done, target)
			}
			return "", strings.Trim(path.Clean("/"+joinPath(target, rest)), "/"), nil
		case !k.ino.isDir():
			return "", "", fmt.Errorf("%w (%s is not a directory)", ErrNotDir, k.path())
		}
		n, done = k, joinPath(done, c)
	}
	return done, "", nil
}

// Move renames the entry at from (its directory's symlinks followed) to to,
// replacing what is at to, as rename(2) would.
func (r *Rootfs) Move(from, to string) error {
	if r.pending != nil {
		return errors.New("imgconv: the tree is changed before its streamed layer is in (TarWriter.Stream)")
	}
	fdir, fbase := splitPath(strings.Trim(from, "/"))
	real, err := r.realPath(fdir)
	if err != nil {
		return err
	}
	src := joinPath(real, fbase)
	n := r.tree.lookup(src)
	if n == nil {
		return fmt.Errorf("move %q: nothing there", from)
	}
	if n.anyEmitted() {
		return ErrRestart
	}
	tdir, tbase := splitPath(strings.Trim(to, "/"))
	treal, err := r.realPath(tdir)
	if err != nil {
		return err
	}
	// Everything moved must still fit in the template, the deepest entry
	// below a directory included.
	dst := joinPath(treal, tbase)
	err = checkPath(dst)
	if l := len(memberPrefix) + len(dst) + longestBelow(n); err == nil && l > maxMemberLen {
		err = fmt.Errorf("%w: an entry below would be %d bytes with the leading %q", ErrPathTooLong, l, memberPrefix)
	}
	if err != nil {
		return fmt.Errorf("move %q to %q (as %s): %w", from, to, quoteShort(dst), err)
	}
	parent, err := r.tree.mkdirAll(treal)
	if err != nil {
		return err
	}
	if old := parent.kids[tbase]; old != nil && old.anyEmitted() {
		return ErrRestart
	}
	delete(n.parent.kids, n.name)
	n.name, n.parent = tbase, parent
	parent.kids[tbase] = n
	return nil
}

// longestBelow is the length of the longest path below n relative to n,
// its leading "/" included; 0 when n has no children.
func longestBelow(n *node) int {
	longest := 0
	for _, k := range n.kids {
		longest = max(longest, 1+len(k.name)+longestBelow(k))
	}
	return longest
}

// Size counts what WriteTar would write: members (the root included) and
// file content bytes, each hardlinked file once. Device nodes are left out.
func (r *Rootfs) Size() (entries int, bytes int64) {
	entries = 1
	seen := map[*inode]bool{}
	r.tree.walk(func(_ string, n *node) error {
		switch n.ino.typ {
		case tar.TypeChar, tar.TypeBlock:
			return nil
		case tar.TypeReg:
			if !seen[n.ino] {
				seen[n.ino] = true
				bytes += n.ino.size
			}
		}
		entries++
		return nil
	})
	return entries, bytes
}
