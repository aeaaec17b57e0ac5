package export

import (
	"strings"

	"github.com/pve-image/pve-image/template"
)

// What the layer of changes never holds, kept in the exported image as the
// template had it (added, changed or deleted, it is left alone):
//
//   - What vzdump leaves out of every archive, so that its absence says
//     nothing about the container (pve-container VZDump/LXC.pm archive;
//     pve-manager VZDump.pm stdexcludes; proxmox-lifecycle.md §3): any
//     lost+found (--no-anchored), what is below /tmp and /var/tmp, *.pid
//     files below /var/run. Below /dev, too: Proxmox never unpacks a
//     template's /dev/* (--exclude ./dev/*), and LXC mounts a fresh /dev
//     over it.
//   - What is rewritten for every container at every start: /etc/hostname
//     and /etc/hosts (pve-image-init writes them when the image has none;
//     Proxmox writes them into the distributions it manages),
//     /etc/resolv.conf (pve-image-init from the DHCP lease or --dns,
//     Proxmox from its DNS settings), and pve-image-init's state directory
//     /run/pve-image. They describe that container — its name, its
//     address — not its image: carried into the image, every container
//     made from it would start with the old container's name and address
//     (pve-image-init only fills these files when they are missing or
//     empty), and a restore gets its own anyway.
//   - pve-image's description of the template, /etc/pve-image/image.json:
//     every conversion writes its own, and the container's is stale (it
//     names the image the container was made from, not the exported one).
//   - What is below a mount point: a volume's data is not the root file
//     system's (it goes into a layer of its own with --volumes, and is
//     never in the archive for volumes without backup=1 and for bind
//     mounts).
//
// The one layer of a whole root file system leaves the same out
// (writeRootfs). vzdump's own ./etc/vzdump/pct.conf and pct.fw never reach
// the tree (feed).

// runtimeFiles are rewritten at every start (above).
var runtimeFiles = map[string]bool{
	"etc/hostname":    true,
	"etc/hosts":       true,
	"etc/resolv.conf": true,
}

// excluded reports whether path p (relative, cleaned) is left out of the
// layer of changes; mounts are the mount points' paths.
func excluded(p string, mounts []string) bool {
	if p == "" {
		return false
	}
	if runtimeFiles[p] || p == template.MetaPath || p == "run/pve-image" || strings.HasPrefix(p, "run/pve-image/") {
		return true
	}
	for _, c := range strings.Split(p, "/") {
		if c == "lost+found" {
			return true
		}
	}
	for _, d := range []string{"dev/", "tmp/", "var/tmp/"} {
		if strings.HasPrefix(p, d) {
			return true
		}
	}
	if strings.HasPrefix(p, "var/run/") && strings.HasSuffix(p, ".pid") {
		return true
	}
	for _, m := range mounts {
		if strings.HasPrefix(p, m+"/") {
			return true
		}
	}
	return false
}
