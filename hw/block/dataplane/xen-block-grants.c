/*
 * Xen block dataplane: where request data lives (qemu-xen-block)
 *
 * Pool pages: preallocated, handed out one per segment from a stack.
 * Persistent grants: a hash table from grant reference to a page mapped
 * once; a segment whose grant is in it is served in place.  When the table
 * is full, new grants are copied instead, and a bottom half (off the
 * request path) unmaps the least recently used idle mappings to make room.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "block/aio.h"
#include "hw/block/dataplane/xen-block-grants.h"
#include "trace.h"

struct XenBlockPersistentGrant {
    uint32_t gref;
    uint8_t *page;
    unsigned int in_use;        /* segments of requests in flight */
    uint64_t last_used;
};

struct XenBlockGrants {
    XenDevice *xendev;
    uint8_t *pool;
    uint8_t **free_pages;       /* a stack of pool pages */
    unsigned int nr_free;
    unsigned int pool_pages;
    GHashTable *persistent;     /* gref -> XenBlockPersistentGrant */
    unsigned int max_persistent;
    uint64_t clock;             /* advances once per acquire */
    uint64_t clock_at_purge;    /* the clock when the last purge ran */
    QEMUTimer *purge_timer;
    XenBlockQueueStats *stats;
};

/*
 * How often, at most, idle mappings are purged when the cache is full (as
 * Linux's blkback: its LRU interval).  Purging on every miss instead would
 * unmap and map again all the time when the guest's working set is larger
 * than the cap: then the cap's worth stays mapped and the rest is copied.
 */
#define XEN_BLOCK_PURGE_INTERVAL_MS 100

static void xen_block_grants_purge(void *opaque);

/*
 * Every persistent mapping is a memory area of its own in this process
 * (each grant is mapped apart), and the kernel caps how many a process has
 * (vm.max_map_count, 65530 by default): past that every mmap fails,
 * coroutine stacks included, and QEMU aborts.  max-persistent-grants caps
 * one queue, but the guest picks how many queues and disks it uses, so the
 * process keeps a budget of its own, half the kernel's cap; beyond it,
 * segments are copied.  One QEMU serves one guest: the budget is that
 * guest's.
 */
#define XEN_BLOCK_DEFAULT_MAX_MAP_COUNT 65530

static unsigned int xen_block_map_budget;   /* set once, then read-only */
static unsigned int xen_block_mapped;       /* atomic: mappings alive */

/* Once, from whichever thread asks first (a queue starting, or QMP). */
static void xen_block_grants_init_budget(void)
{
    static gsize done;
    g_autofree char *text = NULL;
    uint64_t max_map_count = XEN_BLOCK_DEFAULT_MAX_MAP_COUNT;
    uint64_t value;

    if (!g_once_init_enter(&done)) {
        return;
    }
    /* the file's number ends with a newline; anything else: the default */
    if (g_file_get_contents("/proc/sys/vm/max_map_count", &text, NULL,
                            NULL) &&
        qemu_strtou64(g_strchomp(text), NULL, 10, &value) == 0 && value) {
        max_map_count = value;
    }
    xen_block_map_budget = MAX(MIN(max_map_count, UINT_MAX) / 2, 1);
    g_once_init_leave(&done, 1);
}

/*
 * A compare-and-swap, not an increment undone when over: the count never
 * passes the budget, even for an instant, so what it reads is true.
 */
static bool xen_block_grants_take_budget(void)
{
    unsigned int mapped = qatomic_read(&xen_block_mapped);

    for (;;) {
        unsigned int seen;

        if (mapped >= xen_block_map_budget) {
            return false;
        }
        seen = qatomic_cmpxchg(&xen_block_mapped, mapped, mapped + 1);
        if (seen == mapped) {
            return true;
        }
        mapped = seen;
    }
}

void xen_block_grants_get_budget(uint32_t *budget, uint32_t *mapped)
{
    xen_block_grants_init_budget();
    *budget = xen_block_map_budget;
    *mapped = qatomic_read(&xen_block_mapped);
}

