package tests

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"

	"github.com/pve-image/pve-image/export"
	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// changeScript is the program of the export tests' image. The first time
// it changes its root file system — adds, changes and deletes files,
// replaces a directory, makes a hardlink and a symlink, changes modes and
// owners — and writes a note into its volume; a container made from the
// exported image finds its marker and changes nothing.
const changeScript = `if [ -f /srv/marker ]; then echo "RESTORED NOTE=$(cat /data/note)"; exec sleep 1000000; fi
mkdir -p /srv/sub
echo new > /srv/new.txt
ln /srv/new.txt /srv/sub/new-link
ln -s ../etc/motd /srv/motd-link
echo changed > /etc/motd
rm /usr/share/old.txt
rm -rf /opt/cfg && mkdir /opt/cfg && echo c > /opt/cfg/c
chmod 640 /etc/group
chown 1000:1000 /srv/new.txt
chmod 4755 /srv/sub
echo note > /data/note
touch /srv/marker
echo CHANGED
exec sleep 1000000`

func changeImage(t testing.TB) v1.Image {
	entries := []Entry{Exec("bin/busybox", busybox(t)), File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/:/bin/sh\n"),
		File("etc/group", "root:x:0:\nu:x:1000:\n"), File("etc/motd", "image motd\n"), File("usr/share/old.txt", "old\n"),
		File("usr/share/keep.txt", "keep\n"), File("opt/cfg/a", "a\n"), File("opt/cfg/b", "b\n"), File("opt/keep/x", "x\n"),
		File("data/seed", "from the image\n"), Dir("tmp/")}
	for _, a := range []string{"sh", "echo", "cat", "sleep", "ls", "rm", "mkdir", "ln", "chmod", "chown", "touch", "test", "["} {
		entries = append(entries, Symlink("bin/"+a, "busybox"))
	}
	return Image(t, amd64, v1.Config{Entrypoint: []string{"/bin/sh", "-c", changeScript}, Env: []string{"PATH=/bin", "MODE=image"},
		Volumes: map[string]struct{}{"/data": {}}}, Layer(t, entries...))
}

// ctRootfs is a real container's root file system on the host.
func ctRootfs(sim *pvesim.Server, node string, vmid int) string {
	return filepath.Join(sim.LXCPath(node), strconv.Itoa(vmid), "rootfs")
}

// treeLines lists a tree (ReadTree) as lines, without what skip says.
func treeLines(nodes []Node, skip func(p string) bool) []string {
	var out []string
	for _, n := range nodes {
		if n.Path == "." || skip(n.Path) {
			continue
		}
		out = append(out, n.String())
	}
	slices.Sort(out)
	return out
}

// diffLines says what differs between two listings.
func diffLines(got, want []string) string {
	var b strings.Builder
	for _, g := range got {
		if !slices.Contains(want, g) {
			b.WriteString("\n  + " + g)
		}
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			b.WriteString("\n  - " + w)
		}
	}
	return b.String()
}

