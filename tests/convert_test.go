package tests

import (
	"archive/tar"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	. "github.com/pve-image/pve-image/tests/testenv"
)

var amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}

// rulesImage exercises the layer rules across gzip, zstd and uncompressed
// layers; rulesTree is what Proxmox's extraction of its template must give.
func rulesImage(t *testing.T) v1.Image {
	cap := "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	l1 := Layer(t,
		Dir("./"),
		Dir("etc/"), File("etc/os-release", "ID=debian\n"), File("etc/debian_version", "12.7\n"),
		WithMode(File("usr/bin/su", "su"), 0o4755),
		Owned(WithMode(File("usr/bin/wall", "wall"), 0o2755), 0, 5),
		WithMode(Dir("tmp/"), 0o1777),
		File("data/a", "A"), Hardlink("data/b", "data/a"),
		File("lib/keep", "k"),
		File("opq/old", "o"), File("opq/sub/deep", "d"),
		File("t2", "unrelated"),
		Dir("dev/"), Device("dev/null", tar.TypeChar), Symlink("dev/fd", "/proc/self/fd"),
		Owned(Dir("home/app/"), 1000, 1000), Owned(File("home/app/.profile", "p"), 1000, 1000),
		File("x", "file then dir"),
	)
	l2 := ZstdLayer(t,
		Whiteout("data", "a"),
		File("t1", "123"), Hardlink("t2", "t1"), Hardlink("t3", "t1"),
		Opaque("opq"), File("opq/new", "n"),
		WithPAX(Exec("usr/bin/ping", "ping"), "SCHILY.xattr.security.capability", cap, "SCHILY.xattr.user.note", "hi",
			"SCHILY.xattr.security.selinux", "system_u:object_r:bin_t:s0"),
		File("deep/"+strings.Repeat("long-directory-name/", 6)+"file-with-a-long-name.txt", "long"),
		File("ünï/日本.txt", "utf8"),
		File("lib/new", "new"), Whiteout("", "lib"),
	)
	l3 := RawLayer(Tar(t,
		File("t1", "456"),
		Dir("x/"), File("x/y", "y"),
	), "application/vnd.oci.image.layer.v1.tar")
	return Image(t, amd64, v1.Config{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/usr/bin:/bin"}}, l1, l2, l3)
}

func rulesTree() []string {
	h := Hash12
	return []string{
		". dir 0755 0:0",
		"data dir 0755 0:0",
		"data/b file 0644 0:0 sha256:" + h("A"),
		"deep dir 0755 0:0",
		"deep/long-directory-name dir 0755 0:0",
		"deep/long-directory-name/long-directory-name dir 0755 0:0",
		"deep/long-directory-name/long-directory-name/long-directory-name dir 0755 0:0",
		"deep/long-directory-name/long-directory-name/long-directory-name/long-directory-name dir 0755 0:0",
		"deep/long-directory-name/long-directory-name/long-directory-name/long-directory-name/long-directory-name dir 0755 0:0",
		"deep/long-directory-name/long-directory-name/long-directory-name/long-directory-name/long-directory-name/long-directory-name dir 0755 0:0",
		"deep/long-directory-name/long-directory-name/long-directory-name/long-directory-name/long-directory-name/long-directory-name/file-with-a-long-name.txt file 0644 0:0 sha256:" + h("long"),
		"dev dir 0755 0:0",
		"etc dir 0755 0:0",
		"etc/debian_version file 0644 0:0 sha256:" + h("12.7\n"),
		"etc/os-release file 0644 0:0 sha256:" + h("ID=debian\n"),
		"etc/pve-image dir 0755 0:0",
		"etc/pve-image/image.json file 0644 0:0 sha256:*",
		"home dir 0755 0:0",
		"home/app dir 0755 1000:1000",
		"home/app/.profile file 0644 1000:1000 sha256:" + h("p"),
		"lib dir 0755 0:0",
		"lib/new file 0644 0:0 sha256:" + h("new"),
		"opq dir 0755 0:0",
		"opq/new file 0644 0:0 sha256:" + h("n"),
		"t1 file 0644 0:0 sha256:" + h("456"),
		"t2 file 0644 0:0 sha256:" + h("123") + " links=2",
		"t3 file 0644 0:0 sha256:" + h("123") + " links=2",
		"tmp dir 1777 0:0",
		"usr dir 0755 0:0",
		"usr/bin dir 0755 0:0",
		"usr/bin/ping file 0755 0:0 sha256:" + h("ping") + " xattrs=security.capability,user.note=6869",
		"usr/bin/su file 4755 0:0 sha256:" + h("su"),
		"usr/bin/wall file 2755 0:5 sha256:" + h("wall"),
		"x dir 0755 0:0",
		"x/y file 0644 0:0 sha256:" + h("y"),
		"ünï dir 0755 0:0",
		"ünï/日本.txt file 0644 0:0 sha256:" + h("utf8"),
	}
}

func compareTree(t *testing.T, got []Node, want []string) {
	t.Helper()
	var lines []string
	for _, n := range got {
		s := n.String()
		if strings.HasPrefix(s, "etc/pve-image/image.json file") {
			s = s[:strings.Index(s, "sha256:")] + "sha256:*"
		}
		lines = append(lines, s)
	}
	if !slices.Equal(lines, want) {
		t.Errorf("extracted tree differs\n got:\n  %s\nwant:\n  %s", strings.Join(lines, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestConvertExtractsAsProxmox converts the rules image from a real
// registry and unpacks the template with Proxmox's exact unprivileged
// command.
func TestConvertExtractsAsProxmox(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "rules:1", rulesImage(t))
	c := newCLI(t)
	path := c.ok("convert", "--init", "none", reg.Host+"/rules:1").out()
	if want := strings.NewReplacer(":", "-").Replace(reg.Host) + "-rules_1_amd64.tar.zst"; filepath.Base(path) != want {
		t.Errorf("template name %s, want %s", filepath.Base(path), want)
	}
	root := ExtractAsProxmox(t, path)
	compareTree(t, ReadTree(t, root), rulesTree())
}

// TestConvertFromEveryTransport converts one image from a registry, an OCI
// layout, an OCI archive and a docker save archive. The first three carry the
// same manifest, so their templates must be byte-identical; the docker
// archive's manifest is made up, so only its tree must match.
func TestConvertFromEveryTransport(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	img := rulesImage(t)
	reg.Push(t, "rules:1", img)
	dir := t.TempDir()

	lp, err := layout.Write(filepath.Join(dir, "layout"), emptyIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "1"})); err != nil {
		t.Fatal(err)
	}
	ociArchive := filepath.Join(dir, "rules.oci.tar")
	tarDir(t, filepath.Join(dir, "layout"), ociArchive)
	dockerArchive := filepath.Join(dir, "rules.docker.tar")
	tag, _ := name.NewTag("example.com/rules:1")
	if err := tarball.WriteToFile(dockerArchive, tag, img); err != nil {
		t.Fatal(err)
	}

	c := newCLI(t)
	var outs [][]byte
	for _, ref := range []string{reg.Host + "/rules:1", "docker://" + reg.Host + "/rules:1", "oci:" + filepath.Join(dir, "layout") + ":1",
		"oci:" + filepath.Join(dir, "layout"), "oci-archive:" + ociArchive + ":1"} {
		out := filepath.Join(t.TempDir(), "t.tar.zst")
		c.ok("convert", "--init", "none", ref, "-o", out)
		b, _ := os.ReadFile(out)
		outs = append(outs, b)
	}
	for i := 1; i < len(outs); i++ {
		if string(outs[i]) != string(outs[0]) {
			t.Errorf("template %d differs from the registry's", i)
		}
	}
	out := c.ok("convert", "--init", "none", "docker-archive:"+dockerArchive+":example.com/rules:1").out()
	if !strings.HasSuffix(out, "rules_1_amd64.tar.zst") {
		t.Errorf("docker-archive template name %s", out)
	}
	compareTree(t, ReadTree(t, ExtractAsProxmox(t, out)), rulesTree())
}
