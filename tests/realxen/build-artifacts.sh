#!/bin/bash
# Build what the real-Xen bench boots, from Debian's archive only.
#
#   tests/realxen/build-artifacts.sh
#
# Output, cached outside the clone in $XBLK_CACHE/realxen (default
# /var/cache/qemu-xen-block/realxen):
#   xen                   Xen 4.17 hypervisor, uncompressed (QEMU's -kernel
#                         takes a multiboot ELF, not the .gz Debian ships)
#   vmlinuz               Debian's kernel, dom0 and domU alike
#   dom0-initrd.cpio.gz   dom0's initramfs: modules, then switch_root
#   dom0.img              dom0's root (ext4): toolstack, the stock QEMU, our
#                         QEMU in /opt/qemu-xen-block, the domU's kernel and
#                         initramfs, the disk images, the test scripts
#
# Idempotent and quick when cached: each stage keeps a stamp of its inputs
# and is redone only when they change.  A new build of our QEMU only
# re-installs it into the dom0 root and repacks dom0.img (mkfs.ext4 -d).
# XBLK_REALXEN_REFRESH=1 re-resolves the Debian package versions.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cache=${XBLK_CACHE:-/var/cache/qemu-xen-block}/realxen
build=${XBLK_BUILD:-$top/build}
ourqemu=$build/qemu-release/qemu-system-i386
stamps=$cache/stamps
rootfs=$cache/rootfs
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

# The dom0 root.  xen-utils must match the hypervisor's version exactly;
# the stock reference QEMU (qemu-system-xen 10.0, which provides
# /usr/libexec/xen-qemu-system-i386) comes from bookworm-backports.
dom0_packages=(xen-utils-4.17 xenstore-utils kmod busybox socat
               python3-minimal e2fsprogs util-linux procps
               libvirt-daemon libvirt-daemon-driver-xen libvirt-clients)
dom0_backports=(qemu-system-xen qemu-utils)
# Modules the dom0 kernel needs, loaded by its initramfs (the Debian kernel
# has them as modules); dom0's own root then needs no /lib/modules.
dom0_modules=(virtio_pci virtio_blk ext4 xenfs xen-evtchn xen-gntdev
              xen-gntalloc xen-privcmd)
domu_modules=(xen-blkfront brd)
# The second domU runs xenblk-front in user space on Xen's device files
# (/dev/xen/xenbus is built in): no xen-blkfront.
front_modules=(xen-evtchn xen-gntalloc)
front=$build/xensim/xenblk-front
# Tools the domU's busybox lacks, copied with their libraries.
domu_tools=(/sbin/mke2fs /sbin/e2fsck /sbin/blkdiscard)
# The read-only disk holds an xbverify pattern of this generation and run
# id, so the domU can verify what it reads from it.
ro_gen=7 ro_run=0ead

