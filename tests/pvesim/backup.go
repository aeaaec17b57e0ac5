package pvesim

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/adler32"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// vzdump archives of containers (L§3): POST /nodes/{node}/vzdump (pve-manager
// PVE/API2/VZDump.pm, PVE/VZDump.pm exec_backup_task; pve-container
// src/PVE/VZDump/LXC.pm assemble and archive), the backup content of a
// storage, and GET /nodes/{node}/vzdump/extractconfig.

// reBackupName is a vzdump archive's file name (pve-storage Storage.pm
// L120, Plugin.pm parse_volname for backup/): owner VMID and time in it.
var reBackupName = regexp.MustCompile(`^vzdump-(lxc|qemu|openvz)-(\d+)-(\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2})\.(tgz|tar(?:\.(?:gz|lzo|zst|bz2))?)$`)

// backupDir is a storage's dump directory on node.
func (s *Server) backupDir(node, storage string) string {
	return filepath.Join(s.StoragePath(node, storage), "dump")
}

// backupVolume is a parsed backup volid.
type backupVolume struct {
	storage *storageCfg
	name    string
	owner   int
	path    string
}

// parseBackupVolid parses <storage>:backup/<file> on node; nil when the
// volid names no backup.
func (s *Server) parseBackupVolid(node, volid string) *backupVolume {
	sid, name, ok := parseVolumeID(volid)
	if !ok {
		return nil
	}
	file, ok := strings.CutPrefix(name, "backup/")
	st := s.storage(sid)
	m := reBackupName.FindStringSubmatch(file)
	if !ok || st == nil || !st.fileBased || m == nil {
		return nil
	}
	owner, _ := strconv.Atoi(m[2])
	return &backupVolume{storage: st, name: file, owner: owner, path: filepath.Join(s.backupDir(node, st.id), file)}
}

// checkBackupAccess is check_volume_access for a backup (Storage.pm L619):
// the content type must be backup, and the user needs Datastore.Allocate,
// or Datastore.AllocateSpace with VM.Backup on the owner.
func (s *Server) checkBackupAccess(c *call, volid string) (*backupVolume, *apiError) {
	b := s.parseBackupVolid(c.node, volid)
	if b == nil {
		if _, err := s.parseVolname(volid); err == nil {
			return nil, die("unable to use volume %s - content type needs to be 'backup'", volid)
		}
		return nil, die("unable to parse volume ID '%s'", volid)
	}
	if !c.who.has("Datastore.Allocate") {
		if err := c.who.check("/storage/"+b.storage.id, "Datastore.AllocateSpace"); err != nil {
			return nil, err
		}
		if err := c.who.check(fmt.Sprintf("/vms/%d", b.owner), "VM.Backup"); err != nil {
			return nil, err
		}
	}
	return b, nil
}

var vzdumpSchema = schema{
	"node": nodeParam(), "vmid": str(), "storage": str().fmtd(fmtStorageID),
	"mode": str().oneOf("snapshot", "suspend", "stop"), "compress": str().oneOf("0", "1", "gzip", "lzo", "zstd"),
	"notes-template": str().length(0, 1024).needs("storage"), "protected": boolean().needs("storage"),
	"remove": boolean(), "stdexcludes": boolean(), "exclude-path": str(), "bwlimit": integer().between("0", ""),
	"zstd": integer().between("0", ""), "lockwait": integer().between("0", ""), "stopwait": integer().between("0", ""),
	"all": boolean(), "quiet": boolean(), "pool": str(),
}

