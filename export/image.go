package export

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/template"
)

// newLayer is a layer this export adds, with its history entry.
type newLayer struct {
	layer   *fileLayer
	history v1.History
}

// exportImage is the exported image: its manifest and config as written
// here, byte for byte, and its layers — the source image's as they are
// (go-containerregistry pushes them by mount when they are
// *remote.MountableLayer), then the new ones.
type exportImage struct {
	manifest, config []byte
	mt               types.MediaType
	layers           map[v1.Hash]v1.Layer
	order            []v1.Layer
}

func (i *exportImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *exportImage) MediaType() (types.MediaType, error) { return i.mt, nil }
func (i *exportImage) RawManifest() ([]byte, error)        { return i.manifest, nil }
func (i *exportImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("the exported image has no layer %s", h)
}

// pushImage is the exported image as a v1.Image whose layers are the ones
// given, not go-containerregistry's wrappers of them: remote.Write mounts
// a layer only when it is a *remote.MountableLayer itself, and
// partial.CompressedToImage wraps every layer it hands out.
type pushImage struct {
	v1.Image
	core *exportImage
}

func newPushImage(core *exportImage) (*pushImage, error) {
	img, err := partial.CompressedToImage(core)
	if err != nil {
		return nil, err
	}
	return &pushImage{Image: img, core: core}, nil
}

func (p *pushImage) Layers() ([]v1.Layer, error) { return slices.Clone(p.core.order), nil }

func (p *pushImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if l, ok := p.core.layers[h]; ok {
		return l, nil
	}
	return p.Image.LayerByDigest(h)
}

// base is what the exported image starts from: the source image, or
// nothing.
type base struct {
	config   *v1.ConfigFile
	manifest *v1.Manifest
	mt       types.MediaType
	layers   []v1.Layer // by the manifest's order
	// name is the source image, REPOSITORY@sha256:...
	name string
}

// buildImage assembles the exported image over b (nil: none). Without a
// base, seed (nil: none) is the config the program starts from.
func buildImage(b *base, seed *v1.Config, added []newLayer, prog program, rec *Recorded, created time.Time, arch string) (*exportImage, error) {
	var cfg v1.ConfigFile
	mt, cfgMT, layerMT := types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer
	var m v1.Manifest
	if b != nil {
		// A deep copy: the source's config is the cache's.
		raw, err := json.Marshal(b.config)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return nil, err
		}
		mt = b.mt
		if mt == types.DockerManifestSchema2 {
			cfgMT, layerMT = types.DockerConfigJSON, types.DockerLayer
		}
		m.Layers = slices.Clone(b.manifest.Layers)
	} else {
		cfg.OS = "linux"
		cfg.Architecture, cfg.Variant = ociArch(arch)
		cfg.RootFS.Type = "layers"
		if seed != nil {
			cfg.Config = *seed
		}
	}
	cfg.Created = v1.Time{Time: created}
	applyProgram(&cfg.Config, prog)
	labels := map[string]string{}
	for k, v := range cfg.Config.Labels {
		if !strings.HasPrefix(k, LabelPrefix) {
			labels[k] = v
		}
	}
	maps.Copy(labels, rec.Labels())
	cfg.Config.Labels = labels
	for _, a := range added {
		a.layer.mt = layerMT
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, a.layer.diff)
		h := a.history
		h.Created = v1.Time{Time: created}
		cfg.History = append(cfg.History, h)
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: layerMT, Size: a.layer.size, Digest: a.layer.digest})
	}
	rawCfg, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(rawCfg)
	m.SchemaVersion = 2
	m.MediaType = mt
	m.Config = v1.Descriptor{MediaType: cfgMT, Size: int64(len(rawCfg)), Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
	if b != nil && mt == types.OCIManifestSchema1 {
		repo, digest, _ := strings.Cut(b.name, "@")
		m.Annotations = map[string]string{"org.opencontainers.image.base.name": repo, "org.opencontainers.image.base.digest": digest}
	}
	rawM, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	img := &exportImage{manifest: rawM, config: rawCfg, mt: mt, layers: map[v1.Hash]v1.Layer{}}
	if b != nil {
		for i, l := range b.layers {
			img.layers[b.manifest.Layers[i].Digest] = l
			img.order = append(img.order, l)
		}
	}
	for _, a := range added {
		img.layers[a.layer.digest] = a.layer
		img.order = append(img.order, a.layer)
	}
	return img, nil
}

// applyProgram puts what the container runs into the image config.
func applyProgram(c *v1.Config, p program) {
	if len(p.Entrypoint) > 0 {
		c.Entrypoint, c.Cmd = slices.Clone(p.Entrypoint), nil
	} else if len(c.Entrypoint)+len(c.Cmd) == 0 && len(p.Cmd) > 0 {
		c.Cmd = slices.Clone(p.Cmd)
	}
	if len(p.Env) > 0 {
		c.Env = template.MergeEnv(c.Env, p.Env)
	}
	if p.WorkingDir != "" {
		c.WorkingDir = p.WorkingDir
	}
	if p.User != "" {
		c.User = p.User
	}
}

// ociArch is Proxmox's arch in OCI's terms (template.PVEArch the other way).
func ociArch(pve string) (arch, variant string) {
	switch pve {
	case "", "amd64":
		return "amd64", ""
	case "i386":
		return "386", ""
	case "armhf":
		return "arm", "v7"
	case "arm64":
		return "arm64", ""
	}
	return pve, ""
}
