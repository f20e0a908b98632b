/* SPDX-License-Identifier: MIT */
/*
 * exec_io.c - the device threads of `vdi exec`: each moves one stripe
 * between the database file and its device through the server stream
 * adapter (vdi_sstream_*), with the fault injection of the statement's
 * FAULT_* options applied at the stream boundary.
 *
 * BACKUP: header, chunks, trailer (bk_backup_stripe) -> drain -> extra
 * flushes -> VDC_Flush -> [wait] -> VDC_Complete when negotiated.
 * RESTORE/VERIFYONLY/HEADERONLY: header -> register with the set (mixed,
 * duplicated or missing stripes fail at once) -> chunks written aside ->
 * trailer -> padding up to the client's end of stream.
 */
#include "exec.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* Fault-injected pauses end early when the set aborts (a peer died,
 * `vdi abort`, a signal), so a stall never delays the failure. */
static void sleep_ms(struct job *j, uint32_t ms)
{
	while (ms && !job_failed(j)) {
		uint32_t step = ms < 50 ? ms : 50;
		struct timespec ts = { 0, (long)step * 1000000L };
		VDConfig cfg;

		if (vdi_server_get_configuration(j->srv, &cfg) == VD_E_ABORT)
			return;
		while (nanosleep(&ts, &ts) != 0)
			;
		ms -= step;
	}
}

static const char *dev_name(const struct devjob *d)
{
	return d->j->st.dev[d->k];
}

/* Turns a failed stream call into the job's failure message: the
 * client's completion code and offset if the client failed a command,
 * else the engine's return code and detail. */
static void stream_fail(struct devjob *d, const char *what, long long rc)
{
	struct job *j = d->j;
	uint64_t off = 0;
	uint32_t code = d->s ? vdi_sstream_error(d->s, &off) : 0;

	if (job_failed(j))
		return;
	if (code == ERROR_OPERATION_ABORTED || rc == VD_E_ABORT) {
		/* Not the client's answer: the set was aborted.  Say why. */
		VDConfig cfg;
		char why[512];

		snprintf(why, sizeof(why), "%s", vdi_last_error());
		if (vdi_server_get_configuration(j->srv, &cfg) == VD_E_ABORT) /* names the cause */
			snprintf(why, sizeof(why), "%s", vdi_last_error());
		job_fail(j,
		         "device '%s': %s failed after %" PRIu64
		         " stream bytes: the set was aborted: %s",
		         dev_name(d), what, d->s ? vdi_sstream_bytes(d->s) : 0, why);
	} else if (code)
		job_fail(
			j,
			"device '%s': %s failed: client completed a command with %s (%u) at byte offset %" PRIu64
			"%s",
			dev_name(d), what, vdi_strcompletion(code), code, off,
			code == 234
				? ": a block on the tape is larger than MAXTRANSFERSIZE; restore with "
				  "the backup's MAXTRANSFERSIZE, or without the option"
				: "");
	else
		job_fail(j, "device '%s': %s failed: %s: %s", dev_name(d), what,
		         vdi_strerror((int)rc), vdi_last_error());
}

/* FAULT_ABORT_AFTER: how many of len bytes may still move; aborts the
 * set (and returns < len) once the limit is reached. */
static size_t fault_budget(struct devjob *d, size_t len)
{
	struct job *j = d->j;
	uint64_t before;

	if (!(j->st.given & OPT_FAULT_ABORT_AFTER))
		return len;
	before = __atomic_fetch_add(&j->wire, len, __ATOMIC_RELAXED);
	if (before + len <= j->st.fault_abort_after)
		return len;
	return before >= j->st.fault_abort_after ? 0 : (size_t)(j->st.fault_abort_after - before);
}

static void fault_abort(struct devjob *d)
{
	job_fail(d->j, "device '%s': aborted by FAULT_ABORT_AFTER=%" PRIu64 " (fault injection)",
	         dev_name(d), d->j->st.fault_abort_after);
}

static void fault_stall(struct devjob *d)
{
	if (d->stalled || !(d->j->st.given & OPT_FAULT_STALL) ||
	    (d->j->st.given & OPT_FAULT_STALL_AT))
		return;
	d->stalled = 1;
	sleep_ms(d->j, d->j->st.fault_stall_ms);
}

/* FAULT_EXTRA_FLUSHES: one extra VDC_Flush after each piece of the
 * stripe handed to the stream (the stripe header, then each chunk's
 * header and its data) until n were sent; backup_finish sends the rest
 * just before the final one.  Mid-stream
 * is where a client breaks that takes a VDC_Flush for the end of the
 * stream, or completes it before it took every byte sent before it.
 * Only whole buffers were sent: the partly filled one follows the flush. */
