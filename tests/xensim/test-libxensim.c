/*
 * Tests of libxensim against a real xensimd: grants and event channels
 * fail the way Xen makes them fail.
 *
 * The test process forks: the child acts as guest domain 1 (it shares
 * pages and allocates an unbound port, then reports the references over a
 * pipe and waits), the parent acts as dom0, the backend.  libxensim.c is
 * compiled into this program, so no preloading is needed.
 *
 * Build: see the Makefile (build/xensim/test-libxensim).
 * Run:   test-libxensim PATH-TO-XENSIMD --tap
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <glib.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xenevtchn.h>
#include <xengnttab.h>

static const char *xensimd_path;
static char *sim_dir;
static pid_t daemon_pid;

/* What the guest tells the backend. */
typedef struct GuestInfo {
    uint32_t rw_ref;            /* a writable page, first bytes "guest" */
    uint32_t ro_ref;            /* a read-only page */
    uint32_t other_ref;         /* granted to domain 2, not to us */
    uint32_t revoked_ref;       /* shared, then unshared */
    uint32_t port;              /* unbound, for dom0 */
    uint32_t port_for_other;    /* unbound, for domain 2 */
} GuestInfo;

static void start_daemon(void)
{
    int ready[2];
    char buf[16] = "";

    sim_dir = g_dir_make_tmp("xensim-test-XXXXXX", NULL);
    g_assert(pipe(ready) == 0);
    daemon_pid = fork();
    if (daemon_pid == 0) {
        g_autofree char *fd = g_strdup_printf("%d", ready[1]);

        close(ready[0]);
        prctl(PR_SET_PDEATHSIG, SIGTERM);   /* no daemon outlives a crash */
        execl(xensimd_path, xensimd_path, "--dir", sim_dir, "--domain", "1:16",
              "--domain", "2:16", "--ready-fd", fd, NULL);
        _exit(127);
    }
    close(ready[1]);
    g_assert_cmpint(read(ready[0], buf, sizeof(buf) - 1), >, 0);
    g_assert(g_str_has_prefix(buf, "ready"));
    close(ready[0]);
    setenv("XENSIM_DIR", sim_dir, 1);
}

static void stop_daemon(void)
{
    kill(daemon_pid, SIGTERM);
    waitpid(daemon_pid, NULL, 0);
}

/* The guest: share pages and a port, report them, wait to be told to go. */
static void guest_main(int report_fd, int quit_fd)
{
    xengntshr_handle *shr;
    xenevtchn_handle *xce;
    GuestInfo info;
    void *rw, *revoked;
    char c;

    setenv("XENSIM_DOMID", "1", 1);
    shr = xengntshr_open(NULL, 0);
    xce = xenevtchn_open(NULL, 0);
    if (!shr || !xce) {
        _exit(2);
    }
    rw = xengntshr_share_pages(shr, 0, 1, &info.rw_ref, 1);
    if (!rw ||
        !xengntshr_share_pages(shr, 0, 1, &info.ro_ref, 0) ||
        !xengntshr_share_pages(shr, 2, 1, &info.other_ref, 1)) {
        _exit(3);
    }
    revoked = xengntshr_share_pages(shr, 0, 1, &info.revoked_ref, 1);
    xengntshr_unshare(shr, revoked, 1);
    info.port = xenevtchn_bind_unbound_port(xce, 0);
    info.port_for_other = xenevtchn_bind_unbound_port(xce, 2);
    if (write(report_fd, &info, sizeof(info)) != sizeof(info)) {
        _exit(4);
    }
    /* Stay alive (with our grants and ports) until the parent is done. */
    if (read(quit_fd, &c, 1) < 0) {
        _exit(5);
    }
    _exit(0);
}

static GuestInfo guest;
static pid_t guest_pid;
static int guest_quit;

static void start_guest(void)
{
    int report[2], quit[2];

    g_assert(pipe(report) == 0 && pipe(quit) == 0);
    guest_pid = fork();
    if (guest_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        close(report[0]);
        close(quit[1]);
        guest_main(report[1], quit[0]);
    }
    close(report[1]);
    close(quit[0]);
    g_assert_cmpint(read(report[0], &guest, sizeof(guest)), ==,
                    sizeof(guest));
    close(report[0]);
    guest_quit = quit[1];
    setenv("XENSIM_DOMID", "0", 1);
}

static int16_t copy_one(uint32_t ref, bool to_guest, void *buf, size_t len)
{
    xengnttab_handle *xgt = xengnttab_open(NULL, 0);
    xengnttab_grant_copy_segment_t seg = { .len = len };

    g_assert_nonnull(xgt);
    if (to_guest) {
        seg.flags = GNTCOPY_dest_gref;
        seg.dest.foreign.ref = ref;
        seg.dest.foreign.domid = 1;
        seg.source.virt = buf;
    } else {
        seg.flags = GNTCOPY_source_gref;
        seg.source.foreign.ref = ref;
        seg.source.foreign.domid = 1;
        seg.dest.virt = buf;
    }
    g_assert_cmpint(xengnttab_grant_copy(xgt, 1, &seg), ==, 0);
    xengnttab_close(xgt);
    return seg.status;
}

static void test_copy_granted(void)
{
    char buf[16] = "";

    g_assert_cmpint(copy_one(guest.rw_ref, true, "dom0!", 6), ==,
                    GNTST_okay);
    g_assert_cmpint(copy_one(guest.rw_ref, false, buf, 6), ==, GNTST_okay);
    g_assert_cmpstr(buf, ==, "dom0!");
}

