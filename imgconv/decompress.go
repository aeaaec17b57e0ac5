package imgconv

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/pve-image/pve-image/internal/ctxio"
)

// layerMediaTypes are the layer types whose content is a tar stream, plain
// or compressed. Foreign (Windows) layers and anything else are refused.
var layerMediaTypes = map[types.MediaType]bool{
	types.OCILayer:                       true,
	types.OCILayerZStd:                   true,
	types.OCIUncompressedLayer:           true,
	types.OCIRestrictedLayer:             true,
	types.OCIUncompressedRestrictedLayer: true,
	"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": true,
	types.DockerLayer:             true,
	types.DockerUncompressedLayer: true,
	// Docker's pre-OCI archives and some registries leave the type empty.
	"": true,
}

// SupportedMediaType reports whether a layer of media type mt can be flattened.
func SupportedMediaType(mt types.MediaType) bool { return layerMediaTypes[mt] }

var (
	gzipMagic  = []byte{0x1f, 0x8b}
	zstdMagic  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	xzMagic    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	bzip2Magic = []byte("BZh")
)

// decompressor wraps a layer blob in the right decoder. The format is taken
// from the first bytes, not from the media type: builders label zstd layers
// as gzip and leave tar layers uncompressed under compressed types often
// enough that trusting the label breaks real images.
//
// It owns the blob: finish reads what the decoder left of it to the end,
// so that a reader that verifies as it goes (a download still arriving)
// has its say, and close releases both.
type decompressor struct {
	io.Reader
	finish func(ctx context.Context) error
	// abort stops the decoding when its output is no longer wanted; the
	// blob is still read to its end by finish.
	abort func()
	close func()
	// trailing judges an error of the decoder after the tar's end: nil
	// when what follows the tar does not matter, an error when the two
	// gzip decoders agree the layer is corrupt (a bad checksum or length,
	// a truncated or broken member).
	trailing func(error) error
	// external: an external decoder (Igzip) runs; fromFile: on the blob
	// as a file.
	external, fromFile bool
}

// newDecompressor decodes blob. gunzip, if not "", is an external gzip
// decoder (Igzip) for gzip blobs of at least minGunzip compressed bytes
// (sizeHint). On error blob is closed.
func newDecompressor(blob io.ReadCloser, sizeHint int64, gunzip string, minGunzip int64) (*decompressor, error) {
	d, err := decoderFor(blob, sizeHint, gunzip, minGunzip)
	if err != nil {
		blob.Close()
	}
	return d, err
}

func decoderFor(blob io.ReadCloser, sizeHint int64, gunzip string, minGunzip int64) (*decompressor, error) {
	external := gunzip != "" && sizeHint >= minGunzip
	if f, ok := blob.(*os.File); ok && external {
		// A file goes to the decoder as it is, without a copy through
		// this process; its first bytes are read where they are.
		head := make([]byte, len(gzipMagic))
		off, err := f.Seek(0, io.SeekCurrent)
		if err == nil {
			_, err = f.ReadAt(head, off)
		}
		if err == nil && bytes.Equal(head, gzipMagic) {
			d, err := startGunzip(gunzip, f, nil)
			if err == nil {
				closeDec := d.close
				d.close = func() { closeDec(); f.Close() }
				d.fromFile = true
			}
			return d, err
		}
	}
	// klauspost's gzip reader reads byte by byte from anything that is not an
	// io.ByteReader; a large bufio.Reader lets it read straight from memory.
	bufSize := 1 << 20
	if sizeHint > 0 {
		bufSize = int(min(max(sizeHint, 16<<10), 1<<20))
	}
	br := bufio.NewReaderSize(blob, bufSize)
	head, err := br.Peek(6)
	if err != nil && err != io.EOF {
		return nil, err
	}
	// What the decoder leaves of the blob is read to its end here, in the
	// goroutine that reads the tar. After the tar's end, only the gzip
	// decoder's errors count, as igzip's do; other formats keep what they
	// always accepted there.
	inProcess := func(r io.Reader, closeDec func(), trailing func(error) error) (*decompressor, error) {
		return &decompressor{Reader: r,
			finish: func(ctx context.Context) error {
				_, err := io.CopyBuffer(io.Discard, ctxio.Reader(ctx, blob), make([]byte, 64<<10))
				return err
			},
			abort:    func() {},
			close:    func() { closeDec(); blob.Close() },
			trailing: trailing}, nil
	}
	ignore := func(error) error { return nil }
	switch {
	case bytes.HasPrefix(head, gzipMagic) && external:
		return startGunzip(gunzip, br, blob)
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		m := &gzipMembers{br: br, zr: zr}
		zr.Multistream(false)
		return inProcess(m, func() { zr.Close() }, func(err error) error { return err })
	case bytes.HasPrefix(head, zstdMagic):
		// One decoder goroutine: with two cores, the output compressor and the
		// other layers' decoders want the rest (perf.md §4.5).
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<32))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return inProcess(zr, zr.Close, ignore)
	case bytes.HasPrefix(head, xzMagic):
		// Layers are never xz; templates from pveam are.
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return inProcess(xr, func() {}, ignore)
	case bytes.HasPrefix(head, bzip2Magic) && len(head) >= 4 && head[3] >= '1' && head[3] <= '9':
		return inProcess(bzip2.NewReader(br), func() {}, ignore)
	default:
		return inProcess(br, func() {}, ignore)
	}
}

// gzipMembers reads a gzip stream of one or more members as igzip does:
// after a member, bytes that do not start with gzip's magic end the stream
// (padding builders leave), while a member that starts there must be
// whole. klauspost's own multistream mode instead fails on any bytes after
// the last member that are not a member, an error that was then ignored
// together with a bad checksum after the tar's end (the two decoders
// disagreed on such layers).
type gzipMembers struct {
	br   *bufio.Reader
	zr   *gzip.Reader
	done bool
}

func (m *gzipMembers) Read(p []byte) (int, error) {
	for !m.done {
		n, err := m.zr.Read(p)
		if err != io.EOF {
			return n, err
		}
		// The member ended, its checksum and length checked.
		if head, _ := m.br.Peek(len(gzipMagic)); !bytes.Equal(head, gzipMagic) {
			m.done = true
		} else if err := m.zr.Reset(m.br); err != nil {
			return n, fmt.Errorf("gzip: %w", err)
		} else {
			m.zr.Multistream(false)
		}
		if n > 0 {
			return n, nil
		}
	}
	return 0, io.EOF
}
