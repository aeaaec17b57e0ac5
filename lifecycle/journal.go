package lifecycle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Journal is an update or rollback of one container in progress: the plan
// and every step, each recorded before it is taken. Steps are data, and
// each can be taken again with the same result (it first looks at what
// Proxmox has), so resuming after a crash at any point is the same loop as
// the first run: take the first step not done.
type Journal struct {
	Version int       `json:"version"`
	ID      string    `json:"id"`   // the operation, in archive notes and the record
	Kind    string    `json:"kind"` // update, rollback
	Node    string    `json:"node"`
	VMID    int       `json:"vmid"`
	Started time.Time `json:"started"`

	// Temp is the container pve-image makes for the operation: it holds
	// the volumes meanwhile and, for an update, is made from the new
	// image so that its root file system can be archived. 0 until chosen.
	Temp int `json:"temp"`
	// TempCreate are its create options (ostemplate, rootfs, ...), After
	// what is set right after creation (entrypoint, env, cmode).
	TempCreate map[string]string `json:"tempCreate"`
	TempAfter  map[string]string `json:"tempAfter,omitempty"`

	BackupStorage string `json:"backupStorage"`
	// Source is the archive restored over the container: made from Temp
	// for an update ("" until then), the rollback point for a rollback.
	Source string `json:"source,omitempty"`
	// Undo is the archive of the container before the operation, made
	// after its volumes are parked: what a failure restores.
	Undo string `json:"undo,omitempty"`
	// Restore are the parameters of the restore of Source: the new
	// config in full (it replaces the old). The description is Record
	// over UserDescription, with Undo as the rollback point (updates).
	Restore         map[string]string `json:"restore"`
	UserDescription string            `json:"userDescription"`
	Record          Record            `json:"record"`
	// UndoRestore are the parameters of a restore of Undo: the root disk
	// and the bind mounts (restores take no mount points from archives).
	UndoRestore map[string]string `json:"undoRestore"`

	// Volumes are the container's volumes, moved to Temp and back.
	Volumes []ParkedVolume `json:"volumes,omitempty"`
	// Added are volumes the restore of Source makes (a new image's new
	// VOLUME paths): on an undo they are kept as unused volumes.
	Added []ParkedVolume `json:"added,omitempty"`

	WasRunning    bool          `json:"wasRunning"`
	HealthTimeout time.Duration `json:"healthTimeout"`
	StopTimeout   int           `json:"stopTimeout"`
	// DeleteAfter is an archive to remove once the operation succeeded:
	// the previous rollback point, which the new one replaces.
	DeleteAfter string `json:"deleteAfter,omitempty"`
	// Summary says what the operation does, for messages.
	Summary string `json:"summary"`

	Phase string `json:"phase"` // forward, undo, done
	Steps []Step `json:"steps"`
	// Failure is why the forward phase failed, once it did.
	Failure string `json:"failure,omitempty"`
}

// ParkedVolume is a volume the operation moves: its key on the container
// (Key), its key on Temp while parked (TempKey), the key it goes to on the
// container when the operation succeeds (Forward: Key for an update; a
// rollback puts volumes the old image did not have to unusedN) and, for
// Added volumes, the key it goes to when the operation is undone (Back,
// an unusedN: the data is kept, mounted nowhere).
type ParkedVolume struct {
	Key     string `json:"key"`
	TempKey string `json:"tempKey"`
	Forward string `json:"forward,omitempty"`
	Back    string `json:"back,omitempty"`
	// Volid is the volume when planned (Proxmox renames it on each move),
	// or for an Added volume the mount point it is made as.
	Volid string `json:"volid"`
}

// Step is one Proxmox step of a Journal.
type Step struct {
	Op   string `json:"op"`
	Arg  string `json:"arg,omitempty"` // a volume key, an archive role
	Done bool   `json:"done"`
}

func (s Step) String() string {
	if s.Arg != "" {
		return s.Op + " " + s.Arg
	}
	return s.Op
}

const journalVersion = 1

// journalStore keeps journals in a directory, one per container, each
// written whole to a temporary file, synced and renamed into place, so
// that a crash leaves the old journal or the new one.
type journalStore struct{ dir string }

func (s journalStore) path(vmid int) string {
	return filepath.Join(s.dir, strconv.Itoa(vmid)+".json")
}

// load reads the journal of vmid; nil when there is none.
func (s journalStore) load(vmid int) (*Journal, error) {
	b, err := os.ReadFile(s.path(vmid))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the journal of CT %d: %w", vmid, err)
	}
	var j Journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("journal %s is damaged: %w; it says what an interrupted update did: read it, put CT %d right by hand and remove it", s.path(vmid), err, vmid)
	}
	if j.Version != journalVersion {
		return nil, fmt.Errorf("journal %s has version %d; this pve-image reads version %d", s.path(vmid), j.Version, journalVersion)
	}
	return &j, nil
}

// save writes j durably.
func (s journalStore) save(j *Journal) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, ".journal-*")
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path(j.VMID))
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		return fmt.Errorf("journal of CT %d: %w", j.VMID, err)
	}
	return nil
}

// remove drops a finished journal.
func (s journalStore) remove(vmid int) error {
	if err := os.Remove(s.path(vmid)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the journal of CT %d: %w", vmid, err)
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// lock takes the container's lock file, so that two pve-image processes on
// this machine never work on one container at once. The kernel drops it
// when the process dies, so a killed update leaves no stale lock.
func (s journalStore) lock(vmid int) (release func(), err error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	p := filepath.Join(s.dir, strconv.Itoa(vmid)+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another pve-image is updating or rolling back CT %d (lock %s); wait for it to finish", vmid, p)
		}
		return nil, fmt.Errorf("journal lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}
