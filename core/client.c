/* SPDX-License-Identifier: MIT */
/*
 * client.c - the client half: IClientVirtualDeviceSet2 and
 * IClientVirtualDevice.
 *
 * State.  The object keeps its own view (enum vdi_set_state: DNE,
 * CONFIGURABLE, INITIALIZING, ACTIVE); the sticky abort flag in shared
 * memory overrides it, and Normally Terminated is derived (every device
 * closed by the server and every device this object opened has returned
 * VD_E_CLOSE, D17).  Whether a call is legal in that state is the table
 * of state.c; what is left here are the per-device and per-argument
 * rules (D3, D4, D21, D22, D24).
 *
 * Commands.  A device object is the only consumer of its device's cmd
 * ring and the only producer of its done ring (shm.h).  A fetched command
 * is copied once out of shared memory into private storage, validated
 * there (D28), and handed out as a VDC_Command that lives in the device
 * object until completed: the peer cannot change it under the caller.
 *
 * Threads.  Set calls take c->lock.  A device is driven by one thread at
 * a time (spec 1.3); CompleteCommand may come from another thread, so it
 * takes the device's own lock.  Buffer areas are mapped lazily by
 * whichever thread first meets a handle of that area, under c->area_lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "barrier.h"
#include "internal.h"
#include "shm.h"
#include "state.h"
#include "validate.h"

struct cslot {
	VDC_Command vc;  /* handed to the caller */
	uint32_t handle; /* buffer handle of a Read/Write, else 0 */
	uint8_t held;    /* fetched and not yet completed */
};

struct vdi_client_device {
	struct vdi_client *set;
	struct vdi_shm_device *sd;
	uint32_t index;
	char name[VDI_MAX_NAME + 1];
	uint32_t head;      /* cmd ring: our consumer index */
	uint32_t done_tail; /* done ring: our producer index */
	int saw_close;
	uint32_t nheld;       /* slots held (written under lock, read atomically) */
	pthread_mutex_t lock; /* done ring production, slots[].held, nheld */
	struct cslot slots[VDI_QUEUE_DEPTH];
};

/* c->state is written under c->lock but read by device threads without
 * it; c->devs[i], d->saw_close and d->nheld likewise: relaxed atomics, since each
 * is a single word whose readers only need some recent value and the
 * shared-memory facts they guard are read with acquire separately. */
#define get_state(c)    __atomic_load_n(&(c)->state, __ATOMIC_RELAXED)
#define set_state(c, v) __atomic_store_n(&(c)->state, (v), __ATOMIC_RELAXED)
#define get_dev(c, i)   __atomic_load_n(&(c)->devs[i], __ATOMIC_ACQUIRE)

struct vdi_client {
	pthread_mutex_t lock;
	pthread_mutex_t area_lock;
	enum vdi_set_state state; /* own view; see client_state() */
	int secondary;
	uint32_t mode;
	gid_t gid;
	struct vdi_region r;
	VDConfig cfg; /* final, validated */
	struct vdi_area_map areas[VDI_MAX_AREAS];
	struct vdi_client_device *devs[VDI_MAX_DEVICES];
	uint64_t last_watch_ms; /* server_gone's rate limit */
};

/* ------------------------------------------------------------------ */
/* state */

static int all_devices_done(struct vdi_client *c)
{
	struct vdi_client_device *d;
	uint32_t i;

	for (i = 0; i < c->r.device_count; i++) {
		struct vdi_shm_device *sd = vdi_shm_dev(c->r.hdr, i);

		/* Acquire pairs with the server's release in CloseDevice. */
		if (vdi_load_acquire(&sd->server_state) != VDI_DEV_S_CLOSED)
			return 0;
		d = get_dev(c, i);
		if (d && (!__atomic_load_n(&d->saw_close, __ATOMIC_RELAXED) ||
		          __atomic_load_n(&d->nheld, __ATOMIC_RELAXED)))
			return 0;
	}
	return 1;
}

static enum vdi_set_state client_state(struct vdi_client *c)
{
	enum vdi_set_state s = get_state(c);

	if (s == VDI_SET_DNE)
		return VDI_SET_DNE;
	if (vdi_region_aborted(&c->r))
		return VDI_SET_ABORTED;
	if (s == VDI_SET_ACTIVE && all_devices_done(c))
		return VDI_SET_TERMINATED;
	return s;
}

/* The state table's answer for call in this object's state now. */
static int check_state(struct vdi_client *c, enum vdi_call call)
{
	return vdi_state_check(&c->r, call, client_state(c));
}

/* Checks the server is alive when it should be; aborts the set if not.
 * Called only after a wait slice found nothing to do (<= 10 per s). */
