/* SPDX-License-Identifier: MIT */
/*
 * base.c - what every module of fs/ uses, and which uses none of them:
 * the log (syslog once daemonized, stderr before), request tracing (-d),
 * the clock, the one mapping from engine codes to errno, and the check a
 * waiting request makes (interrupted? session ending?).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "vdifs.h"

static int log_level = VDI_LOG_WARN;
static int log_syslog;
static int log_requests; /* -d: one line per request */
static uint64_t rq_next_id;

void fs_log_setup(int debug, int use_syslog)
{
	if (debug) {
		log_level = VDI_LOG_DEBUG;
		log_requests = 1;
		vdi_log_set_level(VDI_LOG_INFO);
	}
	log_syslog = use_syslog;
}

uint64_t fs_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void log_line(enum vdi_log_level level, const char *msg)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

	char safe[1024];

	/* Set names come from mkdir: never log raw control bytes. */
	vdi_escape_text(safe, sizeof(safe), msg);
	if (log_syslog)
		syslog(prio[level], "%s", safe);
	else
		fprintf(stderr, "vdifs: %s: %s\n", names[level], safe);
}

void fs_log(enum vdi_log_level level, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	if ((int)level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_line(level, msg);
}

/* libvdi's messages go to the same place as ours. */
void fs_engine_sink(void *ctx, enum vdi_log_level level, const char *msg)
{
	char line[600];

	(void)ctx;
	snprintf(line, sizeof(line), "libvdi: %s", msg);
	log_line(level, line);
}

void fs_rq_begin(struct fs_rq *r, fuse_req_t req, const char *op, fuse_ino_t ino, size_t size)
{
	r->req = req;
	r->op = op;
	r->ino = ino;
	r->size = size;
	if (!log_requests)
		return;
	r->id = __atomic_add_fetch(&rq_next_id, 1, __ATOMIC_RELAXED);
	r->t0_us = now_us();
}

void fs_rq_end(struct fs_rq *r, long result)
{
	char res[48];

	if (!log_requests)
		return;
	if (result < 0)
		snprintf(res, sizeof(res), "%s", strerror((int)-result));
	else
		snprintf(res, sizeof(res), "%ld", result);
	fs_log(VDI_LOG_DEBUG, "req %llu %s ino %llu size %zu -> %s %lluus",
	       (unsigned long long)r->id, r->op, (unsigned long long)r->ino, r->size, res,
	       (unsigned long long)(now_us() - r->t0_us));
}

/* The one place where a libvdi code becomes an errno (STYLE.md rule 4);
 * vdifs(1) "ERRORS" prints this table.  Every engine answer is converted
 * here, where it enters fs/ (the set and device calls below, the pump's
 * stream calls, devfile's advance and commit); nothing in fs/ carries a
 * VD_E_* code further. */
int fs_errno(int rc)
{
	switch (rc) {
	case NOERROR: return 0;
	case VD_E_TIMEOUT: return ETIMEDOUT;
	case VD_E_SECURITY: return EACCES;
	case VD_E_INVALID: return EINVAL;
	case VD_E_INSTANCE_NAME: return EINVAL;
	case VD_E_NOTSUPPORTED: return EINVAL;
	case VD_E_MEMORY: return ENOMEM;
	case VD_E_BUSY: return EEXIST;
	case VD_E_OPEN: return EBUSY;
	case VD_E_QUEUE_FULL: return EAGAIN;
	case VD_E_CLOSE: return ENOSPC; /* the server takes no more bytes */
	case VD_E_ABORT:                /* fall through: the set failed */
	case VD_E_PROTOCOL:
	case VD_E_IO_ERROR:
	case VD_E_UNEXPECTED:
	case VD_E_NOTOPEN:
	default: return EIO;
	}
}

int fs_req_check(fuse_req_t req)
{
	struct vdifs *fs = fuse_req_userdata(req);

	if (__atomic_load_n(&fs->stopping, __ATOMIC_ACQUIRE) || fuse_session_exited(fs->se))
		return -ESHUTDOWN;
	if (req && fuse_req_interrupted(req))
		return -EINTR;
	return 0;
}

/*
 * Waking a waiting request.  A request that sleeps on a condition
 * variable registers this callback with libfuse, which calls it when the
 * kernel sends the request's INTERRUPT (the caller got a signal), so no
 * wait needs a timeout to notice one.  libfuse calls it holding the
 * request's own lock; fuse_req_interrupt_func takes that lock too, which
 * is why both calls below must be made without w->m held, and why, once
 * fs_wake_off returned, no callback runs any more with w (the stack
 * frame that holds it may go).  The callback takes w->m around the
 * broadcast, so a waiter that checked fuse_req_interrupted under w->m
 * and then went to sleep cannot miss it.
 */
static void wake_on_interrupt(fuse_req_t req, void *data)
{
	struct fs_wake *w = data;

	(void)req;
	pthread_mutex_lock(w->m);
	pthread_cond_broadcast(w->c);
	pthread_mutex_unlock(w->m);
}

void fs_wake_on(fuse_req_t req, struct fs_wake *w, pthread_mutex_t *m, pthread_cond_t *c)
{
	w->m = m;
	w->c = c;
	if (req)
		fuse_req_interrupt_func(req, wake_on_interrupt, w);
}

void fs_wake_off(fuse_req_t req)
{
	if (req)
		fuse_req_interrupt_func(req, NULL, NULL);
}

void fs_deadline(struct timespec *ts, uint32_t ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Replies that devfile.c and ops.c share, each logged with -d. */
void fs_reply_err(struct fs_rq *r, int err)
{
	fs_rq_end(r, -(long)err);
	fuse_reply_err(r->req, err);
}

void fs_reply_write(struct fs_rq *r, size_t n)
{
	fs_rq_end(r, (long)n);
	fuse_reply_write(r->req, n);
}
