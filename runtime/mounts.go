package runtime

import (
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// terminationPathAnnotation is where kubelet says which mount is the
// termination message file (kuberuntime labels.go).
const terminationPathAnnotation = "io.kubernetes.container.terminationMessagePath"

// mountPlan is what becomes of a container's CRI mounts: Proxmox bind
// mount points for directories, and for the files kubelet gives (which
// Proxmox cannot mount: pve-container bind-mounts directories only,
// LXC.pm __mountpoint_mount) what the init writes instead.
type mountPlan struct {
	points         []string // mpN values, in order
	hosts          *string  // kubelet's /etc/hosts, copied in
	terminationLog *fileMapping
}

// maxHostsFile bounds kubelet's /etc/hosts, which goes into the
// container's environment.
const maxHostsFile = 64 << 10

// mountRefusal says why a mount cannot be made, naming it.
func mountRefusal(m *runtimeapi.Mount, why string) error {
	return status.Errorf(codes.InvalidArgument, "mount %s (from %s): %s", m.GetContainerPath(), m.GetHostPath(), why)
}

// planMounts turns every CRI mount into a mount point or a copied file,
// or refuses the container naming the mount and the reason; nothing is
// dropped. why says what keeps bind mounts from working ("" when they
// work): the daemon not on the node, or not root@pam.
func planMounts(c *runtimeapi.ContainerConfig, why string) (mountPlan, error) {
	var p mountPlan
	term := c.GetAnnotations()[terminationPathAnnotation]
	mounts := slices.Clone(c.GetMounts())
	// Parents before children, so that a volume inside another is
	// mounted on top of it.
	slices.SortStableFunc(mounts, func(a, b *runtimeapi.Mount) int { return strings.Compare(a.GetContainerPath(), b.GetContainerPath()) })
	for _, m := range mounts {
		cp, hp := m.GetContainerPath(), m.GetHostPath()
		switch {
		case !path.IsAbs(cp) || path.Clean(cp) != cp:
			return p, mountRefusal(m, "the container path must be absolute and clean")
		case m.GetImage() != nil:
			return p, mountRefusal(m, "image volumes are not supported: Proxmox mounts directories, not images")
		case m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
			return p, mountRefusal(m, fmt.Sprintf("mount propagation %s is not available: Proxmox's mount points are private mounts", m.GetPropagation()))
		}
		fi, err := os.Stat(hp)
		if err != nil {
			return p, mountRefusal(m, "the host path is not there: "+err.Error())
		}
		if !fi.IsDir() {
			if err := p.file(m, fi, term); err != nil {
				return p, err
			}
			continue
		}
		switch {
		case cp == "/dev/shm":
			// pve-image-init mounts a tmpfs there: what a Memory
			// emptyDir at /dev/shm is for.
			continue
		case cp == "/" || under(cp, "/dev") || under(cp, "/proc") || under(cp, "/sys"):
			return p, mountRefusal(m, "LXC sets up /dev, /proc and /sys itself, over anything mounted there")
		case strings.ContainsAny(cp+hp, ",=\"") || hasControlOrSpace(cp+hp):
			return p, mountRefusal(m, "Proxmox's mount point option cannot hold a path with ',', '=', '\"', spaces or control characters")
		case why != "":
			return p, mountRefusal(m, why)
		}
		opt := hp + ",mp=" + cp
		if m.GetReadonly() {
			opt += ",ro=1"
		}
		p.points = append(p.points, opt)
	}
	return p, nil
}

// file handles a mount of a file: kubelet's /etc/hosts and termination
// message file, which the init makes from their contents; other files
// cannot be mounted.
func (p *mountPlan) file(m *runtimeapi.Mount, fi os.FileInfo, term string) error {
	cp, hp := m.GetContainerPath(), m.GetHostPath()
	switch {
	case !fi.Mode().IsRegular():
		return mountRefusal(m, "only directories and regular files can be given to a container")
	case cp == term:
		p.terminationLog = &fileMapping{Container: cp, Host: hp}
		return nil
	case cp == "/etc/hosts":
		// kubelet writes the pod's hosts file once, before the first
		// container: a copy is the same file.
		f, err := os.Open(hp)
		if err != nil {
			return mountRefusal(m, err.Error())
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxHostsFile+1))
		if err != nil || len(b) > maxHostsFile {
			return mountRefusal(m, fmt.Sprintf("the hosts file cannot be read or is over %d bytes", maxHostsFile))
		}
		s := string(b)
		p.hosts = &s
		return nil
	}
	return mountRefusal(m, "it is a file, and Proxmox bind-mounts only directories (pve-container refuses a file as a mount point); mount the directory that holds it (a volume without subPath)")
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func hasControlOrSpace(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0
}
