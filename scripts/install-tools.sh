#!/usr/bin/env bash
# Installs the helper binaries tests and benchmarks use into bin/, pinned:
#   registry  CNCF Distribution registry (integration tests)
#   crane     go-containerregistry's CLI (the benchmark's peer pipeline)
#   crictl, critest  cri-tools v1.37.0 (CRI tests)
#   kubelet   Kubernetes v1.37.2 (tests that run a real kubelet on the CRI)
# Each is built from the Go module proxy (`go install`, or `go build` in a
# pinned tools module under scripts/); a binary already present at the
# pinned version is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
export GOBIN="$PWD/bin"

install() { # name module version
	local name=$1 mod=$2 ver=$3 stamp="bin/.$1.version"
	if [[ -x bin/$name && -f $stamp && $(cat "$stamp") == "$mod@$ver" ]]; then
		return
	fi
	echo "installing $name ($mod@$ver)" >&2
	go install "$mod@$ver"
	echo "$mod@$ver" >"$stamp"
}

install registry github.com/distribution/distribution/v3/cmd/registry v3.1.2
install crane github.com/google/go-containerregistry/cmd/crane v0.22.1

# crictl and critest from cri-tools v1.37.0 (pinned in scripts/critest/go.mod).
# critest is a test binary: go install cannot build it (cri.md §2.1).
critools() {
	local stamp=bin/.cri-tools.version want
	want="cri-tools@v1.37.0 $(sha256sum scripts/critest/go.sum | cut -c1-16)"
	if [[ -x bin/crictl && -x bin/critest && -f $stamp && $(cat "$stamp") == "$want" ]]; then
		return
	fi
	echo "installing crictl and critest (cri-tools v1.37.0)" >&2
	local ldflags='-X sigs.k8s.io/cri-tools/pkg/version.Version=1.37.0'
	(cd scripts/critest &&
		CGO_ENABLED=0 go build -ldflags "$ldflags" -o ../../bin/crictl sigs.k8s.io/cri-tools/cmd/crictl &&
		CGO_ENABLED=0 go test -c -ldflags "$ldflags" -o ../../bin/critest sigs.k8s.io/cri-tools/cmd/critest)
	echo "$want" >"$stamp"
}
critools

# kubelet v1.37.2 (pinned in scripts/kubelet/go.mod, which also pins the
# k8s.io staging modules: see scripts/kubelet/tools.go). Static (no cgo), and
# stamped with its version as the release build does, so that
# `kubelet --version` says v1.37.2. A cold build takes a few minutes.
kubelet() {
	local stamp=bin/.kubelet.version want
	want="kubernetes@v1.37.2 $(sha256sum scripts/kubelet/go.sum | cut -c1-16)"
	if [[ -x bin/kubelet && -f $stamp && $(cat "$stamp") == "$want" ]]; then
		return
	fi
	echo "installing kubelet (kubernetes v1.37.2)" >&2
	local ldflags='-X k8s.io/component-base/version.gitVersion=v1.37.2'
	ldflags+=' -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37'
	(cd scripts/kubelet &&
		CGO_ENABLED=0 go build -ldflags "$ldflags" -o ../../bin/kubelet k8s.io/kubernetes/cmd/kubelet)
	echo "$want" >"$stamp"
}
kubelet
