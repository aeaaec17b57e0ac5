package proxmox

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"

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

// Dial connects, authenticates and reads /version. With a fingerprint, a
// server presenting another certificate is refused during the handshake,
// before any credential leaves.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("no Proxmox URL (--pve-url, PVE_URL or a context in the config file)")
	}
	base, err := apiBase(cfg.URL)
	if err != nil {
		return nil, err
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
	hc := &http.Client{Transport: &transport{next: tr, token: tokenAuth, attempts: getAttempts, delay: retryDelay}}
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
		return nil, fmt.Errorf("connect to %s: %w", cfg.URL, connectHint(err))
	}
	return c, nil
}

// apiBase is the API's base URL, https://host:port/api2/json, from what the
// user gave: https://host:8006, host:8006, with or without /api2/json.
func apiBase(raw string) (string, error) {
	base := strings.TrimRight(strings.TrimSpace(raw), "/")
	if !strings.Contains(base, "://") {
		base = "https://" + base
	}
	u, err := url.Parse(base)
	switch {
	case err != nil:
		return "", fmt.Errorf("Proxmox URL %q: %w; want https://HOST:8006", raw, err)
	case u.Scheme == "http":
		// pveproxy answers plain HTTP with a redirect to https, which
		// would carry the credentials across the network in clear text
		// first; against anything else it fails obscurely.
		return "", fmt.Errorf("Proxmox URL %q: Proxmox's API is HTTPS only, on port 8006: give https://%s", raw, hostWithPort(u.Host))
	case u.Scheme != "https":
		return "", fmt.Errorf("Proxmox URL %q: want https://HOST:8006", raw)
	case u.Host == "":
		return "", fmt.Errorf("Proxmox URL %q: no host; want https://HOST:8006", raw)
	}
	if !strings.HasSuffix(base, "/api2/json") {
		base += "/api2/json"
	}
	return base, nil
}

// hostWithPort is host with Proxmox's API port unless it names one.
func hostWithPort(host string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), "8006")
}

// connectHint adds to the first call's failure what the user can do about
// it: pin a self-signed certificate, or fix a URL that is not Proxmox's API.
func connectHint(err error) error {
	var (
		cve    *tls.CertificateVerificationError
		syntax *json.SyntaxError
	)
	switch {
	case errors.As(err, &cve) && len(cve.UnverifiedCertificates) > 0:
		sum := sha256.Sum256(cve.UnverifiedCertificates[0].Raw)
		return fmt.Errorf("%w\n  This machine does not trust the server's certificate; Proxmox nodes serve a self-signed one unless given another. "+
			"Pin it with --pve-fingerprint (or PVE_FINGERPRINT, or fingerprint: in the config context). On the node, "+
			"`pvenode cert info --output-format json` prints it: the fingerprint of pveproxy-ssl.pem if it is listed, else of pve-ssl.pem. "+
			"This server presented %s: pin it only if it is the one the node prints.", err, FormatFingerprint(sum[:]))
	case errors.As(err, &syntax):
		return fmt.Errorf("%w\n  The server does not answer like the Proxmox API: the URL should be https://HOST:8006", err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w\n  Nothing accepts connections there: Proxmox's API listens on port 8006 (https://HOST:8006)", err)
	}
	return err
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

// wrap names the call in go-proxmox's errors. An *APIError from the
// transport names it already, and comes back bare.
func (c *Client) wrap(method, path string, err error) error {
	if err == nil {
		return nil
	}
	var ae *APIError
	if errors.As(err, &ae) {
		if method != http.MethodGet && ae.Transient() {
			// The transport tries only GETs again.
			return fmt.Errorf("%w (not tried again: the %s may have taken effect; check on Proxmox before repeating it)", ae, method)
		}
		return ae
	}
	if errors.Is(err, gp.ErrNotAuthorized) {
		return fmt.Errorf("%s %s: %w: user %s: wrong user name or password, or the ticket could not be renewed", method, path, ErrAuth, c.cfg.User)
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
