/* SPDX-License-Identifier: MIT */
/*
 * bkfmt.c - encoding, writing, reading and checking the backup format
 * described in bkfmt.h.
 *
 * The reader trusts nothing: every record header is checksummed and
 * compared with what the stripe header says must come next, so a cut,
 * a flipped byte, a reordered or foreign chunk is reported with the
 * device and the byte offset where it was found.
 */
#include "bkfmt.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void fmt_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fmt_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void bk_id_format(const uint8_t id[16], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	int o = 0;

	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[id[i] >> 4];
		out[o++] = hex[id[i] & 15];
	}
	out[o] = '\0';
}

/* ------------------------------------------------------------- header */

/* ------------------------------------------------------------ hashes */

/* A 64-bit multiply-rotate hash in four lanes of eight bytes (the shape
 * of xxHash64): the change detector of differential and log backups,
 * where a CRC32C's 2^-32 would be too weak a promise. */
#define HP1 0x9e3779b185ebca87ull
#define HP2 0xc2b2ae3d27d4eb4full
#define HP3 0x165667b19e3779f9ull

static uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static uint64_t hround(uint64_t acc, uint64_t v)
{
	return rotl64(acc + v * HP2, 31) * HP1;
}

static uint64_t hfinal(uint64_t h)
{
	h ^= h >> 33;
	h *= HP2;
	h ^= h >> 29;
	h *= HP3;
	return h ^ (h >> 32);
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

static void hlanes(struct bk_hasher *x, const uint8_t *p)
{
	x->v[0] = hround(x->v[0], le64(p));
	x->v[1] = hround(x->v[1], le64(p + 8));
	x->v[2] = hround(x->v[2], le64(p + 16));
	x->v[3] = hround(x->v[3], le64(p + 24));
}

void bk_hasher_init(struct bk_hasher *x)
{
	x->v[0] = HP1 + HP2;
	x->v[1] = HP2;
	x->v[2] = 0;
	x->v[3] = 0 - HP1;
	x->len = 0;
	x->nt = 0;
}

void bk_hasher_update(struct bk_hasher *x, const void *buf, size_t len)
{
	const uint8_t *p = buf, *end = p + len;

	x->len += len;
	if (x->nt) { /* complete the pending 32 bytes first */
		size_t take = 32 - x->nt < len ? 32 - x->nt : len;

		memcpy(x->tail + x->nt, p, take);
		x->nt += (unsigned)take;
		p += take;
		if (x->nt < 32)
			return;
		hlanes(x, x->tail);
		x->nt = 0;
	}
	for (; end - p >= 32; p += 32)
		hlanes(x, p);
	memcpy(x->tail, p, (size_t)(end - p));
	x->nt = (unsigned)(end - p);
}

uint64_t bk_hasher_final(const struct bk_hasher *x)
{
	const uint8_t *p = x->tail, *end = p + x->nt;
	uint64_t h = rotl64(x->v[0], 1) + rotl64(x->v[1], 7) + rotl64(x->v[2], 12) +
	             rotl64(x->v[3], 18) + x->len;

	for (; end - p >= 8; p += 8)
		h = rotl64(h ^ hround(0, le64(p)), 27) * HP1 + HP3;
	for (; p < end; p++)
		h = rotl64(h ^ (*p * HP3), 11) * HP1;
	return hfinal(h);
}

uint64_t bk_hash64(const void *buf, size_t len)
{
	struct bk_hasher x;

	bk_hasher_init(&x);
	bk_hasher_update(&x, buf, len);
	return bk_hasher_final(&x);
}

uint64_t bk_db_hash(const uint64_t *chunk_hash, uint64_t n, uint64_t size)
{
	uint64_t h = hround(HP3, size);

	for (uint64_t i = 0; i < n; i++)
		h = rotl64(h ^ hround(0, chunk_hash[i]), 27) * HP1 + HP3;
	return hfinal(h);
}

static int pread_full(int fd, uint8_t *buf, uint32_t len, uint64_t off);

int bk_hash_file(int fd, uint64_t size, uint32_t chunk_size, uint8_t *buf, uint64_t *map)
{
	for (uint64_t i = 0, off = 0; off < size; i++, off += chunk_size) {
		uint32_t len = size - off < chunk_size ? (uint32_t)(size - off) : chunk_size;
		int e = pread_full(fd, buf, len, off);

		if (e < 0)
			return e;
		map[i] = bk_hash64(buf, len);
	}
	return 0;
}

int bk_is_partial(const struct bk_header *h)
{
	return h->kind == BK_DIFF || h->kind == BK_LOG;
}

uint64_t bk_db_chunks(const struct bk_header *h)
{
	return (h->total_size + h->chunk_size - 1) / h->chunk_size;
}

/* ------------------------------------------------------------ headers */

uint64_t bk_stripe_chunks(const struct bk_header *h, uint32_t stripe)
{
	if (stripe >= h->chunk_count)
		return 0;
	return (h->chunk_count - stripe + h->stripes - 1) / h->stripes;
}

uint32_t bk_chunk_len(const struct bk_header *h, uint64_t index)
{
	uint64_t off = index * h->chunk_size;

	if (off >= h->total_size)
		return 0;
	if (h->total_size - off < h->chunk_size)
		return (uint32_t)(h->total_size - off);
	return h->chunk_size;
}

void bk_header_init(struct bk_header *h, const uint8_t id[16], const char *db, uint64_t total_size,
                    uint32_t stripes)
{
	memset(h, 0, sizeof(*h));
	h->version = BK_VERSION;
	memcpy(h->id, id, 16);
	h->stripes = stripes;
	h->block_size = 512;
	h->max_transfer_size = 65536;
	h->chunk_size = BK_CHUNK_SIZE;
	h->total_size = total_size;
	h->chunk_count = (total_size + BK_CHUNK_SIZE - 1) / BK_CHUNK_SIZE;
	snprintf(h->db, sizeof(h->db), "%s", db);
}

void bk_header_encode(struct bk_header *h, uint8_t out[BK_HEADER_SIZE])
{
	memset(out, 0, BK_HEADER_SIZE);
	memcpy(out, BK_MAGIC, 8);
	put32(out + 8, h->version);
	put32(out + 12, BK_HEADER_SIZE);
	memcpy(out + 16, h->id, 16);
	put32(out + 32, h->stripe);
	put32(out + 36, h->stripes);
	put32(out + 40, h->block_size);
	put32(out + 44, h->max_transfer_size);
	put32(out + 48, h->chunk_size);
	put64(out + 56, h->total_size);
	put64(out + 64, h->chunk_count);
	put64(out + 72, (uint64_t)h->time);
	memcpy(out + 80, h->db, strnlen(h->db, BK_DB_LEN - 1));
	memcpy(out + 208, h->description, strnlen(h->description, BK_DESC_LEN - 1));
	if (h->version >= 2) {
		put32(out + 464, h->kind);
		put32(out + 468, h->flags);
		memcpy(out + 472, h->lineage, 16);
		put64(out + 488, h->lsn);
		put64(out + 496, h->first_lsn);
	}
	h->crc = crc32c(0, out, BK_HEADER_SIZE - 4);
	put32(out + BK_HEADER_SIZE - 4, h->crc);
}

static int is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static int header_fields_check(const struct bk_header *h, char *err, size_t errlen)
{
	if (h->stripes < 1 || h->stripes > BK_MAX_STRIPES || h->stripe >= h->stripes)
		fmt_err(err, errlen, "corrupt backup header: stripe %u of %u", h->stripe + 1,
		        h->stripes);
	else if (!is_pow2(h->block_size) || h->block_size < 512 || h->block_size > 65536)
		fmt_err(err, errlen, "corrupt backup header: block size %u", h->block_size);
	else if (!is_pow2(h->chunk_size) || h->chunk_size < BK_MIN_CHUNK ||
	         h->chunk_size > BK_MAX_CHUNK)
		fmt_err(err, errlen, "corrupt backup header: chunk size %u", h->chunk_size);
	else if (h->kind > BK_SNAPSHOT || (h->flags & ~BK_F_COPY_ONLY))
		fmt_err(err, errlen, "corrupt backup header: kind %u, flags %#x", h->kind,
		        h->flags);
	else if (h->total_size > (UINT64_MAX >> 2) ||
	         (bk_is_partial(h)         ? h->chunk_count > bk_db_chunks(h)
	          : h->kind == BK_SNAPSHOT ? h->chunk_count != 0
	                                   : h->chunk_count != bk_db_chunks(h)))
		fmt_err(err, errlen, "corrupt backup header: %llu chunks for %llu bytes",
		        (unsigned long long)h->chunk_count, (unsigned long long)h->total_size);
	else
		return 0;
	return -1;
}

int bk_header_decode(struct bk_header *h, const uint8_t in[BK_HEADER_SIZE], char *err,
                     size_t errlen)
{
	memset(h, 0, sizeof(*h));
	if (memcmp(in, BK_MAGIC, 8) != 0) {
		fmt_err(err, errlen, "not a vdi backup: foreign data where the '%s' header belongs",
		        BK_MAGIC);
		return -1;
	}
	h->version = get32(in + 8);
	if (h->version < 1 || h->version > BK_VERSION || get32(in + 12) != BK_HEADER_SIZE) {
		fmt_err(err, errlen,
		        "unsupported backup format version %u (header size %u): this vdi reads versions 1 to %u",
		        h->version, get32(in + 12), BK_VERSION);
		return -1;
	}
	h->crc = get32(in + BK_HEADER_SIZE - 4);
	if (crc32c(0, in, BK_HEADER_SIZE - 4) != h->crc) {
		fmt_err(err, errlen, "corrupt backup header: checksum mismatch");
		return -1;
	}
	memcpy(h->id, in + 16, 16);
	h->stripe = get32(in + 32);
	h->stripes = get32(in + 36);
	h->block_size = get32(in + 40);
	h->max_transfer_size = get32(in + 44);
	h->chunk_size = get32(in + 48);
	h->total_size = get64(in + 56);
	h->chunk_count = get64(in + 64);
	h->time = (int64_t)get64(in + 72);
	memcpy(h->db, in + 80, BK_DB_LEN - 1);
	memcpy(h->description, in + 208, BK_DESC_LEN - 1);
	if (h->version >= 2) {
		h->kind = get32(in + 464);
		h->flags = get32(in + 468);
		memcpy(h->lineage, in + 472, 16);
		h->lsn = get64(in + 488);
		h->first_lsn = get64(in + 496);
	}
	return header_fields_check(h, err, errlen);
}

/* ------------------------------------------------------------ writing */

void bk_writer_init(struct bk_writer *w, const struct bk_header *h, bk_write_fn fn, void *ctx)
{
	memset(w, 0, sizeof(*w));
	w->write = fn;
	w->ctx = ctx;
	w->h = *h;
}

/* Writes buf; crc is crc32c(0, buf, len), already known to the caller,
 * folded into the stream CRC without a second pass over the bytes. */
static int emit_crc(struct bk_writer *w, const void *buf, size_t len, uint32_t crc)
{
	int rc = w->write(w->ctx, buf, len);

	if (rc < 0)
		return rc;
	w->stream_crc = crc32c_combine(w->stream_crc, crc, len);
	w->offset += len;
	return 0;
}

static int emit(struct bk_writer *w, const void *buf, size_t len)
{
	return emit_crc(w, buf, len, crc32c(0, buf, len));
}

int bk_write_header(struct bk_writer *w)
{
	uint8_t buf[BK_HEADER_SIZE];

	bk_header_encode(&w->h, buf);
	return emit(w, buf, sizeof(buf));
}

/* The 32-byte record before a chunk's data; version 3 leaves the data
 * CRC out (it follows the data, bk_chunk_check). */
static int emit_chunk_hdr(struct bk_writer *w, uint64_t index, uint32_t len, uint32_t data_crc)
{
	uint8_t hdr[BK_CHUNK_HDR_SIZE];

	memcpy(hdr, "VDIC", 4);
	put32(hdr + 4, len);
	put64(hdr + 8, index);
	put64(hdr + 16, index * w->h.chunk_size);
	put32(hdr + 24, w->h.version >= 3 ? 0 : data_crc);
	put32(hdr + 28, crc32c(0, hdr, 28));
	return emit(w, hdr, sizeof(hdr));
}

/* Version 3: the 8 bytes after a chunk's data: its CRC32C, and the CRC32C
 * of the chunk index and that CRC (a check record moved elsewhere fails). */
static void chunk_check(uint8_t out[BK_CHUNK_CHECK_SIZE], uint64_t index, uint32_t data_crc)
{
	uint8_t in[12];

	put64(in, index);
	put32(in + 8, data_crc);
	put32(out, data_crc);
	put32(out + 4, crc32c(0, in, sizeof(in)));
}

static int emit_chunk_end(struct bk_writer *w, uint64_t index, uint32_t len, uint32_t data_crc)
{
	uint8_t c[BK_CHUNK_CHECK_SIZE];
	int rc = 0;

	if (w->h.version >= 3) {
		chunk_check(c, index, data_crc);
		rc = emit(w, c, sizeof(c));
	}
	if (rc == 0) {
		w->chunks++;
		w->data_bytes += len;
	}
	return rc;
}

int bk_write_chunk(struct bk_writer *w, uint64_t index, const void *data, uint32_t len)
{
	uint32_t data_crc = crc32c(0, data, len);
	int rc = emit_chunk_hdr(w, index, len, data_crc);

	if (rc == 0)
		rc = emit_crc(w, data, len, data_crc);
	if (rc == 0)
		rc = emit_chunk_end(w, index, len, data_crc);
	return rc;
}

int bk_write_trailer(struct bk_writer *w)
{
	uint8_t t[BK_TRAILER_SIZE] = { 0 };

	memcpy(t, "VDIT", 4);
	put32(t + 4, w->h.stripe);
	put64(t + 8, w->chunks);
	put64(t + 16, w->data_bytes);
	memcpy(t + 24, w->h.id, 16);
	put32(t + 40, w->stream_crc);
	if (w->h.version >= 2) {
		put64(t + 44, w->db_size);
		put64(t + 52, w->db_hash);
	}
	put32(t + 60, crc32c(0, t, 60));
	return emit(w, t, sizeof(t));
}

static int pread_full(int fd, uint8_t *buf, uint32_t len, uint64_t off)
{
	uint32_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		got += (uint32_t)n;
	}
	return 0;
}