/* ------------------------------------------------------------ media (D50) */

/* The device type the client configured makes the command sequence. */
static int dev_tape(const struct job *j)
{
	return (j->cfg.features & VDF_FileMarks) != 0;
}

static int dev_disk(const struct job *j)
{
	return (j->cfg.features & VDF_RandomAccess) != 0;
}

static int dev_positions(const struct job *j)
{
	return (j->cfg.features & (VDF_Position | VDF_RandomAccess)) != 0;
}

/* Sends a control command with its inputs: 0, or -1 with the job failed
 * (the client's completion code, or the stream's failure). */
static int control(struct devjob *d, uint32_t code, uint32_t size, uint64_t pos, uint64_t *out)
{
	int rc = vdi_sstream_control(d->s, code, size, pos, out);

	if (rc < 0) {
		stream_fail(d, vdi_strcommand(code), rc);
		return -1;
	}
	if (rc != 0) {
		job_fail(d->j, "device '%s': client completed %s with %s (%d)", dev_name(d),
		         vdi_strcommand(code), vdi_strcompletion((uint32_t)rc), rc);
		return -1;
	}
	return 0;
}

static int send_command(struct devjob *d, uint32_t code)
{
	return control(d, code, 0, 0, NULL);
}

static int position_is(struct devjob *d, uint64_t want, const char *where)
{
	uint64_t pos = 0;

	if (control(d, VDC_GetPosition, 0, 0, &pos) < 0)
		return -1;
	if (pos == want)
		return 0;
	job_fail(d->j, "device '%s': the client reports position %" PRIu64 " %s, expected %" PRIu64,
	         dev_name(d), pos, where, want);
	return -1;
}

/* The beginning of the medium: a tape is rewound, a disk positioned at
 * byte 0; either must then report position 0. */
static int media_begin(struct devjob *d)
{
	struct job *j = d->j;
	uint64_t pos = 0;

	if ((j->cfg.features & VDF_Rewind) && send_command(d, VDC_Rewind) < 0)
		return -1;
	if (dev_disk(j) && control(d, VDC_SetPosition, VDC_Beginning, 0, &pos) < 0)
		return -1;
	if (dev_disk(j) && pos != 0) {
		job_fail(j, "device '%s': VDC_SetPosition to byte 0 returned position %" PRIu64,
		         dev_name(d), pos);
		return -1;
	}
	return dev_positions(j) ? position_is(d, 0, "at the beginning of the medium") : 0;
}

/* At most reads VDC_Read in flight (0: the pool's share): 0 or -1, the
 * job failed with the stream's reason. */
static int read_window(struct devjob *d, uint32_t reads)
{
	int rc = vdi_sstream_set_window(d->s, reads);

	if (rc < 0)
		stream_fail(d, "VDC_Read", rc);
	return rc < 0 ? -1 : 0;
}

/* Tape, backup: a filemark after the stripe header's block, where the
 * position must be that block and the mark (2); at the end, two (the end
 * of the data), after which it must have moved on. */
static int tape_marks(struct devjob *d, int end)
{
	uint64_t pos = 0;

	if (!dev_tape(d->j))
		return 0;
	if (send_command(d, VDC_WriteMark) < 0 || (end && send_command(d, VDC_WriteMark) < 0))
		return -1;
	if (!(d->j->cfg.features & VDF_Position))
		return 0;
	if (!end)
		return position_is(d, 2, "after the stripe header and its filemark");
	if (control(d, VDC_GetPosition, 0, 0, &pos) < 0)
		return -1;
	if (vdi_sstream_loads(d->s) == 0 && pos < 5) {
		job_fail(d->j,
		         "device '%s': the client reports position %" PRIu64
		         " after the data and two filemarks, expected 5 or more",
		         dev_name(d), pos);
		return -1;
	}
	return 0;
}

/*
 * Tape, restore, after the stripe header: the header's block is read
 * alone (the window of 1 read), its padding taken, then VDC_SkipMarks
 * passes the filemark behind it with no read sent past it, and
 * GetPosition / SetPosition place the tape at the data (block 2).
 */
