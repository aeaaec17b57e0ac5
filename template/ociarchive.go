package template

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/registry"
)

// Format is what a conversion writes.
type Format string

const (
	// FormatTemplate is a flattened rootfs tar, compressed.
	FormatTemplate Format = ""
	// FormatOCIArchive is an OCI image layout in an uncompressed tar, as
	// Proxmox 9.1's own importer reads it (proxmox.md §4).
	FormatOCIArchive Format = "oci-archive"
)

// ociLayerTypes maps layer media types onto the OCI ones Proxmox's importer
// accepts: it skips Docker types (oci-spec reads them as Other).
var ociLayerTypes = map[types.MediaType]types.MediaType{
	types.DockerLayer:                    types.OCILayer,
	types.DockerUncompressedLayer:        types.OCIUncompressedLayer,
	"":                                   types.OCILayer,
	types.OCILayer:                       types.OCILayer,
	types.OCILayerZStd:                   types.OCILayerZStd,
	types.OCIUncompressedLayer:           types.OCIUncompressedLayer,
	types.OCIRestrictedLayer:             types.OCIRestrictedLayer,
	types.OCIUncompressedRestrictedLayer: types.OCIUncompressedRestrictedLayer,
}

// writeOCIArchive writes the image as an OCI layout tar for Proxmox 9.1's
// importer: exactly one manifest, for the resolved platform, with OCI media
// types only (Docker types renamed; the blobs are the same bytes, so their
// digests hold), members named without "./" (the importer looks for lines
// equal to "oci-layout" and "index.json"), uncompressed. It returns the
// file's SHA-256.
func writeOCIArchive(path string, res *registry.Resolved, store registry.BlobStore, created time.Time) (string, error) {
	m := *res.Manifest
	m.MediaType = types.OCIManifestSchema1
	m.Config.MediaType = types.OCIConfigJSON
	m.Layers = append([]v1.Descriptor{}, res.Manifest.Layers...)
	for i, l := range m.Layers {
		mt, ok := ociLayerTypes[l.MediaType]
		if !ok {
			return "", fmt.Errorf("layer %s: media type %q has no OCI equivalent Proxmox imports", l.Digest, l.MediaType)
		}
		m.Layers[i].MediaType = mt
		m.Layers[i].URLs = nil
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw)
	mdesc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: int64(len(raw)),
		Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, Platform: &res.Platform}
	if res.Tag != "" && !strings.HasPrefix(res.Tag, "sha256:") {
		mdesc.Annotations = map[string]string{"org.opencontainers.image.ref.name": res.Tag}
	}
	index, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{mdesc}})
	if err != nil {
		return "", err
	}

	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	tw := tar.NewWriter(bw)
	hdr := func(name string, size int64, dir bool) *tar.Header {
		t := &tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if dir {
			t.Mode, t.Typeflag, t.Size = 0o755, tar.TypeDir, 0
		}
		return t
	}
	writeBytes := func(name string, b []byte) error {
		if err := tw.WriteHeader(hdr(name, int64(len(b)), false)); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := writeBytes("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return "", err
	}
	if err := writeBytes("index.json", index); err != nil {
		return "", err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(hdr(d, 0, true)); err != nil {
			return "", err
		}
	}
	if err := writeBytes("blobs/sha256/"+mdesc.Digest.Hex, raw); err != nil {
		return "", err
	}
	seen := map[v1.Hash]bool{}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		blob, err := store.OpenBlob(d.Digest)
		if err != nil {
			return "", err
		}
		fi, err := blob.Stat()
		if err == nil {
			err = tw.WriteHeader(hdr("blobs/sha256/"+d.Digest.Hex, fi.Size(), false))
		}
		if err == nil {
			_, err = io.CopyBuffer(tw, blob, make([]byte, 1<<20))
		}
		blob.Close()
		if err != nil {
			return "", fmt.Errorf("blob %s: %w", d.Digest, err)
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := bw.Flush(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
