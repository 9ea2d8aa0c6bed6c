/*
 * Xen paravirtual block devices (qemu-xen-block)
 *
 * The QOM devices xen-block (abstract), xen-disk and xen-cdrom: properties,
 * the backend's xenstore nodes, negotiation with the frontend and its state
 * machine, online resize.  Serving the rings is the dataplane's business
 * (hw/block/dataplane/xen-block.c); the qdisk backend that creates these
 * devices from xenstore lives in hw/block/xen-block-backend.c.
 *
 * Locking: everything here runs in the main loop with the BQL held.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "qemu/cutils.h"
#include "qemu/log.h"
#include "hw/qdev-properties.h"
#include "hw/qdev-properties-system.h"
#include "hw/xen/xen-block.h"
#include "hw/xen/xen_backend_ops.h"
#include "hw/block/xen_blkif.h"
#include "system/block-backend.h"
#include "system/blockdev.h"
#include "system/iothread.h"
#include "dataplane/xen-block.h"
#include "trace.h"

/* ---- The vdev property ---- */

static void xen_block_get_vdev(Object *obj, Visitor *v, const char *name,
                               void *opaque, Error **errp)
{
    const Property *prop = opaque;
    XenVbd *vdev = object_field_prop_ptr(obj, prop);
    g_autofree char *str = xen_vbd_name(vdev);

    visit_type_str(v, name, &str, errp);
}

static void xen_block_set_vdev(Object *obj, Visitor *v, const char *name,
                               void *opaque, Error **errp)
{
    ERRP_GUARD();   /* for error_append_hint() */
    const Property *prop = opaque;
    XenVbd *vdev = object_field_prop_ptr(obj, prop);
    g_autofree char *str = NULL;

    if (!visit_type_str(v, name, &str, errp)) {
        return;
    }
    if (!xen_vbd_parse(str, vdev)) {
        error_setg(errp, "invalid virtual disk specifier '%s'", str);
        error_append_hint(errp, "Use a Xen name (xvda, xvdb2, xvdaa, hda, "
                          "sdc, d0p1) or a device number (51712).\n");
    }
}

static const PropertyInfo xen_block_prop_vdev = {
    .type = "str",
    .description = "Xen virtual device: xvdX[N], hdX[N], sdX[N], dNpM or "
                   "a device number (qemu-xen-block)",
    .get = xen_block_get_vdev,
    .set = xen_block_set_vdev,
};

/* ---- Device name and automatic vdev ---- */

/* The block device on the bus at @kid, if it is one and not @self. */
static XenBlockDevice *xen_block_other_device(BusChild *kid,
                                              XenBlockDevice *self)
{
    Object *obj = OBJECT(kid->child);

    if (obj == OBJECT(self) ||
        !object_dynamic_cast(obj, TYPE_XEN_BLOCK_DEVICE)) {
        return NULL;
    }
    return XEN_BLOCK_DEVICE(obj);
}

static bool xen_block_vdev_in_use(XenBlockDevice *blockdev, uint32_t number)
{
    BusState *bus = qdev_get_parent_bus(DEVICE(blockdev));
    BusChild *kid;

    QTAILQ_FOREACH(kid, &bus->children, sibling) {
        XenBlockDevice *other = xen_block_other_device(kid, blockdev);

        if (other && other->vdev.number == number) {
            return true;
        }
    }
    return false;
}

/*
 * The disks already taken, as disk indexes (hda, sda, xvda and their
 * partitions are all disk 0: a Linux frontend puts them on the same xvd
 * minors): ours, and those the frontend domain has directories for (disks
 * another backend serves, such as blkback, or a toolstack set up).
 */
static GHashTable *xen_block_disks_taken(XenBlockDevice *blockdev,
                                         Error **errp)
{
    XenDevice *xendev = XEN_DEVICE(blockdev);
    XenBus *xenbus = XEN_BUS(qdev_get_parent_bus(DEVICE(blockdev)));
    g_autofree char *path = g_strdup_printf("/local/domain/%u/device/vbd",
                                            xendev->frontend_id);
    g_autoptr(GHashTable) disks = g_hash_table_new(NULL, NULL);
    unsigned int n = 0;
    char **names = qemu_xen_xs_directory(xenbus->xsh, XBT_NULL, path, &n);
    BusChild *kid;

    if (!names && errno != ENOENT) {
        error_setg_errno(errp, errno, "cannot list %s", path);
        return NULL;
    }
    for (unsigned int i = 0; i < n; i++) {
        uint32_t number;
        XenVbd vbd;

        if (xen_vbd_parse_uint(names[i], UINT32_MAX, &number) &&
            xen_vbd_decode(number, &vbd)) {
            g_hash_table_add(disks, GUINT_TO_POINTER(vbd.disk));
        }
    }
    free(names);    /* one allocation, from the xenstore library */

    QTAILQ_FOREACH(kid, &BUS(xenbus)->children, sibling) {
        XenBlockDevice *other = xen_block_other_device(kid, blockdev);

        if (other && other->vdev.scheme != XEN_VBD_SCHEME_NONE) {
            g_hash_table_add(disks, GUINT_TO_POINTER(other->vdev.disk));
        }
    }
    return g_steal_pointer(&disks);
}

