package proxmox

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// Errors callers may test for.
var (
	ErrAuth       = errors.New("Proxmox refused the credentials")
	ErrPermission = errors.New("Proxmox denied permission")
	ErrNotFound   = errors.New("not found on Proxmox")
	// ErrFingerprint is a server certificate that is not the pinned one.
	ErrFingerprint = errors.New("server certificate refused")
)

// APIError is a call that Proxmox answered with a status other than 2xx, or
// whose connection broke before an answer came. It names the call, keeps
// what Proxmox said, and says what to do where that is known. It matches
// ErrAuth (401), ErrPermission (403) and ErrNotFound (404, or Proxmox's
// "... does not exist") with errors.Is.
type APIError struct {
	Method, Path string
	// Status is the HTTP status; 0 when no answer came (Err says why).
	Status int
	// Message is what Proxmox said: the body's "message" when there is
	// one, else the status line's reason phrase, where pve-http-server
	// puts the first line of every error.
	Message string
	// Errors are a 400's per-parameter messages.
	Errors map[string]string
	// Location is where a redirect pointed.
	Location string
	// Attempts is how many times the call was made.
	Attempts int
	// Err is why the connection broke, when Status is 0.
	Err error

	token bool // the client authenticates with an API token
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: ", e.Method, e.Path)
	switch {
	case e.Status == 0:
		fmt.Fprintf(&b, "the connection to Proxmox broke before it answered: %v", e.Err)
	case e.Status == http.StatusUnauthorized && e.token:
		fmt.Fprintf(&b, "%v: the API token was not accepted (%d %s); check that the token exists, is not expired, and is given as USER@REALM!TOKENID=SECRET", ErrAuth, e.Status, e.Message)
	case e.Status == http.StatusUnauthorized:
		fmt.Fprintf(&b, "%v (%d %s): wrong user name or password, or the ticket could not be renewed", ErrAuth, e.Status, e.Message)
	case e.Status == http.StatusForbidden:
		fmt.Fprintf(&b, "%v: %s: %s", ErrPermission, e.Message, privilegeHint(e.Message))
	default:
		fmt.Fprintf(&b, "%d %s", e.Status, e.Message)
		keys := make([]string, 0, len(e.Errors))
		for k := range e.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "; %s: %s", k, strings.TrimSpace(e.Errors[k]))
		}
		if h := e.hint(); h != "" {
			b.WriteString(": " + h)
		}
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (gave up after %d attempts)", e.Attempts)
	}
	return b.String()
}

// hint says what a status means for a Proxmox user.
func (e *APIError) hint() string {
	switch {
	case e.Status >= 300 && e.Status < 400:
		return fmt.Sprintf("the server redirects to %q: give the Proxmox API's own URL, https://HOST:8006", e.Location)
	case e.Status >= 594 && e.Status <= 599:
		// AnyEvent::HTTP's own statuses: pveproxy could not pass the call
		// on to the node that runs it, or to pvedaemon on the node it
		// came to (pve-http-server AnyEvent.pm proxy_request).
		if node := pathNode(e.Path); node != "" {
			return fmt.Sprintf("Proxmox could not pass the call on to node %s: check that the node is online and in the cluster (pvecm status) and that its pveproxy and pvedaemon run", node)
		}
		return "Proxmox could not pass the call on to its API daemon: check that pvedaemon runs on the node (systemctl status pvedaemon)"
	case e.Status == http.StatusBadGateway, e.Status == http.StatusServiceUnavailable, e.Status == http.StatusGatewayTimeout:
		return "Proxmox, or a proxy in front of it, is overloaded or restarting; try again later"
	case e.Status == http.StatusBadRequest && len(e.Errors) == 0 && e.Message == http.StatusText(http.StatusBadRequest) && strings.HasSuffix(e.Path, "/upload"):
		// pve-http-server answers a multipart body it cannot parse with
		// an empty 400 (proxmox.md §5).
		return "Proxmox could not parse the upload"
	}
	return ""
}

// Unwrap is why the connection broke.
func (e *APIError) Unwrap() error { return e.Err }

// Is matches the sentinel errors.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrAuth:
		return e.Status == http.StatusUnauthorized
	case ErrPermission:
		return e.Status == http.StatusForbidden
	case ErrNotFound:
		// Proxmox answers a missing container or volume with a 500 whose
		// message says it does not exist.
		return e.Status == http.StatusNotFound || e.Status >= 400 && strings.Contains(e.Message, "does not exist")
	}
	return false
}

// Transient reports whether trying again later can succeed: the connection
// broke, Proxmox could not pass the call on, or it (or a proxy) is
// overloaded.
func (e *APIError) Transient() bool {
	switch e.Status {
	case 0:
		return e.Err != nil
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, 595, 596, 597:
		return true
	}
	return false
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

// pathNode is the node of /nodes/{node}/..., where a proxied call runs.
func pathNode(p string) string {
	rest, ok := strings.CutPrefix(p, "/nodes/")
	if !ok {
		return ""
	}
	node, _, _ := strings.Cut(rest, "/")
	return node
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
