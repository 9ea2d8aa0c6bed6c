/*
 * Tests for xensim's xenstored (tests/xensim/xenstored.c)
 *
 * The daemon runs in-process, in a temporary directory. Most tests drive it
 * through the real libxenstore (XENSTORED_PATH names the socket before
 * xs_open()), as QEMU and the toolstack will; the hostile cases use a raw
 * socket client that writes the wire protocol by hand.
 *
 * Nothing sleeps to synchronise: watch events are awaited with poll() and
 * a deadline, "no event arrived" is shown by an event that must come after
 * it on the same connection (events are delivered in order), and the
 * daemon's counters are read once the request that moved them was answered
 * (the one exception, a stall the daemon decides on its own, is polled for
 * with a deadline).
 *
 * Build and run, from the top of the tree:
 *
 *   mkdir -p build/xensim
 *   gcc -std=gnu11 -Wall -Wextra -O1 -g $(pkg-config --cflags glib-2.0) \
 *       tests/xensim/xenstored.c tests/xensim/test-xenstored.c \
 *       -o build/xensim/test-xenstored $(pkg-config --libs glib-2.0) \
 *       -lxenstore -lpthread
 *   build/xensim/test-xenstored --tap
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <xenstore.h>
#include <xen/io/xs_wire.h>

#include "xenstored.h"

#define TIMEOUT_MS 5000

typedef struct Fixture {
    char *dir;
    XsdServer *s;
    struct xs_handle *xs;       /* dom0, through libxenstore */
    GPtrArray *handles;         /* every xs_handle to close */
    GArray *fds;                /* every raw socket to close */
} Fixture;

/* ---- libxenstore helpers ---- */

static struct xs_handle *open_as(Fixture *f, unsigned int domid)
{
    char *path = xsd_socket_path(f->s, domid);
    struct xs_handle *h;

    setenv("XENSTORED_PATH", path, 1);
    h = xs_open(0);
    g_assert_nonnull(h);
    g_ptr_array_add(f->handles, h);
    g_free(path);
    return h;
}

static void fixture_setup(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    GError *gerr = NULL;
    char *err = NULL;

    f->dir = g_dir_make_tmp("xsd-test-XXXXXX", &gerr);
    g_assert_no_error(gerr);
    f->s = xsd_start(f->dir, &err);
    g_assert_null(err);
    g_assert_nonnull(f->s);
    f->handles = g_ptr_array_new();
    f->fds = g_array_new(false, false, sizeof(int));
    f->xs = open_as(f, 0);
}

static void fixture_teardown(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    guint i;

    for (i = 0; i < f->handles->len; i++) {
        xs_close(g_ptr_array_index(f->handles, i));
    }
    for (i = 0; i < f->fds->len; i++) {
        close(g_array_index(f->fds, int, i));
    }
    g_ptr_array_free(f->handles, true);
    g_array_free(f->fds, true);
    xsd_stop(f->s);
    /* The daemon removed its sockets: the directory must be empty */
    g_assert_cmpint(g_rmdir(f->dir), ==, 0);
    g_free(f->dir);
}

static void write_str(struct xs_handle *h, xs_transaction_t t,
                      const char *path, const char *value)
{
    g_assert_true(xs_write(h, t, path, value, strlen(value)));
}

static void assert_value(struct xs_handle *h, xs_transaction_t t,
                         const char *path, const char *expected)
{
    unsigned int len;
    char *value = xs_read(h, t, path, &len);

    g_assert_nonnull(value);
    g_assert_cmpuint(len, ==, strlen(expected));
    g_assert_cmpstr(value, ==, expected);
    free(value);
}

static void assert_read_fails(struct xs_handle *h, xs_transaction_t t,
                              const char *path, int err)
{
    unsigned int len;

    errno = 0;
    g_assert_null(xs_read(h, t, path, &len));
    g_assert_cmpint(errno, ==, err);
}

static void assert_write_fails(struct xs_handle *h, xs_transaction_t t,
                               const char *path, int err)
{
    errno = 0;
    g_assert_false(xs_write(h, t, path, "x", 1));
    g_assert_cmpint(errno, ==, err);
}

static void set_perms(struct xs_handle *h, const char *path,
                      const char *const *perms)
{
    struct xs_permissions p[16];
    unsigned int n;

    for (n = 0; perms[n]; n++) {
        g_assert_true(xs_strings_to_perms(&p[n], 1, perms[n]));
    }
    g_assert_true(xs_set_permissions(h, XBT_NULL, path, p, n));
}

/* The permission list as "n0,r5" */
static char *get_perms(struct xs_handle *h, const char *path)
{
    struct xs_permissions *p;
    unsigned int i, n;
    GString *str = g_string_new(NULL);

    p = xs_get_permissions(h, XBT_NULL, path, &n);
    g_assert_nonnull(p);
    for (i = 0; i < n; i++) {
        unsigned int rw = p[i].perms & (XS_PERM_READ | XS_PERM_WRITE);

        g_string_append_printf(str, "%s%c%u", i ? "," : "",
                               "nrwb"[(rw & XS_PERM_READ ? 1 : 0) |
                                      (rw & XS_PERM_WRITE ? 2 : 0)],
                               p[i].id);
    }
    free(p);
    return g_string_free(str, false);
}

static void assert_perms(struct xs_handle *h, const char *path,
                         const char *expected)
{
    char *perms = get_perms(h, path);

    g_assert_cmpstr(perms, ==, expected);
    g_free(perms);
}

static gint64 deadline_after(int ms)
{
    return g_get_monotonic_time() + (gint64)ms * 1000;
}

static int ms_left(gint64 deadline)
{
    gint64 left = (deadline - g_get_monotonic_time()) / 1000;

    return left > 0 ? (int)left : 0;
}

/* The next watch event, waiting at most TIMEOUT_MS; false if none came */
static bool next_event(struct xs_handle *h, char **path, char **token)
{
    gint64 deadline = deadline_after(TIMEOUT_MS);
    struct pollfd pfd = { .fd = xs_fileno(h), .events = POLLIN };

    for (;;) {
        char **ev = xs_check_watch(h);

        if (ev) {
            *path = g_strdup(ev[XS_WATCH_PATH]);
            *token = g_strdup(ev[XS_WATCH_TOKEN]);
            free(ev);
            return true;
        }
        g_assert_cmpint(errno, ==, EAGAIN);
        if (!ms_left(deadline)) {
            return false;
        }
        poll(&pfd, 1, ms_left(deadline));
    }
}

static void expect_event(struct xs_handle *h, const char *path,
                         const char *token)
{
    char *p = NULL, *t = NULL, *got, *want;

    g_assert_true(next_event(h, &p, &t));
    /* One comparison, so that a failure shows both halves */
    got = g_strdup_printf("%s %s", p, t);
    want = g_strdup_printf("%s %s", path, token);
    g_assert_cmpstr(got, ==, want);
    g_free(got);
    g_free(want);
    g_free(p);
    g_free(t);
}

static void watch(struct xs_handle *h, const char *path, const char *token)
{
    g_assert_true(xs_watch(h, path, token));
    expect_event(h, path, token);       /* fired once on registration */
}

/*
 * watcher has a watch with token "sync" on sync_path: dom0 writes it, and
 * that event must be the next one. Whatever an earlier change would have
 * fired had to come first, so this proves there was nothing.
 */
static void expect_no_event(Fixture *f, struct xs_handle *watcher,
                            const char *sync_path)
{
    static unsigned int n;
    char *value = g_strdup_printf("%u", ++n);

    write_str(f->xs, XBT_NULL, sync_path, value);
    expect_event(watcher, sync_path, "sync");
    g_free(value);
}

static XsdStats stats(Fixture *f)
{
    XsdStats st;

    xsd_get_stats(f->s, &st);
    return st;
}

/* ---- raw socket helpers ---- */

typedef struct RawMsg {
    struct xsd_sockmsg hdr;
    char body[XENSTORE_PAYLOAD_MAX + 1];
} RawMsg;

