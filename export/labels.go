package export

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/template"
)

// The labels an exported image's config carries: the container's Proxmox
// configuration, for restore and for whoever inspects the image. Values are
// Proxmox's own (pct.conf) unless said otherwise.
const (
	// LabelPrefix starts every label of this package; labels of an earlier
	// export in the source image's config are dropped.
	LabelPrefix = "io.github.pve-image.export."
	// LabelVersion marks an exported image ("1").
	LabelVersion = LabelPrefix + "version"
	// LabelSource is the image the container was made from,
	// REPOSITORY@sha256:..., whose layers are the exported image's first
	// ones; absent when the image is one layer.
	LabelSource = LabelPrefix + "source"
	// LabelConfig + KEY is a key of the container's config: memory, swap,
	// cores, cpulimit, cpuunits, hostname, features, onboot, startup,
	// tags, timezone, nameserver, searchdomain, ostype, arch,
	// unprivileged (configKeys), and rootfs.size, the root disk's size.
	LabelConfig = LabelPrefix + "config."
	// LabelNet + N is netN without its MAC address (hwaddr): a restored
	// container gets its own.
	LabelNet = LabelPrefix + "net"
	// LabelMount + N is mpN without its volume ID (mp=PATH,size=8G,
	// backup=1,...); a bind mount keeps its host path
	// (/srv/x,mp=PATH,...).
	LabelMount = LabelPrefix + "mp"
	// LabelMount + N + LabelLayerSuffix is the diff ID of the layer that
	// holds that volume's data (export --volumes).
	LabelLayerSuffix = ".layer"
	// LabelDNS + servers|search are run's --dns and --searchdomain, from
	// the container's record, space-separated.
	LabelDNS = LabelPrefix + "dns."
)

// configKeys are the config keys recorded as they are.
var configKeys = []string{"memory", "swap", "cores", "cpulimit", "cpuunits", "hostname", "features", "onboot", "startup",
	"tags", "timezone", "nameserver", "searchdomain", "ostype", "arch", "unprivileged"}

// Recorded is the container configuration an exported image carries.
type Recorded struct {
	// Source is the image the container was made from, "" when the
	// exported image is one layer.
	Source string
	// Config holds the configKeys the container had, and rootfs.size.
	Config map[string]string
	// Nets are net0, net1, ... without MAC addresses, in order.
	Nets []string
	// Mounts are the mount points, by number.
	Mounts []RecordedMount
	DNS    template.DNS
}

// RecordedMount is a mount point of the container.
type RecordedMount struct {
	Key string // mp0
	// Value is the mpN value without its volume ID; a bind or device
	// mount's host path stays in front.
	Value string
	// Layer is the diff ID of the layer holding its data, "" when the
	// image has none.
	Layer string
}

// MountPoint parses Value.
func (m RecordedMount) MountPoint() proxmox.MountPoint {
	if strings.HasPrefix(m.Value, "/") {
		return proxmox.ParseMountPoint(m.Key, m.Value)
	}
	return proxmox.MountPoint{Key: m.Key, Opts: proxmox.ParsePropString(m.Value, "")}
}

// Labels are r as config labels.
func (r *Recorded) Labels() map[string]string {
	l := map[string]string{LabelVersion: "1"}
	if r.Source != "" {
		l[LabelSource] = r.Source
	}
	for k, v := range r.Config {
		l[LabelConfig+k] = v
	}
	for i, n := range r.Nets {
		l[LabelNet+strconv.Itoa(i)] = n
	}
	for _, m := range r.Mounts {
		n := strings.TrimPrefix(m.Key, "mp")
		l[LabelMount+n] = m.Value
		if m.Layer != "" {
			l[LabelMount+n+LabelLayerSuffix] = m.Layer
		}
	}
	if len(r.DNS.Servers) > 0 {
		l[LabelDNS+"servers"] = strings.Join(r.DNS.Servers, " ")
	}
	if len(r.DNS.Search) > 0 {
		l[LabelDNS+"search"] = strings.Join(r.DNS.Search, " ")
	}
	return l
}

// ReadRecorded reads what an exported image's labels record; false when
// the image was not exported by pve-image.
func ReadRecorded(labels map[string]string) (*Recorded, bool, error) {
	if labels[LabelVersion] == "" {
		return nil, false, nil
	}
	if v := labels[LabelVersion]; v != "1" {
		return nil, true, fmt.Errorf("label %s=%s: exported by a newer pve-image (this one reads version 1)", LabelVersion, v)
	}
	r := &Recorded{Source: labels[LabelSource], Config: map[string]string{}}
	nets := map[int]string{}
	mounts := map[int]*RecordedMount{}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		v := labels[k]
		rest, ok := strings.CutPrefix(k, LabelPrefix)
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(k, LabelConfig):
			r.Config[strings.TrimPrefix(k, LabelConfig)] = v
		case strings.HasPrefix(k, LabelDNS):
			switch strings.TrimPrefix(k, LabelDNS) {
			case "servers":
				r.DNS.Servers = strings.Fields(v)
			case "search":
				r.DNS.Search = strings.Fields(v)
			}
		case strings.HasPrefix(rest, "net"):
			n, err := strconv.Atoi(strings.TrimPrefix(rest, "net"))
			if err != nil || n < 0 {
				return nil, true, fmt.Errorf("label %s: not netN", k)
			}
			nets[n] = v
		case strings.HasPrefix(rest, "mp"):
			num, layer := strings.CutSuffix(strings.TrimPrefix(rest, "mp"), LabelLayerSuffix)
			n, err := strconv.Atoi(num)
			if err != nil || n < 0 {
				return nil, true, fmt.Errorf("label %s: not mpN", k)
			}
			m := mounts[n]
			if m == nil {
				m = &RecordedMount{Key: "mp" + strconv.Itoa(n)}
				mounts[n] = m
			}
			if layer {
				m.Layer = v
			} else {
				m.Value = v
			}
		}
	}
	for _, n := range slices.Sorted(maps.Keys(nets)) {
		r.Nets = append(r.Nets, nets[n])
	}
	for _, n := range slices.Sorted(maps.Keys(mounts)) {
		m := mounts[n]
		if m.Value == "" {
			return nil, true, fmt.Errorf("label %s%d%s without %s%d", LabelMount, n, LabelLayerSuffix, LabelMount, n)
		}
		r.Mounts = append(r.Mounts, *m)
	}
	return r, true, nil
}

// recordConfig gathers what a container's config (pct.conf) says of it.
func recordConfig(cfg proxmox.CTConfig, rec *runRecord) *Recorded {
	r := &Recorded{Config: map[string]string{}}
	for _, k := range configKeys {
		if v := cfg[k]; v != "" {
			r.Config[k] = v
		}
	}
	if root := proxmox.ParseMountPoint("rootfs", cfg["rootfs"]); root.Opts.Get("size") != "" {
		r.Config["rootfs.size"] = root.Opts.Get("size")
	}
	for _, k := range cfg.Indexed("net") {
		r.Nets = append(r.Nets, proxmox.ParseNIC(cfg[k]).Delete("hwaddr").String(""))
	}
	for _, mp := range cfg.MountPoints() {
		v := mp.Opts
		if mp.Kind() == "volume" {
			v = v.Delete("volume")
		}
		r.Mounts = append(r.Mounts, RecordedMount{Key: mp.Key, Value: v.String("volume")})
	}
	if rec != nil {
		r.DNS = rec.DNS
	}
	return r
}
