package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/batch"
	"github.com/pve-image/pve-image/internal/bytesize"
	"github.com/pve-image/pve-image/pvestore"
)

func (a *app) buildCommand() *cobra.Command {
	var file, outputDir, reportPath, junitPath, shard string
	var parallel int
	var locked, update, dryRun, lockOnly bool
	var pf pveFlags
	cmd := &cobra.Command{
		Use:   "build -f pve-images.yaml [--parallel N] [--output-dir DIR] [--report FILE.json] [--junit FILE.xml] [--shard I/N] [--locked | --update] [--dry-run | --lock-only]",
		Short: "Build every template a build file lists, in parallel, and deliver them",
		Long: `Build the templates a build file lists (images, platforms, conversion options)
and deliver them where its output says: a directory, a template registry,
Proxmox storages. The whole file is checked first: an unknown key, a bad
reference or platform is an error naming the file, line and key (exit 2).

Work runs in parallel over one cache: blobs shared by several images are
fetched once, and a template already in the cache or the template registry
is not built again. A lock file beside the build file (pve-images.lock)
records the digest each tag resolved to; --locked builds exactly those,
--update resolves the tags again and rewrites it; --lock-only writes it and
builds nothing. --shard I/N builds a stable share of the work (by image and
platform), for a CI matrix of N.

A line per image and platform as it finishes (built, cached, failed: reason),
bars on a terminal; --report writes JSON, --junit JUnit XML. Exit 0 when all
succeeded, 1 when any failed (the others still finish), 2 for a build file
that cannot be used. A build run again after an interruption redoes only
what it had not finished.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := batch.Load(file, a.insecure)
			if err != nil {
				return a.badInput(err)
			}
			for _, w := range f.Warnings {
				fmt.Fprintln(a.stderr, "warning:", w)
			}
			if outputDir != "" {
				// The flag's directory is the caller's, not the file's.
				if f.Output.Dir, err = filepath.Abs(outputDir); err != nil {
					return err
				}
			}
			var sh batch.Shard
			if shard != "" {
				if sh, err = batch.ParseShard(shard); err != nil {
					return a.badInput(err)
				}
			}
			ev := a.buildEvents()
			r, err := a.runner(&pf, parallel, ev)
			if err != nil {
				return err
			}
			rep, err := r.Build(cmd.Context(), f, batch.BuildOptions{Shard: sh, Locked: locked, Update: update, DryRun: dryRun, LockOnly: lockOnly})
			ev.close()
			if batch.IsInvalid(err) {
				return a.badInput(err)
			}
			if err == nil && lockOnly {
				fmt.Fprintln(a.stdout, batch.LockPath(file))
				return nil
			}
			if rep != nil {
				if werr := writeReports(rep, reportPath, junitPath, file); werr != nil {
					return werr
				}
				fmt.Fprintln(a.stdout, rep.Summary())
			}
			if err != nil {
				return err
			}
			if rep.Failed() > 0 {
				return exitError(1)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&file, "file", "f", "pve-images.yaml", "the build file")
	fl.IntVar(&parallel, "parallel", 0, "images and platforms converted at once (default: the number of cores)")
	fl.StringVar(&outputDir, "output-dir", "", "write the template files here (over the build file's output.dir)")
	fl.StringVar(&reportPath, "report", "", "write a JSON report here: {\"results\": [...]}, per image and platform")
	fl.StringVar(&junitPath, "junit", "", "write a JUnit XML report here, for CI systems to show")
	fl.StringVar(&shard, "shard", "", "build the I-th of N stable shares of the work (I/N), for a CI matrix")
	fl.BoolVar(&locked, "locked", false, "build exactly the digests of the lock file; an image missing from it is an error")
	fl.BoolVar(&update, "update", false, "resolve every tag again and rewrite the lock file")
	fl.BoolVar(&dryRun, "dry-run", false, "resolve and say what would be built; write nothing")
	fl.BoolVar(&lockOnly, "lock-only", false, "resolve the tags, write the lock file and build nothing (a pipeline's first job)")
	cmd.MarkFlagsMutuallyExclusive("locked", "update")
	cmd.MarkFlagsMutuallyExclusive("locked", "lock-only")
	cmd.MarkFlagsMutuallyExclusive("dry-run", "lock-only")
	pf.register(cmd, false)
	// The build file names the nodes (output.proxmox).
	cmd.Flags().MarkHidden("node")
	return cmd
}

// badInput reports a build file (or flag) that cannot be used and ends
// with exit status 2, as the build command promises.
func (a *app) badInput(err error) error {
	fmt.Fprintln(a.stderr, "pve-image:", err)
	return exitError(2)
}

// writeReports writes the JSON and JUnit reports that were asked for.
func writeReports(rep *batch.Report, jsonPath, junitPath, file string) error {
	if jsonPath != "" {
		if err := rep.WriteJSON(jsonPath); err != nil {
			return err
		}
	}
	if junitPath != "" {
		if err := rep.WriteJUnit(junitPath, "pve-image build "+file); err != nil {
			return err
		}
	}
	return nil
}

// runner is a batch.Runner from the global flags.
func (a *app) runner(pf *pveFlags, parallel int, ev batch.Events) (*batch.Runner, error) {
	c, err := a.openCache()
	if err != nil {
		return nil, err
	}
	ropts, err := a.registryOptions(nil)
	if err != nil {
		return nil, err
	}
	topts, err := a.templateRegistryOptions()
	if err != nil {
		return nil, err
	}
	if parallel < 0 {
		return nil, fmt.Errorf("--parallel %d: want 1 or more (0: the number of cores)", parallel)
	}
	return &batch.Runner{
		Cache: c, Registry: ropts, Version: fullVersion(), TemplateRegistry: a.templateRegistry, Templates: topts,
		Proxmox: func(ctx context.Context) (pvestore.Client, error) {
			cl, _, err := a.dial(ctx, pf)
			if err != nil {
				return nil, err
			}
			return cl, nil
		},
		Shim:           findShim,
		Parallel:       parallel,
		Events:         ev,
		Log:            a.log,
		UploadProgress: func(name, node string) func(sent, total int64) { return a.uploadProgress(name, node) },
	}, nil
}

// buildEvents shows a build's progress on stderr: a line per image and
// platform as it finishes, and on a terminal bars for those running.
func (a *app) buildEvents() *buildEvents {
	return &buildEvents{w: a.stderr, tty: isTerminal(a.stderr), running: map[*batch.Item]*runningItem{}}
}

type buildEvents struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	order   []*batch.Item
	running map[*batch.Item]*runningItem
	drawn   int
	last    time.Time
}

type runningItem struct{ done, total int64 }

func (e *buildEvents) Started(it *batch.Item) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.running[it] = &runningItem{}
	e.order = append(e.order, it)
	e.draw(false)
}

func (e *buildEvents) Fetched(it *batch.Item, done, total int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r := e.running[it]; r != nil {
		r.done, r.total = done, total
	}
	e.draw(false)
}

func (e *buildEvents) Finished(it *batch.Item, r *batch.Result) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.running, it)
	for i, o := range e.order {
		if o == it {
			e.order = append(e.order[:i], e.order[i+1:]...)
			break
		}
	}
	e.clear()
	line := fmt.Sprintf("%s %s: %s", r.Ref, r.Platform, r.Status)
	switch r.Status {
	case batch.Failed:
		line += ": " + strings.ReplaceAll(r.Error, "\n", "; ")
	case batch.Built, batch.Cached:
		line += fmt.Sprintf(" (%s, %.1fs)", shortName(r.File), r.Seconds)
	}
	fmt.Fprintln(e.w, line)
	e.draw(true)
}

func shortName(p string) string { return filepath.Base(p) }

// clear removes the bars drawn last.
func (e *buildEvents) clear() {
	if e.tty && e.drawn > 0 {
		fmt.Fprintf(e.w, "\x1b[%dA\x1b[J", e.drawn)
		e.drawn = 0
	}
}

// draw shows a bar per running item, at most ten times a second unless
// forced.
func (e *buildEvents) draw(force bool) {
	if !e.tty || (!force && time.Since(e.last) < 100*time.Millisecond) {
		return
	}
	e.last = time.Now()
	e.clear()
	const width = 24
	for _, it := range e.order {
		r := e.running[it]
		fill := 0
		if r.total > 0 {
			fill = int(min(r.done, r.total) * width / r.total)
		}
		fmt.Fprintf(e.w, "%-50.50s [%-24s] %s / %s\n", it.String(), strings.Repeat("=", fill), bytesize.Format(r.done), bytesize.Format(r.total))
		e.drawn++
	}
}

func (e *buildEvents) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.clear()
}
