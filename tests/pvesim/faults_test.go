package pvesim

import (
	"net/http"
	"testing"
)

// TestFailNextRequests: injected failures have Proxmox's shapes, hit only
// the requests they match, and run out after n.
func TestFailNextRequests(t *testing.T) {
	const status = "/nodes/pve1/storage/local/status"
	tests := []struct {
		name           string
		method, prefix string
		code, n        int
		// The reply to GET status while the fault lasts.
		wantCode   int
		wantReason string
		wantBody   string
	}{
		{name: "handler 503", method: "GET", prefix: "/nodes/pve1/storage", code: 503, n: 2,
			wantCode: 503, wantReason: "Service Unavailable", wantBody: `{"data":null,"message":"Service Unavailable\n"}`},
		{name: "node unreachable", method: "", prefix: "/nodes/pve1/", code: 595, n: 1,
			wantCode: 595, wantReason: "Connection refused", wantBody: ""},
		{name: "node times out", method: "GET", prefix: "/nodes/", code: 596, n: 1,
			wantCode: 596, wantReason: "Connection timed out", wantBody: ""},
		{name: "other method", method: "POST", prefix: "/nodes/pve1/storage", code: 503, n: 1, wantCode: 200},
		{name: "other path", method: "GET", prefix: "/nodes/pve2/", code: 503, n: 1, wantCode: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, Options{})
			s.FailNextRequests(tt.method, tt.prefix, tt.code, tt.n)
			n := tt.n
			if tt.wantCode == 200 {
				n = 1
			}
			for i := 0; i < n; i++ {
				r := api(t, s, rootAuth, "GET", status, nil)
				if r.code != tt.wantCode || tt.wantCode != 200 && (r.reason != tt.wantReason || r.body != tt.wantBody) {
					t.Fatalf("request %d: %v, want %d %s: %s", i+1, r, tt.wantCode, tt.wantReason, tt.wantBody)
				}
			}
			mustOK(t, api(t, s, rootAuth, "GET", status, nil))
			if got := s.Requests("GET", status); got != n+1 {
				t.Errorf("%d requests recorded, want %d", got, n+1)
			}
		})
	}
}

// TestFaultsNeedAuthentication: pveproxy authenticates before it proxies
// or runs a handler, so a refused request does not use up a fault.
func TestFaultsNeedAuthentication(t *testing.T) {
	s := newSim(t, Options{})
	s.FailNextRequests("", "/version", 503, 1)
	api(t, s, tokenAuth(rootToken, "wrong"), "GET", "/version", nil).expect(t, 401, "", nil)
	api(t, s, rootAuth, "GET", "/version", nil).expect(t, 503, "Service Unavailable", nil)
	mustOK(t, api(t, s, rootAuth, "GET", "/version", nil))
}

func TestResetNextRequests(t *testing.T) {
	s := newSim(t, Options{})
	s.ResetNextRequests("GET", "/version", 1)
	req, _ := http.NewRequest("GET", s.URL()+"/api2/json/version", nil)
	rootAuth(req)
	if res, err := client().Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("answered %s, want a reset connection", res.Status)
	}
	mustOK(t, api(t, s, rootAuth, "GET", "/version", nil))
}
