package proxmox

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// answer is one scripted reply: a status line and body written as given,
// or a connection reset.
type answer struct {
	status int
	reason string
	body   string
	header string // extra header lines, "K: v\r\n"
	reset  bool
}

// fakePVE answers each path with its script in turn, then with 200 and ok;
// it counts the requests per method and path. Every connection closes after
// its answer, as pveproxy's do after an error, so that net/http never
// retries on its own a request sent on a reused connection.
type fakePVE struct {
	srv *httptest.Server
	mu  sync.Mutex
	// script and calls are keyed "METHOD /path" (after /api2/json).
	script map[string][]answer
	calls  map[string]int
	ok     string
}

func newFakePVE(t *testing.T, script map[string][]answer) *fakePVE {
	t.Helper()
	f := &fakePVE{script: script, calls: map[string]int{}, ok: `{"data":"UPID:pve1:00001234:00005678:65A1B2C3:vzcreate:100:root@pam:"}`}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakePVE) serve(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + strings.TrimPrefix(r.URL.Path, "/api2/json")
	f.mu.Lock()
	f.calls[key]++
	var a *answer
	if s := f.script[key]; len(s) > 0 {
		a, f.script[key] = &s[0], s[1:]
	}
	f.mu.Unlock()
	if key == "GET /version" && a == nil {
		a = &answer{status: 200, body: `{"data":{"version":"9.1.1","release":"9.1"}}`}
	}
	if a == nil {
		a = &answer{status: 200, body: f.ok}
	}
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if a.reset {
		if tc, ok := netConn(conn).(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		return
	}
	reason := a.reason
	if reason == "" {
		reason = http.StatusText(a.status)
	}
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n%s", a.status, reason, len(a.body), a.header, a.body)
	buf.Flush()
}

func netConn(c net.Conn) net.Conn {
	if u, ok := c.(interface{ NetConn() net.Conn }); ok {
		return u.NetConn()
	}
	return c
}

func (f *fakePVE) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[key]
}

func (f *fakePVE) fingerprint() string {
	sum := sha256.Sum256(f.srv.Certificate().Raw)
	return FormatFingerprint(sum[:])
}

