package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/template"
)

func (a *app) lsCommand() *cobra.Command {
	var pf pveFlags
	cmd := &cobra.Command{
		Use:   "ls --node N [--storage S]",
		Short: "List the container templates on a Proxmox storage",
		Long: `List the container templates on a storage, with the image and digest each
came from: for templates pve-image pushed, read from the name
(<name>_<tag>_<arch>.<sha12>), and the full reference and manifest digest
when the local cache holds the same template.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, pc, err := a.dialNode(cmd.Context(), &pf)
			if err != nil {
				return err
			}
			vols, err := cl.Templates(cmd.Context(), pc.Node, pc.Storage)
			if err != nil {
				return err
			}
			slices.SortFunc(vols, func(x, y proxmox.Volume) int { return strings.Compare(x.Volid, y.Volid) })
			known := a.cachedByDigest()
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VOLID\tSIZE\tCREATED\tIMAGE\tTAG\tARCH\tSHA256\tMANIFEST")
			for _, v := range vols {
				image, tag, arch, digest, manifest := "-", "-", "-", "-", "-"
				if info, ok := template.ParseStorageName(v.Name()); ok {
					image, tag, arch, digest = info.Name, info.Tag, info.Arch, info.Digest
					if m, ok := known[info.Digest]; ok {
						image, manifest = m.Repository, shortDigest(m.ManifestDigest)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Volid, humanBytes(v.Size), time.Unix(v.Ctime, 0).Format(time.DateTime),
					image, tag, arch, digest, manifest)
			}
			return tw.Flush()
		},
	}
	pf.register(cmd, true)
	return cmd
}

// cachedByDigest indexes the cache's templates by the first 12 hex digits
// of their SHA-256, the digest a storage name carries.
func (a *app) cachedByDigest() map[string]template.Meta {
	out := map[string]template.Meta{}
	c, err := a.openCache()
	if err != nil {
		return out
	}
	entries, _ := c.Templates()
	for _, e := range entries {
		if m, err := template.ReadMeta(e.Dir); err == nil && len(e.SHA256) >= 12 {
			out[e.SHA256[:12]] = m
		}
	}
	return out
}

func (a *app) rmCommand() *cobra.Command {
	var pf pveFlags
	cmd := &cobra.Command{
		Use:   "rm VOLID|NAME... --node N [--storage S]",
		Short: "Remove container templates from a Proxmox storage",
		Long: `Remove templates from a storage, each named by its volume ID
(local:vztmpl/x.tar.zst) or its file name. Needs Datastore.Allocate on the
storage. A template that is not there is an error.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, pc, err := a.dialNode(cmd.Context(), &pf)
			if err != nil {
				return err
			}
			// Proxmox's delete of a missing file is a task that ends with a
			// warning, not an error: look first, so that a typo is reported.
			// Like rm(1), go on with the rest and fail at the end.
			present := map[string]map[string]bool{}
			var errs []error
			for _, arg := range args {
				storage, volid := pc.Storage, arg
				if s, rest, ok := strings.Cut(arg, ":"); ok {
					storage, volid = s, s+":"+rest
				} else {
					volid = storage + ":vztmpl/" + arg
				}
				if present[storage] == nil {
					vols, err := cl.Templates(cmd.Context(), pc.Node, storage)
					if err != nil {
						return fmt.Errorf("list %s/%s: %w", pc.Node, storage, err)
					}
					present[storage] = map[string]bool{}
					for _, v := range vols {
						present[storage][v.Volid] = true
					}
				}
				if !present[storage][volid] {
					errs = append(errs, fmt.Errorf("remove %s: no such template on %s/%s", volid, pc.Node, storage))
					continue
				}
				if err := cl.DeleteVolume(cmd.Context(), pc.Node, storage, volid); err != nil {
					errs = append(errs, fmt.Errorf("remove %s: %w", volid, err))
					continue
				}
				delete(present[storage], volid)
				fmt.Fprintln(a.stdout, "removed", volid)
			}
			return errors.Join(errs...)
		},
	}
	pf.register(cmd, true)
	return cmd
}
