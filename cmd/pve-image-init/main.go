// Command pve-image-init is the init pve-image puts into application
// templates. As PID 1 of a Proxmox container it prepares what programs
// expect (tmpfs mounts, loopback, a DHCP lease on eth0, /etc/hostname), runs
// the image's program as its child with the image's user, environment and
// working directory (from /etc/pve-image/run.json), reaps orphans, forwards
// signals, turns LXC's halt signal into the image's StopSignal, and exits
// with the program's exit status.
//
// It is built static (CGO_ENABLED=0) and small, and needs nothing from the
// image: no shell, no libc, no /etc/passwd (read only when a CRI pod
// changes the user).
//
// Arguments after "--" replace the program (Proxmox 9.1+: entrypoint
// "/sbin/pve-image-init -- cmd args"). The environment LXC gives it, minus
// LXC's own variables, overrides the image's (Proxmox 9.1+: the env option).
package main

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

// logf writes a message to the console, and in a supervised container
// into its log too: what goes wrong must show in kubectl logs.
func logf(format string, args ...any) {
	msg := format1(format, args...)
	os.Stderr.WriteString(msg + "\n")
	if sink != nil {
		sink.line("stderr", false, []byte(msg))
	}
}

// infof writes a routine message to the console only: the program's log
// is the program's.
func infof(format string, args ...any) {
	os.Stderr.WriteString(format1(format, args...) + "\n")
}

// format1 formats %s, %d, %q and %v itself: fmt would cost the shim a
// tenth of its size.
func format1(format string, args ...any) string {
	var b strings.Builder
	b.WriteString("pve-image-init: ")
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 >= len(format) || len(args) == 0 {
			b.WriteByte(format[i])
			continue
		}
		i++
		a := args[0]
		args = args[1:]
		switch v := a.(type) {
		case string:
			if format[i] == 'q' {
				b.WriteString(strconv.Quote(v))
			} else {
				b.WriteString(v)
			}
		case int:
			b.WriteString(strconv.Itoa(v))
		case uint32:
			b.WriteString(strconv.FormatUint(uint64(v), 10))
		case error:
			b.WriteString(v.Error())
		case interface{ String() string }:
			b.WriteString(v.String())
		default:
			b.WriteString("?")
		}
	}
	return b.String()
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "exec":
			os.Exit(execMain(os.Args[2:]))
		case "exec-kill":
			os.Exit(execKillMain(os.Args[2:]))
		case "cat":
			os.Exit(catMain(os.Args[2:]))
		}
	}
	if os.Getpid() != 1 && os.Getenv("PVE_IMAGE_INIT_ANY_PID") == "" {
		logf("must run as PID 1 (the container's init)")
		os.Exit(111)
	}
	spec, err := runspec.Read(runspec.Path)
	if err != nil {
		logf("%v", err)
		os.Exit(111)
	}
	if i := slices.Index(os.Args, "--"); i >= 0 && i+1 < len(os.Args) {
		spec.Args = os.Args[i+1:]
	}
	// The environment LXC was given (Proxmox's env option) overrides the
	// image's, less LXC's own variables. Only the runtime's PVE_IMAGE_
	// variables count: an image's own ENV must not run it as root.
	spec.Env = runspec.MergeEnv(dropRuntimeVars(spec.Env), os.Environ(), func(k string) bool { return lxcVars[k] })
	rt, err := takeRuntimeEnv(spec)
	setupMounts(spec)
	if rt.supervised {
		// From here on, what goes wrong is also in the container's log
		// and exit record, where kubectl looks.
		if serr := startSupervision(); serr != nil && err == nil {
			err = serr
		}
	}
	if err == nil {
		err = applyOverrides(spec, rt, "")
	}
	if err != nil {
		logf("%v", err)
		os.Exit(failEarly(rt, 111))
	}

	setupHostname()
	setupFiles(rt)
	setupNetwork(spec)
	if rt.readonlyRoot {
		if err := remountRootReadonly(); err != nil {
			logf("read-only root file system: %v", err)
			os.Exit(failEarly(rt, 111))
		}
	}
	os.Exit(supervise(spec, rt))
}

// runtimeEnv is what pve-image's runtime asked of the init through
// PVE_IMAGE_ variables (runspec.EnvArgv and the others).
type runtimeEnv struct {
	uid, gid, user, cwd string
	groups              []uint32
	hosts, resolv       string
	hasHosts, hasResolv bool
	terminationLog      string
	supervised          bool
	noNewPrivs          bool
	capDrop             []int
	readonlyRoot        bool
}

// dropRuntimeVars leaves out PVE_IMAGE_ variables.
func dropRuntimeVars(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PVE_IMAGE_") {
			out = append(out, kv)
		}
	}
	return out
}

