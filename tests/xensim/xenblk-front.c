/*
 * xenblk-front: a Xen blkif frontend, toolstack and ideal backend in user
 * space, for testing block backends (QEMU's xen-disk / xl's qdisk)
 *
 * Written only against Xen's own user-space libraries (libxenstore,
 * libxenevtchn, libxengnttab with gntshr), so the same binary runs under
 * xensim (LD_PRELOAD=libxensim.so) and inside a real-Xen domU whose kernel
 * xen-blkfront is not loaded.
 *
 * Build (from the repository root):
 *
 *   gcc -std=gnu11 -O2 -g -Wall -Wextra -Wno-unused-parameter \
 *       -Wno-sign-compare -Wno-missing-field-initializers \
 *       $(pkg-config --cflags glib-2.0) -o build/xensim/xenblk-front \
 *       tests/xensim/xenblk-front.c tests/xensim/blkfront.c \
 *       tests/xensim/blkif-abi.c tests/xensim/xs-util.c \
 *       tests/xensim/toolstack.c tests/xensim/loadgen.c \
 *       tests/xensim/verify.c tests/xensim/hostile.c tests/xensim/ideal.c \
 *       $(pkg-config --libs glib-2.0) -lxenstore -lxenevtchn -lxengnttab \
 *       -lpthread
 *
 * (tests/xensim/test-xenblk-front.py builds it the same way.)
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xenstore.h>

#include "blkif-abi.h"
#include "ideal.h"
#include "loadgen.h"
#include "toolstack.h"
#include "verify.h"
#include "xs-util.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: xenblk-front COMMAND [options]     (COMMAND --help for more)\n"
"\n"
"A Xen PV block (blkif) frontend and toolstack in user space, to test a\n"
"backend such as QEMU's xen-disk/qdisk under xensim or real Xen.\n"
"\n"
"  attach    (dom0) write the xenstore nodes libxl writes for an xl disk\n"
"            line with backendtype=qdisk, wait for the backend\n"
"  detach    (dom0) as xl block-detach: online=0, Closing, wait for\n"
"            Closed, remove the directories\n"
"  run       (guest) negotiate like Linux's xen-blkfront (ABIs, multi-page\n"
"            rings, queues, indirect, persistent grants) and do verified\n"
"            I/O (fio-like load, flush, discard), single checks with an\n"
"            expected BLKIF_RSP_* status, or hostile cases\n"
"  ideal     (dom0) an ideal backend: every feature, only the grant copies\n"
"            a backend must do; --store keeps data in RAM\n"
"  xs        read|write|rm|ls|wait-state PATH [VALUE]: xenstore helpers\n"
"  selftest  check the ring ABI tables, vdev parsing and sector stamps\n"
"\n"
"Under xensim: LD_PRELOAD=build/xensim/libxensim.so XENSIM_DIR=DIR\n"
"XENSIM_DOMID=N XENSTORED_PATH=DIR/xenstored[-N].sock xenblk-front ...\n");
}

/* ---- xs: a tiny xenstore client for test scripts ---- */

static int xs_main(int argc, char **argv)
{
    struct xs_handle *xsh;
    const char *op = argc > 1 ? argv[1] : "";
    const char *path = argc > 2 ? argv[2] : NULL;
    int rc = 0;

    if (!strcmp(op, "--help") || !path) {
        printf("usage: xenblk-front xs read|write|rm|ls PATH [VALUE]\n"
               "       xenblk-front xs wait-state PATH STATE[,STATE] SECS\n");
        return path ? 0 : 2;
    }
    xsh = xs_open(0);
    if (!xsh) {
        perror("xs_open");
        return 1;
    }
    if (!strcmp(op, "read")) {
        g_autofree char *v = xsu_read(xsh, path, NULL);

        rc = v ? (printf("%s\n", v), 0) : 1;
    } else if (!strcmp(op, "write") && argc > 3) {
        rc = xs_write(xsh, XBT_NULL, path, argv[3], strlen(argv[3])) ? 0 : 1;
    } else if (!strcmp(op, "rm")) {
        rc = xs_rm(xsh, XBT_NULL, path) ? 0 : 1;
    } else if (!strcmp(op, "ls")) {
        unsigned int n;
        char **e = xs_directory(xsh, XBT_NULL, path, &n);

        for (unsigned int i = 0; e && i < n; i++) {
            g_autofree char *child = g_strdup_printf("%s/%s", path, e[i]);
            g_autofree char *v = xsu_read(xsh, child, NULL);

            printf("%s = \"%s\"\n", e[i], v ? v : "");
        }
        rc = e ? 0 : 1;
        free(e);
    } else if (!strcmp(op, "wait-state") && argc > 4) {
        g_auto(GStrv) states = g_strsplit(argv[3], ",", 0);
        unsigned int mask = 0;
        int state;

        for (unsigned int i = 0; states[i]; i++) {
            mask |= XSU_STATE_BIT(atoi(states[i]));
        }
        rc = xsu_wait_state(xsh, path, mask,
                            xsu_now_ns() + (int64_t)(atof(argv[4]) * 1e9),
                            &state) ? 0 : 1;
        printf("%d\n", state);
    } else {
        rc = 2;
    }
    xs_close(xsh);
    return rc;
}

