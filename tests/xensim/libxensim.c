/*
 * libxensim: Xen's user-space libraries, served by xensimd
 *
 * Preloaded (LD_PRELOAD) into an unmodified program built against Xen's
 * libraries: QEMU as a dom0 backend, xenblk-front as a guest.  Our
 * definitions carry no symbol version, so they take the place of the
 * versioned ones the program was linked with.  Defined here:
 *
 *   libxenevtchn     open, close, fd, notify, bind_unbound_port,
 *                    bind_interdomain, unbind, pending, unmask
 *   libxengnttab     open, close, set_max_grants, grant_copy, map (all
 *                    forms), unmap; and gntshr (a guest sharing its pages)
 *   libxenctrl, libxenforeignmemory, libxendevicemodel, libxentoolcore:
 *                    what QEMU's Xen accelerator opens; the rest fails with
 *                    ENOSYS (xensim has no HVM guests)
 *
 * libxenstore is not replaced: the real one reaches xensimd's xenstored
 * through XENSTORED_PATH.
 *
 * Costs are those of the kernel drivers these calls replace: a grant copy
 * is one process_vm_readv/writev per batch into xensimd's mapping of the
 * guest's memory, a grant map is an mmap of the guest's memory per page,
 * a notification is an eventfd write.  Every grant use is checked against
 * the granting domain's table as Xen checks it.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xendevicemodel.h>
#include <xenevtchn.h>
#include <xenforeignmemory.h>
#include <xengnttab.h>
#include <xentoolcore.h>

#include "xensim.h"

#define EXPORT __attribute__((visibility("default")))

/* ---- Connection to xensimd ---- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int control_fd = -1;
static unsigned int my_domid;

/* A domain as this process sees it. */
typedef struct SimDomain {
    bool known;
    unsigned int pages;
    int mem_fd;
    XsimGrantEntry *gnttab;
    XsimEventPage *events;
    pid_t daemon_pid;
    uint64_t daemon_mem;        /* xensimd's address of the memory */
    uint8_t *own_mem;           /* our mapping, for our own domain only */
} SimDomain;

static SimDomain sim_domains[XENSIM_MAX_DOMAINS];

/* Eventfds of other domains' ports, by (domain, port). */
typedef struct PeerFd {
    int fd;                     /* -1: unknown */
    uint32_t gen;
} PeerFd;

static PeerFd *peer_fds[XENSIM_MAX_DOMAINS];

static int rpc(const XsimRequest *req, XsimReply *rep, int send_fd,
               int *recv_fds, unsigned int max_fds);

static int connect_daemon(void)
{
    const char *dir = getenv(XENSIM_ENV_DIR);
    const char *dom = getenv(XENSIM_ENV_DOMID);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    XsimRequest req = { .op = XSIM_OP_HELLO };
    XsimReply rep;
    int fd;

    if (!dir) {
        errno = ENOENT;
        return -1;
    }
    my_domid = dom ? strtoul(dom, NULL, 10) : 0;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%s", dir,
             XENSIM_CONTROL_SOCKET);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        close(fd);
        return -1;
    }
    control_fd = fd;
    req.arg[0] = my_domid;
    if (rpc(&req, &rep, -1, NULL, 0) < 0) {
        close(fd);
        control_fd = -1;
        return -1;
    }
    return 0;
}

/*
 * One request, one reply; an fd may go with the request and up to
 * @max_fds come back.  Called with @lock held.  Returns -1 with errno set
 * on failure.
 */
