/*
 * xenblk-front: hostile cases -- a frontend that misbehaves on purpose
 *
 * What a correct backend does with each is in DESIGN.md section 6; every
 * request here carries the status that table expects, and the report says
 * whether the backend matched it.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostile.h"
#include "loadgen.h"
#include "verify.h"
#include "xs-util.h"

const char hs_help[] =
"Hostile cases (run --hostile CASE; results as JSON with --json):\n"
"  req            the requests given with --req SPEC (repeatable); SPEC is\n"
"                 comma-separated key=value: op, nr_segments, handle,\n"
"                 sector, nr_sectors, flag, indirect_op, indirect_segs,\n"
"                 segN=GREF:FIRST:LAST, igrefN=GREF, isegN=GREF:FIRST:LAST\n"
"                 (segments in our indirect page 0), byteN=V (poke slot\n"
"                 byte N), expect=okay|error|eopnotsupp.  GREF is a number\n"
"                 or buf:K (our data page K), ro:K (shared read-only),\n"
"                 revoked (shared then unshared), foreign (granted to\n"
"                 another domain), ind:K (our indirect page K).\n"
"                 --count N sends them N times over (a flood: only the\n"
"                 first answer and wrong ones are listed)\n"
"  battery        malformed direct requests, each with the status the\n"
"                 design expects (segment counts, sector bounds, unknown\n"
"                 and unoffered operations, bad grants)\n"
"  bad-indirect   malformed indirect requests (EOPNOTSUPP if not offered)\n"
"  ring-overflow  req_prod more than a ring ahead; the backend should go\n"
"                 Closing and answer nothing\n"
"  prod-backwards valid reads in every slot, 4 published; once the backend\n"
"                 took them, req_prod moves back by 2 (on slow storage, so\n"
"                 that they are still in flight); the backend should go\n"
"                 Closing, not take the unpublished slots or spin\n"
"  double-fetch   rewrite sector, a segment's last_sect and its gref from a\n"
"                 second thread while the backend works (--count rounds);\n"
"                 each answer is OKAY or ERROR, the data at the good sector\n"
"                 is ours, nothing lands past the end (check the image)\n"
"  evtchn-storm   --count notifications on an empty ring, then a read\n"
"Bad xenstore values at connect: --xs-set NODE=VALUE / --xs-del NODE on\n"
"any run (e.g. ring-page-order=30, protocol=bogus, event-channel=abc,\n"
"multi-queue-num-queues=0); the report says whether it connected.\n";

#define HS_BUF_PAGES    8
#define HS_IND_PAGES    2

/* Pages the cases use as grants of every kind. */
typedef struct HsPages {
    uint8_t *buf;                       /* writable */
    uint32_t buf_refs[HS_BUF_PAGES];
    uint8_t *ro;                        /* read-only */
    uint32_t ro_refs[HS_BUF_PAGES];
    uint8_t *ind;                       /* indirect pages, read-only */
    uint32_t ind_refs[HS_IND_PAGES];
    uint32_t revoked_ref;
    uint8_t *foreign;                   /* granted to someone else */
    uint32_t foreign_ref;
} HsPages;

typedef struct HsCtx {
    BfDevice *d;
    const HsOptions *o;
    HsPages pg;
    GString *items;                     /* per-request JSON items */
    unsigned int mismatches;
    unsigned int requests;
    unsigned int answered;
    bool quiet;                         /* report only what went wrong */
} HsCtx;

static bool share_pages(HsCtx *c)
{
    BfDevice *d = c->d;
    uint32_t ref;
    void *p;

    c->pg.buf = xengntshr_share_pages(d->xgs, d->be_domid, HS_BUF_PAGES,
                                      c->pg.buf_refs, 1);
    c->pg.ro = xengntshr_share_pages(d->xgs, d->be_domid, HS_BUF_PAGES,
                                     c->pg.ro_refs, 0);
    c->pg.ind = xengntshr_share_pages(d->xgs, d->be_domid, HS_IND_PAGES,
                                      c->pg.ind_refs, 0);
    /* Granted to a domain that is not the backend: ourselves. */
    c->pg.foreign = xengntshr_share_pages(d->xgs, d->opt.domid, 1,
                                          &c->pg.foreign_ref, 1);
    p = xengntshr_share_pages(d->xgs, d->be_domid, 1, &ref, 1);
    if (!c->pg.buf || !c->pg.ro || !c->pg.ind || !c->pg.foreign || !p) {
        return false;
    }
    /* Revoked: valid once, then ended, as gnttab_end_foreign_access. */
    xengntshr_unshare(d->xgs, p, 1);
    c->pg.revoked_ref = ref;
    return true;
}

