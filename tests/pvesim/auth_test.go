package pvesim

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func login(t *testing.T, s *Server, user, pw string) (ticket, csrf string) {
	t.Helper()
	r := mustOK(t, api(t, s, nil, "POST", "/access/ticket", url.Values{"username": {user}, "password": {pw}}))
	d := r.obj()
	if d["username"] != user {
		t.Fatalf("username %v, want %s", d["username"], user)
	}
	return d["ticket"].(string), d["CSRFPreventionToken"].(string)
}

func TestAuth(t *testing.T) {
	s := newSim(t, Options{})
	s.AddToken(Token{ID: "ci@pve!upload", Secret: "0b1c2d3e-aaaa-4bbb-8ccc-123456789abc", Privs: []string{"Datastore.AllocateTemplate"}})
	s.AddToken(Token{ID: "ci@pve!eq", Secret: "a=b", Privs: []string{"*"}})
	s.AddUser(User{Name: "alice@pve", Password: "alicepw", Privs: []string{"Sys.Audit"}})
	ticket, csrf := login(t, s, "root@pam", "rootpw")
	aliceTicket, _ := login(t, s, "alice@pve", "alicepw")

	header := func(k, v string) auth { return func(r *http.Request) { r.Header.Set(k, v) } }
	cases := []struct {
		name       string
		a          auth
		method     string
		path       string
		wantCode   int
		wantReason string
	}{
		{"token", rootAuth, "GET", "/version", 200, "OK"},
		{"token with a space", header("Authorization", "PVEAPIToken "+rootToken+"="+rootSecret), "GET", "/version", 200, "OK"},
		{"second token", tokenAuth("ci@pve!upload", "0b1c2d3e-aaaa-4bbb-8ccc-123456789abc"), "GET", "/version", 200, "OK"},
		// verify_token splits at the last '=', so a secret holding one
		// never matches.
		{"secret with =", tokenAuth("ci@pve!eq", "a=b"), "GET", "/version", 401, "Authentication failed!"},
		{"wrong secret", tokenAuth(rootToken, "nope"), "GET", "/version", 401, "Authentication failed!"},
		{"unknown token", tokenAuth("root@pam!other", rootSecret), "GET", "/version", 401, "Authentication failed!"},
		{"no credentials", nil, "GET", "/version", 401, "No ticket"},
		{"ticket cookie GET", ticketAuth(ticket, ""), "GET", "/version", 200, "OK"},
		{"ticket in Authorization", header("Authorization", "PVEAuthCookie="+ticket), "GET", "/version", 200, "OK"},
		{"garbage ticket", ticketAuth("PVE:root@pam:00000000::AAAA", ""), "GET", "/version", 401, "Authentication failed!"},
		{"ticket POST without CSRF", ticketAuth(ticket, ""), "POST", "/nodes/pve1/lxc/100/status/start", 401, "Permission denied - invalid csrf token"},
		{"ticket POST with wrong CSRF", ticketAuth(ticket, "6A1B2C3D:bogus"), "POST", "/nodes/pve1/lxc/100/status/start", 401, "Permission denied - invalid csrf token"},
		{"ticket POST with CSRF", ticketAuth(ticket, csrf), "GET", "/nodes/pve1/lxc/100/status/current", 500, "Configuration file 'nodes/pve1/lxc/100.conf' does not exist"},
		{"ticket of another user's CSRF", ticketAuth(aliceTicket, csrf), "PUT", "/nodes/pve1/lxc/100/config", 401, "Permission denied - invalid csrf token"},
		{"token skips CSRF", rootAuth, "DELETE", "/nodes/pve1/lxc/100", 500, "Configuration file 'nodes/pve1/lxc/100.conf' does not exist"},
		{"missing privilege", tokenAuth("ci@pve!upload", "0b1c2d3e-aaaa-4bbb-8ccc-123456789abc"), "GET", "/nodes/pve1/lxc/100/status/current", 403, "Permission check failed (/vms/100, VM.Audit)"},
		{"unknown method", rootAuth, "GET", "/nodes/pve1/nothing", 501, "Method 'GET /nodes/pve1/nothing' not implemented"},
		{"other formatter", rootAuth, "GET", "", 501, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if tc.name == "other formatter" {
				req, _ := http.NewRequest("GET", s.URL()+"/api2/extjs/version", nil)
				r := do(t, req, rootAuth)
				if r.code != 501 {
					t.Fatalf("got %v", r)
				}
				return
			}
			r := api(t, s, tc.a, tc.method, path, nil)
			if r.code != tc.wantCode || r.reason != tc.wantReason {
				t.Fatalf("got %d %q, want %d %q (body %s)", r.code, r.reason, tc.wantCode, tc.wantReason, r.body)
			}
			if r.code == 401 && r.body != "" {
				t.Errorf("401 body should be empty, got %q", r.body)
			}
		})
	}
}

