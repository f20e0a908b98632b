/* SPDX-License-Identifier: MIT */
/*
 * check_cli_format.c - the backup format of `vdi exec` (core/cli/bkfmt.c,
 * crc32c.c): CRC32C, round trips over 1..8 stripes read in any order and
 * any read size, and every refusal (truncated, corrupted, foreign,
 * incomplete, mixed, duplicated stripes).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bkfmt.h"

/* ------------------------------------------------------- memory streams */

struct mem {
	uint8_t *p;
	size_t len, cap;
	size_t pos;  /* read position */
	size_t step; /* largest read, to vary the read sizes */
	int fail_at; /* read call number that fails, 0 = never */
	int calls;
};

static int mem_write(void *ctx, const void *buf, size_t len)
{
	struct mem *m = ctx;

	if (m->len + len > m->cap) {
		m->cap = (m->len + len) * 2 + 4096;
		m->p = realloc(m->p, m->cap);
		ck_assert_ptr_nonnull(m->p);
	}
	memcpy(m->p + m->len, buf, len);
	m->len += len;
	return 0;
}

static ssize_t mem_read(void *ctx, void *buf, size_t len)
{
	struct mem *m = ctx;
	size_t n = m->len - m->pos;

	if (m->fail_at && ++m->calls == m->fail_at)
		return -1;
	if (n > len)
		n = len;
	if (m->step && n > m->step)
		n = m->step;
	memcpy(buf, m->p + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

/* Zero-copy source over the same memory: peek hands out up to `step`
 * bytes in place, advance consumes them. */
static ssize_t mem_peek(void *ctx, const void **ptr, size_t len)
{
	struct mem *m = ctx;
	size_t n = m->len - m->pos;

	if (m->fail_at && ++m->calls == m->fail_at)
		return -1;
	if (n > len)
		n = len;
	if (m->step && n > m->step)
		n = m->step;
	*ptr = m->p + m->pos;
	return (ssize_t)n;
}

static int mem_advance(void *ctx, size_t n)
{
	struct mem *m = ctx;

	ck_assert_uint_le(n, m->len - m->pos);
	m->pos += n;
	return 0;
}

/* 1: restore() reads chunk data through mem_peek/mem_advance. */
static int use_peek;

static int make_db(uint64_t size, unsigned seed)
{
	int fd = memfd_create("db", 0);
	uint8_t *buf = malloc(65536);

	ck_assert_int_ge(fd, 0);
	srand(seed);
	for (uint64_t off = 0; off < size; off += 65536) {
		size_t n = size - off < 65536 ? (size_t)(size - off) : 65536;

		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)rand();
		ck_assert_int_eq(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
	}
	free(buf);
	return fd;
}

static const uint8_t id_a[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
static const uint8_t id_b[16] = { 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1 };

/* Backs up fd into n memory stripes, each padded to `pad` bytes. */
static void backup(int fd, uint64_t size, unsigned n, const uint8_t *id, struct mem *out,
                   size_t pad)
{
	uint8_t *buf = malloc(BK_CHUNK_SIZE);
	uint64_t done = 0;
	char err[BK_ERR_LEN];

	for (unsigned k = 0; k < n; k++) {
		struct bk_header h;
		struct bk_writer w;

		memset(&out[k], 0, sizeof(out[k]));
		bk_header_init(&h, id, "db", size, n);
		h.stripe = k;
		h.time = 1700000000;
		bk_writer_init(&w, &h, mem_write, &out[k]);
		ck_assert_int_eq(bk_backup_stripe(&w, fd, buf, &done, err, sizeof(err)), 0);
		ck_assert_uint_eq(out[k].len, w.offset);
		while (pad && out[k].len % pad) {
			uint8_t z = 0;

			mem_write(&out[k], &z, 1);
		}
	}
	ck_assert_uint_eq(done, size);
	free(buf);
}

/* Restores n stripes given in the order of `order` into a new memfd;
 * returns 0 (and *fd_out) or -1 with the first message in err. */
static int restore(struct mem *stripes, const unsigned *order, unsigned n, int lenient, int *fd_out,
                   char *err, size_t errlen)
{
	static const char *names[] = { "d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8" };
	uint8_t *buf = malloc(BK_MAX_CHUNK);
	struct bk_set set;
	int fd = memfd_create("out", 0), rc = 0;

	bk_set_init(&set, n, lenient);
	for (unsigned i = 0; i < n && rc == 0; i++) {
		struct bk_reader r;
		struct mem *m = &stripes[order ? order[i] : i];

		m->pos = 0;
		bk_reader_init(&r, mem_read, m, names[i]);
		if (use_peek)
			bk_reader_set_peek(&r, mem_peek, mem_advance);
		rc = bk_read_header(&r);
		if (rc == 0)
			rc = bk_set_add(&set, &r.h, names[i], r.err, sizeof(r.err));
		if (rc == 0)
			rc = bk_read_body(&r, fd, buf, NULL);
		if (rc == 0 && ftruncate(fd, (off_t)r.h.total_size) != 0)
			rc = -1;
		if (rc < 0)
			snprintf(err, errlen, "%s", r.err);
	}
	if (rc == 0)
		rc = bk_set_complete(&set, err, errlen);
	bk_set_release(&set);
	free(buf);
	if (rc == 0)
		*fd_out = fd;
	else
		close(fd);
	return rc;
}

static void assert_same(int a, int b, uint64_t size)
{
	uint8_t *x = malloc(65536), *y = malloc(65536);

	ck_assert_int_eq(lseek(b, 0, SEEK_END), (off_t)size);
	for (uint64_t off = 0; off < size; off += 65536) {
		size_t n = size - off < 65536 ? (size_t)(size - off) : 65536;

		ck_assert_int_eq(pread(a, x, n, (off_t)off), (ssize_t)n);
		ck_assert_int_eq(pread(b, y, n, (off_t)off), (ssize_t)n);
		ck_assert_msg(memcmp(x, y, n) == 0, "data differs near offset %llu",
		              (unsigned long long)off);
	}
	free(x);
	free(y);
}

static void free_stripes(struct mem *m, unsigned n)
{
	for (unsigned k = 0; k < n; k++)
		free(m[k].p);
}

/* ------------------------------------------------------------- crc32c */

START_TEST(test_crc_vectors)
{
	static uint8_t zeros[32], ones[32];

	memset(ones, 0xff, sizeof(ones));
	ck_assert_uint_eq(crc32c(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(crc32c_portable(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(crc32c(0, "", 0), 0);
	/* RFC 3720 B.4 test vectors. */
	ck_assert_uint_eq(crc32c(0, zeros, 32), 0x8A9136AAu);
	ck_assert_uint_eq(crc32c(0, ones, 32), 0x62A8AB43u);
	ck_assert_uint_eq(crc32c_portable(0, ones, 32), 0x62A8AB43u);
}
END_TEST

START_TEST(test_crc_paths_agree)
{
	uint8_t buf[1000];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	for (size_t off = 0; off < 9; off++) {
		for (size_t len = 0; len + off <= sizeof(buf); len += 37) {
			uint32_t a = crc32c(0, buf + off, len);

			ck_assert_uint_eq(a, crc32c_portable(0, buf + off, len));
			/* chaining */
			ck_assert_uint_eq(a, crc32c(crc32c(0, buf + off, len / 3),
			                            buf + off + len / 3, len - len / 3));
		}
	}
}
END_TEST

/* The three-lane path (large buffers) and crc32c_combine agree with the
 * portable table on sizes around the lane threshold and odd offsets. */
START_TEST(test_crc_lanes_and_combine)
{
	static uint8_t buf[70000];
	uint32_t seed = 12345;

	for (size_t i = 0; i < sizeof(buf); i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (uint8_t)(seed >> 16);
	}
	for (size_t len = 12000; len <= 69990; len += 2311) {
		for (size_t off = 0; off < 3; off++) {
			uint32_t want = crc32c_portable(0, buf + off, len);
			size_t cut = len / 5 + off;

			ck_assert_uint_eq(crc32c(0, buf + off, len), want);
			ck_assert_uint_eq(crc32c(0x1234567u, buf + off, len),
			                  crc32c_portable(0x1234567u, buf + off, len));
			ck_assert_uint_eq(crc32c_combine(crc32c(0, buf + off, cut),
			                                 crc32c(0, buf + off + cut, len - cut),
			                                 len - cut),
			                  want);
		}
	}
	ck_assert_uint_eq(crc32c_combine(0, 0xE3069283u, 9), 0xE3069283u);
	ck_assert_uint_eq(crc32c_combine(0xE3069283u, 0, 0), 0xE3069283u);
}
END_TEST

/* ------------------------------------------------------------- header */

START_TEST(test_header_roundtrip)
{
	struct bk_header h, g;
	uint8_t raw[BK_HEADER_SIZE];
	char err[BK_ERR_LEN], idtext[37];

	bk_header_init(&h, id_a, "sales", 5u << 20, 3);
	h.stripe = 2;
	h.block_size = 4096;
	h.max_transfer_size = 1048576;
	h.time = 1700000123;
	snprintf(h.description, sizeof(h.description), "nightly");
	bk_header_encode(&h, raw);
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), 0);
	ck_assert_mem_eq(g.id, id_a, 16);
	ck_assert_uint_eq(g.stripe, 2);
	ck_assert_uint_eq(g.stripes, 3);
	ck_assert_uint_eq(g.block_size, 4096);
	ck_assert_uint_eq(g.max_transfer_size, 1048576);
	ck_assert_uint_eq(g.chunk_count, 5);
	ck_assert_uint_eq(g.total_size, 5u << 20);
	ck_assert_int_eq(g.time, 1700000123);
	ck_assert_str_eq(g.db, "sales");
	ck_assert_str_eq(g.description, "nightly");
	ck_assert_uint_eq(g.crc, h.crc);
	ck_assert_uint_eq(bk_stripe_chunks(&g, 0), 2);
	ck_assert_uint_eq(bk_stripe_chunks(&g, 2), 1);
	bk_id_format(id_a, idtext);
	ck_assert_str_eq(idtext, "01020304-0506-0708-090a-0b0c0d0e0f10");
}
END_TEST

START_TEST(test_header_refusals)
{
	struct bk_header h, g;
	uint8_t raw[BK_HEADER_SIZE];
	char err[BK_ERR_LEN];

	bk_header_init(&h, id_a, "db", 100, 2);
	bk_header_encode(&h, raw);
	raw[100] ^= 1;
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "corrupt backup header: checksum mismatch");

	bk_header_encode(&h, raw);
	raw[8] = 4; /* version */
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), -1);
	ck_assert_str_eq(
		err,
		"unsupported backup format version 4 (header size 512): this vdi reads versions 1 to 3");

	h.kind = 4;
	bk_header_encode(&h, raw);
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "corrupt backup header: kind 4, flags 0");
	h.kind = BK_FULL;
	h.flags = 2;
	bk_header_encode(&h, raw);
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "corrupt backup header: kind 0, flags 0x2");
	h.flags = 0;
	h.kind = BK_SNAPSHOT; /* snapshot metadata carries no chunk */
	bk_header_encode(&h, raw);
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "corrupt backup header: 1 chunks for 100 bytes");
	h.kind = BK_DIFF;
	h.chunk_count = 2; /* more than the database has */
	bk_header_encode(&h, raw);
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "corrupt backup header: 2 chunks for 100 bytes");
	bk_header_init(&h, id_a, "db", 100, 2);

	bk_header_encode(&h, raw);
	raw[0] = 'X';
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "not a vdi backup: foreign data where the 'VDIBAKv1' header belongs");

	h.stripe = 2; /* of 2: out of range, with a valid checksum */
	bk_header_encode(&h, raw);
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "corrupt backup header: stripe 3 of 2");

	h.stripe = 0;
	h.chunk_count = 7;
	bk_header_encode(&h, raw);
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "corrupt backup header: 7 chunks for 100 bytes");
}
END_TEST

