package export

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/klauspost/compress/zstd"

	"github.com/pve-image/pve-image/proxmox"
)

func zst(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw, err := zstd.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// TestReadArchiveRefuses: a hostile or foreign archive is refused as a
// hostile layer is, naming the archive and the member.
func TestReadArchiveRefuses(t *testing.T) {
	root := dir("./")
	for _, tc := range []struct {
		name    string
		file    string
		archive []byte
		want    []string
		is      error
	}{
		{name: "climbs out", archive: vzdump(t, testConf, root, file("./../../etc/cron.d/evil", "x")),
			want: []string{`member "./../../etc/cron.d/evil"`, "escapes the root"}},
		{name: "absolute name", archive: vzdump(t, testConf, root, file("/etc/shadow", "x")),
			want: []string{`member "/etc/shadow"`, "absolute member name"}},
		{name: "hardlink out of the root", archive: vzdump(t, testConf, root, hardlink("./etc/shadow", "../../../etc/shadow")),
			want: []string{`member "./etc/shadow"`, "escapes the root"}},
		{name: "written through a symlink", archive: vzdump(t, testConf, root, symlink("./escape", "/"), file("./escape/etc/passwd", "x")),
			want: []string{`member "./escape/etc/passwd"`, "through a symbolic link"}},
		{name: "id above 65535", archive: vzdump(t, testConf, root, file("./f", "x").owner(100000, 100000)),
			want: []string{`member "./f"`, "65536"}},
		{name: "name too long", archive: vzdump(t, testConf, root, file("./"+strings.Repeat("n", 256), "x")),
			want: []string{"255 bytes"}},
		{name: "whiteout name", archive: vzdump(t, testConf, root, file("./etc/.wh.passwd", "")),
			want: []string{`member "./etc/.wh.passwd"`, "reserve for deletions"}},
		{name: "config not first", archive: mkTar(t, root, file("./etc/vzdump/pct.conf", testConf)),
			want: []string{`member "./"`, "comes before ./etc/vzdump/pct.conf"}},
		{name: "no config", archive: mkTar(t), want: []string{"no ./etc/vzdump/pct.conf"}},
		{name: "OpenVZ", archive: mkTar(t, file("./etc/vzdump/vps.conf", "x")), want: []string{"OpenVZ"}},
		{name: "lzo", archive: append([]byte{0x89, 'L', 'Z', 'O', 0, '\r', '\n', 0x1a, '\n'}, make([]byte, 64)...), is: ErrLZO,
			want: []string{"lzo", "--compress zstd"}},
		{name: "lzo by name", file: "vzdump-lxc-100-2024_01_01-00_00_00.tar.lzo", archive: vzdump(t, testConf, root), is: ErrLZO},
		{name: "a VM's", file: "vzdump-qemu-100-2024_01_01-00_00_00.vma.zst", archive: []byte("VMA"), want: []string{"virtual machine"}},
		{name: "truncated", archive: vzdump(t, testConf, root, file("./big", strings.Repeat("x", 100000)))[:9000],
			want: []string{`member "./big"`, "truncated"}},
		{name: "truncated gzip", archive: gz(vzdump(t, testConf, root, file("./big", strings.Repeat("x", 100000))))[:300],
			want: []string{"truncated"}},
		{name: "not an archive", archive: []byte("hello, this is not a tar file at all, but it is long enough to be looked at"),
			want: []string{"not a readable tar archive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.file
			if name == "" {
				name = "vzdump-lxc-100-2024_01_01-00_00_00.tar"
			}
			path := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(path, tc.archive, 0o644); err != nil {
				t.Fatal(err)
			}
			e := &Exporter{}
			_, err := e.Archive(context.Background(), path, Request{To: "oci-archive:" + filepath.Join(t.TempDir(), "out.tar")})
			if err == nil {
				t.Fatal("exported")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), "archive "+path) {
				t.Errorf("the error does not name the archive: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

// TestArchiveOneLayer: a container not made from a pve-image template is
// one layer holding its root file system (vzdump's members left out, and
// what a layer of changes leaves out: the files rewritten at every start,
// what vzdump excludes, a stale image.json — a hardlink to one of them
// keeps the file), with its config recorded and its program, in any
// compression vzdump writes; the same archive gives the same digest and
// bytes twice.
func TestArchiveOneLayer(t *testing.T) {
	conf := testConf + "entrypoint: /usr/bin/app --serve\nmp0: local:100/vm-100-disk-1.raw,mp=/srv/data,backup=1,size=2G\n" +
		"lxc.environment.runtime: MODE=prod\nlxc.init.cwd: /srv\n"
	tree := []ent{dir("./"), dir("./etc/"), file("./etc/hostname", "web\n"), file("./etc/hosts", "127.0.0.1 web\n"),
		hardlink("./etc/hosts.orig", "./etc/hosts"), hardlink("./etc/hosts.two", "./etc/hosts"), dir("./etc/pve-image/"),
		file("./etc/pve-image/image.json", `{"repository":"registry.example.org/app","manifestDigest":"sha256:1111"}`),
		file("./etc/resolv.conf", "nameserver 10.9.9.9\n"), dir("./srv/"), dir("./srv/data/"),
		file("./srv/data/db", "rows"), dir("./tmp/"), file("./tmp/scratch", "s"), dir("./usr/"), dir("./usr/bin/"), file("./usr/bin/app", "app").perm(0o755)}
	plain := vzdump(t, conf, tree...)
	for _, tc := range []struct {
		name    string
		archive []byte
		volumes bool
	}{
		{"tar", plain, false},
		{"tar.gz", gz(plain), false},
		{"tar.zst", zst(t, plain), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "vzdump-lxc-100-2024_01_01-00_00_00."+tc.name)
			os.WriteFile(path, tc.archive, 0o644)
			e := &Exporter{}
			var digests []string
			var files [][]byte
			var res0 *Result
			for i := range 2 {
				out := filepath.Join(dir, "out"+string(rune('0'+i))+".tar")
				res, err := e.Archive(context.Background(), path, Request{To: "oci-archive:" + out + ":v1", Volumes: tc.volumes})
				if err != nil {
					t.Fatal(err)
				}
				digests = append(digests, res.Digest)
				res0 = res
				b, _ := os.ReadFile(out)
				files = append(files, b)
				wantLayers := 1
				if tc.volumes {
					wantLayers = 2
				}
				if res.Source != "" || len(res.Layers) != wantLayers {
					t.Fatalf("result %+v", res)
				}
				if !tc.volumes && !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "give --volumes") }) {
					t.Errorf("notes %q do not say the volume's data was left out", res.Notes)
				}
			}
			if digests[0] != digests[1] || !bytes.Equal(files[0], files[1]) {
				t.Errorf("two exports of one archive differ: %s, %s", digests[0], digests[1])
			}
			img := readOCIArchive(t, filepath.Join(dir, "out0.tar"))
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Config.Entrypoint; !slices.Equal(got, []string{"/usr/bin/app", "--serve"}) {
				t.Errorf("entrypoint %q", got)
			}
			if !slices.Contains(cfg.Config.Env, "MODE=prod") || cfg.Config.WorkingDir != "/srv" {
				t.Errorf("env %q, working dir %q", cfg.Config.Env, cfg.Config.WorkingDir)
			}
			if cfg.Created.Unix() != fixtureTime+100 {
				t.Errorf("created %s, want the time vzdump wrote pct.conf", cfg.Created)
			}
			rec, ok, err := ReadRecorded(cfg.Config.Labels)
			if err != nil || !ok {
				t.Fatalf("labels %v: %v", cfg.Config.Labels, err)
			}
			if rec.Config["memory"] != "256" || rec.Config["cores"] != "2" || rec.Config["rootfs.size"] != "4G" || rec.Source != "" {
				t.Errorf("recorded %+v", rec)
			}
			if len(rec.Nets) != 1 || strings.Contains(rec.Nets[0], "hwaddr") || !strings.Contains(rec.Nets[0], "bridge=vmbr0") {
				t.Errorf("nets %q", rec.Nets)
			}
			if len(rec.Mounts) != 1 || rec.Mounts[0].Value != "mp=/srv/data,backup=1,size=2G" || (rec.Mounts[0].Layer != "") != tc.volumes {
				t.Errorf("mounts %+v", rec.Mounts)
			}
			ls, _ := img.Layers()
			rc, _ := ls[0].Uncompressed()
			defer rc.Close()
			var buf bytes.Buffer
			buf.ReadFrom(rc)
			members := layerMembers(t, buf.Bytes())
			for _, m := range members {
				if strings.HasPrefix(m, "./etc/vzdump") || strings.HasPrefix(m, "./srv/data/db") {
					t.Errorf("the root file system's layer holds %s", m)
				}
			}
			for _, m := range []string{"./etc/hostname", "./etc/hosts", "./etc/resolv.conf", "./etc/pve-image/image.json", "./tmp/scratch"} {
				if slices.Contains(members, m) {
					t.Errorf("the root file system's layer holds %s: %q", m, members)
				}
			}
			if !slices.Contains(members, "./usr/bin/app") || !slices.Contains(members, "./tmp/") {
				t.Errorf("the layer lacks the container's files: %q", members)
			}
			// The other names of /etc/hosts keep its content, as one file.
			lines := listing(t, writeTar(t, flatten(t, buf.Bytes())), nil)
			want := "names=etc/hosts.orig,etc/hosts.two"
			if !slices.ContainsFunc(lines, func(l string) bool {
				return strings.HasPrefix(l, "etc/hosts.orig 0 0644") && strings.Contains(l, "size=14") && strings.HasSuffix(l, want)
			}) {
				t.Errorf("the hardlinks to /etc/hosts lost their file: %q", lines)
			}
			if !slices.ContainsFunc(res0.Notes, func(n string) bool { return strings.Contains(n, "holds no pve-image record") }) {
				t.Errorf("notes %q do not say why image.json was not trusted", res0.Notes)
			}
			if tc.volumes {
				rc, _ := ls[1].Uncompressed()
				defer rc.Close()
				var vb bytes.Buffer
				vb.ReadFrom(rc)
				if got, want := layerMembers(t, vb.Bytes()), []string{"./srv/data/", "./srv/data/.wh..wh..opq", "./srv/data/db"}; !slices.Equal(got, want) {
					t.Errorf("volume layer %q, want %q", got, want)
				}
			}
		})
	}
}

// TestArchiveNestedVolumes: with a volume mounted inside another (/srv and
// /srv/db), the outer volume's layer comes first, so that its opaque
// marker does not hide the inner volume's data; converting the image gives
// both volumes' files.
func TestArchiveNestedVolumes(t *testing.T) {
	conf := testConf + "mp0: local:100/vm-100-disk-1.raw,mp=/srv,backup=1,size=2G\nmp1: local:100/vm-100-disk-2.raw,mp=/srv/db,backup=1,size=2G\n"
	tree := []ent{dir("./"), dir("./etc/"), dir("./srv/"), file("./srv/outer.txt", "o"), dir("./srv/db/"), file("./srv/db/rows", "rows")}
	dir := t.TempDir()
	path := filepath.Join(dir, "vzdump-lxc-100-2024_01_01-00_00_00.tar")
	os.WriteFile(path, vzdump(t, conf, tree...), 0o644)
	out := filepath.Join(dir, "out.tar")
	res, err := (&Exporter{}).Archive(context.Background(), path, Request{To: "oci-archive:" + out, Volumes: true})
	if err != nil {
		t.Fatal(err)
	}
	var what []string
	for _, l := range res.Layers {
		what = append(what, l.What)
	}
	if want := []string{"root file system", "volume mp0 (/srv)", "volume mp1 (/srv/db)"}; !slices.Equal(what, want) {
		t.Errorf("layers %q, want %q", what, want)
	}
	ls, _ := readOCIArchive(t, out).Layers()
	var tars [][]byte
	for _, l := range ls {
		rc, _ := l.Uncompressed()
		var b bytes.Buffer
		b.ReadFrom(rc)
		rc.Close()
		tars = append(tars, b.Bytes())
	}
	got := listing(t, writeTar(t, flatten(t, tars...)), nil)
	for _, w := range []string{"srv/outer.txt 0 0644", "srv/db/rows 0 0644"} {
		if !slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, w) }) {
			t.Errorf("the converted image lacks %s:\n%s", w, strings.Join(got, "\n"))
		}
	}
}

