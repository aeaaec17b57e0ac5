package template

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/pve-image/pve-image/imgconv/runspec"
	"github.com/pve-image/pve-image/proxmox"
)

// Overrides are what a user sets over the image's run config when creating
// a container (run --env, --entrypoint).
type Overrides struct {
	Env        []string // KEY=value, replacing or adding to the image's
	Entrypoint []string // replaces Entrypoint and Cmd
	// DNS is the container's name servers and search domains (run --dns,
	// --searchdomain): Proxmox's nameserver and searchdomain for the
	// distributions it manages, the /etc/resolv.conf pve-image-init writes
	// for application images (Proxmox writes none into unmanaged ones).
	DNS DNS
}

// DNS is a resolver configuration.
type DNS struct {
	Servers []string `json:"servers,omitempty"`
	Search  []string `json:"search,omitempty"`
}

// Empty reports whether nothing is set.
func (d DNS) Empty() bool { return len(d.Servers) == 0 && len(d.Search) == 0 }

// ResolvConf is the resolv.conf for d.
func (d DNS) ResolvConf() string {
	var b strings.Builder
	if len(d.Search) > 0 {
		b.WriteString("search " + strings.Join(d.Search, " ") + "\n")
	}
	for _, s := range d.Servers {
		b.WriteString("nameserver " + s + "\n")
	}
	return b.String()
}

// PVEConfig is how to create a container from a template: the options of
// POST /nodes/{node}/lxc, and what to add to every netN.
type PVEConfig struct {
	// Options holds ostype and arch always; for application containers on
	// Proxmox 9.1+ also entrypoint, env (NUL-separated) and cmode; for
	// systemd images features=nesting=1.
	Options map[string]string `json:"options"`
	// NetOptions goes on each netN (host-managed=1 for application
	// containers on 9.1+: Proxmox runs DHCP for them).
	NetOptions string `json:"netOptions,omitempty"`
	// Notes explain choices a user may want to know about.
	Notes []string `json:"notes,omitempty"`
}

// PVEConfigs are the configs for both families of Proxmox.
type PVEConfigs struct {
	// Native is for Proxmox 9.1+ (pve-container 6.0.15+), whose
	// containers take entrypoint, env and host-managed NICs.
	Native PVEConfig `json:"native"`
	// Legacy is for Proxmox 7 and 8, which boot /sbin/init and nothing else.
	Legacy PVEConfig `json:"legacy"`
}

// PVEConfigs works out both configs for the template m describes.
func (m *Meta) PVEConfigs(o Overrides) (*PVEConfigs, error) {
	n, err := m.PVEConfig(true, o)
	if err != nil {
		return nil, err
	}
	l, err := m.PVEConfig(false, Overrides{})
	if err != nil {
		return nil, err
	}
	if len(o.Env) > 0 || len(o.Entrypoint) > 0 {
		l.Notes = append(l.Notes, "--env and --entrypoint need Proxmox 9.1 or later; older versions run the image's own")
	}
	return &PVEConfigs{Native: n, Legacy: l}, nil
}

