package pvesim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// Restore: POST /nodes/{node}/lxc with restore=1 (pve-container API2/LXC.pm
// create_vm L141-655, LXC/Create.pm recover_config,
// restore_configuration_from_etc_vzdump, sanitize_and_merge_config; L§2).

// restorePlan is what the synchronous part of a restore hands its worker.
type restorePlan struct {
	vmid    int
	archive *backupVolume
	volid   string
	storage string // the storage parameter, for storage-only mode
	// storageOnly: neither rootfs nor mpN given, so they come from the
	// archived config, as new volumes on storage.
	storageOnly bool
	rootfs      string // the rootfs parameter (STORAGE:SIZE[,opts])
	mounts      []newMount
	overwrite   bool // force over an existing container of this node
	unique      bool
	start       bool
	root        bool // the user is root@pam
	// destroyConfig is create_vm's $destroy_config_on_error: a failure
	// removes the config of a new container, and of an overwritten one
	// once its disks are being made.
	destroyConfig bool
	made          []*simVolume
	newDisk       *disk
	release       func() // of the new root disk's name
}

// lxcRestore is create_vm's restore path.
func (s *Server) lxcRestore(c *call) (any, error) {
	p := c.p
	vmidStr := p.get("vmid")
	vmid, _ := strconv.Atoi(vmidStr)
	force := p.get("force") == "1"
	s.mu.Lock()
	existing := s.cts[vmid]
	s.mu.Unlock()
	same := existing != nil && existing.node == c.node
	if same && force {
		conf, _, running := existing.state(s)
		if running {
			return nil, die("can't overwrite running container")
		}
		if conf["protection"] == "1" {
			return nil, die("unable to restore CT %d - protection mode enabled", vmid)
		}
	} else if existing != nil {
		return nil, die("CT %d already exists on node '%s'", vmid, existing.node)
	}
	if p.get("ha-managed") == "1" {
		return nil, die("pvesim: ha-managed is not simulated")
	}
	if !c.who.has("VM.Allocate") && !(force && same && c.who.has("VM.Backup")) {
		return nil, &apiError{code: 403, msg: "Permission check failed\n"}
	}
	if p.get("ostemplate") == "-" {
		return nil, die("pipe requires cli environment")
	}
	b, aerr := s.checkBackupAccess(c, p.get("ostemplate"))
	if aerr != nil {
		return nil, aerr
	}
	plan := &restorePlan{vmid: vmid, archive: b, volid: p.get("ostemplate"), storage: p.get("storage"), overwrite: same && force,
		unique: p.get("unique") == "1", start: p.get("start") == "1", root: c.who.isRoot(), storageOnly: true,
		destroyConfig: !(same && force)}
	if plan.storage == "" {
		plan.storage = "local"
	}
	conf := map[string]string{}
	var opts []string
	for k, v := range p.v {
		switch k {
		case "node", "vmid", "ignore-unpack-errors", "bwlimit", "start", "ha-managed", "unprivileged",
			"restore", "unique", "force", "password", "ssh-public-keys", "pool", "ostemplate", "storage":
			continue
		}
		if m := indexedKey.FindStringSubmatch(k); m != nil && m[1] == "unused" {
			continue // "ignoring 'unusedN', cannot create/restore with unused volume"
		}
		opts = append(opts, k)
		conf[k] = v
	}
	sort.Strings(opts)
	unprivileged := p.get("unprivileged")
	if err := checkModifyPerm(c.who, vmidStr, map[string]string{}, opts, conf, false, unprivileged != "0"); err != nil {
		return nil, err
	}
	if v, ok := conf["rootfs"]; ok {
		plan.storageOnly = false
		if reSizeOnly.MatchString(v) {
			v = plan.storage + ":" + v
		}
		plan.rootfs = v
		delete(conf, "rootfs")
	}
	for i := 0; i < indexedMax["mp"]; i++ {
		if _, ok := conf[fmt.Sprintf("mp%d", i)]; ok {
			if plan.rootfs == "" {
				return nil, die("mount points configured, but 'rootfs' not set - aborting")
			}
			plan.storageOnly = false
		}
	}
	if plan.storageOnly {
		st, err := s.storageConfig(plan.storage)
		if err != nil {
			return nil, err
		}
		if err := s.storageOnNode(st.id, c.node); err != nil {
			return nil, err
		}
		if !st.content["rootdir"] {
			return nil, paramErr1("storage", fmt.Sprintf("storage '%s' does not support container directories", st.id))
		}
	} else {
		mp := parseVolume("rootfs", plan.rootfs)
		if mp == nil || newDiskRe.FindStringSubmatch(mp.m["volume"]) == nil {
			return nil, die("pvesim: restoring onto an existing volume is not simulated; give rootfs as STORAGE:SIZE")
		}
		st, err := s.storageConfig(newDiskRe.FindStringSubmatch(mp.m["volume"])[1])
		if err != nil {
			return nil, err
		}
		if err := s.storageOnNode(st.id, c.node); err != nil {
			return nil, err
		}
		if !st.content["rootdir"] {
			return nil, paramErr1("storage", fmt.Sprintf("storage '%s' does not support container directories", st.id))
		}
		for i := 0; i < indexedMax["mp"]; i++ {
			k := fmt.Sprintf("mp%d", i)
			if mp := parseVolume(k, conf[k]); mp != nil && mp.typ != "volume" {
				if !c.who.isRoot() {
					return nil, die("Only root can pass arbitrary filesystem paths.")
				}
				conf[k] = mp.print()
			}
		}
		if plan.mounts, err = s.planNewMounts(c.node, conf); err != nil {
			return nil, err
		}
	}
	if err := s.checkNetsAndTags(conf); err != nil {
		return nil, err
	}
	if unprivileged != "" {
		conf["unprivileged"] = unprivileged
	}

	// create_and_lock_config with force: an existing config gets the
	// create lock; a new one is made holding only it.
	var ct *container
	if plan.overwrite {
		ct = existing
		s.mu.Lock()
		if l := ct.conf["lock"]; l != "" {
			s.mu.Unlock()
			return nil, die("unable to restore CT %d - CT is locked (%s)", vmid, l)
		}
		ct.conf["lock"] = "create"
		s.mu.Unlock()
	} else {
		ct = &container{vmid: vmid, node: c.node, conf: map[string]string{"lock": "create"}}
		s.mu.Lock()
		if other := s.cts[vmid]; other != nil {
			s.mu.Unlock()
			return nil, die("unable to restore CT %d - CT %d already exists on node '%s'", vmid, vmid, other.node)
		}
		s.cts[vmid] = ct
		s.mu.Unlock()
	}
	upid := s.startWorker(c.node, "vzrestore", vmidStr, c.who, func(w *worker) error {
		ct.op.Lock()
		defer ct.op.Unlock()
		if err := s.restoreCT(w, ct, plan, conf); err != nil {
			s.failRestore(ct, plan)
			return fmt.Errorf("unable to restore CT %d - %v", vmid, err)
		}
		if plan.start {
			return s.startCT(w, ct)
		}
		return nil
	})
	return upid, nil
}

