// Package cache is pve-image's content-addressed store on disk.
//
// It holds two namespaces under one directory:
//
//	blobs/sha256/<hex>     registry blobs (manifests, configs, layers) by digest
//	templates/<key>/       converted templates by a key the caller derives
//	                       from everything that determines their bytes
//
// Every write goes to tmp/ first and is renamed into place, so a crash never
// leaves a partial entry; blobs are hashed as they are written and refused
// on mismatch. Per-key file locks (flock) let concurrent processes do each
// piece of work once. The lock is an optimisation, not the safety net: two
// writers that race still produce the same content, and the rename decides.
//
// The cache knows digests and keys, nothing about images, registries or
// Proxmox.
package cache
