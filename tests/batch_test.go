package tests

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/batch"
	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

var arm64 = v1.Platform{OS: "linux", Architecture: "arm64"}

// baseLayer is a base layer several fleet images share: an Alpine-like
// system with a /sbin/init, and 256 KiB that do not compress away, so
// that fetching it twice would show in the registry's counts.
func baseLayer(t *testing.T) v1.Layer {
	data := make([]byte, 256<<10)
	rand.New(rand.NewSource(1)).Read(data)
	return Layer(t, Dir("etc/"), File("etc/os-release", "ID=alpine\nVERSION_ID=3.20.0\n"), File("etc/alpine-release", "3.20.0\n"),
		Dir("sbin/"), Exec("sbin/init", "#!/bin/sh\nexec sleep 1000\n"), Dir("usr/"), File("usr/base.dat", string(data)))
}

// fleetImage is a system image on base with a layer of its own.
func fleetImage(t *testing.T, base v1.Layer, p v1.Platform, marker string) v1.Image {
	return Image(t, p, v1.Config{}, base, Layer(t, Dir("srv/"), File("srv/marker", marker)))
}

// brokenImage fails to convert: its USER is nobody the image knows.
func brokenImage(t *testing.T, base v1.Layer) v1.Image {
	return Image(t, amd64, v1.Config{Cmd: []string{"/sbin/init"}, Entrypoint: []string{"/usr/bin/app"}, User: "nobody-here"}, base,
		Layer(t, Dir("usr/bin/"), Exec("usr/bin/app", "#!/bin/sh\n")))
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readReport(t *testing.T, path string) *batch.Report {
	t.Helper()
	var rep batch.Report
	if err := json.Unmarshal([]byte(readFile(t, path)), &rep); err != nil {
		t.Fatal(err)
	}
	return &rep
}

// byItem indexes results by "ref platform".
func byItem(rep *batch.Report) map[string]*batch.Result {
	m := map[string]*batch.Result{}
	for _, r := range rep.Results {
		m[r.Ref+" "+r.Platform] = r
	}
	return m
}

func exitCode(r result) int {
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		return ee.ExitCode()
	}
	if r.err != nil {
		return -1
	}
	return 0
}

