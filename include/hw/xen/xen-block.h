/*
 * Xen paravirtual block devices: xen-block (abstract), xen-disk, xen-cdrom
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef HW_XEN_BLOCK_H
#define HW_XEN_BLOCK_H

#include "hw/xen/xen-bus.h"
#include "hw/block/block.h"
#include "hw/block/xen_vbd.h"
#include "hw/block/dataplane/xen-block.h"
#include "system/iothread.h"
#include "qapi/qapi-types-virtio.h"
#include "qom/object.h"

#define TYPE_XEN_BLOCK_DEVICE   "xen-block"
#define TYPE_XEN_DISK_DEVICE    "xen-disk"
#define TYPE_XEN_CDROM_DEVICE   "xen-cdrom"

/* Queues a frontend may ask for: default and limit. */
#define XEN_BLOCK_DEFAULT_QUEUES    4
#define XEN_BLOCK_MAX_QUEUES        64
#define XEN_BLOCK_MAX_PERSISTENT_GRANTS 65536   /* per queue */

OBJECT_DECLARE_TYPE(XenBlockDevice, XenBlockDeviceClass, XEN_BLOCK_DEVICE)

/* Objects the qdisk backend created for a device, destroyed with it. */
typedef struct XenBlockBackendObjects {
    char *node_name;            /* the block node (blockdev-add) */
    char *iothread_id;          /* the IOThread object (object-add) */
} XenBlockBackendObjects;

struct XenBlockDevice {
    XenDevice xendev;

    /* properties */
    XenVbd vdev;
    BlockConf conf;
    uint32_t max_ring_page_order;
    IOThread *iothread;
    IOThreadVirtQueueMappingList *iothread_vq_mapping;
    uint32_t max_queues;
    uint32_t max_indirect_segments;
    bool persistent;
    bool barrier;
    uint32_t max_persistent_grants;
    IOThread **queue_iothreads;     /* resolved mapping, max_queues long */

    /* set by the subclass at realize */
    const char *device_type;    /* "disk" or "cdrom" */
    unsigned int info;          /* VDISK_* flags */

    XenBlockDataPlane *dataplane;
    XenBlockLogLimiter log_limiter;     /* negotiation mistakes */
    XenBlockLogLimiter host_log_limiter; /* connections the host failed */
    XenBlockBackendObjects *backend_objects;
};

struct XenBlockDeviceClass {
    XenDeviceClass parent_class;

    /* Subclass hook: fill in device_type and info, check the drive. */
    bool (*setup)(XenBlockDevice *blockdev, Error **errp);
};

#endif /* HW_XEN_BLOCK_H */
