package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Endpoint is where requests for a repository go: one of its registry's
// mirrors, or the registry itself, with the credentials and the transport
// (NewTransport's) to use there.
type Endpoint struct {
	// Repo is the repository there: at a mirror, the same path on the
	// mirror's host.
	Repo name.Repository
	// Auth authenticates there: at the registry, Options.Auth or
	// Options.Username and Password ahead of the keychain; at a mirror,
	// the keychain alone (anonymous when it fails), so the registry's
	// credentials never go to a mirror.
	Auth authn.Authenticator
	// Transport carries the requests, not yet authenticated.
	Transport http.RoundTripper
	// Resolve says tags may be resolved there: at the registry, or at a
	// mirror that has the capability (or replaces the registry).
	Resolve bool
	// PlainHTTP says it may be reached without TLS (--insecure-registry,
	// loopback, an http:// mirror).
	PlainHTTP bool

	policy      *retryPolicy
	noDialRetry bool
	version     string
}

// Endpoints are where to read repo from: the mirrors of its registry in
// order, then the registry itself unless a mirror replaces it (hosts.toml's
// server). A mirror that cannot be reached is not retried when another
// endpoint follows.
func Endpoints(o Options, repo name.Repository) ([]*Endpoint, error) {
	return endpoints(o, newRetryPolicy(o.Retries, o.StallTimeout, o.Log), repo)
}

// Upstream is repo's registry itself, never a mirror: where pushes go.
func Upstream(o Options, repo name.Repository) (*Endpoint, error) {
	return upstream(o, newRetryPolicy(o.Retries, o.StallTimeout, o.Log), repo)
}

// RemoteOptions are go-containerregistry's remote options for reading
// from and pushing to repo at its registry (mirrors are not used; see
// Endpoints): the context, credentials as pulls resolve them, the
// transport every registry conversation goes through (NewTransport) and
// the user agent. repo should come from ParseReference with o.Insecure,
// which marks the registries reached over plain HTTP.
func RemoteOptions(ctx context.Context, o Options, repo name.Repository) ([]remote.Option, error) {
	e, err := Upstream(o, repo)
	if err != nil {
		return nil, err
	}
	return e.RemoteOptions(ctx), nil
}

// RemoteOptions are go-containerregistry's remote options for calls to e.
//
// Every request is tried once by the transport except GET and HEAD (see
// NewTransport). A blob upload (existence check, POST, PATCH, PUT) or a
// manifest PUT that fails with connection trouble, a stall, 408, 429 or
// 5xx is started again as a whole by go-containerregistry's remote.Write
// and Pusher, which restart from the existence check with a new upload
// session: a PATCH cannot be repeated alone once the registry may hold
// part of it. That restart is tried up to Options.Retries times, waiting
// 250 ms doubling (with 10% jitter) in between. An error the transport
// already retried (a GaveUpError) does not restart the upload, so no
// request is retried at two levels.
func (e *Endpoint) RemoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(e.Auth),
		remote.WithTransport(e.Transport),
		remote.WithUserAgent(userAgent(e.version)),
		// go-containerregistry wraps the transport in its own retrying one
		// (transport.NewRetry), which ignores Retry-After and the
		// context; with no status codes and a predicate refusing what it
		// sees there, it never retries.
		remote.WithRetryStatusCodes(),
		remote.WithRetryPredicate(e.uploadRetry(ctx)),
		remote.WithRetryBackoff(remote.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: e.policy.retries + 1}),
	}
}

// uploadRetry says whether go-containerregistry may start a failed upload
// again. It asks this predicate at two levels: in its retrying transport,
// around each request, where the error comes straight from our
// RoundTrip — already retried (GET, HEAD) or not to be sent again (a
// body once read is gone) — and the answer is no; and around a whole
// blob upload or manifest PUT, where the error comes from http.Client
// (*url.Error) or a status check (*transport.Error). Only those are
// judged, so the type is checked at the top, not with errors.As.
func (e *Endpoint) uploadRetry(ctx context.Context) func(error) bool {
	return func(err error) bool {
		if err == nil || ctx.Err() != nil || errors.As(err, new(*GaveUpError)) {
			return false
		}
		var what string
		switch x := err.(type) {
		case *url.Error:
			if !retryableError(x.Err) || (e.noDialRetry && isDial(x.Err)) {
				return false
			}
			what = x.Op + " " + withoutQuery(x.URL)
		case *transport.Error:
			if !retryStatus(x.StatusCode) {
				return false
			}
			if x.Request != nil {
				what = x.Request.Method + " " + withoutQuery(x.Request.URL.String())
			}
		default:
			return false
		}
		e.policy.log.Warn("registry upload failed; starting it again unless the retries are spent", "request", what,
			"retries", e.policy.retries, "error", err)
		return true
	}
}

// withoutQuery drops the query of an upload URL: upload locations carry
// the session's state, and a commit its digest, neither for the log.
func withoutQuery(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}

// endpoints is Endpoints with the retry policy given: a Puller shares its
// own between its transports and its resumed downloads.
func endpoints(o Options, p *retryPolicy, repo name.Repository) ([]*Endpoint, error) {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	mirrors := o.Mirrors.For(repo.RegistryStr())
	replaced := slices.ContainsFunc(mirrors, func(m Mirror) bool { return m.Server })
	var out []*Endpoint
	for i, m := range mirrors {
		u, err := url.Parse(m.URL)
		if err != nil {
			return nil, fmt.Errorf("mirror %s: %w", m.URL, err)
		}
		opts := []name.Option{name.WeakValidation}
		insecure := slices.Clone(o.Insecure)
		if u.Scheme == "http" {
			opts = append(opts, name.Insecure)
			insecure = append(insecure, u.Host)
		}
		mr, err := name.NewRepository(u.Host+"/"+repo.RepositoryStr(), opts...)
		if err != nil {
			return nil, fmt.Errorf("mirror %s: %w", m.URL, err)
		}
		auth, err := kc.Resolve(mr)
		if err != nil {
			auth = authn.Anonymous
		}
		another := i < len(mirrors)-1 || !replaced
		t := TransportOptions{Base: o.Transport, Insecure: insecure, SkipVerify: m.SkipVerify, NoDialRetry: another, Version: o.Version}
		out = append(out, &Endpoint{Repo: mr, Auth: auth, Transport: newTransport(t, p), Resolve: m.Resolve || m.Server,
			PlainHTTP: PlainHTTP(u.Host, insecure), policy: p, noDialRetry: another, version: o.Version})
	}
	if !replaced {
		e, err := upstream(o, p, repo)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// upstream is Upstream with the retry policy given.
func upstream(o Options, p *retryPolicy, repo name.Repository) (*Endpoint, error) {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	switch {
	case o.Auth != nil:
		kc = authn.NewMultiKeychain(staticKeychain{registry: repo.RegistryStr(), auth: authn.FromConfig(*o.Auth)}, kc)
	case o.Username != "" || o.Password != "":
		kc = authn.NewMultiKeychain(staticKeychain{registry: repo.RegistryStr(),
			auth: authn.FromConfig(authn.AuthConfig{Username: o.Username, Password: o.Password})}, kc)
	}
	auth, err := kc.Resolve(repo)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	t := TransportOptions{Base: o.Transport, Insecure: o.Insecure, Version: o.Version}
	return &Endpoint{Repo: repo, Auth: auth, Transport: newTransport(t, p), Resolve: true,
		PlainHTTP: PlainHTTP(repo.RegistryStr(), o.Insecure), policy: p, version: o.Version}, nil
}
