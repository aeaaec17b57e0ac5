package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/internal/bytesize"
)

// source serves the manifests and blobs of one reference.
type source interface {
	// root returns the manifest or index the reference names, with its
	// descriptor.
	root(ctx context.Context) (v1.Descriptor, []byte, error)
	// blob opens a manifest, config or layer by descriptor.
	blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error)
	close() error
}

// namer is implemented by sources whose metadata names the image better
// than the reference does (an archive's RepoTags, a layout's annotations).
type namer interface {
	name() (repository, tag string)
}

// layoutSource reads an OCI image layout, from a directory or a tar.
type layoutSource struct {
	fsys    fs.FS
	tag     string
	label   string // for errors
	c       io.Closer
	refName string // the chosen manifest's ref.name annotation
}

const refNameAnnotation = "org.opencontainers.image.ref.name"

func (s *layoutSource) root(ctx context.Context) (v1.Descriptor, []byte, error) {
	raw, err := readSmall(s.fsys, "index.json")
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("%s: not an OCI image layout: %w", s.label, err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("%s: index.json: %w", s.label, err)
	}
	var matches []v1.Descriptor
	var names []string
	for _, m := range idx.Manifests {
		n := m.Annotations[refNameAnnotation]
		if n != "" {
			names = append(names, n)
		}
		if s.tag == "" || n == s.tag {
			matches = append(matches, m)
		}
	}
	switch {
	case len(matches) == 1:
		d := matches[0]
		s.refName = d.Annotations[refNameAnnotation]
		b, err := s.read(d)
		return d, b, err
	case len(matches) == 0:
		return v1.Descriptor{}, nil, fmt.Errorf("%s: no image tagged %q; tags: %s", s.label, s.tag, strings.Join(names, ", "))
	case s.tag == "":
		// Several untagged entries: the layout's index is itself the
		// multi-platform index.
		sum := sha256.Sum256(raw)
		d := v1.Descriptor{MediaType: types.OCIImageIndex, Size: int64(len(raw)), Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
		return d, raw, nil
	}
	return v1.Descriptor{}, nil, fmt.Errorf("%s: %d images are tagged %q", s.label, len(matches), s.tag)
}

// name uses a ref.name annotation that is a full reference
// (example.com/app:1) as the image's name, a bare one ("1") as its tag.
func (s *layoutSource) name() (string, string) {
	if s.refName == "" {
		return "", ""
	}
	if t, err := name.NewTag(s.refName, name.StrictValidation); err == nil && strings.ContainsAny(s.refName, "/:") {
		return repoName(t), t.TagStr()
	}
	return "", s.refName
}

func (s *layoutSource) read(d v1.Descriptor) ([]byte, error) {
	if err := checkDeclared(d, "manifest"); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", s.label, d.Digest, err)
	}
	rc, err := s.blob(context.Background(), d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(&sizedReader{r: rc, size: d.Size})
	if err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", s.label, d.Digest, err)
	}
	return b, nil
}

// readSmall reads a layout's or archive's own JSON file, up to
// MaxManifestSize.
func readSmall(fsys fs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%s is larger than %s", name, bytesize.Format(MaxManifestSize))
	}
	return b, nil
}

func (s *layoutSource) blob(_ context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	f, err := s.fsys.Open(path.Join("blobs", d.Digest.Algorithm, d.Digest.Hex))
	if err != nil {
		return nil, fmt.Errorf("%s: blob %s: %w", s.label, d.Digest, err)
	}
	return f, nil
}

func (s *layoutSource) close() error {
	if s.c != nil {
		return s.c.Close()
	}
	return nil
}

// tarFS serves the members of an uncompressed tar file without extracting
// it: one pass over the headers records where each member's data lies.
type tarFS struct {
	f     *os.File
	files map[string]tarMember
}

type tarMember struct {
	off, size int64
	link      string // hardlink target, for archives that deduplicate
}

func openTarFS(p string) (*tarFS, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	t := &tarFS{f: f, files: map[string]tarMember{}}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			f.Close()
			return nil, err
		}
		n := path.Clean(strings.TrimPrefix(hdr.Name, "/"))
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			t.files[n] = tarMember{off: off, size: hdr.Size}
		case tar.TypeLink, tar.TypeSymlink:
			target := path.Clean(strings.TrimPrefix(hdr.Linkname, "/"))
			if hdr.Typeflag == tar.TypeSymlink {
				target = path.Join(path.Dir(n), hdr.Linkname)
			}
			t.files[n] = tarMember{link: target}
		}
	}
	return t, nil
}

