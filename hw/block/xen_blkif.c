/*
 * Xen blkif protocol: ring ABIs, request decoding and validation
 *
 * Each ABI is described by a table of field offsets.  A request is copied
 * out of the shared ring into a private buffer once, then every field is
 * read from that buffer by offset: no pointer into shared memory is ever
 * dereferenced twice, and no per-ABI struct overlays are needed.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "hw/block/xen_blkif.h"

/* A native ring slot: the larger of request and response. */
#define NATIVE_ENTRY_SIZE \
    (sizeof(blkif_request_t) > sizeof(blkif_response_t) ? \
     sizeof(blkif_request_t) : sizeof(blkif_response_t))

/* Byte offsets of the fields of each request kind and of the response. */
typedef struct XenBlkifLayout {
    const char *name;
    size_t entry_size;          /* one ring slot: max(request, response) */
    size_t rsp_size;
    /* read/write/flush/barrier (and the id of any request) */
    size_t rw_handle, rw_id, rw_sector, rw_seg;
    /* discard */
    size_t discard_flag, discard_id, discard_sector, discard_nr_sectors;
    /* indirect */
    size_t ind_op, ind_nr_segments, ind_id, ind_sector, ind_handle, ind_grefs;
} XenBlkifLayout;

/*
 * Both x86 ABIs share the first bytes: operation at 0, then a one-byte field
 * (nr_segments, discard flag or indirect_op).  They differ in where 64-bit
 * fields go: 4-byte aligned on x86_32, 8-byte aligned on x86_64.  Responses
 * are id (8 bytes), operation (1), status (2, at 10) in both; only their
 * padded size differs.
 */
static const XenBlkifLayout layouts[XEN_BLKIF_ABI__MAX] = {
    [XEN_BLKIF_ABI_NATIVE] = {
        .name = "native",
        .entry_size = NATIVE_ENTRY_SIZE,
        .rsp_size = sizeof(blkif_response_t),
        .rw_handle = offsetof(blkif_request_t, handle),
        .rw_id = offsetof(blkif_request_t, id),
        .rw_sector = offsetof(blkif_request_t, sector_number),
        .rw_seg = offsetof(blkif_request_t, seg),
        .discard_flag = offsetof(blkif_request_discard_t, flag),
        .discard_id = offsetof(blkif_request_discard_t, id),
        .discard_sector = offsetof(blkif_request_discard_t, sector_number),
        .discard_nr_sectors = offsetof(blkif_request_discard_t, nr_sectors),
        .ind_op = offsetof(blkif_request_indirect_t, indirect_op),
        .ind_nr_segments = offsetof(blkif_request_indirect_t, nr_segments),
        .ind_id = offsetof(blkif_request_indirect_t, id),
        .ind_sector = offsetof(blkif_request_indirect_t, sector_number),
        .ind_handle = offsetof(blkif_request_indirect_t, handle),
        .ind_grefs = offsetof(blkif_request_indirect_t, indirect_grefs),
    },
    [XEN_BLKIF_ABI_X86_32] = {
        .name = "x86_32-abi",
        .entry_size = 108, .rsp_size = 12,
        .rw_handle = 2, .rw_id = 4, .rw_sector = 12, .rw_seg = 20,
        .discard_flag = 1, .discard_id = 4, .discard_sector = 12,
        .discard_nr_sectors = 20,
        .ind_op = 1, .ind_nr_segments = 2, .ind_id = 4, .ind_sector = 12,
        .ind_handle = 20, .ind_grefs = 24,
    },
    [XEN_BLKIF_ABI_X86_64] = {
        .name = "x86_64-abi",
        .entry_size = 112, .rsp_size = 16,
        .rw_handle = 2, .rw_id = 8, .rw_sector = 16, .rw_seg = 24,
        .discard_flag = 1, .discard_id = 8, .discard_sector = 16,
        .discard_nr_sectors = 24,
        .ind_op = 1, .ind_nr_segments = 2, .ind_id = 8, .ind_sector = 16,
        .ind_handle = 24, .ind_grefs = 28,
    },
};

#define RSP_OFF_ID          0
#define RSP_OFF_OPERATION   8
#define RSP_OFF_STATUS      10
#define RSP_MAX_SIZE        16

/* The shared ring header: four indices, then padding up to 64 bytes. */
#define SRING_OFF_REQ_PROD  0
#define SRING_OFF_REQ_EVENT 4
#define SRING_OFF_RSP_PROD  8
#define SRING_OFF_RSP_EVENT 12
#define SRING_HEADER_SIZE   64

