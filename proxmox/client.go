package proxmox

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	gp "github.com/luthermonson/go-proxmox"
)

// Config says how to reach Proxmox.
type Config struct {
	// URL is the API's base, https://host:8006 (with or without
	// /api2/json).
	URL string
	// Token is USER@REALM!TOKENID=SECRET; or User and Password for ticket
	// authentication.
	Token          string
	User, Password string
	// Fingerprint pins the server certificate's SHA-256 fingerprint, in
	// Proxmox's colon-separated form or plain hex.
	Fingerprint string
	// Insecure accepts any certificate.
	Insecure bool
	// UserAgent names the client.
	UserAgent string
}

// Client talks to one Proxmox cluster.
type Client struct {
	cfg     Config
	base    string // https://host:8006/api2/json
	http    *http.Client
	api     *gp.Client
	version Version
}

// Version is what /version says.
type Version struct {
	Version string `json:"version"`
	Release string `json:"release"`
	RepoID  string `json:"repoid"`
}

// Native reports whether containers take entrypoint, env and host-managed
// NICs: pve-container 6.0.15, shipped with Proxmox 9.1 (proxmox.md §4).
func (v Version) Native() bool {
	maj, min := v.parse()
	return maj > 9 || (maj == 9 && min >= 1)
}

func (v Version) parse() (int, int) {
	s := v.Version
	if s == "" {
		s = v.Release
	}
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	var n [2]int
	for i := 0; i < 2 && i < len(parts); i++ {
		n[i], _ = strconv.Atoi(parts[i])
	}
	return n[0], n[1]
}

// Errors callers may test for.
var (
	ErrAuth       = errors.New("Proxmox refused the credentials")
	ErrPermission = errors.New("Proxmox denied permission")
	ErrNotFound   = errors.New("not found on Proxmox")
	// ErrFingerprint is a server certificate that is not the pinned one.
	ErrFingerprint = errors.New("server certificate refused")
)

// Dial connects, authenticates and reads /version. With a fingerprint, a
// server presenting another certificate is refused during the handshake,
// before any credential leaves.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("no Proxmox URL (--pve-url, PVE_URL or a context in the config file)")
	}
	base := strings.TrimRight(cfg.URL, "/")
	if !strings.HasSuffix(base, "/api2/json") {
		base += "/api2/json"
	}
	if !strings.HasPrefix(base, "https://") && !strings.HasPrefix(base, "http://") {
		base = "https://" + base
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case cfg.Fingerprint != "":
		want, err := ParseFingerprint(cfg.Fingerprint)
		if err != nil {
			return nil, err
		}
		// The chain is ignored: the pin is the trust. Checked before any
		// request, so a wrong server never sees the credentials.
		tlsCfg.InsecureSkipVerify = true
		tlsCfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("the server sent no certificate")
			}
			got := sha256.Sum256(raw[0])
			if hex.EncodeToString(got[:]) != want {
				return fmt.Errorf("%w: certificate fingerprint %s does not match the pinned %s", ErrFingerprint, FormatFingerprint(got[:]), FormatFingerprint(mustHex(want)))
			}
			return nil
		}
	case cfg.Insecure:
		tlsCfg.InsecureSkipVerify = true
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	tokenAuth := cfg.Token != ""
	hc := &http.Client{Transport: &statusErrors{next: tr, token: tokenAuth}}
	opts := []gp.Option{gp.WithHTTPClient(hc), gp.WithUserAgent(cfg.UserAgent)}
	switch {
	case tokenAuth:
		id, secret, ok := splitToken(cfg.Token)
		if !ok {
			return nil, errors.New("API token: want USER@REALM!TOKENID=SECRET")
		}
		opts = append(opts, gp.WithAPIToken(id, secret))
	case cfg.User != "":
		opts = append(opts, gp.WithCredentials(&gp.Credentials{Username: cfg.User, Password: cfg.Password}))
	default:
		return nil, errors.New("no Proxmox credentials (--pve-token, or --pve-user and --pve-password)")
	}
	c := &Client{cfg: cfg, base: base, http: hc, api: gp.NewClient(base, opts...)}
	if err := c.get(ctx, "/version", &c.version); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.URL, err)
	}
	return c, nil
}

// splitToken splits USER@REALM!TOKENID=SECRET at the last "=", as Proxmox's
// verify_token does.
func splitToken(t string) (id, secret string, ok bool) {
	i := strings.LastIndexByte(t, '=')
	if i <= 0 || !strings.Contains(t[:i], "!") || !strings.Contains(t[:i], "@") {
		return "", "", false
	}
	return t[:i], t[i+1:], true
}

// ParseFingerprint reads a SHA-256 fingerprint, "AB:CD:..." or hex.
func ParseFingerprint(s string) (string, error) {
	h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("fingerprint %q: want the certificate's SHA-256, 32 bytes in hex (AB:CD:... or abcd...)", s)
	}
	return h, nil
}

