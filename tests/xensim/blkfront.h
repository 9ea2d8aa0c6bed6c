/*
 * xenblk-front: a blkif frontend in user space
 *
 * The state machine and rings of Linux's xen-blkfront, on Xen's own
 * user-space libraries: libxenstore for negotiation, libxenevtchn
 * (bind_unbound_port) for the event channels, and gntshr for the ring and
 * data pages a guest grants to its backend.
 *
 * Threading: one thread drives a device (submit, bf_poll); the hostile
 * double-fetch case adds a thread that only scribbles on the ring.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XENBLK_BLKFRONT_H
#define XENBLK_BLKFRONT_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenstore.h>

#include "blkif-abi.h"

#define BF_MAX_QUEUES   16

typedef struct BfOptions {
    unsigned int domid;         /* ours; 0 = read it from xenstore */
    uint32_t devnum;
    XbAbi abi;
    bool protocol_node;         /* write "protocol" (false for native) */
    unsigned int ring_pages;    /* wanted; used up to what is offered */
    unsigned int queues;
    unsigned int indirect;      /* max indirect segments wanted, 0 = off */
    bool indirect_always;       /* indirect even for <= 11 segments */
    bool persistent;
    bool regrant;               /* share fresh pages for every request */
    unsigned int chunk_pages;   /* data pool: pages per I/O buffer */
    unsigned int nr_chunks;     /* ... and buffers (the iodepth) */
    double deadline;            /* seconds per state change awaited */
    GPtrArray *xs_set;          /* hostile: "node=value" written at connect */
    GPtrArray *xs_del;          /* hostile: nodes removed at connect */
    bool skip_state_wait;       /* hostile: do not wait for InitWait */
    unsigned int prefill;       /* hostile: reads published before connect */
    unsigned int poll_us;       /* with I/O out, spin this long for
                                   responses before sleeping (0: never) */
} BfOptions;

typedef struct BfDevice BfDevice;
typedef struct BfIo BfIo;

/* Called once when every ring request of an I/O has its response. */
typedef void BfDoneFn(BfDevice *d, BfIo *io);

/* An I/O: the caller owns the storage, bf fills the bookkeeping. */
struct BfIo {
    BfDoneFn *done;
    void *opaque;
    int64_t t_submit;           /* ns */
    int64_t t_done;
    unsigned int parts;         /* ring requests still out */
    int16_t status;             /* worst of the parts: first non-okay */
    uint8_t operation;          /* of the last response seen */
    unsigned int ring;          /* where it went */
};

/* Data pages granted to the backend. */
typedef struct BfBuf {
    uint8_t *data;
    uint32_t *refs;
    unsigned int pages;
    int chunk;                  /* pool chunk, or -1 when shared apart */
} BfBuf;

/* One request slot of a ring (the shadow Linux keeps per id). */
typedef struct BfSlot {
    bool busy;
    XbRequest req;
    BfIo *io;
    uint8_t *indirect;          /* this slot's indirect pages */
    uint32_t *indirect_refs;
} BfSlot;

typedef struct BfRing {
    unsigned int index;
    BfDevice *dev;
    XbSring *sring;
    uint32_t refs[XB_MAX_RING_PAGES];
    unsigned int size;
    uint32_t req_prod_pvt;
    uint32_t rsp_cons;
    evtchn_port_t port;
    BfSlot *slots;
    unsigned int *free_slots;
    unsigned int nr_free;
    uint8_t *indirect_area;
    uint32_t *indirect_refs;
    unsigned int indirect_pages_per_slot;
    bool unpushed;              /* requests written, not yet published */
    /* counters */
    uint64_t notifies;
    uint64_t requests;
    uint64_t responses;
    uint64_t bogus_responses;
} BfRing;

typedef struct BfBackendInfo {
    uint64_t sectors;           /* 512-byte units */
    uint32_t sector_size;
    uint32_t physical_sector_size;
    uint32_t info;
    bool readonly;
    bool cdrom;
    bool flush;
    bool barrier;
    bool discard;
    bool discard_secure;
    uint32_t discard_granularity;
    uint32_t discard_alignment;
    int max_ring_page_order;    /* -1: node absent */
    unsigned int max_queues;    /* 0: absent */
    bool persistent;
    unsigned int max_indirect;  /* 0: absent */
} BfBackendInfo;

