package imgconv

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pve-image/pve-image/tests/pvelxc"
	"github.com/pve-image/pve-image/tests/testenv"
)

// nameOf is a single file name of n bytes.
func nameOf(n int) string { return strings.Repeat("n", n) }

// longPath is a clean relative path of exactly n bytes in components of at
// most 200 bytes.
func longPath(n int) string {
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		c := min(n-b.Len(), 200)
		if n-b.Len()-c == 1 {
			c-- // leave room for "/" and one more byte
		}
		b.WriteString(strings.Repeat("p", c))
	}
	return b.String()
}

// deepFile is a file depth directories down, in one-byte components.
func deepFile(depth int) string { return strings.Repeat("d/", depth) + "f" }

// convert flattens and writes, returning the template's members or the
// first error.
func convert(t testing.TB, opts Options, layers ...Layer) ([]member, error) {
	t.Helper()
	r, err := flatten(t, opts, layers...)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var buf bytes.Buffer
	if _, err := r.WriteTar(context.Background(), &buf); err != nil {
		return nil, err
	}
	return readMembers(t, buf.Bytes()), nil
}

// TestPathLimits: what Linux cannot create, and so Proxmox's tar cannot
// extract, is refused at its boundary, naming the image, the layer and the
// member; what it can is converted unchanged. The template names members
// "./PATH" and GNU tar hands exactly that (a directory's trailing "/" left
// off) to mkdirat/openat relative to the rootfs, so the limit on a member
// name is 4095 bytes with the "./": 4093 for the path itself.
func TestPathLimits(t *testing.T) {
	const longest = maxMemberLen - len(memberPrefix) // 4093
	tests := []struct {
		name   string
		layers [][]te
		err    error  // nil: converts
		member string // refused: the member the error names; converted: a member the template holds
		absent string // converted: a member the template must not hold
	}{
		{name: "file name of 255 bytes", layers: [][]te{{file(nameOf(255), "x")}}, member: "./" + nameOf(255)},
		{name: "file name of 256 bytes", layers: [][]te{{file(nameOf(256), "x")}}, err: ErrNameTooLong, member: nameOf(256)},
		{name: "directory name of 256 bytes on the way", layers: [][]te{{file("a/"+nameOf(256)+"/f", "x")}}, err: ErrNameTooLong, member: "a/" + nameOf(256) + "/f"},
		{name: "directory member named with 256 bytes", layers: [][]te{{dir(nameOf(256) + "/")}}, err: ErrNameTooLong, member: nameOf(256) + "/"},
		{name: "symlink named with 256 bytes", layers: [][]te{{symlink(nameOf(256), "t")}}, err: ErrNameTooLong, member: nameOf(256)},
		{name: "name of 256 multibyte bytes", layers: [][]te{{file(strings.Repeat("é", 128), "x")}}, err: ErrNameTooLong, member: strings.Repeat("é", 128)},

		{name: "path of 4095 bytes with ./", layers: [][]te{{file(longPath(longest), "x")}}, member: "./" + longPath(longest)},
		{name: "path of 4096 bytes with ./", layers: [][]te{{file(longPath(longest+1), "x")}}, err: ErrPathTooLong, member: longPath(longest + 1)},
		{name: "directory of 4095 bytes with ./ (its trailing slash not counted)", layers: [][]te{{dir(longPath(longest) + "/")}}, member: "./" + longPath(longest) + "/"},
		{name: "directory of 4096 bytes with ./", layers: [][]te{{dir(longPath(longest+1) + "/")}}, err: ErrPathTooLong, member: longPath(longest+1) + "/"},
		{name: "absolute name: the / goes, the ./ comes", layers: [][]te{{file("/"+longPath(longest), "x")}}, member: "./" + longPath(longest)},
		{name: "long raw name that cleans short", layers: [][]te{{file(strings.Repeat("./", 3000)+"f", "x")}}, member: "./f"},
		{name: "10,000 directories deep", layers: [][]te{{file(deepFile(10000), "x")}}, err: ErrPathTooLong, member: deepFile(10000)},
		{name: "2,046 directories deep, the most that fits", layers: [][]te{{file(deepFile(2046), "x")}}, member: "./" + deepFile(2046)},
		{name: "2,047 directories deep", layers: [][]te{{file(deepFile(2047), "x")}}, err: ErrPathTooLong, member: deepFile(2047)},

		{name: "symlink target of 4095 bytes", layers: [][]te{{symlink("l", longPath(4095))}}, member: "./l"},
		{name: "symlink target of 4096 bytes", layers: [][]te{{symlink("l", longPath(4096))}}, err: ErrPathTooLong, member: "l"},
		{name: "symlink target with a long name is only a string", layers: [][]te{{symlink("l", nameOf(300))}}, member: "./l"},

		{name: "hardlink named with 4095 bytes", layers: [][]te{{file("f", "x"), hardlink(longPath(longest), "f")}}, member: "./" + longPath(longest)},
		{name: "hardlink named with 4096 bytes", layers: [][]te{{file("f", "x"), hardlink(longPath(longest+1), "f")}}, err: ErrPathTooLong, member: longPath(longest + 1)},
		{name: "hardlink to a target of 4095 bytes", layers: [][]te{{file(longPath(longest), "x"), hardlink("h", longPath(longest))}}, member: "./h"},
		{name: "hardlink to a target of 4096 bytes", layers: [][]te{{file("f", "x"), hardlink("h", longPath(longest+1))}}, err: ErrPathTooLong, member: "h"},
		{name: "hardlink to a target named with 256 bytes", layers: [][]te{{file("f", "x"), hardlink("h", nameOf(256))}}, err: ErrNameTooLong, member: "h"},
		{name: "hardlink across layers to a deep target", layers: [][]te{{file(deepFile(2046), "x")}, {hardlink("h", deepFile(2046))}}, member: "./h"},

		{name: "whiteout of a 255-byte name, 259 bytes with .wh.", layers: [][]te{{file(nameOf(255), "x"), file("k", "k")}, {whiteout(".wh." + nameOf(255))}}, member: "./k", absent: "./" + nameOf(255)},
		{name: "whiteout below a path too long to exist", layers: [][]te{{file("k", "k")}, {whiteout(longPath(5000) + "/.wh.x"), whiteout(nameOf(300) + "/.wh..wh..opq")}}, member: "./k"},
		{name: "refusal in the second layer names it", layers: [][]te{{file("ok", "")}, {file(nameOf(256), "")}}, err: ErrNameTooLong, member: nameOf(256)},
	}
	const image = "registry.example/hostile:1"
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var layers []Layer
			for _, l := range tc.layers {
				layers = append(layers, gzLayer(t, l...))
			}
			// Without streaming, and streaming each layer in turn: the
			// same result, the error coming from WriteTar instead.
			for stream := -1; stream <= len(layers); stream++ {
				if stream == 0 {
					continue
				}
				ms, err := convert(t, Options{Image: image, Stream: stream}, layers...)
				if errors.Is(err, ErrRestart) {
					continue
				}
				if tc.err == nil {
					if err != nil {
						t.Fatalf("stream %d: %v", stream, err)
					}
					checkInvariants(t, ms)
					names := map[string]bool{}
					for _, m := range ms {
						names[m.name] = true
					}
					if !names[tc.member] {
						t.Errorf("stream %d: no member %s", stream, quoteShort(tc.member))
					}
					if tc.absent != "" && names[tc.absent] {
						t.Errorf("stream %d: member %s should be gone", stream, quoteShort(tc.absent))
					}
					continue
				}
				if !errors.Is(err, tc.err) {
					t.Fatalf("stream %d: error %v, want %v", stream, err, tc.err)
				}
				var ie *Error
				if !errors.As(err, &ie) || ie.Image != image || !strings.HasPrefix(ie.Layer, "sha256:") || ie.Path != tc.member {
					t.Fatalf("stream %d: error %q should name the image, the layer and the member %s", stream, err, quoteShort(tc.member))
				}
				if msg := err.Error(); !strings.Contains(msg, image) || !strings.Contains(msg, ie.Layer) || !strings.Contains(msg, quoteShort(tc.member)) {
					t.Errorf("stream %d: message %q should name the image, the layer and the member", stream, msg)
				}
				if len(err.Error()) > 1024 {
					t.Errorf("stream %d: message of %d bytes", stream, len(err.Error()))
				}
			}
		})
	}
}

