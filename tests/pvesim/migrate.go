package pvesim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// Migration: POST /nodes/{node}/lxc/{vmid}/migrate (pve-container
// API2/LXC.pm migrate_vm L1619; LXC/Migrate.pm prepare, phase1, final
// cleanup; L§7). Offline and restart migration within the cluster; local
// volumes (local-lvm) are copied to the target, shared ones stay.

var migrateSchema = schema{
	"node": nodeParam(), "vmid": vmidParam(), "target": str().req().fmtd(fmtNode),
	"online": boolean(), "restart": boolean(), "timeout": integer().between("0", ""),
	"target-storage": str(), "bwlimit": number().between("0", ""),
}

// lxcMigrate is migrate_vm's synchronous part and its vzmigrate worker.
func (s *Server) lxcMigrate(c *call) (any, error) {
	target := c.p.get("target")
	if target == c.node {
		return nil, paramErr1("target", "target is local node.")
	}
	if !s.isNode(target) {
		return nil, die("no such cluster node '%s'", target)
	}
	vmidStr := c.p.get("vmid")
	ct, err := s.loadConfig(c.node, vmidStr)
	if err != nil {
		return nil, err
	}
	online, restart := c.p.get("online") == "1", c.p.get("restart") == "1"
	_, _, running := ct.state(s)
	if running && !online && !restart {
		return nil, die("can't migrate running container without --online or --restart")
	}
	storageMap := map[string]string{}
	def := ""
	if ts := c.p.get("target-storage"); ts != "" {
		for _, part := range strings.Split(ts, ",") {
			src, dst, ok := strings.Cut(part, ":")
			switch {
			case !ok:
				def = part
			case src == "" || dst == "":
				return nil, paramErr1("target-storage", "failed to parse storage map: invalid map '"+part+"'")
			default:
				storageMap[src] = dst
			}
			if def == "" && !ok || ok && dst != src {
				if err := c.who.check("/vms/"+vmidStr, "VM.Config.Disk"); err != nil {
					return nil, err
				}
			}
		}
	}
	mapID := func(sid string) string {
		if d, ok := storageMap[sid]; ok {
			return d
		}
		if def != "" {
			return def
		}
		return sid
	}
	timeout := 180
	if v := c.p.get("timeout"); v != "" {
		timeout, _ = strconv.Atoi(v)
	}
	src := c.node
	return s.startWorker(c.node, "vzmigrate", vmidStr, c.who, func(w *worker) error {
		ct.op.Lock()
		defer ct.op.Unlock()
		return s.migrateCT(w, ct, src, target, online, restart, timeout, mapID)
	}), nil
}

