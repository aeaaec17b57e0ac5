package testenv

import (
	"context"
	"fmt"
	"io"
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

	stop func()
}

// Stop ends the registry before the test does: connections to Host are
// refused from then on.
func (r *Registry) Stop() { r.stop() }

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
	var once sync.Once
	r.stop = func() { once.Do(func() { cancel(); cmd.Wait() }) }
	t.Cleanup(r.stop)
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
// optionally changing responses or injecting faults.
type Proxy struct {
	// Host is the proxy's host:port.
	Host string

	target string
	mu     sync.Mutex
	counts map[string]int
	delay  map[string]time.Duration // by request kind
	// Tamper, if set, may replace a response body; it gets the request
	// path.
	tamper func(path string, body []byte) []byte
	faults []*Fault
	log    []*request
}

type request struct {
	method, path, rng string
	sent              int64 // response body bytes written
}

// Fault makes the proxy misbehave for matching requests, as a flaky or
// hostile registry or network would.
type Fault struct {
	// Kind ("manifest", "blob", "/v2/") and Path (a suffix of the request
	// path, such as a digest) select requests; empty matches any.
	Kind, Path string
	// Times is how many matching requests get the fault; 0 means all.
	Times int

	// Status answers with this status (and Retry-After, if set) instead
	// of passing the request on.
	Status     int
	RetryAfter string
	// Drop closes the connection without an answer.
	Drop bool
	// Cut passes on the response headers and Truncate body bytes, then
	// breaks the connection.
	Cut      bool
	Truncate int64
	// Stall passes on the headers and Truncate body bytes, then sends
	// nothing more until the client goes away.
	Stall bool
	// Pad appends this many bytes to the body, announced in
	// Content-Length unless Chunked.
	Pad     int64
	Chunked bool
}

// StartProxy proxies to the registry at target (host:port).
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	u, _ := url.Parse("http://" + target)
	p := &Proxy{counts: map[string]int{}, target: target}
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
		f := p.takeFault(r)
		rec := &request{method: r.Method, path: r.URL.Path, rng: r.Header.Get("Range")}
		p.log = append(p.log, rec)
		p.mu.Unlock()
		if d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		cw := &countingWriter{ResponseWriter: w, p: p, rec: rec}
		if f != nil {
			p.fault(cw, r, f)
			return
		}
		rp.ServeHTTP(cw, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	p.Host = l.Addr().String()
	return p
}

// takeFault returns the first fault matching r, counting it down. p.mu is
// held.
func (p *Proxy) takeFault(r *http.Request) *Fault {
	for _, f := range p.faults {
		if f.Times < 0 || (f.Kind != "" && f.Kind != kind(r.URL.Path)) || !strings.HasSuffix(r.URL.Path, f.Path) {
			continue
		}
		out := *f
		if f.Times > 0 {
			if f.Times--; f.Times == 0 {
				f.Times = -1
			}
		}
		return &out
	}
	return nil
}

// fault answers r as f says.
func (p *Proxy) fault(w http.ResponseWriter, r *http.Request, f *Fault) {
	switch {
	case f.Drop:
		panic(http.ErrAbortHandler)
	case f.Status != 0:
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		w.WriteHeader(f.Status)
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.target+r.URL.RequestURI(), nil)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	out.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	if f.Pad > 0 {
		w.Header().Del("Content-Length")
		if !f.Chunked && resp.ContentLength >= 0 {
			w.Header().Set("Content-Length", fmt.Sprint(resp.ContentLength+f.Pad))
		}
		w.WriteHeader(resp.StatusCode)
		if _, err := io.Copy(w, resp.Body); err != nil {
			return
		}
		chunk := make([]byte, 64<<10)
		for n := int64(0); n < f.Pad; n += int64(len(chunk)) {
			if _, err := w.Write(chunk[:min(int64(len(chunk)), f.Pad-n)]); err != nil {
				return
			}
		}
		return
	}
	w.WriteHeader(resp.StatusCode)
	io.CopyN(w, resp.Body, f.Truncate)
	w.(http.Flusher).Flush()
	if f.Stall {
		<-r.Context().Done()
		return
	}
	panic(http.ErrAbortHandler)
}

type countingWriter struct {
	http.ResponseWriter
	p   *Proxy
	rec *request
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.p.mu.Lock()
	c.rec.sent += int64(n)
	c.p.mu.Unlock()
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// AddFault makes the proxy misbehave for requests f matches; faults are
// tried in the order added.
func (p *Proxy) AddFault(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, &f)
}

// CountPath returns how many requests of method went to paths ending in
// suffix (a digest, or "/manifests/1").
func (p *Proxy) CountPath(method, suffix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.log {
		if r.method == method && strings.HasSuffix(r.path, suffix) {
			n++
		}
	}
	return n
}

// Ranges returns the Range header of each GET to a path ending in suffix,
// in order ("" for none).
func (p *Proxy) Ranges(suffix string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, r := range p.log {
		if r.method == http.MethodGet && strings.HasSuffix(r.path, suffix) {
			out = append(out, r.rng)
		}
	}
	return out
}

// BytesSent returns how many response body bytes the proxy managed to
// write for paths ending in suffix.
func (p *Proxy) BytesSent(suffix string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for _, r := range p.log {
		if strings.HasSuffix(r.path, suffix) {
			n += r.sent
		}
	}
	return n
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

// Reset zeroes the counts and forgets the requests seen.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
	p.log = nil
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