// TestLimitsMatchGNUTar pins the limits to the extractor: a template at
// every limit unpacks with Proxmox's tar command, into a rootfs whose own
// path is long (tar works relative to it), and one byte more fails.
func TestLimitsMatchGNUTar(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		testenv.Missing(t, "GNU tar not found")
	}
	if v, _ := exec.Command(tarBin, "--version").Output(); !bytes.Contains(v, []byte("GNU tar")) {
		testenv.Missing(t, "%s is not GNU tar", tarBin)
	}
	const longest = maxMemberLen - len(memberPrefix)
	extract := func(t *testing.T, template []byte) error {
		root := t.TempDir()
		for len(root) < 1500 {
			root = filepath.Join(root, nameOf(200))
		}
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(tarBin, append([]string{"xpf", "-"}, pvelxc.TarFlags(root)...)...)
		cmd.Stdin = bytes.NewReader(template)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %.300s", err, out)
		}
		return nil
	}

	t.Run("at the limits", func(t *testing.T) {
		r, err := flatten(t, Options{Stream: -1}, gzLayer(t,
			file(nameOf(255), "n"),
			file(longPath(longest), "p"),
			dir("q"+longPath(longest-1)+"/"),
			symlink("l", longPath(maxMemberLen)),
			hardlink("h", longPath(longest)),
			file(deepFile(2046), "d")))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		out, _ := writeAll(t, r)
		if err := extract(t, out); err != nil {
			t.Fatalf("tar refused a template imgconv wrote: %v", err)
		}
	})
	for _, c := range []struct {
		name string
		hdr  tar.Header
	}{
		{"name of 256 bytes", tar.Header{Name: "./" + nameOf(256), Typeflag: tar.TypeReg}},
		{"file of 4096 bytes with ./", tar.Header{Name: "./" + longPath(longest+1), Typeflag: tar.TypeReg}},
		{"directory of 4096 bytes with ./, trailing slash aside", tar.Header{Name: "./" + longPath(longest+1) + "/", Typeflag: tar.TypeDir}},
		{"symlink target of 4096 bytes", tar.Header{Name: "./l", Typeflag: tar.TypeSymlink, Linkname: longPath(maxMemberLen + 1)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			c.hdr.Mode, c.hdr.Format = 0o755, tar.FormatPAX
			if err := tw.WriteHeader(&c.hdr); err != nil {
				t.Fatal(err)
			}
			tw.Close()
			if err := extract(t, buf.Bytes()); err == nil {
				t.Fatalf("tar extracted %s: the limit is too strict", quoteShort(c.hdr.Name))
			}
		})
	}
}

