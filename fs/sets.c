/* SPDX-License-Identifier: MIT */
/*
 * sets.c - the registry of a mount (struct vdifs: its sets and the files
 * of /.config, under fs->lock) and the life of a set.
 *
 * Life of a set (the device streams are devices.c's, the watcher is
 * watcher.c's)
 *   mkdir    fs_set_create: vdi_bset_create through the set's client
 *            backend, with the mount's defaults overridden by
 *            /.config/<set>; state SET_WAITING.
 *   watcher  polls vdi_bset_get_configuration(0) for waiting sets and
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
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vdifs.h"

/* ---------------------------------------------------------------------
 * Registry.
 */
static struct fs_set *find_locked(struct vdifs *fs, const char *name, uint32_t id)
{
	struct fs_set_link *l;

	for (l = fs->sets; l; l = l->next)
		if (name ? !strcmp(l->set->name, name) : l->set->id == id)
			return l->set;
	return NULL;
}

static struct fs_set *get(struct vdifs *fs, const char *name, uint32_t id)
{
	struct fs_set *set;

	pthread_mutex_lock(&fs->lock);
	set = find_locked(fs, name, id);
	if (set)
		set->refs++;
	pthread_mutex_unlock(&fs->lock);
	return set;
}

struct fs_set *fs_set_get_id(struct vdifs *fs, uint32_t id)
{
	return get(fs, NULL, id);
}

struct fs_set *fs_set_get_name(struct vdifs *fs, const char *name)
{
	return get(fs, name, 0);
}

void fs_set_ref(struct fs_set *set)
{
	pthread_mutex_lock(&set->fs->lock);
	set->refs++;
	pthread_mutex_unlock(&set->fs->lock);
}

static void set_free(struct fs_set *set)
{
	uint32_t k;

	for (k = 0; k <= set->cfg.devices; k++)
		pthread_mutex_destroy(&set->dev[k].io);
	pthread_mutex_destroy(&set->lock);
	pthread_cond_destroy(&set->cond);
	free(set);
}

void fs_set_put(struct fs_set *set)
{
	int last;

	pthread_mutex_lock(&set->fs->lock);
	last = --set->refs == 0;
	pthread_mutex_unlock(&set->fs->lock);
	if (last)
		set_free(set);
}

int fs_set_dev_index(const struct fs_set *set, const char *name)
{
	uint32_t k;

	for (k = 0; k <= set->cfg.devices; k++)
		if (!strcmp(set->dev[k].name, name))
			return (int)k;
	return -1;
}

uint32_t fs_set_blksize(struct fs_set *set)
{
	uint32_t b;

	pthread_mutex_lock(&set->lock);
	b = set->state == SET_WAITING ? set->cfg.blksize : set->vcfg.maxTransferSize;
	pthread_mutex_unlock(&set->lock);
	return b ? b : set->cfg.blksize;
}

int fs_set_has_tar(const struct fs_set *set)
{
	return !(set->cfg.features & (VDF_FileMarks | VDF_Removable));
}

void fs_root_error_locked(struct vdifs *fs, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fs->last_error, sizeof(fs->last_error), fmt, ap);
	va_end(ap);
	fs_log(VDI_LOG_WARN, "%s", fs->last_error);
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

static struct fs_set *set_alloc(struct vdifs *fs, const char *name, const struct fs_setcfg *cfg)
{
	struct fs_set *set;
	uint32_t k;

	set = calloc(1, sizeof(*set) + (cfg->devices + 1) * sizeof(set->dev[0]));
	if (!set)
		return NULL;
	set->fs = fs;
	snprintf(set->name, sizeof(set->name), "%s", name);
	set->cfg = *cfg;
	pthread_mutex_init(&set->lock, NULL);
	pthread_cond_init(&set->cond, NULL);
	for (k = 0; k <= cfg->devices; k++) {
		pthread_mutex_init(&set->dev[k].io, NULL);
		if (k == cfg->devices)
			snprintf(set->dev[k].name, sizeof(set->dev[k].name), "%s.tar", name);
		else if (k == 0)
			snprintf(set->dev[k].name, sizeof(set->dev[k].name), "%s", name);
		else
			snprintf(set->dev[k].name, sizeof(set->dev[k].name), "%s%u", name, k);
	}
	set->t_created = fs_now_ms();
	set->created_wall = time(NULL);
	return set;
}

