package tests

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	. "github.com/pve-image/pve-image/tests/testenv"
)

// criDaemon is a running `pve-image cri`.
type criDaemon struct {
	Socket   string // unix:///...
	Metrics  string // host:port
	StoreDir string
	LogFile  string
	c        *cli
	cmd      *exec.Cmd
	done     chan struct{}
}

// kill ends the daemon at once, as a crash would.
func (d *criDaemon) kill(t testing.TB) {
	t.Helper()
	d.cmd.Process.Kill()
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Fatal("pve-image cri did not die")
	}
}

// log is what the daemon has logged so far.
func (d *criDaemon) log() string {
	b, _ := os.ReadFile(d.LogFile)
	return string(b)
}

// startCRI runs the daemon with a template directory as its store and the
// given extra flags; it stops with the test.
func startCRI(t testing.TB, c *cli, extra ...string) *criDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "pvecri-*") // a short path: sockets are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &criDaemon{Socket: "unix://" + filepath.Join(dir, "cri.sock"), StoreDir: filepath.Join(dir, "templates"), c: c,
		Metrics: "127.0.0.1:" + freePortOn(t, "127.0.0.1")}
	args := []string{"cri", "--listen", d.Socket, "--metrics-listen", d.Metrics}
	// With a Proxmox connection the daemon pushes templates over the API
	// unless told otherwise; without one it needs a template directory.
	if !hasFlag(extra, "--pve-url") && !hasFlag(extra, "--template-dir") {
		args = append(args, "--template-dir", d.StoreDir)
	}
	args = append(args, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := c.cmd(ctx, args...)
	d.LogFile = filepath.Join(dir, "daemon.log")
	logf, _ := os.Create(d.LogFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	d.cmd, d.done = cmd, done
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cancel()
			<-done
		}
		cancel()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("daemon log:\n%s", b)
		}
	})
	sock := strings.TrimPrefix(d.Socket, "unix://")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if conn, err := net.Dial("unix", sock); err == nil {
			conn.Close()
			break
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("pve-image cri exited:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("pve-image cri did not listen")
		}
	}
	return d
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

// crictl runs crictl against the daemon.
func (d *criDaemon) crictl(t testing.TB, args ...string) result {
	t.Helper()
	bin := Tool(t, "PVE_IMAGE_CRICTL_BIN", "crictl")
	cmd := exec.Command(bin, append([]string{"--runtime-endpoint", d.Socket, "--image-endpoint", d.Socket, "--timeout", "120s"}, args...)...)
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	return result{so.String(), se.String(), err}
}

