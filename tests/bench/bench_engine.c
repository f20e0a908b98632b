/* SPDX-License-Identifier: MIT */
/*
 * bench_engine.c - throughput of the libvdi engine (issue 2), one run.
 *
 * Engine only: the server (this process) sends VDC_Write commands through
 * vdi_server_send_command, re-sending each one from its completion
 * routine on the agent thread; the client (a forked process) fetches each
 * command, copies its bytes out once into a private buffer (memcpy) and
 * completes it.  For MAXTRANSFERSIZE 64 KiB, 1 MiB and 4 MiB with 1 and 4
 * devices it prints MiB/s, commands/s, and the ratio to a plain
 * single-thread memcpy of the same bytes, in the same chunk size and over
 * the same buffer footprint, measured in this run.  Then commands/s at
 * 64 KiB with no copy (the engine's per-command cost alone) and the stream
 * adapter (sstream_write -> cstream_read: one copy in, one copy out).
 *
 * Usage: bench_engine [scale]   (scale multiplies the bytes moved; 1 by
 * default, which keeps the whole run well under 60 s).  A benchmark, not a
 * test: it prints the goals beside the numbers and exits 0 unless a run
 * failed.  Every wait is bounded; the child dies with the parent.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"
#include "vdi.h"

#define KIB       1024u
#define MIB       (1024u * 1024u)
#define MAX_DEPTH 64     /* buffers per device at most */
#define WAIT_MS   30000u /* bound of every wait */
#define MAX_DEV   4

static double scale = 1.0;

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench_engine: %s failed: %s (%s)\n", what, vdi_strerror(rc),
	        vdi_last_error());
	tl_shm_cleanup_run();
	exit(1);
}