/* --------------------------------------------------------- round trips */

static const uint64_t sizes[] = {
	0,
	1,
	511,
	4095,
	4097,
	BK_CHUNK_SIZE - 1,
	BK_CHUNK_SIZE,
	BK_CHUNK_SIZE + 1,
	5 * BK_CHUNK_SIZE + 12345,
};
static const unsigned counts[] = { 1, 2, 3, 8 };

START_TEST(test_roundtrip)
{
	uint64_t size = sizes[_i % 9];
	unsigned n = counts[(_i / 9) % 4];
	struct mem s[8];
	unsigned order[8] = { 0 };
	char err[BK_ERR_LEN];
	int db = make_db(size, (unsigned)_i), out = -1;

	use_peek = _i >= 36; /* second half: chunk data read in place */
	backup(db, size, n, id_a, s, 512);
	for (unsigned k = 0; k < n; k++) {
		order[k] = n - 1 - k;              /* reversed: order is recovered */
		s[k].step = 1 + (size_t)k * 70001; /* odd read sizes */
	}
	ck_assert_msg(restore(s, order, n, 0, &out, err, sizeof(err)) == 0, "%s", err);
	assert_same(db, out, size);
	close(out);
	close(db);
	free_stripes(s, n);
}
END_TEST

START_TEST(test_padding)
{
	struct mem s[1];
	char err[BK_ERR_LEN];
	int db = make_db(1000, 1), out;
	uint8_t one = 1, zero = 0;

	backup(db, 1000, 1, id_a, s, 65536); /* 64 KiB blocks: much padding */
	ck_assert_int_eq(restore(s, NULL, 1, 0, &out, err, sizeof(err)), 0);
	close(out);
	mem_write(&s[0], &one, 1);
	ck_assert_int_eq(restore(s, NULL, 1, 0, &out, err, sizeof(err)), -1);
	ck_assert_str_eq(err,
	                 "device 'd0': unexpected data after the trailer at byte offset 65536");
	s[0].len--;
	while (s[0].len < 512 + 32 + 1000 + BK_CHUNK_CHECK_SIZE + 64 + BK_MAX_PADDING + 1)
		mem_write(&s[0], &zero, 1);
	ck_assert_int_eq(restore(s, NULL, 1, 0, &out, err, sizeof(err)), -1);
	ck_assert_str_eq(err,
	                 "device 'd0': unexpected data after the trailer at byte offset 67151");
	close(db);
	free_stripes(s, 1);
}
END_TEST

