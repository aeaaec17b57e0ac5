package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pve-image/pve-image/export"
	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/template"
)

// RestoreRequest is a container to make from an exported image.
type RestoreRequest struct {
	Image string
	// Node is the node, or Auto.
	Node string
	VMID int // 0: the cluster's next free one
	// RootfsStorage holds the root disk and the volumes; "" takes the
	// node's first storage for container directories.
	RootfsStorage string
	// Start starts the container and waits until it runs.
	Start bool
	// HostConfig makes again what reaches into the host: bind mounts
	// and every recorded feature (root@pam only, as Proxmox allows).
	// Without it an image's labels cannot ask for them: any image can
	// say mp0=/,mp=/host. Only nesting, which any user may set, is
	// applied then.
	HostConfig bool
}

// waitRunning bounds the wait for a started container to run, as Launch's.
const waitRunning = time.Minute

// afterKeys are the recorded config keys run does not set, set on the
// new container before it starts.
var afterKeys = []string{"swap", "cpulimit", "cpuunits", "onboot", "startup", "tags", "timezone"}

// Restore makes a container from an image pve-image export made, with the
// configuration it recorded: hostname, memory, cores, NICs (new MAC
// addresses), DNS, the mount points (volumes made anew, filled with the
// data the image holds at their paths), the root disk's size, then swap,
// features and the rest. Bind mounts and features other than nesting are
// made only with r.HostConfig (see there). It goes through Run: the image is converted,
// placed, pushed and created as run does, and the container records the
// image for update. An image export did not make is run as run runs it.
func (m *Manager) Restore(ctx context.Context, r RestoreRequest) (*RunResult, error) {
	t, err := m.Template(ctx, r.Image)
	if err != nil {
		return nil, err
	}
	rec, exported, err := export.ReadRecorded(t.Meta.Config.Labels)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", r.Image, err)
	}
	run := RunRequest{Image: r.Image, Node: r.Node, VMID: r.VMID, Start: r.Start}
	gib := rootfsGiB(t.Meta.RootfsSize)
	if !exported {
		if r.RootfsStorage != "" {
			run.Rootfs = fmt.Sprintf("%s:%d", r.RootfsStorage, gib)
		}
		return m.Run(ctx, run)
	}

	c := rec.Config
	run.Hostname = c["hostname"]
	if n, err := strconv.Atoi(c["memory"]); err == nil {
		run.MemoryMiB = n
	}
	if n, err := strconv.Atoi(c["cores"]); err == nil {
		run.Cores = n
	}
	run.Nets = rec.Nets
	run.DNS = rec.DNS
	if rec.DNS.Empty() && (c["nameserver"] != "" || c["searchdomain"] != "") {
		run.DNS = template.DNS{Servers: strings.Fields(c["nameserver"]), Search: strings.Fields(c["searchdomain"])}
	}
	if s := proxmox.ParseSize(c["rootfs.size"]); s > 0 {
		gib = max(gib, int((s+(1<<30)-1)>>30))
	}
	// With --node auto the storage is known once placed: Run takes the
	// recorded size as the least.
	run.MinRootfsGiB = gib
	storage := r.RootfsStorage
	if storage == "" && r.Node != Auto {
		if storage, err = m.rootdirStorage(ctx, r.Node); err != nil {
			return nil, err
		}
	}
	if storage != "" {
		run.Rootfs = fmt.Sprintf("%s:%d", storage, gib)
	}
	if run.Volumes, err = m.restoreVolumes(&t.Meta, rec, r.HostConfig); err != nil {
		return nil, fmt.Errorf("image %s: %w", r.Image, err)
	}

	after := map[string]string{}
	for _, k := range afterKeys {
		if v := c[k]; v != "" {
			after[k] = v
		}
	}
	if f, err := m.restoreFeatures(c["features"], r.HostConfig); err != nil {
		return nil, fmt.Errorf("image %s: %w", r.Image, err)
	} else if f != "" {
		after["features"] = f
	}
	if len(after) == 0 {
		return m.Run(ctx, run)
	}
	run.Start = false
	res, err := m.Run(ctx, run)
	if err != nil {
		return res, err
	}
	// run set what the image needs (nesting for systemd): kept.
	cfg, err := m.PVE.ReadConfig(ctx, res.Node, res.VMID)
	if err == nil {
		if f, ok := after["features"]; ok {
			after["features"] = mergeFeatures(f, cfg["features"])
		}
		err = m.PVE.SetContainerConfig(ctx, res.Node, res.VMID, after)
	}
	if err != nil {
		keys := slices.Sorted(maps.Keys(after))
		if derr := m.PVE.DestroyContainer(ctx, res.Node, res.VMID, true); derr != nil {
			return res, fmt.Errorf("set %s on the new CT %d: %w; removing it failed too: %v", strings.Join(keys, ", "), res.VMID, err, derr)
		}
		return nil, fmt.Errorf("set %s on the new CT %d: %w (it was removed again)", strings.Join(keys, ", "), res.VMID, err)
	}
	if r.Start {
		if err := m.PVE.StartContainer(ctx, res.Node, res.VMID); err != nil {
			return res, fmt.Errorf("start container %d: %w", res.VMID, err)
		}
		if err := m.PVE.WaitRunning(ctx, res.Node, res.VMID, waitRunning); err != nil {
			return res, err
		}
	}
	return res, nil
}

