// Package imgconv turns an image's layers into one root filesystem and the
// facts Proxmox needs about it.
//
// It owns the OCI layer rules: whiteouts and opaque whiteouts that hide only
// lower layers, replacement of files by directories and back, hardlinks within
// and across layers, and the limits that keep hostile layers from exhausting
// the machine. It also owns what can be learnt from the flattened tree: the
// ostype Proxmox will detect, the architecture of its binaries and the users
// its config names.
//
// It is pure: layers come in as readers, a tar stream goes out. It never
// touches the network, the cache or Proxmox. It does not build on
// go-containerregistry's mutate.Extract, which emits dangling hardlinks,
// re-points hardlink sets after an overwrite and lets a whiteout hide entries
// of its own layer (see perf.md §1.4); the tests in this package cover each of
// those cases.
package imgconv
