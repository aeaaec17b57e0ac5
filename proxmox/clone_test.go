package proxmox

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

const (
	cloneUPID   = "UPID:pve1:00001234:00005678:65A1B2C3:vzcreate:100:root@pam:"
	cloneStatus = "GET /nodes/pve1/tasks/" + cloneUPID + "/status"
)

var (
	taskOK   = answer{status: 200, body: `{"data":{"status":"stopped","exitstatus":"OK"}}`}
	ctLocked = answer{status: 500, reason: "CT is locked (disk)", body: `{"data":null,"message":"CT is locked (disk)\n"}`}
)

// TestLinkedClone: a clone waits out another client's clone of the same
// template (500 "CT is locked (disk)"), takes another VMID when nextid's
// was taken meanwhile, gives up on a lock that stays, and removes a clone
// whose task failed.
func TestLinkedClone(t *testing.T) {
	tests := []struct {
		name    string
		script  map[string][]answer
		opts    CloneOptions
		want    int
		wantErr string
		calls   map[string]int
	}{
		{name: "locked twice, then cloned",
			script: map[string][]answer{"POST /nodes/pve1/lxc/100/clone": {ctLocked, ctLocked}, cloneStatus: {taskOK}},
			opts:   CloneOptions{NewID: 101}, want: 101,
			calls: map[string]int{"POST /nodes/pve1/lxc/100/clone": 3}},
		{name: "VMID taken meanwhile",
			script: map[string][]answer{
				"GET /cluster/nextid":            {{status: 200, body: `{"data":"101"}`}, {status: 200, body: `{"data":"102"}`}},
				"POST /nodes/pve1/lxc/100/clone": {{status: 500, reason: "CT 101 already exists on node 'pve2'", body: `{"data":null,"message":"CT 101 already exists on node 'pve2'\n"}`}},
				cloneStatus:                      {taskOK}},
			want:  102,
			calls: map[string]int{"POST /nodes/pve1/lxc/100/clone": 2, "GET /cluster/nextid": 2}},
		{name: "the given VMID taken",
			script:  map[string][]answer{"POST /nodes/pve1/lxc/100/clone": {{status: 500, reason: "CT 101 already exists on node 'pve1'", body: `{"data":null,"message":"CT 101 already exists on node 'pve1'\n"}`}}},
			opts:    CloneOptions{NewID: 101},
			wantErr: "VMID already in use",
			calls:   map[string]int{"POST /nodes/pve1/lxc/100/clone": 1}},
		{name: "stays locked",
			script:  map[string][]answer{"POST /nodes/pve1/lxc/100/clone": repeat(ctLocked, 100)},
			opts:    CloneOptions{NewID: 101, LockWait: 200 * time.Millisecond},
			wantErr: "it stayed locked (disk) for 200ms"},
		{name: "task fails: the clone is removed",
			script: map[string][]answer{
				cloneStatus: {{status: 200, body: `{"data":{"status":"stopped","exitstatus":"clone failed: no space left"}}`}, taskOK},
				"GET /nodes/pve1/tasks/" + cloneUPID + "/log": {{status: 200, body: `{"data":[{"n":1,"t":"clone failed: no space left"}]}`}},
				"GET /nodes/pve1/lxc/101/status/current":      {{status: 200, body: `{"data":{"vmid":101,"status":"stopped"}}`}}},
			opts:    CloneOptions{NewID: 101},
			wantErr: "clone failed: no space left",
			calls:   map[string]int{"DELETE /nodes/pve1/lxc/101": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakePVE(t, tc.script)
			f.ok = `{"data":"` + cloneUPID + `"}`
			vmid, err := f.dial(t).LinkedClone(context.Background(), "pve1", 100, tc.opts)
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			case tc.wantErr == "" && (err != nil || vmid != tc.want):
				t.Fatalf("LinkedClone = %d, %v; want %d", vmid, err, tc.want)
			case tc.wantErr == "VMID already in use" && !errors.Is(err, ErrVMIDTaken):
				t.Errorf("%v is not ErrVMIDTaken", err)
			case strings.Contains(tc.wantErr, "stayed locked") && !errors.Is(err, ErrLocked):
				t.Errorf("%v is not ErrLocked", err)
			}
			for k, n := range tc.calls {
				if got := f.count(k); got != n {
					t.Errorf("%s: %d calls, want %d", k, got, n)
				}
			}
		})
	}
}

