#!/bin/bash
# The real-Xen bench: one boot of Xen 4.17 nested under qemu-system-x86_64
# (TCG), Debian's kernel as PV dom0, a Linux PV domU whose disks are
# backendtype=qdisk xl disk lines served by the chosen QEMU.
#
#   tests/realxen/run.sh stock|ours
#
#   stock  the reference: Debian's qemu-system-xen 10.0 (libxl's default
#          /usr/libexec/xen-qemu-system-i386)
#   ours   $XBLK_BUILD/qemu-release/qemu-system-i386, named by
#          device_model_override
#
# Prints TAP on stdout ("ok N realxen-<backend>:<check> - detail"), exits
# non-zero if a check failed.  Logs: $XBLK_BUILD/realxen/<backend>/
# (serial.log: everything Xen, dom0 and the domU printed; report.txt).
# XBLK_REALXEN_TIMEOUT (s, default 600) bounds the whole boot.
# XBLK_REALXEN_ONLY=blkfront|front|libvirt boots only that domU (for debugging; the
# other's checks are then reported as not run).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
backend=${1:-}
case $backend in
    stock|ours) ;;
    *) echo "usage: $0 stock|ours" >&2; exit 2 ;;
esac
cache=${XBLK_CACHE:-/var/cache/qemu-xen-block}/realxen
export XBLK_BUILD=${XBLK_BUILD:-$top/build}
out=$XBLK_BUILD/realxen/$backend
log=$out/serial.log
report=$out/report.txt
deadline=${XBLK_REALXEN_TIMEOUT:-600}
prefix=realxen-$backend

# The checks, in report order.  Any not reported by the run is a failure.
checks=(
    boot             # Xen up, dom0 reached its init (run.sh)
    domu-create      # xl create; the expected QEMU serves the disks (dom0)
    control-ramdisk  # verified I/O on a RAM disk in the domU: the bench itself
    xvda-connect     # /dev/xvda appears in the domU
    verify-xvda      # verified O_DIRECT and cached I/O across xvda
    flush            # fsync/BLKFLSBUF; flush requests reach a write-back disk
    discard          # blkdiscard a range, data around it intact
    mkfs-fsck        # mkfs.ext4 + e2fsck -f clean
    readonly-guest   # access=ro xvdc: reads verify, writes refused (domU)
    readonly-image   # ...and its image is unchanged (dom0)
    features         # the negotiated features match what both sides offer
    hotplug-attach   # xl block-attach of a qcow2 xvdb (dom0)
    hotplug-io       # xvdb appears, verified I/O on it (domU)
    hotplug-detach   # xl block-detach, backend node gone (dom0)
    hotplug-vanish   # xvdb disappears in the domU
    hotplug-image    # qcow2 consistent, holds the domU's data (dom0)
    resize-qmp       # QMP block_resize on the device model (dom0)
    resize           # domU sees the new size, I/O across the old end
    qemu-alive       # the device model survived all of it
    domu-exit        # the domU finished and powered off
    # The second domU, xbfront: xenblk-front (tests/xensim) as its frontend,
    # the conformance core and the ring-level hostile cases.
    front-create     # xl create; the expected QEMU serves its disks (dom0)
    front-info       # negotiation: what both sides offer is used
    front-sizes      # verified I/O, 512 B to 1 MiB requests
    front-abi-native front-abi-x86_32 front-abi-x86_64   # the ring ABIs
    front-ring-pages-1 front-ring-pages-2 front-ring-pages-4
    front-ring-pages-8 front-ring-pages-16   # ring sizes (capped by the backend)
    front-flush      # BLKIF_OP_FLUSH_DISKCACHE answered OKAY
    front-discard    # a discarded range, verified data around it
    front-past-end   # I/O past the end of the disk: BLKIF_RSP_ERROR
    front-readonly   # access=ro xvdc: reads served, writes refused
    front-reconnect  # close and reconnect 3 times, verified I/O each time
    front-hostile-battery front-hostile-battery-x86_32   # malformed requests
    front-hostile-bad-indirect   # malformed indirect requests
    front-hostile-evtchn-storm   # notifications on an empty ring
    front-hostile-double-fetch   # fields rewritten while the backend works
    front-hostile-ring-overflow  # req_prod a ring ahead: Closing, nothing served
    front-serves-after-overflow  # ...and it serves a reconnected frontend
    front-hostile-prod-backwards # req_prod moved back: Closing, no spinning
    front-serves-after-prod-backwards  # ...and it serves again
    front-qemu-alive # the device model survived xenblk-front's cases
    front-exit       # the xbfront domU finished and powered off
    no-crash         # no panic/oops/crash of Xen, dom0 or the domU (run.sh)
    complete         # dom0 reached its end within the deadline (run.sh)
)

