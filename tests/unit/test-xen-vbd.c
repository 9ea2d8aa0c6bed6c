/*
 * Unit tests for virtual device names and toolstack parameters
 * (hw/block/xen_vbd.c)
 *
 * Expected numbers come from Xen's xen-vbd-interface document and from
 * what Linux guests see (xvda = 51712, hda = 768, sda = 2048).
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "hw/block/xen_vbd.h"

typedef struct NameCase {
    const char *name;
    uint32_t number;
    XenVbdScheme scheme;
    unsigned int disk, partition;
    const char *canonical;      /* xen_vbd_name(); NULL: same as name */
} NameCase;

static const NameCase good_names[] = {
    { "xvda", 51712, XEN_VBD_SCHEME_XVD, 0, 0 },
    { "xvdb", 51728, XEN_VBD_SCHEME_XVD, 1, 0 },
    { "xvda1", 51713, XEN_VBD_SCHEME_XVD, 0, 1 },
    { "xvdp15", (202 << 8) | (15 << 4) | 15, XEN_VBD_SCHEME_XVD, 15, 15 },
    { "xvdq", (1u << 28) | (16 << 8), XEN_VBD_SCHEME_XVD, 16, 0 },
    { "xvda16", (1u << 28) | 16, XEN_VBD_SCHEME_XVD, 0, 16 },
    { "xvdz", (1u << 28) | (25 << 8), XEN_VBD_SCHEME_XVD, 25, 0 },
    { "xvdaa", (1u << 28) | (26 << 8), XEN_VBD_SCHEME_XVD, 26, 0 },
    { "xvdzz", (1u << 28) | (701 << 8), XEN_VBD_SCHEME_XVD, 701, 0 },
    { "xvdaaa", (1u << 28) | (702 << 8), XEN_VBD_SCHEME_XVD, 702, 0 },
    { "xvdaa255", (1u << 28) | (26 << 8) | 255, XEN_VBD_SCHEME_XVD, 26, 255 },
    { "hda", 768, XEN_VBD_SCHEME_HD, 0, 0 },
    { "hdb", 832, XEN_VBD_SCHEME_HD, 1, 0 },
    { "hdc", 5632, XEN_VBD_SCHEME_HD, 2, 0 },
    { "hdd63", 5632 + 64 + 63, XEN_VBD_SCHEME_HD, 3, 63 },
    { "sda", 2048, XEN_VBD_SCHEME_SD, 0, 0 },
    { "sdb2", 2048 + 16 + 2, XEN_VBD_SCHEME_SD, 1, 2 },
    { "sdp", 2048 + 15 * 16, XEN_VBD_SCHEME_SD, 15, 0 },
    /* large sd disks use the extended xvd encoding (and become xvd) */
    { "sdq", (1u << 28) | (16 << 8), XEN_VBD_SCHEME_SD, 16, 0 },
    { "d0p0", 51712, XEN_VBD_SCHEME_DP, 0, 0 },
    { "d0", 51712, XEN_VBD_SCHEME_DP, 0, 0, "d0p0" },
    { "d1p2", 51728 + 2, XEN_VBD_SCHEME_DP, 1, 2 },
    { "d100p200", (1u << 28) | (100 << 8) | 200, XEN_VBD_SCHEME_DP, 100, 200 },
    { "d1048575p255", (1u << 28) | (1048575u << 8) | 255, XEN_VBD_SCHEME_DP,
      1048575, 255 },
    /* device numbers decode to their scheme */
    { "51712", 51712, XEN_VBD_SCHEME_XVD, 0, 0, "xvda" },
    { "768", 768, XEN_VBD_SCHEME_HD, 0, 0, "hda" },
    { "2065", 2065, XEN_VBD_SCHEME_SD, 1, 1, "sdb1" },
    { "268442112", (1u << 28) | (26 << 8), XEN_VBD_SCHEME_XVD, 26, 0,
      "xvdaa" },
    { "268435472", (1u << 28) | 16, XEN_VBD_SCHEME_XVD, 0, 16, "xvda16" },
};

