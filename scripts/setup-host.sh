#!/usr/bin/env bash
# Prepares a Debian machine for the full test suite, as root: the packages
# the tests drive (LXC, uidmap, compressors, debootstrap for the benchmark;
# dpkg-deb, ca-certificates — the package's dependency — and man-db for the
# package test, which builds the .deb and installs it with dpkg and apt) and
# the subordinate id range Proxmox gives unprivileged containers
# (root:100000:65536 in /etc/subuid and /etc/subgid).
set -euo pipefail
if [[ $(id -u) != 0 ]]; then
	echo "setup-host.sh must run as root" >&2
	exit 1
fi
pkgs=(lxc uidmap dnsmasq-base iproute2 zstd xz-utils isal debootstrap busybox-static time bc bsdextrautils curl
	dpkg apt ca-certificates man-db jq)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for f in /etc/subuid /etc/subgid; do
	grep -qx 'root:100000:65536' "$f" 2>/dev/null || echo 'root:100000:65536' >>"$f"
done
