/*
 * xenblk-front: the ideal responder -- a blkif backend that does the
 * grant copies a real backend must do, and nothing else
 *
 * Runs as dom0 in place of QEMU: watches /local/domain/0/backend/qdisk/<fe>
 * like a backend, offers every feature (multi-page rings, multi-queue,
 * indirect segments, persistent grants, discard, flush), and serves each
 * ring in its own thread.  Per batch of requests taken off a ring it makes
 * at most three grant-copy calls: indirect pages in, write data in, read
 * data out.  With persistent grants it maps each grant once and copies
 * with memcpy.  There is no storage unless --store: reads return zeros and
 * writes are dropped; with --store, data lives in an anonymous mapping the
 * size of the disk, and grant copies go straight to and from it.
 *
 * It validates requests as DESIGN.md section 6 says a backend must, so it
 * doubles as the reference for the hostile cases.
 *
 * Threads: the main thread owns xenstore and the device states; each queue
 * thread owns its ring, its event channel handle and its grant cache, and
 * reports a corrupt ring to the main thread through an eventfd.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <errno.h>
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenstore.h>

#include "blkif-abi.h"
#include "ideal.h"
#include "loadgen.h"
#include "xs-util.h"

#define IDEAL_MAX_QUEUES        16
#define IDEAL_MAX_SEGS          (XB_MAX_INDIRECT_PAGES * \
                                 XB_SEGS_PER_INDIRECT_PAGE)
#define IDEAL_PGRANT_CAP        65536   /* persistent grants per queue */
/*
 * Requests taken off the ring per batch: the responses of one batch are
 * published while the next is served, so a frontend that is looking for
 * them sends new requests meanwhile instead of waiting for the whole ring
 * (our QEMU publishes every 16 responses of a pass the same way).
 */
#define IDEAL_BATCH             16

typedef struct IdealConfig {
    unsigned int fe_domid;
    bool store;
    uint64_t size;              /* bytes, 0 = from the image or 64 MiB */
    unsigned int sector_size;
    unsigned int physical_sector_size;
    unsigned int max_ring_page_order;
    unsigned int max_queues;
    unsigned int max_indirect;
    bool persistent;
    bool discard;
    bool discard_secure;
    bool flush;
    const char *ready_file;
    int ready_fd;
    bool verbose;
} IdealConfig;

typedef struct IdealDev IdealDev;

/* A request as the queue sees it, after its one copy out of the ring. */
typedef struct IdealReq {
    XbRequest req;
    uint8_t op;                 /* effective: indirect resolved */
    unsigned int nsegs;
    XbSegment *segs;            /* into the queue's segment array */
    int16_t status;
    bool indirect_ok;
} IdealReq;

typedef struct IdealQueue {
    IdealDev *dev;
    unsigned int index;
    pthread_t thread;
    bool running;
    xenevtchn_handle *xce;
    xengnttab_handle *xgt;
    evtchn_port_t port;
    XbSring *sring;
    unsigned int pages;
    unsigned int size;
    uint32_t req_cons;
    uint32_t rsp_prod_pvt;
    int stop_fd;
    bool dead;                  /* ring corrupt: no more service */
    /* per batch scratch, sized at connect time */
    IdealReq *batch;
    XbSegment *segs;
    uint8_t *ind_pages;         /* IDEAL_MAX_SEGS / 512 per request */
    xengnttab_grant_copy_segment_t *copy;
    GHashTable *pgrants;        /* gref -> mapping, persistent mode */
    /* counters */
    uint64_t requests;
    uint64_t batches;
    uint64_t copy_calls;
    uint64_t notifies;
} IdealQueue;

struct IdealDev {
    IdealConfig *cfg;
    char *name;                 /* devnum */
    char *be_path;
    char *fe_path;
    char *fe_token;
    unsigned int fe_domid;
    uint64_t sectors;
    bool readonly;
    bool connected;
    bool refused;               /* last connect attempt failed */
    int last_fe_state;
    const XbLayout *layout;
    bool use_persistent;
    unsigned int nr_queues;
    IdealQueue queues[IDEAL_MAX_QUEUES];
    uint8_t *store;
    uint64_t store_reserved;    /* bytes mapped: room to grow */
    int corrupt_fd;             /* queue threads -> main: ring corrupt */
};

static struct xs_handle *xsh;
static char *watch_dir;
static GHashTable *devices;     /* name -> IdealDev */
static uint8_t zero_page[XB_PAGE_SIZE] __attribute__((aligned(4096)));
static uint8_t scratch_page[XB_PAGE_SIZE] __attribute__((aligned(4096)));
static volatile sig_atomic_t quit;
static bool verbose;

