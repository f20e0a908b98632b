/* SPDX-License-Identifier: MIT */
/*
 * check_stream.c - the stream adapter (core/cstream.c, core/sstream.c)
 * against real client and server objects.
 *
 * Most tests run both halves in this process (server threads driving
 * vdi_sstream_*, client threads driving vdi_cstream_* or the raw client
 * API); the "fork" cases run the client in a child process over real
 * shared memory.  Every byte moved is compared with a reference buffer
 * built from a seed.  Each case has a time limit; every set is named by
 * tl_name() and removed by tl_pair_destroy() / tl_shm_cleanup_run().
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"
#include "vdi.h"

#define KIB     1024u
#define MIB     (1024u * 1024u)
#define WAIT_MS 10000u

/* ---------------------------------------------------------------------
 * Data: a reference stream made from a seed.
 */
static uint64_t rnd(uint64_t *s)
{
	uint64_t x = (*s += 0x9e3779b97f4a7c15ull);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* n pattern bytes (plus slack so padding checks can read past n). */
static uint8_t *ref_new(uint64_t seed, size_t n)
{
	size_t cap = (n + 15) & ~(size_t)7;
	uint8_t *p = malloc(cap);
	uint64_t s = seed, v;

	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i + 8 <= cap; i += 8) {
		v = rnd(&s);
		memcpy(p + i, &v, 8);
	}
	return p;
}

/* Random chunk size in 1..max, at most left. */
static size_t chunk(uint64_t *rng, size_t max, uint64_t left)
{
	size_t n = 1 + (size_t)(rnd(rng) % max);

	return n < left ? n : (size_t)left;
}

/* ---------------------------------------------------------------------
 * A client + server pair with a stream pool.
 */
struct rig {
	struct tl_pair p;
	struct vdi_sstream_pool *pool;
};

static void rig_opts(struct tl_pair_opts *o, uint32_t devices, uint32_t dir, uint32_t block,
                     uint32_t mts, uint32_t buffers)
{
	tl_pair_opts_default(o);
	o->devices = devices;
	o->server_features = dir;
	o->block_size = block;
	o->max_transfer = mts;
	o->buffer_count = buffers;
	o->timeout_ms = WAIT_MS;
}

static void rig_up(struct rig *r, const struct tl_pair_opts *o, uint32_t pool,
                   uint32_t pool_timeout)
{
	memset(r, 0, sizeof(*r));
	TL_OK(tl_pair_init(&r->p, o));
	TL_OK(tl_pair_advance(&r->p, TL_ACTIVE));
	if (pool)
		TL_OK(vdi_sstream_pool_new(r->p.s, pool, pool_timeout, &r->pool));
}

static void rig_down(struct rig *r)
{
	if (r->pool)
		vdi_sstream_pool_free(r->pool);
	r->pool = NULL;
	tl_pair_destroy(&r->p);
}

/* Normal end: the agent returned by itself, both Close calls succeed. */
static void rig_finish_ok(struct rig *r)
{
	TL_OK(tl_agent_join(&r->p.agent, WAIT_MS));
	TL_OK(r->p.agent.rc);
	vdi_sstream_pool_free(r->pool);
	r->pool = NULL;
	r->p.client_closed = 1;
	TL_OK(vdi_client_close(r->p.c));
	r->p.server_closed = 1;
	TL_OK(vdi_server_close(r->p.s));
	rig_down(r);
}

/* ---------------------------------------------------------------------
 * Jobs: one side of one device on a thread.
 */
struct job {
	struct rig *r;
	uint32_t dev;
	const uint8_t *ref; /* the stream's bytes */
	uint64_t total;     /* bytes the producer moves */
	uint64_t seed;      /* chunk sizes */
	size_t maxchunk;
	uint32_t tsize;     /* server transfer size (0 = max) */
	uint32_t timeout;   /* client stream timeout */
	uint32_t final_cmd; /* server: command after drain, 0 none */
	int close_device;   /* server: CloseDevice at the end */
	int mode;           /* client: 0 copy, 1 zero-copy, 2 mixed */
	void *ctx;          /* the case's own (snapshot cases) */
	uint32_t block;     /* client reader: padding unit */
	uint32_t delay_ms;  /* client: sleeps this long before it starts */
	/* results */
	int rc; /* first failure */
	char err[600];
	uint64_t t_fail; /* tl_now_ms() of the failure */
	uint64_t got;    /* bytes moved */
	long bad;        /* offset of the first wrong byte, -1 */
	int cmd_rc;
	int cmd_done; /* atomic: final command returned */
	int close_rc;
	int codes[8]; /* server: answers to control commands */
	uint32_t ecode;
	uint64_t eoff;
	pthread_t th;
};

static void job_init(struct job *j, struct rig *r, uint32_t dev, const uint8_t *ref, uint64_t total,
                     uint64_t seed)
{
	memset(j, 0, sizeof(*j));
	j->r = r;
	j->dev = dev;
	j->ref = ref;
	j->total = total;
	j->seed = seed;
	j->maxchunk = 200000;
	j->timeout = WAIT_MS;
	j->close_device = 1;
	j->block = 512;
	j->bad = -1;
}

static void job_fail(struct job *j, int rc)
{
	if (j->rc)
		return;
	j->rc = rc;
	j->t_fail = tl_now_ms();
	snprintf(j->err, sizeof(j->err), "%s", vdi_last_error());
}

static void job_start(struct job *j, void *(*fn)(void *))
{
	ck_assert_int_eq(pthread_create(&j->th, NULL, fn, j), 0);
}

static void job_join(struct job *j)
{
	ck_assert_int_eq(pthread_join(j->th, NULL), 0);
}

/* Compares n bytes at stream offset off: data below total, zeros above. */
static void job_check(struct job *j, uint64_t off, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n && j->bad < 0; i++) {
		uint8_t want = off + i < j->total ? j->ref[off + i] : 0;

		if (p[i] != want)
			j->bad = (long)(off + i);
	}
}

/* Fast path of job_check: whole range below total. */
static void job_cmp(struct job *j, uint64_t off, const uint8_t *p, size_t n)
{
	if (j->bad >= 0)
		return;
	if (off + n <= j->total && !memcmp(p, j->ref + off, n))
		return;
	job_check(j, off, p, n);
}

static void *srv_writer(void *a)
{
	struct job *j = a;
	struct vdi_sstream *w;
	uint64_t off = 0, rng = j->seed;
	ssize_t k;
	int rc;

	rc = vdi_sstream_open(j->r->pool, j->r->p.sd[j->dev], j->tsize, &w);
	if (rc) {
		job_fail(j, rc);
		return NULL;
	}
	for (unsigned turn = 0; off < j->total; turn++) {
		size_t want = chunk(&rng, j->maxchunk, j->total - off);
		void *room;

		/* mode 1: in place through reserve/commit; mode 2: turn about */
		if (j->mode == 1 || (j->mode == 2 && turn % 2)) {
			k = vdi_sstream_reserve(w, &room);
			if (k > 0) {
				k = (ssize_t)want < k ? (ssize_t)want : k;
				memcpy(room, j->ref + off, (size_t)k);
				if ((rc = vdi_sstream_commit(w, (size_t)k)) != 0)
					k = rc;
			}
		} else {
			k = vdi_sstream_write(w, j->ref + off, want);
		}
		if (k <= 0) {
			job_fail(j, k ? (int)k : VD_E_UNEXPECTED);
			break;
		}
		off += (uint64_t)k;
	}
	j->got = off;
	if (!j->rc && (rc = vdi_sstream_drain(w)) != 0)
		job_fail(j, rc);
	if (!j->rc && j->final_cmd) {
		j->cmd_rc = vdi_sstream_command(w, j->final_cmd);
		__atomic_store_n(&j->cmd_done, 1, __ATOMIC_SEQ_CST);
		if (j->cmd_rc < 0)
			job_fail(j, j->cmd_rc);
	}
	j->ecode = vdi_sstream_error(w, &j->eoff);
	j->close_rc = vdi_sstream_close(w);
	if (j->close_device && (rc = vdi_server_close_device(j->r->p.sd[j->dev])) != 0)
		job_fail(j, rc);
	return NULL;
}

static void *srv_reader(void *a)
{
	struct job *j = a;
	struct vdi_sstream *r;
	uint64_t rng = j->seed;
	uint8_t *buf = malloc(j->maxchunk);
	ssize_t k;
	int rc;

	rc = vdi_sstream_open(j->r->pool, j->r->p.sd[j->dev], j->tsize, &r);
	if (rc || !buf) {
		job_fail(j, rc ? rc : VD_E_MEMORY);
		free(buf);
		return NULL;
	}
	for (uint64_t step = 0;; step++) {
		size_t want = chunk(&rng, j->maxchunk, j->maxchunk);
		const void *p = NULL;

		/* mode 1: zero-copy peek/advance; 2: alternate with read. */
		if (j->mode == 1 || (j->mode == 2 && step % 2)) {
			k = vdi_sstream_peek(r, &p, want);
			if (k > 0) {
				job_cmp(j, j->got, p, (size_t)k);
				rc = vdi_sstream_advance(r, (size_t)k);
				if (rc) {
					job_fail(j, rc);
					break;
				}
			}
		} else {
			k = vdi_sstream_read(r, buf, want);
			if (k > 0)
				job_cmp(j, j->got, buf, (size_t)k);
		}
		if (k <= 0) {
			if (k < 0)
				job_fail(j, (int)k);
			break;
		}
		j->got += (uint64_t)k;
	}
	if (!j->rc && j->final_cmd) {
		j->cmd_rc = vdi_sstream_command(r, j->final_cmd);
		if (j->cmd_rc < 0)
			job_fail(j, j->cmd_rc);
	}
	j->ecode = vdi_sstream_error(r, &j->eoff);
	j->close_rc = vdi_sstream_close(r);
	if (j->close_device && (rc = vdi_server_close_device(j->r->p.sd[j->dev])) != 0)
		job_fail(j, rc);
	free(buf);
	return NULL;
}

/* One step of a client reader: 1 more, 0 end, < 0 failure. */
static int cli_read_step(struct job *j, struct vdi_cstream *cs, uint8_t *buf, uint64_t *rng,
                         int zero)
{
	const void *p;
	size_t want = chunk(rng, j->maxchunk, j->maxchunk);
	ssize_t k;
	int rc;

	if (!zero) {
		k = vdi_cstream_read(cs, buf, want);
		if (k > 0)
			job_cmp(j, j->got, buf, (size_t)k);
	} else {
		k = vdi_cstream_peek(cs, &p, want);
		if (k > 0) {
			job_cmp(j, j->got, p, (size_t)k);
			rc = vdi_cstream_advance(cs, (size_t)k);
			if (rc)
				return rc;
		}
	}
	if (k > 0)
		j->got += (uint64_t)k;
	return k > 0 ? 1 : (int)k;
}

static void *cli_reader(void *a)
{
	struct job *j = a;
	struct vdi_cstream *cs;
	uint64_t rng = j->seed ^ 0x5555;
	uint8_t *buf = malloc(j->maxchunk);
	int rc, n = 0;

	tl_sleep_ms(j->delay_ms);
	rc = vdi_cstream_new(j->r->p.cd[j->dev], j->timeout, &cs);
	if (rc || !buf) {
		job_fail(j, rc ? rc : VD_E_MEMORY);
		free(buf);
		return NULL;
	}
	do
		rc = cli_read_step(j, cs, buf, &rng, j->mode == 1 || (j->mode == 2 && (n++ & 1)));
	while (rc > 0);
	if (rc < 0)
		job_fail(j, rc);
	j->close_rc = vdi_cstream_close(cs, 1);
	free(buf);
	return NULL;
}

/* Writes n bytes of ref at j->got through reserve/commit. */
static int cli_write_zero(struct vdi_cstream *cs, struct job *j, size_t n)
{
	void *p;
	ssize_t k;
	int rc;

	while (n) {
		k = vdi_cstream_reserve(cs, &p, n);
		if (k <= 0)
			return k ? (int)k : VD_E_UNEXPECTED;
		memcpy(p, j->ref + j->got, (size_t)k);
		rc = vdi_cstream_commit(cs, (size_t)k);
		if (rc)
			return rc;
		j->got += (uint64_t)k;
		n -= (size_t)k;
	}
	return 0;
}

static int cli_write_copy(struct vdi_cstream *cs, struct job *j, size_t n)
{
	ssize_t k = vdi_cstream_write(cs, j->ref + j->got, n);

	if (k > 0)
		j->got += (uint64_t)k;
	if (k < 0)
		return (int)k;
	return (size_t)k == n ? 0 : VD_E_UNEXPECTED;
}

static void *cli_writer(void *a)
{
	struct job *j = a;
	struct vdi_cstream *cs;
	uint64_t rng = j->seed ^ 0x7777;
	size_t n;
	int rc, i = 0;

	tl_sleep_ms(j->delay_ms);
	rc = vdi_cstream_new(j->r->p.cd[j->dev], j->timeout, &cs);
	if (rc) {
		job_fail(j, rc);
		return NULL;
	}
	while (!rc && j->got < j->total) {
		n = chunk(&rng, j->maxchunk, j->total - j->got);
		if (j->mode == 1 || (j->mode == 2 && (i++ & 1)))
			rc = cli_write_zero(cs, j, n);
		else
			rc = cli_write_copy(cs, j, n);
	}
	if (rc)
		job_fail(j, rc);
	j->close_rc = vdi_cstream_close(cs, 1);
	return NULL;
}

#define JOB_OK(j) ck_assert_msg((j)->rc == 0, "job: %s: %s", vdi_strerror((j)->rc), (j)->err)

static uint64_t round_up(uint64_t n, uint32_t m)
{
	return (n + m - 1) / m * m;
}

/* ---------------------------------------------------------------------
 * Backup and restore flows, in-process.
 */
struct flow_case {
	uint32_t devices, block, mts, buffers, pool, tsize;
	uint64_t total;
	int mode;
	uint32_t client_features;
	uint32_t client_delay_ms;
};

static const struct flow_case flow_cases[] = {
	{ 1, 512, 64 * KIB, 4, 4, 0, MIB + 1000, 0, 0, 0 },
	{ 1, 4096, 256 * KIB, 4, 4, 128 * KIB, 3 * MIB + 5, 1, 0, 0 },
	{ 1, 65536, MIB, 3, 3, 0, 5 * MIB + 12345, 2, 0, 0 },
	{ 4, 4096, 256 * KIB, 8, 8, 0, 2 * MIB + 777, 2, 0, 0 },
	{ 4, 512, 64 * KIB, 4, 4, 0, MIB + 3, 0, 0, 0 },      /* one buffer each */
	{ 1, 512, 64 * KIB, 4, 4, 0, 4 * 64 * KIB, 0, 0, 0 }, /* exact multiple */
	{ 1, 512, 64 * KIB, 4, 4, 0, 0, 0, 0, 0 },            /* empty stream */
	/* disk-like: every data command carries its byte position */
	{ 1, 4096, 64 * KIB, 4, 4, 32 * KIB, MIB + 99, 2, VDF_RandomAccess, 0 },
	/* a pool deeper than the device queue (BUFFERCOUNT up to 1024, F2),
     * the client late: at most VDI_QUEUE_DEPTH commands go out (D7) */
	{ 1, 512, 64 * KIB, 300, 300, 0, 400 * 64 * KIB + 7, 0, 0, 300 },
};

static void run_flow(const struct flow_case *fc, uint32_t dir)
{
	struct tl_pair_opts o;
	struct job s[4], c[4];
	uint8_t *ref[4];
	struct rig r;
	uint32_t d;

	rig_opts(&o, fc->devices, dir, fc->block, fc->mts, fc->buffers);
	o.client_features = fc->client_features;
	rig_up(&r, &o, fc->pool, WAIT_MS);
	for (d = 0; d < fc->devices; d++) {
		uint64_t total = fc->total + d * 1000;

		ref[d] = ref_new(100 + d, (size_t)total);
		job_init(&s[d], &r, d, ref[d], total, 1 + d);
		job_init(&c[d], &r, d, ref[d], total, 2 + d);
		s[d].tsize = fc->tsize;
		s[d].final_cmd = dir == VDF_WriteMedia ? VDC_Flush : VDC_ClearError;
		c[d].mode = fc->mode;
		s[d].mode = fc->mode; /* the server reader uses peek/advance too */
		c[d].block = fc->block;
		c[d].delay_ms = fc->client_delay_ms;
		job_start(&s[d], dir == VDF_WriteMedia ? srv_writer : srv_reader);
		job_start(&c[d], dir == VDF_WriteMedia ? cli_reader : cli_writer);
	}
	for (d = 0; d < fc->devices; d++) {
		job_join(&s[d]);
		job_join(&c[d]);
		JOB_OK(&s[d]);
		JOB_OK(&c[d]);
		ck_assert_int_eq(s[d].close_rc, 0);
		ck_assert_int_eq(c[d].close_rc, 0);
		ck_assert_int_eq(s[d].ecode, 0);
		ck_assert_int_eq(s[d].cmd_rc, 0); /* Flush / ClearError after the end */
		if (dir == VDF_WriteMedia) {
			ck_assert_uint_eq(s[d].got, s[d].total);
			ck_assert_uint_eq(c[d].got, round_up(c[d].total, fc->block));
			ck_assert_int_eq(c[d].bad, -1);
		} else {
			ck_assert_uint_eq(c[d].got, c[d].total);
			ck_assert_uint_eq(s[d].got, s[d].total);
			ck_assert_int_eq(s[d].bad, -1);
		}
		free(ref[d]);
	}
	rig_finish_ok(&r);
}

START_TEST(test_backup_flow)
{
	run_flow(&flow_cases[_i], VDF_WriteMedia);
}
END_TEST

START_TEST(test_restore_flow)
{
	run_flow(&flow_cases[_i], VDF_ReadMedia);
}
END_TEST

/* ---------------------------------------------------------------------
 * Zero copy: peek and reserve point into the shared buffers.
 */
struct rc_reader {
	struct vdi_cstream *cs;
	uint8_t got[96 * 1024];
	size_t have;
};

static void *rc_read(void *a)
{
	struct rc_reader *x = a;
	ssize_t k;

	while ((k = vdi_cstream_read(x->cs, x->got + x->have, sizeof(x->got) - x->have)) > 0)
		x->have += (size_t)k;
	return NULL;
}

/* reserve points into the buffer being filled; commit takes no more than
 * it gave, and the bytes committed reach the client as written. */
START_TEST(test_reserve_commit)
{
	struct tl_pair_opts o;
	struct vdi_sstream *w;
	struct rc_reader *x = calloc(1, sizeof(*x));
	struct rig r;
	pthread_t t;
	void *room, *again;
	ssize_t n;

	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, WAIT_MS);
	TL_OK(vdi_sstream_open(r.pool, r.p.sd[0], 0, &w));
	TL_OK(vdi_cstream_new(r.p.cd[0], WAIT_MS, &x->cs));
	ck_assert_int_eq(pthread_create(&t, NULL, rc_read, x), 0);
	n = vdi_sstream_reserve(w, &room);
	ck_assert_int_eq(n, 64 * KIB);
	ck_assert_int_eq(vdi_sstream_commit(w, 64 * KIB + 1), VD_E_INVALID);
	ck_assert_ptr_nonnull(strstr(vdi_last_error(),
	                             "': commit of 65537 bytes, 65536 reserved (VD_E_INVALID)"));
	memset(room, 'a', 1000);
	TL_OK(vdi_sstream_commit(w, 1000));
	ck_assert_int_eq(vdi_sstream_reserve(w, &again), 64 * KIB - 1000);
	ck_assert_ptr_eq(again, (uint8_t *)room + 1000); /* the same buffer, further on */
	memset(again, 'b', 64 * KIB - 1000);
	TL_OK(vdi_sstream_commit(w, 64 * KIB - 1000)); /* full: sent */
	ck_assert_int_eq(vdi_sstream_write(w, "tail", 4), 4);
	TL_OK(vdi_sstream_drain(w));
	TL_OK(vdi_sstream_close(w));
	TL_OK(vdi_server_close_device(r.p.sd[0]));
	pthread_join(t, NULL);
	ck_assert_uint_eq(x->have, 64 * KIB + 512);
	ck_assert_int_eq(x->got[999], 'a');
	ck_assert_int_eq(x->got[1000], 'b');
	ck_assert_int_eq(memcmp(x->got + 64 * KIB, "tail", 4), 0);
	TL_OK(vdi_cstream_close(x->cs, 1));
	free(x);
	rig_finish_ok(&r);
}
END_TEST

