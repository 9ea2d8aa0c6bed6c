/*
 * xenblk-front: the toolstack part -- attach and detach a qdisk disk the
 * way libxl does for an xl disk line
 *
 * What libxl writes for
 *   disk = ['format=raw, vdev=xvda, access=rw, backendtype=qdisk,
 *           target=IMAGE']
 * is, in one transaction:
 *
 *   /local/domain/0/backend/qdisk/<fe>/<devnum>/   owner 0, fe may read
 *       frontend frontend-id params online removable bootable state dev
 *       type mode device-type discard-enable specification [direct-io-safe]
 *   /local/domain/<fe>/device/vbd/<devnum>/         owner fe, 0 may read
 *       backend backend-id state virtual-device device-type
 *
 * and then it waits for the backend to take the device (InitWait, or
 * hotplug-status "connected").  Detach writes online=0 and state=5
 * (Closing), waits for Closed, and removes both directories.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toolstack.h"
#include "xs-util.h"

/* ---- vdev names ---- */

/* "a".."z", "aa".. (bijective base 26, as libxl); returns chars used. */
static int parse_disk_letters(const char *s, uint32_t *disk)
{
    uint64_t d = 0;
    int n = 0;

    while (s[n] >= 'a' && s[n] <= 'z') {
        d = d * 26 + (s[n] - 'a' + 1);
        if (d > (1u << 20)) {
            return 0;
        }
        n++;
    }
    *disk = d - 1;
    return n;
}

/* An optional partition number after the disk: "" or digits, no sign. */
static bool parse_partition(const char *s, uint32_t *part)
{
    char *end;
    unsigned long v;

    if (!*s) {
        *part = 0;
        return true;
    }
    if (!isdigit((unsigned char)*s) || (s[0] == '0' && s[1])) {
        return false;
    }
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v > 255) {
        return false;
    }
    *part = v;
    return true;
}

/* Numbers of the extended scheme (docs/misc/vbd-interface.txt). */
static uint32_t extended_devnum(uint32_t disk, uint32_t part)
{
    return (1u << 28) | (disk << 8) | part;
}

static bool parse_prefixed_vdev(const char *vdev, uint32_t *devnum)
{
    uint32_t disk, part;
    int n;

    if (g_str_has_prefix(vdev, "xvd") || g_str_has_prefix(vdev, "sd")) {
        bool xvd = vdev[0] == 'x';
        const char *p = vdev + (xvd ? 3 : 2);

        n = parse_disk_letters(p, &disk);
        if (!n || !parse_partition(p + n, &part)) {
            return false;
        }
        if (disk < 16 && part < 16) {
            *devnum = ((xvd ? 202u : 8u) << 8) | (disk << 4) | part;
        } else {
            *devnum = extended_devnum(disk, part);
        }
        return true;
    }
    if (g_str_has_prefix(vdev, "hd")) {
        n = parse_disk_letters(vdev + 2, &disk);
        if (!n || !parse_partition(vdev + 2 + n, &part) || disk > 3 ||
            part > 63) {
            return false;
        }
        *devnum = ((disk < 2 ? 3u : 22u) << 8) | ((disk & 1) << 6) | part;
        return true;
    }
    if (vdev[0] == 'd' && isdigit((unsigned char)vdev[1])) {
        char *end;
        unsigned long d = strtoul(vdev + 1, &end, 10);
        unsigned long p = 0;

        if (*end == 'p') {
            p = strtoul(end + 1, &end, 10);
        }
        if (*end || d >= (1u << 20) || p > 255) {
            return false;
        }
        *devnum = extended_devnum(d, p);
        return true;
    }
    return false;
}

bool ts_parse_vdev(const char *vdev, uint32_t *devnum)
{
    char *end;
    unsigned long v;

    if (!vdev || !*vdev) {
        return false;
    }
    if (isdigit((unsigned char)vdev[0])) {
        errno = 0;
        v = strtoul(vdev, &end, 10);
        if (errno || *end || v > 0x7fffffff) {
            return false;
        }
        *devnum = v;
        return true;
    }
    return parse_prefixed_vdev(vdev, devnum);
}

/* ---- attach ---- */