static void logv(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void logv(const char *fmt, ...)
{
    va_list ap;

    if (!verbose) {
        return;
    }
    va_start(ap, fmt);
    fprintf(stderr, "ideal: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- Requests: validation ---- */

static bool segs_valid(const XbSegment *segs, unsigned int n,
                       uint64_t *nsect)
{
    *nsect = 0;
    for (unsigned int i = 0; i < n; i++) {
        if (segs[i].first_sect > segs[i].last_sect ||
            segs[i].last_sect >= XB_SECTORS_PER_PAGE) {
            return false;
        }
        *nsect += segs[i].last_sect - segs[i].first_sect + 1;
    }
    return true;
}

/* In the disk, and whole logical blocks. */
static bool range_valid(IdealDev *dev, uint64_t sector, uint64_t nsect)
{
    uint64_t lbs = dev->cfg->sector_size / XB_SECTOR_SIZE;

    return sector <= dev->sectors && nsect <= dev->sectors - sector &&
           sector % lbs == 0 && nsect % lbs == 0;
}

/* Status for a decoded data request, before any data moves. */
static int16_t check_data_request(IdealDev *dev, IdealReq *r)
{
    uint64_t nsect;

    if (r->op == XB_OP_WRITE || r->op == XB_OP_FLUSH_DISKCACHE) {
        if (dev->readonly) {
            return XB_RSP_ERROR;
        }
    }
    if (r->op == XB_OP_FLUSH_DISKCACHE && r->nsegs == 0) {
        return XB_RSP_OKAY;
    }
    if (!segs_valid(r->segs, r->nsegs, &nsect) ||
        !range_valid(dev, r->req.sector, nsect)) {
        return XB_RSP_ERROR;
    }
    return XB_RSP_OKAY;
}

static int16_t check_discard(IdealDev *dev, const XbRequest *req)
{
    if (!dev->cfg->discard) {
        return XB_RSP_EOPNOTSUPP;
    }
    if ((req->nr_segments & XB_DISCARD_SECURE) && !dev->cfg->discard_secure) {
        return XB_RSP_EOPNOTSUPP;
    }
    if (dev->readonly || !range_valid(dev, req->sector, req->nr_sectors)) {
        return XB_RSP_ERROR;
    }
    return XB_RSP_OKAY;
}

/*
 * First look at a request: decode what needs no grant.  Indirect requests
 * are left with indirect_ok set when their page list is worth fetching.
 */
static void classify(IdealQueue *q, IdealReq *r, XbSegment *segs)
{
    IdealDev *dev = q->dev;
    const XbRequest *req = &r->req;

    r->segs = segs;
    r->nsegs = 0;
    r->status = XB_RSP_OKAY;
    r->op = req->operation;
    r->indirect_ok = false;
    switch (req->operation) {
    case XB_OP_READ:
    case XB_OP_WRITE:
    case XB_OP_FLUSH_DISKCACHE:
        if (req->operation == XB_OP_FLUSH_DISKCACHE && !dev->cfg->flush) {
            r->status = XB_RSP_EOPNOTSUPP;
            break;
        }
        if ((req->operation != XB_OP_FLUSH_DISKCACHE &&
             req->nr_segments == 0) ||
            req->nr_segments > XB_MAX_SEGS_DIRECT) {
            r->status = XB_RSP_ERROR;
            break;
        }
        r->nsegs = req->nr_segments;
        memcpy(segs, req->seg, r->nsegs * sizeof(XbSegment));
        r->status = check_data_request(dev, r);
        break;
    case XB_OP_DISCARD:
        r->status = check_discard(dev, req);
        break;
    case XB_OP_INDIRECT:
        r->op = req->indirect_op;
        if (!dev->cfg->max_indirect) {
            r->status = XB_RSP_EOPNOTSUPP;
        } else if ((req->indirect_op != XB_OP_READ &&
                    req->indirect_op != XB_OP_WRITE) ||
                   req->indirect_nr_segments == 0 ||
                   req->indirect_nr_segments > dev->cfg->max_indirect) {
            r->status = XB_RSP_ERROR;
        } else {
            r->nsegs = req->indirect_nr_segments;
            r->indirect_ok = true;
        }
        break;
    default:                    /* barrier (not offered), unknown */
        r->status = XB_RSP_EOPNOTSUPP;
        break;
    }
}

/* ---- Requests: data movement ---- */

static uint8_t *store_at(IdealDev *dev, uint64_t sector)
{
    return dev->store + sector * XB_SECTOR_SIZE;
}

/* Copy every indirect page of the batch in: one grant-copy call. */
static void fetch_indirect_pages(IdealQueue *q, unsigned int n)
{
    unsigned int ncopy = 0;
    unsigned int per_req = IDEAL_MAX_SEGS / XB_SEGS_PER_INDIRECT_PAGE;

    for (unsigned int i = 0; i < n; i++) {
        IdealReq *r = &q->batch[i];
        unsigned int pages;

        if (!r->indirect_ok) {
            continue;
        }
        pages = DIV_ROUND_UP(r->nsegs, XB_SEGS_PER_INDIRECT_PAGE);
        for (unsigned int p = 0; p < pages; p++) {
            q->copy[ncopy++] = (xengnttab_grant_copy_segment_t) {
                .source.foreign = { .ref = r->req.indirect_grefs[p],
                                    .offset = 0,
                                    .domid = q->dev->fe_domid },
                .dest.virt = q->ind_pages +
                             ((size_t)i * per_req + p) * XB_PAGE_SIZE,
                .len = XB_PAGE_SIZE,
                .flags = GNTCOPY_source_gref,
            };
        }
    }
    if (!ncopy) {
        return;
    }
    xengnttab_grant_copy(q->xgt, ncopy, q->copy);
    q->copy_calls++;
    ncopy = 0;
    for (unsigned int i = 0; i < n; i++) {
        IdealReq *r = &q->batch[i];
        unsigned int pages;
        const uint8_t *base;

        if (!r->indirect_ok) {
            continue;
        }
        pages = DIV_ROUND_UP(r->nsegs, XB_SEGS_PER_INDIRECT_PAGE);
        for (unsigned int p = 0; p < pages; p++) {
            if (q->copy[ncopy++].status != GNTST_okay) {
                r->status = XB_RSP_ERROR;
            }
        }
        if (r->status != XB_RSP_OKAY) {
            continue;
        }
        base = q->ind_pages + (size_t)i * per_req * XB_PAGE_SIZE;
        for (unsigned int s = 0; s < r->nsegs; s++) {
            xb_decode_indirect_seg(base, s, &r->segs[s]);
        }
        r->status = check_data_request(q->dev, r);
    }
}

/* A persistent mapping of @gref, made on first use. */
static uint8_t *pgrant(IdealQueue *q, uint32_t gref)
{
    uint8_t *p = g_hash_table_lookup(q->pgrants, GUINT_TO_POINTER(gref));

    if (p) {
        return p;
    }
    if (g_hash_table_size(q->pgrants) >= IDEAL_PGRANT_CAP) {
        return NULL;
    }
    p = xengnttab_map_domain_grant_refs(q->xgt, 1, q->dev->fe_domid, &gref,
                                        PROT_READ | PROT_WRITE);
    if (p) {
        g_hash_table_insert(q->pgrants, GUINT_TO_POINTER(gref), p);
    }
    return p;
}

/* Where segment data lives on our side: the store, or zero/scratch. */
static uint8_t *local_buffer(IdealDev *dev, bool write, uint64_t sector)
{
    if (dev->store) {
        return store_at(dev, sector);
    }
    return write ? scratch_page : zero_page;
}

/* Persistent mode: memcpy through the cached mappings. */
static void move_data_persistent(IdealQueue *q, IdealReq *r, bool write)
{
    uint64_t sector = r->req.sector;

    for (unsigned int s = 0; s < r->nsegs; s++) {
        const XbSegment *seg = &r->segs[s];
        size_t len = (seg->last_sect - seg->first_sect + 1) * XB_SECTOR_SIZE;
        uint8_t *page = pgrant(q, seg->gref);
        uint8_t *local = local_buffer(q->dev, write, sector);

        if (!page) {
            r->status = XB_RSP_ERROR;
            return;
        }
        if (write) {
            memcpy(local, page + seg->first_sect * XB_SECTOR_SIZE, len);
        } else {
            memcpy(page + seg->first_sect * XB_SECTOR_SIZE, local, len);
        }
        sector += len / XB_SECTOR_SIZE;
    }
}

/* Add the copy segments of @r in direction @write; returns the count. */
static unsigned int add_copies(IdealQueue *q, IdealReq *r, bool write,
                               xengnttab_grant_copy_segment_t *c)
{
    uint64_t sector = r->req.sector;

    for (unsigned int s = 0; s < r->nsegs; s++) {
        const XbSegment *seg = &r->segs[s];
        uint16_t len = (seg->last_sect - seg->first_sect + 1) *
                       XB_SECTOR_SIZE;
        void *local = local_buffer(q->dev, write, sector);
        union xengnttab_copy_ptr guest = {
            .foreign = { .ref = seg->gref,
                         .offset = seg->first_sect * XB_SECTOR_SIZE,
                         .domid = q->dev->fe_domid },
        };

        c[s] = (xengnttab_grant_copy_segment_t) { .len = len };
        if (write) {
            c[s].source = guest;
            c[s].dest.virt = local;
            c[s].flags = GNTCOPY_source_gref;
        } else {
            c[s].dest = guest;
            c[s].source.virt = local;
            c[s].flags = GNTCOPY_dest_gref;
        }
        sector += len / XB_SECTOR_SIZE;
    }
    return r->nsegs;
}

static bool is_write(const IdealReq *r)
{
    return r->op == XB_OP_WRITE || r->op == XB_OP_FLUSH_DISKCACHE;
}

/* All data of one direction for the batch: one grant-copy call. */
static void move_data_copy(IdealQueue *q, unsigned int n, bool write)
{
    unsigned int ncopy = 0, k = 0;

    for (unsigned int i = 0; i < n; i++) {
        IdealReq *r = &q->batch[i];

        if (r->status == XB_RSP_OKAY && r->nsegs && is_write(r) == write) {
            ncopy += add_copies(q, r, write, &q->copy[ncopy]);
        }
    }
    if (!ncopy) {
        return;
    }
    xengnttab_grant_copy(q->xgt, ncopy, q->copy);
    q->copy_calls++;
    for (unsigned int i = 0; i < n; i++) {
        IdealReq *r = &q->batch[i];

        if (r->status != XB_RSP_OKAY || !r->nsegs || is_write(r) != write) {
            continue;
        }
        for (unsigned int s = 0; s < r->nsegs; s++) {
            if (q->copy[k++].status != GNTST_okay) {
                r->status = XB_RSP_ERROR;
            }
        }
    }
}

static void do_discard(IdealDev *dev, IdealReq *r)
{
    if (dev->store && r->status == XB_RSP_OKAY) {
        memset(store_at(dev, r->req.sector), 0,
               r->req.nr_sectors * XB_SECTOR_SIZE);
    }
}

static void serve_batch(IdealQueue *q, unsigned int n)
{
    fetch_indirect_pages(q, n);
    if (q->dev->use_persistent) {
        for (unsigned int i = 0; i < n; i++) {
            IdealReq *r = &q->batch[i];

            if (r->status == XB_RSP_OKAY && r->nsegs) {
                move_data_persistent(q, r, is_write(r));
            }
        }
    } else {
        move_data_copy(q, n, true);
        move_data_copy(q, n, false);
    }
    for (unsigned int i = 0; i < n; i++) {
        if (q->batch[i].req.operation == XB_OP_DISCARD) {
            do_discard(q->dev, &q->batch[i]);
        }
    }
}

static void respond_batch(IdealQueue *q, unsigned int n)
{
    const XbLayout *l = q->dev->layout;

    for (unsigned int i = 0; i < n; i++) {
        IdealReq *r = &q->batch[i];
        XbResponse rsp = { .id = r->req.id, .operation = r->op,
                           .status = r->status };

        xb_encode_response(l, &rsp,
                           xb_slot(q->sring, l, q->size, q->rsp_prod_pvt));
        q->rsp_prod_pvt++;
    }
    if (xb_back_push_responses(q->sring, q->rsp_prod_pvt)) {
        xenevtchn_notify(q->xce, q->port);
        q->notifies++;
    }
}

/* Take what is on the ring (one ring's worth at most); false if corrupt. */
static bool take_batch(IdealQueue *q, unsigned int *n)
{
    const XbLayout *l = q->dev->layout;
    uint32_t prod = xb_back_req_prod(q->sring);

    *n = 0;
    if ((uint32_t)(prod - q->req_cons) > q->size) {
        return false;
    }
    while (q->req_cons != prod && *n < MIN(q->size, IDEAL_BATCH)) {
        IdealReq *r = &q->batch[*n];

        /* The one copy of the request; everything after uses it. */
        xb_decode_request(l, xb_slot(q->sring, l, q->size, q->req_cons),
                          &r->req);
        q->req_cons++;
        classify(q, r, &q->segs[(size_t)*n * IDEAL_MAX_SEGS]);
        (*n)++;
    }
    return true;
}

static void report_corrupt(IdealQueue *q)
{
    uint64_t one = 1;

    q->dead = true;
    fprintf(stderr, "ideal: device %s queue %u: req_prod %u runs more than "
            "a ring ahead of %u; ring stopped\n", q->dev->name, q->index,
            q->sring->req_prod, q->req_cons);
    if (write(q->dev->corrupt_fd, &one, sizeof(one)) < 0) {
        /* the main thread sees it on the next event anyway */
    }
}

static void serve_ring(IdealQueue *q)
{
    unsigned int n;

    do {
        while (!q->dead) {
            if (!take_batch(q, &n)) {
                report_corrupt(q);
                return;
            }
            if (!n) {
                break;
            }
            q->requests += n;
            q->batches++;
            serve_batch(q, n);
            respond_batch(q, n);
        }
    } while (!q->dead && xb_back_final_check(q->sring, q->req_cons));
}

static void *queue_thread(void *opaque)
{
    IdealQueue *q = opaque;
    struct pollfd pfd[2] = {
        { .fd = xenevtchn_fd(q->xce), .events = POLLIN },
        { .fd = q->stop_fd, .events = POLLIN },
    };

    serve_ring(q);              /* requests queued before we bound */
    while (!pfd[1].revents) {
        if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
            break;
        }
        if (pfd[0].revents) {
            xenevtchn_port_or_error_t port;

            while ((port = xenevtchn_pending(q->xce)) >= 0) {
                xenevtchn_unmask(q->xce, port);
            }
            if (!q->dead) {
                serve_ring(q);
            }
        }
    }
    return NULL;
}

/* ---- Connecting a queue ---- */

static bool read_ring_refs(IdealDev *dev, const char *dir,
                           unsigned int pages, uint32_t *refs)
{
    uint64_t v;

    if (pages == 1) {
        if (!xsu_read_u64(xsh, dir, "ring-ref", &v) || v > UINT32_MAX) {
            return false;
        }
        refs[0] = v;
        return true;
    }
    for (unsigned int i = 0; i < pages; i++) {
        g_autofree char *node = g_strdup_printf("ring-ref%u", i);

        if (!xsu_read_u64(xsh, dir, node, &v) || v > UINT32_MAX) {
            return false;
        }
        refs[i] = v;
    }
    return true;
}

static void free_pgrant(gpointer key, gpointer value, gpointer opaque)
{
    IdealQueue *q = opaque;

    xengnttab_unmap(q->xgt, value, 1);
}

static void queue_disconnect(IdealQueue *q)
{
    uint64_t one = 1;

    if (q->running) {
        if (write(q->stop_fd, &one, sizeof(one)) < 0) {
            /* cannot happen with an eventfd below its limit */
        }
        pthread_join(q->thread, NULL);
        q->running = false;
    }
    if (q->pgrants) {
        g_hash_table_foreach(q->pgrants, free_pgrant, q);
        g_hash_table_destroy(q->pgrants);
    }
    if (q->sring) {
        xengnttab_unmap(q->xgt, q->sring, q->pages);
    }
    if (q->port > 0) {
        xenevtchn_unbind(q->xce, q->port);
    }
    if (q->xce) {
        xenevtchn_close(q->xce);
    }
    if (q->xgt) {
        xengnttab_close(q->xgt);
    }
    if (q->stop_fd > 0) {
        close(q->stop_fd);
    }
    g_free(q->batch);
    g_free(q->segs);
    g_free(q->copy);
    if (q->ind_pages) {
        munmap(q->ind_pages, (size_t)q->size *
               (IDEAL_MAX_SEGS / XB_SEGS_PER_INDIRECT_PAGE) * XB_PAGE_SIZE);
    }
    memset(q, 0, sizeof(*q));
}

static bool queue_alloc_scratch(IdealQueue *q)
{
    size_t ind = (size_t)q->size *
                 (IDEAL_MAX_SEGS / XB_SEGS_PER_INDIRECT_PAGE) * XB_PAGE_SIZE;

    q->batch = g_new0(IdealReq, q->size);
    q->segs = g_new0(XbSegment, (size_t)q->size * IDEAL_MAX_SEGS);
    q->copy = g_new0(xengnttab_grant_copy_segment_t,
                     (size_t)q->size * IDEAL_MAX_SEGS);
    /* Lazily backed: only pages that indirect requests touch cost. */
    q->ind_pages = mmap(NULL, ind, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (q->ind_pages == MAP_FAILED) {
        q->ind_pages = NULL;
        return false;
    }
    return true;
}

static bool queue_connect(IdealDev *dev, IdealQueue *q, unsigned int index,
                          const char *dir, unsigned int order, char **why)
{
    uint32_t refs[XB_MAX_RING_PAGES];
    uint64_t port;

    q->dev = dev;
    q->index = index;
    q->pages = 1u << order;
    if (!read_ring_refs(dev, dir, q->pages, refs)) {
        *why = g_strdup_printf("%s: ring-ref missing or not a number", dir);
        return false;
    }
    if (!xsu_read_u64(xsh, dir, "event-channel", &port) || port == 0 ||
        port > UINT32_MAX) {
        *why = g_strdup_printf("%s: event-channel missing or bad", dir);
        return false;
    }
    q->xce = xenevtchn_open(NULL, 0);
    q->xgt = xengnttab_open(NULL, 0);
    q->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (!q->xce || !q->xgt || q->stop_fd < 0 ||
        !xsu_set_nonblocking(xenevtchn_fd(q->xce))) {
        *why = g_strdup("cannot open evtchn/gnttab");
        return false;
    }
    q->sring = xengnttab_map_domain_grant_refs(q->xgt, q->pages,
                                               dev->fe_domid, refs,
                                               PROT_READ | PROT_WRITE);
    if (!q->sring) {
        *why = g_strdup_printf("%s: cannot map the ring", dir);
        return false;
    }
    q->port = xenevtchn_bind_interdomain(q->xce, dev->fe_domid, port);
    if ((int)q->port <= 0) {
        q->port = 0;
        *why = g_strdup_printf("%s: cannot bind event channel %" PRIu64,
                               dir, port);
        return false;
    }
    q->size = xb_ring_size(dev->layout, q->pages);
    q->pgrants = g_hash_table_new(g_direct_hash, g_direct_equal);
    if (!queue_alloc_scratch(q)) {
        *why = g_strdup("out of memory");
        return false;
    }
    return true;
}

/* ---- Connecting a device ---- */

static bool read_queue_count(IdealDev *dev, unsigned int *n, char **why)
{
    g_autofree char *s = xsu_read(xsh, dev->fe_path,
                                  "multi-queue-num-queues");
    uint64_t v;

    if (!s) {
        *n = 1;
        return true;
    }
    if (!xsu_read_u64(xsh, dev->fe_path, "multi-queue-num-queues", &v) ||
        v == 0 || v > dev->cfg->max_queues) {
        *why = g_strdup_printf("multi-queue-num-queues '%s' not in 1..%u", s,
                               dev->cfg->max_queues);
        return false;
    }
    *n = v;
    return true;
}

static bool read_ring_order(IdealDev *dev, unsigned int *order, char **why)
{
    g_autofree char *s = xsu_read(xsh, dev->fe_path, "ring-page-order");
    uint64_t v;

    if (!s) {
        *order = 0;
        return true;
    }
    if (!xsu_read_u64(xsh, dev->fe_path, "ring-page-order", &v) ||
        v > dev->cfg->max_ring_page_order) {
        *why = g_strdup_printf("ring-page-order '%s' over %u", s,
                               dev->cfg->max_ring_page_order);
        return false;
    }
    *order = v;
    return true;
}

static bool read_protocol(IdealDev *dev, char **why)
{
    g_autofree char *s = xsu_read(xsh, dev->fe_path, "protocol");
    XbAbi abi;

    if (!xb_abi_from_name(s, &abi)) {
        *why = g_strdup_printf("unknown protocol '%s'", s);
        return false;
    }
    dev->layout = xb_layout(abi);
    return true;
}

static void dev_disconnect(IdealDev *dev)
{
    for (unsigned int i = 0; i < IDEAL_MAX_QUEUES; i++) {
        if (dev->queues[i].dev) {
            queue_disconnect(&dev->queues[i]);
        }
    }
    if (dev->connected) {
        logv("%s: disconnected", dev->name);
    }
    dev->connected = false;
    dev->nr_queues = 0;
}

static bool dev_connect(IdealDev *dev, char **why)
{
    unsigned int nq, order;

    if (!read_queue_count(dev, &nq, why) ||
        !read_ring_order(dev, &order, why) || !read_protocol(dev, why)) {
        return false;
    }
    dev->use_persistent = dev->cfg->persistent &&
        xsu_read_u64_default(xsh, dev->fe_path, "feature-persistent", 0) == 1;
    for (unsigned int i = 0; i < nq; i++) {
        g_autofree char *dir = nq == 1 ? g_strdup(dev->fe_path)
                               : g_strdup_printf("%s/queue-%u",
                                                 dev->fe_path, i);

        if (!queue_connect(dev, &dev->queues[i], i, dir, order, why)) {
            dev_disconnect(dev);
            return false;
        }
    }
    dev->nr_queues = nq;
    for (unsigned int i = 0; i < nq; i++) {
        pthread_create(&dev->queues[i].thread, NULL, queue_thread,
                       &dev->queues[i]);
        dev->queues[i].running = true;
    }
    dev->connected = true;
    logv("%s: connected %s, %u queue(s) of %u page(s), persistent %d",
         dev->name, dev->layout->name, nq, 1u << order,
         dev->use_persistent);
    return true;
}

/* ---- Device lifecycle (xenstore) ---- */

static uint64_t disk_bytes(IdealDev *dev)
{
    g_autofree char *params = xsu_read(xsh, dev->be_path, "params");
    const char *colon = params ? strchr(params, ':') : NULL;
    FILE *f;
    long len;

    if (dev->cfg->size) {
        return dev->cfg->size;
    }
    f = colon ? fopen(colon + 1, "rb") : NULL;
    if (f && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) > 0) {
        fclose(f);
        return len;
    }
    if (f) {
        fclose(f);
    }
    return 64 << 20;
}

static void write_features(IdealDev *dev)
{
    const IdealConfig *c = dev->cfg;
    const char *p = dev->be_path;
    g_autofree char *mode = xsu_read(xsh, p, "mode");
    uint64_t bytes = disk_bytes(dev);

    dev->readonly = mode && !strcmp(mode, "r");
    dev->sectors = bytes / XB_SECTOR_SIZE;
    if (c->store && !dev->store) {
        /* Reserve four times the size (lazily backed) for online growth. */
        dev->store_reserved = bytes * 4;
        dev->store = mmap(NULL, dev->store_reserved, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (dev->store == MAP_FAILED) {
            dev->store = NULL;
        }
    }
    xsu_write(xsh, XBT_NULL, p, "feature-flush-cache", "%d", c->flush);
    xsu_write(xsh, XBT_NULL, p, "feature-discard", "%d", c->discard);
    if (c->discard) {
        xsu_write(xsh, XBT_NULL, p, "discard-granularity", "%u",
                  c->sector_size);
        xsu_write(xsh, XBT_NULL, p, "discard-alignment", "0");
        xsu_write(xsh, XBT_NULL, p, "discard-secure", "%d",
                  c->discard_secure);
    }
    xsu_write(xsh, XBT_NULL, p, "max-ring-page-order", "%u",
              c->max_ring_page_order);
    if (c->max_queues > 1) {
        xsu_write(xsh, XBT_NULL, p, "multi-queue-max-queues", "%u",
                  c->max_queues);
    }
    xsu_write(xsh, XBT_NULL, p, "feature-persistent", "%d", c->persistent);
    if (c->max_indirect) {
        xsu_write(xsh, XBT_NULL, p, "feature-max-indirect-segments", "%u",
                  c->max_indirect);
    }
    xsu_write(xsh, XBT_NULL, p, "sector-size", "%u", c->sector_size);
    xsu_write(xsh, XBT_NULL, p, "physical-sector-size", "%u",
              c->physical_sector_size);
    xsu_write(xsh, XBT_NULL, p, "sectors", "%" PRIu64, dev->sectors);
    xsu_write(xsh, XBT_NULL, p, "info", "%u", dev->readonly ? 4 : 0);
    xsu_write(xsh, XBT_NULL, p, "hotplug-status", "connected");
}

static IdealDev *dev_new(IdealConfig *cfg, const char *name)
{
    IdealDev *dev = g_new0(IdealDev, 1);

    dev->cfg = cfg;
    dev->name = g_strdup(name);
    dev->be_path = g_strdup_printf("%s/%s", watch_dir, name);
    dev->fe_path = xsu_read(xsh, dev->be_path, "frontend");
    dev->fe_domid = xsu_read_u64_default(xsh, dev->be_path, "frontend-id",
                                         cfg->fe_domid);
    dev->fe_token = g_strdup_printf("fe:%s", name);
    dev->last_fe_state = -1;
    dev->corrupt_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (dev->fe_path) {
        xs_watch(xsh, dev->fe_path, dev->fe_token);
    }
    return dev;
}

static void dev_free(gpointer p)
{
    IdealDev *dev = p;

    dev_disconnect(dev);
    if (dev->fe_path) {
        xs_unwatch(xsh, dev->fe_path, dev->fe_token);
    }
    if (dev->store) {
        munmap(dev->store, dev->store_reserved);
    }
    close(dev->corrupt_fd);
    g_free(dev->name);
    g_free(dev->be_path);
    g_free(dev->fe_path);
    g_free(dev->fe_token);
    g_free(dev);
}

static void set_state(IdealDev *dev, int state)
{
    logv("%s: backend state -> %d (%s)", dev->name, state,
         xsu_state_name(state));
    xsu_write_state(xsh, dev->be_path, state);
}

static bool any_queue_dead(IdealDev *dev)
{
    uint64_t v;

    if (read(dev->corrupt_fd, &v, sizeof(v)) == sizeof(v)) {
        return true;
    }
    for (unsigned int i = 0; i < dev->nr_queues; i++) {
        if (dev->queues[i].dead) {
            return true;
        }
    }
    return false;
}

static void on_frontend_ready(IdealDev *dev, int fe)
{
    g_autofree char *why = NULL;

    /* Try once per frontend transition into Initialised/Connected. */
    if (dev->connected || (dev->refused && fe == dev->last_fe_state)) {
        return;
    }
    if (dev_connect(dev, &why)) {
        dev->refused = false;
        set_state(dev, XB_STATE_CONNECTED);
    } else {
        dev->refused = true;
        fprintf(stderr, "ideal: %s: connection refused: %s\n", dev->name,
                why);
    }
}

/* One look at a device's nodes; returns false when it is gone. */
static bool dev_step(IdealDev *dev)
{
    int be = xsu_read_state(xsh, dev->be_path);
    bool online = xsu_read_u64_default(xsh, dev->be_path, "online", 0);
    int fe = dev->fe_path ? xsu_read_state(xsh, dev->fe_path) : 0;
    g_autofree char *frontend = xsu_read(xsh, dev->be_path, "frontend");
    uint64_t newsize;

    if (!frontend) {
        return false;           /* directory removed */
    }
    if (be == XB_STATE_INITIALISING && online) {
        write_features(dev);
        set_state(dev, XB_STATE_INITWAIT);
        be = XB_STATE_INITWAIT;
    }
    if (dev->connected && any_queue_dead(dev) && be == XB_STATE_CONNECTED) {
        set_state(dev, XB_STATE_CLOSING);
        be = XB_STATE_CLOSING;
    }
    if (dev->connected &&
        xsu_read_u64(xsh, dev->be_path, "ideal-resize", &newsize) &&
        newsize / XB_SECTOR_SIZE != dev->sectors &&
        (!dev->store || newsize <= dev->store_reserved)) {
        /* Online resize, told by the test through a private node.  (The
         * queue threads read dev->sectors unlocked: a request racing with
         * the resize sees the old or the new size, both fine here.) */
        dev->sectors = newsize / XB_SECTOR_SIZE;
        xsu_write(xsh, XBT_NULL, dev->be_path, "sectors", "%" PRIu64,
                  dev->sectors);
        set_state(dev, XB_STATE_CONNECTED);
    }
    switch (fe) {
    case XB_STATE_INITIALISED:
    case XB_STATE_CONNECTED:
        if (be == XB_STATE_INITWAIT) {
            on_frontend_ready(dev, fe);
        }
        break;
    case XB_STATE_CLOSING:
        dev_disconnect(dev);
        if (be != XB_STATE_CLOSING && be != XB_STATE_CLOSED) {
            set_state(dev, XB_STATE_CLOSING);
        }
        break;
    case XB_STATE_CLOSED:
    case XB_STATE_UNKNOWN:
        dev_disconnect(dev);
        if (be != XB_STATE_CLOSED && be != XB_STATE_INITIALISING &&
            (be != XB_STATE_INITWAIT || !online)) {
            set_state(dev, XB_STATE_CLOSED);
        }
        break;
    case XB_STATE_INITIALISING:
        if (be == XB_STATE_CLOSED && online) {
            dev->refused = false;
            set_state(dev, XB_STATE_INITWAIT);
        }
        break;
    }
    /* The toolstack asked to close (online=0, Closing) and nobody uses it */
    be = xsu_read_state(xsh, dev->be_path);
    if (be == XB_STATE_CLOSING && !dev->connected &&
        (fe == XB_STATE_CLOSED || fe == XB_STATE_INITIALISING ||
         fe == XB_STATE_UNKNOWN || fe == XB_STATE_INITWAIT)) {
        set_state(dev, XB_STATE_CLOSED);
    }
    dev->last_fe_state = fe;
    return true;
}

static void scan_devices(IdealConfig *cfg)
{
    unsigned int n = 0;
    char **names = xs_directory(xsh, XBT_NULL, watch_dir, &n);
    GHashTableIter it;
    gpointer key, value;
    GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);

    for (unsigned int i = 0; names && i < n; i++) {
        IdealDev *dev = g_hash_table_lookup(devices, names[i]);

        if (!dev) {
            g_autofree char *be = g_strdup_printf("%s/%s", watch_dir,
                                                  names[i]);

            g_autofree char *fe = xsu_read(xsh, be, "frontend");

            /* Only devices the toolstack finished writing. */
            if (!fe) {
                continue;
            }
            dev = dev_new(cfg, names[i]);
            g_hash_table_insert(devices, dev->name, dev);
        }
        g_hash_table_add(seen, dev->name);
    }
    free(names);
    g_hash_table_iter_init(&it, devices);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        if (!g_hash_table_contains(seen, key) || !dev_step(value)) {
            logv("%s: removed", (char *)key);
            g_hash_table_iter_remove(&it);
        }
    }
    g_hash_table_destroy(seen);
}

/* ---- Main ---- */

static void on_signal(int sig)
{
    quit = 1;
}

static void ideal_usage(FILE *f)
{
    fprintf(f,
"usage: xenblk-front ideal [options]   (as dom0, in place of QEMU)\n"
"An ideal blkif backend for the qdisk devices of one frontend domain:\n"
"every feature offered, exactly the grant copies a backend must do, and\n"
"no storage unless --store.  Runs until SIGTERM/SIGINT.\n"
"  --domid N              frontend domain to serve (default 1)\n"
"  --store                keep written data in RAM (for verification)\n"
"  --size BYTES           disk size (default: the image's, else 64M)\n"
"  --sector-size N        logical block size (512)\n"
"  --physical-sector-size N\n"
"  --max-ring-page-order N (4)  --max-queues N (4)\n"
"  --max-indirect N       feature-max-indirect-segments (256; 0 = off)\n"
"  --no-persistent  --no-discard  --no-flush  --discard-secure\n"
"  --ready-file FILE      created once the watch is set\n"
"  --ready-fd N           \"ready\" written to fd N once the watch is set\n"
"  --verbose\n"
"A test resizes a connected disk by writing <backend>/ideal-resize =\n"
"BYTES (with --store, up to four times the first size).\n");
}

static bool parse_ideal_opts(int argc, char **argv, IdealConfig *c)
{
    static const struct option opts[] = {
        { "domid", required_argument, NULL, 'd' },
        { "store", no_argument, NULL, 's' },
        { "size", required_argument, NULL, 'S' },
        { "sector-size", required_argument, NULL, 'l' },
        { "physical-sector-size", required_argument, NULL, 'P' },
        { "max-ring-page-order", required_argument, NULL, 'o' },
        { "max-queues", required_argument, NULL, 'q' },
        { "max-indirect", required_argument, NULL, 'i' },
        { "no-persistent", no_argument, NULL, 'p' },
        { "no-discard", no_argument, NULL, 'D' },
        { "no-flush", no_argument, NULL, 'F' },
        { "discard-secure", no_argument, NULL, 'x' },
        { "ready-file", required_argument, NULL, 'r' },
        { "ready-fd", required_argument, NULL, 'R' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;

    *c = (IdealConfig) { .fe_domid = 1, .sector_size = 512, .ready_fd = -1,
                         .max_ring_page_order = 4, .max_queues = 4,
                         .max_indirect = 256, .persistent = true,
                         .discard = true, .flush = true };
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': c->fe_domid = atoi(optarg); break;
        case 's': c->store = true; break;
        case 'S':
            if (!lg_parse_size(optarg, &c->size)) {
                return false;
            }
            break;
        case 'l': c->sector_size = atoi(optarg); break;
        case 'P': c->physical_sector_size = atoi(optarg); break;
        case 'o': c->max_ring_page_order = MIN(atoi(optarg), 4); break;
        case 'q': c->max_queues = MIN(MAX(atoi(optarg), 1),
                                      IDEAL_MAX_QUEUES); break;
        case 'i': c->max_indirect = MIN(atoi(optarg), IDEAL_MAX_SEGS); break;
        case 'p': c->persistent = false; break;
        case 'D': c->discard = false; break;
        case 'F': c->flush = false; break;
        case 'x': c->discard_secure = true; break;
        case 'r': c->ready_file = optarg; break;
        case 'R': c->ready_fd = atoi(optarg); break;
        case 'v': c->verbose = true; break;
        case 'h': ideal_usage(stdout); exit(0);
        default: return false;
        }
    }
    if (c->sector_size < 512 || (c->sector_size & (c->sector_size - 1)) ||
        c->sector_size > XB_PAGE_SIZE) {
        return false;
    }
    if (!c->physical_sector_size) {
        c->physical_sector_size = c->sector_size;
    }
    return true;
}

static void touch_ready_file(const char *path)
{
    FILE *f = path ? fopen(path, "w") : NULL;

    if (f) {
        fprintf(f, "%d\n", getpid());
        fclose(f);
    }
}

/* Wake when a queue thread finds its ring corrupt. */
static void add_corrupt_fds(GArray *pfds)
{
    GHashTableIter it;
    gpointer value;

    g_hash_table_iter_init(&it, devices);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        struct pollfd p = { .fd = ((IdealDev *)value)->corrupt_fd,
                            .events = POLLIN };

        g_array_append_val(pfds, p);
    }
}

