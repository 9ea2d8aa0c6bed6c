#!/bin/busybox sh
# PID 1 of the second test domU, "xbfront".  Its kernel has no xen-blkfront:
# the frontend is xenblk-front, the same binary the xensim suites run, here
# on Xen's own /dev/xen/{xenbus,evtchn,gntalloc}.  It runs the conformance
# core (negotiation, verified I/O at every size, the three ABIs, ring sizes,
# flush, discard, read-only, reconnect) and the ring-level hostile cases
# against the disks xl attached (xvda rw, xvdc ro), then powers off.
# Prints on hvc0 (logged by xenconsoled in dom0):
#   XBLK-CHECK front-<name> PASS|FAIL|SKIP <detail>
#   XBLK-HOSTILE <case> <JSON>     (dom0's front-results.py turns these
#                                   into checks, one per wrong answer)
#   XBLK-SYNC front-finished
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
# xenblk-front's protocol events on stderr as they happen (in the log)
export XENBLK_FRONT_TRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

MiB=1048576
DISK=$((64 * MiB))          # /images/front.img, as build-artifacts.sh makes it
# Every awaited state or response: generous, a nested TCG guest is slow.
DEADLINE=30
# Each xenblk-front run as a whole: a hung one must not stall the rest.
RUN_LIMIT=90
# What a Linux frontend in a 2-vCPU guest asks for; each is used only if
# the backend offers it too (the stock QEMU offers none of the three).
FEATURES="--indirect 256 --persistent --queues 2"

