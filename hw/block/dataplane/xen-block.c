/*
 * Xen block device dataplane (qemu-xen-block)
 *
 * One XenBlockQueue per ring the frontend set up.  A queue lives in one
 * AioContext (its IOThread's, or the main loop's): the event channel
 * handler, request processing, AIO completions and responses all run
 * there, so a queue needs no lock.  The device model calls start, stop,
 * resize and destroy from the main loop with the BQL held.
 *
 * A request has one lifecycle:
 *
 *   get     a free XenBlockRequest of the queue (preallocated at start,
 *           one per ring slot, with its data pages and I/O vector)
 *   parse   copy the ring slot once, decode and validate the copy
 *   submit  bring write data in by grant copy; BlockBackend AIO
 *   complete  AIO callback: for reads, copy data out by grant copy;
 *           apply the error policy
 *   respond write the response on the ring (published in batches)
 *   put     back on the free list
 *
 * Nothing on this path allocates or takes a global lock.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/defer-call.h"
#include "qemu/log.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "qemu/timer.h"
#include "block/aio-wait.h"
#include "block/accounting.h"
#include "system/block-backend.h"
#include "system/runstate.h"
#include "hw/xen/xen-bus.h"
#include "hw/block/dataplane/xen-block.h"
#include "trace.h"

typedef struct XenBlockQueue XenBlockQueue;

typedef struct XenBlockRequest {
    XenBlockQueue *q;
    XenBlkifRequest req;            /* our private copy, decoded */
    const XenBlkifSegment *segs;    /* req.seg, or the indirect segments */
    unsigned int nr_segs;
    uint64_t nr_sectors;            /* data length, 512-byte units */
    int16_t status;
    bool flushed;                   /* a flush with data: flush done */
    uint8_t *pages;                 /* one page per possible segment */
    QEMUIOVector qiov;
    XenDeviceGrantCopySegment *copy; /* one per possible segment */
    BlockAcctCookie acct;
    QLIST_ENTRY(XenBlockRequest) free_entry;
    QTAILQ_ENTRY(XenBlockRequest) parked_entry;
} XenBlockRequest;

struct XenBlockQueue {
    XenBlockDataPlane *dp;
    unsigned int index;
    AioContext *ctx;
    XenEventChannel *channel;
    void *sring;
    unsigned int nr_ring_ref;
    uint32_t ring_ref[1u << XEN_BLKIF_MAX_RING_PAGE_ORDER];
    XenBlkifBackRing ring;
    QEMUBH *process_bh;             /* look at the ring again */
    QEMUBH *retry_bh;               /* resubmit parked requests */
    bool ring_broken;               /* corruption seen: consume no more */
    bool push_pending;              /* responses written, not published */
    unsigned int max_segs;
    XenBlockRequest *requests;
    uint8_t *pages;                 /* data pages of all requests */
    unsigned int inflight;
    QLIST_HEAD(, XenBlockRequest) free_list;
    QTAILQ_HEAD(, XenBlockRequest) parked;  /* werror/rerror=stop */
    XenBlockQueueStats stats;
};

struct XenBlockDataPlane {
    XenDevice *xendev;
    BlockBackend *blk;
    IOThread *iothread;
    AioContext *ctx;
    XenBlkifLimits limits;
    XenBlkifAbi abi;
    XenBlockQueue *queues;
    unsigned int nr_queues;
    bool started;
    bool stopping;                  /* queues detached, draining */
    XenBlockLogLimiter log_limiter;
    QEMUBH *ring_error_bh;          /* tells the device model, main loop */
    VMChangeStateEntry *vmstate;
};

#define GUEST_ERROR_INTERVAL_MS 1000