/* ---------------------------------------------------------- refusals */

/* A 2-stripe backup of 3 MiB + 100 bytes: stripe 0 has chunks 0 and 2,
 * stripe 1 chunks 1 and 3. */
#define RSIZE (3 * BK_CHUNK_SIZE + 100)

static struct mem rs[2], other[2];
static int rdb;

static void refusal_setup(void)
{
	int db2;

	rdb = make_db(RSIZE, 7);
	backup(rdb, RSIZE, 2, id_a, rs, 4096);
	db2 = make_db(RSIZE, 8);
	backup(db2, RSIZE, 2, id_b, other, 4096);
	close(db2);
}

static void refusal_teardown(void)
{
	close(rdb);
	free_stripes(rs, 2);
	free_stripes(other, 2);
}

static void expect_refusal(struct mem *s, const unsigned *order, unsigned n, const char *msg)
{
	char err[BK_ERR_LEN];
	int out = -1;

	/* Both ways of reading chunk data refuse with the same words. */
	for (use_peek = 0; use_peek < 2; use_peek++) {
		ck_assert_int_eq(restore(s, order, n, 0, &out, err, sizeof(err)), -1);
		ck_assert_msg(strcmp(err, msg) == 0, "\n got: %s\nwant: %s (peek %d)", err, msg,
		              use_peek);
	}
	use_peek = 0;
}