func TestTicketLoginFailureAndRenewal(t *testing.T) {
	s := newSim(t, Options{AuthDelay: 150 * time.Millisecond})
	s.AddUser(User{Name: "bob@pve", Password: "bobpw"})

	t.Run("wrong password is delayed", func(t *testing.T) {
		start := time.Now()
		r := api(t, s, nil, "POST", "/access/ticket", url.Values{"username": {"bob@pve"}, "password": {"wrong"}})
		if r.code != 401 || r.reason != "authentication failure" {
			t.Fatalf("got %v", r)
		}
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Errorf("answered after %s, want the auth delay", d)
		}
	})
	t.Run("unknown user", func(t *testing.T) {
		r := api(t, s, nil, "POST", "/access/ticket", url.Values{"username": {"nobody@pve"}, "password": {"x"}})
		if r.code != 401 || r.reason != "authentication failure" {
			t.Fatalf("got %v", r)
		}
	})
	t.Run("realm parameter", func(t *testing.T) {
		r := mustOK(t, api(t, s, nil, "POST", "/access/ticket", url.Values{"username": {"bob"}, "realm": {"pve"}, "password": {"bobpw"}}))
		if r.obj()["username"] != "bob@pve" {
			t.Fatalf("got %v", r)
		}
	})
	t.Run("renewal with the ticket as password", func(t *testing.T) {
		ticket, _ := login(t, s, "bob@pve", "bobpw")
		r := mustOK(t, api(t, s, nil, "POST", "/access/ticket", url.Values{"username": {"bob@pve"}, "password": {ticket}}))
		newTicket := r.obj()["ticket"].(string)
		if !strings.HasPrefix(newTicket, "PVE:bob@pve:") {
			t.Fatalf("ticket %q", newTicket)
		}
		mustOK(t, api(t, s, ticketAuth(newTicket, ""), "GET", "/version", nil))
		// Another user's ticket does not renew.
		r = api(t, s, nil, "POST", "/access/ticket", url.Values{"username": {"root@pam"}, "password": {ticket}})
		if r.code != 401 {
			t.Fatalf("renewing root@pam with bob's ticket: %v", r)
		}
	})
	t.Run("missing parameters", func(t *testing.T) {
		r := api(t, s, nil, "POST", "/access/ticket", url.Values{"username": {"bob@pve"}})
		if r.code != 400 || r.errs()["password"] != "property is missing and it is not optional" {
			t.Fatalf("got %v", r)
		}
	})
}

func TestTicketExpiry(t *testing.T) {
	s := newSim(t, Options{TicketLifetime: time.Second})
	ticket, _ := login(t, s, "root@pam", "rootpw")
	mustOK(t, api(t, s, ticketAuth(ticket, ""), "GET", "/version", nil))
	time.Sleep(2100 * time.Millisecond)
	r := api(t, s, ticketAuth(ticket, ""), "GET", "/version", nil)
	if r.code != 401 || r.reason != "Authentication failed!" {
		t.Fatalf("expired ticket: %v", r)
	}
	r = api(t, s, nil, "POST", "/access/ticket", url.Values{"username": {"root@pam"}, "password": {ticket}})
	if r.code != 401 {
		t.Fatalf("renewing an expired ticket: %v", r)
	}
}