func (d *criDaemon) crictlOK(t testing.TB, args ...string) string {
	t.Helper()
	r := d.crictl(t, args...)
	if r.err != nil {
		t.Fatalf("crictl %s: %v\n%s%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

func (d *criDaemon) metrics(t testing.TB) string {
	t.Helper()
	resp, err := http.Get("http://" + d.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// appImage is a small application image with its own content marker.
func appImage(t *testing.T, marker string, cfg v1.Config) v1.Image {
	if cfg.Entrypoint == nil && cfg.Cmd == nil {
		cfg.Entrypoint = []string{"/app"}
	}
	return Image(t, amd64, cfg, Layer(t,
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"),
		File("etc/group", "root:x:0:\nwww-data:x:33:\n"),
		Exec("app", readFile(t, testApp)), File("marker", marker)))
}

// TestCRIImageService drives the ImageService with crictl: pull by short
// name through a mirror, images, inspecti, imagefsinfo, rmi; credentials;
// and the errors kubelet tells apart.
func TestCRIImageService(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "library/app:1", appImage(t, "app", v1.Config{User: "www-data"}))
	private := StartRegistry(t, RegistryOptions{Auth: true})
	private.Push(t, "secret:1", appImage(t, "secret", v1.Config{User: "1002"}))
	c := newCLI(t)
	d := startCRI(t, c, "--registry-mirror", "docker.io=http://"+reg.Host)

	out := d.crictlOK(t, "pull", "app:1")
	if !strings.Contains(out, "Image is up to date for sha256:") {
		t.Errorf("crictl pull: %s", out)
	}
	imgs := d.crictlOK(t, "images")
	if !strings.Contains(imgs, "docker.io/library/app") || !strings.Contains(imgs, " 1 ") {
		t.Errorf("crictl images:\n%s", imgs)
	}
	var insp struct {
		Status struct {
			ID          string   `json:"id"`
			RepoTags    []string `json:"repoTags"`
			RepoDigests []string `json:"repoDigests"`
			Size        string   `json:"size"`
			Username    string   `json:"username"`
		} `json:"status"`
		Info map[string]any `json:"info"`
	}
	if err := json.Unmarshal([]byte(d.crictlOK(t, "inspecti", "-o", "json", "app:1")), &insp); err != nil {
		t.Fatal(err)
	}
	st := insp.Status
	if len(st.RepoTags) != 1 || st.RepoTags[0] != "docker.io/library/app:1" || len(st.RepoDigests) != 1 ||
		!strings.HasPrefix(st.RepoDigests[0], "docker.io/library/app@sha256:") || st.Username != "www-data" || st.Size == "0" || st.Size == "" {
		t.Errorf("inspecti: %+v", st)
	}
	if entries, _ := os.ReadDir(d.StoreDir); len(entries) != 1 || !strings.HasPrefix(entries[0].Name(), "app_1_amd64.") {
		t.Errorf("template store holds %v", entries)
	}
	fs := d.crictlOK(t, "imagefsinfo", "-o", "json")
	if !strings.Contains(fs, `"usedBytes"`) || !strings.Contains(fs, d.StoreDir) {
		t.Errorf("imagefsinfo: %s", fs)
	}

	// Credentials: refused without, accepted with.
	ref := private.Host + "/secret:1"
	if r := d.crictl(t, "pull", ref); r.err == nil || !strings.Contains(r.stderr, "Unauthenticated") {
		t.Errorf("pull without credentials: %v %s", r.err, r.stderr)
	}
	if r := d.crictl(t, "pull", "--creds", private.User+":wrong", ref); r.err == nil || !strings.Contains(r.stderr, "Unauthenticated") {
		t.Errorf("pull with a wrong password: %v %s", r.err, r.stderr)
	}
	d.crictlOK(t, "pull", "--creds", private.User+":"+private.Password, ref)
	if v := d.crictlOK(t, "images", "-v", ref); !strings.Contains(v, "Uid: value:1002") {
		t.Errorf("crictl images -v: %s", v)
	}

	// Errors kubelet and users tell apart.
	if r := d.crictl(t, "pull", reg.Host+"/nothing:here"); r.err == nil || !strings.Contains(r.stderr, "NotFound") {
		t.Errorf("pull of a missing image: %s", r.stderr)
	}
	if r := d.crictl(t, "pull", "UPPER/case"); r.err == nil || !strings.Contains(r.stderr, "InvalidArgument") {
		t.Errorf("pull of a malformed reference: %s", r.stderr)
	}

	cachedTemplates := func() int { e, _ := os.ReadDir(filepath.Join(c.cache, "templates")); return len(e) }
	cachedBlobs := func() int { e, _ := os.ReadDir(filepath.Join(c.cache, "blobs", "sha256")); return len(e) }
	tplBefore, blobsBefore := cachedTemplates(), cachedBlobs()
	d.crictlOK(t, "rmi", "app:1")
	// kubelet's image GC frees disk by removing images: the cache must
	// shrink too (the other image keeps its own).
	if tplBefore != 2 || cachedTemplates() != 1 || cachedBlobs() >= blobsBefore {
		t.Errorf("cache after rmi: templates %d → %d, blobs %d → %d", tplBefore, cachedTemplates(), blobsBefore, cachedBlobs())
	}
	if imgs := d.crictlOK(t, "images"); strings.Contains(imgs, "docker.io/library/app") {
		t.Errorf("app still listed after rmi:\n%s", imgs)
	}
	if r := d.crictl(t, "rmi", "app:1"); r.err == nil {
		t.Error("crictl rmi of a removed image succeeded (crictl checks ImageStatus first)")
	}
	if entries, _ := os.ReadDir(d.StoreDir); len(entries) != 1 {
		t.Errorf("template store after rmi: %v", entries)
	}
	m := d.metrics(t)
	for _, want := range []string{`pve_image_pulls_total{result="ok"} 2`, `pve_image_pulls_total{result="error"}`, "pve_image_conversions_total 2",
		`pve_image_grpc_requests_total{code="OK",method="/runtime.v1.ImageService/PullImage"} 2`, "pve_image_pull_duration_seconds_bucket"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestCRIPullCancelled: a pull the client gives up on stores nothing.
func TestCRIPullCancelled(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "slow:1", appImage(t, "slow", v1.Config{}))
	proxy := StartProxy(t, reg.Host)
	proxy.SetDelay("blob", 3*time.Second)
	c := newCLI(t)
	d := startCRI(t, c)
	r := d.crictl(t, "pull", "--pull-timeout", "1s", proxy.Host+"/slow:1")
	if r.err == nil {
		t.Fatal("a pull with a 1 s timeout over a slow registry succeeded")
	}
	time.Sleep(500 * time.Millisecond) // the daemon notices the cancel
	if imgs := d.crictlOK(t, "images", "-q"); strings.TrimSpace(imgs) != "" {
		t.Errorf("images after a cancelled pull: %q", imgs)
	}
	if entries, _ := os.ReadDir(d.StoreDir); len(entries) != 0 {
		t.Errorf("template store after a cancelled pull: %v", entries)
	}
	if ls := c.ok("cache", "ls").stdout; !strings.Contains(ls, "0 template(s)") {
		t.Errorf("cache after a cancelled pull:\n%s", ls)
	}
	c.ok("cache", "verify")
}
