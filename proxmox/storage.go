package proxmox

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// StorageInfo describes a storage as one node sees it.
type StorageInfo struct {
	Name    string `json:"storage"`
	Type    string `json:"type"`
	Content string `json:"content"`
	Shared  int    `json:"shared"`
	Active  int    `json:"active"`
	Avail   int64  `json:"avail"`
	Total   int64  `json:"total"`
}

// Holds reports whether the storage takes content of kind (vztmpl,
// rootdir, ...).
func (s StorageInfo) Holds(kind string) bool {
	for _, c := range strings.Split(s.Content, ",") {
		if strings.TrimSpace(c) == kind {
			return true
		}
	}
	return false
}

// IsShared reports whether all nodes see the same storage.
func (s StorageInfo) IsShared() bool { return s.Shared == 1 }

// Nodes lists the cluster's nodes.
func (c *Client) Nodes(ctx context.Context) ([]string, error) {
	var ns []struct {
		Node   string `json:"node"`
		Status string `json:"status"`
	}
	if err := c.get(ctx, "/nodes", &ns); err != nil {
		return nil, err
	}
	var out []string
	for _, n := range ns {
		out = append(out, n.Node)
	}
	return out, nil
}

// Storage describes one storage on a node.
func (c *Client) Storage(ctx context.Context, node, storage string) (StorageInfo, error) {
	var s StorageInfo
	err := c.get(ctx, fmt.Sprintf("/nodes/%s/storage/%s/status", url.PathEscape(node), url.PathEscape(storage)), &s)
	if s.Name == "" {
		s.Name = storage
	}
	return s, err
}

// Storages lists a node's storages that take content of kind ("" for all).
func (c *Client) Storages(ctx context.Context, node, kind string) ([]StorageInfo, error) {
	p := fmt.Sprintf("/nodes/%s/storage", url.PathEscape(node))
	if kind != "" {
		p += "?content=" + url.QueryEscape(kind)
	}
	var out []StorageInfo
	return out, c.get(ctx, p, &out)
}

// Volume is an entry of a storage's content list.
type Volume struct {
	Volid  string `json:"volid"`
	Format string `json:"format"`
	Size   int64  `json:"size"`
	Ctime  int64  `json:"ctime"`
}

// Name is the volume's file name (local:vztmpl/x.tar.zst → x.tar.zst).
func (v Volume) Name() string {
	_, rest, _ := strings.Cut(v.Volid, ":")
	return strings.TrimPrefix(rest, "vztmpl/")
}

// Templates lists the container templates on a storage.
func (c *Client) Templates(ctx context.Context, node, storage string) ([]Volume, error) {
	var out []Volume
	return out, c.get(ctx, fmt.Sprintf("/nodes/%s/storage/%s/content?content=vztmpl", url.PathEscape(node), url.PathEscape(storage)), &out)
}

// DeleteVolume removes a volume (Datastore.Allocate) and waits for it.
func (c *Client) DeleteVolume(ctx context.Context, node, storage, volid string) error {
	var upid string
	// The volume goes into the path unescaped: Proxmox registers the
	// content subclass with an empty fragment delimiter (proxmox.md §5).
	if err := c.del(ctx, fmt.Sprintf("/nodes/%s/storage/%s/content/%s", url.PathEscape(node), url.PathEscape(storage), volid), &upid); err != nil {
		return err
	}
	if upid == "" {
		return nil
	}
	_, err := c.WaitTask(ctx, upid)
	return err
}
