/*
 * Test-only stand-in for QEMU's qemu/osdep.h
 *
 * The protocol layer (hw/block/xen_blkif.c) is pure C that needs only the C
 * library, GLib and a few of QEMU's helper macros.  This header provides
 * those, so the unit tests and fuzzers build it without configuring QEMU.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XBLK_TEST_OSDEP_H
#define XBLK_TEST_OSDEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define QEMU_PACKED __attribute__((packed))

#endif
