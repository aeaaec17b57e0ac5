package pvesim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// params are a request's parameters as PVE::JSONSchema sees them: strings,
// with booleans as "0"/"1". dup and bad record values that are not plain
// strings (a repeated form field, a JSON array or object); validation
// rejects them as Proxmox does.
type params struct {
	v   map[string]string
	bad map[string]string // key -> perl ref type ("ARRAY", "HASH")
}

func newParams() params { return params{v: map[string]string{}, bad: map[string]string{}} }

func (p params) has(k string) bool { _, ok := p.v[k]; return ok }

func (p params) get(k string) string { return p.v[k] }

func (p params) set(k, v string) { p.v[k] = v; delete(p.bad, k) }

// decodeURLEncoded is pve-http-server's decode_urlencoded: pairs split on
// '&' or ';', each pair split on every '=' keeping the first two pieces (so
// an unescaped '=' in a value cuts it short), '+' is a space, %XX a byte.
// A repeated key becomes an array, which no API parameter accepts.
func decodeURLEncoded(p params, data string) {
	if data == "" {
		return
	}
	for _, kv := range strings.FieldsFunc(data, func(r rune) bool { return r == '&' || r == ';' }) {
		parts := strings.Split(kv, "=")
		k := unescapePerl(parts[0])
		if len(parts) < 2 {
			// `$res->{$k} = undef`: present but undefined, which
			// validation treats as absent.
			continue
		}
		v := unescapePerl(parts[1])
		if _, dup := p.v[k]; dup {
			p.bad[k] = "ARRAY"
		}
		p.v[k] = v
	}
}

func unescapePerl(s string) string {
	s = strings.ReplaceAll(s, "+", " ")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			n, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b.WriteByte(byte(n))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	out := b.String()
	if !utf8.ValidString(out) {
		out = strings.ToValidUTF8(out, "\uFFFD")
	}
	return out
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// decodeBody reads PUT/POST parameters as extract_params does: JSON when
// the content type says so, form encoding otherwise.
func decodeBody(p params, r *http.Request, body []byte) *apiError {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/json" {
		decodeURLEncoded(p, string(body))
		return nil
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		// decode_json dies; handle_api2_request turns that into a 500.
		return die("malformed JSON string: %v", err)
	}
	for k, v := range m {
		switch v := v.(type) {
		case nil:
		case string:
			p.v[k] = v
		case json.Number:
			p.v[k] = v.String()
		case bool:
			if v {
				p.v[k] = "1"
			} else {
				p.v[k] = "0"
			}
		case []any:
			p.v[k], p.bad[k] = "", "ARRAY"
		default:
			p.v[k], p.bad[k] = "", "HASH"
		}
	}
	return nil
}

// spec is one parameter of an API method's schema (pve-apischema.json).
type spec struct {
	typ      string // "string", "integer", "boolean", "number"
	optional bool
	enum     []string
	min, max string // numeric bounds; "" means none
	minLen   int
	maxLen   int
	pattern  *regexp.Regexp // anchored by check, like JSONSchema's m/^$pattern$/
	format   func(string) string
	requires string
	// props are the keys of a property-string format (PVE::JSONSchema
	// parse_property_string), propDefault its default_key.
	props       map[string]spec
	propDefault string
}

func str() spec          { return spec{typ: "string", optional: true} }
func integer() spec      { return spec{typ: "integer", optional: true} }
func boolean() spec      { return spec{typ: "boolean", optional: true} }
func number() spec       { return spec{typ: "number", optional: true} }
func (s spec) req() spec { s.optional = false; return s }
func (s spec) oneOf(v ...string) spec {
	s.enum = v
	return s
}
func (s spec) between(min, max string) spec { s.min, s.max = min, max; return s }
func (s spec) length(min, max int) spec     { s.minLen, s.maxLen = min, max; return s }
func (s spec) match(re string) spec         { s.pattern = regexp.MustCompile(`^(?:` + re + `)$`); return s }
func (s spec) fmtd(f func(string) string) spec {
	s.format = f
	return s
}
func (s spec) needs(k string) spec { s.requires = k; return s }
func (s spec) propString(keys map[string]spec, defaultKey string) spec {
	s.props, s.propDefault = keys, defaultKey
	return s
}

// schema maps parameter names to specs; a name ending in "[n]" covers
// name0..name(N-1) for the N in indexed.
type schema map[string]spec

var indexedMax = map[string]int{"net": 32, "mp": 256, "dev": 256, "unused": 256}

