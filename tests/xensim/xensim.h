/*
 * xensim: Xen in user space -- what xensimd and libxensim share
 *
 * xensimd owns the domains: each has its memory (a memfd), a grant table
 * in Xen's v1 layout (a memfd) and an event page (a memfd: port states
 * written only by xensimd, pending bits set by notifiers).  Processes that
 * act for a domain (QEMU as dom0, xenblk-front as a guest) load libxensim,
 * which talks to xensimd over a SOCK_SEQPACKET control socket for the slow
 * operations (binding ports, allocating grants) and does the fast ones the
 * way the kernel driver they replace would cost: one syscall per grant-copy
 * batch (process_vm_readv/writev into xensimd's mapping of the guest's
 * memory), mmap per grant map, an eventfd write per notification.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XENSIM_H
#define XENSIM_H

#include <stdint.h>

#define XENSIM_PAGE_SIZE        4096u
#define XENSIM_MAX_DOMAINS      64
#define XENSIM_MAX_PORTS        1024    /* event channel ports per domain */
#define XENSIM_GNTTAB_FRAMES    64      /* Xen's default max_grant_frames */
#define XENSIM_NR_GRANTS \
    (XENSIM_GNTTAB_FRAMES * XENSIM_PAGE_SIZE / sizeof(XsimGrantEntry))
#define XENSIM_DEFAULT_MEM_MB   256

/* Environment of a process that acts for a domain. */
#define XENSIM_ENV_DIR          "XENSIM_DIR"    /* xensimd's socket folder */
#define XENSIM_ENV_DOMID        "XENSIM_DOMID"  /* this process's domain */
#define XENSIM_CONTROL_SOCKET   "control.sock"

/* A grant entry, Xen's grant_entry_v1 layout. */
typedef struct XsimGrantEntry {
    uint16_t flags;             /* GTF_* */
    uint16_t domid;             /* who may use it */
    uint32_t frame;             /* page of the granting domain's memory */
} XsimGrantEntry;

/* Event channel port states, as Xen's ECS_* */
enum {
    XSIM_PORT_FREE = 0,
    XSIM_PORT_UNBOUND,          /* allocated for remote_dom, not yet bound */
    XSIM_PORT_INTERDOMAIN,      /* bound to remote_dom:remote_port */
};

typedef struct XsimPort {
    uint32_t state;
    uint32_t remote_dom;
    uint32_t remote_port;
    uint32_t gen;               /* bumped on every binding change */
} XsimPort;

/*
 * Counters of what other domains did with this domain's grants and ports,
 * kept (atomically) by libxensim in the process that did it: for tests
 * that count operations, never for timing.
 */
typedef struct XsimStats {
    uint64_t copy_batches;      /* grant-copy calls: one syscall each */
    uint64_t copy_segments;
    uint64_t copy_errors;       /* segments refused */
    uint64_t maps;              /* pages mapped */
    uint64_t unmaps;            /* pages unmapped */
    uint64_t notify_sent;       /* notifications to this domain's ports */
    uint64_t notify_signalled;  /* ... that needed an eventfd write */
} XsimStats;

/* The event page of a domain. */
typedef struct XsimEventPage {
    XsimPort port[XENSIM_MAX_PORTS];
    uint64_t pending[XENSIM_MAX_PORTS / 64];
    XsimStats stats;
} XsimEventPage;

#define XENSIM_EVENT_PAGE_SIZE \
    ((sizeof(XsimEventPage) + XENSIM_PAGE_SIZE - 1) & ~(XENSIM_PAGE_SIZE - 1))

/* ---- Control protocol (SOCK_SEQPACKET, fixed-size messages) ---- */

enum {
    XSIM_OP_HELLO = 1,          /* arg0 = my domid */
    XSIM_OP_GET_DOMAIN,         /* arg0 = domid; reply fds: mem, gnttab,
                                   events; val0 = pages, val1 = daemon pid,
                                   val2/3 = daemon's address of mem (lo/hi) */
    XSIM_OP_REGISTER_HANDLE,    /* fd: eventfd; reply val0 = handle id */
    XSIM_OP_UNREGISTER_HANDLE,  /* arg0 = handle id */
    XSIM_OP_ALLOC_UNBOUND,      /* arg0 = handle, arg1 = remote domid;
                                   reply val0 = local port */
    XSIM_OP_BIND_INTERDOMAIN,   /* arg0 = handle, arg1 = remote domid,
                                   arg2 = remote port; val0 = local port */
    XSIM_OP_UNBIND,             /* arg0 = local port */
    XSIM_OP_PEER_EVENTFD,       /* arg0 = domid, arg1 = port; reply fd,
                                   val0 = the port's gen */
    XSIM_OP_ALLOC_PAGES,        /* arg0 = count; val0 = first frame
                                   (contiguous) */
    XSIM_OP_FREE_PAGES,         /* arg0 = first frame, arg1 = count */
    XSIM_OP_ALLOC_GRANTS,       /* arg0 = count; reply val0..: refs in the
                                   reply's refs[] */
    XSIM_OP_FREE_GRANTS,        /* refs[] = refs, arg0 = count */
    XSIM_OP_CREATE_DOMAIN,      /* arg0 = domid, arg1 = memory in MiB */
    XSIM_OP_DESTROY_DOMAIN,     /* arg0 = domid */
};

#define XSIM_MSG_REFS 256

typedef struct XsimRequest {
    uint32_t op;
    uint32_t arg[4];
    uint32_t refs[XSIM_MSG_REFS];
} XsimRequest;

typedef struct XsimReply {
    int32_t err;                /* 0 or a positive errno */
    uint32_t val[8];
    uint32_t refs[XSIM_MSG_REFS];
} XsimReply;

#endif /* XENSIM_H */
