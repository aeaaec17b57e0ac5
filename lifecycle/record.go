package lifecycle

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/pve-image/pve-image/template"
)

// recordPrefix starts the line of a container's description that holds
// its Record. The description is the one place Proxmox keeps free text with
// a container: it survives restarts, backups, restores and migrations, and
// whoever may read the container's config (VM.Audit) reads it, as they read
// its env.
const recordPrefix = "pve-image: "

// Record is what pve-image knows of a container it made: the image it runs
// and what the user set over the image's run config, so that an update can
// make the same container from another version of the image.
type Record struct {
	// Image is the reference the container was made from, as the user
	// gave it (a tag is resolved again by update); Digest the manifest it
	// resolved to.
	Image  string `json:"image"`
	Digest string `json:"digest"`
	// Env and Entrypoint are run's --env and --entrypoint; DNS the name
	// servers and search domains given (or taken from the node).
	Env        []string     `json:"env,omitempty"`
	Entrypoint []string     `json:"entrypoint,omitempty"`
	DNS        template.DNS `json:"dns,omitzero"`
	// Op is the update or rollback that made this root file system.
	Op string `json:"op,omitempty"`
	// Rollback is where `pve-image rollback` returns to, after an update.
	Rollback *RollbackPoint `json:"rollback,omitempty"`
}

// RollbackPoint is the container as it was before an update.
type RollbackPoint struct {
	// Backup is the vzdump archive of the container before the update,
	// without its volumes (they stay with the container).
	Backup string `json:"backup"`
	Image  string `json:"image"`
	Digest string `json:"digest"`
	// Volumes are the volume keys (mpN, unusedN) the container had then.
	Volumes []string `json:"volumes,omitempty"`
}

// ParseDescription splits a description into the user's text and the
// Record, nil when there is none.
func ParseDescription(desc string) (user string, rec *Record, err error) {
	var keep []string
	for _, line := range strings.Split(desc, "\n") {
		if raw, ok := strings.CutPrefix(line, recordPrefix); ok && rec == nil {
			var r Record
			if jerr := json.Unmarshal([]byte(raw), &r); jerr != nil {
				err = fmt.Errorf("the description's %q line is not pve-image's record: %w", strings.TrimSpace(recordPrefix), jerr)
				keep = append(keep, line)
				continue
			}
			rec = &r
			continue
		}
		keep = append(keep, line)
	}
	return strings.TrimRight(strings.Join(keep, "\n"), "\n"), rec, err
}

// Description is the user's text followed by the record's line.
func (r *Record) Description(user string) string {
	b, _ := json.Marshal(r)
	if user == "" {
		return recordPrefix + string(b)
	}
	return user + "\n" + recordPrefix + string(b)
}

// ImageRef is the image by its digest: repository@sha256:..., which
// resolves from the cache without asking the registry.
func (r *Record) ImageRef() string {
	name := r.Image
	if i := strings.LastIndexByte(name, '@'); i >= 0 {
		name = name[:i]
	}
	// Drop the tag: the last ':' after the last '/'.
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name = name[:i]
	}
	return name + "@" + r.Digest
}