static int rpc(const XsimRequest *req, XsimReply *rep, int send_fd,
               int *recv_fds, unsigned int max_fds)
{
    char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    struct iovec iov = { .iov_base = (void *)req, .iov_len = sizeof(*req) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    struct cmsghdr *cmsg;
    ssize_t n;

    if (control_fd < 0 && req->op != XSIM_OP_HELLO && connect_daemon() < 0) {
        return -1;
    }
    if (send_fd >= 0) {
        memset(cbuf, 0, sizeof(cbuf));
        msg.msg_control = cbuf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int));
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &send_fd, sizeof(int));
    }
    if (sendmsg(control_fd, &msg, MSG_NOSIGNAL) < 0) {
        return -1;
    }

    iov = (struct iovec) { .iov_base = rep, .iov_len = sizeof(*rep) };
    msg = (struct msghdr) { .msg_iov = &iov, .msg_iovlen = 1,
                            .msg_control = cbuf,
                            .msg_controllen = sizeof(cbuf) };
    n = recvmsg(control_fd, &msg, MSG_CMSG_CLOEXEC);
    if (n != sizeof(*rep)) {
        errno = EIO;
        return -1;
    }
    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
            unsigned int nfds = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int fds[4];

            memcpy(fds, CMSG_DATA(cmsg), nfds * sizeof(int));
            for (unsigned int i = 0; i < nfds; i++) {
                if (i < max_fds) {
                    recv_fds[i] = fds[i];
                } else {
                    close(fds[i]);
                }
            }
        }
    }
    if (rep->err) {
        errno = rep->err;
        return -1;
    }
    return 0;
}

static int rpc_locked(const XsimRequest *req, XsimReply *rep, int send_fd,
                      int *recv_fds, unsigned int max_fds)
{
    int ret;

    pthread_mutex_lock(&lock);
    ret = rpc(req, rep, send_fd, recv_fds, max_fds);
    pthread_mutex_unlock(&lock);
    return ret;
}

