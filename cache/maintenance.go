package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil {
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

// Prune removes unused entries and returns what it removed. Entries being
// built or read under a lock by any process are skipped. Work directories
// that crashed runs left in tmp/ are removed once an hour old.
func (c *Cache) Prune(ctx context.Context, opts PruneOptions) ([]Item, error) {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	c.pruneTemp(now.Add(-time.Hour))
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
		ok, err := c.remove(it.Kind, it.ID, it.Path)
		if err != nil {
			return removed, fmt.Errorf("prune %s %s: %w", it.Kind, it.ID, err)
		}
		if !ok {
			continue
		}
		total -= it.Size
		removed = append(removed, it)
	}
	return removed, nil
}

// remove deletes a blob or template unless a process holds its lock;
// ok says whether it is gone.
func (c *Cache) remove(kind, id, path string) (ok bool, err error) {
	key := "template-" + id
	if kind == "blob" {
		key = "blob-" + strings.TrimPrefix(id, "sha256:")
	}
	unlock, ok := c.tryLock(key)
	if !ok {
		return false, nil
	}
	defer unlock()
	if err := os.RemoveAll(path); err != nil {
		return false, err
	}
	os.Remove(c.lockPath(key))
	return true, nil
}

// RemoveTemplate deletes the template of key unless it is in use; a
// missing one is not an error.
func (c *Cache) RemoveTemplate(key string) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	return c.remove("template", key, c.templateDir(key))
}

// RemoveBlob deletes a blob unless it is in use; a missing one is not an
// error.
func (c *Cache) RemoveBlob(h v1.Hash) (bool, error) {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || strings.Trim(h.Hex, "0123456789abcdef") != "" {
		return false, fmt.Errorf("blob %s: not a sha256 digest", h)
	}
	return c.remove("blob", h.String(), c.BlobPath(h))
}

func (c *Cache) pruneTemp(before time.Time) {
	des, _ := os.ReadDir(c.TempDir())
	for _, de := range des {
		if fi, err := de.Info(); err == nil && fi.ModTime().Before(before) {
			os.RemoveAll(filepath.Join(c.TempDir(), de.Name()))
		}
	}
}

// Problem is something Verify found wrong.
type Problem struct {
	Path string
	Err  string
}

// Verify re-hashes every blob and template and reports what does not match
// its digest, is missing or cannot be read.
func (c *Cache) Verify(ctx context.Context) ([]Problem, error) {
	var probs []Problem
	add := func(p, format string, args ...any) { probs = append(probs, Problem{p, fmt.Sprintf(format, args...)}) }
	buf := make([]byte, 1<<20)
	items, err := c.Items()
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return probs, err
		}
		switch it.Kind {
		case "blob":
			h, err := v1.NewHash(it.ID)
			if err != nil || checkHash(h) != nil {
				add(it.Path, "file name is not a sha256 digest")
				continue
			}
			if got, _, err := hashFile(it.Path, buf); err != nil {
				add(it.Path, "%v", err)
			} else if got != h.Hex {
				add(it.Path, "content hashes to sha256:%s", got)
			}
		case "template":
			if checkKey(it.ID) != nil {
				add(it.Path, "directory name is not a template key")
				continue
			}
			e, err := c.readEntry(it.ID)
			if err != nil {
				add(it.Path, "%v", err)
				continue
			}
			got, n, err := hashFile(e.Path(), buf)
			switch {
			case err != nil:
				add(e.Path(), "%v", err)
			case n != e.Size:
				add(e.Path(), "size %d, %s says %d", n, entryFile, e.Size)
			case got != e.SHA256:
				add(e.Path(), "content hashes to sha256:%s, %s says %s", got, entryFile, e.SHA256)
			}
		}
	}
	return probs, nil
}

func hashFile(p string, buf []byte) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, buf)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
