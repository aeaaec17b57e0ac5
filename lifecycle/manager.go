package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/pvestore"
	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// Manager runs and updates containers on one Proxmox cluster.
type Manager struct {
	PVE *proxmox.Client
	// Builder converts images; Convert says how.
	Builder *template.Builder
	Convert template.Options
	// Insecure are registries reached over plain HTTP (references are
	// parsed with them).
	Insecure []string
	// TemplateStorage is the storage templates go to on each node.
	TemplateStorage string
	// StateDir holds the journals of updates in progress, one per
	// container; it must be this cluster's alone.
	StateDir string
	Log      *slog.Logger
	// Out hears what is done, for people (stderr).
	Out io.Writer
	// UploadProgress, if set, reports an upload's progress.
	UploadProgress func(name, node string) func(sent, total int64)
	// AfterStep, if set, is called each time a journal step has been
	// recorded done, with its number (from 1): tests kill the process
	// there to check that --resume ends every interrupted update well.
	AfterStep func(n int, s Step)
}

func (m *Manager) log() *slog.Logger {
	if m.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Log
}

func (m *Manager) say(format string, args ...any) {
	if m.Out != nil {
		fmt.Fprintf(m.Out, format+"\n", args...)
	}
}

// Template is an image converted into a template file of the cache.
type Template struct {
	Ref string // as the user gave it
	// Digest is the platform's manifest digest.
	Digest string
	Path   string // the cached file
	// Name is its name on a storage, with the first 12 hex digits of its
	// SHA-256: the same name and size on a storage mean the same bytes.
	Name   string
	SHA256 string
	Size   int64
	Meta   template.Meta
}

// Resolve pins ref to the manifest digest it names now, without
// converting: an update that finds the same digest touches nothing.
func (m *Manager) Resolve(ctx context.Context, ref string) (string, error) {
	r, err := m.parse(ref)
	if err != nil {
		return "", err
	}
	res, err := m.Builder.Puller.Resolve(ctx, r)
	if err != nil {
		return "", err
	}
	defer res.Close()
	return res.Digest.String(), nil
}

func (m *Manager) parse(ref string) (registry.Reference, error) {
	return registry.ParseReference(ref, m.Insecure)
}

// Template converts ref (from the cache when it was converted before).
func (m *Manager) Template(ctx context.Context, ref string) (*Template, error) {
	r, err := m.parse(ref)
	if err != nil {
		return nil, err
	}
	res, err := m.Builder.Convert(ctx, r, m.Convert)
	if err != nil {
		return nil, err
	}
	for _, w := range res.Meta.Facts.Warnings {
		m.say("warning: %s", w)
	}
	return &Template{Ref: ref, Digest: res.Meta.ManifestDigest, Path: res.Path(), Name: template.StorageName(res.Entry.File, res.Entry.SHA256),
		SHA256: res.Entry.SHA256, Size: res.Entry.Size, Meta: res.Meta}, nil
}

// EnsureTemplate puts t on node's template storage unless it is there
// (same name and size: pvestore.Push), and returns its volume ID. A shared
// storage is one for the whole cluster: what one node has, all have.
func (m *Manager) EnsureTemplate(ctx context.Context, node string, t *Template) (string, error) {
	volid, events, err := pvestore.Push(ctx, m.PVE, pvestore.File{Path: t.Path, Name: t.Name, SHA256: t.SHA256, Size: t.Size},
		node, m.TemplateStorage, pvestore.PushOptions{Progress: m.UploadProgress, Log: m.Log})
	if err != nil {
		return "", err
	}
	for _, e := range events {
		if e.Action == pvestore.Uploaded {
			m.say("%s: uploaded to %s/%s", t.Name, e.Node, e.Storage)
		}
	}
	return volid, nil
}

// newID names an operation: in archive notes, records and messages.
func newID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b)
}
