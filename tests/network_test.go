package tests

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// netScript waits (5 s at most) for a resolv.conf with a name server, which
// Proxmox's DHCP client writes a moment after the start, then shows it and
// eth0's addresses.
const netScript = `i=0
while [ $i -lt 50 ] && ! grep -q nameserver /etc/resolv.conf 2>/dev/null; do sleep 0.1; i=$((i+1)); done
echo RESOLV-BEGIN; cat /etc/resolv.conf; echo RESOLV-END
ip -4 addr show eth0
exec sleep 1000000`

func netImage(t testing.TB) v1.Image {
	entries := []Entry{Exec("bin/busybox", busybox(t)), Dir("etc/"), Dir("tmp/")}
	for _, a := range []string{"sh", "echo", "cat", "sleep", "grep", "ip", "test", "["} {
		entries = append(entries, Symlink("bin/"+a, "busybox"))
	}
	return Image(t, amd64, v1.Config{Entrypoint: []string{"/bin/sh", "-c", netScript}}, Layer(t, entries...))
}

// interfaceAddrs are the IPv4 addresses Proxmox's interfaces endpoint
// reports for the container's NIC name.
func interfaceAddrs(t testing.TB, sim *pvesim.Server, vmid int, name string) []string {
	t.Helper()
	ifs, err := pveClient(t, sim).Interfaces(context.Background(), "pve1", vmid)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, i := range ifs {
		if i.Name != name {
			continue
		}
		for _, a := range i.Addresses {
			if a.Type == "inet" {
				out = append(out, a.CIDR())
			}
		}
	}
	return out
}

// TestNetworkAddresses: on Proxmox 9.1 an application container gets its
// addresses through a host-managed NIC, by DHCP (with the lease's DNS in
// its resolv.conf) or static (with the node's DNS, or --dns); the
// interfaces endpoint shows them.
func TestNetworkAddresses(t *testing.T) {
	RequireLXC(t)
	br := StartBridge(t)
	sim := startSim(t, pvesim.Options{RealLXC: true, Bridges: []string{"vmbr0", br.Name}})
	sim.SetNodeDNS("pve1", pvesim.NodeDNS{Search: "node.test", Servers: []string{"192.0.2.53"}})
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "net:1", netImage(t))
	c := newCLI(t)
	ref := reg.Host + "/net:1"
	prefix := strings.TrimSuffix(br.Gateway, ".1")

	t.Run("dhcp", func(t *testing.T) {
		vmid := atoiVMID(t, c.ok(append([]string{"run", ref, "--net", "name=eth0,bridge=" + br.Name + ",ip=dhcp"}, pveArgs(sim, "--rootfs", "shared:1")...)...))
		if !strings.Contains(ctConfig(t, sim, vmid)["net0"], "host-managed=1") {
			t.Errorf("net0 %q", ctConfig(t, sim, vmid)["net0"])
		}
		con := waitConsole(t, sim, "pve1", vmid, "RESOLV-END", "inet "+prefix+".")
		if !strings.Contains(con, "nameserver "+br.Gateway) || !strings.Contains(con, "search pve-image.test") {
			t.Errorf("resolv.conf from the lease missing:\n%s", con)
		}
		addrs := interfaceAddrs(t, sim, vmid, "eth0")
		if len(addrs) != 1 || !strings.HasPrefix(addrs[0], prefix+".") {
			t.Errorf("interfaces endpoint: eth0 %v", addrs)
		}
	})
	t.Run("static with the node's DNS", func(t *testing.T) {
		ip := prefix + ".200/24"
		vmid := atoiVMID(t, c.ok(append([]string{"run", ref, "--net", "name=eth0,bridge=" + br.Name + ",ip=" + ip + ",gw=" + br.Gateway},
			pveArgs(sim, "--rootfs", "shared:1")...)...))
		con := waitConsole(t, sim, "pve1", vmid, "RESOLV-END", "inet "+ip)
		if !strings.Contains(con, "nameserver 192.0.2.53") || !strings.Contains(con, "search node.test") {
			t.Errorf("resolv.conf from the node's DNS missing:\n%s", con)
		}
		if addrs := interfaceAddrs(t, sim, vmid, "eth0"); len(addrs) != 1 || addrs[0] != ip {
			t.Errorf("interfaces endpoint: eth0 %v, want %s", addrs, ip)
		}
	})
	t.Run("static with --dns", func(t *testing.T) {
		ip := prefix + ".201/24"
		vmid := atoiVMID(t, c.ok(append([]string{"run", ref, "--net", "name=eth0,bridge=" + br.Name + ",ip=" + ip + ",gw=" + br.Gateway,
			"--dns", "198.51.100.1,198.51.100.2", "--searchdomain", "corp.test"}, pveArgs(sim, "--rootfs", "shared:1")...)...))
		con := waitConsole(t, sim, "pve1", vmid, "RESOLV-END", "inet "+ip)
		if !strings.Contains(con, "search corp.test") || !strings.Contains(con, "nameserver 198.51.100.1") || !strings.Contains(con, "nameserver 198.51.100.2") {
			t.Errorf("resolv.conf from --dns missing:\n%s", con)
		}
	})
}