START_TEST(test_swapped_accepted)
{
	static const unsigned swap[] = { 1, 0 };
	char err[BK_ERR_LEN];
	int out;

	ck_assert_msg(restore(rs, swap, 2, 0, &out, err, sizeof(err)) == 0, "%s", err);
	assert_same(rdb, out, RSIZE);
	close(out);
}
END_TEST

START_TEST(test_truncated)
{
	static const struct {
		size_t keep;
		const char *msg;
	} cuts[] = {
		{ 0, "device 'd0': stripe is empty: no backup header" },
		{ 100,
		  "device 'd0': stripe truncated at byte offset 100: stream ended inside the backup header" },
		{ 512,
		  "device 'd0': stripe truncated at byte offset 512: stream ended inside a record header" },
		{ 530,
		  "device 'd0': stripe truncated at byte offset 530: stream ended inside a record header" },
		{ 544 + 4096,
		  "device 'd0': stripe truncated at byte offset 4640: stream ended inside chunk data" },
		{ 544 + BK_CHUNK_SIZE,
		  "device 'd0': stripe truncated at byte offset 1049120: stream ended inside a chunk check record" },
		{ 552 + BK_CHUNK_SIZE,
		  "device 'd0': stripe truncated at byte offset 1049128: stream ended inside a record header" },
		{ 2 * (552 + BK_CHUNK_SIZE) - 512 + 40,
		  "device 'd0': stripe truncated at byte offset 2097784: stream ended inside the trailer" },
	};
	size_t len = rs[0].len;

	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		rs[0].len = cuts[i].keep;
		expect_refusal(rs, NULL, 2, cuts[i].msg);
	}
	rs[0].len = len;
}
END_TEST

