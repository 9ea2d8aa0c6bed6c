/*
 * The "qdisk" Xen backend: xen-disk and xen-cdrom devices created from
 * xenstore, as xl and libvirt's libxl driver ask for them
 *
 * libxl writes a backend directory (params, mode, device-type, dev,
 * direct-io-safe, discard-enable, ...) and xen-bus calls us to create the
 * device.  We make a block node for the image, an IOThread for the
 * dataplane, and the device itself; destroying the device removes all
 * three.
 *
 * Locking: main loop, BQL held.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-block-core.h"
#include "qapi/qapi-commands-qom.h"
#include "qapi/qapi-visit-block-core.h"
#include "qapi/qapi-visit-qom.h"
#include "qobject/qdict.h"
#include "qapi/qobject-input-visitor.h"
#include "qapi/visitor.h"
#include "qemu/error-report.h"
#include "qemu/rcu.h"
#include "hw/qdev-core.h"
#include "hw/xen/xen-backend.h"
#include "hw/xen/xen-block.h"
#include "hw/block/xen_vbd.h"
#include "trace.h"

/* What libxl asked for, parsed from the backend directory. */
typedef struct QdiskRequest {
    XenVbd vdev;
    bool cdrom;
    char *driver;               /* NULL: an empty CD-ROM */
    char *target;
    bool read_only;
    bool direct_io;
    bool discard;
} QdiskRequest;

