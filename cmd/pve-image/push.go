package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/internal/bytesize"
	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/pvestore"
	"github.com/pve-image/pve-image/template"
)

func (a *app) pushCommand() *cobra.Command {
	var pf pveFlags
	var cf convertFlags
	var allNodes bool
	var format string
	cmd := &cobra.Command{
		Use:   "push IMAGE|TEMPLATE --node N [--storage S] [--all-nodes]",
		Short: "Upload a template to Proxmox storage, converting the image first if needed",
		Long: `Upload a template to a Proxmox storage. IMAGE is converted first (from the
cache when it was converted before) and named <name>_<tag>_<arch>.<sha12>.tar.zst,
the first 12 hex digits of its SHA-256 before the extension; a TEMPLATE file
keeps its own name, normalised as Proxmox would. A template already on the
storage with the same name and size is not uploaded again.

The upload carries its SHA-256, which Proxmox checks before keeping the file,
streams from disk with progress on stderr, and starts again with backoff when
the connection breaks. A shared storage is uploaded to once; --all-nodes also
uploads to every other node whose storage of that name is not shared. Prints
the volume ID.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cl, pc, err := a.dialNode(ctx, &pf)
			if err != nil {
				return err
			}
			src, err := a.templateFor(ctx, args[0], &cf, format)
			if err != nil {
				return err
			}
			volid, err := a.push(ctx, cl, pc.Node, pc.Storage, src, allNodes)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, volid)
			return nil
		},
	}
	pf.register(cmd, true)
	cf.register(cmd)
	cmd.Flags().BoolVar(&allNodes, "all-nodes", false, "also upload to every other node whose storage is not shared")
	cmd.Flags().StringVar(&format, "format", "template", "what to push for an IMAGE: template (a rootfs .tar.zst) or oci-archive (an OCI layout .tar for Proxmox 9.1's own importer)")
	return cmd
}

// localTemplate is a template file to push, with the name to give it.
type localTemplate struct {
	path, name, sha256 string
	size               int64
	meta               *template.Meta
}

// templateFor converts IMAGE (or takes a TEMPLATE file) for pushing.
func (a *app) templateFor(ctx context.Context, arg string, cf *convertFlags, format string) (*localTemplate, error) {
	if isTemplateFile(arg) {
		fi, err := os.Stat(arg)
		if err != nil {
			return nil, err
		}
		name := template.Sanitize(filepath.Base(arg))
		if !template.ValidName(name) {
			return nil, fmt.Errorf("%s: Proxmox takes only .tar, .tar.gz, .tar.xz, .tar.zst and .tar.bz2 files as templates", arg)
		}
		return &localTemplate{path: arg, name: name, size: fi.Size()}, nil
	}
	ref, err := a.parseRef(arg)
	if err != nil {
		return nil, err
	}
	b, err := a.builder(a.progress())
	if err != nil {
		return nil, err
	}
	opts, err := cf.formatOptions(format)
	if err != nil {
		return nil, err
	}
	res, err := b.Convert(ctx, ref, opts)
	if err != nil {
		return nil, err
	}
	for _, w := range res.Meta.Facts.Warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
	return &localTemplate{path: res.Path(), name: template.StorageName(res.Entry.File, res.Entry.SHA256),
		sha256: res.Entry.SHA256, size: res.Entry.Size, meta: &res.Meta}, nil
}

// push uploads t to storage on node, and with allNodes to the other nodes'
// unshared storages of that name (pvestore.Push). It returns the volume ID.
func (a *app) push(ctx context.Context, cl *proxmox.Client, node, storage string, t *localTemplate, allNodes bool) (string, error) {
	volid, events, err := pvestore.Push(ctx, cl, pvestore.File{Path: t.path, Name: t.name, SHA256: t.sha256, Size: t.size}, node, storage,
		pvestore.PushOptions{AllNodes: allNodes, Progress: func(name, node string) func(sent, total int64) { return a.uploadProgress(name, node) }, Log: a.log})
	for _, ev := range events {
		switch ev.Action {
		case pvestore.Present:
			fmt.Fprintf(a.stderr, "%s: already on %s/%s, same size\n", t.name, ev.Node, ev.Storage)
		case pvestore.Uploaded:
			fmt.Fprintf(a.stderr, "%s: uploaded to %s/%s\n", t.name, ev.Node, ev.Storage)
		}
	}
	return volid, err
}

// uploadProgress reports an upload's progress like a pull's: a bar on a
// terminal, nothing in between off one.
func (a *app) uploadProgress(name, node string) func(sent, total int64) {
	var mu sync.Mutex
	var last time.Time
	tty := isTerminal(a.stderr)
	return func(sent, total int64) {
		if !tty {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if sent < total && time.Since(last) < 100*time.Millisecond {
			return
		}
		last = time.Now()
		const width = 30
		fill := width
		if total > 0 {
			fill = int(sent * width / total)
		}
		fmt.Fprintf(a.stderr, "\r\x1b[2Kupload %s to %s [%-30s] %s / %s", name, node, string(bytesOf('=', fill)), bytesize.Format(sent), bytesize.Format(total))
		if sent >= total {
			fmt.Fprintln(a.stderr)
		}
	}
}

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}
