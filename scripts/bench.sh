#!/usr/bin/env bash
# Side-by-side benchmark, every figure measured in this one run:
# - pve-image convert --init none against the pipeline people use today,
#   `crane export IMAGE - | zstd -T0 -3`, on the same images from one local
#   registry: wall times (median of $RUNS), the ratio, pve-image's peak RSS,
#   both output sizes, the machine's floor (benchimage -floor) and
#   pve-image's time as a multiple of it, and cache-hit converts by tag and
#   by digest. pve-image's time includes storing every blob in its cache,
#   which the crane pipeline does not do;
# - .tar.xz of debian against `crane export | xz -6 -T0`;
# - the CRI daemon with 50 idle pods, and pods' lifecycle (extraction
#   against linked clones), on the simulator with real LXC;
# - a template from a template registry against converting it.
#
# Images (scripts/benchimage): debian (debootstrap bookworm minbase in 4
# layers with deletions), smallfiles (100k files), big (~1 GiB).
#
# Needs root for debootstrap (the rootfs is built once into bin/bench/).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
BENCH=bin/bench
mkdir -p "$BENCH"
export PATH="$PWD/bin:$PATH"

if [[ ! -x $BENCH/debian-rootfs/bin/bash ]]; then
	echo "building the Debian rootfs with debootstrap (once)" >&2
	rm -rf "$BENCH/debian-rootfs"
	debootstrap --variant=minbase bookworm "$BENCH/debian-rootfs" http://deb.debian.org/debian >"$BENCH/debootstrap.log"
fi

port=$(shuf -i 20000-60000 -n 1)
host=127.0.0.1:$port
regdir=$(mktemp -d)
cat >"$regdir/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $regdir/data}}
http: {addr: $host}
YML
registry serve "$regdir/config.yml" >"$regdir/log" 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null; rm -rf "$regdir" "$work"' EXIT
work=$(mktemp -d)
for _ in $(seq 50); do curl -sf "http://$host/v2/" >/dev/null && break; sleep 0.1; done

echo "== building images" >&2
go build -o bin/benchimage ./scripts/benchimage
bin/benchimage -rootfs "$BENCH/debian-rootfs" -registry "$host" | column -t -s $'\t' >&2

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# ms CMD...: the wall time of one run in milliseconds, output discarded.
ms() { local s; s=$(date +%s%N); "$@" >/dev/null 2>&1; echo $((($(date +%s%N) - s) / 1000000)); }

# timeit CMD...: prints "seconds maxrss_kib" of one run.
timeit() { /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; cat "$work/time"; }

printf '\n%-11s %9s %12s %7s %8s %8s %9s %6s %8s %8s %7s %7s\n' image "pve s" "crane|zstd s" ratio "RSS MiB" "pve MiB" "crane MiB" size "floor s" "pve/floor" "hit ms" "@sha ms"
gunzip_cpu=()
for img in debian smallfiles big; do
	ref=$host/bench/$img:1
	pve_t=() crane_t=() rss=()
	for _ in $(seq "$RUNS"); do
		# Each run starts cold and with no writeback of the last one pending,
		# so neither tool pays for the other's disk writes.
		rm -rf "$work/cache" "$work/crane.tar.zst"
		sync
		read -r t m < <(timeit bin/pve-image --cache-dir "$work/cache" convert --init none "$ref")
		pve_t+=("$t") rss+=("$m")
		sync
		read -r t _ < <(timeit bash -c "crane export --insecure $ref - | zstd -T0 -3 -q -f -o $work/crane.tar.zst")
		crane_t+=("$t")
	done
	out=$(bin/pve-image --cache-dir "$work/cache" convert --init none "$ref" 2>/dev/null)
	digest=$(crane digest --insecure "$ref")
	hit=() dhit=()
	for _ in $(seq "$RUNS"); do
		hit+=("$(ms bin/pve-image --cache-dir "$work/cache" convert --init none "$ref")")
		dhit+=("$(ms bin/pve-image --cache-dir "$work/cache" convert --init none "$host/bench/$img@$digest")")
	done
	# The floor: every layer decoded and the visible bytes encoded with
	# the fastest tools here, spread over the cores (benchimage/floor.go).
	blobs=()
	for d in $(crane manifest --insecure "$ref" | jq -r '.layers[].digest'); do
		blobs+=("$work/cache/blobs/sha256/${d#sha256:}")
	done
	read -r fl _ _ _ _ godec igzdec < <(bin/benchimage -floor "$out" "${blobs[@]}")
	gunzip_cpu+=("$img: Go ${godec} s, igzip ${igzdec} s")
	p=$(printf '%s\n' "${pve_t[@]}" | median)
	c=$(printf '%s\n' "${crane_t[@]}" | median)
	r=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
	ps=$(stat -c %s "$out") cs=$(stat -c %s "$work/crane.tar.zst")
	printf '%-11s %9s %12s %6.2fx %8d %8.1f %9.1f %+5.1f%% %8s %8.2fx %7s %7s\n' "$img" "$p" "$c" "$(echo "$c / $p" | bc -l)" $((r / 1024)) \
		"$(echo "$ps / 1048576" | bc -l)" "$(echo "$cs / 1048576" | bc -l)" "$(echo "100 * $ps / $cs - 100" | bc -l)" \
		"$fl" "$(echo "$p / $fl" | bc -l)" "$(printf '%s\n' "${hit[@]}" | median)" "$(printf '%s\n' "${dhit[@]}" | median)"