static int raw_connect(Fixture *f, unsigned int domid)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    char *path = xsd_socket_path(f->s, domid);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_assert_cmpint(fd, >=, 0);
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof(addr)),
                    ==, 0);
    g_array_append_val(f->fds, fd);
    g_free(path);
    return fd;
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t r = write(fd, p, len);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        g_assert_cmpint(r, >, 0);
        p += r;
        len -= r;
    }
}

static void raw_send(int fd, uint32_t type, uint32_t req_id, uint32_t tx_id,
                     const void *payload, size_t len)
{
    struct xsd_sockmsg hdr = {
        .type = type, .req_id = req_id, .tx_id = tx_id, .len = len,
    };

    write_all(fd, &hdr, sizeof(hdr));
    if (len) {
        write_all(fd, payload, len);
    }
}

/* Read len bytes by the deadline; false on EOF, reset or timeout */
static bool read_exact(int fd, void *buf, size_t len, gint64 deadline)
{
    char *p = buf;

    while (len) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        ssize_t r;

        if (poll(&pfd, 1, ms_left(deadline)) <= 0) {
            return false;
        }
        r = read(fd, p, len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return false;
        }
        p += r;
        len -= r;
    }
    return true;
}

static bool raw_recv(int fd, RawMsg *m)
{
    gint64 deadline = deadline_after(TIMEOUT_MS);

    if (!read_exact(fd, &m->hdr, sizeof(m->hdr), deadline)) {
        return false;
    }
    g_assert_cmpuint(m->hdr.len, <=, XENSTORE_PAYLOAD_MAX);
    if (!read_exact(fd, m->body, m->hdr.len, deadline)) {
        return false;
    }
    m->body[m->hdr.len] = '\0';
    return true;
}

/* One request and its reply (watch events on the way are skipped) */
static void raw_call(int fd, uint32_t type, uint32_t tx_id,
                     const void *payload, size_t len, RawMsg *reply)
{
    static uint32_t next_req_id = 0xbeef0000;
    uint32_t req_id = next_req_id++;

    raw_send(fd, type, req_id, tx_id, payload, len);
    do {
        g_assert_true(raw_recv(fd, reply));
    } while (reply->hdr.type == XS_WATCH_EVENT);
    /* Replies echo the request's ids */
    g_assert_cmpuint(reply->hdr.req_id, ==, req_id);
    g_assert_cmpuint(reply->hdr.tx_id, ==, tx_id);
}

static void raw_expect_error(int fd, uint32_t type, uint32_t tx_id,
                             const void *payload, size_t len,
                             const char *error)
{
    RawMsg m;

    raw_call(fd, type, tx_id, payload, len, &m);
    g_assert_cmpuint(m.hdr.type, ==, XS_ERROR);
    g_assert_cmpuint(m.hdr.len, ==, strlen(error) + 1);
    g_assert_cmpstr(m.body, ==, error);
}

static void raw_expect_reply(int fd, uint32_t type, uint32_t tx_id,
                             const void *payload, size_t len,
                             const void *expected, size_t expected_len)
{
    RawMsg m;

    raw_call(fd, type, tx_id, payload, len, &m);
    g_assert_cmpuint(m.hdr.type, ==, type);
    g_assert_cmpmem(m.body, m.hdr.len, expected, expected_len);
}

/* Payload literals: sizeof counts the implicit final NUL */
#define P(lit) (lit), sizeof(lit)

/* Has the daemon hung up? (EOF or reset within the deadline) */
static bool raw_closed_by_peer(int fd)
{
    gint64 deadline = deadline_after(TIMEOUT_MS);
    char buf[256];

    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        ssize_t r;

        if (poll(&pfd, 1, ms_left(deadline)) <= 0) {
            return false;
        }
        r = read(fd, buf, sizeof(buf));
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
            return true;
        }
    }
}

/* ---- basic store operations ---- */

static void test_read_write(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    static const char binary[] = { 'x', 0, 'y', 0, 'z' };
    unsigned int len;
    char *value;
    char big[4000];

    write_str(f->xs, XBT_NULL, "/a/b/c", "hello");
    assert_value(f->xs, XBT_NULL, "/a/b/c", "hello");
    /* Missing parents were created, empty */
    assert_value(f->xs, XBT_NULL, "/a/b", "");
    assert_value(f->xs, XBT_NULL, "/a", "");

    /* Values are bytes, NULs included */
    g_assert_true(xs_write(f->xs, XBT_NULL, "/bin", binary, sizeof(binary)));
    value = xs_read(f->xs, XBT_NULL, "/bin", &len);
    g_assert_cmpmem(value, len, binary, sizeof(binary));
    free(value);

    /* Overwrite, then with nothing */
    write_str(f->xs, XBT_NULL, "/a/b/c", "bye");
    assert_value(f->xs, XBT_NULL, "/a/b/c", "bye");
    write_str(f->xs, XBT_NULL, "/a/b/c", "");
    assert_value(f->xs, XBT_NULL, "/a/b/c", "");

    assert_read_fails(f->xs, XBT_NULL, "/nonexistent", ENOENT);
    assert_read_fails(f->xs, XBT_NULL, "/a/b/c/d", ENOENT);

    /* dom0's relative paths are under /local/domain/0 */
    write_str(f->xs, XBT_NULL, "rel/x", "r");
    assert_value(f->xs, XBT_NULL, "/local/domain/0/rel/x", "r");

    /* dom0 may write values as big as the payload allows */
    memset(big, 'v', sizeof(big));
    g_assert_true(xs_write(f->xs, XBT_NULL, "/big", big, sizeof(big)));
    value = xs_read(f->xs, XBT_NULL, "/big", &len);
    g_assert_cmpmem(value, len, big, sizeof(big));
    free(value);
}

static void test_mkdir_rm(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    unsigned int n, i;
    char **names;

    g_assert_true(xs_mkdir(f->xs, XBT_NULL, "/m/n"));
    assert_value(f->xs, XBT_NULL, "/m/n", "");
    write_str(f->xs, XBT_NULL, "/m/n", "keep");
    g_assert_true(xs_mkdir(f->xs, XBT_NULL, "/m/n"));  /* exists: fine */
    assert_value(f->xs, XBT_NULL, "/m/n", "keep");

    /* rm is recursive */
    write_str(f->xs, XBT_NULL, "/m/n/o/p", "1");
    write_str(f->xs, XBT_NULL, "/m/q", "2");
    g_assert_true(xs_rm(f->xs, XBT_NULL, "/m"));
    assert_read_fails(f->xs, XBT_NULL, "/m/n/o/p", ENOENT);
    assert_read_fails(f->xs, XBT_NULL, "/m/q", ENOENT);
    assert_read_fails(f->xs, XBT_NULL, "/m", ENOENT);
    names = xs_directory(f->xs, XBT_NULL, "/", &n);
    g_assert_nonnull(names);
    for (i = 0; i < n; i++) {
        g_assert_cmpstr(names[i], !=, "m");
    }
    free(names);

    /* Gone already is fine if the parent exists, ENOENT if not */
    g_assert_true(xs_rm(f->xs, XBT_NULL, "/m"));
    errno = 0;
    g_assert_false(xs_rm(f->xs, XBT_NULL, "/nope/deeper"));
    g_assert_cmpint(errno, ==, ENOENT);

    errno = 0;
    g_assert_false(xs_rm(f->xs, XBT_NULL, "/"));
    g_assert_cmpint(errno, ==, EINVAL);
}

