package imgconv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Igzip is the external gzip decoder pve-image uses when it is installed:
// igzip from Intel's ISA-L (Debian's "isal" package). It inflates about
// three times as fast as klauspost/compress on one core (scripts/bench.sh
// prints both on the machine), and gzip decoding is most of
// a conversion's work besides the output's compression. containerd prefers
// it for the same reason. The decoder changes how fast a layer is read,
// never what is read: templates are the same bytes either way.
const Igzip = "igzip"

// minExternalGunzip is the compressed size from which a gzip layer is worth
// a process: below it the start of one costs more than it saves.
const minExternalGunzip = 1 << 20

// LookIgzip returns the path of igzip on PATH when it is there and works,
// "" otherwise. A broken igzip (a missing library, exit 127) would make
// every large gzip layer look corrupt, so the program found is first asked
// to decode a tiny gzip; the error says why one found is not used. The
// answer is looked up once per process.
func LookIgzip() (string, error) { return lookIgzip() }

var lookIgzip = sync.OnceValues(func() (string, error) {
	p, err := exec.LookPath(Igzip)
	if err != nil {
		return "", nil
	}
	if err := probeGunzip(p); err != nil {
		return "", err
	}
	return p, nil
})

// probeGzip is probeText compressed by gzip -9n.
var (
	probeText = []byte("pve-image: igzip probe\n")
	probeGzip = []byte{
		0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x2b, 0x28,
		0x4b, 0xd5, 0xcd, 0xcc, 0x4d, 0x4c, 0x4f, 0xb5, 0x52, 0xc8, 0x4c, 0xaf,
		0xca, 0x2c, 0x50, 0x28, 0x28, 0xca, 0x4f, 0x4a, 0xe5, 0x02, 0x00, 0x91,
		0x07, 0xd4, 0x63, 0x17, 0x00, 0x00, 0x00,
	}
)

// probeGunzip checks that prog decodes gzip as it is run for layers.
func probeGunzip(prog string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, "-d", "-c", "-q")
	cmd.Stdin, cmd.Stderr = bytes.NewReader(probeGzip), &limitedBuffer{b: &stderr, max: 4 << 10}
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.Join(strings.Fields(stderr.String()), " "); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return fmt.Errorf("%s does not work: %w", prog, err)
	}
	if !bytes.Equal(out, probeText) {
		return fmt.Errorf("%s does not work: it decodes a known gzip to other bytes", prog)
	}
	return nil
}

// externalGunzip runs prog -dc with the blob on its standard input and
// reads the tar from its standard output. A blob that is a file is handed
// to the process as it is; anything else is copied in by a goroutine of
// its own, which owns the blob from then on.
type externalGunzip struct {
	cmd    *exec.Cmd
	out    *os.File
	br     *bufio.Reader
	stderr bytes.Buffer
	waited sync.Once
	err    error       // the process's end, once waited for
	killed atomic.Bool // by us: its end is not the decoder's verdict

	fed     chan error  // the copy's end: the blob's error, nil at its EOF
	stop    atomic.Bool // the copy is to end at once
	blobErr error       // what fed said, once received
	got     bool
}

