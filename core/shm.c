/* SPDX-License-Identifier: MIT */
/*
 * shm.c - creating, mapping, validating, locking and removing the shared
 * objects of a set; process identity and liveness; abort and wake-ups.
 *
 * Trust.  The peer may be dead, buggy or hostile.  Everything read from
 * the region after it was mapped is checked here or at its point of use:
 * the header's sizes against fstat, names against what we asked for,
 * device counts against 1..64.  A region that fails validation is
 * refused with VD_E_PROTOCOL; it is never "repaired".
 *
 * Liveness (decisions D26).  A process is named by pid and start time
 * (field 22 of /proc/<pid>/stat): a recycled pid does not look alive; a
 * zombie (killed, not yet reaped) counts as dead.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "barrier.h"
#include "internal.h"
#include "shm.h"

/* ------------------------------------------------------------------ */
/* deadlines and sliced waits */

#define VDI_SLICE_MS 100u

void vdi_deadline_start(struct vdi_deadline *d, uint32_t timeout_ms)
{
	d->end_ms = vdi_timeout_infinite(timeout_ms) ? UINT64_MAX : vdi_now_ms() + timeout_ms;
}

uint32_t vdi_deadline_slice(const struct vdi_deadline *d)
{
	uint64_t now;

	if (d->end_ms == UINT64_MAX)
		return VDI_SLICE_MS;
	now = vdi_now_ms();
	if (now >= d->end_ms)
		return 0;
	return d->end_ms - now < VDI_SLICE_MS ? (uint32_t)(d->end_ms - now) : VDI_SLICE_MS;
}

int vdi_wait_slice(uint32_t *seq, uint32_t *waiters, int (*cond)(void *ctx), void *ctx,
                   uint32_t slice_ms)
{
	uint32_t seen;
	int ok;

	/* Waiter half of the wake protocol in barrier.h. */
	vdi_atomic_inc(waiters);
	seen = vdi_load_acquire(seq);
	ok = cond(ctx);
	if (!ok && slice_ms)
		vdi_futex_wait(seq, seen, slice_ms);
	vdi_atomic_dec(waiters);
	return ok || cond(ctx);
}

/* ------------------------------------------------------------------ */
/* processes */

