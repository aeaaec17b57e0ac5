# pve-image — see README.md.
GO      ?= go
BIN     := bin
GOFLAGS ?=

.PHONY: all build tools test test-go test-short lint fuzz bench demo demo-offline deb clean

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
	@$(MAKE) --no-print-directory test-go

# go test alone, for .ci/run, which times tools, lint and the tests apart.
test-go:
	$(GO) test -race -count=1 -timeout 45m ./...

test-short: lint
	$(GO) test -short ./...

# Every fuzz target for FUZZTIME each, one after the other. One line per
# target, PACKAGE:FUNCTION; a target that is not there fails make fuzz (go
# test -fuzz would just warn), checked for all before any runs. Minimising
# each new interesting input for long starves a short run: FuzzFlatten made
# about one exec a second with 10s, thousands with 1s.
FUZZTIME ?= 30s
FUZZ_TARGETS := \
	./imgconv:FuzzFlatten \
	./imgconv/runspec:FuzzParse \
	./registry:FuzzParseReference \
	./registry:FuzzOCIArchive \
	./registry:FuzzDockerArchive \
	./export:FuzzVzdump

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*} fn=$${t#*:}; \
		list=$$($(GO) test -list "^$$fn$$" "$$pkg"); \
		echo "$$list" | grep -qx "$$fn" || { echo "make fuzz: no fuzz target $$fn in $$pkg" >&2; exit 1; }; \
	done; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*} fn=$${t#*:}; \
		echo "fuzz: $$pkg $$fn for $(FUZZTIME)"; \
		$(GO) test "$$pkg" -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s; \
	done

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

# The Debian package: make deb [DEB_VERSION=...] [GOARCH=arm64] [DEBDIR=dir].
# See scripts/deb/build.sh for what it holds and how it stays reproducible
# (SOURCE_DATE_EPOCH defaults to the commit's time).
DEBDIR ?= $(BIN)
deb:
	scripts/deb/build.sh $(DEBDIR)

clean:
	rm -rf $(BIN)