static void unshare_pages(HsCtx *c)
{
    BfDevice *d = c->d;

    if (c->pg.buf) {
        xengntshr_unshare(d->xgs, c->pg.buf, HS_BUF_PAGES);
    }
    if (c->pg.ro) {
        xengntshr_unshare(d->xgs, c->pg.ro, HS_BUF_PAGES);
    }
    if (c->pg.ind) {
        xengntshr_unshare(d->xgs, c->pg.ind, HS_IND_PAGES);
    }
    if (c->pg.foreign) {
        xengntshr_unshare(d->xgs, c->pg.foreign, 1);
    }
}

/* ---- Request specs ---- */

static bool parse_gref(HsCtx *c, const char *s, uint32_t *gref)
{
    char *end;
    unsigned long k;

    if (g_str_has_prefix(s, "buf:") || g_str_has_prefix(s, "ro:") ||
        g_str_has_prefix(s, "ind:")) {
        const char *num = strchr(s, ':') + 1;

        k = strtoul(num, &end, 0);
        if (*end || k >= (s[0] == 'i' ? HS_IND_PAGES : HS_BUF_PAGES)) {
            return false;
        }
        *gref = s[0] == 'b' ? c->pg.buf_refs[k]
              : s[0] == 'r' ? c->pg.ro_refs[k] : c->pg.ind_refs[k];
        return true;
    }
    if (!strcmp(s, "revoked")) {
        *gref = c->pg.revoked_ref;
        return true;
    }
    if (!strcmp(s, "foreign")) {
        *gref = c->pg.foreign_ref;
        return true;
    }
    k = strtoul(s, &end, 0);
    *gref = k;
    return *s && !*end;
}

static bool parse_seg(HsCtx *c, const char *v, XbSegment *seg)
{
    g_auto(GStrv) parts = g_strsplit(v, ":", 0);
    guint n = g_strv_length(parts);

    /* "buf:0:0:7" has the gref's own colon: the last two are sectors. */
    if (n < 3) {
        return false;
    }
    seg->first_sect = strtoul(parts[n - 2], NULL, 0);
    seg->last_sect = strtoul(parts[n - 1], NULL, 0);
    g_free(parts[n - 2]);
    parts[n - 2] = NULL;
    {
        g_autofree char *gref = g_strjoinv(":", parts);

        return parse_gref(c, gref, &seg->gref);
    }
}

typedef struct HsSpec {
    XbRequest req;
    GArray *pokes;              /* pairs of (offset, value) as uint32_t */
    bool have_expect;
    int16_t expect;
    char *name;
} HsSpec;

static bool apply_spec_key(HsCtx *c, HsSpec *sp, const char *key,
                           const char *val)
{
    XbRequest *r = &sp->req;
    uint64_t v = strtoull(val, NULL, 0);
    unsigned int n;

    if (!strcmp(key, "op")) {
        r->operation = v;
    } else if (!strcmp(key, "nr_segments") || !strcmp(key, "flag")) {
        r->nr_segments = v;
    } else if (!strcmp(key, "handle")) {
        r->handle = v;
    } else if (!strcmp(key, "sector")) {
        r->sector = v;
    } else if (!strcmp(key, "nr_sectors")) {
        r->nr_sectors = v;
    } else if (!strcmp(key, "indirect_op")) {
        r->indirect_op = v;
    } else if (!strcmp(key, "indirect_segs")) {
        r->indirect_nr_segments = v;
    } else if (!strcmp(key, "expect")) {
        sp->have_expect = true;
        return lg_parse_status(val, &sp->expect);
    } else if (!strcmp(key, "name")) {
        g_free(sp->name);
        sp->name = g_strdup(val);
    } else if (sscanf(key, "seg%u", &n) == 1 && n < XB_MAX_SEGS_DIRECT) {
        return parse_seg(c, val, &r->seg[n]);
    } else if (sscanf(key, "igref%u", &n) == 1 && n < XB_MAX_INDIRECT_PAGES) {
        return parse_gref(c, val, &r->indirect_grefs[n]);
    } else if (sscanf(key, "iseg%u", &n) == 1 &&
               n < XB_SEGS_PER_INDIRECT_PAGE) {
        XbSegment seg;

        if (!parse_seg(c, val, &seg)) {
            return false;
        }
        xb_encode_indirect_seg(c->pg.ind, n, &seg);
    } else if (sscanf(key, "byte%u", &n) == 1 && n < 128) {
        uint32_t pair[2] = { n, v };

        g_array_append_vals(sp->pokes, pair, 2);
    } else {
        return false;
    }
    return true;
}

