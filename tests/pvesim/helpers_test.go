package pvesim

import (
	"archive/tar"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

const (
	rootToken  = "root@pam!test"
	rootSecret = "d1c1a2c3-0000-4000-8000-000000000001"
)

// newSim starts a simulator with a root token and a root@pam user, closed
// when the test ends.
func newSim(t testing.TB, o Options) *Server {
	t.Helper()
	s := New(o)
	s.AddToken(Token{ID: rootToken, Secret: rootSecret, Privs: []string{"*"}})
	s.AddUser(User{Name: "root@pam", Password: "rootpw", Privs: []string{"*"}})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func client() *http.Client {
	return &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
}

// auth sets a request's credentials.
type auth func(*http.Request)

func tokenAuth(id, secret string) auth {
	return func(r *http.Request) { r.Header.Set("Authorization", "PVEAPIToken="+id+"="+secret) }
}

var rootAuth = tokenAuth(rootToken, rootSecret)

func ticketAuth(ticket, csrf string) auth {
	return func(r *http.Request) {
		r.Header.Set("Cookie", "PVEAuthCookie="+url.QueryEscape(ticket))
		if csrf != "" {
			r.Header.Set("CSRFPreventionToken", csrf)
		}
	}
}

// reply is an HTTP answer: status code, reason phrase, raw body and the
// decoded JSON body if it is JSON.
type reply struct {
	code   int
	reason string
	body   string
	json   map[string]any
}

func (r reply) data() any { return r.json["data"] }

func (r reply) str() string { s, _ := r.json["data"].(string); return s }

func (r reply) obj() map[string]any { m, _ := r.json["data"].(map[string]any); return m }

func (r reply) list() []map[string]any {
	l, _ := r.json["data"].([]any)
	out := make([]map[string]any, 0, len(l))
	for _, x := range l {
		m, _ := x.(map[string]any)
		out = append(out, m)
	}
	return out
}

func (r reply) errs() map[string]any { m, _ := r.json["errors"].(map[string]any); return m }

func (r reply) String() string { return fmt.Sprintf("%d %s: %s", r.code, r.reason, r.body) }

// expect fails t unless r has code, reason (when given) and the parameter
// errors errs.
func (r reply) expect(t testing.TB, code int, reason string, errs map[string]string) {
	t.Helper()
	if r.code != code || reason != "" && r.reason != reason {
		t.Fatalf("got %v", r)
	}
	for k, v := range errs {
		if r.errs()[k] != v {
			t.Errorf("errors[%s] = %q, want %q", k, r.errs()[k], v)
		}
	}
}

func do(t testing.TB, req *http.Request, a auth) reply {
	t.Helper()
	if a != nil {
		a(req)
	}
	res, err := client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	rep := reply{code: res.StatusCode, reason: strings.TrimPrefix(res.Status, fmt.Sprintf("%d ", res.StatusCode)), body: string(b)}
	json.Unmarshal(b, &rep.json)
	return rep
}

// api sends params form-encoded (query string for GET and DELETE).
func api(t testing.TB, s *Server, a auth, method, path string, params url.Values) reply {
	t.Helper()
	u := s.URL() + "/api2/json" + path
	var body io.Reader
	if method == http.MethodGet || method == http.MethodDelete {
		if len(params) > 0 {
			u += "?" + params.Encode()
		}
	} else if params != nil {
		body = strings.NewReader(params.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return do(t, req, a)
}

func apiJSON(t testing.TB, s *Server, a auth, method, path string, params map[string]any) reply {
	t.Helper()
	b, _ := json.Marshal(params)
	req, err := http.NewRequest(method, s.URL()+"/api2/json"+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return do(t, req, a)
}

func mustOK(t testing.TB, r reply) reply {
	t.Helper()
	if r.code != 200 {
		t.Fatalf("want 200, got %v", r)
	}
	return r
}

// waitTask polls a task on the node its UPID names until it stops.
func waitTask(t testing.TB, s *Server, upid string) map[string]any {
	t.Helper()
	info, ok := parseUPID(upid)
	if !ok {
		t.Fatalf("not a UPID: %q", upid)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		r := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/"+info.node+"/tasks/"+upid+"/status", nil))
		if r.obj()["status"] == "stopped" {
			return r.obj()
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("task %s did not stop", upid)
	return nil
}

func taskLogText(t testing.TB, s *Server, upid string) string {
	t.Helper()
	info, _ := parseUPID(upid)
	r := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/"+info.node+"/tasks/"+upid+"/log", url.Values{"limit": {"0"}}))
	var lines []string
	for _, l := range r.list() {
		lines = append(lines, fmt.Sprint(l["t"]))
	}
	return strings.Join(lines, "\n")
}

// part is one multipart part, written exactly as given.
type part struct {
	headers []string // header lines, in order
	body    []byte
}

func field(name, value string) part {
	return part{headers: []string{`Content-Disposition: form-data; name="` + name + `"`}, body: []byte(value)}
}

func filePart(fieldName, filename string, data []byte) part {
	return part{headers: []string{
		`Content-Disposition: form-data; name="` + fieldName + `"; filename="` + filename + `"`,
		"Content-Type: application/octet-stream",
	}, body: data}
}

const boundary = "pvesimTestBoundary7f3a9c"

func multipartBody(parts ...part) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n")
		for _, h := range p.headers {
			b.WriteString(h + "\r\n")
		}
		b.WriteString("\r\n")
		b.Write(p.body)
		b.WriteString("\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.Bytes()
}

func uploadRequest(t testing.TB, s *Server, node, storage, query string, body []byte) *http.Request {
	t.Helper()
	u := s.URL() + "/api2/json/nodes/" + node + "/storage/" + storage + "/upload"
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequest("POST", u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
	return req
}

// upload sends the parts in the order given.
func upload(t testing.TB, s *Server, a auth, node, storage string, parts ...part) reply {
	t.Helper()
	return do(t, uploadRequest(t, s, node, storage, "", multipartBody(parts...)), a)
}

// fakeELF is just enough of an x86-64 ELF header for Proxmox's
// architecture detection.
func fakeELF() []byte {
	h := make([]byte, 64)
	copy(h, "\x7fELF\x02\x01\x01")
	h[16], h[18] = 2, 0x3e
	return h
}

type tfile struct {
	mode int64
	data []byte
	link string // symlink target
}

// makeTemplate writes a ./-prefixed tar.zst, as official templates are.
func makeTemplate(t testing.TB, dir, name string, files map[string]tfile) string {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw, err := zstd.NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	dirs := map[string]bool{}
	writeDir := func(d string) {
		if d == "." || dirs[d] {
			return
		}
		dirs[d] = true
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./" + d + "/", Mode: 0o755, Format: tar.FormatPAX})
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755, Format: tar.FormatPAX})
	for _, n := range names {
		var parents []string
		for d := filepath.Dir(n); d != "."; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			writeDir(d)
		}
		fl := files[n]
		h := &tar.Header{Name: "./" + n, Mode: fl.mode, Format: tar.FormatPAX}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if fl.link != "" {
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, fl.link, 0o777
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(fl.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(fl.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// debianFiles is a minimal template Proxmox detects as Debian 12 amd64.
func debianFiles() map[string]tfile {
	return map[string]tfile{
		"etc/os-release":     {data: []byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n")},
		"etc/debian_version": {data: []byte("12.8\n")},
		"bin/sh":             {mode: 0o755, data: fakeELF()},
		"sbin/init":          {mode: 0o755, data: fakeELF()},
	}
}

// putTemplate makes a template in a storage's template/cache on node.
func putTemplate(t testing.TB, s *Server, node, storage, name string, files map[string]tfile) string {
	t.Helper()
	dir := filepath.Join(s.StoragePath(node, storage), "template", "cache")
	makeTemplate(t, dir, name, files)
	return storage + ":vztmpl/" + name
}
