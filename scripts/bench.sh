#!/usr/bin/env bash
# Side-by-side benchmark: pve-image convert against the pipeline people use
# today, `crane export IMAGE - | zstd -T0 -3`, on the same images from one
# local registry, in one run. Prints wall times (median of $RUNS), the
# ratio, pve-image's peak RSS and output sizes, and the time of a cache-hit
# convert. pve-image's time includes storing every blob in its cache, which
# the crane pipeline does not do.
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
go run ./scripts/benchimage -rootfs "$BENCH/debian-rootfs" -registry "$host" | column -t -s $'\t' >&2

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# timeit CMD...: prints "seconds maxrss_kib" of one run.
timeit() { /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; cat "$work/time"; }

printf '\n%-11s %12s %14s %7s %12s %12s %12s %10s\n' image "pve-image s" "crane|zstd s" ratio "pve RSS MiB" "pve MiB" "crane MiB" "hit ms"
for img in debian smallfiles big; do
	ref=$host/bench/$img:1
	pve_t=() crane_t=() rss=()
	for _ in $(seq "$RUNS"); do
		# Each run starts cold and with no writeback of the last one pending,
		# so neither tool pays for the other's disk writes.
		rm -rf "$work/cache" "$work/crane.tar.zst"
		sync
		read -r t m < <(timeit bin/pve-image --cache-dir "$work/cache" convert "$ref")
		pve_t+=("$t") rss+=("$m")
		sync
		read -r t _ < <(timeit bash -c "crane export --insecure $ref - | zstd -T0 -3 -q -f -o $work/crane.tar.zst")
		crane_t+=("$t")
	done
	hit=()
	for _ in $(seq "$RUNS"); do
		s=$(date +%s%N)
		bin/pve-image --cache-dir "$work/cache" convert "$ref" >/dev/null 2>&1
		hit+=($(( ($(date +%s%N) - s) / 1000000 )))
	done
	p=$(printf '%s\n' "${pve_t[@]}" | median)
	c=$(printf '%s\n' "${crane_t[@]}" | median)
	r=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
	h=$(printf '%s\n' "${hit[@]}" | median)
	printf '%-11s %12s %14s %6.2fx %12d %12.1f %12.1f %10s\n' "$img" "$p" "$c" "$(echo "$c / $p" | bc -l)" $((r / 1024)) \
		"$(echo "$(stat -c %s "$(bin/pve-image --cache-dir "$work/cache" convert "$ref" 2>/dev/null)") / 1048576" | bc -l)" "$(echo "$(stat -c %s "$work/crane.tar.zst") / 1048576" | bc -l)" "$h"
done
echo
echo "ratio = crane|zstd time / pve-image time (above 1: pve-image is faster); RSS is the highest of $RUNS cold runs."
echo "Targets: faster than crane|zstd on every image; RSS under 200 MiB for 'big' (~1 GiB); a cache hit under 100 ms."

echo
echo "== 50 idle pods: the CRI daemon's CPU and Proxmox requests (real LXC containers on the simulator)" >&2
# Each second a client asks what kubelet asks (relist, every pod's and
# container's status); the daemon also follows every container's output.
go test ./tests -run '^$' -bench BenchmarkCRIIdlePods -benchtime 1x -count 1 | grep -E '^Benchmark|^ok|FAIL'
echo "Targets: the daemon under 5% of a core and at most about one Proxmox request a second, whatever the pod count."

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