// migrateCT is Migrate.pm: prepare (checks; shutdown in restart mode),
// phase1 (lock migrate, copy local volumes, move the config), then start on
// the target, or on the source again if the migration failed.
func (s *Server) migrateCT(w *worker, ct *container, src, target string, online, restart bool, timeout int, mapID func(string) string) error {
	conf, _, running := ct.state(s)
	if l := conf["lock"]; l != "" {
		return fmt.Errorf("CT is locked (%s)", l)
	}
	if running {
		if online {
			return errors.New("lxc live migration is currently not implemented")
		}
		if !restart {
			return errors.New("running container can only be migrated in restart mode")
		}
	}
	// prepare: every mount point, rootfs included.
	type move struct {
		key, volid, target string
		v                  *simVolume
	}
	var moves []move
	keys := append([]string{"rootfs"}, volumeKeys(conf)...)
	for i := 0; i < indexedMax["mp"]; i++ {
		k := fmt.Sprintf("mp%d", i)
		if mp := parseVolume(k, conf[k]); mp != nil && mp.typ != "volume" {
			if mp.m["shared"] == "1" {
				continue
			}
			return fmt.Errorf("cannot migrate local %s mount point '%s'", mp.typ, k)
		}
	}
	for _, k := range keys {
		volid := volumeOf(k, conf[k])
		if k == "rootfs" {
			volid = parseVolume("rootfs", conf["rootfs"]).m["volume"]
		}
		sid, _, _ := strings.Cut(volid, ":")
		st := s.storage(sid)
		if st == nil {
			return fmt.Errorf("storage '%s' does not exist", sid)
		}
		if !st.content["rootdir"] {
			return fmt.Errorf("content type 'rootdir' is not available on storage '%s'", sid)
		}
		tsid := sid
		if !st.shared {
			tsid = mapID(sid)
		}
		if err := s.storageOnNode(tsid, target); err != nil {
			return errors.New(strings.TrimSpace(err.msg))
		}
		if st.shared {
			continue
		}
		if tsid != sid {
			return errors.New("pvesim: migrating to another storage is not simulated")
		}
		if k != "rootfs" {
			if v := s.volume(src, volid); v != nil && v.owner != ct.vmid {
				w.printf("WARN: can't migrate local volume '%s': owned by other guest (owner = %d)\n", volid, v.owner)
				return errors.New("can't migrate CT - check log")
			}
		}
		moves = append(moves, move{key: k, volid: volid, target: tsid, v: s.volume(src, volid)})
	}
	if err := w.injected(); err != nil {
		return err
	}
	if running {
		w.printf("shutdown CT %d\n", ct.vmid)
		if err := s.stopCT(w.ctx, ct, false, timeout, true); err != nil {
			return err
		}
	}
	w.printf("starting migration of CT %d to node '%s' (%s)\n", ct.vmid, target, s.nodeIP(target))
	for _, m := range moves {
		w.printf("found local volume '%s' (in current VM config)\n", m.volid)
	}
	// phase1: the volumes go over (storage_migrate keeps the name), then
	// the config moves to the target's directory of the cluster file
	// system, and with it the real container's LXC directory.
	for _, m := range moves {
		if m.v != nil {
			if err := s.moveVolumeToNode(m.v, src, target); err != nil {
				return s.migrationFailed(w, ct, running, err)
			}
		}
		w.printf("volume '%s' is '%s' on the target\n", m.volid, m.volid)
	}
	s.mu.Lock()
	l := ct.lxc
	s.mu.Unlock()
	if l != nil {
		dst := filepath.Join(s.LXCPath(target), l.Name)
		if err := os.MkdirAll(s.LXCPath(target), 0o755); err != nil {
			return s.migrationFailed(w, ct, running, err)
		}
		if err := os.Rename(filepath.Join(l.Dir, l.Name), dst); err != nil {
			return s.migrationFailed(w, ct, running, err)
		}
		nl := &pvelxc.Container{Name: l.Name, Dir: s.LXCPath(target), Rootfs: filepath.Join(dst, "rootfs"),
			ConsoleLog: filepath.Join(dst, "console.log"), Log: filepath.Join(dst, "lxc.log")}
		s.mu.Lock()
		ct.lxc = nl
		s.mu.Unlock()
	}
	s.mu.Lock()
	ct.node = target
	s.mu.Unlock()
	w.printf("start final cleanup\n")
	if running {
		w.printf("start container on target node\n")
		if err := s.startCT(w, ct); err != nil {
			return fmt.Errorf("migration finished with problems: %v", err)
		}
	}
	w.printf("migration finished successfully (duration %s)\n", time.Duration(0).String())
	return nil
}

// migrationFailed is the failed migration's cleanup in restart mode: the
// container starts again on the source node.
func (s *Server) migrationFailed(w *worker, ct *container, running bool, err error) error {
	w.printf("ERROR: migration aborted: %v\n", err)
	if running {
		w.printf("start container on source node\n")
		s.startCT(w, ct)
	}
	return fmt.Errorf("migration aborted")
}

// moveVolumeToNode copies a local volume to the target node's storage of
// the same name (storage_migrate): the data goes, the name stays.
func (s *Server) moveVolumeToNode(v *simVolume, src, target string) error {
	st := s.storage(v.storage)
	volid, dir := s.volumeLocation(target, st, v.owner, v.name)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Rename(v.dir, dir); err != nil {
		return err
	}
	oldKey, newKey := s.volKey(src, v.volid), s.volKey(target, volid)
	s.mu.Lock()
	delete(s.life.volumes, oldKey)
	v.node, v.dir, v.volid = target, dir, volid
	s.life.volumes[newKey] = v
	s.mu.Unlock()
	return nil
}
