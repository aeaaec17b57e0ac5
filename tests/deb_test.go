package tests

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/pve-image/pve-image/tests/testenv"
)

// TestDebPackage builds the Debian package with make deb, twice (the second
// time with another umask, into another directory: the bytes must be the
// same), checks what it holds, then installs it into this machine — with
// dpkg -i, and with apt-get install ./FILE — and checks the installed
// pve-image: its version, its man pages, completions and unit, and that a
// conversion of an application image finds /usr/lib/pve-image/pve-image-init
// (also from a copy of pve-image with no init beside it). Each install is
// purged again.
func TestDebPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root (installs the package into this machine)")
	}
	for _, tool := range []string{"make", "dpkg-deb", "dpkg", "dpkg-query", "apt-get", "gzip"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "%s not found (scripts/setup-host.sh installs it)", tool)
		}
	}
	if debInstalled() {
		testenv.Missing(t, "the pve-image package is installed on this machine; the test installs and purges its own (dpkg --purge pve-image first)")
	}
	if !dpkgInstalled("ca-certificates") {
		testenv.Missing(t, "ca-certificates (the package's dependency) is not installed (scripts/setup-host.sh installs it)")
	}

	deb := makeDeb(t, "022")
	again := makeDeb(t, "077")
	if filepath.Base(deb) != filepath.Base(again) {
		t.Fatalf("two builds are named %s and %s", deb, again)
	}
	b1, _ := os.ReadFile(deb)
	b2, _ := os.ReadFile(again)
	if !bytes.Equal(b1, b2) {
		t.Errorf("make deb is not reproducible: %s and %s differ", deb, again)
	}
	if m := regexp.MustCompile(`^pve-image_[0-9][A-Za-z0-9.+~-]*_[a-z0-9]+\.deb$`).FindString(filepath.Base(deb)); m == "" {
		t.Errorf("package file name %s", filepath.Base(deb))
	}

	checkDebContents(t, deb)

	fixture := filepath.Join(t.TempDir(), "fixture.oci.tar")
	mk := exec.Command("go", "run", "./cmd/mkfixture", "-app", testApp, "-o", fixture)
	mk.Dir = testenv.RepoRoot()
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkfixture: %v\n%s", err, out)
	}

	t.Run("dpkg", func(t *testing.T) {
		t.Cleanup(func() { purgeDeb(t) })
		dpkg(t, "dpkg", "-i", deb)
		checkInstalled(t, deb, fixture)
	})
	t.Run("apt", func(t *testing.T) {
		t.Cleanup(func() { purgeDeb(t) })
		dpkg(t, "apt-get", "-o", "DPkg::Lock::Timeout=120", "install", "-y", "--no-install-recommends", deb)
		checkInstalled(t, deb, fixture)
	})
}

