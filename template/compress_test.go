package template

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/ulikunitz/xz"

	"github.com/pve-image/pve-image/tests/testenv"
)

// TestXZProgram: with xz installed, .tar.xz templates are xz's
// multi-threaded output, the same bytes whatever the number of threads,
// and the encoder named in cache keys is that xz.
func TestXZProgram(t *testing.T) {
	prog, version := xzTool()
	if prog == "" {
		testenv.Missing(t, "xz 5.4 or later not installed (Debian package xz-utils)")
	}
	if enc := XZ.Encoder(); !strings.Contains(enc, version) || !strings.HasPrefix(version, "xz (XZ Utils) ") {
		t.Errorf("encoder %q does not name %q", enc, version)
	}
	data := []byte(text(7, 4<<20)) // more than one block of 3 MiB at level 1
	var buf bytes.Buffer
	w, err := XZ.NewWriter(&buf, 1)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 100000 {
		w.Write(data[off:min(off+100000, len(data))])
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, threads := range []string{"2", "3"} {
		cmd := exec.Command(prog, "-1", "-c", "--threads="+threads)
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, buf.Bytes()) {
			t.Errorf("xz with %s threads writes other bytes than the template's", threads)
		}
	}
	r, err := xz.NewReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if back, err := io.ReadAll(r); err != nil || !bytes.Equal(back, data) {
		t.Errorf("round trip: %v", err)
	}
}

// TestXZProgramFails: when the template cannot be written (a full disk),
// that is the error, from the write that meets it and from Close, not the
// broken pipe xz then dies of.
func TestXZProgramFails(t *testing.T) {
	prog, _ := xzTool()
	if prog == "" {
		testenv.Missing(t, "xz 5.4 or later not installed (Debian package xz-utils)")
	}
	w, err := startXZ(prog, &fullDisk{room: 100000}, 1)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(text(9, 8<<20))
	var werr error
	for off := 0; off < len(data) && werr == nil; off += 1 << 20 {
		_, werr = w.Write(data[off : off+1<<20])
	}
	cerr := w.Close()
	if werr != nil && !errors.Is(werr, syscall.ENOSPC) {
		t.Errorf("write: got %v, want ENOSPC", werr)
	}
	if !errors.Is(cerr, syscall.ENOSPC) {
		t.Errorf("close: got %v, want ENOSPC", cerr)
	}
}

// fullDisk takes room bytes, then fails as a full disk does.
type fullDisk struct{ room int }

func (w *fullDisk) Write(p []byte) (int, error) {
	if len(p) > w.room {
		return 0, syscall.ENOSPC
	}
	w.room -= len(p)
	return len(p), nil
}

// TestXZEnvironment: XZ_OPT and XZ_DEFAULTS, which change xz's output,
// do not reach it: the bytes stay those the cache key names.
func TestXZEnvironment(t *testing.T) {
	prog, version := xzTool()
	if prog == "" {
		testenv.Missing(t, "xz 5.4 or later not installed (Debian package xz-utils)")
	}
	if !strings.Contains(version, "liblzma") {
		t.Errorf("version %q does not name liblzma", version)
	}
	data := []byte(text(8, 3<<20))
	compress := func() []byte {
		var buf bytes.Buffer
		w, err := startXZ(prog, &buf, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	want := compress()
	for _, env := range [][2]string{
		{"XZ_OPT", "-e"},
		{"XZ_OPT", "--block-size=65536"},
		{"XZ_OPT", "--check=sha256"},
		{"XZ_DEFAULTS", "--memlimit-compress=1MiB"},
	} {
		t.Run(env[0]+"="+env[1], func(t *testing.T) {
			t.Setenv(env[0], env[1])
			if got := compress(); !bytes.Equal(got, want) {
				t.Errorf("the output changed")
			}
		})
	}
}
