package pvestore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/template"
)

// Client is what pvestore asks of Proxmox; *proxmox.Client is one.
type Client interface {
	Nodes(ctx context.Context) ([]string, error)
	Storage(ctx context.Context, node, storage string) (proxmox.StorageInfo, error)
	Templates(ctx context.Context, node, storage string) ([]proxmox.Volume, error)
	Upload(ctx context.Context, u proxmox.UploadRequest) (string, error)
	DeleteVolume(ctx context.Context, node, storage, volid string) error
}

// File is a template to put on storages.
type File struct {
	// Path is the local file, Name its name on the storages (already
	// normalised as Proxmox would), SHA256 its hex digest ("" lets the
	// upload compute it).
	Path, Name, SHA256 string
	Size               int64
}

// Action is what happened to a template on a storage.
type Action string

const (
	Uploaded    Action = "uploaded"
	Present     Action = "present"
	Removed     Action = "removed"
	WouldUpload Action = "would upload"
	WouldRemove Action = "would remove"
)

// Event is one thing done (or, in a dry run, to be done) on a storage.
type Event struct {
	Node, Storage string
	// Name is the template's file name, Volid its volume ID there.
	Name, Volid string
	Action      Action
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s on %s/%s", e.Action, e.Volid, e.Node, e.Storage)
}

// Progress, if set, returns a function hearing an upload's bytes.
type Progress func(name, node string) func(sent, total int64)

// PushOptions say where else to push.
type PushOptions struct {
	// AllNodes also uploads to every other node whose storage of that name
	// is not shared (a shared one is uploaded to once).
	AllNodes bool
	Progress Progress
	Log      *slog.Logger
}

// Push uploads f to storage on node unless it holds a template of that
// name and size already, and with AllNodes to the other nodes as well. It
// returns the volume ID and what it did on each storage. An error on node
// itself fails the push; another node without the storage is skipped.
func Push(ctx context.Context, cl Client, f File, node, storage string, o PushOptions) (string, []Event, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nodes := []string{node}
	if o.AllNodes {
		all, err := cl.Nodes(ctx)
		if err != nil {
			return "", nil, err
		}
		for _, n := range all {
			if n != node {
				nodes = append(nodes, n)
			}
		}
	}
	volid := storage + ":vztmpl/" + f.Name
	var events []Event
	sharedDone := false
	for _, n := range nodes {
		st, err := cl.Storage(ctx, n, storage)
		if err != nil {
			if n != node {
				log.Debug("storage not on node", "node", n, "storage", storage, "err", err)
				continue
			}
			return "", events, err
		}
		if !st.Holds("vztmpl") {
			return "", events, fmt.Errorf("storage %s on %s does not take container templates (content: %s)", storage, n, st.Content)
		}
		if st.IsShared() {
			if sharedDone {
				continue
			}
			sharedDone = true
		}
		have, err := cl.Templates(ctx, n, storage)
		if err != nil {
			return "", events, err
		}
		ev := Event{Node: n, Storage: storage, Name: f.Name, Volid: volid, Action: Present}
		if !holds(have, f.Name, f.Size) {
			if err := upload(ctx, cl, f, n, storage, o.Progress); err != nil {
				return "", events, err
			}
			ev.Action = Uploaded
		}
		events = append(events, ev)
	}
	return volid, events, nil
}

func holds(vols []proxmox.Volume, name string, size int64) bool {
	for _, v := range vols {
		if v.Name() == name && v.Size == size {
			return true
		}
	}
	return false
}

func upload(ctx context.Context, cl Client, f File, node, storage string, p Progress) error {
	var fn func(sent, total int64)
	if p != nil {
		fn = p(f.Name, node)
	}
	_, err := cl.Upload(ctx, proxmox.UploadRequest{Node: node, Storage: storage, Path: f.Path, Name: f.Name, SHA256: f.SHA256, Progress: fn})
	return err
}

// Want is a template a sync makes the storages hold.
type Want struct {
	// Name is its name on the storages (template.StorageName), Size its
	// bytes, SHA256 its hex digest.
	Name   string
	Size   int64
	SHA256 string
	// Open makes the file available when an upload needs it (a template
	// not yet in the local cache is fetched or converted only then); done
	// releases it.
	Open func(ctx context.Context) (path string, done func(), err error)
}

