// Command mkfixture writes the demo image the repository builds for itself:
// an OCI archive of a distroless-style application image (one static binary,
// an /etc/passwd with an unprivileged user, a whiteout in its second layer),
// so that pve-image can be tried without a network.
//
//	mkfixture -app path/to/static-binary -o fixture.oci.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/registry"
)

var mtime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type member struct {
	name string
	mode int64
	uid  int
	body []byte
	dir  bool
}

func layer(ms ...member) v1.Layer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		h := &tar.Header{Name: m.name, Mode: m.mode, Uid: m.uid, Gid: m.uid, ModTime: mtime, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(m.body))}
		if m.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			log.Fatal(err)
		}
		tw.Write(m.body)
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		log.Fatal(err)
	}
	return l
}

func main() {
	app := flag.String("app", "", "static binary to run as the image's program")
	out := flag.String("o", "fixture.oci.tar", "OCI archive to write")
	flag.Parse()
	bin, err := os.ReadFile(*app)
	if err != nil {
		log.Fatalf("-app: %v", err)
	}
	l1 := layer(
		member{name: "etc/", mode: 0o755, dir: true},
		member{name: "etc/passwd", mode: 0o644, body: []byte("root:x:0:0:root:/root:/sbin/nologin\napp:x:1000:1000:app:/home/app:/sbin/nologin\n")},
		member{name: "etc/group", mode: 0o644, body: []byte("root:x:0:\napp:x:1000:\n")},
		member{name: "tmp/", mode: 0o1777, dir: true},
		member{name: "home/app/", mode: 0o700, uid: 1000, dir: true},
		member{name: "usr/bin/testapp", mode: 0o755, body: bin},
		member{name: "srv/obsolete.conf", mode: 0o644, body: []byte("removed by the next layer\n")},
	)
	l2 := layer(
		member{name: "srv/.wh.obsolete.conf", mode: 0o644},
		member{name: "srv/greeting", mode: 0o644, uid: 1000, body: []byte("hello from a pve-image fixture\n")},
	)
	img, err := mutate.AppendLayers(empty.Image, l1, l2)
	if err != nil {
		log.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: mtime}
	cf.Config = v1.Config{
		Entrypoint: []string{"/usr/bin/testapp"},
		Cmd:        []string{"report", "wait-signal"},
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello"},
		User:       "app",
		WorkingDir: "/srv",
		StopSignal: "SIGTERM",
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		log.Fatal(err)
	}
	img = mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1)

	dir, err := os.MkdirTemp("", "mkfixture-*")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		log.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "1"})); err != nil {
		log.Fatal(err)
	}
	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	if err := registry.TarLayout(dir, f, mtime); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(*out)
}
