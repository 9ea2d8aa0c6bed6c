/*
 * xenblk-front: self-describing sector stamps and the map of what each
 * sector should hold
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

#define STAMP_MAGIC     0x3150414d54534258ull  /* "XBSTAMP1" */
#define SECTOR          512
#define CSUM_OFF        504
#define PATTERN_OFF     32
#define MAP_FILE_MAGIC  0x3150414d424e5658ull  /* "XVNBMAP1" */

const char *vf_result_name(VfResult r)
{
    static const char *const names[] = {
        "ok", "zero_ok", "torn", "misplaced", "wrong_device", "stale",
        "unexpected", "lost", "garbage",
    };

    return r < VF_NR_RESULTS ? names[r] : "?";
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

static uint64_t get64(const uint8_t *p, size_t off)
{
    uint64_t v;

    memcpy(&v, p + off, 8);
    return v;
}

static void put64(uint8_t *p, size_t off, uint64_t v)
{
    memcpy(p + off, &v, 8);
}

/* The pattern: splitmix64 seeded by sector and generation. */
static void fill_pattern(uint8_t *p, uint64_t sector, uint32_t gen)
{
    uint64_t x = sector * 0x9e3779b97f4a7c15ull ^ ((uint64_t)gen << 32);

    for (size_t off = PATTERN_OFF; off < CSUM_OFF; off += 8) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        put64(p, off, z ^ (z >> 31));
    }
}

void vf_stamp(void *buf, uint64_t sector, unsigned int n, uint32_t devnum,
              uint32_t gen)
{
    for (unsigned int i = 0; i < n; i++) {
        uint8_t *p = (uint8_t *)buf + (size_t)i * SECTOR;
        uint32_t words[2] = { devnum, 0 };

        put64(p, 0, STAMP_MAGIC);
        put64(p, 8, sector + i);
        memcpy(p + 16, words, 8);
        put64(p, 24, gen);
        fill_pattern(p, sector + i, gen);
        put64(p, CSUM_OFF, fnv1a(p, CSUM_OFF));
    }
}

static bool all_zero(const uint8_t *p)
{
    for (unsigned int i = 0; i < SECTOR; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

VfResult vf_check_sector(const VfMap *m, const void *data, uint64_t sector)
{
    const uint8_t *p = data;
    uint32_t want = sector < m->sectors ? m->gen[sector] : 0;
    uint32_t devnum;
    uint64_t gen;

    if (all_zero(p)) {
        return (want == 0 || (want & VF_GEN_DISCARDED)) ? VF_ZERO_OK
                                                        : VF_LOST;
    }
    if (get64(p, 0) != STAMP_MAGIC) {
        return VF_GARBAGE;
    }
    if (get64(p, CSUM_OFF) != fnv1a(p, CSUM_OFF)) {
        return VF_TORN;
    }
    memcpy(&devnum, p + 16, 4);
    gen = get64(p, 24);
    if (get64(p, 8) != sector) {
        return VF_MISPLACED;
    }
    if (devnum != m->devnum) {
        return VF_WRONG_DEVICE;
    }
    if (want == 0 || gen == (want & ~VF_GEN_DISCARDED)) {
        return VF_OK;
    }
    return gen < (want & ~VF_GEN_DISCARDED) ? VF_STALE : VF_UNEXPECTED;
}

void vf_map_init(VfMap *m, uint32_t devnum, uint64_t sectors)
{
    m->devnum = devnum;
    m->sectors = sectors;
    /* A random start: two runs with separate maps never write the same
     * generation, so one's data can never pass for the other's. */
    m->next_gen = g_random_int_range(1, 1 << 30);
    m->gen = g_new0(uint32_t, MAX(sectors, 1));
}

void vf_map_free(VfMap *m)
{
    g_free(m->gen);
    m->gen = NULL;
}

void vf_map_resize(VfMap *m, uint64_t sectors)
{
    m->gen = g_renew(uint32_t, m->gen, MAX(sectors, 1));
    if (sectors > m->sectors) {
        memset(m->gen + m->sectors, 0,
               (sectors - m->sectors) * sizeof(uint32_t));
    }
    m->sectors = sectors;
}

uint32_t vf_new_generation(VfMap *m)
{
    if (m->next_gen >= VF_GEN_DISCARDED - 1) {
        m->next_gen = 1;        /* 2^31 writes: wraps, never in practice */
    }
    return m->next_gen++;
}

void vf_record_write(VfMap *m, uint64_t sector, unsigned int n, uint32_t gen,
                     bool ok)
{
    for (unsigned int i = 0; i < n && sector + i < m->sectors; i++) {
        /* A failed write leaves the sector's content unknown. */
        m->gen[sector + i] = ok ? gen : 0;
    }
}

void vf_record_discard(VfMap *m, uint64_t sector, uint64_t n)
{
    for (uint64_t i = 0; i < n && sector + i < m->sectors; i++) {
        if (m->gen[sector + i]) {
            m->gen[sector + i] |= VF_GEN_DISCARDED;
        }
    }
}

typedef struct MapHeader {
    uint64_t magic;
    uint64_t sectors;
    uint32_t devnum;
    uint32_t next_gen;
} MapHeader;

bool vf_map_load(VfMap *m, const char *path)
{
    FILE *f = fopen(path, "rb");
    MapHeader h;
    bool ok;

    if (!f) {
        return false;
    }
    ok = fread(&h, sizeof(h), 1, f) == 1 && h.magic == MAP_FILE_MAGIC;
    if (ok) {
        uint64_t keep = MIN(h.sectors, m->sectors);

        ok = fread(m->gen, sizeof(uint32_t), keep, f) == keep;
        m->next_gen = h.next_gen;
    }
    fclose(f);
    return ok;
}

bool vf_map_save(const VfMap *m, const char *path)
{
    g_autofree char *tmp = g_strdup_printf("%s.tmp", path);
    MapHeader h = { .magic = MAP_FILE_MAGIC, .sectors = m->sectors,
                    .devnum = m->devnum, .next_gen = m->next_gen };
    FILE *f = fopen(tmp, "wb");
    bool ok;

    if (!f) {
        return false;
    }
    ok = fwrite(&h, sizeof(h), 1, f) == 1 &&
         fwrite(m->gen, sizeof(uint32_t), m->sectors, f) == m->sectors;
    ok = (fclose(f) == 0) && ok;
    return ok && rename(tmp, path) == 0;
}