static int set_cfg_for(struct vdifs *fs, const char *name, struct fs_setcfg *cfg)
{
	struct fs_cfgfile *f;
	char err[160];

	*cfg = fs->defaults;
	for (f = fs->cfgfiles; f; f = f->next) {
		if (strcmp(f->name, name))
			continue;
		if (fs_cfg_parse(cfg, f->text, err, sizeof(err))) {
			fs_root_error_locked(fs, "mkdir '%s': .config/%s: %s", name, name, err);
			return -EINVAL;
		}
	}
	return 0;
}

static int client_create(struct fs_set *set)
{
	char err[PATH_MAX + 256];
	VDConfig vc;
	int rc;

	if (fs_backend_get(&set->cfg, &set->backend, err, sizeof(err))) {
		fs_root_error_locked(set->fs, "mkdir '%s': %s", set->name, err);
		return VD_E_INVALID;
	}
	memset(&vc, 0, sizeof(vc));
	vc.deviceCount = set->cfg.devices;
	vc.features = set->cfg.features;
	if (fs_snapshot_configured(&set->cfg)) /* offered only when answered */
		vc.features |= VDF_SnapshotPrepare | VDF_EnumFrozenFiles;
	vc.serverTimeOut = set->cfg.server_timeout_ms;
	rc = vdi_bset_new(set->backend, &set->client);
	if (!rc && set->cfg.has_group)
		rc = vdi_bset_set_group(set->client, set->cfg.group);
	if (!rc)
		rc = vdi_bset_create(set->client, set->cfg.instance[0] ? set->cfg.instance : NULL,
		                     set->name, &vc);
	if (rc) {
		fs_root_error_locked(set->fs, "mkdir '%s': create of the set failed: %s", set->name,
		                     vdi_last_error());
		vdi_bset_free(set->client);
		set->client = NULL;
	}
	return rc;
}

/*
 * The configuration waiter: one thread per waiting set, blocked in the
 * backend's GetConfiguration until the server ends its configuration,
 * the set is aborted (rmdir, .control, unmount, the server's death seen
 * by the engine) or the call fails; so nobody polls for it, and an open
 * that waits for the server sleeps on set->cond until this thread says.
 * It holds a reference on the set and counts in fs->waiters (unmount
 * waits for it, since it runs in the backend's library).  While it is in
 * its call the client must not be closed under it: a close asked for
 * meanwhile (client_close_locked) is left to it (close_pending); rmdir
 * and unmount instead wait for it to return (wait_waiter_locked).
 */
static void client_close_locked(struct fs_set *set);

static void *config_waiter(void *arg)
{
	struct fs_set *set = arg;
	struct vdifs *fs = set->fs;
	char why[sizeof(set->last_error)];
	VDConfig cfg;
	int rc;

	memset(&cfg, 0, sizeof(cfg));
	/* set->client is not closed while waiter_active (see above). */
	rc = vdi_bset_get_configuration(set->client, VDI_INFINITE, &cfg);
	snprintf(why, sizeof(why), "%s", rc ? vdi_last_error() : "");
	pthread_mutex_lock(&set->lock);
	set->waiter_active = 0;
	if (set->state == SET_WAITING && !rc) {
		set->vcfg = cfg;
		set->state = SET_CONFIGURED;
		set->t_configured = fs_now_ms();
		fs_log(VDI_LOG_INFO,
		       "set '%s': configured by the server: blocksize %u, maxtransfersize %u, features 0x%x",
		       set->name, cfg.blockSize, cfg.maxTransferSize, cfg.features);
	} else if (set->state == SET_WAITING) {
		fs_set_error_locked(set, "waiting for the server failed: %s", why);
		fs_set_fail_locked(set);
	}
	if (set->close_pending)
		client_close_locked(set);
	pthread_cond_broadcast(&set->cond);
	pthread_mutex_unlock(&set->lock);
	fs_set_put(set);
	pthread_mutex_lock(&fs->lock);
	if (--fs->waiters == 0)
		pthread_cond_broadcast(&fs->waiters_cond);
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

/* Starts the waiter of a new set (fs->lock held, the set not yet
 * registered).  0 or -errno. */
static int waiter_start_locked(struct vdifs *fs, struct fs_set *set)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t th;
	int rc;

	set->refs++;
	set->waiter_active = 1;
	fs->waiters++;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* signals are for libfuse's threads, which end the session */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&th, &attr, config_waiter, set);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (rc) {
		set->refs--;
		set->waiter_active = 0;
		fs->waiters--;
		fs_root_error_locked(fs, "mkdir '%s': no thread to wait for the server: %s",
		                     set->name, strerror(rc));
	}
	return -rc;
}