static void test_directory(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    enum { BIG = 1500 };
    unsigned int n, i;
    char **names;
    bool *seen;
    uint64_t parts;

    for (i = 0; i < 5; i++) {
        char *path = g_strdup_printf("/d/x%u", i);

        write_str(f->xs, XBT_NULL, path, "");
        g_free(path);
    }
    names = xs_directory(f->xs, XBT_NULL, "/d", &n);
    g_assert_cmpuint(n, ==, 5);
    for (i = 0; i < 5; i++) {
        char *name = g_strdup_printf("x%u", i);

        g_assert_cmpstr(names[i], ==, name);    /* creation order */
        g_free(name);
    }
    free(names);

    names = xs_directory(f->xs, XBT_NULL, "/d/x0", &n);
    g_assert_nonnull(names);
    g_assert_cmpuint(n, ==, 0);
    free(names);

    errno = 0;
    g_assert_null(xs_directory(f->xs, XBT_NULL, "/nodir", &n));
    g_assert_cmpint(errno, ==, ENOENT);

    /*
     * 1500 names of 12 bytes do not fit one 4096-byte reply: XS_DIRECTORY
     * says E2BIG and libxenstore pages through XS_DIRECTORY_PART.
     */
    for (i = 0; i < BIG; i++) {
        char *path = g_strdup_printf("/big/child-%05u", i);

        write_str(f->xs, XBT_NULL, path, "");
        g_free(path);
    }
    parts = stats(f).requests_by_type[XS_DIRECTORY_PART];
    names = xs_directory(f->xs, XBT_NULL, "/big", &n);
    g_assert_nonnull(names);
    g_assert_cmpuint(n, ==, BIG);
    seen = g_new0(bool, BIG);
    for (i = 0; i < n; i++) {
        unsigned int k;

        g_assert_cmpint(sscanf(names[i], "child-%05u", &k), ==, 1);
        g_assert_cmpuint(k, <, BIG);
        g_assert_false(seen[k]);
        seen[k] = true;
    }
    g_free(seen);
    free(names);
    g_assert_cmpuint(stats(f).requests_by_type[XS_DIRECTORY_PART] - parts,
                     >=, 5);
}

static void test_directory_part_raw(Fixture *f,
                                    gconstpointer data G_GNUC_UNUSED)
{
    int fd = raw_connect(f, 0);
    RawMsg m;
    char *gen;

    write_str(f->xs, XBT_NULL, "/dp/a", "");
    write_str(f->xs, XBT_NULL, "/dp/bb", "");

    /* Whole listing in one part: gen, names, and the closing empty name */
    raw_call(fd, XS_DIRECTORY_PART, 0, P("/dp\0" "0"), &m);
    g_assert_cmpuint(m.hdr.type, ==, XS_DIRECTORY_PART);
    gen = g_strdup(m.body);
    g_assert_cmpuint(strlen(gen), >, 0);
    g_assert_cmpmem(m.body + strlen(gen) + 1, m.hdr.len - strlen(gen) - 1,
                    "a\0bb\0", 6);

    /* From the second name, and from past the end */
    raw_call(fd, XS_DIRECTORY_PART, 0, P("/dp\0" "2"), &m);
    g_assert_cmpstr(m.body, ==, gen);
    g_assert_cmpmem(m.body + strlen(gen) + 1, m.hdr.len - strlen(gen) - 1,
                    "bb\0", 4);
    raw_call(fd, XS_DIRECTORY_PART, 0, P("/dp\0" "99"), &m);
    g_assert_cmpmem(m.body + strlen(gen) + 1, m.hdr.len - strlen(gen) - 1,
                    "", 1);

    /* A change shows in the generation */
    write_str(f->xs, XBT_NULL, "/dp/c", "");
    raw_call(fd, XS_DIRECTORY_PART, 0, P("/dp\0" "0"), &m);
    g_assert_cmpstr(m.body, !=, gen);
    g_free(gen);

    raw_expect_error(fd, XS_DIRECTORY_PART, 0, P("/dp"), "EINVAL");
    raw_expect_error(fd, XS_DIRECTORY_PART, 0, P("/dp\0" "x"), "EINVAL");
    raw_expect_error(fd, XS_DIRECTORY_PART, 0, P("/none\0" "0"), "ENOENT");
}

static void test_paths(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    static const char *const bad[] = {
        "/a/", "//a", "/a//b", "/a b", "/a.b", "/a:b", "", "@foo",
        "@introduceDomain",
    };
    char *path, *name;
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(bad); i++) {
        assert_write_fails(f->xs, XBT_NULL, bad[i], EINVAL);
        assert_read_fails(f->xs, XBT_NULL, bad[i], EINVAL);
    }

    /* Past /local/domain/<N>/ a path may have 2048 bytes, no more */
    name = g_strnfill(2048, 'a');
    path = g_strdup_printf("/local/domain/0/%s", name);
    write_str(f->xs, XBT_NULL, path, "ok");
    g_free(path);
    path = g_strdup_printf("/local/domain/0/%sa", name);
    assert_write_fails(f->xs, XBT_NULL, path, EINVAL);
    g_free(path);
    /* Elsewhere the whole path counts */
    path = g_strdup_printf("/%s", name);
    assert_write_fails(f->xs, XBT_NULL, path, EINVAL);
    g_free(path);
    g_free(name);
}

/* ---- permissions ---- */

static void test_perms_domu(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    struct xs_handle *h5;
    char *path;
    unsigned int n;

    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    g_assert_cmpint(xsd_add_domain(f->s, 6), ==, 0);
    h5 = open_as(f, 5);

    path = xs_get_domain_path(h5, 5);
    g_assert_cmpstr(path, ==, "/local/domain/5");
    free(path);
    assert_perms(f->xs, "/local/domain/5", "n5");

    /* A domain's relative paths are its own, and it owns what it makes */
    write_str(h5, XBT_NULL, "data/x", "mine");
    assert_value(f->xs, XBT_NULL, "/local/domain/5/data/x", "mine");
    assert_perms(h5, "data/x", "n5");
    assert_perms(h5, "data", "n5");

    /* dom0's nodes: hidden, and nothing is learnt of what is below */
    write_str(f->xs, XBT_NULL, "/secret", "s");
    assert_perms(f->xs, "/secret", "n0");
    assert_read_fails(h5, XBT_NULL, "/secret", EACCES);
    assert_read_fails(h5, XBT_NULL, "/secret/nope", EACCES);
    assert_read_fails(h5, XBT_NULL, "/local/domain/5/nope", ENOENT);
    assert_write_fails(h5, XBT_NULL, "/secret", EACCES);
    assert_write_fails(h5, XBT_NULL, "/secret/new", EACCES);
    errno = 0;
    g_assert_false(xs_rm(h5, XBT_NULL, "/secret"));
    g_assert_cmpint(errno, ==, EACCES);
    errno = 0;
    g_assert_null(xs_directory(h5, XBT_NULL, "/local/domain", &n));
    g_assert_cmpint(errno, ==, EACCES);
    assert_read_fails(h5, XBT_NULL, "/local/domain/6", EACCES);

    /* Read access granted: read yes, write no */
    write_str(f->xs, XBT_NULL, "/shared", "v");
    set_perms(f->xs, "/shared", (const char *[]){ "n0", "r5", NULL });
    assert_value(h5, XBT_NULL, "/shared", "v");
    assert_write_fails(h5, XBT_NULL, "/shared", EACCES);
    assert_write_fails(h5, XBT_NULL, "/shared/new", EACCES);
    assert_read_fails(h5, XBT_NULL, "/shared/new", ENOENT);

    /* Both: a node it creates there inherits the list, with it as owner */
    set_perms(f->xs, "/shared", (const char *[]){ "n0", "b5", NULL });
    write_str(h5, XBT_NULL, "/shared/new", "n");
    assert_perms(f->xs, "/shared/new", "n5,b5");
    /* dom0's children inherit the list as it is */
    write_str(f->xs, XBT_NULL, "/shared/dom0child", "d");
    assert_perms(f->xs, "/shared/dom0child", "n0,b5");

    /* Only the owner sets permissions, and may not give the node away */
    set_perms(h5, "data/x", (const char *[]){ "n5", "r6", NULL });
    assert_perms(f->xs, "/local/domain/5/data/x", "n5,r6");
    {
        struct xs_permissions p[1];

        g_assert_true(xs_strings_to_perms(p, 1, "n6"));
        errno = 0;
        g_assert_false(xs_set_permissions(h5, XBT_NULL, "data/x", p, 1));
        g_assert_cmpint(errno, ==, EPERM);
        g_assert_true(xs_strings_to_perms(p, 1, "b5"));
        errno = 0;
        g_assert_false(xs_set_permissions(h5, XBT_NULL, "/shared", p, 1));
        g_assert_cmpint(errno, ==, EACCES);
    }

    /* dom0 reads and writes anything */
    assert_value(f->xs, XBT_NULL, "/local/domain/5/data/x", "mine");
    write_str(f->xs, XBT_NULL, "/local/domain/5/data/x", "dom0 was here");

    /* Privileged requests */
    errno = 0;
    g_assert_false(xs_is_domain_introduced(h5, 5));
    g_assert_cmpint(errno, ==, EACCES);
    errno = 0;
    g_assert_false(xs_introduce_domain(h5, 9, 1, 1));
    g_assert_cmpint(errno, ==, EACCES);
    errno = 0;
    g_assert_null(xs_control_command(h5, "help", NULL, 0));
    g_assert_cmpint(errno, ==, EACCES);
}

