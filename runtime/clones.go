package runtime

import (
	"cmp"
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
// start removes those left by a daemon that died in between, and the
// containers of pods it made and never recorded: every pod's container
// carries the daemon's owner mark in its description too.
//
// A template container is made once per key, by whichever create comes
// first, and to its end even if that create's caller gives up: the next
// create clones it instead of unpacking the template again.
//
// Proxmox clones from one template one at a time (it holds lock: disk on
// the template for the whole clone, and refuses another clone meanwhile
// with "CT is locked (disk)"): the daemon queues its creates per template
// container, and proxmox.LinkedClone waits out other clients' clones for
// up to cloneLockWait. A template container locked for longer (a backup
// job, a lock a crash left) does not fail creates: Proxmox unpacks the
// template for them until the lock goes.

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
	// The rest is guarded by bases.mu.
	// vmid is the template container, 0 while none is known.
	vmid int
	// extras are other template containers of the key a scan found (two
	// daemons' lifetimes, or a leftover converted late): no clone is made
	// of them, and each goes once no container of the daemon is its clone.
	extras []int
	// making is the template container being made, nil when none.
	making *making
	// locked says the last clone found vmid locked past the lock wait:
	// the next creates try once and unpack meanwhile. lockLogged says
	// that was logged.
	locked, lockLogged bool
}

// making is a template container being made, once for everyone waiting
// for its key: done is closed when vmid or err is set.
type making struct {
	done chan struct{}
	vmid int
	err  error
}

// bases are the template containers the daemon knows.
type bases struct {
	mu      sync.Mutex
	m       map[baseKey]*baseCT
	types   map[string]string // node/storage → storage type
	scanned map[string]bool   // nodes whose template containers were listed
	scanMu  sync.Mutex        // one listing at a time
	// rescan is when a node whose listing found a leftover locked or
	// running is listed again; rescanAfter is how long after (0:
	// leftoverRescan).
	rescan      map[string]time.Time
	rescanAfter time.Duration
	// pending are the containers this process made and has not recorded
	// yet (a create's until CreateContainer records it, a template
	// container's until it is one), by VMID: the sweeps leave them alone,
	// and a clone's keeps its template container (baseInUse).
	pending map[int]pendingCT
	// lockWait bounds the wait for another client's clone of a template
	// container (0: cloneLockWait).
	lockWait time.Duration
}

// pendingCT is a container made and not recorded yet; from is the
// template container of a linked clone (0 for others), of key.
type pendingCT struct {
	key  baseKey
	from int
}

// cloneLockWait is how long a create waits for a template container
// another client holds locked (its clone, a backup) before Proxmox unpacks
// the template for it instead: well within kubelet's 2-minute deadline of
// CreateContainer, so that the unpacking still fits.
const cloneLockWait = 20 * time.Second

// leftoverRescan is how soon a node is listed again for a template
// container whose conversion was cut short and that was locked or running:
// not at every create, since a lock a crash left stays until someone
// removes it.
const leftoverRescan = time.Minute

// baseMakeTimeout bounds the making of a template container, which goes
// on when the create that started it gives up: unpacking a big image on a
// slow storage can take longer than kubelet waits for a create.
const baseMakeTimeout = 30 * time.Minute

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

// adopt records vmid as a template container of ct: the one clones are
// made of if there is none yet, else an extra.
func (b *bases) adopt(ct *baseCT, vmid int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case ct.vmid == 0:
		ct.vmid = vmid
		ct.extras = slices.DeleteFunc(ct.extras, func(x int) bool { return x == vmid })
	case ct.vmid != vmid && !slices.Contains(ct.extras, vmid):
		ct.extras = append(ct.extras, vmid)
	}
}

// forget drops vmid from ct: removed, or not ct's any more.
func (b *bases) forget(ct *baseCT, vmid int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ct.vmid == vmid {
		ct.vmid, ct.locked, ct.lockLogged = 0, false, false
	}
	ct.extras = slices.DeleteFunc(ct.extras, func(x int) bool { return x == vmid })
}

// pend marks vmid as made and not recorded yet; done ends that.
func (b *bases) pend(vmid int, p pendingCT) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = map[int]pendingCT{}
	}
	b.pending[vmid] = p
}

func (b *bases) done(vmid int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.pending, vmid)
}