#define CALL(expr)                       \
	do {                             \
		int rc_ = (expr);        \
		if (rc_)                 \
			die(#expr, rc_); \
	} while (0)

/* Buffers per device (BUFFERCOUNT / devices): 2 MiB of buffers per device,
 * 4 to 32 of them.  Small transfers need many in flight to hide the
 * wake-up latency of each side (64 KiB: 32); big ones do best with few
 * (measured on a 2-core VM: 4 beat 8 and 16 at 1 MiB).  BENCH_DEPTH in
 * the environment overrides it. */
static uint32_t depth_for(uint32_t mts)
{
	const char *env = getenv("BENCH_DEPTH");
	uint32_t d = 2 * MIB / mts;

	if (env && atoi(env) > 0)
		d = (uint32_t)atoi(env);
	return d < 4 ? 4 : d > 32 ? 32 : d;
}

/* ---------------------------------------------------------------------
 * memcpy baseline.
 */
static volatile uint8_t sink;

static double memcpy_mibs(uint32_t chunk, uint32_t nsrc, uint64_t bytes)
{
	uint8_t *src = aligned_alloc(4096, (size_t)chunk * nsrc);
	uint8_t *dst = aligned_alloc(4096, chunk);
	uint64_t t, done, i = 0;

	if (!src || !dst)
		die("aligned_alloc", VD_E_MEMORY);
	memset(src, 0x5a, (size_t)chunk * nsrc);
	memset(dst, 0, chunk);
	for (i = 0; i < nsrc; i++) /* warm up */
		memcpy(dst, src + i * chunk, chunk);
	t = now_us();
	for (done = 0; done < bytes; done += chunk, i++) {
		memcpy(dst, src + (i % nsrc) * chunk, chunk);
		__asm__ volatile("" ::"r"(dst) : "memory");
	}
	t = now_us() - t;
	sink = dst[chunk - 1];
	free(src);
	free(dst);
	return (double)bytes / MIB / ((double)(t ? t : 1) / 1e6);
}

/* ---------------------------------------------------------------------
 * The client process.
 */
enum mode { M_COPY, M_NOCOPY, M_STREAM };

struct spec {
	char name[TL_NAME_MAX];
	uint32_t mts, ndev, depth;
	enum mode mode;
};

static void dev_name(const struct spec *sp, uint32_t i, char *buf, size_t n)
{
	if (i)
		snprintf(buf, n, "%.60s-%u", sp->name, i % 100);
	else
		snprintf(buf, n, "%s", sp->name);
}

struct cdev {
	const struct spec *sp;
	struct vdi_client_device *d;
	int rc;
};

/* Raw client loop: copy out once (or not), complete, until VD_E_CLOSE. */
static void *client_raw(void *a)
{
	struct cdev *c = a;
	uint8_t *priv = aligned_alloc(4096, c->sp->mts);
	VDC_Command *cmd;
	int rc;

	for (;;) {
		rc = vdi_client_get_command(c->d, WAIT_MS, &cmd);
		if (rc)
			break;
		if (c->sp->mode == M_COPY && cmd->commandCode == VDC_Write)
			memcpy(priv, cmd->buffer, (size_t)cmd->size);
		rc = vdi_client_complete_command(c->d, cmd, ERROR_SUCCESS, (uint32_t)cmd->size, 0);
		if (rc)
			break;
	}
	c->rc = rc == VD_E_CLOSE ? 0 : rc;
	free(priv);
	return NULL;
}

/* Stream client: vdi_cstream_read into a private buffer until the end. */
static void *client_stream(void *a)
{
	struct cdev *c = a;
	uint8_t *priv = aligned_alloc(4096, c->sp->mts);
	struct vdi_cstream *cs = NULL;
	ssize_t k;

	c->rc = vdi_cstream_new(c->d, WAIT_MS, &cs);
	while (!c->rc && (k = vdi_cstream_read(cs, priv, c->sp->mts)) != 0)
		if (k < 0)
			c->rc = (int)k;
	if (cs)
		c->rc = c->rc ? (vdi_cstream_close(cs, 0), c->rc) : vdi_cstream_close(cs, 1);
	free(priv);
	return NULL;
}

static int client_main(const struct spec *sp)
{
	struct cdev cd[MAX_DEV];
	pthread_t th[MAX_DEV];
	struct vdi_client *c;
	char dn[TL_NAME_MAX + 8];
	VDConfig cfg;
	int rc = 0;

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = sp->ndev;
	if (vdi_client_new(&c) || vdi_client_create(c, sp->name, &cfg) ||
	    vdi_client_get_configuration(c, WAIT_MS, &cfg))
		return 10;
	for (uint32_t i = 0; i < sp->ndev; i++) {
		dev_name(sp, i, dn, sizeof(dn));
		cd[i] = (struct cdev){ .sp = sp };
		if (vdi_client_open_device(c, dn, &cd[i].d))
			return 11;
		pthread_create(&th[i], NULL, sp->mode == M_STREAM ? client_stream : client_raw,
		               &cd[i]);
	}
	for (uint32_t i = 0; i < sp->ndev; i++) {
		pthread_join(th[i], NULL);
		if (cd[i].rc && !rc) {
			fprintf(stderr, "bench client device %u: %s: %s\n", i,
			        vdi_strerror(cd[i].rc), vdi_last_error());
			rc = 20;
		}
	}
	if (vdi_client_close(c) && !rc)
		rc = 30;
	vdi_client_free(c);
	return rc;
}

static pid_t client_start(const struct spec *sp)
{
	pid_t parent = getpid(), pid = fork();

	if (pid < 0)
		die("fork", VD_E_UNEXPECTED);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(3);
		alarm(120);
		_exit(client_main(sp));
	}
	return pid;
}

static void client_wait(pid_t pid)
{
	uint64_t end = now_us() + WAIT_MS * 1000ull;
	int st = 0;

	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (now_us() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			die("client process (killed, too slow)", VD_E_TIMEOUT);
		}
		usleep(1000);
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		die("client process", VD_E_UNEXPECTED);
}

/* ---------------------------------------------------------------------
 * The server: the set, the agent, the devices.
 */
struct run;

struct bcmd {
	VDS_Command cmd;
	struct bdev *dev;
};

struct bdev {
	struct run *run;
	struct vdi_server_device *d;
	struct bcmd cmds[MAX_DEPTH];
	uint64_t target;  /* commands to complete */
	uint64_t claimed; /* atomic: sends claimed */
};