/* Map what we need of a domain, once.  Called with @lock held. */
static SimDomain *get_domain_locked(unsigned int domid)
{
    XsimRequest req = { .op = XSIM_OP_GET_DOMAIN, .arg = { domid } };
    XsimReply rep;
    SimDomain *d;
    int fds[3] = { -1, -1, -1 };

    if (domid >= XENSIM_MAX_DOMAINS) {
        errno = ESRCH;
        return NULL;
    }
    d = &sim_domains[domid];
    if (d->known) {
        return d;
    }
    if (rpc(&req, &rep, -1, fds, 3) < 0) {
        return NULL;
    }
    d->pages = rep.val[0];
    d->daemon_pid = rep.val[1];
    d->daemon_mem = rep.val[2] | ((uint64_t)rep.val[3] << 32);
    d->mem_fd = fds[0];
    d->gnttab = mmap(NULL, XENSIM_GNTTAB_FRAMES * XENSIM_PAGE_SIZE,
                     PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
    d->events = mmap(NULL, XENSIM_EVENT_PAGE_SIZE, PROT_READ | PROT_WRITE,
                     MAP_SHARED, fds[2], 0);
    close(fds[1]);
    close(fds[2]);
    if (d->gnttab == MAP_FAILED || d->events == MAP_FAILED) {
        errno = ENOMEM;
        return NULL;
    }
    if (domid == my_domid) {
        /* Our own memory: a guest shares pages out of it. */
        d->own_mem = mmap(NULL, (size_t)d->pages * XENSIM_PAGE_SIZE,
                          PROT_READ | PROT_WRITE, MAP_SHARED, d->mem_fd, 0);
        if (d->own_mem == MAP_FAILED) {
            errno = ENOMEM;
            return NULL;
        }
    }
    peer_fds[domid] = calloc(XENSIM_MAX_PORTS, sizeof(PeerFd));
    for (unsigned int p = 0; p < XENSIM_MAX_PORTS; p++) {
        peer_fds[domid][p].fd = -1;
    }
    d->known = true;
    return d;
}

static SimDomain *get_domain(unsigned int domid)
{
    SimDomain *d;

    pthread_mutex_lock(&lock);
    d = (control_fd >= 0 || connect_daemon() == 0) ? get_domain_locked(domid)
                                                   : NULL;
    pthread_mutex_unlock(&lock);
    return d;
}

static void stat_add(uint64_t *counter, uint64_t n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

/* ---- libxenevtchn ---- */

struct xenevtchn_handle {
    int efd;
    uint32_t id;                /* xensimd's handle number */
    SimDomain *dom;             /* ours */
    uint32_t nports;
    evtchn_port_t ports[XENSIM_MAX_PORTS];
};

EXPORT xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger,
                                        unsigned int flags)
{
    xenevtchn_handle *xce = calloc(1, sizeof(*xce));
    XsimRequest req = { .op = XSIM_OP_REGISTER_HANDLE };
    XsimReply rep;

    if (!xce) {
        return NULL;
    }
    xce->dom = get_domain(getenv(XENSIM_ENV_DOMID) ?
                          strtoul(getenv(XENSIM_ENV_DOMID), NULL, 10) : 0);
    /* Blocking, as libxenevtchn opens /dev/xen/evtchn: xenevtchn_pending
     * on a handle with nothing pending waits, unless its user made the fd
     * non-blocking (a loop that drains until -1 must). */
    xce->efd = eventfd(0, EFD_CLOEXEC);
    if (!xce->dom || xce->efd < 0 ||
        rpc_locked(&req, &rep, xce->efd, NULL, 0) < 0) {
        if (xce->efd >= 0) {
            close(xce->efd);
        }
        free(xce);
        return NULL;
    }
    xce->id = rep.val[0];
    return xce;
}

EXPORT int xenevtchn_close(xenevtchn_handle *xce)
{
    XsimRequest req = { .op = XSIM_OP_UNREGISTER_HANDLE };
    XsimReply rep;

    if (!xce) {
        return 0;
    }
    req.arg[0] = xce->id;
    rpc_locked(&req, &rep, -1, NULL, 0);    /* unbinds our ports too */
    close(xce->efd);
    free(xce);
    return 0;
}

EXPORT int xenevtchn_fd(xenevtchn_handle *xce)
{
    return xce->efd;
}

static void add_port(xenevtchn_handle *xce, evtchn_port_t port)
{
    if (xce->nports < XENSIM_MAX_PORTS) {
        xce->ports[xce->nports++] = port;
    }
}

static void kick_self(xenevtchn_handle *xce)
{
    uint64_t one = 1;

    if (write(xce->efd, &one, sizeof(one)) < 0) {
        /* the counter is already non-zero: we will wake anyway */
    }
}

static void mark_pending_and_kick(xenevtchn_handle *xce, evtchn_port_t port)
{
    __atomic_fetch_or(&xce->dom->events->pending[port / 64],
                      1ull << (port % 64), __ATOMIC_ACQ_REL);
    kick_self(xce);
}

static void remove_port(xenevtchn_handle *xce, evtchn_port_t port)
{
    for (uint32_t i = 0; i < xce->nports; i++) {
        if (xce->ports[i] == port) {
            xce->ports[i] = xce->ports[--xce->nports];
            return;
        }
    }
}

EXPORT xenevtchn_port_or_error_t
xenevtchn_bind_unbound_port(xenevtchn_handle *xce, uint32_t domid)
{
    XsimRequest req = { .op = XSIM_OP_ALLOC_UNBOUND,
                        .arg = { xce->id, domid } };
    XsimReply rep;

    if (rpc_locked(&req, &rep, -1, NULL, 0) < 0) {
        return -1;
    }
    add_port(xce, rep.val[0]);
    return rep.val[0];
}

EXPORT xenevtchn_port_or_error_t
xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
                           evtchn_port_t remote_port)
{
    XsimRequest req = { .op = XSIM_OP_BIND_INTERDOMAIN,
                        .arg = { xce->id, domid, remote_port } };
    XsimReply rep;

    if (rpc_locked(&req, &rep, -1, NULL, 0) < 0) {
        return -1;
    }
    add_port(xce, rep.val[0]);
    /*
     * As Xen's evtchn_bind_interdomain: the new port starts pending, for
     * whatever the other end sent before we bound.  A backend sees an
     * event as soon as it listens.
     */
    mark_pending_and_kick(xce, rep.val[0]);
    return rep.val[0];
}

EXPORT xenevtchn_port_or_error_t
xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq)
{
    errno = ENOSYS;
    return -1;
}

EXPORT int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port)
{
    XsimRequest req = { .op = XSIM_OP_UNBIND, .arg = { port } };
    XsimReply rep;

    if (rpc_locked(&req, &rep, -1, NULL, 0) < 0) {
        return -1;
    }
    remove_port(xce, port);
    return 0;
}

