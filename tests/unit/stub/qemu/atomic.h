/*
 * Test-only stand-in for QEMU's qemu/atomic.h: the accesses and barriers
 * the protocol layer uses, with the same meaning.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef XBLK_TEST_ATOMIC_H
#define XBLK_TEST_ATOMIC_H

#define barrier()           __atomic_signal_fence(__ATOMIC_SEQ_CST)
#define smp_mb()            __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define smp_rmb()           __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define smp_wmb()           __atomic_thread_fence(__ATOMIC_RELEASE)
#define qatomic_read(p)     __atomic_load_n(p, __ATOMIC_RELAXED)
#define qatomic_set(p, v)   __atomic_store_n(p, v, __ATOMIC_RELAXED)
#define qatomic_read_u64(p) __atomic_load_n(p, __ATOMIC_RELAXED)

#endif
