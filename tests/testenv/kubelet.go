package testenv

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
)

// Kubelet is a real kubelet (bin/kubelet, built by scripts/install-tools.sh)
// in standalone mode: no API server, no kubeconfig; it runs the static pods
// whose manifests the test writes into its manifest directory, against the
// CRI endpoint it was given, and reports them on its HTTPS port.
type Kubelet struct {
	// NodeName is the node's name (--hostname-override); kubelet appends
	// "-<NodeName>" to the names of static pods.
	NodeName string
	// URL is kubelet's HTTPS server, https://127.0.0.1:PORT.
	URL string
	// Dir holds everything kubelet writes: root directory, manifests, pod
	// logs, certificates; removed when the test ends.
	Dir string
	// ManifestDir is the static pod directory (staticPodPath).
	ManifestDir string
	// PodLogsDir is where kubelet puts container logs (podLogsDir).
	PodLogsDir string
	// ConfigFile is the KubeletConfiguration kubelet runs with.
	ConfigFile string

	client *http.Client
	log    syncBuffer
	cmd    *exec.Cmd
	done   chan struct{}
	// tailShown: a failure message already carries kubelet's log tail.
	tailShown bool
}

// KubeletOptions configure StartKubelet.
type KubeletOptions struct {
	// CRIEndpoint is the runtime's socket, unix:///...; required.
	CRIEndpoint string
	// NodeName is --hostname-override; default "pvit-node".
	NodeName string
	// PodCIDR is the node's pod range; default 10.88.0.0/24.
	PodCIDR string
	// ClusterDNS and ClusterDomain go into pods' resolv.conf for dnsPolicy
	// ClusterFirst; without ClusterDNS kubelet falls back to the host's
	// resolver configuration.
	ClusterDNS    []string
	ClusterDomain string
	// ResolvConf is the host resolver file pods inherit; default
	// /etc/resolv.conf (kubelet's own default).
	ResolvConf string
	// Verbosity is kubelet's -v; default 2. At 3 kubelet also logs the
	// events it would post to an API server (Pulling, Pulled, Created,
	// Started, BackOff, Failed... with their messages).
	Verbosity int
	// Extra overrides top-level KubeletConfiguration fields (the JSON
	// names, e.g. "syncFrequency": "5s"); a nil value removes the field.
	Extra map[string]any
}

// RequireKubelet skips unless a kubelet can run here: it needs root, and
// the binary from scripts/install-tools.sh. It returns the binary.
func RequireKubelet(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "kubelet needs root (it manages mounts, cgroups and kernel settings)")
	}
	return Tool(t, "PVE_IMAGE_KUBELET_BIN", "kubelet")
}

