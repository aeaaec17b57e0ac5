// Package lxcnode reaches the LXC containers of the Proxmox node this
// process runs on, the way `pct` does on the node: lxc-info finds a
// container's init, lxc-attach runs commands in it (in all its namespaces,
// its cgroup and its LSM profile), and its files are read through
// /proc/PID/root with openat2(RESOLVE_IN_ROOT), so that no symlink inside
// the container can lead a read out of it.
//
// It needs root and LXC's tools, and containers named by their VMID under
// one LXC path (/var/lib/lxc on Proxmox). It never speaks the Proxmox
// API (package proxmox does) and never holds a file of a container open
// between calls: an open file would keep Proxmox from unmounting the
// container's volumes when it stops.
package lxcnode
