package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// docsOptions says where writeDocs puts what.
type docsOptions struct {
	// ManDir receives one roff page per command (pve-image.1,
	// pve-image-convert.1, ...), uncompressed; empty: none.
	ManDir string
	// CompletionDir receives pve-image.bash, pve-image.zsh and
	// pve-image.fish; empty: none.
	CompletionDir string
	// Date goes into the pages' headers (month and year); the zero time
	// means $SOURCE_DATE_EPOCH, else now.
	Date time.Time
}

// hostDefaults are the flags whose default value is computed on the machine
// that runs pve-image: documented by what they mean, so that the pages say
// the same wherever and by whom they are generated.
var hostDefaults = map[string]string{
	"cache-dir": "/var/lib/pve-image as root, else $XDG_CACHE_HOME/pve-image",
	"platform":  "the host's",
}

// writeDocs writes the man pages and shell completions of root's command
// tree: what a package installs. Hidden commands (this one included) are
// left out. The output depends only on the command tree and o.Date.
func writeDocs(root *cobra.Command, o docsOptions) error {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	setDocDefaults(root, map[*pflag.Flag]bool{})
	if o.ManDir != "" {
		date := o.Date
		if date.IsZero() {
			date = time.Now()
			if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
				sec, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
				}
				date = time.Unix(sec, 0)
			}
		}
		date = date.UTC()
		if err := os.MkdirAll(o.ManDir, 0o755); err != nil {
			return err
		}
		header := &doc.GenManHeader{
			Section: "1",
			Date:    &date,
			Source:  "pve-image " + version,
			Manual:  "pve-image manual",
		}
		if err := doc.GenManTree(root, header, o.ManDir); err != nil {
			return fmt.Errorf("man pages: %w", err)
		}
	}
	if o.CompletionDir != "" {
		if err := os.MkdirAll(o.CompletionDir, 0o755); err != nil {
			return err
		}
		for _, c := range []struct {
			file string
			gen  func(*os.File) error
		}{
			{"pve-image.bash", func(f *os.File) error { return root.GenBashCompletionV2(f, true) }},
			{"pve-image.zsh", func(f *os.File) error { return root.GenZshCompletion(f) }},
			{"pve-image.fish", func(f *os.File) error { return root.GenFishCompletion(f, true) }},
		} {
			if err := writeFile(filepath.Join(o.CompletionDir, c.file), c.gen); err != nil {
				return fmt.Errorf("completion: %w", err)
			}
		}
	}
	return nil
}

// setDocDefaults prepares the whole tree for the pages: no cobra generation
// stamp (it carries the date), host-dependent flag defaults replaced by
// their description, and the help texts, which are plain text, made into
// the markdown cobra's man page generator takes.
func setDocDefaults(c *cobra.Command, seen map[*pflag.Flag]bool) {
	c.DisableAutoGenTag = true
	for _, sub := range c.Commands() {
		setDocDefaults(sub, seen)
	}
	for p := c; p.HasParent(); p = p.Parent() {
		if p.Name() == "completion" && p.Parent() == c.Root() {
			return // cobra's own, whose texts are markdown already
		}
	}
	c.Short = markdownText(c.Short)
	c.Long = markdownText(c.Long)
	fix := func(f *pflag.Flag) {
		if d, ok := hostDefaults[f.Name]; ok {
			f.DefValue = d
		}
		if !seen[f] { // persistent flags are shared down the tree
			f.Usage = markdownText(f.Usage)
			seen[f] = true
		}
	}
	c.PersistentFlags().VisitAll(fix)
	c.Flags().VisitAll(fix)
}

// markdownText turns a help text into markdown that renders as it reads:
// markdown's special characters escaped (<host> is no HTML tag, a_b_c no
// emphasis), and indented lines — tables of values — kept as they are, as
// preformatted blocks.
func markdownText(s string) string {
	var out []string
	inBlock := false
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
			if !inBlock && len(out) > 0 && out[len(out)-1] != "" {
				out = append(out, "")
			}
			inBlock = true
			out = append(out, "    "+strings.ReplaceAll(line, "\t", "        "))
			continue
		}
		if inBlock && line != "" {
			out = append(out, "")
		}
		inBlock = false
		var b strings.Builder
		for _, r := range line {
			if strings.ContainsRune("\\`*_<>[]#", r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		out = append(out, b.String())
	}
	return strings.Join(out, "\n")
}

func writeFile(path string, gen func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := gen(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// docsCommand is `pve-image docs`, hidden: what `make deb` runs to get the
// man pages and completions it packages.
func (a *app) docsCommand() *cobra.Command {
	var o docsOptions
	var epoch int64
	cmd := &cobra.Command{
		Use:    "docs [--man DIR] [--completions DIR]",
		Short:  "Write man pages and shell completions (for packaging)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.ManDir == "" && o.CompletionDir == "" {
				return errors.New("docs: give --man DIR, --completions DIR or both")
			}
			if epoch != 0 {
				o.Date = time.Unix(epoch, 0)
			}
			return writeDocs(cmd.Root(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ManDir, "man", "", "write man pages (section 1) into DIR")
	f.StringVar(&o.CompletionDir, "completions", "", "write pve-image.bash, pve-image.zsh and pve-image.fish into DIR")
	f.Int64Var(&epoch, "date", 0, "the pages' date, seconds since 1970 (default $SOURCE_DATE_EPOCH, else now)")
	return cmd
}
