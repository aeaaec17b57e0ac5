package imgconv

import (
	"context"
	"encoding/binary"
	"io"
	"strings"
	"testing"
)

func elfHeader(machine uint16, class byte) string {
	b := make([]byte, 64)
	copy(b, "\x7fELF")
	b[4], b[5] = class, 1
	binary.LittleEndian.PutUint16(b[18:], machine)
	return string(b)
}

func TestFactsOSType(t *testing.T) {
	debianOSR := "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n"
	tests := []struct {
		name        string
		files       []te
		ostype, id  string
		refused     bool
		reasonMatch string
	}{
		{"debian", []te{file("etc/os-release", debianOSR), file("etc/debian_version", "12.7\n")}, "debian", "debian", false, "ID=debian"},
		{"debian testing", []te{file("etc/os-release", "ID=debian\n"), file("etc/debian_version", "trixie/sid\n")}, "debian", "debian", false, "ID=debian"},
		{"debian without debian_version", []te{file("etc/os-release", "ID=debian\n")}, "debian", "debian", true, "ID=debian"},
		{"os-release symlinked into /usr/lib", []te{symlink("etc/os-release", "../usr/lib/os-release"), file("usr/lib/os-release", "ID='alpine'\n"), file("etc/alpine-release", "3.20.3\n")}, "alpine", "alpine", false, "ID=alpine"},
		{"only /usr/lib/os-release", []te{file("usr/lib/os-release", "ID=\"arch\"\n")}, "archlinux", "arch", false, "alias"},
		{"rocky is centos", []te{file("etc/os-release", "ID=\"rocky\"\nVERSION_ID=\"9.4\"\n"), file("etc/redhat-release", "Rocky Linux release 9.4 (Blue Onyx)\n")}, "centos", "rocky", false, "alias"},
		{"centos too new", []te{file("etc/os-release", "ID=centos\n"), file("etc/redhat-release", "CentOS Stream release 11\n")}, "centos", "centos", true, "ID=centos"},
		{"ubuntu", []te{file("etc/os-release", "ID=ubuntu\n"), file("etc/lsb-release", "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=24.04\n")}, "ubuntu", "ubuntu", false, "ID=ubuntu"},
		{"old ubuntu", []te{file("etc/os-release", "ID=ubuntu\n"), file("etc/lsb-release", "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=16.04\n")}, "ubuntu", "ubuntu", true, "ID=ubuntu"},
		{"fedora", []te{file("etc/os-release", "ID=fedora\nVERSION_ID=40\n")}, "fedora", "fedora", false, "ID=fedora"},
		{"unknown ID, debian_version fallback", []te{file("etc/os-release", "ID=raspbian\n"), file("etc/debian_version", "12.1\n")}, "debian", "raspbian", false, "/etc/debian_version exists"},
		{"unknown ID, no fallback (wolfi)", []te{file("etc/os-release", "ID=wolfi\n")}, "unmanaged", "wolfi", true, "does not know"},
		{"no os-release at all", []te{file("app", "binary")}, "unmanaged", "", false, "no os-release"},
		{"no os-release, alpine-release", []te{file("etc/alpine-release", "3.19\n")}, "alpine", "", false, "/etc/alpine-release exists"},
		{"nix store", []te{dir("nix/store/")}, "nixos", "", false, "/nix/store exists"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := flatten(t, Options{FactsOnly: true}, gzLayer(t, tc.files...))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			f := r.Facts()
			if f.OSType != tc.ostype || f.OSID != tc.id || (f.OSRefusal != "") != tc.refused || !strings.Contains(f.OSReason, tc.reasonMatch) {
				t.Errorf("got ostype %q id %q reason %q refusal %q; want %q %q refused=%v reason~%q",
					f.OSType, f.OSID, f.OSReason, f.OSRefusal, tc.ostype, tc.id, tc.refused, tc.reasonMatch)
			}
		})
	}
}

func TestFactsShellArch(t *testing.T) {
	tests := []struct {
		name  string
		files []te
		want  string
	}{
		{"amd64 via symlink chain", []te{te{Name: "bin/busybox", Body: elfHeader(0x3e, 2), Mode: 0o755}, symlink("bin/sh", "busybox")}, "amd64"},
		{"arm64 absolute symlink", []te{te{Name: "usr/bin/dash", Body: elfHeader(0xb7, 2), Mode: 0o755}, symlink("bin", "usr/bin"), symlink("usr/bin/sh", "/usr/bin/dash")}, "arm64"},
		{"riscv64", []te{te{Name: "bin/sh", Body: elfHeader(0xf3, 2), Mode: 0o755}}, "riscv64"},
		{"shell script is not ELF", []te{te{Name: "bin/sh", Body: "#!/bin/busybox\n", Mode: 0o755}}, ""},
		{"no shell", []te{file("app", "x")}, ""},
		{"symlink loop", []te{symlink("bin/sh", "sh2"), symlink("bin/sh2", "sh")}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := flatten(t, Options{FactsOnly: true}, gzLayer(t, tc.files...))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := r.Facts().ShellArch; got != tc.want {
				t.Errorf("ShellArch %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFactsWarnings(t *testing.T) {
	r, err := flatten(t, Options{FactsOnly: true}, gzLayer(t, dir("dev/"), te{Name: "dev/null", Type: '3'}, symlink("dev/fd", "/proc/self/fd")))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w := strings.Join(r.Facts().Warnings, "\n")
	for _, want := range []string{"1 device node(s) left out", "1 entries under /dev are skipped"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q lack %q", w, want)
		}
	}
	if _, err := r.WriteTar(context.Background(), io.Discard); err == nil {
		t.Error("WriteTar on a facts-only rootfs succeeded")
	}
}
