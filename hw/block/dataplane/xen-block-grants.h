/*
 * Xen block dataplane: where request data lives
 *
 * Each queue has one XenBlockGrants: a pool of pages that data is copied
 * into and out of with grant copies, and, when the frontend negotiated
 * persistent grants, a cache of guest pages mapped once and used in place
 * (no copy at all).  Everything is preallocated or cached: after warm-up,
 * serving a request allocates nothing and maps nothing.
 *
 * A XenBlockGrants belongs to its queue's AioContext and is used only
 * there.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef HW_BLOCK_DATAPLANE_XEN_BLOCK_GRANTS_H
#define HW_BLOCK_DATAPLANE_XEN_BLOCK_GRANTS_H

#include "hw/block/xen_blkif.h"
#include "hw/block/dataplane/xen-block.h"
#include "hw/xen/xen-bus.h"

typedef struct XenBlockGrants XenBlockGrants;
typedef struct XenBlockPersistentGrant XenBlockPersistentGrant;

/* Where one segment's data is, in our address space. */
typedef struct XenBlockSegBuf {
    uint8_t *data;
    XenBlockPersistentGrant *pgrant;    /* NULL: a pool page, copied */
} XenBlockSegBuf;

/*
 * @pool_pages: pages for copied data; @max_persistent: how many guest pages
 * may stay mapped (0: no persistent grants); @stats: the queue's counters
 * (grant_copies, grant_maps, grant_unmaps, persistent_hits are kept here).
 */
XenBlockGrants *xen_block_grants_new(XenDevice *xendev, AioContext *ctx,
                                     unsigned int pool_pages,
                                     unsigned int max_persistent,
                                     XenBlockQueueStats *stats);

/*
 * The process's budget of persistent mappings, which every queue of every
 * disk shares, and how many are alive now.  Any thread.
 */
void xen_block_grants_get_budget(uint32_t *budget, uint32_t *mapped);

/* In the queue's AioContext, before the last use: no purge runs after. */
void xen_block_grants_detach(XenBlockGrants *grants);

/* Unmap everything and free.  No request may hold buffers any more. */
void xen_block_grants_free(XenBlockGrants *grants);

/*
 * Find a place for each of @n segments: a persistent mapping of its grant,
 * or a pool page.  Returns false (holding nothing) when the pool has too
 * few free pages: try again once other requests released theirs.
 */
bool xen_block_grants_acquire(XenBlockGrants *grants,
                              const XenBlkifSegment *segs, unsigned int n,
                              XenBlockSegBuf *bufs);
void xen_block_grants_release(XenBlockGrants *grants, XenBlockSegBuf *bufs,
                              unsigned int n);

/*
 * Copy the data of the segments that live in pool pages, to the guest or
 * from it, in one batch.  @scratch has room for @n copy segments.
 */
bool xen_block_grants_copy(XenBlockGrants *grants,
                           const XenBlkifSegment *segs,
                           const XenBlockSegBuf *bufs, unsigned int n,
                           bool to_guest, XenDeviceGrantCopySegment *scratch,
                           Error **errp);

/* Copy @n whole guest pages (e.g. indirect descriptors) into @buf. */
bool xen_block_grants_read_pages(XenBlockGrants *grants,
                                 const uint32_t *grefs, unsigned int n,
                                 void *buf, XenDeviceGrantCopySegment *scratch,
                                 Error **errp);

#endif /* HW_BLOCK_DATAPLANE_XEN_BLOCK_GRANTS_H */
