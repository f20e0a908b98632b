/* SPDX-License-Identifier: MIT */
/*
 * devfile.c - reading and writing device files: the data path of vdifs.
 *
 *   read = backup: the bytes of the server's VDC_Write buffers, handed to
 *     the kernel straight from the shared memory (fuse_reply_buf on the
 *     pointer vdi_cstream_peek gives: one copy, done by the kernel into
 *     the reader's pages), consumed (vdi_cstream_advance) only once the
 *     reply was accepted, so an interrupted read loses nothing.  A read
 *     returns what the current buffer holds (at most the request size);
 *     0 only at the true end of the stream.
 *   write = restore: fuse_buf_copy from the request straight into the
 *     buffer of the server's pending VDC_Read (vdi_cstream_reserve /
 *     _commit), in order: asynchronous direct I/O is off (ops.c op_init)
 *     and a write at another offset than the stream's is refused.
 *   The waits for the server happen on the device's pump thread
 *     (pump.c); requests leave them with EINTR on a FUSE interrupt.
 *   flush and release decide how the stream ends: orderly for a reader
 *     that saw end of file or a writer that was not killed, an abort of
 *     the set otherwise (a truncated backup never looks complete).
 *
 * dev->io is held across a request's stream calls; a RELEASE of the same
 * file takes it too, so it waits for a request still finishing after
 * its reply went out.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdifs.h"

static void dev_note_data(struct fs_dev *dev, size_t n)
{
	uint64_t now = fs_now_ms();

	if (!dev->t_first)
		__atomic_store_n(&dev->t_first, now, __ATOMIC_RELAXED);
	__atomic_store_n(&dev->t_last, now, __ATOMIC_RELAXED);
	__atomic_store_n(&dev->pos, dev->pos + n, __ATOMIC_RELAXED);
}

/* A stream call failed: the set fails (the engine already aborted it
 * when the server went away or the set was aborted; otherwise we do). */
static int dev_fail(struct fs_handle *h, const char *why, const char *what)
{
	struct fs_dev *dev = &h->set->dev[h->dev];

	h->failed = 1;
	fs_set_abort(h->set, "device '%s': %s failed at byte %llu: %s", dev->name, what,
	             (unsigned long long)dev->pos, why);
	return EIO;
}

/* Backup: hand out the next bytes of the server's VDC_Write data. */
void fs_devfile_read(struct fs_rq *r, struct fs_handle *h, size_t size)
{
	struct fs_dev *dev = &h->set->dev[h->dev];
	char msg[320];
	void *p = NULL;
	ssize_t n = 0;
	int rc;

	if (h->writer || h->failed) {
		fs_reply_err(r, h->failed ? EIO : EBADF);
		return;
	}
	pthread_mutex_lock(&dev->io);
	if (!dev->at_eof && !dev->s && !dev->t) {
		/* never end of file for a stream that is gone before its end */
		snprintf(msg, sizeof(msg), "the device's stream is gone");
		n = -EPIPE;
	} else if (!dev->at_eof) {
		n = fs_pump_get(&dev->pump, r->req, size, &p, msg, sizeof(msg));
	}
	if (n == -EINTR) {
		pthread_mutex_unlock(&dev->io);
		fs_reply_err(r, EINTR); /* nothing consumed: the reader may retry */
		return;
	}
	if (n < 0) {
		rc = dev_fail(h, n == -ESHUTDOWN ? "unmounted" : msg, "read");
		pthread_mutex_unlock(&dev->io);
		fs_reply_err(r, rc);
		return;
	}
	if (n == 0 && dev->s && vdi_cstream_volume_ended(dev->s))
		fs_media_ended(h->set, h->dev); /* a medium's end, not the stream's */
	else if (n == 0)
		dev->at_eof = 1;
	fs_rq_end(r, (long)n);
	/* consume the bytes only once the kernel took them */
	rc = fuse_reply_buf(r->req, n ? p : NULL, (size_t)n);
	if (!rc && n > 0) {
		if (dev->t ? vdi_tarstream_advance(dev->t, (size_t)n)
		           : vdi_cstream_advance(dev->s, (size_t)n)) {
			dev_fail(h, vdi_last_error(), "read");
		} else {
			dev_note_data(dev, (size_t)n);
			fs_pump_prefetch(&dev->pump, size);
		}
	} else if (rc) {
		fs_log(VDI_LOG_WARN, "device '%s': reply of %zd bytes not delivered: %s", dev->name,
		       n, strerror(-rc));
	}
	pthread_mutex_unlock(&dev->io);
}

/* A device file is a stream: a write must come at the stream's position
 * (dev->io held).  The kernel sends one write(2) as consecutive requests
 * and never two at once (asynchronous direct I/O is off, ops.c op_init),
 * so another offset is a caller seeking or two writers racing on one
 * file: refused (ESPIPE) rather than guessed at. */
static int dev_check_turn(struct fs_handle *h, off_t off)
{
	struct fs_dev *dev = &h->set->dev[h->dev];

	if (h->append)
		return 0;
	/* a member file's offsets start at its own beginning */
	return (uint64_t)off == dev->pos - h->base ? 0 : -ESPIPE;
}

/* Restore: copy a write into the buffers of the server's VDC_Reads.
 * 0 or -errno (msg has the reason of a failure of the stream: -ENOSPC is
 * a server that reads no more); *done counts the bytes delivered. */
