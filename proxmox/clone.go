package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Templates and linked clones (shared/reference/proxmox-lifecycle.md §4;
// pve-container API2/LXC.pm template L1823 and clone_vm L1889).

// templateTimeout bounds the wait for a conversion into a template.
const templateTimeout = 2 * time.Minute

// MakeTemplate turns a stopped container into a template: POST
// .../template, whose vztemplate worker renames the container's volumes to
// base volumes and sets template: 1. Proxmox answers null, not the
// worker's UPID (it drops it), so the config is read until it says
// template: 1. Once the POST is sent, the caller giving up does not stop
// the wait: a container removed while the worker renames its volumes
// would leave half-renamed volumes behind. The caller's error is returned
// after the worker is done.
func (c *Client) MakeTemplate(ctx context.Context, node string, vmid int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("make container %d on %s a template: %w", vmid, node, err)
	}
	dctx, cancel := detached(ctx)
	defer cancel()
	if err := c.post(dctx, ctPath(node, vmid, "/template"), nil, nil); err != nil {
		return fmt.Errorf("make container %d on %s a template: %w", vmid, node, err)
	}
	deadline := time.Now().Add(templateTimeout)
	delay := 20 * time.Millisecond
	for {
		cfg, err := c.ReadConfig(dctx, node, vmid)
		if err != nil {
			return fmt.Errorf("make container %d on %s a template: %w", vmid, node, err)
		}
		if cfg["template"] == "1" {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("make container %d on %s a template: %w", vmid, node, err)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %d on %s is not a template %s after POST .../template: Proxmox converts it in a vztemplate task whose ID it does not return; the node's task list says what went wrong", vmid, node, templateTimeout)
		}
		if err := sleep(dctx, delay); err != nil {
			return err
		}
		delay = min(2*delay, time.Second)
	}
}

// ErrLocked is a linked clone given up because its template stayed locked
// for CloneOptions.LockWait: another client's clone, a backup, or a lock
// left by a crash.
var ErrLocked = errors.New("template container locked")

// CloneOptions are the parameters of a linked clone besides its source.
type CloneOptions struct {
	// NewID is the clone's VMID; 0 takes the cluster's next free one, and
	// another when a concurrent client takes it first.
	NewID int
	// Hostname and Description are set by the clone itself.
	Hostname, Description string
	// LockWait is how long a template another client is cloning (locked:
	// Proxmox clones from one template one at a time) is waited for;
	// default 2 minutes. The error after it is ErrLocked.
	LockWait time.Duration
}

// LinkedClone makes a linked clone (full=0) of the template vmid on node
// and waits for the vzclone task; it returns the clone's VMID. Proxmox
// holds lock: disk on the template for the whole clone and answers a
// concurrent clone with 500 "CT is locked (disk)" at once: that is waited
// out, with backoff, for up to o.LockWait. As with a create, a clone whose
// task fails is removed; nothing half-made stays. Once the clone's POST is
// sent, the caller giving up neither cuts it short nor leaves the clone
// behind: the POST and the task are waited for regardless, and the clone
// is removed.
func (c *Client) LinkedClone(ctx context.Context, node string, vmid int, o CloneOptions) (int, error) {
	if o.LockWait <= 0 {
		o.LockWait = 2 * time.Minute
	}
	lockDeadline := time.Now().Add(o.LockWait)
	delay := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		newid := o.NewID
		if newid == 0 {
			var err error
			if newid, err = c.NextID(ctx); err != nil {
				return 0, err
			}
		}
		body := map[string]string{"newid": strconv.Itoa(newid), "full": "0"}
		if o.Hostname != "" {
			body["hostname"] = o.Hostname
		}
		if o.Description != "" {
			body["description"] = o.Description
		}
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("linked clone of template %d on %s: %w", vmid, node, err)
		}
		// Proxmox writes the clone's config before it answers: a POST cut
		// short by the caller may have made a clone nobody would know of.
		var upid string
		dctx, cancel := detached(ctx)
		err := c.post(dctx, ctPath(node, vmid, "/clone"), body, &upid)
		cancel()
		if err == nil {
			return newid, c.waitClone(ctx, node, vmid, newid, upid)
		}
		lock, locked := LockedBy(err)
		switch {
		case locked && time.Now().Before(lockDeadline):
			// Another client clones from (or otherwise works on) the
			// template: its lock goes when its task ends.
			if err := sleep(ctx, delay); err != nil {
				return 0, err
			}
			delay = min(2*delay, 2*time.Second)
		case locked:
			return 0, fmt.Errorf("linked clone of template %d on %s: it stayed locked (%s) for %s: %w: %w", vmid, node, lock, o.LockWait, ErrLocked, err)
		case o.NewID == 0 && alreadyExists(err) && attempt < 5:
			// nextid is advisory: another client took the VMID.
		case alreadyExists(err):
			return 0, fmt.Errorf("linked clone %d of template %d on %s: %w: %v", newid, vmid, node, ErrVMIDTaken, err)
		default:
			return 0, fmt.Errorf("linked clone of template %d on %s: %w", vmid, node, err)
		}
	}
}

// waitClone waits for a clone's task; the caller giving up does not stop
// the wait, so that a clone that fails or arrives late is removed.
func (c *Client) waitClone(ctx context.Context, node string, vmid, newid int, upid string) error {
	dctx, cancel := detached(ctx)
	defer cancel()
	_, err := c.WaitTask(dctx, upid)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		// Proxmox's worker removes a failed clone's disks and config;
		// a daemon killed mid-clone (or an interrupted task) may not.
		c.destroyIfThere(dctx, node, newid)
		return fmt.Errorf("linked clone %d of template %d on %s: %w", newid, vmid, node, err)
	}
	return nil
}

var lockedRe = regexp.MustCompile(`CT is locked \(([a-z-]+)\)`)

// LockedBy reports whether err is Proxmox refusing a call because the
// container's config is locked ("CT is locked (disk)", pve-guest-common
// AbstractConfig.pm check_lock), and which lock it is.
func LockedBy(err error) (lock string, ok bool) {
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusInternalServerError {
		return "", false
	}
	m := lockedRe.FindStringSubmatch(ae.Message)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// alreadyExists is check_vmid_unused's "CT 123 already exists on node 'x'".
func alreadyExists(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && strings.Contains(ae.Message, "already exists on node")
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
