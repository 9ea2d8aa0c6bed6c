/*
 * xenblk-front: the "run" subcommand -- connect as the guest, then drive
 * a fio-like load, single checks, or a hostile case
 *
 * The load keeps at most --iodepth I/Os out, never two on the same block
 * at once (so that the verification map is exact), spreads them over the
 * rings round-robin, and times each from submission to its last response.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "hostile.h"
#include "loadgen.h"
#include "toolstack.h"
#include "verify.h"
#include "xs-util.h"

/* ---- Small parsers ---- */

bool lg_parse_size(const char *s, uint64_t *bytes)
{
    char *end;
    uint64_t v;

    if (!s || !*s || *s == '-') {
        return false;
    }
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno) {
        return false;
    }
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    case 't': case 'T': v <<= 40; end++; break;
    }
    if (*end == 'i' || *end == 'b' || *end == 'B') {
        end++;
    }
    *bytes = v;
    return *end == '\0';
}

const char *lg_status_name(int16_t status, char buf[16])
{
    switch (status) {
    case XB_RSP_OKAY: return "okay";
    case XB_RSP_ERROR: return "error";
    case XB_RSP_EOPNOTSUPP: return "eopnotsupp";
    }
    snprintf(buf, 16, "%d", status);
    return buf;
}

bool lg_parse_status(const char *s, int16_t *status)
{
    if (!strcmp(s, "okay") || !strcmp(s, "ok")) {
        *status = XB_RSP_OKAY;
    } else if (!strcmp(s, "error")) {
        *status = XB_RSP_ERROR;
    } else if (!strcmp(s, "eopnotsupp")) {
        *status = XB_RSP_EOPNOTSUPP;
    } else {
        return false;
    }
    return true;
}

bool lg_wait_io(BfDevice *d, BfIo *io, double deadline_s)
{
    int64_t deadline = xsu_now_ns() + (int64_t)(deadline_s * 1e9);

    bf_kick(d);
    while (io->parts) {
        int64_t left = deadline - xsu_now_ns();

        if (left <= 0 || d->backend_went_away) {
            return false;
        }
        if (bf_poll(d, MIN(left / 1000000 + 1, 100)) < 0) {
            return false;
        }
    }
    return true;
}

/* ---- Options ---- */

typedef enum LgRw {
    RW_NONE, RW_READ, RW_WRITE, RW_RANDREAD, RW_RANDWRITE, RW_RANDRW,
} LgRw;

typedef struct LgOptions {
    BfOptions bf;
    const char *vdev;
    LgRw rw;
    unsigned int rwmixread;
    uint64_t bs;
    uint64_t bs_min;            /* 0: every I/O is bs long */
    unsigned int iodepth;
    double runtime;
    uint64_t size;              /* region; 0 = to the end */
    uint64_t offset;
    bool verify;
    const char *json;
    const char *map;
    uint64_t seed;
    unsigned int cycles;
    const char *op;
    uint64_t length;
    bool secure;
    bool have_expect;
    int16_t expect;
    bool expect_refused;        /* the backend must not connect */
    double wait_resize;
    int ring;                   /* -1 = round-robin */
    HsOptions hostile;
    bool quiet;
} LgOptions;

static const char *const rw_names[] = {
    "none", "read", "write", "randread", "randwrite", "randrw",
};

static bool parse_rw(const char *s, LgRw *rw)
{
    for (unsigned int i = 1; i < G_N_ELEMENTS(rw_names); i++) {
        if (!strcmp(s, rw_names[i])) {
            *rw = i;
            return true;
        }
    }
    return false;
}

static void run_usage(FILE *f)
{
    fprintf(f,
"usage: xenblk-front run [options]   (as the guest domain)\n"
"Find device/vbd/<devnum>, negotiate with the backend like Linux's\n"
"xen-blkfront, then do I/O, a single check, or a hostile case, and close.\n"
"\n"
"Device and negotiation:\n"
"  --domid N          our domain (default: the \"domid\" node)\n"
"  --vdev NAME        xvda (default), a number, ...\n"
"  --abi native|x86_32|x86_64   ring ABI; native writes no protocol node\n"
"  --ring-pages N     ring pages wanted (1..16; capped by the backend)\n"
"  --queues N         rings wanted (multi-queue, if offered)\n"
"  --indirect N       indirect segments wanted (0 = off; if offered)\n"
"  --indirect-always  use BLKIF_OP_INDIRECT even for <= 11 segments\n"
"  --persistent       advertise feature-persistent (used if both do)\n"
"  --regrant          grant fresh pages for every request\n"
"  --deadline SECS    for each awaited state or response (10)\n"
"  --poll-us N        with I/O out, look for responses for up to N us\n"
"                     before sleeping (0: sleep at once; default)\n"
"  --reconnect N      connect, work, close: N times (1)\n"
"  --wait-resize SECS after connecting, wait for the size to change\n"
"\n"
"Load (fio-like):\n"
"  --rw read|write|randread|randwrite|randrw  --rwmixread PCT (50)\n"
"  --bs SIZE (4k)  --iodepth N (1)  --runtime SECS | --size BYTES\n"
"  --bs-min SIZE      each I/O a random length from this to bs (as fio's\n"
"                     bsrange), at the start of its bs-sized block\n"
"  --offset BYTES  --verify on|off (on)  --seed N  --ring N\n"
"  --map FILE         load/save what each sector should hold\n"
"  --json FILE        results as JSON ('-' = stdout)\n"
"\n"
"Single checks (status asserted with --expect okay|error|eopnotsupp;\n"
"--expect refused: the backend must refuse to connect):\n"
"  --op read|write --offset B --length B   one I/O (split as needed)\n"
"  --op flush | --op discard --offset B --length B [--secure]\n"
"  --op write-pattern|read-pattern|verify-region --offset B --length B\n"
"  --op info          negotiate, print what was agreed, close\n"
"\n"
"Hostile (see 'xenblk-front run --hostile help'):\n"
"  --hostile CASE  --req SPEC ...  --count N\n"
"  --xs-set NODE=VALUE  --xs-del NODE   bad values at connect\n"
"  --prefill N    N valid reads on every ring, published before connecting\n"
"\n"
"Exit status: 0 when everything went as expected, 1 otherwise.\n");
}

