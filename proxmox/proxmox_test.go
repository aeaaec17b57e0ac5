package proxmox

import (
	"strings"
	"testing"
)

func TestVersionNative(t *testing.T) {
	for v, want := range map[string]bool{"9.1.1": true, "9.1": true, "9.2.11": true, "10.0.0": true, "9.0.16": false, "8.4.1": false, "7.4-3": false} {
		if got := (Version{Version: v}).Native(); got != want {
			t.Errorf("Native(%q) = %v", v, got)
		}
	}
}

func TestSplitToken(t *testing.T) {
	tests := []struct{ in, id, secret string }{
		{"root@pam!ci=abc-123", "root@pam!ci", "abc-123"},
		{"ci@pve!a=b=c", "ci@pve!a=b", "c"},
	}
	for _, tc := range tests {
		id, secret, ok := splitToken(tc.in)
		if !ok || id != tc.id || secret != tc.secret {
			t.Errorf("splitToken(%q) = %q %q %v", tc.in, id, secret, ok)
		}
	}
	for _, bad := range []string{"nosecret", "root@pam=x", "ci!x=y", "=x"} {
		if _, _, ok := splitToken(bad); ok {
			t.Errorf("splitToken(%q) accepted", bad)
		}
	}
}

func TestFingerprint(t *testing.T) {
	colon := strings.Repeat("AB:", 31) + "CD"
	h, err := ParseFingerprint(colon)
	if err != nil || h != strings.Repeat("ab", 31)+"cd" {
		t.Fatalf("ParseFingerprint(%q) = %q, %v", colon, h, err)
	}
	if h2, err := ParseFingerprint(strings.ToUpper(h)); err != nil || h2 != h {
		t.Errorf("plain hex: %q %v", h2, err)
	}
	if got := FormatFingerprint(mustHex(h)); got != colon {
		t.Errorf("FormatFingerprint = %q", got)
	}
	for _, bad := range []string{"", "AB:CD", strings.Repeat("zz", 32)} {
		if _, err := ParseFingerprint(bad); err == nil {
			t.Errorf("ParseFingerprint(%q) accepted", bad)
		}
	}
}

func TestTaskNode(t *testing.T) {
	n, err := taskNode("UPID:pve2:0000ABCD:00012345:65A1B2C3:imgcopy::root@pam!ci:")
	if err != nil || n != "pve2" {
		t.Errorf("taskNode = %q, %v", n, err)
	}
	if _, err := taskNode("not-a-upid"); err == nil {
		t.Error("malformed UPID accepted")
	}
	if got := taskLabel("UPID:pve1:0000ABCD:00012345:65A1B2C3:vzcreate:105:root@pam:"); got != "vzcreate 105 on pve1" {
		t.Errorf("taskLabel = %q", got)
	}
}

func TestPrivilegeHint(t *testing.T) {
	got := privilegeHint("Permission check failed (/storage/local, Datastore.AllocateTemplate)")
	if !strings.Contains(got, "Datastore.AllocateTemplate on /storage/local") {
		t.Errorf("hint %q", got)
	}
}
