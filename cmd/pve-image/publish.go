package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/batch"
	"github.com/pve-image/pve-image/template"
	"github.com/pve-image/pve-image/tmplreg"
)

// templateRegistryCredsEnv holds USER:PASS for the template registry:
// a CI's secret variable, never a flag (flags show in the process list).
const templateRegistryCredsEnv = "PVE_IMAGE_TEMPLATE_REGISTRY_CREDS"

// templateRegistryOptions are the template registry's settings from the
// global flags: the same plain-HTTP rules, mirrors, retries and stall
// timeout as pulls; credentials from PVE_IMAGE_TEMPLATE_REGISTRY_CREDS,
// else Docker's config.json and credential helpers.
func (a *app) templateRegistryOptions() (tmplreg.Options, error) {
	mirrors, err := a.registryMirrors()
	if err != nil {
		return tmplreg.Options{}, err
	}
	o := tmplreg.Options{Insecure: a.insecure, Mirrors: mirrors, Retries: a.retries, StallTimeout: a.stallTimeout,
		Version: version, Log: a.log}
	if a.retries == 0 {
		o.Retries = -1 // the flag's 0 is none; Options' 0 is the default
	}
	if v := a.getenv(templateRegistryCredsEnv); v != "" {
		if o.Username, o.Password, err = parseCreds(v, templateRegistryCredsEnv); err != nil {
			return tmplreg.Options{}, err
		}
	}
	return o, nil
}

// templateRemote is the --template-registry store for Builders, or nil.
func (a *app) templateRemote() (template.Remote, error) {
	if a.templateRegistry == "" {
		return nil, nil
	}
	o, err := a.templateRegistryOptions()
	if err != nil {
		return nil, err
	}
	s, err := tmplreg.New(a.templateRegistry, o)
	if err != nil {
		return nil, fmt.Errorf("--template-registry: %w", err)
	}
	return s, nil
}

func (a *app) publishCommand() *cobra.Command {
	var to, format, chunk string
	var cf convertFlags
	cmd := &cobra.Command{
		Use:   "publish IMAGE|TEMPLATE --to REGISTRY/REPO[:TAG]",
		Short: "Store a template in an OCI registry, for other machines to use instead of converting",
		Long: `Store a template as an OCI artifact in REGISTRY/REPO. IMAGE is converted first
(from the cache when it was converted before) and tagged tmpl-<key>, the key
any machine computes from the image's digest and the options, so that
--template-registry REGISTRY/REPO finds it without converting; it is also
tagged <name>_<tag>_<arch>, and <name>_<tag> names an index of the
platforms published for that tag (TAG instead of <name>_<tag> when given).

A TEMPLATE file is stored under those human tags only: the options it was
made with are not all recorded in it, so its key is unknown.

Credentials come from PVE_IMAGE_TEMPLATE_REGISTRY_CREDS=USER:PASS, else
Docker's config.json and credential helpers. Prints the artifact's
REGISTRY/REPO@sha256:... .`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if to == "" {
				return fmt.Errorf("--to REGISTRY/REPO[:TAG]: where to publish")
			}
			repo, tag, err := tmplreg.ParseRepository(to, a.insecure)
			if err != nil {
				return err
			}
			if tag != "" && !tmplreg.ValidTag(tag) {
				return fmt.Errorf("--to %s: %q is not a tag a registry takes ([A-Za-z0-9_][A-Za-z0-9_.-], at most 128)", to, tag)
			}
			o, err := a.templateRegistryOptions()
			if err != nil {
				return err
			}
			if chunk != "" {
				if o.ChunkSize, err = batch.ParseSize(chunk); err != nil || o.ChunkSize < 1<<20 {
					return fmt.Errorf("--chunk-size %q: want a size of at least 1M", chunk)
				}
			}
			store := tmplreg.NewRepository(repo, o)
			var pub *tmplreg.Published
			if isTemplateFile(args[0]) {
				pub, err = a.publishFile(ctx, store, args[0], tag)
			} else {
				pub, err = a.publishImage(ctx, store, args[0], tag, &cf, format)
			}
			if err != nil {
				return err
			}
			state := "uploaded"
			if !pub.Uploaded {
				state = "already there"
			}
			fmt.Fprintf(a.stderr, "%s (%s), tagged %s\n", pub.Ref, state, strings.Join(pub.Tags, ", "))
			fmt.Fprintln(a.stdout, pub.Ref)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "REGISTRY/REPO[:TAG] to publish to")
	cmd.Flags().StringVar(&format, "format", "template", "what to publish for an IMAGE: template or oci-archive")
	cmd.Flags().StringVar(&chunk, "chunk-size", "", "store templates larger than this in chunks of it (default 512M)")
	cf.register(cmd)
	return cmd
}

// publishImage converts (or takes from the cache) and publishes. A cached
// template whose bytes rotted is built again, never published.
func (a *app) publishImage(ctx context.Context, store *tmplreg.Store, arg, tag string, cf *convertFlags, format string) (*tmplreg.Published, error) {
	ref, err := a.parseRef(arg)
	if err != nil {
		return nil, err
	}
	opts, err := cf.formatOptions(format)
	if err != nil {
		return nil, err
	}
	b, err := a.builder(a.progress())
	if err != nil {
		return nil, err
	}
	var pub *tmplreg.Published
	res, err := b.ConvertThen(ctx, ref, opts, func(ctx context.Context, r *template.Result) error {
		var err error
		pub, err = store.Publish(ctx, tmplreg.TemplateOf(r, opts), tmplreg.PublishOptions{Tag: tag, Siblings: b.IndexPlatforms(r.Meta.IndexDigest)})
		return err
	})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	for _, w := range res.Meta.Facts.Warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
	return pub, nil
}

// publishFile publishes a template file under its human tags.
func (a *app) publishFile(ctx context.Context, store *tmplreg.Store, path, tag string) (*tmplreg.Published, error) {
	c, err := a.openCache()
	if err != nil {
		return nil, err
	}
	m, err := template.InspectFile(ctx, path, c.TempDir())
	if err != nil {
		return nil, err
	}
	m.File = template.Sanitize(m.File)
	if !template.ValidName(m.File) {
		return nil, fmt.Errorf("%s: Proxmox takes only .tar, .tar.gz, .tar.xz, .tar.zst and .tar.bz2 files as templates", path)
	}
	s := tmplreg.Settings{Compression: m.Compression, Format: string(template.FormatTemplate)}
	return store.Publish(ctx, tmplreg.Template{Path: path, Meta: m, Settings: s}, tmplreg.PublishOptions{Tag: tag})
}
