/*
 * Xen blkif protocol: ring ABIs, request decoding and validation
 *
 * This layer is pure: it holds no device state and performs no I/O, so the
 * unit tests and fuzzers link it on its own.  The dataplane gives it shared
 * memory (a ring, the contents of indirect pages) and gets back canonical,
 * validated requests and ring bookkeeping.
 *
 * Units follow Xen's reconciled blkif specification: every sector number on
 * the ring, first_sect/last_sect and the "sectors" node count 512-byte
 * sectors, whatever the disk's logical block size.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef HW_BLOCK_XEN_BLKIF_H
#define HW_BLOCK_XEN_BLKIF_H

#include "hw/xen/interface/io/blkif.h"

/* Grants always cover Xen pages of 4 KiB, whatever the host page size. */
#define XEN_BLKIF_PAGE_SIZE         4096u
#define XEN_BLKIF_SECTOR_SHIFT      9
#define XEN_BLKIF_SECTOR_SIZE       (1u << XEN_BLKIF_SECTOR_SHIFT)
#define XEN_BLKIF_SECTORS_PER_PAGE  \
    (XEN_BLKIF_PAGE_SIZE / XEN_BLKIF_SECTOR_SIZE)

/* Segment descriptors in one indirect page. */
#define XEN_BLKIF_SEGS_PER_INDIRECT_PAGE \
    (XEN_BLKIF_PAGE_SIZE / sizeof(struct blkif_request_segment))
/* The most segments an indirect request can describe at all. */
#define XEN_BLKIF_MAX_INDIRECT_SEGMENTS \
    (BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * XEN_BLKIF_SEGS_PER_INDIRECT_PAGE)

/* Largest ring we accept: 2^4 = 16 pages, as Linux's blkback. */
#define XEN_BLKIF_MAX_RING_PAGE_ORDER 4

/*
 * The three ring ABIs.  A 32-bit x86 guest lays out requests with 4-byte
 * alignment for 64-bit fields; a 64-bit one with natural alignment.
 * "native" is whatever this host's compiler makes of blkif.h.
 */
typedef enum XenBlkifAbi {
    XEN_BLKIF_ABI_NATIVE,
    XEN_BLKIF_ABI_X86_32,
    XEN_BLKIF_ABI_X86_64,
    XEN_BLKIF_ABI__MAX,
} XenBlkifAbi;

/*
 * Map the frontend's "protocol" node to an ABI.  A missing node (NULL) or
 * an empty string means native.  Returns false for anything unknown.
 */
bool xen_blkif_abi_from_name(const char *name, XenBlkifAbi *abi);
const char *xen_blkif_abi_name(XenBlkifAbi abi);

/* Bytes of one ring slot (the union of request and response) for an ABI. */
size_t xen_blkif_ring_entry_size(XenBlkifAbi abi);

/* Entries of a ring occupying @nr_pages pages, a power of two (0: invalid). */
unsigned int xen_blkif_ring_size(XenBlkifAbi abi, unsigned int nr_pages);

/* One data segment: a grant and the 512-byte sectors used within its page. */
typedef struct XenBlkifSegment {
    uint32_t gref;
    uint8_t first_sect;
    uint8_t last_sect;
} XenBlkifSegment;

/*
 * The canonical request, decoded from one ABI's ring slot.  Only the fields
 * of the request's kind are meaningful.
 */
