/*
 * Unit tests for the blkif protocol layer (hw/block/xen_blkif.c)
 *
 * Requests are encoded here with struct layouts written from the ABI
 * definitions (x86_32: 64-bit fields 4-byte aligned; x86_64: natural
 * alignment), independently of the offset tables the decoder uses, so a
 * wrong offset on either side shows up as a failed round trip.
 *
 * Every validation rule is exercised for every ABI.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "hw/block/xen_blkif.h"

/* ---- Test-side encoders for the two x86 ABIs ---- */

struct seg_wire {
    uint32_t gref;
    uint8_t first_sect, last_sect;
    uint16_t pad;
};

#pragma pack(push, 4)
struct rw32 {
    uint8_t operation, nr_segments;
    uint16_t handle;
    uint64_t id, sector;
    struct seg_wire seg[11];
};
struct discard32 {
    uint8_t operation, flag;
    uint16_t handle;
    uint64_t id, sector, nr_sectors;
};
struct indirect32 {
    uint8_t operation, indirect_op;
    uint16_t nr_segments;
    uint64_t id, sector;
    uint16_t handle, pad;
    uint32_t grefs[8];
    uint64_t pad2;
};
struct rsp32 {
    uint64_t id;
    uint8_t operation;
    int16_t status;
};
#pragma pack(pop)

struct rw64 {
    uint8_t operation, nr_segments;
    uint16_t handle;
    uint64_t __attribute__((aligned(8))) id;
    uint64_t sector;
    struct seg_wire seg[11];
};
struct discard64 {
    uint8_t operation, flag;
    uint16_t handle;
    uint64_t __attribute__((aligned(8))) id;
    uint64_t sector, nr_sectors;
};
struct indirect64 {
    uint8_t operation, indirect_op;
    uint16_t nr_segments;
    uint64_t __attribute__((aligned(8))) id;
    uint64_t sector;
    uint16_t handle, pad;
    uint32_t grefs[8];
    uint32_t pad2;
};
struct rsp64 {
    uint64_t id;
    uint8_t operation;
    int16_t status;
};

G_STATIC_ASSERT(sizeof(struct rw32) == 108);
G_STATIC_ASSERT(sizeof(struct rw64) == 112);
G_STATIC_ASSERT(sizeof(struct indirect32) == 64);
G_STATIC_ASSERT(sizeof(struct indirect64) == 64);
G_STATIC_ASSERT(sizeof(struct rsp32) == 12);
G_STATIC_ASSERT(sizeof(struct rsp64) == 16);

static const XenBlkifAbi all_abis[] = {
    XEN_BLKIF_ABI_NATIVE, XEN_BLKIF_ABI_X86_32, XEN_BLKIF_ABI_X86_64,
};

/* The x86 ABI a native ring uses on this host. */
static XenBlkifAbi concrete(XenBlkifAbi abi)
{
    if (abi == XEN_BLKIF_ABI_NATIVE) {
        return sizeof(void *) == 8 ? XEN_BLKIF_ABI_X86_64
                                   : XEN_BLKIF_ABI_X86_32;
    }
    return abi;
}

/* A request as a test writes it, before encoding for an ABI. */
typedef struct TestReq {
    uint8_t operation;
    uint8_t nr_segments;        /* direct */
    uint8_t indirect_op;
    uint16_t ind_nr_segments;
    uint16_t handle;
    uint64_t id, sector, nr_sectors;
    uint8_t flag;
    XenBlkifSegment seg[11];
    uint32_t grefs[8];
} TestReq;

/* Encode @t into the slot @buf (zero-filled first) for @abi. */
static void encode(XenBlkifAbi abi, const TestReq *t, void *buf)
{
    bool is32 = concrete(abi) == XEN_BLKIF_ABI_X86_32;

    memset(buf, 0, 112);
    if (t->operation == BLKIF_OP_DISCARD) {
        if (is32) {
            struct discard32 d = { t->operation, t->flag, t->handle, t->id,
                                   t->sector, t->nr_sectors };
            memcpy(buf, &d, sizeof(d));
        } else {
            struct discard64 d = { t->operation, t->flag, t->handle, t->id,
                                   t->sector, t->nr_sectors };
            memcpy(buf, &d, sizeof(d));
        }
    } else if (t->operation == BLKIF_OP_INDIRECT) {
        if (is32) {
            struct indirect32 r = { t->operation, t->indirect_op,
                                    t->ind_nr_segments, t->id, t->sector,
                                    t->handle };
            memcpy(r.grefs, t->grefs, sizeof(r.grefs));
            memcpy(buf, &r, sizeof(r));
        } else {
            struct indirect64 r = { t->operation, t->indirect_op,
                                    t->ind_nr_segments, t->id, t->sector,
                                    t->handle };
            memcpy(r.grefs, t->grefs, sizeof(r.grefs));
            memcpy(buf, &r, sizeof(r));
        }
    } else {
        struct seg_wire segs[11] = { 0 };

        for (int i = 0; i < 11; i++) {
            segs[i].gref = t->seg[i].gref;
            segs[i].first_sect = t->seg[i].first_sect;
            segs[i].last_sect = t->seg[i].last_sect;
        }
        if (is32) {
            struct rw32 r = { t->operation, t->nr_segments, t->handle, t->id,
                              t->sector };
            memcpy(r.seg, segs, sizeof(segs));
            memcpy(buf, &r, sizeof(r));
        } else {
            struct rw64 r = { t->operation, t->nr_segments, t->handle, t->id,
                              t->sector };
            memcpy(r.seg, segs, sizeof(segs));
            memcpy(buf, &r, sizeof(r));
        }
    }
}

/* Encode for @abi, decode, and return the canonical request. */
static XenBlkifRequest roundtrip(XenBlkifAbi abi, const TestReq *t)
{
    uint8_t slot[112];
    XenBlkifRequest req;

    encode(abi, t, slot);
    xen_blkif_decode_request(abi, slot, &req);
    return req;
}

