#!/bin/bash
# PID 1 of dom0 (after the initramfs): start the toolstack, create the test
# domU, drive the steps only dom0 can do (hot-plug, resize), check what dom0
# can see, print one "CHECK <name> PASS|FAIL|SKIP <detail>" line per check,
# then end the outer QEMU through isa-debug-exit.
#
# The backend comes from the kernel command line: xblk.backend=stock|ours.
# Sync with the domU: the domU prints "XBLK-SYNC <step>" lines on its
# console (hvc0), which xenconsoled logs here; dom0 waits for them with a
# deadline.  The domU waits for what it can see (a new /dev/xvdb, a size
# change), also with deadlines.  Every step has one; nothing sleeps a fixed
# time to synchronise.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
XEN=/usr/lib/xen-4.17/bin
DOMU=xbtest
CONSOLE_LOG=/var/log/xen/console/guest-$DOMU.log
# The second domU: xenblk-front instead of the kernel's blkfront.
FRONT=xbfront
FRONT_LOG=/var/log/xen/console/guest-$FRONT.log
# The third, ours only: a Linux guest that libvirt defines and starts.
VIRT=xbvirt
VIRT_LOG=/var/log/xen/console/guest-$VIRT.log
OURS=/opt/qemu-xen-block/bin/qemu-system-i386
STOCK=/usr/libexec/xen-qemu-system-i386
RESIZE_GROW=$((32 << 20))
T0=$(date +%s)

step() { echo "XBLK-STEP [$(($(date +%s) - T0)) s] $*"; }
declare -A reported
check() { reported[$1]=1; echo "CHECK $1 $2 ${*:3}"; }

# Leave the outer QEMU: isa-debug-exit turns value v into exit status 2v+1.
leave() {
    sync
    printf "\\x$1" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    # not reached unless /dev/port failed
    echo "XBLK-FATAL isa-debug-exit did not end QEMU"
    poweroff -f
}

# wait_for SECS CMD...: run CMD until it succeeds; false after SECS.
wait_for() {
    local end=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -ge $end ] && return 1
        sleep 0.2
    done
}

# The domain and console log wait_sync looks at: the first domU, then the
# second (set_guest).
GUEST=$DOMU GUEST_LOG=$CONSOLE_LOG
set_guest() { GUEST=$1 GUEST_LOG=$2; }
domu_alive() { "$XEN/xl" domid "$GUEST" >/dev/null 2>&1; }
# The console log has CRLF line ends: drop the CRs before matching.
console_has() { tr -d '\r' < "$GUEST_LOG" 2>/dev/null | grep -aqE "$1"; }

# wait_sync STEP SECS: wait for the guest's "XBLK-SYNC STEP" (or its
# "XBLK-SYNC abort", or its death).  Prints what happened: STEP, abort,
# dead or timeout.
wait_sync() {
    local end=$(($(date +%s) + $2)) n=0
    while :; do
        if console_has "^XBLK-SYNC $1( |\$)"; then echo "$1"; return; fi
        if console_has '^XBLK-SYNC abort'; then echo abort; return; fi
        # the domain list costs more than a grep: every ~2 s
        if [ $((n++ % 10)) = 9 ] && ! domu_alive; then echo dead; return; fi
        [ "$(date +%s)" -ge $end ] && { echo timeout; return; }
        sleep 0.2
    done
}

# The value a domU sync line carries: sync_value STEP KEY
sync_value() {
    grep -a "^XBLK-SYNC $1 " "$CONSOLE_LOG" | tail -1 | tr -d '\r' |
        sed -n "s/.* $2=\([^ ]*\).*/\1/p"
}

