// Package atomicfile writes files that appear whole or not at all: a
// reader, or a run killed half-way, never sees a half-written file.
package atomicfile

import (
	"io"
	"os"
	"path/filepath"
)

// Write calls write with a temporary file beside path (".NAME.tmp-*",
// which cache's clean-up of dead runs recognises), syncs it, makes it
// mode 0644 and renames it to path. On any error the temporary file is
// removed and path is untouched.
func Write(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	return err
}
