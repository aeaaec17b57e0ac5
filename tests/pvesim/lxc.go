package pvesim

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pve-image/pve-image/template"
	"github.com/pve-image/pve-image/tests/pvelxc"
)

// container is a CT: its config (as in /etc/pve/nodes/<node>/lxc/<vmid>.conf),
// its root disk and, with RealLXC, the LXC container running it.
type container struct {
	vmid int
	node string

	// Guarded by Server.mu.
	conf    map[string]string
	running bool // without RealLXC
	started time.Time
	disk    *disk
	lxc     *pvelxc.Container

	// op serialises power operations and destroy, as lock_config does.
	op sync.Mutex
}

type disk struct {
	storage string
	volid   string
	path    string // the image file on file-based storages
	size    int64
}

func (ct *container) isRunning() bool {
	if ct.lxc != nil {
		return ct.lxc.Running()
	}
	return ct.running
}

// state copies what a reader needs under the server's lock.
func (ct *container) state(s *Server) (conf map[string]string, l *pvelxc.Container, running bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(ct.conf), ct.lxc, ct.isRunning()
}

func (ct *container) snapshot(s *Server) *CT {
	conf, l, running := ct.state(s)
	out := &CT{VMID: ct.vmid, Node: ct.node, Config: conf, Status: "stopped"}
	if running {
		out.Status = "running"
	}
	if l != nil {
		out.Console, out.ExitCode = l.Console(), l.ExitCode()
	}
	return out
}

// loadConfig is AbstractConfig::load_config on node: the config must be in
// that node's directory of the cluster file system.
func (s *Server) loadConfig(node, vmid string) (*container, *apiError) {
	n, _ := strconv.Atoi(vmid)
	s.mu.Lock()
	ct := s.cts[n]
	s.mu.Unlock()
	if ct == nil || ct.node != node {
		return nil, die("Configuration file 'nodes/%s/lxc/%s.conf' does not exist", node, vmid)
	}
	return ct, nil
}

var (
	// A rootfs of just a size goes on the storage parameter.
	reSizeOnly = regexp.MustCompile(`^\d+(\.\d+)?$`)
	// Create.pm tar_compression_option (L91): the name decides.
	reTarSuffix = regexp.MustCompile(`\.tar(\.[^.]+)?$`)
	// The plugin's own reason inside template.Meta's OSRefusal.
	rePluginRefusal = regexp.MustCompile(`plugin: (.*)\) unless`)
)

// createPlan is what the synchronous part of create_vm hands its worker.
type createPlan struct {
	vmid     int
	archive  string // host path of the template
	diskSID  string
	diskSize int64
	rootOpts [][2]string // rootfs options besides the volume
	start    bool
	mounts   []newMount   // volume mount points to make (volumes.go)
	made     []*simVolume // the volumes made, which a failure frees
}

