package template

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"github.com/ulikunitz/xz"
)

// Compression is a template's compression, named by its file suffix.
type Compression string

const (
	Zstd Compression = "zst"
	Gzip Compression = "gz"
	XZ   Compression = "xz"
	None Compression = ""
)

// Suffix is the file extension Proxmox expects.
func (c Compression) Suffix() string {
	if c == None {
		return ".tar"
	}
	return ".tar." + string(c)
}

// CompressionFromName reads the compression off a template file name, as
// Proxmox does (PVE::LXC::Create, proxmox.md §1): .tar.zst, .tar.gz,
// .tar.xz or .tar.
func CompressionFromName(name string) (Compression, error) {
	switch {
	case strings.HasSuffix(name, ".tar.zst"):
		return Zstd, nil
	case strings.HasSuffix(name, ".tar.gz"):
		return Gzip, nil
	case strings.HasSuffix(name, ".tar.xz"):
		return XZ, nil
	case strings.HasSuffix(name, ".tar"):
		return None, nil
	case strings.HasSuffix(name, ".tar.bz2"):
		return "", fmt.Errorf("%s: bzip2 templates are not written (no maintained Go encoder); use .tar.zst, which every Proxmox since 7.0 reads", name)
	}
	return "", fmt.Errorf("%s: a template name must end in .tar.zst, .tar.gz, .tar.xz or .tar", name)
}

// DefaultLevel is the level used when none is given: zstd -3 and gzip -6,
// the command-line tools' defaults.
func (c Compression) DefaultLevel() int {
	switch c {
	case Zstd:
		return 3
	case Gzip:
		return 6
	case XZ:
		return 6
	}
	return 0
}

// CheckLevel validates a level for c; 0 means the default.
func (c Compression) CheckLevel(level int) error {
	if level == 0 {
		return nil
	}
	max := map[Compression]int{Zstd: 22, Gzip: 9, XZ: 9}[c]
	if level < 1 || level > max {
		if max == 0 {
			return fmt.Errorf("an uncompressed template takes no compression level")
		}
		return fmt.Errorf("%s compression level %d: want 1 to %d", c.Suffix(), level, max)
	}
	return nil
}

// Encoder is the identity of the code that compresses, for cache keys:
// the same input gives the same bytes only with the same library version
// (perf.md §6), or, for xz, the same xz program.
func (c Compression) Encoder() string {
	if c == XZ {
		if _, version := xzTool(); version != "" {
			return version + ", multi-threaded"
		}
	}
	mod := map[Compression]string{Zstd: "github.com/klauspost/compress", Gzip: "github.com/klauspost/pgzip", XZ: "github.com/ulikunitz/xz"}[c]
	if mod == "" {
		return "none"
	}
	v := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == mod {
				v = d.Version
			}
		}
	}
	return mod + "@" + v
}

// NewWriter compresses into w. The output depends only on the input, the
// level and the encoder (Encoder), not on the machine: zstd always runs
// with at least two encoders in concurrent-block mode, whose output is the
// same for any count of two or more (perf.md §6); xz, when the xz program
// is installed, runs it in its multi-threaded mode, whose output depends
// on the block size but not on the threads.
func (c Compression) NewWriter(w io.Writer, level int) (io.WriteCloser, error) {
	if level == 0 {
		level = c.DefaultLevel()
	}
	switch c {
	case Zstd:
		// A 2 MiB window, as the zstd tool uses at -3: each concurrent
		// job holds four windows of input, so the window bounds memory.
		return zstd.NewWriter(w,
			zstd.WithWindowSize(2<<20),
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
			zstd.WithEncoderConcurrency(max(2, runtime.GOMAXPROCS(0))),
			zstd.WithConcurrentBlocks(true))
	case Gzip:
		zw, err := pgzip.NewWriterLevel(w, level)
		if err != nil {
			return nil, err
		}
		// Fixed block size and count: pgzip's output then does not depend on
		// the number of CPUs.
		if err := zw.SetConcurrency(1<<20, max(2, runtime.GOMAXPROCS(0))); err != nil {
			return nil, err
		}
		return zw, nil
	case XZ:
		if prog, _ := xzTool(); prog != "" {
			return startXZ(prog, w, level)
		}
		// The pure Go encoder: one core, and about a quarter larger
		// than xz -6 (scripts/bench.sh measures both).
		cfg := xz.WriterConfig{DictCap: 8 << 20}
		if level >= 7 {
			cfg.DictCap = 32 << 20
		}
		return cfg.NewWriter(w)
	case None:
		return nopCloser{w}, nil
	}
	return nil, fmt.Errorf("unknown compression %q", c)
}

