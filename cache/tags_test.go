package cache

import (
	"errors"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestTags: a tag remembers the last digest it resolved to, per reference;
// unknown tags are ErrNotFound and odd digests are refused.
func TestTags(t *testing.T) {
	c, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	b := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("b", 64)}
	steps := []struct {
		put  string
		d    v1.Hash
		ref  string
		want v1.Hash
		err  error
	}{
		{ref: "docker.io/library/alpine:3.20", err: ErrNotFound},
		{put: "docker.io/library/alpine:3.20", d: a, ref: "docker.io/library/alpine:3.20", want: a},
		{put: "docker.io/library/alpine:3.20", d: b, ref: "docker.io/library/alpine:3.20", want: b},
		{ref: "docker.io/library/alpine:3.21", err: ErrNotFound},
	}
	before := time.Now().Add(-time.Second)
	for i, s := range steps {
		if s.put != "" {
			if err := c.PutTag(s.put, s.d); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		got, when, err := c.Tag(s.ref)
		switch {
		case s.err != nil && !errors.Is(err, s.err):
			t.Errorf("step %d: %v, want %v", i, err, s.err)
		case s.err == nil && (err != nil || got != s.want || when.Before(before)):
			t.Errorf("step %d: %v at %v, %v; want %v", i, got, when, err, s.want)
		}
	}
	if err := c.PutTag("x:1", v1.Hash{Algorithm: "md5", Hex: "00"}); err == nil {
		t.Error("a non-sha256 digest was recorded")
	}
}
