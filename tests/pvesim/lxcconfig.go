package pvesim

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// Container configuration: the options of pve-container Config.pm, their
// permissions, GET/PUT .../config, and the LXC config of real containers.

// Config option types, for the JSON of GET .../config (pve-container
// Config.pm $confdesc): integers and booleans come back as numbers.
var confInts = map[string]bool{"cores": true, "cpuunits": true, "memory": true, "swap": true, "tty": true}
var confBools = map[string]bool{"console": true, "debug": true, "onboot": true, "protection": true, "template": true, "unprivileged": true}
var confNumbers = map[string]bool{"cpulimit": true}

func typedConfig(conf map[string]string) map[string]any {
	out := map[string]any{}
	for k, v := range conf {
		switch {
		case confInts[k] || confBools[k]:
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				out[k] = n
				continue
			}
		case confNumbers[k]:
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				out[k] = f
				continue
			}
		}
		out[k] = v
	}
	return out
}

// digest is the SHA-1 of the config file, which PUT's digest must match.
func digest(conf map[string]string) string {
	keys := make([]string, 0, len(conf))
	for k := range conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha1.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s: %s\n", k, conf[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// The property strings of pve-container Config.pm.
var netKeys = map[string]spec{
	"name":         str().req().match(`[-_.\w\d]+`),
	"bridge":       str().match(`[-_.\w\d]+`),
	"firewall":     boolean(),
	"gw":           str(),
	"gw6":          str(),
	"host-managed": boolean(),
	"hwaddr":       str().match(`(?i)[0-9a-f][02468ace](?::[0-9a-f]{2}){5}`),
	"ip":           str().fmtd(fmtIPv4Config),
	"ip6":          str().fmtd(fmtIPv6Config),
	"link_down":    boolean(),
	"mtu":          integer().between("64", "65535"),
	"rate":         number(),
	"tag":          integer().between("1", "4094"),
	"trunks":       str().match(`\d+(?:;\d+)*`),
	"type":         str().oneOf("veth"),
}

var featureKeys = map[string]spec{
	"force_rw_sys": boolean(), "fuse": boolean(), "keyctl": boolean(), "mknod": boolean(),
	"mount": str().match(`[a-zA-Z0-9_; ]+`), "nesting": boolean(),
}

// rootfsKeys is $rootfs_desc (Config.pm L345-423); a volume and the mount
// point path must pass verify_lxc_mp_string.
var rootfsKeys = map[string]spec{
	"volume": str().req().fmtd(fmtMPString), "size": str().fmtd(fmtDiskSize),
	"acl": boolean(), "mountoptions": str().match(`(discard|lazytime|noatime|nodev|noexec|nosuid)(;(discard|lazytime|noatime|nodev|noexec|nosuid))*`),
	"idmap": str().match(`^(?:passthrough|[ug]:[0-9]+:[0-9]+:[1-9][0-9]*(?:;[ug]:[0-9]+:[0-9]+:[1-9][0-9]*)*)$`),
	"quota": boolean(), "replicate": boolean(), "ro": boolean(), "shared": boolean(),
}

// mpKeys is $mp_desc (Config.pm L1001-1028): $rootfs_desc plus backup, the
// required mp (the path inside the container) and keepattrs.
var mpKeys = func() map[string]spec {
	m := map[string]spec{"backup": boolean(), "mp": str().req().fmtd(fmtMPString), "keepattrs": boolean()}
	for k, v := range rootfsKeys {
		m[k] = v
	}
	return m
}()

// reIllegalMP is verify_lxc_mp_string (Config.pm L982): no /./ or /../,
// no /. or /.. at the end, no ../ at the start.
var reIllegalMP = regexp.MustCompile(`/\.\.?/|/\.\.?$|^\.\./`)

func fmtMPString(v string) string {
	if reIllegalMP.MatchString(v) {
		return v + " contains illegal character sequences\n"
	}
	return ""
}

// reDiskSize is PVE::JSONSchema::parse_size, which the disk-size format
// (pve_verify_disk_size) uses.
var reDiskSize = regexp.MustCompile(`^(\d+(\.\d+)?)([KMGT](?:iB)?)?$`)

func fmtDiskSize(v string) string {
	if !reDiskSize.MatchString(v) {
		return "value does not look like a valid disk size: " + v + "\n"
	}
	return ""
}

// parseSize is PVE::JSONSchema::parse_size: bytes, or -1.
func parseSize(v string) int64 {
	m := reDiskSize.FindStringSubmatch(v)
	if m == nil {
		return -1
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	mult := map[string]float64{"": 1, "K": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20, "G": 1 << 30, "GiB": 1 << 30, "T": 1 << 40, "TiB": 1 << 40}[m[3]]
	return int64(f * mult)
}

// mountPoint is a parsed rootfs or mpN (parse_volume, Config.pm L1506).
type mountPoint struct {
	key string
	m   map[string]string
	typ string // classify_mountpoint: "volume", "bind" or "device"
}

// classifyMountpoint is Config.pm classify_mountpoint (L1897): a path is a
// bind mount, or a device mount under /dev/; anything else is a volume.
func classifyMountpoint(vol string) string {
	if strings.HasPrefix(vol, "/") {
		if strings.HasPrefix(vol, "/dev/") {
			return "device"
		}
		return "bind"
	}
	return "volume"
}

// parseVolume parses rootfs or mpN as $parse_ct_mountpoint_full does; nil
// when it does not parse (parse_volume with $noerr).
func parseVolume(key, v string) *mountPoint {
	keys := mpKeys
	if key == "rootfs" {
		keys = rootfsKeys
	}
	pairs, msg := parsePropString(v, "volume", keys)
	if msg != "" {
		return nil
	}
	mp := &mountPoint{key: key, m: propMap(pairs)}
	if key == "rootfs" {
		mp.m["mp"] = "/"
	}
	mp.typ = classifyMountpoint(mp.m["volume"])
	return mp
}

// print is print_ct_mountpoint (Config.pm L1486) through
// PVE::JSONSchema::print_property_string: the volume first (as the default
// key, bare), then the required mp, then the rest sorted, the size
// normalised by format_size; rootfs leaves out mp.
func (mp *mountPoint) print() string {
	var out []string
	out = append(out, mp.m["volume"])
	if mp.key != "rootfs" {
		out = append(out, "mp="+mp.m["mp"])
	}
	keys := make([]string, 0, len(mp.m))
	for k := range mp.m {
		if k != "volume" && k != "mp" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := mp.m[k]
		if k == "size" {
			v = formatSize(parseSize(v))
		}
		out = append(out, k+"="+v)
	}
	return strings.Join(out, ",")
}

var (
	reIPv4CIDR = regexp.MustCompile(`^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$`)
	reIPv6CIDR = regexp.MustCompile(`^[0-9a-fA-F:]+/\d{1,3}$`)
)

func fmtIPv4Config(v string) string {
	if v == "dhcp" || v == "manual" || reIPv4CIDR.MatchString(v) {
		return ""
	}
	return "value does not look like a valid ipv4 network configuration\n"
}

func fmtIPv6Config(v string) string {
	if v == "dhcp" || v == "manual" || v == "auto" || reIPv6CIDR.MatchString(v) {
		return ""
	}
	return "value does not look like a valid ipv6 network configuration\n"
}

// netKeysLegacy is net[n] before pve-container 6.0.15 (PVE 9.1): no
// host-managed.
var netKeysLegacy = func() map[string]spec {
	m := map[string]spec{}
	for k, v := range netKeys {
		if k != "host-managed" {
			m[k] = v
		}
	}
	return m
}()

// confSchema are the container options of pve-container Config.pm that
// both create and PUT config accept; appCT adds what PVE 9.1 brought for
// application containers (entrypoint, env, host-managed NICs).
func confSchema(appCT bool) schema {
	nk := netKeys
	if !appCT {
		nk = netKeysLegacy
	}
	// entrypoint and env have Config.pm's patterns (L671 and L701): no
	// control characters but the tab (\x09), so no newline either.
	sc := schema{
		"arch":         str().oneOf("amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"),
		"cmode":        str().oneOf("shell", "console", "tty"),
		"console":      boolean(),
		"cores":        integer().between("1", "8192"),
		"cpulimit":     number().between("0", "8192"),
		"cpuunits":     integer().between("0", "500000"),
		"debug":        boolean(),
		"description":  str().length(0, 8192),
		"dev[n]":       str(),
		"entrypoint":   str().match(`[^\x00-\x08\x0a-\x1F\x7F]+`),
		"env":          str().match(`(?:\w+=[^\x00-\x08\x0a-\x1F\x7F]*)(?:\x00\w+=[^\x00-\x08\x0a-\x1F\x7F]*)*`),
		"features":     str().propString(featureKeys, ""),
		"hookscript":   str(),
		"hostname":     str().length(0, 255).fmtd(fmtDNSName),
		"lock":         str().oneOf("backup", "create", "destroyed", "disk", "fstrim", "migrate", "mounted", "rollback", "snapshot", "snapshot-delete"),
		"memory":       integer().between("16", ""),
		"mp[n]":        str().propString(mpKeys, "volume"),
		"nameserver":   str(),
		"net[n]":       str().propString(nk, ""),
		"onboot":       boolean(),
		"ostype":       str().oneOf("debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine", "gentoo", "nixos", "unmanaged"),
		"protection":   boolean(),
		"rootfs":       str().propString(rootfsKeys, "volume"),
		"searchdomain": str(),
		"startup":      str(),
		"swap":         integer().between("0", ""),
		"tags":         str(),
		"template":     boolean(),
		"timezone":     str(),
		"tty":          integer().between("0", "6"),
		"unprivileged": boolean(),
		"unused[n]":    str(),
	}
	if !appCT {
		delete(sc, "entrypoint")
		delete(sc, "env")
	}
	return sc
}

func lxcCreateSchema(appCT bool) schema {
	sc := confSchema(appCT)
	for k, v := range map[string]spec{
		"node":                 nodeParam(),
		"vmid":                 vmidParam(),
		"ostemplate":           str().req().length(0, 255),
		"password":             str().length(5, 0),
		"storage":              str().fmtd(fmtStorageID),
		"force":                boolean(),
		"restore":              boolean(),
		"unique":               boolean().needs("restore"),
		"pool":                 str(),
		"ignore-unpack-errors": boolean(),
		"ssh-public-keys":      str(),
		"bwlimit":              number().between("0", ""),
		"start":                boolean(),
		"ha-managed":           boolean(),
	} {
		sc[k] = v
	}
	return sc
}

var vmidSchema = schema{"node": nodeParam(), "vmid": vmidParam()}

var lxcDestroySchema = schema{
	"node": nodeParam(), "vmid": vmidParam(),
	"force": boolean(), "purge": boolean(), "destroy-unreferenced-disks": boolean(),
}

var lxcStartSchema = schema{"node": nodeParam(), "vmid": vmidParam(), "skiplock": boolean(), "debug": boolean()}
var lxcStopSchema = schema{"node": nodeParam(), "vmid": vmidParam(), "skiplock": boolean(), "overrule-shutdown": boolean()}
var lxcShutdownSchema = schema{"node": nodeParam(), "vmid": vmidParam(), "timeout": integer().between("0", ""), "forceStop": boolean()}
var lxcConfigGetSchema = schema{"node": nodeParam(), "vmid": vmidParam(), "current": boolean(), "snapshot": str().length(0, 40)}

func lxcConfigPutSchema(appCT bool) schema {
	sc := confSchema(appCT)
	sc["node"], sc["vmid"] = nodeParam(), vmidParam()
	sc["delete"] = str().fmtd(fmtConfigIDList)
	sc["revert"] = str().fmtd(fmtConfigIDList)
	sc["digest"] = str().length(0, 40)
	return sc
}

// newDiskRe is pve-container's $NEW_DISK_RE: "STORAGE:SIZE_IN_GiB".
var newDiskRe = regexp.MustCompile(`^([^:\s]+):(\d+(\.\d+)?)$`)

// Per-option permissions of PVE::LXC::check_ct_modify_config_perm; only the
// exact user root@pam passes the root-only checks.
func checkModifyPerm(who *principal, vmid string, oldConf map[string]string, opts []string, newConf map[string]string, deleting, unprivileged bool) *apiError {
	if who.isRoot() {
		return nil
	}
	vm := "/vms/" + vmid
	for _, opt := range opts {
		switch {
		case opt == "cores" || opt == "cpuunits" || opt == "cpulimit":
			if err := who.check(vm, "VM.Config.CPU"); err != nil {
				return err
			}
		case opt == "rootfs" || strings.HasPrefix(opt, "mp") && indexedKey.MatchString(opt):
			if err := who.check(vm, "VM.Config.Disk"); err != nil {
				return err
			}
			if deleting {
				continue
			}
			mp := parseVolume(opt, newConf[opt])
			if mp == nil {
				continue // refused by the schema already
			}
			// An API token of root@pam is not root@pam: bind and
			// device mounts stay refused to it (LXC.pm L1669).
			if mp.typ != "volume" {
				return permErrText("mount point type " + mp.typ + " is only allowed for root@pam")
			}
			if m := newDiskRe.FindStringSubmatch(mp.m["volume"]); m != nil {
				if err := who.check("/storage/"+m[1], "Datastore.AllocateSpace"); err != nil {
					return err
				}
			}
		case opt == "memory" || opt == "swap":
			if err := who.check(vm, "VM.Config.Memory"); err != nil {
				return err
			}
		case strings.HasPrefix(opt, "net") && indexedKey.MatchString(opt):
			if err := who.check(vm, "VM.Config.Network"); err != nil {
				return err
			}
		case strings.HasPrefix(opt, "dev") && indexedKey.MatchString(opt):
			return permErrText("configuring device passthrough is only allowed for root@pam")
		case opt == "nameserver" || opt == "searchdomain" || opt == "hostname":
			if err := who.check(vm, "VM.Config.Network"); err != nil {
				return err
			}
		case opt == "features":
			if !unprivileged {
				return permErrText("changing feature flags for privileged container is only allowed for root@pam")
			}
			oldF := map[string]string{}
			if pairs, _ := parsePropString(oldConf["features"], "", featureKeys); pairs != nil {
				oldF = propMap(pairs)
			}
			newF := map[string]string{}
			if !deleting {
				if pairs, _ := parsePropString(newConf["features"], "", featureKeys); pairs != nil {
					newF = propMap(pairs)
				}
			}
			nesting, other := false, false
			for _, f := range []map[string]string{oldF, newF} {
				for k := range f {
					if oldF[k] != newF[k] || deleting {
						if k == "nesting" {
							nesting = true
						} else {
							other = true
						}
					}
				}
			}
			if other {
				return permErrText("changing feature flags (except nesting) is only allowed for root@pam")
			}
			if nesting {
				if err := who.check(vm, "VM.Allocate"); err != nil {
					return err
				}
			}
		case opt == "hookscript":
			return permErrText("changing the hookscript is only allowed for root@pam")
		default:
			if err := who.check(vm, "VM.Config.Options"); err != nil {
				return err
			}
		}
	}
	return nil
}

// normalizeNet is what print_lxc_network writes back: Proxmox adds a MAC
// address (with its BC:24:11 prefix) and type=veth.
func normalizeNet(v string) string {
	pairs, _ := parsePropString(v, "", netKeys)
	m := propMap(pairs)
	if _, ok := m["hwaddr"]; !ok {
		b := make([]byte, 3)
		rand.Read(b)
		pairs = append(pairs, [2]string{"hwaddr", fmt.Sprintf("BC:24:11:%02X:%02X:%02X", b[0], b[1], b[2])})
	}
	if _, ok := m["type"]; !ok {
		pairs = append(pairs, [2]string{"type", "veth"})
	}
	return joinProps(pairs)
}

// uniqueTags is PVE::GuestHelpers::get_unique_tags (sorted, ';'-joined).
// checkNetsAndTags is what update_pct_config does to a new config's netN
// and tags, at create and restore alike: NICs checked and written in
// Proxmox's form, tags deduplicated.
func (s *Server) checkNetsAndTags(conf map[string]string) *apiError {
	for k, val := range conf {
		switch {
		case strings.HasPrefix(k, "net") && indexedKey.MatchString(k):
			if err := s.checkNet(k, val); err != nil {
				return err
			}
			conf[k] = normalizeNet(val)
		case k == "tags":
			conf[k] = uniqueTags(val)
		}
	}
	return nil
}

func uniqueTags(v string) string {
	seen := map[string]bool{}
	var tags []string
	for _, t := range splitList(v) {
		if !seen[t] {
			seen[t] = true
			tags = append(tags, t)
		}
	}
	sort.Strings(tags)
	return strings.Join(tags, ";")
}

// formatSize is PVE::JSONSchema::format_size for a byte count.
func formatSize(b int64) string {
	for _, u := range []struct {
		s string
		n int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if b%u.n == 0 {
			return fmt.Sprintf("%d%s", b/u.n, u.s)
		}
	}
	return strconv.FormatInt(b, 10)
}

// bridgeExists is what PVE::Network::read_bridge_mtu tests: the bridge is
// one of Options.Bridges.
func (s *Server) bridgeExists(name string) bool {
	for _, b := range s.opts.Bridges {
		if b == name {
			return true
		}
	}
	return false
}

// setupBridges gives every bridge of Options.Bridges a Linux bridge for real
// containers: the host's own bridge of that name, or else a stand-in the
// simulator creates (and Close removes), so that Proxmox's bridge names
// need not exist on the test machine.
func (s *Server) setupBridges() error {
	s.hostBridges = map[string]string{}
	for _, b := range s.opts.Bridges {
		if _, err := os.Stat("/sys/class/net/" + b + "/bridge"); err == nil {
			s.hostBridges[b] = b
			continue
		}
		name := pvelxc.RandomName("pvsim")[:13]
		for _, args := range [][]string{{"link", "add", "name", name, "type", "bridge"}, {"link", "set", name, "up"}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("creating a bridge for %s: ip %s: %v: %s", b, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			}
		}
		s.ownBridges = append(s.ownBridges, name)
		s.hostBridges[b] = name
	}
	return nil
}

func (s *Server) removeBridges() {
	for _, name := range s.ownBridges {
		exec.Command("ip", "link", "del", name).Run()
	}
	s.ownBridges = nil
}

// checkBridges is what update_lxc_config's NIC loop (LXC.pm L857-891)
// checks before every start, NICs in Perl's key order: the bridge must
// exist (read_bridge_mtu), and a host-managed NIC takes no SLAAC (the
// message has no final period there, unlike update_pct_config's).
func (s *Server) checkBridges(conf map[string]string) error {
	keys := make([]string, 0)
	for k := range conf {
		if strings.HasPrefix(k, "net") && indexedKey.MatchString(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		pairs, _ := parsePropString(conf[k], "", netKeys)
		m := propMap(pairs)
		if br := m["bridge"]; !s.bridgeExists(br) {
			return fmt.Errorf("bridge '%s' does not exist", br)
		}
		if m["link_down"] != "1" && m["host-managed"] == "1" && m["ip6"] == "auto" {
			return fmt.Errorf("%s: SLAAC is not supported for host-managed network configuration", k)
		}
	}
	return nil
}

// bindMounts are the container's bind mount points in the order Proxmox
// mounts them: foreach_volume walks valid_volume_keys, rootfs then mp0 to
// mp255 by number (pve-guest-common AbstractConfig.pm L467
// foreach_volume_full; Config.pm L1979 valid_volume_keys). Mount points
// that do not parse are skipped, as parse_volume with $noerr does.
func bindMounts(conf map[string]string) []*mountPoint {
	var out []*mountPoint
	for i := 0; i < indexedMax["mp"]; i++ {
		key := fmt.Sprintf("mp%d", i)
		v, ok := conf[key]
		if !ok {
			continue
		}
		if mp := parseVolume(key, v); mp != nil && mp.typ == "bind" {
			out = append(out, mp)
		}
	}
	return out
}

// lxcOptions is the part of the config pvelxc writes into the LXC config.
func (s *Server) lxcOptions(node string, conf map[string]string) pvelxc.Options {
	o := pvelxc.Options{OSType: conf["ostype"], Arch: conf["arch"], Hostname: conf["hostname"], InitCmd: conf["entrypoint"]}
	if env := conf["env"]; env != "" {
		o.Env = strings.Split(env, "\x00")
	}
	if pairs, _ := parsePropString(conf["net0"], "", netKeys); pairs != nil {
		m := propMap(pairs)
		o.Bridge, o.HWAddr, o.NICName = s.hostBridges[m["bridge"]], m["hwaddr"], m["name"]
		// update_lxc_config (LXC.pm L880-891, pve-container 6.0.15): a
		// host-managed NIC that is not link_down gets its static
		// addresses and gateways from LXC, and is brought up.
		if m["host-managed"] == "1" && m["link_down"] != "1" {
			if ip := m["ip"]; ip != "" && ip != "dhcp" && ip != "manual" {
				o.IPv4 = ip
			}
			o.IPv4Gateway = m["gw"]
			if ip6 := m["ip6"]; ip6 != "" && ip6 != "dhcp" && ip6 != "manual" {
				o.IPv6 = ip6
			}
			o.IPv6Gateway = m["gw6"]
			o.LinkUp = true
		}
	}
	o.MemoryMB, _ = strconv.Atoi(conf["memory"])
	// Proxmox mounts mount points from its prestart hook
	// (lxc-pve-prestart-hook, LXC.pm __mountpoint_mount); the simulator
	// hands them to LXC as lxc.mount.entry, which has the same effect
	// inside the container: bind mounts, and volumes as bind mounts of
	// their directories (volumes.go). mountBinds has made the checks and
	// the directories by then.
	mounts, _ := s.mountList(node, conf)
	for _, mp := range mounts {
		o.Mounts = append(o.Mounts, pvelxc.Mount{Source: mp.m["volume"], Target: mp.m["mp"], ReadOnly: mp.m["ro"] == "1"})
	}
	return o
}

// rewriteLXCConfig writes the LXC config anew from the container's config
// before a start, as update_lxc_config does: init command, environment,
// host name, memory, the first NIC and the bind mounts.
func (s *Server) rewriteLXCConfig(node string, l *pvelxc.Container, conf map[string]string) error {
	return l.WriteConfig(s.lxcOptions(node, conf))
}

func (s *Server) lxcConfigGet(c *call) (any, error) {
	if c.p.get("snapshot") != "" {
		return nil, die("pvesim: snapshots are not simulated")
	}
	ct, err := s.loadConfig(c.node, c.p.get("vmid"))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	conf := ct.conf
	s.mu.Unlock()
	out := typedConfig(conf)
	out["digest"] = digest(conf)
	return out, nil
}

// lxcConfigPut is API2/LXC/Config.pm update_vm with update_pct_config.
// Changes apply to the stored config at once (Proxmox keeps options it
// cannot hot-plug pending until the next start; GET shows them the same).
func (s *Server) lxcConfigPut(c *call) (any, error) {
	vmid := c.p.get("vmid")
	p := map[string]string{}
	for k, v := range c.p.v {
		if k != "node" && k != "vmid" && k != "digest" {
			p[k] = v
		}
	}
	if len(p) == 0 {
		return nil, die("no options specified")
	}
	del := splitList(p["delete"])
	revert := splitList(p["revert"])
	delete(p, "delete")
	delete(p, "revert")
	if len(revert) > 0 {
		return nil, die("pvesim: pending changes (revert) are not simulated")
	}
	ct, err := s.loadConfig(c.node, vmid)
	if err != nil {
		return nil, err
	}
	ct.op.Lock()
	defer ct.op.Unlock()
	s.mu.Lock()
	conf := make(map[string]string, len(ct.conf))
	for k, v := range ct.conf {
		conf[k] = v
	}
	s.mu.Unlock()
	if l := conf["lock"]; l != "" {
		return nil, die("CT is locked (%s)", l)
	}
	if d := c.p.get("digest"); d != "" && d != digest(conf) {
		return nil, die("detected modified configuration - file changed by other user? Try again.")
	}
	unpriv := conf["unprivileged"] == "1"
	if err := checkModifyPerm(c.who, vmid, conf, del, p, true, unpriv); err != nil {
		return nil, err
	}
	sc := confSchema(true)
	for _, opt := range del {
		if _, ok := sc.lookup(opt); !ok {
			return nil, paramErr1("delete", fmt.Sprintf("unknown option '%s'", opt))
		}
		if _, ok := p[opt]; ok {
			return nil, paramErr1("delete", fmt.Sprintf("you can't use '-%s' and -delete %s' at the same time", opt, opt))
		}
	}
	var opts []string
	for k := range p {
		opts = append(opts, k)
	}
	sort.Strings(opts)
	if err := checkModifyPerm(c.who, vmid, conf, opts, p, false, unpriv); err != nil {
		return nil, err
	}
	for _, opt := range del {
		if _, ok := conf[opt]; !ok {
			continue // "cannot delete '$opt' - not set in current configuration!" (a warning)
		}
		switch opt {
		case "memory", "rootfs", "ostype":
			return nil, die("unable to delete required option '%s'", opt)
		case "unprivileged":
			return nil, die("unable to delete read-only option: '%s'", opt)
		}
		// A volume mount point taken out of the config stays as an
		// unused volume (Config.pm vmconfig_apply_pending with
		// add_unused_volume); an unusedN deleted is freed.
		if strings.HasPrefix(opt, "mp") || strings.HasPrefix(opt, "unused") {
			if vol := volumeOf(opt, conf[opt]); classifyMountpoint(vol) == "volume" {
				if strings.HasPrefix(opt, "mp") {
					delete(conf, opt)
					conf[unusedKey(conf)] = vol
					continue
				}
				if v := s.volume(c.node, vol); v != nil && v.owner == ct.vmid {
					s.dropVolume(v)
				}
			}
		}
		delete(conf, opt)
	}
	for _, opt := range opts {
		v := p[opt]
		switch {
		case opt == "unprivileged":
			return nil, die("unable to modify read-only option: '%s'", opt)
		case opt == "rootfs" || strings.HasPrefix(opt, "mp") || strings.HasPrefix(opt, "dev"):
			return nil, die("pvesim: changing '%s' is not simulated", opt)
		case strings.HasPrefix(opt, "net") && indexedKey.MatchString(opt):
			if err := s.checkNet(opt, v); err != nil {
				return nil, err
			}
			v = normalizeNet(v)
		case opt == "tags":
			v = uniqueTags(v)
		}
		conf[opt] = v
	}
	s.mu.Lock()
	ct.conf = conf
	l := ct.lxc
	s.mu.Unlock()
	// update_lxc_config runs after the config is written, so a missing
	// bridge fails the request but the change stays.
	if err := s.checkBridges(conf); err != nil {
		return nil, die("%s", err)
	}
	if l != nil {
		if err := s.rewriteLXCConfig(c.node, l, conf); err != nil {
			return nil, die("unable to write lxc config - %v", err)
		}
	}
	return nil, nil
}

// checkNet is what update_pct_config checks of a NIC when it is set: an
// MTU needs the bridge to read it from, and host-managed NICs take no
// SLAAC.
func (s *Server) checkNet(key, val string) *apiError {
	np, _ := parsePropString(val, "", netKeys)
	nm := propMap(np)
	if mtu := nm["mtu"]; mtu != "" && !s.bridgeExists(nm["bridge"]) {
		return die("bridge '%s' does not exist", nm["bridge"])
	}
	if nm["link_down"] != "1" && nm["host-managed"] == "1" && nm["ip6"] == "auto" {
		return die("%s: SLAAC is not supported for host-managed network configuration.", key)
	}
	return nil
}
