/* SPDX-License-Identifier: MIT */
/*
 * sets.c - the sets of a mount: registry, device streams' life cycle,
 * the watcher thread, status text, and config files.
 *
 * Life of a set
 *   mkdir    fs_set_create: vdi_client_create_ex with the mount's
 *            defaults overridden by /.config/<set>; state SET_WAITING.
 *   watcher  polls vdi_client_get_configuration(0) for waiting sets and
 *            moves them to SET_CONFIGURED (or SET_FAILED), so that a
 *            device open() that waits for the server only sleeps on
 *            set->cond; it also notices a set aborted (server died or
 *            aborted) while no device file is open, and ends it.
 *   open     fs_dev_open: waits (bounded, interruptible) for the
 *            configuration, opens the VDI device by the name the file
 *            shows, and wraps it in a client stream.
 *   release  fs_dev_release: vdi_cstream_close(ok) - an orderly end
 *            (reader saw end of stream / writer closed), or an abort
 *            (reader closed early, writer killed, an error).
 *   end      once every device ended normally, or the set failed and no
 *            device is open, the client is closed (the set's shared
 *            memory disappears) and the directory stays, read-only, with
 *            its final status, until rmdir.
 *
 * Failures are never silent: the first error of a set is kept in
 * set->last_error and shown by .status; every abort goes to the log.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vdifs.h"

/* The one place where a libvdi code becomes an errno (STYLE.md rule 4). */
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
	case VD_E_ABORT: /* fall through: the set failed */
	case VD_E_CLOSE:
	case VD_E_PROTOCOL:
	case VD_E_IO_ERROR:
	case VD_E_UNEXPECTED:
	case VD_E_NOTOPEN:
	default:
		return EIO;
	}
}

int fs_req_check(fuse_req_t req)
{
	if (__atomic_load_n(&fs_g->stopping, __ATOMIC_ACQUIRE) ||
	    fuse_session_exited(fs_g->se))
		return -EIO;
	if (req && fuse_req_interrupted(req))
		return -EINTR;
	return 0;
}

/* ---------------------------------------------------------------------
 * Registry.
 */
static struct fs_set *find_locked(const char *name, uint32_t id)
{
	struct fs_set_link *l;

	for (l = fs_g->sets; l; l = l->next)
		if (name ? !strcmp(l->set->name, name) : l->set->id == id)
			return l->set;
	return NULL;
}

static struct fs_set *get(const char *name, uint32_t id)
{
	struct fs_set *set;

	pthread_mutex_lock(&fs_g->lock);
	set = find_locked(name, id);
	if (set)
		set->refs++;
	pthread_mutex_unlock(&fs_g->lock);
	return set;
}

struct fs_set *fs_set_get_id(uint32_t id)
{
	return get(NULL, id);
}

struct fs_set *fs_set_get_name(const char *name)
{
	return get(name, 0);
}

void fs_set_ref(struct fs_set *set)
{
	pthread_mutex_lock(&fs_g->lock);
	set->refs++;
	pthread_mutex_unlock(&fs_g->lock);
}

static void set_free(struct fs_set *set)
{
	uint32_t k;

	for (k = 0; k < set->cfg.devices; k++)
		pthread_mutex_destroy(&set->dev[k].io);
	pthread_mutex_destroy(&set->lock);
	pthread_cond_destroy(&set->cond);
	free(set);
}

void fs_set_put(struct fs_set *set)
{
	int last;

	pthread_mutex_lock(&fs_g->lock);
	last = --set->refs == 0;
	pthread_mutex_unlock(&fs_g->lock);
	if (last)
		set_free(set);
}

int fs_set_dev_index(const struct fs_set *set, const char *name)
{
	uint32_t k;

	for (k = 0; k < set->cfg.devices; k++)
		if (!strcmp(set->dev[k].name, name))
			return (int)k;
	return -1;
}

uint32_t fs_set_blksize(struct fs_set *set)
{
	uint32_t b;

	pthread_mutex_lock(&set->lock);
	b = set->state == SET_WAITING ? set->cfg.blksize
				       : set->vcfg.maxTransferSize;
	pthread_mutex_unlock(&set->lock);
	return b ? b : set->cfg.blksize;
}

