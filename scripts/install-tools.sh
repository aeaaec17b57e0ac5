#!/usr/bin/env bash
# Installs the helper binaries tests and benchmarks use into bin/, pinned:
#   registry  CNCF Distribution registry (integration tests)
#   crane     go-containerregistry's CLI (the benchmark's peer pipeline)
# Each is built from the Go module proxy with `go install`; a binary already
# present at the pinned version is kept.
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
