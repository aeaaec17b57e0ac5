package imgconv

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Error is a failure tied to one place in an image: which image, which layer
// and which path inside it. Any of the three may be empty when unknown.
type Error struct {
	Image string // image reference, as the user wrote it
	Layer string // layer digest
	Path  string // member path inside the layer
	Err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Image != "" {
		fmt.Fprintf(&b, "image %s: ", e.Image)
	}
	if e.Layer != "" {
		fmt.Fprintf(&b, "layer %s: ", e.Layer)
	}
	if e.Path != "" {
		b.WriteString(quoteShort(e.Path))
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// quoteShort quotes s for a message. A string too long to read (a hostile
// member name may be a megabyte) keeps its start and end, cut at character
// boundaries, with its length.
func quoteShort(s string) string {
	const head, tail = 200, 100
	if len(s) <= 2*(head+tail) {
		return fmt.Sprintf("%q", s)
	}
	h, t := head, len(s)-tail
	for h > 0 && !utf8.RuneStart(s[h]) {
		h--
	}
	for t < len(s) && !utf8.RuneStart(s[t]) {
		t++
	}
	return fmt.Sprintf("%q…%q (%d bytes)", s[:h], s[t:], len(s))
}

// Errors callers may test for with errors.Is.
var (
	ErrUnsafePath     = errors.New("path escapes the root filesystem")
	ErrThroughSymlink = errors.New("entry would be written through a symbolic link")
	ErrNotDir         = errors.New("parent is not a directory")
	ErrHighID         = errors.New("ids of 65536 and above cannot be restored by Proxmox's unprivileged extraction, which maps 0-65535; convert with --squash-high-ids to map them to 65534")
	ErrTooLarge       = errors.New("image expands beyond the size limit")
	ErrTooManyEntries = errors.New("image has more entries than the limit")
	ErrMediaType      = errors.New("unsupported layer media type")
	ErrCorrupt        = errors.New("layer is corrupt or truncated")
	// ErrExternalGunzip marks a failure of the external gzip decoder
	// (Options.Gunzip): it did not start, or it refused a layer, which
	// then is ErrCorrupt as well. A layer that the built-in decoder reads
	// (Options.Gunzip "") is the decoder's problem, not the image's.
	ErrExternalGunzip = errors.New("external gzip decoder failed")
	ErrBadHardlink    = errors.New("hardlink target does not exist or is a directory")
	ErrBadWhiteout    = errors.New("invalid whiteout")
	ErrNameTooLong    = errors.New("file name longer than 255 bytes, which Linux cannot create (NAME_MAX)")
	ErrPathTooLong    = errors.New("path longer than 4095 bytes, which Linux cannot take and Proxmox's tar could not extract (PATH_MAX)")

	// ErrRestart says a streamed write found the image out of the order it
	// relies on (a layer naming an entry twice, a child before its parent
	// directory) or was asked to change what it had written. Nothing is
	// wrong with the image: flatten again with Options.Stream = -1 and
	// write from the start.
	ErrRestart = errors.New("streamed write cannot continue; write again without streaming")
)