/* For -drive if=xen, or xen-disk, without a vdev: the first free xvd. */
static bool xen_block_pick_vdev(XenBlockDevice *blockdev, Error **errp)
{
    g_autoptr(GHashTable) taken = xen_block_disks_taken(blockdev, errp);

    if (!taken) {
        return false;
    }
    for (unsigned int disk = 0; disk <= XEN_VBD_MAX_DISK; disk++) {
        XenVbd vbd = { .scheme = XEN_VBD_SCHEME_XVD, .disk = disk };

        if (!g_hash_table_contains(taken, GUINT_TO_POINTER(disk)) &&
            xen_vbd_encode(&vbd)) {
            blockdev->vdev = vbd;
            return true;
        }
    }
    error_setg(errp, "no free virtual disk number");
    return false;
}

static char *xen_block_xs_name(XenDevice *xendev, Error **errp)
{
    XenBlockDevice *blockdev = XEN_BLOCK_DEVICE(xendev);

    if (blockdev->vdev.scheme == XEN_VBD_SCHEME_NONE &&
        !xen_block_pick_vdev(blockdev, errp)) {
        return NULL;
    }
    if (xen_block_vdev_in_use(blockdev, blockdev->vdev.number)) {
        error_setg(errp, "virtual disk %u is already in use",
                   blockdev->vdev.number);
        return NULL;
    }
    return g_strdup_printf("%u", blockdev->vdev.number);
}

/* ---- What the backend offers ---- */

static uint64_t xen_block_disk_sectors(XenBlockDevice *blockdev)
{
    int64_t len = blk_getlength(blockdev->conf.blk);

    /* The protocol counts 512-byte sectors whatever the block size. */
    return len > 0 ? len >> XEN_BLKIF_SECTOR_SHIFT : 0;
}

static bool xen_block_discard_enabled(XenBlockDevice *blockdev)
{
    return !(blockdev->info & VDISK_READONLY) &&
           (blk_get_flags(blockdev->conf.blk) & BDRV_O_UNMAP);
}

/* Indirect requests are worth offering only beyond 11 segments. */
static unsigned int xen_block_max_indirect(XenBlockDevice *blockdev)
{
    return blockdev->max_indirect_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST ?
           blockdev->max_indirect_segments : 0;
}

static XenBlkifLimits xen_block_limits(XenBlockDevice *blockdev)
{
    return (XenBlkifLimits) {
        .disk_sectors = xen_block_disk_sectors(blockdev),
        .logical_block_size = blockdev->conf.logical_block_size,
        .read_only = blockdev->info & VDISK_READONLY,
        .flush = true,
        .barrier = blockdev->barrier,
        .discard = xen_block_discard_enabled(blockdev),
        .max_indirect_segments = xen_block_max_indirect(blockdev),
    };
}

static void xen_block_write_size(XenBlockDevice *blockdev)
{
    XenDevice *xendev = XEN_DEVICE(blockdev);
    uint64_t sectors = xen_block_disk_sectors(blockdev);

    trace_xen_block_dev_size(xendev->name, sectors);
    xen_device_backend_printf(xendev, "sectors", "%" PRIu64, sectors);
}

