/*
 * xbverify: verified block I/O for the real-Xen bench.
 *
 * Every 512-byte sector written carries its own byte offset on the disk,
 * a generation number, a run id and a checksum, so a read that returns a
 * misplaced block (another offset's data), a stale one (an older
 * generation), a zeroed or a torn/corrupt one is caught and named.
 *
 *   xbverify write  DEV START LEN GEN [options]   write the pattern
 *   xbverify verify DEV START LEN GEN [options]   read it back, compare
 *   xbverify suite  DEV START LEN GEN [options]   the whole verified-I/O check:
 *        write with rotating sizes (4 KiB..1 MiB) and offsets, verify with
 *        other sizes, overwrite every third 64 KiB cell with GEN+1, fsync,
 *        flush and drop caches, verify through the page cache and again
 *        with O_DIRECT
 *   xbverify zero   DEV START LEN                 is the range all zeros?
 *   xbverify rofail DEV                           a write must be refused
 *   xbverify flush  DEV                           fsync + BLKFLSBUF must work
 *
 * START and LEN take K/M/G suffixes; LEN "end" means up to the end of DEV.
 * Options: -r RUNID (hex), -j JOBS (processes, each pinned to a CPU so that
 * every blk-mq hardware queue gets traffic), -q DEPTH (asynchronous
 * requests in flight per job, Linux AIO), -b (buffered, no O_DIRECT: for
 * image files on file systems without O_DIRECT), -t SECS (deadline for any
 * one I/O completion).
 *
 * Built static on the host (gcc -static) and run in the domU and dom0.
 * Exit status: 0 success, 1 verification or I/O failure, 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SECTOR      512
#define MAGIC       0x5846594952455642ULL /* "BVERIFYX" little-endian */
#define CELL        (64 * 1024)           /* overwrite grid of the suite */
#define MAX_REPORT  8                     /* errors printed per pass */

struct hdr {                 /* the first 32 bytes of every sector */
    uint64_t magic;
    uint64_t offset;         /* byte offset of this sector on the disk */
    uint64_t gen;
    uint64_t run;
};

static const char *dev;
static uint64_t run_id;
static int jobs = 1, depth = 8, buffered, io_timeout = 30;
static const char *prog = "xbverify";

/* Sizes a pass rotates through: 4 KiB to 1 MiB, some not powers of two,
 * so requests straddle each other's boundaries and vary in segment count. */