// xzTool finds the xz program and its version ("xz (XZ Utils) 5.4.1,
// liblzma 5.4.1": the program and the library, both of which shape the
// output); "", "" when there is none, or one too old to write the same
// bytes whatever the number of threads (5.4 and later do). It is looked up
// once per process.
func xzTool() (prog, version string) { return lookXZ() }

var lookXZ = sync.OnceValues(func() (string, string) {
	prog, err := exec.LookPath("xz")
	if err != nil {
		return "", ""
	}
	cmd := exec.Command(prog, "--version")
	cmd.Env = xzEnv()
	out, err := cmd.Output()
	if err != nil {
		return "", ""
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	first := lines[0]
	var major, minor int
	if i := strings.LastIndexByte(first, ' '); i < 0 {
		return "", ""
	} else if _, err := fmt.Sscanf(first[i+1:], "%d.%d", &major, &minor); err != nil || major < 5 || major == 5 && minor < 4 {
		return "", ""
	}
	return prog, strings.Join(lines, ", ")
})

// xzEnv is the environment xz runs in: the caller's without XZ_OPT and
// XZ_DEFAULTS, which would change the output (a memory limit that makes
// xz fall back to one thread, another block size or check, -e) while the
// cache key stays the same.
func xzEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XZ_OPT=") && !strings.HasPrefix(kv, "XZ_DEFAULTS=") {
			env = append(env, kv)
		}
	}
	return env
}

// xzBlockSize is the block size xz's multi-threaded mode picks by default
// at level: three times the level's dictionary, at least 1 MiB (24 MiB at
// -6). It is given explicitly so that nothing but the level sets it; the
// output is the same as xz's default.
func xzBlockSize(level int) int {
	dict := [...]int{256 << 10, 1 << 20, 2 << 20, 4 << 20, 4 << 20, 8 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20}[level]
	return max(3*dict, 1<<20)
}

// xzWriter feeds the xz program. Its output goes through a pipe of ours to
// the destination, so that a failure to write there (a full disk) is the
// error reported, not the broken pipe xz then dies of.
type xzWriter struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	copied chan error // the output copy's end: the destination's error
	stderr bytes.Buffer
	done   bool
	err    error
}

// startXZ runs xz in its multi-threaded mode, as many threads as cores
// and memory allow: that mode (which xz 5.4 and later use for any thread
// count but an explicit 1, even on one core) splits the input into blocks
// of a size set by the level alone, so the bytes are the same on every
// machine. --no-adjust makes xz fail rather than change the output to fit
// a memory limit.
func startXZ(prog string, w io.Writer, level int) (*xzWriter, error) {
	x := &xzWriter{copied: make(chan error, 1)}
	x.cmd = exec.Command(prog, "-c", "-q", fmt.Sprintf("-%d", level), "--threads=0", "--check=crc64", "--no-adjust",
		fmt.Sprintf("--block-size=%d", xzBlockSize(level)))
	x.cmd.Env = xzEnv()
	x.cmd.Stderr = &x.stderr
	out, err := x.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	in, err := x.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := x.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", prog, err)
	}
	x.in = in
	go func() {
		dst := &errWriter{w: w}
		_, err := io.Copy(dst, out)
		if dst.err != nil {
			// xz is not to block on output nobody takes: it ends with a
			// broken pipe, and the writes into it fail.
			out.Close()
			err = dst.err
		}
		x.copied <- err
	}()
	return x, nil
}

// errWriter keeps the destination's own error apart from the pipe's.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

func (x *xzWriter) Write(p []byte) (int, error) {
	if x.done {
		return 0, x.err
	}
	n, err := x.in.Write(p)
	if err != nil {
		return n, x.finish()
	}
	return n, nil
}

// Close ends the input and waits for xz to write the rest.
func (x *xzWriter) Close() error { return x.finish() }

// finish ends xz once and says why it failed, if it did: the
// destination's error first, for xz's is then only its consequence.
func (x *xzWriter) finish() error {
	if x.done {
		return x.err
	}
	x.done = true
	x.in.Close()
	copyErr := <-x.copied // before Wait, which closes the pipe being read
	waitErr := x.cmd.Wait()
	switch {
	case copyErr != nil:
		x.err = fmt.Errorf("xz: write output: %w", copyErr)
	case waitErr != nil:
		if msg := strings.TrimSpace(x.stderr.String()); msg != "" {
			x.err = fmt.Errorf("xz: %s", msg)
		} else {
			x.err = fmt.Errorf("xz: %w", waitErr)
		}
	}
	return x.err
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
