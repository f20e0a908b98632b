/* SPDX-License-Identifier: MIT */
/*
 * watcher.c - the one timed loop of vdifs, for the two things no event
 * tells: a set aborted (its server died or aborted) while no device file
 * is open, so that nobody calls into it and only the engine's snapshot
 * shows it (the watcher then ends the set: its shared memory goes, its
 * status says why); and the end of the session (libfuse sets a flag on
 * a signal or a lost connection and calls nothing), at which it aborts
 * every set so that every request blocked on one returns and libfuse can
 * join its workers.  Everything else wakes by events: the server's
 * configuration (sets.c's waiter), FUSE interrupts (base.c), the
 * engine's own waits (pump.c).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vdifs.h"

static void watch_one(struct fs_set *set)
{
	struct vdi_set_info info;

	pthread_mutex_lock(&set->lock);
	if (!set->client) {
		pthread_mutex_unlock(&set->lock);
		return;
	}
	if (set->state == SET_CONFIGURED && set->open_handles == 0 &&
	    !vdi_bset_info(set->client, &info) &&
	    (info.state == VDI_SET_ABORTED || (info.server_pid && !info.server_alive))) {
		fs_set_error_locked(set, "the set ended while no device was open: %s",
		                    info.abort_reason[0] ? info.abort_reason : "server gone");
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
