package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// floor measures what the machine allows for converting an image: the CPU
// time to decode every layer blob and to compress the template's tar (the
// visible bytes) at zstd level 3, each with the fastest tool at hand (the
// in-process decoder and encoder pve-image has, and igzip and zstd where
// installed), spread over every core, but never less than decoding the
// largest layer, which one core must do alone. It prints
//
//	floor_seconds decode_seconds encode_seconds decoder encoder go_gunzip_seconds igzip_seconds
//
// the last two being the CPU time of decoding the gzip layers in Go and
// with igzip ("-" when igzip is missing), so that the bench shows what
// igzip saves.
func floor(template string, blobs []string) {
	tar, err := os.CreateTemp("", "bench-floor-*.tar")
	check(err)
	defer os.Remove(tar.Name())
	in, err := os.Open(template)
	check(err)
	zr, err := zstd.NewReader(bufio.NewReaderSize(in, 1<<20))
	check(err)
	_, err = io.Copy(tar, zr)
	check(err)
	zr.Close()
	in.Close()

	var dec, longest, goDec, igzDec time.Duration
	igzipMissing := false
	decoders := map[string]bool{}
	for _, b := range blobs {
		inGo := timed("klauspost", func() { decodeGo(b) })
		inIgzip := timedCmd("igzip", "igzip", []string{"-dc"}, b)
		goDec += inGo.d
		if inIgzip.d >= 0 {
			igzDec += inIgzip.d
		} else if isGzip(b) {
			igzipMissing = true
		}
		d, how := fastest(inGo, inIgzip)
		if d < 0 {
			continue // not gzip: read as it is
		}
		decoders[how] = true
		dec += d
		longest = max(longest, d)
	}
	enc, encoder := fastest(
		timed("klauspost", func() { encodeGo(tar.Name()) }),
		timedCmd("zstd", "zstd", []string{"-3", "-T1", "-q", "-c"}, tar.Name()),
	)
	cores := time.Duration(runtime.NumCPU())
	fl := max((dec+enc)/cores, longest)
	names := ""
	for n := range decoders {
		if names != "" {
			names += "+"
		}
		names += n
	}
	if names == "" {
		names = "none"
	}
	igz := fmt.Sprintf("%.3f", igzDec.Seconds())
	if igzipMissing {
		igz = "-"
	}
	fmt.Printf("%.3f %.3f %.3f %s %s %.3f %s\n", fl.Seconds(), dec.Seconds(), enc.Seconds(), names, encoder, goDec.Seconds(), igz)
}

type measured struct {
	name string
	d    time.Duration // CPU time; negative when the tool is missing or does not apply
}

func fastest(ms ...measured) (time.Duration, string) {
	best := measured{d: -1}
	for _, m := range ms {
		if m.d >= 0 && (best.d < 0 || m.d < best.d) {
			best = m
		}
	}
	return best.d, best.name
}

// timed is the CPU time fn takes in this process, all its goroutines.
func timed(name string, fn func()) measured {
	before := cpuTime()
	fn()
	return measured{name, cpuTime() - before}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timedCmd is the CPU time of prog args... < file > /dev/null; negative when
// prog is not installed.
func timedCmd(name, prog string, args []string, file string) measured {
	if _, err := exec.LookPath(prog); err != nil {
		return measured{name, -1}
	}
	f, err := os.Open(file)
	check(err)
	defer f.Close()
	if prog == "igzip" && !isGzip(file) {
		return measured{name, -1}
	}
	cmd := exec.Command(prog, args...)
	cmd.Stdin = f
	out, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	check(err)
	defer out.Close()
	cmd.Stdout = out
	if err := cmd.Run(); err != nil {
		log.Fatalf("%s %s: %v", prog, file, err)
	}
	return measured{name, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
}

func isGzip(file string) bool {
	f, err := os.Open(file)
	check(err)
	defer f.Close()
	head := make([]byte, 2)
	io.ReadFull(f, head)
	return bytes.Equal(head, []byte{0x1f, 0x8b})
}

// decodeGo inflates a gzip blob as pve-image does without igzip; a blob
// that is not gzip costs nothing to decode.
func decodeGo(file string) {
	if !isGzip(file) {
		return
	}
	f, err := os.Open(file)
	check(err)
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	check(err)
	_, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{zr}, make([]byte, 256<<10))
	check(err)
}

// encodeGo compresses a file as pve-image writes templates (zstd level 3,
// a 2 MiB window, concurrent blocks).
func encodeGo(file string) {
	f, err := os.Open(file)
	check(err)
	defer f.Close()
	zw, err := zstd.NewWriter(io.Discard, zstd.WithWindowSize(2<<20), zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(3)),
		zstd.WithEncoderConcurrency(2), zstd.WithConcurrentBlocks(true))
	check(err)
	_, err = io.CopyBuffer(zw, struct{ io.Reader }{f}, make([]byte, 1<<20))
	check(err)
	check(zw.Close())
}