setup() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mkdir -p /dev/pts /dev/shm
    mount -t devpts devpts /dev/pts
    mount -t tmpfs tmpfs /run
    mount -t tmpfs tmpfs /tmp
    mkdir -p /run/lock /run/xen /run/xenstored /var/log/xen/console \
             /var/lib/xen /var/lib/xenstored
    rm -f /var/log/xen/console/* /var/log/xen/*.log
    mount -t xenfs xenfs /proc/xen || { step "no xenfs"; return 1; }
    grep -q control_d /proc/xen/capabilities || { step "not the control domain"; return 1; }
    hostname dom0
}

start_toolstack() {
    "$XEN/xenstored" --pid-file /run/xenstored.pid || { step "xenstored failed"; return 1; }
    "$XEN/xen-init-dom0" > /run/xen-init-dom0.log 2>&1 ||
        { step "xen-init-dom0 failed: $(tail -2 /run/xen-init-dom0.log)"; return 1; }
    "$XEN/xenconsoled" --pid-file /run/xenconsoled.pid --log=guest \
        --log-dir=/var/log/xen/console || { step "xenconsoled failed"; return 1; }
}

# A domU's console, streamed to ours with a prefix (for the serial log):
# stream_console LOG PREFIX
stream_console() {
    ( tail -n +1 -F "$1" 2>/dev/null |
          sed -u -e 's/\r$//' -e "s/^/$2| /" ) &
}

# xl_config NAME BACKEND RAMDISK MEMORY EXTRA DISK...: /run/NAME.cfg, a
# 2-vCPU PV domU on Debian's kernel; ours serves its disks through
# device_model_override, the stock QEMU as libxl's default.
xl_config() {
    local name=$1 backend=$2 ramdisk=$3 memory=$4 extra=$5 disks="" d
    shift 5
    for d in "$@"; do disks="$disks${disks:+, }'$d'"; done
    {
        echo "name = \"$name\""
        echo 'type = "pv"'
        echo 'kernel = "/realxen/vmlinuz"'
        echo "ramdisk = \"$ramdisk\""
        echo "extra = \"console=hvc0 quiet loglevel=4 $extra\""
        echo "memory = $memory"
        echo "vcpus = 2"
        echo "disk = [ $disks ]"
        echo 'on_poweroff = "destroy"'
        echo 'on_reboot = "destroy"'
        echo 'on_crash = "destroy"'
        if [ "$backend" = ours ]; then
            echo "device_model_override = \"$OURS\""
        fi
    } > "/run/$name.cfg"
}

# With persistent grants, blkfront fills every slot of every ring with
# (segments + indirect pages) granted pages up front: 4-page rings, 256
# segments and 2 queues take about 260 MiB; 16-page rings would take 1 GiB.
write_config() {
    xl_config "$DOMU" "$1" /realxen/domu-initrd.cpio.gz 768 \
        "xen_blkfront.max_ring_page_order=2 xen_blkfront.max_indirect_segments=256 xblk.run=$2" \
        'format=raw, vdev=xvda, access=rw, backendtype=qdisk, target=/images/disk.img' \
        'format=raw, vdev=xvdc, access=ro, backendtype=qdisk, target=/images/ro.img'
}

# Which QEMU serves the domU's disks: its process, binary, command line
# and version.  Sets QEMU_PID and QEMU_EXE.
QEMU_PID="" QEMU_EXE=""
report_qemu() {
    local domid=$1 p cmd
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
        case "$cmd" in *"-xen-domid $domid "*) ;; *) continue ;; esac
        QEMU_EXE=$(readlink "$p/exe")
        QEMU_PID=${p#/proc/}
        echo "XBLK-QEMU pid=$QEMU_PID exe=$QEMU_EXE"
        echo "XBLK-QEMU cmdline=$cmd"
        echo "XBLK-QEMU version=$("$QEMU_EXE" --version 2>&1 | head -1)"
        return 0
    done
    echo "XBLK-QEMU none: no process with -xen-domid $domid"
    return 1
}

# check_served_by CHECK DOMID BACKEND: the domain's disks are served by the
# QEMU the backend names (ours through device_model_override, or stock).
check_served_by() {
    local name=$1 domid=$2 want=$STOCK
    [ "$3" = ours ] && want=$OURS
    QEMU_PID="" QEMU_EXE=""
    report_qemu "$domid"
    if [ "$QEMU_EXE" = "$want" ]; then
        check "$name" PASS "domid $domid, disks served by $want (pid $QEMU_PID)"
    else
        check "$name" FAIL "domid $domid, served by '${QEMU_EXE:-nothing}', not $want"
    fi
}

# check_exit CHECK DOMAIN STATE DONE SECS: the domain powers itself off
# within SECS (else it is destroyed); it passes if it had reached DONE.
check_exit() {
    local name=$1 dom=$2 state=$3 done=$4 secs=$5
    if wait_for "$secs" bash -c "! $XEN/xl domid $dom >/dev/null 2>&1"; then
        if [ "$state" = "$done" ]; then
            check "$name" PASS "finished its steps and powered off"
        else
            check "$name" FAIL "gone without finishing (state '$state')"
        fi
    else
        check "$name" FAIL "still running $secs s after '$state': destroyed"
        timeout 30 "$XEN/xl" destroy "$dom"
    fi
}

snapshot_xenstore() {
    local domid=$1
    xenstore-ls -f "/local/domain/0/backend/qdisk/$domid" > /run/xs-backend 2>&1
    xenstore-ls -f "/local/domain/$domid/device/vbd" > /run/xs-frontend 2>&1
    awk '{print "XBLK-XS " $0}' /run/xs-backend /run/xs-frontend
}

hotplug_attach() {
    local out rc
    out=$(timeout 60 "$XEN/xl" block-attach "$DOMU" \
          'format=qcow2, vdev=xvdb, access=rw, backendtype=qdisk, target=/images/hot.qcow2' 2>&1)
    rc=$?
    if [ $rc = 0 ]; then
        check hotplug-attach PASS "xl block-attach xvdb (qcow2)"
    else
        check hotplug-attach FAIL "xl block-attach rc=$rc: $(echo "$out" | tail -2 | tr '\n' ' ')"
    fi
}

hotplug_detach() {
    local domid=$1 out rc
    out=$(timeout 60 "$XEN/xl" block-detach "$DOMU" xvdb 2>&1)
    rc=$?
    if [ $rc != 0 ]; then
        check hotplug-detach FAIL "xl block-detach rc=$rc: $(echo "$out" | tail -2 | tr '\n' ' ')"
    elif xenstore-exists "/local/domain/0/backend/qdisk/$domid/51728"; then
        check hotplug-detach FAIL "xl block-detach rc=0 but the backend node remains"
    else
        check hotplug-detach PASS "xl block-detach xvdb, backend node gone"
        return 0
    fi
    return 1
}

# After the detach: the qcow2 is consistent and holds what the domU wrote.
hotplug_image() {
    local gen=$1 run=$2 out
    if ! out=$(qemu-img check -q /images/hot.qcow2 2>&1); then
        check hotplug-image FAIL "qemu-img check: $(echo "$out" | head -2 | tr '\n' ' ')"
        return
    fi
    if [ -z "$gen" ]; then
        check hotplug-image FAIL "the domU wrote no data to xvdb"
        return
    fi
    qemu-img convert -O raw /images/hot.qcow2 /tmp/hot.raw &&
    out=$(/realxen/xbverify verify /tmp/hot.raw 0 end "$gen" -r "$run" -b 2>&1)
    if [ $? = 0 ]; then
        check hotplug-image PASS "qemu-img check clean; dom0 verified the domU's data in the qcow2"
    else
        check hotplug-image FAIL "$(echo "$out" | tail -3 | tr '\n' ' ')"
    fi
    rm -f /tmp/hot.raw
}

resize() {
    local domid=$1 old new out
    old=$(stat -c %s /images/disk.img)
    new=$((old + RESIZE_GROW))
    out=$(timeout 30 python3 /realxen/qmp.py "/var/run/xen/qmp-libxl-$domid" \
          resize /images/disk.img "$new" 2>&1)
    if [ $? = 0 ]; then
        check resize-qmp PASS "block_resize $old -> $new bytes: $out"
    else
        check resize-qmp FAIL "$(echo "$out" | tail -2 | tr '\n' ' ')"
    fi
}

# Fail the checks of the steps that were not reached.
fail_unreported() {
    local why=$1 c
    shift
    for c in "$@"; do
        [ -n "${reported[$c]:-}" ] || check "$c" FAIL "$why"
    done
}

# Re-emit the domU's checks and run the feature check.  A disk the domU
# never saw gets the device model's word on it, if it said one.
domu_results() {
    local domid=$1 line dev why
    grep -a '^XBLK-CHECK ' "$CONSOLE_LOG" | tr -d '\r' | sed 's/^XBLK-//' |
    while IFS= read -r line; do
        dev=$(echo "$line" | sed -n 's/.* FAIL no \/dev\/xvd\([a-c]\)\b.*/\1/p')
        if [ -n "$dev" ]; then
            why=$(grep -a "device '$((51712 + 16 * ($(printf '%d' "'$dev") - 97)))'" \
                  "/var/log/xen/qemu-dm-$DOMU.log" 2>/dev/null | head -1)
            [ -n "$why" ] && line="$line (qemu-dm: $why)"
        fi
        echo "$line"
    done
    if [ -s /run/xs-backend ]; then
        python3 /realxen/features.py /run/xs-backend /run/xs-frontend \
            "$CONSOLE_LOG" "$domid"
    else
        check features FAIL "no xenstore snapshot (the domU never reached the hot-plug step)"
    fi
}

