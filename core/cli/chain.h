/* SPDX-License-Identifier: MIT */
/*
 * chain.h - the backup history and the restore chain of the stand-in
 * database of `vdi exec` (DIFFERENTIAL, LOG, NORECOVERY; issue 12).
 *
 * Pure file I/O, no engine.  Two small text files live beside a database
 * file <db>.mdf:
 *
 *   <db>.mdf.vdi-history    what BACKUP took: the lineage (a uuid made by
 *                           the first full backup), the next LSN, and per
 *                           backup its kind, LSN, flags, size and the
 *                           bk_hash64 of every chunk at its point
 *   <db>.mdf.vdi-restoring  present while the database is RESTORING (after
 *                           RESTORE ... WITH NORECOVERY or STANDBY): the
 *                           lineage, the LSN of the full restored and of
 *                           the last backup applied
 *
 * What a backup holds (docs/vdi.1, DIFFERENTIAL AND LOG BACKUPS):
 *   full          every chunk
 *   differential  the chunks that differ from the last full backup that
 *                 was not COPY_ONLY (its base)
 *   log           the chunks that differ from any backup taken since the
 *                 log chain's previous point (the last log backup that was
 *                 not COPY_ONLY, else the first full backup): so the log
 *                 applies after each of them, as a SQL Server log backup
 *                 applies after any full or differential it covers
 *
 * Both files are untrusted on reading: a damaged one is refused with its
 * path and line, never half-used.  Both are replaced atomically.
 */
#ifndef VDI_CLI_CHAIN_H
#define VDI_CLI_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#include "bkfmt.h"

#define CHAIN_MAX_RECORDS 256
#define CHAIN_ERR_LEN     1024

struct chain_record {
	uint32_t kind;  /* BK_FULL, BK_DIFF, BK_LOG, BK_SNAPSHOT */
	uint32_t flags; /* BK_F_COPY_ONLY */
	uint64_t lsn;
	uint64_t size;
	uint64_t nchunks;
	uint64_t *map; /* nchunks hashes, owned */
};

struct chain_history {
	uint8_t lineage[16];
	uint64_t next_lsn;
	unsigned n;
	struct chain_record rec[CHAIN_MAX_RECORDS]; /* oldest first */
};

/* Reads <db_path>.vdi-history.  0 (an absent file reads as an empty
 * history with a new lineage), or -1 with err. */
int chain_history_load(struct chain_history *h, const char *db_path, char *err, size_t errlen);
void chain_history_free(struct chain_history *h);
/* Appends a record (takes ownership of map), drops what no later backup
 * needs, and writes the file atomically.  0, or -1 with err. */
int chain_history_add(struct chain_history *h, const char *db_path, const struct chain_record *r,
                      char *err, size_t errlen);
/* Removes <db_path>.vdi-history (a restored database starts a new one). */
void chain_history_remove(const char *db_path);

/* The base of a differential: the last full record not COPY_ONLY, or NULL. */
const struct chain_record *chain_diff_base(const struct chain_history *h);
/* The log chain's previous point: the last log record not COPY_ONLY, else
 * the first full record; NULL if there is no full backup. */
const struct chain_record *chain_log_point(const struct chain_history *h);
/* The chunks of the database now (map of n chunks) that a backup of
 * `kind` holds: 1 in want[i].  Returns their count. */
uint64_t chain_select(const struct chain_history *h, uint32_t kind, const uint64_t *map, uint64_t n,
                      uint8_t *want);

struct chain_state {
	uint8_t lineage[16];
	uint64_t full_lsn; /* the full backup restored */
	uint64_t last_lsn; /* the last backup applied */
	uint32_t last_kind;
};

/* 1 and *s if <db_path>.vdi-restoring exists, 0 if not, -1 with err. */
int chain_state_load(struct chain_state *s, const char *db_path, char *err, size_t errlen);
/* Writes it atomically; 0 or -1 with err. */
int chain_state_save(const struct chain_state *s, const char *db_path, char *err, size_t errlen);
void chain_state_remove(const char *db_path);

/* Whether backup h may be applied to a database in state s (NULL: not
 * restoring).  0, or -1 with the reason in err, as SQL Server says it. */
int chain_check_apply(const struct chain_state *s, const struct bk_header *h, int restore_log,
                      char *err, size_t errlen);

#endif /* VDI_CLI_CHAIN_H */
