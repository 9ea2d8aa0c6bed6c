#!/bin/bash
# Fetch QEMU 10.0.x source with apt (which verifies its checksums) and unpack
# it into $1 (a build folder).  The newest 10.0.x that the configured deb-src
# suites carry is used; QEMU_VERSION=10.0.N+ds-R picks one.  The tarball is
# cached in $XBLK_CACHE so a clean clone does not download it again.
set -euo pipefail

dest=${1:?usage: fetch-qemu.sh DEST}
cache=${XBLK_CACHE:-/var/cache/qemu-xen-block}
mkdir -p "$cache/src"

version=${QEMU_VERSION:-$(apt-cache showsrc qemu 2>/dev/null |
    awk '/^Version: /{print $2}' | sed -n 's/^1://p' |
    grep -E '^10\.0\.[0-9]+' | sort -V | tail -1)}
if [ -z "$version" ]; then
    echo "fetch-qemu: no QEMU 10.0.x among apt's source packages;" \
         "run scripts/install-deps.sh first" >&2
    exit 1
fi
upstream=${version%-*}              # 10.0.13+ds
tarball=$cache/src/qemu_${upstream}.orig.tar.xz

if [ ! -f "$tarball" ]; then
    (cd "$cache/src" &&
     apt-get source --download-only -qq "qemu=1:$version" >/dev/null)
fi
[ -f "$tarball" ] || { echo "fetch-qemu: $tarball missing" >&2; exit 1; }

stamp=$dest/.qemu-xen-block-source
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$upstream" ]; then
    echo "fetch-qemu: QEMU $upstream already unpacked in $dest"
    exit 0
fi
rm -rf "$dest"
mkdir -p "$dest"
tar -xJf "$tarball" -C "$dest" --strip-components=1
echo "$upstream" > "$stamp"
echo "fetch-qemu: unpacked QEMU $upstream into $dest"