// lxcCreate is pve-container API2/LXC.pm create_vm (L141).
func (s *Server) lxcCreate(c *call) (any, error) {
	p := c.p
	vmidStr := p.get("vmid")
	vmid, _ := strconv.Atoi(vmidStr)
	if p.get("restore") == "1" {
		return s.lxcRestore(c)
	}
	// PVE 9.0 made unprivileged the default and privileged creation a
	// Sys.Modify matter (pve-container 6.0.6, commit 103068a).
	unprivileged := p.get("unprivileged") == "1" || !p.has("unprivileged") && s.atLeast(9, 0)
	if !unprivileged && s.atLeast(9, 0) {
		if err := c.who.check("/", "Sys.Modify"); err != nil {
			return nil, err
		}
	}
	if p.get("ha-managed") == "1" {
		if err := c.who.check("/", "Sys.Console"); err != nil {
			return nil, err
		}
		return nil, die("pvesim: ha-managed is not simulated")
	}
	s.mu.Lock()
	existing := s.cts[vmid]
	s.mu.Unlock()
	if existing != nil {
		return nil, die("CT %d already exists on node '%s'", vmid, existing.node)
	}
	if pool := p.get("pool"); pool != "" {
		return nil, die("pool '%s' does not exist", pool)
	}
	if !c.who.has("VM.Allocate") {
		return nil, &apiError{code: 403, msg: "Permission check failed\n"}
	}
	ostemplate := p.get("ostemplate")
	storage := p.get("storage")
	if storage == "" {
		storage = "local"
	}
	// The options that become config (create_vm extracts the others).
	conf := map[string]string{}
	var opts []string
	for k, v := range p.v {
		switch k {
		case "node", "vmid", "ignore-unpack-errors", "bwlimit", "start", "ha-managed", "unprivileged",
			"restore", "unique", "force", "password", "ssh-public-keys", "pool", "ostemplate", "storage":
			continue
		}
		opts = append(opts, k)
		conf[k] = v
	}
	sort.Strings(opts)
	if err := checkModifyPerm(c.who, vmidStr, map[string]string{}, opts, conf, false, unprivileged); err != nil {
		return nil, err
	}
	if ostemplate == "-" {
		return nil, die("pipe requires cli environment")
	}
	v, err := s.checkVolumeAccess(c.who, ostemplate, "vztmpl", vmid)
	if err != nil {
		return nil, err
	}
	plan := &createPlan{vmid: vmid, start: p.get("start") == "1", archive: ostemplate}
	if v != nil {
		plan.archive = s.volumePath(c.node, v)
	}

	// Mount points (create_vm L363-408): rootfs, and bind mounts.
	var mpKeys []string
	for _, k := range opts {
		switch m := indexedKey.FindStringSubmatch(k); {
		case m == nil:
		case m[1] == "mp":
			mpKeys = append(mpKeys, k)
		case m[1] == "dev":
			return nil, die("pvesim: '%s' is not simulated", k)
		case m[1] == "unused":
			delete(conf, k) // "ignoring 'unusedN', cannot create/restore with unused volume"
		}
	}
	if len(mpKeys) > 0 && conf["rootfs"] == "" {
		return nil, die("mount points configured, but 'rootfs' not set - aborting")
	}
	rootfs := conf["rootfs"]
	delete(conf, "rootfs")
	if rootfs == "" {
		rootfs = storage + ":4"
	} else if reSizeOnly.MatchString(rootfs) {
		rootfs = storage + ":" + rootfs
	}
	pairs, _ := parsePropString(rootfs, "volume", rootfsKeys)
	for _, kv := range pairs {
		if kv[0] == "volume" {
			m := newDiskRe.FindStringSubmatch(kv[1])
			if m == nil {
				if strings.HasPrefix(kv[1], "/") && !c.who.isRoot() {
					return nil, die("Only root can pass arbitrary filesystem paths.")
				}
				return nil, die("pvesim: rootfs '%s' is not simulated, only new volumes (STORAGE:SIZE)", kv[1])
			}
			gb, _ := strconv.ParseFloat(m[2], 64)
			plan.diskSID = m[1]
			plan.diskSize = int64(gb*1024) * 1024 * 1024
		} else if kv[0] != "size" {
			plan.rootOpts = append(plan.rootOpts, kv)
		}
	}
	// check_and_activate_storage for the rootfs storage.
	st, err := s.storageConfig(plan.diskSID)
	if err != nil {
		return nil, err
	}
	if err := s.storageOnNode(st.id, c.node); err != nil {
		return nil, err
	}
	if !st.content["rootdir"] {
		return nil, paramErr1("storage", fmt.Sprintf("storage '%s' does not support container directories", st.id))
	}
	if err := c.who.check("/storage/"+st.id, "Datastore.AllocateSpace"); err != nil {
		return nil, err
	}
	// The other mount points, after rootfs as foreach_volume orders them:
	// bind mounts are kept as given (create_disks prints them back with
	// print_ct_mountpoint); the other kinds are not simulated.
	for i := 0; i < indexedMax["mp"]; i++ {
		k := fmt.Sprintf("mp%d", i)
		if _, ok := conf[k]; !ok {
			continue
		}
		mp := parseVolume(k, conf[k])
		switch {
		case mp == nil:
			continue // the schema refused it already
		case mp.typ != "volume" && !c.who.isRoot():
			return nil, die("Only root can pass arbitrary filesystem paths.")
		case mp.typ == "device":
			return nil, die("pvesim: device mount points are not simulated")
		case mp.typ == "volume":
			continue // made by the worker (volumes.go)
		}
		conf[k] = mp.print()
	}
	if plan.mounts, err = s.planNewMounts(c.node, conf); err != nil {
		return nil, err
	}

	// update_pct_config.
	if err := s.checkNetsAndTags(conf); err != nil {
		return nil, err
	}
	if unprivileged {
		conf["unprivileged"] = "1"
	}

	// create_and_lock_config: the VMID is taken from here on.
	ct := &container{vmid: vmid, node: c.node, conf: map[string]string{"lock": "create"}}
	s.mu.Lock()
	if other := s.cts[vmid]; other != nil {
		s.mu.Unlock()
		return nil, die("unable to create CT %d - CT %d already exists on node '%s'", vmid, vmid, other.node)
	}
	s.cts[vmid] = ct
	s.mu.Unlock()

	upid := s.startWorker(c.node, "vzcreate", vmidStr, c.who, func(w *worker) error {
		ct.op.Lock()
		defer ct.op.Unlock()
		if err := s.createCT(w, ct, plan, conf); err != nil {
			for _, v := range plan.made { // destroy_disks
				s.dropVolume(v)
			}
			s.destroyCT(ct)
			return fmt.Errorf("unable to create CT %d - %v", vmid, err)
		}
		if plan.start {
			return s.startCT(w, ct)
		}
		return nil
	})
	return upid, nil
}

