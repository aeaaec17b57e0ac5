package export

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pve-image/pve-image/template"
)

const (
	srcRepo   = "registry.example.org/team/app"
	srcDigest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	othDigest = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// recordConf is a pct.conf whose description holds pve-image run's record.
func recordConf(rec string) string {
	if rec == "" {
		return testConf
	}
	return "#pve-image: " + rec + "\n" + testConf
}

// metaJSON is a template's image.json naming repo@digest, run by the shim.
func metaJSON(t testing.TB, repo, digest string) string {
	t.Helper()
	m := template.Meta{Converter: "pve-image", Repository: repo, ManifestDigest: digest,
		Config: template.RunConfig{Entrypoint: []string{"/usr/bin/app"}, Cmd: []string{"--serve"}, Env: []string{"PATH=/usr/bin", "APP=1"},
			User: "1000:1000", WorkingDir: "/srv", ExposedPorts: []string{"8080/tcp"}},
		Run: template.RunInfo{Kind: "application", Init: "shim"}}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// shimTree is a container made from a pve-image template run by the shim.
func shimTree(meta string) []ent {
	tree := []ent{dir("./"), dir("./etc/"), file("./etc/hostname", "web\n"), dir("./etc/pve-image/"),
		file("./etc/pve-image/run.json", `{"args":["/usr/bin/app","--from-spec"],"env":["PATH=/usr/bin","SPEC=1"],"workingDir":"/work","user":"app","uid":1000,"gid":1000,"stopSignal":15,"stopTimeout":10}`),
		dir("./sbin/"), symlink("./sbin/init", "pve-image-init"), file("./sbin/pve-image-init", "shim").perm(0o755),
		dir("./usr/"), dir("./usr/bin/"), file("./usr/bin/app", "app").perm(0o755)}
	if meta != "" {
		tree = append(tree, file("./etc/pve-image/image.json", meta))
	}
	return tree
}

// TestOriginOf: the source image is the one the container's Proxmox record
// names, and only when the container's image.json names the same one;
// otherwise the export is one layer and the note says why.
func TestOriginOf(t *testing.T) {
	good := `{"image":"` + srcRepo + `:1","digest":"` + srcDigest + `"}`
	for _, tc := range []struct {
		name     string
		meta     string // image.json, "" for none
		rec      string // the record's JSON, "" for none
		wantRef  string
		wantNote []string
	}{
		{name: "agree", meta: metaJSON(t, srcRepo, srcDigest), rec: good, wantRef: srcRepo + "@" + srcDigest},
		{name: "agree, record by digest", meta: metaJSON(t, srcRepo, srcDigest), rec: `{"image":"` + srcRepo + `@` + srcDigest + `","digest":"` + srcDigest + `"}`,
			wantRef: srcRepo + "@" + srcDigest},
		{name: "plain container"},
		{name: "no record", meta: metaJSON(t, srcRepo, srcDigest), wantNote: []string{"names " + srcRepo + "@" + srcDigest, "holds no pve-image record", "one layer", "nothing of " + srcRepo + " is fetched"}},
		{name: "image.json names another image", meta: metaJSON(t, "registry.example.org/private/secret", srcDigest), rec: good,
			wantNote: []string{"names registry.example.org/private/secret@", "record (which the container cannot change) says it was made from " + srcRepo + "@", "nothing of registry.example.org/private/secret is fetched"}},
		{name: "image.json names another digest", meta: metaJSON(t, srcRepo, othDigest), rec: good, wantNote: []string{othDigest, "one layer"}},
		{name: "image.json gone", rec: good, wantNote: []string{"record says it was made from " + srcRepo + ":1", "has no /etc/pve-image/image.json"}},
		{name: "image.json broken", meta: "{", rec: good, wantNote: []string{"does not name the image", "one layer"}},
		{name: "not a registry image", meta: metaJSON(t, "app", srcDigest), rec: `{"image":"oci-archive:/srv/app.tar","digest":"` + srcDigest + `"}`,
			wantNote: []string{"oci-archive:/srv/app.tar, not an image in a registry"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rootfs := flatten(t, mkTar(t, shimTree(tc.meta)...))
			var rec *runRecord
			if tc.rec != "" {
				rec = readRecord(recordConf(tc.rec)[1:strings.Index(recordConf(tc.rec), "\n")])
				if rec == nil {
					t.Fatalf("record %s does not parse", tc.rec)
				}
			}
			o, note := originOf(rootfs, rec, nil)
			if tc.wantRef != "" {
				if o == nil || o.ref != tc.wantRef || note != "" {
					t.Fatalf("origin %+v, note %q; want %s", o, note, tc.wantRef)
				}
				return
			}
			if o != nil {
				t.Fatalf("trusted %s", o.ref)
			}
			for _, w := range tc.wantNote {
				if !strings.Contains(note, w) {
					t.Errorf("note %q lacks %q", note, w)
				}
			}
			if len(tc.wantNote) == 0 && note != "" {
				t.Errorf("note %q for a container pve-image never made", note)
			}
		})
	}
}

// TestArchiveUntrustedSource: a container whose image.json names another
// image than its record exports as one layer with a note, and nothing of
// either image is fetched (this Exporter has no puller: a fetch would
// fail). Its program is the one the shim runs, never the shim.
func TestArchiveUntrustedSource(t *testing.T) {
	good := `{"image":"` + srcRepo + `:1","digest":"` + srcDigest + `"}`
	dir := t.TempDir()
	path := filepath.Join(dir, "vzdump-lxc-100-2024_01_01-00_00_00.tar")
	os.WriteFile(path, vzdump(t, recordConf(good), shimTree(metaJSON(t, "registry.example.org/private/secret", srcDigest))...), 0o644)
	out := filepath.Join(dir, "out.tar")
	res, err := (&Exporter{}).Archive(context.Background(), path, Request{To: "oci-archive:" + out})
	if err != nil {
		t.Fatal(err)
	}
	if res.Source != "" || len(res.Layers) != 1 || res.Layers[0].What != "root file system" {
		t.Errorf("result %+v: want one layer", res)
	}
	if !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "registry.example.org/private/secret") }) {
		t.Errorf("notes %q do not say why", res.Notes)
	}
	cfg, _ := readOCIArchive(t, out).ConfigFile()
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/usr/bin/app", "--from-spec"}) || len(cfg.Config.Cmd) != 0 ||
		cfg.Config.WorkingDir != "/work" || cfg.Config.User != "app" || !slices.Contains(cfg.Config.Env, "SPEC=1") {
		t.Errorf("config %+v: want the shim's program", cfg.Config)
	}
}

