package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/tests/pvelxc"
	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// shellImage is busybox with its applets, an /etc/passwd with a non-root
// user, and testapp as /app.
func shellImage(t testing.TB, cfg v1.Config) v1.Image {
	entries := []Entry{Exec("bin/busybox", busybox(t)), Exec("app", readFile(t, testApp)),
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\n"),
		File("etc/group", "root:x:0:\nwww-data:x:33:\n"), WithMode(Dir("tmp/"), 0o1777), Dir("www/"),
		WithMode(File("secret", "TOPSECRET\n"), 0o600), Dir("var/"), Owned(Dir("var/www/"), 33, 33)}
	for _, a := range []string{"sh", "echo", "cat", "sleep", "ip", "id", "test", "touch", "httpd", "ps", "pwd", "true", "tr", "ln", "rm", "grep"} {
		entries = append(entries, Symlink("bin/"+a, "busybox"))
	}
	return Image(t, amd64, cfg, Layer(t, entries...))
}

// nodeDaemon runs pve-image cri as on a Proxmox node: the simulator's
// real LXC containers are reachable under its LXC path, and it logs in as
// root@pam, who alone may bind-mount.
func nodeDaemon(t testing.TB, c *cli, sim *pvesim.Server, reg *Registry, cidr string) *criDaemon {
	args := []string{"--pve-url", sim.URL(), "--pve-user", "root@pam", "--pve-password", "pw", "--pve-fingerprint", sim.Fingerprint(),
		"--node", "pve1", "--rootfs-storage", "shared", "--registry-mirror", "docker.io=http://" + reg.Host,
		"--lxc-path", sim.LXCPath("pve1"), "--cgroup-driver", "cgroupfs"}
	if cidr != "" {
		args = append(args, "--pod-cidr", cidr)
	}
	return startCRI(t, c, args...)
}

func startNodeSim(t testing.TB) *pvesim.Server {
	t.Helper()
	if err := pvelxc.Check(); err != nil {
		Missing(t, "%v", err)
	}
	sim := startSim(t, pvesim.Options{RealLXC: true})
	sim.AddUser(pvesim.User{Name: "root@pam", Password: "pw", Privs: []string{"*"}})
	return sim
}

// client is a gRPC client of the daemon's RuntimeService, for exact
// answers where crictl would only print them.
func (d *criDaemon) client(t testing.TB) runtimeapi.RuntimeServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(d.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn)
}

// podSpec writes a pod config whose logs go under dir.
func podSpec(t testing.TB, dir, name string, extra map[string]any) string {
	p := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": "uid-" + name},
		"hostname":      name,
		"log_directory": filepath.Join(dir, "logs", name),
		"dns_config":    map[string]any{"servers": []string{"10.96.0.10"}, "searches": []string{"default.svc.cluster.local"}, "options": []string{"ndots:5"}},
	}
	for k, v := range extra {
		p[k] = v
	}
	return writeJSON(t, dir, name+"-pod.json", p)
}

// ctrSpec writes a container config; its log is logs/<pod>/<name>.log.
func ctrSpec(t testing.TB, dir, name string, cfg map[string]any) string {
	c := map[string]any{"metadata": map[string]any{"name": name}, "image": map[string]any{"image": "bb:1"}, "log_path": name + ".log",
		"annotations": map[string]string{"io.kubernetes.container.terminationMessagePath": "/dev/termination-log"}}
	for k, v := range cfg {
		c[k] = v
	}
	return writeJSON(t, dir, name+"-ctr.json", c)
}

type ctrStatus struct {
	State, Reason, Message string
	ExitCode               int
}

