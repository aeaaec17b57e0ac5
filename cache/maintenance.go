package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/pve-image/pve-image/internal/ctxio"
)

// Item is one thing the cache holds: a blob or a template.
type Item struct {
	Kind     string // "blob" or "template"
	ID       string // digest for blobs, key for templates
	Path     string // the blob file or template directory
	Size     int64  // bytes on disk
	Files    int64  // inodes used
	LastUsed time.Time
}

// Items lists everything cached.
func (c *Cache) Items() ([]Item, error) {
	var items []Item
	des, err := os.ReadDir(filepath.Join(c.dir, "blobs", "sha256"))
	if err != nil {
		return nil, err
	}
	for _, de := range des {
		fi, err := de.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		items = append(items, Item{Kind: "blob", ID: "sha256:" + de.Name(), Path: filepath.Join(c.dir, "blobs", "sha256", de.Name()),
			Size: fi.Size(), Files: 1, LastUsed: fi.ModTime()})
	}
	tdes, err := os.ReadDir(filepath.Join(c.dir, "templates"))
	if err != nil {
		return nil, err
	}
	for _, de := range tdes {
		dir := filepath.Join(c.dir, "templates", de.Name())
		it := Item{Kind: "template", ID: de.Name(), Path: dir, Files: 1}
		if e, err := c.readEntry(de.Name()); err == nil {
			it.LastUsed = e.LastUsed
		}
		// Names of one template (aliases, hard links) count once.
		seen := map[uint64]bool{}
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil {
					if st, ok := fi.Sys().(*syscall.Stat_t); ok {
						if seen[st.Ino] {
							return nil
						}
						seen[st.Ino] = true
					}
					it.Size += fi.Size()
					it.Files++
				}
			}
			return nil
		})
		items = append(items, it)
	}
	return items, nil
}

// PruneOptions select what Prune removes.
type PruneOptions struct {
	// OlderThan removes what was last used longer ago than this; 0 keeps
	// everything by age.
	OlderThan time.Duration
	// MaxSize then removes the least recently used until the cache is no
	// larger; 0 means no size bound.
	MaxSize int64
	// Now is the time prune measures age from; zero means time.Now().
	Now time.Time
}

// Prune removes unused entries and returns what it removed. Entries that
// any process holds (reads under a Hold, builds, downloads) are skipped.
// Work files of runs that died are removed whatever their age, and work
// files of runs that live never.
func (c *Cache) Prune(ctx context.Context, opts PruneOptions) ([]Item, error) {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	if _, err := RemoveDeadWork(c.TempDir(), nil); err != nil {
		return nil, err
	}
	items, err := c.Items()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(items, func(a, b Item) int { return a.LastUsed.Compare(b.LastUsed) })
	var total int64
	for _, it := range items {
		total += it.Size
	}
	var removed []Item
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		old := opts.OlderThan > 0 && now.Sub(it.LastUsed) > opts.OlderThan
		big := opts.MaxSize > 0 && total > opts.MaxSize
		if !old && !big {
			continue
		}
		ok, err := c.remove(it.Kind, it.ID)
		if err != nil {
			return removed, fmt.Errorf("prune %s %s: %w", it.Kind, it.ID, err)
		}
		if !ok {
			continue
		}
		total -= it.Size
		removed = append(removed, it)
	}
	// Build locks nobody holds are only files; whoever needs one again
	// creates it.
	if des, err := os.ReadDir(filepath.Join(c.dir, "locks")); err == nil {
		for _, de := range des {
			if key, ok := strings.CutSuffix(de.Name(), ".lock"); ok {
				c.removeLockFile(key)
			}
		}
	}
	return removed, nil
}

// remove deletes a blob or template unless a process holds it (reads it,
// builds or downloads it); ok says whether it is gone. A template goes in
// one rename, so that no lookup ever sees half of it.
func (c *Cache) remove(kind, id string) (ok bool, err error) {
	var key, path string
	switch kind {
	case "blob":
		hex := strings.TrimPrefix(id, "sha256:")
		key, path = "blob-"+hex, filepath.Join(c.dir, "blobs", "sha256", hex)
	case "template":
		key, path = "template-"+id, c.templateDir(id)
	default:
		return false, fmt.Errorf("cache: no kind %q", kind)
	}
	unlock, ok := c.tryLock(key)
	if !ok {
		return false, nil
	}
	defer unlock()
	fd, _, _, err := lockEntry(path, 0, unix.LOCK_EX|unix.LOCK_NB)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		return false, nil
	case err != nil:
		return false, err
	}
	defer unix.Close(fd)
	if kind == "blob" {
		err = os.Remove(path)
	} else {
		var aside string
		if aside, err = c.moveAside(path); err == nil && aside != "" {
			err = os.RemoveAll(aside)
		}
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	// The build lock is ours: its file can go (Lock checks for that).
	os.Remove(c.lockPath(key))
	return true, nil
}

// RemoveTemplate deletes the template of key unless it is in use; a
// missing one is not an error.
func (c *Cache) RemoveTemplate(key string) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	return c.remove("template", key)
}

// RemoveBlob deletes a blob unless it is in use; a missing one is not an
// error.
func (c *Cache) RemoveBlob(h v1.Hash) (bool, error) {
	if checkHash(h) != nil {
		return false, fmt.Errorf("blob %s: not a sha256 digest", h)
	}
	return c.remove("blob", h.String())
}

