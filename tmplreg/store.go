package tmplreg

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/pve-image/pve-image/registry"
)

// DefaultChunkSize is the largest blob a template is stored in: larger
// templates are split. Many registries and the proxies in front of them
// refuse single uploads of several GiB.
const DefaultChunkSize = 512 << 20

// Options configure a Store.
type Options struct {
	// Insecure lists registries (host or host:port) reached over plain
	// HTTP; localhost and 127.0.0.0/8 always are, nothing else is.
	Insecure []string
	// Mirrors are asked before the registry for lookups (not for pushes).
	Mirrors registry.Mirrors
	// Username and Password authenticate to the store's registry ahead of
	// the keychain.
	Username, Password string
	// Keychain finds credentials; nil means Docker's config.json and
	// credential helpers.
	Keychain authn.Keychain
	// Transport carries requests; nil means remote.DefaultTransport.
	Transport http.RoundTripper
	// Retries is how often a request failing in a passing way (connection
	// trouble, 408, 429, 5xx) and a broken blob download are tried again; 0
	// means registry.DefaultRetries, negative none.
	Retries int
	// StallTimeout abandons a download or upload that moves no byte for
	// this long; 0 means registry.DefaultStallTimeout.
	StallTimeout time.Duration
	// ChunkSize bounds the blobs a template is stored in; 0 means
	// DefaultChunkSize.
	ChunkSize int64
	// UserAgent names the client.
	UserAgent string
	// Log hears what the store decides; nil discards it.
	Log *slog.Logger
}

// Store is a repository of a registry holding templates.
type Store struct {
	repo name.Repository
	opts Options
	log  *slog.Logger

	// broken is why lookups stopped: after the registry refused access or
	// could not be reached (retries spent), it is not asked again for
	// brokenFor (the rest of a CI run; a while, in a daemon), and that is
	// said once.
	mu       sync.Mutex
	broken   error
	brokenAt time.Time
}

// brokenFor is how long a registry that failed is left alone.
const brokenFor = 5 * time.Minute

// ParseRepository reads REGISTRY/REPO[:TAG] as Docker names images; tag is
// what followed the colon, "" when none was given.
func ParseRepository(s string, insecure []string) (repo name.Repository, tag string, err error) {
	if strings.Contains(s, "@") {
		return name.Repository{}, "", fmt.Errorf("template registry %q: name a repository (and a tag), not a digest", s)
	}
	if strings.Contains(s, "://") {
		return name.Repository{}, "", fmt.Errorf("template registry %q: name it REGISTRY/REPO, without a scheme (--insecure-registry allows plain HTTP)", s)
	}
	ref, err := registry.ParseReference(s, insecure)
	if err != nil {
		return name.Repository{}, "", fmt.Errorf("template registry: %w", err)
	}
	if ref.Transport != registry.Docker {
		return name.Repository{}, "", fmt.Errorf("template registry %q: want REGISTRY/REPO", s)
	}
	if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, '/') {
		tag = s[i+1:]
	}
	return ref.Name.Context(), tag, nil
}

// New opens the repository repo (REGISTRY/REPO) as a template store.
func New(repo string, opts Options) (*Store, error) {
	r, tag, err := ParseRepository(repo, opts.Insecure)
	if err != nil {
		return nil, err
	}
	if tag != "" {
		return nil, fmt.Errorf("template registry %q: name a repository without a tag (templates are tagged by their key)", repo)
	}
	return NewRepository(r, opts), nil
}