static uint64_t proc_start_time(int32_t pid, char *state)
{
	char path[64], buf[1024];
	ssize_t n;
	int fd;
	char *p;
	int field;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* comm may hold spaces and ')': fields restart after the last ')'. */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return 0;
	*state = p[2];
	p += 2;
	for (field = 3; field < 22 && p; field++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	return p ? strtoull(p, NULL, 10) : 0;
}

void vdi_proc_self(struct vdi_shm_proc *p)
{
	int32_t pid = (int32_t)getpid();
	char state;

	/* Start time first, pid last with release: a reader that sees the
	 * pid (acquire in vdi_shm_proc_alive) sees its start time, so a
	 * live process never looks dead while being recorded. */
	vdi_store_relaxed(&p->start_time, proc_start_time(pid, &state));
	vdi_store_release(&p->pid, pid);
}

static int proc_alive(int32_t pid, uint64_t start_time)
{
	char state = '?';
	uint64_t st;

	if (pid <= 0)
		return 0;
	st = proc_start_time(pid, &state);
	if (!st || st != start_time)
		return 0;
	return state != 'Z' && state != 'X' && state != 'x';
}

int vdi_shm_proc_alive(const struct vdi_shm_proc *p)
{
	/* pid first (acquire, pairs with vdi_proc_self), then its start
	 * time.  A peer that scribbles the pair can only make a process look
	 * dead, which aborts the set: loud, not unsafe. */
	int32_t pid = vdi_load_acquire(&p->pid);

	return proc_alive(pid, vdi_load_relaxed(&p->start_time));
}

/* ------------------------------------------------------------------ */
/* abort and wake-ups */

void vdi_region_wake_all(struct vdi_region *r)
{
	struct vdi_shm_header *h = r->hdr;
	uint32_t i;

	vdi_wake(&h->config_seq, &h->config_waiters);
	vdi_wake(&h->done_seq, &h->done_waiters);
	for (i = 0; i < r->device_count; i++) {
		struct vdi_shm_device *d = vdi_shm_dev(h, i);

		vdi_wake(&d->cmd_seq, &d->cmd_waiters);
	}
}

int vdi_region_abort(struct vdi_region *r, const char *fmt, ...)
{
	struct vdi_shm_header *h = r->hdr;
	uint32_t zero = 0;
	int won;
	va_list ap;

	won = vdi_cas(&h->abort, &zero, 1u);
	if (won) {
		char text[sizeof(h->abort_reason)];
		size_t i;

		/* Only the winner writes the reason; readers wait for
		 * reason_ready (store-release below pairs with the acquire
		 * in vdi_region_reason).  A hostile peer may scribble
		 * reason_ready early, so the bytes are stored (and loaded)
		 * one by one with relaxed atomics: a torn text, never a
		 * data race. */
		va_start(ap, fmt);
		vsnprintf(text, sizeof(text), fmt, ap);
		va_end(ap);
		for (i = 0; i < sizeof(text); i++)
			__atomic_store_n(&h->abort_reason[i], text[i], __ATOMIC_RELAXED);
		vdi_store_release(&h->reason_ready, 1u);
		vdi_log(VDI_LOG_INFO, "set '%s': aborted: %s", r->name, text);
	}
	vdi_region_wake_all(r);
	return won;
}

int vdi_region_aborted(const struct vdi_region *r)
{
	/* Pairs with the CAS in vdi_region_abort; any non-zero value is
	 * an abort, so a scribbled word fails loudly. */
	return vdi_load_acquire(&r->hdr->abort) != 0;
}

void vdi_region_reason(const struct vdi_region *r, char *buf, size_t len)
{
	size_t i;

	buf[0] = '\0';
	if (!len || !vdi_load_acquire(&r->hdr->reason_ready))
		return;
	/* Copy byte by byte up to a NUL: the text is untrusted. */
	for (i = 0; i + 1 < len && i < VDI_REASON_MAX; i++) {
		char ch = __atomic_load_n(&r->hdr->abort_reason[i], __ATOMIC_RELAXED);

		if (!ch)
			break;
		buf[i] = (ch >= 0x20 && ch < 0x7f) ? ch : '?';
	}
	buf[i] = '\0';
}

/* Finds the device called name, or names a free slot after it (D15).
 * Called with the region lock held.  Returns the index or a VD_E_*. */
int vdi_region_find_device(struct vdi_region *r, const char *name, const char *side)
{
	uint32_t i;
	int free_slot = -1;

	for (i = 0; i < r->device_count; i++) {
		struct vdi_shm_device *sd = vdi_shm_dev(r->hdr, i);

		if (!vdi_load_acquire(&sd->named)) {
			if (free_slot < 0)
				free_slot = (int)i;
			continue;
		}
		if (!strncmp(sd->name, name, sizeof(sd->name)))
			return (int)i;
	}
	if (free_slot < 0)
		return vdi_fail(
			VD_E_INVALID,
			"%s OpenDevice: set '%s' has no device named '%s' (all %u are named)", side,
			r->name, name, r->device_count);
	snprintf(vdi_shm_dev(r->hdr, (uint32_t)free_slot)->name, VDI_MAX_NAME + 1, "%s", name);
	/* Release: the name is complete before anyone can match it. */
	vdi_store_release(&vdi_shm_dev(r->hdr, (uint32_t)free_slot)->named, 1u);
	return free_slot;
}

/* ------------------------------------------------------------------ */
/* the set lock */

#define VDI_LOCK_LIMIT_MS 2000u

int vdi_region_lock(struct vdi_region *r)
{
	uint32_t *w = &r->hdr->lock;
	uint32_t self = (uint32_t)getpid();
	uint64_t start = vdi_now_ms();

	for (;;) {
		uint32_t owner = 0;

		if (vdi_cas(w, &owner, self))
			return 0;
		/* A dead owner (pid gone) leaves the lock: take it over.  The
		 * sections it guards are short stores that stay consistent
		 * when cut anywhere (names are marked valid last). */
		if (owner != self && kill((pid_t)owner, 0) < 0 && errno == ESRCH) {
			if (vdi_cas(w, &owner, self))
				return 0;
			continue;
		}
		if (vdi_now_ms() - start > VDI_LOCK_LIMIT_MS)
			return vdi_fail(VD_E_PROTOCOL,
			                "set '%s': lock held by pid %u for more than %u ms",
			                r->name, owner, VDI_LOCK_LIMIT_MS);
		vdi_atomic_inc(&r->hdr->lock_waiters);
		vdi_futex_wait(w, owner, 10);
		vdi_atomic_dec(&r->hdr->lock_waiters);
	}
}

void vdi_region_unlock(struct vdi_region *r)
{
	uint32_t self = (uint32_t)getpid();

	/* Release only our own lock: if a peer scribbled over it, leave it. */
	if (vdi_cas(&r->hdr->lock, &self, 0u) && vdi_load_acquire(&r->hdr->lock_waiters))
		vdi_futex_wake_all(&r->hdr->lock);
}

/* ------------------------------------------------------------------ */
/* mapping helpers */

static void region_names(struct vdi_region *r, const char *instance, const char *name)
{
	snprintf(r->instance, sizeof(r->instance), "%s", instance);
	snprintf(r->name, sizeof(r->name), "%s", name);
	snprintf(r->shm_name, sizeof(r->shm_name), "/vdi.%s.%s", instance, name);
}

static void area_name(const struct vdi_region *r, uint32_t k, char *buf, size_t len)
{
	snprintf(buf, len, "/vdi-b%u.%s.%s", k, r->instance, r->name);
}

/* Opens area k of r (flags O_RDONLY or O_RDWR) and leaves its name in buf
 * for messages; the fd, or -1 with errno. */
static int area_open(const struct vdi_region *r, uint32_t k, int flags, char *buf, size_t len)
{
	area_name(r, k, buf, len);
	return shm_open(buf, flags | O_CLOEXEC, 0);
}

void vdi_region_unmap(struct vdi_region *r)
{
	if (r->hdr)
		munmap(r->hdr, r->size);
	r->hdr = NULL;
	r->size = 0;
}

static int map_fd(int fd, size_t size, const char *shm_name, void **out)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		return vdi_fail_errno(errno, "cannot map '%s' (%zu bytes)", shm_name, size);
	*out = p;
	return 0;
}

