package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/internal/bytesize"
	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/template"
)

// storedTemplate is a row of ls: a template on a storage and what pve-image
// knows of it.
type storedTemplate struct {
	Volid    string `json:"volid"`
	Size     int64  `json:"size"`
	Created  int64  `json:"created"` // unix seconds
	Image    string `json:"image,omitempty"`
	Tag      string `json:"tag,omitempty"`
	Arch     string `json:"arch,omitempty"`
	SHA256   string `json:"sha256,omitempty"` // the 12 hex digits its name carries
	Manifest string `json:"manifest,omitempty"`
}

func (a *app) lsCommand() *cobra.Command {
	var pf pveFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls --node N [--storage S] [--json]",
		Short: "List the container templates on a Proxmox storage",
		Long: `List the container templates on a storage, with the image and digest each
came from: for templates pve-image pushed, read from the name
(<name>_<tag>_<arch>.<sha12>), and the full repository and manifest digest
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
			rows := make([]storedTemplate, 0, len(vols))
			for _, v := range vols {
				r := storedTemplate{Volid: v.Volid, Size: v.Size, Created: v.Ctime}
				if info, ok := template.ParseStorageName(v.Name()); ok {
					r.Image, r.Tag, r.Arch, r.SHA256 = info.Name, info.Tag, info.Arch, info.Digest
					if m, ok := known[info.Digest]; ok {
						r.Manifest = m.ManifestDigest
						// The same bytes may have been converted first under
						// another name: the storage name says which image
						// was pushed.
						if template.NameOf(m.Repository) == info.Name {
							r.Image = m.Repository
						}
					}
				}
				rows = append(rows, r)
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VOLID\tSIZE\tCREATED\tIMAGE\tTAG\tARCH\tSHA256\tMANIFEST")
			dash := func(s string) string {
				if s == "" {
					return "-"
				}
				return s
			}
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Volid, bytesize.Format(r.Size), time.Unix(r.Created, 0).Format(time.DateTime),
					dash(r.Image), dash(r.Tag), dash(r.Arch), dash(r.SHA256), dash(shortDigest(r.Manifest)))
			}
			return tw.Flush()
		},
	}
	pf.register(cmd, true)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: a list of {volid, size, created, image, tag, arch, sha256, manifest}")
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
