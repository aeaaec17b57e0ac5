package cache

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRemoveDeadWork: work files and directories whose writer is gone
// (closed, or never locked) are removed; a live writer's stay, whatever
// their age; names that do not match are not touched.
func TestRemoveDeadWork(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-48 * time.Hour)
	live, err := CreateWorkFile(dir, "w-live-*")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	os.Chtimes(live.Name(), old, old)
	dead, err := CreateWorkFile(dir, "w-dead-*")
	if err != nil {
		t.Fatal(err)
	}
	dead.Close()
	unlocked, _ := os.CreateTemp(dir, "w-unlocked-*")
	unlocked.Close()
	liveDir, fd, err := mkdirWork(dir, "w-livedir-*")
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	os.WriteFile(filepath.Join(liveDir, "part"), []byte("x"), 0o644)
	deadDir, dfd, err := mkdirWork(dir, "w-deaddir-*")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(deadDir, "part"), []byte("x"), 0o644)
	unix.Close(dfd)
	os.Symlink("/etc/passwd", filepath.Join(dir, "w-link"))
	os.WriteFile(filepath.Join(dir, "other"), nil, 0o644)

	removed, err := RemoveDeadWork(dir, func(name string) bool { return strings.HasPrefix(name, "w-") })
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	want := []string{filepath.Base(deadDir), filepath.Base(dead.Name()), "w-link", filepath.Base(unlocked.Name())}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	for _, p := range []string{live.Name(), liveDir, filepath.Join(liveDir, "part"), filepath.Join(dir, "other")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	// The live file is still its writer's: written and renamed in place.
	if _, err := live.WriteString("data"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(live.Name(), filepath.Join(dir, "done")); err != nil {
		t.Fatal(err)
	}
}

// TestOpenAndPruneCleanWork: the next Open (every run starts with one) and
// Prune remove a dead run's work, never a live one's.
func TestOpenAndPruneCleanWork(t *testing.T) {
	c := open(t)
	live, err := CreateWorkFile(c.TempDir(), "blob-*")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(live.Name(), old, old)
	for _, run := range []struct {
		name string
		run  func() error
	}{
		{"Open", func() error { _, err := Open(c.Dir()); return err }},
		{"Prune", func() error { _, err := c.Prune(context.Background(), PruneOptions{}); return err }},
	} {
		dead, _ := os.CreateTemp(c.TempDir(), "blob-*")
		dead.WriteString("half")
		dead.Close()
		if err := run.run(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dead.Name()); !os.IsNotExist(err) {
			t.Errorf("%s kept a dead run's %s: %v", run.name, dead.Name(), err)
		}
		if _, err := os.Stat(live.Name()); err != nil {
			t.Errorf("%s removed a live run's %s: %v", run.name, live.Name(), err)
		}
	}
}
