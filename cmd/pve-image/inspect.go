package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/internal/bytesize"
	"github.com/pve-image/pve-image/template"
)

func (a *app) inspectCommand() *cobra.Command {
	var asJSON bool
	var cf convertFlags
	var over template.Overrides
	cmd := &cobra.Command{
		Use:   "inspect IMAGE|TEMPLATE",
		Short: "Describe an image or template as Proxmox will see it",
		Long: `Describe IMAGE (any image reference) or TEMPLATE (a template file): digests,
platform, sizes, the run config (entrypoint, cmd, env, user, working dir, stop
signal, volumes, exposed ports), the ostype Proxmox will detect and why, the
architecture, and warnings about what Proxmox will drop or refuse.

An argument naming an existing file with a template suffix (.tar.zst,
.tar.gz, .tar.xz, .tar.bz2, .tar) is a template, unless it is an image
archive (an OCI layout or docker save .tar, read as oci-archive: or
docker-archive:); anything else is an image.

Inspect describes; it does not refuse. What a conversion with these options
would refuse (no command, an unknown USER) and what Proxmox would refuse
are reported, and the command succeeds.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var m template.Meta
			if tr, ok := template.ImageArchive(args[0]); ok && isTemplateFile(args[0]) {
				args[0] = tr + ":" + args[0]
			}
			if isTemplateFile(args[0]) {
				c, err := a.openCache()
				if err != nil {
					return err
				}
				if m, err = template.InspectFile(cmd.Context(), args[0], c.TempDir()); err != nil {
					return err
				}
			} else {
				ref, err := a.parseRef(args[0])
				if err != nil {
					return err
				}
				b, err := a.builder(a.progress())
				if err != nil {
					return err
				}
				opts, err := cf.options(template.Zstd)
				if err != nil {
					return err
				}
				if m, err = b.Inspect(cmd.Context(), ref, opts); err != nil {
					return err
				}
			}
			if m.Run.Kind != "" && m.Run.Refusal == "" {
				pc, err := m.PVEConfigs(over)
				if err != nil {
					m.Facts.Warnings = append(m.Facts.Warnings, "no Proxmox container can be created this way: "+err.Error())
				}
				m.Proxmox = pc
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(m)
			}
			printMeta(a.stdout, m)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringArrayVar(&over.Env, "env", nil, "KEY=value to merge over the image's env in the Proxmox 9.1+ config (repeatable)")
	cmd.Flags().StringSliceVar(&over.Entrypoint, "entrypoint", nil, "program and arguments (comma-separated) to run instead of the image's, in the Proxmox 9.1+ config")
	cf.register(cmd)
	return cmd
}

func isTemplateFile(s string) bool {
	if _, err := template.CompressionFromName(s); err != nil && !strings.HasSuffix(s, ".tar.bz2") {
		return false
	}
	fi, err := os.Stat(s)
	return err == nil && fi.Mode().IsRegular()
}

func printMeta(w io.Writer, m template.Meta) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k string, v any) {
		s := fmt.Sprint(v)
		if s == "" || s == "0" || s == "[]" {
			return
		}
		fmt.Fprintf(tw, "%s:\t%s\n", k, s)
	}
	list := func(v []string) string {
		if len(v) == 0 {
			return ""
		}
		b, _ := json.Marshal(v)
		return string(b)
	}
	row("Image", m.Ref)
	row("File", m.File)
	if m.Size > 0 {
		row("Size", fmt.Sprintf("%s (%d bytes)", bytesize.Format(m.Size), m.Size))
	}
	row("SHA256", m.SHA256)
	row("Manifest", m.ManifestDigest)
	row("Index", m.IndexDigest)
	row("Config", m.ConfigDigest)
	row("Platform", m.Platform)
	row("Arch", m.Arch)
	if !m.Created.IsZero() {
		row("Created", m.Created.Format("2006-01-02 15:04:05 MST"))
	}
	if m.Layers > 0 {
		row("Layers", fmt.Sprintf("%d (%s compressed)", m.Layers, bytesize.Format(m.CompressedSize)))
	}
	if m.Entries > 0 {
		row("Rootfs", fmt.Sprintf("%s in %d entries", bytesize.Format(m.RootfsSize), m.Entries))
	}
	c := m.Config
	row("Entrypoint", list(c.Entrypoint))
	row("Cmd", list(c.Cmd))
	for i, e := range c.Env {
		k := ""
		if i == 0 {
			k = "Env"
		}
		fmt.Fprintf(tw, "%s\t%s\n", map[bool]string{true: "Env:", false: ""}[k != ""], e)
	}
	row("User", c.User)
	row("WorkingDir", c.WorkingDir)
	row("StopSignal", c.StopSignal)
	row("Volumes", strings.Join(c.Volumes, " "))
	row("ExposedPorts", strings.Join(c.ExposedPorts, " "))
	f := m.Facts
	row("Detected OS", fmt.Sprintf("%s (%s)", f.OSType, f.OSReason))
	row("Shell arch", f.ShellArch)
	if r := m.Run; r.Kind != "" {
		row("Kind", fmt.Sprintf("%s image (%s)", r.Kind, r.Reason))
		boots := "pve-image-init, which runs the image's command"
		if r.Init == "none" {
			boots = "the image's own init"
			if r.InitSystem != "" {
				boots += " (" + r.InitSystem + ")"
			}
		}
		row("Boots", boots)
		if s := r.Spec; s != nil {
			row("Runs as", fmt.Sprintf("uid %d, gid %d, groups %v (USER %q)", s.UID, s.GID, s.Groups, s.User))
		}
		row("ostype", fmt.Sprintf("%s (%s)", r.OSType, r.OSTypeReason))
		row("Conversion", map[bool]string{true: "refused: " + r.Refusal}[r.Refusal != ""])
	}
	if p := m.Proxmox; p != nil {
		row("Proxmox 9.1+", pveOptions(p.Native))
		row("Proxmox 7/8", pveOptions(p.Legacy))
	}
	tw.Flush()
	if len(f.Warnings) > 0 {
		fmt.Fprintln(w, "Warnings:")
		for _, x := range f.Warnings {
			fmt.Fprintf(w, "  - %s\n", x)
		}
	}
}

func pveOptions(c template.PVEConfig) string {
	var keys []string
	for k := range c.Options {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		v := c.Options[k]
		if k == "env" {
			v = strings.ReplaceAll(v, "\x00", "\\0")
		}
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	if c.NetOptions != "" {
		parts = append(parts, "netN+="+c.NetOptions)
	}
	return strings.Join(parts, " ")
}
