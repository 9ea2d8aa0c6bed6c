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
 *   get      a free XenBlockRequest of the queue (one per ring slot,
 *            preallocated at start with room for the largest request)
 *   parse    copy the ring slot once, decode and validate the copy; for an
 *            indirect request, copy its descriptor pages once and validate
 *   buffers  a place for each segment's data (xen-block-grants.c): a
 *            persistent mapping of the guest page, or a pool page; when
 *            the pool is short, the request waits its turn
 *   submit   bring write data in (grant copy); the I/O, in a runner
 *            coroutine that takes the queue's submitted requests in turn
 *   complete the I/O returned: for reads, copy data out; error policy
 *   respond  the response on the ring, published in batches
 *   put      back on the free list
 *
 * Nothing on this path allocates, once persistent grants are mapped and
 * the thread's coroutine pool is warm, or takes a lock of ours; the block
 * layer's own (request tracking, the accounting's statistics) are per
 * disk, shared by its queues.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/coroutine-tls.h"
#include "qemu/defer-call.h"
#include "qemu/error-report.h"
#include "qemu/event_notifier.h"
#include "qemu/log.h"
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "block/aio-wait.h"
#include "block/accounting.h"
#include "system/block-backend.h"
#include "system/runstate.h"
#include "hw/xen/xen-bus.h"
#include "hw/xen/xen_backend_ops.h"
#include "hw/block/dataplane/xen-block.h"
#include "hw/block/dataplane/xen-block-grants.h"
#include "trace.h"

/*
 * Pages for copied data, per queue: enough for every slot of a small ring
 * to carry a full direct request, capped for large rings and indirect
 * requests (which then wait for each other rather than pin more memory).
 */
#define XEN_BLOCK_POOL_PAGES_MAX    4096    /* 16 MiB */

/*
 * Responses are published in batches: at the end of a pass over the ring
 * (or of a batch of completions), and, during a pass, every this many on
 * the way.  The frontend then starts on the first responses (and sends
 * new requests, which the same pass picks up) while we work on the rest,
 * instead of the two taking turns on a whole ring's worth; and it is
 * notified at most once per batch.  Not in completion batches: those end
 * soon anyway, and the extra notifications cost the frontend CPU that
 * slow storage shares with it (2 queues on tmpfs: p99 +7%).  4 KiB reads
 * at iodepth 32 on null-co went from 0.75M to 1.28M IOPS with 16 (8:
 * 1.24M; 1, a push per response: 1.12M and a notification for most;
 * docs/bench.rst).  Publishing once half of what is in flight is done
 * (for two queues, whose rings hold 16 each) was slower too.
 */
#define XEN_BLOCK_PUBLISH_BATCH     16

/*
 * When the I/O completes at once, a pass over the ring starts the
 * requests it parsed in batches of this many, each batch run by one
 * coroutine (see xen_block_queue_run_starts()): the first ones start
 * before the whole ring is parsed, and their responses go out on the
 * way.  When it yields (real storage), each request starts as soon as it
 * is parsed, so that the storage works while we parse the next: waiting
 * for a batch cost 3% of 4 KiB reads on tmpfs (aio=threads).
 */
#define XEN_BLOCK_START_BATCH       16

typedef struct XenBlockQueue XenBlockQueue;
typedef struct XenBlockRequest XenBlockRequest;
typedef QTAILQ_HEAD(XenBlockRequestList, XenBlockRequest) XenBlockRequestList;

struct XenBlockRequest {
    XenBlockQueue *q;
    XenBlkifRequest req;            /* our private copy, decoded */
    const XenBlkifSegment *segs;    /* req.seg, or indirect_segs */
    XenBlkifSegment *indirect_segs; /* room for max_segs */
    unsigned int nr_segs;
    uint64_t nr_sectors;            /* data length, 512-byte units */
    int16_t status;
    bool flushed;                   /* flush with data: the flush is done */
    bool written;                   /* barrier: the data is written */
    bool has_bufs;
    XenBlockSegBuf *bufs;           /* room for max_segs */
    struct iovec *iov;              /* room for max_segs: qiov's vector */
    QEMUIOVector qiov;
    BlockAcctCookie acct;
    QLIST_ENTRY(XenBlockRequest) free_entry;
    QTAILQ_ENTRY(XenBlockRequest) wait_entry;   /* waiting or parked */
    QSIMPLEQ_ENTRY(XenBlockRequest) start_entry;
};

struct XenBlockQueue {
    XenBlockDataPlane *dp;
    unsigned int index;
    IOThread *iothread;
    AioContext *ctx;
    xenevtchn_handle *xeh;          /* the queue's own event channel */
    evtchn_port_t local_port;
    bool bound;
    EventNotifier notifier;         /* xeh's fd, for the AioContext */
    void *sring;
    unsigned int nr_ring_ref;
    uint32_t ring_ref[1u << XEN_BLKIF_MAX_RING_PAGE_ORDER];
    XenBlkifBackRing ring;
    QEMUBH *process_bh;             /* look at the ring again */
    QEMUBH *retry_bh;               /* resubmit parked requests */
    QEMUBH *start_bh;               /* run what a yielded runner left;
                                       kept through detach (see there) */
    bool ring_broken;               /* corruption seen: consume no more */
    bool detached;                  /* being torn down: start nothing new */
    bool push_pending;              /* responses written, not published */
    unsigned int max_segs;
    XenBlockRequest *requests;
    void *seg_room;                 /* every request's per-segment arrays */
    XenBlockGrants *grants;
    uint8_t *indirect_pages;        /* one request's descriptor pages */
    XenDeviceGrantCopySegment *copy_scratch;    /* room for max_segs */
    unsigned int inflight;          /* consumed, not yet answered */
    unsigned int io_running;        /* requests submitted, not finished */
    /* Submitted, for a runner to take (xen_block_queue_run_starts()). */
    QSIMPLEQ_HEAD(, XenBlockRequest) to_start;
    unsigned int nr_to_start;
    unsigned int start_batch;       /* a pass starts this many at once */
    bool runner_done;               /* set by a runner that ran dry, for
                                       the run_starts() that entered it */
    bool idle;                      /* io_running was 0: see stop() */
    unsigned int unpublished;       /* responses written since the push */
    bool in_pass;                   /* consuming the ring right now */
    bool polling;                   /* the IOThread watches req_prod */
    QLIST_HEAD(, XenBlockRequest) free_list;
    XenBlockRequestList waiting;    /* for pool pages */
    XenBlockRequestList parked;     /* werror/rerror=stop */
    /*
     * A write barrier waits for every earlier request to finish and the
     * ring is not consumed further until it is done.
     */
    XenBlockRequest *barrier_waiting;
    bool barrier_active;
    XenBlockQueueStats *stats;      /* dp->stats[index]: outlives us */
};

struct XenBlockDataPlane {
    XenDevice *xendev;
    BlockBackend *blk;
    XenBlockDataPlaneConfig config;
    XenBlockQueue *queues;
    unsigned int nr_queues;
    /* Counters per queue index, kept across reconnections. */
    XenBlockQueueStats *stats;
    char **stats_where;             /* IOThread id (or main-loop) last used */
    unsigned int nr_stats;
    bool started;
    bool stopping;                  /* queues detached, draining */
    XenBlockLogLimiter log_limiter; /* shared by the queues: atomics */
    QEMUBH *ring_error_bh;          /* tells the device model, main loop */
    QEMUBH *resize_bh;              /* ... of a resize, in the main loop */
    VMChangeStateEntry *vmstate;
    XenBlockResizeFunc *resize_cb;
    void *resize_opaque;
};

