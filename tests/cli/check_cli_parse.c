/* SPDX-License-Identifier: MIT */
/*
 * check_cli_parse.c - the statement parser of `vdi exec` (core/cli/stmt.c):
 * every statement form, quoting, comments, defaults, and every error
 * message, table-driven.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stmt.h"
#include "vdi.h"

#define KNOWN \
	"BLOCKSIZE, MAXTRANSFERSIZE, BUFFERCOUNT, STATS, DESCRIPTION, DIFFERENTIAL, COPY_ONLY, SNAPSHOT, METADATA_ONLY, FORMAT, NOFORMAT, INIT, NOINIT, SKIP, NOSKIP, REWIND, NOREWIND, UNLOAD, NOUNLOAD, CHECKSUM, NO_CHECKSUM, COMPRESSION, NO_COMPRESSION, CONTINUE_AFTER_ERROR, STOP_ON_ERROR, NAME, MEDIANAME, MEDIADESCRIPTION, NO_TRUNCATE, FILE, REPLACE, RECOVERY, NORECOVERY, STANDBY, MOVE, STOPAT, FAULT_ABORT_AFTER, FAULT_STALL, FAULT_EXTRA_FLUSHES, FAULT_LATE_COMPLETE, FAULT_FAIL_AT, FAULT_STALL_AT"

static struct stmt st;
static char err[1024];

static void parse_ok(const char *text)
{
	int rc = stmt_parse(text, &st, err, sizeof(err));

	ck_assert_msg(rc == 0, "statement <%s> refused: %s", text, err);
}

START_TEST(test_issue_example)
{
	parse_ok(
		"BACKUP DATABASE MYDB TO VIRTUAL_DEVICE='{0D0F5BA0-B21A-4519-A961-A6E2292A17CA}' WITH BLOCKSIZE=4096, BUFFERCOUNT=20, MAXTRANSFERSIZE=524288");
	ck_assert_int_eq(st.kind, STMT_BACKUP);
	ck_assert_str_eq(st.db, "MYDB");
	ck_assert_uint_eq(st.ndev, 1);
	ck_assert_str_eq(st.dev[0], "{0D0F5BA0-B21A-4519-A961-A6E2292A17CA}");
	ck_assert_uint_eq(st.blocksize, 4096);
	ck_assert_uint_eq(st.buffercount, 20);
	ck_assert_uint_eq(st.maxtransfersize, 524288);
	ck_assert_uint_eq(st.given, OPT_BLOCKSIZE | OPT_BUFFERCOUNT | OPT_MAXTRANSFERSIZE);
}
END_TEST

START_TEST(test_forms)
{
	parse_ok(
		"restore database [My DB] from virtual_device = N'a', virtual_device='b' with replace;");
	ck_assert_int_eq(st.kind, STMT_RESTORE);
	ck_assert_str_eq(st.db, "My DB");
	ck_assert_uint_eq(st.ndev, 2);
	ck_assert_str_eq(st.dev[1], "b");
	ck_assert_int_eq(st.replace, 1);

	parse_ok("RESTORE VERIFYONLY FROM VIRTUAL_DEVICE='x'");
	ck_assert_int_eq(st.kind, STMT_VERIFYONLY);
	ck_assert_str_eq(st.db, "");

	parse_ok("Restore HeaderOnly From Virtual_Device='x' With Stats");
	ck_assert_int_eq(st.kind, STMT_HEADERONLY);
	ck_assert_uint_eq(st.stats, 10);
	ck_assert(st.given & OPT_STATS);

	parse_ok("RESTORE VERIFYONLY FROM VIRTUAL_DEVICE='x' WITH STATS = 5, BLOCKSIZE=65536");
	ck_assert_uint_eq(st.stats, 5);
	ck_assert_uint_eq(st.blocksize, 65536);
}
END_TEST

START_TEST(test_defaults)
{
	parse_ok("BACKUP DATABASE d TO VIRTUAL_DEVICE='a', VIRTUAL_DEVICE='b', VIRTUAL_DEVICE='c'");
	ck_assert_uint_eq(st.blocksize, 512);
	ck_assert_uint_eq(st.maxtransfersize, 65536);
	ck_assert_uint_eq(st.buffercount, 8);
	ck_assert_uint_eq(st.stats, 10);
	ck_assert_uint_eq(st.given, 0);
	ck_assert_int_eq(st.replace, 0);
}
END_TEST

START_TEST(test_quoting)
{
	parse_ok(
		"BACKUP DATABASE \"we\"\"ird\" TO VIRTUAL_DEVICE='it''s' WITH DESCRIPTION=N'nightly ''full'''");
	ck_assert_str_eq(st.db, "we\"ird");
	ck_assert_str_eq(st.dev[0], "it's");
	ck_assert_str_eq(st.description, "nightly 'full'");

	parse_ok("BACKUP DATABASE [a]]b] TO VIRTUAL_DEVICE=''''");
	ck_assert_str_eq(st.db, "a]b");
	ck_assert_str_eq(st.dev[0], "'");

	parse_ok("BACKUP DATABASE #tmp$1 TO VIRTUAL_DEVICE='x'");
	ck_assert_str_eq(st.db, "#tmp$1");
}
END_TEST

START_TEST(test_comments_and_space)
{
	parse_ok(
		"-- nightly\n  BACKUP /* the\n db */ DATABASE\tdb\r\nTO VIRTUAL_DEVICE='v' -- end\n ;  ");
	ck_assert_str_eq(st.db, "db");
	ck_assert_str_eq(st.dev[0], "v");
}
END_TEST

