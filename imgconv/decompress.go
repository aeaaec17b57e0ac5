package imgconv

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
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
type decompressor struct {
	io.Reader
	close func()
}

func newDecompressor(blob io.Reader, sizeHint int64) (*decompressor, error) {
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
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return &decompressor{Reader: zr, close: func() { zr.Close() }}, nil
	case bytes.HasPrefix(head, zstdMagic):
		// One decoder goroutine: with two cores, the output compressor and the
		// other layers' decoders want the rest (perf.md §4.5).
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<32))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return &decompressor{Reader: zr, close: zr.Close}, nil
	case bytes.HasPrefix(head, xzMagic):
		// Layers are never xz; templates from pveam are.
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return &decompressor{Reader: xr, close: func() {}}, nil
	case bytes.HasPrefix(head, bzip2Magic) && len(head) >= 4 && head[3] >= '1' && head[3] <= '9':
		return &decompressor{Reader: bzip2.NewReader(br), close: func() {}}, nil
	default:
		return &decompressor{Reader: br, close: func() {}}, nil
	}
}