// createCT is the worker of create_vm: disks, extraction, OS detection
// (PVE::LXC::Setup->new), defaults, config.
func (s *Server) createCT(w *worker, ct *container, plan *createPlan, conf map[string]string) error {
	st := s.storage(plan.diskSID)
	d := &disk{storage: st.id, size: plan.diskSize}
	name := fmt.Sprintf("vm-%d-disk-0", ct.vmid)
	if st.fileBased {
		d.path = filepath.Join(s.StoragePath(ct.node, st.id), "images", strconv.Itoa(ct.vmid), name+".raw")
		d.volid = fmt.Sprintf("%s:%d/%s.raw", st.id, ct.vmid, name)
		if err := os.MkdirAll(filepath.Dir(d.path), 0o755); err != nil {
			return err
		}
		f, err := os.Create(d.path)
		if err != nil {
			return err
		}
		err = f.Truncate(d.size)
		f.Close()
		if err != nil {
			return err
		}
		w.printf("Formatting '%s', fmt=raw size=%d preallocation=off\n", d.path, d.size)
	} else {
		d.volid = st.id + ":" + name
		w.printf("  Logical volume \"%s\" created.\n", name)
	}
	s.mu.Lock()
	ct.disk = d
	s.mu.Unlock()
	w.printf("Creating filesystem with %d 4k blocks and %d inodes\n", d.size/4096, d.size/16384)
	made, err := s.makeMounts(w, ct.node, ct.vmid, plan.mounts, conf)
	if err != nil {
		return err
	}
	plan.made = made

	// mount_all (LXC.pm L1810) mounts the mount points before the
	// template is unpacked: a bind mount's host directory must exist, and
	// its target directories are made in the still empty rootfs, so that
	// tar's --skip-old-files keeps them. The simulator does not mount
	// them for the extraction (in Proxmox, template files below a bind
	// mount point land in the host directory).
	rootdir := ""
	if s.opts.RealLXC {
		rootdir = filepath.Join(s.LXCPath(ct.node), strconv.Itoa(ct.vmid), "rootfs")
		if err := os.MkdirAll(rootdir, 0o755); err != nil {
			return err
		}
		if err := os.Chown(rootdir, pvelxc.MapBase, pvelxc.MapBase); err != nil {
			return err
		}
	}
	if err := mountBinds(rootdir, bindMounts(conf), true, pvelxc.MapBase, pvelxc.MapBase); err != nil {
		w.printf("mounting container failed\n")
		return err
	}

	// restore_archive: the compression comes from the file name alone.
	archive := plan.archive
	m := reTarSuffix.FindStringSubmatch(archive)
	if m == nil {
		return fmt.Errorf("file does not look like a template archive: %s", archive)
	}
	if m[1] != "" && !map[string]bool{".gz": true, ".bz2": true, ".xz": true, ".lzo": true, ".zst": true}[m[1]] {
		return fmt.Errorf("unrecognized compression format: %s", m[1])
	}
	if _, err := os.Stat(archive); err != nil {
		return fmt.Errorf("failed to open '%s': No such file or directory", archive)
	}
	if m[1] == "" && isOCIArchive(archive) {
		w.printf("Detected OCI archive\n")
		return errors.New("pvesim: OCI archives (PVE 9.1 application containers) are not simulated")
	}
	w.printf("extracting archive '%s'\n", archive)
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, ct.node, "tmp"), "inspect-")
	if err != nil {
		return err
	}
	meta, err := template.InspectFile(w.ctx, archive, tmp)
	os.RemoveAll(tmp)
	if err != nil {
		return fmt.Errorf("command 'tar xpf - --totals ... -C /var/lib/lxc/%d/rootfs' failed: %v", ct.vmid, err)
	}

	// PVE::LXC::Setup->new: detect the OS, then the architecture.
	ostype, arch := conf["ostype"], conf["arch"]
	var archMsgs []string
	if ostype != "unmanaged" {
		f := meta.Facts
		if f.OSID != "" && !pvePlugins[f.OSID] && pveAliases[f.OSID] == "" {
			w.warn("unknown ID '%s' in /etc/os-release file, trying fallback detection", f.OSID)
		}
		if strings.Contains(f.OSRefusal, "unable to detect OS distribution") {
			return errors.New("unable to detect OS distribution")
		}
		if f.OSType == "unmanaged" {
			w.warn("/etc/os-release file not found and autodetection failed, falling back to 'unmanaged'")
		}
		expected := ostype
		if expected == "" {
			expected = f.OSType
		}
		if f.OSType != expected {
			w.warn("got unexpected ostype (%s != %s)", f.OSType, expected)
		}
		if f.OSRefusal != "" {
			// The plugin's new() dies; its reason is inside the refusal.
			if mm := rePluginRefusal.FindStringSubmatch(f.OSRefusal); mm != nil {
				return errors.New(mm[1])
			}
			return errors.New(f.OSRefusal)
		}
		ostype = f.OSType
		if arch == "" && f.OSType != "unmanaged" {
			if f.ShellArch != "" {
				arch = f.ShellArch
				archMsgs = append(archMsgs, "Detected container architecture: "+arch)
			} else {
				w.warn("Architecture detection failed: open '/bin/sh' failed: No such file or directory")
			}
		}
	}
	if arch == "" {
		arch = "amd64"
		archMsgs = append(archMsgs, "Falling back to amd64.", "Use `pct set VMID --arch ARCH` to change.")
	}
	for _, l := range archMsgs {
		w.printf("%s\n", l)
	}
	conf["ostype"], conf["arch"] = ostype, arch

	// Defaults (create_vm sets them after Setup; the order does not show).
	if conf["hostname"] == "" {
		conf["hostname"] = fmt.Sprintf("CT%d", ct.vmid)
	}
	if n, _ := strconv.Atoi(conf["memory"]); n == 0 {
		conf["memory"] = "512"
	}
	if _, ok := conf["swap"]; !ok {
		conf["swap"] = "512"
	}
	if s.opts.RealLXC {
		l, err := pvelxc.Create(s.LXCPath(ct.node), strconv.Itoa(ct.vmid), archive, s.lxcOptions(ct.node, conf))
		if err != nil {
			return err
		}
		if err := seedVolumes(l.Rootfs, conf, plan.made); err != nil {
			l.Destroy()
			return err
		}
		s.mu.Lock()
		ct.lxc = l
		s.mu.Unlock()
	}
	// FailNextTask("vzcreate"): fail with the disk allocated and the
	// template unpacked, which the error path must remove again.
	if err := w.injected(); err != nil {
		return err
	}
	if err := w.interrupted(); err != nil {
		return err
	}
	opts := append([][2]string{{"size", formatSize(d.size)}}, plan.rootOpts...)
	sort.Slice(opts, func(i, j int) bool { return opts[i][0] < opts[j][0] })
	rootfs := d.volid
	for _, kv := range opts {
		rootfs += "," + kv[0] + "=" + kv[1]
	}
	conf["rootfs"] = rootfs
	s.mu.Lock()
	ct.conf = conf
	s.mu.Unlock()
	return nil
}