static void xen_block_write_features(XenBlockDevice *blockdev)
{
    XenDevice *xendev = XEN_DEVICE(blockdev);
    BlockConf *conf = &blockdev->conf;

    xen_device_backend_printf(xendev, "info", "%u", blockdev->info);
    xen_device_backend_printf(xendev, "mode", "%s",
                              blockdev->info & VDISK_READONLY ? "r" : "w");
    xen_device_backend_printf(xendev, "sector-size", "%u",
                              conf->logical_block_size);
    xen_device_backend_printf(xendev, "physical-sector-size", "%u",
                              conf->physical_block_size);
    xen_block_write_size(blockdev);
    xen_device_backend_printf(xendev, "feature-flush-cache", "%u", 1);
    if (blockdev->barrier) {
        xen_device_backend_printf(xendev, "feature-barrier", "%u", 1);
    }
    if (xen_block_discard_enabled(blockdev)) {
        xen_device_backend_printf(xendev, "feature-discard", "%u", 1);
        xen_device_backend_printf(xendev, "discard-granularity", "%u",
                                  conf->discard_granularity);
        xen_device_backend_printf(xendev, "discard-alignment", "%u", 0);
    }
    if (qemu_xen_gnttab_can_map_multi()) {
        xen_device_backend_printf(xendev, "max-ring-page-order", "%u",
                                  blockdev->max_ring_page_order);
    }
    if (blockdev->max_queues > 1) {
        xen_device_backend_printf(xendev, "multi-queue-max-queues", "%u",
                                  blockdev->max_queues);
    }
    if (xen_block_max_indirect(blockdev)) {
        xen_device_backend_printf(xendev, "feature-max-indirect-segments",
                                  "%u", xen_block_max_indirect(blockdev));
    }
    if (blockdev->persistent) {
        xen_device_backend_printf(xendev, "feature-persistent", "%u", 1);
    }
    xen_device_frontend_printf(xendev, "virtual-device", "%u",
                               blockdev->vdev.number);
    xen_device_frontend_printf(xendev, "device-type", "%s",
                               blockdev->device_type);
}

/* Re-write the backend state so that the frontend's watch fires. */
static void xen_block_kick_frontend(XenBlockDevice *blockdev)
{
    XenDevice *xendev = XEN_DEVICE(blockdev);

    xen_device_backend_printf(xendev, "state", "%u",
                              xen_device_backend_get_state(xendev));
}

/* ---- Negotiation ---- */

/* Read an unsigned frontend node; absent gives false with *present unset. */
static bool xen_block_read_uint(XenDevice *xendev, const char *key,
                                uint32_t max, uint32_t *value, bool *present)
{
    g_autofree char *str = xen_device_frontend_read(xendev, key);

    if (present) {
        *present = str != NULL;
    }
    return str && xen_vbd_parse_uint(str, max, value);
}

/*
 * An optional unsigned node: absent gives @dflt; present, it must be a
 * number no larger than @max.
 */
static bool xen_block_read_optional(XenDevice *xendev, const char *key,
                                    uint32_t dflt, uint32_t max,
                                    uint32_t *value, Error **errp)
{
    bool present;

    if (xen_block_read_uint(xendev, key, max, value, &present)) {
        return true;
    }
    if (present) {
        error_setg(errp, "invalid %s (at most %u)", key, max);
        return false;
    }
    *value = dflt;
    return true;
}

/* What the frontend chose, read and checked before anything is set up. */
typedef struct XenBlockFrontendChoice {
    XenBlkifAbi abi;
    bool has_order;             /* ring-page-order was written */
    unsigned int order;
    unsigned int nr_queues;
    bool persistent;
} XenBlockFrontendChoice;

/*
 * Read one queue's ring references and event channel from the frontend's
 * directory @prefix ("" or "queue-N/").  As Linux's blkback: with a
 * ring-page-order node the references are ring-ref0..N-1, without one a
 * single ring-ref (also accepted for order 0).
 */
static bool xen_block_read_queue(XenBlockDevice *blockdev, const char *prefix,
                                 const XenBlockFrontendChoice *fc,
                                 XenBlockQueueConfig *q, Error **errp)
{
    XenDevice *xendev = XEN_DEVICE(blockdev);
    g_autofree char *key = NULL;

    q->nr_ring_ref = 1u << fc->order;
    for (unsigned int i = 0; i < q->nr_ring_ref; i++) {
        g_free(key);
        key = fc->has_order ? g_strdup_printf("%sring-ref%u", prefix, i)
                            : g_strdup_printf("%sring-ref", prefix);
        if (xen_block_read_uint(xendev, key, UINT32_MAX, &q->ring_ref[i],
                                NULL)) {
            continue;
        }
        if (fc->order == 0) {
            g_free(key);
            key = g_strdup_printf("%sring-ref", prefix);
            if (xen_block_read_uint(xendev, key, UINT32_MAX,
                                    &q->ring_ref[i], NULL)) {
                continue;
            }
        }
        error_setg(errp, "missing or invalid %s", key);
        return false;
    }
    g_free(key);
    key = g_strdup_printf("%sevent-channel", prefix);
    if (!xen_block_read_uint(xendev, key, UINT32_MAX, &q->event_channel,
                             NULL)) {
        error_setg(errp, "missing or invalid %s", key);
        return false;
    }
    return true;
}