// dial connects with a token, the certificate pinned, and retries without
// waiting (the waits are not what is tested).
func (f *fakePVE) dial(t *testing.T) *Client {
	t.Helper()
	c, err := Dial(context.Background(), Config{URL: f.srv.URL, Token: "ci@pve!t=secret", Fingerprint: f.fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	c.http.Transport.(*transport).delay = time.Microsecond
	return c
}

func repeat(a answer, n int) []answer {
	out := make([]answer, n)
	for i := range out {
		out[i] = a
	}
	return out
}

var (
	unavailable = answer{status: 503, body: `{"data":null}`}
	unreachable = answer{status: 595, reason: "Connection refused"}
)

// TestTransportErrors: every status but 2xx is an error with Proxmox's
// status and message; GETs are tried again on transient failures, nothing
// else is.
func TestTransportErrors(t *testing.T) {
	const status = "/nodes/pve1/storage/local/status"
	tests := []struct {
		name   string
		method string
		path   string
		script []answer
		calls  int
		wants  []string // in the error; none: success
		is     error
	}{
		{name: "503 then success", method: "GET", path: status, script: repeat(unavailable, 2), calls: 3},
		{name: "503 to the end", method: "GET", path: status, script: repeat(unavailable, 10), calls: getAttempts,
			wants: []string{"GET " + status + ": 503 Service Unavailable", "overloaded or restarting", fmt.Sprintf("gave up after %d attempts", getAttempts)}},
		{name: "node unreachable", method: "GET", path: "/nodes/pve2/lxc/100/status/current", script: repeat(unreachable, 10), calls: getAttempts,
			wants: []string{"595 Connection refused", "could not pass the call on to node pve2", "pvecm status"}},
		{name: "reset then success", method: "GET", path: status, script: []answer{{reset: true}}, calls: 2},
		{name: "create not re-posted on 503", method: "POST", path: "/nodes/pve1/lxc", script: repeat(unavailable, 2), calls: 1,
			wants: []string{"POST /nodes/pve1/lxc: 503 Service Unavailable", "not tried again: the POST may have taken effect"}},
		{name: "create not re-posted on a reset", method: "POST", path: "/nodes/pve1/lxc", script: []answer{{reset: true}}, calls: 1,
			wants: []string{"connection to Proxmox broke before it answered", "not tried again"}},
		{name: "delete not repeated", method: "DELETE", path: "/nodes/pve1/lxc/100", script: []answer{unreachable}, calls: 1,
			wants: []string{"595 Connection refused", "not tried again: the DELETE"}},
		{name: "handler error kept, not retried", method: "GET", path: "/nodes/pve1/lxc/100/status/current", calls: 1,
			script: []answer{{status: 500, reason: "Configuration file 'nodes/pve1/lxc/100.conf' does not exist", body: `{"data":null,"message":"Configuration file 'nodes/pve1/lxc/100.conf' does not exist\n"}`}},
			wants:  []string{"500 Configuration file 'nodes/pve1/lxc/100.conf' does not exist"}, is: ErrNotFound},
		{name: "404", method: "GET", path: "/nodes/pve1/lxc/100/config", script: []answer{{status: 404, body: `{"data":null}`}}, calls: 1,
			wants: []string{"404 Not Found"}, is: ErrNotFound},
		{name: "parameter errors", method: "POST", path: "/nodes/pve1/lxc", calls: 1,
			script: []answer{{status: 400, reason: "Parameter verification failed.", body: `{"data":null,"errors":{"vmid":"invalid format - value does not look like a valid VM ID\n"}}`}},
			wants:  []string{"400 Parameter verification failed.; vmid: invalid format"}},
		{name: "permission", method: "GET", path: status, script: []answer{{status: 403, reason: "Permission check failed (/storage/local, Datastore.Audit|Datastore.AllocateSpace)"}}, calls: 1,
			wants: []string{"denied permission", "Permission check failed (/storage/local"}, is: ErrPermission},
		{name: "token refused", method: "GET", path: status, script: []answer{{status: 401, reason: "No ticket"}}, calls: 1,
			wants: []string{"API token was not accepted (401 No ticket)"}, is: ErrAuth},
		{name: "redirect", method: "GET", path: status, script: []answer{{status: 301, header: "Location: https://sso.example/login\r\n"}}, calls: 1,
			wants: []string{"301 Moved Permanently", `redirects to "https://sso.example/login"`}},
		{name: "other 4xx with data null", method: "GET", path: status, script: []answer{{status: 429, reason: "Too Many Requests", body: `{"data":null}`}}, calls: 1,
			wants: []string{"429 Too Many Requests"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakePVE(t, map[string][]answer{tt.method + " " + tt.path: tt.script})
			c := f.dial(t)
			var out any
			var err error
			switch tt.method {
			case "GET":
				err = c.get(context.Background(), tt.path, &out)
			case "POST":
				err = c.post(context.Background(), tt.path, map[string]string{"vmid": "100"}, &out)
			case "DELETE":
				err = c.del(context.Background(), tt.path, &out)
			}
			if n := f.count(tt.method + " " + tt.path); n != tt.calls {
				t.Errorf("%d requests, want %d", n, tt.calls)
			}
			if len(tt.wants) == 0 {
				if err != nil || out == nil {
					t.Fatalf("got %v, %v; want the answer", out, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; got %v", out)
			}
			t.Logf("error: %v", err)
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Errorf("error %T is not an *APIError", err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
		})
	}
}

// TestStorageNotEmptyOn503: the tester's case: a 503 with {"data":null} on
// the storage status was an empty storage, "does not take templates".
func TestStorageNotEmptyOn503(t *testing.T) {
	f := newFakePVE(t, map[string][]answer{"GET /nodes/pve1/storage/local/status": repeat(unavailable, getAttempts)})
	c := f.dial(t)
	_, err := c.Storage(context.Background(), "pve1", "local")
	if err == nil || !strings.Contains(err.Error(), "503 Service Unavailable") {
		t.Fatalf("Storage: %v, want the 503", err)
	}
}

func TestWaitTaskRidesOutAnUnreachableNode(t *testing.T) {
	upid := "UPID:pve2:00001234:00005678:65A1B2C3:imgcopy::ci@pve!t:"
	f := newFakePVE(t, map[string][]answer{"GET /nodes/pve2/tasks/" + upid + "/status": repeat(unreachable, 2)})
	f.ok = `{"data":{"status":"stopped","exitstatus":"OK"}}`
	c := f.dial(t)
	if _, err := c.WaitTask(context.Background(), upid); err != nil {
		t.Fatal(err)
	}
	if n := f.count("GET /nodes/pve2/tasks/" + upid + "/status"); n != 3 {
		t.Errorf("%d status requests, want 3", n)
	}
}

// TestDialHints: the first connection's failures say what to do.
func TestDialHints(t *testing.T) {
	f := newFakePVE(t, nil)
	html := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<html>login</html>")
	}))
	t.Cleanup(html.Close)
	htmlFP := sha256.Sum256(html.Certificate().Raw)
	plainURL := "http://" + strings.TrimPrefix(f.srv.URL, "https://")
	tests := []struct {
		name  string
		cfg   Config
		wants []string
		sent  bool // whether a request reached the server
	}{
		{name: "self-signed", cfg: Config{URL: f.srv.URL},
			wants: []string{"certificate signed by unknown authority", "--pve-fingerprint", "pvenode cert info --output-format json", "presented " + f.fingerprint()}},
		{name: "http", cfg: Config{URL: plainURL},
			wants: []string{"HTTPS only, on port 8006", "give https://" + strings.TrimPrefix(plainURL, "http://")}},
		{name: "http without port", cfg: Config{URL: "http://pve1.example"}, wants: []string{"give https://pve1.example:8006"}},
		{name: "other scheme", cfg: Config{URL: "ftp://pve1.example"}, wants: []string{"want https://HOST:8006"}},
		{name: "not Proxmox", cfg: Config{URL: html.URL, Fingerprint: FormatFingerprint(htmlFP[:])},
			wants: []string{"invalid character '<'", "does not answer like the Proxmox API"}},
		{name: "pinned", cfg: Config{URL: f.srv.URL, Fingerprint: f.fingerprint()}, sent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Token = "ci@pve!t=secret"
			before := f.count("GET /version")
			_, err := Dial(context.Background(), tt.cfg)
			if sent := f.count("GET /version") > before; sent != tt.sent {
				t.Errorf("request reached the server: %v, want %v", sent, tt.sent)
			}
			if len(tt.wants) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("connected")
			}
			t.Logf("error: %v", err)
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