// makeDeb runs make deb with umask into a directory of its own and returns
// the package it wrote.
func makeDeb(t *testing.T, umask string) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755) // apt reads local packages as the _apt user
	cmd := exec.Command("sh", "-c", `umask "$1" && exec make --no-print-directory deb DEBDIR="$2"`, "sh", umask, dir)
	cmd.Dir = testenv.RepoRoot()
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb wrote %v into %s\n%s", debs, dir, out)
	}
	if last := strings.TrimSpace(lastLine(string(out))); last != debs[0] {
		t.Errorf("make deb printed %q, wrote %s", last, debs[0])
	}
	t.Logf("make deb (umask %s): %s in %v", umask, filepath.Base(debs[0]), time.Since(start).Round(time.Second))
	return debs[0]
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndex(s, "\n")+1:]
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkDebContents reads the package with dpkg-deb -I and -c.
func checkDebContents(t *testing.T, deb string) {
	t.Helper()
	info := run(t, "dpkg-deb", "-I", deb)
	arch := strings.TrimSpace(run(t, "dpkg", "--print-architecture"))
	for _, want := range []string{"Package: pve-image\n", "Architecture: " + arch + "\n", "Depends: ca-certificates\n",
		"Maintainer: ", "Installed-Size: ", "Section: admin\n", "Description: "} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	//      942 bytes,    20 lines      control
	//      442 bytes,    12 lines   *  postinst             #!/bin/sh
	members := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+\d+ bytes,\s+\d+ lines\s+(\*?)\s+(\S+)`).FindAllStringSubmatch(info, -1) {
		members[m[2]] = m[1] == "*"
	}
	for name, exec := range map[string]bool{"control": false, "md5sums": false, "postinst": true, "prerm": true, "postrm": true} {
		if x, ok := members[name]; !ok || x != exec {
			t.Errorf("control member %s: present %v, executable %v (want %v):\n%s", name, ok, x, exec, info)
		}
	}
	if len(members) != 5 {
		t.Errorf("control members %v, want control, md5sums, postinst, prerm, postrm (no conffiles)", members)
	}
	version := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Version"))
	if !strings.HasPrefix(version, "0.") && !regexp.MustCompile(`^[0-9]`).MatchString(version) {
		t.Errorf("Version %q", version)
	}
	if !strings.Contains(filepath.Base(deb), "_"+version+"_"+arch+".deb") {
		t.Errorf("%s is not named for version %s and %s", deb, version, arch)
	}

	// -rwxr-xr-x root/root  12345 2026-12-06 01:48 ./usr/bin/pve-image
	line := regexp.MustCompile(`^([-dlrwxs]{10}) (\S+)/(\S+)\s+(\d+) (\S+ \S+) (\./\S*)`)
	entries := map[string]string{}
	dates := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "-c", deb)), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("dpkg-deb -c line %q", l)
			continue
		}
		if m[2] != "root" || m[3] != "root" {
			t.Errorf("not owned by root: %s", l)
		}
		dates[m[5]] = true
		name := strings.TrimSuffix(m[6], "/")
		entries[name] = m[1]
		if strings.HasPrefix(name, "./etc") {
			t.Errorf("the package writes into /etc: %s", l)
		}
		if m[1][0] == '-' && m[1] != "-rw-r--r--" && m[1] != "-rwxr-xr-x" {
			t.Errorf("mode %s", l)
		}
	}
	if len(dates) != 1 {
		t.Errorf("files are not all dated SOURCE_DATE_EPOCH: %v", dates)
	}
	for name, mode := range map[string]string{
		"./usr/bin/pve-image":                                  "-rwxr-xr-x",
		"./usr/lib/pve-image/pve-image-init":                   "-rwxr-xr-x",
		"./lib/systemd/system/pve-image-cri.service":           "-rw-r--r--",
		"./usr/share/man/man1/pve-image.1.gz":                  "-rw-r--r--",
		"./usr/share/man/man1/pve-image-convert.1.gz":          "-rw-r--r--",
		"./usr/share/man/man1/pve-image-cri.1.gz":              "-rw-r--r--",
		"./usr/share/bash-completion/completions/pve-image":    "-rw-r--r--",
		"./usr/share/zsh/vendor-completions/_pve-image":        "-rw-r--r--",
		"./usr/share/fish/vendor_completions.d/pve-image.fish": "-rw-r--r--",
		"./usr/share/doc/pve-image/copyright":                  "-rw-r--r--",
		"./usr/share/doc/pve-image/changelog.Debian.gz":        "-rw-r--r--",
		"./usr/share/doc/pve-image/examples/cri.yaml.example":  "-rw-r--r--",
		"./usr/lib/pve-image":                                  "drwxr-xr-x",
	} {
		if entries[name] != mode {
			t.Errorf("%s: mode %q, want %q", name, entries[name], mode)
		}
	}
	if _, ok := entries["./usr/share/man/man1/pve-image-docs.1.gz"]; ok {
		t.Error("the hidden docs command has a man page")
	}
}

// checkInstalled checks the installed package.
func checkInstalled(t *testing.T, deb, fixture string) {
	if !debInstalled() {
		t.Fatal("pve-image is not installed")
	}
	if got, want := run(t, "dpkg-query", "-W", "-f", "${Version}", "pve-image"), strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Version")); got != want {
		t.Errorf("installed version %q, package %q", got, want)
	}
	if out, err := exec.Command("dpkg", "--verify", "pve-image").CombinedOutput(); err != nil || len(out) != 0 {
		t.Errorf("dpkg --verify pve-image: %v\n%s", err, out)
	}

	// The version, with the commit it was built from: pve-image's cache keys
	// include it.
	v := strings.TrimSpace(run(t, "/usr/bin/pve-image", "--version"))
	if !strings.HasPrefix(v, "pve-image version ") {
		t.Errorf("pve-image --version: %q", v)
	}
	if rev, err := exec.Command("git", "-C", testenv.RepoRoot(), "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		if !strings.Contains(v, strings.TrimSpace(string(rev))) {
			t.Errorf("pve-image --version %q does not name commit %s", v, rev)
		}
	}

	// Man pages: found and rendered by man, or at least present.
	if _, err := exec.LookPath("man"); err == nil {
		for _, page := range []string{"pve-image", "pve-image-convert", "pve-image-cri"} {
			if got := strings.TrimSpace(run(t, "man", "-w", page)); got != "/usr/share/man/man1/"+page+".1.gz" {
				t.Errorf("man -w %s: %q", page, got)
			}
		}
		cmd := exec.Command("man", "-P", "cat", "pve-image-convert")
		cmd.Env = append(os.Environ(), "MANWIDTH=100", "LC_ALL=C")
		out, err := cmd.Output()
		if err != nil || !bytes.Contains(out, []byte("--init-binary")) || !bytes.Contains(out, []byte("pve-image-convert")) {
			t.Errorf("man pve-image-convert: %v\n%s", err, out)
		}
	} else {
		t.Log("no man here: checking the page's file only")
		if _, err := os.Stat("/usr/share/man/man1/pve-image.1.gz"); err != nil {
			t.Error(err)
		}
	}

	// Completions: bash's loads and completes pve-image.
	for _, f := range []string{"/usr/share/bash-completion/completions/pve-image", "/usr/share/zsh/vendor-completions/_pve-image",
		"/usr/share/fish/vendor_completions.d/pve-image.fish"} {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Errorf("completion %s: %v", f, err)
		}
	}
	if out, err := exec.Command("bash", "-c", "source /usr/share/bash-completion/completions/pve-image && complete -p pve-image").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "pve-image") {
		t.Errorf("bash completion: %v\n%s", err, out)
	}

	// The unit: installed with the installed paths, not enabled.
	unit, err := os.ReadFile("/lib/systemd/system/pve-image-cri.service")
	if err != nil {
		t.Error(err)
	}
	for _, want := range []string{"\nExecStart=/usr/bin/pve-image cri --config /etc/pve-image/cri.yaml --init-binary /usr/lib/pve-image/pve-image-init\n", "\n[Install]\n"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if bytes.Contains(unit, []byte("/usr/local")) {
		t.Errorf("unit names /usr/local:\n%s", unit)
	}
	if links, _ := filepath.Glob("/etc/systemd/system/*.wants/pve-image-cri.service"); len(links) != 0 {
		t.Errorf("pve-image-cri is enabled: %v", links)
	}
	if _, err := exec.LookPath("systemctl"); err == nil {
		out, _ := exec.Command("systemctl", "is-enabled", "pve-image-cri.service").CombinedOutput()
		if got := strings.TrimSpace(string(out)); got != "disabled" {
			t.Errorf("systemctl is-enabled pve-image-cri: %q", got)
		}
	}

	// A conversion of an application image takes pve-image-init from
	// /usr/lib/pve-image, for the installed pve-image and for a copy of it
	// elsewhere with nothing beside it.
	init, err := os.ReadFile("/usr/lib/pve-image/pve-image-init")
	if err != nil {
		t.Error(err) // and see what convert makes of it
	}
	elsewhere := filepath.Join(t.TempDir(), "pve-image")
	exe, err := os.ReadFile("/usr/bin/pve-image")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(elsewhere, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"/usr/bin/pve-image", elsewhere} {
		dir := t.TempDir()
		out := filepath.Join(dir, "fixture_1_amd64.tar.zst")
		cmd := exec.Command(bin, "convert", "oci-archive:"+fixture, "-o", out, "--cache-dir", filepath.Join(dir, "cache"))
		cmd.Env = cleanEnv()
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s convert: %v\n%s", bin, err, b)
			continue
		}
		if got := templateFile(t, out, "./sbin/pve-image-init"); !bytes.Equal(got, init) {
			t.Errorf("%s convert: the template's /sbin/pve-image-init (%d bytes) is not /usr/lib/pve-image/pve-image-init (%d bytes)", bin, len(got), len(init))
		}
	}
}

// cleanEnv is this process's environment without pve-image's variables, so
// that the installed pve-image looks for its init where it would.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PVE_IMAGE_") {
			env = append(env, kv)
		}
	}
	return env
}

// templateFile returns the content of a template's member.
func templateFile(t *testing.T, path, name string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("%s: no %s", path, name)
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

func dpkgInstalled(pkg string) bool {
	out, _ := exec.Command("dpkg-query", "-W", "-f", "${Status}", pkg).Output()
	return string(out) == "install ok installed"
}

func debInstalled() bool {
	out, _ := exec.Command("dpkg-query", "-W", "-f", "${Status}", "pve-image").Output()
	return len(out) != 0 && !strings.HasSuffix(string(out), "not-installed")
}

// dpkg runs a package manager command, waiting out a lock another process
// holds for up to two minutes.
func dpkg(t *testing.T, name string, args ...string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err == nil {
			return
		}
		if bytes.Contains(out, []byte("lock")) && time.Now().Before(deadline) {
			time.Sleep(3 * time.Second)
			continue
		}
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// purgeDeb removes the package with its configuration and checks that
// nothing of it is left.
func purgeDeb(t *testing.T) {
	dpkg(t, "dpkg", "--purge", "pve-image")
	if debInstalled() {
		t.Error("pve-image still installed after dpkg --purge")
	}
	for _, p := range []string{"/usr/bin/pve-image", "/usr/lib/pve-image", "/lib/systemd/system/pve-image-cri.service",
		"/usr/share/man/man1/pve-image.1.gz", "/usr/share/doc/pve-image"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is left after purge", p)
		}
	}
}
