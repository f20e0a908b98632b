/* SPDX-License-Identifier: MIT */
/*
 * devices.c - the streams of a set's devices: a device file's open
 * attaches the VDI device and its client stream (after the server's
 * configuration), its end of stream acknowledges the backup, its
 * release ends the stream, orderly or by aborting the set.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vdifs.h"

/* An open waits for the server's configuration (set->lock held): woken
 * by the configuration waiter (sets.c), an abort of the set, the
 * request's interrupt (fs_wake_on, registered by the caller), bounded by
 * open_timeout. */
static int wait_configured_locked(fuse_req_t req, struct fs_set *set)
{
	uint32_t ms = set->cfg.open_timeout_ms;
	struct timespec end;
	int rc;

	clock_gettime(CLOCK_REALTIME, &end);
	end.tv_sec += ms / 1000;
	end.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (end.tv_nsec >= 1000000000L) {
		end.tv_sec++;
		end.tv_nsec -= 1000000000L;
	}
	while (set->state == SET_WAITING) {
		rc = fs_req_check(req);
		if (rc)
			return rc;
		if (ms & 0x80000000u) /* infinite */
			pthread_cond_wait(&set->cond, &set->lock);
		else if (pthread_cond_timedwait(&set->cond, &set->lock, &end) == ETIMEDOUT &&
			 set->state == SET_WAITING)
			return -ETIMEDOUT;
	}
	return 0;
}

/* May device k be opened now, in that direction?  0 or -errno. */
static int dev_check_locked(struct fs_set *set, int k, int *writer)
{
	struct fs_dev *dev = &set->dev[k];
	int backup = (set->vcfg.features & VDF_WriteMedia) != 0;

	if (set->state == SET_FAILED || dev->state == DEV_FAILED)
		return -EIO;
	if (set->state == SET_DONE || dev->state == DEV_DONE)
		return -ENODATA;
	if (dev->state == DEV_OPEN)
		return -EBUSY;
	if (*writer == 2)
		*writer = !backup;
	if (*writer == backup) {
		fs_log(VDI_LOG_WARN, "set '%s': device '%s': open for %s refused: the server is %s",
		       set->name, dev->name, *writer ? "writing" : "reading",
		       backup ? "backing up (read the device)" : "restoring (write the device)");
		return -EPERM;
	}
	return 0;
}

static int dev_attach_locked(struct fs_set *set, int k)
{
	struct fs_dev *dev = &set->dev[k];
	int rc;

	if (!set->client)
		return -EIO;
	rc = vdi_bset_open_device(set->client, dev->name, &dev->vd);
	if (rc) {
		fs_set_error_locked(set, "device '%s': open failed: %s",
				    dev->name, vdi_last_error());
		return -fs_errno(rc);
	}
	/* no timeout: a blocked stream call is woken by the abort that a
	 * dying reader or writer, .control, unmount or the engine's peer
	 * watch raises, and an orderly close must wait for VD_E_CLOSE */
	rc = vdi_cstream_open(dev->vd, VDI_INFINITE, &dev->s);
	if (rc) {
		fs_set_error_locked(set, "device '%s': stream failed: %s",
				    dev->name, vdi_last_error());
		return -fs_errno(rc);
	}
	return 0;
}