// AddFile, AddSymlink and Move put what pve-image adds where the image's
// symlinks lead, which may be too deep for the template.
func TestAddAndMoveLimits(t *testing.T) {
	const longest = maxMemberLen - len(memberPrefix)
	deepDir := longPath(longest - len("/x"))
	r, err := flatten(t, Options{Stream: -1}, gzLayer(t, dir(deepDir+"/"), symlink("sbin", deepDir),
		dir("a/"), file("a/"+longPath(longest-len("a/")), "x"), file("b", "b")))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	now := time.Unix(0, 0)
	for _, c := range []struct {
		what string
		err  error
		want error
	}{
		{"AddFile at 4095 bytes through a symlink", r.AddFile("/sbin/x", 0o755, 0, 0, now, nil), nil},
		{"AddFile at 4096 bytes through a symlink", r.AddFile("/sbin/xy", 0o755, 0, 0, now, nil), ErrPathTooLong},
		{"AddFile with a 256-byte name", r.AddFile("/etc/"+nameOf(256), 0o644, 0, 0, now, nil), ErrNameTooLong},
		{"AddSymlink with a 4096-byte target", r.AddSymlink("/l", longPath(4096), now), ErrPathTooLong},
		{"Move a directory whose deepest entry would be 4096 bytes", r.Move("/a", "/ab"), ErrPathTooLong},
		{"Move to a 256-byte name", r.Move("/b", "/"+nameOf(256)), ErrNameTooLong},
		{"Move a directory whose deepest entry stays 4095 bytes", r.Move("/a", "/c"), nil},
	} {
		if !errors.Is(c.err, c.want) || (c.want == nil) != (c.err == nil) {
			t.Errorf("%s: %v, want %v", c.what, c.err, c.want)
		}
	}
	out, _ := writeAll(t, r)
	checkInvariants(t, readMembers(t, out))
}