static int tape_to_data(struct devjob *d)
{
	uint32_t bs = d->r.h.block_size; /* the header's block: the backup's BLOCKSIZE */
	uint8_t pad[4096];
	uint64_t pos = 0;

	if (!dev_tape(d->j))
		return 0;
	for (uint32_t left = bs > BK_HEADER_SIZE ? bs - BK_HEADER_SIZE : 0; left;) {
		ssize_t n = vdi_sstream_read(d->s, pad, left < sizeof(pad) ? left : sizeof(pad));

		if (n <= 0) {
			if (n < 0)
				stream_fail(d, "VDC_Read", n);
			else
				job_fail(d->j, "device '%s': the stripe header's block ends early",
				         dev_name(d));
			return -1;
		}
		for (ssize_t i = 0; i < n; i++)
			if (pad[i]) {
				job_fail(
					d->j,
					"device '%s': data after the stripe header in its block: not a "
					"stripe written to a tape",
					dev_name(d));
				return -1;
			}
		left -= (uint32_t)n;
	}
	if (control(d, VDC_SkipMarks, 1, 0, NULL) < 0 ||
	    ((d->j->cfg.features & VDF_Position) &&
	     (position_is(d, 2, "after the stripe header and its filemark") < 0 ||
	      control(d, VDC_SetPosition, 0, 2, &pos) < 0)))
		return -1;
	if ((d->j->cfg.features & VDF_Position) && pos != 2) {
		job_fail(d->j, "device '%s': VDC_SetPosition to block 2 returned %" PRIu64,
		         dev_name(d), pos);
		return -1;
	}
	d->marks = 1;
	return read_window(d, 0);
}

/*
 * Restore: the stream ended (a read returned 0).  1: it goes on (the next
 * medium is loaded), 0: the stripe's end, -1: failed.  A filemark must
 * come right after the stripe's trailer; an end of medium before it on
 * removable media asks for the next one (spec 10.5), where a tape is
 * rewound again.
 */
static int media_next(struct devjob *d)
{
	struct job *j = d->j;
	uint32_t code = vdi_sstream_end_code(d->s);
	int rc;

	if (code == ERROR_FILEMARK_DETECTED) {
		if (!dev_tape(j) || !d->r.trailer_ok) {
			job_fail(j,
			         "device '%s': VDC_Read at stripe byte offset %" PRIu64
			         " completed with ERROR_FILEMARK_DETECTED: %s",
			         dev_name(d), d->r.offset,
			         dev_tape(j)
			                 ? "a stripe on tape has filemarks only after its header "
			                   "and after its end"
			                 : "the client offered no filemarks");
			return -1;
		}
		d->marks++;
		return 0;
	}
	if (d->r.trailer_ok || !(j->cfg.features & VDF_Removable))
		return 0;
	rc = vdi_sstream_resume(d->s, VDC_Load);
	if (rc != 0) {
		if (rc < 0)
			stream_fail(d, "VDC_Load", rc);
		else
			job_fail(j, "device '%s': client completed VDC_Load with %s (%d)",
			         dev_name(d), vdi_strcompletion((uint32_t)rc), rc);
		return -1;
	}
	if (!j->quiet)
		/* media count from 0, as the clients' files do (FILE.m, <dev>.m) */
		cli_err("device '%s': medium %u loaded at stripe byte offset %" PRIu64, dev_name(d),
		        vdi_sstream_loads(d->s), d->r.offset);
	return dev_tape(j) ? (media_begin(d) < 0 ? -1 : 1) : 1;
}

/* Disk, restore: the client's position is every byte read. */
static int disk_end(struct devjob *d)
{
	if (!dev_disk(d->j))
		return 0;
	return position_is(d, vdi_sstream_bytes(d->s), "at the end of the stripe");
}

/*
 * Fault injection at the control commands (the pool's hook, on the
 * sending thread): VDI_TEST_PAUSE=<command> stops before it (a test kills
 * a party there), FAULT_STALL_AT waits FAULT_STALL ms (1000 if not
 * given), FAULT_FAIL_AT fails the statement and aborts the set instead
 * of sending it.  The existing points "flush" and "complete" keep their
 * places (backup_finish).
 */
int exec_before_command(void *ctx, struct vdi_sstream *w, uint32_t code)
{
	struct job *j = ctx;
	char point[32];
	size_t i;

	(void)w;
	if (code != VDC_Flush && code != VDC_Complete) {
		snprintf(point, sizeof(point), "%s", vdi_strcommand(code) + 4); /* no "VDC_" */
		for (i = 0; point[i]; i++)
			point[i] = (char)tolower((unsigned char)point[i]);
		exec_test_pause(j, point);
	}
	if ((j->st.given & OPT_FAULT_STALL_AT) && j->st.fault_stall_at == code)
		sleep_ms(j, (j->st.given & OPT_FAULT_STALL) ? j->st.fault_stall_ms : 1000);
	if ((j->st.given & OPT_FAULT_FAIL_AT) && j->st.fault_fail_at == code) {
		job_fail(j, "stopped instead of sending %s: FAULT_FAIL_AT (fault injection)",
		         vdi_strcommand(code));
		return VD_E_ABORT;
	}
	return 0;
}

