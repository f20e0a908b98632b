/* SPDX-License-Identifier: MIT */
/*
 * info.c - looking at sets from outside: `vdi ls`, status files, `vdi
 * abort`.  Every field comes from shared memory written by processes we
 * do not control: strings are copied bounded and sanitised, numbers are
 * reported as found (they are statistics, never used to index memory).
 */
#include <dirent.h>
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

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

int vdi_set_info_get(const char *instance, const char *name, struct vdi_set_info *info)
{
	struct vdi_region r;
	const char *inst;
	int rc;

	vdi_clear_error();
	if (!info)
		return vdi_fail(VD_E_INVALID, "set info: NULL argument");
	rc = vdi_check_set_name(name, "set");
	if (!rc)
		rc = vdi_check_instance(instance, &inst);
	if (!rc)
		rc = vdi_region_open(&r, inst, name);
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
	const char *inst;
	int rc;

	vdi_clear_error();
	rc = vdi_check_set_name(name, "set");
	if (!rc)
		rc = vdi_check_instance(instance, &inst);
	if (!rc)
		rc = vdi_region_open(&r, inst, name);
	if (rc)
		return rc;
	vdi_region_abort(&r, "aborted from outside by pid %d", (int)getpid());
	vdi_region_unmap(&r);
	return 0;
}

/* "vdi.<instance>.<set>": the instance has no '.', so the first '.'
 * after the prefix ends it. */
static int parse_shm_name(const char *file, char *inst, size_t ilen, const char **name)
{
	const char *p, *dot;

	if (strncmp(file, "vdi.", 4))
		return -1;
	p = file + 4;
	dot = strchr(p, '.');
	if (!dot || (size_t)(dot - p) >= ilen || dot == p)
		return -1;
	memcpy(inst, p, (size_t)(dot - p));
	inst[dot - p] = '\0';
	*name = dot + 1;
	return 0;
}

int vdi_list_sets(int (*fn)(void *ctx, const struct vdi_set_info *info), void *ctx)
{
	struct vdi_set_info info;
	struct dirent *e;
	DIR *dir;
	int rc = 0;

	vdi_clear_error();
	if (!fn)
		return vdi_fail(VD_E_INVALID, "list sets: NULL callback");
	dir = opendir("/dev/shm");
	if (!dir)
		return vdi_fail_errno(errno, "cannot list /dev/shm");
	while (!rc && (e = readdir(dir))) {
		char inst[VDI_MAX_INSTANCE + 1];
		const char *name;

		if (parse_shm_name(e->d_name, inst, sizeof(inst), &name))
			continue;
		/* Sets we may not open, or that are half-created, are skipped. */
		if (vdi_set_info_get(inst, name, &info))
			continue;
		rc = fn(ctx, &info);
	}
	closedir(dir);
	vdi_clear_error();
	return rc;
}