// TestBuildBatch builds a fleet: eight images on one base layer, one of
// them named twice, one for two platforms, one that fails. Everything but
// the failing one is converted, written to the output directory, published
// and pushed to both nodes; shared blobs are fetched once; the report, the
// JUnit file and the lock say so; a second run is all cached.
func TestBuildBatch(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	proxy := StartProxy(t, reg.Host)
	templates := StartRegistry(t, RegistryOptions{})
	sim := startSim(t, pvesim.Options{})
	base := baseLayer(t)
	baseDigest, _ := base.Digest()
	var images strings.Builder
	for i := range 8 {
		reg.Push(t, fmt.Sprintf("img%d:1", i), fleetImage(t, base, amd64, fmt.Sprint(i)))
		fmt.Fprintf(&images, "  - ref: %s/img%d:1\n", proxy.Host, i)
	}
	reg.Push(t, "multi:1", Index(t, map[string]v1.Image{
		"linux/amd64": fleetImage(t, base, amd64, "multi amd64"), "linux/arm64": fleetImage(t, base, arm64, "multi arm64")}))
	reg.Push(t, "broken:1", brokenImage(t, base))
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "pve-images.yaml"), fmt.Sprintf(`defaults:
  platforms: [linux/amd64]
  init: auto
images:
%s  - %s/img0:1
  - ref: %s/multi:1
    platforms: [linux/amd64, linux/arm64]
  - ref: %s/broken:1
output:
  dir: out
  registry: %s/fleet
  proxmox: {storage: local, nodes: [pve1, pve2]}
`, images.String(), proxy.Host, proxy.Host, proxy.Host, templates.Host))
	c := newCLI(t)
	args := append([]string{"build", "-f", file, "--report", filepath.Join(dir, "report.json"), "--junit", filepath.Join(dir, "junit.xml")}, pveArgs(sim)...)
	r := c.run(args...)
	if exitCode(r) != 1 {
		t.Fatalf("exit %d, want 1 (one image fails)\n%s", exitCode(r), r.stderr)
	}
	if !strings.Contains(r.stderr, "images[8]: "+proxy.Host+"/img0:1 is the same image as images[0]") {
		t.Errorf("no warning for the image named twice:\n%s", r.stderr)
	}
	rep := readReport(t, filepath.Join(dir, "report.json"))
	if len(rep.Results) != 11 || rep.Count(batch.Built) != 10 || rep.Count(batch.Failed) != 1 {
		t.Fatalf("results: %s", rep.Summary())
	}
	if got := strings.TrimSpace(r.stdout); got != "11 templates: 10 built, 0 cached, 1 failed" {
		t.Errorf("summary %q", got)
	}
	items := byItem(rep)
	broken := items[proxy.Host+"/broken:1 linux/amd64"]
	if broken == nil || broken.Status != batch.Failed || !strings.Contains(broken.Error, `USER "nobody-here"`) {
		t.Errorf("broken: %+v", broken)
	}
	if !strings.Contains(r.stderr, proxy.Host+"/broken:1 linux/amd64: failed: ") ||
		!strings.Contains(r.stderr, proxy.Host+"/img3:1 linux/amd64: built (") {
		t.Errorf("progress lines:\n%s", r.stderr)
	}
	// The base layer, shared by all, was fetched once.
	if n := proxy.CountPath("GET", baseDigest.String()); n != 1 {
		t.Errorf("the shared base layer was fetched %d times", n)
	}
	for _, res := range rep.Results {
		if res.Status == batch.Failed {
			continue
		}
		if filepath.Dir(res.File) != filepath.Join(dir, "out") || sha256File(t, res.File) != res.SHA256 || res.Digest == "" || res.Seconds <= 0 {
			t.Errorf("%s %s: %+v", res.Ref, res.Platform, res)
		}
		// dir, registry, and each node's storage.
		if len(res.Destinations) != 4 || !strings.HasPrefix(res.Destinations[1], "registry:"+templates.Host+"/fleet@sha256:") ||
			!strings.HasPrefix(res.Destinations[2], "proxmox:pve1/local:vztmpl/") || !strings.HasPrefix(res.Destinations[3], "proxmox:pve2/local:vztmpl/") {
			t.Errorf("%s %s: destinations %v", res.Ref, res.Platform, res.Destinations)
		}
		if _, err := os.Stat(filepath.Join(sim.StoragePath("pve2", "local"), "template", "cache", strings.TrimPrefix(res.Destinations[3], "proxmox:pve2/local:vztmpl/"))); err != nil {
			t.Error(err)
		}
	}
	out, _ := os.ReadDir(filepath.Join(dir, "out"))
	if len(out) != 10 {
		t.Errorf("output dir holds %d files, want 10 (no temporary files)", len(out))
	}
	multi := items[proxy.Host+"/multi:1 linux/arm64"]
	if multi == nil || !strings.HasSuffix(multi.File, "multi_1_arm64.tar.zst") {
		t.Errorf("multi arm64: %+v", multi)
	}
	// The human tag of the two-platform image is an index of both.
	idx := crane(t, "manifest", templates.Host+"/fleet:"+strings.ReplaceAll(proxy.Host, ":", "-")+"-multi_1")
	if !strings.Contains(idx, `"architecture":"amd64"`) || !strings.Contains(idx, `"architecture":"arm64"`) {
		t.Errorf("index: %s", idx)
	}
	var junit struct {
		Suite struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal([]byte(readFile(t, filepath.Join(dir, "junit.xml"))), &junit); err != nil || junit.Suite.Tests != 11 || junit.Suite.Failures != 1 {
		t.Errorf("junit %+v %v", junit, err)
	}
	lock := readFile(t, filepath.Join(dir, "pve-images.lock"))
	if strings.Count(lock, "digest: sha256:") != 10 {
		t.Errorf("lock:\n%s", lock)
	}

	// Again: everything cached, nothing fetched but manifests, nothing
	// uploaded.
	proxy.Reset()
	uploads := sim.Uploads()
	r = c.run(args...)
	rep = readReport(t, filepath.Join(dir, "report.json"))
	if exitCode(r) != 1 || rep.Count(batch.Cached) != 10 || rep.Count(batch.Failed) != 1 {
		t.Errorf("second run: exit %d, %s\n%s", exitCode(r), rep.Summary(), r.stderr)
	}
	if n := proxy.Count("GET", "blob"); n != 0 {
		t.Errorf("second run fetched %d blobs", n)
	}
	if sim.Uploads() != uploads {
		t.Errorf("second run uploaded %d templates", sim.Uploads()-uploads)
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(readFile(t, p)))
	return hex.EncodeToString(sum[:])
}