static int dev_write_some(struct fs_rq *r, struct fs_handle *h, struct fuse_bufvec *bufv,
                          size_t total, size_t *done, char *msg, size_t msglen)
{
	struct fs_dev *dev = &h->set->dev[h->dev];

	while (*done < total) {
		struct fuse_bufvec dst = FUSE_BUFVEC_INIT(0);
		void *p;
		ssize_t n, c;
		int rc;

		n = fs_pump_get(&dev->pump, r->req, total - *done, &p, msg, msglen);
		if (n <= 0)
			return n ? (int)n : -EIO; /* reserve never gives 0 bytes */
		dst.buf[0].size = (size_t)n;
		dst.buf[0].mem = p;
		c = fuse_buf_copy(&dst, bufv, 0);
		if (c <= 0) {
			snprintf(msg, msglen, "copy from the write request failed: %s",
			         strerror(c < 0 ? (int)-c : EIO));
			return c < 0 ? (int)c : -EIO;
		}
		rc = dev->t ? vdi_tarstream_commit(dev->t, (size_t)c)
		            : vdi_cstream_commit(dev->s, (size_t)c);
		if (rc) {
			snprintf(msg, msglen, "%s", vdi_last_error());
			return -fs_errno(rc);
		}
		*done += (size_t)c;
		dev_note_data(dev, (size_t)c);
	}
	return 0;
}

void fs_devfile_write(struct fs_rq *r, struct fs_handle *h, struct fuse_bufvec *bufv, off_t off)
{
	struct fs_dev *dev = &h->set->dev[h->dev];
	size_t total = fuse_buf_size(bufv), done = 0;
	char msg[320] = "";
	int rc;

	if (!h->writer || h->failed) {
		fs_reply_err(r, h->failed ? EIO : EBADF);
		return;
	}
	pthread_mutex_lock(&dev->io);
	if (!dev->s && !dev->t)
		snprintf(msg, sizeof(msg), "the device's stream is gone");
	rc = dev->s || dev->t ? dev_check_turn(h, off) : -EIO;
	if (!rc)
		rc = dev_write_some(r, h, bufv, total, &done, msg, sizeof(msg));
	if ((rc == -ENOSPC || rc == -EINTR) && done > 0)
		rc = 0; /* a short write: the writer goes on or learns next time */
	if (rc == -ENOSPC || rc == -ESPIPE || rc == -EINTR) {
		fs_log(VDI_LOG_WARN, "device '%s': write at byte %llu refused: %s", dev->name,
		       (unsigned long long)dev->pos, strerror(-rc));
		h->failed = rc != -EINTR;
		pthread_mutex_unlock(&dev->io);
		fs_reply_err(r, -rc);
		return;
	}
	if (rc)
		rc = dev_fail(h,
		              rc == -ESHUTDOWN ? "unmounted"
		              : msg[0]         ? msg
		                               : strerror(-rc),
		              "write");
	pthread_mutex_unlock(&dev->io);
	if (rc)
		fs_reply_err(r, rc);
	else
		fs_reply_write(r, done);
}

/* Is the process closing the file dying of a signal?  Read while it
 * waits for our FLUSH reply inside exit, so /proc still shows it:
 * field 9 is flags (PF_EXITING = 4), field 52 the exit code. */
static int closer_killed_by(pid_t pid)
{
	char path[64], buf[2048], *p, *save = NULL;
	unsigned long flags = 0;
	long code = 0;
	int field = 3;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	for (p = strtok_r(p + 1, " ", &save); p; p = strtok_r(NULL, " ", &save), field++) {
		if (field == 9)
			flags = strtoul(p, NULL, 10);
		else if (field == 52)
			code = strtol(p, NULL, 10);
	}
	if (!(flags & 0x4))
		return 0;
	return (int)(code & 0x7f);
}

/*
 * FLUSH comes with every close(2), synchronously, before the RELEASE of
 * the last one.  A reader that reached end of file ends its stream here
 * (orderly: the server's VDC_Complete completes, and close(2) returns
 * EIO if that failed): after a lazy unmount the kernel drops the final
 * RELEASE, and the backup must not fail because of that.  The wait for
 * the server to close the device follows the reply (*end), so close(2)
 * never waits for other stripes and stays interruptible.  A writer
 * cannot end here (a shell closes its copy of the descriptor before the
 * writer wrote anything): it ends at RELEASE.
 */
int fs_devfile_flush(struct fs_handle *h, pid_t pid, int *end)
{
	int sig;

	*end = 0;
	if (h->ended)
		return 0;
	sig = closer_killed_by(pid);
	if (sig && !h->killed) {
		h->killed = sig;
		fs_log(VDI_LOG_WARN,
		       "set '%s': device '%s': pid %d killed by signal %d while holding the device",
		       h->set->name, h->set->dev[h->dev].name, (int)pid, sig);
	}
	if (!h->writer && !h->killed && !h->failed && h->set->dev[h->dev].at_eof) {
		h->ended = 1;
		*end = 1;
		return fs_dev_end(h->set, h->dev);
	}
	return 0;
}

void fs_devfile_release(struct fs_handle *h)
{
	struct fs_dev *dev = &h->set->dev[h->dev];
	char why[96];
	int ok;

	if (h->ended)
		return;
	if (!h->killed && !h->failed && fs_media_release(h))
		return; /* the end of a medium: the stream goes on */
	if (h->killed)
		snprintf(why, sizeof(why), "%s killed by signal %d",
		         h->writer ? "writer" : "reader", h->killed);
	else if (h->failed)
		snprintf(why, sizeof(why), "%s failed", h->writer ? "write" : "read");
	else
		snprintf(why, sizeof(why), "reader closed the device before end of stream");
	ok = !h->killed && !h->failed && (h->writer || dev->at_eof);
	if (ok && h->member)
		fs_member_close(h->set, h->dev, dev->pos == h->base);
	else
		fs_dev_release(h->set, h->dev, ok, why);
}
