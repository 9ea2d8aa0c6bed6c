#!/bin/bash
# Copy the overlay (the project's files, kept at their QEMU paths) over an
# unpacked QEMU tree, then patch the upstream files we share with other
# devices.  Files are copied only when their content changed, so ninja
# rebuilds only what we touched.
set -euo pipefail

src=${1:?usage: apply-overlay.sh QEMU_SRC}
top=$(cd "$(dirname "$0")/.." && pwd)

cd "$top"
for f in $(git ls-files -co --exclude-standard hw include); do
    [ -f "$f" ] || continue
    mkdir -p "$src/$(dirname "$f")"
    cmp -s "$f" "$src/$f" || cp "$f" "$src/$f"
done
"$top/scripts/patch-qemu.sh" "$src"
