package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestProxmoxTransientFaults: every error status from Proxmox is an error
// with its status and message; GETs ride out transient failures (an
// overloaded pveproxy, a node it cannot reach, a connection reset), and a
// create is never sent twice.
func TestProxmoxTransientFaults(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "app:1", appImage(t, "transient", v1.Config{}))
	ref := reg.Host + "/app:1"
	c := newCLI(t)
	const status = "/nodes/pve1/storage/local/status"
	tests := []struct {
		name   string
		inject func(*pvesim.Server)
		args   []string // after the command's connection flags
		wants  []string // in stderr; none: success
		refuse []string // not in stderr
		check  func(t *testing.T, sim *pvesim.Server)
	}{
		{name: "503 on the storage status, then answers",
			inject: func(s *pvesim.Server) { s.FailNextRequests("GET", status, 503, 2) },
			args:   []string{"push", ref},
			check: func(t *testing.T, s *pvesim.Server) {
				if n := s.RequestsExact("GET", status); n != 3 {
					t.Errorf("storage status asked %d times, want 3", n)
				}
			}},
		// The tester's case: a lasting 503 with {"data":null} read as an
		// empty storage that "does not take container templates".
		{name: "503 on the storage status to the end",
			inject: func(s *pvesim.Server) { s.FailNextRequests("GET", status, 503, 100) },
			args:   []string{"push", ref},
			wants:  []string{"GET " + status + ": 503 Service Unavailable", "overloaded or restarting", "gave up after"},
			refuse: []string{"does not take container templates"}},
		{name: "node unreachable while the upload's task runs",
			inject: func(s *pvesim.Server) { s.FailNextRequests("GET", "/nodes/pve1/tasks/", 595, 2) },
			args:   []string{"push", ref},
			check: func(t *testing.T, s *pvesim.Server) {
				if s.Uploads() != 1 {
					t.Errorf("%d uploads, want 1", s.Uploads())
				}
			}},
		{name: "node unreachable to the end",
			inject: func(s *pvesim.Server) { s.FailNextRequests("GET", "/nodes/pve1/storage/local/content", 595, 100) },
			args:   []string{"ls"},
			wants:  []string{"595 Connection refused", "could not pass the call on to node pve1", "pvecm status"}},
		// net/http itself sends a GET again once when a reused
		// connection breaks; three resets need more.
		{name: "connection resets on a GET",
			inject: func(s *pvesim.Server) { s.ResetNextRequests("GET", "/nodes/pve1/storage/local/content", 3) },
			args:   []string{"ls"},
			check: func(t *testing.T, s *pvesim.Server) {
				if n := s.RequestsExact("GET", "/nodes/pve1/storage/local/content"); n != 4 {
					t.Errorf("content listed %d times, want 4: three resets, then the answer", n)
				}
			}},
		{name: "upload answered 503 is sent again",
			inject: func(s *pvesim.Server) { s.FailNextRequests("POST", "/nodes/pve1/storage/local/upload", 503, 1) },
			args:   []string{"push", ref},
			check: func(t *testing.T, s *pvesim.Server) {
				if n, up := s.Requests("POST", "/nodes/pve1/storage/local/upload"), s.Uploads(); n != 2 || up != 1 {
					t.Errorf("%d upload requests, %d uploads: want 2 and 1", n, up)
				}
			}},
		{name: "create answered 595 is not sent again",
			inject: func(s *pvesim.Server) { s.FailNextRequests("POST", "/nodes/pve1/lxc", 595, 1) },
			args:   []string{"run", ref, "--start=false", "--rootfs", "shared:1"},
			wants:  []string{"POST /nodes/pve1/lxc: 595 Connection refused", "not tried again: the POST may have taken effect"},
			check: func(t *testing.T, s *pvesim.Server) {
				if n := s.RequestsExact("POST", "/nodes/pve1/lxc"); n != 1 {
					t.Errorf("create sent %d times, want once", n)
				}
			}},
		{name: "create whose connection breaks is not sent again",
			inject: func(s *pvesim.Server) { s.ResetNextRequests("POST", "/nodes/pve1/lxc", 1) },
			args:   []string{"run", ref, "--start=false", "--rootfs", "shared:1"},
			wants:  []string{"POST /nodes/pve1/lxc: the connection to Proxmox broke before it answered", "not tried again"},
			check: func(t *testing.T, s *pvesim.Server) {
				if n := s.RequestsExact("POST", "/nodes/pve1/lxc"); n != 1 {
					t.Errorf("create sent %d times, want once", n)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := startSim(t, pvesim.Options{})
			tt.inject(sim)
			args := append(tt.args[:1:1], pveArgs(sim, tt.args[1:]...)...)
			cc := *c // the subtest's own, sharing the cache
			cc.t = t
			var r result
			if len(tt.wants) == 0 {
				r = cc.ok(args...)
			} else {
				r = cc.fails(args, tt.wants...)
			}
			for _, no := range tt.refuse {
				if strings.Contains(r.stderr, no) {
					t.Errorf("stderr has %q:\n%s", no, r.stderr)
				}
			}
			if tt.check != nil {
				tt.check(t, sim)
			}
		})
	}
}

// TestProxmoxConnectionHints: the first connection's and the config file's
// mistakes say what to do about them, and no credential leaves for a
// server that is not trusted.
func TestProxmoxConnectionHints(t *testing.T) {
	sim := startSim(t, pvesim.Options{})
	c := newCLI(t)
	token := simToken + "=" + simSecret
	dir := t.TempDir()
	typo := filepath.Join(dir, "config.yaml")
	os.WriteFile(typo, []byte("contexts:\n- name: lab\n  url: "+sim.URL()+"\n  token: "+token+"\n  fingerprnt: \""+sim.Fingerprint()+"\"\n  node: pve1\n"), 0o600)
	tests := []struct {
		name  string
		args  []string
		env   []string
		wants []string
	}{
		{name: "self-signed certificate", args: []string{"ls", "--pve-url", sim.URL(), "--pve-token", token, "--node", "pve1"},
			wants: []string{"certificate signed by unknown authority", "--pve-fingerprint", "pvenode cert info --output-format json", "presented " + sim.Fingerprint()}},
		{name: "http URL", args: []string{"ls", "--pve-url", "http://" + strings.TrimPrefix(sim.URL(), "https://"), "--pve-token", token, "--node", "pve1"},
			wants: []string{"Proxmox's API is HTTPS only, on port 8006", "give " + sim.URL()}},
		{name: "misspelt key in the config file", args: []string{"ls"}, env: []string{"PVE_IMAGE_CONFIG=" + typo},
			wants: []string{"config " + typo, `line 5: unknown key "fingerprnt" (did you mean "fingerprint"?)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := sim.Requests("", "/")
			cc := *c
			cc.t, cc.env = t, append(append([]string{}, c.env...), tt.env...)
			cc.fails(tt.args, tt.wants...)
			if after := sim.Requests("", "/"); after != before {
				t.Errorf("%d requests reached the server", after-before)
			}
		})
	}
}
