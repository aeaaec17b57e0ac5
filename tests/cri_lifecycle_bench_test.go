package tests

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// lifecycleArgs runs pve-image cri as on a Proxmox node (nodeDaemon) with
// pods' root disks on storage: "shared" (NFS: Proxmox unpacks the
// template for every container) or "local-lvm" (LVM-thin: linked clones).
func lifecycleArgs(sim *pvesim.Server, reg *Registry, storage, cidr string, extra ...string) []string {
	return append([]string{"--pve-url", sim.URL(), "--pve-user", "root@pam", "--pve-password", "pw", "--pve-fingerprint", sim.Fingerprint(),
		"--node", "pve1", "--rootfs-storage", storage, "--registry-mirror", "docker.io=http://" + reg.Host,
		"--lxc-path", sim.LXCPath("pve1"), "--cgroup-driver", "cgroupfs", "--pod-cidr", cidr}, extra...)
}

// criClients are gRPC clients of a daemon's two services.
type criClients struct {
	rt runtimeapi.RuntimeServiceClient
	im runtimeapi.ImageServiceClient
}

func (d *criDaemon) clients(tb testing.TB) criClients {
	tb.Helper()
	conn, err := grpc.NewClient(d.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return criClients{runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)}
}

// benchPod is one pod's sandbox and container, as kubelet makes them.
type benchPod struct {
	name, sandbox, container string
	sbConfig                 *runtimeapi.PodSandboxConfig
}

func newBenchPod(dir, name string) *benchPod {
	return &benchPod{name: name, sbConfig: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: "uid-" + name},
		Hostname: name, LogDirectory: filepath.Join(dir, "logs", name),
		DnsConfig: &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}},
	}}
}

// callTimes are the latencies of CRI calls by method.
type callTimes struct {
	mu sync.Mutex
	m  map[string][]time.Duration
}

// call runs fn and records its latency under method.
func (ct *callTimes) call(method string, fn func() error) error {
	start := time.Now()
	err := fn()
	d := time.Since(start)
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if ct.m == nil {
		ct.m = map[string][]time.Duration{}
	}
	ct.m[method] = append(ct.m[method], d)
	return err
}

// percentile is the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[max(0, int(math.Ceil(p/100*float64(len(s))))-1)]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 0, 64)
}

// start makes the pod run: PullImage (kubelet's Always policy; answered
// from the cache), RunPodSandbox, CreateContainer, StartContainer. It
// returns the time from CreateContainer's call to StartContainer's end.
func (p *benchPod) start(ctx context.Context, c criClients, ct *callTimes, image string) (time.Duration, error) {
	err := ct.call("PullImage", func() error {
		_, err := c.im.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}})
		return err
	})
	if err == nil {
		err = ct.call("RunPodSandbox", func() error {
			r, err := c.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: p.sbConfig})
			p.sandbox = r.GetPodSandboxId()
			return err
		})
	}
	if err != nil {
		return 0, err
	}
	created := time.Now()
	err = ct.call("CreateContainer", func() error {
		r, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.sandbox, SandboxConfig: p.sbConfig,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "main"}, Image: &runtimeapi.ImageSpec{Image: image},
				Command: []string{"sleep", "3600"}, LogPath: "main.log"}})
		p.container = r.GetContainerId()
		return err
	})
	if err == nil {
		err = ct.call("StartContainer", func() error {
			_, err := c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: p.container})
			return err
		})
	}
	return time.Since(created), err
}

// stop ends the pod as kubelet does: StopContainer, RemoveContainer,
// StopPodSandbox, RemovePodSandbox.
func (p *benchPod) stop(ctx context.Context, c criClients, ct *callTimes) error {
	for _, step := range []struct {
		method string
		fn     func() error
	}{
		{"StopContainer", func() error {
			_, err := c.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: p.container, Timeout: 10})
			return err
		}},
		{"RemoveContainer", func() error {
			_, err := c.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: p.container})
			return err
		}},
		{"StopPodSandbox", func() error {
			_, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.sandbox})
			return err
		}},
		{"RemovePodSandbox", func() error {
			_, err := c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.sandbox})
			return err
		}},
	} {
		if err := ct.call(step.method, step.fn); err != nil {
			return fmt.Errorf("%s of pod %s: %w", step.method, p.name, err)
		}
	}
	return nil
}