log() { echo "build-artifacts: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# stage_current NAME KEY: true if stage NAME was last done with KEY.
stage_current() { [ "$(cat "$stamps/$1" 2>/dev/null)" = "$2" ]; }
stage_done() { mkdir -p "$stamps"; printf '%s' "$2" > "$stamps/$1"; }

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

mirror() {
    local m
    m=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    echo "${m:-http://deb.debian.org/debian}"
}

apt_updated=0
apt_update_once() {
    [ $apt_updated = 1 ] && return
    apt-get update -qq
    apt_updated=1
}

# bookworm-backports must be an apt suite on the host (outer QEMU 10.0).
ensure_backports_source() {
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list \
         /etc/apt/sources.list.d/; then
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$(mirror)" > /etc/apt/sources.list.d/qemu-xen-block-realxen.sources
        apt_updated=0
    fi
}

# ---- 1. host tools --------------------------------------------------------

host_tools() {
    local need=() p outer=0
    for p in busybox-static debootstrap cpio e2fsprogs kmod gcc libc6-dev \
             gzip util-linux bc; do
        installed "$p" || need+=("$p")
    done
    # the outer emulator: QEMU 10.0 from bookworm-backports (bookworm: 7.2)
    if ! installed qemu-system-x86 ||
       dpkg --compare-versions "$(dpkg-query -W -f='${Version}' qemu-system-x86)" lt 1:10.0; then
        outer=1
    fi
    [ ${#need[@]} = 0 ] && [ $outer = 0 ] && return
    log "installing host packages: ${need[*]} $([ $outer = 1 ] && echo qemu-system-x86)"
    ensure_backports_source
    apt_update_once
    if [ ${#need[@]} -gt 0 ]; then
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    if [ $outer = 1 ]; then
        apt-get install -y -qq --no-install-recommends -t bookworm-backports \
            qemu-system-x86 >/dev/null
    fi
}

# ---- 2. Xen hypervisor and Debian kernel ----------------------------------

kernel_and_xen() {
    local kpkg xver key
    if [ -z "${XBLK_REALXEN_REFRESH:-}" ] && [ -f "$stamps/kernel-xen" ] &&
       [ -f "$cache/xen" ] && [ -f "$cache/vmlinuz" ] &&
       [ -d "$cache/kx/lib/modules" ]; then
        return
    fi
    apt_update_once
    # the kernel linux-image-amd64 stands for (bookworm's, with its
    # security updates; backports has a low priority and is not chosen)
    kpkg=$(apt-cache depends linux-image-amd64 |
           awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    xver=$(apt-cache policy xen-hypervisor-4.17-amd64 | awk '/Candidate:/{print $2}')
    [ -n "$kpkg" ] && [ -n "$xver" ] && [ "$xver" != "(none)" ] ||
        die "cannot resolve the kernel or Xen package (apt-get update?)"
    key="$kpkg=$(apt-cache policy "$kpkg" | awk '/Candidate:/{print $2}') xen=$xver"
    if stage_current kernel-xen "$key" && [ -f "$cache/xen" ] &&
       [ -d "$cache/kx/lib/modules" ]; then
        return
    fi
    log "fetching $key"
    rm -rf "$cache/debs" "$cache/kx"
    mkdir -p "$cache/debs" "$cache/kx"
    chown _apt "$cache/debs" 2>/dev/null || true   # apt downloads as _apt
    (cd "$cache/debs" &&
     apt-get download -qq "$kpkg" "xen-hypervisor-4.17-amd64=$xver" >/dev/null)
    local d
    for d in "$cache"/debs/*.deb; do dpkg-deb -x "$d" "$cache/kx"; done
    local kver=${kpkg#linux-image-}
    gunzip -c "$cache"/kx/boot/xen-4.17-amd64.gz > "$cache/xen.new"
    mv "$cache/xen.new" "$cache/xen"
    cp "$cache/kx/boot/vmlinuz-$kver" "$cache/vmlinuz"
    /usr/sbin/depmod -b "$cache/kx" "$kver"
    echo "$kver" > "$cache/kernel-version"
    echo "$xver" > "$cache/xen-version"
    stage_done kernel-xen "$key"
}

# ---- 3. dom0 root: debootstrap + toolstack + stock QEMU -------------------

in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

dom0_root() {
    local xver key
    xver=$(cat "$cache/xen-version")
    key="bookworm minbase ${dom0_packages[*]} xen-utils=$xver bpo:${dom0_backports[*]}"
    if stage_current rootfs "$key" && [ -x "$rootfs/usr/bin/python3" ]; then
        return
    fi
    log "debootstrap dom0 root (a minute or two)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$(mirror)" \
        > "$cache/debootstrap.log" 2>&1 ||
        { tail -20 "$cache/debootstrap.log" >&2; die "debootstrap failed"; }
    # The host's suites (bookworm, -updates, -security: xen-utils must match
    # the hypervisor's version) plus bookworm-backports for QEMU 10.0.
    rm -f "$rootfs/etc/apt/sources.list"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: %s-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$(mirror)" "$(mirror)" > "$rootfs/etc/apt/sources.list.d/debian.sources"
    # no service may start inside the chroot
    printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    mount -t proc proc "$rootfs/proc"
    trap 'umount "$rootfs/proc" 2>/dev/null || true' EXIT
    {
        in_root apt-get update -qq &&
        in_root apt-get install -y -qq --no-install-recommends \
            "${dom0_packages[@]/xen-utils-4.17/xen-utils-4.17=$xver}" &&
        in_root apt-get install -y -qq --no-install-recommends \
            -t bookworm-backports "${dom0_backports[@]}"
    } > "$cache/rootfs-apt.log" 2>&1 ||
        { tail -30 "$cache/rootfs-apt.log" >&2; die "dom0 root: apt failed"; }
    umount "$rootfs/proc"
    trap - EXIT
    # keep the image small: no package caches, no docs
    rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
           "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
           "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    local v
    v=$(in_root dpkg-query -W -f='${Version}' xen-utils-4.17)
    [ "$v" = "$xver" ] || die "dom0 xen-utils $v != hypervisor $xver"
    v=$(in_root dpkg-query -W -f='${Version}' qemu-system-xen)
    case $v in 1:10.0*) ;; *) die "dom0 qemu-system-xen is $v, not 10.0" ;; esac
    [ -x "$rootfs/usr/libexec/xen-qemu-system-i386" ] ||
        die "no /usr/libexec/xen-qemu-system-i386 in the dom0 root"
    stage_done rootfs "$key"
}

# ---- 4. our QEMU ------------------------------------------------------------

our_qemu() {
    if [ ! -x "$ourqemu" ]; then
        log "no $ourqemu: building it (make qemu, ~5 min cold)"
        make -C "$top" qemu BUILD="$build" >&2
    fi
}

# Install our QEMU under /opt/qemu-xen-block in the dom0 root, with the
# host libraries it links that the root lacks (in a directory of their own,
# so nothing of the root's is replaced).
install_our_qemu() {
    local prefix=$rootfs/opt/qemu-xen-block libdir=/usr/local/lib/qemu-xen-block
    rm -rf "$prefix" "$rootfs$libdir"
    "$top/scripts/install.sh" "$build/qemu-release" "$prefix" >/dev/null
    mkdir -p "$rootfs$libdir"
    echo "$libdir" > "$rootfs/etc/ld.so.conf.d/qemu-xen-block.conf"
    local round missing lib path
    for round in 1 2 3 4 5 6; do
        in_root ldconfig
        missing=$(in_root ldd /opt/qemu-xen-block/bin/qemu-system-i386 |
                  awk '/not found/{print $1}')
        [ -z "$missing" ] && return
        for lib in $missing; do
            path=$(ldd "$ourqemu" | awk -v l="$lib" '$1 == l {print $3}')
            [ -f "$path" ] || die "our QEMU needs $lib, not found on the host"
            cp -L "$path" "$rootfs$libdir/"
        done
    done
    die "our QEMU still misses libraries in the dom0 root: $missing"
}

# ---- 5. initramfs images ---------------------------------------------------

# modules_into DIR MODULE...: copy the modules and their dependencies into
# DIR/mods and list them, in load order, in DIR/modlist.
modules_into() {
    local dir=$1 kver m f b
    shift
    kver=$(cat "$cache/kernel-version")
    mkdir -p "$dir/mods"
    : > "$dir/modlist"
    for m in "$@"; do
        for f in $(/usr/sbin/modprobe -d "$cache/kx" -S "$kver" --show-depends "$m" |
                   awk '$1 == "insmod" {print $2}'); do
            b=$(basename "$f")
            [ -e "$dir/mods/$b" ] && continue
            cp "$f" "$dir/mods/$b"
            echo "/mods/$b" >> "$dir/modlist"
        done
    done
    [ -s "$dir/modlist" ] || die "no modules found for $*"
}

# A busybox initramfs skeleton in DIR with INIT as /init.
initramfs_skeleton() {
    local dir=$1 init=$2
    mkdir -p "$dir"/{bin,sbin,etc,proc,sys,dev,tmp,mnt,newroot,lib,lib64}
    cp /bin/busybox "$dir/bin/busybox"
    install -m 755 "$init" "$dir/init"
}

pack_cpio() { (cd "$1" && find . | cpio -o -H newc --quiet | gzip -1) > "$2"; }

dom0_initrd() {
    local d
    d=$(mktemp -d)
    initramfs_skeleton "$d" "$here/guest/dom0-initrd-init.sh"
    modules_into "$d" "${dom0_modules[@]}"
    pack_cpio "$d" "$cache/dom0-initrd.cpio.gz"
    rm -rf "$d"
}

# The domU's initramfs: busybox, xen-blkfront and brd, xbverify, and the
# e2fsprogs/util-linux tools with their libraries, taken from the dom0 root
# (the same bookworm userland) via ldd inside the chroot.
domu_initrd() {
    local d t lib
    d=$(mktemp -d)
    initramfs_skeleton "$d" "$here/guest/domu-init.sh"
    modules_into "$d" "${domu_modules[@]}"
    install -m 755 "$cache/xbverify" "$d/bin/xbverify"
    for t in "${domu_tools[@]}"; do
        install -D -m 755 "$rootfs$t" "$d$t"
        for lib in $(in_root ldd "$t" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
            [ -e "$d$lib" ] || install -D -m 755 "$rootfs$lib" "$d$lib"
        done
    done
    cp "$rootfs/etc/mke2fs.conf" "$d/etc/"
    pack_cpio "$d" "$rootfs/realxen/domu-initrd.cpio.gz"
    rm -rf "$d"
}

# The xbfront domU's initramfs: busybox, the event channel and grant
# sharing drivers, xenblk-front and its libraries (the host's: the same
# bookworm userland as the dom0 root).
domu_front_initrd() {
    local d lib
    d=$(mktemp -d)
    initramfs_skeleton "$d" "$here/guest/domu-front-init.sh"
    modules_into "$d" "${front_modules[@]}"
    install -m 755 "$front" "$d/bin/xenblk-front"
    for lib in $(ldd "$front" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        [ -e "$d$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$d$lib"
    done
    # glibc loads libgcc_s at run time for pthread_cancel's unwinding
    lib=$(gcc -print-file-name=libgcc_s.so.1)
    install -D -m 755 "$(readlink -f "$lib")" "$d/lib/x86_64-linux-gnu/libgcc_s.so.1"
    pack_cpio "$d" "$rootfs/realxen/domu-front-initrd.cpio.gz"
    rm -rf "$d"
}

xenblk_front_bin() {
    make -s -C "$top" "$front" BUILD="$build" >&2 ||
        die "cannot build xenblk-front (make xensim)"
}

# ---- 6. the bench's files in the dom0 root, and the disk images ------------

xbverify_bin() {
    local key
    key=$(sha256sum "$here/xbverify.c" | cut -c1-64)
    if stage_current xbverify "$key" && [ -x "$cache/xbverify" ]; then return; fi
    gcc -static -O2 -Wall -Wextra -Werror -o "$cache/xbverify" "$here/xbverify.c"
    stage_done xbverify "$key"
}

bench_files() {
    # libvirtd stops when a driver fails to start: its QEMU driver (pulled
    # in by libvirt-daemon) wants the libvirt-qemu user that only
    # libvirt-daemon-system creates.  dom0 runs the Xen driver alone.
    rm -f "$rootfs"/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so
    rm -rf "$rootfs/realxen" "$rootfs/images"
    mkdir -p "$rootfs/realxen" "$rootfs/images"
    install -m 755 "$here/guest/dom0-init.sh" "$here/guest/qmp.py" \
        "$here/guest/features.py" "$here/guest/front-results.py" \
        "$cache/xbverify" "$rootfs/realxen/"
    cp "$cache/vmlinuz" "$rootfs/realxen/vmlinuz"
    domu_initrd
    domu_front_initrd
    # xvda: 64 MiB raw (grown by the resize check); xvdb: 32 MiB qcow2,
    # hot-plugged; xvdc: 16 MiB raw, read-only, holding a known pattern.
    truncate -s 64M "$rootfs/images/disk.img"
    # front.img: the xbfront domU's xvda (its size is in domu-front-init.sh)
    truncate -s 64M "$rootfs/images/front.img"
    # the libvirt guest's disks: raw and qcow2
    truncate -s 32M "$rootfs/images/virt.img"
    in_root qemu-img create -q -f qcow2 /images/virt.qcow2 32M
    in_root qemu-img create -q -f qcow2 /images/hot.qcow2 32M
    truncate -s 16M "$rootfs/images/ro.img"
    "$cache/xbverify" write "$rootfs/images/ro.img" 0 end "$ro_gen" \
        -r "$ro_run" -b >/dev/null
}

# ---- 7. dom0.img --------------------------------------------------------

pack_dom0() {
    local mb
    mb=$(du -sm "$rootfs" | cut -f1)
    # headroom for the resize (+32 MiB), logs and the qcow2's growth
    rm -f "$cache/dom0.img.new"
    truncate -s $((mb + 384))M "$cache/dom0.img.new"
    mkfs.ext4 -q -F -L dom0root -d "$rootfs" "$cache/dom0.img.new"
    mv "$cache/dom0.img.new" "$cache/dom0.img"
}

# The key of everything dom0.img is made of, past the base root.
pack_key() {
    {
        cat "$stamps/kernel-xen" "$stamps/rootfs"
        echo "${dom0_modules[*]} / ${domu_modules[*]} / ${domu_tools[*]} / ${front_modules[*]}"
        sha256sum "$ourqemu" "$front" "$top/scripts/install.sh" "$here/build-artifacts.sh" \
            "$here/xbverify.c" "$here"/guest/*
    } | sha256sum | cut -c1-64
}

main() {
    local t0=$SECONDS key
    [ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot, apt)"
    mkdir -p "$cache" "$stamps"
    # one build at a time (two runs may start together)
    exec 9> "$cache/.lock"
    flock 9
    host_tools
    kernel_and_xen
    dom0_root
    our_qemu
    xenblk_front_bin
    key=$(pack_key)
    if stage_current pack "$key" && [ -f "$cache/dom0.img" ] &&
       [ -f "$cache/dom0-initrd.cpio.gz" ]; then
        log "cached, nothing to do ($cache)"
        return
    fi
    xbverify_bin
    install_our_qemu
    bench_files
    dom0_initrd
    pack_dom0
    stage_done pack "$key"
    log "done in $((SECONDS - t0)) s: $cache"
}

main "$@"
