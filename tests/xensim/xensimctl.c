/*
 * xensimctl: look at and steer a running xensimd
 *
 *   XENSIM_DIR=DIR xensimctl stats DOMID     grant and event counters (JSON)
 *   XENSIM_DIR=DIR xensimctl create DOMID [MiB]
 *   XENSIM_DIR=DIR xensimctl destroy DOMID
 *
 * The counters are what other domains did with DOMID's grants and ports
 * (grant-copy batches and segments, pages mapped and unmapped,
 * notifications): tests count operations with them, never time.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "xensim.h"

static int control_fd = -1;

static int rpc(const XsimRequest *req, XsimReply *rep, int *fds,
               unsigned int max_fds)
{
    char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    struct iovec iov = { .iov_base = (void *)req, .iov_len = sizeof(*req) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    struct cmsghdr *cmsg;

    if (sendmsg(control_fd, &msg, 0) < 0) {
        return -1;
    }
    iov = (struct iovec) { .iov_base = rep, .iov_len = sizeof(*rep) };
    msg = (struct msghdr) { .msg_iov = &iov, .msg_iovlen = 1,
                            .msg_control = cbuf,
                            .msg_controllen = sizeof(cbuf) };
    if (recvmsg(control_fd, &msg, 0) != sizeof(*rep)) {
        return -1;
    }
    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_type == SCM_RIGHTS) {
            unsigned int n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int got[4];

            memcpy(got, CMSG_DATA(cmsg), n * sizeof(int));
            for (unsigned int i = 0; i < n; i++) {
                if (i < max_fds) {
                    fds[i] = got[i];
                } else {
                    close(got[i]);
                }
            }
        }
    }
    errno = rep->err;
    return rep->err ? -1 : 0;
}

static int connect_daemon(void)
{
    const char *dir = getenv(XENSIM_ENV_DIR);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    XsimRequest req = { .op = XSIM_OP_HELLO, .arg = { 0 } };
    XsimReply rep;

    if (!dir) {
        fprintf(stderr, "xensimctl: set %s\n", XENSIM_ENV_DIR);
        return -1;
    }
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%s", dir,
             XENSIM_CONTROL_SOCKET);
    control_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (control_fd < 0 ||
        connect(control_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        perror("xensimctl: connect");
        return -1;
    }
    return rpc(&req, &rep, NULL, 0);
}

static int print_stats(unsigned int domid)
{
    XsimRequest req = { .op = XSIM_OP_GET_DOMAIN, .arg = { domid } };
    XsimReply rep;
    int fds[3] = { -1, -1, -1 };
    XsimEventPage *ev;
    XsimStats st;

    if (rpc(&req, &rep, fds, 3) < 0) {
        perror("xensimctl: domain");
        return 1;
    }
    ev = mmap(NULL, XENSIM_EVENT_PAGE_SIZE, PROT_READ, MAP_SHARED, fds[2], 0);
    if (ev == MAP_FAILED) {
        perror("xensimctl: mmap");
        return 1;
    }
    memcpy(&st, &ev->stats, sizeof(st));
    printf("{\"domid\": %u, \"copy_batches\": %" PRIu64 ", "
           "\"copy_segments\": %" PRIu64 ", \"copy_errors\": %" PRIu64 ", "
           "\"maps\": %" PRIu64 ", \"unmaps\": %" PRIu64 ", "
           "\"notify_sent\": %" PRIu64 ", \"notify_signalled\": %" PRIu64
           "}\n", domid, st.copy_batches, st.copy_segments, st.copy_errors,
           st.maps, st.unmaps, st.notify_sent, st.notify_signalled);
    return 0;
}

int main(int argc, char **argv)
{
    XsimRequest req = { 0 };
    XsimReply rep;

    if (argc < 3 || connect_daemon() < 0) {
        fprintf(stderr, "usage: XENSIM_DIR=DIR xensimctl "
                "stats|create|destroy DOMID [MiB]\n");
        return 2;
    }
    if (!strcmp(argv[1], "stats")) {
        return print_stats(strtoul(argv[2], NULL, 10));
    }
    if (!strcmp(argv[1], "create")) {
        req.op = XSIM_OP_CREATE_DOMAIN;
        req.arg[1] = argc > 3 ? strtoul(argv[3], NULL, 10)
                              : XENSIM_DEFAULT_MEM_MB;
    } else if (!strcmp(argv[1], "destroy")) {
        req.op = XSIM_OP_DESTROY_DOMAIN;
    } else {
        fprintf(stderr, "xensimctl: unknown command %s\n", argv[1]);
        return 2;
    }
    req.arg[0] = strtoul(argv[2], NULL, 10);
    if (rpc(&req, &rep, NULL, 0) < 0) {
        perror("xensimctl");
        return 1;
    }
    return 0;
}