static bool parse_spec(HsCtx *c, const char *spec, HsSpec *sp)
{
    g_auto(GStrv) kvs = g_strsplit(spec, ",", 0);

    memset(sp, 0, sizeof(*sp));
    sp->req.handle = c->d->opt.devnum;
    sp->pokes = g_array_new(false, false, sizeof(uint32_t));
    sp->name = g_strdup(spec);
    for (unsigned int i = 0; kvs[i]; i++) {
        char *eq = strchr(kvs[i], '=');

        if (!eq) {
            return false;
        }
        *eq = '\0';
        if (!apply_spec_key(c, sp, kvs[i], eq + 1)) {
            return false;
        }
    }
    return true;
}

static void free_spec(HsSpec *sp)
{
    g_array_free(sp->pokes, true);
    g_free(sp->name);
}

/* ---- Issuing and reporting ---- */

static void report_item(HsCtx *c, const char *name, bool answered,
                        int16_t status, bool have_expect, int16_t expect)
{
    char b1[16], b2[16];
    bool match = !have_expect || (answered && status == expect);

    c->requests++;
    c->answered += answered;
    c->mismatches += !match;
    /* A flood of --count rounds lists only its first and bad answers. */
    if (c->quiet && match && c->requests > 1) {
        return;
    }
    if (c->items->len) {
        g_string_append(c->items, ", ");
    }
    g_string_append_printf(c->items, "{\"name\": \"%s\", \"status\": \"%s\"",
                           name, answered ? lg_status_name(status, b1)
                                          : "none");
    if (have_expect) {
        g_string_append_printf(c->items, ", \"expected\": \"%s\", "
                               "\"match\": %s", lg_status_name(expect, b2),
                               match ? "true" : "false");
    }
    g_string_append(c->items, "}");
}

/* Queue @sp, publish, wait for its response; report it. */
static bool issue_spec(HsCtx *c, HsSpec *sp)
{
    BfDevice *d = c->d;
    BfRing *r = &d->rings[c->o->ring % d->nr_rings];
    BfIo io = { 0 };
    uint32_t at = r->req_prod_pvt;
    bool answered;

    if (!bf_submit_raw(d, c->o->ring, &sp->req, &io)) {
        return false;
    }
    for (guint i = 0; i + 1 < sp->pokes->len; i += 2) {
        uint8_t *slot = xb_slot(r->sring, d->layout, r->size, at);

        slot[g_array_index(sp->pokes, uint32_t, i)] =
            g_array_index(sp->pokes, uint32_t, i + 1);
    }
    answered = lg_wait_io(d, &io, c->o->deadline);
    report_item(c, sp->name, answered, io.status, sp->have_expect,
                sp->expect);
    return answered;
}

static bool issue_specs(HsCtx *c, const char *const *specs, unsigned int n)
{
    for (unsigned int i = 0; i < n; i++) {
        HsSpec sp;
        bool ok = parse_spec(c, specs[i], &sp);

        if (!ok) {
            fprintf(stderr, "hostile: bad request spec '%s'\n", specs[i]);
            free_spec(&sp);
            return false;
        }
        /* A request that got no answer ends the case: the ring may be
         * dead and everything after it would only time out. */
        ok = issue_spec(c, &sp);
        free_spec(&sp);
        if (!ok || c->d->backend_went_away) {
            break;
        }
    }
    return true;
}

