// Package tests runs pve-image end to end against real components: the
// Distribution registry, Proxmox's unprivileged tar extraction, and (in later
// files) LXC and the Proxmox API simulator.
package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pve-image/pve-image/tests/testenv"
)

// The binaries under test, built once by TestMain: pve-image, the init it
// puts into templates, and the program the boot tests run in containers.
var pveImage, pveImageInit, testApp string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pve-image-bin-*")
	if err != nil {
		panic(err)
	}
	os.Chmod(dir, 0o755)
	pveImage = filepath.Join(dir, "pve-image")
	pveImageInit = filepath.Join(dir, "pve-image-init")
	testApp = filepath.Join(dir, "testapp")
	for _, b := range []struct {
		out, pkg string
		static   bool
	}{{pveImage, "./cmd/pve-image", false}, {pveImageInit, "./cmd/pve-image-init", true}, {testApp, "./tests/testapp", true}} {
		build := exec.Command("go", "build", "-trimpath", "-o", b.out, b.pkg)
		if b.static {
			build.Args = append(build.Args[:2], "-ldflags=-s -w", "-trimpath", "-o", b.out, b.pkg)
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		build.Dir = testenv.RepoRoot()
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs pve-image with its own cache directory.
type cli struct {
	t     testing.TB
	cache string
	env   []string
}

func newCLI(t testing.TB) *cli {
	return &cli{t: t, cache: filepath.Join(t.TempDir(), "cache")}
}

type result struct {
	stdout, stderr string
	err            error
}

func (r result) out() string { return strings.TrimSpace(r.stdout) }

func (c *cli) cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, pveImage, args...)
	cmd.Env = append(os.Environ(), "PVE_IMAGE_CACHE_DIR="+c.cache, "DOCKER_CONFIG="+filepath.Join(c.cache, "no-docker-config"),
		"PVE_IMAGE_INIT_BINARY="+pveImageInit)
	cmd.Env = append(cmd.Env, c.env...)
	return cmd
}

func (c *cli) run(args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := c.cmd(ctx, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	return result{so.String(), se.String(), err}
}

// ok runs and fails the test on a non-zero exit.
func (c *cli) ok(args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.err != nil {
		c.t.Fatalf("pve-image %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r
}

// fails runs and fails the test unless the command exits non-zero with
// every one of wants in its stderr.
func (c *cli) fails(args []string, wants ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.err == nil {
		c.t.Fatalf("pve-image %s succeeded, want failure\nstdout: %s", strings.Join(args, " "), r.stdout)
	}
	for _, w := range wants {
		if !strings.Contains(r.stderr, w) {
			c.t.Errorf("pve-image %s: stderr lacks %q:\n%s", strings.Join(args, " "), w, r.stderr)
		}
	}
	return r
}
