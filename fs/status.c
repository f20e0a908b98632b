/* SPDX-License-Identifier: MIT */
/*
 * status.c - the text of MOUNT/<set>/.status and MOUNT/.status.
 *
 * One "key: value" line per item so that `grep '^state:'` and `sed -n
 * 's/^bytes: //p'` work; the device lines are "device: <name> <state>
 * <bytes>".  A snapshot is taken when the file is opened (the handle
 * keeps it), so a reader sees one consistent text.  After the set's
 * client was closed, the engine's last words (vdi_set_info) come from
 * the snapshot taken just before.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdifs.h"

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) FS_PRINTF(2, 3);
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->p && (size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		char *np = realloc(b->p, b->cap + (size_t)n + 1024);

		if (!np)
			return;
		b->p = np;
		b->cap += (size_t)n + 1024;
	}
}

static const char *set_state_name(enum fs_set_state s)
{
	static const char *const names[] = {
		[SET_WAITING] = "waiting",
		[SET_CONFIGURED] = "active",
		[SET_DONE] = "done",
		[SET_FAILED] = "failed",
	};
	return names[s];
}

static const char *dev_state_name(const struct fs_dev *d)
{
	if (d->state == DEV_OPEN)
		return d->writer ? "writing" : (d->at_eof ? "eof" : "reading");
	if (d->state == DEV_DONE)
		return "done";
	if (d->state == DEV_FAILED)
		return "failed";
	return "idle";
}

/* Seconds from the first to the last data of a stream (to now while it
 * streams), and the rate over them in MB/s (10^6 bytes). */
static double span_s(uint64_t first, uint64_t last)
{
	return first && last > first ? (double)(last - first) / 1000.0 : 0;
}

static double rate_mb(uint64_t bytes, double secs)
{
	return secs > 0 ? (double)bytes / secs / 1e6 : 0;
}

/* Removable media (media.c): "medium: <dev> <m> <file> <what>". */
static void status_medium_locked(struct sbuf *b, const struct fs_dev *d)
{
	char file[VDI_MAX_NAME + 24];

	if (d->medium)
		snprintf(file, sizeof(file), "%s.%u", d->name, d->medium);
	else
		snprintf(file, sizeof(file), "%s", d->name);
	if (d->between || d->medium_end)
		sb_printf(b, "medium: %s %u %s ended, next %s.%u\n", d->name, d->medium, file,
		          d->name, d->medium + 1);
	else
		sb_printf(b, "medium: %s %u %s %s\n", d->name, d->medium, file, dev_state_name(d));
}

/* One line per device: name, state, bytes, rate, elapsed.  No total and
 * no ETA: a device is a stream whose length only the server knows. */
static void status_devices_locked(struct sbuf *b, struct fs_set *set, uint64_t *bytes, uint64_t *t0,
                                  uint64_t *t1)
{
	uint64_t now = fs_now_ms();
	uint32_t k;

	for (k = 0; k <= set->cfg.devices; k++) {
		struct fs_dev *d = &set->dev[k];
		uint64_t pos = __atomic_load_n(&d->pos, __ATOMIC_RELAXED);
		uint64_t tf = __atomic_load_n(&d->t_first, __ATOMIC_RELAXED);
		uint64_t tl = __atomic_load_n(&d->t_last, __ATOMIC_RELAXED);
		double secs = span_s(tf, d->state == DEV_OPEN && !d->at_eof ? now : tl);

		if (fs_is_tar(set, (int)k) && d->state == DEV_IDLE)
			continue; /* the tar file: shown once used */

		sb_printf(b, "device: %s %s %llu bytes, %.1f MB/s, %.3f s\n", d->name,
		          dev_state_name(d), (unsigned long long)pos, rate_mb(pos, secs), secs);
		if (!fs_is_tar(set, (int)k) && (set->cfg.features & VDF_Removable))
			status_medium_locked(b, d);
		*bytes += pos;
		if (tf && (!*t0 || tf < *t0))
			*t0 = tf;
		if (tl > *t1)
			*t1 = tl;
	}
}

