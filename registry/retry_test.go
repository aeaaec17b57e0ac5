package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format("Mon, 02 Jan 2006 15:04:05 GMT"), 90 * time.Second},
		{now.Add(-time.Hour).Format("Mon, 02 Jan 2006 15:04:05 GMT"), 0},
	}
	for _, tc := range tests {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestRetryableError(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{io.ErrUnexpectedEOF, true},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{&StallError{Timeout: time.Second}, true},
		{&SizeError{Declared: 10, Got: 5}, true},
		{&SizeError{Declared: 10, Got: 11}, false},
		{&SizeError{Declared: 10, Got: 20, Announced: true}, false},
		{&net.DNSError{Err: "no such host", IsNotFound: true}, false},
		{&net.DNSError{Err: "server misbehaving", IsTemporary: true}, true},
		{context.Canceled, false},
		{errors.New("http: server gave HTTP response to HTTPS client"), false},
		{errors.New("tls: failed to verify certificate"), false},
	}
	for _, tc := range tests {
		if got := retryableError(tc.err); got != tc.want {
			t.Errorf("retryableError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestBackoff: waits grow from 250 ms to at most 8 s (plus 10% jitter), so
// the default retries are bounded.
func TestBackoff(t *testing.T) {
	var total time.Duration
	for n := 1; n <= 10; n++ {
		d := backoff(n)
		base := min(250*time.Millisecond<<(n-1), 8*time.Second)
		if d < base || d > base+base/10 {
			t.Errorf("backoff(%d) = %s, want %s + up to 10%%", n, d, base)
		}
		if n <= DefaultRetries {
			total += d
		}
	}
	if total > 9*time.Second {
		t.Errorf("the default retries wait %s", total)
	}
}

// TestSizedReader: content is read up to its declared size and at most one
// byte further; more or less is an error saying which.
func TestSizedReader(t *testing.T) {
	long := strings.Repeat("z", 1<<20)
	tests := []struct {
		source string
		size   int64
		want   string // error substring; "" for none
	}{
		{"hello", 5, ""},
		{"", 0, ""},
		{"hello" + long, 5, "more data than the 5 bytes"},
		{long, 0, "more data than the 0 bytes"},
		{"hell", 5, "content ended after 4 of the 5 bytes"},
	}
	for _, tc := range tests {
		src := &countingReader{r: strings.NewReader(tc.source)}
		b, err := io.ReadAll(&sizedReader{r: src, size: tc.size})
		switch {
		case tc.want == "" && (err != nil || string(b) != tc.source):
			t.Errorf("%.8q/%d: %q, %v", tc.source, tc.size, b, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%.8q/%d: error %v, want %q", tc.source, tc.size, err, tc.want)
		}
		if src.n > tc.size+1 {
			t.Errorf("%.8q/%d: read %d bytes from the source", tc.source, tc.size, src.n)
		}
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
