package main

import (
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// flagValues are the values a flag takes, wherever it is registered, for
// shell completion (cobra completes commands and flag names by itself).
var flagValues = map[string][]string{
	"init":          {"auto\tpve-image-init for application images, the image's own init for system images", "shim\talways pve-image-init", "none\tthe image's own /sbin/init"},
	"format":        {"template\ta flattened rootfs for any Proxmox", "oci-archive\tan OCI layout .tar for Proxmox 9.1's importer"},
	"platform":      {"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/386", "linux/riscv64"},
	"cgroup-driver": {"systemd", "cgroupfs"},
}

// completeFlagValues gives every flag of root's tree that flagValues
// knows its value completion.
func completeFlagValues(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				if vals, ok := flagValues[f.Name]; ok {
					c.RegisterFlagCompletionFunc(f.Name, func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
						return vals, cobra.ShellCompDirectiveNoFileComp
					})
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
