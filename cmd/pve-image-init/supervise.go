package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// The signals LXC uses to ask init to halt: SIGPWR, or SIGRTMIN+3 when init
// has signal handlers installed, as every Go program has (lxc.md).
const (
	sigPWR     = syscall.SIGPWR
	sigRTMIN3  = syscall.Signal(37)
	killGrace  = 2 * time.Second
	defaultTTL = 10
)

var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGWINCH}

// notifyHalt sends the halt signals to c.
func notifyHalt(c chan<- os.Signal) {
	signal.Notify(c, sigPWR, sigRTMIN3, syscall.SIGTERM, syscall.SIGINT)
}

// supervise starts the program, forwards signals, reaps every child and
// returns the program's exit status once it is gone. Supervised (by
// pve-image's CRI runtime), it also captures the program's output, records
// how it ended and holds until the runtime has read that.
func supervise(spec *runspec.Spec, rt *runtimeEnv) int {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD, sigPWR, sigRTMIN3}, forwarded...)...)

	if spec.WorkingDir != "" {
		if err := os.MkdirAll(spec.WorkingDir, 0o755); err != nil {
			logf("working directory %s: %v", spec.WorkingDir, err)
		}
	}
	argv0 := lookPath(spec.Args[0], spec.Env)
	attr := &syscall.ProcAttr{
		Dir:   spec.WorkingDir,
		Env:   spec.Env,
		Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: spec.UID, Gid: spec.GID, Groups: spec.Groups},
			Setsid:     true,
		},
	}
	var pipes *outputPipes
	if rt.supervised {
		if err := os.WriteFile(runspec.ExecSpecPath, spec.Marshal(), 0o600); err != nil {
			logf("writing %s: %v", runspec.ExecSpecPath, err)
		}
		var err error
		if pipes, err = newOutputPipes(); err != nil {
			logf("output pipes: %v", err)
			return failEarly(rt, 111)
		}
		null, err := os.Open(os.DevNull)
		if err != nil {
			logf("%v", err)
			return failEarly(rt, 111)
		}
		defer null.Close()
		attr.Files = []uintptr{null.Fd(), pipes.stdout.Fd(), pipes.stderr.Fd()}
	} else if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		// On a console (pct console, lxc-console) the program gets it as
		// its controlling terminal, so shells have job control and ^C
		// works.
		attr.Sys.Setctty, attr.Sys.Ctty = true, 0
	}
	if err := restrict(spec); err != nil {
		logf("security context: %v", err)
		return failEarly(rt, 111)
	}
	oomBefore, _ := oomKills()
	pid, err := syscall.ForkExec(argv0, spec.Args, attr)
	if pipes != nil {
		pipes.closeOurEnds()
	}
	if err != nil {
		logf("cannot start %q as %d:%d: %v", argv0, spec.UID, spec.GID, err)
		code := 127
		if err != syscall.ENOENT {
			code = 126 // found but not runnable, as shells report it
		}
		return failEarly(rt, code)
	}
	infof("started %q (pid %d) as %d:%d", argv0, pid, spec.UID, spec.GID)

	stopTimeout := time.Duration(spec.StopTimeout) * time.Second
	if spec.StopTimeout <= 0 {
		stopTimeout = defaultTTL * time.Second
	}
	var killAt <-chan time.Time
	var ended syscall.WaitStatus
	halted := false
	status := -1
	for status < 0 {
		select {
		case s := <-sigs:
			switch s {
			case syscall.SIGCHLD:
				if ws, done := reap(pid); done {
					status, ended = exitStatus(ws), ws
				}
			case sigPWR, sigRTMIN3:
				halted = true
				if rt.supervised {
					// The runtime times the stop (kubelet's grace period).
					infof("halt requested: sending signal %d to the program", spec.StopSignal)
					syscall.Kill(pid, syscall.Signal(spec.StopSignal))
					break
				}
				infof("halt requested: sending signal %d to the program, killing it in %s", spec.StopSignal, stopTimeout)
				syscall.Kill(pid, syscall.Signal(spec.StopSignal))
				if killAt == nil {
					killAt = time.After(stopTimeout)
				}
			default:
				syscall.Kill(pid, s.(syscall.Signal))
			}
		case <-killAt:
			logf("the program did not stop in %s; killing it", stopTimeout)
			syscall.Kill(-1, syscall.SIGKILL)
			killAt = nil
		}
	}
	infof("program exited with status %d", status)
	finish()
	if !rt.supervised {
		return status
	}
	pipes.wait(2 * time.Second)
	e := runspec.Exit{Code: status, FinishedAt: time.Now().UnixNano(), LastLog: sink.last()}
	if ended.Signaled() {
		e.Signal = int(ended.Signal())
	}
	if after, ok := oomKills(); ok && after > oomBefore && e.Signal == int(syscall.SIGKILL) {
		e.OOMKilled = true
	}
	if rt.terminationLog != "" {
		copyTermination(spec, rt.terminationLog)
	}
	report(e, halted)
	return status
}

// reap collects every exited child and reports how the main program
// ended.
func reap(main int) (ws syscall.WaitStatus, done bool) {
	for {
		var w syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &w, syscall.WNOHANG, nil)
		if pid <= 0 || errors.Is(err, syscall.ECHILD) {
			return ws, done
		}
		if pid == main {
			ws, done = w, true
		}
	}
}

// finish asks whatever the program left behind to end, then kills it, and
// reaps it all, so that the container stops cleanly.
func finish() {
	if syscall.Kill(-1, syscall.SIGTERM) != nil {
		return
	}
	deadline := time.Now().Add(killGrace)
	for time.Now().Before(deadline) {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.ECHILD) {
			return
		}
		if pid <= 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	syscall.Kill(-1, syscall.SIGKILL)
	for {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(-1, &ws, 0, nil); err != nil {
			return
		}
	}
}