// TestNetworkOptions: every NIC option Proxmox has reaches the config, for
// several NICs; an application container's get host-managed=1 on 9.1.
func TestNetworkOptions(t *testing.T) {
	sim := startSim(t, pvesim.Options{Bridges: []string{"vmbr0", "vmbr1"}})
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "net:1", netImage(t))
	c := newCLI(t)
	vmid := atoiVMID(t, c.ok(append([]string{"run", reg.Host + "/net:1", "--start=false",
		"--net", "bridge=vmbr0,ip=dhcp,ip6=dhcp",
		"--net", "name=data,bridge=vmbr1,tag=20,firewall=1,ip=10.1.0.5/24,gw=10.1.0.1,ip6=fd00::5/64,gw6=fd00::1,mtu=1400,rate=12.5,hwaddr=BC:24:11:AA:BB:CC",
		"--dns", "10.1.0.53"}, pveArgs(sim, "--rootfs", "shared:1")...)...))
	cfg := ctConfig(t, sim, vmid)
	for _, w := range []string{"name=eth0", "bridge=vmbr0", "ip=dhcp", "ip6=dhcp", "host-managed=1"} {
		if !strings.Contains(cfg["net0"], w) {
			t.Errorf("net0 %q lacks %s", cfg["net0"], w)
		}
	}
	for _, w := range []string{"name=data", "bridge=vmbr1", "tag=20", "firewall=1", "ip=10.1.0.5/24", "gw=10.1.0.1", "ip6=fd00::5/64",
		"gw6=fd00::1", "mtu=1400", "rate=12.5", "hwaddr=BC:24:11:AA:BB:CC", "host-managed=1"} {
		if !strings.Contains(cfg["net1"], w) {
			t.Errorf("net1 %q lacks %s", cfg["net1"], w)
		}
	}
	if !strings.Contains(cfg["env"], "PVE_IMAGE_RESOLV=") || !strings.Contains(cfg["env"], "nameserver 10.1.0.53") {
		t.Errorf("env has no resolv.conf for --dns: %q", cfg["env"])
	}
	for _, tc := range []struct{ net, want string }{
		{"name=eth0,bridge=vmbr0,ip6=auto", "Proxmox refuses SLAAC"},
		{"name=eth0,bridge=vmbr0,ip=10.0.0.5", "ip wants an IPv4 address with its prefix length"},
		{"name=eth0,bridge=vmbr0,tag=5000", "tag wants a VLAN ID"},
		{"name=eth0,bridge=vmbr0,colour=red", `unknown option "colour"`},
	} {
		c.fails(append([]string{"run", reg.Host + "/net:1", "--net", tc.net}, pveArgs(sim, "--rootfs", "shared:1")...), tc.want)
	}
	if n := len(sim.Containers("pve1")); n != 1 {
		t.Errorf("refused runs created containers: %v", sim.Containers("pve1"))
	}
}