# The third domU, ours only: libvirt defines and starts it, and libxl runs
# dom0's default device model, which is ours once deployed as that.
[ "$backend" = ours ] && checks+=(
    libvirt-deploy   # ours diverted in as /usr/libexec/xen-qemu-system-i386
    libvirt-start    # libvirtd up; virsh define + start of a PV domain
    libvirt-qemu     # libxl started ours for it
    libvirt-io-xvda  # verified I/O on its raw disk (domU)
    libvirt-io-xvdb  # verified I/O on its qcow2 disk (domU)
    libvirt-flush    # flushes reach the backend (domU)
    libvirt-detach   # virsh detach-disk xvdb --live
    libvirt-exit     # the guest finished and powered off
    libvirt-qcow2    # qemu-img check of the qcow2 after the guest's writes
)

# The outer CPU: a named model with no XSAVE (see boot()) whose features
# libvirt's libxl driver can name (with -cpu max it finds no CPU model for
# the host and its Xen driver does not start).
outer_cpu=${XBLK_REALXEN_CPU:-Nehalem}

qpid=""
t0=$(date +%s.%N)
elapsed() { printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)"; }
note() { echo "# [$(elapsed) s] $*"; }

# The outer QEMU must not outlive us, whatever the exit path.
cleanup() {
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
        kill "$qpid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$qpid" 2>/dev/null || true
    fi
    [ -z "$qpid" ] || wait "$qpid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build() {
    local s=$SECONDS
    mkdir -p "$out"
    if ! "$here/build-artifacts.sh" > "$out/build.log" 2>&1; then
        sed 's/^/# /' "$out/build.log" | tail -20
        echo "Bail out! build-artifacts.sh failed ($out/build.log)"
        exit 1
    fi
    note "artifacts ready ($((SECONDS - s)) s): $(tail -1 "$out/build.log")"
}

# Xen on com1 (serial.log); dom0 on hvc0 via Xen's console, the domU's
# console streamed by dom0.  No XSAVE in the outer CPU (-cpu max would need
# -xsave): with it the nested PV guests' vector registers get corrupted
# (data errors that no backend made).
# smap=0 smep=0: else dom0 dies at once under TCG ("Hardware Dom0 crashed").
# The dom0 disk is snapshot=on: every run starts from the same images.
boot() {
    : > "$log"
    setpriv --pdeathsig SIGKILL -- \
    qemu-system-x86_64 -M pc -accel tcg,thread=multi -cpu "$outer_cpu" \
        -smp 2 -m 3072 -nodefaults -display none -no-reboot -monitor none \
        -serial "file:$log" \
        -kernel "$cache/xen" \
        -append "dom0_mem=1536M,max:1536M dom0_max_vcpus=2 console=com1 com1=115200,8n1 noreboot smap=0 smep=0 loglvl=all guest_loglvl=all" \
        -initrd "$cache/vmlinuz console=hvc0 earlyprintk=xen quiet loglevel=4 xblk.backend=$backend xblk.only=${XBLK_REALXEN_ONLY:-all},$cache/dom0-initrd.cpio.gz" \
        -drive "file=$cache/dom0.img,if=virtio,format=raw,snapshot=on" \
        -device isa-debug-exit,iobase=0xf4,iosize=4 \
        > "$out/qemu.stderr" 2>&1 &
    qpid=$!
    note "outer QEMU pid $qpid ($(qemu-system-x86_64 --version | head -1)); log $log"
}

