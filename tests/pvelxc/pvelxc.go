// Package pvelxc runs containers the way Proxmox VE does, for tests and the
// Proxmox simulator: a template unpacked with pve-container's exact
// unprivileged tar command, a config like the one Proxmox writes, and
// lxc-start in the foreground of a background process, as
// pve-container@.service runs it.
//
// It needs root, LXC (lxc-start, lxc-usernsexec) and root:100000:65536 in
// /etc/subuid and /etc/subgid; Check says what is missing.
package pvelxc

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The id map Proxmox gives unprivileged containers (proxmox.md §1).
const (
	MapBase = 100000
	MapSize = 65536
)

// Check reports what this machine lacks to run unprivileged containers.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (unprivileged LXC id mapping as Proxmox does it)")
	}
	for _, tool := range []string{"lxc-usernsexec", "lxc-start", "lxc-stop"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (apt-get install lxc uidmap)", tool)
		}
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, _ := os.ReadFile(f)
		if !bytes.Contains(b, []byte(fmt.Sprintf("root:%d:%d", MapBase, MapSize))) {
			return fmt.Errorf("%s lacks root:%d:%d (scripts/setup-host.sh adds it)", f, MapBase, MapSize)
		}
	}
	return nil
}

// TarFlags is pve-container's restore_tar_archive_command after the
// compression flag, with PVE::Storage::Plugin::COMMON_TAR_FLAGS.
func TarFlags(rootdir string) []string {
	return []string{"--totals", "--one-file-system", "-p", "--sparse", "--numeric-owner", "--acls",
		"--xattrs", "--xattrs-include=user.*", "--xattrs-include=security.capability",
		"--warning=no-file-ignored", "--warning=no-xattr-write",
		"-C", rootdir, "--skip-old-files", "--anchored", "--exclude", "./dev/*"}
}

// Extract unpacks template into rootdir exactly as `pct create` does for an
// unprivileged container; rootdir is created, owned by the container's root.
// The compression flag comes from the file name alone, as Proxmox picks it.
func Extract(template, rootdir string) error {
	if err := os.MkdirAll(rootdir, 0o755); err != nil {
		return err
	}
	if err := os.Chown(rootdir, MapBase, MapBase); err != nil {
		return err
	}
	comp := map[string]string{".gz": "-z", ".xz": "-J", ".zst": "--zstd", ".bz2": "-j"}[filepath.Ext(template)]
	args := []string{"-m", fmt.Sprintf("u:0:%d:%d", MapBase, MapSize), "-m", fmt.Sprintf("g:0:%d:%d", MapBase, MapSize), "--", "tar", "xpf", "-"}
	if comp != "" {
		args = append(args, comp)
	}
	args = append(args, TarFlags(rootdir)...)
	in, err := os.Open(template)
	if err != nil {
		return err
	}
	defer in.Close()
	cmd := exec.Command("lxc-usernsexec", args...)
	cmd.Stdin = in
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("extracting %s as Proxmox does: %v\n%s", filepath.Base(template), err, out)
	}
	return nil
}

// Options are what Proxmox writes into a container's LXC config.
type Options struct {
	// OSType picks /usr/share/lxc/config/<ostype>.common.conf; Proxmox
	// uses common.conf for unmanaged.
	OSType string
	Arch   string // default amd64
	// Hostname is lxc.uts.name; default the container's name.
	Hostname string
	// InitCmd is lxc.init.cmd: Proxmox 9.1 writes the container's
	// entrypoint there. Empty boots /sbin/init.
	InitCmd string
	// Env is Proxmox 9.1's env option, one variable per element.
	Env []string
	// HaltSignal is lxc.signal.halt.
	HaltSignal string
	// Bridge attaches eth0 as a veth on that bridge; empty means no NIC.
	Bridge string
	// HWAddr is eth0's MAC; default random.
	HWAddr string
	// NICName is the NIC's name inside the container (lxc.net.0.name);
	// default eth0.
	NICName string
	// MemoryMB limits memory (lxc.cgroup.memory.limit_in_bytes); 0 none.
	MemoryMB int
	// IPv4 and IPv4Gateway are the NIC's static address (CIDR) and default
	// gateway (lxc.net.0.ipv4.address and .gateway), IPv6 and IPv6Gateway
	// the same for IPv6: what Proxmox 9.1 writes for a host-managed NIC
	// (pve-container src/PVE/LXC.pm update_lxc_config, L880-891), so that
	// LXC configures the interface at start. They need Bridge.
	IPv4, IPv4Gateway, IPv6, IPv6Gateway string
	// LinkUp brings the NIC up at start (lxc.net.0.flags = up), as Proxmox
	// does for host-managed NICs; LXC adds a gateway only to a NIC it
	// brings up.
	LinkUp bool
	// Mounts are bind mounts (lxc.mount.entry), applied in this order.
	// LXC mounts them as the container's root, so writing the config
	// makes the parents of each Source searchable by others.
	Mounts []Mount
}

