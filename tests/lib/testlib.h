/* SPDX-License-Identifier: MIT */
/*
 * testlib.h - small helpers shared by every engine test (check suites,
 * cross-process tests, benchmarks).
 *
 * The library itself never calls check: benchmarks link it without
 * libcheck.  Every helper returns 0 or a negative VD_E_* code and, on
 * failure, leaves a sentence in the helper's own error buffer
 * (tl_error()) that names the step that failed and carries
 * vdi_last_error().  Suites turn that into assertions; when <check.h> was
 * included before this header, TL_OK() below does it in one line.
 *
 * What it offers
 *   - Unique set names:  tl_name() gives "t-<run>-<pid>-<n>", unique per
 *     process and per run, so concurrent runs of different suites never
 *     collide (briefing rule).  <run> is the pid of the process that first
 *     called any tl_* naming function (or tl_init()); call tl_init() in
 *     main() before forking so every child of the run shares it.
 *   - Cleanup of /dev/shm: tl_shm_cleanup() unlinks every /dev/shm object
 *     whose name contains this process's tag "t-<run>-<pid>-"
 *     (vdi.<instance>.<set>, vdi-b<k>.<instance>.<set>, sem.* alike);
 *     tl_shm_cleanup_run() does the same for every process of the run
 *     (call it in main() after srunner_run_all, so a test killed by its
 *     timeout leaves nothing behind); tl_shm_count() counts them, so a
 *     test can assert that Close released everything.
 *   - A client + server pair in one process driven to a given phase
 *     (struct tl_pair, tl_pair_advance()), a normal shutdown
 *     (tl_pair_finish()) and an unconditional teardown
 *     (tl_pair_destroy()).
 *   - The completion agent on its own thread (struct tl_agent).
 *   - Server commands whose completion routine records what happened
 *     (struct tl_cmd): how many times it ran, on which thread, with which
 *     code; tl_cmd_wait() waits for it with a time limit.
 *
 * Threads: the pair and the agent helpers are for one test thread (the
 * agent runs on the thread they start).  tl_cmd completions may arrive
 * on any thread; tl_cmd_* are thread-safe.
 */
#ifndef VDI_TESTLIB_H
#define VDI_TESTLIB_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vdi.h"

/* ---------------------------------------------------------------------
 * Errors of the helpers.
 */

/* Sentence describing the last helper failure of this thread ("" if
 * none).  Borrowed; valid until the next tl_* call on the thread. */
const char *tl_error(void);

/* ---------------------------------------------------------------------
 * Names and shared-memory cleanup.
 */

#define TL_NAME_MAX 64

/* Fixes the run id (the calling process's pid) if not yet fixed.  Call it
 * in main() before srunner_run_all or fork.  Idempotent. */
void tl_init(void);

/* Writes a new unique set name "t-<run>-<pid>-<n>" into buf (at least
 * TL_NAME_MAX bytes) and returns buf. */
char *tl_name(char *buf);

/* The tag every name of this process starts with: "t-<run>-<pid>-"
 * (static storage, recomputed after fork). */
const char *tl_tag(void);
/* The tag every name of this run starts with: "t-<run>-". */
const char *tl_run_tag(void);

/* Number of entries of /dev/shm whose name contains `tag` (NULL = this
 * process's tl_tag()), or -1 if /dev/shm cannot be read. */
int tl_shm_count(const char *tag);
/* Same for one set: its control region vdi.<instance>.<name> and its
 * buffer areas vdi-b<k>.<instance>.<name> (decisions.md D27; the older
 * form vdi.<instance>.<name>.b<k> is recognised too). */
int tl_shm_count_set(const char *name);
/* Same, in one instance only (NULL = any instance). */
int tl_shm_count_set_in(const char *instance, const char *name);
/* Unlinks every entry of an instance (vdi.<instance>.*,
 * vdi-b<k>.<instance>.*): for tests that
 * must use fixed set names (a GUID), put them in an instance of their own
 * such as tl_instance() and remove it in teardown.  Returns the count. */
int tl_shm_cleanup_instance(const char *instance);
/* A per-process instance name "T<pid>" (static storage). */
const char *tl_instance(void);
/* Unlinks every /dev/shm entry containing `tag` (NULL = tl_tag()).
 * Returns how many were removed. */
