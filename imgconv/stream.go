package imgconv

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
)

// upperIndex answers, for entries of the streamed layer, what the layers
// above it will do to them: hide them (whiteouts, opaque directories,
// replacements) or give a directory its final attributes. It is built from
// the upper layers' entries before the streamed layer is read.
type upperIndex struct {
	paths pathTrie[upperMark]
}

// upperMark is what the upper layers do at one path.
type upperMark struct {
	hide   bool   // whited out or replaced by a non-directory
	opaque bool   // lower children hidden
	dir    *inode // the last directory entry at the path
	linked bool   // a hardlink names the path
}

func newUpperIndex(upper []*decodedLayer) *upperIndex {
	u := &upperIndex{}
	for _, d := range upper {
		for _, e := range d.entries {
			var m *upperMark
			switch e.kind {
			case entryWhiteout, entryOpaque, entryLink, entryPut:
				m = &u.paths.at(e.path).val
			default:
				continue
			}
			if e.kind == entryLink {
				u.paths.at(e.link).val.linked = true
			}
			switch {
			case e.kind == entryOpaque:
				m.opaque = true
			case e.kind == entryPut && e.ino.isDir():
				m.dir = e.ino
			default:
				m.hide = true
			}
		}
	}
	return u
}

// hidden says whether the upper layers hide an entry at p of the streamed
// layer: a whiteout or a non-directory at p or above it, an opaque directory
// above it, or a directory at p over a non-directory. It walks p once.
func (u *upperIndex) hidden(p string, isDir bool) bool {
	n := &u.paths
	if n.val.opaque {
		return true
	}
	for p != "" {
		var c string
		c, p, _ = strings.Cut(p, "/")
		if n = n.kids[c]; n == nil {
			return false
		}
		if p != "" && (n.val.opaque || n.val.hide) {
			return true
		}
	}
	return n.val.hide || (!isDir && n.val.dir != nil)
}

// linked says whether an upper layer's hardlink names p: the content of a
// hidden file there must be kept for the link.
func (u *upperIndex) linked(p string) bool {
	n := &u.paths
	for p != "" && n != nil {
		var c string
		c, p, _ = strings.Cut(p, "/")
		n = n.kids[c]
	}
	return n != nil && n.val.linked
}

// attrs is the inode whose attributes a directory at p ends with.
func (u *upperIndex) attrs(p string, ino *inode) *inode {
	if u != nil && ino.isDir() {
		n := &u.paths
		for p != "" && n != nil {
			var c string
			c, p, _ = strings.Cut(p, "/")
			n = n.kids[c]
		}
		if n != nil && n.val.dir != nil {
			return n.val.dir
		}
	}
	return ino
}

// Stream decodes the layer Flatten left pending and writes each of its
// entries as it arrives, content straight from the layer into the template,
// then applies the layers above it. Entries the upper layers hide are kept
// aside (in a spill) instead; anything the streamed order cannot express
// ends in ErrRestart. Without a pending layer Stream does nothing. After it,
// the tree is complete.
func (t *TarWriter) Stream(ctx context.Context) error {
	r := t.r
	pl := r.pending
	if pl == nil {
		return nil
	}
	f := r.f
	d := &decodedLayer{index: pl.index}
	sp, err := newSpill(f.opts.TempDir)
	if err != nil {
		return &Error{Image: f.opts.Image, Err: err}
	}
	d.spill, r.spills[pl.index] = sp, sp
	removed := &pathTrie[*node]{}
	r.tree.streaming = true
	err = f.readLayer(ctx, pl.index, pl.layer, d, func(e *entry, content io.Reader) error {
		return t.streamEntry(e, d, content, removed)
	})
	r.tree.streaming = false
	if err == nil {
		err = sp.flush()
	}
	if err != nil {
		return err
	}
	r.addDropped(d.dropped)
	for _, u := range pl.upper {
		if err := r.apply(u); err != nil {
			return r.layerError(u, err)
		}
		u.entries = nil
	}
	r.pending = nil
	return nil
}

func (t *TarWriter) streamEntry(e *entry, d *decodedLayer, content io.Reader, removed *pathTrie[*node]) error {
	r := t.r
	switch e.kind {
	case entryWhiteout:
		if n := r.tree.lookup(e.path); n != nil {
			return t.hideLower(e.path, n, true, removed)
		}
	case entryOpaque:
		if n := r.tree.lookup(e.path); n != nil && n.kids != nil {
			return t.hideLower(e.path, n, false, removed)
		}
	case entryPlnk:
		if content != nil {
			if err := r.f.copyContent(e, d, content, nil); err != nil {
				return err
			}
		}
		r.plnk[e.path] = e.ino
	case entryLink:
		if e.link == e.path {
			return nil
		}
		ino := r.linkTarget(e.link, removed)
		if ino == nil {
			return fmt.Errorf("%w (%q)", ErrBadHardlink, e.link)
		}
		if ino.skipped {
			return ErrRestart
		}
		return t.streamPut(e, ino, nil, d)
	case entryPut:
		return t.streamPut(e, e.ino, content, d)
	}
	return nil
}