// benchImage is busybox and testapp (shellImage) with a layer of mb MiB of
// files of 64 KiB each, about as compressible as binaries (zstd makes them
// half), different for each seed: what Proxmox unpacks, and a linked
// clone does not.
func benchImage(tb testing.TB, mb int, seed string) v1.Image {
	tb.Helper()
	img := shellImage(tb, v1.Config{Entrypoint: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}})
	if mb <= 0 {
		return img
	}
	var s uint64
	for _, c := range seed {
		s = s*131 + uint64(c)
	}
	r := rand.New(rand.NewPCG(s, 1))
	const size = 64 << 10
	entries := []Entry{Dir("usr/"), Dir("usr/share/"), Dir("usr/share/filler/")}
	buf := make([]byte, size)
	for i := range mb * (1 << 20) / size {
		for j := range buf {
			buf[j] = "0123456789abcdef"[r.IntN(16)]
		}
		entries = append(entries, File(fmt.Sprintf("usr/share/filler/f%04d", i), string(buf)))
	}
	img, err := mutate.AppendLayers(img, Layer(tb, entries...))
	if err != nil {
		tb.Fatal(err)
	}
	return img
}

// scrape reads the daemon's metrics.
func scrape(tb testing.TB, d *criDaemon) promText { return promText(d.metrics(tb)) }

// promText is Prometheus' text format.
type promText string

// sum adds up the samples of name whose labels contain every one of want
// (`method="..."`).
func (p promText) sum(name string, want ...string) float64 {
	var total float64
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		matches := true
		for _, w := range want {
			matches = matches && strings.Contains(rest, w)
		}
		if f := strings.Fields(rest); matches && len(f) > 0 {
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += v
		}
	}
	return total
}

// ownTime splits the latency of the CRI calls of methods between two
// scrapes: the time in Proxmox calls and their tasks, the time creates
// queued for a template container (Proxmox clones from one template at a
// time), and the rest, the daemon's own.
func ownTime(before, after promText, methods ...string) (own, inProxmox, queued time.Duration) {
	diff := func(name string, labels ...string) float64 {
		return after.sum(name, labels...) - before.sum(name, labels...)
	}
	var total, pve float64
	for _, m := range methods {
		lbl := `method="/runtime.v1.` + m + `"`
		total += diff("pve_image_grpc_request_duration_seconds_sum", lbl)
		pve += diff("pve_image_grpc_request_proxmox_duration_seconds_sum", lbl)
	}
	q := diff("pve_image_linked_clone_queue_wait_seconds_sum")
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	return sec(total - pve - q), sec(pve), sec(q)
}

// rss is a process's resident set now and at its peak, in MiB.
func rss(tb testing.TB, pid int) (now, peak float64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[0], 64)
		switch k {
		case "VmRSS":
			now = kb / 1024
		case "VmHWM":
			peak = kb / 1024
		}
	}
	return now, peak
}

// lifecycleResult is what one way of making root disks measured.
type lifecycleResult struct {
	path                       string
	pullToRunning, firstCreate time.Duration
	// per round (pods created at once): per-call latencies, create to
	// running, wall time until all ran, daemon own and Proxmox time,
	// daemon CPU during the creates
	rounds []roundResult
	// with the most pods running: RSS, idle CPU share
	rssMiB, peakMiB, idleCPU float64
}

type roundResult struct {
	pods                      int
	calls                     *callTimes
	createToRunning           []time.Duration
	wall                      time.Duration
	own, proxmox, queued, cpu time.Duration
}

