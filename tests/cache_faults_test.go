package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	. "github.com/pve-image/pve-image/tests/testenv"
)

// The cache's faults: what concurrent processes, damaged files and killed
// runs do to it. Every count here is of failures, and every one must be
// zero; nothing is measured by time.

// TestPruneRacingConverts runs convert processes in a loop while
// `cache prune --max-size 0` empties the cache in another loop: no convert
// may fail, and every template must have the bytes of a fresh conversion.
func TestPruneRacingConverts(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", smallImage(t, "race"))
	ref := reg.Host + "/app:1"
	want := readFile(t, newCLI(t).ok("convert", ref).out())

	c := newCLI(t)
	out := t.TempDir()
	const workers, rounds = 3, 12
	var failures atomic.Int32
	var failed sync.Map
	stop := make(chan struct{})
	pruned := make(chan int)
	go func() {
		n := 0
		defer func() { pruned <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r := c.run("cache", "prune", "--max-size", "0"); r.err != nil {
				t.Errorf("cache prune: %v\n%s", r.err, r.stderr)
				return
			}
			n++
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				dst := filepath.Join(out, fmt.Sprintf("app_%d_%d.tar.zst", w, i))
				r := c.run("convert", ref, "-o", dst)
				if r.err != nil {
					failures.Add(1)
					failed.Store(dst, r.stderr)
					continue
				}
				if b, err := os.ReadFile(dst); err != nil || string(b) != want {
					failures.Add(1)
					failed.Store(dst, "bytes differ from a fresh conversion")
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	prunes := <-pruned
	failed.Range(func(k, v any) bool { t.Logf("%s: %s", k, v); return true })
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d converts failed while %d prunes ran", n, workers*rounds, prunes)
	}
	if prunes == 0 {
		t.Error("no prune ran alongside the converts")
	}
	c.ok("cache", "verify")
}

// TestCRIRemoveRacingPull pulls one image over and over through crictl
// while another crictl removes it: no pull may fail.
func TestCRIRemoveRacingPull(t *testing.T) {
	Tool(t, "PVE_IMAGE_CRICTL_BIN", "crictl")
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", appImage(t, "race", v1.Config{}))
	ref := reg.Host + "/app:1"
	c := newCLI(t)
	d := startCRI(t, c)

	const pulls = 30
	var failures, removals atomic.Int32
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			// crictl rmi fails when the image is not there (it asks
			// ImageStatus first): only successes count.
			if r := d.crictl(t, "rmi", ref); r.err == nil {
				removals.Add(1)
			}
		}
	}()
	for range pulls {
		if r := d.crictl(t, "pull", ref); r.err != nil {
			failures.Add(1)
			t.Logf("pull: %v\n%s", r.err, r.stderr)
		}
	}
	close(done)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d pulls failed while %d removals ran", n, pulls, removals.Load())
	}
	if removals.Load() == 0 {
		t.Error("no removal ran alongside the pulls")
	}
	// The image pulled last is whole: listed, in the store, in the cache.
	d.crictlOK(t, "pull", ref)
	if imgs := d.crictlOK(t, "images"); !strings.Contains(imgs, reg.Host+"/app") {
		t.Errorf("crictl images after the race:\n%s", imgs)
	}
	if entries, _ := os.ReadDir(d.StoreDir); len(entries) != 1 {
		t.Errorf("template store holds %v", entries)
	}
	c.ok("cache", "verify")
}

// rotImage has a gzip layer, an uncompressed layer and a config whose
// bytes the tests below damage in the cache.
func rotImage(t *testing.T) v1.Image {
	raw := Tar(t, File("data/plain", strings.Repeat("uncompressed-", 4000)))
	return Image(t, amd64, v1.Config{Entrypoint: []string{"/app-rot"}},
		Layer(t, File("etc/os-release", "ID=alpine\n"), Exec("app-rot", "#!/bin/sh\necho rot\n")),
		RawLayer(raw, types.OCIUncompressedLayer),
	)
}

