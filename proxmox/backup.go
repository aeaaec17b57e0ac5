package proxmox

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// BackupRequest is a vzdump of one container (proxmox-lifecycle.md §3).
type BackupRequest struct {
	Node    string
	VMID    int
	Storage string // must take content "backup"
	// Mode is stop, suspend or snapshot; a stopped container is always
	// archived in stop mode.
	Mode string
	// Compress is zstd, gzip, lzo, or "" for none.
	Compress string
	// Notes become the archive's notes (the notes-template; {{vmid}},
	// {{guestname}}, {{node}}, {{cluster}} are filled in by Proxmox).
	Notes string
}

// Backup is an archive on a backup storage.
type Backup struct {
	Volid   string `json:"volid"`
	Format  string `json:"format"`
	Size    int64  `json:"size"`
	Ctime   int64  `json:"ctime"`
	VMID    int    `json:"vmid"`
	Subtype string `json:"subtype"`
	Notes   string `json:"notes"`
}

// archiveLine is vzdump's log line naming the archive it writes, by its
// final name (pve-manager PVE/VZDump.pm exec_backup_task: "creating
// vzdump archive '<dumpdir>/<name>.tar.zst'", written as <name>.dat and
// renamed when done).
var archiveLine = regexp.MustCompile(`creating vzdump archive '([^']+)'`)

// CreateBackup runs vzdump for one container and waits for it. It returns
// the archive's volume ID, which Proxmox does not return: it is read from
// the task log, where vzdump names the file it writes.
func (c *Client) CreateBackup(ctx context.Context, r BackupRequest) (string, error) {
	a, err := c.CreateBackupArchive(ctx, r)
	return a.Volid, err
}

// BackupArchive is an archive vzdump wrote.
type BackupArchive struct {
	Volid string
	// Path is the file on the node, as vzdump's log names it: no API
	// hands out a backup's bytes (proxmox-lifecycle.md §3), so whoever
	// wants them reads this file, on the node or through a shared mount.
	Path string
	// Mode is the mode vzdump used (snapshot falls back to suspend where
	// a volume cannot be snapshotted; a stopped container is always
	// archived in stop mode), "" when the log does not say.
	Mode string
}

// modeLine is vzdump's log line saying the mode it archives in
// (pve-manager VZDump.pm, "backup mode: stop").
var modeLine = regexp.MustCompile(`backup mode: (\w+)`)

// CreateBackupArchive is CreateBackup with the archive's path on the node
// and the mode used, both from the task log.
func (c *Client) CreateBackupArchive(ctx context.Context, r BackupRequest) (BackupArchive, error) {
	body := map[string]string{"vmid": strconv.Itoa(r.VMID), "storage": r.Storage}
	if r.Mode != "" {
		body["mode"] = r.Mode
	}
	if r.Compress != "" {
		body["compress"] = r.Compress
	}
	if r.Notes != "" {
		body["notes-template"] = r.Notes
	}
	var upid string
	var a BackupArchive
	if err := c.post(ctx, fmt.Sprintf("/nodes/%s/vzdump", url.PathEscape(r.Node)), body, &upid); err != nil {
		return a, fmt.Errorf("back up CT %d to %s: %w", r.VMID, r.Storage, err)
	}
	if upid == "OK" {
		// pve-manager API2/VZDump.pm: a silent "OK" when none of the
		// guests is on the node asked.
		return a, fmt.Errorf("back up CT %d: Proxmox says it is not on node %s", r.VMID, r.Node)
	}
	if _, err := c.WaitTask(ctx, upid); err != nil {
		return a, fmt.Errorf("back up CT %d to %s: %w", r.VMID, r.Storage, err)
	}
	node, _ := taskNode(upid)
	// From here on vzdump has written an archive this does not know the
	// name of: say where to look, so that it is not left unseen.
	left := fmt.Sprintf("vzdump finished, so an archive of CT %d is probably on storage %s: list it with `pvesm list %s --vmid %d` on node %s, and remove it with `pvesm free VOLID`",
		r.VMID, r.Storage, r.Storage, r.VMID, r.Node)
	lines, err := c.taskLog(ctx, node, upid)
	if err != nil {
		return a, fmt.Errorf("back up CT %d: reading the task log for the archive's name: %w\n  %s", r.VMID, err, left)
	}
	for _, l := range lines {
		if m := modeLine.FindStringSubmatch(l); m != nil {
			a.Mode = m[1]
		}
		if m := archiveLine.FindStringSubmatch(l); m != nil && a.Path == "" {
			a.Path, a.Volid = m[1], r.Storage+":backup/"+path.Base(m[1])
		}
	}
	if a.Path == "" {
		return a, fmt.Errorf("back up CT %d: the task log does not name the archive\n  %s", r.VMID, left)
	}
	return a, nil
}