/* The requests given with --req, --count times over (default once). */
static bool case_req(HsCtx *c)
{
    unsigned int rounds = MAX(c->o->count, 1);

    c->quiet = rounds > 1;
    for (unsigned int i = 0; i < rounds; i++) {
        if (!issue_specs(c, (const char *const *)c->o->reqs->pdata,
                         c->o->reqs->len) ||
            c->answered < c->requests || c->d->backend_went_away) {
            break;
        }
    }
    return true;
}

/* Specs with the sector numbers of this disk filled in. */
static char **battery_specs(HsCtx *c)
{
    BfDevice *d = c->d;
    uint64_t end = d->be.sectors;
    const char *wr_expect = d->be.readonly ? "error" : "okay";
    GPtrArray *a = g_ptr_array_new();

#define ADD(...) g_ptr_array_add(a, g_strdup_printf(__VA_ARGS__))
    ADD("name=good-read,op=0,nr_segments=1,sector=0,seg0=buf:0:0:7,"
        "expect=okay");
    ADD("name=good-write,op=1,nr_segments=1,sector=0,seg0=buf:0:0:7,"
        "expect=%s", wr_expect);
    ADD("name=read-0-segs,op=0,nr_segments=0,sector=0,expect=error");
    ADD("name=read-12-segs,op=0,nr_segments=12,sector=0,seg0=buf:0:0:7,"
        "expect=error");
    ADD("name=read-255-segs,op=0,nr_segments=255,sector=0,expect=error");
    ADD("name=first-gt-last,op=0,nr_segments=1,sector=0,seg0=buf:0:5:2,"
        "expect=error");
    ADD("name=last-sect-8,op=0,nr_segments=1,sector=0,seg0=buf:0:0:8,"
        "expect=error");
    ADD("name=read-past-end,op=0,nr_segments=1,sector=%" PRIu64
        ",seg0=buf:0:0:7,expect=error", end);
    ADD("name=read-across-end,op=0,nr_segments=1,sector=%" PRIu64
        ",seg0=buf:0:0:7,expect=error", end - 4);
    ADD("name=read-sector-huge,op=0,nr_segments=1,"
        "sector=0xfffffffffffffff8,seg0=buf:0:0:7,expect=error");
    ADD("name=write-past-end,op=1,nr_segments=1,sector=%" PRIu64
        ",seg0=buf:0:0:7,expect=error", end);
    ADD("name=unknown-op-4,op=4,nr_segments=1,sector=0,seg0=buf:0:0:7,"
        "expect=eopnotsupp");
    ADD("name=unknown-op-7,op=7,nr_segments=1,sector=0,seg0=buf:0:0:7,"
        "expect=eopnotsupp");
    ADD("name=unknown-op-255,op=255,expect=eopnotsupp");
    if (!d->be.barrier) {
        ADD("name=barrier-not-offered,op=2,nr_segments=1,sector=0,"
            "seg0=buf:0:0:7,expect=eopnotsupp");
    }
    if (!d->be.discard) {
        ADD("name=discard-not-offered,op=5,sector=0,nr_sectors=8,"
            "expect=eopnotsupp");
    } else {
        ADD("name=discard-past-end,op=5,sector=%" PRIu64 ",nr_sectors=8,"
            "expect=error", end);
        if (!d->be.discard_secure) {
            ADD("name=secure-discard-not-offered,op=5,flag=1,sector=0,"
                "nr_sectors=8,expect=eopnotsupp");
        }
    }
    if (!d->be.max_indirect) {
        ADD("name=indirect-not-offered,op=6,indirect_op=0,indirect_segs=1,"
            "sector=0,igref0=ind:0,iseg0=buf:0:0:7,expect=eopnotsupp");
    }
    ADD("name=read-foreign-gref,op=0,nr_segments=1,sector=0,"
        "seg0=foreign:0:7,expect=error");
    ADD("name=read-unshared-gref,op=0,nr_segments=1,sector=0,"
        "seg0=16383:0:7,expect=error");
    ADD("name=read-into-ro-gref,op=0,nr_segments=1,sector=0,"
        "seg0=ro:0:0:7,expect=error");
    ADD("name=read-revoked-gref,op=0,nr_segments=1,sector=0,"
        "seg0=revoked:0:7,expect=error");
    ADD("name=write-revoked-gref,op=1,nr_segments=1,sector=0,"
        "seg0=revoked:0:7,expect=error");
    ADD("name=write-from-ro-gref,op=1,nr_segments=1,sector=8,"
        "seg0=ro:1:0:7,expect=%s", wr_expect);
    ADD("name=good-read-after,op=0,nr_segments=1,sector=0,seg0=buf:0:0:7,"
        "expect=okay");
#undef ADD
    g_ptr_array_add(a, NULL);
    return (char **)g_ptr_array_free(a, false);
}

