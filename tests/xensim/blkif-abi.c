/*
 * xenblk-front: the blkif ring ABIs, written out by hand
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <string.h>

#include "blkif-abi.h"

/*
 * Offsets worked out from blkif.h's structs: x86_32 aligns uint64_t on 4
 * bytes (the i386 SysV ABI), x86_64 on 8.  The indirect request's handle
 * follows sector_number; its grefs are 4-byte aligned after the handle.
 */
static const XbLayout layouts[] = {
    [XB_ABI_X86_32] = {
        .name = "x86_32-abi",
        .req_size = 108, .rsp_size = 12, .entry_size = 108,
        .id = 4, .sector = 12, .seg = 20, .discard_nr_sectors = 20,
        .indirect_handle = 20, .indirect_grefs = 24,
    },
    [XB_ABI_X86_64] = {
        .name = "x86_64-abi",
        .req_size = 112, .rsp_size = 16, .entry_size = 112,
        .id = 8, .sector = 16, .seg = 24, .discard_nr_sectors = 24,
        .indirect_handle = 24, .indirect_grefs = 28,
    },
};

const XbLayout *xb_layout(XbAbi abi)
{
    return &layouts[abi];
}

bool xb_abi_from_name(const char *name, XbAbi *abi)
{
    if (!name) {
        *abi = XB_ABI_HOST;
        return true;
    }
    for (unsigned int i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++) {
        if (!strcmp(name, layouts[i].name)) {
            *abi = i;
            return true;
        }
    }
    return false;
}

/* Little-endian stores and loads at any alignment. */
static void put8(uint8_t *p, size_t off, uint8_t v)
{
    p[off] = v;
}

static void put16(uint8_t *p, size_t off, uint16_t v)
{
    memcpy(p + off, &v, sizeof(v));
}

static void put32(uint8_t *p, size_t off, uint32_t v)
{
    memcpy(p + off, &v, sizeof(v));
}

