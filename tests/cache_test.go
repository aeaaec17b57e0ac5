package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	. "github.com/pve-image/pve-image/tests/testenv"
)

func smallImage(t *testing.T, marker string) v1.Image {
	return Image(t, amd64, v1.Config{Entrypoint: []string{"/app"}},
		Layer(t, File("etc/os-release", "ID=alpine\n"), File("etc/alpine-release", "3.20\n")),
		Layer(t, Exec("app", "#!/bin/sh\necho "+marker+"\n")),
		ZstdLayer(t, File("data/big", strings.Repeat(marker, 50000))),
	)
}

// TestCacheHitCostsOneManifestRequest: a second convert of an unchanged
// image makes one manifest request for a tag and none for a digest, and
// fetches no blob.
func TestCacheHitCostsOneManifestRequest(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	img := smallImage(t, "hit")
	reg.Push(t, "app:1", img)
	proxy := StartProxy(t, reg.Host)
	c := newCLI(t)
	ref := proxy.Host + "/app:1"

	first := c.ok("convert", ref).out()
	if n := proxy.Count("GET", "blob"); n != 4 {
		t.Errorf("first convert fetched %d blobs, want 4 (config and 3 layers)", n)
	}
	proxy.Reset()
	if again := c.ok("convert", ref).out(); again != first {
		t.Errorf("second convert gave %s, first %s", again, first)
	}
	if m, b := proxy.Count("GET", "manifest")+proxy.Count("HEAD", "manifest"), proxy.Count("GET", "blob"); m != 1 || b != 0 {
		t.Errorf("cache hit by tag: %d manifest and %d blob requests, want 1 and 0", m, b)
	}

	digest, _ := img.Digest()
	proxy.Reset()
	c.ok("convert", proxy.Host+"/app@"+digest.String())
	c.ok("convert", proxy.Host+"/app@"+digest.String())
	total := 0
	for _, k := range []string{"manifest", "blob", "/v2/"} {
		total += proxy.Count("GET", k) + proxy.Count("HEAD", k)
	}
	if total != 0 {
		t.Errorf("converts by a cached digest made %d requests, want none", total)
	}
}

// TestConcurrentConvertsDoWorkOnce runs two processes on one cache: each
// blob is downloaded once and both get the same template.
func TestConcurrentConvertsDoWorkOnce(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", smallImage(t, "twice"))
	proxy := StartProxy(t, reg.Host)
	proxy.SetDelay("blob", 300*time.Millisecond)
	c := newCLI(t)
	var wg sync.WaitGroup
	outs := make([]result, 2)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = c.run("convert", proxy.Host+"/app:1")
		}()
	}
	wg.Wait()
	for _, r := range outs {
		if r.err != nil {
			t.Fatalf("convert: %v\n%s", r.err, r.stderr)
		}
	}
	if outs[0].out() != outs[1].out() {
		t.Errorf("concurrent converts disagree: %s vs %s", outs[0].out(), outs[1].out())
	}
	if n := proxy.Count("GET", "blob"); n != 4 {
		t.Errorf("two concurrent converts fetched %d blobs, want each of 4 once", n)
	}
}