#define GUEST_ERROR_INTERVAL_MS 1000

/*
 * The first message, then at most one line a second per device (whichever
 * queue wins the race logs): a guest must not be able to flood the host's
 * log, whether with its own mistakes or with the host's failures it can
 * make us retry.  Guest mistakes go to -d guest_errors, the host's
 * failures to error_report().
 */
static void G_GNUC_PRINTF(4, 0)
xen_block_log_limited(XenBlockLogLimiter *limiter, bool guest,
                      const char *dev, const char *fmt, va_list ap)
{
    /* modulo 2^32, and never 0, which stands for "never logged" */
    uint32_t now = MAX((uint32_t)qemu_clock_get_ms(QEMU_CLOCK_REALTIME), 1);
    uint32_t last = qatomic_read(&limiter->last_ms);
    g_autofree char *msg = NULL;
    g_autofree char *more = NULL;
    unsigned int suppressed;

    /* The difference is wrap-safe in 32 bits. */
    if ((last && now - last < GUEST_ERROR_INTERVAL_MS) ||
        qatomic_cmpxchg(&limiter->last_ms, last, now) != last) {
        qatomic_inc(&limiter->suppressed);
        return;
    }
    suppressed = qatomic_xchg(&limiter->suppressed, 0);
    msg = g_strdup_vprintf(fmt, ap);
    more = suppressed ? g_strdup_printf(" (and %u more since)", suppressed)
                      : g_strdup("");
    if (guest) {
        qemu_log_mask(LOG_GUEST_ERROR, "xen-block %s: %s%s\n",
                      dev, msg, more);
    } else {
        error_report("xen-block %s: %s%s", dev, msg, more);
    }
}

void xen_block_guest_error(XenBlockLogLimiter *limiter, const char *dev,
                           const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    xen_block_log_limited(limiter, true, dev, fmt, ap);
    va_end(ap);
}

void xen_block_host_error(XenBlockLogLimiter *limiter, const char *dev,
                          const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    xen_block_log_limited(limiter, false, dev, fmt, ap);
    va_end(ap);
}

static const char *xen_block_queue_name(XenBlockQueue *q)
{
    return q->dp->xendev->name;
}

static void xen_block_queue_guest_error(XenBlockQueue *q, XenBlockRequest *r,
                                        const char *what)
{
    xen_block_guest_error(&q->dp->log_limiter, xen_block_queue_name(q),
                          "queue %u: request 0x%" PRIx64 " (operation %u): %s",
                          q->index, r->req.id, r->req.operation, what);
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
    q->unpublished = 0;
    if (xen_blkif_ring_push_responses(&q->ring)) {
        q->stats->notifications++;
        qemu_xen_evtchn_notify(q->xeh, q->local_port);
    } else {
        q->stats->notifications_suppressed++;
    }
}

static void xen_block_queue_start_waiting(XenBlockQueue *q);
static void xen_block_request_start_barrier(XenBlockRequest *r);

static void xen_block_request_respond(XenBlockRequest *r)
{
    XenBlockQueue *q = r->q;
    bool was_barrier = q->barrier_active &&
                       r->req.op == BLKIF_OP_WRITE_BARRIER;

    trace_xen_block_request_respond(r, r->req.id, r->req.op, r->status);
    if (r->has_bufs) {
        xen_block_grants_release(q->grants, r->bufs, r->nr_segs);
        r->has_bufs = false;
    }
    xen_blkif_ring_put_response(&q->ring, r->req.id, r->req.op, r->status);
    q->push_pending = true;
    q->inflight--;
    QLIST_INSERT_HEAD(&q->free_list, r, free_entry);
    if (++q->unpublished >= XEN_BLOCK_PUBLISH_BATCH && q->in_pass) {
        xen_block_queue_push(q);
    }
    /* The rest: once, at the end of the current defer_call section. */
    defer_call(xen_block_queue_push, q);
    if (q->detached) {
        /*
         * The queue is being torn down: start nothing more (requests
         * waiting for buffers or for a barrier are dropped by stop), and
         * its ring and retry bottom halves are gone.
         */
        return;
    }
    xen_block_queue_start_waiting(q);
    if (was_barrier) {
        q->barrier_active = false;
        qemu_bh_schedule(q->process_bh);    /* consume the ring again */
    } else if (q->barrier_waiting && q->inflight == 1) {
        /* Everything before the barrier is done: now the barrier. */
        XenBlockRequest *barrier = q->barrier_waiting;

        q->barrier_waiting = NULL;
        xen_block_request_start_barrier(barrier);
    }
}

/* ---- Submission and completion ---- */

static void xen_block_request_submit(XenBlockRequest *r);

static bool xen_block_request_is_read(XenBlockRequest *r)
{
    return r->req.op == BLKIF_OP_READ;
}

static bool xen_block_request_is_flush(XenBlockRequest *r)
{
    return r->req.op == BLKIF_OP_FLUSH_DISKCACHE ||
           r->req.op == BLKIF_OP_WRITE_BARRIER;
}

/*
 * Whether the current stage of @r writes its data: a write, or the middle
 * stage of a flush with data or a barrier (flush, write, and for a
 * barrier flush again).  xen_block_request_do_io() and the accounting
 * both go by it.
 */
static bool xen_block_request_writing_data(XenBlockRequest *r)
{
    switch (r->req.op) {
    case BLKIF_OP_WRITE:
        return true;
    case BLKIF_OP_FLUSH_DISKCACHE:
    case BLKIF_OP_WRITE_BARRIER:
        return r->flushed && !r->written;
    default:
        return false;
    }
}

/* An operation of the protocol's (an unknown one has no accounting type). */
static bool xen_block_request_op_known(XenBlockRequest *r)
{
    switch (r->req.op) {
    case BLKIF_OP_READ:
    case BLKIF_OP_WRITE:
    case BLKIF_OP_WRITE_BARRIER:
    case BLKIF_OP_FLUSH_DISKCACHE:
    case BLKIF_OP_DISCARD:
        return true;
    default:
        return false;
    }
}

/* What the current stage of @r is, for the accounting. */
static enum BlockAcctType xen_block_request_acct_type(XenBlockRequest *r)
{
    switch (r->req.op) {
    case BLKIF_OP_READ:
        return BLOCK_ACCT_READ;
    case BLKIF_OP_DISCARD:
        return BLOCK_ACCT_UNMAP;
    default:
        return xen_block_request_writing_data(r) ? BLOCK_ACCT_WRITE
                                                 : BLOCK_ACCT_FLUSH;
    }
}

/* ... and how many sectors it moves (a flush: none, as virtio-blk's). */
static uint64_t xen_block_request_acct_sectors(XenBlockRequest *r)
{
    if (r->req.op == BLKIF_OP_DISCARD) {
        return r->req.nr_sectors;
    }
    if (xen_block_request_is_read(r) || xen_block_request_writing_data(r)) {
        return r->nr_sectors;
    }
    return 0;
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
        QTAILQ_INSERT_TAIL(&q->parked, r, wait_entry);
    } else {
        r->status = action == BLOCK_ERROR_ACTION_IGNORE ? BLKIF_RSP_OKAY
                                                        : BLKIF_RSP_ERROR;
    }
    blk_error_action(blk, action, is_read, error);
    return action == BLOCK_ERROR_ACTION_STOP;
}

