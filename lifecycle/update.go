package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/template"
)

// UpdateRequest is an update of a container made by Run to another version
// of its image.
type UpdateRequest struct {
	VMID int
	// Node is where the container is; "" finds it.
	Node string
	// Image is the reference to update to; "" resolves the recorded one
	// again (a tag may name a new digest).
	Image string
	// BackupStorage takes the archives; "" is the node's first storage
	// for backups.
	BackupStorage string
	// HealthTimeout is how long the new container must run.
	HealthTimeout time.Duration
	// StopTimeout is how long a shutdown may take (seconds) before the
	// container is stopped hard.
	StopTimeout int
	// DryRun plans and changes nothing.
	DryRun bool
}

// Outcome is what an update, rollback or resume did.
type Outcome struct {
	VMID int
	Node string
	// UpToDate: the image's digest is the one the container runs.
	UpToDate bool
	// From and To are the images, REF@DIGEST.
	From, To string
	// Plan is the operation (a dry run's, or the one carried out).
	Plan *Journal
	// Undone says the operation failed and was undone; Failure why.
	Undone  bool
	Failure string
}

// Defaults.
const (
	DefaultHealthTimeout = 30 * time.Second
	DefaultStopTimeout   = 60
	// lockWait bounds the wait for a lock a Proxmox task holds (a backup
	// or restore that outlived a killed pve-image).
	lockWait = 30 * time.Minute
)

// Update moves a container to the image's current (or another) version
// under the same VMID, keeping its config, NICs and volumes with their
// data; see the package documentation and README for the sequence. A
// container already on that digest is left alone. Each step is journaled
// before it is taken; a failure before the new container has run
// healthily for HealthTimeout undoes the update.
func (m *Manager) Update(ctx context.Context, r UpdateRequest) (*Outcome, error) {
	store := journalStore{m.StateDir}
	release, err := store.lock(r.VMID)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := refusePending(store, r.VMID); err != nil {
		return nil, err
	}
	j, out, t, err := m.planUpdate(ctx, r)
	if err != nil || out.UpToDate || r.DryRun {
		return out, err
	}
	volid, err := m.EnsureTemplate(ctx, j.Node, t)
	if err != nil {
		return out, err
	}
	j.TempCreate["ostemplate"] = volid
	return m.start(ctx, store, j, out)
}

// refusePending refuses a new operation while one is interrupted.
func refusePending(store journalStore, vmid int) error {
	j, err := store.load(vmid)
	if err != nil {
		return err
	}
	if j != nil {
		return fmt.Errorf("the %s of CT %d started %s was interrupted (journal %s): finish it first with `pve-image update --resume %d`",
			j.Kind, vmid, j.Started.Format(time.RFC3339), store.path(vmid), vmid)
	}
	return nil
}

// start records j and carries it out.
func (m *Manager) start(ctx context.Context, store journalStore, j *Journal, out *Outcome) (*Outcome, error) {
	if err := store.save(j); err != nil {
		return out, err
	}
	return m.drive(ctx, store, j, out)
}

// Resume carries on with an interrupted update or rollback: the steps not
// yet done, or, once the operation failed, its undoing.
func (m *Manager) Resume(ctx context.Context, vmid int) (*Outcome, error) {
	store := journalStore{m.StateDir}
	release, err := store.lock(vmid)
	if err != nil {
		return nil, err
	}
	defer release()
	j, err := store.load(vmid)
	if err != nil {
		return nil, err
	}
	if j == nil {
		return nil, fmt.Errorf("no interrupted update or rollback of CT %d is journaled here (%s)", vmid, store.path(vmid))
	}
	m.say("resuming the %s of CT %d (%s), started %s", j.Kind, vmid, j.Summary, j.Started.Format(time.RFC3339))
	out := &Outcome{VMID: vmid, Node: j.Node, Plan: j}
	return m.drive(ctx, store, j, out)
}

// Pending is the journal of an interrupted operation on vmid, nil if none.
func (m *Manager) Pending(vmid int) (*Journal, error) {
	return journalStore{m.StateDir}.load(vmid)
}

