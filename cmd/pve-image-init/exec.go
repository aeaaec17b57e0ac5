package main

import (
	"errors"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// execMain runs a command in the container as the program runs: same
// user, groups, environment and working directory. pve-image's runtime
// starts it through lxc-attach for kubectl exec and exec probes:
//
//	pve-image-init exec [--timeout SECONDS] [--tty] [--stdin-ends-it] [--id ID] -- ARGV...
//
// Killing lxc-attach does not end what it started in the container, so
// the helper bounds the command itself: --timeout kills the command's
// process group when it expires, --stdin-ends-it when the caller closes
// the helper's stdin (the command gets /dev/null), and with --id the
// command's pid is kept where `pve-image-init exec-kill ID` finds it. With
// --tty the helper becomes the command, on the terminal lxc-attach made.
func execMain(args []string) int {
	var timeout time.Duration
	var tty, stdinEnds bool
	var id string
	for len(args) > 0 && args[0] != "--" {
		switch args[0] {
		case "--tty":
			tty = true
		case "--stdin-ends-it":
			stdinEnds = true
		case "--id":
			if len(args) < 2 || !validID(args[1]) {
				return usage()
			}
			id = args[1]
			args = args[1:]
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
	// The program's effective spec, with the runtime's user and
	// restrictions: without it (the program never started) exec would run
	// as someone else, so there is no fallback.
	spec, err := runspec.Read(runspec.ExecSpecPath)
	if err != nil {
		logf("exec: %v (the container's program has not started under pve-image-init's supervision)", err)
		return 126
	}
	argv0 := lookPath(argv[0], spec.Env)
	if err := restrict(spec); err != nil {
		logf("exec: security context: %v", err)
		return 126
	}
	if tty {
		return execInPlace(spec, argv0, argv)
	}
	return execChild(spec, argv0, argv, timeout, stdinEnds, id)
}

func usage() int {
	logf("usage: pve-image-init exec [--timeout SECONDS] [--tty] [--stdin-ends-it] [--id ID] -- PROGRAM [ARG...]")
	return 2
}

// validID keeps an exec ID a plain file name.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// execKillMain ends the command of exec ID (pve-image-init exec-kill ID):
// its process group gets SIGKILL.
func execKillMain(args []string) int {
	if len(args) != 1 || !validID(args[0]) {
		logf("usage: pve-image-init exec-kill ID")
		return 2
	}
	b, err := os.ReadFile(runspec.ExecPIDPrefix + args[0])
	if err != nil {
		return 1 // gone already
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 1
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	return 0
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
func execChild(spec *runspec.Spec, argv0 string, argv []string, timeout time.Duration, stdinEnds bool, id string) int {
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
	if id != "" {
		p := runspec.ExecPIDPrefix + id
		if err := os.WriteFile(p, []byte(strconv.Itoa(pid)), 0o600); err == nil {
			defer os.Remove(p)
		}
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
