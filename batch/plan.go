package batch

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/registry"
)

// Item is one unit of work: an image for one platform with one set of
// options.
type Item struct {
	Image *Image
	// Ref names the image in reports, the lock and shards: a registry
	// reference normalised (alpine is docker.io/library/alpine:latest), a
	// local source as the build file writes it (relative to the file, so
	// that it is the same on every machine).
	Ref      string
	Platform v1.Platform
}

// PlatformString is os/arch[/variant].
func (it *Item) PlatformString() string { return registry.PlatformString(it.Platform) }

func (it *Item) String() string { return it.Ref + " " + it.PlatformString() }

// id names the item for sharding: its image and platform, never its
// position in a list that changes.
func (it *Item) id() string { return it.Ref + "\n" + it.PlatformString() }

// Shard is the I-th of N (1-based) equal parts of a build.
type Shard struct{ I, N int }

// ParseShard reads I/N.
func ParseShard(s string) (Shard, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 1 || i > n {
		return Shard{}, fmt.Errorf("--shard %q: want I/N with 1 <= I <= N, such as 1/4", s)
	}
	return Shard{I: i, N: n}, nil
}

// Has says whether the item belongs to the shard: by a hash of its image
// and platform, so every runner of a CI matrix agrees without talking, and
// adding an image to the file moves no other.
func (s Shard) Has(it *Item) bool {
	if s.N <= 1 {
		return true
	}
	sum := sha256.Sum256([]byte(it.id()))
	return binary.BigEndian.Uint64(sum[:8])%uint64(s.N) == uint64(s.I-1)
}

// Items lists the file's work in file order, each image and platform with
// the same options once, and keeps those of the shard.
func (f *File) Items(s Shard) []*Item {
	var out []*Item
	seen := map[string]bool{}
	for i := range f.Images {
		im := &f.Images[i]
		for _, p := range im.Platforms {
			it := &Item{Image: im, Ref: im.key(), Platform: p}
			k := it.id() + "\n" + im.Convert.fingerprint()
			if seen[k] {
				continue
			}
			seen[k] = true
			if s.Has(it) {
				out = append(out, it)
			}
		}
	}
	return out
}

// key is how the image is named in reports, the lock and shards.
func (im *Image) key() string {
	if im.Reference.Transport == registry.Docker {
		return im.Reference.String()
	}
	return im.Ref
}
