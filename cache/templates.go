package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
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
}

// Path is the template file.
func (e Entry) Path() string { return filepath.Join(e.Dir, e.File) }

const entryFile = "entry.json"

func checkKey(key string) error {
	if len(key) != 64 || strings.Trim(key, "0123456789abcdef") != "" {
		return fmt.Errorf("cache: template key %q is not 64 hex digits", key)
	}
	return nil
}

func (c *Cache) templateDir(key string) string { return filepath.Join(c.dir, "templates", key) }

// Template returns the entry for key and marks it used, or ErrNotFound.
func (c *Cache) Template(key string) (Entry, error) {
	if err := checkKey(key); err != nil {
		return Entry{}, err
	}
	e, err := c.readEntry(key)
	if err != nil {
		return Entry{}, err
	}
	touch(filepath.Join(e.Dir, entryFile))
	e.LastUsed = time.Now()
	return e, nil
}

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

// PutTemplate returns the entry for key, building it first when absent.
// Concurrent callers for one key, in any process, wait while the first
// builds; built says whether this call did the work. A failed or interrupted
// build leaves nothing under templates/.
func (c *Cache) PutTemplate(ctx context.Context, key string, build BuildFunc) (e Entry, built bool, err error) {
	if err := checkKey(key); err != nil {
		return Entry{}, false, err
	}
	if e, err := c.Template(key); err == nil {
		return e, false, nil
	}
	unlock, err := c.Lock(ctx, "template-"+key)
	if err != nil {
		return Entry{}, false, err
	}
	defer unlock()
	if e, err := c.Template(key); err == nil {
		return e, false, nil
	}
	tmp, err := os.MkdirTemp(c.TempDir(), "template-*")
	if err != nil {
		return Entry{}, false, err
	}
	defer os.RemoveAll(tmp)
	file, sum, err := build(ctx, tmp)
	if err != nil {
		return Entry{}, false, err
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
	// A directory left by a build that crashed between writing its entry
	// and renaming cannot exist (the rename is the commit), but one a user
	// half-deleted can: clear it so the rename succeeds.
	os.RemoveAll(dst)
	if err := os.Rename(tmp, dst); err != nil {
		return Entry{}, false, fmt.Errorf("template %s: %w", key, err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return Entry{}, false, err
	}
	e.Dir, e.LastUsed = dst, time.Now()
	return e, true, nil
}

// Templates lists the cached templates.
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