/* A well-formed read or write of @nseg whole pages at @sector. */
static TestReq rw_req(uint8_t op, uint64_t sector, unsigned int nseg)
{
    TestReq t = {
        .operation = op, .nr_segments = nseg, .handle = 51712,
        .id = 0x1122334455667788ull, .sector = sector,
    };

    for (unsigned int i = 0; i < nseg && i < 11; i++) {
        t.seg[i] = (XenBlkifSegment) { .gref = 100 + i, .first_sect = 0,
                                       .last_sect = 7 };
    }
    return t;
}

static XenBlkifLimits default_limits(void)
{
    return (XenBlkifLimits) {
        .disk_sectors = 2048,           /* 1 MiB */
        .logical_block_size = 512,
        .flush = true,
        .discard = true,
        .max_indirect_segments = 256,
    };
}

/* Validate @t, encoded and decoded for @abi, against @limits. */
static XenBlkifVerdict check(XenBlkifAbi abi, const XenBlkifLimits *limits,
                             const TestReq *t)
{
    XenBlkifRequest req = roundtrip(abi, t);

    return xen_blkif_validate(limits, &req);
}

/* ---- ABI names and ring geometry ---- */

static void test_abi_names(void)
{
    XenBlkifAbi abi = XEN_BLKIF_ABI__MAX;

    g_assert_true(xen_blkif_abi_from_name(NULL, &abi));
    g_assert_cmpint(abi, ==, XEN_BLKIF_ABI_NATIVE);
    abi = XEN_BLKIF_ABI__MAX;
    g_assert_true(xen_blkif_abi_from_name("", &abi));
    g_assert_cmpint(abi, ==, XEN_BLKIF_ABI_NATIVE);
    g_assert_true(xen_blkif_abi_from_name("x86_32-abi", &abi));
    g_assert_cmpint(abi, ==, XEN_BLKIF_ABI_X86_32);
    g_assert_true(xen_blkif_abi_from_name("x86_64-abi", &abi));
    g_assert_cmpint(abi, ==, XEN_BLKIF_ABI_X86_64);
    /* Xen on Arm: the guest names the host's own layout */
    abi = XEN_BLKIF_ABI__MAX;
    g_assert_true(xen_blkif_abi_from_name("arm-abi", &abi));
    g_assert_cmpint(abi, ==, XEN_BLKIF_ABI_NATIVE);
    g_assert_false(xen_blkif_abi_from_name("arm-abi ", &abi));
    g_assert_false(xen_blkif_abi_from_name("x86_64-abi ", &abi));
    g_assert_false(xen_blkif_abi_from_name("native", &abi));

    g_assert_cmpstr(xen_blkif_abi_name(XEN_BLKIF_ABI_X86_32), ==,
                    "x86_32-abi");
    g_assert_cmpstr(xen_blkif_abi_name(XEN_BLKIF_ABI_X86_64), ==,
                    "x86_64-abi");
    g_assert_cmpstr(xen_blkif_abi_name(XEN_BLKIF_ABI_NATIVE), ==, "native");
    g_assert_cmpstr(xen_blkif_abi_name(XEN_BLKIF_ABI__MAX), ==, "invalid");
}

static void test_ring_geometry(void)
{
    g_assert_cmpuint(xen_blkif_ring_entry_size(XEN_BLKIF_ABI_X86_32), ==, 108);
    g_assert_cmpuint(xen_blkif_ring_entry_size(XEN_BLKIF_ABI_X86_64), ==, 112);
    g_assert_cmpuint(xen_blkif_ring_entry_size(XEN_BLKIF_ABI_NATIVE), ==,
                     xen_blkif_ring_entry_size(concrete(XEN_BLKIF_ABI_NATIVE)));

    for (unsigned int i = 0; i < G_N_ELEMENTS(all_abis); i++) {
        XenBlkifAbi abi = all_abis[i];

        /* Linux's __CONST_RING_SIZE(blkif, 4096) is 32 for both ABIs. */
        g_assert_cmpuint(xen_blkif_ring_size(abi, 1), ==, 32);
        g_assert_cmpuint(xen_blkif_ring_size(abi, 2), ==, 64);
        g_assert_cmpuint(xen_blkif_ring_size(abi, 4), ==, 128);
        g_assert_cmpuint(xen_blkif_ring_size(abi, 8), ==, 256);
        g_assert_cmpuint(xen_blkif_ring_size(abi, 16), ==, 512);
        g_assert_cmpuint(xen_blkif_ring_size(abi, 0), ==, 0);
        g_assert_cmpuint(xen_blkif_ring_size(abi, 17), ==, 0);
        g_assert_cmpuint(xen_blkif_ring_size(abi, 32), ==, 0);
        g_assert_cmpuint(xen_blkif_ring_size(abi, UINT32_MAX), ==, 0);
    }
    g_assert_cmpuint(xen_blkif_ring_size(XEN_BLKIF_ABI__MAX, 1), ==, 0);
}

/* ---- Decoding ---- */

static void test_decode_rw(void)
{
    for (unsigned int i = 0; i < G_N_ELEMENTS(all_abis); i++) {
        TestReq t = rw_req(BLKIF_OP_WRITE, 0x0123456789abcdefull, 11);
        XenBlkifRequest req;

        t.seg[10] = (XenBlkifSegment) { 0xfeedbeef, 3, 6 };
        req = roundtrip(all_abis[i], &t);
        g_assert_cmpuint(req.operation, ==, BLKIF_OP_WRITE);
        g_assert_cmpuint(req.op, ==, BLKIF_OP_WRITE);
        g_assert_cmpuint(req.handle, ==, 51712);
        g_assert_cmpuint(req.id, ==, 0x1122334455667788ull);
        g_assert_cmpuint(req.sector, ==, 0x0123456789abcdefull);
        g_assert_cmpuint(req.nr_segments, ==, 11);
        g_assert_cmpuint(req.seg[0].gref, ==, 100);
        g_assert_cmpuint(req.seg[9].last_sect, ==, 7);
        g_assert_cmpuint(req.seg[10].gref, ==, 0xfeedbeef);
        g_assert_cmpuint(req.seg[10].first_sect, ==, 3);
        g_assert_cmpuint(req.seg[10].last_sect, ==, 6);
    }
}

