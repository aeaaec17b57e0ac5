package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) pullCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "pull IMAGE",
		Short: "Fetch an image's blobs into the cache and print its manifest digest",
		Long: `Fetch the manifest, config and layers of IMAGE for the selected platform into
the cache, verifying each against its digest. Layers download in parallel,
with progress bars on a terminal and one line per blob otherwise. Prints the
digest of the platform's manifest.`,
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
			p, err := a.puller(c, a.progress())
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
			fmt.Fprintln(a.stdout, res.Digest)
			return nil
		},
	}
}