static void xen_block_request_enqueue(XenBlockRequest *r);

/* The block layer is done with the current stage of @r: what next. */
static void coroutine_fn xen_block_request_complete(XenBlockRequest *r,
                                                    int ret)
{
    XenBlockQueue *q = r->q;
    BlockAcctStats *stats = blk_get_stats(q->dp->blk);
    Error *local_err = NULL;

    defer_call_begin();
    if (ret < 0) {
        block_acct_failed(stats, &r->acct);
        if (xen_block_request_io_error(r, -ret)) {
            goto out;       /* parked */
        }
        /*
         * Reported, or a read whose error is ignored (there is no data to
         * give back): answer.  Any other error ignored is one stage's: the
         * request goes on as if the stage had worked, so that the data of
         * a flush or barrier is still written.
         */
        if (r->status != BLKIF_RSP_OKAY || xen_block_request_is_read(r)) {
            xen_block_request_respond(r);
            goto out;
        }
    } else {
        block_acct_done(stats, &r->acct);
    }

    /* A flush with data: now write the data. */
    if (xen_block_request_is_flush(r) && r->nr_segs && !r->flushed) {
        r->flushed = true;
        xen_block_request_submit(r);
        goto out;
    }
    /* A barrier's data is on stable storage only after a second flush. */
    if (r->req.op == BLKIF_OP_WRITE_BARRIER && r->nr_segs && !r->written) {
        r->written = true;
        xen_block_request_submit(r);
        goto out;
    }
    if (xen_block_request_is_read(r) &&
        !xen_block_grants_copy(q->grants, r->segs, r->bufs, r->nr_segs, true,
                               q->copy_scratch, &local_err)) {
        /* The guest revoked or never gave us a grant: its mistake. */
        xen_block_queue_guest_error(q, r, error_get_pretty(local_err));
        error_free(local_err);
        r->status = BLKIF_RSP_ERROR;
    }
    xen_block_request_respond(r);
out:
    defer_call_end();
}

static int coroutine_fn xen_block_request_rw_part(BlockBackend *blk,
                                                  bool write, int64_t offset,
                                                  QEMUIOVector *qiov)
{
    return write ? blk_co_pwritev(blk, offset, qiov->size, qiov, 0)
                 : blk_co_preadv(blk, offset, qiov->size, qiov, 0);
}

/*
 * Read or write @r's data.  The host's preadv/pwritev take at most the
 * node's max_iov vectors (IOV_MAX: 1024 on Linux), and the block layer
 * does not split a longer vector: a request with more segments (up to
 * 4096 with indirect descriptors) goes in parts of whole segments, one
 * after the other, as blkback splits one into several bios.
 */
static int coroutine_fn xen_block_request_rw(XenBlockRequest *r, bool write,
                                             int64_t offset)
{
    BlockBackend *blk = r->q->dp->blk;
    int max_iov = blk_bs(blk) ? blk_get_max_iov(blk) : 0;

    if (max_iov <= 0 || r->qiov.niov <= max_iov) {
        return xen_block_request_rw_part(blk, write, offset, &r->qiov);
    }
    for (int first = 0; first < r->qiov.niov; first += max_iov) {
        QEMUIOVector part;
        int ret;

        qemu_iovec_init_external(&part, r->iov + first,
                                 MIN(max_iov, r->qiov.niov - first));
        ret = xen_block_request_rw_part(blk, write, offset, &part);
        if (ret < 0) {
            return ret;
        }
        offset += part.size;
    }
    return 0;
}

/* The block layer call that does the current stage of @r. */
static int coroutine_fn xen_block_request_do_io(XenBlockRequest *r)
{
    BlockBackend *blk = r->q->dp->blk;
    int64_t offset = (int64_t)r->req.sector << XEN_BLKIF_SECTOR_SHIFT;

    switch (r->req.op) {
    case BLKIF_OP_READ:
        return xen_block_request_rw(r, false, offset);
    case BLKIF_OP_FLUSH_DISKCACHE:
    case BLKIF_OP_WRITE_BARRIER:
        /*
         * Flush first; the data (if any) follows once it is done, and a
         * barrier's data is flushed again once written.
         */
        if (!xen_block_request_writing_data(r)) {
            return blk_co_flush(blk);
        }
        /* fall through */
    case BLKIF_OP_WRITE:
        return xen_block_request_rw(r, true, offset);
    case BLKIF_OP_DISCARD:
        return blk_co_pdiscard(blk, offset,
                               (int64_t)r->req.nr_sectors <<
                               XEN_BLKIF_SECTOR_SHIFT, 0);
    default:
        g_assert_not_reached();     /* parse let nothing else through */
    }
}

/*
 * QEMU's coroutine pool keeps a thread's idle coroutines in batches and
 * frees a batch when its last coroutine is taken.  When every request
 * completes at once (null-co, reads of unallocated qcow2 clusters), one
 * runner coroutine is alive at a time and the pool swings between one
 * idle coroutine and none: a batch is freed and allocated again for
 * every runner (with a coroutine per request, that was about 5% of a
 * 4 KiB read's CPU at iodepth 32, 10% with two queues, from malloc and
 * free).  So, once per thread, leave this many idle coroutines in the
 * pool: it then never runs dry, and grows as usual when more requests
 * are in flight at once.
 */
#define XEN_BLOCK_COROUTINE_RESERVE 2

QEMU_DEFINE_STATIC_CO_TLS(bool, coroutine_reserve_made);

static void coroutine_fn xen_block_reserve_co(void *opaque)
{
    qemu_coroutine_yield();     /* alive until all of them are */
}

static void xen_block_make_coroutine_reserve(void)
{
    Coroutine *co[XEN_BLOCK_COROUTINE_RESERVE];

    if (get_coroutine_reserve_made()) {
        return;
    }
    set_coroutine_reserve_made(true);
    for (unsigned int i = 0; i < ARRAY_SIZE(co); i++) {
        co[i] = qemu_coroutine_create(xen_block_reserve_co, NULL);
        qemu_coroutine_enter(co[i]);
    }
    for (unsigned int i = 0; i < ARRAY_SIZE(co); i++) {
        qemu_coroutine_enter(co[i]);    /* it ends: back to the pool */
    }
}

/*
 * The I/O runs in coroutines (blk_co_*()) rather than through
 * blk_aio_*(): no AIOCB to allocate and, when the I/O completes at once,
 * no bottom half per request: the response is written in the same pass
 * over the ring and published with the others.
 *
 * Not a coroutine per request, though: creating, entering and ending one
 * cost about a seventh of a 4 KiB read's CPU on null-co.  Submitted
 * requests go on the queue's to_start list and a runner coroutine takes
 * them one after the other, so that when the I/O completes at once
 * (null-co, cached data, unallocated clusters) one runner does a whole
 * batch.  When a request's I/O yields, the runner goes back to whoever
 * entered it, who enters a new runner for the rest: no request waits for
 * another's I/O.  A runner resumed by its I/O finishes that request and
 * takes what is left, if anything.
 */
