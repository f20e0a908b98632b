/* SPDX-License-Identifier: MIT */
/*
 * cstream.c - stream adapter, client side: one device of a client set seen
 * as a byte stream (backup: read it; restore: write it).  Built only on the
 * client backend seam of vdi.h (vdi_bset / vdi_bdev), so the same adapter
 * runs over libvdi's client half and over a library with Microsoft's ABI;
 * it asks the seam for nothing Microsoft's API does not offer (a blocking
 * GetCommand with a timeout, CompleteCommand, SignalAbort, and the
 * configuration).
 *
 * Ordering.  Commands are handled strictly in the order GetCommand returns
 * them, one at a time: the command at the head (`cur`) is completed before
 * the next one is fetched.  A VDC_Flush or VDC_ClearError therefore reaches
 * the head only once every command before it was completed, and answering
 * it there keeps the rule "Flush completes after everything before it".
 * The server may keep many commands outstanding: they wait, in order, in
 * the device's queue in shared memory, which is the fetch-ahead buffer.
 * Data moves through the head command:
 *
 *   backup  (VDC_Write)  bytes [off, size) of cur->buffer are handed out by
 *                        peek; the advance that takes the last byte
 *                        completes the Write (ERROR_SUCCESS, size).
 *   restore (VDC_Read)   bytes [off, size) of cur->buffer are the room
 *                        handed out by reserve; the commit that fills it
 *                        completes the Read (ERROR_SUCCESS, size).
 *
 * read and write are loops over peek/advance and reserve/commit with one
 * memcpy each: one copy per byte; the zero-copy calls copy nothing.  Once a
 * read has taken some bytes it polls (timeout 0) for the next command
 * instead of waiting, so it returns what is available, like read(2) on a
 * pipe; only its first wait uses the stream timeout.  A write waits until
 * every byte found room (each wait bounded by the timeout).
 *
 * End of stream.  Backup: VDC_Complete at the head (it stays pending: the
 * server learns the outcome from vdi_cstream_close) or VD_E_CLOSE.
 * Restore: the writer calls vdi_cstream_close(ok=1), which completes the
 * partly filled Read with ERROR_HANDLE_EOF and answers every later Read
 * with ERROR_HANDLE_EOF and 0 bytes until VD_E_CLOSE.  A backup closed
 * while data is still unread, or any close(ok=0), aborts the set: a
 * truncated stream must never look complete to the server.
 *
 * Commands outside the stream (decision D11): VDC_ClearError and VDC_Flush
 * succeed; VDC_Complete ends a backup when VDF_CompleteEnabled was
 * negotiated (on a restore it just succeeds); a data command of the wrong
 * direction, a data command out of sequence on a VDF_RandomAccess set, and
 * every other code complete with ERROR_NOT_SUPPORTED.
 *
 * Snapshots (D47): VDC_PrepareToFreeze, VDC_Snapshot and VDC_MountSnapshot
 * go to the front end's handler (vdi_cstream_on_snapshot) when they reach
 * the head, so every command before them completed; its answer is their
 * completion code.  With VDF_EnumFrozenFiles offered, the VDC_Write data
 * between VDC_FileInfoBegin and VDC_FileInfoEnd is the list of frozen
 * files, not stream data: collected here and handed to the handler.
 *
 * Errors.  VD_E_TIMEOUT is returned and forgotten: the call may be
 * retried.  Every other failure is sticky and returned by every later call
 * (with the first message).  A call that moved bytes before a failure
 * returns the count; the next call returns the error.
 *
 * Ownership and threads.  The stream borrows the device and its set; both
 * must outlive it.  One thread at a time per stream, so no lock.  cur is
 * borrowed from the engine until completed; pointers from peek and reserve
 * are valid until the next call on the stream.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_ops.h"
#include "internal.h"

/*
 * ThreadSanitizer cannot see the engine order a buffer hand-off between two
 * client threads (the chain runs through the server's mapping of the rings,
 * or another process): say it here.  Completing a command releases what this
 * thread wrote into or read from its buffer; fetching one acquires it.
 */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define CS_TSAN_ACQUIRE(p) ((p) ? __tsan_acquire(p) : (void)0)
#define CS_TSAN_RELEASE(p) ((p) ? __tsan_release(p) : (void)0)
#else
#define CS_TSAN_ACQUIRE(p) ((void)(p))
#define CS_TSAN_RELEASE(p) ((void)(p))
#endif