static int fault_flush(struct devjob *d)
{
	if (d->flushes >= d->j->st.fault_extra_flushes)
		return 0;
	d->flushes++;
	return send_command(d, VDC_Flush);
}

/* ---------------------------------------------------------------- backup */

static int sink_write(void *ctx, const void *buf, size_t len)
{
	struct devjob *d = ctx;
	size_t allowed = fault_budget(d, len);
	const uint8_t *p = buf;

	for (size_t put = 0; put < allowed;) {
		ssize_t n;

		if (job_failed(d->j))
			return -1;
		n = vdi_sstream_write(d->s, p + put, allowed - put);
		if (n <= 0) {
			stream_fail(d, "VDC_Write", n);
			return -1;
		}
		put += (size_t)n;
	}
	if (allowed < len) {
		if (allowed)
			vdi_sstream_drain(d->s); /* the exact byte count reaches the client */
		fault_abort(d);
		return -1;
	}
	if (d->w.offset == 0) { /* the stripe header just went out */
		/* A metadata transfer of its own, smaller than MAXTRANSFERSIZE,
		 * as SQL Server's media header is (where BLOCKSIZE allows; on a
		 * tape always: a block of its own, then a filemark). */
		int rc = BK_HEADER_SIZE % d->j->st.blocksize && !dev_tape(d->j)
		                 ? 0
		                 : vdi_sstream_drain(d->s);

		if (rc < 0) {
			stream_fail(d, "VDC_Write", rc);
			return -1;
		}
		if (tape_marks(d, 0) < 0)
			return -1;
		fault_stall(d);
	}
	exec_test_pause_bytes(d->j, __atomic_load_n(&d->j->done, __ATOMIC_RELAXED));
	return fault_flush(d);
}

/* Zero-copy sink (bkfmt.h): chunk data is read from the database straight
 * into the shared buffer.  Not used with FAULT_ABORT_AFTER or
 * FAULT_EXTRA_FLUSHES, which act between the pieces sink_write gets. */
static ssize_t sink_reserve(void *ctx, void **ptr)
{
	struct devjob *d = ctx;
	ssize_t n;

	if (job_failed(d->j))
		return -1;
	n = vdi_sstream_reserve(d->s, ptr);
	if (n <= 0) {
		stream_fail(d, "VDC_Write", n);
		return -1;
	}
	return n;
}

static int sink_commit(void *ctx, size_t n)
{
	struct devjob *d = ctx;
	int rc = vdi_sstream_commit(d->s, n);

	if (rc < 0) {
		stream_fail(d, "VDC_Write", rc);
		return -1;
	}
	exec_test_pause_bytes(d->j, __atomic_load_n(&d->j->done, __ATOMIC_RELAXED));
	return 0;
}

/* --generate: the database is bk_generate's pattern (docs/vdi.1). */
static int generated_fill(void *ctx, uint8_t *buf, uint32_t len, uint64_t off)
{
	(void)ctx;
	bk_generate(buf, len, off);
	return 0;
}

static int backup_finish(struct devjob *d)
{
	struct job *j = d->j;
	int rc = vdi_sstream_drain(d->s);

	if (rc < 0) {
		stream_fail(d, "VDC_Write", rc);
		return -1;
	}
	if (tape_marks(d, 1) < 0)
		return -1;
	exec_test_pause(j, "flush");
	while (d->flushes < j->st.fault_extra_flushes)
		if (fault_flush(d) < 0)
			return -1;
	if (send_command(d, VDC_Flush) < 0)
		return -1;
	if (j->st.given & OPT_FAULT_LATE_COMPLETE)
		sleep_ms(j, j->st.fault_late_complete_ms);
	if (j->features & VDF_CompleteEnabled)
		exec_test_pause(j, "complete");
	if ((j->features & VDF_CompleteEnabled) && send_command(d, VDC_Complete) < 0)
		return -1;
	return 0;
}