var indexedKey = regexp.MustCompile(`^(net|mp|dev|unused)(\d+)$`)

func (sc schema) lookup(k string) (spec, bool) {
	if s, ok := sc[k]; ok {
		return s, true
	}
	if m := indexedKey.FindStringSubmatch(k); m != nil {
		n, _ := strconv.Atoi(m[2])
		if s, ok := sc[m[1]+"[n]"]; ok && n < indexedMax[m[1]] && strconv.Itoa(n) == m[2] {
			return s, true
		}
	}
	return spec{}, false
}

var (
	reInteger = regexp.MustCompile(`^[+-]?\d+$`)
	reNumber  = regexp.MustCompile(`^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$`)
)

// validate is PVE::JSONSchema::validate for a method's parameters with
// additionalProperties => 0; the messages are Proxmox's.
func (sc schema) validate(p params) *apiError {
	errs := map[string]string{}
	add := func(k, msg string) {
		if old, ok := errs[k]; ok {
			errs[k] = old + "\n" + msg
			return
		}
		errs[k] = msg
	}
	for k, s := range sc {
		if strings.HasSuffix(k, "[n]") {
			continue
		}
		if !s.optional && !p.has(k) {
			add(k, "property is missing and it is not optional")
		}
	}
	keys := make([]string, 0, len(p.v))
	for k := range p.v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s, ok := sc.lookup(k)
		if !ok {
			add(k, "property is not defined in schema and the schema does not allow additional properties")
			continue
		}
		if s.requires != "" && !p.has(s.requires) {
			add(s.requires, fmt.Sprintf("missing property required by '%s'", k))
		}
		if msg := s.checkAt(k, p.v[k], p.bad[k]); msg != "" {
			add(k, msg)
		}
	}
	if len(errs) > 0 {
		return paramErr(errs)
	}
	return nil
}

func (s spec) check(v, ref string) string { return s.checkAt("", v, ref) }

// checkAt is check_prop for the value at path (the parameter's name, or
// "param.key" inside a property string), which names nested errors.
func (s spec) checkAt(path, v, ref string) string {
	if ref != "" {
		return fmt.Sprintf("type check ('%s') failed - got %s", s.typ, ref)
	}
	switch s.typ {
	case "boolean":
		// Only "1" and "0" pass as strings (JSON true/false arrive as
		// "1"/"0"); JSONSchema.pm has the on/yes/true variants
		// commented out.
		if v != "1" && v != "0" {
			return fmt.Sprintf("type check ('boolean') failed - got '%s'", v)
		}
	case "integer":
		if !reInteger.MatchString(v) {
			return fmt.Sprintf("type check ('integer') failed - got '%s'", v)
		}
	case "number":
		if !reNumber.MatchString(v) {
			return fmt.Sprintf("type check ('number') failed - got '%s'", v)
		}
	}
	if s.format != nil {
		if msg := s.format(v); msg != "" {
			return "invalid format - " + msg
		}
	}
	if s.props != nil {
		if _, msg := parsePropStringAt(path, v, s.propDefault, s.props); msg != "" {
			return "invalid format - " + msg
		}
	}
	if s.pattern != nil && !s.pattern.MatchString(v) {
		return "value does not match the regex pattern"
	}
	if s.maxLen > 0 && utf8.RuneCountInString(v) > s.maxLen {
		return fmt.Sprintf("value may only be %d characters long", s.maxLen)
	}
	if s.minLen > 0 && utf8.RuneCountInString(v) < s.minLen {
		return fmt.Sprintf("value must be at least %d characters long", s.minLen)
	}
	if reNumber.MatchString(v) {
		f, _ := strconv.ParseFloat(v, 64)
		if s.max != "" {
			if m, _ := strconv.ParseFloat(s.max, 64); f > m {
				return "value must have a maximum value of " + s.max
			}
		}
		if s.min != "" {
			if m, _ := strconv.ParseFloat(s.min, 64); f < m {
				return "value must have a minimum value of " + s.min
			}
		}
	}
	if len(s.enum) > 0 {
		for _, e := range s.enum {
			if e == v {
				return ""
			}
		}
		return fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", v, strings.Join(s.enum, ", "))
	}
	return ""
}

