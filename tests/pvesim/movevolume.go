package pvesim

import (
	"fmt"
	"strconv"
	"strings"
)

// move_volume to another container: POST /nodes/{node}/lxc/{vmid}/move_volume
// with target-vmid (pve-container API2/LXC.pm L2480-2915,
// load_and_check_reassign_configs L2722-2795; L§1). Moves to another storage
// are not simulated.

var moveVolumeSchema = func() schema {
	vol := str().match(`rootfs|mp\d+|unused\d+`)
	return schema{
		"node": nodeParam(), "vmid": vmidParam(), "volume": vol.req(), "storage": str().fmtd(fmtStorageID),
		"target-vmid": integer().between("100", "999999999").fmtd(fmtVMID), "target-volume": vol,
		"delete": boolean(), "digest": str().length(0, 40), "target-digest": str().length(0, 40), "bwlimit": number().between("0", ""),
	}
}()

// reassignCheck is load_and_check_reassign_configs: it returns the two
// containers, or Proxmox's refusal.
func (s *Server) reassignCheck(c *call, vmid, target int, key, tkey string) (src, dst *container, err *apiError) {
	if key == "rootfs" || tkey == "rootfs" {
		return nil, nil, die("Cannot move to/from 'rootfs'")
	}
	if strings.HasPrefix(key, "unused") && !strings.HasPrefix(tkey, "unused") {
		return nil, nil, die("Moving an unused volume to a used one is not possible")
	}
	s.mu.Lock()
	src, dst = s.cts[vmid], s.cts[target]
	s.mu.Unlock()
	if src == nil {
		return nil, nil, die("could not find CT %d", vmid)
	}
	if dst == nil {
		return nil, nil, die("could not find CT %d", target)
	}
	if src.node != dst.node {
		return nil, nil, die("Both containers need to be on the same node (%s != %s)", src.node, dst.node)
	}
	sconf, _, running := src.state(s)
	dconf, _, _ := dst.state(s)
	for _, cf := range []map[string]string{sconf, dconf} {
		if l := cf["lock"]; l != "" {
			return nil, nil, die("CT is locked (%s)", l)
		}
	}
	if sconf["template"] == "1" || dconf["template"] == "1" {
		return nil, nil, die("Can't move volumes from or to template CT")
	}
	if d := c.p.get("digest"); d != "" && d != digest(sconf) {
		return nil, nil, die("Container %d: detected modified configuration - file changed by other user? Try again.", vmid)
	}
	if d := c.p.get("target-digest"); d != "" && d != digest(dconf) {
		return nil, nil, die("Container %d: detected modified configuration - file changed by other user? Try again.", target)
	}
	if _, ok := sconf[key]; !ok {
		return nil, nil, die("volume '%s' for container '%d' does not exist", key, vmid)
	}
	if _, ok := dconf[tkey]; ok {
		return nil, nil, die("Target volume key '%s' is already in use for container '%d'", tkey, target)
	}
	vol := volumeOf(key, sconf[key])
	if vol == "" {
		return nil, nil, die("Volume '%s' has no associated image", key)
	}
	if typ := classifyMountpoint(vol); typ != "volume" {
		return nil, nil, die("Cannot move a bindmount or device mount to another container")
	}
	// The storage's rename feature (volume_has_feature): dir, nfs, cifs
	// and btrfs rename raw, qcow2 and vmdk images (not subvol); lvmthin
	// renames.
	if v := s.volume(src.node, vol); v != nil {
		if st := s.storage(v.storage); st != nil && st.fileBased && !strings.HasSuffix(vol, ".raw") {
			return nil, nil, die("Storage does not support moving of this disk to another container")
		}
	}
	if running && !strings.HasPrefix(key, "unused") {
		return nil, nil, die("Cannot move in-use volume while the source CT is running - detach or shutdown first")
	}
	return src, dst, nil
}

// lxcMoveVolume is move_volume.
func (s *Server) lxcMoveVolume(c *call) (any, error) {
	storage, targetStr := c.p.get("storage"), c.p.get("target-vmid")
	switch {
	case storage != "" && targetStr != "":
		msg := "either set 'storage' or 'target-vmid', but not both"
		return nil, paramErr(map[string]string{"target-vmid": msg, "storage": msg})
	case storage != "":
		return nil, die("pvesim: moving a volume to another storage is not simulated")
	case targetStr == "":
		msg := "both 'storage' and 'target-vmid' missing, either needs to be set"
		return nil, paramErr(map[string]string{"target-vmid": msg, "storage": msg})
	}
	vmid, _ := strconv.Atoi(c.p.get("vmid"))
	target, _ := strconv.Atoi(targetStr)
	key := c.p.get("volume")
	tkey := c.p.get("target-volume")
	if tkey == "" {
		tkey = key
	}
	if !c.who.isRoot() {
		if err := c.who.check(fmt.Sprintf("/vms/%d", target), "VM.Config.Disk"); err != nil {
			return nil, err
		}
	}
	src, _, err := s.reassignCheck(c, vmid, target, key, tkey)
	if err != nil {
		return nil, err
	}
	sconf, _, _ := src.state(s)
	vol := volumeOf(key, sconf[key])
	sid, _, _ := strings.Cut(vol, ":")
	if err := c.who.check("/storage/"+sid, "Datastore.AllocateSpace"); err != nil {
		return nil, err
	}
	id := fmt.Sprintf("%d-%s>%d-%s", vmid, key, target, tkey)
	return s.startWorker(c.node, "move_volume", id, c.who, func(w *worker) error {
		// lock_config of both, the source first (as the code nests them).
		src.op.Lock()
		defer src.op.Unlock()
		s.mu.Lock()
		dst := s.cts[target]
		s.mu.Unlock()
		if dst != nil && dst != src {
			dst.op.Lock()
			defer dst.op.Unlock()
		}
		if _, _, err := s.reassignCheck(c, vmid, target, key, tkey); err != nil {
			return err
		}
		if err := w.injected(); err != nil {
			return err
		}
		w.printf("moving volume '%s' from container '%d' to '%d'\n", key, vmid, target)
		sconf, _, _ := src.state(s)
		v := s.volume(src.node, volumeOf(key, sconf[key]))
		if v == nil {
			return fmt.Errorf("volume '%s' does not exist", volumeOf(key, sconf[key]))
		}
		newVolid, err := s.renameVolume(src.node, v, target)
		if err != nil {
			return err
		}
		s.mu.Lock()
		line := sconf[key]
		delete(src.conf, key)
		s.mu.Unlock()
		w.printf("removing volume '%s' from container '%d' config\n", key, vmid)
		value := newVolid
		if !strings.HasPrefix(tkey, "unused") {
			mp := parseVolume(key, line)
			if mp == nil { // an unusedN going to an unusedN has no options
				mp = &mountPoint{key: tkey, typ: "volume", m: map[string]string{}}
			}
			mp.key = tkey
			mp.m["volume"] = newVolid
			value = mp.print()
		}
		s.mu.Lock()
		dst.conf[tkey] = value
		l := dst.lxc
		dconf := dst.conf
		s.mu.Unlock()
		// update_lxc_config for a mount point (a running target would get
		// it hot-plugged in Proxmox; the simulator's real containers at
		// their next start).
		if l != nil && !strings.HasPrefix(tkey, "unused") {
			if err := s.rewriteLXCConfig(dst.node, l, dconf); err != nil {
				return err
			}
		}
		w.printf("target container '%d' updated with '%s'\n", target, tkey)
		return nil
	}), nil
}