// A path as deep as the limits allow converts in work linear in what the
// template holds. Building each member's path from the root again, as
// before, allocated one string per ancestor for each member written: at
// depth 2,046, about 900 more allocations per member than at depth 256.
// Now only archive/tar's handling of a long name grows, by a few
// allocations each time its length doubles (it quotes the name into
// buffers that double): about 9 from depth 256 to 2,046.
func TestDeepPathAllocs(t *testing.T) {
	ctx := context.Background()
	perMember := func(depth, stream int) float64 {
		layer := gzLayer(t, file(deepFile(depth), "x"))
		tmp := t.TempDir()
		var members int
		allocs := testing.AllocsPerRun(2, func() {
			r, err := Flatten(ctx, []Layer{layer}, Options{TempDir: tmp, Stream: stream})
			if err != nil {
				t.Fatal(err)
			}
			st, err := r.WriteTar(ctx, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			r.Close()
			members = st.Entries
		})
		if members != depth+2 {
			t.Fatalf("depth %d: %d members, want %d", depth, members, depth+2)
		}
		return allocs / float64(members)
	}
	for _, stream := range []int{-1, 1} {
		shallow, deep := perMember(256, stream), perMember(2046, stream)
		t.Logf("stream %d: %.1f allocations per member at depth 256, %.1f at depth 2046", stream, shallow, deep)
		if deep > shallow+24 {
			t.Errorf("stream %d: %.1f allocations per member at depth 2046, %.1f at depth 256: path work grows with depth", stream, deep, shallow)
		}
	}
}

// A path deeper than any template can hold is refused before the tree is
// built: the refusal costs the same whether it is 10,000 or 100,000
// directories deep (building the tree would cost a node, an inode and a
// map for each).
func TestDeepPathRefusedEarly(t *testing.T) {
	ctx := context.Background()
	allocs := func(depth int) float64 {
		layer := gzLayer(t, file(deepFile(depth), "x"))
		tmp := t.TempDir()
		return testing.AllocsPerRun(2, func() {
			if _, err := Flatten(ctx, []Layer{layer}, Options{TempDir: tmp, Stream: -1}); !errors.Is(err, ErrPathTooLong) {
				t.Fatalf("depth %d: %v, want ErrPathTooLong", depth, err)
			}
		})
	}
	a, b := allocs(10000), allocs(100000)
	t.Logf("refusal: %.0f allocations at depth 10,000, %.0f at depth 100,000", a, b)
	if b > a+32 {
		t.Errorf("refusing a path 100,000 deep takes %.0f allocations, 10,000 deep %.0f", b, a)
	}
}

// BenchmarkDeepPath converts paths as deep as the limits allow, in the
// shapes whose cost used to grow with the square or cube of the depth.
// ns/path-byte, the time per byte of member names read and written, stays
// flat as the depth grows: path work is linear.
//
//   - write: one file at the depth, streamed: every ancestor is written
//     (the names alone are quadratic in the depth, the work was cubic).
//   - upper: 512 files at the depth, streamed, under an upper layer with
//     16 whiteouts elsewhere (each file used to hash every ancestor path;
//     16 makes the maps large enough to hash at all).
//   - hardlink: 1024 hardlinks to a file at the depth that their own layer
//     whites out with 16 others (likewise).
func BenchmarkDeepPath(b *testing.B) {
	ctx := context.Background()
	tmp := b.TempDir()
	for _, shape := range []string{"write", "upper", "hardlink"} {
		for _, depth := range []int{128, 512, 2044} {
			var lower, upper []te
			opts := Options{TempDir: tmp, Stream: 1}
			switch shape {
			case "write":
				lower = []te{file(deepFile(depth), "x")}
			case "upper":
				for i := range 512 {
					lower = append(lower, file(fmt.Sprintf("%s%03d", deepFile(depth), i), "x"))
				}
				for i := range 16 {
					upper = append(upper, whiteout(fmt.Sprintf(".wh.elsewhere%02d", i)))
				}
			case "hardlink":
				lower = []te{file(deepFile(depth), "x")}
				upper = []te{whiteout(".wh.d")}
				for i := range 16 {
					lower = append(lower, file(fmt.Sprintf("x%02d", i), "x"))
					upper = append(upper, whiteout(fmt.Sprintf(".wh.x%02d", i)))
				}
				for i := range 1024 {
					upper = append(upper, hardlink(fmt.Sprint("h", i), deepFile(depth)))
				}
				opts.Stream = 2
			}
			layers := []Layer{gzLayer(b, lower...)}
			if upper != nil {
				layers = append(layers, gzLayer(b, upper...))
			}
			// Bytes of member names in and out.
			pathBytes := 0
			for _, e := range append(lower, upper...) {
				pathBytes += len(e.Name) + len(e.Link)
			}
			ms, err := convert(b, opts, layers...)
			if err != nil {
				b.Fatal(err)
			}
			for _, m := range ms {
				pathBytes += len(m.name) + len(m.link)
			}
			b.Run(fmt.Sprintf("%s/depth=%d", shape, depth), func(b *testing.B) {
				for b.Loop() {
					r, err := Flatten(ctx, layers, opts)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := r.WriteTar(ctx, io.Discard); err != nil {
						b.Fatal(err)
					}
					r.Close()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(pathBytes), "ns/path-byte")
			})
		}
	}
}