static int read_err(const struct bk_header *h, uint64_t off, int e, char *err, size_t errlen)
{
	fmt_err(err, errlen, "cannot read database '%s' at byte offset %llu: %s", h->db,
	        (unsigned long long)off,
	        e == -EIO ? "file shrank during the backup" : strerror(-e));
	return -1;
}

/* Version 3 with reserve/commit: chunk i read from the database straight
 * into the sink's memory, checksummed (and hashed) there while hot. */
static int chunk_in_place(struct bk_writer *w, int fd, uint64_t i, uint32_t len, char *err,
                          size_t errlen)
{
	uint64_t off = i * w->h.chunk_size;
	uint32_t crc = 0, got = 0;
	struct bk_hasher hx;
	int rc = emit_chunk_hdr(w, i, len, 0);

	bk_hasher_init(&hx);
	while (rc == 0 && got < len) {
		void *p;
		ssize_t room = w->reserve(w->ctx, &p);
		uint32_t take, piece;
		int e;

		if (room <= 0)
			return room < 0 ? (int)room : -1;
		take = (size_t)room < len - got ? (uint32_t)room : len - got;
		e = w->fill ? w->fill(w->ctx, p, take, off + got)
		            : pread_full(fd, p, take, off + got);
		if (e < 0)
			return read_err(&w->h, off + got, e, err, errlen);
		piece = crc32c(0, p, take);
		crc = crc32c_combine(crc, piece, take);
		w->stream_crc = crc32c_combine(w->stream_crc, piece, take);
		if (w->map)
			bk_hasher_update(&hx, p, take);
		rc = w->commit(w->ctx, take);
		w->offset += take;
		got += take;
	}
	if (rc == 0 && w->map)
		w->map[i] = bk_hasher_final(&hx);
	return rc == 0 ? emit_chunk_end(w, i, len, crc) : rc;
}

