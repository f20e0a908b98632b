/* SPDX-License-Identifier: MIT */
/*
 * media.c - removable media as files (F35).  Medium 0 of a device is its
 * file <dev>; medium m >= 1 is the file <dev>.<m>.  Where a medium ends
 * is the client stream adapter's business (vdi_cstream_volume_ended,
 * vdi_cstream_end_volume, vdi_cstream_next_volume; D50): this module only
 * decides which file holds a device's stream.
 *
 *   backup   a read at the end of a medium returns 0 (end of file) and
 *            <dev>.<m+1> appears; the reader closes, and the stream stays
 *            open with no file (dev->between).  The open of <dev>.<m+1>
 *            calls vdi_cstream_next_volume (the server's queued Writes
 *            learn the end of the medium, it sends VDC_Load and writes
 *            on), and its reads return the next medium's bytes.  The end
 *            of the last medium is the end of the stream, as for any
 *            device file.
 *   restore  the orderly release of a medium's writer ends the medium
 *            (vdi_cstream_end_volume: the server's Read ends with
 *            ERROR_HANDLE_EOF) and waits on the release worker, as the
 *            close of a restore device does, for the server's answer: a
 *            Read of the next medium (after its VDC_Load) makes the device
 *            wait for <dev>.<m+1>; the server's close of the device ends
 *            the stream.  A medium written ahead of its turn fails the
 *            set (a missing medium: the restore cannot be right), as a
 *            tar member out of sequence does; one written again is
 *            refused.
 *
 * The open of <dev>.<m> waits (bounded by open_timeout, interruptible)
 * for medium m - 1 to end and its file to be released: the kernel sends
 * RELEASE after close(2) returned, so a script's next `cat` may come
 * first, and a restore's next medium is wanted only once the server said
 * so.
 *
 * Between media no file and no thread uses the stream (the pump is idle:
 * a backup's last read returned 0, a restore's wait ran on the release
 * worker), so the open that takes it over, and a failure of the set that
 * closes it (sets.c, close_idle_media_locked), do so under set->lock alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vdifs.h"

/* Media numbers fit the bits FS_INO_MED leaves them. */
#define FS_MEDIA_MAX 0xffffffu

static int removable(const struct fs_set *set)
{
	return (set->cfg.features & VDF_Removable) != 0;
}

/* Is device k's stream a backup?  With both directions configured (D18)
 * it goes the way its medium 0 was opened (devices.c). */
static int is_backup_locked(const struct fs_set *set, int k)
{
	if ((set->vcfg.features & (VDF_WriteMedia | VDF_ReadMedia)) ==
	    (VDF_WriteMedia | VDF_ReadMedia))
		return !set->dev[k].writer;
	return (set->vcfg.features & VDF_WriteMedia) != 0;
}

int fs_media_parse(const struct fs_set *set, const char *name, int *k, uint32_t *m)
{
	const char *dot = strrchr(name, '.');
	char dev[VDI_MAX_NAME + 8];
	unsigned long v;
	char *end;
	size_t n;
	int i;

	if (!removable(set) || !dot || dot[1] < '1' || dot[1] > '9')
		return -1; /* m >= 1, no leading zero: one name per medium */
	n = (size_t)(dot - name);
	if (n >= sizeof(dev))
		return -1;
	v = strtoul(dot + 1, &end, 10);
	if (*end || v > FS_MEDIA_MAX)
		return -1;
	memcpy(dev, name, n);
	dev[n] = '\0';
	i = fs_set_dev_index(set, dev);
	if (i < 0 || fs_is_tar(set, i))
		return -1;
	*k = i;
	*m = (uint32_t)v;
	return 0;
}

int fs_media_visible_locked(const struct fs_set *set, int k, uint32_t m)
{
	const struct fs_dev *dev = &set->dev[k];

	if (m <= dev->medium)
		return 1;
	return m == dev->medium + 1 && (dev->between || dev->medium_end);
}

