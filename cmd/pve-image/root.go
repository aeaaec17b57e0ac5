package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// version is pve-image's release; the build's VCS revision is added to it
// where known, so cache keys change with the code.
const version = "0.1.0"

func fullVersion() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value[:min(12, len(s.Value))]
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if rev != "" {
			v += "+" + rev + dirty
		}
	}
	return v
}

// app holds the global flags and what is built from them.
type app struct {
	cacheDir string
	platform string
	insecure []string
	creds    string
	debug    bool
	mirrors  []string
	hostsDir string

	stdout, stderr io.Writer
	log            *slog.Logger
}

func newRootCommand() *cobra.Command {
	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	root := &cobra.Command{
		Use:   "pve-image",
		Short: "Turn OCI and Docker images into Proxmox VE container templates",
		Long: `pve-image pulls OCI and Docker images (with registry authentication, by tag or
digest, for a chosen platform), flattens their layers exactly as the OCI image
spec defines, and writes Proxmox VE container templates, cached by content.

Images are named as skopeo names them:
  REF, docker://REF           a registry image (alpine, ghcr.io/o/app:1, app@sha256:...)
  oci:DIR[:TAG]               an OCI image layout directory
  oci-archive:FILE[:TAG]      a tar of an OCI image layout
  docker-archive:FILE[:REF]   the output of docker save`,
		Version:       fullVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			level := slog.LevelWarn
			if cmd.Name() == "cri" {
				level = slog.LevelInfo
			}
			if a.debug {
				level = slog.LevelDebug
			}
			a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
		},
	}
	defaultCache := os.Getenv("PVE_IMAGE_CACHE_DIR")
	if defaultCache == "" {
		defaultCache = cache.DefaultDir()
	}
	f := root.PersistentFlags()
	f.StringVar(&a.cacheDir, "cache-dir", defaultCache, "cache directory (env PVE_IMAGE_CACHE_DIR)")
	f.StringVar(&a.platform, "platform", registry.PlatformString(registry.HostPlatform()), "platform to select from multi-platform images, os/arch[/variant]")
	f.StringArrayVar(&a.insecure, "insecure-registry", nil, "registry HOST[:PORT] to reach over plain HTTP (repeatable; localhost and 127.0.0.0/8 always are)")
	f.StringVar(&a.creds, "creds", "", "USER:PASS for the image's registry (default: Docker's config.json and credential helpers)")
	f.BoolVar(&a.debug, "debug", false, "log what is being done to stderr")
	f.StringArrayVar(&a.mirrors, "registry-mirror", nil, "HOST=URL: pull HOST's images from the mirror at URL first, e.g. docker.io=http://127.0.0.1:5000 (repeatable; _default for every registry)")
	f.StringVar(&a.hostsDir, "registry-config", "", "directory of containerd-style DIR/<host>/hosts.toml mirror files (server, [host.\"URL\"] capabilities and skip_verify)")

	root.AddCommand(a.pullCommand(), a.convertCommand(), a.inspectCommand(), a.cacheCommand(),
		a.pushCommand(), a.lsCommand(), a.rmCommand(), a.runCommand(), a.criCommand())
	return root
}

func (a *app) openCache() (*cache.Cache, error) {
	return cache.Open(a.cacheDir)
}

// puller builds a Puller from the global flags.
func (a *app) puller(c *cache.Cache, progress registry.Progress) (*registry.Puller, error) {
	p, err := registry.ParsePlatform(a.platform)
	if err != nil {
		return nil, err
	}
	mirrors, err := a.registryMirrors()
	if err != nil {
		return nil, err
	}
	opts := registry.Options{Platform: p, Insecure: a.insecure, Version: version, Progress: progress, Mirrors: mirrors}
	if a.creds != "" {
		u, pw, ok := strings.Cut(a.creds, ":")
		if !ok || u == "" {
			return nil, fmt.Errorf("--creds: want USER:PASS")
		}
		opts.Username, opts.Password = u, pw
	}
	return registry.NewPuller(c, opts), nil
}

// registryMirrors merges --registry-config and --registry-mirror, flags
// first.
func (a *app) registryMirrors() (registry.Mirrors, error) {
	m := registry.Mirrors{}
	for _, f := range a.mirrors {
		host, mirror, err := registry.ParseMirrorFlag(f)
		if err != nil {
			return nil, err
		}
		m[host] = append(m[host], mirror)
	}
	if a.hostsDir != "" {
		dir, err := registry.LoadHostsDir(a.hostsDir)
		if err != nil {
			return nil, err
		}
		for host, ms := range dir {
			m[host] = append(m[host], ms...)
		}
	}
	return m, nil
}

func (a *app) builder(progress registry.Progress) (*template.Builder, error) {
	c, err := a.openCache()
	if err != nil {
		return nil, err
	}
	p, err := a.puller(c, progress)
	if err != nil {
		return nil, err
	}
	return &template.Builder{Cache: c, Puller: p, Version: fullVersion(), Log: a.log}, nil
}

func (a *app) parseRef(s string) (registry.Reference, error) {
	return registry.ParseReference(s, a.insecure)
}

// progress returns a progress reporter for stderr: bars on a terminal, one
// line per blob otherwise.
func (a *app) progress() registry.Progress {
	if isTerminal(a.stderr) {
		return newBarProgress(a.stderr)
	}
	return &lineProgress{w: a.stderr}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
