/* SPDX-License-Identifier: MIT */
/*
 * pump.c - the thread that waits on a device's stream for FUSE requests.
 *
 * vdi_cstream_peek (backup) and vdi_cstream_reserve (restore) block until
 * the server sends the next command, and nothing but an abort of the set
 * wakes them.  A FUSE request, though, must be able to give up at once
 * when its process gets a signal (the kernel sends an INTERRUPT; dd, for
 * one, catches SIGINT and SIGUSR1), and giving up must lose no byte.  So
 * the blocking call runs on the device's pump thread, and the request
 * waits for its result on a condition variable it can leave:
 *
 *   request                          pump
 *   -------                          ----
 *   want = len, signal          -->  n = peek/reserve(s, &p, want)
 *   wait (woken by the result        have = 1, signal
 *     or the request's interrupt:
 *     EINTR, the call stays
 *     pending)
 *   take n, p; have = 0
 *   reply / copy, advance/commit
 *
 * peek and reserve consume nothing, so a result nobody took (the request
 * was interrupted) simply serves the next request.  The stream is never
 * used by two threads at once: the pump calls it only between `want` and
 * `have`, the request only after taking `have` and before the next
 * `want`, and dev->io serializes the requests of a device.
 *
 * Read-ahead (backup only): once a request consumed its bytes, it asks
 * the pump for the next ones at once (fs_pump_prefetch), so the wait for
 * the server's next VDC_Write overlaps the kernel's copy to the reader
 * and the reader's own work, and the next request usually finds its
 * result ready.  When the server already sent the next VDC_Write (it
 * usually has, with a few buffers in flight) the request takes it itself
 * with vdi_cstream_peek_nowait and leaves the pump asleep: the pump is
 * woken only when there is something to wait for, which halves the
 * daemon's context switches per MiB (docs/performance.md, run E).  The
 * call is safe on the request's thread because the pump sleeps until
 * `want`, and only a request holding dev->io sets it.
 * A request that finds the pump idle tries the same call itself first
 * (vdi_cstream_reserve_nowait for a restore, whose VDC_Reads are usually
 * pending already), and wakes the pump only if it would have to wait.
 * No read-ahead for restores: a pending reserve would keep the pump
 * inside the stream when the writer closes, and the orderly close must
 * be the only call on the stream then.
 *
 * Stopping: a pump waiting for `want` stops at once; a pump inside a
 * stream call only returns when the set is aborted, so whoever stops a
 * busy pump aborts the set first (fs_pump_busy tells).  Pointers handed
 * out stay valid until the next call on the stream, as vdi_cstream says.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "vdifs.h"

static void pump_result_locked(struct fs_pump *pm, ssize_t n, void *p);

static void *pump_main(void *arg)
{
	struct fs_pump *pm = arg;
	size_t len;
	ssize_t n;
	void *p;

	pthread_setname_np(pthread_self(), "vdifs-pump"); /* for top -H, perf */
	pthread_mutex_lock(&pm->m);
	for (;;) {
		while (!pm->quit && !(pm->want && !pm->have))
			pthread_cond_wait(&pm->c, &pm->m);
		if (pm->quit)
			break;
		len = pm->want;
		pm->busy = 1;
		pthread_mutex_unlock(&pm->m);
		p = NULL;
		if (pm->t)
			n = pm->writer ? vdi_tarstream_reserve(pm->t, &p, len)
			               : vdi_tarstream_peek(pm->t, (const void **)&p, len);
		else if (pm->writer)
			n = vdi_cstream_reserve(pm->s, &p, len);
		else
			n = vdi_cstream_peek(pm->s, (const void **)&p, len);
		pthread_mutex_lock(&pm->m);
		pump_result_locked(pm, n, p);
		pm->want = 0;
		pm->busy = 0;
		pthread_cond_broadcast(&pm->c);
	}
	pthread_mutex_unlock(&pm->m);
	return NULL;
}

int fs_pump_start(struct fs_pump *pm, struct vdi_cstream *s, struct vdi_tarstream *t, int writer)
{
	sigset_t all, old;
	int rc;

	memset(pm, 0, sizeof(*pm));
	pthread_mutex_init(&pm->m, NULL);
	pthread_cond_init(&pm->c, NULL);
	pm->s = s;
	pm->t = t;
	pm->writer = writer;
	/* signals are for libfuse's threads, which end the session */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&pm->th, NULL, pump_main, pm);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		pthread_mutex_destroy(&pm->m);
		pthread_cond_destroy(&pm->c);
		return -rc;
	}
	pm->started = 1;
	return 0;
}

