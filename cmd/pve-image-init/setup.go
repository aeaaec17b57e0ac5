package main

import (
	"bufio"
	"os"
	"strings"
	"syscall"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// setupMounts mounts what programs expect and LXC may not provide: a tmpfs
// on /dev/shm, and on /run and /tmp when the image left them empty. A
// directory that is, or holds, a mount point already (a pod's volume at
// /tmp or /run/secrets/...) is left alone: a tmpfs would hide it.
func setupMounts(spec *runspec.Spec) {
	mounted := mountPoints()
	mount := func(dir, opts string) {
		for m := range mounted {
			if m == dir || strings.HasPrefix(m, dir+"/") {
				return
			}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			logf("mount %s: %v", dir, err)
			return
		}
		if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
			logf("mount tmpfs on %s: %v", dir, err)
		}
	}
	mount("/dev/shm", "mode=1777")
	if spec.MountRun {
		mount("/run", "mode=755")
	}
	if spec.MountTmp {
		mount("/tmp", "mode=1777")
	}
}

func mountPoints() map[string]bool {
	m := map[string]bool{}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 {
			m[fields[4]] = true
		}
	}
	return m
}

// setupHostname makes /etc/hostname and /etc/hosts agree with the name LXC
// gave the container, where the image has none: Proxmox's ostype plugins
// write them for distributions, but not for unmanaged containers.
func setupHostname() {
	name, err := os.Hostname()
	if err != nil || name == "" {
		return
	}
	if b, err := os.ReadFile("/etc/hostname"); err != nil || strings.TrimSpace(string(b)) == "" {
		writeIfPossible("/etc/hostname", name+"\n")
	}
	if b, err := os.ReadFile("/etc/hosts"); err != nil || strings.TrimSpace(string(b)) == "" {
		writeIfPossible("/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t"+name+"\n")
	}
}

func writeIfPossible(p, content string) {
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		logf("write %s: %v", p, err)
	}
}
