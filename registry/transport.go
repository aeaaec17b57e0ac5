package registry

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// PlainHTTP says whether a registry (host or host:port) may be reached
// over plain HTTP: when it is listed in insecure (as host:port or as
// host), or when it is localhost or in 127.0.0.0/8, as Docker decides.
// go-containerregistry also sends RFC 1918 addresses over HTTP; Docker
// does not, and neither do we (see httpsOnly): credentials and images
// would cross the LAN unprotected.
func PlainHTTP(hostport string, insecure []string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	for _, h := range insecure {
		if strings.EqualFold(h, hostport) || strings.EqualFold(h, host) {
			return true
		}
	}
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// httpsOnly turns plain-HTTP requests to hosts not allowed plain HTTP into
// HTTPS ones. go-containerregistry picks HTTP by itself for private
// (RFC 1918) addresses; credentials and images then travel unprotected
// across a LAN, which Docker and skopeo refuse without --insecure-registry.
type httpsOnly struct {
	next     http.RoundTripper
	insecure []string
}

func (t *httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !PlainHTTP(req.URL.Host, t.insecure) {
		r := req.Clone(req.Context())
		r.URL.Scheme = "https"
		return t.next.RoundTrip(r)
	}
	return t.next.RoundTrip(req)
}

// userAgent sets pve-image's user agent alongside go-containerregistry's.
func userAgent(version string) string { return fmt.Sprintf("pve-image/%s", version) }

// TransportOptions say how NewTransport composes a registry transport.
type TransportOptions struct {
	// Base carries the requests; nil means remote.DefaultTransport.
	Base http.RoundTripper
	// Insecure lists the hosts (host or host:port) that may be reached
	// over plain HTTP besides loopback (PlainHTTP); an http:// mirror's
	// host belongs here.
	Insecure []string
	// SkipVerify accepts any TLS certificate: a mirror's skip_verify. It
	// applies when Base is an *http.Transport (cloned, not changed).
	SkipVerify bool
	// NoDialRetry fails at once, without retries, when the host cannot be
	// reached: another endpoint follows (a mirror before the registry),
	// and a host that is down is skipped rather than waited for.
	NoDialRetry bool
	// Retries and StallTimeout are Options.Retries and
	// Options.StallTimeout.
	Retries      int
	StallTimeout time.Duration
	// Version goes into the User-Agent.
	Version string
	// Log hears retries; nil discards them.
	Log *slog.Logger
}

// NewTransport returns the transport every registry conversation goes
// through, pulls, template registry and pushes alike, not yet
// authenticated (go-containerregistry's transport.NewWithContext, or its
// remote functions, add that):
//
//   - plain HTTP only where PlainHTTP allows it, else HTTPS;
//   - a request that moves no byte, sent or received, for the stall
//     timeout fails with a StallError;
//   - GET and HEAD requests that fail in a passing way are retried with
//     backoff, Retry-After honoured up to MaxRetryAfter; other requests
//     are sent once (see Endpoint.RemoteOptions for how uploads are
//     retried);
//   - pve-image's User-Agent.
func NewTransport(o TransportOptions) http.RoundTripper {
	return newTransport(o, newRetryPolicy(o.Retries, o.StallTimeout, o.Log))
}

// newTransport is NewTransport with the retry policy given: a Puller
// shares one between its transports and its resumed downloads.
func newTransport(o TransportOptions, p *retryPolicy) http.RoundTripper {
	next := o.Base
	if next == nil {
		next = remote.DefaultTransport
	}
	if o.SkipVerify {
		if t, ok := next.(*http.Transport); ok {
			t = t.Clone()
			cfg := t.TLSClientConfig.Clone()
			if cfg == nil {
				cfg = &tls.Config{}
			}
			cfg.InsecureSkipVerify = true
			t.TLSClientConfig = cfg
			next = t
		}
	}
	var rt http.RoundTripper = &httpsOnly{next: next, insecure: o.Insecure}
	rt = &stallTransport{next: rt, timeout: p.stall}
	rt = &retryTransport{next: rt, policy: p, noDialRetry: o.NoDialRetry}
	return transport.NewUserAgent(rt, userAgent(o.Version))
}
