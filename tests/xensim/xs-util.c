/*
 * xenblk-front: small helpers over libxenstore
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xs-util.h"

const char *xsu_state_name(int state)
{
    static const char *const names[] = {
        "Unknown", "Initialising", "InitWait", "Initialised", "Connected",
        "Closing", "Closed", "Reconfiguring", "Reconfigured",
    };

    if (state < 0 || state >= (int)G_N_ELEMENTS(names)) {
        return "invalid";
    }
    return names[state];
}

int64_t xsu_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

char *xsu_read(struct xs_handle *xsh, const char *dir, const char *node)
{
    g_autofree char *path = node ? g_strdup_printf("%s/%s", dir, node)
                                 : g_strdup(dir);
    unsigned int len;
    char *val = xs_read(xsh, XBT_NULL, path, &len);
    char *copy;

    if (!val) {
        return NULL;
    }
    copy = g_strndup(val, len);
    free(val);
    return copy;
}

static bool parse_u64(const char *s, uint64_t *val)
{
    char *end;

    if (!s || !*s || *s == '-' || *s == ' ') {
        return false;
    }
    errno = 0;
    *val = strtoull(s, &end, 10);
    return !errno && *end == '\0';
}

bool xsu_read_u64(struct xs_handle *xsh, const char *dir, const char *node,
                  uint64_t *val)
{
    g_autofree char *s = xsu_read(xsh, dir, node);

    return parse_u64(s, val);
}

uint64_t xsu_read_u64_default(struct xs_handle *xsh, const char *dir,
                              const char *node, uint64_t dflt)
{
    uint64_t v;

    return xsu_read_u64(xsh, dir, node, &v) ? v : dflt;
}

int xsu_read_state(struct xs_handle *xsh, const char *dir)
{
    g_autofree char *s = xsu_read(xsh, dir, "state");
    uint64_t v;

    if (!s) {
        return XB_STATE_UNKNOWN;
    }
    return parse_u64(s, &v) && v < 64 ? (int)v : -1;
}

bool xsu_write(struct xs_handle *xsh, xs_transaction_t t, const char *dir,
               const char *node, const char *fmt, ...)
{
    g_autofree char *path = node ? g_strdup_printf("%s/%s", dir, node)
                                 : g_strdup(dir);
    g_autofree char *val = NULL;
    va_list ap;

    va_start(ap, fmt);
    val = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return xs_write(xsh, t, path, val, strlen(val));
}

bool xsu_write_state(struct xs_handle *xsh, const char *dir, int state)
{
    return xsu_write(xsh, XBT_NULL, dir, "state", "%d", state);
}

/* Drain pending watch events; true if one concerned @token. */
static bool drain_watch_events(struct xs_handle *xsh, const char *token)
{
    bool seen = false;
    char **ev;

    while ((ev = xs_check_watch(xsh)) != NULL) {
        if (!strcmp(ev[XS_WATCH_TOKEN], token)) {
            seen = true;
        }
        free(ev);
    }
    return seen;
}

bool xsu_wait(struct xs_handle *xsh, const char *dir, XsuPredicate *pred,
              void *opaque, int64_t deadline_ns)
{
    static unsigned int counter;
    g_autofree char *token = g_strdup_printf("xsu-wait-%u-%p", counter++,
                                             (void *)dir);
    bool ok = false;

    if (!xs_watch(xsh, dir, token)) {
        /* No watch: the node may not exist and we may not see it.  Check
         * once; a caller with a deadline gets a clear false. */
        return pred(xsh, dir, opaque);
    }
    for (;;) {
        struct pollfd pfd = { .fd = xs_fileno(xsh), .events = POLLIN };
        int64_t left = deadline_ns - xsu_now_ns();

        /* The watch fires once when set: check after it, and after each. */
        if (pred(xsh, dir, opaque)) {
            ok = true;
            break;
        }
        if (left <= 0) {
            break;
        }
        if (poll(&pfd, 1, (int)(left / 1000000) + 1) < 0 && errno != EINTR) {
            break;
        }
        drain_watch_events(xsh, token);
    }
    xs_unwatch(xsh, dir, token);
    drain_watch_events(xsh, token);
    return ok;
}

typedef struct StateWait {
    unsigned int mask;
    int state;
} StateWait;

static bool state_in_mask(struct xs_handle *xsh, const char *dir,
                          void *opaque)
{
    StateWait *w = opaque;

    w->state = xsu_read_state(xsh, dir);
    return w->state >= 0 && w->state < 32 &&
           (w->mask & XSU_STATE_BIT(w->state));
}

bool xsu_wait_state(struct xs_handle *xsh, const char *dir,
                    unsigned int mask, int64_t deadline_ns, int *state)
{
    StateWait w = { .mask = mask, .state = -1 };
    bool ok = xsu_wait(xsh, dir, state_in_mask, &w, deadline_ns);

    if (state) {
        *state = w.state;
    }
    return ok;
}

char *xsu_domain_path(struct xs_handle *xsh, unsigned int domid)
{
    char *p = xs_get_domain_path(xsh, domid);
    char *copy;

    if (!p) {
        return g_strdup_printf("/local/domain/%u", domid);
    }
    copy = g_strdup(p);
    free(p);
    return copy;
}

bool xsu_set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}