var (
	createMethods = []string{"ImageService/PullImage", "RuntimeService/RunPodSandbox", "RuntimeService/CreateContainer", "RuntimeService/StartContainer"}
	callOrder     = []string{"PullImage", "RunPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"}
)

// runLifecycle measures one daemon: a new image pulled and run, then for
// each size that many pods made at once and removed at once.
func runLifecycle(b *testing.B, sim *pvesim.Server, reg *Registry, path, storage, cidr string, sizes []int, imageMB int) *lifecycleResult {
	image := "bench-" + path + ":1"
	reg.Push(b, "library/"+image, benchImage(b, imageMB, path))
	d := startCRI(b, newCLI(b), lifecycleArgs(sim, reg, storage, cidr)...)
	defer func() {
		d.cmd.Process.Signal(os.Interrupt)
		<-d.done
	}()
	c := d.clients(b)
	ctx := context.Background()
	dir := b.TempDir()
	res := &lifecycleResult{path: path}

	// A new image: pull, and the first pod (for linked clones, its
	// template container is made on the way).
	var first callTimes
	start := time.Now()
	pod := newBenchPod(dir, "first")
	if _, err := pod.start(ctx, c, &first, image); err != nil {
		b.Fatalf("%s: the first pod: %v\n%s", path, err, d.log())
	}
	res.pullToRunning = time.Since(start)
	res.firstCreate = first.m["CreateContainer"][0]
	if err := pod.stop(ctx, c, &first); err != nil {
		b.Fatal(err)
	}

	for _, n := range sizes {
		r := roundResult{pods: n, calls: &callTimes{}}
		pods := make([]*benchPod, n)
		for i := range pods {
			pods[i] = newBenchPod(dir, fmt.Sprintf("p%d-%d", n, i))
		}
		before, cpu0 := scrape(b, d), cpuTicks(b, d.cmd.Process.Pid)
		start := time.Now()
		errs := make([]error, n)
		ctr := make([]time.Duration, n)
		var wg sync.WaitGroup
		for i, p := range pods {
			wg.Go(func() { ctr[i], errs[i] = p.start(ctx, c, r.calls, image) })
		}
		wg.Wait()
		r.wall = time.Since(start)
		r.cpu = time.Duration(cpuTicks(b, d.cmd.Process.Pid)-cpu0) * 10 * time.Millisecond
		after := scrape(b, d)
		for i, err := range errs {
			if err != nil {
				b.Fatalf("%s, %d pods: pod %d: %v\n%s", path, n, i, err, d.log())
			}
		}
		r.createToRunning = ctr
		r.own, r.proxmox, r.queued = ownTime(before, after, createMethods...)
		if n == slices.Max(sizes) {
			res.rssMiB, res.peakMiB = rss(b, d.cmd.Process.Pid)
			res.idleCPU = idleCPU(b, d, c, 5*time.Second)
		}
		for i, p := range pods {
			wg.Go(func() { errs[i] = p.stop(ctx, c, r.calls) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatalf("%s: %v\n%s", path, err, d.log())
			}
		}
		res.rounds = append(res.rounds, r)
	}
	return res
}

// idleCPU is the daemon's CPU, as a share of one core, over d while a
// client asks every second what kubelet asks (relist and statuses).
func idleCPU(tb testing.TB, d *criDaemon, c criClients, d0 time.Duration) float64 {
	ctx := context.Background()
	cpu0, t0 := cpuTicks(tb, d.cmd.Process.Pid), time.Now()
	for time.Since(t0) < d0 {
		sbs, _ := c.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		ctrs, _ := c.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		for _, sb := range sbs.GetItems() {
			c.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.Id})
		}
		for _, ct := range ctrs.GetContainers() {
			c.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ct.Id})
		}
		time.Sleep(time.Second)
	}
	return float64(cpuTicks(tb, d.cmd.Process.Pid)-cpu0) / 100 / time.Since(t0).Seconds()
}

