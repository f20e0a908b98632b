/* SPDX-License-Identifier: MIT */
/*
 * sstream.c - stream adapter, server side: byte streams in and out of the
 * devices of a configured server set.  Built only on the public server API
 * of vdi.h.
 *
 * Pool.  vdi_sstream_pool_new allocates buffer_count buffers of
 * maxTransferSize with vdi_server_allocate_buffer (the caller requested
 * them with RequestBuffers).  Each buffer carries its own VDS_Command, so a
 * data command is "a buffer in flight" and the in-flight budget across all
 * the devices of the pool is buffer_count.  Free buffers sit on one list.
 *
 * Lock.  One mutex per pool (p->lock) protects the free list, the stream
 * count, the abort flag and, in every stream, the fields marked (lock):
 * the in-flight count, the done flags of the buffers, the failure records.
 * One condition variable (p->cond) is broadcast on every completion and on
 * every buffer released: waiters re-check their own condition.  The lock is
 * never held across a call into the engine, because SendCommand may run the
 * completion routine synchronously on the calling thread (D8), and never
 * across a memcpy.
 *
 * Threads.  Each stream is driven by one thread at a time (its owner); the
 * completion routines run on the thread running
 * vdi_server_execute_completion_agent (or synchronously inside SendCommand
 * when it fails, D8: failures are handled in the routine only, the return
 * code of SendCommand is ignored).  Fields without (lock) belong to the
 * owner.
 *
 * Backup (VDF_WriteMedia).  write copies the caller's bytes into the
 * current buffer (one memcpy per byte); a full buffer is sent as VDC_Write
 * of transfer_size bytes with inPosition = its byte offset.  drain sends the
 * tail padded with zeros to a blockSize multiple and waits until nothing is
 * in flight.  The routine checks each completion (ERROR_SUCCESS and every
 * byte) and returns the buffer to the pool.  vdi_sstream_command sends its
 * command behind the data commands already sent; a partly filled buffer is
 * not sent (that would insert padding mid-stream): drain first.  Closing a
 * stream whose written bytes were never drained is VD_E_PROTOCOL, so a
 * forgotten drain cannot pass for a complete backup.
 *
 * Restore (VDF_ReadMedia).  read keeps up to a fair share of the buffers
 * (buffer_count / open streams, at least 1) in flight as VDC_Read commands,
 * in a ring in send order, and consumes them strictly in that order: the
 * routine only marks a buffer done, the owner checks its code when it
 * reaches the head.  ERROR_HANDLE_EOF or ERROR_NO_DATA_DETECTED is the end
 * of the stream after its bytes; reads still in flight behind it are
 * ignored (and reclaimed when they complete).  A buffer returns to the pool
 * once its bytes were copied out.
 *
 * Failures.  The first failed command (any code but the ones above, or a
 * Write that stored fewer bytes than sent) is recorded with its byte offset
 * and makes the stream fail: every later call returns the same negative
 * code with a message naming device, command, code and offset.  Codes map
 * to VD_E_ABORT (ERROR_OPERATION_ABORTED), the SendCommand failures of
 * spec 7.3 (ERROR_NO_SYSTEM_RESOURCES, ERROR_INVALID_HANDLE,
 * ERROR_INVALID_PARAMETER), and VD_E_IO_ERROR for an error the client
 * reported.  A failed non-data command (vdi_sstream_command) is only
 * recorded for vdi_sstream_error; its code goes back to the caller.
 *
 * Abort.  An abort from either side completes every outstanding command
 * with ERROR_OPERATION_ABORTED through the routines, which wakes the
 * waiters; a waiter with nothing in flight checks the set's state every
 * 100 ms (vdi_server_get_configuration returns VD_E_ABORT), and the first
 * to see the abort wakes all the others.  Each wait is bounded by the
 * pool's timeout (VD_E_TIMEOUT).  vdi_sstream_close never frees a command
 * still in flight: past the timeout it aborts the set, whose agent then
 * completes everything at once.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define SS_TICK_MS            100 /* abort check interval of an idle waiter */
#define SS_ERROR_INVALID_DATA 13u /* Win32: a read behind the end carried bytes */

struct ss_buf {
	VDS_Command cmd;           /* completionContext = this buffer */
	uint8_t *data;             /* from vdi_server_allocate_buffer */
	struct vdi_sstream *owner; /* stream that sent it */
	uint64_t offset;           /* stream byte offset of data[0] */
	uint32_t len;              /* backup: bytes of data sent */
	uint32_t stored;           /* backup: of which the client stored (removable) */
	struct ss_buf *next;       /* free list link (lock) */
	int done;                  /* routine ran (lock) */
};

struct vdi_sstream_pool {
	struct vdi_server *srv;
	VDConfig cfg; /* snapshot after configuration */
	uint32_t timeout;
	uint32_t count;
	struct ss_buf *bufs; /* count buffers */
	pthread_mutex_t lock;
	pthread_cond_t cond;           /* completion, release, abort */
	struct ss_buf *free;           /* (lock) */
	uint32_t nfree;                /* (lock) */
	uint32_t streams;              /* (lock) open streams */
	int aborted;                   /* (lock) set seen aborted */
	vdi_sstream_command_fn before; /* called before each control command */
	void *before_ctx;
	uint64_t checked; /* (lock) last abort check, ms */
};

/* A failed command. */
struct ss_fault {
	int set;
	uint32_t command, code, bytes, size;
	uint64_t offset;
};

