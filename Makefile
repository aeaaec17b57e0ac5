# pve-image — see README.md.
GO      ?= go
BIN     := bin
GOFLAGS ?=

.PHONY: all build tools test test-short lint fuzz bench demo demo-offline clean

all: build

# pve-image and the init it puts into templates, which must be static and
# small (it lives in every application template).
build:
	$(GO) build -o $(BIN)/pve-image ./cmd/pve-image
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/pve-image-init ./cmd/pve-image-init

tools:
	scripts/install-tools.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The whole suite, race detector on. Tests that need root, LXC or a tool
# skip with a message when it is missing; PVE_IMAGE_REQUIRE_ALL=1 makes them
# fail instead (CI sets it).
test: tools lint
	$(GO) test -race -count=1 -timeout 45m ./...

test-short: lint
	$(GO) test -short ./...

fuzz:
	$(GO) test ./imgconv -run '^$$' -fuzz FuzzFlatten -fuzztime 60s -fuzzminimizetime 10s

bench: tools build
	scripts/bench.sh

# Convert an image from a registry: make demo IMAGE=docker.io/library/alpine:3.20
IMAGE ?= docker.io/library/alpine:latest
demo: build
	$(BIN)/pve-image convert $(IMAGE)

# Convert a fixture image the repository builds itself, without a network.
demo-offline: build
	scripts/fixture.sh $(BIN)/fixture.oci.tar
	$(BIN)/pve-image convert oci-archive:$(BIN)/fixture.oci.tar -o $(BIN)/fixture_1_amd64.tar.zst
	$(BIN)/pve-image inspect $(BIN)/fixture_1_amd64.tar.zst

clean:
	rm -rf $(BIN)
