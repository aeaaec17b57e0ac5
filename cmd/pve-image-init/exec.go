package main

import (
	"errors"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// execMain runs a command in the container as the program runs: same
// user, groups, environment and working directory. pve-image's runtime
// starts it through lxc-attach for kubectl exec and exec probes:
//
//	pve-image-init exec [--timeout SECONDS] [--tty] [--stdin-ends-it] -- ARGV...
//
// Killing lxc-attach does not end what it started in the container, so
// the helper bounds the command itself: --timeout kills the command's
// process group when it expires, and --stdin-ends-it when the caller
// closes the helper's stdin (the command gets /dev/null). With --tty the
// helper becomes the command, on the terminal lxc-attach made.
func execMain(args []string) int {
	var timeout time.Duration
	var tty, stdinEnds bool
	for len(args) > 0 && args[0] != "--" {
		switch args[0] {
		case "--tty":
			tty = true
		case "--stdin-ends-it":
			stdinEnds = true
		case "--timeout":
			if len(args) < 2 {
				return usage()
			}
			n, err := strconv.Atoi(args[1])
			if err != nil || n < 0 {
				return usage()
			}
			timeout = time.Duration(n) * time.Second
			args = args[1:]
		default:
			return usage()
		}
		args = args[1:]
	}
	if len(args) < 2 {
		return usage()
	}
	argv := args[1:]
	spec, err := runspec.Read(runspec.ExecSpecPath)
	if errors.Is(err, os.ErrNotExist) {
		// Not supervised: the image's spec, without the runtime's
		// overrides (there are none).
		spec, err = runspec.Read(runspec.Path)
	}
	if err != nil {
		logf("exec: %v", err)
		return 126
	}
	argv0 := lookPath(argv[0], spec.Env)
	if tty {
		return execInPlace(spec, argv0, argv)
	}
	return execChild(spec, argv0, argv, timeout, stdinEnds)
}

func usage() int {
	logf("usage: pve-image-init exec [--timeout SECONDS] [--tty] [--stdin-ends-it] -- PROGRAM [ARG...]")
	return 2
}

// execInPlace becomes the command: it keeps the terminal, its signals and
// its size, which lxc-attach passes on.
func execInPlace(spec *runspec.Spec, argv0 string, argv []string) int {
	if err := syscall.Setgroups(toInts(spec.Groups)); err != nil {
		logf("exec: setgroups: %v", err)
		return 126
	}
	if err := syscall.Setgid(int(spec.GID)); err != nil {
		logf("exec: setgid %d: %v", spec.GID, err)
		return 126
	}
	if err := syscall.Setuid(int(spec.UID)); err != nil {
		logf("exec: setuid %d: %v", spec.UID, err)
		return 126
	}
	if spec.WorkingDir != "" {
		if err := os.Chdir(spec.WorkingDir); err != nil {
			logf("exec: working directory %s: %v", spec.WorkingDir, err)
		}
	}
	err := syscall.Exec(argv0, argv, spec.Env)
	logf("exec %q: %v", argv0, err)
	if errors.Is(err, syscall.ENOENT) {
		return 127
	}
	return 126
}

// execChild runs the command in its own process group and reports its
// status (128+signal for a killed one).
func execChild(spec *runspec.Spec, argv0 string, argv []string, timeout time.Duration, stdinEnds bool) int {
	files := []uintptr{0, 1, 2}
	if stdinEnds {
		null, err := os.Open(os.DevNull)
		if err != nil {
			logf("exec: %v", err)
			return 126
		}
		defer null.Close()
		files[0] = null.Fd()
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	pid, err := syscall.ForkExec(argv0, argv, &syscall.ProcAttr{
		Dir:   spec.WorkingDir,
		Env:   spec.Env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: spec.UID, Gid: spec.GID, Groups: spec.Groups},
			Setpgid:    true,
		},
	})
	if err != nil {
		logf("exec %q: %v", argv0, err)
		if errors.Is(err, syscall.ENOENT) {
			return 127
		}
		return 126
	}
	done := make(chan syscall.WaitStatus, 1)
	go func() {
		var ws syscall.WaitStatus
		for {
			if _, err := syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
				break
			}
		}
		done <- ws
	}()
	var expired <-chan time.Time
	if timeout > 0 {
		expired = time.After(timeout)
	}
	callerGone := make(chan struct{})
	if stdinEnds {
		go func() {
			b := make([]byte, 512)
			for {
				if _, err := os.Stdin.Read(b); err != nil {
					close(callerGone)
					return
				}
			}
		}()
	}
	for {
		select {
		case ws := <-done:
			return exitStatus(ws)
		case s := <-sigs:
			syscall.Kill(-pid, s.(syscall.Signal))
		case <-expired:
			logf("exec: %q timed out after %s", argv0, timeout)
			syscall.Kill(-pid, syscall.SIGKILL)
			expired = nil
		case <-callerGone:
			syscall.Kill(-pid, syscall.SIGKILL)
			callerGone = nil
		}
	}
}

func toInts(g []uint32) []int {
	out := make([]int, len(g))
	for i, x := range g {
		out[i] = int(x)
	}
	return out
}
