package pvesim

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// storageCfg is one entry of storage.cfg as a default installation plus one
// shared storage would have it (proxmox.md §2).
type storageCfg struct {
	id      string
	typ     string
	content map[string]bool
	shared  bool
	// fileBased storages have a path: only they hold templates, ISOs and
	// uploads ("can't upload to storage type ...").
	fileBased bool
}

func defaultStorages() []*storageCfg {
	set := func(c ...string) map[string]bool {
		m := map[string]bool{}
		for _, x := range c {
			m[x] = true
		}
		return m
	}
	return []*storageCfg{
		{id: "local", typ: "dir", content: set("iso", "vztmpl", "backup"), fileBased: true},
		{id: "local-lvm", typ: "lvmthin", content: set("rootdir", "images")},
		{id: "shared", typ: "nfs", content: set("vztmpl", "rootdir"), shared: true, fileBased: true},
	}
}

// contentString lists content types sorted (Proxmox joins hash keys, in no
// particular order).
func (st *storageCfg) contentString() string {
	var c []string
	for k := range st.content {
		c = append(c, k)
	}
	sort.Strings(c)
	return strings.Join(c, ",")
}

func (s *Server) storage(id string) *storageCfg {
	for _, st := range s.storages {
		if st.id == id {
			return st
		}
	}
	return nil
}

// storageConfig is PVE::Storage::storage_config / storage_check_enabled.
func (s *Server) storageConfig(id string) (*storageCfg, *apiError) {
	if id == "" {
		return nil, die("no storage ID specified")
	}
	st := s.storage(id)
	if st == nil {
		return nil, die("storage '%s' does not exist", id)
	}
	return st, nil
}

// StoragePath is the directory of a file-based storage on node ("" for
// local-lvm, which has no path). Templates live in <path>/template/cache.
func (s *Server) StoragePath(node, storage string) string {
	switch storage {
	case "local":
		return filepath.Join(s.dir, node, "local")
	case "shared":
		return filepath.Join(s.dir, "shared")
	}
	return ""
}

func (s *Server) vztmplDir(node, storage string) string {
	return filepath.Join(s.StoragePath(node, storage), "template", "cache")
}

// Volume names (pve-storage Storage.pm L116-118, Plugin.pm parse_volname).
var (
	reVolumeID   = regexp.MustCompile(`(?is)^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$`)
	reVztmplName = regexp.MustCompile(`(?i)^[^/]+\.(tar|tar\.(gz|xz|zst|bz2))$`)
	reISOVol     = regexp.MustCompile(`(?i)^iso/([^/]+\.(?:iso|img))$`)
	reDirImage   = regexp.MustCompile(`^(\d+)/((?:base-)?[^/\s]+\.(raw|qcow2|vmdk|subvol))$`)
	reLVMImage   = regexp.MustCompile(`^((vm|base)-(\d+)-\S+)$`)
	reISOName    = regexp.MustCompile(`(?i)^[^/]+\.(iso|img)$`)
	reDiskFile   = regexp.MustCompile(`^(vm|base)-(\d+)-disk-\d+\.(raw|qcow2|vmdk|subvol)$`)
)

// vztmplFormat is Storage.pm's VZTMPL_EXT_RE_1 for the simulated version
// and the listing's format for a name (Plugin.pm ~L1711:
// `$2 eq 'tar' ? $2 : "t$2"`, case kept). Plain .tar templates arrived with
// libpve-storage-perl 9.0.15, i.e. PVE 9.1.
func (s *Server) vztmplFormat(name string) (string, bool) {
	m := reVztmplName.FindStringSubmatch(name)
	if m == nil {
		return "", false
	}
	if m[2] != "" {
		return "t" + m[2], true
	}
	if !s.atLeast(9, 1) {
		return "", false
	}
	if m[1] == "tar" {
		return "tar", true
	}
	return "t" + m[1], true
}

func (s *Server) isVztmpl(name string) bool { _, ok := s.vztmplFormat(name); return ok }

// volume is a parsed volume ID.
type volume struct {
	volid   string
	storage *storageCfg
	vtype   string // vztmpl, iso, images
	name    string
	owner   int // owning VMID of images, 0 otherwise
}