static void *backup_main(void *arg)
{
	struct devjob *d = arg;
	struct job *j = d->j;
	char err[BK_ERR_LEN] = "";
	struct bk_header h = j->hdr;

	h.stripe = d->k;
	bk_writer_init(&d->w, &h, sink_write, d);
	if (!(j->st.given & (OPT_FAULT_ABORT_AFTER | OPT_FAULT_EXTRA_FLUSHES))) {
		d->w.reserve = sink_reserve;
		d->w.commit = sink_commit;
	}
	if (j->generated)
		d->w.fill = generated_fill;
	if (media_begin(d) < 0)
		return NULL;
	d->w.db_size = j->total;
	if (bk_is_partial(&h)) { /* the chunks chosen, and the state they make */
		d->w.select = j->select;
		d->w.db_hash = bk_db_hash(j->map, bk_db_chunks(&h), j->total);
	} else {
		d->w.map = j->map; /* each stripe hashes its own chunks */
	}
	if (bk_backup_stripe(&d->w, j->db_fd, d->buf, &j->done, err, sizeof(err)) < 0) {
		if (err[0])
			job_fail(j, "%s", err);
		return NULL;
	}
	backup_finish(d);
	return NULL;
}

/* --------------------------------------------------------------- restore */

static ssize_t source_read(void *ctx, void *buf, size_t len)
{
	struct devjob *d = ctx;
	size_t allowed = fault_budget(d, len);
	ssize_t n;

	if (job_failed(d->j))
		return -1;
	exec_test_pause_bytes(d->j, __atomic_load_n(&d->j->done, __ATOMIC_RELAXED));
	if (allowed == 0) {
		fault_abort(d);
		return -1;
	}
	while ((n = vdi_sstream_read(d->s, buf, allowed)) == 0) {
		int rc = media_next(d);

		if (rc <= 0)
			return rc;
	}
	if (n < 0) {
		stream_fail(d, "VDC_Read", n);
		return -1;
	}
	if ((size_t)n < len && (d->j->st.given & OPT_FAULT_ABORT_AFTER))
		__atomic_fetch_sub(&d->j->wire, len - (size_t)n, __ATOMIC_RELAXED);
	return n;
}

/* Zero-copy source (bkfmt.h): chunk data is checksummed and written to
 * the database straight from the shared buffers.  Not used with
 * FAULT_ABORT_AFTER, whose byte budget lives in source_read. */
static ssize_t source_peek(void *ctx, const void **ptr, size_t len)
{
	struct devjob *d = ctx;
	ssize_t n;

	if (job_failed(d->j))
		return -1;
	exec_test_pause_bytes(d->j, __atomic_load_n(&d->j->done, __ATOMIC_RELAXED));
	while ((n = vdi_sstream_peek(d->s, ptr, len)) == 0) {
		int rc = media_next(d);

		if (rc <= 0)
			return rc;
	}
	if (n < 0) {
		stream_fail(d, "VDC_Read", n);
		return -1;
	}
	return n;
}

static int source_advance(void *ctx, size_t n)
{
	struct devjob *d = ctx;
	int rc = vdi_sstream_advance(d->s, n);

	if (rc < 0) {
		stream_fail(d, "VDC_Read", rc);
		return -1;
	}
	return 0;
}

static void reader_fail(struct devjob *d)
{
	if (!d->r.source_error || !job_failed(d->j))
		job_fail(d->j, "%s", d->r.err);
}

static void *restore_main(void *arg)
{
	struct devjob *d = arg;
	struct job *j = d->j;
	struct bk_reader *r = &d->r;
	int out = j->st.kind == STMT_RESTORE ? j->db_fd : -1;

	bk_reader_init(r, source_read, d, dev_name(d));
	if (!(j->st.given & OPT_FAULT_ABORT_AFTER))
		bk_reader_set_peek(r, source_peek, source_advance);
	if (media_begin(d) < 0 || (dev_tape(j) && read_window(d, 1) < 0))
		return NULL;
	if (bk_read_header(r) < 0) {
		reader_fail(d);
		return NULL;
	}
	if (tape_to_data(d) < 0)
		return NULL;
	if (bk_set_add(&j->set, &r->h, dev_name(d), r->err, sizeof(r->err)) < 0) {
		job_fail(j, "%s", r->err);
		return NULL;
	}
	if (exec_restore_begin(j, &r->h) < 0)
		return NULL;
	__atomic_store_n(&j->total, r->h.total_size, __ATOMIC_RELAXED);
	__atomic_store_n(&j->work,
	                 bk_is_partial(&r->h) &&
	                                 r->h.chunk_count * r->h.chunk_size < r->h.total_size
	                         ? r->h.chunk_count * r->h.chunk_size
	                         : r->h.total_size,
	                 __ATOMIC_RELAXED);
	fault_stall(d);
	d->buf = malloc(r->h.chunk_size);
	if (!d->buf) {
		job_fail(j, "device '%s': out of memory for a %u-byte chunk", dev_name(d),
		         r->h.chunk_size);
		return NULL;
	}
	if (bk_read_body(r, out, d->buf, &j->done) < 0) {
		reader_fail(d);
		return NULL;
	}
	if (disk_end(d) < 0)
		return NULL;
	if (dev_tape(j) && d->marks != 2) {
		job_fail(j, "device '%s': the stripe ends without the filemark after its data",
		         dev_name(d));
		return NULL;
	}
	if (j->st.given & OPT_SNAPSHOT) {
		/* spec 6.5: Read x N -> MountSnapshot: the client puts the
		 * snapshot's files in place; the commit checks them. */
		send_command(d, VDC_MountSnapshot);
		return NULL;
	}
	/* The stream ended with a failed read (ERROR_HANDLE_EOF): clear the
	 * device's error condition, as SQL Server does (spec 6.4, 6.5). */
	send_command(d, VDC_ClearError);
	return NULL;
}

