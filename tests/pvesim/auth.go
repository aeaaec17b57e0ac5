package pvesim

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// principal is who a request runs as.
type principal struct {
	// user is the effective user: "user@realm", or "user@realm!token"
	// for an API token (pve-manager HTTPServer.pm auth_handler).
	user  string
	token bool
	privs map[string]bool // nil: every privilege
}

func newPrincipal(user string, token bool, privs []string) *principal {
	p := &principal{user: user, token: token, privs: map[string]bool{}}
	if user == "root@pam" {
		p.privs = nil
	}
	for _, pr := range privs {
		if pr == "*" {
			p.privs = nil
			break
		}
		p.privs[pr] = true
	}
	return p
}

// has reports a privilege. The simulator grants privileges on every path at
// once (no ACL tree, no pools, no privilege separation between a token and
// its user): Options' Privs lists are flat.
func (p *principal) has(priv string) bool {
	return p != nil && (p.privs == nil || p.privs[priv])
}

// isRoot is Proxmox's root-only test: the exact string root@pam, which an
// API token of root (root@pam!x) is not (proxmox.md §5).
func (p *principal) isRoot() bool { return p != nil && p.user == "root@pam" }

// check is RPCEnvironment::check: every privilege is needed; the error
// names the first one missing.
func (p *principal) check(path string, privs ...string) *apiError {
	for _, pr := range privs {
		if !p.has(pr) {
			return permErr(path, pr)
		}
	}
	return nil
}

// checkAny is RPCEnvironment::check_any: one privilege is enough.
func (p *principal) checkAny(path string, privs ...string) *apiError {
	for _, pr := range privs {
		if p.has(pr) {
			return nil
		}
	}
	return permErr(path, privs...)
}

// AddToken makes an API token valid.
func (s *Server) AddToken(t Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[t.ID] = t
}

// AddUser adds a user who can log in with a password (ticket auth).
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[u.Name] = u
}

// authValue is pve-http-server Formatter.pm extract_auth_value: the value
// after "KEY=" or "KEY " up to the next ';', URI-unescaped.
func authValue(header, key string) string {
	if header == "" {
		return ""
	}
	m := authValueRe[key].FindStringSubmatch(header)
	if m == nil {
		return ""
	}
	return unescapePerl(strings.ReplaceAll(m[1], "+", "%2B"))
}

var authValueRe = map[string]*regexp.Regexp{
	"PVEAuthCookie": regexp.MustCompile(`(?:^|\s)PVEAuthCookie(?:=| )([^;]*)`),
	"PVEAPIToken":   regexp.MustCompile(`(?:^|\s)PVEAPIToken(?:=| )([^;]*)`),
}

var uploadPath = regexp.MustCompile(`^/nodes/([^/]+)/storage/([^/]+)/upload$`)

// authenticate is pve-manager HTTPServer.pm auth_handler. Its failures are
// answered by pve-http-server before any handler, with the message as reason
// phrase, no body, after the 3 s delay of failed logins.
func (s *Server) authenticate(r *http.Request, rel string) (*principal, bool, *apiError) {
	fail := func(code int, msg string) (*principal, bool, *apiError) {
		return nil, false, &apiError{code: code, msg: msg, raw: true, delay: true}
	}
	if rel == "/access/ticket" && (r.Method == http.MethodGet || r.Method == http.MethodPost) ||
		rel == "/access/domains" && r.Method == http.MethodGet {
		return nil, false, nil
	}
	// Prefer the cookie, then a ticket in Authorization, then a token.
	ticket := authValue(r.Header.Get("Cookie"), "PVEAuthCookie")
	if ticket == "" {
		ticket = authValue(r.Header.Get("Authorization"), "PVEAuthCookie")
	}
	var p *principal
	if ticket == "" {
		if tok := authValue(r.Header.Get("Authorization"), "PVEAPIToken"); tok != "" {
			var ok bool
			if p, ok = s.verifyToken(tok); !ok {
				return fail(http.StatusUnauthorized, "Authentication failed!\n")
			}
		}
	} else {
		user, ok := s.verifyTicket(ticket)
		if !ok {
			return fail(http.StatusUnauthorized, "Authentication failed!\n")
		}
		s.mu.Lock()
		u, exists := s.users[user]
		s.mu.Unlock()
		if !exists {
			return fail(http.StatusUnauthorized, "Authentication failed!\n")
		}
		p = newPrincipal(user, false, u.Privs)
	}
	if p == nil {
		return fail(http.StatusUnauthorized, "No ticket\n")
	}
	isUpload := false
	if r.Method == http.MethodPost {
		if m := uploadPath.FindStringSubmatch(rel); m != nil {
			// CSRF is skipped for uploads, so the permission is checked
			// here, before the body is read.
			if err := p.check("/storage/"+m[2], "Datastore.AllocateTemplate"); err != nil {
				err.raw, err.delay = true, true
				return nil, false, err
			}
			isUpload = true
		}
	}
	if r.Method != http.MethodGet && !p.token && !isUpload {
		if !s.verifyCSRF(p.user, r.Header.Get("CSRFPreventionToken")) {
			return fail(http.StatusUnauthorized, "Permission denied - invalid csrf token\n")
		}
	}
	return p, isUpload, nil
}