static bool xen_block_read_choice(XenBlockDevice *blockdev,
                                  XenBlockFrontendChoice *fc, Error **errp)
{
    XenDevice *xendev = XEN_DEVICE(blockdev);
    unsigned int max_order = qemu_xen_gnttab_can_map_multi() ?
                             blockdev->max_ring_page_order : 0;
    g_autofree char *protocol = xen_device_frontend_read(xendev, "protocol");
    uint32_t order, queues, persistent;
    bool present;

    if (!xen_blkif_abi_from_name(protocol, &fc->abi)) {
        /* The guest wrote it: no raw newlines or escapes in our log. */
        g_autofree char *head = g_strndup(protocol, 32);
        g_autofree char *shown = g_strescape(head, NULL);

        error_setg(errp, "unknown protocol '%s'%s", shown,
                   strlen(protocol) > 32 ? " (cut short)" : "");
        return false;
    }
    fc->has_order = xen_block_read_uint(xendev, "ring-page-order", UINT32_MAX,
                                        &order, &present);
    if (present && (!fc->has_order || order > max_order)) {
        error_setg(errp, "invalid ring-page-order (%u offered)", max_order);
        return false;
    }
    fc->order = fc->has_order ? order : 0;
    if (!xen_block_read_optional(xendev, "multi-queue-num-queues", 1,
                                 blockdev->max_queues, &queues, errp)) {
        return false;
    }
    if (queues == 0) {
        error_setg(errp, "multi-queue-num-queues 0");
        return false;
    }
    fc->nr_queues = queues;
    if (!xen_block_read_optional(xendev, "feature-persistent", 0, UINT32_MAX,
                                 &persistent, errp)) {
        return false;
    }
    fc->persistent = blockdev->persistent && persistent == 1;
    return true;
}

/* The IOThread of each queue: the mapping's, or the one for all. */
static IOThread *xen_block_queue_iothread(XenBlockDevice *blockdev,
                                          unsigned int queue)
{
    if (blockdev->queue_iothreads) {
        return blockdev->queue_iothreads[queue];
    }
    return blockdev->iothread;
}

/*
 * Connect to the frontend.  Every value it wrote is checked before any
 * resource is taken; a bad one refuses the connection.  On failure,
 * *@guest_fault says whether the frontend is to blame.
 */
static bool xen_block_connect(XenBlockDevice *blockdev, bool *guest_fault,
                              Error **errp)
{
    XenDevice *xendev = XEN_DEVICE(blockdev);
    g_autofree XenBlockQueueConfig *queues = NULL;
    XenBlockDataPlaneConfig config = {
        .limits = xen_block_limits(blockdev),
        .max_persistent_grants = blockdev->max_persistent_grants,
    };
    XenBlockFrontendChoice fc;

    *guest_fault = true;    /* until the frontend's values are read */
    if (!xen_block_read_choice(blockdev, &fc, errp)) {
        return false;
    }
    queues = g_new0(XenBlockQueueConfig, fc.nr_queues);
    for (unsigned int i = 0; i < fc.nr_queues; i++) {
        /* One queue: its nodes sit in the device's own directory. */
        g_autofree char *prefix = fc.nr_queues == 1 ? g_strdup("")
                                  : g_strdup_printf("queue-%u/", i);

        if (!xen_block_read_queue(blockdev, prefix, &fc, &queues[i], errp)) {
            return false;
        }
        queues[i].iothread = xen_block_queue_iothread(blockdev, i);
    }
    *guest_fault = false;
    config.abi = fc.abi;
    config.persistent = fc.persistent;
    trace_xen_block_dev_connect(xendev->name, xen_blkif_abi_name(fc.abi),
                                1u << fc.order, fc.nr_queues, fc.persistent);
    return xen_block_dataplane_start(blockdev->dataplane, &config, queues,
                                     fc.nr_queues, guest_fault, errp);
}

static void xen_block_disconnect(XenBlockDevice *blockdev)
{
    trace_xen_block_dev_disconnect(XEN_DEVICE(blockdev)->name);
    if (blockdev->dataplane) {
        xen_block_dataplane_stop(blockdev->dataplane);
    }
}

