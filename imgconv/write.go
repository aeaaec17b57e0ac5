package imgconv

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// WriteStats describes what WriteTar left out or wrote.
type WriteStats struct {
	Entries        int   // members written
	Bytes          int64 // file content bytes written
	DevicesDropped int   // device nodes left out: an unprivileged container cannot create them
}

// WriteTar writes the root filesystem as one PAX tar: members named "./...",
// numeric ids only, parents before children, siblings in byte order, each
// hardlink after the name it links to, no device nodes. The same Rootfs always
// gives the same bytes.
func (r *Rootfs) WriteTar(w io.Writer) (WriteStats, error) {
	var st WriteStats
	if r.facts {
		return st, errors.New("imgconv: rootfs was flattened for facts only and holds no contents")
	}
	tw := tar.NewWriter(w)
	readers := make([]*spillReader, len(r.spills))
	first := map[*inode]string{} // first name written for each non-directory inode
	buf := make([]byte, 256<<10)

	writeOne := func(name string, ino *inode) error {
		hdr := &tar.Header{
			Name:    name,
			Mode:    ino.mode,
			Uid:     ino.uid,
			Gid:     ino.gid,
			ModTime: time.Unix(ino.mtime, 0),
			Format:  tar.FormatPAX,
		}
		if len(ino.xattrs) > 0 {
			hdr.PAXRecords = make(map[string]string, len(ino.xattrs))
			for _, x := range ino.xattrs {
				hdr.PAXRecords["SCHILY.xattr."+x.name] = x.value
			}
		}
		switch ino.typ {
		case tar.TypeDir:
			hdr.Typeflag = tar.TypeDir
			if name != "./" {
				hdr.Name += "/"
			}
		case tar.TypeChar, tar.TypeBlock:
			st.DevicesDropped++
			return nil
		default:
			if prev, ok := first[ino]; ok {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, prev
				hdr.PAXRecords = nil
				break
			}
			first[ino] = name
			hdr.Typeflag = ino.typ
			switch ino.typ {
			case tar.TypeSymlink:
				hdr.Linkname = ino.target
			case tar.TypeReg:
				hdr.Size = ino.size
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		st.Entries++
		if hdr.Typeflag != tar.TypeReg || ino.size == 0 {
			return nil
		}
		if err := r.copyContent(tw, ino, readers, buf); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		st.Bytes += ino.size
		return nil
	}

	if err := writeOne("./", r.tree.root.ino); err != nil {
		return st, err
	}
	if err := r.tree.walk(func(p string, n *node) error { return writeOne("./"+p, n.ino) }); err != nil {
		return st, err
	}
	return st, tw.Close()
}

func (r *Rootfs) copyContent(w io.Writer, ino *inode, readers []*spillReader, buf []byte) error {
	if ino.layer < 0 {
		if int64(len(ino.data)) != ino.size {
			return fmt.Errorf("content of %d bytes is not held", ino.size)
		}
		_, err := w.Write(ino.data)
		return err
	}
	sr := readers[ino.layer]
	if sr == nil {
		sr = &spillReader{f: r.spills[ino.layer].f, buf: make([]byte, 1<<20)}
		readers[ino.layer] = sr
	}
	return sr.copy(w, ino.off, ino.size, buf)
}

// spillReader serves file contents from a spill. Files come back in about the
// order they went in, so a window read ahead serves runs of small files with
// one read each instead of one per file.
type spillReader struct {
	f          *os.File
	buf        []byte
	start, end int64 // the spill range held in buf[:end-start]
}

func (s *spillReader) copy(w io.Writer, off, size int64, big []byte) error {
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
	_, err := io.CopyBuffer(w, io.NewSectionReader(s.f, off, size), big)
	return err
}

// AddFile puts a file held in memory into the tree, as an upper layer would,
// creating missing parent directories (mode 0755, owned by root). It is how
// converters add what an image lacks, such as an init.
func (r *Rootfs) AddFile(p string, mode int64, uid, gid int, mtime time.Time, data []byte) error {
	clean, err := cleanName(p)
	if err != nil || clean == "" {
		return fmt.Errorf("add %q: %w", p, ErrUnsafePath)
	}
	ino := &inode{typ: tar.TypeReg, mode: mode & 0o7777, uid: uid, gid: gid, mtime: mtime.Unix(), size: int64(len(data)), layer: -1, data: data}
	ino.elf = parseELF(data)
	if err := r.tree.put(clean, ino); err != nil {
		return fmt.Errorf("add %q: %w", p, err)
	}
	return nil
}

// AddSymlink puts a symbolic link into the tree, replacing what is there.
func (r *Rootfs) AddSymlink(p, target string, mtime time.Time) error {
	clean, err := cleanName(p)
	if err != nil || clean == "" {
		return fmt.Errorf("add %q: %w", p, ErrUnsafePath)
	}
	if err := r.tree.put(clean, &inode{typ: tar.TypeSymlink, mode: 0o777, mtime: mtime.Unix(), target: target, layer: -1}); err != nil {
		return fmt.Errorf("add %q: %w", p, err)
	}
	return nil
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
