package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		write   func(io.Writer) error
		want    string // the file's content after; "" when it must not exist
		wantErr error
	}{
		{"whole", func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }, "new", nil},
		{"failed half-way", func(w io.Writer) error { io.WriteString(w, "ne"); return boom }, "", boom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			err := Write(path, tc.write)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Write: %v, want %v", err, tc.wantErr)
			}
			b, rerr := os.ReadFile(path)
			if tc.want == "" && !os.IsNotExist(rerr) || tc.want != "" && string(b) != tc.want {
				t.Errorf("file holds %q (%v), want %q", b, rerr, tc.want)
			}
			if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() != 0o644 {
				t.Errorf("mode %v", fi.Mode())
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".f.tmp-*")); len(left) != 0 {
				t.Errorf("left %v", left)
			}
		})
	}
}