// Mount is a bind mount of a host directory into the container.
type Mount struct {
	Source   string // absolute path on the host
	Target   string // path inside the container
	ReadOnly bool
}

// mountEntry is the lxc.mount.entry line of a bind mount: an fstab line
// whose target is relative to the rootfs, with create=dir so that LXC makes
// a missing target, and the fstab escapes (getmntent) for blanks and
// backslashes.
func mountEntry(m Mount) string {
	esc := strings.NewReplacer(`\`, `\134`, " ", `\040`, "\t", `\011`, "\n", `\012`)
	var comps []string
	for _, c := range strings.Split(m.Target, "/") {
		if c != "" {
			comps = append(comps, c)
		}
	}
	target := strings.Join(comps, "/")
	if target == "" {
		target = "."
	}
	opts := "bind,create=dir"
	if m.ReadOnly {
		opts += ",ro"
	}
	return fmt.Sprintf("lxc.mount.entry = %s %s none %s 0 0", esc.Replace(m.Source), esc.Replace(target), opts)
}

// Container is one container: Dir/Name/config and its rootfs.
type Container struct {
	Name       string
	Dir        string // the LXC path (-P)
	Rootfs     string
	ConsoleLog string
	Log        string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// RandomName is a container name no other test uses.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Create unpacks template under dir/name and writes the config.
func Create(dir, name, template string, o Options) (*Container, error) {
	c := &Container{Name: name, Dir: dir, Rootfs: filepath.Join(dir, name, "rootfs")}
	c.ConsoleLog = filepath.Join(dir, name, "console.log")
	c.Log = filepath.Join(dir, name, "lxc.log")
	// The container's root must reach its rootfs through the path.
	reachable(filepath.Join(dir, name), true)
	if err := Extract(template, c.Rootfs); err != nil {
		os.RemoveAll(filepath.Join(dir, name))
		return nil, err
	}
	if err := c.writeConfig(o); err != nil {
		return nil, err
	}
	return c, nil
}

// reachable makes dir and its parents searchable by others, so that the
// container's root (uid MapBase on the host) can pass them; with create,
// missing ones are made.
func reachable(dir string, create bool) {
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(d, fi.Mode().Perm()|0o011)
		}
		if err != nil && create {
			os.MkdirAll(d, 0o755)
		}
	}
}

// WriteConfig rewrites the container's LXC config from o, as Proxmox's
// update_lxc_config does before every start.
func (c *Container) WriteConfig(o Options) error { return c.writeConfig(o) }

// writeConfig writes the config Proxmox would write for o.
func (c *Container) writeConfig(o Options) error {
	include := "common.conf"
	if o.OSType != "" && o.OSType != "unmanaged" {
		if _, err := os.Stat("/usr/share/lxc/config/" + o.OSType + ".common.conf"); err == nil {
			include = o.OSType + ".common.conf"
		}
	}
	arch := o.Arch
	if arch == "" {
		arch = "amd64"
	}
	host := o.Hostname
	if host == "" {
		host = c.Name
	}
	cfg := []string{
		"lxc.arch = " + arch,
		"lxc.include = /usr/share/lxc/config/" + include,
		"lxc.include = /usr/share/lxc/config/userns.conf",
		"lxc.apparmor.profile = unconfined",
		"lxc.monitor.unshare = 1",
		fmt.Sprintf("lxc.idmap = u 0 %d %d", MapBase, MapSize),
		fmt.Sprintf("lxc.idmap = g 0 %d %d", MapBase, MapSize),
		"lxc.tty.max = 2",
		"lxc.environment = TERM=linux",
		"lxc.uts.name = " + host,
		"lxc.rootfs.path = dir:" + c.Rootfs,
		"lxc.console.logfile = " + c.ConsoleLog,
	}
	if o.InitCmd != "" {
		cfg = append(cfg, "lxc.init.cmd = "+o.InitCmd)
	}
	// Proxmox's LXC 6 writes env as lxc.environment.runtime; Debian's
	// LXC 5 has only lxc.environment, which reaches init the same way.
	for _, e := range o.Env {
		cfg = append(cfg, "lxc.environment = "+e)
	}
	if o.HaltSignal != "" {
		cfg = append(cfg, "lxc.signal.halt = "+o.HaltSignal)
	}
	if o.MemoryMB > 0 {
		cfg = append(cfg, fmt.Sprintf("lxc.cgroup.memory.limit_in_bytes = %d", o.MemoryMB<<20))
	}
	if o.Bridge != "" {
		mac := o.HWAddr
		if mac == "" {
			b := make([]byte, 4)
			rand.Read(b)
			mac = fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
		}
		nic := o.NICName
		if nic == "" {
			nic = "eth0"
		}
		cfg = append(cfg, "lxc.net.0.type = veth", "lxc.net.0.link = "+o.Bridge, "lxc.net.0.name = "+nic,
			"lxc.net.0.hwaddr = "+strings.ToLower(mac), "lxc.net.0.veth.pair = "+RandomName("vt"))
		for _, kv := range [][2]string{{"ipv4.address", o.IPv4}, {"ipv4.gateway", o.IPv4Gateway}, {"ipv6.address", o.IPv6}, {"ipv6.gateway", o.IPv6Gateway}} {
			if kv[1] != "" {
				cfg = append(cfg, "lxc.net.0."+kv[0]+" = "+kv[1])
			}
		}
		if o.LinkUp {
			cfg = append(cfg, "lxc.net.0.flags = up")
		}
	} else {
		cfg = append(cfg, "lxc.net.0.type = empty")
	}
	for _, m := range o.Mounts {
		// LXC mounts the entries from inside the user namespace, as the
		// container's root: the source's parents must let it pass.
		// (Proxmox mounts bind mounts from its prestart hook as the
		// host's root, which needs nothing of the kind.)
		reachable(filepath.Dir(m.Source), false)
		cfg = append(cfg, mountEntry(m))
	}
	return os.WriteFile(filepath.Join(c.Dir, c.Name, "config"), []byte(strings.Join(cfg, "\n")+"\n"), 0o644)
}

// Start runs lxc-start -F in the background.
func (c *Container) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		select {
		case <-c.done:
		default:
			return fmt.Errorf("container %s already running", c.Name)
		}
	}
	os.Remove(c.Log)
	out, err := os.Create(filepath.Join(c.Dir, c.Name, "lxc-start.out"))
	if err != nil {
		return err
	}
	cmd := exec.Command("lxc-start", "-n", c.Name, "-P", c.Dir, "-F", "-l", "INFO", "-o", c.Log)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("lxc-start: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(done) }()
	c.cmd, c.done = cmd, done
	return nil
}

// Done is closed when the container has stopped.
func (c *Container) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		d := make(chan struct{})
		close(d)
		return d
	}
	return c.done
}

// Running reports whether the container runs.
func (c *Container) Running() bool {
	select {
	case <-c.Done():
		return false
	default:
		return true
	}
}

// Shutdown asks init to halt (lxc-stop sends the halt signal, as `pct
// shutdown` does) and waits up to timeout; --nokill so a timeout is an error.
func (c *Container) Shutdown(timeout time.Duration) error {
	if !c.Running() {
		return nil
	}
	out, err := exec.Command("lxc-stop", "-n", c.Name, "-P", c.Dir, "--nokill", "-t", strconv.Itoa(max(1, int(timeout.Seconds())))).CombinedOutput()
	if err != nil {
		return fmt.Errorf("lxc-stop: %v: %s", err, bytes.TrimSpace(out))
	}
	select {
	case <-c.Done():
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("lxc-start did not end after the container stopped")
	}
}

// Kill stops the container at once, as `pct stop` does.
func (c *Container) Kill() error {
	if !c.Running() {
		return nil
	}
	if out, err := exec.Command("lxc-stop", "-n", c.Name, "-P", c.Dir, "-k").CombinedOutput(); err != nil && c.Running() {
		return fmt.Errorf("lxc-stop -k: %v: %s", err, bytes.TrimSpace(out))
	}
	<-c.Done()
	return nil
}

var childEnded = regexp.MustCompile(`Child <\d+> ended on error \((\d+)\)`)

// ExitCode is the exit status of the container's init in its last run,
// which LXC records only in its log (lxc.md).
func (c *Container) ExitCode() int {
	b, _ := os.ReadFile(c.Log)
	if m := childEnded.FindStringSubmatch(string(b)); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// Console is what the container printed so far.
func (c *Container) Console() string {
	b, _ := os.ReadFile(c.ConsoleLog)
	return string(b)
}

// LogErrors are the LXC log lines worth reading after a failure.
func (c *Container) LogErrors() string {
	b, _ := os.ReadFile(c.Log)
	re := regexp.MustCompile(`ERROR|WARN|ended`)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Destroy kills the container and removes its directory.
func (c *Container) Destroy() error {
	c.Kill()
	return os.RemoveAll(filepath.Join(c.Dir, c.Name))
}

// PID is the host pid of the container's init, from lxc-info as
// PVE::LXC::find_lxc_pid reads it; an error when it does not run.
func (c *Container) PID() (int, error) {
	out, err := exec.Command("lxc-info", "-n", c.Name, "-P", c.Dir, "-p", "-H").Output()
	pid, perr := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || perr != nil || pid <= 0 {
		return 0, fmt.Errorf("unable to get PID for CT %s (not running?)", c.Name)
	}
	return pid, nil
}
