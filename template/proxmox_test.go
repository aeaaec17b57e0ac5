package template

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

func TestPlanNICs(t *testing.T) {
	app := &Meta{Run: RunInfo{Kind: "application", Init: "shim", OSType: "unmanaged"}}
	sys := &Meta{Run: RunInfo{Kind: "system", Init: "none", OSType: "debian"}}
	tests := []struct {
		name   string
		m      *Meta
		native bool
		nets   []string
		want   []string
		err    string
	}{
		{"app 9.1: host-managed, name filled in", app, true, []string{"bridge=vmbr0,ip=dhcp", "name=data,bridge=vmbr1,ip=10.0.0.5/24,gw=10.0.0.1,tag=5"},
			[]string{"name=eth0,bridge=vmbr0,ip=dhcp,host-managed=1", "name=data,bridge=vmbr1,ip=10.0.0.5/24,gw=10.0.0.1,tag=5,host-managed=1"}, ""},
		{"app 9.1: explicit host-managed kept", app, true, []string{"name=eth0,bridge=vmbr0,host-managed=1,ip=manual"},
			[]string{"name=eth0,bridge=vmbr0,host-managed=1,ip=manual"}, ""},
		{"app 9.1: host-managed=0 with an address", app, true, []string{"name=eth0,bridge=vmbr0,host-managed=0,ip=dhcp"}, nil, "only from host-managed NICs"},
		{"app 9.1: SLAAC", app, true, []string{"name=eth0,bridge=vmbr0,ip6=auto"}, nil, "Proxmox refuses SLAAC"},
		{"app 8.4: DHCP on eth0", app, false, []string{"name=eth0,bridge=vmbr0,ip=dhcp"}, []string{"name=eth0,bridge=vmbr0,ip=dhcp"}, ""},
		{"app 8.4: static", app, false, []string{"name=eth0,bridge=vmbr0,ip=10.0.0.5/24"}, nil, "cannot give an application container a static address"},
		{"app 8.4: DHCP on eth1", app, false, []string{"name=eth0,bridge=vmbr0", "name=eth1,bridge=vmbr0,ip=dhcp"}, nil, "on eth0 only"},
		{"app 8.4: DHCPv6", app, false, []string{"name=eth0,bridge=vmbr0,ip6=dhcp"}, nil, "DHCPv4 leases only"},
		{"8.4: host-managed", sys, false, []string{"name=eth0,bridge=vmbr0,host-managed=1"}, nil, "arrived with Proxmox 9.1"},
		{"system: static as it is", sys, true, []string{"name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1,ip6=auto"},
			[]string{"name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1,ip6=auto"}, ""},
		{"unknown option", app, true, []string{"name=eth0,speed=10"}, nil, `unknown option "speed"`},
		{"duplicate names", app, true, []string{"name=eth0", "name=eth0"}, nil, `both named "eth0"`},
		{"bad MAC", app, true, []string{"name=eth0,hwaddr=01:00:00:00:00:01"}, nil, "unicast MAC"},
		{"bad gw family", app, true, []string{"name=eth0,ip6=fd00::2/64,gw6=10.0.0.1"}, nil, "gw6 wants an address of its family"},
		{"bad mtu", app, true, []string{"name=eth0,mtu=9"}, nil, "mtu wants"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.m.PlanNICs(tc.nets, tc.native)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := app.PlanNICs(make([]string, 33), true); err == nil || !strings.Contains(err.Error(), "at most 32") {
		t.Errorf("33 NICs: %v", err)
	}
}

func TestPlanVolumes(t *testing.T) {
	m := &Meta{Config: RunConfig{Volumes: []string{"/var/lib/db", "/data/", "/cache"}}}
	o := VolumeOptions{Storage: "local-lvm", SizeGiB: 8, MayBind: true}
	tests := []struct {
		name  string
		flags []string
		o     VolumeOptions
		want  []Volume
		err   string
	}{
		{"defaults, sorted parents first", nil, o, []Volume{
			{Path: "/cache", Value: "local-lvm:8,mp=/cache,backup=1"},
			{Path: "/data", Value: "local-lvm:8,mp=/data,backup=1"},
			{Path: "/var/lib/db", Value: "local-lvm:8,mp=/var/lib/db,backup=1"}}, ""},
		{"storage, size, none, options, an extra path", []string{"/cache=none", "/data=shared:2,ro=1", "/var/lib/db=4", "/data/sub=/srv/sub"}, o, []Volume{
			{Path: "/data", Value: "shared:2,mp=/data,backup=1,ro=1", Storage: "shared"},
			{Path: "/data/sub", Value: "/srv/sub,mp=/data/sub", Bind: true},
			{Path: "/var/lib/db", Value: "local-lvm:4,mp=/var/lib/db,backup=1"}}, ""},
		{"keepattrs where Proxmox has it", []string{"/cache=none", "/var/lib/db=none"}, VolumeOptions{Storage: "s", SizeGiB: 1, KeepAttrs: true},
			[]Volume{{Path: "/data", Value: "s:1,mp=/data,backup=1,keepattrs=1"}}, ""},
		{"backup can be turned off", []string{"/cache=none", "/var/lib/db=none", "/data=s:1,backup=0"}, o,
			[]Volume{{Path: "/data", Value: "s:1,mp=/data,backup=0", Storage: "s"}}, ""},
		{"bind without root@pam", []string{"/data=/srv"}, VolumeOptions{Storage: "s", SizeGiB: 1}, nil, "only the user root@pam"},
		{"relative", []string{"data=s:1"}, o, nil, "must be absolute"},
		{"dot-dot", []string{"/data/../etc=s:1"}, o, nil, ". or .. components"},
		{"root", []string{"/=s:1"}, o, nil, "root file system"},
		{"twice", []string{"/data=s:1", "/data/=s:2"}, o, nil, "given twice"},
		{"zero", []string{"/data=s:0"}, o, nil, "needs a size"},
		{"bad size", []string{"/data=s:big"}, o, nil, `size "big"`},
		{"no spec", []string{"/data"}, o, nil, "want PATH="},
		{"unknown option", []string{"/data=s:1,size=3"}, o, nil, `unknown mount point option "size"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.PlanVolumes(tc.flags, tc.o)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}

// TestPVEConfigDNS: --dns reaches an application container as the
// resolv.conf pve-image-init writes, a system one as Proxmox's options; it
// is refused where nothing could apply it.
func TestPVEConfigDNS(t *testing.T) {
	dns := DNS{Servers: []string{"10.0.0.53", "10.0.0.54"}, Search: []string{"corp.test"}}
	app := &Meta{Arch: "amd64", Run: RunInfo{Kind: "application", Init: "shim", OSType: "unmanaged", Spec: &runspec.Spec{}}}
	c, err := app.PVEConfig(true, Overrides{DNS: dns})
	want := runspec.EnvResolv + `="search corp.test\nnameserver 10.0.0.53\nnameserver 10.0.0.54\n"`
	if err != nil || !strings.Contains(c.Options["env"], want) {
		t.Errorf("app env %q, %v; want it to hold %s", c.Options["env"], err, want)
	}
	sys := &Meta{Arch: "amd64", Run: RunInfo{Kind: "system", Init: "none", OSType: "debian"}}
	c, err = sys.PVEConfig(true, Overrides{DNS: dns})
	if err != nil || c.Options["nameserver"] != "10.0.0.53 10.0.0.54" || c.Options["searchdomain"] != "corp.test" {
		t.Errorf("system options %q, %v", c.Options, err)
	}
	if s := c.Spec(map[string]string{}, nil); s.Options["nameserver"] != "10.0.0.53 10.0.0.54" {
		t.Errorf("Spec leaves out the name servers: %q", s.Options)
	}
	if _, err := app.PVEConfig(false, Overrides{DNS: dns}); err == nil || !strings.Contains(err.Error(), "need Proxmox 9.1") {
		t.Errorf("8.4: %v", err)
	}
	pid1 := &Meta{Arch: "amd64", Run: RunInfo{Kind: "application", Init: "none", OSType: "unmanaged"}, Config: RunConfig{Entrypoint: []string{"/app"}}}
	if _, err := pid1.PVEConfig(true, Overrides{DNS: dns}); err == nil || !strings.Contains(err.Error(), "no pve-image-init") {
		t.Errorf("--init none: %v", err)
	}
}
