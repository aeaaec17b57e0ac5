package tests

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	. "github.com/pve-image/pve-image/tests/testenv"
)

// BenchmarkCRIIdlePods measures what 50 idle pods cost the daemon on the
// node: 50 supervised containers (real LXC on the simulator), and a
// client that asks what kubelet asks every second (PLEG's relist, then
// every pod's and container's status). It reports the daemon's CPU, as a
// share of one core, and the Proxmox requests it makes a second. Run by
// make bench (scripts/bench.sh); IDLE_PODS and IDLE_SECONDS change the
// numbers.
func BenchmarkCRIIdlePods(b *testing.B) {
	pods, secs := envInt("IDLE_PODS", 50), envInt("IDLE_SECONDS", 20)
	sim := startNodeSim(b)
	reg := StartRegistry(b, RegistryOptions{})
	reg.Push(b, "library/bb:1", shellImage(b, v1.Config{Entrypoint: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}))
	d := nodeDaemon(b, newCLI(b), sim, reg, "10.88.12.0/22")
	d.crictlOK(b, "pull", "bb:1")
	dir := b.TempDir()
	for i := range pods {
		name := fmt.Sprintf("idle%d", i)
		pod := podSpec(b, dir, name, nil)
		id := strings.TrimSpace(d.crictlOK(b, "runp", pod))
		cid := strings.TrimSpace(d.crictlOK(b, "create", id, ctrSpec(b, dir, name, map[string]any{"command": []string{"sh", "-c", "echo up; while true; do sleep 10; done"}}), pod))
		d.crictlOK(b, "start", cid)
	}
	rt := d.client(b)
	ctx := context.Background()
	relist := func() {
		sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			b.Fatal(err)
		}
		ctrs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		if err != nil {
			b.Fatal(err)
		}
		for _, sb := range sbs.Items {
			rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.Id})
		}
		for _, c := range ctrs.Containers {
			rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
		}
		rt.Status(ctx, &runtimeapi.StatusRequest{})
	}
	relist()
	cpu0, req0, t0 := cpuTicks(b, d.cmd.Process.Pid), sim.Requests("", "/"), time.Now()
	b.ResetTimer()
	for time.Since(t0) < time.Duration(secs)*time.Second {
		relist()
		time.Sleep(time.Second)
	}
	b.StopTimer()
	elapsed := time.Since(t0).Seconds()
	cpu := float64(cpuTicks(b, d.cmd.Process.Pid)-cpu0) / 100 // clock ticks are 1/100 s
	b.ReportMetric(100*cpu/elapsed, "daemon-cpu-%")
	b.ReportMetric(float64(sim.Requests("", "/")-req0)/elapsed, "proxmox-req/s")
	b.ReportMetric(float64(pods), "pods")
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// cpuTicks is a process's user and system time in clock ticks.
func cpuTicks(tb testing.TB, pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}
