package pvesim

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// makeTemplateCT creates CT vmid from the test template on storage and
// converts it into a template, waiting for the config to say so (the API
// answers null, not a UPID).
func makeTemplateCT(t *testing.T, s *Server, vmid, rootfs string, extra url.Values) {
	t.Helper()
	mkCT(t, s, "pve1", vmid, mergeValues(url.Values{"rootfs": {rootfs}, "net0": {"name=eth0,bridge=vmbr0,ip=dhcp"}}, extra))
	r := mustOK(t, api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/"+vmid+"/template", nil))
	if r.data() != nil || !strings.Contains(r.body, `"data":null`) {
		t.Fatalf("template answered %v, want null", r)
	}
	waitFor(t, "template: 1", 10*time.Second, func() bool { return config(t, s, "pve1", vmid)["template"] == float64(1) })
}

func mergeValues(a, b url.Values) url.Values {
	for k, v := range b {
		a[k] = v
	}
	return a
}

// TestLinkedClone: a template's volume becomes a base volume; a linked
// clone gets a thin snapshot named for it, a new MAC, the template's other
// options, the given hostname and description, and neither lock stays.
// Destroying the template leaves its clones (LVM-thin allows it).
func TestLinkedClone(t *testing.T) {
	s := newSim(t, Options{})
	makeTemplateCT(t, s, "100", "local-lvm:1", url.Values{"memory": {"256"}, "tags": {"base"}})
	tc := config(t, s, "pve1", "100")
	if tc["rootfs"] != "local-lvm:base-100-disk-0,size=1G" {
		t.Errorf("template rootfs %v", tc["rootfs"])
	}
	st := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/lxc", nil)).list()
	if len(st) != 1 || st[0]["template"] != float64(1) {
		t.Errorf("list: %v", st)
	}

	stat, log := runTask(t, s, "POST", "/nodes/pve1/lxc/100/clone", url.Values{"newid": {"101"}, "full": {"0"}, "hostname": {"pod-a"}, "description": {"a pod"}})
	if stat["exitstatus"] != "OK" || !strings.Contains(stat["upid"].(string), ":vzclone:100:") {
		t.Fatalf("clone: %v\n%s", stat, log)
	}
	for _, want := range []string{"creating a clone of container 100 with ID 101", "create linked clone of mount point rootfs (local-lvm:base-100-disk-0)"} {
		if !strings.Contains(log, want) {
			t.Errorf("clone log lacks %q:\n%s", want, log)
		}
	}
	cc := config(t, s, "pve1", "101")
	for k, want := range map[string]any{"rootfs": "local-lvm:vm-101-disk-0,size=1G", "hostname": "pod-a", "description": "a pod",
		"memory": float64(256), "tags": "base", "ostype": tc["ostype"]} {
		if cc[k] != want {
			t.Errorf("clone %s = %v, want %v", k, cc[k], want)
		}
	}
	if cc["template"] != nil || cc["lock"] != nil || config(t, s, "pve1", "100")["lock"] != nil {
		t.Errorf("clone template=%v lock=%v, template lock=%v", cc["template"], cc["lock"], config(t, s, "pve1", "100")["lock"])
	}
	mac := func(conf map[string]any) string {
		for _, kv := range strings.Split(conf["net0"].(string), ",") {
			if v, ok := strings.CutPrefix(kv, "hwaddr="); ok {
				return v
			}
		}
		return ""
	}
	if m := mac(cc); m == "" || m == mac(tc) || !strings.HasPrefix(m, "BC:24:11:") {
		t.Errorf("clone MAC %q, template's %q", m, mac(tc))
	}

	// A template does not start, and is not made a template twice.
	r := mustOK(t, api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/100/status/start", nil))
	if st := waitTask(t, s, r.str()); st["exitstatus"] != "you can't start a CT if it's a template" {
		t.Errorf("start of a template: %v", st)
	}
	api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/100/template", nil).expect(t, 500, "you can't convert a template to a template", nil)

	// The clone starts; LVM-thin lets the template go while it exists.
	if st, log := runTask(t, s, "POST", "/nodes/pve1/lxc/101/status/start", nil); st["exitstatus"] != "OK" {
		t.Fatalf("start of the clone: %v\n%s", st, log)
	}
	if st, log := runTask(t, s, "DELETE", "/nodes/pve1/lxc/100", nil); st["exitstatus"] != "OK" || !strings.Contains(log, `Logical volume "base-100-disk-0" successfully removed.`) {
		t.Fatalf("destroy of the template: %v\n%s", st, log)
	}
	if c, ok := s.Container("pve1", 101); !ok || c.Status != "running" {
		t.Errorf("the clone after its template went: %+v", c)
	}
}

// TestLinkedCloneRefusals: what Proxmox refuses around templates and
// linked clones, with its messages; a refused clone leaves neither the new
// VMID nor the source's lock behind.
func TestLinkedCloneRefusals(t *testing.T) {
	s := newSim(t, Options{})
	root := rootUser(t, s)
	makeTemplateCT(t, s, "100", "local-lvm:1", nil)
	makeTemplateCT(t, s, "102", "shared:1", nil)
	if c := config(t, s, "pve1", "102"); c["rootfs"] != "shared:102/base-102-disk-0.raw,size=1G" {
		t.Errorf("template on a directory storage: %v", c["rootfs"])
	}
	if _, err := os.Stat(filepath.Join(s.StoragePath("pve1", "shared"), "images", "102", "base-102-disk-0.raw")); err != nil {
		t.Errorf("base volume file: %v", err)
	}
	mkCT(t, s, "pve1", "103", url.Values{"rootfs": {"local-lvm:1"}})
	bindDir := t.TempDir()
	mkCT(t, s, "pve1", "104", url.Values{"rootfs": {"local-lvm:1"}, "mp0": {bindDir + ",mp=/data"}})
	s.mu.Lock()
	s.cts[100].conf["lock"] = "disk" // another client's clone holds it
	s.mu.Unlock()

	for _, tc := range []struct {
		name, vmid string
		params     url.Values
		auth       auth
		code       int
		msg        string
	}{
		{"concurrent clone", "100", url.Values{"newid": {"110"}}, rootAuth, 500, "CT is locked (disk)"},
		{"directory storage", "102", url.Values{"newid": {"110"}, "full": {"0"}}, rootAuth, 500, "Linked clone feature for 'shared:102/base-102-disk-0.raw' is not available"},
		{"not a template", "103", url.Values{"newid": {"110"}, "full": {"0"}}, rootAuth, 500, "Linked clone feature for 'local-lvm:vm-103-disk-0' is not available"},
		{"bind mount", "104", url.Values{"newid": {"110"}, "full": {"0"}}, rootAuth, 500, "unable to clone mountpoint 'mp0' (type bind)"},
		{"storage", "102", url.Values{"newid": {"110"}, "storage": {"local-lvm"}}, rootAuth, 500, "parameter 'storage' not allowed for linked clones"},
		{"taken VMID", "102", url.Values{"newid": {"103"}}, rootAuth, 500, "CT 103 already exists on node 'pve1'"},
		{"missing source", "199", url.Values{"newid": {"110"}}, rootAuth, 500, "Configuration file 'nodes/pve1/lxc/199.conf' does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := api(t, s, tc.auth, "POST", "/nodes/pve1/lxc/"+tc.vmid+"/clone", tc.params)
			if r.code != tc.code || !strings.Contains(r.body, tc.msg) {
				t.Errorf("got %v, want %d %q", r, tc.code, tc.msg)
			}
			if _, ok := s.Container("pve1", 110); ok {
				t.Error("the refused clone's VMID stays taken")
			}
			if tc.vmid != "100" && tc.vmid != "199" && config(t, s, "pve1", tc.vmid)["lock"] != nil {
				t.Errorf("the source stays locked: %v", config(t, s, "pve1", tc.vmid)["lock"])
			}
		})
	}
	if config(t, s, "pve1", "100")["lock"] != "disk" {
		t.Error("a refused clone took another client's lock")
	}

	// A template is refused a running container and a bind mount.
	if st, log := runTask(t, s, "POST", "/nodes/pve1/lxc/103/status/start", nil); st["exitstatus"] != "OK" {
		t.Fatalf("start: %v\n%s", st, log)
	}
	api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/103/template", nil).expect(t, 500, "you can't convert a CT to template if the CT is running", nil)
	mustOK(t, api(t, s, root, "POST", "/nodes/pve1/lxc/104/template", nil))
	waitFor(t, "the vztemplate task", 10*time.Second, func() bool {
		for _, tk := range s.tasksOf("vztemplate", "104") {
			if !tk.running {
				return tk.exit == "Template feature is not available for '"+bindDir+"'"
			}
		}
		return false
	})

	// Without VM.Clone there is no clone.
	s.AddToken(Token{ID: "ci@pve!t", Secret: "s", Privs: []string{"VM.Allocate", "VM.Audit", "Datastore.AllocateSpace"}})
	api(t, s, tokenAuth("ci@pve!t", "s"), "POST", "/nodes/pve1/lxc/102/clone", url.Values{"newid": {"111"}}).expect(t, 403, "Permission check failed (/vms/102, VM.Clone)", nil)
}

// tasksOf lists the tasks of a type and id.
func (s *Server) tasksOf(typ, id string) []task {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []task
	for _, t := range s.tasks {
		if t.typ == typ && t.id == id {
			out = append(out, task{running: t.running, exit: t.exit})
		}
	}
	return out
}

// TestPutBindMounts: PUT config sets bind mount points for root@pam, as
// Proxmox does; anyone else is refused.
func TestPutBindMounts(t *testing.T) {
	s := newSim(t, Options{})
	mkCT(t, s, "pve1", "100", url.Values{"rootfs": {"local-lvm:1"}})
	dir := t.TempDir()
	api(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/100/config", url.Values{"mp0": {dir + ",mp=/data"}}).
		expect(t, 403, "Permission check failed (mount point type bind is only allowed for root@pam)", nil)
	mustOK(t, api(t, s, rootUser(t, s), "PUT", "/nodes/pve1/lxc/100/config", url.Values{"mp0": {dir + ",mp=/data,ro=1"}, "memory": {"128"}}))
	c := config(t, s, "pve1", "100")
	if c["mp0"] != dir+",mp=/data,ro=1" || c["memory"] != float64(128) {
		t.Errorf("config after PUT: mp0 %v memory %v", c["mp0"], c["memory"])
	}
}

// TestRealLXCLinkedClone: with real LXC, clones of a template share its
// unpacked tree through an overlay: nothing is copied, each clone's
// writes (made inside it as its root, uid 100000 on the host) are its
// own, the clones run, and the tree goes with the template's last clone.
func TestRealLXCLinkedClone(t *testing.T) {
	requireLXC(t)
	s := newSim(t, Options{RealLXC: true})
	vol := putTemplate(t, s, "pve1", "local", "probe_1_amd64.tar.zst", map[string]tfile{
		"sbin/init":           {mode: 0o755, data: buildTestapp(t)},
		"bin/probe":           {mode: 0o755, data: buildProbe(t)},
		"etc/shared.txt":      {data: []byte("from the template\n")},
		"etc/machine-id":      {data: []byte("0123456789abcdef0123456789abcdef\n")},
		"lib/systemd/systemd": {mode: 0o755, data: fakeELF()},
	})
	_, st := createCT(t, s, rootAuth, "pve1", url.Values{"vmid": {"100"}, "ostemplate": {vol}, "rootfs": {"local-lvm:1"},
		"ostype": {"unmanaged"}, "arch": {"amd64"}, "entrypoint": {"/sbin/init report wait-signal"}, "cmode": {"console"},
		"net0": {"name=eth0,bridge=vmbr0"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("create: %v", st)
	}
	mustOK(t, api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/100/template", nil))
	waitFor(t, "template: 1", 10*time.Second, func() bool { return config(t, s, "pve1", "100")["template"] == float64(1) })
	s.mu.Lock()
	base := s.cow.bases["pve1/local-lvm:base-100-disk-0"]
	s.mu.Unlock()
	if base == nil {
		t.Fatal("no base tree")
	}
	for _, id := range []string{"101", "102"} {
		if st, log := runTask(t, s, "POST", "/nodes/pve1/lxc/100/clone", url.Values{"newid": {id}, "hostname": {"c" + id}}); st["exitstatus"] != "OK" {
			t.Fatalf("clone %s: %v\n%s", id, st, log)
		}
	}
	lxcPath := s.LXCPath("pve1")
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, id := range []string{"101", "102"} {
		if !strings.Contains(string(mounts), filepath.Join(lxcPath, id, "rootfs")+" ") {
			t.Errorf("CT %s's rootfs is not a mount", id)
		}
		if st, log := runTask(t, s, "POST", "/nodes/pve1/lxc/"+id+"/status/start", nil); st["exitstatus"] != "OK" {
			t.Fatalf("start %s: %v\n%s", id, st, log)
		}
	}
	waitFor(t, "the clones' consoles", 30*time.Second, func() bool {
		a, _ := s.Container("pve1", 101)
		b, _ := s.Container("pve1", 102)
		return strings.Contains(a.Console, "waiting for a signal") && strings.Contains(b.Console, "hostname=c102")
	})
	probe := func(id string, args ...string) (string, error) {
		out, err := exec.Command("lxc-attach", append([]string{"-n", id, "-P", lxcPath, "--clear-env", "--", "/bin/probe"}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := probe("101", "write", "/etc/shared.txt", "changed in 101\n"); err != nil {
		t.Fatalf("write in 101: %q %v", out, err)
	}
	if out, err := probe("101", "cat", "/etc/shared.txt"); err != nil || out != "changed in 101\n" {
		t.Errorf("101 reads %q %v", out, err)
	}
	if out, err := probe("102", "cat", "/etc/shared.txt"); err != nil || out != "from the template\n" {
		t.Errorf("102 reads %q %v: 101's write leaked", out, err)
	}
	if b, _ := os.ReadFile(filepath.Join(base.dir, "etc", "shared.txt")); string(b) != "from the template\n" {
		t.Errorf("the base tree holds %q", b)
	}
	if uid := ownerOf(t, filepath.Join(lxcPath, "101", "cow", "upper", "etc", "shared.txt")); uid != 100000 {
		t.Errorf("101's copy is owned by %d on the host, want the container's root 100000", uid)
	}
	// unmanaged: post_clone_hook leaves the machine-id alone.
	if b, _ := os.ReadFile(filepath.Join(lxcPath, "102", "rootfs", "etc", "machine-id")); string(b) != "0123456789abcdef0123456789abcdef\n" {
		t.Errorf("machine-id of an unmanaged clone: %q", b)
	}

	for _, id := range []string{"100", "101"} {
		if st, log := runTask(t, s, "DELETE", "/nodes/pve1/lxc/"+id, url.Values{"force": {"1"}}); !strings.HasPrefix(st["exitstatus"].(string), "OK") && !strings.HasPrefix(st["exitstatus"].(string), "WARNINGS") {
			t.Fatalf("destroy %s: %v\n%s", id, st, log)
		}
	}
	if _, err := os.Stat(base.dir); err != nil {
		t.Errorf("the base tree went while clone 102 uses it: %v", err)
	}
	if out, err := probe("102", "cat", "/etc/shared.txt"); err != nil || out != "from the template\n" {
		t.Errorf("102 after its template went: %q %v", out, err)
	}
	if st, _ := runTask(t, s, "DELETE", "/nodes/pve1/lxc/102", url.Values{"force": {"1"}}); st["exitstatus"] != "WARNINGS: 1" {
		t.Fatalf("destroy 102: %v", st)
	}
	if _, err := os.Stat(base.dir); !os.IsNotExist(err) {
		t.Errorf("the base tree stays after the last clone: %v", err)
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), lxcPath) {
		t.Errorf("mounts left under %s", lxcPath)
	}
	if l := leftovers(s, 102); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
}

func ownerOf(t *testing.T, path string) uint32 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

// TestRealLXCPostCloneHook: a clone of a distribution Proxmox manages,
// with systemd, gets an empty machine-id (post_clone_hook), its template
// keeps its own.
func TestRealLXCPostCloneHook(t *testing.T) {
	requireLXC(t)
	s := newSim(t, Options{RealLXC: true})
	files := debianFiles()
	files["lib/systemd/systemd"] = tfile{mode: 0o755, data: fakeELF()}
	files["etc/machine-id"] = tfile{data: []byte("0123456789abcdef0123456789abcdef\n")}
	vol := putTemplate(t, s, "pve1", "local", "deb_1_amd64.tar.zst", files)
	_, st := createCT(t, s, rootAuth, "pve1", url.Values{"vmid": {"100"}, "ostemplate": {vol}, "rootfs": {"local-lvm:1"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("create: %v", st)
	}
	mustOK(t, api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/100/template", nil))
	waitFor(t, "template: 1", 10*time.Second, func() bool { return config(t, s, "pve1", "100")["template"] == float64(1) })
	if st, log := runTask(t, s, "POST", "/nodes/pve1/lxc/100/clone", url.Values{"newid": {"101"}}); st["exitstatus"] != "OK" {
		t.Fatalf("clone: %v\n%s", st, log)
	}
	if b, _ := os.ReadFile(filepath.Join(s.LXCPath("pve1"), "101", "rootfs", "etc", "machine-id")); string(b) != "\n" {
		t.Errorf("the clone's machine-id: %q", b)
	}
	s.mu.Lock()
	base := s.cow.bases["pve1/local-lvm:base-100-disk-0"]
	s.mu.Unlock()
	if b, _ := os.ReadFile(filepath.Join(base.dir, "etc", "machine-id")); string(b) != "0123456789abcdef0123456789abcdef\n" {
		t.Errorf("the template's machine-id: %q", b)
	}
}
