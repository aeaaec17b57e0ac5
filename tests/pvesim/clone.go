package pvesim

import (
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// Templates and linked clones (shared/reference/proxmox-lifecycle.md §4;
// pve-container 6.1.10 API2/LXC.pm template L1823 and clone_vm
// L1889-2302, LXC.pm template_create L1589, Setup/Base.pm clear_machine_id
// L569 and post_clone_hook L709; pve-storage 9.1.7 Storage.pm vdisk_clone
// L1078, vdisk_create_base L1101, vdisk_free L1186, LvmThinPlugin.pm
// clone_image L294, create_base L320, volume_has_feature L408, Plugin.pm
// volume_has_feature and create_base).
//
// With RealLXC a template's root file system (the tree its create
// unpacked) moves out of its LXC directory into a base tree, and each
// linked clone's rootfs is an overlayfs over it: the lower layer is the
// base tree, the upper one the clone's own writes. That is what a
// copy-on-write volume (an LVM-thin snapshot, a ZFS clone) gives: nothing
// is copied at the clone, and a clone's writes are its own. The
// unprivileged id map works through the overlay unchanged: the base tree
// holds the container's ids (100000 and up) as unpacked, and the upper
// layer gets the same.

// cowState is the copy-on-write part of the simulator, guarded by
// Server.mu.
type cowState struct {
	bases  map[string]*baseTree  // by node + "/" + base volid
	clones map[*container]*clone // linked clones with an overlay rootfs
	// storageLocks are vdisk_clone's storage locks (Plugin.pm
	// cluster_lock_storage): by node + "/" + storage for a local storage
	// (a flock under /var/lock/pve-manager), by storage for a shared one
	// (cfs_lock_storage, cluster-wide).
	storageLocks map[string]*sync.Mutex
}

// storageLock is the lock vdisk_clone holds on st while it clones a
// volume on node.
func (s *Server) storageLock(node string, st *storageCfg) *sync.Mutex {
	k := st.id
	if !st.shared {
		k = node + "/" + k
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cow.storageLocks == nil {
		s.cow.storageLocks = map[string]*sync.Mutex{}
	}
	l := s.cow.storageLocks[k]
	if l == nil {
		l = &sync.Mutex{}
		s.cow.storageLocks[k] = l
	}
	return l
}

// baseTree is the root file system of a template's base volume.
type baseTree struct {
	key string
	dir string
	// users are the linked clones whose overlays it lies under; template
	// says the template that owns it still exists. LVM-thin destroys a
	// base volume that clones still use (vdisk_free: "LVM-thin allows
	// deletion of still referenced base volumes!"), and its clones keep
	// their data: the tree goes when both are gone.
	users    int
	template bool
}

// clone is a linked clone's overlay.
type clone struct {
	base  *baseTree
	mount string // the clone's rootfs, where the overlay is mounted
	cow   string // upper and work directories
}

// lxcTemplate is POST /nodes/{node}/lxc/{vmid}/template: checks under the
// config lock, then a vztemplate worker whose UPID the API does not
// return (it answers null).
func (s *Server) lxcTemplate(c *call) (any, error) {
	vmid := c.p.get("vmid")
	ct, aerr := s.loadConfig(c.node, vmid)
	if aerr != nil {
		return nil, aerr
	}
	check := func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case ct.conf["lock"] != "":
			return fmt.Errorf("CT is locked (%s)", ct.conf["lock"])
		case ct.conf["template"] == "1":
			return errors.New("you can't convert a template to a template")
		case ct.isRunning():
			return errors.New("you can't convert a CT to template if the CT is running")
		}
		return nil
	}
	ct.op.Lock()
	err := check()
	ct.op.Unlock()
	if err != nil {
		return nil, die("%s", err)
	}
	s.startWorker(c.node, "vztemplate", vmid, c.who, func(w *worker) error {
		ct.op.Lock()
		defer ct.op.Unlock()
		if err := check(); err != nil {
			return err
		}
		return s.templateCreate(w, ct)
	})
	return nil, nil
}

