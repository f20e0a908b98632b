/* SPDX-License-Identifier: MIT */
/*
 * backend.c - the client backend seam (vdi.h, "Client backends"): the
 * set and device objects every front end uses, and the libvdi backend.
 *
 * A struct vdi_bset forwards each call to its backend's operations
 * (backend_ops.h) and keeps what any backend can tell from the calls alone:
 * the state of the object, the final configuration, the devices it
 * opened, which of them returned VD_E_CLOSE, the bytes and commands
 * completed through it, and the first abort seen (a VD_E_ABORT return or
 * our own SignalAbort), with its sentence as the reason.  Over libvdi,
 * vdi_bset_info asks the engine instead, which knows more (the peer's
 * pid and liveness, the reason the aborting side gave).
 *
 * Locking: s->lock protects the bookkeeping only.  No backend call runs
 * under it: a thread blocked in GetConfiguration or GetCommand must not
 * keep another from calling SignalAbort, which is what wakes it.  The
 * counters and a device's saw_close are atomics, since the device's
 * thread writes them while any thread may read them through info.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend_ops.h"
#include "internal.h"

enum bs_state {
	BS_EMPTY,      /* nothing created on the object (new, or closed) */
	BS_CREATED,    /* Create succeeded; no configuration yet */
	BS_CONFIGURED, /* GetConfiguration succeeded */
};

struct vdi_bdev {
	struct vdi_bset *set;
	void *impl;
	int saw_close; /* atomic: VD_E_CLOSE returned */
	char name[VDI_MAX_NAME + 1];
};

struct vdi_bset {
	const struct vdi_backend *b;
	void *impl;
	int borrowed;         /* vdi_bdev_wrap: impl is the caller's */
	pthread_mutex_t lock; /* fields below, but the atomics */
	enum bs_state state;
	int closed_once; /* a set was closed on this object */
	int aborted;
	char reason[160];
	char instance[VDI_MAX_INSTANCE + 1];
	char name[VDI_MAX_NAME + 1];
	VDConfig cfg; /* client's, then the final one */
	uint32_t ndev;
	struct vdi_bdev *devs[VDI_MAX_DEVICES];
	uint64_t bytes, commands; /* atomics */
};

/* ------------------------------------------------------------------ */
/* the libvdi backend: vdi_client_* as they are */

static int lv_set_new(const struct vdi_backend *b, void **set)
{
	(void)b;
	return vdi_client_new((struct vdi_client **)set);
}

static void lv_set_free(void *set)
{
	vdi_client_free(set);
}

static int lv_set_group(void *set, gid_t group)
{
	return vdi_client_set_group(set, group);
}

static int lv_create(void *set, const char *instance, const char *name, const VDConfig *cfg)
{
	return vdi_client_create_ex(set, instance, name, cfg);
}

static int lv_get_configuration(void *set, uint32_t timeout_ms, VDConfig *cfg)
{
	return vdi_client_get_configuration(set, timeout_ms, cfg);
}

static int lv_open_device(void *set, const char *name, void **dev)
{
	return vdi_client_open_device(set, name, (struct vdi_client_device **)dev);
}

static int lv_signal_abort(void *set)
{
	return vdi_client_signal_abort(set);
}

static int lv_close(void *set)
{
	return vdi_client_close(set);
}

static int lv_info(void *set, struct vdi_set_info *info)
{
	return vdi_client_info(set, info);
}

static int lv_get_command(void *dev, uint32_t timeout_ms, VDC_Command **cmd)
{
	return vdi_client_get_command(dev, timeout_ms, cmd);
}

static int lv_complete_command(void *dev, VDC_Command *cmd, uint32_t code, uint32_t bytes,
                               uint64_t position)
{
	return vdi_client_complete_command(dev, cmd, code, bytes, position);
}

static const struct vdi_backend_ops libvdi_ops = {
	.kind = "libvdi",
	.set_new = lv_set_new,
	.set_free = lv_set_free,
	.set_group = lv_set_group,
	.create = lv_create,
	.get_configuration = lv_get_configuration,
	.open_device = lv_open_device,
	.dev_free = NULL, /* vdi_client_close frees its devices */
	.signal_abort = lv_signal_abort,
	.close = lv_close,
	.info = lv_info,
	.get_command = lv_get_command,
	.complete_command = lv_complete_command,
};

static const struct vdi_backend libvdi_backend = {
	.ops = &libvdi_ops,
	.name = "libvdi",
};

/* ------------------------------------------------------------------ */
/* backends */

const struct vdi_backend *vdi_backend_libvdi(void)
{
	return &libvdi_backend;
}