static const char *const bad_names[] = {
    "", "xvd", "xv", "x", "xvdA", "xvda0", "xvda01", "xvda256", "xvda-1",
    "xvda1x", "hde", "hda64", "hd", "sd", "sda256", "d", "dp1", "d0p",
    "d0p256", "d1048576", "d01", "d0p01", "d0q1", "xvdaaaaaa", "zzz",
    "536870912", "0", "1", "4294967296", "99999999999999999999", "51712x",
    " 51712", "-1", "+51712", "1024", "xvd\xe9", "hda\n", "sda 1",
    "xvdbwsfmxx",
    /* the extended encoding of a disk that has a short one: not canonical */
    "268437248", "268435457",
};

static void test_parse_good(void)
{
    for (size_t i = 0; i < G_N_ELEMENTS(good_names); i++) {
        const NameCase *c = &good_names[i];
        XenVbd v = { 0 };
        g_autofree char *name = NULL;

        g_test_message("parsing %s", c->name);
        g_assert_true(xen_vbd_parse(c->name, &v));
        g_assert_cmpuint(v.number, ==, c->number);
        g_assert_cmpint(v.scheme, ==, c->scheme);
        g_assert_cmpuint(v.disk, ==, c->disk);
        g_assert_cmpuint(v.partition, ==, c->partition);
        name = xen_vbd_name(&v);
        g_assert_cmpstr(name, ==, c->canonical ? c->canonical : c->name);
    }
}

static void test_parse_bad(void)
{
    for (size_t i = 0; i < G_N_ELEMENTS(bad_names); i++) {
        XenVbd v = { .scheme = XEN_VBD_SCHEME_HD, .number = 1234 };

        g_test_message("parsing '%s'", bad_names[i]);
        g_assert_false(xen_vbd_parse(bad_names[i], &v));
        /* untouched on failure */
        g_assert_cmpuint(v.number, ==, 1234);
        g_assert_cmpint(v.scheme, ==, XEN_VBD_SCHEME_HD);
    }
    g_assert_false(xen_vbd_parse(NULL, &(XenVbd){ 0 }));
}

static void test_decode(void)
{
    XenVbd v;

    /* reserved and unknown majors */
    g_assert_false(xen_vbd_decode(2u << 28, &v));
    g_assert_false(xen_vbd_decode(0xffffffff, &v));
    g_assert_false(xen_vbd_decode(1 << 8, &v));
    /* hd minors above 127 do not exist */
    g_assert_false(xen_vbd_decode((3 << 8) | 128, &v));
    g_assert_false(xen_vbd_decode((22 << 8) | 200, &v));
    g_assert_true(xen_vbd_decode((22 << 8) | 127, &v));
    g_assert_cmpuint(v.disk, ==, 3);
    g_assert_cmpuint(v.partition, ==, 63);
}

static void test_encode_limits(void)
{
    XenVbd v = { .scheme = XEN_VBD_SCHEME_HD, .disk = 4 };

    g_assert_false(xen_vbd_encode(&v));
    v = (XenVbd) { .scheme = XEN_VBD_SCHEME_HD, .disk = 0, .partition = 64 };
    g_assert_false(xen_vbd_encode(&v));
    v = (XenVbd) { .scheme = XEN_VBD_SCHEME_XVD, .disk = 1u << 20 };
    g_assert_false(xen_vbd_encode(&v));
    v = (XenVbd) { .scheme = XEN_VBD_SCHEME_SD, .disk = 0, .partition = 256 };
    g_assert_false(xen_vbd_encode(&v));
    v = (XenVbd) { .scheme = XEN_VBD_SCHEME_NONE };
    g_assert_false(xen_vbd_encode(&v));
    g_autofree char *none = xen_vbd_name(&v);
    g_assert_cmpstr(none, ==, "");
}