// PVEConfig is the container config for Proxmox 9.1+ (native) or older.
// The user's env is merged over the image's (PATH stays unless the user sets
// it), not thrown away as Proxmox's own import does.
func (m *Meta) PVEConfig(native bool, o Overrides) (PVEConfig, error) {
	c := PVEConfig{Options: map[string]string{"ostype": m.Run.OSType, "arch": m.Arch}}
	for _, kv := range o.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return c, fmt.Errorf("--env %q: want KEY=value", kv)
		}
	}
	if m.Run.Kind == "system" && m.Run.Init == "none" {
		if m.Run.InitSystem == "systemd" {
			c.Options["features"] = "nesting=1"
			c.Notes = append(c.Notes, "systemd needs nesting=1 in unprivileged containers")
		}
		if len(o.Env) > 0 || len(o.Entrypoint) > 0 {
			return c, fmt.Errorf("a system image boots its own init: --env and --entrypoint do not apply")
		}
		// Proxmox writes resolv.conf into the distributions it manages
		// (Setup set_dns); for unmanaged ones the image's own stays.
		if len(o.DNS.Servers) > 0 {
			c.Options["nameserver"] = strings.Join(o.DNS.Servers, " ")
		}
		if len(o.DNS.Search) > 0 {
			c.Options["searchdomain"] = strings.Join(o.DNS.Search, " ")
		}
		return c, nil
	}
	if !native {
		if len(o.Env) > 0 || len(o.Entrypoint) > 0 {
			return c, fmt.Errorf("Proxmox before 9.1 has no entrypoint or env options for containers: --env and --entrypoint need Proxmox 9.1 or later")
		}
		if !o.DNS.Empty() {
			return c, fmt.Errorf("Proxmox before 9.1 cannot hand an application container its DNS settings (it writes no resolv.conf into unmanaged containers and has no env option to pass one to pve-image-init): --dns and --searchdomain need Proxmox 9.1 or later; pve-image-init takes them from the DHCP lease")
		}
		if m.Run.Init != "shim" {
			c.Notes = append(c.Notes, "converted with --init none: Proxmox before 9.1 boots /sbin/init, which is not the image's program")
		}
		return c, nil
	}

	env := m.Config.Env
	if m.Run.Spec != nil {
		env = m.Run.Spec.Env
	}
	// Only pve-image's own PVE_IMAGE_ variables reach pve-image-init (templates
	// converted before they were dropped from run.json may hold the image's).
	env = MergeEnv(withoutRuntimeVars(env), o.Env)
	var argv []string
	switch {
	case m.Run.Init == "shim" && len(o.Entrypoint) > 0 && !initCmdSafe(o.Entrypoint):
		// LXC splits lxc.init.cmd at spaces and ignores quotes (lxc.md):
		// the shim takes such an argv from its environment instead.
		argv = []string{runspec.InitPath}
		env = MergeEnv(env, []string{runspec.EnvArgv + "=" + jsonStrings(o.Entrypoint)})
	case m.Run.Init == "shim" && len(o.Entrypoint) > 0:
		argv = append([]string{runspec.InitPath, "--"}, o.Entrypoint...)
	case m.Run.Init == "shim":
		argv = []string{runspec.InitPath}
	case len(o.Entrypoint) > 0:
		argv = o.Entrypoint
	default:
		argv = append(append([]string{}, m.Config.Entrypoint...), m.Config.Cmd...)
		c.Notes = append(c.Notes, "converted with --init none: Proxmox runs the program as PID 1, with nothing to reap orphans or forward signals")
	}
	if !o.DNS.Empty() {
		if m.Run.Init != "shim" {
			return c, fmt.Errorf("--dns and --searchdomain: Proxmox writes no resolv.conf into unmanaged containers, and this template has no pve-image-init to write one (converted with --init none); convert with --init auto, or put /etc/resolv.conf into the image")
		}
		env = MergeEnv(env, []string{runspec.EnvResolv + "=" + string(runspec.AppendJSONString(nil, o.DNS.ResolvConf()))})
	}
	if m.Run.Init == "shim" {
		// Proxmox's host-managed DHCP configures eth0; the shim leaves it.
		env = MergeEnv(env, []string{"PVE_IMAGE_NET=host"})
		// Proxmox's env option refuses control characters: the shim
		// takes variables that have them from one JSON-encoded variable.
		var plain, special []string
		for _, kv := range env {
			if runspec.HasControl(kv) {
				special = append(special, kv)
			} else {
				plain = append(plain, kv)
			}
		}
		if len(special) > 0 {
			env = append(plain, runspec.EnvExtraEnv+"="+jsonStrings(special))
		}
	}
	if !initCmdSafe(argv) {
		for _, a := range argv {
			if !initCmdSafe([]string{a}) {
				return c, fmt.Errorf("entrypoint argument %q: Proxmox hands the entrypoint to LXC as lxc.init.cmd, which LXC 5 splits at spaces without honouring quotes, so this argument cannot reach a template converted without pve-image-init (--init none); convert with --init auto or shim (pve-image-init takes any argv), put the command into the image, or use the image's own command", a)
			}
		}
	}
	for _, kv := range env {
		if runspec.HasControl(kv) {
			// The value may be a secret: name the variable only.
			k, _, _ := strings.Cut(kv, "=")
			return c, fmt.Errorf("env %s: Proxmox refuses control characters in env values, and this image has no pve-image-init to pass them another way", k)
		}
	}
	c.Options["entrypoint"] = strings.Join(argv, " ")
	c.Options["env"] = strings.Join(env, "\x00")
	c.Options["cmode"] = "console"
	c.NetOptions = "host-managed=1"
	return c, nil
}

