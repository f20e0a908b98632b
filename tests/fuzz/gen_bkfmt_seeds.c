/* SPDX-License-Identifier: MIT */
/*
 * gen_bkfmt_seeds.c - writes the seed corpus of fuzz_bkfmt: real stripes
 * made by the backup writer (core/cli/bkfmt.c), small enough to stay
 * under 4 KiB, with the harness's flag byte in front (fuzz_bkfmt.c), and
 * a few cut or damaged copies.
 *
 *   make -f tests/fuzz/fuzz.mk seeds     (writes tests/fuzz/corpus/bkfmt/)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bkfmt.h"

#define CAP 8192

struct mem {
	uint8_t b[CAP];
	size_t n;
};

static int mem_write(void *ctx, const void *buf, size_t len)
{
	struct mem *m = ctx;

	if (m->n + len > CAP)
		return -1;
	memcpy(m->b + m->n, buf, len);
	m->n += len;
	return 0;
}

static const char *dir;
static int count;

static void emit(uint8_t flags, const uint8_t *p, size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/seed%02d", dir, ++count);
	f = fopen(path, "wb");
	if (!f || fputc(flags, f) == EOF || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* One stripe of a backup of `total` bytes over `stripes` devices,
 * chunk size 4 KiB, padded to `block`. */
static void stripe(struct mem *m, uint64_t total, uint32_t stripes, uint32_t k, uint32_t block,
                   const char *db, const char *desc)
{
	static const uint8_t id[16] = { 0xde, 0xad, 0xbe, 0xef, 1, 2,  3,  4,
		                        5,    6,    7,    8,    9, 10, 11, 12 };
	uint8_t data[BK_MIN_CHUNK];
	struct bk_writer w;
	struct bk_header h;
	uint64_t i;

	m->n = 0;
	bk_header_init(&h, id, db, total, stripes);
	h.stripe = k;
	h.chunk_size = BK_MIN_CHUNK;
	h.chunk_count = (total + BK_MIN_CHUNK - 1) / BK_MIN_CHUNK;
	h.block_size = block;
	h.time = 1700000000;
	snprintf(h.description, sizeof(h.description), "%s", desc);
	bk_writer_init(&w, &h, mem_write, m);
	if (bk_write_header(&w))
		exit(1);
	for (i = k; i < h.chunk_count; i += stripes) {
		uint32_t len = bk_chunk_len(&h, i);

		for (uint32_t j = 0; j < len; j++)
			data[j] = (uint8_t)(i * 31 + j);
		if (bk_write_chunk(&w, i, data, len))
			exit(1);
	}
	if (bk_write_trailer(&w))
		exit(1);
	while (m->n % block) /* zero padding */
		m->b[m->n++] = 0;
}

int main(int argc, char **argv)
{
	struct mem m;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	/* Whole stripes, read as given (flag 0) and with checksums redone
	 * (flag 1), various read sizes and set sizes. */
	stripe(&m, 0, 1, 0, 512, "empty", "");
	emit(0x00, m.b, m.n);
	emit(0x01 | 0x20, m.b, m.n);
	stripe(&m, 1, 1, 0, 512, "one", "a byte");
	emit(0x02, m.b, m.n);
	emit(0x01 | 0x04 | 0x20, m.b, m.n);
	stripe(&m, 2900, 1, 0, 512, "db", "nightly");
	emit(0x00, m.b, m.n);
	emit(0x01 | 0x06, m.b, m.n);
	emit(0x10, m.b, m.n); /* source fails at the end */
	stripe(&m, 4100, 2, 1, 512, "two", "");
	emit(0x01 | 0x40, m.b, m.n);
	emit(0x08 | 0x40, m.b, m.n);
	stripe(&m, 10000, 3, 2, 1024, "three", "striped");
	emit(0x01 | 0x60, m.b, m.n);
	emit(0x0e, m.b, m.n);
	stripe(&m, 200, 64, 0, 512, "wide", "");
	emit(0x01, m.b, m.n);
	stripe(&m, 0, 64, 63, 512, "wide", "");
	emit(0x01 | 0x80, m.b, m.n);
	stripe(&m, 1000, 1, 0, 2048, "pad2k", "");
	emit(0x01, m.b, m.n);
	/* No padding at all, and padding that is not zero. */
	stripe(&m, 100, 1, 0, 512, "nopad", "");
	emit(0x01, m.b, 512 + 32 + 100 + 64);
	m.b[m.n - 1] = 1;
	emit(0x00, m.b, m.n);
	/* Cut inside the header, a chunk header, the data, the trailer. */
	stripe(&m, 700, 1, 0, 512, "cut", "");
	emit(0x00, m.b, 100);
	emit(0x00, m.b, 512 + 10);
	emit(0x01, m.b, 512 + 32 + 300);
	emit(0x01, m.b, 512 + 32 + 700 + 20);
	/* Damage: header, chunk data, trailer byte, foreign magic. */
	stripe(&m, 700, 1, 0, 512, "bad", "");
	m.b[40] ^= 1;
	emit(0x00, m.b, m.n);
	emit(0x01, m.b, m.n);
	stripe(&m, 700, 1, 0, 512, "bad", "");
	m.b[512 + 32 + 5] ^= 0x80;
	emit(0x00, m.b, m.n);
	stripe(&m, 700, 1, 0, 512, "bad", "");
	m.b[512 + 32 + 700 + 8] = 9; /* trailer chunk count */
	emit(0x01, m.b, m.n);
	memcpy(m.b, "VDIBAKv2", 8);
	emit(0x01, m.b, m.n);
	/* Two chunk headers in a row where the stripe has one chunk. */
	stripe(&m, 100, 1, 0, 512, "dup", "");
	{
		static uint8_t two[CAP];
		size_t rec = BK_CHUNK_HDR_SIZE + 100;

		memcpy(two, m.b, BK_HEADER_SIZE + rec);
		memcpy(two + BK_HEADER_SIZE + rec, m.b + BK_HEADER_SIZE, rec);
		memcpy(two + BK_HEADER_SIZE + 2 * rec, m.b + BK_HEADER_SIZE + rec, BK_TRAILER_SIZE);
		emit(0x01, two, BK_HEADER_SIZE + 2 * rec + BK_TRAILER_SIZE);
	}
	printf("%d seeds in %s\n", count, dir);
	return 0;
}
