#!/bin/bash
# The test suite: every layer, one summary.
#
#   tests/run.sh [LAYER...]      layers: unit coverage fuzz build asan
#                                xensim conformance bench realxen
#                                (default: all of them, in that order)
#
# Each test's output goes to build/test-logs/<test>.log.  Tests listed in
# tests/expected-failures that fail are counted as skipped with their
# reason.  The last line is "N passed, N failed, N skipped".
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export XBLK_BUILD=${XBLK_BUILD:-$top/build}
logs=$XBLK_BUILD/test-logs
mkdir -p "$logs"
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

passed=0 failed=0 skipped=0
failures=()

expected_reason() {
    awk -v id="$1" -F'|' '
        /^[[:space:]]*#/ || NF < 2 { next }
        { key = $1; gsub(/[[:space:]]+/, "", key) }
        key == id { r = $2; gsub(/^[[:space:]]+|[[:space:]]+$/, "", r); print r; exit }
    ' tests/expected-failures
}

# record ID STATUS(pass|fail|skip) [REASON, or for a failure its log]
record() {
    local id=$1 status=$2 reason=${3:-} why
    why=$(expected_reason "$id")
    if [ "$status" = fail ] && [ -n "$why" ]; then
        status=skip reason="expected failure: $why"
    elif [ "$status" = pass ] && [ -n "$why" ]; then
        echo "XPASS $id (listed in tests/expected-failures: remove it)"
    fi
    case $status in
        pass) passed=$((passed + 1)); echo "PASS  $id" ;;
        fail) failed=$((failed + 1)); failures+=("$id")
              echo "FAIL  $id (log: ${reason:-$logs/$id.log})" ;;
        skip) skipped=$((skipped + 1)); echo "SKIP  $id: $reason" ;;
    esac
}

# run_test ID CMD... : one test, pass if CMD exits 0
run_test() {
    local id=$1; shift
    if "$@" > "$logs/$id.log" 2>&1; then
        record "$id" pass
    else
        tail -15 "$logs/$id.log" | sed 's/^/      | /'
        record "$id" fail
    fi
}

# The test id of a TAP line: its description up to any directive, blanks
# folded into dashes, behind PREFIX: (unless it already starts with it).
tap_id() {
    local name
    name=$(echo "$2" | sed -E 's/^(not )?ok [0-9]+ -? *//; s/ +#.*$//;
                               s/ - .*$//; s/: +/:/g; s/ +/-/g')
    case $name in
        "$1":*) echo "$name" ;;
        *) echo "$1:$name" ;;
    esac
}