// verifyToken is AccessControl.pm verify_token: "USER@REALM!NAME=SECRET",
// split at the last '='.
func (s *Server) verifyToken(v string) (*principal, bool) {
	i := strings.LastIndexByte(v, '=')
	if i < 0 {
		return nil, false
	}
	id, secret := v[:i], v[i+1:]
	s.mu.Lock()
	t, ok := s.tokens[id]
	s.mu.Unlock()
	if !ok || subtle.ConstantTimeCompare([]byte(t.Secret), []byte(secret)) != 1 {
		return nil, false
	}
	return newPrincipal(id, true, t.Privs), true
}

func (s *Server) sign(data string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(data))
	return base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}

// newTicket has the shape of PVE::Ticket assemble_rsa_ticket,
// "PVE:user@realm:HEXTIME::signature"; the signature is an HMAC here, not
// Proxmox's RSA signature.
func (s *Server) newTicket(user string) string {
	plain := fmt.Sprintf("PVE:%s:%08X", strings.ReplaceAll(user, ":", "%3A"), time.Now().Unix())
	return plain + "::" + s.sign(plain)
}

var ticketRe = regexp.MustCompile(`^(PVE:\S+)::([^:\s]+)$`)

func (s *Server) verifyTicket(t string) (string, bool) {
	m := ticketRe.FindStringSubmatch(t)
	if m == nil || !hmac.Equal([]byte(s.sign(m[1])), []byte(m[2])) {
		return "", false
	}
	i := strings.LastIndexByte(m[1], ':')
	ts, err := strconv.ParseInt(m[1][i+1:], 16, 64)
	if err != nil {
		return "", false
	}
	// verify_rsa_ticket: -300 <= age <= lifetime.
	age := time.Since(time.Unix(ts, 0))
	if age < -300*time.Second || age > s.opts.TicketLifetime {
		return "", false
	}
	return strings.ReplaceAll(m[1][len("PVE:"):i], "%3A", ":"), true
}

// newCSRF is PVE::Ticket assemble_csrf_prevention_token.
func (s *Server) newCSRF(user string) string {
	ts := fmt.Sprintf("%08X", time.Now().Unix())
	return ts + ":" + s.sign(ts+":"+user)
}

var csrfRe = regexp.MustCompile(`^([A-Z0-9]{8}):(\S+)$`)

func (s *Server) verifyCSRF(user, tok string) bool {
	m := csrfRe.FindStringSubmatch(tok)
	if m == nil || !hmac.Equal([]byte(s.sign(m[1]+":"+user)), []byte(m[2])) {
		return false
	}
	ts, _ := strconv.ParseInt(m[1], 16, 64)
	age := time.Since(time.Unix(ts, 0))
	return age > -300*time.Second && age < s.opts.TicketLifetime
}

var ticketSchema = schema{
	"username":      str().req().length(0, 64),
	"password":      str().req(),
	"realm":         str().length(0, 32),
	"otp":           str(),
	"tfa-challenge": str(),
	"path":          str().length(0, 64).needs("privs"),
	"privs":         str().length(0, 64).needs("path"),
	"new-format":    boolean(),
}

// createTicket is pve-access-control API2/AccessControl.pm create_ticket:
// a password login, or a renewal with the current ticket as password. Any
// failure is the same 401 "authentication failure" (no user enumeration).
func (s *Server) createTicket(c *call) (any, error) {
	username := c.p.get("username")
	if realm := c.p.get("realm"); realm != "" && !strings.Contains(username, "@") {
		username += "@" + realm
	}
	authFail := &apiError{code: http.StatusUnauthorized, msg: "authentication failure\n", delay: true}
	s.mu.Lock()
	u, exists := s.users[username]
	s.mu.Unlock()
	pw := c.p.get("password")
	ok := false
	if tu, valid := s.verifyTicket(pw); valid && (tu == username || tu == "root@pam") {
		ok = exists
	} else if exists && subtle.ConstantTimeCompare([]byte(u.Password), []byte(pw)) == 1 {
		ok = true
	}
	if !ok {
		return nil, authFail
	}
	if path := c.p.get("path"); path != "" {
		// Privilege check mode: no ticket, just the user name.
		p := newPrincipal(username, false, u.Privs)
		for _, pr := range splitList(c.p.get("privs")) {
			if !p.has(pr) {
				return nil, authFail
			}
		}
		return map[string]any{"username": username}, nil
	}
	return map[string]any{
		"username":            username,
		"ticket":              s.newTicket(username),
		"CSRFPreventionToken": s.newCSRF(username),
		"clustername":         "pvesim",
	}, nil
}
