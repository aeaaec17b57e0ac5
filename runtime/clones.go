package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pve-image/pve-image/lifecycle"
	"github.com/pve-image/pve-image/proxmox"
)

// Linked clones (shared/reference/proxmox-lifecycle.md §4). Where the root
// disks' storage clones container volumes copy-on-write, each pod's
// container is a linked clone of a template container made once per
// image, storage and node: Proxmox then neither unpacks the template nor
// makes a file system per pod. Elsewhere Proxmox unpacks the template for
// each container, as before.
//
// A template container carries pve-image's mark in its description (the
// template file it was made from and the daemon's owner ID), so that the
// daemon finds its own again after a restart and never takes another's,
// or a pod, for one. It is removed once its image is gone (RemoveImage)
// and no container of the daemon is a clone of it: clones that exist then
// keep it, and the last one's RemoveContainer removes it. A sweep at
// start removes those left by a daemon that died in between.
//
// Proxmox clones from one template one at a time (it holds lock: disk on
// the template for the whole clone, and refuses another clone meanwhile
// with "CT is locked (disk)"): the daemon queues its creates per template
// container, and proxmox.LinkedClone waits out other clients' clones.

// LinkedClones modes (Config.LinkedClones).
const (
	LinkedClonesAuto  = "auto"  // linked clones where the root disks' storage allows them
	LinkedClonesNever = "never" // Proxmox unpacks the template for every container
)

// cloneType reports whether Proxmox makes linked clones of container
// volumes on a storage of type typ (volume_has_feature 'clone' with the
// target formats raw and subvol): LVM-thin, ZFS, Ceph RBD and btrfs.
// Directory, NFS and CIFS storages would clone into qcow2, which
// containers cannot use; thick LVM clones nothing.
func cloneType(typ string) bool {
	switch typ {
	case "lvmthin", "zfspool", "rbd", "btrfs":
		return true
	}
	return false
}

// baseRef is the template container a linked clone was made from.
type baseRef struct {
	Node    string `json:"node"`
	Storage string `json:"storage"`
	VMID    int    `json:"vmid"`
	Volid   string `json:"volid"` // the template file it was made from
}

func (r *baseRef) key() baseKey { return baseKey{r.Node, r.Storage, r.Volid} }

// baseKey names a template container: the template file it was made from
// (its name has the template's digest), on a storage of a node.
type baseKey struct{ node, storage, volid string }

// baseCT is a template container and the queue of the work on it.
type baseCT struct {
	// sem is held by whoever clones, makes or removes it: one at a time,
	// in the order they came (a channel, so that a create whose caller
	// gave up leaves the queue).
	sem chan struct{}
	// vmid is the template container, 0 while none is known; guarded by
	// bases.mu.
	vmid int
}

// bases are the template containers the daemon knows.
type bases struct {
	mu      sync.Mutex
	m       map[baseKey]*baseCT
	types   map[string]string // node/storage → storage type
	scanned map[string]bool   // nodes whose template containers were listed
	scanMu  sync.Mutex        // one listing at a time
}

func (b *bases) get(k baseKey) *baseCT {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[baseKey]*baseCT{}
	}
	ct := b.m[k]
	if ct == nil {
		ct = &baseCT{sem: make(chan struct{}, 1)}
		b.m[k] = ct
	}
	return ct
}

func (b *bases) vmid(ct *baseCT) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return ct.vmid
}

func (b *bases) setVMID(ct *baseCT, vmid int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ct.vmid = vmid
}

// keys lists the known template containers of node.
func (b *bases) keys(node string) []baseKey {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []baseKey
	for k, ct := range b.m {
		if k.node == node && ct.vmid != 0 {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b baseKey) int { return strings.Compare(a.storage+a.volid, b.storage+b.volid) })
	return out
}

// acquire takes ct's place in the queue; release gives it up.
func (ct *baseCT) acquire(ctx context.Context) error {
	select {
	case ct.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (ct *baseCT) release() { <-ct.sem }

// baseMark is the line of a template container's description that makes
// it pve-image's.
const baseMark = "pve-image-template: "

type baseMarkInfo struct {
	Volid string `json:"volid"`
	Owner string `json:"owner"`
}

func (s *Server) baseDescription(volid string) string {
	b, _ := json.Marshal(baseMarkInfo{Volid: volid, Owner: s.owner()})
	return "pve-image CRI: the template container pods' root disks are linked clones of. pve-image cri removes it with its image " +
		"once no container uses it; do not start, change or remove it.\n" + baseMark + string(b) + "\n"
}

// parseBaseMark reads the mark of a template container's description.
func parseBaseMark(desc string) (baseMarkInfo, bool) {
	for line := range strings.SplitSeq(desc, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), strings.TrimSpace(baseMark)); ok {
			var m baseMarkInfo
			if json.Unmarshal([]byte(strings.TrimSpace(rest)), &m) == nil && m.Volid != "" && m.Owner != "" {
				return m, true
			}
		}
	}
	return baseMarkInfo{}, false
}