/* Reserves shm space so a full /dev/shm fails here with VD_E_MEMORY, not
 * later with SIGBUS on first touch. */
static int size_fd(int fd, size_t size, const char *shm_name)
{
	int err;

	if (ftruncate(fd, (off_t)size) < 0)
		return vdi_fail_errno(errno, "cannot size '%s' to %zu bytes", shm_name, size);
	err = posix_fallocate(fd, 0, (off_t)size);
	if (err && err != EOPNOTSUPP && err != EINVAL)
		return vdi_fail_errno(err, "cannot reserve %zu bytes for '%s'", size, shm_name);
	return 0;
}

static int set_access(int fd, uint32_t mode, gid_t gid, const char *shm_name)
{
	if (mode == 0660 && fchown(fd, (uid_t)-1, gid) < 0)
		return vdi_fail_errno(errno, "cannot give '%s' to group %u", shm_name,
		                      (unsigned)gid);
	if (fchmod(fd, mode) < 0)
		return vdi_fail_errno(errno, "cannot set mode %o on '%s'", mode, shm_name);
	return 0;
}

/* ------------------------------------------------------------------ */
/* the control region */

/* Unlinks the control region and every area name of r.  Returns 0, or
 * the first errno other than ENOENT (every name is still tried). */
static int unlink_names(const struct vdi_region *r)
{
	char area[300];
	uint32_t k;
	int err = 0;

	if (shm_unlink(r->shm_name) < 0 && errno != ENOENT)
		err = errno;
	for (k = 0; k < VDI_MAX_AREAS; k++) {
		area_name(r, k, area, sizeof(area));
		if (shm_unlink(area) < 0 && errno != ENOENT && !err)
			err = errno;
	}
	return err;
}