// TestInterruptedConvertLeavesNothingBad kills a convert mid-download:
// verify finds nothing wrong, and the next convert completes.
func TestInterruptedConvertLeavesNothingBad(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", smallImage(t, "kill"))
	proxy := StartProxy(t, reg.Host)
	proxy.SetDelay("blob", 2*time.Second)
	c := newCLI(t)
	cmd := c.cmd(context.Background(), "convert", proxy.Host+"/app:1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); proxy.Count("GET", "blob") == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("convert never asked for a blob")
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	if r := c.ok("cache", "verify"); !strings.Contains(r.stdout, "cache OK") {
		t.Errorf("verify after a kill: %s", r.stdout)
	}
	if ls := c.ok("cache", "ls").stdout; !strings.Contains(ls, "0 template(s)") {
		t.Errorf("a killed convert left a template:\n%s", ls)
	}
	proxy.SetDelay("blob", 0)
	path := c.ok("convert", proxy.Host+"/app:1").out()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	c.ok("cache", "verify")
}

func TestCacheCommands(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", smallImage(t, "ls"))
	c := newCLI(t)
	path := c.ok("convert", reg.Host+"/app:1").out()

	ls := c.ok("cache", "ls").stdout
	for _, want := range []string{filepath.Base(path), reg.Host + "/app", "1 template(s); 5 blob(s)"} {
		if !strings.Contains(ls, want) {
			t.Errorf("cache ls lacks %q:\n%s", want, ls)
		}
	}
	// Damage one blob and the template: verify names both and fails.
	blobs, _ := filepath.Glob(filepath.Join(c.cache, "blobs", "sha256", "*"))
	os.WriteFile(blobs[0], []byte("damaged"), 0o644)
	os.WriteFile(path, []byte("damaged"), 0o644)
	r := c.fails([]string{"cache", "verify"}, "2 problem(s)")
	if !strings.Contains(r.stdout, blobs[0]) || !strings.Contains(r.stdout, path) {
		t.Errorf("verify output does not name the damaged files:\n%s", r.stdout)
	}
	pr := c.ok("cache", "prune", "--max-size", "0").stdout
	if !strings.Contains(pr, "removed template") || !strings.Contains(pr, "removed blob") {
		t.Errorf("prune --max-size 0:\n%s", pr)
	}
	if ls := c.ok("cache", "ls").stdout; !strings.Contains(ls, "0 template(s); 0 blob(s)") {
		t.Errorf("after prune:\n%s", ls)
	}
	c.ok("cache", "verify")
	c.ok("cache", "prune", "--older-than", "7d")
}

// TestCacheLsJSON: cache ls --json says what the table says, for
// programs.
func TestCacheLsJSON(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", smallImage(t, "json"))
	c := newCLI(t)
	var empty struct {
		Templates []any `json:"templates"`
	}
	if err := json.Unmarshal([]byte(c.ok("cache", "ls", "--json").stdout), &empty); err != nil || empty.Templates == nil || len(empty.Templates) != 0 {
		t.Errorf("cache ls --json of an empty cache: %+v, %v (want an empty list)", empty, err)
	}
	path := c.ok("convert", reg.Host+"/app:1").out()
	var ls struct {
		Dir       string `json:"dir"`
		Templates []struct {
			File, Path, SHA256, Image, Key string
			ManifestDigest                 string `json:"manifestDigest"`
			Size                           int64
			LastUsed                       time.Time `json:"lastUsed"`
		} `json:"templates"`
		Blobs struct{ Count, Size int64 } `json:"blobs"`
	}
	out := c.ok("cache", "ls", "--json").stdout
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("cache ls --json: %v\n%s", err, out)
	}
	body := readFile(t, path)
	sum := sha256.Sum256([]byte(body))
	if ls.Dir != c.cache || len(ls.Templates) != 1 || ls.Blobs.Count != 5 || ls.Blobs.Size == 0 {
		t.Fatalf("cache ls --json:\n%s", out)
	}
	tp := ls.Templates[0]
	if tp.Path != path || tp.File != filepath.Base(path) || tp.Size != int64(len(body)) || tp.SHA256 != hex.EncodeToString(sum[:]) ||
		tp.Image != reg.Host+"/app" || !strings.HasPrefix(tp.ManifestDigest, "sha256:") || len(tp.Key) != 64 || tp.LastUsed.IsZero() {
		t.Errorf("cache ls --json template: %+v", tp)
	}
}

// TestPullProgressAndDigest: pull prints the manifest digest on stdout and,
// off a terminal, one line per blob on stderr.
func TestPullProgressAndDigest(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	img := smallImage(t, "pull")
	reg.Push(t, "app:1", img)
	c := newCLI(t)
	r := c.ok("pull", reg.Host+"/app:1")
	d, _ := img.Digest()
	if r.out() != d.String() {
		t.Errorf("pull printed %q, want %s", r.out(), d)
	}
	if n := strings.Count(r.stderr, "fetched  sha256:"); n != 3 {
		t.Errorf("stderr has %d fetched lines, want one per layer:\n%s", n, r.stderr)
	}
	r = c.ok("pull", reg.Host+"/app:1")
	if n := strings.Count(r.stderr, "cached   sha256:"); n != 3 {
		t.Errorf("second pull: %d cached lines:\n%s", n, r.stderr)
	}
	// Every blob in the cache hashes to its name.
	c.ok("cache", "verify")
	if !bytes.Contains([]byte(c.ok("cache", "ls").stdout), []byte("5 blob(s)")) {
		t.Error("pull should store the manifest, config and 3 layers")
	}
}
