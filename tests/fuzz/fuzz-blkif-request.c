/*
 * libFuzzer target: blkif request decoding and validation
 *
 * Input layout (all of it guest-controlled in real life):
 *   byte 0      ABI (mod 3)
 *   byte 1      limit flags: read-only, flush, barrier, discard, secure,
 *               indirect offered; bits 6-7 pick the logical block size
 *   bytes 2-9   disk size in sectors
 *   then        one ring slot (112 bytes, zero-padded), then indirect
 *               pages (zero-padded to what the request needs)
 *
 * Checks, beyond "no crash, no sanitizer report": an accepted request stays
 * inside the disk and within its pages; the status is one of the three the
 * protocol defines; the ring never reports more pending requests than fit.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "hw/block/xen_blkif.h"

#define SLOT_SIZE 112

static void check(bool cond)
{
    if (!cond) {
        __builtin_trap();
    }
}

static void check_accepted(const XenBlkifLimits *l, const XenBlkifRequest *req,
                           const XenBlkifSegment *segs, unsigned int n)
{
    uint64_t sectors = 0;
    uint64_t mask = (l->logical_block_size >> 9) - 1;

    if (n == 0) {
        /* only an empty flush moves no data; its sector means nothing */
        check(req->op == BLKIF_OP_FLUSH_DISKCACHE ||
              req->op == BLKIF_OP_WRITE_BARRIER);
        return;
    }
    for (unsigned int i = 0; i < n; i++) {
        check(segs[i].first_sect <= segs[i].last_sect);
        check(segs[i].last_sect < XEN_BLKIF_SECTORS_PER_PAGE);
        sectors += segs[i].last_sect - segs[i].first_sect + 1;
    }
    check(req->sector <= l->disk_sectors);
    check(sectors <= l->disk_sectors - req->sector);
    check((req->sector & mask) == 0 && (sectors & mask) == 0);
    if (l->read_only && n) {
        check(req->op == BLKIF_OP_READ);
    }
}

static void fuzz_ring(XenBlkifAbi abi, const uint8_t *data, size_t size)
{
    static uint8_t ring[XEN_BLKIF_PAGE_SIZE];
    XenBlkifBackRing back;
    unsigned int pending;

    memset(ring, 0, sizeof(ring));
    memcpy(ring, data, MIN(size, sizeof(ring)));
    check(xen_blkif_back_ring_init(&back, ring, 1, abi));
    if (!xen_blkif_ring_pending(&back, &pending)) {
        return;
    }
    check(pending <= back.size);
    for (unsigned int i = 0; i < pending; i++) {
        XenBlkifRequest req;

        xen_blkif_copy_request(abi, ring, back.size, back.req_cons++, &req);
        xen_blkif_ring_put_response(&back, req.id, req.op, BLKIF_RSP_ERROR);
    }
    xen_blkif_ring_push_responses(&back);
    xen_blkif_ring_final_check(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t pages[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST *
                         XEN_BLKIF_PAGE_SIZE];
    static XenBlkifSegment segs[XEN_BLKIF_MAX_INDIRECT_SEGMENTS];
    uint8_t slot[SLOT_SIZE] = { 0 };
    XenBlkifLimits l;
    XenBlkifRequest req;
    XenBlkifVerdict v;
    XenBlkifAbi abi;
    int16_t status;

    if (size < 10) {
        return 0;
    }
    abi = data[0] % XEN_BLKIF_ABI__MAX;
    l = (XenBlkifLimits) {
        .read_only = data[1] & 1,
        .flush = data[1] & 2,
        .barrier = data[1] & 4,
        .discard = data[1] & 8,
        .secure_discard = data[1] & 16,
        .max_indirect_segments = (data[1] & 32) ? 256 : 0,
        .logical_block_size = 512u << (data[1] >> 6),
    };
    memcpy(&l.disk_sectors, data + 2, 8);
    data += 10;
    size -= 10;

    memcpy(slot, data, MIN(size, xen_blkif_ring_entry_size(abi)));
    xen_blkif_decode_request(abi, slot, &req);
    v = xen_blkif_validate(&l, &req);
    status = xen_blkif_verdict_status(v);
    check(status == BLKIF_RSP_OKAY || status == BLKIF_RSP_ERROR ||
          status == BLKIF_RSP_EOPNOTSUPP);
    check(xen_blkif_verdict_name(v) != NULL);

    if (v == XEN_BLKIF_OK) {
        switch (req.operation) {
        case BLKIF_OP_INDIRECT: {
            size_t rest = size > SLOT_SIZE ? size - SLOT_SIZE : 0;

            check(req.op == BLKIF_OP_READ || req.op == BLKIF_OP_WRITE);
            check(req.nr_segments >= 1 &&
                  req.nr_segments <= l.max_indirect_segments);
            memset(pages, 0, sizeof(pages));
            if (rest) {
                memcpy(pages, data + SLOT_SIZE, MIN(rest, sizeof(pages)));
            }
            if (xen_blkif_parse_indirect(&l, &req, pages, segs) ==
                XEN_BLKIF_OK) {
                check_accepted(&l, &req, segs, req.nr_segments);
            }
            break;
        }
        case BLKIF_OP_DISCARD:
            check(l.discard && !l.read_only);
            check(req.sector <= l.disk_sectors &&
                  req.nr_sectors <= l.disk_sectors - req.sector);
            break;
        default:
            check(req.nr_segments <= BLKIF_MAX_SEGMENTS_PER_REQUEST);
            check_accepted(&l, &req, req.seg, req.nr_segments);
            break;
        }
    }
    fuzz_ring(abi, data, size);
    return 0;
}
