/*
 * xenblk-front: the toolstack part -- attach and detach a qdisk disk the
 * way libxl does for an xl disk line
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XENBLK_TOOLSTACK_H
#define XENBLK_TOOLSTACK_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Parse a vdev as libxl does (xvdX[N], hdX[N], sdX[N], dN[pM] or a plain
 * number) into the device number used as the xenstore directory name.
 * Returns false for a name libxl would refuse.
 */
bool ts_parse_vdev(const char *vdev, uint32_t *devnum);

int ts_attach_main(int argc, char **argv);
int ts_detach_main(int argc, char **argv);

#endif /* XENBLK_TOOLSTACK_H */