int tl_shm_cleanup_tag(const char *tag);
/* tl_shm_cleanup_tag(tl_tag()) and tl_shm_cleanup_tag(tl_run_tag()). */
int tl_shm_cleanup(void);
int tl_shm_cleanup_run(void);

/* ---------------------------------------------------------------------
 * Time.
 */
uint64_t tl_now_ms(void);
/* Deadline ms from now for pthread_cond_timedwait (CLOCK_REALTIME). */
struct timespec tl_deadline_ms(uint32_t ms);
void tl_sleep_ms(unsigned ms);

/* ---------------------------------------------------------------------
 * The completion agent on a thread.
 */
struct tl_agent {
	struct vdi_server *s;
	pthread_t thread;
	int started;           /* thread created and not yet joined */
	volatile int entering; /* set by the thread just before the call */
	volatile int returned; /* set by the thread when the call returned */
	int rc;                /* return of the agent call, once joined */
	uint64_t returned_ms;  /* tl_now_ms() when it returned */
};

/* Starts vdi_server_execute_completion_agent(s) on a new thread and
 * returns once that thread is about to make the call (plus a few ms).
 * That is not a proof that the agent runs: a test that then ends the
 * set at once (closes every device) could beat the agent to its lock,
 * and the agent would see Normally Terminated and return
 * VD_E_PROTOCOL.  tl_pair_sync_agent() gives the proof. */
int tl_agent_start(struct tl_agent *a, struct vdi_server *s);
/* Waits at most timeout_ms for the agent call to return and joins the
 * thread.  0 on success (the agent's own return is in a->rc);
 * VD_E_TIMEOUT if it is still running (the thread stays started). */
int tl_agent_join(struct tl_agent *a, uint32_t timeout_ms);
/* 1 if the agent call has returned (joined or not). */
int tl_agent_returned(const struct tl_agent *a);

/* ---------------------------------------------------------------------
 * Server commands with a recording completion routine.
 *
 * The VDS_Command is the first member, so the routine finds the wrapper;
 * completionContext also points at the wrapper.  The memory must stay
 * valid until the routine ran (or the set closed).
 */
struct tl_cmd {
	VDS_Command cmd;
	int calls;             /* times the completion routine ran */
	pthread_t thread;      /* thread of the last call */
	uint32_t code;         /* completionCode seen by the routine */
	uint32_t bytes;        /* bytesTransferred seen */
	uint64_t out_position; /* outPosition seen */
	void *context_seen;    /* completionContext seen */
};

/* Fills a command (code, size, inPosition, buffer) with tl_cmd's routine
 * and resets the record. */
void tl_cmd_init(struct tl_cmd *t, uint32_t code, uint32_t size, uint64_t position,
                 uint8_t *buffer);
/* Waits at most timeout_ms until the routine ran at least once.  0 when
 * it did, VD_E_TIMEOUT otherwise. */
int tl_cmd_wait(struct tl_cmd *t, uint32_t timeout_ms);
/* Thread-safe read of t->calls. */
int tl_cmd_calls(struct tl_cmd *t);
/* The routine tl_cmd_init installs (exported so tests can compare). */
void tl_cmd_routine(VDS_Command *cmd);

/* ---------------------------------------------------------------------
 * A client and a server in this process, driven through the protocol.
 */
enum tl_phase {
	TL_NEW = 0,      /* both objects allocated, nothing called */
	TL_CREATED,      /* client Create(Ex) done: client Configurable */
	TL_CONNECTED,    /* server Open done: server Connected */
	TL_CONFIGURABLE, /* server GetConfiguration + BeginConfiguration */
	TL_ENDED,        /* server RequestBuffers + EndConfiguration:
			    * server Initializing, client still Configurable
			    * (it has not called GetConfiguration) */
	TL_INITIALIZING, /* client GetConfiguration returned: both
			    * Initializing */
	TL_SERVER_OPEN,  /* server opened every device and runs the agent
			    * on a thread: server Active */
	TL_ACTIVE,       /* client opened every device: both Active */
};

/* Options of a pair; tl_pair_init() fills the defaults given here. */
struct tl_pair_opts {
	const char *instance;      /* NULL: default instance */
	uint32_t devices;          /* 1 */
	uint32_t client_features;  /* 0 (pipe) */
	uint32_t prefix;           /* client prefixZoneSize: 0 */
	uint32_t client_alignment; /* 0 */
	uint32_t server_features;  /* VDF_WriteMedia */
	uint32_t block_size;       /* 512 */
	uint32_t alignment;        /* server dwAlignment: 0 */
	uint32_t max_transfer;     /* 65536 */
	uint32_t buffer_count;     /* 4 (RequestBuffers(max_transfer, 0, n)) */
	uint32_t timeout_ms;       /* 5000: bound of every wait of the helpers */
	int no_agent;              /* 1: TL_SERVER_OPEN does not start the agent */
};