START_TEST(test_all_options)
{
	parse_ok(
		"BACKUP DATABASE d TO VIRTUAL_DEVICE='v' WITH FAULT_ABORT_AFTER=1000, FAULT_STALL=250, FAULT_EXTRA_FLUSHES=3, FAULT_LATE_COMPLETE=600000, BUFFERCOUNT=1024, MAXTRANSFERSIZE=1048576");
	ck_assert_uint_eq(st.fault_abort_after, 1000);
	ck_assert_uint_eq(st.fault_stall_ms, 250);
	ck_assert_uint_eq(st.fault_extra_flushes, 3);
	ck_assert_uint_eq(st.fault_late_complete_ms, 600000);
	ck_assert_uint_eq(st.buffercount, 1024);

	parse_ok(
		"RESTORE DATABASE d FROM VIRTUAL_DEVICE='v' WITH FAULT_ABORT_AFTER=9223372036854775807");
	ck_assert(st.fault_abort_after == 9223372036854775807ull);

	/* fault injection at a control command, named case-insensitively */
	parse_ok("BACKUP DATABASE d TO VIRTUAL_DEVICE='v' WITH FAULT_FAIL_AT='VDC_WriteMark', "
	         "FAULT_STALL_AT='vdc_getposition', FAULT_STALL=10");
	ck_assert_uint_eq(st.fault_fail_at, VDC_WriteMark);
	ck_assert_uint_eq(st.fault_stall_at, VDC_GetPosition);
	parse_ok("RESTORE DATABASE d FROM VIRTUAL_DEVICE='v' WITH FAULT_FAIL_AT='VDC_Load'");
	ck_assert_uint_eq(st.fault_fail_at, VDC_Load);
	parse_ok("RESTORE DATABASE d FROM VIRTUAL_DEVICE='v' WITH FAULT_STALL_AT='VDC_SkipMarks'");
	ck_assert_uint_eq(st.fault_stall_at, VDC_SkipMarks);
}
END_TEST