/* Waits until the waiter returned (set->lock held; it is released while
 * waiting): the caller aborted the set first, which is what ends the
 * waiter's call. */
static void wait_waiter_locked(struct fs_set *set)
{
	while (set->waiter_active)
		pthread_cond_wait(&set->cond, &set->lock);
}

void fs_sets_wait_waiters(struct vdifs *fs)
{
	pthread_mutex_lock(&fs->lock);
	while (fs->waiters)
		pthread_cond_wait(&fs->waiters_cond, &fs->lock);
	pthread_mutex_unlock(&fs->lock);
}

int fs_set_create(struct vdifs *fs, const char *name, struct fs_set **out)
{
	struct fs_setcfg cfg;
	struct fs_set_link *link = NULL;
	struct fs_set *set = NULL;
	int rc;

	*out = NULL;
	pthread_mutex_lock(&fs->lock);
	rc = set_cfg_for(fs, name, &cfg);
	if (rc)
		goto out;
	rc = check_name(name, cfg.devices);
	if (rc) {
		fs_root_error_locked(fs, "mkdir '%s': not a valid set name for %u device(s)", name,
		                     cfg.devices);
		goto out;
	}
	rc = -EEXIST;
	if (find_locked(fs, name, 0))
		goto out;
	rc = -ENOMEM;
	link = malloc(sizeof(*link));
	set = set_alloc(fs, name, &cfg);
	if (!link || !set)
		goto out;
	rc = client_create(set);
	if (rc) {
		rc = -fs_errno(rc);
		goto out;
	}
	set->refs = 2; /* registry + caller */
	rc = waiter_start_locked(fs, set);
	if (rc) {
		client_close_locked(set);
		goto out;
	}
	set->id = ++fs->next_id;
	link->set = set;
	link->next = fs->sets;
	fs->sets = link;
	*out = set;
	fs_log(VDI_LOG_INFO, "set '%s': created (%u device(s))", name, cfg.devices);
	set = NULL;
	link = NULL;
	rc = 0;
out:
	pthread_mutex_unlock(&fs->lock);
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
void fs_set_note_abort_locked(struct fs_set *set)
{
	struct vdi_set_info info;

	if (!set->client || vdi_bset_info(set->client, &info))
		return;
	set->last_info = info;
	set->have_info = 1;
	if (info.abort_reason[0])
		fs_set_error_locked(set, "aborted: %s", info.abort_reason);
}

void fs_set_fail_locked(struct fs_set *set)
{
	if (set->state == SET_FAILED || set->state == SET_DONE)
		return;
	fs_set_note_abort_locked(set);
	set->state = SET_FAILED;
	if (set->client)
		vdi_bset_signal_abort(set->client);
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
		fs_set_fail_locked(set);
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
	if (set->waiter_active) {
		/* the waiter is inside a call on the client: it closes it
		 * once the abort ends that call */
		set->close_pending = 1;
		vdi_bset_signal_abort(set->client);
		return;
	}
	if (!vdi_bset_info(set->client, &set->last_info))
		set->have_info = 1;
	if (set->state != SET_DONE)
		vdi_bset_signal_abort(set->client);
	rc = vdi_bset_close(set->client);
	if (rc && set->state == SET_DONE) {
		fs_set_error_locked(set, "close of the set failed: %s", vdi_last_error());
		set->state = SET_FAILED;
	}
	vdi_bset_free(set->client);
	set->client = NULL;
	set->t_ended = fs_now_ms();
	pthread_cond_broadcast(&set->cond);
}

/* The set failed: close the streams of devices between media (F35), which
 * no file holds; lock held. */
static void close_idle_media_locked(struct fs_set *set)
{
	uint32_t k;

	for (k = 0; k < set->cfg.devices; k++) {
		struct fs_dev *dev = &set->dev[k];

		if (!dev->between)
			continue;
		dev->between = 0;
		fs_pump_stop(&dev->pump); /* idle between media: returns at once */
		if (dev->s)
			vdi_cstream_close(dev->s, 0);
		dev->s = NULL;
		dev->vd = NULL;
		dev->state = DEV_FAILED;
	}
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
		close_idle_media_locked(set);
		client_close_locked(set);
	}
}

