package pvesim

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// The multipart upload parser of pve-http-server (AnyEvent.pm L1280
// file_upload_multipart at the commit proxmox.md pins), rebuilt from its
// regular expressions: Go's regexp picks the same submatches a backtracking
// engine does, so misordered fields fail exactly as they do in Perl.
//
// Phase 1 runs, anchored at the start of the buffer, the extraction of
// "content", then "checksum-algorithm", then "checksum"; each is optional,
// but the non-greedy ".*?" of one field's pattern can swallow the parts
// before it, and the swallowed text then fails the "form-data" check with a
// message whose first line holds a CR: pve-http-server answers that with an
// empty 400 Bad Request. Then the next part must be the file part, with
// Content-Disposition as its first header and the field name "filename".

const (
	// headWindow is how much of the body is gathered before the parser
	// first runs: Proxmox's parser sees whatever the first read brought,
	// and a client's multipart head arrives in one piece in practice
	// (proxmox.md §5), which this makes certain.
	headWindow = 64 << 10
	// headLimit stops re-running phase 1 over a buffer that never
	// contains a file part; the request then ends "upload failed" as in
	// Proxmox, without holding the whole body in memory.
	headLimit = 1 << 20
)

type multipart struct {
	boundary  []byte
	boundlen  int
	phase     int
	buf       []byte
	params    params
	out       *os.File
	written   int64
	gaveUp    bool
	reDelim0  *regexp.Regexp
	reField   map[string]*regexp.Regexp
	reValue   *regexp.Regexp
	reFile    *regexp.Regexp
	reHeaders *regexp.Regexp
}

func newMultipart(boundary string, out *os.File, p params) *multipart {
	delim := `--` + regexp.QuoteMeta(boundary) + `\r?\n`
	m := &multipart{
		boundary: []byte(boundary), boundlen: len(boundary) + 8, out: out, params: p,
		reDelim0:  regexp.MustCompile(`(?s)\A.*?(` + delim + `)`),
		reValue:   regexp.MustCompile(`(?s)\A(.*?)(` + delim + `)`),
		reFile:    regexp.MustCompile(`(?s)\A` + delim + `Content-Disposition: (.*?); name="(.*?)"; filename="([^"]+)"`),
		reHeaders: regexp.MustCompile(`(?s)\A.*?(?:\r?\n){2}`),
		reField:   map[string]*regexp.Regexp{},
	}
	for _, name := range []string{"content", "checksum-algorithm", "checksum"} {
		m.reField[name] = regexp.MustCompile(`(?s)\A` + delim + `.*?Content-Disposition: (.*?); name="` + regexp.QuoteMeta(name) + `"(.*?` + delim + `)`)
	}
	return m
}

// errFormData is assert_form_disposition.
func errFormData(disp []byte) error {
	return fmt.Errorf("wrong Content-Disposition '%s' in multipart, expected 'form-data'\n", disp)
}

