package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// TestCaptureWritesCRILines: whole lines are F, a line longer than the
// buffer is cut into P parts and an F end, output without a final newline
// still ends in an F line, and both streams keep their names.
func TestCaptureWritesCRILines(t *testing.T) {
	dir := t.TempDir()
	w := &logWriter{dir: dir, seq: -1}
	if err := w.rotate(); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", maxLine+10)
	var console strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	capture(io.NopCloser(strings.NewReader("hello world\n"+long+"\nno newline")), "stdout", &consoleWriter{b: &console}, w, &wg)
	wg.Add(1)
	capture(io.NopCloser(strings.NewReader("oops\n")), "stderr", io.Discard, w, &wg)
	wg.Wait()
	b, err := os.ReadFile(filepath.Join(dir, runspec.LogName(0)))
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (stdout|stderr) ([PF]) (.*)$`)
	var got []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("not a CRI log line: %q", l)
		}
		got = append(got, m[2]+" "+m[3]+" "+m[4])
	}
	want := []string{"stdout F hello world", "stdout P " + long[:maxLine], "stdout F " + long[maxLine:], "stdout F no newline", "stderr F oops"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("log lines\n got %.200q\nwant %.200q", got, want)
	}
	if console.String() != "hello world\n"+long+"\nno newline" {
		t.Errorf("the console got %d bytes, not the output as written", console.Len())
	}
}

type consoleWriter struct{ b *strings.Builder }

func (c *consoleWriter) Write(p []byte) (int, error) { return c.b.Write(p) }

// TestLogRotationKeepsTwoSegments: a segment that would pass its size
// starts the next, and the one before the previous is removed.
func TestLogRotationKeepsTwoSegments(t *testing.T) {
	dir := t.TempDir()
	w := &logWriter{dir: dir, seq: -1, max: 200}
	if err := w.rotate(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		w.line("stdout", false, []byte(strings.Repeat("a", 60)))
	}
	if w.last() < 3 {
		t.Fatalf("only %d rotations for 20 lines of 100 bytes in segments of 200", w.last())
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	want := []string{runspec.LogName(w.last() - 1), runspec.LogName(w.last())}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("segments %v after %d rotations", names, w.last())
	}
}

func TestParseOOMKills(t *testing.T) {
	for in, want := range map[string]int64{
		"low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n": 2, // cgroup v2 memory.events
		"oom_kill_disable 0\nunder_oom 0\noom_kill 7\n":               7, // v1 memory.oom_control
	} {
		if n, ok := parseOOMKills(in); !ok || n != want {
			t.Errorf("parseOOMKills(%q) = %d, %v", in, n, ok)
		}
	}
	if _, ok := parseOOMKills("oom 1\n"); ok {
		t.Error("a file without oom_kill parsed")
	}
}