static bool case_battery(HsCtx *c)
{
    g_auto(GStrv) specs = battery_specs(c);

    return issue_specs(c, (const char *const *)specs, g_strv_length(specs));
}

static char **bad_indirect_specs(HsCtx *c)
{
    BfDevice *d = c->d;
    unsigned int max = d->be.max_indirect;
    const char *bad = max ? "error" : "eopnotsupp";
    GPtrArray *a = g_ptr_array_new();

#define ADD(...) g_ptr_array_add(a, g_strdup_printf(__VA_ARGS__))
    if (max) {
        ADD("name=indirect-good,op=6,indirect_op=0,indirect_segs=1,sector=0,"
            "igref0=ind:0,iseg0=buf:0:0:7,expect=okay");
    }
    ADD("name=indirect-0-segs,op=6,indirect_op=0,indirect_segs=0,sector=0,"
        "igref0=ind:0,expect=%s", bad);
    ADD("name=indirect-over-max,op=6,indirect_op=0,indirect_segs=%u,"
        "sector=0,igref0=ind:0,igref1=ind:1,expect=%s", max + 1, bad);
    ADD("name=indirect-4096-segs,op=6,indirect_op=0,indirect_segs=4096,"
        "sector=0,igref0=ind:0,expect=%s", bad);
    ADD("name=indirect-foreign-page,op=6,indirect_op=0,indirect_segs=1,"
        "sector=0,igref0=foreign,expect=%s", bad);
    ADD("name=indirect-revoked-page,op=6,indirect_op=0,indirect_segs=1,"
        "sector=0,igref0=revoked,expect=%s", bad);
    ADD("name=indirect-bad-seg,op=6,indirect_op=0,indirect_segs=2,sector=0,"
        "igref0=ind:0,iseg0=buf:0:0:7,iseg1=buf:1:6:2,expect=%s", bad);
    ADD("name=indirect-seg-last-8,op=6,indirect_op=0,indirect_segs=1,"
        "sector=0,igref0=ind:0,iseg0=buf:0:0:8,expect=%s", bad);
    ADD("name=indirect-op-flush,op=6,indirect_op=3,indirect_segs=1,"
        "sector=0,igref0=ind:0,iseg0=buf:0:0:7,expect=%s", bad);
    ADD("name=indirect-op-indirect,op=6,indirect_op=6,indirect_segs=1,"
        "sector=0,igref0=ind:0,iseg0=buf:0:0:7,expect=%s", bad);
    ADD("name=indirect-past-end,op=6,indirect_op=0,indirect_segs=1,"
        "sector=%" PRIu64 ",igref0=ind:0,iseg0=buf:0:0:7,expect=%s",
        d->be.sectors, bad);
    if (max) {
        ADD("name=indirect-good-after,op=6,indirect_op=0,indirect_segs=1,"
            "sector=0,igref0=ind:0,iseg0=buf:0:0:7,expect=okay");
    }
#undef ADD
    g_ptr_array_add(a, NULL);
    return (char **)g_ptr_array_free(a, false);
}

