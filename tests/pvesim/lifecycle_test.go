package pvesim

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rootUser authenticates as root@pam itself (a ticket), who alone may
// make bind mounts.
func rootUser(t *testing.T, s *Server) auth {
	t.Helper()
	tk := mustOK(t, api(t, s, nil, "POST", "/access/ticket", url.Values{"username": {"root@pam"}, "password": {"rootpw"}})).obj()
	return ticketAuth(tk["ticket"].(string), tk["CSRFPreventionToken"].(string))
}

// mkCT creates a container as root@pam on node and fails t unless it
// works.
func mkCT(t *testing.T, s *Server, node, vmid string, extra url.Values) {
	t.Helper()
	p := url.Values{"vmid": {vmid}, "ostemplate": {s.testTemplate(t)}, "rootfs": {"local-lvm:1"}, "hostname": {"ct" + vmid}}
	for k, v := range extra {
		p[k] = v
	}
	r, st := createCT(t, s, rootUser(t, s), node, p)
	if r.code != 200 {
		t.Fatalf("create %s: %v", vmid, r)
	}
	if st["exitstatus"] != "OK" {
		t.Fatalf("create %s: %v\n%s", vmid, st, taskLogText(t, s, r.str()))
	}
}

func (s *Server) testTemplate(t *testing.T) string {
	p := filepath.Join(s.StoragePath("", "shared"), "template", "cache", "d.tar.zst")
	if _, err := os.Stat(p); err != nil {
		putTemplate(t, s, "", "shared", "d.tar.zst", debianFiles())
	}
	return "shared:vztmpl/d.tar.zst"
}

func config(t *testing.T, s *Server, node, vmid string) map[string]any {
	t.Helper()
	return mustOK(t, api(t, s, rootAuth, "GET", "/nodes/"+node+"/lxc/"+vmid+"/config", nil)).obj()
}

// runTask runs an API call that returns a UPID and waits for the task.
func runTask(t *testing.T, s *Server, method, path string, params url.Values) (map[string]any, string) {
	t.Helper()
	r := mustOK(t, api(t, s, rootAuth, method, path, params))
	st := waitTask(t, s, r.str())
	return st, taskLogText(t, s, r.str())
}

// TestVolumeMountPoints: STORAGE:SIZE mount points become volumes owned
// by the container (vm-<vmid>-disk-N, the next free N), listed on their
// storage with their size; destroy frees the container's own, and leaves
// another's with Proxmox's warning.
func TestVolumeMountPoints(t *testing.T) {
	s := newSim(t, Options{})
	mkCT(t, s, "pve1", "100", url.Values{"mp0": {"local-lvm:2,mp=/data,backup=1"}, "mp1": {"shared:1,mp=/srv"}})
	c := config(t, s, "pve1", "100")
	if c["mp0"] != "local-lvm:vm-100-disk-1,mp=/data,backup=1,size=2G" || c["mp1"] != "shared:100/vm-100-disk-0.raw,mp=/srv,size=1G" {
		t.Errorf("mount points %q %q", c["mp0"], c["mp1"])
	}
	list := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/storage/local-lvm/content", url.Values{"vmid": {"100"}})).list()
	sizes := map[string]any{}
	for _, it := range list {
		sizes[it["volid"].(string)] = it["size"]
	}
	if sizes["local-lvm:vm-100-disk-1"] != float64(2<<30) {
		t.Errorf("content of local-lvm: %v", list)
	}
	if len(s.Volumes("pve2", "local-lvm")) != 0 {
		t.Error("pve2's local-lvm has pve1's volume")
	}
	// A volume of CT 100 moved to CT 101 is 101's: its destroy frees it.
	mkCT(t, s, "pve1", "101", nil)
	if st, log := runTask(t, s, "POST", "/nodes/pve1/lxc/100/move_volume", url.Values{"volume": {"mp0"}, "target-vmid": {"101"}, "target-volume": {"mp3"}}); st["exitstatus"] != "OK" {
		t.Fatalf("move: %v\n%s", st, log)
	}
	moved := config(t, s, "pve1", "101")["mp3"]
	if moved != "local-lvm:vm-101-disk-1,mp=/data,backup=1,size=2G" || config(t, s, "pve1", "100")["mp0"] != nil {
		t.Errorf("after the move: 101 mp3 %q, 100 mp0 %v", moved, config(t, s, "pve1", "100")["mp0"])
	}
	// 100 gets an unused volume it does not own, by hand (as a restore of
	// an old config could leave it).
	if r := api(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/100/config", url.Values{"unused0": {"local-lvm:vm-101-disk-1"}}); r.code != 200 {
		t.Fatal(r)
	}
	st, log := runTask(t, s, "DELETE", "/nodes/pve1/lxc/100", url.Values{"purge": {"1"}})
	if st["exitstatus"] != "OK" || !strings.Contains(log, "ignore deletion of 'local-lvm:vm-101-disk-1', CT 100 isn't the owner!") {
		t.Errorf("destroy: %v\n%s", st, log)
	}
	if vols := s.Volumes("pve1", "local-lvm"); len(vols) != 1 || vols[0].Owner != 101 {
		t.Errorf("after destroying 100: %+v", vols)
	}
	if vols := s.Volumes("pve1", "shared"); len(vols) != 0 {
		t.Errorf("100's shared volume left: %+v", vols)
	}
	// Taking a volume mount point out of the config keeps it as unused.
	if r := api(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/101/config", url.Values{"delete": {"mp3"}}); r.code != 200 {
		t.Fatal(r)
	}
	if got := config(t, s, "pve1", "101")["unused0"]; got != "local-lvm:vm-101-disk-1" {
		t.Errorf("unused0 = %v", got)
	}
}