// StartKubelet runs kubelet for the test's lifetime and returns once its
// /healthz answers. When the test ends, the pods are removed (so kubelet
// stops them through the runtime), kubelet is stopped (SIGTERM, then
// SIGKILL), what it changed on the host is put back (see hostState) and its
// directories are unmounted and removed.
//
// Run one kubelet at a time on a machine: kubelet puts its device plugin
// socket at a fixed path whatever its root directory.
func StartKubelet(t testing.TB, o KubeletOptions) *Kubelet {
	t.Helper()
	bin := RequireKubelet(t)
	if !strings.HasPrefix(o.CRIEndpoint, "unix://") {
		t.Fatalf("StartKubelet: CRIEndpoint %q is not unix:///...", o.CRIEndpoint)
	}
	if o.NodeName == "" {
		o.NodeName = "pvit-node"
	}
	if o.Verbosity == 0 {
		o.Verbosity = 2
	}
	if o.PodCIDR == "" {
		o.PodCIDR = "10.88.0.0/24"
	}
	// A short path: kubelet puts unix sockets under its root directory
	// (pod-resources/, device-plugins/), and t.TempDir paths are long.
	dir, err := os.MkdirTemp("", "kl-*")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: kubelet is stopped, then the host state
	// restored, then dir unmounted and removed.
	t.Cleanup(func() { removeKubeletDir(t, dir) })
	port := freePort(t, "127.0.0.1")
	portNum, _ := strconv.Atoi(port)
	k := &Kubelet{
		NodeName:    strings.ToLower(o.NodeName),
		URL:         "https://127.0.0.1:" + port,
		Dir:         dir,
		ManifestDir: filepath.Join(dir, "manifests"),
		PodLogsDir:  filepath.Join(dir, "pod-logs"),
		ConfigFile:  filepath.Join(dir, "config.yaml"),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			// kubelet serves a self-signed certificate it makes at start.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		}},
		done: make(chan struct{}),
	}
	rootDir := filepath.Join(dir, "root")
	for _, d := range []string{rootDir, k.ManifestDir, k.PodLogsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	cfg := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"containerRuntimeEndpoint": o.CRIEndpoint,
		"imageServiceEndpoint":     o.CRIEndpoint,
		"staticPodPath":            k.ManifestDir,
		// Manifests are also watched with inotify; the poll is the
		// fallback, every 20 s by default.
		"fileCheckFrequency": "1s",
		// The periodic resync of every pod (default 1m): status and
		// restarts show sooner when an event is missed.
		"syncFrequency": "10s",
		// This machine: cgroup v1 (hybrid), no systemd as PID 1, maybe
		// swap; kubelet must not create a QoS cgroup tree or enforce
		// allocatable (the runtime, not kubelet, places containers).
		// kubelet takes the cgroup driver from the runtime's
		// RuntimeConfig when it reports one; this is the fallback.
		"cgroupDriver":           "cgroupfs",
		"failSwapOn":             false,
		"failCgroupV1":           false,
		"cgroupsPerQOS":          false,
		"enforceNodeAllocatable": []string{},
		"podCIDR":                o.PodCIDR,
		// Only on loopback, on a port of the test's own; no read-only
		// port and no separate healthz port (/healthz is on the main
		// port too), so tests may run side by side.
		"address":      "127.0.0.1",
		"port":         portNum,
		"readOnlyPort": 0,
		"healthzPort":  0,
		// No API server to ask: anyone on loopback may read /pods and
		// /containerLogs.
		"authentication": map[string]any{"anonymous": map[string]any{"enabled": true}, "webhook": map[string]any{"enabled": false}},
		"authorization":  map[string]any{"mode": "AlwaysAllow"},
		// No ephemeral-storage accounting: containers' disks are Proxmox
		// volumes kubelet cannot measure.
		"localStorageCapacityIsolation": false,
		// A small test machine must not evict the test's pods, nor
		// garbage-collect the images it pulled (100 disables image GC:
		// by default kubelet deletes images once the image filesystem is
		// 85% full, which a CI disk may well be).
		"evictionHard":                map[string]any{"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		// Keep kubelet's traces inside Dir rather than on the host:
		// container logs (default /var/log/pods) and the flexvolume
		// plugin directory (default /usr/libexec/kubernetes/..., which
		// kubelet creates).
		"podLogsDir":      k.PodLogsDir,
		"volumePluginDir": filepath.Join(dir, "volume-plugins"),
		// No KUBE-FIREWALL / KUBE-IPTABLES-HINT chains in the host's
		// iptables: no kube-proxy here needs them.
		"makeIPTablesUtilChains": false,
	}
	if len(o.ClusterDNS) > 0 {
		cfg["clusterDNS"] = o.ClusterDNS
	}
	if o.ClusterDomain != "" {
		cfg["clusterDomain"] = o.ClusterDomain
	}
	if o.ResolvConf != "" {
		cfg["resolvConf"] = o.ResolvConf
	}
	for key, v := range o.Extra {
		if v == nil {
			delete(cfg, key)
		} else {
			cfg[key] = v
		}
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.ConfigFile, b, 0o644); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(saveHostState(t))
	k.cmd = exec.Command(bin, "--config", k.ConfigFile, "--root-dir", rootDir,
		"--cert-dir", filepath.Join(dir, "pki"), "--hostname-override", o.NodeName, "-v", strconv.Itoa(o.Verbosity))
	k.cmd.Stdout, k.cmd.Stderr = &k.log, &k.log
	// Its own process group, so that stop reaches anything it started;
	// killed with the test binary should that die without cleaning up
	// (go test -timeout).
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("start kubelet: %v", err)
	}
	go func() { k.cmd.Wait(); close(k.done) }()
	t.Cleanup(func() {
		k.drain(t)
		k.stop()
		if t.Failed() && !k.tailShown {
			t.Logf("kubelet log (tail):\n%s", k.logTail(150))
		}
	})

	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, body, err := k.get("/healthz")
		if err == nil && code == http.StatusOK && body == "ok" {
			break
		}
		select {
		case <-k.done:
			k.tailShown = true
			t.Fatalf("kubelet exited (%v):\n%s", k.cmd.ProcessState, k.logTail(80))
		default:
		}
		if time.Now().After(deadline) {
			k.tailShown = true
			t.Fatalf("kubelet /healthz on %s: %d %q %v\n%s", k.URL, code, body, err, k.logTail(80))
		}
	}
	return k
}

