/*
 * Xen virtual block device names and toolstack parameters
 *
 * The encodings (Xen's docs/misc/vbd-interface):
 *
 *   1 << 28 | disk << 8 | partition     xvd (and sd), disk >= 16 or
 *                                       partition >= 16 ("extended")
 *   202 << 8 | disk << 4 | partition    xvd, disk and partition < 16
 *   8 << 8 | disk << 4 | partition      sd, disk and partition < 16
 *   3 << 8 | disk << 6 | partition      hd, disk 0 or 1, partition < 64
 *   22 << 8 | (disk - 2) << 6 | part.   hd, disk 2 or 3, partition < 64
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "hw/block/xen_vbd.h"

#define MAJOR_XVD       202
#define MAJOR_SD        8
#define MAJOR_HD01      3
#define MAJOR_HD23      22
#define EXTENDED_FLAG   (1u << 28)

bool xen_vbd_encode(XenVbd *vbd)
{
    unsigned int disk = vbd->disk, part = vbd->partition;

    switch (vbd->scheme) {
    case XEN_VBD_SCHEME_HD:
        if (disk > 3 || part > 63) {
            return false;
        }
        vbd->number = disk < 2 ? (MAJOR_HD01 << 8) | (disk << 6) | part
                               : (MAJOR_HD23 << 8) | ((disk - 2) << 6) | part;
        return true;
    case XEN_VBD_SCHEME_SD:
        if (disk < 16 && part < 16) {
            vbd->number = (MAJOR_SD << 8) | (disk << 4) | part;
            return true;
        }
        break;  /* large sd disks share the extended xvd encoding */
    case XEN_VBD_SCHEME_XVD:
    case XEN_VBD_SCHEME_DP:
        if (disk < 16 && part < 16) {
            vbd->number = (MAJOR_XVD << 8) | (disk << 4) | part;
            return true;
        }
        break;
    default:
        return false;
    }
    if (disk > XEN_VBD_MAX_DISK || part > XEN_VBD_MAX_PARTITION) {
        return false;
    }
    vbd->number = EXTENDED_FLAG | (disk << 8) | part;
    return true;
}

bool xen_vbd_decode(uint32_t number, XenVbd *vbd)
{
    unsigned int minor = number & 0xff;
    XenVbd v = { .number = number };

    if (number & ~(EXTENDED_FLAG | 0x0fffffffu)) {
        return false;           /* 2 << 28 and above: reserved */
    }
    if (number & EXTENDED_FLAG) {
        v.scheme = XEN_VBD_SCHEME_XVD;
        v.disk = (number >> 8) & XEN_VBD_MAX_DISK;
        v.partition = minor;
        /*
         * The extended form is for disks or partitions from 16 on: one
         * device has one number, so a short disk written long is refused.
         */
        if (v.disk < 16 && v.partition < 16) {
            return false;
        }
    } else {
        switch (number >> 8) {
        case MAJOR_XVD:
            v.scheme = XEN_VBD_SCHEME_XVD;
            v.disk = minor >> 4;
            v.partition = minor & 15;
            break;
        case MAJOR_SD:
            v.scheme = XEN_VBD_SCHEME_SD;
            v.disk = minor >> 4;
            v.partition = minor & 15;
            break;
        case MAJOR_HD01:
        case MAJOR_HD23:
            if (minor >> 6 > 1) {
                return false;
            }
            v.scheme = XEN_VBD_SCHEME_HD;
            v.disk = (minor >> 6) + ((number >> 8) == MAJOR_HD23 ? 2 : 0);
            v.partition = minor & 63;
            break;
        default:
            return false;
        }
    }
    *vbd = v;
    return true;
}

char *xen_vbd_disk_letters(unsigned int disk)
{
    char buf[16];
    int pos = sizeof(buf) - 1;

    /* Bijective base 26: a..z, aa..zz, aaa.. */
    buf[pos] = '\0';
    do {
        buf[--pos] = 'a' + disk % 26;
        disk = disk / 26;
    } while (disk-- > 0);
    return g_strdup(&buf[pos]);
}

/* Parse the letters at *@p as a disk index; advance *@p past them. */
static bool parse_letters(const char **p, unsigned int *disk)
{
    uint64_t value = 0;
    const char *s = *p;

    if (!g_ascii_islower(*s)) {
        return false;
    }
    for (; g_ascii_islower(*s); s++) {
        value = value * 26 + (*s - 'a' + 1);
        if (value - 1 > XEN_VBD_MAX_DISK) {
            return false;
        }
    }
    *disk = value - 1;
    *p = s;
    return true;
}

/*
 * Parse a decimal number at *@p (no sign, no leading zeros unless the number
 * is 0) that is at most @max; advance *@p past it.
 */
static bool parse_decimal(const char **p, uint64_t max, uint64_t *out)
{
    const char *s = *p;
    uint64_t value = 0;

    if (!g_ascii_isdigit(*s) || (s[0] == '0' && g_ascii_isdigit(s[1]))) {
        return false;
    }
    for (; g_ascii_isdigit(*s); s++) {
        value = value * 10 + (*s - '0');
        if (value > max) {
            return false;
        }
    }
    *out = value;
    *p = s;
    return true;
}