struct vdi_cstream {
	struct vdi_bdev *dev;
	struct vdi_bset *set;
	int wrapped;                     /* dev wraps a libvdi device (vdi_cstream_new) */
	uint32_t timeout;                /* bounds each wait for a command */
	uint32_t features;               /* negotiated (VDConfig.features) */
	uint32_t direction;              /* VDF_WriteMedia, VDF_ReadMedia, 0 unknown */
	VDC_Command *cur;                /* head command: fetched, not completed */
	uint32_t off;                    /* bytes of cur taken (backup) / filled */
	uint64_t bytes;                  /* bytes moved through the stream */
	int closed;                      /* VD_E_CLOSE seen: no command will come */
	int writer_done;                 /* restore: close(ok=1) answers reads EOF */
	int complete_acked;              /* backup: VDC_Complete completed */
	vdi_cstream_snapshot_fn snap_fn; /* snapshot commands go here */
	void *snap_ctx;
	int in_fileinfo; /* between FileInfoBegin and FileInfoEnd */
	char *files;     /* frozen files, '\n'-separated (malloc'ed) */
	size_t files_len;
	int error;     /* sticky VD_E_* code, 0 if none */
	char msg[320]; /* message of the sticky error */
};

/* The frozen-file list of a VDC_Write between FileInfoBegin and End: one
 * path per line, NUL padding ignored.  The completion code. */
static uint32_t cs_fileinfo(struct vdi_cstream *s, const VDC_Command *cmd)
{
	int32_t i;

	if (!s->files && !(s->files = malloc(VDI_CSTREAM_FILES_MAX + 1)))
		return ERROR_NO_SYSTEM_RESOURCES;
	for (i = 0; i < cmd->size; i++) {
		char ch = (char)cmd->buffer[i];

		if (!ch)
			continue;
		if (s->files_len == VDI_CSTREAM_FILES_MAX) {
			vdi_log(VDI_LOG_WARN, "device '%s': frozen-file list over %u bytes refused",
			        vdi_bdev_name(s->dev), VDI_CSTREAM_FILES_MAX);
			return ERROR_INVALID_PARAMETER;
		}
		s->files[s->files_len++] = ch;
	}
	s->files[s->files_len] = '\0';
	return ERROR_SUCCESS;
}

/* The handler's answer to a snapshot command (ERROR_NOT_SUPPORTED if the
 * front end has none: nothing is offered that nobody answers). */
static uint32_t cs_snapshot(struct vdi_cstream *s, uint32_t code)
{
	if (!s->snap_fn)
		return ERROR_NOT_SUPPORTED;
	return s->snap_fn(s->snap_ctx, s, code, s->files ? s->files : "");
}

/* What the stream does with a command at the head. */
enum cs_kind {
	CS_DATA,       /* data of this stream: hand out bytes or room */
	CS_END,        /* VDC_Complete of a backup: end of stream, keep pending */
	CS_ANSWER,     /* complete at once with the code given */
	CS_ANSWER_ALL, /* the same, reporting every byte transferred */
};

static const char *cs_name(const struct vdi_cstream *s)
{
	return vdi_bdev_name(s->dev);
}

/* Records rc as the sticky error with the message the failing call left. */
static int cs_failed(struct vdi_cstream *s, int rc)
{
	const char *m = vdi_last_error();
	char tail[40];
	size_t n = strlen(m), t;

	snprintf(tail, sizeof(tail), " (%s)", vdi_strerror(rc));
	t = strlen(tail);
	if (n >= t && !strcmp(m + n - t, tail))
		n -= t; /* vdi_fail appends the code again when replayed */
	snprintf(s->msg, sizeof(s->msg), "%.*s", (int)n, m);
	s->error = rc;
	return rc;
}

static int cs_replay(const struct vdi_cstream *s)
{
	return vdi_fail(s->error, "%s", s->msg);
}

static int cs_is_data_code(int32_t code)
{
	return code == VDC_Read || code == VDC_Write;
}

/* Classifies cmd; for CS_ANSWER *code is the completion code to give. */
static enum cs_kind cs_classify(struct vdi_cstream *s, const VDC_Command *cmd, uint32_t *code)
{
	int32_t want;