// Log is kubelet's output so far (stdout and stderr).
// HTTPClient reaches kubelet's HTTPS server (its certificate is
// self-signed).
func (k *Kubelet) HTTPClient() *http.Client { return k.client }

func (k *Kubelet) Log() string { return k.log.String() }

func (k *Kubelet) logTail(lines int) string {
	l := strings.Split(strings.TrimRight(k.Log(), "\n"), "\n")
	if len(l) > lines {
		l = append([]string{fmt.Sprintf("[... %d lines before]", len(l)-lines)}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n")
}

func (k *Kubelet) get(path string) (int, string, error) {
	resp, err := k.client.Get(k.URL + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Get fetches path from kubelet's server (e.g. "/healthz") and returns the
// status code and body; a failed request fails the test.
func (k *Kubelet) Get(t testing.TB, path string) (int, string) {
	t.Helper()
	code, body, err := k.get(path)
	if err != nil {
		t.Fatalf("kubelet GET %s: %v", path, err)
	}
	return code, body
}

// WritePod writes a static pod manifest as name.yaml; kubelet picks it up
// within a second. The file is written under a hidden name (which kubelet
// ignores) and renamed, so kubelet never reads half a manifest.
func (k *Kubelet) WritePod(t testing.TB, name, manifestYAML string) {
	t.Helper()
	f, err := os.CreateTemp(k.ManifestDir, "."+name+".yaml.*")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(manifestYAML)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(k.ManifestDir, name+".yaml"))
	}
	if err != nil {
		os.Remove(f.Name())
		t.Fatal(err)
	}
}

// RemovePod deletes the manifest name.yaml; kubelet then stops the pod.
func (k *Kubelet) RemovePod(t testing.TB, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(k.ManifestDir, name+".yaml")); err != nil {
		t.Fatal(err)
	}
}

// Pod is the part of a v1.Pod tests look at, as kubelet's /pods reports
// it. In standalone mode that is where static pods' status shows
// (kubernetes issue #57106).
type Pod struct {
	Metadata PodMeta   `json:"metadata"`
	Status   PodStatus `json:"status"`
}

// PodMeta is a pod's metadata.
type PodMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	UID         string            `json:"uid"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// PodStatus is a pod's status.
type PodStatus struct {
	Phase                 string            `json:"phase,omitempty"`
	Reason                string            `json:"reason,omitempty"`
	Message               string            `json:"message,omitempty"`
	HostIP                string            `json:"hostIP,omitempty"`
	PodIP                 string            `json:"podIP,omitempty"`
	PodIPs                []PodIP           `json:"podIPs,omitempty"`
	StartTime             *time.Time        `json:"startTime,omitempty"`
	Conditions            []PodCondition    `json:"conditions,omitempty"`
	InitContainerStatuses []ContainerStatus `json:"initContainerStatuses,omitempty"`
	ContainerStatuses     []ContainerStatus `json:"containerStatuses,omitempty"`
}

// PodIP is one of a pod's addresses.
type PodIP struct {
	IP string `json:"ip"`
}

// PodCondition is one of a pod's conditions (PodScheduled, Initialized,
// ContainersReady, Ready, PodReadyToStartContainers).
type PodCondition struct {
	Type    string `json:"type"`
	Status  string `json:"status"` // "True", "False", "Unknown"
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// ContainerStatus is a container's status.
type ContainerStatus struct {
	Name         string         `json:"name"`
	Image        string         `json:"image,omitempty"`
	ImageID      string         `json:"imageID,omitempty"`
	ContainerID  string         `json:"containerID,omitempty"` // "<runtime>://<id>"
	Ready        bool           `json:"ready"`
	Started      *bool          `json:"started,omitempty"`
	RestartCount int            `json:"restartCount"`
	State        ContainerState `json:"state"`
	LastState    ContainerState `json:"lastState"`
}

// ContainerState holds at most one of its fields.
type ContainerState struct {
	Waiting    *StateWaiting    `json:"waiting,omitempty"`
	Running    *StateRunning    `json:"running,omitempty"`
	Terminated *StateTerminated `json:"terminated,omitempty"`
}

// StateWaiting is a container that has not started (again).
type StateWaiting struct {
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// StateRunning is a running container.
type StateRunning struct {
	StartedAt time.Time `json:"startedAt"`
}

// StateTerminated is a container that ended.
type StateTerminated struct {
	ExitCode   int       `json:"exitCode"`
	Reason     string    `json:"reason,omitempty"`
	Message    string    `json:"message,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
}

