package pvesim

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostDir is a fresh directory on the host whose path has no symlinks
// (bind mounts refuse them), readable by a container's root.
func hostDir(t testing.TB) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestBindMountCreate: mpN at create, parsed as $mp_desc, allowed only to
// root@pam, host directory checked by mount_all in the worker.
func TestBindMountCreate(t *testing.T) {
	s := newSim(t, Options{})
	deb := putTemplate(t, s, "", "shared", "d.tar.zst", debianFiles())
	ticket, csrf := login(t, s, "root@pam", "rootpw")
	root := ticketAuth(ticket, csrf)
	s.AddToken(Token{ID: "ci@pve!ct", Secret: "x", Privs: []string{"VM.Allocate", "VM.Config.Disk", "Datastore.AllocateSpace", "Datastore.Audit"}})
	ci := tokenAuth("ci@pve!ct", "x")

	dir := hostDir(t)
	real := filepath.Join(dir, "real")
	os.Mkdir(real, 0o755)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	vmid := 100
	cases := []struct {
		name   string
		a      auth
		params url.Values
		code   int
		reason string
		errs   map[string]string
		exit   string // of the vzcreate task
		logHas string
		conf   map[string]string
	}{
		{name: "root@pam with a ticket", a: root, params: url.Values{"mp0": {real + ",mp=/mnt/data,ro=yes,backup=0"}},
			code: 200, exit: "OK", conf: map[string]string{"mp0": real + ",mp=/mnt/data,backup=0,ro=1"}},
		{name: "printed back in Proxmox's order", a: root, params: url.Values{"mp3": {"mp=/srv,size=1024M," + real}, "mp1": {real + ",mp=/a/b,keepattrs=1,shared=1"}},
			code: 200, exit: "OK", conf: map[string]string{"mp3": real + ",mp=/srv,size=1G", "mp1": real + ",mp=/a/b,keepattrs=1,shared=1"}},
		{name: "root@pam's token", a: rootAuth, params: url.Values{"mp0": {real + ",mp=/mnt/data"}},
			code: 403, reason: "Permission check failed (mount point type bind is only allowed for root@pam)"},
		{name: "other token", a: ci, params: url.Values{"mp0": {real + ",mp=/mnt/data"}},
			code: 403, reason: "Permission check failed (mount point type bind is only allowed for root@pam)"},
		{name: "device for a token", a: rootAuth, params: url.Values{"mp0": {"/dev/sdb1,mp=/mnt/disk"}},
			code: 403, reason: "Permission check failed (mount point type device is only allowed for root@pam)"},
		{name: "device for root@pam", a: root, params: url.Values{"mp0": {"/dev/sdb1,mp=/mnt/disk"}},
			code: 500, reason: "pvesim: device mount points are not simulated"},
		{name: "new volume", a: root, params: url.Values{"mp0": {"local-lvm:8,mp=/data,backup=1"}}, code: 200, exit: "OK",
			conf: map[string]string{"mp0": "local-lvm:vm-107-disk-1,mp=/data,backup=1,size=8G"}}, // the 7th case: CT 107
		{name: "existing volume", a: root, params: url.Values{"mp0": {"local-lvm:vm-100-disk-1,mp=/data"}},
			code: 500, reason: "pvesim: attaching the existing volume 'local-lvm:vm-100-disk-1' at create is not simulated"},
		{name: "no rootfs", a: root, params: url.Values{"rootfs": nil, "mp0": {real + ",mp=/mnt/data"}},
			code: 500, reason: "mount points configured, but 'rootfs' not set - aborting"},
		{name: "volume with /../", a: root, params: url.Values{"mp0": {real + "/../etc,mp=/mnt/data"}}, code: 400,
			errs: map[string]string{"mp0": "invalid format - format error\nmp0.volume: invalid format - " + real + "/../etc contains illegal character sequences\n\n"}},
		{name: "mp ending in /.", a: root, params: url.Values{"mp0": {real + ",mp=/mnt/."}}, code: 400,
			errs: map[string]string{"mp0": "invalid format - format error\nmp0.mp: invalid format - /mnt/. contains illegal character sequences\n\n"}},
		{name: "mp starting with ../", a: root, params: url.Values{"mp0": {real + ",mp=../x"}}, code: 400,
			errs: map[string]string{"mp0": "invalid format - format error\nmp0.mp: invalid format - ../x contains illegal character sequences\n\n"}},
		{name: "mp missing", a: root, params: url.Values{"mp0": {real}}, code: 400,
			errs: map[string]string{"mp0": "invalid format - format error\nmp0.mp: property is missing and it is not optional\n"}},
		{name: "two volumes", a: root, params: url.Values{"mp0": {real + ",/srv,mp=/x"}}, code: 400,
			errs: map[string]string{"mp0": "invalid format - duplicate key in comma-separated list property: volume\n"}},
		{name: "bad idmap", a: root, params: url.Values{"mp0": {real + ",mp=/x,idmap=u:0:0:0"}}, code: 400,
			errs: map[string]string{"mp0": "invalid format - format error\nmp0.idmap: value does not match the regex pattern\n"}},
		{name: "host directory missing", a: root, params: url.Values{"mp0": {missing + ",mp=/mnt/data"}}, code: 200,
			exit: "unable to create CT %d - directory '" + missing + "' does not exist", logHas: "mounting container failed"},
		{name: "symlink in the host path", a: root, params: url.Values{"mp0": {link + ",mp=/mnt/data"}}, code: 200,
			exit: "unable to create CT %d - symlink encountered at: /" + link},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vmid++
			p := url.Values{"vmid": {fmt.Sprint(vmid)}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"}}
			for k, v := range tc.params {
				if v == nil {
					delete(p, k)
				} else {
					p[k] = v
				}
			}
			r, st := createCT(t, s, tc.a, "pve1", p)
			r.expect(t, tc.code, tc.reason, tc.errs)
			if r.code != 200 {
				return
			}
			exit := tc.exit
			if strings.Contains(exit, "%d") {
				exit = fmt.Sprintf(exit, vmid)
			}
			log := taskLogText(t, s, r.str())
			if st["exitstatus"] != exit {
				t.Fatalf("exitstatus %q, want %q\n%s", st["exitstatus"], exit, log)
			}
			if !strings.Contains(log, tc.logHas) {
				t.Errorf("log lacks %q:\n%s", tc.logHas, log)
			}
			if exit != "OK" {
				if l := leftovers(s, vmid); len(l) > 0 {
					t.Fatalf("failed create left behind: %v", l)
				}
				return
			}
			c := mustOK(t, api(t, s, rootAuth, "GET", fmt.Sprintf("/nodes/pve1/lxc/%d/config", vmid), nil)).obj()
			for k, v := range tc.conf {
				if c[k] != v {
					t.Errorf("config %s = %v, want %q", k, c[k], v)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(real)); err != nil {
		t.Fatalf("host directory: %v", err)
	}
}

// TestBindMountStart: the prestart hook's checks at every start, the
// changes PUT refuses, and destroy leaving the host directory alone.
func TestBindMountStart(t *testing.T) {
	s := newSim(t, Options{})
	deb := putTemplate(t, s, "", "shared", "d.tar.zst", debianFiles())
	ticket, csrf := login(t, s, "root@pam", "rootpw")
	dir := hostDir(t)
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o755)
	os.WriteFile(filepath.Join(data, "keep"), []byte("x"), 0o644)
	_, st := createCT(t, s, ticketAuth(ticket, csrf), "pve1", url.Values{"vmid": {"100"}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"},
		"mp0": {data + ",mp=/mnt/data"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("create: %v", st)
	}
	start := func() (map[string]any, string) {
		t.Helper()
		r := mustOK(t, api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/100/status/start", nil))
		st := waitTask(t, s, r.str())
		return st, taskLogText(t, s, r.str())
	}
	status := func() string {
		return mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/lxc/100/status/current", nil)).obj()["status"].(string)
	}

	moved := data + ".moved"
	if err := os.Rename(data, moved); err != nil {
		t.Fatal(err)
	}
	st, log := start()
	if st["exitstatus"] != "startup for container '100' failed" || !strings.Contains(log, "directory '"+data+"' does not exist") {
		t.Fatalf("start without the host directory: %v\n%s", st, log)
	}
	if status() != "stopped" {
		t.Fatal("running after a failed start")
	}
	// A symlink where the host directory was is refused as well.
	if err := os.Symlink(moved, data); err != nil {
		t.Fatal(err)
	}
	st, log = start()
	if st["exitstatus"] != "startup for container '100' failed" || !strings.Contains(log, "symlink encountered at: /"+data) {
		t.Fatalf("start with a symlink: %v\n%s", st, log)
	}
	os.Remove(data)
	os.Rename(moved, data)
	if st, log := start(); st["exitstatus"] != "OK" {
		t.Fatalf("start: %v\n%s", st, log)
	}

	r := api(t, s, ticketAuth(ticket, csrf), "PUT", "/nodes/pve1/lxc/100/config", url.Values{"mp1": {data + ",mp=/srv"}})
	if r.code != 500 || r.reason != "pvesim: changing 'mp1' is not simulated" {
		t.Fatalf("PUT mp1: %v", r)
	}
	r = api(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/100/config", url.Values{"mp1": {data + ",mp=/srv"}})
	if r.code != 403 || r.reason != "Permission check failed (mount point type bind is only allowed for root@pam)" {
		t.Fatalf("PUT mp1 with a token: %v", r)
	}

	r = mustOK(t, api(t, s, rootAuth, "DELETE", "/nodes/pve1/lxc/100", url.Values{"force": {"1"}}))
	if st := waitTask(t, s, r.str()); !strings.HasPrefix(st["exitstatus"].(string), "WARNINGS") {
		t.Fatalf("destroy: %v", st)
	}
	if b, err := os.ReadFile(filepath.Join(data, "keep")); err != nil || string(b) != "x" {
		t.Fatalf("destroy touched the host directory: %q %v", b, err)
	}
}

func TestMountBindsWalk(t *testing.T) {
	dir := hostDir(t)
	rootfs := filepath.Join(dir, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "file"), nil, 0o644)
	os.Symlink("/tmp", filepath.Join(rootfs, "link"))
	host := filepath.Join(dir, "host")
	os.Mkdir(host, 0o755)
	mp := func(key, v string) *mountPoint {
		t.Helper()
		m := parseVolume(key, v)
		if m == nil {
			t.Fatalf("%s does not parse", v)
		}
		return m
	}
	cases := []struct {
		name     string
		mps      []*mountPoint
		atCreate bool
		want     string
		made     []string // directories made in the rootfs or the host directory
	}{
		{name: "target made at start", mps: []*mountPoint{mp("mp0", host+",mp=/mnt//data")}, made: []string{"rootfs/mnt/data"}},
		{name: "symlink at start", mps: []*mountPoint{mp("mp0", host+",mp=/link/x")}, want: "symlink encountered at: //./link"},
		{name: "file at start", mps: []*mountPoint{mp("mp0", host+",mp=/file/x")}, want: "symlink encountered at: //./file"},
		{name: "symlink at create", mps: []*mountPoint{mp("mp0", host+",mp=/link")}, atCreate: true, want: "symlink encountered at: " + rootfs + "/link"},
		{name: "nested mount point made in the host directory", mps: []*mountPoint{mp("mp0", host+",mp=/srv"), mp("mp1", host+",mp=/srv/inner")},
			made: []string{"rootfs/srv", "host/inner"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := mountBinds(rootfs, tc.mps, tc.atCreate, -1, -1)
			if got := fmt.Sprint(err); tc.want != "" && got != tc.want || tc.want == "" && err != nil {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			for _, d := range tc.made {
				if fi, err := os.Lstat(filepath.Join(dir, d)); err != nil || !fi.IsDir() {
					t.Errorf("%s not made: %v", d, err)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(rootfs, "srv", "inner")); err == nil {
		t.Error("the nested target was made below the mount point instead of in the host directory")
	}
}