START_TEST(test_peek_points_into_buffers)
{
	struct tl_pair_opts o;
	struct vdi_cstream *cs;
	const void *p, *q;
	uint8_t *ref = ref_new(7, 3 * 64 * KIB);
	struct job s;
	struct rig r;
	uint32_t h;

	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, WAIT_MS);
	job_init(&s, &r, 0, ref, 3 * 64 * KIB, 3);
	s.maxchunk = 64 * KIB; /* whatever the chunks, commands are 64 KiB */
	job_start(&s, srv_writer);
	TL_OK(vdi_cstream_new(r.p.cd[0], WAIT_MS, &cs));
	ck_assert_uint_eq(vdi_cstream_direction(cs), VDF_WriteMedia);
	ck_assert_int_eq(vdi_cstream_peek(cs, &p, MIB), 64 * KIB);
	TL_OK(vdi_client_get_buffer_handle(r.p.c, p, &h)); /* data start */
	ck_assert_int_eq(memcmp(p, ref, 64 * KIB), 0);
	ck_assert_int_eq(vdi_cstream_peek(cs, &q, 10), 10);
	ck_assert_ptr_eq(p, q); /* no advance: same */
	TL_OK(vdi_cstream_advance(cs, 100));
	ck_assert_int_eq(vdi_cstream_peek(cs, &q, MIB), 64 * KIB - 100);
	ck_assert_ptr_eq(q, (const uint8_t *)p + 100);
	TL_RC(vdi_cstream_advance(cs, 64 * KIB), VD_E_INVALID); /* too many */
	TL_OK(vdi_cstream_advance(cs, 64 * KIB - 100));
	ck_assert_int_eq(vdi_cstream_peek(cs, &q, MIB), 64 * KIB);
	TL_OK(vdi_client_get_buffer_handle(r.p.c, q, &h));
	ck_assert_int_eq(memcmp(q, ref + 64 * KIB, 64 * KIB), 0);
	TL_OK(vdi_cstream_advance(cs, 64 * KIB));
	ck_assert_uint_eq(vdi_cstream_bytes(cs), 128 * KIB);
	ck_assert_int_eq(vdi_cstream_peek(cs, &q, MIB), 64 * KIB);
	TL_OK(vdi_cstream_advance(cs, 64 * KIB));
	ck_assert_int_eq(vdi_cstream_peek(cs, &q, MIB), 0); /* VD_E_CLOSE */
	ck_assert_int_eq(vdi_cstream_read(cs, (void *)ref, 10), 0);
	TL_OK(vdi_cstream_close(cs, 1));
	job_join(&s);
	JOB_OK(&s);
	free(ref);
	rig_finish_ok(&r);
}
END_TEST

/* reserve_nowait: VD_E_TIMEOUT while no VDC_Read is pending, harmlessly;
 * the pending buffer's room at once when there is one (pump.c). */
START_TEST(test_reserve_nowait)
{
	struct tl_pair_opts o;
	struct vdi_cstream *cs;
	uint8_t *ref = ref_new(10, 64 * KIB + 300);
	static char mark;
	void *p = &mark, *q;
	struct job s;
	struct rig r;

	rig_opts(&o, 1, VDF_ReadMedia, 512, 64 * KIB, 2);
	rig_up(&r, &o, 2, WAIT_MS);
	job_init(&s, &r, 0, ref, 64 * KIB + 300, 3);
	TL_OK(vdi_cstream_new(r.p.cd[0], WAIT_MS, &cs));
	TL_RC((int)vdi_cstream_reserve_nowait(cs, &p, MIB), VD_E_TIMEOUT); /* no reader yet */
	ck_assert_ptr_null(p);
	job_start(&s, srv_reader);
	ck_assert_int_eq(vdi_cstream_reserve(cs, &p, MIB), 64 * KIB);
	ck_assert_int_eq(vdi_cstream_reserve_nowait(cs, &q, MIB), 64 * KIB);
	ck_assert_ptr_eq(p, q); /* the same room, no wait */
	memcpy(q, ref, 64 * KIB);
	TL_OK(vdi_cstream_commit(cs, 64 * KIB));
	ck_assert_int_eq(vdi_cstream_write(cs, ref + 64 * KIB, 300), 300);
	TL_OK(vdi_cstream_close(cs, 1));
	job_join(&s);
	JOB_OK(&s);
	ck_assert_uint_eq(s.got, 64 * KIB + 300);
	ck_assert_int_eq(s.bad, -1);
	free(ref);
	rig_finish_ok(&r);
}
END_TEST

/* peek_nowait: VD_E_TIMEOUT while nothing was sent, harmlessly; the
 * current buffer at once when there is one (vdifs' read-ahead, pump.c). */
START_TEST(test_peek_nowait)
{
	struct tl_pair_opts o;
	struct vdi_cstream *cs;
	static const char mark;
	const void *p = &mark, *q; /* the call must clear it */
	uint8_t *ref = ref_new(9, 2 * 64 * KIB), *got = malloc(2 * 64 * KIB);
	struct job s;
	struct rig r;

	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, WAIT_MS);
	job_init(&s, &r, 0, ref, 2 * 64 * KIB, 3);
	s.maxchunk = 64 * KIB;
	TL_OK(vdi_cstream_new(r.p.cd[0], WAIT_MS, &cs));
	TL_RC((int)vdi_cstream_peek_nowait(cs, &p, MIB), VD_E_TIMEOUT); /* no server writer yet */
	ck_assert_ptr_null(p);
	ck_assert_uint_eq(vdi_cstream_bytes(cs), 0);
	job_start(&s, srv_writer);
	ck_assert_int_eq(vdi_cstream_peek(cs, &p, MIB), 64 * KIB);
	ck_assert_int_eq(memcmp(p, ref, 64 * KIB), 0);
	ck_assert_int_eq(vdi_cstream_peek_nowait(cs, &q, MIB), 64 * KIB);
	ck_assert_ptr_eq(p, q); /* the same bytes, no wait */
	TL_OK(vdi_cstream_advance(cs, 64 * KIB));
	ck_assert_int_eq(vdi_cstream_read(cs, got, 64 * KIB), 64 * KIB);
	ck_assert_int_eq(memcmp(got, ref + 64 * KIB, 64 * KIB), 0);
	ck_assert_int_eq(vdi_cstream_peek(cs, &q, MIB), 0); /* VD_E_CLOSE */
	ck_assert_int_eq(vdi_cstream_peek_nowait(cs, &q, MIB), 0);
	TL_OK(vdi_cstream_close(cs, 1));
	job_join(&s);
	JOB_OK(&s);
	free(got);
	free(ref);
	rig_finish_ok(&r);
}
END_TEST

START_TEST(test_reserve_points_into_buffers)
{
	struct tl_pair_opts o;
	struct vdi_cstream *cs;
	uint8_t *ref = ref_new(8, 64 * KIB + 300);
	void *p, *q;
	struct job s;
	struct rig r;
	uint32_t h;

	rig_opts(&o, 1, VDF_ReadMedia, 512, 64 * KIB, 2);
	rig_up(&r, &o, 2, WAIT_MS);
	job_init(&s, &r, 0, ref, 64 * KIB + 300, 3);
	job_start(&s, srv_reader);
	TL_OK(vdi_cstream_new(r.p.cd[0], WAIT_MS, &cs));
	ck_assert_uint_eq(vdi_cstream_direction(cs), VDF_ReadMedia);
	ck_assert_int_eq(vdi_cstream_reserve(cs, &p, MIB), 64 * KIB);
	TL_OK(vdi_client_get_buffer_handle(r.p.c, p, &h));
	memcpy(p, ref, 1000);
	TL_OK(vdi_cstream_commit(cs, 1000));
	ck_assert_int_eq(vdi_cstream_reserve(cs, &q, MIB), 64 * KIB - 1000);
	ck_assert_ptr_eq(q, (uint8_t *)p + 1000);
	TL_RC(vdi_cstream_commit(cs, 64 * KIB), VD_E_INVALID);
	memcpy(q, ref + 1000, 64 * KIB - 1000);
	TL_OK(vdi_cstream_commit(cs, 64 * KIB - 1000));
	ck_assert_int_eq(vdi_cstream_reserve(cs, &q, 300), 300);
	TL_OK(vdi_client_get_buffer_handle(r.p.c, q, &h));
	memcpy(q, ref + 64 * KIB, 300);
	TL_OK(vdi_cstream_commit(cs, 300));
	ck_assert_uint_eq(vdi_cstream_bytes(cs), 64 * KIB + 300);
	TL_OK(vdi_cstream_close(cs, 1)); /* short read with ERROR_HANDLE_EOF */
	job_join(&s);
	JOB_OK(&s);
	ck_assert_uint_eq(s.got, 64 * KIB + 300);
	ck_assert_int_eq(s.bad, -1);
	free(ref);
	rig_finish_ok(&r);
}
END_TEST

/* ---------------------------------------------------------------------
 * Ordering of VDC_Flush and VDC_Complete.
 */
START_TEST(test_flush_waits_for_data)
{
	struct tl_pair_opts o;
	struct vdi_cstream *cs;
	uint8_t *ref = ref_new(9, 128 * KIB), *buf = malloc(128 * KIB);
	struct job s;
	struct rig r;
	size_t got = 0;
	ssize_t k;

	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, WAIT_MS);
	job_init(&s, &r, 0, ref, 128 * KIB, 3);
	s.final_cmd = VDC_Flush;
	job_start(&s, srv_writer);
	TL_OK(vdi_cstream_new(r.p.cd[0], WAIT_MS, &cs));
	while (got < 64 * KIB + 100) {
		k = vdi_cstream_read(cs, buf + got, 64 * KIB + 100 - got);
		ck_assert_int_gt(k, 0);
		got += (size_t)k;
	}
	tl_sleep_ms(200);
	ck_assert_int_eq(__atomic_load_n(&s.cmd_done, __ATOMIC_SEQ_CST), 0);
	while (got < 128 * KIB) {
		k = vdi_cstream_read(cs, buf + got, 128 * KIB - got);
		ck_assert_int_gt(k, 0);
		got += (size_t)k;
	}
	ck_assert_int_eq(memcmp(buf, ref, 128 * KIB), 0);
	tl_sleep_ms(200); /* every Write completed; the Flush is not fetched */
	ck_assert_int_eq(__atomic_load_n(&s.cmd_done, __ATOMIC_SEQ_CST), 0);
	ck_assert_int_eq(vdi_cstream_read(cs, buf, 100), 0); /* Flush, close */
	ck_assert_int_eq(__atomic_load_n(&s.cmd_done, __ATOMIC_SEQ_CST), 1);
	TL_OK(vdi_cstream_close(cs, 1));
	job_join(&s);
	JOB_OK(&s);
	ck_assert_int_eq(s.cmd_rc, 0);
	free(ref);
	free(buf);
	rig_finish_ok(&r);
}
END_TEST

/* A backup of total bytes (seed) on one device with VDC_Complete
 * negotiated: the server writer runs in s, the client stream is *cs. */
static void complete_rig(struct rig *r, struct job *s, struct vdi_cstream **cs, const uint8_t *ref,
                         uint64_t total)
{
	struct tl_pair_opts o;

	rig_opts(&o, 1, VDF_WriteMedia | VDF_CompleteEnabled, 512, 64 * KIB, 4);
	o.client_features = VDF_RequestComplete;
	rig_up(r, &o, 4, WAIT_MS);
	job_init(s, r, 0, ref, total, 3);
	s->final_cmd = VDC_Complete;
	job_start(s, srv_writer);
	TL_OK(vdi_cstream_new(r->p.cd[0], WAIT_MS, cs));
}

/* Reads cs to its end into buf (cap bytes), after `got` already there;
 * returns the total, checked against ref. */
static size_t read_to_end(struct vdi_cstream *cs, uint8_t *buf, size_t cap, size_t got,
                          const uint8_t *ref, size_t total)
{
	ssize_t k;

	while ((k = vdi_cstream_read(cs, buf + got, cap - got)) > 0)
		got += (size_t)k;
	ck_assert_int_eq(k, 0);
	ck_assert_uint_eq(got, round_up(total, 512));
	ck_assert_int_eq(memcmp(buf, ref, total), 0);
	return got;
}

START_TEST(test_complete_pending_until_close)
{
	struct vdi_cstream *cs;
	uint8_t *ref = ref_new(10, 100000), *buf = malloc(200000);
	struct job s;
	struct rig r;

	complete_rig(&r, &s, &cs, ref, 100000);
	read_to_end(cs, buf, 200000, 0, ref, 100000);
	tl_sleep_ms(200);
	ck_assert_int_eq(__atomic_load_n(&s.cmd_done, __ATOMIC_SEQ_CST), 0);
	ck_assert_int_eq(vdi_cstream_read(cs, buf, 100), 0); /* still the end */
	TL_OK(vdi_cstream_close(cs, 1));                     /* completes it, waits VD_E_CLOSE */
	job_join(&s);
	JOB_OK(&s);
	ck_assert_int_eq(s.cmd_rc, 0);
	free(ref);
	free(buf);
	rig_finish_ok(&r);
}
END_TEST

/* A restore stream that starts before the other devices' streams open
 * keeps only its share of the pool in flight (buffers / devices the
 * server opened), so a writer of another stripe that comes first still
 * gets reads: the ordering that hung `vdi exec` once in CI. */
static void *lone_reader(void *a)
{
	struct vdi_sstream *w = a;
	uint8_t b[512];

	(void)vdi_sstream_read(w, b, sizeof(b)); /* until the abort */
	return NULL;
}

START_TEST(test_restore_share_counts_devices)
{
	struct tl_pair_opts o;
	struct vdi_sstream *w;
	VDC_Command *cmd;
	struct rig r;
	pthread_t th;
	int held = 0, rc;

	rig_opts(&o, 2, VDF_ReadMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, WAIT_MS);
	TL_OK(vdi_sstream_open(r.pool, r.p.sd[0], 0, &w));
	ck_assert_int_eq(pthread_create(&th, NULL, lone_reader, w), 0);
	while ((rc = vdi_client_get_command(r.p.cd[0], 300, &cmd)) == 0)
		held++;
	ck_assert_int_eq(rc, VD_E_TIMEOUT);
	ck_assert_msg(held == 2, "%d reads in flight on device 0 of 2, pool of 4", held);
	TL_OK(vdi_server_signal_abort(r.p.s));
	pthread_join(th, NULL);
	vdi_sstream_close(w);
	rig_down(&r);
}
END_TEST

/* vdi_cstream_end: not before the end; at the end it acknowledges the
 * pending VDC_Complete at once (the server's command returns before any
 * close), twice is harmless, and close(ok=1) then only waits for
 * VD_E_CLOSE.  vdifs answers a reader's close(2) with it. */
START_TEST(test_end_acknowledges_complete)
{
	struct vdi_cstream *cs;
	uint8_t *ref = ref_new(11, 90000), *buf = malloc(200000);
	struct job s;
	struct rig r;
	ssize_t k;

	complete_rig(&r, &s, &cs, ref, 90000);
	k = vdi_cstream_read(cs, buf, 1000);
	ck_assert_int_gt(k, 0);
	TL_RC(vdi_cstream_end(cs), VD_E_PROTOCOL); /* not at the end */
	ck_assert_msg(strstr(vdi_last_error(), "not at its end"), "%s", vdi_last_error());
	read_to_end(cs, buf, 200000, (size_t)k, ref, 90000);
	ck_assert_int_eq(__atomic_load_n(&s.cmd_done, __ATOMIC_SEQ_CST), 0);
	TL_OK(vdi_cstream_end(cs));
	for (int i = 0; i < 200 && !__atomic_load_n(&s.cmd_done, __ATOMIC_SEQ_CST); i++)
		tl_sleep_ms(10);
	ck_assert_int_eq(__atomic_load_n(&s.cmd_done, __ATOMIC_SEQ_CST), 1);
	TL_OK(vdi_cstream_end(cs)); /* again: nothing to do */
	TL_OK(vdi_cstream_close(cs, 1));
	job_join(&s);
	JOB_OK(&s);
	ck_assert_int_eq(s.cmd_rc, 0);
	free(ref);
	free(buf);
	rig_finish_ok(&r);
}
END_TEST

/* vdi_cstream_end after the set was aborted: the backup did not
 * complete, and the reader must hear it (vdifs: close(2) gets EIO). */
START_TEST(test_end_after_abort_fails)
{
	struct vdi_cstream *cs;
	uint8_t *ref = ref_new(12, 70000), *buf = malloc(100000);
	struct job s;
	struct rig r;

	complete_rig(&r, &s, &cs, ref, 70000);
	read_to_end(cs, buf, 100000, 0, ref, 70000);
	TL_OK(vdi_server_signal_abort(r.p.s));
	TL_RC(vdi_cstream_end(cs), VD_E_ABORT);
	ck_assert_int_ne(vdi_cstream_close(cs, 1), 0);
	job_join(&s);
	ck_assert_int_eq(s.cmd_rc, VD_E_ABORT);
	free(ref);
	free(buf);
	rig_down(&r);
}
END_TEST

/* The reader fails after the end (close(ok=0)): the pending VDC_Complete
 * comes back aborted and the server's command call says VD_E_ABORT. */
START_TEST(test_complete_aborted_by_reader)
{
	struct vdi_cstream *cs;
	uint8_t *ref = ref_new(20, 70000), *buf = malloc(100000);
	struct job s;
	struct rig r;

	complete_rig(&r, &s, &cs, ref, 70000);
	read_to_end(cs, buf, 100000, 0, ref, 70000);
	TL_OK(vdi_cstream_close(cs, 0));
	job_join(&s);
	ck_assert_int_eq(s.cmd_rc, VD_E_ABORT);
	ck_assert_int_eq(s.rc, VD_E_ABORT);
	ck_assert_msg(strstr(s.err, "VDC_Complete"), "message: %s", s.err);
	free(ref);
	free(buf);
	rig_down(&r);
}
END_TEST

/* A reader that took exactly every byte without seeing the end: close
 * answers the Flush, sees VD_E_CLOSE and succeeds. */
START_TEST(test_close_at_exact_end)
{
	struct tl_pair_opts o;
	struct vdi_cstream *cs;
	uint8_t *ref = ref_new(11, 128 * KIB), *buf = malloc(128 * KIB);
	struct job s;
	struct rig r;
	size_t got = 0;
	ssize_t k;

	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, WAIT_MS);
	job_init(&s, &r, 0, ref, 128 * KIB, 3);
	s.final_cmd = VDC_Flush;
	job_start(&s, srv_writer);
	TL_OK(vdi_cstream_new(r.p.cd[0], WAIT_MS, &cs));
	while (got < 128 * KIB) {
		k = vdi_cstream_read(cs, buf + got, 128 * KIB - got);
		ck_assert_int_gt(k, 0);
		got += (size_t)k;
	}
	TL_OK(vdi_cstream_close(cs, 1));
	job_join(&s);
	JOB_OK(&s);
	ck_assert_int_eq(s.cmd_rc, 0);
	free(ref);
	free(buf);
	rig_finish_ok(&r);
}
END_TEST

