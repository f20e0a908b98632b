/* SPDX-License-Identifier: MIT */
/*
 * fuzz_bkfmt.c - libFuzzer harness for the backup-format reader of
 * `vdi exec` (core/cli/bkfmt.h): stripe header, chunk records, trailer
 * and padding, read from untrusted bytes, and the stripe-set checks.
 *
 * Input layout:
 *   byte 0   flags: bit 0   recompute every checksum of the stream
 *                           before reading it (see below);
 *                   bits 1-3 read granularity: the read callback hands
 *                           out at most 1, 7, 64, 511, 4096 ... bytes
 *                           per call, so cuts land inside records;
 *                   bit 4   the source fails (returns -1) once the
 *                           stream is consumed, instead of ending;
 *                   bits 5-6 device count for the stripe-set check
 *                           (0: lenient, as HEADERONLY);
 *                   bit 7   with bit 0: leave the trailer's
 *                           whole-stream checksum as given.
 *   rest     one stripe, as `vdi exec` BACKUP writes it.
 *
 * Checksums: random bytes almost never carry a right CRC32C, which would
 * keep the fuzzer at the header's checksum.  With bit 0 set the harness
 * walks the stream the way the format describes it and rewrites the
 * header CRC, each chunk record's data and header CRCs, and the
 * trailer's whole-stream and own CRCs, so that the fuzzer reaches the
 * semantic checks behind them (indexes, lengths, offsets, counts, ids,
 * padding).  With bit 0 clear the bytes are read as given.
 *
 * The chunks are restored into a memfd (pwrite at their offsets, as
 * RESTORE does into the database file); after a complete stripe every
 * chunk's bytes are read back from it and compared with the stream.
 *
 * Checked besides the sanitizers: bk_read_header/bk_read_body return 0
 * or -1; -1 comes with a message that names the device; 0 from the header
 * means its fields are in the documented ranges; 0 from the body means
 * every chunk of the stripe was read, the counts agree with the header,
 * and only the stream's bytes were consumed; a failing source is never
 * taken for a complete stripe.  The decoded header then goes through
 * bk_set_add / bk_set_complete.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bkfmt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                               \
	do {                                                                    \
		fprintf(stderr, "fuzz_bkfmt: contract violated: " __VA_ARGS__); \
		fputc('\n', stderr);                                            \
		abort();                                                        \
	} while (0)

static const char DEVICE[] = "fuzzdev";

struct src {
	const uint8_t *p;
	size_t len, off;
	size_t step;     /* most bytes per read call */
	int fail_at_end; /* -1 instead of 0 at the end */
	int failed;      /* returned -1 */
};