// isPending reports whether vmid is being made, or was made and is not
// recorded yet, by this process. The create's VMID is held in flight
// (vmid.go) until its container is pending, so that one of the two
// always says so.
func (s *Server) isPending(vmid int) bool {
	s.vmids.mu.Lock()
	inflight := s.vmids.inflight[vmid]
	s.vmids.mu.Unlock()
	if inflight {
		return true
	}
	s.bases.mu.Lock()
	defer s.bases.mu.Unlock()
	_, ok := s.bases.pending[vmid]
	return ok
}

// keys lists the known template containers of node.
func (b *bases) keys(node string) []baseKey {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []baseKey
	for k, ct := range b.m {
		if k.node == node && (ct.vmid != 0 || len(ct.extras) > 0) {
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

// ownerMark is the line of the description of a pod's container that
// names the daemon that made it (its owner ID), so that a start-up sweep
// can remove those it made and never recorded (it died, or the create's
// caller gave up at the wrong moment), and never another's.
const ownerMark = "pve-image-owner: "

// podDescription is a pod container's description: text and the owner
// mark.
func (s *Server) podDescription(text string) string {
	return text + "\n" + ownerMark + s.owner() + "\n"
}

// parseOwnerMark reads the owner mark of a pod container's description.
func parseOwnerMark(desc string) (string, bool) {
	for line := range strings.SplitSeq(desc, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), strings.TrimSpace(ownerMark)); ok {
			if o := strings.TrimSpace(rest); o != "" {
				return o, true
			}
		}
	}
	return "", false
}

// owner is this daemon's ID in its containers' marks, made once and kept
// in its state.
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
// of a clone. The container is pending (bases.pend) until the caller
// records it or removes it, and then calls s.bases.done(vmid).
func (s *Server) makeContainer(ctx context.Context, node string, spec proxmox.ContainerSpec) (vmid int, base *baseRef, err error) {
	storage, _, _ := strings.Cut(spec.Options["rootfs"], ":")
	ok, err := s.clonable(ctx, node, storage)
	if err != nil {
		return 0, nil, err
	}
	if ok {
		vmid, base, err = s.createClone(ctx, node, storage, spec)
		switch {
		case err == nil:
			return vmid, base, nil
		case errors.Is(err, proxmox.ErrPermission):
			s.log.Warn("no linked clone: Proxmox denied a privilege linked clones need (VM.Clone on the template container, VM.Allocate); Proxmox unpacks the template instead, which is slower (--linked-clones never stops trying)",
				"node", node, "storage", storage, "err", err)
		case errors.Is(err, proxmox.ErrLocked) && ctx.Err() == nil:
			// Logged by cloneBase, once.
		default:
			return 0, nil, err
		}
	}
	err = s.withVMID(ctx, node, func(id int) error {
		spec.VMID = id
		vmid, _, err = s.pve().Launch(ctx, node, spec)
		if err == nil {
			s.bases.pend(vmid, pendingCT{})
		}
		return err
	})
	if err != nil {
		return 0, nil, err
	}
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
			s.bases.done(vmid)
			return 0, nil, fmt.Errorf("configure container %d, a linked clone of %d: %w", vmid, baseVMID, err)
		}
	}
	return vmid, &baseRef{Node: node, Storage: storage, VMID: baseVMID, Volid: key.volid}, nil
}

// cloneBase makes a linked clone of key's template container, in its
// queue. The template container is checked to be the daemon's (its mark)
// before each clone: a VMID is reused once its container is removed by
// hand, and a clone of another's template would run another image. One
// that is not is looked for again, or made anew, once.
func (s *Server) cloneBase(ctx context.Context, key baseKey, tmpl map[string]string, o proxmox.CloneOptions) (vmid, base int, err error) {
	b := s.bases.get(key)
	waited := time.Now()
	err = b.acquire(ctx)
	// Observed also when the caller gave up in the queue: that wait is not
	// the daemon's own time either.
	s.cfg.Metrics.cloneQueue.Observe(time.Since(waited).Seconds())
	if err != nil {
		return 0, 0, err
	}
	defer b.release()
	if err := s.scanBases(ctx, key.node); err != nil {
		return 0, 0, err
	}
	for attempt := 0; ; attempt++ {
		if base, err = s.ensureBase(ctx, key, b, tmpl); err != nil {
			return 0, 0, err
		}
		ours, cerr := s.isBase(ctx, key, base)
		if cerr != nil {
			return 0, 0, fmt.Errorf("template container %d on %s: %w", base, key.node, cerr)
		}
		if !ours {
			if attempt > 0 {
				return 0, 0, fmt.Errorf("template container %d on %s for %s is not the daemon's any more", base, key.node, key.volid)
			}
			s.lookAgain(ctx, key, b, base)
			continue
		}
		s.bases.mu.Lock()
		o.LockWait = cmp.Or(s.bases.lockWait, cloneLockWait)
		if b.locked {
			// Found locked past the wait just before: one try, and
			// unpack if it still is.
			o.LockWait = time.Nanosecond
		}
		s.bases.mu.Unlock()
		err = s.withVMID(ctx, key.node, func(id int) error {
			o.NewID = id
			vmid, err = s.pve().LinkedClone(ctx, key.node, base, o)
			if err == nil {
				s.bases.pend(vmid, pendingCT{key: key, from: base})
			}
			return err
		})
		if err == nil {
			s.bases.mu.Lock()
			b.locked, b.lockLogged = false, false
			s.bases.mu.Unlock()
			return vmid, base, nil
		}
		if errors.Is(err, proxmox.ErrLocked) {
			s.lockedBase(key, b, base, o.LockWait, err)
			return 0, 0, err
		}
		if ctx.Err() != nil || attempt > 0 {
			return 0, 0, err
		}
		// Removed by hand meanwhile (and its VMID perhaps taken by
		// another container)? Then look again, else make it anew.
		if ours, cerr := s.isBase(ctx, key, base); cerr != nil || ours {
			return 0, 0, err
		}
		s.lookAgain(ctx, key, b, base)
	}
}