# run_tap PREFIX CMD... : CMD prints TAP; each "ok"/"not ok" line is a test.
# Test names that already carry a prefix ("conformance-ours:x") keep it.
run_tap() {
    local prefix=$1; shift
    local log=$logs/$prefix.log line id n=0 notok=0 before shown=-1
    local -a pre=()
    "$@" > "$log" 2>&1
    local rc=$?
    while IFS= read -r line; do
        case $line in
            "ok "*"# SKIP"*)
                id=$(tap_id "$prefix" "$line") shown=-1 pre=()
                record "$id" skip "${line##*# SKIP}"; n=$((n + 1)) ;;
            "ok "*)
                shown=-1 pre=()
                record "$(tap_id "$prefix" "$line")" pass; n=$((n + 1)) ;;
            "not ok "*)
                before=$failed shown=-1
                record "$(tap_id "$prefix" "$line")" fail "$log"
                n=$((n + 1)) notok=$((notok + 1))
                # CI keeps only what is printed: a real failure's
                # diagnostics (GLib's come before the line, ours after)
                if [ $failed -ne $before ]; then
                    shown=0
                    [ ${#pre[@]} -eq 0 ] || printf '      | %s\n' "${pre[@]}"
                fi
                pre=() ;;
            "#"*)
                if [ $shown -ge 0 ]; then
                    [ $shown -ge 60 ] || echo "      | $line"
                    shown=$((shown + 1))
                else
                    pre+=("$line")
                    [ ${#pre[@]} -le 20 ] || pre=("${pre[@]:1}")
                fi ;;
        esac
    done < "$log"
    # a crash or abort mid-run is a failure even if every line said ok
    # (a non-zero exit with "not ok" lines is those lines' verdict)
    if { [ $rc -ne 0 ] && [ $notok -eq 0 ]; } || [ $n -eq 0 ]; then
        tail -15 "$log" | sed 's/^/      | /'
        record "$prefix:exit-status" fail "$log"
    fi
}

layer_unit() {
    make -s $(printf "$XBLK_BUILD/unit/%s " test-xen-blkif test-xen-vbd) \
        > "$logs/unit-build.log" 2>&1 || { record unit-build fail; return; }
    run_tap unit-blkif "$XBLK_BUILD/unit/test-xen-blkif" --tap
    run_tap unit-vbd "$XBLK_BUILD/unit/test-xen-vbd" --tap
}

layer_coverage() {
    run_test coverage-protocol-layer make -s coverage
}

layer_fuzz() {
    for f in fuzz-blkif-request fuzz-xenstore-values; do
        run_test "$f" make -s fuzz FUZZERS="$f" FUZZ_SECONDS="$FUZZ_SECONDS"
    done
}

# Our device is in the binary: its help shows what only ours has.
check_device_help() {
    local qemu=$1 out
    out=$("$qemu" -device xen-disk,help) || return 1
    echo "$out"
    grep -q 'qemu-xen-block' <<< "$out" &&
    grep -q '^  vdev=' <<< "$out" && grep -q '^  werror=' <<< "$out" &&
    grep -q '^  max-ring-page-order=' <<< "$out" &&
    "$qemu" -device help | grep -q 'name "xen-cdrom", bus xen-bus, desc "Xen PV CD-ROM (qemu-xen-block)"'
}

# No compiler warning in our files (the QEMU build itself runs without
# -Werror: upstream files are not ours to fix).
no_warnings_in_our_files() {
    ! grep -E -A3 'warning:' "$1" | grep -E 'xen-block|xen_blkif|xen_vbd'
}

layer_build() {
    run_test build-qemu scripts/build-qemu.sh release
    run_test build-no-warnings no_warnings_in_our_files \
        "$XBLK_BUILD/qemu-release/ninja.log"
    run_test device-in-binary check_device_help \
        "$XBLK_BUILD/qemu-release/qemu-system-i386"
    run_test install-tree bash -c "rm -rf '$XBLK_BUILD/install-test' &&
        make -s install PREFIX='$XBLK_BUILD/install-test' &&
        '$XBLK_BUILD/install-test/bin/qemu-system-i386' -device xen-disk,help |
            grep -q qemu-xen-block &&
        test -f '$XBLK_BUILD/install-test/share/qemu/keymaps/en-us'"
}

layer_asan() {
    run_test build-qemu-asan scripts/build-qemu.sh asan
    run_test device-in-asan-binary check_device_help \
        "$XBLK_BUILD/qemu-asan/qemu-system-i386"
}

layer_xensim() {
    # the README's first command on a fresh machine: GLib arrives with deps
    run_test make-before-deps tests/build/make-before-deps.sh
    make -s xensim > "$logs/xensim-build.log" 2>&1 ||
        { tail -20 "$logs/xensim-build.log"; record xensim-build fail; return; }
    record xensim-build pass
    run_tap xenstored "$XBLK_BUILD/xensim/test-xenstored" --tap
    run_tap libxensim "$XBLK_BUILD/xensim/test-libxensim" \
        "$XBLK_BUILD/xensim/xensimd" --tap
    run_test xenblk-front-selftest "$XBLK_BUILD/xensim/xenblk-front" selftest
    run_tap xenblk-front tests/xensim/test-xenblk-front.py
}

layer_conformance() {
    local q
    for q in ${CONFORMANCE_QEMUS:-ours stock ours-asan}; do
        run_tap "conformance-$q" tests/qtest/conformance.py --qemu "$q"
    done
}

# The bench's tools still run (speed is measured on demand, never here):
# one 1 s point per backend with its JSON and report checked, and a
# one-second profile.
layer_bench() {
    run_test bench-setup bench/setup.sh
    run_tap bench-selftest bench/run.py --selftest
    run_test bench-profile-smoke bench/profile.sh 4k-randread-qd1 \
        --seconds 1 --out "$XBLK_BUILD/bench-profile-smoke"
}

# The real-Xen bench: Xen under TCG, xl, a Linux domU's xen-blkfront.
layer_realxen() {
    run_test realxen-artifacts tests/realxen/build-artifacts.sh
    run_tap realxen-stock tests/realxen/run.sh stock
    run_tap realxen-ours tests/realxen/run.sh ours
}

layers=("$@")
[ ${#layers[@]} -gt 0 ] ||
    layers=(unit coverage fuzz build asan xensim conformance bench realxen)
for layer in "${layers[@]}"; do
    echo "== $layer"
    start=$SECONDS
    "layer_$layer"
    echo "   ($layer: $((SECONDS - start)) s)"
done

if [ $failed -gt 0 ]; then
    echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
