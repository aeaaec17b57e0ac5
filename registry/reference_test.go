package registry

import (
	"net/http"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestParseReference(t *testing.T) {
	tests := []struct {
		in                   string
		transport            Transport
		str, repo, tag, path string
		scheme               string
	}{
		{in: "alpine", transport: Docker, str: "docker.io/library/alpine:latest", repo: "docker.io/library/alpine", tag: "latest", scheme: "https"},
		{in: "docker://alpine:3.20", transport: Docker, str: "docker.io/library/alpine:3.20", repo: "docker.io/library/alpine", tag: "3.20", scheme: "https"},
		{in: "user/app:1", transport: Docker, str: "docker.io/user/app:1", repo: "docker.io/user/app", tag: "1", scheme: "https"},
		{in: "ghcr.io/o/app@sha256:" + hex64, transport: Docker, str: "ghcr.io/o/app@sha256:" + hex64, repo: "ghcr.io/o/app", tag: "sha256:" + hex64, scheme: "https"},
		{in: "localhost:5000/app:1", transport: Docker, str: "localhost:5000/app:1", repo: "localhost:5000/app", tag: "1", scheme: "http"},
		{in: "127.0.0.7:5000/app", transport: Docker, str: "127.0.0.7:5000/app:latest", repo: "127.0.0.7:5000/app", tag: "latest", scheme: "http"},
		{in: "registry.lan:5000/app", transport: Docker, str: "registry.lan:5000/app:latest", repo: "registry.lan:5000/app", tag: "latest", scheme: "http"},
		{in: "10.1.2.3:5000/app", transport: Docker, str: "10.1.2.3:5000/app:latest", repo: "10.1.2.3:5000/app", tag: "latest"},
		{in: "oci:/srv/layout:v1", transport: OCI, str: "oci:/srv/layout:v1", repo: "layout", tag: "v1", path: "/srv/layout"},
		{in: "oci:/srv/layout", transport: OCI, str: "oci:/srv/layout", repo: "layout", path: "/srv/layout"},
		{in: "oci-archive:/tmp/app.tar:2", transport: OCIArchive, str: "oci-archive:/tmp/app.tar:2", repo: "app", tag: "2", path: "/tmp/app.tar"},
		{in: "docker-archive:/tmp/save.tar", transport: DockerArchive, str: "docker-archive:/tmp/save.tar", repo: "save", path: "/tmp/save.tar"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseReference(tc.in, []string{"registry.lan:5000"})
			if err != nil {
				t.Fatal(err)
			}
			if r.Transport != tc.transport || r.String() != tc.str || r.Repository() != tc.repo || r.TagOrDigest() != tc.tag || r.Path != tc.path {
				t.Errorf("got %s %q repo %q tag %q path %q", r.Transport, r.String(), r.Repository(), r.TagOrDigest(), r.Path)
			}
			if tc.scheme != "" && r.Name.Context().Scheme() != tc.scheme {
				t.Errorf("scheme %s, want %s", r.Name.Context().Scheme(), tc.scheme)
			}
		})
	}
}

// TestParseReferenceRefuses: each bad reference is refused with a message
// saying what is wrong, and nothing is dialled (parsing never is).
func TestParseReferenceRefuses(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "empty image reference"},
		{"UPPER/x", "image reference"},
		{"oci:", "no path after oci:"},
		{"app:tag:extra@sha256:zz", "image reference"},
		{"127.0.0.1:1/../../etc/passwd:x", `path segment ".." is not allowed`},
		{"127.0.0.1:1/app/../../x", `path segment ".." is not allowed`},
		{"ghcr.io/./app:1", `path segment "." is not allowed`},
		{"docker://ghcr.io/o/../app", `path segment ".." is not allowed`},
		{"ghcr.io/o/.hidden:1", `component ".hidden"`},
		{"ghcr.io/o/a..b:1", `component "a..b"`},
		{"ghcr.io/o/-a:1", `component "-a"`},
		{"foo://bar", `unknown transport "foo"`},
		{"https://ghcr.io/o/app:1", `unknown transport "https"`},
		{"docker://http://ghcr.io/o/app", `unknown transport "http"`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseReference(tc.in, nil)
			if err == nil {
				t.Fatalf("accepted as %s", r)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
		})
	}
	for _, good := range []string{"a__b/c-d.e_f:1", "ghcr.io/o/a--b:1", "x/y.z/w"} {
		if _, err := ParseReference(good, nil); err != nil {
			t.Errorf("ParseReference(%q): %v", good, err)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

type recordTransport struct{ urls []string }

func (r *recordTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.urls = append(r.urls, req.URL.String())
	return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
}

// TestHTTPSOnly: go-containerregistry sends RFC 1918 hosts plain HTTP; we
// upgrade those unless listed as insecure, and leave loopback alone.
func TestHTTPSOnly(t *testing.T) {
	rec := &recordTransport{}
	tr := &httpsOnly{next: rec, insecure: []string{"192.168.1.5:5000"}}
	for _, u := range []string{"http://10.0.0.1:5000/v2/", "http://192.168.1.5:5000/v2/", "http://127.0.0.1:5000/v2/", "http://localhost/v2/", "https://ghcr.io/v2/"} {
		req, _ := http.NewRequest("GET", u, nil)
		tr.RoundTrip(req)
	}
	want := []string{"https://10.0.0.1:5000/v2/", "http://192.168.1.5:5000/v2/", "http://127.0.0.1:5000/v2/", "http://localhost/v2/", "https://ghcr.io/v2/"}
	for i := range want {
		if rec.urls[i] != want[i] {
			t.Errorf("request %d went to %s, want %s", i, rec.urls[i], want[i])
		}
	}
}

func TestChoosePlatform(t *testing.T) {
	idx := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + hex64[:63] + `1","size":1,"platform":{"os":"linux","architecture":"amd64"}},
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + hex64[:63] + `2","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v6"}},
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + hex64[:63] + `3","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}},
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + hex64[:63] + `4","size":1,"platform":{"os":"linux","architecture":"arm64"}},
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + hex64[:63] + `5","size":1,"platform":{"os":"unknown","architecture":"unknown"}}]}`
	tests := []struct {
		want v1.Platform
		last string // last digit of the chosen digest, "" for an error
	}{
		{v1.Platform{OS: "linux", Architecture: "amd64"}, "1"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "3"},
		{v1.Platform{OS: "linux", Architecture: "arm"}, "2"},
		{v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "4"},
		{v1.Platform{OS: "linux", Architecture: "s390x"}, ""},
	}
	for _, tc := range tests {
		p := NewPuller(nil, Options{Platform: tc.want})
		d, err := p.choose([]byte(idx))
		switch {
		case tc.last == "" && err == nil:
			t.Errorf("%s: chose %s", PlatformString(tc.want), d.Digest)
		case tc.last == "" && err.Error() != "no manifest for platform linux/s390x; the image has: linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64":
			t.Errorf("error %q", err)
		case tc.last != "" && (err != nil || d.Digest.Hex[63:] != tc.last):
			t.Errorf("%s: chose %v, %v; want ...%s", PlatformString(tc.want), d.Digest, err, tc.last)
		}
	}
}