// initCmdSafe reports whether argv survives lxc.init.cmd, which LXC splits
// at spaces without honouring quotes.
func initCmdSafe(argv []string) bool {
	for _, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\") || runspec.HasControl(a) {
			return false
		}
	}
	return true
}

// jsonStrings encodes ss as a JSON array without control characters.
func jsonStrings(ss []string) string {
	b := []byte{'['}
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = runspec.AppendJSONString(b, s)
	}
	return string(append(b, ']'))
}

// MergeEnv puts over on top of base: a key in both takes over's value in
// base's place, new keys go at the end.
func MergeEnv(base, over []string) []string { return runspec.MergeEnv(base, over, nil) }

// Spec completes the create options with this config's: ostype, arch and
// features go into the create call, each NIC gets NetOptions, and
// entrypoint, env and cmode are set after creation (proxmox.ContainerSpec).
func (c PVEConfig) Spec(opts map[string]string, nets []string) proxmox.ContainerSpec {
	s := proxmox.ContainerSpec{Options: map[string]string{}, After: map[string]string{}}
	for k, v := range opts {
		s.Options[k] = v
	}
	for _, k := range []string{"ostype", "arch", "features", "nameserver", "searchdomain"} {
		if v, ok := c.Options[k]; ok {
			s.Options[k] = v
		}
	}
	for i, n := range nets {
		if c.NetOptions != "" && !strings.Contains(n, "host-managed") {
			n += "," + c.NetOptions
		}
		s.Options[fmt.Sprintf("net%d", i)] = n
	}
	for _, k := range []string{"entrypoint", "env", "cmode"} {
		if v, ok := c.Options[k]; ok {
			s.After[k] = v
		}
	}
	return s
}

// nicKeys are the options of a container NIC, net[n] (pve-container
// Config.pm $netconf_desc; proxmox.md §6).
var nicKeys = map[string]bool{"name": true, "bridge": true, "firewall": true, "gw": true, "gw6": true, "host-managed": true,
	"hwaddr": true, "ip": true, "ip6": true, "link_down": true, "mtu": true, "rate": true, "tag": true, "trunks": true, "type": true}

// maxNICs is Proxmox's MAX_LXC_NETWORKS (Config.pm L960).
const maxNICs = 32

var reMAC = regexp.MustCompile(`(?i)^[0-9a-f][02468ace](?::[0-9a-f]{2}){5}$`)