/* The eventfd of (domain, port), from the cache or from xensimd. */
static int peer_eventfd(SimDomain *r, unsigned int rdom, unsigned int rport)
{
    uint32_t gen = __atomic_load_n(&r->events->port[rport].gen,
                                   __ATOMIC_ACQUIRE);
    PeerFd *pf;
    int fd;

    pthread_mutex_lock(&lock);
    pf = &peer_fds[rdom][rport];
    if (pf->fd < 0 || pf->gen != gen) {
        XsimRequest req = { .op = XSIM_OP_PEER_EVENTFD,
                            .arg = { rdom, rport } };
        XsimReply rep;
        int newfd = -1;

        if (rpc(&req, &rep, -1, &newfd, 1) == 0) {
            if (pf->fd >= 0) {
                close(pf->fd);
            }
            pf->fd = newfd;
            pf->gen = rep.val[0];
        }
    }
    fd = pf->fd;
    pthread_mutex_unlock(&lock);
    return fd;
}

EXPORT int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port)
{
    XsimPort *p;
    SimDomain *r;
    uint32_t state, rdom, rport;
    uint64_t bit, old;
    int fd;

    if (port == 0 || port >= XENSIM_MAX_PORTS) {
        errno = EINVAL;
        return -1;
    }
    p = &xce->dom->events->port[port];
    state = __atomic_load_n(&p->state, __ATOMIC_ACQUIRE);
    if (state == XSIM_PORT_FREE) {
        errno = EINVAL;         /* a closed port: Xen refuses */
        return -1;
    }
    if (state != XSIM_PORT_INTERDOMAIN) {
        return 0;               /* the other end went away: dropped */
    }
    rdom = __atomic_load_n(&p->remote_dom, __ATOMIC_RELAXED);
    rport = __atomic_load_n(&p->remote_port, __ATOMIC_RELAXED);
    r = get_domain(rdom);
    if (!r || rport >= XENSIM_MAX_PORTS) {
        return 0;
    }
    stat_add(&r->events->stats.notify_sent, 1);
    bit = 1ull << (rport % 64);
    old = __atomic_fetch_or(&r->events->pending[rport / 64], bit,
                            __ATOMIC_ACQ_REL);
    if (old & bit) {
        return 0;               /* still pending: the receiver will see it */
    }
    fd = peer_eventfd(r, rdom, rport);
    if (fd >= 0) {
        uint64_t one = 1;

        stat_add(&r->events->stats.notify_signalled, 1);
        if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
            return -1;
        }
    }
    return 0;
}

static bool test_and_clear_pending(SimDomain *d, evtchn_port_t port)
{
    uint64_t bit = 1ull << (port % 64);

    return __atomic_fetch_and(&d->events->pending[port / 64], ~bit,
                              __ATOMIC_ACQ_REL) & bit;
}

static bool is_pending(SimDomain *d, evtchn_port_t port)
{
    return __atomic_load_n(&d->events->pending[port / 64],
                           __ATOMIC_ACQUIRE) & (1ull << (port % 64));
}

EXPORT xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce)
{
    uint64_t count;
    evtchn_port_t found = 0;

    /* Consume the wakeup first, then look: no notification is lost. */
    if (read(xce->efd, &count, sizeof(count)) < 0 && errno != EAGAIN) {
        return -1;
    }
    for (uint32_t i = 0; i < xce->nports; i++) {
        if (!found) {
            if (test_and_clear_pending(xce->dom, xce->ports[i])) {
                found = xce->ports[i];
            }
        } else if (is_pending(xce->dom, xce->ports[i])) {
            kick_self(xce);     /* more to report: wake up again */
            break;
        }
    }
    if (!found) {
        errno = EAGAIN;
        return -1;
    }
    return found;
}

EXPORT int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port)
{
    if (port < XENSIM_MAX_PORTS && is_pending(xce->dom, port)) {
        kick_self(xce);
    }
    return 0;
}

EXPORT int xenevtchn_restrict(xenevtchn_handle *xce, domid_t domid)
{
    return 0;
}

/* ---- Checking a grant as Xen does ---- */

/*
 * May this domain use @ref of @d for reading (or writing)?  Returns the
 * page frame, or a GNTST_* status (negative).
 */