typedef struct XenBlkifRequest {
    uint8_t operation;      /* as written on the ring (BLKIF_OP_*) */
    uint8_t op;             /* effective: indirect_op for BLKIF_OP_INDIRECT */
    uint16_t handle;
    uint64_t id;            /* echoed in the response */
    uint64_t sector;        /* 512-byte units */
    unsigned int nr_segments;
    /* direct requests: the segments themselves */
    XenBlkifSegment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
    /* indirect requests: the pages that hold the segments */
    uint32_t indirect_gref[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
    /* discard */
    uint64_t nr_sectors;    /* 512-byte units */
    uint8_t discard_flags;
} XenBlkifRequest;

/*
 * Copy the slot at ring index @idx out of shared memory (exactly once: the
 * frontend may rewrite it at any moment) and decode the private copy.
 * @sring points at the shared ring page(s); @ring_size is in entries.
 */
void xen_blkif_copy_request(XenBlkifAbi abi, const void *sring,
                            unsigned int ring_size, uint32_t idx,
                            XenBlkifRequest *req);

/* Decode a request from a private buffer of xen_blkif_ring_entry_size(). */
void xen_blkif_decode_request(XenBlkifAbi abi, const void *slot,
                              XenBlkifRequest *req);

/* What the backend offers this frontend; validation is against this. */
typedef struct XenBlkifLimits {
    uint64_t disk_sectors;          /* disk size in 512-byte units */
    uint32_t logical_block_size;    /* bytes; a power of two >= 512 */
    bool read_only;
    bool flush;                     /* feature-flush-cache */
    bool barrier;                   /* feature-barrier */
    bool discard;                   /* feature-discard */
    bool secure_discard;            /* discard-secure */
    unsigned int max_indirect_segments; /* 0: indirect not offered */
} XenBlkifLimits;

/* Why a request was refused; for trace events and the guest-error log. */
typedef enum XenBlkifVerdict {
    XEN_BLKIF_OK,
    XEN_BLKIF_BAD_OPERATION,        /* unknown operation */
    XEN_BLKIF_NOT_OFFERED,          /* an operation or flag not offered */
    XEN_BLKIF_BAD_INDIRECT_OP,      /* indirect_op is not read or write */
    XEN_BLKIF_BAD_SEGMENT_COUNT,
    XEN_BLKIF_BAD_SEGMENT,          /* first/last_sect out of order or page */
    XEN_BLKIF_MISALIGNED,           /* not whole logical blocks */
    XEN_BLKIF_OUT_OF_RANGE,         /* beyond the end of the disk */
    XEN_BLKIF_READ_ONLY,            /* a write to a read-only disk */
    XEN_BLKIF_VERDICT__MAX,
} XenBlkifVerdict;

const char *xen_blkif_verdict_name(XenBlkifVerdict verdict);

/* The response status the protocol demands for a verdict. */
int16_t xen_blkif_verdict_status(XenBlkifVerdict verdict);

/*
 * Check everything in @req that can be checked before the indirect pages
 * are read: operation, whether it was offered, segment counts, and (for
 * direct requests and discards) segments, sector range and alignment.
 * For an indirect request that passes, read the descriptor pages and call
 * xen_blkif_parse_indirect().
 */
XenBlkifVerdict xen_blkif_validate(const XenBlkifLimits *limits,
                                   const XenBlkifRequest *req);

/* Number of indirect pages an indirect request with @nr_segments uses. */
unsigned int xen_blkif_indirect_pages(unsigned int nr_segments);

/*
 * Decode and validate the segments of an indirect request.  @pages holds a
 * private copy of the xen_blkif_indirect_pages() descriptor pages, one
 * XEN_BLKIF_PAGE_SIZE after another.  On XEN_BLKIF_OK, @segs holds
 * req->nr_segments segments.
 */
XenBlkifVerdict xen_blkif_parse_indirect(const XenBlkifLimits *limits,
                                         const XenBlkifRequest *req,
                                         const void *pages,
                                         XenBlkifSegment *segs);

/*
 * Check a list of segments (direct or indirect) and the disk range they
 * cover, starting at @req->sector.  On success *@nr_sectors is the length
 * of the transfer in 512-byte sectors.
 */
XenBlkifVerdict xen_blkif_check_segments(const XenBlkifLimits *limits,
                                         const XenBlkifRequest *req,
                                         const XenBlkifSegment *segs,
                                         unsigned int nr_segs,
                                         uint64_t *nr_sectors);

/*
 * The back end of one shared ring: a private consumer index and response
 * producer, and the shared page(s) mapped by the dataplane.
 */
typedef struct XenBlkifBackRing {
    void *sring;
    XenBlkifAbi abi;
    unsigned int size;          /* entries; a power of two */
    uint32_t req_cons;          /* next request to consume */
    uint32_t rsp_prod_pvt;      /* next response slot, not yet published */
} XenBlkifBackRing;

/*
 * Attach to a shared ring of @nr_pages pages that the frontend initialised.
 * Returns false if no ring of that size is possible.
 */
bool xen_blkif_back_ring_init(XenBlkifBackRing *ring, void *sring,
                              unsigned int nr_pages, XenBlkifAbi abi);

/*
 * How many requests the frontend has published and we have not consumed.
 * Returns false if the producer index is more than a ring ahead of our
 * consumer, would make us answer more requests than the ring has free
 * response slots, or fell behind what we consumed: the ring is corrupt and
 * must not be consumed further.
 */
bool xen_blkif_ring_pending(XenBlkifBackRing *ring, unsigned int *pending);

/*
 * Before going idle: ask the frontend to notify us for the next request
 * and look once more.  Returns true if requests arrived meanwhile.
 */
bool xen_blkif_ring_final_check(XenBlkifBackRing *ring);

/* Write a response into the next private slot (every byte of it). */
void xen_blkif_ring_put_response(XenBlkifBackRing *ring, uint64_t id,
                                 uint8_t op, int16_t status);

/*
 * Publish the responses written since the last push.  Returns true if the
 * frontend asked to be notified of them.
 */
bool xen_blkif_ring_push_responses(XenBlkifBackRing *ring);

#endif /* HW_BLOCK_XEN_BLKIF_H */