static void test_perms_special(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    struct xs_handle *h5;

    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    h5 = open_as(f, 5);
    assert_perms(f->xs, "@releaseDomain", "n0");
    errno = 0;
    g_assert_null(xs_get_permissions(h5, XBT_NULL, "@releaseDomain",
                                     &(unsigned int){ 0 }));
    g_assert_cmpint(errno, ==, EACCES);
    set_perms(f->xs, "@releaseDomain", (const char *[]){ "n0", "r5", NULL });
    assert_perms(h5, "@releaseDomain", "n0,r5");
}

static void test_quota(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    struct xs_handle *h5;
    char value[XSD_MAX_VALUE_LEN + 1];
    struct xs_permissions p[XSD_MAX_PERMS + 1];
    unsigned int i;
    bool failed = false;

    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    h5 = open_as(f, 5);

    memset(value, 'q', sizeof(value));
    g_assert_true(xs_write(h5, XBT_NULL, "v", value, XSD_MAX_VALUE_LEN));
    errno = 0;
    g_assert_false(xs_write(h5, XBT_NULL, "v", value, sizeof(value)));
    g_assert_cmpint(errno, ==, ENOSPC);

    /* Nodes per domain: /local/domain/5, v and q are its own already */
    for (i = 0; i < XSD_MAX_NODES_PER_DOMAIN; i++) {
        char *path = g_strdup_printf("q/%u", i);
        bool ok = xs_write(h5, XBT_NULL, path, "", 0);

        g_free(path);
        if (!ok) {
            g_assert_cmpint(errno, ==, ENOSPC);
            failed = true;
            break;
        }
    }
    g_assert_true(failed);
    g_assert_cmpuint(i, ==, XSD_MAX_NODES_PER_DOMAIN - 3);
    /* dom0 is not bound */
    write_str(f->xs, XBT_NULL, "/local/domain/5/q/by-dom0", "");
    /* Freed nodes can be made again */
    g_assert_true(xs_rm(h5, XBT_NULL, "q"));
    write_str(h5, XBT_NULL, "q/again", "");

    /* Permission lists */
    for (i = 0; i < G_N_ELEMENTS(p); i++) {
        p[i].id = i == 0 ? 5 : 100 + i;
        p[i].perms = XS_PERM_READ;
    }
    g_assert_true(xs_set_permissions(h5, XBT_NULL, "v", p, XSD_MAX_PERMS));
    errno = 0;
    g_assert_false(xs_set_permissions(h5, XBT_NULL, "v", p, G_N_ELEMENTS(p)));
    g_assert_cmpint(errno, ==, ENOSPC);
}

/* ---- watches ---- */

static void test_watch(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    struct xs_handle *h = f->xs;

    watch(h, "/sync", "sync");
    watch(h, "/w", "tok");

    /* The node or anything below, at any depth */
    write_str(h, XBT_NULL, "/w", "1");
    expect_event(h, "/w", "tok");
    write_str(h, XBT_NULL, "/w/a/b", "2");
    expect_event(h, "/w/a/b", "tok");
    g_assert_true(xs_mkdir(h, XBT_NULL, "/w/m"));
    expect_event(h, "/w/m", "tok");
    set_perms(h, "/w/m", (const char *[]){ "n0", "r3", NULL });
    expect_event(h, "/w/m", "tok");
    write_str(h, XBT_NULL, "/wx", "not below /w");
    expect_no_event(f, h, "/sync");

    /* rm: a watch below fires for its node, watches above for the top */
    watch(h, "/w/a/b", "exact");
    g_assert_true(xs_rm(h, XBT_NULL, "/w"));
    expect_event(h, "/w/a/b", "exact");
    expect_event(h, "/w", "tok");
    expect_no_event(f, h, "/sync");

    /* Duplicates, unwatch */
    errno = 0;
    g_assert_false(xs_watch(h, "/w", "tok"));
    g_assert_cmpint(errno, ==, EEXIST);
    g_assert_true(xs_unwatch(h, "/w", "tok"));
    write_str(h, XBT_NULL, "/w/z", "3");
    expect_no_event(f, h, "/sync");
    errno = 0;
    g_assert_false(xs_unwatch(h, "/w", "tok"));
    g_assert_cmpint(errno, ==, ENOENT);

    /* Same path, two tokens: two events */
    watch(h, "/two", "t1");
    watch(h, "/two", "t2");
    write_str(h, XBT_NULL, "/two", "");
    expect_event(h, "/two", "t1");
    expect_event(h, "/two", "t2");

    /* Another connection hears about it too */
    {
        struct xs_handle *other = open_as(f, 0);

        watch(other, "/two", "o");
        write_str(h, XBT_NULL, "/two/x", "");
        expect_event(other, "/two/x", "o");
        expect_event(h, "/two/x", "t1");
        expect_event(h, "/two/x", "t2");
    }
}

static void test_watch_domu(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    struct xs_handle *h5;

    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    h5 = open_as(f, 5);
    watch(h5, "/local/domain/5/sync", "sync");

    /* Relative watches get relative paths */
    watch(h5, "data", "rel");
    write_str(f->xs, XBT_NULL, "/local/domain/5/data/k", "v");
    expect_event(h5, "data/k", "rel");

    /* Unreadable nodes: the first event only, never their changes */
    write_str(f->xs, XBT_NULL, "/secret", "s");
    watch(h5, "/secret", "sec");
    write_str(f->xs, XBT_NULL, "/secret/x", "hidden");
    expect_no_event(f, h5, "/local/domain/5/sync");

    /* Readable once granted, and told of the grant */
    set_perms(f->xs, "/secret", (const char *[]){ "n0", "r5", NULL });
    expect_event(h5, "/secret", "sec");
    write_str(f->xs, XBT_NULL, "/secret/y", "inherits r5");
    expect_event(h5, "/secret/y", "sec");
    /* A readable parent is enough (as in xenstored) */
    set_perms(f->xs, "/secret/y", (const char *[]){ "n0", NULL });
    expect_event(h5, "/secret/y", "sec");   /* could read it before */
    write_str(f->xs, XBT_NULL, "/secret/y", "parent readable");
    expect_event(h5, "/secret/y", "sec");
    /* Told when losing access, not after */
    set_perms(f->xs, "/secret", (const char *[]){ "n0", NULL });
    expect_event(h5, "/secret", "sec");
    write_str(f->xs, XBT_NULL, "/secret", "hidden again");
    expect_no_event(f, h5, "/local/domain/5/sync");

    /* Removal of a readable node is heard */
    write_str(f->xs, XBT_NULL, "/local/domain/5/data/gone", "");
    expect_event(h5, "data/gone", "rel");
    g_assert_true(xs_rm(f->xs, XBT_NULL, "/local/domain/5/data/gone"));
    expect_event(h5, "data/gone", "rel");
}