static int64_t check_grant(SimDomain *d, uint32_t ref, bool write)
{
    XsimGrantEntry *e;
    uint16_t flags;
    uint32_t frame;

    if (ref >= XENSIM_NR_GRANTS) {
        return GNTST_bad_gntref;
    }
    e = &d->gnttab[ref];
    flags = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);
    frame = __atomic_load_n(&e->frame, __ATOMIC_RELAXED);
    if ((flags & GTF_type_mask) != GTF_permit_access ||
        __atomic_load_n(&e->domid, __ATOMIC_RELAXED) != my_domid) {
        return GNTST_general_error;
    }
    if (write && (flags & GTF_readonly)) {
        return GNTST_permission_denied;
    }
    if (frame >= d->pages) {
        return GNTST_bad_page;
    }
    return frame;
}

/* ---- libxengnttab ---- */

/* A grant mapping, remembered so that unmap knows whose pages they were. */
typedef struct GrantMapping {
    void *start;
    uint32_t count;
    SimDomain *dom;
    struct GrantMapping *next;
} GrantMapping;

typedef struct SharedRegion SharedRegion;

/* Xen's headers name one struct for both gnttab and gntshr handles. */
struct xengntdev_handle {
    pthread_mutex_t lock;
    GrantMapping *mappings;     /* gnttab: what we mapped */
    SimDomain *dom;             /* gntshr: our own domain */
    SharedRegion *regions;      /* gntshr: what we shared */
};

EXPORT xengnttab_handle *xengnttab_open(struct xentoollog_logger *logger,
                                        unsigned int flags)
{
    xengnttab_handle *xgt;

    if (!get_domain(0)) {
        return NULL;
    }
    xgt = calloc(1, sizeof(*xgt));
    pthread_mutex_init(&xgt->lock, NULL);
    return xgt;
}

EXPORT int xengnttab_close(xengnttab_handle *xgt)
{
    /* As gntdev: mappings stay valid until unmapped. */
    while (xgt && xgt->mappings) {
        GrantMapping *m = xgt->mappings;

        xgt->mappings = m->next;
        free(m);
    }
    free(xgt);
    return 0;
}

EXPORT int xengnttab_fd(xengnttab_handle *xgt)
{
    errno = ENOSYS;
    return -1;
}

EXPORT int xengnttab_set_max_grants(xengnttab_handle *xgt, uint32_t count)
{
    return 0;
}

/* Map pages of several (domid, ref): an mmap of the guest's memory each. */
static void *map_refs(xengnttab_handle *xgt, uint32_t count,
                      const uint32_t *domids, uint32_t domid,
                      const uint32_t *refs, int prot)
{
    size_t len = (size_t)count * XENSIM_PAGE_SIZE;
    GrantMapping *m;
    SimDomain *d = NULL;
    uint8_t *area;

    if (count == 0) {
        errno = EINVAL;
        return NULL;
    }
    area = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) {
        return NULL;
    }
    for (uint32_t i = 0; i < count; i++) {
        int64_t frame;

        d = get_domain(domids ? domids[i] : domid);
        frame = d ? check_grant(d, refs[i], prot & PROT_WRITE)
                  : GNTST_bad_domain;

        if (frame < 0 ||
            mmap(area + (size_t)i * XENSIM_PAGE_SIZE, XENSIM_PAGE_SIZE, prot,
                 MAP_SHARED | MAP_FIXED, d->mem_fd,
                 (off_t)frame * XENSIM_PAGE_SIZE) == MAP_FAILED) {
            munmap(area, len);
            errno = frame < 0 ? EINVAL : errno;
            return NULL;
        }
        stat_add(&d->events->stats.maps, 1);
    }
    m = calloc(1, sizeof(*m));
    *m = (GrantMapping) { .start = area, .count = count, .dom = d };
    pthread_mutex_lock(&xgt->lock);
    m->next = xgt->mappings;
    xgt->mappings = m;
    pthread_mutex_unlock(&xgt->lock);
    return area;
}

EXPORT void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid,
                                     uint32_t ref, int prot)
{
    return map_refs(xgt, 1, NULL, domid, &ref, prot);
}

EXPORT void *xengnttab_map_grant_refs(xengnttab_handle *xgt, uint32_t count,
                                      uint32_t *domids, uint32_t *refs,
                                      int prot)
{
    return map_refs(xgt, count, domids, 0, refs, prot);
}

