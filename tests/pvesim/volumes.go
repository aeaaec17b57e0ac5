package pvesim

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// Volume mount points: mpN of the form STORAGE:SIZE (GiB) at create and
// restore, as pve-container makes them (LXC.pm create_disks, format_disk;
// Config.pm $mp_desc; L§8), and what destroy, move_volume and restore do to
// them (L§1, L§2).
//
// A volume is a directory standing in for the file system Proxmox makes on
// it (mkfs.ext4 with root_owner=<the container's root>, LXC.pm L2525):
// on file-based storages at Proxmox's path for the raw image,
// <storage>/images/<owner>/vm-<owner>-disk-<n>.raw; on local-lvm under the
// node's lvm/ directory. Its name says its owner (pve-storage
// parse_volname), and a new one takes the owner's lowest free disk number
// on the storage (get_next_vm_diskname, PS Plugin.pm L970). Real
// containers get it as a bind mount of that directory (lxc.mount.entry),
// where Proxmox's prestart hook mounts the file system; the effect inside
// the container is the same.
type simVolume struct {
	volid   string
	storage string
	node    string // "" on a shared storage
	name    string // vm-<owner>-disk-<n>
	owner   int
	size    int64
	dir     string
}

// volKey is a volume's key in lifeState.volumes: its volid, which names
// it on a shared storage; with the node for local storages, which every
// node has its own of.
func (s *Server) volKey(node, volid string) string {
	sid, _, _ := strings.Cut(volid, ":")
	if st := s.storage(sid); st != nil && st.shared {
		return volid
	}
	return node + "/" + volid
}

// volumeLocation is where a volume of st named name lives on node.
func (s *Server) volumeLocation(node string, st *storageCfg, owner int, name string) (volid, dir string) {
	if st.fileBased {
		return fmt.Sprintf("%s:%d/%s.raw", st.id, owner, name), filepath.Join(s.StoragePath(node, st.id), "images", strconv.Itoa(owner), name+".raw")
	}
	return st.id + ":" + name, filepath.Join(s.dir, node, "lvm", name)
}

// reDiskName finds vm-<owner>-disk-<n> in a volid.
var reDiskName = regexp.MustCompile(`(vm-(\d+)-disk-\d+)`)

// nextDiskName is get_next_vm_diskname: the owner's lowest disk number not
// used on the storage (on node, for local storages). Called with s.mu held.
func (s *Server) nextDiskName(node string, st *storageCfg, owner int) string {
	used := map[string]bool{}
	for _, v := range s.life.volumes {
		if v.storage == st.id && (st.shared || v.node == node) {
			used[v.name] = true
		}
	}
	for _, ct := range s.cts {
		if ct.disk != nil && ct.disk.storage == st.id && (st.shared || ct.node == node) {
			if m := reDiskName.FindStringSubmatch(ct.disk.volid); m != nil {
				used[m[1]] = true
			}
		}
	}
	prefix := st.id + "/"
	if !st.shared {
		prefix += node
	}
	for n := 0; ; n++ {
		if name := fmt.Sprintf("vm-%d-disk-%d", owner, n); !used[name] && !s.life.reserved[prefix+"/"+name] {
			return name
		}
	}
}

// reserveDiskName takes the owner's next free disk name on the storage
// until release is called. Called with s.mu held.
func (s *Server) reserveDiskName(node string, st *storageCfg, owner int) (name string, release func()) {
	name = s.nextDiskName(node, st, owner)
	key := st.id + "/"
	if !st.shared {
		key += node
	}
	key += "/" + name
	if s.life.reserved == nil {
		s.life.reserved = map[string]bool{}
	}
	s.life.reserved[key] = true
	return name, func() {
		s.mu.Lock()
		delete(s.life.reserved, key)
		s.mu.Unlock()
	}
}

// allocVolume makes a new, empty volume for owner on storage, its root
// owned by the container's root (root_owner).
func (s *Server) allocVolume(node, storage string, owner int, size int64) (*simVolume, error) {
	st := s.storage(storage)
	if st == nil {
		return nil, fmt.Errorf("storage '%s' does not exist", storage)
	}
	s.mu.Lock()
	if s.life.volumes == nil {
		s.life.volumes = map[string]*simVolume{}
	}
	v := &simVolume{storage: st.id, owner: owner, size: size, name: s.nextDiskName(node, st, owner)}
	if !st.shared {
		v.node = node
	}
	v.volid, v.dir = s.volumeLocation(node, st, owner, v.name)
	s.life.volumes[s.volKey(node, v.volid)] = v
	s.mu.Unlock()
	err := os.MkdirAll(v.dir, 0o755)
	if err == nil {
		err = os.Chown(v.dir, pvelxc.MapBase, pvelxc.MapBase)
	}
	if err != nil {
		s.dropVolume(v)
		return nil, fmt.Errorf("unable to allocate volume: %v", err)
	}
	return v, nil
}

