package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

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
	cacheDir      string
	platform      string
	insecure      []string
	creds         string
	credsFile     string
	username      string
	passwordStdin bool
	retries       int
	stallTimeout  time.Duration
	offline       bool
	debug         bool
	mirrors       []string
	hostsDir      string
	// templateRegistry is where ready templates are looked up before
	// converting (--template-registry).
	templateRegistry string

	credsRead            bool
	credsUser, credsPass string
	credsErr             error

	stdin          io.Reader
	stdout, stderr io.Writer
	log            *slog.Logger
	getenv         func(string) string
}

func newRootCommand() *cobra.Command {
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
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
	f.StringVar(&a.creds, "creds", "", "USER:PASS for the image's registry (default: env PVE_IMAGE_CREDS, then Docker's config.json and credential helpers); visible to every local user in the process list, prefer --creds-file, PVE_IMAGE_CREDS or --password-stdin")
	f.StringVar(&a.credsFile, "creds-file", "", "file holding USER:PASS for the image's registry (one line)")
	f.StringVar(&a.username, "username", "", "user name for --password-stdin")
	f.BoolVar(&a.passwordStdin, "password-stdin", false, "read the password for --username from stdin")
	f.IntVar(&a.retries, "retries", registry.DefaultRetries, "how many times to retry a registry request that failed in a passing way (dropped, refused, 408, 429, 5xx, stalled) and to resume an interrupted download; 0 for none")
	f.DurationVar(&a.stallTimeout, "stall-timeout", registry.DefaultStallTimeout, "fail (and retry) a registry request when no data arrives for this long")
	f.BoolVar(&a.offline, "offline", false, "use only the cache: tags resolve to the digest they last resolved to, and nothing is fetched")
	f.BoolVar(&a.debug, "debug", false, "log what is being done to stderr")
	f.StringArrayVar(&a.mirrors, "registry-mirror", nil, "HOST=URL: pull HOST's images from the mirror at URL first, e.g. docker.io=http://127.0.0.1:5000 (repeatable; _default for every registry)")
	f.StringVar(&a.hostsDir, "registry-config", "", "directory of containerd-style DIR/<host>/hosts.toml mirror files (server, [host.\"URL\"] capabilities and skip_verify)")
	f.StringVar(&a.templateRegistry, "template-registry", "", "REGISTRY/REPO of ready templates (pve-image publish) to use before converting; credentials in PVE_IMAGE_TEMPLATE_REGISTRY_CREDS=USER:PASS or Docker's config.json")

	root.AddCommand(a.pullCommand(), a.convertCommand(), a.inspectCommand(), a.cacheCommand(),
		a.pushCommand(), a.lsCommand(), a.rmCommand(), a.runCommand(), a.criCommand(),
		a.buildCommand(), a.publishCommand(), a.syncCommand())
	root.AddCommand(a.docsCommand())
	root.AddCommand(a.updateCommand(), a.rollbackCommand(), a.migrateCommand())
	root.AddCommand(a.exportCommand(), a.restoreCommand())
	completeFlagValues(root)
	return root
}

func (a *app) openCache() (*cache.Cache, error) {
	c, err := cache.Open(a.cacheDir)
	if err != nil {
		return nil, err
	}
	c.Log = a.log
	return c, nil
}

// puller builds a Puller from the global flags.
func (a *app) puller(c registry.BlobStore, progress registry.Progress) (*registry.Puller, error) {
	opts, err := a.registryOptions(progress)
	if err != nil {
		return nil, err
	}
	return registry.NewPuller(c, opts), nil
}

