package export

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// Exporter makes images of containers.
type Exporter struct {
	// Builder converts the source image of a container made from a
	// pve-image template (the template is what the container's changes
	// are measured against) and holds the source image's blobs; its
	// cache's tmp/ holds the spills.
	Builder *template.Builder
	// Convert are the conversion options the container's template was
	// made with (run's): the init binary, --squash-high-ids. Its init
	// mode is taken from the template's image.json.
	Convert template.Options
	// Registry is how pushes reach registries: credentials, plain-HTTP
	// registries, retries (registry.RemoteOptions).
	Registry registry.Options
	Log      *slog.Logger
	// Out hears what is done, for people (stderr).
	Out io.Writer
}

// Request says what to export and where to.
type Request struct {
	// To is a registry reference (pushed with the credentials pulls use),
	// oci:DIR[:TAG] or oci-archive:FILE[:TAG].
	To string
	// Volumes adds the data of volume mount points with backup=1, one
	// layer each.
	Volumes bool
	// SingleLayer exports the whole root file system as one layer even
	// when the container came from a pve-image template.
	SingleLayer bool
}

// Result is what an export made.
type Result struct {
	// Digest is the image's manifest digest.
	Digest string
	To     string
	// Source is the image whose layers the exported image starts with,
	// REPOSITORY@sha256:...; "" when it is one layer (and volumes).
	Source string
	// BaseLayers is how many layers come from Source.
	BaseLayers int
	// Layers are the layers the export made.
	Layers []LayerInfo
	// Notes say what was left out, and why.
	Notes []string
}

// LayerInfo describes a layer the export made.
type LayerInfo struct {
	What   string // "changes", "root file system", "volume mp0 (/data)"
	Digest string
	Size   int64
	// Entries counts its members.
	Entries int
}

func (e *Exporter) say(format string, args ...any) {
	if e.Out != nil {
		fmt.Fprintf(e.Out, format+"\n", args...)
	}
}

func (e *Exporter) tempDir() string {
	if e.Builder != nil && e.Builder.Cache != nil {
		return e.Builder.Cache.TempDir()
	}
	return ""
}