// planUpdate reads the container and the image and makes the journal.
func (m *Manager) planUpdate(ctx context.Context, r UpdateRequest) (*Journal, *Outcome, *Template, error) {
	node, cfg, err := m.locate(ctx, r.VMID, r.Node)
	if err != nil {
		return nil, nil, nil, err
	}
	out := &Outcome{VMID: r.VMID, Node: node}
	user, rec, err := ParseDescription(cfg["description"])
	if err != nil {
		return nil, out, nil, fmt.Errorf("CT %d: %w", r.VMID, err)
	}
	if rec == nil {
		return nil, out, nil, fmt.Errorf("CT %d was not made by pve-image run: its description has no pve-image record of the image it runs, and an update would not know the --env, --entrypoint and --dns it was made with", r.VMID)
	}
	ref := r.Image
	if ref == "" {
		ref = rec.Image
	}
	digest, err := m.Resolve(ctx, ref)
	if err != nil {
		return nil, out, nil, err
	}
	out.From, out.To = rec.Image+"@"+rec.Digest, ref+"@"+digest
	if digest == rec.Digest {
		out.UpToDate = true
		return nil, out, nil, nil
	}
	if err := m.checkReplaceable(ctx, node, r.VMID, cfg); err != nil {
		return nil, out, nil, err
	}
	t, err := m.Template(ctx, ref)
	if err != nil {
		return nil, out, nil, err
	}
	ver := m.PVE.Version()
	native := ver.Native()
	pc, err := t.Meta.PVEConfig(native, template.Overrides{Env: rec.Env, Entrypoint: rec.Entrypoint, DNS: rec.DNS})
	if err != nil {
		return nil, out, nil, fmt.Errorf("the new image with CT %d's settings: %w", r.VMID, err)
	}
	st, err := m.PVE.ContainerStatus(ctx, node, r.VMID)
	if err != nil {
		return nil, out, nil, err
	}
	backup, err := m.backupStorage(ctx, node, r.BackupStorage)
	if err != nil {
		return nil, out, nil, err
	}
	j := &Journal{Version: journalVersion, ID: newID(), Kind: "update", Node: node, VMID: r.VMID, Started: time.Now().UTC(),
		BackupStorage: backup, WasRunning: st.Status == "running", HealthTimeout: r.HealthTimeout, StopTimeout: r.StopTimeout,
		UserDescription: user, Phase: "forward"}
	if j.StopTimeout <= 0 {
		j.StopTimeout = DefaultStopTimeout
	}
	if rec.Rollback != nil {
		j.DeleteAfter = rec.Rollback.Backup
	}
	j.Volumes = parkable(cfg)

	root := proxmox.ParseMountPoint("rootfs", cfg["rootfs"])
	needGiB := rootfsGiB(t.Meta.RootfsSize)
	rootStorage := root.Storage()

	// The new config: the container's own, with what the image decides
	// made from the new image.
	params := carried(cfg)
	for _, k := range []string{"ostype", "arch", "entrypoint", "env", "cmode"} {
		delete(params, k)
		if v, ok := pc.Options[k]; ok {
			params[k] = v
		}
	}
	if f := mergeFeatures(cfg["features"], pc.Options["features"]); f != "" {
		params["features"] = f
	}
	if pc.NetOptions != "" {
		for _, k := range cfg.Indexed("net") {
			nic := proxmox.ParseNIC(cfg[k])
			for _, kv := range proxmox.ParsePropString(pc.NetOptions, "") {
				if !nic.Has(kv.Key) {
					nic = nic.Set(kv.Key, kv.Value)
				}
			}
			params[k] = nic.String("")
		}
	}
	if _, ok := params["swap"]; !ok {
		params["swap"] = "512" // Proxmox's default at create
	}
	params["rootfs"] = rootfsParam(root, max(root.SizeGiB(), needGiB))

	// The new image's volumes at paths the container has none at are
	// made by the restore (and filled from the image, as at run).
	added, err := addedVolumes(&t.Meta, cfg, rootStorage, template.VolumeOptions{Storage: rootStorage, SizeGiB: template.DefaultVolumeGiB,
		MayBind: m.PVE.MayBindMount(), KeepAttrs: keepAttrs(ver)})
	if err != nil {
		return nil, out, nil, err
	}
	for _, a := range added {
		params[a.Key] = a.Volid // the STORAGE:SIZE,mp=... value until made
	}
	j.Added = added
	j.Restore = params
	j.Record = Record{Image: ref, Digest: digest, Env: rec.Env, Entrypoint: rec.Entrypoint, DNS: rec.DNS, Op: j.ID,
		Rollback: &RollbackPoint{Image: rec.Image, Digest: rec.Digest, Volumes: volumeKeys(cfg)}}
	j.UndoRestore = undoParams(cfg, root)

	// The temporary container: the new image's root file system with the
	// new config's keys only (a restore fills keys it is not given from
	// the archive), no NICs, never started.
	j.TempCreate = map[string]string{"hostname": params["hostname"], "rootfs": rootStorage + ":" + strconv.Itoa(needGiB),
		"unprivileged": params["unprivileged"], "memory": params["memory"], "swap": params["swap"]}
	for _, k := range []string{"ostype", "arch", "features"} {
		if v, ok := params[k]; ok {
			j.TempCreate[k] = v
		}
	}
	if j.TempCreate["unprivileged"] == "" {
		j.TempCreate["unprivileged"] = "1"
	}
	for k, v := range j.TempCreate {
		if v == "" {
			delete(j.TempCreate, k) // Proxmox's default, as the container had
		}
	}
	j.TempAfter = map[string]string{}
	for _, k := range []string{"entrypoint", "env", "cmode"} {
		if v, ok := params[k]; ok {
			j.TempAfter[k] = v
		}
	}
	j.Summary = fmt.Sprintf("%s to %s", out.From, out.To)

	j.Steps = []Step{{Op: "create-temp"}, {Op: "backup", Arg: "source"}, {Op: "stop"}}
	for _, v := range j.Volumes {
		j.Steps = append(j.Steps, Step{Op: "park", Arg: v.Key})
	}
	j.Steps = append(j.Steps, Step{Op: "backup", Arg: "undo"}, Step{Op: "restore", Arg: "source"})
	for _, v := range j.Volumes {
		j.Steps = append(j.Steps, Step{Op: "unpark", Arg: v.Key})
	}
	j.Steps = append(j.Steps, finishSteps()...)
	out.Plan = j
	return j, out, t, nil
}

