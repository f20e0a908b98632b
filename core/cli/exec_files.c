/* SPDX-License-Identifier: MIT */
/*
 * exec_files.c - the database files of `vdi exec` (exec.h): the source of
 * a backup, the new file of a restore and its atomic commit, and the
 * chain beside them (chain.h): what a differential or log holds, the
 * restoring state, the checks of a rolled-forward or mounted database.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "exec.h"

/* <data dir>/<db>.mdf, or the MOVE target of a restore; the temporary
 * file of a restore lives in the same directory (the commit renames). */
static int db_paths(struct job *j)
{
	const char *to = j->st.nmove ? j->st.move[0].to : NULL;
	int n = to ? snprintf(j->db_path, sizeof(j->db_path), "%s", to)
	           : snprintf(j->db_path, sizeof(j->db_path), "%s/%s.mdf", j->data_dir, j->st.db);
	const char *slash = strrchr(j->db_path, '/');
	int dirlen = !to ? (int)strlen(j->data_dir) : slash ? (int)(slash - j->db_path) : 1;
	const char *dir = !to ? j->data_dir : slash ? j->db_path : ".";

	if (to && slash == j->db_path)
		dirlen = 1; /* "/name": the root directory */
	if (n < 0 || (size_t)n >= sizeof(j->db_path) ||
	    snprintf(j->tmp_dir, sizeof(j->tmp_dir), "%.*s", dirlen, dir) >=
	            (int)sizeof(j->tmp_dir) ||
	    snprintf(j->tmp_path, sizeof(j->tmp_path), "%s/.%s.vdi-XXXXXX", j->tmp_dir,
	             slash && to ? slash + 1
	             : to        ? to
	                         : j->st.db) >= (int)sizeof(j->tmp_path)) {
		cli_err("database path for '%s' in '%s' is too long", j->st.db, j->data_dir);
		return -1;
	}
	return 0;
}

