package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/lifecycle"
	"github.com/pve-image/pve-image/template"
)

type runFlags struct {
	vmid         int
	hostname     string
	memory       int
	cores        int
	rootfs       string
	nets         []string
	volumes      []string
	dns          []string
	searchdomain []string
	env          []string
	entrypoint   []string
	start        bool
}

func (a *app) runCommand() *cobra.Command {
	var pf pveFlags
	var cf convertFlags
	var rf runFlags
	cmd := &cobra.Command{
		Use:   "run IMAGE --node N|auto [flags]",
		Short: "Create (and start) a Proxmox container from an image",
		Long: `Convert IMAGE (from the cache when possible), push the template if the
storage lacks it, create an unprivileged container with what the image needs,
start it and wait until it runs. Prints the VMID.

The container gets the ostype and arch the template calls for (unmanaged for
application images), features nesting=1 for systemd images, and a root disk
sized from the image with headroom unless --rootfs says otherwise (on a
storage of the node that takes container directories). On Proxmox 9.1 and
later, application containers also get the native config: entrypoint
(pve-image-init), env (your --env merged over the image's, PATH kept),
cmode=console and host-managed=1 on each NIC; on earlier versions the
template's /sbin/init runs the image's program and --env/--entrypoint are
refused. Without --vmid a free VMID is taken from the cluster, and taken
again if another client wins the race.

The image's VOLUMEs become volume mount points (backup=1), filled with the
image's content at their path when new; --volume changes them or adds
others. --node auto places the container on the node with the most free
memory and CPU that has the storages it needs. What the image and the
container were made with is kept in its description, for update.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			m, pc, err := a.manager(ctx, &pf, &cf, true)
			if err != nil {
				return err
			}
			res, err := m.Run(ctx, lifecycle.RunRequest{Image: args[0], Node: pc.Node, VMID: rf.vmid, Hostname: rf.hostname,
				MemoryMiB: rf.memory, Cores: rf.cores, Rootfs: rf.rootfs, Nets: rf.nets, Volumes: rf.volumes,
				DNS: template.DNS{Servers: rf.dns, Search: rf.searchdomain}, Env: rf.env, Entrypoint: rf.entrypoint, Start: rf.start})
			return a.printCreated(res, err)
		},
	}
	pf.register(cmd, true)
	cmd.Flags().Lookup("node").Usage = nodeAutoUsage
	cf.register(cmd)
	f := cmd.Flags()
	f.IntVar(&rf.vmid, "vmid", 0, "VMID (default: the cluster's next free one)")
	f.StringVar(&rf.hostname, "hostname", "", "container hostname (default: the image's name)")
	f.IntVar(&rf.memory, "memory", 512, "memory in MiB")
	f.IntVar(&rf.cores, "cores", 0, "CPU cores (default: all)")
	f.StringVar(&rf.rootfs, "rootfs", "", "root disk STORAGE:GB (default: a rootdir storage of the node, sized from the image)")
	f.StringArrayVar(&rf.nets, "net", []string{"name=eth0,bridge=vmbr0,ip=dhcp"}, "NIC as Proxmox's netN option: name, bridge, tag, firewall, ip/gw, ip6/gw6 (static or dhcp), mtu, rate, hwaddr, ... (repeatable: net0, net1, ...)")
	f.StringArrayVar(&rf.volumes, "volume", nil, "PATH=STORAGE:SIZE (GiB), PATH=SIZE, PATH=/host/dir (root@pam only) or PATH=none, with optional ,key=value mount point options (repeatable)")
	f.StringSliceVar(&rf.dns, "dns", nil, "name servers of the container (comma-separated or repeatable; default: the DHCP lease's, or the node's for static addresses)")
	f.StringSliceVar(&rf.searchdomain, "searchdomain", nil, "DNS search domains of the container")
	f.StringArrayVar(&rf.env, "env", nil, "KEY=value over the image's env (repeatable; Proxmox 9.1+)")
	f.StringSliceVar(&rf.entrypoint, "entrypoint", nil, "program and arguments (comma-separated) to run instead of the image's (Proxmox 9.1+)")
	f.BoolVar(&rf.start, "start", true, "start the container and wait until it runs (--start=false only creates it)")
	return cmd
}

// printCreated prints the VMID of the container run or restore made, and
// the warnings of its creation, which Proxmox gives even when it fails.
func (a *app) printCreated(res *lifecycle.RunResult, err error) error {
	if res != nil && res.Warnings != "" {
		fmt.Fprintf(a.stderr, "container %d created with %s (see the task log in Proxmox)\n", res.VMID, strings.ToLower(res.Warnings))
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, res.VMID)
	return nil
}
