package imgconv

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// maxCapture bounds the files kept in memory for facts.
const maxCapture = 1 << 20

// capturePaths are the files whose whole content the facts need: what
// PVE::LXC::Setup reads to detect the distribution (proxmox.md §3), and the
// user and group databases.
var capturePaths = map[string]bool{
	"etc/os-release":           true,
	"usr/lib/os-release":       true,
	"etc/lsb-release":          true,
	"etc/debian_version":       true,
	"etc/devuan_version":       true,
	"etc/SuSE-brand":           true,
	"etc/SuSE-release":         true,
	"etc/fedora-release":       true,
	"etc/centos-release":       true,
	"etc/redhat-release":       true,
	"etc/arch-release":         true,
	"etc/alpine-release":       true,
	"etc/gentoo-release":       true,
	"etc/openEuler-release":    true,
	"etc/passwd":               true,
	"etc/group":                true,
	"etc/pve-image/image.json": true,
}

type elfInfo struct {
	class   byte // 1: 32-bit, 2: 64-bit; 0: not ELF
	machine uint16
}

func parseELF(b []byte) elfInfo {
	if len(b) < 20 || !bytes.HasPrefix(b, []byte("\x7fELF")) {
		return elfInfo{}
	}
	var m uint16
	switch b[5] {
	case 1:
		m = binary.LittleEndian.Uint16(b[18:])
	case 2:
		m = binary.BigEndian.Uint16(b[18:])
	default:
		return elfInfo{}
	}
	return elfInfo{class: b[4], machine: m}
}

// pveArch names an ELF machine as PVE::LXC::Setup::Base::detect_architecture
// does; "" for machines Proxmox does not know.
func (e elfInfo) pveArch() string {
	switch e.machine {
	case 0x03:
		return "i386"
	case 0x3e:
		return "amd64"
	case 0x28:
		return "armhf"
	case 0xb7:
		return "arm64"
	case 0xf3:
		if e.class == 1 {
			return "riscv32"
		}
		return "riscv64"
	}
	return ""
}

// resolve follows symbolic links as a chroot would: absolute targets start at
// the root and ".." stops there. It returns the final node, or nil.
func (r *Rootfs) resolve(p string) *node {
	if r.pending != nil {
		panic("imgconv: the rootfs is read before its streamed layer (TarWriter.Stream)")
	}
	p = strings.Trim(p, "/")
	for hops := 0; hops < 40; hops++ {
		n, rest, ok := r.walkTo(p)
		if !ok {
			return nil
		}
		if n.ino.typ != tar.TypeSymlink {
			if rest != "" {
				return nil
			}
			return n
		}
		dir, _ := splitPath(n.path())
		t := n.ino.target
		if strings.HasPrefix(t, "/") {
			p = path.Clean(t)
		} else {
			p = path.Clean("/" + joinPath(dir, t))
		}
		p = strings.TrimPrefix(joinPath(strings.TrimPrefix(p, "/"), rest), "/")
	}
	return nil
}

// walkTo descends from the root and stops at the first symlink, returning it
// with the path still to walk below it.
func (r *Rootfs) walkTo(p string) (n *node, rest string, ok bool) {
	n = r.tree.root
	for p != "" {
		var c string
		c, p, _ = strings.Cut(p, "/")
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			if n.parent != nil {
				n = n.parent
			}
			continue
		}
		if n.kids == nil {
			return nil, "", false
		}
		if n = n.kids[c]; n == nil {
			return nil, "", false
		}
		if n.ino.typ == tar.TypeSymlink {
			return n, p, true
		}
	}
	return n, "", true
}

// ReadFile returns the content of one of the files facts are read from,
// following symlinks inside the image. ok is false when the file is missing or
// was not kept.
func (r *Rootfs) ReadFile(p string) (data []byte, ok bool) {
	n := r.resolve(p)
	if n == nil || n.ino.typ != tar.TypeReg || int64(len(n.ino.data)) != n.ino.size {
		return nil, false
	}
	return n.ino.data, true
}

// Exists reports whether p names anything, following symlinks.
func (r *Rootfs) Exists(p string) bool { return r.resolve(p) != nil }

// IsSymlink reports whether p itself (its directory's symlinks followed) is
// a symbolic link, dangling or not.
func (r *Rootfs) IsSymlink(p string) bool {
	dir, base := splitPath(strings.Trim(p, "/"))
	real, err := r.realPath(dir)
	if err != nil {
		return false
	}
	n := r.tree.lookup(joinPath(real, base))
	return n != nil && n.ino.typ == tar.TypeSymlink
}

