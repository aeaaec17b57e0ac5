// Package batch builds a fleet's templates from a build file, the way a CI
// job does: it reads and validates the file (pve-images.yaml: images,
// platforms, conversion options, outputs) with errors naming the file, the
// line and the key; pins tags in a lock file beside it; splits the work
// into stable shards; converts in parallel over one cache; delivers each
// template to a directory, a template registry and Proxmox storages; and
// reports per image and platform (JSON, JUnit). Sync makes a cluster's
// storages hold what the file lists, and prunes what pve-image made before.
//
// It drives template.Builder (one per platform, sharing the cache: blobs
// common to several images are fetched once, and a template already in the
// cache or the template registry is not built again), tmplreg for the
// template registry and pvestore for Proxmox, and imports nothing above
// them; cmd/pve-image parses flags and calls Runner. It must never decide
// what a template's bytes are (template does), speak to Proxmox or a
// registry but through those packages, or leave anything half-written: the
// lock, reports and output files are written beside their destination and
// renamed into place.
package batch
