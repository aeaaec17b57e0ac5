package lifecycle

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/registry"
)

// RollbackRequest returns a container to what it was before its last
// update.
type RollbackRequest struct {
	VMID          int
	Node          string
	BackupStorage string
	HealthTimeout time.Duration
	StopTimeout   int
	DryRun        bool
}

// Rollback restores the rollback point the last update left (the
// container's root file system and config before it) over the container,
// with the same care as an update: the volumes are parked and come back
// (those the old image did not have as unused volumes, data kept), the
// container as it is now is archived first, and a failure returns to it.
// After a rollback there is no rollback point until the next update.
func (m *Manager) Rollback(ctx context.Context, r RollbackRequest) (*Outcome, error) {
	store := journalStore{m.StateDir}
	release, err := store.lock(r.VMID)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := refusePending(store, r.VMID); err != nil {
		return nil, err
	}
	j, out, rec, err := m.planRollback(ctx, r)
	if err != nil || r.DryRun {
		return out, err
	}
	// The container that holds the volumes meanwhile is made from the
	// template of the image the container runs now, pinned by digest.
	t, err := m.holderTemplate(ctx, rec)
	if err != nil {
		return out, fmt.Errorf("rollback needs a template to make the container that holds CT %d's volumes meanwhile: %w", r.VMID, err)
	}
	volid, err := m.EnsureTemplate(ctx, j.Node, t)
	if err != nil {
		return out, err
	}
	j.TempCreate["ostemplate"] = volid
	j.TempCreate["rootfs"] += strconv.Itoa(rootfsGiB(t.Meta.RootfsSize))
	j.TempCreate["arch"] = t.Meta.Arch
	return m.start(ctx, store, j, out)
}

func (m *Manager) planRollback(ctx context.Context, r RollbackRequest) (*Journal, *Outcome, *Record, error) {
	node, cfg, err := m.locate(ctx, r.VMID, r.Node)
	if err != nil {
		return nil, nil, nil, err
	}
	out := &Outcome{VMID: r.VMID, Node: node}
	_, rec, err := ParseDescription(cfg["description"])
	if err != nil {
		return nil, out, nil, fmt.Errorf("CT %d: %w", r.VMID, err)
	}
	if rec == nil {
		return nil, out, nil, fmt.Errorf("CT %d has no pve-image record in its description: it was not made by pve-image run, and has no rollback point", r.VMID)
	}
	if rec.Rollback == nil {
		return nil, out, nil, fmt.Errorf("CT %d has no rollback point: rollback returns to the image before the last update by pve-image, and CT %d has not been updated since it was made or rolled back", r.VMID, r.VMID)
	}
	rp := rec.Rollback
	out.From, out.To = rec.Image+"@"+rec.Digest, rp.Image+"@"+rp.Digest
	if err := m.checkReplaceable(ctx, node, r.VMID, cfg); err != nil {
		return nil, out, nil, err
	}
	sid, _, _ := strings.Cut(rp.Backup, ":")
	backups, err := m.PVE.Backups(ctx, node, sid, r.VMID)
	if err != nil {
		return nil, out, nil, fmt.Errorf("the rollback point %s: %w", rp.Backup, err)
	}
	if !slices.ContainsFunc(backups, func(b proxmox.Backup) bool { return b.Volid == rp.Backup }) {
		return nil, out, nil, fmt.Errorf("the rollback point of CT %d, %s, is no longer on storage %s: without it there is nothing to return to", r.VMID, rp.Backup, sid)
	}
	old, err := m.PVE.ArchivedConfig(ctx, node, rp.Backup)
	if err != nil {
		return nil, out, nil, err
	}
	oldUser, oldRec, err := ParseDescription(old["description"])
	if err != nil || oldRec == nil {
		return nil, out, nil, fmt.Errorf("the rollback point %s holds no pve-image record: it is not the archive an update made", rp.Backup)
	}
	st, err := m.PVE.ContainerStatus(ctx, node, r.VMID)
	if err != nil {
		return nil, out, nil, err
	}
	backup, err := m.backupStorage(ctx, node, r.BackupStorage)
	if err != nil {
		return nil, out, nil, err
	}
	j := &Journal{Version: journalVersion, ID: newID(), Kind: "rollback", Node: node, VMID: r.VMID, Started: time.Now().UTC(),
		BackupStorage: backup, Source: rp.Backup, WasRunning: st.Status == "running", HealthTimeout: r.HealthTimeout,
		StopTimeout: r.StopTimeout, UserDescription: oldUser, Phase: "forward", Summary: fmt.Sprintf("%s back to %s", out.From, out.To)}
	if j.StopTimeout <= 0 {
		j.StopTimeout = DefaultStopTimeout
	}
	// The volumes the old container had go back where they were; those
	// an update added (the new image's VOLUMEs) become unused volumes:
	// the old image does not know them, and their data is kept.
	oldKeys := map[string]bool{}
	for _, k := range rp.Volumes {
		oldKeys[k] = true
	}
	taken := map[string]bool{}
	for _, k := range rp.Volumes {
		taken[k] = true
	}
	for _, v := range parkable(cfg) {
		if !oldKeys[v.Key] {
			v.Forward = proxmox.CTConfig{}.FreeKey("unused", taken)
			taken[v.Forward] = true
		}
		j.Volumes = append(j.Volumes, v)
	}
	root := proxmox.ParseMountPoint("rootfs", cfg["rootfs"])
	oldRoot := proxmox.ParseMountPoint("rootfs", old["rootfs"])
	params := carried(old)
	params["rootfs"] = rootfsParam(root, max(root.SizeGiB(), oldRoot.SizeGiB()))
	j.Restore = params
	oldRec.Op, oldRec.Rollback = j.ID, nil
	j.Record = *oldRec
	j.UndoRestore = undoParams(cfg, root)
	// The holder: never started, unmanaged (no OS detection), just big
	// enough for its template (Rollback adds the size).
	j.TempCreate = map[string]string{"hostname": "pve-image-hold-" + strconv.Itoa(r.VMID), "ostype": "unmanaged", "unprivileged": "1",
		"rootfs": root.Storage() + ":"}

	j.Steps = []Step{{Op: "create-temp"}, {Op: "stop"}}
	for _, v := range j.Volumes {
		j.Steps = append(j.Steps, Step{Op: "park", Arg: v.Key})
	}
	j.Steps = append(j.Steps, Step{Op: "backup", Arg: "undo"}, Step{Op: "restore", Arg: "source"})
	for _, v := range j.Volumes {
		j.Steps = append(j.Steps, Step{Op: "unpark", Arg: v.Key})
	}
	j.Steps = append(j.Steps, finishSteps()...)
	out.Plan = j
	return j, out, rec, nil
}

// holderTemplate converts the image the container runs now (from the
// cache as a rule, since run or update converted it): by the reference it
// was made from while that still names the same digest, so that the
// template has the name run gave it on the storages; else by its digest.
func (m *Manager) holderTemplate(ctx context.Context, rec *Record) (*Template, error) {
	if d, err := m.Resolve(ctx, rec.Image); err == nil && d == rec.Digest {
		return m.Template(ctx, rec.Image)
	}
	r, err := m.parse(rec.Image)
	if err != nil || r.Transport != registry.Docker {
		return nil, fmt.Errorf("%s no longer names %s", rec.Image, rec.Digest)
	}
	t, err := m.Template(ctx, rec.ImageRef())
	if err != nil {
		return nil, err
	}
	if t.Digest != rec.Digest {
		return nil, fmt.Errorf("%s is %s, not %s", rec.ImageRef(), t.Digest, rec.Digest)
	}
	return t, nil
}
