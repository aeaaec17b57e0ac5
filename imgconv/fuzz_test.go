package imgconv

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// FuzzFlatten feeds two arbitrary uncompressed layers to the flattener. Any
// input may fail, but none may panic, and whatever succeeds must write a
// template that satisfies every invariant.
func FuzzFlatten(f *testing.F) {
	seeds := [][2][]te{
		{{file("a", "A"), hardlink("b", "a")}, {whiteout(".wh.a")}},
		{{file("t1", "1"), hardlink("t2", "t1")}, {file("t1", "2")}},
		{{dir("d/"), file("d/x", "x")}, {whiteout("d/.wh..wh..opq"), file("d/y", "y")}},
		{{symlink("l", "/x"), file("f", "f")}, {dir("l/"), whiteout(".wh.f"), file("f", "g")}},
		{{file("a/b/c", "deep")}, {file("a", "flat")}},
		// At the limits: a 255-byte name, a 4093-byte path ("./" makes
		// 4095), a 4095-byte symlink target, a hardlink to the deep path.
		{{file(nameOf(255), "n"), symlink("l", longPath(4095))}, {file(longPath(4093), "p"), hardlink("h", longPath(4093))}},
		{{file(nameOf(256), "n")}, {file(longPath(4094), "p")}},
	}
	for _, s := range seeds {
		f.Add(tarOf(f, s[0]...), tarOf(f, s[1]...))
	}
	tmp := f.TempDir()
	f.Fuzz(func(t *testing.T, l1, l2 []byte) {
		layers := []Layer{
			newMemLayer(l1, types.OCIUncompressedLayer),
			newMemLayer(l2, types.OCIUncompressedLayer),
		}
		// Every way of writing (no layer streamed, either one streamed)
		// must give the same tree, or fail alike.
		var want []string
		var wantErr error
		for mode := -1; mode <= 2; mode++ {
			if mode == 0 {
				continue
			}
			r, err := Flatten(context.Background(), layers, Options{TempDir: tmp, MaxSize: 64 << 20, MaxEntries: 10000, Stream: mode})
			var buf bytes.Buffer
			if err == nil {
				_, err = r.WriteTar(context.Background(), &buf)
				r.Close()
			}
			if errors.Is(err, ErrRestart) {
				continue
			}
			if mode == -1 {
				if wantErr = err; err != nil {
					return
				}
				ms := readMembers(t, buf.Bytes())
				checkInvariants(t, ms)
				want = normalize(ms)
				continue
			}
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("stream layer %d: error %v, without streaming %v", mode-1, err, wantErr)
			}
			ms := readMembers(t, buf.Bytes())
			checkInvariants(t, ms)
			if got := normalize(ms); !slices.Equal(got, want) {
				t.Fatalf("stream layer %d gives\n  %s\nwithout streaming\n  %s", mode-1, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		}
	})
}
