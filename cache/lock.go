package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Locks. Three kinds, all flock(2), so they end with the process that
// holds them and work across processes:
//
//   - Entry locks are on the entry itself (the blob file, the template
//     directory). Readers hold them shared for as long as they use the
//     entry; removal takes them exclusive and without waiting, and skips
//     what it cannot take. A lock is taken on an open descriptor and then
//     checked against the path: an entry removed or replaced between the
//     open and the lock is not what the path names any more, and the
//     reader looks again.
//   - Work locks are entry locks on what is being written in tmp/ (and
//     beside -o): the writer holds its file shared from creation to
//     rename, so a lock that can be taken exclusively marks the leftover of
//     a dead process.
//   - Build locks (locks/<kind>-<id>.lock) are exclusive and make
//     concurrent writers of one entry wait for the first. Whoever holds one
//     may delete its file; Lock checks the path after locking for that.

// fileID names an inode.
type fileID struct{ dev, ino uint64 }

func statID(st *unix.Stat_t) fileID { return fileID{uint64(st.Dev), st.Ino} }

// fdID is the inode open as fd.
func fdID(fd int) (fileID, unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileID{}, st, err
	}
	return statID(&st), st, nil
}

// pathID is the inode path names, not following a final symlink.
func pathID(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fileID{}, err
	}
	return statID(&st), nil
}

// still reports whether path still names the inode open as fd.
func still(fd int, path string) bool {
	id, st, err := fdID(fd)
	if err != nil || st.Nlink == 0 {
		return false
	}
	pid, err := pathID(path)
	return err == nil && pid == id
}

func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// openNoFollow opens path for reading and locking: a file or a directory,
// never through a symlink, never blocking on a FIFO, closed on exec so
// that children (lxc-attach and the like) do not inherit the lock.
func openNoFollow(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK|flags, 0)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// lockEntry opens path and locks it (how: LOCK_SH or LOCK_EX, maybe
// with LOCK_NB), then makes sure path still names what was locked. It
// returns fs.ErrNotExist when nothing is there, unix.EWOULDBLOCK when
// LOCK_NB and another holds it.
func lockEntry(path string, flags, how int) (int, fileID, unix.Stat_t, error) {
	for range lockAttempts {
		fd, err := openNoFollow(path, flags)
		if err != nil {
			return -1, fileID{}, unix.Stat_t{}, &os.PathError{Op: "open", Path: path, Err: err}
		}
		if err := flock(fd, how); err != nil {
			unix.Close(fd)
			return -1, fileID{}, unix.Stat_t{}, err
		}
		id, st, err := fdID(fd)
		if err != nil {
			unix.Close(fd)
			return -1, fileID{}, st, err
		}
		if pid, err := pathID(path); err == nil && pid == id && st.Nlink > 0 {
			return fd, id, st, nil
		}
		// Removed or replaced while we waited for the lock: look again.
		unix.Close(fd)
	}
	return -1, fileID{}, unix.Stat_t{}, fmt.Errorf("lock %s: replaced %d times while being locked", path, lockAttempts)
}

// lockAttempts bounds lockEntry's retries: each needs another removal or
// replacement of the entry while it is being locked.
const lockAttempts = 100

// Hold keeps cache entries in place while they are used. Each blob and
// template read under a Hold (see WithHold) is locked shared until Close,
// and nothing removes a locked entry: prune, RemoveTemplate and
// RemoveBlob skip it, in this process and any other. The locks are on
// open descriptors without finalizers, so a Hold that is never closed
// lasts exactly as long as its process, which is what a command-line run
// wants; a daemon closes its Holds.
type Hold struct {
	mu     sync.Mutex
	fds    map[fileID]int
	closed bool
}

// NewHold returns an empty Hold.
func NewHold() *Hold { return &Hold{fds: map[fileID]int{}} }

type holdKey struct{}

// WithHold returns ctx carrying h: the cache's methods that take a
// context keep what they return in h. The context is the one channel that
// reaches the cache through callers that do not know about Holds (the
// registry's puller passes its context to PutBlob).
func WithHold(ctx context.Context, h *Hold) context.Context {
	return context.WithValue(ctx, holdKey{}, h)
}

// HoldFrom returns the Hold ctx carries, or nil.
func HoldFrom(ctx context.Context) *Hold {
	h, _ := ctx.Value(holdKey{}).(*Hold)
	return h
}

// keep takes over fd, a shared lock on id. Without a Hold, or when it
// already holds id, the descriptor is closed at once.
func (h *Hold) keep(id fileID, fd int) {
	if h != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, dup := h.fds[id]; !dup && !h.closed {
			h.fds[id] = fd
			return
		}
	}
	unix.Close(fd)
}

// has reports whether h holds id: then the entry was checked when it was
// taken, and nobody can have replaced it since.
func (h *Hold) has(id fileID) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.fds[id]
	return ok
}

// release closes the lock on id, if h holds it.
func (h *Hold) release(id fileID) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if fd, ok := h.fds[id]; ok {
		unix.Close(fd)
		delete(h.fds, id)
	}
}

// Len is the number of entries held.
func (h *Hold) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.fds)
}

// Close releases everything held; the Hold keeps nothing afterwards.
func (h *Hold) Close() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, fd := range h.fds {
		unix.Close(fd)
		delete(h.fds, id)
	}
	h.closed = true
	return nil
}

// Lock takes the build lock named key, waiting until it is free or ctx
// ends. Holders may delete the lock file; a lock taken on a file that was
// deleted meanwhile is dropped and taken again on the new one.
func (c *Cache) Lock(ctx context.Context, key string) (unlock func(), err error) {
	path := c.lockPath(key)
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", key, err)
		}
		err = flockFile(f, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			if fileStill(f, path) {
				return func() { f.Close() }, nil
			}
			f.Close()
			continue
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", key, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// tryLock takes the build lock if it is free.
func (c *Cache) tryLock(key string) (unlock func(), ok bool) {
	path := c.lockPath(key)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false
	}
	if flockFile(f, unix.LOCK_EX|unix.LOCK_NB) != nil || !fileStill(f, path) {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
}

// removeLockFile deletes the build lock file of key if nobody holds it.
func (c *Cache) removeLockFile(key string) {
	path := c.lockPath(key)
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if flockFile(f, unix.LOCK_EX|unix.LOCK_NB) == nil && fileStill(f, path) {
		os.Remove(path)
	}
}

func (c *Cache) lockPath(key string) string {
	return filepath.Join(c.dir, "locks", key+".lock")
}

// flockFile locks an *os.File's descriptor without taking it out of the
// runtime's poller (as Fd would).
func flockFile(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = flock(int(fd), how) }); err != nil {
		return err
	}
	return ferr
}

// fileStill is still for an *os.File.
func fileStill(f *os.File, path string) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) { ok = still(int(fd), path) })
	return ok
}

// dupFD duplicates f's descriptor (close-on-exec): the copy shares f's
// lock and keeps it after f is closed.
func dupFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, ferr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { nfd, ferr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return nfd, ferr
}
