package pvesim

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Bind mount points: what pve-container does when it mounts them, at
// create (mount_all, LXC.pm L1810, before the template is unpacked) and at
// every start (lxc-pve-prestart-hook L91-151 with mountpoint_stage and
// mountpoint_insert_staged, LXC.pm L2083-2130).

// mountBinds checks and prepares the bind mount points mps, in order, as
// __mountpoint_mount (LXC.pm L2133, its "bind" branch L2299) does:
//
//   - the host path must be a directory: "directory '<path>' does not
//     exist" (it is tested with -d, which follows symlinks);
//   - no component of the host path may be a symlink: bindmount walks it
//     from '/' with walk_tree_nofollow (L1986 __bindmount_prepare), which
//     names the place "//<path>";
//   - no component of the target inside the container may be a symlink
//     (or anything but a directory), and missing ones are created, mode
//     0755, owned by the container's root (walk_tree_nofollow_fd,
//     L1938-1978). At create the walk starts at the rootfs path
//     (__mount_prepare_rootdir) and comes first; at start it starts at the
//     rootfs mount, named "/" with the path "./<mp>"
//     (mountpoint_insert_staged), after the host checks.
//
// A mount point inside an earlier one is walked through the earlier one's
// host directory, which is mounted there by then. rootfs is the container's
// rootfs on the host; without one (no RealLXC) only the host is checked.
func mountBinds(rootfs string, mps []*mountPoint, atCreate bool, uid, gid int) error {
	mounted := map[string]string{} // target inside the container -> host directory
	for _, mp := range mps {
		vol, target := mp.m["volume"], mp.m["mp"]
		if atCreate && rootfs != "" {
			if err := walkNoFollow(rootfs, cleanRootdir(rootfs), target, true, uid, gid, mounted); err != nil {
				return err
			}
		}
		if fi, err := os.Stat(vol); err != nil || !fi.IsDir() {
			return fmt.Errorf("directory '%s' does not exist", vol)
		}
		if err := walkNoFollow("/", "/", vol, false, -1, -1, nil); err != nil {
			return err
		}
		if !atCreate && rootfs != "" {
			if err := walkNoFollow(rootfs, "/", "./"+target, true, uid, gid, mounted); err != nil {
				return err
			}
		}
		mounted[containerPath(target)] = vol
	}
	return nil
}

// cleanRootdir is __mount_prepare_rootdir's cleanup: no double and no
// trailing slashes.
func cleanRootdir(dir string) string {
	for strings.Contains(dir, "//") {
		dir = strings.ReplaceAll(dir, "//", "/")
	}
	if len(dir) > 1 {
		dir = strings.TrimRight(dir, "/")
	}
	return dir
}

// containerPath is a path inside the container as its components, joined
// by '/', without '.' and empty ones (verify_lxc_mp_string refuses '..').
func containerPath(p string) string {
	var comps []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			comps = append(comps, c)
		}
	}
	return strings.Join(comps, "/")
}

// walkNoFollow is walk_tree_nofollow_fd (LXC.pm L1938): it descends from
// the host directory start, which messages call name, through the
// components of subdir without following symlinks, and with mkdir creates
// the missing ones (owned by uid:gid unless uid < 0). mounted maps
// positions below start to the host directories mounted there.
func walkNoFollow(start, name, subdir string, mkdir bool, uid, gid int, mounted map[string]string) error {
	cur, dir := start, name
	var rel []string
	for _, c := range strings.Split(subdir, "/") {
		if c == "" { // File::Spec->splitdir's empty components
			continue
		}
		dir += "/" + c
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		switch {
		case err == nil && (fi.Mode()&fs.ModeSymlink != 0 || !fi.IsDir()):
			// openat(O_NOFOLLOW | O_DIRECTORY): ELOOP or ENOTDIR.
			return fmt.Errorf("symlink encountered at: %s", dir)
		case errors.Is(err, fs.ErrNotExist):
			if !mkdir {
				return fmt.Errorf("cannot open directory %s: %s", dir, strerror(err))
			}
			// mkdirat's errors (EEXIST from a concurrent start) are
			// ignored; the second openat decides.
			os.Mkdir(next, 0o755)
			if fi, err := os.Lstat(next); err != nil || !fi.IsDir() {
				if err == nil {
					err = syscall.ENOTDIR
				}
				return fmt.Errorf("failed to create path: %s: %s", dir, strerror(err))
			}
			if uid >= 0 {
				os.Lchown(next, uid, gid)
			}
		case err != nil:
			return fmt.Errorf("cannot open directory %s: %s", dir, strerror(err))
		}
		cur = next
		if c != "." {
			rel = append(rel, c)
			if host, ok := mounted[strings.Join(rel, "/")]; ok {
				cur = host
			}
		}
	}
	return nil
}

// strerror is Perl's "$!": the C library's message for an errno.
func strerror(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err.Error()
	}
	msg := errno.Error()
	if msg == "" {
		return msg
	}
	return strings.ToUpper(msg[:1]) + msg[1:]
}