/* -------------------------------------------------------------- snapshot */

/* The freeze limit: a client that does not complete VDC_Snapshot within
 * --freeze-timeout fails the backup (the set is aborted, which ends the
 * wait), so the database is never left frozen. */
struct freeze_watch {
	struct job *j;
	pthread_mutex_t m;
	pthread_cond_t c;
	int done;
};

static void *freeze_watch_main(void *a)
{
	struct freeze_watch *w = a;
	struct timespec until;
	int timed_out = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += w->j->freeze_ms / 1000;
	until.tv_nsec += (long)(w->j->freeze_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->m);
	while (!w->done && !timed_out)
		timed_out = pthread_cond_timedwait(&w->c, &w->m, &until) == ETIMEDOUT;
	pthread_mutex_unlock(&w->m);
	if (timed_out && !w->done)
		job_fail(
			w->j,
			"the freeze limit of %u ms passed before the client completed VDC_Snapshot: the database was thawed",
			w->j->freeze_ms);
	return NULL;
}

/* Takes the stand-in database's write lock within the freeze limit: its
 * writers hold flock(LOCK_SH or LOCK_EX) while they write (vdi(1)). */
static int freeze(struct devjob *d)
{
	struct job *j = d->j;
	double until = cli_now() + j->freeze_ms / 1000.0;

	while (flock(j->db_fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			job_fail(j, "cannot freeze database '%s': flock: %s", j->st.db,
			         strerror(errno));
			return -1;
		}
		if (job_failed(j) || cli_now() > until) {
			job_fail(
				j,
				"cannot freeze database '%s': a writer kept its lock past the freeze limit of %u ms",
				j->st.db, j->freeze_ms);
			return -1;
		}
		usleep(2000);
	}
	return 0;
}

/* The frozen database's size, chunk hashes (for the chain) and hash. */
static int hash_frozen(struct devjob *d)
{
	struct job *j = d->j;
	struct stat sb;
	uint64_t n;
	int rc;

	if (fstat(j->db_fd, &sb) != 0) {
		job_fail(j, "cannot read frozen database '%s': %s", j->st.db, strerror(errno));
		return -1;
	}
	j->total = (uint64_t)sb.st_size;
	n = bk_db_chunks(
		&(struct bk_header){ .total_size = j->total, .chunk_size = BK_CHUNK_SIZE });
	free(j->map);
	j->map = calloc(n ? n : 1, sizeof(*j->map));
	d->buf = d->buf ? d->buf : malloc(BK_CHUNK_SIZE);
	rc = j->map && d->buf ? bk_hash_file(j->db_fd, j->total, BK_CHUNK_SIZE, d->buf, j->map)
	                      : -ENOMEM;
	if (rc < 0) {
		job_fail(j, "cannot read frozen database '%s': %s", j->st.db, strerror(-rc));
		return -1;
	}
	d->w.db_size = j->total;
	d->w.db_hash = bk_db_hash(j->map, n, j->total);
	return 0;
}

/* The frozen files, one path a line, as VDC_FileInfoBegin, data, End
 * (D47: the format vdifs and vdi pipe read). */
static int list_frozen_files(struct devjob *d)
{
	char line[PATH_MAX + 2];
	int n = snprintf(line, sizeof(line), "%s\n", d->j->db_path);
	int rc;

	if (send_command(d, VDC_FileInfoBegin) < 0)
		return -1;
	if (vdi_sstream_write(d->s, line, (size_t)n) != n || (rc = vdi_sstream_drain(d->s)) < 0) {
		stream_fail(d, "VDC_Write (frozen files)", VD_E_IO_ERROR);
		return -1;
	}
	return send_command(d, VDC_FileInfoEnd);
}

