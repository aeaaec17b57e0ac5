package pvesim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// apiError is a failed request as Proxmox answers it. The reason phrase of
// the status line is the first line of msg (pve-http-server AnyEvent.pm
// `response`), which is where clients such as go-proxmox find the message.
type apiError struct {
	code int
	msg  string
	// errors are the per-parameter messages of a 400 "Parameter
	// verification failed." (PVE::Exception raise_param_exc).
	errors map[string]string
	// raw marks errors pve-http-server answers itself, before any API
	// handler runs (auth, transport, multipart parser): no JSON body, the
	// body is rawBody.
	raw     bool
	rawBody string
	// delay marks failed authentication, answered after Options.AuthDelay.
	delay bool
}

func (e *apiError) Error() string { return strings.TrimRight(e.msg, "\n") }

// die is a plain Perl `die "msg\n"` inside an API handler: HTTP 500 with the
// message as reason phrase and in the JSON body's "message".
func die(format string, args ...any) *apiError {
	return &apiError{code: http.StatusInternalServerError, msg: fmt.Sprintf(format, args...) + "\n"}
}

// paramErr is PVE::Exception::raise_param_exc.
func paramErr(errs map[string]string) *apiError {
	return &apiError{code: http.StatusBadRequest, msg: "Parameter verification failed.\n", errors: errs}
}

func paramErr1(key, msg string) *apiError { return paramErr(map[string]string{key: msg}) }

// permErr is PVE::Exception::raise_perm_exc as RPCEnvironment::check calls
// it: "Permission check failed (/path, Priv)"; check_any joins the
// privileges with "|".
func permErr(path string, privs ...string) *apiError {
	return permErrText(path + ", " + strings.Join(privs, "|"))
}

func permErrText(what string) *apiError {
	return &apiError{code: http.StatusForbidden, msg: "Permission check failed (" + what + ")\n"}
}

// perlDie is a `die "msg"` without a trailing newline: Perl appends the
// source location, and the location ends up in the status line.
func perlDie(msg, file string, line int) string {
	return fmt.Sprintf("%s at %s line %d.\n", msg, file, line)
}

const (
	anyEventPM = "/usr/share/perl5/PVE/APIServer/AnyEvent.pm"
	storagePM  = "/usr/share/perl5/PVE/Storage.pm"
)

// asAPIError turns any error into the 500 Proxmox answers for a die.
func asAPIError(err error) *apiError {
	if e, ok := err.(*apiError); ok {
		return e
	}
	return die("%s", err.Error())
}

// reason is what pve-http-server puts in the status line: the first line of
// the message, or, when that line contains a CR, a plain 400 with no body
// (commit 936007a "response: avoid linefeeds in response status").
func reason(code int, msg string) (int, string, bool) {
	first, _, _ := strings.Cut(msg, "\n")
	if strings.ContainsRune(first, '\r') {
		return http.StatusBadRequest, "Bad Request", false
	}
	if first == "" {
		first = http.StatusText(code)
	}
	return code, first, true
}

// writeJSON answers 200 with {"data": data} (and "total" when set), as the
// json formatter of pve-http-server Formatter/Standard.pm does.
func writeJSON(w http.ResponseWriter, data any, total *int) {
	body := map[string]any{"data": data}
	if total != nil && *total != 0 {
		body["total"] = *total
	}
	b, err := json.Marshal(body)
	if err != nil {
		b = []byte(`{"data":null}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	stdHeaders(h)
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

func stdHeaders(h http.Header) {
	now := time.Now().UTC().Format(http.TimeFormat)
	h.Set("Date", now)
	h.Set("Expires", now)
	h.Set("Cache-Control", "max-age=0")
	h.Set("Pragma", "no-cache")
	h.Set("Server", "pve-api-daemon/3.0")
}

// writeError answers an error the way Proxmox does. Go's ResponseWriter
// cannot set a reason phrase, so the connection is hijacked and the response
// written by hand; Proxmox closes the connection after any status >= 400
// (keep_alive = 0), so closing it afterwards is faithful too.
func writeError(w http.ResponseWriter, e *apiError) {
	code, phrase, withBody := reason(e.code, e.msg)
	var body, ctype string
	switch {
	case !withBody:
	case e.raw:
		body = e.rawBody
	default:
		m := map[string]any{"data": nil, "message": e.msg}
		if len(e.errors) > 0 {
			m["errors"] = e.errors
		}
		b, _ := json.Marshal(m)
		body, ctype = string(b), "application/json;charset=UTF-8"
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		// Not reachable with the server Start builds (HTTP/1.1 only).
		w.Header().Set("Connection", "close")
		if ctype != "" {
			w.Header().Set("Content-Type", ctype)
		}
		w.WriteHeader(code)
		io.WriteString(w, body)
		return
	}
	conn, bufrw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	h := http.Header{}
	stdHeaders(h)
	h.Set("Connection", "close")
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	fmt.Fprintf(bufrw, "HTTP/1.1 %03d %s\r\n", code, phrase)
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(bufrw, "%s: %s\r\n", k, h.Get(k))
	}
	bufrw.WriteString("\r\n")
	bufrw.WriteString(body)
	bufrw.Flush()
}
