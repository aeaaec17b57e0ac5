package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/template"
)

type runFlags struct {
	vmid       int
	hostname   string
	memory     int
	cores      int
	rootfs     string
	nets       []string
	env        []string
	entrypoint []string
	start      bool
}

func (a *app) runCommand() *cobra.Command {
	var pf pveFlags
	var cf convertFlags
	var rf runFlags
	cmd := &cobra.Command{
		Use:   "run IMAGE --node N [flags]",
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
again if another client wins the race.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cl, pc, err := a.dialNode(ctx, &pf)
			if err != nil {
				return err
			}
			t, err := a.templateFor(ctx, args[0], &cf, "template")
			if err != nil {
				return err
			}
			if t.meta == nil {
				return errors.New("run takes an image, not a template file: the image's run config is needed")
			}
			// What this Proxmox cannot do is refused before anything is
			// uploaded.
			if _, err := t.meta.PVEConfig(cl.Version().Native(), template.Overrides{Env: rf.env, Entrypoint: rf.entrypoint}); err != nil {
				return err
			}
			volid, err := a.push(ctx, cl, pc.Node, pc.Storage, t, false)
			if err != nil {
				return err
			}
			vmid, err := a.createContainer(ctx, cl, pc.Node, volid, t.meta, &rf)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, vmid)
			return nil
		},
	}
	pf.register(cmd, true)
	cf.register(cmd)
	f := cmd.Flags()
	f.IntVar(&rf.vmid, "vmid", 0, "VMID (default: the cluster's next free one)")
	f.StringVar(&rf.hostname, "hostname", "", "container hostname (default: the image's name)")
	f.IntVar(&rf.memory, "memory", 512, "memory in MiB")
	f.IntVar(&rf.cores, "cores", 0, "CPU cores (default: all)")
	f.StringVar(&rf.rootfs, "rootfs", "", "root disk STORAGE:GB (default: a rootdir storage of the node, sized from the image)")
	f.StringArrayVar(&rf.nets, "net", []string{"name=eth0,bridge=vmbr0,ip=dhcp"}, "NIC as Proxmox's netN option (repeatable: net0, net1, ...)")
	f.StringArrayVar(&rf.env, "env", nil, "KEY=value over the image's env (repeatable; Proxmox 9.1+)")
	f.StringSliceVar(&rf.entrypoint, "entrypoint", nil, "program and arguments (comma-separated) to run instead of the image's (Proxmox 9.1+)")
	f.BoolVar(&rf.start, "start", true, "start the container and wait until it runs (--start=false only creates it)")
	return cmd
}

// createContainer creates the container and, unless told not to, starts it.
func (a *app) createContainer(ctx context.Context, cl *proxmox.Client, node, volid string, m *template.Meta, rf *runFlags) (int, error) {
	pc, err := m.PVEConfig(cl.Version().Native(), template.Overrides{Env: rf.env, Entrypoint: rf.entrypoint})
	if err != nil {
		return 0, err
	}
	for _, n := range pc.Notes {
		fmt.Fprintln(a.stderr, "note:", n)
	}
	opts := map[string]string{"ostemplate": volid, "unprivileged": "1", "memory": strconv.Itoa(rf.memory), "hostname": rf.hostname}
	if opts["hostname"] == "" {
		opts["hostname"] = hostnameFor(m)
	}
	if rf.cores > 0 {
		opts["cores"] = strconv.Itoa(rf.cores)
	}
	opts["rootfs"] = rf.rootfs
	if opts["rootfs"] == "" {
		if opts["rootfs"], err = cl.RootfsFor(ctx, node, m.RootfsSize); err != nil {
			return 0, fmt.Errorf("%w; name one with --rootfs STORAGE:GB", err)
		}
	} else if s, gb, ok := strings.Cut(rf.rootfs, ":"); !ok || s == "" || gb == "" {
		return 0, fmt.Errorf("--rootfs %q: want STORAGE:GB", rf.rootfs)
	}
	spec := pc.Spec(opts, rf.nets)
	spec.VMID, spec.Start = rf.vmid, rf.start
	vmid, warn, err := cl.Launch(ctx, node, spec)
	if warn != "" {
		fmt.Fprintf(a.stderr, "container %d created with %s (see the task log in Proxmox)\n", vmid, strings.ToLower(warn))
	}
	return vmid, err
}

// hostnameFor makes a hostname from the image's name.
func hostnameFor(m *template.Meta) string {
	name := m.Repository
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	h := strings.Trim(b.String(), "-")
	if h == "" || h[0] >= '0' && h[0] <= '9' {
		h = "ct-" + h
	}
	return h[:min(len(h), 63)]
}
