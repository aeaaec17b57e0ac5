package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tagRecord is what a registry tag resolved to when it was last pulled:
// CACHE/tags/<sha256 of the reference>.json. It lets a tag be used while
// its registry is unreachable (pull --offline, or the fallback).
type tagRecord struct {
	Ref      string    `json:"ref"`
	Digest   string    `json:"digest"`
	Resolved time.Time `json:"resolved"`
}

func (c *Cache) tagPath(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(c.dir, "tags", hex.EncodeToString(sum[:])+".json")
}

// PutTag records that ref (a normalised registry reference with a tag)
// resolved to d now. The record is replaced whole, never half-written.
func (c *Cache) PutTag(ref string, d v1.Hash) error {
	if _, err := parseTagDigest(d.String()); err != nil {
		return fmt.Errorf("tag %s: %w", ref, err)
	}
	b, err := json.Marshal(tagRecord{Ref: ref, Digest: d.String(), Resolved: time.Now().UTC().Truncate(time.Second)})
	if err != nil {
		return err
	}
	dst := c.tagPath(ref)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("tag %s: %w", ref, err)
	}
	// A work file (locked while open), renamed before it is closed: the
	// next run's cleanup of tmp/ must not take it for a dead run's.
	tmp, err := CreateWorkFile(c.TempDir(), "tag-*")
	if err != nil {
		return fmt.Errorf("tag %s: %w", ref, err)
	}
	defer tmp.Close()
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("tag %s: %w", ref, err)
	}
	return nil
}

// Tag returns the digest ref last resolved to and when, or ErrNotFound.
func (c *Cache) Tag(ref string) (v1.Hash, time.Time, error) {
	b, err := os.ReadFile(c.tagPath(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return v1.Hash{}, time.Time{}, fmt.Errorf("tag %s: %w", ref, ErrNotFound)
	}
	if err != nil {
		return v1.Hash{}, time.Time{}, fmt.Errorf("tag %s: %w", ref, err)
	}
	var r tagRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return v1.Hash{}, time.Time{}, fmt.Errorf("tag %s: %s: %w", ref, c.tagPath(ref), err)
	}
	if r.Ref != ref {
		return v1.Hash{}, time.Time{}, fmt.Errorf("tag %s: %w", ref, ErrNotFound)
	}
	h, err := parseTagDigest(r.Digest)
	if err != nil {
		return v1.Hash{}, time.Time{}, fmt.Errorf("tag %s: %s: %w", ref, c.tagPath(ref), err)
	}
	return h, r.Resolved, nil
}

// parseTagDigest accepts the sha256 digests blobs are stored under.
func parseTagDigest(s string) (v1.Hash, error) {
	h, err := v1.NewHash(s)
	if err == nil && h.Algorithm != "sha256" {
		err = fmt.Errorf("unsupported digest %q", s)
	}
	return h, err
}
