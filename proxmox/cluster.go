package proxmox

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// Resource is an entry of GET /cluster/resources (pve-manager
// API2/Cluster.pm; proxmox-lifecycle.md §7): a node, a guest or a storage
// as seen on one node. The numbers come from pvestatd's broadcasts, every
// 10 s, so they lag; they are missing without Sys.Audit on the node.
type Resource struct {
	ID     string `json:"id"`   // node/pve1, lxc/100, storage/pve1/local
	Type   string `json:"type"` // node, lxc, qemu, storage
	Node   string `json:"node"`
	Status string `json:"status"` // node: online, offline, unknown
	Name   string `json:"name"`

	VMID     int    `json:"vmid"`
	Template int    `json:"template"`
	Lock     string `json:"lock"`

	CPU     float64 `json:"cpu"`    // fraction of MaxCPU in use
	MaxCPU  float64 `json:"maxcpu"` // CPUs
	Mem     int64   `json:"mem"`
	MaxMem  int64   `json:"maxmem"`
	Disk    int64   `json:"disk"`
	MaxDisk int64   `json:"maxdisk"`
	Uptime  int64   `json:"uptime"`
	NetIn   int64   `json:"netin"`
	NetOut  int64   `json:"netout"`

	Storage string `json:"storage"`
	Content string `json:"content"`
	Shared  int    `json:"shared"`
	Plugin  string `json:"plugintype"`
}

// Holds reports whether a storage resource takes content of kind.
func (r Resource) Holds(kind string) bool {
	for _, c := range strings.Split(r.Content, ",") {
		if strings.TrimSpace(c) == kind {
			return true
		}
	}
	return false
}

// ClusterResources lists the cluster's resources of type typ (node, vm,
// storage; "" for all).
func (c *Client) ClusterResources(ctx context.Context, typ string) ([]Resource, error) {
	p := "/cluster/resources"
	if typ != "" {
		p += "?type=" + url.QueryEscape(typ)
	}
	var out []Resource
	if err := c.get(ctx, p, &out); err != nil {
		return nil, fmt.Errorf("cluster resources: %w", err)
	}
	return out, nil
}

// ClusterContainers lists every container of the cluster, with its node,
// from one request.
func (c *Client) ClusterContainers(ctx context.Context) ([]ContainerState, error) {
	rs, err := c.ClusterResources(ctx, "vm")
	if err != nil {
		return nil, err
	}
	var out []ContainerState
	for _, r := range rs {
		if r.Type != "lxc" {
			continue
		}
		out = append(out, ContainerState{VMID: r.VMID, Name: r.Name, Status: r.Status, Uptime: r.Uptime, CPU: r.CPU,
			CPUs: r.MaxCPU, Mem: r.Mem, MaxMem: r.MaxMem, Disk: r.Disk, NetIn: r.NetIn, NetOut: r.NetOut, Node: r.Node})
	}
	return out, nil
}

// FindContainer says which node has container vmid; ErrNotFound when none.
func (c *Client) FindContainer(ctx context.Context, vmid int) (string, error) {
	cts, err := c.ClusterContainers(ctx)
	if err != nil {
		return "", err
	}
	for _, ct := range cts {
		if ct.VMID == vmid {
			return ct.Node, nil
		}
	}
	return "", fmt.Errorf("CT %d: %w (no node of the cluster has it)", vmid, ErrNotFound)
}