func parseVolumeID(volid string) (sid, volname string, ok bool) {
	m := reVolumeID.FindStringSubmatch(volid)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// parseVolname is PVE::Storage::parse_volname with the dir and lvmthin
// plugins' parse_volname.
func (s *Server) parseVolname(volid string) (*volume, *apiError) {
	sid, volname, ok := parseVolumeID(volid)
	if !ok {
		return nil, die("unable to parse volume ID '%s'", volid)
	}
	st, err := s.storageConfig(sid)
	if err != nil {
		return nil, err
	}
	v := &volume{volid: volid, storage: st}
	if !st.fileBased {
		m := reLVMImage.FindStringSubmatch(volname)
		if m == nil {
			return nil, die("unable to parse lvm volume name '%s'", volname)
		}
		v.vtype, v.name = "images", m[1]
		v.owner, _ = strconv.Atoi(m[3])
		return v, nil
	}
	switch {
	case strings.HasPrefix(volname, "vztmpl/") && s.isVztmpl(strings.TrimPrefix(volname, "vztmpl/")):
		v.vtype, v.name = "vztmpl", strings.TrimPrefix(volname, "vztmpl/")
	case reISOVol.MatchString(volname):
		v.vtype, v.name = "iso", reISOVol.FindStringSubmatch(volname)[1]
	case reDirImage.MatchString(volname):
		m := reDirImage.FindStringSubmatch(volname)
		v.vtype, v.name = "images", m[2]
		v.owner, _ = strconv.Atoi(m[1])
	default:
		return nil, die("unable to parse directory volume name '%s'", volname)
	}
	return v, nil
}

// path is where a volume lives on node.
func (s *Server) volumePath(node string, v *volume) string {
	base := s.StoragePath(node, v.storage.id)
	switch v.vtype {
	case "vztmpl":
		return filepath.Join(base, "template", "cache", v.name)
	case "iso":
		return filepath.Join(base, "template", "iso", v.name)
	case "images":
		if !v.storage.fileBased {
			return "/dev/pve/" + v.name
		}
		return filepath.Join(base, "images", strconv.Itoa(v.owner), v.name)
	}
	return ""
}

// checkVolumeAccess is PVE::Storage::check_volume_access: a volid needs
// the wanted content type and some privilege on its storage; a plain path
// only root@pam may pass.
func (s *Server) checkVolumeAccess(who *principal, volid, wantType string, vmid int) (*volume, *apiError) {
	if _, _, ok := parseVolumeID(volid); !ok {
		if !who.isRoot() {
			return nil, die("%s", strings.TrimSuffix(perlDie("Only root can pass arbitrary filesystem paths.", storagePM, 651), "\n"))
		}
		return nil, nil
	}
	v, err := s.parseVolname(volid)
	if err != nil {
		return nil, err
	}
	if wantType != "" && v.vtype != wantType && (wantType != "rootdir" || v.vtype != "images") {
		return nil, die("unable to use volume %s - content type needs to be '%s'", volid, wantType)
	}
	path := "/storage/" + v.storage.id
	if who.has("Datastore.Allocate") {
		return v, nil
	}
	switch {
	case v.vtype == "iso" || v.vtype == "vztmpl":
		if err := who.checkAny(path, "Datastore.AllocateSpace", "Datastore.Audit"); err != nil {
			return nil, err
		}
	case v.owner != 0 && v.owner == vmid:
	case v.vtype == "images" && v.owner != 0:
		if err := who.check(path, "Datastore.Audit"); err != nil {
			return nil, err
		}
		if err := who.check(fmt.Sprintf("/vms/%d", v.owner), "VM.Config.Disk"); err != nil {
			return nil, err
		}
	default:
		return nil, die("missing privileges to access %s", volid)
	}
	return v, nil
}

var storageIndexSchema = schema{
	"node": nodeParam(), "storage": str().fmtd(fmtStorageID),
	"content": str(), "enabled": boolean(), "target": str().fmtd(fmtNode), "format": boolean(),
}

// storageInfo is PVE::Storage::storage_info for one storage on node.
func (s *Server) storageInfo(node string, st *storageCfg) map[string]any {
	info := map[string]any{
		"storage": st.id, "type": st.typ, "content": st.contentString(),
		"shared": b2i(st.shared), "active": 1, "enabled": 1,
	}
	var total, avail uint64
	if st.fileBased {
		var fs syscall.Statfs_t
		if syscall.Statfs(s.StoragePath(node, st.id), &fs) == nil {
			total = fs.Blocks * uint64(fs.Bsize)
			avail = fs.Bavail * uint64(fs.Bsize)
		}
	} else {
		// A thin pool of 100 GiB; allocated container disks count as
		// used, as LVM reports them for freshly formatted volumes.
		total = 100 << 30
		var used uint64
		s.mu.Lock()
		for _, ct := range s.cts {
			if ct.node == node && ct.disk != nil && ct.disk.storage == st.id {
				used += uint64(ct.disk.size) / 64 // thin: a little is really used
			}
		}
		s.mu.Unlock()
		avail = total - used
	}
	used := total - avail
	info["total"], info["avail"], info["used"] = total, avail, used
	if total > 0 {
		info["used_fraction"] = float64(used) / float64(total)
	}
	return info
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// storageIndex is pve-storage API2/Storage/Status.pm index.
func (s *Server) storageIndex(c *call) (any, error) {
	want := splitList(c.p.get("content"))
	if id := c.p.get("storage"); id != "" && s.storage(id) == nil {
		return nil, paramErr1("storage", "No such storage.")
	}
	out := []map[string]any{}
	for _, st := range s.storages {
		if c.p.has("content") {
			ok := false
			for _, ct := range want {
				ok = ok || st.content[ct]
			}
			if !ok {
				continue
			}
		}
		if c.who.checkAny("/storage/"+st.id, "Datastore.Audit", "Datastore.AllocateSpace") != nil {
			continue
		}
		if id := c.p.get("storage"); id != "" && id != st.id {
			continue
		}
		if t := c.p.get("target"); t != "" && t != c.node && !st.shared {
			continue
		}
		out = append(out, s.storageInfo(c.node, st))
	}
	return out, nil
}

var storageStatusSchema = schema{"node": nodeParam(), "storage": storageParam()}

func (s *Server) storageStatus(c *call) (any, error) {
	st := s.storage(c.p.get("storage"))
	if st == nil {
		return nil, paramErr1("storage", "No such storage.")
	}
	return s.storageInfo(c.node, st), nil
}

var contentIndexSchema = schema{
	"node": nodeParam(), "storage": storageParam(),
	"content": str(), "vmid": integer().between("100", "999999999").fmtd(fmtVMID),
}

// contentIndex is API2/Storage/Content.pm index (volume_list plus a
// check_volume_access per item), sorted case-insensitively by volid.
func (s *Server) contentIndex(c *call) (any, error) {
	st, err := s.storageConfig(c.p.get("storage"))
	if err != nil {
		return nil, err
	}
	types := []string{"rootdir", "images", "vztmpl", "iso", "backup", "snippets", "import"}
	if c.p.has("content") {
		types = []string{c.p.get("content")}
	}
	vmid, _ := strconv.Atoi(c.p.get("vmid"))
	var items []map[string]any
	for _, typ := range types {
		if !st.content[typ] {
			continue
		}
		switch typ {
		case "vztmpl", "iso":
			if vmid != 0 {
				continue
			}
			items = append(items, s.listFiles(c.node, st, typ)...)
		case "rootdir", "images":
			items = append(items, s.listImages(c.node, st, typ, vmid)...)
		}
	}
	out := []map[string]any{}
	for _, it := range items {
		if _, err := s.checkVolumeAccess(c.who, it["volid"].(string), "", 0); err != nil {
			continue
		}
		out = append(out, it)
	}
	sort.SliceStable(out, func(i, j int) bool {
		return strings.ToLower(out[i]["volid"].(string)) < strings.ToLower(out[j]["volid"].(string))
	})
	return out, nil
}

// listFiles is Plugin.pm $get_subdir_files for vztmpl and iso.
func (s *Server) listFiles(node string, st *storageCfg, typ string) []map[string]any {
	sub := map[string]string{"vztmpl": "template/cache", "iso": "template/iso"}[typ]
	dir := filepath.Join(s.StoragePath(node, st.id), sub)
	ents, _ := os.ReadDir(dir)
	var out []map[string]any
	for _, e := range ents {
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil || fi.IsDir() {
			continue
		}
		item := map[string]any{"content": typ, "size": fi.Size(), "ctime": ctime(fi)}
		if typ == "vztmpl" {
			format, ok := s.vztmplFormat(e.Name())
			if !ok {
				continue
			}
			item["volid"], item["format"] = st.id+":vztmpl/"+e.Name(), format
		} else {
			if !reISOName.MatchString(e.Name()) {
				continue
			}
			item["volid"], item["format"] = st.id+":iso/"+e.Name(), "iso"
		}
		out = append(out, item)
	}
	return out
}

func ctime(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ctim.Sec
	}
	return fi.ModTime().Unix()
}

// listImages lists container and VM disks; a disk of a container is
// content "rootdir", any other "images" (Plugin.pm list_volumes).
func (s *Server) listImages(node string, st *storageCfg, typ string, vmid int) []map[string]any {
	type img struct {
		volid string
		owner int
		size  int64
	}
	var imgs []img
	if st.fileBased {
		base := filepath.Join(s.StoragePath(node, st.id), "images")
		dirs, _ := os.ReadDir(base)
		for _, d := range dirs {
			files, _ := os.ReadDir(filepath.Join(base, d.Name()))
			for _, f := range files {
				m := reDiskFile.FindStringSubmatch(f.Name())
				if m == nil || m[2] != d.Name() {
					continue
				}
				fi, err := f.Info()
				if err != nil {
					continue
				}
				owner, _ := strconv.Atoi(m[2])
				imgs = append(imgs, img{st.id + ":" + d.Name() + "/" + f.Name(), owner, fi.Size()})
			}
		}
	} else {
		s.mu.Lock()
		for _, ct := range s.cts {
			if ct.node == node && ct.disk != nil && ct.disk.storage == st.id {
				imgs = append(imgs, img{ct.disk.volid, ct.vmid, ct.disk.size})
			}
		}
		s.mu.Unlock()
	}
	var out []map[string]any
	for _, im := range imgs {
		if vmid != 0 && im.owner != vmid {
			continue
		}
		s.mu.Lock()
		_, isCT := s.cts[im.owner]
		s.mu.Unlock()
		content := "images"
		if isCT {
			content = "rootdir"
		}
		if content != typ {
			continue
		}
		out = append(out, map[string]any{
			"volid": im.volid, "format": "raw", "size": im.size, "used": im.size,
			"vmid": im.owner, "content": content,
		})
	}
	return out
}

var contentVolumeSchema = schema{
	"node": nodeParam(), "storage": str().fmtd(fmtStorageID), "volume": str().req(),
}

// realVolumeID is Content.pm $real_volume_id: a volume with a ':' is a
// volid whose storage must match; without, it is a name on {storage}.
func realVolumeID(storage, volume string) (string, *apiError) {
	if strings.Contains(volume, ":") {
		sid, _, ok := parseVolumeID(volume)
		if !ok {
			return "", paramErr1("volume", fmt.Sprintf("unable to parse volume ID '%s'\n", volume))
		}
		if storage != "" && sid != storage {
			return "", paramErr1("volume", fmt.Sprintf("storage ID mismatch (%s != %s)\n", sid, storage))
		}
		return volume, nil
	}
	if storage == "" {
		return "", paramErr1("volume", "no storage specified - incomplete volume ID")
	}
	return storage + ":" + volume, nil
}

// contentInfo is Content.pm info. Templates report format "raw": that is
// what Plugin.pm parse_volname gives vztmpl volumes and qemu-img then sees.
func (s *Server) contentInfo(c *call) (any, error) {
	volid, err := realVolumeID(c.p.get("storage"), c.p.get("volume"))
	if err != nil {
		return nil, err
	}
	v, err := s.checkVolumeAccess(c.who, volid, "", 0)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, die("pvesim: plain paths are not simulated here")
	}
	path := s.volumePath(c.node, v)
	var size, used int64
	if !v.storage.fileBased {
		d := s.lvmDisk(c.node, volid)
		if d == nil {
			return nil, die("volume_size_info on '%s' failed - no format", volid)
		}
		size, used = d.size, d.size
	} else {
		fi, statErr := os.Stat(path)
		if statErr != nil {
			return nil, die("volume_size_info on '%s' failed - no format", volid)
		}
		size = fi.Size()
		used = size
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			used = st.Blocks * 512
		}
	}
	if size == 0 {
		return nil, die("volume '%s' has size zero", volid)
	}
	return map[string]any{"path": path, "size": size, "used": used, "format": "raw"}, nil
}

