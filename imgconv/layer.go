package imgconv

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Layer is what the flattener needs of an image layer; v1.Layer has it.
type Layer interface {
	Digest() (v1.Hash, error)
	MediaType() (types.MediaType, error)
	// Compressed returns the blob as stored. Readers from
	// go-containerregistry verify the digest when read to the end.
	Compressed() (io.ReadCloser, error)
}

type entryKind uint8

const (
	entryPut      entryKind = iota // a file, directory, symlink, device or fifo
	entryLink                      // a hardlink to an earlier name
	entryWhiteout                  // .wh.<name>: hide name in lower layers
	entryOpaque                    // .wh..wh..opq: hide the directory's lower children
	entryPlnk                      // AUFS hardlink store member (.wh..wh.plnk/...)
)

type entry struct {
	kind entryKind
	path string // cleaned; for whiteouts the hidden path, for opaques the directory
	link string // hardlink target, cleaned
	ino  *inode
	raw  string // name as it appeared in the layer, for error messages
}

// decodedLayer is one layer read to the end: its entries in tar order, with
// file contents moved to a spill file.
type decodedLayer struct {
	index   int
	digest  string
	entries []entry
	spill   *spill
	dropped map[string]int // xattr names dropped, with counts
}

// budget enforces the size-bomb limits over all layers of one image. Both
// the decompressed stream and the file sizes it declares count: a sparse
// entry declares far more than its stream holds.
type budget struct {
	maxBytes, maxEntries int64
	bytes, content       atomic.Int64
	entries              atomic.Int64
}

type countingReader struct {
	r io.Reader
	b *budget
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.b.maxBytes > 0 && c.b.bytes.Add(int64(n)) > c.b.maxBytes {
		return n, fmt.Errorf("%w of %d bytes", ErrTooLarge, c.b.maxBytes)
	}
	return n, err
}

// spill holds the contents of one layer's regular files, uncompressed, so the
// tree can be written in sorted order after all layers are known without
// decompressing anything twice.
type spill struct {
	f   *os.File
	w   *bufio.Writer // created by the first Write; nil again once flushed for good
	off int64
}

// flush writes out what is buffered; the spill takes no more writes.
func (s *spill) flush() error {
	if s.w == nil {
		return nil
	}
	err := s.w.Flush()
	s.w = nil
	if err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	return nil
}

// Write appends to the spill.
func (s *spill) Write(p []byte) (int, error) {
	if s.w == nil {
		s.w = bufio.NewWriterSize(s.f, 1<<20)
	}
	n, err := s.w.Write(p)
	s.off += int64(n)
	if err != nil {
		return n, fmt.Errorf("spill: %w", err)
	}
	return n, nil
}

func newSpill(dir string) (*spill, error) {
	f, err := os.CreateTemp(dir, "pve-image-spill-*")
	if err != nil {
		return nil, err
	}
	// Unlinked at once: the data lives only as long as the descriptor, so a
	// crash leaves nothing behind.
	os.Remove(f.Name())
	return &spill{f: f}, nil
}