START_TEST(test_flipped)
{
	static const struct {
		size_t at;
		const char *msg;
	} flips[] = {
		{ 3,
		  "device 'd0': not a vdi backup: foreign data where the 'VDIBAKv1' header belongs" },
		{ 90, "device 'd0': corrupt backup header: checksum mismatch" },
		{ 512, "device 'd0': corrupt stripe: no record tag at byte offset 512" },
		{ 520, "device 'd0': corrupt chunk header at byte offset 512: checksum mismatch" },
		{ 544 + 777,
		  "device 'd0': corrupt chunk 0 at byte offset 512: data checksum mismatch" },
		{ 544 + BK_CHUNK_SIZE + 1,
		  "device 'd0': corrupt chunk 0 at byte offset 512: check record mismatch" },
		{ 544 + BK_CHUNK_SIZE + 6,
		  "device 'd0': corrupt chunk 0 at byte offset 512: check record mismatch" },
		{ 2 * (552 + BK_CHUNK_SIZE) - 512 + 9,
		  "device 'd0': corrupt trailer at byte offset 2097744: checksum mismatch" },
	};
	for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
		rs[0].p[flips[i].at] ^= 0x20;
		expect_refusal(rs, NULL, 2, flips[i].msg);
		rs[0].p[flips[i].at] ^= 0x20;
	}
}
END_TEST

START_TEST(test_foreign)
{
	struct mem f[2] = { { 0 } };
	char text[600];

	memset(text, 'A', sizeof(text));
	mem_write(&f[0], text, sizeof(text));
	expect_refusal(
		f, NULL, 1,
		"device 'd0': not a vdi backup: foreign data where the 'VDIBAKv1' header belongs");
	f[0].len = 20; /* a short foreign file */
	expect_refusal(
		f, NULL, 1,
		"device 'd0': not a vdi backup: foreign data where the 'VDIBAKv1' header belongs");
	free(f[0].p);
}
END_TEST

START_TEST(test_missing_stripe)
{
	static const unsigned only1[] = { 1 };

	expect_refusal(
		rs, only1, 1,
		"incomplete stripe set: backup of 'db' has 2 stripes, 1 device given (device 'd0' holds stripe 2)");
}
END_TEST

START_TEST(test_duplicate_stripe)
{
	static const unsigned twice[] = { 0, 0 };

	expect_refusal(rs, twice, 2, "stripe 1 of 2 given twice: devices 'd0' and 'd1'");
}
END_TEST

START_TEST(test_mixed_backups)
{
	struct mem mix[2] = { rs[0], other[1] };

	expect_refusal(
		mix, NULL, 2,
		"stripes of different backups: device 'd0' holds backup 01020304-0506-0708-090a-0b0c0d0e0f10 of 'db', device 'd1' holds backup 100f0e0d-0c0b-0a09-0807-060504030201 of 'db'");
}
END_TEST

START_TEST(test_spliced_chunk)
{
	/* Chunk 2 of stripe 0 replaced by chunk 3 of stripe 1 (same size,
	 * valid checksums): the index check catches it. */
	struct mem s = { 0 };
	size_t rec = 32 + BK_CHUNK_SIZE + BK_CHUNK_CHECK_SIZE, c1 = 512 + rec;

	mem_write(&s, rs[0].p, c1);
	mem_write(&s, rs[1].p + c1, 32 + 100 + BK_CHUNK_CHECK_SIZE);
	mem_write(&s, rs[0].p + c1 + rec, rs[0].len - c1 - rec);
	{
		struct mem two[2] = { s, rs[1] };

		expect_refusal(
			two, NULL, 2,
			"device 'd0': unexpected chunk at byte offset 1049128: got chunk 3 (100 bytes), expected chunk 2 (1048576 bytes) of stripe 1");
	}
	free(s.p);
}
END_TEST

START_TEST(test_dropped_chunk)
{
	/* Stripe 0 without its second chunk, trailer kept: incomplete. */
	struct mem s = { 0 };
	size_t c1 = 512 + (32 + BK_CHUNK_SIZE + BK_CHUNK_CHECK_SIZE);

	mem_write(&s, rs[0].p, c1);
	mem_write(&s, rs[0].p + 2 * c1 - 512, rs[0].len - (2 * c1 - 512));
	{
		struct mem two[2] = { s, rs[1] };

		expect_refusal(
			two, NULL, 2,
			"device 'd0': incomplete stripe 1: trailer at byte offset 1049128 after 1 of 2 chunks");
	}
	free(s.p);
}
END_TEST

START_TEST(test_source_error)
{
	struct bk_reader r;
	uint8_t *buf = malloc(BK_CHUNK_SIZE);

	rs[0].pos = 0;
	rs[0].fail_at = 3;
	rs[0].calls = 0;
	bk_reader_init(&r, mem_read, &rs[0], "dev");
	ck_assert_int_eq(bk_read_header(&r), 0);
	ck_assert_int_eq(bk_read_body(&r, -1, buf, NULL), -1);
	ck_assert_int_eq(r.source_error, 1);
	ck_assert_str_eq(r.err, "device 'dev': read failed at byte offset 544");
	rs[0].fail_at = 0;
	free(buf);
}
END_TEST

