/* SPDX-License-Identifier: MIT */
/*
 * cli.h - the `vdi` command: subcommands and the helpers they share.
 *
 * `vdi` is a thin front end over libvdi (core/vdi.h): protocol logic
 * stays in the library.  Subcommands:
 *
 *   exec   play the database engine (server half + server stream adapter)
 *   pipe   a client without FUSE (client half + client stream adapter)
 *   ls     list the sets on the machine
 *   abort  abort one set from outside
 *   doctor check the machine, remove the leftovers of dead processes
 *
 * Exit status of every subcommand: 0 success, 1 the operation failed
 * (on either side), 2 usage or statement error (nothing was started).
 * Messages go to stderr as "vdi: <what failed>: <cause>", no trailing
 * period.  The threads of a subcommand never print except through
 * cli_err (one fprintf per message, so lines never interleave).
 */
#ifndef VDI_CLI_H
#define VDI_CLI_H

#include <stddef.h>
#include <stdint.h>

#define CLI_EXIT_OK    0
#define CLI_EXIT_FAIL  1
#define CLI_EXIT_USAGE 2

int cli_main(int argc, char **argv);
int cmd_exec(int argc, char **argv);
/* What a `vdi exec` run did, for vdi-sqlcmd's messages. */
struct exec_outcome {
	char statement[32];  /* "BACKUP DATABASE", ...; "" if none parsed */
	int kind_moves_data; /* BACKUP or RESTORE (not VERIFYONLY, ...) */
	uint64_t bytes;      /* database bytes moved */
	double seconds;
};
int cmd_exec_outcome(int argc, char **argv, struct exec_outcome *out);
/* `vdi-sqlcmd` (also when vdi is started as "sqlcmd"). */
int cmd_sqlcmd(int argc, char **argv);
int cmd_pipe(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_abort(int argc, char **argv);
int cmd_doctor(int argc, char **argv);

void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "vdi: <what>: <VD_E_NAME>: <vdi_last_error()>" */
void cli_vdi_err(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses a millisecond count for option `opt`: decimal digits, or
 * "infinite" for VDI_INFINITE.  0 or -1 (message printed). */
int cli_parse_ms(const char *opt, const char *s, uint32_t *out);
/* Parses an unsigned decimal in [min, max] for option `opt`. */
int cli_parse_uint(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Monotonic seconds. */
double cli_now(void);

/* Blocks SIGINT, SIGTERM, SIGHUP in the calling thread (call before
 * starting threads) and ignores SIGPIPE (writes then fail with EPIPE).
 * cli_signal_start runs fn(ctx, signo) on a dedicated thread when one
 * of the blocked signals arrives; cli_signal_stop ends that thread. */
void cli_signals_block(void);
int cli_signal_start(void (*fn)(void *ctx, int signo), void *ctx);
void cli_signal_stop(void);

#endif /* VDI_CLI_H */