EXPORT void *xengnttab_map_domain_grant_refs(xengnttab_handle *xgt,
                                             uint32_t count, uint32_t domid,
                                             uint32_t *refs, int prot)
{
    return map_refs(xgt, count, NULL, domid, refs, prot);
}

EXPORT void *xengnttab_map_grant_ref_notify(xengnttab_handle *xgt,
                                            uint32_t domid, uint32_t ref,
                                            int prot, uint32_t notify_offset,
                                            evtchn_port_t notify_port)
{
    return map_refs(xgt, 1, NULL, domid, &ref, prot);
}

EXPORT int xengnttab_unmap(xengnttab_handle *xgt, void *start_address,
                           uint32_t count)
{
    GrantMapping *found = NULL;

    pthread_mutex_lock(&xgt->lock);
    for (GrantMapping **p = &xgt->mappings; *p; p = &(*p)->next) {
        if ((*p)->start == start_address && (*p)->count == count) {
            found = *p;
            *p = found->next;
            break;
        }
    }
    pthread_mutex_unlock(&xgt->lock);
    if (!found) {
        errno = EINVAL;
        return -1;
    }
    stat_add(&found->dom->events->stats.unmaps, count);
    free(found);
    return munmap(start_address, (size_t)count * XENSIM_PAGE_SIZE);
}

/* Transfer a batch in one direction: one syscall for up to IOV_MAX. */
static void copy_batch(pid_t pid, struct iovec *local, struct iovec *remote,
                       xengnttab_grant_copy_segment_t **segs, unsigned int n,
                       bool to_guest)
{
    size_t want = 0;
    ssize_t done;

    for (unsigned int i = 0; i < n; i++) {
        want += local[i].iov_len;
    }
    done = to_guest ? process_vm_writev(pid, local, n, remote, n, 0)
                    : process_vm_readv(pid, local, n, remote, n, 0);
    if (done == (ssize_t)want) {
        return;
    }
    /* A short transfer: fail the segments it did not reach. */
    for (unsigned int i = 0; i < n; i++) {
        if (done >= (ssize_t)local[i].iov_len) {
            done -= local[i].iov_len;
        } else {
            segs[i]->status = GNTST_general_error;
            done = 0;
        }
    }
}

EXPORT int xengnttab_grant_copy(xengnttab_handle *xgt, uint32_t count,
                                xengnttab_grant_copy_segment_t *segs)
{
    enum { BATCH = 1024 };
    struct iovec local[2][BATCH], remote[2][BATCH];
    xengnttab_grant_copy_segment_t *which[2][BATCH];
    unsigned int n[2] = { 0, 0 };
    SimDomain *batch_dom = NULL;
    pid_t pid = 0;

    for (uint32_t i = 0; i < count; i++) {
        xengnttab_grant_copy_segment_t *s = &segs[i];
        bool to_guest = s->flags & GNTCOPY_dest_gref;
        SimDomain *d;
        int64_t frame;
        uint32_t ref;
        uint16_t offset, domid;

        /* Exactly one side must be a grant (no guest-to-guest copies). */
        if (!!(s->flags & GNTCOPY_source_gref) == to_guest) {
            s->status = GNTST_bad_copy_arg;
            continue;
        }
        ref = to_guest ? s->dest.foreign.ref : s->source.foreign.ref;
        offset = to_guest ? s->dest.foreign.offset : s->source.foreign.offset;
        domid = to_guest ? s->dest.foreign.domid : s->source.foreign.domid;
        if ((uint32_t)offset + s->len > XENSIM_PAGE_SIZE) {
            s->status = GNTST_bad_copy_arg;
            continue;
        }
        d = get_domain(domid);
        frame = d ? check_grant(d, ref, to_guest) : GNTST_bad_domain;
        if (frame < 0) {
            s->status = frame;
            if (d) {
                stat_add(&d->events->stats.copy_errors, 1);
            }
            continue;
        }
        s->status = GNTST_okay;
        pid = d->daemon_pid;
        batch_dom = d;
        stat_add(&d->events->stats.copy_segments, 1);
        local[to_guest][n[to_guest]] = (struct iovec) {
            .iov_base = to_guest ? s->source.virt : s->dest.virt,
            .iov_len = s->len,
        };
        remote[to_guest][n[to_guest]] = (struct iovec) {
            .iov_base = (void *)(uintptr_t)(d->daemon_mem +
                                            (uint64_t)frame *
                                            XENSIM_PAGE_SIZE + offset),
            .iov_len = s->len,
        };
        which[to_guest][n[to_guest]++] = s;
        if (n[to_guest] == BATCH) {
            copy_batch(pid, local[to_guest], remote[to_guest],
                       which[to_guest], BATCH, to_guest);
            n[to_guest] = 0;
        }
    }
    for (int dir = 0; dir < 2; dir++) {
        if (n[dir]) {
            copy_batch(pid, local[dir], remote[dir], which[dir], n[dir], dir);
        }
    }
    if (batch_dom) {
        stat_add(&batch_dom->events->stats.copy_batches, 1);
    }
    return 0;
}