/* ---------------------------------------------------------------------
 * Commands the stream does not carry.
 */
static void *srv_commands(void *a)
{
	struct job *j = a;
	struct vdi_sstream *w;
	static const uint32_t codes[] = {
		VDC_ClearError, VDC_Rewind, VDC_GetPosition, VDC_Complete,
		VDC_WriteMark,  VDC_Flush,  VDC_Snapshot,    VDC_Discard
	};
	struct tl_cmd t;
	uint8_t *buf;
	int rc;

	rc = vdi_sstream_open(j->r->pool, j->r->p.sd[j->dev], 0, &w);
	if (rc) {
		job_fail(j, rc);
		return NULL;
	}
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		j->codes[i] = vdi_sstream_command(w, codes[i]);
	/* A VDC_Read on a backup stream: not the stream's direction. */
	rc = vdi_server_allocate_buffer(j->r->p.s, &buf, 64 * KIB, 0);
	if (!rc) {
		tl_cmd_init(&t, VDC_Read, 64 * KIB, 0, buf);
		vdi_server_send_command(j->r->p.sd[j->dev], &t.cmd);
		rc = tl_cmd_wait(&t, WAIT_MS);
		j->cmd_rc = (int)t.code;
	}
	if (!rc)
		vdi_sstream_write(w, j->ref, (size_t)j->total);
	if (!rc)
		rc = vdi_sstream_drain(w);
	j->ecode = vdi_sstream_error(w, &j->eoff);
	j->close_rc = vdi_sstream_close(w);
	if (rc)
		job_fail(j, rc);
	vdi_server_close_device(j->r->p.sd[j->dev]);
	return NULL;
}

static void unsupported_case(uint32_t client_features)
{
	struct tl_pair_opts o;
	uint8_t *ref = ref_new(12, 5000);
	struct job s, c;
	struct rig r;

	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 5);
	o.client_features = client_features;
	rig_up(&r, &o, 4, WAIT_MS);
	job_init(&s, &r, 0, ref, 5000, 3);
	job_init(&c, &r, 0, ref, 5000, 4);
	job_start(&s, srv_commands);
	job_start(&c, cli_reader);
	job_join(&s);
	job_join(&c);
	ck_assert_int_eq(s.codes[0], ERROR_SUCCESS);       /* ClearError */
	ck_assert_int_eq(s.codes[1], ERROR_NOT_SUPPORTED); /* Rewind */
	ck_assert_int_eq(s.codes[2], ERROR_NOT_SUPPORTED); /* GetPosition */
	ck_assert_int_eq(s.codes[3], ERROR_NOT_SUPPORTED); /* Complete, not negotiated */
	ck_assert_int_eq(s.codes[4], ERROR_NOT_SUPPORTED); /* WriteMark */
	ck_assert_int_eq(s.codes[5], ERROR_SUCCESS);       /* Flush */
	ck_assert_int_eq(s.codes[6], ERROR_NOT_SUPPORTED); /* Snapshot, no handler */
	/* Discard: a stream keeps nothing; offered, it succeeds (F31) */
	ck_assert_int_eq(s.codes[7],
	                 client_features & VDF_Discard ? ERROR_SUCCESS : ERROR_NOT_SUPPORTED);
	ck_assert_int_eq(s.cmd_rc, ERROR_NOT_SUPPORTED); /* Read on a backup */
	JOB_OK(&s);
	JOB_OK(&c);
	ck_assert_int_eq(s.close_rc, 0);
	ck_assert_uint_eq(s.ecode, ERROR_NOT_SUPPORTED); /* first failed: Rewind */
	ck_assert_uint_eq(s.eoff, 0);
	ck_assert_uint_eq(c.got, round_up(5000, 512));
	ck_assert_int_eq(c.bad, -1);
	free(ref);
	rig_finish_ok(&r);
}

START_TEST(test_unsupported_commands)
{
	unsupported_case(0);
}
END_TEST

START_TEST(test_discard_when_offered)
{
	unsupported_case(VDF_Discard);
}
END_TEST

/* ---------------------------------------------------------------------
 * Snapshot commands (D47): the handler, in stream order.
 */
struct snaprec {
	pthread_mutex_t m;
	uint32_t cmds[8];
	uint64_t at[8];  /* stream bytes taken when each came */
	char files[256]; /* the list the last one was given */
	unsigned n;
	uint32_t answer;     /* what the handler answers */
	const char *command; /* or: vdi_snapshot_run of this */
	char err[600];
};

static uint32_t snap_handler(void *ctx, struct vdi_cstream *cs, uint32_t cmd, const char *files)
{
	struct snaprec *r = ctx;

	pthread_mutex_lock(&r->m);
	if (r->n < 8) {
		r->cmds[r->n] = cmd;
		r->at[r->n] = vdi_cstream_bytes(cs);
		r->n++;
	}
	snprintf(r->files, sizeof(r->files), "%s", files);
	pthread_mutex_unlock(&r->m);
	if (r->command)
		return vdi_snapshot_run(cs, r->command, cmd, files, r->err, sizeof(r->err));
	return r->answer;
}

/* The server of a snapshot backup: metadata, [frozen files], prepare,
 * more metadata, snapshot (spec 6.5).  codes[0..2]: the answers. */
static void *srv_snapshot(void *a)
{
	struct job *j = a;
	struct vdi_sstream *w;
	static const char list[] = "/data/db.mdf\n/data/db_log.ldf\n";
	int rc = vdi_sstream_open(j->r->pool, j->r->p.sd[j->dev], 0, &w);

	if (rc) {
		job_fail(j, rc);
		return NULL;
	}
	vdi_sstream_write(w, j->ref, 3072); /* whole blocks: no padding inside */
	rc = vdi_sstream_drain(w);
	if (!rc && j->mode == 1) { /* frozen files, as VDF_EnumFrozenFiles asks */
		j->codes[3] = vdi_sstream_command(w, VDC_FileInfoBegin);
		vdi_sstream_write(w, list, sizeof(list) - 1);
		rc = vdi_sstream_drain(w);
		j->codes[4] = vdi_sstream_command(w, VDC_FileInfoEnd);
	}
	if (!rc)
		j->codes[0] = vdi_sstream_command(w, VDC_PrepareToFreeze);
	if (!rc)
		vdi_sstream_write(w, j->ref + 3072, (size_t)j->total - 3072);
	if (!rc)
		rc = vdi_sstream_drain(w);
	if (!rc)
		j->codes[1] = vdi_sstream_command(w, VDC_Snapshot);
	j->close_rc = vdi_sstream_close(w);
	if (rc)
		job_fail(j, rc);
	vdi_server_close_device(j->r->p.sd[j->dev]);
	return NULL;
}

static void *cli_snap_reader(void *a)
{
	struct job *j = a;
	struct vdi_cstream *cs;
	uint8_t buf[4096];
	ssize_t k;
	int rc = vdi_cstream_new(j->r->p.cd[j->dev], j->timeout, &cs);

	if (rc) {
		job_fail(j, rc);
		return NULL;
	}
	vdi_cstream_on_snapshot(cs, snap_handler, j->ctx);
	while ((k = vdi_cstream_read(cs, buf, sizeof(buf))) > 0) {
		job_cmp(j, j->got, buf, (size_t)k);
		j->got += (uint64_t)k;
	}
	if (k < 0)
		job_fail(j, (int)k);
	j->close_rc = vdi_cstream_close(cs, 1);
	return NULL;
}

static void snapshot_case(uint32_t client_features, int with_files, uint32_t answer,
                          struct snaprec *rec, struct job *s, struct job *c, const uint8_t *ref)
{
	struct tl_pair_opts o;
	struct rig r;
	const char *cmd = rec->command;

	memset(rec, 0, sizeof(*rec));
	pthread_mutex_init(&rec->m, NULL);
	rec->answer = answer;
	rec->command = cmd;
	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 4);
	o.client_features = client_features;
	rig_up(&r, &o, 4, WAIT_MS);
	job_init(s, &r, 0, ref, 9216, 5);
	job_init(c, &r, 0, ref, 9216, 6);
	s->mode = with_files;
	c->ctx = rec;
	job_start(s, srv_snapshot);
	job_start(c, cli_snap_reader);
	job_join(s);
	job_join(c);
	rig_finish_ok(&r);
	pthread_mutex_destroy(&rec->m);
}

START_TEST(test_snapshot_commands_reach_handler)
{
	uint8_t *ref = ref_new(31, 9216);
	struct snaprec rec = { .command = NULL };
	struct job s, c;

	snapshot_case(VDF_SnapshotPrepare, 0, ERROR_SUCCESS, &rec, &s, &c, ref);
	ck_assert_uint_eq(rec.n, 2);
	ck_assert_uint_eq(rec.cmds[0], VDC_PrepareToFreeze);
	/* every byte before it was taken */
	ck_assert_uint_eq(rec.at[0], 3072);
	ck_assert_uint_eq(rec.cmds[1], VDC_Snapshot);
	ck_assert_uint_eq(rec.at[1], 9216);
	ck_assert_int_eq(c.bad, -1);
	ck_assert_int_eq(s.codes[0], ERROR_SUCCESS);
	ck_assert_int_eq(s.codes[1], ERROR_SUCCESS);
	ck_assert_str_eq(rec.files, "");
	JOB_OK(&s);
	JOB_OK(&c);
	ck_assert_int_eq(c.close_rc, 0);
	free(ref);
}
END_TEST

START_TEST(test_snapshot_refused_by_handler)
{
	uint8_t *ref = ref_new(32, 9216);
	struct snaprec rec = { .command = NULL };
	struct job s, c;

	snapshot_case(VDF_SnapshotPrepare, 0, ERROR_OPERATION_ABORTED, &rec, &s, &c, ref);
	ck_assert_int_eq(s.codes[0], ERROR_OPERATION_ABORTED);
	ck_assert_int_eq(s.codes[1], ERROR_OPERATION_ABORTED);
	free(ref);
}
END_TEST

START_TEST(test_frozen_files_listed)
{
	uint8_t *ref = ref_new(33, 9216);
	struct snaprec rec = { .command = NULL };
	struct job s, c;

	snapshot_case(VDF_SnapshotPrepare | VDF_EnumFrozenFiles, 1, ERROR_SUCCESS, &rec, &s, &c,
	              ref);
	ck_assert_int_eq(s.codes[3], ERROR_SUCCESS); /* FileInfoBegin */
	ck_assert_int_eq(s.codes[4], ERROR_SUCCESS); /* FileInfoEnd */
	ck_assert_str_eq(rec.files, "/data/db.mdf\n/data/db_log.ldf\n");
	/* the list is not stream data: the reader saw exactly the metadata */
	ck_assert_uint_eq(c.got, 9216);
	ck_assert_int_eq(c.bad, -1);
	JOB_OK(&s);
	JOB_OK(&c);
	free(ref);
}
END_TEST

START_TEST(test_frozen_files_not_offered)
{
	uint8_t *ref = ref_new(34, 9216);
	struct snaprec rec = { .command = NULL };
	struct job s, c;

	snapshot_case(VDF_SnapshotPrepare, 1, ERROR_SUCCESS, &rec, &s, &c, ref);
	ck_assert_int_eq(s.codes[3], ERROR_NOT_SUPPORTED);
	ck_assert_int_eq(s.codes[4], ERROR_NOT_SUPPORTED);
	free(ref);
}
END_TEST

static void *srv_mount(void *a)
{
	struct job *j = a;
	struct vdi_sstream *rd;
	uint8_t buf[8192];
	ssize_t k;
	int rc = vdi_sstream_open(j->r->pool, j->r->p.sd[j->dev], 0, &rd);

	if (rc) {
		job_fail(j, rc);
		return NULL;
	}
	while ((k = vdi_sstream_read(rd, buf, sizeof(buf))) > 0)
		j->got += (uint64_t)k;
	if (k < 0)
		job_fail(j, (int)k);
	j->codes[0] = vdi_sstream_command(rd, VDC_MountSnapshot);
	j->close_rc = vdi_sstream_close(rd);
	vdi_server_close_device(j->r->p.sd[j->dev]);
	return NULL;
}

static void *cli_mount_writer(void *a)
{
	struct job *j = a;
	struct vdi_cstream *cs;
	int rc = vdi_cstream_new(j->r->p.cd[j->dev], j->timeout, &cs);

	if (rc) {
		job_fail(j, rc);
		return NULL;
	}
	vdi_cstream_on_snapshot(cs, snap_handler, j->ctx);
	if (vdi_cstream_write(cs, j->ref, (size_t)j->total) != (ssize_t)j->total)
		job_fail(j, VD_E_UNEXPECTED);
	j->close_rc = vdi_cstream_close(cs, 1); /* MountSnapshot comes meanwhile */
	return NULL;
}

START_TEST(test_mount_snapshot_at_close)
{
	uint8_t *ref = ref_new(35, 3072);
	struct tl_pair_opts o;
	struct snaprec rec = { .command = NULL };
	struct job s, c;
	struct rig r;

	memset(&rec, 0, sizeof(rec));
	pthread_mutex_init(&rec.m, NULL);
	rig_opts(&o, 1, VDF_ReadMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, WAIT_MS);
	job_init(&s, &r, 0, ref, 3072, 7);
	job_init(&c, &r, 0, ref, 3072, 8);
	c.ctx = &rec;
	job_start(&s, srv_mount);
	job_start(&c, cli_mount_writer);
	job_join(&s);
	job_join(&c);
	ck_assert_uint_eq(s.got, 3072);
	ck_assert_uint_eq(rec.n, 1);
	ck_assert_uint_eq(rec.cmds[0], VDC_MountSnapshot);
	ck_assert_int_eq(s.codes[0], ERROR_SUCCESS);
	JOB_OK(&s);
	JOB_OK(&c);
	ck_assert_int_eq(c.close_rc, 0);
	rig_finish_ok(&r);
	pthread_mutex_destroy(&rec.m);
	free(ref);
}
END_TEST

START_TEST(test_snapshot_command_runs)
{
	uint8_t *ref = ref_new(36, 9216);
	char out[256], cmd[512], got[512] = "";
	struct snaprec rec = { .command = NULL };
	struct job s, c;
	FILE *f;

	snprintf(out, sizeof(out), "/tmp/vdi-snapcmd-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd),
	         "printf '%%s|%%s|%%s|%%s;' \"$VDI_SET\" \"$VDI_DEVICE\" \"$VDI_PHASE\" "
	         "\"$VDI_FILES\" >> %s",
	         out);
	unlink(out);
	memset(&rec, 0, sizeof(rec));
	rec.command = cmd;
	snapshot_case(VDF_SnapshotPrepare | VDF_EnumFrozenFiles, 1, 0, &rec, &s, &c, ref);
	ck_assert_int_eq(s.codes[0], ERROR_SUCCESS);
	ck_assert_int_eq(s.codes[1], ERROR_SUCCESS);
	f = fopen(out, "r");
	ck_assert_ptr_nonnull(f);
	got[fread(got, 1, sizeof(got) - 1, f)] = '\0';
	fclose(f);
	unlink(out);
	/* prepare, then snapshot, each with the set, device and files */
	ck_assert_ptr_nonnull(strstr(got, "|prepare|/data/db.mdf\n/data/db_log.ldf\n;"));
	ck_assert_ptr_nonnull(strstr(got, "|snapshot|/data/db.mdf\n/data/db_log.ldf\n;"));
	ck_assert(strstr(got, "|prepare|") < strstr(got, "|snapshot|"));
	JOB_OK(&s);
	JOB_OK(&c);
	free(ref);
}
END_TEST

START_TEST(test_snapshot_command_fails)
{
	uint8_t *ref = ref_new(37, 9216);
	struct snaprec rec = { .command = NULL };
	struct job s, c;

	memset(&rec, 0, sizeof(rec));
	rec.command = "echo 'no such volume group' >&2; exit 3";
	snapshot_case(0, 0, 0, &rec, &s, &c, ref);
	ck_assert_int_eq(s.codes[1], ERROR_OPERATION_ABORTED);
	ck_assert_msg(strstr(rec.err, "exit status 3: no such volume group") != NULL, "%s",
	              rec.err);
	rec.command = "kill -9 $$";
	snapshot_case(0, 0, 0, &rec, &s, &c, ref);
	ck_assert_int_eq(s.codes[1], ERROR_OPERATION_ABORTED);
	ck_assert_msg(strstr(rec.err, "killed by signal 9") != NULL, "%s", rec.err);
	rec.command = "/no/such/snapshot-tool";
	snapshot_case(0, 0, 0, &rec, &s, &c, ref);
	ck_assert_int_eq(s.codes[1], ERROR_OPERATION_ABORTED);
	ck_assert_msg(strstr(rec.err, "exit status 127") != NULL, "%s", rec.err);
	free(ref);
}
END_TEST

struct abort_later {
	struct vdi_server *srv;
	uint32_t ms;
};

static void *abort_later_main(void *a)
{
	struct abort_later *al = a;

	tl_sleep_ms(al->ms);
	vdi_server_signal_abort(al->srv);
	return NULL;
}

/* The freeze limit: a command still running when the set is aborted is
 * killed, and the snapshot answers ERROR_OPERATION_ABORTED at once. */
START_TEST(test_snapshot_command_killed_by_abort)
{
	uint8_t *ref = ref_new(38, 9216);
	struct tl_pair_opts o;
	struct snaprec rec = { .command = NULL };
	struct abort_later al;
	struct job s, c;
	struct rig r;
	pthread_t th;
	uint64_t t0;

	memset(&rec, 0, sizeof(rec));
	pthread_mutex_init(&rec.m, NULL);
	rec.command = "sleep 30";
	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, WAIT_MS);
	job_init(&s, &r, 0, ref, 9216, 5);
	job_init(&c, &r, 0, ref, 9216, 6);
	c.ctx = &rec;
	al.srv = r.p.s;
	al.ms = 500;
	t0 = tl_now_ms();
	job_start(&s, srv_snapshot);
	job_start(&c, cli_snap_reader);
	ck_assert_int_eq(pthread_create(&th, NULL, abort_later_main, &al), 0);
	job_join(&c);
	job_join(&s);
	pthread_join(th, NULL);
	ck_assert_msg(tl_now_ms() - t0 < 10000, "the command was not stopped: %llu ms",
	              (unsigned long long)(tl_now_ms() - t0));
	ck_assert_msg(strstr(rec.err, "killed: the set was aborted") != NULL, "%s", rec.err);
	rig_down(&r);
	pthread_mutex_destroy(&rec.m);
	free(ref);
}
END_TEST

