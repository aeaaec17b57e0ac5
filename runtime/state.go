package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// imageRecord is an image the ImageService holds.
type imageRecord struct {
	ID          string   `json:"id"` // sha256:<config digest>
	RepoTags    []string `json:"repoTags,omitempty"`
	RepoDigests []string `json:"repoDigests,omitempty"`
	Size        int64    `json:"size"`
	User        string   `json:"user,omitempty"`
	Template    string   `json:"template"` // file name in the template store
	Volid       string   `json:"volid"`    // the template as Proxmox names it
	CacheKey    string   `json:"cacheKey"` // where its metadata lives in the cache
	Pinned      bool     `json:"pinned,omitempty"`
}

// sandboxRecord is a pod sandbox: a group of containers.
type sandboxRecord struct {
	ID          string                            `json:"id"`
	Metadata    *runtimeapi.PodSandboxMetadata    `json:"metadata"`
	State       runtimeapi.PodSandboxState        `json:"state"`
	CreatedAt   int64                             `json:"createdAt"`
	Labels      map[string]string                 `json:"labels,omitempty"`
	Annotations map[string]string                 `json:"annotations,omitempty"`
	Hostname    string                            `json:"hostname,omitempty"`
	LogDir      string                            `json:"logDir,omitempty"`
	Handler     string                            `json:"handler,omitempty"`
	Linux       *runtimeapi.LinuxPodSandboxConfig `json:"-"`
	// IPs are the pod's addresses with their range's prefix length
	// (10.88.0.5/24), Gateways the gateway of each.
	IPs      []string `json:"ips,omitempty"`
	Gateways []string `json:"gateways,omitempty"`
	// Namespaces are the modes the pod asked for, as reported back.
	Namespaces *runtimeapi.NamespaceOption `json:"namespaces,omitempty"`
	DNS        *runtimeapi.DNSConfig       `json:"dns,omitempty"`
}

// containerRecord is a container: a Proxmox LXC container.
type containerRecord struct {
	ID          string                              `json:"id"`
	SandboxID   string                              `json:"sandboxId"`
	Metadata    *runtimeapi.ContainerMetadata       `json:"metadata"`
	Image       string                              `json:"image"`    // as the user asked for it
	ImageRef    string                              `json:"imageRef"` // the image's ID
	Node        string                              `json:"node"`
	VMID        int                                 `json:"vmid"`
	State       runtimeapi.ContainerState           `json:"state"`
	CreatedAt   int64                               `json:"createdAt"`
	StartedAt   int64                               `json:"startedAt,omitempty"`
	FinishedAt  int64                               `json:"finishedAt,omitempty"`
	ExitCode    int32                               `json:"exitCode"`
	Reason      string                              `json:"reason,omitempty"`
	Message     string                              `json:"message,omitempty"`
	Labels      map[string]string                   `json:"labels,omitempty"`
	Annotations map[string]string                   `json:"annotations,omitempty"`
	LogPath     string                              `json:"logPath,omitempty"`
	Resources   *runtimeapi.LinuxContainerResources `json:"resources,omitempty"`
	// Supervised: pve-image-init captures the program's output and exit
	// status, which the daemon collects on the node (container_watch.go).
	Supervised bool `json:"supervised,omitempty"`
	// Shim: the template runs pve-image-init (an application image), so
	// exec goes through it with the program's user and environment.
	Shim bool `json:"shim,omitempty"`
	// Mounts are the CRI mounts, as ContainerStatus reports them (kubelet
	// reads the termination message through them).
	Mounts []*runtimeapi.Mount `json:"mounts,omitempty"`
	// TerminationLog is the termination message file, inside the
	// container and where kubelet reads it.
	TerminationLog *fileMapping `json:"terminationLog,omitempty"`
	// Base is the template container of a linked clone (clones.go); nil
	// when Proxmox unpacked the template.
	Base *baseRef `json:"base,omitempty"`
	// CreateRequested is when CreateContainer arrived (Unix ns), for the
	// create-to-running time.
	CreateRequested int64 `json:"createRequested,omitempty"`
}

// fileMapping is a file kubelet gives a container that Proxmox cannot
// mount (it mounts directories only): the init makes it, the daemon
// copies it.
type fileMapping struct {
	Container string `json:"container"`
	Host      string `json:"host"`
}

// logCursor is how far a supervised container's log segments have been
// copied into its log file.
type logCursor struct {
	Seq    int   `json:"seq"`
	Offset int64 `json:"offset"`
}

// stateFile is everything the daemon keeps across restarts.
type stateFile struct {
	// PodCIDR is the pod range kubelet sent (UpdateRuntimeConfig), used
	// when the daemon was given none.
	PodCIDR string `json:"podCIDR,omitempty"`
	// Owner is the daemon's ID in the marks of its template containers.
	Owner      string                      `json:"owner,omitempty"`
	Images     map[string]*imageRecord     `json:"images"`
	Sandboxes  map[string]*sandboxRecord   `json:"sandboxes"`
	Containers map[string]*containerRecord `json:"containers"`
}

// store keeps the state in memory and in one JSON file, rewritten whole
// (temporary file, fsync, rename) after each change.
type store struct {
	mu   sync.Mutex
	path string
	s    stateFile
}

func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	st := &store{path: filepath.Join(dir, "state.json"), s: stateFile{
		Images: map[string]*imageRecord{}, Sandboxes: map[string]*sandboxRecord{}, Containers: map[string]*containerRecord{},
	}}
	b, err := os.ReadFile(st.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return st, nil
	case err != nil:
		return nil, err
	}
	if err := json.Unmarshal(b, &st.s); err != nil {
		return nil, fmt.Errorf("state %s: %w", st.path, err)
	}
	st.fill()
	return st, nil
}

// errUnchanged, returned by an update's fn, says there is nothing to save.
var errUnchanged = errors.New("unchanged")

// update runs fn under the lock and saves when it returns nil; fn must
// leave s as it was when it returns an error. When the state cannot be
// saved, memory goes back to what is on disk, so that the two agree with
// what the caller is told.
func (st *store) update(fn func(s *stateFile) error) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := fn(&st.s); err != nil {
		if err == errUnchanged {
			return nil
		}
		return err
	}
	if err := st.save(); err != nil {
		if b, rerr := os.ReadFile(st.path); rerr == nil {
			var old stateFile
			if json.Unmarshal(b, &old) == nil {
				st.s = old
				st.fill()
			}
		}
		return fmt.Errorf("save state %s: %w", st.path, err)
	}
	return nil
}

func (st *store) fill() {
	if st.s.Images == nil {
		st.s.Images = map[string]*imageRecord{}
	}
	if st.s.Sandboxes == nil {
		st.s.Sandboxes = map[string]*sandboxRecord{}
	}
	if st.s.Containers == nil {
		st.s.Containers = map[string]*containerRecord{}
	}
}

// view runs fn under the lock.
func (st *store) view(fn func(s *stateFile)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	fn(&st.s)
}

func (st *store) save() error {
	b, err := json.MarshalIndent(st.s, "", " ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(st.path), ".state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), st.path)
}
