//go:build tools

// Package tools pins kubelet v1.37.2 for scripts/install-tools.sh, which
// builds bin/kubelet from this module's requirements for the tests that run
// a real kubelet against `pve-image cri` (tests/testenv/kubelet.go).
//
// Why go.mod has a replace line for every k8s.io staging module:
// k8s.io/kubernetes's own go.mod requires its staging modules
// (k8s.io/api, k8s.io/client-go, k8s.io/kubelet, ...) at v0.0.0 and
// replaces them with ./staging/src/k8s.io/... paths. Replace directives
// apply only in the main module, so a consumer sees the bare v0.0.0
// requirements, which do not exist on the module proxy; it must pin each
// staging module itself, to the v0.37.2 tags that match v1.37.2.
package tools

import _ "k8s.io/kubernetes/cmd/kubelet"