// flipByte changes one byte of a file in place, keeping its size: the
// byte after the first occurrence of marker, or the middle one.
func flipByte(t *testing.T, path, marker string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := len(b) / 2
	if marker != "" {
		if i = bytes.Index(b, []byte(marker)); i < 0 {
			t.Fatalf("%s does not hold %q", path, marker)
		}
		i += len(marker) - 1
	}
	b[i] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCachedBlobBitRot flips a byte in a cached blob, then converts with
// options the cache holds no template for: the blob must be fetched again
// and the template must be byte for byte a fresh conversion's.
func TestCachedBlobBitRot(t *testing.T) {
	img := rotImage(t)
	cfgDigest, _ := img.ConfigName()
	ls, _ := img.Layers()
	gz, _ := ls[0].Digest()
	plain, _ := ls[1].Digest()
	for _, tc := range []struct {
		name   string
		blob   v1.Hash
		marker string
	}{
		{"uncompressed layer", plain, "uncompressed-uncompressed"},
		{"gzip layer", gz, ""},
		{"config", cfgDigest, "/app-rot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := StartRegistry(t, RegistryOptions{})
			reg.Push(t, "rot:1", img)
			proxy := StartProxy(t, reg.Host)
			ref := proxy.Host + "/rot:1"
			fresh := filepath.Join(t.TempDir(), "fresh.tar.zst")
			newCLI(t).ok("convert", ref, "--compression-level", "4", "-o", fresh)

			c := newCLI(t)
			c.ok("convert", ref)
			flipByte(t, filepath.Join(c.cache, "blobs", "sha256", tc.blob.Hex), tc.marker)
			proxy.Reset()
			got := filepath.Join(t.TempDir(), "got.tar.zst")
			c.ok("convert", ref, "--compression-level", "4", "-o", got)
			if readFile(t, got) != readFile(t, fresh) {
				t.Error("the template built from a damaged cached blob differs from a fresh one")
			}
			if proxy.Count("GET", "blob") == 0 {
				t.Error("the damaged blob was not fetched again")
			}
			c.ok("cache", "verify")
		})
	}
}

// TestCachedTemplateDamage damages a cached template: the next convert
// must build it again and hand out a fresh conversion's bytes, with -o and
// (where the damage shows without reading it all) without.
func TestCachedTemplateDamage(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", smallImage(t, "damage"))
	ref := reg.Host + "/app:1"
	fresh := filepath.Join(t.TempDir(), "fresh.tar.zst")
	newCLI(t).ok("convert", ref, "-o", fresh)
	want := readFile(t, fresh)

	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		withO  bool
	}{
		{"junk appended, -o", appendJunk, true},
		{"junk appended, in the cache", appendJunk, false},
		{"byte flipped, -o", func(t *testing.T, p string) { flipByte(t, p, "") }, true},
		{"file gone, -o", removeFile, true},
		{"file gone, in the cache", removeFile, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLI(t)
			path := c.ok("convert", ref).out()
			tc.damage(t, path)
			if tc.withO {
				dst := filepath.Join(t.TempDir(), "app.tar.zst")
				c.ok("convert", ref, "-o", dst)
				if readFile(t, dst) != want {
					t.Error("-o got other bytes than a fresh conversion's")
				}
			} else {
				again := c.ok("convert", ref).out()
				if b, err := os.ReadFile(again); err != nil || string(b) != want {
					t.Errorf("the cached template %s is not a fresh conversion's: %v", again, err)
				}
			}
			c.ok("cache", "verify")
		})
	}
}

func appendJunk(t *testing.T, p string) {
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("junk")
	f.Close()
}

func removeFile(t *testing.T, p string) {
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyFix: verify names what is damaged and a command that removes
// it; that command works, and the cache is whole again afterwards.
func TestVerifyFix(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", smallImage(t, "fix"))
	ref := reg.Host + "/app:1"
	c := newCLI(t)
	path := c.ok("convert", ref).out()
	blobs, _ := filepath.Glob(filepath.Join(c.cache, "blobs", "sha256", "*"))
	slices.Sort(blobs)
	flipByte(t, blobs[0], "")
	removeFile(t, path)

	r := c.fails([]string{"cache", "verify"}, "2 problem(s)")
	for _, p := range []string{blobs[0], path} {
		if !strings.Contains(r.stdout, "BAD "+p) {
			t.Errorf("verify does not name %s:\n%s", p, r.stdout)
		}
	}
	m := regexp.MustCompile("`pve-image ([^`]+)`").FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("verify names no command to run:\n%s", r.stderr)
	}
	fix := c.ok(strings.Fields(m[1])...)
	if n := strings.Count(fix.stdout, "(removed)"); n != 2 {
		t.Errorf("%s removed %d entries, want 2:\n%s", m[1], n, fix.stdout)
	}
	if r := c.ok("cache", "verify"); !strings.Contains(r.stdout, "cache OK") {
		t.Errorf("verify after the fix:\n%s", r.stdout)
	}
	if ls := c.ok("cache", "ls").stdout; !strings.Contains(ls, "0 template(s)") {
		t.Errorf("the damaged template is still listed:\n%s", ls)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the damaged template's directory stays: %v", err)
	}
	if again := c.ok("convert", ref).out(); readFile(t, again) == "" {
		t.Error("convert after the fix gave an empty template")
	}
	c.ok("cache", "verify")
}