static void xen_block_dev_frontend_changed(XenDevice *xendev,
                                       enum xenbus_state frontend_state,
                                       Error **errp)
{
    XenBlockDevice *blockdev = XEN_BLOCK_DEVICE(xendev);
    enum xenbus_state backend_state = xen_device_backend_get_state(xendev);
    Error *local_err = NULL;
    bool guest_fault;

    trace_xen_block_dev_frontend_changed(xendev->name, frontend_state,
                                         backend_state);
    switch (frontend_state) {
    case XenbusStateInitialised:
    case XenbusStateConnected:
        if (backend_state == XenbusStateConnected ||
            backend_state == XenbusStateClosing) {
            break;
        }
        xen_block_disconnect(blockdev);
        if (!xen_block_connect(blockdev, &guest_fault, &local_err)) {
            /*
             * Stay in InitWait until the frontend tries again, and say
             * why, rate-limited (the guest can retry in a loop): its own
             * mistakes with -d guest_errors, the host's failures (no
             * memory, no event channel device, the disk held in another
             * IOThread) always, with a limiter of their own so that the
             * guest's mistakes cannot crowd them out.
             */
            if (guest_fault) {
                xen_block_guest_error(&blockdev->log_limiter, xendev->name,
                                      "connection refused: %s",
                                      error_get_pretty(local_err));
            } else {
                xen_block_host_error(&blockdev->host_log_limiter,
                                     xendev->name,
                                     "cannot connect: %s",
                                     error_get_pretty(local_err));
            }
            error_free(local_err);
            xen_block_disconnect(blockdev);
            break;
        }
        xen_device_backend_set_state(xendev, XenbusStateConnected);
        break;

    case XenbusStateClosing:
        /* Quiesce now: the frontend may free its ring at any time. */
        xen_block_disconnect(blockdev);
        xen_device_backend_set_state(xendev, XenbusStateClosing);
        break;

    case XenbusStateClosed:
    case XenbusStateUnknown:
        xen_block_disconnect(blockdev);
        xen_device_backend_set_state(xendev, XenbusStateClosed);
        break;

    default:
        break;
    }
}

/* ---- Block layer callbacks ---- */

static void xen_block_resize_cb(void *opaque)
{
    XenBlockDevice *blockdev = opaque;

    xen_block_write_size(blockdev);
    if (blockdev->dataplane) {
        xen_block_dataplane_resize(blockdev->dataplane,
                                   xen_block_disk_sectors(blockdev));
    }
    /* Linux's blkfront re-reads "sectors" when the backend state is set. */
    xen_block_kick_frontend(blockdev);
}

/*
 * The dataplane found a ring corrupt and stopped consuming it.  Go to
 * Closing: the frontend has to reconnect (with a fresh ring) to be served.
 */
static void xen_block_ring_error(void *opaque)
{
    XenBlockDevice *blockdev = opaque;
    XenDevice *xendev = XEN_DEVICE(blockdev);

    if (xen_device_backend_get_state(xendev) == XenbusStateConnected) {
        xen_device_backend_set_state(xendev, XenbusStateClosing);
    }
}

/* ---- Realize and unrealize ---- */

/*
 * iothread-vq-mapping: which IOThread serves each queue.  Either every
 * entry lists its queues (and every queue up to multi-queue-max-queues is
 * listed exactly once), or none does and queues go round-robin.  Resolved
 * once, at realize; the IOThreads are referenced until unrealize.
 */
static bool xen_block_map_iothreads(XenBlockDevice *blockdev, Error **errp)
{
    IOThreadVirtQueueMappingList *list = blockdev->iothread_vq_mapping;
    unsigned int nmax = blockdev->max_queues, nentries = 0, i;
    g_autofree IOThread **map = g_new0(IOThread *, nmax);
    bool with_vqs = list && list->value->has_vqs;

    if (!list) {
        return true;
    }
    if (blockdev->iothread) {
        error_setg(errp, "iothread and iothread-vq-mapping are exclusive");
        return false;
    }
    for (IOThreadVirtQueueMappingList *e = list; e; e = e->next, nentries++) {
        IOThread *iothread = iothread_by_id(e->value->iothread);
        uint16List *vq;

        if (!iothread) {
            error_setg(errp, "no IOThread '%s'", e->value->iothread);
            return false;
        }
        if (e->value->has_vqs != with_vqs) {
            error_setg(errp, "iothread-vq-mapping: list the queues of every "
                       "IOThread, or of none");
            return false;
        }
        for (vq = e->value->vqs; vq; vq = vq->next) {
            if (vq->value >= nmax || map[vq->value]) {
                error_setg(errp, "iothread-vq-mapping: queue %u is out of "
                           "range (multi-queue-max-queues %u) or listed "
                           "twice", vq->value, nmax);
                return false;
            }
            map[vq->value] = iothread;
        }
    }
    for (i = 0; i < nmax; i++) {
        if (!with_vqs) {
            IOThreadVirtQueueMappingList *e = list;

            for (unsigned int k = i % nentries; k; k--) {
                e = e->next;
            }
            map[i] = iothread_by_id(e->value->iothread);
        } else if (!map[i]) {
            error_setg(errp, "iothread-vq-mapping: queue %u has no IOThread",
                       i);
            return false;
        }
    }
    for (i = 0; i < nmax; i++) {
        object_ref(OBJECT(map[i]));
    }
    blockdev->queue_iothreads = g_steal_pointer(&map);
    return true;
}

