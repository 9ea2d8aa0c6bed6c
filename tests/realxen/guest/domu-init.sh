#!/bin/busybox sh
# PID 1 of the test domU.  Its xen-blkfront drives the backend under test.
# Prints on hvc0 (logged by xenconsoled in dom0):
#   XBLK-CHECK <name> PASS|FAIL|SKIP <detail>   one per check
#   XBLK-FEAT <name> <value>                    what blkfront negotiated
#   XBLK-SYNC <step> [key=value...]             where dom0 must act
# and waits, with a deadline, for what dom0's actions make visible here.
/bin/busybox --install -s /bin
# Debian's busybox runs its own applet for any name it knows, whatever PATH
# says: the e2fsprogs and util-linux tools are called by their full path.
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

RUN=$(sed -n 's/.*xblk\.run=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
RUN=${RUN:-1}
# xblk.mode=libvirt: the guest libvirt started (run_libvirt_guest below)
MODE=$(sed -n 's/.*xblk\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)
RO_GEN=7 RO_RUN=0ead            # the pattern build-artifacts.sh put on ro.img
DISK_WAIT=45                    # s for xvda to appear (a broken backend: fail fast)
HOTPLUG_WAIT=30                 # s for dom0's attach, detach and resize to show

check() { echo "XBLK-CHECK $1 $2 $3"; }
sync_point() { echo "XBLK-SYNC $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# run CMD...: CMD's output on the console, indented; its status returned
run() { "$@" > /tmp/out 2>&1; r=$?; sed 's/^/    /' /tmp/out; return $r; }
last() { tail -2 /tmp/out | tr '\n' ' '; }

# wait_until SECS CMD...: poll CMD every 0.1 s; false after SECS (of the
# clock: under TCG a loop iteration takes far longer than its sleep).
now_s() { cut -d. -f1 /proc/uptime; }
wait_until() {
    end=$(($(now_s) + $1)); shift
    while ! "$@"; do
        [ "$(now_s)" -ge $end ] && return 1
        sleep 0.1
    done
}
present() { [ -b "/dev/$1" ]; }
absent() { [ ! -e "/dev/$1" ] && [ ! -e "/sys/block/$1" ]; }
size_changed() { [ "$(cat /sys/block/xvda/size)" != "$1" ]; }
stat_field() { awk -v f="$2" '{print $f}' "/sys/block/$1/stat"; }

# blkfront's warnings (a failed flush, a backend error) stay out of the
# console at loglevel 4: show them.
blkfront_dmesg() {
    dmesg | grep -iE 'blkfront|blkif|xvd|vbd|xenbus' | grep -v 'ommand line' |
        tail -20 | sed 's/^/domU: dmesg: /'
}

finish() {
    sync
    blkfront_dmesg
    echo "domU: done at $(uptime_s) s"
    poweroff -f
}

# A broken backend: fail the checks that need the disk, tell dom0, stop.
abort() {
    for c in $*; do check "$c" FAIL "$REASON"; done
    sync_point abort
    finish
}

echo "domU: up at $(uptime_s) s, run $RUN, $(grep -c ^processor /proc/cpuinfo) vCPUs"
# Module options on the kernel command line (xen_blkfront.max_ring_page_order=2
# ...) are modprobe's business, not the kernel's: hand them to insmod.
module_args() {
    name=$(basename "$1" .ko | tr - _)
    tr ' ' '\n' < /proc/cmdline | sed -n "s/^$name\.//p"
    [ "$name" = brd ] && echo rd_nr=1 rd_size=65536 max_part=0
}
# xen-blkfront's module init waits (up to 300 s) until every vbd has
# connected: a backend that never connects must not stall us here, so it
# loads in the background and the disk is awaited below, with a deadline.
for m in $(cat /modlist); do
    case $m in
        */xen-blkfront.ko)
            (insmod "$m" $(module_args "$m") || echo "domU: insmod $m failed") & ;;
        *) insmod "$m" $(module_args "$m") || echo "domU: insmod $m failed" ;;
    esac
done
wait_until 10 test -d /sys/module/xen_blkfront/parameters
echo "domU: blkfront max_ring_page_order=$(cat /sys/module/xen_blkfront/parameters/max_ring_page_order)" \
     "max_indirect_segments=$(cat /sys/module/xen_blkfront/parameters/max_indirect_segments)"

# The domain libvirt defined and started: two file-backed disks handed to
# the qdisk backend (xvda raw, xvdb qcow2).  Verified I/O on both and a
# flush; then dom0 detaches xvdb through libvirt, our cue to power off.
run_libvirt_guest() {
    for d in xvda xvdb; do
        if ! wait_until $DISK_WAIT present $d; then
            check libvirt-io-$d FAIL "no /dev/$d after ${DISK_WAIT} s"
        elif run xbverify suite /dev/$d 0 end 1 -r "$RUN" -j 2 -q 8; then
            check libvirt-io-$d PASS "$(cat /sys/block/$d/size) sectors, $(last)"
        else
            check libvirt-io-$d FAIL "$(last)"
        fi
    done
    if present xvda && run xbverify flush /dev/xvda; then
        check libvirt-flush PASS "$(last)"
    else
        check libvirt-flush FAIL "$(last)"
    fi
    sync_point libvirt-finished
    wait_until $HOTPLUG_WAIT absent xvdb || echo "domU: xvdb still there"
    finish
}
[ "$MODE" = libvirt ] && run_libvirt_guest

# 0. Control: the same verified I/O on a RAM disk.  A failure here is the
#    bench's (the nested CPU emulation, the XSAVE trap), not the backend's.
if run xbverify suite /dev/ram0 0 end 1 -r "$RUN" -j 2; then
    check control-ramdisk PASS "$(last)"
else
    check control-ramdisk FAIL "$(last)"
fi
rmmod brd 2>/dev/null

# 1. The disk appears.
if wait_until $DISK_WAIT present xvda; then
    check xvda-connect PASS "/dev/xvda at $(uptime_s) s, $(cat /sys/block/xvda/size) sectors"
else
    check xvda-connect FAIL "no /dev/xvda after ${DISK_WAIT} s"
    REASON="no /dev/xvda"
    abort verify-xvda flush discard mkfs-fsck readonly-guest hotplug-io hotplug-vanish resize
fi

# 2. What blkfront negotiated, as the domU sees it.
q=/sys/block/xvda/queue
for f in logical_block_size physical_block_size max_segments max_hw_sectors_kb \
         discard_max_bytes discard_granularity write_cache; do
    echo "XBLK-FEAT $f $(cat $q/$f 2>/dev/null)"
done
wc0=$(cat $q/write_cache)
echo "XBLK-FEAT size $(cat /sys/block/xvda/size)"
echo "XBLK-FEAT nr_hw_queues $(ls /sys/block/xvda/mq 2>/dev/null | wc -l)"
echo "XBLK-FEAT dmesg $(dmesg | grep 'blkfront: xvda:' | tail -1 | sed 's/^\[[^]]*\] *//')"

# 3. Verified I/O across the whole disk: sizes 4 KiB..1 MiB, two jobs (one
#    per vCPU, so each hardware queue gets work), 8 requests in flight each.
if run xbverify suite /dev/xvda 0 end 1 -r "$RUN" -j 2 -q 8; then
    check verify-xvda PASS "$(last)"
else
    check verify-xvda FAIL "$(last)"
fi

# 4. Flush: fsync and BLKFLSBUF succeed; with a write-back cache they reach
#    the device as flush requests (field 16 of the stat file).  blkfront
#    hides a flush the backend failed (fsync still returns 0) but then
#    turns the cache to write through: so the cache mode must not change.
f0=$(stat_field xvda 16)
if run xbverify flush /dev/xvda && sync && blockdev --flushbufs /dev/xvda; then
    f1=$(stat_field xvda 16)
    wc=$(cat $q/write_cache)
    if [ "$wc" != "$wc0" ]; then
        check flush FAIL "the cache went from '$wc0' to '$wc': blkfront saw a flush fail ($(dmesg | grep -E 'op failed' | tail -1 | sed 's/^\[[^]]*\] *//'))"
    elif [ "$wc" = "write back" ] && [ "${f1:-0}" -le "${f0:-0}" ]; then
        check flush FAIL "write back cache but no flush request reached the device ($f0 -> $f1)"
    else
        check flush PASS "fsync, BLKFLSBUF ok; cache '$wc'; flush requests $f0 -> $f1"
    fi
else
    check flush FAIL "$(last)"
fi

# 5. Discard a range; what is around it must be intact.
if [ "$(cat $q/discard_max_bytes)" = 0 ]; then
    check discard SKIP "the backend offers no discard"
else
    d0=$(stat_field xvda 12)
    if run xbverify write /dev/xvda 16M 8M 3 -r "$RUN" &&
       run /sbin/blkdiscard -o $((18 << 20)) -l $((4 << 20)) /dev/xvda &&
       run xbverify verify /dev/xvda 16M 2M 3 -r "$RUN" &&
       run xbverify verify /dev/xvda 22M 2M 3 -r "$RUN"; then
        d1=$(stat_field xvda 12)
        zero=$(xbverify zero /dev/xvda 18M 4M >/dev/null 2>&1 && echo "reads zeros" ||
               echo "does not read zeros")
        check discard PASS "4 MiB discarded ($d0 -> $d1 discard requests), range $zero, data around it intact"
    else
        check discard FAIL "$(last)"
    fi
fi

# 6. A file system: mkfs.ext4 over the whole disk, then a forced fsck.
if run /sbin/mke2fs -t ext4 -F -q /dev/xvda && run /sbin/e2fsck -f -n /dev/xvda; then
    check mkfs-fsck PASS "$(last)"
else
    check mkfs-fsck FAIL "$(last)"
fi

# 7. The read-only disk: reads verify, writes are refused.
if ! present xvdc; then
    check readonly-guest FAIL "no /dev/xvdc"
elif [ "$(cat /sys/block/xvdc/ro)" != 1 ]; then
    check readonly-guest FAIL "/dev/xvdc is not read-only (ro=$(cat /sys/block/xvdc/ro))"
elif ! run xbverify verify /dev/xvdc 0 end $RO_GEN -r $RO_RUN; then
    check readonly-guest FAIL "reading it: $(last)"
elif ! run xbverify rofail /dev/xvdc; then
    check readonly-guest FAIL "$(last)"
else
    check readonly-guest PASS "ro=1, content verified, $(last)"
fi

# 8. Hot-plug: dom0 attaches xvdb (qcow2); verified I/O on it; dom0
#    detaches it and it must vanish.  dom0 checks the data in the image.
sync_point hotplug-ready
gen=""
if wait_until $HOTPLUG_WAIT present xvdb; then
    if run xbverify write /dev/xvdb 0 end 11 -r "$RUN" -j 2 &&
       run xbverify verify /dev/xvdb 0 end 11 -r "$RUN" -j 2; then
        check hotplug-io PASS "xvdb appeared, $(cat /sys/block/xvdb/size) sectors, $(last)"
        gen=11
    else
        check hotplug-io FAIL "$(last)"
    fi
else
    check hotplug-io FAIL "no /dev/xvdb ${HOTPLUG_WAIT} s after hotplug-ready"
fi
sync_point detach-ready gen=$gen
if wait_until $HOTPLUG_WAIT absent xvdb; then
    check hotplug-vanish PASS "xvdb gone"
else
    check hotplug-vanish FAIL "xvdb still there ${HOTPLUG_WAIT} s after detach-ready"
fi

# 9. Resize: dom0 grows the image by 32 MiB through QMP block_resize; the
#    new size shows here and I/O across the old end works.
old=$(cat /sys/block/xvda/size)
sync_point resize-ready sectors=$old
if ! wait_until $HOTPLUG_WAIT size_changed "$old"; then
    check resize FAIL "size still $old sectors ${HOTPLUG_WAIT} s after resize-ready"
else
    new=$(cat /sys/block/xvda/size)
    if [ "$new" != $((old + 65536)) ]; then
        check resize FAIL "size $old -> $new sectors, expected $((old + 65536))"
    elif run xbverify write /dev/xvda $(((old - 2048) * 512)) end 13 -r "$RUN" &&
         run xbverify verify /dev/xvda $(((old - 2048) * 512)) end 13 -r "$RUN"; then
        check resize PASS "size $old -> $new sectors, I/O across the old end verified"
    else
        check resize FAIL "size $old -> $new; $(last)"
    fi
fi

# 10. Tell dom0; power off once it has taken xvda away (its sign that it
#     has looked at the device model while the domain still runs).
sync_point finished
wait_until 30 absent xvda || echo "domU: xvda still there after 30 s"
finish