var (
	pvePlugins = map[string]bool{"alpine": true, "archlinux": true, "centos": true, "debian": true, "devuan": true,
		"fedora": true, "gentoo": true, "openeuler": true, "opensuse": true, "ubuntu": true, "nixos": true, "unmanaged": true}
	pveAliases = map[string]string{"opensuse-leap": "opensuse", "opensuse-tumbleweed": "opensuse", "opensuse-slowroll": "opensuse",
		"sles": "opensuse", "openEuler": "openeuler", "arch": "archlinux", "rocky": "centos", "almalinux": "centos"}
)

// isOCIArchive is Create.pm archive_is_oci_format: an uncompressed tar
// listing exactly "oci-layout" and "index.json" and something under blobs/.
func isOCIArchive(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var layout, index, blobs bool
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		layout = layout || h.Name == "oci-layout"
		index = index || h.Name == "index.json"
		blobs = blobs || strings.HasPrefix(h.Name, "blobs/")
	}
	return layout && index && blobs
}

// destroyCT removes a container and everything it owns: its disk, its LXC
// container and its config.
func (s *Server) destroyCT(ct *container) {
	s.mu.Lock()
	d, l, conf := ct.disk, ct.lxc, ct.conf
	s.mu.Unlock()
	s.freeOwnedVolumes(nil, ct.node, ct.vmid, conf)
	s.releaseCOW(ct, l) // a linked clone's overlay, a template's base tree (clone.go)
	if l != nil {
		l.Destroy()
	} else if s.opts.RealLXC {
		// A create that failed before unpacking the template leaves
		// the rootfs mount_all prepared.
		os.RemoveAll(filepath.Join(s.LXCPath(ct.node), strconv.Itoa(ct.vmid)))
	}
	if d != nil && d.path != "" {
		os.Remove(d.path)
		os.Remove(filepath.Dir(d.path))
	}
	s.mu.Lock()
	if s.cts[ct.vmid] == ct {
		delete(s.cts, ct.vmid)
	}
	ct.disk, ct.lxc = nil, nil
	s.mu.Unlock()
}

