package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pve-image/pve-image/proxmox"
)

// drive takes the journal's steps in order, each recorded done once taken,
// until none is left. A forward step that fails turns the rest of the
// operation into its undoing (undoSteps); a step of the undoing that fails,
// a housekeeping step that fails, or an interruption stop the loop with
// the journal kept: --resume takes it up at that step.
func (m *Manager) drive(ctx context.Context, store journalStore, j *Journal, out *Outcome) (*Outcome, error) {
	for {
		i := slices.IndexFunc(j.Steps, func(s Step) bool { return !s.Done })
		if i < 0 {
			break
		}
		s := j.Steps[i]
		m.say("%s of CT %d, step %d/%d: %s", j.Kind, j.VMID, i+1, len(j.Steps), j.Describe(s))
		err := m.take(ctx, store, j, s)
		if err == nil {
			j.Steps[i].Done = true
			if err := store.save(j); err != nil {
				return out, err
			}
			if m.AfterStep != nil {
				m.AfterStep(i+1, j.Steps[i])
			}
			continue
		}
		m.log().Debug("step failed", "vmid", j.VMID, "step", s.String(), "err", err)
		if ctx.Err() != nil {
			return out, fmt.Errorf("the %s of CT %d was interrupted at step %d (%s): %w; nothing is lost: `pve-image update --resume %d` finishes it",
				j.Kind, j.VMID, i+1, j.Describe(s), err, j.VMID)
		}
		if j.Phase == "forward" && undoes(s.Op) {
			m.say("%s of CT %d failed at step %d (%s): %v\nundoing it", j.Kind, j.VMID, i+1, j.Describe(s), err)
			j.Failure = fmt.Sprintf("step %d (%s): %v", i+1, j.Describe(s), err)
			j.Phase = "undo"
			j.Steps = append(slices.Clip(j.Steps[:i]), undoSteps(j, i)...)
			if err := store.save(j); err != nil {
				return out, err
			}
			continue
		}
		where := fmt.Sprintf("step %d (%s)", i+1, j.Describe(s))
		if j.Phase == "undo" {
			return out, fmt.Errorf("the %s of CT %d failed (%s), and undoing it failed at %s: %w\n  Nothing is lost: every volume is on CT %d or on pve-image's temporary CT %d, and the journal %s says where. Fix the cause and run `pve-image update --resume %d`",
				j.Kind, j.VMID, j.Failure, where, err, j.VMID, j.Temp, store.path(j.VMID), j.VMID)
		}
		return out, fmt.Errorf("the %s of CT %d stopped at %s: %w\n  Nothing is lost (journal %s); fix the cause and run `pve-image update --resume %d`",
			j.Kind, j.VMID, where, err, store.path(j.VMID), j.VMID)
	}
	undone := j.Phase == "undo"
	j.Phase = "done"
	if err := store.remove(j.VMID); err != nil {
		return out, err
	}
	if undone {
		out.Undone, out.Failure = true, j.Failure
		return out, fmt.Errorf("the %s of CT %d (%s) failed at %s; it was undone: CT %d is as it was before, with its volumes", j.Kind, j.VMID, j.Summary, j.Failure, j.VMID)
	}
	return out, nil
}

// undoes reports whether a failure of a forward step undoes the
// operation: every step until the new container has run healthily. What
// is left after that is housekeeping, whose failure is no reason to undo
// a working container.
func undoes(op string) bool {
	switch op {
	case "stop-again", "destroy-temp", "cleanup":
		return false
	}
	return true
}

// undoSteps undo an operation whose step j.Steps[failed] failed: before
// the restore over the container, only the volumes go back; from the
// restore on, the container is restored from the undo archive too, and
// the volumes the restore made are kept as unused volumes.
func undoSteps(j *Journal, failed int) []Step {
	restoreAt := slices.IndexFunc(j.Steps, func(s Step) bool { return s.Op == "restore" && s.Arg == "source" })
	var s []Step
	if restoreAt < 0 || failed < restoreAt {
		for _, v := range j.Volumes {
			s = append(s, Step{Op: "return", Arg: v.Key})
		}
		return append(s, Step{Op: "start-if-running"}, Step{Op: "destroy-temp"}, Step{Op: "cleanup", Arg: "undo"})
	}
	s = append(s, Step{Op: "stop"})
	for _, v := range j.Volumes {
		s = append(s, Step{Op: "repark", Arg: v.Key})
	}
	for _, a := range j.Added {
		s = append(s, Step{Op: "park-added", Arg: a.Key})
	}
	s = append(s, Step{Op: "restore", Arg: "undo"})
	for _, v := range j.Volumes {
		s = append(s, Step{Op: "return", Arg: v.Key})
	}
	for _, a := range j.Added {
		s = append(s, Step{Op: "return-added", Arg: a.Key})
	}
	return append(s, Step{Op: "start-if-running"}, Step{Op: "destroy-temp"}, Step{Op: "cleanup", Arg: "undo"})
}