static bool parse_u(const char *s, unsigned int *v)
{
    char *end;
    unsigned long x = strtoul(s, &end, 0);

    *v = x;
    return *s && !*end;
}

static bool apply_run_option(LgOptions *o, int c, const char *arg)
{
    switch (c) {
    case 'D': return parse_u(arg, &o->bf.domid);
    case 'v': o->vdev = arg; return true;
    case 'a':
        o->bf.protocol_node = strcmp(arg, "native") != 0;
        if (!strcmp(arg, "native")) {
            o->bf.abi = XB_ABI_HOST;
            return true;
        }
        if (!strcmp(arg, "x86_32") || !strcmp(arg, "x86_64")) {
            o->bf.abi = arg[4] == '3' ? XB_ABI_X86_32 : XB_ABI_X86_64;
            return true;
        }
        return false;
    case 'p': return parse_u(arg, &o->bf.ring_pages);
    case 'q': return parse_u(arg, &o->bf.queues);
    case 'i': return parse_u(arg, &o->bf.indirect);
    case 'I': o->bf.indirect_always = true; return true;
    case 'P': o->bf.persistent = true; return true;
    case 'G': o->bf.regrant = true; return true;
    case 'w': o->bf.deadline = atof(arg); return o->bf.deadline > 0;
    case 'c': return parse_u(arg, &o->cycles);
    case 'W': o->wait_resize = atof(arg); return true;
    case 'r': return parse_rw(arg, &o->rw);
    case 'm': return parse_u(arg, &o->rwmixread) && o->rwmixread <= 100;
    case 'b': return lg_parse_size(arg, &o->bs) && o->bs >= 512 &&
                     o->bs % 512 == 0;
    case 'B': return lg_parse_size(arg, &o->bs_min) && o->bs_min >= 512 &&
                     o->bs_min % 512 == 0;
    case 'd': return parse_u(arg, &o->iodepth) && o->iodepth > 0;
    case 't': o->runtime = atof(arg); return o->runtime > 0;
    case 's': return lg_parse_size(arg, &o->size);
    case 'o': return lg_parse_size(arg, &o->offset);
    case 'V': o->verify = !strcmp(arg, "on") || !strcmp(arg, "1");
              return true;
    case 'S': o->seed = strtoull(arg, NULL, 0); return true;
    case 'R': o->ring = atoi(arg); return true;
    case 'M': o->map = arg; return true;
    case 'j': o->json = arg; return true;
    case 'O': o->op = arg; return true;
    case 'L': return lg_parse_size(arg, &o->length);
    case 'E':
        if (!strcmp(arg, "refused")) {
            o->expect_refused = true;
            return true;
        }
        o->have_expect = true;
        return lg_parse_status(arg, &o->expect);
    case 'x': o->secure = true; return true;
    case 'H': o->hostile.name = arg; return true;
    case 'Q': g_ptr_array_add(o->hostile.reqs, (char *)arg); return true;
    case 'C': return parse_u(arg, &o->hostile.count);
    case 'X': g_ptr_array_add(o->bf.xs_set, (char *)arg); return true;
    case 'Y': g_ptr_array_add(o->bf.xs_del, (char *)arg); return true;
    case 'k': o->bf.skip_state_wait = true; return true;
    case 'F': return parse_u(arg, &o->bf.prefill);
    case 'U': return parse_u(arg, &o->bf.poll_us);
    case 'z': o->quiet = true; return true;
    }
    return false;
}