struct run {
	struct spec sp;
	struct vdi_server *s;
	struct tl_agent agent;
	struct bdev dev[MAX_DEV];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t total, completed; /* commands (completed: agent thread) */
	uint64_t t_first, t_last;  /* agent thread, read under lock after */
	uint32_t failed;           /* atomic: first bad completion code + 1 */
	int finished;              /* under lock */
};

static void run_finish(struct run *r)
{
	pthread_mutex_lock(&r->lock);
	r->finished = 1;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/* Completion routine (agent thread): count, then re-send the command. */
static void bench_done(VDS_Command *cmd)
{
	struct bcmd *bc = cmd->completionContext;
	struct bdev *d = bc->dev;
	struct run *r = d->run;
	uint64_t now = now_us();

	if (cmd->completionCode != ERROR_SUCCESS || cmd->bytesTransferred != cmd->size) {
		__atomic_store_n(&r->failed, cmd->completionCode + 1, __ATOMIC_SEQ_CST);
		run_finish(r);
		return;
	}
	if (!r->completed++)
		r->t_first = now;
	r->t_last = now;
	if (r->completed == r->total) {
		run_finish(r);
		return;
	}
	if (__atomic_fetch_add(&d->claimed, 1, __ATOMIC_RELAXED) < d->target)
		vdi_server_send_command(d->d, cmd); /* failure: routine again */
}

static void server_setup(struct run *r)
{
	const struct spec *sp = &r->sp;
	char dn[TL_NAME_MAX + 8];

	CALL(vdi_server_new(&r->s));
	CALL(vdi_server_open_wait(r->s, NULL, sp->name, WAIT_MS));
	CALL(vdi_server_begin_configuration(r->s, VDF_WriteMedia, 65536, 0, sp->mts, 0));
	CALL(vdi_server_request_buffers(r->s, sp->mts, 0, sp->depth * sp->ndev));
	CALL(vdi_server_end_configuration(r->s));
	for (uint32_t i = 0; i < sp->ndev; i++) {
		dev_name(sp, i, dn, sizeof(dn));
		CALL(vdi_server_open_device(r->s, dn, &r->dev[i].d));
	}
	CALL(tl_agent_start(&r->agent, r->s));
}

static void server_teardown(struct run *r)
{
	for (uint32_t i = 0; i < r->sp.ndev; i++)
		CALL(vdi_server_close_device(r->dev[i].d));
	CALL(tl_agent_join(&r->agent, WAIT_MS));
	CALL(r->agent.rc);
	CALL(vdi_server_close(r->s));
	vdi_server_free(r->s);
}

static void server_prepare(struct run *r, uint64_t per_dev)
{
	for (uint32_t i = 0; i < r->sp.ndev; i++) {
		struct bdev *d = &r->dev[i];

		d->run = r;
		d->target = per_dev;
		for (uint32_t k = 0; k < r->sp.depth; k++) {
			struct bcmd *bc = &d->cmds[k];
			uint8_t *buf;

			CALL(vdi_server_allocate_buffer(r->s, &buf, r->sp.mts, 0));
			memset(buf, 0x33 + (int)k, r->sp.mts);
			bc->dev = d;
			bc->cmd = (VDS_Command){ .commandCode = VDC_Write,
				                 .size = r->sp.mts,
				                 .buffer = buf,
				                 .completionRoutine = bench_done,
				                 .completionContext = bc };
		}
	}
}

/* Sends the first `depth` commands of every device and waits for the end. */
static void server_run(struct run *r)
{
	struct timespec ts;
	int rc = 0;

	for (uint32_t i = 0; i < r->sp.ndev; i++)
		for (uint32_t k = 0; k < r->sp.depth; k++)
			if (__atomic_fetch_add(&r->dev[i].claimed, 1, __ATOMIC_RELAXED) <
			    r->dev[i].target)
				vdi_server_send_command(r->dev[i].d, &r->dev[i].cmds[k].cmd);
	ts = tl_deadline_ms(WAIT_MS);
	pthread_mutex_lock(&r->lock);
	while (!r->finished && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&r->cond, &r->lock, &ts);
	pthread_mutex_unlock(&r->lock);
	if (!r->finished)
		die("engine run (no end within the time limit)", VD_E_TIMEOUT);
	if (r->failed)
		die("a VDC_Write completion", VD_E_IO_ERROR);
}

struct result {
	double mibs, cmds;
};

#define REPEAT 5 /* best of: the machine is shared, take the quietest run */

static struct result run_engine(uint32_t mts, uint32_t ndev, uint32_t depth, enum mode mode,
                                uint64_t bytes)
{
	struct run *r = calloc(1, sizeof(*r));
	struct result res;
	uint64_t per_dev;
	pid_t pid;

	if (!r)
		die("calloc", VD_E_MEMORY);
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	r->sp = (struct spec){ .mts = mts, .ndev = ndev, .depth = depth, .mode = mode };
	tl_name(r->sp.name);
	per_dev = bytes / mts / ndev;
	if (per_dev < 2 * depth)
		per_dev = 2 * depth;
	r->total = per_dev * ndev;
	pid = client_start(&r->sp);
	server_setup(r);
	server_prepare(r, per_dev);
	server_run(r);
	server_teardown(r);
	client_wait(pid);
	/* The first completion starts the clock: count the ones after it. */
	res.cmds = (double)(r->total - 1) / ((double)(r->t_last - r->t_first) / 1e6);
	res.mibs = res.cmds * mts / MIB;
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r);
	return res;
}