# ---- the second domU: xenblk-front's conformance core and hostile cases ----

# gntalloc's default limit (1024 pages) is below what 2 queues of 16-page
# rings with 256 indirect segments and persistent grants may keep shared.
write_front_config() {
    xl_config "$FRONT" "$1" /realxen/domu-front-initrd.cpio.gz 512 \
        "xen_gntalloc.limit=262144" \
        'format=raw, vdev=xvda, access=rw, backendtype=qdisk, target=/images/front.img' \
        'format=raw, vdev=xvdc, access=ro, backendtype=qdisk, target=/images/ro.img'
}

# Boot the xbfront domU, let it run its cases, re-emit its checks.  Its
# disks stay in InitWait until xenblk-front in the domU connects them: xl
# create waits for the backend, not for a frontend.
front_phase() {
    local backend=$1 domid state
    write_front_config "$backend"
    set_guest "$FRONT" "$FRONT_LOG"
    stream_console "$FRONT_LOG" front
    step "xl create $FRONT ($backend)"
    QEMU_PID="" QEMU_EXE=""
    if ! timeout 120 "$XEN/xl" create /run/$FRONT.cfg > /run/xl-create-front.log 2>&1; then
        check front-create FAIL "xl create: $(tail -3 /run/xl-create-front.log | tr '\n' ' ')"
        fail_unreported "xl create $FRONT failed" front-qemu-alive front-exit
        return
    fi
    domid=$("$XEN/xl" domid "$FRONT")
    check_served_by front-create "$domid" "$backend"
    state=$(wait_sync front-finished 300)
    step "$FRONT: $state"
    if [ "$state" != front-finished ]; then
        xenstore-ls -f "/local/domain/0/backend/qdisk/$domid" 2>&1 |
            awk '{print "XBLK-XS-FRONT " $0}'
        xenstore-ls -f "/local/domain/$domid/device/vbd" 2>&1 |
            awk '{print "XBLK-XS-FRONT " $0}'
    fi
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        check front-qemu-alive PASS "pid $QEMU_PID running after all of xenblk-front's cases"
    else
        check front-qemu-alive FAIL "pid ${QEMU_PID:-none} gone (state '$state'): $(dmesg | grep -E 'segfault|traps:' | tail -1) $(tail -3 /var/log/xen/qemu-dm-$FRONT.log 2>/dev/null | tr '\n' ' ')"
    fi
    # The domU powers off when told, after the liveness check above.
    xenstore-write "/local/domain/$domid/xblk/state" 1 2>/dev/null
    check_exit front-exit "$FRONT" "$state" front-finished 60
    grep -a '^XBLK-CHECK ' "$FRONT_LOG" | tr -d '\r' | sed 's/^XBLK-//'
    python3 /realxen/front-results.py "$FRONT_LOG"
    awk '{print "XBLK-DMLOG-FRONT " $0}' "/var/log/xen/qemu-dm-$FRONT.log" 2>/dev/null | tail -15
}

