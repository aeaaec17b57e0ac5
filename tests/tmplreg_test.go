package tests

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestPublishFreshCacheIdentical: a template published once is what every
// other machine gets from --template-registry instead of converting,
// byte-identical to its own conversion, with no layer fetched from the
// image's registry; a damaged artifact is refused with a warning and the
// image converted locally instead, to the same bytes.
func TestPublishFreshCacheIdentical(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	source := StartProxy(t, reg.Host)
	templates := StartRegistry(t, RegistryOptions{})
	tproxy := StartProxy(t, templates.Host)
	base := baseLayer(t)
	reg.Push(t, "multi:1", Index(t, map[string]v1.Image{
		"linux/amd64": fleetImage(t, base, amd64, "pub amd64"), "linux/arm64": fleetImage(t, base, arm64, "pub arm64")}))
	ref := source.Host + "/multi:1"
	repo := tproxy.Host + "/pve-templates"

	c := newCLI(t)
	local := c.ok("convert", ref).out()
	pub := c.ok("publish", ref, "--to", repo)
	if !strings.HasPrefix(pub.out(), repo+"@sha256:") || !strings.Contains(pub.stderr, "(uploaded), tagged tmpl-") {
		t.Errorf("publish: %q\n%s", pub.out(), pub.stderr)
	}
	c.ok("--platform", "linux/arm64", "publish", ref, "--to", repo)
	human := strings.ReplaceAll(source.Host, ":", "-") + "-multi_1"
	if idx := crane(t, "manifest", templates.Host+"/pve-templates:"+human); !strings.Contains(idx, `"architecture":"amd64"`) ||
		!strings.Contains(idx, `"architecture":"arm64"`) || !strings.Contains(idx, `"artifactType":"application/vnd.pve-image.template.v1"`) {
		t.Errorf("the human tag's index: %s", idx)
	}
	if again := c.ok("publish", ref, "--to", repo); !strings.Contains(again.stderr, "(already there)") {
		t.Errorf("publishing again: %s", again.stderr)
	}

	source.Reset()
	fresh := newCLI(t)
	got := fresh.ok("--template-registry", repo, "convert", ref).out()
	if readFile(t, got) != readFile(t, local) || filepath.Base(got) != filepath.Base(local) {
		t.Error("the template from the template registry differs from the local conversion")
	}
	if n := source.Count("GET", "blob"); n != 0 {
		t.Errorf("%d blobs fetched from the image's registry", n)
	}
	out := filepath.Join(t.TempDir(), "app.tar.zst")
	newCLI(t).ok("--template-registry", repo, "convert", ref, "-o", out)
	if readFile(t, out) != readFile(t, local) {
		t.Error("convert -o from the template registry differs")
	}

	// A blob damaged on its way: refused, converted here, same bytes.
	tproxy.SetTamper(func(path string, body []byte) []byte {
		if strings.Contains(path, "/blobs/") && len(body) > 4096 {
			body = bytes.Clone(body)
			body[len(body)/2] ^= 0xff
		}
		return body
	})
	damaged := newCLI(t)
	r := damaged.ok("--template-registry", repo, "convert", ref)
	if readFile(t, r.out()) != readFile(t, local) || !strings.Contains(r.stderr, "template registry: not using its template; converting locally") {
		t.Errorf("damaged artifact: stderr %s", r.stderr)
	}
	if source.Count("GET", "blob") == 0 {
		t.Error("the damaged artifact was used: nothing was fetched to convert")
	}
}

// TestPublishTemplateFile: a template file is published under its human
// tags; one pve-image did not make needs a tag.
func TestPublishTemplateFile(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	templates := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", fleetImage(t, baseLayer(t), amd64, "file"))
	c := newCLI(t)
	file := filepath.Join(t.TempDir(), "app_1_amd64.tar.zst")
	c.ok("convert", reg.Host+"/app:1", "-o", file)
	pub := c.ok("publish", file, "--to", templates.Host+"/files")
	if !strings.Contains(pub.stderr, "tagged app_1_amd64, app_1") {
		t.Errorf("publish: %s", pub.stderr)
	}
	if m := crane(t, "manifest", templates.Host+"/files:app_1_amd64"); !strings.Contains(m, `"org.opencontainers.image.title":"app_1_amd64.tar.zst"`) {
		t.Errorf("manifest: %s", m)
	}
	other := filepath.Join(t.TempDir(), "handmade.tar.zst")
	writeFile(t, other, string(Zstd(Tar(t, Dir("etc/"), File("etc/os-release", "ID=debian\n")))))
	c.fails([]string{"publish", other, "--to", templates.Host + "/files"}, "handmade.tar.zst says nothing of its image; give the tag")
	if pub := c.ok("publish", other, "--to", templates.Host+"/files:handmade"); !strings.Contains(pub.stderr, "tagged handmade\n") {
		t.Errorf("publish with a tag: %s", pub.stderr)
	}
}

// TestCRITemplateRegistry: pve-image cri with templateRegistry in its
// config takes kubelet's images from the template registry: no layer is
// fetched from the image's registry, and the template stored is the one
// published.
func TestCRITemplateRegistry(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	source := StartProxy(t, reg.Host)
	templates := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", fleetImage(t, baseLayer(t), amd64, "cri"))
	ref := source.Host + "/app:1"
	c := newCLI(t)
	c.ok("publish", ref, "--to", templates.Host+"/pve-templates")
	local := c.ok("convert", ref).out()
	config := writeFile(t, filepath.Join(t.TempDir(), "cri.yaml"), "templateRegistry: "+templates.Host+"/pve-templates\n")
	source.Reset()
	d := startCRI(t, newCLI(t), "--config", config)
	d.crictlOK(t, "pull", ref)
	if n := source.Count("GET", "blob"); n != 1 { // the config, to resolve the platform
		t.Errorf("%d blobs fetched from the image's registry, want only its config", n)
	}
	stored, _ := filepath.Glob(filepath.Join(d.StoreDir, "*-app_1_amd64.*.tar.zst"))
	if len(stored) != 1 || readFile(t, stored[0]) != readFile(t, local) {
		t.Errorf("stored %v, not the published template", stored)
	}
	m := d.metrics(t)
	for _, want := range []string{"pve_image_template_registry_fetches_total 1", "pve_image_conversions_total 0"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