// templateCreate is template_create: every volume needs the template
// feature, then each becomes a base volume (create_base) and the config
// says template: 1.
func (s *Server) templateCreate(w *worker, ct *container) error {
	s.mu.Lock()
	conf, d, l := maps.Clone(ct.conf), ct.disk, ct.lxc
	s.mu.Unlock()
	for _, k := range append([]string{"rootfs"}, mpKeysOf(conf)...) {
		mp := parseVolume(k, conf[k])
		switch {
		case mp == nil:
		case mp.typ != "volume":
			// volume_has_feature on a path is false.
			return fmt.Errorf("Template feature is not available for '%s'", mp.m["volume"])
		case k != "rootfs":
			return errors.New("pvesim: templates with volume mount points are not simulated")
		}
	}
	if d == nil {
		return errors.New("pvesim: the container has no root disk")
	}
	if err := w.injected(); err != nil {
		return err
	}
	st := s.storage(d.storage)
	_, volname, _ := parseVolumeID(d.volid)
	var newVolid, newPath string
	switch {
	case st.fileBased:
		// Plugin.pm create_base: rename vm-N-disk-M.raw to base-..., then
		// make it read-only.
		newPath = filepath.Join(filepath.Dir(d.path), "base-"+strings.TrimPrefix(filepath.Base(d.path), "vm-"))
		if _, err := os.Stat(newPath); err == nil {
			return fmt.Errorf("file '%s' already exists", newPath)
		}
		if err := os.Rename(d.path, newPath); err != nil {
			return fmt.Errorf("rename '%s' to '%s' failed - %v", d.path, newPath, err)
		}
		os.Chmod(newPath, 0o444)
		newVolid = fmt.Sprintf("%s:%d/%s", st.id, ct.vmid, filepath.Base(newPath))
	case st.typ == "lvmthin":
		// LvmThinPlugin.pm create_base: lvrename, then read-only.
		newName := "base-" + strings.TrimPrefix(volname, "vm-")
		w.printf("  Renamed \"%s\" to \"%s\" in volume group \"pve\"\n", volname, newName)
		newVolid = st.id + ":" + newName
	default:
		return fmt.Errorf("Template feature is not available for '%s'", d.volid)
	}
	key := ct.node + "/" + newVolid
	base := &baseTree{key: key, template: true}
	if l != nil {
		// The unpacked tree becomes the base volume's content.
		base.dir = filepath.Join(s.dir, ct.node, "base", strings.NewReplacer(":", "_", "/", "_").Replace(newVolid))
		if err := os.MkdirAll(filepath.Dir(base.dir), 0o755); err != nil {
			return err
		}
		if err := os.Rename(l.Rootfs, base.dir); err != nil {
			return err
		}
		os.Mkdir(l.Rootfs, 0o755)
	}
	mp := parseVolume("rootfs", conf["rootfs"])
	mp.m["volume"] = newVolid
	conf["rootfs"], conf["template"] = mp.print(), "1"
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cow.bases == nil {
		s.cow.bases = map[string]*baseTree{}
	}
	s.cow.bases[key] = base
	d.volid, d.path = newVolid, newPath
	ct.conf = conf
	return nil
}

// mpKeysOf are the config's mpN keys, by number.
func mpKeysOf(conf map[string]string) []string {
	var keys []string
	for i := 0; i < indexedMax["mp"]; i++ {
		if _, ok := conf["mp"+strconv.Itoa(i)]; ok {
			keys = append(keys, "mp"+strconv.Itoa(i))
		}
	}
	return keys
}

// lxcCloneSchema is clone_vm's parameters.
var lxcCloneSchema = schema{
	"node": nodeParam(), "vmid": vmidParam(), "newid": vmidParam(),
	"hostname": str().fmtd(fmtDNSName), "description": str(), "pool": str(),
	"snapname": str().length(0, 40), "storage": str().fmtd(fmtStorageID), "full": boolean(),
	"target": str().fmtd(fmtNode), "bwlimit": number().between("0", ""),
}

// clonePerm is clone_vm's permission check: VM.Clone on the source and
// VM.Allocate on the new VMID (or on the pool, which is not simulated).
func clonePerm(c *call) *apiError {
	if err := c.who.check("/vms/"+c.p.get("vmid"), "VM.Clone"); err != nil {
		return err
	}
	return c.who.check("/vms/"+c.p.get("newid"), "VM.Allocate")
}

