/* SPDX-License-Identifier: MIT */
/*
 * chain.c - backup history and restore state of the stand-in database
 * (chain.h).  Text files, one fact per line, read as untrusted input.
 */
#include "chain.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

#define HISTORY_SUFFIX   ".vdi-history"
#define RESTORING_SUFFIX ".vdi-restoring"

static void cerr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void cerr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int side_path(char *out, size_t len, const char *db_path, const char *suffix)
{
	int n = snprintf(out, len, "%s%s", db_path, suffix);

	return n < 0 || (size_t)n >= len ? -1 : 0;
}

static const char *kind_word(uint32_t kind)
{
	switch (kind) {
	case BK_FULL: return "full";
	case BK_DIFF: return "differential";
	case BK_LOG: return "log";
	case BK_SNAPSHOT: return "snapshot";
	}
	return "?";
}

static int kind_of_word(const char *w, uint32_t *kind)
{
	for (uint32_t k = BK_FULL; k <= BK_SNAPSHOT; k++) {
		if (strcmp(w, kind_word(k)) == 0) {
			*kind = k;
			return 0;
		}
	}
	return -1;
}

static void hex_of(const uint8_t id[16], char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static int id_of_hex(const char *s, uint8_t id[16])
{
	for (int i = 0; i < 16; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		id[i] = (uint8_t)v;
	}
	return s[32] == '\0' || s[32] == '\n' ? 0 : -1;
}

/* Writes text to path atomically: a temporary file beside it, fsync,
 * rename. */
static int write_atomic(const char *path, const char *text, size_t len, char *err, size_t errlen)
{
	char tmp[4200];
	int fd, ok;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
		cerr(err, errlen, "path '%s' is too long", path);
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		cerr(err, errlen, "cannot write '%s': %s", tmp, strerror(errno));
		return -1;
	}
	ok = 1;
	for (size_t put = 0; ok && put < len;) {
		ssize_t n = write(fd, text + put, len - put);

		if (n < 0 && errno == EINTR)
			continue;
		ok = n > 0;
		put += ok ? (size_t)n : 0;
	}
	ok = ok && fsync(fd) == 0;
	if (close(fd) != 0)
		ok = 0;
	if (!ok || rename(tmp, path) != 0) {
		cerr(err, errlen, "cannot write '%s': %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------ history */

void chain_history_free(struct chain_history *h)
{
	for (unsigned i = 0; i < h->n; i++)
		free(h->rec[i].map);
	h->n = 0;
}

static void history_new(struct chain_history *h)
{
	memset(h, 0, sizeof(*h));
	uuid_generate(h->lineage);
	h->next_lsn = 1;
}

struct lines {
	FILE *f;
	const char *path;
	unsigned no;
	char buf[256];
};

static int next_line(struct lines *l)
{
	if (!fgets(l->buf, sizeof(l->buf), l->f))
		return -1;
	l->no++;
	l->buf[strcspn(l->buf, "\n")] = '\0';
	return 0;
}

static int damaged(struct lines *l, char *err, size_t errlen, const char *what)
{
	cerr(err, errlen,
	     "backup history '%s' is damaged at line %u (%s): remove it and take a new full backup",
	     l->path, l->no, what);
	return -1;
}

static int read_record(struct lines *l, struct chain_record *r, char *err, size_t errlen)
{
	char word[16];
	uint64_t lsn, size, chunks;
	unsigned flags;

	if (sscanf(l->buf, "backup %15s lsn=%" SCNu64 " flags=%u size=%" SCNu64 " chunks=%" SCNu64,
	           word, &lsn, &flags, &size, &chunks) != 5 ||
	    kind_of_word(word, &r->kind) < 0 || (flags & ~BK_F_COPY_ONLY) || lsn == 0 ||
	    size > (UINT64_MAX >> 2) || chunks != (size + BK_CHUNK_SIZE - 1) / BK_CHUNK_SIZE)
		return damaged(l, err, errlen, "a backup line");
	r->flags = flags;
	r->lsn = lsn;
	r->size = size;
	r->nchunks = chunks;
	r->map = calloc(chunks ? chunks : 1, sizeof(uint64_t));
	if (!r->map) {
		cerr(err, errlen, "out of memory for backup history '%s'", l->path);
		return -1;
	}
	for (uint64_t i = 0; i < chunks; i++) {
		char *end;

		if (next_line(l) < 0)
			return damaged(l, err, errlen, "missing chunk hashes");
		errno = 0;
		r->map[i] = strtoull(l->buf, &end, 16);
		if (errno || end == l->buf || *end || strlen(l->buf) != 16)
			return damaged(l, err, errlen, "a chunk hash");
	}
	return 0;
}

int chain_history_load(struct chain_history *h, const char *db_path, char *err, size_t errlen)
{
	char path[4200];
	struct lines l = { .path = path };
	int rc = 0;

	history_new(h);
	if (side_path(path, sizeof(path), db_path, HISTORY_SUFFIX) < 0) {
		cerr(err, errlen, "database path '%s' is too long", db_path);
		return -1;
	}
	l.f = fopen(path, "r");
	if (!l.f) {
		if (errno == ENOENT)
			return 0;
		cerr(err, errlen, "cannot read backup history '%s': %s", path, strerror(errno));
		return -1;
	}
	if (next_line(&l) < 0 || strcmp(l.buf, "vdi-history 1") != 0)
		rc = damaged(&l, err, errlen, "not 'vdi-history 1'");
	else if (next_line(&l) < 0 || strncmp(l.buf, "lineage ", 8) != 0 ||
	         id_of_hex(l.buf + 8, h->lineage) < 0)
		rc = damaged(&l, err, errlen, "the lineage");
	else if (next_line(&l) < 0 || sscanf(l.buf, "next-lsn %" SCNu64, &h->next_lsn) != 1 ||
	         h->next_lsn == 0)
		rc = damaged(&l, err, errlen, "next-lsn");
	while (rc == 0 && next_line(&l) == 0 && strcmp(l.buf, "end") != 0) {
		struct chain_record *r = &h->rec[h->n];

		if (h->n == CHAIN_MAX_RECORDS)
			rc = damaged(&l, err, errlen, "too many backups");
		else if ((rc = read_record(&l, r, err, errlen)) == 0 &&
		         (r->lsn >= h->next_lsn || (h->n && r->lsn <= h->rec[h->n - 1].lsn)))
			rc = damaged(&l, err, errlen, "LSNs out of order");
		if (r->map)
			h->n++;
	}
	if (rc == 0 && strcmp(l.buf, "end") != 0)
		rc = damaged(&l, err, errlen, "no 'end' line");
	fclose(l.f);
	if (rc)
		chain_history_free(h);
	return rc;
}

const struct chain_record *chain_diff_base(const struct chain_history *h)
{
	for (unsigned i = h->n; i-- > 0;)
		if ((h->rec[i].kind == BK_FULL || h->rec[i].kind == BK_SNAPSHOT) &&
		    !(h->rec[i].flags & BK_F_COPY_ONLY))
			return &h->rec[i];
	return NULL;
}

const struct chain_record *chain_log_point(const struct chain_history *h)
{
	for (unsigned i = h->n; i-- > 0;)
		if (h->rec[i].kind == BK_LOG && !(h->rec[i].flags & BK_F_COPY_ONLY))
			return &h->rec[i];
	for (unsigned i = 0; i < h->n; i++)
		if (h->rec[i].kind == BK_FULL || h->rec[i].kind == BK_SNAPSHOT)
			return &h->rec[i];
	return NULL;
}

/* 1 if chunk i of the database now differs from record r's. */
static int differs(const struct chain_record *r, const uint64_t *map, uint64_t i)
{
	return i >= r->nchunks || r->map[i] != map[i];
}

uint64_t chain_select(const struct chain_history *h, uint32_t kind, const uint64_t *map, uint64_t n,
                      uint8_t *want)
{
	const struct chain_record *base = kind == BK_DIFF  ? chain_diff_base(h)
	                                  : kind == BK_LOG ? chain_log_point(h)
	                                                   : NULL;
	uint64_t count = 0;

	for (uint64_t i = 0; i < n; i++) {
		want[i] = !base;
		for (unsigned k = 0; base && !want[i] && k < h->n; k++) {
			const struct chain_record *r = &h->rec[k];

			if (kind == BK_DIFF ? r == base : r->lsn >= base->lsn)
				want[i] = (uint8_t)differs(r, map, i);
		}
		count += want[i];
	}
	return count;
}

/* Keeps what a later backup can need: the differential base, and every
 * record from the log chain's point on; the oldest others go first when
 * the file is full (a log then starts later, and says so on restore). */
static void history_prune(struct chain_history *h)
{
	const struct chain_record *base = chain_diff_base(h), *point = chain_log_point(h);
	uint64_t base_lsn = base ? base->lsn : 0, from = point ? point->lsn : 0;
	unsigned out = 0;

	for (unsigned i = 0; i < h->n; i++) {
		struct chain_record *r = &h->rec[i];
		int keep = r->lsn == base_lsn || r->lsn >= from;

		if (keep && h->n - i + out > CHAIN_MAX_RECORDS - 1 && r->lsn != base_lsn)
			keep = 0; /* room for the next backup */
		if (keep)
			h->rec[out++] = *r;
		else
			free(r->map);
	}
	h->n = out;
}

static int history_write(const struct chain_history *h, const char *path, char *err, size_t errlen)
{
	size_t cap = 256, len = 0;
	char *text, lineage[33];
	int rc;

	for (unsigned i = 0; i < h->n; i++)
		cap += 96 + 17 * h->rec[i].nchunks;
	text = malloc(cap);
	if (!text) {
		cerr(err, errlen, "out of memory for backup history '%s'", path);
		return -1;
	}
	hex_of(h->lineage, lineage);
	len += (size_t)snprintf(text + len, cap - len,
	                        "vdi-history 1\nlineage %s\nnext-lsn %" PRIu64 "\n", lineage,
	                        h->next_lsn);
	for (unsigned i = 0; i < h->n; i++) {
		const struct chain_record *r = &h->rec[i];

		len += (size_t)snprintf(text + len, cap - len,
		                        "backup %s lsn=%" PRIu64 " flags=%u size=%" PRIu64
		                        " chunks=%" PRIu64 "\n",
		                        kind_word(r->kind), r->lsn, r->flags, r->size, r->nchunks);
		for (uint64_t c = 0; c < r->nchunks; c++)
			len += (size_t)snprintf(text + len, cap - len, "%016" PRIx64 "\n",
			                        r->map[c]);
	}
	len += (size_t)snprintf(text + len, cap - len, "end\n");
	rc = write_atomic(path, text, len, err, errlen);
	free(text);
	return rc;
}

int chain_history_add(struct chain_history *h, const char *db_path, const struct chain_record *r,
                      char *err, size_t errlen)
{
	char path[4200];

	if (side_path(path, sizeof(path), db_path, HISTORY_SUFFIX) < 0) {
		cerr(err, errlen, "database path '%s' is too long", db_path);
		free(r->map);
		return -1;
	}
	if (h->n == CHAIN_MAX_RECORDS)
		history_prune(h);
	if (h->n == CHAIN_MAX_RECORDS) { /* only the base is kept from the full file */
		cerr(err, errlen, "backup history '%s' is full", path);
		free(r->map);
		return -1;
	}
	h->rec[h->n++] = *r;
	if (r->lsn >= h->next_lsn)
		h->next_lsn = r->lsn + 1;
	history_prune(h);
	return history_write(h, path, err, errlen);
}

void chain_history_remove(const char *db_path)
{
	char path[4200];

	if (side_path(path, sizeof(path), db_path, HISTORY_SUFFIX) == 0)
		unlink(path);
}

/* -------------------------------------------------------------- state */

int chain_state_load(struct chain_state *s, const char *db_path, char *err, size_t errlen)
{
	char path[4200], lineage[64], kind[16];
	FILE *f;
	int n;

	memset(s, 0, sizeof(*s));
	if (side_path(path, sizeof(path), db_path, RESTORING_SUFFIX) < 0) {
		cerr(err, errlen, "database path '%s' is too long", db_path);
		return -1;
	}
	f = fopen(path, "r");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		cerr(err, errlen, "cannot read restore state '%s': %s", path, strerror(errno));
		return -1;
	}
	n = fscanf(f,
	           "vdi-restoring 1\nlineage %63s\nfull-lsn %" SCNu64 "\nlast-lsn %" SCNu64
	           "\nlast-kind %15s\n",
	           lineage, &s->full_lsn, &s->last_lsn, kind);
	fclose(f);
	if (n != 4 || id_of_hex(lineage, s->lineage) < 0 || kind_of_word(kind, &s->last_kind) < 0 ||
	    s->last_lsn < s->full_lsn) {
		cerr(err, errlen,
		     "restore state '%s' is damaged: restore the full backup again (WITH NORECOVERY)",
		     path);
		return -1;
	}
	return 1;
}

int chain_state_save(const struct chain_state *s, const char *db_path, char *err, size_t errlen)
{
	char path[4200], text[256], lineage[33];
	int n;

	if (side_path(path, sizeof(path), db_path, RESTORING_SUFFIX) < 0) {
		cerr(err, errlen, "database path '%s' is too long", db_path);
		return -1;
	}
	hex_of(s->lineage, lineage);
	n = snprintf(text, sizeof(text),
	             "vdi-restoring 1\nlineage %s\nfull-lsn %" PRIu64 "\nlast-lsn %" PRIu64
	             "\nlast-kind %s\n",
	             lineage, s->full_lsn, s->last_lsn, kind_word(s->last_kind));
	return write_atomic(path, text, (size_t)n, err, errlen);
}

void chain_state_remove(const char *db_path)
{
	char path[4200];

	if (side_path(path, sizeof(path), db_path, RESTORING_SUFFIX) == 0)
		unlink(path);
}

int chain_check_apply(const struct chain_state *s, const struct bk_header *h, int restore_log,
                      char *err, size_t errlen)
{
	char a[33], b[33];

	if (restore_log && h->kind != BK_LOG) {
		cerr(err, errlen,
		     "RESTORE LOG: the backup set holds a %s backup, not a log backup: use RESTORE DATABASE",
		     kind_word(h->kind));
		return -1;
	}
	if (!restore_log && h->kind == BK_LOG) {
		cerr(err, errlen, "the backup set holds a log backup: use RESTORE LOG");
		return -1;
	}
	if (!bk_is_partial(h))
		return 0;
	if (!s) {
		cerr(err, errlen,
		     "the %s backup cannot be restored because no files are ready to roll forward: the database is not restoring (restore its full backup WITH NORECOVERY first)",
		     kind_word(h->kind));
		return -1;
	}
	if (memcmp(s->lineage, h->lineage, 16) != 0) {
		hex_of(h->lineage, a);
		hex_of(s->lineage, b);
		cerr(err, errlen,
		     "the %s backup belongs to another backup lineage of the database (backup %s, restoring %s)",
		     kind_word(h->kind), a, b);
		return -1;
	}
	if (h->kind == BK_DIFF && h->first_lsn != s->full_lsn) {
		cerr(err, errlen,
		     "this differential backup's base is the full backup at LSN %" PRIu64
		     ", but the full backup restored is at LSN %" PRIu64,
		     h->first_lsn, s->full_lsn);
		return -1;
	}
	if (h->kind == BK_DIFF && s->last_lsn != s->full_lsn) {
		cerr(err, errlen,
		     "a differential backup applies only right after its full backup: the database was rolled forward to LSN %" PRIu64
		     " since (restore the full backup again)",
		     s->last_lsn);
		return -1;
	}
	if (h->kind == BK_LOG && (s->last_lsn < h->first_lsn || s->last_lsn >= h->lsn)) {
		int early = s->last_lsn >= h->lsn; /* already applied, or a gap before it */

		cerr(err, errlen,
		     "the log in this backup set %s at LSN %" PRIu64
		     ", which is too %s to apply to the database (restored up to LSN %" PRIu64
		     ")%s",
		     early ? "ends" : "begins", early ? h->lsn : h->first_lsn,
		     early ? "early" : "recent", s->last_lsn,
		     early ? "" : ": an earlier log backup must be restored first");
		return -1;
	}
	return 0;
}
