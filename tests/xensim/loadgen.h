/*
 * xenblk-front: the "run" subcommand -- connect as the guest, then drive
 * a fio-like load, single checks, or a hostile case
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XENBLK_LOADGEN_H
#define XENBLK_LOADGEN_H

#include <stdbool.h>
#include <stdint.h>

#include "blkfront.h"

/* "4k", "1M", "512", "2g" ... in bytes; false on anything else. */
bool lg_parse_size(const char *s, uint64_t *bytes);

/* Name of a BLKIF_RSP_* status: okay, error, eopnotsupp, or the number. */
const char *lg_status_name(int16_t status, char buf[16]);
bool lg_parse_status(const char *s, int16_t *status);

/* Wait (polling the device) for @io to complete, with the deadline. */
bool lg_wait_io(BfDevice *d, BfIo *io, double deadline_s);

int lg_run_main(int argc, char **argv);

#endif /* XENBLK_LOADGEN_H */