// TestMoveVolumeRefusals: Proxmox's reasons for not reassigning a volume.
func TestMoveVolumeRefusals(t *testing.T) {
	s := newSim(t, Options{})
	mkCT(t, s, "pve1", "100", url.Values{"mp0": {"local-lvm:1,mp=/data"}, "mp1": {"/srv,mp=/srv"}, "mp2": {"shared:1,mp=/x"}})
	mkCT(t, s, "pve1", "101", url.Values{"mp0": {"local-lvm:1,mp=/other"}})
	mkCT(t, s, "pve2", "102", nil)
	move := func(vmid string, p url.Values) reply {
		return api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/"+vmid+"/move_volume", p)
	}
	for _, tc := range []struct {
		name   string
		p      url.Values
		code   int
		reason string
	}{
		{"rootfs", url.Values{"volume": {"rootfs"}, "target-vmid": {"101"}}, 500, "Cannot move to/from 'rootfs'"},
		{"key taken", url.Values{"volume": {"mp0"}, "target-vmid": {"101"}}, 500, "Target volume key 'mp0' is already in use for container '101'"},
		{"other node", url.Values{"volume": {"mp0"}, "target-vmid": {"102"}, "target-volume": {"mp5"}}, 500, "Both containers need to be on the same node (pve1 != pve2)"},
		{"bind mount", url.Values{"volume": {"mp1"}, "target-vmid": {"101"}, "target-volume": {"mp5"}}, 500, "Cannot move a bindmount or device mount to another container"},
		{"missing", url.Values{"volume": {"mp7"}, "target-vmid": {"101"}}, 500, "volume 'mp7' for container '100' does not exist"},
		{"no such CT", url.Values{"volume": {"mp0"}, "target-vmid": {"999"}}, 500, "could not find CT 999"},
		{"both", url.Values{"volume": {"mp0"}, "target-vmid": {"101"}, "storage": {"shared"}}, 400, "Parameter verification failed."},
		{"neither", url.Values{"volume": {"mp0"}}, 400, "Parameter verification failed."},
	} {
		if r := move("100", tc.p); r.code != tc.code || r.reason != tc.reason {
			t.Errorf("%s: %v", tc.name, r)
		}
	}
	if r := api(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/100/config", url.Values{"delete": {"mp2"}}); r.code != 200 {
		t.Fatal(r)
	}
	if r := move("100", url.Values{"volume": {"unused0"}, "target-vmid": {"101"}, "target-volume": {"mp4"}}); r.reason != "Moving an unused volume to a used one is not possible" {
		t.Errorf("unused to mp: %v", r)
	}
	runTask(t, s, "POST", "/nodes/pve1/lxc/100/status/start", nil)
	if r := move("100", url.Values{"volume": {"mp0"}, "target-vmid": {"101"}, "target-volume": {"mp4"}}); r.reason != "Cannot move in-use volume while the source CT is running - detach or shutdown first" {
		t.Errorf("running source: %v", r)
	}
	// An unused volume moves even so, and keeps no options.
	st, _ := runTask(t, s, "POST", "/nodes/pve1/lxc/100/move_volume", url.Values{"volume": {"unused0"}, "target-vmid": {"101"}})
	if st["exitstatus"] != "OK" || st["id"] != "100-unused0>101-unused0" {
		t.Errorf("task %v", st)
	}
	if got := config(t, s, "pve1", "101")["unused0"]; got != "shared:101/vm-101-disk-0.raw" {
		t.Errorf("101 unused0 = %v", got)
	}
}

