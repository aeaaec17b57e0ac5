package runtime

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/tests/pvesim"
)

// cloneRig is a simulator behind a reverse proxy whose hook sees every
// answer before the daemon does: it can cancel a create the moment
// Proxmox has taken a call, or change the answer.
type cloneRig struct {
	sim   *pvesim.Server
	cl    *proxmox.Client
	volid string
	mu    sync.Mutex
	hook  func(resp *http.Response)
}

func newCloneRig(t *testing.T) *cloneRig {
	t.Helper()
	sim := pvesim.New(pvesim.Options{})
	sim.AddToken(pvesim.Token{ID: "root@pam!t", Secret: "s", Privs: []string{"*"}})
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	r := &cloneRig{sim: sim, volid: simTemplate(t, sim, "deb_1_amd64.0123456789ab.tar.zst")}
	u, err := url.Parse(sim.URL())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	rp.ModifyResponse = func(resp *http.Response) error {
		r.mu.Lock()
		fn := r.hook
		r.mu.Unlock()
		if fn != nil {
			fn(resp)
		}
		return nil
	}
	px := httptest.NewTLSServer(rp)
	t.Cleanup(px.Close)
	if r.cl, err = proxmox.Dial(context.Background(), proxmox.Config{URL: px.URL, Token: "root@pam!t=s", Insecure: true}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *cloneRig) setHook(fn func(resp *http.Response)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hook = fn
}

// server is a daemon with its state in dir ("" for a new one).
func (r *cloneRig) server(t *testing.T, dir string, log *slog.Logger) *Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := New(Config{Proxmox: r.cl, Node: "pve1", StateDir: dir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// spec is pod i's container on the LVM-thin storage, described by s.
func (r *cloneRig) spec(s *Server, i int) proxmox.ContainerSpec {
	return proxmox.ContainerSpec{Options: map[string]string{"ostemplate": r.volid, "rootfs": "local-lvm:1", "unprivileged": "1",
		"hostname": fmt.Sprintf("pod%d", i), "description": s.podDescription(fmt.Sprintf("pod %d", i)), "tags": "pve-image;pod-" + strconv.Itoa(i),
		"memory": "128", "net0": fmt.Sprintf("name=eth0,bridge=vmbr0,hwaddr=02:00:00:00:00:%02X", i), "ostype": "debian"},
		After: map[string]string{"cmode": "console"}}
}

// templates and others are the template containers and the other
// containers on pve1.
func (r *cloneRig) templates() (templates, others []int) {
	for _, id := range r.sim.Containers("pve1") {
		if ct, ok := r.sim.Container("pve1", id); ok && ct.Config["template"] == "1" {
			templates = append(templates, id)
		} else {
			others = append(others, id)
		}
	}
	return templates, others
}

func (r *cloneRig) exists(vmid int) bool {
	_, ok := r.sim.Container("pve1", vmid)
	return ok
}

var ctPathRe = regexp.MustCompile(`/lxc/(\d+)/`)

// cancelOn cancels ctx when Proxmox has answered a POST whose path ends
// in suffix, and returns the VMID the path names.
func (r *cloneRig) cancelOn(suffix string, cancel context.CancelFunc) (vmid func() int) {
	var mu sync.Mutex
	got := 0
	r.setHook(func(resp *http.Response) {
		if resp.Request.Method == "POST" && strings.HasSuffix(resp.Request.URL.Path, suffix) {
			mu.Lock()
			if m := ctPathRe.FindStringSubmatch(resp.Request.URL.Path); m != nil && got == 0 {
				got, _ = strconv.Atoi(m[1])
			}
			mu.Unlock()
			cancel()
		}
	})
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return got
	}
}

// TestCreateGivesUp: a create whose caller gives up the moment Proxmox has
// taken its call leaves nothing behind, and throws nothing away: the
// template container it started is finished and kept for the next
// create, and a clone already started is removed.
func TestCreateGivesUp(t *testing.T) {
	t.Run("after POST .../template", func(t *testing.T) {
		r := newCloneRig(t)
		s := r.server(t, "", nil)
		ctx, cancel := context.WithCancel(context.Background())
		made := r.cancelOn("/template", cancel)
		if _, _, err := s.makeContainer(ctx, "pve1", r.spec(s, 1)); !errors.Is(err, context.Canceled) {
			t.Fatalf("create: %v, want the caller's error", err)
		}
		r.setHook(nil)
		if made() == 0 {
			t.Fatal("no POST .../template seen")
		}
		// The next create waits for the one in the making, or finds it.
		vmid, b, err := s.makeUnrecorded(context.Background(), "pve1", r.spec(s, 2))
		if err != nil {
			t.Fatal(err)
		}
		if b == nil || b.VMID != made() {
			t.Errorf("next create cloned %+v, want the template container %d the first one started", b, made())
		}
		tmpls, others := r.templates()
		if len(tmpls) != 1 || len(others) != 1 || others[0] != vmid {
			t.Errorf("template containers %v, others %v; want [%d] and [%d]", tmpls, others, made(), vmid)
		}
		if n := r.sim.RequestsExact("POST", "/nodes/pve1/lxc"); n != 1 {
			t.Errorf("%d creates from the template file, want 1: the template container was made once", n)
		}
		var m dto.Metric
		s.cfg.Metrics.templates.WithLabelValues("created").Write(&m)
		if n := m.GetCounter().GetValue(); n != 1 {
			t.Errorf("%v template containers created, want 1", n)
		}
	})
	t.Run("after POST .../clone", func(t *testing.T) {
		r := newCloneRig(t)
		s := r.server(t, "", nil)
		first, _, err := s.makeUnrecorded(context.Background(), "pve1", r.spec(s, 1))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r.cancelOn("/clone", cancel)
		if _, _, err := s.makeContainer(ctx, "pve1", r.spec(s, 2)); !errors.Is(err, context.Canceled) {
			t.Fatalf("create: %v, want the caller's error", err)
		}
		r.setHook(nil)
		if tmpls, others := r.templates(); len(tmpls) != 1 || len(others) != 1 || others[0] != first {
			t.Errorf("template containers %v, others %v; want one and [%d]: the cut-short clone stays", tmpls, others, first)
		}
	})
}

// lockLog collects the warnings about a locked template container.
type lockLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// TestLockedTemplateContainer: a template container that stays locked
// (a backup job, or a lock a crash left) past the lock wait does not fail
// creates: Proxmox unpacks the template for them, the next creates try the
// clone once and no longer wait, the lock is logged once, and clones
// resume once it is gone.
func TestLockedTemplateContainer(t *testing.T) {
	r := newCloneRig(t)
	var log lockLog
	s := r.server(t, "", slog.New(slog.NewTextHandler(&log, nil)))
	s.bases.lockWait = 100 * time.Millisecond
	ctx := context.Background()
	_, b, err := s.makeUnrecorded(ctx, "pve1", r.spec(s, 1))
	if err != nil || b == nil {
		t.Fatalf("first create: %+v %v", b, err)
	}
	var mu sync.Mutex
	clonePosts := 0
	locked := func(resp *http.Response) {
		if resp.Request.Method == "POST" && strings.HasSuffix(resp.Request.URL.Path, "/clone") {
			mu.Lock()
			clonePosts++
			mu.Unlock()
			// As Proxmox answers while vzdump holds the template.
			msg := `{"data":null,"message":"CT is locked (backup)\n"}`
			resp.StatusCode, resp.Status = 500, "500 CT is locked (backup)"
			resp.Body = io.NopCloser(strings.NewReader(msg))
			resp.ContentLength = int64(len(msg))
			resp.Header.Set("Content-Length", strconv.Itoa(len(msg)))
		}
	}
	posts := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := clonePosts
		clonePosts = 0
		return n
	}
	r.setHook(locked)
	for i := 2; i <= 3; i++ {
		vmid, b, err := s.makeUnrecorded(ctx, "pve1", r.spec(s, i))
		if err != nil || b != nil {
			t.Fatalf("create %d with the template container locked: %+v %v; want the template unpacked", i, b, err)
		}
		ct, _ := r.sim.Container("pve1", vmid)
		if ct.Config["rootfs"] != fmt.Sprintf("local-lvm:vm-%d-disk-0,size=1G", vmid) {
			t.Errorf("create %d: rootfs %q", i, ct.Config["rootfs"])
		}
		if n := posts(); i == 3 && n != 1 {
			t.Errorf("create %d tried the clone %d times, want once: the lock was seen just before", i, n)
		}
	}
	if n := log.count("the template container stays locked"); n != 1 {
		t.Errorf("the lock logged %d times, want once:\n%s", n, log.buf.String())
	}
	r.setHook(nil)
	if _, b2, err := s.makeUnrecorded(ctx, "pve1", r.spec(s, 4)); err != nil || b2 == nil || b2.VMID != b.VMID {
		t.Errorf("after the lock went: %+v %v; want a clone of %d", b2, err, b.VMID)
	}
}

// TestSweepUnrecorded: the start-up sweep removes the daemon's containers
// that no record names, and leaves those of another daemon, those
// recorded, those being made, and the template container their clones
// use.
func TestSweepUnrecorded(t *testing.T) {
	r := newCloneRig(t)
	s, other := r.server(t, "", nil), r.server(t, "", nil)
	ctx := context.Background()
	recorded, b, err := s.makeContainer(ctx, "pve1", r.spec(s, 1))
	if err != nil {
		t.Fatal(err)
	}
	s.state.update(func(st *stateFile) error {
		st.Containers["c1"] = &containerRecord{ID: "c1", Node: "pve1", VMID: recorded, Base: b}
		return nil
	})
	s.bases.done(recorded)
	leaked, _, err := s.makeUnrecorded(ctx, "pve1", r.spec(s, 2))
	if err != nil {
		t.Fatal(err)
	}
	pending, _, err := s.makeContainer(ctx, "pve1", r.spec(s, 3))
	if err != nil {
		t.Fatal(err)
	}
	theirs, _, err := other.makeUnrecorded(ctx, "pve1", r.spec(other, 4))
	if err != nil {
		t.Fatal(err)
	}
	s.sweepBases(ctx)
	for vmid, want := range map[int]bool{recorded: true, leaked: false, pending: true, theirs: true, b.VMID: true} {
		if r.exists(vmid) != want {
			t.Errorf("CT %d exists: %v, want %v", vmid, !want, want)
		}
	}
}

// TestTemplateContainersFound: a scan remembers every template container
// of a key: the extras go once no clone uses them, whether the image is
// there or not; one whose conversion was cut short and that is locked is
// looked at again by a later scan.
func TestTemplateContainersFound(t *testing.T) {
	r := newCloneRig(t)
	dir := t.TempDir()
	s := r.server(t, dir, nil)
	ctx := context.Background()
	key := baseKey{"pve1", "local-lvm", r.volid}
	tmpl := map[string]string{"hostname": baseHostname(r.volid), "description": s.baseDescription(r.volid), "tags": "pve-image;pve-image-template",
		"ostemplate": r.volid, "rootfs": "local-lvm:1", "unprivileged": "1", "ostype": "debian"}
	var made []int
	for range 3 {
		vmid, err := s.makeBase(ctx, key, tmpl)
		if err != nil {
			t.Fatal(err)
		}
		s.bases.done(vmid)
		made = append(made, vmid)
	}
	// A leftover whose conversion a crash cut short, locked.
	leftover, _, err := r.cl.Launch(ctx, "pve1", proxmox.ContainerSpec{VMID: made[2] + 10, Options: tmpl})
	if err != nil {
		t.Fatal(err)
	}
	// Its config says lock: backup (Proxmox refuses to unlock through the
	// API: pct unlock on the node does it).
	r.setHook(func(resp *http.Response) {
		if resp.Request.Method != "GET" || resp.Request.URL.Path != fmt.Sprintf("/api2/json/nodes/pve1/lxc/%d/config", leftover) {
			return
		}
		var body struct {
			Data map[string]any `json:"data"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		body.Data["lock"] = "backup"
		b, _ := json.Marshal(body)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	})

	// Restarted, the image present, a clone of made[1] recorded.
	s2 := r.server(t, dir, nil)
	s2.bases.rescanAfter = time.Nanosecond
	s2.state.update(func(st *stateFile) error {
		st.Images["sha256:x"] = &imageRecord{ID: "sha256:x", Volid: r.volid}
		st.Containers["c1"] = &containerRecord{ID: "c1", Node: "pve1", VMID: 999, Base: &baseRef{Node: "pve1", Storage: "local-lvm", VMID: made[1], Volid: r.volid}}
		return nil
	})
	s2.sweepBases(ctx)
	for vmid, want := range map[int]bool{made[0]: true, made[1]: true, made[2]: false, leftover: true} {
		if r.exists(vmid) != want {
			t.Errorf("after the sweep: CT %d exists: %v, want %v", vmid, !want, want)
		}
	}
	// The leftover's lock goes: the next scan converts it, and as an
	// extra it goes too.
	r.setHook(nil)
	s2.sweepBases(ctx)
	if r.exists(leftover) || !r.exists(made[0]) {
		t.Errorf("after the lock went: leftover CT %d exists %v (want false), CT %d exists %v (want true)", leftover, r.exists(leftover), made[0], r.exists(made[0]))
	}
	// Its clone removed and the image gone, nothing stays.
	s2.state.update(func(st *stateFile) error { clear(st.Images); clear(st.Containers); return nil })
	s2.dropBase(ctx, key)
	if tmpls, _ := r.templates(); len(tmpls) != 0 {
		t.Errorf("template containers %v stay", tmpls)
	}
}

// TestPendingCloneKeepsTemplate: a clone made and not yet recorded keeps
// its template container, even with its image gone.
func TestPendingCloneKeepsTemplate(t *testing.T) {
	r := newCloneRig(t)
	s := r.server(t, "", nil)
	ctx := context.Background()
	vmid, b, err := s.makeContainer(ctx, "pve1", r.spec(s, 1))
	if err != nil || b == nil {
		t.Fatal(b, err)
	}
	s.dropBase(ctx, b.key())
	if !r.exists(b.VMID) {
		t.Fatal("the template container of a pending clone went")
	}
	s.bases.done(vmid)
	s.dropBase(ctx, b.key())
	if r.exists(b.VMID) {
		t.Error("the unused template container stays")
	}
}

// TestTemplateVMIDReused: a template container removed by hand whose VMID
// another daemon's template container takes is not cloned: the daemon
// makes its own again.
func TestTemplateVMIDReused(t *testing.T) {
	r := newCloneRig(t)
	s, other := r.server(t, "", nil), r.server(t, "", nil)
	ctx := context.Background()
	_, b, err := s.makeUnrecorded(ctx, "pve1", r.spec(s, 1))
	if err != nil || b == nil {
		t.Fatal(b, err)
	}
	if err := r.cl.DestroyContainer(ctx, "pve1", b.VMID, true); err != nil {
		t.Fatal(err)
	}
	tmpl := map[string]string{"hostname": "theirs", "description": other.baseDescription(r.volid), "tags": "pve-image;pve-image-template",
		"ostemplate": r.volid, "rootfs": "local-lvm:1", "unprivileged": "1", "ostype": "debian"}
	theirs, _, err := r.cl.Launch(ctx, "pve1", proxmox.ContainerSpec{VMID: b.VMID, Options: tmpl})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cl.MakeTemplate(ctx, "pve1", theirs); err != nil {
		t.Fatal(err)
	}
	_, b2, err := s.makeUnrecorded(ctx, "pve1", r.spec(s, 2))
	if err != nil || b2 == nil {
		t.Fatal(b2, err)
	}
	if b2.VMID == theirs {
		t.Fatalf("cloned CT %d, another daemon's template container on the VMID of the removed one", theirs)
	}
	ct, _ := r.sim.Container("pve1", b2.VMID)
	if m, ok := parseBaseMark(ct.Config["description"]); !ok || m.Owner != s.owner() || ct.Config["template"] != "1" {
		t.Errorf("cloned CT %d: %v", b2.VMID, ct.Config)
	}
}
