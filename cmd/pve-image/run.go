package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

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
			cl, pc, err := a.dial(ctx, &pf)
			if err != nil {
				return err
			}
			if err := needNode(pc); err != nil {
				return err
			}
			t, err := a.templateFor(ctx, args[0], &cf, "template")
			if err != nil {
				return err
			}
			if t.meta == nil {
				return errors.New("run takes an image, not a template file: the image's run config is needed")
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
	native := cl.Version().Native()
	pc, err := m.PVEConfig(native, template.Overrides{Env: rf.env, Entrypoint: rf.entrypoint})
	if err != nil {
		return 0, err
	}
	for _, n := range pc.Notes {
		fmt.Fprintln(a.stderr, "note:", n)
	}
	opts := map[string]string{
		"ostemplate":   volid,
		"unprivileged": "1",
		"memory":       strconv.Itoa(rf.memory),
		"hostname":     rf.hostname,
	}
	if opts["hostname"] == "" {
		opts["hostname"] = hostnameFor(m)
	}
	if rf.cores > 0 {
		opts["cores"] = strconv.Itoa(rf.cores)
	}
	for _, k := range []string{"ostype", "arch", "features"} {
		if v, ok := pc.Options[k]; ok {
			opts[k] = v
		}
	}
	if opts["rootfs"], err = a.rootfsFor(ctx, cl, node, rf.rootfs, m); err != nil {
		return 0, err
	}
	for i, n := range rf.nets {
		if pc.NetOptions != "" && !strings.Contains(n, "host-managed") {
			n += "," + pc.NetOptions
		}
		opts[fmt.Sprintf("net%d", i)] = n
	}
	// Proxmox's own OCI import overwrites entrypoint and env given at
	// create time with the image's; they are set afterwards (proxmox.md §4).
	after := map[string]string{}
	for _, k := range []string{"entrypoint", "env", "cmode"} {
		if v, ok := pc.Options[k]; ok {
			after[k] = v
		}
	}

	vmid := rf.vmid
	for attempt := 1; ; attempt++ {
		if rf.vmid == 0 {
			if vmid, err = cl.NextID(ctx); err != nil {
				return 0, err
			}
		}
		var warn string
		warn, err = cl.CreateContainer(ctx, node, vmid, opts)
		if warn != "" {
			fmt.Fprintf(a.stderr, "container %d created with %s (see the task log in Proxmox)\n", vmid, strings.ToLower(warn))
		}
		if err == nil || rf.vmid != 0 || !errors.Is(err, proxmox.ErrVMIDTaken) || attempt >= 5 {
			break
		}
		a.log.Debug("VMID taken meanwhile; trying the next", "vmid", vmid)
	}
	if err != nil {
		return 0, fmt.Errorf("create container %d on %s: %w", vmid, node, err)
	}
	if len(after) > 0 {
		if err := cl.SetContainerConfig(ctx, node, vmid, after); err != nil {
			cl.DestroyContainer(ctx, node, vmid, true)
			return 0, fmt.Errorf("configure container %d: %w", vmid, err)
		}
	}
	if !rf.start {
		return vmid, nil
	}
	if err := cl.StartContainer(ctx, node, vmid); err != nil {
		return 0, fmt.Errorf("start container %d: %w", vmid, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := cl.ContainerStatus(ctx, node, vmid)
		if err != nil {
			return 0, err
		}
		if st.Status == "running" {
			return vmid, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("container %d started but is %s after a minute", vmid, st.Status)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// rootfsFor is the root disk: the one asked for, or on the first storage
// of the node that takes container directories, sized to the image plus
// half again (at least 512 MiB more), in whole GiB.
func (a *app) rootfsFor(ctx context.Context, cl *proxmox.Client, node, asked string, m *template.Meta) (string, error) {
	if asked != "" {
		if s, gb, ok := strings.Cut(asked, ":"); !ok || s == "" || gb == "" {
			return "", fmt.Errorf("--rootfs %q: want STORAGE:GB", asked)
		}
		return asked, nil
	}
	sts, err := cl.Storages(ctx, node, "rootdir")
	if err != nil {
		return "", err
	}
	for _, s := range sts {
		if s.Holds("rootdir") && (s.Active == 1 || s.Active == 0 && s.Total > 0) {
			need := m.RootfsSize + max(m.RootfsSize/2, 512<<20)
			return fmt.Sprintf("%s:%d", s.Name, int(math.Ceil(float64(need)/(1<<30)))), nil
		}
	}
	return "", fmt.Errorf("node %s has no storage for container root disks (content rootdir); name one with --rootfs STORAGE:GB", node)
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
