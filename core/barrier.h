/* SPDX-License-Identifier: MIT */
/*
 * barrier.h - the only place libvdi orders memory shared between
 * processes, and the futex calls that sleep on it.
 *
 * Every field of the shared region that is touched without the set lock
 * is accessed through these macros, and every call site says what it
 * orders and what it pairs with.  A plain access to a shared field is a
 * bug unless a comment explains why it is safe (e.g. written once before
 * the region was published).
 *
 * Wake protocol (used by every wait in libvdi):
 *
 *   waiter                          waker
 *   ------                          -----
 *   vdi_atomic_inc(waiters)         publish the state (store-release)
 *   seq = vdi_load_acquire(seqword) vdi_atomic_inc(seqword)
 *   check the condition             if (vdi_load_acquire(waiters))
 *   futex_wait(seqword, seq, slice)     futex_wake(seqword)
 *   vdi_atomic_dec(waiters)
 *
 * Both increments are sequentially consistent RMWs: if the waker reads
 * waiters == 0 its increment of seq precedes the waiter's load of seq, so
 * the waiter sees the published state when it checks the condition; if
 * the waiter sleeps, the waker sees waiters > 0 or futex_wait finds seq
 * changed and returns at once.  Waits are sliced (100 ms at most) so a
 * corrupt peer that scribbles over these words costs latency, never a
 * hang, and so peer death is checked regularly.
 *
 * This header is a leaf: it depends on the compiler and the kernel only,
 * so every module may include it and it includes none of them.
 */
#ifndef VDI_BARRIER_H
#define VDI_BARRIER_H

#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define vdi_load_acquire(p)     __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define vdi_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define vdi_load_relaxed(p)     __atomic_load_n((p), __ATOMIC_RELAXED)
#define vdi_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define vdi_atomic_inc(p)       __atomic_add_fetch((p), 1, __ATOMIC_SEQ_CST)
#define vdi_atomic_dec(p)       __atomic_sub_fetch((p), 1, __ATOMIC_SEQ_CST)
#define vdi_atomic_add(p, v)    __atomic_add_fetch((p), (v), __ATOMIC_RELAXED)
#define vdi_cas(p, expected, desired)                                                \
	__atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_SEQ_CST, \
	                            __ATOMIC_SEQ_CST)

/* Sleeps while *word == expected, at most timeout_ms.  Shared (not
 * private) futex: the word lives in memory mapped by several processes.
 * Returns on wake, timeout, value change or signal; the caller re-checks
 * its condition in every case (EAGAIN, EINTR and ETIMEDOUT all mean
 * "look again"), so the result is not reported. */
static inline void vdi_futex_wait(uint32_t *word, uint32_t expected, uint32_t timeout_ms)
{
	struct timespec ts = {
		.tv_sec = timeout_ms / 1000,
		.tv_nsec = (long)(timeout_ms % 1000) * 1000000L,
	};

	syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
}

static inline void vdi_futex_wake_all(uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Bumps *seq and wakes its sleepers if any: the waker half of the wake
 * protocol above. */
static inline void vdi_wake(uint32_t *seq, uint32_t *waiters)
{
	vdi_atomic_inc(seq);
	if (__atomic_load_n(waiters, __ATOMIC_SEQ_CST))
		vdi_futex_wake_all(seq);
}

/*
 * Race-detector annotations.  A shared buffer changes hands through the
 * rings, whose release/acquire pairs ThreadSanitizer cannot follow: the
 * two sides use different mappings (different addresses) or different
 * processes.  The side that hands a buffer over releases its address;
 * the side that receives it acquires it.  No code in normal builds.
 */
#if defined(__SANITIZE_THREAD__)
#define VDI_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VDI_TSAN 1
#endif
#endif
#ifdef VDI_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define vdi_tsan_acquire(p) __tsan_acquire((void *)(p))
#define vdi_tsan_release(p) __tsan_release((void *)(p))
#else
#define vdi_tsan_acquire(p) ((void)(p))
#define vdi_tsan_release(p) ((void)(p))
#endif

#endif /* VDI_BARRIER_H */