START_TEST(test_limits_accepted)
{
	static const char *ok[] = {
		"BACKUP DATABASE d TO VIRTUAL_DEVICE='v' WITH BLOCKSIZE=512",
		"BACKUP DATABASE d TO VIRTUAL_DEVICE='v' WITH BLOCKSIZE=65536",
		"BACKUP DATABASE d TO VIRTUAL_DEVICE='v' WITH MAXTRANSFERSIZE=65536",
		"BACKUP DATABASE d TO VIRTUAL_DEVICE='v' WITH MAXTRANSFERSIZE=4194304, BUFFERCOUNT=256",
		"BACKUP DATABASE d TO VIRTUAL_DEVICE='v' WITH BUFFERCOUNT=1",
		"BACKUP DATABASE d TO VIRTUAL_DEVICE='v' WITH STATS=100",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		parse_ok(ok[i]);
}
END_TEST

START_TEST(test_64_devices)
{
	char text[8192];
	size_t n = (size_t)snprintf(text, sizeof(text), "BACKUP DATABASE d TO VIRTUAL_DEVICE='d0'");

	for (int i = 1; i < 64; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, ", VIRTUAL_DEVICE='d%d'", i);
	parse_ok(text);
	ck_assert_uint_eq(st.ndev, 64);
	ck_assert_str_eq(st.dev[63], "d63");
	snprintf(text + n, sizeof(text) - n, ", VIRTUAL_DEVICE='d64'");
	ck_assert_int_eq(stmt_parse(text, &st, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "too many VIRTUAL_DEVICE clauses: at most 64 devices");
}
END_TEST

START_TEST(test_long_names)
{
	char name[200], text[512];

	memset(name, 'x', 127);
	name[127] = '\0';
	snprintf(text, sizeof(text), "BACKUP DATABASE [%s] TO VIRTUAL_DEVICE='%s'", name, name);
	parse_ok(text);
	ck_assert_uint_eq(strlen(st.db), 127);
	snprintf(text, sizeof(text), "BACKUP DATABASE d TO VIRTUAL_DEVICE='%sx'", name);
	ck_assert_int_eq(stmt_parse(text, &st, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "invalid VIRTUAL_DEVICE 'xxxx") == err, "%s", err);
	ck_assert_msg(strstr(err, "...': is longer than 127 bytes") != NULL, "%s", err);
	snprintf(text, sizeof(text), "BACKUP DATABASE [%sx] TO VIRTUAL_DEVICE='v'", name);
	ck_assert_int_eq(stmt_parse(text, &st, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "invalid database name 'xxx") == err, "%s", err);
}
END_TEST

/* Tokens longer than the lexer keeps (512 bytes) and the DESCRIPTION limit. */
START_TEST(test_huge_tokens)
{
	char big[700], text[1024];

	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	snprintf(text, sizeof(text), "BACKUP DATABASE d TO VIRTUAL_DEVICE='%s'", big);
	ck_assert_int_eq(stmt_parse(text, &st, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "...': is longer than 127 bytes") != NULL, "%s", err);

	memset(big, 'z', 256);
	big[256] = '\0';
	snprintf(text, sizeof(text),
	         "BACKUP DATABASE d TO VIRTUAL_DEVICE='v' WITH DESCRIPTION='%s'", big);
	ck_assert_int_eq(stmt_parse(text, &st, err, sizeof(err)), -1);
	ck_assert_str_eq(
		err,
		"invalid DESCRIPTION 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz...': must be a string of at most 255 bytes");
	big[255] = '\0';
	snprintf(text, sizeof(text),
	         "BACKUP DATABASE d TO VIRTUAL_DEVICE='v' WITH DESCRIPTION='%s'", big);
	parse_ok(text);
	ck_assert_uint_eq(strlen(st.description), 255);
}
END_TEST

/* Every error message, exactly. */
/* Every option of issue 12, in the statement it belongs to: the bits
 * given, and the one-line report of what the stand-in does not model. */
static const struct {
	const char *text;
	uint64_t given;
	const char *unmodelled;
} good[] = {
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH FORMAT, MAXTRANSFERSIZE=1048576",
	  OPT_FORMAT | OPT_MAXTRANSFERSIZE,
	  "FORMAT (a virtual device carries one new media stream per backup: no media header or earlier backup sets to check or keep)" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH DIFFERENTIAL, CHECKSUM, NO_COMPRESSION, STOP_ON_ERROR",
	  OPT_DIFFERENTIAL | OPT_CHECKSUM | OPT_NO_COMPRESSION | OPT_STOP_ON_ERROR, "" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH DIFFERENTIAL, COPY_ONLY",
	  OPT_DIFFERENTIAL | OPT_COPY_ONLY,
	  "COPY_ONLY (ignored with DIFFERENTIAL, as SQL Server ignores it)" },
	{ "BACKUP LOG d TO VIRTUAL_DEVICE='a' WITH COPY_ONLY, NO_TRUNCATE, INIT, SKIP, NOFORMAT",
	  OPT_COPY_ONLY | OPT_NO_TRUNCATE | OPT_INIT | OPT_SKIP | OPT_NOFORMAT,
	  "NOFORMAT (a virtual device carries one new media stream per backup: no media header or earlier backup sets to check or keep); INIT (a virtual device carries one new media stream per backup: no media header or earlier backup sets to check or keep); SKIP (a virtual device carries one new media stream per backup: no media header or earlier backup sets to check or keep); NO_TRUNCATE (the stand-in's log backups never truncate anything)" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH NOINIT, NOSKIP, COMPRESSION, NO_CHECKSUM, CONTINUE_AFTER_ERROR",
	  OPT_NOINIT | OPT_NOSKIP | OPT_COMPRESSION | OPT_NO_CHECKSUM | OPT_CONTINUE_AFTER_ERROR,
	  "NOINIT (a virtual device carries one new media stream per backup: no media header or earlier backup sets to check or keep); NOSKIP (a virtual device carries one new media stream per backup: no media header or earlier backup sets to check or keep); NO_CHECKSUM (every chunk carries its CRC32C regardless); COMPRESSION (pages are stored as they are); CONTINUE_AFTER_ERROR (the stand-in stops at the first damaged byte)" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH NAME='n', MEDIANAME=N'm', MEDIADESCRIPTION='md'",
	  OPT_NAME | OPT_MEDIANAME | OPT_MEDIADESCRIPTION,
	  "NAME (not stored in the backup); MEDIANAME (not stored in the backup); MEDIADESCRIPTION (not stored in the backup)" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH SNAPSHOT", OPT_SNAPSHOT, "" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH METADATA_ONLY", OPT_SNAPSHOT, "" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH SNAPSHOT, NORECOVERY",
	  OPT_SNAPSHOT | OPT_NORECOVERY, "" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH FILE=1, REPLACE, RECOVERY, MOVE 'd' TO '/x/y.mdf'",
	  OPT_FILE | OPT_REPLACE | OPT_RECOVERY | OPT_MOVE, "" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH REWIND, UNLOAD", OPT_REWIND | OPT_UNLOAD,
	  "REWIND (a tape option: a virtual device has no tape to position); UNLOAD (a tape option: a virtual device has no tape to position)" },
	{ "RESTORE LOG d FROM VIRTUAL_DEVICE='a' WITH NORECOVERY", OPT_NORECOVERY, "" },
	{ "RESTORE LOG d FROM VIRTUAL_DEVICE='a' WITH STANDBY='/tmp/undo', STOPAT='2026-12-07 11:00'",
	  OPT_STANDBY | OPT_STOPAT,
	  "STANDBY (restored as with NORECOVERY: no undo file is written); STOPAT (the stand-in's log backups hold no records to stop in: each is applied whole)" },
	{ "RESTORE FILELISTONLY FROM VIRTUAL_DEVICE='a' WITH FILE=1, MEDIANAME='m'",
	  OPT_FILE | OPT_MEDIANAME, "MEDIANAME (not stored in the backup)" },
	{ "RESTORE VERIFYONLY FROM VIRTUAL_DEVICE='a' WITH CHECKSUM, NOUNLOAD",
	  OPT_CHECKSUM | OPT_NOUNLOAD,
	  "NOUNLOAD (a tape option: a virtual device has no tape to position)" },
};

START_TEST(test_issue12_options)
{
	char line[2048];

	parse_ok(good[_i].text);
	ck_assert_msg(st.given == good[_i].given, "<%s>: given %#llx, want %#llx", good[_i].text,
	              (unsigned long long)st.given, (unsigned long long)good[_i].given);
	ck_assert_str_eq(stmt_unmodelled(&st, line, sizeof(line)), good[_i].unmodelled);
	ck_assert_int_eq(st.replace, (good[_i].given & OPT_REPLACE) != 0);
}
END_TEST

START_TEST(test_values_of_new_options)
{
	parse_ok(
		"RESTORE DATABASE [d] FROM VIRTUAL_DEVICE='a' WITH MOVE N'd' TO '/srv/it''s.mdf', MOVE 'd_log' TO '/srv/l.ldf', FILE = 7");
	ck_assert_uint_eq(st.nmove, 2);
	ck_assert_str_eq(st.move[0].from, "d");
	ck_assert_str_eq(st.move[0].to, "/srv/it's.mdf");
	ck_assert_str_eq(st.move[1].from, "d_log");
	ck_assert_uint_eq(st.file, 7);
	ck_assert_int_eq(st.log, 0);
	parse_ok(
		"RESTORE LOG d FROM VIRTUAL_DEVICE='a' WITH STANDBY='/u', STOPAT='2026-12-07T11:00:00'");
	ck_assert_int_eq(st.log, 1);
	ck_assert_int_eq(st.kind, STMT_RESTORE);
	ck_assert_str_eq(st.standby, "/u");
	ck_assert_str_eq(st.stopat, "2026-12-07T11:00:00");
	ck_assert_uint_eq(st.file, 1); /* default */
	parse_ok("BACKUP LOG [d] TO VIRTUAL_DEVICE='a', VIRTUAL_DEVICE='b' WITH NAME='nightly'");
	ck_assert_int_eq(st.kind, STMT_BACKUP);
	ck_assert_int_eq(st.log, 1);
	ck_assert_str_eq(st.name, "nightly");
	ck_assert_uint_eq(st.ndev, 2);
	parse_ok("RESTORE FILELISTONLY FROM VIRTUAL_DEVICE='a'");
	ck_assert_int_eq(st.kind, STMT_FILELISTONLY);
	/* valueless options no longer mean REPLACE */
	parse_ok("RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH NORECOVERY, CHECKSUM");
	ck_assert_int_eq(st.replace, 0);
}
END_TEST

static const struct {
	const char *text, *msg;
} bad[] = {
	{ "", "cannot parse statement: the statement is empty" },
	{ "  -- nothing\n", "cannot parse statement: the statement is empty" },
	{ "SELECT 1",
	  "cannot parse statement: expected BACKUP or RESTORE, got 'SELECT' at line 1, column 1" },
	{ "BACKUP TABLE d TO VIRTUAL_DEVICE='v'",
	  "cannot parse statement: expected DATABASE or LOG after BACKUP, got 'TABLE' at line 1, column 8" },
	{ "BACKUP DATABASE TO",
	  "cannot parse statement: expected TO after the database name, got end of statement at line 1, column 19" },
	{ "BACKUP DATABASE 'd' TO VIRTUAL_DEVICE='v'",
	  "cannot parse statement: expected a database name, got 'd' at line 1, column 17" },
	{ "BACKUP DATABASE @db TO VIRTUAL_DEVICE='v'",
	  "invalid database name '@db' at line 1, column 17: variables are not supported" },
	{ "BACKUP DATABASE d FROM VIRTUAL_DEVICE='v'",
	  "cannot parse statement: expected TO after the database name, got 'FROM' at line 1, column 19" },
	{ "RESTORE d FROM VIRTUAL_DEVICE='v'",
	  "cannot parse statement: expected DATABASE, LOG, VERIFYONLY, HEADERONLY or FILELISTONLY after RESTORE, got 'd' at line 1, column 9" },
	{ "RESTORE DATABASE d TO VIRTUAL_DEVICE='v'",
	  "cannot parse statement: expected FROM after RESTORE ..., got 'TO' at line 1, column 20" },
	{ "RESTORE VERIFYONLY d FROM VIRTUAL_DEVICE='v'",
	  "cannot parse statement: expected FROM after RESTORE ..., got 'd' at line 1, column 20" },
	{ "BACKUP DATABASE d TO DISK='/tmp/x'",
	  "unsupported backup device type 'DISK' at line 1, column 22: only VIRTUAL_DEVICE is supported" },
	{ "BACKUP DATABASE d TO",
	  "cannot parse statement: expected VIRTUAL_DEVICE, got end of statement at line 1, column 21" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE 'v'",
	  "cannot parse statement: expected '=' after VIRTUAL_DEVICE, got 'v' at line 1, column 37" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE=v",
	  "invalid VIRTUAL_DEVICE 'v' at line 1, column 37: must be a quoted string like 'name'" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE=''",
	  "invalid VIRTUAL_DEVICE '': must not be empty" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a/b'",
	  "invalid VIRTUAL_DEVICE 'a/b': must not contain '/' or '\\'" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a\\b'",
	  "invalid VIRTUAL_DEVICE 'a\\b': must not contain '/' or '\\'" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a\tb'",
	  "invalid VIRTUAL_DEVICE 'a\tb': must not contain control characters" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='..'",
	  "invalid VIRTUAL_DEVICE '..': must not be '.' or '..'" },
	{ "BACKUP DATABASE [a/b] TO VIRTUAL_DEVICE='v'",
	  "invalid database name 'a/b': must not contain '/' or '\\'" },
	{ "BACKUP DATABASE [.] TO VIRTUAL_DEVICE='v'",
	  "invalid database name '.': must not be '.' or '..'" },
	{ "BACKUP DATABASE [] TO VIRTUAL_DEVICE='v'",
	  "invalid database name '': must not be empty" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a', VIRTUAL_DEVICE='b', VIRTUAL_DEVICE='a'",
	  "invalid VIRTUAL_DEVICE 'a': device named twice (clauses 1 and 3)" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a', WITH BLOCKSIZE=512",
	  "cannot parse statement: expected VIRTUAL_DEVICE, got 'WITH' at line 1, column 42" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a",
	  "cannot parse statement: string opened at line 1, column 37 is not closed" },
	{ "BACKUP DATABASE [d TO VIRTUAL_DEVICE='a'",
	  "cannot parse statement: bracketed identifier opened at line 1, column 17 is not closed" },
	{ "BACKUP DATABASE \"d TO",
	  "cannot parse statement: quoted identifier opened at line 1, column 17 is not closed" },
	{ "BACKUP /* DATABASE",
	  "cannot parse statement: comment opened at line 1, column 8 is not closed" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' extra",
	  "cannot parse statement: expected WITH, ',' or end of statement, got 'extra' at line 1, column 41" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a'; BACKUP",
	  "cannot parse statement: expected WITH, ',' or end of statement, got 'BACKUP' at line 1, column 42" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH",
	  "cannot parse statement: expected an option name after WITH or ',', got end of statement at line 1, column 45" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE=512,",
	  "cannot parse statement: expected an option name after WITH or ',', got end of statement at line 1, column 60" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH ENCRYPTION",
	  "unknown option 'ENCRYPTION' at line 1, column 46: known options are " KNOWN },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH REPLACE",
	  "option REPLACE is not valid with BACKUP DATABASE" },
	{ "RESTORE VERIFYONLY FROM VIRTUAL_DEVICE='a' WITH REPLACE",
	  "option REPLACE is not valid with RESTORE VERIFYONLY" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH DESCRIPTION='x'",
	  "option DESCRIPTION is not valid with RESTORE DATABASE" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH FAULT_EXTRA_FLUSHES=1",
	  "option FAULT_EXTRA_FLUSHES is not valid with RESTORE DATABASE" },
	{ "RESTORE HEADERONLY FROM VIRTUAL_DEVICE='a' WITH FAULT_LATE_COMPLETE=1",
	  "option FAULT_LATE_COMPLETE is not valid with RESTORE HEADERONLY" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE=512, blocksize=1024",
	  "option BLOCKSIZE given twice" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE 512",
	  "cannot parse statement: expected '=' after the option name, got '512' at line 1, column 56" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE=",
	  "invalid BLOCKSIZE: missing value after '=' at line 1, column 56" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE=, STATS",
	  "invalid BLOCKSIZE: missing value after '=' at line 1, column 56" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE=1000",
	  "invalid BLOCKSIZE '1000': must be a power of two from 512 to 65536" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE=256",
	  "invalid BLOCKSIZE '256': must be a power of two from 512 to 65536" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE=131072",
	  "invalid BLOCKSIZE '131072': must be a power of two from 512 to 65536" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE=0",
	  "invalid BLOCKSIZE '0': must be a power of two from 512 to 65536" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE=64KB",
	  "invalid BLOCKSIZE '64KB': must be a plain decimal number of bytes (no sign, no K/KB/MB suffix); must be a power of two from 512 to 65536" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE='512'",
	  "invalid BLOCKSIZE '512': must be a plain decimal number of bytes (no sign, no K/KB/MB suffix); must be a power of two from 512 to 65536" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE=-512",
	  "invalid BLOCKSIZE '-': must be a plain decimal number of bytes (no sign, no K/KB/MB suffix); must be a power of two from 512 to 65536" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH MAXTRANSFERSIZE=1MB",
	  "invalid MAXTRANSFERSIZE '1MB': must be a plain decimal number of bytes (no sign, no K/KB/MB suffix); must be a multiple of 65536 from 65536 to 4194304" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH MAXTRANSFERSIZE=100000",
	  "invalid MAXTRANSFERSIZE '100000': must be a multiple of 65536 from 65536 to 4194304" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH MAXTRANSFERSIZE=0",
	  "invalid MAXTRANSFERSIZE '0': must be a multiple of 65536 from 65536 to 4194304" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH MAXTRANSFERSIZE=4259840",
	  "invalid MAXTRANSFERSIZE '4259840': must be a multiple of 65536 from 65536 to 4194304" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BUFFERCOUNT=0",
	  "invalid BUFFERCOUNT '0': must be from 1 to 1024" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BUFFERCOUNT=1025",
	  "invalid BUFFERCOUNT '1025': must be from 1 to 1024" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BUFFERCOUNT=99999999999999999999999",
	  "invalid BUFFERCOUNT '99999999999999999999999': must be a plain decimal number of units (no sign, no K/KB/MB suffix); must be from 1 to 1024" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BUFFERCOUNT=257, MAXTRANSFERSIZE=4194304",
	  "invalid BUFFERCOUNT '257' with MAXTRANSFERSIZE '4194304': buffers would take 1077936128 bytes, at most 1073741824 allowed" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH STATS=0",
	  "invalid STATS '0': must be from 1 to 100" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH STATS=101",
	  "invalid STATS '101': must be from 1 to 100" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH DESCRIPTION=5",
	  "invalid DESCRIPTION '5' at line 1, column 58: must be a string of at most 255 bytes" },
	/* the options of issue 12: where each is valid, and what contradicts */
	{ "BACKUP LOG d TO VIRTUAL_DEVICE='a' WITH DIFFERENTIAL",
	  "option DIFFERENTIAL is not valid with BACKUP LOG" },
	{ "RESTORE LOG d FROM VIRTUAL_DEVICE='a' WITH REPLACE",
	  "option REPLACE is not valid with RESTORE LOG" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH FORMAT",
	  "option FORMAT is not valid with RESTORE DATABASE" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH NORECOVERY",
	  "option NORECOVERY is not valid with BACKUP DATABASE" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH FILE=1",
	  "option FILE is not valid with BACKUP DATABASE" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH NO_TRUNCATE",
	  "option NO_TRUNCATE is not valid with BACKUP DATABASE" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH STOPAT='2026-01-01'",
	  "option STOPAT is not valid with RESTORE DATABASE" },
	{ "RESTORE LOG d FROM VIRTUAL_DEVICE='a' WITH MOVE 'd' TO '/x'",
	  "option MOVE is not valid with RESTORE LOG" },
	{ "BACKUP LOG d TO VIRTUAL_DEVICE='a' WITH SNAPSHOT",
	  "option SNAPSHOT is not valid with BACKUP LOG" },
	{ "RESTORE HEADERONLY FROM VIRTUAL_DEVICE='a' WITH RECOVERY",
	  "option RECOVERY is not valid with RESTORE HEADERONLY" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH INIT, NOINIT",
	  "options INIT and NOINIT cannot be used together" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH NOFORMAT, FORMAT",
	  "options FORMAT and NOFORMAT cannot be used together" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH SKIP, NOSKIP",
	  "options SKIP and NOSKIP cannot be used together" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH CHECKSUM, NO_CHECKSUM",
	  "options CHECKSUM and NO_CHECKSUM cannot be used together" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH NO_COMPRESSION, COMPRESSION",
	  "options COMPRESSION and NO_COMPRESSION cannot be used together" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH STOP_ON_ERROR, CONTINUE_AFTER_ERROR",
	  "options CONTINUE_AFTER_ERROR and STOP_ON_ERROR cannot be used together" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH REWIND, NOREWIND",
	  "options REWIND and NOREWIND cannot be used together" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH UNLOAD, NOUNLOAD",
	  "options UNLOAD and NOUNLOAD cannot be used together" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH RECOVERY, NORECOVERY",
	  "options RECOVERY and NORECOVERY cannot be used together" },
	{ "RESTORE LOG d FROM VIRTUAL_DEVICE='a' WITH STANDBY='/u', RECOVERY",
	  "options RECOVERY and STANDBY cannot be used together" },
	{ "RESTORE LOG d FROM VIRTUAL_DEVICE='a' WITH NORECOVERY, STANDBY='/u'",
	  "options NORECOVERY and STANDBY cannot be used together" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH SNAPSHOT, DIFFERENTIAL",
	  "options SNAPSHOT and DIFFERENTIAL cannot be used together" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH METADATA_ONLY, COMPRESSION",
	  "options SNAPSHOT and COMPRESSION cannot be used together" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH SNAPSHOT, METADATA_ONLY",
	  "option METADATA_ONLY given twice" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH FORMAT, FORMAT",
	  "option FORMAT given twice" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH FILE=0",
	  "invalid FILE '0': must be from 1 to 2147483647" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH FILE=2147483648",
	  "invalid FILE '2147483648': must be from 1 to 2147483647" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH MOVE 'd' '/x'",
	  "cannot parse statement: expected TO after MOVE 'logical name', got '/x' at line 1, column 58" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH MOVE d TO '/x'",
	  "invalid MOVE logical file name 'd' at line 1, column 54: must be a quoted logical file name of 1 to 127 bytes" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH MOVE 'd' TO ''",
	  "invalid MOVE target '': must be 'logical name' TO 'path of 1 to 1024 bytes'" },
	{ "RESTORE DATABASE d FROM VIRTUAL_DEVICE='a' WITH MOVE 'd' TO '/x', MOVE 'D' TO '/y'",
	  "invalid MOVE 'D': logical file moved twice (clauses 1 and 2)" },
	{ "RESTORE LOG d FROM VIRTUAL_DEVICE='a' WITH STANDBY=''",
	  "invalid STANDBY '': must be a file name of 1 to 1024 bytes" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH NAME=x",
	  "invalid NAME 'x' at line 1, column 51: must be a string of at most 127 bytes" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH DESCRIPTION='a\nb'",
	  "invalid DESCRIPTION 'a\nb': must not contain control characters" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH FAULT_STALL=600001",
	  "invalid FAULT_STALL '600001': must be from 0 to 600000 (milliseconds)" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH FAULT_LATE_COMPLETE=700000",
	  "invalid FAULT_LATE_COMPLETE '700000': must be from 0 to 600000 (milliseconds)" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH FAULT_FAIL_AT='VDC_Read'",
	  "invalid FAULT_FAIL_AT 'VDC_Read': must name a command: 'VDC_Rewind', 'VDC_WriteMark', "
	  "'VDC_SkipMarks', 'VDC_Load', 'VDC_GetPosition', 'VDC_SetPosition', 'VDC_ClearError', "
	  "'VDC_Discard', 'VDC_Flush', 'VDC_Complete'" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH FAULT_STALL_AT=5",
	  "invalid FAULT_STALL_AT '5' at line 1, column 61: must name a command: 'VDC_Rewind', "
	  "'VDC_WriteMark', 'VDC_SkipMarks', 'VDC_Load', 'VDC_GetPosition', 'VDC_SetPosition', "
	  "'VDC_ClearError', 'VDC_Discard', 'VDC_Flush', 'VDC_Complete'" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH FAULT_EXTRA_FLUSHES=1001",
	  "invalid FAULT_EXTRA_FLUSHES '1001': must be from 0 to 1000" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH FAULT_ABORT_AFTER=9223372036854775808",
	  "invalid FAULT_ABORT_AFTER '9223372036854775808': must be from 0 to 9223372036854775807" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH FAULT_ABORT_AFTER=1k",
	  "invalid FAULT_ABORT_AFTER '1k': must be a plain decimal number of units (no sign, no K/KB/MB suffix); must be from 0 to 9223372036854775807" },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a' WITH BLOCKSIZE=512 ! ",
	  "cannot parse statement: expected WITH, ',' or end of statement, got '!' at line 1, column 60" },
	{ "BACKUP DATABASE d\nTO VIRTUAL_DEVICE='a'\nWITH BLOCKSIZE=512,\n  BOGUS",
	  "unknown option 'BOGUS' at line 4, column 3: known options are " KNOWN },
	{ "BACKUP DATABASE d TO VIRTUAL_DEVICE='a'\x01",
	  "cannot parse statement: expected WITH, ',' or end of statement, got character 0x01 at line 1, column 40" },
};