// failRestore is the error path of create_vm's worker: the new disks are
// freed; if they were being made (destroy_config_on_error), the config goes
// too (the container is gone, old volumes not yet destroyed staying on
// their storage), else only the create lock.
func (s *Server) failRestore(ct *container, plan *restorePlan) {
	if plan.release != nil {
		plan.release()
	}
	for _, v := range plan.made {
		s.dropVolume(v)
	}
	if d := plan.newDisk; d != nil && d.path != "" {
		os.Remove(d.path)
		os.Remove(filepath.Dir(d.path))
	}
	if !plan.destroyConfig {
		s.mu.Lock()
		delete(ct.conf, "lock")
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	l := ct.lxc
	if s.cts[ct.vmid] == ct {
		delete(s.cts, ct.vmid)
	}
	if plan.newDisk != nil && ct.disk == plan.newDisk {
		ct.disk = nil
	}
	ct.lxc = nil
	s.mu.Unlock()
	if l != nil {
		l.Destroy()
	} else if s.opts.RealLXC {
		os.RemoveAll(filepath.Join(s.LXCPath(ct.node), strconv.Itoa(ct.vmid)))
	}
}

// restoreCT is the restore worker: recover the archived config, make the
// disks, destroy the old container's volumes, unpack, merge the config.
func (s *Server) restoreCT(w *worker, ct *container, plan *restorePlan, conf map[string]string) error {
	w.printf("recovering backed-up configuration from '%s'\n", plan.volid)
	raw, err := archiveConfig(plan.archive.path)
	if err != nil {
		return err
	}
	old := parsePCTConf(raw)
	if conf["unprivileged"] == "" && old["unprivileged"] != "" {
		conf["unprivileged"] = old["unprivileged"]
	}
	var delayed [][2]string // bind and device mount points, added after extraction
	if plan.storageOnly {
		if old["rootfs"] == "" {
			return errors.New("rootfs configuration could not be recovered, please check and specify manually!")
		}
		root := parseVolume("rootfs", old["rootfs"])
		size := parseSize(root.m["size"])
		if size <= 0 {
			return errors.New("unable to detect disk size - please specify rootfs (size)")
		}
		plan.rootfs = fmt.Sprintf("%s:%g", plan.storage, float64(size)/(1<<30))
		for k, v := range root.m {
			if k != "volume" && k != "size" && k != "mp" {
				plan.rootfs += "," + k + "=" + v
			}
		}
		for i := 0; i < indexedMax["mp"]; i++ {
			k := fmt.Sprintf("mp%d", i)
			mp := parseVolume(k, old[k])
			if mp == nil {
				continue
			}
			if mp.typ != "volume" {
				if !plan.root {
					return fmt.Errorf("restoring '%s' to %s mount is only possible for root", k, mp.typ)
				}
				delayed = append(delayed, [2]string{k, mp.print()})
				continue
			}
			sz := parseSize(mp.m["size"])
			if sz <= 0 {
				return fmt.Errorf("unable to detect disk size - please specify %s (size)", k)
			}
			mp.m["volume"] = fmt.Sprintf("%s:%g", plan.storage, float64(sz)/(1<<30))
			delete(mp.m, "size")
			conf[k] = mp.print()
		}
		mounts, aerr := s.planNewMounts(ct.node, conf)
		if aerr != nil {
			return aerr
		}
		plan.mounts = mounts
	}

	// From here on a failure removes the config ($destroy_config_on_error).
	plan.destroyConfig = true
	root := parseVolume("rootfs", plan.rootfs)
	m := newDiskRe.FindStringSubmatch(root.m["volume"])
	gb, _ := strconv.ParseFloat(m[2], 64)
	d, release, err := s.allocRootDisk(w, ct, m[1], int64(gb*(1<<30)))
	if err != nil {
		return err
	}
	plan.newDisk, plan.release = d, release
	if plan.made, err = s.makeMounts(w, ct.node, ct.vmid, plan.mounts, conf); err != nil {
		return err
	}

	// destroy_lxc_container over the old config: every volume it owns.
	s.mu.Lock()
	oldConf, oldDisk, oldLXC := ct.conf, ct.disk, ct.lxc
	s.mu.Unlock()
	if plan.overwrite {
		s.freeOwnedVolumes(w, ct.node, ct.vmid, oldConf)
		if oldDisk != nil {
			if oldDisk.path != "" {
				os.Remove(oldDisk.path)
			}
			s.mu.Lock()
			ct.disk = nil
			s.mu.Unlock()
		}
		if oldLXC != nil {
			oldLXC.Destroy()
			s.mu.Lock()
			ct.lxc = nil
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	ct.disk = d
	s.mu.Unlock()
	release() // ct.disk holds the name now
	plan.release = nil

	w.printf("restoring '%s' now..\n", plan.volid)
	if s.opts.RealLXC {
		archive := plan.archive.path
		if strings.HasSuffix(archive, ".tar.lzo") {
			// tar -x --lzop runs lzop, which a test machine may lack:
			// the simulator unpacks its own (stored) lzop blocks first.
			plain, err := unlzop(archive)
			if err != nil {
				return err
			}
			defer os.Remove(plain)
			archive = plain
		}
		l, err := pvelxc.Create(s.LXCPath(ct.node), strconv.Itoa(ct.vmid), archive, s.lxcOptions(ct.node, conf))
		if err != nil {
			return err
		}
		s.mu.Lock()
		ct.lxc = l
		s.mu.Unlock()
		// restore_configuration_from_etc_vzdump reads the extracted
		// pct.conf and removes it and pct.fw from the root file system.
		os.Remove(filepath.Join(l.Rootfs, "etc", "vzdump", "pct.conf"))
		os.Remove(filepath.Join(l.Rootfs, "etc", "vzdump", "pct.fw"))
		if err := seedVolumes(l.Rootfs, conf, plan.made); err != nil {
			return err
		}
	}
	// FailNextTask("vzrestore"): fail with the new disks made, the old
	// volumes destroyed and the archive unpacked.
	if err := w.injected(); err != nil {
		return err
	}
	if err := w.interrupted(); err != nil {
		return err
	}

	w.printf("merging backed-up and given configuration..\n")
	for k, v := range old {
		switch {
		case k == "digest", k == "rootfs", k == "snapshots", k == "unprivileged", k == "parent", k == "template", k == "lock":
			continue
		case indexedKey.MatchString(k) && (strings.HasPrefix(k, "mp") || strings.HasPrefix(k, "unused")):
			continue
		case k == "lxc" && !plan.root:
			w.warn("skipping custom lxc options, restore manually as root:\n--------------------------------\n%s\n--------------------------------", v)
			continue
		case plan.unique && strings.HasPrefix(k, "net") && indexedKey.MatchString(k):
			pairs, _ := parsePropString(v, "", netKeys)
			var kept [][2]string
			for _, kv := range pairs {
				if kv[0] != "hwaddr" {
					kept = append(kept, kv)
				}
			}
			conf[k] = normalizeNet(joinProps(kept))
			continue
		}
		if _, given := conf[k]; !given {
			conf[k] = v
		}
	}
	if conf["hostname"] == "" {
		conf["hostname"] = fmt.Sprintf("CT%d", ct.vmid)
	}
	if n, _ := strconv.Atoi(conf["memory"]); n == 0 {
		conf["memory"] = "512"
	}
	if _, ok := conf["swap"]; !ok {
		conf["swap"] = "512"
	}
	for _, kv := range delayed {
		conf[kv[0]] = kv[1]
	}
	rootLine := d.volid
	var ropts []string
	for k, v := range root.m {
		if k != "volume" && k != "size" && k != "mp" {
			ropts = append(ropts, k+"="+v)
		}
	}
	ropts = append(ropts, "size="+formatSize(d.size))
	sort.Strings(ropts)
	conf["rootfs"] = rootLine + "," + strings.Join(ropts, ",")
	delete(conf, "lock")
	s.mu.Lock()
	ct.conf = conf
	s.mu.Unlock()
	return nil
}

// allocRootDisk makes a new root disk for ct on storage: the owner's next
// free disk name (create_disks; the old container's disks still exist
// when a forced restore makes the new ones).
func (s *Server) allocRootDisk(w *worker, ct *container, storage string, size int64) (*disk, func(), error) {
	st := s.storage(storage)
	if st == nil {
		return nil, nil, fmt.Errorf("storage '%s' does not exist", storage)
	}
	s.mu.Lock()
	name, release := s.reserveDiskName(ct.node, st, ct.vmid)
	s.mu.Unlock()
	d := &disk{storage: st.id, size: size}
	if st.fileBased {
		d.path = filepath.Join(s.StoragePath(ct.node, st.id), "images", strconv.Itoa(ct.vmid), name+".raw")
		d.volid = fmt.Sprintf("%s:%d/%s.raw", st.id, ct.vmid, name)
		err := os.MkdirAll(filepath.Dir(d.path), 0o755)
		var f *os.File
		if err == nil {
			f, err = os.Create(d.path)
		}
		if err == nil {
			err = f.Truncate(d.size)
			f.Close()
		}
		if err != nil {
			release()
			return nil, nil, err
		}
		w.printf("Formatting '%s', fmt=raw size=%d preallocation=off\n", d.path, d.size)
	} else {
		d.volid = st.id + ":" + name
		w.printf("  Logical volume \"%s\" created.\n", name)
	}
	return d, release, nil
}

// unlzop writes an lzop archive's tar beside it, as <archive>.pvesim.tar.
func unlzop(archive string) (string, error) {
	in, err := os.Open(archive)
	if err != nil {
		return "", err
	}
	defer in.Close()
	lr, err := newLzopReader(in)
	if err != nil {
		return "", fmt.Errorf("%s: %v", archive, err)
	}
	plain := archive + ".pvesim.tar"
	out, err := os.Create(plain)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(out, lr)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(plain)
		return "", fmt.Errorf("%s: %v", archive, err)
	}
	return plain, nil
}
