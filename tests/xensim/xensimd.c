/*
 * xensimd: the hypervisor stand-in of xensim
 *
 *   xensimd --dir DIR [--domain ID[:MiB]]... [--ready-fd N]
 *
 * Owns the domains (memory, grant table, event page), routes event channel
 * bindings, allocates guest pages and grant references for frontends, and
 * runs the xenstored (tests/xensim/xenstored.c) on DIR/xenstored.sock (dom0)
 * and DIR/xenstored-<domid>.sock (each guest).  Processes reach it through
 * libxensim on DIR/control.sock.
 *
 * One thread serves the control socket (epoll); the xenstored has its own.
 * Nothing here is on the data path: grant copies and notifications go
 * directly between the processes, through xensimd's mappings and eventfds.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib.h>
#include <xenstore.h>

#include "xensim.h"
#include "xenstored.h"

#define MAX_CLIENTS     256
#define MAX_HANDLES     1024
#define GNTTAB_RESERVED 8       /* refs Xen keeps for the toolstack */

typedef struct Client Client;

typedef struct Domain {
    bool exists;
    unsigned int domid;
    unsigned int pages;
    int mem_fd, gnttab_fd, events_fd;
    uint8_t *mem;
    XsimGrantEntry *gnttab;
    XsimEventPage *events;
    uint8_t *page_used;                 /* one byte per page */
    uint8_t grant_used[XENSIM_NR_GRANTS];
    int port_handle[XENSIM_MAX_PORTS];  /* owning handle, -1 if none */
} Domain;

typedef struct Handle {
    bool used;
    int eventfd;
    Client *owner;
    unsigned int domid;
} Handle;

struct Client {
    int fd;
    bool hello;
    unsigned int domid;
};

static Domain domains[XENSIM_MAX_DOMAINS];
static Handle handles[MAX_HANDLES];
static Client *clients[MAX_CLIENTS];
static XsdServer *xenstored;
static const char *sock_dir;
static bool verbose;