// volume finds a volume by volid as node sees it.
func (s *Server) volume(node, volid string) *simVolume {
	key := s.volKey(node, volid)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.life.volumes[key]
}

// dropVolume forgets a volume and removes its files (vdisk_free).
func (s *Server) dropVolume(v *simVolume) {
	key := s.volKey(v.node, v.volid)
	s.mu.Lock()
	if s.life.volumes[key] == v {
		delete(s.life.volumes, key)
	}
	s.mu.Unlock()
	os.RemoveAll(v.dir)
	os.Remove(filepath.Dir(v.dir)) // images/<owner>, when empty
}

// freeOwnedVolumes is destroy_lxc_container's volume part (LXC.pm L1009
// delete_mountpoint_volume, L1023): every volume of a mount point or an
// unusedN is freed if the container owns it; the others are left, with
// "ignore deletion of '<volid>', CT <vmid> isn't the owner!".
func (s *Server) freeOwnedVolumes(w *worker, node string, vmid int, conf map[string]string) {
	for _, k := range volumeKeys(conf) {
		volid := volumeOf(k, conf[k])
		v := s.volume(node, volid)
		if v == nil {
			continue
		}
		if v.owner != vmid {
			if w != nil {
				w.printf("ignore deletion of '%s', CT %d isn't the owner!\n", volid, vmid)
			}
			continue
		}
		s.dropVolume(v)
	}
}