static void coroutine_fn xen_block_runner_co(void *opaque)
{
    XenBlockQueue *q = opaque;
    XenBlockRequest *r;

    while ((r = QSIMPLEQ_FIRST(&q->to_start))) {
        QSIMPLEQ_REMOVE_HEAD(&q->to_start, start_entry);
        q->nr_to_start--;
        /* From here: the time spent waiting for earlier ones is not I/O. */
        block_acct_start(blk_get_stats(q->dp->blk), &r->acct,
                         xen_block_request_acct_sectors(r) <<
                         XEN_BLKIF_SECTOR_SHIFT,
                         xen_block_request_acct_type(r));
        xen_block_request_complete(r, xen_block_request_do_io(r));
        /*
         * stop() waits for this to reach zero, from a bottom half in this
         * thread (xen_block_queue_check_idle_bh()): it cannot see it
         * before this runner yields or ends.
         */
        q->io_running--;
    }
    q->runner_done = true;
}

/*
 * Run every submitted request, from outside any coroutine, in the queue's
 * context.  Each runner takes at least one request before it can yield,
 * so this ends.  Whether the last runner ran dry or yielded tells the
 * pass how many requests to start at once (XEN_BLOCK_START_BATCH); a
 * runner resumed in between may blur that, which only costs a batch.
 */
static void xen_block_queue_run_starts(XenBlockQueue *q)
{
    g_assert(!qemu_in_coroutine());
    g_assert(qemu_get_current_aio_context() == q->ctx);
    while (!QSIMPLEQ_EMPTY(&q->to_start)) {
        xen_block_make_coroutine_reserve();
        q->runner_done = false;
        qemu_aio_coroutine_enter(q->ctx,
                                 qemu_coroutine_create(xen_block_runner_co,
                                                       q));
        q->start_batch = q->runner_done ? XEN_BLOCK_START_BATCH : 1;
    }
}

/* What a runner left when its I/O yielded. */
static void xen_block_queue_start_bh(void *opaque)
{
    /* Their submissions and responses go out together, as in a pass. */
    defer_call_begin();
    xen_block_queue_run_starts(opaque);
    defer_call_end();
}

/* Run the current stage of @r: now, or soon (see the runners above). */
static void xen_block_request_enqueue(XenBlockRequest *r)
{
    XenBlockQueue *q = r->q;

    q->io_running++;
    QSIMPLEQ_INSERT_TAIL(&q->to_start, r, start_entry);
    q->nr_to_start++;
    if (q->in_pass) {
        return;     /* the pass runs them in batches, and at its end */
    }
    if (qemu_in_coroutine()) {
        /*
         * A completion in a runner, outside a pass (a next stage, a
         * request that waited for buffers or a barrier): the runner takes
         * @r next, unless its own I/O yields first; then the bottom half
         * does.
         */
        qemu_bh_schedule(q->start_bh);
        return;
    }
    xen_block_queue_run_starts(q);
}

/* Start (or restart, after a stop) the I/O of a request. */
static void xen_block_request_submit(XenBlockRequest *r)
{
    r->status = BLKIF_RSP_OKAY;
    trace_xen_block_request_submit(r, r->req.id, r->req.op, r->req.sector,
                                   xen_block_request_acct_sectors(r));
    xen_block_request_enqueue(r);
}

/*
 * A request with data has its buffers: point the I/O vector at them,
 * bring write data in, and go.
 */
static void xen_block_request_start_io(XenBlockRequest *r)
{
    XenBlockQueue *q = r->q;
    Error *local_err = NULL;

    for (unsigned int i = 0; i < r->nr_segs; i++) {
        const XenBlkifSegment *s = &r->segs[i];

        r->iov[i].iov_base = r->bufs[i].data;
        r->iov[i].iov_len = (s->last_sect - s->first_sect + 1) *
                            XEN_BLKIF_SECTOR_SIZE;
    }
    qemu_iovec_init_external(&r->qiov, r->iov, r->nr_segs);
    if (!xen_block_request_is_read(r) &&
        !xen_block_grants_copy(q->grants, r->segs, r->bufs, r->nr_segs,
                               false, q->copy_scratch, &local_err)) {
        /* A grant the guest revoked or never gave: its mistake. */
        xen_block_queue_guest_error(q, r, error_get_pretty(local_err));
        error_free(local_err);
        q->stats->invalid++;
        block_acct_invalid(blk_get_stats(q->dp->blk),
                           xen_block_request_acct_type(r));
        r->status = BLKIF_RSP_ERROR;
        xen_block_request_respond(r);
        return;
    }
    xen_block_request_submit(r);
}

/* Buffers for @r now, or a place in the queue for them. */
static void xen_block_request_start_data(XenBlockRequest *r)
{
    XenBlockQueue *q = r->q;

    /* First come, first served: nobody overtakes a waiting request. */
    if (!QTAILQ_EMPTY(&q->waiting) ||
        !xen_block_grants_acquire(q->grants, r->segs, r->nr_segs, r->bufs)) {
        q->stats->waits_for_buffers++;
        QTAILQ_INSERT_TAIL(&q->waiting, r, wait_entry);
        return;
    }
    r->has_bufs = true;
    xen_block_request_start_io(r);
}

/* Buffers came back: start the requests that waited for them. */
static void xen_block_queue_start_waiting(XenBlockQueue *q)
{
    XenBlockRequest *r;

    while ((r = QTAILQ_FIRST(&q->waiting)) &&
           xen_block_grants_acquire(q->grants, r->segs, r->nr_segs,
                                    r->bufs)) {
        QTAILQ_REMOVE(&q->waiting, r, wait_entry);
        r->has_bufs = true;
        xen_block_request_start_io(r);
    }
}

/* ---- Parsing ---- */

static void xen_block_request_reject(XenBlockRequest *r,
                                     XenBlkifVerdict verdict)
{
    XenBlockQueue *q = r->q;

    r->status = xen_blkif_verdict_status(verdict);
    q->stats->invalid++;
    trace_xen_block_request_invalid(r, r->req.id, r->req.operation,
                                    xen_blkif_verdict_name(verdict));
    xen_block_queue_guest_error(q, r, xen_blkif_verdict_name(verdict));
    if (xen_block_request_op_known(r)) {
        block_acct_invalid(blk_get_stats(q->dp->blk),
                           xen_block_request_acct_type(r));
    }
    xen_block_request_respond(r);
}

/*
 * Copy an indirect request's descriptor pages once and validate the
 * segments they hold.
 */
static XenBlkifVerdict xen_block_request_read_indirect(XenBlockRequest *r)
{
    XenBlockQueue *q = r->q;
    unsigned int pages = xen_blkif_indirect_pages(r->req.nr_segments);
    Error *local_err = NULL;

    if (!xen_block_grants_read_pages(q->grants, r->req.indirect_gref, pages,
                                     q->indirect_pages, q->copy_scratch,
                                     &local_err)) {
        xen_block_queue_guest_error(q, r, error_get_pretty(local_err));
        error_free(local_err);
        return XEN_BLKIF_BAD_SEGMENT;
    }
    return xen_blkif_parse_indirect(&q->dp->config.limits, &r->req,
                                    q->indirect_pages, r->indirect_segs);
}

