package imgconv

import (
	"archive/tar"
	"path"
	"strings"
)

// Kind says how an image wants to be run.
type Kind struct {
	// System is true for images that boot an init (systemd, OpenRC,
	// busybox init, sysvinit); false for application images that run
	// one program.
	System bool `json:"system"`
	// Reason says how that was decided.
	Reason string `json:"reason"`
	// Init is what /sbin/init is (after symlinks) and InitSystem what it
	// belongs to: systemd, busybox, openrc, sysvinit; both empty without
	// one.
	Init       string `json:"init,omitempty"`
	InitSystem string `json:"initSystem,omitempty"`
}

// initNames are the commands that mean "boot the image's init".
var initNames = map[string]bool{
	"/sbin/init": true, "/init": true, "/usr/sbin/init": true, "/bin/init": true, "/usr/bin/init": true,
	"/lib/systemd/systemd": true, "/usr/lib/systemd/systemd": true, "/sbin/openrc-init": true, "/usr/sbin/openrc-init": true,
}

// Classify decides between a system and an application image: the image is
// a system image when its command is an init (or it has no command and has
// /sbin/init), as Proxmox 9.1 decides for OCI images; otherwise it runs one
// program, even if an init is installed.
func (r *Rootfs) Classify(entrypoint, cmd []string) Kind {
	var k Kind
	if n := r.resolve("sbin/init"); n != nil && n.ino.typ == tar.TypeReg && n.ino.mode&0o111 != 0 {
		k.Init = "/" + n.path()
		k.InitSystem = initSystem(k.Init)
	}
	argv := append(append([]string{}, entrypoint...), cmd...)
	switch {
	case len(argv) == 0 && k.Init != "":
		k.System, k.Reason = true, "no command; /sbin/init ("+k.Init+") boots it"
	case len(argv) == 0:
		k.Reason = "no command and no /sbin/init: nothing to run"
	case initNames[path.Clean(argv[0])] || (k.Init != "" && r.sameFile(argv[0], k.Init)):
		k.System, k.Reason = true, "its command "+argv[0]+" is an init"
		if k.Init == "" {
			k.Init = argv[0]
			k.InitSystem = initSystem(argv[0])
		}
	default:
		k.Reason = "it runs " + argv[0]
		if k.Init != "" {
			k.Reason += " (its /sbin/init, " + k.Init + ", is not used)"
		}
	}
	return k
}

func (r *Rootfs) sameFile(a, b string) bool {
	if !strings.HasPrefix(a, "/") {
		return false
	}
	na, nb := r.resolve(a), r.resolve(b)
	return na != nil && nb != nil && na.ino == nb.ino
}

func initSystem(p string) string {
	base := path.Base(p)
	switch {
	case strings.Contains(p, "systemd"):
		return "systemd"
	case base == "busybox":
		return "busybox"
	case strings.Contains(base, "openrc"):
		return "openrc"
	case base == "init" || base == "sysvinit":
		return "sysvinit"
	}
	return "other"
}

// DirIsEmpty reports whether p (following symlinks) is a missing or empty
// directory: a tmpfs mounted there hides nothing.
func (r *Rootfs) DirIsEmpty(p string) bool {
	n := r.resolve(p)
	return n == nil || (n.ino.isDir() && len(n.kids) == 0)
}