static bool parse_run_opts(int argc, char **argv, LgOptions *o)
{
    static const struct option opts[] = {
        { "domid", required_argument, NULL, 'D' },
        { "vdev", required_argument, NULL, 'v' },
        { "abi", required_argument, NULL, 'a' },
        { "ring-pages", required_argument, NULL, 'p' },
        { "queues", required_argument, NULL, 'q' },
        { "indirect", required_argument, NULL, 'i' },
        { "indirect-always", no_argument, NULL, 'I' },
        { "persistent", no_argument, NULL, 'P' },
        { "regrant", no_argument, NULL, 'G' },
        { "deadline", required_argument, NULL, 'w' },
        { "poll-us", required_argument, NULL, 'U' },
        { "reconnect", required_argument, NULL, 'c' },
        { "wait-resize", required_argument, NULL, 'W' },
        { "rw", required_argument, NULL, 'r' },
        { "rwmixread", required_argument, NULL, 'm' },
        { "bs", required_argument, NULL, 'b' },
        { "bs-min", required_argument, NULL, 'B' },
        { "iodepth", required_argument, NULL, 'd' },
        { "runtime", required_argument, NULL, 't' },
        { "size", required_argument, NULL, 's' },
        { "offset", required_argument, NULL, 'o' },
        { "verify", required_argument, NULL, 'V' },
        { "seed", required_argument, NULL, 'S' },
        { "ring", required_argument, NULL, 'R' },
        { "map", required_argument, NULL, 'M' },
        { "json", required_argument, NULL, 'j' },
        { "op", required_argument, NULL, 'O' },
        { "length", required_argument, NULL, 'L' },
        { "expect", required_argument, NULL, 'E' },
        { "secure", no_argument, NULL, 'x' },
        { "hostile", required_argument, NULL, 'H' },
        { "req", required_argument, NULL, 'Q' },
        { "count", required_argument, NULL, 'C' },
        { "xs-set", required_argument, NULL, 'X' },
        { "xs-del", required_argument, NULL, 'Y' },
        { "no-initwait", no_argument, NULL, 'k' },
        { "prefill", required_argument, NULL, 'F' },
        { "quiet", no_argument, NULL, 'z' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            run_usage(stdout);
            exit(0);
        }
        if (c == '?' || !apply_run_option(o, c, optarg)) {
            fprintf(stderr, "run: bad option or value near '%s'\n",
                    argv[optind - 1]);
            return false;
        }
    }
    if (o->hostile.name && !strcmp(o->hostile.name, "help")) {
        fputs(hs_help, stdout);
        exit(0);
    }
    return ts_parse_vdev(o->vdev, &o->bf.devnum);
}

/* ---- The load ---- */

typedef struct LgIo {
    BfIo io;
    BfBuf buf;
    bool busy;
    bool write;
    uint64_t sector;            /* 512-byte units */
    uint32_t nsect;
    uint32_t off;               /* in buf */
    uint32_t gen;
    uint64_t block;
} LgIo;

typedef struct LgStats {
    uint64_t ios;
    uint64_t reads;
    uint64_t writes;
    uint64_t bytes;
    uint64_t status_okay;
    uint64_t status_error;
    uint64_t status_eopnotsupp;
    uint64_t status_other;
    uint64_t verify[VF_NR_RESULTS];
    uint64_t verify_sectors;
    GArray *lat_ns;             /* uint64_t per completed I/O */
    double elapsed_s;
    double cpu_user_s;
    double cpu_sys_s;
    uint64_t lost;              /* I/Os that never completed */
    bool stalled;
    GString *mismatches;        /* the first few, as JSON items */
    unsigned int nr_mismatches;
} LgStats;

typedef struct Lg {
    LgOptions *o;
    BfDevice *d;
    VfMap map;
    LgStats st;
    GRand *rand;
    LgIo *ios;
    unsigned int inflight;
    GHashTable *busy_blocks;
    uint64_t region_start;      /* bytes */
    uint64_t region_len;
    uint64_t nblocks;
    uint64_t next_seq;
    uint64_t issued;
    uint64_t to_issue;          /* 0 = time based */
} Lg;

static void note_status(LgStats *st, int16_t status)
{
    switch (status) {
    case XB_RSP_OKAY: st->status_okay++; break;
    case XB_RSP_ERROR: st->status_error++; break;
    case XB_RSP_EOPNOTSUPP: st->status_eopnotsupp++; break;
    default: st->status_other++; break;
    }
}

static void note_mismatch(Lg *lg, uint64_t sector, VfResult r,
                          const uint8_t *data)
{
    uint64_t got_sector, got_gen;

    if (lg->st.nr_mismatches++ >= 8) {
        return;
    }
    memcpy(&got_sector, data + 8, 8);
    memcpy(&got_gen, data + 24, 8);
    if (lg->st.mismatches->len) {
        g_string_append(lg->st.mismatches, ", ");
    }
    g_string_append_printf(lg->st.mismatches,
                           "{\"sector\": %" PRIu64 ", \"result\": \"%s\", "
                           "\"expected_gen\": %u, \"found_sector\": %" PRIu64
                           ", \"found_gen\": %" PRIu64 "}", sector,
                           vf_result_name(r),
                           sector < lg->map.sectors ? lg->map.gen[sector] : 0,
                           got_sector, got_gen);
}

static void verify_read(Lg *lg, LgIo *x)
{
    for (uint32_t i = 0; i < x->nsect; i++) {
        const uint8_t *p = x->buf.data + x->off + (size_t)i * XB_SECTOR_SIZE;
        VfResult r = vf_check_sector(&lg->map, p, x->sector + i);

        lg->st.verify[r]++;
        lg->st.verify_sectors++;
        if (r != VF_OK && r != VF_ZERO_OK) {
            note_mismatch(lg, x->sector + i, r, p);
        }
    }
}

static void io_done(BfDevice *d, BfIo *io)
{
    LgIo *x = (LgIo *)io;       /* io is the first member */
    Lg *lg = io->opaque;
    uint64_t lat = io->t_done - io->t_submit;

    g_array_append_val(lg->st.lat_ns, lat);
    note_status(&lg->st, io->status);
    lg->st.ios++;
    lg->st.bytes += (uint64_t)x->nsect * XB_SECTOR_SIZE;
    if (x->write) {
        lg->st.writes++;
        if (lg->o->verify) {
            vf_record_write(&lg->map, x->sector, x->nsect, x->gen,
                            io->status == XB_RSP_OKAY);
        }
    } else {
        lg->st.reads++;
        if (lg->o->verify && io->status == XB_RSP_OKAY) {
            verify_read(lg, x);
        }
    }
    g_hash_table_remove(lg->busy_blocks, &x->block);
    bf_buf_put(d, &x->buf);
    x->busy = false;
    lg->inflight--;
}

