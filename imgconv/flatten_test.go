package imgconv

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestFlattenRules covers the OCI image-spec layer rules case by case,
// including every failure of mutate.Extract listed in perf.md §1.4.
func TestFlattenRules(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]te
		want   []string
	}{{
		name:   "parents before children, implicit parents created",
		layers: [][]te{{file("usr/bin/tool", "x"), dir("etc/"), file("etc/hosts", "h")}},
		want:   []string{"./etc/ 5", `./etc/hosts 0 "h"`, "./usr/ 5", "./usr/bin/ 5", `./usr/bin/tool 0 "x"`},
	}, {
		name:   "absolute and dotted names made relative",
		layers: [][]te{{file("/abs", "a"), file("./dot/../rel", "r"), file("//x//y", "y")}},
		want:   []string{`./abs 0 "a"`, `./rel 0 "r"`, "./x/ 5", `./x/y 0 "y"`},
	}, {
		name:   "whiteout hides a lower file",
		layers: [][]te{{file("a", "1"), file("b", "2")}, {whiteout(".wh.a")}},
		want:   []string{`./b 0 "2"`},
	}, {
		name:   "whiteout of a directory hides its descendants",
		layers: [][]te{{dir("d/"), file("d/x", "1"), dir("d/e/"), file("d/e/y", "2"), file("k", "k")}, {whiteout(".wh.d")}},
		want:   []string{`./k 0 "k"`},
	}, {
		name:   "whiteout then re-create in the same layer keeps the new file",
		layers: [][]te{{file("foo", "old")}, {whiteout(".wh.foo"), file("foo", "new")}},
		want:   []string{`./foo 0 "new"`},
	}, {
		name:   "re-create then whiteout in the same layer keeps the new file",
		layers: [][]te{{file("foo", "old")}, {file("foo", "new"), whiteout(".wh.foo")}},
		want:   []string{`./foo 0 "new"`},
	}, {
		name:   "directory whited out and re-created in the same layer",
		layers: [][]te{{dir("d/"), file("d/old", "o")}, {whiteout(".wh.d"), dir("d/"), file("d/new", "n")}},
		want:   []string{"./d/ 5", `./d/new 0 "n"`},
	}, {
		name:   "whiteout of a directory, re-created in a higher layer",
		layers: [][]te{{dir("a/"), file("a/foo", "f")}, {whiteout(".wh.a")}, {dir("a/"), file("a/baz", "b")}},
		want:   []string{"./a/ 5", `./a/baz 0 "b"`},
	}, {
		name:   "whiteout of something absent is a no-op",
		layers: [][]te{{file("a", "1")}, {whiteout(".wh.nothing"), whiteout("a/.wh.under-a-file")}},
		want:   []string{`./a 0 "1"`},
	}, {
		name: "opaque marker first hides lower children only",
		layers: [][]te{{dir("d/"), file("d/lower", "l"), dir("d/sub/"), file("d/sub/deep", "x"), file("keep", "k")},
			{dir("d/"), whiteout("d/.wh..wh..opq"), file("d/upper", "u")}},
		want: []string{"./d/ 5", `./d/upper 0 "u"`, `./keep 0 "k"`},
	}, {
		name: "opaque marker last, as in the spec's example",
		layers: [][]te{{dir("a/"), file("a/b", "lower")},
			{dir("a/"), file("a/c", "upper"), whiteout("a/.wh..wh..opq")}},
		want: []string{"./a/ 5", `./a/c 0 "upper"`},
	}, {
		name:   "opaque marker over a missing directory",
		layers: [][]te{{file("x", "1")}, {whiteout("new/.wh..wh..opq"), file("new/f", "f")}},
		want:   []string{"./new/ 5", `./new/f 0 "f"`, `./x 0 "1"`},
	}, {
		name:   "file replaced by a directory",
		layers: [][]te{{file("p", "file")}, {dir("p/"), file("p/child", "c")}},
		want:   []string{"./p/ 5", `./p/child 0 "c"`},
	}, {
		name:   "directory replaced by a file drops its children",
		layers: [][]te{{dir("p/"), file("p/child", "c")}, {file("p", "now a file")}},
		want:   []string{`./p 0 "now a file"`},
	}, {
		name:   "file replaced by a symlink",
		layers: [][]te{{file("p", "file"), file("q", "q")}, {symlink("p", "q")}},
		want:   []string{"./p 2 -> q", `./q 0 "q"`},
	}, {
		name:   "symlink replaced by a directory",
		layers: [][]te{{dir("real/"), file("real/f", "r"), symlink("lib", "real")}, {dir("lib/"), file("lib/g", "g")}},
		want:   []string{"./lib/ 5", `./lib/g 0 "g"`, "./real/ 5", `./real/f 0 "r"`},
	}, {
		name:   "directory over directory takes the new attributes and keeps children",
		layers: [][]te{{te{Name: "d/", Mode: 0o700}, file("d/f", "f")}, {te{Name: "d/", Mode: 0o1777, UID: 5}}},
		want:   []string{"./d/ 5", `./d/f 0 "f"`},
	}, {
		name:   "duplicate entries in one layer: the last wins",
		layers: [][]te{{file("dup", "first"), file("dup", "second"), dir("x/"), file("x", "file wins")}},
		want:   []string{`./dup 0 "second"`, `./x 0 "file wins"`},
	}, {
		name:   "hardlink within a layer",
		layers: [][]te{{file("a", "A"), hardlink("b", "a")}},
		want:   []string{`./a 0 "A"`, "./b 1 -> ./a"},
	}, {
		name:   "hardlink across layers comes after its target",
		layers: [][]te{{file("z", "Z")}, {hardlink("a", "z")}},
		want:   []string{"./a 0 \"Z\"", "./z 1 -> ./a"},
	}, {
		name:   "#977: link whose original name is later whited out keeps the content",
		layers: [][]te{{file("a", "A"), hardlink("b", "a")}, {whiteout(".wh.a")}},
		want:   []string{`./b 0 "A"`},
	}, {
		name: "#2002: overwriting one name of a hardlink set leaves the others alone",
		layers: [][]te{{file("t2", "unrelated")}, {file("t1", "123"), hardlink("t2", "t1"), hardlink("t3", "t1")},
			{file("t1", "456")}},
		want: []string{`./t1 0 "456"`, `./t2 0 "123"`, "./t3 1 -> ./t2"},
	}, {
		name:   "hardlink to a lower file the same layer whites out",
		layers: [][]te{{file("a", "A")}, {whiteout(".wh.a"), hardlink("b", "a")}},
		want:   []string{`./b 0 "A"`},
	}, {
		name:   "hardlink into a directory the same layer whites out",
		layers: [][]te{{dir("d/"), file("d/a", "A")}, {whiteout(".wh.d"), hardlink("b", "d/a")}},
		want:   []string{`./b 0 "A"`},
	}, {
		name:   "hardlinked symlink",
		layers: [][]te{{symlink("s", "/target"), hardlink("s2", "s")}},
		want:   []string{"./s 2 -> /target", "./s2 1 -> ./s"},
	}, {
		name:   "AUFS whiteout stored as a hardlink",
		layers: [][]te{{file("tmp/key", "k"), file("tmp/other", "o")}, {hardlink("tmp/.wh.key", "tmp/other")}},
		want:   []string{"./tmp/ 5", `./tmp/other 0 "o"`},
	}, {
		name: "AUFS hardlink store",
		layers: [][]te{{file(".wh..wh.plnk/123.456", "linked"), hardlink("bin/a", ".wh..wh.plnk/123.456"),
			hardlink("bin/b", ".wh..wh.plnk/123.456"), file(".wh..wh.aufs", "")}},
		want: []string{"./bin/ 5", `./bin/a 0 "linked"`, "./bin/b 1 -> ./bin/a"},
	}, {
		name:   "device nodes are left out, fifos kept",
		layers: [][]te{{dir("dev/"), te{Name: "dev/null", Type: tar.TypeChar}, te{Name: "dev/sda", Type: tar.TypeBlock}, te{Name: "run/fifo", Type: tar.TypeFifo}}},
		want:   []string{"./dev/ 5", "./run/ 5", "./run/fifo 6"},
	}, {
		name:   "long and non-ASCII names",
		layers: [][]te{{file(strings.Repeat("long-", 40)+"name", "L"), file("ünïcødé/日本語.txt", "u")}},
		want:   []string{`./` + strings.Repeat("long-", 40) + `name 0 "L"`, "./ünïcødé/ 5", `./ünïcødé/日本語.txt 0 "u"`},
	}, {
		name:   "siblings sort by name, a directory right before its children",
		layers: [][]te{{file("a-b", "1"), file("a/c", "2"), file("a.d", "3"), file("B", "4")}},
		want:   []string{`./B 0 "4"`, "./a/ 5", `./a/c 0 "2"`, `./a-b 0 "1"`, `./a.d 0 "3"`},
	}, {
		name:   "root entry sets the root's attributes, whiteouts of the root ignored",
		layers: [][]te{{te{Name: "./", Mode: 0o755}, file("f", "f")}},
		want:   []string{`./f 0 "f"`},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var layers []Layer
			for _, l := range tc.layers {
				layers = append(layers, gzLayer(t, l...))
			}
			r, err := flatten(t, Options{Stream: -1}, layers...)
			if err != nil {
				t.Fatalf("Flatten: %v", err)
			}
			defer r.Close()
			out, _ := writeAll(t, r)
			ms := readMembers(t, out)
			checkInvariants(t, ms)
			got := summary(ms)
			want := normalize(ms)
			// Streaming any one layer must give the same tree.
			for k := range layers {
				r, err := flatten(t, Options{Stream: k + 1}, layers...)
				if err != nil {
					t.Fatalf("Flatten streaming layer %d: %v", k, err)
				}
				var buf bytes.Buffer
				_, err = r.WriteTar(context.Background(), &buf)
				r.Close()
				if errors.Is(err, ErrRestart) {
					t.Logf("RESTART streaming layer %d", k)
					continue
				}
				if err != nil {
					t.Fatalf("streaming layer %d: %v", k, err)
				}
				sms := readMembers(t, buf.Bytes())
				checkInvariants(t, sms)
				if s := normalize(sms); !slices.Equal(s, want) {
					t.Errorf("streaming layer %d gives\n  %s\nwant\n  %s", k, strings.Join(s, "\n  "), strings.Join(want, "\n  "))
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestFlattenKeepsModesIDsAndXattrs(t *testing.T) {
	r, err := flatten(t, Options{}, gzLayer(t,
		te{Name: "bin/su", Body: "su", Mode: 0o4755, UID: 0, GID: 0},
		te{Name: "usr/bin/wall", Body: "w", Mode: 0o2755, GID: 5},
		te{Name: "tmp/", Mode: 0o1777},
		te{Name: "app/data", Body: "d", Mode: 0o640, UID: 1000, GID: 65535},
		te{Name: "bin/ping", Body: "p", Mode: 0o755, PAX: map[string]string{
			"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00",
			"SCHILY.xattr.user.note":           "hello",
			"SCHILY.xattr.security.selinux":    "system_u:object_r:bin_t:s0",
			"SCHILY.xattr.trusted.overlay":     "y",
		}},
	))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out, _ := writeAll(t, r)
	byName := map[string]member{}
	for _, m := range readMembers(t, out) {
		byName[m.name] = m
	}
	for _, c := range []struct {
		name     string
		mode     int64
		uid, gid int
	}{
		{"./bin/su", 0o4755, 0, 0}, {"./usr/bin/wall", 0o2755, 0, 5}, {"./tmp/", 0o1777, 0, 0}, {"./app/data", 0o640, 1000, 65535},
	} {
		m := byName[c.name]
		if m.mode != c.mode || m.uid != c.uid || m.gid != c.gid {
			t.Errorf("%s: mode %o ids %d:%d, want %o %d:%d", c.name, m.mode, m.uid, m.gid, c.mode, c.uid, c.gid)
		}
	}
	want := map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00", "user.note": "hello"}
	if got := byName["./bin/ping"].xattrs; len(got) != 2 || got["security.capability"] != want["security.capability"] || got["user.note"] != want["user.note"] {
		t.Errorf("xattrs %q, want %q", got, want)
	}
	f := r.Facts()
	if !slices.ContainsFunc(f.Warnings, func(w string) bool {
		return strings.Contains(w, "security.selinux (1)") && strings.Contains(w, "trusted.overlay (1)")
	}) {
		t.Errorf("no warning about dropped xattrs in %q", f.Warnings)
	}
}

func TestFlattenCompressions(t *testing.T) {
	raw := tarOf(t, file("a", "alpha"))
	for _, l := range []struct {
		name string
		blob []byte
		mt   types.MediaType
	}{
		{"gzip", gz(t, raw), types.OCILayer},
		{"zstd", zst(t, raw), types.OCILayerZStd},
		{"uncompressed", raw, types.OCIUncompressedLayer},
		{"docker gzip", gz(t, raw), types.DockerLayer},
		{"zstd labelled gzip", zst(t, raw), types.DockerLayer},
		{"nondistributable", gz(t, raw), types.OCIRestrictedLayer},
	} {
		t.Run(l.name, func(t *testing.T) {
			r, err := flatten(t, Options{}, newMemLayer(l.blob, l.mt))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			out, _ := writeAll(t, r)
			if got := summary(readMembers(t, out)); !slices.Equal(got, []string{`./a 0 "alpha"`}) {
				t.Errorf("got %q", got)
			}
		})
	}
}

func TestFlattenDeterministic(t *testing.T) {
	mk := func() []Layer {
		return []Layer{
			gzLayer(t, dir("z/"), file("z/1", "one"), file("a", "A"), hardlink("h", "a"), file("m/n/o", "deep")),
			gzLayer(t, whiteout("z/.wh.1"), file("b", strings.Repeat("b", 300000)), symlink("s", "b")),
		}
	}
	var outs [][]byte
	for i := 0; i < 3; i++ {
		r, err := flatten(t, Options{Parallel: i + 1}, mk()...)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := writeAll(t, r)
		r.Close()
		outs = append(outs, out)
	}
	for i := 1; i < len(outs); i++ {
		if !bytes.Equal(outs[0], outs[i]) {
			t.Fatalf("run %d differs from run 0", i)
		}
	}
}

func TestFlattenBadInput(t *testing.T) {
	good := tarOf(t, file("a", strings.Repeat("x", 100000)))
	truncated := gz(t, good)
	truncated = truncated[:len(truncated)/2]
	corrupt := gz(t, good)
	corrupt[len(corrupt)/2] ^= 0xff
	notTar := gz(t, []byte(strings.Repeat("this is not a tar archive ", 100)))

	var bomb bytes.Buffer
	tw := tar.NewWriter(&bomb)
	tw.WriteHeader(&tar.Header{Name: "sparse-bomb", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644})
	tw.Flush()

	tests := []struct {
		name    string
		layers  []Layer
		opts    Options
		wantErr error
		inMsg   string
	}{
		{"dot-dot escape", []Layer{gzLayer(t, file("a/../../etc/passwd", "x"))}, Options{}, ErrUnsafePath, "a/../../etc/passwd"},
		{"hardlink escape", []Layer{gzLayer(t, hardlink("x", "../../etc/shadow"))}, Options{}, ErrUnsafePath, `"x"`},
		{"write through a symlink", []Layer{gzLayer(t, symlink("etc", "/host/etc")), gzLayer(t, file("etc/passwd", "x"))}, Options{}, ErrThroughSymlink, "etc/passwd"},
		{"write through a symlink in one layer", []Layer{gzLayer(t, symlink("lnk", "../.."), file("lnk/evil", "x"))}, Options{}, ErrThroughSymlink, "lnk/evil"},
		{"write below a file", []Layer{gzLayer(t, file("f", "x"), file("f/child", "y"))}, Options{}, ErrNotDir, "f/child"},
		{"uid too high", []Layer{gzLayer(t, te{Name: "big", Body: "x", UID: 100000})}, Options{}, ErrHighID, `"big"`},
		{"gid too high", []Layer{gzLayer(t, te{Name: "big", Body: "x", GID: 70000})}, Options{}, ErrHighID, `"big"`},
		{"dangling hardlink", []Layer{gzLayer(t, hardlink("b", "missing"))}, Options{}, ErrBadHardlink, `"b"`},
		{"hardlink to a directory", []Layer{gzLayer(t, dir("d/"), hardlink("b", "d"))}, Options{}, ErrBadHardlink, `"b"`},
		{"empty whiteout", []Layer{gzLayer(t, whiteout("dir/.wh."))}, Options{}, ErrBadWhiteout, "dir/.wh."},
		{"whiteout of the parent", []Layer{gzLayer(t, whiteout(".wh.."))}, Options{}, ErrBadWhiteout, ".wh.."},
		{"reserved directory name", []Layer{gzLayer(t, file(".wh.etc/somefile", "x"))}, Options{}, ErrBadWhiteout, ".wh.etc/somefile"},
		{"truncated gzip", []Layer{newMemLayer(truncated, types.OCILayer)}, Options{}, ErrCorrupt, "layer sha256:"},
		{"corrupt gzip", []Layer{newMemLayer(corrupt, types.OCILayer)}, Options{}, ErrCorrupt, "layer sha256:"},
		{"not a tar", []Layer{newMemLayer(notTar, types.OCILayer)}, Options{}, ErrCorrupt, "layer sha256:"},
		{"unsupported media type", []Layer{newMemLayer(good, "application/vnd.cncf.helm.chart.content.v1.tar+gzip")}, Options{}, ErrMediaType, "helm"},
		{"foreign layer", []Layer{newMemLayer(good, types.DockerForeignLayer)}, Options{}, ErrMediaType, "foreign"},
		{"size bomb", []Layer{gzLayer(t, file("zeros", strings.Repeat("\x00", 1<<20)))}, Options{MaxSize: 1 << 19}, ErrTooLarge, "limit"},
		{"declared size bomb", []Layer{newMemLayer(bomb.Bytes(), types.OCIUncompressedLayer)}, Options{}, ErrTooLarge, "sparse-bomb"},
		{"too many entries", []Layer{gzLayer(t, file("a", ""), file("b", ""), file("c", ""))}, Options{MaxEntries: 2}, ErrTooManyEntries, "limit"},
		{"error in the second layer names it", []Layer{gzLayer(t, file("ok", "")), gzLayer(t, file("../escape", ""))}, Options{}, ErrUnsafePath, "../escape"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Image = "registry.example/app:1"
			r, err := flatten(t, tc.opts, tc.layers...)
			if err == nil {
				r.Close()
				t.Fatalf("Flatten succeeded, want %v", tc.wantErr)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %q is not %q", err, tc.wantErr)
			}
			var ie *Error
			if !errors.As(err, &ie) || ie.Layer == "" {
				t.Fatalf("error %q does not name the layer", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "registry.example/app:1") || !strings.Contains(msg, tc.inMsg) {
				t.Errorf("error %q should name the image and %q", msg, tc.inMsg)
			}
		})
	}
}

func TestFlattenSquashHighIDs(t *testing.T) {
	r, err := flatten(t, Options{SquashHighIDs: true}, gzLayer(t, te{Name: "big", Body: "x", UID: 100000, GID: 200000}))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out, _ := writeAll(t, r)
	ms := readMembers(t, out)
	if m := ms[len(ms)-1]; m.uid != 65534 || m.gid != 65534 {
		t.Errorf("ids %d:%d, want 65534:65534", m.uid, m.gid)
	}
}

// A layer's digest is checked by the reader underneath when it reaches EOF;
// the flattener must read that far even though the tar trailer comes earlier,
// and junk after the compressed stream (covered by the digest) is no error.
func TestFlattenDrainsToEOF(t *testing.T) {
	blob := gz(t, tarOf(t, file("a", "a")))
	blob = append(blob, make([]byte, 4096)...)
	l := &countingLayer{memLayer: newMemLayer(blob, types.OCILayer)}
	r, err := flatten(t, Options{}, l)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if l.read != int64(len(blob)) {
		t.Errorf("read %d of %d blob bytes", l.read, len(blob))
	}
}

type countingLayer struct {
	*memLayer
	read int64
}

func (c *countingLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(&countReader{r: bytes.NewReader(c.blob), n: &c.read}), nil
}

type countReader struct {
	r io.Reader
	n *int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}
