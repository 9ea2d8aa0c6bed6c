#!/bin/busybox sh
# PID 1 of dom0's initramfs: load the modules Debian's kernel has as modules
# (virtio for the root disk, ext4, the Xen device drivers the toolstack
# needs), mount the dom0 root from the virtio disk, switch to it.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# Leave the outer QEMU through isa-debug-exit (port 0xf4): exit status 3.
fatal() {
    echo "XBLK-FATAL dom0 initramfs: $*"
    printf '\001' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    poweroff -f
}

echo "XBLK-STEP dom0 initramfs up ($(cut -d' ' -f1 /proc/uptime) s)"
for m in $(cat /modlist); do
    insmod "$m" || echo "XBLK-STEP insmod $m failed"
done

# virtio probing is asynchronous: wait for the disk, 20 s at most
i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1))
    [ $i -gt 200 ] && fatal "no /dev/vda after 20 s"
    sleep 0.1
done
mount -t ext4 /dev/vda /newroot || fatal "cannot mount /dev/vda"
[ -x /newroot/realxen/dom0-init.sh ] || fatal "no /realxen/dom0-init.sh on the root"
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /realxen/dom0-init.sh