// TestBackupAndRestore: vzdump writes the archive with pct.conf (the
// description encoded), notes, listed as backup content; extractconfig
// reads the config back; a forced restore over the container destroys
// every volume it owns, takes the parameters given and fills the rest from
// the archive; restore's refusals.
func TestBackupAndRestore(t *testing.T) {
	s := newSim(t, Options{})
	mkCT(t, s, "pve1", "100", url.Values{"mp0": {"local-lvm:1,mp=/data,backup=1"}, "description": {"web: prod\n100%"},
		"memory": {"256"}, "net0": {"name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01"}})
	if r := api(t, s, rootAuth, "POST", "/nodes/pve2/vzdump", url.Values{"vmid": {"100"}, "storage": {"local"}}); r.code != 200 || r.str() != "OK" {
		t.Errorf("vzdump on the wrong node: %v", r)
	}
	st, log := runTask(t, s, "POST", "/nodes/pve1/vzdump", url.Values{"vmid": {"100"}, "storage": {"local"}, "mode": {"stop"}, "compress": {"zstd"},
		"notes-template": {"kept {{guestname}} {{vmid}}"}})
	if st["exitstatus"] != "OK" || st["type"] != "vzdump" || st["id"] != "100" || !strings.Contains(log, "creating vzdump archive '") {
		t.Fatalf("vzdump: %v\n%s", st, log)
	}
	list := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/storage/local/content", url.Values{"content": {"backup"}, "vmid": {"100"}})).list()
	if len(list) != 1 || list[0]["notes"] != "kept ct100 100" || list[0]["subtype"] != "lxc" || list[0]["format"] != "tar.zst" {
		t.Fatalf("backups: %v", list)
	}
	volid := list[0]["volid"].(string)
	raw := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/vzdump/extractconfig", url.Values{"volume": {volid}})).str()
	if !strings.HasPrefix(raw, "#web%3A prod\n#100%25\n") || !strings.Contains(raw, "memory: 256\n") || strings.Contains(raw, "lock:") {
		t.Errorf("pct.conf:\n%s", raw)
	}

	restore := func(p url.Values) reply {
		q := url.Values{"vmid": {"100"}, "ostemplate": {volid}, "restore": {"1"}}
		for k, v := range p {
			q[k] = v
		}
		return api(t, s, rootAuth, "POST", "/nodes/pve1/lxc", q)
	}
	if r := restore(nil); r.code != 500 || r.reason != "CT 100 already exists on node 'pve1'" {
		t.Errorf("restore over an existing CT without force: %v", r)
	}
	if r := restore(url.Values{"vmid": {"200"}, "ostemplate": {s.testTemplate(t)}}); r.reason != "unable to use volume shared:vztmpl/d.tar.zst - content type needs to be 'backup'" {
		t.Errorf("a template as archive: %v", r)
	}
	runTask(t, s, "POST", "/nodes/pve1/lxc/100/status/start", nil)
	if r := restore(url.Values{"force": {"1"}}); r.reason != "can't overwrite running container" {
		t.Errorf("running: %v", r)
	}
	runTask(t, s, "POST", "/nodes/pve1/lxc/100/status/stop", nil)
	api(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/100/config", url.Values{"protection": {"1"}})
	if r := restore(url.Values{"force": {"1"}}); r.reason != "unable to restore CT 100 - protection mode enabled" {
		t.Errorf("protected: %v", r)
	}
	api(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/100/config", url.Values{"delete": {"protection"}})

	r := restore(url.Values{"force": {"1"}, "rootfs": {"local-lvm:2"}, "memory": {"1024"}})
	st = waitTask(t, s, r.str())
	log = taskLogText(t, s, r.str())
	if st["exitstatus"] != "OK" || st["type"] != "vzrestore" {
		t.Fatalf("restore: %v\n%s", st, log)
	}
	c := config(t, s, "pve1", "100")
	if c["memory"] != float64(1024) || c["description"] != "web: prod\n100%" || c["rootfs"] != "local-lvm:vm-100-disk-2,size=2G" ||
		c["mp0"] != nil || !strings.Contains(c["net0"].(string), "hwaddr=BC:24:11:00:00:01") || c["lock"] != nil {
		t.Errorf("restored config %v\n%s", c, log)
	}
	if vols := s.Volumes("pve1", "local-lvm"); len(vols) != 0 {
		t.Errorf("the forced restore left the old volume: %+v", vols)
	}

	// A restore that fails after making its disks takes the config with it.
	s.FailNextTask("vzrestore", "simulated failure")
	r = restore(url.Values{"force": {"1"}, "rootfs": {"local-lvm:2"}})
	if st := waitTask(t, s, r.str()); st["exitstatus"] != "unable to restore CT 100 - simulated failure" {
		t.Errorf("failed restore: %v", st)
	}
	if _, ok := s.Container("pve1", 100); ok {
		t.Error("CT 100 still exists after its forced restore failed")
	}
	// And from nothing, in storage-only mode: rootfs from the archive.
	r = restore(url.Values{"storage": {"local-lvm"}})
	if st := waitTask(t, s, r.str()); st["exitstatus"] != "OK" {
		t.Fatalf("restore as a new CT: %v\n%s", st, taskLogText(t, s, r.str()))
	}
	if c := config(t, s, "pve1", "100"); c["rootfs"] != "local-lvm:vm-100-disk-0,size=1G" || c["mp0"] != "local-lvm:vm-100-disk-1,mp=/data,backup=1,size=1G" {
		t.Errorf("storage-only restore: rootfs %v mp0 %v", c["rootfs"], c["mp0"])
	}

	st, _ = runTask(t, s, "DELETE", "/nodes/pve1/storage/local/content/"+volid, nil)
	if st["exitstatus"] != "OK" {
		t.Errorf("delete: %v", st)
	}
	if left, _ := filepath.Glob(filepath.Join(s.StoragePath("pve1", "local"), "dump", "*")); len(left) != 0 {
		t.Errorf("left in dump/: %v", left)
	}
}

// TestClusterResources: nodes with their load (and status), the storages
// each node has, the containers with their node; the node's DNS.
func TestClusterResources(t *testing.T) {
	s := newSim(t, Options{})
	s.SetNodeLoad("pve2", NodeLoad{Status: "offline"})
	s.RestrictStorage("local-lvm", "pve1")
	mkCT(t, s, "pve1", "100", nil)
	all := mustOK(t, api(t, s, rootAuth, "GET", "/cluster/resources", nil)).list()
	got := map[string]map[string]any{}
	for _, r := range all {
		got[r["id"].(string)] = r
	}
	if n := got["node/pve1"]; n["status"] != "online" || n["maxmem"] != float64(16<<30) || n["maxcpu"] != float64(4) {
		t.Errorf("node/pve1 %v", n)
	}
	if n := got["node/pve2"]; n["status"] != "offline" || n["maxmem"] != nil {
		t.Errorf("node/pve2 %v", n)
	}
	if got["storage/pve1/local-lvm"] == nil || got["storage/pve2/local-lvm"] != nil || got["storage/pve2/shared"]["shared"] != float64(1) {
		t.Errorf("storages: %v", all)
	}
	if ct := got["lxc/100"]; ct["node"] != "pve1" || ct["vmid"] != float64(100) || ct["name"] != "ct100" {
		t.Errorf("lxc/100 %v", ct)
	}
	if vms := mustOK(t, api(t, s, rootAuth, "GET", "/cluster/resources", url.Values{"type": {"vm"}})).list(); len(vms) != 1 {
		t.Errorf("type=vm: %v", vms)
	}
	if r := api(t, s, rootAuth, "GET", "/nodes/pve2/storage/local-lvm/status", nil); r.code != 400 {
		t.Errorf("status of a storage not on the node: %v", r)
	}
	r, _ := createCT(t, s, rootAuth, "pve2", url.Values{"vmid": {"101"}, "ostemplate": {s.testTemplate(t)}, "rootfs": {"local-lvm:1"}})
	if r.reason != "storage 'local-lvm' is not available on node 'pve2'" {
		t.Errorf("create on a node without the storage: %v", r)
	}
	d := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/dns", nil)).obj()
	if d["search"] != "pvesim.test" || d["dns1"] != "192.0.2.53" {
		t.Errorf("dns %v", d)
	}
}

// TestMigrate: offline and restart migration move the config and the
// local volumes; Proxmox's refusals.
func TestMigrate(t *testing.T) {
	s := newSim(t, Options{})
	s.AddToken(Token{ID: "ci@pve!x", Secret: "s", Privs: []string{"*"}})
	mkCT(t, s, "pve1", "100", url.Values{"mp0": {"local-lvm:1,mp=/data"}, "mp1": {"shared:1,mp=/srv"}})
	migrate := func(vmid string, p url.Values) reply {
		return api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/"+vmid+"/migrate", p)
	}
	if r := migrate("100", url.Values{"target": {"pve1"}}); r.code != 400 || r.errs()["target"] != "target is local node." {
		t.Errorf("to itself: %v", r)
	}
	if r := migrate("100", url.Values{"target": {"pve9"}}); r.reason != "no such cluster node 'pve9'" {
		t.Errorf("unknown node: %v", r)
	}
	runTask(t, s, "POST", "/nodes/pve1/lxc/100/status/start", nil)
	if r := migrate("100", url.Values{"target": {"pve2"}}); r.reason != "can't migrate running container without --online or --restart" {
		t.Errorf("running: %v", r)
	}
	st, log := runTask(t, s, "POST", "/nodes/pve1/lxc/100/migrate", url.Values{"target": {"pve2"}, "online": {"1"}})
	if st["exitstatus"] != "lxc live migration is currently not implemented" {
		t.Errorf("online: %v\n%s", st, log)
	}
	st, log = runTask(t, s, "POST", "/nodes/pve1/lxc/100/migrate", url.Values{"target": {"pve2"}, "restart": {"1"}})
	if st["exitstatus"] != "OK" || st["type"] != "vzmigrate" || !strings.Contains(log, "starting migration of CT 100 to node 'pve2' (10.10.10.2)") {
		t.Fatalf("restart migration: %v\n%s", st, log)
	}
	ct, ok := s.Container("pve2", 100)
	if !ok || ct.Status != "running" {
		t.Fatalf("on pve2: %v %+v", ok, ct)
	}
	if len(s.Volumes("pve1", "local-lvm")) != 0 || len(s.Volumes("pve2", "local-lvm")) != 1 {
		t.Errorf("local volume did not move: pve1 %v pve2 %v", s.Volumes("pve1", "local-lvm"), s.Volumes("pve2", "local-lvm"))
	}

	host := hostDir(t)
	r, _ := createCT(t, s, rootAuth, "pve1", url.Values{"vmid": {"101"}, "ostemplate": {s.testTemplate(t)}, "rootfs": {"shared:1"}, "mp0": {host + ",mp=/h"}})
	if r.code == 200 {
		t.Fatal("a token made a bind mount")
	}
	r = api(t, s, rootUser(t, s), "POST", "/nodes/pve1/lxc", url.Values{"vmid": {"101"}, "ostemplate": {s.testTemplate(t)}, "rootfs": {"shared:1"}, "mp0": {host + ",mp=/h"}})
	waitTask(t, s, r.str())
	st, _ = runTask(t, s, "POST", "/nodes/pve1/lxc/101/migrate", url.Values{"target": {"pve2"}})
	if st["exitstatus"] != "cannot migrate local bind mount point 'mp0'" {
		t.Errorf("bind mount: %v", st)
	}
	if _, ok := s.Container("pve1", 101); !ok {
		t.Error("a refused migration moved the container")
	}
}
