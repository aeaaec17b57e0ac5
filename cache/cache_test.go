package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func digestOf(b string) v1.Hash {
	s := sha256.Sum256([]byte(b))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func keyOf(s string) string { return digestOf(s).Hex }

func open(t *testing.T) *Cache {
	t.Helper()
	c, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c.Log = slog.New(slog.DiscardHandler)
	return c
}

func TestPutBlob(t *testing.T) {
	ctx := context.Background()
	c := open(t)
	h := digestOf("hello")
	if err := c.PutBlobBytes(ctx, h, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if b, err := c.ReadBlob(h); err != nil || string(b) != "hello" {
		t.Fatalf("ReadBlob = %q, %v", b, err)
	}
	bad := digestOf("other")
	err := c.PutBlobBytes(ctx, bad, []byte("hello"))
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), bad.String()) || !strings.Contains(err.Error(), h.Hex) {
		t.Fatalf("mismatch error %v should name both digests", err)
	}
	if c.HasBlob(bad) {
		t.Fatal("a mismatched blob was stored")
	}
	if _, err := c.OpenBlob(bad); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenBlob of a missing blob: %v", err)
	}
	if des, _ := os.ReadDir(c.TempDir()); len(des) != 0 {
		t.Fatalf("tmp/ keeps %d files after a mismatch", len(des))
	}
	if err := c.PutBlobBytes(ctx, v1.Hash{Algorithm: "sha256", Hex: "../../etc"}, nil); err == nil {
		t.Fatal("a malformed digest was accepted")
	}
}

func TestPutTemplateOnce(t *testing.T) {
	c := open(t)
	key := keyOf("image")
	var builds atomic.Int32
	build := func(ctx context.Context, dir string) (string, string, error) {
		builds.Add(1)
		time.Sleep(50 * time.Millisecond)
		return "t.tar", digestOf("tpl").Hex, os.WriteFile(filepath.Join(dir, "t.tar"), []byte("tpl"), 0o644)
	}
	var wg sync.WaitGroup
	var builtCount atomic.Int32
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, built, err := c.PutTemplate(context.Background(), key, build)
			if err != nil {
				t.Error(err)
				return
			}
			if built {
				builtCount.Add(1)
			}
			if b, err := os.ReadFile(e.Path()); err != nil || string(b) != "tpl" {
				t.Errorf("template content %q, %v", b, err)
			}
		}()
	}
	wg.Wait()
	if builds.Load() != 1 || builtCount.Load() != 1 {
		t.Fatalf("built %d times (%d reported), want once", builds.Load(), builtCount.Load())
	}
	probs, err := c.Verify(context.Background(), VerifyOptions{})
	if err != nil || len(probs) != 0 {
		t.Fatalf("Verify: %v %v", probs, err)
	}
}

