#!/bin/bash
# Install what the project needs from Debian's archive. Idempotent; root only.
#
# Adds the apt suites the build needs (bookworm-backports for meson >= 1.5,
# python3-pycotap and the stock qemu-system-xen; deb-src entries for trixie,
# whose source package carries QEMU 10.0.x), then installs build, test and
# fuzzing tools.  Safe to run repeatedly: it does nothing once all is there.
set -euo pipefail

stamp_dir=${XBLK_CACHE:-/var/cache/qemu-xen-block}
mkdir -p "$stamp_dir"

mirror=$(awk '/^URIs:/ && /debian\/?$/ {print $2; exit}' \
         /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

list=/etc/apt/sources.list.d/qemu-xen-block.sources
want=$(cat <<SRC
Types: deb deb-src
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: $mirror
Suites: trixie bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
)

updated=0
if [ ! -f "$list" ] || [ "$(cat "$list")" != "$want" ]; then
    printf '%s\n' "$want" > "$list"
    apt-get update -qq
    updated=1
fi

packages=(
    build-essential ccache git pkg-config ninja-build python3 python3-venv
    libxen-dev libglib2.0-dev libpixman-1-dev libfdt-dev zlib1g-dev
    liburing-dev libaio-dev libcap-ng-dev libattr1-dev libzstd-dev
    libnbd-dev nbdkit libiscsi-dev librbd-dev
    clang llvm libclang-rt-14-dev gcovr lcov bzip2 xz-utils
    dpkg-dev jq socat
)
backports=(meson python3-pycotap qemu-system-xen qemu-utils)

missing=()
for p in "${packages[@]}" "${backports[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
        missing+=("$p")
done
# meson must be >= 1.5 (the bookworm one is 1.0)
if dpkg --compare-versions "$(dpkg-query -W -f='${Version}' meson 2>/dev/null || echo 0)" lt 1.5; then
    missing+=(meson)
fi

if [ ${#missing[@]} -gt 0 ]; then
    [ "$updated" = 1 ] || apt-get update -qq
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    apt-get install -y -qq --no-install-recommends -t bookworm-backports \
        "${backports[@]}" >/dev/null
fi
echo "install-deps: all packages present"
