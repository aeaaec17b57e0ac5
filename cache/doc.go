// Package cache is pve-image's content-addressed store on disk.
//
// It holds two namespaces under one directory:
//
//	blobs/sha256/<hex>     registry blobs (manifests, configs, layers) by digest
//	templates/<key>/       converted templates by a key the caller derives
//	                       from everything that determines their bytes
//	tmp/                   work in progress, each file locked by its writer
//	locks/                 build locks
//
// Every write goes to tmp/ first and is renamed into place, so a crash never
// leaves a partial entry; blobs are hashed as they are written and refused
// on mismatch. Nothing is trusted when read either: a blob PutBlob finds
// present is hashed before it says so (a rotten one is dropped and fetched
// again), ReadBlob hashes what it returns, and a template lookup checks the
// file its entry.json names (there, regular, of its size; the bytes are
// hashed by whoever copies them, see DropTemplate).
//
// Everything that reads or writes an entry locks it (flock, so across
// processes, and released when a process dies): readers shared, for as long
// as a Hold they read under lives; removal exclusive and without waiting,
// skipping what it cannot lock. So prune and the CRI's image removal never
// take a file from under a running conversion, copy or upload. A template
// is removed in one rename out of templates/, so a lookup sees all of it or
// nothing. Work files are locked by their writer too, so the next run
// removes exactly those whose writer died. Build locks make concurrent
// writers of one entry, in any process, do the work once.
//
// The cache knows digests and keys, nothing about images, registries or
// Proxmox.
package cache