// restoreFeatures are the recorded features the restored container gets:
// with hostConfig all of them (root@pam only: Proxmox lets no one else set
// any but nesting), else nesting only, a note saying what was left out.
func (m *Manager) restoreFeatures(recorded string, hostConfig bool) (string, error) {
	var keep proxmox.PropString
	var left []string
	for _, kv := range proxmox.ParsePropString(recorded, "") {
		switch {
		case kv.Key == "nesting":
			keep = keep.Set(kv.Key, kv.Value)
		case kv.Value == "" || kv.Value == "0":
			// Off, as a new container has it.
		case !hostConfig:
			left = append(left, kv.Key+"="+kv.Value)
		case !m.PVE.MayBindMount():
			return "", fmt.Errorf("--host-config: the image records feature %s=%s, which only root@pam may set: log in with --pve-user root@pam (an API token does not count)", kv.Key, kv.Value)
		default:
			keep = keep.Set(kv.Key, kv.Value)
		}
	}
	if len(left) > 0 {
		m.say("note: the image records features %s, which reach into the host: not set (give --host-config, as root@pam, to set them)", strings.Join(left, ","))
	}
	return keep.String(""), nil
}

// restoreVolumes are run's --volume flags for the recorded mount points:
// each volume anew, sized and with its options, on the root disk's
// storage; bind mounts again only with hostConfig (and root@pam), else
// left out with a note; the image's own volumes the container did not
// mount, left out again.
func (m *Manager) restoreVolumes(meta *template.Meta, rec *export.Recorded, hostConfig bool) ([]string, error) {
	var flags []string
	have := map[string]bool{}
	for _, rm := range rec.Mounts {
		mp := rm.MountPoint()
		p := mp.Path()
		if p == "" {
			return nil, fmt.Errorf("recorded mount point %s (%s) has no path", rm.Key, rm.Value)
		}
		have[strings.TrimRight(p, "/")] = true
		var opts []string
		for _, kv := range mp.Opts {
			switch kv.Key {
			case "volume", "mp", "size":
			default:
				opts = append(opts, kv.Key+"="+kv.Value)
			}
		}
		suffix := ""
		if len(opts) > 0 {
			suffix = "," + strings.Join(opts, ",")
		}
		switch mp.Kind() {
		case "volume":
			gib := mp.SizeGiB()
			if gib == 0 {
				gib = template.DefaultVolumeGiB
			}
			flags = append(flags, fmt.Sprintf("%s=%d%s", p, gib, suffix))
		case "bind":
			switch {
			case !hostConfig:
				m.say("note: %s, a bind mount of the host's %s at %s, is not made again: give --host-config (as root@pam) to make it", rm.Key, mp.Volume(), p)
				flags = append(flags, p+"=none")
			case !m.PVE.MayBindMount():
				return nil, fmt.Errorf("--host-config: the image records %s, a bind mount of the host's %s at %s, which only root@pam may create: log in with --pve-user root@pam (an API token does not count)", rm.Key, mp.Volume(), p)
			default:
				flags = append(flags, p+"="+mp.Volume()+suffix)
			}
		default:
			m.say("note: %s, a device mount of %s at %s, is not made again", rm.Key, mp.Volume(), p)
			flags = append(flags, p+"=none")
		}
	}
	for _, v := range meta.Config.Volumes {
		if p := strings.TrimRight(v, "/"); !have[p] {
			// The container had no mount point there (run --volume
			// PATH=none): neither does the restored one.
			flags = append(flags, p+"=none")
		}
	}
	return flags, nil
}

// rootdirStorage is the node's first active storage for container
// directories, where RootfsFor puts root disks.
func (m *Manager) rootdirStorage(ctx context.Context, node string) (string, error) {
	sts, err := m.PVE.Storages(ctx, node, "rootdir")
	if err != nil {
		return "", err
	}
	for _, s := range sts {
		if s.Holds("rootdir") && s.Active != 0 {
			return s.Name, nil
		}
	}
	return "", errors.New("node " + node + " has no active storage for container root disks (content rootdir); name one with --rootfs-storage")
}
