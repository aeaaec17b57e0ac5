package batch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.yaml.in/yaml/v3"

	"github.com/pve-image/pve-image/internal/atomicfile"
)

// LockPath is the lock file beside a build file: pve-images.yaml's is
// pve-images.lock.
func LockPath(buildFile string) string {
	ext := filepath.Ext(buildFile)
	if ext != ".yaml" && ext != ".yml" {
		return buildFile + ".lock"
	}
	return strings.TrimSuffix(buildFile, ext) + ".lock"
}

// Lock records the digest each reference of a build file resolved to: an
// index's for multi-platform images, else the manifest's. With it, the
// same build file and options give the same templates on any machine.
type Lock struct {
	// Path is the lock file; Digests maps normalised references to
	// digests.
	Path    string
	Digests map[string]v1.Hash
}

type lockFile struct {
	Version int         `yaml:"version"`
	Images  []lockEntry `yaml:"images"`
}

type lockEntry struct {
	Ref    string `yaml:"ref"`
	Digest string `yaml:"digest"`
}

// LoadLock reads the lock file at path; a missing file is an empty lock.
func LoadLock(path string) (*Lock, error) {
	l := &Lock{Path: path, Digests: map[string]v1.Hash{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, &InvalidError{Errs: []*FileError{yamlError(path, err)}}
	}
	if len(root.Content) == 0 {
		return l, nil
	}
	p := &parser{file: path}
	p.mapping(root.Content[0], "", []string{"version", "images"}, func(k string, kn, vn *yaml.Node) {
		switch k {
		case "version":
			if v := p.integer(vn, k, 1, 1); *v != 1 {
				return
			}
		case "images":
			if vn.Kind != yaml.SequenceNode {
				p.errorf(vn, k, "want a list, not %s", kindName(vn))
				return
			}
			for i, c := range vn.Content {
				path := fmt.Sprintf("images[%d]", i)
				var e lockEntry
				p.mapping(c, path, []string{"ref", "digest"}, func(k string, kn, vn *yaml.Node) {
					switch k {
					case "ref":
						e.Ref = p.str(vn, join(path, k))
					case "digest":
						e.Digest = p.str(vn, join(path, k))
					}
				})
				if e.Ref == "" || e.Digest == "" {
					if c.Kind == yaml.MappingNode {
						p.errorf(c, path, "want ref and digest")
					}
					continue
				}
				h, err := v1.NewHash(e.Digest)
				if err != nil {
					p.errorf(c, join(path, "digest"), "%q: %v", e.Digest, err)
					continue
				}
				if _, dup := l.Digests[e.Ref]; dup {
					p.errorf(c, join(path, "ref"), "%s is locked twice", e.Ref)
				}
				l.Digests[e.Ref] = h
			}
		}
	})
	if len(p.errs) > 0 {
		return nil, p.invalid()
	}
	return l, nil
}

// Write replaces the lock file with l's digests, through a temporary file
// renamed into place: a build killed while writing leaves the old lock.
func (l *Lock) Write() error {
	var b bytes.Buffer
	b.WriteString("# Written by pve-image build: the digest each image of the build file resolved to.\n")
	b.WriteString("# pve-image build --locked builds exactly these; --update resolves the tags again.\n")
	lf := lockFile{Version: 1}
	for _, ref := range slices.Sorted(maps.Keys(l.Digests)) {
		lf.Images = append(lf.Images, lockEntry{Ref: ref, Digest: l.Digests[ref].String()})
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(lf); err != nil {
		return err
	}
	enc.Close()
	return writeFileAtomic(l.Path, b.Bytes())
}

// equal says whether two locks pin the same digests.
func (l *Lock) equal(o map[string]v1.Hash) bool {
	if len(l.Digests) != len(o) {
		return false
	}
	for k, v := range l.Digests {
		if o[k] != v {
			return false
		}
	}
	return true
}

// writeFileAtomic writes b to path, whole or not at all.
func writeFileAtomic(path string, b []byte) error {
	err := atomicfile.Write(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