typedef struct AttachOpts {
    unsigned int fe_domid;
    unsigned int be_domid;
    const char *vdev;
    const char *target;
    const char *format;
    const char *backend_type;
    bool readonly;
    bool cdrom;
    int discard_enable;         /* -1: not written */
    bool direct_io_safe;
    double deadline;
    bool wait;
} AttachOpts;

/* libxl's params prefix for a disk format (libxl__qemu_disk_format). */
static const char *format_prefix(const char *format)
{
    static const char *const map[][2] = {
        { "raw", "aio" }, { "qcow", "qcow" }, { "qcow2", "qcow2" },
        { "vhd", "vpc" }, { "qed", "qed" },
    };

    for (unsigned int i = 0; i < G_N_ELEMENTS(map); i++) {
        if (!strcmp(format, map[i][0])) {
            return map[i][1];
        }
    }
    return NULL;
}

/* The backend and frontend directories of a device. */
typedef struct DevicePaths {
    char *backend;
    char *frontend;
    char *libxl;
} DevicePaths;

static void device_paths(DevicePaths *p, const char *btype,
                         unsigned int be, unsigned int fe, uint32_t devnum)
{
    p->backend = g_strdup_printf("/local/domain/%u/backend/%s/%u/%u", be,
                                 btype, fe, devnum);
    p->frontend = g_strdup_printf("/local/domain/%u/device/vbd/%u", fe,
                                  devnum);
    p->libxl = g_strdup_printf("/libxl/%u/device/vbd/%u", fe, devnum);
}

static void device_paths_free(DevicePaths *p)
{
    g_free(p->backend);
    g_free(p->frontend);
    g_free(p->libxl);
}

static bool write_backend_nodes(struct xs_handle *xsh, xs_transaction_t t,
                                const AttachOpts *o, const DevicePaths *p,
                                const char *params)
{
    bool ok = true;

    ok &= xsu_write(xsh, t, p->backend, "frontend", "%s", p->frontend);
    ok &= xsu_write(xsh, t, p->backend, "frontend-id", "%u", o->fe_domid);
    ok &= xsu_write(xsh, t, p->backend, "params", "%s", params);
    ok &= xsu_write(xsh, t, p->backend, "online", "1");
    ok &= xsu_write(xsh, t, p->backend, "removable", "%d", o->cdrom);
    ok &= xsu_write(xsh, t, p->backend, "bootable", "1");
    ok &= xsu_write(xsh, t, p->backend, "state", "%d",
                    XB_STATE_INITIALISING);
    ok &= xsu_write(xsh, t, p->backend, "dev", "%s", o->vdev);
    ok &= xsu_write(xsh, t, p->backend, "type", "%s", o->backend_type);
    ok &= xsu_write(xsh, t, p->backend, "mode", "%s",
                    o->readonly ? "r" : "w");
    ok &= xsu_write(xsh, t, p->backend, "device-type", "%s",
                    o->cdrom ? "cdrom" : "disk");
    if (o->discard_enable >= 0) {
        ok &= xsu_write(xsh, t, p->backend, "discard-enable", "%d",
                        o->discard_enable);
    }
    ok &= xsu_write(xsh, t, p->backend, "specification", "xen");
    if (o->direct_io_safe) {
        ok &= xsu_write(xsh, t, p->backend, "direct-io-safe", "1");
    }
    return ok;
}

static bool write_frontend_nodes(struct xs_handle *xsh, xs_transaction_t t,
                                 const AttachOpts *o, const DevicePaths *p,
                                 uint32_t devnum)
{
    bool ok = true;

    ok &= xsu_write(xsh, t, p->frontend, "backend", "%s", p->backend);
    ok &= xsu_write(xsh, t, p->frontend, "backend-id", "%u", o->be_domid);
    ok &= xsu_write(xsh, t, p->frontend, "state", "%d",
                    XB_STATE_INITIALISING);
    ok &= xsu_write(xsh, t, p->frontend, "virtual-device", "%u", devnum);
    ok &= xsu_write(xsh, t, p->frontend, "device-type", "%s",
                    o->cdrom ? "cdrom" : "disk");
    return ok;
}

