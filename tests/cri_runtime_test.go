package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/tests/pvelxc"
	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestCRIRuntimeService drives the RuntimeService with crictl against the
// Proxmox simulator, the way kubelet does for one pod: pull (the template
// is pushed to the storage over the API), runp (with the pod's address
// from --pod-cidr), create with a command, env, working dir, user and
// limits, start, ps, inspect, stop, rm, stopp, rmp. The daemon is not on
// the containers' node here, as with an API token from elsewhere: what
// needs the node (exec, output, exit statuses, volumes) is refused with
// the reason. With LXC here the container runs for real and its console
// shows the program with the pod's settings.
func TestCRIRuntimeService(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "library/web:1", appImage(t, "cri-run", v1.Config{Entrypoint: []string{"/app"}, Cmd: []string{"sleep", "1h"},
		Env: []string{"PATH=/bin", "MODE=image", "KEEP=yes"}}))
	sim := startSim(t, pvesim.Options{RealLXC: true})
	c := newCLI(t)
	d := startCRI(t, c, append(pveArgs(sim, "--rootfs-storage", "shared"), "--registry-mirror", "docker.io=http://"+reg.Host,
		"--pod-cidr", "10.88.7.0/24")...)

	d.crictlOK(t, "pull", "web:1")
	tmpl, _ := filepath.Glob(filepath.Join(sim.StoragePath("pve1", "local"), "template", "cache", "*web_1_amd64.*.tar.zst"))
	if len(tmpl) != 1 || sim.Uploads() != 1 {
		t.Fatalf("after pull the storage holds %v (%d uploads)", tmpl, sim.Uploads())
	}

	dir := t.TempDir()
	pod := writeJSON(t, dir, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": "web-0", "namespace": "default", "uid": "5f0c-uid-1", "attempt": 0},
		"hostname":      "web-0",
		"log_directory": dir,
		"labels":        map[string]string{"app": "web"},
	})
	ctr := writeJSON(t, dir, "ctr.json", map[string]any{
		"metadata":    map[string]any{"name": "app"},
		"image":       map[string]any{"image": "web:1"},
		"command":     []string{"/app"},
		"args":        []string{"report", "wait-signal"},
		"envs":        []map[string]string{{"key": "MODE", "value": "pod"}},
		"working_dir": "/tmp",
		"log_path":    "app.log",
		"labels":      map[string]string{"role": "server"},
		"linux": map[string]any{
			"resources":        map[string]any{"memory_limit_in_bytes": 256 << 20, "cpu_quota": 50000, "cpu_period": 100000},
			"security_context": map[string]any{"run_as_user": map[string]any{"value": 33}},
		},
	})

	podID := d.crictlOK(t, "runp", pod)
	podID = strings.TrimSpace(podID)
	var podInsp struct {
		Status struct {
			Network struct{ IP string } `json:"network"`
		} `json:"status"`
	}
	json.Unmarshal([]byte(d.crictlOK(t, "inspectp", "-o", "json", podID)), &podInsp)
	if podInsp.Status.Network.IP != "10.88.7.2" {
		t.Errorf("the pod's address: %q, want the first of --pod-cidr after the gateway", podInsp.Status.Network.IP)
	}
	if pods := d.crictlOK(t, "pods", "--label", "app=web", "-q"); strings.TrimSpace(pods) != podID {
		t.Errorf("crictl pods: %q, want %q", pods, podID)
	}
	ctrID := strings.TrimSpace(d.crictlOK(t, "create", podID, ctr, pod))

	var insp struct {
		Status struct {
			State   string `json:"state"`
			Reason  string `json:"reason"`
			LogPath string `json:"logPath"`
		} `json:"status"`
		Info struct {
			Node string `json:"node"`
			VMID int    `json:"vmid"`
		} `json:"info"`
	}
	inspect := func() {
		t.Helper()
		if err := json.Unmarshal([]byte(d.crictlOK(t, "inspect", "-o", "json", ctrID)), &insp); err != nil {
			t.Fatal(err)
		}
	}
	inspect()
	if insp.Status.State != "CONTAINER_CREATED" || insp.Info.Node != "pve1" || insp.Info.VMID < 100 {
		t.Fatalf("inspect after create: %+v", insp)
	}
	vmid := insp.Info.VMID
	cfg := ctConfig(t, sim, vmid)
	for k, want := range map[string]string{"ostemplate": "", "hostname": "web-0", "memory": "256", "swap": "0", "cpulimit": "0.50",
		"unprivileged": "1", "entrypoint": "/sbin/pve-image-init -- /app report wait-signal", "ostype": "unmanaged", "cmode": "console"} {
		if k == "ostemplate" {
			continue // Proxmox does not keep it in the config
		}
		if cfg[k] != want {
			t.Errorf("config %s = %q, want %q", k, cfg[k], want)
		}
	}
	env := strs(strings.Split(cfg["env"], "\x00"))
	for _, want := range []string{"MODE=pod", "KEEP=yes", "PATH=/bin", "PVE_IMAGE_CWD=/tmp", "PVE_IMAGE_UID=33"} {
		if !env.has(want) {
			t.Errorf("env %q lacks %q", env, want)
		}
	}
	if !strings.Contains(cfg["tags"], "pod-5f0c-uid-1") || !strings.HasPrefix(cfg["rootfs"], "shared:") {
		t.Errorf("tags %q rootfs %q", cfg["tags"], cfg["rootfs"])
	}
	if n := cfg["net0"]; !strings.Contains(n, "ip=10.88.7.2/24,gw=10.88.7.1") || !strings.Contains(n, "host-managed=1") {
		t.Errorf("net0 %q: want the pod's address, static and host-managed", n)
	}
	if env.has("PVE_IMAGE_SUPERVISED=1") {
		t.Error("supervised, though the daemon cannot reach the container")
	}
	// What needs the node says so.
	if r := d.crictl(t, "exec", "-s", ctrID, "/app", "report"); r.err == nil || !strings.Contains(r.stderr, "needs pve-image cri running as root on the Proxmox node") {
		t.Errorf("exec off the node: %v %s", r.err, r.stderr)
	}
	vol := writeJSON(t, dir, "vol.json", map[string]any{"metadata": map[string]any{"name": "vol"}, "image": map[string]any{"image": "web:1"},
		"mounts": []map[string]any{{"container_path": "/data", "host_path": dir}}})
	if r := d.crictl(t, "create", podID, vol, pod); r.err == nil || !strings.Contains(r.stderr, "mount /data (from "+dir+")") || !strings.Contains(r.stderr, "not that node") {
		t.Errorf("a volume off the node: %v %s", r.err, r.stderr)
	}

	d.crictlOK(t, "start", ctrID)
	if ct, _ := sim.Container("pve1", vmid); ct.Status != "running" {
		t.Fatalf("after start the Proxmox container is %s", ct.Status)
	}
	if ps := d.crictlOK(t, "ps", "--label", "role=server", "-q"); strings.TrimSpace(ps) != ctrID {
		t.Errorf("crictl ps: %q", ps)
	}
	if pvelxc.Check() == nil {
		ct, _ := sim.Container("pve1", vmid)
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(ct.Console, "waiting for a signal"); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("console:\n%s", ct.Console)
			}
			ct, _ = sim.Container("pve1", vmid)
		}
		for _, want := range []string{`"MODE=pod"`, `"KEEP=yes"`, `"HOME=/var/www"`, "cwd=/tmp", "uid=33 gid=33 ", "hostname=web-0"} {
			if !strings.Contains(ct.Console, want) {
				t.Errorf("console lacks %s:\n%s", want, ct.Console)
			}
		}
	} else {
		t.Log("no LXC here: the container's program is not run (", pvelxc.Check(), ")")
	}

	d.crictlOK(t, "update", "--memory", "314572800", "--cpu-quota", "150000", "--cpu-period", "100000", ctrID)
	if cfg := ctConfig(t, sim, vmid); cfg["memory"] != "300" || cfg["cpulimit"] != "1.50" {
		t.Errorf("after update: memory %q cpulimit %q", cfg["memory"], cfg["cpulimit"])
	}
	if st := d.crictlOK(t, "stats", "-o", "json", "--id", ctrID); !strings.Contains(st, `"workingSetBytes"`) || !strings.Contains(st, ctrID) {
		t.Errorf("crictl stats: %s", st)
	}

	d.crictlOK(t, "stop", "--timeout", "10", ctrID)
	if ct, _ := sim.Container("pve1", vmid); ct.Status != "stopped" {
		t.Errorf("after stop the Proxmox container is %s", ct.Status)
	}
	if pvelxc.Check() == nil {
		ct, _ := sim.Container("pve1", vmid)
		if !strings.Contains(ct.Console, "got signal SIGTERM") {
			t.Errorf("the program was not asked to stop with its signal:\n%s", ct.Console)
		}
	}
	inspect()
	if insp.Status.State != "CONTAINER_EXITED" {
		t.Errorf("inspect after stop: %+v", insp.Status)
	}
	if ps := d.crictlOK(t, "ps", "-q"); strings.TrimSpace(ps) != "" {
		t.Errorf("crictl ps lists a stopped container: %q", ps)
	}
	if ps := d.crictlOK(t, "ps", "-a", "-q"); strings.TrimSpace(ps) != ctrID {
		t.Errorf("crictl ps -a: %q", ps)
	}

	if b, err := os.ReadFile(filepath.Join(dir, "app.log")); err != nil || !strings.Contains(string(b), " stdout F pve-image: the output of this container is on the console of Proxmox CT") {
		t.Errorf("the CRI log file (log_directory + log_path): %q %v", b, err)
	}

	d.crictlOK(t, "rm", ctrID)
	if _, ok := sim.Container("pve1", vmid); ok {
		t.Error("rm left the Proxmox container")
	}
	if r := d.crictl(t, "inspect", ctrID); r.err == nil || !strings.Contains(r.stderr, "not found") {
		t.Errorf("inspect of a removed container: %v %s", r.err, r.stderr)
	}
	d.crictlOK(t, "stopp", podID)
	d.crictlOK(t, "rmp", podID)
	if pods := d.crictlOK(t, "pods", "-q"); strings.TrimSpace(pods) != "" {
		t.Errorf("pods after rmp: %q", pods)
	}

	// A program that ends on its own: exited, with the unknown exit status
	// (Proxmox does not report it), never a success.
	if pvelxc.Check() == nil {
		podID = strings.TrimSpace(d.crictlOK(t, "runp", pod))
		quick := writeJSON(t, dir, "quick.json", map[string]any{"metadata": map[string]any{"name": "quick"}, "image": map[string]any{"image": "web:1"},
			"args": []string{"report", "exit", "3"}})
		ctrID = strings.TrimSpace(d.crictlOK(t, "create", podID, quick, pod))
		d.crictlOK(t, "start", ctrID)
		var st struct {
			Status struct {
				State    string `json:"state"`
				ExitCode int    `json:"exitCode"`
				Reason   string `json:"reason"`
			} `json:"status"`
		}
		for deadline := time.Now().Add(30 * time.Second); st.Status.State != "CONTAINER_EXITED"; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("a container whose program exited: %+v", st.Status)
			}
			json.Unmarshal([]byte(d.crictlOK(t, "inspect", "-o", "json", ctrID)), &st)
		}
		if st.Status.ExitCode != 255 || st.Status.Reason != "Unknown" {
			t.Errorf("exited on its own: %+v", st.Status)
		}
		d.crictlOK(t, "rmp", "-f", podID)
	}

	// A pod removed with its containers running takes them with it.
	podID = strings.TrimSpace(d.crictlOK(t, "runp", pod))
	ctrID = strings.TrimSpace(d.crictlOK(t, "create", podID, ctr, pod))
	d.crictlOK(t, "start", ctrID)
	inspect()
	vmid = insp.Info.VMID
	d.crictlOK(t, "rmp", "-f", podID)
	if _, ok := sim.Container("pve1", vmid); ok {
		t.Error("rmp -f left the Proxmox container")
	}
	if ps := d.crictlOK(t, "ps", "-a", "-q"); strings.TrimSpace(ps) != "" {
		t.Errorf("containers after rmp -f: %q", ps)
	}
}

