package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The id map Proxmox gives unprivileged containers (proxmox.md §1).
const (
	MapBase = 100000
	MapSize = 65536
)

// RequireUserns skips unless this machine can run Proxmox's unprivileged
// extraction: root, lxc-usernsexec, and root:100000:65536 in /etc/subuid and
// /etc/subgid.
func RequireUserns(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("lxc-usernsexec"); err != nil {
		Missing(t, "lxc-usernsexec not found (apt-get install lxc uidmap)")
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, _ := os.ReadFile(f)
		if !bytes.Contains(b, []byte(fmt.Sprintf("root:%d:%d", MapBase, MapSize))) {
			Missing(t, "%s lacks root:%d:%d (.ci/run adds it)", f, MapBase, MapSize)
		}
	}
}

// ProxmoxTarFlags is pve-container's restore_tar_archive_command after the
// compression flag, with PVE::Storage::Plugin::COMMON_TAR_FLAGS.
func ProxmoxTarFlags(rootdir string) []string {
	return []string{"--totals", "--one-file-system", "-p", "--sparse", "--numeric-owner", "--acls",
		"--xattrs", "--xattrs-include=user.*", "--xattrs-include=security.capability",
		"--warning=no-file-ignored", "--warning=no-xattr-write",
		"-C", rootdir, "--skip-old-files", "--anchored", "--exclude", "./dev/*"}
}

// ExtractAsProxmox unpacks template into a new directory exactly as `pct
// create` does for an unprivileged container and returns the directory.
func ExtractAsProxmox(t testing.TB, template string) string {
	t.Helper()
	RequireUserns(t)
	// The mapped root must be able to reach the directory: t.TempDir()'s
	// ancestors are private to the real root.
	top, err := os.MkdirTemp("", "pve-image-rootfs-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(top, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// The container's root owns its rootfs, as after Proxmox's mkfs/chown.
	if err := os.Chown(root, MapBase, MapBase); err != nil {
		t.Fatal(err)
	}
	comp := map[string]string{".gz": "-z", ".xz": "-J", ".zst": "--zstd", ".bz2": "-j"}[filepath.Ext(template)]
	args := []string{"-m", fmt.Sprintf("u:0:%d:%d", MapBase, MapSize), "-m", fmt.Sprintf("g:0:%d:%d", MapBase, MapSize), "--",
		"tar", "xpf", "-"}
	if comp != "" {
		args = append(args, comp)
	}
	args = append(args, ProxmoxTarFlags(root)...)
	in, err := os.Open(template)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd := exec.Command("lxc-usernsexec", args...)
	cmd.Stdin = in
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("Proxmox's extraction failed: %v\n%s", err, out)
	}
	return root
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
