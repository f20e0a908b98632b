/* SPDX-License-Identifier: MIT */
/*
 * info.c - looking at sets from outside: `vdi ls`, status files, `vdi
 * abort`, and the leftovers of dead processes for `vdi doctor` (the rule
 * that tells them is shm.c's, D16).  Every field comes from shared
 * memory written by processes we do not control: strings are copied
 * bounded and sanitised, numbers are reported as found (they are
 * statistics, never used to index memory).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "barrier.h"
#include "internal.h"
#include "shm.h"
#include "validate.h"

/* The set as an outsider sees it: the server's phase, overridden by an
 * abort, or by the creator's Close before the end. */
static enum vdi_set_state observed_state(const struct vdi_region *r)
{
	uint32_t ph = vdi_load_acquire(&r->hdr->phase);

	if (vdi_region_aborted(r))
		return VDI_SET_ABORTED;
	if (vdi_load_acquire(&r->hdr->client_closed) && ph != VDI_SET_TERMINATED)
		return VDI_SET_CLOSED;
	if (ph < VDI_SET_CREATED || ph > VDI_SET_TERMINATED)
		return VDI_SET_CORRUPT; /* no phase the server writes */
	return (enum vdi_set_state)ph;
}

static void fill_info(const struct vdi_region *r, struct vdi_set_info *info)
{
	const struct vdi_shm_header *h = r->hdr;
	uint32_t i;

	memset(info, 0, sizeof(*info));
	snprintf(info->instance, sizeof(info->instance), "%s", r->instance);
	snprintf(info->name, sizeof(info->name), "%s", r->name);
	info->state = observed_state(r);
	info->device_count = r->device_count;
	info->features = vdi_load_relaxed(&h->final_cfg.features);
	if (!info->features)
		info->features = h->client_cfg.features;
	info->block_size = vdi_load_relaxed(&h->final_cfg.blockSize);
	info->max_transfer_size = vdi_load_relaxed(&h->final_cfg.maxTransferSize);
	for (i = 0; i < r->device_count; i++) {
		const struct vdi_shm_device *sd = vdi_shm_dev(r->hdr, i);

		info->bytes += vdi_load_relaxed(&sd->bytes);
		info->commands += vdi_load_relaxed(&sd->commands);
	}
	info->client_pid = vdi_load_relaxed(&h->creator.pid);
	info->server_pid = vdi_load_relaxed(&h->server.pid);
	info->client_alive = vdi_shm_proc_alive(&h->creator);
	info->server_alive = info->server_pid && vdi_shm_proc_alive(&h->server);
	vdi_region_reason(r, info->abort_reason, sizeof(info->abort_reason));
}

/* Maps the set called name of instance (NULL = default) into r. */
static int open_by_name(const char *instance, const char *name, struct vdi_region *r)
{
	const char *inst;
	int rc = vdi_check_set_name(name, "set");

	if (!rc)
		rc = vdi_check_instance(instance, &inst);
	if (!rc)
		rc = vdi_region_open(r, inst, name);
	return rc;
}

int vdi_set_info_get(const char *instance, const char *name, struct vdi_set_info *info)
{
	struct vdi_region r;
	int rc;

	vdi_clear_error();
	if (!info)
		return vdi_fail(VD_E_INVALID, "set info: NULL argument");
	rc = open_by_name(instance, name, &r);
	if (rc)
		return rc;
	fill_info(&r, info);
	vdi_region_unmap(&r);
	return 0;
}

int vdi_client_info(struct vdi_client *c, struct vdi_set_info *info)
{
	struct vdi_region *r = vdi_client_region(c);

	vdi_clear_error();
	if (!info)
		return vdi_fail(VD_E_INVALID, "set info: NULL argument");
	if (!r)
		return vdi_fail(VD_E_PROTOCOL, "set info: no set is open on this client object");
	fill_info(r, info);
	return 0;
}

int vdi_set_abort(const char *instance, const char *name)
{
	struct vdi_region r;
	int rc;

	vdi_clear_error();
	rc = open_by_name(instance, name, &r);
	if (rc)
		return rc;
	vdi_region_abort(&r, "aborted from outside by pid %d", (int)getpid());
	vdi_region_unmap(&r);
	return 0;
}

/* ------------------------------------------------------------------ */
/* walking /dev/shm */

/* An object of /dev/shm named like one of a set's: "vdi.<instance>.<set>"
 * (area -1) or "vdi-b<k>.<instance>.<set>" (area k, D27).  The instance
 * has no '.', so the first '.' after the prefix ends it. */
struct shm_object {
	const char *file;
	char instance[VDI_MAX_INSTANCE + 1];
	const char *name;
	int area;
};

