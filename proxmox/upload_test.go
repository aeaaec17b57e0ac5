package proxmox

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/url"
	"syscall"
	"testing"
)

func TestRetriable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{syscall.ECONNRESET, true},
		{&url.Error{Op: "Post", URL: "https://h", Err: io.ErrUnexpectedEOF}, true},
		{&APIError{Status: 503}, true},
		{&url.Error{Op: "Post", URL: "https://h", Err: &APIError{Status: 595, Message: "Connection refused"}}, true},
		{&APIError{Status: 500}, false},
		{&APIError{Status: 400}, false},
		{&APIError{Err: syscall.ECONNRESET}, true},
		{fmt.Errorf("x: %w", ErrAuth), false},
		{&url.Error{Op: "Post", URL: "https://h", Err: fmt.Errorf("tls: %w", ErrFingerprint)}, false},
		{&url.Error{Op: "Post", URL: "https://h", Err: x509.UnknownAuthorityError{}}, false},
		{&url.Error{Op: "Post", URL: "https://h", Err: &net.DNSError{Err: "no such host", Name: "pve", IsNotFound: true}}, false},
		{&url.Error{Op: "Post", URL: "https://h", Err: &net.DNSError{Err: "timeout", Name: "pve", IsTemporary: true}}, true},
		{context.Canceled, false},
	}
	for _, tt := range tests {
		if got := retriable(tt.err); got != tt.want {
			t.Errorf("retriable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
