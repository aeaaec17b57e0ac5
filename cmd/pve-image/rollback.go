package main

import (
	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/lifecycle"
)

func (a *app) rollbackCommand() *cobra.Command {
	var pf pveFlags
	var cf convertFlags
	var lf lifecycleFlags
	cmd := &cobra.Command{
		Use:   "rollback VMID [--dry-run] | rollback --resume VMID",
		Short: "Return a container to the image and config it had before its last update",
		Long: `Restore the rollback point the last update left (the container's root file
system and config before it, archived without its volumes) over the
container, under the same VMID, with the volumes kept: those the old image
had go back where they were, those the update added stay as unused volumes
with their data. The container as it is now is archived first, and a
failure (including one that does not keep running for --health-timeout)
returns to it. There is one rollback point, until the next update.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vmid, err := parseVMID(args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			m, _, err := a.manager(ctx, &pf, &cf, false)
			if err != nil {
				return err
			}
			if lf.resume {
				out, err := m.Resume(ctx, vmid)
				a.printOutcome(out, false)
				return err
			}
			out, err := m.Rollback(ctx, lifecycle.RollbackRequest{VMID: vmid, Node: nodeFlag(cmd, &pf), BackupStorage: lf.backupStorage,
				HealthTimeout: lf.health, StopTimeout: lf.stopTimeout, DryRun: lf.dryRun})
			a.printOutcome(out, lf.dryRun)
			return err
		},
	}
	pf.register(cmd, true)
	cf.register(cmd)
	lf.register(cmd)
	return cmd
}