/* Copy slot @idx out of the ring, check it, and start it. */
static void xen_block_request_parse(XenBlockRequest *r, uint32_t idx)
{
    XenBlockQueue *q = r->q;
    const XenBlkifLimits *limits = &q->dp->config.limits;
    XenBlkifVerdict verdict;

    xen_blkif_copy_request(q->dp->config.abi, q->sring, q->ring.size, idx,
                           &r->req);
    r->segs = r->req.seg;
    r->nr_segs = 0;
    r->nr_sectors = 0;
    r->flushed = false;
    r->written = false;
    q->stats->requests++;
    trace_xen_block_request_parse(r, r->req.id, r->req.operation,
                                  r->req.sector, r->req.nr_segments);

    verdict = xen_blkif_validate(limits, &r->req);
    if (verdict == XEN_BLKIF_OK && r->req.operation == BLKIF_OP_INDIRECT) {
        verdict = xen_block_request_read_indirect(r);
        r->segs = r->indirect_segs;
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
    /* Validation checked the segments; this only sums their length. */
    xen_blkif_check_segments(limits, &r->req, r->segs, r->nr_segs,
                             &r->nr_sectors);
    q->stats->segments += r->nr_segs;
    if (r->req.op == BLKIF_OP_WRITE_BARRIER) {
        if (q->inflight > 1) {
            q->barrier_waiting = r;     /* after the requests before it */
            return;
        }
        xen_block_request_start_barrier(r);
        return;
    }
    if (r->nr_segs == 0) {
        xen_block_request_submit(r);    /* an empty flush */
        return;
    }
    xen_block_request_start_data(r);
}

/*
 * A write barrier, once every earlier request is done: flush, write the
 * data, flush again; the ring waits until it is answered.
 */
static void xen_block_request_start_barrier(XenBlockRequest *r)
{
    r->q->barrier_active = true;
    if (r->nr_segs == 0) {
        xen_block_request_submit(r);
        return;
    }
    xen_block_request_start_data(r);
}

/* ---- The ring ---- */

static void xen_block_queue_ring_broken(XenBlockQueue *q)
{
    XenBlockDataPlane *dp = q->dp;

    q->ring_broken = true;
    trace_xen_block_queue_ring_broken(q, q->index);
    /*
     * Once per ring, as we never look at this ring again; and through the
     * device's limiter, as a frontend can break a ring per reconnection.
     */
    xen_block_guest_error(&dp->log_limiter, xen_block_queue_name(q),
                          "queue %u: producer index out of range; ring "
                          "stopped until the frontend reconnects", q->index);
    if (dp->ring_error_bh) {
        qemu_bh_schedule(dp->ring_error_bh);
    }
}

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
    q->stats->ring_scans++;
    defer_call_begin();
    q->in_pass = true;
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
        while (pending && budget && !QLIST_EMPTY(&q->free_list) &&
               !q->barrier_waiting && !q->barrier_active) {
            XenBlockRequest *r = QLIST_FIRST(&q->free_list);

            QLIST_REMOVE(r, free_entry);
            q->inflight++;
            xen_block_request_parse(r, q->ring.req_cons++);
            pending--;
            budget--;
            consumed++;
            if (q->nr_to_start >= q->start_batch) {
                xen_block_queue_run_starts(q);
            }
        }
        if (!budget) {
            /*
             * Come back from a bottom half rather than asking the frontend
             * for a notification: it believes we are busy, and we are.
             */
            qemu_bh_schedule(q->process_bh);
            break;
        }
        if (q->barrier_waiting || q->barrier_active) {
            break;      /* the barrier's completion brings us back */
        }
        if (pending) {
            /*
             * No free request for a published one: the ring check rules
             * this out, and looping on it would never end.
             */
            xen_block_queue_ring_broken(q);
            break;
        }
        /*
         * While the IOThread polls, leave req_event behind: the frontend
         * need not notify, we are watching.  poll_end re-arms it.
         */
        if (q->polling || !xen_blkif_ring_final_check(&q->ring)) {
            break;
        }
    }
    xen_block_queue_run_starts(q);
    q->in_pass = false;
    defer_call_end();
    trace_xen_block_queue_process(q, q->index, consumed);
    return consumed > 0;
}

static void xen_block_queue_process_bh(void *opaque)
{
    XenBlockQueue *q = opaque;

    /*
     * Also the first pass after the handler is (re)attached: a handler
     * removed while the IOThread polled never saw poll_end, and this
     * pass must ask for events again.  Outside that case, clearing the
     * flag only lets the frontend notify while we poll.
     */
    q->polling = false;
    xen_block_queue_process(q);
}

/* ---- The event channel, in the queue's AioContext ---- */

/*
 * Each queue binds its event channel itself, not through xen-bus: xen-bus
 * registers its handler with a poll function but no poll-ready callback,
 * which the AioContext drops, and one handler that cannot be polled turns
 * polling off for the whole IOThread (so upstream's xen-block has never
 * polled since QEMU 7.0).  Here the IOThread's adaptive polling
 * (poll-max-ns) works: before it sleeps, it watches the ring for a while
 * and catches the frontend's next requests without a notification.
 */

static void xen_block_queue_evtchn_read(EventNotifier *n)
{
    XenBlockQueue *q = container_of(n, XenBlockQueue, notifier);
    int port = qemu_xen_evtchn_pending(q->xeh);

    if (port >= 0 && port == q->local_port) {
        xen_block_queue_process(q);
        qemu_xen_evtchn_unmask(q->xeh, port);
    }
}

/*
 * Whether a pass would consume anything: cheap, no side effects, called
 * in a loop while the IOThread polls.  A corrupt producer index counts
 * as work, so that the pass that follows declares the ring broken.
 */
static bool xen_block_queue_evtchn_poll(void *opaque)
{
    XenBlockQueue *q = container_of(opaque, XenBlockQueue, notifier);
    unsigned int pending;

    if (q->ring_broken || q->barrier_waiting || q->barrier_active) {
        return false;
    }
    return !xen_blkif_ring_pending(&q->ring, &pending) || pending;
}

/*
 * Poll begin and end: while the IOThread polls, passes do not ask for
 * notifications (as virtio turns queue notifications off); before it
 * sleeps, ask again.  The AioContext polls once more after poll_end, so
 * requests published in between are not missed.
 */
static void xen_block_queue_evtchn_poll_begin(EventNotifier *n)
{
    container_of(n, XenBlockQueue, notifier)->polling = true;
}

static void xen_block_queue_evtchn_poll_end(EventNotifier *n)
{
    XenBlockQueue *q = container_of(n, XenBlockQueue, notifier);

    q->polling = false;
    if (!q->ring_broken) {
        xen_blkif_ring_final_check(&q->ring);
    }
}

static void xen_block_queue_evtchn_poll_ready(EventNotifier *n)
{
    XenBlockQueue *q = container_of(n, XenBlockQueue, notifier);

    q->stats->polled_scans++;
    xen_block_queue_process(q);
}

static bool xen_block_queue_bind(XenBlockQueue *q, unsigned int port,
                                 Error **errp)
{
    int local = qemu_xen_evtchn_bind_interdomain(q->xeh,
                                             q->dp->xendev->frontend_id,
                                             port);
    if (local < 0) {
        error_setg_errno(errp, errno, "cannot bind event channel %u of "
                         "domain %u", port, q->dp->xendev->frontend_id);
        return false;
    }
    q->local_port = local;
    q->bound = true;
    event_notifier_init_fd(&q->notifier, qemu_xen_evtchn_fd(q->xeh));
    return true;
}

