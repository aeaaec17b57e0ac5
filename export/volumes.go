package export

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"time"

	"github.com/pve-image/pve-image/imgconv"
)

// writeTree writes a flattened tree through keep, which sees each member
// (its path, and its header to change) and says whether it goes in; after
// a member, extra adds what follows it. Files left out whose other names
// go in keep their content there (tempDir holds it meanwhile).
func writeTree(ctx context.Context, rootfs *imgconv.Rootfs, w io.Writer, tempDir string, keep func(p string, h *tar.Header) bool,
	extra func(p string, h *tar.Header) []*tar.Header) (int, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := rootfs.WriteTar(ctx, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	f := &leftOut{tempDir: tempDir, gone: map[string]*goneFile{}, moved: map[string]string{}}
	defer f.close()
	n, err := f.copyTree(tar.NewReader(pr), tar.NewWriter(w), keep, extra)
	pr.CloseWithError(errors.New("stopped reading"))
	if werr := <-done; werr != nil && err == nil {
		err = werr
	}
	return n, err
}

// leftOut remembers the members copyTree left out, so that a hardlink to
// one that goes in still gets its file: the first such name becomes the
// file, and later links link to it. (A tree imgconv writes has each file's
// content at its first name only.)
type leftOut struct {
	tempDir string
	spill   *os.File // contents of regular files left out; made when needed
	off     int64
	gone    map[string]*goneFile
	// moved maps a name left out to the name its file went in under.
	moved map[string]string
}

type goneFile struct {
	h   *tar.Header
	off int64
}

func (f *leftOut) close() {
	if f.spill != nil {
		f.spill.Close()
	}
}

// drop remembers a member left out, with its content.
func (f *leftOut) drop(p string, h *tar.Header, r io.Reader) error {
	switch h.Typeflag {
	case tar.TypeDir, tar.TypeLink:
		return nil
	}
	g := &goneFile{h: h, off: f.off}
	if h.Typeflag == tar.TypeReg && h.Size > 0 {
		if f.spill == nil {
			var err error
			if f.spill, err = tempFile(f.tempDir); err != nil {
				return err
			}
		}
		n, err := io.Copy(io.NewOffsetWriter(f.spill, f.off), r)
		if err != nil {
			return err
		}
		if n != h.Size {
			return fmt.Errorf("member %s: content is %d bytes, header says %d", quote(h.Name), n, h.Size)
		}
		f.off += n
	}
	f.gone[p] = g
	return nil
}

func (f *leftOut) copyTree(tr *tar.Reader, tw *tar.Writer, keep func(string, *tar.Header) bool, extra func(string, *tar.Header) []*tar.Header) (int, error) {
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, tw.Close()
		}
		if err != nil {
			return n, err
		}
		p := treePath(h.Name)
		var body io.Reader = tr
		if h.Typeflag == tar.TypeLink {
			target := treePath(h.Linkname)
			if to, ok := f.moved[target]; ok {
				h.Linkname = "./" + to
			} else if g := f.gone[target]; g != nil && keep(p, h) {
				// The first name that goes in of a file left out.
				nh := *g.h
				nh.Name, nh.PAXRecords = h.Name, maps.Clone(g.h.PAXRecords)
				h = &nh
				body = io.NewSectionReader(f.spill, g.off, max(h.Size, 0))
				if h.Typeflag != tar.TypeReg || h.Size == 0 {
					body = strings.NewReader("")
				}
				f.moved[target] = p
			}
		}
		if !keep(p, h) {
			if err := f.drop(p, h, tr); err != nil {
				return n, err
			}
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return n, err
		}
		if _, err := io.Copy(tw, body); err != nil {
			return n, err
		}
		n++
		for _, x := range extra(p, h) {
			if err := tw.WriteHeader(x); err != nil {
				return n, err
			}
			n++
		}
	}
}

// writeRootfs writes the whole root file system as one layer, but for
// what a layer of changes leaves out too (exclude.go): what vzdump leaves
// out, what is rewritten at every start, pve-image's stale image.json.
func writeRootfs(ctx context.Context, rootfs *imgconv.Rootfs, w io.Writer, mounts []string, tempDir string) (int, error) {
	keep := func(p string, _ *tar.Header) bool { return !excluded(p, mounts) }
	return writeTree(ctx, rootfs, w, tempDir, keep, func(string, *tar.Header) []*tar.Header { return nil })
}

// writeVolume writes a volume's tree as a layer: its mount point's
// directory, an opaque marker in it (the volume's data is all the
// directory holds: what the image had there is hidden, as the volume
// hides it in the container), and everything below.
func writeVolume(ctx context.Context, m *mount, w io.Writer, at time.Time, tempDir string) (int, error) {
	keep := func(p string, _ *tar.Header) bool { return p == m.path || strings.HasPrefix(p, m.path+"/") }
	extra := func(p string, h *tar.Header) []*tar.Header {
		if p != m.path || h.Typeflag != tar.TypeDir {
			return nil
		}
		return []*tar.Header{{Name: "./" + m.path + "/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: at, Format: tar.FormatPAX}}
	}
	return writeTree(ctx, m.rootfs, w, tempDir, keep, extra)
}
