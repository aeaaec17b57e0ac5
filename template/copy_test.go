package template

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pve-image/pve-image/cache"
)

func TestCopyFile(t *testing.T) {
	body := "template bytes"
	sum := sha256.Sum256([]byte(body))
	good := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		name     string
		sha      string
		wantErr  error
		wantDst  string // content of dst afterwards
		existing string // dst before the copy
	}{
		{"checked", good, nil, body, ""},
		{"unchecked", "", nil, body, ""},
		{"replaces", good, nil, body, "old"},
		{"damaged", "00" + good[2:], cache.ErrDigestMismatch, "old", "old"},
		{"damaged, nothing before", "00" + good[2:], cache.ErrDigestMismatch, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(t.TempDir(), "src.tar.zst")
			os.WriteFile(src, []byte(body), 0o644)
			dst := filepath.Join(dir, "app.tar.zst")
			if tc.existing != "" {
				os.WriteFile(dst, []byte(tc.existing), 0o644)
			}
			err := CopyFile(context.Background(), src, dst, tc.sha)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("CopyFile: %v, want %v", err, tc.wantErr)
			}
			b, _ := os.ReadFile(dst)
			if string(b) != tc.wantDst {
				t.Errorf("dst holds %q, want %q", b, tc.wantDst)
			}
			des, _ := os.ReadDir(dir)
			if n := len(des); n != map[bool]int{true: 1, false: 0}[tc.wantDst != ""] {
				t.Errorf("%d files beside dst", n)
			}
		})
	}
}

// TestCopyFileCleansDeadTemporaries: the temporary files of copies whose
// process died go at the next copy into the directory; a live copy's, and
// files that are not such temporaries, stay.
func TestCopyFileCleansDeadTemporaries(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(t.TempDir(), "src.tar")
	os.WriteFile(src, []byte("tpl"), 0o644)
	live, err := cache.CreateWorkFile(dir, ".other_1_amd64.tar.gz.tmp-*")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	dead := filepath.Join(dir, ".app_1_amd64.tar.zst.tmp-123")
	os.WriteFile(dead, []byte("half"), 0o644)
	keep := []string{live.Name(), filepath.Join(dir, ".notes.tmp-123"), filepath.Join(dir, "app.tar.zst.tmp-1"), filepath.Join(dir, ".app.tar.zst.tmp-x")}
	for _, p := range keep[1:] {
		os.WriteFile(p, nil, 0o644)
	}
	if err := CopyFile(context.Background(), src, filepath.Join(dir, "app.tar"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("a dead copy's temporary file stays: %v", err)
	}
	for _, p := range keep {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
