/*
 * Xen block device dataplane (qemu-xen-block)
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/log.h"
#include "qemu/timer.h"
#include "system/block-backend.h"
#include "hw/block/dataplane/xen-block.h"
#include "trace.h"

struct XenBlockDataPlane {
    XenDevice *xendev;
    BlockBackend *blk;
    IOThread *iothread;
};

#define GUEST_ERROR_INTERVAL_MS 1000

void xen_block_guest_error(XenBlockLogLimiter *limiter, const char *dev,
                           const char *fmt, ...)
{
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    g_autofree char *msg = NULL;
    va_list ap;

    if (limiter->last_ms && now - limiter->last_ms < GUEST_ERROR_INTERVAL_MS) {
        limiter->suppressed++;
        return;
    }
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (limiter->suppressed) {
        qemu_log_mask(LOG_GUEST_ERROR,
                      "xen-block %s: %s (and %" PRIu64 " more since)\n",
                      dev, msg, limiter->suppressed);
    } else {
        qemu_log_mask(LOG_GUEST_ERROR, "xen-block %s: %s\n", dev, msg);
    }
    limiter->last_ms = now;
    limiter->suppressed = 0;
}

XenBlockDataPlane *xen_block_dataplane_create(XenDevice *xendev,
                                              BlockBackend *blk,
                                              IOThread *iothread)
{
    XenBlockDataPlane *dataplane = g_new0(XenBlockDataPlane, 1);

    dataplane->xendev = xendev;
    dataplane->blk = blk;
    dataplane->iothread = iothread;
    trace_xen_block_dataplane_create(dataplane);
    return dataplane;
}

void xen_block_dataplane_destroy(XenBlockDataPlane *dataplane)
{
    trace_xen_block_dataplane_destroy(dataplane);
    g_free(dataplane);
}

bool xen_block_dataplane_start(XenBlockDataPlane *dataplane,
                               const XenBlkifLimits *limits,
                               XenBlkifAbi abi,
                               const XenBlockQueueConfig *queues,
                               unsigned int nr_queues,
                               Error **errp)
{
    error_setg(errp, "the dataplane does not serve rings yet");
    return false;
}

void xen_block_dataplane_stop(XenBlockDataPlane *dataplane)
{
}

void xen_block_dataplane_resize(XenBlockDataPlane *dataplane,
                                uint64_t disk_sectors)
{
}