int fs_pump_busy(struct fs_pump *pm)
{
	int busy;

	if (!pm->started)
		return 0;
	pthread_mutex_lock(&pm->m);
	busy = pm->busy || (pm->want && !pm->have);
	pthread_mutex_unlock(&pm->m);
	return busy;
}

void fs_pump_stop(struct fs_pump *pm)
{
	if (!pm->started)
		return;
	pthread_mutex_lock(&pm->m);
	pm->quit = 1;
	pthread_cond_broadcast(&pm->c);
	pthread_mutex_unlock(&pm->m);
	pthread_join(pm->th, NULL);
	pthread_mutex_destroy(&pm->m);
	pthread_cond_destroy(&pm->c);
	pm->started = 0;
}

/* The result of a stream call into the pump's slot; m held. */
static void pump_result_locked(struct fs_pump *pm, ssize_t n, void *p)
{
	if (n < 0) {
		snprintf(pm->msg, sizeof(pm->msg), "%s", vdi_last_error());
		n = -fs_errno((int)n); /* where the engine's answer enters */
	}
	pm->n = n;
	pm->p = p;
	pm->have = 1;
}

void fs_pump_prefetch(struct fs_pump *pm, size_t len)
{
	const void *p = NULL;
	ssize_t n = VD_E_TIMEOUT;
	int idle;

	pthread_mutex_lock(&pm->m);
	idle = !pm->have && !pm->want;
	pthread_mutex_unlock(&pm->m);
	if (!idle)
		return;
	/* The pump sleeps until `want` and only this request (dev->io held)
	 * sets it: the stream is ours for a call that does not wait. */
	if (pm->s && !pm->writer)
		n = vdi_cstream_peek_nowait(pm->s, &p, len);
	pthread_mutex_lock(&pm->m);
	if (n != VD_E_TIMEOUT) {
		pump_result_locked(pm, n, (void *)p); /* no wakeup of the pump */
	} else {
		pm->want = len;
		pthread_cond_broadcast(&pm->c);
	}
	pthread_mutex_unlock(&pm->m);
}

/* With the pump idle (no result, nothing asked), the stream call without
 * a wait on the request's thread: 1 with its result in *out, or 0 (the
 * pump must wait for it).  Safe for the reason fs_pump_prefetch's is. */
static int pump_try(struct fs_pump *pm, size_t len, void **p, ssize_t *out, char *msg,
                    size_t msglen)
{
	const void *cp = NULL;
	ssize_t n;
	int idle;

	if (!pm->s)
		return 0; /* the tar stream has no such call */
	pthread_mutex_lock(&pm->m);
	idle = !pm->have && !pm->want;
	pthread_mutex_unlock(&pm->m);
	if (!idle)
		return 0;
	n = pm->writer ? vdi_cstream_reserve_nowait(pm->s, p, len)
	               : vdi_cstream_peek_nowait(pm->s, &cp, len);
	if (!pm->writer)
		*p = (void *)cp;
	if (n == VD_E_TIMEOUT)
		return 0;
	if (n < 0) {
		snprintf(msg, msglen, "%s", vdi_last_error());
		n = -fs_errno((int)n);
	}
	*out = n;
	return 1;
}

ssize_t fs_pump_get(struct fs_pump *pm, fuse_req_t req, size_t len, void **p, char *msg,
                    size_t msglen)
{
	struct fs_wake w;
	ssize_t n;
	int rc = 0;

	/* an idle pump: what the server already sent needs no wait */
	if (pump_try(pm, len, p, &n, msg, msglen))
		return n;
	/* woken by the pump's result or the request's interrupt */
	fs_wake_on(req, &w, &pm->m, &pm->c);
	pthread_mutex_lock(&pm->m);
	if (!pm->have && !pm->want) {
		pm->want = len;
		pthread_cond_broadcast(&pm->c);
	}
	while (!pm->have && !(rc = fs_req_check(req)))
		pthread_cond_wait(&pm->c, &pm->m);
	if (!pm->have) {
		pthread_mutex_unlock(&pm->m);
		fs_wake_off(req);
		return rc; /* the call stays pending for the next one */
	}
	n = pm->n;
	*p = pm->p;
	if (n < 0)
		snprintf(msg, msglen, "%s", pm->msg);
	else if ((size_t)n > len)
		n = (ssize_t)len; /* the result of a bigger, interrupted request */
	pm->have = 0;
	pthread_mutex_unlock(&pm->m);
	fs_wake_off(req);
	return n;
}