void fs_root_error_locked(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fs_g->last_error, sizeof(fs_g->last_error), fmt, ap);
	va_end(ap);
	fs_log(VDI_LOG_WARN, "%s", fs_g->last_error);
}

/* A set name is a VDI name: 1..127 bytes, no '\\' or control character.
 * Devices 1..N-1 append their number, which must fit too. */
static int check_name(const char *name, uint32_t devices)
{
	size_t n = strlen(name), digits = 0;
	const unsigned char *p;
	uint32_t d;

	if (n == 0)
		return -EINVAL;
	for (d = devices - 1; devices > 1 && d; d /= 10)
		digits++;
	if (n > VDI_MAX_NAME || n + digits > VDI_MAX_NAME)
		return -ENAMETOOLONG;
	for (p = (const unsigned char *)name; *p; p++)
		if (*p < 0x20 || *p == 0x7f || *p == '\\')
			return -EINVAL;
	return 0;
}

static struct fs_set *set_alloc(const char *name, const struct fs_setcfg *cfg)
{
	struct fs_set *set;
	uint32_t k;

	set = calloc(1, sizeof(*set) + cfg->devices * sizeof(set->dev[0]));
	if (!set)
		return NULL;
	snprintf(set->name, sizeof(set->name), "%s", name);
	set->cfg = *cfg;
	pthread_mutex_init(&set->lock, NULL);
	pthread_cond_init(&set->cond, NULL);
	for (k = 0; k < cfg->devices; k++) {
		pthread_mutex_init(&set->dev[k].io, NULL);
		if (k == 0)
			snprintf(set->dev[k].name, sizeof(set->dev[k].name),
				 "%s", name);
		else
			snprintf(set->dev[k].name, sizeof(set->dev[k].name),
				 "%s%u", name, k);
	}
	set->t_created = fs_now_ms();
	set->created_wall = time(NULL);
	return set;
}

static int set_cfg_for(const char *name, struct fs_setcfg *cfg)
{
	struct fs_cfgfile *f;
	char err[160];

	*cfg = fs_g->defaults;
	for (f = fs_g->cfgfiles; f; f = f->next) {
		if (strcmp(f->name, name))
			continue;
		if (fs_cfg_parse(cfg, f->text, err, sizeof(err))) {
			fs_root_error_locked("mkdir '%s': .config/%s: %s", name, name, err);
			return -EINVAL;
		}
	}
	return 0;
}

static int client_create(struct fs_set *set)
{
	VDConfig vc;
	int rc;

	memset(&vc, 0, sizeof(vc));
	vc.deviceCount = set->cfg.devices;
	vc.features = set->cfg.features;
	vc.serverTimeOut = set->cfg.server_timeout_ms;
	rc = vdi_client_new(&set->client);
	if (!rc && set->cfg.has_group)
		rc = vdi_client_set_group(set->client, set->cfg.group);
	if (!rc)
		rc = vdi_client_create_ex(set->client,
					  set->cfg.instance[0] ? set->cfg.instance : NULL,
					  set->name, &vc);
	if (rc) {
		fs_root_error_locked("mkdir '%s': create of the set failed: %s",
			   set->name, vdi_last_error());
		if (set->client)
			vdi_client_free(set->client);
		set->client = NULL;
	}
	return rc;
}

int fs_set_create(const char *name, struct fs_set **out)
{
	struct fs_setcfg cfg;
	struct fs_set_link *link = NULL;
	struct fs_set *set = NULL;
	int rc;

	*out = NULL;
	pthread_mutex_lock(&fs_g->lock);
	rc = set_cfg_for(name, &cfg);
	if (rc)
		goto out;
	rc = check_name(name, cfg.devices);
	if (rc) {
		fs_root_error_locked("mkdir '%s': not a valid set name for %u device(s)",
			   name, cfg.devices);
		goto out;
	}
	rc = -EEXIST;
	if (find_locked(name, 0))
		goto out;
	rc = -ENOMEM;
	link = malloc(sizeof(*link));
	set = set_alloc(name, &cfg);
	if (!link || !set)
		goto out;
	rc = client_create(set);
	if (rc) {
		rc = -fs_errno(rc);
		goto out;
	}
	set->id = ++fs_g->next_id;
	set->refs = 2; /* registry + caller */
	link->set = set;
	link->next = fs_g->sets;
	fs_g->sets = link;
	*out = set;
	fs_log(VDI_LOG_INFO, "set '%s': created (%u device(s))", name, cfg.devices);
	set = NULL;
	link = NULL;
	rc = 0;
out:
	pthread_mutex_unlock(&fs_g->lock);
	free(link);
	if (set)
		set_free(set);
	return rc;
}

