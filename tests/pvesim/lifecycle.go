package pvesim

import (
	"sort"
)

// The simulator's part for containers that live on (pve-image's run,
// update, rollback and migrate): volume mount points, move_volume, vzdump
// and restore, the cluster's resources, migration, host-managed DHCP and
// the node's DNS. The facts copied are in shared/reference/
// proxmox-lifecycle.md ("L§n" below is its section n), read in the sources
// pinned there; each spot names its source.

// lifeState is the state of those behaviours. Guarded by Server.mu; the
// maps are made on first use.
type lifeState struct {
	// volumes are the volumes of mount points (mpN, unusedN) by volid.
	volumes map[string]*simVolume
	// load overrides what a node reports in /cluster/resources.
	load map[string]NodeLoad
	// storageNodes restricts storages to nodes (storage.cfg "nodes").
	storageNodes map[string][]string
	// dns is each node's GET /nodes/{node}/dns.
	dns map[string]NodeDNS
	// reserved are disk names taken by disks being made (a restore's new
	// root disk), by storage/node/name.
	reserved map[string]bool
}

// NodeLoad is what a node reports of itself in /cluster/resources: CPU in
// use (a fraction), memory used and in all, and whether it is online.
type NodeLoad struct {
	Status string  // online (default), offline, unknown
	CPU    float64 // fraction of MaxCPU in use
	MaxCPU int
	Mem    int64 // bytes used
	MaxMem int64
}

// NodeDNS is a node's resolver settings.
type NodeDNS struct {
	Search  string
	Servers []string
}

// SetNodeLoad sets what node reports in /cluster/resources (pvestatd's
// figures in Proxmox), for placement tests.
func (s *Server) SetNodeLoad(node string, l NodeLoad) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life.load == nil {
		s.life.load = map[string]NodeLoad{}
	}
	s.life.load[node] = l
}

// RestrictStorage makes storage available on nodes only, as storage.cfg's
// "nodes" option does: other nodes do not list it, and it cannot be used
// there (pve-storage storage_check_enabled: "storage 'x' is not available
// on node 'y'").
func (s *Server) RestrictStorage(storage string, nodes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life.storageNodes == nil {
		s.life.storageNodes = map[string][]string{}
	}
	s.life.storageNodes[storage] = nodes
}

// SetNodeDNS sets node's DNS settings (GET /nodes/{node}/dns).
func (s *Server) SetNodeDNS(node string, d NodeDNS) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life.dns == nil {
		s.life.dns = map[string]NodeDNS{}
	}
	s.life.dns[node] = d
}

// storageOnNode is storage_check_enabled with a node.
func (s *Server) storageOnNode(id, node string) *apiError {
	s.mu.Lock()
	nodes, restricted := s.life.storageNodes[id]
	s.mu.Unlock()
	if !restricted {
		return nil
	}
	for _, n := range nodes {
		if n == node {
			return nil
		}
	}
	return die("storage '%s' is not available on node '%s'", id, node)
}

// Volume is a volume of a mount point as a test sees it.
type Volume struct {
	Volid string
	Owner int
	// Dir holds the volume's files (the simulator's stand-in for the file
	// system Proxmox makes on the volume).
	Dir  string
	Size int64
}

// Volumes lists the volumes of mount points on storage (node matters for
// local storages), by volid.
func (s *Server) Volumes(node, storage string) []Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Volume
	for _, v := range s.life.volumes {
		if v.storage == storage && (v.node == "" || v.node == node) {
			out = append(out, Volume{Volid: v.volid, Owner: v.owner, Dir: v.dir, Size: v.size})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Volid < out[j].Volid })
	return out
}

// VolumeDir is where a volume's files are, as node sees it; "" for an
// unknown volume.
func (s *Server) VolumeDir(node, volid string) string {
	if v := s.volume(node, volid); v != nil {
		return v.dir
	}
	return ""
}