/*
 * BACKUP ... WITH SNAPSHOT (spec 6.5, 12): the metadata stripe's header,
 * [the frozen files], [VDC_PrepareToFreeze], freeze, the frozen state's
 * hash in the trailer, VDC_Snapshot within the freeze limit, thaw.  No
 * VDC_Flush: after VDC_Snapshot the client expects only VD_E_CLOSE.
 */
static void *snapshot_main(void *arg)
{
	struct devjob *d = arg;
	struct job *j = d->j;
	struct bk_header h = j->hdr;
	struct freeze_watch fw = { .j = j };
	pthread_t watch;
	int frozen = 0, watching = 0, rc;

	h.stripe = d->k;
	bk_writer_init(&d->w, &h, sink_write, d);
	if (bk_write_header(&d->w) < 0 || (rc = vdi_sstream_drain(d->s)) < 0) {
		if (!job_failed(j))
			stream_fail(d, "VDC_Write", VD_E_IO_ERROR);
		return NULL;
	}
	if ((j->cfg.features & VDF_EnumFrozenFiles) && list_frozen_files(d) < 0)
		return NULL;
	if ((j->cfg.features & VDF_SnapshotPrepare) && send_command(d, VDC_PrepareToFreeze) < 0)
		return NULL;
	exec_test_pause(j, "freeze");
	if (freeze(d) < 0)
		return NULL;
	frozen = 1;
	if (hash_frozen(d) < 0 || bk_write_trailer(&d->w) < 0)
		goto thaw;
	if ((rc = vdi_sstream_drain(d->s)) < 0) {
		stream_fail(d, "VDC_Write", rc);
		goto thaw;
	}
	pthread_mutex_init(&fw.m, NULL);
	pthread_cond_init(&fw.c, NULL);
	watching = pthread_create(&watch, NULL, freeze_watch_main, &fw) == 0;
	if (!watching)
		job_fail(j, "cannot start the freeze-limit thread");
	else
		send_command(d, VDC_Snapshot);
thaw:
	if (watching) {
		pthread_mutex_lock(&fw.m);
		fw.done = 1;
		pthread_cond_signal(&fw.c);
		pthread_mutex_unlock(&fw.m);
		pthread_join(watch, NULL);
		pthread_cond_destroy(&fw.c);
		pthread_mutex_destroy(&fw.m);
	}
	if (frozen)
		flock(j->db_fd, LOCK_UN);
	return NULL;
}

/* --------------------------------------------------------------- threads */

