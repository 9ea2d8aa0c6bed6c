/*
 * xensim: an embeddable xenstored
 *
 * Serves the xenstore wire protocol (xen/io/xs_wire.h) on unix sockets, so
 * that the real libxenstore (XENSTORED_PATH=<socket>) talks to it exactly as
 * it talks to cxenstored or oxenstored:
 *
 *   <dir>/xenstored.sock          connections act as dom0 (privileged)
 *   <dir>/xenstored-<N>.sock      connections act as unprivileged domain N
 *
 * The daemon runs in its own thread (one epoll loop). The xsd_* calls may be
 * made from any other thread: they take the daemon's lock, so each call is
 * atomic with respect to the requests the daemon serves. Never call them
 * while holding a lock the daemon thread could need: it needs none of yours.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XENSIM_XENSTORED_H
#define XENSIM_XENSTORED_H

#include <stdint.h>

/*
 * Limits. Unless said otherwise they bind unprivileged domains only; dom0
 * is trusted (it is the toolstack and QEMU) but still bounded by the wire
 * protocol's payload size. What happens when one is hit:
 */
#define XSD_MAX_WATCHES_PER_CONN      128   /* all: XS_WATCH gets E2BIG */
#define XSD_MAX_TRANSACTIONS_PER_CONN 10    /* all: ..._START gets ENOSPC */
#define XSD_MAX_TRANSACTION_NODES     1024  /* nodes a transaction touches:
                                             * ENOSPC, then the transaction
                                             * only accepts TRANSACTION_END
                                             * (commit fails with ENOSPC) */
#define XSD_MAX_NODES_PER_DOMAIN      1000  /* nodes a domain owns: ENOSPC */
#define XSD_MAX_VALUE_LEN             2048  /* bytes in one value: ENOSPC */
#define XSD_MAX_PERMS                 16    /* entries in a perm list: ENOSPC */
#define XSD_MAX_CONNS_PER_DOMAIN      16    /* connections beyond: closed */
#define XSD_MAX_CONNS_DOM0            256   /* the same for dom0's socket */

/*
 * Output bounds, per connection, for everybody. A client that does not read
 * its socket:
 *  - stops being read once XSD_MAX_REPLY_BACKLOG bytes of replies wait for
 *    it (back-pressure: it cannot make us queue more replies);
 *  - has a watch event that repeats one already waiting for it (same path
 *    and token) merged into that one, as xenstored does: the client reads
 *    the node after the event anyway (not done for @ events);
 *  - loses watch events once XSD_MAX_PENDING_EVENTS events or
 *    XSD_MAX_PENDING_EVENT_BYTES bytes of events wait for it (dom0: the
 *    _DOM0 bounds, larger: QEMU must not lose events to a guest's flood).
 *    The newest events are the ones dropped (what is queued stays in
 *    order), each counted in XsdStats.watch_events_dropped.
 * So one connection never holds more than XSD_MAX_OUT_BYTES_DOMU (DOM0).
 */
#define XSD_MAX_REPLY_BACKLOG         (64 * 1024)
#define XSD_MAX_PENDING_EVENTS        2048
#define XSD_MAX_PENDING_EVENT_BYTES   (512 * 1024)
#define XSD_MAX_PENDING_EVENTS_DOM0   65536
#define XSD_MAX_PENDING_EVENT_BYTES_DOM0 (16 * 1024 * 1024)
#define XSD_MAX_MSG_BYTES             (16 + 4096)   /* header + payload */
#define XSD_MAX_OUT_BYTES_DOMU \
    (XSD_MAX_REPLY_BACKLOG + XSD_MAX_MSG_BYTES + XSD_MAX_PENDING_EVENT_BYTES)
#define XSD_MAX_OUT_BYTES_DOM0 \
    (XSD_MAX_REPLY_BACKLOG + XSD_MAX_MSG_BYTES + \
     XSD_MAX_PENDING_EVENT_BYTES_DOM0)

#define XSD_STATS_TYPES 32      /* >= XS_TYPE_COUNT of xs_wire.h */

typedef struct XsdServer XsdServer;

typedef struct XsdStats {
    /* Totals since xsd_start() */
    uint64_t requests;              /* requests handled */
    uint64_t requests_by_type[XSD_STATS_TYPES];     /* by XS_* type */
    uint64_t errors;                /* XS_ERROR replies sent */
    uint64_t watch_events_queued;
    uint64_t watch_events_sent;     /* written whole to their socket */
    uint64_t watch_events_merged;   /* same as one already waiting */
    uint64_t watch_events_dropped;  /* queue full (or event > payload max) */
    uint64_t transactions_committed;
    uint64_t transactions_aborted;
    uint64_t transaction_conflicts; /* commits refused with EAGAIN */
    uint64_t connections_accepted;
    uint64_t connections_rejected;  /* over the connection limits */
    uint64_t connections_closed;
    uint64_t protocol_violations;   /* connections closed for bad framing */
    uint64_t input_stalls;          /* times a client hit the reply backlog */

    /* Now */
    uint64_t connections;
    uint64_t domains;               /* dom0 included */
    uint64_t nodes;                 /* @introduceDomain, @releaseDomain too */
    uint64_t watches;
    uint64_t transactions;
    uint64_t out_bytes;             /* queued for all connections */

    /* Peaks */
    uint64_t out_bytes_peak;        /* most bytes one connection had queued */
    uint64_t pending_events_peak;   /* most events one connection had queued */
} XsdStats;

/*
 * Start serving: creates <dir> if needed and <dir>/xenstored.sock for
 * domain 0. On failure returns NULL and, if err is not NULL, a message to
 * free with g_free().
 */
XsdServer *xsd_start(const char *dir, char **err);

/*
 * A domain appears: creates <dir>/xenstored-<domid>.sock (connections on it
 * act as that unprivileged domain), /local/domain/<domid> owned by domid
 * (permissions "n<domid>"), and fires @introduceDomain.
 * Returns 0, -EEXIST if the domain is known, -EINVAL for domid 0 or a
 * reserved domid (>= 0x7FF0), or the -errno of creating the socket.
 */
int xsd_add_domain(XsdServer *s, unsigned int domid);

/*
 * Domain gone: closes its connections and socket, removes
 * /local/domain/<domid> (firing watches as XS_RM would), gives nodes it
 * still owned elsewhere to dom0 and drops it from permission lists (so a
 * later domain reusing the domid inherits nothing), fires @releaseDomain.
 * Returns 0, -ENOENT if unknown, -EINVAL for domid 0.
 */
int xsd_remove_domain(XsdServer *s, unsigned int domid);

/* Path of the socket for domid (0: the privileged one); free with g_free */
char *xsd_socket_path(XsdServer *s, unsigned int domid);

/* A consistent snapshot of the counters */
void xsd_get_stats(XsdServer *s, XsdStats *stats);

/* Stop the thread, close every connection and socket, free everything */
void xsd_stop(XsdServer *s);

#endif