/* Does the engine say this set can no longer make progress? */
static int info_ended(const struct vdi_set_info *info)
{
	return info->state == VDI_SET_ABORTED || info->state == VDI_SET_TERMINATED ||
	       info->state == VDI_SET_CLOSED || (info->server_pid && !info->server_alive);
}

/* Is a server still using the set (set->lock held)?  A set whose
 * transfer is over (done, failed, or the engine says it ended) has no
 * server left; one still waiting has one only once it attached. */
static int server_attached_locked(struct fs_set *set)
{
	struct vdi_set_info info;

	if (!set->client || set->state == SET_DONE || set->state == SET_FAILED)
		return 0;
	if (vdi_bset_info(set->client, &info))
		return 0;
	if (set->state == SET_WAITING && !info.server_pid)
		return 0;
	return !info_ended(&info);
}

/*
 * rmdir waits, bounded, for the handles of a set whose transfer is over
 * (fs->lock released meanwhile, the set held by a reference): the kernel
 * sends RELEASE after close(2) returned, as a background request, so a
 * script's rmdir right after its reader or writer exited would otherwise
 * find the handle still open and fail with EBUSY.  A handle still open
 * after FS_RMDIR_WAIT_MS is a process that really holds the file: EBUSY.
 */
static void wait_releases(struct vdifs *fs, struct fs_set *set)
{
	struct timespec ts;

	fs_deadline(&ts, FS_RMDIR_WAIT_MS);
	set->refs++;
	pthread_mutex_unlock(&fs->lock);
	pthread_mutex_lock(&set->lock);
	while (set->open_handles > 0 && !server_attached_locked(set) &&
	       pthread_cond_timedwait(&set->cond, &set->lock, &ts) == 0)
		;
	pthread_mutex_unlock(&set->lock);
	fs_set_put(set);
	pthread_mutex_lock(&fs->lock);
}

static struct fs_set_link **link_of_locked(struct vdifs *fs, const char *name)
{
	struct fs_set_link **pl = &fs->sets;

	while (*pl && strcmp((*pl)->set->name, name))
		pl = &(*pl)->next;
	return *pl ? pl : NULL;
}

