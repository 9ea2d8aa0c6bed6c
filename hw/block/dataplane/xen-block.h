/*
 * Xen block device dataplane: serves a frontend's blkif rings
 *
 * The device model owns the negotiation; the dataplane owns everything from
 * mapped rings to responses.  It is opaque to the device model:
 *
 *   create -> start (rings mapped, event channels bound) -> stop -> destroy
 *
 * stop() returns only when no request is in flight and no ring is mapped,
 * so the device model can disconnect, reconnect or go away at any time.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef HW_BLOCK_DATAPLANE_XEN_BLOCK_H
#define HW_BLOCK_DATAPLANE_XEN_BLOCK_H

#include "hw/block/block.h"
#include "hw/block/xen_blkif.h"
#include "hw/xen/xen-bus.h"
#include "system/iothread.h"

typedef struct XenBlockDataPlane XenBlockDataPlane;

/* One queue as the frontend published it. */
typedef struct XenBlockQueueConfig {
    uint32_t ring_ref[1u << XEN_BLKIF_MAX_RING_PAGE_ORDER];
    unsigned int nr_ring_ref;
    unsigned int event_channel;
} XenBlockQueueConfig;

XenBlockDataPlane *xen_block_dataplane_create(XenDevice *xendev,
                                              BlockBackend *blk,
                                              IOThread *iothread);
void xen_block_dataplane_destroy(XenBlockDataPlane *dataplane);

/*
 * Map the rings, bind the event channels and start serving.  @limits is
 * what the backend offered (and the disk's size); it is copied.
 */
bool xen_block_dataplane_start(XenBlockDataPlane *dataplane,
                               const XenBlkifLimits *limits,
                               XenBlkifAbi abi,
                               const XenBlockQueueConfig *queues,
                               unsigned int nr_queues,
                               Error **errp);

/* Quiesce: wait for in-flight I/O, unbind, unmap.  Idempotent. */
void xen_block_dataplane_stop(XenBlockDataPlane *dataplane);

/* The disk changed size (in 512-byte sectors). */
void xen_block_dataplane_resize(XenBlockDataPlane *dataplane,
                                uint64_t disk_sectors);

/*
 * Log a guest mistake with LOG_GUEST_ERROR: the first one, then at most
 * about one line a second for @limiter's owner (the rest are counted and
 * the count reported with the next line).
 */
typedef struct XenBlockLogLimiter {
    int64_t last_ms;
    uint64_t suppressed;
} XenBlockLogLimiter;

void xen_block_guest_error(XenBlockLogLimiter *limiter, const char *dev,
                           const char *fmt, ...) G_GNUC_PRINTF(3, 4);

#endif /* HW_BLOCK_DATAPLANE_XEN_BLOCK_H */
