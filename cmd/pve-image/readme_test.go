package main

import (
	"os"
	"regexp"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestREADMEDocumentsEveryFlag: every command and every flag users can
// see is in the README, so that the README stays the reference as
// commands grow. A flag counts when the README names it (`--name`) at
// all: the shared flag sets are documented once, in tables.
func TestREADMEDocumentsEveryFlag(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		path := c.CommandPath()
		// "pve-image cache ls | prune | verify" names all three.
		if c.HasParent() && !regexp.MustCompile(regexp.QuoteMeta(c.Parent().CommandPath())+`[^\n]*\b`+regexp.QuoteMeta(c.Name())+`\b`).MatchString(readme) {
			t.Errorf("README never names the command %q", path)
		}
		check := func(f *pflag.Flag) {
			if f.Hidden || f.Name == "help" {
				return
			}
			if !regexp.MustCompile("--" + regexp.QuoteMeta(f.Name) + `\b`).MatchString(readme) {
				t.Errorf("%s: README never names the flag --%s (%s)", path, f.Name, f.Usage)
			}
		}
		c.LocalFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCommand())
}