static int server_gone(struct vdi_client *c)
{
	struct vdi_shm_header *h = c->r.hdr;
	uint64_t now = vdi_now_ms();

	/* At most one /proc read per 100 ms per set object: polls with
	 * timeout 0 come in bursts while streaming.  Relaxed: any thread's
	 * recent check is as good as ours. */
	if (now - __atomic_load_n(&c->last_watch_ms, __ATOMIC_RELAXED) < 100)
		return 0;
	__atomic_store_n(&c->last_watch_ms, now, __ATOMIC_RELAXED);

	if (vdi_load_acquire(&h->phase) == VDI_SET_CREATED || vdi_load_acquire(&h->server_closed))
		return 0;
	if (vdi_shm_proc_alive(&h->server))
		return 0;
	vdi_region_abort(&c->r, "server process %d died", (int)vdi_load_relaxed(&h->server.pid));
	return 1;
}

/* ------------------------------------------------------------------ */
/* object lifetime */

int vdi_client_new(struct vdi_client **out)
{
	struct vdi_client *c;

	if (!out)
		return vdi_fail(VD_E_INVALID, "client object pointer is NULL");
	c = calloc(1, sizeof(*c));
	if (!c)
		return vdi_fail(VD_E_MEMORY, "cannot allocate a client object");
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->area_lock, NULL);
	c->mode = 0600;
	*out = c;
	return 0;
}

void vdi_client_free(struct vdi_client *c)
{
	if (!c)
		return;
	if (get_state(c) != VDI_SET_DNE)
		vdi_client_close(c);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->area_lock);
	free(c);
}