static void logmsg(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

static void logmsg(const char *fmt, ...)
{
    va_list ap;

    if (!verbose) {
        return;
    }
    va_start(ap, fmt);
    fprintf(stderr, "xensimd: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void die(const char *what)
{
    fprintf(stderr, "xensimd: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* ---- Domains ---- */

static Domain *find_domain(unsigned int domid)
{
    if (domid >= XENSIM_MAX_DOMAINS || !domains[domid].exists) {
        return NULL;
    }
    return &domains[domid];
}

static void *map_new_memfd(const char *name, size_t size, int *fd)
{
    void *p;

    *fd = memfd_create(name, MFD_CLOEXEC);
    if (*fd < 0 || ftruncate(*fd, size) < 0) {
        return NULL;
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Let the toolstack find the domain in xenstore, as libxl would. */
static void xenstore_announce_domain(unsigned int domid, bool present)
{
    g_autofree char *path = g_strdup_printf("%s/xenstored.sock", sock_dir);
    g_autofree char *node = NULL;
    g_autofree char *val = g_strdup_printf("%u", domid);
    struct xs_handle *xs;

    if (!present) {
        return;     /* xsd_remove_domain removes /local/domain/<domid> */
    }
    setenv("XENSTORED_PATH", path, 1);
    xs = xs_open(0);
    if (!xs) {
        fprintf(stderr, "xensimd: cannot reach our xenstored\n");
        return;
    }
    node = g_strdup_printf("/local/domain/%u/domid", domid);
    xs_write(xs, XBT_NULL, node, val, strlen(val));
    g_free(node);
    node = g_strdup_printf("/local/domain/%u/name", domid);
    g_free(val);
    val = domid ? g_strdup_printf("guest%u", domid) : g_strdup("Domain-0");
    xs_write(xs, XBT_NULL, node, val, strlen(val));
    xs_close(xs);
}

static int create_domain(unsigned int domid, unsigned int mem_mb)
{
    Domain *d;

    if (domid >= XENSIM_MAX_DOMAINS || domains[domid].exists) {
        return EEXIST;
    }
    d = &domains[domid];
    memset(d, 0, sizeof(*d));
    d->domid = domid;
    d->pages = (uint64_t)mem_mb * 1024 * 1024 / XENSIM_PAGE_SIZE;
    d->mem = map_new_memfd("xensim-mem", (size_t)d->pages * XENSIM_PAGE_SIZE,
                           &d->mem_fd);
    d->gnttab = map_new_memfd("xensim-gnttab",
                              XENSIM_GNTTAB_FRAMES * XENSIM_PAGE_SIZE,
                              &d->gnttab_fd);
    d->events = map_new_memfd("xensim-events", XENSIM_EVENT_PAGE_SIZE,
                              &d->events_fd);
    if (!d->mem || !d->gnttab || !d->events) {
        die("creating a domain");
    }
    d->page_used = calloc(d->pages, 1);
    memset(d->port_handle, -1, sizeof(d->port_handle));
    memset(d->grant_used, 1, GNTTAB_RESERVED);
    d->exists = true;
    if (domid != 0 && xsd_add_domain(xenstored, domid) < 0) {
        fprintf(stderr, "xensimd: xenstored refused domain %u\n", domid);
    }
    xenstore_announce_domain(domid, true);
    logmsg("domain %u: %u MiB", domid, mem_mb);
    return 0;
}

static void unbind_port(Domain *d, unsigned int port);

static int destroy_domain(unsigned int domid)
{
    Domain *d = find_domain(domid);

    if (!d || domid == 0) {
        return EINVAL;
    }
    for (unsigned int p = 1; p < XENSIM_MAX_PORTS; p++) {
        if (d->events->port[p].state != XSIM_PORT_FREE) {
            unbind_port(d, p);
        }
    }
    xsd_remove_domain(xenstored, domid);
    munmap(d->mem, (size_t)d->pages * XENSIM_PAGE_SIZE);
    munmap(d->gnttab, XENSIM_GNTTAB_FRAMES * XENSIM_PAGE_SIZE);
    munmap(d->events, XENSIM_EVENT_PAGE_SIZE);
    close(d->mem_fd);
    close(d->gnttab_fd);
    close(d->events_fd);
    free(d->page_used);
    d->exists = false;
    logmsg("domain %u destroyed", domid);
    return 0;
}

/* ---- Event channels ---- */

static void set_port(Domain *d, unsigned int port, uint32_t state,
                     uint32_t remote_dom, uint32_t remote_port)
{
    XsimPort *p = &d->events->port[port];

    /* Readers (libxensim) check gen: publish the binding before it. */
    __atomic_store_n(&p->state, state, __ATOMIC_RELAXED);
    __atomic_store_n(&p->remote_dom, remote_dom, __ATOMIC_RELAXED);
    __atomic_store_n(&p->remote_port, remote_port, __ATOMIC_RELAXED);
    __atomic_fetch_add(&p->gen, 1, __ATOMIC_RELEASE);
}

static int alloc_port(Domain *d)
{
    for (unsigned int p = 1; p < XENSIM_MAX_PORTS; p++) {
        if (d->events->port[p].state == XSIM_PORT_FREE &&
            d->port_handle[p] < 0) {
            return p;
        }
    }
    return -1;
}

static void unbind_port(Domain *d, unsigned int port)
{
    XsimPort *p = &d->events->port[port];

    if (p->state == XSIM_PORT_INTERDOMAIN) {
        Domain *r = find_domain(p->remote_dom);

        /* As Xen: the other end becomes unbound, waiting for us again. */
        if (r) {
            set_port(r, p->remote_port, XSIM_PORT_UNBOUND, d->domid, 0);
        }
    }
    set_port(d, port, XSIM_PORT_FREE, 0, 0);
    __atomic_fetch_and(&d->events->pending[port / 64],
                       ~(1ull << (port % 64)), __ATOMIC_RELAXED);
    d->port_handle[port] = -1;
}

static bool handle_ok(Client *c, uint32_t h)
{
    return h < MAX_HANDLES && handles[h].used && handles[h].owner == c;
}

static int op_alloc_unbound(Client *c, const XsimRequest *req, XsimReply *rep)
{
    Domain *d = find_domain(c->domid);
    uint32_t h = req->arg[0], remote = req->arg[1];
    int port;

    if (!d || !handle_ok(c, h) || !find_domain(remote)) {
        return EINVAL;
    }
    port = alloc_port(d);
    if (port < 0) {
        return ENOSPC;
    }
    d->port_handle[port] = h;
    set_port(d, port, XSIM_PORT_UNBOUND, remote, 0);
    rep->val[0] = port;
    logmsg("dom%u: port %d unbound for dom%u", d->domid, port, remote);
    return 0;
}

static int op_bind_interdomain(Client *c, const XsimRequest *req,
                               XsimReply *rep)
{
    Domain *d = find_domain(c->domid);
    Domain *r = find_domain(req->arg[1]);
    uint32_t h = req->arg[0], rport = req->arg[2];
    XsimPort *rp;
    int port;

    if (!d || !r || !handle_ok(c, h) || rport == 0 ||
        rport >= XENSIM_MAX_PORTS) {
        return EINVAL;
    }
    rp = &r->events->port[rport];
    /* Only a port left unbound for us can be bound (as Xen). */
    if (rp->state != XSIM_PORT_UNBOUND || rp->remote_dom != d->domid) {
        return EINVAL;
    }
    port = alloc_port(d);
    if (port < 0) {
        return ENOSPC;
    }
    d->port_handle[port] = h;
    set_port(d, port, XSIM_PORT_INTERDOMAIN, r->domid, rport);
    set_port(r, rport, XSIM_PORT_INTERDOMAIN, d->domid, port);
    rep->val[0] = port;
    logmsg("dom%u: port %d bound to dom%u:%u", d->domid, port, r->domid,
           rport);
    return 0;
}

static int op_unbind(Client *c, const XsimRequest *req)
{
    Domain *d = find_domain(c->domid);
    uint32_t port = req->arg[0];

    if (!d || port == 0 || port >= XENSIM_MAX_PORTS ||
        d->events->port[port].state == XSIM_PORT_FREE ||
        !handle_ok(c, d->port_handle[port])) {
        return EINVAL;
    }
    unbind_port(d, port);
    return 0;
}

/* The eventfd to signal for a port: that of the handle owning it. */
static int op_peer_eventfd(const XsimRequest *req, XsimReply *rep, int *fd)
{
    Domain *d = find_domain(req->arg[0]);
    uint32_t port = req->arg[1];
    int h;

    if (!d || port >= XENSIM_MAX_PORTS) {
        return EINVAL;
    }
    h = d->port_handle[port];
    if (h < 0) {
        return ENOENT;
    }
    *fd = handles[h].eventfd;
    rep->val[0] = __atomic_load_n(&d->events->port[port].gen,
                                  __ATOMIC_ACQUIRE);
    return 0;
}

static int op_register_handle(Client *c, int fd, XsimReply *rep)
{
    if (fd < 0) {
        return EINVAL;
    }
    for (unsigned int h = 0; h < MAX_HANDLES; h++) {
        if (!handles[h].used) {
            handles[h] = (Handle) { .used = true, .eventfd = fd, .owner = c,
                                    .domid = c->domid };
            rep->val[0] = h;
            return 0;
        }
    }
    close(fd);
    return ENOSPC;
}

static void release_handle(unsigned int h)
{
    Domain *d = find_domain(handles[h].domid);

    if (d) {
        for (unsigned int p = 1; p < XENSIM_MAX_PORTS; p++) {
            if (d->port_handle[p] == (int)h) {
                unbind_port(d, p);
            }
        }
    }
    close(handles[h].eventfd);
    handles[h].used = false;
}

static int op_unregister_handle(Client *c, const XsimRequest *req)
{
    if (!handle_ok(c, req->arg[0])) {
        return EINVAL;
    }
    release_handle(req->arg[0]);
    return 0;
}

/* ---- Guest pages and grant references (for frontends) ---- */

static int op_alloc_pages(Client *c, const XsimRequest *req, XsimReply *rep)
{
    Domain *d = find_domain(c->domid);
    uint32_t count = req->arg[0], run = 0;

    if (!d || count == 0 || count > d->pages) {
        return EINVAL;
    }
    /* First fit, contiguous: gntshr hands out one virtual range. */
    for (uint32_t f = 0; f < d->pages; f++) {
        run = d->page_used[f] ? 0 : run + 1;
        if (run == count) {
            uint32_t first = f + 1 - count;

            memset(&d->page_used[first], 1, count);
            memset(d->mem + (size_t)first * XENSIM_PAGE_SIZE, 0,
                   (size_t)count * XENSIM_PAGE_SIZE);
            rep->val[0] = first;
            return 0;
        }
    }
    return ENOMEM;
}

static int op_free_pages(Client *c, const XsimRequest *req)
{
    Domain *d = find_domain(c->domid);
    uint32_t first = req->arg[0], count = req->arg[1];

    if (!d || first >= d->pages || count > d->pages - first) {
        return EINVAL;
    }
    memset(&d->page_used[first], 0, count);
    return 0;
}

static int op_alloc_grants(Client *c, const XsimRequest *req, XsimReply *rep)
{
    Domain *d = find_domain(c->domid);
    uint32_t count = req->arg[0], n = 0;

    if (!d || count == 0 || count > XSIM_MSG_REFS) {
        return EINVAL;
    }
    for (uint32_t ref = 0; ref < XENSIM_NR_GRANTS && n < count; ref++) {
        if (!d->grant_used[ref]) {
            rep->refs[n++] = ref;
        }
    }
    if (n < count) {
        return ENOSPC;
    }
    for (uint32_t i = 0; i < n; i++) {
        d->grant_used[rep->refs[i]] = 1;
    }
    return 0;
}

static int op_free_grants(Client *c, const XsimRequest *req)
{
    Domain *d = find_domain(c->domid);
    uint32_t count = req->arg[0];

    if (!d || count > XSIM_MSG_REFS) {
        return EINVAL;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint32_t ref = req->refs[i];

        if (ref >= GNTTAB_RESERVED && ref < XENSIM_NR_GRANTS) {
            __atomic_store_n(&d->gnttab[ref].flags, 0, __ATOMIC_RELEASE);
            d->grant_used[ref] = 0;
        }
    }
    return 0;
}

/* ---- The control socket ---- */

static int send_reply(Client *c, const XsimReply *rep, const int *fds,
                      unsigned int nfds)
{
    char cbuf[CMSG_SPACE(sizeof(int) * 4)] = { 0 };
    struct iovec iov = { .iov_base = (void *)rep, .iov_len = sizeof(*rep) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

    if (nfds) {
        struct cmsghdr *cmsg;

        msg.msg_control = cbuf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }
    return sendmsg(c->fd, &msg, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

static void drop_client(int epfd, Client *c)
{
    for (unsigned int h = 0; h < MAX_HANDLES; h++) {
        if (handles[h].used && handles[h].owner == c) {
            release_handle(h);
        }
    }
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    for (unsigned int i = 0; i < MAX_CLIENTS; i++) {
        if (clients[i] == c) {
            clients[i] = NULL;
        }
    }
    free(c);
}

static void serve_request(Client *c, const XsimRequest *req, int in_fd)
{
    XsimReply rep = { 0 };
    int fds[3], nfds = 0;
    Domain *d;

    if (!c->hello && req->op != XSIM_OP_HELLO) {
        rep.err = EPERM;
        goto out;
    }
    switch (req->op) {
    case XSIM_OP_HELLO:
        if (!find_domain(req->arg[0])) {
            rep.err = ESRCH;
            break;
        }
        c->hello = true;
        c->domid = req->arg[0];
        break;
    case XSIM_OP_GET_DOMAIN:
        d = find_domain(req->arg[0]);
        if (!d) {
            rep.err = ESRCH;
            break;
        }
        fds[0] = d->mem_fd;
        fds[1] = d->gnttab_fd;
        fds[2] = d->events_fd;
        nfds = 3;
        rep.val[0] = d->pages;
        rep.val[1] = getpid();
        rep.val[2] = (uint32_t)(uintptr_t)d->mem;
        rep.val[3] = (uint32_t)((uint64_t)(uintptr_t)d->mem >> 32);
        break;
    case XSIM_OP_REGISTER_HANDLE:
        rep.err = op_register_handle(c, in_fd, &rep);
        in_fd = -1;
        break;
    case XSIM_OP_UNREGISTER_HANDLE:
        rep.err = op_unregister_handle(c, req);
        break;
    case XSIM_OP_ALLOC_UNBOUND:
        rep.err = op_alloc_unbound(c, req, &rep);
        break;
    case XSIM_OP_BIND_INTERDOMAIN:
        rep.err = op_bind_interdomain(c, req, &rep);
        break;
    case XSIM_OP_UNBIND:
        rep.err = op_unbind(c, req);
        break;
    case XSIM_OP_PEER_EVENTFD:
        rep.err = op_peer_eventfd(req, &rep, &fds[0]);
        nfds = rep.err ? 0 : 1;
        break;
    case XSIM_OP_ALLOC_PAGES:
        rep.err = op_alloc_pages(c, req, &rep);
        break;
    case XSIM_OP_FREE_PAGES:
        rep.err = op_free_pages(c, req);
        break;
    case XSIM_OP_ALLOC_GRANTS:
        rep.err = op_alloc_grants(c, req, &rep);
        break;
    case XSIM_OP_FREE_GRANTS:
        rep.err = op_free_grants(c, req);
        break;
    case XSIM_OP_CREATE_DOMAIN:
        rep.err = c->domid == 0 ? create_domain(req->arg[0], req->arg[1])
                                : EPERM;
        break;
    case XSIM_OP_DESTROY_DOMAIN:
        rep.err = c->domid == 0 ? destroy_domain(req->arg[0]) : EPERM;
        break;
    default:
        rep.err = ENOSYS;
        break;
    }
out:
    if (in_fd >= 0) {
        close(in_fd);
    }
    send_reply(c, &rep, fds, nfds);
}

/* Read one request; returns false when the client is gone. */
static bool read_request(Client *c)
{
    XsimRequest req;
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { .iov_base = &req, .iov_len = sizeof(req) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = cbuf,
                          .msg_controllen = sizeof(cbuf) };
    struct cmsghdr *cmsg;
    int fd = -1;
    ssize_t n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);

    if (n <= 0) {
        return n < 0 && errno == EAGAIN;
    }
    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
            memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
        }
    }
    if ((size_t)n != sizeof(req)) {
        if (fd >= 0) {
            close(fd);
        }
        return false;   /* not our protocol */
    }
    serve_request(c, &req, fd);
    return true;
}

static int listen_control(const char *dir)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%s", dir,
             XENSIM_CONTROL_SOCKET);
    unlink(addr.sun_path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(fd, 64) < 0) {
        die("control socket");
    }
    return fd;
}

static void accept_client(int epfd, int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN };

    if (fd < 0) {
        return;
    }
    for (unsigned int i = 0; i < MAX_CLIENTS; i++) {
        if (!clients[i]) {
            clients[i] = calloc(1, sizeof(Client));
            clients[i]->fd = fd;
            ev.data.ptr = clients[i];
            epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
            return;
        }
    }
    close(fd);
}

static volatile sig_atomic_t quit;

static void on_signal(int sig)
{
    quit = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: xensimd --dir DIR [--domain ID[:MiB]]... [--ready-fd N]"
            " [--verbose]\n"
            "Xen stand-in: domains, grant tables, event channels and a\n"
            "xenstored on DIR/xenstored.sock (dom0) and\n"
            "DIR/xenstored-<domid>.sock (guests).  Domain 0 always exists.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "dir", required_argument, NULL, 'd' },
        { "domain", required_argument, NULL, 'D' },
        { "ready-fd", required_argument, NULL, 'r' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    unsigned int want[XENSIM_MAX_DOMAINS][2], nwant = 0;
    int ready_fd = -1, opt, lfd, epfd;
    char *err = NULL;
    struct epoll_event ev = { .events = EPOLLIN };

    while ((opt = getopt_long(argc, argv, "d:D:r:vh", opts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            sock_dir = optarg;
            break;
        case 'D':
            if (nwant == XENSIM_MAX_DOMAINS) {
                usage();
                return 2;
            }
            want[nwant][1] = XENSIM_DEFAULT_MEM_MB;
            if (sscanf(optarg, "%u:%u", &want[nwant][0], &want[nwant][1]) < 1
                || want[nwant][0] == 0 ||
                want[nwant][0] >= XENSIM_MAX_DOMAINS) {
                usage();
                return 2;
            }
            nwant++;
            break;
        case 'r':
            ready_fd = atoi(optarg);
            break;
        case 'v':
            verbose = true;
            break;
        default:
            usage();
            return opt == 'h' ? 0 : 2;
        }
    }
    if (!sock_dir) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    xenstored = xsd_start(sock_dir, &err);
    if (!xenstored) {
        fprintf(stderr, "xensimd: xenstored: %s\n", err ? err : "failed");
        return 1;
    }
    create_domain(0, 16);
    for (unsigned int i = 0; i < nwant; i++) {
        if (create_domain(want[i][0], want[i][1])) {
            fprintf(stderr, "xensimd: domain %u twice\n", want[i][0]);
            return 2;
        }
    }
    lfd = listen_control(sock_dir);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    ev.data.ptr = NULL;
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);

    /* Tell whoever started us that every socket is there. */
    if (ready_fd >= 0) {
        if (write(ready_fd, "ready\n", 6) < 0) {
            return 1;
        }
        close(ready_fd);
    }
    while (!quit) {
        struct epoll_event evs[32];
        int n = epoll_wait(epfd, evs, 32, -1);

        for (int i = 0; i < n; i++) {
            Client *c = evs[i].data.ptr;

            if (!c) {
                accept_client(epfd, lfd);
            } else if (!read_request(c)) {
                drop_client(epfd, c);
            }
        }
    }
    xsd_stop(xenstored);
    return 0;
}