// IsExecutable reports whether p, following symlinks, is a regular file with
// an execute bit.
func (r *Rootfs) IsExecutable(p string) bool {
	n := r.resolve(p)
	return n != nil && n.ino.typ == tar.TypeReg && n.ino.mode&0o111 != 0
}

// Facts is what Proxmox will make of the root filesystem.
type Facts struct {
	// OSType is the ostype PVE::LXC::Setup detects, or "unmanaged" when the
	// image has no os-release and no known release file.
	OSType string `json:"ostype"`
	// OSID is ID from os-release, if any.
	OSID string `json:"osID,omitempty"`
	// OSReason says how OSType was found.
	OSReason string `json:"osReason"`
	// OSRefusal is set when Proxmox would refuse to create a container
	// from the template unless ostype=unmanaged is given.
	OSRefusal string `json:"osRefusal,omitempty"`
	// ShellArch is the architecture of /bin/sh as Proxmox detects it, ""
	// without a /bin/sh Proxmox can read.
	ShellArch string `json:"shellArch,omitempty"`
	// Warnings are things Proxmox will drop or that may surprise.
	Warnings []string `json:"warnings,omitempty"`
}

// Facts inspects the flattened tree. With a layer pending it may only be
// called after TarWriter.Stream.
func (r *Rootfs) Facts() Facts {
	var f Facts
	f.OSType, f.OSID, f.OSReason, f.OSRefusal = r.detectOS()
	if n := r.resolve("bin/sh"); n != nil {
		f.ShellArch = n.ino.elf.pveArch()
	}
	var devices, devEntries int
	r.tree.walk(func(p string, n *node) error {
		if n.ino.typ == tar.TypeChar || n.ino.typ == tar.TypeBlock {
			devices++
		} else if strings.HasPrefix(p, "dev/") {
			devEntries++
		}
		return nil
	})
	if devices > 0 {
		f.Warnings = append(f.Warnings, fmt.Sprintf("%d device node(s) left out: an unprivileged container cannot create them, and LXC provides /dev", devices))
	}
	if devEntries > 0 {
		f.Warnings = append(f.Warnings, fmt.Sprintf("%d entries under /dev are skipped by Proxmox's extraction (--exclude ./dev/*)", devEntries))
	}
	if len(r.dropped) > 0 {
		var names []string
		for k, v := range r.dropped {
			names = append(names, fmt.Sprintf("%s (%d)", k, v))
		}
		slices.Sort(names)
		f.Warnings = append(f.Warnings, "extended attributes left out, as Proxmox's tar restores only user.* and security.capability: "+strings.Join(names, ", "))
	}
	if f.OSRefusal != "" {
		f.Warnings = append(f.Warnings, f.OSRefusal)
	}
	return f
}

// pvePlugins are the PVE::LXC::Setup plugins an os-release ID can name.
var pvePlugins = map[string]bool{
	"alpine": true, "archlinux": true, "centos": true, "debian": true, "devuan": true, "fedora": true,
	"gentoo": true, "openeuler": true, "opensuse": true, "ubuntu": true, "nixos": true, "unmanaged": true,
}

var pveAliases = map[string]string{
	"opensuse-leap": "opensuse", "opensuse-tumbleweed": "opensuse", "opensuse-slowroll": "opensuse", "sles": "opensuse",
	"openEuler": "openeuler", "arch": "archlinux", "rocky": "centos", "almalinux": "centos",
}

// detectOS follows PVE::LXC::Setup's $autodetect_type and then the chosen
// plugin's own version check (proxmox.md §3).
func (r *Rootfs) detectOS() (ostype, id, reason, refusal string) {
	osr, haveOSR := r.ReadFile("etc/os-release")
	src := "/etc/os-release"
	if !haveOSR {
		osr, haveOSR = r.ReadFile("usr/lib/os-release")
		src = "/usr/lib/os-release"
	}
	var vars map[string]string
	if haveOSR {
		vars = parseShellVars(osr)
		id = vars["ID"]
		switch {
		case pvePlugins[id]:
			ostype, reason = id, fmt.Sprintf("%s has ID=%s", src, id)
		case pveAliases[id] != "":
			ostype, reason = pveAliases[id], fmt.Sprintf("%s has ID=%s, an alias of %s", src, id, pveAliases[id])
		}
	}
	if ostype == "" {
		ostype, reason = r.fallbackOS()
		if ostype == "" {
			if haveOSR {
				return "unmanaged", id, fmt.Sprintf("%s has ID=%q, which Proxmox does not know, and no release file matches", src, id),
					fmt.Sprintf("Proxmox refuses to create a container from this template (\"unable to detect OS distribution\": unknown os-release ID %q) unless ostype=unmanaged", id)
			}
			return "unmanaged", id, "no os-release and no known release file", ""
		}
		if haveOSR {
			reason = fmt.Sprintf("%s has unknown ID=%q; %s", src, id, reason)
		}
	}
	if msg := r.pluginCheck(ostype, vars); msg != "" {
		refusal = fmt.Sprintf("Proxmox refuses to create a container from this template (%s plugin: %s) unless ostype=unmanaged", ostype, msg)
	}
	return ostype, id, reason, refusal
}