// BenchmarkCRILifecycle measures pods' lives against the simulator with
// real LXC, both ways a root disk is made: Proxmox unpacking the template
// for each container (rootfs on the NFS storage "shared") and linked
// clones of a template container (rootfs on the LVM-thin "local-lvm").
// For each: pull-to-running of a new image; per CRI call p50 and p99 with
// 1, 10 and 50 pods created at once (each pod: PullImage, RunPodSandbox,
// CreateContainer, StartContainer; then StopContainer, RemoveContainer,
// StopPodSandbox, RemovePodSandbox); create-to-running; pods a minute;
// the daemon's own time (its CRI calls' latency less the time spent in
// Proxmox calls, from its metrics) beside Proxmox's; its CPU per pod
// created, its RSS and idle CPU with the most pods running. It prints a
// table and reports the ratios as metrics. Run by make bench
// (scripts/bench.sh): LIFECYCLE_PODS (comma-separated, default 1,10,50)
// and LIFECYCLE_IMAGE_MB (default 32) change it.
func BenchmarkCRILifecycle(b *testing.B) {
	sizes := envInts("LIFECYCLE_PODS", []int{1, 10, 50})
	imageMB := envInt("LIFECYCLE_IMAGE_MB", 32)
	sim := startNodeSim(b)
	reg := StartRegistry(b, RegistryOptions{})
	var results []*lifecycleResult
	for i, p := range []struct{ path, storage string }{{"extract", "shared"}, {"linked-clone", "local-lvm"}} {
		results = append(results, runLifecycle(b, sim, reg, p.path, p.storage, fmt.Sprintf("10.%d.0.0/20", 90+i), sizes, imageMB))
	}
	b.StopTimer()
	printLifecycle(os.Stdout, results, imageMB)
	ext, cl := results[0], results[1]
	r0 := func(r *lifecycleResult) roundResult { return r.rounds[0] }
	rN := func(r *lifecycleResult) roundResult { return r.rounds[len(r.rounds)-1] }
	b.ReportMetric(ext.pullToRunning.Seconds()/cl.pullToRunning.Seconds(), "pull-to-running-speedup-x")
	b.ReportMetric(float64(percentile(r0(ext).createToRunning, 50))/float64(percentile(r0(cl).createToRunning, 50)), "create-to-running-speedup-x")
	b.ReportMetric(float64(percentile(rN(ext).createToRunning, 50))/float64(percentile(rN(cl).createToRunning, 50)), "create-to-running-speedup-x-at-max")
	b.ReportMetric(podsPerMinute(rN(cl)), "pods/min-clone")
	b.ReportMetric(podsPerMinute(rN(ext)), "pods/min-extract")
	b.ReportMetric(100*float64(rN(cl).own)/float64(rN(cl).own+rN(cl).proxmox+rN(cl).queued), "own-%-clone")
	b.ReportMetric(100*float64(rN(ext).own)/float64(rN(ext).own+rN(ext).proxmox+rN(ext).queued), "own-%-extract")
	b.ReportMetric(cl.rssMiB, "rss-MiB")
	b.ReportMetric(100*cl.idleCPU, "idle-cpu-%")
}

func podsPerMinute(r roundResult) float64 { return float64(r.pods) / r.wall.Minutes() }

func envInts(name string, def []int) []int {
	var out []int
	for f := range strings.SplitSeq(os.Getenv(name), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return def
	}
	return out
}

