package template

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/internal/ctxio"
	"github.com/pve-image/pve-image/registry"
)

// copyTempName matches the temporary files CopyFile writes beside its
// destination: "." + a template's name + ".tmp-" + os.CreateTemp's digits.
var copyTempName = regexp.MustCompile(`^\..+\.tar(\.(gz|xz|zst|bz2))?\.tmp-[0-9]+$`)

// CopyFile copies a template to dst through a temporary file beside it,
// synced and renamed, so that dst is never half-written: Proxmox or a user
// may pick it up at any moment. The bytes are hashed as they are copied;
// unless they hash to wantSHA256 (hex; empty skips the check), dst is left
// as it was and the error wraps cache.ErrDigestMismatch.
//
// The temporary file is locked while it is written, like the cache's work
// files: temporary files of copies whose process died (killed in the
// middle) are removed by the next copy into the same directory, those of
// copies still running never.
func CopyFile(ctx context.Context, src, dst, wantSHA256 string) error {
	dir := filepath.Dir(dst)
	cache.RemoveDeadWork(dir, copyTempName.MatchString)
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := cache.CreateWorkFile(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	defer tmp.Close()
	renamed := false
	defer func() {
		if !renamed {
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	_, err = io.CopyBuffer(io.MultiWriter(newWriteback(tmp), h), ctxio.Reader(ctx, in), make([]byte, 1<<20))
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); wantSHA256 != "" && got != wantSHA256 {
		return fmt.Errorf("template %s: %w: its bytes hash to sha256:%s, not %s", src, cache.ErrDigestMismatch, got, wantSHA256)
	}
	err = tmp.Sync()
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	// Renamed while still open: closing first would drop the lock that
	// keeps other copies' cleanup away from it.
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	renamed = true
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}

// ConvertThen converts ref (as Convert) and hands the result to use, which
// reads the template: copies or uploads it. When use finds the cached
// template's bytes damaged (an error wrapping cache.ErrDigestMismatch, as
// CopyFile returns), the entry is dropped, built again and handed to use
// once more. The result is returned held, as Convert's.
func (b *Builder) ConvertThen(ctx context.Context, ref registry.Reference, opts Options, use func(context.Context, *Result) error) (*Result, error) {
	ctx, own := withHold(ctx)
	res, err := b.Puller.Resolve(ctx, ref)
	if err != nil {
		own.Close()
		return nil, err
	}
	defer res.Close()
	for attempt := 0; ; attempt++ {
		r, err := b.convertResolved(ctx, res, opts)
		if err == nil && use != nil {
			err = use(ctx, r)
			if errors.Is(err, cache.ErrDigestMismatch) && attempt == 0 {
				if b.Log != nil {
					b.Log.Warn("cached template is damaged; building it again", "template", r.Path(), "err", err)
				}
				if err = b.Cache.DropTemplate(ctx, r.Entry); err == nil {
					continue
				}
			}
		}
		if err != nil {
			own.Close()
			return nil, err
		}
		r.hold = own
		return r, nil
	}
}

// ConvertTo converts ref and copies the template to dst (CopyFile): a
// cached template whose bytes are no longer those it was built with is
// built again rather than copied.
func (b *Builder) ConvertTo(ctx context.Context, ref registry.Reference, opts Options, dst string) (*Result, error) {
	return b.ConvertThen(ctx, ref, opts, func(ctx context.Context, r *Result) error {
		return CopyFile(ctx, r.Path(), dst, r.Entry.SHA256)
	})
}

// withHold returns ctx with a Hold for the cache entries read under it:
// ctx's own, or a new one, returned as own for the caller to close.
func withHold(ctx context.Context) (_ context.Context, own *cache.Hold) {
	if cache.HoldFrom(ctx) != nil {
		return ctx, nil
	}
	own = cache.NewHold()
	return cache.WithHold(ctx, own), own
}

// writeback writes to a file and starts writing each 8 MiB out to disk as
// soon as it is complete, without waiting for it. The fsync that commits
// the file then finds little left to write, instead of all of it: the disk
// works while the conversion computes, not after.
type writeback struct {
	f          *os.File
	off, start int64 // bytes written; the start of what is not handed to the disk yet
}

const writebackChunk = 8 << 20

func newWriteback(f *os.File) *writeback { return &writeback{f: f} }

func (w *writeback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.start >= writebackChunk {
		// Best effort: where the file system cannot, fsync does it all.
		unix.SyncFileRange(int(w.f.Fd()), w.start, w.off-w.start, unix.SYNC_FILE_RANGE_WRITE)
		w.start = w.off
	}
	return n, err
}
