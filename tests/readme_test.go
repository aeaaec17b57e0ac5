package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/template"
	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// The README's examples run here as written, with only what names another
// machine replaced: hosts, ports, tokens. A block marked
// <!-- README example: TestName --> is run by that test.

// readmeExample returns the shell block that follows the marker of test.
func readmeExample(t *testing.T, test string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- README example: " + regexp.QuoteMeta(test) + " -->\\s*```sh\\n(.*?)```")
	m := re.FindSubmatch(b)
	if m == nil {
		t.Fatalf("README.md has no example marked for %s", test)
	}
	return string(m[1])
}

// readmeLine fails unless the README holds this command line as written.
func readmeLine(t *testing.T, line string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), line) {
		t.Fatalf("README.md no longer shows %q: update this test with it", line)
	}
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Missing(t, "%s not found (scripts/setup-host.sh installs it)", tool)
		}
	}
}

// TestREADMENativeConfig: the example that sets a container's native
// config (entrypoint, env with its NUL separators, cmode) through the API
// with curl, against the simulator.
func TestREADMENativeConfig(t *testing.T) {
	requireTools(t, "jq", "curl", "bash")
	script := readmeExample(t, "TestREADMENativeConfig")
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "example/app:1.2", appImage(t, "readme", v1.Config{Env: []string{"PATH=/bin", "A=1"}}))
	sim := startSim(t, pvesim.Options{})
	c := newCLI(t)
	ref := reg.Host + "/example/app:1.2"
	// The container the README's pct create makes.
	c.ok(append([]string{"run", ref, "--vmid", "201", "--start=false"}, pveArgs(sim)...)...)

	for from, to := range map[string]string{
		"ghcr.io/example/app:1.2":           ref,
		"--cacert /etc/pve/pve-root-ca.pem": "-k", // the simulator's certificate is its own
		"https://localhost:8006":            sim.URL(),
		"$(hostname)":                       "pve1",
	} {
		if !strings.Contains(script, from) {
			t.Fatalf("the README example no longer has %q:\n%s", from, script)
		}
		script = strings.ReplaceAll(script, from, to)
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(pveImage)+":"+os.Getenv("PATH"), "PVE_TOKEN="+simToken+"="+simSecret,
		"PVE_IMAGE_CACHE_DIR="+c.cache, "PVE_IMAGE_INIT_BINARY="+pveImageInit)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the README example failed: %v\n%s", err, out)
	}

	var want template.Meta
	if err := json.Unmarshal([]byte(c.ok("inspect", "--json", "--env", "LOG_LEVEL=debug", ref).stdout), &want); err != nil {
		t.Fatal(err)
	}
	cfg := ctConfig(t, sim, 201)
	for _, k := range []string{"entrypoint", "env", "cmode"} {
		if cfg[k] != want.Proxmox.Native.Options[k] {
			t.Errorf("%s = %q, want %q", k, cfg[k], want.Proxmox.Native.Options[k])
		}
	}
	if !strings.Contains(cfg["env"], "\x00LOG_LEVEL=debug") {
		t.Errorf("env %q lacks the variable the example adds", cfg["env"])
	}
}

// TestREADMEQuickStart: the offline demo of the quick start.
func TestREADMEQuickStart(t *testing.T) {
	requireTools(t, "make")
	readmeLine(t, "make demo-offline")
	cmd := exec.Command("make", "demo-offline")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "PVE_IMAGE_CACHE_DIR="+filepath.Join(t.TempDir(), "cache"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make demo-offline: %v\n%s", err, out)
	}
	for _, want := range []string{"Kind:", "application image", "Runs as:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make demo-offline shows no %q:\n%s", want, out)
		}
	}
}
