package runtime

import "sync"

// cpuMeter turns Proxmox's CPU load (cores busy, averaged over its last
// sample) into the cumulative core-nanoseconds the CRI asks for. The total
// starts from load × uptime and then grows by load × elapsed time, so it
// never goes down: kubelet and metrics-server take rates from it.
type cpuMeter struct {
	mu sync.Mutex
	m  map[string]*cpuTotal
}

type cpuTotal struct {
	at    int64 // unix nanoseconds of the last sample
	total float64
}

// add records a sample of load (cores busy) at now and returns the total.
func (m *cpuMeter) add(id string, load float64, uptimeSec int64, now int64) uint64 {
	load = max(load, 0)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = map[string]*cpuTotal{}
	}
	t := m.m[id]
	switch {
	case t == nil:
		t = &cpuTotal{at: now, total: load * float64(uptimeSec) * 1e9}
		m.m[id] = t
	case now > t.at:
		t.total += load * float64(now-t.at)
		t.at = now
	}
	return uint64(max(t.total, 0))
}

func (m *cpuMeter) forget(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, id)
}