/* A medium file's name, for messages. */
static void media_name(const struct fs_dev *dev, uint32_t m, char *buf, size_t len)
{
	if (m)
		snprintf(buf, len, "%s.%u", dev->name, m);
	else
		snprintf(buf, len, "%s", dev->name);
}

/* May medium m of device k be opened now (set->lock held)?  0: yes; 1:
 * wait (medium m - 1 has not ended, or its file is still open); or
 * -errno, logged. */
static int media_check_locked(struct fs_set *set, int k, uint32_t m, int *writer)
{
	struct fs_dev *dev = &set->dev[k];
	char name[VDI_MAX_NAME + 24];
	int backup;

	if (set->state == SET_FAILED || dev->state == DEV_FAILED)
		return -EIO;
	if (set->state == SET_WAITING)
		return 1;
	media_name(dev, m, name, sizeof(name));
	backup = is_backup_locked(set, k);
	if (*writer == 2)
		*writer = !backup;
	if (*writer == backup) {
		fs_log(VDI_LOG_WARN,
		       "set '%s': medium file '%s': open for %s refused: the server is %s",
		       set->name, name, *writer ? "writing" : "reading",
		       backup ? "backing up (read the file)" : "restoring (write the file)");
		return -EPERM;
	}
	if (set->state == SET_DONE || dev->state == DEV_DONE) {
		fs_log(VDI_LOG_WARN, "set '%s': medium file '%s': device '%s' ended on medium %u",
		       set->name, name, dev->name, dev->medium);
		return -ENODATA;
	}
	if (m <= dev->medium) {
		fs_log(VDI_LOG_WARN,
		       "set '%s': medium file '%s' refused: medium %u of device '%s' %s", set->name,
		       name, m, dev->name,
		       m == dev->medium ? "is open" : "was already transferred");
		return m == dev->medium ? -EBUSY : backup ? -ENODATA : -EINVAL;
	}
	if (m > dev->medium + 1) {
		if (backup)
			return -ENOENT; /* not there yet (a stale inode) */
		fs_set_error_locked(
			set,
			"medium file '%s' out of order: device '%s' is on medium %u and "
			"expects '%s.%u' next (a medium is missing)",
			name, dev->name, dev->medium, dev->name, dev->medium + 1);
		fs_set_fail_locked(set);
		return -EINVAL;
	}
	return dev->between ? 0 : 1;
}

/* Medium m takes the stream over from m - 1 (set->lock held; nobody else
 * uses the stream between media).  0 or -EIO. */
static int media_take_locked(struct fs_set *set, int k, uint32_t m)
{
	struct fs_dev *dev = &set->dev[k];

	if (is_backup_locked(set, k) && vdi_cstream_next_volume(dev->s)) {
		fs_set_error_locked(set, "device '%s': medium %u failed to start: %s", dev->name, m,
		                    vdi_last_error());
		fs_set_fail_locked(set);
		return -EIO;
	}
	dev->between = 0;
	dev->medium_end = 0;
	dev->medium = m;
	fs_log(VDI_LOG_INFO, "set '%s': device '%s': medium %u opened as '%s.%u' for %s", set->name,
	       dev->name, m, dev->name, m, is_backup_locked(set, k) ? "backup" : "restore");
	return 0;
}

static int media_wait_locked(fuse_req_t req, struct fs_set *set, int k, uint32_t m, int *writer)
{
	uint32_t ms = set->cfg.open_timeout_ms;
	struct timespec end;
	int rc;

	fs_deadline(&end, ms);
	while ((rc = media_check_locked(set, k, m, writer)) == 1) {
		rc = fs_open_wait_locked(req, set, &end);
		if (rc == -ETIMEDOUT && media_check_locked(set, k, m, writer) == 1) {
			fs_log(VDI_LOG_WARN,
			       "set '%s': medium file '%s.%u': medium %u did not end within %u ms",
			       set->name, set->dev[k].name, m, m - 1, ms);
			return -ETIMEDOUT;
		}
		if (rc && rc != -ETIMEDOUT)
			return rc;
	}
	return rc;
}