int vdi_client_set_group(struct vdi_client *c, gid_t group)
{
	int rc;

	VDI_ENTER(c, "client");
	pthread_mutex_lock(&c->lock);
	rc = check_state(c, VDI_CALL_C_SET_GROUP);
	if (!rc) {
		c->mode = 0660;
		c->gid = group;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Create, OpenInSecondary */

/* What Create and OpenInSecondary check first, under c->lock: the state
 * (the object must be free) and the names.  *inst: the instance's
 * canonical name. */
static int check_open(struct vdi_client *c, enum vdi_call call, const char *instance,
                      const char *name, const char **inst)
{
	int rc = check_state(c, call);

	if (!rc)
		rc = vdi_check_set_name(name, "set");
	if (!rc)
		rc = vdi_check_instance(instance, inst);
	return rc;
}

int vdi_client_create_ex(struct vdi_client *c, const char *instance, const char *name,
                         const VDConfig *cfg)
{
	const char *inst;
	int rc;

	VDI_ENTER(c, "client");
	pthread_mutex_lock(&c->lock);
	rc = check_open(c, VDI_CALL_C_CREATE, instance, name, &inst);
	if (!rc)
		rc = vdi_check_client_config(cfg);
	if (!rc)
		rc = vdi_region_create(&c->r, inst, name, cfg, c->mode, c->gid);
	if (!rc) {
		c->cfg = c->r.hdr->client_cfg;
		c->secondary = 0;
		set_state(c, VDI_SET_CONFIGURABLE);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int vdi_client_create(struct vdi_client *c, const char *name, const VDConfig *cfg)
{
	return vdi_client_create_ex(c, NULL, name, cfg);
}

static int is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

/* The server's final configuration, read once and checked (D28). */
static int load_final_config(struct vdi_client *c)
{
	VDConfig f = c->r.hdr->final_cfg; /* one copy, then only the copy */
	const VDConfig *mine = &c->r.hdr->client_cfg;
	uint32_t server_bits = VDF_WriteMedia | VDF_ReadMedia | VDF_CompleteEnabled;
	const char *bad = NULL;

	if (f.deviceCount != c->r.device_count)
		bad = "device count";
	else if (!is_pow2(f.blockSize) || f.blockSize < VDI_MIN_BLOCKSIZE ||
	         f.blockSize > VDI_MAX_BLOCKSIZE)
		bad = "block size";
	else if (!f.maxTransferSize || f.maxTransferSize % VDI_MAXTRANSFER_UNIT ||
	         f.maxTransferSize > VDI_MAX_MAXTRANSFER)
		bad = "maximum transfer size";
	else if (!is_pow2(f.alignment) || f.alignment < f.blockSize ||
	         f.alignment > VDI_MAX_ALIGNMENT)
		bad = "alignment";
	else if (f.prefixZoneSize != mine->prefixZoneSize)
		bad = "prefix zone size";
	else if (f.features & ~(mine->features | server_bits))
		bad = "features";
	else if (!(f.features & (VDF_WriteMedia | VDF_ReadMedia)))
		bad = "direction";
	if (bad) {
		vdi_region_abort(&c->r,
		                 "protocol violation by server: final configuration has a bad %s",
		                 bad);
		return vdi_fail(VD_E_PROTOCOL, "set '%s': server's configuration has a bad %s",
		                c->r.name, bad);
	}
	c->cfg = f;
	return 0;
}

int vdi_client_open_in_secondary_ex(struct vdi_client *c, const char *instance, const char *name)
{
	const char *inst;
	int rc;

	VDI_ENTER(c, "client");
	pthread_mutex_lock(&c->lock);
	rc = check_open(c, VDI_CALL_C_OPEN_IN_SECONDARY, instance, name, &inst);
	if (rc)
		goto out;
	rc = vdi_region_open(&c->r, inst, name);
	if (rc == VD_E_INVALID) /* spec: the set was not created */
		rc = vdi_fail(VD_E_PROTOCOL,
		              "client OpenInSecondary: no set '%s' is ready (instance %s)", name,
		              inst);
	if (rc)
		goto out;
	if (vdi_region_aborted(&c->r))
		rc = vdi_fail(VD_E_ABORT, "client OpenInSecondary: set '%s' is aborted", name);
	else if (vdi_load_acquire(&c->r.hdr->phase) < VDI_SET_INITIALIZING)
		rc = vdi_fail(VD_E_PROTOCOL,
		              "client OpenInSecondary: set '%s' is not configured yet", name);
	else if (vdi_load_acquire(&c->r.hdr->client_closed) ||
	         !vdi_shm_proc_alive(&c->r.hdr->creator))
		rc = vdi_fail(VD_E_PROTOCOL,
		              "client OpenInSecondary: the primary of set '%s' is gone", name);
	else
		rc = load_final_config(c);
	if (rc) {
		vdi_region_unmap(&c->r);
		goto out;
	}
	c->secondary = 1;
	set_state(c, VDI_SET_INITIALIZING);
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int vdi_client_open_in_secondary(struct vdi_client *c, const char *name)
{
	return vdi_client_open_in_secondary_ex(c, NULL, name);
}

/* ------------------------------------------------------------------ */
/* GetConfiguration */

static int config_ready(void *ctx)
{
	struct vdi_client *c = ctx;

	return vdi_load_acquire(&c->r.hdr->phase) >= VDI_SET_INITIALIZING ||
	       vdi_region_aborted(&c->r);
}

static int wait_configured(struct vdi_client *c, uint32_t timeout_ms)
{
	struct vdi_shm_header *h = c->r.hdr;
	struct vdi_deadline dl;
	uint32_t slice;

	vdi_deadline_start(&dl, timeout_ms);
	for (;;) {
		if (vdi_region_aborted(&c->r))
			return vdi_state_check(&c->r, VDI_CALL_C_GET_CONFIGURATION,
			                       VDI_SET_ABORTED);
		if (config_ready(c))
			return 0;
		slice = vdi_deadline_slice(&dl);
		if (!slice) {
			/* Even a poll (timeout 0) must tell a dead server. */
			if (server_gone(c))
				continue;
			return vdi_fail(
				VD_E_TIMEOUT,
				"client GetConfiguration: no server configured set '%s' within %u ms",
				c->r.name, timeout_ms);
		}
		if (!vdi_wait_slice(&h->config_seq, &h->config_waiters, config_ready, c, slice))
			server_gone(c);
	}
}

int vdi_client_get_configuration(struct vdi_client *c, uint32_t timeout_ms, VDConfig *cfg)
{
	enum vdi_set_state s;
	int rc;

	vdi_clear_error();
	if (!c || !cfg)
		return vdi_fail(VD_E_INVALID, "client GetConfiguration: NULL argument");
	pthread_mutex_lock(&c->lock);
	s = client_state(c);
	rc = vdi_state_check(&c->r, VDI_CALL_C_GET_CONFIGURATION, s);
	pthread_mutex_unlock(&c->lock);
	if (rc)
		return rc;
	if (s == VDI_SET_CONFIGURABLE) {
		/* Wait without the lock: other threads may use the set. */
		rc = wait_configured(c, timeout_ms);
		if (rc)
			return rc;
		pthread_mutex_lock(&c->lock);
		if (get_state(c) == VDI_SET_CONFIGURABLE) {
			rc = load_final_config(c);
			if (!rc)
				set_state(c, VDI_SET_INITIALIZING);
		}
		pthread_mutex_unlock(&c->lock);
		if (rc)
			return rc;
	}
	*cfg = c->cfg;
	/* bufferAreaSize grows with later RequestBuffers (D9). */
	cfg->bufferAreaSize = vdi_load_relaxed(&c->r.hdr->final_cfg.bufferAreaSize);
	return 0;
}

/* ------------------------------------------------------------------ */
/* OpenDevice */

static int all_devices_claimed(struct vdi_client *c)
{
	uint32_t i;

	for (i = 0; i < c->r.device_count; i++)
		if (vdi_load_acquire(&vdi_shm_dev(c->r.hdr, i)->client_state) == VDI_DEV_C_UNOPENED)
			return 0;
	return 1;
}

static int claim_device(struct vdi_client *c, const char *name, uint32_t *index)
{
	struct vdi_shm_device *sd;
	int rc, i;

	rc = vdi_region_lock(&c->r);
	if (rc)
		return rc;
	if (all_devices_claimed(c)) {
		rc = vdi_fail(VD_E_OPEN,
		              "client OpenDevice: every device of set '%s' is already open",
		              c->r.name);
		goto out;
	}
	i = vdi_region_find_device(&c->r, name, "client");
	if (i < 0) {
		rc = i;
		goto out;
	}
	sd = vdi_shm_dev(c->r.hdr, (uint32_t)i);
	/* What this process holds is decided by private state; shared
	 * memory only says what other processes claim. */
	if (c->devs[i] || vdi_load_acquire(&sd->client_state) != VDI_DEV_C_UNOPENED) {
		rc = vdi_fail(VD_E_PROTOCOL, "client OpenDevice: device '%s' is already open",
		              name);
		goto out;
	}
	vdi_proc_self(&sd->client);
	/* Release: our identity is visible before the state says "open". */
	vdi_store_release(&sd->client_state, (uint32_t)VDI_DEV_C_OPEN);
	*index = (uint32_t)i;
out:
	vdi_region_unlock(&c->r);
	return rc;
}

int vdi_client_open_device(struct vdi_client *c, const char *name, struct vdi_client_device **out)
{
	struct vdi_client_device *d;
	uint32_t index = 0;
	int rc;

	vdi_clear_error();
	if (out)
		*out = NULL;
	if (!c || !out)
		return vdi_fail(VD_E_INVALID, "client OpenDevice: NULL argument");
	rc = vdi_check_set_name(name, "device");
	if (rc)
		return rc;
	pthread_mutex_lock(&c->lock);
	rc = check_state(c, VDI_CALL_C_OPEN_DEVICE);
	if (rc)
		goto out;
	d = calloc(1, sizeof(*d));
	if (!d) {
		rc = vdi_fail(VD_E_MEMORY, "client OpenDevice: out of memory");
		goto out;
	}
	rc = claim_device(c, name, &index);
	if (rc) {
		free(d);
		goto out;
	}
	d->set = c;
	d->index = index;
	d->sd = vdi_shm_dev(c->r.hdr, index);
	snprintf(d->name, sizeof(d->name), "%s", name);
	pthread_mutex_init(&d->lock, NULL);
	/* Our indices start where the rings stand: a device is opened once,
	 * so these are the initial zeros unless the server already queued
	 * commands (its tail moves, never the head we own). */
	d->head = vdi_load_acquire(&d->sd->cmd.head);
	d->done_tail = vdi_load_acquire(&d->sd->done.tail);
	__atomic_store_n(&c->devs[index], d, __ATOMIC_RELEASE);
	set_state(c, VDI_SET_ACTIVE);
	*out = d;
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

const char *vdi_client_device_name(const struct vdi_client_device *d)
{
	return d ? d->name : NULL;
}

struct vdi_client *vdi_client_device_set(const struct vdi_client_device *d)
{
	return d ? d->set : NULL;
}

/* ------------------------------------------------------------------ */
/* buffers */

static struct vdi_area_map *area_get(struct vdi_client *c, uint32_t k)
{
	struct vdi_area_map *m = &c->areas[k];
	uint8_t *base;

	/* Acquire pairs with the release below: size is set before base. */
	base = __atomic_load_n(&m->base, __ATOMIC_ACQUIRE);
	if (base)
		return m;
	pthread_mutex_lock(&c->area_lock);
	if (!m->base) {
		struct vdi_area_map tmp;

		if (vdi_area_map(&c->r, k, &tmp) == 0) {
			m->size = tmp.size;
			m->reserve = tmp.reserve;
			m->reserve_size = tmp.reserve_size;
			__atomic_store_n(&m->base, tmp.base, __ATOMIC_RELEASE);
		}
	}
	pthread_mutex_unlock(&c->area_lock);
	return m->base ? m : NULL;
}

/* Handle -> this process's address of [size] bytes, or NULL (D24). */
static uint8_t *handle_to_addr(struct vdi_client *c, uint32_t handle, uint32_t size)
{
	uint32_t area = handle >> 24;
	uint64_t off = (uint64_t)(handle & 0xFFFFFFu) << 9;
	struct vdi_area_map *m;

	if (area == 0 || area > VDI_MAX_AREAS)
		return NULL;
	if (area > vdi_load_acquire(&c->r.hdr->area_count))
		return NULL;
	m = area_get(c, area - 1);
	if (!m || off < c->cfg.prefixZoneSize || off > m->size || m->size - off < size)
		return NULL;
	return m->base + off;
}

int vdi_client_get_buffer_handle(struct vdi_client *c, const uint8_t *buffer, uint32_t *handle)
{
	uint32_t i, j;
	int rc;

	vdi_clear_error();
	if (!c || !handle)
		return vdi_fail(VD_E_INVALID, "client GetBufferHandle: NULL argument");
	pthread_mutex_lock(&c->lock);
	rc = check_state(c, VDI_CALL_C_GET_BUFFER_HANDLE);
	if (rc) {
		pthread_mutex_unlock(&c->lock);
		return rc;
	}
	rc = VD_E_INVALID;
	for (i = 0; i < VDI_MAX_DEVICES && rc; i++) {
		struct vdi_client_device *d = c->devs[i];

		if (!d)
			continue;
		pthread_mutex_lock(&d->lock);
		for (j = 0; j < VDI_QUEUE_DEPTH; j++) {
			if (d->slots[j].held && d->slots[j].handle &&
			    d->slots[j].vc.buffer == buffer) {
				*handle = d->slots[j].handle;
				/* D30: given out, so MapBufferHandle of any
				 * process may map it until the completion.
				 * Release pairs with the acquire there. */
				vdi_store_release(&d->sd->slots[j].issued, *handle);
				rc = 0;
				break;
			}
		}
		pthread_mutex_unlock(&d->lock);
	}
	pthread_mutex_unlock(&c->lock);
	if (rc)
		return vdi_fail(
			rc,
			"client GetBufferHandle: %p is not the buffer of a command this process holds",
			(const void *)buffer);
	return 0;
}

/* D30: the size of the command some process of the set holds whose
 * buffer handle GetBufferHandle gave out and is `handle`, or 0 if none:
 * a slot whose issued word and the server's buffer_handle both say
 * handle.  Both are untrusted (the caller bounds-checks the address). */
static uint32_t issued_size(struct vdi_client *c, uint32_t handle)
{
	uint32_t i, k;

	for (i = 0; handle && i < c->r.device_count; i++) {
		struct vdi_shm_slot *slots = vdi_shm_dev(c->r.hdr, i)->slots;

		for (k = 0; k < VDI_QUEUE_DEPTH; k++) {
			/* Acquire pairs with the release in GetBufferHandle. */
			if (vdi_load_acquire(&slots[k].issued) == handle &&
			    vdi_load_relaxed(&slots[k].buffer_handle) == handle)
				return vdi_load_relaxed(&slots[k].size);
		}
	}
	return 0;
}

int vdi_client_map_buffer_handle(struct vdi_client *c, uint32_t handle, uint8_t **buffer)
{
	uint8_t *p = NULL;
	uint32_t size;
	int rc;

	vdi_clear_error();
	if (!c || !buffer)
		return vdi_fail(VD_E_INVALID, "client MapBufferHandle: NULL argument");
	pthread_mutex_lock(&c->lock);
	rc = check_state(c, VDI_CALL_C_MAP_BUFFER_HANDLE);
	if (!rc && !(size = issued_size(c, handle)))
		rc = vdi_fail(
			VD_E_INVALID,
			"client MapBufferHandle: 0x%08x is no handle GetBufferHandle gave out for a command held in set '%s'",
			handle, c->r.name);
	else if (!rc && !(p = handle_to_addr(c, handle, size)))
		rc = vdi_fail(VD_E_INVALID,
		              "client MapBufferHandle: 0x%08x names no buffer of set '%s'", handle,
		              c->r.name);
	pthread_mutex_unlock(&c->lock);
	if (!rc)
		*buffer = p;
	return rc;
}

/* ------------------------------------------------------------------ */
/* GetCommand */

static int violation(struct vdi_client_device *d, const char *what, uint32_t value)
{
	struct vdi_client *c = d->set;

	vdi_region_abort(&c->r, "protocol violation by server on device '%s': %s %u", d->name, what,
	                 value);
	return vdi_fail(VD_E_PROTOCOL, "client GetCommand: device '%s': server sent %s %u", d->name,
	                what, value);
}

static int is_data(uint32_t code)
{
	return code == VDC_Read || code == VDC_Write;
}

/* Copies slot idx out of shared memory and validates the copy. */
static int take_slot(struct vdi_client_device *d, uint32_t idx, VDC_Command **cmd)
{
	struct vdi_shm_slot *ss = &d->sd->slots[idx];
	struct cslot *cs = &d->slots[idx];
	const VDConfig *cfg = &d->set->cfg;
	uint32_t code = ss->command_code, size = ss->size, handle = ss->buffer_handle;
	uint64_t pos = ss->position;
	uint8_t *buf = NULL;

	/* The fields were written before the tail we loaded with acquire. */
	if (code < VDC_MIN_CODE || code > VDC_MAX_CODE)
		return violation(d, "command code", code);
	if (is_data(code)) {
		if (!size || size > cfg->maxTransferSize || size % cfg->blockSize)
			return violation(d, "transfer size", size);
		buf = handle_to_addr(d->set, handle, size);
		if (!buf)
			return violation(d, "buffer handle", handle);
	} else {
		handle = 0;
	}
	cs->vc.commandCode = (int32_t)code;
	cs->vc.size = (int32_t)size;
	cs->vc.position = (int64_t)pos;
	cs->vc.buffer = buf;
	cs->handle = handle;
	/* Ours now, and no handle of it given out yet (D30).  Relaxed: a
	 * zero can only make MapBufferHandle refuse. */
	vdi_store_relaxed(&ss->issued, 0u);
	if (buf)
		vdi_tsan_acquire(buf); /* hand-off: barrier.h */
	pthread_mutex_lock(&d->lock);
	__atomic_store_n(&cs->held, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&d->nheld, d->nheld + 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&d->lock);
	*cmd = &cs->vc;
	return 1;
}

/* 1: got a command; 0: ring empty; <0: violation. */
static int try_fetch(struct vdi_client_device *d, VDC_Command **cmd)
{
	struct vdi_shm_ring *ring = &d->sd->cmd;
	/* Acquire pairs with the server's store-release of tail: the entry
	 * and the slot it names are complete. */
	uint32_t tail = vdi_load_acquire(&ring->tail);
	uint32_t idx;
	int rc;

	if (tail == d->head)
		return 0;
	if (tail - d->head > VDI_QUEUE_DEPTH)
		return violation(d, "command ring count", tail - d->head);
	idx = vdi_load_relaxed(&ring->entries[d->head & VDI_RING_MASK]);
	if (idx >= VDI_QUEUE_DEPTH)
		return violation(d, "slot index", idx);
	/* held is written under d->lock by CompleteCommand, possibly on
	 * another thread: read it atomically. */
	if (__atomic_load_n(&d->slots[idx].held, __ATOMIC_RELAXED))
		return violation(d, "slot already outstanding", idx);
	rc = take_slot(d, idx, cmd);
	if (rc < 0)
		return rc;
	d->head++;
	/* Release: tells the server the entry was consumed. */
	vdi_store_release(&ring->head, d->head);
	return 1;
}

static int command_ready(void *ctx)
{
	struct vdi_client_device *d = ctx;

	return vdi_load_acquire(&d->sd->cmd.tail) != d->head ||
	       vdi_load_acquire(&d->sd->server_state) == VDI_DEV_S_CLOSED ||
	       vdi_region_aborted(&d->set->r);
}

/* The device's client is done once the server closed it, VD_E_CLOSE was
 * returned and no command is held (D17): a held command may still be
 * completed, and its process must still be watched (D26).  Release: the
 * server's agent and the primary read client_state to know this device's
 * client finished normally (D4, D26).  Lock held. */
static void mark_done_locked(struct vdi_client_device *d)
{
	if (d->saw_close && !d->nheld)
		vdi_store_release(&d->sd->client_state, (uint32_t)VDI_DEV_C_DONE);
}

static int see_close(struct vdi_client_device *d)
{
	pthread_mutex_lock(&d->lock);
	__atomic_store_n(&d->saw_close, 1, __ATOMIC_RELAXED);
	mark_done_locked(d);
	pthread_mutex_unlock(&d->lock);
	return VD_E_CLOSE;
}

static int wait_command(struct vdi_client_device *d, uint32_t timeout_ms, VDC_Command **cmd)
{
	struct vdi_client *c = d->set;
	struct vdi_deadline dl;
	uint32_t slice;
	int rc;

	vdi_deadline_start(&dl, timeout_ms);
	for (;;) {
		if (vdi_region_aborted(&c->r))
			return vdi_state_check(&c->r, VDI_CALL_C_GET_COMMAND, VDI_SET_ABORTED);
		rc = try_fetch(d, cmd);
		if (rc)
			return rc < 0 ? rc : 0;
		/* Closed is read before the ring is checked again, so every
		 * command queued before CloseDevice is delivered first. */
		if (vdi_load_acquire(&d->sd->server_state) == VDI_DEV_S_CLOSED) {
			rc = try_fetch(d, cmd);
			if (rc)
				return rc < 0 ? rc : 0;
			return see_close(d);
		}
		slice = vdi_deadline_slice(&dl);
		if (!slice) {
			if (server_gone(c))
				continue; /* aborted now: reported at the top */
			return vdi_fail(VD_E_TIMEOUT,
			                "client GetCommand: device '%s': no command within %u ms",
			                d->name, timeout_ms);
		}
		if (!vdi_wait_slice(&d->sd->cmd_seq, &d->sd->cmd_waiters, command_ready, d, slice))
			server_gone(c);
	}
}

int vdi_client_get_command(struct vdi_client_device *d, uint32_t timeout_ms, VDC_Command **cmd)
{
	int rc;

	vdi_clear_error();
	if (cmd)
		*cmd = NULL;
	if (!d || !cmd)
		return vdi_fail(VD_E_INVALID, "client GetCommand: NULL argument");
	rc = check_state(d->set, VDI_CALL_C_GET_COMMAND);
	if (rc)
		return rc;
	if (__atomic_load_n(&d->saw_close, __ATOMIC_RELAXED))
		return VD_E_CLOSE;
	return wait_command(d, timeout_ms, cmd);
}

/* ------------------------------------------------------------------ */
/* CompleteCommand */

static void count_completion(struct vdi_client_device *d, const struct cslot *cs, uint32_t bytes)
{
	/* Statistics only, read by `vdi ls`: relaxed is enough. */
	vdi_atomic_add(&d->sd->commands, 1);
	if (is_data((uint32_t)cs->vc.commandCode))
		vdi_atomic_add(&d->sd->bytes, bytes);
}

int vdi_client_complete_command(struct vdi_client_device *d, VDC_Command *cmd, uint32_t code,
                                uint32_t bytes, uint64_t position)
{
	struct vdi_client *c;
	struct cslot *cs;
	struct vdi_shm_slot *ss;
	uint32_t idx;
	int rc;

	vdi_clear_error();
	if (!d || !cmd)
		return vdi_fail(VD_E_INVALID, "client CompleteCommand: NULL argument");
	c = d->set;
	if ((char *)cmd < (char *)d->slots || (char *)cmd >= (char *)(d->slots + VDI_QUEUE_DEPTH) ||
	    ((char *)cmd - (char *)d->slots) % sizeof(struct cslot))
		return vdi_fail(
			VD_E_INVALID,
			"client CompleteCommand: device '%s': %p is not a command of this device",
			d->name, (void *)cmd);
	idx = (uint32_t)(((char *)cmd - (char *)d->slots) / sizeof(struct cslot));
	cs = &d->slots[idx];
	ss = &d->sd->slots[idx];
	rc = check_state(c, VDI_CALL_C_COMPLETE_COMMAND);
	pthread_mutex_lock(&d->lock);
	/* The state decides first (spec 3.1): in Abort every completion is
	 * ignored, in Normally Terminated none can be outstanding. */
	if (rc) {
		if (cs->held)
			__atomic_store_n(&d->nheld, d->nheld - 1, __ATOMIC_RELAXED);
		__atomic_store_n(&cs->held, 0, __ATOMIC_RELAXED);
		vdi_store_relaxed(&ss->issued, 0u); /* the hold ended (D30) */
		goto out;
	}
	if (!cs->held) {
		rc = vdi_fail(VD_E_INVALID,
		              "client CompleteCommand: device '%s': command is not outstanding",
		              d->name);
		goto out;
	}
	if (is_data((uint32_t)cmd->commandCode) && bytes > (uint32_t)cmd->size) {
		rc = vdi_fail(
			VD_E_INVALID,
			"client CompleteCommand: device '%s': %u bytes transferred exceeds the command's %d",
			d->name, bytes, cmd->size);
		goto out;
	}
	if (d->done_tail - vdi_load_acquire(&d->sd->done.head) >= VDI_QUEUE_DEPTH) {
		rc = violation(d, "completion ring head", vdi_load_relaxed(&d->sd->done.head));
		goto out;
	}
	if (cmd->buffer)
		vdi_tsan_release(cmd->buffer); /* hand-off: barrier.h */
	ss->completion_code = code;
	ss->bytes_transferred = bytes;
	ss->out_position = position;
	/* The buffer goes back to the server: its handle maps no more
	 * (D30).  Ordered before the completion by the release below. */
	vdi_store_relaxed(&ss->issued, 0u);
	vdi_store_relaxed(&d->sd->done.entries[d->done_tail & VDI_RING_MASK], idx);
	d->done_tail++;
	/* No longer held before the completion is published: once the agent
	 * sees it the server may send the slot again at once, and a fetch on
	 * another thread must not find it still held.  The release below
	 * orders this store before the tail; the server's resend and our
	 * fetcher's acquire of the command tail carry it on. */
	__atomic_store_n(&cs->held, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&d->nheld, d->nheld - 1, __ATOMIC_RELAXED);
	count_completion(d, cs, bytes);
	/* Release pairs with the agent's acquire of tail: the completion
	 * fields and the entry are visible first. */
	vdi_store_release(&d->sd->done.tail, d->done_tail);
	mark_done_locked(d);
out:
	pthread_mutex_unlock(&d->lock);
	if (!rc)
		vdi_wake(&c->r.hdr->done_seq, &c->r.hdr->done_waiters);
	return rc;
}

/* ------------------------------------------------------------------ */
/* SignalAbort, Close */

int vdi_client_signal_abort(struct vdi_client *c)
{
	int rc;

	VDI_ENTER(c, "client");
	/* Without c->lock: an abort must never wait behind another call of
	 * the set.  The state is one word; the region stays mapped until
	 * Close. */
	rc = check_state(c, VDI_CALL_C_SIGNAL_ABORT);
	if (!rc)
		vdi_region_abort(&c->r, "client %s (pid %d) signalled abort",
		                 c->secondary ? "secondary" : "primary", (int)getpid());
	return rc;
}

/* D4.  Returns 1 if some device relevant to this object is open (a
 * client drives it and has not seen VD_E_CLOSE) and names it; sets
 * *unfinished if the transfer of the set is not over. */
static int close_check(struct vdi_client *c, char *name, size_t len, int *unfinished)
{
	uint32_t i;
	int open = 0;

	*unfinished = 0;
	for (i = 0; i < c->r.device_count; i++) {
		struct vdi_shm_device *sd = vdi_shm_dev(c->r.hdr, i);
		struct vdi_client_device *d = c->devs[i];
		int dev_open;

		if (d)
			dev_open = !__atomic_load_n(&d->saw_close, __ATOMIC_RELAXED) ||
			           __atomic_load_n(&d->nheld, __ATOMIC_RELAXED);
		else if (c->secondary)
			continue; /* a secondary answers for its own devices */
		else
			dev_open = vdi_load_acquire(&sd->client_state) == VDI_DEV_C_OPEN;
		if (dev_open && !open) {
			open = 1;
			snprintf(name, len, "%.*s", VDI_MAX_NAME,
			         d           ? d->name
			         : sd->named ? sd->name
			                     : "?");
		}
		if (dev_open ||
		    (!c->secondary && vdi_load_acquire(&sd->server_state) != VDI_DEV_S_CLOSED))
			*unfinished = 1;
	}
	return open;
}

static void release_all(struct vdi_client *c)
{
	uint32_t i;

	for (i = 0; i < VDI_MAX_DEVICES; i++) {
		if (c->devs[i]) {
			pthread_mutex_destroy(&c->devs[i]->lock);
			free(c->devs[i]);
			c->devs[i] = NULL;
		}
	}
	for (i = 0; i < VDI_MAX_AREAS; i++)
		vdi_area_unmap(&c->areas[i]);
	if (!c->secondary) {
		vdi_store_release(&c->r.hdr->client_closed, 1u);
		vdi_region_wake_all(&c->r);
		vdi_region_unlink(&c->r);
	}
	vdi_region_unmap(&c->r);
	set_state(c, VDI_SET_DNE);
}

int vdi_client_close(struct vdi_client *c)
{
	char dev[VDI_MAX_NAME + 1];
	enum vdi_set_state s;
	int rc;

	VDI_ENTER(c, "client");
	pthread_mutex_lock(&c->lock);
	s = client_state(c);
	rc = vdi_state_check(&c->r, VDI_CALL_C_CLOSE, s);
	if (rc) {
		pthread_mutex_unlock(&c->lock);
		return rc;
	}
	if (s != VDI_SET_ABORTED) {
		int unfinished, open = close_check(c, dev, sizeof(dev), &unfinished);

		if (open) {
			vdi_region_abort(&c->r,
			                 "client closed set '%s' with device '%s' still open",
			                 c->r.name, dev);
			rc = vdi_fail(
				VD_E_OPEN,
				"client Close: device '%s' of set '%s' is still open; the set was aborted",
				dev, c->r.name);
		} else if (unfinished) {
			/* The primary leaves before the server finished: the
			 * server must fail, not wait for a client that left. */
			vdi_region_abort(&c->r,
			                 "client closed set '%s' before the end of the transfer",
			                 c->r.name);
		}
	}
	release_all(c);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

struct vdi_region *vdi_client_region(struct vdi_client *c)
{
	return c && get_state(c) != VDI_SET_DNE ? &c->r : NULL;
}