/* An object younger than this may be one a process is creating now. */
#define VDI_YOUNG_S 2

static int young(const struct stat *st)
{
	return time(NULL) - st->st_ctime < VDI_YOUNG_S;
}

/* Size of shm object `name`, 0 if it cannot be read. */
static uint64_t object_bytes(const char *name)
{
	struct stat st;
	int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
	uint64_t n = 0;

	if (fd >= 0) {
		if (fstat(fd, &st) == 0)
			n = (uint64_t)st.st_size;
		close(fd);
	}
	return n;
}

/* Reads what the control region holds (D16) into p; the header is
 * untrusted, and only compared and reported. */
static void probe_header(const struct vdi_region *r, const struct vdi_shm_header *h,
                         const struct stat *st, struct vdi_shm_probe *p)
{
	char area[300];
	uint32_t k;

	if (vdi_load_acquire(&h->magic) != VDI_SHM_MAGIC) {
		p->state = young(st) ? VDI_PROBE_LIVE : VDI_PROBE_DEBRIS;
		return;
	}
	/* The creator, or a server that has not closed, may still use it. */
	if (vdi_shm_proc_alive(&h->creator) ||
	    (!vdi_load_acquire(&h->server_closed) && vdi_shm_proc_alive(&h->server)))
		p->state = VDI_PROBE_LIVE;
	else
		p->state = VDI_PROBE_STALE;
	p->creator_pid = vdi_load_relaxed(&h->creator.pid);
	p->server_pid = vdi_load_relaxed(&h->server.pid);
	memcpy(p->set_id, h->set_id, sizeof(p->set_id));
	for (k = 0; k < VDI_MAX_AREAS; k++) {
		area_name(r, k, area, sizeof(area));
		p->bytes += object_bytes(area);
	}
}

