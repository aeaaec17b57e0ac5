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
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/pve-image/pve-image/internal/ctxio"
)

// Cache is a cache directory.
type Cache struct {
	dir string
	// Log hears about damage found in the cache and repaired; nil means
	// slog.Default().
	Log *slog.Logger
}

func (c *Cache) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
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

// Open creates the layout under dir if needed, and removes the work files
// of runs that died (a killed convert's half-written blob or template):
// every start of pve-image cleans up after the last crash.
func Open(dir string) (*Cache, error) {
	for _, d := range []string{"blobs/sha256", "templates", "tmp", "locks"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("cache %s: %w", dir, err)
		}
	}
	c := &Cache{dir: dir}
	if _, err := RemoveDeadWork(c.TempDir(), nil); err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	return c, nil
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }

// TempDir is where work in progress lives; it is on the cache's filesystem,
// so renames out of it are atomic. Files created here must be locked as
// CreateWorkFile locks them, or be unlinked at once (as spill files are):
// anything else is taken for a dead run's leftover.
func (c *Cache) TempDir() string { return filepath.Join(c.dir, "tmp") }

// BlobPath is where the blob with digest h lives, present or not.
func (c *Cache) BlobPath(h v1.Hash) string {
	return filepath.Join(c.dir, "blobs", h.Algorithm, h.Hex)
}

// ErrNotFound is returned for blobs and templates the cache does not hold.
var ErrNotFound = errors.New("not in cache")

// lockBlob locks blob h shared and returns the descriptor holding the
// lock, or an error wrapping ErrNotFound.
func (c *Cache) lockBlob(h v1.Hash) (int, fileID, unix.Stat_t, error) {
	fd, id, st, err := lockEntry(c.BlobPath(h), 0, unix.LOCK_SH)
	if errors.Is(err, fs.ErrNotExist) {
		return -1, id, st, fmt.Errorf("blob %s: %w", h, ErrNotFound)
	}
	if err != nil {
		return -1, id, st, fmt.Errorf("blob %s: %w", h, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, id, st, fmt.Errorf("blob %s: %s is not a regular file", h, c.BlobPath(h))
	}
	return fd, id, st, nil
}

// OpenBlob opens a cached blob and marks it used. The file is locked
// shared while it is open, so that no removal takes the blob meanwhile.
// It is not hashed here: PutBlob checks a blob before it says it is
// there, and callers read blobs they have put.
func (c *Cache) OpenBlob(h v1.Hash) (*os.File, error) {
	if err := checkHash(h); err != nil {
		return nil, err
	}
	fd, _, _, err := c.lockBlob(h)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), c.BlobPath(h))
	touch(f.Name())
	return f, nil
}

// HasBlob reports whether the blob is cached.
func (c *Cache) HasBlob(h v1.Hash) bool {
	if checkHash(h) != nil {
		return false
	}
	fi, err := os.Lstat(c.BlobPath(h))
	return err == nil && fi.Mode().IsRegular()
}

// ReadBlob returns a small cached blob (a manifest or a config), checked
// against its digest: a damaged blob is dropped and reported as a
// mismatch that also wraps ErrNotFound, so that callers fetch it again.
func (c *Cache) ReadBlob(h v1.Hash) ([]byte, error) {
	if err := checkHash(h); err != nil {
		return nil, err
	}
	fd, id, _, err := c.lockBlob(h)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), c.BlobPath(h))
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", h, err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != h.Hex {
		c.log().Warn("cached blob is damaged; dropped", "blob", h, "got", "sha256:"+got)
		// Still open: the inode cannot be freed and its number reused
		// by a good copy before the comparison.
		c.dropBlob(context.Background(), h, id)
		return nil, fmt.Errorf("blob %s: %w (%w: its file hashed to sha256:%s, dropped)", h, ErrNotFound, ErrDigestMismatch, got)
	}
	touch(f.Name())
	return b, nil
}

// damagedBlob is a present blob whose bytes do not match its digest.
type damagedBlob struct {
	id  fileID
	got string
}

