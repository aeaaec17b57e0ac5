package registry

import (
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/internal/bytesize"
)

// MaxManifestSize bounds manifests, indexes and image configs, which are
// held in memory: containerd's limit, and Docker Hub's for manifests.
const MaxManifestSize = 4 << 20

// SizeError is a blob whose content is not the size its descriptor
// declares: more (a hostile or broken server filling the disk) or less.
type SizeError struct {
	Declared int64
	// Got is how many bytes were read (Declared+1 when there was more), or
	// the Content-Length the server announced when Announced.
	Got       int64
	Announced bool
}

func (e *SizeError) Error() string {
	switch {
	case e.Announced:
		return fmt.Sprintf("the server announces %d bytes (%s) for content the manifest declares as %d bytes; refused", e.Got, bytesize.Format(e.Got), e.Declared)
	case e.Got > e.Declared:
		return fmt.Sprintf("more data than the %d bytes the manifest declares; refused", e.Declared)
	}
	return fmt.Sprintf("content ended after %d of the %d bytes the manifest declares", e.Got, e.Declared)
}

// checkDeclared refuses descriptors whose size cannot be right, before
// anything is fetched: negative sizes, and configs and manifests over
// MaxManifestSize. what is "config", "manifest" or "layer"; the caller
// names the blob.
func checkDeclared(d v1.Descriptor, what string) error {
	if d.Size < 0 {
		return fmt.Errorf("declared with a negative size (%d)", d.Size)
	}
	if (what == "config" || what == "manifest") && d.Size > MaxManifestSize {
		return fmt.Errorf("declared as %d bytes (%s); %ss are limited to %s", d.Size, bytesize.Format(d.Size), what, bytesize.Format(MaxManifestSize))
	}
	return nil
}

// sizedReader reads exactly size bytes from r: it never asks r for more,
// and after size bytes it looks for one more byte to refuse content that
// is longer than declared.
type sizedReader struct {
	r    io.Reader
	size int64
	off  int64
}

func (s *sizedReader) Read(p []byte) (int, error) {
	if s.off >= s.size {
		var one [1]byte
		if n, _ := io.ReadFull(s.r, one[:]); n > 0 {
			return 0, &SizeError{Declared: s.size, Got: s.size + 1}
		}
		// Everything declared is here: a read error past it leaves the
		// digest to decide.
		return 0, io.EOF
	}
	if rest := s.size - s.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := s.r.Read(p)
	s.off += int64(n)
	if errors.Is(err, io.EOF) && s.off < s.size {
		err = &SizeError{Declared: s.size, Got: s.off}
	}
	if errors.Is(err, io.EOF) {
		err = nil // EOF is reported once the extra byte is known absent
	}
	return n, err
}

func (s *sizedReader) Close() error {
	if c, ok := s.r.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