// Container returns the status of the (init) container named name.
func (p Pod) Container(name string) (ContainerStatus, bool) {
	for _, c := range append(slices.Clone(p.Status.ContainerStatuses), p.Status.InitContainerStatuses...) {
		if c.Name == name {
			return c, true
		}
	}
	return ContainerStatus{}, false
}

// Condition returns the status ("True", "False", "Unknown") of a
// condition, or "" when the pod does not have it.
func (p Pod) Condition(typ string) string {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

// String is the pod as indented JSON, for failure messages.
func (p Pod) String() string {
	b, _ := json.MarshalIndent(p, "", "  ")
	return string(b)
}

// Pods lists the pods kubelet has (GET /pods).
func (k *Kubelet) Pods(t testing.TB) []Pod {
	t.Helper()
	pods, err := k.pods()
	if err != nil {
		t.Fatal(err)
	}
	return pods
}

func (k *Kubelet) pods() ([]Pod, error) {
	code, body, err := k.get("/pods")
	if err != nil {
		return nil, fmt.Errorf("kubelet GET /pods: %w", err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("kubelet GET /pods: %d %s", code, body)
	}
	var list struct {
		Items []Pod `json:"items"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		return nil, fmt.Errorf("kubelet /pods: %w\n%s", err, body)
	}
	return list.Items, nil
}

// PodName is the name kubelet gives the static pod named name: name with
// "-<NodeName>" appended (unless it already ends so).
func (k *Kubelet) PodName(name string) string {
	if strings.HasSuffix(name, "-"+k.NodeName) {
		return name
	}
	return name + "-" + k.NodeName
}

// PodByName finds a pod by its manifest's name (or its full static pod
// name), in any namespace.
func (k *Kubelet) PodByName(t testing.TB, name string) (Pod, bool) {
	t.Helper()
	return findPod(k.Pods(t), k.PodName(name))
}

func findPod(pods []Pod, full string) (Pod, bool) {
	for _, p := range pods {
		if p.Metadata.Name == full {
			return p, true
		}
	}
	return Pod{}, false
}

// WaitPod polls /pods until the pod is listed and cond holds, and returns
// it; on timeout it fails the test with the pod's last status and the tail
// of kubelet's log.
func (k *Kubelet) WaitPod(t testing.TB, name string, timeout time.Duration, cond func(Pod) bool) Pod {
	t.Helper()
	full := k.PodName(name)
	var last string
	for deadline := time.Now().Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		pods, err := k.pods()
		if err != nil {
			last = err.Error()
		} else if p, ok := findPod(pods, full); ok {
			if cond(p) {
				return p
			}
			last = p.String()
		} else {
			names := []string{}
			for _, p := range pods {
				names = append(names, p.Metadata.Namespace+"/"+p.Metadata.Name)
			}
			last = fmt.Sprintf("pod %s not listed; kubelet has %v", full, names)
		}
		select {
		case <-k.done:
			k.tailShown = true
			t.Fatalf("kubelet exited while waiting for pod %s (%v); last status:\n%s\nkubelet log (tail):\n%s",
				full, k.cmd.ProcessState, last, k.logTail(80))
		default:
		}
		if time.Now().After(deadline) {
			k.tailShown = true
			t.Fatalf("pod %s: condition not met within %s; last status:\n%s\nkubelet log (tail):\n%s",
				full, timeout, last, k.logTail(80))
		}
	}
}

// ContainerLogs returns a container's log as kubelet serves it (GET
// /containerLogs/{namespace}/{pod}/{container}); pod may be the manifest's
// name. Anything but 200 fails the test.
func (k *Kubelet) ContainerLogs(t testing.TB, namespace, pod, container string) string {
	t.Helper()
	path := "/containerLogs/" + namespace + "/" + k.PodName(pod) + "/" + container
	code, body := k.Get(t, path)
	if code != http.StatusOK {
		t.Fatalf("kubelet GET %s: %d %s", path, code, body)
	}
	return body
}

// drain removes every manifest and waits (up to 20 s) until the runtime
// has no running pod left (GET /runningpods/ asks it), so that containers
// do not outlive the test.
func (k *Kubelet) drain(t testing.TB) {
	entries, _ := os.ReadDir(k.ManifestDir)
	for _, e := range entries {
		os.Remove(filepath.Join(k.ManifestDir, e.Name()))
	}
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		select {
		case <-k.done:
			return
		default:
		}
		code, body, err := k.get("/runningpods/")
		if err != nil || code != http.StatusOK {
			last = fmt.Sprint(code, body, err)
			continue
		}
		last = body
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if json.Unmarshal([]byte(body), &list) == nil && len(list.Items) == 0 {
			return
		}
	}
	t.Logf("kubelet cleanup: pods still running 20s after their manifests were removed: %s", last)
}

// stop ends kubelet: SIGTERM, then SIGKILL to its process group.
func (k *Kubelet) stop() {
	pgid := -k.cmd.Process.Pid
	syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(10 * time.Second):
	}
	syscall.Kill(pgid, syscall.SIGKILL) // and anything kubelet started
	<-k.done
}

// removeKubeletDir unmounts what kubelet mounted under dir (it makes its
// root directory a shared bind mount of itself, and puts tmpfs volumes
// under it), then removes dir, and the /var/log/containers links kubelet
// made to logs in it.
func removeKubeletDir(t testing.TB, dir string) {
	for _, m := range mountsUnder(dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Logf("kubelet cleanup: umount %s: %v", m, err)
		}
	}
	if left := mountsUnder(dir); len(left) > 0 {
		// Removing would reach into whatever is still mounted.
		t.Errorf("kubelet cleanup: %s still has mounts %v; not removed", dir, left)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Logf("kubelet cleanup: %v", err)
	}
	links, _ := filepath.Glob("/var/log/containers/*.log")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, dir+"/") {
			os.Remove(l)
		}
	}
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// Deeper paths first; the same path mounted twice stays in mount
	// order reversed (the later one is on top).
	slices.Reverse(out)
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// hostState is what kubelet changes outside its directories however it is
// configured, saved before the first kubelet starts and put back when the
// last one stops:
//   - the kernel settings it sets at start unless protectKernelDefaults is
//     on (which would make it refuse to start instead), among them
//     kernel.panic=10 and kernel.panic_on_oops=1, which a test machine
//     should not keep;
//   - /var/lib/kubelet/device-plugins, where the device plugin manager puts
//     its socket and checkpoint whatever --root-dir says (the path is a
//     constant in k8s.io/kubelet), and /var/log/containers, where kubelet
//     links container logs (a constant too): removed if kubelet made them.
var hostState struct {
	sync.Mutex
	users   int
	sysctls map[string][]byte
	created []string // directories that did not exist, deepest first
}

var kernelTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

func saveHostState(t testing.TB) (restore func()) {
	hostState.Lock()
	defer hostState.Unlock()
	if hostState.users == 0 {
		hostState.sysctls = map[string][]byte{}
		for _, n := range kernelTunables {
			if b, err := os.ReadFile("/proc/sys/" + n); err == nil {
				hostState.sysctls[n] = b
			}
		}
		hostState.created = nil
		for _, d := range []string{"/var/lib/kubelet/device-plugins", "/var/lib/kubelet", "/var/log/containers"} {
			if _, err := os.Lstat(d); os.IsNotExist(err) {
				hostState.created = append(hostState.created, d)
			}
		}
	}
	hostState.users++
	var once sync.Once
	return func() {
		once.Do(func() {
			hostState.Lock()
			defer hostState.Unlock()
			if hostState.users--; hostState.users > 0 {
				return
			}
			for n, b := range hostState.sysctls {
				if cur, err := os.ReadFile("/proc/sys/" + n); err == nil && bytes.Equal(cur, b) {
					continue
				}
				if err := os.WriteFile("/proc/sys/"+n, b, 0o644); err != nil {
					t.Logf("kubelet cleanup: restore %s: %v", n, err)
				}
			}
			// kubelet leaves its device plugin socket behind; remove it
			// if nothing listens on it any more.
			sock := "/var/lib/kubelet/device-plugins/kubelet.sock"
			if fi, err := os.Lstat(sock); err == nil && fi.Mode().Type() == os.ModeSocket {
				if c, err := net.DialTimeout("unix", sock, time.Second); err != nil {
					os.Remove(sock)
				} else {
					c.Close()
				}
			}
			for _, d := range hostState.created {
				if d == "/var/log/containers" {
					os.Remove(d) // only if empty: a runtime may use it too
				} else {
					os.RemoveAll(d)
				}
			}
		})
	}
}

// syncBuffer is a strings.Builder safe for a writer and readers at once.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
