package imgconv

import "strings"

// pathTrie maps cleaned paths to values, one level per component. Finding a
// path with all its ancestors is one walk down its components, so it costs
// time linear in the path's length; a map keyed by whole paths would hash
// every ancestor again, which is quadratic in the depth.
type pathTrie[V any] struct {
	kids map[string]*pathTrie[V]
	val  V
	has  bool // val was set
}

// at returns the trie node for p, creating it and its ancestors.
func (t *pathTrie[V]) at(p string) *pathTrie[V] {
	for p != "" {
		var c string
		c, p, _ = strings.Cut(p, "/")
		k := t.kids[c]
		if k == nil {
			if t.kids == nil {
				t.kids = map[string]*pathTrie[V]{}
			}
			k = &pathTrie[V]{}
			t.kids[c] = k
		}
		t = k
	}
	return t
}

func (t *pathTrie[V]) set(p string, v V) {
	n := t.at(p)
	n.val, n.has = v, true
}

// deepest returns the value set at p or at its nearest ancestor that has
// one, with the part of p below that ancestor ("" for p itself).
func (t *pathTrie[V]) deepest(p string) (v V, rest string, ok bool) {
	if t == nil {
		return v, "", false
	}
	if t.has {
		v, rest, ok = t.val, p, true
	}
	for p != "" {
		var c string
		c, p, _ = strings.Cut(p, "/")
		if t = t.kids[c]; t == nil {
			break
		}
		if t.has {
			v, rest, ok = t.val, p, true
		}
	}
	return v, rest, ok
}