int bk_backup_stripe(struct bk_writer *w, int fd, uint8_t *buf, uint64_t *done, char *err,
                     size_t errlen)
{
	const struct bk_header *h = &w->h;
	int rc = bk_write_header(w);

	for (uint64_t slot = h->stripe; rc == 0 && slot < h->chunk_count; slot += h->stripes) {
		uint64_t i = w->select ? w->select[slot] : slot;
		uint32_t len = bk_chunk_len(h, i);
		int e;

		if (w->reserve && h->version >= 3) {
			rc = chunk_in_place(w, fd, i, len, err, errlen);
		} else if ((e = w->fill ? w->fill(w->ctx, buf, len, i * h->chunk_size)
		                        : pread_full(fd, buf, len, i * h->chunk_size)) < 0) {
			return read_err(h, i * h->chunk_size, e, err, errlen);
		} else {
			if (w->map)
				w->map[i] = bk_hash64(buf, len);
			rc = bk_write_chunk(w, i, buf, len);
		}
		if (rc == 0 && done)
			__atomic_add_fetch(done, len, __ATOMIC_RELAXED);
	}
	if (rc == 0)
		rc = bk_write_trailer(w);
	return rc;
}

/* ------------------------------------------------------------ reading */

void bk_reader_init(struct bk_reader *r, bk_read_fn fn, void *ctx, const char *device)
{
	memset(r, 0, sizeof(*r));
	r->read = fn;
	r->ctx = ctx;
	r->device = device;
}

