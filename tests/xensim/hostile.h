/*
 * xenblk-front: hostile cases -- a frontend that misbehaves on purpose
 *
 * Each case runs on a connected device and appends its findings to a JSON
 * object: the response status of every request it made (or "none" when
 * no response came before the deadline), and whether the backend left
 * Connected.  The bad-xenstore cases at connect time are not here: they
 * are --xs-set/--xs-del on an ordinary connect (see loadgen.c).
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XENBLK_HOSTILE_H
#define XENBLK_HOSTILE_H

#include <glib.h>

#include "blkfront.h"

typedef struct HsOptions {
    const char *name;
    GPtrArray *reqs;            /* --req specs, for "req" */
    unsigned int count;         /* repetitions (storm size, flips...) */
    double deadline;
    unsigned int ring;
} HsOptions;

/* The case names and one line on each, for --help. */
extern const char hs_help[];

/*
 * Run a case; returns false if the case itself could not be carried out
 * (not whether the backend did well: the JSON says that).
 */
bool hs_run(BfDevice *d, const HsOptions *o, GString *json);

#endif /* XENBLK_HOSTILE_H */