// lookAgain forgets base, which is not key's template container any more,
// and lists the node's again.
func (s *Server) lookAgain(ctx context.Context, key baseKey, b *baseCT, base int) {
	s.log.Warn("the template container has gone, or is not the daemon's any more; looking for it again", "vmid", base, "node", key.node, "template", key.volid)
	s.bases.forget(b, base)
	s.bases.mu.Lock()
	delete(s.bases.scanned, key.node)
	s.bases.mu.Unlock()
	if err := s.scanBases(ctx, key.node); err != nil {
		s.log.Warn("template containers not listed", "node", key.node, "err", err)
	}
}

// lockedBase notes that base stayed locked past the lock wait: the next
// creates try once, and the first time it is logged.
func (s *Server) lockedBase(key baseKey, b *baseCT, base int, waited time.Duration, err error) {
	s.bases.mu.Lock()
	first := !b.lockLogged
	b.locked, b.lockLogged = true, true
	s.bases.mu.Unlock()
	if !first {
		return
	}
	lock, _ := proxmox.LockedBy(err)
	s.log.Warn("the template container stays locked: another client's clone or a backup job (lock: backup) holds it, or the lock is stale, left by a crash mid-clone (lock: disk). Pods of the image are unpacked from the template meanwhile, which is slower. If no vzclone or vzdump task for it runs on the node, 'pct unlock' it there",
		"vmid", base, "node", key.node, "lock", lock, "waited", waited.String(), "template", key.volid)
}