// finishSteps end an operation: the health check, then the housekeeping,
// whose failure no longer undoes anything.
func finishSteps() []Step {
	return []Step{{Op: "start"}, {Op: "health"}, {Op: "stop-again"}, {Op: "destroy-temp"}, {Op: "cleanup", Arg: "forward"}}
}

// locate finds the container and reads its config: on node when given
// and it is there, else wherever the cluster has it (VMIDs are
// cluster-wide).
func (m *Manager) locate(ctx context.Context, vmid int, node string) (string, proxmox.CTConfig, error) {
	if node != "" && node != Auto {
		cfg, err := m.PVE.WaitUnlocked(ctx, node, vmid, 0)
		if !errors.Is(err, proxmox.ErrNotFound) {
			return node, cfg, err
		}
	}
	n, err := m.PVE.FindContainer(ctx, vmid)
	if err != nil {
		return "", nil, err
	}
	cfg, err := m.PVE.WaitUnlocked(ctx, n, vmid, 0)
	return n, cfg, err
}

// checkReplaceable refuses, with the reason, containers whose root file
// system an update or rollback cannot replace without losing something.
func (m *Manager) checkReplaceable(ctx context.Context, node string, vmid int, cfg proxmox.CTConfig) error {
	root := m.PVE.MayBindMount() // root@pam itself
	switch {
	case cfg.Locked() != "":
		return fmt.Errorf("CT %d is locked (%s): a Proxmox task holds it; wait for it to end", vmid, cfg.Locked())
	case cfg["template"] == "1":
		return fmt.Errorf("CT %d is a template: templates are not updated", vmid)
	case cfg["lxc"] != "":
		return fmt.Errorf("CT %d has raw lxc.* keys in its config, which Proxmox's API cannot set on a new root file system (and a restore keeps only for root@pam): move them into the image, or remove them", vmid)
	case cfg["parent"] != "":
		return fmt.Errorf("CT %d has snapshots: Proxmox moves no volume that a snapshot uses to another container (\"Cannot move volume used by a snapshot to another container\"), and an update must move its volumes aside; delete the snapshots (pct delsnapshot) first", vmid)
	case cfg["protection"] == "1":
		return fmt.Errorf("CT %d is protected: Proxmox restores nothing over a protected container (\"unable to restore CT %d - protection mode enabled\"); clear it for the update (pct set %d --protection 0)", vmid, vmid, vmid)
	case !root && cfg["hookscript"] != "":
		return fmt.Errorf("CT %d has a hookscript, which only root@pam may set again on the new root file system: log in with --pve-user root@pam", vmid)
	}
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		if strings.HasPrefix(k, "dev") && !root {
			return fmt.Errorf("CT %d passes device %s through, which only root@pam may set again: log in with --pve-user root@pam", vmid, k)
		}
	}
	if f := cfg["features"]; f != "" && !root {
		for _, kv := range proxmox.ParsePropString(f, "") {
			if kv.Key != "nesting" && kv.Value == "1" {
				return fmt.Errorf("CT %d has feature %s, which only root@pam may set again: log in with --pve-user root@pam", vmid, kv.Key)
			}
		}
	}
	storageTypes := map[string]string{}
	for _, k := range append(cfg.Indexed("mp"), cfg.Indexed("unused")...) {
		mp := proxmox.ParseMountPoint(k, cfg[k])
		if mp.Kind() != "volume" {
			if !root {
				return fmt.Errorf("CT %d has the %s mount point %s (%s), which only root@pam may set again: log in with --pve-user root@pam", vmid, mp.Kind(), k, mp.Volume())
			}
			continue
		}
		sid := mp.Storage()
		if _, ok := storageTypes[sid]; !ok {
			st, err := m.PVE.Storage(ctx, node, sid)
			if err != nil {
				return fmt.Errorf("CT %d's %s: %w", vmid, k, err)
			}
			storageTypes[sid] = st.Type
		}
		if err := renamable(storageTypes[sid], mp.Volume()); err != nil {
			return fmt.Errorf("CT %d's %s (%s): %w; an update moves volumes to a container of its own while it replaces the root file system", vmid, k, mp.Volume(), err)
		}
	}
	return nil
}

