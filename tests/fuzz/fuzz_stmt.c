/* SPDX-License-Identifier: MIT */
/*
 * fuzz_stmt.c - libFuzzer harness for the statement parser of `vdi exec`
 * (core/cli/stmt.h).
 *
 * The input is the statement text (cut at the first NUL, as a C string
 * is).  Besides the sanitizers, the harness checks the contract of
 * stmt_parse() on every input:
 *   - it returns 0 or -1;
 *   - on -1 the message is non-empty, NUL-terminated within errlen and
 *     has no trailing period; a short err buffer is never overrun (the
 *     buffer is exactly errlen bytes of heap, so ASan sees an overrun);
 *   - on 0 every field is inside the range stmt.h documents (kind,
 *     device count and names, unique devices, database name, every
 *     option), options given only for the statements that allow them,
 *     and the defaults filled in;
 *   - the result does not depend on the size of the err buffer.
 * A violated rule is reported with a message and abort(), so libFuzzer
 * keeps the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stmt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                              \
	do {                                                                   \
		fprintf(stderr, "fuzz_stmt: contract violated: " __VA_ARGS__); \
		fputc('\n', stderr);                                           \
		abort();                                                       \
	} while (0)

static int is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static void check_name(const char *name, size_t cap, const char *what)
{
	const char *why;

	if (strnlen(name, cap) == cap)
		FAIL("%s is not NUL-terminated", what);
	why = stmt_name_problem(name);
	if (why)
		FAIL("%s '%s' accepted but %s", what, name, why);
}

static void check_ok(const struct stmt *st)
{
	uint64_t backup_only = OPT_DESCRIPTION | OPT_FAULT_EXTRA_FLUSHES | OPT_FAULT_LATE_COMPLETE |
	                       OPT_DIFFERENTIAL | OPT_COPY_ONLY | OPT_FORMAT | OPT_NOFORMAT |
	                       OPT_INIT | OPT_NOINIT | OPT_SKIP | OPT_NOSKIP | OPT_COMPRESSION |
	                       OPT_NO_COMPRESSION | OPT_NAME | OPT_MEDIADESCRIPTION |
	                       OPT_NO_TRUNCATE;
	uint64_t restore_only = OPT_FILE | OPT_RECOVERY | OPT_NORECOVERY | OPT_STANDBY | OPT_MOVE |
	                        OPT_STOPAT | OPT_REPLACE;
	static const uint64_t pairs[][2] = {
		{ OPT_FORMAT, OPT_NOFORMAT },
		{ OPT_INIT, OPT_NOINIT },
		{ OPT_SKIP, OPT_NOSKIP },
		{ OPT_REWIND, OPT_NOREWIND },
		{ OPT_UNLOAD, OPT_NOUNLOAD },
		{ OPT_CHECKSUM, OPT_NO_CHECKSUM },
		{ OPT_COMPRESSION, OPT_NO_COMPRESSION },
		{ OPT_CONTINUE_AFTER_ERROR, OPT_STOP_ON_ERROR },
		{ OPT_RECOVERY, OPT_NORECOVERY },
		{ OPT_RECOVERY, OPT_STANDBY },
		{ OPT_NORECOVERY, OPT_STANDBY },
		{ OPT_SNAPSHOT, OPT_DIFFERENTIAL },
		{ OPT_SNAPSHOT, OPT_COMPRESSION },
	};
	char line[4096];

	if (st->kind < STMT_BACKUP || st->kind > STMT_FILELISTONLY)
		FAIL("kind %d", (int)st->kind);
	if (st->kind == STMT_BACKUP || st->kind == STMT_RESTORE)
		check_name(st->db, sizeof(st->db), "database name");
	else if (st->db[0])
		FAIL("%s with a database name '%s'", stmt_kind_name(st->kind), st->db);
	if (st->ndev < 1 || st->ndev > STMT_MAX_DEVICES)
		FAIL("%u devices", st->ndev);
	for (unsigned i = 0; i < st->ndev; i++) {
		check_name(st->dev[i], sizeof(st->dev[i]), "device name");
		for (unsigned j = 0; j < i; j++)
			if (!strcmp(st->dev[i], st->dev[j]))
				FAIL("device '%s' given twice", st->dev[i]);
	}
	if (st->given & ~(OPT_LAST * 2 - 1))
		FAIL("unknown option bits 0x%llx", (unsigned long long)st->given);
	/* a fault command is one the stand-in sends, and the code of its name */
	if (!(st->given & OPT_FAULT_FAIL_AT) != !st->fault_fail_at ||
	    ((st->given & OPT_FAULT_FAIL_AT) &&
	     stmt_fault_command(st->fault_at_name) != st->fault_fail_at))
		FAIL("FAULT_FAIL_AT '%s' parsed as %u", st->fault_at_name, st->fault_fail_at);
	if (!(st->given & OPT_FAULT_STALL_AT) != !st->fault_stall_at ||
	    ((st->given & OPT_FAULT_STALL_AT) &&
	     stmt_fault_command(st->fault_stall_name) != st->fault_stall_at))
		FAIL("FAULT_STALL_AT '%s' parsed as %u", st->fault_stall_name, st->fault_stall_at);
	if (st->log && st->kind != STMT_BACKUP && st->kind != STMT_RESTORE)
		FAIL("LOG with %s", stmt_kind_name(st->kind));
	if (st->kind != STMT_RESTORE && (st->given & restore_only & ~OPT_FILE))
		FAIL("RESTORE-only option with %s", stmt_kind_name(st->kind));
	if (st->kind == STMT_BACKUP && (st->given & OPT_FILE))
		FAIL("FILE with BACKUP");
	if (st->log && (st->given & (OPT_DIFFERENTIAL | OPT_SNAPSHOT | OPT_REPLACE | OPT_MOVE)))
		FAIL("a database-only option with %s", stmt_name(st));
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
		if ((st->given & pairs[i][0]) && (st->given & pairs[i][1]))
			FAIL("contradicting options 0x%llx and 0x%llx both accepted",
			     (unsigned long long)pairs[i][0], (unsigned long long)pairs[i][1]);
	if (st->nmove > STMT_MAX_MOVES || (!st->nmove != !(st->given & OPT_MOVE)))
		FAIL("%u MOVE clauses", st->nmove);
	for (unsigned i = 0; i < st->nmove; i++)
		if (!st->move[i].from[0] || !st->move[i].to[0] ||
		    strnlen(st->move[i].to, sizeof(st->move[i].to)) == sizeof(st->move[i].to))
			FAIL("MOVE clause %u empty or unterminated", i + 1);
	if (st->file < 1 || st->file > INT32_MAX)
		FAIL("file %u", st->file);
	if (strnlen(stmt_unmodelled(st, line, sizeof(line)), sizeof(line)) == sizeof(line))
		FAIL("unmodelled line not terminated");
	if (st->kind != STMT_BACKUP && (st->given & backup_only))
		FAIL("BACKUP-only option with %s", stmt_kind_name(st->kind));
	if (st->kind != STMT_RESTORE && (st->given & OPT_REPLACE))
		FAIL("REPLACE with %s", stmt_kind_name(st->kind));
	if (!!st->replace != !!(st->given & OPT_REPLACE))
		FAIL("replace %d without the option", st->replace);
	if (!is_pow2(st->blocksize) || st->blocksize < 512 || st->blocksize > 65536)
		FAIL("blocksize %u", st->blocksize);
	if (!(st->given & OPT_BLOCKSIZE) && st->blocksize != 512)
		FAIL("default blocksize %u", st->blocksize);
	if (st->maxtransfersize < 65536 || st->maxtransfersize > 4194304 ||
	    st->maxtransfersize % 65536)
		FAIL("maxtransfersize %u", st->maxtransfersize);
	if (!(st->given & OPT_MAXTRANSFERSIZE) && st->maxtransfersize != 65536)
		FAIL("default maxtransfersize %u", st->maxtransfersize);
	if (st->buffercount < 1 || st->buffercount > STMT_MAX_BUFFERCOUNT)
		FAIL("buffercount %u", st->buffercount);
	if (!(st->given & OPT_BUFFERCOUNT) && st->buffercount != 2 * st->ndev + 2)
		FAIL("default buffercount %u for %u devices", st->buffercount, st->ndev);
	if ((uint64_t)st->buffercount * st->maxtransfersize > STMT_MAX_BUFFER_BYTES)
		FAIL("buffers of %u x %u bytes", st->buffercount, st->maxtransfersize);
	if (st->stats < 1 || st->stats > 100)
		FAIL("stats %u", st->stats);
	if (strnlen(st->description, sizeof(st->description)) > STMT_MAX_DESCRIPTION)
		FAIL("description of more than %d bytes", STMT_MAX_DESCRIPTION);
	for (const char *c = st->description; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			FAIL("control character 0x%02x in the description", (unsigned char)*c);
	if (st->description[0] && !(st->given & OPT_DESCRIPTION))
		FAIL("description without the option");
	if (st->fault_abort_after > INT64_MAX)
		FAIL("fault_abort_after %llu", (unsigned long long)st->fault_abort_after);
	if (st->fault_stall_ms > STMT_MAX_MS || st->fault_late_complete_ms > STMT_MAX_MS)
		FAIL("fault times %u / %u ms", st->fault_stall_ms, st->fault_late_complete_ms);
	if (st->fault_extra_flushes > 1000)
		FAIL("fault_extra_flushes %u", st->fault_extra_flushes);
}