START_TEST(test_errors)
{
	const char *text = bad[_i].text;

	memset(err, 'z', sizeof(err));
	ck_assert_msg(stmt_parse(text, &st, err, sizeof(err)) == -1, "statement <%s> accepted",
	              text);
	ck_assert_msg(strcmp(err, bad[_i].msg) == 0, "statement <%s>\n got: %s\nwant: %s", text,
	              err, bad[_i].msg);
}
END_TEST

START_TEST(test_error_truncation)
{
	char small[16];

	ck_assert_int_eq(stmt_parse("SELECT", &st, small, sizeof(small)), -1);
	ck_assert_uint_eq(strlen(small), sizeof(small) - 1);
}
END_TEST

START_TEST(test_kind_names)
{
	ck_assert_str_eq(stmt_kind_name(STMT_BACKUP), "BACKUP DATABASE");
	ck_assert_str_eq(stmt_kind_name(STMT_RESTORE), "RESTORE DATABASE");
	ck_assert_str_eq(stmt_kind_name(STMT_VERIFYONLY), "RESTORE VERIFYONLY");
	ck_assert_str_eq(stmt_kind_name(STMT_HEADERONLY), "RESTORE HEADERONLY");
	ck_assert_str_eq(stmt_kind_name(STMT_FILELISTONLY), "RESTORE FILELISTONLY");
	parse_ok("BACKUP LOG d TO VIRTUAL_DEVICE='a'");
	ck_assert_str_eq(stmt_name(&st), "BACKUP LOG");
	parse_ok("RESTORE LOG d FROM VIRTUAL_DEVICE='a'");
	ck_assert_str_eq(stmt_name(&st), "RESTORE LOG");
	parse_ok("RESTORE DATABASE d FROM VIRTUAL_DEVICE='a'");
	ck_assert_str_eq(stmt_name(&st), "RESTORE DATABASE");
	ck_assert_ptr_null(stmt_name_problem("ok name"));
	ck_assert_str_eq(stmt_name_problem("\x7f"), "must not contain control characters");
}
END_TEST

static Suite *parse_suite(void)
{
	Suite *s = suite_create("cli_parse");
	TCase *tc = tcase_create("parse");

	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_issue_example);
	tcase_add_test(tc, test_forms);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_quoting);
	tcase_add_test(tc, test_comments_and_space);
	tcase_add_test(tc, test_all_options);
	tcase_add_test(tc, test_limits_accepted);
	tcase_add_test(tc, test_64_devices);
	tcase_add_test(tc, test_long_names);
	tcase_add_test(tc, test_huge_tokens);
	tcase_add_loop_test(tc, test_errors, 0, (int)(sizeof(bad) / sizeof(bad[0])));
	tcase_add_test(tc, test_error_truncation);
	tcase_add_loop_test(tc, test_issue12_options, 0, (int)(sizeof(good) / sizeof(good[0])));
	tcase_add_test(tc, test_values_of_new_options);
	tcase_add_test(tc, test_kind_names);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(parse_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
