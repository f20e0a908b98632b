/* SPDX-License-Identifier: MIT */
/*
 * watcher.c - the thread that looks after sets nobody is reading or
 * writing: it moves a waiting set to configured when the server ends the
 * configuration, notices a set aborted (server died or aborted) while no
 * device file is open and ends it, and at the end of the session aborts
 * every set so that blocked requests return.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vdifs.h"

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
		rc = vdi_bset_get_configuration(set->client, 0, &set->vcfg);
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
			fs_set_fail_locked(set);
		}
	} else if (set->state == SET_CONFIGURED && set->open_handles == 0 &&
		   !vdi_bset_info(set->client, &info) &&
		   (!strcmp(info.state, "aborted") ||
		    (info.server_pid && !info.server_alive))) {
		fs_set_error_locked(set, "the set ended while no device was open: %s",
				    info.abort_reason[0] ? info.abort_reason
							 : "server gone");
		fs_set_fail_locked(set);
	}
	fs_set_maybe_finish_locked(set);
	pthread_mutex_unlock(&set->lock);
}

/* The session is ending (unmount, SIGTERM): wake every request blocked
 * in a stream call by aborting its set, so libfuse can join its workers
 * and no server waits for us. */
static void abort_for_exit(struct fs_set *set)
{
	pthread_mutex_lock(&set->lock);
	if (set->client && set->state != SET_DONE) {
		fs_set_error_locked(set, "aborted: filesystem unmounted");
		fs_set_fail_locked(set);
	}
	pthread_mutex_unlock(&set->lock);
}

static void *watcher_main(void *arg)
{
	struct vdifs *fs = arg;
	struct fs_set **v;
	int i, n, exiting;

	while (!__atomic_load_n(&fs->stopping, __ATOMIC_ACQUIRE)) {
		struct timespec ts = { 0, (long)FS_POLL_MS * 1000000L };

		exiting = fuse_session_exited(fs->se);
		n = fs_sets_snapshot(fs, &v);
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

int fs_watcher_start(struct vdifs *fs)
{
	int rc = pthread_create(&fs->watcher, NULL, watcher_main, fs);

	if (rc)
		return -rc;
	fs->watcher_started = 1;
	return 0;
}

void fs_watcher_stop(struct vdifs *fs)
{
	__atomic_store_n(&fs->stopping, 1, __ATOMIC_RELEASE);
	if (fs->watcher_started)
		pthread_join(fs->watcher, NULL);
	fs->watcher_started = 0;
}
