package tests

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestAuth pulls from an htpasswd registry: refused without credentials,
// accepted with --creds and with Docker's config.json.
func TestAuth(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{Auth: true})
	reg.Push(t, "private:1", smallImage(t, "auth"))
	ref := reg.Host + "/private:1"
	c := newCLI(t)

	c.fails([]string{"convert", ref}, "image "+ref, "UNAUTHORIZED")
	c.fails([]string{"convert", "--creds", reg.User + ":wrong", ref}, "UNAUTHORIZED")
	c.ok("convert", "--creds", reg.User+":"+reg.Password, ref)

	// A fresh cache, credentials from $DOCKER_CONFIG/config.json.
	d := newCLI(t)
	cfgDir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(reg.User + ":" + reg.Password))
	os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(`{"auths":{"`+reg.Host+`":{"auth":"`+auth+`"}}}`), 0o600)
	d.env = append(d.env, "DOCKER_CONFIG="+cfgDir)
	d.ok("convert", ref)
}

// TestPlatformSelection picks from a multi-platform index and lists what
// there is when the platform is missing.
func TestPlatformSelection(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	arm := Image(t, v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, v1.Config{}, Layer(t, File("arch", "arm64")))
	x86 := Image(t, amd64, v1.Config{}, Layer(t, File("arch", "amd64")))
	reg.Push(t, "multi:1", Index(t, map[string]v1.Image{"linux/arm64/v8": arm, "linux/amd64": x86}))
	reg.Push(t, "single:1", x86)
	c := newCLI(t)

	for _, tc := range []struct{ platform, suffix string }{
		{"linux/amd64", "_amd64.tar.zst"}, {"linux/arm64", "_arm64.tar.zst"}, {"linux/arm64/v8", "_arm64.tar.zst"},
	} {
		out := c.ok("convert", "--init", "none", "--platform", tc.platform, reg.Host+"/multi:1").out()
		if !strings.HasSuffix(out, tc.suffix) {
			t.Errorf("--platform %s gave %s", tc.platform, out)
		}
	}
	c.fails([]string{"convert", "--platform", "linux/s390x", reg.Host + "/multi:1"},
		"no manifest for platform linux/s390x", "linux/amd64, linux/arm64/v8")
	c.fails([]string{"convert", "--platform", "linux/arm64", reg.Host + "/single:1"},
		"image is for linux/amd64 only, not linux/arm64")
	c.fails([]string{"convert", "--platform", "linux", reg.Host + "/single:1"}, "want os/arch")
}

// TestLoopbackIsPlainHTTP: Docker reaches all of 127.0.0.0/8 over HTTP
// without --insecure-registry; go-containerregistry alone only 127.0.0.1.
func TestLoopbackIsPlainHTTP(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{Addr: "127.0.0.2:" + freePortOn(t, "127.0.0.2")})
	reg.Push(t, "app:1", smallImage(t, "lo"))
	newCLI(t).ok("convert", reg.Host+"/app:1")
}

func TestBadReferences(t *testing.T) {
	c := newCLI(t)
	c.fails([]string{"convert", "UPPER/case:tag"}, "image reference")
	c.fails([]string{"convert", "oci:"}, "no path")
	c.fails([]string{"convert", "oci:/does/not/exist"}, "not a directory")
	c.fails([]string{"convert", "docker-archive:/does/not/exist.tar"}, "no such file")
	c.fails([]string{"convert", "--creds", "nocolon", "example.com/x:1"}, "USER:PASS")
}

// TestMirrors pulls docker.io and registry.k8s.io names from a local mirror,
// given by flag and by a containerd-style hosts.toml directory: the real
// registries are never reached (this machine cannot reach them).
func TestMirrors(t *testing.T) {
	mirror := StartRegistry(t, RegistryOptions{})
	mirror.Push(t, "library/app:1", smallImage(t, "mirror"))
	mirror.Push(t, "pause:3.9", smallImage(t, "pause"))
	c := newCLI(t)
	out := c.ok("--registry-mirror", "docker.io=http://"+mirror.Host, "convert", "app:1").out()
	if !strings.HasSuffix(out, "/app_1_amd64.tar.zst") {
		t.Errorf("template %s", out)
	}
	dir := t.TempDir()
	for host, body := range map[string]string{
		"registry.k8s.io": "server = \"http://" + mirror.Host + "\"\n",
		"_default":        "[host.\"http://" + mirror.Host + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
	} {
		os.MkdirAll(filepath.Join(dir, host), 0o755)
		os.WriteFile(filepath.Join(dir, host, "hosts.toml"), []byte(body), 0o644)
	}
	c.ok("--registry-config", dir, "convert", "registry.k8s.io/pause:3.9")
	c.ok("--registry-config", dir, "convert", "k8s.gcr.io/pause:3.9")
	c.fails([]string{"--registry-mirror", "docker.io=ftp://x", "convert", "app:1"}, "want http(s)://host[:port]")
}
