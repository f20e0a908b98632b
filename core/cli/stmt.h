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
 *   BACKUP { DATABASE | LOG } db TO devices [WITH options] [;]
 *   RESTORE { DATABASE | LOG } db FROM devices [WITH options] [;]
 *   RESTORE { VERIFYONLY | HEADERONLY | FILELISTONLY } FROM devices
 *           [WITH options] [;]
 *
 *   devices := VIRTUAL_DEVICE = 'name' [, VIRTUAL_DEVICE = 'name' ...]
 *   db      := identifier | [bracketed]]] | "quoted"""
 *   string  := 'it''s' | N'unicode'
 *   comments: "--" to end of line, and C-style block comments
 *
 * Options (WITH a, b = 1, ...; each at most once except MOVE): the table
 * optdefs[] in stmt.c holds, for each, the statements it is valid with,
 * its value rule, the options it contradicts (refused, as SQL Server
 * refuses them) and, for the ones the stand-in accepts but does not model,
 * the reason stmt_unmodelled() reports.  In short:
 *   BLOCKSIZE = n        power of two, 512..65536           (default 512)
 *   MAXTRANSFERSIZE = n  multiple of 65536, 65536..4194304  (default 65536)
 *   BUFFERCOUNT = n      1..1024, and BUFFERCOUNT x MAXTRANSFERSIZE at most
 *                        1 GiB                  (default 2 per device + 2)
 *   STATS [= n]          progress step in percent, 1..100 (default 10)
 *   DESCRIPTION = 'text' BACKUP only: up to 255 bytes, stored in the backup
 *   DIFFERENTIAL, COPY_ONLY       BACKUP DATABASE (COPY_ONLY also LOG)
 *   SNAPSHOT | METADATA_ONLY      BACKUP DATABASE, RESTORE DATABASE
 *   FORMAT | NOFORMAT, INIT | NOINIT, SKIP | NOSKIP, REWIND | NOREWIND,
 *   UNLOAD | NOUNLOAD, CHECKSUM | NO_CHECKSUM, COMPRESSION |
 *   NO_COMPRESSION, CONTINUE_AFTER_ERROR | STOP_ON_ERROR, NAME = 'x',
 *   MEDIANAME = 'x', MEDIADESCRIPTION = 'x', NO_TRUNCATE (BACKUP LOG)
 *   FILE = n             RESTORE: backup set on the media, 1..2147483647
 *   REPLACE              RESTORE DATABASE: overwrite an existing database
 *   RECOVERY | NORECOVERY | STANDBY = 'undo file'   RESTORE DATABASE/LOG
 *   MOVE 'logical' TO 'path'   RESTORE DATABASE, up to 16 times
 *   STOPAT = 'time'      RESTORE LOG
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
#define STMT_MAX_MOVES        16
#define STMT_MAX_PATH         1024

enum stmt_kind {
	STMT_BACKUP = 1,
	STMT_RESTORE,
	STMT_VERIFYONLY,
	STMT_HEADERONLY,
	STMT_FILELISTONLY,
};