// FormatFingerprint writes a fingerprint as Proxmox shows it.
func FormatFingerprint(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02X", x)
	}
	return strings.Join(parts, ":")
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}

// Version is the Proxmox version the client talks to.
func (c *Client) Version() Version { return c.version }

// Principal is who the client acts as: USER@REALM, or USER@REALM!TOKENID.
func (c *Client) Principal() string {
	if id, _, ok := splitToken(c.cfg.Token); ok {
		return id
	}
	return c.cfg.User
}

// MayBindMount reports whether Proxmox lets this client create bind mount
// points: only the user root@pam itself (with a ticket) may; API tokens,
// even root's, may not (proxmox.md §5, check_ct_modify_config_perm).
func (c *Client) MayBindMount() bool { return c.cfg.Token == "" && c.cfg.User == "root@pam" }

// statusErrors keeps what go-proxmox would lose: a 403's status line names
// the missing privilege, and a refused token deserves a message about the
// token. Ticket sessions' 401s pass through, since go-proxmox renews the
// ticket on them.
type statusErrors struct {
	next  http.RoundTripper
	token bool
}

func (s *statusErrors) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusForbidden:
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %s (%s %s): %s", ErrPermission, reason(resp), req.Method, apiPath(req), privilegeHint(reason(resp)))
	case resp.StatusCode == http.StatusUnauthorized && s.token:
		resp.Body.Close()
		return nil, fmt.Errorf("%w: the API token was not accepted (%s); check that the token exists, is not expired, and is given as USER@REALM!TOKENID=SECRET", ErrAuth, reason(resp))
	}
	return resp, nil
}

// reason is the status line's text: Proxmox puts its error message there.
func reason(resp *http.Response) string {
	return strings.TrimSpace(strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode)))
}

func apiPath(req *http.Request) string {
	p := req.URL.Path
	if i := strings.Index(p, "/api2/json"); i >= 0 {
		p = p[i+len("/api2/json"):]
	}
	return p
}

// privilegeHint says which privilege is missing, read from Proxmox's
// "Permission check failed (/path, Privilege)".
func privilegeHint(r string) string {
	_, rest, ok := strings.Cut(r, "(")
	if !ok {
		return "the token or user lacks a privilege for this call"
	}
	path, priv, _ := strings.Cut(strings.TrimSuffix(rest, ")"), ",")
	priv = strings.TrimSpace(priv)
	if priv == "" {
		return "the token or user lacks a privilege on " + path
	}
	return fmt.Sprintf("grant %s on %s (pveum acl modify %s --roles <role with %s> --tokens/--users ...)", priv, path, path, priv)
}

// call wraps go-proxmox's errors with the call made.
func (c *Client) wrap(method, path string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, gp.ErrNotAuthorized) {
		return fmt.Errorf("%s %s: %w: user %s: wrong user name or password, or the ticket could not be renewed", method, path, ErrAuth, c.cfg.User)
	}
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		// *url.Error: keep the inner message, without the URL's host.
		if inner := errors.Unwrap(err); inner != nil && (errors.Is(inner, ErrPermission) || errors.Is(inner, ErrAuth)) {
			return inner
		}
	}
	if strings.Contains(err.Error(), "does not exist") {
		return fmt.Errorf("%s %s: %w: %v", method, path, ErrNotFound, err)
	}
	return fmt.Errorf("%s %s: %w", method, path, err)
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	return c.wrap("GET", path, c.api.Get(ctx, path, v))
}

func (c *Client) post(ctx context.Context, path string, body, v any) error {
	return c.wrap("POST", path, c.api.Post(ctx, path, body, v))
}

func (c *Client) put(ctx context.Context, path string, body, v any) error {
	return c.wrap("PUT", path, c.api.Put(ctx, path, body, v))
}

func (c *Client) del(ctx context.Context, path string, v any) error {
	return c.wrap("DELETE", path, c.api.Delete(ctx, path, v))
}

// authorize adds credentials to a request built here (the upload).
func (c *Client) authorize(ctx context.Context, req *http.Request) error {
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "PVEAPIToken="+c.cfg.Token)
		return nil
	}
	// go-proxmox renews a ticket when its own requests are refused, which
	// an upload is not: renew one older than an hour here, so that the
	// upload starts with at least an hour of its two.
	if err := c.api.CreateSession(ctx); err != nil && !errors.Is(err, gp.ErrSessionExists) {
		return c.wrap("POST", "/access/ticket", err)
	}
	s := c.api.Session()
	if s == nil {
		return fmt.Errorf("%w: no ticket session", ErrAuth)
	}
	req.Header.Set("Cookie", "PVEAuthCookie="+s.Ticket)
	req.Header.Set("CSRFPreventionToken", s.CSRFPreventionToken)
	return nil
}
