package template

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/pve-image/pve-image/imgconv"
	"github.com/pve-image/pve-image/imgconv/runspec"
)

// InitMode says what a template boots.
type InitMode string

const (
	// InitAuto puts the shim into application images and leaves system
	// images to their own init.
	InitAuto InitMode = "auto"
	// InitShim always makes the shim the template's /sbin/init.
	InitShim InitMode = "shim"
	// InitNone changes nothing: the template boots the image's
	// /sbin/init, or on Proxmox 9.1+ whatever entrypoint the container
	// is given.
	InitNone InitMode = "none"
)

// ParseInitMode reads --init.
func ParseInitMode(s string) (InitMode, error) {
	switch m := InitMode(s); m {
	case InitAuto, InitShim, InitNone:
		return m, nil
	case "":
		return InitAuto, nil
	}
	return "", fmt.Errorf("--init %q: want auto, shim or none", s)
}

// Shim is the init binary put into templates.
type Shim struct {
	Binary []byte
	SHA256 string
}

// NewShim wraps the shim's bytes.
func NewShim(b []byte) *Shim {
	sum := sha256.Sum256(b)
	return &Shim{Binary: b, SHA256: hex.EncodeToString(sum[:])}
}

// RunInfo says how a template runs, and what to create containers with.
type RunInfo struct {
	// Kind is "application" or "system", Reason why.
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
	// Init is what the template boots: "shim" (pve-image-init runs the
	// program of Spec) or "none" (the image's own init, InitSystem).
	Init       string `json:"init"`
	InitSystem string `json:"initSystem,omitempty"`
	// OSType is the ostype containers should be created with, and why.
	OSType       string `json:"ostype"`
	OSTypeReason string `json:"ostypeReason"`
	// Spec is the program the shim runs, with the user resolved.
	Spec *runspec.Spec `json:"spec,omitempty"`
	// Refusal is why converting the image with these options fails
	// (set by Inspect, which describes what conversion refuses).
	Refusal string `json:"refusal,omitempty"`
}

const (
	defaultStopTimeout = 10 // seconds, Docker's default
	defaultDHCPTimeout = 10 // seconds
	defaultPath        = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// ErrNothingToRun is returned for images with neither a command nor an init.
var ErrNothingToRun = errors.New("the image has no command (Entrypoint and Cmd are empty) and no /sbin/init: a container would have nothing to run (convert with --init none to make a template of its files anyway)")

// runInfo classifies the image and, when the shim goes in, resolves the
// program's spec. Errors name what in the image is wrong.
func runInfo(rootfs *imgconv.Rootfs, meta *Meta, mode InitMode) (RunInfo, error) {
	cfg := meta.Config
	k := rootfs.Classify(cfg.Entrypoint, cfg.Cmd)
	ri := RunInfo{Kind: "application", Reason: k.Reason, InitSystem: k.InitSystem}
	if k.System {
		ri.Kind = "system"
	}
	shim := mode == InitShim || (mode == InitAuto && !k.System)
	ri.Init = map[bool]string{true: "shim", false: "none"}[shim]
	if ri.Kind == "application" || shim {
		ri.OSType = "unmanaged"
		ri.OSTypeReason = "an application container: Proxmox's " + meta.Facts.OSType +
			" setup would write network and init configuration the image's program does not use (and that may need tools the image lacks)"
		if meta.Facts.OSType == "unmanaged" {
			ri.OSTypeReason = meta.Facts.OSReason
		}
	} else {
		ri.OSType, ri.OSTypeReason = meta.Facts.OSType, meta.Facts.OSReason
		if meta.Facts.OSRefusal != "" {
			ri.OSType = "unmanaged"
			ri.OSTypeReason = meta.Facts.OSRefusal
		}
	}
	if !shim {
		return ri, nil
	}
	argv := append(append([]string{}, cfg.Entrypoint...), cfg.Cmd...)
	if len(argv) == 0 {
		return ri, ErrNothingToRun
	}
	if len(withoutRuntimeVars(cfg.Env)) < len(cfg.Env) {
		meta.Facts.Warnings = append(meta.Facts.Warnings, "the image's PVE_IMAGE_ variables are dropped: pve-image's runtime alone sets them for pve-image-init")
	}
	u, err := rootfs.ResolveUser(cfg.User)
	if err != nil {
		return ri, fmt.Errorf("USER %q: %w; the program cannot run as that user (Proxmox 9.1's own import would silently run it as root)", cfg.User, err)
	}
	sig, err := runspec.ParseSignal(cfg.StopSignal)
	if err != nil {
		return ri, err
	}
	wd := cfg.WorkingDir
	if wd == "" {
		wd = "/"
	}
	ri.Spec = &runspec.Spec{
		Args:        argv,
		Env:         defaultEnv(cfg.Env, u.Home),
		WorkingDir:  wd,
		User:        cfg.User,
		UID:         u.UID,
		GID:         u.GID,
		Groups:      u.Groups,
		Home:        filledHome(cfg.Env, u.Home),
		StopSignal:  sig,
		StopTimeout: defaultStopTimeout,
		MountRun:    rootfs.DirIsEmpty("run"),
		MountTmp:    rootfs.DirIsEmpty("tmp"),
		DHCPTimeout: defaultDHCPTimeout,
	}
	return ri, nil
}

// defaultEnv adds PATH and HOME when the image leaves them out, as Docker
// does.
func defaultEnv(env []string, home string) []string {
	out := withoutRuntimeVars(env)
	if !hasVar(out, "PATH") {
		out = append(out, "PATH="+defaultPath)
	}
	if !hasVar(out, "HOME") {
		out = append(out, "HOME="+home)
	}
	return out
}

// withoutRuntimeVars drops PVE_IMAGE_ variables: they are how pve-image's
// runtime speaks to pve-image-init, and an image that set them (ENV
// PVE_IMAGE_UID=0) would run as someone its USER does not say.
func withoutRuntimeVars(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PVE_IMAGE_") {
			out = append(out, kv)
		}
	}
	return out
}

// filledHome is the HOME defaultEnv adds, or "" when the image sets one.
func filledHome(env []string, home string) string {
	if hasVar(env, "HOME") {
		return ""
	}
	return home
}

func hasVar(env []string, k string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			return true
		}
	}
	return false
}

// installShim puts the shim, its spec and the /sbin/init link into the
// tree. An application image's own /sbin/init (alpine's link to busybox,
// say) is kept as /sbin/init.image: the image never meant to boot it, and
// Proxmox 7/8 boot nothing but /sbin/init.
func installShim(rootfs *imgconv.Rootfs, meta *Meta, shim *Shim) error {
	if shim == nil {
		return errors.New("the init shim (pve-image-init) is needed but was not found; build it with make build, or name it with --init-binary")
	}
	mtime := meta.Created
	if err := rootfs.AddFile(runspec.InitPath, 0o755, 0, 0, mtime, shim.Binary); err != nil {
		return err
	}
	spec, _ := json.MarshalIndent(meta.Run.Spec, "", "  ")
	if err := rootfs.AddFile(runspec.Path, 0o644, 0, 0, mtime, append(spec, '\n')); err != nil {
		return err
	}
	if rootfs.Exists("sbin/init") || rootfs.IsSymlink("sbin/init") {
		if err := rootfs.Move("sbin/init", "sbin/init.image"); err != nil {
			return err
		}
		meta.Facts.Warnings = append(meta.Facts.Warnings, "the image's /sbin/init is kept as /sbin/init.image; /sbin/init now starts pve-image-init, which runs the image's command")
	}
	return rootfs.AddSymlink("sbin/init", "pve-image-init", mtime)
}