/* Stream adapter: one device, sstream_write of `bytes` in mts pieces. */
static double run_stream(uint32_t mts, uint64_t bytes)
{
	struct run *r = calloc(1, sizeof(*r));
	struct vdi_sstream_pool *pool;
	struct vdi_sstream *w;
	uint8_t *src = aligned_alloc(4096, mts);
	uint64_t t, done;
	pid_t pid;

	if (!r || !src)
		die("calloc", VD_E_MEMORY);
	memset(src, 0x77, mts);
	r->sp = (struct spec){ .mts = mts, .ndev = 1, .depth = depth_for(mts), .mode = M_STREAM };
	tl_name(r->sp.name);
	pid = client_start(&r->sp);
	server_setup(r);
	CALL(vdi_sstream_pool_new(r->s, r->sp.depth, WAIT_MS, &pool));
	CALL(vdi_sstream_open(pool, r->dev[0].d, 0, &w));
	t = now_us();
	for (done = 0; done < bytes; done += mts)
		if (vdi_sstream_write(w, src, mts) != (ssize_t)mts)
			die("vdi_sstream_write", VD_E_IO_ERROR);
	CALL(vdi_sstream_drain(w));
	t = now_us() - t;
	CALL(vdi_sstream_close(w));
	vdi_sstream_pool_free(pool);
	server_teardown(r);
	client_wait(pid);
	free(src);
	free(r);
	return (double)bytes / MIB / ((double)(t ? t : 1) / 1e6);
}

/* ---------------------------------------------------------------------
 * Report.
 */
static const char *goal(int met)
{
	return met ? "met" : "NOT met";
}

/* The machine may be shared: say how busy it was. */
static void print_load(void)
{
	char buf[64] = "?";
	FILE *f = fopen("/proc/loadavg", "r");

	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			snprintf(buf, sizeof(buf), "?");
		fclose(f);
	}
	buf[strcspn(buf, "\n")] = '\0';
	printf("load average (/proc/loadavg): %s on %ld CPUs\n\n", buf,
	       sysconf(_SC_NPROCESSORS_ONLN));
}

static void print_header(void)
{
	printf("libvdi engine benchmark: server sends VDC_Write via the server API,\n"
	       "client (forked process) copies each buffer out once and completes it.\n"
	       "memcpy = single-thread memcpy of the same bytes, same chunk size and\n"
	       "buffer footprint, measured in this run, interleaved.  Best of %d each.\n",
	       REPEAT);
	print_load();
	printf("%-10s %7s %7s %12s %12s %7s %12s\n", "transfer", "devices", "buffers",
	       "engine MiB/s", "memcpy MiB/s", "ratio", "commands/s");
}