# Patterns of a dead hypervisor or dom0: no more output will come.
fatal_re='Panic on CPU|Hardware Dom0 crashed|Domain 0 .*crashed|XBLK-FATAL|^(\[[ 0-9.]*\] )?Kernel panic|Attempted to kill init'
# Any crash, the domU's included (its console lines start with "domU| ").
crash_re="$fatal_re|crashed on cpu|Kernel panic|Oops:|BUG: |general protection fault"
# Not crashes, but worth a note: an overloaded host makes nested TCG guests
# report lockups and RCU stalls.
warn_re='WARNING:|soft lockup|rcu.*stall|hung_task|blocked for more than'

crash=""
lines=0
# Read the log's new complete lines; print milestones; note crashes.
# Returns 0 when dom0 said XBLK-DONE.
scan() {
    local total line done=1
    total=$(wc -l < "$log")
    [ "$total" -gt "$lines" ] || return 1
    while IFS= read -r line; do
        line=${line//$'\r'/}
        case $line in
            *"Xen version "*"(XEN)"*|"(XEN) Xen version"*) note "${line#(XEN) }" ;;
            XBLK-STEP*|XBLK-QEMU*|CHECK*|"domU| XBLK-SYNC"*|"domU| XBLK-CHECK"*|"domU| domU:"*|"front| XBLK-SYNC"*|"front| XBLK-CHECK"*|"front| domU:"*|"virt| XBLK-SYNC"*|"virt| XBLK-CHECK"*|"virt| domU:"*)
                note "$line" ;;
            XBLK-DONE*) done=0 ;;
        esac
        if [[ $line =~ $warn_re ]]; then
            note "warning: $line"
        elif [[ $line =~ $crash_re ]]; then
            [ -n "$crash" ] || note "CRASH: $line"
            crash=${crash:-$line}
            if [[ $line =~ $fatal_re ]]; then fatal=$line; fi
        fi
    done < <(sed -n "$((lines + 1)),${total}p" "$log")
    lines=$total
    return $done
}

watch() {
    local end=$(($(date +%s) + deadline)) dead=""
    fatal="" finished=0 timed_out=0
    while :; do
        if scan; then finished=1; break; fi
        if ! kill -0 "$qpid" 2>/dev/null; then dead=1; break; fi
        [ -n "$fatal" ] && break
        if [ "$(date +%s)" -ge $end ]; then timed_out=1; break; fi
        sleep 0.5
    done
    # dom0 leaves through isa-debug-exit; give QEMU a moment to do so
    local i
    for i in $(seq 40); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.25; done
    scan || true
    local st=0
    if kill -0 "$qpid" 2>/dev/null; then cleanup; st=killed; else wait "$qpid" || st=$?; fi
    qpid=""
    note "outer QEMU ended (status $st: 1 = dom0 finished, 3 = dom0 failed early)"
    [ -z "$fatal" ] || note "fatal: $fatal"
    [ $timed_out = 0 ] || note "TIMEOUT after $deadline s"
}

# ---- the report -------------------------------------------------------