START_TEST(test_lenient_set)
{
	struct bk_set set;
	struct bk_header h;
	char err[BK_ERR_LEN];

	bk_header_init(&h, id_a, "db", 10, 3);
	h.stripe = 1;
	bk_set_init(&set, 1, 1);
	ck_assert_int_eq(bk_set_add(&set, &h, "x", err, sizeof(err)), 0);
	ck_assert_int_eq(bk_set_complete(&set, err, sizeof(err)), 0);
	bk_set_release(&set);
	bk_set_init(&set, 1, 0);
	ck_assert_int_eq(bk_set_complete(&set, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "no stripe was read");
	bk_set_release(&set);
}
END_TEST

/* ------------------------------------------------------ version 2 */

START_TEST(test_version1_still_read)
{
	struct bk_header h, g;
	uint8_t raw[BK_HEADER_SIZE];
	char err[BK_ERR_LEN];

	bk_header_init(&h, id_a, "db", 5u << 20, 1);
	ck_assert_uint_eq(h.version, BK_VERSION);
	h.version = 1; /* what vdi wrote before differential backups */
	h.kind = BK_LOG;
	h.lsn = 9; /* not written by version 1 */
	bk_header_encode(&h, raw);
	for (unsigned i = 464; i < 508; i++)
		ck_assert_uint_eq(raw[i], 0);
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), 0);
	ck_assert_uint_eq(g.version, 1);
	ck_assert_uint_eq(g.kind, BK_FULL);
	ck_assert_uint_eq(g.lsn, 0);
}
END_TEST

START_TEST(test_version2_fields)
{
	struct bk_header h, g;
	uint8_t raw[BK_HEADER_SIZE];
	char err[BK_ERR_LEN];

	bk_header_init(&h, id_a, "db", 5u << 20, 3);
	h.kind = BK_LOG;
	h.flags = BK_F_COPY_ONLY;
	memcpy(h.lineage, id_b, 16);
	h.lsn = 0x1122334455667788ull;
	h.first_lsn = 42;
	h.chunk_count = 2;
	bk_header_encode(&h, raw);
	ck_assert_int_eq(bk_header_decode(&g, raw, err, sizeof(err)), 0);
	ck_assert_uint_eq(g.kind, BK_LOG);
	ck_assert_uint_eq(g.flags, BK_F_COPY_ONLY);
	ck_assert_mem_eq(g.lineage, id_b, 16);
	ck_assert_uint_eq(g.lsn, 0x1122334455667788ull);
	ck_assert_uint_eq(g.first_lsn, 42);
	ck_assert_int_eq(bk_is_partial(&g), 1);
	ck_assert_uint_eq(bk_db_chunks(&g), 5);
}
END_TEST

START_TEST(test_hash_detects_every_byte)
{
	uint8_t buf[200];
	uint64_t base, seen[200 * 8];

	for (unsigned i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7);
	base = bk_hash64(buf, sizeof(buf));
	ck_assert_uint_ne(base, bk_hash64(buf, sizeof(buf) - 1)); /* length counts */
	for (unsigned i = 0; i < sizeof(buf) * 8; i++) {
		buf[i / 8] ^= (uint8_t)(1u << (i % 8));
		seen[i] = bk_hash64(buf, sizeof(buf));
		buf[i / 8] ^= (uint8_t)(1u << (i % 8));
		ck_assert_uint_ne(seen[i], base);
		for (unsigned k = 0; k < i; k++)
			ck_assert_uint_ne(seen[k], seen[i]);
	}
	ck_assert_uint_eq(bk_hash64(buf, sizeof(buf)), base);
	{
		uint64_t m[3] = { 1, 2, 3 }, n[3] = { 1, 3, 2 };

		ck_assert_uint_ne(bk_db_hash(m, 3, 10), bk_db_hash(n, 3, 10)); /* order counts */
		ck_assert_uint_ne(bk_db_hash(m, 3, 10), bk_db_hash(m, 3, 11)); /* size counts */
	}
}
END_TEST

/* A partial backup: only the selected chunks, slot j in stripe j mod N,
 * land at their own offsets; the rest of the target is left alone. */
