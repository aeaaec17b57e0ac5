package export

import (
	"encoding/json"
	"strings"

	"github.com/pve-image/pve-image/imgconv/runspec"
	"github.com/pve-image/pve-image/template"
)

// runRecord is what export reads of the record pve-image run keeps in a
// container's description: the line "pve-image: {json}" that
// lifecycle.Record writes (lifecycle/record.go owns the format; export
// cannot import lifecycle, which imports export for restore).
type runRecord struct {
	Image      string       `json:"image"`
	Digest     string       `json:"digest"`
	Env        []string     `json:"env,omitempty"`
	Entrypoint []string     `json:"entrypoint,omitempty"`
	DNS        template.DNS `json:"dns,omitzero"`
}

// recordPrefix starts the record's line (lifecycle.recordPrefix).
const recordPrefix = "pve-image: "

// readRecord finds the record in a description; nil when there is none
// (or it does not parse: then the container's config keys say the rest).
func readRecord(desc string) *runRecord {
	for _, line := range strings.Split(desc, "\n") {
		raw, ok := strings.CutPrefix(line, recordPrefix)
		if !ok {
			continue
		}
		var r runRecord
		if json.Unmarshal([]byte(raw), &r) == nil {
			return &r
		}
	}
	return nil
}

// program is what a container runs beyond its image's config.
type program struct {
	Entrypoint []string // replaces Entrypoint and Cmd when set
	Env        []string // over the image's
	WorkingDir string
	User       string
	// Cmd is the command when the image config has none (one layer of a
	// system container: /sbin/init).
	Cmd []string
}

// programOf reads what the container runs over its image: run's --env
// and --entrypoint from the record, else the entrypoint and env keys of
// the config (Proxmox 9.1's, set by hand or by its own OCI import), and
// the raw lxc.init.cwd and lxc.init.uid/gid Proxmox's import sets for
// WorkingDir and User.
func programOf(cfg map[string]string, rec *runRecord) program {
	var p program
	if rec != nil {
		p.Entrypoint, p.Env = rec.Entrypoint, rec.Env
		return p
	}
	env := cfg["env"]
	var vars []string
	for _, kv := range strings.Split(env, "\x00") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == runspec.EnvArgv:
			var argv []string
			if json.Unmarshal([]byte(v), &argv) == nil && len(argv) > 0 {
				p.Entrypoint = argv
			}
		case k == runspec.EnvExtraEnv:
			var more []string
			if json.Unmarshal([]byte(v), &more) == nil {
				vars = append(vars, more...)
			}
		case strings.HasPrefix(k, "PVE_IMAGE_"):
			// pve-image's runtime's word to pve-image-init, not the
			// program's.
		default:
			vars = append(vars, kv)
		}
	}
	p.Env = vars
	if ep := strings.Fields(cfg["entrypoint"]); len(ep) > 0 && p.Entrypoint == nil {
		switch {
		case ep[0] == runspec.InitPath && len(ep) > 2 && ep[1] == "--":
			p.Entrypoint = ep[2:]
		case ep[0] == runspec.InitPath, ep[0] == "/sbin/init":
			// pve-image-init runs the image's program; /sbin/init boots.
		default:
			// LXC splits lxc.init.cmd at spaces (lxc.md), as here.
			p.Entrypoint = ep
		}
	}
	for _, line := range strings.Split(cfg["lxc"], "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "lxc.init.cwd":
			p.WorkingDir = v
		case "lxc.init.uid":
			p.User = v + p.User
		case "lxc.init.gid":
			p.User += ":" + v
		}
	}
	if strings.HasPrefix(p.User, ":") {
		p.User = "" // a group without a user says nothing Docker's USER can
	}
	return p
}
