#!/bin/bash
# Report gcov coverage of the protocol layer and fail unless every line and
# every branch of it ran: each rejection rule has a `return` of its own, so
# full coverage means every rejection branch was taken.
set -euo pipefail
dir=${1:?usage: check-coverage.sh COVERAGE_DIR}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$dir"
args=(--root "$top" --object-directory "$dir"
      --filter "$top/hw/block/xen_blkif.c" --filter "$top/hw/block/xen_vbd.c"
      --exclude-unreachable-branches --exclude-throw-branches)
gcovr "${args[@]}" --html-details -o "$dir/coverage.html"
gcovr "${args[@]}" -o "$dir/lines.txt"
gcovr "${args[@]}" --branches -o "$dir/branches.txt"
cat "$dir/lines.txt" "$dir/branches.txt" | grep -E '^(File|hw/|TOTAL)'
if gcovr "${args[@]}" --fail-under-line 100 \
        --fail-under-branch "${MIN_BRANCH:-100}" > /dev/null; then
    echo "coverage: protocol layer fully covered (report: $dir/coverage.html)"
else
    echo "coverage: protocol layer not fully covered; missing lines/branches:" >&2
    cat "$dir/lines.txt" "$dir/branches.txt" >&2
    exit 1
fi