/* ---------------------------------------------------------------------
 * Errors, abort, end.
 */
void fs_set_error_locked(struct fs_set *set, const char *fmt, ...)
{
	va_list ap;
	char msg[sizeof(set->last_error)];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fs_log(VDI_LOG_ERROR, "set '%s': %s", set->name, msg);
	if (!set->last_error[0])
		memcpy(set->last_error, msg, sizeof(msg));
}

/* The engine's words for why the set aborted (server died, ...). */
static void note_abort_reason_locked(struct fs_set *set)
{
	struct vdi_set_info info;

	if (!set->client || vdi_client_info(set->client, &info))
		return;
	set->last_info = info;
	set->have_info = 1;
	if (info.abort_reason[0])
		fs_set_error_locked(set, "aborted: %s", info.abort_reason);
}

static void set_fail_locked(struct fs_set *set)
{
	if (set->state == SET_FAILED || set->state == SET_DONE)
		return;
	note_abort_reason_locked(set);
	set->state = SET_FAILED;
	if (set->client)
		vdi_client_signal_abort(set->client);
	pthread_cond_broadcast(&set->cond);
}

int fs_set_abort(struct fs_set *set, const char *fmt, ...)
{
	va_list ap;
	char msg[sizeof(set->last_error)];
	int rc = 0;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&set->lock);
	if (set->state == SET_DONE) {
		rc = -EINVAL; /* nothing left to abort */
	} else {
		fs_set_error_locked(set, "%s", msg);
		set_fail_locked(set);
		fs_set_maybe_finish_locked(set);
	}
	pthread_mutex_unlock(&set->lock);
	return rc;
}

static void client_close_locked(struct fs_set *set)
{
	int rc;

	if (!set->client)
		return;
	if (!vdi_client_info(set->client, &set->last_info))
		set->have_info = 1;
	if (set->state != SET_DONE)
		vdi_client_signal_abort(set->client);
	rc = vdi_client_close(set->client);
	if (rc && set->state == SET_DONE) {
		fs_set_error_locked(set, "close of the set failed: %s",
				    vdi_last_error());
		set->state = SET_FAILED;
	}
	vdi_client_free(set->client);
	set->client = NULL;
	set->t_ended = fs_now_ms();
	pthread_cond_broadcast(&set->cond);
}

void fs_set_maybe_finish_locked(struct fs_set *set)
{
	uint32_t k, done = 0;

	if (!set->client || set->open_handles > 0)
		return;
	for (k = 0; k < set->cfg.devices; k++)
		done += set->dev[k].state == DEV_DONE;
	if (set->state == SET_CONFIGURED && done == set->cfg.devices) {
		set->state = SET_DONE;
		client_close_locked(set);
		fs_log(VDI_LOG_INFO, "set '%s': %s", set->name,
		       set->state == SET_DONE ? "done" : "failed at close");
	} else if (set->state == SET_FAILED) {
		client_close_locked(set);
	}
}

/* Does the engine say this set can no longer make progress? */
static int info_ended(const struct vdi_set_info *info)
{
	return info->state == VDI_SET_ABORTED || info->state == VDI_SET_TERMINATED ||
	       info->state == VDI_SET_CLOSED || (info->server_pid && !info->server_alive);
}