# ---- the first domU: Linux's xen-blkfront ----

blkfront_phase() {
    local backend=$1 run domid="" state
    run=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
    write_config "$backend" "$run"
    stream_console "$CONSOLE_LOG" domU

    step "xl create ($backend)"
    if timeout 120 "$XEN/xl" create /run/$DOMU.cfg > /run/xl-create.log 2>&1; then
        domid=$("$XEN/xl" domid "$DOMU")
        check_served_by domu-create "$domid" "$backend"
    else
        check domu-create FAIL "xl create: $(tail -3 /run/xl-create.log | tr '\n' ' ')"
        awk '{print "XBLK-XL " $0}' /run/xl-create.log | tail -20
        domid=$("$XEN/xl" domid "$DOMU" 2>/dev/null || true)
        [ -n "$domid" ] && report_qemu "$domid"
    fi
    step "domU ${domid:-not} created"

    # 1. The domU boots, runs the control, the verified I/O, flush,
    #    discard, mkfs and the read-only checks, then asks for the hot-plug.
    state=$(wait_sync hotplug-ready 180)   # boot, control, I/O checks, mkfs
    step "domU: $state"
    if [ "$state" = hotplug-ready ]; then
        snapshot_xenstore "$domid"
        hotplug_attach
        state=$(wait_sync detach-ready 90)
        step "domU: $state"
    fi
    if [ "$state" = detach-ready ]; then
        if hotplug_detach "$domid"; then
            hotplug_image "$(sync_value detach-ready gen)" "$run"
        else
            check hotplug-image FAIL "not checked: the detach failed, the image is still in use"
        fi
        state=$(wait_sync resize-ready 60)
        step "domU: $state"
    fi
    if [ "$state" = resize-ready ]; then
        resize "$domid"
        state=$(wait_sync finished 90)
        step "domU: $state"
    fi
    fail_unreported "not run: the domU's state is '$state'" \
        hotplug-attach hotplug-detach hotplug-image resize-qmp

    # Is the device model that served the disks still alive?  Asked while
    # the domU waits for xvda to go away (its cue to power off), so that a
    # QEMU stopped by the domain's end is not mistaken for one that died.
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        check qemu-alive PASS "pid $QEMU_PID running after all steps"
    elif [ -n "$QEMU_PID" ] && ! domu_alive; then
        check qemu-alive FAIL "pid $QEMU_PID ended with the domU (state '$state'): not checked while it ran"
    elif [ -n "$QEMU_PID" ]; then
        check qemu-alive FAIL "pid $QEMU_PID died: $(dmesg | grep -E 'segfault|traps:' | tail -1) $(tail -3 /var/log/xen/qemu-dm-$DOMU.log 2>/dev/null | tr '\n' ' ')"
    else
        check qemu-alive FAIL "no device model was found"
    fi
    if [ "$state" = finished ]; then
        timeout 60 "$XEN/xl" block-detach "$DOMU" xvda > /run/detach-xvda.log 2>&1 ||
            step "xl block-detach xvda failed: $(tail -1 /run/detach-xvda.log)"
    fi

    # 2. The domU powers itself off (if it is not stuck: then at once).
    local grace=60
    case $state in finished|abort|dead) ;; *) grace=5 ;; esac
    check_exit domu-exit "$DOMU" "$state" finished $grace

    domu_results "$domid"
    awk '{print "XBLK-DMLOG " $0}' "/var/log/xen/qemu-dm-$DOMU.log" 2>/dev/null | tail -25
}

