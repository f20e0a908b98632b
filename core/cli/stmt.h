/* SPDX-License-Identifier: MIT */
/*
 * stmt.h - the T-SQL subset understood by `vdi exec`.
 *
 * Pure: no engine, no I/O.  stmt_parse() turns one statement into a
 * struct stmt and validates every value before anything starts, so a bad
 * statement is refused with one message that names the option, the value
 * and the allowed range.
 *
 * Grammar (keywords case-insensitive, T-SQL quoting and comments):
 *
 *   BACKUP DATABASE db TO devices [WITH options] [;]
 *   RESTORE DATABASE db FROM devices [WITH options] [;]
 *   RESTORE VERIFYONLY FROM devices [WITH options] [;]
 *   RESTORE HEADERONLY FROM devices [WITH options] [;]
 *
 *   devices := VIRTUAL_DEVICE = 'name' [, VIRTUAL_DEVICE = 'name' ...]
 *   db      := identifier | [bracketed]]] | "quoted"""
 *   string  := 'it''s' | N'unicode'
 *   comments: "--" to end of line, and C-style block comments
 *
 * Options (WITH a, b = 1, ...; each at most once):
 *   BLOCKSIZE = n        power of two, 512..65536           (default 512)
 *   MAXTRANSFERSIZE = n  multiple of 65536, 65536..4194304  (default 65536)
 *   BUFFERCOUNT = n      1..1024, and BUFFERCOUNT x MAXTRANSFERSIZE at most
 *                        1 GiB                  (default 2 per device + 2)
 *   REPLACE              RESTORE DATABASE only: overwrite an existing file
 *   STATS [= n]          progress step in percent, 1..100 (default 10)
 *   DESCRIPTION = 'text' BACKUP only: up to 255 bytes, stored in the backup
 *   FAULT_ABORT_AFTER = n   fault injection: abort the set once n data
 *                           bytes moved (0..2^63)
 *   FAULT_STALL = ms        each device pauses ms (0..600000) after its
 *                           first chunk
 *   FAULT_EXTRA_FLUSHES = n BACKUP only: n (0..1000) extra VDC_Flush
 *                           commands on every device, mid-stream from the
 *                           stripe header on (docs/vdi.1)
 *   FAULT_LATE_COMPLETE = ms BACKUP only: wait ms (0..600000) before
 *                           sending VDC_Complete
 * Numbers are plain decimal digits: no sign, no K/KB/MB suffix.
 *
 * Names: 1..127 bytes, no '/', '\\' or control characters, not "." or
 * ".." (database and device names alike); 1..64 devices with unique
 * names.
 */
#ifndef VDI_CLI_STMT_H
#define VDI_CLI_STMT_H

#include <stddef.h>
#include <stdint.h>

#define STMT_MAX_NAME         127
#define STMT_MAX_DEVICES      64
#define STMT_MAX_DESCRIPTION  255
#define STMT_MAX_BUFFERCOUNT  1024
#define STMT_MAX_BUFFER_BYTES (1024ull * 1024 * 1024)
#define STMT_MAX_MS           600000

enum stmt_kind {
	STMT_BACKUP = 1,
	STMT_RESTORE,
	STMT_VERIFYONLY,
	STMT_HEADERONLY,
};

/* Bits of stmt.given: which options appeared in the statement. */
enum {
	OPT_BLOCKSIZE = 1 << 0,
	OPT_MAXTRANSFERSIZE = 1 << 1,
	OPT_BUFFERCOUNT = 1 << 2,
	OPT_REPLACE = 1 << 3,
	OPT_STATS = 1 << 4,
	OPT_DESCRIPTION = 1 << 5,
	OPT_FAULT_ABORT_AFTER = 1 << 6,
	OPT_FAULT_STALL = 1 << 7,
	OPT_FAULT_EXTRA_FLUSHES = 1 << 8,
	OPT_FAULT_LATE_COMPLETE = 1 << 9,
};

struct stmt {
	enum stmt_kind kind;
	char db[STMT_MAX_NAME + 1]; /* empty for VERIFYONLY/HEADERONLY */
	unsigned ndev;
	char dev[STMT_MAX_DEVICES][STMT_MAX_NAME + 1];
	unsigned given; /* OPT_* bits */
	uint32_t blocksize;
	uint32_t maxtransfersize;
	uint32_t buffercount;
	int replace;
	uint32_t stats;
	char description[STMT_MAX_DESCRIPTION + 1];
	uint64_t fault_abort_after;
	uint32_t fault_stall_ms;
	uint32_t fault_extra_flushes;
	uint32_t fault_late_complete_ms;
};

/* Parses and validates one statement.  Returns 0, or -1 with a message
 * (no trailing period) in err.  Defaults are filled in for options not
 * given. */
int stmt_parse(const char *text, struct stmt *st, char *err, size_t errlen);

/* "BACKUP DATABASE", "RESTORE VERIFYONLY", ... */
const char *stmt_kind_name(enum stmt_kind kind);

/* Checks a database or device name; returns NULL or why it is invalid. */
const char *stmt_name_problem(const char *name);

#endif /* VDI_CLI_STMT_H */