/* ---- gntshr: a guest shares its pages ---- */

struct SharedRegion {
    uint8_t *start;
    uint32_t count;
    uint32_t first_frame;
    uint32_t *refs;
    SharedRegion *next;
};

EXPORT xengntshr_handle *xengntshr_open(struct xentoollog_logger *logger,
                                        unsigned int flags)
{
    xengntshr_handle *xgs = calloc(1, sizeof(*xgs));

    if (!xgs) {
        return NULL;
    }
    xgs->dom = get_domain(getenv(XENSIM_ENV_DOMID) ?
                          strtoul(getenv(XENSIM_ENV_DOMID), NULL, 10) : 0);
    if (!xgs->dom || !xgs->dom->own_mem) {
        free(xgs);
        errno = ENODEV;
        return NULL;
    }
    return xgs;
}

EXPORT int xengntshr_fd(xengntshr_handle *xgs)
{
    errno = ENOSYS;
    return -1;
}

static void free_region_resources(SharedRegion *r)
{
    XsimRequest req = { .op = XSIM_OP_FREE_PAGES,
                        .arg = { r->first_frame, r->count } };
    XsimReply rep;

    for (uint32_t done = 0; done < r->count; done += XSIM_MSG_REFS) {
        XsimRequest g = { .op = XSIM_OP_FREE_GRANTS };
        uint32_t n = r->count - done < XSIM_MSG_REFS ? r->count - done
                                                     : XSIM_MSG_REFS;

        g.arg[0] = n;
        memcpy(g.refs, &r->refs[done], n * sizeof(uint32_t));
        rpc_locked(&g, &rep, -1, NULL, 0);
    }
    rpc_locked(&req, &rep, -1, NULL, 0);
}

