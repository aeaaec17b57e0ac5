package imgconv

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// User is an image's USER resolved against its /etc/passwd and /etc/group,
// as Docker and runc resolve it.
type User = runspec.User

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
	var pw runspec.User
	var found bool
	if id, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(id)
		pw, found = runspec.LookupPasswd(passwd, func(_ string, uid uint32) bool { return uid == u.UID })
	} else {
		pw, found = runspec.LookupPasswd(passwd, func(name string, _ uint32) bool { return name == userPart })
		if !found {
			return u, fmt.Errorf("user %q: %w (/etc/passwd)", userPart, ErrUnknownUser)
		}
	}
	if found {
		u = pw
	}
	if hasGroup {
		if id, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			u.GID = uint32(id)
		} else {
			gid, ok := runspec.LookupGroup(group, groupPart)
			if !ok {
				return u, fmt.Errorf("group %q: %w (/etc/group)", groupPart, ErrUnknownUser)
			}
			u.GID = gid
		}
		return u, nil
	}
	if u.Name != "" {
		u.Groups = runspec.SupplementaryGroups(group, u.Name, u.GID)
	}
	return u, nil
}
