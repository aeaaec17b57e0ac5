package proxmox

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// ContainerSpec is a container to create.
type ContainerSpec struct {
	// VMID is the container's ID; 0 takes the cluster's next free one,
	// and takes another when a concurrent client wins the race.
	VMID int
	// Options are the parameters of POST /nodes/{node}/lxc.
	Options map[string]string
	// After is set by a config PUT right after creation: Proxmox's own OCI
	// import overwrites entrypoint and env given at create time with the
	// image's (proxmox.md §4).
	After map[string]string
	// Start starts the container and waits until it runs.
	Start bool
}

// Launch creates a container from spec on node, configures it and starts
// it. A container that fails after creation is destroyed: nothing half-made
// stays behind.
func (c *Client) Launch(ctx context.Context, node string, s ContainerSpec) (vmid int, warnings string, err error) {
	for attempt := 1; ; attempt++ {
		vmid = s.VMID
		if vmid == 0 {
			if vmid, err = c.NextID(ctx); err != nil {
				return 0, "", err
			}
		}
		warnings, err = c.CreateContainer(ctx, node, vmid, s.Options)
		if err == nil || s.VMID != 0 || !errors.Is(err, ErrVMIDTaken) || attempt >= 5 {
			break
		}
	}
	if err != nil {
		return 0, "", fmt.Errorf("create container %d on %s: %w", vmid, node, err)
	}
	if len(s.After) > 0 {
		if err := c.SetContainerConfig(ctx, node, vmid, s.After); err != nil {
			dctx, cancel := detached(ctx)
			defer cancel()
			c.destroyIfThere(dctx, node, vmid)
			return 0, "", fmt.Errorf("configure container %d: %w", vmid, err)
		}
	}
	if !s.Start {
		return vmid, warnings, nil
	}
	if err := c.StartContainer(ctx, node, vmid); err != nil {
		return vmid, warnings, fmt.Errorf("start container %d: %w", vmid, err)
	}
	return vmid, warnings, c.WaitRunning(ctx, node, vmid, time.Minute)
}

// WaitRunning polls until the container runs, after a start task that
// succeeded. Proxmox's start task ends once the container is up, so one
// that is stopped for more than a moment ran and exited already: that is
// reported at once rather than after timeout.
func (c *Client) WaitRunning(ctx context.Context, node string, vmid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	stoppedSince := time.Time{}
	for {
		st, err := c.ContainerStatus(ctx, node, vmid)
		if err != nil {
			return err
		}
		if st.Status == "running" {
			return nil
		}
		if st.Status == "stopped" {
			if stoppedSince.IsZero() {
				stoppedSince = time.Now()
			} else if time.Since(stoppedSince) > 3*time.Second {
				return fmt.Errorf("container %d started, but its init exited already (its console shows why: pct console %d)", vmid, vmid)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %d started but is %s after %s", vmid, st.Status, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// RootfsFor picks a root disk for a root filesystem of size bytes: on the
// first active storage of the node that takes container directories, the
// size plus half again (at least 512 MiB more), in whole GiB.
func (c *Client) RootfsFor(ctx context.Context, node string, size int64) (string, error) {
	sts, err := c.Storages(ctx, node, "rootdir")
	if err != nil {
		return "", err
	}
	for _, s := range sts {
		if s.Holds("rootdir") && s.Active != 0 {
			need := size + max(size/2, 512<<20)
			return fmt.Sprintf("%s:%d", s.Name, int(math.Ceil(float64(need)/(1<<30)))), nil
		}
	}
	return "", fmt.Errorf("node %s has no active storage for container root disks (content rootdir)", node)
}