static int probe_control(const struct vdi_region *r, struct vdi_shm_probe *p)
{
	struct vdi_shm_header *h;
	struct stat st;
	int fd, err;

	fd = shm_open(r->shm_name, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return vdi_fail_errno(errno, "cannot inspect set '%s' ('%s')", r->name,
		                      r->shm_name);
	if (fstat(fd, &st) < 0) {
		err = errno;
		close(fd);
		return vdi_fail_errno(err, "cannot inspect set '%s' ('%s')", r->name, r->shm_name);
	}
	p->bytes = (uint64_t)st.st_size;
	if ((size_t)st.st_size < sizeof(*h)) {
		close(fd);
		p->state = young(&st) ? VDI_PROBE_LIVE : VDI_PROBE_DEBRIS;
		return 0;
	}
	h = mmap(NULL, sizeof(*h), PROT_READ, MAP_SHARED, fd, 0);
	err = errno;
	close(fd);
	if (h == MAP_FAILED)
		return vdi_fail_errno(err, "cannot inspect set '%s' ('%s')", r->name, r->shm_name);
	probe_header(r, h, &st, p);
	munmap(h, sizeof(*h));
	return 0;
}

/* An area belongs to the set of its name while that set's control
 * region exists; without one it is an orphan, once it is not young. */
static int probe_area(const struct vdi_region *r, uint32_t k, struct vdi_shm_probe *p)
{
	char name[300];
	struct stat st;
	int fd, err;

	fd = area_open(r, k, O_RDONLY, name, sizeof(name));
	if (fd < 0)
		return vdi_fail_errno(errno, "cannot inspect buffer area '%s'", name);
	err = fstat(fd, &st) < 0 ? errno : 0;
	close(fd);
	if (err)
		return vdi_fail_errno(err, "cannot inspect buffer area '%s'", name);
	p->bytes = (uint64_t)st.st_size;
	fd = shm_open(r->shm_name, O_RDONLY | O_CLOEXEC, 0);
	if (fd >= 0 || errno != ENOENT)
		p->state = VDI_PROBE_LIVE; /* its set exists: the set decides */
	else
		p->state = young(&st) ? VDI_PROBE_LIVE : VDI_PROBE_ORPHAN;
	if (fd >= 0)
		close(fd);
	return 0;
}

int vdi_shm_probe(const char *instance, const char *name, int area, struct vdi_shm_probe *p)
{
	struct vdi_region r;

	memset(p, 0, sizeof(*p));
	memset(&r, 0, sizeof(r));
	region_names(&r, instance, name);
	if (area >= VDI_MAX_AREAS)
		return vdi_fail(VD_E_INVALID, "set '%s': there is no buffer area %d", name, area);
	return area < 0 ? probe_control(&r, p) : probe_area(&r, (uint32_t)area, p);
}

int vdi_shm_reclaim(const char *instance, const char *name, int area,
                    const struct vdi_shm_probe *seen)
{
	struct vdi_shm_probe now;
	struct vdi_region r;
	char obj[300];
	int rc, err;

	rc = vdi_shm_probe(instance, name, area, &now);
	if (rc)
		return rc;
	if (now.state == VDI_PROBE_LIVE || now.state != seen->state ||
	    (now.state == VDI_PROBE_STALE && memcmp(now.set_id, seen->set_id, sizeof(now.set_id))))
		return vdi_fail(VD_E_BUSY, "set '%s' (instance %s) is in use again; it is kept",
		                name, instance);
	memset(&r, 0, sizeof(r));
	region_names(&r, instance, name);
	/* Between the probe and the unlink a process could make the name
	 * anew: a window of a few system calls, as for Create's own
	 * reclaim (D16); the set id check above narrows it for sets. */
	if (area >= 0) {
		area_name(&r, (uint32_t)area, obj, sizeof(obj));
		err = shm_unlink(obj) < 0 ? errno : 0;
	} else {
		snprintf(obj, sizeof(obj), "%s", r.shm_name);
		err = unlink_names(&r);
	}
	if (err)
		return vdi_fail_errno(err, "cannot remove '%s'", obj);
	vdi_log(VDI_LOG_INFO, "set '%s' (instance %s): removed '%s', left by dead processes", name,
	        instance, obj);
	return 0;
}

/* The existing object under our name: is it a set some live process
 * may use?  1 = live (busy), 0 = stale or gone (may be removed), <0 =
 * error. */
static int existing_is_live(struct vdi_region *r)
{
	struct vdi_shm_probe p;
	int rc;

	memset(&p, 0, sizeof(p));
	rc = probe_control(r, &p);
	if (rc == VD_E_INVALID) /* ENOENT: removed meanwhile */
		return 0;
	if (rc)
		return rc;
	return p.state == VDI_PROBE_LIVE;
}

static int open_exclusive(struct vdi_region *r, uint32_t mode)
{
	int fd, live, attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		fd = shm_open(r->shm_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
		if (fd >= 0)
			return fd;
		if (errno != EEXIST)
			return vdi_fail_errno(errno, "cannot create set '%s'", r->name);
		live = existing_is_live(r);
		if (live < 0)
			return live;
		if (live)
			return vdi_fail(VD_E_BUSY,
			                "set '%s' already exists and its creator is alive",
			                r->name);
		vdi_log(VDI_LOG_INFO, "set '%s': reclaiming objects left by dead processes",
		        r->name);
		unlink_names(r);
	}
	return vdi_fail(VD_E_BUSY, "set '%s': name still taken after removing a stale set",
	                r->name);
}

static void init_header(struct vdi_region *r, const VDConfig *cfg, uint32_t mode, gid_t gid)
{
	struct vdi_shm_header *h = r->hdr;
	uint32_t i;

	/* The region is fresh (zero-filled) and not yet published: plain
	 * stores are fine until magic is stored with release. */
	h->version = VDI_SHM_VERSION;
	h->header_size = sizeof(*h);
	h->device_size = sizeof(struct vdi_shm_device);
	h->total_size = r->size;
	memcpy(h->set_id, r->set_id, sizeof(h->set_id));
	snprintf(h->instance, sizeof(h->instance), "%s", r->instance);
	snprintf(h->name, sizeof(h->name), "%s", r->name);
	h->mode = mode;
	h->gid = (uint32_t)gid;
	h->client_cfg = *cfg;
	h->client_cfg.blockSize = 0;
	h->client_cfg.maxIODepth = 0;
	h->client_cfg.maxTransferSize = 0;
	h->client_cfg.bufferAreaSize = 0;
	h->phase = VDI_SET_CREATED;
	vdi_proc_self(&h->creator);
	for (i = 0; i < cfg->deviceCount; i++)
		vdi_shm_dev(h, i)->server_state = VDI_DEV_S_UNOPENED;
	/* Device 0 carries the set's name (spec 1.2). */
	snprintf(vdi_shm_dev(h, 0)->name, VDI_MAX_NAME + 1, "%s", r->name);
	vdi_shm_dev(h, 0)->named = 1;
	vdi_store_release(&h->magic, VDI_SHM_MAGIC);
}

int vdi_region_create(struct vdi_region *r, const char *instance, const char *name,
                      const VDConfig *cfg, uint32_t mode, gid_t gid)
{
	void *p = NULL;
	int fd, rc;

	memset(r, 0, sizeof(*r));
	region_names(r, instance, name);
	r->device_count = cfg->deviceCount;
	r->size = vdi_shm_region_size(cfg->deviceCount);
	if (getrandom(r->set_id, sizeof(r->set_id), 0) != sizeof(r->set_id))
		return vdi_fail_errno(errno, "cannot draw a set id");
	fd = open_exclusive(r, mode);
	if (fd < 0)
		return fd;
	rc = set_access(fd, mode, gid, r->shm_name);
	if (!rc)
		rc = size_fd(fd, r->size, r->shm_name);
	if (!rc)
		rc = map_fd(fd, r->size, r->shm_name, &p);
	close(fd);
	if (rc) {
		shm_unlink(r->shm_name);
		return rc;
	}
	r->hdr = p;
	init_header(r, cfg, mode, gid);
	return 0;
}

static int validate_header(struct vdi_region *r, size_t file_size)
{
	struct vdi_shm_header *h = r->hdr;
	uint32_t n;
	uint32_t magic = vdi_load_acquire(&h->magic);

	if (!magic) /* the creator has not published it yet */
		return vdi_fail(VD_E_INVALID, "set '%s' is not ready (being created)", r->name);
	if (magic != VDI_SHM_MAGIC)
		return vdi_fail(VD_E_PROTOCOL, "set '%s': bad magic in '%s'", r->name, r->shm_name);
	if (h->version != VDI_SHM_VERSION || h->header_size != sizeof(*h) ||
	    h->device_size != sizeof(struct vdi_shm_device))
		return vdi_fail(
			VD_E_PROTOCOL,
			"set '%s': layout version %u (header %u, device %u bytes) is not ours (%u, %zu, %zu)",
			r->name, h->version, h->header_size, h->device_size, VDI_SHM_VERSION,
			sizeof(*h), sizeof(struct vdi_shm_device));
	n = h->client_cfg.deviceCount;
	if (n < 1 || n > VDI_MAX_DEVICES)
		return vdi_fail(VD_E_PROTOCOL, "set '%s': device count %u in shared memory",
		                r->name, n);
	if (h->total_size != vdi_shm_region_size(n) || file_size < vdi_shm_region_size(n))
		return vdi_fail(
			VD_E_PROTOCOL,
			"set '%s': header says %llu bytes and the file has %zu; %zu expected for %u devices",
			r->name, (unsigned long long)h->total_size, file_size,
			vdi_shm_region_size(n), n);
	if (strncmp(h->name, r->name, sizeof(h->name)) ||
	    strncmp(h->instance, r->instance, sizeof(r->instance)))
		return vdi_fail(VD_E_PROTOCOL, "set '%s': the region names another set", r->name);
	r->device_count = n;
	memcpy(r->set_id, h->set_id, sizeof(r->set_id));
	return 0;
}

int vdi_region_open(struct vdi_region *r, const char *instance, const char *name)
{
	struct stat st;
	void *p = NULL;
	int fd, rc;

	memset(r, 0, sizeof(*r));
	region_names(r, instance, name);
	fd = shm_open(r->shm_name, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0) {
		if (errno == ENOENT)
			return vdi_fail(VD_E_INVALID,
			                "no virtual device set named '%s' (instance %s)", name,
			                instance);
		return vdi_fail_errno(errno, "cannot open set '%s'", name);
	}
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(struct vdi_shm_header)) {
		close(fd);
		return vdi_fail(VD_E_INVALID, "set '%s' is not ready (being created)", name);
	}
	rc = map_fd(fd, (size_t)st.st_size, r->shm_name, &p);
	close(fd);
	if (rc)
		return rc;
	r->hdr = p;
	r->size = (size_t)st.st_size;
	rc = validate_header(r, (size_t)st.st_size);
	if (rc)
		vdi_region_unmap(r);
	return rc;
}