	*code = ERROR_NOT_SUPPORTED;
	if (!s->direction && cs_is_data_code(cmd->commandCode))
		s->direction = cmd->commandCode == VDC_Read ? VDF_ReadMedia : VDF_WriteMedia;
	want = s->direction == VDF_ReadMedia ? VDC_Read : VDC_Write;
	switch (cmd->commandCode) {
	case VDC_ClearError:
	case VDC_Flush: *code = ERROR_SUCCESS; return CS_ANSWER;
	case VDC_Discard:
		/* the stream keeps nothing to discard: offered, it succeeds */
		if (s->features & VDF_Discard)
			*code = ERROR_SUCCESS;
		return CS_ANSWER;
	case VDC_PrepareToFreeze:
	case VDC_Snapshot:
	case VDC_MountSnapshot:
		*code = cs_snapshot(s, (uint32_t)cmd->commandCode);
		return CS_ANSWER;
	case VDC_FileInfoBegin:
	case VDC_FileInfoEnd:
		if (!(s->features & VDF_EnumFrozenFiles))
			return CS_ANSWER;
		s->in_fileinfo = cmd->commandCode == VDC_FileInfoBegin;
		if (s->in_fileinfo && s->files)
			s->files_len = 0, s->files[0] = '\0';
		*code = ERROR_SUCCESS;
		return CS_ANSWER;
	case VDC_Complete:
		if (!(s->features & VDF_CompleteEnabled))
			return CS_ANSWER;
		if (s->direction == VDF_ReadMedia) {
			*code = ERROR_SUCCESS;
			return CS_ANSWER;
		}
		return CS_END;
	}
	if (cmd->commandCode == VDC_Write && s->in_fileinfo && cmd->size > 0 && cmd->buffer) {
		*code = cs_fileinfo(s, cmd);
		return CS_ANSWER_ALL;
	}
	if (cmd->commandCode != want)
		return CS_ANSWER;
	if (cmd->size <= 0 || !cmd->buffer) {
		*code = ERROR_INVALID_PARAMETER;
		return CS_ANSWER;
	}
	if (s->writer_done) {
		*code = ERROR_HANDLE_EOF;
		return CS_ANSWER;
	}
	if ((s->features & VDF_RandomAccess) && (uint64_t)cmd->position != s->bytes - s->off)
		return CS_ANSWER; /* a stream only moves forward */
	return CS_DATA;
}

/* Fetches the next command into cur.  1: got one; 0: VD_E_CLOSE; < 0. */
static int cs_fetch(struct vdi_cstream *s, uint32_t timeout)
{
	int rc;

	if (s->error)
		return cs_replay(s);
	if (s->closed)
		return 0;
	rc = vdi_bdev_get_command(s->dev, timeout, &s->cur);
	if (rc == NOERROR) {
		s->off = 0;
		CS_TSAN_ACQUIRE(s->cur->buffer);
		return 1;
	}
	s->cur = NULL;
	if (rc == VD_E_CLOSE) {
		s->closed = 1;
		return 0;
	}
	if (rc == VD_E_TIMEOUT)
		return rc;
	return cs_failed(s, rc);
}

/* Completes cur with code and bytes; cur is gone afterwards. */
static int cs_finish(struct vdi_cstream *s, uint32_t code, uint32_t bytes)
{
	VDC_Command *cmd = s->cur;
	int rc;

	s->cur = NULL;
	s->off = 0;
	CS_TSAN_RELEASE(cmd->buffer);
	rc = vdi_bdev_complete_command(s->dev, cmd, code, bytes, 0);
	return rc ? cs_failed(s, rc) : 0;
}

/*
 * Brings a data command with bytes (backup) or room (restore) left to the
 * head, answering the commands before it.  Returns 1 when cur is such a
 * command, 0 at end of stream (VDC_Complete at the head, or VD_E_CLOSE),
 * or a negative code.
 */
static int cs_ready(struct vdi_cstream *s, uint32_t timeout)
{
	uint32_t code;
	int rc;

	for (;;) {
		if (!s->cur) {
			rc = cs_fetch(s, timeout);
			if (rc <= 0)
				return rc;
		}
		switch (cs_classify(s, s->cur, &code)) {
		case CS_DATA: return 1;
		case CS_END: return 0;
		case CS_ANSWER:
		case CS_ANSWER_ALL:
			if (code != ERROR_SUCCESS)
				vdi_log(VDI_LOG_INFO, "device '%s': %s completed with %s",
				        cs_name(s), vdi_strcommand((uint32_t)s->cur->commandCode),
				        vdi_strcompletion(code));
			rc = cs_finish(s, code,
			               code == ERROR_SUCCESS && s->cur->commandCode == VDC_Write
			                       ? (uint32_t)s->cur->size
			                       : 0);
			if (rc)
				return rc;
		}
	}
}