int vdi_backend_load(const char *path, struct vdi_backend **out)
{
	struct vdi_backend *b;
	int rc;

	vdi_clear_error();
	if (!out)
		return vdi_fail(VD_E_INVALID, "backend load: NULL result pointer");
	*out = NULL;
	if (!path || !*path)
		path = VDI_SQLVDI_DEFAULT_PATH;
	b = calloc(1, sizeof(*b));
	if (!b)
		return vdi_fail(VD_E_MEMORY, "backend load: out of memory");
	b->ops = &vdi_sqlvdi_ops;
	if ((size_t)snprintf(b->name, sizeof(b->name), "sqlvdi:%s", path) >= sizeof(b->name)) {
		free(b);
		return vdi_fail(VD_E_INVALID, "sqlvdi library path is longer than %d bytes",
		                PATH_MAX);
	}
	rc = vdi_sqlvdi_load(b, path);
	if (rc) {
		free(b);
		return rc;
	}
	*out = b;
	return 0;
}

void vdi_backend_free(struct vdi_backend *b)
{
	if (!b || b == &libvdi_backend)
		return;
	vdi_sqlvdi_unload(b);
	free(b);
}

const char *vdi_backend_name(const struct vdi_backend *b)
{
	return b ? b->name : "(none)";
}

int vdi_backend_is_sqlvdi(const struct vdi_backend *b)
{
	return b && b->ops == &vdi_sqlvdi_ops;
}

/* ------------------------------------------------------------------ */
/* bookkeeping */

/* The first abort this object saw, in the words of the call that saw
 * it (lock held). */
static void note_abort_locked(struct vdi_bset *s, const char *why)
{
	if (s->aborted)
		return;
	s->aborted = 1;
	snprintf(s->reason, sizeof(s->reason), "%s", why);
}

/* Every backend result passes here on its way out. */
static int seen(struct vdi_bset *s, int rc)
{
	if (rc == VD_E_ABORT) {
		pthread_mutex_lock(&s->lock);
		note_abort_locked(s, vdi_last_error());
		pthread_mutex_unlock(&s->lock);
	}
	return rc;
}

static void free_devices_locked(struct vdi_bset *s)
{
	uint32_t i;

	for (i = 0; i < s->ndev; i++) {
		if (s->b->ops->dev_free)
			s->b->ops->dev_free(s->devs[i]->impl);
		free(s->devs[i]);
	}
	s->ndev = 0;
}

static int bset_alloc(const struct vdi_backend *b, struct vdi_bset **out)
{
	struct vdi_bset *s = calloc(1, sizeof(*s));

	if (!s)
		return vdi_fail(VD_E_MEMORY, "%s: cannot allocate a set object", b->name);
	s->b = b;
	pthread_mutex_init(&s->lock, NULL);
	*out = s;
	return 0;
}

/* ------------------------------------------------------------------ */
/* sets */

