package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/lifecycle"
)

func (a *app) migrateCommand() *cobra.Command {
	var pf pveFlags
	var cf convertFlags
	var to, targetStorage string
	var timeout int
	cmd := &cobra.Command{
		Use:   "migrate VMID --to NODE",
		Short: "Move a container to another node of the cluster",
		Long: `Migrate a container with Proxmox's migration. A running container moves by
restart (Proxmox has no live migration for containers): it is shut down
(stopped hard after --timeout), moved, and started on the target; if that
fails, it starts again where it was. The template of its image goes to the
target's template storage first when that lacks it, for later updates.
What Proxmox refuses (bind mounts of this node, volumes of other guests,
snapshots on local storage) is reported with its reason and what to do.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vmid, err := parseVMID(args[0])
			if err != nil {
				return err
			}
			if to == "" {
				return errors.New("--to NODE: the node to move the container to")
			}
			ctx := cmd.Context()
			m, _, err := a.manager(ctx, &pf, &cf, false)
			if err != nil {
				return err
			}
			from, err := m.Migrate(ctx, lifecycle.MigrateRequest{VMID: vmid, From: nodeFlag(cmd, &pf), To: to, Timeout: timeout, TargetStorage: targetStorage})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "CT %d: %s -> %s\n", vmid, from, to)
			return nil
		},
	}
	pf.register(cmd, true)
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "the node to move the container to")
	f.IntVar(&timeout, "timeout", 0, "seconds a running container's shutdown may take before it is stopped hard (default: Proxmox's 180)")
	f.StringVar(&targetStorage, "target-storage", "", "map storages on the target: SRC:DST,... or one storage for all")
	return cmd
}
