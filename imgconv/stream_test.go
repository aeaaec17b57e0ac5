package imgconv

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestStreamSkipsHiddenContent: what the upper layers hide of the streamed
// layer is neither written nor kept in a spill, unless an upper hardlink
// needs it; a link of the streamed layer's own to it, later in its tar,
// makes the write start again without streaming, with the same result as
// that gives from the start.
func TestStreamSkipsHiddenContent(t *testing.T) {
	gone, linked := strings.Repeat("g", 1<<20), strings.Repeat("l", 300000)
	tests := []struct {
		name    string
		layers  [][]te
		restart bool
		spilled int64 // bytes of the streamed layer kept aside
		want    []string
	}{{
		name: "hidden by a whiteout, and linked from above",
		layers: [][]te{
			{file("keep", "k"), file("gone", gone), file("linked", linked)},
			{whiteout(".wh.gone"), whiteout(".wh.linked"), hardlink("l2", "linked")},
		},
		spilled: int64(len(linked)),
		want:    []string{`./keep 0 "k"`, `./l2 0 "` + linked + `"`},
	}, {
		name: "hidden by an opaque directory and a replacing file",
		layers: [][]te{
			{dir("d/"), file("d/x", gone), file("f", linked)},
			{whiteout("d/.wh..wh..opq"), file("f", "new")},
		},
		want: []string{"./d/ 5", `./f 0 "new"`},
	}, {
		name: "linked later in its own layer",
		layers: [][]te{
			{file("a", gone), hardlink("b", "a")},
			{whiteout(".wh.a")},
		},
		restart: true,
		want:    []string{`./b 0 "` + gone + `"`},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var layers []Layer
			for _, l := range tc.layers {
				layers = append(layers, gzLayer(t, l...))
			}
			r, err := flatten(t, Options{Stream: 1}, layers...)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			_, err = r.WriteTar(context.Background(), &buf)
			spilled := r.spills[0].off
			r.Close()
			if tc.restart {
				if !errors.Is(err, ErrRestart) {
					t.Fatalf("got %v, want ErrRestart", err)
				}
				r, err := flatten(t, Options{Stream: -1}, layers...)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				out, _ := writeAll(t, r)
				buf.Reset()
				buf.Write(out)
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if spilled != tc.spilled {
					t.Errorf("the streamed layer kept %d bytes aside, want %d", spilled, tc.spilled)
				}
			}
			ms := readMembers(t, buf.Bytes())
			checkInvariants(t, ms)
			if got := summary(ms); !slices.Equal(got, tc.want) {
				t.Errorf("got\n  %.200s\nwant\n  %.200s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}
