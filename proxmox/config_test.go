package proxmox

import (
	"reflect"
	"testing"
)

func TestPropString(t *testing.T) {
	tests := []struct {
		in, def string
		get     map[string]string
		out     string
	}{
		{"local-lvm:vm-100-disk-1,mp=/data,backup=1,size=8G", "volume",
			map[string]string{"volume": "local-lvm:vm-100-disk-1", "mp": "/data", "size": "8G"}, "local-lvm:vm-100-disk-1,mp=/data,backup=1,size=8G"},
		{"name=eth0,bridge=vmbr0,ip=dhcp", "", map[string]string{"name": "eth0", "ip": "dhcp", "gw": ""}, "name=eth0,bridge=vmbr0,ip=dhcp"},
		{"/srv/x,mp=/x", "volume", map[string]string{"volume": "/srv/x"}, "/srv/x,mp=/x"},
	}
	for _, tc := range tests {
		p := ParsePropString(tc.in, tc.def)
		for k, v := range tc.get {
			if got := p.Get(k); got != v {
				t.Errorf("%q: %s = %q, want %q", tc.in, k, got, v)
			}
		}
		if got := p.String(tc.def); got != tc.out {
			t.Errorf("String(%q) = %q", tc.in, got)
		}
	}
	p := ParseNIC("name=eth0,bridge=vmbr0").Set("bridge", "vmbr1").Set("host-managed", "1").Delete("name")
	if got := p.String(""); got != "bridge=vmbr1,host-managed=1" {
		t.Errorf("Set/Delete: %q", got)
	}
}

func TestMountPoint(t *testing.T) {
	tests := []struct {
		key, value, kind, storage, path string
		gib                             int
	}{
		{"rootfs", "local-lvm:vm-100-disk-0,size=8G", "volume", "local-lvm", "/", 8},
		{"mp0", "shared:100/vm-100-disk-1.raw,mp=/data,backup=1,size=512M", "volume", "shared", "/data", 1},
		{"mp1", "/srv/data,mp=/srv", "bind", "", "/srv", 0},
		{"mp2", "/dev/sdb1,mp=/disk", "device", "", "/disk", 0},
		{"unused0", "local-lvm:vm-100-disk-3", "volume", "local-lvm", "", 0},
	}
	for _, tc := range tests {
		m := ParseMountPoint(tc.key, tc.value)
		if m.Kind() != tc.kind || (tc.kind == "volume" && m.Storage() != tc.storage) || m.Path() != tc.path || m.SizeGiB() != tc.gib {
			t.Errorf("%s=%q: kind %s storage %s path %s GiB %d", tc.key, tc.value, m.Kind(), m.Storage(), m.Path(), m.SizeGiB())
		}
	}
}

func TestParseSizeAndOwner(t *testing.T) {
	for in, want := range map[string]int64{"8G": 8 << 30, "512M": 512 << 20, "1.5T": 3 << 39, "4096": 4096, "2GiB": 2 << 30, "x": -1} {
		if got := ParseSize(in); got != want {
			t.Errorf("ParseSize(%q) = %d, want %d", in, got, want)
		}
	}
	for in, want := range map[string]int{"local-lvm:vm-101-disk-2": 101, "shared:100/vm-100-disk-1.raw": 100,
		"local-zfs:subvol-105-disk-0": 105, "local:backup/vzdump-lxc-100-2026_01_01-00_00_00.tar.zst": 0, "nocolon": 0} {
		if got := VolumeOwner(in); got != want {
			t.Errorf("VolumeOwner(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestCTConfigKeys(t *testing.T) {
	cfg := CTConfig{"mp10": "a", "mp2": "b", "mp0": "c", "unused1": "d", "net0": "e"}
	if got := cfg.Indexed("mp"); !reflect.DeepEqual(got, []string{"mp0", "mp2", "mp10"}) {
		t.Errorf("Indexed = %v", got)
	}
	if got := cfg.FreeKey("mp", map[string]bool{"mp1": true}); got != "mp3" {
		t.Errorf("FreeKey = %q", got)
	}
	if got := cfg.FreeKey("unused", nil); got != "unused0" {
		t.Errorf("FreeKey unused = %q", got)
	}
}

// TestParsePCTConfig reads a config as pve-container writes it: the
// description as encoded comment lines, env as lxc.environment.runtime
// lines, raw lxc keys, and nothing of the sections after it.
func TestParsePCTConfig(t *testing.T) {
	raw := "#my service\n#pve-image%3A {\"image\"%3A\"x\"}\narch: amd64\nhostname: web\nmemory: 512\n" +
		"lxc.environment.runtime: A=1\nlxc.environment.runtime: B=two words\nlxc.cgroup2.devices.allow: c 10:200 rwm\n" +
		"net0: name=eth0,bridge=vmbr0\n\n[pve:pending]\nmemory: 1024\n"
	got := ParsePCTConfig(raw)
	want := CTConfig{"description": "my service\npve-image: {\"image\":\"x\"}", "arch": "amd64", "hostname": "web", "memory": "512",
		"env": "A=1\x00B=two words", "lxc": "lxc.cgroup2.devices.allow: c 10:200 rwm", "net0": "name=eth0,bridge=vmbr0"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParsePCTConfig:\n got %q\nwant %q", got, want)
	}
}
