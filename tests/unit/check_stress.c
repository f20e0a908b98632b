/* SPDX-License-Identifier: MIT */
/*
 * check_stress.c - at least 1 GiB through the engine across processes in
 * random shapes, every byte verified (issue 2, "How it is proven").
 *
 * Rounds follow one another until 1 GiB has moved.  Each round draws,
 * from one seed: the direction (backup or restore), 1..4 devices,
 * BLOCKSIZE (512..65536), MAXTRANSFERSIZE (64 KiB..4 MiB), the server's
 * commands in flight per device (1..8), the client's fetch depth (1..4),
 * command sizes (random BLOCKSIZE multiples up to MAXTRANSFERSIZE), the
 * bytes per device, and whether a secondary client process drives half of
 * the devices.  The server is a forked child; the client is this process
 * (and the secondary another child).  Both data ends verify every byte
 * against the pattern of flow.h.
 *
 * The seed is printed; VDI_STRESS_SEED=<n> replays a run, and
 * VDI_STRESS_MIB=<n> changes the volume (default 1024).
 */
#include <check.h>

#include "flow.h"

#define KID_MS 60000

static uint64_t stress_seed(void)
{
	const char *e = getenv("VDI_STRESS_SEED");

	if (e && *e)
		return strtoull(e, NULL, 0);
	return (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
}

static uint64_t stress_bytes(void)
{
	const char *e = getenv("VDI_STRESS_MIB");
	uint64_t mib = e && *e ? strtoull(e, NULL, 0) : 1024;

	return (mib ? mib : 1) << 20;
}

/* Draws one round's shape. */
static void round_shape(struct flow *f, uint64_t *rng, uint64_t left, int *secondary)
{
	uint32_t blocks;
	uint64_t per;

	flow_defaults(f);
	f->seed = rnd_next(rng);
	f->direction = rnd_next(rng) & 1 ? VDF_ReadMedia : VDF_WriteMedia;
	f->ndev = 1 + (uint32_t)(rnd_next(rng) % 4);
	f->block_size = 512u << (rnd_next(rng) % 8);
	f->max_transfer = 65536u * (uint32_t)(1 + rnd_next(rng) % 64);
	f->depth = 1 + (uint32_t)(rnd_next(rng) % 8);
	/* Keep the buffer pool under 64 MiB. */
	while (f->depth > 1 && (uint64_t)f->ndev * f->depth * f->max_transfer > (64u << 20))
		f->depth--;
	f->cdepth = 1 + (uint32_t)(rnd_next(rng) % 4);
	f->random_sizes = 1;
	f->flush = (int)(rnd_next(rng) & 1);
	f->timeout_ms = 20000;
	/* 32..256 MiB per round, split over the devices, in whole blocks. */
	per = ((32u << 20) + rnd_next(rng) % (224u << 20)) / f->ndev;
	if (per * f->ndev > left)
		per = left / f->ndev + f->block_size;
	blocks = f->block_size;
	f->bytes = per / blocks * blocks;
	if (f->bytes == 0)
		f->bytes = blocks;
	*secondary = f->ndev >= 2 && (rnd_next(rng) & 1);
}

static void secondary_kid(void *arg)
{
	const struct flow *f = arg;
	uint8_t drive[VDI_MAX_DEVICES];
	char err[FLOW_ERR];

	/* The secondary drives the odd devices. */
	for (uint32_t i = 0; i < VDI_MAX_DEVICES; i++)
		drive[i] = i & 1;
	if (flow_client_run(f, 1, drive, err, sizeof(err)) != 0)
		kid_fail("secondary: %s", err);
}

/* One round; returns the bytes it moved. */
static uint64_t run_round(const struct flow *f, int secondary)
{
	uint8_t drive[VDI_MAX_DEVICES];
	struct flow_client *fc = malloc(sizeof(*fc));
	struct kid srv, sec;
	int src, sc = 0, rc;

	ck_assert_ptr_nonnull(fc);
	for (uint32_t i = 0; i < VDI_MAX_DEVICES; i++)
		drive[i] = secondary ? !(i & 1) : 1;
	ck_assert_int_eq(kid_start(&srv, flow_server_kid, (void *)f), 0);
	if (secondary)
		ck_assert_int_eq(kid_start(&sec, secondary_kid, (void *)f), 0);
	flow_client_init(fc, f, 0, drive);
	flow_client_start(fc);
	flow_client_join(fc);
	if (secondary)
		sc = kid_wait(&sec, KID_MS);
	rc = flow_client_close(fc);
	src = kid_wait(&srv, KID_MS);
	ck_assert_msg(src == 0, "server process %s", srv.msg);
	ck_assert_msg(sc == 0, "secondary process %s", secondary ? sec.msg : "");
	ck_assert_msg(rc == 0, "%s", fc->err);
	free(fc);
	ck_assert_int_eq(shm_of_set(f->name, 0), 0);
	return f->bytes * f->ndev;
}

START_TEST(test_stress)
{
	uint64_t seed = stress_seed(), rng, want = stress_bytes(), moved = 0, t0 = now_us();
	double s;
	int rounds = 0;

	printf("stress: seed %llu (VDI_STRESS_SEED=%llu replays it)\n", (unsigned long long)seed,
	       (unsigned long long)seed);
	fflush(stdout);
	rng = pat_mix(seed);
	while (moved < want) {
		struct flow f;
		int secondary;

		round_shape(&f, &rng, want - moved, &secondary);
		printf("stress: round %d: %s, %u device(s)%s, block %u, max transfer %u, "
		       "depth %u/%u, %llu bytes each\n",
		       rounds, f.direction == VDF_WriteMedia ? "backup" : "restore", f.ndev,
		       secondary ? " (odd ones by a secondary)" : "", f.block_size, f.max_transfer,
		       f.depth, f.cdepth, (unsigned long long)f.bytes);
		fflush(stdout);
		moved += run_round(&f, secondary);
		rounds++;
	}
	s = (double)(now_us() - t0) / 1e6;
	printf("stress: %llu MiB verified in %d rounds, %.1f s (%.0f MiB/s)\n",
	       (unsigned long long)(moved >> 20), rounds, s, (double)(moved >> 20) / s);
	ck_assert_uint_ge(moved, want);
}
END_TEST

/* Small commands (512-byte blocks, at most 64 KiB each), 32 in flight
 * per device, four devices. */
START_TEST(test_small_commands)
{
	struct flow f;
	struct kid srv;
	char err[FLOW_ERR];
	uint64_t t0 = now_us();
	int rc;

	flow_defaults(&f);
	f.ndev = 4;
	f.direction = _i ? VDF_ReadMedia : VDF_WriteMedia;
	f.block_size = 512;
	f.max_transfer = 65536;
	f.depth = 32;
	f.cdepth = 8;
	f.random_sizes = 1;
	f.bytes = 8u << 20;
	f.seed = stress_seed();
	ck_assert_int_eq(kid_start(&srv, flow_server_kid, &f), 0);
	rc = flow_client_run(&f, 0, NULL, err, sizeof(err));
	ck_assert_msg(kid_wait(&srv, KID_MS) == 0, "server process %s", srv.msg);
	ck_assert_msg(rc == 0, "%s (seed %llu)", err, (unsigned long long)f.seed);
	ck_assert_int_eq(shm_of_set(f.name, 0), 0);
	printf("stress: small commands (%s): 32 MiB in %.2f s\n", _i ? "restore" : "backup",
	       (double)(now_us() - t0) / 1e6);
}
END_TEST

static Suite *stress_suite(void)
{
	Suite *s = suite_create("stress");
	TCase *tc = tcase_create("stress");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_stress);
	tcase_add_loop_test(tc, test_small_commands, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tl_run_suite(stress_suite());
}