// vmstatus is PVE::LXC::vmstatus for one container.
func (s *Server) vmstatus(ct *container) map[string]any {
	s.mu.Lock()
	conf := ct.conf
	running := ct.isRunning()
	started := ct.started
	var maxdisk int64
	if ct.disk != nil {
		maxdisk = ct.disk.size
	}
	s.mu.Unlock()
	mem, _ := strconv.ParseInt(conf["memory"], 10, 64)
	if mem == 0 {
		mem = 512
	}
	swap, _ := strconv.ParseInt(conf["swap"], 10, 64)
	cpus := 4.0
	if c, err := strconv.ParseFloat(conf["cores"], 64); err == nil {
		cpus = c
	}
	st := map[string]any{
		"vmid": ct.vmid, "name": conf["hostname"], "type": "lxc", "status": "stopped",
		"maxmem": mem << 20, "maxswap": swap << 20, "maxdisk": maxdisk, "disk": 0, "cpus": cpus,
		"mem": 0, "swap": 0, "cpu": 0, "uptime": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
	}
	if running {
		st["status"] = "running"
		st["uptime"] = int64(time.Since(started).Seconds())
		st["mem"] = int64(32) << 20
		st["disk"] = int64(16) << 20
	}
	if v := conf["lock"]; v != "" {
		st["lock"] = v
	}
	if v := conf["tags"]; v != "" {
		st["tags"] = v
	}
	if conf["template"] == "1" {
		st["template"] = 1
	}
	return st
}

// lxcIndex is GET /nodes/{node}/lxc: the node's containers the user may
// audit.
func (s *Server) lxcIndex(c *call) (any, error) {
	s.mu.Lock()
	var cts []*container
	for _, ct := range s.cts {
		if ct.node == c.node {
			cts = append(cts, ct)
		}
	}
	s.mu.Unlock()
	sort.Slice(cts, func(i, j int) bool { return cts[i].vmid < cts[j].vmid })
	out := []map[string]any{}
	for _, ct := range cts {
		if c.who.check(fmt.Sprintf("/vms/%d", ct.vmid), "VM.Audit") != nil {
			continue
		}
		out = append(out, s.vmstatus(ct))
	}
	return out, nil
}

func (s *Server) lxcStatus(c *call) (any, error) {
	ct, err := s.loadConfig(c.node, c.p.get("vmid"))
	if err != nil {
		return nil, err
	}
	st := s.vmstatus(ct)
	st["ha"] = map[string]any{"managed": 0}
	return st, nil
}

