package lifecycle

import (
	"context"
	"fmt"
	"strings"

	"github.com/pve-image/pve-image/proxmox"
)

// MigrateRequest moves a container to another node.
type MigrateRequest struct {
	VMID int
	// From is where it is; "" finds it.
	From string
	To   string
	// Timeout bounds the shutdown of a running container (seconds; 0 is
	// Proxmox's 180).
	Timeout int
	// TargetStorage maps storages (src:dst,... or one for all).
	TargetStorage string
}

// Migrate moves a container with Proxmox's migration: a running container
// by a restart migration (containers have no live migration: it is shut
// down, moved and started on the target, and started again where it was
// if that fails). The template of its image follows first, when the
// target's template storage lacks it, so that updates and rollbacks work
// there. What Proxmox refuses comes back with its reason and what to do.
func (m *Manager) Migrate(ctx context.Context, r MigrateRequest) (from string, err error) {
	if j, err := (journalStore{m.StateDir}).load(r.VMID); err != nil {
		return "", err
	} else if j != nil {
		return "", fmt.Errorf("the %s of CT %d was interrupted: finish it first with `pve-image update --resume %d`", j.Kind, r.VMID, r.VMID)
	}
	node, cfg, err := m.locate(ctx, r.VMID, r.From)
	if err != nil {
		return "", err
	}
	if node == r.To {
		return node, fmt.Errorf("CT %d is on %s already", r.VMID, node)
	}
	nodes, err := m.PVE.Nodes(ctx)
	if err != nil {
		return node, err
	}
	if !contains(nodes, r.To) {
		return node, fmt.Errorf("the cluster has no node %q (it has %s)", r.To, strings.Join(nodes, ", "))
	}
	if _, rec, _ := ParseDescription(cfg["description"]); rec != nil {
		if err := m.templateFollows(ctx, rec, r.To); err != nil {
			m.say("warning: the template of %s could not follow CT %d to %s: %v; an update or rollback there will upload it", rec.Image, r.VMID, r.To, err)
		}
	}
	st, err := m.PVE.ContainerStatus(ctx, node, r.VMID)
	if err != nil {
		return node, err
	}
	err = m.PVE.Migrate(ctx, proxmox.MigrateRequest{Node: node, VMID: r.VMID, Target: r.To, Restart: st.Status == "running",
		Timeout: r.Timeout, TargetStorage: r.TargetStorage})
	if err != nil {
		return node, explainMigration(err)
	}
	return node, nil
}

// templateFollows puts the template of the container's image on the
// target node's template storage (a shared storage has it already).
func (m *Manager) templateFollows(ctx context.Context, rec *Record, to string) error {
	t, err := m.holderTemplate(ctx, rec)
	if err != nil {
		return err
	}
	_, err = m.EnsureTemplate(ctx, to, t)
	return err
}

// migrationHints say what to do about Proxmox's refusals
// (pve-container LXC/Migrate.pm; proxmox-lifecycle.md §7).
var migrationHints = []struct{ match, hint string }{
	{"cannot migrate local bind mount point", "a bind mount is a directory of this node: if the same path exists on the target (shared storage), mark the mount point shared=1 (pct set VMID -mpN ...,shared=1); otherwise remove it first"},
	{"cannot migrate local device mount point", "a device mount is a device of this node: remove it first"},
	{"owned by other guest", "a volume of another guest is mounted: move it to this container (pct move-volume) or detach it"},
	{"non-migratable snapshot exists", "snapshots of local volumes migrate only on ZFS and btrfs: delete them first"},
	{"clone of", "a linked clone on local storage cannot leave its base: make a full clone"},
	{"live migration is currently not implemented", "containers migrate by restart only"},
	{"can't migrate running container", "pve-image migrates running containers by restart; the container was started meanwhile: try again"},
	{"does not exist", "the storage is missing on the target node: map it with --target-storage SRC:DST"},
}

func explainMigration(err error) error {
	for _, h := range migrationHints {
		if strings.Contains(err.Error(), h.match) {
			return fmt.Errorf("%w\n  Proxmox refused: %s", err, h.hint)
		}
	}
	return err
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