// Describe says what a step does.
func (j *Journal) Describe(s Step) string {
	temp := "the temporary CT"
	if j.Temp != 0 {
		temp = fmt.Sprintf("temporary CT %d", j.Temp)
	}
	v, a := j.volume(s.Arg), j.added(s.Arg)
	switch s.Op {
	case "create-temp":
		if j.Kind == "update" {
			return fmt.Sprintf("create %s from %s, to archive its root file system and hold the volumes meanwhile", temp, j.TempCreate["ostemplate"])
		}
		return fmt.Sprintf("create %s to hold the volumes meanwhile", temp)
	case "backup":
		if s.Arg == "source" {
			return fmt.Sprintf("back up %s to %s: the new root file system", temp, j.BackupStorage)
		}
		return fmt.Sprintf("back up CT %d without its volumes to %s: what a failure returns to", j.VMID, j.BackupStorage)
	case "stop":
		return fmt.Sprintf("stop CT %d (shut down, then hard after %d s)", j.VMID, j.StopTimeout)
	case "stop-again":
		if j.WasRunning {
			return fmt.Sprintf("leave CT %d running, as it was", j.VMID)
		}
		return fmt.Sprintf("stop CT %d again, as it was", j.VMID)
	case "park":
		return fmt.Sprintf("move %s (%s) of CT %d to %s of %s", v.Key, v.Volid, j.VMID, v.TempKey, temp)
	case "repark":
		return fmt.Sprintf("move %s of CT %d back to %s of %s", v.Forward, j.VMID, v.TempKey, temp)
	case "park-added":
		return fmt.Sprintf("move the new volume %s of CT %d to %s of %s", a.Key, j.VMID, a.TempKey, temp)
	case "unpark":
		return fmt.Sprintf("move %s of %s to %s of CT %d", v.TempKey, temp, v.Forward, j.VMID)
	case "return":
		return fmt.Sprintf("move %s of %s back to %s of CT %d", v.TempKey, temp, v.Key, j.VMID)
	case "return-added":
		return fmt.Sprintf("keep the new volume as %s of CT %d (unused, with its data)", a.Back, j.VMID)
	case "restore":
		if s.Arg == "source" {
			return fmt.Sprintf("restore %s over CT %d, with its config", orPending(j.Source, "the new root file system"), j.VMID)
		}
		return fmt.Sprintf("restore %s over CT %d: the container as it was", orPending(j.Undo, "the archive of CT "+fmt.Sprint(j.VMID)), j.VMID)
	case "start":
		return fmt.Sprintf("start CT %d", j.VMID)
	case "start-if-running":
		if j.WasRunning {
			return fmt.Sprintf("start CT %d, as it ran", j.VMID)
		}
		return fmt.Sprintf("leave CT %d stopped, as it was", j.VMID)
	case "health":
		return fmt.Sprintf("check that CT %d keeps running for %s", j.VMID, j.HealthTimeout)
	case "destroy-temp":
		return fmt.Sprintf("remove %s (it holds no volume by then)", temp)
	case "cleanup":
		return "remove the archives no longer needed"
	}
	return s.String()
}

func orPending(s, what string) string {
	if s == "" {
		return what
	}
	return s
}

func (j *Journal) volume(key string) ParkedVolume {
	for _, v := range j.Volumes {
		if v.Key == key {
			return v
		}
	}
	return ParkedVolume{Key: key}
}

func (j *Journal) added(key string) ParkedVolume {
	for _, v := range j.Added {
		if v.Key == key {
			return v
		}
	}
	return ParkedVolume{Key: key}
}

