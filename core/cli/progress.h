/* SPDX-License-Identifier: MIT */
/*
 * progress.h - progress of a `vdi exec` operation on stderr.
 *
 * On a terminal (and without -q): a live line "\r 45%  115.2 MiB of
 * 256.0 MiB  98.3 MiB/s  ETA 0:01" redrawn every 200 ms by its own
 * thread, then a one-line summary.  Not on a terminal: nothing, unless
 * the statement said STATS explicitly, in which case one line
 * "vdi: N percent processed" per STATS step (as SQL Server prints).
 *
 * The counters are read with atomic loads; the device threads update
 * them with atomic adds.  The format functions are pure (tested).
 */
#ifndef VDI_CLI_PROGRESS_H
#define VDI_CLI_PROGRESS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum progress_mode { PROGRESS_OFF, PROGRESS_LIVE, PROGRESS_STATS };

struct progress {
	enum progress_mode mode;
	const uint64_t *done;  /* bytes so far (atomic) */
	const uint64_t *total; /* bytes expected (atomic; 0 = unknown yet) */
	unsigned step;         /* STATS percent step */
	unsigned next_pct;     /* next STATS line */
	double start;
	int drawn; /* a live line is on screen */
	pthread_t thread;
	int running, stop;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

/* Chooses the mode from -q, isatty(2) and whether STATS was given. */
enum progress_mode progress_mode_pick(int quiet, int tty, int stats_given);

/* "1.5 KiB", "256.0 MiB", "0 B" */
void progress_bytes(char *buf, size_t len, double bytes);
/* The live line without "\r": percent (if total known), bytes, rate,
 * ETA (if total and rate known). */
void progress_line(char *buf, size_t len, uint64_t done, uint64_t total, double elapsed);
/* "<label>: 268435456 bytes (256.0 MiB) in 2 stripes, 1.25 s, 204.8 MiB/s" */
void progress_summary(char *buf, size_t len, const char *label, uint64_t bytes, unsigned stripes,
                      double elapsed);

void progress_start(struct progress *p, enum progress_mode mode, const uint64_t *done,
                    const uint64_t *total, unsigned step);
/* Stops the thread and clears the live line. */
void progress_stop(struct progress *p);

#endif /* VDI_CLI_PROGRESS_H */