static void test_watch_special(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    struct xs_handle *h5;

    watch(f->xs, "/sync", "sync");
    watch(f->xs, "@introduceDomain", "intro");
    watch(f->xs, "@releaseDomain", "release");
    watch(f->xs, "/local/domain", "ld");
    watch(f->xs, "/", "root");

    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    expect_event(f->xs, "/local/domain/5", "ld");
    expect_event(f->xs, "/local/domain/5", "root");
    expect_event(f->xs, "@introduceDomain", "intro");
    h5 = open_as(f, 5);
    watch(h5, "/local/domain/5/sync", "sync");
    /* Registering is always answered; the events are dom0's business */
    watch(h5, "@releaseDomain", "r5");

    g_assert_cmpint(xsd_add_domain(f->s, 7), ==, 0);
    expect_event(f->xs, "/local/domain/7", "ld");
    expect_event(f->xs, "/local/domain/7", "root");
    expect_event(f->xs, "@introduceDomain", "intro");
    write_str(f->xs, XBT_NULL, "/local/domain/7/x", "");
    expect_event(f->xs, "/local/domain/7/x", "ld");
    expect_event(f->xs, "/local/domain/7/x", "root");
    g_assert_true(xs_is_domain_introduced(f->xs, 7));

    g_assert_cmpint(xsd_remove_domain(f->s, 7), ==, 0);
    expect_event(f->xs, "/local/domain/7", "ld");
    expect_event(f->xs, "/local/domain/7", "root");
    expect_event(f->xs, "@releaseDomain", "release");
    expect_no_event(f, h5, "/local/domain/5/sync");
    expect_event(f->xs, "/local/domain/5/sync", "ld");  /* dom0 sees all */
    expect_event(f->xs, "/local/domain/5/sync", "root");
    g_assert_false(xs_is_domain_introduced(f->xs, 7));
    g_assert_true(xs_is_domain_introduced(f->xs, 5));
    g_assert_true(xs_is_domain_introduced(f->xs, 0));

    /* Granted read on the special node, a domain hears it */
    set_perms(f->xs, "@releaseDomain", (const char *[]){ "n0", "r5", NULL });
    expect_event(f->xs, "@releaseDomain", "release");
    expect_event(h5, "@releaseDomain", "r5");
    g_assert_cmpint(xsd_add_domain(f->s, 8), ==, 0);
    g_assert_cmpint(xsd_remove_domain(f->s, 8), ==, 0);
    expect_event(h5, "@releaseDomain", "r5");
}

/* ---- transactions ---- */

static void test_transaction(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    struct xs_handle *h = f->xs, *other = open_as(f, 0);
    xs_transaction_t t;
    unsigned int n;
    char **names;

    /* Commit: invisible outside until then, visible inside */
    t = xs_transaction_start(h);
    g_assert_cmpuint(t, !=, XBT_NULL);
    write_str(h, t, "/t/a", "1");
    assert_read_fails(other, XBT_NULL, "/t/a", ENOENT);
    assert_value(h, t, "/t/a", "1");
    names = xs_directory(h, t, "/t", &n);
    g_assert_cmpuint(n, ==, 1);
    g_assert_cmpstr(names[0], ==, "a");
    free(names);
    g_assert_true(xs_transaction_end(h, t, false));
    assert_value(other, XBT_NULL, "/t/a", "1");

    /* Abort */
    t = xs_transaction_start(h);
    write_str(h, t, "/t/b", "2");
    g_assert_true(xs_rm(h, t, "/t/a"));
    assert_read_fails(h, t, "/t/a", ENOENT);
    g_assert_true(xs_transaction_end(h, t, true));
    assert_read_fails(h, XBT_NULL, "/t/b", ENOENT);
    assert_value(h, XBT_NULL, "/t/a", "1");

    /* Isolation: what the transaction read does not move under it */
    write_str(h, XBT_NULL, "/iso", "a");
    t = xs_transaction_start(h);
    assert_value(h, t, "/iso", "a");
    write_str(other, XBT_NULL, "/iso", "b");
    assert_value(h, t, "/iso", "a");
    /* ... and since it moved, the commit fails and changes nothing */
    write_str(h, t, "/t/c", "3");
    errno = 0;
    g_assert_false(xs_transaction_end(h, t, false));
    g_assert_cmpint(errno, ==, EAGAIN);
    assert_read_fails(h, XBT_NULL, "/t/c", ENOENT);
    /* The transaction is over either way */
    assert_read_fails(h, t, "/t/a", ENOENT);

    /* A node the transaction found missing, created meanwhile */
    t = xs_transaction_start(h);
    assert_read_fails(h, t, "/appears", ENOENT);
    write_str(other, XBT_NULL, "/appears", "x");
    write_str(h, t, "/t/d", "4");
    errno = 0;
    g_assert_false(xs_transaction_end(h, t, false));
    g_assert_cmpint(errno, ==, EAGAIN);

    /* Writes by others to nodes it never touched do not matter */
    t = xs_transaction_start(h);
    write_str(h, t, "/t/e", "5");
    write_str(other, XBT_NULL, "/unrelated", "x");
    g_assert_true(xs_transaction_end(h, t, false));
    assert_value(h, XBT_NULL, "/t/e", "5");

    /* Recursive rm inside */
    write_str(h, XBT_NULL, "/r/x/y", "deep");
    t = xs_transaction_start(h);
    g_assert_true(xs_rm(h, t, "/r"));
    assert_read_fails(h, t, "/r/x/y", ENOENT);
    assert_value(other, XBT_NULL, "/r/x/y", "deep");
    g_assert_true(xs_transaction_end(h, t, false));
    assert_read_fails(other, XBT_NULL, "/r/x/y", ENOENT);
    assert_read_fails(other, XBT_NULL, "/r", ENOENT);

    g_assert_cmpuint(stats(f).transaction_conflicts, ==, 2);
}

static void test_transaction_watch(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    struct xs_handle *h = f->xs, *w = open_as(f, 0);
    xs_transaction_t t;

    /* Existing already, so that syncing touches no node "/" */
    write_str(h, XBT_NULL, "/sync", "0");
    watch(w, "/sync", "sync");
    watch(w, "/tw", "tw");
    t = xs_transaction_start(h);
    write_str(h, t, "/tw/a", "1");
    write_str(h, t, "/tw/a", "2");
    expect_no_event(f, w, "/sync");         /* nothing before commit */
    g_assert_true(xs_transaction_end(h, t, false));
    expect_event(w, "/tw/a", "tw");         /* once per node */
    expect_no_event(f, w, "/sync");

    /* Aborted: never */
    t = xs_transaction_start(h);
    write_str(h, t, "/tw/b", "1");
    g_assert_true(xs_transaction_end(h, t, true));
    expect_no_event(f, w, "/sync");

    /* rm inside fires on commit, descendants' exact watches too */
    watch(w, "/tw/a", "exact");
    t = xs_transaction_start(h);
    g_assert_true(xs_rm(h, t, "/tw"));
    g_assert_true(xs_transaction_end(h, t, false));
    /* In the order the transaction first touched the nodes */
    expect_event(w, "/tw", "tw");
    expect_event(w, "/tw/a", "exact");
}

static void test_transaction_raw(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    int fd = raw_connect(f, 0);
    RawMsg m;
    uint32_t t;
    unsigned int i;

    raw_call(fd, XS_TRANSACTION_START, 0, P(""), &m);
    g_assert_cmpuint(m.hdr.type, ==, XS_TRANSACTION_START);
    t = strtoul(m.body, NULL, 10);
    g_assert_cmpuint(t, !=, 0);
    g_assert_cmpuint(m.hdr.len, ==, strlen(m.body) + 1);

    raw_expect_error(fd, XS_READ, t + 100, P("/"), "ENOENT");
    raw_expect_error(fd, XS_TRANSACTION_START, t, P(""), "EBUSY");
    raw_expect_error(fd, XS_TRANSACTION_END, t, P("X"), "EINVAL");
    raw_expect_error(fd, XS_TRANSACTION_END, 0, P("T"), "ENOENT");
    raw_expect_reply(fd, XS_WRITE, t, "/raw\0v", 6, P("OK"));
    raw_expect_reply(fd, XS_TRANSACTION_END, t, P("T"), P("OK"));
    assert_value(f->xs, XBT_NULL, "/raw", "v");
    raw_expect_error(fd, XS_TRANSACTION_END, t, P("T"), "ENOENT");

    /* At most XSD_MAX_TRANSACTIONS_PER_CONN open at once */
    for (i = 0; i < XSD_MAX_TRANSACTIONS_PER_CONN; i++) {
        raw_call(fd, XS_TRANSACTION_START, 0, P(""), &m);
        g_assert_cmpuint(m.hdr.type, ==, XS_TRANSACTION_START);
    }
    raw_expect_error(fd, XS_TRANSACTION_START, 0, P(""), "ENOSPC");
    g_assert_cmpuint(stats(f).transactions, ==,
                     XSD_MAX_TRANSACTIONS_PER_CONN);
    /* XS_RESET_WATCHES ends them, and the watches go */
    raw_expect_reply(fd, XS_WATCH, 0, P("/rw\0" "tok"), P("OK"));
    raw_expect_reply(fd, XS_RESET_WATCHES, 0, NULL, 0, P("OK"));
    raw_expect_error(fd, XS_UNWATCH, 0, P("/rw\0" "tok"), "ENOENT");
    g_assert_cmpuint(stats(f).transactions, ==, 0);
    raw_call(fd, XS_TRANSACTION_START, 0, P(""), &m);
    g_assert_cmpuint(m.hdr.type, ==, XS_TRANSACTION_START);
}

