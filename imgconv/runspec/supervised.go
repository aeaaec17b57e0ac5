package runspec

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The runtime (pve-image's CRI service) talks to the init of a container it
// supervises through the container's environment, set in Proxmox's env
// option when the container is created, and through files the init keeps
// in StateDir, which the runtime reads from the node (LXC's tools and
// /proc/PID/root) while the container runs. None of these variables reach
// the program.
const (
	// EnvArgv replaces the program and its arguments: a JSON array of
	// strings. LXC splits lxc.init.cmd at spaces and ignores quotes
	// (lxc.md), and Proxmox's env option refuses control characters, so
	// argv travels JSON-encoded in the environment, where any string fits.
	EnvArgv = "PVE_IMAGE_ARGV"
	// EnvExtraEnv holds variables whose values have control characters
	// (which Proxmox's env option refuses): a JSON array of KEY=value.
	EnvExtraEnv = "PVE_IMAGE_ENV"
	// EnvUser is a user name to look up in the image's /etc/passwd (a CRI
	// run_as_username); EnvUID, EnvGID and EnvCwd are numbers and a path.
	EnvUser = "PVE_IMAGE_USER"
	EnvUID  = "PVE_IMAGE_UID"
	EnvGID  = "PVE_IMAGE_GID"
	EnvCwd  = "PVE_IMAGE_CWD"
	// EnvGroups adds supplementary groups: comma-separated numbers.
	EnvGroups = "PVE_IMAGE_GROUPS"
	// EnvHosts and EnvResolv are the contents of /etc/hosts and
	// /etc/resolv.conf, as JSON strings (they hold newlines).
	EnvHosts  = "PVE_IMAGE_HOSTS"
	EnvResolv = "PVE_IMAGE_RESOLV"
	// EnvTerminationLog is a path the init creates as an empty file that
	// anyone may write, for the program's termination message.
	EnvTerminationLog = "PVE_IMAGE_TERMINATION_LOG"
	// EnvNoNewPrivs=1, EnvCapDrop (capability names, or ALL) and
	// EnvReadonlyRoot=1 restrict the program as a CRI security context
	// asks: no_new_privs, capabilities out of its bounding set, the root
	// file system remounted read-only once the init has set it up.
	EnvNoNewPrivs   = "PVE_IMAGE_NO_NEW_PRIVS"
	EnvCapDrop      = "PVE_IMAGE_CAP_DROP"
	EnvReadonlyRoot = "PVE_IMAGE_READONLY_ROOT"
	// EnvSupervised=1 asks for supervision: the program's output goes into
	// log segments, its end into ExitPath, and the init then waits for
	// the runtime to collect both before the container stops (see Exit).
	EnvSupervised = "PVE_IMAGE_SUPERVISED"
)

// Files of a supervised container, inside it. StateDir is a small tmpfs
// the init mounts, so that output never touches the container's disk and
// the bound on it is a bound on memory.
const (
	StateDir = "/run/pve-image"
	// ExecSpecPath is the program's effective spec after the runtime's
	// overrides, in the format of run.json: what `pve-image-init exec`
	// runs commands with (kubectl exec, exec probes).
	ExecSpecPath = StateDir + "/exec.json"
	// ExitPath appears once the program has ended and its output is in
	// the log segments.
	ExitPath = StateDir + "/exit.json"
	// TerminationPath holds the program's termination message (the file
	// EnvTerminationLog names), copied there as the program's user when it
	// ended, at most MaxTerminationMessage bytes: the runtime reads this
	// copy, never a path the program controls.
	TerminationPath       = StateDir + "/termination"
	MaxTerminationMessage = 4096
	// ExecPIDPrefix + ID holds the pid of an exec helper's command, so
	// that `pve-image-init exec-kill ID` can end it when its caller left.
	ExecPIDPrefix = StateDir + "/exec-"
	// LogPrefix names log segments: LogPrefix + sequence number, from 0.
	// Each holds whole lines in the CRI log format ("TIME STREAM TAG
	// TEXT"); the init starts the next one when a segment exceeds
	// LogSegmentSize and keeps the newest two.
	LogPrefix      = StateDir + "/" + LogNamePrefix
	LogSegmentSize = 4 << 20
	LogNamePrefix  = "log."
)

// LogName is the file name of log segment seq in StateDir.
func LogName(seq int) string { return LogNamePrefix + strconv.Itoa(seq) }

// LogPath is the path of log segment seq.
func LogPath(seq int) string { return StateDir + "/" + LogName(seq) }

// Exit is how the program ended. The init holds the container (PID 1
// stays, doing nothing) until the runtime has read it and sends the halt
// signal, so that an exit status outlives a runtime that is down.
type Exit struct {
	// Code is the exit status, or 128+signal for a program a signal
	// killed, as shells and containerd report it.
	Code       int   `json:"exitCode"`
	Signal     int   `json:"signal,omitempty"`
	FinishedAt int64 `json:"finishedAt"` // unix nanoseconds
	// OOMKilled: the kernel's OOM killer ended the program (the
	// container's memory cgroup counted a kill while it ran).
	OOMKilled bool `json:"oomKilled,omitempty"`
	// LastLog is the sequence number of the last log segment.
	LastLog int `json:"lastLog"`
}

// Marshal encodes e as JSON without encoding/json (the init's size).
func (e Exit) Marshal() []byte {
	b := []byte(`{"exitCode":`)
	b = strconv.AppendInt(b, int64(e.Code), 10)
	if e.Signal != 0 {
		b = append(b, `,"signal":`...)
		b = strconv.AppendInt(b, int64(e.Signal), 10)
	}
	b = append(b, `,"finishedAt":`...)
	b = strconv.AppendInt(b, e.FinishedAt, 10)
	if e.OOMKilled {
		b = append(b, `,"oomKilled":true`...)
	}
	b = append(b, `,"lastLog":`...)
	b = strconv.AppendInt(b, int64(e.LastLog), 10)
	return append(b, "}\n"...)
}

// Marshal encodes s as JSON in the format Parse reads, without
// encoding/json (the init writes ExecSpecPath with it).
func (s *Spec) Marshal() []byte {
	b := []byte(`{"args":`)
	b = appendStrings(b, s.Args)
	b = append(b, `,"env":`...)
	b = appendStrings(b, s.Env)
	b = append(b, `,"workingDir":`...)
	b = AppendJSONString(b, s.WorkingDir)
	if s.User != "" {
		b = append(b, `,"user":`...)
		b = AppendJSONString(b, s.User)
	}
	if s.Home != "" {
		b = append(b, `,"home":`...)
		b = AppendJSONString(b, s.Home)
	}
	b = append(b, `,"uid":`...)
	b = strconv.AppendUint(b, uint64(s.UID), 10)
	b = append(b, `,"gid":`...)
	b = strconv.AppendUint(b, uint64(s.GID), 10)
	if len(s.Groups) > 0 {
		b = append(b, `,"groups":[`...)
		for i, g := range s.Groups {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(g), 10)
		}
		b = append(b, ']')
	}
	b = append(b, `,"stopSignal":`...)
	b = strconv.AppendInt(b, int64(s.StopSignal), 10)
	b = append(b, `,"stopTimeout":`...)
	b = strconv.AppendInt(b, int64(s.StopTimeout), 10)
	b = append(b, `,"mountRun":`...)
	b = strconv.AppendBool(b, s.MountRun)
	b = append(b, `,"mountTmp":`...)
	b = strconv.AppendBool(b, s.MountTmp)
	b = append(b, `,"dhcpTimeout":`...)
	b = strconv.AppendInt(b, int64(s.DHCPTimeout), 10)
	if s.NoNewPrivs {
		b = append(b, `,"noNewPrivs":true`...)
	}
	if len(s.CapDrop) > 0 {
		b = append(b, `,"capDrop":[`...)
		for i, c := range s.CapDrop {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(c), 10)
		}
		b = append(b, ']')
	}
	return append(b, "}\n"...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, s)
	}
	return append(b, ']')
}

// AppendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 as U+FFFD (as encoding/json).
func AppendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			b = utf8.AppendRune(b, r)
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}

// ParseStrings decodes a JSON array of strings (EnvArgv, EnvExtraEnv).
func ParseStrings(s string) ([]string, error) {
	d := &decoder{b: []byte(s)}
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	if d.skip(); d.i != len(d.b) {
		return nil, errors.New("trailing data")
	}
	if _, ok := v.([]any); !ok {
		return nil, errors.New("want an array of strings")
	}
	return stringList(v)
}

// ParseString decodes a JSON string (EnvHosts, EnvResolv).
func ParseString(s string) (string, error) {
	d := &decoder{b: []byte(s)}
	v, err := d.value()
	if err != nil {
		return "", err
	}
	if d.skip(); d.i != len(d.b) {
		return "", errors.New("trailing data")
	}
	return str(v)
}

// ParseGroups decodes EnvGroups.
func ParseGroups(s string) ([]uint32, error) {
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, errors.New("group " + strconv.Quote(f) + ": not a number")
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// HasControl reports whether s has a character Proxmox's env option
// refuses: a control character other than tab (pve-container Config.pm).
func HasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return true
		}
	}
	return false
}

// capNames are Linux's capabilities by number (linux/capability.h).
var capNames = []string{"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
	"LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE",
	"SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
	"SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"}

// ParseCapabilities turns capability names (CAP_ prefix optional, any
// case; ALL for every one) into their numbers.
func ParseCapabilities(names []string) ([]int, error) {
	var out []int
	for _, n := range names {
		n = strings.ToUpper(strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(n)), "CAP_"))
		if n == "" {
			continue
		}
		if n == "ALL" {
			out = out[:0]
			for i := range capNames {
				out = append(out, i)
			}
			return out, nil
		}
		found := false
		for i, c := range capNames {
			if c == n {
				out, found = append(out, i), true
				break
			}
		}
		if !found {
			return nil, errors.New("unknown capability " + strconv.Quote(n))
		}
	}
	return out, nil
}
