// Package runtime serves the Kubernetes CRI (runtime.v1) over gRPC.
//
// The ImageService is complete: PullImage pulls and converts an image into
// a Proxmox template (registry, template) and puts it into the template
// store, a local directory such as /var/lib/vz/template/cache on a Proxmox
// node or a Proxmox storage over the API; images are identified by their
// config digest, named by normalised tags and by repo@digest of what was
// pulled, as containerd names them.
//
// The RuntimeService runs each container as a Proxmox LXC container,
// created from its image's template through the proxmox package. A pod
// sandbox is a record in a small local store (it survives restarts) with
// the pod's addresses, given from a pod range and set as the static,
// host-managed address of its containers' NIC; a pod's containers run one
// at a time. On the Proxmox node (Config.LXC), the daemon reaches the
// containers with LXC's tools through package lxcnode: pve-image-init
// supervises the program, and the watcher collects its output into
// kubelet's log file and its exit status; exec and port-forward go through
// lxc-attach and a streaming server. Off the node those fail with the
// reason.
//
// Where the root disks' storage clones copy-on-write (LVM-thin, ZFS, RBD,
// btrfs), a pod's container is a linked clone of a template container
// made once per image, storage and node, configured for the pod after the
// clone; elsewhere Proxmox unpacks the template for each container
// (clones.go). Every Proxmox call is timed (pve.go), so that the metrics
// tell the daemon's own time in a CRI call from Proxmox's (metrics.go).
//
// Files are named by the RPC they implement, as in containerd's CRI server.
package runtime
