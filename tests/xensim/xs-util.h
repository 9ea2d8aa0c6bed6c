/*
 * xenblk-front: small helpers over libxenstore
 *
 * Reading numbers, writing formatted values, and waiting for a node to
 * reach a value with a deadline (a watch and poll(), never a sleep).
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XENBLK_XS_UTIL_H
#define XENBLK_XS_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <xenstore.h>

/* XenbusState, as xen/io/xenbus.h */
enum {
    XB_STATE_UNKNOWN = 0,
    XB_STATE_INITIALISING = 1,
    XB_STATE_INITWAIT = 2,
    XB_STATE_INITIALISED = 3,
    XB_STATE_CONNECTED = 4,
    XB_STATE_CLOSING = 5,
    XB_STATE_CLOSED = 6,
    XB_STATE_RECONFIGURING = 7,
    XB_STATE_RECONFIGURED = 8,
};

const char *xsu_state_name(int state);

/* Monotonic time in nanoseconds. */
int64_t xsu_now_ns(void);

/* The node's string (g_free it), or NULL. */
char *xsu_read(struct xs_handle *xsh, const char *dir, const char *node);

/* Parse an unsigned decimal node; false if absent or not a number. */
bool xsu_read_u64(struct xs_handle *xsh, const char *dir, const char *node,
                  uint64_t *val);
uint64_t xsu_read_u64_default(struct xs_handle *xsh, const char *dir,
                              const char *node, uint64_t dflt);

/* A state node; XB_STATE_UNKNOWN (0) when absent, -1 when not a number. */
int xsu_read_state(struct xs_handle *xsh, const char *dir);

bool xsu_write(struct xs_handle *xsh, xs_transaction_t t, const char *dir,
               const char *node, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

bool xsu_write_state(struct xs_handle *xsh, const char *dir, int state);

/*
 * Wait until @pred(xsh, dir, opaque) holds, re-checked whenever anything
 * under @dir changes, or until @deadline_ns (xsu_now_ns() clock) passes.
 * Returns whether @pred held.
 */
typedef bool XsuPredicate(struct xs_handle *xsh, const char *dir,
                          void *opaque);
bool xsu_wait(struct xs_handle *xsh, const char *dir, XsuPredicate *pred,
              void *opaque, int64_t deadline_ns);

/* Wait for the state node under @dir to be one of the states in @mask. */
bool xsu_wait_state(struct xs_handle *xsh, const char *dir,
                    unsigned int mask, int64_t deadline_ns, int *state);

#define XSU_STATE_BIT(s) (1u << (s))

/*
 * Make @fd non-blocking.  For the event channel fd: /dev/xen/evtchn blocks
 * in read, so a loop that calls xenevtchn_pending until it fails needs it.
 */
bool xsu_set_nonblocking(int fd);

/* Absolute path of a node relative to our own domain's path. */
char *xsu_domain_path(struct xs_handle *xsh, unsigned int domid);

#endif /* XENBLK_XS_UTIL_H */
