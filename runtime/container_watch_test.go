package runtime

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// fakeInit is a container's init whose files live under root, as the
// node sees them through /proc/PID/root.
type fakeInit struct {
	root    string
	alive   bool
	signals []syscall.Signal
}

func (f *fakeInit) path(p string) string { return filepath.Join(f.root, p) }

func (f *fakeInit) ReadFile(p string, max int64) ([]byte, error) {
	b, err := os.ReadFile(f.path(p))
	if err == nil && int64(len(b)) > max {
		return nil, errors.New("too large")
	}
	return b, err
}

func (f *fakeInit) ReadAt(p string, off int64, max int) ([]byte, error) {
	fd, err := os.Open(f.path(p))
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	b := make([]byte, max)
	n, err := fd.ReadAt(b, off)
	if err == io.EOF {
		err = nil
	}
	return b[:n], err
}

func (f *fakeInit) Exists(p string) (bool, error) {
	_, err := os.Stat(f.path(p))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

func (f *fakeInit) ReadDir(p string) ([]string, error) {
	entries, err := os.ReadDir(f.path(p))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, err
}

func (f *fakeInit) Alive() bool { return f.alive }

func (f *fakeInit) Signal(sig syscall.Signal) error {
	f.signals = append(f.signals, sig)
	if sig == syscall.SIGPWR {
		f.alive = false // a held init leaves on the halt signal
	}
	return nil
}

func (f *fakeInit) Close() error { return nil }

func (f *fakeInit) write(t *testing.T, p, content string, appendTo bool) {
	t.Helper()
	full := f.path(p)
	os.MkdirAll(filepath.Dir(full), 0o755)
	flag := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if appendTo {
		flag = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	fd, err := os.OpenFile(full, flag, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fd.WriteString(content)
	fd.Close()
}

// watchedServer is a server with one running supervised container whose
// init is fake.
func watchedServer(t *testing.T) (*Server, *containerRecord, *fakeInit) {
	t.Helper()
	dir := t.TempDir()
	s, err := New(Config{StateDir: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	c := &containerRecord{ID: strings.Repeat("c", 64), VMID: 123, State: runtimeapi.ContainerState_CONTAINER_RUNNING, Supervised: true,
		LogPath: filepath.Join(dir, "pods", "app", "0.log"), Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		TerminationLog: &fileMapping{Container: "/dev/termination-log", Host: filepath.Join(dir, "termination")}}
	if err := s.state.update(func(st *stateFile) error { st.Containers[c.ID] = c; return nil }); err != nil {
		t.Fatal(err)
	}
	f := &fakeInit{root: filepath.Join(dir, "ct"), alive: true}
	s.watches.put(c.ID, &watched{init: f})
	return s, c, f
}

const ts = "2026-12-06T01:15:57.910170993Z "

func TestCopyLogs(t *testing.T) {
	s, c, f := watchedServer(t)
	w := s.watches.get(c.ID)
	read := func() string {
		b, _ := os.ReadFile(c.LogPath)
		return string(b)
	}

	// Whole lines go over; a line still being written waits.
	f.write(t, runspec.LogPath(0), ts+"stdout F one\n"+ts+"stderr F two\n"+ts+"stdout F thr", false)
	s.copyLogs(c, w)
	if got := read(); got != ts+"stdout F one\n"+ts+"stderr F two\n" {
		t.Fatalf("after the first copy:\n%s", got)
	}
	f.write(t, runspec.LogPath(0), "ee\n", true)
	s.copyLogs(c, w)
	if got := read(); !strings.HasSuffix(got, ts+"stdout F three\n") {
		t.Fatalf("the rest of a line:\n%s", got)
	}

	// A next segment: the rest of this one, then on to it.
	f.write(t, runspec.LogPath(0), ts+"stdout F four\n", true)
	f.write(t, runspec.LogPath(1), ts+"stdout F five\n", false)
	s.copyLogs(c, w)
	if got := read(); !strings.HasSuffix(got, "F four\n"+ts+"stdout F five\n") || w.cursor.Seq != 1 {
		t.Fatalf("across segments (cursor %+v):\n%s", w.cursor, got)
	}

	// Anything that is not a CRI log line is made one, so that kubelet
	// can read the file.
	f.write(t, runspec.LogPath(1), "not a log line\n", true)
	s.copyLogs(c, w)
	if got := read(); !regexp.MustCompile(`\n\S+Z stdout F not a log line\n$`).MatchString(got) {
		t.Fatalf("a foreign line:\n%s", got)
	}

	// A daemon that was away too long: the segments it had not read are
	// gone; it goes on from the oldest one left and says so.
	os.Remove(f.path(runspec.LogPath(1)))
	f.write(t, runspec.LogPath(3), ts+"stdout F six\n", false)
	f.write(t, runspec.LogPath(4), ts+"stdout F seven\n", false)
	s.copyLogs(c, w)
	if got := read(); !strings.Contains(got, "stderr F pve-image: some output of this container was lost") || !strings.HasSuffix(got, "F six\n"+ts+"stdout F seven\n") {
		t.Fatalf("after lost segments:\n%s", got)
	}

	// A chunk with no line end (a root program writing into the
	// segments) is copied as it is: the copy never stalls on it.
	f.write(t, runspec.LogPath(4), strings.Repeat("x", readChunk), true)
	f.write(t, runspec.LogPath(4), "\n"+ts+"stdout F after the blob\n", true)
	s.copyLogs(c, w)
	s.copyLogs(c, w)
	if got := read(); !strings.HasSuffix(got, ts+"stdout F after the blob\n") {
		t.Fatalf("after a chunk with no line end: ...%s", got[max(0, len(got)-200):])
	}

	// The position survives the daemon: a new follower copies nothing twice.
	if cur := s.readCursor(c.ID); cur != w.cursor {
		t.Fatalf("saved cursor %+v, want %+v", cur, w.cursor)
	}
	before := read()
	s.watches.put(c.ID, &watched{init: f, cursor: s.readCursor(c.ID)})
	s.copyLogs(c, s.watches.get(c.ID))
	if read() != before {
		t.Errorf("a restarted follower copied again:\n%s", read())
	}
}

// TestFollowCollectsExit: the exit record, the last output and the
// termination message are collected, then the init is let go.
func TestFollowCollectsExit(t *testing.T) {
	tests := []struct {
		name   string
		exit   runspec.Exit
		code   int32
		reason string
	}{
		{"success", runspec.Exit{Code: 0, FinishedAt: 1764982600000000000}, 0, "Completed"},
		{"failure", runspec.Exit{Code: 3, FinishedAt: 1764982600000000000}, 3, "Error"},
		{"signal", runspec.Exit{Code: 143, Signal: 15, FinishedAt: 1764982600000000000}, 143, "Error"},
		{"oom", runspec.Exit{Code: 137, Signal: 9, OOMKilled: true, FinishedAt: 1764982600000000000}, 137, "OOMKilled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, f := watchedServer(t)
			f.write(t, runspec.LogPath(0), ts+"stdout F last words\n", false)
			f.write(t, runspec.TerminationPath, strings.Repeat("m", runspec.MaxTerminationMessage), false)
			if s.follow(context.Background(), c.ID) {
				t.Fatal("exited before the program ended")
			}
			f.write(t, runspec.ExitPath, string(tt.exit.Marshal()), false)
			if !s.follow(context.Background(), c.ID) {
				t.Fatal("the exit record was not collected")
			}
			got := s.container(c.ID)
			if got.State != runtimeapi.ContainerState_CONTAINER_EXITED || got.ExitCode != tt.code || got.Reason != tt.reason || got.FinishedAt != tt.exit.FinishedAt {
				t.Errorf("record %v code %d reason %q finished %d", got.State, got.ExitCode, got.Reason, got.FinishedAt)
			}
			if len(f.signals) != 1 || f.signals[0] != syscall.SIGPWR {
				t.Errorf("the init got %v, want the halt signal once", f.signals)
			}
			if b, _ := os.ReadFile(c.TerminationLog.Host); len(b) != runspec.MaxTerminationMessage {
				t.Errorf("termination message of %d bytes, want kubelet's %d", len(b), runspec.MaxTerminationMessage)
			}
			if b, _ := os.ReadFile(c.LogPath); !strings.HasSuffix(string(b), "last words\n") {
				t.Errorf("log: %q", b)
			}
			if s.watches.get(c.ID) != nil {
				t.Error("still followed after the exit")
			}
		})
	}
}

// TestReopenLog: after kubelet moves the log away, lines go to a new file.
func TestReopenLog(t *testing.T) {
	s, c, f := watchedServer(t)
	w := s.watches.get(c.ID)
	f.write(t, runspec.LogPath(0), ts+"stdout F before\n", false)
	s.copyLogs(c, w)
	rotated := c.LogPath + ".20261206-011557"
	if err := os.Rename(c.LogPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := s.reopenLog(c.ID); err != nil {
		t.Fatal(err)
	}
	f.write(t, runspec.LogPath(0), ts+"stdout F after\n", true)
	s.copyLogs(c, w)
	old, _ := os.ReadFile(rotated)
	cur, _ := os.ReadFile(c.LogPath)
	if string(old) != ts+"stdout F before\n" || string(cur) != ts+"stdout F after\n" {
		t.Errorf("rotated %q, new %q", old, cur)
	}
}
