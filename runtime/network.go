package runtime

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Pods get their addresses from the daemon, not from DHCP: kubelet asks
// for a pod's IP right after RunPodSandbox, before any container (and so
// any Proxmox container) exists, and starts the pod again for ever when
// there is none. Each container of a pod is then created with the pod's
// address as a static, host-managed address on its NIC (Proxmox 9.1:
// lxc.net.0.ipv4.address, proxmox-lifecycle.md §6).

// ParsePodCIDRs reads a comma-separated list of pod ranges (kubelet's
// podCIDR form): at most one IPv4 and one IPv6 range.
func ParsePodCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var v4, v6 bool
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("pod CIDR %q: %w", f, err)
		}
		p = p.Masked()
		if (p.Addr().Is4() && p.Bits() > 30) || (p.Addr().Is6() && p.Bits() > 126) {
			return nil, fmt.Errorf("pod CIDR %s is too small for a gateway and pods", p)
		}
		if p.Addr().Is4() && v4 || p.Addr().Is6() && v6 {
			return nil, fmt.Errorf("pod CIDRs %q: at most one IPv4 and one IPv6 range", s)
		}
		v4, v6 = v4 || p.Addr().Is4(), v6 || p.Addr().Is6()
		out = append(out, p)
	}
	return out, nil
}

// podNetwork is where pod addresses come from: ranges, and the gateway of
// each (the node's address on the bridge).
type podNetwork struct {
	prefixes []netip.Prefix
	gateways []netip.Addr
}

// newPodNetwork pairs each range with its gateway: the one given for its
// family, else the range's first address.
func newPodNetwork(prefixes []netip.Prefix, gateways []netip.Addr) (*podNetwork, error) {
	n := &podNetwork{prefixes: prefixes}
	for _, p := range prefixes {
		gw := p.Addr().Next()
		for _, g := range gateways {
			if g.Is4() == p.Addr().Is4() {
				if !p.Contains(g) {
					return nil, fmt.Errorf("pod gateway %s is not in the pod range %s", g, p)
				}
				gw = g
			}
		}
		n.gateways = append(n.gateways, gw)
	}
	return n, nil
}

// allocate picks, in each range, the lowest address that is not the
// range's own, the gateway, IPv4's broadcast or one of used.
func (n *podNetwork) allocate(used map[netip.Addr]bool) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, p := range n.prefixes {
		var got netip.Addr
		for a := p.Addr().Next(); p.Contains(a); a = a.Next() {
			if a == n.gateways[i] || used[a] || (a.Is4() && !p.Contains(a.Next())) {
				continue
			}
			got = a
			break
		}
		if !got.IsValid() {
			return nil, status.Errorf(codes.ResourceExhausted, "the pod range %s has no free address left", p)
		}
		out = append(out, netip.PrefixFrom(got, p.Bits()))
	}
	return out, nil
}

// gateway is the gateway for an address of one of the ranges.
func (n *podNetwork) gateway(a netip.Addr) (netip.Addr, bool) {
	for i, p := range n.prefixes {
		if p.Contains(a) {
			return n.gateways[i], true
		}
	}
	return netip.Addr{}, false
}

// nicOption is Proxmox's net0 for a container of a pod with these
// addresses: static and host-managed, so that Proxmox (not DHCP, not the
// image) puts them on eth0 when the container starts; and the pod's MAC
// address, so that a restarted container keeps it and its neighbours'
// ARP entries for the pod's address stay right.
func nicOption(bridge, mac string, ips []string, gws []string) string {
	opt := "name=eth0,bridge=" + bridge + ",hwaddr=" + mac
	for i, ip := range ips {
		p, err := netip.ParsePrefix(ip)
		if err != nil {
			continue
		}
		if p.Addr().Is4() {
			opt += ",ip=" + ip
			if i < len(gws) {
				opt += ",gw=" + gws[i]
			}
		} else {
			opt += ",ip6=" + ip
			if i < len(gws) {
				opt += ",gw6=" + gws[i]
			}
		}
	}
	return opt
}

// checkPodAsks refuses what a Proxmox container cannot give a pod, with
// the reason and what would work: kubelet would otherwise run the pod
// without it, or start it again and again.
func checkPodAsks(c *runtimeapi.PodSandboxConfig) error {
	lx := c.GetLinux()
	ns := lx.GetSecurityContext().GetNamespaceOptions()
	name := c.GetMetadata().GetNamespace() + "/" + c.GetMetadata().GetName()
	switch {
	case ns.GetNetwork() == runtimeapi.NamespaceMode_NODE:
		return status.Errorf(codes.InvalidArgument, "pod %s asks for the node's network (hostNetwork: true): pve-image runs each pod as a Proxmox container with its own network namespace on a bridge, and Proxmox's API has no way to put a container into the node's network namespace (that takes the raw LXC key lxc.net.0.type=none in /etc/pve/lxc/VMID.conf, which no API call sets); run the pod without hostNetwork, or on another runtime", name)
	case ns.GetPid() == runtimeapi.NamespaceMode_NODE:
		return status.Errorf(codes.InvalidArgument, "pod %s asks for the node's process namespace (hostPID: true): a Proxmox container always has its own; run the pod without hostPID, or on another runtime", name)
	case ns.GetIpc() == runtimeapi.NamespaceMode_NODE:
		return status.Errorf(codes.InvalidArgument, "pod %s asks for the node's IPC namespace (hostIPC: true): a Proxmox container always has its own; run the pod without hostIPC, or on another runtime", name)
	case lx.GetSecurityContext().GetPrivileged():
		return status.Errorf(codes.InvalidArgument, "pod %s asks to be privileged: pve-image creates only unprivileged Proxmox containers (ids mapped to 100000 and up); run it without privileged, or on another runtime", name)
	case len(lx.GetSysctls()) > 0:
		return status.Errorf(codes.InvalidArgument, "pod %s sets sysctls %v: Proxmox's API sets no sysctls of a container (they would be raw lxc.sysctl keys); drop them, or run the pod on another runtime", name, lx.GetSysctls())
	}
	for _, pm := range c.GetPortMappings() {
		if pm.GetHostPort() != 0 {
			return status.Errorf(codes.InvalidArgument, "pod %s asks for host port %d: pve-image has no port mapping on the node; reach the pod at its own address (a Service, or the pod IP) instead", name, pm.GetHostPort())
		}
	}
	return nil
}

// resolvConf is the pod's /etc/resolv.conf as kubelet describes it.
func resolvConf(d *runtimeapi.DNSConfig) string {
	var b strings.Builder
	if len(d.GetSearches()) > 0 {
		b.WriteString("search " + strings.Join(d.GetSearches(), " ") + "\n")
	}
	for _, s := range d.GetServers() {
		b.WriteString("nameserver " + s + "\n")
	}
	if len(d.GetOptions()) > 0 {
		b.WriteString("options " + strings.Join(d.GetOptions(), " ") + "\n")
	}
	return b.String()
}

// podMAC is a pod's MAC address, derived from its sandbox ID: locally
// administered and unicast (02:...), as Proxmox's hwaddr option requires.
func podMAC(sandboxID string) string {
	sum := sha256.Sum256([]byte(sandboxID))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", sum[0], sum[1], sum[2], sum[3], sum[4])
}
