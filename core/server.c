/* SPDX-License-Identifier: MIT */
/*
 * server.c - the server half: IServerVirtualDeviceSet2 and
 * IServerVirtualDevice, with the completion agent.
 *
 * State (spec 3.2 and decisions D2, D5, D17).  s->state is this object's
 * view (enum vdi_set_state); the sticky abort flag in shared memory
 * overrides it.  It moves only through enter(), which publishes the same
 * value as the set's phase for the client (shm.h).  Whether a call is
 * legal in a state is the table of state.c; the per-device and
 * per-argument rules stay here.
 *
 * Commands.  SendCommand validates the command, binds it to a free slot
 * of the device (private table: slot -> VDS_Command, buffer), writes the
 * slot's server half and publishes the index in the cmd ring.  The agent
 * drains every device's done ring, checks each completion against the
 * private table (D28), fills the VDS_Command and calls its routine with
 * no lock held.  On abort or Close the agent (or Close, if no agent runs)
 * completes everything outstanding with ERROR_OPERATION_ABORTED.
 *
 * Locking.  One mutex, s->lock, guards the object: state, allocator,
 * device tables, the producer side of every cmd ring and the consumer
 * side of every done ring.  Completion routines and waits run without it.
 * ExecuteCompletionAgent may run on any thread, once at a time.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "barrier.h"
#include "bufpool.h"
#include "internal.h"
#include "shm.h"
#include "state.h"
#include "validate.h"

struct sslot {
	VDS_Command *cmd; /* outstanding command, NULL if free */
	size_t buf;       /* index in the pool, or SIZE_MAX */
};

struct vdi_server_device {
	struct vdi_server *set;
	struct vdi_shm_device *sd;
	uint32_t index;
	char name[VDI_MAX_NAME + 1];
	int closed;
	uint32_t tail;      /* cmd ring: our producer index */
	uint32_t done_head; /* done ring: our consumer index */
	uint32_t outstanding;
	uint32_t nfree;
	uint32_t free_slots[VDI_QUEUE_DEPTH];
	struct sslot slots[VDI_QUEUE_DEPTH];
};

struct vdi_server {
	pthread_mutex_t lock;
	pthread_cond_t agent_done;
	enum vdi_set_state state; /* under lock; read by the agent's cond */
	struct vdi_region r;
	VDConfig cfg; /* client's inputs, then the final config */
	struct vdi_bufpool pool;
	struct vdi_server_device *devs[VDI_MAX_DEVICES];
	uint32_t opened, closed_count;
	uint32_t outstanding; /* all devices */
	int agent_running, agent_stop;
	uint64_t last_progress_ms;
};

#define get_state(s)    __atomic_load_n(&(s)->state, __ATOMIC_RELAXED)
#define set_state(s, v) __atomic_store_n(&(s)->state, (v), __ATOMIC_RELAXED)

static enum vdi_set_state server_state(struct vdi_server *s)
{
	enum vdi_set_state st = get_state(s);

	if (st != VDI_SET_DNE && vdi_region_aborted(&s->r))
		return VDI_SET_ABORTED;
	return st;
}

/* The state table's answer for call in this object's state now. */
static int check_state(struct vdi_server *s, enum vdi_call call)
{
	return vdi_state_check(&s->r, call, server_state(s));
}

/* Moves the object to st and publishes st as the set's phase.  Under
 * s->lock. */
static void enter(struct vdi_server *s, enum vdi_set_state st)
{
	struct vdi_shm_header *h = s->r.hdr;

	set_state(s, st);
	/* Release: everything the phase promises (final config, areas,
	 * device states) was stored before. */
	vdi_store_release(&h->phase, (uint32_t)st);
	vdi_wake(&h->config_seq, &h->config_waiters);
}

static int is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

/* ------------------------------------------------------------------ */
/* lifetime, Open */

int vdi_server_new(struct vdi_server **out)
{
	struct vdi_server *s;

	if (!out)
		return vdi_fail(VD_E_INVALID, "server object pointer is NULL");
	s = calloc(1, sizeof(*s));
	if (!s)
		return vdi_fail(VD_E_MEMORY, "cannot allocate a server object");
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->agent_done, NULL);
	*out = s;
	return 0;
}

