package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/imgconv/runspec"
	"github.com/pve-image/pve-image/lxcnode"
)

// A supervised container's pve-image-init writes the program's output
// into log segments and, when it ends, its exit status, all in a tmpfs
// inside the container, and then holds the container (PID 1 stays) until
// the daemon has both: the watcher reads them from the node through
// lxcnode, copies the output into kubelet's log file, records the exit and
// sends the init the halt signal. A daemon that was down finds the held
// containers when it is back, so no exit status is lost.

const (
	// watchPeriod is how often the watcher looks at every supervised
	// container: a few file opens each, so 50 idle pods cost nothing.
	watchPeriod = 250 * time.Millisecond
	// readChunk bounds one read of a log segment; a tick reads at most
	// maxChunks of them per container, so that one chatty container
	// cannot starve the others.
	readChunk = 1 << 20
	maxChunks = 8
	// releaseWait bounds the wait for a released init to leave.
	releaseWait = time.Second
)

// containerInit is a running container's init as the watcher reaches it
// (lxcnode.Init on the node): its files, and signals.
type containerInit interface {
	ReadFile(path string, max int64) ([]byte, error)
	ReadAt(path string, off int64, max int) ([]byte, error)
	Exists(path string) (bool, error)
	ReadDir(path string) ([]string, error)
	Alive() bool
	Signal(sig syscall.Signal) error
	Close() error
}

// watched is what the daemon holds of a running supervised container.
type watched struct {
	init   containerInit
	log    *os.File // kubelet's log file; nil until written
	cursor logCursor
	once   sync.Once
}

func (w *watched) close() {
	w.once.Do(func() {
		if w.init != nil {
			w.init.Close()
		}
		if w.log != nil {
			w.log.Close()
		}
	})
}

// watches are the supervised containers being followed, by container ID.
type watches struct {
	mu sync.Mutex
	m  map[string]*watched
}

func (ws *watches) get(id string) *watched {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.m[id]
}

func (ws *watches) put(id string, w *watched) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.m == nil {
		ws.m = map[string]*watched{}
	}
	if old := ws.m[id]; old != nil && old != w {
		old.close()
	}
	ws.m[id] = w
}

func (ws *watches) drop(id string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if w := ws.m[id]; w != nil {
		w.close()
		delete(ws.m, id)
	}
}

func (ws *watches) ids() []string {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	var out []string
	for id := range ws.m {
		out = append(out, id)
	}
	return out
}

// watch follows every running supervised container until ctx ends.
func (s *Server) watch(ctx context.Context) {
	t := time.NewTicker(watchPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, id := range s.watches.ids() {
				s.watches.drop(id)
			}
			return
		case <-t.C:
		}
		var ids []string
		s.state.view(func(st *stateFile) {
			for id, c := range st.Containers {
				if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING && c.Supervised {
					ids = append(ids, id)
				}
			}
		})
		for _, id := range s.watches.ids() {
			if c := s.container(id); c == nil || c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				// Under the container's lock: a call may still be using
				// the watch (a collect signalling the init).
				if unlock, ok := s.tryLockContainer(id); ok {
					s.watches.drop(id)
					unlock()
				}
			}
		}
		for _, id := range ids {
			// A call that holds the container (a stop waiting out its
			// grace period) follows it itself.
			unlock, ok := s.tryLockContainer(id)
			if !ok {
				continue
			}
			s.follow(ctx, id)
			unlock()
		}
	}
}

// follow copies a running supervised container's new output and, once
// its program has ended, records how. It reports whether the container
// has exited. The caller holds the container's lock.
func (s *Server) follow(ctx context.Context, id string) (exited bool) {
	c := s.container(id)
	if c == nil || c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		s.watches.drop(id)
		return true
	}
	w := s.watches.get(id)
	if w == nil {
		init, err := s.cfg.LXC.Init(ctx, strconv.Itoa(c.VMID))
		if errors.Is(err, lxcnode.ErrNotRunning) {
			return s.lost(ctx, c)
		}
		if err != nil {
			s.log.Warn("container init", "container", id[:12], "vmid", c.VMID, "err", err)
			return false
		}
		w = &watched{init: init, cursor: s.readCursor(id)}
		s.watches.put(id, w)
	}
	s.copyLogs(c, w)
	b, err := w.init.ReadFile(runspec.ExitPath, 4096)
	switch {
	case err == nil:
		var e runspec.Exit
		if err := json.Unmarshal(b, &e); err != nil {
			e = runspec.Exit{Code: unknownExitCode}
			s.log.Warn("unreadable exit record", "container", id[:12], "err", err)
		}
		s.collect(c, w, e, "")
		return true
	case errors.Is(err, os.ErrNotExist):
		if w.init.Alive() {
			return false
		}
	case !errors.Is(err, lxcnode.ErrNotRunning):
		s.log.Warn("exit record", "container", id[:12], "err", err)
		return false
	}
	// The init is gone without an exit record: the container was stopped
	// from outside, or killed.
	s.watches.drop(id)
	return s.lost(ctx, c)
}