// vzdump is POST /nodes/{node}/vzdump for one container: "OK" (not a
// UPID) when it is not on the node (VZDump.pm L97-118), else a vzdump
// worker whose id is the VMID. The archive is written as <name>.dat and
// renamed when done; the log names it ("creating vzdump archive ...").
func (s *Server) vzdump(c *call) (any, error) {
	if c.p.get("all") == "1" || c.p.get("pool") != "" || strings.ContainsAny(c.p.get("vmid"), ", ;") {
		return nil, die("pvesim: vzdump of more than one guest is not simulated")
	}
	vmid, err := strconv.Atoi(c.p.get("vmid"))
	if err != nil {
		return nil, paramErr1("vmid", "value does not look like a valid VM ID")
	}
	sid := c.p.get("storage")
	if sid == "" {
		sid = "local" // vzdump.conf's default
	}
	st, aerr := s.storageConfig(sid)
	if aerr != nil {
		return nil, aerr
	}
	if !st.content["backup"] {
		return nil, paramErr1("storage", fmt.Sprintf("storage '%s' does not support backups", sid))
	}
	if err := c.who.check("/storage/"+sid, "Datastore.AllocateSpace"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	ct := s.cts[vmid]
	s.mu.Unlock()
	if ct == nil || ct.node != c.node {
		return "OK", nil
	}
	if err := c.who.check(fmt.Sprintf("/vms/%d", vmid), "VM.Backup"); err != nil {
		return nil, err
	}
	mode := c.p.get("mode")
	if mode == "" {
		mode = "snapshot"
	}
	compress, notes := c.p.get("compress"), c.p.get("notes-template")
	node := c.node
	cmdline := "vzdump " + strconv.Itoa(vmid)
	for _, k := range []string{"compress", "mode", "notes-template", "storage"} {
		if v := c.p.get(k); v != "" {
			cmdline += " --" + k + " '" + v + "'"
		}
	}
	return s.startWorker(node, "vzdump", strconv.Itoa(vmid), c.who, func(w *worker) error {
		w.printf("INFO: starting new backup job: %s\n", cmdline)
		w.printf("INFO: Starting Backup of VM %d (lxc)\n", vmid)
		if err := s.backupCT(w, ct, st, mode, compress, notes); err != nil {
			w.printf("ERROR: Backup of VM %d failed - %v\n", vmid, err)
			w.printf("INFO: Failed at %s\n", time.Now().Format(time.ANSIC))
			return fmt.Errorf("job errors")
		}
		w.printf("INFO: Backup job finished successfully\n")
		return nil
	}), nil
}

// backupCT archives one container: lock "backup" on it meanwhile;
// pct.conf (the config without lock, snapshots, parent, pending) and an
// empty pct.fw first, then the root file system and each volume mount
// point with backup=1 under its path, as tar, for an unprivileged
// container under lxc-usernsexec, so that its ids are the container's.
// Modes (PM VZDump.pm exec_backup_task L1078-1090, PC VZDump/LXC.pm
// prepare): a stopped container always in stop mode; a running one in stop
// mode is shut down and started again; snapshot mode needs every included
// volume on a storage with snapshots (lvmthin here), else "mode failure -
// some volumes do not support snapshots" and suspend mode. Departure: in
// snapshot and suspend mode the running container is frozen while its
// files are archived (lxc-freeze), where Proxmox archives a storage
// snapshot, or an rsync copy made while it runs and finished frozen; what
// is archived is the same.
func (s *Server) backupCT(w *worker, ct *container, st *storageCfg, mode, compress, notes string) error {
	ct.op.Lock()
	defer ct.op.Unlock()
	s.mu.Lock()
	if l := ct.conf["lock"]; l != "" {
		s.mu.Unlock()
		return fmt.Errorf("CT is locked (%s)", l)
	}
	conf := map[string]string{}
	for k, v := range ct.conf {
		conf[k] = v
	}
	ct.conf["lock"] = "backup"
	running := ct.isRunning()
	l := ct.lxc
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(ct.conf, "lock")
		s.mu.Unlock()
	}()
	if err := w.injected(); err != nil {
		return err
	}
	start := time.Now()
	w.printf("INFO: Backup started at %s\n", start.Format("2006-01-02 15:04:05"))
	w.printf("INFO: status = %s\n", map[bool]string{true: "running", false: "stopped"}[running])
	// The volumes archived besides the root file system
	// (mountpoint_backup_enabled, Config.pm L66): volume mount points with
	// backup=1.
	var vols []archivedVolume
	var storages []string
	if ct.disk != nil {
		storages = append(storages, ct.disk.storage)
	}
	w.printf("INFO: CT Name: %s\n", conf["hostname"])
	w.printf("INFO: including mount point rootfs ('/') in backup\n")
	for _, k := range volumeKeys(conf) {
		if !strings.HasPrefix(k, "mp") {
			continue
		}
		mp := parseVolume(k, conf[k])
		switch {
		case mp.typ != "volume":
			w.printf("INFO: excluding %s mount point %s ('%s') from backup (not a volume)\n", mp.typ, k, mp.m["mp"])
		case mp.m["backup"] == "1":
			w.printf("INFO: including mount point %s ('%s') in backup\n", k, mp.m["mp"])
			v := s.volume(ct.node, mp.m["volume"])
			if v == nil {
				return fmt.Errorf("volume '%s' does not exist", mp.m["volume"])
			}
			vols = append(vols, archivedVolume{path: containerPath(mp.m["mp"]), dir: v.dir})
			storages = append(storages, v.storage)
		default:
			w.printf("INFO: excluding volume mount point %s ('%s') from backup (disabled)\n", k, mp.m["mp"])
		}
	}
	freeze := false
	switch {
	case !running:
		mode = "stop"
	case mode == "stop":
		w.printf("INFO: stopping virtual guest\n")
		if err := s.stopCT(w.ctx, ct, false, 60, true); err != nil {
			return err
		}
	case mode == "snapshot" && !s.snapshotable(storages):
		w.printf("INFO: mode failure - some volumes do not support snapshots\n")
		w.printf("INFO: trying 'suspend' mode instead\n")
		mode = "suspend"
		fallthrough
	default:
		freeze = true
	}
	w.printf("INFO: backup mode: %s\n", mode)
	if freeze && l != nil {
		w.printf("INFO: suspending guest\n")
		if out, err := exec.Command("lxc-freeze", "-n", l.Name, "-P", l.Dir).CombinedOutput(); err != nil {
			w.printf("INFO: pvesim: the container was not frozen (%v: %s); archiving it running\n", err, strings.TrimSpace(string(out)))
		} else {
			defer func() {
				exec.Command("lxc-unfreeze", "-n", l.Name, "-P", l.Dir).Run()
				w.printf("INFO: resuming guest\n")
			}()
		}
	}
	delete(conf, "lock")
	delete(conf, "snapshots")
	delete(conf, "parent")
	delete(conf, "pending")

	dir := s.backupDir(ct.node, st.id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// compressor_info (PM VZDump.pm L840): compress=1 is lzo.
	ext := map[string]string{"zstd": ".tar.zst", "gzip": ".tar.gz", "1": ".tar.lzo", "lzo": ".tar.lzo"}[compress]
	if ext == "" {
		ext = ".tar"
	}
	base := fmt.Sprintf("vzdump-lxc-%d-%s", ct.vmid, start.Format("2006_01_02-15_04_05"))
	target := filepath.Join(dir, base+ext)
	tmp := filepath.Join(dir, base+".dat")
	os.Remove(tmp)
	w.printf("INFO: creating vzdump archive '%s'\n", target)
	if err := s.writeArchive(w, ct, l, conf, vols, tmp, ext); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, target); err != nil {
		return fmt.Errorf("unable to rename '%s' to '%s'", tmp, target)
	}
	fi, _ := os.Stat(target)
	w.printf("INFO: archive file size: %s\n", formatSize(fi.Size()))
	if notes != "" {
		w.printf("INFO: adding notes to backup\n")
		text := generateNotes(notes, ct.vmid, conf["hostname"], ct.node)
		if err := os.WriteFile(target+".notes", []byte(text), 0o644); err != nil {
			w.printf("WARN: unable to add notes - %v\n", err)
		}
	}
	if running && mode == "stop" {
		w.printf("INFO: restarting vm\n")
		if err := s.startCT(w, ct); err != nil {
			return err
		}
	}
	w.printf("INFO: Finished Backup of VM %d (%s)\n", ct.vmid, time.Since(start).Round(time.Second))
	w.printf("INFO: Backup finished at %s\n", time.Now().Format("2006-01-02 15:04:05"))
	return nil
}

