// Package lifecycle runs images as Proxmox containers and keeps them
// running across image versions: run (template, placement, NICs, volumes),
// update and rollback as journaled sequences of Proxmox steps, and
// migration.
//
// It owns what a container needs beyond one API call: which node takes it
// (placement.go), the record of the image it runs, kept in its description
// (record.go), and the update sequence (update.go, steps.go), whose every
// step is written to a journal on this machine before it is taken and can
// be taken again (journal.go), so that `update --resume` is a loop over the
// journal. The sequence rests on what Proxmox allows and destroys
// (shared/reference/proxmox-lifecycle.md): a root disk cannot move between
// containers; a forced restore destroys every volume the container owns; a
// mount point volume can be reassigned to another container on the same
// node while its own is stopped. So an update parks the volumes on a
// temporary container of its own, backs the container up (the rollback
// point), restores an archive of the new image's root file system over it
// under the same VMID, and brings the volumes back.
//
// It never speaks HTTP itself: every Proxmox call goes through package
// proxmox. It never destroys a container that holds a volume mount point,
// and never overwrites one by a restore before its volumes are parked.
package lifecycle