void bk_reader_set_peek(struct bk_reader *r, bk_peek_fn peek, bk_advance_fn advance)
{
	r->peek = peek;
	r->advance = advance;
}

static void rerr(struct bk_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rerr(struct bk_reader *r, const char *fmt, ...)
{
	char msg[BK_ERR_LEN - 160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(r->err, sizeof(r->err), "device '%.127s': %s", r->device, msg);
}

/* Reads exactly len bytes.  1 on success, 0 at a clean or partial end of
 * stream (*got tells how much), -1 on a source error. */
static int read_full(struct bk_reader *r, void *buf, size_t len, size_t *got)
{
	*got = 0;
	while (*got < len) {
		ssize_t n = r->read(r->ctx, (uint8_t *)buf + *got, len - *got);

		if (n < 0) {
			r->source_error = 1;
			rerr(r, "read failed at byte offset %llu",
			     (unsigned long long)(r->offset + *got));
			return -1;
		}
		if (n == 0)
			return 0;
		*got += (size_t)n;
	}
	return 1;
}

/* Reads len bytes and folds them into the stream CRC; *crc_out (if not
 * NULL) receives crc32c(0, buf, len) so the caller need not compute it
 * again. */
static int take_crc(struct bk_reader *r, void *buf, size_t len, const char *what, uint32_t *crc_out)
{
	size_t got;
	uint32_t crc;
	int rc = read_full(r, buf, len, &got);

	if (rc == 0)
		rerr(r, "stripe truncated at byte offset %llu: stream ended inside %s",
		     (unsigned long long)(r->offset + got), what);
	if (rc <= 0)
		return -1;
	crc = crc32c(0, buf, len);
	r->stream_crc = crc32c_combine(r->stream_crc, crc, len);
	r->offset += len;
	if (crc_out)
		*crc_out = crc;
	return 0;
}

static int take(struct bk_reader *r, void *buf, size_t len, const char *what)
{
	return take_crc(r, buf, len, what, NULL);
}

int bk_read_header(struct bk_reader *r)
{
	uint8_t buf[BK_HEADER_SIZE];
	char msg[BK_ERR_LEN];
	size_t got;
	int rc = read_full(r, buf, sizeof(buf), &got);

	if (rc < 0)
		return -1;
	if (rc == 0) {
		if (got == 0)
			rerr(r, "stripe is empty: no backup header");
		else if (got >= 8 && memcmp(buf, BK_MAGIC, 8) != 0)
			rerr(r, "not a vdi backup: foreign data where the '%s' header belongs",
			     BK_MAGIC);
		else
			rerr(r,
			     "stripe truncated at byte offset %zu: stream ended inside the backup header",
			     got);
		return -1;
	}
	if (bk_header_decode(&r->h, buf, msg, sizeof(msg)) < 0) {
		rerr(r, "%s", msg);
		return -1;
	}
	r->stream_crc = crc32c(0, buf, sizeof(buf));
	r->offset = sizeof(buf);
	r->next_index = r->h.stripe;
	return 0;
}

/* Checks a chunk record's header; *db_index: the chunk of the database it
 * holds (the slot's, in a partial backup strictly above the last). */
static int check_chunk_hdr(struct bk_reader *r, const uint8_t *hdr, uint64_t at, uint64_t *db_index)
{
	uint64_t index = get64(hdr + 8);
	uint32_t len = get32(hdr + 4);

	if (crc32c(0, hdr, 28) != get32(hdr + 28)) {
		rerr(r, "corrupt chunk header at byte offset %llu: checksum mismatch",
		     (unsigned long long)at);
		return -1;
	}
	*db_index = index;
	if (bk_is_partial(&r->h)) {
		if (index < r->prev_db_index || index >= bk_db_chunks(&r->h) ||
		    len != bk_chunk_len(&r->h, index) ||
		    get64(hdr + 16) != index * r->h.chunk_size) {
			rerr(r,
			     "unexpected chunk at byte offset %llu: got chunk %llu (%u bytes), expected a chunk from %llu to %llu of stripe %u",
			     (unsigned long long)at, (unsigned long long)index, len,
			     (unsigned long long)r->prev_db_index,
			     (unsigned long long)bk_db_chunks(&r->h) - 1, r->h.stripe + 1);
			return -1;
		}
		r->prev_db_index = index + 1;
		return 0;
	}
	if (index != r->next_index || len != bk_chunk_len(&r->h, index) ||
	    get64(hdr + 16) != index * r->h.chunk_size) {
		rerr(r,
		     "unexpected chunk at byte offset %llu: got chunk %llu (%u bytes), expected chunk %llu (%u bytes) of stripe %u",
		     (unsigned long long)at, (unsigned long long)index, len,
		     (unsigned long long)r->next_index, bk_chunk_len(&r->h, r->next_index),
		     r->h.stripe + 1);
		return -1;
	}
	return 0;
}

static int pwrite_all(struct bk_reader *r, int fd, const uint8_t *buf, size_t len, off_t off)
{
	for (size_t put = 0; put < len;) {
		ssize_t n = pwrite(fd, buf + put, len - put, off + (off_t)put);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r->source_error = 1;
			rerr(r, "cannot write the restored database at byte offset %llu: %s",
			     (unsigned long long)(off + (off_t)put), strerror(errno));
			return -1;
		}
		put += (size_t)n;
	}
	return 0;
}

/* Chunk data through peek/advance: checksummed and written to fd (if >=
 * 0) at off straight from the source's memory, piece by piece. */
static int take_data_in_place(struct bk_reader *r, int fd, off_t off, uint32_t len,
                              uint32_t *crc_out)
{
	uint32_t crc = 0;
	size_t got = 0;

	while (got < len) {
		const void *p;
		ssize_t n = r->peek(r->ctx, &p, len - got);

		if (n < 0) {
			r->source_error = 1;
			rerr(r, "read failed at byte offset %llu",
			     (unsigned long long)(r->offset + got));
			return -1;
		}
		if (n == 0) {
			rerr(r,
			     "stripe truncated at byte offset %llu: stream ended inside chunk data",
			     (unsigned long long)(r->offset + got));
			return -1;
		}
		crc = crc32c(crc, p, (size_t)n);
		if (fd >= 0 && pwrite_all(r, fd, p, (size_t)n, off + (off_t)got) < 0)
			return -1;
		if (r->advance(r->ctx, (size_t)n) < 0) {
			r->source_error = 1;
			rerr(r, "read failed at byte offset %llu",
			     (unsigned long long)(r->offset + got));
			return -1;
		}
		got += (size_t)n;
	}
	r->stream_crc = crc32c_combine(r->stream_crc, crc, len);
	r->offset += len;
	*crc_out = crc;
	return 0;
}

static int read_chunk(struct bk_reader *r, const uint8_t *hdr, int fd, uint8_t *buf, uint64_t *done)
{
	uint64_t at = r->offset - BK_CHUNK_HDR_SIZE;
	uint64_t index;
	uint32_t len = get32(hdr + 4);
	off_t off;
	uint32_t crc;
	uint8_t hdr_crc_v3[4];

	if (check_chunk_hdr(r, hdr, at, &index) < 0)
		return -1;
	off = (off_t)(index * r->h.chunk_size);
	if (r->peek) {
		if (take_data_in_place(r, fd, off, len, &crc) < 0)
			return -1;
	} else if (take_crc(r, buf, len, "chunk data", &crc) < 0) {
		return -1;
	}
	if (r->h.version >= 3) { /* the data CRC follows the data */
		uint8_t c[BK_CHUNK_CHECK_SIZE], want[BK_CHUNK_CHECK_SIZE];

		if (take(r, c, sizeof(c), "a chunk check record") < 0)
			return -1;
		chunk_check(want, index, get32(c));
		if (memcmp(c + 4, want + 4, 4) != 0) {
			rerr(r, "corrupt chunk %llu at byte offset %llu: check record mismatch",
			     (unsigned long long)index, (unsigned long long)at);
			return -1;
		}
		memcpy(hdr_crc_v3, c, 4);
	}
	if (crc != get32(r->h.version >= 3 ? hdr_crc_v3 : hdr + 24)) {
		rerr(r, "corrupt chunk %llu at byte offset %llu: data checksum mismatch",
		     (unsigned long long)index, (unsigned long long)at);
		return -1;
	}
	if (!r->peek && fd >= 0 && pwrite_all(r, fd, buf, len, off) < 0)
		return -1;
	r->next_index += r->h.stripes;
	r->chunks++;
	r->data_bytes += len;
	if (done)
		__atomic_add_fetch(done, len, __ATOMIC_RELAXED);
	return 0;
}

static int read_trailer(struct bk_reader *r, const uint8_t *first)
{
	uint8_t t[BK_TRAILER_SIZE];
	uint32_t crc_before = r->stream_crc_before_record;
	uint64_t at = r->offset - BK_CHUNK_HDR_SIZE;
	uint64_t want = bk_stripe_chunks(&r->h, r->h.stripe);

	memcpy(t, first, BK_CHUNK_HDR_SIZE);
	if (take(r, t + BK_CHUNK_HDR_SIZE, BK_TRAILER_SIZE - BK_CHUNK_HDR_SIZE, "the trailer") < 0)
		return -1;
	if (crc32c(0, t, 60) != get32(t + 60)) {
		rerr(r, "corrupt trailer at byte offset %llu: checksum mismatch",
		     (unsigned long long)at);
		return -1;
	}
	r->t.stripe = get32(t + 4);
	r->t.chunks = get64(t + 8);
	r->t.data_bytes = get64(t + 16);
	memcpy(r->t.id, t + 24, 16);
	r->t.stream_crc = get32(t + 40);
	if (r->h.version >= 2) {
		r->t.db_size = get64(t + 44);
		r->t.db_hash = get64(t + 52);
	}
	if (r->chunks != want) {
		rerr(r,
		     "incomplete stripe %u: trailer at byte offset %llu after %llu of %llu chunks",
		     r->h.stripe + 1, (unsigned long long)at, (unsigned long long)r->chunks,
		     (unsigned long long)want);
		return -1;
	}
	if (r->t.stripe != r->h.stripe || memcmp(r->t.id, r->h.id, 16) != 0 ||
	    r->t.chunks != r->chunks || r->t.data_bytes != r->data_bytes) {
		rerr(r,
		     "trailer at byte offset %llu does not match the stripe header (foreign or mixed stripe)",
		     (unsigned long long)at);
		return -1;
	}
	if (r->t.stream_crc != crc_before) {
		rerr(r,
		     "corrupt stripe %u: whole-stream checksum mismatch (trailer %08x, computed %08x)",
		     r->h.stripe + 1, r->t.stream_crc, crc_before);
		return -1;
	}
	r->trailer_ok = 1;
	return 0;
}

/* After the trailer only zero padding (less than 64 KiB) may follow. */
static int read_padding(struct bk_reader *r)
{
	uint8_t buf[4096];
	uint64_t pad = 0;

	for (;;) {
		size_t got;
		int rc = read_full(r, buf, sizeof(buf), &got);

		if (rc < 0)
			return -1;
		for (size_t i = 0; i < got; i++) {
			if (buf[i] != 0 || pad + i >= BK_MAX_PADDING) {
				rerr(r, "unexpected data after the trailer at byte offset %llu",
				     (unsigned long long)(r->offset + i));
				return -1;
			}
		}
		pad += got;
		r->offset += got;
		if (rc == 0)
			return 0;
	}
}

int bk_read_body(struct bk_reader *r, int fd, uint8_t *buf, uint64_t *done)
{
	uint8_t hdr[BK_CHUNK_HDR_SIZE];

	for (;;) {
		r->stream_crc_before_record = r->stream_crc;
		if (take(r, hdr, sizeof(hdr), "a record header") < 0)
			return -1;
		if (memcmp(hdr, "VDIT", 4) == 0)
			break;
		if (memcmp(hdr, "VDIC", 4) != 0) {
			rerr(r, "corrupt stripe: no record tag at byte offset %llu",
			     (unsigned long long)(r->offset - sizeof(hdr)));
			return -1;
		}
		if (r->next_index >= r->h.chunk_count) {
			rerr(r,
			     "unexpected chunk at byte offset %llu: stripe %u holds only %llu chunks",
			     (unsigned long long)(r->offset - sizeof(hdr)), r->h.stripe + 1,
			     (unsigned long long)bk_stripe_chunks(&r->h, r->h.stripe));
			return -1;
		}
		if (read_chunk(r, hdr, fd, buf, done) < 0)
			return -1;
	}
	if (read_trailer(r, hdr) < 0)
		return -1;
	return read_padding(r);
}

/* ------------------------------------------------------------ the set */

void bk_set_init(struct bk_set *s, unsigned ndev, int lenient)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->ndev = ndev;
	s->lenient = lenient;
}

