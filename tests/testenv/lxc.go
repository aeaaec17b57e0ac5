package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// The id map Proxmox gives unprivileged containers.
const (
	MapBase = pvelxc.MapBase
	MapSize = pvelxc.MapSize
)

// RequireUserns skips unless this machine can run Proxmox's unprivileged
// extraction and containers.
func RequireUserns(t testing.TB) {
	t.Helper()
	if err := pvelxc.Check(); err != nil {
		Missing(t, "%v", err)
	}
}

// ExtractAsProxmox unpacks template into a new directory exactly as `pct
// create` does for an unprivileged container and returns the directory.
func ExtractAsProxmox(t testing.TB, template string) string {
	t.Helper()
	RequireUserns(t)
	// The mapped root must be able to reach the directory: t.TempDir()'s
	// ancestors are private to the real root.
	top := lxcDir(t)
	root := filepath.Join(top, "rootfs")
	if err := pvelxc.Extract(template, root); err != nil {
		t.Fatal(err)
	}
	return root
}

func lxcDir(t testing.TB) string {
	top, err := os.MkdirTemp("", "pve-image-ct-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	return top
}

// Node is what a test compares of one extracted path, ids as the container
// sees them.
type Node struct {
	Path   string
	Type   string // "dir", "file", "symlink", "fifo", "other"
	Mode   uint32 // permission bits with setuid, setgid and sticky
	UID    int
	GID    int
	SHA256 string // files: first 12 hex digits
	Link   string // symlinks
	Nlink  uint64 // files
	Xattrs []string
}

func (n Node) String() string {
	s := fmt.Sprintf("%s %s %04o %d:%d", n.Path, n.Type, n.Mode, n.UID, n.GID)
	switch n.Type {
	case "file":
		s += " sha256:" + n.SHA256
		if n.Nlink > 1 {
			s += fmt.Sprintf(" links=%d", n.Nlink)
		}
	case "symlink":
		s += " -> " + n.Link
	}
	if len(n.Xattrs) > 0 {
		s += " xattrs=" + strings.Join(n.Xattrs, ",")
	}
	return s
}

// ReadTree lists an extracted tree with container-side ids, in walk order.
func ReadTree(t testing.TB, root string) []Node {
	t.Helper()
	var out []Node
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := Node{Path: rel, Mode: st.Mode & 0o7777, UID: int(st.Uid) - MapBase, GID: int(st.Gid) - MapBase}
		switch {
		case fi.IsDir():
			n.Type = "dir"
		case fi.Mode().IsRegular():
			n.Type, n.Nlink = "file", uint64(st.Nlink)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			n.SHA256 = hex.EncodeToString(sum[:])[:12]
		case fi.Mode()&os.ModeSymlink != 0:
			n.Type = "symlink"
			n.Link, _ = os.Readlink(p)
		case fi.Mode()&os.ModeNamedPipe != 0:
			n.Type = "fifo"
		default:
			n.Type = "other"
		}
		n.Xattrs = listXattrs(p)
		out = append(out, n)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func listXattrs(p string) []string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return nil
	}
	var names []string
	for _, x := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if x == "security.capability" {
			// Restored inside a user namespace, a capability gains the
			// namespace's root id (VFS_CAP_REVISION_3): compare the name.
			names = append(names, x)
			continue
		}
		v := make([]byte, 256)
		m, _ := unix.Lgetxattr(p, x, v)
		names = append(names, fmt.Sprintf("%s=%x", x, v[:max(m, 0)]))
	}
	slices.Sort(names)
	return names
}

// Hash12 is the short content hash ReadTree reports.
func Hash12(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:12]
}