declare -A result detail
collect() {
    local line name st rest
    while IFS= read -r line; do
        line=${line//$'\r'/}
        [[ $line =~ ^CHECK\ ([a-z0-9_./-]+)\ (PASS|FAIL|SKIP)\ ?(.*)$ ]] || continue
        name=${BASH_REMATCH[1]} st=${BASH_REMATCH[2]} rest=${BASH_REMATCH[3]}
        # a check reported twice keeps its worst result
        [ "${result[$name]:-}" = FAIL ] && continue
        result[$name]=$st detail[$name]=$rest
        [[ " ${checks[*]} " == *" $name "* ]] || checks+=("$name")
    done < "$log"
    if grep -aq 'XBLK-STEP.*dom0 init' "$log"; then
        result[boot]=PASS detail[boot]="Xen and dom0 up"
    else
        result[boot]=FAIL detail[boot]="dom0 never reached its init"
    fi
    if [ -n "$crash" ]; then
        result[no-crash]=FAIL detail[no-crash]="$crash"
    else
        result[no-crash]=PASS detail[no-crash]="no panic, oops or crash in the log"
    fi
    if [ $finished = 1 ]; then
        result[complete]=PASS detail[complete]="dom0 finished in $(elapsed) s"
    elif [ $timed_out = 1 ]; then
        result[complete]=FAIL detail[complete]="timeout after $deadline s"
    else
        result[complete]=FAIL detail[complete]="ended early: ${fatal:-the outer QEMU exited}"
    fi
}

tap() {
    local n=0 failed=0 name st
    for name in "${checks[@]}"; do
        n=$((n + 1))
        st=${result[$name]:-}
        case $st in
            PASS) echo "ok $n $prefix:$name - ${detail[$name]}" ;;
            SKIP) echo "ok $n $prefix:$name # SKIP ${detail[$name]}" ;;
            FAIL) echo "not ok $n $prefix:$name - ${detail[$name]}"; failed=$((failed + 1)) ;;
            *) echo "not ok $n $prefix:$name - no result (the run ended before this check)"
               failed=$((failed + 1)) ;;
        esac
    done
    echo "1..$n"
    return $((failed > 0))
}

write_report() {
    {
        echo "real-Xen bench, backend '$backend', $(date -u +%FT%TZ), $(elapsed) s"
        echo "outer: $(qemu-system-x86_64 --version | head -1), -cpu $outer_cpu, 2 vCPUs, TCG"
        echo "Xen: $(grep -a -m1 -o 'Xen version [^ ]*' "$log" || echo '?')"
        echo
        echo "== the QEMU that served the disk (dom0's process list)"
        grep -a '^XBLK-QEMU' "$log" | tr -d '\r' | sed 's/^XBLK-QEMU /  /' || echo "  (none found)"
        echo
        echo "== negotiated features (xvda)"
        grep -a '^XBLK-FEATTABLE' "$log" | tr -d '\r' | sed 's/^XBLK-FEATTABLE /  /' || echo "  (none)"
        echo
        echo "== checks"
        local name
        for name in "${checks[@]}"; do
            printf '  %-16s %-4s %s\n' "$name" "${result[$name]:-NONE}" "${detail[$name]:-}"
        done
        echo
        echo "== device model log (tail)"
        grep -a '^XBLK-DMLOG' "$log" | tr -d '\r' | sed 's/^XBLK-DMLOG /  /' || echo "  (none)"
        echo
        echo "== the domU's blkfront messages"
        grep -a '^domU| domU: dmesg:' "$log" | tr -d '\r' | sed 's/^domU| domU: dmesg: /  /' || echo "  (none)"
        echo
        echo "== xenstore while xvda was connected (backend, frontend)"
        grep -a '^XBLK-XS' "$log" | tr -d '\r' | sed 's/^XBLK-XS /  /' || echo "  (none)"
    } > "$report"
}

main() {
    build
    boot
    watch
    collect
    write_report
    sed -n '/^== the QEMU/,/^== checks/p' "$report" | sed '$d' | sed 's/^/# /'
    local rc=0
    tap || rc=1
    if [ $rc != 0 ]; then
        echo "# serial log tail ($log):"
        tail -40 "$log" | tr -d '\r' | sed 's/^/#   /'
    fi
    note "report: $report"
    return $rc
}

main