// NewRepository is New for a parsed repository.
func NewRepository(repo name.Repository, opts Options) *Store {
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	if opts.Transport == nil {
		opts.Transport = remote.DefaultTransport
	}
	if opts.Retries == 0 {
		opts.Retries = registry.DefaultRetries
	}
	if opts.Retries < 0 {
		opts.Retries = 0
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = registry.DefaultStallTimeout
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{repo: repo, opts: opts, log: log}
}

// Repository is the store's REGISTRY/REPO.
func (s *Store) Repository() string { return s.repo.Name() }

// endpoint is where requests for the store go: a mirror, or the registry.
type endpoint struct {
	repo name.Repository
	auth authn.Authenticator
	tr   http.RoundTripper
}

// readEndpoints are the mirrors of the store's registry, then the registry
// itself unless a mirror replaces it (hosts.toml's server).
func (s *Store) readEndpoints() ([]*endpoint, error) {
	var out []*endpoint
	upstream := true
	ms := s.opts.Mirrors.For(s.repo.RegistryStr())
	for _, m := range ms {
		if m.Server {
			upstream = false
		}
	}
	for _, m := range ms {
		u, err := url.Parse(m.URL)
		if err != nil {
			return nil, fmt.Errorf("mirror %s: %w", m.URL, err)
		}
		opts := []name.Option{name.WeakValidation}
		insecure := append([]string{}, s.opts.Insecure...)
		if u.Scheme == "http" {
			opts = append(opts, name.Insecure)
			insecure = append(insecure, u.Host)
		}
		repo, err := name.NewRepository(u.Host+"/"+s.repo.RepositoryStr(), opts...)
		if err != nil {
			return nil, fmt.Errorf("mirror %s: %w", m.URL, err)
		}
		auth, err := s.opts.Keychain.Resolve(repo)
		if err != nil {
			auth = authn.Anonymous
		}
		out = append(out, &endpoint{repo: repo, auth: auth, tr: s.transport(insecure, m.SkipVerify)})
	}
	if upstream {
		e, err := s.upstream()
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// upstream is the store's own registry, the only one pushed to.
func (s *Store) upstream() (*endpoint, error) {
	var auth authn.Authenticator
	if s.opts.Username != "" || s.opts.Password != "" {
		auth = authn.FromConfig(authn.AuthConfig{Username: s.opts.Username, Password: s.opts.Password})
	} else {
		var err error
		if auth, err = s.opts.Keychain.Resolve(s.repo); err != nil {
			return nil, fmt.Errorf("template registry %s: credentials: %w", s.repo.RegistryStr(), err)
		}
	}
	return &endpoint{repo: s.repo, auth: auth, tr: s.transport(s.opts.Insecure, false)}, nil
}

func (s *Store) transport(insecure []string, skipVerify bool) http.RoundTripper {
	next := s.opts.Transport
	if skipVerify {
		if t, ok := next.(*http.Transport); ok {
			t = t.Clone()
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
			next = t
		}
	}
	return &httpsOnly{next: next, insecure: insecure}
}

// remoteOptions are go-containerregistry's options for a call to e.
func (s *Store) remoteOptions(ctx context.Context, e *endpoint) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(e.auth),
		remote.WithTransport(e.tr),
		remote.WithUserAgent(s.opts.UserAgent),
		remote.WithRetryBackoff(remote.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: s.opts.Retries + 1}),
	}
}

// httpsOnly sends plain-HTTP requests over HTTPS unless the host may be
// reached without TLS, as registry pulls do: go-containerregistry picks
// plain HTTP for private (RFC 1918) addresses on its own, and credentials
// and templates would cross the LAN unprotected.
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

// plainHTTP is registry's rule: listed hosts, localhost and loopback.
func plainHTTP(hostport string, insecure []string) bool {
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

// RegistryError is a template registry refusing or failing a request, said
// in words: which registry, which repository, what was being done, and
// what to check.
type RegistryError struct {
	Registry, Repository string
	// Op is what was being done: "push templates to", "look up templates in".
	Op     string
	Status int
	// Code and Message are the registry's first error, if it sent one.
	Code, Message string
	// Sent says whether credentials were sent, User for whom.
	Sent bool
	User string
	Err  error
}

func (e *RegistryError) Error() string {
	why := fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		why += ": " + e.Code
		if e.Message != "" {
			why += ": " + e.Message
		}
	}
	s := fmt.Sprintf("template registry %s refused to %s repository %q (%s)", e.Registry, e.Op, e.Repository, why)
	switch {
	case e.Status == http.StatusUnauthorized && !e.Sent:
		return s + ": no credentials were sent (set PVE_IMAGE_TEMPLATE_REGISTRY_CREDS=USER:PASS, or docker login)"
	case e.Status == http.StatusUnauthorized:
		return s + fmt.Sprintf(": the credentials sent%s were rejected", forUser(e.User))
	case e.Status == http.StatusForbidden:
		return s + fmt.Sprintf(": the credentials sent%s do not allow it (or a quota is exhausted)", forUser(e.User))
	case e.Status == http.StatusRequestEntityTooLarge:
		return s + ": a blob is larger than it takes; store templates in smaller chunks (chunk-size)"
	case e.Status == http.StatusInsufficientStorage:
		return s + ": it is out of space or over its quota"
	}
	return s
}

