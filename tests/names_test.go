package tests

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestNamesFollowTheReference: a template is named after the reference
// asked for, whatever reference first put the same bytes into the cache
// (a digest, an OCI layout), for convert, push and ls; and the cache holds
// the bytes once.
func TestNamesFollowTheReference(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	img := appImage(t, "names", v1.Config{})
	reg.Push(t, "corpus/app:latest", img)
	d, _ := img.Digest()
	c := newCLI(t)

	byDigest := c.ok("convert", reg.Host+"/corpus/app@"+d.String()).out()
	if !strings.Contains(filepath.Base(byDigest), "_sha256-"+d.Hex[:12]+"_") {
		t.Errorf("digest convert named %s", filepath.Base(byDigest))
	}
	byTag := c.ok("convert", reg.Host+"/corpus/app:latest").out()
	if want := strings.NewReplacer(":", "-", "/", "-").Replace(reg.Host) + "-corpus-app_latest_amd64.tar.zst"; filepath.Base(byTag) != want {
		t.Errorf("tag convert after a digest convert named %s, want %s", filepath.Base(byTag), want)
	}
	if filepath.Dir(byTag) != filepath.Dir(byDigest) || readFile(t, byTag) != readFile(t, byDigest) {
		t.Error("the same image under two references was built twice")
	}
	var ls struct {
		Templates []struct{ Size int64 }
	}
	if err := json.Unmarshal([]byte(c.ok("cache", "ls", "--json").stdout), &ls); err != nil {
		t.Fatal(err)
	}
	if len(ls.Templates) != 1 || ls.Templates[0].Size != int64(len(readFile(t, byTag))) {
		t.Errorf("cache ls: %+v; want one template, its bytes counted once", ls.Templates)
	}

	// An OCI layout of the same image first, then a push by tag: the
	// storage name and ls say the registry's name.
	c2 := newCLI(t)
	lp, err := layout.Write(filepath.Join(t.TempDir(), "ocidir"), emptyIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	c2.ok("convert", "oci:"+string(lp)+":v1")
	sim := startSim(t, pvesim.Options{})
	volid := c2.ok(append([]string{"push", reg.Host + "/corpus/app:latest"}, pveArgs(sim)...)...).out()
	if !strings.Contains(volid, "-corpus-app_latest_amd64.") {
		t.Errorf("pushed as %s", volid)
	}
	var rows []struct{ Volid, Image, Tag string }
	if err := json.Unmarshal([]byte(c2.ok(append([]string{"ls", "--json"}, pveArgs(sim)...)...).stdout), &rows); err != nil {
		t.Fatal(err)
	}
	// The cache met these bytes as ocidir:v1 first; the name on the
	// storage decides what ls calls them.
	if name := strings.NewReplacer(":", "-", "/", "-").Replace(reg.Host) + "-corpus-app"; len(rows) != 1 || rows[0].Image != name || rows[0].Tag != "latest" {
		t.Errorf("ls --json: %+v, want image %s tag latest", rows, name)
	}
}