// TestPickBackupStorage: the default backup storage is the first active
// one that takes backups as files: never a Proxmox Backup Server.
func TestPickBackupStorage(t *testing.T) {
	pbs := proxmox.StorageInfo{Name: "pbs", Type: "pbs", Content: "backup", Active: 1}
	dirSt := proxmox.StorageInfo{Name: "local", Type: "dir", Content: "iso,vztmpl,backup", Active: 1}
	off := proxmox.StorageInfo{Name: "nfs", Type: "nfs", Content: "backup", Active: 0}
	for _, tc := range []struct {
		name string
		sts  []proxmox.StorageInfo
		want string
		err  string
	}{
		{"pbs first", []proxmox.StorageInfo{pbs, dirSt}, "local", ""},
		{"pbs only", []proxmox.StorageInfo{off, pbs}, "", "only to Proxmox Backup Server (pbs)"},
		{"none", []proxmox.StorageInfo{off}, "", "no active storage for backups"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickBackupStorage("pve1", tc.sts)
			if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Errorf("got %q, %v; want %q, %q", got, err, tc.want, tc.err)
			}
		})
	}
}

// TestWriteLayout: a new oci:DIR appears whole or not at all; exporting
// the same image again without a tag adds no second index entry, with a
// tag replaces the tag's; a directory that is no layout is refused.
func TestWriteLayout(t *testing.T) {
	tmp := t.TempDir()
	path := filepath.Join(tmp, "vzdump-lxc-100-2024_01_01-00_00_00.tar")
	os.WriteFile(path, vzdump(t, testConf, dir("./"), file("./f", "x")), 0o644)
	e := &Exporter{}
	to := filepath.Join(tmp, "layout")
	for _, ref := range []string{"oci:" + to, "oci:" + to, "oci:" + to + ":v1", "oci:" + to + ":v1"} {
		if _, err := e.Archive(context.Background(), path, Request{To: ref}); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(to)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := idx.IndexManifest()
	if len(m.Manifests) != 2 || m.Manifests[0].Annotations[refNameAnnotation] != "" || m.Manifests[1].Annotations[refNameAnnotation] != "v1" {
		t.Errorf("index %+v: want one untagged entry and one tagged v1", m.Manifests)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 2 {
		t.Errorf("left beside the layout: %v", ents)
	}

	// A failure leaves no layout: the image's config cannot be read.
	bad := filepath.Join(tmp, "bad")
	if err := writeLayout(bad, "", newBrokenImage(t)); err == nil {
		t.Fatal("wrote a broken image")
	}
	if _, err := os.Stat(bad); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed export left %s: %v", bad, err)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 2 {
		t.Errorf("a failed export left %v", ents)
	}

	other := filepath.Join(tmp, "other")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "mine"), []byte("x"), 0o644)
	if _, err := e.Archive(context.Background(), path, Request{To: "oci:" + other}); err == nil || !strings.Contains(err.Error(), "not an OCI image layout") {
		t.Errorf("export into a directory that is no layout: %v", err)
	}
}

// brokenImage fails to hand out its layers.
type brokenImage struct{ v1.Image }

func newBrokenImage(t *testing.T) brokenImage {
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	return brokenImage{img}
}

func (brokenImage) Layers() ([]v1.Layer, error) { return nil, errors.New("no layers today") }