static void test_decode_discard(void)
{
    for (unsigned int i = 0; i < G_N_ELEMENTS(all_abis); i++) {
        TestReq t = { .operation = BLKIF_OP_DISCARD, .flag = 1,
                      .id = 0xdeadbeefcafef00dull, .sector = 1ull << 40,
                      .nr_sectors = 0x1234567 };
        XenBlkifRequest req = roundtrip(all_abis[i], &t);

        g_assert_cmpuint(req.operation, ==, BLKIF_OP_DISCARD);
        g_assert_cmpuint(req.discard_flags, ==, BLKIF_DISCARD_SECURE);
        g_assert_cmpuint(req.id, ==, 0xdeadbeefcafef00dull);
        g_assert_cmpuint(req.sector, ==, 1ull << 40);
        g_assert_cmpuint(req.nr_sectors, ==, 0x1234567);
    }
}

static void test_decode_indirect(void)
{
    for (unsigned int i = 0; i < G_N_ELEMENTS(all_abis); i++) {
        TestReq t = { .operation = BLKIF_OP_INDIRECT,
                      .indirect_op = BLKIF_OP_READ, .ind_nr_segments = 1000,
                      .id = 42, .sector = 99, .handle = 0xabcd,
                      .grefs = { 1, 2, 3, 4, 5, 6, 7, 0xffffffff } };
        XenBlkifRequest req = roundtrip(all_abis[i], &t);

        g_assert_cmpuint(req.operation, ==, BLKIF_OP_INDIRECT);
        g_assert_cmpuint(req.op, ==, BLKIF_OP_READ);
        g_assert_cmpuint(req.nr_segments, ==, 1000);
        g_assert_cmpuint(req.id, ==, 42);
        g_assert_cmpuint(req.sector, ==, 99);
        g_assert_cmpuint(req.handle, ==, 0xabcd);
        g_assert_cmpuint(req.indirect_gref[0], ==, 1);
        g_assert_cmpuint(req.indirect_gref[7], ==, 0xffffffff);
    }
}

static void test_decode_unknown_keeps_id(void)
{
    static const uint8_t ops[] = { BLKIF_OP_RESERVED_1, 7, 0x80, 0xff };

    for (unsigned int i = 0; i < G_N_ELEMENTS(all_abis); i++) {
        for (unsigned int j = 0; j < G_N_ELEMENTS(ops); j++) {
            TestReq t = rw_req(ops[j], 0, 0);
            XenBlkifRequest req = roundtrip(all_abis[i], &t);

            g_assert_cmpuint(req.operation, ==, ops[j]);
            g_assert_cmpuint(req.id, ==, t.id);
        }
    }
}

/* A direct request claiming 255 segments decodes no more than 11. */
static void test_decode_segment_count_overflow(void)
{
    for (unsigned int i = 0; i < G_N_ELEMENTS(all_abis); i++) {
        TestReq t = rw_req(BLKIF_OP_READ, 0, 11);
        XenBlkifRequest req;

        t.nr_segments = 255;
        req = roundtrip(all_abis[i], &t);
        g_assert_cmpuint(req.nr_segments, ==, 255);
        g_assert_cmpuint(req.seg[10].gref, ==, 110);
    }
}

/* ---- Validation: one rule per test, every ABI ---- */

typedef struct Case {
    const char *what;
    TestReq req;
    XenBlkifLimits limits;
    XenBlkifVerdict verdict;
    int16_t status;
} Case;

static void run_cases(const Case *cases, size_t n)
{
    for (size_t c = 0; c < n; c++) {
        for (unsigned int i = 0; i < G_N_ELEMENTS(all_abis); i++) {
            XenBlkifVerdict v = check(all_abis[i], &cases[c].limits,
                                      &cases[c].req);

            if (v != cases[c].verdict) {
                g_test_message("%s (%s): got '%s', want '%s'", cases[c].what,
                               xen_blkif_abi_name(all_abis[i]),
                               xen_blkif_verdict_name(v),
                               xen_blkif_verdict_name(cases[c].verdict));
            }
            g_assert_cmpint(v, ==, cases[c].verdict);
            g_assert_cmpint(xen_blkif_verdict_status(v), ==, cases[c].status);
        }
    }
}

static XenBlkifLimits with_lbs(uint32_t lbs)
{
    XenBlkifLimits l = default_limits();

    l.logical_block_size = lbs;
    return l;
}

static XenBlkifLimits read_only(void)
{
    XenBlkifLimits l = default_limits();

    l.read_only = true;
    return l;
}

static TestReq with_seg(TestReq t, int i, uint8_t first, uint8_t last)
{
    t.seg[i].first_sect = first;
    t.seg[i].last_sect = last;
    return t;
}

static TestReq with_count(TestReq t, uint8_t n)
{
    t.nr_segments = n;
    return t;
}