// crane runs crane (installed by make tools) and returns its output.
func crane(t *testing.T, args ...string) string {
	t.Helper()
	bin := Tool(t, "PVE_IMAGE_CRANE_BIN", "crane")
	out, err := exec.Command(bin, append(args, "--insecure")...).CombinedOutput()
	if err != nil {
		t.Fatalf("crane %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.ReplaceAll(string(out), " ", "")
}

// TestBuildShards: the shards of a CI matrix, on machines with their own
// caches, build disjoint halves that cover every item once and meet in the
// template registry; a machine that comes later converts nothing and gets
// the same bytes.
func TestBuildShards(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	proxy := StartProxy(t, reg.Host)
	templates := StartRegistry(t, RegistryOptions{})
	base := baseLayer(t)
	var images strings.Builder
	for i := range 6 {
		reg.Push(t, fmt.Sprintf("s%d:1", i), fleetImage(t, base, amd64, fmt.Sprint("shard", i)))
		fmt.Fprintf(&images, "  - %s/s%d:1\n", proxy.Host, i)
	}
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "pve-images.yaml"), fmt.Sprintf("images:\n%soutput:\n  registry: %s/fleet\n", images.String(), templates.Host))
	c := newCLI(t)
	c.ok("build", "-f", file, "--update", "--dry-run")
	if _, err := os.Stat(filepath.Join(dir, "pve-images.lock")); err == nil {
		t.Fatal("a dry run wrote the lock")
	}
	dry := filepath.Join(dir, "dry.json")
	c.ok("build", "-f", file, "--update", "--dry-run", "--shard", "1/2", "--report", dry)
	for _, r := range readReport(t, dry).Results {
		if r.Status != batch.Planned || r.Digest == "" {
			t.Errorf("dry run: %+v", r)
		}
	}
	shas := map[string]string{}
	seen := map[string]int{}
	for _, shard := range []string{"1/2", "2/2"} {
		runner := newCLI(t)
		report := filepath.Join(dir, "shard"+shard[:1]+".json")
		runner.ok("build", "-f", file, "--shard", shard, "--report", report)
		rep := readReport(t, report)
		if len(rep.Results) == 0 || len(rep.Results) == 6 {
			t.Errorf("shard %s has %d of 6 items", shard, len(rep.Results))
		}
		for _, r := range rep.Results {
			seen[r.Ref]++
			shas[r.Ref] = r.SHA256
			if r.Status != batch.Built {
				t.Errorf("shard %s: %s %s from %s", shard, r.Ref, r.Status, r.Origin)
			}
		}
	}
	if len(seen) != 6 {
		t.Errorf("the shards cover %d of 6 images", len(seen))
	}
	for ref, n := range seen {
		if n != 1 {
			t.Errorf("%s built by %d shards", ref, n)
		}
	}
	// A fresh machine: no layer comes from the source registry.
	proxy.Reset()
	late := newCLI(t)
	out := filepath.Join(dir, "late")
	late.ok("--template-registry", templates.Host+"/fleet", "build", "-f", file, "--locked", "--output-dir", out, "--report", filepath.Join(dir, "late.json"))
	for _, r := range readReport(t, filepath.Join(dir, "late.json")).Results {
		if r.Status != batch.Cached || r.Origin != batch.FromRegistry || r.SHA256 != shas[r.Ref] || sha256File(t, r.File) != r.SHA256 {
			t.Errorf("late machine: %+v", r)
		}
	}
	if n := proxy.Count("GET", "blob"); n != 6 {
		// Only the configs, which resolving a single-platform image reads.
		t.Errorf("the late machine fetched %d blobs from the source registry, want the 6 configs", n)
	}
}