static void xen_block_unmap_iothreads(XenBlockDevice *blockdev)
{
    if (!blockdev->queue_iothreads) {
        return;
    }
    for (unsigned int i = 0; i < blockdev->max_queues; i++) {
        object_unref(OBJECT(blockdev->queue_iothreads[i]));
    }
    g_clear_pointer(&blockdev->queue_iothreads, g_free);
}

static bool xen_block_check_properties(XenBlockDevice *blockdev, Error **errp)
{
    if (blockdev->max_ring_page_order > XEN_BLKIF_MAX_RING_PAGE_ORDER) {
        error_setg(errp, "max-ring-page-order %u exceeds the maximum %u",
                   blockdev->max_ring_page_order,
                   XEN_BLKIF_MAX_RING_PAGE_ORDER);
        return false;
    }
    if (blockdev->max_queues < 1 ||
        blockdev->max_queues > XEN_BLOCK_MAX_QUEUES) {
        error_setg(errp, "multi-queue-max-queues must be 1 to %u",
                   XEN_BLOCK_MAX_QUEUES);
        return false;
    }
    if (blockdev->max_persistent_grants > XEN_BLOCK_MAX_PERSISTENT_GRANTS) {
        error_setg(errp, "max-persistent-grants must be at most %u",
                   XEN_BLOCK_MAX_PERSISTENT_GRANTS);
        return false;
    }
    if (blockdev->max_indirect_segments > XEN_BLKIF_MAX_INDIRECT_SEGMENTS) {
        error_setg(errp, "max-indirect-segments must be at most %u",
                   (unsigned int)XEN_BLKIF_MAX_INDIRECT_SEGMENTS);
        return false;
    }
    return true;
}

static void xen_block_dev_realize(XenDevice *xendev, Error **errp)
{
    XenBlockDevice *blockdev = XEN_BLOCK_DEVICE(xendev);
    XenBlockDeviceClass *bdc = XEN_BLOCK_DEVICE_GET_CLASS(blockdev);
    BlockConf *conf = &blockdev->conf;

    trace_xen_block_dev_realize(object_get_typename(OBJECT(blockdev)),
                                xendev->name);

    /* Check every input before anything is created. */
    if (!xen_block_check_properties(blockdev, errp) ||
        !bdc->setup(blockdev, errp)) {
        return;
    }
    if (!blkconf_apply_backend_options(conf, blockdev->info & VDISK_READONLY,
                                       true, errp) ||
        !blkconf_blocksizes(conf, errp) ||
        !xen_block_map_iothreads(blockdev, errp)) {
        return;
    }
    if (conf->discard_granularity == (uint32_t)-1) {
        conf->discard_granularity = conf->physical_block_size;
    }
    /* rerror/werror=stop record the error in the I/O status (query-block) */
    blk_iostatus_enable(conf->blk);

    blockdev->dataplane = xen_block_dataplane_create(xendev, conf->blk,
                                                     xen_block_resize_cb,
                                                     blockdev);
    xen_block_dataplane_set_ring_error_cb(blockdev->dataplane,
                                          xen_block_ring_error, blockdev);
    xen_block_write_features(blockdev);
    /*
     * xen-bus announced InitWait before we wrote our features: announce it
     * again so that a frontend reads them only now.
     */
    xen_block_kick_frontend(blockdev);
}

static void xen_block_dev_unrealize(XenDevice *xendev)
{
    XenBlockDevice *blockdev = XEN_BLOCK_DEVICE(xendev);

    trace_xen_block_dev_unrealize(xendev->name);
    if (blockdev->dataplane) {
        xen_block_disconnect(blockdev);
        g_clear_pointer(&blockdev->dataplane, xen_block_dataplane_destroy);
    }
    xen_block_unmap_iothreads(blockdev);
}

/* ---- Statistics: qom-get <device> statistics ---- */