int ideal_main(int argc, char **argv)
{
    IdealConfig cfg;
    struct sigaction sa = { .sa_handler = on_signal };

    if (!parse_ideal_opts(argc, argv, &cfg)) {
        ideal_usage(stderr);
        return 2;
    }
    verbose = cfg.verbose;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    xsh = xs_open(0);
    if (!xsh) {
        perror("ideal: xs_open");
        return 1;
    }
    watch_dir = g_strdup_printf("/local/domain/0/backend/qdisk/%u",
                                cfg.fe_domid);
    devices = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, dev_free);
    if (!xs_watch(xsh, watch_dir, "backend")) {
        perror("ideal: xs_watch");
        return 1;
    }
    touch_ready_file(cfg.ready_file);
    if (cfg.ready_fd >= 0) {
        if (write(cfg.ready_fd, "ready\n", 6) < 0) {
            perror("ideal: ready-fd");
        }
        close(cfg.ready_fd);
    }
    while (!quit) {
        g_autoptr(GArray) pfds = g_array_new(false, false,
                                             sizeof(struct pollfd));
        struct pollfd xs = { .fd = xs_fileno(xsh), .events = POLLIN };
        char **ev;

        g_array_append_val(pfds, xs);
        add_corrupt_fds(pfds);
        if (poll((struct pollfd *)pfds->data, pfds->len, 1000) < 0 &&
            errno != EINTR) {
            break;
        }
        while ((ev = xs_check_watch(xsh)) != NULL) {
            free(ev);
        }
        scan_devices(&cfg);
    }
    g_hash_table_destroy(devices);
    xs_unwatch(xsh, watch_dir, "backend");
    xs_close(xsh);
    return 0;
}
