package runspec

import (
	"fmt"
	"strconv"
	"strings"
)

var signals = map[string]int{
	"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
	"USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17,
	"CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
	"VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}

// SIGRTMIN as glibc and the kernel's users see it.
const sigRTMIN, sigRTMAX = 34, 64

// ParseSignal reads a StopSignal as Docker accepts it: "SIGTERM", "TERM",
// "15", "SIGRTMIN+3". Empty means SIGTERM.
func ParseSignal(s string) (int, error) {
	if s == "" {
		return 15, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > sigRTMAX {
			return 0, fmt.Errorf("stop signal %q is out of range", s)
		}
		return n, nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if n, ok := signals[name]; ok {
		return n, nil
	}
	for _, base := range []struct {
		prefix string
		n      int
		sign   int
	}{{"RTMIN+", sigRTMIN, 1}, {"RTMAX-", sigRTMAX, -1}} {
		if rest, ok := strings.CutPrefix(name, base.prefix); ok {
			if k, err := strconv.Atoi(rest); err == nil && k >= 0 && base.n+base.sign*k >= sigRTMIN && base.n+base.sign*k <= sigRTMAX {
				return base.n + base.sign*k, nil
			}
		}
	}
	switch name {
	case "RTMIN":
		return sigRTMIN, nil
	case "RTMAX":
		return sigRTMAX, nil
	}
	return 0, fmt.Errorf("unknown stop signal %q", s)
}
