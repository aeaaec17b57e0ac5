package pvesim

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// The cluster's resources (pve-manager API2/Cluster.pm resources L263,
// API2Tools.pm extract_vm_stats L81, extract_node_stats L38; L§7), the
// node's DNS (API2/Nodes.pm dns), and the storage calls that depend on
// which nodes a storage is on (storage.cfg "nodes": pve-storage
// storage_info and storage_check_enabled skip or refuse it elsewhere).

var clusterResourcesSchema = schema{"type": str().oneOf("vm", "storage", "node", "sdn", "pool")}

// clusterResources is GET /cluster/resources: nodes (their figures only
// with Sys.Audit on them), guests the user may audit, storages per node.
// Departure: the figures are the simulator's own (SetNodeLoad), not
// pvestatd's ten-second-old broadcasts.
func (s *Server) clusterResources(c *call) (any, error) {
	typ := c.p.get("type")
	out := []map[string]any{}
	if typ == "" || typ == "vm" {
		s.mu.Lock()
		var cts []*container
		for _, ct := range s.cts {
			cts = append(cts, ct)
		}
		s.mu.Unlock()
		sort.Slice(cts, func(i, j int) bool { return cts[i].vmid < cts[j].vmid })
		for _, ct := range cts {
			if c.who.check(fmt.Sprintf("/vms/%d", ct.vmid), "VM.Audit") != nil {
				continue
			}
			st := s.vmstatus(ct)
			r := map[string]any{"id": fmt.Sprintf("lxc/%d", ct.vmid), "type": "lxc", "node": ct.node, "template": 0}
			for _, k := range []string{"vmid", "name", "status", "cpu", "mem", "maxmem", "disk", "maxdisk", "uptime", "netin", "netout", "diskread", "diskwrite", "tags", "lock", "template"} {
				if v, ok := st[k]; ok {
					r[k] = v
				}
			}
			r["maxcpu"] = st["cpus"]
			out = append(out, r)
		}
	}
	if typ == "" || typ == "node" {
		for _, n := range s.opts.Nodes {
			l := s.nodeLoad(n)
			r := map[string]any{"id": "node/" + n, "type": "node", "node": n, "status": l.Status, "level": "", "cgroup-mode": 2}
			if c.who.check("/nodes/"+n, "Sys.Audit") == nil && l.Status == "online" {
				r["cpu"], r["maxcpu"], r["mem"], r["maxmem"] = l.CPU, l.MaxCPU, l.Mem, l.MaxMem
				r["disk"], r["maxdisk"], r["uptime"] = int64(8)<<30, int64(100)<<30, 3600
			}
			out = append(out, r)
		}
	}
	if typ == "" || typ == "storage" {
		for _, n := range s.opts.Nodes {
			for _, st := range s.storages {
				if s.storageOnNode(st.id, n) != nil {
					continue
				}
				if c.who.checkAny("/storage/"+st.id, "Datastore.Audit", "Datastore.AllocateSpace") != nil {
					continue
				}
				info := s.storageInfo(n, st)
				status := "available"
				if s.nodeLoad(n).Status != "online" {
					status = "unknown"
				}
				out = append(out, map[string]any{"id": "storage/" + n + "/" + st.id, "type": "storage", "node": n, "storage": st.id,
					"status": status, "content": st.contentString(), "shared": b2i(st.shared), "plugintype": st.typ,
					"disk": info["used"], "maxdisk": info["total"]})
			}
		}
	}
	return out, nil
}

// nodeLoad is what node reports: SetNodeLoad's figures, else 4 CPUs 1%
// busy and 16 GiB of memory, 2 GiB used plus the memory of its running
// containers.
func (s *Server) nodeLoad(node string) NodeLoad {
	s.mu.Lock()
	l, set := s.life.load[node]
	var used int64
	for _, ct := range s.cts {
		if ct.node == node && ct.isRunning() {
			mb, _ := strconv.ParseInt(ct.conf["memory"], 10, 64)
			used += mb << 20
		}
	}
	s.mu.Unlock()
	if !set {
		l = NodeLoad{CPU: 0.01, MaxCPU: 4, Mem: 2<<30 + used, MaxMem: 16 << 30}
	}
	if l.Status == "" {
		l.Status = "online"
	}
	return l
}