// volumeKeys are the mpN and unusedN keys holding volumes, by number.
func volumeKeys(conf map[string]string) []string {
	var keys []string
	for _, prefix := range []string{"mp", "unused"} {
		for i := 0; i < indexedMax[prefix]; i++ {
			k := prefix + strconv.Itoa(i)
			if v, ok := conf[k]; ok && classifyMountpoint(volumeOf(k, v)) == "volume" {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// volumeOf is the volume of a mount point value (an unusedN value is a
// bare volid).
func volumeOf(key, value string) string {
	if strings.HasPrefix(key, "unused") {
		return value
	}
	if mp := parseVolume(key, value); mp != nil {
		return mp.m["volume"]
	}
	return ""
}

// renameVolume is PVE::Storage::rename_volume (PS Storage.pm L2321): the
// volume gets target's next free name on the same storage.
func (s *Server) renameVolume(node string, v *simVolume, target int) (string, error) {
	st := s.storage(v.storage)
	s.mu.Lock()
	name := s.nextDiskName(node, st, target)
	volid, dir := s.volumeLocation(node, st, target, name)
	if _, taken := s.life.volumes[s.volKey(node, volid)]; taken {
		s.mu.Unlock()
		return "", fmt.Errorf("target volume '%s' already exists", volid)
	}
	s.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(v.dir, dir); err != nil {
		return "", fmt.Errorf("rename '%s' to '%s' failed - %v", v.dir, dir, err)
	}
	os.Remove(filepath.Dir(v.dir))
	oldKey, newKey := s.volKey(node, v.volid), s.volKey(node, volid)
	s.mu.Lock()
	delete(s.life.volumes, oldKey)
	v.volid, v.dir, v.name, v.owner = volid, dir, name, target
	s.life.volumes[newKey] = v
	s.mu.Unlock()
	return volid, nil
}

// newMount is a mount point a create or restore makes: key, the volume on
// storage of size bytes, the other options.
type newMount struct {
	key     string
	storage string
	size    int64
	mp      *mountPoint
}

// planNewMounts reads the STORAGE:SIZE mount points of a create or
// restore (create_vm L363-408 with check_and_activate_storage): the
// storage must exist, be available on node and take container
// directories. A volume that exists already is not simulated there.
func (s *Server) planNewMounts(node string, conf map[string]string) ([]newMount, *apiError) {
	var out []newMount
	for i := 0; i < indexedMax["mp"]; i++ {
		k := fmt.Sprintf("mp%d", i)
		mp := parseVolume(k, conf[k])
		if mp == nil || mp.typ != "volume" {
			continue
		}
		m := newDiskRe.FindStringSubmatch(mp.m["volume"])
		if m == nil {
			return nil, die("pvesim: attaching the existing volume '%s' at create is not simulated", mp.m["volume"])
		}
		st, err := s.storageConfig(m[1])
		if err != nil {
			return nil, err
		}
		if err := s.storageOnNode(st.id, node); err != nil {
			return nil, err
		}
		if !st.content["rootdir"] {
			return nil, paramErr1("storage", fmt.Sprintf("storage '%s' does not support container directories", st.id))
		}
		gb, _ := strconv.ParseFloat(m[2], 64)
		out = append(out, newMount{key: k, storage: st.id, size: int64(gb * (1 << 30)), mp: mp})
	}
	return out, nil
}

// makeMounts allocates the planned volumes for vmid and writes their
// config lines as print_ct_mountpoint does (the volid, mp, the other
// options sorted, the size). It returns the volumes made, which a failure
// later must free (destroy_disks).
func (s *Server) makeMounts(w *worker, node string, vmid int, mps []newMount, conf map[string]string) ([]*simVolume, error) {
	var made []*simVolume
	for _, nm := range mps {
		v, err := s.allocVolume(node, nm.storage, vmid, nm.size)
		if err != nil {
			for _, m := range made {
				s.dropVolume(m)
			}
			return nil, err
		}
		made = append(made, v)
		w.printf("Formatting '%s', fmt=raw size=%d preallocation=off\n", v.dir, v.size)
		mp := &mountPoint{key: nm.key, typ: "volume", m: map[string]string{}}
		for k, val := range nm.mp.m {
			mp.m[k] = val
		}
		mp.m["volume"], mp.m["size"] = v.volid, formatSize(v.size)
		conf[nm.key] = mp.print()
	}
	return made, nil
}

// seedVolumes moves what the template (or archive) put below each new
// volume's path into the volume: Proxmox mounts the volumes before it
// unpacks (create_vm: create_disks, mount_all, then the extraction; L§8),
// so that content lands in them. The simulator unpacks first and moves it
// after, deepest paths first, so that a volume inside another gets its own
// part. With keepattrs=1 the volume's root takes the owner and mode of the
// directory there (pve-container 6.1.2); otherwise it keeps the
// container's root and 0755. The directory in the root file system stays,
// empty, as the mount point.
func seedVolumes(rootfs string, conf map[string]string, made []*simVolume) error {
	if rootfs == "" {
		return nil
	}
	byVolid := map[string]*simVolume{}
	for _, v := range made {
		byVolid[v.volid] = v
	}
	var mps []*mountPoint
	for i := 0; i < indexedMax["mp"]; i++ {
		k := fmt.Sprintf("mp%d", i)
		if mp := parseVolume(k, conf[k]); mp != nil && byVolid[mp.m["volume"]] != nil {
			mps = append(mps, mp)
		}
	}
	sort.SliceStable(mps, func(i, j int) bool {
		return strings.Count(containerPath(mps[i].m["mp"]), "/") > strings.Count(containerPath(mps[j].m["mp"]), "/")
	})
	for _, mp := range mps {
		v := byVolid[mp.m["volume"]]
		src := filepath.Join(rootfs, containerPath(mp.m["mp"]))
		if !dirNoSymlinks(rootfs, containerPath(mp.m["mp"])) {
			// Nothing there (or not a plain directory path): the mount
			// point is made, as mountpoint_insert_staged does.
			if err := walkNoFollow(rootfs, "/", "./"+mp.m["mp"], true, pvelxc.MapBase, pvelxc.MapBase, nil); err != nil {
				return err
			}
			continue
		}
		ents, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := os.Rename(filepath.Join(src, e.Name()), filepath.Join(v.dir, e.Name())); err != nil {
				return fmt.Errorf("populating volume %s: %v", v.volid, err)
			}
		}
		if mp.m["keepattrs"] == "1" {
			if fi, err := os.Stat(src); err == nil {
				st := fi.Sys().(*syscall.Stat_t)
				os.Chown(v.dir, int(st.Uid), int(st.Gid))
				os.Chmod(v.dir, fi.Mode().Perm()|fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
			}
		}
	}
	return nil
}

// dirNoSymlinks reports whether rel is a directory below root reached
// through directories only.
func dirNoSymlinks(root, rel string) bool {
	cur := root
	for _, c := range strings.Split(rel, "/") {
		if c == "" {
			continue
		}
		cur = filepath.Join(cur, c)
		fi, err := os.Lstat(cur)
		if err != nil || !fi.IsDir() {
			return false
		}
	}
	return true
}

// mountList is what is mounted at a start, in foreach_volume's order (mp0
// to mp255): bind mounts as they are, volumes as bind mounts of their
// directories. A volume that does not exist fails the start.
func (s *Server) mountList(node string, conf map[string]string) ([]*mountPoint, error) {
	var out []*mountPoint
	for i := 0; i < indexedMax["mp"]; i++ {
		k := fmt.Sprintf("mp%d", i)
		v, ok := conf[k]
		if !ok {
			continue
		}
		mp := parseVolume(k, v)
		switch {
		case mp == nil:
		case mp.typ == "bind":
			out = append(out, mp)
		case mp.typ == "volume":
			vol := s.volume(node, mp.m["volume"])
			if vol == nil {
				return out, fmt.Errorf("volume '%s' does not exist", mp.m["volume"])
			}
			cp := &mountPoint{key: k, typ: "bind", m: map[string]string{}}
			for kk, vv := range mp.m {
				cp.m[kk] = vv
			}
			cp.m["volume"] = vol.dir
			out = append(out, cp)
		}
	}
	return out, nil
}

// unusedKey is the lowest free unusedN (add_unused_volume).
func unusedKey(conf map[string]string) string {
	for i := 0; ; i++ {
		if _, ok := conf["unused"+strconv.Itoa(i)]; !ok {
			return "unused" + strconv.Itoa(i)
		}
	}
}