#define SEG_SIZE            8   /* gref (4), first_sect (1), last_sect (1) */

/* The largest slot of any ABI, for private copies on the stack. */
#define MAX_ENTRY_SIZE      112

G_STATIC_ASSERT(sizeof(struct blkif_request_segment) == SEG_SIZE);
G_STATIC_ASSERT(sizeof(blkif_response_t) <= RSP_MAX_SIZE);
G_STATIC_ASSERT(NATIVE_ENTRY_SIZE <= MAX_ENTRY_SIZE);
#if defined(__x86_64__)
/* On an x86_64 host, native must be the x86_64 ABI. */
G_STATIC_ASSERT(offsetof(blkif_request_t, seg) == 24);
G_STATIC_ASSERT(offsetof(blkif_request_indirect_t, indirect_grefs) == 28);
G_STATIC_ASSERT(sizeof(blkif_request_t) == 112);
#elif defined(__i386__)
G_STATIC_ASSERT(offsetof(blkif_request_t, seg) == 20);
G_STATIC_ASSERT(sizeof(blkif_request_t) == 108);
#endif

static uint8_t get8(const uint8_t *p, size_t off)
{
    return p[off];
}

static uint16_t get16(const uint8_t *p, size_t off)
{
    uint16_t v;

    memcpy(&v, p + off, sizeof(v));
    return v;
}

static uint32_t get32(const uint8_t *p, size_t off)
{
    uint32_t v;

    memcpy(&v, p + off, sizeof(v));
    return v;
}

static uint64_t get64(const uint8_t *p, size_t off)
{
    uint64_t v;

    memcpy(&v, p + off, sizeof(v));
    return v;
}

bool xen_blkif_abi_from_name(const char *name, XenBlkifAbi *abi)
{
    /*
     * Arm guests name their ABI (Linux writes XEN_IO_PROTO_ABI_ARM); a
     * backend serving them runs on an Arm host (on Xen on Arm, this QEMU
     * is built for it), where that is the native layout.
     */
    if (!name || !*name || !strcmp(name, "arm-abi")) {
        *abi = XEN_BLKIF_ABI_NATIVE;
        return true;
    }
    for (int i = XEN_BLKIF_ABI_X86_32; i < XEN_BLKIF_ABI__MAX; i++) {
        if (!strcmp(name, layouts[i].name)) {
            *abi = i;
            return true;
        }
    }
    return false;
}

const char *xen_blkif_abi_name(XenBlkifAbi abi)
{
    return abi < XEN_BLKIF_ABI__MAX ? layouts[abi].name : "invalid";
}

size_t xen_blkif_ring_entry_size(XenBlkifAbi abi)
{
    return layouts[abi].entry_size;
}

unsigned int xen_blkif_ring_size(XenBlkifAbi abi, unsigned int nr_pages)
{
    size_t bytes, entries;

    if (abi >= XEN_BLKIF_ABI__MAX || nr_pages == 0 ||
        nr_pages > (1u << XEN_BLKIF_MAX_RING_PAGE_ORDER)) {
        return 0;
    }
    bytes = (size_t)nr_pages * XEN_BLKIF_PAGE_SIZE - SRING_HEADER_SIZE;
    entries = bytes / layouts[abi].entry_size;
    /*
     * Rings hold a power of two entries: round down.  One page holds 36
     * entries of the largest ABI, so entries is never 0 here.
     */
    return 1u << (31 - __builtin_clz((unsigned int)entries));
}

static void decode_segments(const uint8_t *p, unsigned int nr,
                            XenBlkifSegment *segs)
{
    for (unsigned int i = 0; i < nr; i++, p += SEG_SIZE) {
        segs[i].gref = get32(p, 0);
        segs[i].first_sect = get8(p, 4);
        segs[i].last_sect = get8(p, 5);
    }
}

