package lifecycle

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/template"
)

var ctCfg = proxmox.CTConfig{
	"arch": "amd64", "ostype": "unmanaged", "hostname": "web", "memory": "256", "swap": "0", "cores": "2",
	"net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth,host-managed=1", "onboot": "1", "startup": "order=2",
	"tags": "prod", "description": "x", "digest": "abc", "rootfs": "local-lvm:vm-100-disk-0,size=4G,mountoptions=noatime",
	"mp0": "shared:100/vm-100-disk-1.raw,mp=/data,backup=1,size=8G", "mp1": "/srv/www,mp=/www,ro=1",
	"unused0": "local-lvm:vm-100-disk-2", "entrypoint": "/sbin/pve-image-init", "env": "A=1", "cmode": "console",
	"features": "nesting=1", "unprivileged": "1",
}

// TestCarried: the config a restore is given keeps everything of the
// user's but volumes (moved aside) and what Proxmox keeps itself.
func TestCarried(t *testing.T) {
	got := carried(ctCfg)
	for _, k := range []string{"digest", "rootfs", "mp0", "unused0", "description"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s carried", k)
		}
	}
	for _, k := range []string{"hostname", "memory", "swap", "cores", "net0", "onboot", "startup", "tags", "mp1", "unprivileged", "features"} {
		if got[k] != ctCfg[k] {
			t.Errorf("%s = %q, want %q", k, got[k], ctCfg[k])
		}
	}
	if vols := parkable(ctCfg); !reflect.DeepEqual(vols, []ParkedVolume{
		{Key: "mp0", TempKey: "mp0", Forward: "mp0", Volid: "shared:100/vm-100-disk-1.raw"},
		{Key: "unused0", TempKey: "unused0", Forward: "unused0", Volid: "local-lvm:vm-100-disk-2"}}) {
		t.Errorf("parkable = %+v", vols)
	}
	u := undoParams(ctCfg, proxmox.ParseMountPoint("rootfs", ctCfg["rootfs"]))
	if !reflect.DeepEqual(u, map[string]string{"rootfs": "local-lvm:4,mountoptions=noatime", "mp1": "/srv/www,mp=/www,ro=1", "unprivileged": "1"}) {
		t.Errorf("undoParams = %q", u)
	}
}

func TestSmallPieces(t *testing.T) {
	if got := rootfsGiB(100 << 20); got != 1 {
		t.Errorf("rootfsGiB(100M) = %d", got)
	}
	if got := rootfsGiB(3 << 30); got != 5 {
		t.Errorf("rootfsGiB(3G) = %d", got)
	}
	if got := mergeFeatures("keyctl=1,nesting=0", "nesting=1"); got != "keyctl=1,nesting=1" {
		t.Errorf("mergeFeatures = %q", got)
	}
	for _, tc := range []struct {
		typ, volid string
		ok         bool
	}{
		{"nfs", "shared:100/vm-100-disk-1.raw", true}, {"dir", "local:100/vm-100-disk-1.subvol", false},
		{"lvmthin", "local-lvm:vm-100-disk-1", true}, {"zfspool", "tank:subvol-100-disk-1", true},
	} {
		if err := renamable(tc.typ, tc.volid); (err == nil) != tc.ok {
			t.Errorf("renamable(%s, %s) = %v", tc.typ, tc.volid, err)
		}
	}
	for v, want := range map[string]bool{"9.1.4": false, "9.2.11": true, "10.0": true, "8.4-1": false} {
		if got := keepAttrs(proxmox.Version{Version: v}); got != want {
			t.Errorf("keepAttrs(%s) = %v", v, got)
		}
	}
}

// TestAddedVolumes: a new image's volumes at paths the container mounts
// nothing at are made under free keys, and kept as unused volumes on an
// undo.
func TestAddedVolumes(t *testing.T) {
	m := &template.Meta{Config: template.RunConfig{Volumes: []string{"/data", "/www", "/logs"}}}
	got, err := addedVolumes(m, ctCfg, "local-lvm", template.VolumeOptions{Storage: "local-lvm", SizeGiB: 8})
	want := []ParkedVolume{{Key: "mp2", TempKey: "unused1", Back: "unused1", Volid: "local-lvm:8,mp=/logs,backup=1"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("addedVolumes = %+v, %v", got, err)
	}
}

// TestUndoSteps: before the restore over the container only the volumes
// go back; from it on, the container is restored from its archive too.
func TestUndoSteps(t *testing.T) {
	j := &Journal{Volumes: []ParkedVolume{{Key: "mp0"}}, Added: []ParkedVolume{{Key: "mp2"}},
		Steps: []Step{{Op: "create-temp"}, {Op: "backup", Arg: "source"}, {Op: "stop"}, {Op: "park", Arg: "mp0"},
			{Op: "backup", Arg: "undo"}, {Op: "restore", Arg: "source"}, {Op: "unpark", Arg: "mp0"}, {Op: "start"}, {Op: "health"}}}
	ops := func(s []Step) string {
		var out []string
		for _, x := range s {
			out = append(out, x.String())
		}
		return strings.Join(out, ", ")
	}
	if got := ops(undoSteps(j, 3)); got != "return mp0, start-if-running, destroy-temp, cleanup undo" {
		t.Errorf("undo before the restore: %s", got)
	}
	want := "stop, repark mp0, park-added mp2, restore undo, return mp0, return-added mp2, start-if-running, destroy-temp, cleanup undo"
	for _, failed := range []int{5, 8} {
		if got := ops(undoSteps(j, failed)); got != want {
			t.Errorf("undo after step %d: %s", failed, got)
		}
	}
	for _, op := range []string{"stop-again", "destroy-temp", "cleanup"} {
		if undoes(op) {
			t.Errorf("a failed %s undoes a working update", op)
		}
	}
}

// TestJournalStore: a journal is written whole and read back; the lock
// keeps a second process out and goes with the first.
func TestJournalStore(t *testing.T) {
	s := journalStore{dir: filepath.Join(t.TempDir(), "j")}
	if j, err := s.load(100); j != nil || err != nil {
		t.Fatalf("empty store: %v %v", j, err)
	}
	j := &Journal{Version: journalVersion, ID: "op", Kind: "update", VMID: 100, Started: time.Unix(1, 0).UTC(), HealthTimeout: time.Second,
		Steps: []Step{{Op: "stop", Done: true}, {Op: "park", Arg: "mp0"}}}
	if err := s.save(j); err != nil {
		t.Fatal(err)
	}
	got, err := s.load(100)
	if err != nil || !reflect.DeepEqual(got, j) {
		t.Fatalf("load = %+v, %v", got, err)
	}
	if left, _ := filepath.Glob(filepath.Join(s.dir, ".journal-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	release, err := s.lock(100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.lock(100); err == nil || !strings.Contains(err.Error(), "another pve-image") {
		t.Errorf("second lock: %v", err)
	}
	release()
	if r, err := s.lock(100); err != nil {
		t.Errorf("lock after release: %v", err)
	} else {
		r()
	}
	os.WriteFile(s.path(101), []byte("{"), 0o600)
	if _, err := s.load(101); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged journal: %v", err)
	}
	if err := s.remove(100); err != nil {
		t.Fatal(err)
	}
	if j, _ := s.load(100); j != nil {
		t.Error("journal still there after remove")
	}
}