// TestNetworkLegacyRefusesStatic: before 9.1 an application container can
// get no static address (Proxmox applies none to unmanaged containers, and
// pve-image-init only takes a DHCP lease): refused with the reason before
// anything is uploaded or created; DHCP on eth0 works.
func TestNetworkLegacyRefusesStatic(t *testing.T) {
	sim := startSim(t, pvesim.Options{Version: "8.4.1"})
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "net:1", netImage(t))
	c := newCLI(t)
	ref := reg.Host + "/net:1"
	for _, tc := range []struct{ args []string }{
		{[]string{"--net", "name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1"}},
		{[]string{"--net", "name=eth0,bridge=vmbr0,ip=dhcp", "--dns", "10.0.0.53"}},
		{[]string{"--net", "name=eth0,bridge=vmbr0,host-managed=1,ip=dhcp"}},
	} {
		r := c.fails(append(append([]string{"run", ref}, tc.args...), pveArgs(sim, "--rootfs", "shared:1")...), "9.1")
		if !strings.Contains(r.stderr, "Proxmox") {
			t.Errorf("%v: no reason: %s", tc.args, r.stderr)
		}
	}
	if sim.Uploads() != 0 || len(sim.Containers("pve1")) != 0 {
		t.Errorf("refused runs uploaded %d templates or created %v", sim.Uploads(), sim.Containers("pve1"))
	}
	vmid := atoiVMID(t, c.ok(append([]string{"run", ref, "--start=false", "--net", "name=eth0,bridge=vmbr0,ip=dhcp"}, pveArgs(sim, "--rootfs", "shared:1")...)...))
	if net := ctConfig(t, sim, vmid)["net0"]; strings.Contains(net, "host-managed") || !strings.Contains(net, "ip=dhcp") {
		t.Errorf("net0 on 8.4: %q", net)
	}
}

// TestCRIPodPlacementAndInterfaces: with --node auto the CRI daemon puts a
// pod's container on the node placement picks; the pod's verbose status
// adds what Proxmox's interfaces endpoint reports for it.
func TestCRIPodPlacementAndInterfaces(t *testing.T) {
	sim := startSim(t, pvesim.Options{})
	sim.SetNodeLoad("pve1", busy)
	sim.SetNodeLoad("pve2", idle)
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "library/web:1", appImage(t, "cri-auto", v1.Config{Entrypoint: []string{"/app"}, Cmd: []string{"sleep", "1h"}}))
	c := newCLI(t)
	d := startCRI(t, c, "--pve-url", sim.URL(), "--pve-token", simToken+"="+simSecret, "--pve-fingerprint", sim.Fingerprint(),
		"--node", "auto", "--rootfs-storage", "shared", "--registry-mirror", "docker.io=http://"+reg.Host, "--pod-cidr", "10.88.9.0/24")
	d.crictlOK(t, "pull", "web:1")
	dir := t.TempDir()
	pod := writeJSON(t, dir, "pod.json", map[string]any{"metadata": map[string]any{"name": "web-0", "namespace": "default", "uid": "uid-auto"},
		"log_directory": dir})
	ctr := writeJSON(t, dir, "ctr.json", map[string]any{"metadata": map[string]any{"name": "app"}, "image": map[string]any{"image": "web:1"}})
	podID := strings.TrimSpace(d.crictlOK(t, "runp", pod))
	ctrID := strings.TrimSpace(d.crictlOK(t, "create", podID, ctr, pod))
	d.crictlOK(t, "start", ctrID)
	if ids := sim.Containers("pve2"); len(ids) != 1 || len(sim.Containers("pve1")) != 0 {
		t.Fatalf("pod's container on pve1 %v, pve2 %v: want it on the idle pve2", sim.Containers("pve1"), ids)
	}
	var insp struct {
		Info struct {
			Interfaces []struct {
				Name      string   `json:"name"`
				Addresses []string `json:"addresses"`
			} `json:"interfaces"`
		} `json:"info"`
	}
	out := d.crictlOK(t, "inspectp", "-o", "json", podID)
	if err := json.Unmarshal([]byte(out), &insp); err != nil {
		t.Fatal(err)
	}
	if len(insp.Info.Interfaces) != 1 || insp.Info.Interfaces[0].Name != "eth0" || !slices.Contains(insp.Info.Interfaces[0].Addresses, "10.88.9.2/24") {
		t.Errorf("interfaces in the pod's verbose status: %+v\n%s", insp.Info.Interfaces, out)
	}
}
