package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/template"
)

// TemplateStore is where converted templates go for Proxmox to create
// containers from.
type TemplateStore interface {
	// Put stores the template at path under name and returns its volume
	// ID. A template of that name and size already there is kept.
	Put(ctx context.Context, path, name, sha256 string, size int64) (volid string, err error)
	// Remove deletes a template; a missing one is no error.
	Remove(ctx context.Context, name string) error
	// Usage is the space and inodes the store's templates take, and the
	// mount point they live on.
	Usage(ctx context.Context) (bytes, inodes int64, mountpoint string, err error)
}

// DirStore is a template directory on this machine: the directory of a
// Proxmox storage when the daemon runs on a Proxmox node
// (/var/lib/vz/template/cache is storage "local").
type DirStore struct {
	Dir     string
	Storage string // the Proxmox storage the directory belongs to
}

// Put copies the template, checking its bytes against sha256 on the way
// (template.CopyFile): a damaged cached template is refused with an error
// wrapping cache.ErrDigestMismatch, never stored.
func (d *DirStore) Put(ctx context.Context, path, name, sha256 string, size int64) (string, error) {
	volid := d.Storage + ":vztmpl/" + name
	dst := filepath.Join(d.Dir, name)
	if fi, err := os.Stat(dst); err == nil && fi.Size() == size {
		return volid, nil
	}
	if err := os.MkdirAll(d.Dir, 0o755); err != nil {
		return "", err
	}
	if err := template.CopyFile(ctx, path, dst, sha256); err != nil {
		return "", fmt.Errorf("template store: %w", err)
	}
	return volid, nil
}

func (d *DirStore) Remove(_ context.Context, name string) error {
	err := os.Remove(filepath.Join(d.Dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (d *DirStore) Usage(context.Context) (int64, int64, string, error) {
	return dirUsage(d.Dir)
}

// dirUsage sums the sizes and counts the files below dir.
func dirUsage(dir string) (bytes, inodes int64, mountpoint string, err error) {
	err = filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		inodes++
		if fi, err := de.Info(); err == nil && fi.Mode().IsRegular() {
			bytes += fi.Size()
		}
		return nil
	})
	return bytes, inodes, dir, err
}

// PVEStore is a Proxmox storage reached over the API.
type PVEStore struct {
	Client  *proxmox.Client
	Node    string
	Storage string
	// CacheDir is the local cache the templates are converted into; its
	// filesystem is the one this machine's image usage is measured on.
	CacheDir string
}

func (p *PVEStore) Put(ctx context.Context, path, name, sha256 string, size int64) (string, error) {
	have, err := p.Client.Templates(ctx, p.Node, p.Storage)
	if err != nil {
		return "", err
	}
	for _, v := range have {
		if v.Name() == name && v.Size == size {
			return v.Volid, nil
		}
	}
	return p.Client.Upload(ctx, proxmox.UploadRequest{Node: p.Node, Storage: p.Storage, Path: path, Name: name, SHA256: sha256})
}

func (p *PVEStore) Remove(ctx context.Context, name string) error {
	err := p.Client.DeleteVolume(ctx, p.Node, p.Storage, p.Storage+":vztmpl/"+name)
	if errors.Is(err, proxmox.ErrNotFound) {
		return nil
	}
	return err
}

func (p *PVEStore) Usage(ctx context.Context) (int64, int64, string, error) {
	have, err := p.Client.Templates(ctx, p.Node, p.Storage)
	if err != nil {
		return 0, 0, p.CacheDir, err
	}
	var bytes int64
	for _, v := range have {
		bytes += v.Size
	}
	return bytes, int64(len(have)), p.CacheDir, nil
}