static bool case_bad_indirect(HsCtx *c)
{
    g_auto(GStrv) specs = bad_indirect_specs(c);

    /* Each spec rewrites the indirect page's first segments: reset. */
    memset(c->pg.ind, 0, HS_IND_PAGES * XB_PAGE_SIZE);
    for (unsigned int i = 0; specs[i]; i++) {
        if (!issue_specs(c, (const char *const *)&specs[i], 1)) {
            return false;
        }
        memset(c->pg.ind, 0, HS_IND_PAGES * XB_PAGE_SIZE);
        if (c->d->backend_went_away) {
            break;
        }
    }
    return true;
}

/* ---- ring-overflow ---- */

static bool case_ring_overflow(HsCtx *c, GString *json)
{
    BfDevice *d = c->d;
    BfRing *r = &d->rings[c->o->ring % d->nr_rings];
    uint32_t bogus = r->rsp_cons + r->size + MAX(c->o->count, 1);
    int state;

    /* Publish an index the backend must refuse, and tell it. */
    __atomic_store_n(&r->sring->req_prod, bogus, __ATOMIC_RELEASE);
    xenevtchn_notify(d->xce, r->port);
    xsu_wait_state(d->xsh, d->be_path,
                   XSU_STATE_BIT(XB_STATE_CLOSING) |
                   XSU_STATE_BIT(XB_STATE_CLOSED),
                   xsu_now_ns() + (int64_t)(c->o->deadline * 1e9), &state);
    g_string_append_printf(json, ", \"req_prod_written\": %u, "
                           "\"rsp_prod_seen\": %u, \"backend_closing\": %s",
                           bogus, xb_front_rsp_prod(r->sring),
                           state == XB_STATE_CLOSING ||
                           state == XB_STATE_CLOSED ? "true" : "false");
    d->backend_state = state;
    c->mismatches += state != XB_STATE_CLOSING && state != XB_STATE_CLOSED;
    /* The ring is dead for us too: do not wait for its requests. */
    return true;
}

/* ---- prod-backwards ---- */

/*
 * A producer index that moves back, while the requests it covered are
 * still in flight, stays within a ring of the backend's responses: a check
 * of that distance alone passes it, and prod - req_cons then wraps to
 * nearly 2^32 pending requests.
 */
static bool case_prod_backwards(HsCtx *c, GString *json)
{
    BfDevice *d = c->d;
    BfRing *r = &d->rings[c->o->ring % d->nr_rings];
    uint32_t base = r->req_prod_pvt, published = 4, back = 2;
    int64_t deadline = xsu_now_ns() + (int64_t)(c->o->deadline * 1e9);
    XbRequest req = { .operation = XB_OP_READ, .nr_segments = 1,
                      .handle = d->opt.devnum,
                      .seg[0] = { c->pg.buf_refs[0], 0, 7 } };
    bool taken;
    int state;

    /* Whatever the backend takes is a valid read: only the index lies. */
    for (unsigned int i = 0; i < r->size; i++) {
        req.id = 0x7000 + i;
        req.sector = 8 * i;
        xb_encode_request(d->layout, &req,
                          xb_slot(r->sring, d->layout, r->size, base + i));
    }
    __atomic_store_n(&r->sring->req_prod, base + published, __ATOMIC_RELEASE);
    xenevtchn_notify(d->xce, r->port);
    /* Taken: the backend asks to be told of the request after them. */
    while (!(taken = __atomic_load_n(&r->sring->req_event, __ATOMIC_ACQUIRE)
                     == base + published + 1) &&
           xsu_now_ns() < deadline) {
        g_usleep(100);      /* polling shared memory, up to the deadline */
    }
    __atomic_store_n(&r->sring->req_prod, base + published - back,
                     __ATOMIC_RELEASE);
    xenevtchn_notify(d->xce, r->port);
    xsu_wait_state(d->xsh, d->be_path,
                   XSU_STATE_BIT(XB_STATE_CLOSING) |
                   XSU_STATE_BIT(XB_STATE_CLOSED), deadline, &state);
    g_string_append_printf(json, ", \"taken_before\": %s, "
                           "\"req_prod_written\": %u, \"rsp_prod_seen\": %u, "
                           "\"backend_closing\": %s",
                           taken ? "true" : "false", base + published - back,
                           xb_front_rsp_prod(r->sring) - base,
                           state == XB_STATE_CLOSING ||
                           state == XB_STATE_CLOSED ? "true" : "false");
    d->backend_state = state;
    c->mismatches += state != XB_STATE_CLOSING && state != XB_STATE_CLOSED;
    return true;    /* the ring is dead: do not wait for its requests */
}

