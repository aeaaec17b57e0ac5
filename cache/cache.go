package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// Cache is a cache directory.
type Cache struct {
	dir string
}

// DefaultDir is /var/lib/pve-image for root, else $XDG_CACHE_HOME/pve-image
// (~/.cache/pve-image).
func DefaultDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/pve-image"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "pve-image")
	}
	return filepath.Join(os.TempDir(), "pve-image")
}

// Open creates the layout under dir if needed.
func Open(dir string) (*Cache, error) {
	for _, d := range []string{"blobs/sha256", "templates", "tmp", "locks"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("cache %s: %w", dir, err)
		}
	}
	return &Cache{dir: dir}, nil
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }

// TempDir is where work in progress lives; it is on the cache's filesystem,
// so renames out of it are atomic.
func (c *Cache) TempDir() string { return filepath.Join(c.dir, "tmp") }

// BlobPath is where the blob with digest h lives, present or not.
func (c *Cache) BlobPath(h v1.Hash) string {
	return filepath.Join(c.dir, "blobs", h.Algorithm, h.Hex)
}

// ErrNotFound is returned for blobs and templates the cache does not hold.
var ErrNotFound = errors.New("not in cache")

// OpenBlob opens a cached blob and marks it used.
func (c *Cache) OpenBlob(h v1.Hash) (*os.File, error) {
	if err := checkHash(h); err != nil {
		return nil, err
	}
	f, err := os.Open(c.BlobPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", h, ErrNotFound)
	}
	if err == nil {
		touch(f.Name())
	}
	return f, err
}

// HasBlob reports whether the blob is cached.
func (c *Cache) HasBlob(h v1.Hash) bool {
	if checkHash(h) != nil {
		return false
	}
	_, err := os.Stat(c.BlobPath(h))
	return err == nil
}

// ReadBlob returns a small cached blob (a manifest or a config).
func (c *Cache) ReadBlob(h v1.Hash) ([]byte, error) {
	f, err := c.OpenBlob(h)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// PutBlob stores the content open returns as blob h, hashing it on the way;
// a mismatch stores nothing and reports both digests. open is called only
// when the blob is absent, under the blob's lock: concurrent callers for one
// digest, in any process, wait for the first and then find the blob present,
// so it is downloaded once.
func (c *Cache) PutBlob(ctx context.Context, h v1.Hash, open func() (io.ReadCloser, error)) (int64, error) {
	if err := checkHash(h); err != nil {
		return 0, err
	}
	if fi, err := os.Stat(c.BlobPath(h)); err == nil {
		return fi.Size(), nil
	}
	unlock, err := c.Lock(ctx, "blob-"+h.Hex)
	if err != nil {
		return 0, err
	}
	defer unlock()
	if fi, err := os.Stat(c.BlobPath(h)); err == nil {
		return fi.Size(), nil
	}
	r, err := open()
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", h, err)
	}
	defer r.Close()
	tmp, err := os.CreateTemp(c.TempDir(), "blob-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	hasher := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(tmp, hasher), ctxReader{ctx, r}, make([]byte, 1<<20))
	if err == nil {
		err = r.Close()
	}
	if err != nil {
		return n, fmt.Errorf("blob %s: %w", h, err)
	}
	if got := hex.EncodeToString(hasher.Sum(nil)); got != h.Hex {
		return n, fmt.Errorf("blob %s: %w: content hashes to sha256:%s", h, ErrDigestMismatch, got)
	}
	if err := commitFile(tmp, c.BlobPath(h)); err != nil {
		return n, fmt.Errorf("blob %s: %w", h, err)
	}
	return n, nil
}

// PutBlobBytes is PutBlob for content in memory.
func (c *Cache) PutBlobBytes(ctx context.Context, h v1.Hash, b []byte) error {
	_, err := c.PutBlob(ctx, h, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	return err
}

// ErrDigestMismatch is returned when content does not hash to its digest.
var ErrDigestMismatch = errors.New("digest mismatch")

func checkHash(h v1.Hash) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || strings.Trim(h.Hex, "0123456789abcdef") != "" {
		return fmt.Errorf("cache: unsupported digest %q", h.String())
	}
	return nil
}

// commitFile syncs f and renames it to dst, then syncs dst's directory, so
// dst holds either nothing or all of f even across a power cut.
func commitFile(f *os.File, dst string) error {
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dst))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// touch records a use: prune goes by modification time.
func touch(p string) {
	now := time.Now()
	os.Chtimes(p, now, now)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Lock takes the exclusive lock named key, waiting until it is free or ctx
// ends. The lock is held by the process (flock), so it ends with it.
func (c *Cache) Lock(ctx context.Context, key string) (unlock func(), err error) {
	f, err := os.OpenFile(c.lockPath(key), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", key, err)
	}
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", key, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// tryLock takes the lock if it is free.
func (c *Cache) tryLock(key string) (unlock func(), ok bool) {
	f, err := os.OpenFile(c.lockPath(key), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
}

func (c *Cache) lockPath(key string) string {
	return filepath.Join(c.dir, "locks", key+".lock")
}