func (d *criDaemon) status(t testing.TB, id string) ctrStatus {
	t.Helper()
	var st struct {
		Status struct {
			State    string `json:"state"`
			Reason   string `json:"reason"`
			Message  string `json:"message"`
			ExitCode int    `json:"exitCode"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(d.crictlOK(t, "inspect", "-o", "json", id)), &st); err != nil {
		t.Fatal(err)
	}
	return ctrStatus{st.Status.State, st.Status.Reason, st.Status.Message, st.Status.ExitCode}
}

func (d *criDaemon) waitExited(t testing.TB, id string, timeout time.Duration) ctrStatus {
	t.Helper()
	var st ctrStatus
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		if st = d.status(t, id); st.State == "CONTAINER_EXITED" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %.12s did not exit: %+v\ndaemon log:\n%s", id, st, d.log())
		}
	}
}

// waitFile waits until a file holds want.
func waitFile(t *testing.T, path, want string, timeout time.Duration) string {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not show %q:\n%s", path, want, b)
		}
	}
}

// TestCRIOnNode runs containers the way kubelet does when pve-image cri
// is on the Proxmox node, with the simulator's real LXC containers:
// argv with spaces, quotes and newlines; env with newlines; the pod's
// address, DNS, /etc/hosts; a read-only hostPath volume; output in the
// CRI log file; exec (sync with a timeout, streaming, stdin, a terminal);
// port-forward; real exit statuses for exits, stops and kills, with the
// termination message.
func TestCRIOnNode(t *testing.T) {
	sim := startNodeSim(t)
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "library/bb:1", shellImage(t, v1.Config{Entrypoint: []string{"/app"}, Cmd: []string{"report", "wait-signal"}, Env: []string{"PATH=/bin"}}))
	d := nodeDaemon(t, newCLI(t), sim, reg, "10.88.9.0/24")
	d.crictlOK(t, "pull", "bb:1")
	dir, err := os.MkdirTemp("", "crinode-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.MkdirAll(filepath.Join(dir, "data"), 0o755)
	os.WriteFile(filepath.Join(dir, "data", "hello"), []byte("from the host\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc-hosts"), []byte("127.0.0.1\tlocalhost\n10.88.9.2\tweb\n"), 0o644)
	termination := filepath.Join(dir, "termination-log")
	os.WriteFile(termination, nil, 0o666)
	rt := d.client(t)
	ctx := context.Background()

	pod := podSpec(t, dir, "web", nil)
	podID := strings.TrimSpace(d.crictlOK(t, "runp", pod))
	script := `echo "two words" 'single quoted'
echo "cert=$CERT" | tr '\n' '|'; echo
cat /data/hello /etc/hosts /etc/resolv.conf
ip -4 addr show eth0 | grep inet
echo "mac=$(cat /sys/class/net/eth0/address)"
touch /data/x || echo read-only volume
echo ready
trap 'echo got TERM; echo goodbye > /dev/termination-log; exit 7' TERM
while true; do sleep 0.2; done`
	ctrID := strings.TrimSpace(d.crictlOK(t, "create", podID, ctrSpec(t, dir, "main", map[string]any{
		"command": []string{"sh", "-c", script},
		"envs":    []map[string]string{{"key": "CERT", "value": "line1\nline2"}},
		"mounts": []map[string]any{
			{"container_path": "/data", "host_path": filepath.Join(dir, "data"), "readonly": true},
			{"container_path": "/etc/hosts", "host_path": filepath.Join(dir, "etc-hosts")},
			{"container_path": "/dev/termination-log", "host_path": termination},
		},
	}), pod))
	d.crictlOK(t, "start", ctrID)
	logFile := filepath.Join(dir, "logs", "web", "main.log")
	log := waitFile(t, logFile, "stdout F ready", 30*time.Second)
	for _, want := range []string{"stdout F two words single quoted\n", "stdout F cert=line1|line2|\n", "stdout F from the host\n", "stdout F 10.88.9.2\tweb\n",
		"stdout F nameserver 10.96.0.10\n", "stdout F search default.svc.cluster.local\n", "inet 10.88.9.2/24", "stdout F read-only volume\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
	if out := d.crictlOK(t, "logs", ctrID); !strings.Contains(out, "two words single quoted") {
		t.Errorf("crictl logs:\n%s", out)
	}

	// ExecSync, as exec probes use it: the program's user, environment
	// and working directory; its exit code; a timeout that ends the
	// command in the container too.
	r, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ctrID, Cmd: []string{"sh", "-c", "echo out $CERT; echo err >&2; exit 4"}})
	if err != nil || r.ExitCode != 4 || string(r.Stdout) != "out line1 line2\n" || string(r.Stderr) != "err\n" {
		t.Errorf("ExecSync: %v %+v", err, r)
	}
	start := time.Now()
	_, err = rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ctrID, Cmd: []string{"sleep", "31.25"}, Timeout: 1})
	if status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 10*time.Second {
		t.Errorf("ExecSync past its timeout: %v after %s", err, time.Since(start))
	}
	time.Sleep(200 * time.Millisecond)
	if pids := processes("sleep\x0031.25"); len(pids) > 0 {
		t.Errorf("the timed-out command still runs: pids %v", pids)
	}
	// Streaming exec: exit code, stdin, a terminal.
	if r := d.crictl(t, "exec", ctrID, "sh", "-c", "echo streamed; exit 5"); r.err == nil || !strings.Contains(r.stdout, "streamed") || !strings.Contains(r.stderr, "exit code 5") {
		t.Errorf("crictl exec: %v %q %q", r.err, r.stdout, r.stderr)
	}
	in := exec.Command(Tool(t, "PVE_IMAGE_CRICTL_BIN", "crictl"), "--runtime-endpoint", d.Socket, "exec", "-i", ctrID, "sh", "-c", "read x; echo got $x")
	in.Stdin = strings.NewReader("a line\n")
	if out, err := in.Output(); err != nil || string(out) != "got a line\n" {
		t.Errorf("crictl exec -i: %v %q", err, out)
	}
	// script(1) (util-linux, always on Debian) gives crictl a terminal.
	if _, err := exec.LookPath("script"); err != nil {
		Missing(t, "script not found (apt-get install bsdutils)")
	}
	cmd := fmt.Sprintf("%s --runtime-endpoint %s exec -it %s sh -c 'test -t 0 && echo on-a-terminal'", Tool(t, "PVE_IMAGE_CRICTL_BIN", "crictl"), d.Socket, ctrID)
	if out, err := exec.Command("script", "-qec", cmd, "/dev/null").CombinedOutput(); err != nil || !strings.Contains(string(out), "on-a-terminal") {
		t.Errorf("crictl exec -it: %v %q", err, out)
	}

	// Port-forward reaches a port on the pod's own loopback.
	if r, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ctrID, Cmd: []string{"httpd", "-p", "127.0.0.1:8080", "-h", "/data"}}); err != nil || r.ExitCode != 0 {
		t.Fatalf("httpd: %v %+v", err, r)
	}
	local := freePortOn(t, "127.0.0.1")
	pf := exec.Command(Tool(t, "PVE_IMAGE_CRICTL_BIN", "crictl"), "--runtime-endpoint", d.Socket, "port-forward", podID, local+":8080")
	pf.Stdout, pf.Stderr = io.Discard, io.Discard
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pf.Process.Kill(); pf.Wait() }()
	var body string
	for deadline := time.Now().Add(15 * time.Second); body != "from the host\n"; time.Sleep(200 * time.Millisecond) {
		if resp, err := http.Get("http://127.0.0.1:" + local + "/hello"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("port-forward: got %q", body)
		}
	}

	// A second container cannot run beside the first: one address.
	side := ctrSpec(t, dir, "side", map[string]any{"command": []string{"true"}})
	if r := d.crictl(t, "create", podID, side, pod); r.err == nil || !strings.Contains(r.stderr, "cannot run beside") || !strings.Contains(r.stderr, "main") {
		t.Errorf("a second container of the pod: %v %s", r.err, r.stderr)
	}

	// Stop: the program's StopSignal, its own exit status, its
	// termination message where kubelet reads it.
	d.crictlOK(t, "stop", "--timeout", "20", ctrID)
	if st := d.status(t, ctrID); st.State != "CONTAINER_EXITED" || st.ExitCode != 7 || st.Reason != "Error" {
		t.Errorf("stopped: %+v", st)
	}
	if b, _ := os.ReadFile(termination); string(b) != "goodbye\n" {
		t.Errorf("termination message %q", b)
	}
	waitFile(t, logFile, "stdout F got TERM", 5*time.Second)
	if r := d.crictl(t, "stop", ctrID); r.err != nil {
		t.Errorf("stopping a stopped container: %s", r.stderr)
	}

	mac := regexp.MustCompile(`stdout F mac=(\S+)`).FindStringSubmatch(log)

	// The pod keeps its MAC address across its containers, so that
	// neighbours' ARP entries for its address stay right.
	macID := strings.TrimSpace(d.crictlOK(t, "create", podID, ctrSpec(t, dir, "mac", map[string]any{"command": []string{"sh", "-c", "echo mac=$(cat /sys/class/net/eth0/address)"}}), pod))
	d.crictlOK(t, "start", macID)
	d.waitExited(t, macID, 30*time.Second)
	if again := regexp.MustCompile(`stdout F mac=(\S+)`).FindStringSubmatch(waitFile(t, filepath.Join(dir, "logs", "web", "mac.log"), "mac=", 5*time.Second)); mac == nil || again == nil || again[1] != mac[1] {
		t.Errorf("MAC addresses of the pod's containers: %v, then %v", mac, again)
	}

	// A security context: read-only root, no capabilities, no new
	// privileges — for the program and for exec.
	restricted := strings.TrimSpace(d.crictlOK(t, "create", podID, ctrSpec(t, dir, "restricted", map[string]any{
		"command": []string{"sh", "-c", "touch /x 2>/dev/null || echo read-only root; touch /tmp/x && echo tmp writable; grep -E 'CapBnd|NoNewPrivs' /proc/self/status; sleep 30"},
		"linux": map[string]any{"security_context": map[string]any{"readonly_rootfs": true, "no_new_privs": true,
			"capabilities": map[string]any{"drop_capabilities": []string{"ALL"}}}},
	}), pod))
	d.crictlOK(t, "start", restricted)
	rlog := waitFile(t, filepath.Join(dir, "logs", "web", "restricted.log"), "NoNewPrivs", 30*time.Second)
	for _, want := range []string{"read-only root", "tmp writable", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1"} {
		if !strings.Contains(rlog, want) {
			t.Errorf("the restricted program's log lacks %q:\n%s", want, rlog)
		}
	}
	if r, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: restricted, Cmd: []string{"grep", "CapBnd", "/proc/self/status"}}); err != nil || !strings.Contains(string(r.Stdout), "0000000000000000") {
		t.Errorf("exec in the restricted container: %v %+v", err, r)
	}
	// kubectl exec -i that goes away takes its command with it.
	execIn := exec.Command(Tool(t, "PVE_IMAGE_CRICTL_BIN", "crictl"), "--runtime-endpoint", d.Socket, "exec", "-i", restricted, "sleep", "77.5")
	stdinW, _ := execIn.StdinPipe()
	if err := execIn.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(processes("sleep\x0077.5")) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the exec'd command never ran")
		}
	}
	execIn.Process.Kill()
	execIn.Wait()
	stdinW.Close()
	for deadline := time.Now().Add(15 * time.Second); len(processes("sleep\x0077.5")) > 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("the command of an exec whose caller left still runs")
			break
		}
	}
	d.crictlOK(t, "stop", "--timeout", "2", restricted)

	// A termination message is read as the program's user: a link to a
	// file only root may read does not leak it into the pod's status.
	sneakyTerm := filepath.Join(dir, "sneaky-termination")
	os.WriteFile(sneakyTerm, nil, 0o666)
	sneaky := strings.TrimSpace(d.crictlOK(t, "create", podID, ctrSpec(t, dir, "sneaky", map[string]any{
		"command":     []string{"sh", "-c", "rm -f /var/www/msg && ln -s /secret /var/www/msg && echo linked; cat /secret || echo cannot read it"},
		"annotations": map[string]string{"io.kubernetes.container.terminationMessagePath": "/var/www/msg"},
		"mounts":      []map[string]any{{"container_path": "/var/www/msg", "host_path": sneakyTerm}},
		"linux":       map[string]any{"security_context": map[string]any{"run_as_user": map[string]any{"value": 33}}},
	}), pod))
	d.crictlOK(t, "start", sneaky)
	d.waitExited(t, sneaky, 30*time.Second)
	if b, _ := os.ReadFile(sneakyTerm); strings.Contains(string(b), "TOPSECRET") {
		t.Errorf("the termination message leaked a root-only file: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "logs", "web", "sneaky.log")); !strings.Contains(string(b), "linked") || !strings.Contains(string(b), "cannot read it") {
		t.Errorf("the program did not plant its link, or could read /secret itself:\n%s", b)
	}

	// Exits on their own, in the same pod one after another.
	for _, tc := range []struct {
		name, script, reason string
		code                 int
	}{{"zero", "echo done", "Completed", 0}, {"three", "exit 3", "Error", 3}, {"killed", "kill -KILL $$", "Error", 137}} {
		id := strings.TrimSpace(d.crictlOK(t, "create", podID, ctrSpec(t, dir, tc.name, map[string]any{"command": []string{"sh", "-c", tc.script}}), pod))
		d.crictlOK(t, "start", id)
		if st := d.waitExited(t, id, 30*time.Second); st.ExitCode != tc.code || st.Reason != tc.reason {
			t.Errorf("%s: %+v, want %d %s", tc.name, st, tc.code, tc.reason)
		}
	}

	// A program that ignores its StopSignal is killed when the time is up.
	id := strings.TrimSpace(d.crictlOK(t, "create", podID, ctrSpec(t, dir, "stubborn", map[string]any{
		"command": []string{"sh", "-c", "trap '' TERM; echo stubborn; while true; do sleep 0.2; done"}}), pod))
	d.crictlOK(t, "start", id)
	waitFile(t, filepath.Join(dir, "logs", "web", "stubborn.log"), "stubborn", 30*time.Second)
	d.crictlOK(t, "stop", "--timeout", "2", id)
	if st := d.status(t, id); st.ExitCode != 137 || !strings.Contains(st.Message, "did not stop within 2s") {
		t.Errorf("a program that ignores TERM: %+v", st)
	}

	// What a Proxmox container cannot give is refused with the reason.
	hostNet := podSpec(t, dir, "hostnet", map[string]any{"linux": map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}}})
	if r := d.crictl(t, "runp", hostNet); r.err == nil || !strings.Contains(r.stderr, "hostNetwork: true") {
		t.Errorf("a hostNetwork pod: %v %s", r.err, r.stderr)
	}
	file := ctrSpec(t, dir, "file", map[string]any{"mounts": []map[string]any{{"container_path": "/etc/app.conf", "host_path": filepath.Join(dir, "data", "hello")}}})
	if r := d.crictl(t, "create", podID, file, pod); r.err == nil || !strings.Contains(r.stderr, "Proxmox bind-mounts only directories") {
		t.Errorf("a file mount: %v %s", r.err, r.stderr)
	}
	d.crictlOK(t, "rmp", "-f", podID)
}

// TestCRIOnNodeDaemonAway: a program that ends while the daemon is down
// gets its exit status and all its output once the daemon is back, each
// line once.
func TestCRIOnNodeDaemonAway(t *testing.T) {
	sim := startNodeSim(t)
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "library/bb:1", shellImage(t, v1.Config{Entrypoint: []string{"/app"}, Env: []string{"PATH=/bin"}}))
	c := newCLI(t)
	d := nodeDaemon(t, c, sim, reg, "10.88.10.0/24")
	d.crictlOK(t, "pull", "bb:1")
	dir := t.TempDir()
	pod := podSpec(t, dir, "away", nil)
	podID := strings.TrimSpace(d.crictlOK(t, "runp", pod))
	id := strings.TrimSpace(d.crictlOK(t, "create", podID, ctrSpec(t, dir, "main", map[string]any{
		"command": []string{"sh", "-c", "echo before; sleep 3; echo after; exit 42"}}), pod))
	d.crictlOK(t, "start", id)
	logFile := filepath.Join(dir, "logs", "away", "main.log")
	waitFile(t, logFile, "before", 30*time.Second)
	d.kill(t)
	time.Sleep(5 * time.Second) // the program ends meanwhile

	d = nodeDaemon(t, c, sim, reg, "10.88.10.0/24")
	if st := d.waitExited(t, id, 30*time.Second); st.ExitCode != 42 || st.Reason != "Error" {
		t.Errorf("after the daemon came back: %+v", st)
	}
	log, _ := os.ReadFile(logFile)
	if strings.Count(string(log), "stdout F before\n") != 1 || strings.Count(string(log), "stdout F after\n") != 1 {
		t.Errorf("the log, each line once:\n%s", log)
	}
	sc := bufio.NewScanner(strings.NewReader(string(log)))
	for sc.Scan() {
		if !criLogLine.MatchString(sc.Text()) {
			t.Errorf("not a CRI log line: %q", sc.Text())
		}
	}
	d.crictlOK(t, "rmp", "-f", podID)
}

var criLogLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (stdout|stderr) [PF] `)

// processes lists the pids whose command line (NUL-separated) contains s.
func processes(s string) []string {
	var out []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if b, err := os.ReadFile("/proc/" + d.Name() + "/cmdline"); err == nil && strings.Contains(string(b), s) {
			out = append(out, d.Name())
		}
	}
	return out
}