static void xen_block_get_statistics(Object *obj, Visitor *v,
                                     const char *name, void *opaque,
                                     Error **errp)
{
    XenBlockDevice *blockdev = XEN_BLOCK_DEVICE(obj);
    unsigned int n = xen_block_dataplane_nr_queues(blockdev->dataplane);

    if (!visit_start_list(v, name, NULL, 0, errp)) {
        return;
    }
    for (unsigned int i = 0; i < n; i++) {
        XenBlockQueueStats st;
        uint32_t queue;
        g_autofree char *where = NULL;
        bool ok;
        const struct {
            const char *name;
            uint64_t value;
        } fields[] = {
            { "requests", 0 }, { "segments", 0 }, { "invalid", 0 },
            { "grant-copies", 0 }, { "grant-maps", 0 },
            { "grant-unmaps", 0 }, { "persistent-hits", 0 },
            { "notifications", 0 }, { "notifications-suppressed", 0 },
            { "ring-scans", 0 }, { "waits-for-buffers", 0 },
            { "polled-scans", 0 },
        };
        uint64_t values[G_N_ELEMENTS(fields)];

        if (!xen_block_dataplane_get_stats(blockdev->dataplane, i, &st)) {
            break;
        }
        where = g_strdup(xen_block_dataplane_queue_where(
                             blockdev->dataplane, i));
        values[0] = st.requests;
        values[1] = st.segments;
        values[2] = st.invalid;
        values[3] = st.grant_copies;
        values[4] = st.grant_maps;
        values[5] = st.grant_unmaps;
        values[6] = st.persistent_hits;
        values[7] = st.notifications;
        values[8] = st.notifications_suppressed;
        values[9] = st.ring_scans;
        values[10] = st.waits_for_buffers;
        values[11] = st.polled_scans;
        if (!visit_start_struct(v, NULL, NULL, 0, errp)) {
            break;
        }
        queue = i;
        ok = visit_type_uint32(v, "queue", &queue, errp) &&
             visit_type_str(v, "iothread", &where, errp);
        for (unsigned int f = 0; ok && f < G_N_ELEMENTS(fields); f++) {
            ok = visit_type_uint64(v, fields[f].name, &values[f], errp);
        }
        ok = ok && visit_check_struct(v, errp);
        visit_end_struct(v, NULL);
        if (!ok) {
            break;
        }
    }
    visit_end_list(v, NULL);
}

/*
 * qom-get <device> persistent-maps: {"budget": N, "mapped": M}, for the
 * whole process (every disk's queues share the budget; past it, segments
 * are copied).
 */
static void xen_block_get_persistent_maps(Object *obj, Visitor *v,
                                          const char *name, void *opaque,
                                          Error **errp)
{
    uint32_t budget, mapped;

    xen_block_dataplane_get_map_budget(&budget, &mapped);
    if (!visit_start_struct(v, name, NULL, 0, errp)) {
        return;
    }
    if (visit_type_uint32(v, "budget", &budget, errp) &&
        visit_type_uint32(v, "mapped", &mapped, errp)) {
        visit_check_struct(v, errp);
    }
    visit_end_struct(v, NULL);
}

static const Property xen_block_props[] = {
    DEFINE_PROP("vdev", XenBlockDevice, vdev, xen_block_prop_vdev, XenVbd),
    DEFINE_BLOCK_PROPERTIES(XenBlockDevice, conf),
    DEFINE_BLOCK_ERROR_PROPERTIES(XenBlockDevice, conf),
    DEFINE_PROP_UINT32("max-ring-page-order", XenBlockDevice,
                       max_ring_page_order, XEN_BLKIF_MAX_RING_PAGE_ORDER),
    DEFINE_PROP_LINK("iothread", XenBlockDevice, iothread, TYPE_IOTHREAD,
                     IOThread *),
    DEFINE_PROP_IOTHREAD_VQ_MAPPING_LIST("iothread-vq-mapping",
                                         XenBlockDevice, iothread_vq_mapping),
    DEFINE_PROP_UINT32("multi-queue-max-queues", XenBlockDevice, max_queues,
                       XEN_BLOCK_DEFAULT_QUEUES),
    DEFINE_PROP_UINT32("max-indirect-segments", XenBlockDevice,
                       max_indirect_segments, 256),
    DEFINE_PROP_BOOL("feature-persistent", XenBlockDevice, persistent, true),
    DEFINE_PROP_BOOL("feature-barrier", XenBlockDevice, barrier, false),
    DEFINE_PROP_UINT32("max-persistent-grants", XenBlockDevice,
                       max_persistent_grants, 1056),
};

/*
 * Where a xen-block device lives in xenstore: the directories libxl uses
 * for qdisk disks (backend/qdisk/<domid>/<name>, device/vbd/<name>), and
 * its name there, the vdev number (chosen when none was given).  xen-bus
 * asks for the name first, before it makes the directories.
 */
