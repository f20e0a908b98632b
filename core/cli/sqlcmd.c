/* SPDX-License-Identifier: MIT */
/*
 * sqlcmd.c - `vdi-sqlcmd`: the options of Microsoft's sqlcmd in front of
 * `vdi exec`, so that a backup client that shells out to sqlcmd runs
 * unmodified against the stand-in (a symlink named sqlcmd first in PATH).
 *
 *   vdi-sqlcmd [-S server] [-U user] [-P password | -E] [-d db] [-b]
 *              { -Q query | -q query | -i file[,file...] ... } [...]
 *
 * Each query or input file is cut into batches at lines holding only GO
 * (any case, optionally "GO n" to run the batch n times); each batch is
 * one statement run by `vdi exec` in this process.  As sqlcmd does, a
 * failed batch prints "Msg 3013, Level 16, ..." on stdout and the next
 * batch still runs; with -b the run stops there and exits 1, without it
 * the exit status is 0 (sqlcmd's ERRORLEVEL rules, docs/decisions.md).
 * -S, -U, -P, -E, -d name a server and a login that do not exist here:
 * accepted, not checked.  Options that only shape sqlcmd's output or its
 * connection are accepted and ignored; an option sqlcmd does not have is
 * refused as sqlcmd refuses it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

#define SQLCMD_MAX_INPUTS 64

struct sqlcmd {
	const char *server;
	int stop_on_error; /* -b */
	const char *io_timeout_ms;
	char timeout_buf[24];
	const char *inputs[SQLCMD_MAX_INPUTS]; /* queries or file names */
	int is_file[SQLCMD_MAX_INPUTS];
	unsigned ninputs;
	int failed;
};

static void sq_usage_err(const char *opt)
{
	fprintf(stderr, "Sqlcmd: '%s': Unknown Option. Enter '-?' for help.\n", opt);
}

static int add_input(struct sqlcmd *q, const char *v, int file)
{
	if (q->ninputs == SQLCMD_MAX_INPUTS) {
		fprintf(stderr, "Sqlcmd: Error: more than %d queries and input files.\n",
		        SQLCMD_MAX_INPUTS);
		return -1;
	}
	q->inputs[q->ninputs] = v;
	q->is_file[q->ninputs++] = file;
	return 0;
}

/* sqlcmd's options that take a value, and those that do not (-r takes
 * an optional attached 0 or 1). */
static const char with_value[] = "SUPdQqiotlHhswVamcfvxyYAkLRMKg";
static const char valueless[] = "EbeIXpuWCNr";

static int parse(struct sqlcmd *q, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		char o;

		if ((a[0] != '-' && a[0] != '/') || !a[1]) {
			sq_usage_err(a);
			return -1;
		}
		o = a[1];
		if (o == '?') {
			printf("usage: vdi-sqlcmd [-S server] [-U user] [-P password] [-E] [-d db] [-b]\n"
			       "                  {-Q query | -q query | -i file[,file...]} ...\n"
			       "Runs each batch with `vdi exec` (see vdi(1), VDI-SQLCMD).\n");
			exit(0);
		}
		if (strchr(valueless, o) && (!a[2] || (o == 'r' && strchr("01", a[2]) && !a[3]))) {
			if (o == 'b')
				q->stop_on_error = 1;
			continue;
		}
		if (!strchr(with_value, o)) {
			sq_usage_err(a);
			return -1;
		}
		v = a[2] ? a + 2 : i + 1 < argc ? argv[++i] : NULL;
		if (!v) {
			fprintf(stderr, "Sqlcmd: '-%c': Missing argument. Enter '-?' for help.\n",
			        o);
			return -1;
		}
		switch (o) {
		case 'S': q->server = v; break;
		case 'Q':
		case 'q':
			if (add_input(q, v, 0) < 0)
				return -1;
			break;
		case 'i': {
			char *list = (char *)v, *save = NULL, *f;

			for (f = strtok_r(list, ",", &save); f; f = strtok_r(NULL, ",", &save))
				if (add_input(q, f, 1) < 0)
					return -1;
			break;
		}
		case 't': {
			uint64_t s;

			if (cli_parse_uint("-t (query timeout, seconds)", v, 0, 65535, &s) < 0)
				return -1;
			if (s) { /* 0: wait forever, sqlcmd's default */
				snprintf(q->timeout_buf, sizeof(q->timeout_buf), "%llu",
				         (unsigned long long)s * 1000);
				q->io_timeout_ms = q->timeout_buf;
			}
			break;
		}
		default: break; /* -U -P -d -l -o -h -s -w ...: nothing to do here */
		}
	}
	if (!q->ninputs) {
		fprintf(stderr,
		        "Sqlcmd: Error: no query: give -Q \"statement\" or -i file (vdi-sqlcmd runs no interactive session).\n");
		return -1;
	}
	return 0;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	size_t cap = 4096, len = 0, n;
	char *buf;

	if (!f) {
		fprintf(stderr,
		        "Sqlcmd: Error: Error occurred while opening or operating on file %s (Reason: %s).\n",
		        path, strerror(errno));
		return NULL;
	}
	buf = malloc(cap);
	while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (len + 1 == cap) {
			char *nb = cap >= (1u << 24) ? NULL : realloc(buf, cap * 2);

			if (!nb) {
				free(buf);
				buf = NULL;
				fprintf(stderr, "Sqlcmd: Error: file %s is larger than 16 MiB.\n",
				        path);
				break;
			}
			buf = nb;
			cap *= 2;
		}
	}
	fclose(f);
	if (buf)
		buf[len] = '\0';
	return buf;
}

