package lifecycle

import (
	"strings"
	"testing"

	"github.com/pve-image/pve-image/proxmox"
)

func node(name, status string, cpu float64, cpus float64, mem, maxmem int64) proxmox.Resource {
	return proxmox.Resource{Type: "node", Node: name, Status: status, CPU: cpu, MaxCPU: cpus, Mem: mem, MaxMem: maxmem}
}

func storage(n, id, content string) proxmox.Resource {
	return proxmox.Resource{Type: "storage", Node: n, Storage: id, Status: "available", Content: content}
}

func TestChoose(t *testing.T) {
	const G = 1 << 30
	base := []proxmox.Resource{
		storage("a", "local", "vztmpl,backup"), storage("a", "local-lvm", "rootdir,images"),
		storage("b", "local", "vztmpl,backup"), storage("b", "local-lvm", "rootdir,images"), storage("b", "fast", "rootdir"),
		storage("c", "local", "vztmpl,backup"),
	}
	tests := []struct {
		name  string
		nodes []proxmox.Resource
		needs Needs
		want  string
		err   string
	}{
		{"most free memory and CPU", []proxmox.Resource{node("a", "online", 0.8, 8, 28*G, 32*G), node("b", "online", 0.1, 8, 4*G, 32*G)},
			Needs{MemoryMiB: 512, Storages: []string{"local"}, Rootdir: true}, "b", ""},
		{"fractions: a small idle node beats a big busy one", []proxmox.Resource{node("a", "online", 0.9, 64, 200*G, 256*G), node("b", "online", 0.0, 4, 1*G, 16*G)},
			Needs{MemoryMiB: 512, Storages: []string{"local"}}, "b", ""},
		{"a storage only one node has", []proxmox.Resource{node("a", "online", 0, 8, 1*G, 32*G), node("b", "online", 0.9, 8, 30*G, 32*G)},
			Needs{MemoryMiB: 512, Storages: []string{"local", "fast"}}, "b", ""},
		{"offline nodes never", []proxmox.Resource{node("a", "offline", 0, 8, 0, 32*G), node("b", "online", 0.9, 8, 30*G, 32*G)},
			Needs{MemoryMiB: 512, Storages: []string{"local"}}, "b", ""},
		{"no container disks on c", []proxmox.Resource{node("c", "online", 0, 8, 1*G, 32*G), node("a", "online", 0.5, 8, 16*G, 32*G)},
			Needs{MemoryMiB: 512, Storages: []string{"local"}, Rootdir: true}, "a", ""},
		{"ties go by name", []proxmox.Resource{node("b", "online", 0.5, 8, 16*G, 32*G), node("a", "online", 0.5, 8, 16*G, 32*G)},
			Needs{MemoryMiB: 512, Storages: []string{"local"}}, "a", ""},
		{"memory does not fit anywhere", []proxmox.Resource{node("a", "online", 0, 8, 31*G, 32*G), node("b", "offline", 0, 8, 0, 32*G)},
			Needs{MemoryMiB: 4096, Storages: []string{"local"}}, "", "the container asks 4096 MiB"},
		{"no figures without Sys.Audit", []proxmox.Resource{{Type: "node", Node: "a", Status: "online"}},
			Needs{MemoryMiB: 512}, "", "Sys.Audit"},
		{"no nodes", nil, Needs{}, "", "lists no nodes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := choose(append(append([]proxmox.Resource{}, base...), tc.nodes...), tc.needs)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q (why %q)", err, tc.err, p.Why)
				}
				return
			}
			if err != nil || p.Node != tc.want {
				t.Fatalf("placed on %q (%v), want %q; why %q", p.Node, err, tc.want, p.Why)
			}
			if !strings.HasPrefix(p.Why[0], tc.want+": ") {
				t.Errorf("why does not start with the chosen node: %q", p.Why)
			}
		})
	}
}