// take takes one step. Each looks at what Proxmox has first, so that a
// step taken already (by a run that was killed) is not taken twice.
func (m *Manager) take(ctx context.Context, store journalStore, j *Journal, s Step) error {
	v, a := j.volume(s.Arg), j.added(s.Arg)
	switch s.Op {
	case "create-temp":
		return m.createTemp(ctx, store, j)
	case "backup":
		return m.backup(ctx, store, j, s.Arg)
	case "stop":
		return m.stop(ctx, j)
	case "stop-again":
		if j.WasRunning {
			return nil
		}
		return m.stop(ctx, j)
	case "park":
		return m.move(ctx, j, j.VMID, v.Key, j.Temp, v.TempKey, false)
	case "repark":
		return m.move(ctx, j, j.VMID, v.Forward, j.Temp, v.TempKey, false)
	case "unpark":
		return m.move(ctx, j, j.Temp, v.TempKey, j.VMID, v.Forward, false)
	case "return":
		return m.move(ctx, j, j.Temp, v.TempKey, j.VMID, v.Key, false)
	case "park-added":
		return m.move(ctx, j, j.VMID, a.Key, j.Temp, a.TempKey, true)
	case "return-added":
		return m.move(ctx, j, j.Temp, a.TempKey, j.VMID, a.Back, true)
	case "restore":
		return m.restore(ctx, j, s.Arg)
	case "start":
		return m.startCT(ctx, j)
	case "start-if-running":
		if !j.WasRunning {
			return nil
		}
		return m.startCT(ctx, j)
	case "health":
		return m.health(ctx, j.Node, j.VMID, j.HealthTimeout)
	case "destroy-temp":
		return m.destroyTemp(ctx, j)
	case "cleanup":
		return m.cleanup(ctx, j, s.Arg)
	}
	return fmt.Errorf("unknown step %q in the journal (written by another pve-image version?)", s.Op)
}

// config reads a container's config once no Proxmox task holds it; nil
// when the container does not exist.
func (m *Manager) config(ctx context.Context, node string, vmid int) (proxmox.CTConfig, error) {
	if vmid == 0 {
		return nil, nil
	}
	cfg, err := m.PVE.WaitUnlocked(ctx, node, vmid, lockWait)
	if errors.Is(err, proxmox.ErrNotFound) {
		return nil, nil
	}
	return cfg, err
}

// tempMarker is in the temporary container's description: the proof that
// a container of that VMID is this operation's own.
func tempMarker(j *Journal) string {
	return fmt.Sprintf("pve-image temporary container of the %s of CT %d (operation %s); pve-image removes it when done", j.Kind, j.VMID, j.ID)
}

func (m *Manager) createTemp(ctx context.Context, store journalStore, j *Journal) error {
	for attempt := 1; ; attempt++ {
		if j.Temp != 0 {
			cfg, err := m.config(ctx, j.Node, j.Temp)
			if err != nil {
				return err
			}
			if cfg != nil {
				if strings.Contains(cfg["description"], j.ID) {
					return m.configureTemp(ctx, j)
				}
				// Someone else took the VMID meanwhile.
				j.Temp = 0
			}
		}
		if j.Temp == 0 {
			id, err := m.PVE.NextID(ctx)
			if err != nil {
				return err
			}
			j.Temp = id
			// Recorded before the create: a crash after it finds the
			// container by this VMID and its marker.
			if err := store.save(j); err != nil {
				return err
			}
		}
		opts := maps.Clone(j.TempCreate)
		opts["description"] = tempMarker(j)
		_, err := m.PVE.CreateContainer(ctx, j.Node, j.Temp, opts)
		if errors.Is(err, proxmox.ErrVMIDTaken) && attempt < 5 {
			j.Temp = 0
			continue
		}
		if err != nil {
			return fmt.Errorf("create temporary CT %d: %w", j.Temp, err)
		}
		return m.configureTemp(ctx, j)
	}
}

// configureTemp sets what Proxmox sets only after a create; again after a
// crash, to the same values.
func (m *Manager) configureTemp(ctx context.Context, j *Journal) error {
	if len(j.TempAfter) == 0 {
		return nil
	}
	if err := m.PVE.SetContainerConfig(ctx, j.Node, j.Temp, j.TempAfter); err != nil {
		return fmt.Errorf("configure temporary CT %d: %w", j.Temp, err)
	}
	return nil
}

// backupNotes are the notes of the operation's archives: the operation's
// ID finds them again after a crash.
func backupNotes(j *Journal, role string) string {
	return fmt.Sprintf("pve-image %s %s %s of CT %d", j.Kind, j.ID, role, j.VMID)
}

func (m *Manager) backup(ctx context.Context, store journalStore, j *Journal, role string) error {
	vmid, field := j.VMID, &j.Undo
	if role == "source" {
		vmid, field = j.Temp, &j.Source
	}
	if _, err := m.config(ctx, j.Node, vmid); err != nil {
		return err
	}
	have, err := m.PVE.Backups(ctx, j.Node, j.BackupStorage, vmid)
	if err != nil {
		return err
	}
	mark := j.ID + " " + role
	for _, b := range have {
		if (*field != "" && b.Volid == *field) || (*field == "" && strings.Contains(b.Notes, mark)) {
			*field = b.Volid
			return store.save(j)
		}
	}
	volid, err := m.PVE.CreateBackup(ctx, proxmox.BackupRequest{Node: j.Node, VMID: vmid, Storage: j.BackupStorage, Mode: "stop",
		Compress: "zstd", Notes: backupNotes(j, role)})
	if err != nil {
		return err
	}
	*field = volid
	return store.save(j)
}

func (m *Manager) stop(ctx context.Context, j *Journal) error {
	cfg, err := m.config(ctx, j.Node, j.VMID)
	if err != nil || cfg == nil {
		return err
	}
	st, err := m.PVE.ContainerStatus(ctx, j.Node, j.VMID)
	if err != nil || st.Status != "running" {
		return err
	}
	if err := m.PVE.ShutdownContainer(ctx, j.Node, j.VMID, j.StopTimeout, true); err != nil {
		// A container whose init ended meanwhile is not running.
		if st, serr := m.PVE.ContainerStatus(ctx, j.Node, j.VMID); serr == nil && st.Status == "stopped" {
			return nil
		}
		return fmt.Errorf("stop CT %d: %w", j.VMID, err)
	}
	return nil
}

// move moves a volume between the container and the temporary one, unless
// it is where it goes already. optional volumes (those a restore makes)
// may be on neither.
func (m *Manager) move(ctx context.Context, j *Journal, from int, fromKey string, to int, toKey string, optional bool) error {
	for attempt := 1; ; attempt++ {
		src, err := m.config(ctx, j.Node, from)
		if err != nil {
			return err
		}
		dst, err := m.config(ctx, j.Node, to)
		if err != nil {
			return err
		}
		there := dst != nil && dst[toKey] != ""
		here := src != nil && src[fromKey] != ""
		switch {
		case there && !here:
			return nil
		case !here && optional:
			return nil
		case !here:
			return fmt.Errorf("the volume is neither %s of CT %d nor %s of CT %d: look for it on the storage (its planned name was %s)", fromKey, from, toKey, to, j.volume(fromKey).Volid)
		case dst == nil:
			return fmt.Errorf("CT %d, which the volume %s of CT %d goes to, does not exist", to, fromKey, from)
		case there:
			return fmt.Errorf("%s of CT %d is taken already (%s), so %s of CT %d cannot go there", toKey, to, dst[toKey], fromKey, from)
		}
		err = m.PVE.ReassignVolume(ctx, j.Node, from, fromKey, to, toKey)
		if err == nil || attempt > 1 {
			return err
		}
		// The move may have happened though its answer was lost: look
		// again.
	}
}

// restore restores the source archive (role source) or the undo archive
// over the container, unless that happened already. It refuses to restore
// over a container that holds a volume: a forced restore destroys every
// volume the container owns (proxmox-lifecycle.md §2).
func (m *Manager) restore(ctx context.Context, j *Journal, role string) error {
	cfg, err := m.config(ctx, j.Node, j.VMID)
	if err != nil {
		return err
	}
	done := func(cfg proxmox.CTConfig) bool {
		if cfg == nil {
			return false
		}
		_, rec, _ := ParseDescription(cfg["description"])
		ours := rec != nil && rec.Op == j.ID
		if role == "source" {
			return ours
		}
		// The undo: the container holds anything but the operation's
		// root file system (never replaced, or restored back).
		return !ours
	}
	if done(cfg) {
		return nil
	}
	archive, params := j.Undo, maps.Clone(j.UndoRestore)
	if role == "source" {
		archive, params = j.Source, maps.Clone(j.Restore)
		rec := j.Record
		if rec.Rollback != nil {
			rp := *rec.Rollback
			rp.Backup = j.Undo
			rec.Rollback = &rp
		}
		params["description"] = rec.Description(j.UserDescription)
		if len(params["description"]) > maxDescription {
			return fmt.Errorf("the container's description with pve-image's record is %d characters; Proxmox keeps at most %d: shorten the container's description", len(params["description"]), maxDescription)
		}
	}
	if archive == "" {
		return fmt.Errorf("no archive to restore (%s): the journal is incomplete", role)
	}
	if vols := parkable(cfg); len(vols) > 0 {
		return fmt.Errorf("CT %d still holds the volume %s (%s): a restore over it would destroy it; refusing", j.VMID, vols[0].Key, vols[0].Volid)
	}
	_, err = m.PVE.Restore(ctx, j.Node, j.VMID, archive, cfg != nil, params)
	if err != nil {
		if again, cerr := m.config(ctx, j.Node, j.VMID); cerr == nil && role == "source" && done(again) {
			return nil
		}
		return err
	}
	return nil
}

