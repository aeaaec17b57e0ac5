package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// NextID asks the cluster for a free VMID.
func (c *Client) NextID(ctx context.Context) (int, error) {
	var s string
	if err := c.get(ctx, "/cluster/nextid", &s); err != nil {
		return 0, err
	}
	return strconv.Atoi(s)
}

// ErrVMIDTaken is returned by CreateContainer when another guest has the
// VMID, so that callers can retry with a fresh one.
var ErrVMIDTaken = errors.New("VMID already in use")

// CreateContainer creates a container and waits for the task. options are
// the parameters of POST /nodes/{node}/lxc (ostemplate, rootfs, ostype,
// net0, ...). A failed creation is cleaned up: nothing half-created stays.
func (c *Client) CreateContainer(ctx context.Context, node string, vmid int, options map[string]string) (warnings string, err error) {
	body := map[string]string{"vmid": strconv.Itoa(vmid)}
	for k, v := range options {
		body[k] = v
	}
	var upid string
	if err := c.post(ctx, fmt.Sprintf("/nodes/%s/lxc", url.PathEscape(node)), body, &upid); err != nil {
		if strings.Contains(err.Error(), "already exists") {
			return "", fmt.Errorf("%w: %v", ErrVMIDTaken, err)
		}
		return "", err
	}
	// Once Proxmox has the task, the caller giving up must not leave a
	// container nobody knows of: wait for the task regardless, and remove
	// what it made.
	dctx, cancel := detached(ctx)
	defer cancel()
	warnings, err = c.WaitTask(dctx, upid)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		// Proxmox removes what a failed create made, but not always (a
		// create that dies after writing the config): make sure.
		c.destroyIfThere(dctx, node, vmid)
		return "", err
	}
	return warnings, nil
}

// cleanupTimeout bounds the work done after a caller has given up.
const cleanupTimeout = 10 * time.Minute

// detached is ctx without its cancellation, for finishing and cleaning up
// what Proxmox already started.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// destroyIfThere removes a container that exists; a status error other
// than not-found still tries, since leaving it is worse.
func (c *Client) destroyIfThere(ctx context.Context, node string, vmid int) {
	if _, err := c.ContainerStatus(ctx, node, vmid); errors.Is(err, ErrNotFound) {
		return
	}
	c.DestroyContainer(ctx, node, vmid, true)
}

// ContainerState is what status/current says.
type ContainerState struct {
	VMID   int     `json:"vmid"`
	Name   string  `json:"name"`
	Status string  `json:"status"` // running, stopped
	Uptime int64   `json:"uptime"`
	CPU    float64 `json:"cpu"`
	CPUs   float64 `json:"cpus"`
	Mem    int64   `json:"mem"`
	MaxMem int64   `json:"maxmem"`
	Disk   int64   `json:"disk"`
	NetIn  int64   `json:"netin"`
	NetOut int64   `json:"netout"`
	// Template is 1 for a template (the node's list says so; pve-container
	// LXC.pm vmstatus), Tags the container's tags, ';'-separated.
	Template int    `json:"template,omitempty"`
	Tags     string `json:"tags,omitempty"`
	// Node is set by ClusterContainers (status/current does not say).
	Node string `json:"node,omitempty"`
}

func ctPath(node string, vmid int, rest string) string {
	return fmt.Sprintf("/nodes/%s/lxc/%d%s", url.PathEscape(node), vmid, rest)
}

// ContainerStatus reads a container's state.
func (c *Client) ContainerStatus(ctx context.Context, node string, vmid int) (ContainerState, error) {
	var s ContainerState
	err := c.get(ctx, ctPath(node, vmid, "/status/current"), &s)
	return s, err
}

// Containers lists a node's containers.
func (c *Client) Containers(ctx context.Context, node string) ([]ContainerState, error) {
	var out []ContainerState
	return out, c.get(ctx, fmt.Sprintf("/nodes/%s/lxc", url.PathEscape(node)), &out)
}

func (c *Client) power(ctx context.Context, node string, vmid int, action string, body map[string]string) error {
	var upid string
	if err := c.post(ctx, ctPath(node, vmid, "/status/"+action), body, &upid); err != nil {
		return err
	}
	_, err := c.WaitTask(ctx, upid)
	return err
}

// StartContainer starts a container and waits for the start task.
func (c *Client) StartContainer(ctx context.Context, node string, vmid int) error {
	return c.power(ctx, node, vmid, "start", nil)
}

// ShutdownContainer asks the container's init to halt (its halt signal),
// waiting up to timeoutSec; force stops it hard after that.
func (c *Client) ShutdownContainer(ctx context.Context, node string, vmid, timeoutSec int, force bool) error {
	body := map[string]string{"timeout": strconv.Itoa(timeoutSec)}
	if force {
		body["forceStop"] = "1"
	}
	return c.power(ctx, node, vmid, "shutdown", body)
}

// StopContainer stops a container at once.
func (c *Client) StopContainer(ctx context.Context, node string, vmid int) error {
	return c.power(ctx, node, vmid, "stop", nil)
}

// DestroyContainer removes a container and its volumes.
func (c *Client) DestroyContainer(ctx context.Context, node string, vmid int, force bool) error {
	p := ctPath(node, vmid, "?purge=1")
	if force {
		p += "&force=1"
	}
	var upid string
	if err := c.del(ctx, p, &upid); err != nil {
		return err
	}
	_, err := c.WaitTask(ctx, upid)
	return err
}

// ContainerConfig reads a container's config.
func (c *Client) ContainerConfig(ctx context.Context, node string, vmid int) (map[string]any, error) {
	var cfg map[string]any
	return cfg, c.get(ctx, ctPath(node, vmid, "/config"), &cfg)
}

// SetContainerConfig changes config keys (PUT /config).
func (c *Client) SetContainerConfig(ctx context.Context, node string, vmid int, options map[string]string) error {
	return c.put(ctx, ctPath(node, vmid, "/config"), options, nil)
}
