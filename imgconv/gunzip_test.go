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
	"sync"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/tests/testenv"
)

func needIgzip(t *testing.T) string {
	t.Helper()
	p, err := LookIgzip()
	if p == "" {
		testenv.Missing(t, fmt.Sprintf("igzip not installed or not working (Debian package isal): %v", err))
	}
	return p
}

// igzipRuns counts the layers the external decoder reads, from a file and
// from a stream, so that a test knows the path it means to test was taken.
type igzipRuns struct{ file, stream atomic.Int64 }

func (c *igzipRuns) hook(opts *Options) *Options {
	opts.gunzipped = func(fromFile bool) {
		if fromFile {
			c.file.Add(1)
		} else {
			c.stream.Add(1)
		}
	}
	return opts
}

// check fails t unless igzip read a layer in the way asked for.
func (c *igzipRuns) check(t *testing.T, fromFile bool, what string) {
	t.Helper()
	if n := map[bool]*atomic.Int64{true: &c.file, false: &c.stream}[fromFile].Load(); n == 0 {
		t.Errorf("%s: igzip never ran (from a file: %v)", what, fromFile)
	}
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
							layers = append(layers, sizedMem(b))
						}
					}
					opts := Options{Stream: stream}
					var runs igzipRuns
					if mode != "builtin" {
						opts.Gunzip, opts.gunzipFrom = igzip, 1
						runs.hook(&opts)
					}
					r, err := flatten(t, opts, layers...)
					if err != nil {
						t.Fatalf("%s, stream %d: %v", mode, stream, err)
					}
					var buf bytes.Buffer
					_, err = r.WriteTar(context.Background(), &buf)
					r.Close()
					if mode != "builtin" {
						runs.check(t, mode == "igzip file", fmt.Sprintf("%s, stream %d", mode, stream))
					}
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
			var l Layer = sizedMem(tc.blob)
			if asFile {
				l = newFileLayer(t, tc.blob)
			}
			dig, _ := l.Digest()
			if _, err := flatten(t, Options{Stream: -1}, l); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: the built-in decoder says %v", tc.name, err)
			}
			var runs igzipRuns
			_, err := flatten(t, *runs.hook(&Options{Stream: -1, Gunzip: igzip, gunzipFrom: 1}), l)
			runs.check(t, asFile, tc.name)
			var ie *Error
			if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrExternalGunzip) || !errors.As(err, &ie) || ie.Layer != dig.String() {
				t.Errorf("%s (file %v): got %v, want ErrCorrupt and ErrExternalGunzip naming layer %s", tc.name, asFile, err, dig)
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
	var runs igzipRuns
	r, err := flatten(t, *runs.hook(&Options{Gunzip: igzip, gunzipFrom: 1}), withSize(l, blob))
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, r)
	r.Close()
	runs.check(t, false, "good blob")
	if l.read != int64(len(blob)) {
		t.Errorf("read %d of %d blob bytes", l.read, len(blob))
	}
	bad := withSize(&failingLayer{memLayer: newMemLayer(blob, types.OCILayer), err: errors.New("digest mismatch")}, blob)
	runs = igzipRuns{}
	if _, err := flatten(t, *runs.hook(&Options{Stream: -1, Gunzip: igzip, gunzipFrom: 1}), bad); err == nil || !strings.Contains(err.Error(), "digest mismatch") {
		t.Errorf("a blob failing at its end: got %v", err)
	}
	runs.check(t, false, "failing blob")
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

// TestGunzipTrailingData: what follows the tar's end inside the gzip
// stream still counts against MaxSize. Past the limit, the decoder stops
// at once (igzip used to block on its full output for ever, the blob's
// copy blocked on its input), the layer is ErrTooLarge, and a blob that
// fails at its end still has that failure reported first.
func TestGunzipTrailingData(t *testing.T) {
	igzip := needIgzip(t)
	blob := gz(t, append(tarOf(t, file("a", "hello")), noisy(16<<20)...))
	for _, mode := range []string{"builtin", "igzip file", "igzip stream"} {
		for _, failing := range []bool{false, true} {
			if failing && mode == "igzip file" {
				continue // a file does not fail at its end
			}
			var l Layer = sizedMem(blob)
			switch {
			case mode == "igzip file":
				l = newFileLayer(t, blob)
			case failing:
				l = withSize(&failingLayer{memLayer: newMemLayer(blob, types.OCILayer), err: errors.New("digest mismatch")}, blob)
			}
			opts := Options{Stream: -1, MaxSize: 2 << 20}
			var runs igzipRuns
			if mode != "builtin" {
				opts.Gunzip, opts.gunzipFrom = igzip, 1
				runs.hook(&opts)
			}
			_, err := flatten(t, opts, l)
			if mode != "builtin" {
				runs.check(t, mode == "igzip file", mode)
			}
			var ie *Error
			switch {
			case failing && (err == nil || !strings.Contains(err.Error(), "digest mismatch")):
				t.Errorf("%s, failing blob: got %v, want the blob's error", mode, err)
			case !failing && (!errors.Is(err, ErrTooLarge) || !errors.As(err, &ie) || ie.Layer == ""):
				t.Errorf("%s: got %v, want ErrTooLarge naming the layer", mode, err)
			}
		}
	}
}