# ---- the third domU: defined and started through libvirt ----

# Ours as dom0's default device model, the way docs/deploying.rst tells an
# administrator to deploy it: libvirt's libxl driver names no device model
# for a PV guest, so libxl starts /usr/libexec/xen-qemu-system-i386.  (The
# dom0 disk is a snapshot: the diversion ends with this boot.)
deploy_ours_as_default() {
    dpkg-divert --local --add --rename \
        --divert "$STOCK.stock" "$STOCK" > /run/divert.log 2>&1 &&
    ln -s "$OURS" "$STOCK"
}

start_libvirtd() {
    mkdir -p /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
    # no journal or syslog in dom0: warnings and errors to a file
    LIBVIRT_LOG_OUTPUTS="3:file:/run/libvirtd.log" \
        libvirtd --daemon --pid-file /run/libvirtd.pid >> /run/libvirtd.log 2>&1 ||
        return 1
    wait_for 60 virsh -c xen:///system version > /run/virsh-version.log 2>&1
}

write_virt_xml() {
    local run=$1
    cat > /run/$VIRT.xml <<EOF
<domain type='xen'>
  <name>$VIRT</name>
  <memory unit='MiB'>768</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='xenpv'>linux</type>
    <kernel>/realxen/vmlinuz</kernel>
    <initrd>/realxen/domu-initrd.cpio.gz</initrd>
    <cmdline>console=hvc0 quiet loglevel=4 xen_blkfront.max_ring_page_order=2 xen_blkfront.max_indirect_segments=256 xblk.mode=libvirt xblk.run=$run</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/images/virt.img'/>
      <target dev='xvda' bus='xen'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/images/virt.qcow2'/>
      <target dev='xvdb' bus='xen'/>
    </disk>
    <console type='pty'>
      <target type='xen' port='0'/>
    </console>
  </devices>
</domain>
EOF
}