int fs_dev_open(fuse_req_t req, struct fs_set *set, int k, int writer)
{
	struct fs_dev *dev = &set->dev[k];
	struct fs_wake w;
	int rc, attached = 0;

	fs_wake_on(req, &w, &set->lock, &set->cond);
	pthread_mutex_lock(&set->lock);
	set->open_handles++; /* rmdir must not pull the set from under us */
	rc = wait_configured_locked(req, set);
	if (!rc)
		rc = dev_check_locked(set, k, &writer);
	if (!rc) {
		attached = 1;
		rc = dev_attach_locked(set, k);
	}
	if (!rc) {
		rc = fs_pump_start(&dev->pump, dev->s, writer);
		if (rc)
			fs_set_error_locked(set, "device '%s': no thread: %s",
					    dev->name, strerror(-rc));
	}
	if (rc) {
		/* Only what this call attached is undone: a refused open
		 * (EBUSY: another handle streams this device) must not touch
		 * the other handle's stream. */
		if (attached && dev->vd) {
			/* an opened VDI device cannot be given back: fail */
			dev->state = DEV_FAILED;
			fs_set_fail_locked(set);
			if (dev->s)
				vdi_cstream_close(dev->s, 0);
			dev->s = NULL;
		}
		set->open_handles--;
		fs_set_maybe_finish_locked(set);
		pthread_mutex_unlock(&set->lock);
		fs_wake_off(req);
		return rc;
	}
	dev->state = DEV_OPEN;
	dev->writer = writer;
	dev->pos = 0;
	dev->at_eof = 0;
	fs_log(VDI_LOG_INFO, "set '%s': device '%s' opened for %s", set->name,
	       dev->name, writer ? "restore (writing)" : "backup (reading)");
	pthread_mutex_unlock(&set->lock);
	fs_wake_off(req);
	return writer ? 1 : 0;
}

/* Stops the pump and closes the stream (dev->io held).  A pump still
 * waiting for the server means the stream did not end: abort first,
 * which is what wakes it. */
static int dev_stream_end(struct fs_set *set, struct fs_dev *dev, int *ok,
			  const char **why)
{
	struct vdi_cstream *s = dev->s;

	if (*ok && fs_pump_busy(&dev->pump)) {
		*ok = 0;
		*why = "stream closed while a request waited for the server";
	}
	if (!*ok) {
		pthread_mutex_lock(&set->lock);
		fs_set_error_locked(set, "device '%s': %s at byte %llu", dev->name,
				    *why, (unsigned long long)dev->pos);
		fs_set_fail_locked(set);
		pthread_mutex_unlock(&set->lock);
	}
	fs_pump_stop(&dev->pump);
	dev->s = NULL;
	return s ? vdi_cstream_close(s, *ok) : 0;
}

int fs_dev_end(struct fs_set *set, int k)
{
	struct fs_dev *dev = &set->dev[k];
	uint64_t pos;
	int rc;

	pthread_mutex_lock(&dev->io);
	pos = dev->pos;
	rc = dev->s ? vdi_cstream_end(dev->s) : VD_E_ABORT;
	pthread_mutex_unlock(&dev->io);
	if (!rc)
		return 0;
	pthread_mutex_lock(&set->lock);
	fs_set_error_locked(set, "device '%s': end of stream failed at byte %llu: %s", dev->name,
			    (unsigned long long)pos, dev->s ? vdi_last_error() : "no stream");
	fs_set_fail_locked(set);
	pthread_mutex_unlock(&set->lock);
	return -EIO;
}

void fs_dev_release(struct fs_set *set, int k, int ok, const char *why)
{
	struct fs_dev *dev = &set->dev[k];
	uint64_t pos;
	int rc;

	pthread_mutex_lock(&dev->io);
	pos = dev->pos;
	rc = dev_stream_end(set, dev, &ok, &why);
	pthread_mutex_unlock(&dev->io);

	pthread_mutex_lock(&set->lock);
	if (ok && rc) {
		fs_set_error_locked(set, "device '%s': end of stream failed at byte %llu: %s",
				    dev->name, (unsigned long long)pos,
				    vdi_last_error());
		ok = 0;
	}
	dev->state = ok ? DEV_DONE : DEV_FAILED;
	dev->vd = NULL; /* freed by vdi_bset_close */
	if (!ok)
		fs_set_fail_locked(set);
	fs_log(VDI_LOG_INFO, "set '%s': device '%s' closed after %llu bytes (%s)",
	       set->name, dev->name, (unsigned long long)pos, ok ? "ok" : why);
	set->open_handles--;
	fs_set_maybe_finish_locked(set);
	pthread_cond_broadcast(&set->cond);
	pthread_mutex_unlock(&set->lock);
}
