package imgconv

import (
	"archive/tar"
	"fmt"
	"slices"
	"strings"
)

// inode is what a name in the tree points to. Hardlinked names share one
// inode, so overwriting one name (a new inode for that name) leaves the others
// with the old content, and whiting out the first name leaves the rest intact.
type inode struct {
	typ      byte  // tar type flag: TypeReg, TypeDir, TypeSymlink, TypeChar, TypeBlock or TypeFifo
	mode     int64 // permission bits with setuid, setgid and sticky
	uid, gid int
	mtime    int64 // seconds since the epoch
	size     int64
	target   string  // symlink target, verbatim
	xattrs   []xattr // sorted by name
	devMajor int64
	devMinor int64

	layer int32 // index of the spill holding the content, -1 when none
	off   int64 // offset of the content in that spill

	data []byte  // full content, kept only for the few files facts are read from
	elf  elfInfo // ELF identification of executables, for arch detection

	implicit bool // a directory no layer named, created as a parent
	// skipped: the streamed layer's content of this file was not kept,
	// for the upper layers hide it (TarWriter.Stream).
	skipped bool

	// firstName is the member name this inode's content was first written
	// under; later names become hardlinks to it.
	firstName string
}

type xattr struct{ name, value string }

func (ino *inode) isDir() bool { return ino.typ == tar.TypeDir }

type node struct {
	name   string
	parent *node
	ino    *inode
	kids   map[string]*node // directories only

	emitted    bool // written to the template already
	fromStream bool // put or changed by the streamed layer
	// clean: nothing below n comes from a lower layer, so hiding the
	// lower layers below n (TarWriter.hideLower) has nothing to do. Kept
	// only while a layer streams: set on the nodes it creates and on those
	// hideLower has stripped.
	clean bool
}

// anyEmitted reports whether n or anything below it was written.
func (n *node) anyEmitted() bool {
	if n.emitted {
		return true
	}
	for _, k := range n.kids {
		if k.anyEmitted() {
			return true
		}
	}
	return false
}

// path is n's path from the root, built in one pass up the parents: time
// and memory linear in its length, however deep n is.
func (n *node) path() string {
	size := -1
	for a := n; a.parent != nil; a = a.parent {
		size += len(a.name) + 1
	}
	if size <= 0 {
		return ""
	}
	b := make([]byte, size)
	i := size
	for a := n; a.parent != nil; a = a.parent {
		i -= copy(b[i-len(a.name):], a.name)
		if i > 0 {
			i--
			b[i] = '/'
		}
	}
	return string(b)
}

// sortedKids returns a directory's children ordered by name, the order in
// which the template lists them.
func (n *node) sortedKids() []*node {
	kids := make([]*node, 0, len(n.kids))
	for _, k := range n.kids {
		kids = append(kids, k)
	}
	slices.SortFunc(kids, func(a, b *node) int { return strings.Compare(a.name, b.name) })
	return kids
}

// tree is the merged filesystem. Paths are cleaned and relative; "" is the
// root. Lookups never follow symbolic links: layer semantics are about names,
// and following a link could reach outside the root.
type tree struct {
	root *node
	// streaming marks the nodes puts create or change as fromStream.
	streaming bool
}

func newTree() *tree {
	return &tree{root: &node{
		ino:  &inode{typ: tar.TypeDir, mode: 0o755, layer: -1, implicit: true},
		kids: map[string]*node{},
	}}
}

func implicitDir() *inode {
	return &inode{typ: tar.TypeDir, mode: 0o755, layer: -1, implicit: true}
}

// lookup returns the node at p, or nil when there is none. A path through a
// non-directory has no node.
func (t *tree) lookup(p string) *node {
	n := t.root
	for p != "" {
		if n.kids == nil {
			return nil
		}
		var c string
		c, p, _ = strings.Cut(p, "/")
		if n = n.kids[c]; n == nil {
			return nil
		}
	}
	return n
}

// mkdirAll returns the directory at p, creating missing directories as
// implicit ones. A symbolic link or other non-directory on the way is an
// error: writing below it would write through the link, or fail on disk.
func (t *tree) mkdirAll(p string) (*node, error) {
	n := t.root
	done := 0
	for p != "" {
		var c string
		c, p, _ = strings.Cut(p, "/")
		done += len(c) + 1
		k := n.kids[c]
		if k == nil {
			k = &node{name: c, parent: n, ino: implicitDir(), kids: map[string]*node{}, fromStream: t.streaming, clean: t.streaming}
			n.kids[c] = k
		} else if !k.ino.isDir() {
			if k.ino.typ == tar.TypeSymlink {
				return nil, fmt.Errorf("%w (%s is a symlink to %q)", ErrThroughSymlink, k.path(), k.ino.target)
			}
			return nil, fmt.Errorf("%w (%s is not a directory)", ErrNotDir, k.path())
		}
		n = k
	}
	return n, nil
}

// put places ino at p and returns its node. A directory over a directory
// takes the new attributes and keeps the children; anything else replaces
// what was there. Replacing something already written is ErrRestart.
func (t *tree) put(p string, ino *inode) (*node, error) {
	if p == "" {
		if !ino.isDir() {
			return nil, fmt.Errorf("%w: the root must be a directory", ErrNotDir)
		}
		t.root.ino, t.root.fromStream = ino, t.root.fromStream || t.streaming
		return t.root, nil
	}
	dir, base := splitPath(p)
	parent, err := t.mkdirAll(dir)
	if err != nil {
		return nil, err
	}
	old := parent.kids[base]
	if old != nil && old.ino.isDir() && ino.isDir() {
		old.ino, old.fromStream = ino, old.fromStream || t.streaming
		return old, nil
	}
	if old != nil && old.anyEmitted() {
		return nil, ErrRestart
	}
	n := &node{name: base, parent: parent, ino: ino, fromStream: t.streaming, clean: t.streaming}
	if ino.isDir() {
		n.kids = map[string]*node{}
	}
	parent.kids[base] = n
	return n, nil
}

// remove detaches the node at p with everything below it and returns it, or
// nil when nothing is there.
func (t *tree) remove(p string) *node {
	if p == "" {
		return nil
	}
	n := t.lookup(p)
	if n == nil {
		return nil
	}
	delete(n.parent.kids, n.name)
	return n
}

// walk visits every node below the root, parents before children and
// siblings in name order, with each node's path.
func (t *tree) walk(fn func(p string, n *node) error) error {
	var visit func(prefix string, n *node) error
	visit = func(prefix string, n *node) error {
		for _, k := range n.sortedKids() {
			p := prefix + k.name
			if err := fn(p, k); err != nil {
				return err
			}
			if k.kids != nil {
				if err := visit(p+"/", k); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return visit("", t.root)
}
