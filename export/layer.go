package export

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// gzipLevel is the layers' compression. gzip, not zstd: every registry,
// runtime and Proxmox's own OCI import reads it. One stream with a fixed
// level and no name or time in its header: the same tar gives the same
// bytes (within one version of klauspost/compress).
const gzipLevel = gzip.DefaultCompression

// fileLayer is a layer this package wrote into a spill file.
type fileLayer struct {
	f            *os.File
	size         int64
	digest, diff v1.Hash
	mt           types.MediaType
}

// writeLayer writes the tar fn produces, gzipped, into a new spill file,
// hashing both forms on the way.
func writeLayer(tempDir string, mt types.MediaType, fn func(w io.Writer) error) (*fileLayer, error) {
	f, err := tempFile(tempDir)
	if err != nil {
		return nil, err
	}
	ch, uh := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, ch)}
	zw, err := gzip.NewWriterLevel(cw, gzipLevel)
	if err != nil {
		f.Close()
		return nil, err
	}
	err = fn(io.MultiWriter(zw, uh))
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileLayer{f: f, size: cw.n, mt: mt,
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(ch.Sum(nil))},
		diff:   v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(uh.Sum(nil))}}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diff, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(l.f, 0, l.size)), nil
}
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	zr, err := gzip.NewReader(io.NewSectionReader(l.f, 0, l.size))
	if err != nil {
		return nil, err
	}
	return zr, nil
}

// Close releases the spill.
func (l *fileLayer) Close() error { return l.f.Close() }
