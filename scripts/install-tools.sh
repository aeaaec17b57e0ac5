#!/usr/bin/env bash
# Installs the helper binaries tests and benchmarks use into bin/, pinned:
#   registry  CNCF Distribution registry (integration tests)
#   crane     go-containerregistry's CLI (the benchmark's peer pipeline)
#   crictl, critest  cri-tools v1.37.0 (CRI tests)
#   kubelet   Kubernetes v1.37.2 (tests that run a real kubelet on the CRI)
# Each is built from the Go module proxy (`go install`, or `go build` in a
# pinned tools module under scripts/), static (CGO_ENABLED=0) and without
# debug information (below). A binary already present at the pinned version
# (its stamp bin/.NAME.version says so) is kept, so bin/ is the cache: CI
# that keeps bin/ between runs builds nothing here.
#
# The tools that need building are built side by side ($TOOLS_JOBS at a
# time, below), kubelet (the longest, about three minutes cold on two cores)
# first. Each build's output goes to its own log, printed with the tool's
# name when it finishes; any failure fails the script, after the others
# have finished, with its log shown.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
export GOBIN="$PWD/bin" CGO_ENABLED=0

# current NAME BINARY... WANT: the binaries exist and the stamp says WANT.
current() {
	local name=$1 want=${*: -1} stamp="bin/.$1.version" b
	for b in "${@:2:$#-2}"; do
		[[ -x bin/$b ]] || return 1
	done
	[[ -f $stamp && $(cat "$stamp") == "$want" ]]
}

# No debug information: not generated (-dwarf=false, about 13% less
# compiling) and not linked (-s -w: shorter links, a smaller bin/). A later
# -ldflags replaces this one, so the builds that set their own add -s -w.
nodebug=(-gcflags=all=-dwarf=false -ldflags='-s -w')

# want_NAME prints what bin/.NAME.version says when NAME is current;
# build_NAME builds it into bin/ (the stamp is written after it succeeds).

want_registry() { echo "github.com/distribution/distribution/v3/cmd/registry@v3.1.2"; }
build_registry() { go install "${nodebug[@]}" "$(want_registry)"; }

want_crane() { echo "github.com/google/go-containerregistry/cmd/crane@v0.22.1"; }
build_crane() { go install "${nodebug[@]}" "$(want_crane)"; }

# crictl and critest from cri-tools v1.37.0 (pinned in scripts/critest/go.mod).
# critest is a test binary: go install cannot build it (cri.md §2.1).
want_cri-tools() { echo "cri-tools@v1.37.0 $(sha256sum scripts/critest/go.sum | cut -c1-16)"; }
build_cri-tools() {
	local ldflags='-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=1.37.0'
	(cd scripts/critest &&
		go build "${nodebug[@]}" -ldflags "$ldflags" -o ../../bin/crictl sigs.k8s.io/cri-tools/cmd/crictl &&
		go test -c "${nodebug[@]}" -ldflags "$ldflags" -o ../../bin/critest sigs.k8s.io/cri-tools/cmd/critest)
}

# kubelet v1.37.2 (pinned in scripts/kubelet/go.mod, which also pins the
# k8s.io staging modules: see scripts/kubelet/tools.go), stamped with its
# version as the release build does, so that `kubelet --version` says
# v1.37.2.
want_kubelet() { echo "kubernetes@v1.37.2 $(sha256sum scripts/kubelet/go.sum | cut -c1-16)"; }
build_kubelet() {
	local ldflags='-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2'
	ldflags+=' -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37'
	(cd scripts/kubelet &&
		go build "${nodebug[@]}" -ldflags "$ldflags" -o ../../bin/kubelet k8s.io/kubernetes/cmd/kubelet)
}

# name and the binaries it makes, longest build first.
tools=("kubelet kubelet" "cri-tools crictl critest" "registry registry" "crane crane")

# At most $TOOLS_JOBS builds at once (default: one per core, at least two):
# each go build already compiles on every core, so two at once keep two
# cores busy through the parts of a build that use one (loading, linking),
# and more would compile the standard library several times at once.
max=${TOOLS_JOBS:-$(nproc)}
((max >= 2)) || max=2

logs=$(mktemp -d)
declare -A name_of=() start_of=()
failed=()
# Builds still running when the script ends early (an error, ^C) are ended:
# each runs in its own process group (set -m) so that all its compilers go.
cleanup() {
	local p
	for p in "${!name_of[@]}"; do
		kill -TERM -- "-$p" 2>/dev/null || true
	done
	rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# reap: waits for one build to end and prints its log.
reap() {
	local status=0 pid name secs
	wait -n -p pid "${!name_of[@]}" || status=$?
	name=${name_of[$pid]}
	unset "name_of[$pid]"
	secs=$((SECONDS - start_of[$name]))
	if ((status == 0)); then
		echo "installed $name in ${secs}s" >&2
		sed "s/^/[$name] /" "$logs/$name.log" >&2
	else
		echo "FAILED: $name (exit status $status after ${secs}s); its log:" >&2
		sed "s/^/[$name] /" "$logs/$name.log" >&2
		failed+=("$name")
	fi
}

for t in "${tools[@]}"; do
	read -r name bins <<<"$t"
	want=$("want_$name")
	# shellcheck disable=SC2086
	if current "$name" $bins "$want"; then
		continue
	fi
	while ((${#name_of[@]} >= max)); do
		reap
	done
	echo "installing $name ($want)" >&2
	# The stamp goes first so that an interrupted build is redone, and is
	# written again only when the build succeeded.
	rm -f "bin/.$name.version"
	# The first build (the longest) has the cores when it can use them;
	# the others, niced, take what it leaves.
	nice=$(( ${#name_of[@]} ? 10 : 0 ))
	set -m
	(
		set -e
		renice -n "$nice" -p "$BASHPID" >/dev/null
		"build_$name"
		echo "$want" >"bin/.$name.version"
	) >"$logs/$name.log" 2>&1 &
	set +m
	name_of[$!]=$name
	start_of[$name]=$SECONDS
done
while ((${#name_of[@]})); do
	reap
done
if ((${#failed[@]})); then
	echo "install-tools.sh: failed to build: ${failed[*]}" >&2
	exit 1
fi