// SyncOptions say what a sync does on its targets.
type SyncOptions struct {
	// Prune removes templates pve-image made for the same image names
	// (and arch) beyond the Keep newest, the wanted ones counting first.
	Prune  bool
	Keep   int
	DryRun bool
	// Progress hears uploads.
	Progress Progress
}

// NodeError is a node the sync could not reach or change; the others are
// synced regardless.
type NodeError struct {
	Node, Storage string
	Err           error
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("node %s, storage %s: %v", e.Node, e.Storage, e.Err)
}
func (e *NodeError) Unwrap() error { return e.Err }

// Report says what a sync did.
type Report struct {
	Events []Event
	// Failed are the nodes (and their storages) the sync could not finish.
	Failed []*NodeError
	// Unavailable are the templates that could not be had (Want.Open
	// failed): they were uploaded nowhere.
	Unavailable []error
}

// Changed counts the uploads and removals (done, or to be done in a dry
// run).
func (r *Report) Changed() int {
	n := 0
	for _, e := range r.Events {
		if e.Action != Present {
			n++
		}
	}
	return n
}

// Err joins the nodes' errors and the unavailable templates'.
func (r *Report) Err() error {
	var errs []error
	for _, f := range r.Failed {
		errs = append(errs, f)
	}
	return errors.Join(append(errs, r.Unavailable...)...)
}

// Target is one storage to write: a node's own, or a shared one reached
// through the first node that answers.
type Target struct{ Node, Storage string }

// Targets finds the storages named storage on nodes (all the cluster's
// with allNodes): one per node, a shared storage once. Nodes that do not
// answer or whose storage takes no templates are returned as failed; the
// error is only for a node list that cannot be read.
func Targets(ctx context.Context, cl Client, nodes []string, allNodes bool, storage string) ([]Target, []*NodeError, error) {
	if allNodes {
		all, err := cl.Nodes(ctx)
		if err != nil {
			return nil, nil, err
		}
		nodes = all
	}
	if len(nodes) == 0 {
		return nil, nil, errors.New("no nodes")
	}
	var out []Target
	var failed []*NodeError
	shared := false
	for _, n := range nodes {
		st, err := cl.Storage(ctx, n, storage)
		switch {
		case err != nil:
			failed = append(failed, &NodeError{Node: n, Storage: storage, Err: err})
			continue
		case !st.Holds("vztmpl"):
			failed = append(failed, &NodeError{Node: n, Storage: storage,
				Err: fmt.Errorf("the storage does not take container templates (content: %s)", st.Content)})
			continue
		case st.IsShared() && shared:
			continue // written through an earlier node
		case st.IsShared():
			shared = true
		}
		out = append(out, Target{Node: n, Storage: storage})
	}
	return out, failed, nil
}

