package tests

import (
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	. "github.com/pve-image/pve-image/tests/testenv"
)

// TestAuth pulls from an htpasswd registry: refused without credentials
// and with wrong ones, saying which registry and repository and whether
// credentials were sent; accepted with --creds and with Docker's
// config.json.
func TestAuth(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{Auth: true})
	reg.Push(t, "private:1", smallImage(t, "auth"))
	ref := reg.Host + "/private:1"
	c := newCLI(t)

	for _, r := range []result{
		c.fails([]string{"convert", ref}, "image "+ref, "registry "+reg.Host+` refused access to repository "private"`,
			"401 UNAUTHORIZED", "no credentials were sent"),
		c.fails([]string{"convert", "--creds", reg.User + ":wrong", ref}, "registry "+reg.Host+` refused access to repository "private"`,
			"401 UNAUTHORIZED", `the credentials sent for user "tester" were rejected`),
	} {
		if strings.Contains(r.stderr, "map[") {
			t.Errorf("the error prints a Go map:\n%s", r.stderr)
		}
	}
	r := c.ok("convert", "--creds", reg.User+":"+reg.Password, ref)
	if !strings.Contains(r.stderr, "--creds is visible to every local user") {
		t.Errorf("no warning that --creds is visible:\n%s", r.stderr)
	}

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
	// Refused while parsing: nothing is dialled or looked up.
	for _, tc := range []struct{ ref, want string }{
		{"127.0.0.1:1/../../etc/passwd:x", `path segment ".." is not allowed`},
		{"foo://bar", `unknown transport "foo"`},
	} {
		r := c.fails([]string{"convert", tc.ref}, tc.want)
		for _, dialled := range []string{"dial", "lookup", "connection refused"} {
			if strings.Contains(r.stderr, dialled) {
				t.Errorf("%s was dialled:\n%s", tc.ref, r.stderr)
			}
		}
	}
}

// TestCredentialSources: credentials from --creds-file, PVE_IMAGE_CREDS
// and --username with --password-stdin, none of them on the command line;
// more than one way at once is refused.
func TestCredentialSources(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{Auth: true})
	reg.Push(t, "private:1", smallImage(t, "creds"))
	ref := reg.Host + "/private:1"
	file := filepath.Join(t.TempDir(), "creds")
	if err := os.WriteFile(file, []byte(reg.User+":"+reg.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte(reg.User+":nope\n"), 0o600)

	newCLI(t).ok("--creds-file", file, "pull", ref)
	newCLI(t).fails([]string{"--creds-file", wrong, "pull", ref}, `user "tester" were rejected`)

	env := newCLI(t)
	env.env = append(env.env, "PVE_IMAGE_CREDS="+reg.User+":"+reg.Password)
	env.ok("pull", ref)

	stdin := newCLI(t)
	cmd := stdin.cmd(t.Context(), "--username", reg.User, "--password-stdin", "pull", ref)
	cmd.Stdin = strings.NewReader(reg.Password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("--password-stdin: %v\n%s", err, out)
	}

	c := newCLI(t)
	c.fails([]string{"--creds", "a:b", "--creds-file", file, "pull", ref}, "--creds and --creds-file: give credentials one way only")
	c.fails([]string{"--password-stdin", "pull", ref}, "--password-stdin needs --username")
	c.fails([]string{"--username", "x", "pull", ref}, "--username goes with --password-stdin")
	c.fails([]string{"--creds-file", filepath.Join(t.TempDir(), "missing"), "pull", ref}, "--creds-file", "no such file")
}

// TestPullJSON: pull --json describes what was pulled, and which blobs
// were already in the cache.
func TestPullJSON(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	img := smallImage(t, "json")
	reg.Push(t, "app:1", img)
	c := newCLI(t)
	ref := reg.Host + "/app:1"
	digest, _ := img.Digest()
	cfg, _ := img.ConfigName()
	layers, _ := img.Layers()
	for i, wantCached := range []bool{false, true} {
		var got struct {
			Image, Digest, MediaType, Platform string
			Config                             struct{ Digest string }
			Layers                             []struct {
				Digest string
				Size   int64
				Cached bool
			}
			Size      int64
			FromCache bool
		}
		out := c.ok("pull", "--json", ref).stdout
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("pull %d: %v\n%s", i, err, out)
		}
		if got.Image != ref || got.Digest != digest.String() || got.Config.Digest != cfg.String() || got.Platform != "linux/amd64" ||
			len(got.Layers) != len(layers) || got.FromCache || got.Size <= 0 {
			t.Errorf("pull %d: %s", i, out)
		}
		for j, l := range got.Layers {
			d, _ := layers[j].Digest()
			if l.Digest != d.String() || l.Cached != wantCached {
				t.Errorf("pull %d: layer %d is %+v, want %s cached=%v", i, j, l, d, wantCached)
			}
		}
	}
}

// TestOfflineTag: a tag pulled once is usable while its registry is down:
// with --offline without asking it, and otherwise after the registry fails
// to answer, with a warning naming the digest.
func TestOfflineTag(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	img := smallImage(t, "offline")
	reg.Push(t, "app:1", img)
	digest, _ := img.Digest()
	c := newCLI(t)
	ref := reg.Host + "/app:1"
	first := c.ok("convert", ref).out()
	reg.Stop()

	if got := c.ok("--offline", "convert", ref).out(); got != first {
		t.Errorf("--offline gave %s, want %s", got, first)
	}
	r := c.ok("--retries", "1", "convert", ref)
	if r.out() != first || !strings.Contains(r.stderr, "registry unreachable; using the digest the tag last resolved to") ||
		!strings.Contains(r.stderr, digest.String()) {
		t.Errorf("fallback gave %s:\n%s", r.out(), r.stderr)
	}
	var pulled struct{ FromCache bool }
	json.Unmarshal([]byte(c.ok("--offline", "pull", "--json", ref).stdout), &pulled)
	if !pulled.FromCache {
		t.Error("pull --json does not say the tag came from the cache")
	}
	c.fails([]string{"--offline", "convert", reg.Host + "/app:2"}, "offline: the tag has not been pulled into this cache")
	newCLI(t).fails([]string{"--offline", "convert", ref}, "offline")
	c.fails([]string{"--retries", "0", "convert", reg.Host + "/app:2"}, "connection refused")
}

// TestPlainHTTPRegistry: a registry on a private address that speaks
// plain HTTP is not sent credentials or requests in the clear; the error
// points at --insecure-registry, which reaches it.
func TestPlainHTTPRegistry(t *testing.T) {
	ip := nonLoopbackIPv4(t)
	reg := StartRegistry(t, RegistryOptions{Addr: ip + ":" + freePortOn(t, ip)})
	reg.Push(t, "app:1", smallImage(t, "plain"))
	c := newCLI(t)
	ref := reg.Host + "/app:1"
	c.fails([]string{"convert", ref}, "server gave HTTP response to HTTPS client", "--insecure-registry "+reg.Host)
	c.ok("--insecure-registry", reg.Host, "convert", ref)
}

func nonLoopbackIPv4(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	Missing(t, "no non-loopback IPv4 address to serve a registry on")
	return ""
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
