package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/batch"
	"github.com/pve-image/pve-image/imgconv"
	"github.com/pve-image/pve-image/template"
)

// convertFlags are the conversion options shared by convert and the
// commands that convert on the way.
type convertFlags struct {
	level         int
	squashHighIDs bool
	maxSize       string
	maxEntries    int64
	init          string
	initBinary    string
}

func (f *convertFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.IntVar(&f.level, "compression-level", 0, "compression level (zstd 1-22, default 3; gzip 1-9, default 6; xz 1-9, default 6)")
	fl.BoolVar(&f.squashHighIDs, "squash-high-ids", false, "map uids/gids of 65536 and above to 65534 (nobody) instead of refusing the image; Proxmox's unprivileged containers map only 0-65535")
	fl.StringVar(&f.maxSize, "max-size", "64G", "refuse images whose layers expand beyond this size (K, M, G, T suffixes)")
	fl.Int64Var(&f.maxEntries, "max-entries", imgconv.DefaultMaxEntries, "refuse images whose layers hold more entries than this")
	fl.StringVar(&f.init, "init", "auto", "what the template boots: auto (pve-image-init for application images, the image's own init for system images), shim, or none")
	fl.StringVar(&f.initBinary, "init-binary", "", "the pve-image-init binary to put into templates (env PVE_IMAGE_INIT_BINARY; default: pve-image-init beside pve-image, then /usr/lib/pve-image/pve-image-init)")
}

func (f *convertFlags) options(c template.Compression) (template.Options, error) {
	max, err := batch.ParseSize(f.maxSize)
	if err != nil {
		return template.Options{}, fmt.Errorf("--max-size: %w", err)
	}
	if err := c.CheckLevel(f.level); err != nil {
		return template.Options{}, fmt.Errorf("--compression-level: %w", err)
	}
	mode, err := template.ParseInitMode(f.init)
	if err != nil {
		return template.Options{}, err
	}
	opts := template.Options{Compression: c, Level: f.level, SquashHighIDs: f.squashHighIDs, MaxSize: max, MaxEntries: f.maxEntries, Init: mode}
	if mode != template.InitNone {
		if opts.Shim, err = findShim(f.initBinary); err != nil {
			return template.Options{}, err
		}
	}
	return opts, nil
}

// findShim loads pve-image-init: the named file, $PVE_IMAGE_INIT_BINARY,
// pve-image-init beside this executable, or the install locations. Not
// finding it is no error here: system images do not need it, and the
// conversion says so when an application image does.
func findShim(named string) (*template.Shim, error) {
	var candidates []string
	switch {
	case named != "":
		candidates = []string{named}
	case os.Getenv("PVE_IMAGE_INIT_BINARY") != "":
		candidates = []string{os.Getenv("PVE_IMAGE_INIT_BINARY")}
	default:
		if exe, err := os.Executable(); err == nil {
			candidates = append(candidates, filepath.Join(filepath.Dir(exe), "pve-image-init"))
		}
		candidates = append(candidates, "/usr/lib/pve-image/pve-image-init", "/usr/local/lib/pve-image/pve-image-init")
	}
	for _, p := range candidates {
		b, err := os.ReadFile(p)
		if err == nil {
			if len(b) < 4 || string(b[:4]) != "\x7fELF" {
				return nil, fmt.Errorf("init binary %s is not an executable", p)
			}
			return template.NewShim(b), nil
		}
		if named != "" || os.Getenv("PVE_IMAGE_INIT_BINARY") != "" {
			return nil, fmt.Errorf("init binary: %w", err)
		}
	}
	return nil, nil
}

func (a *app) convertCommand() *cobra.Command {
	var out, format string
	var cf convertFlags
	cmd := &cobra.Command{
		Use:   "convert IMAGE [-o FILE]",
		Short: "Convert an image into a Proxmox container template",
		Long: `Convert IMAGE into a Proxmox VE container template: one tar of the flattened
root filesystem with "./" member names, numeric ids and no device nodes,
compressed as the file name says (.tar.zst, .tar.gz, .tar.xz or .tar).
.tar.xz is for compatibility only (every Proxmox since 7.0 reads zstd): xz
takes about 45 times as long as zstd even with xz(1) 5.4+ on every core,
which pve-image runs when installed (28 s for a 200 MiB Debian on two cores,
as fast as xz -T0 itself), and several times longer with the pure Go
encoder it falls back to, on one core.

Without -o the template stays in the cache and its path is printed; its name
is <name>_<tag>_<arch>.tar.zst. With -o it is copied to FILE (written under a
temporary name and renamed, so FILE is never half-written) and FILE is
printed. Converting the same image with the same options again is answered
from the cache: one manifest request for a tag, none for a digest.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := a.parseRef(args[0])
			if err != nil {
				return err
			}
			comp, f, err := parseFormat(format)
			if err != nil {
				return err
			}
			if f == template.FormatOCIArchive && out != "" && !strings.HasSuffix(out, ".tar") {
				return fmt.Errorf("-o %s: an OCI archive for Proxmox must end in .tar (its importer looks at nothing else)", out)
			}
			if out != "" && f == template.FormatTemplate {
				if comp, err = template.CompressionFromName(out); err != nil {
					return err
				}
				if base := filepath.Base(out); !template.ValidName(base) {
					fmt.Fprintf(a.stderr, "warning: Proxmox stores %q as %q (only [a-zA-Z0-9_.-] survive uploads)\n", base, template.Sanitize(base))
				}
			}
			opts, err := cf.options(comp)
			if err != nil {
				return err
			}
			opts.Format = f
			b, err := a.builder(a.progress())
			if err != nil {
				return err
			}
			var res *template.Result
			if out == "" {
				res, err = b.Convert(cmd.Context(), ref, opts)
			} else {
				res, err = b.ConvertTo(cmd.Context(), ref, opts, out)
			}
			if err != nil {
				return err
			}
			defer res.Close()
			for _, w := range res.Meta.Facts.Warnings {
				fmt.Fprintln(a.stderr, "warning:", w)
			}
			if out == "" {
				fmt.Fprintln(a.stdout, res.Path())
				return nil
			}
			fmt.Fprintln(a.stdout, out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the template to FILE; its suffix picks the compression")
	cmd.Flags().StringVar(&format, "format", "template", "template (a flattened rootfs, for any Proxmox) or oci-archive (an OCI layout .tar with one manifest and OCI media types, for Proxmox 9.1's own importer)")
	cf.register(cmd)
	return cmd
}

// parseFormat reads --format: the compression and format to convert to.
func parseFormat(format string) (template.Compression, template.Format, error) {
	switch format {
	case "", "template":
		return template.Zstd, template.FormatTemplate, nil
	case "oci-archive":
		return template.None, template.FormatOCIArchive, nil
	}
	return "", "", fmt.Errorf("--format %q: want template or oci-archive", format)
}

// formatOptions are the conversion options for --format (with its default
// compression) and the conversion flags.
func (f *convertFlags) formatOptions(format string) (template.Options, error) {
	comp, tf, err := parseFormat(format)
	if err != nil {
		return template.Options{}, err
	}
	opts, err := f.options(comp)
	if err != nil {
		return template.Options{}, err
	}
	opts.Format = tf
	return opts, nil
}
