package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
	probs, err := c.Verify(context.Background())
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
	if probs, _ := c.Verify(context.Background()); len(probs) != 0 {
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
	probs, err := c.Verify(ctx)
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