struct BfDevice {
    BfOptions opt;
    struct xs_handle *xsh;
    xenevtchn_handle *xce;
    xengntshr_handle *xgs;
    char *fe_path;
    char *be_path;
    unsigned int be_domid;
    BfBackendInfo be;
    int backend_state;
    bool backend_went_away;     /* Closing/Closed while we were connected */
    bool connected;
    /* negotiated */
    const XbLayout *layout;
    unsigned int ring_order;
    unsigned int ring_pages;
    unsigned int nr_rings;
    unsigned int ring_size;     /* slots per ring */
    unsigned int max_segs;      /* per ring request */
    bool use_indirect;
    bool use_persistent;
    bool regrant;               /* --regrant, unless persistent */
    BfRing rings[BF_MAX_QUEUES];
    BfRing totals[BF_MAX_QUEUES];   /* counters of closed connections */
    unsigned int next_ring;
    /* data pool: chunks of chunk_pages pages */
    uint8_t *pool;
    uint32_t *pool_refs;
    unsigned int pool_pages;
    unsigned int chunk_pages;
    unsigned int nr_chunks;
    int *free_chunks;
    unsigned int nr_free_chunks;
    /* events for the caller */
    uint64_t resize_events;
    uint64_t last_sectors;
    uint64_t inflight;          /* ring requests out, all rings */
    GString *log;               /* what happened, as JSON array items */
    int64_t t0;                 /* when bf_open ran, for the log */
};

/*
 * Find the device, negotiate and connect (Initialised, then Connected once
 * the backend is).  On failure, *errmsg says why; the device is left
 * half-way for the caller to report (bf_close tidies it).
 */
bool bf_open(BfDevice *d, const BfOptions *opt, char **errmsg);
bool bf_connect(BfDevice *d, char **errmsg);

/* Closing -> backend Closing/Closed -> Closed; unshare everything. */
bool bf_disconnect(BfDevice *d, char **errmsg);
void bf_close(BfDevice *d);

/* Data buffers of @pages pages (pool chunks, or fresh grants with
 * --regrant: @for_write grants them read-only as Linux does). */
bool bf_buf_get(BfDevice *d, unsigned int pages, bool for_write, BfBuf *b);
void bf_buf_put(BfDevice *d, BfBuf *b);

/* How many ring requests an I/O of @nbytes at page offset @off needs. */
unsigned int bf_parts_needed(BfDevice *d, uint32_t off, uint32_t nbytes);

/*
 * Queue a read or write of @nbytes (a multiple of 512) at 512-byte sector
 * @sector, data at byte @off of @buf.  Split into ring requests of at most
 * max_segs pages.  Returns false (nothing queued) if the ring has no room:
 * poll and retry.  @ring < 0 picks the next ring round-robin.
 */
bool bf_submit_rw(BfDevice *d, int ring, bool write, uint64_t sector,
                  uint32_t nbytes, BfBuf *buf, uint32_t off, BfIo *io);
bool bf_submit_flush(BfDevice *d, int ring, BfIo *io);
bool bf_submit_discard(BfDevice *d, int ring, uint64_t sector,
                       uint64_t nr_sectors, bool secure, BfIo *io);

/*
 * Queue a request exactly as given (hostile mode): only the id is ours.
 * Returns the slot, or NULL when the ring is full.
 */
BfSlot *bf_submit_raw(BfDevice *d, unsigned int ring, const XbRequest *req,
                      BfIo *io);

/* Publish queued requests on every ring, notifying where asked. */
void bf_kick(BfDevice *d);

/*
 * Wait up to @timeout_ms for responses or a backend change and handle
 * them.  Returns the number of I/Os completed, or -1 on a fatal error.
 */
int bf_poll(BfDevice *d, int timeout_ms);

/* Re-read the backend's size; true if it changed. */
bool bf_check_resize(BfDevice *d);

/* Record an event for the JSON report. */
void bf_log(BfDevice *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif /* XENBLK_BLKFRONT_H */
