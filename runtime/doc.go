// Package runtime serves the Kubernetes CRI (runtime.v1) over gRPC.
//
// The ImageService is complete: PullImage pulls and converts an image into
// a Proxmox template (registry, template) and puts it into the template
// store, a local directory such as /var/lib/vz/template/cache on a Proxmox
// node or a Proxmox storage over the API; images are identified by their
// config digest, named by normalised tags and by repo@digest of what was
// pulled, as containerd names them.
//
// The RuntimeService is compact: a pod sandbox is a record in a small local
// store (it survives restarts) that groups containers by the pod's uid;
// each container is a Proxmox LXC container created from its image's
// template through the proxmox package. Exec, Attach and PortForward are
// not implemented: they need a streaming server into LXC that Proxmox's
// API does not offer for API tokens.
//
// Files are named by the RPC they implement, as in containerd's CRI server.
package runtime