static bool is_random(LgRw rw)
{
    return rw == RW_RANDREAD || rw == RW_RANDWRITE || rw == RW_RANDRW;
}

static bool choose_write(Lg *lg)
{
    switch (lg->o->rw) {
    case RW_WRITE:
    case RW_RANDWRITE:
        return true;
    case RW_RANDRW:
        return g_rand_int_range(lg->rand, 0, 100) >= (int)lg->o->rwmixread;
    default:
        return false;
    }
}

/* The next block to use, or false if all candidates are busy. */
static bool choose_block(Lg *lg, uint64_t *block)
{
    for (int tries = 0; tries < 16; tries++) {
        uint64_t b;

        if (is_random(lg->o->rw)) {
            b = ((uint64_t)g_rand_int(lg->rand) << 32 |
                 g_rand_int(lg->rand)) % lg->nblocks;
        } else {
            b = lg->next_seq++ % lg->nblocks;
        }
        if (!g_hash_table_contains(lg->busy_blocks, &b)) {
            *block = b;
            return true;
        }
    }
    return false;
}

/* The length of the next I/O: bs, or from --bs-min to bs. */
static uint64_t choose_length(Lg *lg)
{
    uint64_t lbs = MAX(lg->d->be.sector_size, 512);
    uint64_t choices;

    if (!lg->o->bs_min) {
        return lg->o->bs;
    }
    choices = MIN((lg->o->bs - lg->o->bs_min) / lbs + 1, G_MAXINT32);
    return lg->o->bs_min + lbs * g_rand_int_range(lg->rand, 0, choices);
}

static LgIo *free_io(Lg *lg)
{
    for (unsigned int i = 0; i < lg->o->iodepth; i++) {
        if (!lg->ios[i].busy) {
            return &lg->ios[i];
        }
    }
    return NULL;
}

/* Issue one I/O; false when there is no room right now. */
static bool issue_one(Lg *lg)
{
    LgIo *x = free_io(lg);
    uint64_t block, byte, len, seq = lg->next_seq;
    bool write = choose_write(lg);

    if (!x || !choose_block(lg, &block)) {
        lg->next_seq = seq;
        return false;
    }
    byte = lg->region_start + block * lg->o->bs;
    len = choose_length(lg);
    x->write = write;
    x->block = block;
    x->sector = byte / XB_SECTOR_SIZE;
    x->nsect = len / XB_SECTOR_SIZE;
    /* Sub-page I/O sits where the page cache would put it. */
    x->off = byte % XB_PAGE_SIZE;
    if (!bf_buf_get(lg->d, DIV_ROUND_UP(x->off + len, XB_PAGE_SIZE),
                    write, &x->buf)) {
        lg->next_seq = seq;     /* this block is still to do */
        return false;
    }
    if (write) {
        x->gen = lg->o->verify ? vf_new_generation(&lg->map) : 0;
        if (lg->o->verify) {
            vf_stamp(x->buf.data + x->off, x->sector, x->nsect,
                     lg->o->bf.devnum, x->gen);
        }
    } else if (lg->o->verify) {
        /* Stale buffer content must not pass for data read. */
        memset(x->buf.data + x->off, 0xa5, len);
    }
    x->io = (BfIo) { .done = io_done, .opaque = lg };
    if (!bf_submit_rw(lg->d, lg->o->ring, write, x->sector, len,
                      &x->buf, x->off, &x->io)) {
        bf_buf_put(lg->d, &x->buf);
        lg->next_seq = seq;
        return false;
    }
    g_hash_table_add(lg->busy_blocks, g_memdup2(&block, sizeof(block)));
    x->busy = true;
    lg->inflight++;
    lg->issued++;
    return true;
}

static double cpu_seconds(const struct timeval *tv)
{
    return tv->tv_sec + tv->tv_usec / 1e6;
}

static bool load_region(Lg *lg, char **errmsg)
{
    uint64_t disk = lg->d->be.sectors * XB_SECTOR_SIZE;
    uint64_t lbs = MAX(lg->d->be.sector_size, 512);

    lg->region_start = lg->o->offset;
    if (lg->region_start >= disk) {
        *errmsg = g_strdup_printf("offset %" PRIu64 " past the end (%"
                                  PRIu64 ")", lg->o->offset, disk);
        return false;
    }
    lg->region_len = lg->o->size ? MIN(lg->o->size, disk - lg->region_start)
                                 : disk - lg->region_start;
    lg->nblocks = lg->region_len / lg->o->bs;
    if (!lg->nblocks) {
        *errmsg = g_strdup("region smaller than one block");
        return false;
    }
    if (lg->o->bs_min > lg->o->bs) {
        *errmsg = g_strdup("bs-min larger than bs");
        return false;
    }
    if (lg->o->bs % lbs || lg->o->bs_min % lbs || lg->region_start % lbs) {
        *errmsg = g_strdup_printf("bs/bs-min/offset not multiples of the "
                                  "logical block size %" PRIu64, lbs);
        return false;
    }
    if (bf_parts_needed(lg->d, XB_PAGE_SIZE - 512, lg->o->bs) >
        lg->d->ring_size) {
        *errmsg = g_strdup("bs needs more ring requests than a ring holds");
        return false;
    }
    lg->to_issue = lg->o->runtime > 0 ? 0 : lg->nblocks;
    return true;
}