// PlanNICs checks the NICs a user asked for (run --net, each a netN value)
// and completes them for this template on Proxmox 9.1+ (native) or
// earlier, before anything is created: a missing name becomes eth<N>, and
// application containers on 9.1+ get host-managed=1, with which Proxmox
// itself applies static addresses (LXC, at start) and runs DHCP
// (proxmox-lifecycle.md §6). What cannot give the container an address is
// refused with the reason: static addresses of application containers
// before 9.1 (Proxmox then configures nothing in unmanaged containers, and
// pve-image-init only takes a DHCPv4 lease on eth0), and SLAAC on
// host-managed NICs, which Proxmox refuses.
func (m *Meta) PlanNICs(nets []string, native bool) ([]string, error) {
	if len(nets) > maxNICs {
		return nil, fmt.Errorf("%d NICs: Proxmox gives a container at most %d (net0 to net%d)", len(nets), maxNICs, maxNICs-1)
	}
	app := m.Run.Kind != "system" || m.Run.Init == "shim"
	names := map[string]int{}
	out := make([]string, 0, len(nets))
	for i, raw := range nets {
		key := fmt.Sprintf("net%d", i)
		nic := proxmox.ParseNIC(raw)
		for _, kv := range nic {
			if !nicKeys[kv.Key] {
				return nil, fmt.Errorf("--net %q (%s): unknown option %q; Proxmox's NIC options are bridge, firewall, gw, gw6, host-managed, hwaddr, ip, ip6, link_down, mtu, name, rate, tag, trunks, type", raw, key, kv.Key)
			}
		}
		if !nic.Has("name") {
			nic = append(proxmox.PropString{{Key: "name", Value: fmt.Sprintf("eth%d", i)}}, nic...)
		}
		name := nic.Get("name")
		if j, dup := names[name]; dup {
			return nil, fmt.Errorf("--net: net%d and %s are both named %q", j, key, name)
		}
		names[name] = i
		if err := checkNIC(key, raw, nic); err != nil {
			return nil, err
		}
		static := func(k string) bool { v := nic.Get(k); return v != "" && v != "dhcp" && v != "manual" && v != "auto" }
		switch {
		case !native && nic.Has("host-managed"):
			return nil, fmt.Errorf("--net %q: host-managed NICs arrived with Proxmox 9.1 (pve-container 6.0.15)", raw)
		case !app:
			// Proxmox's distribution setup applies ip, gw and DHCP.
		case native && nic.Get("host-managed") == "0" && (static("ip") || static("ip6") || nic.Get("ip") == "dhcp" || nic.Get("ip6") == "dhcp"):
			return nil, fmt.Errorf("--net %q: an application container (ostype unmanaged) gets its addresses only from host-managed NICs: Proxmox writes no network configuration into it; leave host-managed out", raw)
		case native && nic.Get("ip6") == "auto" && nic.Get("link_down") != "1":
			return nil, fmt.Errorf("--net %q: Proxmox refuses SLAAC (ip6=auto) on host-managed NICs (\"%s: SLAAC is not supported for host-managed network configuration.\"), and application containers need host-managed NICs; give ip6=dhcp or a static ip6", raw, key)
		case native && !nic.Has("host-managed"):
			nic = nic.Set("host-managed", "1")
		case !native && (static("ip") || static("ip6") || nic.Has("gw") || nic.Has("gw6")):
			return nil, fmt.Errorf("--net %q: Proxmox %s cannot give an application container a static address: before 9.1 it applies no addresses to unmanaged containers (host-managed NICs arrived with 9.1), and pve-image-init only takes a DHCP lease on eth0; use ip=dhcp, or Proxmox 9.1 or later", raw, "before 9.1")
		case !native && nic.Get("ip6") == "dhcp":
			return nil, fmt.Errorf("--net %q: before Proxmox 9.1, an application container's addresses come from pve-image-init, which takes DHCPv4 leases only; use Proxmox 9.1 or later for DHCPv6", raw)
		case !native && nic.Get("ip") == "dhcp" && name != "eth0":
			return nil, fmt.Errorf("--net %q: before Proxmox 9.1, an application container's addresses come from pve-image-init, which takes a DHCP lease on eth0 only; name this NIC eth0, or use Proxmox 9.1 or later", raw)
		}
		out = append(out, nic.String(""))
	}
	return out, nil
}

