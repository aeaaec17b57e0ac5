// Package export turns a Proxmox container, or its vzdump archive, into an
// OCI image: `pve-image export`. Package lifecycle's Restore makes a
// container from such an image again, through run's path, with the
// configuration recorded here (labels.go).
//
// It owns the vzdump LXC archive as Proxmox writes it
// (shared/reference/proxmox-lifecycle.md §3): ./etc/vzdump/pct.conf first,
// then pct.fw, then the root file system and, per volume mount point with
// backup=1, that volume's tree under its path; plain, gzip or zstd (lzo is
// refused: no maintained Go library decodes it). The root file system goes
// through imgconv's flattener as if it were one layer, so a hostile archive
// is refused as a hostile layer is (names that climb out of the root, paths
// Linux cannot create, ids of 65536 and above, hardlinks to nothing), named
// by archive and member.
//
// When the container's Proxmox config holds pve-image run's record (the
// description line lifecycle.Record writes, which the container cannot
// change) and its /etc/pve-image/image.json names the same image, the
// container was made from a pve-image template: the image is then the
// source image's layers as they are (pushed by cross-repository mount,
// never uploaded again) and one layer holding what the container changed
// since it was created, compared with the template it was created from
// (the source image as converted): added and changed entries, whiteouts for
// deleted ones and an opaque marker where a directory was replaced as a
// whole (diff.go). image.json alone never decides what is pulled with the
// exporter's credentials: the container's root can write it (origin.go).
// What vzdump leaves out of every archive, and what pve-image-init and
// Proxmox write at every start, are never part of that layer (exclude.go).
// Otherwise one layer holds the whole root file system, less the same.
//
// It sits below cmd and lifecycle and above template, imgconv, registry,
// proxmox and cache: cmd → export → template/imgconv/registry/proxmox/cache.
// It does not import runtime, lifecycle or cmd, and it never speaks the
// Proxmox API itself (package proxmox does).
package export
