// Command testapp is the program the boot tests run inside containers. It
// reports what an application sees (argv, environment, working directory,
// ids) on stdout, which LXC sends to the console log, and performs the steps
// its arguments name, left to right:
//
//	report            print argv, env, cwd, uid/gid/groups and hostname
//	orphans N         leave N processes for init to reap, then report zombies
//	wait-signal       block until SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 or
//	                  SIGUSR2, print it and go on
//	sleep D           sleep for a Go duration
//	exit N            exit with status N
//	spawn-child       (internal) the middle process of orphans
//	linger            (internal) the orphan: sleep briefly and exit
//
// It is static (CGO_ENABLED=0) so that it runs in images with no libc.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func say(format string, args ...any) {
	fmt.Printf("testapp: "+format+"\n", args...)
}

func main() {
	args := os.Args[1:]
	for len(args) > 0 {
		step := args[0]
		args = args[1:]
		switch step {
		case "report":
			report()
		case "orphans":
			n, _ := strconv.Atoi(args[0])
			args = args[1:]
			orphans(n)
		case "wait-signal":
			c := make(chan os.Signal, 1)
			signal.Notify(c, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
			say("waiting for a signal")
			s := <-c
			signal.Stop(c)
			say("got signal %s", unix(s))
		case "sleep":
			d, _ := time.ParseDuration(args[0])
			args = args[1:]
			time.Sleep(d)
		case "exit":
			n, _ := strconv.Atoi(args[0])
			say("exiting with %d", n)
			os.Exit(n)
		case "spawn-child":
			// Start the orphan and leave at once, so it is re-parented.
			self, _ := os.Executable()
			cmd := exec.Command(self, "linger")
			cmd.Start()
			os.Exit(0)
		case "linger":
			time.Sleep(200 * time.Millisecond)
			os.Exit(0)
		default:
			say("unknown step %q", step)
			os.Exit(64)
		}
	}
}

func report() {
	say("argv=%q", os.Args)
	env := os.Environ()
	sort.Strings(env)
	say("env=%q", env)
	wd, _ := os.Getwd()
	say("cwd=%s", wd)
	groups, _ := os.Getgroups()
	say("uid=%d gid=%d groups=%v", os.Getuid(), os.Getgid(), groups)
	h, _ := os.Hostname()
	say("hostname=%s pid=%d", h, os.Getpid())
}

// orphans leaves n grandchildren for PID 1 to adopt, waits until they have
// exited, and counts the zombies left in the container.
func orphans(n int) {
	self, _ := os.Executable()
	for i := 0; i < n; i++ {
		cmd := exec.Command(self, "spawn-child")
		if err := cmd.Run(); err != nil {
			say("spawn: %v", err)
		}
	}
	time.Sleep(1500 * time.Millisecond)
	say("zombies=%d", countZombies())
}

func countZombies() int {
	ents, _ := os.ReadDir("/proc")
	z := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The state follows the command name in parentheses.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) && s[i+2] == 'Z' {
			z++
		}
	}
	return z
}

func unix(s os.Signal) string {
	if ss, ok := s.(syscall.Signal); ok {
		return "SIG" + strings.ToUpper(strings.TrimPrefix(unixName(ss), "SIG"))
	}
	return s.String()
}

func unixName(s syscall.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGINT:
		return "INT"
	case syscall.SIGHUP:
		return "HUP"
	case syscall.SIGQUIT:
		return "QUIT"
	case syscall.SIGUSR1:
		return "USR1"
	case syscall.SIGUSR2:
		return "USR2"
	}
	return s.String()
}
