/* SPDX-License-Identifier: MIT */
/*
 * ls.c - `vdi ls` (the sets on this machine, vdi_list_sets) and
 * `vdi abort SET` (vdi_set_abort).
 *
 * `vdi ls` prints one line per set:
 *
 *   INSTANCE SET STATE DEVICES BLOCK MAXXFER BYTES COMMANDS CLIENT SERVER
 *
 * CLIENT and SERVER are pids, "-" when none, with "(dead)" appended when
 * that process no longer runs; an aborted set gets a second, indented
 * line with the abort reason.  With -I only that instance is listed.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "stmt.h"
#include "vdi.h"

struct ls_ctx {
	const char *instance;
	unsigned count;
};

static void fmt_pid(char *buf, size_t len, pid_t pid, int alive)
{
	if (!pid)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%d%s", (int)pid, alive ? "" : "(dead)");
}

static int ls_one(void *arg, const struct vdi_set_info *i)
{
	struct ls_ctx *ctx = arg;
	char cpid[32], spid[32];

	if (ctx->instance && strcmp(ctx->instance, i->instance) != 0)
		return 0;
	if (ctx->count++ == 0)
		printf("%-12s %-38s %-18s %7s %6s %8s %14s %9s %-12s %-12s\n", "INSTANCE", "SET",
		       "STATE", "DEVICES", "BLOCK", "MAXXFER", "BYTES", "COMMANDS", "CLIENT",
		       "SERVER");
	fmt_pid(cpid, sizeof(cpid), i->client_pid, i->client_alive);
	fmt_pid(spid, sizeof(spid), i->server_pid, i->server_alive);
	printf("%-12s %-38s %-18s %7u %6u %8u %14llu %9llu %-12s %-12s\n", i->instance, i->name,
	       vdi_set_state_name(i->state), i->device_count, i->block_size, i->max_transfer_size,
	       (unsigned long long)i->bytes, (unsigned long long)i->commands, cpid, spid);
	if (i->abort_reason[0])
		printf("    abort reason: %s\n", i->abort_reason);
	return 0;
}

static int instance_opt(int argc, char **argv, const char **instance)
{
	int c;

	optind = 1;
	while ((c = getopt(argc, argv, "+I:")) != -1) {
		if (c != 'I')
			return -1;
		*instance = optarg;
	}
	return 0;
}

int cmd_ls(int argc, char **argv)
{
	struct ls_ctx ctx = { NULL, 0 };
	int rc;

	if (instance_opt(argc, argv, &ctx.instance) < 0 || optind != argc) {
		cli_err("usage: vdi ls [-I INSTANCE]");
		return CLI_EXIT_USAGE;
	}
	rc = vdi_list_sets(ls_one, &ctx);
	fflush(stdout);
	if (rc < 0) {
		cli_vdi_err(rc, "cannot list the virtual device sets");
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}

int cmd_abort(int argc, char **argv)
{
	const char *instance = NULL, *why;
	int rc;

	if (instance_opt(argc, argv, &instance) < 0 || optind + 1 != argc) {
		cli_err("usage: vdi abort [-I INSTANCE] SET");
		return CLI_EXIT_USAGE;
	}
	if ((why = stmt_name_problem(argv[optind]))) {
		cli_err("invalid set name '%s': %s", argv[optind], why);
		return CLI_EXIT_USAGE;
	}
	rc = vdi_set_abort(instance, argv[optind]);
	if (rc < 0) {
		cli_vdi_err(rc, "cannot abort virtual device set '%s'", argv[optind]);
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}