// isBase reports whether vmid on key's node is a template container of
// key made by this daemon: a template with its mark, on key's storage.
func (s *Server) isBase(ctx context.Context, key baseKey, vmid int) (bool, error) {
	cfg, err := s.pve().ReadConfig(ctx, key.node, vmid)
	if errors.Is(err, proxmox.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	m, ok := parseBaseMark(cfg["description"])
	storage, _, _ := strings.Cut(proxmox.ParseMountPoint("rootfs", cfg["rootfs"]).Volume(), ":")
	return ok && m.Owner == s.owner() && m.Volid == key.volid && storage == key.storage && cfg["template"] == "1", nil
}

// ensureBase returns key's template container, made first if there is
// none. It is made once for everyone waiting for it, and to its end even
// when they all give up (kubelet's deadline for a create is 2 minutes, and
// a big image on a slow storage may take longer to unpack): the next
// create clones what it made instead of starting over.
func (s *Server) ensureBase(ctx context.Context, key baseKey, b *baseCT, tmpl map[string]string) (int, error) {
	s.bases.mu.Lock()
	if b.vmid != 0 {
		defer s.bases.mu.Unlock()
		return b.vmid, nil
	}
	m := b.making
	if m == nil {
		m = &making{done: make(chan struct{})}
		b.making = m
		// Detached from the caller, and not counted into its CRI call's
		// Proxmox time: each waiter counts its own wait below.
		mctx, cancel := context.WithTimeout(context.WithValue(context.WithoutCancel(ctx), proxmoxTimeKey{}, nil), baseMakeTimeout)
		go func() {
			defer cancel()
			vmid, err := s.makeBase(mctx, key, tmpl)
			s.bases.mu.Lock()
			if err == nil {
				b.vmid = vmid
				b.extras = slices.DeleteFunc(b.extras, func(x int) bool { return x == vmid })
			}
			b.making = nil
			m.vmid, m.err = vmid, err
			s.bases.mu.Unlock()
			// Recorded above: no longer pending.
			s.bases.done(vmid)
			close(m.done)
		}()
	}
	s.bases.mu.Unlock()
	start := time.Now()
	defer func() { addProxmoxTime(ctx, time.Since(start)) }()
	select {
	case <-m.done:
		return m.vmid, m.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// makeBase creates a template container: a container from the template
// file, converted into a Proxmox template. It stays pending until the
// caller records it.
func (s *Server) makeBase(ctx context.Context, key baseKey, opts map[string]string) (int, error) {
	var vmid int
	err := s.withVMID(ctx, key.node, func(id int) error {
		var err error
		vmid, _, err = s.pve().Launch(ctx, key.node, proxmox.ContainerSpec{VMID: id, Options: opts})
		if err == nil {
			s.bases.pend(vmid, pendingCT{})
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("template container for linked clones of %s: %w", key.volid, err)
	}
	if err := s.pve().MakeTemplate(ctx, key.node, vmid); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		s.pve().DestroyContainer(dctx, key.node, vmid, true)
		s.bases.done(vmid)
		return 0, fmt.Errorf("template container for linked clones of %s: %w", key.volid, err)
	}
	s.cfg.Metrics.templates.WithLabelValues("created").Inc()
	s.log.Info("template container for linked clones", "vmid", vmid, "node", key.node, "storage", key.storage, "template", key.volid)
	return vmid, nil
}

// scanBases finds the daemon's template containers on node: its mark in
// the description of a template (the node's list says which containers
// are templates and which carry pve-image's tag), every one of each key.
// One whose conversion was cut short (the daemon died) is converted now;
// while one is locked or running, the node is listed again a while later
// (leftoverRescan).
func (s *Server) scanBases(ctx context.Context, node string) error {
	s.bases.scanMu.Lock()
	defer s.bases.scanMu.Unlock()
	s.bases.mu.Lock()
	at, again := s.bases.rescan[node]
	done := s.bases.scanned[node] && (!again || time.Now().Before(at))
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
	again = false
	for _, c := range list {
		if !slices.Contains(strings.Split(c.Tags, ";"), "pve-image-template") || s.isPending(c.VMID) {
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
				s.log.Debug("a template container whose conversion was cut short is locked or running; it is looked at again later", "vmid", c.VMID, "node", node, "lock", cfg.Locked(), "status", c.Status)
				again = true
				continue
			}
			if err := s.pve().MakeTemplate(ctx, node, c.VMID); err != nil {
				s.log.Warn("a template container whose conversion was cut short stays as it is", "vmid", c.VMID, "node", node, "err", err)
				continue
			}
		}
		s.bases.adopt(s.bases.get(baseKey{node, storage, m.Volid}), c.VMID)
	}
	s.bases.mu.Lock()
	defer s.bases.mu.Unlock()
	if s.bases.scanned == nil {
		s.bases.scanned, s.bases.rescan = map[string]bool{}, map[string]time.Time{}
	}
	s.bases.scanned[node] = true
	delete(s.bases.rescan, node)
	if again {
		s.bases.rescan[node] = time.Now().Add(cmp.Or(s.bases.rescanAfter, leftoverRescan))
	}
	return nil
}

// baseInUse reports whether the template container vmid of key must stay:
// its image is still there (the next pod clones it), a container of the
// daemon is a clone of it, or a clone of it is being made.
func (s *Server) baseInUse(key baseKey, vmid int) bool {
	used := false
	s.state.view(func(st *stateFile) {
		for _, img := range st.Images {
			used = used || img.Volid == key.volid
		}
	})
	return used || s.hasClones(key, vmid)
}

// hasClones reports whether a container of the daemon, recorded or
// pending, is a linked clone of the template container vmid of key.
func (s *Server) hasClones(key baseKey, vmid int) bool {
	used := false
	s.state.view(func(st *stateFile) {
		for _, c := range st.Containers {
			used = used || c.Base != nil && c.Base.Node == key.node && c.Base.VMID == vmid
		}
	})
	s.bases.mu.Lock()
	defer s.bases.mu.Unlock()
	for _, p := range s.bases.pending {
		used = used || p.from == vmid && p.key.node == key.node
	}
	return used
}

// dropBase removes key's template container unless it is in use, and
// those of its extras no clone uses. Proxmox may refuse (a ZFS or RBD base
// that clones use, a lock): it stays, and the next sweep tries again.
func (s *Server) dropBase(ctx context.Context, key baseKey) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	b := s.bases.get(key)
	// Asked first without the queue, so that removing a pod does not wait
	// for the clones of others; asked again in it.
	unused := func() []int {
		s.bases.mu.Lock()
		vmid, extras := b.vmid, slices.Clone(b.extras)
		s.bases.mu.Unlock()
		var out []int
		for _, x := range extras {
			if !s.hasClones(key, x) {
				out = append(out, x)
			}
		}
		if vmid != 0 && !s.baseInUse(key, vmid) {
			out = append(out, vmid)
		}
		return out
	}
	if len(unused()) == 0 {
		return
	}
	if err := b.acquire(ctx); err != nil {
		return
	}
	defer b.release()
	for _, vmid := range unused() {
		if err := s.pve().DestroyContainer(ctx, key.node, vmid, false); err != nil && !errors.Is(err, proxmox.ErrNotFound) {
			s.log.Warn("template container stays", "vmid", vmid, "node", key.node, "template", key.volid, "err", err)
			continue
		}
		s.bases.forget(b, vmid)
		s.cfg.Metrics.templates.WithLabelValues("removed").Inc()
		s.log.Info("template container removed", "vmid", vmid, "node", key.node, "template", key.volid)
	}
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
		s.dropNodeBases(ctx, node, volid)
	}
}

func (s *Server) dropNodeBases(ctx context.Context, node, volid string) {
	if err := s.scanBases(ctx, node); err != nil {
		s.log.Warn("template containers of a removed image stay", "node", node, "template", volid, "err", err)
		return
	}
	for _, k := range s.bases.keys(node) {
		if volid == "" || k.volid == volid {
			s.dropBase(ctx, k)
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

// sweepBases removes what a daemon that stopped at the wrong moment left:
// the containers of pods it made and never recorded (its owner mark, and
// no record names them), then the template containers nothing uses.
func (s *Server) sweepBases(ctx context.Context) {
	nodes, err := s.containerNodes(ctx)
	if err != nil {
		s.log.Warn("no start-up sweep of unrecorded containers and unused template containers", "err", err)
		return
	}
	for _, node := range nodes {
		if err := s.sweepUnrecorded(ctx, node); err != nil {
			s.log.Warn("no start-up sweep of unrecorded containers", "node", node, "err", err)
		}
		s.dropNodeBases(ctx, node, "")
	}
}

// sweepUnrecorded removes the containers of node that carry the daemon's
// owner mark and that no record names: made by a create that never
// recorded them. Those being made now (pending) stay; so do running and
// locked ones, which something else is at.
func (s *Server) sweepUnrecorded(ctx context.Context, node string) error {
	list, err := s.pve().Containers(ctx, node)
	if err != nil {
		return err
	}
	owner := s.owner()
	for _, c := range list {
		if c.Template == 1 || !slices.Contains(strings.Split(c.Tags, ";"), "pve-image") {
			continue
		}
		// Pending first, then the records: a create records its
		// container before it stops being pending.
		if s.isPending(c.VMID) || s.recorded(c.VMID) {
			continue
		}
		cfg, err := s.pve().ReadConfig(ctx, node, c.VMID)
		if errors.Is(err, proxmox.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if o, ok := parseOwnerMark(cfg["description"]); !ok || o != owner || cfg["template"] == "1" {
			continue
		}
		if c.Status != "stopped" || cfg.Locked() != "" {
			s.log.Warn("a container of the daemon that no record names stays: it is running or locked", "vmid", c.VMID, "node", node, "status", c.Status, "lock", cfg.Locked())
			continue
		}
		if err := s.pve().DestroyContainer(ctx, node, c.VMID, true); err != nil && !errors.Is(err, proxmox.ErrNotFound) {
			s.log.Warn("a container of the daemon that no record names stays", "vmid", c.VMID, "node", node, "err", err)
			continue
		}
		s.log.Info("removed a container of the daemon that no record named (a create cut short)", "vmid", c.VMID, "node", node)
	}
	return nil
}

// recorded reports whether a container record names vmid.
func (s *Server) recorded(vmid int) bool {
	found := false
	s.state.view(func(st *stateFile) {
		for _, c := range st.Containers {
			found = found || c.VMID == vmid
		}
	})
	return found
}
