package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/imgconv"
	"github.com/pve-image/pve-image/imgconv/runspec"
	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// origin is the image a container was made from, as far as it can be
// trusted. The container's root owns /etc/pve-image/image.json and may
// write anything into it; what that file names would be pulled with the
// exporter's credentials and mounted into the destination repository
// (a private image's blobs into a public one). So the source is the
// record pve-image run keeps in the container's Proxmox config (its
// description), which the container cannot write, and image.json must
// agree with it: then it says how the template was converted.
type origin struct {
	// ref is REPOSITORY@sha256:..., from the record.
	ref string
	// meta is image.json.
	meta *template.Meta
}

// originOf decides where a container came from. It returns nil, and why
// not (a note for the user; "" when the container never was pve-image's),
// when the exported image cannot start from the source's layers.
func originOf(rootfs *imgconv.Rootfs, rec *runRecord, insecure []string) (*origin, string) {
	const one = "the image is one layer of the whole root file system"
	raw, ok := rootfs.ReadFile(template.MetaPath)
	if !ok {
		if rec != nil && rec.Image != "" {
			return nil, fmt.Sprintf("the container's Proxmox record says it was made from %s, but it has no /%s: %s", rec.Image, template.MetaPath, one)
		}
		return nil, ""
	}
	var m template.Meta
	err := json.Unmarshal(raw, &m)
	if err == nil && (m.Repository == "" || m.ManifestDigest == "") {
		err = errors.New("it names no image")
	}
	if err != nil {
		return nil, fmt.Sprintf("the container's /%s does not name the image it was made from (%v): %s", template.MetaPath, err, one)
	}
	claimed := m.Repository + "@" + m.ManifestDigest
	if rec == nil || rec.Image == "" || rec.Digest == "" {
		return nil, fmt.Sprintf("the container's /%s names %s, but its Proxmox config holds no pve-image record "+
			"(the description line pve-image run writes, which the container cannot change) to confirm it: %s, and nothing of %s is fetched",
			template.MetaPath, claimed, one, m.Repository)
	}
	r, err := registry.ParseReference(rec.Image, insecure)
	if err != nil || r.Transport != registry.Docker {
		return nil, fmt.Sprintf("the container was made from %s, not an image in a registry: %s", rec.Image, one)
	}
	recorded := r.Repository() + "@" + rec.Digest
	if recorded != claimed {
		return nil, fmt.Sprintf("the container's /%s names %s, but its Proxmox record (which the container cannot change) says it was made from %s: "+
			"%s, and nothing of %s is fetched", template.MetaPath, claimed, recorded, one, m.Repository)
	}
	return &origin{ref: recorded, meta: &m}, ""
}

// singleProgram is where the program of a one-layer image starts from:
// the source image's config when the origin is trusted (image.json holds
// it), else the spec of pve-image's init shim when the container runs it,
// else nothing (a system container boots /sbin/init: Cmd says so). The
// shim's /sbin/init is never the command: it is pve-image's, and a
// conversion of the image puts it back.
// runSpec is the archive's runspec.Path, nil when none.
func singleProgram(rootfs *imgconv.Rootfs, runSpec []byte, o *origin) (seed *v1.Config, cmd []string, note string) {
	shim := rootfs.Exists(strings.TrimPrefix(runspec.InitPath, "/"))
	switch {
	case o != nil:
		c := o.meta.Config
		seed = &v1.Config{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, User: c.User, WorkingDir: c.WorkingDir,
			StopSignal: c.StopSignal, Labels: c.Labels}
		for _, v := range c.Volumes {
			if seed.Volumes == nil {
				seed.Volumes = map[string]struct{}{}
			}
			seed.Volumes[v] = struct{}{}
		}
		for _, p := range c.ExposedPorts {
			if seed.ExposedPorts == nil {
				seed.ExposedPorts = map[string]struct{}{}
			}
			seed.ExposedPorts[p] = struct{}{}
		}
	case shim:
		var spec *runspec.Spec
		err := errors.New("missing")
		if runSpec != nil {
			spec, err = runspec.Parse(runSpec)
		}
		if err != nil || len(spec.Args) == 0 {
			return nil, nil, fmt.Sprintf("the container runs pve-image's init shim, and what it runs is not known (%s is missing or unreadable): the image has no command", runspec.Path)
		}
		seed = &v1.Config{Entrypoint: spec.Args, Env: spec.Env, WorkingDir: spec.WorkingDir, User: spec.User}
	}
	if (seed == nil || len(seed.Entrypoint)+len(seed.Cmd) == 0) && !shim && rootfs.Exists("sbin/init") {
		// Proxmox boots /sbin/init where the config names no
		// entrypoint: a system container.
		cmd = []string{"/sbin/init"}
	}
	return seed, cmd, ""
}