// lxcStart is vm_start: "already running" is checked at once, everything
// else (config, locks, bridges) in the vzstart worker.
func (s *Server) lxcStart(c *call) (any, error) {
	vmid := c.p.get("vmid")
	if c.p.get("skiplock") == "1" && !c.who.isRoot() {
		return nil, paramErr1("skiplock", "Only root may use this option.")
	}
	if ct, _ := s.loadConfig(c.node, vmid); ct != nil {
		s.mu.Lock()
		running := ct.isRunning()
		s.mu.Unlock()
		if running {
			return nil, die("CT %s already running", vmid)
		}
	}
	node, skiplock := c.node, c.p.get("skiplock") == "1"
	return s.startWorker(c.node, "vzstart", vmid, c.who, func(w *worker) error {
		ct, err := s.loadConfig(node, vmid)
		if err != nil {
			return err
		}
		ct.op.Lock()
		defer ct.op.Unlock()
		s.mu.Lock()
		conf := ct.conf
		s.mu.Unlock()
		if conf["template"] == "1" {
			return errors.New("you can't start a CT if it's a template")
		}
		if l := conf["lock"]; l != "" && !skiplock {
			return fmt.Errorf("CT is locked (%s)", l)
		}
		return s.startCT(w, ct)
	}), nil
}

// startCT is PVE::LXC::vm_start.
func (s *Server) startCT(w *worker, ct *container) error {
	if err := w.injected(); err != nil {
		return err
	}
	conf, l, running := ct.state(s)
	if running {
		return nil
	}
	// update_lxc_config reads each NIC's bridge MTU.
	if err := s.checkBridges(conf); err != nil {
		return err
	}
	// The prestart hook mounts the mount points; when it fails, vm_start
	// prints the container's stderr log and dies (LXC.pm L3112-3123
	// monitor_start). The hook's own message is in that log only with
	// debug (LXC logs a hook's output at debug level: "Script exec ...
	// produced output: ..."); the simulator prints it always.
	rootfs := ""
	if l != nil {
		rootfs = l.Rootfs
	}
	mounts, err := s.mountList(ct.node, conf)
	if err == nil {
		err = mountBinds(rootfs, mounts, false, pvelxc.MapBase, pvelxc.MapBase)
	}
	if err != nil {
		w.printf("%s\n", err)
		return fmt.Errorf("startup for container '%d' failed", ct.vmid)
	}
	if l != nil {
		if err := s.rewriteLXCConfig(ct.node, l, conf); err != nil {
			return fmt.Errorf("unable to write lxc config - %v", err)
		}
		if err := l.Start(); err != nil {
			return fmt.Errorf("startup for container '%d' failed", ct.vmid)
		}
		if err := waitStarted(w, l); err != nil {
			printStderrLog(w, l)
			return fmt.Errorf("startup for container '%d' failed", ct.vmid)
		}
		if l.Running() {
			s.hostManagedDHCP(w, l, conf)
		}
	}
	s.mu.Lock()
	ct.running, ct.started = true, time.Now()
	s.mu.Unlock()
	return nil
}

// reStderrLine is print_ct_stderr_log's pattern (LXC.pm L3069): LXC's
// "lxc-start: <vmid>: <file>: " prefix goes.
var reStderrLine = regexp.MustCompile(`^[ \t]*(?:lxc-start:?\s+\d+:?\s*\S+\s*)?(.*?)[ \t]*$`)

// printStderrLog is print_ct_stderr_log: after a failed start, vm_start
// prints what lxc-start wrote to its stderr (/run/pve/ct-<vmid>.stderr;
// here lxc-start.out) into the task log.
func printStderrLog(w *worker, l *pvelxc.Container) {
	b, _ := os.ReadFile(filepath.Join(l.Dir, l.Name, "lxc-start.out"))
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if line != "" {
			w.printf("%s\n", reStderrLine.FindStringSubmatch(line)[1])
		}
	}
}

// waitStarted waits until LXC reports the container running, or the
// container has run and ended already (an init that exits at once), as
// systemctl start pve-container@ does.
func waitStarted(w *worker, l *pvelxc.Container) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("lxc-info", "-n", l.Name, "-P", l.Dir, "-s", "-H").Output()
		if strings.TrimSpace(string(out)) == "RUNNING" {
			return nil
		}
		select {
		case <-l.Done():
			b, _ := os.ReadFile(l.Log)
			if strings.Contains(string(b), "ended on error") || strings.Contains(string(b), "Container \""+l.Name+"\" is running") || l.Console() != "" {
				return nil
			}
			return errors.New("container did not start")
		case <-w.ctx.Done():
			return errors.New("received interrupt")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return errors.New("timeout")
}

func (s *Server) requireRunning(c *call) (*container, error) {
	vmid := c.p.get("vmid")
	ct, _ := s.loadConfig(c.node, vmid)
	if ct == nil {
		return nil, die("CT %s not running", vmid)
	}
	s.mu.Lock()
	running := ct.isRunning()
	s.mu.Unlock()
	if !running {
		return nil, die("CT %s not running", vmid)
	}
	return ct, nil
}

