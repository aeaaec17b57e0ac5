package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/export"
	"github.com/pve-image/pve-image/internal/bytesize"
	"github.com/pve-image/pve-image/template"
)

func (a *app) exportCommand() *cobra.Command {
	var pf pveFlags
	var cf convertFlags
	var req export.Request
	var mode, backupStorage string
	cmd := &cobra.Command{
		Use:   "export VMID|ARCHIVE --to REF [--volumes] [--mode snapshot|suspend|stop] [--backup-storage S]",
		Short: "Make an OCI image of a container or of its vzdump archive",
		Long: `Make an OCI image of a Proxmox container: of its vzdump archive (.tar,
.tar.gz, .tar.zst), or of VMID, which is backed up for it first (vzdump
over the API, --mode as given, zstd, on --backup-storage or the node's first
backup storage). Proxmox has no API that hands out a backup's bytes, so
pve-image reads the archive where vzdump wrote it: run it on the node, or
where that storage is mounted at the same path. The archive made for the
export is removed once the image is written (kept after a failure).

A container made by pve-image run becomes the image it came from's layers,
reused as they are (mounted from the same registry, not uploaded again),
and one layer with what the container changed: files added or changed,
whiteouts for deleted ones, an opaque marker where a directory was
replaced. Converting the exported image gives back the container's root
file system. The source image is the one pve-image run recorded in the
container's Proxmox config (its description), which the container cannot
change; the container's /etc/pve-image/image.json must name the same image.
When they disagree, or there is no record, the export is one layer and a
note says why: nothing the container wrote decides what is pulled with your
credentials. Any other container, or --single-layer, becomes one layer
holding its root file system. Either way /etc/hostname, /etc/hosts,
/etc/resolv.conf, /etc/pve-image/image.json and what vzdump leaves out
(/tmp/*, /var/tmp/*, /dev/*, lost+found) are not taken over from the
container.

The config carries the container's program (the source image's, with run's
--env and --entrypoint; one layer of a container pve-image's init shim runs
gets the program the shim runs, never the shim), and its Proxmox config as
labels io.github.pve-image.export.*
(memory, cores, swap, NICs without MAC addresses, features, mount points);
pve-image restore makes a container of it again. --volumes adds the data of
volume mount points with backup=1, one layer each.

REF is a registry reference (pushed with the credentials pulls use),
oci:DIR[:TAG] or oci-archive:FILE[:TAG]. Prints the image's digest. The
same archive always gives the same digest.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			b, err := a.builder(a.progress())
			if err != nil {
				return err
			}
			opts, err := cf.options(template.Zstd)
			if err != nil {
				return err
			}
			ropts, err := a.registryOptions(nil)
			if err != nil {
				return err
			}
			e := &export.Exporter{Builder: b, Convert: opts, Registry: ropts, Log: a.log, Out: a.stderr}
			var res *export.Result
			if vmid, isVMID := vmidArg(args[0]); isVMID {
				cl, _, err := a.dial(ctx, &pf)
				if err != nil {
					return err
				}
				res, err = e.Container(ctx, cl, export.Backup{Node: nodeFlag(cmd, &pf), VMID: vmid, Storage: backupStorage, Mode: mode}, req)
				if err != nil {
					return err
				}
			} else if res, err = e.Archive(ctx, args[0], req); err != nil {
				return err
			}
			if res.Source != "" {
				fmt.Fprintf(a.stderr, "%d layers of %s, reused\n", res.BaseLayers, res.Source)
			}
			for _, l := range res.Layers {
				fmt.Fprintf(a.stderr, "%s: %s, %s, %d entries\n", l.What, l.Digest, bytesize.Format(l.Size), l.Entries)
			}
			for _, n := range res.Notes {
				fmt.Fprintf(a.stderr, "note: %s\n", n)
			}
			fmt.Fprintln(a.stdout, res.Digest)
			return nil
		},
	}
	pf.register(cmd, false)
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&req.To, "to", "", "where the image goes: REF (a registry), oci:DIR[:TAG] or oci-archive:FILE[:TAG]")
	f.BoolVar(&req.Volumes, "volumes", false, "add the data of volume mount points with backup=1, one layer each")
	f.BoolVar(&req.SingleLayer, "single-layer", false, "one layer of the whole root file system, even for a container made from a pve-image template")
	f.StringVar(&mode, "mode", "snapshot", "vzdump's mode for VMID: snapshot (falls back to suspend where volumes cannot be snapshotted), suspend or stop")
	f.StringVar(&backupStorage, "backup-storage", "", "storage for the archive of VMID, readable here (default: the node's first storage for backups that is not a Proxmox Backup Server)")
	cmd.MarkFlagRequired("to")
	return cmd
}

// vmidArg says whether arg names a container rather than an archive: a
// number, and no file of that name here.
func vmidArg(arg string) (int, bool) {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 100 {
		return 0, false
	}
	if _, err := os.Stat(arg); err == nil {
		return 0, false
	}
	return n, true
}