START_TEST(test_partial_roundtrip)
{
	uint64_t size = (7u << 20) + 1234;
	int fd = make_db(size, 77), out;
	static const uint64_t sel[] = { 0, 3, 4, 7 };
	struct mem m[2];
	uint8_t *buf = malloc(BK_CHUNK_SIZE), *a = malloc(BK_CHUNK_SIZE),
		*b = malloc(BK_CHUNK_SIZE);
	uint64_t map[8], done = 0;
	char err[BK_ERR_LEN];

	bk_hash_file(fd, size, BK_CHUNK_SIZE, buf, map);
	for (unsigned k = 0; k < 2; k++) {
		struct bk_header h;
		struct bk_writer w;

		memset(&m[k], 0, sizeof(m[k]));
		bk_header_init(&h, id_a, "db", size, 2);
		h.stripe = k;
		h.kind = BK_DIFF;
		h.chunk_count = 4;
		bk_writer_init(&w, &h, mem_write, &m[k]);
		w.select = sel;
		w.db_size = size;
		w.db_hash = bk_db_hash(map, 8, size);
		ck_assert_int_eq(bk_backup_stripe(&w, fd, buf, &done, err, sizeof(err)), 0);
		ck_assert_uint_eq(w.chunks, 2);
	}
	ck_assert_uint_eq(done, 3 * BK_CHUNK_SIZE + 1234);
	ck_assert_int_eq(restore(m, NULL, 2, 0, &out, err, sizeof(err)), 0);
	for (uint64_t i = 0; i < 8; i++) {
		uint32_t len = i == 7 ? 1234 : BK_CHUNK_SIZE;
		int wanted = i == 0 || i == 3 || i == 4 || i == 7;

		ck_assert_int_eq(pread(fd, a, len, (off_t)(i << 20)), len);
		memset(b, 0, len);
		ck_assert_int_eq(pread(out, b, len, (off_t)(i << 20)), len);
		ck_assert_msg((memcmp(a, b, len) == 0) == wanted, "chunk %llu %s",
		              (unsigned long long)i, wanted ? "missing" : "written");
	}
	close(out);
	/* the same stripes with a chunk out of order are refused */
	{
		uint8_t *p = m[0].p + BK_HEADER_SIZE;
		uint8_t tmp[BK_CHUNK_HDR_SIZE];
		uint32_t c;

		memcpy(tmp, p, sizeof(tmp));
		tmp[8] = 9; /* chunk 9 of an 8-chunk database */
		c = crc32c(0, tmp, 28);
		memcpy(tmp + 28, &c, 4);
		memcpy(p, tmp, sizeof(tmp));
		ck_assert_int_eq(restore(m, NULL, 2, 0, &out, err, sizeof(err)), -1);
		ck_assert_str_eq(
			err,
			"device 'd0': unexpected chunk at byte offset 512: got chunk 9 (1048576 bytes), expected a chunk from 0 to 7 of stripe 1");
	}
	free_stripes(m, 2);
	free(buf);
	free(a);
	free(b);
	close(fd);
}
END_TEST

/* A sink whose reserve hands out rooms of varying odd sizes, as the
 * shared buffers of a stream do after headers of other sizes. */
struct roomy {
	struct mem m;
	uint8_t room[70000];
	size_t given, calls;
};

static ssize_t roomy_reserve(void *ctx, void **ptr)
{
	struct roomy *r = ctx;

	r->given = 1 + (r->calls++ * 7919) % sizeof(r->room);
	*ptr = r->room;
	return (ssize_t)r->given;
}

static int roomy_commit(void *ctx, size_t n)
{
	struct roomy *r = ctx;

	ck_assert_uint_le(n, r->given);
	return mem_write(&r->m, r->room, n);
}

static int roomy_write(void *ctx, const void *buf, size_t len)
{
	return mem_write(&((struct roomy *)ctx)->m, buf, len);
}

/* Version 3 read in place (reserve/commit) writes the very bytes and
 * chunk hashes of the copying path; versions 2 and 3 both restore. */