EXPORT void *xengntshr_share_pages(xengntshr_handle *xgs, uint32_t domid,
                                   int count, uint32_t *refs, int writable)
{
    XsimRequest req = { .op = XSIM_OP_ALLOC_PAGES, .arg = { count } };
    XsimReply rep;
    SharedRegion *r;

    if (count <= 0 || rpc_locked(&req, &rep, -1, NULL, 0) < 0) {
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    r->count = count;
    r->first_frame = rep.val[0];
    r->start = xgs->dom->own_mem + (size_t)r->first_frame * XENSIM_PAGE_SIZE;
    r->refs = calloc(count, sizeof(uint32_t));
    for (int done = 0; done < count; done += XSIM_MSG_REFS) {
        XsimRequest g = { .op = XSIM_OP_ALLOC_GRANTS };
        int n = count - done < XSIM_MSG_REFS ? count - done : XSIM_MSG_REFS;

        g.arg[0] = n;
        if (rpc_locked(&g, &rep, -1, NULL, 0) < 0) {
            r->count = done;
            free_region_resources(r);
            free(r->refs);
            free(r);
            return NULL;
        }
        memcpy(&r->refs[done], rep.refs, n * sizeof(uint32_t));
    }
    for (int i = 0; i < count; i++) {
        XsimGrantEntry *e = &xgs->dom->gnttab[r->refs[i]];

        e->frame = r->first_frame + i;
        e->domid = domid;
        /* Publish frame and domid before the entry becomes valid. */
        __atomic_store_n(&e->flags,
                         GTF_permit_access | (writable ? 0 : GTF_readonly),
                         __ATOMIC_RELEASE);
        refs[i] = r->refs[i];
    }
    r->next = xgs->regions;
    xgs->regions = r;
    return r->start;
}

EXPORT void *xengntshr_share_page_notify(xengntshr_handle *xgs,
                                         uint32_t domid, uint32_t *ref,
                                         int writable, uint32_t notify_offset,
                                         evtchn_port_t notify_port)
{
    return xengntshr_share_pages(xgs, domid, 1, ref, writable);
}

EXPORT int xengntshr_unshare(xengntshr_handle *xgs, void *start_address,
                             uint32_t count)
{
    for (SharedRegion **p = &xgs->regions; *p; p = &(*p)->next) {
        SharedRegion *r = *p;

        if (r->start == start_address) {
            /* Revoke: the entries become invalid at once (as a guest's
             * gnttab_end_foreign_access would). */
            for (uint32_t i = 0; i < r->count; i++) {
                __atomic_store_n(&xgs->dom->gnttab[r->refs[i]].flags, 0,
                                 __ATOMIC_RELEASE);
            }
            free_region_resources(r);
            *p = r->next;
            free(r->refs);
            free(r);
            return 0;
        }
    }
    errno = EINVAL;
    return -1;
}

EXPORT int xengntshr_close(xengntshr_handle *xgs)
{
    while (xgs && xgs->regions) {
        xengntshr_unshare(xgs, xgs->regions->start, xgs->regions->count);
    }
    free(xgs);
    return 0;
}

/* ---- What QEMU's Xen accelerator opens, and nothing more ---- */

struct xc_interface_core {
    int unused;
};

EXPORT xc_interface *xc_interface_open(xentoollog_logger *logger,
                                       xentoollog_logger *dombuild_logger,
                                       unsigned open_flags)
{
    if (!get_domain(0)) {
        return NULL;
    }
    return calloc(1, sizeof(xc_interface));
}

EXPORT int xc_interface_close(xc_interface *xch)
{
    free(xch);
    return 0;
}

struct xenforeignmemory_handle {
    int unused;
};

EXPORT xenforeignmemory_handle *
xenforeignmemory_open(struct xentoollog_logger *logger, unsigned int flags)
{
    return calloc(1, sizeof(xenforeignmemory_handle));
}

EXPORT int xenforeignmemory_close(xenforeignmemory_handle *fmem)
{
    free(fmem);
    return 0;
}

EXPORT void *xenforeignmemory_map(xenforeignmemory_handle *fmem,
                                  uint32_t dom, int prot, size_t pages,
                                  const xen_pfn_t arr[], int err[])
{
    errno = ENOSYS;
    return NULL;
}

EXPORT void *xenforeignmemory_map2(xenforeignmemory_handle *fmem,
                                   uint32_t dom, void *addr, int prot,
                                   int flags, size_t pages,
                                   const xen_pfn_t arr[], int err[])
{
    errno = ENOSYS;
    return NULL;
}

EXPORT int xenforeignmemory_unmap(xenforeignmemory_handle *fmem, void *addr,
                                  size_t pages)
{
    errno = ENOSYS;
    return -1;
}

EXPORT xenforeignmemory_resource_handle *
xenforeignmemory_map_resource(xenforeignmemory_handle *fmem, domid_t domid,
                              unsigned int type, unsigned int id,
                              unsigned long frame, unsigned long nr_frames,
                              void **paddr, int prot, int flags)
{
    errno = ENOSYS;
    return NULL;
}

EXPORT int xenforeignmemory_unmap_resource(
    xenforeignmemory_handle *fmem, xenforeignmemory_resource_handle *fres)
{
    return 0;
}

struct xendevicemodel_handle {
    int unused;
};

EXPORT xendevicemodel_handle *
xendevicemodel_open(struct xentoollog_logger *logger, unsigned int open_flags)
{
    return calloc(1, sizeof(xendevicemodel_handle));
}

EXPORT int xendevicemodel_close(xendevicemodel_handle *dmod)
{
    free(dmod);
    return 0;
}

EXPORT int xentoolcore_restrict_all(domid_t domid)
{
    return 0;
}

EXPORT int xendevicemodel_shutdown(xendevicemodel_handle *dmod,
                                   domid_t domid, unsigned int reason)
{
    return 0;
}