libvirt_phase() {
    local run domid state out
    run=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
    set_guest "$VIRT" "$VIRT_LOG"
    if deploy_ours_as_default; then
        check libvirt-deploy PASS "$(cat /run/divert.log | tr '\n' ' '); $STOCK -> $(readlink "$STOCK")"
    else
        check libvirt-deploy FAIL "dpkg-divert: $(tail -2 /run/divert.log | tr '\n' ' ')"
    fi
    if ! start_libvirtd; then
        check libvirt-start FAIL "libvirtd: $(grep -v dmidecode /run/libvirtd.log | tail -3 | tr '\n' ' ') virsh: $(tail -2 /run/virsh-version.log 2>/dev/null | tr '\n' ' ')"
        fail_unreported "libvirtd did not start" libvirt-qemu libvirt-detach libvirt-exit
        grep -v dmidecode /run/libvirtd.log | tail -150 | awk '{print "XBLK-LIBVIRT " $0}'
        return
    fi
    write_virt_xml "$run"
    stream_console "$VIRT_LOG" virt
    step "virsh define + start $VIRT"
    if ! out=$(virsh -c xen:///system define /run/$VIRT.xml 2>&1 &&
               timeout 120 virsh -c xen:///system start "$VIRT" 2>&1); then
        check libvirt-start FAIL "$(echo "$out" | tail -3 | tr '\n' ' ') $(tail -3 /var/log/libvirt/libxl/libxl-driver.log 2>/dev/null | tr '\n' ' ')"
        fail_unreported "virsh start failed" libvirt-qemu libvirt-detach libvirt-exit
        return
    fi
    domid=$("$XEN/xl" domid "$VIRT")
    check libvirt-start PASS "virsh define + start: domid $domid ($(head -1 /run/virsh-version.log 2>/dev/null))"
    QEMU_PID="" QEMU_EXE=""
    report_qemu "$domid"
    if [ "$QEMU_EXE" = "$OURS" ]; then
        check libvirt-qemu PASS "disks served by $QEMU_EXE (pid $QEMU_PID), started by libxl as $STOCK"
    else
        check libvirt-qemu FAIL "served by '${QEMU_EXE:-nothing}', not $OURS"
    fi
    state=$(wait_sync libvirt-finished 180)
    step "$VIRT: $state"
    xenstore-ls -f "/local/domain/0/backend/qdisk/$domid" 2>&1 | awk '{print "XBLK-XS-VIRT " $0}'
    if [ "$state" = libvirt-finished ] && [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        # The guest's cue to power off: libvirt takes xvdb away.
        if out=$(timeout 60 virsh -c xen:///system detach-disk "$VIRT" xvdb --live 2>&1); then
            check libvirt-detach PASS "virsh detach-disk xvdb: $(echo "$out" | tr '\n' ' ')"
        else
            check libvirt-detach FAIL "$(echo "$out" | tail -2 | tr '\n' ' ')"
        fi
    else
        check libvirt-detach FAIL "not run: the guest's state is '$state', QEMU pid ${QEMU_PID:-none} $(kill -0 "${QEMU_PID:-0}" 2>/dev/null && echo alive || echo gone)"
    fi
    if wait_for 60 bash -c "! $XEN/xl domid $VIRT >/dev/null 2>&1"; then
        check libvirt-exit PASS "the guest finished and powered off (state '$state')"
    else
        check libvirt-exit FAIL "still running 60 s after '$state': destroyed"
        timeout 30 virsh -c xen:///system destroy "$VIRT" > /dev/null 2>&1
    fi
    grep -a '^XBLK-CHECK ' "$VIRT_LOG" | tr -d '\r' | sed 's/^XBLK-//'
    if out=$(qemu-img check -q /images/virt.qcow2 2>&1); then
        check libvirt-qcow2 PASS "qemu-img check clean after the guest's writes"
    else
        check libvirt-qcow2 FAIL "$(echo "$out" | head -2 | tr '\n' ' ')"
    fi
    awk '{print "XBLK-DMLOG-VIRT " $0}' "/var/log/xen/qemu-dm-$VIRT.log" 2>/dev/null | tail -15
    tail -5 /var/log/libvirt/libxl/libxl-driver.log 2>/dev/null | awk '{print "XBLK-LIBVIRT " $0}'
}

main() {
    local backend only ro_sum
    setup || leave 01
    backend=$(sed -n 's/.*xblk\.backend=\([a-z]*\).*/\1/p' /proc/cmdline)
    # xblk.only=blkfront|front|libvirt runs one of the domUs (for debugging)
    only=$(sed -n 's/.*xblk\.only=\([a-z]*\).*/\1/p' /proc/cmdline)
    step "dom0 init: backend=$backend kernel=$(uname -r) xen=$(cat /sys/hypervisor/version/major).$(cat /sys/hypervisor/version/minor)$(cat /sys/hypervisor/version/extra)"
    case $backend in stock|ours) ;; *) step "bad xblk.backend"; leave 01 ;; esac
    start_toolstack || leave 01
    step "toolstack up"
    ro_sum=$(sha256sum < /images/ro.img)
    [ "$only" = front ] || [ "$only" = libvirt ] || blkfront_phase "$backend"
    [ "$only" = blkfront ] || [ "$only" = libvirt ] || front_phase "$backend"
    # libvirt starts dom0's default device model: ours only when deployed
    # as that default, which is what this phase checks.
    [ "$backend" = ours ] && [ "$only" != blkfront ] && [ "$only" != front ] &&
        libvirt_phase

    if [ "$(sha256sum < /images/ro.img)" = "$ro_sum" ]; then
        check readonly-image PASS "ro.img unchanged (sha256)"
    else
        check readonly-image FAIL "ro.img changed"
    fi
    step "done"
    echo "XBLK-DONE"
    leave 00
}

main
leave 01
