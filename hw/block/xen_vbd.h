/*
 * Xen virtual block device names and toolstack parameters
 *
 * Pure parsing of the values a toolstack or a user gives us: virtual device
 * names in every scheme of Xen's xen-vbd-interface document (xvdX, xvdXN,
 * hdX, sdX, dNpM and the raw number), and libxl's "params" node.  No device
 * state, no I/O: unit tests and fuzzers link this file on its own.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef HW_BLOCK_XEN_VBD_H
#define HW_BLOCK_XEN_VBD_H

/* The naming scheme a virtual device was given in. */
typedef enum XenVbdScheme {
    XEN_VBD_SCHEME_NONE,        /* not set */
    XEN_VBD_SCHEME_XVD,         /* xvda, xvdb3, xvdaa */
    XEN_VBD_SCHEME_HD,          /* hda .. hdd (IDE) */
    XEN_VBD_SCHEME_SD,          /* sda .. (SCSI) */
    XEN_VBD_SCHEME_DP,          /* d0p1 */
} XenVbdScheme;

typedef struct XenVbd {
    XenVbdScheme scheme;
    unsigned int disk;
    unsigned int partition;
    uint32_t number;            /* the xenstore device number */
} XenVbd;

/* Largest disk and partition numbers the encodings can carry. */
#define XEN_VBD_MAX_DISK        ((1u << 20) - 1)
#define XEN_VBD_MAX_PARTITION   255u

/*
 * Parse a device name or a decimal device number into @vbd.
 * Returns false, with @vbd untouched, if @name is not a valid device.
 */
bool xen_vbd_parse(const char *name, XenVbd *vbd);

/* Fill in @vbd->number from scheme, disk and partition; false if too big. */
bool xen_vbd_encode(XenVbd *vbd);

/*
 * Decode a xenstore device number into scheme, disk and partition.
 * Returns false for a number that no scheme produces.
 */
bool xen_vbd_decode(uint32_t number, XenVbd *vbd);

/* The name of @vbd in its own scheme ("xvda1", "hdc", "d3p0"); g_free it. */
char *xen_vbd_name(const XenVbd *vbd);

/* Disk names for a disk index: 0 -> "a", 25 -> "z", 26 -> "aa", ... */
char *xen_vbd_disk_letters(unsigned int disk);

/*
 * libxl's "params" node: "[format:]target", e.g. "aio:/srv/disk.img" or
 * "qcow2:/srv/vm.qcow2".  @driver is the QEMU block driver for the format
 * (aio and raw give "raw", vhd gives "vpc"); a missing prefix means raw.
 * Returns false for an empty target or a format we do not know.
 */
bool xen_vbd_parse_params(const char *params, char **driver, char **target);

/*
 * A xenstore unsigned number: decimal digits only (no sign, no blanks),
 * at most @max.  Returns false otherwise.
 */
bool xen_vbd_parse_uint(const char *value, uint32_t max, uint32_t *out);

/* A xenstore boolean ("0" or "1"); anything else gives @dflt. */
bool xen_vbd_parse_bool(const char *value, bool dflt);

#endif /* HW_BLOCK_XEN_VBD_H */
