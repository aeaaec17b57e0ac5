package main

import (
	"os"
	"strings"
	"time"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// setupNetwork brings up lo, and eth0 by DHCP unless something (LXC, or
// Proxmox's host-managed DHCP, announced by PVE_IMAGE_NET=host) already
// configures it. It waits at most spec.DHCPTimeout for a lease, then keeps
// it renewed in the background.
func setupNetwork(spec *runspec.Spec) {
	if lo, err := findLink("lo"); err == nil {
		if err := lo.up(); err != nil {
			logf("lo: %v", err)
		}
	}
	eth, err := findLink("eth0")
	if err != nil || spec.DHCPTimeout <= 0 || os.Getenv("PVE_IMAGE_NET") == "host" {
		return
	}
	if err := eth.up(); err != nil {
		logf("eth0: %v", err)
		return
	}
	if eth.hasIPv4() {
		return
	}
	c, err := newDHCPClient(eth)
	if err != nil {
		logf("eth0: DHCP: %v", err)
		return
	}
	l, err := c.acquire(time.Now().Add(time.Duration(spec.DHCPTimeout) * time.Second))
	if err != nil {
		c.close()
		logf("eth0: DHCP: %v; starting without an address", err)
		return
	}
	if err := configure(eth, l); err != nil {
		c.close()
		logf("eth0: %v", err)
		return
	}
	go keepRenewed(c, eth, l)
}

func configure(eth *link, l *lease) error {
	if err := eth.addAddr(l.ip, l.prefix); err != nil {
		return err
	}
	if !l.router.isZero() {
		if err := eth.addDefaultRoute(l.router); err != nil {
			return err
		}
	}
	logf("eth0: %s/%d from DHCP, gateway %s, lease %s", l.ip, l.prefix, l.router, l.duration)
	writeResolvConf(l)
	return nil
}

// writeResolvConf fills /etc/resolv.conf from the lease when the image has
// none (or an empty one), as Proxmox does for managed distributions.
func writeResolvConf(l *lease) {
	if len(l.dns) == 0 {
		return
	}
	if b, err := os.ReadFile("/etc/resolv.conf"); err == nil && strings.TrimSpace(string(b)) != "" {
		return
	}
	var sb strings.Builder
	if l.domain != "" {
		sb.WriteString("search " + l.domain + "\n")
	}
	for _, d := range l.dns {
		sb.WriteString("nameserver " + d.String() + "\n")
	}
	writeIfPossible("/etc/resolv.conf", sb.String())
}

func keepRenewed(c *dhcpClient, eth *link, l *lease) {
	for {
		time.Sleep(max(l.t1, 30*time.Second))
		renewed, err := c.renew(l, time.Now().Add(max(l.duration-l.t1, 30*time.Second)))
		if err != nil {
			logf("eth0: DHCP renewal: %v; asking from scratch", err)
			if renewed, err = c.acquire(time.Now().Add(time.Minute)); err != nil {
				continue
			}
		}
		if renewed.ip != l.ip {
			configure(eth, renewed)
		}
		l = renewed
	}
}
