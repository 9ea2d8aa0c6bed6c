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

/* One queue as the frontend published it, and where it will run. */
typedef struct XenBlockQueueConfig {
    uint32_t ring_ref[1u << XEN_BLKIF_MAX_RING_PAGE_ORDER];
    unsigned int nr_ring_ref;
    unsigned int event_channel;
    IOThread *iothread;         /* NULL: the main loop */
} XenBlockQueueConfig;

/* What was negotiated for the whole device. */
typedef struct XenBlockDataPlaneConfig {
    XenBlkifLimits limits;      /* what we offered; the disk's size */
    XenBlkifAbi abi;
    bool persistent;            /* both sides advertised feature-persistent */
    unsigned int max_persistent_grants;     /* per queue */
} XenBlockDataPlaneConfig;

/* Per-queue counters, for QMP and for tests that count (never time). */
typedef struct XenBlockQueueStats {
    uint64_t requests;              /* consumed from the ring */
    uint64_t segments;
    uint64_t invalid;               /* refused by validation */
    uint64_t grant_copies;          /* grant-copy batches */
    uint64_t grant_maps;            /* persistent grants mapped */
    uint64_t grant_unmaps;          /* persistent grants purged */
    uint64_t persistent_hits;       /* segments served from a mapping */
    uint64_t notifications;         /* sent to the frontend */
    uint64_t notifications_suppressed;  /* not needed, not sent */
    uint64_t ring_scans;            /* times the ring was looked at */
    uint64_t polled_scans;          /* of which IOThread polling started */
    uint64_t waits_for_buffers;     /* requests that waited for pages */
} XenBlockQueueStats;

/*
 * The dataplane takes the BlockBackend's device callbacks: it pauses its
 * queues while the block layer drains, and calls @resize_cb (main loop)
 * when the disk changed size.
 */
typedef void XenBlockResizeFunc(void *opaque);
XenBlockDataPlane *xen_block_dataplane_create(XenDevice *xendev,
                                              BlockBackend *blk,
                                              XenBlockResizeFunc *resize_cb,
                                              void *resize_opaque);
void xen_block_dataplane_destroy(XenBlockDataPlane *dataplane);

/*
 * Called in the main loop when a queue's ring turned out to be corrupt
 * (the queue has stopped consuming it).
 */
typedef void XenBlockRingErrorFunc(void *opaque);
void xen_block_dataplane_set_ring_error_cb(XenBlockDataPlane *dataplane,
                                           XenBlockRingErrorFunc *cb,
                                           void *opaque);

/*
 * Map the rings, bind the event channels and start serving.  On failure,
 * *@guest_fault says whether the frontend is to blame (a ring or event
 * channel it gave that cannot be used) rather than the host.
 */
bool xen_block_dataplane_start(XenBlockDataPlane *dataplane,
                               const XenBlockDataPlaneConfig *config,
                               const XenBlockQueueConfig *queues,
                               unsigned int nr_queues,
                               bool *guest_fault, Error **errp);

/* Quiesce: wait for in-flight I/O, unbind, unmap.  Idempotent. */
void xen_block_dataplane_stop(XenBlockDataPlane *dataplane);

/* The disk changed size (in 512-byte sectors). */
void xen_block_dataplane_resize(XenBlockDataPlane *dataplane,
                                uint64_t disk_sectors);

/*
 * Counters are kept per queue index for the dataplane's life, across
 * reconnections: nr_queues is the most queues ever connected.
 */
unsigned int xen_block_dataplane_nr_queues(XenBlockDataPlane *dataplane);
bool xen_block_dataplane_get_stats(XenBlockDataPlane *dataplane,
                                   unsigned int queue,
                                   XenBlockQueueStats *stats);
/*
 * Persistent mappings: the budget every disk of this QEMU shares, and how
 * many are alive now (see xen-block-grants.c).
 */
void xen_block_dataplane_get_map_budget(uint32_t *budget,
                                        uint32_t *mapped);
/* The id of the IOThread that served a queue last ("main-loop"). */
const char *xen_block_dataplane_queue_where(XenBlockDataPlane *dataplane,
                                           unsigned int queue);

/*
 * Rate-limited logging: the first line, then at most about one a second
 * for @limiter's owner (the rest are counted and the count reported with
 * the next line).  32-bit fields: atomics of pointer size at most, for
 * 32-bit hosts too.
 */
typedef struct XenBlockLogLimiter {
    uint32_t last_ms;           /* realtime ms modulo 2^32; 0: never */
    unsigned int suppressed;
} XenBlockLogLimiter;

/* A guest's mistake, with LOG_GUEST_ERROR (-d guest_errors) ... */
void xen_block_guest_error(XenBlockLogLimiter *limiter, const char *dev,
                           const char *fmt, ...) G_GNUC_PRINTF(3, 4);
/* ... and a failure of the host's that a guest can make us retry. */
void xen_block_host_error(XenBlockLogLimiter *limiter, const char *dev,
                          const char *fmt, ...) G_GNUC_PRINTF(3, 4);

#endif /* HW_BLOCK_DATAPLANE_XEN_BLOCK_H */
