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
	hide   map[string]bool   // whited out or replaced by a non-directory
	opaque map[string]bool   // lower children hidden
	dirs   map[string]*inode // the last directory entry at a path
}

func newUpperIndex(upper []*decodedLayer) *upperIndex {
	u := &upperIndex{hide: map[string]bool{}, opaque: map[string]bool{}, dirs: map[string]*inode{}}
	for _, d := range upper {
		for _, e := range d.entries {
			switch e.kind {
			case entryWhiteout:
				u.hide[e.path] = true
			case entryOpaque:
				u.opaque[e.path] = true
			case entryLink:
				u.hide[e.path] = true
			case entryPut:
				if e.ino.isDir() {
					u.dirs[e.path] = e.ino
				} else {
					u.hide[e.path] = true
				}
			}
		}
	}
	return u
}

// hidden says whether the upper layers hide an entry at p of the streamed
// layer: a whiteout or a non-directory at p or above it, an opaque directory
// above it, or a directory at p over a non-directory.
func (u *upperIndex) hidden(p string, isDir bool) bool {
	if u.hide[p] || (!isDir && u.dirs[p] != nil) {
		return true
	}
	for i := strings.LastIndexByte(p, '/'); ; i = strings.LastIndexByte(p[:i], '/') {
		a := ""
		if i > 0 {
			a = p[:i]
		}
		if u.opaque[a] || (a != "" && u.hide[a]) {
			return true
		}
		if i <= 0 {
			return false
		}
	}
}

// attrs is the inode whose attributes a directory at p ends with.
func (u *upperIndex) attrs(p string, ino *inode) *inode {
	if u != nil && ino.isDir() {
		if d := u.dirs[p]; d != nil {
			return d
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
	removed := map[string]*node{}
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

func (t *TarWriter) streamEntry(e *entry, d *decodedLayer, content io.Reader, removed map[string]*node) error {
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
func (t *TarWriter) hideLower(p string, n *node, whiteout bool, removed map[string]*node) error {
	if whiteout && !n.fromStream {
		if !n.hasStreamed() {
			if n.anyEmitted() {
				return ErrRestart
			}
			t.r.tree.remove(p)
			removed[p] = n
			return nil
		}
		// Lower directory holding streamed entries: it becomes an
		// implicit directory of the streamed layer's.
		if n.emitted {
			return ErrRestart
		}
		n.ino, n.fromStream = implicitDir(), true
	}
	return t.stripLower(p, n, removed)
}

func (t *TarWriter) stripLower(p string, n *node, removed map[string]*node) error {
	for name, k := range n.kids {
		kp := joinPath(p, name)
		switch {
		case k.fromStream:
		case k.hasStreamed():
			if k.emitted {
				return ErrRestart
			}
			k.ino, k.fromStream = implicitDir(), true
		default:
			if k.anyEmitted() {
				return ErrRestart
			}
			delete(n.kids, name)
			removed[kp] = k
			continue
		}
		if err := t.stripLower(kp, k, removed); err != nil {
			return err
		}
	}
	return nil
}

// hasStreamed reports whether anything below n came from the streamed layer.
func (n *node) hasStreamed() bool {
	for _, k := range n.kids {
		if k.fromStream || k.hasStreamed() {
			return true
		}
	}
	return false
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
		if content != nil {
			return r.f.copyContent(e, d, content, nil)
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

// writeParents writes n's unwritten ancestors, root first.
func (t *TarWriter) writeParents(n *node) error {
	var chain []*node
	for a := n.parent; a != nil && !a.emitted; a = a.parent {
		chain = append(chain, a)
	}
	slices.Reverse(chain)
	for _, a := range chain {
		if err := t.writeNode(a.path(), a, nil, nil, nil); err != nil {
			return err
		}
	}
	return nil
}

func sameAttrs(a, b *inode) bool {
	return a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.mtime == b.mtime && slices.Equal(a.xattrs, b.xattrs)
}
