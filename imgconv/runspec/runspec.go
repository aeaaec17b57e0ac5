// Package runspec is the contract between pve-image's converter and the init
// shim it puts into application templates: what to run, as whom, where, and
// how to stop it. The converter resolves everything it can from the image
// (users from /etc/passwd, signal names) so that the shim only reads numbers.
//
// The spec is JSON. This package reads it with a small decoder of its own:
// encoding/json, reflection and fmt together would push the shim past the
// 2 MiB it may take in every template. Writers use encoding/json.
package runspec

import (
	"errors"
	"os"
	"strconv"
	"unicode/utf8"
)

// Path is where the spec lives inside the container.
const Path = "/etc/pve-image/run.json"

// InitPath is where the shim lives inside the container.
const InitPath = "/sbin/pve-image-init"

// Spec says how the shim runs the image's program.
type Spec struct {
	// Args is Entrypoint followed by Cmd; Args[0] is looked up in PATH
	// from Env when it has no slash.
	Args []string `json:"args"`
	// Env is the program's environment, PATH and HOME filled in as Docker
	// does when the image leaves them out.
	Env []string `json:"env"`
	// WorkingDir is the program's working directory, created if missing.
	WorkingDir string `json:"workingDir"`
	// User is USER as the image wrote it, for messages; UID, GID and
	// Groups are what it resolved to in the image's /etc/passwd and
	// /etc/group.
	User   string   `json:"user,omitempty"`
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
	// Home is the HOME the converter added to Env from the user's
	// passwd entry ("" when the image sets HOME): a changed user (a CRI
	// pod's run_as_user) gets its own instead.
	Home string `json:"home,omitempty"`
	// StopSignal is the signal number the image asks to be stopped with.
	StopSignal int `json:"stopSignal"`
	// StopTimeout is how long to wait after StopSignal before killing,
	// in seconds.
	StopTimeout int `json:"stopTimeout"`
	// MountRun and MountTmp ask for a tmpfs on /run and /tmp: the image
	// left them empty, so nothing is hidden.
	MountRun bool `json:"mountRun"`
	MountTmp bool `json:"mountTmp"`
	// DHCPTimeout bounds the wait for a DHCP lease on eth0 before the
	// program starts without one, in seconds; 0 turns DHCP off.
	DHCPTimeout int `json:"dhcpTimeout"`
	// NoNewPrivs and CapDrop restrict the program (a CRI container's
	// security context): no privileges gained through execve, and these
	// capabilities (numbers) out of its bounding set. Set in the
	// effective spec (ExecSpecPath), so that exec gets them too.
	NoNewPrivs bool  `json:"noNewPrivs,omitempty"`
	CapDrop    []int `json:"capDrop,omitempty"`
}

// Read loads a spec.
func Read(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := Parse(b)
	if err != nil {
		return nil, errors.New(path + ": " + err.Error())
	}
	return s, nil
}

// Parse decodes a spec.
func Parse(b []byte) (*Spec, error) {
	d := &decoder{b: b}
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	if d.skip(); d.i != len(d.b) {
		return nil, errors.New("trailing data after the spec")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("the spec is not a JSON object")
	}
	s := &Spec{}
	for k, v := range obj {
		switch k {
		case "args":
			s.Args, err = stringList(v)
		case "env":
			s.Env, err = stringList(v)
		case "workingDir":
			s.WorkingDir, err = str(v)
		case "user":
			s.User, err = str(v)
		case "home":
			s.Home, err = str(v)
		case "uid":
			s.UID, err = u32(v)
		case "gid":
			s.GID, err = u32(v)
		case "groups":
			var a []any
			if a, err = arr(v); err == nil {
				for _, x := range a {
					var g uint32
					if g, err = u32(x); err != nil {
						break
					}
					s.Groups = append(s.Groups, g)
				}
			}
		case "stopSignal":
			s.StopSignal, err = integer(v)
		case "stopTimeout":
			s.StopTimeout, err = integer(v)
		case "mountRun":
			s.MountRun, err = boolean(v)
		case "mountTmp":
			s.MountTmp, err = boolean(v)
		case "dhcpTimeout":
			s.DHCPTimeout, err = integer(v)
		case "noNewPrivs":
			s.NoNewPrivs, err = boolean(v)
		case "capDrop":
			var a []any
			if a, err = arr(v); err == nil {
				for _, x := range a {
					var c int
					if c, err = integer(x); err != nil {
						break
					}
					s.CapDrop = append(s.CapDrop, c)
				}
			}
		}
		if err != nil {
			return nil, errors.New(k + ": " + err.Error())
		}
	}
	if len(s.Args) == 0 {
		return nil, errors.New("no program to run")
	}
	return s, nil
}

func str(v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", errors.New("want a string")
	}
	return s, nil
}

func arr(v any) ([]any, error) {
	if v == nil {
		return nil, nil
	}
	a, ok := v.([]any)
	if !ok {
		return nil, errors.New("want an array")
	}
	return a, nil
}

