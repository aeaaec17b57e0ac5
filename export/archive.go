package export

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/pve-image/pve-image/proxmox"
)

// The members vzdump puts before the root file system (pve-container
// VZDump/LXC.pm assemble; proxmox-lifecycle.md §3), and the one an OpenVZ
// archive has instead.
const (
	pctConf    = "etc/vzdump/pct.conf"
	pctFW      = "etc/vzdump/pct.fw"
	legacyConf = "etc/vzdump/vps.conf"
	// maxConf bounds what is read of pct.conf and pct.fw.
	maxConf = 1 << 20
)

var (
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	gzipMagic = []byte{0x1f, 0x8b}
	// lzopMagic starts every file lzop writes (vzdump --compress lzo).
	lzopMagic  = []byte{0x89, 'L', 'Z', 'O', 0x00, '\r', '\n', 0x1a, '\n'}
	bzip2Magic = []byte("BZh")
	xzMagic    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// ErrLZO is the refusal of lzo-compressed archives.
var ErrLZO = errors.New("compressed with lzo, which pve-image cannot read (no maintained Go library decodes LZO): " +
	"back the container up with zstd (vzdump --compress zstd, pve-image export VMID, or ZSTD in the backup job), or unpack it with `lzop -d` and export the .tar")

// reVzdumpName is the name vzdump gives archives (pve-manager VZDump.pm;
// pve-storage Storage.pm L120): the guest type and VMID are in it.
var reVzdumpName = regexp.MustCompile(`^vzdump-(lxc|qemu|openvz)-(\d+)-\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}\.(tgz|tar|tar\.gz|tar\.lzo|tar\.zst|tar\.bz2|vma.*)$`)

// archiveError is a failure tied to a member of an archive.
func archiveError(archive, member string, err error) error {
	if member == "" {
		return fmt.Errorf("archive %s: %w", archive, err)
	}
	return fmt.Errorf("archive %s: member %s: %w", archive, quote(member), err)
}

// quote quotes a member name for a message; a hostile one may be a
// megabyte long, so long names keep their start and end.
func quote(s string) string {
	const keep = 200
	if len(s) <= 3*keep {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q…%q (%d bytes)", s[:keep], s[len(s)-keep:], len(s))
}

// checkName refuses archives named as something else than a container's
// backup: a VM's vzdump archive has another format altogether.
func checkName(base string) error {
	m := reVzdumpName.FindStringSubmatch(base)
	if m == nil {
		return nil
	}
	switch m[1] {
	case "qemu":
		return errors.New("a virtual machine's backup, not a container's: only LXC archives (vzdump-lxc-...) can be exported")
	case "openvz":
		return errors.New("an OpenVZ backup: only LXC archives (vzdump-lxc-...) can be exported")
	}
	if m[3] == "tar.lzo" {
		return ErrLZO
	}
	return nil
}

// decompress returns the archive's tar stream, its format read from the
// first bytes (a renamed archive still opens; vzdump's names say the same).
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, err := br.Peek(len(lzopMagic))
	if err != nil && err != io.EOF {
		return nil, nil, err
	}
	switch {
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<32))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(head, lzopMagic):
		return nil, nil, ErrLZO
	case bytes.HasPrefix(head, bzip2Magic), bytes.HasPrefix(head, xzMagic):
		return nil, nil, errors.New("compressed with bzip2 or xz, which vzdump does not write: vzdump archives are plain, gzip, zstd or lzo")
	}
	return br, func() {}, nil
}

// memberPath turns a member name into a path relative to the root ("" for
// the root), as imgconv cleans layer members. vzdump names every member
// "./..." (tar of "./"): an absolute name never comes from it, and is
// refused rather than made relative. A name climbing out of the root is
// left to imgconv, which refuses it as it refuses it in a layer.
func memberPath(name string) (string, bool, error) {
	if strings.HasPrefix(name, "/") {
		return "", false, errors.New("absolute member name: vzdump names every member relative to the root (./...); this archive was not written by vzdump")
	}
	p := path.Clean(name)
	if p == "." {
		return "", true, nil
	}
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", false, nil
	}
	return p, true, nil
}