func (s *spill) close() {
	if s != nil && s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// decodeLayer reads layer idx to the end into entries, with file contents
// moved to a spill unless the flattener only gathers facts.
func (f *flattener) decodeLayer(ctx context.Context, idx int, l Layer) (*decodedLayer, error) {
	d := &decodedLayer{index: idx}
	if !f.opts.FactsOnly {
		var err error
		if d.spill, err = newSpill(f.opts.TempDir); err != nil {
			return nil, &Error{Image: f.opts.Image, Err: err}
		}
	}
	err := f.readLayer(ctx, idx, l, d, func(e *entry, content io.Reader) error {
		if content != nil {
			if err := f.copyContent(e, d, content, nil); err != nil {
				return err
			}
		}
		d.entries = append(d.entries, *e)
		return nil
	})
	if err == nil && d.spill != nil {
		if err = d.spill.flush(); err != nil {
			err = &Error{Image: f.opts.Image, Layer: d.digest, Err: err}
		}
	}
	if err != nil {
		d.spill.close()
		return nil, err
	}
	return d, nil
}

// readLayer decodes layer idx and calls fn with each entry in tar order. For
// regular files with content, fn gets a reader of it and must read it all.
// Errors come back wrapped in *Error with the image, layer and member path.
func (f *flattener) readLayer(ctx context.Context, idx int, l Layer, d *decodedLayer, fn func(e *entry, content io.Reader) error) error {
	h, err := l.Digest()
	if err != nil {
		return &Error{Image: f.opts.Image, Err: fmt.Errorf("layer %d digest: %w", idx, err)}
	}
	d.digest = h.String()
	fail := func(p string, err error) error {
		if cerr := ctx.Err(); cerr != nil && errors.Is(err, errGunzipKilled) {
			return cerr // stopped for ctx's sake
		}
		var ie *Error
		if errors.As(err, &ie) {
			return err
		}
		return &Error{Image: f.opts.Image, Layer: d.digest, Path: p, Err: err}
	}
	mt, err := l.MediaType()
	if err != nil {
		return fail("", err)
	}
	if !SupportedMediaType(mt) {
		return fail("", fmt.Errorf("%w %q", ErrMediaType, mt))
	}
	blob, err := l.Compressed()
	if err != nil {
		return fail("", err)
	}
	var hint int64
	if s, ok := l.(interface{ Size() (int64, error) }); ok {
		hint, _ = s.Size()
	}
	dec, err := newDecompressor(blob, hint, f.opts.Gunzip, f.minGunzip)
	if errors.Is(err, ErrExternalGunzip) {
		return fail("", err) // the decoder did not start: not the layer's fault
	}
	if err != nil {
		return fail("", fmt.Errorf("%w: %v", ErrCorrupt, err))
	}
	defer dec.close()
	if dec.external {
		if f.opts.gunzipped != nil {
			f.opts.gunzipped(dec.fromFile)
		}
		// igzip may wait on its input (a download that stalls) or its
		// output (nobody reading) where no check of ctx is reached.
		defer context.AfterFunc(ctx, dec.abort)()
	}

	tr := tar.NewReader(&countingReader{r: dec, b: &f.budget})
	last := ""
	for n := 0; ; n++ {
		if n&255 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(last, corrupt(err))
		}
		last = hdr.Name
		if f.budget.maxEntries > 0 && f.budget.entries.Add(1) > f.budget.maxEntries {
			return fail(hdr.Name, fmt.Errorf("%w of %d", ErrTooManyEntries, f.budget.maxEntries))
		}
		e, err := f.entryFor(hdr, d)
		if err != nil {
			return fail(hdr.Name, err)
		}
		if e == nil {
			continue
		}
		var content io.Reader
		if e.ino != nil && e.ino.typ == tar.TypeReg && e.ino.size > 0 {
			if f.budget.maxBytes > 0 && f.budget.content.Add(e.ino.size) > f.budget.maxBytes {
				return fail(hdr.Name, fmt.Errorf("%w of %d bytes", ErrTooLarge, f.budget.maxBytes))
			}
			content = tr
		}
		if err := fn(e, content); err != nil {
			return fail(hdr.Name, err)
		}
	}
	// Read past the tar trailer to the end of the blob so that the verifying
	// reader underneath sees EOF and checks the digest. What the decompressor
	// makes of bytes after the trailer is discarded (builders do leave
	// padding there), but it still counts against the size limit, and a
	// gzip layer whose checksum fails there is corrupt, whichever decoder
	// reads it. An error stops the decoder at once, then the blob is read
	// to its end all the same: its verdict comes first.
	_, rerr := io.CopyBuffer(io.Discard, &countingReader{r: dec, b: &f.budget}, make([]byte, 64<<10))
	if rerr != nil {
		dec.abort()
	}
	if err := dec.finish(ctx); err != nil {
		return fail("", err)
	}
	if rerr != nil {
		if errors.Is(rerr, ErrTooLarge) {
			return fail("", rerr)
		}
		if err := dec.trailing(rerr); err != nil {
			return fail("", corrupt(err))
		}
	}
	return nil
}

