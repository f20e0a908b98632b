/* SPDX-License-Identifier: MIT */
/*
 * progress.c - live progress line, STATS lines and the summary
 * (progress.h).
 */
#include "progress.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"

enum progress_mode progress_mode_pick(int quiet, int tty, int stats_given)
{
	if (quiet)
		return PROGRESS_OFF;
	if (tty)
		return PROGRESS_LIVE;
	return stats_given ? PROGRESS_STATS : PROGRESS_OFF;
}

void progress_bytes(char *buf, size_t len, double bytes)
{
	static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int u = 0;

	while (bytes >= 1024 && u < 4) {
		bytes /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%.0f B", bytes);
	else
		snprintf(buf, len, "%.1f %s", bytes, units[u]);
}

void progress_line(char *buf, size_t len, uint64_t done, uint64_t total, double elapsed)
{
	char d[32], t[32], r[32], eta[32] = "";
	double rate = elapsed > 0 ? (double)done / elapsed : 0;
	int n;

	progress_bytes(d, sizeof(d), (double)done);
	progress_bytes(r, sizeof(r), rate);
	if (total && rate > 0 && done <= total) {
		unsigned s = (unsigned)((double)(total - done) / rate + 0.5);

		snprintf(eta, sizeof(eta), "  ETA %u:%02u", s / 60, s % 60);
	}
	if (total) {
		progress_bytes(t, sizeof(t), (double)total);
		n = snprintf(buf, len, "%3u%%  %s of %s  %s/s%s",
		             (unsigned)(done >= total ? 100 : done * 100 / total), d, t, r, eta);
	} else {
		n = snprintf(buf, len, "%s  %s/s", d, r);
	}
	(void)n;
}

void progress_summary(char *buf, size_t len, const char *label, uint64_t bytes, unsigned stripes,
                      double elapsed)
{
	char h[32], r[32];

	progress_bytes(h, sizeof(h), (double)bytes);
	progress_bytes(r, sizeof(r), elapsed > 0 ? (double)bytes / elapsed : 0);
	snprintf(buf, len, "%s: %llu bytes (%s) in %u stripe%s, %.2f s, %s/s", label,
	         (unsigned long long)bytes, h, stripes, stripes == 1 ? "" : "s", elapsed, r);
}

static void tick(struct progress *p)
{
	uint64_t done = __atomic_load_n(p->done, __ATOMIC_RELAXED);
	uint64_t total = __atomic_load_n(p->total, __ATOMIC_RELAXED);
	char line[160];

	if (p->mode == PROGRESS_LIVE) {
		progress_line(line, sizeof(line), done, total, cli_now() - p->start);
		fprintf(stderr, "\r%-70s", line);
		p->drawn = 1;
		return;
	}
	while (total && p->next_pct <= 100 && done * 100 >= (uint64_t)p->next_pct * total) {
		fprintf(stderr, "vdi: %u percent processed\n", p->next_pct);
		p->next_pct += p->step;
	}
}

static void *progress_main(void *arg)
{
	struct progress *p = arg;
	struct timespec ts;

	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		if (pthread_cond_timedwait(&p->cond, &p->lock, &ts) == ETIMEDOUT)
			tick(p);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

void progress_start(struct progress *p, enum progress_mode mode, const uint64_t *done,
                    const uint64_t *total, unsigned step)
{
	memset(p, 0, sizeof(*p));
	p->mode = mode;
	p->done = done;
	p->total = total;
	p->step = step ? step : 10;
	p->next_pct = p->step;
	p->start = cli_now();
	if (mode == PROGRESS_OFF)
		return;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	if (pthread_create(&p->thread, NULL, progress_main, p) == 0)
		p->running = 1;
}

void progress_stop(struct progress *p)
{
	if (!p->running)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	p->running = 0;
	if (p->mode == PROGRESS_STATS)
		tick(p); /* the last steps, if the operation completed */
	if (p->drawn)
		fprintf(stderr, "\r%-70s\r", "");
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
}