static void test_transaction_domu_limit(Fixture *f,
                                        gconstpointer data G_GNUC_UNUSED)
{
    struct xs_handle *h5;
    xs_transaction_t t;
    unsigned int i;
    bool refused = false;

    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    h5 = open_as(f, 5);
    t = xs_transaction_start(h5);
    g_assert_cmpuint(t, !=, XBT_NULL);
    for (i = 0; i < XSD_MAX_TRANSACTION_NODES + 10; i++) {
        char *path = g_strdup_printf("n%u", i);
        unsigned int len;
        void *value;

        errno = 0;
        value = xs_read(h5, t, path, &len);
        g_free(path);
        g_assert_null(value);
        if (errno == ENOSPC) {
            refused = true;
            break;
        }
        g_assert_cmpint(errno, ==, ENOENT);
    }
    g_assert_true(refused);
    errno = 0;
    g_assert_false(xs_transaction_end(h5, t, false));
    g_assert_cmpint(errno, ==, ENOSPC);
    write_str(h5, XBT_NULL, "after", "fine");
}

/* ---- domains ---- */

static void test_domains(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    struct xs_handle *h5, *h9;
    char *path, *sock;
    struct stat st;

    path = xs_get_domain_path(f->xs, 3);
    g_assert_cmpstr(path, ==, "/local/domain/3");
    free(path);
    g_assert_true(xs_is_domain_introduced(f->xs, 0));
    g_assert_false(xs_is_domain_introduced(f->xs, 9));

    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, -EEXIST);
    g_assert_cmpint(xsd_add_domain(f->s, 0), ==, -EINVAL);
    g_assert_cmpint(xsd_add_domain(f->s, 0x7FF0), ==, -EINVAL);
    g_assert_cmpint(xsd_remove_domain(f->s, 4), ==, -ENOENT);
    g_assert_cmpint(xsd_remove_domain(f->s, 0), ==, -EINVAL);

    /* The toolstack's way in: XS_INTRODUCE opens the domain's socket */
    g_assert_true(xs_introduce_domain(f->xs, 9, 1234, 5));
    g_assert_true(xs_introduce_domain(f->xs, 9, 1234, 5));
    g_assert_true(xs_is_domain_introduced(f->xs, 9));
    g_assert_true(xs_resume_domain(f->xs, 9));
    errno = 0;
    g_assert_false(xs_resume_domain(f->xs, 10));
    g_assert_cmpint(errno, ==, ENOENT);
    assert_perms(f->xs, "/local/domain/9", "n9");

    /* A device model domain acts for its target */
    h9 = open_as(f, 9);
    write_str(f->xs, XBT_NULL, "/local/domain/5/private", "p");
    assert_read_fails(h9, XBT_NULL, "/local/domain/5/private", EACCES);
    g_assert_true(xs_set_target(f->xs, 9, 5));
    assert_value(h9, XBT_NULL, "/local/domain/5/private", "p");
    errno = 0;
    g_assert_false(xs_set_target(f->xs, 9, 11));
    g_assert_cmpint(errno, ==, ENOENT);

    g_assert_true(xs_release_domain(f->xs, 9));
    g_assert_false(xs_is_domain_introduced(f->xs, 9));
    assert_read_fails(f->xs, XBT_NULL, "/local/domain/9", ENOENT);
    errno = 0;
    g_assert_false(xs_release_domain(f->xs, 9));
    g_assert_cmpint(errno, ==, ENOENT);
    errno = 0;
    g_assert_false(xs_release_domain(f->xs, 0));
    g_assert_cmpint(errno, ==, EINVAL);

    /* XS_CONTROL */
    {
        char *help = xs_control_command(f->xs, "help", NULL, 0);

        g_assert_nonnull(help);
        g_assert_nonnull(strstr(help, "check"));
        free(help);
        errno = 0;
        g_assert_null(xs_control_command(f->xs, "no-such", NULL, 0));
        g_assert_cmpint(errno, ==, EINVAL);
    }

    /* A domain's connection, its nodes, and their fate when it goes */
    h5 = open_as(f, 5);
    write_str(h5, XBT_NULL, "x", "5 was here");
    assert_perms(f->xs, "/local/domain/5/x", "n5");
    write_str(f->xs, XBT_NULL, "/given", "");
    set_perms(f->xs, "/given", (const char *[]){ "n5", NULL });
    write_str(f->xs, XBT_NULL, "/acl", "");
    set_perms(f->xs, "/acl", (const char *[]){ "n0", "r7", "b5", NULL });

    g_assert_cmpint(xsd_remove_domain(f->s, 5), ==, 0);
    /* Hung up on: libxenstore sees the socket closed */
    errno = 0;
    g_assert_null(xs_read(h5, XBT_NULL, "x", &(unsigned int){ 0 }));
    g_assert_cmpint(errno, !=, 0);
    assert_read_fails(f->xs, XBT_NULL, "/local/domain/5", ENOENT);
    assert_perms(f->xs, "/given", "n0");
    assert_perms(f->xs, "/acl", "n0,r7");
    sock = xsd_socket_path(f->s, 5);
    g_assert_cmpint(stat(sock, &st), ==, -1);
    g_free(sock);

    /* The domid again: a new domain that inherits nothing */
    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    h5 = open_as(f, 5);
    assert_read_fails(h5, XBT_NULL, "/given", EACCES);
    assert_read_fails(h5, XBT_NULL, "x", ENOENT);
    write_str(h5, XBT_NULL, "x", "new");
}

/* ---- hostile clients ---- */

static void test_oversized_header(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    unsigned int domid;

    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    for (domid = 0; domid <= 5; domid += 5) {
        int fd = raw_connect(f, domid);
        struct xsd_sockmsg hdr = {
            .type = XS_READ, .req_id = 1, .len = XENSTORE_PAYLOAD_MAX + 1,
        };

        write_all(fd, &hdr, sizeof(hdr));
        g_assert_true(raw_closed_by_peer(fd));
    }
    g_assert_cmpuint(stats(f).protocol_violations, ==, 2);

    /* A full-size payload is fine */
    {
        int fd = raw_connect(f, 0);
        char *payload = g_malloc(XENSTORE_PAYLOAD_MAX);

        memset(payload, 'a', XENSTORE_PAYLOAD_MAX);
        payload[0] = '/';
        payload[XENSTORE_PAYLOAD_MAX - 1] = '\0';
        raw_expect_error(fd, XS_READ, 0, payload, XENSTORE_PAYLOAD_MAX,
                         "EINVAL");         /* too long a path */
        g_free(payload);
    }
    assert_value(f->xs, XBT_NULL, "/local/domain/5", "");
}

