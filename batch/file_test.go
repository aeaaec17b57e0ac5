package batch

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestParseErrors: every fault names the file, the line and the key, and
// all of them are reported at once.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // each "line: key: text"
	}{
		{"empty", "", []string{"1: the build file is empty"}},
		{"comments only", "# nothing\n", []string{"1: the build file is empty"}},
		{"no images", "defaults:\n  init: auto\n", []string{"1: images: missing"}},
		{"empty images", "images: []\n", []string{"1: images: an empty list"}},
		{"unknown top key", "images:\n  - ref: alpine\noutputs:\n  dir: x\n", []string{`3: outputs: unknown key "outputs" (did you mean "output"?)`}},
		{"unknown image key", "images:\n  - ref: alpine\n    platform: linux/amd64\n", []string{`3: images[0].platform: unknown key "platform" (did you mean "platforms"?)`}},
		{"unknown default key", "defaults:\n  compresion: gz\nimages: [alpine]\n", []string{`2: defaults.compresion: unknown key "compresion" (did you mean "compression"?)`}},
		{"bad ref", "images:\n  - ref: alpine\n  - ref: Not/Valid:tag\n", []string{"3: images[1].ref: image reference"}},
		{"scheme ref", "images:\n  - ref: foo://bar\n", []string{`2: images[0].ref: image reference "foo://bar": unknown transport "foo"`}},
		{"missing ref", "images:\n  - platforms: [linux/amd64]\n", []string{"2: images[0].ref: missing: every image needs a ref"}},
		{"bad platform", "images:\n  - ref: alpine\n    platforms: [linux/amd64, linux/amd65]\n", []string{`3: images[0].platforms[1]: platform "linux/amd65": unknown architecture "amd65"`}},
		{"windows", "defaults:\n  platforms: [windows/amd64]\nimages: [alpine]\n", []string{"2: defaults.platforms[0]: platform \"windows/amd64\": templates are Linux root file systems"}},
		{"platform twice", "images:\n  - ref: alpine\n    platforms: [linux/arm64, linux/arm64]\n", []string{"3: images[0].platforms[1]: linux/arm64 is listed twice"}},
		{"platforms not a list", "images:\n  - ref: alpine\n    platforms: linux/amd64\n", []string{`3: images[0].platforms: want a list, not "linux/amd64"`}},
		{"bad init", "defaults:\n  init: systemd\nimages: [alpine]\n", []string{`2: defaults.init: "systemd": want auto, shim or none`}},
		{"bad level", "images:\n  - ref: alpine\n    compression: gz\n    compression-level: 12\n", []string{"2: images[0].compression-level: .tar.gz compression level 12: want 1 to 9"}},
		{"level twice", "images:\n  - ref: alpine\n    level: 3\n    compression-level: 4\n", []string{"4: images[0].compression-level: compression-level and level are the same option"}},
		{"bad bool", "images:\n  - ref: alpine\n    squash-high-ids: yes please\n", []string{`3: images[0].squash-high-ids: want true or false, not "yes please"`}},
		{"bad size", "defaults:\n  max-size: lots\nimages: [alpine]\n", []string{`2: defaults.max-size: want a size such as 64G or 512M, not "lots"`}},
		{"oci-archive compressed", "images:\n  - ref: alpine\n    format: oci-archive\n    compression: gz\n", []string{"2: images[0]: format oci-archive is an uncompressed .tar"}},
		{"registry with tag", "images: [alpine]\noutput:\n  registry: registry.example/t:x\n", []string{"3: output.registry: \"registry.example/t:x\": name the repository without a tag"}},
		{"proxmox without nodes", "images: [alpine]\noutput:\n  proxmox: {storage: local}\n", []string{"3: output.proxmox: no nodes"}},
		{"proxmox both", "images: [alpine]\noutput:\n  proxmox: {storage: local, nodes: [pve1], all-nodes: true}\n", []string{"3: output.proxmox: nodes and all-nodes: give one"}},
		{"key twice", "images: [alpine]\nimages: [debian]\n", []string{"2: images: given twice (first on line 1)"}},
		{"syntax", "images:\n  - ref: alpine\n    x: y: z\n", []string{"3: mapping values are not allowed in this context"}},
		{"tab", "images:\n  - ref: alpine\n\t- x\n", []string{"2: found a tab character"}},
		{"several", "defaults:\n  init: x\nimages:\n  - ref: alpine\n    platforms: [linux/amd65]\n  - bad: 1\n", []string{
			`2: defaults.init: "x"`, `5: images[0].platforms[0]`, `6: images[1].bad: unknown key`, `6: images[1].ref: missing`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("pve-images.yaml", []byte(tc.yaml), nil)
			if err == nil {
				t.Fatal("parsed")
			}
			if !IsInvalid(err) {
				t.Fatalf("not an InvalidError: %v", err)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, "pve-images.yaml:"+w) {
					t.Errorf("error lacks %q:\n%s", "pve-images.yaml:"+w, msg)
				}
			}
			if n := len(strings.Split(msg, "\n")); n != len(tc.want) {
				t.Errorf("%d errors, want %d:\n%s", n, len(tc.want), msg)
			}
		})
	}
}