int fs_set_remove(const char *name)
{
	struct fs_set_link **pl, *l;
	struct fs_set *set;
	struct vdi_set_info info;
	int rc = -ENOENT;

	pthread_mutex_lock(&fs_g->lock);
	for (pl = &fs_g->sets; *pl && strcmp((*pl)->set->name, name);)
		pl = &(*pl)->next;
	if (!*pl)
		goto out;
	set = (*pl)->set;
	pthread_mutex_lock(&set->lock);
	rc = -EBUSY;
	if (set->open_handles > 0 ||
	    (set->client && set->state == SET_CONFIGURED &&
	     !vdi_client_info(set->client, &info) && !info_ended(&info)) ||
	    (set->client && set->state == SET_WAITING &&
	     !vdi_client_info(set->client, &info) && info.server_pid &&
	     !info_ended(&info))) {
		pthread_mutex_unlock(&set->lock);
		fs_root_error_locked("rmdir '%s': set is busy (a device is open or a server is attached)",
			   name);
		goto out;
	}
	if (set->client && set->state != SET_DONE) {
		fs_set_error_locked(set, "removed by rmdir");
		set_fail_locked(set);
	}
	client_close_locked(set);
	set->removed = 1;
	pthread_mutex_unlock(&set->lock);
	l = *pl;
	*pl = l->next;
	free(l);
	rc = 0;
	if (--set->refs == 0)
		set_free(set);
out:
	pthread_mutex_unlock(&fs_g->lock);
	return rc;
}

/* ---------------------------------------------------------------------
 * Device streams.
 */
static int wait_configured_locked(fuse_req_t req, struct fs_set *set)
{
	uint64_t t0 = fs_now_ms(), limit = set->cfg.open_timeout_ms;
	int inf = (set->cfg.open_timeout_ms & 0x80000000u) != 0;
	int rc;

	while (set->state == SET_WAITING) {
		struct timespec ts;

		rc = fs_req_check(req);
		if (rc)
			return rc;
		if (!inf && fs_now_ms() - t0 >= limit)
			return -ETIMEDOUT;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)FS_POLL_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&set->cond, &set->lock, &ts);
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
	rc = vdi_client_open_device(set->client, dev->name, &dev->vd);
	if (rc) {
		fs_set_error_locked(set, "device '%s': open failed: %s",
				    dev->name, vdi_last_error());
		return -fs_errno(rc);
	}
	/* no timeout: a blocked stream call is woken by the abort that a
	 * dying reader or writer, .control, unmount or the engine's peer
	 * watch raises, and an orderly close must wait for VD_E_CLOSE */
	rc = vdi_cstream_new(dev->vd, VDI_INFINITE, &dev->s);
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
	int rc, attached = 0;

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
			set_fail_locked(set);
			if (dev->s)
				vdi_cstream_close(dev->s, 0);
			dev->s = NULL;
		}
		set->open_handles--;
		fs_set_maybe_finish_locked(set);
		pthread_mutex_unlock(&set->lock);
		return rc;
	}
	dev->state = DEV_OPEN;
	dev->writer = writer;
	dev->pos = 0;
	dev->at_eof = 0;
	fs_log(VDI_LOG_INFO, "set '%s': device '%s' opened for %s", set->name,
	       dev->name, writer ? "restore (writing)" : "backup (reading)");
	pthread_mutex_unlock(&set->lock);
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
		set_fail_locked(set);
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
	set_fail_locked(set);
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
	dev->vd = NULL; /* freed by vdi_client_close */
	if (!ok)
		set_fail_locked(set);
	fs_log(VDI_LOG_INFO, "set '%s': device '%s' closed after %llu bytes (%s)",
	       set->name, dev->name, (unsigned long long)pos, ok ? "ok" : why);
	set->open_handles--;
	fs_set_maybe_finish_locked(set);
	pthread_cond_broadcast(&set->cond);
	pthread_mutex_unlock(&set->lock);
}

/* ---------------------------------------------------------------------
 * Watcher thread.
 */