static void xen_block_queue_unbind(XenBlockQueue *q)
{
    if (q->bound) {
        qemu_xen_evtchn_unbind(q->xeh, q->local_port);
        q->bound = false;
    }
    if (q->xeh) {
        qemu_xen_evtchn_close(q->xeh);
        q->xeh = NULL;
    }
}

/* Start or stop reacting to the event channel in the queue's context. */
static void xen_block_queue_listen(XenBlockQueue *q, bool on)
{
    if (!q->bound) {
        return;
    }
    if (on) {
        aio_set_event_notifier(q->ctx, &q->notifier,
                               xen_block_queue_evtchn_read,
                               xen_block_queue_evtchn_poll,
                               xen_block_queue_evtchn_poll_ready);
        aio_set_event_notifier_poll(q->ctx, &q->notifier,
                                    xen_block_queue_evtchn_poll_begin,
                                    xen_block_queue_evtchn_poll_end);
    } else {
        aio_set_event_notifier(q->ctx, &q->notifier, NULL, NULL, NULL);
    }
}

/* ---- Error policy: resume parked requests when the VM runs again ---- */

static void xen_block_queue_retry_parked(void *opaque)
{
    XenBlockQueue *q = opaque;
    XenBlockRequestList retry = QTAILQ_HEAD_INITIALIZER(retry);
    XenBlockRequest *r;

    /*
     * Take the list first: a retry that fails again at once (before its
     * coroutine yields) is parked again, and must wait for the next cont,
     * not come round in this walk for ever.
     */
    while ((r = QTAILQ_FIRST(&q->parked))) {
        QTAILQ_REMOVE(&q->parked, r, wait_entry);
        QTAILQ_INSERT_TAIL(&retry, r, wait_entry);
    }
    defer_call_begin();
    while ((r = QTAILQ_FIRST(&retry))) {
        QTAILQ_REMOVE(&retry, r, wait_entry);
        trace_xen_block_request_retry(r, r->req.id);
        xen_block_request_submit(r);
    }
    defer_call_end();
}

static void xen_block_dataplane_vm_state(void *opaque, bool running,
                                         RunState state)
{
    XenBlockDataPlane *dp = opaque;

    if (!running || !dp->started || dp->stopping) {
        return;
    }
    for (unsigned int i = 0; i < dp->nr_queues; i++) {
        qemu_bh_schedule(dp->queues[i].retry_bh);
    }
}

/* ---- Setting a queue up and tearing it down ---- */

static unsigned int xen_block_queue_max_segs(XenBlockDataPlane *dp)
{
    return MAX(BLKIF_MAX_SEGMENTS_PER_REQUEST,
               MIN(dp->config.limits.max_indirect_segments,
                   XEN_BLKIF_MAX_INDIRECT_SEGMENTS));
}

/*
 * What one request needs per segment, for up to @max_segs segments: where
 * each segment's data is, the I/O vector over them, and (if indirect
 * requests are offered) the decoded descriptors.
 */
static size_t xen_block_request_seg_room(unsigned int max_segs, bool indirect)
{
    size_t room = max_segs * (sizeof(XenBlockSegBuf) + sizeof(struct iovec));

    if (indirect) {
        room += max_segs * sizeof(XenBlkifSegment);
    }
    return QEMU_ALIGN_UP(room, sizeof(uint64_t));
}

/*
 * The per-segment arrays of all the ring's requests, in one allocation:
 * sized for the largest request (256 segments) on every slot of the ring
 * (up to 512), that is megabytes per queue, of which a request touches
 * only what its segments use, and only requests that are ever in flight
 * (the free list is LIFO).  Allocated apart, each array's malloc header
 * alone would make nearly all of it resident (5.4 MiB per disk).
 */
static bool xen_block_queue_alloc_seg_room(XenBlockQueue *q, bool indirect)
{
    size_t room = xen_block_request_seg_room(q->max_segs, indirect);
    uint8_t *p;

    q->seg_room = g_try_malloc((size_t)q->ring.size * room);
    if (!q->seg_room) {
        return false;
    }
    p = q->seg_room;
    for (unsigned int i = 0; i < q->ring.size; i++, p += room) {
        XenBlockRequest *r = &q->requests[i];

        r->bufs = (XenBlockSegBuf *)p;
        r->iov = (struct iovec *)(r->bufs + q->max_segs);
        r->indirect_segs = indirect ?
                           (XenBlkifSegment *)(r->iov + q->max_segs) : NULL;
    }
    return true;
}

static bool xen_block_queue_alloc(XenBlockQueue *q, Error **errp)
{
    XenBlockDataPlane *dp = q->dp;
    unsigned int size = q->ring.size, pool_pages;
    bool indirect = dp->config.limits.max_indirect_segments > 0;

    q->max_segs = xen_block_queue_max_segs(dp);
    /* Room for at least two of the largest requests, whatever the ring. */
    pool_pages = MIN(size * q->max_segs,
                     MAX(XEN_BLOCK_POOL_PAGES_MAX, 2 * q->max_segs));
    q->grants = xen_block_grants_new(dp->xendev, q->ctx, pool_pages,
                                     dp->config.persistent ?
                                     dp->config.max_persistent_grants : 0,
                                     q->stats);
    q->requests = g_try_new0(XenBlockRequest, size);
    q->copy_scratch = g_try_new0(XenDeviceGrantCopySegment, q->max_segs);
    if (indirect) {
        q->indirect_pages = g_try_malloc(
            xen_blkif_indirect_pages(q->max_segs) * XEN_BLKIF_PAGE_SIZE);
    }
    if (!q->grants || !q->requests || !q->copy_scratch ||
        (indirect && !q->indirect_pages) ||
        !xen_block_queue_alloc_seg_room(q, indirect)) {
        error_setg(errp, "cannot allocate buffers for a ring of %u "
                   "requests of up to %u segments", size, q->max_segs);
        return false;
    }
    QLIST_INIT(&q->free_list);
    QTAILQ_INIT(&q->waiting);
    QTAILQ_INIT(&q->parked);
    QSIMPLEQ_INIT(&q->to_start);
    q->start_batch = 1;
    for (unsigned int i = 0; i < size; i++) {
        XenBlockRequest *r = &q->requests[i];

        r->q = q;
        QLIST_INSERT_HEAD(&q->free_list, r, free_entry);
    }
    return true;
}

static void xen_block_queue_free(XenBlockQueue *q)
{
    g_clear_pointer(&q->seg_room, g_free);
    g_clear_pointer(&q->requests, g_free);
    g_clear_pointer(&q->grants, xen_block_grants_free);
    g_clear_pointer(&q->copy_scratch, g_free);
    g_clear_pointer(&q->indirect_pages, g_free);
}

