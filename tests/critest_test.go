package tests

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestCritest runs cri-tools' validation suite (critest v1.37.0) against
// the daemon: its image specs and runtime-info specs, offline. The images
// critest pulls (gcr.io/k8s-staging-cri-tools/..., registry.k8s.io and
// k8s.gcr.io pause:3.9) are stand-ins built here with the USER values the
// specs check, pushed under the same repository paths to a local registry
// that the daemon mirrors gcr.io, registry.k8s.io and k8s.gcr.io to.
//
// One spec is skipped: "public image with digest" pins the upstream index
// digest sha256:9700f9a2..., which no image built here can have.
func TestCritest(t *testing.T) {
	critest := Tool(t, "PVE_IMAGE_CRITEST_BIN", "critest")
	reg := StartRegistry(t, RegistryOptions{})
	const staging = "k8s-staging-cri-tools/"
	for ref, cfg := range map[string]v1.Config{
		staging + "test-image-tag:test":                   {},
		staging + "test-image-tag:all":                    {},
		staging + "test-image-latest:latest":              {},
		staging + "test-image-1:latest":                   {},
		staging + "test-image-2:latest":                   {},
		staging + "test-image-3:latest":                   {},
		staging + "test-image-user-uid:latest":            {User: "1002"},
		staging + "test-image-user-username:latest":       {User: "www-data"},
		staging + "test-image-user-uid-group:latest":      {User: "1003:1004"},
		staging + "test-image-user-username-group:latest": {User: "www-data:1004"},
		"pause:3.9": {},
	} {
		reg.Push(t, ref, appImage(t, ref, cfg))
	}
	same := appImage(t, "tags", v1.Config{})
	for _, tag := range []string{"1", "2", "3"} {
		reg.Push(t, staging+"test-image-tags:"+tag, same)
	}
	c := newCLI(t)
	var mirrors []string
	for _, host := range []string{"gcr.io", "registry.k8s.io", "k8s.gcr.io"} {
		mirrors = append(mirrors, "--registry-mirror", host+"=http://"+reg.Host)
	}
	d := startCRI(t, c, mirrors...)

	cmd := exec.Command(critest, "--runtime-endpoint", d.Socket, "--image-endpoint", d.Socket,
		"--ginkgo.focus", "Image Manager|Image Consistency|Runtime info",
		"--ginkgo.skip", "public image with digest", "--ginkgo.no-color")
	out, err := cmd.CombinedOutput()
	text := string(out)
	ran := regexp.MustCompile(`Ran (\d+) of \d+ Specs`).FindStringSubmatch(text)
	if err != nil || ran == nil || ran[1] != "14" || !strings.Contains(text, "SUCCESS!") {
		t.Fatalf("critest: %v\n%s", err, text)
	}
	t.Logf("critest: ran %s specs: %s", ran[1], regexp.MustCompile(`\d+ Passed \| \d+ Failed[^\n]*`).FindString(text))
}