// checkNIC checks the values Proxmox's schema checks, so that a typo is
// refused before anything is uploaded or created.
func checkNIC(key, raw string, nic proxmox.NIC) error {
	bad := func(what string) error { return fmt.Errorf("--net %q (%s): %s", raw, key, what) }
	for _, kv := range nic {
		v := kv.Value
		switch kv.Key {
		case "ip":
			if v != "dhcp" && v != "manual" {
				if p, err := netip.ParsePrefix(v); err != nil || !p.Addr().Is4() {
					return bad("ip wants an IPv4 address with its prefix length (10.0.0.5/24), dhcp or manual")
				}
			}
		case "ip6":
			if v != "dhcp" && v != "manual" && v != "auto" {
				if p, err := netip.ParsePrefix(v); err != nil || !p.Addr().Is6() {
					return bad("ip6 wants an IPv6 address with its prefix length (fd00::5/64), dhcp, auto or manual")
				}
			}
		case "gw", "gw6":
			if a, err := netip.ParseAddr(v); err != nil || a.Is4() != (kv.Key == "gw") {
				return bad(kv.Key + " wants an address of its family, without a prefix length")
			}
		case "tag":
			if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 4094 {
				return bad("tag wants a VLAN ID from 1 to 4094")
			}
		case "mtu":
			if n, err := strconv.Atoi(v); err != nil || n < 64 || n > 65535 {
				return bad("mtu wants 64 to 65535")
			}
		case "rate":
			if f, err := strconv.ParseFloat(v, 64); err != nil || f < 0 {
				return bad("rate wants MB/s, a number")
			}
		case "hwaddr":
			if !reMAC.MatchString(v) {
				return bad("hwaddr wants a unicast MAC address (the first byte even), like BC:24:11:00:00:01")
			}
		case "firewall", "link_down", "host-managed":
			if v != "0" && v != "1" {
				return bad(kv.Key + " wants 0 or 1")
			}
		case "type":
			if v != "veth" {
				return bad("type can only be veth")
			}
		}
	}
	return nil
}

// VolumeOptions are the defaults for image volumes.
type VolumeOptions struct {
	// Storage and SizeGiB make a volume where the user named none.
	Storage string
	SizeGiB float64
	// MayBind says the client may create bind mount points: Proxmox
	// allows them to root@pam alone.
	MayBind bool
	// KeepAttrs asks Proxmox to give a new volume's root the owner and
	// mode of the image's directory there (mp option keepattrs,
	// pve-container 6.1.2).
	KeepAttrs bool
}

// DefaultVolumeGiB is the size of an image volume the user sized not: thin
// storages (lvmthin, zfs) and raw files on directory storages only use
// what is written.
const DefaultVolumeGiB = 8

// mpOptionKeys are the options a --volume may add ($mp_desc, Config.pm).
var mpOptionKeys = map[string]bool{"acl": true, "backup": true, "keepattrs": true, "mountoptions": true, "quota": true,
	"replicate": true, "ro": true, "shared": true}

// Volume is a mount point to create: mpN's value without the key.
type Volume struct {
	Path string
	// Value is the mpN value: STORAGE:SIZE,mp=PATH,backup=1 for a new
	// volume, HOSTPATH,mp=PATH for a bind mount.
	Value string
	// Bind is a bind mount of a host directory.
	Bind bool
	// Storage is the storage the user named for a new volume, "" when it
	// goes on VolumeOptions.Storage.
	Storage string
}

// PlanVolumes turns the image's Volumes and the user's --volume flags
// (PATH=STORAGE:SIZE, PATH=SIZE, PATH=/host/path, PATH=none, each with
// optional ",key=value" mount point options) into mount points, parents
// before children (Proxmox mounts mp0, mp1, ... in order). New volumes get
// backup=1, so that vzdump includes them (it leaves out volume mount points
// without it, proxmox-lifecycle.md §3). Proxmox mounts them before the
// template is unpacked, so a new volume starts with the image's content at
// its path; an existing one is never unpacked into again.
func (m *Meta) PlanVolumes(flags []string, o VolumeOptions) ([]Volume, error) {
	want := map[string]string{}
	for _, p := range m.Config.Volumes {
		cp, err := cleanVolumePath(p)
		if err != nil {
			return nil, fmt.Errorf("image volume %q: %w", p, err)
		}
		want[cp] = ""
	}
	given := map[string]bool{}
	for _, f := range flags {
		p, spec, ok := strings.Cut(f, "=")
		if !ok || spec == "" {
			return nil, fmt.Errorf("--volume %q: want PATH=STORAGE:SIZE, PATH=SIZE (GiB), PATH=/host/dir or PATH=none", f)
		}
		cp, err := cleanVolumePath(p)
		if err != nil {
			return nil, fmt.Errorf("--volume %q: %w", f, err)
		}
		if given[cp] {
			return nil, fmt.Errorf("--volume %q: %s is given twice", f, cp)
		}
		given[cp] = true
		want[cp] = spec
	}
	var out []Volume
	for _, p := range slices.Sorted(maps.Keys(want)) {
		spec := want[p]
		if spec == "none" {
			continue
		}
		v, err := volumeFor(p, spec, o)
		if err != nil {
			if spec == "" {
				return nil, fmt.Errorf("image volume %s: %w", p, err)
			}
			return nil, fmt.Errorf("--volume %s=%s: %w", p, spec, err)
		}
		out = append(out, v)
	}
	return out, nil
}