// Archive exports the vzdump archive at path. Nothing is written at the
// destination unless everything before succeeded; a registry may keep
// the blobs of a push that failed halfway, as after any failed push.
func (e *Exporter) Archive(ctx context.Context, path string, r Request) (*Result, error) {
	dest, err := e.checkDestination(r.To)
	if err != nil {
		return nil, err
	}
	name := path
	if err := checkName(filepath.Base(path)); err != nil {
		return nil, archiveError(name, "", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, archiveError(name, "", fmt.Errorf("a directory, not a vzdump archive"))
	}
	tempDir := e.tempDir()
	t, err := readArchive(ctx, name, f, readOptions{TempDir: tempDir, Volumes: r.Volumes, SquashHighIDs: e.Convert.SquashHighIDs,
		MaxSize: e.Convert.MaxSize, MaxEntries: e.Convert.MaxEntries})
	if err != nil {
		return nil, err
	}
	defer t.Close()
	res := &Result{To: r.To}
	cfg := t.conf.cfg
	created := t.conf.mtime
	rec := readRecord(cfg["description"])
	prog := programOf(cfg, rec)
	recorded := recordConfig(cfg, rec)
	host := cfg["hostname"]
	if host == "" {
		host = "?"
	}

	o, why := originOf(t.rootfs, rec, e.Registry.Insecure)
	if why != "" && !r.SingleLayer {
		res.Notes = append(res.Notes, why)
	}

	var b *base
	var seed *v1.Config
	var added []newLayer
	var mounts []string
	for _, m := range t.mounts {
		mounts = append(mounts, m.path)
	}
	if o != nil && !r.SingleLayer {
		bl, done, err := e.withSource(ctx, o, &b)
		if err != nil {
			return nil, err
		}
		defer done()
		sf, err := tempFile(tempDir)
		if err != nil {
			return nil, err
		}
		defer sf.Close()
		c := &changes{base: bl, mounts: mounts, spill: &spill{f: sf}}
		if err := c.scan(ctx, t.rootfs); err != nil {
			return nil, archiveError(name, "", err)
		}
		entries, err := c.plan()
		if err != nil {
			return nil, archiveError(name, "", err)
		}
		l, err := writeLayer(tempDir, "", func(w io.Writer) error { return c.writeLayer(w, entries, created) })
		if err != nil {
			return nil, archiveError(name, "", err)
		}
		defer l.Close()
		added = append(added, newLayer{layer: l, history: v1.History{CreatedBy: "pve-image export of container " + host,
			Comment: "what the container changed since it was made from " + b.name}})
		res.Layers = append(res.Layers, LayerInfo{What: "changes", Digest: l.digest.String(), Size: l.size, Entries: len(entries)})
		res.Source, res.BaseLayers = b.name, len(b.layers)
		recorded.Source = b.name
	} else {
		var note string
		seed, prog.Cmd, note = singleProgram(t.rootfs, t.runSpec, o)
		if note != "" {
			res.Notes = append(res.Notes, note)
		}
		n := 0
		l, err := writeLayer(tempDir, "", func(w io.Writer) error {
			var err error
			n, err = writeRootfs(ctx, t.rootfs, w, mounts, tempDir)
			return err
		})
		if err != nil {
			return nil, archiveError(name, "", err)
		}
		defer l.Close()
		added = append(added, newLayer{layer: l, history: v1.History{CreatedBy: "pve-image export of container " + host,
			Comment: "its root file system"}})
		res.Layers = append(res.Layers, LayerInfo{What: "root file system", Digest: l.digest.String(), Size: l.size, Entries: n})
	}

	// Volume layers go shallowest first: a volume's layer hides what is
	// below its mount point (an opaque marker), a volume mounted inside it
	// included, whose layer must come after. (t.mounts is deepest first,
	// for routing the archive's members.)
	byDepth := slices.Clone(t.mounts)
	slices.SortStableFunc(byDepth, func(a, b *mount) int {
		if c := cmp.Compare(strings.Count(a.path, "/"), strings.Count(b.path, "/")); c != 0 {
			return c
		}
		return compareTree(a.path, b.path)
	})
	for _, m := range byDepth {
		switch {
		case m.rootfs != nil:
			n := 0
			l, err := writeLayer(tempDir, "", func(w io.Writer) error {
				var err error
				n, err = writeVolume(ctx, m, w, created, tempDir)
				return err
			})
			if err != nil {
				return nil, archiveError(name, "", fmt.Errorf("volume %s (/%s): %w", m.mp.Key, m.path, err))
			}
			defer l.Close()
			what := fmt.Sprintf("volume %s (/%s)", m.mp.Key, m.path)
			added = append(added, newLayer{layer: l, history: v1.History{CreatedBy: "pve-image export of container " + host, Comment: what}})
			res.Layers = append(res.Layers, LayerInfo{What: what, Digest: l.digest.String(), Size: l.size, Entries: n})
			for i := range recorded.Mounts {
				if recorded.Mounts[i].Key == m.mp.Key {
					recorded.Mounts[i].Layer = l.diff.String()
				}
			}
		case m.archived && m.members > 0:
			res.Notes = append(res.Notes, fmt.Sprintf("the data of volume %s (/%s) is in the archive but not in the image: give --volumes to add it as a layer", m.mp.Key, m.path))
		case m.mp.Kind() != "volume":
			res.Notes = append(res.Notes, fmt.Sprintf("%s is a %s mount of %s at /%s: recorded in the image's labels (restore makes it again only with --host-config), its data is not in the image", m.mp.Key, m.mp.Kind(), m.mp.Volume(), m.path))
		case !m.archived && b != nil:
			res.Notes = append(res.Notes, fmt.Sprintf("volume %s (/%s) has backup=0: vzdump left its data out; it is recorded, and restore makes it anew holding what the source image has at /%s", m.mp.Key, m.path, m.path))
		case !m.archived:
			res.Notes = append(res.Notes, fmt.Sprintf("volume %s (/%s) has backup=0: vzdump left its data out; it is recorded, and restore makes it anew and empty", m.mp.Key, m.path))
		}
	}
	if t.acls > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("the POSIX ACLs of %d members were left out: images and pve-image templates carry none", t.acls))
	}
	if t.conf.firewall {
		res.Notes = append(res.Notes, "the container's firewall rules (pct.fw) are not part of the image")
	}
	if cfg["lxc"] != "" {
		res.Notes = append(res.Notes, "raw lxc.* keys of the container's config are not recorded")
	}

	ei, err := buildImage(b, seed, added, prog, recorded, created, cfg["arch"])
	if err != nil {
		return nil, err
	}
	img, err := newPushImage(ei)
	if err != nil {
		return nil, err
	}
	digest, err := e.write(ctx, dest, img, created)
	if err != nil {
		return nil, err
	}
	res.Digest = digest.String()
	return res, nil
}

// withSource finds the source image into *b and reads its template.
func (e *Exporter) withSource(ctx context.Context, o *origin, b **base) (baseline, func(), error) {
	src, bl, done, err := e.source(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	*b = src
	return bl, done, nil
}