START_TEST(test_wrong_direction)
{
	struct tl_pair_opts o;
	struct vdi_cstream *cs;
	struct vdi_sstream *w;
	char buf[16];
	void *p;
	struct rig r;

	rig_opts(&o, 1, VDF_WriteMedia, 4096, 64 * KIB, 2);
	rig_up(&r, &o, 2, WAIT_MS);
	TL_OK(vdi_cstream_new(r.p.cd[0], 100, &cs));
	ck_assert_uint_eq(vdi_cstream_direction(cs), VDF_WriteMedia);
	TL_RC((int)vdi_cstream_write(cs, buf, sizeof(buf)), VD_E_PROTOCOL);
	TL_RC((int)vdi_cstream_reserve(cs, &p, 10), VD_E_PROTOCOL);
	TL_RC(vdi_cstream_commit(cs, 10), VD_E_INVALID);
	TL_RC(vdi_sstream_open(r.pool, r.p.sd[0], 1000, &w), VD_E_INVALID);
	TL_RC(vdi_sstream_open(r.pool, r.p.sd[0], 128 * KIB, &w), VD_E_INVALID);
	TL_OK(vdi_sstream_open(r.pool, r.p.sd[0], 8192, &w));
	TL_RC((int)vdi_sstream_read(w, buf, sizeof(buf)), VD_E_PROTOCOL);
	{
		const void *pk;

		TL_RC((int)vdi_sstream_peek(w, &pk, 1), VD_E_PROTOCOL);
		TL_RC(vdi_sstream_advance(w, 1), VD_E_PROTOCOL);
	}
	TL_RC(vdi_sstream_command(w, VDC_Write), VD_E_INVALID);
	TL_OK(vdi_sstream_close(w));
	TL_RC((int)vdi_cstream_read(cs, buf, sizeof(buf)), VD_E_TIMEOUT);
	TL_OK(vdi_cstream_close(cs, 0));
	rig_down(&r);
}
END_TEST

/* Closing a backup stream with bytes written but not drained fails loudly
 * (they were never sent); the device is then aborted by the caller. */
START_TEST(test_close_without_drain)
{
	struct tl_pair_opts o;
	struct vdi_sstream *w;
	struct rig r;
	char buf[1000];

	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 2);
	rig_up(&r, &o, 2, WAIT_MS);
	memset(buf, 1, sizeof(buf));
	TL_OK(vdi_sstream_open(r.pool, r.p.sd[0], 0, &w));
	ck_assert_int_eq(vdi_sstream_write(w, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	ck_assert_uint_eq(vdi_sstream_bytes(w), sizeof(buf));
	TL_RC(vdi_sstream_close(w), VD_E_PROTOCOL);
	ck_assert_msg(strstr(vdi_last_error(), "not drained"), "%s", vdi_last_error());
	rig_down(&r);
}
END_TEST

/* ---------------------------------------------------------------------
 * Failures reported by the client.
 */
static void *raw_backup_client(void *a)
{
	struct job *j = a;
	VDC_Command *cmd;
	int rc, n = 0;

	for (;;) {
		rc = vdi_client_get_command(j->r->p.cd[j->dev], WAIT_MS, &cmd);
		if (rc)
			break;
		if (cmd->commandCode == VDC_Write && n++ == 1)
			rc = vdi_client_complete_command(j->r->p.cd[j->dev], cmd, ERROR_DISK_FULL,
			                                 0, 0);
		else
			rc = vdi_client_complete_command(j->r->p.cd[j->dev], cmd, ERROR_SUCCESS,
			                                 (uint32_t)cmd->size, 0);
		if (rc)
			break;
	}
	if (rc != VD_E_CLOSE)
		job_fail(j, rc);
	return NULL;
}

START_TEST(test_client_write_error)
{
	struct tl_pair_opts o;
	uint8_t *ref = ref_new(13, 4 * 64 * KIB);
	struct job s, c;
	struct rig r;
	char dev[80];

	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, WAIT_MS);
	job_init(&s, &r, 0, ref, 4 * 64 * KIB, 3);
	job_init(&c, &r, 0, ref, 0, 4);
	s.final_cmd = VDC_Flush;
	job_start(&s, srv_writer);
	job_start(&c, raw_backup_client);
	job_join(&s);
	job_join(&c);
	JOB_OK(&c);
	ck_assert_int_eq(s.rc, VD_E_IO_ERROR);
	ck_assert_uint_eq(s.ecode, ERROR_DISK_FULL);
	ck_assert_uint_eq(s.eoff, 64 * KIB);
	ck_assert_int_eq(s.close_rc, VD_E_IO_ERROR);
	snprintf(dev, sizeof(dev), "'%s'", r.p.dev[0]);
	ck_assert_msg(strstr(s.err, dev) && strstr(s.err, "ERROR_DISK_FULL") &&
	                      strstr(s.err, "VDC_Write") && strstr(s.err, "65536"),
	              "message: %s", s.err);
	free(ref);
	rig_finish_ok(&r);
}
END_TEST

/* Restore: Read 1 full, Read 2 fails with `code` (or ends, see below),
 * every later Read ends with ERROR_HANDLE_EOF and 0 bytes. */
static void *raw_restore_client(void *a)
{
	struct job *j = a;
	VDC_Command *cmd;
	uint32_t code, bytes;
	int rc, n = 0;

	for (;;) {
		rc = vdi_client_get_command(j->r->p.cd[j->dev], WAIT_MS, &cmd);
		if (rc)
			break;
		code = ERROR_HANDLE_EOF;
		bytes = 0;
		if (cmd->commandCode == VDC_Read && n == 0) {
			memcpy(cmd->buffer, j->ref, (size_t)cmd->size);
			code = ERROR_SUCCESS;
			bytes = (uint32_t)cmd->size;
		} else if (cmd->commandCode == VDC_Read && n == 1) {
			code = (uint32_t)j->mode;
			bytes = code == ERROR_NO_DATA_DETECTED ? 1000 : 0;
			memcpy(cmd->buffer, j->ref + cmd->size, bytes);
		} else if (cmd->commandCode != VDC_Read) {
			code = ERROR_SUCCESS;
		}
		n += cmd->commandCode == VDC_Read;
		rc = vdi_client_complete_command(j->r->p.cd[j->dev], cmd, code, bytes, 0);
		if (rc)
			break;
	}
	if (rc != VD_E_CLOSE)
		job_fail(j, rc);
	return NULL;
}

START_TEST(test_client_read_error)
{
	struct tl_pair_opts o;
	uint8_t *ref = ref_new(14, 3 * 64 * KIB);
	struct job s, c;
	struct rig r;

	rig_opts(&o, 1, VDF_ReadMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, WAIT_MS);
	job_init(&s, &r, 0, ref, 3 * 64 * KIB, 3);
	job_init(&c, &r, 0, ref, 0, 4);
	c.mode = ERROR_IO_DEVICE;
	job_start(&s, srv_reader);
	job_start(&c, raw_restore_client);
	job_join(&s);
	job_join(&c);
	JOB_OK(&c);
	ck_assert_int_eq(s.rc, VD_E_IO_ERROR);
	ck_assert_uint_eq(s.got, 64 * KIB); /* the bytes before it came */
	ck_assert_int_eq(s.bad, -1);
	ck_assert_uint_eq(s.ecode, ERROR_IO_DEVICE);
	ck_assert_uint_eq(s.eoff, 64 * KIB);
	ck_assert_msg(strstr(s.err, "ERROR_IO_DEVICE") && strstr(s.err, "VDC_Read"), "message: %s",
	              s.err);
	free(ref);
	rig_finish_ok(&r);
}
END_TEST

/* ERROR_NO_DATA_DETECTED ends the stream after its bytes; the reads in
 * flight behind it (answered ERROR_HANDLE_EOF, 0 bytes) are ignored. */
START_TEST(test_restore_no_data_detected)
{
	struct tl_pair_opts o;
	uint8_t *ref = ref_new(15, 3 * 64 * KIB);
	struct job s, c;
	struct rig r;

	rig_opts(&o, 1, VDF_ReadMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, WAIT_MS);
	job_init(&s, &r, 0, ref, 3 * 64 * KIB, 3);
	job_init(&c, &r, 0, ref, 0, 4);
	c.mode = ERROR_NO_DATA_DETECTED;
	job_start(&s, srv_reader);
	job_start(&c, raw_restore_client);
	job_join(&s);
	job_join(&c);
	JOB_OK(&c);
	JOB_OK(&s);
	ck_assert_uint_eq(s.got, 64 * KIB + 1000);
	ck_assert_int_eq(s.bad, -1);
	ck_assert_int_eq(s.close_rc, 0);
	ck_assert_uint_eq(s.ecode, 0);
	free(ref);
	rig_finish_ok(&r);
}
END_TEST

/* ---------------------------------------------------------------------
 * Truncation, abort, timeouts.
 */