// lxcClone is POST /nodes/{node}/lxc/{vmid}/clone, clone_vm: the
// synchronous part locks the source (lock: disk, which a concurrent clone
// fails on: "CT is locked (disk)"), takes the new VMID (lock: create) and
// writes its config; the vzclone worker, whose task ID is the source's
// VMID, clones the volumes, runs post_clone_hook and unlocks both. Only
// linked clones are simulated.
func (s *Server) lxcClone(c *call) (any, error) {
	p := c.p
	vmid, newid := p.get("vmid"), p.get("newid")
	if pool := p.get("pool"); pool != "" {
		return nil, die("pool '%s' does not exist", pool)
	}
	target := p.get("target")
	if target == c.node || target == "localhost" {
		target = ""
	}
	if target != "" && !s.isNode(target) {
		return nil, die("no such cluster node '%s'", target)
	}
	storage := p.get("storage")
	if storage != "" {
		st, err := s.storageConfig(storage)
		if err != nil {
			return nil, err
		}
		if err := s.storageOnNode(st.id, c.node); err != nil {
			return nil, err
		}
		if target != "" {
			if err := s.storageOnNode(st.id, target); err != nil {
				return nil, err
			}
			if !st.shared {
				return nil, die("can't clone to non-shared storage '%s'", storage)
			}
		}
	}
	src, aerr := s.loadConfig(c.node, vmid)
	if aerr != nil {
		return nil, aerr
	}
	// set_lock($vmid, 'disk'): load, check_lock, write, under the config
	// lock.
	src.op.Lock()
	s.mu.Lock()
	if l := src.conf["lock"]; l != "" {
		s.mu.Unlock()
		src.op.Unlock()
		return nil, die("CT is locked (%s)", l)
	}
	srcConf := maps.Clone(src.conf)
	srcConf["lock"] = "disk"
	src.conf = maps.Clone(srcConf)
	running := src.isRunning()
	s.mu.Unlock()
	src.op.Unlock()
	// remove_lock($vmid, 'disk').
	unlockSrc := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if src.conf["lock"] == "disk" {
			nc := maps.Clone(src.conf)
			delete(nc, "lock")
			src.conf = nc
		}
	}
	// create_and_lock_config($newid, 0).
	n, _ := strconv.Atoi(newid)
	ct := &container{vmid: n, node: c.node, conf: map[string]string{"lock": "create"}}
	s.mu.Lock()
	if other := s.cts[n]; other != nil {
		s.mu.Unlock()
		unlockSrc()
		return nil, die("CT %d already exists on node '%s'", n, other.node)
	}
	s.cts[n] = ct
	s.mu.Unlock()
	fail := func(err *apiError) (any, error) {
		unlockSrc()
		s.mu.Lock()
		if s.cts[n] == ct {
			delete(s.cts, n)
		}
		s.mu.Unlock()
		return nil, err
	}

	full := srcConf["template"] != "1"
	if p.has("full") {
		full = p.get("full") == "1"
	}
	if storage != "" && !full {
		return fail(die("parameter 'storage' not allowed for linked clones"))
	}
	if snap := p.get("snapname"); snap != "" {
		return fail(die("snapshot '%s' does not exist", snap))
	}
	newconf := map[string]string{}
	var volumes []string
	shared := true
	keys := make([]string, 0, len(srcConf))
	for k := range srcConf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := srcConf[k]
		m := indexedKey.FindStringSubmatch(k)
		switch {
		case m != nil && m[1] == "unused":
		case k == "rootfs" || m != nil && m[1] == "mp":
			mp := parseVolume(k, v)
			if mp == nil {
				continue
			}
			if mp.typ != "volume" {
				return fail(die("unable to clone mountpoint '%s' (type %s)", k, mp.typ))
			}
			volid := mp.m["volume"]
			sid, _, _ := parseVolumeID(volid)
			if storage != "" {
				sid = storage
			}
			st, err := s.storageConfig(sid)
			if err != nil {
				return fail(err)
			}
			shared = shared && st.shared
			if err := c.who.check("/storage/"+sid, "Datastore.AllocateSpace"); err != nil {
				return fail(err)
			}
			switch {
			case full && running:
				return fail(die("Full clone of a running container is only possible from a snapshot"))
			case full:
				return fail(die("pvesim: full clones are not simulated"))
			case !s.linkedCloneFeature(volid):
				return fail(die("Linked clone feature for '%s' is not available", volid))
			}
			volumes = append(volumes, k)
		case m != nil && m[1] == "net":
			// "always change MAC! address"
			newconf[k] = randomMAC(v)
		default:
			newconf[k] = v
		}
	}
	if target != "" && !shared {
		return fail(die("can't clone CT to node '%s' (CT uses local storage)", target))
	}
	if target != "" {
		return fail(die("pvesim: clones to another node are not simulated"))
	}
	newconf["lock"] = "create"
	for _, k := range []string{"snapshots", "parent", "snaptime", "snapstate", "pending", "template"} {
		delete(newconf, k)
	}
	if h := p.get("hostname"); h != "" {
		newconf["hostname"] = h
	}
	if d := p.get("description"); d != "" {
		newconf["description"] = d
	}
	s.mu.Lock()
	ct.conf = newconf
	s.mu.Unlock()

	return s.startWorker(c.node, "vzclone", vmid, c.who, func(w *worker) error {
		w.printf("creating a clone of container %s with ID %s\n", vmid, newid)
		err := s.cloneVolumes(w, src, ct, srcConf, volumes)
		unlockSrc()
		if err != nil {
			s.destroyCT(ct)
			return fmt.Errorf("clone failed: %v", err)
		}
		s.mu.Lock()
		nc := maps.Clone(ct.conf)
		delete(nc, "lock")
		ct.conf = nc
		s.mu.Unlock()
		return nil
	}), nil
}

