package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/batch"
	"github.com/pve-image/pve-image/lifecycle"
	"github.com/pve-image/pve-image/pvestore"
)

func (a *app) syncCommand() *cobra.Command {
	var file string
	var allNodes, prune, dryRun bool
	var keep, parallel int
	var pf pveFlags
	cmd := &cobra.Command{
		Use:   "sync -f pve-images.yaml --node N | --all-nodes --storage S [--keep K] [--prune] [--dry-run]",
		Short: "Make a cluster's storages hold the templates a build file lists",
		Long: `Upload to each node's storage the templates of the build file it lacks (a
shared storage once), at the digests of the lock file where it has them. A
template the cache or the template registry already describes is only
fetched when some storage lacks it. With --prune, templates pve-image made
for the same images (and arch) are removed beyond the newest K, the build
file's counting first; a template pve-image did not make is never removed.

Prints what it changed; a second run changes nothing. A node that cannot be
reached is reported and the others are synced (exit 1).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := batch.Load(file, a.insecure)
			if err != nil {
				return a.badInput(err)
			}
			for _, w := range f.Warnings {
				fmt.Fprintln(a.stderr, "warning:", w)
			}
			r, err := a.runner(&pf, parallel, nil)
			if err != nil {
				return err
			}
			pc, err := pf.resolve()
			if err != nil {
				return err
			}
			// Flags and the environment first, then the build file's
			// output.proxmox, then the config file's context.
			o := batch.SyncOptions{AllNodes: allNodes, Prune: prune, Keep: keep, DryRun: dryRun}
			explicit := func(flag, env string) bool { return cmd.Flags().Changed(flag) || a.getenv(env) != "" }
			inFile := f.Output.Proxmox != nil
			if pc.Node != "" && !allNodes && (explicit("node", "PVE_NODE") || !inFile) {
				if pc.Node == lifecycle.Auto {
					// Placement picks one node per container; sync fills
					// the nodes containers may land on.
					return a.badInput(errors.New("sync --node auto: templates go to named nodes; give --node NODE or --all-nodes"))
				}
				o.Nodes = []string{pc.Node}
			}
			if explicit("storage", "PVE_STORAGE") || !inFile || f.Output.Proxmox.Storage == "" {
				o.Storage = pc.Storage
			}
			rep, err := r.Sync(cmd.Context(), f, o)
			if batch.IsInvalid(err) {
				return a.badInput(err)
			}
			if rep != nil && rep.Report != nil {
				for _, ev := range rep.Events {
					if ev.Action != pvestore.Present {
						fmt.Fprintf(a.stdout, "%s %s on %s\n", ev.Action, ev.Volid, ev.Node)
					}
				}
			}
			if err != nil {
				return err
			}
			if rep.Changed() == 0 {
				fmt.Fprintln(a.stdout, "nothing to change")
			}
			if err := rep.Err(); err != nil {
				fmt.Fprintln(a.stderr, "pve-image sync:", err)
				return exitError(1)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&file, "file", "f", "pve-images.yaml", "the build file")
	fl.BoolVar(&allNodes, "all-nodes", false, "sync every node of the cluster (a shared storage once)")
	fl.BoolVar(&prune, "prune", false, "remove templates pve-image made for the same images beyond the newest --keep")
	fl.IntVar(&keep, "keep", 2, "with --prune, how many templates to keep per image and arch (the build file's first)")
	fl.BoolVar(&dryRun, "dry-run", false, "say what would be uploaded and removed; change nothing")
	fl.IntVar(&parallel, "parallel", 0, "images resolved (and converted when needed) at once (default: the number of cores)")
	pf.register(cmd, true)
	return cmd
}
