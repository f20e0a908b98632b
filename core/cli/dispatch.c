/* SPDX-License-Identifier: MIT */
/*
 * dispatch.c - `vdi`'s usage and the dispatch to each command (cli.h),
 * above all of them; `vdi-sqlcmd` by the program's name.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

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
	"      --generate BYTES      BACKUP: a generated database, no file read\n"
	"      --both-media          configure VDF_WriteMedia and VDF_ReadMedia (D18)\n"
	"\n"
	"  vdi-sqlcmd [-S srv] [-U user] [-P pw] [-b] {-Q query | -i file}...\n"
	"                            sqlcmd's options; each batch runs with vdi exec\n"
	"\n"
	"  vdi pipe [options] -s SET [FILE...]  be the backup application (client)\n"
	"      -s, --set NAME        set name (device 0); device i>0 is NAME<i>\n"
	"      -n, --devices N       device count, 1..64 (default: number of FILEs, or 1)\n"
	"      -R, --request-complete  ask for VDC_Complete at the end of a backup\n"
	"      -F, --features LIST   comma-separated: one of pipe (default), tape, disk;\n"
	"                            removable (pipe, disk; tape has it), discard,\n"
	"                            request-complete\n"
	"      --volume-size BYTES   removable: a backup medium holds BYTES; media are\n"
	"                            FILE, FILE.1, FILE.2 ... (a restore reads them)\n"
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