// startGunzip starts prog on in. closer, if not nil, is the blob behind in,
// which a goroutine then copies in and closes when done; without it, in is
// a file the process reads itself and the caller closes.
func startGunzip(prog string, in io.Reader, closer io.Closer) (*decompressor, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	// A pipe of 1 MiB instead of 64 KiB: a quarter of the wake-ups, and the
	// decoder works ahead of the tar reader by that much. Best effort.
	unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, 1<<20)
	g := &externalGunzip{out: r, br: bufio.NewReaderSize(r, 256<<10)}
	g.cmd = exec.Command(prog, "-d", "-c", "-q")
	g.cmd.Stdout, g.cmd.Stderr = w, &limitedBuffer{b: &g.stderr, max: 4 << 10}
	var stdin *os.File
	if closer == nil {
		g.cmd.Stdin = in
	} else {
		// Copied in here, not by os/exec, whose Wait would wait for the
		// copy: a blob still downloading may block it for long after the
		// decoder was stopped.
		var pr *os.File
		if pr, stdin, err = os.Pipe(); err != nil {
			r.Close()
			w.Close()
			return nil, err
		}
		g.cmd.Stdin = pr
		defer pr.Close()
	}
	err = g.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		if stdin != nil {
			stdin.Close()
		}
		return nil, fmt.Errorf("%w: start %s: %w", ErrExternalGunzip, prog, err)
	}
	d := &decompressor{Reader: g, finish: func(context.Context) error { return nil }, abort: g.kill, close: g.close,
		trailing: func(err error) error { return err }, external: true}
	if closer != nil {
		g.fed = make(chan error, 1)
		go g.feed(in, stdin, closer)
		d.finish = g.blobEnd
		d.close = func() {
			g.stop.Store(true)
			g.close()
		}
	}
	return d, nil
}

// feed copies the blob to the decoder. Should the decoder stop reading
// before the blob ends (trailing bytes it ignores, or it was killed), the
// blob is still read to its end: whatever verifies it as it is read gets
// to.
func (g *externalGunzip) feed(blob io.Reader, stdin *os.File, closer io.Closer) {
	buf := make([]byte, 256<<10)
	var err error
	for !g.stop.Load() {
		n, rerr := blob.Read(buf)
		if n > 0 && stdin != nil {
			// EPIPE once the decoder ended: Go ignores SIGPIPE for
			// pipes other than its standard output.
			if _, werr := stdin.Write(buf[:n]); werr != nil {
				stdin.Close()
				stdin = nil
			}
		}
		if rerr != nil {
			if rerr != io.EOF {
				err = rerr
			}
			break
		}
	}
	if stdin != nil {
		stdin.Close()
	}
	closer.Close()
	g.fed <- err
}

// blobEnd waits for the copy to read the blob to its end and returns the
// blob's error, or ctx's should it end first (the copy then stops).
func (g *externalGunzip) blobEnd(ctx context.Context) error {
	if !g.got {
		select {
		case g.blobErr = <-g.fed:
			g.got = true
		case <-ctx.Done():
			g.stop.Store(true)
			return ctx.Err()
		}
	}
	return g.blobErr
}

// Read serves the decoded stream. Its end is checked: a decoder that
// failed (a corrupt or truncated blob) makes it an error with what the
// decoder said.
func (g *externalGunzip) Read(p []byte) (int, error) {
	n, err := g.br.Read(p)
	if err == io.EOF {
		if werr := g.wait(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

func (g *externalGunzip) wait() error {
	g.waited.Do(func() {
		err := g.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case g.killed.Load() && err != nil:
			err = errGunzipKilled
		case errors.As(err, &ee):
			msg := strings.Join(strings.Fields(g.stderr.String()), " ")
			if msg == "" {
				msg = ee.String()
			}
			err = fmt.Errorf("%w: gzip: %s: %s", ErrExternalGunzip, g.cmd.Args[0], msg)
		case err != nil:
			err = fmt.Errorf("%w: %s: %w", ErrExternalGunzip, g.cmd.Args[0], err)
		}
		g.err = err
	})
	return g.err
}

// errGunzipKilled is what reading a decoder we stopped gives.
var errGunzipKilled = errors.New("gzip decoder stopped")

// kill stops the decoder where it is: its output is no longer wanted (a
// limit was hit, or the layer failed). A decoder blocked writing its
// output then ends, and the copy into it gets EPIPE and goes on reading
// the blob to its end without it.
func (g *externalGunzip) kill() {
	g.killed.Store(true)
	g.cmd.Process.Kill()
}

// close stops the decoder if it still runs (the tar ended early, or
// failed) and releases the pipe.
func (g *externalGunzip) close() {
	g.kill()
	g.out.Close()
	g.wait()
}

// limitedBuffer keeps the first max bytes written to it: a decoder's
// complaint, never a flood.
type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