// TestSingleLayerProgram: one layer of a container keeps its program: the
// source image's config when its origin is trusted, with the record's
// overrides; the shim's spec when not; /sbin/init for a system container;
// never pve-image's shim.
func TestSingleLayerProgram(t *testing.T) {
	good := `{"image":"` + srcRepo + `:1","digest":"` + srcDigest + `"}`
	over := `{"image":"` + srcRepo + `:1","digest":"` + srcDigest + `","entrypoint":["/usr/bin/app","--debug"],"env":["APP=2"]}`
	system := []ent{dir("./"), dir("./sbin/"), file("./sbin/init", "systemd").perm(0o755)}
	for _, tc := range []struct {
		name       string
		rec        string
		tree       []ent
		entrypoint []string
		cmd        []string
		env        []string
		user, wd   string
		ports      bool
	}{
		{name: "trusted", rec: good, tree: shimTree(metaJSON(t, srcRepo, srcDigest)), entrypoint: []string{"/usr/bin/app"}, cmd: []string{"--serve"},
			env: []string{"PATH=/usr/bin", "APP=1"}, user: "1000:1000", wd: "/srv", ports: true},
		{name: "trusted, with run's overrides", rec: over, tree: shimTree(metaJSON(t, srcRepo, srcDigest)), entrypoint: []string{"/usr/bin/app", "--debug"},
			env: []string{"PATH=/usr/bin", "APP=2"}, user: "1000:1000", wd: "/srv", ports: true},
		{name: "no record: the shim's spec", tree: shimTree(metaJSON(t, srcRepo, srcDigest)), entrypoint: []string{"/usr/bin/app", "--from-spec"},
			env: []string{"PATH=/usr/bin", "SPEC=1"}, user: "app", wd: "/work"},
		{name: "system container", tree: system, cmd: []string{"/sbin/init"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "vzdump-lxc-100-2024_01_01-00_00_00.tar")
			os.WriteFile(path, vzdump(t, recordConf(tc.rec), tc.tree...), 0o644)
			out := filepath.Join(dir, "out.tar")
			if _, err := (&Exporter{}).Archive(context.Background(), path, Request{To: "oci-archive:" + out, SingleLayer: true}); err != nil {
				t.Fatal(err)
			}
			img := readOCIArchive(t, out)
			cfg, _ := img.ConfigFile()
			c := cfg.Config
			if !slices.Equal(c.Entrypoint, tc.entrypoint) || !slices.Equal(c.Cmd, tc.cmd) || !slices.Equal(c.Env, tc.env) || c.User != tc.user ||
				c.WorkingDir != tc.wd || (len(c.ExposedPorts) > 0) != tc.ports {
				t.Errorf("config entrypoint %q cmd %q env %q user %q workdir %q ports %v\nwant entrypoint %q cmd %q env %q user %q workdir %q",
					c.Entrypoint, c.Cmd, c.Env, c.User, c.WorkingDir, c.ExposedPorts, tc.entrypoint, tc.cmd, tc.env, tc.user, tc.wd)
			}
			ls, _ := img.Layers()
			rc, _ := ls[0].Uncompressed()
			defer rc.Close()
			var b bytes.Buffer
			b.ReadFrom(rc)
			tr := tar.NewReader(&b)
			for {
				h, err := tr.Next()
				if err != nil {
					break
				}
				if h.Name == "./etc/pve-image/image.json" || h.Name == "./etc/hostname" {
					t.Errorf("the layer holds %s", h.Name)
				}
			}
		})
	}
}
