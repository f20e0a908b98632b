/* SPDX-License-Identifier: MIT */
/*
 * exec.h - internals of `vdi exec`, shared by exec.c (options, files,
 * the protocol sequence) and exec_io.c (one thread per device moving the
 * stripes, fault injection, HEADERONLY output).
 *
 * Threads: the main thread configures the set and opens the devices;
 * one thread runs the completion agent; one thread per device streams
 * its stripe through the server stream adapter; a signal thread turns
 * SIGINT/SIGTERM into an abort.  The first failure of any thread is
 * recorded in job.err (under job.lock) and aborts the set, so every
 * other thread wakes with VD_E_ABORT and the client fails too.
 */
#ifndef VDI_CLI_EXEC_H
#define VDI_CLI_EXEC_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>

#include "bkfmt.h"
#include "chain.h"
#include "stmt.h"
#include "vdi.h"

struct job;

struct devjob {
	struct job *j;
	unsigned k; /* clause index */
	struct vdi_server_device *dev;
	struct vdi_sstream *s;
	pthread_t thread;
	int started;
	uint8_t *buf;
	int stalled;         /* FAULT_STALL done */
	uint32_t flushes;    /* FAULT_EXTRA_FLUSHES sent so far */
	uint32_t marks;      /* restore of a tape: filemarks passed */
	VDS_Command discard; /* VDC_Discard of a failed restore (exec_discard) */
	int discard_done;    /* its routine ran (j->discard_lock) */
	struct bk_reader r;  /* restore side */
	struct bk_writer w;  /* backup side */
};

struct job {
	struct stmt st;
	/* options */
	const char *data_dir;
	const char *instance;
	uint32_t timeout_ms, io_timeout_ms;
	uint32_t freeze_ms; /* SNAPSHOT: the longest freeze (--freeze-timeout) */
	uint64_t generate;  /* --generate: the database is bk_generate's, this big */
	int generated;
	int quiet;
	int both_media; /* --both-media: VDF_WriteMedia and VDF_ReadMedia configured */
	/* files */
	char db_path[PATH_MAX];
	char tmp_path[PATH_MAX];
	char tmp_dir[PATH_MAX]; /* restore: where the new file is made */
	int db_fd;              /* backup: source; restore: temp file */
	int tmp_anon;           /* restore: the temp file has no name yet (O_TMPFILE) */
	int replacing;          /* restore: the target exists */
	mode_t mode;            /* restore: mode of the new file */
	/* the set */
	struct vdi_server *srv;
	VDConfig cfg;
	uint32_t features;
	struct vdi_sstream_pool *pool;
	pthread_t agent;
	int agent_started, agent_rc;
	int agent_returned;  /* atomic */
	char agent_err[512]; /* the agent thread's vdi_last_error(), before agent_returned */
	struct devjob d[STMT_MAX_DEVICES];
	/* the chain (chain.h): history of backups, restore state */
	struct chain_history hist; /* backup: loaded before, extended after */
	uint64_t *map;             /* backup: chunk hashes of the database */
	uint64_t *select;          /* DIFFERENTIAL, LOG: the chunks sent */
	uint64_t nselect;
	struct chain_state rstate; /* restore: the state found */
	int restoring;             /* restore: rstate is valid */
	int prepared, prep_failed; /* restore: exec_restore_begin 1 running, 2 done (lock) */
	pthread_cond_t prep_cond;
	/* the backup */
	struct bk_header hdr; /* backup: template of the headers */
	struct bk_set set;    /* restore: headers seen */
	uint64_t total;       /* database bytes (atomic) */
	uint64_t work;        /* database bytes to move, for progress (atomic) */
	uint64_t done;        /* database bytes moved (atomic) */
	uint64_t wire;        /* stripe bytes moved (atomic) */
	/* VDI_TEST_PAUSE (exec.c, docs/vdi.1 TESTING) */
	char pause_point[32]; /* "" = none */
	uint64_t pause_bytes; /* point "bytes=N" */
	int paused;           /* atomic: 1 stopping, 2 resumed */
	/* VDF_Discard: a failed restore tells the client before the abort */
	void (*on_fail)(struct job *j); /* called once by job_fail, lock held */
	pthread_mutex_t discard_lock;
	pthread_cond_t discard_cond;
	/* outcome */
	pthread_mutex_t lock;
	int failed;     /* atomic */
	char err[1024]; /* first failure, under lock */
};

/* job.c: the bottom layer.  Records the first failure and aborts the set.
 * Thread-safe. */
void job_fail(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int job_failed(struct job *j);

/* Reads $VDI_TEST_PAUSE (exec_test_pause's point) into the job. */
void exec_test_pause_init(struct job *j);
/* Test hook: when $VDI_TEST_PAUSE names `point`, prints
 * "vdi: test pause at <point> (pid N)" on stderr and stops the whole
 * process with SIGSTOP, once per run; SIGCONT resumes it. */
void exec_test_pause(struct job *j, const char *point);
/* The same for the point "bytes=N", once `moved` database bytes >= N. */
void exec_test_pause_bytes(struct job *j, uint64_t moved);

/* exec_files.c: the database files, above job.c.
 * Opens the source of a BACKUP (and chooses what a differential or log
 * holds) or prepares the new file of a RESTORE; prints why and returns -1
 * on failure (before any set is opened). */
int exec_prepare_files(struct job *j);
/* RESTORE succeeded: size, the chain's checks, mode, durability, the
 * atomic rename, the restoring state.  0 or -1 (job failed). */
int exec_commit_target(struct job *j);
/* RESTORE WITH SNAPSHOT: the file the client mounted is the frozen one. */
int exec_verify_mounted(struct job *j);
/* BACKUP succeeded: the history records it (job failed if it cannot). */
void exec_record_backup(struct job *j);
void exec_close_files(struct job *j);
/* RESTORE: once per job, when the first stripe header was read: checks
 * MOVE and the restore chain, and for a differential or log backup starts
 * the new file as a copy of the database it rolls forward.  0 or -1
 * (job failed).  Thread-safe. */
int exec_restore_begin(struct job *j, const struct bk_header *h);

/* exec_io.c, above exec_files.c.  Starts one thread per device for the
 * statement's kind; joins them.
 * Returns 0 if every stream succeeded. */
int exec_run_devices(struct job *j);
/* The stream pool's hook before each control command: the fault
 * injection of FAULT_FAIL_AT, FAULT_STALL_AT and VDI_TEST_PAUSE=<command>. */
int exec_before_command(void *ctx, struct vdi_sstream *w, uint32_t code);
/* job.on_fail of a restore whose client offered VDF_Discard: VDC_Discard
 * to every device, each answer awaited for up to 1 s in all. */
void exec_discard(struct job *j);
/* HEADERONLY: prints the headers and trailers read, on stdout. */
void exec_print_headers(struct job *j);

#endif /* VDI_CLI_EXEC_H */
