package registry

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// Mirror is another endpoint serving a registry's repositories under the
// same paths: a pull-through cache, or the local registry of an air-gapped
// cluster.
type Mirror struct {
	// URL is scheme://host[:port].
	URL string
	// Resolve says whether tags may be resolved there; without it the
	// mirror only serves content by digest.
	Resolve bool
	// SkipVerify accepts any TLS certificate.
	SkipVerify bool
	// Server replaces the registry itself (hosts.toml's server): the
	// registry is then not asked at all.
	Server bool
}

// Mirrors maps registry hosts ("docker.io", "registry.k8s.io:443", or
// "_default" for all) to mirrors, tried in order before the registry.
type Mirrors map[string][]Mirror

// ParseMirrorFlag reads --registry-mirror HOST=URL.
func ParseMirrorFlag(s string) (string, Mirror, error) {
	host, u, ok := strings.Cut(s, "=")
	if !ok || host == "" || u == "" {
		return "", Mirror{}, fmt.Errorf("--registry-mirror %q: want HOST=URL", s)
	}
	m, err := newMirror(u)
	return normalizeHost(host), m, err
}

func newMirror(u string) (Mirror, error) {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return Mirror{}, fmt.Errorf("mirror %q: want http(s)://host[:port]", u)
	}
	if p.Path != "" && p.Path != "/" && p.Path != "/v2" && p.Path != "/v2/" {
		return Mirror{}, fmt.Errorf("mirror %q: paths other than /v2 are not supported; the repository path stays as it is", u)
	}
	return Mirror{URL: p.Scheme + "://" + p.Host, Resolve: true}, nil
}

func normalizeHost(h string) string {
	switch h {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return h
}

// hostsFile is containerd's hosts.toml, as far as pve-image reads it:
// server, and [host."URL"] with capabilities and skip_verify.
type hostsFile struct {
	Server string                `toml:"server"`
	Host   map[string]hostsEntry `toml:"host"`
}

type hostsEntry struct {
	Capabilities []string `toml:"capabilities"`
	SkipVerify   bool     `toml:"skip_verify"`
}

// LoadHostsDir reads mirrors laid out as containerd's registry config
// directory: DIR/<host>/hosts.toml, with DIR/_default/hosts.toml for every
// registry. Hosts are tried in the order the file lists them, then
// server (the registry itself unless server names another).
func LoadHostsDir(dir string) (Mirrors, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("registry config %s: %w", dir, err)
	}
	out := Mirrors{}
	for _, de := range des {
		if !de.IsDir() {
			continue
		}
		p := filepath.Join(dir, de.Name(), "hosts.toml")
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			continue
		}
		var hf hostsFile
		md, err := toml.DecodeFile(p, &hf)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		// The map loses the file's order; the metadata keeps it.
		var order []string
		for _, k := range md.Keys() {
			if len(k) == 2 && k[0] == "host" {
				order = append(order, k[1])
			}
		}
		host := normalizeHost(de.Name())
		for _, u := range order {
			e := hf.Host[u]
			m, err := newMirror(u)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			caps := e.Capabilities
			if len(caps) == 0 {
				caps = []string{"pull", "resolve"}
			}
			if !contains(caps, "pull") {
				continue
			}
			m.Resolve, m.SkipVerify = contains(caps, "resolve"), e.SkipVerify
			out[host] = append(out[host], m)
		}
		if hf.Server != "" {
			m, err := newMirror(hf.Server)
			if err != nil {
				return nil, fmt.Errorf("%s: server: %w", p, err)
			}
			m.Server = true
			out[host] = append(out[host], m)
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// For returns the mirrors for a registry host, falling back to _default.
func (m Mirrors) For(host string) []Mirror {
	if ms, ok := m[normalizeHost(host)]; ok {
		return ms
	}
	return m["_default"]
}