// step is one call of file_upload_multipart on the buffered data.
func (m *multipart) step() error {
	if m.phase == 0 {
		if loc := m.reDelim0.FindSubmatchIndex(m.buf); loc != nil {
			m.buf = m.buf[loc[2]:]
			m.phase = 1
		}
	}
	if m.phase == 1 && !m.gaveUp {
		for _, name := range []string{"content", "checksum-algorithm", "checksum"} {
			// The pattern needs name="..." somewhere; checking for it
			// first keeps re-running the pattern over a growing buffer
			// cheap.
			if !bytes.Contains(m.buf, []byte(`name="`+name+`"`)) {
				continue
			}
			loc := m.reField[name].FindSubmatchIndex(m.buf)
			if loc == nil {
				continue
			}
			disp := append([]byte(nil), m.buf[loc[2]:loc[3]]...)
			m.buf = m.buf[loc[4]:]
			if string(disp) != "form-data" {
				return errFormData(disp)
			}
			m.removeUntilData()
			if v := m.reValue.FindSubmatchIndex(m.buf); v != nil {
				m.params.set(name, strings.TrimSpace(string(m.buf[v[2]:v[3]])))
				m.buf = m.buf[v[4]:]
			}
		}
		if loc := m.reFile.FindSubmatchIndex(m.buf); loc != nil {
			disp, field, fname := m.buf[loc[2]:loc[3]], string(m.buf[loc[4]:loc[5]]), string(m.buf[loc[6]:loc[7]])
			if string(disp) != "form-data" {
				return errFormData(disp)
			}
			if field != "filename" {
				return errors.New(perlDie("wrong field name '"+field+"' for file upload, expected 'filename'", anyEventPM, 1325))
			}
			m.phase = 2
			m.params.set("filename", strings.TrimSpace(fname))
			m.buf = m.buf[loc[1]:]
			m.removeUntilData()
		} else if len(m.buf) > headLimit {
			m.gaveUp = true
		}
	}
	if m.gaveUp {
		m.buf = m.buf[:0]
	}
	if m.phase == 2 {
		closeDelim := append([]byte("--"), m.boundary...)
		closeDelim = append(closeDelim, "--"...)
		if j := bytes.Index(m.buf, closeDelim); j >= 0 {
			end := j
			if end >= 2 && m.buf[end-2] == '\r' && m.buf[end-1] == '\n' {
				end -= 2
			} else if end >= 1 && m.buf[end-1] == '\n' {
				end--
			}
			if err := m.write(m.buf[:end]); err != nil {
				return err
			}
			m.buf = nil
			m.phase = 100
		} else if n := len(m.buf) - m.boundlen; n > 0 {
			if err := m.write(m.buf[:n]); err != nil {
				return err
			}
			m.buf = m.buf[n:]
		}
	}
	return nil
}

func (m *multipart) removeUntilData() {
	if loc := m.reHeaders.FindIndex(m.buf); loc != nil {
		m.buf = m.buf[loc[1]:]
	}
}

func (m *multipart) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := m.out.Write(b); err != nil {
		return fmt.Errorf("write to temporary file failed - %v\n", err)
	}
	m.written += int64(len(b))
	return nil
}

var (
	reCTSplit  = regexp.MustCompile(`\s*[;,]\s*`)
	reBoundary = regexp.MustCompile(`^\s*boundary\s*=\s*(\S+?)\s*$`)
)

// parseContentType is AnyEvent.pm parse_content_type: the boundary is
// taken verbatim, quotes included.
func parseContentType(ctype string) (ct, boundary string) {
	parts := reCTSplit.Split(ctype, -1)
	ct = parts[0]
	for _, p := range parts[1:] {
		if m := reBoundary.FindStringSubmatch(p); m != nil {
			return ct, m[1]
		}
	}
	return ct, ""
}

// DropNextUpload makes the server reset the next upload connection once it
// has read afterBytes of the request body.
func (s *Server) DropNextUpload(afterBytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropNext = afterBytes
}

// CorruptNextUpload flips a byte of the next uploaded file once it is
// received, before the worker verifies a checksum.
func (s *Server) CorruptNextUpload() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corruptNext = true
}

// Uploads is the number of upload requests whose file was fully received.
func (s *Server) Uploads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uploads
}

