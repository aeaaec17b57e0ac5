package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Entry is a cached template: one file plus whatever else its builder put
// beside it.
type Entry struct {
	Key      string    `json:"-"`
	Dir      string    `json:"-"`
	File     string    `json:"file"`   // template file name inside Dir
	Size     int64     `json:"size"`   // bytes
	SHA256   string    `json:"sha256"` // hex digest of the file
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"-"`

	id fileID // the directory the entry was read from
}

// Path is the template file.
func (e Entry) Path() string { return filepath.Join(e.Dir, e.File) }

const entryFile = "entry.json"

// ErrDamaged is wrapped by the errors for template entries whose files do
// not agree with their entry.json. Those errors wrap ErrNotFound too: a
// damaged entry is as good as none, and PutTemplate replaces it.
var ErrDamaged = errors.New("damaged")

type damagedError struct {
	key, path, reason string
	id                fileID
}

func (d *damagedError) Error() string {
	return fmt.Sprintf("template %s: %s (%v)", d.key, d.reason, ErrDamaged)
}

func (d *damagedError) Unwrap() []error { return []error{ErrDamaged, ErrNotFound} }

func checkKey(key string) error {
	if len(key) != 64 || strings.Trim(key, "0123456789abcdef") != "" {
		return fmt.Errorf("cache: template key %q is not 64 hex digits", key)
	}
	return nil
}

func (c *Cache) templateDir(key string) string { return filepath.Join(c.dir, "templates", key) }

// openTemplate locks the template directory of key shared and checks what
// entry.json says against what is there. fd holds the lock whenever the
// directory could be locked, damaged or not (the caller closes it): it
// keeps the inode from being freed and its number reused while the caller
// compares it with the path. A missing entry is ErrNotFound, a damaged one
// a *damagedError.
func (c *Cache) openTemplate(key string) (Entry, int, error) {
	dir := c.templateDir(key)
	fd, id, st, err := lockEntry(dir, 0, unix.LOCK_SH)
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, -1, fmt.Errorf("template %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return Entry{}, -1, fmt.Errorf("template %s: %w", key, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return Entry{}, fd, &damagedError{key: key, path: dir, reason: dir + " is not a directory", id: id}
	}
	e, err := c.checkEntry(key, dir)
	if d, ok := err.(*damagedError); ok {
		d.id = id
		return Entry{}, fd, d
	}
	if err != nil {
		unix.Close(fd)
		return Entry{}, -1, err
	}
	e.id = id
	return e, fd, nil
}

// closeFD closes fd unless it is -1.
func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// checkEntry reads entry.json and checks the file it names: there,
// regular, of its size. Hashing is left to whoever reads the bytes.
func (c *Cache) checkEntry(key, dir string) (Entry, error) {
	damaged := func(path, format string, args ...any) (Entry, error) {
		return Entry{}, &damagedError{key: key, path: path, reason: fmt.Sprintf(format, args...)}
	}
	ep := filepath.Join(dir, entryFile)
	b, err := os.ReadFile(ep)
	if errors.Is(err, fs.ErrNotExist) {
		return damaged(ep, "%s is missing", entryFile)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("template %s: %w", key, err)
	}
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return damaged(ep, "%s: %v", entryFile, err)
	}
	if e.File == "" || e.File != filepath.Base(e.File) || e.File == "." || e.File == ".." || e.File == entryFile {
		return damaged(ep, "%s names no template file (%q)", entryFile, e.File)
	}
	if len(e.SHA256) != 64 || strings.Trim(e.SHA256, "0123456789abcdef") != "" {
		return damaged(ep, "%s has no SHA-256 (%q)", entryFile, e.SHA256)
	}
	e.Key, e.Dir = key, dir
	fi, err := os.Lstat(e.Path())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return damaged(e.Path(), "%s is missing", e.Path())
	case err != nil:
		return Entry{}, fmt.Errorf("template %s: %w", key, err)
	case !fi.Mode().IsRegular():
		return damaged(e.Path(), "%s is not a regular file", e.Path())
	case fi.Size() != e.Size:
		return damaged(e.Path(), "%s has %d bytes, %s says %d", e.Path(), fi.Size(), entryFile, e.Size)
	}
	if fi, err := os.Stat(ep); err == nil {
		e.LastUsed = fi.ModTime()
	}
	return e, nil
}

// Template returns the entry for key and marks it used, or an error
// wrapping ErrNotFound (ErrDamaged too when its files are not what its
// entry.json says). Nothing holds the entry afterwards: callers that read
// it use LookupTemplate or PutTemplate under a Hold.
func (c *Cache) Template(key string) (Entry, error) {
	if err := checkKey(key); err != nil {
		return Entry{}, err
	}
	e, fd, err := c.openTemplate(key)
	if err != nil {
		closeFD(fd)
		return Entry{}, err
	}
	defer unix.Close(fd)
	touch(filepath.Join(e.Dir, entryFile))
	e.LastUsed = time.Now()
	return e, nil
}

// LookupTemplate is Template without marking the entry used (looking is
// not using), keeping it in ctx's Hold, if any.
func (c *Cache) LookupTemplate(ctx context.Context, key string) (Entry, error) {
	if err := checkKey(key); err != nil {
		return Entry{}, err
	}
	e, fd, err := c.openTemplate(key)
	if err != nil {
		closeFD(fd)
		return Entry{}, err
	}
	HoldFrom(ctx).keep(e.id, fd)
	return e, nil
}

// readEntry parses entry.json without locking or checking anything, for
// listings.
func (c *Cache) readEntry(key string) (Entry, error) {
	dir := c.templateDir(key)
	b, err := os.ReadFile(filepath.Join(dir, entryFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("template %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return Entry{}, err
	}
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return Entry{}, fmt.Errorf("template %s: %s: %w", key, entryFile, err)
	}
	e.Key, e.Dir = key, dir
	if fi, err := os.Stat(filepath.Join(dir, entryFile)); err == nil {
		e.LastUsed = fi.ModTime()
	}
	return e, nil
}

// BuildFunc writes a template into dir, an empty directory of its own, and
// returns the template's file name there with the hex SHA-256 of its bytes.
type BuildFunc func(ctx context.Context, dir string) (file, sha256 string, err error)

// PutTemplate returns the entry for key, building it first when absent or
// damaged. Concurrent callers for one key, in any process, wait while the
// first builds; built says whether this call did the work. A failed or
// interrupted build leaves nothing under templates/. The entry is kept in
// ctx's Hold, if any: from the build's first byte (or the lookup) to the
// Hold's Close, no removal can take it.
func (c *Cache) PutTemplate(ctx context.Context, key string, build BuildFunc) (e Entry, built bool, err error) {
	if err := checkKey(key); err != nil {
		return Entry{}, false, err
	}
	hold := HoldFrom(ctx)
	e, fd, err := c.openTemplate(key)
	if err == nil {
		touch(filepath.Join(e.Dir, entryFile))
		hold.keep(e.id, fd)
		return e, false, nil
	}
	closeFD(fd)
	if !errors.Is(err, ErrNotFound) {
		return Entry{}, false, err
	}
	unlock, err := c.Lock(ctx, "template-"+key)
	if err != nil {
		return Entry{}, false, err
	}
	defer unlock()
	e, fd, err = c.openTemplate(key)
	var damaged *damagedError
	switch {
	case err == nil:
		touch(filepath.Join(e.Dir, entryFile))
		hold.keep(e.id, fd)
		return e, false, nil
	case errors.As(err, &damaged):
		c.log().Warn("cached template is damaged; building it again", "key", key, "reason", damaged.reason)
		aside, err := c.dropTemplateLocked(key, damaged.id)
		unix.Close(fd)
		if err != nil {
			return Entry{}, false, err
		}
		removeIfDead(aside)
	case !errors.Is(err, ErrNotFound):
		return Entry{}, false, err
	}

	tmp, tfd, err := mkdirWork(c.TempDir(), "template-*")
	if err != nil {
		return Entry{}, false, fmt.Errorf("template %s: %w", key, err)
	}
	committed := false
	defer func() {
		if !committed {
			os.RemoveAll(tmp)
			unix.Close(tfd)
		}
	}()
	file, sum, err := build(ctx, tmp)
	if err != nil {
		return Entry{}, false, err
	}
	if file == "" || file != filepath.Base(file) || file == entryFile {
		return Entry{}, false, fmt.Errorf("template %s: the build named %q as its file", key, file)
	}
	f, err := os.Open(filepath.Join(tmp, file))
	if err != nil {
		return Entry{}, false, fmt.Errorf("template %s: %w", key, err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return Entry{}, false, fmt.Errorf("template %s: %w", key, err)
	}
	e = Entry{Key: key, File: file, Size: fi.Size(), SHA256: sum, Created: time.Now().UTC().Truncate(time.Second)}
	b, _ := json.MarshalIndent(e, "", "  ")
	ef, err := os.Create(filepath.Join(tmp, entryFile))
	if err != nil {
		return Entry{}, false, err
	}
	_, err = ef.Write(append(b, '\n'))
	if err == nil {
		err = ef.Sync()
	}
	if cerr := ef.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Entry{}, false, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Entry{}, false, err
	}
	dst := c.templateDir(key)
	err = os.Rename(tmp, dst)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Something nobody built is in the way (a user's half-deleted
		// directory): out with it, under the build lock.
		if id, perr := pathID(dst); perr == nil {
			aside, derr := c.dropTemplateLocked(key, id)
			if derr != nil {
				return Entry{}, false, derr
			}
			removeIfDead(aside)
			err = os.Rename(tmp, dst)
		}
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("template %s: %w", key, err)
	}
	committed = true
	if err := syncDir(filepath.Dir(dst)); err != nil {
		unix.Close(tfd)
		return Entry{}, false, err
	}
	// The work directory's lock moved with it and is the entry's now.
	e.Dir, e.LastUsed = dst, time.Now()
	e.id, _, _ = fdID(tfd)
	hold.keep(e.id, tfd)
	return e, true, nil
}

// DropTemplate removes e's entry because its bytes turned out damaged
// (they did not hash to e.SHA256). e must be held by ctx's Hold (read
// under it): the lock is what tells its directory from one built since,
// which it leaves alone; DropTemplate releases e from the Hold. Unlike
// RemoveTemplate it does not spare entries others hold: they keep what
// they have open.
func (c *Cache) DropTemplate(ctx context.Context, e Entry) error {
	if err := checkKey(e.Key); err != nil {
		return err
	}
	hold := HoldFrom(ctx)
	if !hold.has(e.id) {
		return fmt.Errorf("template %s: dropped without being held", e.Key)
	}
	unlock, err := c.Lock(ctx, "template-"+e.Key)
	if err != nil {
		return err
	}
	defer unlock()
	aside, err := c.dropTemplateLocked(e.Key, e.id)
	hold.release(e.id)
	removeIfDead(aside)
	return err
}

// dropTemplateLocked moves the template directory of key out of
// templates/ (moveAside) if it is still the inode id, and returns where to.
// The caller holds the build lock, and keeps id's inode open or has found
// it under that lock, so that its number is not another's yet.
func (c *Cache) dropTemplateLocked(key string, id fileID) (string, error) {
	dir := c.templateDir(key)
	if pid, err := pathID(dir); err != nil || pid != id {
		return "", nil
	}
	aside, err := c.moveAside(dir)
	if err != nil {
		return "", fmt.Errorf("template %s: %w", key, err)
	}
	return aside, nil
}

// moveAside takes path out of the cache in one rename into tmp/, so that a
// lookup sees the whole entry or nothing, and returns its new name ("" if
// there was nothing, or it was a file, which is removed). Deleting it is
// the caller's: at once when it holds it exclusively, else removeIfDead,
// which leaves it to a later run's cleanup of tmp/ while others hold it.
func (c *Cache) moveAside(path string) (string, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", os.Remove(path)
	}
	aside, err := os.MkdirTemp(c.TempDir(), "removed-*")
	if err != nil {
		return "", err
	}
	// rename(2) replaces an empty directory, which os.Rename refuses.
	if err := unix.Rename(path, aside); err != nil {
		os.Remove(aside)
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", err
	}
	syncDir(filepath.Dir(path))
	return aside, nil
}

// Templates lists the cached templates as their entry.json describe them,
// without checking their files (Verify does).
func (c *Cache) Templates() ([]Entry, error) {
	des, err := os.ReadDir(filepath.Join(c.dir, "templates"))
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, de := range des {
		if checkKey(de.Name()) != nil {
			continue
		}
		if e, err := c.readEntry(de.Name()); err == nil {
			out = append(out, e)
		}
	}
	return out, nil
}

// AliasTemplate gives a held template entry another file name in its
// directory, a hard link to the same bytes, and returns the entry under
// that name: the same content asked for under another reference is named
// after that reference, without a second copy or a second build.
func (c *Cache) AliasTemplate(e Entry, name string) (Entry, error) {
	if name == e.File {
		return e, nil
	}
	if name == "" || name != filepath.Base(name) || name == entryFile || name == "meta.json" || strings.HasPrefix(name, ".") {
		return e, fmt.Errorf("template alias %q: not a plain file name", name)
	}
	dst := filepath.Join(e.Dir, name)
	src, err := os.Stat(e.Path())
	if err != nil {
		return e, err
	}
	if fi, err := os.Stat(dst); err == nil && os.SameFile(fi, src) {
		e.File = name
		return e, nil
	}
	// Linked under a temporary name, then renamed: a lookup never sees a
	// half-made alias, and two processes naming it at once both succeed.
	tmp := filepath.Join(e.Dir, "."+name+".link-"+strconv.Itoa(os.Getpid()))
	os.Remove(tmp)
	if err := os.Link(e.Path(), tmp); err != nil {
		return e, fmt.Errorf("template alias %s: %w", name, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return e, fmt.Errorf("template alias %s: %w", name, err)
	}
	e.File = name
	return e, nil
}