/* libxl's private record of the device, readable by dom0 only. */
static bool write_libxl_nodes(struct xs_handle *xsh, xs_transaction_t t,
                              const DevicePaths *p)
{
    return xsu_write(xsh, t, p->libxl, "frontend", "%s", p->frontend) &&
           xsu_write(xsh, t, p->libxl, "backend", "%s", p->backend);
}

/* One try of the transaction; false with errno EAGAIN means retry. */
static bool attach_transaction(struct xs_handle *xsh, const AttachOpts *o,
                               const DevicePaths *p, uint32_t devnum,
                               const char *params)
{
    /* libxl: the backend dir is dom0's, readable by the frontend; the
     * frontend dir is the guest's, readable by the backend domain. */
    struct xs_permissions be_perms[2] = {
        { .id = o->be_domid, .perms = XS_PERM_NONE },
        { .id = o->fe_domid, .perms = XS_PERM_READ },
    };
    struct xs_permissions fe_perms[2] = {
        { .id = o->fe_domid, .perms = XS_PERM_NONE },
        { .id = o->be_domid, .perms = XS_PERM_READ },
    };
    xs_transaction_t t = xs_transaction_start(xsh);
    bool ok;

    if (t == XBT_NULL) {
        return false;
    }
    xs_rm(xsh, t, p->frontend);
    xs_rm(xsh, t, p->backend);
    ok = xs_mkdir(xsh, t, p->frontend) &&
         xs_set_permissions(xsh, t, p->frontend, fe_perms, 2) &&
         xs_mkdir(xsh, t, p->backend) &&
         xs_set_permissions(xsh, t, p->backend, be_perms, 2) &&
         write_backend_nodes(xsh, t, o, p, params) &&
         write_frontend_nodes(xsh, t, o, p, devnum) &&
         write_libxl_nodes(xsh, t, p);
    if (!ok) {
        int saved = errno;

        xs_transaction_end(xsh, t, true);
        errno = saved == EAGAIN ? EIO : saved;
        return false;
    }
    return xs_transaction_end(xsh, t, false);
}

/* The backend took the device: InitWait or later, or hotplug connected. */
static bool backend_took_device(struct xs_handle *xsh, const char *dir,
                                void *opaque)
{
    g_autofree char *hp = xsu_read(xsh, dir, "hotplug-status");
    int state = xsu_read_state(xsh, dir);

    *(int *)opaque = state;
    if (hp && !strcmp(hp, "error")) {
        return true;
    }
    /* hotplug-status comes just before InitWait: wait for the state. */
    return state >= XB_STATE_INITWAIT && state <= XB_STATE_CONNECTED;
}

static void attach_usage(FILE *f)
{
    fprintf(f,
        "usage: xenblk-front attach --target IMAGE [options]\n"
        "Write the xenstore nodes libxl writes for an xl disk line with\n"
        "backendtype=qdisk (run as dom0), then wait for the backend.\n"
        "  --domid N           frontend domain (default 1)\n"
        "  --backend-domid N   backend domain (default 0)\n"
        "  --vdev NAME         xvdX[N], hdX[N], sdX[N], dN[pM] or a number\n"
        "                      (default xvda = 51712)\n"
        "  --target IMAGE      the image (params = \"<fmt>:IMAGE\")\n"
        "  --format FMT        raw (default), qcow, qcow2, vhd, qed\n"
        "  --access rw|ro      mode w or r (default rw)\n"
        "  --devtype disk|cdrom\n"
        "  --discard-enable 0|1  (default 1; --no-discard-node omits it)\n"
        "  --direct-io-safe    write direct-io-safe = 1\n"
        "  --backend-type T    backend kind directory (default qdisk)\n"
        "  --deadline SECS     how long to wait for the backend (10)\n"
        "  --no-wait           write the nodes and return\n"
        "Prints one JSON line: devnum, paths, the backend state reached.\n"
        "Exit 0 when the backend took the device.\n");
}

