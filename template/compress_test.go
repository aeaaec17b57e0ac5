package template

import (
	"bytes"
	"io"
	"os/exec"
	"strings"
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

// TestXZProgramFails: xz's complaint comes back as the writer's error.
func TestXZProgramFails(t *testing.T) {
	prog, _ := xzTool()
	if prog == "" {
		testenv.Missing(t, "xz 5.4 or later not installed (Debian package xz-utils)")
	}
	w, err := startXZ(prog, failingWriter{}, 6)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("x"), 1<<20))
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "xz") {
		t.Errorf("got %v, want xz's error", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }
