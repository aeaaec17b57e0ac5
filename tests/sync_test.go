package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// storageFiles lists the templates on a node's storage.
func storageFiles(t *testing.T, sim *pvesim.Server, node, storage string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(sim.StoragePath(node, storage), "template", "cache"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	slices.Sort(out)
	return out
}

// TestSyncPrune: sync uploads what each node lacks, and a second run
// changes nothing; a new version replaces the old with --prune, which
// never touches a template pve-image did not make; a dry run only says;
// a shared storage is uploaded to once; a node that is down is reported
// while the others are synced; a machine with an empty cache finds
// everything in place through the template registry without fetching a
// template.
func TestSyncPrune(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	templates := StartRegistry(t, RegistryOptions{})
	sim := startSim(t, pvesim.Options{})
	base := baseLayer(t)
	reg.Push(t, "app:1", fleetImage(t, base, amd64, "app 1"))
	reg.Push(t, "app:2", fleetImage(t, base, amd64, "app 2"))
	reg.Push(t, "tool:1", fleetImage(t, base, amd64, "tool"))
	dir := t.TempDir()
	file := filepath.Join(dir, "pve-images.yaml")
	fleet := func(appTag string) {
		writeFile(t, file, fmt.Sprintf("images:\n  - %s/app:%s\n  - %s/tool:1\noutput:\n  registry: %s/fleet\n", reg.Host, appTag, reg.Host, templates.Host))
	}
	fleet("1")
	c := newCLI(t)
	c.ok("build", "-f", file)
	sync := func(c *cli, extra ...string) result {
		return c.run(append(append([]string{"sync", "-f", file}, pveArgs(sim, "--storage", "local")...), extra...)...)
	}
	r := sync(c, "--all-nodes")
	if r.err != nil || sim.Uploads() != 4 || strings.Count(r.stdout, "uploaded local:vztmpl/") != 4 {
		t.Fatalf("first sync: %d uploads, %v\n%s%s", sim.Uploads(), r.err, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, " on pve2\n") {
		t.Errorf("first sync: %s", r.stdout)
	}
	if r := sync(c, "--all-nodes"); r.err != nil || r.out() != "nothing to change" || sim.Uploads() != 4 {
		t.Errorf("second sync: %d uploads\n%s%s", sim.Uploads(), r.stdout, r.stderr)
	}
	// Templates pve-image did not make, one of them named like the app.
	for _, n := range []string{"app_1_amd64.tar.zst", "debian-12-standard_12.7-1_amd64.tar.zst"} {
		writeFile(t, filepath.Join(sim.StoragePath("pve1", "local"), "template", "cache", n), "not pve-image's")
	}
	before := storageFiles(t, sim, "pve1", "local")

	// app:2 replaces app:1.
	fleet("2")
	dry := sync(c, "--all-nodes", "--prune", "--keep", "1", "--dry-run")
	if dry.err != nil || strings.Count(dry.stdout, "would upload ") != 2 || strings.Count(dry.stdout, "would remove ") != 2 ||
		sim.Uploads() != 4 || !slices.Equal(storageFiles(t, sim, "pve1", "local"), before) {
		t.Errorf("dry run changed something or said wrong:\n%s%s", dry.stdout, dry.stderr)
	}
	r = sync(c, "--all-nodes", "--prune", "--keep", "1")
	if r.err != nil || strings.Count(r.stdout, "uploaded ") != 2 || strings.Count(r.stdout, "removed ") != 2 {
		t.Errorf("sync --prune:\n%s%s", r.stdout, r.stderr)
	}
	after := storageFiles(t, sim, "pve1", "local")
	host := strings.ReplaceAll(reg.Host, ":", "-")
	var app1, app2, tool int
	for _, n := range after {
		switch {
		case strings.HasPrefix(n, host+"-app_1_amd64."):
			app1++
		case strings.HasPrefix(n, host+"-app_2_amd64."):
			app2++
		case strings.HasPrefix(n, host+"-tool_1_amd64."):
			tool++
		}
	}
	if app1 != 0 || app2 != 1 || tool != 1 || !slices.Contains(after, "app_1_amd64.tar.zst") || !slices.Contains(after, "debian-12-standard_12.7-1_amd64.tar.zst") {
		t.Errorf("pve1 after --prune: %v", after)
	}
	if r := sync(c, "--all-nodes", "--prune", "--keep", "1"); r.out() != "nothing to change" {
		t.Errorf("sync --prune again: %s%s", r.stdout, r.stderr)
	}

	// A shared storage: one upload, whichever node is asked.
	uploads := sim.Uploads()
	if r := c.run(append(append([]string{"sync", "-f", file}, pveArgs(sim, "--storage", "shared")...), "--all-nodes")...); r.err != nil || sim.Uploads() != uploads+2 {
		t.Errorf("shared storage: %d uploads\n%s%s", sim.Uploads()-uploads, r.stdout, r.stderr)
	}

	// pve2 is down: pve1 is synced, pve2 reported, exit 1.
	fleet("1")
	sim.FailNextRequests("", "/nodes/pve2", 595, 1000)
	r = sync(c, "--all-nodes")
	if exitCode(r) != 1 || !strings.Contains(r.stderr, "node pve2, storage local:") || !strings.Contains(r.stdout, " on pve1\n") || strings.Contains(r.stdout, " on pve2\n") {
		t.Errorf("node down: exit %d\n%s%s", exitCode(r), r.stdout, r.stderr)
	}

	// Another machine, empty cache: what is there is known from the
	// template registry; nothing is downloaded or converted.
	fleet("2")
	c.ok("build", "-f", file) // publishes app:2, which sync converted
	other := newCLI(t)
	r = sync(other, "--node", "pve1", "--template-registry", templates.Host+"/fleet")
	if r.err != nil || r.out() != "nothing to change" {
		t.Errorf("other machine: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	if des, _ := os.ReadDir(filepath.Join(other.cache, "templates")); len(des) != 0 {
		t.Errorf("the other machine fetched %d templates to find nothing to do", len(des))
	}
}
