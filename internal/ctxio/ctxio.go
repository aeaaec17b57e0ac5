// Package ctxio holds the io helpers every layer needs and no chosen
// library has: a reader that stops once its context ends, for long copies
// (blobs, templates) whose source never blocks long enough for a deadline
// but whose caller may have given up.
package ctxio

import (
	"context"
	"io"
)

// Reader returns a reader of r that fails with ctx's error once ctx ends,
// checked before each Read.
func Reader(ctx context.Context, r io.Reader) io.Reader { return reader{ctx, r} }

type reader struct {
	ctx context.Context
	r   io.Reader
}

func (c reader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