// stallProxy forwards to a registry; while stalled, blob responses send
// half their body and then wait until the client goes away, so that the
// client is caught in the middle of writing a blob.
type stallProxy struct {
	Host    string
	stalled atomic.Bool
}

func startStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	p := &stallProxy{}
	u, _ := url.Parse("http://" + target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ModifyResponse = func(resp *http.Response) error {
		if p.stalled.Load() && resp.Request.Method == http.MethodGet && resp.StatusCode == http.StatusOK &&
			strings.Contains(resp.Request.URL.Path, "/blobs/") && resp.ContentLength > 1 {
			resp.Body = &stallingBody{rc: resp.Body, left: resp.ContentLength / 2, ctx: resp.Request.Context()}
		}
		return nil
	}
	srv := &http.Server{Handler: rp}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	p.Host = l.Addr().String()
	return p
}

type stallingBody struct {
	rc   io.ReadCloser
	left int64
	ctx  context.Context
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		<-b.ctx.Done()
		return 0, b.ctx.Err()
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *stallingBody) Close() error { return b.rc.Close() }

// workFiles lists the cache's tmp/ with each entry's size.
func workFiles(t *testing.T, c *cli) map[string]int64 {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(c.cache, "tmp"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, de := range des {
		if fi, err := de.Info(); err == nil {
			out[de.Name()] = fi.Size()
		}
	}
	return out
}

// startStalled starts a convert and waits until it has a new work file in
// tmp/ of size bytes (where the stalled download stops: other work files,
// such as the manifest's, come and go), which it returns.
func startStalled(t *testing.T, c *cli, before map[string]int64, size int64, args ...string) (*proc, string) {
	t.Helper()
	cmd := c.cmd(context.Background(), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	p := startProc(t, cmd)
	exited := p.exited
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		for name, n := range workFiles(t, c) {
			if _, ok := before[name]; !ok && n == size {
				return p, name
			}
		}
		select {
		case <-exited:
			t.Fatalf("pve-image %s ended before it stalled:\n%s", strings.Join(args, " "), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pve-image %s never stalled in a download: tmp/ holds %v", strings.Join(args, " "), workFiles(t, c))
		}
	}
}

// proc is a started pve-image whose end is awaited by one goroutine (the
// only caller of Wait), so that the test can kill it and know when it died.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.kill)
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// TestKilledConvertWorkFiles: a convert killed with -9 in the middle of a
// download leaves a work file in tmp/; the next start of pve-image removes
// it, but never the work file of a convert that still runs, however old.
func TestKilledConvertWorkFiles(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	// The first blob each convert downloads is its config: it stops half
	// way.
	stallAt := func(img v1.Image) int64 {
		cfg, err := img.RawConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		return int64(len(cfg)) / 2
	}
	liveImg, deadImg := smallImage(t, "live"), smallImage(t, "dead")
	reg.Push(t, "live:1", liveImg)
	reg.Push(t, "dead:1", deadImg)
	proxy := startStallProxy(t, reg.Host)
	proxy.stalled.Store(true)
	c := newCLI(t)

	live, liveFile := startStalled(t, c, nil, stallAt(liveImg), "convert", proxy.Host+"/live:1")
	dead, deadFile := startStalled(t, c, map[string]int64{liveFile: 0}, stallAt(deadImg), "convert", proxy.Host+"/dead:1")
	dead.kill()
	// The live process's file looks abandoned by age: that must not matter.
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(filepath.Join(c.cache, "tmp", liveFile), old, old)

	for _, args := range [][]string{{"cache", "ls"}, {"cache", "prune"}} {
		c.ok(args...)
		left := workFiles(t, c)
		if _, ok := left[deadFile]; ok {
			t.Errorf("after %s: the killed convert's %s stays in tmp/", strings.Join(args, " "), deadFile)
		}
		if _, ok := left[liveFile]; !ok {
			t.Errorf("after %s: the running convert's %s was removed", strings.Join(args, " "), liveFile)
		}
	}

	live.kill()
	c.ok("cache", "ls")
	if left := workFiles(t, c); len(left) != 0 {
		t.Errorf("tmp/ after both converts died and pve-image started again: %v", left)
	}
	proxy.stalled.Store(false)
	c.ok("convert", proxy.Host+"/live:1")
	c.ok("cache", "verify")
}

// stopWhileWriting starts pve-image and stops it (SIGSTOP) the moment it
// writes to a file named prefix* in dir: past its creation and locking,
// before its rename. ok is false when the process ended or renamed the
// file before it could be stopped.
func stopWhileWriting(t *testing.T, c *cli, dir, prefix string, args ...string) (p *proc, name string, ok bool) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	events := os.NewFile(uintptr(fd), "inotify")
	defer events.Close()
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MODIFY); err != nil {
		t.Fatal(err)
	}
	cmd := c.cmd(context.Background(), args...)
	p = startProc(t, cmd)
	exited := p.exited
	go func() { <-exited; events.Close() }()
	buf := make([]byte, 64<<10)
	for {
		n, err := events.Read(buf)
		if err != nil {
			return p, "", false
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			name := strings.TrimRight(string(nameBytes), "\x00")
			if !strings.HasPrefix(name, prefix) {
				continue
			}
			cmd.Process.Signal(syscall.SIGSTOP)
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				return p, name, false
			}
			return p, name, true
		}
	}
}