var reVolumeSize = regexp.MustCompile(`^\d+(\.\d+)?$`)

func volumeFor(path, spec string, o VolumeOptions) (Volume, error) {
	head, rest, _ := strings.Cut(spec, ",")
	opts := proxmox.ParsePropString(rest, "")
	for _, kv := range opts {
		if !mpOptionKeys[kv.Key] {
			return Volume{}, fmt.Errorf("unknown mount point option %q (there are acl, backup, keepattrs, mountoptions, quota, replicate, ro, shared)", kv.Key)
		}
	}
	var mp proxmox.PropString
	bind := strings.HasPrefix(head, "/")
	switch {
	case bind:
		if !o.MayBind {
			return Volume{}, errors.New("Proxmox lets only the user root@pam create bind mount points (\"mount point type bind is only allowed for root@pam\"); API tokens, even root's, cannot: log in with --pve-user root@pam --pve-password")
		}
		if strings.Contains(head, "/../") || strings.HasSuffix(head, "/..") {
			return Volume{}, errors.New("the host path may not hold .. components")
		}
		mp = proxmox.PropString{{Key: "volume", Value: head}, {Key: "mp", Value: path}}
	case head == "" && spec != "":
		return Volume{}, errors.New("nothing to mount")
	default:
		storage, size, named := o.Storage, head, ""
		if s, sz, ok := strings.Cut(head, ":"); ok {
			storage, size, named = s, sz, s
		}
		if spec == "" {
			size = strconv.FormatFloat(o.SizeGiB, 'f', -1, 64)
		}
		if !reVolumeSize.MatchString(size) {
			return Volume{}, fmt.Errorf("size %q: want GiB, a number (STORAGE:SIZE)", size)
		}
		if f, _ := strconv.ParseFloat(size, 64); f <= 0 {
			// STORAGE:0 is a plain directory on directory storages,
			// which Proxmox cannot move to another container.
			return Volume{}, errors.New("size 0: a volume needs a size (GiB), so that it can be kept across updates")
		}
		if storage == "" {
			return Volume{}, errors.New("no storage for it: give PATH=STORAGE:SIZE")
		}
		mp = proxmox.PropString{{Key: "volume", Value: storage + ":" + size}, {Key: "mp", Value: path}, {Key: "backup", Value: "1"}}
		if o.KeepAttrs {
			mp = mp.Set("keepattrs", "1")
		}
		for _, kv := range opts {
			mp = mp.Set(kv.Key, kv.Value)
		}
		return Volume{Path: path, Value: mp.String("volume"), Storage: named}, nil
	}
	for _, kv := range opts {
		mp = mp.Set(kv.Key, kv.Value)
	}
	return Volume{Path: path, Value: mp.String("volume"), Bind: bind}, nil
}

// cleanVolumePath checks a mount point path as Proxmox does
// (verify_lxc_mp_string: no . or .. components) and makes it canonical.
func cleanVolumePath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", errors.New("the path must be absolute")
	}
	for _, c := range strings.Split(p, "/") {
		if c == "." || c == ".." {
			return "", errors.New("the path may not hold . or .. components")
		}
		if strings.ContainsAny(c, ",=\n") {
			return "", errors.New("the path may not hold ',', '=' or newlines (Proxmox's property strings cannot carry them)")
		}
	}
	cp := "/" + strings.Trim(strings.Join(strings.FieldsFunc(p, func(r rune) bool { return r == '/' }), "/"), "/")
	if cp == "/" {
		return "", errors.New("/ is the root file system, not a volume")
	}
	return cp, nil
}
