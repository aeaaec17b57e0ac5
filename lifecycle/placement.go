package lifecycle

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/pve-image/pve-image/proxmox"
)

// Auto is the node name that asks for placement.
const Auto = "auto"

// Needs is what a container asks of the node it is placed on.
type Needs struct {
	// MemoryMiB must be free on the node.
	MemoryMiB int
	// Storages must be available on the node: the template storage and
	// the storages named for the root disk and volumes.
	Storages []string
	// Rootdir asks for some storage that takes container disks, when
	// none is named.
	Rootdir bool
}

// Placement is where a container goes, and why.
type Placement struct {
	Node string
	// Why is one line per node considered, the chosen first.
	Why []string
}

// Place picks the node for a container: among the nodes that are online
// and have every needed storage available, the one with the most free
// memory and CPU, by the sum of both as fractions of the node's (so that
// neither unit outweighs the other), from GET /cluster/resources. Those
// figures are pvestatd's, refreshed every 10 s (proxmox-lifecycle.md §7):
// containers placed in a quick row may all see the same picture.
func (m *Manager) Place(ctx context.Context, n Needs) (Placement, error) {
	rs, err := m.PVE.ClusterResources(ctx, "")
	if err != nil {
		return Placement{}, fmt.Errorf("place the container: %w", err)
	}
	return choose(rs, n)
}

type candidate struct {
	node          string
	free, max     int64
	cpuFree, cpus float64
	score         float64
	refused       string
}

// choose is Place's decision over the resources.
func choose(rs []proxmox.Resource, n Needs) (Placement, error) {
	storages := map[string]map[string]proxmox.Resource{} // node -> storage -> resource
	var cands []*candidate
	for _, r := range rs {
		switch r.Type {
		case "storage":
			if storages[r.Node] == nil {
				storages[r.Node] = map[string]proxmox.Resource{}
			}
			storages[r.Node][r.Storage] = r
		case "node":
			c := &candidate{node: r.Node, free: r.MaxMem - r.Mem, max: r.MaxMem, cpus: r.MaxCPU, cpuFree: r.MaxCPU * (1 - r.CPU)}
			if r.Status != "online" {
				c.refused = "node is " + r.Status
			}
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		return Placement{}, fmt.Errorf("place the container: the cluster lists no nodes (GET /cluster/resources needs Sys.Audit on them)")
	}
	need := int64(n.MemoryMiB) << 20
	for _, c := range cands {
		if c.refused != "" {
			continue
		}
		if c.max == 0 {
			c.refused = "no memory figures (Sys.Audit on /nodes/" + c.node + " is needed to see them)"
			continue
		}
		var missing []string
		for _, s := range n.Storages {
			if r, ok := storages[c.node][s]; !ok || r.Status != "available" {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			c.refused = "lacks storage " + strings.Join(missing, ", ")
			continue
		}
		if n.Rootdir && !hasRootdir(storages[c.node]) {
			c.refused = "has no storage for container disks (content rootdir)"
			continue
		}
		if c.free < need {
			c.refused = fmt.Sprintf("has %s of memory free, the container asks %d MiB", gib(c.free), n.MemoryMiB)
			continue
		}
		c.score = float64(c.free)/float64(c.max) + c.cpuFree/max(c.cpus, 1)
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if (a.refused == "") != (b.refused == "") {
			return a.refused == ""
		}
		if a.score != b.score {
			return a.score > b.score
		}
		return a.node < b.node
	})
	var p Placement
	for _, c := range cands {
		if c.refused != "" {
			p.Why = append(p.Why, c.node+": "+c.refused)
			continue
		}
		p.Why = append(p.Why, fmt.Sprintf("%s: %s of %s memory and %.1f of %.0f CPUs free", c.node, gib(c.free), gib(c.max), c.cpuFree, c.cpus))
	}
	if cands[0].refused != "" {
		return p, fmt.Errorf("no node can take the container:\n  %s", strings.Join(p.Why, "\n  "))
	}
	p.Node = cands[0].node
	return p, nil
}

func hasRootdir(st map[string]proxmox.Resource) bool {
	for _, r := range st {
		if r.Status == "available" && r.Holds("rootdir") {
			return true
		}
	}
	return false
}

func gib(b int64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }
