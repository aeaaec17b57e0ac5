package lifecycle

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pve-image/pve-image/template"
)

func TestRecordRoundTrip(t *testing.T) {
	rec := &Record{Image: "ghcr.io/o/app:1", Digest: "sha256:aa", Env: []string{"A=1", "CERT=x\ny"}, DNS: template.DNS{Servers: []string{"10.0.0.53"}},
		Op: "op1", Rollback: &RollbackPoint{Backup: "local:backup/vzdump-lxc-100-2026_01_01-00_00_00.tar.zst", Image: "ghcr.io/o/app:1", Digest: "sha256:bb", Volumes: []string{"mp0"}}}
	for _, user := range []string{"", "my service\n\nowned by ops"} {
		desc := rec.Description(user)
		if strings.Count(desc, "\n") != strings.Count(user, "\n")+map[bool]int{true: 0, false: 1}[user == ""] {
			t.Errorf("the record takes more than one line: %q", desc)
		}
		gotUser, got, err := ParseDescription(desc)
		if err != nil || gotUser != user || !reflect.DeepEqual(got, rec) {
			t.Errorf("ParseDescription(%q) = %q, %+v, %v", desc, gotUser, got, err)
		}
	}
	if user, got, err := ParseDescription("just notes"); err != nil || got != nil || user != "just notes" {
		t.Errorf("no record: %q %+v %v", user, got, err)
	}
	if _, got, err := ParseDescription("pve-image: {broken"); err == nil || got != nil {
		t.Errorf("a broken record passed: %+v %v", got, err)
	}
}

func TestImageRef(t *testing.T) {
	for in, want := range map[string]string{
		"ghcr.io/o/app:1":      "ghcr.io/o/app@sha256:d",
		"127.0.0.1:5000/app:2": "127.0.0.1:5000/app@sha256:d",
		"127.0.0.1:5000/app":   "127.0.0.1:5000/app@sha256:d",
		"app@sha256:old":       "app@sha256:d",
	} {
		if got := (&Record{Image: in, Digest: "sha256:d"}).ImageRef(); got != want {
			t.Errorf("ImageRef(%q) = %q, want %q", in, got, want)
		}
	}
}
