package runspec

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	specs := []Spec{
		{Args: []string{"/usr/bin/app", "--flag=a b", "ünï\u00e9", "quote\"d", "tab\tand\nnewline\\"}, Env: []string{"PATH=/bin", "EMPTY="},
			WorkingDir: "/srv", User: "app:staff", UID: 1000, GID: 50, Groups: []uint32{50, 4000000000}, StopSignal: 3, StopTimeout: 30,
			MountRun: true, MountTmp: true, DHCPTimeout: 10},
		{Args: []string{"x"}},
	}
	for _, s := range specs {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(%s): %v", b, err)
		}
		if !reflect.DeepEqual(*got, s) {
			t.Errorf("round trip\n got %+v\nwant %+v", *got, s)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{``, `[]`, `{"args":[]}`, `{"args":["x"],"uid":-1}`, `{"args":["x"],"uid":1.5}`, `{"args":"x"}`,
		`{"args":["x"]} junk`, `{"args":["x"],}`, `{"args":["\x01"]}`, `{"args":["x"],"mountRun":1}`, `{"args":["x"`} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q) succeeded", in)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]int{"": 15, "SIGTERM": 15, "TERM": 15, "sigquit": 3, "9": 9, "SIGRTMIN+3": 37, "SIGRTMAX-1": 63, "SIGPWR": 30} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"SIGFOO", "0", "65", "SIGRTMIN+40"} {
		if _, err := ParseSignal(bad); err == nil {
			t.Errorf("ParseSignal(%q) succeeded", bad)
		}
	}
}

// FuzzParse: whatever encoding/json accepts as a Spec, Parse reads the
// same; nothing makes Parse panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"args":["/bin/app","a"],"env":["A=1"],"uid":1,"gid":2,"groups":[3],"stopSignal":15,"mountRun":true}`))
	f.Add([]byte(`{"args":["\u00e9\ud83d\ude00"],"workingDir":"\/x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Parse(b)
		var want Spec
		if jerr := json.Unmarshal(b, &want); jerr != nil || len(want.Args) == 0 || err != nil {
			return
		}
		// encoding/json also matches keys that differ in case; the
		// spec's keys are exact (the init reads only what pve-image wrote).
		var keys map[string]json.RawMessage
		json.Unmarshal(b, &keys)
		for k := range keys {
			if canonical := specKey(k); canonical != "" && canonical != k {
				return
			}
		}
		if !reflect.DeepEqual(norm(*got), norm(want)) {
			t.Fatalf("Parse(%q) = %+v, encoding/json says %+v", b, *got, want)
		}
	})
}

// norm makes empty and nil slices alike: the shim does not tell them apart.
func norm(s Spec) Spec {
	if len(s.Args) == 0 {
		s.Args = nil
	}
	if len(s.Env) == 0 {
		s.Env = nil
	}
	if len(s.Groups) == 0 {
		s.Groups = nil
	}
	return s
}

// specKey is the Spec JSON key k matches case-insensitively, or "".
func specKey(k string) string {
	t := reflect.TypeOf(Spec{})
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if strings.EqualFold(name, k) {
			return name
		}
	}
	return ""
}
