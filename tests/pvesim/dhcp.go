package pvesim

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// hostManagedDHCP is what vm_start does after a start for host-managed NICs
// with ip=dhcp (pve-container 6.0.15+; LXC.pm L3184-3206 with
// manage_dhclient L1304; L§6): the host runs `dhclient -1 -4` in the
// container's network and UTS namespaces, with LXC's hooks/dhclient-script
// and ROOTFS=/proc/<pid>/root, which sets the address and routes and writes
// $ROOTFS/etc/resolv.conf from the lease's DNS options. A failure is only a
// task warning, "DHCP failed - ...". Departures: busybox udhcpc (-q: one
// lease, no renewal) with a script doing what dhclient-script does; the
// simulator's real containers have net0 only; DHCPv6 is not simulated;
// nothing is tried on the stand-in bridges the simulator makes (they have
// no DHCP server; Proxmox would warn after dhclient's timeout).
func (s *Server) hostManagedDHCP(w *worker, l *pvelxc.Container, conf map[string]string) {
	pairs, _ := parsePropString(conf["net0"], "", netKeys)
	m := propMap(pairs)
	if m["host-managed"] != "1" || m["link_down"] == "1" {
		return
	}
	if m["ip6"] == "dhcp" {
		w.printf("pvesim: DHCPv6 for host-managed NICs is not simulated\n")
	}
	if m["ip"] != "dhcp" {
		return
	}
	// A bridge the simulator stood in for has no DHCP server: there,
	// Proxmox would wait for dhclient to give up and warn; the simulator
	// does not wait.
	s.mu.Lock()
	host := s.hostBridges[m["bridge"]]
	s.mu.Unlock()
	for _, own := range s.ownBridges {
		if own == host {
			return
		}
	}
	if err := runUdhcpc(l, m["name"]); err != nil {
		w.warn("DHCP failed - %v", err)
	}
}

// udhcpcScript is dhclient-script's work for udhcpc: address, default
// route, resolv.conf in the container's root.
const udhcpcScript = `#!/bin/sh
case "$1" in
deconfig)
	ip link set "$interface" up
	;;
bound|renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-$subnet}" dev "$interface"
	if [ -n "$router" ]; then
		set -- $router
		ip route replace default via "$1" dev "$interface"
	fi
	if [ -n "$dns" ]; then
		{
			[ -n "$domain" ] && echo "search $domain"
			for d in $dns; do echo "nameserver $d"; done
		} > "$ROOTFS/etc/resolv.conf"
	fi
	;;
esac
exit 0
`

func runUdhcpc(l *pvelxc.Container, iface string) error {
	pid, err := l.PID()
	if err != nil {
		return err
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return errors.New("pvesim: busybox (udhcpc) not found: apt-get install busybox-static")
	}
	hook := filepath.Join(l.Dir, l.Name, "hook")
	if err := os.MkdirAll(hook, 0o755); err != nil {
		return err
	}
	script := filepath.Join(hook, "udhcpc-script")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		return err
	}
	args := []string{"-t", strconv.Itoa(pid), "--net", "--uts", "--", bb, "udhcpc", "-i", iface, "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", script}
	cmd := exec.Command("nsenter", args...)
	cmd.Env = append(os.Environ(), "ROOTFS=/proc/"+strconv.Itoa(pid)+"/root")
	if out, err := cmd.CombinedOutput(); err != nil {
		return errors.New("command 'dhclient -1 -4 " + iface + "' failed: " + strings.TrimSpace(string(out)))
	}
	return nil
}
