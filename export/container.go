package export

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pve-image/pve-image/proxmox"
)

// Backup says how to back a container up for an export.
type Backup struct {
	// Node is the container's node; "" finds it.
	Node string
	VMID int
	// Storage is the backup storage; "" takes the node's first active
	// one that takes backups. Its files must be readable here.
	Storage string
	// Mode is vzdump's: snapshot (the default; Proxmox falls back to
	// suspend where a volume cannot be snapshotted), suspend or stop.
	Mode string
}

// Container backs a container up with vzdump and exports the archive.
// Proxmox has no API that hands out a backup's bytes
// (proxmox-lifecycle.md §3), so the archive is read where vzdump wrote it:
// this machine must be the node, or have the storage mounted at the same
// path. The archive is removed once the image is written; after a failure
// it is kept, and the error says where.
func (e *Exporter) Container(ctx context.Context, pve *proxmox.Client, b Backup, r Request) (*Result, error) {
	if _, err := e.checkDestination(r.To); err != nil {
		return nil, err
	}
	switch b.Mode {
	case "":
		b.Mode = "snapshot"
	case "snapshot", "suspend", "stop":
	default:
		return nil, fmt.Errorf("--mode %q: want snapshot, suspend or stop", b.Mode)
	}
	node := b.Node
	if node == "" {
		n, err := pve.FindContainer(ctx, b.VMID)
		if err != nil {
			return nil, err
		}
		node = n
	}
	storage, err := backupStorage(ctx, pve, node, b.Storage)
	if err != nil {
		return nil, err
	}
	e.say("backing up CT %d on %s to %s (vzdump, %s mode)", b.VMID, node, storage, b.Mode)
	a, err := pve.CreateBackupArchive(ctx, proxmox.BackupRequest{Node: node, VMID: b.VMID, Storage: storage, Mode: b.Mode,
		Compress: "zstd", Notes: fmt.Sprintf("pve-image export of CT %d", b.VMID)})
	if err != nil {
		return nil, err
	}
	kept := fmt.Sprintf("The archive is kept: %s (%s on node %s); remove it with `pvesm free %s` on the node", a.Volid, a.Path, node, a.Volid)
	if err := readableHere(ctx, pve, node, storage, b.VMID, a); err != nil {
		return nil, fmt.Errorf("%w\n  %s", err, kept)
	}
	res, err := e.Archive(ctx, a.Path, r)
	if err != nil {
		return nil, fmt.Errorf("%w\n  %s, or export it again with `pve-image export %s --to %s`", err, kept, a.Path, r.To)
	}
	if err := pve.DeleteVolume(ctx, node, storage, a.Volid); err != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("the archive made for the export, %s, could not be removed: %v", a.Volid, err))
	} else {
		res.Notes = append(res.Notes, fmt.Sprintf("removed the archive made for the export (%s)", a.Volid))
	}
	if a.Mode != "" && a.Mode != b.Mode {
		res.Notes = append(res.Notes, fmt.Sprintf("vzdump archived the container in %s mode (asked: %s)", a.Mode, b.Mode))
	}
	return res, nil
}

// backupStorage is the storage named (checked to take backups as files),
// or the node's first active one that does.
func backupStorage(ctx context.Context, pve *proxmox.Client, node, name string) (string, error) {
	if name != "" {
		st, err := pve.Storage(ctx, node, name)
		if err != nil {
			return "", fmt.Errorf("backup storage %s on %s: %w", name, node, err)
		}
		if !st.Holds("backup") {
			return "", fmt.Errorf("storage %s on %s takes no backups (content: %s): name one that does with --backup-storage", name, node, st.Content)
		}
		if st.Type == "pbs" {
			return "", fmt.Errorf("storage %s on %s is a Proxmox Backup Server, whose backups are no vzdump archive pve-image can read: name a directory, NFS or CIFS storage with --backup-storage", name, node)
		}
		return name, nil
	}
	sts, err := pve.Storages(ctx, node, "backup")
	if err != nil {
		return "", err
	}
	return pickBackupStorage(node, sts)
}

// pickBackupStorage is the first active storage that takes backups as
// vzdump archives: a Proxmox Backup Server (type pbs) keeps them in
// chunks of its own, no file to read.
func pickBackupStorage(node string, sts []proxmox.StorageInfo) (string, error) {
	pbs := ""
	for _, s := range sts {
		if !s.Holds("backup") || s.Active == 0 {
			continue
		}
		if s.Type == "pbs" {
			pbs += " " + s.Name
			continue
		}
		return s.Name, nil
	}
	if pbs != "" {
		return "", fmt.Errorf("node %s backs up only to Proxmox Backup Server (%s), whose backups are no vzdump archive pve-image can read: add backup to a directory, NFS or CIFS storage's content, or name one with --backup-storage", node, strings.TrimSpace(pbs))
	}
	return "", fmt.Errorf("node %s has no active storage for backups (content backup): add backup to a storage's content, or name one with --backup-storage", node)
}

// readableHere checks that the archive vzdump wrote on the node is the
// file at the same path here: there, and of the size Proxmox lists.
func readableHere(ctx context.Context, pve *proxmox.Client, node, storage string, vmid int, a proxmox.BackupArchive) error {
	how := fmt.Sprintf("Proxmox has no API to download a backup, so pve-image reads the archive where vzdump wrote it: "+
		"run pve-image on node %s, mount storage %s here at the same path, or copy the archive here and give its path: pve-image export ARCHIVE --to REF", node, storage)
	fi, err := os.Stat(a.Path)
	if err != nil {
		what := err.Error()
		if errors.Is(err, os.ErrNotExist) {
			what = "there is no such file here"
		}
		return fmt.Errorf("CT %d was backed up to %s on node %s, but this machine cannot read it at %s (%s).\n  %s", vmid, storage, node, a.Path, what, how)
	}
	list, err := pve.Backups(ctx, node, storage, vmid)
	if err != nil {
		return err
	}
	for _, b := range list {
		if b.Volid == a.Volid && b.Size > 0 && b.Size != fi.Size() {
			return fmt.Errorf("CT %d was backed up to %s on node %s as %s, but the file of that name here is another: %d bytes, where Proxmox lists %d.\n  %s",
				vmid, storage, node, a.Path, fi.Size(), b.Size, how)
		}
	}
	return nil
}
