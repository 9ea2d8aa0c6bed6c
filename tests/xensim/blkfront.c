/*
 * xenblk-front: a blkif frontend in user space
 *
 * Negotiation follows Linux's xen-blkfront (talk_to_blkback and
 * blkfront_connect): wait for the backend's InitWait, read its features,
 * choose ring size, queues, indirect segments and persistent grants from
 * what both sides offer, publish rings and event channels in one
 * transaction, go Initialised, and Connected once the backend is.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blkfront.h"
#include "xs-util.h"

#define BF_ID_MAGIC     0x5842ull       /* "XB": ids we never issued */
#define BF_WATCH_TOKEN  "xenblk-front-backend"

static uint64_t make_id(unsigned int ring, unsigned int slot)
{
    return (BF_ID_MAGIC << 48) | ((uint64_t)ring << 16) | slot;
}

void bf_log(BfDevice *d, const char *fmt, ...)
{
    /* XENBLK_FRONT_TRACE=1: each event on stderr as it happens too, for a
     * run that never gets to write its JSON (killed, hung). */
    static int trace = -1;
    va_list ap;

    if (trace < 0) {
        trace = getenv("XENBLK_FRONT_TRACE") != NULL;
    }
    if (trace) {
        va_start(ap, fmt);
        fprintf(stderr, "xenblk-front: [%.1f ms] ",
                (xsu_now_ns() - d->t0) / 1e6);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    if (!d->log) {
        d->log = g_string_new(NULL);
    }
    if (d->log->len) {
        g_string_append(d->log, ", ");
    }
    g_string_append_printf(d->log, "{\"t_ms\": %.1f, \"event\": \"",
                           (xsu_now_ns() - d->t0) / 1e6);
    va_start(ap, fmt);
    g_string_append_vprintf(d->log, fmt, ap);
    va_end(ap);
    g_string_append(d->log, "\"}");
}

static int64_t deadline_from_now(BfDevice *d)
{
    return xsu_now_ns() + (int64_t)(d->opt.deadline * 1e9);
}

/* ---- Opening: where the device is ---- */

static bool find_own_domid(BfDevice *d)
{
    uint64_t v;

    if (d->opt.domid) {
        return true;
    }
    /* Relative paths are our domain's: its "domid" node says who we are. */
    if (!xsu_read_u64(d->xsh, "domid", NULL, &v)) {
        return false;
    }
    d->opt.domid = v;
    return true;
}

bool bf_open(BfDevice *d, const BfOptions *opt, char **errmsg)
{
    uint64_t be_id;

    memset(d, 0, sizeof(*d));
    d->opt = *opt;
    d->t0 = xsu_now_ns();
    d->xsh = xs_open(0);
    if (!d->xsh) {
        *errmsg = g_strdup_printf("xs_open: %s", strerror(errno));
        return false;
    }
    if (!find_own_domid(d)) {
        *errmsg = g_strdup("cannot tell our domid (no \"domid\" node)");
        return false;
    }
    d->fe_path = g_strdup_printf("/local/domain/%u/device/vbd/%u",
                                 d->opt.domid, d->opt.devnum);
    d->be_path = xsu_read(d->xsh, d->fe_path, "backend");
    if (!d->be_path) {
        *errmsg = g_strdup_printf("no device at %s", d->fe_path);
        return false;
    }
    if (!xsu_read_u64(d->xsh, d->fe_path, "backend-id", &be_id)) {
        *errmsg = g_strdup_printf("%s/backend-id missing", d->fe_path);
        return false;
    }
    d->be_domid = be_id;
    d->xce = xenevtchn_open(NULL, 0);
    d->xgs = xengntshr_open(NULL, 0);
    if (!d->xce || !d->xgs || !xsu_set_nonblocking(xenevtchn_fd(d->xce))) {
        *errmsg = g_strdup_printf("cannot open evtchn/gntshr: %s",
                                  strerror(errno));
        return false;
    }
    if (!xs_watch(d->xsh, d->be_path, BF_WATCH_TOKEN)) {
        *errmsg = g_strdup_printf("cannot watch %s", d->be_path);
        return false;
    }
    return true;
}

/* ---- What the backend offers ---- */

static void read_backend_info(BfDevice *d)
{
    struct xs_handle *x = d->xsh;
    const char *p = d->be_path;
    BfBackendInfo *be = &d->be;
    g_autofree char *mode = xsu_read(x, p, "mode");
    uint64_t v;

    be->sectors = xsu_read_u64_default(x, p, "sectors", 0);
    be->sector_size = xsu_read_u64_default(x, p, "sector-size", 512);
    be->physical_sector_size =
        xsu_read_u64_default(x, p, "physical-sector-size", be->sector_size);
    be->info = xsu_read_u64_default(x, p, "info", 0);
    be->readonly = (be->info & 4) || (mode && !strcmp(mode, "r"));
    be->cdrom = be->info & 1;
    be->flush = xsu_read_u64_default(x, p, "feature-flush-cache", 0);
    be->barrier = xsu_read_u64_default(x, p, "feature-barrier", 0);
    be->discard = xsu_read_u64_default(x, p, "feature-discard", 0);
    be->discard_secure = xsu_read_u64_default(x, p, "discard-secure", 0);
    be->discard_granularity =
        xsu_read_u64_default(x, p, "discard-granularity", be->sector_size);
    be->discard_alignment =
        xsu_read_u64_default(x, p, "discard-alignment", 0);
    be->max_ring_page_order = xsu_read_u64(x, p, "max-ring-page-order", &v)
                              ? (int)MIN(v, 31) : -1;
    be->max_queues = xsu_read_u64_default(x, p, "multi-queue-max-queues", 0);
    be->persistent = xsu_read_u64_default(x, p, "feature-persistent", 0);
    be->max_indirect =
        xsu_read_u64_default(x, p, "feature-max-indirect-segments", 0);
}

static unsigned int log2_floor(unsigned int v)
{
    unsigned int o = 0;

    while (v > 1) {
        v >>= 1;
        o++;
    }
    return o;
}

/* Choose from what both sides offer, as xen-blkfront does. */
static void negotiate(BfDevice *d)
{
    unsigned int want_order = log2_floor(MAX(d->opt.ring_pages, 1));
    unsigned int max_order = d->be.max_ring_page_order < 0
                             ? 0 : d->be.max_ring_page_order;

    d->layout = xb_layout(d->opt.abi);
    d->ring_order = MIN(MIN(want_order, max_order), 4);
    d->ring_pages = 1u << d->ring_order;
    d->nr_rings = d->be.max_queues ? MIN(MAX(d->opt.queues, 1),
                                         MIN(d->be.max_queues, BF_MAX_QUEUES))
                                   : 1;
    d->use_indirect = d->opt.indirect && d->be.max_indirect;
    d->max_segs = d->use_indirect
                  ? MIN(MIN(d->opt.indirect, d->be.max_indirect),
                        XB_MAX_INDIRECT_PAGES * XB_SEGS_PER_INDIRECT_PAGE)
                  : XB_MAX_SEGS_DIRECT;
    if (d->max_segs < XB_MAX_SEGS_DIRECT) {
        d->max_segs = XB_MAX_SEGS_DIRECT;
    }
    d->use_persistent = d->opt.persistent && d->be.persistent;
    /* Persistent grants are the same grants every time: no regrant. */
    d->regrant = d->opt.regrant && !d->use_persistent;
    d->ring_size = xb_ring_size(d->layout, d->ring_pages);
}

/* ---- Rings, pools ---- */

static void *share(BfDevice *d, unsigned int pages, uint32_t *refs,
                   bool writable)
{
    return xengntshr_share_pages(d->xgs, d->be_domid, pages, refs, writable);
}

static bool setup_ring(BfDevice *d, BfRing *r, unsigned int index)
{
    unsigned int per_slot;

    memset(r, 0, sizeof(*r));
    r->index = index;
    r->dev = d;
    r->sring = share(d, d->ring_pages, r->refs, true);
    if (!r->sring) {
        return false;
    }
    xb_sring_init(r->sring);
    r->size = xb_ring_size(d->layout, d->ring_pages);
    r->slots = g_new0(BfSlot, r->size);
    r->free_slots = g_new(unsigned int, r->size);
    for (unsigned int i = 0; i < r->size; i++) {
        r->free_slots[i] = r->size - 1 - i;
    }
    r->nr_free = r->size;
    per_slot = d->use_indirect
               ? DIV_ROUND_UP(d->max_segs, XB_SEGS_PER_INDIRECT_PAGE) : 0;
    r->indirect_pages_per_slot = per_slot;
    if (per_slot) {
        r->indirect_refs = g_new(uint32_t, r->size * per_slot);
        /* The backend only reads them; writable when persistent, since
         * a persistent backend may map any of our grants writable. */
        r->indirect_area = share(d, r->size * per_slot, r->indirect_refs,
                                 d->use_persistent);
        if (!r->indirect_area) {
            return false;
        }
        for (unsigned int i = 0; i < r->size; i++) {
            r->slots[i].indirect = r->indirect_area +
                                   (size_t)i * per_slot * XB_PAGE_SIZE;
            r->slots[i].indirect_refs = &r->indirect_refs[i * per_slot];
        }
    }
    r->port = xenevtchn_bind_unbound_port(d->xce, d->be_domid);
    return (int)r->port > 0;
}

static void teardown_ring(BfDevice *d, BfRing *r)
{
    BfRing *t = &d->totals[r->index];

    /* Keep the counters for the report; the ring itself goes. */
    t->notifies += r->notifies;
    t->requests += r->requests;
    t->responses += r->responses;
    t->bogus_responses += r->bogus_responses;
    if (r->port > 0) {
        xenevtchn_unbind(d->xce, r->port);
    }
    if (r->sring) {
        xengntshr_unshare(d->xgs, r->sring, d->ring_pages);
    }
    if (r->indirect_area) {
        xengntshr_unshare(d->xgs, r->indirect_area,
                          r->size * r->indirect_pages_per_slot);
    }
    g_free(r->slots);
    g_free(r->free_slots);
    g_free(r->indirect_refs);
    memset(r, 0, sizeof(*r));
}

static bool setup_pool(BfDevice *d)
{
    d->chunk_pages = MAX(d->opt.chunk_pages, 1);
    d->nr_chunks = MAX(d->opt.nr_chunks, 1);
    d->free_chunks = g_new(int, d->nr_chunks);
    for (unsigned int i = 0; i < d->nr_chunks; i++) {
        d->free_chunks[i] = d->nr_chunks - 1 - i;
    }
    d->nr_free_chunks = d->nr_chunks;
    if (d->regrant) {
        return true;            /* buffers are shared per request */
    }
    d->pool_pages = d->chunk_pages * d->nr_chunks;
    d->pool_refs = g_new(uint32_t, d->pool_pages);
    /* Writable: reads land in them (and persistent grants need it). */
    d->pool = share(d, d->pool_pages, d->pool_refs, true);
    return d->pool != NULL;
}

static void teardown_pool(BfDevice *d)
{
    if (d->pool) {
        xengntshr_unshare(d->xgs, d->pool, d->pool_pages);
    }
    g_free(d->pool_refs);
    g_free(d->free_chunks);
    d->pool = NULL;
    d->pool_refs = NULL;
    d->free_chunks = NULL;
    d->pool_pages = 0;
}

bool bf_buf_get(BfDevice *d, unsigned int pages, bool for_write, BfBuf *b)
{
    int chunk;

    if (pages > d->chunk_pages || !d->nr_free_chunks) {
        return false;
    }
    chunk = d->free_chunks[--d->nr_free_chunks];
    b->pages = pages;
    b->chunk = chunk;
    if (d->regrant) {
        /* A real guest grants each request's pages anew: read-only for a
         * write, writable for a read. */
        b->refs = g_new(uint32_t, pages);
        b->data = share(d, pages, b->refs, !for_write);
        if (!b->data) {
            g_free(b->refs);
            d->free_chunks[d->nr_free_chunks++] = chunk;
            return false;
        }
        return true;
    }
    b->data = d->pool + (size_t)chunk * d->chunk_pages * XB_PAGE_SIZE;
    b->refs = &d->pool_refs[chunk * d->chunk_pages];
    return true;
}

void bf_buf_put(BfDevice *d, BfBuf *b)
{
    if (d->regrant && b->data) {
        xengntshr_unshare(d->xgs, b->data, b->pages);
        g_free(b->refs);
    }
    if (b->chunk >= 0 && d->free_chunks) {
        d->free_chunks[d->nr_free_chunks++] = b->chunk;
    }
    memset(b, 0, sizeof(*b));
    b->chunk = -1;
}

/* ---- Publishing our side ---- */

static bool write_ring_nodes(BfDevice *d, xs_transaction_t t,
                             const char *dir, BfRing *r)
{
    bool ok = true;

    if (d->ring_pages == 1) {
        ok &= xsu_write(d->xsh, t, dir, "ring-ref", "%u", r->refs[0]);
    } else {
        for (unsigned int i = 0; i < d->ring_pages; i++) {
            g_autofree char *node = g_strdup_printf("ring-ref%u", i);

            ok &= xsu_write(d->xsh, t, dir, node, "%u", r->refs[i]);
        }
    }
    ok &= xsu_write(d->xsh, t, dir, "event-channel", "%u", r->port);
    return ok;
}

/* Hostile mode: rewrite or remove nodes before the backend reads them. */
static bool apply_xs_tweaks(BfDevice *d, xs_transaction_t t)
{
    bool ok = true;

    for (unsigned int i = 0; d->opt.xs_del && i < d->opt.xs_del->len; i++) {
        g_autofree char *path = g_strdup_printf(
            "%s/%s", d->fe_path, (char *)g_ptr_array_index(d->opt.xs_del, i));

        xs_rm(d->xsh, t, path);
    }
    for (unsigned int i = 0; d->opt.xs_set && i < d->opt.xs_set->len; i++) {
        const char *kv = g_ptr_array_index(d->opt.xs_set, i);
        const char *eq = strchr(kv, '=');
        g_autofree char *node = eq ? g_strndup(kv, eq - kv) : g_strdup(kv);

        ok &= xsu_write(d->xsh, t, d->fe_path, node, "%s", eq ? eq + 1 : "");
    }
    return ok;
}

static bool write_frontend_nodes(BfDevice *d, xs_transaction_t t)
{
    bool ok = true;

    /* Only for a multi-page ring, as Linux: some backends read ring-ref0
     * (not ring-ref) whenever the node is there. */
    if (d->ring_pages > 1) {
        ok &= xsu_write(d->xsh, t, d->fe_path, "ring-page-order", "%u",
                        d->ring_order);
    }
    if (d->nr_rings == 1) {
        ok &= write_ring_nodes(d, t, d->fe_path, &d->rings[0]);
    } else {
        ok &= xsu_write(d->xsh, t, d->fe_path, "multi-queue-num-queues",
                        "%u", d->nr_rings);
        for (unsigned int q = 0; q < d->nr_rings; q++) {
            g_autofree char *dir = g_strdup_printf("%s/queue-%u",
                                                   d->fe_path, q);

            ok &= write_ring_nodes(d, t, dir, &d->rings[q]);
        }
    }
    if (d->opt.protocol_node) {
        ok &= xsu_write(d->xsh, t, d->fe_path, "protocol", "%s",
                        d->layout->name);
    }
    ok &= xsu_write(d->xsh, t, d->fe_path, "feature-persistent", "%u",
                    d->opt.persistent ? 1 : 0);
    return ok && apply_xs_tweaks(d, t);
}

static bool publish(BfDevice *d)
{
    for (int tries = 0; tries < 100; tries++) {
        xs_transaction_t t = xs_transaction_start(d->xsh);

        if (t == XBT_NULL) {
            return false;
        }
        if (!write_frontend_nodes(d, t)) {
            xs_transaction_end(d->xsh, t, true);
            return false;
        }
        if (xs_transaction_end(d->xsh, t, false)) {
            return true;
        }
        if (errno != EAGAIN) {
            return false;
        }
    }
    return false;
}

/* Remove what a previous connection published (as a fresh device has). */
static void clear_frontend_nodes(BfDevice *d)
{
    static const char *const nodes[] = {
        "ring-ref", "ring-page-order", "event-channel", "protocol",
        "multi-queue-num-queues", "feature-persistent",
    };
    unsigned int n = 0;
    char **entries = xs_directory(d->xsh, XBT_NULL, d->fe_path, &n);

    for (unsigned int i = 0; i < G_N_ELEMENTS(nodes); i++) {
        g_autofree char *p = g_strdup_printf("%s/%s", d->fe_path, nodes[i]);

        xs_rm(d->xsh, XBT_NULL, p);
    }
    for (unsigned int i = 0; entries && i < n; i++) {
        if (g_str_has_prefix(entries[i], "ring-ref") ||
            g_str_has_prefix(entries[i], "queue-")) {
            g_autofree char *p = g_strdup_printf("%s/%s", d->fe_path,
                                                 entries[i]);

            xs_rm(d->xsh, XBT_NULL, p);
        }
    }
    free(entries);
}

/* ---- Connecting ---- */

static bool fail(char **errmsg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static bool fail(char **errmsg, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    *errmsg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return false;
}

static bool allocate_resources(BfDevice *d, char **errmsg)
{
    for (unsigned int q = 0; q < d->nr_rings; q++) {
        if (!setup_ring(d, &d->rings[q], q)) {
            return fail(errmsg, "cannot set up ring %u: %s", q,
                        strerror(errno));
        }
    }
    if (!setup_pool(d)) {
        return fail(errmsg, "cannot share %u data pages: %s",
                    d->chunk_pages * d->nr_chunks, strerror(errno));
    }
    return true;
}

/* Back to Initialising after a previous connection, and to InitWait. */
/*
 * A previous frontend died connected: close the old connection first, as
 * a rebooted guest's xenbus would, so the backend lets go of its rings.
 */
static void close_stale_connection(BfDevice *d)
{
    int be = xsu_read_state(d->xsh, d->be_path);

    if (be != XB_STATE_INITIALISED && be != XB_STATE_CONNECTED &&
        be != XB_STATE_CLOSING) {
        return;
    }
    bf_log(d, "backend in state %d from an earlier connection: closing it",
           be);
    xsu_write_state(d->xsh, d->fe_path, XB_STATE_CLOSING);
    xsu_wait_state(d->xsh, d->be_path,
                   XSU_STATE_BIT(XB_STATE_CLOSING) |
                   XSU_STATE_BIT(XB_STATE_CLOSED), deadline_from_now(d),
                   NULL);
    xsu_write_state(d->xsh, d->fe_path, XB_STATE_CLOSED);
    xsu_wait_state(d->xsh, d->be_path, XSU_STATE_BIT(XB_STATE_CLOSED),
                   deadline_from_now(d), NULL);
}

static bool wait_backend_initwait(BfDevice *d, char **errmsg)
{
    int fe_state, state;

    close_stale_connection(d);
    fe_state = xsu_read_state(d->xsh, d->fe_path);

    if (fe_state != XB_STATE_INITIALISING) {
        clear_frontend_nodes(d);
        xsu_write_state(d->xsh, d->fe_path, XB_STATE_INITIALISING);
    }
    if (d->opt.skip_state_wait) {
        return true;
    }
    if (!xsu_wait_state(d->xsh, d->be_path,
                        XSU_STATE_BIT(XB_STATE_INITWAIT),
                        deadline_from_now(d), &state)) {
        return fail(errmsg, "backend did not reach InitWait (state %d: %s)",
                    state, xsu_state_name(state));
    }
    return true;
}

/*
 * Hostile: valid reads on every ring, published before the backend even
 * connects (their answers, if any, are not waited for).  A backend must
 * not look at a ring before it is set up to serve it.
 */
static void prefill_rings(BfDevice *d)
{
    for (unsigned int q = 0; q < d->nr_rings; q++) {
        BfRing *r = &d->rings[q];
        unsigned int n = MIN(d->opt.prefill, r->size);

        for (unsigned int i = 0; i < n; i++) {
            XbRequest req = { .operation = XB_OP_READ, .nr_segments = 1,
                              .handle = d->opt.devnum, .id = 0xf000 + i,
                              .sector = 8 * i,
                              .seg[0] = { d->pool_refs[i % d->pool_pages],
                                          0, 7 } };

            xb_encode_request(d->layout, &req,
                              xb_slot(r->sring, d->layout, r->size,
                                      r->req_prod_pvt + i));
        }
        r->req_prod_pvt += n;
        xb_front_push_requests(r->sring, r->req_prod_pvt);
    }
}

bool bf_connect(BfDevice *d, char **errmsg)
{
    int state;

    d->backend_went_away = false;
    if (!wait_backend_initwait(d, errmsg)) {
        return false;
    }
    read_backend_info(d);
    negotiate(d);
    bf_log(d, "negotiated %s ring-pages=%u queues=%u max-segs=%u "
           "indirect=%d persistent=%d", d->layout->name, d->ring_pages,
           d->nr_rings, d->max_segs, d->use_indirect, d->use_persistent);
    if (!allocate_resources(d, errmsg)) {
        return false;
    }
    if (d->opt.prefill) {
        prefill_rings(d);
    }
    if (!publish(d)) {
        return fail(errmsg, "cannot publish ring nodes: %s",
                    strerror(errno));
    }
    xsu_write_state(d->xsh, d->fe_path, XB_STATE_INITIALISED);
    xsu_wait_state(d->xsh, d->be_path,
                   XSU_STATE_BIT(XB_STATE_CONNECTED) |
                   XSU_STATE_BIT(XB_STATE_CLOSING) |
                   XSU_STATE_BIT(XB_STATE_CLOSED),
                   deadline_from_now(d), &state);
    d->backend_state = state;
    if (state != XB_STATE_CONNECTED) {
        return fail(errmsg, "backend did not connect (state %d: %s)",
                    state, xsu_state_name(state));
    }
    /* The device's properties are final now (blkfront_connect). */
    read_backend_info(d);
    d->last_sectors = d->be.sectors;
    xsu_write_state(d->xsh, d->fe_path, XB_STATE_CONNECTED);
    d->connected = true;
    bf_log(d, "connected sectors=%" PRIu64 " sector-size=%u",
           d->be.sectors, d->be.sector_size);
    return true;
}

static void release_resources(BfDevice *d)
{
    for (unsigned int q = 0; q < BF_MAX_QUEUES; q++) {
        if (d->rings[q].dev) {
            teardown_ring(d, &d->rings[q]);
        }
    }
    teardown_pool(d);
    d->inflight = 0;
}

bool bf_disconnect(BfDevice *d, char **errmsg)
{
    int state;
    bool ok = true;

    if (!d->xsh) {
        return true;
    }
    xsu_write_state(d->xsh, d->fe_path, XB_STATE_CLOSING);
    if (!xsu_wait_state(d->xsh, d->be_path,
                        XSU_STATE_BIT(XB_STATE_CLOSING) |
                        XSU_STATE_BIT(XB_STATE_CLOSED) |
                        XSU_STATE_BIT(XB_STATE_UNKNOWN),
                        deadline_from_now(d), &state)) {
        ok = fail(errmsg, "backend did not close (state %d: %s)", state,
                  xsu_state_name(state));
    }
    /* The backend has let go of the rings: take our pages back. */
    release_resources(d);
    xsu_write_state(d->xsh, d->fe_path, XB_STATE_CLOSED);
    if (ok && !xsu_wait_state(d->xsh, d->be_path,
                              XSU_STATE_BIT(XB_STATE_CLOSED) |
                              XSU_STATE_BIT(XB_STATE_UNKNOWN),
                              deadline_from_now(d), &state)) {
        ok = fail(errmsg, "backend did not reach Closed (state %d: %s)",
                  state, xsu_state_name(state));
    }
    d->connected = false;
    bf_log(d, "disconnected backend-state=%d", state);
    return ok;
}

void bf_close(BfDevice *d)
{
    release_resources(d);
    if (d->xgs) {
        xengntshr_close(d->xgs);
    }
    if (d->xce) {
        xenevtchn_close(d->xce);
    }
    if (d->xsh) {
        xs_close(d->xsh);
    }
    g_free(d->fe_path);
    g_free(d->be_path);
    if (d->log) {
        g_string_free(d->log, true);
    }
    memset(d, 0, sizeof(*d));
}

/* ---- Requests ---- */

static BfSlot *get_slot(BfRing *r, unsigned int *index)
{
    BfSlot *s;

    if (!r->nr_free) {
        return NULL;
    }
    *index = r->free_slots[--r->nr_free];
    s = &r->slots[*index];
    s->busy = true;
    return s;
}

static void put_slot(BfRing *r, unsigned int index)
{
    r->slots[index].busy = false;
    r->slots[index].io = NULL;
    r->free_slots[r->nr_free++] = index;
}

/* Write the request into the next ring slot (not yet published). */
static void queue_request(BfRing *r, BfSlot *s, unsigned int index,
                          XbRequest *req)
{
    BfDevice *d = r->dev;

    req->id = make_id(r->index, index);
    s->req = *req;
    xb_encode_request(d->layout, req,
                      xb_slot(r->sring, d->layout, r->size, r->req_prod_pvt));
    r->req_prod_pvt++;
    r->unpushed = true;
    r->requests++;
    d->inflight++;
    if (s->io) {
        s->io->parts++;
    }
}

static BfRing *pick_ring(BfDevice *d, int ring, unsigned int slots_needed)
{
    if (ring >= 0) {
        BfRing *r = &d->rings[ring % d->nr_rings];

        return r->nr_free >= slots_needed ? r : NULL;
    }
    for (unsigned int i = 0; i < d->nr_rings; i++) {
        BfRing *r = &d->rings[(d->next_ring + i) % d->nr_rings];

        if (r->nr_free >= slots_needed) {
            d->next_ring = (r->index + 1) % d->nr_rings;
            return r;
        }
    }
    return NULL;
}

static void start_io(BfIo *io, BfRing *r)
{
    io->t_submit = xsu_now_ns();
    io->parts = 0;
    io->status = XB_RSP_OKAY;
    io->ring = r->index;
}

unsigned int bf_parts_needed(BfDevice *d, uint32_t off, uint32_t nbytes)
{
    unsigned int pages = (off + nbytes - 1) / XB_PAGE_SIZE -
                         off / XB_PAGE_SIZE + 1;

    return DIV_ROUND_UP(pages, d->max_segs);
}

/* The segment for page @p of a transfer of [off, end) within the buffer. */
static XbSegment segment_for_page(const BfBuf *buf, unsigned int p,
                                  uint32_t off, uint32_t end)
{
    uint32_t page_start = p * XB_PAGE_SIZE;
    uint32_t s = MAX(off, page_start) - page_start;
    uint32_t e = MIN(end, page_start + XB_PAGE_SIZE) - page_start;

    return (XbSegment) {
        .gref = buf->refs[p],
        .first_sect = s / XB_SECTOR_SIZE,
        .last_sect = (e - 1) / XB_SECTOR_SIZE,
    };
}

/* One ring request for pages [p0, p1) of the transfer. */
static void queue_rw_part(BfRing *r, bool write, uint64_t sector,
                          const BfBuf *buf, uint32_t off, uint32_t end,
                          unsigned int p0, unsigned int p1, BfIo *io)
{
    BfDevice *d = r->dev;
    unsigned int nsegs = p1 - p0, index;
    uint32_t part_start = MAX(off, p0 * XB_PAGE_SIZE);
    XbRequest req = {
        .handle = d->opt.devnum,
        .sector = sector + (part_start - off) / XB_SECTOR_SIZE,
    };
    BfSlot *s = get_slot(r, &index);

    s->io = io;
    if (d->use_indirect &&
        (nsegs > XB_MAX_SEGS_DIRECT || d->opt.indirect_always)) {
        req.operation = XB_OP_INDIRECT;
        req.indirect_op = write ? XB_OP_WRITE : XB_OP_READ;
        req.indirect_nr_segments = nsegs;
        for (unsigned int i = 0; i < nsegs; i++) {
            XbSegment seg = segment_for_page(buf, p0 + i, off, end);

            xb_encode_indirect_seg(s->indirect, i, &seg);
        }
        for (unsigned int i = 0;
             i < DIV_ROUND_UP(nsegs, XB_SEGS_PER_INDIRECT_PAGE); i++) {
            req.indirect_grefs[i] = s->indirect_refs[i];
        }
    } else {
        req.operation = write ? XB_OP_WRITE : XB_OP_READ;
        req.nr_segments = nsegs;
        for (unsigned int i = 0; i < nsegs; i++) {
            req.seg[i] = segment_for_page(buf, p0 + i, off, end);
        }
    }
    queue_request(r, s, index, &req);
}

bool bf_submit_rw(BfDevice *d, int ring, bool write, uint64_t sector,
                  uint32_t nbytes, BfBuf *buf, uint32_t off, BfIo *io)
{
    uint32_t end = off + nbytes;
    unsigned int first = off / XB_PAGE_SIZE;
    unsigned int last = (end - 1) / XB_PAGE_SIZE;
    BfRing *r = pick_ring(d, ring, bf_parts_needed(d, off, nbytes));

    if (!r || !nbytes) {
        return false;
    }
    start_io(io, r);
    for (unsigned int p = first; p <= last; p += d->max_segs) {
        queue_rw_part(r, write, sector, buf, off, end, p,
                      MIN(p + d->max_segs, last + 1), io);
    }
    return true;
}

bool bf_submit_flush(BfDevice *d, int ring, BfIo *io)
{
    /* As Linux's blkfront: an empty flush carries sector_number -1. */
    XbRequest req = { .operation = XB_OP_FLUSH_DISKCACHE,
                      .handle = d->opt.devnum, .sector = UINT64_MAX };
    BfRing *r = pick_ring(d, ring, 1);
    unsigned int index;
    BfSlot *s;

    if (!r) {
        return false;
    }
    start_io(io, r);
    s = get_slot(r, &index);
    s->io = io;
    queue_request(r, s, index, &req);
    return true;
}

bool bf_submit_discard(BfDevice *d, int ring, uint64_t sector,
                       uint64_t nr_sectors, bool secure, BfIo *io)
{
    XbRequest req = { .operation = XB_OP_DISCARD,
                      .nr_segments = secure ? XB_DISCARD_SECURE : 0,
                      .handle = d->opt.devnum, .sector = sector,
                      .nr_sectors = nr_sectors };
    BfRing *r = pick_ring(d, ring, 1);
    unsigned int index;
    BfSlot *s;

    if (!r) {
        return false;
    }
    start_io(io, r);
    s = get_slot(r, &index);
    s->io = io;
    queue_request(r, s, index, &req);
    return true;
}

BfSlot *bf_submit_raw(BfDevice *d, unsigned int ring, const XbRequest *req,
                      BfIo *io)
{
    BfRing *r = &d->rings[ring % d->nr_rings];
    XbRequest copy = *req;
    unsigned int index;
    BfSlot *s;

    if (!r->nr_free) {
        return NULL;
    }
    start_io(io, r);
    s = get_slot(r, &index);
    s->io = io;
    queue_request(r, s, index, &copy);
    return s;
}

void bf_kick(BfDevice *d)
{
    for (unsigned int q = 0; q < d->nr_rings; q++) {
        BfRing *r = &d->rings[q];

        if (r->unpushed) {
            r->unpushed = false;
            if (xb_front_push_requests(r->sring, r->req_prod_pvt)) {
                xenevtchn_notify(d->xce, r->port);
                r->notifies++;
            }
        }
    }
}

/* ---- Responses ---- */

static bool operation_matches(const XbRequest *req, uint8_t op)
{
    if (req->operation == XB_OP_INDIRECT) {
        /* Backends echo either the indirect or the inner operation. */
        return op == XB_OP_INDIRECT || op == req->indirect_op;
    }
    return op == req->operation;
}

/* Returns 1 if it completed an I/O. */
static int handle_response(BfRing *r, const XbResponse *rsp)
{
    BfDevice *d = r->dev;
    unsigned int ring = (rsp->id >> 16) & 0xffff, index = rsp->id & 0xffff;
    BfSlot *s;
    BfIo *io;

    if ((rsp->id >> 48) != BF_ID_MAGIC || ring != r->index ||
        index >= r->size || !r->slots[index].busy ||
        !operation_matches(&r->slots[index].req, rsp->operation)) {
        r->bogus_responses++;
        bf_log(d, "bogus response id=0x%" PRIx64 " op=%u status=%d",
               rsp->id, rsp->operation, rsp->status);
        return 0;
    }
    s = &r->slots[index];
    io = s->io;
    put_slot(r, index);
    r->responses++;
    d->inflight--;
    if (!io) {
        return 0;
    }
    if (io->status == XB_RSP_OKAY) {
        io->status = rsp->status;
    }
    io->operation = rsp->operation;
    if (--io->parts == 0) {
        io->t_done = xsu_now_ns();
        if (io->done) {
            io->done(d, io);
        }
        return 1;
    }
    return 0;
}

/*
 * Take the responses published so far; with @rearm, also ask for a
 * notification of the next ones (rsp_event), as before sleeping.
 */
static int consume_ring(BfRing *r, bool rearm)
{
    const XbLayout *l = r->dev->layout;
    int completed = 0;

    do {
        uint32_t prod = xb_front_rsp_prod(r->sring);

        if ((uint32_t)(prod - r->rsp_cons) > r->size) {
            /* A backend bug: more responses than the ring holds. */
            bf_log(r->dev, "ring %u: rsp_prod %u runs %u ahead", r->index,
                   prod, prod - r->rsp_cons);
            r->rsp_cons = prod;
            break;
        }
        while (r->rsp_cons != prod) {
            XbResponse rsp;

            xb_decode_response(l, xb_slot(r->sring, l, r->size, r->rsp_cons),
                               &rsp);
            r->rsp_cons++;
            completed += handle_response(r, &rsp);
        }
    } while (rearm && xb_front_final_check(r->sring, r->rsp_cons));
    return completed;
}

static int consume_all(BfDevice *d, bool rearm)
{
    int completed = 0;

    for (unsigned int q = 0; q < d->nr_rings && d->rings[q].sring; q++) {
        completed += consume_ring(&d->rings[q], rearm);
    }
    return completed;
}

bool bf_check_resize(BfDevice *d)
{
    uint64_t sectors;

    if (!xsu_read_u64(d->xsh, d->be_path, "sectors", &sectors) ||
        sectors == d->last_sectors) {
        return false;
    }
    bf_log(d, "resize %" PRIu64 " -> %" PRIu64 " sectors", d->last_sectors,
           sectors);
    d->last_sectors = sectors;
    d->be.sectors = sectors;
    d->resize_events++;
    return true;
}

static void backend_changed(BfDevice *d)
{
    int state = xsu_read_state(d->xsh, d->be_path);

    if (state != d->backend_state) {
        bf_log(d, "backend state %d (%s)", state, xsu_state_name(state));
        d->backend_state = state;
    }
    if (d->connected && state != XB_STATE_CONNECTED) {
        d->backend_went_away = true;
    }
    if (d->connected) {
        bf_check_resize(d);
    }
}

static void drain_xs_events(BfDevice *d)
{
    char **ev;
    bool ours = false;

    while ((ev = xs_check_watch(d->xsh)) != NULL) {
        ours |= !strcmp(ev[XS_WATCH_TOKEN], BF_WATCH_TOKEN);
        free(ev);
    }
    if (ours) {
        backend_changed(d);
    }
}

static void drain_evtchn(BfDevice *d)
{
    xenevtchn_port_or_error_t port;

    while ((port = xenevtchn_pending(d->xce)) >= 0) {
        xenevtchn_unmask(d->xce, port);
    }
}

/*
 * With I/O out, look for responses for up to opt.poll_us before sleeping,
 * giving the CPU to any other runnable thread between looks.  A load
 * generator that polls for completions (fio's hipri) measures the
 * backend rather than the machine's wake-up latency: on a VM whose idle
 * vCPUs halt, a wake-up from another CPU costs tens of microseconds.
 * rsp_event is left alone meanwhile (the backend need not notify a
 * frontend that is looking); the final check before poll() re-arms it.
 */
static bool spin_for_responses(BfDevice *d)
{
    int64_t end = xsu_now_ns() + (int64_t)d->opt.poll_us * 1000;

    do {
        for (unsigned int q = 0; q < d->nr_rings && d->rings[q].sring; q++) {
            BfRing *r = &d->rings[q];

            if (xb_front_rsp_prod(r->sring) != r->rsp_cons) {
                return true;
            }
        }
        sched_yield();
    } while (xsu_now_ns() < end);
    return false;
}

int bf_poll(BfDevice *d, int timeout_ms)
{
    struct pollfd pfd[2] = {
        { .fd = xenevtchn_fd(d->xce), .events = POLLIN },
        { .fd = xs_fileno(d->xsh), .events = POLLIN },
    };
    int n;

    bf_kick(d);
    /* A frontend that spins asks for notifications only before it sleeps. */
    n = consume_all(d, !d->opt.poll_us);
    if (n > 0 || timeout_ms == 0) {
        return n;
    }
    if (d->opt.poll_us) {
        if (d->inflight && spin_for_responses(d)) {
            return consume_all(d, false);
        }
        n = consume_all(d, true);
        if (n > 0) {
            return n;
        }
    }
    if (poll(pfd, 2, timeout_ms) < 0 && errno != EINTR) {
        return -1;
    }
    if (pfd[0].revents) {
        drain_evtchn(d);
    }
    if (pfd[1].revents) {
        drain_xs_events(d);
    }
    return consume_all(d, true);
}