// lxcStop is vm_stop with kill: lxc-stop --kill.
func (s *Server) lxcStop(c *call) (any, error) {
	if c.p.get("skiplock") == "1" && !c.who.isRoot() {
		return nil, paramErr1("skiplock", "Only root may use this option.")
	}
	ct, err := s.requireRunning(c)
	if err != nil {
		return nil, err
	}
	return s.startWorker(c.node, "vzstop", c.p.get("vmid"), c.who, func(w *worker) error {
		ct.op.Lock()
		defer ct.op.Unlock()
		if err := w.injected(); err != nil {
			return err
		}
		return s.stopCT(w.ctx, ct, true, 0, false)
	}), nil
}

// lxcShutdown is vm_stop without kill: the halt signal, then, after
// timeout, a kill with forceStop or else "container did not stop".
func (s *Server) lxcShutdown(c *call) (any, error) {
	ct, err := s.requireRunning(c)
	if err != nil {
		return nil, err
	}
	timeout := 60
	if v := c.p.get("timeout"); v != "" {
		timeout, _ = strconv.Atoi(v)
	}
	force := c.p.get("forceStop") == "1"
	vmid := c.p.get("vmid")
	return s.startWorker(c.node, "vzshutdown", vmid, c.who, func(w *worker) error {
		ct.op.Lock()
		defer ct.op.Unlock()
		if err := w.injected(); err != nil {
			return err
		}
		if err := s.stopCT(w.ctx, ct, false, timeout, force); err != nil {
			if w.ctx.Err() != nil {
				return err
			}
			w.warn("command 'lxc-stop -n %s --nokill --timeout %d' failed: exit code 1", vmid, timeout)
			return errors.New("container did not stop")
		}
		return nil
	}), nil
}

// stopCT is PVE::LXC::vm_stop: lxc-stop --kill, or the halt signal and a
// wait of timeout seconds (then a kill with force). A cancelled ctx (task
// stopped, simulator closed) kills at once.
func (s *Server) stopCT(ctx context.Context, ct *container, kill bool, timeout int, force bool) error {
	s.mu.Lock()
	l := ct.lxc
	s.mu.Unlock()
	if l != nil {
		if kill {
			if err := l.Kill(); err != nil {
				return err
			}
		} else {
			done := make(chan error, 1)
			go func() { done <- l.Shutdown(time.Duration(timeout) * time.Second) }()
			var err error
			select {
			case err = <-done:
			case <-ctx.Done():
				l.Kill()
				<-done
				return errors.New("received interrupt")
			}
			if err != nil {
				if !force {
					return err
				}
				if err := l.Kill(); err != nil {
					return err
				}
			}
		}
	}
	s.mu.Lock()
	ct.running = false
	s.mu.Unlock()
	return nil
}

// lxcDestroy is destroy_vm.
func (s *Server) lxcDestroy(c *call) (any, error) {
	vmid := c.p.get("vmid")
	ct, err := s.loadConfig(c.node, vmid)
	if err != nil {
		return nil, err
	}
	early := func() error {
		s.mu.Lock()
		conf := ct.conf
		s.mu.Unlock()
		if conf["protection"] == "1" {
			return fmt.Errorf("can't remove CT %s - protection mode enabled", vmid)
		}
		if l := conf["lock"]; l != "" {
			return fmt.Errorf("CT is locked (%s)", l)
		}
		return nil
	}
	if err := early(); err != nil {
		return nil, die("%s", err)
	}
	force := c.p.get("force") == "1"
	running := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return ct.isRunning()
	}
	runningMsg := fmt.Sprintf("unable to destroy CT %s - container is running", vmid)
	if !force && running() {
		return nil, die("%s", runningMsg)
	}
	purge := c.p.get("purge") == "1"
	return s.startWorker(c.node, "vzdestroy", vmid, c.who, func(w *worker) error {
		ct.op.Lock()
		defer ct.op.Unlock()
		if err := early(); err != nil {
			return err
		}
		if running() {
			if !force {
				return errors.New(runningMsg)
			}
			w.warn("forced to stop CT %s before destroying!", vmid)
			if err := s.stopCT(w.ctx, ct, true, 0, false); err != nil {
				return err
			}
		}
		if err := w.injected(); err != nil {
			return err
		}
		s.mu.Lock()
		d, conf := ct.disk, ct.conf
		s.mu.Unlock()
		s.freeOwnedVolumes(w, ct.node, ct.vmid, conf)
		if d != nil && d.path == "" {
			w.printf("  Logical volume \"%s\" successfully removed.\n", strings.TrimPrefix(d.volid, d.storage+":"))
		}
		s.destroyCT(ct)
		if purge {
			w.printf("purging CT %s from related configurations..\n", vmid)
		}
		return nil
	}), nil
}

