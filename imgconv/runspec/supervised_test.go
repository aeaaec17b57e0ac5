package runspec

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestMarshalRoundTrip: what the init writes by hand (the effective spec,
// the exit record) reads back the same with Parse and encoding/json.
func TestMarshalRoundTrip(t *testing.T) {
	specs := []Spec{
		{Args: []string{"/bin/sh", "-c", "echo \"a b\"\n\texit 3 \\ \x01 \x7f ünï"}, Env: []string{"PATH=/bin", "X=\u2028"},
			WorkingDir: "/srv", User: "app", UID: 1000, GID: 50, Groups: []uint32{50, 4000000000}, Home: "/home/app",
			StopSignal: 3, StopTimeout: 30, MountRun: true, DHCPTimeout: 10, NoNewPrivs: true, CapDrop: []int{0, 13, 40}},
		{Args: []string{"x"}},
	}
	for _, s := range specs {
		b := s.Marshal()
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(%s): %v", b, err)
		}
		if !reflect.DeepEqual(norm(*got), norm(s)) {
			t.Errorf("round trip\n got %+v\nwant %+v", *got, s)
		}
		var viaJSON Spec
		if err := json.Unmarshal(b, &viaJSON); err != nil || !reflect.DeepEqual(norm(viaJSON), norm(s)) {
			t.Errorf("encoding/json reads %s as %+v (%v)", b, viaJSON, err)
		}
	}
	for _, e := range []Exit{{Code: 143, Signal: 15, FinishedAt: 1764982295123456789, LastLog: 3}, {Code: 137, Signal: 9, OOMKilled: true}, {}} {
		var got Exit
		if err := json.Unmarshal(e.Marshal(), &got); err != nil || got != e {
			t.Errorf("exit %+v reads back as %+v (%v)", e, got, err)
		}
	}
}

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "\n\r\t\x00\x1f\x7f", "ünï€😀", "bad \xff utf8"} {
		var want string
		json.Unmarshal(mustJSON(t, s), &want)
		var got string
		if err := json.Unmarshal(AppendJSONString(nil, s), &got); err != nil || got != want {
			t.Errorf("AppendJSONString(%q) reads back as %q (%v), encoding/json's as %q", s, got, err, want)
		}
		if HasControl(string(AppendJSONString(nil, s))) {
			t.Errorf("AppendJSONString(%q) has a control character: Proxmox's env option would refuse it", s)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseStringsAndGroups(t *testing.T) {
	if got, err := ParseStrings(`["sh", "-c", "a \"b\"\n"]`); err != nil || !reflect.DeepEqual(got, []string{"sh", "-c", "a \"b\"\n"}) {
		t.Errorf("ParseStrings: %q %v", got, err)
	}
	for _, bad := range []string{`"x"`, `[1]`, `["a"] x`, `[`, ``} {
		if _, err := ParseStrings(bad); err == nil {
			t.Errorf("ParseStrings(%q) succeeded", bad)
		}
	}
	if got, err := ParseString(`"127.0.0.1 localhost\n"`); err != nil || got != "127.0.0.1 localhost\n" {
		t.Errorf("ParseString: %q %v", got, err)
	}
	if got, err := ParseGroups("1,,2000"); err != nil || !reflect.DeepEqual(got, []uint32{1, 2000}) {
		t.Errorf("ParseGroups: %v %v", got, err)
	}
	if _, err := ParseGroups("x"); err == nil {
		t.Error("ParseGroups(x) succeeded")
	}
}

func TestParseCapabilities(t *testing.T) {
	got, err := ParseCapabilities([]string{"NET_RAW", "cap_sys_admin", " CHOWN "})
	if err != nil || !reflect.DeepEqual(got, []int{13, 21, 0}) {
		t.Errorf("ParseCapabilities: %v %v", got, err)
	}
	if all, err := ParseCapabilities([]string{"NET_RAW", "ALL"}); err != nil || len(all) != 41 || all[40] != 40 {
		t.Errorf("ALL: %v %v", all, err)
	}
	if _, err := ParseCapabilities([]string{"NET_FLY"}); err == nil {
		t.Error("an unknown capability parsed")
	}
}
