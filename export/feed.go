package export

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/imgconv"
	"github.com/pve-image/pve-image/imgconv/runspec"
	"github.com/pve-image/pve-image/proxmox"
)

// readOptions say how an archive is read.
type readOptions struct {
	// TempDir holds the spill files (unlinked at once).
	TempDir string
	// Volumes keeps the data of volume mount points with backup=1, each in
	// a tree of its own; without it their data is left out.
	Volumes bool
	// SquashHighIDs, MaxSize and MaxEntries are imgconv's.
	SquashHighIDs       bool
	MaxSize, MaxEntries int64
}

// mount is a mount point of the archived config.
type mount struct {
	mp   proxmox.MountPoint
	path string // relative to the root, cleaned
	// archived says vzdump put its data into the archive: a volume with
	// backup=1 (Config.pm mountpoint_backup_enabled).
	archived bool
	// members counts what the archive holds below it.
	members int

	spool  *os.File // its members, when Volumes; nil otherwise
	tw     *tar.Writer
	rootfs *imgconv.Rootfs // its tree, once the archive is read
}

// tree is a read archive: its config and its trees, flattened.
type tree struct {
	name   string
	conf   *config
	rootfs *imgconv.Rootfs
	mounts []*mount
	// acls counts members whose POSIX ACLs were dropped.
	acls int
	// runSpec is the content of pve-image-init's spec (runspec.Path),
	// nil when the archive has none: imgconv keeps the content of the
	// files facts are read from only.
	runSpec []byte
}

// Close releases the spills.
func (t *tree) Close() {
	if t.rootfs != nil {
		t.rootfs.Close()
	}
	for _, m := range t.mounts {
		if m.rootfs != nil {
			m.rootfs.Close()
		}
		if m.spool != nil {
			m.spool.Close()
		}
	}
}

// streamLayer hands the flattener a tar stream as if it were a layer.
type streamLayer struct{ rc io.ReadCloser }

// archiveDigest stands for the archive where imgconv wants a layer digest;
// its errors are reworded before anyone sees it (flattenError).
var archiveDigest = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}

func (l *streamLayer) Digest() (v1.Hash, error)            { return archiveDigest, nil }
func (l *streamLayer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }
func (l *streamLayer) Compressed() (io.ReadCloser, error)  { return l.rc, nil }

// flattenError names the archive and the member in imgconv's errors.
func flattenError(name string, err error) error {
	var ie *imgconv.Error
	if errors.As(err, &ie) {
		return archiveError(name, ie.Path, ie.Err)
	}
	return archiveError(name, "", err)
}

// readArchive reads a vzdump archive: its config, and its root file system
// flattened as one layer (imgconv's checks on every member), while the
// data of each volume goes to a spool of its own (with Volumes) to be
// flattened after.
func readArchive(ctx context.Context, name string, r io.Reader, o readOptions) (*tree, error) {
	stream, closeStream, err := decompress(r)
	if err != nil {
		return nil, archiveError(name, "", err)
	}
	defer closeStream()
	// The whole archive, volumes and what is left out included, counts
	// against the size limit, as a layer's stream does in imgconv: a
	// small archive may expand without end.
	maxSize := o.MaxSize
	if maxSize == 0 {
		maxSize = imgconv.DefaultMaxSize
	}
	if maxSize > 0 {
		stream = &limitReader{r: stream, left: maxSize, max: maxSize}
	}
	tr := tar.NewReader(stream)
	conf, first, err := readConfig(name, tr)
	if err != nil {
		return nil, err
	}
	t := &tree{name: name, conf: conf}
	ok := false
	defer func() {
		if !ok {
			t.Close()
		}
	}()
	for _, mp := range conf.cfg.MountPoints() {
		p := strings.Trim(path.Clean("/"+mp.Path()), "/")
		if p == "" {
			continue
		}
		m := &mount{mp: mp, path: p, archived: mp.Kind() == "volume" && mp.Opts.Get("backup") == "1"}
		if m.archived && o.Volumes {
			if m.spool, err = tempFile(o.TempDir); err != nil {
				return nil, err
			}
			m.tw = tar.NewWriter(m.spool)
		}
		t.mounts = append(t.mounts, m)
	}
	// Deepest first: a mount point inside another takes its own members.
	sort.SliceStable(t.mounts, func(i, j int) bool { return len(t.mounts[i].path) > len(t.mounts[j].path) })

	iopts := imgconv.Options{Image: name, TempDir: o.TempDir, SquashHighIDs: o.SquashHighIDs, MaxSize: o.MaxSize,
		MaxEntries: o.MaxEntries, Stream: -1, Parallel: 1}
	pr, pw := io.Pipe()
	type flat struct {
		r   *imgconv.Rootfs
		err error
	}
	done := make(chan flat, 1)
	go func() {
		r, err := imgconv.Flatten(ctx, []imgconv.Layer{&streamLayer{rc: pr}}, iopts)
		pr.CloseWithError(errFlattenEnded)
		done <- flat{r, err}
	}()
	ferr := t.feed(ctx, tr, first, tar.NewWriter(pw))
	if ferr != nil {
		pw.CloseWithError(ferr)
	} else {
		pw.Close()
	}
	res := <-done
	t.rootfs = res.r
	switch {
	case res.err != nil && (ferr == nil || errors.Is(ferr, errFlattenEnded) || errors.Is(ferr, io.ErrClosedPipe)):
		return nil, flattenError(name, res.err)
	case ferr != nil:
		return nil, ferr
	case res.err != nil:
		return nil, flattenError(name, res.err)
	}
	for _, m := range t.mounts {
		if m.spool == nil {
			continue
		}
		size, err := m.spool.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		sl := &streamLayer{rc: io.NopCloser(io.NewSectionReader(m.spool, 0, size))}
		vopts := iopts
		vopts.Image = fmt.Sprintf("%s (volume %s at /%s)", name, m.mp.Key, m.path)
		if m.rootfs, err = imgconv.Flatten(ctx, []imgconv.Layer{sl}, vopts); err != nil {
			return nil, flattenError(name, err)
		}
		m.spool.Close()
		m.spool = nil
	}
	ok = true
	return t, nil
}