// owner is this daemon's ID in its template containers' marks, made once
// and kept in its state.
func (s *Server) owner() string {
	var id string
	s.state.view(func(st *stateFile) { id = st.Owner })
	if id != "" {
		return id
	}
	s.state.update(func(st *stateFile) error {
		if st.Owner == "" {
			st.Owner = newID()[:16]
		}
		id = st.Owner
		return nil
	})
	return id
}

// baseHostname names a template container after its template file, for
// people reading Proxmox's container list.
func baseHostname(volid string) string {
	_, name, _ := strings.Cut(volid, ":")
	name = strings.TrimPrefix(name, "vztmpl/")
	if i := strings.Index(name, ".tar"); i > 0 {
		name = name[:i]
	}
	var b strings.Builder
	for _, r := range strings.ToLower("tmpl-" + name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String()[:min(b.Len(), 63)], "-")
}

// clonable reports whether pods' root disks on storage of node are linked
// clones. The storage's type is asked once.
func (s *Server) clonable(ctx context.Context, node, storage string) (bool, error) {
	if s.cfg.LinkedClones == LinkedClonesNever || storage == "" {
		return false, nil
	}
	k := node + "/" + storage
	s.bases.mu.Lock()
	typ, ok := s.bases.types[k]
	s.bases.mu.Unlock()
	if !ok {
		info, err := s.pve().Storage(ctx, node, storage)
		if err != nil {
			return false, fmt.Errorf("storage %s on %s: %w", storage, node, err)
		}
		typ = info.Type
		s.bases.mu.Lock()
		if s.bases.types == nil {
			s.bases.types = map[string]string{}
		}
		s.bases.types[k] = typ
		s.bases.mu.Unlock()
	}
	return cloneType(typ), nil
}

// sharedKey reports whether a create option is the template
// container's, the same for all its clones: the image's (ostype, arch,
// features) and the root disk's.
func sharedKey(k string) bool {
	switch k {
	case "ostemplate", "rootfs", "unprivileged", "ostype", "arch", "features":
		return true
	}
	return false
}

