package pvestore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/pve-image/pve-image/proxmox"
)

func vol(name string, ctime int64) proxmox.Volume {
	return proxmox.Volume{Volid: "local:vztmpl/" + name, Size: 10, Ctime: ctime}
}

func TestPruneList(t *testing.T) {
	const (
		app1  = "app_1_amd64.aaaaaaaaaaaa.tar.zst"
		app2  = "app_2_amd64.bbbbbbbbbbbb.tar.zst"
		app3  = "app_3_amd64.cccccccccccc.tar.zst"
		app0  = "app_0_amd64.dddddddddddd.tar.zst"
		arm1  = "app_1_arm64.eeeeeeeeeeee.tar.zst"
		other = "other_1_amd64.ffffffffffff.tar.zst"
		hand  = "app_1_amd64.tar.zst"                     // not pve-image's: no digest
		pveam = "debian-12-standard_12.7-1_amd64.tar.zst" // Proxmox's own
	)
	vols := []proxmox.Volume{vol(app0, 100), vol(app1, 200), vol(app2, 300), vol(app3, 400), vol(arm1, 150), vol(other, 50), vol(hand, 10), vol(pveam, 5)}
	for _, tc := range []struct {
		name string
		want []string
		keep int
		gone []string
	}{
		{"keep newest", []string{app3}, 1, []string{app0, app1, app2}},
		{"keep two", []string{app3}, 2, []string{app0, app1}},
		{"wanted is old", []string{app1}, 2, []string{app0, app2}},
		{"wanted beyond keep", []string{app1, app2}, 1, []string{app0, app3}},
		{"keep all", []string{app3}, 10, nil},
		{"not uploaded yet", []string{"other_2_amd64.999999999999.tar.zst"}, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []Want
			for _, w := range tc.want {
				want = append(want, Want{Name: w})
			}
			var gone []string
			for _, v := range PruneList(vols, want, tc.keep) {
				gone = append(gone, v.Name())
			}
			if strings.Join(gone, " ") != strings.Join(tc.gone, " ") {
				t.Errorf("removes %v, want %v", gone, tc.gone)
			}
		})
	}
}

// fakePVE is a cluster of nodes with local storages and one shared one.
type fakePVE struct {
	mu      sync.Mutex
	down    map[string]bool
	vols    map[string][]proxmox.Volume // by node/storage ("shared" for the shared one)
	uploads []string
	deletes []string
}

func (f *fakePVE) key(node, storage string) string {
	if storage == "shared" {
		return "shared"
	}
	return node + "/" + storage
}

func (f *fakePVE) Nodes(context.Context) ([]string, error) { return []string{"pve1", "pve2"}, nil }

func (f *fakePVE) Storage(_ context.Context, node, storage string) (proxmox.StorageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down[node] {
		return proxmox.StorageInfo{}, fmt.Errorf("595 Connection refused")
	}
	return proxmox.StorageInfo{Name: storage, Content: "vztmpl", Shared: map[bool]int{true: 1}[storage == "shared"]}, nil
}

func (f *fakePVE) Templates(_ context.Context, node, storage string) ([]proxmox.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proxmox.Volume{}, f.vols[f.key(node, storage)]...), nil
}

func (f *fakePVE) Upload(_ context.Context, u proxmox.UploadRequest) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.key(u.Node, u.Storage)
	f.vols[k] = append(f.vols[k], proxmox.Volume{Volid: u.Storage + ":vztmpl/" + u.Name, Size: 10, Ctime: 1000})
	f.uploads = append(f.uploads, k+":"+u.Name)
	return u.Storage + ":vztmpl/" + u.Name, nil
}

func (f *fakePVE) DeleteVolume(_ context.Context, node, storage, volid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.key(node, storage)
	for i, v := range f.vols[k] {
		if v.Volid == volid {
			f.vols[k] = append(f.vols[k][:i], f.vols[k][i+1:]...)
			f.deletes = append(f.deletes, k+":"+volid)
			return nil
		}
	}
	return errors.New("no such volume")
}