static const uint32_t sizes[] = {
    4096, 65536, 8192, 1048576, 12288, 131072, 28672, 524288, 4096, 262144,
    61440, 16384,
};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t fnv64(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    while (n--) {
        h ^= *b++;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Fill one sector for (offset, gen): header, pseudo-random body seeded by
 * the header, checksum over everything before it in the last 8 bytes. */
static void fill_sector(uint8_t *s, uint64_t off, uint64_t gen)
{
    struct hdr h = { MAGIC, off, gen, run_id };
    uint64_t seed = off ^ (gen << 48) ^ (run_id << 20), v;
    memcpy(s, &h, sizeof(h));
    for (size_t i = sizeof(h); i < SECTOR - 8; i += 8) {
        v = splitmix(&seed);
        memcpy(s + i, &v, 8);
    }
    v = fnv64(s, SECTOR - 8);
    memcpy(s + SECTOR - 8, &v, 8);
}

/* Expected generation of the sector at byte offset off.  gen2 != 0 means
 * every third CELL (index % 3 == 1) holds gen2 (the suite's overwrite). */
static uint64_t want_gen(uint64_t off, uint64_t gen, uint64_t gen2)
{
    if (gen2 && (off / CELL) % 3 == 1)
        return gen2;
    return gen;
}

struct errs {
    uint64_t n;
};

static int all_zero(const uint8_t *s)
{
    for (int i = 0; i < SECTOR; i++)
        if (s[i])
            return 0;
    return 1;
}

/* Check one sector; print what is wrong with it (first few only). */
static int check_sector(const uint8_t *s, uint64_t off, uint64_t want,
                        struct errs *e, const char *what)
{
    struct hdr h;
    uint64_t sum;
    char why[160];

    memcpy(&h, s, sizeof(h));
    memcpy(&sum, s + SECTOR - 8, 8);
    if (h.magic == MAGIC && h.offset == off && h.gen == want &&
        h.run == run_id && sum == fnv64(s, SECTOR - 8)) {
        uint8_t ref[SECTOR];
        fill_sector(ref, off, want);
        if (!memcmp(ref, s, SECTOR))
            return 0;
        snprintf(why, sizeof(why), "body differs with a valid checksum");
    } else if (all_zero(s)) {
        snprintf(why, sizeof(why), "zeros");
    } else if (h.magic != MAGIC) {
        snprintf(why, sizeof(why), "no pattern (garbage %016" PRIx64 ")",
                 h.magic);
    } else if (sum != fnv64(s, SECTOR - 8)) {
        snprintf(why, sizeof(why), "corrupt (checksum), header offset %"
                 PRIu64 " gen %" PRIu64, h.offset, h.gen);
    } else if (h.run != run_id) {
        snprintf(why, sizeof(why), "from another run (%" PRIx64 ")", h.run);
    } else if (h.offset != off) {
        snprintf(why, sizeof(why), "misplaced: holds offset %" PRIu64
                 " (gen %" PRIu64 ")", h.offset, h.gen);
    } else {
        snprintf(why, sizeof(why), "stale: gen %" PRIu64 ", want %" PRIu64,
                 h.gen, want);
    }
    if (e->n++ < MAX_REPORT)
        fprintf(stderr, "%s: %s %s: offset %" PRIu64 ": %s\n", prog, dev,
                what, off, why);
    return 1;
}

/* ---- Linux AIO through raw system calls (no libaio in a static build) ---- */

static long io_setup_(unsigned n, aio_context_t *c)
{
    return syscall(SYS_io_setup, n, c);
}
static long io_destroy_(aio_context_t c) { return syscall(SYS_io_destroy, c); }
static long io_submit_(aio_context_t c, long n, struct iocb **p)
{
    return syscall(SYS_io_submit, c, n, p);
}
static long io_getevents_(aio_context_t c, long mn, long mx,
                          struct io_event *ev, struct timespec *t)
{
    return syscall(SYS_io_getevents, c, mn, mx, ev, t);
}

struct slot {
    struct iocb cb;
    uint8_t *buf;
    uint64_t off;
    uint32_t len;
    int busy;
};

enum op { OP_WRITE, OP_READ };

struct extent {
    uint64_t off;
    uint32_t len;
};

/* The extents of a pass over [start, start+len): chunks of rotating sizes
 * beginning at size index rot. */
static struct extent *plan_rotating(uint64_t start, uint64_t len,
                                    unsigned rot, size_t *n)
{
    size_t cap = len / 4096 + 2, k = 0;
    struct extent *x = malloc(cap * sizeof(*x));
    if (!x)
        die("out of memory");
    for (uint64_t pos = start; pos < start + len; k++) {
        uint32_t l = sizes[rot++ % NSIZES];
        if (l > start + len - pos)
            l = start + len - pos;
        x[k].off = pos;
        x[k].len = l;
        pos += l;
    }
    *n = k;
    return x;
}

/* The suite's overwrite: every third CELL of [start, start+len), in pieces
 * of 4 KiB to 64 KiB. */
static struct extent *plan_overwrite(uint64_t start, uint64_t len,
                                     unsigned rot, size_t *n)
{
    static const uint32_t sub[] = { 4096, 8192, 16384, 32768, 65536 };
    size_t cap = len / 4096 + 2, k = 0;
    struct extent *x = malloc(cap * sizeof(*x));
    if (!x)
        die("out of memory");
    for (uint64_t c = (start + CELL - 1) / CELL; (c + 1) * CELL <= start + len;
         c++) {
        if (c % 3 != 1)
            continue;
        uint32_t piece = sub[rot++ % 5];
        for (uint64_t o = c * CELL; o < (c + 1) * CELL; o += piece, k++) {
            x[k].off = o;
            x[k].len = piece;
        }
    }
    *n = k;
    return x;
}

/* Issue the extents, at most `depth` in flight.  Writes fill the pattern
 * (generation per want_gen); reads check it.  Returns the number of bad
 * sectors; dies on an I/O error or when nothing completes in io_timeout. */
static uint64_t pass(int fd, enum op op, const struct extent *x, size_t nx,
                     uint64_t gen, uint64_t gen2, const char *what)
{
    aio_context_t ctx = 0;
    struct slot *slots = calloc(depth, sizeof(*slots));
    struct iocb **cbs = calloc(depth, sizeof(*cbs));
    struct io_event *ev = calloc(depth, sizeof(*ev));
    struct errs e = { 0 };
    size_t next = 0;
    int inflight = 0;

    if (!slots || !cbs || !ev || io_setup_(depth, &ctx) < 0)
        die("io_setup: %s", strerror(errno));
    for (int i = 0; i < depth; i++)
        if (posix_memalign((void **)&slots[i].buf, 4096, 1048576))
            die("out of memory");

    while (next < nx || inflight) {
        int n = 0;
        for (int i = 0; i < depth && next < nx; i++) {
            struct slot *s = &slots[i];
            if (s->busy)
                continue;
            s->off = x[next].off;
            s->len = x[next].len;
            next++;
            s->busy = 1;
            memset(&s->cb, 0, sizeof(s->cb));
            s->cb.aio_data = i;
            s->cb.aio_fildes = fd;
            s->cb.aio_lio_opcode = op == OP_WRITE ? IOCB_CMD_PWRITE
                                                  : IOCB_CMD_PREAD;
            s->cb.aio_buf = (uintptr_t)s->buf;
            s->cb.aio_nbytes = s->len;
            s->cb.aio_offset = s->off;
            if (op == OP_WRITE)
                for (uint32_t o = 0; o < s->len; o += SECTOR)
                    fill_sector(s->buf + o, s->off + o,
                                want_gen(s->off + o, gen, gen2));
            else
                memset(s->buf, 0xa5, s->len); /* no stale buffer can pass */
            cbs[n++] = &s->cb;
        }
        if (n) {
            long r = io_submit_(ctx, n, cbs);
            if (r != n)
                die("%s: io_submit: %s", dev,
                    r < 0 ? strerror(errno) : "short submit");
            inflight += n;
        }
        struct timespec t = { io_timeout, 0 };
        long got = io_getevents_(ctx, 1, depth, ev, &t);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            die("io_getevents: %s", strerror(errno));
        if (got == 0)
            die("%s: %s: no I/O completed in %d s (%d in flight)", dev,
                what, io_timeout, inflight);
        for (long k = 0; k < got; k++) {
            struct slot *s = &slots[ev[k].data];
            if (ev[k].res != (int64_t)s->len)
                die("%s: %s of %u bytes at %" PRIu64 " failed: %s", dev,
                    op == OP_WRITE ? "write" : "read", s->len, s->off,
                    (int64_t)ev[k].res < 0 ? strerror(-ev[k].res)
                                           : "short transfer");
            if (op == OP_READ)
                for (uint32_t o = 0; o < s->len; o += SECTOR)
                    check_sector(s->buf + o, s->off + o,
                                 want_gen(s->off + o, gen, gen2), &e, what);
            s->busy = 0;
            inflight--;
        }
    }
    io_destroy_(ctx);
    for (int i = 0; i < depth; i++)
        free(slots[i].buf);
    free(slots);
    free(cbs);
    free(ev);
    return e.n;
}

/* Buffered (page cache) read of the range in 1 MiB preads. */
static uint64_t cached_read(int fd, uint64_t start, uint64_t len,
                            uint64_t gen, uint64_t gen2, const char *what)
{
    static uint8_t buf[1048576] __attribute__((aligned(4096)));
    struct errs e = { 0 };
    for (uint64_t pos = start; pos < start + len;) {
        size_t l = sizeof(buf);
        if (l > start + len - pos)
            l = start + len - pos;
        ssize_t r = pread(fd, buf, l, pos);
        if (r != (ssize_t)l)
            die("%s: buffered read at %" PRIu64 ": %s", dev, pos,
                r < 0 ? strerror(errno) : "short read");
        for (size_t o = 0; o < l; o += SECTOR)
            check_sector(buf + o, pos + o, want_gen(pos + o, gen, gen2), &e,
                         what);
        pos += l;
    }
    return e.n;
}

static int open_dev(int write)
{
    int fl = (write ? O_RDWR : O_RDONLY) | (buffered ? 0 : O_DIRECT);
    int fd = open(dev, fl);
    if (fd < 0)
        die("open %s: %s", dev, strerror(errno));
    return fd;
}

static uint64_t dev_size(int fd)
{
    struct stat st;
    uint64_t sz = 0;
    if (fstat(fd, &st) < 0)
        die("stat %s: %s", dev, strerror(errno));
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
            die("BLKGETSIZE64 %s: %s", dev, strerror(errno));
        return sz;
    }
    return st.st_size;
}

/* Push dirty data out and make the next reads come from the device. */
static void flush_and_drop(int fd)
{
    struct stat st;
    if (fsync(fd) < 0)
        die("fsync %s: %s", dev, strerror(errno));
    if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode) &&
        ioctl(fd, BLKFLSBUF, 0) < 0)
        die("BLKFLSBUF %s: %s", dev, strerror(errno));
    int d = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (d >= 0) {
        if (write(d, "3\n", 2) != 2)
            fprintf(stderr, "%s: drop_caches: %s\n", prog, strerror(errno));
        close(d);
    }
}

