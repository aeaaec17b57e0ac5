package export

import (
	"archive/tar"
	"bytes"
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// baseTree is the template of the diff tests: what the container was
// made from.
func baseTree() []ent {
	return []ent{
		dir("./"),
		dir("./bin/"), file("./bin/tool", "tool").perm(0o755), hardlink("./bin/tool2", "./bin/tool"),
		dir("./data/"), file("./data/seed", "seed"),
		dir("./etc/"), file("./etc/motd", "hello"), file("./etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
		dir("./opt/"), dir("./opt/cfg/"), file("./opt/cfg/a", "a"), file("./opt/cfg/b", "b"),
		dir("./opt/keep/"), file("./opt/keep/x", "x"), dir("./opt/keep/sub/"), file("./opt/keep/sub/y", "y"),
		dir("./tmp/"), file("./tmp/shipped", "s"),
		dir("./usr/"), dir("./usr/share/"), file("./usr/share/old.txt", "old"), file("./usr/share/other.txt", "other"),
	}
}

// edit applies changes to a tree: an entry replaces the one of its name
// (or is added); a name in drop removes it and what is below it.
func edit(tree []ent, drop []string, set ...ent) []ent {
	var out []ent
	for _, e := range tree {
		p := treePath(e.name)
		gone := false
		for _, d := range drop {
			if p == d || strings.HasPrefix(p, d+"/") {
				gone = true
			}
		}
		for _, s := range set {
			if treePath(s.name) == p {
				gone = true
			}
		}
		if !gone {
			out = append(out, e)
		}
	}
	out = append(out, set...)
	sort.SliceStable(out, func(i, j int) bool { return compareTree(treePath(out[i].name), treePath(out[j].name)) < 0 })
	return out
}

// capability is a security.capability value (VFS_CAP_REVISION_2,
// cap_net_raw): binary, with NULs.
const capability = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

const volumeConf = testConf + "mp0: local:100/vm-100-disk-1.raw,mp=/data,backup=1,size=1G\n"

// TestChanges: the layer of changes over the template gives back the
// container's tree, name for name (what is left out of it aside: that is
// the template's still), and holds only what changed.
func TestChanges(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drop    []string
		set     []ent
		wantIn  []string // members of the layer
		wantOut []string // not members of the layer
	}{
		{name: "unchanged"},
		{name: "file added", set: []ent{dir("./srv/"), file("./srv/new.txt", "new")},
			wantIn: []string{"./srv/", "./srv/new.txt"}, wantOut: []string{"./etc/motd", "./bin/tool"}},
		{name: "content changed", set: []ent{file("./etc/motd", "changed")}, wantIn: []string{"./etc/", "./etc/motd"}, wantOut: []string{"./etc/passwd"}},
		{name: "mode changed", set: []ent{file("./etc/passwd", "root:x:0:0::/root:/bin/sh\n").perm(0o600)}, wantIn: []string{"./etc/passwd"}, wantOut: []string{"./etc/motd"}},
		{name: "owner changed", set: []ent{file("./etc/motd", "hello").owner(1000, 1000)}, wantIn: []string{"./etc/motd"}},
		{name: "mtime changed", set: []ent{file("./etc/motd", "hello").at(fixtureTime + 5)}, wantIn: []string{"./etc/motd"}},
		{name: "xattr added", set: []ent{file("./etc/motd", "hello").xattr("user.origin", "export-test")}, wantIn: []string{"./etc/motd"}},
		{name: "capability added", set: []ent{file("./bin/ping", "ping").perm(0o755).xattr("security.capability", capability)}, wantIn: []string{"./bin/ping"}},
		{name: "capability on a hardlinked file", set: []ent{file("./bin/tool", "tool").perm(0o755).xattr("security.capability", capability[:6]+"\x01"+capability[7:]),
			hardlink("./bin/tool2", "./bin/tool")}, wantIn: []string{"./bin/tool"}},
		{name: "capability and name=value lookalikes", set: []ent{file("./etc/motd", "hello").xattr("user.a", "b\x00user.c=d").xattr("user.e", "")},
			wantIn: []string{"./etc/motd"}},
		{name: "symlink hardlinked", set: []ent{symlink("./etc/link", "/srv"), hardlink("./usr/share/link2", "./etc/link")},
			wantIn: []string{"./etc/link", "./usr/share/link2"}},
		{name: "fifo hardlinked", set: []ent{{name: "./etc/fifo", typ: tar.TypeFifo, mode: 0o600}, hardlink("./usr/share/fifo2", "./etc/fifo")},
			wantIn: []string{"./etc/fifo", "./usr/share/fifo2"}},
		{name: "file deleted", drop: []string{"usr/share/old.txt"}, wantIn: []string{"./usr/share/.wh.old.txt"}, wantOut: []string{"./usr/share/other.txt"}},
		{name: "directory deleted", drop: []string{"opt/keep"}, wantIn: []string{"./opt/.wh.keep"}, wantOut: []string{"./opt/keep/.wh.x", "./opt/cfg/a"}},
		{name: "directory replaced", drop: []string{"opt/cfg"}, set: []ent{dir("./opt/cfg/").at(fixtureTime + 9), file("./opt/cfg/c", "c")},
			wantIn: []string{"./opt/cfg/", "./opt/cfg/.wh..wh..opq", "./opt/cfg/c"}, wantOut: []string{"./opt/cfg/.wh.a", "./opt/cfg/.wh.b"}},
		{name: "directory emptied, kept", drop: []string{"opt/cfg/a", "opt/cfg/b"},
			wantIn: []string{"./opt/cfg/.wh..wh..opq"}},
		{name: "file becomes a directory", set: []ent{dir("./etc/motd/"), file("./etc/motd/part", "p")}, wantIn: []string{"./etc/motd/", "./etc/motd/part"}},
		{name: "directory becomes a symlink", drop: []string{"opt/keep"}, set: []ent{symlink("./opt/keep", "/srv")},
			wantIn: []string{"./opt/keep"}, wantOut: []string{"./opt/.wh.keep", "./opt/keep/.wh.x"}},
		{name: "hardlink to an unchanged file", set: []ent{hardlink("./etc/passwd.bak", "./etc/passwd")},
			wantIn: []string{"./etc/passwd.bak"}, wantOut: []string{"./etc/passwd"}},
		{name: "hardlink broken", set: []ent{file("./bin/tool2", "tool").perm(0o755)}, wantIn: []string{"./bin/tool2"}},
		{name: "hardlinked file changed", set: []ent{file("./bin/tool", "new tool").perm(0o755), hardlink("./bin/tool2", "./bin/tool")},
			wantIn: []string{"./bin/tool", "./bin/tool2"}},
		{name: "left out: runtime files, vzdump's excludes, the volume",
			drop: []string{"tmp/shipped"},
			set: []ent{file("./etc/hostname", "web\n"), file("./etc/hosts", "127.0.0.1 web\n"), dir("./run/"), dir("./run/pve-image/"),
				file("./run/pve-image/exit.json", "{}"), file("./data/note", "n"), dir("./var/"), dir("./var/run/"), file("./var/run/x.pid", "1"),
				dir("./lost+found/")},
			wantIn:  []string{"./run/", "./var/", "./var/run/"},
			wantOut: []string{"./etc/hostname", "./etc/hosts", "./tmp/.wh.shipped", "./run/pve-image/", "./data/note", "./var/run/x.pid", "./lost+found/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			tmpl := writeTar(t, flatten(t, mkTar(t, baseTree()...)))
			ct := edit(baseTree(), tc.drop, tc.set...)
			tr, err := readArchive(ctx, "vzdump-lxc-100-2024_01_01-00_00_00.tar", bytes.NewReader(vzdump(t, volumeConf, ct...)), readOptions{TempDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			bl, err := readBaseline(ctx, bytes.NewReader(tmpl))
			if err != nil {
				t.Fatal(err)
			}
			sf, err := tempFile(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer sf.Close()
			c := &changes{base: bl, mounts: []string{"data"}, spill: &spill{f: sf}}
			if err := c.scan(ctx, tr.rootfs); err != nil {
				t.Fatal(err)
			}
			entries, err := c.plan()
			if err != nil {
				t.Fatal(err)
			}
			var layer bytes.Buffer
			if err := c.writeLayer(&layer, entries, time.Unix(fixtureTime, 0)); err != nil {
				t.Fatal(err)
			}
			members := layerMembers(t, layer.Bytes())
			for _, e := range tc.set {
				if v, ok := e.xattrs["security.capability"]; ok {
					if got := paxOf(t, layer.Bytes(), e.name)["SCHILY.xattr.security.capability"]; got != v {
						t.Errorf("the layer's %s has security.capability %q, the container %q", e.name, got, v)
					}
				}
			}
			if tc.name == "unchanged" && len(members) != 0 {
				t.Errorf("the layer of no change holds %q", members)
			}
			for _, w := range tc.wantIn {
				if !slices.Contains(members, w) {
					t.Errorf("the layer lacks %s: %q", w, members)
				}
			}
			for _, w := range tc.wantOut {
				if slices.Contains(members, w) {
					t.Errorf("the layer holds %s: %q", w, members)
				}
			}

			// The template with the layer on top is the container, but for
			// what is left out, which is the template's.
			result := writeTar(t, flatten(t, tmpl, layer.Bytes()))
			left := func(p string) bool { return excluded(p, []string{"data"}) }
			kept := func(p string) bool { return !left(p) }
			want := listing(t, writeTar(t, flatten(t, mkTar(t, ct...))), left)
			if got := listing(t, result, left); !slices.Equal(got, want) {
				t.Errorf("template + layer differs from the container:\n got %s\nwant %s\nlayer %q", strings.Join(got, "\n     "), strings.Join(want, "\n     "), members)
			}
			if got, want := listing(t, result, kept), listing(t, tmpl, kept); !slices.Equal(got, want) {
				t.Errorf("what is left out is not the template's:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestCompareTree: the order imgconv writes trees in.
func TestCompareTree(t *testing.T) {
	paths := []string{"a-b", "a/b", "a", "", "a/.wh.c", "a/\x00.wh..wh..opq", "b", "a/b/c"}
	slices.SortFunc(paths, compareTree)
	want := []string{"", "a", "a/\x00.wh..wh..opq", "a/.wh.c", "a/b", "a/b/c", "a-b", "b"}
	if !slices.Equal(paths, want) {
		t.Errorf("got %q, want %q", paths, want)
	}
}

// paxOf is the PAX records of member name of a tar.
func paxOf(t *testing.T, b []byte, name string) map[string]string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no member %s: %v", name, err)
		}
		if h.Name == name {
			return h.PAXRecords
		}
	}
}
