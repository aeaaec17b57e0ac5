package main

import (
	"io"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// restrict applies a CRI security context to what this process starts
// next: capabilities out of the bounding set (an execve can then not
// grant them, not even to root) and no_new_privs. The init itself keeps
// what it has; the exec helper restricts itself before it execs.
//
// Both are per thread: the calling goroutine stays on this thread for
// good, so that the fork or exec that follows inherits them.
func restrict(spec *runspec.Spec) error {
	runtime.LockOSThread()
	for _, c := range spec.CapDrop {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != syscall.EINVAL {
			return err // EINVAL: a capability this kernel does not know
		}
	}
	if len(spec.CapDrop) > 0 {
		unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	}
	if spec.NoNewPrivs {
		return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	}
	return nil
}

// remountRootReadonly makes / read-only (readOnlyRootFilesystem) once the
// init has written what it writes there; the tmpfs mounts, /dev and the
// volumes stay as they are. The flags a bind remount must repeat are read
// from the mount itself.
func remountRootReadonly() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return err
	}
	keep := uintptr(st.Flags) & (unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC | unix.ST_NOATIME | unix.ST_NODIRATIME | unix.ST_RELATIME)
	return unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|keep, "")
}

// catMain prints the start of a regular file (pve-image-init cat PATH): the
// init runs it as the program's user to copy the termination message, so
// that a link the program put there reads only what the program may read.
func catMain(args []string) int {
	if len(args) != 1 {
		logf("usage: pve-image-init cat PATH")
		return 2
	}
	f, err := os.OpenFile(args[0], os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return 1
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return 1
	}
	if _, err := io.Copy(os.Stdout, io.LimitReader(f, runspec.MaxTerminationMessage)); err != nil {
		return 1
	}
	return 0
}

// copyTermination copies the program's termination message into the state
// directory, reading it as the program's user.
func copyTermination(spec *runspec.Spec, path string) {
	r, w, err := os.Pipe()
	if err != nil {
		return
	}
	pid, err := syscall.ForkExec("/proc/self/exe", []string{"pve-image-init", "cat", path}, &syscall.ProcAttr{
		Env:   []string{},
		Files: []uintptr{0, w.Fd(), 2},
		Sys:   &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: spec.UID, Gid: spec.GID, Groups: spec.Groups}},
	})
	w.Close()
	if err != nil {
		r.Close()
		logf("termination message: %v", err)
		return
	}
	b, _ := io.ReadAll(io.LimitReader(r, runspec.MaxTerminationMessage))
	r.Close()
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	if err := os.WriteFile(runspec.TerminationPath, b, 0o600); err != nil {
		logf("termination message: %v", err)
	}
}
