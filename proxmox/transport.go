package proxmox

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// transport is where every answer from Proxmox passes, and the one place
// that works around go-proxmox's reading of errors: its handleResponse
// returns an error only for 400, 500 and 501, and reads any other status
// with a body of {"data":null} (a 503, pveproxy's "595 Connection refused"
// for a node it cannot reach) as an empty success, which surfaces later as
// a misleading error about the empty answer. Here every status but 2xx
// becomes an *APIError carrying Proxmox's status and message. go-proxmox
// also turns 401 and 403 into one ErrNotAuthorized; the APIError keeps
// what Proxmox said (which privilege is missing). Ticket sessions' 401s
// pass through, since go-proxmox renews the ticket on them.
//
// GETs, which change nothing, are tried again on transient failures (a
// broken connection, 502-504, 595-597) with backoff. Other methods never
// are: a create whose answer was lost may have happened.
type transport struct {
	next  http.RoundTripper
	token bool
	// attempts bounds the tries of a GET; delay is the first wait
	// between them, doubling up to maxRetryDelay.
	attempts int
	delay    time.Duration
}

const (
	getAttempts   = 5
	retryDelay    = 250 * time.Millisecond
	maxRetryDelay = 2 * time.Second
)

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	attempts := 1
	if req.Method == http.MethodGet {
		attempts = max(t.attempts, 1)
	}
	delay := t.delay
	for try := 1; ; try++ {
		resp, err := t.next.RoundTrip(req)
		var fail *APIError
		switch {
		case err != nil:
			if !broken(err) {
				// Not reached, refused, or cancelled: Dial and the
				// caller say why.
				return nil, err
			}
			fail = &APIError{Method: req.Method, Path: apiPath(req), Err: err}
		case resp.StatusCode < 300, resp.StatusCode == http.StatusUnauthorized && !t.token:
			return resp, nil
		default:
			fail = newAPIError(req, resp)
		}
		fail.Attempts, fail.token = try, t.token
		if try >= attempts || !fail.Transient() {
			return nil, fail
		}
		select {
		case <-req.Context().Done():
			return nil, fail
		case <-time.After(delay):
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

// newAPIError reads an error answer and closes its body.
func newAPIError(req *http.Request, resp *http.Response) *APIError {
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &APIError{Method: req.Method, Path: apiPath(req), Status: resp.StatusCode, Message: reason(resp), Location: resp.Header.Get("Location")}
	var body struct {
		Message string            `json:"message"`
		Errors  map[string]string `json:"errors"`
	}
	if json.Unmarshal(raw, &body) == nil {
		if len(body.Errors) > 0 {
			e.Errors = body.Errors
		}
		// The body has the whole message; the status line only its
		// first line.
		if m := strings.TrimSpace(body.Message); m != "" {
			e.Message = m
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// broken reports whether a connection that was open broke (a reset, a
// close before the answer): as opposed to one that could not be opened, or
// a TLS or certificate failure, which trying again does not mend.
func broken(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