/* ---- double-fetch ---- */

typedef struct Flipper {
    uint8_t *volatile slot;
    const XbLayout *layout;
    uint64_t sector_a, sector_b;
    uint32_t gref_good, gref_bad;
    volatile bool stop;
    volatile uint64_t flips;
} Flipper;

/*
 * Only fields past byte 16 are flipped: the response (16 bytes at most)
 * overwrites the start of the same slot, and a flip landing on it would
 * be our own corruption of the answer, not the backend's problem.
 */
static void *flipper_thread(void *opaque)
{
    Flipper *f = opaque;

    while (!f->stop) {
        uint8_t *slot = f->slot;
        uint64_t *sector;
        uint32_t *gref;
        uint8_t *last;

        if (!slot) {
            continue;
        }
        sector = (uint64_t *)(slot + f->layout->sector);
        gref = (uint32_t *)(slot + f->layout->seg);
        last = slot + f->layout->seg + 5;
        /* One field at a time, whole stores: each state the backend can
         * read is a request we could have written. */
        __atomic_store_n(sector, f->sector_b, __ATOMIC_RELAXED);
        __atomic_store_n(sector, f->sector_a, __ATOMIC_RELAXED);
        __atomic_store_n(last, 8, __ATOMIC_RELAXED);
        __atomic_store_n(last, 7, __ATOMIC_RELAXED);
        __atomic_store_n(gref, f->gref_bad, __ATOMIC_RELAXED);
        __atomic_store_n(gref, f->gref_good, __ATOMIC_RELAXED);
        f->flips++;
    }
    return NULL;
}

/* Read sector A back: it holds our stamp, or the write never happened. */
static bool sector_a_intact(HsCtx *c, uint64_t sector)
{
    BfDevice *d = c->d;
    XbRequest req = { .operation = XB_OP_READ, .nr_segments = 1,
                      .handle = d->opt.devnum, .sector = sector,
                      .seg[0] = { c->pg.buf_refs[1], 0, 7 } };
    BfIo io = { 0 };
    VfMap map;
    bool ok = true;

    memset(c->pg.buf + XB_PAGE_SIZE, 0xa5, XB_PAGE_SIZE);
    if (!bf_submit_raw(d, c->o->ring, &req, &io) ||
        !lg_wait_io(d, &io, c->o->deadline) || io.status != XB_RSP_OKAY) {
        return false;
    }
    vf_map_init(&map, d->opt.devnum, d->be.sectors);
    vf_record_write(&map, sector, 8, 1, true);
    for (unsigned int i = 0; i < 8; i++) {
        VfResult r = vf_check_sector(&map, c->pg.buf + XB_PAGE_SIZE +
                                     i * XB_SECTOR_SIZE, sector + i);

        ok &= r == VF_OK;
    }
    vf_map_free(&map);
    return ok;
}

