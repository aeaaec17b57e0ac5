package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// seedScript reports whether the image's file is still in the volume and
// takes it away: the first start sees it, later ones must not.
const seedScript = `if [ -f /data/seed ]; then echo "SEED=$(cat /data/seed)"; rm /data/seed; else echo "NOSEED-$(cat /proc/sys/kernel/random/uuid)"; fi
ls /extra && echo EXTRA-MOUNTED
exec sleep 1000000`

func seedImage(t testing.TB) v1.Image {
	entries := []Entry{Exec("bin/busybox", busybox(t)), File("data/seed", "image content\n"), File("cache/keep", "x"), Dir("tmp/")}
	for _, a := range []string{"sh", "echo", "cat", "sleep", "ls", "rm", "test", "["} {
		entries = append(entries, Symlink("bin/"+a, "busybox"))
	}
	return Image(t, amd64, v1.Config{Entrypoint: []string{"/bin/sh", "-c", seedScript},
		Volumes: map[string]struct{}{"/data": {}, "/cache": {}}}, Layer(t, entries...))
}

// TestVolumes: an image's volumes become volume mount points with
// backup=1, a new volume starts with the image's content at its path, and
// a later start does not put it back; --volume skips one, adds another and
// sizes it; what cannot work is refused before anything is uploaded.
func TestVolumes(t *testing.T) {
	sim := lifeSim(t)
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "seed:1", seedImage(t))
	c := newCLI(t)
	ref := reg.Host + "/seed:1"
	vmid := atoiVMID(t, c.ok(append([]string{"run", ref, "--net", "name=eth0,bridge=vmbr0", "--volume", "/cache=none",
		"--volume", "/extra=shared:2,ro=0"}, pveArgs(sim, "--rootfs", "shared:1")...)...))
	cfg := ctConfig(t, sim, vmid)
	want := map[string]string{"mp0": "mp=/data,backup=1,size=8G", "mp1": "mp=/extra,backup=1,ro=0,size=2G"}
	for k, w := range want {
		mp := proxmox.ParseMountPoint(k, cfg[k])
		if !strings.HasSuffix(cfg[k], w) || proxmox.VolumeOwner(mp.Volume()) != vmid || mp.Storage() != "shared" {
			t.Errorf("%s = %q, want shared:%d/vm-%d-disk-N.raw,%s", k, cfg[k], vmid, vmid, w)
		}
	}
	if _, ok := cfg["mp2"]; ok {
		t.Errorf("/cache=none made a mount point: %q", cfg["mp2"])
	}
	waitConsole(t, sim, "pve1", vmid, "SEED=image content", "EXTRA-MOUNTED")
	dataDir := sim.VolumeDir("pve1", proxmox.ParseMountPoint("mp0", cfg["mp0"]).Volume())
	if dataDir == "" {
		t.Fatalf("no volume %q on the storage", cfg["mp0"])
	}

	// Restart: the volume keeps what the program did to it.
	cl := pveClient(t, sim)
	ctx := context.Background()
	if err := cl.StopContainer(ctx, "pve1", vmid); err != nil {
		t.Fatal(err)
	}
	if err := cl.StartContainer(ctx, "pve1", vmid); err != nil {
		t.Fatal(err)
	}
	con := waitConsole(t, sim, "pve1", vmid, "NOSEED-")
	if strings.Count(con, "SEED=image content") != 1 {
		t.Errorf("the image's content came back into the volume:\n%s", con)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "seed")); !os.IsNotExist(err) {
		t.Errorf("seed in the volume after the program removed it: %v", err)
	}

	uploads := sim.Uploads()
	for _, tc := range []struct {
		flag string
		want string
	}{
		{"/data=/srv/host", "only the user root@pam create bind mount points"},
		{"/data=shared:abc", `size "abc": want GiB`},
		{"/data=shared:0", "a volume needs a size"},
		{"data=shared:1", "the path must be absolute"},
		{"/data=shared:1,bogus=1", `unknown mount point option "bogus"`},
	} {
		c.fails(append([]string{"run", ref, "--volume", tc.flag}, pveArgs(sim, "--rootfs", "shared:1")...), tc.want)
	}
	if sim.Uploads() != uploads || len(sim.Containers("pve1")) != 1 {
		t.Errorf("refused runs uploaded (%d -> %d) or created (%v)", uploads, sim.Uploads(), sim.Containers("pve1"))
	}
}

// TestVolumesBindForRoot: root@pam (a ticket, not a token) may bind-mount
// a host directory over an image volume.
func TestVolumesBindForRoot(t *testing.T) {
	sim := startSim(t, pvesim.Options{})
	sim.AddUser(pvesim.User{Name: "root@pam", Password: "pw", Privs: []string{"*"}})
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "seed:1", seedImage(t))
	c := newCLI(t)
	host := t.TempDir()
	args := []string{"run", reg.Host + "/seed:1", "--start=false", "--volume", "/data=" + host + ",ro=1", "--volume", "/cache=none",
		"--pve-url", sim.URL(), "--pve-user", "root@pam", "--pve-password", "pw", "--pve-fingerprint", sim.Fingerprint(), "--node", "pve1", "--rootfs", "shared:1"}
	vmid := atoiVMID(t, c.ok(args...))
	if got := ctConfig(t, sim, vmid)["mp0"]; got != host+",mp=/data,ro=1" {
		t.Errorf("mp0 = %q", got)
	}
	if n := len(sim.Volumes("pve1", "shared")); n != 0 {
		t.Errorf("%d volumes made for a bind mount", n)
	}
}