static void put64(uint8_t *p, size_t off, uint64_t v)
{
    memcpy(p + off, &v, sizeof(v));
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

static void put_seg(uint8_t *p, size_t off, const XbSegment *s)
{
    put32(p, off, s->gref);
    put8(p, off + 4, s->first_sect);
    put8(p, off + 5, s->last_sect);
    put16(p, off + 6, 0);
}

static void get_seg(const uint8_t *p, size_t off, XbSegment *s)
{
    s->gref = get32(p, off);
    s->first_sect = p[off + 4];
    s->last_sect = p[off + 5];
}

void xb_encode_request(const XbLayout *l, const XbRequest *req, void *slot)
{
    uint8_t buf[128] = { 0 };

    put8(buf, 0, req->operation);
    put64(buf, l->id, req->id);
    put64(buf, l->sector, req->sector);
    switch (req->operation) {
    case XB_OP_INDIRECT:
        put8(buf, 1, req->indirect_op);
        put16(buf, 2, req->indirect_nr_segments);
        put16(buf, l->indirect_handle, req->handle);
        for (unsigned int i = 0; i < XB_MAX_INDIRECT_PAGES; i++) {
            put32(buf, l->indirect_grefs + 4 * i, req->indirect_grefs[i]);
        }
        break;
    case XB_OP_DISCARD:
        put8(buf, 1, req->nr_segments);     /* the flag byte */
        put16(buf, 2, req->handle);
        put64(buf, l->discard_nr_sectors, req->nr_sectors);
        break;
    default:
        put8(buf, 1, req->nr_segments);
        put16(buf, 2, req->handle);
        for (unsigned int i = 0; i < XB_MAX_SEGS_DIRECT; i++) {
            put_seg(buf, l->seg + 8 * i, &req->seg[i]);
        }
        break;
    }
    /* One store of the whole slot: the backend never sees our stack. */
    memcpy(slot, buf, l->entry_size);
}

void xb_decode_request(const XbLayout *l, const void *slot, XbRequest *req)
{
    const uint8_t *buf = slot;

    memset(req, 0, sizeof(*req));
    req->operation = buf[0];
    req->id = get64(buf, l->id);
    req->sector = get64(buf, l->sector);
    switch (req->operation) {
    case XB_OP_INDIRECT:
        req->indirect_op = buf[1];
        req->indirect_nr_segments = get16(buf, 2);
        req->handle = get16(buf, l->indirect_handle);
        for (unsigned int i = 0; i < XB_MAX_INDIRECT_PAGES; i++) {
            req->indirect_grefs[i] = get32(buf, l->indirect_grefs + 4 * i);
        }
        break;
    case XB_OP_DISCARD:
        req->nr_segments = buf[1];
        req->handle = get16(buf, 2);
        req->nr_sectors = get64(buf, l->discard_nr_sectors);
        break;
    default:
        req->nr_segments = buf[1];
        req->handle = get16(buf, 2);
        for (unsigned int i = 0; i < XB_MAX_SEGS_DIRECT; i++) {
            get_seg(buf, l->seg + 8 * i, &req->seg[i]);
        }
        break;
    }
}

void xb_encode_response(const XbLayout *l, const XbResponse *rsp, void *slot)
{
    uint8_t buf[16] = { 0 };

    put64(buf, 0, rsp->id);
    put8(buf, 8, rsp->operation);
    put16(buf, 10, (uint16_t)rsp->status);
    memcpy(slot, buf, l->rsp_size);
}

void xb_decode_response(const XbLayout *l, const void *slot, XbResponse *rsp)
{
    const uint8_t *buf = slot;

    rsp->id = get64(buf, 0);
    rsp->operation = buf[8];
    rsp->status = (int16_t)get16(buf, 10);
}

void xb_encode_indirect_seg(void *page, unsigned int i, const XbSegment *s)
{
    put_seg(page, (size_t)i * 8, s);
}

void xb_decode_indirect_seg(const void *page, unsigned int i, XbSegment *s)
{
    get_seg(page, (size_t)i * 8, s);
}

unsigned int xb_ring_size(const XbLayout *l, unsigned int pages)
{
    size_t n = ((size_t)pages * XB_PAGE_SIZE - XB_SRING_HEADER) /
               l->entry_size;
    unsigned int size = 1;

    while ((size_t)size * 2 <= n) {
        size *= 2;
    }
    return size;
}

void xb_sring_init(XbSring *s)
{
    __atomic_store_n(&s->req_prod, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->rsp_prod, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->req_event, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&s->rsp_event, 1, __ATOMIC_RELAXED);
    memset(s->pad, 0, sizeof(s->pad));
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/*
 * The notify test of ring.h: notify when the other end's event index lies
 * in (old, new], i.e. it asked to hear about one of the entries just
 * published.  Unsigned arithmetic makes the comparison wrap-safe.
 */
static bool event_in_window(uint32_t event, uint32_t old, uint32_t new)
{
    return (uint32_t)(new - event) < (uint32_t)(new - old);
}

bool xb_front_push_requests(XbSring *s, uint32_t req_prod_pvt)
{
    uint32_t old = __atomic_load_n(&s->req_prod, __ATOMIC_RELAXED);

    /* Requests visible before the index (wmb), index before the event
     * read (mb). */
    __atomic_store_n(&s->req_prod, req_prod_pvt, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return event_in_window(__atomic_load_n(&s->req_event, __ATOMIC_RELAXED),
                           old, req_prod_pvt);
}

uint32_t xb_front_rsp_prod(XbSring *s)
{
    return __atomic_load_n(&s->rsp_prod, __ATOMIC_ACQUIRE);
}

bool xb_front_final_check(XbSring *s, uint32_t rsp_cons)
{
    if (xb_front_rsp_prod(s) != rsp_cons) {
        return true;
    }
    __atomic_store_n(&s->rsp_event, rsp_cons + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return xb_front_rsp_prod(s) != rsp_cons;
}

uint32_t xb_back_req_prod(XbSring *s)
{
    return __atomic_load_n(&s->req_prod, __ATOMIC_ACQUIRE);
}

bool xb_back_push_responses(XbSring *s, uint32_t rsp_prod_pvt)
{
    uint32_t old = __atomic_load_n(&s->rsp_prod, __ATOMIC_RELAXED);

    __atomic_store_n(&s->rsp_prod, rsp_prod_pvt, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return event_in_window(__atomic_load_n(&s->rsp_event, __ATOMIC_RELAXED),
                           old, rsp_prod_pvt);
}

bool xb_back_final_check(XbSring *s, uint32_t req_cons)
{
    if (xb_back_req_prod(s) != req_cons) {
        return true;
    }
    __atomic_store_n(&s->req_event, req_cons + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return xb_back_req_prod(s) != req_cons;
}