int vdi_cstream_open(struct vdi_bdev *d, uint32_t timeout_ms, struct vdi_cstream **out)
{
	struct vdi_cstream *s;
	VDConfig cfg;
	int rc;

	if (!out)
		return vdi_fail(VD_E_INVALID, "cannot open stream: no result pointer");
	*out = NULL;
	if (!d)
		return vdi_fail(VD_E_INVALID, "cannot open stream: no device");
	memset(&cfg, 0, sizeof(cfg));
	rc = vdi_bset_get_configuration(vdi_bdev_set(d), 0, &cfg);
	if (rc)
		return rc;
	s = calloc(1, sizeof(*s));
	if (!s)
		return vdi_fail(VD_E_MEMORY, "cannot open stream on device '%s': out of memory",
		                vdi_bdev_name(d));
	s->dev = d;
	s->set = vdi_bdev_set(d);
	s->timeout = timeout_ms;
	s->features = cfg.features;
	if ((cfg.features & (VDF_WriteMedia | VDF_ReadMedia)) != (VDF_WriteMedia | VDF_ReadMedia))
		s->direction = cfg.features & (VDF_WriteMedia | VDF_ReadMedia);
	*out = s;
	return 0;
}

int vdi_cstream_new(struct vdi_client_device *d, uint32_t timeout_ms, struct vdi_cstream **out)
{
	struct vdi_bdev *bd;
	int rc;

	if (!out)
		return vdi_fail(VD_E_INVALID, "cannot open stream: no result pointer");
	*out = NULL;
	rc = vdi_bdev_wrap(d, &bd);
	if (rc)
		return rc;
	rc = vdi_cstream_open(bd, timeout_ms, out);
	if (rc) {
		vdi_bdev_unwrap(bd);
		return rc;
	}
	(*out)->wrapped = 1;
	return 0;
}

struct vdi_bdev *vdi_cstream_device(const struct vdi_cstream *s)
{
	return s ? s->dev : NULL;
}

void vdi_cstream_on_snapshot(struct vdi_cstream *s, vdi_cstream_snapshot_fn fn, void *ctx)
{
	if (!s)
		return;
	s->snap_fn = fn;
	s->snap_ctx = ctx;
}

uint32_t vdi_cstream_direction(const struct vdi_cstream *s)
{
	return s ? s->direction : 0;
}

uint64_t vdi_cstream_bytes(const struct vdi_cstream *s)
{
	return s ? s->bytes : 0;
}

/* VD_E_PROTOCOL if the stream's direction is known and not dir. */
static int cs_check(const struct vdi_cstream *s, uint32_t dir, const char *what)
{
	if (s->direction && s->direction != dir)
		return vdi_fail(VD_E_PROTOCOL, "cannot %s device '%s': it is a %s stream", what,
		                cs_name(s), dir == VDF_WriteMedia ? "restore" : "backup");
	if (dir == VDF_ReadMedia && s->writer_done)
		return vdi_fail(VD_E_PROTOCOL, "cannot write device '%s': stream closed",
		                cs_name(s));
	return 0;
}

/* peek with an explicit wait; the public peek uses the stream timeout. */
static ssize_t cs_peek(struct vdi_cstream *s, const void **ptr, size_t len, uint32_t timeout)
{
	size_t left;
	int rc;

	rc = cs_ready(s, timeout);
	if (rc <= 0)
		return rc;
	left = (size_t)s->cur->size - s->off;
	*ptr = s->cur->buffer + s->off;
	return (ssize_t)(len < left ? len : left);
}

static ssize_t cs_peek_checked(struct vdi_cstream *s, const void **ptr, size_t len, int wait)
{
	int rc;

	if (!s || !ptr)
		return vdi_fail(VD_E_INVALID, "cannot peek stream: null argument");
	*ptr = NULL;
	rc = cs_check(s, VDF_WriteMedia, "read");
	if (rc || !len)
		return rc;
	return cs_peek(s, ptr, len, wait ? s->timeout : 0);
}

