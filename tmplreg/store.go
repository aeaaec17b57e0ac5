package tmplreg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
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
	// trouble, 408, 429, 5xx, a stall), an upload and a broken blob
	// download are tried again, as registry.Options.Retries says; 0 means
	// registry.DefaultRetries, negative none.
	Retries int
	// StallTimeout abandons a request, download or upload that moves no
	// byte for this long; 0 means registry.DefaultStallTimeout.
	StallTimeout time.Duration
	// ChunkSize bounds the blobs a template is stored in; 0 means
	// DefaultChunkSize.
	ChunkSize int64
	// Version goes into the User-Agent, as registry.Options.Version.
	Version string
	// Log hears what the store decides; nil discards it.
	Log *slog.Logger
}

// Store is a repository of a registry holding templates.
type Store struct {
	repo name.Repository
	opts Options
	// ro reaches the registry and its mirrors as pulls do: the same
	// transport, plain-HTTP rule, retries and stall timeout.
	ro  registry.Options
	log *slog.Logger

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
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Retries as given: registry.Options reads 0 as the default, as we do.
	ro := registry.Options{Insecure: opts.Insecure, Mirrors: opts.Mirrors, Username: opts.Username, Password: opts.Password,
		Keychain: opts.Keychain, Transport: opts.Transport, Version: opts.Version, Retries: opts.Retries,
		StallTimeout: opts.StallTimeout, Log: log}
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
	return &Store{repo: repo, opts: opts, ro: ro, log: log}
}

// Repository is the store's REGISTRY/REPO.
func (s *Store) Repository() string { return s.repo.Name() }

// readEndpoints are the mirrors of the store's registry, then the registry
// itself unless a mirror replaces it (hosts.toml's server), as pulls read.
func (s *Store) readEndpoints() ([]*registry.Endpoint, error) {
	eps, err := registry.Endpoints(s.ro, s.repo)
	if err != nil {
		return nil, fmt.Errorf("template registry %s: %w", s.repo.RegistryStr(), err)
	}
	return eps, nil
}

// upstream is the store's own registry, the only one pushed to.
func (s *Store) upstream() (*registry.Endpoint, error) {
	e, err := registry.Upstream(s.ro, s.repo)
	if err != nil {
		return nil, fmt.Errorf("template registry %s: %w", s.repo.RegistryStr(), err)
	}
	return e, nil
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
	var gu *registry.GaveUpError
	if errors.As(e.Err, &gu) {
		// Passing trouble (429, 5xx) that lasted through every retry.
		plural := "s"
		if gu.Attempts == 1 {
			plural = ""
		}
		return fmt.Sprintf("%s (gave up after %d attempt%s)", s, gu.Attempts, plural)
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
func explain(op string, e *registry.Endpoint, err error) error {
	var re *RegistryError
	if err == nil || errors.As(err, &re) {
		return err
	}
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode == http.StatusNotFound || te.StatusCode < 400 {
		if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
			host := e.Repo.RegistryStr()
			return fmt.Errorf("%w: template registry %s speaks plain HTTP, not HTTPS; pass --insecure-registry %s to reach it without TLS", err, host, host)
		}
		return fmt.Errorf("template registry %s: %w", e.Repo.RegistryStr(), err)
	}
	r := &RegistryError{Registry: e.Repo.RegistryStr(), Repository: e.Repo.RepositoryStr(), Op: op, Status: te.StatusCode, Err: err}
	if len(te.Errors) > 0 {
		r.Code, r.Message = string(te.Errors[0].Code), te.Errors[0].Message
	}
	if cfg, cerr := authn.Authorization(context.Background(), e.Auth); cerr == nil && cfg != nil {
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
// the run only costs time. Passing trouble (connection trouble, a stall,
// 408, 429, 5xx) reaches here only once the retries are spent.
func unreachable(err error) bool {
	var re *RegistryError
	if errors.As(err, &re) && (re.Status == http.StatusUnauthorized || re.Status == http.StatusForbidden) {
		return true
	}
	var gu *registry.GaveUpError
	var st *registry.StallError
	if errors.As(err, &gu) || errors.As(err, &st) {
		return true
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests
	}
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &op) || errors.As(err, &dns)
}