// linkedCloneFeature is volume_has_feature('clone', ...) with the target
// formats raw and subvol: LVM-thin clones base volumes (and snapshots,
// which are not simulated); dir and NFS storages would clone into qcow2,
// which containers cannot use, so Plugin.pm says no.
func (s *Server) linkedCloneFeature(volid string) bool {
	sid, volname, _ := parseVolumeID(volid)
	st := s.storage(sid)
	return st != nil && st.typ == "lvmthin" && strings.HasPrefix(volname, "base-")
}

// randomMAC gives a NIC a new address: PVE::Tools::random_ether_addr with
// the default prefix BC:24:11 (datacenter.cfg mac_prefix).
func randomMAC(nic string) string {
	pairs, _ := parsePropString(nic, "", netKeys)
	b := make([]byte, 3)
	rand.Read(b)
	mac := fmt.Sprintf("BC:24:11:%02X:%02X:%02X", b[0], b[1], b[2])
	for i, kv := range pairs {
		if kv[0] == "hwaddr" {
			pairs[i][1] = mac
			return joinProps(pairs)
		}
	}
	return joinProps(append(pairs, [2]string{"hwaddr", mac}))
}

// cloneVolumes is the vzclone worker's volume part: vdisk_clone for each
// volume (LvmThinPlugin clone_image: a thin snapshot named with the new
// VMID's next free disk), then mount_all and post_clone_hook.
func (s *Server) cloneVolumes(w *worker, src, ct *container, srcConf map[string]string, keys []string) error {
	for _, k := range keys {
		if k != "rootfs" {
			return errors.New("pvesim: linked clones of volume mount points are not simulated")
		}
		if err := s.cloneVolume(w, src, ct, srcConf[k], k); err != nil {
			return err
		}
	}
	if err := w.injected(); err != nil {
		return err
	}
	if err := w.interrupted(); err != nil {
		return err
	}
	conf, l, _ := ct.state(s)
	if l == nil {
		return nil
	}
	if conf["ostype"] != "unmanaged" {
		postCloneHook(l.Rootfs)
	}
	return l.WriteConfig(s.lxcOptions(ct.node, conf))
}

