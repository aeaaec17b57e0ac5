package runspec

import (
	"reflect"
	"testing"
)

func TestLookupPasswd(t *testing.T) {
	passwd := []byte("# users\nroot:x:0:0:root:/root:/bin/sh\nbroken:x:nope:0::/:/bin/sh\nshort:x:5:5\nnohome:x:7:8:::/bin/sh\nwww-data:x:33:33:www:/var/www:/bin/false\r\n")
	tests := []struct {
		name  string
		match func(string, uint32) bool
		want  User
		found bool
	}{
		{"by name", func(n string, _ uint32) bool { return n == "root" }, User{Name: "root", Home: "/root"}, true},
		{"by uid", func(_ string, id uint32) bool { return id == 7 }, User{Name: "nohome", UID: 7, GID: 8, Home: "/"}, true},
		{"malformed uid skipped", func(n string, _ uint32) bool { return n == "broken" }, User{}, false},
		{"short line skipped", func(n string, _ uint32) bool { return n == "short" }, User{}, false},
		{"comment is not a user", func(n string, _ uint32) bool { return n == "# users" }, User{}, false},
		{"missing", func(_ string, id uint32) bool { return id == 99 }, User{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found := LookupPasswd(passwd, tt.match)
			if found != tt.found || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v %v, want %+v %v", got, found, tt.want, tt.found)
			}
		})
	}
}

func TestGroups(t *testing.T) {
	group := []byte("root:x:0:\nstaff:x:50:app,www\nbad:x:x:app\napp:x:1000:app\nvideo:x:44:www,app\n")
	if gid, ok := LookupGroup(group, "video"); !ok || gid != 44 {
		t.Errorf("LookupGroup video = %d %v", gid, ok)
	}
	if _, ok := LookupGroup(group, "bad"); ok {
		t.Error("a group with a malformed id was found")
	}
	if got := SupplementaryGroups(group, "app", 1000); !reflect.DeepEqual(got, []uint32{50, 44}) {
		t.Errorf("SupplementaryGroups app = %v (the primary group is left out)", got)
	}
	if got := SupplementaryGroups(group, "nobody", 0); got != nil {
		t.Errorf("SupplementaryGroups nobody = %v", got)
	}
}