static void watch_one(struct fs_set *set)
{
	struct vdi_set_info info;
	int rc;

	pthread_mutex_lock(&set->lock);
	if (!set->client) {
		pthread_mutex_unlock(&set->lock);
		return;
	}
	if (set->state == SET_WAITING) {
		rc = vdi_client_get_configuration(set->client, 0, &set->vcfg);
		if (!rc) {
			set->state = SET_CONFIGURED;
			set->t_configured = fs_now_ms();
			fs_log(VDI_LOG_INFO, "set '%s': configured by the server: blocksize %u, maxtransfersize %u, features 0x%x",
			       set->name, set->vcfg.blockSize,
			       set->vcfg.maxTransferSize, set->vcfg.features);
			pthread_cond_broadcast(&set->cond);
		} else if (rc != VD_E_TIMEOUT) {
			fs_set_error_locked(set, "waiting for the server failed: %s",
					    vdi_last_error());
			set_fail_locked(set);
		}
	} else if (set->state == SET_CONFIGURED && set->open_handles == 0 &&
		   !vdi_client_info(set->client, &info) &&
		   (info.state == VDI_SET_ABORTED || (info.server_pid && !info.server_alive))) {
		fs_set_error_locked(set, "the set ended while no device was open: %s",
				    info.abort_reason[0] ? info.abort_reason
							 : "server gone");
		set_fail_locked(set);
	}
	fs_set_maybe_finish_locked(set);
	pthread_mutex_unlock(&set->lock);
}

int fs_sets_snapshot(struct fs_set ***out)
{
	struct fs_set_link *l;
	struct fs_set **v;
	int n = 0, i = 0;

	pthread_mutex_lock(&fs_g->lock);
	for (l = fs_g->sets; l; l = l->next)
		n++;
	v = calloc((size_t)n + 1, sizeof(*v));
	for (l = fs_g->sets; v && l; l = l->next) {
		l->set->refs++;
		v[i++] = l->set;
	}
	pthread_mutex_unlock(&fs_g->lock);
	*out = v;
	return v ? i : 0;
}

/* The session is ending (unmount, SIGTERM): wake every request blocked
 * in a stream call by aborting its set, so libfuse can join its workers
 * and no server waits for us. */
static void abort_for_exit(struct fs_set *set)
{
	pthread_mutex_lock(&set->lock);
	if (set->client && set->state != SET_DONE) {
		fs_set_error_locked(set, "aborted: filesystem unmounted");
		set_fail_locked(set);
	}
	pthread_mutex_unlock(&set->lock);
}

static void *watcher_main(void *arg)
{
	struct fs_set **v;
	int i, n, exiting;

	(void)arg;
	while (!__atomic_load_n(&fs_g->stopping, __ATOMIC_ACQUIRE)) {
		struct timespec ts = { 0, (long)FS_POLL_MS * 1000000L };

		exiting = fuse_session_exited(fs_g->se);
		n = fs_sets_snapshot(&v);
		for (i = 0; i < n; i++) {
			if (exiting)
				abort_for_exit(v[i]);
			else
				watch_one(v[i]);
			fs_set_put(v[i]);
		}
		free(v);
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int fs_watcher_start(void)
{
	int rc = pthread_create(&fs_g->watcher, NULL, watcher_main, NULL);

	if (rc)
		return -rc;
	fs_g->watcher_started = 1;
	return 0;
}

void fs_watcher_stop(void)
{
	__atomic_store_n(&fs_g->stopping, 1, __ATOMIC_RELEASE);
	if (fs_g->watcher_started)
		pthread_join(fs_g->watcher, NULL);
	fs_g->watcher_started = 0;
}

/* No request runs any more (the session loop returned): close what the
 * kernel will never release, abort what is still active. */
void fs_sets_shutdown(void)
{
	struct fs_set_link *l;

	fs_watcher_stop();
	pthread_mutex_lock(&fs_g->lock);
	while ((l = fs_g->sets)) {
		struct fs_set *set = l->set;
		uint32_t k;

		fs_g->sets = l->next;
		free(l);
		pthread_mutex_lock(&set->lock);
		if (set->client && set->state != SET_DONE) {
			fs_set_error_locked(set, "aborted: filesystem unmounted");
			set_fail_locked(set); /* wakes the pumps */
		}
		for (k = 0; k < set->cfg.devices; k++) {
			fs_pump_stop(&set->dev[k].pump);
			if (set->dev[k].s)
				vdi_cstream_close(set->dev[k].s, 0);
			set->dev[k].s = NULL;
		}
		client_close_locked(set);
		set->removed = 1;
		pthread_mutex_unlock(&set->lock);
		if (--set->refs == 0)
			set_free(set);
	}
	while (fs_g->cfgfiles) {
		struct fs_cfgfile *f = fs_g->cfgfiles;

		fs_g->cfgfiles = f->next;
		free(f);
	}
	pthread_mutex_unlock(&fs_g->lock);
}