void vdi_region_unlink(struct vdi_region *r)
{
	struct vdi_shm_header *h;
	struct stat st;
	int fd, same = 0;

	/* Remove the names only if they are still ours: after a fast Close
	 * and re-Create, the name may already belong to a new set. */
	fd = shm_open(r->shm_name, O_RDONLY | O_CLOEXEC, 0);
	if (fd >= 0) {
		if (fstat(fd, &st) == 0 && (size_t)st.st_size >= sizeof(*h)) {
			h = mmap(NULL, sizeof(*h), PROT_READ, MAP_SHARED, fd, 0);
			if (h != MAP_FAILED) {
				same = !memcmp(h->set_id, r->set_id, sizeof(r->set_id));
				munmap(h, sizeof(*h));
			}
		}
		close(fd);
	} else if (errno == ENOENT) {
		same = 1; /* control gone: still remove our areas */
	}
	if (same)
		unlink_names(r);
}

/* ------------------------------------------------------------------ */
/* buffer areas */

/* Maps fd at an address aligned to VDI_MAX_ALIGNMENT so that every
 * buffer alignment up to 64 KiB holds in every process. */
static int map_aligned(int fd, size_t size, const char *shm_name, struct vdi_area_map *m)
{
	size_t reserve = size + VDI_MAX_ALIGNMENT;
	uint8_t *res, *base;

	res = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return vdi_fail_errno(errno, "cannot reserve address space for '%s'", shm_name);
	base = (uint8_t *)(((uintptr_t)res + VDI_MAX_ALIGNMENT - 1) &
	                   ~(uintptr_t)(VDI_MAX_ALIGNMENT - 1));
	if (mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
		int err = errno;

		munmap(res, reserve);
		return vdi_fail_errno(err, "cannot map '%s' (%zu bytes)", shm_name, size);
	}
	m->base = base;
	m->size = size;
	m->reserve = res;
	m->reserve_size = reserve;
	return 0;
}