static void check_err(const char *err, size_t errlen)
{
	size_t n = strnlen(err, errlen);

	if (n == errlen)
		FAIL("message not NUL-terminated within %zu bytes", errlen);
	if (errlen > 1 && n == 0)
		FAIL("-1 with an empty message");
	/* A message cut by a short buffer may end anywhere; a whole one
	 * must follow the house style: no trailing period. */
	if (n + 1 < errlen && n > 0 && err[n - 1] == '.' && (n < 3 || strcmp(err + n - 3, "...")))
		FAIL("message with a trailing period: %s", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t short_lens[] = { 1, 2, 17 };
	char *text = malloc(size + 1);
	struct stmt st, st2;
	char *err;
	size_t errlen = 512;
	int rc, rc2;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	err = malloc(errlen);
	if (!err)
		abort();
	rc = stmt_parse(text, &st, err, errlen);
	if (rc != 0 && rc != -1)
		FAIL("stmt_parse returned %d", rc);
	if (rc == 0)
		check_ok(&st);
	else
		check_err(err, errlen);
	free(err);

	/* Same text, short message buffer: same verdict, no overrun. */
	errlen = short_lens[size % 3];
	err = malloc(errlen);
	if (!err)
		abort();
	rc2 = stmt_parse(text, &st2, err, errlen);
	if (rc2 != rc)
		FAIL("verdict %d with a %zu-byte message buffer, %d with 512", rc2, errlen, rc);
	if (rc2 == 0 && memcmp(&st, &st2, sizeof(st)) != 0)
		FAIL("result depends on the message buffer size");
	if (rc2 != 0 && strnlen(err, errlen) == errlen)
		FAIL("short message buffer not NUL-terminated");
	free(err);
	free(text);
	return 0;
}