struct vdi_sstream {
	struct vdi_sstream_pool *p;
	struct vdi_server_device *dev;
	uint32_t tsize; /* bytes per data command */
	int restore;    /* VDF_ReadMedia stream; -1 undecided (both configured) */
	uint64_t bytes; /* caller bytes moved */
	uint64_t sent;  /* offset of the next data command */
	/* backup */
	struct ss_buf *cur; /* buffer being filled */
	uint32_t fill;
	/* restore: ring of buffers sent, in order */
	struct ss_buf **ring; /* p->count slots */
	uint32_t head, tail;  /* free running */
	uint32_t off, avail;  /* head: bytes copied out / valid */
	int head_ok;          /* head's completion was checked */
	int eof;              /* end seen at or before the head */
	int ended;            /* end consumed: read returns 0 */
	/* non-data command */
	VDS_Command ctl;
	int ctl_busy;          /* (lock) ctl in flight */
	uint32_t inflight;     /* (lock) commands sent, not completed */
	struct ss_fault first; /* (lock) first failed command */
	struct ss_fault fatal; /* (lock) first failed data command */
	/* media (D50) */
	struct ss_buf *redo; /* (lock) backup: Writes stored in part, to re-issue */
	int eom;             /* (lock) backup: ERROR_END_OF_MEDIA seen: VDC_Load */
	uint32_t end_code;   /* (lock) restore: completion code that ended it */
	uint64_t end_at;     /* (lock) restore: stream offset where it ended */
	uint32_t loads;      /* VDC_Load sent */
	uint32_t window;     /* (lock) restore: reads in flight at most, 0 = fair share */
};

static const char *ss_name(const struct vdi_sstream *w)
{
	return vdi_server_device_name(w->dev);
}

static uint64_t ss_deadline(const struct vdi_sstream_pool *p)
{
	if (vdi_timeout_infinite(p->timeout))
		return UINT64_MAX;
	return vdi_now_ms() + p->timeout;
}

/* Checks the set's state; lock held, released during the call. */
static void ss_check_abort(struct vdi_sstream_pool *p)
{
	VDConfig cfg;
	int rc;

	p->checked = vdi_now_ms();
	pthread_mutex_unlock(&p->lock);
	rc = vdi_server_get_configuration(p->srv, &cfg);
	pthread_mutex_lock(&p->lock);
	if (rc == VD_E_ABORT && !p->aborted) {
		p->aborted = 1;
		pthread_cond_broadcast(&p->cond);
	}
}

