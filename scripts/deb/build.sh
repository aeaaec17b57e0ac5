#!/usr/bin/env bash
# Builds the Debian package of pve-image with dpkg-deb (no debhelper):
#   scripts/deb/build.sh [OUTDIR]      (make deb; OUTDIR defaults to bin/)
# and prints the path of OUTDIR/pve-image_VERSION_ARCH.deb.
#
# What it installs:
#   /usr/bin/pve-image                         the CLI (static)
#   /usr/lib/pve-image/pve-image-init          the init put into templates (static),
#                                              where pve-image looks for it
#   /lib/systemd/system/pve-image-cri.service  the CRI service (not enabled)
#   /usr/share/man/man1/pve-image*.1.gz        one page per command
#   /usr/share/bash-completion/completions/pve-image
#   /usr/share/zsh/vendor-completions/_pve-image
#   /usr/share/fish/vendor_completions.d/pve-image.fish
#   /usr/share/doc/pve-image/                  README, copyright, changelog,
#                                              examples/cri.yaml.example
# Nothing goes into /etc: the service's /etc/pve-image/cri.yaml is the
# administrator's to write (from the example).
#
# Settings, from the environment (make passes its command-line variables):
#   DEB_VERSION        the package version; default from git: vX.Y.Z tags
#                      (`git describe`), else the version in
#                      cmd/pve-image/root.go + "+git<commit time>.<commit>",
#                      ".dirty" appended for a modified work tree
#   GOARCH             the architecture to build for (default: go env GOARCH)
#   SOURCE_DATE_EPOCH  the time of every file and of the man pages; default
#                      the commit time
#   DEB_MAINTAINER     the control file's Maintainer
#
# Reproducible: the same commit, Go toolchain, dpkg and xz give the same
# bytes, whoever builds it, wherever, with whatever umask: -trimpath static
# builds, files sorted, owned by root, dated SOURCE_DATE_EPOCH, modes set
# here, single-threaded xz.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bin}
mkdir -p "$out"
out=$(cd "$out" && pwd)

die() {
	echo "deb: $*" >&2
	exit 1
}
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt-get install dpkg)"

ingit=false
if git rev-parse --verify -q HEAD >/dev/null 2>&1; then
	ingit=true
fi

# Version.
version=${DEB_VERSION:-}
if [[ -z $version ]]; then
	$ingit || die "not a git checkout: set DEB_VERSION"
	if d=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
		version=${d#v}
		if [[ $version =~ ^(.*)-([0-9]+)-g([0-9a-f]+)$ ]]; then
			version="${BASH_REMATCH[1]}+git${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
		fi
	else
		base=$(sed -n 's/^const version = "\([^"]*\)"$/\1/p' cmd/pve-image/root.go)
		[[ -n $base ]] || die "no 'const version = \"...\"' in cmd/pve-image/root.go: set DEB_VERSION"
		when=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S)
		version="$base+git$when.$(git rev-parse --short=12 HEAD)"
	fi
	if [[ -n $(git status --porcelain 2>/dev/null) ]]; then
		version+=.dirty
	fi
fi
[[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "DEB_VERSION $version is not a Debian version"

# Time.
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
	$ingit || die "not a git checkout: set SOURCE_DATE_EPOCH"
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
fi
export SOURCE_DATE_EPOCH

# Architecture, in Go's words and Debian's.
goarch=${GOARCH:-$(go env GOARCH)}
goarm=
case $goarch in
amd64 | arm64 | riscv64 | s390x | loong64) arch=$goarch ;;
386) arch=i386 ;;
arm) arch=armhf goarm=7 ;;
ppc64le) arch=ppc64el ;;
*) die "no Debian architecture for GOARCH=$goarch" ;;
esac

maintainer=${DEB_MAINTAINER:-pve-image developers <pve-image@users.noreply.github.com>}

umask 022
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
ctl=$root/DEBIAN
mkdir -p "$ctl" "$root/usr/bin" "$root/usr/lib/pve-image" "$root/lib/systemd/system" \
	"$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
	"$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d" \
	"$root/usr/share/doc/pve-image/examples"

# Binaries: static, no paths of this machine, stamped with the commit (the
# cache keys of pve-image include it, so an upgrade never reuses templates
# an older build made).
build() { # out pkg
	GOOS=linux GOARCH=$goarch GOARM=$goarm CGO_ENABLED=0 \
		go build -trimpath -buildvcs=$ingit -ldflags='-s -w' -o "$1" "$2"
}
echo "deb: building pve-image $version for $arch" >&2
build "$root/usr/bin/pve-image" ./cmd/pve-image
build "$root/usr/lib/pve-image/pve-image-init" ./cmd/pve-image-init

# Man pages and completions, from the command tree itself (the hidden
# `pve-image docs`), run in an empty environment so that nothing of this
# machine's or user's settings shows.
host=$root/usr/bin/pve-image
if [[ $goarch != "$(go env GOHOSTARCH)" ]]; then
	host=$work/pve-image-host
	GOARCH='' GOARM='' CGO_ENABLED=0 go build -trimpath -buildvcs=$ingit -o "$host" ./cmd/pve-image
fi
env -i PATH=/usr/bin:/bin HOME=/nonexistent LC_ALL=C SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" \
	"$host" docs --man "$work/man" --completions "$work/completions" ||
	die "pve-image docs failed (is it registered in cmd/pve-image/root.go?)"