func writeJSON(t testing.TB, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCRIRuntimeImageKinds: a system image's pod gets no env (its init
// would not pass kubelet's variables on) rather than failing; Proxmox
// before 9.1 refuses application pods with the reason.
func TestCRIRuntimeImageKinds(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "library/sys:1", Image(t, amd64, v1.Config{Cmd: []string{"/sbin/init"}}, Layer(t,
		Exec("usr/lib/systemd/systemd", readFile(t, testApp)), Symlink("sbin/init", "../usr/lib/systemd/systemd"),
		File("etc/os-release", "ID=debian\n"), File("etc/debian_version", "12.7\n"))))
	reg.Push(t, "library/web:1", appImage(t, "kinds", v1.Config{}))
	dir := t.TempDir()
	pod := writeJSON(t, dir, "pod.json", map[string]any{"metadata": map[string]any{"name": "p", "namespace": "default", "uid": "u-1"}})
	ctr := func(image string) string {
		return writeJSON(t, dir, image+".json", map[string]any{"metadata": map[string]any{"name": image}, "image": map[string]any{"image": image + ":1"},
			"envs": []map[string]string{{"key": "KUBERNETES_SERVICE_HOST", "value": "10.96.0.1"}}})
	}
	for _, version := range []string{"9.1.1", "8.4.1"} {
		t.Run(version, func(t *testing.T) {
			sim := startSim(t, pvesim.Options{Version: version})
			d := startCRI(t, newCLI(t), append(pveArgs(sim, "--rootfs-storage", "shared"), "--registry-mirror", "docker.io=http://"+reg.Host, "--pod-cidr", "10.88.8.0/24")...)
			d.crictlOK(t, "pull", "sys:1")
			d.crictlOK(t, "pull", "web:1")
			podID := strings.TrimSpace(d.crictlOK(t, "runp", pod))
			id := strings.TrimSpace(d.crictlOK(t, "create", podID, ctr("sys"), pod))
			var insp struct {
				Info struct{ VMID int } `json:"info"`
			}
			json.Unmarshal([]byte(d.crictlOK(t, "inspect", "-o", "json", id)), &insp)
			if cfg := ctConfig(t, sim, insp.Info.VMID); cfg["ostype"] != "debian" || cfg["env"] != "" || cfg["features"] != "nesting=1" {
				t.Errorf("system image pod config %q", cfg)
			}
			r := d.crictl(t, "create", podID, ctr("web"), pod)
			switch version {
			case "8.4.1":
				if r.err == nil || !strings.Contains(r.stderr, "FailedPrecondition") || !strings.Contains(r.stderr, "Proxmox 9.1") {
					t.Errorf("application pod on Proxmox 8: %v %s", r.err, r.stderr)
				}
			default:
				if r.err != nil {
					t.Errorf("application pod: %s", r.stderr)
				}
			}
		})
	}
}
