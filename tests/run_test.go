package tests

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestRunRefusesBeforeUploading: what the Proxmox version cannot do
// (--env before 9.1) is refused before the template goes to the storage.
func TestRunRefusesBeforeUploading(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.Push(t, "web:1", appImage(t, "early", v1.Config{}))
	sim := startSim(t, pvesim.Options{Version: "8.4.1"})
	c := newCLI(t)
	c.fails(append([]string{"run", reg.Host + "/web:1", "--env", "A=1"}, pveArgs(sim, "--rootfs", "shared:1")...), "need Proxmox 9.1 or later")
	if n := sim.Uploads(); n != 0 {
		t.Errorf("%d uploads before the refusal", n)
	}
}