// renamable is whether Proxmox can reassign the volume to another
// container: its storage's 'rename' feature (pve-storage
// volume_has_feature tables; proxmox-lifecycle.md §1). Directory-like
// storages rename raw, qcow2 and vmdk images, not subvol directories
// (size-0 volumes); storages not listed are left to Proxmox to judge.
func renamable(storageType, volid string) error {
	switch storageType {
	case "dir", "nfs", "cifs", "btrfs", "glusterfs", "cephfs":
		if !regexp.MustCompile(`\.(raw|qcow2|vmdk)$`).MatchString(volid) {
			return fmt.Errorf("Proxmox cannot move this volume to another container: on a %s storage only raw, qcow2 and vmdk volumes can be (\"Storage does not support moving of this disk to another container\")", storageType)
		}
	case "lvm":
		// raw LVs rename.
	}
	return nil
}

// backupStorage is the storage named, or the node's first active one that
// takes backups.
func (m *Manager) backupStorage(ctx context.Context, node, name string) (string, error) {
	if name != "" {
		st, err := m.PVE.Storage(ctx, node, name)
		if err != nil {
			return "", fmt.Errorf("backup storage %s on %s: %w", name, node, err)
		}
		if !st.Holds("backup") {
			return "", fmt.Errorf("storage %s on %s takes no backups (content: %s); an update keeps the container as it was there", name, node, st.Content)
		}
		return name, nil
	}
	sts, err := m.PVE.Storages(ctx, node, "backup")
	if err != nil {
		return "", err
	}
	for _, s := range sts {
		if s.Holds("backup") && s.Active != 0 {
			return s.Name, nil
		}
	}
	return "", fmt.Errorf("node %s has no active storage for backups (content backup): an update keeps the container as it was in a backup, to return to; add backup to a storage's content, or name one with --backup-storage", node)
}

