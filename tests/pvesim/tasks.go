package pvesim

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// task is a worker as PVE::RESTEnvironment fork_worker runs it: a UPID, a
// log, and an exit status read back from the log's last line.
type task struct {
	upid      string
	node      string
	typ, id   string
	user      string // as in the UPID: user@realm or user@realm!token
	pid       uint32
	pstart    uint32
	starttime int64

	// Guarded by Server.mu.
	lines    []string
	partial  string
	warnings int
	running  bool
	exit     string

	inject string // FailNextTask message for this task, if any
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// worker is what a task's function uses to log, as a Perl worker prints.
type worker struct {
	s   *Server
	t   *task
	ctx context.Context
}

// printf appends to the task log; like Perl's print, text without a final
// newline stays on the current line.
func (w *worker) printf(format string, args ...any) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.t.write(fmt.Sprintf(format, args...))
}

func (t *task) write(text string) {
	text = t.partial + text
	parts := strings.Split(text, "\n")
	t.lines = append(t.lines, parts[:len(parts)-1]...)
	t.partial = parts[len(parts)-1]
}

// warn is RESTEnvironment::warn: a "WARN: " line that makes a successful
// task end "WARNINGS: n".
func (w *worker) warn(format string, args ...any) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if w.t.partial != "" {
		w.t.write("\n")
	}
	w.t.write("WARN: " + strings.TrimRight(fmt.Sprintf(format, args...), "\n") + "\n")
	w.t.warnings++
}

// injected returns the failure FailNextTask asked for, at the point of the
// worker that calls it.
func (w *worker) injected() error {
	if w.t.inject != "" {
		return errors.New(w.t.inject)
	}
	return nil
}

// interrupted is how a worker sees DELETE /nodes/{node}/tasks/{upid} (the
// SIGTERM handler of fork_worker dies with "received interrupt").
func (w *worker) interrupted() error {
	if w.ctx.Err() != nil {
		return errors.New("received interrupt")
	}
	return nil
}

// startWorker is fork_worker: it returns the UPID at once and runs fn in
// the background on node.
func (s *Server) startWorker(node, typ, id string, p *principal, fn func(w *worker) error) string {
	ctx, cancel := context.WithCancel(s.ctx)
	s.mu.Lock()
	s.pidSeq++
	pid := s.pidSeq
	t := &task{
		node: node, typ: typ, id: id, user: p.user,
		pid: pid, pstart: pid*17 + 123456, starttime: time.Now().Unix(),
		running: true, ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	t.upid = fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", node, t.pid, t.pstart, t.starttime, typ, id, p.user)
	if msg, ok := s.failNext[typ]; ok {
		t.inject = msg
		delete(s.failNext, typ)
	}
	s.tasks[t.upid] = t
	if s.closed {
		// The simulator is closing: the worker never runs.
		t.write("TASK ERROR: received interrupt\n")
		t.running, t.exit = false, "received interrupt"
		close(t.done)
		cancel()
		s.mu.Unlock()
		return t.upid
	}
	s.workers.Add(1)
	s.mu.Unlock()

	go func() {
		defer s.workers.Done()
		defer close(t.done)
		defer cancel()
		w := &worker{s: s, t: t, ctx: ctx}
		err := runProtected(func() error { return fn(w) })
		if err != nil && ctx.Err() != nil && !strings.Contains(err.Error(), "received interrupt") {
			err = fmt.Errorf("received interrupt")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if t.partial != "" {
			t.write("\n")
		}
		switch {
		case err != nil:
			// fork_worker flattens the error onto one line.
			msg := strings.ReplaceAll(strings.TrimRight(err.Error(), "\n"), "\n", " ")
			t.write("TASK ERROR: " + msg + "\n")
			t.exit = msg
		case t.warnings > 0:
			t.write(fmt.Sprintf("TASK WARNINGS: %d\n", t.warnings))
			t.exit = fmt.Sprintf("WARNINGS: %d", t.warnings)
		default:
			t.write("TASK OK\n")
			t.exit = "OK"
		}
		t.running = false
	}()
	return t.upid
}

func runProtected(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pvesim internal error: %v", r)
		}
	}()
	return fn()
}

// upidRe is pve-common PVE::Tools upid_decode.
var upidRe = regexp.MustCompile(`^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s]+):([^:\s]*):([^:\s]+):$`)

type upidInfo struct {
	node, typ, id, user    string
	pid, pstart, starttime int64
}

func parseUPID(s string) (upidInfo, bool) {
	m := upidRe.FindStringSubmatch(s)
	if m == nil {
		return upidInfo{}, false
	}
	h := func(x string) int64 { n, _ := strconv.ParseInt(x, 16, 64); return n }
	return upidInfo{node: m[1], pid: h(m[3]), pstart: h(m[4]), starttime: h(m[5]), typ: m[6], id: m[7], user: m[8]}, true
}