static bool run_load(Lg *lg, char **errmsg)
{
    BfDevice *d = lg->d;
    struct rusage ru0, ru1;
    int64_t t0, end, last_progress;

    if (!load_region(lg, errmsg)) {
        return false;
    }
    lg->ios = g_new0(LgIo, lg->o->iodepth);
    for (unsigned int i = 0; i < lg->o->iodepth; i++) {
        lg->ios[i].buf.chunk = -1;
    }
    getrusage(RUSAGE_SELF, &ru0);
    t0 = last_progress = xsu_now_ns();
    end = t0 + (int64_t)(lg->o->runtime * 1e9);
    for (;;) {
        bool more = lg->to_issue ? lg->issued < lg->to_issue
                                 : xsu_now_ns() < end;
        int n;

        while (more && lg->inflight < lg->o->iodepth && issue_one(lg)) {
            more = lg->to_issue ? lg->issued < lg->to_issue : more;
        }
        if (!lg->inflight && !more) {
            break;
        }
        if (d->backend_went_away) {
            bf_log(d, "backend left Connected with %u I/Os out",
                   lg->inflight);
            break;
        }
        n = bf_poll(d, 100);
        if (n < 0) {
            break;
        }
        if (n > 0) {
            last_progress = xsu_now_ns();
        } else if (lg->inflight &&
                   xsu_now_ns() - last_progress > lg->o->bf.deadline * 1e9) {
            lg->st.stalled = true;
            bf_log(d, "no response for %.1f s with %u I/Os out",
                   lg->o->bf.deadline, lg->inflight);
            break;
        }
        if (d->last_sectors != lg->map.sectors && lg->o->verify) {
            vf_map_resize(&lg->map, d->last_sectors);
        }
    }
    lg->st.lost += lg->inflight;
    getrusage(RUSAGE_SELF, &ru1);
    lg->st.elapsed_s += (xsu_now_ns() - t0) / 1e9;
    lg->st.cpu_user_s += cpu_seconds(&ru1.ru_utime) -
                         cpu_seconds(&ru0.ru_utime);
    lg->st.cpu_sys_s += cpu_seconds(&ru1.ru_stime) -
                        cpu_seconds(&ru0.ru_stime);
    /* Whatever is still out belongs to a dead connection now. */
    g_free(lg->ios);
    lg->ios = NULL;
    lg->inflight = 0;
    g_hash_table_remove_all(lg->busy_blocks);
    lg->issued = 0;
    return true;
}

/* ---- Single checks ---- */

/* One read or write of [offset, offset+length) as a single I/O. */
static bool single_rw(Lg *lg, bool write, int16_t *status, char **errmsg)
{
    BfDevice *d = lg->d;
    uint32_t off = lg->o->offset % XB_PAGE_SIZE;
    unsigned int pages = DIV_ROUND_UP(off + lg->o->length, XB_PAGE_SIZE);
    LgIo x = { .write = write, .sector = lg->o->offset / XB_SECTOR_SIZE,
               .nsect = lg->o->length / XB_SECTOR_SIZE, .off = off };

    if (!lg->o->length || lg->o->length % XB_SECTOR_SIZE ||
        lg->o->offset % XB_SECTOR_SIZE) {
        *errmsg = g_strdup("--offset/--length must be multiples of 512");
        return false;
    }
    if (!bf_buf_get(d, pages, write, &x.buf)) {
        *errmsg = g_strdup("no buffer");
        return false;
    }
    if (write) {
        x.gen = vf_new_generation(&lg->map);
        vf_stamp(x.buf.data + off, x.sector, x.nsect, lg->o->bf.devnum,
                 x.gen);
    } else {
        memset(x.buf.data + off, 0xa5, lg->o->length);
    }
    x.io = (BfIo) { .done = NULL };
    x.busy = true;
    if (!bf_submit_rw(d, lg->o->ring, write, x.sector, lg->o->length,
                      &x.buf, off, &x.io)) {
        *errmsg = g_strdup("ring has no room for this I/O");
        bf_buf_put(d, &x.buf);
        return false;
    }
    if (!lg_wait_io(d, &x.io, lg->o->bf.deadline)) {
        *errmsg = g_strdup("no response before the deadline");
        return false;           /* the buffer stays granted: it is out */
    }
    *status = x.io.status;
    note_status(&lg->st, x.io.status);
    if (write) {
        vf_record_write(&lg->map, x.sector, x.nsect, x.gen,
                        x.io.status == XB_RSP_OKAY);
    } else if (x.io.status == XB_RSP_OKAY && lg->o->verify) {
        verify_read(lg, &x);
    }
    bf_buf_put(d, &x.buf);
    return true;
}