func stringList(v any) ([]string, error) {
	a, err := arr(v)
	var out []string
	for _, x := range a {
		s, err := str(x)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, err
}

func integer(v any) (int, error) {
	f, ok := v.(float64)
	if !ok || f != float64(int(f)) {
		return 0, errors.New("want an integer")
	}
	return int(f), nil
}

func u32(v any) (uint32, error) {
	n, err := integer(v)
	if err == nil && (n < 0 || n > 1<<32-1) {
		err = errors.New("out of range")
	}
	return uint32(n), err
}

func boolean(v any) (bool, error) {
	b, ok := v.(bool)
	if !ok {
		return false, errors.New("want true or false")
	}
	return b, nil
}

// decoder reads the JSON subset specs use: objects, arrays, strings,
// numbers, true, false and null.
type decoder struct {
	b []byte
	i int
}

func (d *decoder) skip() {
	for d.i < len(d.b) && (d.b[d.i] == ' ' || d.b[d.i] == '\n' || d.b[d.i] == '\t' || d.b[d.i] == '\r') {
		d.i++
	}
}

func (d *decoder) fail(what string) error {
	return errors.New("invalid JSON at byte " + strconv.Itoa(d.i) + ": " + what)
}

func (d *decoder) value() (any, error) {
	d.skip()
	if d.i >= len(d.b) {
		return nil, d.fail("unexpected end")
	}
	switch c := d.b[d.i]; {
	case c == '{':
		d.i++
		m := map[string]any{}
		if d.skip(); d.i < len(d.b) && d.b[d.i] == '}' {
			d.i++
			return m, nil
		}
		for {
			k, err := d.value()
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if d.skip(); !ok || d.i >= len(d.b) || d.b[d.i] != ':' {
				return nil, d.fail("want a key and ':'")
			}
			d.i++
			if m[ks], err = d.value(); err != nil {
				return nil, err
			}
			if done, err := d.sep('}'); done || err != nil {
				return m, err
			}
		}
	case c == '[':
		d.i++
		a := []any{}
		if d.skip(); d.i < len(d.b) && d.b[d.i] == ']' {
			d.i++
			return a, nil
		}
		for {
			v, err := d.value()
			if err != nil {
				return nil, err
			}
			a = append(a, v)
			if done, err := d.sep(']'); done || err != nil {
				return a, err
			}
		}
	case c == '"':
		return d.string()
	case c == 't' || c == 'f' || c == 'n':
		for _, w := range []struct {
			s string
			v any
		}{{"true", true}, {"false", false}, {"null", nil}} {
			if len(d.b)-d.i >= len(w.s) && string(d.b[d.i:d.i+len(w.s)]) == w.s {
				d.i += len(w.s)
				return w.v, nil
			}
		}
	case c == '-' || (c >= '0' && c <= '9'):
		j := d.i
		for d.i < len(d.b) && (d.b[d.i] == '-' || d.b[d.i] == '+' || d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E' || (d.b[d.i] >= '0' && d.b[d.i] <= '9')) {
			d.i++
		}
		f, err := strconv.ParseFloat(string(d.b[j:d.i]), 64)
		if err != nil {
			return nil, d.fail("bad number")
		}
		return f, nil
	}
	return nil, d.fail("unexpected character")
}

// sep consumes the ',' before another member (done false) or the closing
// bracket (done true).
func (d *decoder) sep(end byte) (done bool, err error) {
	d.skip()
	if d.i < len(d.b) && (d.b[d.i] == ',' || d.b[d.i] == end) {
		d.i++
		return d.b[d.i-1] == end, nil
	}
	return false, d.fail("want ',' or '" + string(end) + "'")
}

func (d *decoder) string() (string, error) {
	d.i++ // opening quote
	var out []byte
	for d.i < len(d.b) {
		c := d.b[d.i]
		d.i++
		switch {
		case c == '"':
			return string(out), nil
		case c < 0x20:
			return "", d.fail("control character in a string")
		case c >= 0x80:
			// Invalid UTF-8 reads as U+FFFD, as encoding/json reads it.
			r, size := utf8.DecodeRune(d.b[d.i-1:])
			out = utf8.AppendRune(out, r)
			d.i += size - 1
			continue
		case c != '\\':
			out = append(out, c)
			continue
		}
		if d.i >= len(d.b) {
			break
		}
		e := d.b[d.i]
		d.i++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if d.i+4 > len(d.b) {
				return "", d.fail("short \\u escape")
			}
			r, err := strconv.ParseUint(string(d.b[d.i:d.i+4]), 16, 32)
			if err != nil {
				return "", d.fail("bad \\u escape")
			}
			d.i += 4
			if r >= 0xd800 && r < 0xe000 {
				// A surrogate: only a high one followed by a low one
				// makes a character; lone halves read as U+FFFD.
				hi := r
				r = utf8.RuneError
				if hi < 0xdc00 && d.i+6 <= len(d.b) && d.b[d.i] == '\\' && d.b[d.i+1] == 'u' {
					if lo, err := strconv.ParseUint(string(d.b[d.i+2:d.i+6]), 16, 32); err == nil && lo >= 0xdc00 && lo < 0xe000 {
						r = 0x10000 + (hi-0xd800)<<10 + (lo - 0xdc00)
						d.i += 6
					}
				}
			}
			out = utf8.AppendRune(out, rune(r))
		default:
			return "", d.fail("bad escape")
		}
	}
	return "", d.fail("unterminated string")
}

// MergeEnv puts over on top of base: a key in both takes over's value in
// base's place, new keys go at the end, keys skip says no to are left out.
func MergeEnv(base, over []string, skip func(key string) bool) []string {
	out := append([]string{}, base...)
	idx := map[string]int{}
	for i, kv := range out {
		k, _, _ := cutEq(kv)
		idx[k] = i
	}
	for _, kv := range over {
		k, _, _ := cutEq(kv)
		if k == "" || (skip != nil && skip(k)) {
			continue
		}
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func cutEq(kv string) (k, v string, ok bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}