func (m *Manager) startCT(ctx context.Context, j *Journal) error {
	st, err := m.PVE.ContainerStatus(ctx, j.Node, j.VMID)
	if err != nil {
		return err
	}
	if st.Status == "running" {
		return nil
	}
	if err := m.PVE.StartContainer(ctx, j.Node, j.VMID); err != nil {
		return fmt.Errorf("start CT %d: %w", j.VMID, err)
	}
	return m.PVE.WaitRunning(ctx, j.Node, j.VMID, time.Minute)
}

// health checks that the container runs, and runs still after d: a
// program that crashes at start ends its container (pve-image-init exits
// with it).
func (m *Manager) health(ctx context.Context, node string, vmid int, d time.Duration) error {
	start := time.Now()
	for {
		st, err := m.PVE.ContainerStatus(ctx, node, vmid)
		if err != nil {
			return err
		}
		if st.Status != "running" {
			return fmt.Errorf("CT %d stopped within %s of its start: the new image does not keep running (its console shows why: pct console %d)", vmid, time.Since(start).Round(time.Second), vmid)
		}
		left := d - time.Since(start)
		if left <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(left, 500*time.Millisecond)):
		}
	}
}

func (m *Manager) destroyTemp(ctx context.Context, j *Journal) error {
	cfg, err := m.config(ctx, j.Node, j.Temp)
	if err != nil || cfg == nil {
		return err
	}
	if !strings.Contains(cfg["description"], j.ID) {
		return nil // not ours: the VMID was never ours, or is another's now
	}
	if vols := parkable(cfg); len(vols) > 0 {
		var names []string
		for _, v := range vols {
			names = append(names, v.Key+" ("+v.Volid+")")
		}
		return fmt.Errorf("temporary CT %d still holds %s; it is kept, with them", j.Temp, strings.Join(names, ", "))
	}
	if err := m.PVE.DestroyContainer(ctx, j.Node, j.Temp, true); err != nil {
		return fmt.Errorf("remove temporary CT %d: %w", j.Temp, err)
	}
	return nil
}

// cleanup removes the archives the operation made and no longer needs,
// and the rollback point an update replaces. Kept: after an update, the
// archive of the container before it (the new rollback point); after an
// undone rollback, the rollback point.
func (m *Manager) cleanup(ctx context.Context, j *Journal, phase string) error {
	keep := map[string]bool{}
	var drop []string
	switch {
	case j.Kind == "update" && phase == "forward":
		keep[j.Undo] = true
		if j.DeleteAfter != "" && j.DeleteAfter != j.Undo {
			drop = append(drop, j.DeleteAfter)
		}
	case j.Kind == "rollback" && phase == "forward":
		drop = append(drop, j.Source)
	case j.Kind == "rollback":
		keep[j.Source] = true
	}
	for _, vmid := range []int{j.VMID, j.Temp} {
		if vmid == 0 {
			continue
		}
		have, err := m.PVE.Backups(ctx, j.Node, j.BackupStorage, vmid)
		if err != nil {
			return err
		}
		for _, b := range have {
			if strings.Contains(b.Notes, j.ID) && !keep[b.Volid] {
				drop = append(drop, b.Volid)
			}
		}
	}
	for _, volid := range drop {
		sid, _, _ := strings.Cut(volid, ":")
		have, err := m.PVE.Backups(ctx, j.Node, sid, 0)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(have, func(b proxmox.Backup) bool { return b.Volid == volid }) {
			continue
		}
		if err := m.PVE.DeleteVolume(ctx, j.Node, sid, volid); err != nil {
			return fmt.Errorf("remove archive %s: %w", volid, err)
		}
	}
	return nil
}
