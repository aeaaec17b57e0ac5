package imgconv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// User is an image's USER resolved against its /etc/passwd and /etc/group,
// as Docker and runc resolve it.
type User struct {
	Name   string // user name, "" when given as a number not in passwd
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups
	Home   string
}

// ErrUnknownUser is returned for a USER naming a user or group the image
// does not have.
var ErrUnknownUser = errors.New("not found in the image")

// ResolveUser reads USER ("name", "uid", "name:group", "uid:gid", or empty
// for root). A name must be in /etc/passwd (a group in /etc/group); a number
// need not be, as in distroless images. Without an explicit group the user
// also gets the groups /etc/group lists it in.
func (r *Rootfs) ResolveUser(spec string) (User, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	passwd, _ := r.ReadFile("etc/passwd")
	group, _ := r.ReadFile("etc/group")
	u := User{Home: "/"}
	if userPart == "" {
		userPart = "0"
	}
	var pw *passwdEntry
	if id, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(id)
		pw = findPasswd(passwd, func(e passwdEntry) bool { return e.uid == u.UID })
	} else {
		pw = findPasswd(passwd, func(e passwdEntry) bool { return e.name == userPart })
		if pw == nil {
			return u, fmt.Errorf("user %q: %w (/etc/passwd)", userPart, ErrUnknownUser)
		}
	}
	if pw != nil {
		u.Name, u.UID, u.GID, u.Home = pw.name, pw.uid, pw.gid, pw.home
	}
	if hasGroup {
		if id, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			u.GID = uint32(id)
		} else {
			g := findGroup(group, func(e groupEntry) bool { return e.name == groupPart })
			if g == nil {
				return u, fmt.Errorf("group %q: %w (/etc/group)", groupPart, ErrUnknownUser)
			}
			u.GID = g.gid
		}
		return u, nil
	}
	if u.Name != "" {
		for _, g := range parseGroups(group) {
			if g.gid != u.GID && containsString(g.members, u.Name) {
				u.Groups = append(u.Groups, g.gid)
			}
		}
	}
	return u, nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

func findPasswd(b []byte, match func(passwdEntry) bool) *passwdEntry {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 7 || strings.HasPrefix(f[0], "#") {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		e := passwdEntry{name: f[0], uid: uint32(uid), gid: uint32(gid), home: f[5]}
		if e.home == "" {
			e.home = "/"
		}
		if match(e) {
			return &e
		}
	}
	return nil
}

func parseGroups(b []byte) []groupEntry {
	var out []groupEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		g := groupEntry{name: f[0], gid: uint32(gid)}
		if f[3] != "" {
			g.members = strings.Split(f[3], ",")
		}
		out = append(out, g)
	}
	return out
}

func findGroup(b []byte, match func(groupEntry) bool) *groupEntry {
	for _, g := range parseGroups(b) {
		if match(g) {
			return &g
		}
	}
	return nil
}