static void test_malformed(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    int fd = raw_connect(f, 0);
    RawMsg m;

    raw_expect_error(fd, XS_READ, 0, "abc", 3, "EINVAL");   /* no NUL */
    raw_expect_error(fd, XS_READ, 0, NULL, 0, "EINVAL");
    raw_expect_error(fd, XS_READ, 0, P("/a\0/b"), "EINVAL"); /* two args */
    raw_expect_error(fd, XS_READ, 0, P("relative\0"), "EINVAL");
    raw_expect_error(fd, XS_WRITE, 0, "/a", 2, "EINVAL");
    raw_expect_error(fd, XS_MKDIR, 0, "/a", 2, "EINVAL");
    raw_expect_error(fd, XS_RM, 0, NULL, 0, "EINVAL");
    raw_expect_error(fd, 99, 0, P("/"), "ENOSYS");
    raw_expect_error(fd, 20, 0, P("/"), "ENOSYS");          /* RESTRICT */
    raw_expect_error(fd, XS_WATCH_EVENT, 0, P("/\0t"), "ENOSYS");
    raw_expect_error(fd, XS_ERROR, 0, P("EINVAL"), "ENOSYS");
    raw_expect_error(fd, XS_WATCH, 0, P("/a"), "EINVAL");
    raw_expect_error(fd, XS_WATCH, 0, P("/a\0t\0x"), "EINVAL");
    raw_expect_error(fd, XS_WATCH, 0, "/a\0t", 4, "EINVAL");
    raw_expect_error(fd, XS_WATCH, 0, P("/a/\0t"), "EINVAL");
    raw_expect_error(fd, XS_SET_PERMS, 0, P("/"), "EINVAL");
    raw_expect_error(fd, XS_SET_PERMS, 0, P("/\0x5"), "EINVAL");
    raw_expect_error(fd, XS_SET_PERMS, 0, P("/\0r"), "EINVAL");
    raw_expect_error(fd, XS_SET_PERMS, 0, P("/\0r99999"), "EINVAL");
    raw_expect_error(fd, XS_SET_PERMS, 0, P("/\0r-1"), "EINVAL");
    raw_expect_error(fd, XS_GET_DOMAIN_PATH, 0, P("abc"), "EINVAL");
    raw_expect_error(fd, XS_GET_DOMAIN_PATH, 0, P("-1"), "EINVAL");
    raw_expect_error(fd, XS_GET_DOMAIN_PATH, 0, P(""), "EINVAL");
    raw_expect_error(fd, XS_INTRODUCE, 0, P("5\0" "1"), "EINVAL");
    raw_expect_error(fd, XS_INTRODUCE, 0, P("5\0" "1\0" "0"), "EINVAL");
    raw_expect_error(fd, XS_INTRODUCE, 0, P("32752\0" "1\0" "1"), "EINVAL");
    raw_expect_reply(fd, XS_INTRODUCE, 0, P("0\0" "1\0" "1"), P("OK"));
    raw_expect_error(fd, XS_RELEASE, 0, P("x"), "EINVAL");
    raw_expect_error(fd, XS_CONTROL, 0, NULL, 0, "EINVAL");
    raw_expect_reply(fd, XS_GET_DOMAIN_PATH, 0, P("12"),
                     P("/local/domain/12"));
    raw_expect_reply(fd, XS_IS_DOMAIN_INTRODUCED, 0, P("12"), P("F"));
    raw_expect_reply(fd, XS_WRITE, 0, "/ok\0", 4, P("OK"));
    raw_expect_reply(fd, XS_READ, 0, P("/ok"), NULL, 0);
    raw_expect_reply(fd, XS_GET_PERMS, 0, P("/ok"), P("n0"));

    /* The connection survived all that */
    raw_call(fd, XS_DIRECTORY, 0, P("/"), &m);
    g_assert_cmpuint(m.hdr.type, ==, XS_DIRECTORY);
}

/*
 * Random requests from a domain: each must get exactly one answer carrying
 * its req_id, and the daemon must go on serving everybody.
 */
static void test_garbage(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    static const char alphabet[] = "/\0\0ab0159@-_ \xff" "rnbw";
    int fd;
    unsigned int i, j;
    XsdStats before, after;

    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    fd = raw_connect(f, 5);
    before = stats(f);
    for (i = 0; i < 3000; i++) {
        char payload[256];
        unsigned int len = g_test_rand_int_range(0, sizeof(payload));
        uint32_t type = g_test_rand_int_range(0, XS_TYPE_COUNT + 3);
        uint32_t tx_id = g_test_rand_bit() ? 0 : g_test_rand_int_range(0, 5);
        RawMsg m;

        for (j = 0; j < len; j++) {
            payload[j] = g_test_rand_bit()
                ? alphabet[g_test_rand_int_range(0, sizeof(alphabet) - 1)]
                : (char)g_test_rand_int_range(0, 256);
        }
        raw_call(fd, type, tx_id, payload, len, &m);
        g_assert_true(m.hdr.type == type || m.hdr.type == XS_ERROR);
    }
    after = stats(f);
    g_assert_cmpuint(after.requests - before.requests, ==, 3000);
    g_assert_cmpuint(after.protocol_violations, ==, 0);
    assert_value(f->xs, XBT_NULL, "/local/domain/5", "");
    write_str(f->xs, XBT_NULL, "/still", "serving");
}

/*
 * A client watches a tree and never reads its socket while dom0 makes
 * thousands of changes there: its queue stops at the bound, the rest is
 * counted as dropped, and what was queued arrives intact once it reads.
 * data: the client's domid (0 has larger bounds than a guest).
 */
static void test_slow_reader(Fixture *f, gconstpointer data)
{
    unsigned int domid = GPOINTER_TO_UINT(data);
    unsigned int writes = domid ? 4000 : 7000;
    size_t token_len = domid ? 1000 : 3000;
    uint64_t max_out = domid ? XSD_MAX_OUT_BYTES_DOMU : XSD_MAX_OUT_BYTES_DOM0;
    uint64_t max_events = domid ? XSD_MAX_PENDING_EVENTS
                                : XSD_MAX_PENDING_EVENTS_DOM0;
    char *top = g_strdup_printf("/local/domain/%u/slow", domid);
    char *token = g_strnfill(token_len, 'T');
    char *payload = g_strdup_printf("%s%c%s", top, '\0', token);
    unsigned int i, received = 0, expected;
    int fd;
    XsdStats st;
    RawMsg m;

    if (domid) {
        g_assert_cmpint(xsd_add_domain(f->s, domid), ==, 0);
    }
    fd = raw_connect(f, domid);
    raw_expect_reply(fd, XS_WATCH, 0, payload,
                     strlen(top) + 1 + token_len + 1, P("OK"));

    /* Each write is answered after its events were queued or dropped */
    for (i = 0; i < writes; i++) {
        char *path = g_strdup_printf("%s/%u", top, i);

        write_str(f->xs, XBT_NULL, path, "x");
        g_free(path);
    }
    st = stats(f);
    g_test_message("queued %" PRIu64 ", dropped %" PRIu64 ", peak %" PRIu64
                   " events / %" PRIu64 " bytes", st.watch_events_queued,
                   st.watch_events_dropped, st.pending_events_peak,
                   st.out_bytes_peak);
    g_assert_cmpuint(st.watch_events_dropped, >, 0);
    g_assert_cmpuint(st.pending_events_peak, <=, max_events);
    g_assert_cmpuint(st.out_bytes_peak, <=, max_out);
    g_assert_cmpuint(st.out_bytes, <=, max_out);
    g_assert_cmpuint(st.watch_events_queued + st.watch_events_dropped, ==,
                     writes + 1);

    /* The rest of the world was served meanwhile; now read it all */
    expected = st.watch_events_queued;
    while (received < expected) {
        g_assert_true(raw_recv(fd, &m));
        g_assert_cmpuint(m.hdr.type, ==, XS_WATCH_EVENT);
        g_assert_cmpstr(m.body + strlen(m.body) + 1, ==, token);
        received++;
    }
    /* Caught up: events flow again */
    write_str(f->xs, XBT_NULL, top, "again");
    g_assert_true(raw_recv(fd, &m));
    g_assert_cmpuint(m.hdr.type, ==, XS_WATCH_EVENT);
    g_assert_cmpstr(m.body, ==, top);
    g_assert_cmpuint(stats(f).out_bytes, ==, 0);
    g_free(top);
    g_free(token);
    g_free(payload);
}

/*
 * Changes to one node while the client is not reading: one event waits for
 * it, however many changes; a different node or token still gets its own.
 */