void xen_blkif_decode_request(XenBlkifAbi abi, const void *slot,
                              XenBlkifRequest *req)
{
    const XenBlkifLayout *l = &layouts[abi];
    const uint8_t *p = slot;

    memset(req, 0, sizeof(*req));
    req->operation = get8(p, 0);
    req->op = req->operation;

    switch (req->operation) {
    case BLKIF_OP_DISCARD:
        req->discard_flags = get8(p, l->discard_flag);
        req->id = get64(p, l->discard_id);
        req->sector = get64(p, l->discard_sector);
        req->nr_sectors = get64(p, l->discard_nr_sectors);
        break;
    case BLKIF_OP_INDIRECT:
        req->op = get8(p, l->ind_op);
        req->nr_segments = get16(p, l->ind_nr_segments);
        req->id = get64(p, l->ind_id);
        req->sector = get64(p, l->ind_sector);
        req->handle = get16(p, l->ind_handle);
        for (int i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++) {
            req->indirect_gref[i] = get32(p, l->ind_grefs + i * 4);
        }
        break;
    default:
        /*
         * Read, write, flush, barrier, and unknown operations: the id sits
         * at the same place in every request kind, so an unknown operation
         * still gets its id echoed.
         */
        req->nr_segments = get8(p, 1);
        req->handle = get16(p, l->rw_handle);
        req->id = get64(p, l->rw_id);
        req->sector = get64(p, l->rw_sector);
        decode_segments(p + l->rw_seg,
                        MIN(req->nr_segments, BLKIF_MAX_SEGMENTS_PER_REQUEST),
                        req->seg);
        break;
    }
}

static uint8_t *ring_slot(XenBlkifAbi abi, const void *sring,
                          unsigned int ring_size, uint32_t idx)
{
    return (uint8_t *)sring + SRING_HEADER_SIZE +
           (size_t)(idx & (ring_size - 1)) * layouts[abi].entry_size;
}

void xen_blkif_copy_request(XenBlkifAbi abi, const void *sring,
                            unsigned int ring_size, uint32_t idx,
                            XenBlkifRequest *req)
{
    uint8_t copy[MAX_ENTRY_SIZE];
    size_t size = layouts[abi].entry_size;

    memcpy(copy, ring_slot(abi, sring, ring_size, idx), size);
    /* Decode only the private copy, never the shared slot. */
    barrier();
    xen_blkif_decode_request(abi, copy, req);
}

static const char *const verdict_names[XEN_BLKIF_VERDICT__MAX] = {
    [XEN_BLKIF_OK] = "ok",
    [XEN_BLKIF_BAD_OPERATION] = "unknown operation",
    [XEN_BLKIF_NOT_OFFERED] = "operation not offered",
    [XEN_BLKIF_BAD_INDIRECT_OP] = "bad indirect operation",
    [XEN_BLKIF_BAD_SEGMENT_COUNT] = "bad segment count",
    [XEN_BLKIF_BAD_SEGMENT] = "bad segment",
    [XEN_BLKIF_MISALIGNED] = "misaligned to the logical block",
    [XEN_BLKIF_OUT_OF_RANGE] = "beyond the end of the disk",
    [XEN_BLKIF_READ_ONLY] = "write to a read-only disk",
};

const char *xen_blkif_verdict_name(XenBlkifVerdict verdict)
{
    return verdict < XEN_BLKIF_VERDICT__MAX ? verdict_names[verdict]
                                            : "invalid";
}

int16_t xen_blkif_verdict_status(XenBlkifVerdict verdict)
{
    switch (verdict) {
    case XEN_BLKIF_OK:
        return BLKIF_RSP_OKAY;
    case XEN_BLKIF_BAD_OPERATION:
    case XEN_BLKIF_NOT_OFFERED:
        return BLKIF_RSP_EOPNOTSUPP;
    default:
        return BLKIF_RSP_ERROR;
    }
}

/*
 * Is [sector, sector + count) inside the disk?  Overflow-safe.  The size
 * changes under us on a resize (the main loop sets it): read it once.
 */
static bool range_in_disk(const XenBlkifLimits *limits, uint64_t sector,
                          uint64_t count)
{
    uint64_t disk_sectors = qatomic_read_u64(&limits->disk_sectors);

    return sector <= disk_sectors && count <= disk_sectors - sector;
}

/* Logical block size in 512-byte sectors, minus one: an alignment mask. */
static uint64_t block_mask(const XenBlkifLimits *limits)
{
    return (limits->logical_block_size >> XEN_BLKIF_SECTOR_SHIFT) - 1;
}

XenBlkifVerdict xen_blkif_check_segments(const XenBlkifLimits *limits,
                                         const XenBlkifRequest *req,
                                         const XenBlkifSegment *segs,
                                         unsigned int nr_segs,
                                         uint64_t *nr_sectors)
{
    uint64_t mask = block_mask(limits);
    uint64_t total = 0;

    for (unsigned int i = 0; i < nr_segs; i++) {
        unsigned int first = segs[i].first_sect, last = segs[i].last_sect;

        if (last >= XEN_BLKIF_SECTORS_PER_PAGE || first > last) {
            return XEN_BLKIF_BAD_SEGMENT;
        }
        /* Like Linux's blkback: each segment is whole logical blocks. */
        if ((last - first + 1) & mask) {
            return XEN_BLKIF_MISALIGNED;
        }
        total += last - first + 1;
    }
    if (req->sector & mask) {
        return XEN_BLKIF_MISALIGNED;
    }
    if (!range_in_disk(limits, req->sector, total)) {
        return XEN_BLKIF_OUT_OF_RANGE;
    }
    *nr_sectors = total;
    return XEN_BLKIF_OK;
}