/* Bits of stmt.given: which options appeared in the statement. */
#define OPT_BIT(n)               (UINT64_C(1) << (n))
#define OPT_BLOCKSIZE            OPT_BIT(0)
#define OPT_MAXTRANSFERSIZE      OPT_BIT(1)
#define OPT_BUFFERCOUNT          OPT_BIT(2)
#define OPT_REPLACE              OPT_BIT(3)
#define OPT_STATS                OPT_BIT(4)
#define OPT_DESCRIPTION          OPT_BIT(5)
#define OPT_FAULT_ABORT_AFTER    OPT_BIT(6)
#define OPT_FAULT_STALL          OPT_BIT(7)
#define OPT_FAULT_EXTRA_FLUSHES  OPT_BIT(8)
#define OPT_FAULT_LATE_COMPLETE  OPT_BIT(9)
#define OPT_DIFFERENTIAL         OPT_BIT(10)
#define OPT_COPY_ONLY            OPT_BIT(11)
#define OPT_SNAPSHOT             OPT_BIT(12)
#define OPT_FORMAT               OPT_BIT(13)
#define OPT_NOFORMAT             OPT_BIT(14)
#define OPT_INIT                 OPT_BIT(15)
#define OPT_NOINIT               OPT_BIT(16)
#define OPT_SKIP                 OPT_BIT(17)
#define OPT_NOSKIP               OPT_BIT(18)
#define OPT_REWIND               OPT_BIT(19)
#define OPT_NOREWIND             OPT_BIT(20)
#define OPT_UNLOAD               OPT_BIT(21)
#define OPT_NOUNLOAD             OPT_BIT(22)
#define OPT_CHECKSUM             OPT_BIT(23)
#define OPT_NO_CHECKSUM          OPT_BIT(24)
#define OPT_COMPRESSION          OPT_BIT(25)
#define OPT_NO_COMPRESSION       OPT_BIT(26)
#define OPT_CONTINUE_AFTER_ERROR OPT_BIT(27)
#define OPT_STOP_ON_ERROR        OPT_BIT(28)
#define OPT_NAME                 OPT_BIT(29)
#define OPT_MEDIANAME            OPT_BIT(30)
#define OPT_MEDIADESCRIPTION     OPT_BIT(31)
#define OPT_NO_TRUNCATE          OPT_BIT(32)
#define OPT_FILE                 OPT_BIT(33)
#define OPT_RECOVERY             OPT_BIT(34)
#define OPT_NORECOVERY           OPT_BIT(35)
#define OPT_STANDBY              OPT_BIT(36)
#define OPT_MOVE                 OPT_BIT(37)
#define OPT_STOPAT               OPT_BIT(38)
#define OPT_FAULT_FAIL_AT        OPT_BIT(39)
#define OPT_FAULT_STALL_AT       OPT_BIT(40)
#define OPT_LAST                 OPT_FAULT_STALL_AT

struct stmt_move {
	char from[STMT_MAX_NAME + 1]; /* logical file name */
	char to[STMT_MAX_PATH + 1];   /* new physical path */
};

struct stmt {
	enum stmt_kind kind;
	int log;                    /* BACKUP LOG, RESTORE LOG */
	char db[STMT_MAX_NAME + 1]; /* empty for VERIFYONLY/HEADERONLY */
	unsigned ndev;
	char dev[STMT_MAX_DEVICES][STMT_MAX_NAME + 1];
	uint64_t given; /* OPT_* bits */
	uint32_t blocksize;
	uint32_t maxtransfersize;
	uint32_t buffercount;
	int replace;
	uint32_t stats;
	char description[STMT_MAX_DESCRIPTION + 1];
	char name[STMT_MAX_NAME + 1];
	char medianame[STMT_MAX_NAME + 1];
	char mediadescription[STMT_MAX_DESCRIPTION + 1];
	char standby[STMT_MAX_PATH + 1]; /* STANDBY's undo file */
	char stopat[STMT_MAX_NAME + 1];
	uint32_t file; /* FILE = n (default 1) */
	unsigned nmove;
	struct stmt_move move[STMT_MAX_MOVES];
	uint64_t fault_abort_after;
	uint32_t fault_stall_ms;
	uint32_t fault_extra_flushes;
	uint32_t fault_late_complete_ms;
	char fault_at_name[STMT_MAX_NAME + 1];
	char fault_stall_name[STMT_MAX_NAME + 1];
	uint32_t fault_fail_at;  /* FAULT_FAIL_AT: a VDC_* code */
	uint32_t fault_stall_at; /* FAULT_STALL_AT: a VDC_* code */
};

/* The control command named name ("VDC_WriteMark", case-insensitive) the
 * stand-in may send, or 0. */
uint32_t stmt_fault_command(const char *name);

/* Parses and validates one statement.  Returns 0, or -1 with a message
 * (no trailing period) in err.  Defaults are filled in for options not
 * given. */
int stmt_parse(const char *text, struct stmt *st, char *err, size_t errlen);

/* "BACKUP DATABASE", "RESTORE VERIFYONLY", ... */
const char *stmt_kind_name(enum stmt_kind kind);
/* The same with LOG for BACKUP LOG and RESTORE LOG. */
const char *stmt_name(const struct stmt *st);
/* One line naming the options given that the stand-in accepts without
 * modelling them, each with its reason ("" if none); returns buf. */
const char *stmt_unmodelled(const struct stmt *st, char *buf, size_t len);

/* Checks a database or device name; returns NULL or why it is invalid. */
const char *stmt_name_problem(const char *name);

#endif /* VDI_CLI_STMT_H */
