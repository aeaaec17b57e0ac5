package runspec

import (
	"strconv"
	"strings"
)

// User is an account as /etc/passwd and /etc/group describe it.
type User struct {
	Name   string // user name, "" when given as a number not in passwd
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups
	Home   string
}

// LookupPasswd finds the first /etc/passwd entry match accepts. Malformed
// lines and comments are skipped, as libc does; an empty home is "/".
func LookupPasswd(passwd []byte, match func(name string, uid uint32) bool) (User, bool) {
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 7 || strings.HasPrefix(f[0], "#") {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil || !match(f[0], uint32(uid)) {
			continue
		}
		u := User{Name: f[0], UID: uint32(uid), GID: uint32(gid), Home: f[5]}
		if u.Home == "" {
			u.Home = "/"
		}
		return u, true
	}
	return User{}, false
}

// group is an /etc/group entry.
type group struct {
	name    string
	gid     uint32
	members []string
}

func groups(b []byte) []group {
	var out []group
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		g := group{name: f[0], gid: uint32(gid)}
		if f[3] != "" {
			g.members = strings.Split(f[3], ",")
		}
		out = append(out, g)
	}
	return out
}

// LookupGroup finds a group's id by name in /etc/group.
func LookupGroup(b []byte, name string) (uint32, bool) {
	for _, g := range groups(b) {
		if g.name == name {
			return g.gid, true
		}
	}
	return 0, false
}

// SupplementaryGroups lists the groups /etc/group names user in, other
// than its primary group, as initgroups(3) does.
func SupplementaryGroups(b []byte, user string, primary uint32) []uint32 {
	var out []uint32
	for _, g := range groups(b) {
		if g.gid == primary {
			continue
		}
		for _, m := range g.members {
			if m == user {
				out = append(out, g.gid)
				break
			}
		}
	}
	return out
}