static XenBlkifVerdict validate_rw(const XenBlkifLimits *limits,
                                   const XenBlkifRequest *req)
{
    uint64_t nr_sectors;
    bool is_flush = req->op == BLKIF_OP_FLUSH_DISKCACHE ||
                    req->op == BLKIF_OP_WRITE_BARRIER;

    /* A flush may be empty or carry data to write after it. */
    if (req->nr_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST ||
        (req->nr_segments == 0 && !is_flush)) {
        return XEN_BLKIF_BAD_SEGMENT_COUNT;
    }
    if (req->op != BLKIF_OP_READ && req->nr_segments && limits->read_only) {
        return XEN_BLKIF_READ_ONLY;
    }
    if (req->nr_segments == 0) {
        /*
         * An empty flush moves no data: its sector means nothing (Linux's
         * blkfront sends -1), so there is no range to check.
         */
        return XEN_BLKIF_OK;
    }
    return xen_blkif_check_segments(limits, req, req->seg, req->nr_segments,
                                    &nr_sectors);
}

static XenBlkifVerdict validate_discard(const XenBlkifLimits *limits,
                                        const XenBlkifRequest *req)
{
    uint64_t mask = block_mask(limits);

    if (!limits->discard) {
        return XEN_BLKIF_NOT_OFFERED;
    }
    if ((req->discard_flags & BLKIF_DISCARD_SECURE) &&
        !limits->secure_discard) {
        return XEN_BLKIF_NOT_OFFERED;
    }
    if (limits->read_only) {
        return XEN_BLKIF_READ_ONLY;
    }
    if ((req->sector | req->nr_sectors) & mask) {
        return XEN_BLKIF_MISALIGNED;
    }
    if (!range_in_disk(limits, req->sector, req->nr_sectors)) {
        return XEN_BLKIF_OUT_OF_RANGE;
    }
    return XEN_BLKIF_OK;
}

static XenBlkifVerdict validate_indirect(const XenBlkifLimits *limits,
                                         const XenBlkifRequest *req)
{
    if (!limits->max_indirect_segments) {
        return XEN_BLKIF_NOT_OFFERED;
    }
    if (req->op != BLKIF_OP_READ && req->op != BLKIF_OP_WRITE) {
        return XEN_BLKIF_BAD_INDIRECT_OP;
    }
    if (req->nr_segments == 0 ||
        req->nr_segments > MIN(limits->max_indirect_segments,
                               XEN_BLKIF_MAX_INDIRECT_SEGMENTS)) {
        return XEN_BLKIF_BAD_SEGMENT_COUNT;
    }
    if (req->op == BLKIF_OP_WRITE && limits->read_only) {
        return XEN_BLKIF_READ_ONLY;
    }
    /* Segments and range are checked once the pages have been read. */
    if (req->sector & block_mask(limits)) {
        return XEN_BLKIF_MISALIGNED;
    }
    if (!range_in_disk(limits, req->sector, 0)) {
        return XEN_BLKIF_OUT_OF_RANGE;
    }
    return XEN_BLKIF_OK;
}

XenBlkifVerdict xen_blkif_validate(const XenBlkifLimits *limits,
                                   const XenBlkifRequest *req)
{
    switch (req->operation) {
    case BLKIF_OP_READ:
    case BLKIF_OP_WRITE:
        return validate_rw(limits, req);
    case BLKIF_OP_FLUSH_DISKCACHE:
        if (!limits->flush) {
            return XEN_BLKIF_NOT_OFFERED;
        }
        return validate_rw(limits, req);
    case BLKIF_OP_WRITE_BARRIER:
        if (!limits->barrier) {
            return XEN_BLKIF_NOT_OFFERED;
        }
        return validate_rw(limits, req);
    case BLKIF_OP_DISCARD:
        return validate_discard(limits, req);
    case BLKIF_OP_INDIRECT:
        return validate_indirect(limits, req);
    default:
        return XEN_BLKIF_BAD_OPERATION;
    }
}

unsigned int xen_blkif_indirect_pages(unsigned int nr_segments)
{
    return DIV_ROUND_UP(nr_segments, XEN_BLKIF_SEGS_PER_INDIRECT_PAGE);
}

