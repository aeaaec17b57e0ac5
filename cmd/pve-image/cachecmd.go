package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/template"
)

func (a *app) cacheCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "List, prune and verify the cache",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "ls",
		Short: "List cached templates and blob totals",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.openCache()
			if err != nil {
				return err
			}
			entries, err := c.Templates()
			if err != nil {
				return err
			}
			slices.SortFunc(entries, func(x, y cache.Entry) int { return y.LastUsed.Compare(x.LastUsed) })
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TEMPLATE\tSIZE\tIMAGE\tMANIFEST\tLAST USED\tKEY")
			for _, e := range entries {
				m, _ := template.ReadMeta(e.Dir)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.File, humanBytes(e.Size), m.Repository, shortDigest(m.ManifestDigest),
					e.LastUsed.Format(time.DateTime), e.Key[:12])
			}
			tw.Flush()
			items, err := c.Items()
			if err != nil {
				return err
			}
			var blobs, bytes int64
			for _, it := range items {
				if it.Kind == "blob" {
					blobs++
					bytes += it.Size
				}
			}
			fmt.Fprintf(a.stdout, "%d template(s); %d blob(s), %s; in %s\n", len(entries), blobs, humanBytes(bytes), c.Dir())
			return nil
		},
	})

	var olderThan, maxSize string
	prune := &cobra.Command{
		Use:   "prune [--older-than D] [--max-size S]",
		Short: "Remove cache entries by age and size",
		Long: `Remove templates and blobs last used longer ago than --older-than (e.g. 7d,
36h), then the least recently used until the cache is no larger than
--max-size (e.g. 20G). Entries another process is using are kept. Without
flags, only work files left by interrupted runs are removed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts cache.PruneOptions
			var err error
			if olderThan != "" {
				if opts.OlderThan, err = parseAge(olderThan); err != nil {
					return fmt.Errorf("--older-than: %w", err)
				}
			}
			if maxSize != "" {
				if opts.MaxSize, err = parseSize(maxSize); err != nil {
					return fmt.Errorf("--max-size: %w", err)
				}
				if opts.MaxSize == 0 {
					opts.MaxSize = 1 // "0" means empty the cache
				}
			}
			c, err := a.openCache()
			if err != nil {
				return err
			}
			removed, err := c.Prune(cmd.Context(), opts)
			var freed int64
			for _, it := range removed {
				freed += it.Size
				fmt.Fprintf(a.stdout, "removed %s %s (%s)\n", it.Kind, filepath.Base(it.ID), humanBytes(it.Size))
			}
			fmt.Fprintf(a.stdout, "freed %s\n", humanBytes(freed))
			return err
		},
	}
	prune.Flags().StringVar(&olderThan, "older-than", "", "remove entries unused for longer than this (e.g. 7d, 36h)")
	prune.Flags().StringVar(&maxSize, "max-size", "", "then shrink the cache to this size, least recently used first (e.g. 20G)")
	cmd.AddCommand(prune)

	cmd.AddCommand(&cobra.Command{
		Use:   "verify",
		Short: "Re-hash every blob and template and report damage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.openCache()
			if err != nil {
				return err
			}
			probs, err := c.Verify(cmd.Context())
			if err != nil {
				return err
			}
			for _, p := range probs {
				fmt.Fprintf(a.stdout, "BAD %s: %s\n", p.Path, p.Err)
			}
			if len(probs) > 0 {
				fmt.Fprintf(a.stderr, "%d problem(s); remove the damaged entries with rm or cache prune\n", len(probs))
				return exitError(1)
			}
			fmt.Fprintln(a.stdout, "cache OK")
			return nil
		},
	})
	return cmd
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