static void test_copy_refused(void)
{
    char buf[64] = "";

    /* a grant for another domain */
    g_assert_cmpint(copy_one(guest.other_ref, false, buf, 8), !=,
                    GNTST_okay);
    /* a read-only grant written to; reading it is fine */
    g_assert_cmpint(copy_one(guest.ro_ref, true, buf, 8), ==,
                    GNTST_permission_denied);
    g_assert_cmpint(copy_one(guest.ro_ref, false, buf, 8), ==, GNTST_okay);
    /* a revoked grant, a reference beyond the table, a reserved one */
    g_assert_cmpint(copy_one(guest.revoked_ref, false, buf, 8), !=,
                    GNTST_okay);
    g_assert_cmpint(copy_one(1u << 30, false, buf, 8), ==,
                    GNTST_bad_gntref);
    g_assert_cmpint(copy_one(3, false, buf, 8), !=, GNTST_okay);
    /* past the end of the page */
    {
        xengnttab_handle *xgt = xengnttab_open(NULL, 0);
        xengnttab_grant_copy_segment_t seg = {
            .flags = GNTCOPY_source_gref, .len = 64,
            .source.foreign = { .ref = guest.rw_ref, .offset = 4090,
                                .domid = 1 },
            .dest.virt = buf,
        };

        g_assert_cmpint(xengnttab_grant_copy(xgt, 1, &seg), ==, 0);
        g_assert_cmpint(seg.status, ==, GNTST_bad_copy_arg);
        xengnttab_close(xgt);
    }
}

static void test_map(void)
{
    xengnttab_handle *xgt = xengnttab_open(NULL, 0);
    uint32_t refs[2] = { guest.rw_ref, guest.ro_ref };
    char *p;

    g_assert_cmpint(copy_one(guest.rw_ref, true, "mapped", 7), ==,
                    GNTST_okay);
    /* read-write map of a read-only grant: refused */
    g_assert_null(xengnttab_map_domain_grant_refs(xgt, 2, 1, refs,
                                                  PROT_READ | PROT_WRITE));
    p = xengnttab_map_domain_grant_refs(xgt, 2, 1, refs, PROT_READ);
    g_assert_nonnull(p);
    g_assert_cmpstr(p, ==, "mapped");
    g_assert_cmpint(xengnttab_unmap(xgt, p, 2), ==, 0);
    /* not ours */
    g_assert_null(xengnttab_map_grant_ref(xgt, 1, guest.other_ref,
                                          PROT_READ));
    xengnttab_close(xgt);
}

static void test_evtchn(void)
{
    xenevtchn_handle *xce = xenevtchn_open(NULL, 0);
    int port;

    g_assert_nonnull(xce);
    /* a port left unbound for another domain cannot be bound by us */
    g_assert_cmpint(xenevtchn_bind_interdomain(xce, 1,
                                               guest.port_for_other), <, 0);
    /* a port that does not exist */
    g_assert_cmpint(xenevtchn_bind_interdomain(xce, 1, 999), <, 0);
    /* notifying a port we never bound fails */
    g_assert_cmpint(xenevtchn_notify(xce, 77), <, 0);
    port = xenevtchn_bind_interdomain(xce, 1, guest.port);
    g_assert_cmpint(port, >, 0);
    g_assert_cmpint(xenevtchn_notify(xce, port), ==, 0);
    /* bound once only */
    g_assert_cmpint(xenevtchn_bind_interdomain(xce, 1, guest.port), <, 0);
    g_assert_cmpint(xenevtchn_unbind(xce, port), ==, 0);
    /* closed: notify fails as on Xen */
    g_assert_cmpint(xenevtchn_notify(xce, port), <, 0);
    xenevtchn_close(xce);
}

/*
 * Without notifications, a handle has nothing pending and its fd does not
 * wake anyone (delivery itself is exercised by every integration test).
 * The fd blocks, as /dev/xen/evtchn does: xenevtchn_pending would wait;
 * made non-blocking, it answers EAGAIN.
 */
static void test_pending_empty(void)
{
    xenevtchn_handle *xce = xenevtchn_open(NULL, 0);
    int fd = xenevtchn_fd(xce);
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int flags = fcntl(fd, F_GETFL);

    g_assert_cmpint(flags & O_NONBLOCK, ==, 0);
    g_assert_cmpint(poll(&pfd, 1, 0), ==, 0);
    g_assert_cmpint(fcntl(fd, F_SETFL, flags | O_NONBLOCK), ==, 0);
    errno = 0;
    g_assert_cmpint(xenevtchn_pending(xce), <, 0);
    g_assert_cmpint(errno, ==, EAGAIN);
    xenevtchn_close(xce);
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    if (argc < 2) {
        fprintf(stderr, "usage: test-libxensim XENSIMD [--tap]\n");
        return 2;
    }
    xensimd_path = argv[1];
    start_daemon();
    start_guest();
    g_test_add_func("/libxensim/grant-copy/granted", test_copy_granted);
    g_test_add_func("/libxensim/grant-copy/refused", test_copy_refused);
    g_test_add_func("/libxensim/grant-map", test_map);
    g_test_add_func("/libxensim/evtchn/binding", test_evtchn);
    g_test_add_func("/libxensim/evtchn/pending-empty", test_pending_empty);
    ret = g_test_run();
    close(guest_quit);
    waitpid(guest_pid, NULL, 0);
    stop_daemon();
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", sim_dir);
    if (system(cmd) != 0) {
        ret = ret ? ret : 1;
    }
    return ret;
}
