package runtime

import (
	"context"
	"sync"
	"time"

	"github.com/pve-image/pve-image/proxmox"
)

// listPeriod is how often at most the daemon lists the node's containers:
// kubelet asks for every container's state every second (PLEG relists,
// ContainerStatus, PodSandboxStatus, Status), and one answer serves all of
// them, whatever the number of pods.
const listPeriod = time.Second

// listTimeout bounds one list request: a Proxmox that hangs must not hang
// kubelet's relist, which it takes for a dead runtime after 3 minutes.
const listTimeout = 20 * time.Second

// containerList caches the node's container list for listPeriod; callers
// arriving while a request is out wait for it instead of sending another.
type containerList struct {
	mu    sync.Mutex
	taken time.Time // when the cached list was asked for
	done  time.Time // when it came back
	byID  map[int]proxmox.ContainerState
	err   error
	wait  chan struct{} // open while a request is out
}

// get returns the list, asking Proxmox when the cached one is older than
// listPeriod. taken is when the answer was asked for: a container started
// after that may be listed as stopped.
func (l *containerList) get(ctx context.Context, fetch func(context.Context) ([]proxmox.ContainerState, error)) (byID map[int]proxmox.ContainerState, taken time.Time, err error) {
	l.mu.Lock()
	for {
		if !l.done.IsZero() && time.Since(l.done) < listPeriod {
			defer l.mu.Unlock()
			return l.byID, l.taken, l.err
		}
		if l.wait == nil {
			break
		}
		w := l.wait
		l.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		}
		l.mu.Lock()
	}
	w := make(chan struct{})
	l.wait = w
	l.mu.Unlock()

	start := time.Now()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), listTimeout)
	list, err := fetch(fctx)
	cancel()
	m := make(map[int]proxmox.ContainerState, len(list))
	for _, c := range list {
		m[c.VMID] = c
	}
	l.mu.Lock()
	l.byID, l.err, l.taken, l.done = m, err, start, time.Now()
	l.wait = nil
	close(w)
	l.mu.Unlock()
	return m, start, err
}
