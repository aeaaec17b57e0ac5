package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestPlanMounts(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o755)
	hosts := filepath.Join(dir, "etc-hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n10.88.0.5 web\n"), 0o644)
	term := filepath.Join(dir, "termination")
	os.WriteFile(term, nil, 0o666)
	conf := filepath.Join(dir, "app.conf")
	os.WriteFile(conf, []byte("x"), 0o644)
	mount := func(cp, hp string) *runtimeapi.Mount { return &runtimeapi.Mount{ContainerPath: cp, HostPath: hp} }
	config := func(ms ...*runtimeapi.Mount) *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{Mounts: ms, Annotations: map[string]string{terminationPathAnnotation: "/dev/termination-log"}}
	}
	ro := mount("/etc/app", data)
	ro.Readonly = true
	propagated := mount("/mnt", data)
	propagated.Propagation = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER

	tests := []struct {
		name   string
		c      *runtimeapi.ContainerConfig
		why    string
		points []string
		hosts  bool
		term   bool
		err    string
	}{
		{name: "nothing", c: config()},
		{name: "directories, parents first", c: config(mount("/var/lib/app/cache", data), ro, mount("/var/lib/app", data)),
			points: []string{data + ",mp=/etc/app,ro=1", data + ",mp=/var/lib/app", data + ",mp=/var/lib/app/cache"}},
		{name: "kubelet's files", c: config(mount("/etc/hosts", hosts), mount("/dev/termination-log", term)), hosts: true, term: true},
		{name: "kubelet's files need no bind mounts", c: config(mount("/etc/hosts", hosts), mount("/dev/termination-log", term)), why: "not root@pam", hosts: true, term: true},
		{name: "a Memory emptyDir at /dev/shm is the init's tmpfs", c: config(mount("/dev/shm", data))},
		{name: "bind mounts blocked", c: config(mount("/data", data)), why: "only root@pam", err: "mount /data (from " + data + "): only root@pam"},
		{name: "a file", c: config(mount("/etc/app.conf", conf)), err: "Proxmox bind-mounts only directories"},
		{name: "missing host path", c: config(mount("/data", filepath.Join(dir, "nope"))), err: "the host path is not there"},
		{name: "under /proc", c: config(mount("/proc/x", data)), err: "LXC sets up /dev, /proc and /sys"},
		{name: "relative", c: config(mount("data", data)), err: "absolute and clean"},
		{name: "unclean", c: config(mount("/a/../b", data)), err: "absolute and clean"},
		{name: "comma", c: config(mount("/a,b", data)), err: "cannot hold a path with ','"},
		{name: "propagation", c: config(propagated), err: "PROPAGATION_HOST_TO_CONTAINER"},
		{name: "image volume", c: config(&runtimeapi.Mount{ContainerPath: "/x", Image: &runtimeapi.ImageSpec{Image: "busybox"}}), err: "image volumes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := planMounts(tt.c, tt.why)
			if tt.err != "" {
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want InvalidArgument with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(p.points, "|") != strings.Join(tt.points, "|") {
				t.Errorf("mount points %q, want %q", p.points, tt.points)
			}
			if (p.hosts != nil) != tt.hosts || (tt.hosts && *p.hosts != "127.0.0.1 localhost\n10.88.0.5 web\n") {
				t.Errorf("hosts %v", p.hosts)
			}
			if (p.terminationLog != nil) != tt.term || (tt.term && *p.terminationLog != fileMapping{Container: "/dev/termination-log", Host: term}) {
				t.Errorf("termination log %+v", p.terminationLog)
			}
		})
	}
}