func (r *Rootfs) fallbackOS() (string, string) {
	if b, ok := r.ReadFile("etc/lsb-release"); ok && parseShellVars(b)["DISTRIB_ID"] == "Ubuntu" {
		return "ubuntu", "/etc/lsb-release has DISTRIB_ID=Ubuntu"
	}
	for _, c := range []struct{ file, os string }{
		{"etc/debian_version", "debian"},
		{"etc/devuan_version", "devuan"},
		{"etc/SuSE-brand", "opensuse"},
		{"etc/SuSE-release", "opensuse"},
		{"etc/fedora-release", "fedora"},
		{"etc/centos-release", "centos"},
		{"etc/redhat-release", "centos"},
		{"etc/arch-release", "archlinux"},
		{"etc/alpine-release", "alpine"},
		{"etc/gentoo-release", "gentoo"},
		{"nix/store", "nixos"},
		{"etc/openEuler-release", "openeuler"},
	} {
		if r.Exists(c.file) {
			return c.os, fmt.Sprintf("/%s exists", c.file)
		}
	}
	return "", ""
}

// pluginCheck repeats the checks each plugin's new() makes, returning why
// Proxmox would die, or "".
func (r *Rootfs) pluginCheck(ostype string, osr map[string]string) string {
	first := func(p string) (string, bool) {
		b, ok := r.ReadFile(p)
		if !ok {
			return "", false
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimSpace(line), true
	}
	switch ostype {
	case "debian":
		v, ok := first("etc/debian_version")
		if !ok {
			return "/etc/debian_version is missing"
		}
		if s, ok := strings.CutSuffix(v, "/sid"); ok {
			v = map[string]string{"buster": "10", "bullseye": "11", "bookworm": "12", "trixie": "13", "forky": "14"}[s]
		}
		major, ok := leadingInt(v)
		if !ok {
			return fmt.Sprintf("unable to parse /etc/debian_version %q", v)
		}
		if major < 4 {
			return fmt.Sprintf("unsupported Debian version %q", v)
		}
	case "ubuntu":
		b, ok := r.ReadFile("etc/lsb-release")
		if !ok {
			return "/etc/lsb-release is missing"
		}
		vars := parseShellVars(b)
		if vars["DISTRIB_ID"] != "Ubuntu" {
			return "/etc/lsb-release does not say DISTRIB_ID=Ubuntu"
		}
		if major, ok := leadingInt(vars["DISTRIB_RELEASE"]); !ok || major < 17 {
			return fmt.Sprintf("unsupported Ubuntu version %q", vars["DISTRIB_RELEASE"])
		}
	case "centos":
		v, ok := first("etc/redhat-release")
		if !ok {
			return "/etc/redhat-release is missing"
		}
		_, after, found := strings.Cut(v, "release ")
		major, ok := leadingInt(after)
		if !found || !ok || major < 5 || major >= 11 {
			return fmt.Sprintf("unsupported CentOS-family release %q", v)
		}
	case "fedora":
		if major, ok := leadingInt(osr["VERSION_ID"]); !ok || major < 22 {
			return fmt.Sprintf("unsupported Fedora VERSION_ID %q", osr["VERSION_ID"])
		}
	case "opensuse":
		if osr["VERSION_ID"] == "" {
			return "os-release has no VERSION_ID"
		}
	case "gentoo":
		if !r.Exists("etc/gentoo-release") {
			return "/etc/gentoo-release is missing"
		}
	case "devuan":
		if !r.Exists("etc/devuan_version") {
			return "/etc/devuan_version is missing"
		}
	}
	return ""
}

func leadingInt(s string) (int, bool) {
	end := 0
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, err := strconv.Atoi(s[:end])
	return n, err == nil
}

// parseShellVars reads KEY=value lines as os-release(5) and lsb-release
// write them: optional single or double quotes, # comments.
func parseShellVars(b []byte) map[string]string {
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if q := v[0:min(1, len(v))]; len(v) >= 2 && (q == `"` || q == "'") && v[len(v)-1] == q[0] {
			v = v[1 : len(v)-1]
			if q == `"` {
				v = strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\$`, `$`, "\\`", "`").Replace(v)
			}
		}
		vars[strings.TrimSpace(k)] = v
	}
	return vars
}
