package runtime

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestParsePodCIDRs(t *testing.T) {
	for in, want := range map[string]string{
		"10.88.0.0/24":              "[10.88.0.0/24]",
		"10.88.0.7/24":              "[10.88.0.0/24]",
		" 10.88.0.0/16 , fd00::/64": "[10.88.0.0/16 fd00::/64]",
		"":                          "[]",
	} {
		got, err := ParsePodCIDRs(in)
		if err != nil {
			t.Fatalf("ParsePodCIDRs(%q): %v", in, err)
		}
		if fmtPrefixes(got) != want {
			t.Errorf("ParsePodCIDRs(%q) = %v, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"10.88.0.0", "10.88.0.0/31", "10.0.0.0/8,10.1.0.0/16", "x/24"} {
		if _, err := ParsePodCIDRs(bad); err == nil {
			t.Errorf("ParsePodCIDRs(%q) succeeded", bad)
		}
	}
}

func fmtPrefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}

func TestAllocate(t *testing.T) {
	p4, p6 := netip.MustParsePrefix("10.88.0.0/29"), netip.MustParsePrefix("fd00::/126")
	n, err := newPodNetwork([]netip.Prefix{p4, p6}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.gateways[0].String() != "10.88.0.1" || n.gateways[1].String() != "fd00::1" {
		t.Fatalf("default gateways %v", n.gateways)
	}
	used := map[netip.Addr]bool{}
	var got []string
	for {
		ips, err := n.allocate(used)
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatal(err)
			}
			break
		}
		got = append(got, ips[0].String()+" "+ips[1].String())
		used[ips[0].Addr()], used[ips[1].Addr()] = true, true
	}
	// .0 is the range, .1 the gateway, .7 IPv4's broadcast; fd00::/126 has
	// two addresses for pods.
	if want := "10.88.0.2/29 fd00::2/126|10.88.0.3/29 fd00::3/126"; strings.Join(got, "|") != want {
		t.Errorf("allocations %q, want %q", got, want)
	}
	if _, err := newPodNetwork([]netip.Prefix{p4}, []netip.Addr{netip.MustParseAddr("10.99.0.1")}); err == nil {
		t.Error("a gateway outside the range was accepted")
	}
	n, _ = newPodNetwork([]netip.Prefix{p4}, []netip.Addr{netip.MustParseAddr("10.88.0.6")})
	if ips, _ := n.allocate(nil); ips[0].String() != "10.88.0.1/29" {
		t.Errorf("with the gateway at .6 the first pod gets %v", ips)
	}
}

func TestNICOption(t *testing.T) {
	got := nicOption("vmbr1", "02:aa:bb:cc:dd:ee", []string{"10.88.0.5/24", "fd00::5/64"}, []string{"10.88.0.1", "fd00::1"})
	if want := "name=eth0,bridge=vmbr1,hwaddr=02:aa:bb:cc:dd:ee,ip=10.88.0.5/24,gw=10.88.0.1,ip6=fd00::5/64,gw6=fd00::1"; got != want {
		t.Errorf("nicOption = %q, want %q", got, want)
	}
	mac := podMAC("a sandbox")
	if !regexp.MustCompile(`^02(:[0-9a-f]{2}){5}$`).MatchString(mac) || mac != podMAC("a sandbox") || mac == podMAC("another") {
		t.Errorf("podMAC: %q", mac)
	}
}

func TestCheckPodAsks(t *testing.T) {
	ns := func(o *runtimeapi.NamespaceOption) *runtimeapi.PodSandboxConfig {
		return &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "n"},
			Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: o}}}
	}
	tests := []struct {
		name string
		c    *runtimeapi.PodSandboxConfig
		want string
	}{
		{"plain pod", ns(&runtimeapi.NamespaceOption{}), ""},
		{"no linux config", &runtimeapi.PodSandboxConfig{}, ""},
		{"host network", ns(&runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}), "hostNetwork: true"},
		{"host pid", ns(&runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE}), "hostPID"},
		{"host ipc", ns(&runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE}), "hostIPC"},
		{"privileged", &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}}}, "privileged"},
		{"sysctls", &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{Sysctls: map[string]string{"net.core.somaxconn": "1024"}}}, "sysctls"},
		{"host port", &runtimeapi.PodSandboxConfig{PortMappings: []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 8080}}}, "host port 8080"},
		{"container port only", &runtimeapi.PodSandboxConfig{PortMappings: []*runtimeapi.PortMapping{{ContainerPort: 80}}}, ""},
	}
	for _, tt := range tests {
		err := checkPodAsks(tt.c)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want InvalidArgument with %q", tt.name, err, tt.want)
		}
	}
}

func TestResolvConf(t *testing.T) {
	got := resolvConf(&runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"ns.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5"}})
	if want := "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"; got != want {
		t.Errorf("resolvConf:\n%s\nwant\n%s", got, want)
	}
}
