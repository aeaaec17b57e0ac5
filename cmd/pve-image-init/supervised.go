package main

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// Supervision (runspec.EnvSupervised, set by pve-image's CRI runtime): the
// program's output goes into log segments in runspec.StateDir, its end
// into runspec.ExitPath, and the init holds the container until the
// runtime, which reads both from the node, sends the halt signal. The
// runtime owns the stop grace period, so the init never kills on a timer
// of its own here.

// stateSize bounds the tmpfs of runspec.StateDir: two log segments and
// the small files, so that a container whose runtime is away cannot
// spend more memory than this on its output.
const stateSize = 2*runspec.LogSegmentSize + 1<<20

// sink is the supervised container's log, set once by startSupervision
// before anything else runs: logf writes the init's own messages there
// too, so that they show in kubectl logs beside the program's.
var sink *logWriter

// startSupervision mounts the state directory and opens the first log
// segment.
func startSupervision() error {
	if err := os.MkdirAll(runspec.StateDir, 0o700); err != nil {
		return err
	}
	if !mountPoints()[runspec.StateDir] {
		if err := syscall.Mount("tmpfs", runspec.StateDir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC,
			"mode=0700,size="+strconv.Itoa(stateSize)); err != nil {
			return err
		}
	}
	w := &logWriter{dir: runspec.StateDir, seq: -1}
	if err := w.rotate(); err != nil {
		return err
	}
	sink = w
	return nil
}

// logWriter appends CRI log lines to the current segment in dir.
type logWriter struct {
	dir  string
	max  int64 // segment size; runspec.LogSegmentSize when 0
	mu   sync.Mutex
	seq  int
	f    *os.File
	size int64
}

// rotate starts the next segment and removes the one before the previous,
// which the runtime has read unless it is far behind.
func (w *logWriter) rotate() error {
	f, err := os.OpenFile(w.dir+"/"+runspec.LogName(w.seq+1), os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if w.f != nil {
		w.f.Close()
	}
	w.seq++
	w.f, w.size = f, 0
	if w.seq >= 2 {
		os.Remove(w.dir + "/" + runspec.LogName(w.seq-2))
	}
	return nil
}

// line writes one CRI log line: partial lines (cut at the reader's buffer)
// are tagged P, whole ones F, as containerd writes them.
func (w *logWriter) line(stream string, partial bool, text []byte) {
	tag := " F "
	if partial {
		tag = " P "
	}
	b := make([]byte, 0, len(text)+64)
	b = time.Now().UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, stream...)
	b = append(b, tag...)
	b = append(b, text...)
	b = append(b, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	limit := w.max
	if limit == 0 {
		limit = runspec.LogSegmentSize
	}
	if w.size+int64(len(b)) > limit && w.size > 0 {
		if err := w.rotate(); err != nil {
			return
		}
	}
	n, _ := w.f.Write(b)
	w.size += int64(n)
}

func (w *logWriter) last() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seq
}

// maxLine is where long lines are cut into partial ones (containerd's
// buffer size).
const maxLine = 16 << 10

// capture copies what the program writes to r into the log as stream,
// and on to the console, until the last writer closes it.
func capture(r io.ReadCloser, stream string, console io.Writer, log *logWriter, done *sync.WaitGroup) {
	defer done.Done()
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLine)
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			console.Write(b)
			whole := b[len(b)-1] == '\n'
			if whole {
				b = b[:len(b)-1]
			}
			// A line cut by the buffer is partial; the rest of an output
			// that ends without a newline is a whole line, as containerd
			// writes it.
			log.line(stream, err == bufio.ErrBufferFull, b)
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// outputPipes gives the program pipes for stdout and stderr whose other
// ends capture reads.
type outputPipes struct {
	stdout, stderr *os.File // the program's ends
	done           sync.WaitGroup
}

