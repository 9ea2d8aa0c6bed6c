/*
 * xenblk-front: the ideal responder -- a blkif backend that does the
 * grant copies a real backend must do, and nothing else
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XENBLK_IDEAL_H
#define XENBLK_IDEAL_H

int ideal_main(int argc, char **argv);

#endif /* XENBLK_IDEAL_H */