/* Engine and memcpy runs interleaved, best of REPEAT each: the machine is
 * shared, so both see the same quiet and busy moments. */
static struct result measure(uint32_t mts, uint32_t ndev, uint32_t depth, enum mode mode,
                             uint64_t bytes, double *memcpy_best)
{
	struct result best = { 0, 0 }, r;
	double m;

	*memcpy_best = 0;
	for (int i = 0; i < REPEAT; i++) {
		if (mode == M_STREAM) {
			r.mibs = run_stream(mts, bytes);
			r.cmds = r.mibs * MIB / mts;
		} else {
			r = run_engine(mts, ndev, depth, mode, bytes);
		}
		if (r.mibs > best.mibs)
			best = r;
		if (mode == M_NOCOPY)
			continue;
		m = memcpy_mibs(mts, depth * ndev, bytes);
		*memcpy_best = m > *memcpy_best ? m : *memcpy_best;
	}
	return best;
}

static const char *size_name(uint32_t mts)
{
	return mts == 64 * KIB ? "64 KiB" : mts == MIB ? "1 MiB" : "4 MiB";
}

/* One row of the table; returns the ratio to memcpy. */
static double table_row(uint32_t mts, uint32_t ndev, double *cmds)
{
	uint64_t bytes = (uint64_t)(scale * (mts == 64 * KIB ? 1024.0 : 2048.0) * MIB);
	uint32_t depth = depth_for(mts);
	struct result res;
	double mc;

	res = measure(mts, ndev, depth, M_COPY, bytes, &mc);
	printf("%-10s %7u %7u %12.0f %12.0f %7.2f %12.0f\n", size_name(mts), ndev, depth * ndev,
	       res.mibs, mc, res.mibs / mc, res.cmds);
	fflush(stdout);
	*cmds = res.cmds;
	return res.mibs / mc;
}

int main(int argc, char **argv)
{
	static const uint32_t sizes[] = { 64 * KIB, MIB, 4 * MIB };
	double ratio_1m[2] = { 0, 0 }, cmds_64k = 0, cmds, ratio, mc;
	struct result res;

	if (argc > 1)
		scale = atof(argv[1]) > 0 ? atof(argv[1]) : 1.0;
	tl_init();
	print_header();
	for (size_t i = 0; i < 3; i++) {
		for (uint32_t k = 0; k < 2; k++) {
			ratio = table_row(sizes[i], k ? 4 : 1, &cmds);
			if (sizes[i] == MIB)
				ratio_1m[k] = ratio;
			if (sizes[i] == 64 * KIB && !k)
				cmds_64k = cmds;
		}
	}
	res = measure(64 * KIB, 1, depth_for(64 * KIB), M_NOCOPY, (uint64_t)(scale * 8192.0 * MIB),
	              &mc);
	printf("\n64 KiB, 1 device, client completes without copying: %.0f commands/s\n", res.cmds);
	res = measure(MIB, 1, depth_for(MIB), M_STREAM, (uint64_t)(scale * 1024.0 * MIB), &mc);
	printf("stream adapter, 1 MiB, 1 device (sstream_write copy in + cstream_read copy out):\n"
	       "  %.0f MiB/s, %.2f of memcpy (two copies: 0.5 is the copy-bound ideal)\n",
	       res.mibs, res.mibs / mc);
	printf("\ngoals:\n");
	printf("  1 MiB engine >= 0.80 of memcpy: 1 device %.2f (%s), 4 devices %.2f (%s)\n",
	       ratio_1m[0], goal(ratio_1m[0] >= 0.8), ratio_1m[1], goal(ratio_1m[1] >= 0.8));
	printf("  >= 100000 commands/s at 64 KiB (with the copy): %.0f (%s)\n", cmds_64k,
	       goal(cmds_64k >= 100000));
	tl_shm_cleanup_run();
	return 0;
}