static void status_set_locked(struct sbuf *b, struct fs_set *set)
{
	struct vdi_set_info info;
	char cfg[PATH_MAX + 1400], feat[64], snap[400];
	uint64_t bytes = 0, t0 = 0, t1 = 0, now = fs_now_ms();
	double secs, rate;
	int have = 0, live = 0;

	if (set->client && !vdi_bset_info(set->client, &info))
		have = live = 1;
	else if (set->have_info)
		info = set->last_info, have = 1;
	fs_cfg_format(&set->cfg, cfg, sizeof(cfg));
	sb_printf(b, "set: %s\nstate: %s\n", set->name, set_state_name(set->state));
	sb_printf(b, "engine: %s\n", have ? vdi_set_state_name(info.state) : "closed");
	sb_printf(b, "backend: %s\n", vdi_backend_name(set->backend));
	sb_printf(b, "config: %s\n", cfg);
	if (set->state != SET_WAITING && set->vcfg.maxTransferSize) {
		fs_features_format(set->vcfg.features & ~(uint32_t)(VDF_WriteMedia | VDF_ReadMedia |
		                                                    VDF_CompleteEnabled),
		                   feat, sizeof(feat));
		sb_printf(b, "operation: %s\n",
		          set->vcfg.features & VDF_WriteMedia  ? "backup"
		          : set->vcfg.features & VDF_ReadMedia ? "restore"
		                                               : "unknown");
		sb_printf(b, "blocksize: %u\nmaxtransfersize: %u\nfeatures: 0x%x %s%s\n",
		          set->vcfg.blockSize, set->vcfg.maxTransferSize, set->vcfg.features, feat,
		          set->vcfg.features & VDF_CompleteEnabled ? " complete-enabled" : "");
	}
	/* alive/gone only while the set is open: a snapshot would lie */
	if (vdi_backend_is_sqlvdi(set->backend))
		sb_printf(b, "server: unknown (the sqlvdi backend cannot see it)\n");
	else
		sb_printf(b, "server: %d%s\n", have ? (int)info.server_pid : 0,
		          live && info.server_pid ? (info.server_alive ? " alive" : " gone") : "");
	if (fs_snapshot_configured(&set->cfg)) {
		fs_snapshot_status_locked(set, snap, sizeof(snap));
		sb_printf(b, "snapshot: %s\n", snap);
	}
	sb_printf(b, "devices: %u\n", set->cfg.devices);
	status_devices_locked(b, set, &bytes, &t0, &t1);
	if (set->state == SET_CONFIGURED)
		t1 = now;
	secs = span_s(t0, t1);
	rate = rate_mb(bytes, secs);
	sb_printf(b, "bytes: %llu\nelapsed: %.3f s\nrate: %.1f MB/s\n", (unsigned long long)bytes,
	          secs, rate);
	sb_printf(b, "last-error: %s\n", set->last_error[0] ? set->last_error : "none");
}

char *fs_set_status(struct fs_set *set, size_t *len)
{
	struct sbuf b = { 0 };

	pthread_mutex_lock(&set->lock);
	status_set_locked(&b, set);
	pthread_mutex_unlock(&set->lock);
	*len = b.len;
	return b.p;
}

char *fs_root_status(struct vdifs *fs, size_t *len)
{
	struct sbuf b = { 0 };
	struct fs_set **v;
	char cfg[PATH_MAX + 1400];
	int i, n;

	fs_cfg_format(&fs->defaults, cfg, sizeof(cfg));
	pthread_mutex_lock(&fs->lock);
	sb_printf(&b, "mount-defaults: %s\nlast-error: %s\n", cfg,
	          fs->last_error[0] ? fs->last_error : "none");
	pthread_mutex_unlock(&fs->lock);
	n = fs_sets_snapshot(fs, &v);
	for (i = 0; i < n; i++) {
		sb_printf(&b, "\n");
		pthread_mutex_lock(&v[i]->lock);
		status_set_locked(&b, v[i]);
		pthread_mutex_unlock(&v[i]->lock);
		fs_set_put(v[i]);
	}
	free(v);
	*len = b.len;
	return b.p;
}