struct tl_pair {
	struct tl_pair_opts o;
	char name[TL_NAME_MAX];                     /* set name = device 0 */
	char dev[VDI_MAX_DEVICES][TL_NAME_MAX + 8]; /* device names: dev[0] =
						     * name, dev[i] = name.d<i> */
	enum tl_phase phase;                        /* reached so far */
	struct vdi_client *c;
	struct vdi_server *s;
	VDConfig req;  /* what the client passed to Create */
	VDConfig scfg; /* what the server's GetConfiguration returned */
	VDConfig cfg;  /* what the client's GetConfiguration returned */
	struct vdi_client_device *cd[VDI_MAX_DEVICES];
	struct vdi_server_device *sd[VDI_MAX_DEVICES];
	struct tl_agent agent;
	int client_closed, server_closed;
};

/* Defaults as documented in struct tl_pair_opts. */
void tl_pair_opts_default(struct tl_pair_opts *o);
/* Allocates the client and server objects and a fresh unique name.
 * opts NULL = defaults.  Phase TL_NEW. */
int tl_pair_init(struct tl_pair *p, const struct tl_pair_opts *opts);
/* Performs every step from the current phase up to `to`.  0 on success;
 * otherwise the code of the failing call, the phase stays at the last
 * step that succeeded, and tl_error() names the call. */
int tl_pair_advance(struct tl_pair *p, enum tl_phase to);
/* Proves that the pair's agent runs: sends a VDC_Flush (inPosition
 * 0x5C5C) on the first device open on both sides, the client completes
 * it, and the completion routine (which only the agent calls) is
 * awaited.  Commands queued before it on that device are fetched and
 * completed with ERROR_SUCCESS and their full size.  Needs TL_ACTIVE.
 * 0 or an error. */
int tl_pair_sync_agent(struct tl_pair *p);
/* Normal termination from TL_SERVER_OPEN/TL_ACTIVE (first calls
 * tl_pair_sync_agent when TL_ACTIVE): the server closes
 * every device; the client drains each open device until VD_E_CLOSE
 * (completing any command it receives with ERROR_SUCCESS); the agent is
 * joined; both sides Close.  0 or the first error. */
int tl_pair_finish(struct tl_pair *p);
/* Unconditional teardown, safe at any phase and after tl_pair_finish or
 * a failed test: aborts the set if the agent still runs, joins the agent
 * (bounded), closes and frees both objects and unlinks any /dev/shm
 * object of the set.  Never fails. */
void tl_pair_destroy(struct tl_pair *p);

/* ---------------------------------------------------------------------
 * check integration (only when <check.h> was included first).
 */
#ifdef CHECK_H
/* Asserts that a vdi_* or tl_* call returns 0, printing the code name and
 * both error sentences otherwise. */
#define TL_OK(expr)                                                                          \
	do {                                                                                 \
		int tl_rc_ = (expr);                                                         \
		ck_assert_msg(tl_rc_ == 0, "%s = %s (%s) [%s]", #expr, vdi_strerror(tl_rc_), \
		              vdi_last_error(), tl_error());                                 \
	} while (0)
/* Asserts that a call returns exactly `want`. */
#define TL_RC(expr, want)                                                                      \
	do {                                                                                   \
		int tl_rc_ = (expr);                                                           \
		int tl_want_ = (want);                                                         \
		ck_assert_msg(tl_rc_ == tl_want_, "%s = %s, want %s (%s)", #expr,              \
		              vdi_strerror(tl_rc_), vdi_strerror(tl_want_), vdi_last_error()); \
	} while (0)

/* The body of every engine suite's main(): run s, then remove every
 * /dev/shm object of this run even if a test was killed by its timeout.
 * Returns the exit status. */
static inline int tl_run_suite(Suite *s)
{
	SRunner *sr;
	int failed;

	tl_init();
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tl_shm_cleanup_run();
	return failed ? 1 : 0;
}
#endif

#endif /* VDI_TESTLIB_H */