check() { echo "XBLK-CHECK front-$1 $2 $3"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# front NAME ARGS...: xenblk-front run ARGS; JSON in /tmp/NAME.json, the
# summary line in /tmp/out.
front() {
    name=$1; shift
    echo "domU: [$(uptime_s) s] $name: xenblk-front run $*"
    limited xenblk-front run --deadline $DEADLINE --json "/tmp/$name.json" "$@"
    r=$?
    sed 's/^/    /' /tmp/out
    # what went wrong, as xenblk-front logged it
    [ $r = 0 ] || echo "    json: $(head -c 3000 "/tmp/$name.json" 2>/dev/null)"
    return $r
}
# limited CMD...: CMD with its output in /tmp/out, killed after RUN_LIMIT s
# (of the clock); a hung one leaves where its threads were in the log.
limited() {
    "$@" > /tmp/out 2>&1 &
    pid=$!
    end=$(($(cut -d. -f1 /proc/uptime) + RUN_LIMIT))
    while [ -d /proc/$pid ] && ! grep -q '^State:.*Z' /proc/$pid/status 2>/dev/null; do
        if [ "$(cut -d. -f1 /proc/uptime)" -ge $end ]; then
            echo "    HUNG after $RUN_LIMIT s; its threads:"
            for t in /proc/$pid/task/*; do
                echo "    $(basename $t): $(cat $t/stat | cut -d' ' -f3) wchan=$(cat $t/wchan) syscall=$(cat $t/syscall)"
            done
            kill -9 $pid
            break
        fi
        sleep 0.2
    done
    wait $pid
}
# the last lines of the output, without the protocol trace
last() { grep -v '^xenblk-front: \[' /tmp/out | tail -2 | tr '\n' ' '; }
# result NAME STATUS [WHAT]: PASS on status 0, else FAIL with the output.
result() {
    if [ "$2" = 0 ]; then check "$1" PASS "${3:-$(last)}"; else check "$1" FAIL "$(last)"; fi
}

echo "domU: up at $(uptime_s) s, $(grep -c ^processor /proc/cpuinfo) vCPUs (xenblk-front)"
module_args() {
    name=$(basename "$1" .ko | tr - _)
    tr ' ' '\n' < /proc/cmdline | sed -n "s/^$name\.//p"
}
for m in $(cat /modlist); do
    insmod "$m" $(module_args "$m") || echo "domU: insmod $m failed"
done
for d in xenbus evtchn gntalloc; do
    [ -e /dev/xen/$d ] || echo "domU: no /dev/xen/$d"
done

# 1. Negotiation: connect with everything asked, say what was agreed.
front info --op info $FEATURES --ring-pages 16
result info $? "$(grep -o '"device": {[^}]*}' /tmp/info.json | head -1)"
cat /tmp/out

# 2. Verified I/O at every size, 512 B to 1 MiB (split by the frontend
#    where the backend takes less per request): write a region, read it
#    back, each block checked for its address and generation.
bad=""
off=$((4 * MiB))
for bs in 512 1024 1536 4096 8192 45056 65536 131072 262144 524288 1048576; do
    size=$((bs * 8))
    if front "w$bs" --rw write --bs $bs --iodepth 8 --size $size \
             --offset $off --map /tmp/sizes.map $FEATURES &&
       front "r$bs" --rw read --bs $bs --iodepth 8 --size $size \
             --offset $off --map /tmp/sizes.map $FEATURES; then
        :
    else
        bad="$bad $bs: $(last)"
    fi
    off=$((off + size))
done
if [ -z "$bad" ]; then
    check sizes PASS "512 B..1 MiB written and read back, 8 requests each"
else
    check sizes FAIL "$bad"
fi

# 3. The three ring ABIs, and ring sizes of 1 to 16 pages (capped by what
#    the backend offers), with random verified I/O.
for abi in native x86_32 x86_64; do
    front "abi-$abi" --abi $abi --rw randrw --bs 4k --iodepth 16 \
        --size $((4 * MiB)) --offset $((24 * MiB)) --runtime 1 \
        --map /tmp/abi.map
    result "abi-$abi" $?
done
for pages in 1 2 4 8 16; do
    front "ring-$pages" --ring-pages $pages --rw randrw --bs 4k \
        --iodepth 64 --size $((4 * MiB)) --offset $((28 * MiB)) --runtime 1 \
        --map /tmp/ring.map
    result "ring-pages-$pages" $?
done

# 4. Flush; discard a range, the data around it intact.
front flush --op flush --expect okay
result flush $?
if front dw --op write-pattern --offset $((40 * MiB)) --length $MiB --bs 64k \
         --map /tmp/discard.map &&
   front discard --op discard --offset $((40 * MiB)) --length $((512 * 1024)) \
         --expect okay --map /tmp/discard.map; then
    front dv --op verify-region --offset $((40 * MiB)) --length $MiB --bs 64k \
        --map /tmp/discard.map
    result discard $?
elif grep -q '"feature_discard": 0' /tmp/discard.json 2>/dev/null; then
    check discard SKIP "the backend offers no discard"
else
    check discard FAIL "$(last)"
fi

# 5. Requests past the end of the disk are refused; the disk serves on.
front past-end --op read --offset $DISK --length 4096 --expect error &&
front straddle --op write --offset $((DISK - 4096)) --length 8192 --expect error
result past-end $?

# 6. The read-only disk: reads are served, writes refused (dom0 checks
#    that ro.img is unchanged).  It holds xbverify's pattern, not
#    xenblk-front's stamps: the read is not verified here.
front ro-read --vdev xvdc --op read --offset 0 --length 65536 --expect okay \
    --verify off &&
front ro-write --vdev xvdc --op write --offset 0 --length 4096 --expect error
result readonly $?

# 7. Close and reconnect three times with verified I/O each time.
front reconnect --reconnect 3 --rw randrw --bs 16k --iodepth 8 \
    --size $MiB --offset $((48 * MiB)) --map /tmp/reconnect.map $FEATURES
result reconnect $?

# 8. Hostile cases on the ring: every answer must be the one the protocol
#    demands, and the backend must keep serving.
hostile() {
    case=$1; shift
    echo "domU: [$(uptime_s) s] hostile $case: $*"
    rm -f /tmp/h.json
    limited xenblk-front run --deadline 10 --json /tmp/h.json --hostile "$@"
    sed 's/^/    /' /tmp/out
    echo "XBLK-HOSTILE $case $(cat /tmp/h.json)"
}
hostile battery battery
hostile battery-x86_32 battery --abi x86_32
hostile bad-indirect bad-indirect --indirect 256
hostile evtchn-storm evtchn-storm --count 10000
hostile double-fetch double-fetch --count 100
hostile ring-overflow ring-overflow
front after-overflow --op info
result serves-after-overflow $?
hostile prod-backwards prod-backwards
front after-prod-backwards --op info
result serves-after-prod-backwards $?

echo "XBLK-SYNC front-finished"
# dom0 looks at the device model while we still run, then says we may go.
xenblk-front xs wait-state xblk 1 60 > /dev/null ||
    echo "domU: no word from dom0 after 60 s"
echo "domU: done at $(uptime_s) s"
poweroff -f
