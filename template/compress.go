package template

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"

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
			return version + " multi-threaded"
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

// xzTool finds the xz program and its version line ("xz (XZ Utils)
// 5.4.1"); "", "" when there is none, or one too old to write the same
// bytes whatever the number of threads (5.4 and later do).
func xzTool() (prog, version string) {
	prog, err := exec.LookPath("xz")
	if err != nil {
		return "", ""
	}
	out, err := exec.Command(prog, "--version").Output()
	if err != nil {
		return "", ""
	}
	version, _, _ = strings.Cut(string(out), "\n")
	version = strings.TrimSpace(version)
	var major, minor int
	if i := strings.LastIndexByte(version, ' '); i < 0 {
		return "", ""
	} else if _, err := fmt.Sscanf(version[i+1:], "%d.%d", &major, &minor); err != nil || major < 5 || major == 5 && minor < 4 {
		return "", ""
	}
	return prog, version
}

// xzWriter feeds the xz program.
type xzWriter struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	stderr bytes.Buffer
}

// startXZ runs xz in its multi-threaded mode, as many threads as cores
// and memory allow: that mode (which xz 5.4 and later use for any thread
// count but an explicit 1, even on one core) splits the input into blocks
// of a size set by the level alone, so the bytes are the same on every
// machine.
func startXZ(prog string, w io.Writer, level int) (*xzWriter, error) {
	x := &xzWriter{}
	x.cmd = exec.Command(prog, "-c", "-q", fmt.Sprintf("-%d", level), "--threads=0")
	x.cmd.Stdout, x.cmd.Stderr = w, &x.stderr
	in, err := x.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := x.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", prog, err)
	}
	x.in = in
	return x, nil
}

func (x *xzWriter) Write(p []byte) (int, error) {
	n, err := x.in.Write(p)
	if err != nil {
		return n, x.fail(err)
	}
	return n, nil
}

// Close ends the input and waits for xz to write the rest.
func (x *xzWriter) Close() error {
	x.in.Close()
	if err := x.cmd.Wait(); err != nil {
		return x.fail(err)
	}
	return nil
}

func (x *xzWriter) fail(err error) error {
	if x.cmd.ProcessState == nil {
		x.in.Close()
		x.cmd.Wait()
	}
	if msg := strings.TrimSpace(x.stderr.String()); msg != "" {
		return fmt.Errorf("xz: %s", msg)
	}
	return fmt.Errorf("xz: %w", err)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
