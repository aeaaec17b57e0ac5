package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/batch"
	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/internal/bytesize"
	"github.com/pve-image/pve-image/template"
)

func (a *app) cacheCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "List, prune and verify the cache",
	}
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls [--json]",
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
			items, err := c.Items()
			if err != nil {
				return err
			}
			var blobs cacheBlobs
			for _, it := range items {
				if it.Kind == "blob" {
					blobs.Count++
					blobs.Size += it.Size
				}
			}
			rows := make([]cachedTemplate, 0, len(entries))
			for _, e := range entries {
				m, _ := template.ReadMeta(e.Dir)
				rows = append(rows, cachedTemplate{File: e.File, Path: e.Path(), Size: e.Size, SHA256: e.SHA256, Image: m.Repository,
					Manifest: m.ManifestDigest, Platform: m.Platform, Created: e.Created, LastUsed: e.LastUsed, Key: e.Key})
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(cacheListing{Dir: c.Dir(), Templates: rows, Blobs: blobs})
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TEMPLATE\tSIZE\tIMAGE\tMANIFEST\tLAST USED\tKEY")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.File, bytesize.Format(r.Size), r.Image, shortDigest(r.Manifest),
					r.LastUsed.Format(time.DateTime), r.Key[:12])
			}
			tw.Flush()
			fmt.Fprintf(a.stdout, "%d template(s); %d blob(s), %s; in %s\n", len(rows), blobs.Count, bytesize.Format(blobs.Size), c.Dir())
			return nil
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON: the directory, each template, and the blob count and size")
	cmd.AddCommand(ls)

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
				if opts.MaxSize, err = batch.ParseSize(maxSize); err != nil {
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
				fmt.Fprintf(a.stdout, "removed %s %s (%s)\n", it.Kind, filepath.Base(it.ID), bytesize.Format(it.Size))
			}
			fmt.Fprintf(a.stdout, "freed %s\n", bytesize.Format(freed))
			return err
		},
	}
	prune.Flags().StringVar(&olderThan, "older-than", "", "remove entries unused for longer than this (e.g. 7d, 36h)")
	prune.Flags().StringVar(&maxSize, "max-size", "", "then shrink the cache to this size, least recently used first (e.g. 20G)")
	cmd.AddCommand(prune)

	var fix bool
	verify := &cobra.Command{
		Use:   "verify [--fix]",
		Short: "Re-hash every blob and template and report damage",
		Long: `Re-hash every blob and template, print "BAD path: reason" for each problem and
exit 1 if there is any. With --fix, remove each damaged entry (even one a
running process holds: it keeps what it has open) and exit 0 once all are
gone; the next pull or convert fetches or builds them again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.openCache()
			if err != nil {
				return err
			}
			probs, err := c.Verify(cmd.Context(), cache.VerifyOptions{Fix: fix})
			if err != nil {
				return err
			}
			left := 0
			for _, p := range probs {
				if p.Removed {
					fmt.Fprintf(a.stdout, "BAD %s: %s (removed)\n", p.Path, p.Err)
					continue
				}
				left++
				fmt.Fprintf(a.stdout, "BAD %s: %s\n", p.Path, p.Err)
			}
			switch {
			case left > 0 && fix:
				fmt.Fprintf(a.stderr, "%d problem(s), %d not removed\n", len(probs), left)
				return exitError(1)
			case left > 0:
				fmt.Fprintf(a.stderr, "%d problem(s); remove the damaged entries with `%s`\n", left, fixCommand(c.Dir()))
				return exitError(1)
			case len(probs) > 0:
				fmt.Fprintf(a.stdout, "removed %d damaged entr%s\n", len(probs), plural(len(probs), "y", "ies"))
				return nil
			}
			fmt.Fprintln(a.stdout, "cache OK")
			return nil
		},
	}
	verify.Flags().BoolVar(&fix, "fix", false, "remove the damaged entries")
	cmd.AddCommand(verify)
	return cmd
}

// cacheListing is cache ls --json.
type cacheListing struct {
	Dir       string           `json:"dir"`
	Templates []cachedTemplate `json:"templates"`
	Blobs     cacheBlobs       `json:"blobs"`
}

type cachedTemplate struct {
	File     string    `json:"file"`
	Path     string    `json:"path"`
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256"`
	Image    string    `json:"image,omitempty"`
	Manifest string    `json:"manifestDigest,omitempty"`
	Platform string    `json:"platform,omitempty"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"lastUsed"`
	Key      string    `json:"key"`
}

type cacheBlobs struct {
	Count int64 `json:"count"`
	Size  int64 `json:"size"`
}

// fixCommand is the command line that removes what verify found, naming
// the cache directory unless it is the default one.
func fixCommand(dir string) string {
	if dir == cache.DefaultDir() {
		return "pve-image cache verify --fix"
	}
	if strings.ContainsAny(dir, " \t\n'\"\\$`!*?[]{}()<>|&;#~") {
		dir = "'" + strings.ReplaceAll(dir, "'", `'\''`) + "'"
	}
	return "pve-image --cache-dir " + dir + " cache verify --fix"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
