package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

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

// TestInspectDescribesWhatConversionRefuses: inspect reports, only
// conversion refuses — an image with nothing to run, an unknown USER, an
// entrypoint Proxmox cannot pass without the shim; and an image archive
// named .tar is read as an image, not as a template.
func TestInspectDescribesWhatConversionRefuses(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "nothing:1", Image(t, amd64, v1.Config{}, Layer(t, File("etc/motd", "hi\n"))))
	reg.Push(t, "ghost:1", Image(t, amd64, v1.Config{Entrypoint: []string{"/app"}, User: "ghost"}, Layer(t, File("app", "x"))))
	reg.Push(t, "app:1", appImage(t, "inspect", v1.Config{}))
	c := newCLI(t)

	for _, tc := range []struct{ image, refusal string }{
		{"nothing:1", "has no command"},
		{"ghost:1", `USER "ghost"`},
	} {
		var m template.Meta
		if err := json.Unmarshal([]byte(c.ok("inspect", "--json", reg.Host+"/"+tc.image).stdout), &m); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(m.Run.Refusal, tc.refusal) || m.Run.Kind == "" {
			t.Errorf("%s: kind %q refusal %q, want one about %q", tc.image, m.Run.Kind, m.Run.Refusal, tc.refusal)
		}
		if out := c.ok("inspect", reg.Host+"/"+tc.image).stdout; !strings.Contains(out, "Conversion:") || !strings.Contains(out, "refused: ") {
			t.Errorf("%s: inspect text does not say conversion is refused:\n%s", tc.image, out)
		}
		c.fails([]string{"convert", reg.Host + "/" + tc.image}, tc.refusal)
	}

	out := c.ok("inspect", "--init", "none", "--entrypoint", "/app,two words", reg.Host+"/app:1").stdout
	if !strings.Contains(out, "no Proxmox container can be created this way") || !strings.Contains(out, "splits at spaces") || strings.Contains(out, "lxc.md") {
		t.Errorf("inspect with an entrypoint Proxmox cannot pass:\n%s", out)
	}
	if out := c.ok("inspect", "--entrypoint", "/app,two words", reg.Host+"/app:1").stdout; !strings.Contains(out, "PVE_IMAGE_ARGV") {
		t.Errorf("with the shim the argv goes through its environment:\n%s", out)
	}

	dir := t.TempDir()
	lp, err := layout.Write(filepath.Join(dir, "layout"), emptyIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	img := appImage(t, "archive", v1.Config{})
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "app.tar")
	tarDir(t, filepath.Join(dir, "layout"), archive)
	var m template.Meta
	if err := json.Unmarshal([]byte(c.ok("inspect", "--json", archive).stdout), &m); err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); m.ManifestDigest != d.String() || m.Run.Kind != "application" {
		t.Errorf("an OCI archive .tar inspected as manifest %q kind %q, want the image %s", m.ManifestDigest, m.Run.Kind, d)
	}
}