// collect records a supervised container's exit: the rest of its output,
// its termination message, its status; then lets its init end.
func (s *Server) collect(c *containerRecord, w *watched, e runspec.Exit, message string) {
	s.copyLogs(c, w)
	if t := c.TerminationLog; t != nil {
		// The init's copy, read as the program's user: never a path the
		// program could point elsewhere.
		if msg, err := w.init.ReadFile(runspec.TerminationPath, runspec.MaxTerminationMessage); err == nil {
			if err := os.WriteFile(t.Host, msg, 0o644); err != nil {
				s.log.Warn("termination message", "container", c.ID[:12], "path", t.Host, "err", err)
			}
		}
	}
	reason := "Completed"
	switch {
	case e.OOMKilled:
		reason = "OOMKilled"
	case e.Code != 0:
		reason = "Error"
	}
	if e.FinishedAt == 0 {
		e.FinishedAt = time.Now().UnixNano()
	}
	err := s.updateContainer(c.ID, func(r *containerRecord) {
		r.State, r.ExitCode, r.FinishedAt, r.Reason, r.Message = runtimeapi.ContainerState_CONTAINER_EXITED, int32(e.Code), e.FinishedAt, reason, message
	})
	if err != nil {
		// Keep the container held: the next look records it again.
		s.log.Warn("recording an exit", "container", c.ID[:12], "err", err)
		return
	}
	s.log.Info("container exited", "container", c.ID[:12], "vmid", c.VMID, "code", e.Code, "reason", reason)
	if err := w.init.Signal(syscall.SIGPWR); err != nil && !errors.Is(err, lxcnode.ErrNotRunning) {
		s.log.Warn("releasing a container", "vmid", c.VMID, "err", err)
	}
	// The init leaves at once; waiting for it keeps a remove that follows
	// from racing the container's stop. One that stays (a program that
	// wrote an exit record of its own and ignores its StopSignal) is
	// stopped hard: an exited container must not keep the pod's address.
	for deadline := time.Now().Add(releaseWait); w.init.Alive() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if w.init.Alive() {
		if err := s.hardStop(context.Background(), c); err != nil {
			s.log.Warn("stopping an exited container", "vmid", c.VMID, "err", err)
		}
	}
	s.watches.drop(c.ID)
}

// lost handles a supervised container whose init is gone without an exit
// status: Proxmox says whether it stopped (then the status is unknown, as
// containerd reports a lost task) or never ran here.
func (s *Server) lost(ctx context.Context, c *containerRecord) bool {
	byID, taken, err := s.list.get(ctx, s.listNode)
	if err != nil || c.StartedAt > taken.UnixNano() {
		return false
	}
	pc, ok := byID[c.VMID]
	if ok && pc.Status == "running" {
		return false // not yet seen by lxc-info, or started again
	}
	s.markGone(c.ID, ok)
	return true
}

// markGone records the end of a container whose exit status nobody saw.
func (s *Server) markGone(id string, exists bool) {
	s.updateContainer(id, func(c *containerRecord) {
		if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			return
		}
		c.FinishedAt, c.ExitCode = time.Now().UnixNano(), unknownExitCode
		if exists {
			c.State, c.Reason = runtimeapi.ContainerState_CONTAINER_EXITED, "Unknown"
			c.Message = "the Proxmox container " + strconv.Itoa(c.VMID) + " stopped without its init reporting the program's exit status (stopped from outside pve-image, or its node restarted)"
			if !c.Supervised {
				c.Message = "the container's init ended; Proxmox does not report its exit status (the console shows it: pct console " + strconv.Itoa(c.VMID) + ")"
			}
		} else {
			c.State, c.Reason, c.Message = runtimeapi.ContainerState_CONTAINER_UNKNOWN, "Gone", "the Proxmox container "+strconv.Itoa(c.VMID)+" no longer exists"
		}
	})
	s.watches.drop(id)
}