func TestParseFile(t *testing.T) {
	const file = `# the fleet
defaults:
  platforms: [linux/amd64]
  init: auto
  compression-level: 5
images:
  - ref: registry.example.org/team/app:1.4
    platforms: [linux/amd64, linux/arm64]
  - ref: alpine
    init: none
    compression: gz
  - docker.io/library/alpine:latest
  - ref: oci-archive:images/app.tar
output:
  dir: templates/
  registry: registry.example.org/pve-templates
  chunk-size: 256M
  proxmox: {storage: local, nodes: [pve1, pve2]}
`
	f, err := Parse("/ci/pve-images.yaml", []byte(file), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Images) != 4 || f.Images[0].Line != 7 || len(f.Images[0].Platforms) != 2 || len(f.Images[1].Platforms) != 1 {
		t.Fatalf("images %+v", f.Images)
	}
	if *f.Images[0].Convert.Level != 5 || *f.Images[1].Convert.Init != "none" || *f.Images[1].Convert.Compression != "gz" {
		t.Errorf("options not merged: %+v", f.Images[1].Convert)
	}
	if got := f.Images[3].Reference.Path; got != "/ci/images/app.tar" {
		t.Errorf("a local source is relative to the build file: %s", got)
	}
	if f.Output.Dir != "templates/" || f.Output.Registry != "registry.example.org/pve-templates" || f.Output.ChunkSize != 256<<20 ||
		f.Output.Proxmox.Storage != "local" || strings.Join(f.Output.Proxmox.Nodes, ",") != "pve1,pve2" {
		t.Errorf("output %+v %+v", f.Output, f.Output.Proxmox)
	}
	// alpine and docker.io/library/alpine:latest are one image, built once.
	if len(f.Warnings) != 0 {
		t.Errorf("warnings %v (alpine differs in options)", f.Warnings)
	}
	if n := len(f.Items(Shard{})); n != 5 {
		t.Errorf("%d items, want 5", n)
	}
}

