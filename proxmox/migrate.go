package proxmox

import (
	"context"
	"fmt"
	"strconv"
)

// MigrateRequest moves a container to another node of the cluster:
// POST /nodes/{node}/lxc/{vmid}/migrate (proxmox-lifecycle.md §7).
type MigrateRequest struct {
	Node   string // where it is
	VMID   int
	Target string
	// Restart shuts a running container down, migrates it and starts it
	// on the target: containers have no live migration.
	Restart bool
	// Timeout is the shutdown timeout of a restart migration in
	// seconds (Proxmox: 180); 0 leaves Proxmox's.
	Timeout int
	// TargetStorage maps storages, "src:dst,..." or one ID for all.
	TargetStorage string
}

// Migrate migrates and waits for the task. What Proxmox refuses (a
// running container without Restart, local bind mounts, volumes of
// another guest) comes back with Proxmox's reason.
func (c *Client) Migrate(ctx context.Context, r MigrateRequest) error {
	body := map[string]string{"target": r.Target}
	if r.Restart {
		body["restart"] = "1"
		if r.Timeout > 0 {
			body["timeout"] = strconv.Itoa(r.Timeout)
		}
	}
	if r.TargetStorage != "" {
		body["target-storage"] = r.TargetStorage
	}
	var upid string
	if err := c.post(ctx, ctPath(r.Node, r.VMID, "/migrate"), body, &upid); err != nil {
		return fmt.Errorf("migrate CT %d from %s to %s: %w", r.VMID, r.Node, r.Target, err)
	}
	if _, err := c.WaitTask(ctx, upid); err != nil {
		return fmt.Errorf("migrate CT %d from %s to %s: %w", r.VMID, r.Node, r.Target, err)
	}
	return nil
}