static void test_event_merge(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    int fd;
    unsigned int i, fills = 0, same = 0, other = 0;
    XsdStats st;
    RawMsg m;

    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    fd = raw_connect(f, 5);
    raw_expect_reply(fd, XS_WATCH, 0, P("/local/domain/5\0" "t"), P("OK"));

    /* Fill the socket until events wait in the daemon */
    do {
        char *path = g_strdup_printf("/local/domain/5/fill/%u", fills++);

        write_str(f->xs, XBT_NULL, path, "");
        g_free(path);
        st = stats(f);
        g_assert_cmpuint(fills, <, 100000);
    } while (!st.out_bytes);

    for (i = 0; i < 1000; i++) {
        write_str(f->xs, XBT_NULL, "/local/domain/5/same", "v");
    }
    write_str(f->xs, XBT_NULL, "/local/domain/5/other", "v");
    st = stats(f);
    g_assert_cmpuint(st.watch_events_merged, ==, 999);
    g_assert_cmpuint(st.watch_events_dropped, ==, 0);

    /* initial + fills + same + other, in order */
    for (i = 0; i < 1 + fills + 2; i++) {
        g_assert_true(raw_recv(fd, &m));
        g_assert_cmpuint(m.hdr.type, ==, XS_WATCH_EVENT);
        if (!strcmp(m.body, "/local/domain/5/same")) {
            same++;
            g_assert_cmpuint(other, ==, 0);
        } else if (!strcmp(m.body, "/local/domain/5/other")) {
            other++;
        }
    }
    g_assert_cmpuint(same, ==, 1);
    g_assert_cmpuint(other, ==, 1);
}

/*
 * A client that sends requests and never reads the replies stops being
 * read once its backlog is full; the daemon keeps serving others, and the
 * client gets every reply, in order, once it reads.
 */
static void test_reply_backpressure(Fixture *f,
                                    gconstpointer data G_GNUC_UNUSED)
{
    enum { MAX_REQUESTS = 200000 };
    struct xsd_sockmsg hdr = { .type = XS_GET_DOMAIN_PATH, .len = 3 };
    char msg[sizeof(hdr) + 3];
    size_t msg_done = 0;
    unsigned int sent = 0, received = 0;
    int fd = raw_connect(f, 0);
    gint64 deadline;
    RawMsg m;
    XsdStats st;

    g_assert_cmpint(fcntl(fd, F_SETFL, O_NONBLOCK), ==, 0);
    /*
     * Pump requests. When the socket is full, either the daemon is busy
     * (room appears soon) or it stopped reading us: the counter tells.
     */
    deadline = deadline_after(2 * TIMEOUT_MS);
    for (;;) {
        ssize_t r;

        if (!msg_done) {
            hdr.req_id = sent;
            memcpy(msg, &hdr, sizeof(hdr));
            memcpy(msg + sizeof(hdr), "42", 3);
        }
        r = send(fd, msg + msg_done, sizeof(msg) - msg_done, MSG_NOSIGNAL);
        if (r < 0) {
            struct pollfd pfd = { .fd = fd, .events = POLLOUT };

            g_assert_cmpint(errno, ==, EAGAIN);
            st = stats(f);
            if (st.input_stalls) {
                break;
            }
            g_assert_cmpint(ms_left(deadline), >, 0);
            poll(&pfd, 1, 10);
            continue;
        }
        msg_done += r;
        if (msg_done == sizeof(msg)) {
            msg_done = 0;
            sent++;
        }
        g_assert_cmpuint(sent, <, MAX_REQUESTS);
    }
    g_assert_cmpuint(st.out_bytes_peak, <=, XSD_MAX_OUT_BYTES_DOM0);
    /* Others are served meanwhile */
    write_str(f->xs, XBT_NULL, "/meanwhile", "yes");
    assert_value(f->xs, XBT_NULL, "/meanwhile", "yes");

    /* Read everything, sending the unfinished request as room appears */
    deadline = deadline_after(4 * TIMEOUT_MS);
    while (received < sent + (msg_done ? 1 : 0)) {
        struct pollfd pfd = {
            .fd = fd, .events = POLLIN | (msg_done ? POLLOUT : 0),
        };

        g_assert_cmpint(poll(&pfd, 1, ms_left(deadline)), ==, 1);
        if ((pfd.revents & POLLOUT) && msg_done) {
            ssize_t r = send(fd, msg + msg_done, sizeof(msg) - msg_done,
                             MSG_NOSIGNAL);

            if (r > 0) {
                msg_done += r;
                if (msg_done == sizeof(msg)) {
                    msg_done = 0;
                    sent++;
                }
            }
        }
        if (pfd.revents & POLLIN) {
            g_assert_true(read_exact(fd, &m.hdr, sizeof(m.hdr), deadline));
            g_assert_true(read_exact(fd, m.body, m.hdr.len, deadline));
            g_assert_cmpuint(m.hdr.type, ==, XS_GET_DOMAIN_PATH);
            g_assert_cmpuint(m.hdr.req_id, ==, received);
            g_assert_cmpmem(m.body, m.hdr.len, "/local/domain/42", 17);
            received++;
        }
    }
    g_assert_cmpuint(received, ==, sent);
}

static void test_limits(Fixture *f, gconstpointer data G_GNUC_UNUSED)
{
    unsigned int i;
    int fds[XSD_MAX_CONNS_PER_DOMAIN + 1];
    RawMsg m;

    /* Watches per connection */
    for (i = 0; i < XSD_MAX_WATCHES_PER_CONN; i++) {
        char *token = g_strdup_printf("t%u", i);

        g_assert_true(xs_watch(f->xs, "/lim", token));
        g_free(token);
    }
    errno = 0;
    g_assert_false(xs_watch(f->xs, "/lim", "one-too-many"));
    g_assert_cmpint(errno, ==, E2BIG);
    g_assert_cmpuint(stats(f).watches, ==, XSD_MAX_WATCHES_PER_CONN);

    /* Connections per domain */
    g_assert_cmpint(xsd_add_domain(f->s, 5), ==, 0);
    for (i = 0; i < G_N_ELEMENTS(fds); i++) {
        fds[i] = raw_connect(f, 5);
    }
    /* The ones accepted answer; the one over the limit is hung up on */
    for (i = 0; i < XSD_MAX_CONNS_PER_DOMAIN; i++) {
        raw_call(fds[i], XS_GET_DOMAIN_PATH, 0, P("5"), &m);
        g_assert_cmpuint(m.hdr.type, ==, XS_GET_DOMAIN_PATH);
    }
    g_assert_true(raw_closed_by_peer(fds[XSD_MAX_CONNS_PER_DOMAIN]));
    g_assert_cmpuint(stats(f).connections_rejected, ==, 1);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    g_test_init(&argc, &argv, NULL);

#define ADD(name, fn) \
    g_test_add("/xenstored/" name, Fixture, NULL, fixture_setup, fn, \
               fixture_teardown)
    ADD("store/read-write", test_read_write);
    ADD("store/mkdir-rm", test_mkdir_rm);
    ADD("store/directory", test_directory);
    ADD("store/directory-part", test_directory_part_raw);
    ADD("store/paths", test_paths);
    ADD("perms/domu", test_perms_domu);
    ADD("perms/special", test_perms_special);
    ADD("perms/quota", test_quota);
    ADD("watch/basic", test_watch);
    ADD("watch/domu", test_watch_domu);
    ADD("watch/special", test_watch_special);
    ADD("transaction/basic", test_transaction);
    ADD("transaction/watch", test_transaction_watch);
    ADD("transaction/raw", test_transaction_raw);
    ADD("transaction/domu-limit", test_transaction_domu_limit);
    ADD("domain/lifecycle", test_domains);
    ADD("hostile/oversized-header", test_oversized_header);
    ADD("hostile/malformed", test_malformed);
    ADD("hostile/garbage", test_garbage);
    g_test_add("/xenstored/hostile/slow-reader/domu", Fixture,
               GUINT_TO_POINTER(5), fixture_setup, test_slow_reader,
               fixture_teardown);
    g_test_add("/xenstored/hostile/slow-reader/dom0", Fixture,
               GUINT_TO_POINTER(0), fixture_setup, test_slow_reader,
               fixture_teardown);
    ADD("hostile/event-merge", test_event_merge);
    ADD("hostile/reply-backpressure", test_reply_backpressure);
    ADD("hostile/limits", test_limits);
#undef ADD

    return g_test_run();
}