START_TEST(test_close_before_end_aborts)
{
	struct tl_pair_opts o;
	struct vdi_cstream *cs;
	uint8_t *ref = ref_new(16, 300 * KIB), buf[1000];
	struct job s;
	struct rig r;

	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 8);
	rig_up(&r, &o, 8, WAIT_MS);
	job_init(&s, &r, 0, ref, 300 * KIB, 3);
	s.final_cmd = VDC_Flush;
	job_start(&s, srv_writer);
	TL_OK(vdi_cstream_new(r.p.cd[0], WAIT_MS, &cs));
	ck_assert_int_eq(vdi_cstream_read(cs, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	TL_RC(vdi_cstream_close(cs, 1), VD_E_ABORT);
	ck_assert_msg(strstr(vdi_last_error(), "before its end"), "%s", vdi_last_error());
	job_join(&s);
	ck_assert_int_eq(s.rc, VD_E_ABORT);
	free(ref);
	rig_down(&r);
}
END_TEST

static void *srv_abort_later(void *a)
{
	struct job *j = a;

	tl_sleep_ms(200);
	j->t_fail = tl_now_ms();
	j->rc = vdi_server_signal_abort(j->r->p.s);
	return NULL;
}

/* Server abort wakes a client blocked in read (backup) or reserve. */
START_TEST(test_server_abort_wakes_client)
{
	uint32_t dir = _i ? VDF_ReadMedia : VDF_WriteMedia;
	struct tl_pair_opts o;
	struct vdi_cstream *cs;
	struct job s;
	struct rig r;
	char buf[100];
	uint64_t t;

	rig_opts(&o, 1, dir, 512, 64 * KIB, 4);
	rig_up(&r, &o, 0, WAIT_MS);
	TL_OK(vdi_cstream_new(r.p.cd[0], VDI_INFINITE, &cs));
	job_init(&s, &r, 0, NULL, 0, 0);
	job_start(&s, srv_abort_later);
	if (dir == VDF_WriteMedia)
		TL_RC((int)vdi_cstream_read(cs, buf, sizeof(buf)), VD_E_ABORT);
	else
		TL_RC((int)vdi_cstream_write(cs, buf, sizeof(buf)), VD_E_ABORT);
	t = tl_now_ms();
	job_join(&s);
	TL_OK(s.rc);
	ck_assert_msg(t - s.t_fail < 1000, "woke %llu ms after the abort",
	              (unsigned long long)(t - s.t_fail));
	TL_RC((int)vdi_cstream_read(cs, buf, sizeof(buf)),
	      dir == VDF_WriteMedia ? VD_E_ABORT : VD_E_PROTOCOL);
	TL_RC(vdi_cstream_close(cs, 1), VD_E_ABORT);
	rig_down(&r);
}
END_TEST

/* Client abort wakes the server's writer (waiting for a buffer) or
 * reader (waiting for a read): ERROR_OPERATION_ABORTED via the routine. */
START_TEST(test_client_abort_wakes_server)
{
	uint32_t dir = _i ? VDF_ReadMedia : VDF_WriteMedia;
	struct tl_pair_opts o;
	struct vdi_cstream *cs;
	uint8_t *ref = ref_new(17, 16 * MIB);
	struct job s;
	struct rig r;
	uint64_t t;
	char dev[80];

	rig_opts(&o, 1, dir, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, VDI_INFINITE);
	job_init(&s, &r, 0, ref, 16 * MIB, 3);
	job_start(&s, dir == VDF_WriteMedia ? srv_writer : srv_reader);
	tl_sleep_ms(300);
	TL_OK(vdi_cstream_new(r.p.cd[0], WAIT_MS, &cs));
	t = tl_now_ms();
	TL_OK(vdi_cstream_close(cs, 0));
	job_join(&s);
	ck_assert_int_eq(s.rc, VD_E_ABORT);
	ck_assert_msg(s.t_fail - t < 1000, "server woke %llu ms after the abort",
	              (unsigned long long)(s.t_fail - t));
	ck_assert_uint_eq(s.ecode, ERROR_OPERATION_ABORTED);
	ck_assert_uint_eq(s.eoff % (64 * KIB), 0);
	snprintf(dev, sizeof(dev), "'%s'", r.p.dev[0]);
	ck_assert_msg(strstr(s.err, dev) && strstr(s.err, "ERROR_OPERATION_ABORTED"), "message: %s",
	              s.err);
	free(ref);
	rig_down(&r);
}
END_TEST

/* A writer waiting for a buffer that another stream holds (nothing in
 * flight, so no completion will come) still sees an abort promptly. */
START_TEST(test_abort_wakes_idle_waiter)
{
	struct tl_pair_opts o;
	struct vdi_sstream *a;
	uint8_t *ref = ref_new(19, MIB);
	struct job s;
	struct rig r;
	uint64_t t;

	rig_opts(&o, 2, VDF_WriteMedia, 512, 64 * KIB, 1);
	rig_up(&r, &o, 1, VDI_INFINITE);
	TL_OK(vdi_sstream_open(r.pool, r.p.sd[0], 0, &a));
	ck_assert_int_eq(vdi_sstream_write(a, ref, 100), 100); /* holds the buffer */
	job_init(&s, &r, 1, ref, MIB, 3);
	s.close_device = 0;
	job_start(&s, srv_writer);
	tl_sleep_ms(300);
	t = tl_now_ms();
	TL_OK(vdi_client_signal_abort(r.p.c));
	job_join(&s);
	ck_assert_int_eq(s.rc, VD_E_ABORT);
	ck_assert_msg(s.t_fail - t < 1000, "writer woke %llu ms after the abort",
	              (unsigned long long)(s.t_fail - t));
	ck_assert_msg(strstr(s.err, "aborted"), "message: %s", s.err);
	TL_RC((int)vdi_sstream_write(a, ref, 100), VD_E_ABORT);
	TL_RC(vdi_sstream_close(a), VD_E_ABORT);
	free(ref);
	rig_down(&r);
}
END_TEST

START_TEST(test_client_timeout)
{
	struct tl_pair_opts o;
	struct vdi_cstream *cs;
	struct rig r;
	char buf[10];
	uint64_t t;

	rig_opts(&o, 1, _i ? VDF_ReadMedia : VDF_WriteMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 0, WAIT_MS);
	TL_OK(vdi_cstream_new(r.p.cd[0], 150, &cs));
	for (int k = 0; k < 2; k++) { /* not sticky */
		t = tl_now_ms();
		if (_i)
			TL_RC((int)vdi_cstream_write(cs, buf, sizeof(buf)), VD_E_TIMEOUT);
		else
			TL_RC((int)vdi_cstream_read(cs, buf, sizeof(buf)), VD_E_TIMEOUT);
		t = tl_now_ms() - t;
		ck_assert_msg(t >= 140 && t < 1000, "timed out after %llu ms",
		              (unsigned long long)t);
	}
	TL_OK(vdi_cstream_close(cs, 0));
	rig_down(&r);
}
END_TEST

/* The server's waits are bounded by the pool timeout; close past it
 * aborts the set rather than free commands still in flight. */
START_TEST(test_server_timeout)
{
	struct tl_pair_opts o;
	uint8_t *ref = ref_new(18, 16 * MIB);
	struct job s;
	struct rig r;
	uint64_t t;

	rig_opts(&o, 1, _i ? VDF_ReadMedia : VDF_WriteMedia, 512, 64 * KIB, 4);
	rig_up(&r, &o, 4, 200);
	job_init(&s, &r, 0, ref, 16 * MIB, 3);
	s.close_device = 0;
	t = tl_now_ms();
	job_start(&s, _i ? srv_reader : srv_writer);
	job_join(&s);
	t = s.t_fail - t;
	ck_assert_int_eq(s.rc, VD_E_TIMEOUT);
	ck_assert_msg(t >= 190 && t < 2000, "timed out after %llu ms", (unsigned long long)t);
	ck_assert_int_eq(s.close_rc, VD_E_TIMEOUT); /* and aborted the set */
	TL_RC(vdi_server_close_device(r.p.sd[0]), VD_E_ABORT);
	free(ref);
	rig_down(&r);
}
END_TEST

/* ---------------------------------------------------------------------
 * Media (D50): tape images, positions, removable media, disks.
 *
 * The expected tape images are built here from the format's definition
 * (6-byte chunk headers: length, previous length, flags, 0), not with
 * cstream.c's code, so that both halves are checked against the format.
 */
#define TAPE_F   VDF_LikeTape /* the whole mask (D50) */
#define AWS_BOR  0x80u
#define AWS_EOR  0x20u
#define AWS_MARK 0x40u
#define AWS_MAX  65535u
#define ANY_POS  UINT64_MAX
#define OK_      ERROR_SUCCESS
#define NS_      ERROR_NOT_SUPPORTED
#define FM_      ERROR_FILEMARK_DETECTED
#define EOF_     ERROR_HANDLE_EOF

struct tape {
	uint8_t *b;
	size_t len, cap;
	uint32_t prev; /* length of the previous chunk */
};

static void tape_put(struct tape *t, const void *p, size_t n)
{
	if (t->len + n > t->cap) {
		t->cap = (t->len + n) * 2 + 64;
		t->b = realloc(t->b, t->cap);
		ck_assert_ptr_nonnull(t->b);
	}
	memcpy(t->b + t->len, p, n);
	t->len += n;
}

/* One raw chunk header (malformed images use it directly). */
static void tape_hdr(struct tape *t, uint32_t len, uint32_t prev, uint32_t flags)
{
	uint8_t h[6] = { (uint8_t)len,         (uint8_t)(len >> 8), (uint8_t)prev,
		         (uint8_t)(prev >> 8), (uint8_t)flags,      0 };

	tape_put(t, h, sizeof(h));
	t->prev = len;
}

static void tape_record(struct tape *t, const uint8_t *p, size_t n)
{
	size_t off = 0, c;

	do {
		c = n - off < AWS_MAX ? n - off : AWS_MAX;
		tape_hdr(t, (uint32_t)c, t->prev,
		         (off == 0 ? AWS_BOR : 0) | (off + c == n ? AWS_EOR : 0));
		tape_put(t, p + off, c);
		off += c;
	} while (off < n);
}

#define TAPE_MARK   (-1)
#define TAPE_MEDIUM (-2)

/* The image of recs (record lengths taken in turn from data, TAPE_MARK,
 * TAPE_MEDIUM: the next medium starts, its image offset goes to ends[];
 * 0 ends the list).  Returns the data bytes used. */
static size_t tape_make(struct tape *t, const uint8_t *data, const int32_t *recs, size_t *ends,
                        unsigned *nends)
{
	size_t off = 0;

	memset(t, 0, sizeof(*t));
	if (nends)
		*nends = 0;
	for (; *recs; recs++) {
		if (*recs == TAPE_MARK) {
			tape_hdr(t, 0, t->prev, AWS_MARK);
		} else if (*recs == TAPE_MEDIUM) {
			ends[(*nends)++] = t->len;
			t->prev = 0;
		} else {
			tape_record(t, data + off, (size_t)*recs);
			off += (size_t)*recs;
		}
	}
	return off;
}

/* Sum of the record lengths of recs. */
static size_t recs_bytes(const int32_t *recs)
{
	size_t n = 0;

	for (; *recs; recs++)
		n += *recs > 0 ? (size_t)*recs : 0;
	return n;
}

/* --- A server script: the steps a server thread runs on one stream. */
enum op { OP_END, OP_WRITE, OP_DRAIN, OP_CTL, OP_READ, OP_RESUME, OP_LOADS, OP_ERROR };

struct step {
	int op;
	uint32_t code; /* OP_CTL, OP_RESUME: the command (0: none) */
	uint32_t size; /* OP_CTL: count or whence; OP_READ: bytes before the end */
	uint64_t arg;  /* OP_WRITE: bytes of ref; OP_CTL: position; OP_READ: ref offset */
	int want;      /* return; OP_READ: end code, or a negative VD_E_* */
	uint64_t pos;  /* OP_CTL: position the client returns, ANY_POS: unchecked */
};

#define S_CMD(c, w)                             \
	{                                       \
		OP_CTL, (c), 0, 0, (w), ANY_POS \
	}
#define S_CTL(c, n, p, w, o)                    \
	{                                       \
		OP_CTL, (c), (n), (p), (w), (o) \
	}
#define S_GETPOS(p)                                     \
	{                                               \
		OP_CTL, VDC_GetPosition, 0, 0, OK_, (p) \
	}
#define S_WRITE(n)                        \
	{                                 \
		OP_WRITE, 0, 0, (n), 0, 0 \
	}
#define S_DRAIN                         \
	{                               \
		OP_DRAIN, 0, 0, 0, 0, 0 \
	}
#define S_READ(off, n, end)                      \
	{                                        \
		OP_READ, 0, (n), (off), (end), 0 \
	}
#define S_RESUME(c, w)                       \
	{                                    \
		OP_RESUME, (c), 0, 0, (w), 0 \
	}
#define S_LOADS(n)                        \
	{                                 \
		OP_LOADS, 0, 0, 0, (n), 0 \
	}
#define S_ERROR(c)                        \
	{                                 \
		OP_ERROR, 0, 0, 0, (c), 0 \
	}
#define S_END                         \
	{                             \
		OP_END, 0, 0, 0, 0, 0 \
	}

static const char *op_name(const struct step *st)
{
	static const char *const names[] = { "end",  "write",  "drain", "command",
		                             "read", "resume", "loads", "error" };

	return st->op == OP_CTL || st->op == OP_RESUME ? vdi_strcommand(st->code) : names[st->op];
}

/* Records the first unexpected result of a script. */
static int step_fail(struct job *j, unsigned i, const struct step *st, const char *fmt, ...)
{
	char m[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	if (!j->rc) {
		j->rc = VD_E_UNEXPECTED;
		snprintf(j->err, sizeof(j->err), "step %u (%s): %s [last error: %s]", i,
		         op_name(st), m, vdi_last_error());
	}
	return -1;
}

/* OP_READ: read to the end (or the failure st->want); the bytes must be
 * ref[arg, arg + size). */
static int step_read(struct job *j, struct vdi_sstream *r, unsigned i, const struct step *st,
                     uint8_t *buf, uint64_t *rng)
{
	uint64_t got = 0;
	uint32_t end;
	ssize_t k;

	while ((k = vdi_sstream_read(r, buf, chunk(rng, 128 * KIB, 128 * KIB))) > 0) {
		if (got + (uint64_t)k > st->size)
			return step_fail(j, i, st, "%llu bytes before the end, want %u",
			                 (unsigned long long)(got + (uint64_t)k), st->size);
		if (memcmp(buf, j->ref + st->arg + got, (size_t)k))
			return step_fail(j, i, st, "wrong bytes at %llu..%llu",
			                 (unsigned long long)got,
			                 (unsigned long long)(got + (uint64_t)k));
		got += (uint64_t)k;
	}
	j->got += got;
	if (k < 0 || st->want < 0)
		return k == st->want
		               ? 0
		               : step_fail(j, i, st, "read returned %s after %llu bytes, want %s",
		                           vdi_strerror((int)k), (unsigned long long)got,
		                           vdi_strerror(st->want));
	end = vdi_sstream_end_code(r);
	if (got != st->size || end != (uint32_t)st->want)
		return step_fail(j, i, st, "%llu bytes, then %s; want %u bytes, then %s",
		                 (unsigned long long)got, vdi_strcompletion(end), st->size,
		                 vdi_strcompletion((uint32_t)st->want));
	return 0;
}

static int step_run(struct job *j, struct vdi_sstream *w, unsigned i, const struct step *st,
                    uint64_t *woff, uint8_t *buf, uint64_t *rng)
{
	uint64_t pos = ANY_POS;
	int rc;

	switch (st->op) {
	case OP_WRITE:
		rc = (int)vdi_sstream_write(w, j->ref + *woff, (size_t)st->arg);
		*woff += st->arg;
		return rc == (int)st->arg ? 0 : step_fail(j, i, st, "%s", vdi_strerror(rc));
	case OP_DRAIN:
		rc = vdi_sstream_drain(w);
		return rc ? step_fail(j, i, st, "%s", vdi_strerror(rc)) : 0;
	case OP_CTL:
		rc = vdi_sstream_control(w, st->code, st->size, st->arg, &pos);
		if (rc != st->want)
			return step_fail(j, i, st, "returned %d (%s), want %d", rc,
			                 rc < 0 ? vdi_strerror(rc)
			                        : vdi_strcompletion((uint32_t)rc),
			                 st->want);
		if (st->pos != ANY_POS && pos != st->pos)
			return step_fail(j, i, st, "position %llu, want %llu",
			                 (unsigned long long)pos, (unsigned long long)st->pos);
		return 0;
	case OP_READ: return step_read(j, w, i, st, buf, rng);
	case OP_RESUME:
		rc = vdi_sstream_resume(w, st->code);
		return rc == st->want ? 0
		                      : step_fail(j, i, st, "returned %d, want %d", rc, st->want);
	case OP_LOADS:
		rc = (int)vdi_sstream_loads(w);
		return rc == st->want ? 0 : step_fail(j, i, st, "%d loads, want %d", rc, st->want);
	case OP_ERROR:
		rc = (int)vdi_sstream_error(w, NULL);
		return rc == st->want ? 0 : step_fail(j, i, st, "error %d, want %d", rc, st->want);
	}
	return step_fail(j, i, st, "bad step");
}

/* Server thread: runs the steps j->ctx on device j->dev (transfer size
 * j->tsize), stops at the first unexpected result, closes the stream
 * and the device. */
static void *srv_script(void *a)
{
	struct job *j = a;
	const struct step *st = j->ctx;
	uint8_t *buf = malloc(128 * KIB);
	uint64_t woff = 0, rng = j->seed;
	struct vdi_sstream *w;
	int rc;

	rc = vdi_sstream_open(j->r->pool, j->r->p.sd[j->dev], j->tsize, &w);
	if (rc || !buf) {
		job_fail(j, rc ? rc : VD_E_MEMORY);
		free(buf);
		return NULL;
	}
	for (unsigned i = 0; st[i].op != OP_END; i++)
		if (step_run(j, w, i, &st[i], &woff, buf, &rng))
			break;
	__atomic_store_n(&j->cmd_done, 1, __ATOMIC_SEQ_CST);
	j->close_rc = vdi_sstream_close(w);
	if (j->close_rc && !j->rc)
		job_fail(j, j->close_rc);
	if (j->close_device)
		vdi_server_close_device(j->r->p.sd[j->dev]);
	free(buf);
	return NULL;
}

/* The script ran through; the stream then ended with rc (0, or the
 * failure the case provokes). */
static void steps_ok(const struct job *j, int rc)
{
	ck_assert_msg(j->rc == rc && !strstr(j->err, "step "), "server: %s, want %s: %s",
	              vdi_strerror(j->rc), vdi_strerror(rc), j->err);
}

/* --- Client sides. */

/* A backup reader's result: the stream's bytes and where media ended. */
struct media_out {
	uint8_t *b;
	size_t len, cap;
	size_t ends[16];
	unsigned nends;
	uint32_t volume; /* vdi_cstream_volume at the end */
	int bad_ended;   /* volume_ended still 1 after next_volume */
};

/* Client thread: reads the whole stream (medium size j->total, 0: no
 * limit), moving to the next medium whenever one ends. */
static void *cli_media_reader(void *a)
{
	struct job *j = a;
	struct media_out *m = j->ctx;
	struct vdi_cstream *cs;
	uint64_t rng = j->seed;
	ssize_t k;
	int rc;

	rc = vdi_cstream_new(j->r->p.cd[j->dev], j->timeout, &cs);
	if (rc) {
		job_fail(j, rc);
		return NULL;
	}
	if (j->total && (rc = vdi_cstream_set_volume_size(cs, j->total)) != 0)
		job_fail(j, rc);
	while (!j->rc) {
		if (m->len == m->cap) {
			uint8_t *nb = realloc(m->b, m->cap * 2 + MIB);

			if (!nb) {
				job_fail(j, VD_E_MEMORY);
				break;
			}
			m->b = nb;
			m->cap = m->cap * 2 + MIB;
		}
		k = vdi_cstream_read(cs, m->b + m->len, chunk(&rng, j->maxchunk, m->cap - m->len));
		if (k > 0) {
			m->len += (size_t)k;
			continue;
		}
		if (k < 0 || !vdi_cstream_volume_ended(cs)) {
			if (k < 0)
				job_fail(j, (int)k);
			break;
		}
		if (m->nends < 16)
			m->ends[m->nends++] = m->len;
		if ((rc = vdi_cstream_next_volume(cs)) != 0)
			job_fail(j, rc);
		m->bad_ended |= vdi_cstream_volume_ended(cs);
	}
	m->volume = vdi_cstream_volume(cs);
	j->close_rc = vdi_cstream_close(cs, 1);
	return NULL;
}

/* A restore writer's input and result. */
struct media_in {
	const uint8_t *img;
	size_t len;
	size_t ends[16]; /* vdi_cstream_end_volume after these offsets */
	unsigned nends;
	uint32_t volume[17]; /* vdi_cstream_volume once each medium was written */
	const int *hold;     /* if set: wait for it (atomic) before the close */
	int write_rc;        /* first failure of write or end_volume */
	size_t written;
	char close_err[400];
};

/* Client thread: writes the image in odd sizes (headers split across
 * calls), ending each medium, then closes (ok=1). */
static void *cli_media_writer(void *a)
{
	struct job *j = a;
	struct media_in *m = j->ctx;
	struct vdi_cstream *cs;
	uint64_t rng = j->seed;
	size_t off = 0, end, n;
	unsigned turn = 0;
	ssize_t k;
	int rc;

	rc = vdi_cstream_new(j->r->p.cd[j->dev], j->timeout, &cs);
	if (rc) {
		job_fail(j, rc);
		return NULL;
	}
	for (unsigned v = 0; v <= m->nends && !m->write_rc; v++) {
		end = v < m->nends ? m->ends[v] : m->len;
		while (off < end) {
			n = turn++ % 3 ? 1 + (size_t)(rnd(&rng) % 11)
			               : chunk(&rng, j->maxchunk, MIB);
			k = vdi_cstream_write(cs, m->img + off, n < end - off ? n : end - off);
			if (k <= 0) {
				m->write_rc = k ? (int)k : VD_E_UNEXPECTED;
				break;
			}
			off += (size_t)k;
		}
		m->volume[v] = vdi_cstream_volume(cs);
		if (!m->write_rc && v < m->nends)
			m->write_rc = vdi_cstream_end_volume(cs);
	}
	if (m->write_rc)
		job_fail(j, m->write_rc);
	m->written = off;
	for (int i = 0; i < 1000 && m->hold && !__atomic_load_n(m->hold, __ATOMIC_SEQ_CST); i++)
		tl_sleep_ms(10);
	j->close_rc = vdi_cstream_close(cs, 1);
	if (j->close_rc)
		snprintf(m->close_err, sizeof(m->close_err), "%s", vdi_last_error());
	return NULL;
}

/* A one-device rig for the media cases, the server running steps and
 * the client job c (reader or writer) already set up by the caller. */
static void media_rig(struct rig *r, uint32_t dir, uint32_t features, uint32_t mts,
                      uint32_t buffers)
{
	struct tl_pair_opts o;

	rig_opts(&o, 1, dir, 512, mts, buffers);
	o.client_features = features;
	rig_up(r, &o, buffers, WAIT_MS);
}

/* The same without a stream pool: a raw server allocates the buffers. */
static void media_rig_raw(struct rig *r, uint32_t dir, uint32_t features, uint32_t mts,
                          uint32_t buffers)
{
	struct tl_pair_opts o;

	rig_opts(&o, 1, dir, 512, mts, buffers);
	o.client_features = features;
	rig_up(r, &o, 0, WAIT_MS);
}

static void media_run(struct job *s, struct job *c, void *(*cli)(void *))
{
	job_start(s, srv_script);
	job_start(c, cli);
	job_join(s);
	job_join(c);
}

/* --- 1. Tape backup: the stream is the AWS image, positions are block
 * addresses, and nothing moves back. */
#define TB_T  (96u * KIB)        /* a transfer: one record of two chunks */
#define TB_S1 (2 * TB_T + 1000u) /* section 1: records T, T, 1024 (padded) */
#define TB_S2 (64u * KIB + 1)    /* section 2: one record of 66048 bytes */

static const int32_t tb_recs[] = { TB_T, TB_T, 1024, TAPE_MARK, 66048, TAPE_MARK, TAPE_MARK, 0 };

static const struct step tb_steps[] = {
	S_CMD(VDC_Rewind, OK_), /* at the beginning: nothing moved */
	S_GETPOS(0),
	S_WRITE(TB_S1),
	S_DRAIN,
	S_GETPOS(3),
	S_CTL(VDC_SetPosition, 0, 0, NS_, ANY_POS), /* backwards */
	S_CTL(VDC_SetPosition, 0, 3, OK_, 3),       /* where it is */
	S_CTL(VDC_SetPosition, 0, 5, NS_, ANY_POS), /* a backup cannot skip ahead */
	S_CTL(VDC_SkipMarks, 1, 0, NS_, ANY_POS),   /* nor skip marks */
	S_CMD(VDC_Load, NS_),                       /* mid-medium */
	S_CMD(VDC_WriteMark, OK_),
	S_GETPOS(4),
	S_WRITE(TB_S2),
	S_DRAIN,
	S_GETPOS(5),
	S_CMD(VDC_WriteMark, OK_),
	S_CMD(VDC_WriteMark, OK_),
	S_GETPOS(7),
	S_CMD(VDC_Rewind, OK_), /* after data: the medium's use ends */
	S_GETPOS(0),
	S_CMD(VDC_WriteMark, NS_), /* nothing moves on it again */
	S_CTL(VDC_SetPosition, 0, 7, NS_, ANY_POS),
	S_CMD(VDC_Flush, OK_),
	S_LOADS(0),
	S_END,
};

START_TEST(test_tape_backup_image)
{
	uint8_t *src = ref_new(40, TB_S1 + TB_S2);
	size_t dlen = recs_bytes(tb_recs);
	uint8_t *data = calloc(1, dlen);
	struct media_out out = { .b = NULL };
	struct tape want;
	struct job s, c;
	struct rig r;

	/* what the server writes, padded as drain pads each section */
	memcpy(data, src, TB_S1);
	memcpy(data + 2 * TB_T + 1024, src + TB_S1, TB_S2);
	ck_assert_uint_eq(tape_make(&want, data, tb_recs, NULL, NULL), dlen);
	ck_assert_uint_eq(want.len, dlen + 10 * 6); /* 7 record chunks, 3 marks */
	media_rig(&r, VDF_WriteMedia, TAPE_F, 128 * KIB, 4);
	job_init(&s, &r, 0, src, 0, 41);
	s.tsize = TB_T;
	s.ctx = (void *)tb_steps;
	job_init(&c, &r, 0, NULL, 0, 42);
	c.maxchunk = 5000; /* reads end inside headers too */
	c.ctx = &out;
	media_run(&s, &c, cli_media_reader);
	JOB_OK(&s);
	JOB_OK(&c);
	ck_assert_int_eq(c.close_rc, 0);
	ck_assert_uint_eq(out.nends, 0);
	ck_assert_uint_eq(out.len, want.len);
	for (size_t i = 0; i < want.len; i++)
		ck_assert_msg(out.b[i] == want.b[i], "image byte %zu: 0x%02x, want 0x%02x", i,
		              out.b[i], want.b[i]);
	free(out.b);
	free(want.b);
	free(data);
	free(src);
	rig_finish_ok(&r);
}
END_TEST

/* --- 2. Tape restore: the image of test 1 read back by sections. */
static const struct step tr_steps[] = {
	S_GETPOS(0),
	S_CMD(VDC_Rewind, OK_), /* the writer may be ahead: still nothing moved */
	S_READ(0, 2 * TB_T + 1024, FM_),
	S_RESUME(VDC_ClearError, 0),
	S_GETPOS(4),
	S_CTL(VDC_SetPosition, 0, 4, OK_, 4),
	S_CTL(VDC_SetPosition, 0, 2, NS_, ANY_POS),         /* backwards */
	S_CTL(VDC_SkipMarks, 0xFFFFFFFFu, 0, NS_, ANY_POS), /* a negative count */
	S_CMD(VDC_Load, NS_),                               /* mid-medium */
	S_READ(2 * TB_T + 1024, 66048, FM_),
	S_RESUME(VDC_ClearError, 0),
	S_READ(2 * TB_T + 1024 + 66048, 0, FM_), /* the second mark */
	S_RESUME(VDC_ClearError, 0),
	S_GETPOS(7),
	S_READ(0, 0, EOF_),      /* the writer closed */
	S_RESUME(VDC_Rewind, 0), /* after data: the medium's use ends */
	S_GETPOS(0),
	S_CTL(VDC_SkipMarks, 1, 0, NS_, ANY_POS), /* nothing moves on it again */
	S_ERROR(NS_), /* the first refusal, kept for vdi_sstream_error */
	S_END,
};

/* The restore of an image of recs (data from seed) by the server steps;
 * the writer splits the image at the media ends TAPE_MEDIUM marks. */
static void tape_restore_case(const int32_t *recs, const struct step *steps, uint32_t features,
                              uint32_t tsize, uint64_t seed, int hold, struct job *s, struct job *c,
                              struct media_in *in, struct rig *r)
{
	size_t dlen = recs_bytes(recs);
	uint8_t *data = ref_new(seed, dlen);
	struct tape img;

	memset(in, 0, sizeof(*in));
	if (features & VDF_FileMarks) {
		tape_make(&img, data, recs, in->ends, &in->nends);
	} else { /* a pipe or disk: the bytes, media split at TAPE_MEDIUM */
		size_t off = 0;

		memset(&img, 0, sizeof(img));
		img.b = malloc(dlen + 1);
		memcpy(img.b, data, dlen);
		img.len = dlen;
		for (; *recs; recs++) {
			if (*recs == TAPE_MEDIUM)
				in->ends[in->nends++] = off;
			off += *recs > 0 ? (size_t)*recs : 0;
		}
	}
	in->img = img.b;
	in->len = img.len;
	media_rig(r, VDF_ReadMedia, features, 128 * KIB, 4);
	job_init(s, r, 0, data, dlen, seed + 1);
	s->tsize = tsize;
	s->ctx = (void *)steps;
	job_init(c, r, 0, NULL, 0, seed + 2);
	c->maxchunk = 70000;
	c->ctx = in;
	if (hold) /* the writer closes once the server's steps are done */
		in->hold = &s->cmd_done;
	media_run(s, c, cli_media_writer);
	free(data);
	free(img.b);
}

START_TEST(test_tape_restore_sections)
{
	struct media_in in;
	struct job s, c;
	struct rig r;

	tape_restore_case(tb_recs, tr_steps, TAPE_F, 0, 43, 0, &s, &c, &in, &r);
	JOB_OK(&s);
	JOB_OK(&c);
	ck_assert_int_eq(c.close_rc, 0);
	ck_assert_uint_eq(in.written, in.len);
	ck_assert_uint_eq(s.got, recs_bytes(tb_recs));
	rig_finish_ok(&r);
}
END_TEST

/* Positioning on a restore: SkipMarks over a whole section, SkipBlocks
 * stopping at a mark (which stays reported until ClearError),
 * SetPosition forward. */
#define TP_A1 100000
#define TP_B1 4096
#define TP_B2 65535
#define TP_B3 65536
#define TP_C  (1000 + 2000 + 3000 + 4000)
#define TP_D1 131072
#define TP_D2 7
#define TP_D3 9000

static const int32_t tp_recs[] = { TP_A1, 512,  TAPE_MARK, TP_B1,     TP_B2, TP_B3, TAPE_MARK, 1000,
	                           2000,  3000, 4000,      TAPE_MARK, TP_D1, TP_D2, TP_D3,     0 };

#define TP_OFF_B2 (TP_A1 + 512 + TP_B1)
#define TP_OFF_D3 (TP_OFF_B2 + TP_B2 + TP_B3 + TP_C + TP_D1 + TP_D2)

static const struct step tp_steps[] = {
	S_CTL(VDC_SkipMarks, 1, 0, OK_, ANY_POS), /* section A whole */
	S_GETPOS(3),
	S_CTL(VDC_SkipBlocks, 1, 0, OK_, ANY_POS), /* B1 */
	S_GETPOS(4),
	S_READ(TP_OFF_B2, TP_B2 + TP_B3, FM_),
	S_RESUME(VDC_ClearError, 0),
	S_GETPOS(7),
	S_CTL(VDC_SkipBlocks, 10, 0, FM_, ANY_POS), /* C1..C4, then the mark */
	S_GETPOS(12),
	S_READ(0, 0, FM_), /* sticky: still the mark */
	S_RESUME(VDC_ClearError, 0),
	S_CTL(VDC_SetPosition, 0, 14, OK_, 14), /* over D1, D2 */
	S_CTL(VDC_SetPosition, 0, 13, NS_, ANY_POS),
	S_CTL(VDC_SkipBlocks, 0xFFFFFFFFu, 0, NS_, ANY_POS),
	S_READ(TP_OFF_D3, TP_D3, EOF_),
	S_GETPOS(15),
	S_END,
};

START_TEST(test_tape_restore_positioning)
{
	struct media_in in;
	struct job s, c;
	struct rig r;

	tape_restore_case(tp_recs, tp_steps, TAPE_F, 0, 44, 0, &s, &c, &in, &r);
	JOB_OK(&s);
	JOB_OK(&c);
	ck_assert_int_eq(c.close_rc, 0);
	ck_assert_uint_eq(s.got, TP_B2 + TP_B3 + TP_D3);
	rig_finish_ok(&r);
}
END_TEST

/* --- A raw server in the test thread: commands sent one by one. */
static void raw_send(struct rig *r, struct tl_cmd *t, uint32_t code, uint32_t size, uint64_t pos,
                     uint8_t *buf)
{
	tl_cmd_init(t, code, size, pos, buf);
	TL_OK(vdi_server_send_command(r->p.sd[0], &t->cmd));
}

static void raw_expect(struct tl_cmd *t, uint32_t code, uint32_t bytes)
{
	TL_OK(tl_cmd_wait(t, WAIT_MS));
	ck_assert_msg(t->code == code && t->bytes == bytes,
	              "%s: completion %u with %u bytes, want %u with %u",
	              vdi_strcommand(t->cmd.commandCode), t->code, t->bytes, code, bytes);
}

/* Sends a command and checks its answer (and position unless ANY_POS). */
static void raw_do(struct rig *r, uint32_t code, uint32_t size, uint64_t pos, uint8_t *buf,
                   uint32_t want, uint32_t bytes, uint64_t want_pos)
{
	struct tl_cmd t;

	raw_send(r, &t, code, size, pos, buf);
	TL_OK(tl_cmd_wait(&t, WAIT_MS));
	ck_assert_msg(t.code == want && t.bytes == bytes,
	              "%s (size %u, position %llu): completion %u with %u bytes, want %u with %u",
	              vdi_strcommand(code), size, (unsigned long long)pos, t.code, t.bytes, want,
	              bytes);
	if (want_pos != ANY_POS)
		ck_assert_msg(t.out_position == want_pos, "%s: position %llu, want %llu",
		              vdi_strcommand(code), (unsigned long long)t.out_position,
		              (unsigned long long)want_pos);
}

static uint8_t *raw_buffer(struct rig *r)
{
	uint8_t *b;

	TL_OK(vdi_server_allocate_buffer(r->p.s, &b, r->p.o.max_transfer, 0));
	return b;
}

/* Every Read in flight behind a filemark gets ERROR_FILEMARK_DETECTED
 * and 0 bytes, and so does a later one, until VDC_ClearError. */
START_TEST(test_tape_filemark_sticky)
{
	static const int32_t recs[] = { 1000, TAPE_MARK, 2000, 0 };
	uint8_t *data = ref_new(45, 3000), *b[8];
	struct tl_cmd rd[4];
	struct media_in in;
	struct tape img;
	struct job c;
	struct rig r;

	media_rig_raw(&r, VDF_ReadMedia, TAPE_F, 64 * KIB, 8);
	for (int i = 0; i < 8; i++)
		b[i] = raw_buffer(&r);
	tape_make(&img, data, recs, NULL, NULL);
	memset(&in, 0, sizeof(in));
	in.img = img.b;
	in.len = img.len;
	for (int i = 0; i < 4; i++)
		raw_send(&r, &rd[i], VDC_Read, 64 * KIB, 0, b[i]);
	job_init(&c, &r, 0, NULL, 0, 46);
	c.ctx = &in;
	job_start(&c, cli_media_writer);
	raw_expect(&rd[0], ERROR_SUCCESS, 1000);
	ck_assert_int_eq(memcmp(b[0], data, 1000), 0);
	for (int i = 1; i < 4; i++)
		raw_expect(&rd[i], ERROR_FILEMARK_DETECTED, 0);
	raw_do(&r, VDC_GetPosition, 0, 0, NULL, ERROR_SUCCESS, 0, 2);
	raw_do(&r, VDC_Read, 64 * KIB, 0, b[4], ERROR_FILEMARK_DETECTED, 0, ANY_POS);
	raw_do(&r, VDC_ClearError, 0, 0, NULL, ERROR_SUCCESS, 0, ANY_POS);
	raw_do(&r, VDC_Read, 64 * KIB, 0, b[5], ERROR_SUCCESS, 2000, ANY_POS);
	ck_assert_int_eq(memcmp(b[5], data + 1000, 2000), 0);
	raw_do(&r, VDC_GetPosition, 0, 0, NULL, ERROR_SUCCESS, 0, 3);
	raw_do(&r, VDC_Read, 64 * KIB, 0, b[6], ERROR_HANDLE_EOF, 0, ANY_POS);
	TL_OK(vdi_server_close_device(r.p.sd[0]));
	job_join(&c);
	JOB_OK(&c);
	ck_assert_int_eq(c.close_rc, 0);
	free(img.b);
	free(data);
	rig_finish_ok(&r);
}
END_TEST

/* --- 3. Malformed images fail the client stream with the offset. */
struct bad_image {
	const char *what;
	int at_close;    /* found by close (truncation), not by write */
	const char *msg; /* in the client's message */
};

static const struct bad_image bad_images[] = {
	{ "bad previous length", 0,
	  "not a tape image at byte offset 518 (medium 0): chunk says the previous one had "
	  "100 bytes, it had 512" },
	{ "mark inside a record", 0, "not a tape image at byte offset 1006 (medium 0): filemark" },
	{ "truncated header at close", 1,
	  "tape image ends inside a chunk header at byte offset 521 (medium 0)" },
	{ "truncated record at close", 1,
	  "tape image ends inside a record at byte offset 506 (medium 0)" },
	{ "unknown flags", 0, "not a tape image at byte offset 0 (medium 0): chunk flags 0x81" },
	{ "chunk outside a record", 0,
	  "not a tape image at byte offset 0 (medium 0): chunk outside a record" },
};

static void bad_image_make(int i, struct tape *t, const uint8_t *data)
{
	memset(t, 0, sizeof(*t));
	switch (i) {
	case 0:
		tape_hdr(t, 512, 0, AWS_BOR | AWS_EOR);
		tape_put(t, data, 512);
		tape_hdr(t, 512, 100, AWS_BOR | AWS_EOR);
		tape_put(t, data, 512);
		break;
	case 1:
		tape_hdr(t, 1000, 0, AWS_BOR);
		tape_put(t, data, 1000);
		tape_hdr(t, 0, 1000, AWS_MARK);
		tape_put(t, data, 512); /* more: the next write reports it */
		break;
	case 2:
		tape_hdr(t, 512, 0, AWS_BOR | AWS_EOR);
		tape_put(t, data, 512);
		tape_put(t, "\0\2\0", 3);
		break;
	case 3:
		tape_hdr(t, 1000, 0, AWS_BOR | AWS_EOR);
		tape_put(t, data, 500);
		break;
	case 4:
		tape_hdr(t, 512, 0, AWS_BOR | 0x01);
		tape_put(t, data, 512);
		break;
	case 5:
		tape_hdr(t, 512, 0, AWS_EOR);
		tape_put(t, data, 512);
		break;
	}
}

START_TEST(test_tape_malformed)
{
	const struct bad_image *bi = &bad_images[_i];
	static const struct step steps[] = { S_READ(0, 512, VD_E_ABORT), S_END };
	uint8_t *data = ref_new(47, 1000);
	struct media_in in;
	struct tape img;
	struct job s, c;
	struct rig r;
	const char *got;

	bad_image_make(_i, &img, data);
	memset(&in, 0, sizeof(in));
	in.img = img.b;
	in.len = img.len;
	media_rig(&r, VDF_ReadMedia, TAPE_F, 64 * KIB, 4);
	job_init(&s, &r, 0, data, 1000, 48);
	s.ctx = (void *)steps;
	job_init(&c, &r, 0, NULL, 0, 49);
	c.ctx = &in;
	media_run(&s, &c, cli_media_writer);
	steps_ok(&s, VD_E_ABORT); /* the read failed: the client aborted the set */
	ck_assert_int_eq(c.close_rc, VD_E_PROTOCOL);
	if (bi->at_close) {
		ck_assert_int_eq(in.write_rc, 0);
		got = in.close_err;
	} else {
		ck_assert_int_eq(in.write_rc, VD_E_PROTOCOL);
		got = c.err;
	}
	ck_assert_msg(strstr(got, bi->msg), "%s: message '%s', want '%s'", bi->what, got, bi->msg);
	ck_assert_msg(strstr(got, r.p.dev[0]), "%s: message '%s' names no device", bi->what, got);
	free(img.b);
	free(data);
	rig_down(&r);
}
END_TEST

/* A block larger than the server's read: that Read completes with 234
 * (ERROR_MORE_DATA), the server's stream and the client's both fail. */
START_TEST(test_tape_block_larger_than_read)
{
	static const int32_t recs[] = { 4096, 96 * KIB, 0 };
	static const struct step steps[] = { S_READ(0, 4096, VD_E_IO_ERROR), S_ERROR(234), S_END };
	struct media_in in;
	struct job s, c;
	struct rig r;

	tape_restore_case(recs, steps, TAPE_F, 64 * KIB, 50, 1, &s, &c, &in, &r);
	steps_ok(&s, VD_E_IO_ERROR);
	ck_assert_int_eq(s.close_rc, VD_E_IO_ERROR);
	ck_assert_int_eq(in.write_rc, VD_E_PROTOCOL);
	/* named at the block's start: after the first record's 6 + 4096 bytes */
	ck_assert_msg(strstr(c.err, "the tape block at byte offset 4102 (medium 0) is larger than "
	                            "the server's read of 65536 bytes"),
	              "%s", c.err);
	ck_assert_int_eq(c.close_rc, VD_E_PROTOCOL);
	rig_down(&r);
}
END_TEST

/* --- 4. Removable backup: media of a few transfers. */
struct rm_case {
	const char *what;
	uint32_t features;
	uint64_t vol;   /* medium size */
	uint64_t total; /* bytes the server writes (transfers of 64 KiB) */
	uint32_t buffers;
};

#define RM_T (64u * KIB)
#define RM_R (RM_T + 12) /* a tape record of one transfer: two chunks */

static const struct rm_case rm_cases[] = {
	{ "pipe, media split mid-transfer", VDF_Removable, 3 * RM_T + 1000, 10 * RM_T + 300, 4 },
	{ "pipe, media of whole transfers", VDF_Removable, 2 * RM_T, 4 * RM_T + 300, 4 },
	{ "pipe, stream ends with a medium", VDF_Removable, 2 * RM_T, 4 * RM_T, 4 },
	{ "pipe, one buffer", VDF_Removable, 3 * RM_T + 1000, 7 * RM_T, 1 },
	{ "tape", TAPE_F, 3 * RM_R + 100, 10 * RM_T + 300, 4 },
	{ "tape, media of one record", TAPE_F, RM_R, 3 * RM_T, 3 },
};

START_TEST(test_removable_backup)
{
	const struct rm_case *rc = &rm_cases[_i];
	int tape = (rc->features & VDF_FileMarks) != 0;
	uint64_t padded = round_up(rc->total, 512);
	uint8_t *data = ref_new(51 + (uint64_t)_i, (size_t)padded);
	struct step steps[] = { S_WRITE(rc->total), S_DRAIN,       S_LOADS(0),
		                S_GETPOS(0),        S_CMD(0, OK_), S_END };
	struct media_out out = { .b = NULL };
	size_t ends[16];
	unsigned nends = 0;
	struct tape want;
	struct job s, c;
	struct rig r;

	memset(data + rc->total, 0, (size_t)(padded - rc->total));
	memset(&want, 0, sizeof(want));
	if (tape) { /* records never split: a medium holds what fits whole */
		int32_t recs[64];
		unsigned n = 0, per = 0;
		uint64_t left = padded;

		while (left) {
			uint32_t len = left < RM_T ? (uint32_t)left : RM_T;

			if ((per + 1) * (uint64_t)(len + 12) > rc->vol && per) {
				recs[n++] = TAPE_MEDIUM;
				per = 0;
			}
			recs[n++] = (int32_t)len;
			per++;
			left -= len;
		}
		recs[n] = 0;
		tape_make(&want, data, recs, ends, &nends);
		steps[3] = (struct step)S_GETPOS(per); /* positions restart on each medium */
		steps[4] = (struct step)S_CMD(VDC_WriteMark, OK_);
		tape_hdr(&want, 0, want.prev, AWS_MARK);
	} else { /* a medium holds whole blocks: the rest is re-issued */
		uint64_t room = rc->vol / 512 * 512;

		for (uint64_t e = room; e < padded; e += room)
			ends[nends++] = (size_t)e;
		want.b = malloc((size_t)padded);
		memcpy(want.b, data, (size_t)padded);
		want.len = (size_t)padded;
		steps[3] = (struct step)S_CMD(VDC_GetPosition, NS_);
		steps[4] = (struct step)S_CMD(VDC_Flush, OK_);
	}
	steps[2].want = (int)nends;
	media_rig(&r, VDF_WriteMedia, rc->features, RM_T, rc->buffers);
	job_init(&s, &r, 0, data, 0, 52);
	s.ctx = steps;
	job_init(&c, &r, 0, NULL, rc->vol, 53);
	c.maxchunk = 30000;
	c.ctx = &out;
	media_run(&s, &c, cli_media_reader);
	JOB_OK(&s);
	JOB_OK(&c);
	ck_assert_int_eq(c.close_rc, 0);
	ck_assert_int_eq(out.bad_ended, 0);
	ck_assert_uint_eq(out.nends, nends);
	for (unsigned i = 0; i < nends; i++)
		ck_assert_msg(out.ends[i] == ends[i], "%s: medium %u ends at %zu, want %zu",
		              rc->what, i, out.ends[i], ends[i]);
	ck_assert_uint_eq(out.volume, nends);
	ck_assert_uint_eq(out.len, want.len);
	ck_assert_msg(!memcmp(out.b, want.b, want.len), "%s: media differ from the stream",
	              rc->what);
	free(out.b);
	free(want.b);
	free(data);
	rig_finish_ok(&r);
}
END_TEST

/* Several Writes in flight at the end of a medium (raw server): the one
 * that does not fit gets ERROR_END_OF_MEDIA with the bytes that fit (a
 * tape record: 0), the ones queued behind it ERROR_END_OF_MEDIA and 0
 * bytes, VDC_Load starts the next medium and the rest follows on it. */
START_TEST(test_removable_eom_in_flight)
{
	int tape = _i;
	/* a pipe's medium holds whole blocks: RM_T + 512 */
	uint32_t vol = tape ? RM_R + 100 : RM_T + 1000, first = tape ? 0 : 512;
	uint8_t *ref = ref_new(54, 4 * RM_T), *got = malloc(4 * RM_T), *b[5];
	struct vdi_cstream *cs;
	struct tl_cmd wr[4], load, rest;
	struct rig r;
	size_t have = 0;
	ssize_t k;

	media_rig_raw(&r, VDF_WriteMedia, tape ? TAPE_F : VDF_Removable, RM_T, 8);
	TL_OK(vdi_cstream_new(r.p.cd[0], WAIT_MS, &cs));
	TL_OK(vdi_cstream_set_volume_size(cs, vol));
	for (int i = 0; i < 4; i++) {
		b[i] = raw_buffer(&r);
		memcpy(b[i], ref + (size_t)i * RM_T, RM_T);
		raw_send(&r, &wr[i], VDC_Write, RM_T, 0, b[i]);
	}
	while ((k = vdi_cstream_read(cs, got + have, 4 * RM_T - have)) > 0)
		have += (size_t)k;
	ck_assert_int_eq(k, 0);
	ck_assert_int_eq(vdi_cstream_volume_ended(cs), 1);
	ck_assert_uint_eq(vdi_cstream_volume(cs), 0);
	ck_assert_uint_eq(have, tape ? RM_R : RM_T + first);
	raw_expect(&wr[0], ERROR_SUCCESS, RM_T);
	raw_expect(&wr[1], ERROR_END_OF_MEDIA, first);
	ck_assert_int_eq(tl_cmd_calls(&wr[2]), 0); /* held until the reader moves on */
	TL_OK(vdi_cstream_next_volume(cs));
	ck_assert_int_eq(vdi_cstream_volume_ended(cs), 0);
	TL_RC(vdi_cstream_next_volume(cs), VD_E_PROTOCOL); /* once per end */
	raw_send(&r, &load, VDC_Load, 0, 0, NULL);
	memmove(b[1], b[1] + first, RM_T - first); /* a command names a whole buffer */
	raw_send(&r, &rest, VDC_Write, RM_T - first, 0, b[1]);
	have = 0;
	while (have < (tape ? RM_R : RM_T - first)) {
		k = vdi_cstream_read(cs, got + have, 4 * RM_T - have);
		ck_assert_int_gt(k, 0);
		have += (size_t)k;
	}
	raw_expect(&wr[2], ERROR_END_OF_MEDIA, 0);
	raw_expect(&wr[3], ERROR_END_OF_MEDIA, 0);
	raw_expect(&load, ERROR_SUCCESS, 0);
	raw_expect(&rest, ERROR_SUCCESS, RM_T - first);
	ck_assert_uint_eq(vdi_cstream_volume(cs), 1);
	if (tape) { /* the first record of the new medium: previous length 0 */
		struct tape want;
		int32_t recs[] = { RM_T, 0 };

		tape_make(&want, ref + RM_T, recs, NULL, NULL);
		ck_assert_uint_eq(have, want.len);
		ck_assert_int_eq(memcmp(got, want.b, want.len), 0);
		free(want.b);
	} else {
		ck_assert_int_eq(memcmp(got, ref + RM_T + first, RM_T - first), 0);
	}
	TL_OK(vdi_server_close_device(r.p.sd[0]));
	TL_OK(vdi_cstream_close(cs, 1));
	free(ref);
	free(got);
	rig_finish_ok(&r);
}
END_TEST

/* --- 5. Removable restore: the writer ends medium 0, the server loads
 * medium 1 and reads on. */
START_TEST(test_removable_restore)
{
	static const int32_t pipe_recs[] = { 100000, TAPE_MEDIUM, 150000, 0 };
	static const struct step pipe_steps[] = {
		S_READ(0, 100000, EOF_),
		S_RESUME(VDC_Load, 0),
		S_READ(100000, 150000, EOF_),
		S_LOADS(1),
		S_END,
	};
	static const int32_t tape_recs[] = { 70000, 512, TAPE_MEDIUM, 1024, 66000, TAPE_MARK, 0 };
	static const struct step tape_steps[] = {
		S_READ(0, 70512, EOF_),
		S_RESUME(VDC_Load, 0),
		S_GETPOS(0),            /* positions restart on each medium */
		S_CMD(VDC_Load, OK_),   /* an unused medium is loaded already */
		S_CMD(VDC_Rewind, OK_), /* and at its beginning */
		S_READ(70512, 1024 + 66000, FM_),
		S_RESUME(VDC_ClearError, 0),
		S_GETPOS(3),
		S_READ(0, 0, EOF_),
		S_LOADS(2),
		S_END,
	};
	int tape = _i;
	struct media_in in;
	struct job s, c;
	struct rig r;

	tape_restore_case(tape ? tape_recs : pipe_recs, tape ? tape_steps : pipe_steps,
	                  tape ? TAPE_F : VDF_Removable, 0, 55, 0, &s, &c, &in, &r);
	JOB_OK(&s);
	JOB_OK(&c);
	ck_assert_int_eq(c.close_rc, 0);
	ck_assert_uint_eq(in.nends, 1);
	ck_assert_uint_eq(in.written, in.len);
	ck_assert_uint_eq(in.volume[0], 0);
	ck_assert_uint_eq(in.volume[1], 1);
	rig_finish_ok(&r);
}
END_TEST

/* The server does not load the next medium but closes the device: the
 * writer's next bytes get VD_E_CLOSE. */
START_TEST(test_removable_restore_no_load)
{
	static const int32_t pipe_recs[] = { 100000, TAPE_MEDIUM, 5000, 0 };
	static const int32_t tape_recs[] = { 70000, TAPE_MEDIUM, 5000, 0 };
	static const struct step pipe_steps[] = { S_READ(0, 100000, EOF_), S_END };
	static const struct step tape_steps[] = { S_READ(0, 70000, EOF_), S_END };
	int tape = _i;
	struct media_in in;
	struct job s, c;
	struct rig r;

	tape_restore_case(tape ? tape_recs : pipe_recs, tape ? tape_steps : pipe_steps,
	                  tape ? TAPE_F : VDF_Removable, 0, 56, 0, &s, &c, &in, &r);
	JOB_OK(&s);
	ck_assert_msg(in.write_rc == VD_E_CLOSE, "write: %s: %s", vdi_strerror(in.write_rc), c.err);
	ck_assert_uint_eq(in.written, in.ends[0]);
	ck_assert_msg(strstr(c.err, "the server closed it"), "%s", c.err);
	rig_finish_ok(&r);
}
END_TEST

/* A disk's SetPosition moves the reads on across a VDC_Load too: disk
 * positions are offsets of the whole stream (D50). */
START_TEST(test_disk_setposition_then_load)
{
	static const int32_t recs[] = { 100000, TAPE_MEDIUM, 150000, 0 };
	static const struct step steps[] = {
		S_CTL(VDC_SetPosition, VDC_Beginning, 1000, OK_, 1000),
		S_READ(1000, 99000, EOF_),
		S_RESUME(VDC_Load, 0),
		S_READ(100000, 150000, EOF_),
		S_END,
	};
	struct media_in in;
	struct job s, c;
	struct rig r;

	tape_restore_case(recs, steps, VDF_RandomAccess | VDF_Removable, 0, 57, 0, &s, &c, &in, &r);
	JOB_OK(&s);
	JOB_OK(&c);
	rig_finish_ok(&r);
}
END_TEST

/* --- 6. Disk: positions are byte offsets. */
#define DK_T (64u * KIB)

static const struct step dk_steps[] = {
	S_GETPOS(0),
	S_WRITE(3 * DK_T + 100),
	S_DRAIN,
	S_GETPOS(3 * DK_T + 512),
	S_CTL(VDC_SetPosition, VDC_Beginning, 3 * DK_T + 512, OK_, 3 * DK_T + 512),
	S_CTL(VDC_SetPosition, VDC_Current, 0, OK_, 3 * DK_T + 512),
	S_CTL(VDC_SetPosition, VDC_End, 0, NS_, ANY_POS),
	S_CTL(VDC_SetPosition, VDC_Beginning, 0, NS_, ANY_POS), /* backwards */
	S_CTL(VDC_SetPosition, VDC_Current, 100, NS_, ANY_POS), /* a backup cannot skip */
	S_CMD(VDC_Rewind, NS_),                                 /* not offered */
	S_WRITE(1000),
	S_DRAIN,
	S_GETPOS(3 * DK_T + 512 + 1024),
	S_CMD(VDC_Flush, OK_),
	S_END,
};

START_TEST(test_disk_backup_positions)
{
	uint8_t *src = ref_new(57, 3 * DK_T + 1100), *want = calloc(1, 3 * DK_T + 1536);
	struct media_out out = { .b = NULL };
	struct job s, c;
	struct rig r;

	memcpy(want, src, 3 * DK_T + 100);
	memcpy(want + 3 * DK_T + 512, src + 3 * DK_T + 100, 1000);
	media_rig(&r, VDF_WriteMedia, VDF_RandomAccess, DK_T, 4);
	job_init(&s, &r, 0, src, 0, 58);
	s.ctx = (void *)dk_steps;
	job_init(&c, &r, 0, NULL, 0, 59);
	c.ctx = &out;
	media_run(&s, &c, cli_media_reader);
	JOB_OK(&s);
	JOB_OK(&c);
	ck_assert_uint_eq(out.len, 3 * DK_T + 1536);
	ck_assert_int_eq(memcmp(out.b, want, out.len), 0);
	free(out.b);
	free(want);
	free(src);
	rig_finish_ok(&r);
}
END_TEST

/* Restore (raw server): SetPosition(VDC_Current, n) skips n bytes of the
 * writer, a Read out of order is refused, nothing moves back. */
START_TEST(test_disk_restore_positions)
{
	const size_t total = 200000;
	uint8_t *data = ref_new(60, total), *b[6];
	struct media_in in;
	struct job c;
	struct rig r;

	media_rig_raw(&r, VDF_ReadMedia, VDF_RandomAccess, DK_T, 8);
	for (int i = 0; i < 6; i++)
		b[i] = raw_buffer(&r);
	memset(&in, 0, sizeof(in));
	in.img = data;
	in.len = total;
	job_init(&c, &r, 0, NULL, 0, 61);
	c.ctx = &in;
	job_start(&c, cli_media_writer);
	raw_do(&r, VDC_GetPosition, 0, 0, NULL, OK_, 0, 0);
	raw_do(&r, VDC_Read, DK_T, 0, b[0], OK_, DK_T, ANY_POS);
	ck_assert_int_eq(memcmp(b[0], data, DK_T), 0);
	raw_do(&r, VDC_SetPosition, VDC_Current, 1000, NULL, OK_, 0, DK_T + 1000);
	raw_do(&r, VDC_GetPosition, 0, 0, NULL, OK_, 0, DK_T + 1000);
	raw_do(&r, VDC_Read, DK_T, 0, b[1], NS_, 0, ANY_POS);     /* behind */
	raw_do(&r, VDC_Read, DK_T, 70000, b[1], NS_, 0, ANY_POS); /* ahead */
	raw_do(&r, VDC_SetPosition, VDC_Beginning, 70000, NULL, OK_, 0, 70000);
	raw_do(&r, VDC_SetPosition, VDC_Beginning, 100, NULL, NS_, 0, ANY_POS);
	raw_do(&r, VDC_SetPosition, VDC_End, 0, NULL, NS_, 0, ANY_POS);
	raw_do(&r, VDC_Read, DK_T, 70000, b[2], OK_, DK_T, ANY_POS);
	ck_assert_int_eq(memcmp(b[2], data + 70000, DK_T), 0);
	raw_do(&r, VDC_Read, DK_T, 70000 + DK_T, b[3], EOF_, (uint32_t)(total - 70000 - DK_T),
	       ANY_POS);
	ck_assert_int_eq(memcmp(b[3], data + 70000 + DK_T, total - 70000 - DK_T), 0);
	raw_do(&r, VDC_Read, DK_T, total, b[4], EOF_, 0, ANY_POS);
	raw_do(&r, VDC_GetPosition, 0, 0, NULL, OK_, 0, total);
	TL_OK(vdi_server_close_device(r.p.sd[0]));
	job_join(&c);
	JOB_OK(&c);
	ck_assert_int_eq(c.close_rc, 0);
	free(data);
	rig_finish_ok(&r);
}
END_TEST

/* --- 7. Every command code against every device type: what a client
 * that offers only what it answers (F31) completes a command with, at
 * the beginning of a medium (spec 5.1, 6.3, D50).  Columns: pipe,
 * pipe+removable, tape, disk. */
static const uint32_t table_features[4] = { 0, VDF_Removable, TAPE_F, VDF_RandomAccess };
static const char *const table_columns[4] = { "pipe", "pipe+removable", "tape", "disk" };

static const struct {
	uint32_t code;
	uint32_t backup[4], restore[4];
} cmd_table[] = {
	/* the data command of the other direction is not the stream's */
	{ VDC_Read, { NS_, NS_, NS_, NS_ }, { OK_, OK_, OK_, OK_ } },
	{ VDC_Write, { OK_, OK_, OK_, OK_ }, { NS_, NS_, NS_, NS_ } },
	{ VDC_ClearError, { OK_, OK_, OK_, OK_ }, { OK_, OK_, OK_, OK_ } },
	{ VDC_Rewind, { NS_, NS_, OK_, NS_ }, { NS_, NS_, OK_, NS_ } }, /* nothing moved */
	/* a filemark is written by a backup only */
	{ VDC_WriteMark, { NS_, NS_, OK_, NS_ }, { NS_, NS_, NS_, NS_ } },
	/* skipping moves over the writer's bytes: a restore only (D50) */
	{ VDC_SkipMarks, { NS_, NS_, NS_, NS_ }, { NS_, NS_, OK_, NS_ } },
	{ VDC_SkipBlocks, { NS_, NS_, NS_, NS_ }, { NS_, NS_, OK_, NS_ } },
	/* an unused medium is loaded: VDC_Load succeeds at its beginning */
	{ VDC_Load, { NS_, OK_, OK_, NS_ }, { NS_, OK_, OK_, NS_ } },
	{ VDC_GetPosition, { NS_, NS_, OK_, OK_ }, { NS_, NS_, OK_, OK_ } },
	{ VDC_SetPosition, { NS_, NS_, OK_, OK_ }, { NS_, NS_, OK_, OK_ } }, /* to where it is */
	{ VDC_Discard, { NS_, NS_, NS_, NS_ }, { NS_, NS_, NS_, NS_ } },     /* not offered */
	{ VDC_Flush, { OK_, OK_, OK_, OK_ }, { OK_, OK_, OK_, OK_ } },
	/* no snapshot handler, no frozen-file list, no Complete negotiated */
	{ VDC_Snapshot, { NS_, NS_, NS_, NS_ }, { NS_, NS_, NS_, NS_ } },
	{ VDC_MountSnapshot, { NS_, NS_, NS_, NS_ }, { NS_, NS_, NS_, NS_ } },
	{ VDC_PrepareToFreeze, { NS_, NS_, NS_, NS_ }, { NS_, NS_, NS_, NS_ } },
	{ VDC_FileInfoBegin, { NS_, NS_, NS_, NS_ }, { NS_, NS_, NS_, NS_ } },
	{ VDC_FileInfoEnd, { NS_, NS_, NS_, NS_ }, { NS_, NS_, NS_, NS_ } },
	{ VDC_GetError, { NS_, NS_, NS_, NS_ }, { NS_, NS_, NS_, NS_ } },
	{ VDC_Complete, { NS_, NS_, NS_, NS_ }, { NS_, NS_, NS_, NS_ } },
};

#define CMD_TABLE_N (sizeof(cmd_table) / sizeof(cmd_table[0]))

/* Order of sending: what moves the stream (WriteMark, then the data
 * commands, the stream's own last) after everything that needs the
 * beginning of the medium. */
static int table_rank(uint32_t code, int restore)
{
	if (code == VDC_WriteMark)
		return 1;
	if (code == VDC_Read || code == VDC_Write)
		return (code == VDC_Read) == restore ? 3 : 2;
	return 0;
}

START_TEST(test_command_table)
{
	int col = _i % 4, restore = _i / 4;
	uint32_t f = table_features[col];
	static const int32_t recs[] = { 512, 0 };
	uint8_t *data = ref_new(62, 512), *buf;
	struct media_out out = { .b = NULL };
	struct media_in in;
	struct tape img;
	struct job c;
	struct rig r;
	unsigned sent = 0;

	ck_assert_uint_eq(CMD_TABLE_N, 19);
	media_rig_raw(&r, restore ? VDF_ReadMedia : VDF_WriteMedia, f, 64 * KIB, 4);
	buf = raw_buffer(&r);
	memset(&img, 0, sizeof(img));
	if (f & VDF_FileMarks)
		tape_make(&img, data, recs, NULL, NULL);
	else
		tape_put(&img, data, 512);
	memset(&in, 0, sizeof(in));
	in.img = img.b;
	in.len = img.len;
	job_init(&c, &r, 0, NULL, 0, 63);
	c.ctx = restore ? (void *)&in : (void *)&out;
	job_start(&c, restore ? cli_media_writer : cli_media_reader);
	for (int rank = 0; rank < 4; rank++) {
		for (size_t i = 0; i < CMD_TABLE_N; i++) {
			uint32_t code = cmd_table[i].code;
			uint32_t want =
				restore ? cmd_table[i].restore[col] : cmd_table[i].backup[col];
			int data_cmd = code == VDC_Read || code == VDC_Write;
			struct tl_cmd t;

			if (table_rank(code, restore) != rank)
				continue;
			memcpy(buf, data, 512);
			raw_send(&r, &t, code, data_cmd ? 512 : 0, 0, data_cmd ? buf : NULL);
			TL_OK(tl_cmd_wait(&t, WAIT_MS));
			ck_assert_msg(t.code == want, "%s %s: %s completed with %s (%u), want %u",
			              table_columns[col], restore ? "restore" : "backup",
			              vdi_strcommand(code), vdi_strcompletion(t.code), t.code,
			              want);
			ck_assert_uint_eq(t.bytes, want == OK_ && data_cmd ? 512 : 0);
			if (code == VDC_Read && want == OK_)
				ck_assert_int_eq(memcmp(buf, data, 512), 0);
			sent++;
		}
	}
	ck_assert_uint_eq(sent, CMD_TABLE_N);
	TL_OK(vdi_server_close_device(r.p.sd[0]));
	job_join(&c);
	JOB_OK(&c);
	ck_assert_int_eq(c.close_rc, 0);
	if (!restore) { /* the stream: the record, and the filemark before it on a tape */
		struct tape want;
		static const int32_t mark_recs[] = { TAPE_MARK, 512, 0 };

		memset(&want, 0, sizeof(want));
		if (f & VDF_FileMarks)
			tape_make(&want, data, mark_recs, NULL, NULL);
		else
			tape_put(&want, data, 512);
		ck_assert_uint_eq(out.len, want.len);
		ck_assert_int_eq(memcmp(out.b, want.b, want.len), 0);
		free(want.b);
	}
	free(out.b);
	free(img.b);
	free(data);
	rig_finish_ok(&r);
}
END_TEST

/* --- 8. The server adapter: a Read sent behind an end that carries
 * bytes fails the stream, whether the server resumes or closes, and
 * whatever code the Read completed with (_i: bit 0 resume, bit 1 the
 * Read behind says ERROR_HANDLE_EOF instead of ERROR_SUCCESS). */
static void *srv_read_to_end(void *a)
{
	struct job *j = a;
	struct vdi_sstream *r;
	uint8_t buf[4096];
	ssize_t k;
	int rc = vdi_sstream_open(j->r->pool, j->r->p.sd[0], 0, &r);

	if (rc) {
		job_fail(j, rc);
		__atomic_store_n(&j->cmd_done, 1, __ATOMIC_SEQ_CST);
		return NULL;
	}
	while ((k = vdi_sstream_read(r, buf, sizeof(buf))) > 0)
		j->got += (uint64_t)k;
	j->codes[0] = (int)k;
	j->codes[1] = (int)vdi_sstream_end_code(r);
	__atomic_store_n(&j->cmd_done, 1, __ATOMIC_SEQ_CST);
	if (j->mode) {
		j->cmd_rc = vdi_sstream_resume(r, 0);
		snprintf(j->err, sizeof(j->err), "%s", vdi_last_error());
		j->ecode = vdi_sstream_error(r, &j->eoff);
	}
	j->close_rc = vdi_sstream_close(r);
	if (!j->mode)
		snprintf(j->err, sizeof(j->err), "%s", vdi_last_error());
	vdi_server_close_device(j->r->p.sd[0]);
	return NULL;
}

START_TEST(test_read_behind_end_with_bytes)
{
	uint8_t *ref = ref_new(64, 64 * KIB);
	struct tl_pair_opts o;
	VDC_Command *r1, *r2, *cmd;
	struct job s;
	struct rig r;
	int rc;

	rig_opts(&o, 1, VDF_ReadMedia, 512, 64 * KIB, 2);
	rig_up(&r, &o, 2, WAIT_MS); /* a share of 2: exactly two Reads in flight */
	job_init(&s, &r, 0, ref, 100, 65);
	s.mode = _i & 1; /* 0: close after the end; 1: resume */
	job_start(&s, srv_read_to_end);
	TL_OK(vdi_client_get_command(r.p.cd[0], WAIT_MS, &r1));
	TL_OK(vdi_client_get_command(r.p.cd[0], WAIT_MS, &r2));
	ck_assert_int_eq(r1->commandCode, VDC_Read);
	ck_assert_int_eq(r2->commandCode, VDC_Read);
	memcpy(r1->buffer, ref, 100);
	TL_OK(vdi_client_complete_command(r.p.cd[0], r1, ERROR_HANDLE_EOF, 100, 0));
	for (int i = 0; i < 1000 && !__atomic_load_n(&s.cmd_done, __ATOMIC_SEQ_CST); i++)
		tl_sleep_ms(10);
	ck_assert_int_eq(__atomic_load_n(&s.cmd_done, __ATOMIC_SEQ_CST), 1);
	/* the server read to the end; now the Read behind it brings bytes */
	memcpy(r2->buffer, ref, (size_t)r2->size);
	TL_OK(vdi_client_complete_command(
		r.p.cd[0], r2, (_i & 2) ? ERROR_HANDLE_EOF : ERROR_SUCCESS, (uint32_t)r2->size, 0));
	while ((rc = vdi_client_get_command(r.p.cd[0], WAIT_MS, &cmd)) == 0)
		TL_OK(vdi_client_complete_command(r.p.cd[0], cmd, ERROR_HANDLE_EOF, 0, 0));
	ck_assert_int_eq(rc, VD_E_CLOSE);
	job_join(&s);
	ck_assert_uint_eq(s.got, 100);
	ck_assert_int_eq(s.codes[0], 0);
	ck_assert_int_eq(s.codes[1], ERROR_HANDLE_EOF);
	if (s.mode) {
		ck_assert_int_eq(s.cmd_rc, VD_E_IO_ERROR);
		ck_assert_uint_eq(s.ecode, 13); /* ERROR_INVALID_DATA */
		ck_assert_uint_eq(s.eoff, 100);
	}
	ck_assert_int_eq(s.close_rc, VD_E_IO_ERROR);
	ck_assert_msg(strstr(s.err, "VDC_Read at byte offset 100"), "%s", s.err);
	free(ref);
	rig_finish_ok(&r);
}
END_TEST

/* What a client stream answers, as front ends ask it (F31, D50). */
START_TEST(test_feature_words_and_masks)
{
	static const struct {
		const char *word;
		int kind;
		uint32_t bits;
	} words[] = {
		{ "pipe", 1, 0 },
		{ "tape", 1, VDF_LikeTape },
		{ "disk", 1, VDF_LikeDisk },
		{ "removable", 0, VDF_Removable },
		{ "discard", 0, VDF_Discard },
		{ "complete", 0, VDF_RequestComplete },
		{ "request-complete", 0, VDF_RequestComplete },
		{ "reverse", -1, 0 },
		{ "tap", -1, 0 },
		{ "", -1, 0 },
	};
	static const struct {
		uint32_t f;
		const char *type; /* NULL: refused */
	} masks[] = {
		{ 0, "pipe" },
		{ VDF_Removable | VDF_Discard | VDF_RequestComplete, "pipe" },
		{ VDF_LikeTape, "tape" },
		{ VDF_LikeTape | VDF_SnapshotPrepare | VDF_EnumFrozenFiles, "tape" },
		{ VDF_LikeDisk | VDF_Removable, "disk" },
		{ VDF_LikeTape & ~VDF_ReversePosition, NULL },
		{ VDF_LikeTape & ~VDF_Removable, NULL },
		{ VDF_FileMarks, NULL },
		{ VDF_LikeTape | VDF_RandomAccess, NULL },
		{ VDF_VSSWriter, NULL },
		{ VDF_WriteMedia, NULL },
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		uint32_t bits = 0;

		ck_assert_int_eq(
			vdi_cstream_feature_word(words[i].word, strlen(words[i].word), &bits),
			words[i].kind);
		ck_assert_uint_eq(bits, words[i].bits);
	}
	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		int rc = vdi_cstream_check_features(masks[i].f);

		ck_assert_msg(masks[i].type ? rc == 0 : rc == VD_E_NOTSUPPORTED,
		              "features 0x%x: %s (%s)", masks[i].f, vdi_strerror(rc),
		              vdi_last_error());
		if (masks[i].type)
			ck_assert_str_eq(vdi_cstream_device_type(masks[i].f), masks[i].type);
	}
	ck_assert_ptr_null(vdi_cstream_device_type(VDF_FileMarks));
}
END_TEST

/* A removable backup's Write answered ERROR_SUCCESS with fewer bytes is
 * re-issued for the rest (issue 12); one that stored none would be
 * re-issued forever, so it fails the stream instead. */
static void *srv_write_drain(void *a)
{
	struct job *j = a;
	struct vdi_sstream *w;
	int rc = vdi_sstream_open(j->r->pool, j->r->p.sd[0], 0, &w);

	if (rc) {
		job_fail(j, rc);
		return NULL;
	}
	j->codes[0] = (int)vdi_sstream_write(w, j->ref, (size_t)j->total);
	j->cmd_rc = vdi_sstream_drain(w);
	snprintf(j->err, sizeof(j->err), "%s", vdi_last_error());
	j->ecode = vdi_sstream_error(w, &j->eoff);
	j->close_rc = vdi_sstream_close(w);
	vdi_server_close_device(j->r->p.sd[0]);
	return NULL;
}

START_TEST(test_removable_short_success)
{
	uint8_t *ref = ref_new(66, 64 * KIB);
	struct tl_pair_opts o;
	VDC_Command *cmd;
	struct job s;
	struct rig r;
	int rc;

	rig_opts(&o, 1, VDF_WriteMedia, 512, 64 * KIB, 2);
	o.client_features = VDF_Removable;
	rig_up(&r, &o, 2, WAIT_MS);
	job_init(&s, &r, 0, ref, 64 * KIB, 67);
	job_start(&s, srv_write_drain);
	TL_OK(vdi_client_get_command(r.p.cd[0], WAIT_MS, &cmd));
	ck_assert_int_eq(cmd->commandCode, VDC_Write);
	ck_assert_int_eq(cmd->size, 64 * KIB);
	TL_OK(vdi_client_complete_command(r.p.cd[0], cmd, ERROR_SUCCESS, 4096, 0));
	/* the rest comes again, at its position, from the start of the buffer */
	TL_OK(vdi_client_get_command(r.p.cd[0], WAIT_MS, &cmd));
	ck_assert_int_eq(cmd->commandCode, VDC_Write);
	ck_assert_int_eq(cmd->size, 64 * KIB - 4096);
	ck_assert_int_eq(cmd->position, 4096);
	ck_assert_int_eq(memcmp(cmd->buffer, ref + 4096, 64 * KIB - 4096), 0);
	TL_OK(vdi_client_complete_command(r.p.cd[0], cmd, ERROR_SUCCESS, 0, 0)); /* stores none */
	/* no third try: the stream failed; the server closes */
	while ((rc = vdi_client_get_command(r.p.cd[0], WAIT_MS, &cmd)) == 0) {
		ck_assert_int_ne(cmd->commandCode, VDC_Write);
		TL_OK(vdi_client_complete_command(r.p.cd[0], cmd, ERROR_SUCCESS, 0, 0));
	}
	ck_assert_int_eq(rc, VD_E_CLOSE);
	job_join(&s);
	ck_assert_int_eq(s.cmd_rc, VD_E_IO_ERROR);
	ck_assert_msg(strstr(s.err, "VDC_Write at byte offset 4096 moved 0 of 61440 bytes"), "%s",
	              s.err);
	ck_assert_uint_eq(s.eoff, 4096);
	free(ref);
	rig_finish_ok(&r);
}
END_TEST

/* ---------------------------------------------------------------------
 * Client in another process.
 */
struct xflow {
	char name[TL_NAME_MAX];
	uint32_t devices, dir;
	uint64_t total;
	int kill_after; /* child: SIGKILL itself after this many bytes (0 no) */
};

static void xdev_name(const struct xflow *x, uint32_t i, char *buf, size_t n)
{
	if (i)
		snprintf(buf, n, "%.60s-%u", x->name, i % 100);
	else
		snprintf(buf, n, "%s", x->name);
}

struct xjob {
	const struct xflow *x;
	struct vdi_client_device *d;
	uint32_t i;
	int rc;
};

static void *child_dev(void *a)
{
	struct xjob *xj = a;
	const struct xflow *x = xj->x;
	uint64_t total = x->total + xj->i * 8192, off = 0, rng = xj->i + 50;
	size_t cap = (total + 15) & ~(size_t)7;
	uint8_t *ref = malloc(cap), *buf = malloc(MIB);
	struct vdi_cstream *cs;
	uint64_t s = 200 + xj->i, v;
	ssize_t k;

	for (size_t i = 0; i + 8 <= cap; i += 8) {
		v = rnd(&s);
		memcpy(ref + i, &v, 8);
	}
	xj->rc = vdi_cstream_new(xj->d, WAIT_MS, &cs);
	while (!xj->rc) {
		size_t n = chunk(&rng, MIB, x->dir == VDF_ReadMedia ? total - off : MIB);

		if (x->kill_after && off >= (uint64_t)x->kill_after)
			kill(getpid(), SIGKILL);
		if (x->dir == VDF_ReadMedia) {
			if (!n)
				break;
			k = vdi_cstream_write(cs, ref + off, n);
		} else {
			k = vdi_cstream_read(cs, buf, n);
			if (k > 0 && memcmp(buf, ref + off, (size_t)k))
				xj->rc = VD_E_UNEXPECTED; /* wrong data */
		}
		if (k <= 0) {
			xj->rc = (int)k;
			break;
		}
		off += (uint64_t)k;
	}
	if (!xj->rc && x->dir == VDF_WriteMedia && off != total)
		xj->rc = VD_E_UNEXPECTED;
	if (!xj->rc)
		xj->rc = vdi_cstream_close(cs, 1);
	free(ref);
	free(buf);
	return NULL;
}

/* The child: a client process streaming every device. */
static int child_main(const struct xflow *x)
{
	struct vdi_client *c;
	struct xjob xj[4];
	pthread_t th[4];
	VDConfig cfg;
	char dn[TL_NAME_MAX + 8];
	int rc;

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = x->devices;
	if (vdi_client_new(&c) || vdi_client_create(c, x->name, &cfg))
		return 10;
	if (vdi_client_get_configuration(c, WAIT_MS, &cfg))
		return 11;
	for (uint32_t i = 0; i < x->devices; i++) {
		xdev_name(x, i, dn, sizeof(dn));
		xj[i] = (struct xjob){ .x = x, .i = i };
		if (vdi_client_open_device(c, dn, &xj[i].d))
			return 12;
		pthread_create(&th[i], NULL, child_dev, &xj[i]);
	}
	rc = 0;
	for (uint32_t i = 0; i < x->devices; i++) {
		pthread_join(th[i], NULL);
		if (xj[i].rc && !rc) {
			fprintf(stderr, "child device %u: %s: %s\n", i, vdi_strerror(xj[i].rc),
			        vdi_last_error());
			rc = 20 + (int)i;
		}
	}
	if (vdi_client_close(c) && !rc)
		rc = 30;
	vdi_client_free(c);
	return rc;
}

static pid_t child_start(const struct xflow *x)
{
	pid_t parent = getpid(), pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(3);
		alarm(60);
		_exit(child_main(x));
	}
	return pid;
}