func (s *Server) lvmDisk(node, volid string) *disk {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ct := range s.cts {
		if ct.node == node && ct.disk != nil && ct.disk.volid == volid {
			return ct.disk
		}
	}
	return nil
}

var contentDeleteSchema = schema{
	"node": nodeParam(), "storage": str().fmtd(fmtStorageID), "volume": str().req(),
	"delay": integer().between("1", "30"),
}

// contentDelete is Content.pm delete: Datastore.Allocate, an imgdel worker
// whose id is the storage ID, and Plugin.pm free_image, which only warns
// when the file is already gone.
func (s *Server) contentDelete(c *call) (any, error) {
	volid, err := realVolumeID(c.p.get("storage"), c.p.get("volume"))
	if err != nil {
		return nil, err
	}
	v, err := s.parseVolname(volid)
	if err != nil {
		return nil, err
	}
	if err := c.who.check("/storage/"+v.storage.id, "Datastore.Allocate"); err != nil {
		return nil, err
	}
	if v.vtype == "images" {
		return nil, die("pvesim: deleting disk images is not simulated; destroy the container")
	}
	path := s.volumePath(c.node, v)
	upid := s.startWorker(c.node, "imgdel", v.storage.id, c.who, func(w *worker) error {
		if err := w.injected(); err != nil {
			return err
		}
		if err := os.Remove(path); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("unlink '%s' failed - %v", path, err)
			}
			w.warn("disk image '%s' does not exist", path)
		}
		w.printf("Removed volume '%s'\n", volid)
		return nil
	})
	if d := c.p.get("delay"); d != "" {
		// Wait up to delay seconds; null when the task finished OK.
		n, _ := strconv.Atoi(d)
		if t := s.task(upid); t != nil && waitDone(t, n) {
			s.mu.Lock()
			exit := t.exit
			s.mu.Unlock()
			if exit == "OK" || strings.HasPrefix(exit, "WARNINGS: ") {
				return nil, nil
			}
			return nil, die("%s", exit)
		}
	}
	return upid, nil
}