// verifiedBlob finds blob h, checks its bytes (unless hold already holds
// it, checked) and keeps it in hold. ok is false when the blob is absent;
// a damaged one is returned as bad, not dropped.
func (c *Cache) verifiedBlob(ctx context.Context, h v1.Hash, hold *Hold) (size int64, ok bool, bad *damagedBlob, err error) {
	fd, id, st, err := c.lockBlob(h)
	if errors.Is(err, ErrNotFound) {
		return 0, false, nil, nil
	}
	if err != nil {
		return 0, false, nil, err
	}
	if !hold.has(id) {
		got, err := hashFD(ctx, fd)
		if err != nil {
			unix.Close(fd)
			return 0, false, nil, fmt.Errorf("blob %s: %w", h, err)
		}
		if got != h.Hex {
			unix.Close(fd)
			return 0, false, &damagedBlob{id: id, got: got}, nil
		}
	}
	touch(c.BlobPath(h))
	hold.keep(id, fd)
	return st.Size, true, nil, nil
}

// dropBlob removes blob h if it is still the inode id, under the blob's
// build lock so that no writer renames a good copy in between. The caller
// keeps id open, so that its number cannot be a new file's.
func (c *Cache) dropBlob(ctx context.Context, h v1.Hash, id fileID) error {
	unlock, err := c.Lock(ctx, "blob-"+h.Hex)
	if err != nil {
		return err
	}
	defer unlock()
	return c.dropBlobLocked(h, id)
}

func (c *Cache) dropBlobLocked(h v1.Hash, id fileID) error {
	p := c.BlobPath(h)
	if pid, err := pathID(p); err != nil || pid != id {
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	return nil
}

// PutBlob stores the content open returns as blob h, hashing it on the way;
// a mismatch stores nothing and reports both digests. open is called only
// when the blob is absent (or damaged), under the blob's lock: concurrent
// callers for one digest, in any process, wait for the first and then find
// the blob present, so it is downloaded once. A blob already present is
// hashed before PutBlob says so (once per Hold): one whose bytes rotted is
// dropped and fetched again. The blob is kept in ctx's Hold (WithHold), if
// any, until the Hold closes.
func (c *Cache) PutBlob(ctx context.Context, h v1.Hash, open func() (io.ReadCloser, error)) (int64, error) {
	if err := checkHash(h); err != nil {
		return 0, err
	}
	hold := HoldFrom(ctx)
	if size, ok, bad, err := c.verifiedBlob(ctx, h, hold); ok || err != nil {
		return size, err
	} else if bad != nil {
		c.log().Warn("cached blob is damaged; fetching it again", "blob", h, "got", "sha256:"+bad.got)
	}
	unlock, err := c.Lock(ctx, "blob-"+h.Hex)
	if err != nil {
		return 0, err
	}
	defer unlock()
	size, ok, bad, err := c.verifiedBlob(ctx, h, hold)
	if ok || err != nil {
		return size, err
	}
	if bad != nil {
		if err := c.dropBlobLocked(h, bad.id); err != nil {
			return 0, err
		}
	}
	r, err := open()
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", h, err)
	}
	defer r.Close()
	tmp, err := CreateWorkFile(c.TempDir(), "blob-*")
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", h, err)
	}
	defer tmp.Close()
	committed := false
	defer func() {
		if !committed {
			os.Remove(tmp.Name())
		}
	}()
	hasher := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(tmp, hasher), ctxio.Reader(ctx, r), make([]byte, 1<<20))
	if err == nil {
		err = r.Close()
	}
	if err != nil {
		return n, fmt.Errorf("blob %s: %w", h, err)
	}
	if got := hex.EncodeToString(hasher.Sum(nil)); got != h.Hex {
		return n, fmt.Errorf("blob %s: %w: content hashes to sha256:%s", h, ErrDigestMismatch, got)
	}
	// The work file's lock becomes the blob's: it is held from the first
	// byte written to the caller's last read, with no gap for a removal.
	fd, err := dupFD(tmp)
	if err != nil {
		return n, fmt.Errorf("blob %s: %w", h, err)
	}
	if err := commitFile(tmp, c.BlobPath(h)); err != nil {
		unix.Close(fd)
		return n, fmt.Errorf("blob %s: %w", h, err)
	}
	committed = true
	id, _, err := fdID(fd)
	if err != nil {
		unix.Close(fd)
		return n, nil
	}
	hold.keep(id, fd)
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

// hashFD is the hex SHA-256 of the file open as fd, read with pread so
// that fd, which may hold a lock, is never wrapped in an *os.File (whose
// finalizer would close it).
func hashFD(ctx context.Context, fd int) (string, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); ; {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := unix.Pread(fd, buf, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", err
		}
		if n == 0 {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		h.Write(buf[:n])
		off += int64(n)
	}
}