static void qdisk_request_clear(QdiskRequest *req)
{
    g_free(req->driver);
    g_free(req->target);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(QdiskRequest, qdisk_request_clear)

static bool qdisk_parse(const char *name, QDict *opts, QdiskRequest *req,
                        Error **errp)
{
    const char *dev = qdict_get_try_str(opts, "dev");
    const char *device_type = qdict_get_try_str(opts, "device-type");
    const char *params = qdict_get_try_str(opts, "params");
    const char *mode = qdict_get_try_str(opts, "mode");
    uint32_t number;

    if (!xen_vbd_parse_uint(name, UINT32_MAX, &number)) {
        error_setg(errp, "invalid backend name '%s'", name);
        return false;
    }
    /* "dev" is the name the user chose; it must match the directory. */
    if (!dev || !xen_vbd_parse(dev, &req->vdev)) {
        error_setg(errp, "missing or invalid dev '%s'", dev ? dev : "");
        return false;
    }
    if (req->vdev.number != number) {
        error_setg(errp, "dev '%s' is not device %u", dev, number);
        return false;
    }
    if (!device_type || !strcmp(device_type, "disk")) {
        req->cdrom = false;
    } else if (!strcmp(device_type, "cdrom")) {
        req->cdrom = true;
    } else {
        error_setg(errp, "invalid device-type '%s'", device_type);
        return false;
    }
    req->read_only = !mode || mode[0] != 'w' || req->cdrom;
    req->direct_io = xen_vbd_parse_bool(
        qdict_get_try_str(opts, "direct-io-safe"), false);
    req->discard = xen_vbd_parse_bool(
        qdict_get_try_str(opts, "discard-enable"), true);

    if ((!params || !*params) && req->cdrom) {
        return true;    /* an empty drive */
    }
    if (!xen_vbd_parse_params(params, &req->driver, &req->target)) {
        error_setg(errp, "invalid params '%s'", params ? params : "");
        return false;
    }
    return true;
}

/* The protocol layer of the image: a regular file or a block device. */
static QDict *qdisk_protocol_layer(const QdiskRequest *req, Error **errp)
{
    QDict *file = qdict_new();
    struct stat st;

    if (stat(req->target, &st) < 0) {
        error_setg_errno(errp, errno, "cannot stat '%s'", req->target);
        qobject_unref(file);
        return NULL;
    }
    qdict_put_str(file, "driver", S_ISBLK(st.st_mode) ? "host_device"
                                                       : "file");
    qdict_put_str(file, "filename", req->target);
    if (req->direct_io) {
        QDict *cache = qdict_new();

        qdict_put_bool(cache, "direct", true);
        qdict_put(file, "cache", cache);
        qdict_put_str(file, "aio", "native");
    }
    if (req->discard && !req->read_only) {
        qdict_put_str(file, "discard", "unmap");
    }
    /*
     * Another QEMU (an HVM guest's emulated disk) may have the same image
     * open: image locking would refuse the second opener.
     */
    qdict_put_str(file, "locking", "off");
    return file;
}

static bool qdisk_blockdev_add(const char *node_name, const QdiskRequest *req,
                               Error **errp)
{
    ERRP_GUARD();
    g_autoptr(QDict) top = qdict_new();
    Visitor *v;
    bool ok;
    BlockdevOptions *options = NULL;
    QDict *file = qdisk_protocol_layer(req, errp);

    if (!file) {
        return false;
    }
    qdict_put_str(top, "driver", req->driver);
    qdict_put_str(top, "node-name", node_name);
    qdict_put_bool(top, "read-only", req->read_only);
    if (req->discard && !req->read_only) {
        qdict_put_str(top, "discard", "unmap");
    }
    qdict_put(top, "file", file);

    trace_xen_block_qdisk_blockdev_add(node_name, req->driver, req->target);
    v = qobject_input_visitor_new(QOBJECT(top));
    ok = visit_type_BlockdevOptions(v, NULL, &options, errp);
    visit_free(v);
    if (!ok) {
        return false;
    }
    qmp_blockdev_add(options, errp);
    qapi_free_BlockdevOptions(options);
    return !*errp;
}

/*
 * The disk's IOThread does not poll: a backend domain's few CPUs serve
 * every guest's disks (and network), and a spinning IOThread takes them
 * from the others, as Linux blkback never does.  qom-set poll-max-ns on
 * /objects/xen-qdisk-iothread-<vdev> turns polling on for one disk: it
 * halves the latency at iodepth 1 where a CPU is to spare.
 */
static bool qdisk_iothread_add(const char *id, Error **errp)
{
    ERRP_GUARD();
    ObjectOptions opts = {
        .qom_type = OBJECT_TYPE_IOTHREAD,
        .id = (char *)id,
        .u.iothread = {
            .has_poll_max_ns = true,
            .poll_max_ns = 0,
        },
    };

    qmp_object_add(&opts, errp);
    return !*errp;
}

static void qdisk_objects_free(XenBlockBackendObjects *objs)
{
    bool node_gone = true;

    if (!objs) {
        return;
    }
    if (objs->node_name) {
        Error *local_err = NULL;

        qmp_blockdev_del(objs->node_name, &local_err);
        if (local_err) {
            node_gone = false;
            warn_report_err(local_err);
        }
    }
    /*
     * A node that someone else still uses (an export, a block job) may
     * live in the IOThread's AioContext: then the IOThread stays, and
     * whoever removes the node can remove it too.
     */
    if (objs->iothread_id) {
        if (node_gone) {
            qmp_object_del(objs->iothread_id, &error_warn);
        } else {
            warn_report("keeping IOThread '%s' for block node '%s'",
                        objs->iothread_id, objs->node_name);
        }
    }
    g_free(objs->iothread_id);
    g_free(objs->node_name);
    g_free(objs);
}

static void xen_block_qdisk_create(XenBackendInstance *backend, QDict *opts,
                                   Error **errp)
{
    ERRP_GUARD();
    const char *name = xen_backend_get_name(backend);
    g_auto(QdiskRequest) req = { 0 };
    XenBlockBackendObjects *objs;
    const char *type;
    DeviceState *dev;

    if (!qdisk_parse(name, opts, &req, errp)) {
        return;
    }
    type = req.cdrom ? TYPE_XEN_CDROM_DEVICE : TYPE_XEN_DISK_DEVICE;
    trace_xen_block_qdisk_create(req.vdev.number, type);

    objs = g_new0(XenBlockBackendObjects, 1);
    if (req.driver) {
        g_autofree char *node = g_strdup_printf("xen-qdisk-%u",
                                                req.vdev.number);

        if (!qdisk_blockdev_add(node, &req, errp)) {
            goto fail;
        }
        objs->node_name = g_steal_pointer(&node);
    }
    objs->iothread_id = g_strdup_printf("xen-qdisk-iothread-%u",
                                        req.vdev.number);
    if (!qdisk_iothread_add(objs->iothread_id, errp)) {
        g_clear_pointer(&objs->iothread_id, g_free);
        goto fail;
    }

    dev = qdev_new(type);
    if (!object_property_set_str(OBJECT(dev), "vdev",
                                 qdict_get_str(opts, "dev"), errp)) {
        goto fail_dev;
    }
    if (objs->node_name &&
        !object_property_set_str(OBJECT(dev), "drive", objs->node_name,
                                 errp)) {
        goto fail_dev;
    }
    if (!object_property_set_str(OBJECT(dev), "iothread", objs->iothread_id,
                                 errp)) {
        goto fail_dev;
    }
    /*
     * Errors go to the guest, as blkback and upstream's qdisk answer them.
     * The block layer's default stops the VM on ENOSPC, and no toolstack
     * resumes a Xen guest's device model: the disk would hang for good.
     */
    if (!object_property_set_str(OBJECT(dev), "werror", "report", errp) ||
        !object_property_set_str(OBJECT(dev), "rerror", "report", errp)) {
        goto fail_dev;
    }
    XEN_BLOCK_DEVICE(dev)->backend_objects = objs;
    if (!qdev_realize_and_unref(dev, BUS(xen_backend_get_bus(backend)),
                                errp)) {
        error_prepend(errp, "cannot realize %s: ", type);
        XEN_BLOCK_DEVICE(dev)->backend_objects = NULL;
        object_unparent(OBJECT(dev));
        drain_call_rcu();
        goto fail;
    }
    xen_backend_set_device(backend, XEN_DEVICE(dev));
    return;

fail_dev:
    object_unref(OBJECT(dev));
fail:
    qdisk_objects_free(objs);
}

static void xen_block_qdisk_destroy(XenBackendInstance *backend, Error **errp)
{
    XenDevice *xendev = xen_backend_get_device(backend);
    XenBlockDevice *blockdev = XEN_BLOCK_DEVICE(xendev);
    XenBlockBackendObjects *objs = blockdev->backend_objects;

    trace_xen_block_qdisk_destroy(blockdev->vdev.number);
    blockdev->backend_objects = NULL;
    object_unparent(OBJECT(xendev));
    /*
     * The device is freed in an RCU callback, and until then it still holds
     * the block node and the IOThread: wait for it before removing them.
     */
    drain_call_rcu();
    qdisk_objects_free(objs);
}

static const XenBackendInfo xen_block_qdisk_info = {
    .type = "qdisk",
    .create = xen_block_qdisk_create,
    .destroy = xen_block_qdisk_destroy,
};

static void xen_block_qdisk_register(void)
{
    xen_backend_register(&xen_block_qdisk_info);
}

xen_backend_init(xen_block_qdisk_register);
