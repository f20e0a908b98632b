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

int fs_open_wait_locked(fuse_req_t req, struct fs_set *set, const struct timespec *end)
{
	int rc = fs_req_check(req);

	if (rc)
		return rc;
	if (set->cfg.open_timeout_ms & 0x80000000u) /* infinite */
		return pthread_cond_wait(&set->cond, &set->lock), 0;
	return pthread_cond_timedwait(&set->cond, &set->lock, end) == ETIMEDOUT ? -ETIMEDOUT : 0;
}

/* An open waits for the server's configuration (set->lock held): woken
 * by the configuration waiter (sets.c), an abort of the set, the
 * request's interrupt (fs_wake_on, registered by the caller), bounded by
 * open_timeout. */
static int wait_configured_locked(fuse_req_t req, struct fs_set *set)
{
	struct timespec end;
	int rc;

	fs_deadline(&end, set->cfg.open_timeout_ms);
	while (set->state == SET_WAITING) {
		rc = fs_open_wait_locked(req, set, &end);
		if (rc && (rc != -ETIMEDOUT || set->state == SET_WAITING))
			return rc;
	}
	return 0;
}

/* The tar file and the device files of a set exclude each other, so no
 * byte goes to two readers (set->lock held): 0 or -EBUSY, logged. */
static int tar_exclusion_locked(struct fs_set *set, int k)
{
	uint32_t i;

	if (!fs_is_tar(set, k)) {
		if (set->dev[set->cfg.devices].state != DEV_OPEN)
			return 0;
		fs_log(VDI_LOG_WARN, "set '%s': device '%s' refused: '%s' streams every device",
		       set->name, set->dev[k].name, set->dev[set->cfg.devices].name);
		return -EBUSY;
	}
	for (i = 0; i < set->cfg.devices; i++) {
		if (set->dev[i].state == DEV_IDLE)
			continue;
		fs_log(VDI_LOG_WARN, "set '%s': '%s' refused: device '%s' was opened as a file",
		       set->name, set->dev[k].name, set->dev[i].name);
		return set->dev[i].state == DEV_OPEN ? -EBUSY : -ENODATA;
	}
	return 0;
}

/* May device k be opened now, in that direction?  0 or -errno. */
static int dev_check_locked(struct fs_set *set, int k, int *writer)
{
	struct fs_dev *dev = &set->dev[k];
	int backup = (set->vcfg.features & VDF_WriteMedia) != 0;
	int rc;

	if (set->state == SET_FAILED || dev->state == DEV_FAILED)
		return -EIO;
	if (set->state == SET_DONE || dev->state == DEV_DONE)
		return -ENODATA;
	if (dev->medium || dev->between) {
		fs_log(VDI_LOG_WARN,
		       "set '%s': device '%s': medium 0 is over: its medium %u is '%s.%u'",
		       set->name, dev->name, dev->medium + dev->between, dev->name,
		       dev->medium + dev->between);
		return -ENODATA;
	}
	if (dev->state == DEV_OPEN)
		return -EBUSY;
	if (fs_is_tar(set, k) && !fs_set_has_tar(set)) {
		fs_log(VDI_LOG_WARN,
		       "set '%s': '%s' refused: a tar member cannot carry a tape image or "
		       "removable media (features %s); read or write the device files",
		       set->name, dev->name,
		       set->cfg.features & VDF_FileMarks ? "tape" : "removable");
		return -EOPNOTSUPP;
	}
	rc = tar_exclusion_locked(set, k);
	if (rc)
		return rc;
	if (*writer == 2)
		*writer = !backup;
	if ((set->vcfg.features & (VDF_WriteMedia | VDF_ReadMedia)) ==
	    (VDF_WriteMedia | VDF_ReadMedia))
		return 0; /* both configured (D18): the opener's direction; the
		           * stream fails loudly if the server's is the other */
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
		fs_set_error_locked(set, "device '%s': open failed: %s", dev->name,
		                    vdi_last_error());
		return -fs_errno(rc);
	}
	/* no timeout: a blocked stream call is woken by the abort that a
	 * dying reader or writer, .control, unmount or the engine's peer
	 * watch raises, and an orderly close must wait for VD_E_CLOSE */
	rc = vdi_cstream_open(dev->vd, VDI_INFINITE, &dev->s);
	if (rc) {
		fs_set_error_locked(set, "device '%s': stream failed: %s", dev->name,
		                    vdi_last_error());
		return -fs_errno(rc);
	}
	fs_snapshot_attach(set, dev->s);
	if (set->cfg.volume_size && (set->vcfg.features & VDF_WriteMedia) &&
	    (rc = vdi_cstream_set_volume_size(dev->s, set->cfg.volume_size))) {
		fs_set_error_locked(set, "device '%s': %s", dev->name, vdi_last_error());
		return -fs_errno(rc);
	}
	return 0;
}

