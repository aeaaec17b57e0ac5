#!/usr/bin/env bash
# Builds the offline demo image: tests/testapp compiled statically, packed by
# cmd/mkfixture into an OCI archive at $1.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bin/fixture.oci.tar}
mkdir -p "$(dirname "$out")" bin
CGO_ENABLED=0 go build -trimpath -ldflags=-s -o bin/testapp ./tests/testapp
go run ./cmd/mkfixture -app bin/testapp -o "$out" >/dev/null
echo "$out"