static bool xen_block_queue_start(XenBlockQueue *q,
                                  const XenBlockQueueConfig *cfg,
                                  bool *guest_fault, Error **errp)
{
    XenBlockDataPlane *dp = q->dp;
    XenDevice *xendev = dp->xendev;

    q->iothread = cfg->iothread;
    q->ctx = cfg->iothread ? iothread_get_aio_context(cfg->iothread)
                           : qemu_get_aio_context();
    q->nr_ring_ref = cfg->nr_ring_ref;
    memcpy(q->ring_ref, cfg->ring_ref, sizeof(uint32_t) * cfg->nr_ring_ref);

    /*
     * The event channel handle is the host's (a failure is logged as the
     * host's, not the guest's): open it before using what the frontend
     * gave, so that running out of file descriptors is not taken for a
     * bad ring by an implementation that needs one to map it.
     */
    q->xeh = qemu_xen_evtchn_open();
    if (!q->xeh) {
        error_setg_errno(errp, errno, "cannot open the event channel device");
        return false;
    }
    q->sring = xen_device_map_grant_refs(xendev, q->ring_ref, q->nr_ring_ref,
                                         PROT_READ | PROT_WRITE, errp);
    if (!q->sring) {
        *guest_fault = true;
        return false;
    }
    if (!xen_blkif_back_ring_init(&q->ring, q->sring, q->nr_ring_ref,
                                  dp->config.abi)) {
        *guest_fault = true;
        error_setg(errp, "no ring of %u pages", q->nr_ring_ref);
        return false;
    }
    if (!xen_block_queue_alloc(q, errp)) {
        return false;
    }
    q->process_bh = aio_bh_new(q->ctx, xen_block_queue_process_bh, q);
    q->retry_bh = aio_bh_new(q->ctx, xen_block_queue_retry_parked, q);
    q->start_bh = aio_bh_new(q->ctx, xen_block_queue_start_bh, q);
    /*
     * Nobody listens yet: the port starts pending, and the queue is only
     * handed to its context once every queue has started, or a later
     * queue's failure would have stop() poll the main loop and serve this
     * one there while its IOThread tears it down.
     */
    if (!xen_block_queue_bind(q, cfg->event_channel, errp)) {
        *guest_fault = true;
        return false;
    }
    trace_xen_block_queue_start(q, q->index, q->nr_ring_ref, q->ring.size,
                                cfg->event_channel);
    return true;
}

/*
 * In the queue's AioContext: stop reacting to its event channel and drop
 * its ring and retry bottom halves.  Running here, no handler or bottom
 * half of the queue is half-way through; after this, none of those will
 * start.  start_bh stays: a request's next stage, submitted from its
 * completion, must still run; check_idle_bh() deletes it once nothing
 * can.
 */
static void xen_block_queue_detach_bh(void *opaque)
{
    XenBlockQueue *q = opaque;

    q->detached = true;
    xen_block_queue_listen(q, false);
    g_clear_pointer(&q->process_bh, qemu_bh_delete);
    g_clear_pointer(&q->retry_bh, qemu_bh_delete);
    if (q->grants) {
        xen_block_grants_detach(q->grants);
    }
}

/* Requests that will never be answered: there is no ring to answer on. */
static void xen_block_queue_drop(XenBlockQueue *q, XenBlockRequestList *list)
{
    XenBlockRequest *r, *next;

    QTAILQ_FOREACH_SAFE(r, list, wait_entry, next) {
        QTAILQ_REMOVE(list, r, wait_entry);
        if (r->has_bufs) {
            xen_block_grants_release(q->grants, r->bufs, r->nr_segs);
            r->has_bufs = false;
        }
        q->inflight--;
    }
}

static void xen_block_queue_stop(XenBlockQueue *q)
{
    xen_block_queue_unbind(q);
    if (q->requests) {
        xen_block_queue_drop(q, &q->parked);
        xen_block_queue_drop(q, &q->waiting);
    }
    if (q->barrier_waiting) {
        q->barrier_waiting = NULL;
        q->inflight--;
    }
    g_assert(q->inflight == 0);
    /* Bottom halves of a queue that failed to start were never used. */
    g_clear_pointer(&q->process_bh, qemu_bh_delete);
    g_clear_pointer(&q->retry_bh, qemu_bh_delete);
    /* Gone in check_idle_bh(), unless the queue never started. */
    g_clear_pointer(&q->start_bh, qemu_bh_delete);
    xen_block_queue_free(q);
    if (q->sring) {
        xen_device_unmap_grant_refs(q->dp->xendev, q->sring, q->ring_ref,
                                    q->nr_ring_ref, NULL);
        q->sring = NULL;
    }
    trace_xen_block_queue_stop(q, q->index);
}

/* ---- The dataplane ---- */

static void xen_block_dataplane_drained_begin(XenBlockDataPlane *dp);
static void xen_block_dataplane_drained_end(XenBlockDataPlane *dp);

static void xen_block_dataplane_resize_bh(void *opaque)
{
    XenBlockDataPlane *dp = opaque;

    dp->resize_cb(dp->resize_opaque);
}

/*
 * The block layer's callbacks go to the dataplane, which owns the I/O:
 * drains pause the queues; a resize goes on to the device model, in the
 * main loop: the truncate may run in the disk's IOThread (block_resize
 * does), and the device model writes xenstore under the BQL.
 */
static void xen_block_dataplane_blk_resized(void *opaque)
{
    XenBlockDataPlane *dp = opaque;

    if (qemu_in_main_thread()) {
        xen_block_dataplane_resize_bh(dp);
    } else {
        qemu_bh_schedule(dp->resize_bh);
    }
}

static void xen_block_dataplane_blk_drained_begin(void *opaque)
{
    xen_block_dataplane_drained_begin(opaque);
}

static void xen_block_dataplane_blk_drained_end(void *opaque)
{
    xen_block_dataplane_drained_end(opaque);
}

static const BlockDevOps xen_block_dataplane_blk_ops = {
    .resize_cb = xen_block_dataplane_blk_resized,
    .drained_begin = xen_block_dataplane_blk_drained_begin,
    .drained_end = xen_block_dataplane_blk_drained_end,
};

XenBlockDataPlane *xen_block_dataplane_create(XenDevice *xendev,
                                              BlockBackend *blk,
                                              XenBlockResizeFunc *resize_cb,
                                              void *resize_opaque)
{
    XenBlockDataPlane *dp = g_new0(XenBlockDataPlane, 1);

    dp->xendev = xendev;
    dp->blk = blk;
    dp->resize_cb = resize_cb;
    dp->resize_opaque = resize_opaque;
    dp->resize_bh = qemu_bh_new(xen_block_dataplane_resize_bh, dp);
    dp->vmstate = qemu_add_vm_change_state_handler(
        xen_block_dataplane_vm_state, dp);
    blk_set_dev_ops(blk, &xen_block_dataplane_blk_ops, dp);
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
    blk_set_dev_ops(dp->blk, NULL, NULL);
    g_clear_pointer(&dp->ring_error_bh, qemu_bh_delete);
    g_clear_pointer(&dp->resize_bh, qemu_bh_delete);
    qemu_del_vm_change_state_handler(dp->vmstate);
    trace_xen_block_dataplane_destroy(dp);
    for (unsigned int i = 0; i < dp->nr_stats; i++) {
        g_free(dp->stats_where[i]);
    }
    g_free(dp->stats_where);
    g_free(dp->stats);
    g_free(dp);
}