// makeContainer creates a pod's Proxmox container from spec: a linked
// clone of the image's template container where the root disk's storage
// allows it, else from the template file. base is the template container
// of a clone.
func (s *Server) makeContainer(ctx context.Context, node string, spec proxmox.ContainerSpec) (vmid int, base *baseRef, err error) {
	storage, _, _ := strings.Cut(spec.Options["rootfs"], ":")
	ok, err := s.clonable(ctx, node, storage)
	if err != nil {
		return 0, nil, err
	}
	if ok {
		vmid, base, err = s.createClone(ctx, node, storage, spec)
		if err == nil {
			s.cfg.Metrics.created.WithLabelValues(rootfsClone).Inc()
			return vmid, base, nil
		}
		if !errors.Is(err, proxmox.ErrPermission) {
			return 0, nil, err
		}
		s.log.Warn("no linked clone: Proxmox denied a privilege linked clones need (VM.Clone on the template container, VM.Allocate); Proxmox unpacks the template instead, which is slower (--linked-clones never stops trying)",
			"node", node, "storage", storage, "err", err)
	}
	err = s.withVMID(ctx, node, func(id int) error {
		spec.VMID = id
		vmid, _, err = s.pve().Launch(ctx, node, spec)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	s.cfg.Metrics.created.WithLabelValues(rootfsExtract).Inc()
	return vmid, nil, nil
}

// createClone clones the image's template container (made first if
// there is none) and gives the clone the pod's config.
func (s *Server) createClone(ctx context.Context, node, storage string, spec proxmox.ContainerSpec) (int, *baseRef, error) {
	key := baseKey{node: node, storage: storage, volid: spec.Options["ostemplate"]}
	tmpl := map[string]string{"hostname": baseHostname(key.volid), "description": s.baseDescription(key.volid),
		"tags": "pve-image;pve-image-template"}
	pod := map[string]string{}
	for k, v := range spec.Options {
		switch {
		case sharedKey(k):
			tmpl[k] = v
		case k != "hostname" && k != "description":
			pod[k] = v
		}
	}
	for k, v := range spec.After {
		pod[k] = v
	}
	vmid, baseVMID, err := s.cloneBase(ctx, key, tmpl, proxmox.CloneOptions{Hostname: spec.Options["hostname"], Description: spec.Options["description"]})
	if err != nil {
		return 0, nil, err
	}
	if len(pod) > 0 {
		if err := s.pve().SetContainerConfig(ctx, node, vmid, pod); err != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			s.pve().DestroyContainer(dctx, node, vmid, true)
			return 0, nil, fmt.Errorf("configure container %d, a linked clone of %d: %w", vmid, baseVMID, err)
		}
	}
	return vmid, &baseRef{Node: node, Storage: storage, VMID: baseVMID, Volid: key.volid}, nil
}

// cloneBase makes a linked clone of key's template container, in its
// queue. A template container that has gone (removed by hand) is made
// again once.
func (s *Server) cloneBase(ctx context.Context, key baseKey, tmpl map[string]string, o proxmox.CloneOptions) (vmid, base int, err error) {
	b := s.bases.get(key)
	waited := time.Now()
	if err := b.acquire(ctx); err != nil {
		return 0, 0, err
	}
	defer b.release()
	s.cfg.Metrics.cloneQueue.Observe(time.Since(waited).Seconds())
	if err := s.scanBases(ctx, key.node); err != nil {
		return 0, 0, err
	}
	for attempt := 0; ; attempt++ {
		base = s.bases.vmid(b)
		if base == 0 {
			if base, err = s.makeBase(ctx, key, tmpl); err != nil {
				return 0, 0, err
			}
			s.bases.setVMID(b, base)
		}
		err = s.withVMID(ctx, key.node, func(id int) error {
			o.NewID = id
			vmid, err = s.pve().LinkedClone(ctx, key.node, base, o)
			return err
		})
		if err != nil && attempt == 0 && (errors.Is(err, proxmox.ErrNotFound) || strings.Contains(err.Error(), "Linked clone feature for")) {
			// Removed by hand (and its VMID perhaps taken by another
			// container): look again, else make it anew.
			s.log.Warn("the template container has gone; looking for it again", "vmid", base, "node", key.node, "template", key.volid, "err", err)
			s.bases.setVMID(b, 0)
			s.bases.mu.Lock()
			delete(s.bases.scanned, key.node)
			s.bases.mu.Unlock()
			if err := s.scanBases(ctx, key.node); err != nil {
				return 0, 0, err
			}
			continue
		}
		return vmid, base, err
	}
}

// makeBase creates a template container: a container from the template
// file, converted into a Proxmox template.
func (s *Server) makeBase(ctx context.Context, key baseKey, opts map[string]string) (int, error) {
	var vmid int
	err := s.withVMID(ctx, key.node, func(id int) error {
		var err error
		vmid, _, err = s.pve().Launch(ctx, key.node, proxmox.ContainerSpec{VMID: id, Options: opts})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("template container for linked clones of %s: %w", key.volid, err)
	}
	if err := s.pve().MakeTemplate(ctx, key.node, vmid); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		s.pve().DestroyContainer(dctx, key.node, vmid, true)
		return 0, fmt.Errorf("template container for linked clones of %s: %w", key.volid, err)
	}
	s.cfg.Metrics.templates.WithLabelValues("created").Inc()
	s.log.Info("template container for linked clones", "vmid", vmid, "node", key.node, "storage", key.storage, "template", key.volid)
	return vmid, nil
}

// scanBases finds the daemon's template containers on node, once: its
// mark in the description of a template (the node's list says which
// containers are templates and which carry pve-image's tag). One whose
// conversion was cut short (the daemon died) is converted now.
func (s *Server) scanBases(ctx context.Context, node string) error {
	s.bases.scanMu.Lock()
	defer s.bases.scanMu.Unlock()
	s.bases.mu.Lock()
	done := s.bases.scanned[node]
	s.bases.mu.Unlock()
	if done {
		return nil
	}
	list, err := s.pve().Containers(ctx, node)
	if err != nil {
		return fmt.Errorf("find template containers on %s: %w", node, err)
	}
	owner := s.owner()
	slices.SortFunc(list, func(a, b proxmox.ContainerState) int { return a.VMID - b.VMID })
	for _, c := range list {
		if !slices.Contains(strings.Split(c.Tags, ";"), "pve-image-template") {
			continue
		}
		cfg, err := s.pve().ReadConfig(ctx, node, c.VMID)
		if errors.Is(err, proxmox.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("find template containers on %s: %w", node, err)
		}
		m, ok := parseBaseMark(cfg["description"])
		if !ok || m.Owner != owner {
			continue
		}
		storage, _, _ := strings.Cut(proxmox.ParseMountPoint("rootfs", cfg["rootfs"]).Volume(), ":")
		if cfg["template"] != "1" {
			if cfg.Locked() != "" || c.Status != "stopped" {
				continue
			}
			if err := s.pve().MakeTemplate(ctx, node, c.VMID); err != nil {
				s.log.Warn("a template container whose conversion was cut short stays as it is", "vmid", c.VMID, "node", node, "err", err)
				continue
			}
		}
		b := s.bases.get(baseKey{node, storage, m.Volid})
		s.bases.mu.Lock()
		if b.vmid == 0 {
			b.vmid = c.VMID
		}
		s.bases.mu.Unlock()
	}
	s.bases.mu.Lock()
	if s.bases.scanned == nil {
		s.bases.scanned = map[string]bool{}
	}
	s.bases.scanned[node] = true
	s.bases.mu.Unlock()
	return nil
}

// baseInUse reports whether the template container vmid of key must stay:
// its image is still there (the next pod clones it), or a container of
// the daemon is a clone of it.
func (s *Server) baseInUse(key baseKey, vmid int) bool {
	used := false
	s.state.view(func(st *stateFile) {
		for _, img := range st.Images {
			used = used || img.Volid == key.volid
		}
		for _, c := range st.Containers {
			used = used || c.Base != nil && c.Base.Node == key.node && c.Base.VMID == vmid
		}
	})
	return used
}

// dropBase removes key's template container unless it is in use.
// Proxmox may refuse (a ZFS or RBD base that another client's clones
// use): it stays, and the next sweep tries again.
func (s *Server) dropBase(ctx context.Context, key baseKey) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	b := s.bases.get(key)
	// Asked first without the queue, so that removing a pod does not wait
	// for the clones of others; asked again in it.
	if vmid := s.bases.vmid(b); vmid == 0 || s.baseInUse(key, vmid) {
		return
	}
	if err := b.acquire(ctx); err != nil {
		return
	}
	defer b.release()
	vmid := s.bases.vmid(b)
	if vmid == 0 || s.baseInUse(key, vmid) {
		return
	}
	if err := s.pve().DestroyContainer(ctx, key.node, vmid, false); err != nil && !errors.Is(err, proxmox.ErrNotFound) {
		s.log.Warn("template container stays", "vmid", vmid, "node", key.node, "template", key.volid, "err", err)
		return
	}
	s.bases.setVMID(b, 0)
	s.cfg.Metrics.templates.WithLabelValues("removed").Inc()
	s.log.Info("template container removed", "vmid", vmid, "node", key.node, "template", key.volid)
}

// dropBases removes the template containers of a template file that are
// no longer in use, on every node the daemon puts containers on.
func (s *Server) dropBases(ctx context.Context, volid string) {
	nodes, err := s.containerNodes(ctx)
	if err != nil {
		s.log.Warn("template containers of a removed image stay", "template", volid, "err", err)
		return
	}
	for _, node := range nodes {
		if err := s.scanBases(ctx, node); err != nil {
			s.log.Warn("template containers of a removed image stay", "node", node, "template", volid, "err", err)
			continue
		}
		for _, k := range s.bases.keys(node) {
			if volid == "" || k.volid == volid {
				s.dropBase(ctx, k)
			}
		}
	}
}

// containerNodes are the nodes the daemon creates containers on: --node,
// or with --node auto every node of the cluster.
func (s *Server) containerNodes(ctx context.Context) ([]string, error) {
	if s.cfg.Node != lifecycle.Auto {
		return []string{s.cfg.Node}, nil
	}
	return s.pve().Nodes(ctx)
}

// sweepBases removes the template containers left unused by a daemon
// that stopped before it could remove them.
func (s *Server) sweepBases(ctx context.Context) {
	s.dropBases(ctx, "")
}
