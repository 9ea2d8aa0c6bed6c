#!/bin/bash
# Build qemu-system-i386 with our xen-block overlay.
#
#   scripts/build-qemu.sh [release|asan]
#
# 1. fetch and unpack QEMU 10.0.x (scripts/fetch-qemu.sh, cached),
# 2. copy the overlay (our files, at their QEMU paths) over it,
# 3. apply build fixes and registration patches (scripts/patch-qemu.sh),
# 4. configure a minimal i386-softmmu with the Xen accelerator only,
# 5. build with ccache; a second build is incremental.
#
# Output: $XBLK_BUILD/qemu-<flavour>/qemu-system-i386
set -euo pipefail

flavour=${1:-release}
top=$(cd "$(dirname "$0")/.." && pwd)
cache=${XBLK_CACHE:-/var/cache/qemu-xen-block}
build=${XBLK_BUILD:-$top/build}
src=$build/qemu-src
out=$build/qemu-$flavour

export CCACHE_DIR=${CCACHE_DIR:-$cache/ccache}
export CCACHE_BASEDIR=$build
export CCACHE_NOHASHDIR=1
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
mkdir -p "$CCACHE_DIR"

"$top/scripts/fetch-qemu.sh" "$src"
"$top/scripts/apply-overlay.sh" "$src"

configure_args=(
    --python=/usr/bin/python3
    --target-list=i386-softmmu
    --enable-xen --disable-tcg --disable-kvm
    --without-default-devices
    --disable-docs --disable-user --disable-tools --disable-guest-agent
    --disable-install-blobs --disable-werror
    --enable-linux-aio --enable-linux-io-uring
    --enable-rbd --enable-libiscsi
    --enable-trace-backends=log
    --cc="ccache gcc" --cxx="ccache g++"
)
case "$flavour" in
    release) ;;
    asan)
        configure_args+=(--enable-asan --enable-ubsan --enable-debug-info)
        ;;
    *) echo "build-qemu: unknown flavour '$flavour'" >&2; exit 1 ;;
esac
known=("${configure_args[@]}")

stamp=$out/.configure-args
want="$(cat "$src/.qemu-xen-block-source") ${known[*]}"
if [ ! -f "$out/build.ninja" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$out"
    mkdir -p "$out"
    (cd "$out" && "$src/configure" "${known[@]}" > configure.log 2>&1) || {
        tail -40 "$out/configure.log" >&2
        echo "build-qemu: configure failed ($out/configure.log)" >&2
        exit 1
    }
    echo "$want" > "$stamp"
fi

ninja -C "$out" qemu-system-i386 > "$out/ninja.log" 2>&1 || {
    grep -E -A8 'error:|FAILED:' "$out/ninja.log" | grep -v '^ccache ' | head -60 >&2 ||
        tail -40 "$out/ninja.log" >&2
    echo "build-qemu: build failed ($out/ninja.log)" >&2
    exit 1
}
echo "build-qemu: $out/qemu-system-i386 (QEMU $(cat "$src/.qemu-xen-block-source"), $flavour)"