// cloneVolume is vdisk_clone of the volume of mount point k (whose
// config is value): the new volume's name and its copy-on-write clone
// under the storage's lock, so that clones on one storage take their
// turns for that part.
func (s *Server) cloneVolume(w *worker, src, ct *container, value, k string) error {
	s.mu.Lock()
	sd, sl := src.disk, src.lxc
	s.mu.Unlock()
	mp := parseVolume(k, value)
	w.printf("create linked clone of mount point %s (%s)\n", k, mp.m["volume"])
	st := s.storage(sd.storage)
	lock := s.storageLock(ct.node, st)
	lock.Lock()
	defer lock.Unlock()
	s.mu.Lock()
	name := s.nextDiskName(ct.node, st, ct.vmid)
	d := &disk{storage: st.id, volid: st.id + ":" + name, size: sd.size}
	ct.disk = d
	base := s.cow.bases[src.node+"/"+sd.volid]
	s.mu.Unlock()
	w.printf("  Logical volume \"%s\" created.\n", name)
	mp.m["volume"] = d.volid
	s.mu.Lock()
	nc := maps.Clone(ct.conf)
	nc[k] = mp.print()
	ct.conf = nc
	s.mu.Unlock()
	if sl == nil {
		return nil
	}
	if base == nil || base.dir == "" {
		return fmt.Errorf("pvesim: no base tree for %s", sd.volid)
	}
	return s.overlayRootfs(ct, base)
}

// overlayRootfs gives a linked clone its LXC directory with an overlayfs
// over the base tree as its rootfs.
func (s *Server) overlayRootfs(ct *container, base *baseTree) error {
	dir := filepath.Join(s.LXCPath(ct.node), strconv.Itoa(ct.vmid))
	cl := &clone{base: base, mount: filepath.Join(dir, "rootfs"), cow: filepath.Join(dir, "cow")}
	upper, work := filepath.Join(cl.cow, "upper"), filepath.Join(cl.cow, "work")
	for _, d := range []string{cl.mount, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The overlay's root takes the upper layer's owner and mode: the
	// container's root, as the base tree's root is.
	fi, err := os.Stat(base.dir)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	if err := os.Chown(upper, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	os.Chmod(upper, fi.Mode().Perm())
	opts := "lowerdir=" + base.dir + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", cl.mount, "overlay", 0, opts); err != nil {
		return fmt.Errorf("pvesim: overlay rootfs for CT %d: %v", ct.vmid, err)
	}
	l := &pvelxc.Container{Name: strconv.Itoa(ct.vmid), Dir: s.LXCPath(ct.node), Rootfs: cl.mount,
		ConsoleLog: filepath.Join(dir, "console.log"), Log: filepath.Join(dir, "lxc.log")}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cow.clones == nil {
		s.cow.clones = map[*container]*clone{}
	}
	s.cow.clones[ct] = cl
	base.users++
	ct.lxc = l
	return nil
}

// postCloneHook is Setup/Base.pm clear_machine_id($conf, 1) of the
// distributions Proxmox manages (unmanaged containers skip it): with
// systemd in the container, a D-Bus machine-id that is not a link goes,
// and /etc/machine-id is emptied unless it says "uninitialized".
func postCloneHook(rootfs string) {
	systemd := false
	for _, p := range []string{"lib/systemd/systemd", "usr/lib/systemd/systemd"} {
		if fi, err := os.Stat(filepath.Join(rootfs, p)); err == nil && fi.Mode()&0o111 != 0 {
			systemd = true
		}
	}
	if !systemd {
		return
	}
	dbus := filepath.Join(rootfs, "var/lib/dbus/machine-id")
	if fi, err := os.Lstat(dbus); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		os.Remove(dbus)
	}
	mid := filepath.Join(rootfs, "etc/machine-id")
	if fi, err := os.Lstat(mid); err == nil && fi.Mode().IsRegular() {
		b, _ := os.ReadFile(mid)
		if first, _, _ := strings.Cut(string(b), "\n"); first != "uninitialized" {
			os.WriteFile(mid, []byte("\n"), fi.Mode().Perm())
		}
	}
}