/* ---- selftest: what needs no Xen at all ---- */

static int failures;

#define CHECK(cond) do { \
        if (!(cond)) { \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            failures++; \
        } \
    } while (0)

static void selftest_layouts(void)
{
    const XbLayout *l32 = xb_layout(XB_ABI_X86_32);
    const XbLayout *l64 = xb_layout(XB_ABI_X86_64);
    XbRequest in = { .operation = XB_OP_WRITE, .nr_segments = 11,
                     .handle = 51712, .id = 0x1122334455667788ull,
                     .sector = 0xabcdef0123ull };
    XbRequest out;
    uint8_t slot[128];
    XbResponse rsp = { .id = 7, .operation = 1, .status = -2 }, rsp2;
    XbAbi abi;

    /* Ring sizes of one page, as __RING_SIZE computes them. */
    CHECK(xb_ring_size(l64, 1) == 32);
    CHECK(xb_ring_size(l32, 1) == 32);
    CHECK(xb_ring_size(l64, 16) == 512);
    CHECK(l32->entry_size == 108 && l64->entry_size == 112);
    for (unsigned int i = 0; i < 11; i++) {
        in.seg[i] = (XbSegment) { 100 + i, i % 8, 7 };
    }
    for (int a = 0; a < 2; a++) {
        const XbLayout *l = xb_layout(a);

        xb_encode_request(l, &in, slot);
        xb_decode_request(l, slot, &out);
        CHECK(out.id == in.id && out.sector == in.sector &&
              out.nr_segments == 11 && out.handle == 51712 &&
              out.seg[10].gref == 110 && out.seg[3].first_sect == 3);
        xb_encode_response(l, &rsp, slot);
        xb_decode_response(l, slot, &rsp2);
        CHECK(rsp2.id == 7 && rsp2.operation == 1 && rsp2.status == -2);
    }
    /* Byte positions that differ between the ABIs. */
    xb_encode_request(l32, &in, slot);
    CHECK(slot[4] == 0x88 && slot[12] == 0x23 && slot[20] == 100);
    xb_encode_request(l64, &in, slot);
    CHECK(slot[8] == 0x88 && slot[16] == 0x23 && slot[24] == 100);
    in.operation = XB_OP_INDIRECT;
    in.indirect_op = XB_OP_READ;
    in.indirect_nr_segments = 300;
    in.indirect_grefs[0] = 0x01020304;
    xb_encode_request(l32, &in, slot);
    CHECK(slot[1] == 0 && slot[2] == 0x2c && slot[3] == 1 &&
          slot[20] == (51712 & 0xff) && slot[24] == 4);
    xb_encode_request(l64, &in, slot);
    CHECK(slot[24] == (51712 & 0xff) && slot[28] == 4);
    xb_decode_request(l64, slot, &out);
    CHECK(out.indirect_nr_segments == 300 && out.indirect_op == 0);
    CHECK(xb_abi_from_name("x86_32-abi", &abi) && abi == XB_ABI_X86_32);
    CHECK(!xb_abi_from_name("bogus", &abi));
}