START_TEST(test_in_place_and_versions)
{
	uint64_t size = 3 * BK_CHUNK_SIZE + 999;
	int fd = make_db(size, 5), out;
	uint8_t *buf = malloc(BK_CHUNK_SIZE);
	struct roomy *a = calloc(1, sizeof(*a));
	struct mem b = { 0 }, v2 = { 0 };
	uint64_t map_a[4], map_b[4];
	struct bk_header h;
	struct bk_writer w;
	char err[BK_ERR_LEN];

	bk_header_init(&h, id_a, "db", size, 1);
	bk_writer_init(&w, &h, roomy_write, a);
	w.reserve = roomy_reserve;
	w.commit = roomy_commit;
	w.map = map_a;
	ck_assert_int_eq(bk_backup_stripe(&w, fd, buf, NULL, err, sizeof(err)), 0);
	ck_assert_uint_gt(a->calls, 4); /* chunks did go through many rooms */
	bk_writer_init(&w, &h, mem_write, &b);
	w.map = map_b;
	ck_assert_int_eq(bk_backup_stripe(&w, fd, buf, NULL, err, sizeof(err)), 0);
	ck_assert_uint_eq(a->m.len, b.len);
	ck_assert_int_eq(memcmp(a->m.p, b.p, b.len), 0);
	ck_assert_int_eq(memcmp(map_a, map_b, sizeof(map_a)), 0);
	for (unsigned i = 0; i < 4; i++) {
		uint32_t len = i == 3 ? 999 : BK_CHUNK_SIZE;

		ck_assert_int_eq(pread(fd, buf, len, (off_t)i * BK_CHUNK_SIZE), len);
		ck_assert_uint_eq(map_a[i], bk_hash64(buf, len));
	}
	ck_assert_int_eq(restore(&b, NULL, 1, 0, &out, err, sizeof(err)), 0);
	assert_same(fd, out, size);
	close(out);
	h.version = 2; /* what vdi wrote before the check record */
	bk_writer_init(&w, &h, mem_write, &v2);
	ck_assert_int_eq(bk_backup_stripe(&w, fd, buf, NULL, err, sizeof(err)), 0);
	ck_assert_uint_eq(v2.len, b.len - 4 * BK_CHUNK_CHECK_SIZE);
	ck_assert_int_eq(restore(&v2, NULL, 1, 0, &out, err, sizeof(err)), 0);
	assert_same(fd, out, size);
	close(out);
	free(a->m.p);
	free(a);
	free(b.p);
	free(v2.p);
	free(buf);
	close(fd);
}
END_TEST

START_TEST(test_hasher_pieces)
{
	static uint8_t data[5000];
	struct bk_hasher x;

	for (unsigned i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 31 + 7);
	for (size_t step = 1; step < 80; step += 3) {
		bk_hasher_init(&x);
		for (size_t off = 0; off < sizeof(data); off += step)
			bk_hasher_update(&x, data + off,
			                 sizeof(data) - off < step ? sizeof(data) - off : step);
		ck_assert_uint_eq(bk_hasher_final(&x), bk_hash64(data, sizeof(data)));
	}
}
END_TEST

static Suite *format_suite(void)
{
	Suite *s = suite_create("cli_format");
	TCase *tc = tcase_create("crc_header");
	TCase *rt = tcase_create("roundtrip");
	TCase *rf = tcase_create("refusals");

	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_crc_vectors);
	tcase_add_test(tc, test_crc_paths_agree);
	tcase_add_test(tc, test_crc_lanes_and_combine);
	tcase_add_test(tc, test_header_roundtrip);
	tcase_add_test(tc, test_header_refusals);
	tcase_add_test(tc, test_lenient_set);
	tcase_add_test(tc, test_version1_still_read);
	tcase_add_test(tc, test_version2_fields);
	tcase_add_test(tc, test_hash_detects_every_byte);
	tcase_add_test(tc, test_partial_roundtrip);
	tcase_add_test(tc, test_in_place_and_versions);
	tcase_add_test(tc, test_hasher_pieces);
	suite_add_tcase(s, tc);

	tcase_set_timeout(rt, 60);
	tcase_add_loop_test(rt, test_roundtrip, 0, 9 * 4 * 2); /* copy, then in place */
	tcase_add_test(rt, test_padding);
	suite_add_tcase(s, rt);

	tcase_set_timeout(rf, 30);
	tcase_add_checked_fixture(rf, refusal_setup, refusal_teardown);
	tcase_add_test(rf, test_swapped_accepted);
	tcase_add_test(rf, test_truncated);
	tcase_add_test(rf, test_flipped);
	tcase_add_test(rf, test_foreign);
	tcase_add_test(rf, test_missing_stripe);
	tcase_add_test(rf, test_duplicate_stripe);
	tcase_add_test(rf, test_mixed_backups);
	tcase_add_test(rf, test_spliced_chunk);
	tcase_add_test(rf, test_dropped_chunk);
	tcase_add_test(rf, test_source_error);
	suite_add_tcase(s, rf);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(format_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