// hideLower applies a whiteout (of n itself) or an opaque marker (on n's
// children) of the streamed layer: only what lower layers put there goes,
// whatever the streamed layer itself put stays, as the spec's "whiteouts
// apply to lower layers" asks whatever their order in the tar.
//
// Each node below n is visited a few times at most, and not again once it
// is stripped (clean): however deep the tree, and however often the layer
// whites out or marks opaque the same directories, a node costs O(1).
func (t *TarWriter) hideLower(p string, n *node, whiteout bool, removed *pathTrie[*node]) error {
	if n.clean && (n.fromStream || !whiteout) {
		return nil
	}
	streamed := map[*node]bool{}
	if whiteout && !n.fromStream {
		if !markStreamed(n, streamed) {
			if n.anyEmitted() {
				return ErrRestart
			}
			t.r.tree.remove(p)
			removed.set(p, n)
			return nil
		}
		// Lower directory holding streamed entries: it becomes an
		// implicit directory of the streamed layer's.
		if n.emitted {
			return ErrRestart
		}
		n.ino, n.fromStream = implicitDir(), true
	} else {
		markStreamed(n, streamed)
	}
	return t.stripLower(n, streamed, removed)
}

// stripLower removes what lower layers put below n and keeps what the
// streamed layer put there; a lower directory holding streamed entries
// becomes an implicit directory of the streamed layer's. streamed holds
// the nodes with something streamed below them (markStreamed).
func (t *TarWriter) stripLower(n *node, streamed map[*node]bool, removed *pathTrie[*node]) error {
	if n.clean {
		return nil
	}
	for name, k := range n.kids {
		switch {
		case k.fromStream:
		case streamed[k]:
			if k.emitted {
				return ErrRestart
			}
			k.ino, k.fromStream = implicitDir(), true
		default:
			if k.anyEmitted() {
				return ErrRestart
			}
			delete(n.kids, name)
			// Built only for what goes: each removed subtree came
			// from lower entries at least this long.
			removed.set(k.path(), k)
			continue
		}
		if err := t.stripLower(k, streamed, removed); err != nil {
			return err
		}
	}
	n.clean = true
	return nil
}

// markStreamed records in streamed every node at or below n with something
// from the streamed layer below it, in one pass; it reports whether n is
// one. Clean subtrees are not entered: all they hold is streamed.
func markStreamed(n *node, streamed map[*node]bool) bool {
	any := false
	if n.clean {
		any = len(n.kids) > 0
	} else {
		for _, k := range n.kids {
			below := k.kids != nil && markStreamed(k, streamed)
			any = any || below || k.fromStream
		}
	}
	if any {
		streamed[n] = true
	}
	return any
}

// streamPut applies one entry of the streamed layer and writes it, with any
// parents not yet written, unless an upper layer hides it.
func (t *TarWriter) streamPut(e *entry, ino *inode, content io.Reader, d *decodedLayer) error {
	r := t.r
	ui := r.pending.ui
	p := e.path
	if old := r.tree.lookup(p); old != nil && old.emitted {
		// Written already: as a parent from a lower layer's attributes,
		// or earlier in this layer. Only a directory that keeps the
		// attributes it was written with can go on.
		if !ino.isDir() || !old.ino.isDir() || !sameAttrs(ui.attrs(p, old.ino), ui.attrs(p, ino)) {
			return ErrRestart
		}
	}
	n, err := r.tree.put(p, ino)
	if err != nil {
		return err
	}
	if ui.hidden(p, ino.isDir()) {
		// What the upper layers hide is not written, and its content
		// is not kept either unless a hardlink of theirs needs it: a
		// link of this layer's to it, later in the tar, restarts.
		if content != nil {
			if ui.linked(p) {
				return r.f.copyContent(e, d, content, nil)
			}
			ino.skipped = true
		}
		return nil
	}
	if err := t.writeParents(n); err != nil {
		return err
	}
	if n.emitted {
		return nil
	}
	return t.writeNode(p, n, e, d, content)
}

// writeParents writes n's unwritten ancestors, root first. The path of the
// first is built once and each next one extends it, so a chain costs what
// its member names cost, not a walk to the root for each.
func (t *TarWriter) writeParents(n *node) error {
	var chain []*node
	for a := n.parent; a != nil && !a.emitted; a = a.parent {
		chain = append(chain, a)
	}
	if len(chain) == 0 {
		return nil
	}
	slices.Reverse(chain)
	p := chain[0].path()
	for i, a := range chain {
		if i > 0 {
			p = joinPath(p, a.name)
		}
		if err := t.writeNode(p, a, nil, nil, nil); err != nil {
			return err
		}
	}
	return nil
}

func sameAttrs(a, b *inode) bool {
	return a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.mtime == b.mtime && slices.Equal(a.xattrs, b.xattrs)
}
