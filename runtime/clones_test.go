package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/tests/pvesim"
)

func TestBaseMark(t *testing.T) {
	tests := []struct {
		name, desc string
		want       baseMarkInfo
		ok         bool
	}{
		{"ours", "text\n" + baseMark + `{"volid":"local:vztmpl/a.tar.zst","owner":"abc"}` + "\n", baseMarkInfo{"local:vztmpl/a.tar.zst", "abc"}, true},
		{"indented by an editor", "  " + baseMark + `{"volid":"v","owner":"o"}  `, baseMarkInfo{"v", "o"}, true},
		{"no mark", "pve-image CRI container app of pod default/web", baseMarkInfo{}, false},
		{"no owner", baseMark + `{"volid":"v"}`, baseMarkInfo{}, false},
		{"not JSON", baseMark + "local:vztmpl/a.tar.zst", baseMarkInfo{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseBaseMark(tt.desc)
			if got != tt.want || ok != tt.ok {
				t.Errorf("parseBaseMark = %+v %v, want %+v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestOwnerMark(t *testing.T) {
	tests := []struct {
		name, desc, want string
		ok               bool
	}{
		{"ours", "pve-image CRI container app (0123) of pod default/web\n" + ownerMark + "abc\n", "abc", true},
		{"indented by an editor", "text\n  " + ownerMark + "abc  ", "abc", true},
		{"no mark", "pve-image CRI container app of pod default/web", "", false},
		{"empty", "text\n" + ownerMark + "\n", "", false},
		{"a template container's", baseMark + `{"volid":"v","owner":"abc"}`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, ok := parseOwnerMark(tt.desc); got != tt.want || ok != tt.ok {
				t.Errorf("parseOwnerMark = %q %v, want %q %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestBaseHostname(t *testing.T) {
	for volid, want := range map[string]string{
		"local:vztmpl/bb_1_amd64.0123456789ab.tar.zst":                    "tmpl-bb-1-amd64-0123456789ab",
		"local:vztmpl/127.0.0.1-5000-app_v2_arm64.abcdefabcdef.tar.gz":    "tmpl-127-0-0-1-5000-app-v2-arm64-abcdefabcdef",
		"shared:vztmpl/" + strings.Repeat("x", 80) + "_1_amd64.a.tar.zst": "tmpl-" + strings.Repeat("x", 58),
	} {
		if got := baseHostname(volid); got != want || len(got) > 63 {
			t.Errorf("baseHostname(%q) = %q, want %q", volid, got, want)
		}
	}
}

func TestCloneType(t *testing.T) {
	for typ, want := range map[string]bool{"lvmthin": true, "zfspool": true, "rbd": true, "btrfs": true,
		"dir": false, "nfs": false, "cifs": false, "lvm": false, "cephfs": false} {
		if cloneType(typ) != want {
			t.Errorf("cloneType(%q) = %v", typ, !want)
		}
	}
}

// simTemplate writes a template the simulator detects as Debian into its
// shared storage.
func simTemplate(t *testing.T, sim *pvesim.Server, name string) string {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755})
	for _, f := range []struct{ name, body string }{{"etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n"}, {"etc/debian_version", "12.8\n"}} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./etc/", Mode: 0o755})
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./" + f.name, Mode: 0o644, Size: int64(len(f.body))})
		tw.Write([]byte(f.body))
	}
	tw.Close()
	zw.Close()
	if err := os.WriteFile(filepath.Join(sim.StoragePath("pve1", "shared"), "template", "cache", name), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return "shared:vztmpl/" + name
}

// TestLinkedClonesOnTheSimulator: creates on an LVM-thin storage are
// linked clones of one template container, made once however many creates
// come at once; a restarted daemon finds it again by its mark, another
// daemon makes its own; it goes once unused, and stays while its image
// is there; a directory storage gets Proxmox's unpacking.
func TestLinkedClonesOnTheSimulator(t *testing.T) {
	sim := pvesim.New(pvesim.Options{})
	sim.AddToken(pvesim.Token{ID: "root@pam!t", Secret: "s", Privs: []string{"*"}})
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	volid := simTemplate(t, sim, "deb_1_amd64.0123456789ab.tar.zst")
	ctx := context.Background()
	cl, err := proxmox.Dial(ctx, proxmox.Config{URL: sim.URL(), Token: "root@pam!t=s", Fingerprint: sim.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	server := func(dir string) *Server {
		s, err := New(Config{Proxmox: cl, Node: "pve1", StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	spec := func(i int, rootfs string) proxmox.ContainerSpec {
		return proxmox.ContainerSpec{Options: map[string]string{"ostemplate": volid, "rootfs": rootfs, "unprivileged": "1",
			"hostname": fmt.Sprintf("pod%d", i), "description": "pod", "tags": "pve-image;pod-" + fmt.Sprint(i), "memory": "128",
			"net0": fmt.Sprintf("name=eth0,bridge=vmbr0,hwaddr=02:00:00:00:00:%02X", i), "ostype": "debian"},
			After: map[string]string{"cmode": "console"}}
	}
	dirA := t.TempDir()
	a := server(dirA)

	const n = 8
	vmids, bases := make([]int, n), make([]*baseRef, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { vmids[i], bases[i], errs[i] = a.makeUnrecorded(ctx, "pve1", spec(i, "local-lvm:1")) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		if bases[i] == nil || bases[i].VMID != bases[0].VMID || bases[i].Volid != volid || bases[i].Storage != "local-lvm" {
			t.Fatalf("create %d: base %+v, want that of create 0 (%+v)", i, bases[i], bases[0])
		}
		ct, _ := sim.Container("pve1", vmids[i])
		c := ct.Config
		if c["rootfs"] != fmt.Sprintf("local-lvm:vm-%d-disk-0,size=1G", vmids[i]) || c["hostname"] != fmt.Sprintf("pod%d", i) ||
			c["memory"] != "128" || !strings.Contains(c["net0"], fmt.Sprintf("hwaddr=02:00:00:00:00:%02X", i)) || c["cmode"] != "console" ||
			c["tags"] != "pod-"+fmt.Sprint(i)+";pve-image" || c["template"] != "" {
			t.Errorf("clone %d config %v", vmids[i], c)
		}
	}
	base := bases[0].VMID
	tc, _ := sim.Container("pve1", base)
	if m, ok := parseBaseMark(tc.Config["description"]); !ok || m.Volid != volid || tc.Config["template"] != "1" || tc.Config["rootfs"] != fmt.Sprintf("local-lvm:base-%d-disk-0,size=1G", base) {
		t.Errorf("template container %v", tc.Config)
	}
	if got := len(sim.Containers("pve1")); got != n+1 {
		t.Errorf("%d containers, want %d clones and their template", got, n)
	}

	// A restarted daemon takes its template container again; another
	// daemon (another owner) makes its own.
	a2 := server(dirA)
	if _, b, err := a2.makeUnrecorded(ctx, "pve1", spec(20, "local-lvm:1")); err != nil || b == nil || b.VMID != base {
		t.Errorf("after a restart: base %+v, %v; want %d", b, err, base)
	}
	if _, b, err := server(t.TempDir()).makeUnrecorded(ctx, "pve1", spec(21, "local-lvm:1")); err != nil || b == nil || b.VMID == base {
		t.Errorf("another daemon: base %+v, %v; want its own", b, err)
	}

	// With its image recorded the template container stays; without, it
	// goes (LVM-thin lets it go under its clones).
	a2.state.update(func(st *stateFile) error {
		st.Images["sha256:x"] = &imageRecord{ID: "sha256:x", Volid: volid}
		return nil
	})
	a2.dropBase(ctx, bases[0].key())
	if _, ok := sim.Container("pve1", base); !ok {
		t.Fatal("the template container of a present image went")
	}
	a2.state.update(func(st *stateFile) error { delete(st.Images, "sha256:x"); return nil })
	a2.dropBase(ctx, bases[0].key())
	if _, ok := sim.Container("pve1", base); ok {
		t.Fatal("the unused template container stays")
	}
	// The next create makes it anew (nextid may hand out its VMID again).
	if _, b, err := a2.makeUnrecorded(ctx, "pve1", spec(22, "local-lvm:1")); err != nil || b == nil {
		t.Errorf("after its template container went: base %+v, %v", b, err)
	} else if ct, ok := sim.Container("pve1", b.VMID); !ok || ct.Config["template"] != "1" {
		t.Errorf("after its template container went: CT %d is %v", b.VMID, ct)
	}

	// Creates at once on a directory storage (Proxmox unpacks the
	// template) get a VMID each, though nextid names the same one to all.
	for i := range n {
		wg.Go(func() { vmids[i], bases[i], errs[i] = a.makeUnrecorded(ctx, "pve1", spec(40+i, "shared:1")) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || bases[i] != nil {
			t.Fatalf("create %d on a directory storage: %v %+v", i, errs[i], bases[i])
		}
	}

	// A directory storage: Proxmox unpacks the template.
	if vmid, b, err := a.makeUnrecorded(ctx, "pve1", spec(30, "shared:1")); err != nil || b != nil {
		t.Errorf("on a directory storage: %d %+v %v", vmid, b, err)
	}
	never, err := New(Config{Proxmox: cl, Node: "pve1", StateDir: t.TempDir(), LinkedClones: LinkedClonesNever})
	if err != nil {
		t.Fatal(err)
	}
	if _, b, err := never.makeUnrecorded(ctx, "pve1", spec(31, "local-lvm:1")); err != nil || b != nil {
		t.Errorf("--linked-clones never: %+v %v", b, err)
	}
	if _, err := New(Config{StateDir: t.TempDir(), LinkedClones: "always"}); err == nil {
		t.Error("--linked-clones always accepted")
	}
}

// TestWithVMID: creates at once hold different VMIDs, and a VMID another
// client took is not tried again.
func TestWithVMID(t *testing.T) {
	sim := pvesim.New(pvesim.Options{})
	sim.AddToken(pvesim.Token{ID: "root@pam!t", Secret: "s", Privs: []string{"*"}})
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	ctx := context.Background()
	cl, err := proxmox.Dial(ctx, proxmox.Config{URL: sim.URL(), Token: "root@pam!t=s", Fingerprint: sim.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Proxmox: cl, Node: "pve1", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	const n = 12
	held := make(chan int, n)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			s.withVMID(ctx, "pve1", func(id int) error {
				held <- id
				<-release
				return nil
			})
		})
	}
	seen := map[int]bool{}
	for range n {
		id := <-held
		if seen[id] {
			t.Errorf("VMID %d held twice at once", id)
		}
		seen[id] = true
	}
	close(release)
	wg.Wait()

	var tried []int
	err = s.withVMID(ctx, "pve1", func(id int) error {
		tried = append(tried, id)
		if len(tried) < 3 {
			return fmt.Errorf("create container %d: %w", id, proxmox.ErrVMIDTaken)
		}
		return nil
	})
	if err != nil || len(tried) != 3 || tried[0] == tried[1] || tried[1] == tried[2] || tried[0] == tried[2] {
		t.Errorf("tries %v, %v", tried, err)
	}
	err = s.withVMID(ctx, "pve1", func(id int) error { return fmt.Errorf("create container %d: %w", id, proxmox.ErrVMIDTaken) })
	if !errors.Is(err, proxmox.ErrVMIDTaken) {
		t.Errorf("after %d tries: %v", maxVMIDTries, err)
	}
}

// makeUnrecorded is makeContainer as a create whose record is then lost:
// the container is no longer pending, and no record names it.
func (s *Server) makeUnrecorded(ctx context.Context, node string, spec proxmox.ContainerSpec) (int, *baseRef, error) {
	vmid, b, err := s.makeContainer(ctx, node, spec)
	if err == nil {
		s.bases.done(vmid)
	}
	return vmid, b, err
}