static void test_validate_rw(void)
{
    const XenBlkifLimits d = default_limits();
    const Case cases[] = {
        { "read ok", rw_req(BLKIF_OP_READ, 0, 1), d,
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "write 11 segs ok", rw_req(BLKIF_OP_WRITE, 8, 11), d,
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "partial segment ok", with_seg(rw_req(BLKIF_OP_READ, 3, 1), 0, 2, 4),
          d, XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "one sector at last sector", with_seg(rw_req(BLKIF_OP_READ, 2047, 1),
          0, 7, 7), d, XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "up to the end", rw_req(BLKIF_OP_WRITE, 2048 - 88, 11), d,
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "zero segments", rw_req(BLKIF_OP_READ, 0, 0), d,
          XEN_BLKIF_BAD_SEGMENT_COUNT, BLKIF_RSP_ERROR },
        { "12 segments", with_count(rw_req(BLKIF_OP_WRITE, 0, 11), 12), d,
          XEN_BLKIF_BAD_SEGMENT_COUNT, BLKIF_RSP_ERROR },
        { "255 segments", with_count(rw_req(BLKIF_OP_READ, 0, 11), 255), d,
          XEN_BLKIF_BAD_SEGMENT_COUNT, BLKIF_RSP_ERROR },
        { "first_sect > last_sect", with_seg(rw_req(BLKIF_OP_READ, 0, 2), 1,
          5, 4), d, XEN_BLKIF_BAD_SEGMENT, BLKIF_RSP_ERROR },
        { "last_sect past the page", with_seg(rw_req(BLKIF_OP_READ, 0, 1), 0,
          0, 8), d, XEN_BLKIF_BAD_SEGMENT, BLKIF_RSP_ERROR },
        { "last_sect 255", with_seg(rw_req(BLKIF_OP_WRITE, 0, 3), 2, 200, 255),
          d, XEN_BLKIF_BAD_SEGMENT, BLKIF_RSP_ERROR },
        { "one past the end", rw_req(BLKIF_OP_READ, 2048 - 87, 11), d,
          XEN_BLKIF_OUT_OF_RANGE, BLKIF_RSP_ERROR },
        { "start past the end", rw_req(BLKIF_OP_READ, 4096, 1), d,
          XEN_BLKIF_OUT_OF_RANGE, BLKIF_RSP_ERROR },
        { "sector wraps around", rw_req(BLKIF_OP_WRITE, UINT64_MAX - 3, 1), d,
          XEN_BLKIF_OUT_OF_RANGE, BLKIF_RSP_ERROR },
        { "sector at UINT64_MAX", with_seg(rw_req(BLKIF_OP_READ, UINT64_MAX, 1),
          0, 0, 0), d, XEN_BLKIF_OUT_OF_RANGE, BLKIF_RSP_ERROR },
        { "write to read-only", rw_req(BLKIF_OP_WRITE, 0, 1), read_only(),
          XEN_BLKIF_READ_ONLY, BLKIF_RSP_ERROR },
        { "read from read-only", rw_req(BLKIF_OP_READ, 0, 1), read_only(),
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        /* 4 KiB logical blocks: sectors stay 512-byte units */
        { "4k aligned ok", rw_req(BLKIF_OP_READ, 16, 2), with_lbs(4096),
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "4k last block ok", rw_req(BLKIF_OP_WRITE, 2040, 1), with_lbs(4096),
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "4k misaligned sector", rw_req(BLKIF_OP_READ, 4, 1), with_lbs(4096),
          XEN_BLKIF_MISALIGNED, BLKIF_RSP_ERROR },
        { "4k partial segment", with_seg(rw_req(BLKIF_OP_READ, 0, 2), 1, 0, 3),
          with_lbs(4096), XEN_BLKIF_MISALIGNED, BLKIF_RSP_ERROR },
        { "1k odd segment", with_seg(rw_req(BLKIF_OP_WRITE, 0, 1), 0, 0, 2),
          with_lbs(1024), XEN_BLKIF_MISALIGNED, BLKIF_RSP_ERROR },
        { "1k two sectors ok", with_seg(rw_req(BLKIF_OP_WRITE, 2, 1), 0, 2, 3),
          with_lbs(1024), XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "4k past the end", rw_req(BLKIF_OP_READ, 2048, 1), with_lbs(4096),
          XEN_BLKIF_OUT_OF_RANGE, BLKIF_RSP_ERROR },
    };

    run_cases(cases, G_N_ELEMENTS(cases));
}

static XenBlkifLimits no_flush(void)
{
    XenBlkifLimits l = default_limits();

    l.flush = false;
    return l;
}

static XenBlkifLimits with_barrier(void)
{
    XenBlkifLimits l = default_limits();

    l.barrier = true;
    return l;
}

static void test_validate_flush(void)
{
    const XenBlkifLimits d = default_limits();
    const Case cases[] = {
        { "empty flush", rw_req(BLKIF_OP_FLUSH_DISKCACHE, 0, 0), d,
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        /* Linux's blkfront sends empty flushes with sector_number -1 */
        { "empty flush at sector -1",
          rw_req(BLKIF_OP_FLUSH_DISKCACHE, UINT64_MAX, 0), d,
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "empty flush, odd sector, 4k",
          rw_req(BLKIF_OP_FLUSH_DISKCACHE, 3, 0), with_lbs(4096),
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "empty barrier at sector -1",
          rw_req(BLKIF_OP_WRITE_BARRIER, UINT64_MAX, 0), with_barrier(),
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "flush with data", rw_req(BLKIF_OP_FLUSH_DISKCACHE, 8, 2), d,
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "flush not offered", rw_req(BLKIF_OP_FLUSH_DISKCACHE, 0, 0),
          no_flush(), XEN_BLKIF_NOT_OFFERED, BLKIF_RSP_EOPNOTSUPP },
        { "empty flush read-only", rw_req(BLKIF_OP_FLUSH_DISKCACHE, 0, 0),
          read_only(), XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "flush with data read-only", rw_req(BLKIF_OP_FLUSH_DISKCACHE, 0, 1),
          read_only(), XEN_BLKIF_READ_ONLY, BLKIF_RSP_ERROR },
        { "flush 12 segments",
          with_count(rw_req(BLKIF_OP_FLUSH_DISKCACHE, 0, 11), 12), d,
          XEN_BLKIF_BAD_SEGMENT_COUNT, BLKIF_RSP_ERROR },
        { "flush data past the end", rw_req(BLKIF_OP_FLUSH_DISKCACHE, 2047, 1),
          d, XEN_BLKIF_OUT_OF_RANGE, BLKIF_RSP_ERROR },
        { "barrier not offered", rw_req(BLKIF_OP_WRITE_BARRIER, 0, 0), d,
          XEN_BLKIF_NOT_OFFERED, BLKIF_RSP_EOPNOTSUPP },
        { "barrier offered", rw_req(BLKIF_OP_WRITE_BARRIER, 0, 1),
          with_barrier(), XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "barrier bad segment",
          with_seg(rw_req(BLKIF_OP_WRITE_BARRIER, 0, 1), 0, 6, 5),
          with_barrier(), XEN_BLKIF_BAD_SEGMENT, BLKIF_RSP_ERROR },
    };

    run_cases(cases, G_N_ELEMENTS(cases));
}

static TestReq discard_req(uint64_t sector, uint64_t n, uint8_t flag)
{
    return (TestReq) { .operation = BLKIF_OP_DISCARD, .id = 7,
                       .sector = sector, .nr_sectors = n, .flag = flag };
}

static XenBlkifLimits no_discard(void)
{
    XenBlkifLimits l = default_limits();

    l.discard = false;
    return l;
}

static XenBlkifLimits secure(void)
{
    XenBlkifLimits l = default_limits();

    l.secure_discard = true;
    return l;
}

static void test_validate_discard(void)
{
    const XenBlkifLimits d = default_limits();
    const Case cases[] = {
        { "discard ok", discard_req(0, 2048, 0), d,
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "empty discard", discard_req(100, 0, 0), d,
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "discard not offered", discard_req(0, 8, 0), no_discard(),
          XEN_BLKIF_NOT_OFFERED, BLKIF_RSP_EOPNOTSUPP },
        { "secure not offered", discard_req(0, 8, BLKIF_DISCARD_SECURE), d,
          XEN_BLKIF_NOT_OFFERED, BLKIF_RSP_EOPNOTSUPP },
        { "secure offered", discard_req(0, 8, BLKIF_DISCARD_SECURE), secure(),
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "unknown flag bits", discard_req(0, 8, 0xfe), d,
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "discard read-only", discard_req(0, 8, 0), read_only(),
          XEN_BLKIF_READ_ONLY, BLKIF_RSP_ERROR },
        { "discard past the end", discard_req(2000, 49, 0), d,
          XEN_BLKIF_OUT_OF_RANGE, BLKIF_RSP_ERROR },
        { "discard wraps", discard_req(8, UINT64_MAX - 3, 0), d,
          XEN_BLKIF_OUT_OF_RANGE, BLKIF_RSP_ERROR },
        { "discard start past the end", discard_req(2049, 0, 0), d,
          XEN_BLKIF_OUT_OF_RANGE, BLKIF_RSP_ERROR },
        { "4k discard misaligned start", discard_req(4, 8, 0), with_lbs(4096),
          XEN_BLKIF_MISALIGNED, BLKIF_RSP_ERROR },
        { "4k discard misaligned length", discard_req(8, 12, 0),
          with_lbs(4096), XEN_BLKIF_MISALIGNED, BLKIF_RSP_ERROR },
        { "4k discard ok", discard_req(8, 16, 0), with_lbs(4096),
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
    };

    run_cases(cases, G_N_ELEMENTS(cases));
}

static TestReq indirect_req(uint8_t op, uint64_t sector, uint16_t nseg)
{
    return (TestReq) { .operation = BLKIF_OP_INDIRECT, .indirect_op = op,
                       .ind_nr_segments = nseg, .id = 9, .sector = sector,
                       .grefs = { 500, 501, 502, 503, 504, 505, 506, 507 } };
}

static XenBlkifLimits no_indirect(void)
{
    XenBlkifLimits l = default_limits();

    l.max_indirect_segments = 0;
    return l;
}

static XenBlkifLimits indirect_ro(void)
{
    XenBlkifLimits l = read_only();

    l.max_indirect_segments = 32;
    return l;
}

static XenBlkifLimits huge_indirect(void)
{
    XenBlkifLimits l = default_limits();

    l.max_indirect_segments = 100000;
    return l;
}

static void test_validate_indirect(void)
{
    const XenBlkifLimits d = default_limits();
    const Case cases[] = {
        { "indirect read", indirect_req(BLKIF_OP_READ, 0, 256), d,
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "indirect write", indirect_req(BLKIF_OP_WRITE, 0, 1), d,
          XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "indirect not offered", indirect_req(BLKIF_OP_READ, 0, 8),
          no_indirect(), XEN_BLKIF_NOT_OFFERED, BLKIF_RSP_EOPNOTSUPP },
        { "indirect flush", indirect_req(BLKIF_OP_FLUSH_DISKCACHE, 0, 8), d,
          XEN_BLKIF_BAD_INDIRECT_OP, BLKIF_RSP_ERROR },
        { "indirect discard", indirect_req(BLKIF_OP_DISCARD, 0, 8), d,
          XEN_BLKIF_BAD_INDIRECT_OP, BLKIF_RSP_ERROR },
        { "indirect indirect", indirect_req(BLKIF_OP_INDIRECT, 0, 8), d,
          XEN_BLKIF_BAD_INDIRECT_OP, BLKIF_RSP_ERROR },
        { "indirect 0 segments", indirect_req(BLKIF_OP_READ, 0, 0), d,
          XEN_BLKIF_BAD_SEGMENT_COUNT, BLKIF_RSP_ERROR },
        { "indirect 257 segments", indirect_req(BLKIF_OP_READ, 0, 257), d,
          XEN_BLKIF_BAD_SEGMENT_COUNT, BLKIF_RSP_ERROR },
        { "indirect 65535 segments", indirect_req(BLKIF_OP_WRITE, 0, 65535),
          d, XEN_BLKIF_BAD_SEGMENT_COUNT, BLKIF_RSP_ERROR },
        { "indirect beyond 8 pages", indirect_req(BLKIF_OP_WRITE, 0, 4097),
          huge_indirect(), XEN_BLKIF_BAD_SEGMENT_COUNT, BLKIF_RSP_ERROR },
        { "indirect write read-only", indirect_req(BLKIF_OP_WRITE, 0, 4),
          indirect_ro(), XEN_BLKIF_READ_ONLY, BLKIF_RSP_ERROR },
        { "indirect read read-only", indirect_req(BLKIF_OP_READ, 0, 4),
          indirect_ro(), XEN_BLKIF_OK, BLKIF_RSP_OKAY },
        { "indirect start past the end", indirect_req(BLKIF_OP_READ, 2049, 1),
          d, XEN_BLKIF_OUT_OF_RANGE, BLKIF_RSP_ERROR },
        { "indirect 4k misaligned", indirect_req(BLKIF_OP_READ, 1, 1),
          with_lbs(4096), XEN_BLKIF_MISALIGNED, BLKIF_RSP_ERROR },
    };

    run_cases(cases, G_N_ELEMENTS(cases));
}

static void test_validate_unknown(void)
{
    const XenBlkifLimits d = default_limits();
    const Case cases[] = {
        { "reserved op", rw_req(BLKIF_OP_RESERVED_1, 0, 1), d,
          XEN_BLKIF_BAD_OPERATION, BLKIF_RSP_EOPNOTSUPP },
        { "op 7", rw_req(7, 0, 1), d,
          XEN_BLKIF_BAD_OPERATION, BLKIF_RSP_EOPNOTSUPP },
        { "op 255", rw_req(255, 0, 0), d,
          XEN_BLKIF_BAD_OPERATION, BLKIF_RSP_EOPNOTSUPP },
    };

    run_cases(cases, G_N_ELEMENTS(cases));
}

static void test_verdict_names(void)
{
    for (int v = 0; v < XEN_BLKIF_VERDICT__MAX; v++) {
        g_assert_nonnull(xen_blkif_verdict_name(v));
        g_assert_cmpstr(xen_blkif_verdict_name(v), !=, "invalid");
    }
    g_assert_cmpstr(xen_blkif_verdict_name(XEN_BLKIF_VERDICT__MAX), ==,
                    "invalid");
}

/* ---- Indirect pages ---- */

/* Fill @pages with @n whole-page segments, packed 512 a page. */
static void fill_indirect(uint8_t *pages, unsigned int n)
{
    for (unsigned int i = 0; i < n; i++) {
        struct seg_wire s = { .gref = 1000 + i, .first_sect = 0,
                              .last_sect = 7 };
        memcpy(pages + i * sizeof(s), &s, sizeof(s));
    }
}

static void set_indirect_seg(uint8_t *pages, unsigned int i, uint8_t first,
                             uint8_t last)
{
    pages[i * 8 + 4] = first;
    pages[i * 8 + 5] = last;
}

static void test_indirect_pages(void)
{
    g_assert_cmpuint(xen_blkif_indirect_pages(1), ==, 1);
    g_assert_cmpuint(xen_blkif_indirect_pages(512), ==, 1);
    g_assert_cmpuint(xen_blkif_indirect_pages(513), ==, 2);
    g_assert_cmpuint(xen_blkif_indirect_pages(4096), ==, 8);
    g_assert_cmpuint(XEN_BLKIF_MAX_INDIRECT_SEGMENTS, ==, 4096);
}

static void test_parse_indirect(void)
{
    XenBlkifLimits l = default_limits();
    g_autofree uint8_t *pages = g_malloc0(2 * XEN_BLKIF_PAGE_SIZE);
    g_autofree XenBlkifSegment *segs = g_new0(XenBlkifSegment, 600);

    l.max_indirect_segments = 600;
    l.disk_sectors = 1 << 20;
    for (unsigned int i = 0; i < G_N_ELEMENTS(all_abis); i++) {
        TestReq t = indirect_req(BLKIF_OP_WRITE, 64, 600);
        XenBlkifRequest req = roundtrip(all_abis[i], &t);

        /* 600 segments over two pages, segment 512 first on the second */
        fill_indirect(pages, 600);
        g_assert_cmpint(xen_blkif_parse_indirect(&l, &req, pages, segs), ==,
                        XEN_BLKIF_OK);
        g_assert_cmpuint(segs[0].gref, ==, 1000);
        g_assert_cmpuint(segs[512].gref, ==, 1512);
        g_assert_cmpuint(segs[599].gref, ==, 1599);
        g_assert_cmpuint(segs[599].last_sect, ==, 7);

        /* a bad segment on the second page */
        set_indirect_seg(pages, 550, 4, 3);
        g_assert_cmpint(xen_blkif_parse_indirect(&l, &req, pages, segs), ==,
                        XEN_BLKIF_BAD_SEGMENT);
        set_indirect_seg(pages, 550, 0, 8);
        g_assert_cmpint(xen_blkif_parse_indirect(&l, &req, pages, segs), ==,
                        XEN_BLKIF_BAD_SEGMENT);

        /* the segments run past the end of the disk */
        fill_indirect(pages, 600);
        l.disk_sectors = 64 + 600 * 8 - 1;
        g_assert_cmpint(xen_blkif_parse_indirect(&l, &req, pages, segs), ==,
                        XEN_BLKIF_OUT_OF_RANGE);
        l.disk_sectors = 64 + 600 * 8;
        g_assert_cmpint(xen_blkif_parse_indirect(&l, &req, pages, segs), ==,
                        XEN_BLKIF_OK);

        /* 4 KiB blocks: a half page segment is misaligned */
        l.logical_block_size = 4096;
        set_indirect_seg(pages, 3, 0, 3);
        g_assert_cmpint(xen_blkif_parse_indirect(&l, &req, pages, segs), ==,
                        XEN_BLKIF_MISALIGNED);
        l.logical_block_size = 512;
        l.disk_sectors = 1 << 20;

        /* request-level rules still apply */
        l.read_only = true;
        g_assert_cmpint(xen_blkif_parse_indirect(&l, &req, pages, segs), ==,
                        XEN_BLKIF_READ_ONLY);
        l.read_only = false;
        l.max_indirect_segments = 599;
        g_assert_cmpint(xen_blkif_parse_indirect(&l, &req, pages, segs), ==,
                        XEN_BLKIF_BAD_SEGMENT_COUNT);
        l.max_indirect_segments = 600;

        /* only indirect requests have indirect pages */
        t = rw_req(BLKIF_OP_READ, 0, 1);
        req = roundtrip(all_abis[i], &t);
        g_assert_cmpint(xen_blkif_parse_indirect(&l, &req, pages, segs), ==,
                        XEN_BLKIF_BAD_OPERATION);
    }
}

/* ---- The shared ring ---- */

#define RING_BYTES (4 * XEN_BLKIF_PAGE_SIZE)

typedef struct TestRing {
    uint8_t *mem;
    XenBlkifBackRing ring;
} TestRing;

static uint32_t *idx(TestRing *r, int which)
{
    return (uint32_t *)(r->mem + which * 4);
}
#define REQ_PROD  0
#define REQ_EVENT 1
#define RSP_PROD  2
#define RSP_EVENT 3

/* A ring as a frontend initialises it (SHARED_RING_INIT). */
static void ring_setup(TestRing *r, XenBlkifAbi abi, unsigned int pages)
{
    r->mem = g_malloc(RING_BYTES);
    memset(r->mem, 0xaa, RING_BYTES);
    *idx(r, REQ_PROD) = 0;
    *idx(r, RSP_PROD) = 0;
    *idx(r, REQ_EVENT) = 1;
    *idx(r, RSP_EVENT) = 1;
    memset(r->mem + 16, 0, 48);
    g_assert_true(xen_blkif_back_ring_init(&r->ring, r->mem, pages, abi));
}

static uint8_t *slot(TestRing *r, uint32_t i)
{
    size_t sz = xen_blkif_ring_entry_size(r->ring.abi);

    return r->mem + 64 + (i & (r->ring.size - 1)) * sz;
}

static void test_ring_init(void)
{
    uint8_t mem[64] = { 0 };
    XenBlkifBackRing ring;

    g_assert_false(xen_blkif_back_ring_init(&ring, mem, 0,
                                            XEN_BLKIF_ABI_X86_64));
    g_assert_false(xen_blkif_back_ring_init(&ring, mem, 17,
                                            XEN_BLKIF_ABI_X86_32));
    /* A reconnecting frontend's ring: we continue from its rsp_prod. */
    memcpy(mem + 8, &(uint32_t){ 77 }, 4);
    g_assert_true(xen_blkif_back_ring_init(&ring, mem, 1,
                                           XEN_BLKIF_ABI_X86_64));
    g_assert_cmpuint(ring.req_cons, ==, 77);
    g_assert_cmpuint(ring.rsp_prod_pvt, ==, 77);
    g_assert_cmpuint(ring.size, ==, 32);
}

static void test_ring_consume(void)
{
    for (unsigned int i = 0; i < G_N_ELEMENTS(all_abis); i++) {
        TestRing r;
        unsigned int pending;
        XenBlkifRequest req;

        ring_setup(&r, all_abis[i], 1);
        g_assert_true(xen_blkif_ring_pending(&r.ring, &pending));
        g_assert_cmpuint(pending, ==, 0);

        /* 40 requests in a 32-entry ring: the indices wrap */
        for (uint32_t n = 0; n < 40; n++) {
            TestReq t = rw_req(BLKIF_OP_READ, n * 8, 1);

            t.id = 1000 + n;
            encode(all_abis[i], &t, slot(&r, n));
            *idx(&r, REQ_PROD) = n + 1;
            g_assert_true(xen_blkif_ring_pending(&r.ring, &pending));
            g_assert_cmpuint(pending, ==, 1);
            xen_blkif_copy_request(all_abis[i], r.mem, r.ring.size,
                                   r.ring.req_cons, &req);
            r.ring.req_cons++;
            g_assert_cmpuint(req.id, ==, 1000 + n);
            g_assert_cmpuint(req.sector, ==, n * 8);
            xen_blkif_ring_put_response(&r.ring, req.id, req.op,
                                        BLKIF_RSP_OKAY);
            xen_blkif_ring_push_responses(&r.ring);
            g_assert_cmpuint(*idx(&r, RSP_PROD), ==, n + 1);
        }
        g_free(r.mem);
    }
}

static void test_ring_overrun(void)
{
    for (unsigned int i = 0; i < G_N_ELEMENTS(all_abis); i++) {
        TestRing r;
        unsigned int pending;

        ring_setup(&r, all_abis[i], 2);
        g_assert_cmpuint(r.ring.size, ==, 64);

        /* exactly a ring's worth is fine */
        *idx(&r, REQ_PROD) = 64;
        g_assert_true(xen_blkif_ring_pending(&r.ring, &pending));
        g_assert_cmpuint(pending, ==, 64);

        /* one more is corruption */
        *idx(&r, REQ_PROD) = 65;
        g_assert_false(xen_blkif_ring_pending(&r.ring, &pending));
        g_assert_cmpuint(pending, ==, 0);

        /* a producer that moves backwards is corruption */
        *idx(&r, REQ_PROD) = 0xffffffff;
        g_assert_false(xen_blkif_ring_pending(&r.ring, &pending));

        /*
         * With 10 requests consumed but unanswered, the frontend may have
         * at most 54 more.
         */
        r.ring.req_cons = 10;
        *idx(&r, REQ_PROD) = 64;
        g_assert_true(xen_blkif_ring_pending(&r.ring, &pending));
        g_assert_cmpuint(pending, ==, 54);
        *idx(&r, REQ_PROD) = 65;
        g_assert_false(xen_blkif_ring_pending(&r.ring, &pending));

        /*
         * A producer moved back behind what we consumed, though still
         * within a ring of our responses, is corruption: taken as it is,
         * nearly 2^32 requests would be pending.
         */
        *idx(&r, REQ_PROD) = 10;
        g_assert_true(xen_blkif_ring_pending(&r.ring, &pending));
        g_assert_cmpuint(pending, ==, 0);
        *idx(&r, REQ_PROD) = 8;
        g_assert_false(xen_blkif_ring_pending(&r.ring, &pending));
        g_assert_cmpuint(pending, ==, 0);

        /* indices wrapping around 2^32 are not corruption */
        r.ring.req_cons = r.ring.rsp_prod_pvt = 0xfffffff0;
        *idx(&r, REQ_PROD) = 0x10;
        g_assert_true(xen_blkif_ring_pending(&r.ring, &pending));
        g_assert_cmpuint(pending, ==, 0x20);
        g_free(r.mem);
    }
}

static void test_ring_final_check(void)
{
    TestRing r;

    ring_setup(&r, XEN_BLKIF_ABI_NATIVE, 1);
    r.ring.req_cons = 5;
    *idx(&r, REQ_PROD) = 5;
    g_assert_false(xen_blkif_ring_final_check(&r.ring));
    g_assert_cmpuint(*idx(&r, REQ_EVENT), ==, 6);

    *idx(&r, REQ_PROD) = 6;
    g_assert_true(xen_blkif_ring_final_check(&r.ring));
    g_free(r.mem);
}

static void test_ring_response_layout(void)
{
    for (unsigned int i = 0; i < G_N_ELEMENTS(all_abis); i++) {
        TestRing r;
        bool is32 = concrete(all_abis[i]) == XEN_BLKIF_ABI_X86_32;
        size_t rsp_size = is32 ? sizeof(struct rsp32) : sizeof(struct rsp64);
        uint8_t *s;

        ring_setup(&r, all_abis[i], 1);
        s = slot(&r, 0);
        xen_blkif_ring_put_response(&r.ring, 0x0102030405060708ull,
                                    BLKIF_OP_WRITE, BLKIF_RSP_EOPNOTSUPP);
        if (is32) {
            struct rsp32 rsp;

            memcpy(&rsp, s, sizeof(rsp));
            g_assert_cmpuint(rsp.id, ==, 0x0102030405060708ull);
            g_assert_cmpuint(rsp.operation, ==, BLKIF_OP_WRITE);
            g_assert_cmpint(rsp.status, ==, BLKIF_RSP_EOPNOTSUPP);
        } else {
            struct rsp64 rsp;

            memcpy(&rsp, s, sizeof(rsp));
            g_assert_cmpuint(rsp.id, ==, 0x0102030405060708ull);
            g_assert_cmpuint(rsp.operation, ==, BLKIF_OP_WRITE);
            g_assert_cmpint(rsp.status, ==, BLKIF_RSP_EOPNOTSUPP);
        }
        /* padding is written (zero), nothing after the response is */
        g_assert_cmpuint(s[9], ==, 0);
        for (size_t b = 12; b < rsp_size; b++) {
            g_assert_cmpuint(s[b], ==, 0);
        }
        g_assert_cmpuint(s[rsp_size], ==, 0xaa);
        /* not visible until pushed */
        g_assert_cmpuint(*idx(&r, RSP_PROD), ==, 0);
        g_free(r.mem);
    }
}

static void test_ring_notify(void)
{
    TestRing r;

    ring_setup(&r, XEN_BLKIF_ABI_X86_64, 1);

    /* rsp_event = 1: the frontend waits for the first response */
    xen_blkif_ring_put_response(&r.ring, 1, 0, 0);
    g_assert_true(xen_blkif_ring_push_responses(&r.ring));

    /* rsp_event still 1 (frontend did not re-arm): no notification */
    xen_blkif_ring_put_response(&r.ring, 2, 0, 0);
    g_assert_false(xen_blkif_ring_push_responses(&r.ring));

    /* re-armed for response 3; push 3 and 4 together: notify */
    *idx(&r, RSP_EVENT) = 3;
    xen_blkif_ring_put_response(&r.ring, 3, 0, 0);
    xen_blkif_ring_put_response(&r.ring, 4, 0, 0);
    g_assert_true(xen_blkif_ring_push_responses(&r.ring));

    /* armed far ahead: no notification */
    *idx(&r, RSP_EVENT) = 10;
    xen_blkif_ring_put_response(&r.ring, 5, 0, 0);
    g_assert_false(xen_blkif_ring_push_responses(&r.ring));

    /* nothing new to push: no notification */
    *idx(&r, RSP_EVENT) = 5;
    g_assert_false(xen_blkif_ring_push_responses(&r.ring));
    g_assert_cmpuint(*idx(&r, RSP_PROD), ==, 5);
    g_free(r.mem);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/xen-blkif/abi/names", test_abi_names);
    g_test_add_func("/xen-blkif/abi/ring-geometry", test_ring_geometry);
    g_test_add_func("/xen-blkif/decode/rw", test_decode_rw);
    g_test_add_func("/xen-blkif/decode/discard", test_decode_discard);
    g_test_add_func("/xen-blkif/decode/indirect", test_decode_indirect);
    g_test_add_func("/xen-blkif/decode/unknown-keeps-id",
                    test_decode_unknown_keeps_id);
    g_test_add_func("/xen-blkif/decode/segment-count-overflow",
                    test_decode_segment_count_overflow);
    g_test_add_func("/xen-blkif/validate/rw", test_validate_rw);
    g_test_add_func("/xen-blkif/validate/flush", test_validate_flush);
    g_test_add_func("/xen-blkif/validate/discard", test_validate_discard);
    g_test_add_func("/xen-blkif/validate/indirect", test_validate_indirect);
    g_test_add_func("/xen-blkif/validate/unknown", test_validate_unknown);
    g_test_add_func("/xen-blkif/validate/verdict-names", test_verdict_names);
    g_test_add_func("/xen-blkif/indirect/pages", test_indirect_pages);
    g_test_add_func("/xen-blkif/indirect/parse", test_parse_indirect);
    g_test_add_func("/xen-blkif/ring/init", test_ring_init);
    g_test_add_func("/xen-blkif/ring/consume", test_ring_consume);
    g_test_add_func("/xen-blkif/ring/overrun", test_ring_overrun);
    g_test_add_func("/xen-blkif/ring/final-check", test_ring_final_check);
    g_test_add_func("/xen-blkif/ring/response-layout",
                    test_ring_response_layout);
    g_test_add_func("/xen-blkif/ring/notify", test_ring_notify);
    return g_test_run();
}
