/* SPDX-License-Identifier: MIT */
/*
 * crc32c.c - CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of the backup format (bkfmt.h).
 *
 * Two implementations with identical results: the SSE4.2 crc32
 * instruction when the CPU has it, and a portable slicing-by-8 table
 * otherwise.  The tables are built once under pthread_once.
 *
 * Speed.  One crc32 instruction has a latency of three cycles, so a
 * single chain runs at a third of what the unit can do.  Large buffers
 * are cut in three lanes computed in the same loop and joined with
 * crc32c_combine(), which also lets the backup format derive its
 * whole-stream CRC from the chunk CRCs instead of a second pass.
 *
 * crc32c_combine(a, b, n): the CRC of A followed by B from a = crc(A),
 * b = crc(B), n = length of B.  The pre- and post-inversion of the CRC
 * cancel out between the two halves, so crc(AB) = a * x^(8n) mod P xor b,
 * computed with carry-less multiplication modulo P in the reflected bit
 * order (bit 31 is x^0) and a table of x^(2^k) mod P.
 */
#include "bkfmt.h"

#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static uint32_t x2n[64]; /* x^(2^k) mod P */
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

/* a * b mod P, reflected.  a must not be 0 (callers pass powers of x). */
static uint32_t multmodp(uint32_t a, uint32_t b)
{
	uint32_t m = 1u << 31, p = 0;

	for (;;) {
		if (a & m) {
			p ^= b;
			if ((a & (m - 1)) == 0)
				break;
		}
		m >>= 1;
		b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
	}
	return p;
}

static void powers_build(void)
{
	x2n[0] = 1u << 30; /* x^1 */
	for (int k = 1; k < 64; k++)
		x2n[k] = multmodp(x2n[k - 1], x2n[k - 1]);
}

static void table_build(void)
{
	powers_build();
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (POLY & (0u - (c & 1)));
		table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
	pthread_once(&table_once, table_build);
	while (len >= 8) {
		uint32_t lo, hi;

		memcpy(&lo, p, 4);
		memcpy(&hi, p + 4, 4);
		lo ^= crc; /* little-endian host assumed (x86-64, aarch64) */
		crc = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^
		      table[5][(lo >> 16) & 0xff] ^ table[4][lo >> 24] ^ table[3][hi & 0xff] ^
		      table[2][(hi >> 8) & 0xff] ^ table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
	return crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = crc;

	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	crc = (uint32_t)c;
	while (len--)
		crc = __builtin_ia32_crc32qi(crc, *p++);
	return crc;
}

static int have_hw(void)
{
	static int cached = -1;
	int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);

	/* Every thread computes the same value: relaxed is enough. */
	if (v < 0) {
		__builtin_cpu_init();
		v = __builtin_cpu_supports("sse4.2") ? 1 : 0;
		__atomic_store_n(&cached, v, __ATOMIC_RELAXED);
	}
	return v;
}
#endif

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
	uint32_t p = 1u << 31; /* x^0 */
	unsigned k = 3;        /* len_b bytes = len_b * 2^3 bits */

	pthread_once(&table_once, table_build);
	for (; len_b; len_b >>= 1, k++)
		if (len_b & 1)
			p = multmodp(x2n[k & 63], p);
	return multmodp(p, crc_a) ^ crc_b;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define LANES_MIN 12288 /* below this, one chain is as fast */

/* Three independent chains over three thirds of the buffer. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw3(uint32_t crc, const uint8_t *p,
                                                          size_t len)
{
	size_t third = (len / 3) & ~(size_t)7, i;
	uint64_t c0 = ~crc, c1 = 0xFFFFFFFFu, c2 = 0xFFFFFFFFu;
	uint32_t r;

	for (i = 0; i < third; i += 8) {
		uint64_t v0, v1, v2;

		memcpy(&v0, p + i, 8);
		memcpy(&v1, p + third + i, 8);
		memcpy(&v2, p + 2 * third + i, 8);
		c0 = __builtin_ia32_crc32di(c0, v0);
		c1 = __builtin_ia32_crc32di(c1, v1);
		c2 = __builtin_ia32_crc32di(c2, v2);
	}
	r = crc32c_combine(~(uint32_t)c0, ~(uint32_t)c1, third);
	r = crc32c_combine(r, ~(uint32_t)c2, third);
	return ~crc_hw(~r, p + 3 * third, len - 3 * third);
}
#endif

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (have_hw())
		return len >= LANES_MIN ? crc_hw3(crc, buf, len) : ~crc_hw(~crc, buf, len);
#endif
	return ~crc_sw(~crc, buf, len);
}

uint32_t crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
	return ~crc_sw(~crc, buf, len);
}
