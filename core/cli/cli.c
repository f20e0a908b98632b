/* SPDX-License-Identifier: MIT */
/*
 * cli.c - the helpers of cli.h that every command uses (messages, number
 * parsing, time, signals); the dispatch is main.c, above every command.
 */
#include "cli.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vdi.h"

void cli_err(const char *fmt, ...)
{
	char buf[2048], safe[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* Names in messages come from the user or a peer: no raw control
	 * bytes reach the terminal. */
	fprintf(stderr, "vdi: %s\n", vdi_escape_text(safe, sizeof(safe), buf));
}

void cli_vdi_err(int rc, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	cli_err("%s: %s: %s", buf, vdi_strerror(rc), vdi_last_error());
}

int cli_parse_uint(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		goto bad;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		goto bad;
	*out = v;
	return 0;
bad:
	cli_err("invalid %s '%s': must be a decimal number from %llu to %llu", opt, s ? s : "",
	        (unsigned long long)min, (unsigned long long)max);
	return -1;
}

int cli_parse_ms(const char *opt, const char *s, uint32_t *out)
{
	uint64_t v;

	if (s && strcmp(s, "infinite") == 0) {
		*out = VDI_INFINITE;
		return 0;
	}
	if (cli_parse_uint(opt, s, 0, 0x7fffffff, &v) < 0)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

double cli_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ signals */

static pthread_t sig_thread;
static int sig_running;
static void (*sig_fn)(void *ctx, int signo);
static void *sig_ctx;

static void sig_fill(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR2); /* internal: stop the signal thread */
}

void cli_signals_block(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sig_fill(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void *sig_main(void *arg)
{
	sigset_t set;
	int signo;

	(void)arg;
	sig_fill(&set);
	while (sigwait(&set, &signo) == 0) {
		if (signo == SIGUSR2)
			break;
		sig_fn(sig_ctx, signo);
	}
	return NULL;
}

int cli_signal_start(void (*fn)(void *ctx, int signo), void *ctx)
{
	sig_fn = fn;
	sig_ctx = ctx;
	if (pthread_create(&sig_thread, NULL, sig_main, NULL) != 0)
		return -1;
	sig_running = 1;
	return 0;
}

void cli_signal_stop(void)
{
	if (!sig_running)
		return;
	pthread_kill(sig_thread, SIGUSR2);
	pthread_join(sig_thread, NULL);
	sig_running = 0;
}
