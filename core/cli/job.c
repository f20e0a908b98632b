/* SPDX-License-Identifier: MIT */
/*
 * job.c - the failure record of a `vdi exec` job and its test pauses: the
 * bottom of exec, used by every thread (exec.h).
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "exec.h"

void job_fail(struct job *j, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&j->lock);
	if (!j->failed) {
		va_start(ap, fmt);
		vsnprintf(j->err, sizeof(j->err), fmt, ap);
		va_end(ap);
		__atomic_store_n(&j->failed, 1, __ATOMIC_RELEASE);
		if (j->srv && j->on_fail)
			j->on_fail(j);
		if (j->srv)
			vdi_server_signal_abort(j->srv);
	}
	pthread_mutex_unlock(&j->lock);
}

int job_failed(struct job *j)
{
	return __atomic_load_n(&j->failed, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------ test pauses */

/*
 * VDI_TEST_PAUSE=<point> stops `vdi exec` at one protocol point so that
 * a test (tests/integration/fault_matrix.sh) can kill a party exactly
 * there: opened (Open done, before GetConfiguration), configuring
 * (between RequestBuffers and EndConfiguration), configured (after
 * EndConfiguration), bytes=N (once N database bytes moved), flush
 * (before the first VDC_Flush), complete (before the first
 * VDC_Complete), close (streams ended, before CloseDevice), commit
 * (RESTORE: set closed, before the rename), and before the first of each
 * other control command by its name without VDC_ in lower case (rewind,
 * writemark, skipmarks, load, getposition, setposition, clearerror,
 * discard: exec_before_command).  Unset: no effect.
 */
void exec_test_pause_init(struct job *j)
{
	const char *p = getenv("VDI_TEST_PAUSE");
	uint64_t n;

	if (!p || !*p)
		return;
	if (strncmp(p, "bytes=", 6) == 0) {
		if (cli_parse_uint("VDI_TEST_PAUSE", p + 6, 0, UINT64_MAX, &n) < 0)
			return;
		j->pause_bytes = n;
	}
	snprintf(j->pause_point, sizeof(j->pause_point), "%s",
	         strncmp(p, "bytes=", 6) ? p : "bytes");
}

/* The first thread at the point stops the process; another thread that
 * gets there before the stop took effect waits for it, so no device
 * passes the point before the test saw the process stopped. */
static void test_pause_now(struct job *j, const char *what)
{
	int idle = 0;

	if (!__atomic_compare_exchange_n(&j->paused, &idle, 1, 0, __ATOMIC_ACQ_REL,
	                                 __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(&j->paused, __ATOMIC_ACQUIRE) == 1)
			usleep(1000);
		return;
	}
	cli_err("test pause at %s (pid %d)", what, (int)getpid());
	raise(SIGSTOP);
	__atomic_store_n(&j->paused, 2, __ATOMIC_RELEASE);
}

void exec_test_pause(struct job *j, const char *point)
{
	if (j->pause_point[0] && strcmp(j->pause_point, point) == 0)
		test_pause_now(j, point);
}

void exec_test_pause_bytes(struct job *j, uint64_t moved)
{
	if (j->pause_point[0] && strcmp(j->pause_point, "bytes") == 0 && moved >= j->pause_bytes)
		test_pause_now(j, "bytes");
}