func (e *RegistryError) Unwrap() error { return e.Err }

func forUser(u string) string {
	if u == "" {
		return ""
	}
	return fmt.Sprintf(" for user %q", u)
}

// explain turns go-containerregistry's errors for e into RegistryErrors
// where the registry answered with a refusal.
func explain(op string, e *endpoint, err error) error {
	var re *RegistryError
	if err == nil || errors.As(err, &re) {
		return err
	}
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode == http.StatusNotFound || te.StatusCode < 400 {
		if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
			host := e.repo.RegistryStr()
			return fmt.Errorf("%w: template registry %s speaks plain HTTP, not HTTPS; pass --insecure-registry %s to reach it without TLS", err, host, host)
		}
		return fmt.Errorf("template registry %s: %w", e.repo.RegistryStr(), err)
	}
	r := &RegistryError{Registry: e.repo.RegistryStr(), Repository: e.repo.RepositoryStr(), Op: op, Status: te.StatusCode, Err: err}
	if len(te.Errors) > 0 {
		r.Code, r.Message = string(te.Errors[0].Code), te.Errors[0].Message
	}
	if cfg, cerr := authn.Authorization(context.Background(), e.auth); cerr == nil && cfg != nil {
		r.Sent = cfg.Username != "" || cfg.Password != "" || cfg.Auth != "" || cfg.IdentityToken != "" || cfg.RegistryToken != ""
		r.User = cfg.Username
	}
	return r
}

// notFound says whether err is the registry saying it has no such thing.
func notFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

// unreachable says whether err means the registry could not be asked at
// all, or refused access: then asking it again for the next template of
// the run only costs time.
func unreachable(err error) bool {
	var re *RegistryError
	if errors.As(err, &re) {
		return re.Status == http.StatusUnauthorized || re.Status == http.StatusForbidden
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests
	}
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &op) || errors.As(err, &dns) || errors.Is(err, errStalled)
}

// errStalled is a transfer that moved nothing for the stall timeout.
var errStalled = errors.New("stalled")

// guard cancels a transfer's context when it moves no byte for d; the
// reader it wraps reports errStalled then.
type guard struct {
	ctx    context.Context
	cancel context.CancelFunc
	t      *time.Timer
	d      time.Duration

	mu      sync.Mutex
	stalled bool
}

func newGuard(ctx context.Context, d time.Duration) *guard {
	g := &guard{d: d}
	g.ctx, g.cancel = context.WithCancel(ctx)
	g.t = time.AfterFunc(d, func() {
		g.mu.Lock()
		g.stalled = true
		g.mu.Unlock()
		g.cancel()
	})
	return g
}

func (g *guard) moved() { g.t.Reset(g.d) }

func (g *guard) stop() {
	g.t.Stop()
	g.cancel()
}

// err is what a failed transfer's error becomes: errStalled when the guard
// fired.
func (g *guard) err(err error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stalled && err != nil {
		return fmt.Errorf("nothing arrived for %s: %w", g.d, errStalled)
	}
	return err
}

// guardedReader resets its guard whenever bytes pass.
type guardedReader struct {
	r io.Reader
	g *guard
}

func (r *guardedReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.g.moved()
	}
	return n, err
}