// releaseCOW undoes what a destroy leaves of the copy-on-write part: a
// linked clone's overlay is unmounted (its container stopped first) and
// its base tree loses a user; a template's base tree loses its template.
// A base tree nobody has goes.
func (s *Server) releaseCOW(ct *container, l *pvelxc.Container) {
	s.mu.Lock()
	cl := s.cow.clones[ct]
	delete(s.cow.clones, ct)
	var base *baseTree
	if ct.disk != nil {
		base = s.cow.bases[ct.node+"/"+ct.disk.volid]
	}
	s.mu.Unlock()
	if cl != nil {
		if l != nil {
			l.Kill()
		}
		unmount(cl.mount)
		s.mu.Lock()
		cl.base.users--
		s.mu.Unlock()
		base = cl.base
	} else if base != nil {
		s.mu.Lock()
		base.template = false
		s.mu.Unlock()
	}
	if base == nil {
		return
	}
	s.mu.Lock()
	gone := base.users == 0 && !base.template && s.cow.bases[base.key] == base
	if gone {
		delete(s.cow.bases, base.key)
	}
	s.mu.Unlock()
	if gone && base.dir != "" {
		os.RemoveAll(base.dir)
	}
}

// unmountClones stops every linked clone and unmounts its overlay, for
// Close: what Close then removes must not be reached through an overlay.
func (s *Server) unmountClones() {
	s.mu.Lock()
	type pair struct {
		l     *pvelxc.Container
		mount string
	}
	var all []pair
	for ct, cl := range s.cow.clones {
		all = append(all, pair{ct.lxc, cl.mount})
	}
	s.cow.clones = nil
	s.mu.Unlock()
	for _, p := range all {
		if p.l != nil {
			p.l.Kill()
		}
		unmount(p.mount)
	}
}

func unmount(dir string) {
	if err := unix.Unmount(dir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		// Busy (a process of the container lingers): detach it; the
		// kernel drops it once unused.
		unix.Unmount(dir, unix.MNT_DETACH)
	}
}

// lxcConfigPutBinds is PUT .../config with bind mount points for a
// stopped container, which update_pct_config sets like any option for
// root@pam (Config.pm vmconfig_apply_pending): a linked clone gets its
// pod's mounts this way. Hot-plugging them into a running container is
// not simulated (lxcConfigPut refuses it); the other options are
// lxcConfigPut's.
func (s *Server) lxcConfigPutBinds(c *call) (any, error) {
	binds := map[string]string{}
	for k, v := range c.p.v {
		if m := indexedKey.FindStringSubmatch(k); m != nil && m[1] == "mp" {
			if mp := parseVolume(k, v); mp != nil && mp.typ == "bind" {
				binds[k] = mp.print()
			}
		}
	}
	vmid := c.p.get("vmid")
	ct, aerr := s.loadConfig(c.node, vmid)
	if len(binds) == 0 || aerr != nil {
		return s.lxcConfigPut(c)
	}
	s.mu.Lock()
	conf, running := ct.conf, ct.isRunning()
	s.mu.Unlock()
	if running {
		return s.lxcConfigPut(c)
	}
	keys := make([]string, 0, len(binds))
	for k := range binds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if err := checkModifyPerm(c.who, vmid, conf, keys, binds, false, conf["unprivileged"] == "1"); err != nil {
		return nil, err
	}
	rest := false
	for k := range c.p.v {
		if binds[k] != "" {
			delete(c.p.v, k)
		} else if k != "node" && k != "vmid" && k != "digest" {
			rest = true
		}
	}
	if rest {
		if _, err := s.lxcConfigPut(c); err != nil {
			return nil, err
		}
	}
	ct.op.Lock()
	defer ct.op.Unlock()
	s.mu.Lock()
	if l := ct.conf["lock"]; l != "" {
		s.mu.Unlock()
		return nil, die("CT is locked (%s)", l)
	}
	nc := maps.Clone(ct.conf)
	maps.Copy(nc, binds)
	ct.conf, conf = nc, nc
	l := ct.lxc
	s.mu.Unlock()
	if l != nil {
		if err := s.rewriteLXCConfig(c.node, l, conf); err != nil {
			return nil, die("unable to write lxc config - %v", err)
		}
	}
	return nil, nil
}