static void xen_block_class_init_xenstore(XenDeviceClass *xdc)
{
    xdc->backend = "qdisk";
    xdc->device = "vbd";
    xdc->get_name = xen_block_xs_name;
}

static void xen_block_class_init(ObjectClass *oc, void *data)
{
    XenDeviceClass *xdc = XEN_DEVICE_CLASS(oc);

    xen_block_class_init_xenstore(xdc);
    /*
     * The rest of the device's life, as xen-bus drives it from the main
     * loop: realize once the directories exist (check the disk, write our
     * features), frontend_changed on every frontend state change (connect
     * the dataplane, or close it), unrealize last.
     */
    xdc->realize = xen_block_dev_realize;
    xdc->frontend_changed = xen_block_dev_frontend_changed;
    xdc->unrealize = xen_block_dev_unrealize;
    device_class_set_props(DEVICE_CLASS(oc), xen_block_props);
    object_class_property_add(oc, "statistics", "XenBlockQueueStatsList",
                              xen_block_get_statistics, NULL, NULL, NULL);
    object_class_property_set_description(oc, "statistics",
        "Per-queue counters: requests, segments, grant copies and maps, "
        "notifications sent and suppressed, ...");
    object_class_property_add(oc, "persistent-maps", "XenBlockPersistentMaps",
                              xen_block_get_persistent_maps, NULL, NULL,
                              NULL);
    object_class_property_set_description(oc, "persistent-maps",
        "Persistent grant mappings of the whole process: the budget all "
        "disks share, and how many are mapped now");
}


/* ---- xen-disk ---- */

static bool xen_disk_setup(XenBlockDevice *blockdev, Error **errp)
{
    BlockConf *conf = &blockdev->conf;

    if (!conf->blk) {
        error_setg(errp, "drive property not set");
        return false;
    }
    if (!blk_is_inserted(conf->blk)) {
        error_setg(errp, "device needs media, but drive is empty");
        return false;
    }
    blockdev->device_type = "disk";
    blockdev->info = blk_supports_write_perm(conf->blk) ? 0 : VDISK_READONLY;
    return true;
}

static void xen_disk_class_init(ObjectClass *class, void *data)
{
    DeviceClass *dev_class = DEVICE_CLASS(class);
    XenBlockDeviceClass *bdc = XEN_BLOCK_DEVICE_CLASS(class);

    dev_class->desc = "Xen PV disk (qemu-xen-block)";
    bdc->setup = xen_disk_setup;
}


/* ---- xen-cdrom ---- */

static bool xen_cdrom_setup(XenBlockDevice *blockdev, Error **errp)
{
    BlockConf *conf = &blockdev->conf;

    /*
     * A CD-ROM may be created empty; blkif has no media change, so the
     * frontend then sees a disk of size zero.
     */
    if (!conf->blk) {
        conf->blk = blk_new(qemu_get_aio_context(), 0, BLK_PERM_ALL);
        if (blk_attach_dev(conf->blk, DEVICE(blockdev)) < 0) {
            blk_unref(conf->blk);
            conf->blk = NULL;
            error_setg(errp, "cannot attach an empty drive");
            return false;
        }
        /* The device now holds the only reference. */
        blk_unref(conf->blk);
    }
    blockdev->device_type = "cdrom";
    blockdev->info = VDISK_CDROM | VDISK_REMOVABLE | VDISK_READONLY;
    return true;
}

static void xen_cdrom_class_init(ObjectClass *class, void *data)
{
    DeviceClass *dev_class = DEVICE_CLASS(class);
    XenBlockDeviceClass *bdc = XEN_BLOCK_DEVICE_CLASS(class);

    dev_class->desc = "Xen PV CD-ROM (qemu-xen-block)";
    bdc->setup = xen_cdrom_setup;
}

/* The abstract xen-block and its two concrete devices. */
static const TypeInfo xen_block_types[] = {
    {
        .name = TYPE_XEN_BLOCK_DEVICE,
        .parent = TYPE_XEN_DEVICE,
        .abstract = true,
        .instance_size = sizeof(XenBlockDevice),
        .class_size = sizeof(XenBlockDeviceClass),
        .class_init = xen_block_class_init,
    }, {
        .name = TYPE_XEN_DISK_DEVICE,
        .parent = TYPE_XEN_BLOCK_DEVICE,
        .class_init = xen_disk_class_init,
    }, {
        .name = TYPE_XEN_CDROM_DEVICE,
        .parent = TYPE_XEN_BLOCK_DEVICE,
        .class_init = xen_cdrom_class_init,
    },
};

DEFINE_TYPES(xen_block_types)
