package imgconv

import (
	"errors"
	"fmt"
	"strings"
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
		fmt.Fprintf(&b, "%q: ", e.Path)
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

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
	ErrBadHardlink    = errors.New("hardlink target does not exist or is a directory")
	ErrBadWhiteout    = errors.New("invalid whiteout")

	// ErrRestart says a streamed write found the image out of the order it
	// relies on (a layer naming an entry twice, a child before its parent
	// directory) or was asked to change what it had written. Nothing is
	// wrong with the image: flatten again with Options.Stream = -1 and
	// write from the start.
	ErrRestart = errors.New("streamed write cannot continue; write again without streaming")
)