static bool single_flush_or_discard(Lg *lg, bool discard, int16_t *status,
                                    char **errmsg)
{
    BfDevice *d = lg->d;
    BfIo io = { .done = NULL };
    bool queued = discard
        ? bf_submit_discard(d, lg->o->ring, lg->o->offset / XB_SECTOR_SIZE,
                            lg->o->length / XB_SECTOR_SIZE, lg->o->secure,
                            &io)
        : bf_submit_flush(d, lg->o->ring, &io);

    if (!queued) {
        *errmsg = g_strdup("ring full");
        return false;
    }
    if (!lg_wait_io(d, &io, lg->o->bf.deadline)) {
        *errmsg = g_strdup("no response before the deadline");
        return false;
    }
    *status = io.status;
    note_status(&lg->st, io.status);
    if (discard && io.status == XB_RSP_OKAY) {
        vf_record_discard(&lg->map, lg->o->offset / XB_SECTOR_SIZE,
                          lg->o->length / XB_SECTOR_SIZE);
    }
    return true;
}

/* ---- Reporting ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static double percentile_us(GArray *lat, double pct)
{
    size_t i;

    if (!lat->len) {
        return 0;
    }
    i = (size_t)(pct / 100.0 * (lat->len - 1) + 0.5);
    return g_array_index(lat, uint64_t, MIN(i, lat->len - 1)) / 1e3;
}

static bool verify_clean(const LgStats *st)
{
    for (int r = VF_TORN; r < VF_NR_RESULTS; r++) {
        if (st->verify[r]) {
            return false;
        }
    }
    return true;
}

static void append_device_json(GString *j, BfDevice *d)
{
    g_string_append_printf(j,
        "\"device\": {\"fe_path\": \"%s\", \"be_path\": \"%s\", "
        "\"sectors\": %" PRIu64 ", \"sector_size\": %u, "
        "\"physical_sector_size\": %u, \"info\": %u, \"readonly\": %s, "
        "\"feature_flush\": %d, \"feature_barrier\": %d, "
        "\"feature_discard\": %d, \"discard_granularity\": %u, "
        "\"discard_alignment\": %u, \"discard_secure\": %d, "
        "\"max_ring_page_order\": %d, \"max_queues\": %u, "
        "\"feature_persistent\": %d, \"max_indirect\": %u, "
        "\"abi\": \"%s\", \"protocol_node\": %s, \"ring_pages\": %u, "
        "\"ring_size\": %u, \"queues\": %u, \"max_segs\": %u, "
        "\"indirect\": %s, \"persistent\": %s, \"regrant\": %s, "
        "\"resize_events\": %" PRIu64 ", \"backend_state\": %d}",
        d->fe_path ? d->fe_path : "", d->be_path ? d->be_path : "",
        d->be.sectors, d->be.sector_size, d->be.physical_sector_size,
        d->be.info, d->be.readonly ? "true" : "false", d->be.flush,
        d->be.barrier, d->be.discard, d->be.discard_granularity,
        d->be.discard_alignment, d->be.discard_secure,
        d->be.max_ring_page_order, d->be.max_queues, d->be.persistent,
        d->be.max_indirect, d->layout ? d->layout->name : "",
        d->opt.protocol_node ? "true" : "false", d->ring_pages,
        d->ring_size, d->nr_rings, d->max_segs,
        d->use_indirect ? "true" : "false",
        d->use_persistent ? "true" : "false",
        d->regrant ? "true" : "false", d->resize_events,
        d->backend_state);
}

static void append_stats_json(GString *j, Lg *lg)
{
    LgStats *st = &lg->st;
    double secs = MAX(st->elapsed_s, 1e-9);

    g_array_sort(st->lat_ns, cmp_u64);
    g_string_append_printf(j,
        ", \"rw\": \"%s\", \"bs\": %" PRIu64 ", \"iodepth\": %u, "
        "\"runtime_s\": %.3f, \"ios\": %" PRIu64 ", \"reads\": %" PRIu64
        ", \"writes\": %" PRIu64 ", \"bytes\": %" PRIu64 ", "
        "\"iops\": %.1f, \"mbps\": %.2f, "
        "\"lat_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, "
        "\"p99.9\": %.1f, \"max\": %.1f}, "
        "\"status\": {\"okay\": %" PRIu64 ", \"error\": %" PRIu64
        ", \"eopnotsupp\": %" PRIu64 ", \"other\": %" PRIu64 "}, "
        "\"lost\": %" PRIu64 ", \"stalled\": %s, "
        "\"cpu_s\": {\"user\": %.3f, \"sys\": %.3f}, "
        "\"verify\": {\"enabled\": %s, \"sectors\": %" PRIu64,
        rw_names[lg->o->rw], lg->o->bs, lg->o->iodepth, st->elapsed_s,
        st->ios, st->reads, st->writes, st->bytes, st->ios / secs,
        st->bytes / secs / 1e6, percentile_us(st->lat_ns, 50),
        percentile_us(st->lat_ns, 90), percentile_us(st->lat_ns, 99),
        percentile_us(st->lat_ns, 99.9), percentile_us(st->lat_ns, 100),
        st->status_okay, st->status_error, st->status_eopnotsupp,
        st->status_other, st->lost, st->stalled ? "true" : "false",
        st->cpu_user_s, st->cpu_sys_s, lg->o->verify ? "true" : "false",
        st->verify_sectors);
    for (int r = 0; r < VF_NR_RESULTS; r++) {
        g_string_append_printf(j, ", \"%s\": %" PRIu64, vf_result_name(r),
                               st->verify[r]);
    }
    g_string_append_printf(j, ", \"mismatches\": [%s]}",
                           st->mismatches->str);
}

static void append_ring_stats_json(GString *j, BfDevice *d)
{
    g_string_append(j, ", \"rings\": [");
    for (unsigned int q = 0; q < d->nr_rings; q++) {
        BfRing *r = d->rings[q].sring ? &d->rings[q] : &d->totals[q];

        g_string_append_printf(j, "%s{\"requests\": %" PRIu64 ", "
                               "\"responses\": %" PRIu64 ", \"notifies\": %"
                               PRIu64 ", \"bogus\": %" PRIu64 "}",
                               q ? ", " : "", r->requests, r->responses,
                               r->notifies, r->bogus_responses);
    }
    g_string_append(j, "]");
}

static void emit_json(LgOptions *o, GString *j)
{
    FILE *f;

    if (!o->json) {
        return;
    }
    f = strcmp(o->json, "-") ? fopen(o->json, "w") : stdout;
    if (!f) {
        perror(o->json);
        return;
    }
    fprintf(f, "%s\n", j->str);
    if (f != stdout) {
        fclose(f);
    } else {
        fflush(f);
    }
}

static void human_line(Lg *lg, bool ok)
{
    LgStats *st = &lg->st;
    double secs = MAX(st->elapsed_s, 1e-9);

    if (lg->o->quiet) {
        return;
    }
    fprintf(stderr,
            "xenblk-front: %s bs=%" PRIu64 " qd=%u q=%u: %" PRIu64 " ios, "
            "%.0f IOPS, %.1f MB/s, lat p50 %.0fus p99 %.0fus p99.9 %.0fus, "
            "cpu %.2fs, errors %" PRIu64 ", verify %s%s\n",
            rw_names[lg->o->rw], lg->o->bs, lg->o->iodepth,
            lg->d->nr_rings, st->ios, st->ios / secs,
            st->bytes / secs / 1e6, percentile_us(st->lat_ns, 50),
            percentile_us(st->lat_ns, 99), percentile_us(st->lat_ns, 99.9),
            st->cpu_user_s + st->cpu_sys_s,
            st->status_error + st->status_eopnotsupp + st->status_other,
            !lg->o->verify ? "off" : verify_clean(st) ? "clean" : "FAILED",
            ok ? "" : " -- NOT OK");
}

/* ---- The subcommand ---- */