// serveUpload is the upload branch of authenticate_and_handle_request: the
// body streams into a temporary file on the node that received the request,
// then the API handler runs with the collected parameters.
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request, who *principal, rel string) {
	ct, boundary := parseContentType(r.Header.Get("Content-Type"))
	if boundary == "" || ct != "multipart/form-data" {
		// A die outside any eval in pve-http-server: logged, and the
		// client gets no answer at all.
		dropConnection(w, false)
		return
	}
	p := newParams()
	decodeURLEncoded(p, r.URL.RawQuery)
	if p.has("tmpfilename") {
		dropConnection(w, false)
		return
	}
	var rnd [16]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(s.dir, s.opts.EntryNode, "tmp", "pveupload-"+hex.EncodeToString(rnd[:]))
	out, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		writeError(w, die("unable to create temporary upload file '%s'", tmp))
		return
	}
	s.mu.Lock()
	drop := s.dropNext
	s.dropNext = -1
	s.mu.Unlock()

	mp := newMultipart(boundary, out, p)
	size := r.ContentLength
	var total int64
	chunk := make([]byte, 256<<10)
	parsed := false
	for mp.phase != 100 {
		want := int64(len(chunk))
		if drop >= 0 && total+want > drop {
			want = drop - total
		}
		n, rerr := 0, error(nil)
		if want > 0 {
			n, rerr = r.Body.Read(chunk[:want])
		}
		total += int64(n)
		mp.buf = append(mp.buf, chunk[:n]...)
		if drop >= 0 && total >= drop {
			out.Close()
			os.Remove(tmp)
			dropConnection(w, true)
			return
		}
		if parsed || int64(len(mp.buf)) >= min(size, headWindow) || rerr != nil {
			parsed = true
			if err := mp.step(); err != nil {
				// error() after a die in the parser: 500 with the message,
				// or the empty 400 when its first line holds a CR. The
				// temporary file is left behind, as pveproxy does.
				out.Close()
				drain(w, r, size-total)
				writeError(w, &apiError{code: http.StatusInternalServerError, msg: err.Error(), raw: true, rawBody: err.Error()})
				return
			}
		}
		if mp.phase == 100 {
			break
		}
		if total >= size {
			out.Close()
			msg := perlDie("upload failed", anyEventPM, 1370)
			writeError(w, &apiError{code: http.StatusInternalServerError, msg: msg, raw: true, rawBody: msg})
			return
		}
		if rerr != nil {
			// The client went away: client_do_disconnect unlinks the file.
			out.Close()
			os.Remove(tmp)
			dropConnection(w, false)
			return
		}
	}
	drain(w, r, size-total)
	if err := out.Close(); err != nil {
		writeError(w, die("write to temporary file failed - %v", err))
		return
	}
	s.mu.Lock()
	s.uploads++
	corrupt := s.corruptNext
	s.corruptNext = false
	s.mu.Unlock()
	if corrupt {
		flipByte(tmp)
	}
	w.Header().Set("Connection", "close")
	s.handleAPI(w, r, who, rel, mp.params, tmp)
}

// drain reads what is left of the request body (n < 0: unknown, until its
// end) so that closing the connection after an early answer does not reset
// it before the client has read the answer.
func drain(w http.ResponseWriter, r *http.Request, n int64) {
	if n == 0 || r.Body == nil {
		return
	}
	if n < 0 {
		n = 1 << 30
	}
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, io.LimitReader(r.Body, n))
}

// dropConnection closes the client connection without an answer; with
// reset, as a TCP reset (SO_LINGER 0), the way a crashed proxy looks.
func dropConnection(w http.ResponseWriter, reset bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok && reset {
		tcp.SetLinger(0)
	}
	raw.Close()
}

func flipByte(path string) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return
	}
	b := make([]byte, 1)
	off := fi.Size() / 2
	if _, err := f.ReadAt(b, off); err == nil {
		b[0] ^= 0xFF
		f.WriteAt(b, off)
	}
}

var uploadSchema = schema{
	"node":               nodeParam(),
	"storage":            storageParam(),
	"content":            str().req().oneOf("iso", "vztmpl", "import"),
	"filename":           str().req().length(0, 255),
	"checksum":           str().needs("checksum-algorithm"),
	"checksum-algorithm": str().oneOf("md5", "sha1", "sha224", "sha256", "sha384", "sha512").needs("checksum"),
	"tmpfilename":        str().match(`/var/tmp/pveupload-[0-9a-f]+`),
}

var (
	reNormalizeCut  = regexp.MustCompile(`^.*[/\\]`)
	reNormalizeBad  = regexp.MustCompile(`[^a-zA-Z0-9_.-]`)
	reISOUpload     = regexp.MustCompile(`(?i)[^/]+\.(?:iso|img)$`)
	reImportUpload  = regexp.MustCompile(`(?i)^[a-zA-Z0-9\-.+=_]+\.(ova|ovf|qcow2|raw|vmdk)$`)
	reTrailingNewln = regexp.MustCompile(`\n$`)
)