var nodeDNSSchema = schema{"node": nodeParam()}

// nodeDNS is GET /nodes/{node}/dns: search and dns1..dns3 of the node's
// /etc/resolv.conf; here SetNodeDNS's, by default search pvesim.test and
// one server of the documentation range.
func (s *Server) nodeDNS(c *call) (any, error) {
	s.mu.Lock()
	d, ok := s.life.dns[c.node]
	s.mu.Unlock()
	if !ok {
		d = NodeDNS{Search: "pvesim.test", Servers: []string{"192.0.2.53"}}
	}
	out := map[string]any{}
	if d.Search != "" {
		out["search"] = d.Search
	}
	for i, sv := range d.Servers {
		if i < 3 {
			out["dns"+strconv.Itoa(i+1)] = sv
		}
	}
	return out, nil
}

// storageIndexOnNode is GET /nodes/{node}/storage without the storages
// that are not on the node.
func (s *Server) storageIndexOnNode(c *call) (any, error) {
	res, err := s.storageIndex(c)
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for _, it := range res.([]map[string]any) {
		if s.storageOnNode(it["storage"].(string), c.node) == nil {
			out = append(out, it)
		}
	}
	if out == nil {
		out = []map[string]any{}
	}
	return out, nil
}

// storageStatusOnNode is GET .../storage/{storage}/status: "No such
// storage." for one not on the node (Status.pm read_status over
// storage_info).
func (s *Server) storageStatusOnNode(c *call) (any, error) {
	if s.storageOnNode(c.p.get("storage"), c.node) != nil {
		return nil, paramErr1("storage", "No such storage.")
	}
	return s.storageStatus(c)
}

// contentIndexWithVolumes is GET .../content with what lifecycle.go adds:
// volumes of mount points (with their sizes) and backups.
func (s *Server) contentIndexWithVolumes(c *call) (any, error) {
	res, err := s.contentIndex(c)
	if err != nil {
		return nil, err
	}
	items := res.([]map[string]any)
	st := s.storage(c.p.get("storage"))
	vmid, _ := strconv.Atoi(c.p.get("vmid"))
	want := func(typ string) bool { return !c.p.has("content") || c.p.get("content") == typ }
	seen := map[string]bool{}
	for _, it := range items {
		volid := it["volid"].(string)
		seen[volid] = true
		if v := s.volume(c.node, volid); v != nil {
			it["size"], it["used"] = v.size, v.size
		}
	}
	if st.content["rootdir"] || st.content["images"] {
		for _, v := range s.Volumes(c.node, st.id) {
			if seen[v.Volid] || vmid != 0 && v.Owner != vmid {
				continue
			}
			s.mu.Lock()
			_, isCT := s.cts[v.Owner]
			s.mu.Unlock()
			content := "images"
			if isCT {
				content = "rootdir"
			}
			if !st.content[content] || !want(content) {
				continue
			}
			items = append(items, map[string]any{"volid": v.Volid, "format": "raw", "size": v.Size, "used": v.Size, "vmid": v.Owner, "content": content})
		}
	}
	if st.content["backup"] && want("backup") {
		items = append(items, s.backupItems(c.node, st, vmid)...)
	}
	sort.SliceStable(items, func(i, j int) bool {
		return strings.ToLower(items[i]["volid"].(string)) < strings.ToLower(items[j]["volid"].(string))
	})
	return items, nil
}

// contentDeleteWithBackups is DELETE .../content/{volume}, for backups
// too.
func (s *Server) contentDeleteWithBackups(c *call) (any, error) {
	volid, err := realVolumeID(c.p.get("storage"), c.p.get("volume"))
	if err != nil {
		return nil, err
	}
	if b := s.parseBackupVolid(c.node, volid); b != nil {
		return s.deleteBackup(c, b, volid)
	}
	return s.contentDelete(c)
}