// TestBuildLock: tags are pinned in the lock; --locked builds exactly
// those digests (byte-identical in another cache) and refuses images not
// in it; --update moves on.
func TestBuildLock(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	base := baseLayer(t)
	reg.Push(t, "app:1", fleetImage(t, base, amd64, "v1"))
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "pve-images.yaml"), fmt.Sprintf("images:\n  - %s/app:1\noutput:\n  dir: out\n", reg.Host))
	c := newCLI(t)
	c.ok("build", "-f", file, "--report", filepath.Join(dir, "r1.json"))
	first := readReport(t, filepath.Join(dir, "r1.json")).Results[0]
	lock := readFile(t, filepath.Join(dir, "pve-images.lock"))

	reg.Push(t, "app:1", fleetImage(t, base, amd64, "v2")) // the tag moves
	for _, mode := range []string{"", "--locked"} {
		other := newCLI(t) // another machine
		args := []string{"build", "-f", file, "--report", filepath.Join(dir, "r2.json"), "--output-dir", filepath.Join(dir, "other")}
		if mode != "" {
			args = append(args, mode)
		}
		other.ok(args...)
		got := readReport(t, filepath.Join(dir, "r2.json")).Results[0]
		if got.SHA256 != first.SHA256 || got.Digest != first.Digest || readFile(t, got.File) != readFile(t, first.File) {
			t.Errorf("%q on another machine: %s %s, want the locked %s %s", mode, got.Digest, got.SHA256, first.Digest, first.SHA256)
		}
		if filepath.Base(got.File) != filepath.Base(first.File) {
			t.Errorf("named %s, want %s (the tag's name)", got.File, first.File)
		}
	}
	if readFile(t, filepath.Join(dir, "pve-images.lock")) != lock {
		t.Error("the lock changed without --update")
	}

	// An image the lock does not have: --locked refuses before any work.
	reg.Push(t, "new:1", fleetImage(t, base, amd64, "new"))
	writeFile(t, file, fmt.Sprintf("images:\n  - %s/app:1\n  - %s/new:1\noutput:\n  dir: out\n", reg.Host, reg.Host))
	r := c.run("build", "-f", file, "--locked")
	if exitCode(r) != 2 || !strings.Contains(r.stderr, file+":3: images[1].ref: "+reg.Host+"/new:1 is not in "+filepath.Join(dir, "pve-images.lock")) {
		t.Errorf("exit %d:\n%s", exitCode(r), r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", strings.ReplaceAll(reg.Host, ":", "-")+"-new_1_amd64.tar.zst")); err == nil {
		t.Error("--locked built an image missing from the lock")
	}

	c.ok("build", "-f", file, "--update", "--report", filepath.Join(dir, "r3.json"))
	updated := byItem(readReport(t, filepath.Join(dir, "r3.json")))
	if app := updated[reg.Host+"/app:1 linux/amd64"]; app.Digest == first.Digest || app.Status != batch.Built {
		t.Errorf("--update kept %s (%s)", app.Digest, app.Status)
	}
	if lock2 := readFile(t, filepath.Join(dir, "pve-images.lock")); lock2 == lock || !strings.Contains(lock2, reg.Host+"/new:1") {
		t.Errorf("lock after --update:\n%s", lock2)
	}
}

// TestBuildBadInput: a build file that cannot be used is refused with the
// file, the line and the key, exit 2, and nothing written.
func TestBuildBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		args       []string
		want       []string
	}{
		{"unknown key", "images:\n  - ref: alpine\n    platform: linux/amd64\noutput:\n  dir: out\n", nil,
			[]string{`pve-images.yaml:3: images[0].platform: unknown key "platform" (did you mean "platforms"?)`}},
		{"bad reference and platform", "images:\n  - ref: Alpine:3\n  - ref: alpine\n    platforms: [linux/x86]\noutput:\n  dir: out\n", nil,
			[]string{"pve-images.yaml:2: images[0].ref:", `pve-images.yaml:4: images[1].platforms[0]: platform "linux/x86": unknown architecture`}},
		{"empty", "", nil, []string{"pve-images.yaml:1: the build file is empty"}},
		{"bad shard", "images: [alpine]\noutput:\n  dir: out\n", []string{"--shard", "3/2"}, []string{"--shard \"3/2\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := writeFile(t, filepath.Join(dir, "pve-images.yaml"), tc.yaml)
			c := newCLI(t)
			r := c.run(append([]string{"build", "-f", file}, tc.args...)...)
			if exitCode(r) != 2 {
				t.Errorf("exit %d, want 2", exitCode(r))
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			des, _ := os.ReadDir(dir)
			if len(des) != 1 {
				t.Errorf("written beside the build file: %v", des)
			}
			if tpl, _ := os.ReadDir(filepath.Join(c.cache, "templates")); len(tpl) != 0 {
				t.Errorf("cached: %v", tpl)
			}
		})
	}
}