func (t *tarFS) Open(name string) (fs.File, error) {
	m, ok := t.files[name]
	for hops := 0; ok && m.link != "" && hops < 8; hops++ {
		name = m.link
		m, ok = t.files[name]
	}
	if !ok || m.link != "" {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return &tarFile{SectionReader: io.NewSectionReader(t.f, m.off, m.size), name: name}, nil
}

func (t *tarFS) Close() error { return t.f.Close() }

type tarFile struct {
	*io.SectionReader
	name string
}

func (f *tarFile) Stat() (fs.FileInfo, error) { return tarInfo{f}, nil }
func (f *tarFile) Close() error               { return nil }

type tarInfo struct{ f *tarFile }

func (i tarInfo) Name() string       { return path.Base(i.f.name) }
func (i tarInfo) Size() int64        { return i.f.Size() }
func (i tarInfo) Mode() fs.FileMode  { return 0o444 }
func (i tarInfo) ModTime() time.Time { return time.Time{} }
func (i tarInfo) IsDir() bool        { return false }
func (i tarInfo) Sys() any           { return nil }

// dockerArchiveSource reads the output of docker save: manifest.json lists
// each image's config and layer files. The manifest it serves is made up
// from those (Docker schema 2), with the layers as they are stored, so the
// same archive always gives the same manifest digest.
type dockerArchiveSource struct {
	fsys    *tarFS
	tag     string
	label   string
	blobs   map[v1.Hash]string // digest → member name
	repoTag string             // the chosen image's tag, as docker save recorded it
}

func (s *dockerArchiveSource) name() (string, string) {
	t, err := name.NewTag(s.repoTag, name.WeakValidation)
	if s.repoTag == "" || err != nil {
		return "", ""
	}
	return repoName(t), t.TagStr()
}

type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func (s *dockerArchiveSource) root(ctx context.Context) (v1.Descriptor, []byte, error) {
	raw, err := readSmall(s.fsys, "manifest.json")
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("%s: not a docker save archive: %w", s.label, err)
	}
	var entries []dockerManifestEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("%s: manifest.json: %w", s.label, err)
	}
	var pick *dockerManifestEntry
	var tags []string
	for i, e := range entries {
		tags = append(tags, e.RepoTags...)
		if s.tag == "" {
			continue
		}
		for _, t := range e.RepoTags {
			if sameTag(t, s.tag) {
				pick = &entries[i]
			}
		}
	}
	switch {
	case s.tag == "" && len(entries) == 1:
		pick = &entries[0]
	case s.tag == "":
		return v1.Descriptor{}, nil, fmt.Errorf("%s holds %d images; name one of: %s", s.label, len(entries), strings.Join(tags, ", "))
	case pick == nil:
		return v1.Descriptor{}, nil, fmt.Errorf("%s: no image tagged %q; tags: %s", s.label, s.tag, strings.Join(tags, ", "))
	}
	if s.tag != "" {
		s.repoTag = s.tag
	} else if len(pick.RepoTags) > 0 {
		s.repoTag = pick.RepoTags[0]
	}

	s.blobs = map[v1.Hash]string{}
	cfg, err := s.describe(pick.Config, types.DockerConfigJSON)
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.DockerManifestSchema2, Config: cfg}
	for _, l := range pick.Layers {
		if err := ctx.Err(); err != nil {
			return v1.Descriptor{}, nil, err
		}
		d, err := s.describe(l, "")
		if err != nil {
			return v1.Descriptor{}, nil, err
		}
		m.Layers = append(m.Layers, d)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	sum := sha256.Sum256(b)
	return v1.Descriptor{MediaType: types.DockerManifestSchema2, Size: int64(len(b)),
		Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}, b, nil
}

// describe hashes a member (or takes the digest from a blobs/sha256/ name,
// which the store verifies on copy) and picks a media type from its first
// bytes when mt is empty.
func (s *dockerArchiveSource) describe(member string, mt types.MediaType) (v1.Descriptor, error) {
	member = path.Clean(member)
	f, err := s.fsys.Open(member)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("%s: %s: %w", s.label, member, err)
	}
	defer f.Close()
	tf := f.(*tarFile)
	d := v1.Descriptor{MediaType: mt, Size: tf.Size()}
	if hx, ok := strings.CutPrefix(member, "blobs/sha256/"); ok && len(hx) == 64 {
		d.Digest = v1.Hash{Algorithm: "sha256", Hex: hx}
	} else {
		h := sha256.New()
		if _, err := io.Copy(h, tf); err != nil {
			return v1.Descriptor{}, fmt.Errorf("%s: %s: %w", s.label, member, err)
		}
		d.Digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	}
	if mt == "" {
		head := make([]byte, 4)
		n, _ := tf.ReadAt(head, 0)
		switch {
		case bytes.HasPrefix(head[:n], []byte{0x1f, 0x8b}):
			d.MediaType = types.DockerLayer
		case bytes.HasPrefix(head[:n], []byte{0x28, 0xb5, 0x2f, 0xfd}):
			d.MediaType = types.OCILayerZStd
		default:
			d.MediaType = types.DockerUncompressedLayer
		}
	}
	s.blobs[d.Digest] = member
	return d, nil
}

func (s *dockerArchiveSource) blob(_ context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	member, ok := s.blobs[d.Digest]
	if !ok {
		return nil, fmt.Errorf("%s: no blob %s", s.label, d.Digest)
	}
	return s.fsys.Open(member)
}

func (s *dockerArchiveSource) close() error { return s.fsys.Close() }

// sameTag compares RepoTags as docker writes them ("alpine:latest") with
// what the user typed, normalising both.
func sameTag(a, b string) bool {
	if a == b {
		return true
	}
	ra, err1 := name.NewTag(a, name.WeakValidation)
	rb, err2 := name.NewTag(b, name.WeakValidation)
	return err1 == nil && err2 == nil && Normalize(ra) == Normalize(rb)
}

var errNoSource = errors.New("unknown transport")