// Sync makes the targets hold want. It uploads what a storage lacks and
// with Prune removes older pve-image templates of the same images. A
// target that fails is reported in Report.Failed and the others are
// synced. A second sync with the same wants uploads and removes nothing.
func Sync(ctx context.Context, cl Client, targets []Target, want []Want, o SyncOptions) *Report {
	rep := &Report{}
	files := &opened{m: map[string]*openedFile{}}
	for _, t := range targets {
		evs, err := syncTarget(ctx, cl, t, want, files, o)
		rep.Events = append(rep.Events, evs...)
		if err != nil {
			rep.Failed = append(rep.Failed, &NodeError{Node: t.Node, Storage: t.Storage, Err: err})
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep.Unavailable = files.close()
	return rep
}

// syncTarget uploads what t lacks of want and prunes.
func syncTarget(ctx context.Context, cl Client, t Target, want []Want, files *opened, o SyncOptions) ([]Event, error) {
	vols, err := cl.Templates(ctx, t.Node, t.Storage)
	if err != nil {
		return nil, err
	}
	var events []Event
	for _, w := range want {
		ev := Event{Node: t.Node, Storage: t.Storage, Name: w.Name, Volid: t.Storage + ":vztmpl/" + w.Name, Action: Present}
		if !holds(vols, w.Name, w.Size) {
			ev.Action = WouldUpload
			if !o.DryRun {
				path, err := files.open(ctx, w)
				if err != nil {
					if ctx.Err() != nil {
						return events, ctx.Err()
					}
					continue // reported once, in Report.Unavailable
				}
				if err := upload(ctx, cl, File{Path: path, Name: w.Name, SHA256: w.SHA256, Size: w.Size}, t.Node, t.Storage, o.Progress); err != nil {
					return events, err
				}
				ev.Action = Uploaded
			}
			// What prune sees: the storage as it is (or would be) now.
			vols = append(vols, proxmox.Volume{Volid: ev.Volid, Size: w.Size, Ctime: math.MaxInt64})
		}
		events = append(events, ev)
	}
	if !o.Prune {
		return events, nil
	}
	for _, v := range PruneList(vols, want, o.Keep) {
		ev := Event{Node: t.Node, Storage: t.Storage, Name: v.Name(), Volid: v.Volid, Action: WouldRemove}
		if !o.DryRun {
			if err := cl.DeleteVolume(ctx, t.Node, t.Storage, v.Volid); err != nil {
				return events, fmt.Errorf("remove %s: %w", v.Volid, err)
			}
			ev.Action = Removed
		}
		events = append(events, ev)
	}
	return events, nil
}

// PruneList picks from vols the templates to remove: of those pve-image
// made (their names parse as template.StorageName's) for an image name and
// arch that want has, all but the wanted ones and the newest others, keep
// in all per image name and arch (the wanted ones counting first). Other
// volumes are never picked.
func PruneList(vols []proxmox.Volume, want []Want, keep int) []proxmox.Volume {
	type group struct{ name, arch string }
	wanted := map[string]bool{}
	groups := map[group]bool{}
	for _, w := range want {
		if info, ok := template.ParseStorageName(w.Name); ok {
			groups[group{info.Name, info.Arch}] = true
			wanted[w.Name] = true
		}
	}
	byGroup := map[group][]proxmox.Volume{}
	for _, v := range vols {
		info, ok := template.ParseStorageName(v.Name())
		if !ok {
			continue
		}
		g := group{info.Name, info.Arch}
		if groups[g] {
			byGroup[g] = append(byGroup[g], v)
		}
	}
	var out []proxmox.Volume
	for _, vs := range byGroup {
		kept := 0
		for _, v := range vs {
			if wanted[v.Name()] {
				kept++
			}
		}
		// Newest first; equal times by name, so the choice is stable.
		slices.SortFunc(vs, func(a, b proxmox.Volume) int {
			return cmp.Or(cmp.Compare(b.Ctime, a.Ctime), cmp.Compare(b.Volid, a.Volid))
		})
		for _, v := range vs {
			switch {
			case wanted[v.Name()]:
			case kept < keep:
				kept++
			default:
				out = append(out, v)
			}
		}
	}
	slices.SortFunc(out, func(a, b proxmox.Volume) int { return cmp.Compare(a.Volid, b.Volid) })
	return out
}

// opened remembers the files Want.Open made available, so that a file
// uploaded to several storages is fetched once.
type opened struct {
	mu sync.Mutex
	m  map[string]*openedFile
}

type openedFile struct {
	path string
	done func()
	err  error
}

// open makes w's file available once; a failure is remembered, not tried
// again for the next storage.
func (o *opened) open(ctx context.Context, w Want) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if f, ok := o.m[w.Name]; ok {
		return f.path, f.err
	}
	f := &openedFile{}
	if w.Open == nil {
		f.err = errors.New("no file to upload")
	} else {
		f.path, f.done, f.err = w.Open(ctx)
	}
	if f.err != nil {
		if ctx.Err() != nil {
			return "", f.err // not remembered: the sync is over anyway
		}
		f.err = fmt.Errorf("%s: %w", w.Name, f.err)
	}
	o.m[w.Name] = f
	return f.path, f.err
}

// close releases the files and returns the failures, in name order.
func (o *opened) close() []error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(o.m)) {
		f := o.m[name]
		if f.done != nil {
			f.done()
		}
		if f.err != nil {
			errs = append(errs, f.err)
		}
	}
	return errs
}
