// Package pvestore puts templates on Proxmox storages and takes the ones
// pve-image made off again: Push uploads one template to a node (and with
// all nodes to every other node whose storage of that name is not shared),
// Sync makes a set of storages hold a set of templates, uploading only
// what is missing (once per shared storage) and, when asked, pruning older
// templates pve-image made for the same images.
//
// A template on a storage is known by its name,
// <name>_<tag>_<arch>.<sha12>.tar.zst (template.StorageName): the same name
// and size mean the same bytes, so nothing is uploaded twice. Only names of
// that shape, for image names being synced, are ever removed: a template
// pve-image did not make is never touched, whatever the options.
//
// It talks to Proxmox only through package proxmox (the Client interface
// below, which *proxmox.Client satisfies) and knows nothing of images,
// registries or the cache: callers hand it files. It sits between cmd/batch
// and template/proxmox, and must never convert, nor write anywhere but the
// storages it is given.
package pvestore