for p in "$work"/man/*.1; do
	gzip -9n <"$p" >"$root/usr/share/man/man1/$(basename "$p").gz"
done
[[ -f $root/usr/share/man/man1/pve-image.1.gz ]] || die "no pve-image.1 written"
cp "$work/completions/pve-image.bash" "$root/usr/share/bash-completion/completions/pve-image"
cp "$work/completions/pve-image.zsh" "$root/usr/share/zsh/vendor-completions/_pve-image"
cp "$work/completions/pve-image.fish" "$root/usr/share/fish/vendor_completions.d/pve-image.fish"

# The systemd unit: scripts/systemd's, with the installed paths, and its
# install instructions replaced by the package's.
unit=$root/lib/systemd/system/pve-image-cri.service
{
	echo "# pve-image's CRI service for kubelet, installed by the pve-image package and"
	echo "# not enabled. Write /etc/pve-image/cri.yaml (from"
	echo "# /usr/share/doc/pve-image/examples/cri.yaml.example, mode 0600), then:"
	echo "#   systemctl enable --now pve-image-cri"
	sed -e '1,/^\[Unit\]/{/^#/d}' \
		-e 's#/usr/local/bin/pve-image-init#/usr/lib/pve-image/pve-image-init#g' \
		-e 's#/usr/local/bin/pve-image#/usr/bin/pve-image#g' \
		scripts/systemd/pve-image-cri.service
} >"$unit"
if ! grep -q '^ExecStart=/usr/bin/pve-image cri ' "$unit" || grep -q /usr/local "$unit"; then
	die "scripts/systemd/pve-image-cri.service no longer has the ExecStart this script rewrites:
$(cat "$unit")"
fi

# Documentation.
doc=$root/usr/share/doc/pve-image
cp scripts/systemd/cri.yaml.example "$doc/examples/cri.yaml.example"
gzip -9n <README.md >"$doc/README.md.gz"
commit=unknown
if $ingit; then
	commit=$(git rev-parse HEAD)
fi
{
	echo "pve-image ($version) unstable; urgency=medium"
	echo
	echo "  * Built from commit $commit of https://github.com/pve-image/pve-image."
	echo
	echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.Debian.gz"
modules=$(go version -m "$root/usr/bin/pve-image" "$root/usr/lib/pve-image/pve-image-init") ||
	die "go version -m: cannot read the binaries' build information"
modules=$(awk '$1 == "dep" || $1 == "=>" { print " " $2 " " $3 }' <<<"$modules" | LC_ALL=C sort -u)
{
	echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
	echo "Upstream-Name: pve-image"
	echo "Source: https://github.com/pve-image/pve-image"
	echo
	echo "Files: *"
	echo "Copyright: the pve-image authors"
	echo "Comment: The binaries are static and include these Go modules, under their"
	echo " own licenses (each module's source carries its license):"
	echo "$modules"
	if [[ -f LICENSE ]]; then
		echo "License: see below"
		sed -e 's/^$/./' -e 's/^/ /' LICENSE
	else
		echo "License: other"
		echo " The source repository carries no license file."
	fi
} >"$doc/copyright"

# Control files.
for s in postinst prerm postrm; do
	install -m 0755 "scripts/deb/$s" "$ctl/$s"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
	xargs -0 md5sum) >"$ctl/md5sums"
# Installed-Size as dpkg-gencontrol counts it: KiB per file rounded up, one
# per directory and symlink.
size=$(cd "$root" && find . -path ./DEBIAN -prune -o \( -type f -printf '%s\n' \) -o -printf '0\n' |
	awk '{ n += ($1 == 0) ? 1 : int(($1 + 1023) / 1024) } END { print n }')
cat >"$ctl/control" <<EOF
Package: pve-image
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: ca-certificates
Recommends: isal, xz-utils
Suggests: lxc-pve | lxc
Section: admin
Priority: optional
Homepage: https://github.com/pve-image/pve-image
Description: OCI and Docker images as Proxmox VE container templates
 pve-image pulls OCI and Docker images (registry authentication, tags or
 digests, multi-platform indexes), flattens their layers exactly as the OCI
 image spec defines and writes Proxmox VE LXC templates that pct create
 accepts, cached by content. Application images get pve-image-init, a small
 static init that runs the image's entrypoint as Docker would.
 .
 It also uploads templates and creates containers through the Proxmox API,
 and serves the Kubernetes CRI (pve-image cri), for which the
 pve-image-cri systemd unit is installed but not enabled.
EOF

# Modes and times are set here, not inherited from the checkout or umask.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -exec chmod 0644 {} +
chmod 0755 "$root/usr/bin/pve-image" "$root/usr/lib/pve-image/pve-image-init" "$ctl"/post* "$ctl"/pre*
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

deb=$out/pve-image_${version}_$arch.deb
threads=()
if grep -q -- --threads-max <<<"$(dpkg-deb --help)"; then
	threads=(--threads-max=1) # dpkg 1.21.9+ would compress on every core
fi
dpkg-deb --root-owner-group -Zxz "${threads[@]}" --build "$root" "$deb.tmp" >/dev/null
mv "$deb.tmp" "$deb"
echo "$deb"