ssize_t vdi_cstream_peek(struct vdi_cstream *s, const void **ptr, size_t len)
{
	return cs_peek_checked(s, ptr, len, 1);
}

ssize_t vdi_cstream_peek_nowait(struct vdi_cstream *s, const void **ptr, size_t len)
{
	return cs_peek_checked(s, ptr, len, 0);
}

/* Takes n bytes of the head command (both directions). */
static int cs_take(struct vdi_cstream *s, size_t n, int32_t code, const char *what)
{
	if (!n)
		return 0;
	if (!s->cur || s->cur->commandCode != code || n > (size_t)s->cur->size - s->off)
		return vdi_fail(VD_E_INVALID, "cannot %s %zu bytes on device '%s': only %zu %s",
		                what, n, cs_name(s),
		                s->cur && s->cur->commandCode == code
		                        ? (size_t)s->cur->size - s->off
		                        : (size_t)0,
		                code == VDC_Write ? "bytes were peeked" : "bytes were reserved");
	s->off += (uint32_t)n;
	s->bytes += n;
	if (s->off < (uint32_t)s->cur->size)
		return 0;
	return cs_finish(s, ERROR_SUCCESS, (uint32_t)s->cur->size);
}

int vdi_cstream_advance(struct vdi_cstream *s, size_t n)
{
	if (!s)
		return vdi_fail(VD_E_INVALID, "cannot advance stream: null stream");
	return cs_take(s, n, VDC_Write, "advance");
}

ssize_t vdi_cstream_read(struct vdi_cstream *s, void *buf, size_t len)
{
	uint32_t timeout;
	size_t done = 0;
	const void *p;
	ssize_t n;
	int rc;

	if (!s || (!buf && len))
		return vdi_fail(VD_E_INVALID, "cannot read stream: null argument");
	rc = cs_check(s, VDF_WriteMedia, "read");
	if (rc)
		return rc;
	timeout = s->timeout;
	while (done < len) {
		n = cs_peek(s, &p, len - done, timeout);
		if (n <= 0)
			return done ? (ssize_t)done : n;
		memcpy((uint8_t *)buf + done, p, (size_t)n);
		done += (size_t)n;
		rc = cs_take(s, (size_t)n, VDC_Write, "advance");
		if (rc)
			return (ssize_t)done; /* sticky: next call reports */
		timeout = 0;
	}
	return (ssize_t)done;
}

static ssize_t cs_reserve_checked(struct vdi_cstream *s, void **ptr, size_t len, int wait)
{
	size_t left;
	int rc;

	if (!s || !ptr)
		return vdi_fail(VD_E_INVALID, "cannot reserve stream: null argument");
	*ptr = NULL;
	rc = cs_check(s, VDF_ReadMedia, "write");
	if (rc || !len)
		return rc;
	rc = cs_ready(s, wait ? s->timeout : 0);
	if (rc == 0)
		return vdi_fail(VD_E_CLOSE,
		                "cannot write device '%s': the server closed it after %llu bytes",
		                cs_name(s), (unsigned long long)s->bytes);
	if (rc < 0)
		return rc;
	left = (size_t)s->cur->size - s->off;
	*ptr = s->cur->buffer + s->off;
	return (ssize_t)(len < left ? len : left);
}

ssize_t vdi_cstream_reserve(struct vdi_cstream *s, void **ptr, size_t len)
{
	return cs_reserve_checked(s, ptr, len, 1);
}

ssize_t vdi_cstream_reserve_nowait(struct vdi_cstream *s, void **ptr, size_t len)
{
	return cs_reserve_checked(s, ptr, len, 0);
}

int vdi_cstream_commit(struct vdi_cstream *s, size_t n)
{
	if (!s)
		return vdi_fail(VD_E_INVALID, "cannot commit stream: null stream");
	return cs_take(s, n, VDC_Read, "commit");
}

ssize_t vdi_cstream_write(struct vdi_cstream *s, const void *buf, size_t len)
{
	size_t done = 0;
	ssize_t n;
	void *p;

	if (!s || (!buf && len))
		return vdi_fail(VD_E_INVALID, "cannot write stream: null argument");
	while (done < len) {
		n = vdi_cstream_reserve(s, &p, len - done);
		if (n <= 0)
			return done ? (ssize_t)done : n;
		memcpy(p, (const uint8_t *)buf + done, (size_t)n);
		done += (size_t)n;
		if (cs_take(s, (size_t)n, VDC_Read, "commit"))
			return (ssize_t)done; /* sticky: next call reports */
	}
	return (ssize_t)done;
}