XenBlockGrants *xen_block_grants_new(XenDevice *xendev, AioContext *ctx,
                                     unsigned int pool_pages,
                                     unsigned int max_persistent,
                                     XenBlockQueueStats *stats)
{
    XenBlockGrants *g = g_new0(XenBlockGrants, 1);

    xen_block_grants_init_budget();
    g->xendev = xendev;
    g->stats = stats;
    g->pool_pages = pool_pages;
    g->pool = qemu_try_memalign(qemu_real_host_page_size(),
                                (size_t)pool_pages * XEN_BLKIF_PAGE_SIZE);
    g->free_pages = g_try_new(uint8_t *, pool_pages);
    if (!g->pool || !g->free_pages) {
        qemu_vfree(g->pool);
        g_free(g->free_pages);
        g_free(g);
        return NULL;
    }
    for (unsigned int i = 0; i < pool_pages; i++) {
        g->free_pages[g->nr_free++] = g->pool + (size_t)i * XEN_BLKIF_PAGE_SIZE;
    }
    g->max_persistent = max_persistent;
    if (max_persistent) {
        g->persistent = g_hash_table_new(g_direct_hash, g_direct_equal);
        g->purge_timer = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_MS,
                                       xen_block_grants_purge, g);
    }
    return g;
}

void xen_block_grants_detach(XenBlockGrants *g)
{
    g_clear_pointer(&g->purge_timer, timer_free);
}

static void xen_block_grants_unmap(XenBlockGrants *g,
                                   XenBlockPersistentGrant *pg)
{
    xen_device_unmap_grant_refs(g->xendev, pg->page, &pg->gref, 1, NULL);
    qatomic_dec(&xen_block_mapped);
    trace_xen_block_grants_unmap(g, pg->gref);
    g->stats->grant_unmaps++;
    g_free(pg);
}

void xen_block_grants_free(XenBlockGrants *g)
{
    if (!g) {
        return;
    }
    xen_block_grants_detach(g);
    if (g->persistent) {
        GHashTableIter iter;
        gpointer value;

        g_hash_table_iter_init(&iter, g->persistent);
        while (g_hash_table_iter_next(&iter, NULL, &value)) {
            xen_block_grants_unmap(g, value);
        }
        g_hash_table_destroy(g->persistent);
    }
    qemu_vfree(g->pool);
    g_free(g->free_pages);
    g_free(g);
}

static gint xen_block_grants_older(gconstpointer a, gconstpointer b)
{
    const XenBlockPersistentGrant *x = *(XenBlockPersistentGrant **)a;
    const XenBlockPersistentGrant *y = *(XenBlockPersistentGrant **)b;

    return x->last_used < y->last_used ? -1 : x->last_used > y->last_used;
}

/*
 * Unmap up to an eighth of the mappings, least recently used first, among
 * those not used since the previous purge, so that new grants can be
 * mapped again.  A timer: never on the request path.
 */
static void xen_block_grants_purge(void *opaque)
{
    XenBlockGrants *g = opaque;
    g_autoptr(GPtrArray) idle = g_ptr_array_new();
    GHashTableIter iter;
    gpointer value;
    guint n;

    g_hash_table_iter_init(&iter, g->persistent);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        XenBlockPersistentGrant *pg = value;

        if (pg->in_use == 0 && pg->last_used <= g->clock_at_purge) {
            g_ptr_array_add(idle, pg);
        }
    }
    g->clock_at_purge = g->clock;
    g_ptr_array_sort(idle, xen_block_grants_older);
    n = MIN(idle->len, g->max_persistent / 8 + 1);
    for (guint i = 0; i < n; i++) {
        XenBlockPersistentGrant *pg = g_ptr_array_index(idle, i);

        g_hash_table_remove(g->persistent, GUINT_TO_POINTER(pg->gref));
        xen_block_grants_unmap(g, pg);
    }
}

/* Map one grant to keep; NULL if it cannot be (read-only, not ours...). */
static XenBlockPersistentGrant *xen_block_grants_map(XenBlockGrants *g,
                                                     uint32_t gref)
{
    XenBlockPersistentGrant *pg;
    void *page;

    if (!xen_block_grants_take_budget()) {
        return NULL;        /* copied instead */
    }
    page = xen_device_map_grant_refs(g->xendev, &gref, 1,
                                     PROT_READ | PROT_WRITE, NULL);
    if (!page) {
        qatomic_dec(&xen_block_mapped);
        return NULL;
    }
    pg = g_new0(XenBlockPersistentGrant, 1);
    pg->gref = gref;
    pg->page = page;
    g_hash_table_insert(g->persistent, GUINT_TO_POINTER(gref), pg);
    trace_xen_block_grants_map(g, gref);
    g->stats->grant_maps++;
    return pg;
}

