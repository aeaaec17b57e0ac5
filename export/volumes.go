package export

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/pve-image/pve-image/imgconv"
)

// writeTree writes a flattened tree through keep, which sees each member
// (its path, and its header to change) and says whether it goes in; after
// a member, extra adds what follows it.
func writeTree(ctx context.Context, rootfs *imgconv.Rootfs, w io.Writer, keep func(p string, h *tar.Header) bool,
	extra func(p string, h *tar.Header) []*tar.Header) (int, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := rootfs.WriteTar(ctx, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	n, err := copyTree(tar.NewReader(pr), tar.NewWriter(w), keep, extra)
	pr.CloseWithError(errors.New("stopped reading"))
	if werr := <-done; werr != nil && err == nil {
		err = werr
	}
	return n, err
}

func copyTree(tr *tar.Reader, tw *tar.Writer, keep func(string, *tar.Header) bool, extra func(string, *tar.Header) []*tar.Header) (int, error) {
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
		if !keep(p, h) {
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return n, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
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

// writeVolume writes a volume's tree as a layer: its mount point's
// directory, an opaque marker in it (the volume's data is all the
// directory holds: what the image had there is hidden, as the volume
// hides it in the container), and everything below.
func writeVolume(ctx context.Context, m *mount, w io.Writer, at time.Time) (int, error) {
	keep := func(p string, _ *tar.Header) bool { return p == m.path || strings.HasPrefix(p, m.path+"/") }
	extra := func(p string, h *tar.Header) []*tar.Header {
		if p != m.path || h.Typeflag != tar.TypeDir {
			return nil
		}
		return []*tar.Header{{Name: "./" + m.path + "/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: at, Format: tar.FormatPAX}}
	}
	return writeTree(ctx, m.rootfs, w, keep, extra)
}
