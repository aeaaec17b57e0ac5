package main

import (
	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/lifecycle"
)

func (a *app) restoreCommand() *cobra.Command {
	var pf pveFlags
	var cf convertFlags
	var r lifecycle.RestoreRequest
	cmd := &cobra.Command{
		Use:   "restore IMAGE --node N|auto [--vmid ID] [--rootfs-storage S] [--host-config]",
		Short: "Create a container from an image pve-image export made, with the configuration it recorded",
		Long: `Create (and start) a container from IMAGE as run does — converted, pushed to
the template storage (--storage) if missing, created unprivileged — with the
configuration pve-image export recorded in the image's labels: hostname,
memory, cores, swap, features, NICs (with new MAC addresses), DNS, onboot,
startup, tags, the root disk's size, and every volume mount point, made anew
with its size and options and filled with the data the image holds at its
path (export --volumes puts it there). The root disk is at least the size
recorded, with --node auto too.

What reaches into the host is not taken from an image's labels unless
--host-config says so, since any image can carry such labels: without it,
bind mounts are not made (a note names each, with its host path) and of the
recorded features only nesting is set (a note names the others). With
--host-config, bind mounts and every recorded feature are made again; as
Proxmox allows that to root@pam only, restore refuses any other login
before it creates anything. An image export did not make is run as run
runs it. Prints the VMID.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			m, pc, err := a.manager(ctx, &pf, &cf, true)
			if err != nil {
				return err
			}
			r.Image, r.Node = args[0], pc.Node
			res, err := m.Restore(ctx, r)
			return a.printCreated(res, err)
		},
	}
	pf.register(cmd, true)
	cmd.Flags().Lookup("node").Usage = nodeAutoUsage
	cf.register(cmd)
	f := cmd.Flags()
	f.IntVar(&r.VMID, "vmid", 0, "VMID (default: the cluster's next free one)")
	f.StringVar(&r.RootfsStorage, "rootfs-storage", "", "storage for the root disk and the volumes (default: the node's first storage for container directories)")
	f.BoolVar(&r.HostConfig, "host-config", false, "make the recorded bind mounts again and set every recorded feature, not only nesting (root@pam only)")
	f.BoolVar(&r.Start, "start", true, "start the container and wait until it runs (--start=false only creates it)")
	return cmd
}