// TestExternalGunzipCancel: a layer whose blob stops arriving after the tar
// (a download that stalls) ends with the context, although igzip waits for
// more input and the blob's copy for more bytes.
func TestExternalGunzipCancel(t *testing.T) {
	igzip := needIgzip(t)
	blob := gz(t, tarOf(t, file("a", noisy(2<<20))))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := withSize(&stallingLayer{memLayer: newMemLayer(blob, types.OCILayer), stalled: cancel}, blob)
	var runs igzipRuns
	opts := runs.hook(&Options{Stream: -1, Gunzip: igzip, gunzipFrom: 1, TempDir: t.TempDir()})
	_, err := Flatten(ctx, []Layer{l}, *opts)
	runs.check(t, false, "stalling blob")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

// stallingLayer's blob gives its bytes, then calls stalled and blocks
// until closed, as a download that stopped does.
type stallingLayer struct {
	*memLayer
	stalled func()
}

func (l *stallingLayer) Compressed() (io.ReadCloser, error) {
	s := &stallReader{closed: make(chan struct{}), stalled: l.stalled}
	s.r = io.MultiReader(bytes.NewReader(l.blob), s)
	return s, nil
}

type stallReader struct {
	r       io.Reader
	closed  chan struct{}
	stalled func()
	once    sync.Once
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.r != nil {
		r := s.r
		s.r = nil
		defer func() { s.r = r }()
		return r.Read(p)
	}
	s.stalled()
	<-s.closed
	return 0, io.ErrClosedPipe
}

func (s *stallReader) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// TestGunzipTrailer: the built-in decoder and igzip agree on what follows
// the tar: a bad CRC32 or length in the gzip trailer, or a broken member
// after it, make the layer corrupt; padding that is not a gzip member is
// accepted.
func TestGunzipTrailer(t *testing.T) {
	igzip := needIgzip(t)
	good := gz(t, tarOf(t, file("a", noisy(2<<20)), file("b", "b")))
	flip := func(at int) []byte {
		b := bytes.Clone(good)
		b[len(b)+at] ^= 0xff
		return b
	}
	for _, tc := range []struct {
		name string
		blob []byte
		ok   bool
	}{
		{"good", good, true},
		{"zero padding", append(bytes.Clone(good), make([]byte, 10000)...), true},
		{"short garbage", append(bytes.Clone(good), "junk"...), true},
		{"garbage", append(bytes.Clone(good), "hello garbage, not gzip\n"...), true},
		{"bad CRC32", flip(-6), false},
		{"bad length", flip(-2), false},
		{"truncated trailer", good[:len(good)-3], false},
		{"broken member after", append(bytes.Clone(good), "\x1f\x8bxxxxxxxxxxxx"...), false},
	} {
		for _, mode := range []string{"builtin", "igzip file", "igzip stream"} {
			var l Layer = sizedMem(tc.blob)
			if mode == "igzip file" {
				l = newFileLayer(t, tc.blob)
			}
			opts := Options{Stream: -1}
			var runs igzipRuns
			if mode != "builtin" {
				opts.Gunzip, opts.gunzipFrom = igzip, 1
				runs.hook(&opts)
			}
			r, err := flatten(t, opts, l)
			if r != nil {
				r.Close()
			}
			if mode != "builtin" {
				runs.check(t, mode == "igzip file", tc.name)
			}
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s, %s: got %v, want ok %v", tc.name, mode, err, tc.ok)
			}
		}
	}
}

// TestExternalGunzipBroken: an igzip that does not work (a library
// missing, exit 127) fails the probe LookIgzip makes; given anyway, its
// failure is marked as the decoder's (ErrExternalGunzip), and one that
// cannot start is not called corrupt at all.
func TestExternalGunzipBroken(t *testing.T) {
	igzip := needIgzip(t)
	if err := probeGunzip(igzip); err != nil {
		t.Errorf("probe of the installed igzip: %v", err)
	}
	dir := t.TempDir()
	broken := filepath.Join(dir, "igzip")
	script := "#!/bin/sh\necho 'igzip: error while loading shared libraries: libisal.so.2: cannot open shared object file' >&2\nexit 127\n"
	if err := os.WriteFile(broken, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := probeGunzip(broken); err == nil || !strings.Contains(err.Error(), "libisal.so.2") {
		t.Errorf("probe of a broken igzip: got %v, want its complaint", err)
	}
	blob := gz(t, tarOf(t, file("a", noisy(2<<20))))
	for _, tc := range []struct {
		name, prog string
		corrupt    bool
	}{
		{"exits 127", broken, true},
		{"missing", filepath.Join(dir, "nothing"), false},
	} {
		for _, asFile := range []bool{false, true} {
			var l Layer = sizedMem(blob)
			if asFile {
				l = newFileLayer(t, blob)
			}
			_, err := flatten(t, Options{Stream: -1, Gunzip: tc.prog, gunzipFrom: 1}, l)
			if !errors.Is(err, ErrExternalGunzip) || errors.Is(err, ErrCorrupt) != tc.corrupt {
				t.Errorf("%s (file %v): got %v, want ErrExternalGunzip, ErrCorrupt %v", tc.name, asFile, err, tc.corrupt)
			}
		}
	}
}