static void tar_devices_end_locked(struct fs_set *set, int ok);

/* The tar file: every device attached, their streams handed to one tar
 * stream (set->lock held).  An attached device cannot be given back: on
 * failure the set fails here, and every stream opened is closed. */
static int tar_attach_locked(struct fs_set *set, int k)
{
	struct vdi_cstream *s[VDI_MAX_DEVICES];
	struct fs_dev *tar = &set->dev[k];
	uint32_t i;
	int rc = 0;

	for (i = 0; i < set->cfg.devices && !rc; i++) {
		set->dev[i].state = DEV_OPEN;
		set->dev[i].by_tar = 1;
		rc = dev_attach_locked(set, (int)i);
	}
	if (rc) {
		fs_set_fail_locked(set);
		for (i = 0; i < set->cfg.devices; i++)
			if (set->dev[i].s)
				vdi_cstream_close(set->dev[i].s, 0);
		tar_devices_end_locked(set, 0);
		return rc;
	}
	for (i = 0; i < set->cfg.devices; i++) {
		s[i] = set->dev[i].s;
		set->dev[i].s = NULL; /* the tar stream owns them now */
	}
	rc = vdi_tarstream_open(s, set->cfg.devices, &tar->t);
	if (rc) {
		fs_set_error_locked(set, "'%s': tar stream failed: %s", tar->name,
		                    vdi_last_error());
		for (i = 0; i < set->cfg.devices; i++)
			vdi_cstream_close(s[i], 0);
		fs_set_fail_locked(set);
		tar_devices_end_locked(set, 0);
		return -fs_errno(rc);
	}
	return 0;
}

/* The devices the tar file streamed end with it (set->lock held). */
static void tar_devices_end_locked(struct fs_set *set, int ok)
{
	uint32_t i;

	for (i = 0; i < set->cfg.devices; i++) {
		struct fs_dev *d = &set->dev[i];

		if (!d->by_tar)
			continue;
		d->state = ok ? DEV_DONE : DEV_FAILED;
		d->vd = NULL;
		d->s = NULL;
	}
}

int fs_member_open(fuse_req_t req, struct fs_set *set, int k, uint64_t seq, const char *name)
{
	struct fs_dev *dev = &set->dev[k];
	struct fs_wake w;
	int rc;

	if (dev->state == DEV_IDLE && seq == 0) { /* the first member opens it */
		rc = fs_dev_open(req, set, k, 1);
		if (rc < 0)
			return rc;
		pthread_mutex_lock(&set->lock);
		dev->by_members = 1;
		dev->member_open = 1;
		dev->next_seq = 0;
		pthread_mutex_unlock(&set->lock);
		return 1;
	}
	fs_wake_on(req, &w, &set->lock, &set->cond);
	pthread_mutex_lock(&set->lock);
	rc = 0;
	if (set->state == SET_FAILED || dev->state == DEV_FAILED)
		rc = -EIO;
	else if (dev->state == DEV_DONE)
		rc = -ENODATA;
	else if (dev->state == DEV_OPEN && (!dev->by_members || dev->member_open))
		rc = -EBUSY; /* a file or another member streams it now */
	else if (seq != dev->next_seq) {
		fs_set_error_locked(set,
		                    "member '%s' out of sequence: device '%s' expects member %llu "
		                    "(at byte %llu of its stream)",
		                    name, dev->name, (unsigned long long)dev->next_seq,
		                    (unsigned long long)dev->pos);
		fs_set_fail_locked(set);
		rc = -EINVAL;
	}
	if (!rc) {
		dev->member_open = 1;
		set->open_handles++;
	}
	fs_set_maybe_finish_locked(set);
	pthread_mutex_unlock(&set->lock);
	fs_wake_off(req);
	return rc ? rc : 1;
}