XenBlkifVerdict xen_blkif_parse_indirect(const XenBlkifLimits *limits,
                                         const XenBlkifRequest *req,
                                         const void *pages,
                                         XenBlkifSegment *segs)
{
    uint64_t nr_sectors;
    XenBlkifVerdict verdict;

    if (req->operation != BLKIF_OP_INDIRECT) {
        return XEN_BLKIF_BAD_OPERATION;
    }
    verdict = validate_indirect(limits, req);
    if (verdict != XEN_BLKIF_OK) {
        return verdict;
    }
    /* Segments are packed across the pages: 512 per page, no gaps. */
    decode_segments(pages, req->nr_segments, segs);
    return xen_blkif_check_segments(limits, req, segs, req->nr_segments,
                                    &nr_sectors);
}

/* Shared ring indices: read and written with single, untorn accesses. */
static uint32_t *sring_index(void *sring, size_t off)
{
    return (uint32_t *)((uint8_t *)sring + off);
}

bool xen_blkif_back_ring_init(XenBlkifBackRing *ring, void *sring,
                              unsigned int nr_pages, XenBlkifAbi abi)
{
    unsigned int size = xen_blkif_ring_size(abi, nr_pages);

    if (!size) {
        return false;
    }
    /*
     * The frontend initialised the ring (normally with both producers at
     * zero); we start consuming where its responses stop.
     */
    ring->sring = sring;
    ring->abi = abi;
    ring->size = size;
    ring->rsp_prod_pvt = qatomic_read(sring_index(sring, SRING_OFF_RSP_PROD));
    ring->req_cons = ring->rsp_prod_pvt;
    return true;
}

bool xen_blkif_ring_pending(XenBlkifBackRing *ring, unsigned int *pending)
{
    uint32_t prod = qatomic_read(sring_index(ring->sring,
                                             SRING_OFF_REQ_PROD));

    /* See the requests up to prod only after reading prod. */
    smp_rmb();
    /*
     * A frontend never has more than a ring's worth of requests without a
     * response: prod can be at most ring->size past our oldest unanswered
     * request.  Nor does prod ever fall behind what we consumed.  Anything
     * else is corruption: prod moving back past our responses wraps to a
     * huge distance, and back between them and req_cons would make
     * prod - req_cons nearly 2^32 requests.
     */
    if (prod - ring->rsp_prod_pvt > ring->size ||
        prod - ring->rsp_prod_pvt < ring->req_cons - ring->rsp_prod_pvt) {
        *pending = 0;
        return false;
    }
    *pending = prod - ring->req_cons;
    return true;
}

bool xen_blkif_ring_final_check(XenBlkifBackRing *ring)
{
    uint32_t *req_prod = sring_index(ring->sring, SRING_OFF_REQ_PROD);

    if (qatomic_read(req_prod) != ring->req_cons) {
        return true;
    }
    qatomic_set(sring_index(ring->sring, SRING_OFF_REQ_EVENT),
                ring->req_cons + 1);
    /* Publish req_event before looking at req_prod again. */
    smp_mb();
    return qatomic_read(req_prod) != ring->req_cons;
}

void xen_blkif_ring_put_response(XenBlkifBackRing *ring, uint64_t id,
                                 uint8_t op, int16_t status)
{
    const XenBlkifLayout *l = &layouts[ring->abi];
    uint8_t rsp[RSP_MAX_SIZE] = { 0 };

    memcpy(rsp + RSP_OFF_ID, &id, sizeof(id));
    rsp[RSP_OFF_OPERATION] = op;
    memcpy(rsp + RSP_OFF_STATUS, &status, sizeof(status));
    /* The whole response, padding included: nothing of ours leaks. */
    memcpy(ring_slot(ring->abi, ring->sring, ring->size, ring->rsp_prod_pvt),
           rsp, l->rsp_size);
    ring->rsp_prod_pvt++;
}

bool xen_blkif_ring_push_responses(XenBlkifBackRing *ring)
{
    uint32_t *rsp_prod = sring_index(ring->sring, SRING_OFF_RSP_PROD);
    uint32_t old = qatomic_read(rsp_prod);
    uint32_t new = ring->rsp_prod_pvt;
    uint32_t event;

    /* The frontend must see the responses before the index that covers them */
    smp_wmb();
    qatomic_set(rsp_prod, new);
    /* ... and we must read rsp_event only after publishing the index. */
    smp_mb();
    event = qatomic_read(sring_index(ring->sring, SRING_OFF_RSP_EVENT));
    /* Notify if rsp_event lies in (old, new]. */
    return (uint32_t)(new - event) < (uint32_t)(new - old);
}