func TestVersionNodesNextID(t *testing.T) {
	s := newSim(t, Options{Version: "9.0.11", Nodes: []string{"a", "b", "c"}})
	v := mustOK(t, api(t, s, rootAuth, "GET", "/version", nil)).obj()
	if v["version"] != "9.0.11" || v["release"] != "9.0" || len(v["repoid"].(string)) != 8 {
		t.Fatalf("version %v", v)
	}
	nodes := mustOK(t, api(t, s, rootAuth, "GET", "/nodes", nil)).list()
	if len(nodes) != 3 || nodes[1]["node"] != "b" || nodes[1]["status"] != "online" {
		t.Fatalf("nodes %v", nodes)
	}
	if st := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/c/status", nil)).obj(); !strings.HasPrefix(st["pveversion"].(string), "pve-manager/9.0.11/") {
		t.Fatalf("node status %v", st)
	}
	if r := api(t, s, rootAuth, "GET", "/nodes/d/status", nil); r.code != 500 || !strings.HasPrefix(r.reason, "hostname lookup 'd' failed") {
		t.Fatalf("unknown node %v", r)
	}
	if r := mustOK(t, api(t, s, rootAuth, "GET", "/cluster/nextid", nil)); r.data() != "100" {
		t.Fatalf("nextid %v", r)
	}
	if r := mustOK(t, api(t, s, rootAuth, "GET", "/cluster/nextid", url.Values{"vmid": {"4242"}})); r.data() != "4242" {
		t.Fatalf("nextid?vmid %v", r)
	}
	if r := api(t, s, rootAuth, "GET", "/cluster/nextid", url.Values{"vmid": {"99"}}); r.code != 400 {
		t.Fatalf("nextid?vmid=99 %v", r)
	}
}

func TestRequestsCounted(t *testing.T) {
	s := newSim(t, Options{})
	api(t, s, rootAuth, "GET", "/version", nil)
	api(t, s, nil, "GET", "/version", nil)
	api(t, s, rootAuth, "GET", "/nodes", nil)
	if n := s.Requests("GET", "/version"); n != 2 {
		t.Errorf("GET /version: %d", n)
	}
	if n := s.Requests("", "/"); n != 3 {
		t.Errorf("all: %d", n)
	}
}

// TestRequestsExact counts a path exactly: the container list apart from
// the requests below it; query strings are not part of the path.
func TestRequestsExact(t *testing.T) {
	s := newSim(t, Options{})
	api(t, s, rootAuth, "GET", "/nodes/pve1/lxc", nil)
	api(t, s, rootAuth, "GET", "/nodes/pve1/lxc", url.Values{"node": {"pve1"}})
	api(t, s, rootAuth, "GET", "/nodes/pve1/lxc/100/status/current", nil)
	api(t, s, rootAuth, "POST", "/nodes/pve1/lxc", url.Values{"vmid": {"100"}})
	cases := []struct {
		method, path  string
		exact, prefix int
	}{
		{"GET", "/nodes/pve1/lxc", 2, 3},
		{"", "/nodes/pve1/lxc", 3, 4},
		{"POST", "/nodes/pve1/lxc", 1, 1},
		{"GET", "/nodes/pve1/lxc/100/status/current", 1, 1},
		{"GET", "/nodes/pve1", 0, 3},
	}
	for _, tc := range cases {
		if n := s.RequestsExact(tc.method, tc.path); n != tc.exact {
			t.Errorf("RequestsExact(%q, %q) = %d, want %d", tc.method, tc.path, n, tc.exact)
		}
		if n := s.Requests(tc.method, tc.path); n != tc.prefix {
			t.Errorf("Requests(%q, %q) = %d, want %d", tc.method, tc.path, n, tc.prefix)
		}
	}
}

func TestLXCPath(t *testing.T) {
	s := newSim(t, Options{})
	if p := s.LXCPath("pve2"); !filepath.IsAbs(p) || p != filepath.Join(s.dir, "pve2", "lxc") {
		t.Errorf("LXCPath(pve2) = %q", p)
	}
	if fi, err := os.Stat(s.LXCPath("pve1")); err != nil || !fi.IsDir() {
		t.Errorf("LXCPath(pve1): %v", err)
	}
	if p := s.LXCPath("nope"); p != "" {
		t.Errorf("LXCPath(nope) = %q", p)
	}
}