// Formats of pve-common JSONSchema.pm (the messages end in "\n" there).
var (
	reNodeName  = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)
	reVMID      = regexp.MustCompile(`^[1-9][0-9]{2,8}$`)
	reStorageID = regexp.MustCompile(`(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$`)
	reDNSName   = regexp.MustCompile(`^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)
	reConfigID  = regexp.MustCompile(`(?i)^[a-z][a-z0-9_-]+$`)
)

func fmtNode(v string) string {
	if !reNodeName.MatchString(v) {
		return "value does not look like a valid node name\n"
	}
	return ""
}

func fmtVMID(v string) string {
	if !reVMID.MatchString(v) {
		return "value does not look like a valid VM ID\n"
	}
	return ""
}

func fmtStorageID(v string) string {
	if len(v) < 2 {
		return fmt.Sprintf("storage ID '%s' cannot be shorter than 2 characters\n", v)
	}
	if !reStorageID.MatchString(v) {
		return fmt.Sprintf("storage ID '%s' contains illegal characters\n", v)
	}
	return ""
}

func fmtDNSName(v string) string {
	if !reDNSName.MatchString(v) {
		return "value does not look like a valid DNS name\n"
	}
	return ""
}

func fmtConfigIDList(v string) string {
	for _, id := range splitList(v) {
		if !reConfigID.MatchString(id) {
			return fmt.Sprintf("invalid configuration ID '%s'\n", id)
		}
	}
	return ""
}

// splitList is PVE::Tools::split_list: items separated by commas,
// semicolons, spaces or NULs.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == 0 || r == '\t' || r == '\n' })
}

// Standard options shared by many methods.
func nodeParam() spec    { return str().req().fmtd(fmtNode) }
func vmidParam() spec    { return integer().req().between("100", "999999999").fmtd(fmtVMID) }
func storageParam() spec { return str().req().fmtd(fmtStorageID) }

// parsePropString parses a Proxmox property string ("k=v,k2=v2", a value
// without "k=" belonging to defaultKey) against known keys; it returns the
// pairs in order, or the error JSONSchema reports.
func parsePropString(v, defaultKey string, keys map[string]spec) ([][2]string, string) {
	return parsePropStringAt("", v, defaultKey, keys)
}

// parsePropStringAt is parse_property_string for the value of parameter
// path: check_prop passes the parameter's name down, so a key's error is
// reported as "path.key" (pve-common JSONSchema.pm check_object, L1331).
func parsePropStringAt(path, v, defaultKey string, keys map[string]spec) ([][2]string, string) {
	at := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	var out [][2]string
	seen := map[string]bool{}
	defaultSeen := false
	for _, part := range strings.Split(v, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		// parse_property_string's own dies (JSONSchema.pm L1096-1138)
		// come without the "format error" of check_object's errors.
		k, val, ok := strings.Cut(part, "=")
		switch {
		case !ok:
			if defaultSeen {
				return nil, fmt.Sprintf("duplicate key in comma-separated list property: %s\n", defaultKey)
			}
			if defaultKey == "" {
				return nil, "value without key, but schema does not define a default key\n"
			}
			if seen[defaultKey] {
				return nil, fmt.Sprintf("duplicate key in comma-separated list property: %s\n", defaultKey)
			}
			k, val, defaultSeen = defaultKey, part, true
		case k == "" || val == "":
			return nil, "missing key in comma-separated list property\n"
		case seen[k]:
			return nil, fmt.Sprintf("duplicate key in comma-separated list property: %s\n", k)
		}
		s, known := keys[k]
		if !known {
			return nil, fmt.Sprintf("format error\n%s: property is not defined in schema and the schema does not allow additional properties\n", at(k))
		}
		seen[k] = true
		if s.typ == "boolean" {
			// parse_property_string accepts the long boolean forms.
			switch strings.ToLower(val) {
			case "1", "on", "yes", "true":
				val = "1"
			case "0", "off", "no", "false":
				val = "0"
			}
		}
		if msg := s.checkAt(at(k), val, ""); msg != "" {
			return nil, fmt.Sprintf("format error\n%s: %s\n", at(k), msg)
		}
		out = append(out, [2]string{k, val})
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if s := keys[k]; !s.optional && !seen[k] {
			return nil, fmt.Sprintf("format error\n%s: property is missing and it is not optional\n", at(k))
		}
	}
	return out, ""
}

func propMap(pairs [][2]string) map[string]string {
	m := map[string]string{}
	for _, p := range pairs {
		m[p[0]] = p[1]
	}
	return m
}

func joinProps(pairs [][2]string) string {
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p[0] + "=" + p[1]
	}
	return strings.Join(parts, ",")
}
