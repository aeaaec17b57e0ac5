package imgconv

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/tests/testenv"
)

func needIgzip(t *testing.T) string {
	t.Helper()
	p := LookIgzip()
	if p == "" {
		testenv.Missing(t, "igzip not installed (Debian package isal)")
	}
	return p
}

// fileLayer is a layer whose blob is a file, as layers from the cache are:
// the external decoder reads it itself.
type fileLayer struct {
	path string
	dig  v1.Hash
	size int64
}

func newFileLayer(t *testing.T, blob []byte) *fileLayer {
	m := newMemLayer(blob, types.OCILayer)
	p := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	return &fileLayer{path: p, dig: m.dig, size: int64(len(blob))}
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.dig, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }

// noisy is n bytes that compress a little, so that the decoded stream
// outgrows the pipe to the decoder many times over.
func noisy(n int) string {
	r := rand.New(rand.NewSource(int64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefghijklmnop"[r.Intn(16)]
	}
	return string(b)
}

// TestExternalGunzipSameBytes: templates do not depend on which decoder
// inflates the layers, for blobs read as files (handed to igzip as they
// are) and as streams (copied in), for any layer streamed.
func TestExternalGunzipSameBytes(t *testing.T) {
	igzip := needIgzip(t)
	big := noisy(3 << 20)
	multi := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name  string
		blobs [][]byte
	}{{
		name: "layer rules",
		blobs: [][]byte{
			gz(t, tarOf(t, dir("d/"), file("d/x", "1"), file("a", "A"), hardlink("b", "a"), file("big", big), symlink("s", "a"))),
			gz(t, tarOf(t, whiteout("d/.wh..wh..opq"), file("d/y", "2"), whiteout(".wh.a"), file("c", noisy(100000)))),
		},
	}, {
		// gzip allows members one after another; a layer may be one.
		name:  "multi-member gzip",
		blobs: [][]byte{multi(gzipPart(t, tarOf(t, file("m", big))[:1<<20]), gzipPart(t, tarOf(t, file("m", big))[1<<20:]))},
	}, {
		name:  "padding after the gzip stream",
		blobs: [][]byte{append(gz(t, tarOf(t, file("p", big))), make([]byte, 10000)...)},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := map[string][]byte{} // by layer streamed
			for _, mode := range []string{"builtin", "igzip file", "igzip stream"} {
				for stream := -1; stream <= len(tc.blobs); stream++ {
					if stream == 0 {
						continue
					}
					var layers []Layer
					for _, b := range tc.blobs {
						if mode == "igzip file" {
							layers = append(layers, newFileLayer(t, b))
						} else {
							layers = append(layers, newMemLayer(b, types.OCILayer))
						}
					}
					opts := Options{Stream: stream}
					if mode != "builtin" {
						opts.Gunzip, opts.gunzipFrom = igzip, 1
					}
					r, err := flatten(t, opts, layers...)
					if err != nil {
						t.Fatalf("%s, stream %d: %v", mode, stream, err)
					}
					var buf bytes.Buffer
					_, err = r.WriteTar(context.Background(), &buf)
					r.Close()
					if errors.Is(err, ErrRestart) {
						continue // written again without streaming, below
					}
					if err != nil {
						t.Fatalf("%s, stream %d: %v", mode, stream, err)
					}
					key := fmt.Sprint(stream)
					if mode == "builtin" {
						want[key] = buf.Bytes()
						checkInvariants(t, readMembers(t, buf.Bytes()))
						continue
					}
					if !bytes.Equal(buf.Bytes(), want[key]) {
						t.Errorf("%s, stream %d: the template differs from the built-in decoder's", mode, stream)
					}
				}
			}
		})
	}
}

func gzipPart(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// TestExternalGunzipBadInput: a truncated or corrupt layer is as corrupt
// through igzip as through the built-in decoder, named with its layer.
func TestExternalGunzipBadInput(t *testing.T) {
	igzip := needIgzip(t)
	good := gz(t, tarOf(t, file("a", noisy(2<<20)), file("b", "b")))
	// Flipped where it breaks the stream, not only the data and its CRC:
	// neither decoder sees the CRC, which follows the tar's end.
	corrupt := gz(t, tarOf(t, file("a", strings.Repeat("x", 2<<20)), file("b", "b")))
	corrupt[len(corrupt)/2] ^= 0xff
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"truncated", good[:len(good)/2]},
		{"corrupt", corrupt},
		{"not gzip past its header", append(bytes.Clone(good[:10]), bytes.Repeat([]byte{0xff}, 1<<20)...)},
	} {
		for _, asFile := range []bool{false, true} {
			var l Layer = newMemLayer(tc.blob, types.OCILayer)
			if asFile {
				l = newFileLayer(t, tc.blob)
			}
			dig, _ := l.Digest()
			if _, err := flatten(t, Options{Stream: -1}, l); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: the built-in decoder says %v", tc.name, err)
			}
			_, err := flatten(t, Options{Stream: -1, Gunzip: igzip, gunzipFrom: 1}, l)
			var ie *Error
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ie) || ie.Layer != dig.String() {
				t.Errorf("%s (file %v): got %v, want ErrCorrupt naming layer %s", tc.name, asFile, err, dig)
			}
		}
	}
}

// TestExternalGunzipReadsBlobToEnd: the blob is read to its end, bytes
// after the gzip stream included, so a reader that verifies as it goes
// gets its say; its error is the layer's.
func TestExternalGunzipReadsBlobToEnd(t *testing.T) {
	igzip := needIgzip(t)
	blob := append(gz(t, tarOf(t, file("a", noisy(1<<20)))), make([]byte, 300000)...)
	l := &countingLayer{memLayer: newMemLayer(blob, types.OCILayer)}
	r, err := flatten(t, Options{Gunzip: igzip, gunzipFrom: 1}, l)
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, r)
	r.Close()
	if l.read != int64(len(blob)) {
		t.Errorf("read %d of %d blob bytes", l.read, len(blob))
	}
	bad := &failingLayer{memLayer: newMemLayer(blob, types.OCILayer), err: errors.New("digest mismatch")}
	if _, err := flatten(t, Options{Stream: -1, Gunzip: igzip, gunzipFrom: 1}, bad); err == nil || !strings.Contains(err.Error(), "digest mismatch") {
		t.Errorf("a blob failing at its end: got %v", err)
	}
}

// failingLayer's blob fails at its end, as a download whose digest does
// not match does.
type failingLayer struct {
	*memLayer
	err error
}

func (l *failingLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(bytes.NewReader(l.blob), errReader{l.err})), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