// takeRuntimeEnv removes every PVE_IMAGE_ variable from the program's
// environment and reads those addressed to the init: a replacement argv,
// variables with control characters, user, groups, working directory,
// restrictions and the files kubelet expects. It reads them all before
// reporting the first error, so that supervision is known even then.
func takeRuntimeEnv(spec *runspec.Spec) (*runtimeEnv, error) {
	rt := &runtimeEnv{}
	var env, extra []string
	var first error
	for _, kv := range spec.Env {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "PVE_IMAGE_") {
			env = append(env, kv)
			continue
		}
		var err error
		switch k {
		case runspec.EnvUID:
			rt.uid = v
		case runspec.EnvGID:
			rt.gid = v
		case runspec.EnvUser:
			rt.user = v
		case runspec.EnvCwd:
			rt.cwd = v
		case runspec.EnvGroups:
			rt.groups, err = runspec.ParseGroups(v)
		case runspec.EnvArgv:
			var argv []string
			if argv, err = runspec.ParseStrings(v); err == nil && len(argv) == 0 {
				err = errors.New("no program")
			}
			if err == nil {
				spec.Args = argv
			}
		case runspec.EnvExtraEnv:
			extra, err = runspec.ParseStrings(v)
		case runspec.EnvHosts:
			rt.hosts, err = runspec.ParseString(v)
			rt.hasHosts = true
		case runspec.EnvResolv:
			rt.resolv, err = runspec.ParseString(v)
			rt.hasResolv = true
		case runspec.EnvTerminationLog:
			rt.terminationLog = v
		case runspec.EnvSupervised:
			rt.supervised = v == "1"
		case runspec.EnvNoNewPrivs:
			rt.noNewPrivs = v == "1"
		case runspec.EnvReadonlyRoot:
			rt.readonlyRoot = v == "1"
		case runspec.EnvCapDrop:
			rt.capDrop, err = runspec.ParseCapabilities(strings.Split(v, ","))
		}
		if err != nil && first == nil {
			first = errors.New(k + ": " + err.Error())
		}
	}
	spec.Env = runspec.MergeEnv(env, extra, func(k string) bool { return strings.HasPrefix(k, "PVE_IMAGE_") })
	spec.NoNewPrivs, spec.CapDrop = rt.noNewPrivs, rt.capDrop
	return rt, first
}

// applyOverrides applies the runtime's user, group and working directory
// (a CRI container's security context and working_dir). A user given
// without a group gets its group, supplementary groups and home from the
// image's /etc/passwd and /etc/group, as runc does; a uid not in passwd
// gets group 0 and home "/", a name not in passwd is an error. Groups
// the runtime adds (supplemental groups, fsGroup) come on top.
func applyOverrides(spec *runspec.Spec, rt *runtimeEnv, root string) error {
	if rt.cwd != "" {
		spec.WorkingDir = rt.cwd
	}
	if rt.uid != "" || rt.user != "" {
		var uid uint64
		match := func(name string, _ uint32) bool { return name == rt.user }
		if rt.uid != "" {
			n, err := strconv.ParseUint(rt.uid, 10, 32)
			if err != nil {
				return errors.New(runspec.EnvUID + ": not a number: " + rt.uid)
			}
			uid = n
			match = func(_ string, id uint32) bool { return id == uint32(n) }
		}
		passwd, _ := os.ReadFile(root + "/etc/passwd")
		u, found := runspec.LookupPasswd(passwd, match)
		switch {
		case found:
			uid = uint64(u.UID)
		case rt.uid == "":
			return errors.New("user " + strconv.Quote(rt.user) + " is not in the image's /etc/passwd")
		default:
			u.Home = "/"
		}
		spec.UID, spec.GID, spec.Groups = uint32(uid), u.GID, nil
		if found && rt.gid == "" {
			group, _ := os.ReadFile(root + "/etc/group")
			spec.Groups = runspec.SupplementaryGroups(group, u.Name, u.GID)
		}
		// Only a HOME the converter filled in follows the user; one the
		// image or the pod set stays.
		for i, kv := range spec.Env {
			if spec.Home != "" && kv == "HOME="+spec.Home {
				spec.Env[i] = "HOME=" + u.Home
			}
		}
	}
	if rt.gid != "" {
		n, err := strconv.ParseUint(rt.gid, 10, 32)
		if err != nil {
			return errors.New(runspec.EnvGID + ": not a number: " + rt.gid)
		}
		spec.GID = uint32(n)
	}
	for _, g := range rt.groups {
		if !slices.Contains(spec.Groups, g) {
			spec.Groups = append(spec.Groups, g)
		}
	}
	return nil
}

// lxcVars are what LXC puts into init's environment for its own use.
var lxcVars = map[string]bool{"container": true, "container_ttys": true, "container_uuid": true}

func lookPath(file string, env []string) string {
	if strings.Contains(file, "/") {
		return file
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + file
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return file
}

func exitStatus(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 255
}