int fs_set_remove(struct vdifs *fs, const char *name)
{
	struct fs_set_link **pl, *l;
	struct fs_set *set;
	int rc = -ENOENT, waited = 0;

	pthread_mutex_lock(&fs->lock);
again:
	pl = link_of_locked(fs, name);
	if (!pl)
		goto out;
	set = (*pl)->set;
	pthread_mutex_lock(&set->lock);
	rc = -EBUSY;
	if (server_attached_locked(set) || set->open_handles > 0) {
		int releasing = !server_attached_locked(set);

		pthread_mutex_unlock(&set->lock);
		if (releasing && !waited++) {
			wait_releases(fs, set);
			goto again;
		}
		fs_root_error_locked(
			fs, "rmdir '%s': set is busy (a device is open or a server is attached)",
			name);
		goto out;
	}
	if (set->client && set->state != SET_DONE) {
		fs_set_error_locked(set, "removed by rmdir");
		fs_set_fail_locked(set);
	}
	wait_waiter_locked(set);
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
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

int fs_sets_snapshot(struct vdifs *fs, struct fs_set ***out)
{
	struct fs_set_link *l;
	struct fs_set **v;
	int n = 0, i = 0;

	pthread_mutex_lock(&fs->lock);
	for (l = fs->sets; l; l = l->next)
		n++;
	v = calloc((size_t)n + 1, sizeof(*v));
	for (l = fs->sets; v && l; l = l->next) {
		l->set->refs++;
		v[i++] = l->set;
	}
	pthread_mutex_unlock(&fs->lock);
	*out = v;
	return v ? i : 0;
}

/* No request runs any more (the session loop returned): close what the
 * kernel will never release, abort what is still active. */
void fs_sets_shutdown(struct vdifs *fs)
{
	struct fs_set_link *l;

	pthread_mutex_lock(&fs->lock);
	while ((l = fs->sets)) {
		struct fs_set *set = l->set;
		uint32_t k;

		fs->sets = l->next;
		free(l);
		pthread_mutex_lock(&set->lock);
		if (set->client && set->state != SET_DONE) {
			fs_set_error_locked(set, "aborted: filesystem unmounted");
			fs_set_fail_locked(set); /* wakes the pumps, the waiter */
		}
		wait_waiter_locked(set);
		/* the tar file first: it owns the streams of its devices */
		for (k = set->cfg.devices + 1; k-- > 0;) {
			fs_pump_stop(&set->dev[k].pump);
			if (set->dev[k].t)
				vdi_tarstream_close(set->dev[k].t, 0);
			if (set->dev[k].s)
				vdi_cstream_close(set->dev[k].s, 0);
			set->dev[k].s = NULL;
			set->dev[k].t = NULL;
		}
		client_close_locked(set);
		set->removed = 1;
		pthread_mutex_unlock(&set->lock);
		if (--set->refs == 0)
			set_free(set);
	}
	while (fs->cfgfiles) {
		struct fs_cfgfile *f = fs->cfgfiles;

		fs->cfgfiles = f->next;
		free(f);
	}
	pthread_mutex_unlock(&fs->lock);
}

/* ---------------------------------------------------------------------
 * Config files: /.config/<set>.
 */
static struct fs_cfgfile *cfgfile_find_locked(struct vdifs *fs, const char *name, uint32_t id)
{
	struct fs_cfgfile *f;

	for (f = fs->cfgfiles; f; f = f->next)
		if (name ? !strcmp(f->name, name) : f->id == id)
			return f;
	return NULL;
}

static int cfgfile_copy(struct vdifs *fs, const char *name, uint32_t id, struct fs_cfgfile *copy)
{
	struct fs_cfgfile *f;

	pthread_mutex_lock(&fs->lock);
	f = cfgfile_find_locked(fs, name, id);
	if (f)
		*copy = *f;
	pthread_mutex_unlock(&fs->lock);
	return f ? 0 : -ENOENT;
}

int fs_cfgfile_lookup(struct vdifs *fs, const char *name, struct fs_cfgfile *copy)
{
	return cfgfile_copy(fs, name, 0, copy);
}

int fs_cfgfile_get_id(struct vdifs *fs, uint32_t id, struct fs_cfgfile *copy)
{
	return cfgfile_copy(fs, NULL, id, copy);
}

int fs_cfgfile_create(struct vdifs *fs, const char *name, struct fs_cfgfile *copy)
{
	struct fs_cfgfile *f;
	int rc = 0;

	if (strlen(name) > VDI_MAX_NAME)
		return -ENAMETOOLONG;
	pthread_mutex_lock(&fs->lock);
	f = cfgfile_find_locked(fs, name, 0);
	if (!f) {
		f = calloc(1, sizeof(*f));
		if (f) {
			snprintf(f->name, sizeof(f->name), "%s", name);
			f->id = ++fs->next_id;
			f->mtime = time(NULL);
			f->next = fs->cfgfiles;
			fs->cfgfiles = f;
		}
	}
	if (f)
		*copy = *f;
	else
		rc = -ENOMEM;
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

/* Replaces the text after checking it parses (so a typo fails the
 * write with EINVAL at once rather than the later mkdir). */
int fs_cfgfile_store(struct vdifs *fs, uint32_t id, const char *text, size_t len)
{
	struct fs_setcfg probe = fs->defaults;
	struct fs_cfgfile *f;
	char err[160], buf[FS_MAX_CONFIG_TEXT];
	int rc = 0;

	if (len >= sizeof(buf))
		return -EFBIG;
	memcpy(buf, text, len);
	buf[len] = '\0';
	if (strlen(buf) != len || fs_cfg_parse(&probe, buf, err, sizeof(err))) {
		pthread_mutex_lock(&fs->lock);
		fs_root_error_locked(fs, ".config: %s", strlen(buf) != len ? "NUL byte" : err);
		pthread_mutex_unlock(&fs->lock);
		return -EINVAL;
	}
	pthread_mutex_lock(&fs->lock);
	f = cfgfile_find_locked(fs, NULL, id);
	if (f) {
		memcpy(f->text, buf, len + 1);
		f->len = len;
		f->mtime = time(NULL);
	} else {
		rc = -ENOENT;
	}
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

int fs_cfgfile_remove(struct vdifs *fs, const char *name)
{
	struct fs_cfgfile **pf, *f;
	int rc = -ENOENT;

	pthread_mutex_lock(&fs->lock);
	for (pf = &fs->cfgfiles; *pf; pf = &(*pf)->next) {
		if (strcmp((*pf)->name, name))
			continue;
		f = *pf;
		*pf = f->next;
		free(f);
		rc = 0;
		break;
	}
	pthread_mutex_unlock(&fs->lock);
	return rc;
}