/* A string as a JSON string body: quotes, backslashes, controls. */
static char *json_escape(const char *s)
{
    GString *g = g_string_new(NULL);

    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\') {
            g_string_append_printf(g, "\\%c", *s);
        } else if ((unsigned char)*s < 0x20) {
            g_string_append_printf(g, "\\u%04x", *s);
        } else {
            g_string_append_c(g, *s);
        }
    }
    return g_string_free(g, false);
}

static void init_options(LgOptions *o)
{
    *o = (LgOptions) {
        .bf = { .abi = XB_ABI_HOST, .protocol_node = true, .ring_pages = 1,
                .queues = 1, .deadline = 10,
                .xs_set = g_ptr_array_new(), .xs_del = g_ptr_array_new() },
        .vdev = "xvda", .rwmixread = 50, .bs = 4096, .iodepth = 1,
        .verify = true, .cycles = 1, .ring = -1,
        .hostile = { .reqs = g_ptr_array_new(), .count = 0 },
    };
}

/* Pool sizing: one buffer per I/O in flight, big enough for any. */
static void size_pool(LgOptions *o)
{
    uint64_t biggest = o->bs;

    if (o->op && (!strcmp(o->op, "read") || !strcmp(o->op, "write"))) {
        biggest = o->length;
    }
    o->bf.chunk_pages = DIV_ROUND_UP(biggest + XB_PAGE_SIZE, XB_PAGE_SIZE);
    o->bf.nr_chunks = o->op && strcmp(o->op, "write-pattern") &&
                      strcmp(o->op, "read-pattern") &&
                      strcmp(o->op, "verify-region") ? 1 : o->iodepth;
    if (o->hostile.name) {
        o->bf.chunk_pages = MAX(o->bf.chunk_pages, 16);
        o->bf.nr_chunks = MAX(o->bf.nr_chunks, 4);
    }
}

/* Turn the pattern ops into a one-pass sequential load. */
static void pattern_op_to_load(LgOptions *o)
{
    if (!o->op) {
        return;
    }
    if (!strcmp(o->op, "write-pattern")) {
        o->rw = RW_WRITE;
    } else if (!strcmp(o->op, "read-pattern") ||
               !strcmp(o->op, "verify-region")) {
        o->rw = RW_READ;
        o->verify = true;
    } else {
        return;
    }
    o->size = o->length ? o->length : o->size;
    o->runtime = 0;
    if (o->bs > o->size && o->size) {
        o->bs = o->size;
    }
}

static bool run_op(Lg *lg, GString *j, bool *ok, char **errmsg)
{
    const char *op = lg->o->op;
    int16_t status = 0;
    char buf[16];
    bool done;

    if (!strcmp(op, "info")) {
        return true;
    } else if (!strcmp(op, "read") || !strcmp(op, "write")) {
        done = single_rw(lg, op[0] == 'w', &status, errmsg);
    } else if (!strcmp(op, "flush") || !strcmp(op, "discard")) {
        done = single_flush_or_discard(lg, op[0] == 'd', &status, errmsg);
    } else {
        *errmsg = g_strdup_printf("unknown --op %s", op);
        return false;
    }
    if (!done) {
        *ok = false;
        g_string_append_printf(j, ", \"op\": \"%s\", \"status\": \"none\"",
                               op);
        return true;
    }
    g_string_append_printf(j, ", \"op\": \"%s\", \"status\": \"%s\", "
                           "\"status_code\": %d", op,
                           lg_status_name(status, buf), status);
    *ok &= lg->o->have_expect ? status == lg->o->expect
                              : status == XB_RSP_OKAY;
    return true;
}

