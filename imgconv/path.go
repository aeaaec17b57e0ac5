package imgconv

import (
	"fmt"
	"path"
	"strings"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	// aufsMetaPrefix marks AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs,
	// .wh..wh.orph); see perf.md §2.6.
	aufsMetaPrefix = ".wh..wh."
)

// What a template may hold. Proxmox extracts it with GNU tar (tar xpf -
// ... -C ROOTFS), which opens ROOTFS once and creates every member relative
// to that descriptor (mkdirat, openat, symlinkat, linkat) under the name the
// template gives it: "./" included, a directory's trailing "/" left off.
// How long the path to ROOTFS is does not matter. The kernel refuses a path
// argument of PATH_MAX (4096) bytes or more, NUL included, and a symlink
// target alike; the file systems Proxmox gives a container's root (ext4 on
// raw, LVM and RBD volumes, ZFS and btrfs subvolumes) refuse a file name of
// more than NAME_MAX (255) bytes. Lengths are in bytes, whatever the
// encoding.
const (
	maxNameLen   = 255  // one component of a member name
	maxMemberLen = 4095 // a member name, "./" included; a symlink target
	memberPrefix = "./" // what the template puts before every path
)

// checkPath refuses a cleaned path the template could not hold: a component
// of more than maxNameLen bytes, or more than maxMemberLen bytes once the
// template has put "./" before it. A hardlink target is such a path too.
func checkPath(p string) error {
	for rest := p; rest != ""; {
		c, next, _ := strings.Cut(rest, "/")
		if len(c) > maxNameLen {
			return fmt.Errorf("%w: %s is %d bytes", ErrNameTooLong, quoteShort(c), len(c))
		}
		rest = next
	}
	if n := len(memberPrefix) + len(p); n > maxMemberLen {
		return fmt.Errorf("%w: it is %d bytes with the leading %q", ErrPathTooLong, n, memberPrefix)
	}
	return nil
}

// checkTarget refuses a symlink target the kernel would not store.
func checkTarget(target string) error {
	if len(target) > maxMemberLen {
		return fmt.Errorf("symlink target of %d bytes: %w", len(target), ErrPathTooLong)
	}
	return nil
}

// cleanName turns a tar member name into a path relative to the root: no
// leading "/" or "./", no "." or ".." components, no trailing slash. The root
// itself is "". Absolute names are made relative as tar does; a name that
// climbs above the root is refused.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", ErrUnsafePath
	}
	p := path.Clean(strings.TrimLeft(name, "/"))
	switch {
	case p == ".":
		return "", nil
	case p == "..", strings.HasPrefix(p, "../"):
		return "", ErrUnsafePath
	}
	return p, nil
}

// splitPath returns the directory and base name of a cleaned path.
func splitPath(p string) (dir, base string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// joinPath joins a cleaned directory and a base name.
func joinPath(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}