static int parse_shm_name(const char *file, struct shm_object *o)
{
	const char *p = file + 4, *dot;
	char *end;

	o->file = file;
	o->area = -1;
	if (!strncmp(file, "vdi-b", 5) && file[5] >= '0' && file[5] <= '9') {
		unsigned long k = strtoul(file + 5, &end, 10);

		if (*end != '.' || k >= VDI_MAX_AREAS)
			return -1;
		o->area = (int)k;
		p = end + 1;
	} else if (strncmp(file, "vdi.", 4)) {
		return -1;
	}
	dot = strchr(p, '.');
	if (!dot || dot == p || (size_t)(dot - p) > VDI_MAX_INSTANCE)
		return -1;
	memcpy(o->instance, p, (size_t)(dot - p));
	o->instance[dot - p] = '\0';
	o->name = dot + 1;
	return *o->name && strlen(o->name) <= VDI_MAX_NAME ? 0 : -1;
}

/* Calls fn for each object of /dev/shm named like a set's; stops at the
 * first non-zero return and returns it. */
static int for_each_object(int (*fn)(void *ctx, const struct shm_object *o), void *ctx)
{
	struct shm_object o;
	struct dirent *e;
	DIR *dir;
	int rc = 0;

	dir = opendir("/dev/shm");
	if (!dir)
		return vdi_fail_errno(errno, "cannot list /dev/shm");
	while (!rc && (e = readdir(dir)))
		if (!parse_shm_name(e->d_name, &o))
			rc = fn(ctx, &o);
	closedir(dir);
	return rc;
}

struct list_ctx {
	int (*sets)(void *ctx, const struct vdi_set_info *info);
	int (*leftovers)(void *ctx, const struct vdi_leftover *l);
	void *ctx;
};

static int list_one_set(void *arg, const struct shm_object *o)
{
	struct list_ctx *lc = arg;
	struct vdi_set_info info;

	/* Areas are not sets; sets we may not open, or that are half
	 * created, are skipped. */
	if (o->area >= 0 || vdi_set_info_get(o->instance, o->name, &info))
		return 0;
	return lc->sets(lc->ctx, &info);
}

int vdi_list_sets(int (*fn)(void *ctx, const struct vdi_set_info *info), void *ctx)
{
	struct list_ctx lc = { .sets = fn, .ctx = ctx };
	int rc;

	vdi_clear_error();
	if (!fn)
		return vdi_fail(VD_E_INVALID, "list sets: NULL callback");
	rc = for_each_object(list_one_set, &lc);
	if (rc >= 0)
		vdi_clear_error();
	return rc;
}

/* ------------------------------------------------------------------ */
/* leftovers (D16) */

static const enum vdi_leftover_kind kind_of[] = {
	[VDI_PROBE_STALE] = VDI_LEFTOVER_SET,
	[VDI_PROBE_DEBRIS] = VDI_LEFTOVER_DEBRIS,
	[VDI_PROBE_ORPHAN] = VDI_LEFTOVER_AREA,
};

static int list_one_leftover(void *arg, const struct shm_object *o)
{
	struct list_ctx *lc = arg;
	struct vdi_shm_probe p;
	struct vdi_leftover l;

	/* What we cannot inspect (gone meanwhile, another user's) is not
	 * ours to judge. */
	if (vdi_shm_probe(o->instance, o->name, o->area, &p) || p.state == VDI_PROBE_LIVE)
		return 0;
	memset(&l, 0, sizeof(l));
	l.kind = kind_of[p.state];
	snprintf(l.object, sizeof(l.object), "%s", o->file);
	snprintf(l.instance, sizeof(l.instance), "%s", o->instance);
	snprintf(l.name, sizeof(l.name), "%s", o->name);
	l.area = o->area;
	l.client_pid = p.creator_pid;
	l.server_pid = p.server_pid;
	l.bytes = p.bytes;
	memcpy(l.set_id, p.set_id, sizeof(l.set_id));
	return lc->leftovers(lc->ctx, &l);
}

int vdi_leftovers_list(int (*fn)(void *ctx, const struct vdi_leftover *l), void *ctx)
{
	struct list_ctx lc = { .leftovers = fn, .ctx = ctx };
	int rc;

	vdi_clear_error();
	if (!fn)
		return vdi_fail(VD_E_INVALID, "list leftovers: NULL callback");
	rc = for_each_object(list_one_leftover, &lc);
	if (rc >= 0)
		vdi_clear_error();
	return rc;
}

int vdi_leftover_remove(const struct vdi_leftover *l)
{
	struct vdi_shm_probe seen;

	vdi_clear_error();
	if (!l)
		return vdi_fail(VD_E_INVALID, "remove leftover: NULL argument");
	memset(&seen, 0, sizeof(seen));
	switch (l->kind) {
	case VDI_LEFTOVER_SET:
		seen.state = VDI_PROBE_STALE;
		memcpy(seen.set_id, l->set_id, sizeof(seen.set_id));
		return vdi_shm_reclaim(l->instance, l->name, -1, &seen);
	case VDI_LEFTOVER_DEBRIS:
		seen.state = VDI_PROBE_DEBRIS;
		return vdi_shm_reclaim(l->instance, l->name, -1, &seen);
	case VDI_LEFTOVER_AREA:
		seen.state = VDI_PROBE_ORPHAN;
		return vdi_shm_reclaim(l->instance, l->name, l->area, &seen);
	}
	return vdi_fail(VD_E_INVALID, "remove leftover: kind %d is none of vdi_leftover_kind",
	                (int)l->kind);
}
