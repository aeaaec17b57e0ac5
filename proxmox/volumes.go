package proxmox

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// ReassignVolume moves the volume under key of container vmid to container
// target, under targetKey, and waits for the task: POST .../move_volume with
// target-vmid (proxmox-lifecycle.md §1). Proxmox renames the volume on its
// storage to the target's next free vm-<target>-disk-N; the target's config
// line keeps the source's options. Both containers must be on node, the
// source stopped unless key is unusedN, neither locked; rootfs never moves.
func (c *Client) ReassignVolume(ctx context.Context, node string, vmid int, key string, target int, targetKey string) error {
	body := map[string]string{"volume": key, "target-vmid": strconv.Itoa(target), "target-volume": targetKey}
	var upid string
	if err := c.post(ctx, ctPath(node, vmid, "/move_volume"), body, &upid); err != nil {
		return fmt.Errorf("move %s of CT %d to %s of CT %d: %w", key, vmid, targetKey, target, err)
	}
	if _, err := c.WaitTask(ctx, upid); err != nil {
		return fmt.Errorf("move %s of CT %d to %s of CT %d: %w", key, vmid, targetKey, target, err)
	}
	return nil
}

// WaitUnlocked waits until the container's config has no lock (a backup,
// a create or a migration in progress), for up to timeout. A container
// that does not exist is not locked.
func (c *Client) WaitUnlocked(ctx context.Context, node string, vmid int, timeout time.Duration) (CTConfig, error) {
	deadline := time.Now().Add(timeout)
	for {
		cfg, err := c.ReadConfig(ctx, node, vmid)
		if err != nil || cfg.Locked() == "" {
			return cfg, err
		}
		if time.Now().After(deadline) {
			return cfg, fmt.Errorf("CT %d is still locked (%s) after %s: a Proxmox task holds it; wait for it to end (node %s, Tasks) and try again", vmid, cfg.Locked(), timeout, node)
		}
		select {
		case <-ctx.Done():
			return cfg, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
