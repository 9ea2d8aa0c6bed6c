/*
 * xenblk-front: the blkif ring ABIs, written out by hand
 *
 * Xen's blkif.h defines one request layout per guest ABI through C
 * structs, so a program only gets its own machine's layout from it.  A
 * frontend that chooses its ABI at run time (and a responder that serves
 * any of them) needs the three layouts side by side: this module describes
 * each as a table of byte offsets and converts between a host-order
 * XbRequest/XbResponse and the bytes of a ring slot.
 *
 *                      x86_32-abi          x86_64-abi (native here)
 *   request            108 bytes           112 bytes
 *   id                 offset 4            offset 8
 *   sector_number      offset 12           offset 16
 *   seg[11]            offset 20           offset 24
 *   response           12 bytes            16 bytes
 *
 * (x86_32 packs 64-bit fields on 4 bytes; x86_64 aligns them on 8.)
 *
 * The ring index rules (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY and friends
 * from Xen's io/ring.h) are implemented here too, for both ends.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XENBLK_BLKIF_ABI_H
#define XENBLK_BLKIF_ABI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef DIV_ROUND_UP
#define DIV_ROUND_UP(n, d)      (((n) + (d) - 1) / (d))
#endif

#define XB_PAGE_SIZE            4096u
#define XB_SECTOR_SIZE          512u    /* ring sector unit, always */
#define XB_SECTORS_PER_PAGE     (XB_PAGE_SIZE / XB_SECTOR_SIZE)
#define XB_MAX_SEGS_DIRECT      11
#define XB_MAX_INDIRECT_PAGES   8
#define XB_SEGS_PER_INDIRECT_PAGE (XB_PAGE_SIZE / 8)
#define XB_MAX_RING_PAGES       16      /* order 4 */
#define XB_SRING_HEADER         64      /* indices and padding */

/* Operations and statuses, as blkif.h */
enum {
    XB_OP_READ = 0,
    XB_OP_WRITE = 1,
    XB_OP_WRITE_BARRIER = 2,
    XB_OP_FLUSH_DISKCACHE = 3,
    XB_OP_RESERVED_1 = 4,
    XB_OP_DISCARD = 5,
    XB_OP_INDIRECT = 6,
};

enum {
    XB_RSP_OKAY = 0,
    XB_RSP_ERROR = -1,
    XB_RSP_EOPNOTSUPP = -2,
};

#define XB_DISCARD_SECURE       1

typedef enum XbAbi {
    XB_ABI_X86_32,
    XB_ABI_X86_64,
} XbAbi;

#if defined(__x86_64__) || defined(__aarch64__)
#define XB_ABI_HOST XB_ABI_X86_64
#else
#define XB_ABI_HOST XB_ABI_X86_32
#endif

/* Where each field of a request and response lives, for one ABI. */
typedef struct XbLayout {
    const char *name;           /* the "protocol" node's value */
    size_t req_size;
    size_t rsp_size;
    size_t entry_size;          /* the ring slot: union of both */
    size_t id;
    size_t sector;
    size_t seg;                 /* read/write: seg[] */
    size_t discard_nr_sectors;
    size_t indirect_handle;
    size_t indirect_grefs;
} XbLayout;

const XbLayout *xb_layout(XbAbi abi);
bool xb_abi_from_name(const char *name, XbAbi *abi);

typedef struct XbSegment {
    uint32_t gref;
    uint8_t first_sect;
    uint8_t last_sect;
} XbSegment;

/*
 * A request in host order.  Which fields matter depends on @operation:
 * read/write/flush/barrier use nr_segments and seg[]; discard uses flag
 * (the byte after operation) and nr_sectors; indirect uses indirect_op,
 * indirect_nr_segments and indirect_grefs[].
 */
typedef struct XbRequest {
    uint8_t operation;
    uint8_t nr_segments;        /* also the discard flag byte */
    uint16_t handle;
    uint64_t id;
    uint64_t sector;
    XbSegment seg[XB_MAX_SEGS_DIRECT];
    uint64_t nr_sectors;        /* discard */
    uint8_t indirect_op;        /* indirect */
    uint16_t indirect_nr_segments;
    uint32_t indirect_grefs[XB_MAX_INDIRECT_PAGES];
} XbRequest;

typedef struct XbResponse {
    uint64_t id;
    uint8_t operation;
    int16_t status;
} XbResponse;

/* Whole ring slots: every byte of the slot is written (no stale bytes). */
void xb_encode_request(const XbLayout *l, const XbRequest *req, void *slot);
void xb_decode_request(const XbLayout *l, const void *slot, XbRequest *req);
void xb_encode_response(const XbLayout *l, const XbResponse *rsp,
                        void *slot);
void xb_decode_response(const XbLayout *l, const void *slot,
                        XbResponse *rsp);

/* An indirect page holds an array of 8-byte blkif_request_segment. */
void xb_encode_indirect_seg(void *page, unsigned int i, const XbSegment *s);
void xb_decode_indirect_seg(const void *page, unsigned int i, XbSegment *s);

/* The shared ring: four indices, padding, then the slots. */
typedef struct XbSring {
    uint32_t req_prod;
    uint32_t req_event;
    uint32_t rsp_prod;
    uint32_t rsp_event;
    uint8_t pad[XB_SRING_HEADER - 16];
    uint8_t ring[];
} XbSring;

/* Slots in a ring of @pages pages: a power of two, as __RING_SIZE. */
unsigned int xb_ring_size(const XbLayout *l, unsigned int pages);

static inline void *xb_slot(XbSring *s, const XbLayout *l,
                            unsigned int size, uint32_t idx)
{
    return s->ring + (size_t)(idx & (size - 1)) * l->entry_size;
}

/* What SHARED_RING_INIT does: indices zero, events one. */
void xb_sring_init(XbSring *s);

/* ---- Frontend side (FRONT_RING_*) ---- */

/*
 * Publish requests up to @req_prod_pvt; returns whether the backend asked
 * to be notified (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY).
 */
bool xb_front_push_requests(XbSring *s, uint32_t req_prod_pvt);

/* Index up to which responses are there to read (with a read barrier). */
uint32_t xb_front_rsp_prod(XbSring *s);

/*
 * RING_FINAL_CHECK_FOR_RESPONSES: ask to be notified of the next response
 * and look again, so that none slips by between the look and the wait.
 */
bool xb_front_final_check(XbSring *s, uint32_t rsp_cons);

/* ---- Backend side (BACK_RING_*) ---- */

uint32_t xb_back_req_prod(XbSring *s);
bool xb_back_push_responses(XbSring *s, uint32_t rsp_prod_pvt);
bool xb_back_final_check(XbSring *s, uint32_t req_cons);

#endif /* XENBLK_BLKIF_ABI_H */
