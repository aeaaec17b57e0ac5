package tmplreg

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// testRegistry is an in-memory registry behind a handler that can refuse
// or damage requests.
type testRegistry struct {
	host string
	mu   sync.Mutex
	// refuse answers requests with method (and a path containing part)
	// with status.
	refuse func(r *http.Request) int
	// damage rewrites GET responses of paths containing it.
	damage string
	gets   map[string]int
}

func startRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{gets: map[string]int{}}
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		refuse, damage := tr.refuse, tr.damage
		if r.Method == http.MethodGet {
			tr.gets[r.URL.Path]++
		}
		tr.mu.Unlock()
		if refuse != nil {
			if st := refuse(r); st != 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(st)
				io.WriteString(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`)
				return
			}
		}
		if damage != "" && r.Method == http.MethodGet && strings.Contains(r.URL.Path, damage) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			b := rec.Body.Bytes()
			if len(b) > 0 {
				b[len(b)/2] ^= 0xff
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(b)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")
	return tr
}

func (tr *testRegistry) set(f func()) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	f()
}

// fixture is a template file with its metadata, as the cache would hold it.
type fixture struct {
	t    Template
	opts template.Options
	res  *registry.Resolved
}

func digestOf(s string) v1.Hash {
	sum := sha256.Sum256([]byte(s))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func newFixture(t *testing.T, size int, platform, index string) fixture {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	dir := t.TempDir()
	p, _ := registry.ParsePlatform(platform)
	file := "app_1_" + template.PVEArch(p) + ".tar.zst"
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	manifest := digestOf("manifest " + platform)
	config := digestOf("config " + platform)
	res := &registry.Resolved{Digest: manifest, Platform: p, Repository: "registry.example/app", Tag: "1",
		Manifest: &v1.Manifest{Config: v1.Descriptor{Digest: config}}}
	meta := template.Meta{Converter: "pve-image test", Ref: "registry.example/app:1", Repository: "registry.example/app",
		ManifestDigest: manifest.String(), ConfigDigest: config.String(), Platform: platform, Arch: template.PVEArch(p),
		File: file, Size: int64(size), SHA256: hex.EncodeToString(sum[:]), IndexDigest: index}
	opts := template.Options{Compression: template.Zstd, Init: template.InitAuto}
	key := digestOf(platform + index).Hex
	return fixture{t: Template{Key: key, Path: path, Meta: meta, Settings: SettingsOf(opts), Encoder: opts.Compression.Encoder()}, opts: opts, res: res}
}

func (f fixture) request(dir string) template.RemoteRequest {
	return template.RemoteRequest{Key: f.t.Key, Resolved: f.res, Options: f.opts, Dir: dir, File: f.t.Meta.File}
}

func newStore(t *testing.T, host string, o Options) *Store {
	t.Helper()
	o.Retries = -1
	s, err := New(host+"/templates", o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPublishFetch stores templates whole and in chunks and fetches them
// back, byte for byte, by the key alone.
func TestPublishFetch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int
		chunk  int64
		chunks int
	}{
		{"whole", 3000, 0, 1},
		{"chunked", 2500, 1000, 3},
		{"exact chunks", 2000, 1000, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := startRegistry(t)
			s := newStore(t, reg.host, Options{ChunkSize: tc.chunk})
			f := newFixture(t, tc.size, "linux/amd64", "")
			pub, err := s.Publish(context.Background(), f.t, PublishOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !pub.Uploaded || !strings.HasPrefix(pub.Ref, reg.host+"/templates@sha256:") {
				t.Errorf("published %+v", pub)
			}
			want := []string{KeyTag(f.t.Key), "app_1_amd64", "app_1"}
			if strings.Join(pub.Tags, " ") != strings.Join(want, " ") {
				t.Errorf("tags %v, want %v", pub.Tags, want)
			}
			// The manifest is an artifact no runtime takes for an image.
			d, err := remote.Get(mustRef(t, reg.host+"/templates:"+KeyTag(f.t.Key)))
			if err != nil {
				t.Fatal(err)
			}
			var m v1.Manifest
			json.Unmarshal(d.Manifest, &m)
			if m.ArtifactType != ArtifactType || m.Config.MediaType != ConfigMediaType || len(m.Layers) != tc.chunks ||
				m.Layers[0].MediaType != LayerMediaTypePrefix+".tar+zstd" || m.Annotations[AnnotationSHA256] != f.t.Meta.SHA256 {
				t.Errorf("manifest %s", d.Manifest)
			}
			dir := t.TempDir()
			got, err := s.FetchTemplate(context.Background(), f.request(dir))
			if err != nil {
				t.Fatal(err)
			}
			if got.SHA256 != f.t.Meta.SHA256 || got.Size != int64(tc.size) || got.ManifestDigest != f.t.Meta.ManifestDigest || got.Ref != "" {
				t.Errorf("meta %+v", got)
			}
			if a, b := readFile(t, f.t.Path), readFile(t, filepath.Join(dir, f.t.Meta.File)); a != b {
				t.Error("fetched bytes differ from the published ones")
			}
			// Publishing again uploads nothing.
			again, err := s.Publish(context.Background(), f.t, PublishOptions{})
			if err != nil || again.Uploaded || again.Ref != pub.Ref {
				t.Errorf("second publish: %+v, %v", again, err)
			}
		})
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFetchRefuses: what is not exactly the template asked for is refused
// and nothing is left in the directory; a key not there is a miss.
func TestFetchRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(f *fixture, reg *testRegistry)
		miss   bool
		want   string
	}{
		{"missing key", func(f *fixture, _ *testRegistry) { f.t.Key = digestOf("other").Hex }, true, ""},
		{"other manifest", func(f *fixture, _ *testRegistry) { f.res.Digest = digestOf("other") }, false, "made from manifest"},
		{"other platform", func(f *fixture, _ *testRegistry) { f.res.Platform = v1.Platform{OS: "linux", Architecture: "arm64"} }, false, "is for linux/amd64, not linux/arm64"},
		{"other options", func(f *fixture, _ *testRegistry) { f.opts.SquashHighIDs = true }, false, "was made with"},
		{"damaged blob", func(f *fixture, reg *testRegistry) {
			reg.set(func() { reg.damage = "/blobs/" })
		}, false, "hashing to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := startRegistry(t)
			s := newStore(t, reg.host, Options{})
			f := newFixture(t, 4000, "linux/amd64", "")
			if _, err := s.Publish(context.Background(), f.t, PublishOptions{}); err != nil {
				t.Fatal(err)
			}
			req := f
			res := *f.res
			req.res = &res
			tc.change(&req, reg)
			dir := t.TempDir()
			_, err := s.FetchTemplate(context.Background(), req.request(dir))
			if err == nil {
				t.Fatal("fetched")
			}
			if tc.miss != errors.Is(err, template.ErrRemoteMiss) {
				t.Errorf("miss %v: %v", tc.miss, err)
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			if des, _ := os.ReadDir(dir); len(des) != 0 {
				t.Errorf("left in the directory: %v", des)
			}
		})
	}
}

// TestPublishRefused: a registry refusing a push is named, with what to
// check, and no tag points at anything.
func TestPublishRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		want   string
	}{
		{"unauthorized", http.StatusUnauthorized, "no credentials were sent"},
		{"forbidden", http.StatusForbidden, "do not allow it (or a quota is exhausted)"},
		{"out of space", http.StatusInsufficientStorage, "out of space or over its quota"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := startRegistry(t)
			reg.set(func() {
				reg.refuse = func(r *http.Request) int {
					if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
						return tc.status
					}
					return 0
				}
			})
			s := newStore(t, reg.host, Options{})
			f := newFixture(t, 1000, "linux/amd64", "")
			_, err := s.Publish(context.Background(), f.t, PublishOptions{})
			var re *RegistryError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `repository "templates"`) {
				t.Fatalf("error %v", err)
			}
			if _, err := remote.Head(mustRef(t, reg.host+"/templates:"+KeyTag(f.t.Key))); err == nil {
				t.Error("a tag was written")
			}
		})
	}
}

// TestIndexGathersPlatforms: the human tag is an index of the platforms
// published for one resolution of the source tag, whichever publisher
// came last; a new resolution replaces the old platforms.
func TestIndexGathersPlatforms(t *testing.T) {
	reg := startRegistry(t)
	s := newStore(t, reg.host, Options{})
	ctx := context.Background()
	idx := digestOf("index 1").String()
	amd := newFixture(t, 500, "linux/amd64", idx)
	arm := newFixture(t, 600, "linux/arm64", idx)
	platforms := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}
	// arm64 published without knowing of amd64, then amd64 with.
	if _, err := s.Publish(ctx, arm.t, PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Publish(ctx, amd.t, PublishOptions{Siblings: platforms}); err != nil {
		t.Fatal(err)
	}
	if got := indexPlatforms(t, reg.host+"/templates:app_1"); got != "linux/amd64 linux/arm64" {
		t.Errorf("index holds %q", got)
	}
	// The tag moves on: amd64 of the new index replaces both.
	next := newFixture(t, 700, "linux/amd64", digestOf("index 2").String())
	if _, err := s.Publish(ctx, next.t, PublishOptions{Siblings: platforms}); err != nil {
		t.Fatal(err)
	}
	if got := indexPlatforms(t, reg.host+"/templates:app_1"); got != "linux/amd64" {
		t.Errorf("after the tag moved, the index holds %q", got)
	}
}

func indexPlatforms(t *testing.T, ref string) string {
	t.Helper()
	d, err := remote.Get(mustRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	if d.MediaType != types.OCIImageIndex {
		t.Fatalf("%s is a %s", ref, d.MediaType)
	}
	idx, _ := v1.ParseIndexManifest(bytes.NewReader(d.Manifest))
	if idx.ArtifactType != ArtifactType {
		t.Errorf("index artifactType %q", idx.ArtifactType)
	}
	var ps []string
	for _, m := range idx.Manifests {
		ps = append(ps, registry.PlatformString(*m.Platform))
	}
	return strings.Join(ps, " ")
}

// TestPublishRefusesRottenFile: a cached file whose bytes are not those
// recorded is not published; the error lets the caller build it again.
func TestPublishRefusesRottenFile(t *testing.T) {
	reg := startRegistry(t)
	s := newStore(t, reg.host, Options{})
	f := newFixture(t, 1000, "linux/amd64", "")
	b := []byte(readFile(t, f.t.Path))
	b[10] ^= 1
	os.WriteFile(f.t.Path, b, 0o644)
	if _, err := s.Publish(context.Background(), f.t, PublishOptions{}); !errors.Is(err, cache.ErrDigestMismatch) {
		t.Fatalf("error %v", err)
	}
}

func TestHumanTags(t *testing.T) {
	for _, tc := range []struct{ file, index, platform string }{
		{"nginx_1.27_amd64.tar.zst", "nginx_1.27", "nginx_1.27_amd64"},
		{"ghcr.io-o-app_sha256-0123456789ab_arm64.tar", "ghcr.io-o-app_sha256-0123456789ab", "ghcr.io-o-app_sha256-0123456789ab_arm64"},
		{"x.tarball-y_2_amd64.tar.gz", "x.tarball-y_2", "x.tarball-y_2_amd64"},
		{"plain.tar.zst", "", ""},
		{"one_amd64.tar.zst", "", ""},
	} {
		i, p, ok := HumanTags(tc.file)
		if i != tc.index || p != tc.platform || ok != (tc.index != "") {
			t.Errorf("HumanTags(%q) = %q, %q, %v", tc.file, i, p, ok)
		}
	}
}

func TestParseRepository(t *testing.T) {
	for _, tc := range []struct{ in, repo, tag, err string }{
		{"registry.example/pve-templates", "registry.example/pve-templates", "", ""},
		{"localhost:5000/t:nginx_1", "localhost:5000/t", "nginx_1", ""},
		{"https://registry.example/t", "", "", "without a scheme"},
		{"registry.example/t@sha256:" + strings.Repeat("a", 64), "", "", "not a digest"},
		{"registry.example/../t", "", "", "not allowed"},
	} {
		repo, tag, err := ParseRepository(tc.in, nil)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || repo.Name() != tc.repo || tag != tc.tag):
			t.Errorf("%q: %q %q %v", tc.in, repo.Name(), tag, err)
		}
	}
}

// TestFetchThroughMirror: lookups go to the registry's mirrors first, as
// pulls do; a registry that is down behind its mirror does not matter.
func TestFetchThroughMirror(t *testing.T) {
	upstream := startRegistry(t)
	mirror := startRegistry(t)
	f := newFixture(t, 2000, "linux/amd64", "")
	// Published to the mirror (as a pull-through cache would hold it).
	if _, err := newStore(t, mirror.host, Options{}).Publish(context.Background(), f.t, PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	upstream.set(func() { upstream.refuse = func(*http.Request) int { return http.StatusServiceUnavailable } })
	s := newStore(t, upstream.host, Options{Mirrors: registry.Mirrors{upstream.host: {{URL: "http://" + mirror.host, Resolve: true}}}})
	dir := t.TempDir()
	if _, err := s.FetchTemplate(context.Background(), f.request(dir)); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(dir, f.t.Meta.File)) != readFile(t, f.t.Path) {
		t.Error("fetched bytes differ")
	}
}

// TestUnreachableAskedOnce: a registry that cannot be reached is asked
// once per Store; later lookups are misses, not a wait each.
func TestUnreachableAskedOnce(t *testing.T) {
	reg := startRegistry(t)
	reg.set(func() { reg.refuse = func(*http.Request) int { return http.StatusForbidden } })
	s := newStore(t, reg.host, Options{})
	f := newFixture(t, 100, "linux/amd64", "")
	_, err := s.FetchTemplate(context.Background(), f.request(t.TempDir()))
	var re *RegistryError
	if !errors.As(err, &re) || errors.Is(err, template.ErrRemoteMiss) {
		t.Fatalf("first lookup: %v", err)
	}
	reg.set(func() { reg.gets = map[string]int{} })
	_, err = s.FetchTemplate(context.Background(), f.request(t.TempDir()))
	if !errors.Is(err, template.ErrRemoteMiss) || len(reg.gets) != 0 {
		t.Errorf("second lookup: %v, %d requests", err, len(reg.gets))
	}
}
