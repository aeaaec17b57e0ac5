package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/lifecycle"
	"github.com/pve-image/pve-image/template"
)

// manager builds the lifecycle manager from the flags: the Proxmox
// connection, the converter, and the journal directory of this cluster.
// With needNode, a node (or auto) must be given.
func (a *app) manager(ctx context.Context, pf *pveFlags, cf *convertFlags, needNodeFlag bool) (*lifecycle.Manager, pveContext, error) {
	cl, pc, err := a.dial(ctx, pf)
	if err != nil {
		return nil, pc, err
	}
	if needNodeFlag {
		if err := needNode(pc); err != nil {
			return nil, pc, err
		}
	}
	b, err := a.builder(a.progress())
	if err != nil {
		return nil, pc, err
	}
	opts, err := cf.options(template.Zstd)
	if err != nil {
		return nil, pc, err
	}
	m := &lifecycle.Manager{PVE: cl, Builder: b, Convert: opts, Insecure: a.insecure, TemplateStorage: pc.Storage,
		StateDir: filepath.Join(b.Cache.Dir(), "lifecycle", clusterKey(pc.URL)), Log: a.log, Out: a.stderr,
		UploadProgress: a.uploadProgress}
	// A test hook: the process kills itself (SIGKILL) once journal step N
	// is recorded done, to check that --resume ends every interrupted
	// update well.
	if n, _ := strconv.Atoi(os.Getenv("PVE_IMAGE_CRASH_AFTER_STEP")); n > 0 {
		m.AfterStep = func(i int, _ lifecycle.Step) {
			if i == n {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	return m, pc, nil
}

var unsafeKey = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

// clusterKey names a cluster's journal directory by its API's host and
// port.
func clusterKey(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		u = &url.URL{Host: raw}
	}
	return unsafeKey.ReplaceAllString(u.Host, "_")
}

// nodeFlag is the node the user named on the command line, "" when the
// container is to be found (a node from the environment or config file
// names where new containers go, not where a given one is).
func nodeFlag(cmd *cobra.Command, pf *pveFlags) string {
	if cmd.Flags().Changed("node") {
		return pf.node
	}
	return ""
}

type lifecycleFlags struct {
	health        time.Duration
	stopTimeout   int
	backupStorage string
	dryRun        bool
	resume        bool
}

func (lf *lifecycleFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.DurationVar(&lf.health, "health-timeout", lifecycle.DefaultHealthTimeout, "how long the container must keep running afterwards; a container that stops sooner is returned to what it was")
	f.IntVar(&lf.stopTimeout, "stop-timeout", lifecycle.DefaultStopTimeout, "seconds a shutdown may take before the container is stopped hard")
	f.StringVar(&lf.backupStorage, "backup-storage", "", "storage for the archives (default: the node's first storage for backups)")
	f.BoolVar(&lf.dryRun, "dry-run", false, "print the plan and change nothing")
	f.BoolVar(&lf.resume, "resume", false, "finish (or undo) an update or rollback of VMID that was interrupted")
}

func (a *app) updateCommand() *cobra.Command {
	var pf pveFlags
	var cf convertFlags
	var lf lifecycleFlags
	var image string
	cmd := &cobra.Command{
		Use:   "update VMID [--image REF] [--dry-run] | update --resume VMID",
		Short: "Move a container made by run to a new version of its image, keeping its config and data",
		Long: `Resolve the container's image again (the reference run recorded in its
description, or --image) and, if it names another digest, bring the
container back under the same VMID from the new image's template, with
everything the user set kept: memory, cores, swap, every NIC with its MAC
address, env and entrypoint overrides, features, tags, description,
onboot and startup order, and every volume with its data.

Proxmox cannot move a root disk between containers, and a forced restore
destroys every volume a container owns, so the update: creates a temporary
container from the new template and archives it (vzdump); stops the
container; moves its volumes to the temporary container; archives the
container without them (the rollback point); restores the new archive over
it with its config; moves the volumes back; starts it and checks that it
keeps running for --health-timeout. If anything fails before that, the
container is restored from its archive, volumes attached, started as before.
Each step is journaled first: after a crash, update --resume VMID finishes
or undoes it. The same digest is "up to date": nothing is touched.`,
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
			out, err := m.Update(ctx, lifecycle.UpdateRequest{VMID: vmid, Node: nodeFlag(cmd, &pf), Image: image,
				BackupStorage: lf.backupStorage, HealthTimeout: lf.health, StopTimeout: lf.stopTimeout, DryRun: lf.dryRun})
			a.printOutcome(out, lf.dryRun)
			return err
		},
	}
	pf.register(cmd, true)
	cf.register(cmd)
	lf.register(cmd)
	cmd.Flags().StringVar(&image, "image", "", "update to this image reference (another tag) instead of the recorded one")
	return cmd
}

func parseVMID(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 999999999 {
		return 0, fmt.Errorf("VMID %q: want a number from 100 to 999999999", s)
	}
	return n, nil
}

// printOutcome tells what an update or rollback did, or (dry run) would do.
func (a *app) printOutcome(out *lifecycle.Outcome, dryRun bool) {
	if out == nil {
		return
	}
	switch {
	case out.UpToDate:
		fmt.Fprintf(a.stdout, "CT %d is up to date: %s\n", out.VMID, out.To)
	case dryRun && out.Plan != nil:
		j := out.Plan
		fmt.Fprintf(a.stdout, "%s of CT %d on %s\n  from %s\n  to   %s\n", j.Kind, j.VMID, j.Node, out.From, out.To)
		for i, s := range j.Steps {
			fmt.Fprintf(a.stdout, "  %2d. %s\n", i+1, j.Describe(s))
		}
		fmt.Fprintln(a.stdout, "nothing was changed (--dry-run)")
	case out.Undone:
		fmt.Fprintf(a.stdout, "CT %d: undone, as it was before\n", out.VMID)
	case out.Plan != nil && out.Plan.Phase == "done":
		if out.From != "" {
			fmt.Fprintf(a.stdout, "CT %d: %s: %s -> %s\n", out.VMID, out.Plan.Kind, out.From, out.To)
		} else {
			fmt.Fprintf(a.stdout, "CT %d: %s finished (%s)\n", out.VMID, out.Plan.Kind, out.Plan.Summary)
		}
	}
}
