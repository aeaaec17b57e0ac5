package proxmox

import (
	"context"
	"encoding/json"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// CTConfig is a container's configuration as GET .../config returns it, every
// value as the string the config file holds (numbers and booleans included).
type CTConfig map[string]string

// ReadConfig reads a container's configuration as strings.
func (c *Client) ReadConfig(ctx context.Context, node string, vmid int) (CTConfig, error) {
	var raw map[string]json.RawMessage
	if err := c.get(ctx, ctPath(node, vmid, "/config"), &raw); err != nil {
		return nil, err
	}
	cfg := CTConfig{}
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			cfg[k] = s
			continue
		}
		var n json.Number
		if json.Unmarshal(v, &n) == nil {
			cfg[k] = n.String()
			continue
		}
		// Raw lxc.* keys come as a list of [key, value] pairs; kept as
		// JSON so that callers can tell that there are some.
		cfg[k] = string(v)
	}
	return cfg, nil
}

// KV is one key=value of a Proxmox property string, in its place.
type KV struct{ Key, Value string }

// PropString is a Proxmox property string (net0, mp0, rootfs, features):
// comma-separated key=value pairs, where the default key may stand bare
// first (the volume of a mount point).
type PropString []KV

// ParsePropString splits s; a pair without "=" is defaultKey's value.
func ParsePropString(s, defaultKey string) PropString {
	var out PropString
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			k, v = defaultKey, part
		}
		out = append(out, KV{strings.TrimSpace(k), v})
	}
	return out
}

// Get is key's value, "" when unset.
func (p PropString) Get(key string) string {
	for _, kv := range p {
		if kv.Key == key {
			return kv.Value
		}
	}
	return ""
}

// Has reports whether key is set.
func (p PropString) Has(key string) bool {
	for _, kv := range p {
		if kv.Key == key {
			return true
		}
	}
	return false
}

// Set replaces key's value in its place, or adds it at the end.
func (p PropString) Set(key, value string) PropString {
	for i, kv := range p {
		if kv.Key == key {
			out := append(PropString{}, p...)
			out[i].Value = value
			return out
		}
	}
	return append(append(PropString{}, p...), KV{key, value})
}

// Delete leaves key out.
func (p PropString) Delete(key string) PropString {
	var out PropString
	for _, kv := range p {
		if kv.Key != key {
			out = append(out, kv)
		}
	}
	return out
}

// String joins the pairs; defaultKey's value goes bare when it is first.
func (p PropString) String(defaultKey string) string {
	parts := make([]string, 0, len(p))
	for i, kv := range p {
		if i == 0 && kv.Key == defaultKey && defaultKey != "" {
			parts = append(parts, kv.Value)
			continue
		}
		parts = append(parts, kv.Key+"="+kv.Value)
	}
	return strings.Join(parts, ",")
}

// MountPoint is rootfs, an mpN or an unusedN of a container's config.
type MountPoint struct {
	Key  string
	Opts PropString // volume first
}

// ParseMountPoint reads a config value; unusedN values are a bare volume.
func ParseMountPoint(key, value string) MountPoint {
	return MountPoint{Key: key, Opts: ParsePropString(value, "volume")}
}

// Volume is the volume ID, or the host path of a bind or device mount.
func (m MountPoint) Volume() string { return m.Opts.Get("volume") }

// Path is where it is mounted in the container ("/" for rootfs).
func (m MountPoint) Path() string {
	if m.Key == "rootfs" {
		return "/"
	}
	return m.Opts.Get("mp")
}

// Kind is Proxmox's classify_mountpoint (pve-container CTConfig.pm): a path
// is a bind mount, under /dev/ a device mount; anything else a volume.
func (m MountPoint) Kind() string {
	v := m.Volume()
	switch {
	case strings.HasPrefix(v, "/dev/"):
		return "device"
	case strings.HasPrefix(v, "/"):
		return "bind"
	}
	return "volume"
}

// Storage is a volume's storage ID.
func (m MountPoint) Storage() string {
	s, _, _ := strings.Cut(m.Volume(), ":")
	return s
}

// SizeGiB is the size option in GiB, rounded up; 0 when there is none.
func (m MountPoint) SizeGiB() int {
	b := ParseSize(m.Opts.Get("size"))
	if b <= 0 {
		return 0
	}
	return int((b + (1 << 30) - 1) >> 30)
}

// String is the config value.
func (m MountPoint) String() string { return m.Opts.String("volume") }

var sizeRe = regexp.MustCompile(`^(\d+(?:\.\d+)?)([KMGT]?)(?:iB)?$`)

// ParseSize reads Proxmox's disk sizes (8G, 512M, 1.5T, bytes); -1 when it
// does not parse.
func ParseSize(s string) int64 {
	m := sizeRe.FindStringSubmatch(s)
	if m == nil {
		return -1
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	mult := map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m[2]]
	return int64(f * mult)
}

var indexed = regexp.MustCompile(`^(mp|unused|net)(\d+)$`)

// Indexed lists the keys prefix0..prefixN of the config (mp, unused, net)
// in number order.
func (cfg CTConfig) Indexed(prefix string) []string {
	type kn struct {
		k string
		n int
	}
	var keys []kn
	for k := range cfg {
		if m := indexed.FindStringSubmatch(k); m != nil && m[1] == prefix {
			n, _ := strconv.Atoi(m[2])
			keys = append(keys, kn{k, n})
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].n < keys[j].n })
	out := make([]string, len(keys))
	for i, x := range keys {
		out[i] = x.k
	}
	return out
}

// MountPoints are the mpN entries, by number.
func (cfg CTConfig) MountPoints() []MountPoint {
	var out []MountPoint
	for _, k := range cfg.Indexed("mp") {
		out = append(out, ParseMountPoint(k, cfg[k]))
	}
	return out
}

// FreeKey is the lowest prefixN not in cfg nor in taken.
func (cfg CTConfig) FreeKey(prefix string, taken map[string]bool) string {
	for i := 0; ; i++ {
		k := prefix + strconv.Itoa(i)
		if _, ok := cfg[k]; !ok && !taken[k] {
			return k
		}
	}
}

// VolumeOwner is the VMID a volume name says owns it: vm-<vmid>-disk-N,
// subvol-<vmid>-disk-N, <vmid>/vm-<vmid>-disk-N.raw (pve-storage's
// parse_volname); 0 when the name says none.
func VolumeOwner(volid string) int {
	_, name, ok := strings.Cut(volid, ":")
	if !ok {
		return 0
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	m := ownerRe.FindStringSubmatch(name)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

var ownerRe = regexp.MustCompile(`^(?:vm|subvol|base|basevol)-(\d+)-`)

// NIC is a netN value.
type NIC = PropString

// ParseNIC reads a netN value.
func ParseNIC(s string) NIC { return ParsePropString(s, "") }

// Locked is the config's lock, "" when there is none.
func (cfg CTConfig) Locked() string { return cfg["lock"] }
