package proxmox

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// UploadRequest is a template to put on a storage.
type UploadRequest struct {
	Node, Storage string
	// Path is the local file; Name what it is called on the storage (the
	// caller normalises it as Proxmox would).
	Path, Name string
	// SHA256 is the file's hex digest, computed when empty; Proxmox checks
	// the upload against it before keeping the file.
	SHA256 string
	// Progress, if set, hears how many bytes of the file went out.
	Progress func(sent, total int64)
	// Attempts bounds retries after broken connections; 0 means 4.
	Attempts int
}

// Upload sends a template and waits for Proxmox's import task. The request
// is written by hand: Proxmox's multipart parser (pve-http-server
// AnyEvent.pm) takes the fields content, checksum-algorithm and checksum in
// exactly that order, then the file part named "filename", and nothing else;
// go-proxmox's UploadWithHash ranges over a map and so sends them in random
// order, which fails most of the time (proxmox.md §5, §7). The file streams
// from disk with a Content-Length (Proxmox takes no chunked bodies); a
// connection that breaks starts the upload again, with backoff.
func (c *Client) Upload(ctx context.Context, u UploadRequest) (volid string, err error) {
	if u.SHA256 == "" {
		if u.SHA256, err = fileSHA256(u.Path); err != nil {
			return "", err
		}
	}
	attempts := u.Attempts
	if attempts <= 0 {
		attempts = 4
	}
	var upid string
	try := 1
	for delay := time.Second; ; try, delay = try+1, 2*delay {
		upid, err = c.uploadOnce(ctx, u)
		if err == nil || !retriable(err) || try >= attempts {
			break
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(delay):
		}
	}
	if err != nil {
		if try > 1 {
			return "", fmt.Errorf("upload %s to %s on %s (gave up after %d attempts): %w", u.Name, u.Storage, u.Node, try, unwrapURL(err))
		}
		return "", fmt.Errorf("upload %s to %s on %s: %w", u.Name, u.Storage, u.Node, unwrapURL(err))
	}
	if _, err := c.WaitTask(ctx, upid); err != nil {
		return "", fmt.Errorf("upload %s to %s on %s: %w", u.Name, u.Storage, u.Node, err)
	}
	return u.Storage + ":vztmpl/" + u.Name, nil
}

func (c *Client) uploadOnce(ctx context.Context, u UploadRequest) (string, error) {
	f, err := os.Open(u.Path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	boundary := randomBoundary()
	var head bytes.Buffer
	for _, field := range [][2]string{{"content", "vztmpl"}, {"checksum-algorithm", "sha256"}, {"checksum", u.SHA256}} {
		fmt.Fprintf(&head, "--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n", boundary, field[0], field[1])
	}
	fmt.Fprintf(&head, "--%s\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"%s\"\r\nContent-Type: application/octet-stream\r\n\r\n",
		boundary, strings.NewReplacer(`"`, "_", "\r", "_", "\n", "_").Replace(u.Name))
	tail := "\r\n--" + boundary + "--\r\n"
	var file io.Reader = f
	if u.Progress != nil {
		file = &progress{r: f, total: fi.Size(), fn: u.Progress}
	}
	body := io.MultiReader(bytes.NewReader(head.Bytes()), file, strings.NewReader(tail))
	p := fmt.Sprintf("%s/nodes/%s/storage/%s/upload", c.base, url.PathEscape(u.Node), url.PathEscape(u.Storage))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p, body)
	if err != nil {
		return "", err
	}
	req.ContentLength = int64(head.Len()) + fi.Size() + int64(len(tail))
	req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	if err := c.authorize(ctx, req); err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Only a ticket session's 401 gets here: the transport makes
		// every other error status an *APIError.
		return "", newAPIError(req, resp)
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var out struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.Data == "" {
		return "", fmt.Errorf("unexpected upload reply %q", bytes.TrimSpace(raw))
	}
	return out.Data, nil
}

// retriable says whether an upload failed on the way (a reset, a closed
// connection) rather than being refused.
func retriable(err error) bool {
	var (
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
	)
	switch {
	case errors.Is(err, ErrAuth), errors.Is(err, ErrPermission), errors.Is(err, ErrFingerprint),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &certErr), errors.As(err, &unknown), errors.As(err, &host),
		errors.As(err, &dnsErr) && !dnsErr.IsTemporary:
		// Refused for good: trying again cannot help.
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		// Uploading again is safe: Proxmox overwrites the file.
		return ae.Transient()
	}
	var ne net.Error
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) || errors.As(err, &ne) || strings.Contains(err.Error(), "connection reset")
}

func randomBoundary() string {
	b := make([]byte, 16)
	rand.Read(b)
	return "pve-image-" + hex.EncodeToString(b)
}

// unwrapURL drops net/http's *url.Error around an *APIError, which names
// the call already.
func unwrapURL(err error) error {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	return err
}

type progress struct {
	r     io.Reader
	sent  int64
	total int64
	fn    func(sent, total int64)
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.sent += int64(n)
	p.fn(p.sent, p.total)
	return n, err
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