static int open_stream(struct devjob *d)
{
	struct job *j = d->j;
	uint32_t xfer = j->st.maxtransfersize;
	int rc = vdi_sstream_open(j->pool, d->dev, xfer, &d->s);

	if (rc < 0) {
		d->s = NULL;
		job_fail(j, "device '%s': cannot open the stream: %s: %s", dev_name(d),
		         vdi_strerror(rc), vdi_last_error());
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------- discard */

static void discard_done(VDS_Command *cmd)
{
	struct devjob *d = cmd->completionContext;

	pthread_mutex_lock(&d->j->discard_lock);
	d->discard_done = 1;
	pthread_cond_broadcast(&d->j->discard_cond);
	pthread_mutex_unlock(&d->j->discard_lock);
}

/*
 * A restore failed (job_fail, before the abort): with VDF_Discard offered
 * the client learns that the data of this restore is worthless and may be
 * dropped (spec 6.4), on every device.  Sent outside the streams (their
 * threads may be anywhere), so a full device queue refuses it; each
 * answer is awaited for 1 s in all, then the abort completes the rest.
 */
void exec_discard(struct job *j)
{
	struct timespec until;
	unsigned k, answered = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 1;

	for (k = 0; k < j->st.ndev; k++) {
		struct devjob *d = &j->d[k];

		if (!d->dev)
			continue;
		memset(&d->discard, 0, sizeof(d->discard));
		d->discard.commandCode = VDC_Discard;
		d->discard.completionRoutine = discard_done;
		d->discard.completionContext = d;
		d->discard_done = 0;
		(void)vdi_server_send_command(d->dev, &d->discard); /* D8: the routine runs */
	}
	pthread_mutex_lock(&j->discard_lock);
	for (k = 0; k < j->st.ndev; k++) {
		struct devjob *d = &j->d[k];

		while (d->dev && !d->discard_done &&
		       pthread_cond_timedwait(&j->discard_cond, &j->discard_lock, &until) == 0)
			;
		if (d->dev && d->discard_done && d->discard.completionCode == ERROR_SUCCESS)
			answered++;
	}
	pthread_mutex_unlock(&j->discard_lock);
	if (!j->quiet)
		cli_err("VDC_Discard sent to the %u device%s of the failed restore: %u answered",
		        j->st.ndev, j->st.ndev == 1 ? "" : "s", answered);
}

int exec_run_devices(struct job *j)
{
	int backup = j->st.kind == STMT_BACKUP;
	unsigned n = j->st.ndev;

	/* A restore failing from here on tells a client that offered
	 * VDF_Discard (until the streams are closed: job_fail's hook). */
	if (!backup && (j->cfg.features & VDF_Discard)) {
		pthread_mutex_lock(&j->lock);
		j->on_fail = exec_discard;
		pthread_mutex_unlock(&j->lock);
	}
	/* Every stream opens before any moves data, so a device whose
	 * stream cannot open fails the job before a byte moved. */
	for (unsigned k = 0; k < n && !job_failed(j); k++) {
		struct devjob *d = &j->d[k];

		if (open_stream(d) < 0)
			break;
		if (backup && !(d->buf = malloc(BK_CHUNK_SIZE))) {
			job_fail(j, "out of memory for the chunk buffers");
			break;
		}
	}
	for (unsigned k = 0; k < n && !job_failed(j); k++) {
		struct devjob *d = &j->d[k];

		void *(*fn)(void *) = !backup                        ? restore_main
		                      : (j->st.given & OPT_SNAPSHOT) ? snapshot_main
		                                                     : backup_main;

		if (pthread_create(&d->thread, NULL, fn, d) != 0) {
			job_fail(j, "cannot start the thread of device '%s'", dev_name(d));
			break;
		}
		d->started = 1;
	}
	for (unsigned k = 0; k < n; k++) {
		struct devjob *d = &j->d[k];

		if (d->started)
			pthread_join(d->thread, NULL);
		if (d->s) {
			int rc = vdi_sstream_close(d->s);

			d->s = NULL;
			if (rc < 0 && !job_failed(j))
				job_fail(j, "device '%s': closing the stream failed: %s: %s",
				         dev_name(d), vdi_strerror(rc), vdi_last_error());
		}
		free(d->buf);
		d->buf = NULL;
	}
	pthread_mutex_lock(&j->lock);
	j->on_fail = NULL;
	pthread_mutex_unlock(&j->lock);
	return job_failed(j) ? -1 : 0;
}

/* ------------------------------------------------------------ HEADERONLY */

static void print_time(int64_t t)
{
	char buf[64];
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) && strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm))
		printf("BackupTime        %s\n", buf);
	else
		printf("BackupTime        %" PRId64 "\n", t);
}

void exec_print_headers(struct job *j)
{
	const struct bk_header *h = &j->set.ref;
	char id[37];

	if (!j->set.have_ref)
		return;
	bk_id_format(h->id, id);
	printf("BackupId          %s\n", id);
	printf("DatabaseName      %s\n", h->db);
	printf("Description       %s\n", h->description);
	printf("BackupSize        %" PRIu64 "\n", h->total_size);
	print_time(h->time);
	printf("FormatVersion     %u\n", h->version);
	/* SQL Server's HEADERONLY codes: 1 database, 2 log, 5 differential */
	printf("BackupType        %u (%s)\n",
	       h->kind == BK_LOG    ? 2u
	       : h->kind == BK_DIFF ? 5u
	                            : 1u,
	       h->kind == BK_LOG        ? "log"
	       : h->kind == BK_DIFF     ? "differential"
	       : h->kind == BK_SNAPSHOT ? "full, snapshot"
	                                : "full");
	printf("IsCopyOnly        %u\n", (h->flags & BK_F_COPY_ONLY) ? 1u : 0u);
	printf("FirstLSN          %" PRIu64 "\n", h->first_lsn);
	printf("LastLSN           %" PRIu64 "\n", h->lsn);
	{
		char lineage[37];

		bk_id_format(h->lineage, lineage);
		printf("BackupLineage     %s\n", lineage);
	}
	printf("Stripes           %u\n", h->stripes);
	printf("BlockSize         %u\n", h->block_size);
	printf("MaxTransferSize   %u\n", h->max_transfer_size);
	printf("ChunkSize         %u\n", h->chunk_size);
	printf("Chunks            %" PRIu64 "\n", h->chunk_count);
	for (unsigned k = 0; k < j->st.ndev; k++) {
		const struct bk_reader *r = &j->d[k].r;

		printf("Stripe            %u of %u  device '%s'  chunks %" PRIu64 "  bytes %" PRIu64
		       "  header-crc32c %08x  stream-crc32c %08x\n",
		       r->h.stripe + 1, r->h.stripes, j->st.dev[k], r->t.chunks, r->t.data_bytes,
		       r->h.crc, r->t.stream_crc);
	}
	fflush(stdout);
}