bool xen_block_dataplane_start(XenBlockDataPlane *dp,
                               const XenBlockDataPlaneConfig *config,
                               const XenBlockQueueConfig *queues,
                               unsigned int nr_queues,
                               bool *guest_fault, Error **errp)
{
    ERRP_GUARD();
    XenDevice *xendev = dp->xendev;
    unsigned int nr_refs = 0;

    g_assert(!dp->started && nr_queues > 0);
    dp->config = *config;
    for (unsigned int i = 0; i < nr_queues; i++) {
        nr_refs += queues[i].nr_ring_ref;
        if (config->persistent) {
            nr_refs += config->max_persistent_grants;
        }
    }
    xen_device_set_max_grant_refs(xendev, nr_refs, errp);
    if (*errp) {
        return false;
    }
    /*
     * The block layer takes requests from any AioContext; its home is
     * that of the first queue.
     */
    if (queues[0].iothread &&
        blk_set_aio_context(dp->blk,
                            iothread_get_aio_context(queues[0].iothread),
                            errp) < 0) {
        return false;
    }
    dp->queues = g_new0(XenBlockQueue, nr_queues);
    dp->nr_queues = nr_queues;
    if (nr_queues > dp->nr_stats) {
        dp->stats = g_renew(XenBlockQueueStats, dp->stats, nr_queues);
        dp->stats_where = g_renew(char *, dp->stats_where, nr_queues);
        memset(&dp->stats[dp->nr_stats], 0,
               sizeof(*dp->stats) * (nr_queues - dp->nr_stats));
        memset(&dp->stats_where[dp->nr_stats], 0,
               sizeof(char *) * (nr_queues - dp->nr_stats));
        dp->nr_stats = nr_queues;
    }
    for (unsigned int i = 0; i < nr_queues; i++) {
        g_free(dp->stats_where[i]);
        dp->stats_where[i] = g_strdup(queues[i].iothread ?
            object_get_canonical_path_component(OBJECT(queues[i].iothread)) :
            "main-loop");
    }
    dp->started = true;     /* from here, stop() undoes what was done */
    for (unsigned int i = 0; i < nr_queues; i++) {
        dp->queues[i].dp = dp;
        dp->queues[i].index = i;
        dp->queues[i].stats = &dp->stats[i];
        if (!xen_block_queue_start(&dp->queues[i], &queues[i], guest_fault,
                                   errp)) {
            xen_block_dataplane_stop(dp);
            return false;
        }
    }
    /* Hand each queue to its AioContext, and look at its ring once. */
    for (unsigned int i = 0; i < nr_queues; i++) {
        XenBlockQueue *q = &dp->queues[i];

        xen_block_queue_listen(q, true);
        /* Requests may have been published before we listened. */
        qemu_bh_schedule(q->process_bh);
    }
    trace_xen_block_dataplane_start(dp, xen_blkif_abi_name(config->abi),
                                    nr_queues);
    return true;
}

static void xen_block_queue_check_idle_bh(void *opaque)
{
    XenBlockQueue *q = opaque;

    q->idle = q->io_running == 0;
    if (q->idle) {
        /*
         * Detached and idle: nothing can submit any more.  Delete start_bh
         * here, in its own thread: it may be pending in the same batch of
         * bottom halves as this one, and must not run once stop() frees
         * the queue.  Deleted here, it is skipped.
         */
        g_clear_pointer(&q->start_bh, qemu_bh_delete);
    }
}

/*
 * Has every submitted request of every queue finished?  blk_drain() alone
 * does not say: a request leaves the block layer's count when its I/O
 * returns, before its coroutine writes the response, and that completion
 * may start another stage or a request that waited for buffers.  Asked
 * in each queue's AioContext, between two of its handlers.
 */
static bool xen_block_dataplane_io_idle(XenBlockDataPlane *dp)
{
    bool idle = true;

    for (unsigned int i = 0; i < dp->nr_queues; i++) {
        XenBlockQueue *q = &dp->queues[i];

        if (!q->ctx) {
            continue;       /* never started: no requests */
        }
        aio_wait_bh_oneshot(q->ctx, xen_block_queue_check_idle_bh, q);
        idle &= q->idle;
    }
    return idle;
}

/*
 * Give the disk back to the main loop.  That fails while another user
 * holds its node in the IOThread (an export pinned there, a block job, the
 * temporary BlockBackend of a block_resize): the disk then stays, which is
 * harmless (the block layer takes requests from any thread), and the next
 * start asks again for the context it needs.  A guest may disconnect at
 * any of those moments: no abort here.
 */
static void xen_block_dataplane_return_blk(XenBlockDataPlane *dp)
{
    Error *local_err = NULL;

    if (blk_get_aio_context(dp->blk) != qemu_get_aio_context() &&
        blk_set_aio_context(dp->blk, qemu_get_aio_context(),
                            &local_err) < 0) {
        trace_xen_block_dataplane_keep_context(dp,
                                               error_get_pretty(local_err));
        error_free(local_err);
    }
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
     * responses into rings that are mapped until the very end.  A request
     * can start I/O again from its own completion, hence the loop.
     */
    for (unsigned int i = 0; i < dp->nr_queues; i++) {
        XenBlockQueue *q = &dp->queues[i];

        if (q->bound) {
            aio_wait_bh_oneshot(q->ctx, xen_block_queue_detach_bh, q);
        }
    }
    do {
        blk_drain(dp->blk);
    } while (!xen_block_dataplane_io_idle(dp));
    for (unsigned int i = 0; i < dp->nr_queues; i++) {
        xen_block_queue_stop(&dp->queues[i]);
    }
    /*
     * A broken ring's report, not run yet, is about this connection: it
     * must not close the next one (a frontend that reconnects at once).
     */
    if (dp->ring_error_bh) {
        qemu_bh_cancel(dp->ring_error_bh);
    }
    g_clear_pointer(&dp->queues, g_free);
    dp->nr_queues = 0;
    xen_block_dataplane_return_blk(dp);
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
    qatomic_set_u64(&dp->config.limits.disk_sectors, disk_sectors);
}

static void xen_block_dataplane_drained_begin(XenBlockDataPlane *dp)
{
    if (!dp || !dp->started || dp->stopping) {
        return;
    }
    for (unsigned int i = 0; i < dp->nr_queues; i++) {
        xen_block_queue_listen(&dp->queues[i], false);
    }
}

static void xen_block_dataplane_drained_end(XenBlockDataPlane *dp)
{
    if (!dp || !dp->started || dp->stopping) {
        return;
    }
    for (unsigned int i = 0; i < dp->nr_queues; i++) {
        XenBlockQueue *q = &dp->queues[i];

        xen_block_queue_listen(q, true);
        qemu_bh_schedule(q->process_bh);
    }
}

bool xen_block_dataplane_get_stats(XenBlockDataPlane *dp, unsigned int queue,
                                   XenBlockQueueStats *stats)
{
    if (!dp || queue >= dp->nr_stats) {
        return false;
    }
    /*
     * Main loop, while the queue may count in its thread: each field is
     * read whole, which is all a counter needs.
     */
    *stats = dp->stats[queue];
    return true;
}

void xen_block_dataplane_get_map_budget(uint32_t *budget,
                                        uint32_t *mapped)
{
    xen_block_grants_get_budget(budget, mapped);
}

unsigned int xen_block_dataplane_nr_queues(XenBlockDataPlane *dp)
{
    return dp ? dp->nr_stats : 0;
}

const char *xen_block_dataplane_queue_where(XenBlockDataPlane *dp,
                                           unsigned int queue)
{
    return dp && queue < dp->nr_stats ? dp->stats_where[queue] : NULL;
}