static uint64_t parse_size(const char *s)
{
    char *end;
    uint64_t v = strtoull(s, &end, 0);
    switch (*end) {
    case 'G': case 'g': v <<= 10; /* fall through */
    case 'M': case 'm': v <<= 10; /* fall through */
    case 'K': case 'k': v <<= 10; end++; break;
    case 0: break;
    default: fprintf(stderr, "%s: bad size '%s'\n", prog, s); exit(2);
    }
    return v;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Run fn over [start, start+len) split into `jobs` CELL-aligned slices, one
 * forked process per slice pinned to CPU i (blk-mq maps a submitting CPU to
 * a hardware queue, so each queue gets work).  Returns bad-sector count. */
typedef uint64_t (*slice_fn)(int fd, uint64_t start, uint64_t len, int idx);

static uint64_t in_jobs(slice_fn fn, int write, uint64_t start, uint64_t len)
{
    uint64_t per = (len / jobs + CELL - 1) / CELL * CELL, bad = 0;
    pid_t pids[64];
    int n = 0;

    if (jobs == 1) {
        int fd = open_dev(write);
        bad = fn(fd, start, len, 0);
        close(fd);
        return bad;
    }
    for (int i = 0; i < jobs && (uint64_t)i * per < len; i++, n++) {
        uint64_t s = start + i * per, l = per;
        if (s + l > start + len)
            l = start + len - s;
        pids[i] = fork();
        if (pids[i] < 0)
            die("fork: %s", strerror(errno));
        if (pids[i] == 0) {
            cpu_set_t set;
            long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
            CPU_ZERO(&set);
            CPU_SET(i % (ncpu > 0 ? ncpu : 1), &set);
            sched_setaffinity(0, sizeof(set), &set); /* best effort */
            int fd = open_dev(write);
            uint64_t b = fn(fd, s, l, i);
            close(fd);
            _exit(b ? 1 : 0);
        }
    }
    for (int i = 0; i < n; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) ||
            WEXITSTATUS(st))
            bad++;
    }
    return bad;
}