void fs_member_close(struct fs_set *set, int k, int empty)
{
	struct fs_dev *dev = &set->dev[k];

	pthread_mutex_lock(&set->lock);
	dev->next_seq++;
	dev->member_open = 0;
	if (!empty)
		set->open_handles--;
	pthread_cond_broadcast(&set->cond);
	pthread_mutex_unlock(&set->lock);
	if (empty)
		fs_dev_release(set, k, 1, "end of the device's members");
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
		rc = fs_is_tar(set, k) ? tar_attach_locked(set, k) : dev_attach_locked(set, k);
	}
	if (!rc) {
		rc = fs_pump_start(&dev->pump, dev->s, dev->t, writer);
		if (rc)
			fs_set_error_locked(set, "device '%s': no thread: %s", dev->name,
			                    strerror(-rc));
	}
	if (rc) {
		/* Only what this call attached is undone: a refused open
		 * (EBUSY: another handle streams this device) must not touch
		 * the other handle's stream. */
		if (attached && (dev->vd || dev->t)) {
			/* an opened VDI device cannot be given back: fail */
			dev->state = DEV_FAILED;
			fs_set_fail_locked(set);
			if (dev->s)
				vdi_cstream_close(dev->s, 0);
			if (dev->t)
				vdi_tarstream_close(dev->t, 0);
			dev->s = NULL;
			dev->t = NULL;
			dev->vd = NULL;
			if (fs_is_tar(set, k))
				tar_devices_end_locked(set, 0);
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
	fs_log(VDI_LOG_INFO, "set '%s': device '%s' opened for %s", set->name, dev->name,
	       writer ? "restore (writing)" : "backup (reading)");
	pthread_mutex_unlock(&set->lock);
	fs_wake_off(req);
	return writer ? 1 : 0;
}

/* Stops the pump and closes the stream (dev->io held).  A pump still
 * waiting for the server means the stream did not end: abort first,
 * which is what wakes it. */
static int dev_stream_end(struct fs_set *set, struct fs_dev *dev, int *ok, const char **why)
{
	struct vdi_cstream *s = dev->s;
	struct vdi_tarstream *t = dev->t;

	if (*ok && fs_pump_busy(&dev->pump)) {
		*ok = 0;
		*why = "stream closed while a request waited for the server";
	}
	if (!*ok) {
		pthread_mutex_lock(&set->lock);
		fs_set_error_locked(set, "device '%s': %s at byte %llu", dev->name, *why,
		                    (unsigned long long)dev->pos);
		fs_set_fail_locked(set);
		pthread_mutex_unlock(&set->lock);
	}
	fs_pump_stop(&dev->pump);
	dev->s = NULL;
	dev->t = NULL;
	if (t)
		return vdi_tarstream_close(t, *ok);
	return s ? vdi_cstream_close(s, *ok) : 0;
}

int fs_dev_end(struct fs_set *set, int k)
{
	struct fs_dev *dev = &set->dev[k];
	uint64_t pos;
	int rc;

	pthread_mutex_lock(&dev->io);
	pos = dev->pos;
	rc = dev->t ? vdi_tarstream_end(dev->t) : dev->s ? vdi_cstream_end(dev->s) : VD_E_ABORT;
	pthread_mutex_unlock(&dev->io);
	if (!rc)
		return 0;
	pthread_mutex_lock(&set->lock);
	fs_set_error_locked(set, "device '%s': end of stream failed at byte %llu: %s", dev->name,
	                    (unsigned long long)pos,
	                    dev->s || dev->t ? vdi_last_error() : "no stream");
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
		                    dev->name, (unsigned long long)pos, vdi_last_error());
		ok = 0;
	}
	dev->state = ok ? DEV_DONE : DEV_FAILED;
	dev->vd = NULL; /* freed by vdi_bset_close */
	if (fs_is_tar(set, k))
		tar_devices_end_locked(set, ok);
	if (!ok)
		fs_set_fail_locked(set);
	fs_log(VDI_LOG_INFO, "set '%s': device '%s' closed after %llu bytes (%s)", set->name,
	       dev->name, (unsigned long long)pos, ok ? "ok" : why);
	set->open_handles--;
	fs_set_maybe_finish_locked(set);
	pthread_cond_broadcast(&set->cond);
	pthread_mutex_unlock(&set->lock);
}