// lxcInterfaces is GET /nodes/{node}/lxc/{vmid}/interfaces (API2/LXC.pm
// L2982, needing VM.Audit) with PVE::LXC::get_interfaces (LXC.pm L1262):
// `ip --json a` in the container's network namespace, null when the
// container does not run (find_lxc_pid fails; the config is not read, so
// an unknown container is null as well). Without RealLXC there is no
// namespace: the answer is made from the config (configInterfaces).
func (s *Server) lxcInterfaces(c *call) (any, error) {
	n, _ := strconv.Atoi(c.p.get("vmid"))
	s.mu.Lock()
	ct := s.cts[n]
	s.mu.Unlock()
	if ct == nil || ct.node != c.node {
		return nil, nil
	}
	conf, l, running := ct.state(s)
	if !running {
		return nil, nil
	}
	if l == nil {
		return configInterfaces(conf), nil
	}
	pid, err := l.PID()
	if err != nil {
		return nil, nil
	}
	cmd := []string{"nsenter", "-t", strconv.Itoa(pid), "--net", "--", "ip", "--json", "a"}
	out, err := exec.Command(cmd[0], cmd[1:]...).Output()
	if err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return nil, die("command '%s' failed: exit code %d", strings.Join(cmd, " "), code)
	}
	var links []struct {
		Ifname   string `json:"ifname"`
		Address  string `json:"address"`
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, die("malformed JSON string: %v", err)
	}
	res := []map[string]any{}
	for _, link := range links {
		obj := map[string]any{"name": link.Ifname}
		addrs := []map[string]any{}
		for _, a := range link.AddrInfo {
			// inet and inet6 keep the last address of their family.
			obj[a.Family] = fmt.Sprintf("%s/%d", a.Local, a.Prefixlen)
			addrs = append(addrs, map[string]any{"ip-address-type": a.Family, "ip-address": a.Local, "prefix": a.Prefixlen})
		}
		obj["ip-addresses"] = addrs
		obj["hardware-address"], obj["hwaddr"] = link.Address, link.Address
		res = append(res, obj)
	}
	return res, nil
}

// configInterfaces is get_interfaces' answer made from the config, for
// containers that do not really run: lo, then each NIC (by number) under
// its name with its MAC and its static addresses (ip, ip6 other than
// dhcp, auto and manual), none when link_down. A real container has an
// IPv6 link-local address as well, and the addresses only when something
// sets them (host-managed, or the distribution's network setup).
func configInterfaces(conf map[string]string) []map[string]any {
	iface := func(name, mac string, cidrs ...string) map[string]any {
		obj := map[string]any{"name": name, "hwaddr": mac, "hardware-address": mac}
		addrs := []map[string]any{}
		for _, cidr := range cidrs {
			ip, prefix, _ := strings.Cut(cidr, "/")
			family := "inet"
			if strings.Contains(ip, ":") {
				family = "inet6"
			}
			n, _ := strconv.Atoi(prefix)
			obj[family] = cidr
			addrs = append(addrs, map[string]any{"ip-address-type": family, "ip-address": ip, "prefix": n})
		}
		obj["ip-addresses"] = addrs
		return obj
	}
	res := []map[string]any{iface("lo", "00:00:00:00:00:00", "127.0.0.1/8", "::1/128")}
	for i := 0; i < indexedMax["net"]; i++ {
		v, ok := conf[fmt.Sprintf("net%d", i)]
		if !ok {
			continue
		}
		pairs, _ := parsePropString(v, "", netKeys)
		m := propMap(pairs)
		var cidrs []string
		for _, k := range []string{"ip", "ip6"} {
			if a := m[k]; a != "" && a != "dhcp" && a != "manual" && a != "auto" && m["link_down"] != "1" {
				cidrs = append(cidrs, a)
			}
		}
		res = append(res, iface(m["name"], strings.ToLower(m["hwaddr"]), cidrs...))
	}
	return res
}
