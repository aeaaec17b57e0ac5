package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/pve-image/pve-image/cache"
	"github.com/pve-image/pve-image/registry"
)

// pullResult is pull --json's output.
type pullResult struct {
	Image       string     `json:"image"`
	Digest      string     `json:"digest"`
	IndexDigest string     `json:"indexDigest,omitempty"`
	MediaType   string     `json:"mediaType"`
	Platform    string     `json:"platform"`
	Config      pullBlob   `json:"config"`
	Layers      []pullBlob `json:"layers"`
	// Size is the config's and the layers' compressed size.
	Size int64 `json:"size"`
	// FromCache says the tag was resolved from the cache (--offline, or the
	// registry was unreachable), to what it resolved to at TagResolved.
	FromCache   bool       `json:"fromCache"`
	TagResolved *time.Time `json:"tagResolved,omitempty"`
}

type pullBlob struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType"`
	// Cached says the blob was already in the cache.
	Cached bool `json:"cached"`
}

func (a *app) pullCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pull IMAGE",
		Short: "Fetch an image's blobs into the cache and print its manifest digest",
		Long: `Fetch the manifest, config and layers of IMAGE for the selected platform into
the cache, verifying each against its digest. Layers download in parallel,
with progress bars on a terminal and one line per blob otherwise. Prints the
digest of the platform's manifest, or with --json a description of what was
pulled.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := a.parseRef(args[0])
			if err != nil {
				return err
			}
			c, err := a.openCache()
			if err != nil {
				return err
			}
			store := &fetchedBlobs{Cache: c, fetched: map[v1.Hash]bool{}}
			p, err := a.puller(store, a.progress())
			if err != nil {
				return err
			}
			res, err := p.Resolve(cmd.Context(), ref)
			if err != nil {
				return err
			}
			defer res.Close()
			if _, err := p.Fetch(cmd.Context(), res); err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintln(a.stdout, res.Digest)
				return nil
			}
			out := pullResult{
				Image: res.Ref.String(), Digest: res.Digest.String(), MediaType: string(res.MediaType),
				Platform: registry.PlatformString(res.Platform), FromCache: res.FromCache,
				Config: blobOf(res.Manifest.Config, !store.wasFetched(res.Manifest.Config.Digest)), Layers: []pullBlob{},
			}
			if res.IndexDigest != (v1.Hash{}) {
				out.IndexDigest = res.IndexDigest.String()
			}
			if res.FromCache {
				out.TagResolved = &res.TagResolved
			}
			out.Size = res.Manifest.Config.Size
			for _, l := range res.Manifest.Layers {
				out.Layers = append(out.Layers, blobOf(l, !store.wasFetched(l.Digest)))
				out.Size += l.Size
			}
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was pulled as JSON: digests, platform, config and layers (each cached or fetched), size")
	return cmd
}

func blobOf(d v1.Descriptor, cached bool) pullBlob {
	return pullBlob{Digest: d.Digest.String(), Size: d.Size, MediaType: string(d.MediaType), Cached: cached}
}

// fetchedBlobs is the cache, noting which blobs this run downloaded.
type fetchedBlobs struct {
	*cache.Cache
	mu      sync.Mutex
	fetched map[v1.Hash]bool
}

func (s *fetchedBlobs) PutBlob(ctx context.Context, h v1.Hash, open func() (io.ReadCloser, error)) (int64, error) {
	return s.Cache.PutBlob(ctx, h, func() (io.ReadCloser, error) {
		s.mu.Lock()
		s.fetched[h] = true
		s.mu.Unlock()
		return open()
	})
}

func (s *fetchedBlobs) wasFetched(h v1.Hash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetched[h]
}
