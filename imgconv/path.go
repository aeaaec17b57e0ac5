package imgconv

import (
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