// printLifecycle writes the benchmark's table.
func printLifecycle(w *os.File, results []*lifecycleResult, imageMB int) {
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(w, "\npod lifecycle, simulator with real LXC; image %d MiB of files; load average %s", imageMB, strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(w, "\n%-13s %16s %18s %16s %16s\n", "rootfs", "pull→running ms", "create→running ms", "stop p50 ms", "remove p50 ms")
	for _, r := range results {
		r0 := r.rounds[0]
		fmt.Fprintf(w, "%-13s %16s %18s %16s %16s\n", r.path, ms(r.pullToRunning), ms(percentile(r0.createToRunning, 50)),
			ms(percentile(r0.calls.m["StopContainer"], 50)), ms(percentile(r0.calls.m["RemoveContainer"], 50)))
	}
	fmt.Fprintf(w, "(pull→running: a new image pulled, converted and run, its first create %s ms with extraction, %s ms as the first linked clone, which makes the template container)\n",
		ms(results[0].firstCreate), ms(results[len(results)-1].firstCreate))

	fmt.Fprintf(w, "\nper CRI call, p50/p99 ms, pods created at once:\n%-17s", "call")
	for _, r := range results {
		for _, rr := range r.rounds {
			fmt.Fprintf(w, " %14s", fmt.Sprintf("%s n=%d", shortPath(r.path), rr.pods))
		}
	}
	fmt.Fprintln(w)
	for _, m := range callOrder {
		fmt.Fprintf(w, "%-17s", m)
		for _, r := range results {
			for _, rr := range r.rounds {
				fmt.Fprintf(w, " %14s", ms(percentile(rr.calls.m[m], 50))+"/"+ms(percentile(rr.calls.m[m], 99)))
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%-17s", "create→running")
	for _, r := range results {
		for _, rr := range r.rounds {
			fmt.Fprintf(w, " %14s", ms(percentile(rr.createToRunning, 50))+"/"+ms(percentile(rr.createToRunning, 99)))
		}
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "\nthroughput (pull, runp, create, start of all pods at once):\n%-13s %5s %8s %9s %11s %15s %15s %7s %18s\n",
		"rootfs", "pods", "wall s", "pods/min", "own ms/pod", "Proxmox ms/pod", "queued ms/pod", "own %", "daemon CPU ms/pod")
	for _, r := range results {
		for _, rr := range r.rounds {
			per := func(d time.Duration) string { return ms(d / time.Duration(rr.pods)) }
			fmt.Fprintf(w, "%-13s %5d %8.1f %9.1f %11s %15s %15s %7.1f %18s\n", r.path, rr.pods, rr.wall.Seconds(), podsPerMinute(rr),
				per(rr.own), per(rr.proxmox), per(rr.queued), 100*float64(rr.own)/float64(max(rr.own+rr.proxmox+rr.queued, 1)), per(rr.cpu))
		}
	}
	fmt.Fprintln(w, "own: the daemon's CRI call latency less its time in Proxmox calls and their tasks and in the queue of a template container")
	fmt.Fprintln(w, "(Proxmox clones one at a time from one template), from its metrics; calls overlap, so these add up to more than the wall time.")

	fmt.Fprintf(w, "\ndaemon with %d pods running: ", results[0].rounds[len(results[0].rounds)-1].pods)
	for _, r := range results {
		fmt.Fprintf(w, "%s RSS %.0f MiB (peak %.0f), CPU %.1f%% of a core while a client relists each second;  ", r.path, r.rssMiB, r.peakMiB, 100*r.idleCPU)
	}
	ext, cl := results[0], results[len(results)-1]
	fmt.Fprintf(w, "\nlinked clones against extraction: pull→running %.2fx, create→running %.2fx (1 pod), %.2fx (%d at once); pods/min %.2fx\n",
		ext.pullToRunning.Seconds()/cl.pullToRunning.Seconds(),
		float64(percentile(ext.rounds[0].createToRunning, 50))/float64(percentile(cl.rounds[0].createToRunning, 50)),
		float64(percentile(ext.rounds[len(ext.rounds)-1].createToRunning, 50))/float64(percentile(cl.rounds[len(cl.rounds)-1].createToRunning, 50)),
		cl.rounds[len(cl.rounds)-1].pods,
		podsPerMinute(cl.rounds[len(cl.rounds)-1])/podsPerMinute(ext.rounds[len(ext.rounds)-1]))
	fmt.Fprintln(w, "(the simulator's extraction also reads the whole template once more for OS detection; Proxmox instead makes a file system on each new volume)")
}

func shortPath(p string) string {
	if p == "linked-clone" {
		return "clone"
	}
	return p
}
