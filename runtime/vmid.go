package runtime

import (
	"context"
	"errors"
	"sync"

	"github.com/pve-image/pve-image/proxmox"
)

// vmids hands out the VMIDs of the daemon's creates and clones. Proxmox's
// nextid is advisory: it names the lowest free VMID until a create takes
// it, so creates made at once (kubelet starts every pod of a rollout
// together) would all be given the same one and fail on each other. The
// daemon keeps the VMIDs of its creates in flight and skips them; a VMID
// another client takes meanwhile is skipped on the next try.
type vmids struct {
	mu       sync.Mutex
	inflight map[int]bool
}

// maxVMIDTries bounds the tries of one create against other clients
// taking its VMID.
const maxVMIDTries = 10

// withVMID runs fn with a VMID nobody else in the daemon is creating with,
// and again with another when fn says another client took it
// (proxmox.ErrVMIDTaken).
func (s *Server) withVMID(ctx context.Context, node string, fn func(vmid int) error) error {
	taken := map[int]bool{}
	for try := 1; ; try++ {
		next, err := s.pve().NextID(ctx)
		if err != nil {
			return err
		}
		s.vmids.mu.Lock()
		if s.vmids.inflight == nil {
			s.vmids.inflight = map[int]bool{}
		}
		vmid := next
		for s.vmids.inflight[vmid] || taken[vmid] {
			vmid++
		}
		s.vmids.inflight[vmid] = true
		s.vmids.mu.Unlock()
		err = fn(vmid)
		s.vmids.mu.Lock()
		delete(s.vmids.inflight, vmid)
		s.vmids.mu.Unlock()
		if err == nil || !errors.Is(err, proxmox.ErrVMIDTaken) || try >= maxVMIDTries {
			return err
		}
		s.log.Debug("VMID taken by another client; trying another", "vmid", vmid, "node", node)
		taken[vmid] = true
	}
}