// TestBuildRegistryRefusesPush: a template registry refusing the push
// fails the items with the registry's reason, the other destinations are
// still written, and no tag is left pointing at anything; with
// credentials the same build succeeds.
func TestBuildRegistryRefusesPush(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	templates := StartRegistry(t, RegistryOptions{Auth: true})
	base := baseLayer(t)
	reg.Push(t, "app:1", fleetImage(t, base, amd64, "refused"))
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "pve-images.yaml"),
		fmt.Sprintf("images: [%s/app:1]\noutput:\n  dir: out\n  registry: %s/fleet\n", reg.Host, templates.Host))
	c := newCLI(t)
	r := c.run("build", "-f", file, "--report", filepath.Join(dir, "r.json"))
	res := readReport(t, filepath.Join(dir, "r.json")).Results[0]
	if exitCode(r) != 1 || res.Status != batch.Failed || !strings.Contains(res.Error, "output.registry: template registry "+templates.Host) ||
		!strings.Contains(res.Error, "no credentials were sent") {
		t.Errorf("exit %d: %+v\n%s", exitCode(r), res, r.stderr)
	}
	if len(res.Destinations) != 1 || !strings.HasPrefix(res.Destinations[0], "dir:") {
		t.Errorf("destinations %v", res.Destinations)
	}
	c.env = append(c.env, "PVE_IMAGE_TEMPLATE_REGISTRY_CREDS="+templates.User+":"+templates.Password)
	c.ok("build", "-f", file, "--report", filepath.Join(dir, "r.json"))
	if res := readReport(t, filepath.Join(dir, "r.json")).Results[0]; res.Status != batch.Cached || len(res.Destinations) != 2 {
		t.Errorf("with credentials: %+v", res)
	}
}

// TestBuildResume: a build killed in the middle, run again, redoes only
// what it had not finished, and the killed run left nothing half-written.
func TestBuildResume(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	proxy := StartProxy(t, reg.Host)
	base := baseLayer(t)
	var images strings.Builder
	var slow v1.Hash
	for i := range 4 {
		img := fleetImage(t, base, amd64, fmt.Sprint("resume", i))
		reg.Push(t, fmt.Sprintf("r%d:1", i), img)
		fmt.Fprintf(&images, "  - %s/r%d:1\n", proxy.Host, i)
		if i == 3 {
			ls, _ := img.Layers()
			slow, _ = ls[1].Digest()
		}
	}
	// The last image's own layer hangs until the client goes away.
	proxy.AddFault(Fault{Kind: "blob", Path: slow.String(), Times: 1, Stall: true, Truncate: 10})
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "pve-images.yaml"), fmt.Sprintf("images:\n%soutput:\n  dir: out\n", images.String()))
	c := newCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := c.cmd(ctx, "--stall-timeout", "10m", "build", "-f", file, "--parallel", "4")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := 0
	sc := bufio.NewScanner(stderr)
	for done < 3 && sc.Scan() {
		if strings.Contains(sc.Text(), ": built (") {
			done++
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if done != 3 {
		t.Fatalf("saw %d finished images before the end of the output", done)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "out"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 3 || slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, ".") }) {
		t.Errorf("after the kill, out holds %v", names)
	}
	c.ok("build", "-f", file, "--report", filepath.Join(dir, "r.json"))
	rep := readReport(t, filepath.Join(dir, "r.json"))
	if rep.Count(batch.Cached) != 3 || rep.Count(batch.Built) != 1 || byItem(rep)[proxy.Host+"/r3:1 linux/amd64"].Status != batch.Built {
		t.Errorf("after resuming: %s", rep.Summary())
	}
	if r := c.run("cache", "verify"); r.err != nil {
		t.Errorf("cache verify after the kill: %s%s", r.stdout, r.stderr)
	}
}