// copyLogs copies the complete lines written since the cursor into
// kubelet's log file, segment after segment, and saves the cursor after
// each chunk: a daemon killed in between copies at most one chunk twice.
func (s *Server) copyLogs(c *containerRecord, w *watched) {
	if c.LogPath == "" {
		return
	}
	for range maxChunks {
		seg := runspec.LogPath(w.cursor.Seq)
		// A next segment means this one is complete.
		next, _ := w.init.Exists(runspec.LogPath(w.cursor.Seq + 1))
		data, err := w.init.ReadAt(seg, w.cursor.Offset, readChunk)
		if errors.Is(err, os.ErrNotExist) {
			if !s.skipLostSegments(c, w) {
				return
			}
			continue
		}
		if err != nil {
			return
		}
		end := bytes.LastIndexByte(data, '\n') + 1
		out := data[:end]
		if end == 0 && (len(data) == readChunk || next && len(data) > 0) {
			// A chunk with no line end (not what pve-image-init writes)
			// goes over as it is rather than stopping the copy for good.
			out, end = append(data[:len(data):len(data)], '\n'), len(data)
		}
		if end > 0 {
			s.writeLog(c, w, out)
			w.cursor.Offset += int64(end)
			s.writeCursor(c.ID, w.cursor)
		}
		if len(data) >= readChunk {
			continue
		}
		if !next {
			return
		}
		w.cursor = logCursor{Seq: w.cursor.Seq + 1}
		s.writeCursor(c.ID, w.cursor)
	}
}

// skipLostSegments moves the cursor to the oldest segment still there
// when the one it points at is gone (the daemon was away while the
// program wrote more than the init keeps) and says so in the log.
func (s *Server) skipLostSegments(c *containerRecord, w *watched) bool {
	names, err := w.init.ReadDir(runspec.StateDir)
	if err != nil {
		return false
	}
	oldest := -1
	for _, n := range names {
		v, ok := strings.CutPrefix(n, runspec.LogNamePrefix)
		if seq, err := strconv.Atoi(v); ok && err == nil && seq > w.cursor.Seq && (oldest < 0 || seq < oldest) {
			oldest = seq
		}
	}
	if oldest < 0 {
		return false
	}
	if w.cursor.Seq > 0 || w.cursor.Offset > 0 {
		s.writeLog(c, w, []byte(time.Now().UTC().Format(time.RFC3339Nano)+" stderr F pve-image: some output of this container was lost while pve-image cri was away\n"))
	}
	w.cursor = logCursor{Seq: oldest}
	s.writeCursor(c.ID, w.cursor)
	return true
}

// criLine is a line of the CRI log format: kubelet's parser takes nothing
// else, and the init's segments are inside the container, where anything
// may be written.
var criLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d) (stdout|stderr) [PF] `)

// writeLog appends lines to kubelet's log file, opened (and created) on
// first use and again after ReopenContainerLog.
func (s *Server) writeLog(c *containerRecord, w *watched, lines []byte) {
	if w.log == nil {
		if err := os.MkdirAll(filepath.Dir(c.LogPath), 0o755); err != nil {
			s.log.Warn("container log", "path", c.LogPath, "err", err)
			return
		}
		f, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			s.log.Warn("container log", "path", c.LogPath, "err", err)
			return
		}
		w.log = f
	}
	var out []byte
	for len(lines) > 0 {
		i := bytes.IndexByte(lines, '\n') + 1
		line := lines[:i]
		lines = lines[i:]
		if !criLine.Match(line) {
			out = append(out, time.Now().UTC().Format(time.RFC3339Nano)+" stdout F "...)
		}
		out = append(out, line...)
	}
	if _, err := w.log.Write(out); err != nil {
		s.log.Warn("container log", "path", c.LogPath, "err", err)
	}
}

// The log position of each followed container is kept in a small file of
// its own beside the state, rewritten after every copy: a daemon that is
// killed copies at most the last lines twice, never loses them, and the
// state file is not rewritten for every line a container prints.

func (s *Server) cursorPath(id string) string {
	return filepath.Join(s.cfg.StateDir, "logs", id+".cursor")
}

func (s *Server) readCursor(id string) logCursor {
	var c logCursor
	if b, err := os.ReadFile(s.cursorPath(id)); err == nil {
		json.Unmarshal(b, &c)
	}
	return c
}

func (s *Server) writeCursor(id string, c logCursor) {
	p := s.cursorPath(id)
	b, _ := json.Marshal(c)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
		tmp := p + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, p)
		}
		if err != nil {
			s.log.Warn("log position", "container", id[:12], "err", err)
		}
	}
}

// reopenLog closes kubelet's log file of a followed container, so that the
// next line goes into a new file at the same path (kubelet rotated it).
func (s *Server) reopenLog(id string) error {
	w := s.watches.get(id)
	if w == nil {
		return fmt.Errorf("container %s is not followed", id)
	}
	if w.log != nil {
		w.log.Close()
		w.log = nil
	}
	c := s.container(id)
	if c == nil || c.LogPath == "" {
		return nil
	}
	f, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	w.log = f
	return nil
}
