package runtime

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pve-image/pve-image/proxmox"
)

// TestContainerListServesEveryone: many callers at once, and for a whole
// period, make one request.
func TestContainerListServesEveryone(t *testing.T) {
	var l containerList
	var calls atomic.Int32
	fetch := func(ctx context.Context) ([]proxmox.ContainerState, error) {
		calls.Add(1)
		time.Sleep(50 * time.Millisecond)
		return []proxmox.ContainerState{{VMID: 100, Status: "running"}}, nil
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			byID, _, err := l.get(context.Background(), fetch)
			if err != nil || byID[100].Status != "running" {
				t.Errorf("get: %v %v", byID, err)
			}
		}()
	}
	wg.Wait()
	l.get(context.Background(), fetch)
	if n := calls.Load(); n != 1 {
		t.Errorf("%d requests for 51 callers within a period", n)
	}
	l.mu.Lock()
	l.done = time.Now().Add(-listPeriod)
	l.mu.Unlock()
	l.get(context.Background(), fetch)
	if n := calls.Load(); n != 2 {
		t.Errorf("%d requests after the period passed, want 2", n)
	}
}

// TestContainerListWaiterLeaves: a caller that gives up while another's
// request is out returns at once.
func TestContainerListWaiterLeaves(t *testing.T) {
	var l containerList
	release := make(chan struct{})
	fetch := func(ctx context.Context) ([]proxmox.ContainerState, error) {
		<-release
		return nil, nil
	}
	go l.get(context.Background(), fetch)
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := l.get(ctx, fetch); err == nil {
		t.Error("a cancelled caller got an answer")
	}
	close(release)
}
