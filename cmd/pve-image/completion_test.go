package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestFlagValueCompletion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "convert", "--init", ""}, "shim\t"},
		{[]string{"__complete", "push", "--format", ""}, "oci-archive\t"},
		{[]string{"__complete", "pull", "--platform", ""}, "linux/arm64"},
		{[]string{"__complete", "cri", "--cgroup-driver", ""}, "cgroupfs"},
	} {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(tc.args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if !strings.Contains(out.String(), tc.want) || !strings.Contains(out.String(), ":4") {
			t.Errorf("%v completes to:\n%s", tc.args, out.String())
		}
	}
}
