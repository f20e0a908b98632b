/* SPDX-License-Identifier: MIT */
/*
 * rusage_run.c - run a program and write what it cost (issue 11).
 *
 * Usage: rusage_run OUTFILE PROGRAM [ARGS...]
 *
 * Runs PROGRAM, waits for it and writes one line to OUTFILE:
 *   "<voluntary> <involuntary> <maxrss_kb> <user_us> <sys_us>"
 * from wait4's rusage, which sums every thread of the program, the ones
 * that ended before it too (what /proc/PID/status cannot give once the
 * process is gone).  Exits with the program's status (128 + signal if a
 * signal ended it, 127 if it could not be started), so a benchmark can
 * wrap a command without losing its result.  It needs nothing but libc:
 * the benchmark does not depend on GNU time.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static long us(struct timeval tv)
{
	return (long)tv.tv_sec * 1000000L + (long)tv.tv_usec;
}

int main(int argc, char *argv[])
{
	struct rusage ru;
	FILE *out;
	pid_t pid;
	int st;

	if (argc < 3) {
		fprintf(stderr, "usage: rusage_run OUTFILE PROGRAM [ARGS...]\n");
		return 2;
	}
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "rusage_run: fork: %s\n", strerror(errno));
		return 127;
	}
	if (pid == 0) {
		execvp(argv[2], argv + 2);
		fprintf(stderr, "rusage_run: %s: %s\n", argv[2], strerror(errno));
		_exit(127);
	}
	while (wait4(pid, &st, 0, &ru) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "rusage_run: wait4: %s\n", strerror(errno));
			return 127;
		}
	}
	out = fopen(argv[1], "w");
	if (!out) {
		fprintf(stderr, "rusage_run: %s: %s\n", argv[1], strerror(errno));
		return 127;
	}
	fprintf(out, "%ld %ld %ld %ld %ld\n", ru.ru_nvcsw, ru.ru_nivcsw, ru.ru_maxrss,
	        us(ru.ru_utime), us(ru.ru_stime));
	if (fclose(out)) {
		fprintf(stderr, "rusage_run: %s: %s\n", argv[1], strerror(errno));
		return 127;
	}
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return WEXITSTATUS(st);
}