// normalizeFilename is PVE::Storage::normalize_content_filename; the
// multipart file name is bytes, so each byte of a non-ASCII character
// becomes one '_'.
func normalizeFilename(name string) string {
	name = reTrailingNewln.ReplaceAllString(name, "")
	name = reNormalizeCut.ReplaceAllString(name, "")
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if reNormalizeBad.Match([]byte{c}) {
			b.WriteByte('_')
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func newHash(alg string) hash.Hash {
	switch alg {
	case "md5":
		return md5.New()
	case "sha1":
		return sha1.New()
	case "sha224":
		return sha256.New224()
	case "sha256":
		return sha256.New()
	case "sha384":
		return sha512.New384()
	}
	return sha512.New()
}

func fileHash(alg, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := newHash(alg)
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// upload is pve-storage API2/Storage/Status.pm upload (L519). It has no
// proxyto: the worker runs on the node that received the request and
// copies (or "scp"s) the file to {node}.
func (s *Server) upload(c *call) (any, error) {
	node, storageID := c.p.get("node"), c.p.get("storage")
	st, err := s.storageConfig(storageID)
	if err != nil {
		return nil, err
	}
	if !st.fileBased {
		return nil, die("can't upload to storage type '%s'", st.typ)
	}
	content := c.p.get("content")
	if c.tmp == "" {
		return nil, die("missing temporary file name")
	}
	fi, statErr := os.Stat(c.tmp)
	if statErr != nil {
		return nil, die("temporary file '%s' does not exist", c.tmp)
	}
	filename := normalizeFilename(c.p.get("filename"))
	var sub string
	switch content {
	case "iso":
		if !reISOUpload.MatchString(filename) {
			return nil, paramErr1("filename", "wrong file extension")
		}
		sub = "template/iso"
	case "vztmpl":
		if !s.isVztmpl(filename) {
			return nil, paramErr1("filename", "wrong file extension")
		}
		sub = "template/cache"
	case "import":
		if !reImportUpload.MatchString(filename) {
			return nil, paramErr1("filename", "invalid filename or wrong extension")
		}
		sub = "import"
	}
	if !st.content[content] {
		return nil, die("storage '%s' does not support '%s' content", storageID, content)
	}
	remote := node != "localhost" && node != c.entry
	if remote && !s.isNode(node) {
		return nil, hostLookupErr(node)
	}
	if node == "localhost" {
		node = c.entry
	}
	dest := filepath.Join(s.StoragePath(node, storageID), sub, filename)
	os.Chmod(c.tmp, 0o644)
	cmd := "cp -- " + c.tmp + " " + dest
	if remote {
		ip := s.nodeIP(node)
		cmd = fmt.Sprintf("/usr/bin/scp -o BatchMode=yes -o HostKeyAlias=%s -o UserKnownHostsFile=/etc/pve/nodes/%s/ssh_known_hosts -o GlobalKnownHostsFile=none -p -- %s [%s]:%s", node, node, c.tmp, ip, dest)
	}
	size := fi.Size()
	tmp := c.tmp
	alg, want := c.p.get("checksum-algorithm"), c.p.get("checksum")
	upid := s.startWorker(c.entry, "imgcopy", "", c.who, func(w *worker) error {
		w.printf("starting file import from: %s\n", tmp)
		if alg != "" {
			w.printf("calculating checksum...")
			got, err := fileHash(alg, tmp)
			if err != nil {
				os.Remove(tmp)
				return fmt.Errorf("unable to compute checksum of '%s' - %v", tmp, err)
			}
			if !strings.EqualFold(got, want) {
				w.printf("\n")
				os.Remove(tmp)
				return fmt.Errorf("checksum mismatch: got '%s' != expect '%s'", got, want)
			}
			w.printf("OK, checksum verified\n")
		}
		w.printf("target node: %s\n", node)
		w.printf("target file: %s\n", dest)
		w.printf("file size is: %d\n", size)
		w.printf("command: %s\n", cmd)
		err := copyFile(tmp, dest, w.injected)
		// The temporary file only exists here, on the receiving node.
		if rmErr := os.Remove(tmp); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			w.warn("unable to clean up temporary file '%s' - %v", tmp, rmErr)
		}
		if err != nil {
			os.Remove(dest)
			return err
		}
		w.printf("finished file import successfully\n")
		return nil
	})
	return upid, nil
}

// copyFile copies like cp, overwriting dest. fail, when it returns an
// error, interrupts the copy halfway (FailNextTask).
func copyFile(src, dest string, fail func() error) error {
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("import failed: %v", err)
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("import failed: %v", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("import failed: %v", err)
	}
	fi, _ := in.Stat()
	if ferr := fail(); ferr != nil {
		io.CopyN(out, in, fi.Size()/2)
		out.Close()
		return ferr
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("import failed: %v", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("import failed: %v", err)
	}
	return nil
}