/* Absolute CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait. */
static struct timespec ss_abs_ms(uint64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/*
 * One wait on p->cond, lock held: at most until deadline and one tick.
 * Returns 0 (re-check your condition), VD_E_TIMEOUT past the deadline or
 * VD_E_ABORT once the set is known aborted.
 */
static int ss_wait(struct vdi_sstream_pool *p, uint64_t deadline)
{
	uint64_t now = vdi_now_ms(), until;
	struct timespec ts;

	if (p->aborted)
		return VD_E_ABORT;
	if (now >= deadline)
		return VD_E_TIMEOUT;
	until = deadline - now < SS_TICK_MS ? deadline : now + SS_TICK_MS;
	ts = ss_abs_ms(until - now);
	pthread_cond_timedwait(&p->cond, &p->lock, &ts);
	if (vdi_now_ms() - p->checked >= SS_TICK_MS)
		ss_check_abort(p);
	return p->aborted ? VD_E_ABORT : 0;
}

static int ss_code_rc(uint32_t code)
{
	switch (code) {
	case ERROR_OPERATION_ABORTED: return VD_E_ABORT;
	case ERROR_NO_SYSTEM_RESOURCES: return VD_E_QUEUE_FULL;
	case ERROR_INVALID_HANDLE: return VD_E_PROTOCOL;
	case ERROR_INVALID_PARAMETER: return VD_E_INVALID;
	default: return VD_E_IO_ERROR;
	}
}

/* Message and code of a fault. */
static int ss_report(const struct vdi_sstream *w, const struct ss_fault *f)
{
	if (f->code == ERROR_SUCCESS)
		return vdi_fail(
			VD_E_IO_ERROR,
			"stream on device '%s' failed: %s at byte offset %llu moved %u of %u bytes",
			ss_name(w), vdi_strcommand(f->command), (unsigned long long)f->offset,
			f->bytes, f->size);
	return vdi_fail(
		ss_code_rc(f->code),
		"stream on device '%s' failed: %s at byte offset %llu completed with %s (%u)",
		ss_name(w), vdi_strcommand(f->command), (unsigned long long)f->offset,
		vdi_strcompletion(f->code), f->code);
}

/* Records a failed command; lock held. */
static void ss_record(struct vdi_sstream *w, const VDS_Command *cmd, uint64_t offset, int fatal)
{
	struct ss_fault f = {
		.set = 1,
		.command = cmd->commandCode,
		.code = cmd->completionCode,
		.bytes = cmd->bytesTransferred,
		.size = cmd->size,
		.offset = offset,
	};

	if (!w->first.set)
		w->first = f;
	if (fatal && !w->fatal.set)
		w->fatal = f;
}

/*
 * The set is aborted: the agent returns every command in flight with
 * ERROR_OPERATION_ABORTED at once.  Give it a moment (1 s at most) so that
 * the failure names the command and its offset; lock held.
 */
static int ss_abort_fail(struct vdi_sstream *w)
{
	uint64_t end = vdi_now_ms() + 1000;
	struct timespec ts;

	while (w->inflight && !w->fatal.set && vdi_now_ms() < end) {
		ts = ss_abs_ms(10);
		pthread_cond_timedwait(&w->p->cond, &w->p->lock, &ts);
	}
	if (w->fatal.set)
		return ss_report(w, &w->fatal);
	if (w->first.set) /* the client's own failure, or the abort's first victim */
		return ss_report(w, &w->first);
	return vdi_fail(VD_E_ABORT,
	                "stream on device '%s': the set was aborted after byte offset %llu",
	                ss_name(w), (unsigned long long)(w->restore ? w->bytes : w->sent));
}

/* 0, or the stream's failure (failed data command, abort); lock held. */
static int ss_status(struct vdi_sstream *w)
{
	if (w->fatal.set)
		return ss_report(w, &w->fatal);
	if (w->p->aborted)
		return ss_abort_fail(w);
	return 0;
}

static int ss_wait_fail(struct vdi_sstream *w, int rc, const char *what)
{
	if (rc == VD_E_TIMEOUT)
		return vdi_fail(rc, "stream on device '%s': no %s within %u ms", ss_name(w), what,
		                w->p->timeout);
	return ss_abort_fail(w);
}

static void ss_put(struct vdi_sstream_pool *p, struct ss_buf *b)
{
	b->owner = NULL;
	b->next = p->free;
	p->free = b;
	p->nfree++;
	pthread_cond_broadcast(&p->cond);
}

static struct ss_buf *ss_take_free(struct vdi_sstream_pool *p)
{
	struct ss_buf *b = p->free;

	if (b) {
		p->free = b->next;
		p->nfree--;
	}
	return b;
}

/*
 * A completed Write; lock held.  Stored whole: the buffer is free.  On
 * removable media (spec 10.5) ERROR_END_OF_MEDIA asks for the next medium
 * (VDC_Load) and a Write stored in part is re-issued for the rest, by the
 * owner (ss_media); anything else fails the stream.
 */
static void ss_write_done(struct vdi_sstream *w, struct ss_buf *b)
{
	const VDS_Command *cmd = &b->cmd;
	int removable = (w->p->cfg.features & VDF_Removable) != 0;
	uint32_t code = cmd->completionCode;

	/* a short success is re-issued (issue 12), but one that stored
	 * nothing would be re-issued forever: it fails the stream */
	if (cmd->bytesTransferred <= cmd->size &&
	    (code == ERROR_SUCCESS || (removable && code == ERROR_END_OF_MEDIA)) &&
	    (cmd->bytesTransferred || code != ERROR_SUCCESS)) {
		b->stored += cmd->bytesTransferred;
		if (code == ERROR_END_OF_MEDIA)
			w->eom = 1;
		if (b->stored == b->len) {
			ss_put(w->p, b);
			return;
		}
		if (removable) {
			b->next = w->redo;
			w->redo = b;
			return;
		}
	}
	ss_record(w, cmd, b->offset + b->stored, 1);
	ss_put(w->p, b);
}

/* Completion routine of data commands (agent thread, or D8). */
static void ss_data_done(VDS_Command *cmd)
{
	struct ss_buf *b = cmd->completionContext;
	struct vdi_sstream *w = b->owner;
	struct vdi_sstream_pool *p = w->p;

	pthread_mutex_lock(&p->lock);
	w->inflight--;
	b->done = 1;
	if (!w->restore) {
		ss_write_done(w, b);
	} else if (cmd->completionCode != ERROR_SUCCESS &&
	           cmd->completionCode != ERROR_HANDLE_EOF &&
	           cmd->completionCode != ERROR_NO_DATA_DETECTED &&
	           cmd->completionCode != ERROR_FILEMARK_DETECTED) {
		ss_record(w, cmd, b->offset, 0); /* fatal in order, at the head */
	}
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/* Completion routine of non-data commands. */
static void ss_ctl_done(VDS_Command *cmd)
{
	struct vdi_sstream *w = cmd->completionContext;
	struct vdi_sstream_pool *p = w->p;

	pthread_mutex_lock(&p->lock);
	w->inflight--;
	w->ctl_busy = 0;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/* Sends b as a data command; lock not held. */
static void ss_send(struct vdi_sstream *w, struct ss_buf *b, uint32_t size)
{
	struct vdi_sstream_pool *p = w->p;

	memset(&b->cmd, 0, sizeof(b->cmd));
	b->cmd.commandCode = w->restore ? VDC_Read : VDC_Write;
	b->cmd.size = size;
	b->cmd.inPosition = w->sent;
	b->cmd.buffer = b->data;
	b->cmd.completionRoutine = ss_data_done;
	b->cmd.completionContext = b;
	b->offset = w->sent;
	b->len = size;
	b->stored = 0;
	b->owner = w;
	b->done = 0;
	w->sent += size;
	pthread_mutex_lock(&p->lock);
	w->inflight++;
	pthread_mutex_unlock(&p->lock);
	(void)vdi_server_send_command(w->dev, &b->cmd); /* D8: see routine */
}

/* ---------------------------------------------------------------- pool */

/* Frees the first n buffers, the sync objects and p. */
static void ss_pool_release(struct vdi_sstream_pool *p, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		vdi_server_free_buffer(p->srv, p->bufs[i].data, p->cfg.maxTransferSize);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p->bufs);
	free(p);
}

static int ss_pool_init_sync(struct vdi_sstream_pool *p)
{
	pthread_condattr_t ca;
	int err;

	err = pthread_condattr_init(&ca);
	if (!err)
		err = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!err)
		err = pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (!err) {
		err = pthread_mutex_init(&p->lock, NULL);
		if (err)
			pthread_cond_destroy(&p->cond);
	}
	return err ? vdi_fail_errno(err, "cannot create stream pool: pthread init") : 0;
}

static struct vdi_sstream_pool *ss_pool_alloc(uint32_t count)
{
	struct vdi_sstream_pool *p = calloc(1, sizeof(*p));

	if (p)
		p->bufs = calloc(count, sizeof(*p->bufs));
	if (p && !p->bufs) {
		free(p);
		p = NULL;
	}
	return p;
}

int vdi_sstream_pool_new(struct vdi_server *s, uint32_t buffer_count, uint32_t timeout_ms,
                         struct vdi_sstream_pool **out)
{
	struct vdi_sstream_pool *p;
	uint32_t n = 0;
	int rc;

	if (out)
		*out = NULL;
	if (!out || !s || !buffer_count || buffer_count > 1u << 20)
		return vdi_fail(VD_E_INVALID, "cannot create stream pool: %s",
		                !out || !s ? "null argument" : "bad buffer count");
	p = ss_pool_alloc(buffer_count);
	if (!p)
		return vdi_fail(VD_E_MEMORY, "cannot create stream pool: out of memory");
	p->srv = s;
	p->timeout = timeout_ms;
	p->count = buffer_count;
	rc = ss_pool_init_sync(p);
	if (rc) {
		free(p->bufs);
		free(p);
		return rc;
	}
	rc = vdi_server_get_configuration(s, &p->cfg);
	while (!rc && n < buffer_count) {
		rc = vdi_server_allocate_buffer(s, &p->bufs[n].data, p->cfg.maxTransferSize, 0);
		if (!rc)
			ss_put(p, &p->bufs[n++]);
	}
	if (rc) {
		ss_pool_release(p, n);
		return rc;
	}
	*out = p;
	return 0;
}

void vdi_sstream_pool_on_command(struct vdi_sstream_pool *p, vdi_sstream_command_fn fn, void *ctx)
{
	if (!p)
		return;
	p->before = fn;
	p->before_ctx = ctx;
}

void vdi_sstream_pool_free(struct vdi_sstream_pool *p)
{
	if (!p)
		return;
	if (p->streams) {
		vdi_log(VDI_LOG_ERROR, "stream pool freed with %u streams open: leaked",
		        p->streams);
		return;
	}
	ss_pool_release(p, p->count);
}

/* -------------------------------------------------------------- streams */

int vdi_sstream_open(struct vdi_sstream_pool *p, struct vdi_server_device *d,
                     uint32_t transfer_size, struct vdi_sstream **out)
{
	uint32_t bs = p ? p->cfg.blockSize : 0, mts = p ? p->cfg.maxTransferSize : 0;
	struct vdi_sstream *w;

	if (out)
		*out = NULL;
	if (!out || !p || !d)
		return vdi_fail(VD_E_INVALID, "cannot open stream: null argument");
	if (!transfer_size)
		transfer_size = mts;
	if (!bs || transfer_size % bs || transfer_size > mts)
		return vdi_fail(VD_E_INVALID,
		                "cannot open stream on device '%s': transfer size %u is not a "
		                "multiple of %u up to %u",
		                vdi_server_device_name(d), transfer_size, bs, mts);
	w = calloc(1, sizeof(*w));
	if (w && (p->cfg.features & VDF_ReadMedia))
		w->ring = calloc(p->count, sizeof(*w->ring));
	if (!w || ((p->cfg.features & VDF_ReadMedia) && !w->ring)) {
		free(w);
		return vdi_fail(VD_E_MEMORY, "cannot open stream on device '%s': out of memory",
		                vdi_server_device_name(d));
	}
	w->p = p;
	w->dev = d;
	w->tsize = transfer_size;
	switch (p->cfg.features & (VDF_WriteMedia | VDF_ReadMedia)) {
	case VDF_ReadMedia: w->restore = 1; break;
	case VDF_WriteMedia: w->restore = 0; break;
	default: w->restore = -1; /* both: the first data call decides */
	}
	pthread_mutex_lock(&p->lock);
	p->streams++;
	pthread_mutex_unlock(&p->lock);
	*out = w;
	return 0;
}

uint64_t vdi_sstream_bytes(const struct vdi_sstream *w)
{
	return w ? w->bytes : 0;
}

uint32_t vdi_sstream_error(const struct vdi_sstream *w, uint64_t *offset)
{
	struct vdi_sstream_pool *p;
	struct ss_fault f;

	if (!w) {
		if (offset)
			*offset = 0;
		return 0;
	}
	p = w->p;
	pthread_mutex_lock(&p->lock);
	f = w->first;
	pthread_mutex_unlock(&p->lock);
	if (offset)
		*offset = f.set ? f.offset : 0;
	return f.set ? f.code : 0;
}

/* Waits until nothing of w is in flight; lock held. */
static int ss_idle(struct vdi_sstream *w)
{
	uint64_t deadline = ss_deadline(w->p);
	uint32_t before;
	int rc;

	while (w->inflight) {
		before = w->inflight;
		rc = ss_wait(w->p, deadline);
		if (rc)
			return ss_wait_fail(w, rc, "completion of every command");
		if (w->inflight < before)
			deadline = ss_deadline(w->p);
	}
	return 0;
}

static int ss_check_dir(struct vdi_sstream *w, int restore, const char *what)
{
	if (w->restore < 0)
		w->restore = restore;
	if (w->restore == restore)
		return 0;
	return vdi_fail(VD_E_PROTOCOL, "cannot %s stream on device '%s': it is a %s stream", what,
	                ss_name(w), w->restore ? "restore" : "backup");
}

/* --------------------------------------------------------------- backup */

/* Data commands one stream may have in flight: the device queue holds
 * VDI_QUEUE_DEPTH (D7), one of which stays free for a control command
 * (vdi_sstream_command), whatever the size of the pool (BUFFERCOUNT may
 * be larger, and one device may have all of it). */
#define SS_MAX_DATA_INFLIGHT (VDI_QUEUE_DEPTH - 1)

static int ss_media(struct vdi_sstream *w);

/* Gets a buffer to fill into w->cur; lock held. */
static int ss_get_cur(struct vdi_sstream *w)
{
	uint64_t deadline = ss_deadline(w->p);
	int rc;

	for (;;) {
		rc = ss_status(w);
		if (!rc && (w->redo || w->eom))
			rc = ss_media(w); /* waits for every Write in flight */
		if (rc)
			return rc;
		w->cur = w->inflight < SS_MAX_DATA_INFLIGHT ? ss_take_free(w->p) : NULL;
		if (w->cur) {
			w->fill = 0;
			return 0;
		}
		rc = ss_wait(w->p, deadline);
		if (rc == VD_E_TIMEOUT)
			return ss_wait_fail(w, rc, "free buffer");
	}
}

/* Makes w->cur a buffer with room, after checking w's state. */
static int ss_room(struct vdi_sstream *w)
{
	int rc;

	pthread_mutex_lock(&w->p->lock);
	rc = ss_status(w);
	if (!rc && !w->cur)
		rc = ss_get_cur(w);
	pthread_mutex_unlock(&w->p->lock);
	return rc;
}

ssize_t vdi_sstream_write(struct vdi_sstream *w, const void *buf, size_t len)
{
	size_t done = 0;
	ssize_t n = 0;

	if (!w || (!buf && len))
		return vdi_fail(VD_E_INVALID, "cannot write stream: null argument");
	while (done < len) {
		void *room;

		n = vdi_sstream_reserve(w, &room);
		if (n < 0)
			break;
		n = len - done < (size_t)n ? (ssize_t)(len - done) : n;
		memcpy(room, (const uint8_t *)buf + done, (size_t)n);
		vdi_sstream_commit(w, (size_t)n); /* cannot fail: n fits the room */
		done += (size_t)n;
	}
	return done ? (ssize_t)done : n < 0 ? n : ss_check_dir(w, 0, "write");
}

ssize_t vdi_sstream_reserve(struct vdi_sstream *w, void **ptr)
{
	int rc;

	if (!w || !ptr)
		return vdi_fail(VD_E_INVALID, "cannot reserve stream room: null argument");
	rc = ss_check_dir(w, 0, "write");
	if (!rc)
		rc = ss_room(w);
	if (rc)
		return rc;
	*ptr = w->cur->data + w->fill;
	return (ssize_t)(w->tsize - w->fill);
}

int vdi_sstream_commit(struct vdi_sstream *w, size_t n)
{
	if (!w)
		return vdi_fail(VD_E_INVALID, "cannot commit stream bytes: null stream");
	if (!w->cur || n > w->tsize - w->fill)
		return vdi_fail(VD_E_INVALID,
		                "stream on device '%s': commit of %zu bytes, %u reserved",
		                ss_name(w), n, w->cur ? w->tsize - w->fill : 0);
	w->fill += (uint32_t)n;
	w->bytes += n;
	if (w->fill == w->tsize) {
		ss_send(w, w->cur, w->tsize);
		w->cur = NULL;
	}
	return 0;
}

int vdi_sstream_drain(struct vdi_sstream *w)
{
	uint32_t bs, size;
	int rc;

	if (!w)
		return vdi_fail(VD_E_INVALID, "cannot drain stream: null stream");
	rc = ss_check_dir(w, 0, "drain");
	if (rc)
		return rc;
	pthread_mutex_lock(&w->p->lock);
	rc = ss_status(w);
	pthread_mutex_unlock(&w->p->lock);
	if (rc)
		return rc; /* failed: sending the tail is pointless */
	bs = w->p->cfg.blockSize;
	if (w->cur && w->fill) {
		size = (w->fill + bs - 1) / bs * bs;
		memset(w->cur->data + w->fill, 0, size - w->fill);
		ss_send(w, w->cur, size);
		w->cur = NULL;
	}
	pthread_mutex_lock(&w->p->lock);
	if (w->cur)
		ss_put(w->p, w->cur);
	w->cur = NULL;
	rc = ss_media(w); /* waits for every Write, and for the media they end */
	pthread_mutex_unlock(&w->p->lock);
	return rc;
}

/* -------------------------------------------------------------- restore */

/* Sends reads up to w's share of the pool; lock held (dropped to send).
 * The share divides the pool among the streams open, or the devices the
 * server opened if more: a stream that starts before the others open
 * must not take the whole pool for a device whose writer may come last
 * (stripes written one after another).  Lock order: pool, then server. */
static void ss_refill(struct vdi_sstream *r)
{
	struct vdi_sstream_pool *p = r->p;
	uint32_t n = vdi_server_devices_opened(p->srv), share;
	struct ss_buf *b;

	if (n < p->streams)
		n = p->streams;
	share = p->count / (n ? n : 1);
	if (!share)
		share = 1;
	if (share > SS_MAX_DATA_INFLIGHT)
		share = SS_MAX_DATA_INFLIGHT;
	if (r->window && share > r->window)
		share = r->window;
	while (!r->eof && r->tail - r->head < share && !p->aborted &&
	       (b = ss_take_free(p)) != NULL) {
		r->ring[r->tail++ % p->count] = b;
		pthread_mutex_unlock(&p->lock);
		ss_send(r, b, r->tsize);
		pthread_mutex_lock(&p->lock);
	}
}

/* Checks the completed head read; lock held.  0 or the failure. */
static int ss_head_check(struct vdi_sstream *r, struct ss_buf *b)
{
	uint32_t code = b->cmd.completionCode;

	r->avail = b->cmd.bytesTransferred < b->cmd.size ? b->cmd.bytesTransferred : b->cmd.size;
	r->off = 0;
	r->head_ok = 1;
	if (code == ERROR_HANDLE_EOF || code == ERROR_NO_DATA_DETECTED ||
	    code == ERROR_FILEMARK_DETECTED) {
		r->eof = 1;
		r->end_code = code;
		r->end_at = b->offset + r->avail; /* reads behind it moved nothing */
	} else if (code != ERROR_SUCCESS)
		ss_record(r, &b->cmd, r->bytes, 1);
	return ss_status(r);
}

/* The head read b was consumed: return its buffer; lock held. */
static void ss_drop_head(struct vdi_sstream *r, struct ss_buf *b)
{
	r->head++;
	r->head_ok = 0;
	ss_put(r->p, b);
	r->ended = r->eof;
}

/* Copies bytes of the done head read to dst; lock held (dropped to copy). */
static ssize_t ss_consume(struct vdi_sstream *r, uint8_t *dst, size_t room)
{
	struct vdi_sstream_pool *p = r->p;
	struct ss_buf *b = r->ring[r->head % p->count];
	size_t n;
	int rc;

	if (!r->head_ok) {
		rc = ss_head_check(r, b);
		if (rc)
			return rc;
	}
	n = r->avail - r->off < room ? r->avail - r->off : room;
	pthread_mutex_unlock(&p->lock);
	memcpy(dst, b->data + r->off, n);
	pthread_mutex_lock(&p->lock);
	r->off += (uint32_t)n;
	r->bytes += n;
	if (r->off == r->avail)
		ss_drop_head(r, b);
	return (ssize_t)n;
}

/* Returns a reclaimed read sent behind the end, if done; lock held. */
static void ss_reap(struct vdi_sstream *r)
{
	struct ss_buf *b;

	while (r->ended && r->head != r->tail) {
		b = r->ring[r->head % r->p->count];
		if (!b->done)
			return;
		if (b->cmd.bytesTransferred) { /* whatever its code */
			/* bytes after the end would be lost: fail loudly (D50) */
			b->cmd.completionCode = SS_ERROR_INVALID_DATA;
			ss_record(r, &b->cmd, r->bytes, 1);
		}
		r->head++;
		ss_put(r->p, b);
	}
}

/* Zero-copy: points *ptr at up to room bytes of the completed head read
 * (waiting for it like a read); lock held.  Bytes stay until advance. */
static ssize_t ss_peek_locked(struct vdi_sstream *r, const void **ptr, size_t room)
{
	uint64_t deadline = ss_deadline(r->p);
	struct ss_buf *b;
	int rc;

	for (;;) {
		rc = ss_status(r);
		if (rc)
			return rc;
		if (r->ended) {
			ss_reap(r);
			return 0;
		}
		ss_refill(r);
		b = r->head != r->tail ? r->ring[r->head % r->p->count] : NULL;
		if (b && b->done) {
			if (!r->head_ok && (rc = ss_head_check(r, b)))
				return rc;
			if (r->avail == r->off) { /* an empty (EOF) read */
				ss_drop_head(r, b);
				continue;
			}
			*ptr = b->data + r->off;
			return (ssize_t)(r->avail - r->off < room ? r->avail - r->off : room);
		}
		rc = ss_wait(r->p, deadline);
		if (rc)
			return ss_wait_fail(r, rc, b ? "completed read" : "free buffer");
	}
}

ssize_t vdi_sstream_peek(struct vdi_sstream *r, const void **ptr, size_t len)
{
	ssize_t n;
	int rc;

	if (!r || !ptr)
		return vdi_fail(VD_E_INVALID, "cannot peek stream: null argument");
	rc = ss_check_dir(r, 1, "peek");
	if (rc)
		return rc;
	pthread_mutex_lock(&r->p->lock);
	n = ss_peek_locked(r, ptr, len);
	pthread_mutex_unlock(&r->p->lock);
	return n;
}

int vdi_sstream_advance(struct vdi_sstream *r, size_t n)
{
	struct ss_buf *b;
	int rc = 0;

	if (!r)
		return vdi_fail(VD_E_INVALID, "cannot advance stream: null stream");
	rc = ss_check_dir(r, 1, "advance");
	if (rc)
		return rc;
	pthread_mutex_lock(&r->p->lock);
	b = r->head != r->tail ? r->ring[r->head % r->p->count] : NULL;
	if (!b || !b->done || !r->head_ok || n > r->avail - r->off) {
		rc = vdi_fail(VD_E_INVALID,
		              "stream on device '%s': advance by %zu beyond the %u bytes peeked",
		              ss_name(r), n, b && r->head_ok ? r->avail - r->off : 0);
	} else {
		r->off += (uint32_t)n;
		r->bytes += n;
		if (r->off == r->avail)
			ss_drop_head(r, b);
		ss_reap(r);
	}
	pthread_mutex_unlock(&r->p->lock);
	return rc;
}

static ssize_t ss_read_locked(struct vdi_sstream *r, uint8_t *dst, size_t len)
{
	uint64_t deadline = ss_deadline(r->p);
	size_t done = 0;
	ssize_t n;
	int rc;

	while (done < len && !r->ended) {
		rc = ss_status(r);
		if (rc)
			return done ? (ssize_t)done : rc;
		ss_refill(r);
		if (r->head != r->tail && r->ring[r->head % r->p->count]->done) {
			n = ss_consume(r, dst + done, len - done);
			if (n < 0)
				return done ? (ssize_t)done : n;
			done += (size_t)n;
			deadline = ss_deadline(r->p);
			continue;
		}
		if (done)
			break;
		rc = ss_wait(r->p, deadline);
		if (rc)
			return ss_wait_fail(r, rc,
			                    r->head == r->tail ? "free buffer" : "completed read");
	}
	ss_reap(r);
	return (ssize_t)done;
}

ssize_t vdi_sstream_read(struct vdi_sstream *r, void *buf, size_t len)
{
	ssize_t n;
	int rc;

	if (!r || (!buf && len))
		return vdi_fail(VD_E_INVALID, "cannot read stream: null argument");
	rc = ss_check_dir(r, 1, "read");
	if (rc)
		return rc;
	pthread_mutex_lock(&r->p->lock);
	n = ss_read_locked(r, buf, len);
	pthread_mutex_unlock(&r->p->lock);
	return n;
}

/* ------------------------------------------------------------- commands */

/* Waits for the control command; lock held. */
static int ss_ctl_wait(struct vdi_sstream *w)
{
	uint64_t deadline = ss_deadline(w->p);
	int rc;

	while (w->ctl_busy) {
		rc = ss_wait(w->p, deadline);
		if (rc)
			rc = ss_wait_fail(w, rc, "completion");
		if (rc && w->ctl_busy)
			return rc;
	}
	return 0;
}

/* Result of the completed control command; lock held. */
static int ss_ctl_result(struct vdi_sstream *w)
{
	uint32_t code = w->ctl.completionCode;

	if (code == ERROR_SUCCESS)
		return 0;
	ss_record(w, &w->ctl, w->restore ? w->bytes : w->sent, 0);
	if (code == ERROR_OPERATION_ABORTED && !w->p->aborted)
		ss_check_abort(w->p);
	if ((code == ERROR_OPERATION_ABORTED && w->p->aborted) ||
	    code == ERROR_NO_SYSTEM_RESOURCES || code == ERROR_INVALID_HANDLE ||
	    code == ERROR_INVALID_PARAMETER) /* made by the engine (D8) */
		return vdi_fail(ss_code_rc(code),
		                "stream on device '%s': %s after byte offset %llu failed with %s",
		                ss_name(w), vdi_strcommand(w->ctl.commandCode),
		                (unsigned long long)w->sent, vdi_strcompletion(code));
	return (int)code;
}

/* Sends a control command and waits for it; lock held (dropped to send). */
static int ss_control_locked(struct vdi_sstream *w, uint32_t code, uint32_t size, uint64_t position,
                             uint64_t *out_position)
{
	int rc = w->ctl_busy ? vdi_fail(VD_E_PROTOCOL,
	                                "stream on device '%s': previous command still pending",
	                                ss_name(w))
	                     : ss_status(w);

	if (!rc && w->p->before) {
		pthread_mutex_unlock(&w->p->lock);
		rc = w->p->before(w->p->before_ctx, w, code);
		pthread_mutex_lock(&w->p->lock);
	}
	if (rc)
		return rc;
	memset(&w->ctl, 0, sizeof(w->ctl));
	w->ctl.commandCode = code;
	w->ctl.size = size;
	w->ctl.inPosition = position;
	w->ctl.completionRoutine = ss_ctl_done;
	w->ctl.completionContext = w;
	w->ctl_busy = 1;
	w->inflight++;
	pthread_mutex_unlock(&w->p->lock);
	(void)vdi_server_send_command(w->dev, &w->ctl); /* D8: see routine */
	pthread_mutex_lock(&w->p->lock);
	rc = ss_ctl_wait(w);
	if (!rc)
		rc = ss_ctl_result(w);
	if (!rc && out_position)
		*out_position = w->ctl.outPosition;
	if (!rc && code == VDC_Load)
		w->loads++;
	return rc;
}

int vdi_sstream_control(struct vdi_sstream *w, uint32_t code, uint32_t size, uint64_t position,
                        uint64_t *out_position)
{
	uint64_t at = 0;
	int rc, moves;

	if (!w || code == VDC_Read || code == VDC_Write)
		return vdi_fail(VD_E_INVALID, "cannot send command on stream: %s",
		                w ? "data command" : "null stream");
	moves = w->restore == 1 && code == VDC_SetPosition &&
	        (w->p->cfg.features & VDF_RandomAccess);
	pthread_mutex_lock(&w->p->lock);
	rc = 0;
	/* Backup on removable media: the Writes sent complete first, and a
	 * medium that ended is dealt with (VDC_Load, the rests re-issued),
	 * so the command never overtakes data it follows (a VDC_Flush must
	 * come after every byte before it is stored). */
	if (w->restore != 1 && (w->p->cfg.features & VDF_Removable))
		rc = ss_media(w);
	/* Restore of a disk: the reads go on from where SetPosition put the
	 * client, so none may be outstanding at the old offset. */
	if (!rc && moves && w->head != w->tail)
		rc = vdi_fail(
			VD_E_PROTOCOL,
			"stream on device '%s': VDC_SetPosition with reads outstanding at byte "
			"offset %llu: read to an end and resume first",
			ss_name(w), (unsigned long long)w->bytes);
	if (!rc)
		rc = ss_control_locked(w, code, size, position, moves ? &at : out_position);
	if (rc == 0 && moves) {
		w->sent = at;
		if (out_position)
			*out_position = at;
	}
	pthread_mutex_unlock(&w->p->lock);
	return rc;
}

int vdi_sstream_command(struct vdi_sstream *w, uint32_t code)
{
	return vdi_sstream_control(w, code, 0, 0, NULL);
}

/* Re-sends the rest of a Write stored in part; lock held (dropped).  A
 * command names a whole shared buffer (its handle carries no offset), so
 * the rest moves to the start of the buffer first: the buffer is ours
 * (not in flight), the copy runs unlocked. */
static void ss_resend(struct vdi_sstream *w, struct ss_buf *b)
{
	uint32_t stored = b->stored;

	b->offset += stored;
	b->len -= stored;
	b->stored = 0;
	memset(&b->cmd, 0, sizeof(b->cmd));
	b->cmd.commandCode = VDC_Write;
	b->cmd.size = b->len;
	b->cmd.inPosition = b->offset;
	b->cmd.buffer = b->data;
	b->cmd.completionRoutine = ss_data_done;
	b->cmd.completionContext = b;
	b->done = 0;
	w->inflight++;
	pthread_mutex_unlock(&w->p->lock);
	if (stored)
		memmove(b->data, b->data + stored, b->len);
	(void)vdi_server_send_command(w->dev, &b->cmd); /* D8: see routine */
	pthread_mutex_lock(&w->p->lock);
}

/*
 * Backup: waits until no Write is in flight; on removable media (spec
 * 10.5) an ERROR_END_OF_MEDIA among them gets the next medium (VDC_Load),
 * then the rest of every Write stored in part is re-issued in stream
 * order, and so on until none ends a medium again.  Lock held.  0 or the
 * failure.
 */
static int ss_media(struct vdi_sstream *w)
{
	struct ss_buf *list, *b, **pp, **low;
	int rc;

	while (!(rc = ss_idle(w)) && !(rc = ss_status(w)) && (w->redo || w->eom)) {
		if (w->eom) {
			w->eom = 0;
			rc = ss_control_locked(w, VDC_Load, 0, 0, NULL);
			if (rc > 0) { /* the client refused it: fatal, named as itself */
				ss_record(w, &w->ctl, w->sent, 1);
				return ss_report(w, &w->fatal);
			}
			if (rc)
				return rc;
			vdi_log(VDI_LOG_INFO, "device '%s': medium %u loaded at byte offset %llu",
			        ss_name(w), w->loads, (unsigned long long)w->sent);
		}
		list = w->redo;
		w->redo = NULL;
		while (list) { /* re-issue in offset order: the lowest first */
			for (low = pp = &list; *pp; pp = &(*pp)->next)
				if ((*pp)->offset < (*low)->offset)
					low = pp;
			b = *low;
			*low = b->next;
			ss_resend(w, b);
		}
	}
	return rc;
}

int vdi_sstream_set_window(struct vdi_sstream *r, uint32_t reads)
{
	int rc;

	if (!r)
		return vdi_fail(VD_E_INVALID, "cannot set the read window: null stream");
	rc = ss_check_dir(r, 1, "set the read window of");
	if (rc)
		return rc;
	pthread_mutex_lock(&r->p->lock);
	r->window = reads;
	pthread_mutex_unlock(&r->p->lock);
	return 0;
}

uint32_t vdi_sstream_loads(const struct vdi_sstream *w)
{
	return w ? w->loads : 0;
}

uint32_t vdi_sstream_end_code(const struct vdi_sstream *r)
{
	uint32_t code;

	if (!r)
		return 0;
	pthread_mutex_lock(&r->p->lock);
	code = r->ended ? r->end_code : 0;
	pthread_mutex_unlock(&r->p->lock);
	return code;
}

int vdi_sstream_resume(struct vdi_sstream *r, uint32_t code)
{
	int rc;

	if (!r)
		return vdi_fail(VD_E_INVALID, "cannot resume stream: null stream");
	rc = ss_check_dir(r, 1, "resume");
	if (rc)
		return rc;
	pthread_mutex_lock(&r->p->lock);
	rc = ss_status(r);
	if (!rc && !r->ended)
		rc = vdi_fail(
			VD_E_PROTOCOL,
			"cannot resume stream on device '%s': not at an end (byte offset %llu)",
			ss_name(r), (unsigned long long)r->bytes);
	if (!rc)
		rc = ss_idle(r); /* the reads sent behind the end */
	if (!rc) {
		ss_reap(r);
		rc = ss_status(r);
	}
	if (!rc) {
		r->eof = r->ended = 0;
		r->end_code = 0;
		r->sent = r->end_at; /* (a disk's SetPosition may have moved it) */
		if (code)
			rc = ss_control_locked(r, code, 0, 0, NULL);
	}
	pthread_mutex_unlock(&r->p->lock);
	return rc;
}

/* Waits for every command of w, aborting the set past the timeout; lock
 * held.  Never returns with a command of w in flight. */
static int ss_settle(struct vdi_sstream *w)
{
	struct vdi_sstream_pool *p = w->p;
	int rc = ss_idle(w);

	if (rc == VD_E_TIMEOUT) {
		pthread_mutex_unlock(&p->lock);
		vdi_server_signal_abort(p->srv);
		pthread_mutex_lock(&p->lock);
		rc = vdi_fail(
			VD_E_TIMEOUT,
			"stream on device '%s': commands still outstanding after %u ms, set aborted",
			ss_name(w), p->timeout);
	}
	while (w->inflight)
		pthread_cond_wait(&p->cond, &p->lock); /* abort completes all */
	return rc;
}

int vdi_sstream_close(struct vdi_sstream *w)
{
	struct vdi_sstream_pool *p;
	int rc;

	if (!w)
		return vdi_fail(VD_E_INVALID, "cannot close stream: null stream");
	p = w->p;
	pthread_mutex_lock(&p->lock);
	rc = ss_settle(w);
	ss_reap(w); /* reads behind the end that brought bytes fail it (D50) */
	if (!rc)
		rc = ss_status(w);
	if (!rc && w->cur && w->fill)
		rc = vdi_fail(VD_E_PROTOCOL,
		              "stream on device '%s' closed with %u bytes written but not drained",
		              ss_name(w), w->fill);
	if (!rc && w->redo)
		rc = vdi_fail(
			VD_E_PROTOCOL,
			"stream on device '%s' closed with Writes stored in part, not re-issued",
			ss_name(w));
	while (w->redo) {
		struct ss_buf *b = w->redo;

		w->redo = b->next;
		ss_put(p, b);
	}
	if (w->cur)
		ss_put(p, w->cur);
	while (w->head != w->tail)
		ss_put(p, w->ring[w->head++ % p->count]);
	p->streams--;
	pthread_mutex_unlock(&p->lock);
	free(w->ring);
	free(w);
	return rc;
}