static ssize_t src_read(void *ctx, void *buf, size_t len)
{
	struct src *s = ctx;
	size_t n = s->len - s->off;

	if (!n) {
		if (s->fail_at_end) {
			s->failed = 1;
			return -1;
		}
		return 0;
	}
	if (n > len)
		n = len;
	if (n > s->step)
		n = s->step;
	memcpy(buf, s->p + s->off, n);
	s->off += n;
	return (ssize_t)n;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* Rewrites the checksums of a stripe in place (layout: bkfmt.h). */
static void fix_checksums(uint8_t *s, size_t len, int keep_stream_crc)
{
	size_t off = BK_HEADER_SIZE;

	if (len < BK_HEADER_SIZE)
		return;
	put32(s + BK_HEADER_SIZE - 4, crc32c(0, s, BK_HEADER_SIZE - 4));
	while (len - off >= BK_CHUNK_HDR_SIZE) {
		uint8_t *r = s + off;

		if (!memcmp(r, "VDIC", 4)) {
			size_t dlen = get32(r + 4), have = len - off - BK_CHUNK_HDR_SIZE;

			if (dlen > have)
				dlen = have;
			if (get32(s + 8) >= 3) { /* the check record after the data */
				uint8_t *c = r + BK_CHUNK_HDR_SIZE + dlen, in[12];

				put32(r + 24, 0);
				if (have - dlen >= BK_CHUNK_CHECK_SIZE) {
					memcpy(in, r + 8, 8);
					put32(c, crc32c(0, r + BK_CHUNK_HDR_SIZE, dlen));
					memcpy(in + 8, c, 4);
					put32(c + 4, crc32c(0, in, sizeof(in)));
					off += BK_CHUNK_CHECK_SIZE;
				}
			} else {
				put32(r + 24, crc32c(0, r + BK_CHUNK_HDR_SIZE, dlen));
			}
			put32(r + 28, crc32c(0, r, 28));
			off += BK_CHUNK_HDR_SIZE + dlen;
		} else if (!memcmp(r, "VDIT", 4) && len - off >= BK_TRAILER_SIZE) {
			if (!keep_stream_crc)
				put32(r + 40, crc32c(0, s, off));
			put32(r + 60, crc32c(0, r, 60));
			return;
		} else {
			return;
		}
	}
}

static void check_header(const struct bk_header *h)
{
	if (h->version < 1 || h->version > BK_VERSION)
		FAIL("header version %u accepted", h->version);
	if (h->kind > BK_SNAPSHOT || (h->flags & ~BK_F_COPY_ONLY) ||
	    (h->version == 1 && (h->kind || h->flags || h->lsn || h->first_lsn)))
		FAIL("kind %u flags %#x lsn %llu accepted (version %u)", h->kind, h->flags,
		     (unsigned long long)h->lsn, h->version);
	if (h->stripes < 1 || h->stripes > BK_MAX_STRIPES || h->stripe >= h->stripes)
		FAIL("stripe %u of %u accepted", h->stripe, h->stripes);
	if (h->block_size < 512 || h->block_size > 65536 || (h->block_size & (h->block_size - 1)))
		FAIL("block size %u accepted", h->block_size);
	if (h->chunk_size < BK_MIN_CHUNK || h->chunk_size > BK_MAX_CHUNK ||
	    (h->chunk_size & (h->chunk_size - 1)))
		FAIL("chunk size %u accepted", h->chunk_size);
	if (bk_is_partial(h)         ? h->chunk_count > bk_db_chunks(h)
	    : h->kind == BK_SNAPSHOT ? h->chunk_count != 0
	                             : h->chunk_count != bk_db_chunks(h))
		FAIL("%llu chunks for %llu bytes accepted", (unsigned long long)h->chunk_count,
		     (unsigned long long)h->total_size);
	if (strnlen(h->db, BK_DB_LEN) == BK_DB_LEN ||
	    strnlen(h->description, BK_DESC_LEN) == BK_DESC_LEN)
		FAIL("header strings not NUL-terminated");
}

static void check_failed(const struct bk_reader *r, const char *call)
{
	size_t n = strnlen(r->err, sizeof(r->err));

	if (n == sizeof(r->err))
		FAIL("%s: message not NUL-terminated", call);
	if (!n)
		FAIL("%s: -1 without a message", call);
	if (!strstr(r->err, DEVICE))
		FAIL("%s: message does not name the device: %s", call, r->err);
}

/* The decoded header through the stripe-set checks, as RESTORE does
 * with one header per device. */
static void check_set(const struct bk_header *h, unsigned ndev)
{
	struct bk_set set;
	char err[BK_ERR_LEN];
	struct bk_header other = *h;
	int rc;

	bk_set_init(&set, ndev, ndev == 0);
	rc = bk_set_add(&set, h, "a", err, sizeof(err));
	if (rc == 0 && (ndev && h->stripes != ndev))
		FAIL("stripe set of %u devices took a header of %u stripes", ndev, h->stripes);
	/* A stripe of another backup must be refused, and so must the
	 * same stripe again. */
	other.id[0] ^= 1;
	other.stripe = (h->stripe + 1) % h->stripes;
	if (rc == 0 && bk_set_add(&set, &other, "b", err, sizeof(err)) == 0)
		FAIL("stripe of another backup accepted");
	if (rc == 0 && bk_set_add(&set, h, "c", err, sizeof(err)) == 0)
		FAIL("stripe %u accepted twice", h->stripe);
	rc = bk_set_complete(&set, err, sizeof(err));
	if (rc == 0 && ndev > 1)
		FAIL("set of %u devices complete after one stripe was added", ndev);
	bk_set_release(&set);
}

/* Every chunk of a stripe read as complete is in the restored file at
 * its offset. */
static void check_restored(int fd, const uint8_t *s, size_t len)
{
	static uint8_t back[BK_MAX_CHUNK];
	size_t off = BK_HEADER_SIZE;

	while (len - off >= BK_CHUNK_HDR_SIZE && !memcmp(s + off, "VDIC", 4)) {
		uint32_t n = get32(s + off + 4);
		uint64_t at = get64(s + off + 16);

		if (pread(fd, back, n, (off_t)at) != (ssize_t)n ||
		    memcmp(back, s + off + BK_CHUNK_HDR_SIZE, n))
			FAIL("chunk at stream offset %zu not restored at %llu", off,
			     (unsigned long long)at);
		off += BK_CHUNK_HDR_SIZE + n;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static const size_t steps[] = { 1, 7, 64, 511, 4096, 32, 100000, 3 };
	struct bk_reader r;
	struct src src;
	uint8_t *stream, *buf;
	uint8_t flags;
	uint64_t done = 0;
	int rc;

	if (size < 1)
		return 0;
	flags = data[0];
	/* An exact-size heap copy: ASan sees any read past the stream. */
	stream = malloc(size - 1 ? size - 1 : 1);
	if (!stream)
		abort();
	memcpy(stream, data + 1, size - 1);
	if (flags & 1)
		fix_checksums(stream, size - 1, flags & 0x80);
	src = (struct src){ .p = stream,
		            .len = size - 1,
		            .step = steps[(flags >> 1) & 7],
		            .fail_at_end = (flags >> 4) & 1 };

	bk_reader_init(&r, src_read, &src, DEVICE);
	rc = bk_read_header(&r);
	if (rc != 0 && rc != -1)
		FAIL("bk_read_header returned %d", rc);
	if (rc < 0) {
		check_failed(&r, "bk_read_header");
		goto out;
	}
	check_header(&r.h);
	if (r.offset != BK_HEADER_SIZE)
		FAIL("offset %llu after the header", (unsigned long long)r.offset);
	check_set(&r.h, (flags >> 5) & 3);

	/* Exactly chunk_size bytes, as the caller promises: ASan catches a
	 * chunk written past it. */
	buf = malloc(r.h.chunk_size);
	if (!buf)
		abort();
	if (fd < 0)
		fd = memfd_create("fuzz_bkfmt", 0);
	if (fd < 0 || ftruncate(fd, 0) != 0)
		abort();
	rc = bk_read_body(&r, fd, buf, &done);
	free(buf);
	if (rc != 0 && rc != -1)
		FAIL("bk_read_body returned %d", rc);
	if (rc < 0) {
		check_failed(&r, "bk_read_body");
		goto out;
	}
	if (src.failed)
		FAIL("stripe read as complete although its source failed");
	if (r.chunks != bk_stripe_chunks(&r.h, r.h.stripe))
		FAIL("stripe complete with %llu of %llu chunks", (unsigned long long)r.chunks,
		     (unsigned long long)bk_stripe_chunks(&r.h, r.h.stripe));
	if (r.data_bytes != done || r.t.data_bytes != done || r.t.chunks != r.chunks)
		FAIL("byte counts disagree: reader %llu, progress %llu, trailer %llu",
		     (unsigned long long)r.data_bytes, (unsigned long long)done,
		     (unsigned long long)r.t.data_bytes);
	if (r.offset != src.off || src.off != src.len)
		FAIL("stripe complete at offset %llu with %zu of %zu bytes consumed",
		     (unsigned long long)r.offset, src.off, src.len);
	if (r.t.stripe != r.h.stripe || memcmp(r.t.id, r.h.id, 16))
		FAIL("trailer of another stripe accepted");
	check_restored(fd, stream, size - 1);
out:
	/* VDI_FUZZ_VERBOSE=1: one line per input, to see what seeds reach. */
	if (getenv("VDI_FUZZ_VERBOSE"))
		fprintf(stderr, "fuzz_bkfmt: flags 0x%02x, %zu bytes: %s\n", flags, size - 1,
		        rc == 0 ? "complete stripe" : r.err);
	free(stream);
	return 0;
}