static void selftest_vdev(void)
{
    static const struct { const char *name; uint32_t num; } ok[] = {
        { "xvda", 51712 }, { "xvdb", 51728 }, { "xvda1", 51713 },
        { "xvdp", 51952 }, { "xvdq", (1u << 28) | (16 << 8) },
        { "xvdaa", (1u << 28) | (26 << 8) }, { "hda", 768 },
        { "hdb", 832 }, { "hdc", 5632 }, { "hdd", 5696 },
        { "sda", 2048 }, { "sdb3", 2067 }, { "d0p1", (1u << 28) | 1 },
        { "51712", 51712 }, { "268439808", 268439808 },
    };
    static const char *const bad[] = { "", "xvd", "hde", "xvda01", "foo" };
    uint32_t n;

    for (unsigned int i = 0; i < G_N_ELEMENTS(ok); i++) {
        CHECK(ts_parse_vdev(ok[i].name, &n) && n == ok[i].num);
    }
    for (unsigned int i = 0; i < G_N_ELEMENTS(bad); i++) {
        CHECK(!ts_parse_vdev(bad[i], &n));
    }
}

static void selftest_stamps(void)
{
    uint8_t buf[4 * 512];
    VfMap m;

    vf_map_init(&m, 51712, 1024);
    vf_stamp(buf, 100, 4, 51712, 5);
    CHECK(vf_check_sector(&m, buf, 100) == VF_OK);
    vf_record_write(&m, 100, 4, 5, true);
    CHECK(vf_check_sector(&m, buf + 512, 101) == VF_OK);
    CHECK(vf_check_sector(&m, buf + 512, 102) == VF_MISPLACED);
    vf_record_write(&m, 100, 1, 6, true);
    CHECK(vf_check_sector(&m, buf, 100) == VF_STALE);
    buf[600] ^= 1;
    CHECK(vf_check_sector(&m, buf + 512, 101) == VF_TORN);
    memset(buf, 0, 512);
    CHECK(vf_check_sector(&m, buf, 100) == VF_LOST);
    CHECK(vf_check_sector(&m, buf, 500) == VF_ZERO_OK);
    vf_record_discard(&m, 100, 1);
    CHECK(vf_check_sector(&m, buf, 100) == VF_ZERO_OK);
    vf_stamp(buf, 7, 1, 51728, 1);
    CHECK(vf_check_sector(&m, buf, 7) == VF_WRONG_DEVICE);
    memset(buf, 0xa5, 512);
    CHECK(vf_check_sector(&m, buf, 7) == VF_GARBAGE);
    vf_map_free(&m);
}

static void selftest_ring_indices(void)
{
    uint8_t page[XB_PAGE_SIZE] __attribute__((aligned(64)));
    XbSring *s = (XbSring *)page;

    xb_sring_init(s);
    /* Backend waiting at req_event = 1: the first request notifies. */
    CHECK(xb_front_push_requests(s, 1));
    /* It has not consumed: req_event still 1, so no new notification. */
    CHECK(!xb_front_push_requests(s, 3));
    CHECK(xb_back_req_prod(s) == 3);
    CHECK(!xb_back_final_check(s, 3) && s->req_event == 4);
    CHECK(xb_front_push_requests(s, 4));
    /* Wrap-around of the 32-bit indices. */
    s->req_prod = 0xfffffffe;
    s->req_event = 0xffffffff;
    CHECK(xb_front_push_requests(s, 0x00000001));
}

static int selftest_main(void)
{
    selftest_layouts();
    selftest_vdev();
    selftest_stamps();
    selftest_ring_indices();
    printf("selftest: %s (%d failure(s))\n", failures ? "FAILED" : "ok",
           failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(cmd, "attach")) {
        return ts_attach_main(argc - 1, argv + 1);
    } else if (!strcmp(cmd, "detach")) {
        return ts_detach_main(argc - 1, argv + 1);
    } else if (!strcmp(cmd, "run")) {
        return lg_run_main(argc - 1, argv + 1);
    } else if (!strcmp(cmd, "ideal")) {
        return ideal_main(argc - 1, argv + 1);
    } else if (!strcmp(cmd, "xs")) {
        return xs_main(argc - 1, argv + 1);
    } else if (!strcmp(cmd, "selftest")) {
        return selftest_main();
    } else if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") ||
               !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