// TestSync: missing templates are uploaded once per storage (a shared
// one once), old ones pruned, a down node reported while the others are
// synced, and a second sync changes nothing.
func TestSync(t *testing.T) {
	const name = "app_2_amd64.bbbbbbbbbbbb.tar.zst"
	for _, tc := range []struct {
		name    string
		storage string
		down    string
		uploads int
		failed  int
	}{
		{"local storages", "local", "", 2, 0},
		{"shared storage", "shared", "", 1, 0},
		{"a node down", "local", "pve2", 1, 1},
		{"shared, a node down", "shared", "pve1", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakePVE{down: map[string]bool{tc.down: true}, vols: map[string][]proxmox.Volume{
				"pve1/local": {vol("app_1_amd64.aaaaaaaaaaaa.tar.zst", 1)},
				"shared":     {{Volid: "shared:vztmpl/app_1_amd64.aaaaaaaaaaaa.tar.zst", Size: 10, Ctime: 1}},
			}}
			opens := 0
			want := []Want{{Name: name, Size: 10, Open: func(context.Context) (string, func(), error) { opens++; return "/dev/null", nil, nil }}}
			ctx := context.Background()
			targets, failed, err := Targets(ctx, f, nil, true, tc.storage)
			if err != nil {
				t.Fatal(err)
			}
			rep := Sync(ctx, f, targets, want, SyncOptions{Prune: true, Keep: 1})
			if len(f.uploads) != tc.uploads || len(failed)+len(rep.Failed) != tc.failed || opens != 1 {
				t.Errorf("uploads %v, failed %v %v, opened %d times", f.uploads, failed, rep.Failed, opens)
			}
			if tc.down != "pve1" && len(f.deletes) != 1 {
				t.Errorf("pruned %v", f.deletes)
			}
			f.uploads, f.deletes = nil, nil
			again := Sync(ctx, f, targets, want, SyncOptions{Prune: true, Keep: 1})
			if again.Changed() != 0 || len(f.uploads) != 0 || len(f.deletes) != 0 {
				t.Errorf("second sync changed %v: uploads %v deletes %v", again.Events, f.uploads, f.deletes)
			}
		})
	}
}

// TestSyncDryRun changes nothing and opens no file.
func TestSyncDryRun(t *testing.T) {
	f := &fakePVE{vols: map[string][]proxmox.Volume{"pve1/local": {vol("app_1_amd64.aaaaaaaaaaaa.tar.zst", 1)}}}
	want := []Want{{Name: "app_2_amd64.bbbbbbbbbbbb.tar.zst", Size: 10, Open: func(context.Context) (string, func(), error) {
		t.Error("opened in a dry run")
		return "", nil, nil
	}}}
	rep := Sync(context.Background(), f, []Target{{Node: "pve1", Storage: "local"}}, want, SyncOptions{Prune: true, Keep: 1, DryRun: true})
	var got []string
	for _, e := range rep.Events {
		got = append(got, string(e.Action))
	}
	if strings.Join(got, ",") != "would upload,would remove" || len(f.uploads)+len(f.deletes) != 0 {
		t.Errorf("events %v, uploads %v, deletes %v", got, f.uploads, f.deletes)
	}
}

// TestSyncUnavailable: a template that cannot be had is reported once and
// the others are still uploaded.
func TestSyncUnavailable(t *testing.T) {
	f := &fakePVE{vols: map[string][]proxmox.Volume{}}
	want := []Want{
		{Name: "bad_1_amd64.aaaaaaaaaaaa.tar.zst", Open: func(context.Context) (string, func(), error) { return "", nil, errors.New("conversion failed") }},
		{Name: "good_1_amd64.bbbbbbbbbbbb.tar.zst", Open: func(context.Context) (string, func(), error) { return "/dev/null", nil, nil }},
	}
	targets := []Target{{Node: "pve1", Storage: "local"}, {Node: "pve2", Storage: "local"}}
	rep := Sync(context.Background(), f, targets, want, SyncOptions{})
	if len(f.uploads) != 2 || len(rep.Unavailable) != 1 || !strings.Contains(rep.Err().Error(), "bad_1_amd64.aaaaaaaaaaaa.tar.zst: conversion failed") {
		t.Errorf("uploads %v, unavailable %v", f.uploads, rep.Unavailable)
	}
}
