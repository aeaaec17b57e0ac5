package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Work files: what a run writes before renaming it into place. Each is
// locked shared by its writer from the moment it exists, so whoever can
// lock one exclusively knows that its writer is dead: a killed run's files
// are removed by the next run that looks, and a live run's never, however
// long it takes.

// createAttempts bounds the retries when a cleaner removes a work file
// between its creation and its lock: each retry needs a cleaner to win
// that window again.
const createAttempts = 100

// CreateWorkFile creates a new file in dir, named from pattern as
// os.CreateTemp names it, and locks it for as long as it is open:
// RemoveDeadWork, in any process, leaves it alone until then. Rename it
// into place before closing it.
func CreateWorkFile(dir, pattern string) (*os.File, error) {
	for range createAttempts {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		err = flockFile(f, unix.LOCK_SH|unix.LOCK_NB)
		if err == nil && fileStill(f, f.Name()) {
			return f, nil
		}
		// A cleaner took it before we locked it: it removes it, we make
		// another.
		f.Close()
		if err != nil && !errors.Is(err, unix.EWOULDBLOCK) {
			os.Remove(f.Name())
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
	}
	return nil, fmt.Errorf("create a work file in %s: removed by cleaners %d times", dir, createAttempts)
}

// mkdirWork is CreateWorkFile for a directory; fd holds its lock.
func mkdirWork(dir, pattern string) (path string, fd int, err error) {
	for range createAttempts {
		path, err := os.MkdirTemp(dir, pattern)
		if err != nil {
			return "", -1, err
		}
		fd, err := openNoFollow(path, unix.O_DIRECTORY)
		if err != nil {
			continue
		}
		err = flock(fd, unix.LOCK_SH|unix.LOCK_NB)
		if err == nil && still(fd, path) {
			return path, fd, nil
		}
		unix.Close(fd)
		if err != nil && !errors.Is(err, unix.EWOULDBLOCK) {
			os.RemoveAll(path)
			return "", -1, fmt.Errorf("lock %s: %w", path, err)
		}
	}
	return "", -1, fmt.Errorf("create a work directory in %s: removed by cleaners %d times", dir, createAttempts)
}

// RemoveDeadWork removes the entries of dir that match (nil: all) and
// that no live process holds (see CreateWorkFile), and returns their
// names. Entries it cannot open, such as another user's, are left.
func RemoveDeadWork(dir string, match func(name string) bool) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, de := range des {
		if match != nil && !match(de.Name()) {
			continue
		}
		p := filepath.Join(dir, de.Name())
		if de.Type()&os.ModeSymlink != 0 {
			// Nothing here writes symlinks, and none can be locked.
			if os.Remove(p) == nil {
				removed = append(removed, de.Name())
			}
			continue
		}
		if removeIfDead(p) {
			removed = append(removed, de.Name())
		}
	}
	return removed, nil
}

// removeIfDead removes path, file or tree, when its lock is free ("" is
// nothing).
func removeIfDead(path string) bool {
	if path == "" {
		return false
	}
	fd, _, st, err := lockEntry(path, 0, unix.LOCK_EX|unix.LOCK_NB)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return os.RemoveAll(path) == nil
	}
	return os.Remove(path) == nil
}