// generateNotes is VZDump.pm $generate_notes: {{cluster}}, {{guestname}},
// {{node}} and {{vmid}}, and the escapes \\ and \n.
func generateNotes(tmpl string, vmid int, guest, node string) string {
	r := strings.NewReplacer(`\\`, `\`, `\n`, "\n", "{{cluster}}", "pvesim", "{{guestname}}", guest, "{{node}}", node, "{{vmid}}", strconv.Itoa(vmid))
	return r.Replace(tmpl)
}

// writeArchive writes the archive: ./etc/vzdump/pct.conf and pct.fw, then
// the root file system (a real container's, read as its root by tar under
// lxc-usernsexec; without RealLXC only "./").
func (s *Server) writeArchive(w *worker, ct *container, l *pvelxc.Container, conf map[string]string, vols []archivedVolume, path, ext string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var out io.WriteCloser = nopCloser{f}
	switch ext {
	case ".tar.zst":
		zw, err := zstd.NewWriter(f)
		if err != nil {
			return err
		}
		out = zw
	case ".tar.gz":
		out = gzip.NewWriter(f)
	case ".tar.lzo":
		out = newLzopWriter(f, time.Now())
	}
	pct := writePCTConf(conf)
	if l == nil {
		tw := tar.NewWriter(out)
		now := time.Now()
		for _, h := range []*tar.Header{
			{Name: "./etc/vzdump/pct.conf", Mode: 0o644, Size: int64(len(pct)), Typeflag: tar.TypeReg, ModTime: now},
			{Name: "./etc/vzdump/pct.fw", Mode: 0o644, Typeflag: tar.TypeReg, ModTime: now},
			{Name: "./", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: now},
		} {
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if h.Name == "./etc/vzdump/pct.conf" {
				tw.Write([]byte(pct))
			}
		}
		if err := tw.Close(); err != nil {
			return err
		}
		return out.Close()
	}
	// assemble: pct.conf and pct.fw in a temporary directory the
	// container's root can read (vzdump uses <dumpdir>/vzdumptmp...).
	stage := filepath.Join(l.Dir, l.Name, "vzdumptmp")
	os.RemoveAll(stage)
	defer os.RemoveAll(stage)
	for _, d := range []string{stage, stage + "/etc", stage + "/etc/vzdump"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
		os.Chown(d, pvelxc.MapBase, pvelxc.MapBase)
	}
	for name, content := range map[string]string{"pct.conf": pct, "pct.fw": ""} {
		p := filepath.Join(stage, "etc", "vzdump", name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
		os.Chown(p, pvelxc.MapBase, pvelxc.MapBase)
	}
	args := []string{"-m", fmt.Sprintf("u:0:%d:%d", pvelxc.MapBase, pvelxc.MapSize), "-m", fmt.Sprintf("g:0:%d:%d", pvelxc.MapBase, pvelxc.MapSize), "--",
		"tar", "cpf", "-", "--totals", "--one-file-system", "-p", "--sparse", "--numeric-owner", "--acls", "--xattrs",
		"--xattrs-include=user.*", "--xattrs-include=security.capability", "--warning=no-file-ignored", "--warning=no-xattr-write",
		"--one-file-system", "--warning=no-file-ignored", "--directory=" + stage, "./etc/vzdump/pct.conf", "./etc/vzdump/pct.fw",
		"--directory=" + l.Rootfs, "--no-anchored", "--exclude=lost+found", "--anchored",
		"--exclude=./tmp/?*", "--exclude=./var/tmp/?*", "--exclude=./var/run/?*.pid", "./"}
	// Each volume after the root file system, under its path, as vzdump
	// archives "./<mp>" of the mounted tree (VZDump/LXC.pm archive):
	// tar reads the volume's directory, and its members are renamed to
	// the mount point's path (symlink targets left as they are).
	for _, v := range vols {
		searchable(v.dir)
		base := filepath.Base(v.dir)
		repl := strings.NewReplacer(`\`, `\\`, `&`, `\&`, `,`, `\,`).Replace("./" + v.path)
		args = append(args, "--transform=s,^\\./"+regexp.QuoteMeta(base)+","+repl+",S", "--directory="+filepath.Dir(v.dir), "./"+base)
	}
	cmd := exec.Command("lxc-usernsexec", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("command 'tar cpf - ...' failed: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line != "" {
			w.printf("INFO: %s\n", line)
		}
	}
	return out.Close()
}

// archivedVolume is a volume vzdump archives: its directory (the
// simulator's stand-in for its file system) and its path in the container,
// relative.
type archivedVolume struct {
	path string
	dir  string
}

// snapshotable reports whether every storage can snapshot a container's
// volume (pve-storage volume_has_feature 'snapshot'; L§5): of the
// simulator's storages, lvmthin only.
func (s *Server) snapshotable(storages []string) bool {
	for _, id := range storages {
		if st := s.storage(id); st == nil || st.typ != "lvmthin" {
			return false
		}
	}
	return len(storages) > 0
}

// searchable makes dir's parents searchable by others, so that the
// container's root (uid MapBase on the host) reaches it, as pvelxc does
// for a container's own directories.
func searchable(dir string) {
	for d := filepath.Dir(dir); d != "/" && d != "."; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(d, fi.Mode().Perm()|0o011)
		}
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// writePCTConf is pve-container Config.pm write_pct_config for the current
// config: the description as '#' lines, each encoded (PVE::ParseUtils
// encode_text: control and non-ASCII characters, '%' and ':'), the keys
// sorted, env as one lxc.environment.runtime line per variable.
func writePCTConf(conf map[string]string) string {
	var b strings.Builder
	if d := conf["description"]; d != "" {
		for _, line := range strings.Split(d, "\n") {
			b.WriteString("#" + encodeText(line) + "\n")
		}
	}
	keys := make([]string, 0, len(conf))
	for k := range conf {
		switch k {
		case "digest", "description", "pending", "snapshots", "snapname", "env", "lxc":
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, conf[k])
	}
	if env := conf["env"]; env != "" {
		for _, v := range strings.Split(env, "\x00") {
			if v != "" {
				fmt.Fprintf(&b, "lxc.environment.runtime: %s\n", v)
			}
		}
	}
	return b.String()
}

func encodeText(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 0x20 && c <= 0x24 || c >= 0x26 && c <= 0x39 || c >= 0x3b && c <= 0x7e {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func decodeText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			n, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b.WriteByte(byte(n))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parsePCTConf is parse_pct_config for the current config (up to the
// first [section]): the description, keys, env from
// lxc.environment.runtime, other lxc.* keys kept under "lxc" as lines.
func parsePCTConf(raw string) map[string]string {
	conf := map[string]string{}
	var desc, env, lxc []string
	sc := bufio.NewScanner(strings.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "[") {
			break
		}
		if t, ok := strings.CutPrefix(line, "#"); ok {
			desc = append(desc, decodeText(t))
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch {
		case k == "lxc.environment.runtime":
			env = append(env, v)
		case strings.HasPrefix(k, "lxc."):
			lxc = append(lxc, k+": "+v)
		default:
			conf[k] = v
		}
	}
	if len(desc) > 0 {
		conf["description"] = strings.Join(desc, "\n")
	}
	if len(env) > 0 {
		conf["env"] = strings.Join(env, "\x00")
	}
	if len(lxc) > 0 {
		conf["lxc"] = strings.Join(lxc, "\n")
	}
	return conf
}

// archiveConfig reads ./etc/vzdump/pct.conf from an archive, as
// extract_vzdump_config_tar does (Storage.pm L1858: a member ending in
// ./etc/vzdump/pct.conf).
func archiveConfig(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("unable to open file '%s' - %v", path, err)
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return "", err
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".gz"), strings.HasSuffix(path, ".tgz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return "", err
		}
		r = gr
	case strings.HasSuffix(path, ".lzo"):
		lr, err := newLzopReader(f)
		if err != nil {
			return "", err
		}
		r = lr
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", errors.New("ERROR: archive contains no configuration file")
		}
		if err != nil {
			return "", fmt.Errorf("reading archive '%s': %v", path, err)
		}
		if strings.HasSuffix(h.Name, "./etc/vzdump/pct.conf") {
			b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			return string(b), err
		}
	}
}

var extractConfigSchema = schema{"node": nodeParam(), "volume": str().req()}

// extractConfig is GET /nodes/{node}/vzdump/extractconfig (VZDump.pm
// L270): the archived pct.conf, as text.
func (s *Server) extractConfig(c *call) (any, error) {
	b, err := s.checkBackupAccess(c, c.p.get("volume"))
	if err != nil {
		return nil, err
	}
	raw, rerr := archiveConfig(b.path)
	if rerr != nil {
		return nil, die("%v", rerr)
	}
	return raw, nil
}

// backupItems are a storage's archives in the content list
// (Plugin.pm list_volumes for backup, archive_info): volid, format,
// size, ctime from the name, subtype, owner vmid, the first line of the
// notes, protected.
func (s *Server) backupItems(node string, st *storageCfg, vmid int) []map[string]any {
	dir := s.backupDir(node, st.id)
	ents, _ := os.ReadDir(dir)
	var out []map[string]any
	for _, e := range ents {
		m := reBackupName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		owner, _ := strconv.Atoi(m[2])
		if vmid != 0 && owner != vmid {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		t, _ := time.ParseInLocation("2006_01_02-15_04_05", m[3], time.Local)
		item := map[string]any{"volid": st.id + ":backup/" + e.Name(), "content": "backup", "format": strings.TrimPrefix(m[4], "."),
			"size": fi.Size(), "ctime": t.Unix(), "subtype": m[1], "vmid": owner}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name()+".notes")); err == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			item["notes"] = first
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name()+".protected")); err == nil {
			item["protected"] = 1
		}
		out = append(out, item)
	}
	return out
}

// deleteBackup removes an archive with its notes and log (Plugin.pm
// free_image for backups; Content.pm delete), as an imgdel worker.
func (s *Server) deleteBackup(c *call, b *backupVolume, volid string) (any, error) {
	if err := c.who.check("/storage/"+b.storage.id, "Datastore.Allocate"); err != nil {
		if c.who.check("/storage/"+b.storage.id, "Datastore.AllocateSpace") != nil || c.who.check(fmt.Sprintf("/vms/%d", b.owner), "VM.Backup") != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(b.path + ".protected"); err == nil {
		return nil, die("cannot remove protected archive '%s'", b.path)
	}
	return s.startWorker(c.node, "imgdel", b.storage.id, c.who, func(w *worker) error {
		if err := w.injected(); err != nil {
			return err
		}
		if err := os.Remove(b.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("unlink '%s' failed - %v", b.path, err)
		}
		base := strings.TrimSuffix(strings.TrimSuffix(b.path, filepath.Ext(b.path)), ".tar")
		os.Remove(b.path + ".notes")
		os.Remove(base + ".log")
		w.printf("Removed volume '%s'\n", volid)
		return nil
	}), nil
}

// lzop files, as vzdump --compress lzo writes them (lzop 1.04's format):
// a header, then blocks of at most 256 KiB, each with its uncompressed
// length, its stored length and the Adler-32 of its data. lzop keeps a
// block uncompressed when LZO would not make it smaller (stored length =
// length), and so does every block here: the simulator has no LZO encoder,
// and lzop -d reads such a file as any other.
var lzopMagic = []byte{0x89, 'L', 'Z', 'O', 0x00, '\r', '\n', 0x1a, '\n'}

const (
	lzopBlock     = 256 << 10
	lzopAdler32D  = 0x00000001 // F_ADLER32_D: an Adler-32 of each block's data
	lzopOSUnix    = 0x03000000 // F_OS_UNIX
	lzopMethod1X1 = 1          // M_LZO1X_1
)

type lzopWriter struct {
	w      io.Writer
	buf    []byte
	mtime  time.Time
	header bool
	err    error
}

func newLzopWriter(w io.Writer, mtime time.Time) *lzopWriter {
	return &lzopWriter{w: w, mtime: mtime}
}

func (z *lzopWriter) writeHeader() {
	var h bytes.Buffer
	be := func(v any) { binary.Write(&h, binary.BigEndian, v) }
	be(uint16(0x1040)) // version
	be(uint16(0x2080)) // LZO library version
	be(uint16(0x0940)) // version needed to extract
	be(uint8(lzopMethod1X1))
	be(uint8(5)) // level
	be(uint32(lzopAdler32D | lzopOSUnix))
	be(uint32(0o100644))
	be(uint32(z.mtime.Unix()))
	be(uint32(uint64(z.mtime.Unix()) >> 32))
	be(uint8(0)) // no file name
	sum := adler32.Checksum(h.Bytes())
	be(sum)
	_, z.err = z.w.Write(append(append([]byte{}, lzopMagic...), h.Bytes()...))
	z.header = true
}

func (z *lzopWriter) Write(p []byte) (int, error) {
	if !z.header {
		z.writeHeader()
	}
	n := len(p)
	for len(p) > 0 && z.err == nil {
		k := min(len(p), lzopBlock-len(z.buf))
		z.buf = append(z.buf, p[:k]...)
		p = p[k:]
		if len(z.buf) == lzopBlock {
			z.flush()
		}
	}
	return n, z.err
}

func (z *lzopWriter) flush() {
	if len(z.buf) == 0 || z.err != nil {
		return
	}
	var h [12]byte
	binary.BigEndian.PutUint32(h[0:], uint32(len(z.buf)))
	binary.BigEndian.PutUint32(h[4:], uint32(len(z.buf)))
	binary.BigEndian.PutUint32(h[8:], adler32.Checksum(z.buf))
	if _, z.err = z.w.Write(h[:]); z.err == nil {
		_, z.err = z.w.Write(z.buf)
	}
	z.buf = z.buf[:0]
}

func (z *lzopWriter) Close() error {
	if !z.header {
		z.writeHeader()
	}
	z.flush()
	if z.err == nil {
		_, z.err = z.w.Write([]byte{0, 0, 0, 0})
	}
	return z.err
}

// lzopReader reads what lzopWriter writes: stored blocks only.
type lzopReader struct {
	r    *bufio.Reader
	buf  []byte
	done bool
}

func newLzopReader(r io.Reader) (*lzopReader, error) {
	br := bufio.NewReader(r)
	head := make([]byte, len(lzopMagic)+2+2+2+1+1+4+4+4+4+1)
	if _, err := io.ReadFull(br, head); err != nil || !bytes.Equal(head[:len(lzopMagic)], lzopMagic) {
		return nil, errors.New("not an lzop file")
	}
	nameLen := int(head[len(head)-1])
	if _, err := io.ReadFull(br, make([]byte, nameLen+4)); err != nil {
		return nil, err
	}
	return &lzopReader{r: br}, nil
}

func (z *lzopReader) Read(p []byte) (int, error) {
	for len(z.buf) == 0 {
		if z.done {
			return 0, io.EOF
		}
		var n [4]byte
		if _, err := io.ReadFull(z.r, n[:]); err != nil {
			return 0, io.ErrUnexpectedEOF
		}
		dst := binary.BigEndian.Uint32(n[:])
		if dst == 0 {
			z.done = true
			continue
		}
		var rest [8]byte
		if _, err := io.ReadFull(z.r, rest[:]); err != nil {
			return 0, io.ErrUnexpectedEOF
		}
		if src := binary.BigEndian.Uint32(rest[:4]); src != dst || dst > 64<<20 {
			return 0, errors.New("pvesim: compressed LZO blocks are not decoded (the simulator writes stored blocks only)")
		}
		z.buf = make([]byte, dst)
		if _, err := io.ReadFull(z.r, z.buf); err != nil {
			return 0, io.ErrUnexpectedEOF
		}
		if adler32.Checksum(z.buf) != binary.BigEndian.Uint32(rest[4:]) {
			return 0, errors.New("lzop: checksum error")
		}
	}
	n := copy(p, z.buf)
	z.buf = z.buf[n:]
	return n, nil
}
