package template

import (
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/imgconv"
)

// MetaPath is where a template carries its Meta inside the root filesystem,
// so that a template file describes itself wherever it is copied.
const MetaPath = "etc/pve-image/image.json"

// Meta describes a template: where it came from and what Proxmox needs to
// know to run it. It is written beside the template in the cache and, less
// the fields that depend on how it was asked for (Ref, File, Size, SHA256),
// into the template itself.
type Meta struct {
	Converter      string `json:"converter"`
	Ref            string `json:"ref,omitempty"`
	Repository     string `json:"repository,omitempty"`
	ManifestDigest string `json:"manifestDigest"`
	IndexDigest    string `json:"indexDigest,omitempty"`
	ConfigDigest   string `json:"configDigest"`
	Platform       string `json:"platform"`
	// Arch is the platform's architecture in Proxmox's terms.
	Arch string `json:"arch"`
	// Created is the image's creation time from its config.
	Created time.Time `json:"created,omitzero"`

	Config RunConfig     `json:"config"`
	Facts  imgconv.Facts `json:"facts"`
	Run    RunInfo       `json:"run"`
	// Proxmox is how to create containers from the template; inspect
	// fills it in, it is not stored.
	Proxmox *PVEConfigs `json:"proxmox,omitempty"`

	// Layers is the number of layers; CompressedSize their blob total.
	Layers         int   `json:"layers"`
	CompressedSize int64 `json:"compressedSize"`
	// RootfsSize is the bytes of file content in the template, Entries
	// its members.
	RootfsSize int64 `json:"rootfsSize"`
	Entries    int   `json:"entries"`

	Compression string `json:"compression,omitempty"`
	File        string `json:"file,omitempty"`
	Size        int64  `json:"size,omitempty"`
	SHA256      string `json:"sha256,omitempty"`
}

// RunConfig is the part of the image config that says how to run it.
type RunConfig struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	User         string            `json:"user,omitempty"`
	WorkingDir   string            `json:"workingDir,omitempty"`
	StopSignal   string            `json:"stopSignal,omitempty"`
	Volumes      []string          `json:"volumes,omitempty"`
	ExposedPorts []string          `json:"exposedPorts,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// RunConfigOf extracts the run config from an image config.
func RunConfigOf(c v1.Config) RunConfig {
	rc := RunConfig{
		Entrypoint: c.Entrypoint,
		Cmd:        c.Cmd,
		Env:        c.Env,
		User:       c.User,
		WorkingDir: c.WorkingDir,
		StopSignal: c.StopSignal,
		Labels:     c.Labels,
	}
	for v := range c.Volumes {
		rc.Volumes = append(rc.Volumes, v)
	}
	for p := range c.ExposedPorts {
		rc.ExposedPorts = append(rc.ExposedPorts, p)
	}
	slices.Sort(rc.Volumes)
	slices.SortFunc(rc.ExposedPorts, func(a, b string) int { return strings.Compare(a, b) })
	return rc
}