static void test_roundtrip_all_xvd(void)
{
    /* every disk name parses back to the disk it came from */
    for (unsigned int disk = 0; disk < 20000; disk += 7) {
        g_autofree char *letters = xen_vbd_disk_letters(disk);
        g_autofree char *name = g_strdup_printf("xvd%s", letters);
        XenVbd v;

        g_assert_true(xen_vbd_parse(name, &v));
        g_assert_cmpuint(v.disk, ==, disk);
    }
}

static void test_params(void)
{
    static const struct {
        const char *params, *driver, *target;
    } good[] = {
        { "aio:/srv/disk.img", "raw", "/srv/disk.img" },
        { "raw:/srv/disk.img", "raw", "/srv/disk.img" },
        { "qcow2:/srv/vm.qcow2", "qcow2", "/srv/vm.qcow2" },
        { "qcow:/a", "qcow", "/a" },
        { "vhd:/a.vhd", "vpc", "/a.vhd" },
        { "qed:/a", "qed", "/a" },
        { "/srv/plain.img", "raw", "/srv/plain.img" },
        { "/srv/odd:name.img", "raw", "/srv/odd:name.img" },
        { "qcow2:/srv/odd:name", "qcow2", "/srv/odd:name" },
        { "relative.img", "raw", "relative.img" },
    };
    static const char *const bad[] = {
        "", "aio:", "qcow2:", "nbd:unix:/sock", "file:/x", "rbd:pool/image",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
        g_autofree char *driver = NULL;
        g_autofree char *target = NULL;

        g_assert_true(xen_vbd_parse_params(good[i].params, &driver, &target));
        g_assert_cmpstr(driver, ==, good[i].driver);
        g_assert_cmpstr(target, ==, good[i].target);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        char *driver = NULL, *target = NULL;

        g_assert_false(xen_vbd_parse_params(bad[i], &driver, &target));
        g_assert_null(driver);
        g_assert_null(target);
    }
    g_assert_false(xen_vbd_parse_params(NULL, &(char *){ NULL },
                                        &(char *){ NULL }));
}

static void test_bool_and_uint(void)
{
    uint32_t v = 7;

    g_assert_true(xen_vbd_parse_bool("1", false));
    g_assert_false(xen_vbd_parse_bool("0", true));
    g_assert_true(xen_vbd_parse_bool(NULL, true));
    g_assert_false(xen_vbd_parse_bool("yes", false));
    g_assert_true(xen_vbd_parse_bool("10", true));

    g_assert_true(xen_vbd_parse_uint("0", 10, &v));
    g_assert_cmpuint(v, ==, 0);
    g_assert_true(xen_vbd_parse_uint("4294967295", UINT32_MAX, &v));
    g_assert_cmpuint(v, ==, UINT32_MAX);
    g_assert_true(xen_vbd_parse_uint("007", 10, &v));
    g_assert_cmpuint(v, ==, 7);
    v = 3;
    g_assert_false(xen_vbd_parse_uint("4294967296", UINT32_MAX, &v));
    g_assert_false(xen_vbd_parse_uint("11", 10, &v));
    g_assert_false(xen_vbd_parse_uint("-1", UINT32_MAX, &v));
    g_assert_false(xen_vbd_parse_uint(" 1", UINT32_MAX, &v));
    g_assert_false(xen_vbd_parse_uint("1 ", UINT32_MAX, &v));
    g_assert_false(xen_vbd_parse_uint("0x10", UINT32_MAX, &v));
    g_assert_false(xen_vbd_parse_uint("", UINT32_MAX, &v));
    g_assert_false(xen_vbd_parse_uint(NULL, UINT32_MAX, &v));
    g_assert_cmpuint(v, ==, 3);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/xen-vbd/parse/good", test_parse_good);
    g_test_add_func("/xen-vbd/parse/bad", test_parse_bad);
    g_test_add_func("/xen-vbd/decode", test_decode);
    g_test_add_func("/xen-vbd/encode-limits", test_encode_limits);
    g_test_add_func("/xen-vbd/roundtrip-xvd", test_roundtrip_all_xvd);
    g_test_add_func("/xen-vbd/params", test_params);
    g_test_add_func("/xen-vbd/bool-and-uint", test_bool_and_uint);
    return g_test_run();
}