// corrupt marks decoding failures as ErrCorrupt unless they are already one
// of ours (a limit, a digest check from the blob reader).
func corrupt(err error) error {
	if errors.Is(err, ErrTooLarge) || errors.Is(err, errGunzipKilled) {
		return err
	}
	if errors.Is(err, ErrExternalGunzip) {
		// Both: the image may be at fault, or the decoder (a caller can
		// decode the stored blob again without it to tell).
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrHeader) || errors.Is(err, tar.ErrInsecurePath) ||
		strings.Contains(err.Error(), "gzip") || strings.Contains(err.Error(), "zstd") || strings.Contains(err.Error(), "flate") {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return err
}

// copyContent reads a regular file's data to the end and writes it to dst,
// or to the layer's spill when dst is nil (recording where). On the way it
// keeps what the facts need: the ELF header of executables and whole small
// files named in capturePaths.
func (f *flattener) copyContent(e *entry, d *decodedLayer, src io.Reader, dst io.Writer) error {
	ino := e.ino
	want := capturePaths[e.path] && ino.size <= maxCapture
	if dst == nil && d.spill != nil {
		ino.layer, ino.off = int32(d.index), d.spill.off
		dst = d.spill
	}
	buf := f.bufs.Get().(*[]byte)
	defer f.bufs.Put(buf)
	var copied int64
	first := true
	for copied < ino.size {
		n, err := src.Read(*buf)
		if n > 0 {
			chunk := (*buf)[:n]
			if first {
				ino.elf = parseELF(chunk)
				first = false
			}
			if want {
				ino.data = append(ino.data, chunk...)
			}
			if dst != nil {
				if _, werr := dst.Write(chunk); werr != nil {
					return werr
				}
			}
			copied += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return corrupt(err)
		}
	}
	if copied != ino.size {
		return fmt.Errorf("%w: content is %d bytes, header says %d", ErrCorrupt, copied, ino.size)
	}
	return nil
}

// entryFor turns a tar header into an entry, or nil for headers that carry
// nothing for the rootfs (PAX globals, volume labels).
func (f *flattener) entryFor(hdr *tar.Header, d *decodedLayer) (*entry, error) {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, 'V':
		return nil, nil
	}
	p, err := cleanName(hdr.Name)
	if err != nil {
		return nil, err
	}
	e := &entry{path: p, raw: hdr.Name}
	dir, base := splitPath(p)

	// Whiteouts are recognised by name whatever their type flag: AUFS-era
	// layers store some as hardlinks (perf.md §2.6).
	if reservedDir(dir) {
		if strings.HasPrefix(p, aufsMetaPrefix) || strings.Contains(p, "/"+aufsMetaPrefix) {
			return f.aufsEntry(hdr, e)
		}
		return nil, fmt.Errorf("%w: a directory name starts with %q, which the layer format reserves", ErrBadWhiteout, whiteoutPrefix)
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		switch {
		case base == opaqueMarker:
			e.kind, e.path = entryOpaque, dir
			return e, nil
		case strings.HasPrefix(base, aufsMetaPrefix):
			return f.aufsEntry(hdr, e)
		}
		name := base[len(whiteoutPrefix):]
		if name == "" || name == "." || name == ".." {
			return nil, fmt.Errorf("%w: %q names no file", ErrBadWhiteout, base)
		}
		e.kind, e.path = entryWhiteout, joinPath(dir, name)
		return e, nil
	}

	// What the template will create must be something Linux can create;
	// whiteouts and AUFS bookkeeping above create nothing.
	if err := checkPath(p); err != nil {
		return nil, err
	}
	if hdr.Typeflag == tar.TypeLink {
		t, err := cleanName(hdr.Linkname)
		if err != nil || t == "" {
			return nil, fmt.Errorf("hardlink to %s: %w", quoteShort(hdr.Linkname), ErrUnsafePath)
		}
		if err := checkPath(t); err != nil {
			return nil, fmt.Errorf("hardlink target %s: %w", quoteShort(hdr.Linkname), err)
		}
		e.kind, e.link = entryLink, t
		return e, nil
	}
	ino, err := f.inodeFor(hdr, d)
	if err != nil {
		return nil, err
	}
	e.kind, e.ino = entryPut, ino
	return e, nil
}

// reservedDir reports whether a component of the cleaned directory path dir
// starts with the whiteout prefix.
func reservedDir(dir string) bool {
	for rest := dir; rest != ""; {
		var c string
		c, rest, _ = strings.Cut(rest, "/")
		if strings.HasPrefix(c, whiteoutPrefix) {
			return true
		}
	}
	return false
}

// aufsEntry keeps regular files of AUFS's hardlink store so that links into it
// resolve; other AUFS bookkeeping is dropped.
func (f *flattener) aufsEntry(hdr *tar.Header, e *entry) (*entry, error) {
	if !strings.Contains(e.path, aufsMetaPrefix+"plnk/") || hdr.Typeflag != tar.TypeReg {
		return nil, nil
	}
	ino, err := f.inodeFor(hdr, nil)
	if err != nil {
		return nil, err
	}
	e.kind, e.ino = entryPlnk, ino
	return e, nil
}

func (f *flattener) inodeFor(hdr *tar.Header, d *decodedLayer) (*inode, error) {
	ino := &inode{
		mode:     hdr.Mode & 0o7777,
		uid:      hdr.Uid,
		gid:      hdr.Gid,
		mtime:    hdr.ModTime.Unix(),
		layer:    -1,
		devMajor: hdr.Devmajor,
		devMinor: hdr.Devminor,
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		ino.typ, ino.size = tar.TypeReg, hdr.Size
	case tar.TypeDir:
		ino.typ = tar.TypeDir
	case tar.TypeSymlink:
		ino.typ, ino.target = tar.TypeSymlink, hdr.Linkname
		if hdr.Linkname == "" {
			return nil, fmt.Errorf("%w: symlink with an empty target", ErrCorrupt)
		}
		if err := checkTarget(hdr.Linkname); err != nil {
			return nil, err
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		ino.typ = hdr.Typeflag
	default:
		return nil, fmt.Errorf("%w: unsupported tar entry type %q", ErrCorrupt, hdr.Typeflag)
	}
	for _, id := range []*int{&ino.uid, &ino.gid} {
		if *id < 0 || *id >= 65536 {
			if !f.opts.SquashHighIDs {
				return nil, fmt.Errorf("uid %d, gid %d: %w", hdr.Uid, hdr.Gid, ErrHighID)
			}
			*id = 65534
		}
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if keepXattr(name) {
			ino.xattrs = append(ino.xattrs, xattr{name, v})
		} else if d != nil {
			if d.dropped == nil {
				d.dropped = map[string]int{}
			}
			d.dropped[name]++
		}
	}
	slices.SortFunc(ino.xattrs, func(a, b xattr) int { return strings.Compare(a.name, b.name) })
	return ino, nil
}

// keepXattr says which extended attributes go into the template: those
// Proxmox's tar restores (--xattrs-include=user.* and security.capability).
func keepXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || name == "security.capability"
}