// Backups lists a storage's backups of vmid (0: of every guest).
func (c *Client) Backups(ctx context.Context, node, storage string, vmid int) ([]Backup, error) {
	p := fmt.Sprintf("/nodes/%s/storage/%s/content?content=backup", url.PathEscape(node), url.PathEscape(storage))
	if vmid > 0 {
		p += "&vmid=" + strconv.Itoa(vmid)
	}
	var out []Backup
	return out, c.get(ctx, p, &out)
}

// Restore restores a vzdump archive as container vmid and waits for the
// task: POST /nodes/{node}/lxc with restore=1 (proxmox-lifecycle.md §2).
// With force an existing, stopped container is overwritten: Proxmox makes
// the new disks, then destroys every volume the container owns (rootfs,
// mpN, unusedN), then extracts. options are create parameters that win
// over the archived config (rootfs=STORAGE:GiB, storage, net0, ...).
// Unlike CreateContainer nothing is cleaned up after a failure: the
// container may be the one that was overwritten.
func (c *Client) Restore(ctx context.Context, node string, vmid int, archive string, force bool, options map[string]string) (warnings string, err error) {
	body := map[string]string{"vmid": strconv.Itoa(vmid), "ostemplate": archive, "restore": "1"}
	if force {
		body["force"] = "1"
	}
	for k, v := range options {
		body[k] = v
	}
	var upid string
	if err := c.post(ctx, fmt.Sprintf("/nodes/%s/lxc", url.PathEscape(node)), body, &upid); err != nil {
		return "", fmt.Errorf("restore %s as CT %d: %w", archive, vmid, err)
	}
	w, err := c.WaitTask(ctx, upid)
	if err != nil {
		return "", fmt.Errorf("restore %s as CT %d: %w", archive, vmid, err)
	}
	return w, nil
}

// taskLog reads a task's whole log.
func (c *Client) taskLog(ctx context.Context, node, upid string) ([]string, error) {
	var lines []struct {
		N int    `json:"n"`
		T string `json:"t"`
	}
	if err := c.get(ctx, fmt.Sprintf("/nodes/%s/tasks/%s/log?start=0&limit=0", node, url.PathEscape(upid)), &lines); err != nil {
		return nil, err
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.T
	}
	return out, nil
}

// ArchivedConfig reads the container config a vzdump archive holds: GET
// /nodes/{node}/vzdump/extractconfig (pve-manager API2/VZDump.pm), the
// archive's ./etc/vzdump/pct.conf, parsed as pve-container's
// parse_pct_config reads it.
func (c *Client) ArchivedConfig(ctx context.Context, node, volid string) (CTConfig, error) {
	var raw string
	if err := c.get(ctx, fmt.Sprintf("/nodes/%s/vzdump/extractconfig?volume=%s", url.PathEscape(node), url.QueryEscape(volid)), &raw); err != nil {
		return nil, fmt.Errorf("read the config in %s: %w", volid, err)
	}
	return ParsePCTConfig(raw), nil
}

// ParsePCTConfig reads a container config file as pve-container writes it
// (Config.pm write_pct_config): the description as leading '#' lines,
// each URL-encoded (PVE::ParseUtils encode_text); "key: value" lines; env
// as one lxc.environment.runtime line per variable; other raw lxc.* keys
// (kept as "lxc", one "key: value" per line); and the current config only,
// up to the first [section] (pending changes, snapshots).
func ParsePCTConfig(raw string) CTConfig {
	cfg := CTConfig{}
	var desc, env, lxc []string
	for _, line := range strings.Split(raw, "\n") {
		if strings.HasPrefix(line, "[") {
			break
		}
		if t, ok := strings.CutPrefix(line, "#"); ok {
			if d, err := url.PathUnescape(t); err == nil {
				t = d
			}
			desc = append(desc, t)
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
			cfg[k] = v
		}
	}
	if len(desc) > 0 {
		cfg["description"] = strings.Join(desc, "\n")
	}
	if len(env) > 0 {
		cfg["env"] = strings.Join(env, "\x00")
	}
	if len(lxc) > 0 {
		cfg["lxc"] = strings.Join(lxc, "\n")
	}
	return cfg
}
