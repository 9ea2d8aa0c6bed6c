/*
 * libFuzzer target: values a guest or toolstack writes in xenstore
 *
 * Device names (vdev/dev), libxl's params, numeric nodes (ring-ref,
 * event-channel, ring-page-order), booleans and protocol names.  Beyond
 * "no crash": a device name that parses prints back as a name that parses
 * to the same device number.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "hw/block/xen_blkif.h"
#include "hw/block/xen_vbd.h"

static void check(bool cond)
{
    if (!cond) {
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* xenstore values are NUL-terminated strings */
    g_autofree char *s = g_strndup((const char *)data, size);
    g_autofree char *driver = NULL;
    g_autofree char *target = NULL;
    XenVbd vbd;
    XenBlkifAbi abi;
    uint32_t n;

    if (xen_vbd_parse(s, &vbd)) {
        g_autofree char *name = xen_vbd_name(&vbd);
        XenVbd again;

        check(xen_vbd_parse(name, &again));
        check(again.number == vbd.number);
        check(vbd.disk <= XEN_VBD_MAX_DISK);
        check(vbd.partition <= XEN_VBD_MAX_PARTITION);
    }
    if (xen_vbd_parse_params(s, &driver, &target)) {
        check(driver && *driver && target && *target);
    }
    if (xen_vbd_parse_uint(s, 4, &n)) {
        check(n <= 4);
    }
    xen_vbd_parse_bool(s, false);
    if (xen_blkif_abi_from_name(s, &abi)) {
        check(abi < XEN_BLKIF_ABI__MAX);
    }
    return 0;
}
