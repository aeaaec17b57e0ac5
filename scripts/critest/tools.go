//go:build tools

// Package tools pins cri-tools for scripts/install-tools.sh: critest is a
// test binary (go test -c), which go install cannot build, so it is built
// from this module's requirements.
package tools

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
	_ "sigs.k8s.io/cri-tools/pkg/validate"
)