/* 1 and *count if line is a batch separator "GO" or "GO n". */
static int is_go(const char *line, size_t len, unsigned *count)
{
	char word[32];
	unsigned n = 1;
	int used = 0;

	if (len >= sizeof(word))
		return 0;
	memcpy(word, line, len);
	word[len] = '\0';
	if (sscanf(word, " %*1[Gg]%*1[Oo]%n", &used) != 0 || !used)
		return 0;
	if (word[used] && sscanf(word + used, " %u %n", &n, &used) == 1) {
		/* "GO n" */
	} else {
		used = (int)strspn(word + used, " \t\r") + used;
		if (word[used])
			return 0;
	}
	*count = n ? n : 1;
	return 1;
}

/* Runs one batch (blank ones are skipped).  0, or -1 when it failed. */
static int run_batch(struct sqlcmd *q, const char *text, unsigned line)
{
	char *argv[5];
	int argc = 0, rc;
	struct exec_outcome out;

	if (strspn(text, " \t\r\n") == strlen(text))
		return 0;
	argv[argc++] = "exec";
	if (q->io_timeout_ms) {
		argv[argc++] = "-T";
		argv[argc++] = (char *)q->io_timeout_ms;
	}
	argv[argc++] = "--";
	argv[argc++] = (char *)text;
	rc = cmd_exec_outcome(argc, argv, &out);
	if (rc == CLI_EXIT_OK) {
		if (out.statement[0] && out.kind_moves_data)
			printf("%s successfully processed %llu pages in %.3f seconds (%.3f MB/sec).\n",
			       out.statement, (unsigned long long)((out.bytes + 8191) / 8192),
			       out.seconds, out.seconds > 0 ? out.bytes / out.seconds / 1e6 : 0.0);
		fflush(stdout);
		return 0;
	}
	/* SQL Server's message for a failed BACKUP or RESTORE, where sqlcmd
	 * prints it: on stdout. */
	printf("Msg 3013, Level 16, State 1, Server %s, Line %u\n%s is terminating abnormally.\n",
	       q->server ? q->server : "localhost", line,
	       out.statement[0] ? out.statement : "BACKUP or RESTORE");
	fflush(stdout);
	return -1;
}

/* Cuts text into batches at GO lines and runs them. */
static int run_text(struct sqlcmd *q, char *text)
{
	char *batch = text, *p = text;
	unsigned line = 1, batch_line = 1;

	for (;;) {
		char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		unsigned count;

		if (is_go(p, len, &count)) {
			*p = '\0';
			for (unsigned k = 0; k < count; k++)
				if (run_batch(q, batch, batch_line) < 0) {
					q->failed = 1;
					if (q->stop_on_error)
						return -1;
					break;
				}
			batch = eol ? eol + 1 : p + len;
			batch_line = line + 1;
		}
		if (!eol)
			break;
		p = eol + 1;
		line++;
	}
	if (run_batch(q, batch, batch_line) < 0) {
		q->failed = 1;
		if (q->stop_on_error)
			return -1;
	}
	return 0;
}

int cmd_sqlcmd(int argc, char **argv)
{
	struct sqlcmd q = { 0 };

	if (parse(&q, argc, argv) < 0)
		return CLI_EXIT_FAIL;
	for (unsigned i = 0; i < q.ninputs; i++) {
		char *text = q.is_file[i] ? read_file(q.inputs[i]) : strdup(q.inputs[i]);
		int rc;

		if (!text)
			return CLI_EXIT_FAIL;
		rc = run_text(&q, text);
		free(text);
		if (rc < 0)
			break;
	}
	return q.failed && q.stop_on_error ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
