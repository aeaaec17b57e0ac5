package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// AccessError is a registry refusing a repository (401 or 403). It says
// whether credentials were sent, which go-containerregistry's error (a
// dump of the registry's JSON, Go maps included) does not.
type AccessError struct {
	Registry, Repository string
	Status               int
	// Code and Message are the registry's first error (UNAUTHORIZED,
	// "authentication required"), if it sent one.
	Code, Message string
	// Sent says whether credentials were sent; User is their user name,
	// when they have one.
	Sent bool
	User string
	Err  error
}

func (e *AccessError) Error() string {
	why := fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		why = fmt.Sprintf("%d %s", e.Status, e.Code)
		if e.Message != "" {
			why += ": " + e.Message
		}
	}
	s := fmt.Sprintf("registry %s refused access to repository %q (%s): ", e.Registry, e.Repository, why)
	who := "the credentials sent"
	if e.User != "" {
		who = fmt.Sprintf("the credentials sent for user %q", e.User)
	}
	switch {
	case !e.Sent:
		return s + "no credentials were sent (give them with --creds-file, PVE_IMAGE_CREDS, --password-stdin or docker login; the repository may also not exist)"
	case e.Status == http.StatusForbidden:
		return s + who + " do not allow pulling it"
	}
	return s + who + " were rejected"
}

func (e *AccessError) Unwrap() error { return e.Err }

// explain turns go-containerregistry's errors into ones that say what to
// do: refused access, and a registry that speaks plain HTTP.
func (e *endpoint) explain(err error) error {
	var ae *AccessError
	if errors.As(err, &ae) {
		return err
	}
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		a := &AccessError{Registry: e.repo.RegistryStr(), Repository: e.repo.RepositoryStr(), Status: te.StatusCode, Err: err}
		if len(te.Errors) > 0 {
			a.Code, a.Message = string(te.Errors[0].Code), te.Errors[0].Message
		}
		if cfg, cerr := authn.Authorization(context.Background(), e.auth); cerr == nil && cfg != nil {
			a.Sent = cfg.Username != "" || cfg.Password != "" || cfg.Auth != "" || cfg.IdentityToken != "" || cfg.RegistryToken != ""
			a.User = cfg.Username
		}
		return a
	}
	// net/http's error for this is not exported; its text is stable.
	if !e.plainHTTP && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		host := e.repo.RegistryStr()
		return fmt.Errorf("%w: registry %s speaks plain HTTP, not HTTPS; to reach it without TLS, pass --insecure-registry %s (only on a network you trust)", err, host, host)
	}
	return err
}

// unreachable says whether err means the registry could not be asked at
// all (down, unreachable, overloaded, stalled), as opposed to an answer
// such as "not found" or "access denied". Only then may a tag fall back to
// the digest it last resolved to.
func unreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ae *AccessError
	if errors.As(err, &ae) {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return retryStatus(te.StatusCode)
	}
	var dns *net.DNSError
	var op *net.OpError
	return retryableError(err) || errors.As(err, &dns) || errors.As(err, &op)
}

// responseError is a registry's error answer, printed as "GET URL: 404 Not
// Found: MANIFEST_UNKNOWN: manifest unknown": go-containerregistry's own
// text appends each diagnostic's detail as a Go value (map[...]).
type responseError struct{ err *transport.Error }

func (e *responseError) Error() string {
	te := e.err
	if len(te.Errors) == 0 {
		return te.Error()
	}
	var b strings.Builder
	if te.Request != nil {
		u := *te.Request.URL
		u.User, u.RawQuery = nil, ""
		fmt.Fprintf(&b, "%s %s: ", te.Request.Method, u.String())
	}
	fmt.Fprintf(&b, "%d %s", te.StatusCode, http.StatusText(te.StatusCode))
	for _, d := range te.Errors {
		fmt.Fprintf(&b, ": %s", d.Code)
		if d.Message != "" {
			fmt.Fprintf(&b, ": %s", d.Message)
		}
	}
	return b.String()
}

func (e *responseError) Unwrap() error { return e.err }

// checkResponse is transport.CheckError with the error printed plainly.
func checkResponse(resp *http.Response, ok ...int) error {
	err := transport.CheckError(resp, ok...)
	var te *transport.Error
	if errors.As(err, &te) {
		return &responseError{te}
	}
	return err
}