/* Aborts the set so that the server fails too; returns rc. */
static int cs_abort(struct vdi_cstream *s, int rc)
{
	int arc = vdi_bset_signal_abort(s->set);

	vdi_log(VDI_LOG_INFO, "device '%s': stream aborted the set", cs_name(s));
	return rc ? rc : arc;
}

static int cs_truncated(struct vdi_cstream *s)
{
	uint32_t left = s->cur ? (uint32_t)s->cur->size - s->off : 0;

	cs_abort(s, 0);
	return vdi_fail(VD_E_ABORT,
	                "stream on device '%s' closed before its end: %u bytes at byte offset %llu "
	                "unread, set aborted",
	                cs_name(s), left, (unsigned long long)s->bytes);
}

/*
 * Backup, orderly close: every byte must have been taken.  Answers the
 * control commands still coming, acknowledges VDC_Complete and waits for
 * VD_E_CLOSE.  Any unread data means truncation: abort.
 */
static int cs_close_backup(struct vdi_cstream *s)
{
	int rc;

	for (;;) {
		rc = cs_ready(s, s->timeout);
		if (rc > 0)
			return cs_truncated(s);
		if (rc == VD_E_TIMEOUT && !s->complete_acked) {
			cs_abort(s, 0);
			return vdi_fail(VD_E_ABORT,
			                "stream on device '%s' closed before its end: no end of "
			                "stream within %u ms after %llu bytes, set aborted",
			                cs_name(s), s->timeout, (unsigned long long)s->bytes);
		}
		if (rc < 0)
			return rc;
		if (s->closed)
			return 0;
		rc = cs_finish(s, ERROR_SUCCESS, 0); /* VDC_Complete */
		if (rc)
			return rc;
		s->complete_acked = 1;
	}
}

/*
 * Restore, orderly close: the partly filled Read ends the data with
 * ERROR_HANDLE_EOF; later Reads get ERROR_HANDLE_EOF and 0 bytes (see
 * cs_classify) while we wait for VD_E_CLOSE.
 */
static int cs_close_restore(struct vdi_cstream *s)
{
	int rc;

	s->writer_done = 1;
	if (s->cur && s->cur->commandCode == VDC_Read) {
		rc = cs_finish(s, ERROR_HANDLE_EOF, s->off);
		if (rc)
			return rc;
	}
	rc = cs_ready(s, s->timeout);
	return rc > 0 ? vdi_fail(VD_E_UNEXPECTED, "device '%s': data command after end", cs_name(s))
	              : rc;
}

int vdi_cstream_end(struct vdi_cstream *s)
{
	int rc;

	if (!s)
		return vdi_fail(VD_E_INVALID, "cannot end stream: null stream");
	if (s->direction != VDF_WriteMedia)
		return vdi_fail(
			VD_E_PROTOCOL,
			"cannot end stream on device '%s' early: a restore stream ends at close",
			cs_name(s));
	if (s->error)
		return cs_replay(s);
	if (s->complete_acked || (s->closed && !s->cur))
		return 0;
	if (!s->cur || s->cur->commandCode != VDC_Complete)
		return vdi_fail(
			VD_E_PROTOCOL,
			"cannot end stream on device '%s': not at its end (byte offset %llu)",
			cs_name(s), (unsigned long long)s->bytes);
	rc = cs_finish(s, ERROR_SUCCESS, 0);
	if (rc)
		return rc;
	s->complete_acked = 1;
	return 0;
}

int vdi_cstream_close(struct vdi_cstream *s, int ok)
{
	int rc;

	if (!s)
		return vdi_fail(VD_E_INVALID, "cannot close stream: null stream");
	if (!ok) {
		rc = cs_abort(s, 0);
	} else if (s->error) {
		cs_abort(s, 0); /* a failed stream must fail the server too */
		rc = cs_replay(s);
	} else if (s->direction == VDF_ReadMedia) {
		rc = cs_close_restore(s);
	} else {
		rc = cs_close_backup(s);
	}
	if (s->wrapped)
		vdi_bdev_unwrap(s->dev);
	free(s->files);
	free(s);
	return rc;
}
