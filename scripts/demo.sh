#!/bin/bash
# The demo.  At this stage of the project: show that the QEMU we built
# carries our xen-block (its devices and their properties).  A QEMU with
# the Xen accelerator cannot start a guest without Xen or xensim; the
# xensim demo (a simulated guest doing verified I/O) comes with it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
qemu=${XBLK_BUILD:-$top/build}/qemu-release/qemu-system-i386
echo "== $qemu"
"$qemu" --version | head -1
echo
echo "== Xen block devices in this binary"
"$qemu" -device help | grep -E 'xen-(disk|cdrom)'
echo
echo "== xen-disk properties"
"$qemu" -device xen-disk,help