void xen_block_guest_error(XenBlockLogLimiter *limiter, const char *dev,
                           const char *fmt, ...)
{
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    g_autofree char *msg = NULL;
    va_list ap;

    /*
     * The first mistake, then at most one line a second: a guest must not
     * be able to flood the host's log.
     */
    if (limiter->last_ms && now - limiter->last_ms < GUEST_ERROR_INTERVAL_MS) {
        qatomic_inc(&limiter->suppressed);
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

static const char *xen_block_queue_name(XenBlockQueue *q)
{
    return q->dp->xendev->name;
}

/* ---- Responses ---- */

/* Publish the responses written so far; notify if the frontend waits. */
static void xen_block_queue_push(void *opaque)
{
    XenBlockQueue *q = opaque;

    if (!q->push_pending) {
        return;
    }
    q->push_pending = false;
    if (xen_blkif_ring_push_responses(&q->ring)) {
        q->stats.notifications++;
        xen_device_notify_event_channel(q->dp->xendev, q->channel, NULL);
    } else {
        q->stats.notifications_suppressed++;
    }
}

static void xen_block_request_put(XenBlockRequest *r)
{
    XenBlockQueue *q = r->q;

    q->inflight--;
    QLIST_INSERT_HEAD(&q->free_list, r, free_entry);
}

static void xen_block_request_respond(XenBlockRequest *r)
{
    XenBlockQueue *q = r->q;

    trace_xen_block_request_respond(r, r->req.id, r->req.op, r->status);
    xen_blkif_ring_put_response(&q->ring, r->req.id, r->req.op, r->status);
    q->push_pending = true;
    xen_block_request_put(r);
    /* Batched: runs once at the end of the current defer_call section. */
    defer_call(xen_block_queue_push, q);
}

/* ---- Data in and out: grant copies ---- */

/*
 * Copy the data of @r between its pages and the guest's segments.  Each
 * segment has a page of its own in r->pages.
 */
static bool xen_block_request_copy(XenBlockRequest *r, bool to_guest)
{
    XenBlockQueue *q = r->q;
    Error *local_err = NULL;

    for (unsigned int i = 0; i < r->nr_segs; i++) {
        const XenBlkifSegment *s = &r->segs[i];
        XenDeviceGrantCopySegment *c = &r->copy[i];
        void *page = r->pages + (size_t)i * XEN_BLKIF_PAGE_SIZE;
        unsigned int offset = s->first_sect * XEN_BLKIF_SECTOR_SIZE;

        c->len = (s->last_sect - s->first_sect + 1) * XEN_BLKIF_SECTOR_SIZE;
        if (to_guest) {
            c->source.virt = page;
            c->dest.foreign.ref = s->gref;
            c->dest.foreign.offset = offset;
        } else {
            c->source.foreign.ref = s->gref;
            c->source.foreign.offset = offset;
            c->dest.virt = page;
        }
    }
    q->stats.grant_copies++;
    xen_device_copy_grant_refs(q->dp->xendev, to_guest, r->copy, r->nr_segs,
                               &local_err);
    if (local_err) {
        /* A grant the guest revoked or never gave us: its mistake. */
        xen_block_guest_error(&q->dp->log_limiter, xen_block_queue_name(q),
                              "request 0x%" PRIx64 ": %s", r->req.id,
                              error_get_pretty(local_err));
        error_free(local_err);
        return false;
    }
    return true;
}

/* The I/O vector over the request's pages, one entry per segment. */
static void xen_block_request_build_qiov(XenBlockRequest *r)
{
    qemu_iovec_reset(&r->qiov);
    for (unsigned int i = 0; i < r->nr_segs; i++) {
        const XenBlkifSegment *s = &r->segs[i];

        qemu_iovec_add(&r->qiov, r->pages + (size_t)i * XEN_BLKIF_PAGE_SIZE,
                       (s->last_sect - s->first_sect + 1) *
                       XEN_BLKIF_SECTOR_SIZE);
    }
}

/* ---- Submission and completion ---- */

static void xen_block_request_submit(XenBlockRequest *r);

static bool xen_block_request_is_read(XenBlockRequest *r)
{
    return r->req.op == BLKIF_OP_READ;
}

static enum BlockAcctType xen_block_request_acct_type(XenBlockRequest *r)
{
    switch (r->req.op) {
    case BLKIF_OP_READ:
        return BLOCK_ACCT_READ;
    case BLKIF_OP_DISCARD:
        return BLOCK_ACCT_UNMAP;
    case BLKIF_OP_FLUSH_DISKCACHE:
    case BLKIF_OP_WRITE_BARRIER:
        return r->nr_segs && r->flushed ? BLOCK_ACCT_WRITE : BLOCK_ACCT_FLUSH;
    default:
        return BLOCK_ACCT_WRITE;
    }
}

/*
 * An I/O error: the rerror/werror policy decides.  Returns true if the
 * request was parked (stop): it is answered only after it is retried.
 */
static bool xen_block_request_io_error(XenBlockRequest *r, int error)
{
    XenBlockQueue *q = r->q;
    BlockBackend *blk = q->dp->blk;
    bool is_read = xen_block_request_is_read(r);
    BlockErrorAction action = blk_get_error_action(blk, is_read, error);

    trace_xen_block_request_io_error(r, r->req.id, error, action);
    if (action == BLOCK_ERROR_ACTION_STOP) {
        QTAILQ_INSERT_TAIL(&q->parked, r, parked_entry);
    } else {
        r->status = action == BLOCK_ERROR_ACTION_IGNORE ? BLKIF_RSP_OKAY
                                                        : BLKIF_RSP_ERROR;
    }
    blk_error_action(blk, action, is_read, error);
    return action == BLOCK_ERROR_ACTION_STOP;
}

static void xen_block_request_complete(void *opaque, int ret)
{
    XenBlockRequest *r = opaque;
    BlockAcctStats *stats = blk_get_stats(r->q->dp->blk);

    defer_call_begin();
    if (ret < 0) {
        block_acct_failed(stats, &r->acct);
        if (xen_block_request_io_error(r, -ret)) {
            goto out;
        }
        xen_block_request_respond(r);
        goto out;
    }
    block_acct_done(stats, &r->acct);

    /* A flush with data: now write the data. */
    if (r->nr_segs && !r->flushed &&
        (r->req.op == BLKIF_OP_FLUSH_DISKCACHE ||
         r->req.op == BLKIF_OP_WRITE_BARRIER)) {
        r->flushed = true;
        xen_block_request_submit(r);
        goto out;
    }
    if (xen_block_request_is_read(r) && !xen_block_request_copy(r, true)) {
        r->status = BLKIF_RSP_ERROR;
    }
    xen_block_request_respond(r);
out:
    defer_call_end();
}

/* Start (or restart, after a stop) the I/O of a parsed request. */
static void xen_block_request_submit(XenBlockRequest *r)
{
    XenBlockQueue *q = r->q;
    BlockBackend *blk = q->dp->blk;
    int64_t offset = (int64_t)r->req.sector << XEN_BLKIF_SECTOR_SHIFT;

    r->status = BLKIF_RSP_OKAY;
    block_acct_start(blk_get_stats(blk), &r->acct,
                     r->nr_sectors << XEN_BLKIF_SECTOR_SHIFT,
                     xen_block_request_acct_type(r));
    trace_xen_block_request_submit(r, r->req.id, r->req.op, r->req.sector,
                                   r->nr_sectors);
    switch (r->req.op) {
    case BLKIF_OP_READ:
        blk_aio_preadv(blk, offset, &r->qiov, 0, xen_block_request_complete,
                       r);
        break;
    case BLKIF_OP_FLUSH_DISKCACHE:
    case BLKIF_OP_WRITE_BARRIER:
        /* Flush first; the data (if any) follows once it is done. */
        if (!r->flushed) {
            blk_aio_flush(blk, xen_block_request_complete, r);
            break;
        }
        /* fall through */
    case BLKIF_OP_WRITE:
        blk_aio_pwritev(blk, offset, &r->qiov, 0, xen_block_request_complete,
                        r);
        break;
    case BLKIF_OP_DISCARD:
        blk_aio_pdiscard(blk, offset,
                         (int64_t)r->req.nr_sectors << XEN_BLKIF_SECTOR_SHIFT,
                         xen_block_request_complete, r);
        break;
    default:
        g_assert_not_reached();     /* parse let nothing else through */
    }
}

/* ---- Parsing ---- */

static void xen_block_request_reject(XenBlockRequest *r,
                                     XenBlkifVerdict verdict)
{
    XenBlockQueue *q = r->q;

    r->status = xen_blkif_verdict_status(verdict);
    q->stats.invalid++;
    trace_xen_block_request_invalid(r, r->req.id, r->req.operation,
                                    xen_blkif_verdict_name(verdict));
    xen_block_guest_error(&q->dp->log_limiter, xen_block_queue_name(q),
                          "request 0x%" PRIx64 " (operation %u) refused: %s",
                          r->req.id, r->req.operation,
                          xen_blkif_verdict_name(verdict));
    block_acct_invalid(blk_get_stats(q->dp->blk),
                       xen_block_request_acct_type(r));
    xen_block_request_respond(r);
}

/* Copy slot @idx out of the ring, check it, and start it. */
static void xen_block_request_parse(XenBlockRequest *r, uint32_t idx)
{
    XenBlockQueue *q = r->q;
    XenBlkifVerdict verdict;

    xen_blkif_copy_request(q->dp->abi, q->sring, q->ring.size, idx, &r->req);
    r->segs = r->req.seg;
    r->nr_segs = 0;
    r->nr_sectors = 0;
    r->flushed = false;
    q->stats.requests++;
    trace_xen_block_request_parse(r, r->req.id, r->req.operation,
                                  r->req.sector, r->req.nr_segments);

    verdict = xen_blkif_validate(&q->dp->limits, &r->req);
    if (verdict == XEN_BLKIF_OK && r->req.operation == BLKIF_OP_INDIRECT) {
        verdict = XEN_BLKIF_NOT_OFFERED;    /* not offered (yet) */
    }
    if (verdict != XEN_BLKIF_OK) {
        xen_block_request_reject(r, verdict);
        return;
    }

    if (r->req.operation == BLKIF_OP_DISCARD) {
        if (r->req.nr_sectors == 0) {
            r->status = BLKIF_RSP_OKAY;     /* nothing to do */
            xen_block_request_respond(r);
            return;
        }
        xen_block_request_submit(r);
        return;
    }

    r->nr_segs = r->req.nr_segments;
    /* Validation already summed the segments; recompute the length. */
    xen_blkif_check_segments(&q->dp->limits, &r->req, r->segs, r->nr_segs,
                             &r->nr_sectors);
    q->stats.segments += r->nr_segs;
    if (r->nr_segs) {
        xen_block_request_build_qiov(r);
    }
    /* Writes (and flushes with data) bring their data in now. */
    if (r->nr_segs && r->req.op != BLKIF_OP_READ &&
        !xen_block_request_copy(r, false)) {
        r->status = BLKIF_RSP_ERROR;
        xen_block_request_respond(r);
        return;
    }
    xen_block_request_submit(r);
}

/* ---- The ring ---- */

static void xen_block_queue_ring_broken(XenBlockQueue *q)
{
    XenBlockDataPlane *dp = q->dp;

    q->ring_broken = true;
    trace_xen_block_queue_ring_broken(q, q->index);
    /* Logged once per ring: we never look at this ring again. */
    qemu_log_mask(LOG_GUEST_ERROR,
                  "xen-block %s: queue %u: producer index more than a ring "
                  "ahead; ring stopped until the frontend reconnects\n",
                  xen_block_queue_name(q), q->index);
    if (dp->ring_error_bh) {
        qemu_bh_schedule(dp->ring_error_bh);
    }
}

static void xen_block_queue_process_bh(void *opaque);

/*
 * Consume what the frontend published: at most one ring's worth per call,
 * so that a guest that keeps producing cannot keep us here.  Returns true
 * if requests were consumed.
 */
static bool xen_block_queue_process(XenBlockQueue *q)
{
    unsigned int budget = q->ring.size, consumed = 0;

    if (q->ring_broken) {
        return false;
    }
    q->stats.ring_scans++;
    defer_call_begin();
    for (;;) {
        unsigned int pending;

        if (!xen_blkif_ring_pending(&q->ring, &pending)) {
            xen_block_queue_ring_broken(q);
            break;
        }
        /*
         * The ring check guarantees pending <= free requests: every slot
         * the frontend may fill has a request waiting for it.
         */
        while (pending && budget && !QLIST_EMPTY(&q->free_list)) {
            XenBlockRequest *r = QLIST_FIRST(&q->free_list);

            QLIST_REMOVE(r, free_entry);
            q->inflight++;
            xen_block_request_parse(r, q->ring.req_cons++);
            pending--;
            budget--;
            consumed++;
        }
        if (!budget) {
            /*
             * Come back from a bottom half rather than asking the frontend
             * for a notification: it believes we are busy, and we are.
             */
            qemu_bh_schedule(q->process_bh);
            break;
        }
        if (!xen_blkif_ring_final_check(&q->ring)) {
            break;
        }
    }
    defer_call_end();
    trace_xen_block_queue_process(q, q->index, consumed);
    return consumed > 0;
}

static void xen_block_queue_process_bh(void *opaque)
{
    xen_block_queue_process(opaque);
}

/* Event channel handler (and poll handler), in the queue's AioContext. */
static bool xen_block_queue_event(void *opaque)
{
    XenBlockQueue *q = opaque;

    return xen_block_queue_process(q);
}

/* ---- Error policy: resume parked requests when the VM runs again ---- */

static void xen_block_queue_retry_parked(void *opaque)
{
    XenBlockQueue *q = opaque;
    XenBlockRequest *r, *next;

    defer_call_begin();
    QTAILQ_FOREACH_SAFE(r, &q->parked, parked_entry, next) {
        QTAILQ_REMOVE(&q->parked, r, parked_entry);
        trace_xen_block_request_retry(r, r->req.id);
        xen_block_request_submit(r);
    }
    defer_call_end();
}

static void xen_block_dataplane_vm_state(void *opaque, bool running,
                                         RunState state)
{
    XenBlockDataPlane *dp = opaque;

    if (!running || !dp->started) {
        return;
    }
    for (unsigned int i = 0; i < dp->nr_queues; i++) {
        qemu_bh_schedule(dp->queues[i].retry_bh);
    }
}

/* ---- Setting a queue up and tearing it down ---- */

static bool xen_block_queue_alloc(XenBlockQueue *q, Error **errp)
{
    size_t per_req = (size_t)q->max_segs * XEN_BLKIF_PAGE_SIZE;
    size_t total = per_req * q->ring.size;

    q->requests = g_try_new0(XenBlockRequest, q->ring.size);
    q->pages = qemu_try_memalign(qemu_real_host_page_size(), total);
    if (!q->requests || !q->pages) {
        error_setg(errp, "cannot allocate %zu bytes of request buffers",
                   total);
        return false;
    }
    QLIST_INIT(&q->free_list);
    QTAILQ_INIT(&q->parked);
    for (unsigned int i = 0; i < q->ring.size; i++) {
        XenBlockRequest *r = &q->requests[i];

        r->q = q;
        r->pages = q->pages + per_req * i;
        r->copy = g_new0(XenDeviceGrantCopySegment, q->max_segs);
        qemu_iovec_init(&r->qiov, q->max_segs);
        QLIST_INSERT_HEAD(&q->free_list, r, free_entry);
    }
    return true;
}

static void xen_block_queue_free(XenBlockQueue *q)
{
    if (q->requests) {
        for (unsigned int i = 0; i < q->ring.size; i++) {
            g_free(q->requests[i].copy);
            qemu_iovec_destroy(&q->requests[i].qiov);
        }
    }
    g_clear_pointer(&q->requests, g_free);
    g_clear_pointer(&q->pages, qemu_vfree);
}

static bool xen_block_queue_start(XenBlockQueue *q,
                                  const XenBlockQueueConfig *cfg,
                                  Error **errp)
{
    XenBlockDataPlane *dp = q->dp;
    XenDevice *xendev = dp->xendev;

    q->ctx = dp->ctx;
    q->nr_ring_ref = cfg->nr_ring_ref;
    memcpy(q->ring_ref, cfg->ring_ref, sizeof(uint32_t) * cfg->nr_ring_ref);
    q->max_segs = BLKIF_MAX_SEGMENTS_PER_REQUEST;

    q->sring = xen_device_map_grant_refs(xendev, q->ring_ref, q->nr_ring_ref,
                                         PROT_READ | PROT_WRITE, errp);
    if (!q->sring) {
        return false;
    }
    if (!xen_blkif_back_ring_init(&q->ring, q->sring, q->nr_ring_ref,
                                  dp->abi)) {
        error_setg(errp, "no ring of %u pages", q->nr_ring_ref);
        return false;
    }
    if (!xen_block_queue_alloc(q, errp)) {
        return false;
    }
    q->process_bh = aio_bh_new(q->ctx, xen_block_queue_process_bh, q);
    q->retry_bh = aio_bh_new(q->ctx, xen_block_queue_retry_parked, q);
    q->channel = xen_device_bind_event_channel(xendev, cfg->event_channel,
                                               xen_block_queue_event, q,
                                               errp);
    if (!q->channel) {
        return false;
    }
    trace_xen_block_queue_start(q, q->index, q->nr_ring_ref, q->ring.size,
                                cfg->event_channel);
    return true;
}

/*
 * In the queue's AioContext: stop reacting to its event channel and drop
 * its bottom halves.  Running here, no handler or bottom half of the queue
 * is half-way through; after this, none will start.
 */
static void xen_block_queue_detach_bh(void *opaque)
{
    XenBlockQueue *q = opaque;

    xen_device_set_event_channel_context(q->dp->xendev, q->channel, NULL,
                                         &error_abort);
    g_clear_pointer(&q->process_bh, qemu_bh_delete);
    g_clear_pointer(&q->retry_bh, qemu_bh_delete);
}

static void xen_block_queue_stop(XenBlockQueue *q)
{
    XenDevice *xendev = q->dp->xendev;
    XenBlockRequest *r, *next;

    if (q->channel) {
        xen_device_unbind_event_channel(xendev, q->channel, NULL);
        q->channel = NULL;
    }
    /* Parked requests die with the ring: there is no one to answer. */
    QTAILQ_FOREACH_SAFE(r, &q->parked, parked_entry, next) {
        QTAILQ_REMOVE(&q->parked, r, parked_entry);
        q->inflight--;
    }
    g_assert(q->inflight == 0);
    /* Bottom halves of a queue that failed to start were never used. */
    g_clear_pointer(&q->process_bh, qemu_bh_delete);
    g_clear_pointer(&q->retry_bh, qemu_bh_delete);
    if (q->sring) {
        xen_device_unmap_grant_refs(xendev, q->sring, q->ring_ref,
                                    q->nr_ring_ref, NULL);
        q->sring = NULL;
    }
    xen_block_queue_free(q);
    trace_xen_block_queue_stop(q, q->index);
}

/* ---- The dataplane ---- */

XenBlockDataPlane *xen_block_dataplane_create(XenDevice *xendev,
                                              BlockBackend *blk,
                                              IOThread *iothread)
{
    XenBlockDataPlane *dp = g_new0(XenBlockDataPlane, 1);

    dp->xendev = xendev;
    dp->blk = blk;
    dp->iothread = iothread;
    if (iothread) {
        object_ref(OBJECT(iothread));
        dp->ctx = iothread_get_aio_context(iothread);
    } else {
        dp->ctx = qemu_get_aio_context();
    }
    dp->vmstate = qemu_add_vm_change_state_handler(
        xen_block_dataplane_vm_state, dp);
    trace_xen_block_dataplane_create(dp);
    return dp;
}

void xen_block_dataplane_set_ring_error_cb(XenBlockDataPlane *dp,
                                           XenBlockRingErrorFunc *cb,
                                           void *opaque)
{
    g_assert(!dp->ring_error_bh);
    dp->ring_error_bh = qemu_bh_new(cb, opaque);
}

void xen_block_dataplane_destroy(XenBlockDataPlane *dp)
{
    if (!dp) {
        return;
    }
    xen_block_dataplane_stop(dp);
    g_clear_pointer(&dp->ring_error_bh, qemu_bh_delete);
    qemu_del_vm_change_state_handler(dp->vmstate);
    if (dp->iothread) {
        object_unref(OBJECT(dp->iothread));
    }
    trace_xen_block_dataplane_destroy(dp);
    g_free(dp);
}

bool xen_block_dataplane_start(XenBlockDataPlane *dp,
                               const XenBlkifLimits *limits,
                               XenBlkifAbi abi,
                               const XenBlockQueueConfig *queues,
                               unsigned int nr_queues,
                               Error **errp)
{
    ERRP_GUARD();
    XenDevice *xendev = dp->xendev;
    unsigned int nr_refs = 0;

    g_assert(!dp->started && nr_queues > 0);
    dp->limits = *limits;
    dp->abi = abi;
    for (unsigned int i = 0; i < nr_queues; i++) {
        nr_refs += queues[i].nr_ring_ref;
    }
    xen_device_set_max_grant_refs(xendev, nr_refs, errp);
    if (*errp) {
        return false;
    }
    if (dp->iothread &&
        blk_set_aio_context(dp->blk, dp->ctx, errp) < 0) {
        return false;
    }
    dp->queues = g_new0(XenBlockQueue, nr_queues);
    dp->nr_queues = nr_queues;
    for (unsigned int i = 0; i < nr_queues; i++) {
        dp->queues[i].dp = dp;
        dp->queues[i].index = i;
        if (!xen_block_queue_start(&dp->queues[i], &queues[i], errp)) {
            dp->started = true;     /* so that stop undoes what was done */
            xen_block_dataplane_stop(dp);
            return false;
        }
    }
    dp->started = true;
    /* Hand each queue to its AioContext, and look at its ring once. */
    for (unsigned int i = 0; i < nr_queues; i++) {
        XenBlockQueue *q = &dp->queues[i];

        xen_device_set_event_channel_context(xendev, q->channel, q->ctx,
                                             &error_abort);
        /* Requests may have been published before we listened. */
        qemu_bh_schedule(q->process_bh);
    }
    trace_xen_block_dataplane_start(dp, xen_blkif_abi_name(abi), nr_queues);
    return true;
}

void xen_block_dataplane_stop(XenBlockDataPlane *dp)
{
    if (!dp || !dp->started) {
        return;
    }
    trace_xen_block_dataplane_stop(dp);
    /* blk_drain() below calls our drained_begin/end: they must stay off. */
    dp->stopping = true;
    /*
     * First make sure no queue handler runs any more (in its own thread),
     * then wait for every request in flight: their completions still write
     * responses into rings that are mapped until the very end.
     */
    for (unsigned int i = 0; i < dp->nr_queues; i++) {
        XenBlockQueue *q = &dp->queues[i];

        if (q->channel) {
            aio_wait_bh_oneshot(q->ctx, xen_block_queue_detach_bh, q);
        }
    }
    blk_drain(dp->blk);
    for (unsigned int i = 0; i < dp->nr_queues; i++) {
        xen_block_queue_stop(&dp->queues[i]);
    }
    g_clear_pointer(&dp->queues, g_free);
    dp->nr_queues = 0;
    if (dp->iothread) {
        blk_set_aio_context(dp->blk, qemu_get_aio_context(), &error_abort);
    }
    dp->started = false;
    dp->stopping = false;
}

void xen_block_dataplane_resize(XenBlockDataPlane *dp, uint64_t disk_sectors)
{
    /*
     * Only the main loop writes this and queues only read it: a request
     * racing with a resize sees the old or the new size, both of which
     * the block layer accepts.
     */
    qatomic_set(&dp->limits.disk_sectors, disk_sectors);
}

void xen_block_dataplane_drained_begin(XenBlockDataPlane *dp)
{
    if (!dp || !dp->started || dp->stopping) {
        return;
    }
    for (unsigned int i = 0; i < dp->nr_queues; i++) {
        XenBlockQueue *q = &dp->queues[i];

        xen_device_set_event_channel_context(dp->xendev, q->channel, NULL,
                                             &error_abort);
    }
}

void xen_block_dataplane_drained_end(XenBlockDataPlane *dp)
{
    if (!dp || !dp->started || dp->stopping) {
        return;
    }
    for (unsigned int i = 0; i < dp->nr_queues; i++) {
        XenBlockQueue *q = &dp->queues[i];

        xen_device_set_event_channel_context(dp->xendev, q->channel, q->ctx,
                                             &error_abort);
        qemu_bh_schedule(q->process_bh);
    }
}

bool xen_block_dataplane_get_stats(XenBlockDataPlane *dp, unsigned int queue,
                                   XenBlockQueueStats *stats)
{
    if (!dp || !dp->started || queue >= dp->nr_queues) {
        return false;
    }
    *stats = dp->queues[queue].stats;
    return true;
}

unsigned int xen_block_dataplane_nr_queues(XenBlockDataPlane *dp)
{
    return dp && dp->started ? dp->nr_queues : 0;
}