void bk_set_release(struct bk_set *s)
{
	pthread_mutex_destroy(&s->lock);
}

static int same_backup(const struct bk_header *a, const struct bk_header *b)
{
	return memcmp(a->id, b->id, 16) == 0 && a->stripes == b->stripes &&
	       a->total_size == b->total_size && a->chunk_size == b->chunk_size &&
	       a->time == b->time && strcmp(a->db, b->db) == 0 && a->version == b->version &&
	       a->kind == b->kind && a->flags == b->flags && a->chunk_count == b->chunk_count &&
	       a->lsn == b->lsn && a->first_lsn == b->first_lsn &&
	       memcmp(a->lineage, b->lineage, 16) == 0;
}

static int set_add_locked(struct bk_set *s, const struct bk_header *h, const char *device)
{
	char a[37], b[37];

	if (!s->have_ref) {
		s->have_ref = 1;
		s->ref = *h;
		s->ref_device = device;
	} else if (!same_backup(&s->ref, h)) {
		bk_id_format(s->ref.id, a);
		bk_id_format(h->id, b);
		fmt_err(s->err, sizeof(s->err),
		        "stripes of different backups: device '%s' holds backup %s of '%s', device '%s' holds backup %s of '%s'",
		        s->ref_device, a, s->ref.db, device, b, h->db);
		return -1;
	}
	if (!s->lenient && h->stripes != s->ndev) {
		fmt_err(s->err, sizeof(s->err),
		        "incomplete stripe set: backup of '%s' has %u stripes, %u device%s given (device '%s' holds stripe %u)",
		        h->db, h->stripes, s->ndev, s->ndev == 1 ? "" : "s", device, h->stripe + 1);
		return -1;
	}
	if (s->owner[h->stripe]) {
		fmt_err(s->err, sizeof(s->err),
		        "stripe %u of %u given twice: devices '%s' and '%s'", h->stripe + 1,
		        h->stripes, s->owner[h->stripe], device);
		return -1;
	}
	s->owner[h->stripe] = device;
	return 0;
}