// TestExportRestoreRoundTrip: a container made by run changes its files
// and its volume; export VMID (vzdump through the simulator) pushes an
// image that is the source image's layers, mounted and not uploaded again,
// plus a layer of the changes and one of the volume; restore on another
// node makes a container whose program finds exactly the same files, with
// the same config; converting the exported image gives the container's
// files back; the archive exported twice gives one digest.
func TestExportRestoreRoundTrip(t *testing.T) {
	sim := lifeSim(t)
	RequireUserns(t)
	reg := StartRegistry(t, RegistryOptions{})
	proxy := StartProxy(t, reg.Host)
	reg.Push(t, "src:1", changeImage(t))
	c := newCLI(t)
	src := proxy.Host + "/src:1"
	vmid := atoiVMID(t, c.ok(append([]string{"run", src, "--hostname", "exp", "--memory", "256", "--cores", "1", "--net", "name=eth0,bridge=vmbr0"},
		pveArgs(sim, "--rootfs", "shared:1")...)...))
	waitConsole(t, sim, "pve1", vmid, "CHANGED")
	cl := pveClient(t, sim)
	ctx := context.Background()
	if err := cl.SetContainerConfig(ctx, "pve1", vmid, map[string]string{"swap": "64", "tags": "exported", "onboot": "1", "features": "nesting=1"}); err != nil {
		t.Fatal(err)
	}
	root := ctRootfs(sim, "pve1", vmid)
	// The program's extended attribute, set from outside (busybox has no
	// setfattr).
	if err := unix.Setxattr(filepath.Join(root, "srv/new.txt"), "user.origin", []byte("export-test"), 0); err != nil {
		t.Fatal(err)
	}
	before := ctConfig(t, sim, vmid)
	dataDir := sim.VolumeDir("pve1", proxmox.ParseMountPoint("mp0", before["mp0"]).Volume())

	proxy.Reset()
	to := proxy.Host + "/exported:1"
	r := c.ok(append([]string{"export", strconv.Itoa(vmid), "--to", to, "--volumes"}, pveArgs(sim)...)...)
	digest := r.out()
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(digest) {
		t.Fatalf("export printed %q\n%s", r.stdout, r.stderr)
	}
	for _, w := range []string{"layers of " + proxy.Host + "/src@sha256:", "reused", "changes: sha256:", "volume mp0 (/data)", "removed the archive"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("export's stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	// Uploaded: the config, the layer of changes and the volume's; the
	// source's layer was mounted from its repository.
	if n := proxy.Count("PUT", "blob"); n != 3 {
		t.Errorf("%d blob uploads, want 3 (config, changes, volume)", n)
	}
	if b := backups(t, sim, "pve1", vmid); len(b) != 0 {
		t.Errorf("the archive made for the export is left: %v", b)
	}
	srcImg := remoteImage(t, src)
	expImg := remoteImage(t, to)
	srcLayers, _ := srcImg.Layers()
	expLayers, _ := expImg.Layers()
	if len(expLayers) != len(srcLayers)+2 {
		t.Fatalf("exported image has %d layers, the source %d", len(expLayers), len(srcLayers))
	}
	for i, l := range srcLayers {
		if a, b := digestOf(t, l), digestOf(t, expLayers[i]); a != b {
			t.Errorf("layer %d: %s, the source's is %s", i, b, a)
		}
	}
	if d, _ := expImg.Digest(); d.String() != digest {
		t.Errorf("pushed %s, printed %s", d, digest)
	}
	changes := layerNames(t, expLayers[len(srcLayers)])
	for _, w := range []string{"./srv/new.txt", "./etc/motd", "./usr/share/.wh.old.txt", "./opt/cfg/.wh..wh..opq", "./opt/cfg/c", "./srv/marker"} {
		if !slices.Contains(changes, w) {
			t.Errorf("the layer of changes lacks %s: %q", w, changes)
		}
	}
	for _, w := range []string{"./bin/busybox", "./usr/share/keep.txt", "./etc/hostname", "./data/note", "./etc/vzdump/pct.conf", "./sbin/pve-image-init",
		"./etc/pve-image/image.json"} {
		if slices.Contains(changes, w) {
			t.Errorf("the layer of changes holds %s", w)
		}
	}
	if got := layerNames(t, expLayers[len(srcLayers)+1]); !slices.Equal(got, []string{"./data/", "./data/.wh..wh..opq", "./data/note", "./data/seed"}) {
		t.Errorf("the volume's layer: %q", got)
	}
	cfg, _ := expImg.ConfigFile()
	if rec, ok, err := export.ReadRecorded(cfg.Config.Labels); err != nil || !ok || rec.Config["swap"] != "64" || !strings.HasPrefix(rec.Source, proxy.Host+"/src@sha256:") {
		t.Errorf("recorded %+v (%v, %v)", rec, ok, err)
	}

	// Restore on the other node: the same files, the same config.
	newID := atoiVMID(t, c.ok(append([]string{"restore", to, "--rootfs-storage", "shared"}, pveArgs(sim, "--node", "pve2")...)...))
	waitConsole(t, sim, "pve2", newID, "RESTORED NOTE=note")
	skip := func(p string) bool { return p == "etc/pve-image/image.json" }
	orig := treeLines(ReadTree(t, root), skip)
	// What the program did is there to compare.
	for _, w := range []string{"srv/new.txt file 0644 1000:1000 sha256:" + Hash12("new\n") + " links=2 xattrs=user.origin=",
		"srv/sub/new-link file 0644 1000:1000 sha256:" + Hash12("new\n") + " links=2", "srv/sub dir 4755 0:0", "srv/motd-link symlink 0777 0:0 -> ../etc/motd",
		"etc/motd file 0644 0:0 sha256:" + Hash12("changed\n"), "etc/group file 0640 0:0", "opt/cfg/c file", "usr/share/keep.txt file", "sbin/pve-image-init file"} {
		if !slices.ContainsFunc(orig, func(l string) bool { return strings.HasPrefix(l, w) }) {
			t.Errorf("the exported container's files lack %q", w)
		}
	}
	for _, w := range []string{"opt/cfg/a ", "usr/share/old.txt "} {
		if slices.ContainsFunc(orig, func(l string) bool { return strings.HasPrefix(l, w) }) {
			t.Errorf("the exported container's files hold %q", w)
		}
	}
	if d := diffLines(treeLines(ReadTree(t, ctRootfs(sim, "pve2", newID)), skip), orig); d != "" {
		t.Errorf("the restored container's files differ from the exported one's:%s", d)
	}
	ct2, ok := sim.Container("pve2", newID)
	if !ok {
		t.Fatalf("CT %d is not on pve2", newID)
	}
	after := ct2.Config
	newData := sim.VolumeDir("pve2", proxmox.ParseMountPoint("mp0", after["mp0"]).Volume())
	if d := diffLines(treeLines(ReadTree(t, newData), func(string) bool { return false }), treeLines(ReadTree(t, dataDir), func(string) bool { return false })); d != "" {
		t.Errorf("the restored volume differs:%s", d)
	}
	for _, k := range []string{"hostname", "memory", "cores", "swap", "tags", "onboot", "features", "ostype", "arch", "unprivileged", "entrypoint", "env", "cmode"} {
		if after[k] != before[k] {
			t.Errorf("%s: %q before, %q restored", k, before[k], after[k])
		}
	}
	if a, b := proxmox.ParseNIC(after["net0"]), proxmox.ParseNIC(before["net0"]); a.Delete("hwaddr").String("") != b.Delete("hwaddr").String("") || a.Get("hwaddr") == b.Get("hwaddr") {
		t.Errorf("net0 %q restored from %q: want the same NIC with a MAC of its own", after["net0"], before["net0"])
	}
	if a, b := proxmox.ParseMountPoint("mp0", after["mp0"]), proxmox.ParseMountPoint("mp0", before["mp0"]); a.Opts.Delete("volume").String("") != b.Opts.Delete("volume").String("") {
		t.Errorf("mp0 %q restored from %q", after["mp0"], before["mp0"])
	}
	if rec := record(t, after); rec.Image != to {
		t.Errorf("the restored container's record: %+v", rec)
	}

	// Converting the exported image gives the container's files back (its
	// volume's at its path), but for what the export leaves out.
	tmpl := c.ok("convert", to).out()
	conv := ExtractAsProxmox(t, tmpl)
	left := func(p string) bool {
		return p == "etc/pve-image/image.json" || p == "etc/hostname" || p == "etc/hosts" || p == "data" || strings.HasPrefix(p, "data/")
	}
	if d := diffLines(treeLines(ReadTree(t, conv), left), treeLines(ReadTree(t, root), left)); d != "" {
		t.Errorf("the converted exported image differs from the container's files:%s", d)
	}
	volume := func(p string) bool { return !strings.HasPrefix(p, "data/") }
	var convData []string
	for _, l := range treeLines(ReadTree(t, conv), volume) {
		convData = append(convData, strings.TrimPrefix(l, "data/"))
	}
	if d := diffLines(convData, treeLines(ReadTree(t, dataDir), func(string) bool { return false })); d != "" {
		t.Errorf("the converted image's /data differs from the volume:%s", d)
	}

	// The simulator's archive, as vzdump lays it out; exported twice, it
	// gives one digest, to a registry and to a layout alike.
	a, err := cl.CreateBackupArchive(ctx, proxmox.BackupRequest{Node: "pve1", VMID: vmid, Storage: "local", Mode: "snapshot", Compress: "gzip"})
	if err != nil {
		t.Fatal(err)
	}
	checkVzdumpLayout(t, a.Path, "user.origin")
	d1 := c.ok("export", a.Path, "--to", proxy.Host+"/again:1", "--volumes").out()
	d2 := c.ok("export", a.Path, "--to", "oci:"+filepath.Join(t.TempDir(), "layout")+":v1", "--volumes").out()
	if d1 != d2 {
		t.Errorf("one archive exported twice: %s, then %s", d1, d2)
	}
	if a.Mode != "suspend" {
		t.Errorf("vzdump of a running container on a storage without snapshots: mode %q, want suspend", a.Mode)
	}

	// lzo is refused with the way out.
	lzo, err := cl.CreateBackupArchive(ctx, proxmox.BackupRequest{Node: "pve1", VMID: vmid, Storage: "local", Mode: "snapshot", Compress: "lzo"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(lzo.Path, ".tar.lzo") {
		t.Errorf("lzo archive %s", lzo.Path)
	}
	if b, _ := os.ReadFile(lzo.Path); !bytes.HasPrefix(b, []byte("\x89LZO\x00\r\n\x1a\n")) {
		t.Errorf("%s is not an lzop file", lzo.Path)
	}
	c.fails([]string{"export", lzo.Path, "--to", "oci-archive:" + filepath.Join(t.TempDir(), "x.tar")}, "archive "+lzo.Path, "lzo", "--compress zstd")

	// A backup storage this machine cannot read: its dump directory
	// hidden from pve-image (a tmpfs over it, in a mount namespace of its
	// own), as on a machine that is not the node.
	dump := filepath.Join(sim.StoragePath("pve1", "local"), "dump")
	os.MkdirAll(dump, 0o755)
	n := len(backups(t, sim, "pve1", vmid))
	r = runHidden(t, c, dump, append([]string{"export", strconv.Itoa(vmid), "--to", proxy.Host + "/never:1"}, pveArgs(sim)...)...)
	if r.err == nil {
		t.Fatalf("export from an unreadable storage succeeded:\n%s", r.stderr)
	}
	for _, w := range []string{"this machine cannot read it at " + dump + "/vzdump-lxc-" + strconv.Itoa(vmid) + "-", "there is no such file here",
		"run pve-image on node pve1", "mount storage local here at the same path", "pve-image export ARCHIVE", "The archive is kept", "pvesm free local:backup/"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	if b := backups(t, sim, "pve1", vmid); len(b) != n+1 {
		t.Errorf("archives %v: want the unreadable one kept", b)
	}
}

// runHidden runs pve-image in a mount namespace where dir is an empty
// tmpfs.
func runHidden(t *testing.T, c *cli, dir string, args ...string) result {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		Missing(t, "unshare not found (util-linux)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	inner := c.cmd(ctx, args...)
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs tmpfs "$0" && exec "$@"`, dir, inner.Path}, args...)...)
	cmd.Env = inner.Env
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	return result{so.String(), se.String(), err}
}

// checkVzdumpLayout checks an archive as vzdump writes it
// (proxmox-lifecycle.md §3): its name, pct.conf first, pct.fw, then the
// root file system, every name "./...", the container's own ids, the
// extended attributes Proxmox keeps (xattr, set to "export-test"), the
// volume under its path.
func checkVzdumpLayout(t *testing.T, path, xattr string) {
	t.Helper()
	if !regexp.MustCompile(`/vzdump-lxc-\d+-\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}\.tar\.gz$`).MatchString(path) {
		t.Errorf("archive name %s", path)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	found := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !strings.HasPrefix(h.Name, "./") {
			t.Errorf("member %q is not ./-prefixed", h.Name)
		}
		if h.Uid >= 65536 || h.Gid >= 65536 {
			t.Errorf("member %s has host ids %d:%d", h.Name, h.Uid, h.Gid)
		}
		if h.Uname != "" || h.Gname != "" {
			t.Errorf("member %s has names %q:%q (--numeric-owner)", h.Name, h.Uname, h.Gname)
		}
		// On the first of its names: the others are hardlinks to it.
		if h.PAXRecords["SCHILY.xattr."+xattr] == "export-test" {
			found = true
		}
	}
	if len(names) < 4 || names[0] != "./etc/vzdump/pct.conf" || names[1] != "./etc/vzdump/pct.fw" || names[2] != "./" {
		t.Errorf("the archive starts %q", names[:min(4, len(names))])
	}
	if !found {
		t.Errorf("no member has the extended attribute %s", xattr)
	}
	if !slices.Contains(names, "./data/note") {
		t.Errorf("the volume's data is not in the archive under /data")
	}
}

func remoteImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	n, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(n)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t *testing.T, l v1.Layer) string {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// layerNames lists a layer's member names.
func layerNames(t *testing.T, l v1.Layer) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var out []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
}

// TestExportNotMadeByPveImage: a container made from a template pve-image
// did not make (no /etc/pve-image/image.json) becomes one layer holding its
// root file system but /etc/hostname, booting /sbin/init, with its config
// recorded.
func TestExportNotMadeByPveImage(t *testing.T) {
	sim := lifeSim(t)
	RequireUserns(t)
	entries := []Entry{Dir("./"), Dir("./bin/"), Exec("./bin/busybox", busybox(t)), Dir("./sbin/"), Symlink("./sbin/init", "../bin/busybox"),
		Dir("./etc/"), File("./etc/hostname", "plain\n"), File("./etc/os-release", "ID=plain\n"), Dir("./root/"), File("./root/notes", "mine\n")}
	tmpl := filepath.Join(t.TempDir(), "plain_1_amd64.tar.zst")
	if err := os.WriteFile(tmpl, Zstd(Tar(t, entries...)), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCLI(t)
	volid := c.ok(append([]string{"push", tmpl}, pveArgs(sim)...)...).out()
	cl := pveClient(t, sim)
	ctx := context.Background()
	if _, err := cl.CreateContainer(ctx, "pve1", 150, map[string]string{"ostemplate": volid, "rootfs": "shared:1", "ostype": "unmanaged",
		"hostname": "plain", "memory": "128", "cores": "1", "net0": "name=eth0,bridge=vmbr0,ip=dhcp", "unprivileged": "1"}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "plain.tar")
	r := c.ok(append([]string{"export", "150", "--to", "oci-archive:" + out + ":plain"}, pveArgs(sim)...)...)
	if strings.Contains(r.stderr, "reused") || !strings.Contains(r.stderr, "root file system: sha256:") {
		t.Errorf("export of a container not made by pve-image:\n%s", r.stderr)
	}
	img := ociArchiveImage(t, out)
	ls, _ := img.Layers()
	if len(ls) != 1 {
		t.Fatalf("%d layers, want one", len(ls))
	}
	names := layerNames(t, ls[0])
	for _, w := range []string{"./bin/busybox", "./sbin/init", "./etc/os-release", "./root/notes"} {
		if !slices.Contains(names, w) {
			t.Errorf("the layer lacks %s: %q", w, names)
		}
	}
	// Rewritten at every start, it describes that container, not an image.
	if slices.Contains(names, "./etc/hostname") {
		t.Errorf("the layer holds ./etc/hostname: %q", names)
	}
	if slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "./etc/vzdump") }) {
		t.Errorf("vzdump's own members are in the layer: %q", names)
	}
	cfg, _ := img.ConfigFile()
	if !slices.Equal(cfg.Config.Cmd, []string{"/sbin/init"}) || cfg.Architecture != "amd64" || cfg.OS != "linux" {
		t.Errorf("config %+v", cfg)
	}
	rec, ok, err := export.ReadRecorded(cfg.Config.Labels)
	if err != nil || !ok || rec.Source != "" || rec.Config["memory"] != "128" || rec.Config["hostname"] != "plain" || len(rec.Nets) != 1 {
		t.Errorf("recorded %+v (%v %v)", rec, ok, err)
	}
	if b := backups(t, sim, "pve1", 150); len(b) != 0 {
		t.Errorf("archives left: %v", b)
	}
}

// TestExportRefusesHostileArchives: an archive whose members climb out of
// the root, are absolute, link out of it or carry ids Proxmox cannot map
// is refused as such a layer is, naming the archive and the member, and
// nothing is written where the image was to go.
func TestExportRefusesHostileArchives(t *testing.T) {
	conf := File("./etc/vzdump/pct.conf", "arch: amd64\nhostname: bad\nmemory: 128\nrootfs: local:100/vm-100-disk-0.raw,size=1G\n")
	c := newCLI(t)
	for _, tc := range []struct {
		name   string
		member Entry
		want   string
	}{
		{"dotdot", File("./../../root/.ssh/authorized_keys", "key"), "path escapes the root filesystem"},
		{"absolute", File("/etc/cron.d/evil", "x"), "absolute member name"},
		{"hardlink out", Hardlink("./etc/shadow", "../../../etc/shadow"), "path escapes the root filesystem"},
		{"through a symlink", Symlink("./up", "/"), ""},
		{"high ids", Owned(File("./f", "x"), 70000, 70000), "ids of 65536 and above"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			archive := filepath.Join(dir, "vzdump-lxc-100-2024_01_01-00_00_00.tar")
			entries := []Entry{conf, File("./etc/vzdump/pct.fw", ""), Dir("./"), tc.member}
			member, want := tc.member.Name, tc.want
			if tc.want == "" {
				entries = append(entries, File("./up/etc/passwd", "x"))
				member, want = "./up/etc/passwd", "written through a symbolic link"
			}
			os.WriteFile(archive, Zstd(Tar(t, entries...)), 0o644)
			to := filepath.Join(dir, "out")
			c.fails([]string{"export", archive, "--to", "oci:" + to}, "archive "+archive, "member \""+member+"\"", want)
			if _, err := os.Stat(to); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused export wrote %s", to)
			}
		})
	}
}

// ociArchiveImage reads the one image of an oci-archive written by export.
func ociArchiveImage(t *testing.T, file string) v1.Image {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("tar", "xf", file, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("untar %s: %v\n%s", file, err, out)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("index %+v: %v", m, err)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestRestoreOfAnyImageIsRun: restore of an image export did not make
// makes the container run would.
func TestRestoreOfAnyImageIsRun(t *testing.T) {
	sim := startSim(t, pvesim.Options{})
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "svc:1", serviceImage(t, "v1", false))
	c := newCLI(t)
	ref := reg.Host + "/svc:1"
	ran := atoiVMID(t, c.ok(append([]string{"run", ref, "--start=false"}, pveArgs(sim, "--rootfs", "shared:1")...)...))
	restored := atoiVMID(t, c.ok(append([]string{"restore", ref, "--start=false", "--rootfs-storage", "shared"}, pveArgs(sim)...)...))
	a, b := ctConfig(t, sim, ran), ctConfig(t, sim, restored)
	for _, k := range []string{"hostname", "memory", "ostype", "arch", "unprivileged", "entrypoint", "env", "cmode", "description"} {
		if a[k] != b[k] {
			t.Errorf("%s: run gave %q, restore %q", k, a[k], b[k])
		}
	}
	for _, k := range []string{"mp0", "rootfs"} {
		if x, y := proxmox.ParseMountPoint(k, a[k]).Opts.Delete("volume"), proxmox.ParseMountPoint(k, b[k]).Opts.Delete("volume"); x.String("") != y.String("") {
			t.Errorf("%s: run gave %q, restore %q", k, a[k], b[k])
		}
	}
}

// TestRestoreHostConfig: what reaches into the host is not taken from an
// image's labels unless --host-config says so — any image can ask for a
// bind mount of / — and then only for root@pam: without it, bind mounts
// are skipped with a note naming the host path and only nesting of the
// features is set; with it, as root@pam, both are made; with it, as a
// token, nothing is created. With --node auto and no --rootfs-storage the
// root disk still gets the recorded size.
func TestRestoreHostConfig(t *testing.T) {
	sim := startSim(t, pvesim.Options{})
	sim.AddUser(pvesim.User{Name: "root@pam", Password: "pw", Privs: []string{"*"}})
	reg := StartRegistry(t, RegistryOptions{})
	host := t.TempDir()
	os.Chmod(host, 0o755)
	labels := map[string]string{export.LabelVersion: "1", export.LabelConfig + "memory": "128", export.LabelConfig + "rootfs.size": "6G",
		export.LabelConfig + "features": "nesting=1,keyctl=1,fuse=1,mount=nfs", export.LabelMount + "0": host + ",mp=/host"}
	reg.Push(t, "hostile:1", appImage(t, "hostile", v1.Config{Labels: labels}))
	c := newCLI(t)
	ref := reg.Host + "/hostile:1"
	root := []string{"--pve-url", sim.URL(), "--pve-user", "root@pam", "--pve-password", "pw", "--pve-fingerprint", sim.Fingerprint(), "--node", "pve1"}

	r := c.ok(append([]string{"restore", ref, "--start=false", "--rootfs-storage", "shared"}, root...)...)
	cfg := ctConfig(t, sim, atoiVMID(t, r))
	for k, v := range cfg {
		if strings.HasPrefix(k, "mp") && strings.Contains(v, host) {
			t.Errorf("restore without --host-config made %s: %s", k, v)
		}
	}
	if cfg["features"] != "nesting=1" {
		t.Errorf("features %q, want nesting=1 only", cfg["features"])
	}
	for _, w := range []string{"bind mount of the host's " + host + " at /host", "--host-config", "keyctl=1,fuse=1,mount=nfs"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("restore's stderr lacks %q:\n%s", w, r.stderr)
		}
	}

	cfg = ctConfig(t, sim, atoiVMID(t, c.ok(append([]string{"restore", ref, "--start=false", "--rootfs-storage", "shared", "--host-config"}, root...)...)))
	if cfg["mp0"] != host+",mp=/host" {
		t.Errorf("--host-config: mp0 %q, want the bind mount", cfg["mp0"])
	}
	f := proxmox.ParsePropString(cfg["features"], "")
	for k, v := range map[string]string{"nesting": "1", "keyctl": "1", "fuse": "1", "mount": "nfs"} {
		if f.Get(k) != v {
			t.Errorf("--host-config: features %q lack %s=%s", cfg["features"], k, v)
		}
	}

	before := len(sim.Containers("pve1")) + len(sim.Containers("pve2"))
	c.fails(append([]string{"restore", ref, "--start=false", "--rootfs-storage", "shared", "--host-config"}, pveArgs(sim)...), "only root@pam", host)
	if after := len(sim.Containers("pve1")) + len(sim.Containers("pve2")); after != before {
		t.Errorf("a refused restore created a container (%d, then %d)", before, after)
	}

	auto := atoiVMID(t, c.ok(append([]string{"restore", ref, "--start=false"}, pveArgs(sim, "--node", "auto")...)...))
	ct, _ := sim.Container(nodeOf(t, sim, auto), auto)
	if got := proxmox.ParseMountPoint("rootfs", ct.Config["rootfs"]).Opts.Get("size"); got != "6G" {
		t.Errorf("restore --node auto: rootfs %q, want the recorded 6G", ct.Config["rootfs"])
	}
}

// TestExportDistrustsImageJSON: the container's root may write
// /etc/pve-image/image.json; when it names another image than the
// container's Proxmox record, the export is one layer with a note, and
// nothing of the image it names is fetched with the exporter's
// credentials (nor of the recorded one: it is not used).
func TestExportDistrustsImageJSON(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	proxy := StartProxy(t, reg.Host)
	src, secret := appImage(t, "src", v1.Config{}), appImage(t, "secret", v1.Config{})
	reg.Push(t, "src:1", src)
	reg.Push(t, "private/secret:1", secret)
	sd, _ := src.Digest()
	xd, _ := secret.Digest()
	srcDigest, secretDigest := sd.String(), xd.String()
	meta := `{"converter":"pve-image","repository":"` + proxy.Host + `/private/secret","manifestDigest":"` + secretDigest +
		`","config":{"entrypoint":["/app"]},"run":{"kind":"application","init":"shim"}}`
	conf := "#pve-image: {\"image\":\"" + proxy.Host + "/src:1\",\"digest\":\"" + srcDigest + "\"}\narch: amd64\nhostname: web\nmemory: 128\nostype: unmanaged\nrootfs: local:100/vm-100-disk-0.raw,size=1G\nunprivileged: 1\n"
	dir := t.TempDir()
	archive := filepath.Join(dir, "vzdump-lxc-100-2024_01_01-00_00_00.tar.zst")
	os.WriteFile(archive, Zstd(Tar(t, File("./etc/vzdump/pct.conf", conf), File("./etc/vzdump/pct.fw", ""), Dir("./"), Dir("./etc/"),
		Dir("./etc/pve-image/"), File("./etc/pve-image/image.json", meta), Exec("./app", readFile(t, testApp)))), 0o644)
	c := newCLI(t)
	proxy.Reset()
	out := filepath.Join(dir, "out.tar")
	r := c.ok("export", archive, "--to", "oci-archive:"+out)
	for _, w := range []string{"names " + proxy.Host + "/private/secret@" + secretDigest, "says it was made from " + proxy.Host + "/src@" + srcDigest,
		"one layer", "root file system: sha256:"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("export's stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	if n := proxy.Count("GET", "manifest") + proxy.Count("HEAD", "manifest") + proxy.Count("GET", "blob") + proxy.Count("HEAD", "blob"); n != 0 {
		t.Errorf("the export asked the registry %d times", n)
	}
	if ls, _ := ociArchiveImage(t, out).Layers(); len(ls) != 1 {
		t.Errorf("%d layers, want one", len(ls))
	}
}