// parkable are the container's volumes an update moves aside: volume mount
// points and unused volumes (a forced restore destroys both). Bind and
// device mounts are host paths, which nothing destroys.
func parkable(cfg proxmox.CTConfig) []ParkedVolume {
	var out []ParkedVolume
	for _, k := range append(cfg.Indexed("mp"), cfg.Indexed("unused")...) {
		mp := proxmox.ParseMountPoint(k, cfg[k])
		if mp.Kind() == "volume" {
			out = append(out, ParkedVolume{Key: k, TempKey: k, Forward: k, Volid: mp.Volume()})
		}
	}
	return out
}

// volumeKeys are the keys of the container's volumes.
func volumeKeys(cfg proxmox.CTConfig) []string {
	var out []string
	for _, v := range parkable(cfg) {
		out = append(out, v.Key)
	}
	return out
}

// carried is the config a restore must be given to keep it: everything
// but the volumes (moved), the record (rewritten) and what Proxmox keeps
// itself or refuses as a parameter. Bind and device mount points are kept:
// a restore takes no mount points from an archive.
func carried(cfg proxmox.CTConfig) map[string]string {
	out := map[string]string{}
	for k, v := range cfg {
		switch {
		case k == "digest", k == "lock", k == "rootfs", k == "template", k == "parent", k == "snapshots", k == "pending",
			k == "description", k == "lxc", strings.HasPrefix(k, "unused"):
			continue
		case strings.HasPrefix(k, "mp") && proxmox.ParseMountPoint(k, v).Kind() == "volume":
			continue
		}
		out[k] = v
	}
	return out
}

// undoParams restore the container's own root disk and bind mounts from
// the undo archive (the archive's config gives the rest).
func undoParams(cfg proxmox.CTConfig, root proxmox.MountPoint) map[string]string {
	p := map[string]string{"rootfs": rootfsParam(root, root.SizeGiB())}
	for _, k := range cfg.Indexed("mp") {
		if mp := proxmox.ParseMountPoint(k, cfg[k]); mp.Kind() != "volume" {
			p[k] = cfg[k]
		}
	}
	if v := cfg["unprivileged"]; v != "" {
		p["unprivileged"] = v
	}
	return p
}

// rootfsParam is a new root disk on the same storage with the same
// options: STORAGE:GiB[,acl=..,...].
func rootfsParam(root proxmox.MountPoint, gib int) string {
	p := proxmox.PropString{{Key: "volume", Value: root.Storage() + ":" + strconv.Itoa(max(gib, 1))}}
	for _, kv := range root.Opts {
		if kv.Key != "volume" && kv.Key != "size" {
			p = append(p, kv)
		}
	}
	return p.String("volume")
}

// rootfsGiB is the root disk for a root file system of size bytes, as run
// sizes it: the size plus half again, at least 512 MiB more.
func rootfsGiB(size int64) int {
	need := size + max(size/2, 512<<20)
	return int(math.Ceil(float64(need) / (1 << 30)))
}

// mergeFeatures is the container's features with those the image needs.
func mergeFeatures(have, need string) string {
	p := proxmox.ParsePropString(have, "")
	for _, kv := range proxmox.ParsePropString(need, "") {
		p = p.Set(kv.Key, kv.Value)
	}
	return p.String("")
}

// addedVolumes are the image's volumes at paths where the container mounts
// nothing, as mount points for the restore to make, under free keys.
func addedVolumes(meta *template.Meta, cfg proxmox.CTConfig, storage string, o template.VolumeOptions) ([]ParkedVolume, error) {
	have := map[string]bool{}
	for _, mp := range cfg.MountPoints() {
		have[strings.TrimRight(mp.Path(), "/")] = true
	}
	var flags []string
	for _, p := range meta.Config.Volumes {
		if have[strings.TrimRight(p, "/")] {
			flags = append(flags, p+"=none")
		}
	}
	vols, err := meta.PlanVolumes(flags, o)
	if err != nil {
		return nil, fmt.Errorf("the new image's volumes: %w", err)
	}
	taken, unusedTaken := map[string]bool{}, map[string]bool{}
	var out []ParkedVolume
	for _, v := range vols {
		k := cfg.FreeKey("mp", taken)
		taken[k] = true
		u := cfg.FreeKey("unused", unusedTaken)
		unusedTaken[u] = true
		out = append(out, ParkedVolume{Key: k, TempKey: u, Back: u, Volid: v.Value})
	}
	return out, nil
}