void vdi_server_free(struct vdi_server *s)
{
	if (!s)
		return;
	if (get_state(s) != VDI_SET_DNE)
		vdi_server_close(s);
	pthread_cond_destroy(&s->agent_done);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Checks a freshly mapped set can be served, and claims it.  r is not yet
 * installed in the server object. */
static int claim_set(struct vdi_region *r, VDConfig *cfg_out)
{
	struct vdi_shm_header *h = r->hdr;
	VDConfig cfg = h->client_cfg; /* one copy, validated below */
	int rc;

	if (vdi_check_client_config(&cfg))
		return vdi_fail(VD_E_PROTOCOL,
		                "server Open: set '%s' holds an invalid client configuration: %s",
		                r->name, vdi_last_error());
	if (vdi_region_aborted(r)) {
		char why[VDI_REASON_MAX];

		vdi_region_reason(r, why, sizeof(why));
		return vdi_fail(VD_E_ABORT, "server Open: set '%s' is aborted: %s", r->name, why);
	}
	if (vdi_load_acquire(&h->client_closed) || !vdi_shm_proc_alive(&h->creator))
		return vdi_fail(VD_E_INVALID,
		                "server Open: the client that created set '%s' (pid %d) is gone",
		                r->name, (int)h->creator.pid);
	rc = vdi_region_lock(r);
	if (rc)
		return rc;
	if (h->server.pid)
		rc = vdi_fail(VD_E_BUSY, "server Open: set '%s' is already opened by server pid %d",
		              r->name, (int)h->server.pid);
	else if (vdi_load_acquire(&h->phase) != VDI_SET_CREATED)
		rc = vdi_fail(VD_E_BUSY,
		              "server Open: set '%s' is in phase %u with no server (corrupt)",
		              r->name, vdi_load_relaxed(&h->phase));
	else
		vdi_proc_self(&h->server);
	vdi_region_unlock(r);
	if (!rc)
		*cfg_out = cfg;
	return rc;
}

/* Maps and claims the set into r, waiting up to timeout_ms for a client
 * to create it.  Runs without s->lock: nothing of s is touched. */
static int open_region_waiting(struct vdi_region *r, VDConfig *cfg, const char *inst,
                               const char *name, uint32_t timeout_ms)
{
	struct vdi_deadline dl;
	int rc;

	vdi_deadline_start(&dl, timeout_ms);
	for (;;) {
		rc = vdi_region_open(r, inst, name);
		if (!rc) {
			rc = claim_set(r, cfg);
			if (rc)
				vdi_region_unmap(r);
		}
		/* Missing, half-created, or left by a dead client: a new
		 * client may still create it, so keep waiting. */
		if (rc != VD_E_INVALID || !vdi_deadline_slice(&dl))
			return rc;
		usleep(20000);
	}
}

int vdi_server_open_wait(struct vdi_server *s, const char *instance, const char *name,
                         uint32_t timeout_ms)
{
	struct vdi_region r;
	VDConfig cfg;
	const char *inst;
	int rc;

	VDI_ENTER(s, "server");
	rc = vdi_check_set_name(name, "set");
	if (!rc)
		rc = vdi_check_instance(instance, &inst);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->lock);
	rc = check_state(s, VDI_CALL_S_OPEN);
	pthread_mutex_unlock(&s->lock);
	if (rc)
		return rc;
	rc = open_region_waiting(&r, &cfg, inst, name, timeout_ms);
	if (rc)
		return rc;
	/* Installed under the lock: SignalAbort may run on another thread,
	 * and another Open may have won the wait. */
	pthread_mutex_lock(&s->lock);
	rc = check_state(s, VDI_CALL_S_OPEN);
	if (rc) {
		/* We claimed that set as its server: fail it, not strand it. */
		vdi_region_abort(&r, "server object was opened twice at once");
		vdi_region_unmap(&r);
	} else {
		s->r = r;
		s->cfg = cfg;
		vdi_bufpool_init(&s->pool, s->cfg.prefixZoneSize, 0);
		s->opened = s->closed_count = s->outstanding = 0;
		s->agent_stop = 0;
		enter(s, VDI_SET_CONNECTED);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int vdi_server_open(struct vdi_server *s, const char *instance, const char *name)
{
	return vdi_server_open_wait(s, instance, name, 0);
}

int vdi_server_get_configuration(struct vdi_server *s, VDConfig *cfg)
{
	int rc;

	vdi_clear_error();
	if (!s || !cfg)
		return vdi_fail(VD_E_INVALID, "server GetConfiguration: NULL argument");
	pthread_mutex_lock(&s->lock);
	rc = check_state(s, VDI_CALL_S_GET_CONFIGURATION);
	if (!rc)
		*cfg = s->cfg;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* ------------------------------------------------------------------ */
/* configuration */

static int check_server_features(const struct vdi_server *s, uint32_t f)
{
	uint32_t server_bits = VDF_WriteMedia | VDF_ReadMedia | VDF_CompleteEnabled;
	uint32_t dir = f & (VDF_WriteMedia | VDF_ReadMedia);

	if (f & ~(server_bits | s->cfg.features))
		return vdi_fail(
			VD_E_INVALID,
			"server BeginConfiguration: features 0x%08x carry bits 0x%08x the client did not request",
			f, f & ~(server_bits | s->cfg.features));
	if (!dir)
		return vdi_fail(
			VD_E_INVALID,
			"server BeginConfiguration: features 0x%08x must hold VDF_WriteMedia (0x10000), VDF_ReadMedia (0x20000) or both",
			f);
	if ((f & VDF_CompleteEnabled) && !(s->cfg.features & VDF_RequestComplete))
		return vdi_fail(
			VD_E_INVALID,
			"server BeginConfiguration: VDF_CompleteEnabled without the client's VDF_RequestComplete");
	return 0;
}

static int check_geometry(uint32_t *block, uint32_t *align, uint32_t *maxxfer)
{
	if (!*block)
		*block = VDI_MIN_BLOCKSIZE;
	if (!*maxxfer)
		*maxxfer = VDI_MAXTRANSFER_UNIT;
	if (!*align)
		*align = *block;
	if (!is_pow2(*block) || *block < VDI_MIN_BLOCKSIZE || *block > VDI_MAX_BLOCKSIZE)
		return vdi_fail(
			VD_E_INVALID,
			"server BeginConfiguration: block size %u is not a power of two in %d..%d",
			*block, VDI_MIN_BLOCKSIZE, VDI_MAX_BLOCKSIZE);
	if (*maxxfer % VDI_MAXTRANSFER_UNIT || *maxxfer > VDI_MAX_MAXTRANSFER)
		return vdi_fail(
			VD_E_INVALID,
			"server BeginConfiguration: maximum transfer size %u is not a multiple of %d up to %d",
			*maxxfer, VDI_MAXTRANSFER_UNIT, VDI_MAX_MAXTRANSFER);
	if (!is_pow2(*align) || *align < *block || *align > VDI_MAX_ALIGNMENT)
		return vdi_fail(
			VD_E_INVALID,
			"server BeginConfiguration: alignment %u must be a power of two from the block size %u to %d (D1: arguments are features, blockSize, alignment)",
			*align, *block, VDI_MAX_ALIGNMENT);
	return 0;
}

int vdi_server_begin_configuration(struct vdi_server *s, uint32_t features, uint32_t block_size,
                                   uint32_t alignment, uint32_t max_transfer_size,
                                   uint32_t timeout_ms)
{
	int rc;

	(void)timeout_ms; /* D14 */
	VDI_ENTER(s, "server");
	pthread_mutex_lock(&s->lock);
	rc = check_state(s, VDI_CALL_S_BEGIN_CONFIGURATION);
	if (!rc)
		rc = check_server_features(s, features);
	if (!rc)
		rc = check_geometry(&block_size, &alignment, &max_transfer_size);
	if (rc)
		goto out;
	if (s->cfg.alignment > alignment)
		alignment = s->cfg.alignment; /* D10 */
	s->cfg.features |= features;
	s->cfg.blockSize = block_size;
	s->cfg.alignment = alignment;
	s->cfg.maxTransferSize = max_transfer_size;
	s->cfg.maxIODepth = 4;
	s->pool.alignment = alignment;
	enter(s, VDI_SET_CONFIGURABLE);
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* What RequestBuffers, QueryAvailableBuffers and AllocateBuffer check
 * first, under s->lock: the state, then size and alignment (*alignment
 * becomes the effective one, D10). */
static int check_request(struct vdi_server *s, enum vdi_call call, uint32_t size,
                         uint32_t *alignment)
{
	int rc = check_state(s, call);

	if (rc)
		return rc;
	if (!*alignment)
		*alignment = s->cfg.alignment;
	if (!size)
		return vdi_fail(VD_E_INVALID, "%s: size is 0", vdi_call_name(call));
	if (!is_pow2(*alignment) || *alignment > VDI_MAX_ALIGNMENT)
		return vdi_fail(VD_E_INVALID, "%s: alignment %u is not a power of two up to %d",
		                vdi_call_name(call), *alignment, VDI_MAX_ALIGNMENT);
	if (*alignment < s->cfg.alignment)
		*alignment = s->cfg.alignment; /* never looser than the set's */
	return 0;
}

/* Publishes a new area: its size first, then the count (release). */
static void publish_area(struct vdi_server *s, uint64_t bytes)
{
	struct vdi_shm_header *h = s->r.hdr;
	uint32_t k = s->pool.area_count - 1;

	h->areas[k].size = bytes;
	vdi_store_release(&h->area_count, s->pool.area_count);
	s->cfg.bufferAreaSize += (uint32_t)(bytes > UINT32_MAX ? UINT32_MAX : bytes);
	vdi_store_relaxed(&h->final_cfg.bufferAreaSize, s->cfg.bufferAreaSize);
}

int vdi_server_request_buffers(struct vdi_server *s, uint32_t size, uint32_t alignment,
                               uint32_t count)
{
	uint64_t bytes;
	int rc;

	VDI_ENTER(s, "server");
	pthread_mutex_lock(&s->lock);
	rc = check_request(s, VDI_CALL_S_REQUEST_BUFFERS, size, &alignment);
	if (!rc && !count)
		rc = vdi_fail(VD_E_INVALID, "server RequestBuffers: count is 0");
	if (!rc)
		rc = vdi_bufpool_request(&s->pool, size, alignment, count);
	/* While Configurable the requests are only summed (spec 9). */
	if (rc || get_state(s) == VDI_SET_CONFIGURABLE)
		goto out;
	/* After configuration: allocate at once, in a new area. */
	rc = vdi_bufpool_commit(&s->pool, &s->r, &bytes);
	if (!rc)
		publish_area(s, bytes);
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int vdi_server_query_available_buffers(struct vdi_server *s, uint32_t size, uint32_t alignment,
                                       uint32_t *count)
{
	int rc;

	vdi_clear_error();
	if (!s || !count)
		return vdi_fail(VD_E_INVALID, "server QueryAvailableBuffers: NULL argument");
	pthread_mutex_lock(&s->lock);
	rc = check_request(s, VDI_CALL_S_QUERY_AVAILABLE_BUFFERS, size, &alignment);
	/* D11: while Configurable, what EndConfiguration would lay out. */
	if (!rc)
		*count = get_state(s) == VDI_SET_CONFIGURABLE
		                 ? vdi_bufpool_count_requested(&s->pool, size, alignment)
		                 : vdi_bufpool_count_free(&s->pool, size, alignment);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int vdi_server_end_configuration(struct vdi_server *s)
{
	uint64_t bytes;
	int rc;

	VDI_ENTER(s, "server");
	pthread_mutex_lock(&s->lock);
	rc = check_state(s, VDI_CALL_S_END_CONFIGURATION);
	if (rc)
		goto out;
	rc = vdi_bufpool_commit(&s->pool, &s->r, &bytes);
	if (rc)
		goto out; /* stays Configurable, no buffer space (spec) */
	if (bytes)
		publish_area(s, bytes);
	s->r.hdr->final_cfg = s->cfg;
	enter(s, VDI_SET_INITIALIZING);
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* ------------------------------------------------------------------ */
/* devices */

static struct vdi_server_device *device_new(struct vdi_server *s, uint32_t i)
{
	struct vdi_server_device *d = calloc(1, sizeof(*d));
	uint32_t k;

	if (!d)
		return NULL;
	d->set = s;
	d->index = i;
	d->sd = vdi_shm_dev(s->r.hdr, i);
	/* Copy the name once; the shared copy is not ours to trust. */
	snprintf(d->name, sizeof(d->name), "%.*s", VDI_MAX_NAME, d->sd->name);
	for (k = 0; k < VDI_QUEUE_DEPTH; k++) {
		d->free_slots[k] = VDI_QUEUE_DEPTH - 1 - k;
		d->slots[k].buf = SIZE_MAX;
	}
	d->nfree = VDI_QUEUE_DEPTH;
	d->tail = vdi_load_acquire(&d->sd->cmd.tail);
	d->done_head = vdi_load_acquire(&d->sd->done.head);
	return d;
}

/* The next device this server has not opened, named "<set><i>" if no
 * side named it yet (the samples' convention). */
static int next_unopened(struct vdi_server *s)
{
	uint32_t i;

	for (i = 0; i < s->r.device_count; i++) {
		struct vdi_shm_device *sd = vdi_shm_dev(s->r.hdr, i);

		if (s->devs[i])
			continue;
		if (!vdi_load_acquire(&sd->named)) {
			char name[VDI_MAX_NAME + 16];

			snprintf(name, sizeof(name), "%.*s%u", VDI_MAX_NAME - 3, s->r.name, i);
			return vdi_region_find_device(&s->r, name, "server");
		}
		return (int)i;
	}
	return vdi_fail(VD_E_OPEN, "server OpenDevice: every device of set '%s' is open",
	                s->r.name);
}

static int pick_device(struct vdi_server *s, const char *name)
{
	int rc, i;

	rc = vdi_region_lock(&s->r);
	if (rc)
		return rc;
	if (!name || !*name)
		i = next_unopened(s);
	else
		i = vdi_region_find_device(&s->r, name, "server");
	vdi_region_unlock(&s->r);
	if (i >= 0 && s->devs[i])
		return vdi_fail(VD_E_PROTOCOL, "server OpenDevice: device '%s' is already open",
		                name);
	return i;
}

int vdi_server_open_device(struct vdi_server *s, const char *name, struct vdi_server_device **out)
{
	struct vdi_server_device *d;
	int rc, i;

	vdi_clear_error();
	if (out)
		*out = NULL;
	if (!s || !out)
		return vdi_fail(VD_E_INVALID, "server OpenDevice: NULL argument");
	if (name && *name && (rc = vdi_check_set_name(name, "device")))
		return rc;
	pthread_mutex_lock(&s->lock);
	rc = check_state(s, VDI_CALL_S_OPEN_DEVICE);
	if (rc)
		goto out;
	if (s->opened == s->r.device_count) {
		rc = vdi_fail(VD_E_OPEN, "server OpenDevice: every device of set '%s' is open",
		              s->r.name);
		goto out;
	}
	i = rc = pick_device(s, name);
	if (rc < 0)
		goto out;
	d = device_new(s, (uint32_t)i);
	if (!d) {
		rc = vdi_fail(VD_E_MEMORY, "server OpenDevice: out of memory");
		goto out;
	}
	/* Release: the agent's lock-free scan (agent_should_wake) reads it. */
	__atomic_store_n(&s->devs[i], d, __ATOMIC_RELEASE);
	s->opened++;
	/* Release: the client's GetCommand may now expect commands. */
	vdi_store_release(&d->sd->server_state, (uint32_t)VDI_DEV_S_OPEN);
	if (get_state(s) == VDI_SET_INITIALIZING)
		enter(s, VDI_SET_ACTIVE);
	*out = d;
	rc = 0;
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

const char *vdi_server_device_name(const struct vdi_server_device *d)
{
	return d ? d->name : NULL;
}

/* ------------------------------------------------------------------ */
/* buffers */

int vdi_server_allocate_buffer(struct vdi_server *s, uint8_t **buffer, uint32_t size,
                               uint32_t alignment)
{
	struct vdi_buf *b;
	int rc;

	vdi_clear_error();
	if (buffer)
		*buffer = NULL;
	if (!s || !buffer)
		return vdi_fail(VD_E_INVALID, "server AllocateBuffer: NULL argument");
	pthread_mutex_lock(&s->lock);
	rc = check_request(s, VDI_CALL_S_ALLOCATE_BUFFER, size, &alignment);
	if (rc)
		goto out;
	b = vdi_bufpool_alloc(&s->pool, size, alignment);
	if (!b) {
		rc = vdi_fail(
			VD_E_MEMORY,
			"server AllocateBuffer: no free buffer of %u bytes aligned to %u in set '%s'",
			size, alignment, s->r.name);
		goto out;
	}
	*buffer = vdi_bufpool_addr(&s->pool, b);
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int vdi_server_free_buffer(struct vdi_server *s, uint8_t *buffer, uint32_t size)
{
	struct vdi_buf *b;
	int rc;

	VDI_ENTER(s, "server");
	pthread_mutex_lock(&s->lock);
	rc = check_state(s, VDI_CALL_S_FREE_BUFFER);
	if (rc)
		goto out;
	b = vdi_bufpool_find(&s->pool, buffer);
	if (!b || !b->in_use)
		rc = vdi_fail(VD_E_INVALID, "server FreeBuffer: %p is not an allocated buffer",
		              (void *)buffer);
	else if (b->size != size)
		rc = vdi_fail(VD_E_INVALID,
		              "server FreeBuffer: size %u differs from the %u bytes allocated",
		              size, b->size);
	else if (b->busy && !vdi_region_aborted(&s->r))
		rc = vdi_fail(VD_E_INVALID,
		              "server FreeBuffer: buffer %p belongs to an outstanding command",
		              (void *)buffer);
	else
		b->in_use = 0;
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int vdi_server_is_shared_buffer(struct vdi_server *s, const uint8_t *buffer)
{
	int yes;

	if (!s)
		return 0;
	pthread_mutex_lock(&s->lock);
	/* The table allows it everywhere; with no set the pool is empty. */
	yes = !check_state(s, VDI_CALL_S_IS_SHARED_BUFFER) &&
	      vdi_bufpool_find(&s->pool, buffer) != NULL;
	pthread_mutex_unlock(&s->lock);
	return yes; /* D12: 1 or 0 */
}

/* ------------------------------------------------------------------ */
/* SendCommand */

static uint32_t failure_code(int rc)
{
	switch (rc) {
	case VD_E_QUEUE_FULL: return ERROR_NO_SYSTEM_RESOURCES;
	case VD_E_IO_ERROR: return ERROR_IO_DEVICE;
	case VD_E_ABORT: return ERROR_OPERATION_ABORTED;
	case VD_E_INVALID: return ERROR_INVALID_PARAMETER;
	default: return ERROR_INVALID_HANDLE;
	}
}

static int is_data(uint32_t code)
{
	return code == VDC_Read || code == VDC_Write;
}

/* Resolves and checks the buffer of a Read/Write.  Under s->lock. */
static int bind_buffer(struct vdi_server_device *d, const VDS_Command *cmd, size_t *index)
{
	struct vdi_server *s = d->set;
	struct vdi_buf *b;

	if (!cmd->size || cmd->size % s->cfg.blockSize || cmd->size > s->cfg.maxTransferSize)
		return vdi_fail(
			VD_E_INVALID,
			"server SendCommand: device '%s': %s size %u is not a multiple of the block size %u up to %u",
			d->name, vdi_strcommand(cmd->commandCode), cmd->size, s->cfg.blockSize,
			s->cfg.maxTransferSize);
	b = vdi_bufpool_find(&s->pool, cmd->buffer);
	if (!b || !b->in_use)
		return vdi_fail(
			VD_E_INVALID,
			"server SendCommand: device '%s': %s buffer %p is not an allocated shared buffer",
			d->name, vdi_strcommand(cmd->commandCode), (void *)cmd->buffer);
	if (b->size < cmd->size)
		return vdi_fail(
			VD_E_INVALID,
			"server SendCommand: device '%s': %s of %u bytes exceeds its %u-byte buffer",
			d->name, vdi_strcommand(cmd->commandCode), cmd->size, b->size);
	if (b->busy)
		return vdi_fail(
			VD_E_INVALID,
			"server SendCommand: device '%s': buffer %p is already in an outstanding command",
			d->name, (void *)cmd->buffer);
	b->busy = 1;
	*index = (size_t)(b - s->pool.bufs);
	return 0;
}

/* Validates and queues; under s->lock.  Returns 0 or a VD_E_*. */
static int queue_command(struct vdi_server_device *d, VDS_Command *cmd)
{
	struct vdi_server *s = d->set;
	struct vdi_shm_slot *ss;
	size_t buf = SIZE_MAX;
	uint32_t idx;
	int rc = check_state(s, VDI_CALL_S_SEND_COMMAND);

	if (rc)
		return rc;
	if (d->closed)
		return vdi_fail(VD_E_PROTOCOL, "server SendCommand: device '%s' is closed",
		                d->name);
	if (cmd->commandCode < VDC_MIN_CODE || cmd->commandCode > VDC_MAX_CODE)
		return vdi_fail(VD_E_INVALID,
		                "server SendCommand: device '%s': command code %u is not 1..19",
		                d->name, cmd->commandCode);
	if (!d->nfree)
		return vdi_fail(VD_E_QUEUE_FULL,
		                "server SendCommand: device '%s' has %d commands outstanding",
		                d->name, VDI_QUEUE_DEPTH);
	if (is_data(cmd->commandCode) && (rc = bind_buffer(d, cmd, &buf)))
		return rc;
	idx = d->free_slots[--d->nfree];
	d->slots[idx] = (struct sslot){ cmd, buf };
	ss = &d->sd->slots[idx];
	ss->command_code = cmd->commandCode;
	ss->size = cmd->size;
	ss->position = cmd->inPosition;
	ss->buffer_handle = buf == SIZE_MAX ? 0 : vdi_bufpool_handle(&s->pool.bufs[buf]);
	if (buf != SIZE_MAX)
		vdi_tsan_release(cmd->buffer); /* hand-off: barrier.h */
	vdi_store_relaxed(&d->sd->cmd.entries[d->tail & VDI_RING_MASK], idx);
	d->tail++;
	/* Release pairs with the client's acquire of tail in try_fetch:
	 * slot and entry are complete before the index is visible. */
	vdi_store_release(&d->sd->cmd.tail, d->tail);
	if (!s->outstanding++)
		s->last_progress_ms = vdi_now_ms();
	d->outstanding++;
	return 0;
}

int vdi_server_send_command(struct vdi_server_device *d, VDS_Command *cmd)
{
	int rc;

	vdi_clear_error();
	if (!d || !cmd || !cmd->completionRoutine)
		return vdi_fail(VD_E_INVALID,
		                "server SendCommand: NULL device, command or completion routine");
	pthread_mutex_lock(&d->set->lock);
	rc = queue_command(d, cmd);
	pthread_mutex_unlock(&d->set->lock);
	if (rc) {
		/* D8: the routine learns of the failure, synchronously. */
		cmd->completionCode = failure_code(rc);
		cmd->bytesTransferred = 0;
		cmd->outPosition = 0;
		cmd->completionRoutine(cmd);
		return rc;
	}
	vdi_wake(&d->sd->cmd_seq, &d->sd->cmd_waiters);
	return 0;
}

int vdi_server_close_device(struct vdi_server_device *d)
{
	struct vdi_server *s;
	int rc;

	vdi_clear_error();
	if (!d)
		return vdi_fail(VD_E_INVALID, "server CloseDevice: NULL device");
	s = d->set;
	pthread_mutex_lock(&s->lock);
	rc = check_state(s, VDI_CALL_S_CLOSE_DEVICE);
	if (!rc && d->closed) {
		rc = vdi_fail(VD_E_CLOSE, "server CloseDevice: device '%s' is already closed",
		              d->name);
	} else if (!rc) {
		d->closed = 1;
		/* Release pairs with the client's acquire in wait_command:
		 * every command queued before is seen before the close. */
		vdi_store_release(&d->sd->server_state, (uint32_t)VDI_DEV_S_CLOSED);
		if (++s->closed_count == s->r.device_count)
			enter(s, VDI_SET_TERMINATED);
	}
	pthread_mutex_unlock(&s->lock);
	if (!rc) {
		vdi_wake(&d->sd->cmd_seq, &d->sd->cmd_waiters);
		vdi_wake(&s->r.hdr->done_seq, &s->r.hdr->done_waiters);
	}
	return rc;
}

/* ------------------------------------------------------------------ */
/* the completion agent */

struct done {
	VDS_Command *cmd;
	uint32_t code, bytes;
	uint64_t pos;
};

#define BATCH 64

/* Frees slot idx of d; under s->lock. */
static VDS_Command *retire(struct vdi_server_device *d, uint32_t idx)
{
	struct vdi_server *s = d->set;
	struct sslot *sl = &d->slots[idx];
	VDS_Command *cmd = sl->cmd;

	if (sl->buf != SIZE_MAX)
		s->pool.bufs[sl->buf].busy = 0;
	sl->cmd = NULL;
	sl->buf = SIZE_MAX;
	d->free_slots[d->nfree++] = idx;
	d->outstanding--;
	s->outstanding--;
	return cmd;
}

static void bad_completion(struct vdi_server_device *d, const char *what, uint32_t value)
{
	vdi_region_abort(&d->set->r, "protocol violation by client on device '%s': %s %u", d->name,
	                 what, value);
}

/* Pops up to room completions of d into out[]; under s->lock.  Returns
 * the count; a protocol violation aborts the set and ends the drain. */
static int drain_device(struct vdi_server_device *d, struct done *out, int room)
{
	struct vdi_shm_ring *ring = &d->sd->done;
	/* Acquire pairs with the client's release in CompleteCommand. */
	uint32_t tail = vdi_load_acquire(&ring->tail);
	int n = 0;

	if (tail - d->done_head > VDI_QUEUE_DEPTH) {
		bad_completion(d, "completion ring count", tail - d->done_head);
		return 0;
	}
	while (d->done_head != tail && n < room) {
		uint32_t idx = vdi_load_relaxed(&ring->entries[d->done_head & VDI_RING_MASK]);
		struct vdi_shm_slot *ss;
		VDS_Command *cmd;

		/* On a violation, stop but keep what was retired so far: those
		 * completions are delivered; the rest end with 995. */
		if (idx >= VDI_QUEUE_DEPTH || !d->slots[idx].cmd) {
			bad_completion(d, "completion of a slot not outstanding", idx);
			break;
		}
		ss = &d->sd->slots[idx];
		cmd = d->slots[idx].cmd;
		out[n] = (struct done){ cmd, ss->completion_code, ss->bytes_transferred,
			                ss->out_position };
		if (is_data(cmd->commandCode) && out[n].bytes > cmd->size) {
			bad_completion(d, "bytes transferred above the command size", out[n].bytes);
			break;
		}
		retire(d, idx);
		d->done_head++;
		n++;
	}
	/* Release: the client may reuse these ring entries. */
	vdi_store_release(&ring->head, d->done_head);
	return n;
}

static int collect(struct vdi_server *s, struct done *out)
{
	int n = 0;
	uint32_t i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->r.device_count && n < BATCH; i++) {
		if (!s->devs[i])
			continue;
		n += drain_device(s->devs[i], out + n, BATCH - n);
	}
	if (n)
		s->last_progress_ms = vdi_now_ms();
	pthread_mutex_unlock(&s->lock);
	return n;
}

static void deliver(struct done *list, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		VDS_Command *cmd = list[i].cmd;

		if (is_data(cmd->commandCode))
			vdi_tsan_acquire(cmd->buffer); /* hand-off: barrier.h */
		cmd->completionCode = list[i].code;
		cmd->bytesTransferred = list[i].bytes;
		cmd->outPosition = list[i].pos;
		cmd->completionRoutine(cmd);
	}
}

/* Completes everything outstanding with ERROR_OPERATION_ABORTED, in
 * batches, with no lock held while routines run. */
static void abort_outstanding(struct vdi_server *s)
{
	struct done list[BATCH];
	int n;

	do {
		uint32_t i, k;

		n = 0;
		pthread_mutex_lock(&s->lock);
		for (i = 0; i < s->r.device_count && n < BATCH; i++) {
			struct vdi_server_device *d = s->devs[i];

			for (k = 0; d && k < VDI_QUEUE_DEPTH && n < BATCH; k++)
				if (d->slots[k].cmd)
					list[n++] = (struct done){ retire(d, k),
						                   ERROR_OPERATION_ABORTED, 0, 0 };
		}
		pthread_mutex_unlock(&s->lock);
		deliver(list, n);
	} while (n);
}

static int agent_finished(struct vdi_server *s);

/* Something for the agent to do: abort, stop, a completion, or the end
 * (Normally Terminated with nothing outstanding).  Normally Terminated
 * alone is not: commands the client still holds are waited for, in
 * slices, so agent_watch still runs (a dead client, serverTimeOut). */
static int agent_should_wake(void *ctx)
{
	struct vdi_server *s = ctx;
	uint32_t i;

	if (vdi_region_aborted(&s->r) || __atomic_load_n(&s->agent_stop, __ATOMIC_RELAXED) ||
	    agent_finished(s))
		return 1;
	for (i = 0; i < s->r.device_count; i++) {
		struct vdi_server_device *d = __atomic_load_n(&s->devs[i], __ATOMIC_ACQUIRE);

		/* done_head is only written by the agent, which runs this. */
		if (d && vdi_load_acquire(&d->sd->done.tail) != d->done_head)
			return 1;
	}
	return 0;
}

/* Once per idle slice: dead clients (D26) and serverTimeOut (spec 4). */
static void agent_watch(struct vdi_server *s)
{
	struct vdi_shm_header *h = s->r.hdr;
	uint64_t limit = 2ull * s->cfg.serverTimeOut;
	uint32_t i;

	if (!vdi_load_acquire(&h->client_closed) && !vdi_shm_proc_alive(&h->creator)) {
		vdi_region_abort(&s->r, "client process %d (primary) died", (int)h->creator.pid);
		return;
	}
	for (i = 0; i < s->r.device_count; i++) {
		struct vdi_shm_device *sd = vdi_shm_dev(h, i);

		if (vdi_load_acquire(&sd->client_state) == VDI_DEV_C_OPEN &&
		    !vdi_shm_proc_alive(&sd->client)) {
			vdi_region_abort(&s->r, "client process %d driving device '%s' died",
			                 (int)sd->client.pid, s->devs[i] ? s->devs[i]->name : "?");
			return;
		}
	}
	pthread_mutex_lock(&s->lock);
	if (limit && s->outstanding && vdi_now_ms() - s->last_progress_ms > limit)
		vdi_region_abort(&s->r,
		                 "client completed no command for %llu ms (serverTimeOut %u ms)",
		                 (unsigned long long)(vdi_now_ms() - s->last_progress_ms),
		                 s->cfg.serverTimeOut);
	pthread_mutex_unlock(&s->lock);
}

static int agent_finished(struct vdi_server *s)
{
	int done;

	pthread_mutex_lock(&s->lock);
	done = get_state(s) == VDI_SET_TERMINATED && !s->outstanding;
	pthread_mutex_unlock(&s->lock);
	return done;
}

static void agent_loop(struct vdi_server *s)
{
	struct vdi_shm_header *h = s->r.hdr;
	struct done list[BATCH];
	int n;

	for (;;) {
		n = collect(s, list);
		deliver(list, n);
		if (n)
			continue;
		if (vdi_region_aborted(&s->r) ||
		    __atomic_load_n(&s->agent_stop, __ATOMIC_RELAXED)) {
			abort_outstanding(s);
			return;
		}
		if (agent_finished(s))
			return;
		if (!vdi_wait_slice(&h->done_seq, &h->done_waiters, agent_should_wake, s, 100))
			agent_watch(s);
	}
}

uint32_t vdi_server_devices_opened(struct vdi_server *s)
{
	uint32_t n;

	pthread_mutex_lock(&s->lock);
	n = s->opened;
	pthread_mutex_unlock(&s->lock);
	return n;
}

int vdi_server_execute_completion_agent(struct vdi_server *s)
{
	enum vdi_set_state st;
	int rc;

	VDI_ENTER(s, "server");
	pthread_mutex_lock(&s->lock);
	st = server_state(s);
	rc = vdi_state_check(&s->r, VDI_CALL_S_EXECUTE_COMPLETION_AGENT, st);
	if (!rc && s->agent_running)
		rc = vdi_fail(VD_E_PROTOCOL,
		              "server ExecuteCompletionAgent: the agent is already running");
	if (rc) {
		int orphans = st == VDI_SET_ABORTED && !s->agent_running;

		pthread_mutex_unlock(&s->lock);
		/* Aborted before the agent ever ran: commands already sent
		 * must still end, or their senders wait forever.  Their
		 * routines may call us: the answer is made again after. */
		if (orphans) {
			abort_outstanding(s);
			rc = vdi_state_check(&s->r, VDI_CALL_S_EXECUTE_COMPLETION_AGENT, st);
		}
		return rc;
	}
	s->agent_running = 1;
	s->last_progress_ms = vdi_now_ms();
	if (st == VDI_SET_INITIALIZING)
		enter(s, VDI_SET_ACTIVE);
	pthread_mutex_unlock(&s->lock);

	agent_loop(s);

	pthread_mutex_lock(&s->lock);
	s->agent_running = 0;
	pthread_cond_broadcast(&s->agent_done);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ------------------------------------------------------------------ */
/* SignalAbort, Close */

int vdi_server_signal_abort(struct vdi_server *s)
{
	int running, rc;

	VDI_ENTER(s, "server");
	/* Under the lock: Open may be mapping the region on another thread. */
	pthread_mutex_lock(&s->lock);
	rc = check_state(s, VDI_CALL_S_SIGNAL_ABORT);
	if (rc) {
		pthread_mutex_unlock(&s->lock);
		return rc;
	}
	vdi_region_abort(&s->r, "server (pid %d) signalled abort", (int)getpid());
	running = s->agent_running;
	pthread_mutex_unlock(&s->lock);
	/* No agent to end the outstanding commands: end them here, or a
	 * sender waiting for them would wait until Close, which it never
	 * reaches.  (A late agent finds nothing left: each command is
	 * retired once, under the lock.) */
	if (!running)
		abort_outstanding(s);
	return 0;
}

static void release_all(struct vdi_server *s)
{
	uint32_t i;

	for (i = 0; i < VDI_MAX_DEVICES; i++) {
		free(s->devs[i]);
		s->devs[i] = NULL;
	}
	vdi_bufpool_release(&s->pool);
	vdi_store_release(&s->r.hdr->server_closed, 1u);
	vdi_region_wake_all(&s->r);
	vdi_region_unlink(&s->r);
	vdi_region_unmap(&s->r);
	s->opened = s->closed_count = s->outstanding = 0;
	set_state(s, VDI_SET_DNE);
}

/* D4 for the server: open devices make Close a protocol error; any
 * Close before Normal Termination aborts, so no client waits on. */
static int close_check(struct vdi_server *s, enum vdi_set_state st)
{
	uint32_t i;

	if (st == VDI_SET_ABORTED || st == VDI_SET_TERMINATED)
		return 0;
	for (i = 0; i < s->r.device_count; i++) {
		if (s->devs[i] && !s->devs[i]->closed) {
			vdi_region_abort(&s->r, "server closed set '%s' with device '%s' open",
			                 s->r.name, s->devs[i]->name);
			return vdi_fail(
				VD_E_PROTOCOL,
				"server Close: device '%s' of set '%s' is still open; the set was aborted",
				s->devs[i]->name, s->r.name);
		}
	}
	vdi_region_abort(&s->r, "server closed set '%s' before the end of the transfer", s->r.name);
	return 0;
}

int vdi_server_close(struct vdi_server *s)
{
	enum vdi_set_state st;
	int rc;

	VDI_ENTER(s, "server");
	pthread_mutex_lock(&s->lock);
	st = server_state(s);
	rc = vdi_state_check(&s->r, VDI_CALL_S_CLOSE, st);
	if (rc) {
		pthread_mutex_unlock(&s->lock);
		return rc;
	}
	rc = close_check(s, st);
	/* Stop the agent and wait for it: after Close nothing may touch
	 * the commands or the mappings. */
	__atomic_store_n(&s->agent_stop, 1, __ATOMIC_RELAXED);
	vdi_wake(&s->r.hdr->done_seq, &s->r.hdr->done_waiters);
	while (s->agent_running)
		pthread_cond_wait(&s->agent_done, &s->lock);
	pthread_mutex_unlock(&s->lock);
	abort_outstanding(s); /* no agent ran them: do it here (spec 7.3) */
	pthread_mutex_lock(&s->lock);
	release_all(s);
	pthread_mutex_unlock(&s->lock);
	return rc;
}
