package imgconv

import (
	"bytes"
	"context"
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
	}
	for _, s := range seeds {
		f.Add(tarOf(f, s[0]...), tarOf(f, s[1]...))
	}
	tmp := f.TempDir()
	f.Fuzz(func(t *testing.T, l1, l2 []byte) {
		r, err := Flatten(context.Background(), []Layer{
			newMemLayer(l1, types.OCIUncompressedLayer),
			newMemLayer(l2, types.OCIUncompressedLayer),
		}, Options{TempDir: tmp, MaxSize: 64 << 20, MaxEntries: 10000})
		if err != nil {
			return
		}
		defer r.Close()
		var buf bytes.Buffer
		if _, err := r.WriteTar(&buf); err != nil {
			t.Fatalf("WriteTar after a successful Flatten: %v", err)
		}
		checkInvariants(t, readMembers(t, buf.Bytes()))
		r.Facts()
	})
}