int fs_media_open(fuse_req_t req, struct fs_set *set, int k, uint32_t m, struct fuse_file_info *fi,
                  struct fs_handle *h)
{
	int acc = fi->flags & O_ACCMODE;
	int writer = acc == O_RDONLY ? 0 : acc == O_WRONLY ? 1 : 2;
	struct fs_wake w;
	int rc;

	fs_wake_on(req, &w, &set->lock, &set->cond);
	pthread_mutex_lock(&set->lock);
	set->open_handles++; /* rmdir must not pull the set from under us */
	rc = media_wait_locked(req, set, k, m, &writer);
	if (!rc)
		rc = media_take_locked(set, k, m);
	if (rc) {
		set->open_handles--;
		fs_set_maybe_finish_locked(set);
	} else {
		h->kind = H_DEV;
		h->dev = k;
		h->writer = writer;
		h->medium = m;
		h->append = (fi->flags & O_APPEND) != 0;
		h->base = set->dev[k].pos; /* offsets start at the file's beginning */
		fi->direct_io = 1;
		fi->nonseekable = 1;
		fi->keep_cache = 0;
	}
	pthread_mutex_unlock(&set->lock);
	fs_wake_off(req);
	return rc;
}

/* The stream waits for the next medium's file (set->lock taken). */
static void media_between(struct fs_set *set, int k, const char *what)
{
	struct fs_dev *dev = &set->dev[k];

	pthread_mutex_lock(&set->lock);
	dev->between = 1;
	set->open_handles--;
	fs_log(VDI_LOG_INFO, "set '%s': device '%s': medium %u %s: next is '%s.%u'", set->name,
	       dev->name, dev->medium, what, dev->name, dev->medium + 1);
	fs_set_maybe_finish_locked(set);
	pthread_cond_broadcast(&set->cond);
	pthread_mutex_unlock(&set->lock);
}

/* Restore: the writer of a medium is done with it.  The server answers
 * with the next medium's Read or the device's close (dev->io taken). */
static void media_restore_end(struct fs_handle *h)
{
	struct fs_set *set = h->set;
	struct fs_dev *dev = &set->dev[h->dev];
	char why[sizeof(set->last_error)];
	ssize_t n = VD_E_ABORT;
	void *p;
	int rc;

	pthread_mutex_lock(&dev->io);
	rc = dev->s ? vdi_cstream_end_volume(dev->s) : VD_E_ABORT;
	/* consumes nothing: the next medium's writer finds the same room */
	if (!rc)
		n = vdi_cstream_reserve(dev->s, &p, 1);
	snprintf(why, sizeof(why), "medium %u: %s", dev->medium,
	         rc || n < 0 ? vdi_last_error() : "");
	pthread_mutex_unlock(&dev->io);
	if (!rc && n > 0)
		media_between(set, h->dev, "written, the server reads on");
	else
		fs_dev_release(set, h->dev, !rc && n == VD_E_CLOSE, why);
}

int fs_media_release(struct fs_handle *h)
{
	struct fs_set *set = h->set;
	struct fs_dev *dev = &set->dev[h->dev];
	int end;

	if (!removable(set) || fs_is_tar(set, h->dev) || h->member)
		return 0;
	if (h->writer) {
		media_restore_end(h);
		return 1;
	}
	pthread_mutex_lock(&set->lock);
	end = dev->medium_end && h->medium == dev->medium;
	pthread_mutex_unlock(&set->lock);
	if (end)
		media_between(set, h->dev, "read to its end");
	return end;
}

void fs_media_ended(struct fs_set *set, int k)
{
	struct fs_dev *dev = &set->dev[k];

	pthread_mutex_lock(&set->lock);
	if (!dev->medium_end)
		fs_log(VDI_LOG_INFO, "set '%s': device '%s': end of medium %u after %llu bytes",
		       set->name, dev->name, dev->medium, (unsigned long long)dev->pos);
	dev->medium_end = 1;
	pthread_mutex_unlock(&set->lock);
}