// limitReader fails once more than max bytes were read.
type limitReader struct {
	r         io.Reader
	left, max int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if l.left -= int64(n); l.left < 0 {
		return n, fmt.Errorf("%w of %d bytes (--max-size)", imgconv.ErrTooLarge, l.max)
	}
	return n, err
}

// errFlattenEnded is what feeding the flattener meets once it stopped
// reading (it failed; its own error says why).
var errFlattenEnded = errors.New("the flattener stopped reading")

// tempFile is a spill file: locked while it is made (the cache's cleaners
// leave it alone), unlinked at once, so that nothing is left behind.
func tempFile(dir string) (*os.File, error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	f, err := cache.CreateWorkFile(dir, "pve-image-export-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

// feed copies the root file system's members to main and each volume's to
// its spool, from first on, and checks on the way what imgconv cannot know
// of an archive.
func (t *tree) feed(ctx context.Context, tr *tar.Reader, h *tar.Header, main *tar.Writer) error {
	last := ""
	for n := 0; h != nil; n++ {
		if n&255 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := t.member(tr, h, main); err != nil {
			return err
		}
		last = h.Name
		next, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return archiveError(t.name, last, fmt.Errorf("corrupt or truncated archive after this member: %w", err))
		}
		h = next
	}
	for _, m := range t.mounts {
		if m.tw != nil {
			if err := m.tw.Close(); err != nil {
				return err
			}
		}
	}
	return main.Close()
}

func (t *tree) member(tr *tar.Reader, h *tar.Header, main *tar.Writer) error {
	switch h.Typeflag {
	case tar.TypeXGlobalHeader, 'V':
		return nil
	}
	p, clean, err := memberPath(h.Name)
	if err != nil {
		return archiveError(t.name, h.Name, err)
	}
	if clean {
		// vzdump's own members; the container's files of these names
		// are gone after any restore too (Proxmox deletes them).
		if p == pctConf || p == pctFW {
			return nil
		}
		for _, c := range strings.Split(p, "/") {
			if strings.HasPrefix(c, ".wh.") {
				return archiveError(t.name, h.Name, errors.New("a name starting with .wh., which OCI layers reserve for deletions: an image cannot carry it"))
			}
		}
	}
	out, acls := header(h)
	t.acls += acls
	var dst []*tar.Writer
	if m := t.mountOf(p, clean); m == nil {
		dst = append(dst, main)
	} else if p == m.path {
		// The mount point itself is in the root file system too.
		dst = append(dst, main)
		if m.tw != nil {
			dst = append(dst, m.tw)
		}
	} else {
		m.members++
		if m.tw != nil {
			dst = append(dst, m.tw)
		}
	}
	if len(dst) == 0 {
		return nil
	}
	for _, w := range dst {
		if err := w.WriteHeader(out); err != nil {
			if w == main {
				return err
			}
			return archiveError(t.name, h.Name, err)
		}
	}
	if out.Typeflag != tar.TypeReg || out.Size == 0 {
		return nil
	}
	ws := make([]io.Writer, len(dst))
	for i, w := range dst {
		ws[i] = w
	}
	var spec *bytes.Buffer
	if clean && p == strings.TrimPrefix(runspec.Path, "/") && dst[0] == main && out.Size <= maxConf {
		spec = &bytes.Buffer{}
		ws = append(ws, spec)
	}
	if _, err := io.CopyN(io.MultiWriter(ws...), tr, out.Size); err != nil {
		if errors.Is(err, io.ErrClosedPipe) || errors.Is(err, errFlattenEnded) {
			return err
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return archiveError(t.name, h.Name, fmt.Errorf("corrupt or truncated archive: %w", err))
	}
	if spec != nil {
		t.runSpec = spec.Bytes()
	}
	return nil
}

// mountOf is the deepest mount point at or above p, nil when none.
func (t *tree) mountOf(p string, clean bool) *mount {
	if !clean || p == "" {
		return nil
	}
	for _, m := range t.mounts {
		if p == m.path || strings.HasPrefix(p, m.path+"/") {
			return m
		}
	}
	return nil
}