static uint64_t g_gen, g_gen2;
static unsigned g_rot;
static const char *g_what;

static uint64_t sl_rotating(int fd, uint64_t s, uint64_t l, int i, enum op op)
{
    size_t n;
    struct extent *x = plan_rotating(s, l, g_rot + i, &n);
    uint64_t bad = pass(fd, op, x, n, g_gen, g_gen2, g_what);
    free(x);
    return bad;
}
static uint64_t sl_write(int fd, uint64_t s, uint64_t l, int i)
{
    return sl_rotating(fd, s, l, i, OP_WRITE);
}
static uint64_t sl_read(int fd, uint64_t s, uint64_t l, int i)
{
    return sl_rotating(fd, s, l, i, OP_READ);
}
static uint64_t sl_overwrite(int fd, uint64_t s, uint64_t l, int i)
{
    size_t n;
    struct extent *x = plan_overwrite(s, l, i, &n);
    uint64_t bad = pass(fd, OP_WRITE, x, n, g_gen, g_gen2, g_what);
    free(x);
    return bad;
}

static int cmd_suite(uint64_t start, uint64_t len, uint64_t gen)
{
    uint64_t bad;
    double t0 = now();

    start = start / CELL * CELL;   /* the overwrite grid needs alignment */
    len = len / CELL * CELL;
    if (!len)
        die("%s: range too small", dev);

    g_gen = gen, g_gen2 = 0, g_rot = 0, g_what = "write";
    if (in_jobs(sl_write, 1, start, len))
        die("%s: %s failed", dev, g_what);
    g_rot = 5, g_what = "direct read";
    bad = in_jobs(sl_read, 0, start, len);
    if (bad)
        die("%s: %s failed", dev, g_what);

    g_gen2 = gen + 1, g_what = "overwrite";
    if (in_jobs(sl_overwrite, 1, start, len))
        die("%s: %s failed", dev, g_what);

    int fd = open(dev, O_RDWR);
    if (fd < 0)
        die("open %s: %s", dev, strerror(errno));
    flush_and_drop(fd);
    bad = cached_read(fd, start, len, gen, gen + 1, "cached read");
    close(fd);
    if (bad)
        die("%s: %" PRIu64 " bad sectors through the page cache", dev, bad);

    g_rot = 3, g_what = "direct re-read";
    bad = in_jobs(sl_read, 0, start, len);
    if (bad)
        die("%s: %s failed", dev, g_what);
    printf("%s: suite ok: %" PRIu64 " MiB at %" PRIu64
           ", %d jobs x depth %d, %.1f s\n", dev, len >> 20, start, jobs,
           depth, now() - t0);
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: %s write|verify|suite DEV START LEN GEN [-r RUN] [-j JOBS]"
            " [-q DEPTH] [-b] [-t SECS]\n"
            "       %s zero DEV START LEN | rofail DEV | flush DEV\n",
            prog, prog);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *cmd;
    char *pos[5];
    int npos = 0, opt;

    setvbuf(stdout, NULL, _IOLBF, 0);
    /* positional arguments first, options after (or anywhere) */
    while (optind < argc) {
        opt = getopt(argc, argv, "+r:j:q:bt:");
        if (opt == -1) {
            if (npos < 5)
                pos[npos++] = argv[optind];
            optind++;
            continue;
        }
        switch (opt) {
        case 'r': run_id = strtoull(optarg, NULL, 16); break;
        case 'j': jobs = atoi(optarg); break;
        case 'q': depth = atoi(optarg); break;
        case 'b': buffered = 1; break;
        case 't': io_timeout = atoi(optarg); break;
        default: usage();
        }
    }
    if (npos < 2 || jobs < 1 || jobs > 64 || depth < 1 || depth > 64)
        usage();
    cmd = pos[0];
    dev = pos[1];

    if (!strcmp(cmd, "rofail")) {
        /* The guest must refuse: open for writing or the write itself. */
        int fd = open(dev, O_RDWR | O_DIRECT);
        if (fd < 0) {
            printf("%s: open for writing refused: %s\n", dev, strerror(errno));
            return 0;
        }
        uint8_t *b;
        if (posix_memalign((void **)&b, 4096, 4096))
            die("out of memory");
        memset(b, 0x5a, 4096);
        ssize_t r = pwrite(fd, b, 4096, 0);
        if (r < 0) {
            printf("%s: write refused: %s\n", dev, strerror(errno));
            return 0;
        }
        fprintf(stderr, "%s: %s: a 4 KiB write was accepted\n", prog, dev);
        return 1;
    }
    if (!strcmp(cmd, "flush")) {
        int fd = open(dev, O_RDWR);
        if (fd < 0)
            die("open %s: %s", dev, strerror(errno));
        flush_and_drop(fd);
        printf("%s: fsync and BLKFLSBUF ok\n", dev);
        return 0;
    }
    if (npos < 4)
        usage();

    int fd = open_dev(0);
    uint64_t size = dev_size(fd);
    close(fd);
    uint64_t start = parse_size(pos[2]);
    uint64_t len = !strcmp(pos[3], "end") ? size - start : parse_size(pos[3]);
    if (start % SECTOR || len % SECTOR || start + len > size)
        die("%s: range %" PRIu64 "+%" PRIu64 " not sector-aligned or beyond "
            "the end (%" PRIu64 ")", dev, start, len, size);

    if (!strcmp(cmd, "zero")) {
        static uint8_t buf[65536] __attribute__((aligned(4096)));
        fd = open_dev(0);
        for (uint64_t p = start; p < start + len; p += sizeof(buf)) {
            size_t l = start + len - p < sizeof(buf) ? start + len - p
                                                      : sizeof(buf);
            if (pread(fd, buf, l, p) != (ssize_t)l)
                die("%s: read at %" PRIu64 ": %s", dev, p, strerror(errno));
            for (size_t i = 0; i < l; i++)
                if (buf[i]) {
                    printf("%s: not zero at %" PRIu64 "\n", dev, p + i);
                    return 1;
                }
        }
        printf("%s: %" PRIu64 " bytes at %" PRIu64 " are zero\n", dev, len,
               start);
        return 0;
    }
    if (npos < 5)
        usage();
    uint64_t gen = strtoull(pos[4], NULL, 0);
    if (!strcmp(cmd, "suite"))
        return cmd_suite(start, len, gen);

    double t0 = now();
    g_gen = gen, g_gen2 = 0;
    if (!strcmp(cmd, "write")) {
        g_rot = 0, g_what = "write";
        if (in_jobs(sl_write, 1, start, len))
            die("%s: write failed", dev);
        fd = open(dev, O_RDWR);
        if (fd < 0)
            die("open %s: %s", dev, strerror(errno));
        if (fsync(fd) < 0)
            die("fsync %s: %s", dev, strerror(errno));
        close(fd);
        printf("%s: wrote %" PRIu64 " KiB at %" PRIu64 " gen %" PRIu64
               " in %.1f s\n", dev, len >> 10, start, gen, now() - t0);
        return 0;
    }
    if (!strcmp(cmd, "verify")) {
        g_rot = 7, g_what = "verify";
        uint64_t bad = in_jobs(sl_read, 0, start, len);
        if (bad)
            die("%s: verify of %" PRIu64 " KiB at %" PRIu64 " failed", dev,
                len >> 10, start);
        printf("%s: verified %" PRIu64 " KiB at %" PRIu64 " gen %" PRIu64
               " in %.1f s\n", dev, len >> 10, start, gen, now() - t0);
        return 0;
    }
    usage();
    return 2;
}