/* One cycle: connect, work, disconnect. */
static bool run_cycle(Lg *lg, GString *j, bool *ok, char **errmsg)
{
    BfDevice *d = lg->d;
    char *err = NULL;

    if (!bf_connect(d, errmsg)) {
        return false;
    }
    if (!lg->map.gen) {
        vf_map_init(&lg->map, lg->o->bf.devnum, d->be.sectors);
        if (lg->o->map) {
            vf_map_load(&lg->map, lg->o->map);
        }
    }
    if (lg->o->wait_resize > 0) {
        int64_t end = xsu_now_ns() + (int64_t)(lg->o->wait_resize * 1e9);

        while (!d->resize_events && xsu_now_ns() < end) {
            bf_poll(d, 100);
            bf_check_resize(d);
        }
        *ok &= d->resize_events > 0;
    }
    if (lg->o->hostile.name) {
        lg->o->hostile.deadline = lg->o->bf.deadline;
        if (!hs_run(d, &lg->o->hostile, j)) {
            *ok = false;
        }
    } else if (lg->o->op && lg->o->rw == RW_NONE) {
        if (!run_op(lg, j, ok, errmsg)) {
            return false;
        }
    } else if (lg->o->rw != RW_NONE) {
        if (!run_load(lg, errmsg)) {
            return false;
        }
    }
    if (!bf_disconnect(d, &err)) {
        bf_log(d, "disconnect: %s", err);
        g_free(err);
        *ok = false;
    }
    return true;
}

int lg_run_main(int argc, char **argv)
{
    LgOptions o;
    BfDevice d;
    Lg lg = { 0 };
    g_autoptr(GString) j = g_string_new("{");
    g_autoptr(GString) extra = g_string_new("");
    char *errmsg = NULL;
    g_autofree char *err_json = NULL;
    bool ok = true, opened, refused = false;
    unsigned int cycle = 0;

    init_options(&o);
    if (!parse_run_opts(argc, argv, &o)) {
        run_usage(stderr);
        return 2;
    }
    pattern_op_to_load(&o);
    size_pool(&o);
    lg = (Lg) { .o = &o, .d = &d, .rand = g_rand_new_with_seed(o.seed),
                .busy_blocks = g_hash_table_new_full(g_int64_hash,
                                                     g_int64_equal, g_free,
                                                     NULL) };
    lg.st.lat_ns = g_array_new(false, false, sizeof(uint64_t));
    lg.st.mismatches = g_string_new("");
    opened = bf_open(&d, &o.bf, &errmsg);
    for (cycle = 0; opened && cycle < MAX(o.cycles, 1); cycle++) {
        if (!run_cycle(&lg, extra, &ok, &errmsg)) {
            break;
        }
        if (o.hostile.name || o.op) {
            cycle++;
            break;              /* single checks run once */
        }
    }
    if (errmsg) {
        char *err2 = NULL;

        ok = false;
        /* Connected, or refused half-way: close what we opened so that
         * the backend is left with a closed device, as Linux would. */
        if (opened && xsu_read_state(d.xsh, d.fe_path) !=
                      XB_STATE_INITIALISING) {
            bf_disconnect(&d, &err2);
            g_free(err2);
        }
    }
    ok &= !lg.st.status_error || (o.have_expect && o.expect != 0);
    ok &= verify_clean(&lg.st) && !lg.st.stalled && !lg.st.lost &&
          (!lg.st.status_eopnotsupp || o.have_expect);
    if (o.expect_refused) {
        /* Refused: it stayed out of Connected (InitWait or Closing). */
        refused = opened && !cycle && errmsg &&
                  strstr(errmsg, "did not connect");
        ok = refused;
    }
    if (o.map && lg.map.gen) {
        vf_map_save(&lg.map, o.map);
    }
    err_json = json_escape(errmsg);
    g_string_append_printf(j, "\"ok\": %s, \"error\": \"%s\", "
                           "\"cycles\": %u, \"refused\": %s, ",
                           ok ? "true" : "false", err_json, cycle,
                           refused ? "true" : "false");
    append_device_json(j, &d);
    if (o.rw != RW_NONE) {
        append_stats_json(j, &lg);
    }
    g_string_append(j, extra->str);
    if (d.layout) {
        append_ring_stats_json(j, &d);
    }
    g_string_append_printf(j, ", \"events\": [%s]}",
                           d.log ? d.log->str : "");
    emit_json(&o, j);
    if (o.rw != RW_NONE) {
        human_line(&lg, ok);
    } else if (!o.quiet) {
        fprintf(stderr, "xenblk-front: %s%s%s\n", ok ? "ok" : "NOT OK",
                errmsg ? ": " : "", errmsg ? errmsg : "");
    }
    bf_close(&d);
    vf_map_free(&lg.map);
    g_free(errmsg);
    return ok ? 0 : 1;
}
