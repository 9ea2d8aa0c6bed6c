#!/bin/bash
# Run one libFuzzer target for a bounded time from its seed corpus.
#   run-fuzzer.sh FUZZER SEED_DIR SECONDS
# New inputs go to a scratch corpus beside the binary (never into the repo);
# a crash leaves its input in build/fuzz/artifacts/ and fails the run.
set -euo pipefail
fuzzer=${1:?}; seeds=${2:?}; seconds=${3:?}
name=$(basename "$fuzzer")
work=$(dirname "$fuzzer")/corpus-$name
artifacts=$(dirname "$fuzzer")/artifacts
mkdir -p "$work" "$artifacts"
log=$(dirname "$fuzzer")/$name.log
if "$fuzzer" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="$artifacts/$name-" -timeout=10 \
        "$work" "$seeds" > "$log" 2>&1; then
    runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
    echo "fuzz: $name: ${runs:-?} runs in ${seconds}s, no crash"
else
    tail -40 "$log"
    echo "fuzz: $name: FAILED (inputs in $artifacts)" >&2
    exit 1
fi