done
echo
echo "ratio = crane|zstd time / pve-image time (above 1: pve-image is faster); both --init none. RSS is the highest of $RUNS cold runs;"
echo "size = pve-image's template against crane's, in %. floor = the CPU time to decode every layer and encode the visible bytes"
echo "with the fastest decoder and encoder here, over the cores; pve/floor = pve-image's time as a multiple of it."
echo "hit ms, @sha ms = a whole cache-hit convert process, by tag and by digest."
echo "CPU time to inflate the gzip layers, in Go and with igzip (which pve-image uses when installed): ${gunzip_cpu[*]/%/;}"
echo "Targets: ratio >= 2.0x on every image with size <= +3%; RSS <= 200 MiB on big; a hit <= 50 ms by tag, <= 20 ms by digest."

echo
echo "== .tar.xz of debian: pve-image against crane export | xz -6 -T0" >&2
ref=$host/bench/debian:1
rm -rf "$work/cache" "$work/d.tar.xz" "$work/crane.tar.xz"
sync
read -r px _ < <(timeit bin/pve-image --cache-dir "$work/cache" convert --init none "$ref" -o "$work/d.tar.xz")
sync
read -r cx _ < <(timeit bash -c "crane export --insecure $ref - | xz -6 -T0 -q >$work/crane.tar.xz")
printf '\n%-11s %9s %14s %7s %8s %10s\n' image "pve s" "crane|xz s" ratio "pve MiB" "crane MiB"
printf '%-11s %9s %14s %6.2fx %8.1f %10.1f\n' debian "$px" "$cx" "$(echo "$cx / $px" | bc -l)" \
	"$(echo "$(stat -c %s "$work/d.tar.xz") / 1048576" | bc -l)" "$(echo "$(stat -c %s "$work/crane.tar.xz") / 1048576" | bc -l)"
echo "pve-image runs $(xz --version 2>/dev/null | head -1 || echo 'no xz: the pure Go encoder') for .tar.xz."

echo
echo "== 50 idle pods: the CRI daemon's CPU and Proxmox requests (real LXC containers on the simulator)" >&2
# Each second a client asks what kubelet asks (relist, every pod's and
# container's status); the daemon also follows every container's output.
go test ./tests -run '^$' -bench BenchmarkCRIIdlePods -benchtime 1x -count 1 | grep -E '^Benchmark|^ok|FAIL'
echo "Targets: the daemon under 5% of a core and at most about one Proxmox request a second, whatever the pod count."

echo
echo "== pods' lifecycle: extraction against linked clones (real LXC containers on the simulator)" >&2
# Prints pull-to-running, create-to-running, stop and remove; p50/p99 per
# CRI call for 1, 10 and 50 pods created at once; pods a minute with the
# daemon's own time apart from Proxmox's; CPU and RSS with 50 pods.
go test ./tests -run '^$' -bench BenchmarkCRILifecycle -benchtime 1x -count 1 | grep -vE '^(goos|goarch|pkg|cpu):'
echo "Targets: linked clones faster than extraction from create to running; the daemon's own time a small share of each call."

echo
echo "== a fresh machine: the debian template from a template registry, against converting it" >&2
# The template is published once (pve-image publish); each run starts with
# an empty cache, as a new CI runner or Proxmox node does.
ref=$host/bench/debian:1
bin/pve-image --cache-dir "$work/cache" publish "$ref" --to "$host/pve-templates" >/dev/null 2>&1
conv_t=() reg_t=()
for _ in $(seq "$RUNS"); do
	rm -rf "$work/fresh"
	sync
	read -r t _ < <(timeit bin/pve-image --cache-dir "$work/fresh" convert "$ref")
	conv_t+=("$t")
	converted=$(sha256sum <"$(bin/pve-image --cache-dir "$work/fresh" convert "$ref" 2>/dev/null)")
	rm -rf "$work/fresh"
	sync
	read -r t _ < <(timeit bin/pve-image --cache-dir "$work/fresh" --template-registry "$host/pve-templates" convert "$ref")
	reg_t+=("$t")
	fetched=$(sha256sum <"$(bin/pve-image --cache-dir "$work/fresh" convert "$ref" 2>/dev/null)")
	[[ $converted == "$fetched" ]] || { echo "the template registry's template differs from the conversion" >&2; exit 1; }
done
c=$(printf '%s\n' "${conv_t[@]}" | median)
r=$(printf '%s\n' "${reg_t[@]}" | median)
printf '\n%-11s %12s %16s %7s\n' image "convert s" "template reg. s" ratio
printf '%-11s %12s %16s %6.2fx\n' debian "$c" "$r" "$(awk -v c="$c" -v r="$r" 'BEGIN { if (r < 0.01) r = 0.01; print c / r }')"
echo "ratio = cold convert time / time to get the same template from the template registry (above 1: the registry is faster)."
