package template

import (
	"fmt"
	"strings"

	"github.com/pve-image/pve-image/imgconv/runspec"
	"github.com/pve-image/pve-image/proxmox"
)

// Overrides are what a user sets over the image's run config when creating
// a container (run --env, --entrypoint).
type Overrides struct {
	Env        []string // KEY=value, replacing or adding to the image's
	Entrypoint []string // replaces Entrypoint and Cmd
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
		return c, nil
	}
	if !native {
		if len(o.Env) > 0 || len(o.Entrypoint) > 0 {
			return c, fmt.Errorf("Proxmox before 9.1 has no entrypoint or env options for containers: --env and --entrypoint need Proxmox 9.1 or later")
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
	for _, k := range []string{"ostype", "arch", "features"} {
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
