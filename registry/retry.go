package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults for Options.Retries and Options.StallTimeout.
const (
	DefaultRetries      = 5
	DefaultStallTimeout = 30 * time.Second
	// MaxRetryAfter is the longest Retry-After pve-image waits for; a
	// registry asking for more is given up on at once, with its request
	// in the error.
	MaxRetryAfter = 60 * time.Second
)

// retryPolicy says how often and how long to retry registry requests and
// interrupted downloads. We retry ourselves instead of with
// go-containerregistry's transport.NewRetry (v0.22.1) because that one
// ignores Retry-After, sleeps without watching the context (a cancelled
// pull sits out the backoff), and retries nothing that fails after the
// response headers, where a dropped or stalled blob download fails.
type retryPolicy struct {
	retries int
	stall   time.Duration
	log     *slog.Logger
	// sleep waits d or until ctx ends; tests replace it to record waits.
	sleep func(ctx context.Context, d time.Duration) error
}

func newRetryPolicy(retries int, stall time.Duration, log *slog.Logger) *retryPolicy {
	switch {
	case retries == 0:
		retries = DefaultRetries
	case retries < 0:
		retries = 0
	}
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &retryPolicy{retries: retries, stall: stall, log: log, sleep: sleepCtx}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff is the wait before retry n (1, 2, …): 250 ms doubling up to 8 s,
// with 10% jitter so that parallel layer downloads do not return in step.
// The five default retries wait about 7.75 s in all.
func backoff(n int) time.Duration {
	d := 250 * time.Millisecond << min(n-1, 5)
	d = min(d, 8*time.Second)
	return d + time.Duration(rand.Int64N(int64(d/10)+1))
}

// wait sleeps before retry n, for retryAfter when the registry asked for
// it, and logs why. Cancelled, it returns the context's error with cause.
func (p *retryPolicy) wait(ctx context.Context, n int, retryAfter time.Duration, what string, cause error) error {
	d := retryAfter
	if d <= 0 {
		d = backoff(n)
	}
	p.log.Warn("registry request failed; retrying", "request", what, "retry", fmt.Sprintf("%d/%d", n, p.retries),
		"wait", d.Round(time.Millisecond), "error", cause)
	if err := p.sleep(ctx, d); err != nil {
		return fmt.Errorf("%w while waiting to retry after: %v", err, cause)
	}
	return nil
}

// GaveUpError is a request or download that failed on every attempt.
type GaveUpError struct {
	Attempts int
	Err      error
}

func (e *GaveUpError) Error() string {
	s := "s"
	if e.Attempts == 1 {
		s = ""
	}
	return fmt.Sprintf("%v (gave up after %d attempt%s)", e.Err, e.Attempts, s)
}

func (e *GaveUpError) Unwrap() error { return e.Err }

// StallError is a request that received nothing for the stall timeout.
type StallError struct {
	Timeout time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("registry stalled: no data for %s", e.Timeout)
}

// retryTransport retries GET and HEAD requests that fail before a response
// or with a status a registry uses for passing trouble (408, 429, 5xx),
// honouring Retry-After up to MaxRetryAfter. Other requests go through
// once: a PATCH that fails may have left part of its body in the upload
// session, so only the whole upload can be tried again, and that is
// go-containerregistry's remote.Write's job (Endpoint.RemoteOptions).
type retryTransport struct {
	next   http.RoundTripper
	policy *retryPolicy
	// noDialRetry leaves unreachable hosts to the next endpoint: a mirror
	// that is down is skipped, not waited for.
	noDialRetry bool
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if (req.Method != http.MethodGet && req.Method != http.MethodHead) || (req.Body != nil && req.Body != http.NoBody) {
		return t.next.RoundTrip(req)
	}
	what := req.Method + " " + req.URL.Redacted()
	for attempt := 1; ; attempt++ {
		resp, err := t.next.RoundTrip(req)
		if err == nil && !retryStatus(resp.StatusCode) {
			return resp, nil
		}
		var retryAfter time.Duration
		if err == nil {
			retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
			err = checkResponse(resp)
			// Drain what is left (CheckError reads a bounded prefix) so the
			// connection is reused.
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		} else if !retryableError(err) || (t.noDialRetry && isDial(err)) || req.Context().Err() != nil {
			return nil, err
		}
		if retryAfter > MaxRetryAfter {
			return nil, fmt.Errorf("%w; the registry asks to retry after %s, longer than pve-image waits (%s)", err, retryAfter, MaxRetryAfter)
		}
		if attempt > t.policy.retries {
			return nil, &GaveUpError{Attempts: attempt, Err: err}
		}
		if werr := t.policy.wait(req.Context(), attempt, retryAfter, what, err); werr != nil {
			return nil, werr
		}
	}
}

func retryStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// parseRetryAfter reads Retry-After as seconds or an HTTP date; 0 when
// absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, 1<<31)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// retryableError says whether a transport or read error is worth another
// attempt: the connection broke, was refused or reset, or stalled. TLS and
// certificate errors, plain-HTTP answers to HTTPS, unknown hosts and
// cancellation are not.
func retryableError(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var se *StallError
	if errors.As(err, &se) {
		return true
	}
	var sz *SizeError
	if errors.As(err, &sz) {
		return sz.Got < sz.Declared
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.IsTemporary || dns.IsTimeout
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, net.ErrClosed):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// stallTransport fails a request when no bytes move for the timeout:
// while its body is being sent, while waiting for the response, and
// between reads of the response body. A registry that stops sending, or
// stops taking an upload, would otherwise hold a pull or a push for ever.
// An upload receives nothing until its body is sent, so each request-body
// byte read for sending counts as progress too: a long upload that keeps
// moving is never taken for a stall.
type stallTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	stalled := &StallError{Timeout: t.timeout}
	timer := time.AfterFunc(t.timeout, func() { cancel(stalled) })
	out := req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		out.Body = &sendingBody{ReadCloser: req.Body, timer: timer, timeout: t.timeout}
		if req.GetBody != nil {
			// net/http sends the body again from GetBody when a reused
			// connection turns out to be dead; that counts as well.
			out.GetBody = func() (io.ReadCloser, error) {
				b, err := req.GetBody()
				if err != nil {
					return nil, err
				}
				return &sendingBody{ReadCloser: b, timer: timer, timeout: t.timeout}, nil
			}
		}
	}
	resp, err := t.next.RoundTrip(out)
	if err != nil {
		timer.Stop()
		if context.Cause(ctx) == stalled {
			err = stalled
		}
		cancel(nil)
		return nil, err
	}
	timer.Reset(t.timeout)
	resp.Body = &watchedBody{ReadCloser: resp.Body, ctx: ctx, cancel: cancel, timer: timer, timeout: t.timeout, stalled: stalled}
	return resp, nil
}

// sendingBody is a request body that pushes the stall timer back whenever
// net/http reads from it to send. It reads only as fast as the connection
// takes bytes (once the socket buffers are full), so a registry that
// stops taking the upload stops it.
type sendingBody struct {
	io.ReadCloser
	timer   *time.Timer
	timeout time.Duration
}

func (b *sendingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.timer.Reset(b.timeout)
	}
	return n, err
}

type watchedBody struct {
	io.ReadCloser
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	timeout time.Duration
	stalled *StallError
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.timer.Reset(b.timeout)
	}
	if err != nil && err != io.EOF && context.Cause(b.ctx) == b.stalled {
		err = b.stalled
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.timer.Stop()
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}