/* Exit status of the child (waits at most ms, then kills it): 0 ok. */
static int child_wait(pid_t pid, uint32_t ms)
{
	uint64_t end = tl_now_ms() + ms;
	int st = 0;

	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (tl_now_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		tl_sleep_ms(5);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Server side in this process: configure, stream, close. */
static void parent_server(const struct xflow *x, struct job *jobs)
{
	struct rig r;
	uint8_t *ref[4];

	memset(&r, 0, sizeof(r));
	TL_OK(tl_pair_init(&r.p, NULL));
	r.p.o.devices = x->devices;
	r.p.o.timeout_ms = WAIT_MS;
	snprintf(r.p.name, sizeof(r.p.name), "%s", x->name);
	r.p.phase = TL_CREATED; /* the child created the set */
	TL_OK(vdi_server_open_wait(r.p.s, NULL, x->name, WAIT_MS));
	r.p.phase = TL_CONNECTED;
	TL_OK(vdi_server_begin_configuration(r.p.s, x->dir, 4096, 0, MIB, 0));
	TL_OK(vdi_server_request_buffers(r.p.s, MIB, 0, 6));
	TL_OK(vdi_server_end_configuration(r.p.s));
	r.p.phase = TL_ENDED;
	for (uint32_t i = 0; i < x->devices; i++) {
		xdev_name(x, i, r.p.dev[i], sizeof(r.p.dev[i]));
		TL_OK(vdi_server_open_device(r.p.s, r.p.dev[i], &r.p.sd[i]));
	}
	TL_OK(tl_agent_start(&r.p.agent, r.p.s));
	r.p.phase = TL_SERVER_OPEN;
	TL_OK(vdi_sstream_pool_new(r.p.s, 6, WAIT_MS, &r.pool));
	for (uint32_t i = 0; i < x->devices; i++) {
		uint64_t total = x->total + i * 8192;

		ref[i] = ref_new(200 + i, (size_t)total);
		job_init(&jobs[i], &r, i, ref[i], total, 60 + i);
		jobs[i].maxchunk = 700000;
		job_start(&jobs[i], x->dir == VDF_WriteMedia ? srv_writer : srv_reader);
	}
	for (uint32_t i = 0; i < x->devices; i++) {
		job_join(&jobs[i]);
		jobs[i].ref = NULL;
		free(ref[i]);
	}
	if (!x->kill_after) {
		TL_OK(tl_agent_join(&r.p.agent, WAIT_MS));
		TL_OK(r.p.agent.rc);
	}
	rig_down(&r);
}

START_TEST(test_fork_flow)
{
	/* 0: backup 2 devices; 1: restore 1; 2: restore 2; 3, 4: 4 devices
	 * of 32 MiB sharing 6 buffers, backup and restore. */
	static const uint32_t devs[] = { 2, 1, 2, 4, 4 };
	struct xflow x = { .devices = devs[_i],
		           .dir = _i && _i != 3 ? VDF_ReadMedia : VDF_WriteMedia,
		           .total = (_i >= 3 ? 32 * MIB : 9 * MIB) + 3 * 4096 };
	struct job jobs[4];
	pid_t pid;
	int rc;

	tl_name(x.name);
	pid = child_start(&x);
	parent_server(&x, jobs);
	rc = child_wait(pid, WAIT_MS);
	for (uint32_t i = 0; i < x.devices; i++) {
		JOB_OK(&jobs[i]);
		ck_assert_int_eq(jobs[i].close_rc, 0);
		ck_assert_int_eq(jobs[i].bad, -1);
		ck_assert_uint_eq(jobs[i].got, jobs[i].total);
	}
	ck_assert_int_eq(rc, 0);
}
END_TEST

/* A client process killed mid-stream: the server's stream fails with
 * VD_E_ABORT (peer death), it does not hang. */
START_TEST(test_fork_client_killed)
{
	struct xflow x = { .devices = 1,
		           .dir = _i ? VDF_ReadMedia : VDF_WriteMedia,
		           .total = 64 * MIB,
		           .kill_after = 3 * MIB };
	struct job jobs[4];
	pid_t pid;

	tl_name(x.name);
	pid = child_start(&x);
	parent_server(&x, jobs);
	ck_assert_int_eq(child_wait(pid, WAIT_MS), 128 + SIGKILL);
	ck_assert_int_eq(jobs[0].rc, VD_E_ABORT);
	ck_assert_int_eq(jobs[0].bad, -1);
	ck_assert_uint_lt(jobs[0].got, jobs[0].total);
}
END_TEST

/* ---------------------------------------------------------------------
 * Arguments.
 */
START_TEST(test_null_arguments)
{
	struct vdi_cstream *cs = (void *)1;
	struct vdi_sstream_pool *p = (void *)1;
	struct vdi_sstream *w = (void *)1;
	const void *cp;

	TL_RC(vdi_cstream_new(NULL, 0, &cs), VD_E_INVALID);
	ck_assert_ptr_null(cs);
	TL_RC(vdi_cstream_new(NULL, 0, NULL), VD_E_INVALID);
	TL_RC((int)vdi_cstream_read(NULL, &cp, 1), VD_E_INVALID);
	TL_RC((int)vdi_cstream_peek(NULL, &cp, 1), VD_E_INVALID);
	TL_RC(vdi_cstream_close(NULL, 1), VD_E_INVALID);
	ck_assert_uint_eq(vdi_cstream_bytes(NULL), 0);
	TL_RC(vdi_sstream_pool_new(NULL, 4, 0, &p), VD_E_INVALID);
	ck_assert_ptr_null(p);
	TL_RC(vdi_sstream_open(NULL, NULL, 0, &w), VD_E_INVALID);
	ck_assert_ptr_null(w);
	TL_RC((int)vdi_sstream_write(NULL, &cp, 1), VD_E_INVALID);
	TL_RC(vdi_sstream_close(NULL), VD_E_INVALID);
	ck_assert_uint_eq(vdi_sstream_error(NULL, NULL), 0);
	vdi_sstream_pool_free(NULL);
}
END_TEST

static Suite *stream_suite(void)
{
	Suite *s = suite_create("stream");
	TCase *tc;

	tc = tcase_create("flow");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_backup_flow, 0,
	                    (int)(sizeof(flow_cases) / sizeof(flow_cases[0])));
	tcase_add_loop_test(tc, test_restore_flow, 0,
	                    (int)(sizeof(flow_cases) / sizeof(flow_cases[0])));
	tcase_add_test(tc, test_peek_points_into_buffers);
	tcase_add_test(tc, test_peek_nowait);
	tcase_add_test(tc, test_reserve_nowait);
	tcase_add_test(tc, test_reserve_commit);
	tcase_add_test(tc, test_reserve_points_into_buffers);
	suite_add_tcase(s, tc);

	tc = tcase_create("commands");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_flush_waits_for_data);
	tcase_add_test(tc, test_complete_pending_until_close);
	tcase_add_test(tc, test_end_acknowledges_complete);
	tcase_add_test(tc, test_restore_share_counts_devices);
	tcase_add_test(tc, test_end_after_abort_fails);
	tcase_add_test(tc, test_close_at_exact_end);
	tcase_add_test(tc, test_complete_aborted_by_reader);
	tcase_add_test(tc, test_unsupported_commands);
	tcase_add_test(tc, test_discard_when_offered);
	tcase_add_test(tc, test_snapshot_commands_reach_handler);
	tcase_add_test(tc, test_snapshot_refused_by_handler);
	tcase_add_test(tc, test_frozen_files_listed);
	tcase_add_test(tc, test_frozen_files_not_offered);
	tcase_add_test(tc, test_mount_snapshot_at_close);
	tcase_add_test(tc, test_snapshot_command_runs);
	tcase_add_test(tc, test_snapshot_command_fails);
	tcase_add_test(tc, test_snapshot_command_killed_by_abort);
	tcase_add_test(tc, test_wrong_direction);
	tcase_add_test(tc, test_close_without_drain);
	tcase_add_test(tc, test_null_arguments);
	suite_add_tcase(s, tc);

	tc = tcase_create("failures");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_client_write_error);
	tcase_add_test(tc, test_client_read_error);
	tcase_add_test(tc, test_restore_no_data_detected);
	tcase_add_test(tc, test_close_before_end_aborts);
	tcase_add_loop_test(tc, test_server_abort_wakes_client, 0, 2);
	tcase_add_loop_test(tc, test_client_abort_wakes_server, 0, 2);
	tcase_add_test(tc, test_abort_wakes_idle_waiter);
	tcase_add_loop_test(tc, test_client_timeout, 0, 2);
	tcase_add_loop_test(tc, test_server_timeout, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("media");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_tape_backup_image);
	tcase_add_test(tc, test_tape_restore_sections);
	tcase_add_test(tc, test_tape_restore_positioning);
	tcase_add_test(tc, test_tape_filemark_sticky);
	tcase_add_loop_test(tc, test_tape_malformed, 0,
	                    (int)(sizeof(bad_images) / sizeof(bad_images[0])));
	tcase_add_test(tc, test_tape_block_larger_than_read);
	tcase_add_loop_test(tc, test_removable_backup, 0,
	                    (int)(sizeof(rm_cases) / sizeof(rm_cases[0])));
	tcase_add_loop_test(tc, test_removable_eom_in_flight, 0, 2);
	tcase_add_loop_test(tc, test_removable_restore, 0, 2);
	tcase_add_test(tc, test_disk_setposition_then_load);
	tcase_add_loop_test(tc, test_removable_restore_no_load, 0, 2);
	tcase_add_test(tc, test_disk_backup_positions);
	tcase_add_test(tc, test_disk_restore_positions);
	tcase_add_loop_test(tc, test_command_table, 0, 8);
	tcase_add_loop_test(tc, test_read_behind_end_with_bytes, 0, 4);
	tcase_add_test(tc, test_removable_short_success);
	tcase_add_test(tc, test_feature_words_and_masks);
	suite_add_tcase(s, tc);

	tc = tcase_create("fork");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_fork_flow, 0, 5);
	tcase_add_loop_test(tc, test_fork_client_killed, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tl_run_suite(stream_suite());
}
