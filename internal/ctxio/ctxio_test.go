package ctxio

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReader(t *testing.T) {
	tests := []struct {
		name    string
		cancel  bool
		want    string
		wantErr error
	}{
		{"live context reads through", false, "hello", nil},
		{"ended context stops", true, "", context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				cancel()
			}
			b, err := io.ReadAll(Reader(ctx, strings.NewReader("hello")))
			if string(b) != tc.want || !errors.Is(err, tc.wantErr) {
				t.Errorf("read %q, %v; want %q, %v", b, err, tc.want, tc.wantErr)
			}
		})
	}
}