// TestKilledCopyLeftovers: a convert -o killed while it copies leaves a
// hidden temporary file beside FILE; the next copy into that directory
// removes it, and leaves alone the temporary file of a copy whose process
// still lives (here: stopped).
func TestKilledCopyLeftovers(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	// A big uncompressed template, so that copying it takes a while.
	reg.Push(t, "big:1", Image(t, amd64, v1.Config{Entrypoint: []string{"/app"}},
		Layer(t, File("etc/os-release", "ID=alpine\n"), File("data/zero", strings.Repeat("\x00", 96<<20)))))
	ref := reg.Host + "/big:1"
	c := newCLI(t)
	want := readFile(t, c.ok("convert", ref, "-o", filepath.Join(t.TempDir(), "big.tar")).out())
	dir := t.TempDir()
	dst := filepath.Join(dir, "big.tar")
	prefix := ".big.tar.tmp-"

	// Catch two copies in the act; the first stays stopped (alive), the
	// second is killed.
	caught := func() (*proc, string) {
		for range 5 {
			p, name, ok := stopWhileWriting(t, c, dir, prefix, "convert", ref, "-o", dst)
			if ok {
				return p, name
			}
			p.kill()
			os.Remove(dst)
		}
		t.Fatal("never caught convert -o copying")
		return nil, ""
	}
	live, liveName := caught()
	dead, deadName := caught()
	dead.kill()
	if _, err := os.Stat(filepath.Join(dir, deadName)); err != nil {
		t.Fatalf("the killed copy left nothing to clean: %v", err)
	}

	c.ok("convert", ref, "-o", dst)
	if readFile(t, dst) != want {
		t.Error("convert -o beside leftovers wrote other bytes")
	}
	if _, err := os.Stat(filepath.Join(dir, deadName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed copy's %s stays: %v", deadName, err)
	}
	if _, err := os.Stat(filepath.Join(dir, liveName)); err != nil {
		t.Errorf("the stopped copy's %s was removed: %v", liveName, err)
	}

	live.kill()
	c.ok("convert", ref, "-o", dst)
	des, _ := os.ReadDir(dir)
	if len(des) != 1 || des[0].Name() != "big.tar" {
		var names []string
		for _, de := range des {
			names = append(names, de.Name())
		}
		t.Errorf("beside -o after both copies died and another ran: %v", names)
	}
}
