package registry

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// plainHTTP says whether a registry host may be reached over plain HTTP:
// when the user listed it, or when it is localhost or in 127.0.0.0/8, as
// Docker decides. go-containerregistry also sends RFC 1918 addresses over
// HTTP; Docker does not, and neither do we (see httpsOnly).
func plainHTTP(registry string, insecure []string) bool {
	for _, h := range insecure {
		if strings.EqualFold(h, registry) {
			return true
		}
	}
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, h := range insecure {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
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
	if req.URL.Scheme == "http" && !plainHTTP(req.URL.Host, t.insecure) {
		r := req.Clone(req.Context())
		r.URL.Scheme = "https"
		return t.next.RoundTrip(r)
	}
	return t.next.RoundTrip(req)
}

// userAgent sets pve-image's user agent alongside go-containerregistry's.
func userAgent(version string) string { return fmt.Sprintf("pve-image/%s", version) }
