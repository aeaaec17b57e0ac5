package export

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVzdump reads arbitrary bytes as a vzdump archive, volumes included,
// and writes what it read as the one-layer export does: nothing panics,
// and what is accepted holds only members under the root.
func FuzzVzdump(f *testing.F) {
	conf := testConf + "mp0: local:100/vm-100-disk-1.raw,mp=/data,backup=1,size=1G\n"
	tree := []ent{dir("./"), dir("./etc/"), file("./etc/motd", "hi"), hardlink("./etc/motd2", "./etc/motd"),
		symlink("./bin", "usr/bin"), dir("./data/"), file("./data/db", "rows")}
	f.Add(vzdump(f, conf, tree...))
	f.Add(gz(vzdump(f, conf, tree...)))
	f.Add(zst(f, vzdump(f, testConf, tree...)))
	f.Add(vzdump(f, conf, dir("./"), file("./../x", "x")))
	f.Add(vzdump(f, conf, dir("./"), symlink("./data", "/"), file("./data/etc/passwd", "x")))
	seeds, _ := filepath.Glob("testdata/*.tar*")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx := context.Background()
		tr, err := readArchive(ctx, "fuzz.tar", bytes.NewReader(b), readOptions{TempDir: t.TempDir(), Volumes: true, MaxSize: 1 << 20, MaxEntries: 1000})
		if err != nil {
			return
		}
		defer tr.Close()
		var out bytes.Buffer
		if _, err := tr.rootfs.WriteTar(ctx, &out); err != nil {
			t.Fatalf("an accepted archive's tree cannot be written: %v", err)
		}
		for _, m := range layerMembers(t, out.Bytes()) {
			if len(m) < 2 || m[:2] != "./" || bytes.Contains([]byte(m), []byte("/../")) {
				t.Fatalf("member %q outside the root", m)
			}
		}
		for _, m := range tr.mounts {
			if m.rootfs != nil {
				if _, err := writeVolume(ctx, m, io.Discard, tr.conf.mtime, t.TempDir()); err != nil {
					t.Fatalf("an accepted volume cannot be written: %v", err)
				}
			}
		}
	})
}