// header is what goes on of a member into the flattener or a volume's
// spool: PAX, numeric ids, the extended attributes kept. Sparse files come
// out of the reader as plain files with their holes filled.
func header(h *tar.Header) (*tar.Header, int) {
	out := &tar.Header{
		Typeflag: h.Typeflag,
		Name:     h.Name,
		Linkname: h.Linkname,
		Size:     h.Size,
		Mode:     h.Mode,
		Uid:      h.Uid,
		Gid:      h.Gid,
		ModTime:  h.ModTime.Truncate(time.Second),
		Devmajor: h.Devmajor,
		Devminor: h.Devminor,
		Format:   tar.FormatPAX,
	}
	switch h.Typeflag {
	case tar.TypeRegA, tar.TypeGNUSparse, tar.TypeCont:
		out.Typeflag = tar.TypeReg
	}
	if out.Typeflag != tar.TypeReg {
		out.Size = 0
	}
	acls := 0
	for k, v := range h.PAXRecords {
		switch {
		case strings.HasPrefix(k, "SCHILY.xattr."):
			if out.PAXRecords == nil {
				out.PAXRecords = map[string]string{}
			}
			out.PAXRecords[k] = v
		case strings.HasPrefix(k, "SCHILY.acl."):
			acls++
		}
	}
	return out, acls
}

// config is the archive's pct.conf.
type config struct {
	raw string
	cfg proxmox.CTConfig
	// mtime is when vzdump wrote it: when the backup was taken.
	mtime time.Time
	// firewall says pct.fw holds rules.
	firewall bool
}

// readConfig reads the members before the root file system: pct.conf,
// which must come first, and pct.fw. It returns the first member of the
// root file system (nil at the end of the archive).
func readConfig(name string, tr *tar.Reader) (*config, *tar.Header, error) {
	var c *config
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if c == nil {
				return nil, nil, archiveError(name, "", errors.New("no ./etc/vzdump/pct.conf: not a vzdump archive of a container"))
			}
			return c, nil, nil
		}
		if err != nil {
			return nil, nil, archiveError(name, "", fmt.Errorf("not a readable tar archive: %w", err))
		}
		switch h.Typeflag {
		case tar.TypeXGlobalHeader, 'V':
			continue
		}
		p, _, perr := memberPath(h.Name)
		if perr != nil {
			return nil, nil, archiveError(name, h.Name, perr)
		}
		switch {
		case p == legacyConf:
			return nil, nil, archiveError(name, h.Name, errors.New("an OpenVZ archive (vps.conf): only LXC archives can be exported"))
		case p == pctConf && c == nil:
			if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA {
				return nil, nil, archiveError(name, h.Name, errors.New("pct.conf is not a regular file"))
			}
			b, err := io.ReadAll(io.LimitReader(tr, maxConf+1))
			if err != nil {
				return nil, nil, archiveError(name, h.Name, fmt.Errorf("not a readable tar archive: %w", err))
			}
			if len(b) > maxConf {
				return nil, nil, archiveError(name, h.Name, fmt.Errorf("pct.conf is larger than %d bytes: not a container's config", maxConf))
			}
			c = &config{raw: string(b), cfg: proxmox.ParsePCTConfig(string(b)), mtime: h.ModTime.UTC().Truncate(time.Second)}
		case p == pctFW && c != nil:
			b, _ := io.ReadAll(io.LimitReader(tr, maxConf))
			c.firewall = len(bytes.TrimSpace(b)) > 0
		case c == nil:
			return nil, nil, archiveError(name, h.Name, errors.New("comes before ./etc/vzdump/pct.conf, which vzdump writes first: not a vzdump archive of a container"))
		default:
			return c, h, nil
		}
	}
}
