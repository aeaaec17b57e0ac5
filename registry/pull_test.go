package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// gateRegistry serves one image under app:1 and sends its layer in two
// halves, the second only once the test opens the gate: a download the
// test can hold in the middle. tamper, if set, changes the layer's bytes
// as sent (not its digest).
type gateRegistry struct {
	manifest, config, layer []byte
	tamper                  bool
	gate                    chan struct{}
	once                    sync.Once
	srv                     *httptest.Server
}

func startGateRegistry(t *testing.T, size int, tamper bool) *gateRegistry {
	g := &gateRegistry{config: []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`),
		layer: bytes.Repeat([]byte("pve-image feeds "), size/16), tamper: tamper, gate: make(chan struct{})}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(g.config)), Digest: digestOf(g.config)},
		Layers: []v1.Descriptor{{MediaType: types.OCILayer, Size: int64(len(g.layer)), Digest: digestOf(g.layer)}}}
	g.manifest, _ = json.Marshal(m)
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(func() { g.open(); g.srv.Close() })
	return g
}

func (g *gateRegistry) open() { g.once.Do(func() { close(g.gate) }) }

func (g *gateRegistry) serve(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case "/v2/":
	case "/v2/app/manifests/1":
		w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
		w.Write(g.manifest)
	case "/v2/app/blobs/" + digestOf(g.config).String():
		w.Write(g.config)
	case "/v2/app/blobs/" + digestOf(g.layer).String():
		body := g.layer
		if g.tamper {
			body = bytes.Clone(body)
			body[len(body)-1] ^= 1
		}
		half := len(body) / 2
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:half])
		w.(http.Flusher).Flush()
		select {
		case <-g.gate:
		case <-req.Context().Done():
			return
		}
		w.Write(body[half:])
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func startDownload(t *testing.T, g *gateRegistry, limit int) (*Download, v1.Layer, *dirStore) {
	t.Helper()
	store := newDirStore(t)
	d, l := startDownloadTo(t, g, limit, store)
	return d, l, store
}

func startDownloadTo(t *testing.T, g *gateRegistry, limit int, store BlobStore) (*Download, v1.Layer) {
	t.Helper()
	p := NewPuller(store, Options{Keychain: emptyKeychain{}, StallTimeout: time.Minute})
	if limit > 0 {
		p.feedLimit = limit
	}
	ref, err := ParseReference(strings.TrimPrefix(g.srv.URL, "http://")+"/app:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := p.Resolve(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.Start(ctx, res)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	ls, err := d.Image().Layers()
	if err != nil {
		t.Fatal(err)
	}
	return d, ls[0]
}

// TestLayerReadAsItArrives: a layer read while it downloads gets its
// bytes as they arrive, and its end only once the whole blob is stored
// and matched its digest.
func TestLayerReadAsItArrives(t *testing.T) {
	g := startGateRegistry(t, 1<<20, false)
	d, l, store := startDownload(t, g, 0)
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	half := make([]byte, len(g.layer)/2)
	if _, err := io.ReadFull(rc, half); err != nil {
		t.Fatal(err)
	}
	h := digestOf(g.layer)
	select {
	case <-d.blobs[h].done:
		t.Fatal("the download ended while the registry held back half the layer")
	default:
	}
	if !bytes.Equal(half, g.layer[:len(half)]) {
		t.Fatal("the first half read differs from the layer")
	}
	g.open()
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(half, rest...), g.layer) {
		t.Fatal("the layer read differs from the layer")
	}
	if !store.HasBlob(h) {
		t.Error("the reader saw the end before the blob was stored")
	}
}

// TestLayerReadTampered: bytes read as they arrive are not yet checked;
// a blob that does not match its digest ends in the download's error,
// never in EOF.
func TestLayerReadTampered(t *testing.T) {
	g := startGateRegistry(t, 1<<20, true)
	_, l, store := startDownload(t, g, 0)
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	g.open()
	_, err = io.ReadAll(rc)
	if err == nil || !strings.Contains(err.Error(), "digest mismatch") || !strings.Contains(err.Error(), digestOf(g.layer).String()) {
		t.Errorf("got %v, want the digest mismatch of the layer", err)
	}
	if store.HasBlob(digestOf(g.layer)) {
		t.Error("the tampered blob was stored")
	}
}

// TestLayerReaderFallsBehind: a reader slower than the download gets what
// the feed holds, then the rest from the stored blob; one that comes after
// the download reads the stored blob alone. Memory stays within the limit
// either way.
func TestLayerReaderFallsBehind(t *testing.T) {
	// Above the half the registry sends before the gate, below the
	// whole: the reader can always attach (a smaller limit could drop
	// the feed before it does, and the download then waits for a gate
	// the test opens only after), and falls behind once the gate opens.
	const limit = 768 << 10
	for _, late := range []bool{false, true} {
		g := startGateRegistry(t, 1<<20, false)
		d, l, _ := startDownload(t, g, limit)
		h := digestOf(g.layer)
		var rc io.ReadCloser
		var err error
		if !late {
			if rc, err = l.Compressed(); err != nil {
				t.Fatal(err)
			}
		}
		g.open()
		<-d.blobs[h].done
		f := d.blobs[h].feed
		f.mu.Lock()
		if f.buffered > limit {
			t.Errorf("late %v: the feed holds %d bytes, above its limit", late, f.buffered)
		}
		f.mu.Unlock()
		if late {
			if rc, err = l.Compressed(); err != nil {
				t.Fatal(err)
			}
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, g.layer) {
			t.Errorf("late %v: read %d bytes (%v), want the layer's %d", late, len(got), err, len(g.layer))
		}
	}
}

// TestLayerReaderClose: a reader closed halfway (a layer that failed)
// leaves nothing buffered in its feed while the download goes on.
func TestLayerReaderClose(t *testing.T) {
	g := startGateRegistry(t, 1<<20, false)
	d, l, _ := startDownload(t, g, 0)
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := rc.Read(make([]byte, 1)); err == nil {
		t.Error("a closed reader still reads")
	}
	g.open()
	h := digestOf(g.layer)
	<-d.blobs[h].done
	f := d.blobs[h].feed
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.buffered != 0 || len(f.chunks) != 0 {
		t.Errorf("the feed of a closed reader holds %d bytes", f.buffered)
	}
}

// restartingStore's download of one blob fails once after firstRead bytes
// and starts over when proceed is closed, as a retried download does.
type restartingStore struct {
	*dirStore
	blob      v1.Hash
	firstRead int64
	proceed   chan struct{}
}

func (s *restartingStore) PutBlob(ctx context.Context, h v1.Hash, open func() (io.ReadCloser, error)) (int64, error) {
	if h == s.blob && !s.HasBlob(h) {
		rc, err := open()
		if err != nil {
			return 0, err
		}
		io.CopyN(io.Discard, rc, s.firstRead)
		rc.Close()
		<-s.proceed
	}
	return s.dirStore.PutBlob(ctx, h, open)
}

// TestLayerReadRestarted: when a download starts over, a reader that took
// bytes of the failed attempt fails (ErrFeedRestarted) rather than go on
// with the stored blob after them; one that took nothing reads the stored
// blob whole.
func TestLayerReadRestarted(t *testing.T) {
	for _, took := range []bool{true, false} {
		g := startGateRegistry(t, 1<<20, false)
		store := &restartingStore{dirStore: newDirStore(t), blob: digestOf(g.layer), firstRead: 1000, proceed: make(chan struct{})}
		d, l := startDownloadTo(t, g, 0, store)
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if took {
			if _, err := io.ReadFull(rc, make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
		}
		close(store.proceed)
		g.open()
		if !took {
			<-d.blobs[store.blob].done
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		switch {
		case took && !errors.Is(err, ErrFeedRestarted):
			t.Errorf("after 100 bytes of the failed attempt: got %v, want ErrFeedRestarted", err)
		case !took && (err != nil || !bytes.Equal(got, g.layer)):
			t.Errorf("nothing taken before the restart: read %d bytes (%v), want the layer's %d", len(got), err, len(g.layer))
		}
	}
}