func newOutputPipes() (*outputPipes, error) {
	p := &outputPipes{}
	or, ow, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	er, ew, err := os.Pipe()
	if err != nil {
		or.Close()
		ow.Close()
		return nil, err
	}
	p.stdout, p.stderr = ow, ew
	p.done.Add(2)
	go capture(or, "stdout", os.Stdout, sink, &p.done)
	go capture(er, "stderr", os.Stderr, sink, &p.done)
	return p, nil
}

// closeOurEnds closes the program's ends in the init, so that the readers
// see EOF once the program and its children are gone.
func (p *outputPipes) closeOurEnds() {
	p.stdout.Close()
	p.stderr.Close()
}

// wait waits for the readers, at most d: a process that escaped the
// final kill (another session holding the pipe) must not keep the exit
// status from being reported.
func (p *outputPipes) wait(d time.Duration) {
	c := make(chan struct{})
	go func() { p.done.Wait(); close(c) }()
	select {
	case <-c:
	case <-time.After(d):
	}
}

// haltHold bounds the hold after a halt that did not come from the
// runtime (pct shutdown, a node going down): then nobody may collect, and
// Proxmox waits for the container to stop.
const haltHold = 5 * time.Second

// report records how the program ended and holds the container until the
// runtime has read it and sent the halt signal (at most haltHold after a
// halt from elsewhere). The signal is watched before the record appears,
// so a release that follows it at once is not lost; a record that cannot
// be written is not waited for.
func report(e runspec.Exit, halted bool) {
	sigs := make(chan os.Signal, 4)
	notifyHalt(sigs)
	if !writeExit(e) {
		return
	}
	var limit <-chan time.Time
	if halted {
		limit = time.After(haltHold)
	}
	select {
	case <-sigs:
	case <-limit:
	}
}

// writeExit records how the program ended, atomically.
func writeExit(e runspec.Exit) bool {
	tmp := runspec.ExitPath + ".tmp"
	if err := os.WriteFile(tmp, e.Marshal(), 0o600); err != nil {
		logf("writing the exit status: %v", err)
		return false
	}
	if err := os.Rename(tmp, runspec.ExitPath); err != nil {
		logf("writing the exit status: %v", err)
		return false
	}
	return true
}

// failEarly reports a failure before the program could start: in a
// supervised container as its exit status, held like any other.
func failEarly(rt *runtimeEnv, code int) int {
	if rt == nil || !rt.supervised || sink == nil {
		return code
	}
	report(runspec.Exit{Code: code, FinishedAt: time.Now().UnixNano(), LastLog: sink.last()}, false)
	return code
}

// oomKills reads how many processes the kernel's OOM killer has killed in
// the container's memory cgroup: memory.events on cgroup v2, the
// oom_control of the memory controller on v1.
func oomKills() (int64, bool) {
	for _, p := range []string{"/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if n, ok := parseOOMKills(string(b)); ok {
			return n, true
		}
	}
	return 0, false
}

func parseOOMKills(s string) (int64, bool) {
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// setupFiles writes the files kubelet means the program to see: /etc/hosts
// (kubelet's, with the pod's address and host aliases), /etc/resolv.conf
// (the pod's DNS) and an empty termination log anyone may write. A
// symlink in their place (resolv.conf often is one) is replaced: its
// target may not exist in this container.
func setupFiles(rt *runtimeEnv) {
	if rt.hasHosts {
		replaceFile("/etc/hosts", rt.hosts, 0o644)
	}
	if rt.hasResolv {
		replaceFile("/etc/resolv.conf", rt.resolv, 0o644)
	}
	if p := rt.terminationLog; p != "" {
		if err := os.MkdirAll(dirOf(p), 0o755); err != nil {
			logf("termination log %s: %v", p, err)
			return
		}
		replaceFile(p, "", 0o666)
	}
}

func replaceFile(p, content string, mode os.FileMode) {
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		os.Remove(p)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		logf("write %s: %v", p, err)
		return
	}
	// WriteFile's mode is cut by the umask.
	os.Chmod(p, mode)
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "/"
}
