/*
 * xenblk-front: self-describing sector stamps and the map of what each
 * sector should hold
 *
 * Every 512-byte sector written carries its own address, the device
 * number, a generation (one per write I/O) and a checksum over the whole
 * sector, so a read catches a block that is misplaced (wrong address),
 * stale (older generation than the map says), torn (bad checksum) or
 * from another device.
 *
 *   offset 0    magic "XBSTAMP1"
 *          8    sector (512-byte units)
 *          16   device number
 *          20   reserved (0)
 *          24   generation
 *          32   pattern (472 bytes, a function of sector and generation)
 *          504  checksum (FNV-1a 64 over bytes 0..503)
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XENBLK_VERIFY_H
#define XENBLK_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

/* What a sector read back turned out to be. */
typedef enum VfResult {
    VF_OK,              /* what the map says */
    VF_ZERO_OK,         /* zeros where the map allows them */
    VF_TORN,            /* stamp with a bad checksum */
    VF_MISPLACED,       /* valid stamp for another sector */
    VF_WRONG_DEVICE,    /* valid stamp of another device */
    VF_STALE,           /* older generation than expected */
    VF_UNEXPECTED,      /* newer or unknown generation */
    VF_LOST,            /* zeros where data was written */
    VF_GARBAGE,         /* neither a stamp nor zeros */
    VF_NR_RESULTS,
} VfResult;

const char *vf_result_name(VfResult r);

/* Map values: 0 = never written by us (zeros or any valid stamp pass). */
#define VF_GEN_DISCARDED 0x80000000u   /* | previous gen: zeros also pass */

typedef struct VfMap {
    uint32_t devnum;
    uint64_t sectors;
    uint32_t next_gen;
    uint32_t *gen;      /* per 512-byte sector */
} VfMap;

void vf_map_init(VfMap *m, uint32_t devnum, uint64_t sectors);
void vf_map_free(VfMap *m);
bool vf_map_load(VfMap *m, const char *path);    /* false: no file */
bool vf_map_save(const VfMap *m, const char *path);
/* After a resize: keep what we know, grow or shrink the map. */
void vf_map_resize(VfMap *m, uint64_t sectors);

uint32_t vf_new_generation(VfMap *m);

/* Fill @n sectors at @buf for a write of @sector.. with generation @gen. */
void vf_stamp(void *buf, uint64_t sector, unsigned int n, uint32_t devnum,
              uint32_t gen);

/* The write completed: these sectors hold @gen now (or are unknown). */
void vf_record_write(VfMap *m, uint64_t sector, unsigned int n, uint32_t gen,
                     bool ok);
void vf_record_discard(VfMap *m, uint64_t sector, uint64_t n);

/* Check one sector read back at @sector against the map. */
VfResult vf_check_sector(const VfMap *m, const void *data, uint64_t sector);

#endif /* XENBLK_VERIFY_H */