func TestPutTemplateFailureLeavesNothing(t *testing.T) {
	c := open(t)
	key := keyOf("x")
	ctx, cancel := context.WithCancel(context.Background())
	_, _, err := c.PutTemplate(ctx, key, func(ctx context.Context, dir string) (string, string, error) {
		os.WriteFile(filepath.Join(dir, "half.tar"), []byte("partial"), 0o644)
		cancel()
		return "", "", ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if _, err := c.Template(key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an interrupted build left an entry: %v", err)
	}
	if des, _ := os.ReadDir(c.TempDir()); len(des) != 0 {
		t.Fatalf("tmp/ keeps %d entries", len(des))
	}
	if probs, _ := c.Verify(context.Background(), VerifyOptions{}); len(probs) != 0 {
		t.Fatalf("Verify: %v", probs)
	}
}

func TestVerifyFindsDamage(t *testing.T) {
	ctx := context.Background()
	c := open(t)
	h := digestOf("blob")
	c.PutBlobBytes(ctx, h, []byte("blob"))
	key := keyOf("k")
	e, _, err := c.PutTemplate(ctx, key, func(ctx context.Context, dir string) (string, string, error) {
		return "a.tar.zst", digestOf("good").Hex, os.WriteFile(filepath.Join(dir, "a.tar.zst"), []byte("good"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(c.BlobPath(h), []byte("blob!"), 0o644)
	os.WriteFile(e.Path(), []byte("evil"), 0o644)
	probs, err := c.Verify(ctx, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(probs) != 2 {
		t.Fatalf("problems %v, want the blob and the template", probs)
	}
	for _, p := range probs {
		if !strings.Contains(p.Err, "hashes to") {
			t.Errorf("problem %v", p)
		}
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	c := open(t)
	old, mid, fresh := digestOf(strings.Repeat("o", 100)), digestOf(strings.Repeat("m", 100)), digestOf(strings.Repeat("f", 100))
	for _, b := range []string{strings.Repeat("o", 100), strings.Repeat("m", 100), strings.Repeat("f", 100)} {
		c.PutBlobBytes(ctx, digestOf(b), []byte(b))
	}
	now := time.Now()
	os.Chtimes(c.BlobPath(old), now.Add(-72*time.Hour), now.Add(-72*time.Hour))
	os.Chtimes(c.BlobPath(mid), now.Add(-2*time.Hour), now.Add(-2*time.Hour))

	removed, err := c.Prune(ctx, PruneOptions{OlderThan: 24 * time.Hour})
	if err != nil || len(removed) != 1 || removed[0].ID != old.String() {
		t.Fatalf("prune by age removed %v, %v", removed, err)
	}
	// A locked entry survives even when it is the oldest.
	unlock, err := c.Lock(ctx, "blob-"+mid.Hex)
	if err != nil {
		t.Fatal(err)
	}
	removed, _ = c.Prune(ctx, PruneOptions{MaxSize: 100})
	if len(removed) != 1 || removed[0].ID != fresh.String() {
		t.Fatalf("prune by size with mid locked removed %v", removed)
	}
	unlock()
	removed, _ = c.Prune(ctx, PruneOptions{MaxSize: 1})
	if len(removed) != 1 || removed[0].ID != mid.String() || c.HasBlob(mid) {
		t.Fatalf("prune by size removed %v", removed)
	}
}

func TestRemove(t *testing.T) {
	ctx := context.Background()
	c := open(t)
	blob := digestOf("layer")
	c.PutBlobBytes(ctx, blob, []byte("layer"))
	key := keyOf("image")
	_, _, err := c.PutTemplate(ctx, key, func(ctx context.Context, dir string) (string, string, error) {
		return "t.tar", digestOf("tpl").Hex, os.WriteFile(filepath.Join(dir, "t.tar"), []byte("tpl"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	// In use by another process (its lock): kept.
	unlock, _ := c.Lock(ctx, "template-"+key)
	if ok, err := c.RemoveTemplate(key); ok || err != nil {
		t.Fatalf("RemoveTemplate of a locked entry: %v %v", ok, err)
	}
	unlock()
	if ok, err := c.RemoveTemplate(key); !ok || err != nil {
		t.Fatalf("RemoveTemplate: %v %v", ok, err)
	}
	if _, err := c.Template(key); !errors.Is(err, ErrNotFound) {
		t.Errorf("template still there: %v", err)
	}
	if ok, err := c.RemoveBlob(blob); !ok || err != nil || c.HasBlob(blob) {
		t.Fatalf("RemoveBlob: %v %v", ok, err)
	}
	if ok, err := c.RemoveBlob(blob); !ok || err != nil {
		t.Errorf("RemoveBlob of a missing blob: %v %v", ok, err)
	}
	if _, err := c.RemoveTemplate("../x"); err == nil {
		t.Error("RemoveTemplate took a path")
	}
	if _, err := c.RemoveBlob(v1.Hash{Algorithm: "sha256", Hex: "../../x"}); err == nil {
		t.Error("RemoveBlob took a path")
	}
}

// putTemplate stores body as the template of key.
func putTemplate(t *testing.T, ctx context.Context, c *Cache, key, body string) Entry {
	t.Helper()
	e, _, err := c.PutTemplate(ctx, key, func(ctx context.Context, dir string) (string, string, error) {
		return "t.tar", digestOf(body).Hex, os.WriteFile(filepath.Join(dir, "t.tar"), []byte(body), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestHoldKeepsEntries: what is read under a Hold stays until the Hold
// closes, whoever removes (prune, RemoveTemplate, RemoveBlob, another
// Cache on the same directory standing in for another process).
func TestHoldKeepsEntries(t *testing.T) {
	c := open(t)
	other, err := Open(c.Dir())
	if err != nil {
		t.Fatal(err)
	}
	blob := digestOf("layer")
	key := keyOf("image")
	hold := NewHold()
	ctx := WithHold(context.Background(), hold)
	if err := c.PutBlobBytes(ctx, blob, []byte("layer")); err != nil {
		t.Fatal(err)
	}
	e := putTemplate(t, ctx, c, key, "tpl")
	if hold.Len() != 2 {
		t.Fatalf("the hold has %d entries, want the blob and the template", hold.Len())
	}
	// Found again under the same Hold: held once.
	if _, err := c.PutBlob(ctx, blob, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LookupTemplate(ctx, key); err != nil || hold.Len() != 2 {
		t.Fatalf("LookupTemplate: %v, %d held", err, hold.Len())
	}

	for _, tc := range []struct {
		name   string
		remove func() (bool, error)
	}{
		{"RemoveTemplate", func() (bool, error) { return other.RemoveTemplate(key) }},
		{"RemoveBlob", func() (bool, error) { return other.RemoveBlob(blob) }},
		{"Prune", func() (bool, error) {
			removed, err := other.Prune(context.Background(), PruneOptions{MaxSize: 1})
			return len(removed) > 0, err
		}},
	} {
		if ok, err := tc.remove(); ok || err != nil {
			t.Errorf("%s of held entries: removed %v, %v", tc.name, ok, err)
		}
	}
	if b, err := os.ReadFile(e.Path()); err != nil || string(b) != "tpl" {
		t.Fatalf("held template: %q, %v", b, err)
	}
	if !c.HasBlob(blob) {
		t.Fatal("held blob is gone")
	}
	hold.Close()
	removed, err := other.Prune(context.Background(), PruneOptions{MaxSize: 1})
	if err != nil || len(removed) != 2 {
		t.Fatalf("prune after the hold closed removed %v, %v", removed, err)
	}
	// A closed Hold keeps nothing new.
	c.PutBlobBytes(ctx, blob, []byte("layer"))
	if hold.Len() != 0 {
		t.Errorf("a closed hold took %d entries", hold.Len())
	}
	if ok, err := other.RemoveBlob(blob); !ok || err != nil {
		t.Errorf("RemoveBlob after the hold closed: %v %v", ok, err)
	}
}

// TestPutBlobRepairsRot: a cached blob whose bytes no longer hash to its
// digest is fetched again by PutBlob and refused by ReadBlob.
func TestPutBlobRepairsRot(t *testing.T) {
	ctx := context.Background()
	c := open(t)
	h := digestOf("content")
	c.PutBlobBytes(ctx, h, []byte("content"))
	os.WriteFile(c.BlobPath(h), []byte("contenT"), 0o644)

	opened := 0
	_, err := c.PutBlob(ctx, h, func() (io.ReadCloser, error) {
		opened++
		return io.NopCloser(strings.NewReader("content")), nil
	})
	if err != nil || opened != 1 {
		t.Fatalf("PutBlob over a rotten blob: %v, fetched %d times", err, opened)
	}
	if b, err := c.ReadBlob(h); err != nil || string(b) != "content" {
		t.Fatalf("after the repair: %q, %v", b, err)
	}

	os.WriteFile(c.BlobPath(h), []byte("contenT"), 0o644)
	_, err = c.ReadBlob(h)
	if !errors.Is(err, ErrDigestMismatch) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadBlob of a rotten blob: %v", err)
	}
	if c.HasBlob(h) {
		t.Error("ReadBlob kept the rotten blob")
	}
}

// TestTemplateLookupChecks: an entry whose files disagree with its
// entry.json is damaged, not served: Template says so, PutTemplate builds
// it again.
func TestTemplateLookupChecks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(e Entry) error
	}{
		{"file gone", func(e Entry) error { return os.Remove(e.Path()) }},
		{"junk appended", func(e Entry) error {
			return os.WriteFile(e.Path(), []byte("tpl+junk"), 0o644)
		}},
		{"file is a directory", func(e Entry) error {
			os.Remove(e.Path())
			return os.Mkdir(e.Path(), 0o755)
		}},
		{"entry.json gone", func(e Entry) error { return os.Remove(filepath.Join(e.Dir, entryFile)) }},
		{"entry.json garbage", func(e Entry) error { return os.WriteFile(filepath.Join(e.Dir, entryFile), []byte("{"), 0o644) }},
		{"entry.json names a path", func(e Entry) error {
			return os.WriteFile(filepath.Join(e.Dir, entryFile), []byte(`{"file":"../../x","size":3,"sha256":"`+e.SHA256+`"}`), 0o644)
		}},
		{"directory is a file", func(e Entry) error {
			os.RemoveAll(e.Dir)
			return os.WriteFile(e.Dir, []byte("x"), 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c := open(t)
			key := keyOf("image")
			e := putTemplate(t, ctx, c, key, "tpl")
			if err := tc.damage(e); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Template(key); !errors.Is(err, ErrDamaged) || !errors.Is(err, ErrNotFound) {
				t.Fatalf("Template of a damaged entry: %v", err)
			}
			probs, err := c.Verify(ctx, VerifyOptions{})
			if err != nil || len(probs) != 1 {
				t.Errorf("Verify: %v, %v", probs, err)
			}
			e, built, err := c.PutTemplate(ctx, key, func(ctx context.Context, dir string) (string, string, error) {
				return "t.tar", digestOf("tpl").Hex, os.WriteFile(filepath.Join(dir, "t.tar"), []byte("tpl"), 0o644)
			})
			if err != nil || !built {
				t.Fatalf("PutTemplate over a damaged entry: built %v, %v", built, err)
			}
			if b, err := os.ReadFile(e.Path()); err != nil || string(b) != "tpl" {
				t.Errorf("rebuilt template: %q, %v", b, err)
			}
			if probs, err := c.Verify(ctx, VerifyOptions{}); err != nil || len(probs) != 0 {
				t.Errorf("Verify after the rebuild: %v, %v", probs, err)
			}
		})
	}
}

// TestDropTemplate drops the directory an entry was read from, even when
// another holds it, and never one that replaced it.
func TestDropTemplate(t *testing.T) {
	c := open(t)
	other, err := Open(c.Dir())
	if err != nil {
		t.Fatal(err)
	}
	key := keyOf("image")
	hold, otherHold := NewHold(), NewHold()
	ctx, otherCtx := WithHold(context.Background(), hold), WithHold(context.Background(), otherHold)
	first := putTemplate(t, ctx, c, key, "tpl")
	if err := c.DropTemplate(context.Background(), first); err == nil {
		t.Error("DropTemplate of an entry its context does not hold succeeded")
	}

	// Another process finds it damaged too, drops it and builds it again.
	seen, err := other.LookupTemplate(otherCtx, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.DropTemplate(otherCtx, seen); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Template(key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dropped template: %v", err)
	}
	if b, err := os.ReadFile(first.Path()); err == nil {
		t.Errorf("the dropped directory is still at its place: %q", b)
	}
	putTemplate(t, otherCtx, other, key, "tpl")

	// Its replacement stays when the first process drops what it read.
	if err := c.DropTemplate(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Template(key); err != nil {
		t.Errorf("dropping a stale entry removed its replacement: %v", err)
	}
	if hold.Len() != 0 {
		t.Errorf("the hold keeps %d entries after the drop", hold.Len())
	}
	otherHold.Close()
	// What was dropped while held is gone once nobody holds it and a run
	// starts.
	if _, err := Open(c.Dir()); err != nil {
		t.Fatal(err)
	}
	if des, _ := os.ReadDir(c.TempDir()); len(des) != 0 {
		t.Errorf("tmp/ keeps %d entries", len(des))
	}
}

// TestVerifyFix removes everything Verify reports, and only that.
func TestVerifyFix(t *testing.T) {
	ctx := context.Background()
	c := open(t)
	good, bad := digestOf("good"), digestOf("bad")
	c.PutBlobBytes(ctx, good, []byte("good"))
	c.PutBlobBytes(ctx, bad, []byte("bad"))
	os.WriteFile(c.BlobPath(bad), []byte("bAd"), 0o644)
	keep := putTemplate(t, ctx, c, keyOf("keep"), "keep")
	flipped := putTemplate(t, ctx, c, keyOf("flipped"), "tpl")
	os.WriteFile(flipped.Path(), []byte("tpL"), 0o644)
	gone := putTemplate(t, ctx, c, keyOf("gone"), "tpl")
	os.Remove(gone.Path())
	os.WriteFile(filepath.Join(c.Dir(), "blobs", "sha256", "stray"), nil, 0o644)
	os.Mkdir(filepath.Join(c.Dir(), "templates", "stray"), 0o755)

	probs, err := c.Verify(ctx, VerifyOptions{Fix: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{c.BlobPath(bad): true, flipped.Path(): true, gone.Path(): true,
		filepath.Join(c.Dir(), "blobs", "sha256", "stray"): true, filepath.Join(c.Dir(), "templates", "stray"): true}
	for _, p := range probs {
		if !want[p.Path] || !p.Removed {
			t.Errorf("problem %+v", p)
		}
		delete(want, p.Path)
	}
	if len(want) != 0 {
		t.Errorf("not reported: %v", want)
	}
	if probs, err := c.Verify(ctx, VerifyOptions{}); err != nil || len(probs) != 0 {
		t.Errorf("Verify after the fix: %v, %v", probs, err)
	}
	if !c.HasBlob(good) {
		t.Error("the fix removed a good blob")
	}
	if _, err := c.Template(keep.Key); err != nil {
		t.Errorf("the fix removed a good template: %v", err)
	}
}

// TestLockFileRemoval: a build lock file deleted by its holder does not
// let two others in at once.
func TestLockFileRemoval(t *testing.T) {
	ctx := context.Background()
	c := open(t)
	unlock, err := c.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func())
	go func() {
		u, err := c.Lock(ctx, "k")
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	// The waiter has the old file open (or will open the new one): either
	// way, once it has the lock, the path's lock is its.
	os.Remove(c.lockPath("k"))
	unlock()
	second := <-got
	if _, ok := c.tryLock("k"); ok {
		t.Fatal("a lock on the recreated file was granted beside the waiter's")
	}
	second()
	if u, ok := c.tryLock("k"); !ok {
		t.Fatal("the lock is not free after its holder released it")
	} else {
		u()
	}
}