int vdi_bset_new(const struct vdi_backend *b, struct vdi_bset **out)
{
	struct vdi_bset *s = NULL;
	int rc;

	vdi_clear_error();
	if (!out)
		return vdi_fail(VD_E_INVALID, "set object: NULL result pointer");
	*out = NULL;
	if (!b)
		return vdi_fail(VD_E_INVALID, "set object: no backend");
	rc = bset_alloc(b, &s);
	if (rc)
		return rc;
	rc = b->ops->set_new(b, &s->impl);
	if (rc) {
		pthread_mutex_destroy(&s->lock);
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void vdi_bset_free(struct vdi_bset *s)
{
	if (!s)
		return;
	if (s->state != BS_EMPTY)
		vdi_bset_close(s);
	if (!s->borrowed)
		s->b->ops->set_free(s->impl);
	free_devices_locked(s);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

const struct vdi_backend *vdi_bset_backend(const struct vdi_bset *s)
{
	return s ? s->b : NULL;
}

int vdi_bset_set_group(struct vdi_bset *s, gid_t group)
{
	vdi_clear_error();
	if (!s)
		return vdi_fail(VD_E_INVALID, "set object is NULL");
	if (!s->b->ops->set_group)
		return vdi_fail(
			VD_E_NOTSUPPORTED,
			"%s: sharing a set with a group is not supported: the library sets the modes "
			"of its shared objects from the process umask",
			s->b->name);
	return s->b->ops->set_group(s->impl, group);
}

int vdi_bset_create(struct vdi_bset *s, const char *instance, const char *name, const VDConfig *cfg)
{
	int rc;

	vdi_clear_error();
	if (!s || !name || !cfg)
		return vdi_fail(VD_E_INVALID, "set Create: NULL argument");
	pthread_mutex_lock(&s->lock);
	rc = s->state == BS_EMPTY
	             ? 0
	             : vdi_fail(VD_E_PROTOCOL, "set Create: a set is already open on this object");
	pthread_mutex_unlock(&s->lock);
	if (rc)
		return rc;
	rc = s->b->ops->create(s->impl, instance && *instance ? instance : NULL, name, cfg);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->lock);
	s->state = BS_CREATED;
	s->aborted = 0;
	s->reason[0] = '\0';
	s->cfg = *cfg;
	snprintf(s->instance, sizeof(s->instance), "%s", instance ? instance : "");
	snprintf(s->name, sizeof(s->name), "%s", name);
	__atomic_store_n(&s->bytes, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&s->commands, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int vdi_bset_get_configuration(struct vdi_bset *s, uint32_t timeout_ms, VDConfig *cfg)
{
	int rc;

	vdi_clear_error();
	if (!s || !cfg)
		return vdi_fail(VD_E_INVALID, "set GetConfiguration: NULL argument");
	rc = seen(s, s->b->ops->get_configuration(s->impl, timeout_ms, cfg));
	if (rc)
		return rc;
	pthread_mutex_lock(&s->lock);
	if (s->state == BS_CREATED)
		s->state = BS_CONFIGURED;
	s->cfg = *cfg;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int vdi_bset_open_device(struct vdi_bset *s, const char *name, struct vdi_bdev **out)
{
	struct vdi_bdev *d;
	int rc;

	vdi_clear_error();
	if (out)
		*out = NULL;
	if (!s || !name || !out)
		return vdi_fail(VD_E_INVALID, "set OpenDevice: NULL argument");
	d = calloc(1, sizeof(*d));
	if (!d)
		return vdi_fail(VD_E_MEMORY, "set OpenDevice: out of memory");
	rc = seen(s, s->b->ops->open_device(s->impl, name, &d->impl));
	if (rc) {
		free(d);
		return rc;
	}
	d->set = s;
	snprintf(d->name, sizeof(d->name), "%s", name);
	pthread_mutex_lock(&s->lock);
	/* The library refuses a device opened twice and counts to
	 * deviceCount (<= 64): a full table is its failure, not ours. */
	if (s->ndev == VDI_MAX_DEVICES) {
		pthread_mutex_unlock(&s->lock);
		free(d);
		vdi_bset_signal_abort(s);
		return vdi_fail(VD_E_UNEXPECTED,
		                "%s: OpenDevice('%s') succeeded for a 65th device; set aborted",
		                s->b->name, name);
	}
	s->devs[s->ndev++] = d;
	pthread_mutex_unlock(&s->lock);
	*out = d;
	return 0;
}

int vdi_bset_signal_abort(struct vdi_bset *s)
{
	char why[160];
	int rc;

	vdi_clear_error();
	if (!s)
		return vdi_fail(VD_E_INVALID, "set object is NULL");
	rc = s->b->ops->signal_abort(s->impl);
	if (rc)
		return rc;
	snprintf(why, sizeof(why), "client (pid %d) signalled abort", (int)getpid());
	pthread_mutex_lock(&s->lock);
	note_abort_locked(s, why);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int vdi_bset_close(struct vdi_bset *s)
{
	int rc;

	vdi_clear_error();
	if (!s)
		return vdi_fail(VD_E_INVALID, "set object is NULL");
	rc = s->b->ops->close(s->impl);
	pthread_mutex_lock(&s->lock);
	if (rc != VD_E_PROTOCOL || s->state != BS_EMPTY) {
		free_devices_locked(s);
		s->state = BS_EMPTY;
		s->closed_once = 1;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* Every device of the set was opened here and returned VD_E_CLOSE. */
static int all_closed_locked(const struct vdi_bset *s)
{
	uint32_t i;

	if (!s->ndev || s->ndev < s->cfg.deviceCount)
		return 0;
	for (i = 0; i < s->ndev; i++)
		if (!__atomic_load_n(&s->devs[i]->saw_close, __ATOMIC_RELAXED))
			return 0;
	return 1;
}

static enum vdi_set_state state_locked(const struct vdi_bset *s)
{
	if (s->state == BS_EMPTY)
		return VDI_SET_CLOSED;
	if (s->aborted)
		return VDI_SET_ABORTED;
	if (s->state == BS_CREATED)
		return VDI_SET_CREATED;
	return all_closed_locked(s) ? VDI_SET_TERMINATED : VDI_SET_ACTIVE;
}

int vdi_bset_info(struct vdi_bset *s, struct vdi_set_info *info)
{
	vdi_clear_error();
	if (!s || !info)
		return vdi_fail(VD_E_INVALID, "set info: NULL argument");
	if (s->b->ops->info && s->state != BS_EMPTY)
		return s->b->ops->info(s->impl, info);
	memset(info, 0, sizeof(*info));
	pthread_mutex_lock(&s->lock);
	if (s->state == BS_EMPTY && !s->closed_once) {
		pthread_mutex_unlock(&s->lock);
		return vdi_fail(VD_E_PROTOCOL, "set info: no set was created on this object");
	}
	snprintf(info->instance, sizeof(info->instance), "%s", s->instance);
	snprintf(info->name, sizeof(info->name), "%s", s->name);
	info->state = state_locked(s);
	info->device_count = s->cfg.deviceCount;
	info->features = s->cfg.features;
	if (s->state == BS_CONFIGURED) {
		info->block_size = s->cfg.blockSize;
		info->max_transfer_size = s->cfg.maxTransferSize;
	}
	info->bytes = __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
	info->commands = __atomic_load_n(&s->commands, __ATOMIC_RELAXED);
	info->client_pid = s->state != BS_EMPTY ? getpid() : 0;
	info->client_alive = s->state != BS_EMPTY;
	snprintf(info->abort_reason, sizeof(info->abort_reason), "%s", s->aborted ? s->reason : "");
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ------------------------------------------------------------------ */
/* devices */

int vdi_bdev_get_command(struct vdi_bdev *d, uint32_t timeout_ms, VDC_Command **cmd)
{
	int rc;

	vdi_clear_error();
	if (cmd)
		*cmd = NULL;
	if (!d || !cmd)
		return vdi_fail(VD_E_INVALID, "device GetCommand: NULL argument");
	rc = d->set->b->ops->get_command(d->impl, timeout_ms, cmd);
	if (rc == VD_E_CLOSE)
		__atomic_store_n(&d->saw_close, 1, __ATOMIC_RELAXED);
	if (rc)
		*cmd = NULL; /* whatever the library left there */
	return seen(d->set, rc);
}

int vdi_bdev_complete_command(struct vdi_bdev *d, VDC_Command *cmd, uint32_t code, uint32_t bytes,
                              uint64_t position)
{
	int data, rc;

	vdi_clear_error();
	if (!d || !cmd)
		return vdi_fail(VD_E_INVALID, "device CompleteCommand: NULL argument");
	/* Read before the command goes back: it is not ours afterwards. */
	data = cmd->commandCode == VDC_Read || cmd->commandCode == VDC_Write;
	rc = seen(d->set, d->set->b->ops->complete_command(d->impl, cmd, code, bytes, position));
	if (rc)
		return rc;
	/* Statistics for info, read from other threads: relaxed. */
	__atomic_add_fetch(&d->set->commands, 1, __ATOMIC_RELAXED);
	if (data)
		__atomic_add_fetch(&d->set->bytes, bytes, __ATOMIC_RELAXED);
	return 0;
}

const char *vdi_bdev_name(const struct vdi_bdev *d)
{
	return d ? d->name : NULL;
}

struct vdi_bset *vdi_bdev_set(const struct vdi_bdev *d)
{
	return d ? d->set : NULL;
}

/* ------------------------------------------------------------------ */
/* a bare libvdi device through the seam */

int vdi_bdev_wrap(struct vdi_client_device *dev, struct vdi_bdev **out)
{
	struct vdi_bset *s = NULL;
	struct vdi_bdev *d;
	int rc;

	*out = NULL;
	if (!dev)
		return vdi_fail(VD_E_INVALID, "cannot open stream: no device");
	rc = bset_alloc(&libvdi_backend, &s);
	if (rc)
		return rc;
	d = calloc(1, sizeof(*d));
	if (!d) {
		pthread_mutex_destroy(&s->lock);
		free(s);
		return vdi_fail(VD_E_MEMORY, "cannot open stream on device '%s': out of memory",
		                vdi_client_device_name(dev));
	}
	s->impl = vdi_client_device_set(dev);
	s->borrowed = 1;
	s->state = BS_CONFIGURED; /* a device exists only after configuration */
	d->set = s;
	d->impl = dev;
	snprintf(d->name, sizeof(d->name), "%s", vdi_client_device_name(dev));
	*out = d;
	return 0;
}

void vdi_bdev_unwrap(struct vdi_bdev *d)
{
	struct vdi_bset *s;

	if (!d)
		return;
	s = d->set;
	pthread_mutex_destroy(&s->lock);
	free(s);
	free(d);
}