// TestSameImageTwice: an image named twice (however spelt) is built once,
// with a warning naming both lines.
func TestSameImageTwice(t *testing.T) {
	f, err := Parse("b.yaml", []byte("images:\n  - alpine\n  - ref: docker.io/library/alpine:latest\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Warnings) != 1 || !strings.Contains(f.Warnings[0], "b.yaml:3: images[1]") || !strings.Contains(f.Warnings[0], "line 2") {
		t.Errorf("warnings %v", f.Warnings)
	}
	if n := len(f.Items(Shard{})); n != 1 {
		t.Errorf("%d items, want 1", n)
	}
}

// TestShards: shards are disjoint, cover everything, and an item stays in
// its shard when the file changes around it.
func TestShards(t *testing.T) {
	var b strings.Builder
	b.WriteString("defaults:\n  platforms: [linux/amd64, linux/arm64]\nimages:\n")
	for i := range 40 {
		fmt.Fprintf(&b, "  - registry.example/img%d:1\n", i)
	}
	f, err := Parse("b.yaml", []byte(b.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 3, 7} {
		seen := map[string]int{}
		for i := 1; i <= n; i++ {
			items := f.Items(Shard{I: i, N: n})
			if n > 1 && (len(items) == 0 || len(items) == 80) {
				t.Errorf("shard %d/%d has %d of 80 items", i, n, len(items))
			}
			for _, it := range items {
				seen[it.String()]++
			}
		}
		if len(seen) != 80 {
			t.Errorf("%d shards cover %d of 80 items", n, len(seen))
		}
		for k, c := range seen {
			if c != 1 {
				t.Errorf("%d shards: %s in %d shards", n, k, c)
			}
		}
	}
	// Reversed and with more images, every item keeps its shard.
	var r strings.Builder
	r.WriteString("defaults:\n  platforms: [linux/arm64, linux/amd64]\nimages:\n")
	for i := 49; i >= 0; i-- {
		fmt.Fprintf(&r, "  - registry.example/img%d:1\n", i)
	}
	g, err := Parse("b.yaml", []byte(r.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]bool{}
	for _, it := range g.Items(Shard{I: 2, N: 3}) {
		in[it.String()] = true
	}
	for _, it := range f.Items(Shard{I: 2, N: 3}) {
		if !in[it.String()] {
			t.Errorf("%s left shard 2/3 when the file changed", it)
		}
	}
}

func TestParseShard(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{{"1/2", true}, {"2/2", true}, {"1/1", true}, {"0/2", false}, {"3/2", false}, {"1", false}, {"a/b", false}, {"1/0", false}} {
		if _, err := ParseShard(tc.in); (err == nil) != tc.ok {
			t.Errorf("ParseShard(%q): %v", tc.in, err)
		}
	}
}

func TestLockRoundTrip(t *testing.T) {
	dir := t.TempDir()
	build := filepath.Join(dir, "pve-images.yaml")
	if got := LockPath(build); got != filepath.Join(dir, "pve-images.lock") {
		t.Fatalf("LockPath %s", got)
	}
	l, err := LoadLock(LockPath(build))
	if err != nil || len(l.Digests) != 0 {
		t.Fatalf("missing lock: %v %v", l, err)
	}
	h1, _ := v1.NewHash("sha256:" + strings.Repeat("1", 64))
	h2, _ := v1.NewHash("sha256:" + strings.Repeat("2", 64))
	l.Digests = map[string]v1.Hash{"registry.example/b:1": h2, "registry.example/a:1": h1}
	if err := l.Write(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(l.Path)
	if strings.Index(string(b), "a:1") > strings.Index(string(b), "b:1") {
		t.Errorf("lock not sorted:\n%s", b)
	}
	back, err := LoadLock(l.Path)
	if err != nil || !back.equal(l.Digests) {
		t.Fatalf("read back %v, %v", back, err)
	}
	if des, _ := os.ReadDir(dir); len(des) != 1 {
		t.Errorf("left beside the lock: %v", des)
	}
	os.WriteFile(l.Path, []byte("version: 1\nimages:\n  - ref: x\n    digest: sha256:abc\n"), 0o644)
	if _, err := LoadLock(l.Path); err == nil || !strings.Contains(err.Error(), "pve-images.lock:3: images[0].digest") {
		t.Errorf("bad digest: %v", err)
	}
}

func TestReports(t *testing.T) {
	rep := &Report{Results: []*Result{
		{Ref: "registry.example/a:1", Platform: "linux/amd64", Status: Built, File: "a.tar.zst", SHA256: "ab", Size: 3, Seconds: 1.5, Destinations: []string{"dir:a.tar.zst"}},
		{Ref: "registry.example/b:1", Platform: "linux/arm64", Status: Failed, Error: "image is for linux/amd64 only\nsecond line", Destinations: []string{}},
		{Ref: "registry.example/c:1", Platform: "linux/amd64", Status: Cached, Destinations: []string{}},
	}}
	var j struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(rep.JSON(), &j); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ref", "platform", "digest", "file", "sha256", "size", "status", "error", "seconds", "destinations"} {
		if _, ok := j.Results[1][k]; !ok {
			t.Errorf("JSON result lacks %q", k)
		}
	}
	var x struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Cases    []struct {
				Name      string `xml:"name,attr"`
				Classname string `xml:"classname,attr"`
				Failure   *struct {
					Message string `xml:"message,attr"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(rep.JUnit("build"), &x); err != nil {
		t.Fatal(err)
	}
	s := x.Suites[0]
	if s.Tests != 3 || s.Failures != 1 || s.Cases[1].Failure == nil || s.Cases[1].Failure.Message != "image is for linux/amd64 only" ||
		s.Cases[0].Classname != "registry.example/a:1" || s.Cases[0].Name != "linux/amd64" {
		t.Errorf("JUnit %+v", x)
	}
	if got := rep.Summary(); got != "3 templates: 1 built, 1 cached, 1 failed" {
		t.Errorf("summary %q", got)
	}
}