int vdi_area_create(struct vdi_region *r, uint32_t k, size_t size, struct vdi_area_map *m)
{
	char name[300];
	int fd, rc;
	uint32_t mode = r->hdr->mode == 0660 ? 0660 : 0600;

	area_name(r, k, name, sizeof(name));
	shm_unlink(name); /* debris of a dead set of the same name */
	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return vdi_fail_errno(errno, "set '%s': cannot create buffer area %u", r->name, k);
	rc = set_access(fd, mode, (gid_t)r->hdr->gid, name);
	if (!rc)
		rc = size_fd(fd, size, name);
	if (!rc)
		rc = map_aligned(fd, size, name, m);
	close(fd);
	if (rc)
		shm_unlink(name);
	return rc;
}

int vdi_area_map(struct vdi_region *r, uint32_t k, struct vdi_area_map *m)
{
	char name[300];
	struct stat st;
	int fd, rc;

	fd = area_open(r, k, O_RDWR, name, sizeof(name));
	if (fd < 0)
		return vdi_fail_errno(errno, "set '%s': cannot open buffer area %u", r->name, k);
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		close(fd);
		return vdi_fail(VD_E_PROTOCOL, "set '%s': buffer area %u is empty", r->name, k);
	}
	rc = map_aligned(fd, (size_t)st.st_size, name, m);
	close(fd);
	return rc;
}

void vdi_area_unmap(struct vdi_area_map *m)
{
	if (m->reserve)
		munmap(m->reserve, m->reserve_size);
	memset(m, 0, sizeof(*m));
}
