package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a running Distribution registry.
type Registry struct {
	// Host is host:port to use in image references.
	Host string
	// User and Password are set when the registry requires them.
	User, Password string
}

// RegistryOptions configure StartRegistry.
type RegistryOptions struct {
	// Auth protects the registry with htpasswd (user "tester").
	Auth bool
	// Addr is the address to listen on; empty means 127.0.0.1 with a
	// random port.
	Addr string
}

// StartRegistry runs the Distribution registry binary for the test's
// lifetime.
func StartRegistry(t testing.TB, o RegistryOptions) *Registry {
	t.Helper()
	bin := Tool(t, "PVE_IMAGE_REGISTRY_BIN", "registry")
	dir := t.TempDir()
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:" + freePort(t, "127.0.0.1")
	}
	r := &Registry{Host: addr}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	if o.Auth {
		r.User, r.Password = "tester", "s3cret-pw"
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htp := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htp, []byte(r.User+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", htp)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", cfgPath)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start registry: %v", err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry did not come up on %s: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

func freePort(t testing.TB, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// Proxy sits between pve-image and a registry, counting requests and
// optionally changing responses.
type Proxy struct {
	// Host is the proxy's host:port.
	Host string

	mu     sync.Mutex
	counts map[string]int
	delay  map[string]time.Duration // by request kind
	// Tamper, if set, may replace a response body; it gets the request
	// path.
	tamper func(path string, body []byte) []byte
}

// StartProxy proxies to the registry at target (host:port).
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	u, _ := url.Parse("http://" + target)
	p := &Proxy{counts: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		p.mu.Lock()
		tamper := p.tamper
		p.mu.Unlock()
		if tamper == nil || resp.StatusCode != http.StatusOK || resp.Request.Method != http.MethodGet {
			return nil
		}
		body, err := readAll(resp)
		if err != nil {
			return err
		}
		body = tamper(resp.Request.URL.Path, body)
		resp.Body = nopReadCloser{strings.NewReader(string(body))}
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", fmt.Sprint(len(body)))
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.counts[r.Method+" "+kind(r.URL.Path)]++
		d := p.delay[kind(r.URL.Path)]
		p.mu.Unlock()
		if d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	p.Host = l.Addr().String()
	return p
}

func kind(path string) string {
	switch {
	case strings.Contains(path, "/manifests/"):
		return "manifest"
	case strings.Contains(path, "/blobs/"):
		return "blob"
	}
	return path
}

// Count returns how many requests of method ("GET", "HEAD") went to kind
// ("manifest", "blob", "/v2/").
func (p *Proxy) Count(method, kind string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[method+" "+kind]
}

// Reset zeroes the counts.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
}

// SetDelay holds requests of a kind ("manifest", "blob") for d before
// passing them on.
func (p *Proxy) SetDelay(kind string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.delay == nil {
		p.delay = map[string]time.Duration{}
	}
	p.delay[kind] = d
}

// SetTamper installs f to rewrite successful GET responses.
func (p *Proxy) SetTamper(f func(path string, body []byte) []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = f
}