static bool parse_attach_opts(int argc, char **argv, AttachOpts *o)
{
    static const struct option opts[] = {
        { "domid", required_argument, NULL, 'd' },
        { "backend-domid", required_argument, NULL, 'b' },
        { "vdev", required_argument, NULL, 'v' },
        { "target", required_argument, NULL, 't' },
        { "format", required_argument, NULL, 'f' },
        { "access", required_argument, NULL, 'a' },
        { "devtype", required_argument, NULL, 'T' },
        { "discard-enable", required_argument, NULL, 'D' },
        { "no-discard-node", no_argument, NULL, 'N' },
        { "direct-io-safe", no_argument, NULL, 'o' },
        { "backend-type", required_argument, NULL, 'B' },
        { "deadline", required_argument, NULL, 'w' },
        { "no-wait", no_argument, NULL, 'n' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    *o = (AttachOpts) { .fe_domid = 1, .vdev = "xvda", .format = "raw",
                        .backend_type = "qdisk", .discard_enable = 1,
                        .deadline = 10, .wait = true };
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': o->fe_domid = atoi(optarg); break;
        case 'b': o->be_domid = atoi(optarg); break;
        case 'v': o->vdev = optarg; break;
        case 't': o->target = optarg; break;
        case 'f': o->format = optarg; break;
        case 'a': o->readonly = !strcmp(optarg, "ro") ||
                                !strcmp(optarg, "r"); break;
        case 'T': o->cdrom = !strcmp(optarg, "cdrom"); break;
        case 'D': o->discard_enable = !!atoi(optarg); break;
        case 'N': o->discard_enable = -1; break;
        case 'o': o->direct_io_safe = true; break;
        case 'B': o->backend_type = optarg; break;
        case 'w': o->deadline = atof(optarg); break;
        case 'n': o->wait = false; break;
        case 'h': attach_usage(stdout); exit(0);
        default: attach_usage(stderr); return false;
        }
    }
    if (!o->target && !o->cdrom) {
        fprintf(stderr, "attach: --target is required\n");
        return false;
    }
    return true;
}

int ts_attach_main(int argc, char **argv)
{
    AttachOpts o;
    DevicePaths p;
    uint32_t devnum;
    g_autofree char *params = NULL;
    struct xs_handle *xsh;
    const char *prefix;
    int state = -1, tries = 0;
    bool ok;

    if (!parse_attach_opts(argc, argv, &o)) {
        return 2;
    }
    if (!ts_parse_vdev(o.vdev, &devnum)) {
        fprintf(stderr, "attach: bad vdev '%s'\n", o.vdev);
        return 2;
    }
    prefix = format_prefix(o.format);
    if (!prefix) {
        fprintf(stderr, "attach: unknown format '%s'\n", o.format);
        return 2;
    }
    /* An empty cdrom drive has empty params, as libxl writes it. */
    params = o.target ? g_strdup_printf("%s:%s", prefix, o.target)
                      : g_strdup("");
    xsh = xs_open(0);
    if (!xsh) {
        perror("attach: xs_open");
        return 1;
    }
    device_paths(&p, o.backend_type, o.be_domid, o.fe_domid, devnum);
    do {
        ok = attach_transaction(xsh, &o, &p, devnum, params);
    } while (!ok && errno == EAGAIN && ++tries < 100);
    if (!ok) {
        fprintf(stderr, "attach: transaction failed: %s\n", strerror(errno));
        xs_close(xsh);
        device_paths_free(&p);
        return 1;
    }
    if (o.wait) {
        ok = xsu_wait(xsh, p.backend, backend_took_device, &state,
                      xsu_now_ns() + (int64_t)(o.deadline * 1e9));
        g_autofree char *hp = xsu_read(xsh, p.backend, "hotplug-status");

        ok = ok && !(hp && !strcmp(hp, "error"));
    }
    printf("{\"devnum\": %u, \"backend\": \"%s\", \"frontend\": \"%s\", "
           "\"transaction_tries\": %d, \"backend_state\": %d, "
           "\"ok\": %s}\n", devnum, p.backend, p.frontend, tries + 1, state,
           ok ? "true" : "false");
    fflush(stdout);
    xs_close(xsh);
    device_paths_free(&p);
    return ok ? 0 : 1;
}

/* ---- detach ---- */

