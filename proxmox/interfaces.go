package proxmox

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// Interface is a container's network interface as GET .../interfaces
// reports it (pve-container API2/LXC.pm ip, LXC.pm get_interfaces: `ip
// --json a` in the container's network namespace).
type Interface struct {
	Name      string      `json:"name"`
	HWAddr    string      `json:"hwaddr"`
	Addresses []IPAddress `json:"ip-addresses"`
}

// IPAddress is one address of an Interface.
type IPAddress struct {
	Address string `json:"ip-address"`
	Type    string `json:"ip-address-type"` // inet, inet6
	Prefix  int    `json:"prefix"`
}

// CIDR is address/prefix.
func (a IPAddress) CIDR() string { return fmt.Sprintf("%s/%d", a.Address, a.Prefix) }

// Interfaces lists a running container's interfaces; a container that does
// not run has none (Proxmox answers null).
func (c *Client) Interfaces(ctx context.Context, node string, vmid int) ([]Interface, error) {
	var out []Interface
	if err := c.get(ctx, ctPath(node, vmid, "/interfaces"), &out); err != nil {
		return nil, err
	}
	return out, nil
}

// NodeDNS is a node's DNS settings: GET /nodes/{node}/dns (pve-manager
// API2/Nodes.pm dns: search and dns1..dns3 of its /etc/resolv.conf), what
// Proxmox gives containers that set neither nameserver nor searchdomain.
func (c *Client) NodeDNS(ctx context.Context, node string) (search string, servers []string, err error) {
	var d struct {
		Search string `json:"search"`
		DNS1   string `json:"dns1"`
		DNS2   string `json:"dns2"`
		DNS3   string `json:"dns3"`
	}
	if err := c.get(ctx, fmt.Sprintf("/nodes/%s/dns", url.PathEscape(node)), &d); err != nil {
		return "", nil, err
	}
	for _, s := range []string{d.DNS1, d.DNS2, d.DNS3} {
		if s = strings.TrimSpace(s); s != "" {
			servers = append(servers, s)
		}
	}
	return strings.TrimSpace(d.Search), servers, nil
}