// TestMakeTemplate: Proxmox answers POST .../template with null; the
// config is read until it says template: 1.
func TestMakeTemplate(t *testing.T) {
	f := newFakePVE(t, map[string][]answer{
		"POST /nodes/pve1/lxc/100/template": {{status: 200, body: `{"data":null}`}},
		"GET /nodes/pve1/lxc/100/config": {{status: 200, body: `{"data":{"hostname":"t"}}`}, {status: 200, body: `{"data":{"hostname":"t"}}`},
			{status: 200, body: `{"data":{"hostname":"t","template":1}}`}},
	})
	if err := f.dial(t).MakeTemplate(context.Background(), "pve1", 100); err != nil {
		t.Fatal(err)
	}
	if n := f.count("GET /nodes/pve1/lxc/100/config"); n != 3 {
		t.Errorf("config read %d times, want 3", n)
	}
	f = newFakePVE(t, map[string][]answer{"POST /nodes/pve1/lxc/100/template": {{status: 500, reason: "you can't convert a CT to template if the CT is running",
		body: `{"data":null,"message":"you can't convert a CT to template if the CT is running\n"}`}}})
	if err := f.dial(t).MakeTemplate(context.Background(), "pve1", 100); err == nil || !strings.Contains(err.Error(), "make container 100 on pve1 a template: POST /nodes/pve1/lxc/100/template: 500 you can't convert") {
		t.Errorf("refused: %v", err)
	}
}

func TestLockedBy(t *testing.T) {
	for _, tc := range []struct {
		err  error
		lock string
		ok   bool
	}{
		{&APIError{Status: 500, Message: "CT is locked (disk)"}, "disk", true},
		{&APIError{Status: 500, Message: "CT is locked (snapshot-delete)"}, "snapshot-delete", true},
		{&APIError{Status: 400, Message: "CT is locked (disk)"}, "", false},
		{&APIError{Status: 500, Message: "unable to create CT 100"}, "", false},
		{errors.New("CT is locked (disk)"), "", false},
	} {
		if lock, ok := LockedBy(tc.err); lock != tc.lock || ok != tc.ok {
			t.Errorf("LockedBy(%v) = %q %v", tc.err, lock, ok)
		}
	}
}

// hookedPVE is a fakePVE that calls hook with each request before it
// answers it.
func hookedPVE(t *testing.T, script map[string][]answer, hook func(r *http.Request)) *fakePVE {
	t.Helper()
	f := &fakePVE{script: script, calls: map[string]int{}, ok: `{"data":"` + cloneUPID + `"}`}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hook(r)
		f.serve(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// TestCallerGivesUp: a caller that gives up once the POST is sent leaves
// nothing half-made: a clone is waited for and removed, a conversion into
// a template is waited for to its end (removing the container meanwhile
// would break its renamed volumes), and both report the caller's error.
func TestCallerGivesUp(t *testing.T) {
	t.Run("clone", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := hookedPVE(t, map[string][]answer{cloneStatus: repeat(taskOK, 10),
			"GET /nodes/pve1/lxc/101/status/current": {{status: 200, body: `{"data":{"vmid":101,"status":"stopped"}}`}}},
			func(r *http.Request) {
				if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/clone") {
					cancel()
				}
			})
		_, err := f.dial(t).LinkedClone(ctx, "pve1", 100, CloneOptions{NewID: 101})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("LinkedClone: %v, want the caller's error", err)
		}
		if n := f.count("DELETE /nodes/pve1/lxc/101"); n != 1 {
			t.Errorf("the clone was removed %d times, want once", n)
		}
	})
	t.Run("template", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := hookedPVE(t, map[string][]answer{
			"POST /nodes/pve1/lxc/100/template": {{status: 200, body: `{"data":null}`}},
			"GET /nodes/pve1/lxc/100/config": {{status: 200, body: `{"data":{"hostname":"t"}}`},
				{status: 200, body: `{"data":{"hostname":"t","template":1}}`}}},
			func(r *http.Request) {
				if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/template") {
					cancel()
				}
			})
		err := f.dial(t).MakeTemplate(ctx, "pve1", 100)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("MakeTemplate: %v, want the caller's error", err)
		}
		if n := f.count("GET /nodes/pve1/lxc/100/config"); n != 2 {
			t.Errorf("config read %d times, want 2: until it says template: 1", n)
		}
	})
}
