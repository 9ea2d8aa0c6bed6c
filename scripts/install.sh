#!/bin/bash
# Install a built qemu-system-i386 and the data files it needs under PREFIX:
#   PREFIX/bin/qemu-system-i386
#   PREFIX/share/qemu/keymaps/   (libxl passes -vnc none; QEMU then loads
#                                 a keymap, looked up relative to its binary)
# Point xl's device_model_override at PREFIX/bin/qemu-system-i386.
set -euo pipefail
build=${1:?usage: install.sh BUILD_DIR PREFIX}
prefix=${2:?usage: install.sh BUILD_DIR PREFIX}
src=$(dirname "$build")/qemu-src
install -D -m 755 "$build/qemu-system-i386" "$prefix/bin/qemu-system-i386"
mkdir -p "$prefix/share/qemu/keymaps"
cp "$src"/pc-bios/keymaps/* "$prefix/share/qemu/keymaps/"
rm -f "$prefix/share/qemu/keymaps/meson.build"
echo "installed $prefix/bin/qemu-system-i386"