static bool case_double_fetch(HsCtx *c, GString *json)
{
    BfDevice *d = c->d;
    BfRing *r = &d->rings[c->o->ring % d->nr_rings];
    unsigned int rounds = c->o->count ? c->o->count : 200;
    Flipper f = { .layout = d->layout, .sector_a = 8,
                  .sector_b = d->be.sectors + 1024,
                  .gref_good = c->pg.buf_refs[0],
                  .gref_bad = c->pg.revoked_ref };
    unsigned int okay = 0, error = 0, none = 0, other = 0;
    bool intact;
    pthread_t th;

    if (d->layout->sector % 8) {
        g_string_append(json, ", \"skipped\": \"needs the x86_64 ABI\"");
        return true;
    }
    vf_stamp(c->pg.buf, f.sector_a, 8, d->opt.devnum, 1);
    pthread_create(&th, NULL, flipper_thread, &f);
    for (unsigned int i = 0; i < rounds && !d->backend_went_away; i++) {
        XbRequest req = { .operation = XB_OP_WRITE, .nr_segments = 1,
                          .handle = d->opt.devnum, .sector = f.sector_a,
                          .seg[0] = { c->pg.buf_refs[0], 0, 7 } };
        BfIo io = { 0 };
        uint32_t at = r->req_prod_pvt;

        if (!bf_submit_raw(d, c->o->ring, &req, &io)) {
            break;
        }
        f.slot = xb_slot(r->sring, d->layout, r->size, at);
        bf_kick(d);
        if (!lg_wait_io(d, &io, c->o->deadline)) {
            none++;
            f.slot = NULL;
            break;
        }
        f.slot = NULL;
        okay += io.status == XB_RSP_OKAY;
        error += io.status == XB_RSP_ERROR;
        other += io.status != XB_RSP_OKAY && io.status != XB_RSP_ERROR;
    }
    f.stop = true;
    pthread_join(th, NULL);
    intact = sector_a_intact(c, f.sector_a);
    g_string_append_printf(json, ", \"rounds\": %u, \"okay\": %u, "
                           "\"error\": %u, \"other\": %u, \"none\": %u, "
                           "\"flips\": %" PRIu64 ", \"sector_a\": %" PRIu64
                           ", \"sector_b_past_end\": %" PRIu64
                           ", \"sector_a_intact\": %s", rounds, okay,
                           error, other, none, f.flips, f.sector_a,
                           f.sector_b, intact ? "true" : "false");
    c->mismatches += none + other + !intact;
    return true;
}

/* ---- evtchn-storm ---- */

static bool case_evtchn_storm(HsCtx *c, GString *json)
{
    BfDevice *d = c->d;
    BfRing *r = &d->rings[c->o->ring % d->nr_rings];
    unsigned int n = c->o->count ? c->o->count : 100000;
    int64_t t0 = xsu_now_ns();
    static const char *const after[] = {
        "name=read-after-storm,op=0,nr_segments=1,sector=0,seg0=buf:0:0:7,"
        "expect=okay",
    };

    for (unsigned int i = 0; i < n; i++) {
        xenevtchn_notify(d->xce, r->port);
    }
    g_string_append_printf(json, ", \"notifications\": %u, \"storm_ms\": "
                           "%.1f", n, (xsu_now_ns() - t0) / 1e6);
    return issue_specs(c, after, 1);
}

bool hs_run(BfDevice *d, const HsOptions *o, GString *json)
{
    HsCtx c = { .d = d, .o = o, .items = g_string_new("") };
    bool ok;
    int state;

    g_string_append_printf(json, ", \"hostile\": {\"case\": \"%s\"",
                           o->name);
    if (!share_pages(&c)) {
        g_string_append(json, ", \"error\": \"cannot share pages\"}");
        unshare_pages(&c);
        g_string_free(c.items, true);
        return false;
    }
    if (!strcmp(o->name, "req")) {
        ok = case_req(&c);
    } else if (!strcmp(o->name, "battery")) {
        ok = case_battery(&c);
    } else if (!strcmp(o->name, "bad-indirect")) {
        ok = case_bad_indirect(&c);
    } else if (!strcmp(o->name, "ring-overflow")) {
        ok = case_ring_overflow(&c, json);
    } else if (!strcmp(o->name, "prod-backwards")) {
        ok = case_prod_backwards(&c, json);
    } else if (!strcmp(o->name, "double-fetch")) {
        ok = case_double_fetch(&c, json);
    } else if (!strcmp(o->name, "evtchn-storm")) {
        ok = case_evtchn_storm(&c, json);
    } else {
        g_string_append(json, ", \"error\": \"unknown case\"");
        ok = false;
    }
    state = xsu_read_state(d->xsh, d->be_path);
    g_string_append_printf(json, ", \"requests\": [%s], \"answered\": %u, "
                           "\"mismatches\": %u, \"backend_state_after\": %d, "
                           "\"backend_connected_after\": %s}",
                           c.items->str, c.answered, c.mismatches, state,
                           state == XB_STATE_CONNECTED ? "true" : "false");
    unshare_pages(&c);
    g_string_free(c.items, true);
    return ok && !c.mismatches;
}
