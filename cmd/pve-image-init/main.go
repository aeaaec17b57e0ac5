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

// logf writes a message to the console. It formats %s, %d, %q and %v
// itself: fmt would cost the shim a tenth of its size.
func logf(format string, args ...any) {
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
	b.WriteByte('\n')
	os.Stderr.WriteString(b.String())
}

func main() {
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
	// image's, less LXC's own variables.
	spec.Env = runspec.MergeEnv(spec.Env, os.Environ(), func(k string) bool { return lxcVars[k] })
	if err := applyOverrides(spec, ""); err != nil {
		logf("%v", err)
		os.Exit(111)
	}

	setupMounts(spec)
	setupHostname()
	setupNetwork(spec)
	os.Exit(supervise(spec))
}

// applyOverrides takes PVE_IMAGE_UID, PVE_IMAGE_GID and PVE_IMAGE_CWD from
// the environment (a CRI container's user and working directory, set by
// pve-image's runtime) and keeps all PVE_IMAGE_ variables from the program.
// A user given without a group gets its group, supplementary groups and
// home from the image's /etc/passwd and /etc/group, as runc does; one not
// in passwd gets group 0 and home "/".
func applyOverrides(spec *runspec.Spec, root string) error {
	var env []string
	var uid, gid string
	for _, kv := range spec.Env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "PVE_IMAGE_UID":
			uid = v
		case "PVE_IMAGE_GID":
			gid = v
		case "PVE_IMAGE_CWD":
			spec.WorkingDir = v
		}
		if !strings.HasPrefix(k, "PVE_IMAGE_") {
			env = append(env, kv)
		}
	}
	spec.Env = env
	if uid != "" {
		n, err := strconv.ParseUint(uid, 10, 32)
		if err != nil {
			return errors.New("PVE_IMAGE_UID: not a number: " + uid)
		}
		passwd, _ := os.ReadFile(root + "/etc/passwd")
		u, found := runspec.LookupPasswd(passwd, func(_ string, id uint32) bool { return id == uint32(n) })
		spec.UID, spec.GID, spec.Groups = uint32(n), u.GID, nil
		if found && gid == "" {
			group, _ := os.ReadFile(root + "/etc/group")
			spec.Groups = runspec.SupplementaryGroups(group, u.Name, u.GID)
		}
		if !found {
			u.Home = "/"
		}
		// Only a HOME the converter filled in follows the user; one the
		// image or the pod set stays.
		for i, kv := range spec.Env {
			if spec.Home != "" && kv == "HOME="+spec.Home {
				spec.Env[i] = "HOME=" + u.Home
			}
		}
	}
	if gid != "" {
		n, err := strconv.ParseUint(gid, 10, 32)
		if err != nil {
			return errors.New("PVE_IMAGE_GID: not a number: " + gid)
		}
		spec.GID = uint32(n)
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