// taskOwner is Tasks.pm check_task_user: a token sees its own tasks, a
// user sees their own and their tokens' tasks.
func taskOwner(taskUser string, p *principal) bool {
	if user, _, isToken := strings.Cut(taskUser, "!"); isToken {
		return p.user == taskUser || p.user == user
	}
	return p.user == taskUser
}

var upidSchema = schema{"node": nodeParam(), "upid": str().req()}

// lookupTask finds a task on the node handling the request. The task log
// only exists on the node that ran the task, so asking another node fails
// even though the UPID names the right node (proxmox.md §5).
func (s *Server) lookupTask(c *call) (*task, upidInfo, *apiError) {
	info, ok := parseUPID(c.p.get("upid"))
	if !ok {
		return nil, info, paramErr1("upid", "unable to parse worker upid")
	}
	s.mu.Lock()
	t := s.tasks[c.p.get("upid")]
	s.mu.Unlock()
	if t == nil || t.node != c.node {
		return nil, info, nil
	}
	return t, info, nil
}

// ownedTask is a task that exists on the node and that the caller owns or
// holds priv on the node for.
func (s *Server) ownedTask(c *call, priv string) (*task, upidInfo, *apiError) {
	t, info, err := s.lookupTask(c)
	if err != nil {
		return nil, info, err
	}
	if t == nil {
		return nil, info, paramErr1("upid", "no such task")
	}
	if !taskOwner(info.user, c.who) {
		if err := c.who.check("/nodes/"+c.node, priv); err != nil {
			return nil, info, err
		}
	}
	return t, info, nil
}

// taskStatus is pve-manager API2/Tasks.pm read_task_status.
func (s *Server) taskStatus(c *call) (any, error) {
	t, info, err := s.ownedTask(c, "Sys.Audit")
	if err != nil {
		return nil, err
	}
	res := map[string]any{
		"upid": t.upid, "node": info.node, "pid": info.pid, "pstart": info.pstart,
		"starttime": info.starttime, "type": info.typ, "id": info.id, "user": info.user,
	}
	if user, tok, ok := strings.Cut(info.user, "!"); ok {
		res["user"], res["tokenid"] = user, tok
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.running {
		res["status"] = "running"
	} else {
		res["status"] = "stopped"
		res["exitstatus"] = t.exit
	}
	return res, nil
}

var taskLogSchema = schema{
	"node": nodeParam(), "upid": str().req(),
	"start": integer().between("0", ""), "limit": integer().between("0", ""), "download": boolean(),
}

// taskLog is read_task_log with PVE::Tools::dump_logfile: 1-based line
// numbers, "total" is the number of lines, limit 0 means all.
func (s *Server) taskLog(c *call) (any, error) {
	t, info, err := s.lookupTask(c)
	if err != nil {
		return nil, err
	}
	if !taskOwner(info.user, c.who) {
		if err := c.who.check("/nodes/"+c.node, "Sys.Audit"); err != nil {
			return nil, err
		}
	}
	if c.p.get("download") == "1" {
		return nil, die("pvesim: log download is not simulated")
	}
	type line struct {
		N int    `json:"n"`
		T string `json:"t"`
	}
	if t == nil {
		// No such file on this node; dump_logfile reports it as a line.
		c.total = 1
		return []line{{1, "unable to open file - No such file or directory"}}, nil
	}
	start, _ := strconv.Atoi(c.p.get("start"))
	limit := 50
	if c.p.has("limit") {
		limit, _ = strconv.Atoi(c.p.get("limit"))
	}
	all := limit == 0
	s.mu.Lock()
	lines := append([]string(nil), t.lines...)
	s.mu.Unlock()
	out := []line{}
	for i, l := range lines {
		if i < start {
			continue
		}
		if !all {
			if limit <= 0 {
				continue
			}
			limit--
		}
		out = append(out, line{i + 1, l})
	}
	c.total = len(lines)
	if len(lines) == 0 {
		c.total = 1
		out = append(out, line{1, "no content"})
	}
	return out, nil
}

// taskStop is stop_task: the owner, or Sys.Modify on the node.
func (s *Server) taskStop(c *call) (any, error) {
	t, _, err := s.ownedTask(c, "Sys.Modify")
	if err != nil {
		return nil, err
	}
	t.cancel()
	return nil, nil
}

// FailNextTask makes the next worker of type typ (vzcreate, imgcopy, ...)
// fail with msg, after the partial work a real failure would leave behind.
func (s *Server) FailNextTask(typ, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext[typ] = msg
}
