package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/template"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestOutputCompressions writes each format with -o and checks that GNU tar
// (Proxmox's extractor) reads it with the flag the suffix implies.
func TestOutputCompressions(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", smallImage(t, "fmt"))
	c := newCLI(t)
	dir := t.TempDir()
	for _, tc := range []struct{ name, flag string }{
		{"app.tar.zst", "--zstd"}, {"app.tar.gz", "-z"}, {"app.tar.xz", "-J"}, {"app.tar", ""},
	} {
		out := filepath.Join(dir, tc.name)
		if got := c.ok("convert", reg.Host+"/app:1", "-o", out).out(); got != out {
			t.Errorf("convert -o printed %q", got)
		}
		args := []string{"-tf", out}
		if tc.flag != "" {
			args = append(args, tc.flag)
		}
		list, err := exec.Command("tar", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("tar %v: %v\n%s", args, err, list)
		}
		if !strings.Contains(string(list), "./app\n") || !strings.HasPrefix(string(list), "./\n") {
			t.Errorf("%s lists:\n%s", tc.name, list)
		}
	}
	c.fails([]string{"convert", reg.Host + "/app:1", "-o", filepath.Join(dir, "app.zip")}, "must end in .tar.zst")
	c.fails([]string{"convert", reg.Host + "/app:1", "-o", filepath.Join(dir, "app.tar.bz2")}, "bzip2")
	c.fails([]string{"convert", reg.Host + "/app:1", "-o", filepath.Join(dir, "app.tar"), "--compression-level", "3"}, "no compression level")
	r := c.ok("convert", reg.Host+"/app:1", "-o", filepath.Join(dir, "my app.tar.zst"))
	if !strings.Contains(r.stderr, `Proxmox stores "my app.tar.zst" as "my_app.tar.zst"`) {
		t.Errorf("no warning about the name: %s", r.stderr)
	}
}

// TestInspect reports the run config, the ostype Proxmox will detect and the
// warnings, for an image and for the template made from it.
func TestInspect(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	cfg := v1.Config{
		Entrypoint: []string{"/docker-entrypoint.sh"}, Cmd: []string{"nginx", "-g", "daemon off;"},
		Env: []string{"PATH=/usr/sbin:/usr/bin", "NGINX_VERSION=1.27"}, User: "101:101", WorkingDir: "/srv",
		StopSignal: "SIGQUIT", Volumes: map[string]struct{}{"/var/cache/nginx": {}}, ExposedPorts: map[string]struct{}{"80/tcp": {}},
	}
	reg.Push(t, "web:1", Image(t, amd64, cfg,
		Layer(t, File("etc/os-release", "ID=wolfi\n"), Dir("dev/"), Device("dev/console", '3'),
			WithPAX(File("f", "x"), "SCHILY.xattr.security.selinux", "ctx"))))
	c := newCLI(t)
	var m template.Meta
	if err := json.Unmarshal([]byte(c.ok("inspect", "--json", reg.Host+"/web:1").stdout), &m); err != nil {
		t.Fatal(err)
	}
	check := func(what string, m template.Meta) {
		t.Helper()
		if strings.Join(m.Config.Cmd, " ") != "nginx -g daemon off;" || m.Config.User != "101:101" || m.Config.StopSignal != "SIGQUIT" ||
			m.Config.WorkingDir != "/srv" || len(m.Config.Env) != 2 || m.Config.Volumes[0] != "/var/cache/nginx" || m.Config.ExposedPorts[0] != "80/tcp" {
			t.Errorf("%s: run config %+v", what, m.Config)
		}
		if m.Facts.OSType != "unmanaged" || !strings.Contains(m.Facts.OSRefusal, "unable to detect OS distribution") {
			t.Errorf("%s: ostype %q refusal %q", what, m.Facts.OSType, m.Facts.OSRefusal)
		}
		w := strings.Join(m.Facts.Warnings, "\n")
		for _, want := range []string{"device node", "security.selinux", "ostype=unmanaged"} {
			if !strings.Contains(w, want) {
				t.Errorf("%s: warnings lack %q:\n%s", what, want, w)
			}
		}
		if m.Arch != "amd64" || m.ConfigDigest == "" || m.ManifestDigest == "" || m.Entries == 0 {
			t.Errorf("%s: arch %q digests %q %q entries %d", what, m.Arch, m.ConfigDigest, m.ManifestDigest, m.Entries)
		}
	}
	check("image", m)
	if ls := c.ok("cache", "ls").stdout; !strings.Contains(ls, "0 template(s)") {
		t.Errorf("inspect wrote a template:\n%s", ls)
	}

	path := c.ok("convert", reg.Host+"/web:1").out()
	var tm template.Meta
	if err := json.Unmarshal([]byte(c.ok("inspect", "--json", path).stdout), &tm); err != nil {
		t.Fatal(err)
	}
	check("template", tm)
	if tm.ManifestDigest != m.ManifestDigest || tm.SHA256 == "" || tm.Size == 0 {
		t.Errorf("template inspect: manifest %s (image %s), sha256 %q, size %d", tm.ManifestDigest, m.ManifestDigest, tm.SHA256, tm.Size)
	}
	text := c.ok("inspect", reg.Host+"/web:1").stdout
	for _, want := range []string{"Detected OS:", "unmanaged", "StopSignal:", "SIGQUIT", "Warnings:", "Proxmox 9.1+:", "cmode=\"console\""} {
		if !strings.Contains(text, want) {
			t.Errorf("inspect text lacks %q:\n%s", want, text)
		}
	}
	// A template pve-image did not write: facts only.
	plain := filepath.Join(t.TempDir(), "debian-12-standard_12.7-1_amd64.tar.zst")
	os.WriteFile(plain, Zstd(Tar(t, Dir("./"), File("./etc/os-release", "ID=debian\n"), File("./etc/debian_version", "12.7\n"))), 0o644)
	if out := c.ok("inspect", plain).stdout; !strings.Contains(out, "debian (/etc/os-release has ID=debian)") {
		t.Errorf("inspect of a plain template:\n%s", out)
	}
}