static int open_source(struct job *j)
{
	struct stat sb;

	j->db_fd = open(j->db_path, O_RDONLY | O_CLOEXEC);
	if (j->db_fd < 0) {
		cli_err("cannot open database '%s' ('%s'): %s", j->st.db, j->db_path,
		        strerror(errno));
		return -1;
	}
	if (fstat(j->db_fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		cli_err("cannot back up database '%s': '%s' is not a regular file", j->st.db,
		        j->db_path);
		return -1;
	}
	j->total = (uint64_t)sb.st_size;
	return 0;
}

static int load_restore_state(struct job *j)
{
	char err[CHAIN_ERR_LEN];
	int rc = chain_state_load(&j->rstate, j->db_path, err, sizeof(err));

	if (rc < 0) {
		cli_err("cannot restore database '%s': %s", j->st.db, err);
		return -1;
	}
	j->restoring = rc;
	if (j->st.log && !j->restoring) {
		cli_err("cannot restore the log of database '%s': the log or differential backup cannot be restored because no files are ready to roll forward: '%s' is not restoring (restore its full backup WITH NORECOVERY first)",
		        j->st.db, j->db_path);
		return -1;
	}
	return 0;
}

static int open_target(struct job *j)
{
	struct stat sb;
	mode_t mask = umask(0);

	umask(mask);
	j->mode = 0666 & ~mask;
	if (load_restore_state(j) < 0)
		return -1;
	if (stat(j->db_path, &sb) == 0) {
		if (!j->st.replace && !j->restoring) {
			cli_err("cannot restore database '%s': '%s' exists (use WITH REPLACE to overwrite it)",
			        j->st.db, j->db_path);
			return -1;
		}
		if (!S_ISREG(sb.st_mode)) {
			cli_err("cannot restore database '%s': '%s' is not a regular file",
			        j->st.db, j->db_path);
			return -1;
		}
		j->replacing = 1;
		j->mode = sb.st_mode & 07777;
	}
	/* Unnamed until the commit, so a restore killed with SIGKILL leaves
	 * no temporary file behind; mkostemp where O_TMPFILE is refused. */
	j->db_fd = open(j->tmp_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (j->db_fd >= 0) {
		j->tmp_anon = 1;
		return 0;
	}
	j->db_fd = mkostemp(j->tmp_path, O_CLOEXEC);
	if (j->db_fd < 0) {
		cli_err("cannot restore database '%s': cannot create a file in '%s': %s", j->st.db,
		        j->tmp_dir, strerror(errno));
		j->tmp_path[0] = '\0';
		return -1;
	}
	return 0;
}

/* BACKUP: the database must not be restoring; the history says what a
 * differential or log holds, chosen here from the hashes of every chunk
 * (a full backup hashes its chunks as it sends them). */
static int prepare_chain(struct job *j)
{
	struct stmt *st = &j->st;
	uint32_t kind = st->log ? BK_LOG : (st->given & OPT_DIFFERENTIAL) ? BK_DIFF : BK_FULL;
	uint64_t n = (j->total + BK_CHUNK_SIZE - 1) / BK_CHUNK_SIZE, count = 0;
	char err[CHAIN_ERR_LEN];
	struct chain_state rs;
	uint8_t *want = NULL, *buf = NULL;
	int rc = chain_state_load(&rs, j->db_path, err, sizeof(err));

	if (rc != 0) {
		cli_err("cannot back up database '%s': %s", st->db,
		        rc < 0 ? err : "it is restoring (finish its restore WITH RECOVERY first)");
		return -1;
	}
	if (chain_history_load(&j->hist, j->db_path, err, sizeof(err)) < 0) {
		cli_err("cannot back up database '%s': %s", st->db, err);
		return -1;
	}
	if (kind == BK_DIFF && !chain_diff_base(&j->hist)) {
		cli_err("cannot perform a differential backup for database '%s', because a current database backup does not exist (no full backup in '%s.vdi-history'): take BACKUP DATABASE first",
		        st->db, j->db_path);
		return -1;
	}
	if (kind == BK_LOG && !chain_log_point(&j->hist)) {
		cli_err("BACKUP LOG cannot be performed because there is no current database backup of '%s' (no full backup in '%s.vdi-history')",
		        st->db, j->db_path);
		return -1;
	}
	j->map = calloc(n ? n : 1, sizeof(*j->map));
	if (!j->map)
		goto oom;
	if (kind == BK_FULL)
		return 0;
	want = malloc(n ? n : 1);
	buf = malloc(BK_CHUNK_SIZE);
	j->select = calloc(n ? n : 1, sizeof(*j->select));
	if (!want || !buf || !j->select)
		goto oom;
	rc = bk_hash_file(j->db_fd, j->total, BK_CHUNK_SIZE, buf, j->map);
	if (rc < 0) {
		cli_err("cannot read database '%s' ('%s'): %s", st->db, j->db_path, strerror(-rc));
		free(want);
		free(buf);
		return -1;
	}
	chain_select(&j->hist, kind, j->map, n, want);
	for (uint64_t i = 0; i < n; i++)
		if (want[i])
			j->select[count++] = i;
	j->nselect = count;
	free(want);
	free(buf);
	return 0;
oom:
	cli_err("out of memory for the chunk map of database '%s'", st->db);
	free(want);
	free(buf);
	return -1;
}

int exec_prepare_files(struct job *j)
{
	j->db_fd = -1;
	if (j->st.kind == STMT_VERIFYONLY || j->st.kind == STMT_HEADERONLY ||
	    j->st.kind == STMT_FILELISTONLY)
		return 0;
	if (db_paths(j) < 0)
		return -1;
	if (j->st.kind == STMT_BACKUP && j->generated) { /* bk_generate's bytes, no file */
		j->total = j->generate;
		j->hist.next_lsn = 1;
		return 0;
	}
	if (j->st.kind == STMT_BACKUP)
		return open_source(j) < 0 ? -1 : prepare_chain(j);
	return open_target(j);
}

/* An O_TMPFILE target gets its temporary name (tmp_path, XXXXXX
 * replaced) only now, right before the rename. */
static int name_tmpfile(struct job *j)
{
	size_t len = strlen(j->tmp_path);
	char proc[64];

	if (!j->tmp_anon)
		return 0;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", j->db_fd);
	for (unsigned i = 0; i < 100; i++) {
		uint32_t r =
			(uint32_t)getpid() * 2654435761u ^ (uint32_t)(cli_now() * 1e6) ^ i * 40503u;

		snprintf(j->tmp_path + len - 6, 7, "%06x", (unsigned)(r & 0xffffff));
		if (linkat(AT_FDCWD, proc, AT_FDCWD, j->tmp_path, AT_SYMLINK_FOLLOW) == 0 ||
		    (errno == ENOENT &&
		     linkat(j->db_fd, "", AT_FDCWD, j->tmp_path, AT_EMPTY_PATH) == 0)) {
			j->tmp_anon = 0;
			return 0;
		}
		if (errno != EEXIST)
			return -1;
	}
	return -1;
}

/* Copies the database being rolled forward into the new file. */
static int copy_current(struct job *j)
{
	int src = open(j->db_path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	off_t in = 0, out = 0;

	if (src < 0 || fstat(src, &sb) != 0) {
		job_fail(j, "cannot roll database '%s' forward: cannot open '%s': %s", j->st.db,
		         j->db_path, strerror(errno));
		if (src >= 0)
			close(src);
		return -1;
	}
	while (in < sb.st_size) {
		ssize_t n = copy_file_range(src, &in, j->db_fd, &out, (size_t)(sb.st_size - in), 0);

		if (n <= 0) {
			job_fail(
				j,
				"cannot roll database '%s' forward: copying '%s' at byte offset %lld: %s",
				j->st.db, j->db_path, (long long)in,
				n == 0 ? "file shrank" : strerror(errno));
			close(src);
			return -1;
		}
	}
	close(src);
	return 0;
}

int exec_restore_begin(struct job *j, const struct bk_header *h)
{
	char err[CHAIN_ERR_LEN];
	int rc = 0;

	pthread_mutex_lock(&j->lock);
	while (j->prepared == 1) /* another device is preparing */
		pthread_cond_wait(&j->prep_cond, &j->lock);
	if (j->prepared == 2) {
		rc = j->prep_failed ? -1 : 0;
		pthread_mutex_unlock(&j->lock);
		return rc;
	}
	j->prepared = 1;
	pthread_mutex_unlock(&j->lock);

	if ((j->st.given & OPT_BLOCKSIZE) && j->st.blocksize != h->block_size) {
		/* spec 4.1: RESTORE must use the BACKUP's BLOCKSIZE */
		job_fail(
			j,
			"BLOCKSIZE=%u does not match the media: the backup was written with BLOCKSIZE=%u (give that, or no BLOCKSIZE)",
			j->st.blocksize, h->block_size);
		rc = -1;
	} else if (j->st.kind == STMT_RESTORE &&
	           !(j->st.given & OPT_SNAPSHOT) != (h->kind != BK_SNAPSHOT)) {
		job_fail(
			j,
			h->kind == BK_SNAPSHOT
				? "the backup set is a snapshot backup's metadata: restore it WITH SNAPSHOT, with the snapshot at hand"
				: "RESTORE ... WITH SNAPSHOT: the backup set is not a snapshot backup");
		rc = -1;
	} else if (j->st.kind != STMT_RESTORE) {
		rc = 0; /* VERIFYONLY, HEADERONLY, FILELISTONLY write nothing */
	} else if (j->st.nmove && strcasecmp(j->st.move[0].from, h->db) != 0) {
		job_fail(
			j,
			"MOVE '%s': logical file '%s' is not part of database '%s' (its file: '%s')",
			j->st.move[0].from, j->st.move[0].from, h->db, h->db);
		rc = -1;
	} else if (chain_check_apply(j->restoring ? &j->rstate : NULL, h, j->st.log, err,
	                             sizeof(err)) < 0) {
		job_fail(j, "%s", err);
		rc = -1;
	} else if (bk_is_partial(h)) {
		rc = copy_current(j);
	}
	pthread_mutex_lock(&j->lock);
	j->prepared = 2;
	j->prep_failed = rc < 0;
	pthread_cond_broadcast(&j->prep_cond);
	pthread_mutex_unlock(&j->lock);
	return rc;
}

/* A differential or log restore built the database from the one it
 * rolled forward: its hash must be the backup's, or the chain is broken
 * (the database changed while RESTORING, or a change went unseen). */
static int verify_rolled_forward(struct job *j)
{
	const struct bk_header *h = &j->set.ref;
	uint64_t n = bk_db_chunks(h), want = j->d[0].r.t.db_hash;
	uint64_t *map = calloc(n ? n : 1, sizeof(*map));
	uint8_t *buf = malloc(BK_CHUNK_SIZE);
	int rc = map && buf ? bk_hash_file(j->db_fd, h->total_size, BK_CHUNK_SIZE, buf, map)
	                    : -ENOMEM;
	uint64_t got = rc == 0 ? bk_db_hash(map, n, h->total_size) : 0;

	free(map);
	free(buf);
	for (unsigned k = 1; rc == 0 && k < j->st.ndev; k++)
		if (j->d[k].r.t.db_hash != want)
			rc = -EINVAL;
	if (rc < 0) {
		job_fail(j, "cannot check the rolled-forward database '%s': %s", j->st.db,
		         rc == -EINVAL ? "the stripes disagree on the database hash"
		                       : strerror(-rc));
		return -1;
	}
	if (got != want || j->d[0].r.t.db_size != h->total_size) {
		job_fail(
			j,
			"the database this restore built is not the one backed up (hash %016llx, the %s backup at LSN %llu says %016llx): the database changed while restoring, or the chain is broken; restore again from the full backup",
			(unsigned long long)got, h->kind == BK_LOG ? "log" : "differential",
			(unsigned long long)h->lsn, (unsigned long long)want);
		return -1;
	}
	return 0;
}

static void finish_chain(struct job *j);

/* RESTORE ... WITH SNAPSHOT: the client mounted the snapshot's file when
 * it completed VDC_MountSnapshot; it must be the database that was frozen
 * (the trailer's size and hash), or the restore fails. */
int exec_verify_mounted(struct job *j)
{
	const struct bk_trailer *t = &j->d[0].r.t;
	int fd = open(j->db_path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	uint64_t n, *map = NULL, got = 0;
	uint8_t *buf = NULL;
	int rc = fd < 0 || fstat(fd, &sb) != 0 ? -errno : 0;

	if (rc == 0 && (uint64_t)sb.st_size == t->db_size) {
		n = (t->db_size + BK_CHUNK_SIZE - 1) / BK_CHUNK_SIZE;
		map = calloc(n ? n : 1, sizeof(*map));
		buf = malloc(BK_CHUNK_SIZE);
		rc = map && buf ? bk_hash_file(fd, t->db_size, BK_CHUNK_SIZE, buf, map) : -ENOMEM;
		if (rc == 0)
			got = bk_db_hash(map, n, t->db_size);
	}
	free(map);
	free(buf);
	if (fd >= 0)
		close(fd);
	if (rc < 0) {
		job_fail(j, "the client completed VDC_MountSnapshot, but '%s' cannot be read: %s",
		         j->db_path, strerror(-rc));
		return -1;
	}
	if ((uint64_t)sb.st_size != t->db_size || got != t->db_hash) {
		job_fail(
			j,
			"the mounted snapshot is not the database that was frozen: '%s' has %llu bytes%s, the backup recorded %llu bytes, hash %016llx",
			j->db_path, (unsigned long long)sb.st_size,
			(uint64_t)sb.st_size == t->db_size ? " with another hash" : "",
			(unsigned long long)t->db_size, (unsigned long long)t->db_hash);
		return -1;
	}
	finish_chain(j);
	return 0;
}

/* After the rename: RESTORING with NORECOVERY or STANDBY, else online.
 * A full restore starts the database's backup history anew. */
static void finish_chain(struct job *j)
{
	const struct bk_header *h = &j->set.ref;
	char err[CHAIN_ERR_LEN];

	if (!bk_is_partial(h))
		chain_history_remove(j->db_path);
	if (j->st.given & (OPT_NORECOVERY | OPT_STANDBY)) {
		struct chain_state s = {
			.full_lsn = bk_is_partial(h) ? j->rstate.full_lsn : h->lsn,
			.last_lsn = h->lsn,
			.last_kind = h->kind,
		};

		memcpy(s.lineage, h->lineage, 16);
		if (chain_state_save(&s, j->db_path, err, sizeof(err)) < 0)
			job_fail(j, "the database was restored, but cannot be left restoring: %s",
			         err);
		return;
	}
	chain_state_remove(j->db_path);
}

/* Restore succeeded: size, mode, durability, then the atomic rename. */
int exec_commit_target(struct job *j)
{
	char *slash;
	int dfd;

	if (ftruncate(j->db_fd, (off_t)j->set.ref.total_size) != 0) {
		job_fail(j, "cannot install the restored file as '%s': %s", j->db_path,
		         strerror(errno));
		return -1;
	}
	if (bk_is_partial(&j->set.ref) && verify_rolled_forward(j) < 0)
		return -1;
	if (fchmod(j->db_fd, j->mode) != 0 || fsync(j->db_fd) != 0 || name_tmpfile(j) != 0 ||
	    rename(j->tmp_path, j->db_path) != 0) {
		job_fail(j, "cannot install the restored file as '%s': %s", j->db_path,
		         strerror(errno));
		return -1;
	}
	j->tmp_path[0] = '\0';
	finish_chain(j);
	slash = strrchr(j->db_path, '/');
	if (slash) {
		*slash = '\0';
		dfd = open(j->db_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		*slash = '/';
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	return 0;
}

void exec_close_files(struct job *j)
{
	chain_history_free(&j->hist);
	free(j->map);
	free(j->select);
	j->map = j->select = NULL;
	if (j->db_fd >= 0)
		close(j->db_fd);
	j->db_fd = -1;
	if (j->tmp_path[0] && !j->tmp_anon && j->st.kind == STMT_RESTORE)
		unlink(j->tmp_path);
}

/* After a backup the client took whole: the history learns it. */
void exec_record_backup(struct job *j)
{
	struct chain_record r = {
		.kind = j->hdr.kind,
		.flags = j->hdr.flags,
		.lsn = j->hdr.lsn,
		.size = j->total,
		.nchunks = (j->total + BK_CHUNK_SIZE - 1) / BK_CHUNK_SIZE,
		.map = j->map,
	};
	char err[CHAIN_ERR_LEN];

	j->map = NULL; /* the history owns it now */
	if (chain_history_add(&j->hist, j->db_path, &r, err, sizeof(err)) < 0)
		job_fail(j, "the backup was delivered, but its history was not recorded: %s", err);
}