static bool backend_closed_or_gone(struct xs_handle *xsh, const char *dir,
                                   void *opaque)
{
    g_autofree char *exists = xsu_read(xsh, dir, NULL);
    int state = xsu_read_state(xsh, dir);

    *(int *)opaque = exists ? state : -2;
    return !exists || state == XB_STATE_CLOSED;
}

/* online=0 and state=Closing together, unless it is already Closed. */
static bool request_close(struct xs_handle *xsh, const char *be)
{
    g_autofree char *path = g_strdup_printf("%s/state", be);

    for (int tries = 0; tries < 100; tries++) {
        xs_transaction_t t = xs_transaction_start(xsh);
        g_autofree char *state = NULL;
        unsigned int len;
        char *s;

        if (t == XBT_NULL) {
            return false;
        }
        s = xs_read(xsh, t, path, &len);
        state = s ? g_strndup(s, len) : NULL;
        free(s);
        xsu_write(xsh, t, be, "online", "0");
        if (!state || atoi(state) != XB_STATE_CLOSED) {
            xsu_write(xsh, t, be, "state", "%d", XB_STATE_CLOSING);
        }
        if (xs_transaction_end(xsh, t, false)) {
            return true;
        }
        if (errno != EAGAIN) {
            return false;
        }
    }
    return false;
}

static void detach_usage(FILE *f)
{
    fprintf(f,
        "usage: xenblk-front detach [--domid N] [--vdev NAME] [options]\n"
        "As xl block-detach: set the backend's online=0 and state=5\n"
        "(Closing), wait for it to reach Closed (6) or disappear, then\n"
        "remove the backend and frontend directories.\n"
        "  --domid N  --backend-domid N  --vdev NAME  --backend-type T\n"
        "  --deadline SECS   wait at most this long (10)\n"
        "  --force           remove the directories even after a timeout\n"
        "Prints one JSON line; exit 0 when the backend closed in time.\n");
}

int ts_detach_main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "domid", required_argument, NULL, 'd' },
        { "backend-domid", required_argument, NULL, 'b' },
        { "vdev", required_argument, NULL, 'v' },
        { "backend-type", required_argument, NULL, 'B' },
        { "deadline", required_argument, NULL, 'w' },
        { "force", no_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    unsigned int fe = 1, be = 0;
    const char *vdev = "xvda", *btype = "qdisk";
    double deadline = 10;
    bool force = false, closed;
    int c, state = -1;
    uint32_t devnum;
    DevicePaths p;
    struct xs_handle *xsh;
    int64_t t0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': fe = atoi(optarg); break;
        case 'b': be = atoi(optarg); break;
        case 'v': vdev = optarg; break;
        case 'B': btype = optarg; break;
        case 'w': deadline = atof(optarg); break;
        case 'f': force = true; break;
        case 'h': detach_usage(stdout); return 0;
        default: detach_usage(stderr); return 2;
        }
    }
    if (!ts_parse_vdev(vdev, &devnum)) {
        fprintf(stderr, "detach: bad vdev '%s'\n", vdev);
        return 2;
    }
    xsh = xs_open(0);
    if (!xsh) {
        perror("detach: xs_open");
        return 1;
    }
    device_paths(&p, btype, be, fe, devnum);
    t0 = xsu_now_ns();
    if (!request_close(xsh, p.backend)) {
        fprintf(stderr, "detach: cannot write %s: %s\n", p.backend,
                strerror(errno));
    }
    closed = xsu_wait(xsh, p.backend, backend_closed_or_gone, &state,
                      t0 + (int64_t)(deadline * 1e9));
    if (closed || force) {
        xs_rm(xsh, XBT_NULL, p.frontend);
        xs_rm(xsh, XBT_NULL, p.backend);
        xs_rm(xsh, XBT_NULL, p.libxl);
    }
    printf("{\"devnum\": %u, \"closed\": %s, \"backend_state\": %d, "
           "\"ms\": %.1f, \"removed\": %s}\n", devnum,
           closed ? "true" : "false", state,
           (xsu_now_ns() - t0) / 1e6, closed || force ? "true" : "false");
    fflush(stdout);
    xs_close(xsh);
    device_paths_free(&p);
    return closed ? 0 : 1;
}