bool xen_block_grants_acquire(XenBlockGrants *g, const XenBlkifSegment *segs,
                              unsigned int n, XenBlockSegBuf *bufs)
{
    unsigned int misses = 0;

    /*
     * Every segment whose grant is not mapped yet may end up in a pool
     * page (its mapping may fail): make sure there are enough first, so
     * that we never hold half a request.  The lookups are kept for below.
     */
    for (unsigned int i = 0; i < n; i++) {
        bufs[i].pgrant = g->persistent ?
            g_hash_table_lookup(g->persistent,
                                GUINT_TO_POINTER(segs[i].gref)) : NULL;
        misses += !bufs[i].pgrant;
    }
    if (misses > g->nr_free) {
        return false;
    }
    g->clock++;
    for (unsigned int i = 0; i < n; i++) {
        XenBlockPersistentGrant *pg = bufs[i].pgrant;

        if (pg) {
            g->stats->persistent_hits++;
        } else if (g->persistent) {
            if (g_hash_table_size(g->persistent) < g->max_persistent) {
                /* a grant twice in one request is mapped once */
                pg = g_hash_table_lookup(g->persistent,
                                         GUINT_TO_POINTER(segs[i].gref));
                if (!pg) {
                    pg = xen_block_grants_map(g, segs[i].gref);
                }
            } else if (g->purge_timer && !timer_pending(g->purge_timer)) {
                /*
                 * Make room for later, once the idle ones are known.  Not
                 * once detached: the queue is going away.
                 */
                timer_mod(g->purge_timer,
                          qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                          XEN_BLOCK_PURGE_INTERVAL_MS);
            }
        }
        if (pg) {
            pg->in_use++;
            pg->last_used = g->clock;
            bufs[i].pgrant = pg;
            bufs[i].data = pg->page +
                           segs[i].first_sect * XEN_BLKIF_SECTOR_SIZE;
        } else {
            bufs[i].pgrant = NULL;
            bufs[i].data = g->free_pages[--g->nr_free];
        }
    }
    return true;
}

void xen_block_grants_release(XenBlockGrants *g, XenBlockSegBuf *bufs,
                              unsigned int n)
{
    for (unsigned int i = 0; i < n; i++) {
        if (bufs[i].pgrant) {
            bufs[i].pgrant->in_use--;
        } else {
            g->free_pages[g->nr_free++] = bufs[i].data;
        }
    }
}

bool xen_block_grants_copy(XenBlockGrants *g, const XenBlkifSegment *segs,
                           const XenBlockSegBuf *bufs, unsigned int n,
                           bool to_guest, XenDeviceGrantCopySegment *scratch,
                           Error **errp)
{
    ERRP_GUARD();
    unsigned int count = 0;

    for (unsigned int i = 0; i < n; i++) {
        XenDeviceGrantCopySegment *c = &scratch[count];
        unsigned int offset = segs[i].first_sect * XEN_BLKIF_SECTOR_SIZE;

        if (bufs[i].pgrant) {
            continue;       /* in place: nothing to copy */
        }
        c->len = (segs[i].last_sect - segs[i].first_sect + 1) *
                 XEN_BLKIF_SECTOR_SIZE;
        if (to_guest) {
            c->source.virt = bufs[i].data;
            c->dest.foreign.ref = segs[i].gref;
            c->dest.foreign.offset = offset;
        } else {
            c->source.foreign.ref = segs[i].gref;
            c->source.foreign.offset = offset;
            c->dest.virt = bufs[i].data;
        }
        count++;
    }
    if (!count) {
        return true;
    }
    g->stats->grant_copies++;
    xen_device_copy_grant_refs(g->xendev, to_guest, scratch, count, errp);
    return !*errp;
}

bool xen_block_grants_read_pages(XenBlockGrants *g, const uint32_t *grefs,
                                 unsigned int n, void *buf,
                                 XenDeviceGrantCopySegment *scratch,
                                 Error **errp)
{
    ERRP_GUARD();

    for (unsigned int i = 0; i < n; i++) {
        scratch[i] = (XenDeviceGrantCopySegment) {
            .source.foreign.ref = grefs[i],
            .dest.virt = (uint8_t *)buf + (size_t)i * XEN_BLKIF_PAGE_SIZE,
            .len = XEN_BLKIF_PAGE_SIZE,
        };
    }
    g->stats->grant_copies++;
    xen_device_copy_grant_refs(g->xendev, false, scratch, n, errp);
    return !*errp;
}
