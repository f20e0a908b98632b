/* SPDX-License-Identifier: MIT */
/*
 * snapshot.c - snapshot backups through the mount (issue 13).  The
 * protocol is the stream adapter's (vdi_cstream_on_snapshot: the
 * snapshot commands reach a handler once every command before them
 * completed); here is only who answers:
 *
 *   snapshot_cmd=CMD  the user's own tool: vdi_snapshot_run runs
 *                     /bin/sh -c CMD with VDI_SET, VDI_DEVICE, VDI_PHASE
 *                     and VDI_FILES (a `cp --reflink`, `lvcreate -s`,
 *                     `btrfs subvolume snapshot`, `zfs snapshot` ...);
 *                     its exit status is the answer, its stderr the
 *                     set's error when it fails;
 *   snapshot=manual   the shell: .status says "frozen, waiting for
 *                     snapshot-done", and `echo snapshot-done > .control`
 *                     (or snapshot-failed) answers.
 *
 * A set configured either way offers VDF_SnapshotPrepare and
 * VDF_EnumFrozenFiles (sets.c), so the server announces the freeze and
 * lists the frozen files; one configured neither way offers nothing and
 * answers nothing (ERROR_NOT_SUPPORTED: the server fails loudly).
 *
 * The handler runs on the device's pump thread (a backup's reader waits
 * meanwhile) or on the RELEASE of a restore's writer.  A manual answer is
 * waited for on set->cond; an abort of the set while waiting (the server's
 * freeze limit, its death, .control abort, unmount) must end the wait, and
 * an abort the engine raises tells nobody, so the wait also looks at the
 * set every FS_POLL_MS, as the tool's wait does (core/snapcmd.c).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vdifs.h"

static const char *phase_name(uint32_t code)
{
	return code == VDC_PrepareToFreeze ? "prepare"
	       : code == VDC_MountSnapshot ? "mount"
	                                   : "snapshot";
}

void fs_snapshot_status_locked(struct fs_set *set, char *buf, size_t len)
{
	if (set->snap_waiting)
		snprintf(buf, len, "frozen, waiting for snapshot-done (phase %s, device '%s')",
		         phase_name(set->snap_phase), set->snap_dev);
	else if (set->snap_phase)
		snprintf(buf, len, "frozen, running the snapshot command (phase %s, device '%s')",
		         phase_name(set->snap_phase), set->snap_dev);
	else
		snprintf(buf, len, "%s", set->snap_last[0] ? set->snap_last : "none yet");
}

static int set_aborted(struct fs_set *set)
{
	struct vdi_set_info info;

	return set->state == SET_FAILED ||
	       (set->client && !vdi_bset_info(set->client, &info) && info.state == VDI_SET_ABORTED);
}

/* Waits for .control's answer (set->lock held). */
static uint32_t wait_manual_locked(struct fs_set *set)
{
	set->snap_waiting = 1;
	set->snap_answered = 0;
	fs_log(VDI_LOG_INFO, "set '%s': frozen, waiting for snapshot-done (phase %s, device '%s')",
	       set->name, phase_name(set->snap_phase), set->snap_dev);
	while (!set->snap_answered && !set_aborted(set)) {
		struct timespec ts;

		fs_deadline(&ts, FS_POLL_MS);
		pthread_cond_timedwait(&set->cond, &set->lock, &ts);
	}
	set->snap_waiting = 0;
	return set->snap_answered ? set->snap_answer : ERROR_OPERATION_ABORTED;
}

static uint32_t handler(void *ctx, struct vdi_cstream *s, uint32_t code, const char *files)
{
	struct fs_set *set = ctx;
	char err[512] = "";
	uint32_t answer;

	pthread_mutex_lock(&set->lock);
	set->snap_phase = code;
	snprintf(set->snap_dev, sizeof(set->snap_dev), "%s", vdi_bdev_name(vdi_cstream_device(s)));
	if (set->cfg.snapshot_manual) {
		answer = wait_manual_locked(set);
	} else {
		pthread_mutex_unlock(&set->lock);
		answer = vdi_snapshot_run(s, set->cfg.snapshot_cmd, code, files, err, sizeof(err));
		pthread_mutex_lock(&set->lock);
	}
	if (answer != ERROR_SUCCESS)
		fs_set_error_locked(set, "%s",
		                    err[0] ? err
		                           : "snapshot refused or the set aborted while frozen");
	snprintf(set->snap_last, sizeof(set->snap_last), "%s %s (device '%s')", phase_name(code),
	         answer == ERROR_SUCCESS ? "done" : "failed", set->snap_dev);
	set->snap_phase = 0;
	pthread_cond_broadcast(&set->cond);
	pthread_mutex_unlock(&set->lock);
	return answer;
}

void fs_snapshot_attach(struct fs_set *set, struct vdi_cstream *s)
{
	if (fs_snapshot_configured(&set->cfg))
		vdi_cstream_on_snapshot(s, handler, set);
}

int fs_snapshot_answer(struct fs_set *set, int ok)
{
	int rc = 0;

	pthread_mutex_lock(&set->lock);
	if (!set->snap_waiting) {
		fs_log(VDI_LOG_WARN,
		       "set '%s': snapshot-%s written to .control, but no snapshot waits",
		       set->name, ok ? "done" : "failed");
		rc = -EINVAL;
	} else {
		set->snap_answer = ok ? ERROR_SUCCESS : ERROR_OPERATION_ABORTED;
		set->snap_answered = 1;
		pthread_cond_broadcast(&set->cond);
	}
	pthread_mutex_unlock(&set->lock);
	return rc;
}
