#!/usr/bin/env bash
# Builds the Debian package of multiwan with dpkg-deb alone (no debhelper,
# no nfpm): lays the files out in a staging tree the way debian/rules
# would, writes DEBIAN/ (control, conffiles, md5sums, maintainer scripts),
# and builds dist/multiwan_VERSION_ARCH.deb.
#
#   scripts/mkdeb.sh BINARY DEBARCH VERSION OUTDIR
#
# BINARY is a static linux binary for DEBARCH (amd64, arm64, armhf);
# VERSION the upstream version (scripts/version.sh), to which the Debian
# revision -1 is added. Reproducible: every timestamp is SOURCE_DATE_EPOCH
# (default: the last commit's time), owners are root, modes explicit.
# Environment: DEB_MAINTAINER (the Maintainer field), SOURCE_DATE_EPOCH.
set -euo pipefail

if [ $# -ne 4 ]; then
  echo "usage: $0 BINARY DEBARCH VERSION OUTDIR" >&2
  exit 2
fi
binary=$1 arch=$2 version=$3 outdir=$4
top=$(cd "$(dirname "$0")/.." && pwd)
pkg=$top/packaging
maintainer=${DEB_MAINTAINER:-multiwan maintainers <maintainers@multiwan.invalid>}
debversion=$version-1

case $arch in
  amd64 | arm64 | armhf) ;;
  *) echo "mkdeb: unsupported architecture $arch (amd64, arm64, armhf)" >&2; exit 2 ;;
esac
[ -x "$binary" ] || { echo "mkdeb: $binary: no such executable (make build-ARCH builds it)" >&2; exit 1; }
# Every timestamp in the package: the last commit's time, or outside git
# the newest of packaging/ (unpacked from one tarball, still reproducible).
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null ||
    find "$pkg" -type f -printf '%T@\n' | sort -n | tail -1 | cut -d. -f1)
fi
export SOURCE_DATE_EPOCH
commit=$(git -C "$top" rev-parse HEAD 2>/dev/null || echo unknown)

umask 022
stage=$(mktemp -d "${TMPDIR:-/tmp}/multiwan-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root"

# inst MODE SOURCE DEST: install one file, its directories 0755.
inst() {
  install -D -m "$1" "$2" "$root/$3"
}
inst 0755 "$binary" usr/sbin/multiwan
inst 0644 "$pkg/multiwan.service" usr/lib/systemd/system/multiwan.service
inst 0644 "$pkg/multiwan.yaml" etc/multiwan/multiwan.yaml
inst 0644 "$pkg/man/multiwan.8" usr/share/man/man8/multiwan.8
inst 0644 "$pkg/man/multiwan.yaml.5" usr/share/man/man5/multiwan.yaml.5
inst 0644 "$pkg/completion/multiwan.bash" usr/share/bash-completion/completions/multiwan
inst 0644 "$pkg/completion/_multiwan" usr/share/zsh/vendor-completions/_multiwan
doc=usr/share/doc/multiwan
inst 0644 "$pkg/debian/copyright" $doc/copyright
inst 0644 "$pkg/debian/lintian-overrides" usr/share/lintian/overrides/multiwan
inst 0755 "$pkg/hooks/notify" $doc/examples/hooks.d/notify
inst 0755 "$pkg/hooks/mwan3-user" $doc/examples/hooks.d/mwan3-user
for f in "$top"/examples/*.yaml; do
  inst 0644 "$f" "$doc/examples/$(basename "$f")"
done

# changelog.Debian: one entry for this build.
date=$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
cat >"$root/$doc/changelog.Debian" <<EOF
multiwan ($debversion) unstable; urgency=medium

  * Built from commit $commit.

 -- $maintainer  $date
EOF

# Manual pages and changelog compressed as Debian wants them: gzip -9n
# (no name, no timestamp: reproducible).
gzip -9n "$root/usr/share/man/man8/multiwan.8" "$root/usr/share/man/man5/multiwan.yaml.5" \
  "$root/$doc/changelog.Debian"

# DEBIAN/
mkdir -p "$root/DEBIAN"
# Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up,
# and 1 per directory or link.
size=$(cd "$root" && find . -path ./DEBIAN -prune -o \( -type f -printf '%s\n' \) -o -printf '1024\n' |
  awk '{ kib += int(($1 + 1023) / 1024) } END { print kib }')
sed -e "s|@VERSION@|$debversion|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
  -e "s|@INSTALLED_SIZE@|$size|" "$pkg/debian/control.in" >"$root/DEBIAN/control"
chmod 0644 "$root/DEBIAN/control"
echo /etc/multiwan/multiwan.yaml >"$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "$pkg/debian/$script" "$root/DEBIAN/$script"
done
# md5sums of everything but DEBIAN/ and the conffiles (dpkg tracks those).
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print |
  sed 's|^\./||' | LC_ALL=C sort | xargs md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$outdir"
deb=$outdir/multiwan_${debversion}_$arch.deb
# xz at dpkg's default level; one thread, since xz's multi-threaded output
# differs from its single-threaded one (dpkg 1.21.9+ has --threads-max).
threads=()
if dpkg-deb --help 2>/dev/null | grep -q -- --threads-max; then
  threads=(--threads-max=1)
fi
dpkg-deb --root-owner-group -Zxz "${threads[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