// Problem is something Verify found wrong.
type Problem struct {
	// Kind is "blob" or "template", or "" for a file that is neither.
	Kind string
	// ID is the blob's digest or the template's key.
	ID   string
	Path string
	Err  string
	// Removed says that Verify removed it (VerifyOptions.Fix).
	Removed bool
}

// VerifyOptions say what Verify does besides looking.
type VerifyOptions struct {
	// Fix removes every damaged entry found, even one in use: whoever
	// holds it keeps what they have open, and the next run fetches or
	// builds it again.
	Fix bool
}

// Verify re-hashes every blob and template and reports what does not match
// its digest, is missing or cannot be read. Each entry is locked while it
// is checked (and fixed), so entries removed meanwhile are not reported.
func (c *Cache) Verify(ctx context.Context, opts VerifyOptions) ([]Problem, error) {
	var probs []Problem
	// report records p and, with Fix, removes what it names.
	report := func(p Problem, fix func() error) {
		if opts.Fix && fix != nil {
			if err := fix(); err != nil {
				p.Err += fmt.Sprintf(" (not removed: %v)", err)
			} else {
				p.Removed = true
			}
		}
		probs = append(probs, p)
	}
	blobDir := filepath.Join(c.dir, "blobs", "sha256")
	des, err := os.ReadDir(blobDir)
	if err != nil {
		return nil, err
	}
	for _, de := range des {
		if err := ctx.Err(); err != nil {
			return probs, err
		}
		if p, fix, ok := c.verifyBlob(ctx, filepath.Join(blobDir, de.Name())); !ok {
			report(p, fix)
		}
	}
	tdes, err := os.ReadDir(filepath.Join(c.dir, "templates"))
	if err != nil {
		return probs, err
	}
	for _, de := range tdes {
		if err := ctx.Err(); err != nil {
			return probs, err
		}
		p, fix, release, ok := c.verifyTemplate(ctx, de.Name())
		if !ok {
			report(p, fix)
		}
		release()
	}
	return probs, ctx.Err()
}

// verifyBlob checks the blob file at path; ok is true when it is sound or
// gone. fix removes it.
func (c *Cache) verifyBlob(ctx context.Context, path string) (_ Problem, fix func() error, ok bool) {
	h := v1.Hash{Algorithm: "sha256", Hex: filepath.Base(path)}
	if checkHash(h) != nil {
		return Problem{Path: path, Err: "file name is not a sha256 digest"}, func() error { return os.RemoveAll(path) }, false
	}
	p := Problem{Kind: "blob", ID: h.String(), Path: path}
	fd, id, _, err := c.lockBlob(h)
	if errors.Is(err, ErrNotFound) {
		return p, nil, true
	}
	if err != nil {
		p.Err = err.Error()
		return p, func() error { return os.RemoveAll(path) }, false
	}
	defer unix.Close(fd)
	got, err := hashFD(ctx, fd)
	switch {
	case ctx.Err() != nil:
		return p, nil, true
	case err != nil:
		p.Err = err.Error()
	case got != h.Hex:
		p.Err = "content hashes to sha256:" + got
	default:
		return p, nil, true
	}
	// Called with fd still open, which keeps the inode's number its own.
	return p, func() error { return c.dropBlob(ctx, h, id) }, false
}

// verifyTemplate checks the template directory named name; ok is true when
// it is sound or gone. fix removes it; release ends the check's lock and
// must be called after fix.
func (c *Cache) verifyTemplate(ctx context.Context, name string) (_ Problem, fix func() error, release func(), ok bool) {
	dir := c.templateDir(name)
	if checkKey(name) != nil {
		return Problem{Path: dir, Err: "directory name is not a template key"},
			func() error {
				aside, err := c.moveAside(dir)
				removeIfDead(aside)
				return err
			}, func() {}, false
	}
	p := Problem{Kind: "template", ID: name, Path: dir}
	e, fd, err := c.openTemplate(name)
	var aside string
	release = func() {
		closeFD(fd)
		removeIfDead(aside)
	}
	drop := func(id fileID) func() error {
		return func() error {
			unlock, err := c.Lock(ctx, "template-"+name)
			if err != nil {
				return err
			}
			defer unlock()
			aside, err = c.dropTemplateLocked(name, id)
			return err
		}
	}
	var damaged *damagedError
	switch {
	case errors.As(err, &damaged):
		p.Path, p.Err = damaged.path, damaged.reason
		return p, drop(damaged.id), release, false
	case errors.Is(err, ErrNotFound):
		return p, nil, release, true
	case err != nil:
		p.Err = err.Error()
		return p, nil, release, false
	}
	p.Path = e.Path()
	got, n, err := hashFile(ctx, e.Path())
	switch {
	case ctx.Err() != nil:
		return p, nil, release, true
	case err != nil:
		p.Err = err.Error()
	case n != e.Size:
		p.Err = fmt.Sprintf("size %d, %s says %d", n, entryFile, e.Size)
	case got != e.SHA256:
		p.Err = fmt.Sprintf("content hashes to sha256:%s, %s says %s", got, entryFile, e.SHA256)
	default:
		return p, nil, release, true
	}
	return p, drop(e.id), release, false
}

func hashFile(ctx context.Context, p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, ctxio.Reader(ctx, f), make([]byte, 1<<20))
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