int bk_set_add(struct bk_set *s, const struct bk_header *h, const char *device, char *err,
               size_t errlen)
{
	int rc;

	pthread_mutex_lock(&s->lock);
	rc = s->err[0] ? -1 : set_add_locked(s, h, device);
	if (rc < 0)
		snprintf(err, errlen, "%s", s->err);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int bk_set_complete(struct bk_set *s, char *err, size_t errlen)
{
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	if (s->err[0]) {
		rc = -1;
	} else if (!s->have_ref) {
		fmt_err(s->err, sizeof(s->err), "no stripe was read");
		rc = -1;
	} else if (!s->lenient) {
		for (uint32_t k = 0; k < s->ref.stripes; k++) {
			if (!s->owner[k]) {
				fmt_err(s->err, sizeof(s->err),
				        "incomplete stripe set: stripe %u of %u is missing", k + 1,
				        s->ref.stripes);
				rc = -1;
				break;
			}
		}
	}
	if (rc < 0)
		snprintf(err, errlen, "%s", s->err);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* ------------------------------------------------------------ generated */

void bk_generate(uint8_t *buf, uint32_t len, uint64_t off)
{
	uint32_t i = 0;

	for (; i < len && ((off + i) & 7); i++) /* up to the next word */
		buf[i] = (uint8_t)(bk_generated_word((off + i) & ~7ull) >> (8 * ((off + i) & 7)));
	for (; i + 8 <= len; i += 8) {
		uint64_t v = htole64(bk_generated_word(off + i));

		memcpy(buf + i, &v, 8);
	}
	for (; i < len; i++)
		buf[i] = (uint8_t)(bk_generated_word((off + i) & ~7ull) >> (8 * ((off + i) & 7)));
}