static bool parse_named(const char *name, XenVbd *v)
{
    const char *p = name;
    uint64_t n;

    if (g_str_has_prefix(p, "xvd")) {
        v->scheme = XEN_VBD_SCHEME_XVD;
    } else if (g_str_has_prefix(p, "hd")) {
        v->scheme = XEN_VBD_SCHEME_HD;
    } else if (g_str_has_prefix(p, "sd")) {
        v->scheme = XEN_VBD_SCHEME_SD;
    } else {
        return false;
    }
    p += v->scheme == XEN_VBD_SCHEME_XVD ? 3 : 2;
    if (!parse_letters(&p, &v->disk)) {
        return false;
    }
    v->partition = 0;
    if (*p) {
        /* A partition number; the whole disk has none ("xvda0" is bad). */
        if (!parse_decimal(&p, XEN_VBD_MAX_PARTITION, &n) || n == 0 || *p) {
            return false;
        }
        v->partition = n;
    }
    return true;
}

static bool parse_dp(const char *name, XenVbd *v)
{
    const char *p = name + 1;
    uint64_t n;

    v->scheme = XEN_VBD_SCHEME_DP;
    if (!parse_decimal(&p, XEN_VBD_MAX_DISK, &n)) {
        return false;
    }
    v->disk = n;
    v->partition = 0;
    if (*p == 'p') {
        p++;
        if (!parse_decimal(&p, XEN_VBD_MAX_PARTITION, &n)) {
            return false;
        }
        v->partition = n;
    }
    return *p == '\0';
}

bool xen_vbd_parse(const char *name, XenVbd *vbd)
{
    XenVbd v = { 0 };
    uint64_t n;

    if (!name) {
        return false;
    }
    if (g_ascii_isdigit(name[0])) {
        const char *p = name;

        if (!parse_decimal(&p, UINT32_MAX, &n) || *p) {
            return false;
        }
        return xen_vbd_decode(n, vbd);
    }
    if (name[0] == 'd' ? !parse_dp(name, &v) : !parse_named(name, &v)) {
        return false;
    }
    if (!xen_vbd_encode(&v)) {
        return false;
    }
    *vbd = v;
    return true;
}

char *xen_vbd_name(const XenVbd *vbd)
{
    g_autofree char *letters = NULL;
    const char *prefix;

    switch (vbd->scheme) {
    case XEN_VBD_SCHEME_DP:
        return g_strdup_printf("d%up%u", vbd->disk, vbd->partition);
    case XEN_VBD_SCHEME_XVD:
        prefix = "xvd";
        break;
    case XEN_VBD_SCHEME_HD:
        prefix = "hd";
        break;
    case XEN_VBD_SCHEME_SD:
        prefix = "sd";
        break;
    default:
        return g_strdup("");
    }
    letters = xen_vbd_disk_letters(vbd->disk);
    if (vbd->partition) {
        return g_strdup_printf("%s%s%u", prefix, letters, vbd->partition);
    }
    return g_strdup_printf("%s%s", prefix, letters);
}

/* libxl's disk formats and the QEMU block driver for each. */
static const struct {
    const char *format;
    const char *driver;
} formats[] = {
    { "aio", "raw" },
    { "raw", "raw" },
    { "qcow", "qcow" },
    { "qcow2", "qcow2" },
    { "qed", "qed" },
    { "vhd", "vpc" },
    { "vpc", "vpc" },
    { "vhdx", "vhdx" },
    { "vmdk", "vmdk" },
    { "vdi", "vdi" },
};

bool xen_vbd_parse_params(const char *params, char **driver, char **target)
{
    const char *colon;

    if (!params || !*params) {
        return false;
    }
    colon = strchr(params, ':');
    if (colon) {
        for (size_t i = 0; i < G_N_ELEMENTS(formats); i++) {
            if (strlen(formats[i].format) == (size_t)(colon - params) &&
                !strncmp(params, formats[i].format, colon - params)) {
                if (!colon[1]) {
                    return false;
                }
                *driver = g_strdup(formats[i].driver);
                *target = g_strdup(colon + 1);
                return true;
            }
        }
        /* An unknown prefix: only a path may contain a colon. */
        if (params[0] != '/') {
            return false;
        }
    }
    *driver = g_strdup("raw");
    *target = g_strdup(params);
    return true;
}

bool xen_vbd_parse_bool(const char *value, bool dflt)
{
    if (value && !strcmp(value, "1")) {
        return true;
    }
    if (value && !strcmp(value, "0")) {
        return false;
    }
    return dflt;
}

bool xen_vbd_parse_uint(const char *value, uint32_t max, uint32_t *out)
{
    uint64_t n = 0;

    if (!value || !g_ascii_isdigit(*value)) {
        return false;
    }
    for (; g_ascii_isdigit(*value); value++) {
        n = n * 10 + (*value - '0');
        if (n > max) {
            return false;
        }
    }
    if (*value) {
        return false;
    }
    *out = n;
    return true;
}