// registryOptions are the global flags' registry settings: platform,
// plain-HTTP registries, mirrors, credentials, retries, stall timeout,
// offline.
func (a *app) registryOptions(progress registry.Progress) (registry.Options, error) {
	p, err := registry.ParsePlatform(a.platform)
	if err != nil {
		return registry.Options{}, err
	}
	mirrors, err := a.registryMirrors()
	if err != nil {
		return registry.Options{}, err
	}
	if a.retries < 0 {
		return registry.Options{}, fmt.Errorf("--retries %d: want 0 or more", a.retries)
	}
	if a.stallTimeout <= 0 {
		return registry.Options{}, fmt.Errorf("--stall-timeout %s: want a positive duration", a.stallTimeout)
	}
	opts := registry.Options{Platform: p, Insecure: a.insecure, Version: version, Progress: progress, Mirrors: mirrors,
		Retries: a.retries, StallTimeout: a.stallTimeout, Offline: a.offline, Log: a.log}
	if a.retries == 0 {
		opts.Retries = -1 // the flag's 0 is none; Options' 0 is the default
	}
	if opts.Username, opts.Password, err = a.credentials(); err != nil {
		return registry.Options{}, err
	}
	return opts, nil
}

// credentials finds USER:PASS for the image's registry in exactly one of
// --creds, --creds-file, --username with --password-stdin, or else
// PVE_IMAGE_CREDS; none gives "", "" (Docker's config.json then answers).
func (a *app) credentials() (user, pass string, err error) {
	// stdin can be read once; every Puller of the command gets the same.
	if !a.credsRead {
		a.credsUser, a.credsPass, a.credsErr = a.readCredentials()
		a.credsRead = true
	}
	return a.credsUser, a.credsPass, a.credsErr
}

func (a *app) readCredentials() (user, pass string, err error) {
	var given []string
	if a.creds != "" {
		given = append(given, "--creds")
	}
	if a.credsFile != "" {
		given = append(given, "--creds-file")
	}
	if a.passwordStdin {
		given = append(given, "--password-stdin")
	}
	switch {
	case len(given) > 1:
		return "", "", fmt.Errorf("%s: give credentials one way only", strings.Join(given, " and "))
	case a.username != "" && !a.passwordStdin:
		return "", "", errors.New("--username goes with --password-stdin (or use --creds-file FILE holding USER:PASS)")
	case a.passwordStdin && a.username == "":
		return "", "", errors.New("--password-stdin needs --username")
	case a.passwordStdin:
		b, err := io.ReadAll(io.LimitReader(a.stdin, 64<<10))
		if err != nil {
			return "", "", fmt.Errorf("--password-stdin: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return "", "", errors.New("--password-stdin: no password on stdin")
		}
		return a.username, pw, nil
	case a.creds != "":
		a.log.Warn("--creds is visible to every local user in the process list; prefer --creds-file, PVE_IMAGE_CREDS or --password-stdin")
		return parseCreds(a.creds, "--creds")
	case a.credsFile != "":
		b, err := os.ReadFile(a.credsFile)
		if err != nil {
			return "", "", fmt.Errorf("--creds-file: %w", err)
		}
		if fi, err := os.Stat(a.credsFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			a.log.Warn("the credentials file is readable by other users; chmod 600 it", "file", a.credsFile, "mode", fi.Mode().Perm())
		}
		line := strings.TrimRight(string(b), "\r\n")
		if strings.ContainsAny(line, "\r\n") {
			return "", "", fmt.Errorf("--creds-file %s: want one line, USER:PASS", a.credsFile)
		}
		return parseCreds(line, "--creds-file "+a.credsFile)
	case a.getenv("PVE_IMAGE_CREDS") != "":
		return parseCreds(a.getenv("PVE_IMAGE_CREDS"), "PVE_IMAGE_CREDS")
	}
	return "", "", nil
}

func parseCreds(s, source string) (string, string, error) {
	u, pw, ok := strings.Cut(s, ":")
	if !ok || u == "" {
		return "", "", fmt.Errorf("%s: want USER:PASS", source)
	}
	return u, pw, nil
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
	b := &template.Builder{Cache: c, Puller: p, Version: fullVersion(), Log: a.log}
	if b.Remote, err = a.templateRemote(); err != nil {
		return nil, err
	}
	return b, nil
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
