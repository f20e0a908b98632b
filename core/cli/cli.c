/* SPDX-License-Identifier: MIT */
/*
 * cli.c - subcommand dispatch, usage, and the helpers of cli.h.
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

static const char usage_text[] =
	"usage: vdi <command> [options] [arguments]\n"
	"\n"
	"  vdi exec [options] [STATEMENT...]   run BACKUP/RESTORE as the database engine\n"
	"      -f, --file FILE       read the statement from FILE ('-' = stdin);\n"
	"                            without STATEMENT and -f, read stdin\n"
	"      -D, --data-dir DIR    database files are DIR/<db>.mdf (default\n"
	"                            $VDI_DATA_DIR, else /var/lib/vdi)\n"
	"      -t, --timeout MS      wait this long for the client's set (30000)\n"
	"      -T, --io-timeout MS   give up on a silent client (infinite)\n"
	"      -I, --instance NAME   VDI instance (default instance)\n"
	"      -q, --quiet           no progress or summary on stderr\n"
	"      --freeze-timeout MS   WITH SNAPSHOT: the longest freeze (10000)\n"
	"\n"
	"  vdi-sqlcmd [-S srv] [-U user] [-P pw] [-b] {-Q query | -i file}...\n"
	"                            sqlcmd's options; each batch runs with vdi exec\n"
	"\n"
	"  vdi pipe [options] -s SET [FILE...]  be the backup application (client)\n"
	"      -s, --set NAME        set name (device 0); device i>0 is NAME<i>\n"
	"      -n, --devices N       device count, 1..64 (default: number of FILEs, or 1)\n"
	"      -R, --request-complete  ask for VDC_Complete at the end of a backup\n"
	"      -F, --features LIST   removable,discard (comma-separated)\n"
	"      -t, --timeout MS      wait this long for the server (60000)\n"
	"      -S, --server-timeout MS  VDConfig.serverTimeOut (0 = infinite)\n"
	"      -T, --io-timeout MS   give up on a silent server (infinite)\n"
	"      -g, --group GROUP     share the set with GROUP (mode 0660)\n"
	"      -I, --instance NAME   VDI instance\n"
	"      -q, --quiet           no messages except errors\n"
	"      --snapshot-cmd CMD    snapshot backups: /bin/sh -c CMD takes the snapshot\n"
	"                            (VDI_SET, VDI_DEVICE, VDI_PHASE, VDI_FILES set)\n"
	"      --tar                 every device through one tar stream: FILE (or\n"
	"                            stdout / stdin) is the archive of the whole set\n"
	"      --sqlvdi[=PATH]       client backend: a library with Microsoft's ABI\n"
	"                            (PATH: /opt/mssql/lib/libsqlvdi.so), for SQL Server\n"
	"                            on Linux; default: libvdi's own client (vdi exec)\n"
	"      FILE per device: written by a BACKUP, read by a RESTORE;\n"
	"      none (one device) or '-' = stdout / stdin\n"
	"\n"
	"  vdi ls [-I INSTANCE]                 list the sets on this machine\n"
	"  vdi abort [-I INSTANCE] SET          abort a set\n"
	"  vdi doctor [-I INSTANCE] [--fix]     check FUSE, /dev/shm, SQL Server access;\n"
	"                                       --fix removes sets of dead processes\n"
	"\n"
	"Exit status: 0 success, 1 failure, 2 usage or statement error.\n"
	"See vdi(1).\n";

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

/* ------------------------------------------------------------ dispatch */

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "exec", cmd_exec },   { "pipe", cmd_pipe },     { "ls", cmd_ls },
	{ "abort", cmd_abort }, { "doctor", cmd_doctor },
};

int cli_main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/');

	base = base ? base + 1 : argv[0];
	if (strcmp(base, "vdi-sqlcmd") == 0 || strcmp(base, "sqlcmd") == 0)
		return cmd_sqlcmd(argc, argv);
	if (argc < 2) {
		fputs(usage_text, stderr);
		return CLI_EXIT_USAGE;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(usage_text, stdout);
		return CLI_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	cli_err("unknown command '%s': expected exec, pipe, ls, abort or doctor (vdi --help)",
	        argv[1]);
	return CLI_EXIT_USAGE;
}
