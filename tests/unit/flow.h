/* SPDX-License-Identifier: MIT */
/*
 * flow.h - complete backup and restore flows for the cross-process suites
 * (check_process, check_abort, check_stress, check_hostile).
 *
 * Header-only on purpose: the Makefile links each tests/unit/check_*.c
 * alone with tests/lib, and these drivers are specific to the suites
 * that fork, so every function here is static (unused ones are marked).
 *
 * What it offers
 *   - A deterministic data pattern: byte o of device d of a flow seeded s
 *     is a function of (s, d, o) only, so either side can fill or verify
 *     any buffer knowing only its stream offset (pat_fill, pat_bad).
 *   - Child processes (struct kid): fork a function, collect its failure
 *     sentence through a pipe, wait with a time limit, never leave one
 *     behind (PR_SET_PDEATHSIG, SIGKILL on timeout).
 *   - The server half of a flow (flow_server_run): Open, configure, the
 *     agent on a thread, one thread per device sending VDC_Write (backup,
 *     buffers filled with the pattern) or VDC_Read (restore, buffers
 *     verified on completion), `depth` commands in flight, fixed or
 *     random sizes, then CloseDevice and Close.
 *   - The client half (flow_client_*): primary (Create) or secondary
 *     (OpenInSecondary), any subset of the devices, one thread per
 *     device, fetching up to `cdepth` commands before completing them in
 *     random order, every byte verified or filled, and an optional hook
 *     called on every data command before it is completed.
 *
 * Threads: a flow_server / flow_client object belongs to the thread that
 * runs it; the device threads it starts report through their own fields.
 * Every wait is bounded by flow.timeout_ms.
 *
 * FLOW_DEBUG=1 in the environment prints, per client device, the bytes
 * and commands it handled (and, in check_abort, every measured wake-up
 * latency; in check_hostile, how each scribbled flow ended).
 */
#ifndef TESTS_UNIT_FLOW_H
#define TESTS_UNIT_FLOW_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"
#include "vdi.h"

#define FLOW_UNUSED       __attribute__((unused))
#define FLOW_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define FLOW_ERR          512

/* ---------------------------------------------------------------------
 * Time in microseconds (CLOCK_MONOTONIC is one clock for every process,
 * so a time taken in one process can be compared in another).
 */
static FLOW_UNUSED uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---------------------------------------------------------------------
 * Pattern and random numbers.
 */
static inline uint64_t pat_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Seed of device dev's stream in a flow seeded `seed`. */
static FLOW_UNUSED uint64_t pat_dev_seed(uint64_t seed, uint32_t dev)
{
	return pat_mix(seed ^ ((uint64_t)(dev + 1) << 40));
}

/* Fills n bytes that sit at stream offset off (both multiples of 8). */
static FLOW_UNUSED void pat_fill(uint8_t *p, size_t n, uint64_t dseed, uint64_t off)
{
	uint64_t w = off / 8;

	for (size_t i = 0; i + 8 <= n; i += 8, w++) {
		uint64_t v = pat_mix(dseed + w);
		memcpy(p + i, &v, 8);
	}
}

/* Index of the first byte that differs from the pattern, or -1. */
static FLOW_UNUSED long pat_bad(const uint8_t *p, size_t n, uint64_t dseed, uint64_t off)
{
	uint64_t w = off / 8;

	for (size_t i = 0; i + 8 <= n; i += 8, w++) {
		uint64_t v = pat_mix(dseed + w), got;
		memcpy(&got, p + i, 8);
		if (got != v) {
			for (size_t k = 0; k < 8; k++)
				if (p[i + k] != ((const uint8_t *)&v)[k])
					return (long)(i + k);
		}
	}
	return -1;
}

/* xorshift64*: per-thread random numbers from a seed. */
static FLOW_UNUSED uint64_t rnd_next(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x2545f4914f6cdd1dull;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* ---------------------------------------------------------------------
 * /dev/shm objects of one set: "vdi.<inst>.<name>", "vdi-b<k>.<inst>.<name>"
 * and (older D27 naming) "vdi.<inst>.<name>.b<k>".  Exact match on the
 * name, so "t-1-2-1" never counts "t-1-2-10".
 */
static FLOW_UNUSED int shm_entry_of(const char *e, const char *name)
{
	size_t n = strlen(name), len = strlen(e);
	const char *p;

	if (strncmp(e, "vdi", 3) != 0)
		return 0;
	if (len > n + 1 && e[len - n - 1] == '.' && strcmp(e + len - n, name) == 0)
		return 1;
	p = strstr(e, name);
	while (p) {
		if (p > e && p[-1] == '.' && p[n] == '.' && p[n + 1] == 'b') {
			const char *q = p + n + 2;
			while (*q >= '0' && *q <= '9')
				q++;
			if (*q == '\0' && q > p + n + 2)
				return 1;
		}
		p = strstr(p + 1, name);
	}
	return 0;
}

/* Number of /dev/shm objects of set `name`; remove = unlink them too. */
static FLOW_UNUSED int shm_of_set(const char *name, int remove)
{
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	char path[512];
	int count = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL) {
		if (!shm_entry_of(e->d_name, name))
			continue;
		count++;
		if (remove) {
			snprintf(path, sizeof(path), "/dev/shm/%s", e->d_name);
			unlink(path);
		}
	}
	closedir(d);
	return count;
}

/* Path of the control region of set `name` of the default instance. */
static FLOW_UNUSED void shm_ctl_path(const char *name, char *buf, size_t n)
{
	snprintf(buf, n, "/dev/shm/vdi.MSSQLSERVER.%s", name);
}

/* ---------------------------------------------------------------------
 * Child processes.
 */
struct kid {
	pid_t pid;  /* 0 when none */
	int fd;     /* read end of the child's failure-message pipe */
	int status; /* wait status once reaped */
	char msg[FLOW_ERR + 128];
};

static int kid_msg_fd = -1; /* in a child: write end of its message pipe */

/* In a child: records a failure sentence and exits with status 1. */
static FLOW_UNUSED FLOW_PRINTF(1, 2) void kid_fail(const char *fmt, ...)
{
	char buf[FLOW_ERR];
	va_list ap;
	ssize_t w;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (kid_msg_fd >= 0)
		w = write(kid_msg_fd, buf, strlen(buf));
	else
		w = write(2, buf, strlen(buf));
	(void)w;
	_exit(1);
}

/* Runs fn(arg) in a new process that dies with its parent.  fn returns 0
 * for success or calls kid_fail.  Returns 0 or -1 (fork failed). */
static FLOW_UNUSED int kid_start(struct kid *k, void (*fn)(void *), void *arg)
{
	int p[2];
	pid_t parent = getpid();

	memset(k, 0, sizeof(*k));
	k->fd = -1;
	if (pipe2(p, O_CLOEXEC) != 0)
		return -1;
	k->pid = fork();
	if (k->pid < 0) {
		close(p[0]);
		close(p[1]);
		k->pid = 0;
		return -1;
	}
	if (k->pid == 0) {
		close(p[0]);
		kid_msg_fd = p[1];
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(3);
		fn(arg);
		_exit(0);
	}
	close(p[1]);
	k->fd = p[0];
	/* A sibling forked later may hold a copy of the write end: never
	 * block on it, the message is in the pipe before the child exits. */
	fcntl(k->fd, F_SETFL, O_NONBLOCK);
	return 0;
}

/* Waits at most timeout_ms for the child; kills it past that.  Returns 0
 * if it exited with status 0; otherwise k->msg says what happened. */
static FLOW_UNUSED int kid_wait(struct kid *k, uint32_t timeout_ms)
{
	uint64_t end = now_us() + (uint64_t)timeout_ms * 1000u;
	int timed_out = 0;
	pid_t r;
	ssize_t n;
	char buf[FLOW_ERR];

	if (k->pid <= 0)
		return -1;
	for (;;) {
		r = waitpid(k->pid, &k->status, WNOHANG);
		if (r == k->pid || (r < 0 && errno != EINTR))
			break;
		if (now_us() > end) {
			timed_out = 1;
			kill(k->pid, SIGKILL);
			waitpid(k->pid, &k->status, 0);
			break;
		}
		usleep(2000);
	}
	k->pid = 0;
	n = read(k->fd, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(k->fd);
	k->fd = -1;
	if (timed_out)
		snprintf(k->msg, sizeof(k->msg), "did not finish within %u ms (killed)%s%s",
		         timeout_ms, buf[0] ? ": " : "", buf);
	else if (WIFSIGNALED(k->status))
		snprintf(k->msg, sizeof(k->msg), "killed by signal %d (%s)%s%s",
		         WTERMSIG(k->status), strsignal(WTERMSIG(k->status)), buf[0] ? ": " : "",
		         buf);
	else if (WIFEXITED(k->status) && WEXITSTATUS(k->status) != 0)
		snprintf(k->msg, sizeof(k->msg), "exited with status %d: %s",
		         WEXITSTATUS(k->status), buf[0] ? buf : "(no message)");
	else {
		k->msg[0] = '\0';
		return 0;
	}
	return -1;
}

/* Kills (if still running) and reaps a child; safe on an empty kid. */
static FLOW_UNUSED void kid_reap(struct kid *k)
{
	if (k->pid > 0) {
		kill(k->pid, SIGKILL);
		waitpid(k->pid, &k->status, 0);
		k->pid = 0;
	}
	if (k->fd >= 0) {
		close(k->fd);
		k->fd = -1;
	}
}

/* ---------------------------------------------------------------------
 * Flow parameters, shared by both halves.
 */
struct flow {
	char name[TL_NAME_MAX];
	uint32_t ndev;         /* devices of the set */
	uint32_t direction;    /* VDF_WriteMedia (backup) / VDF_ReadMedia */
	uint32_t block_size;   /* 0 = 512 */
	uint32_t max_transfer; /* 0 = 65536 */
	uint32_t depth;        /* server: commands in flight per device */
	uint32_t cdepth;       /* client: commands fetched before completing */
	uint64_t bytes;        /* per device, a multiple of block_size */
	uint64_t seed;
	int random_sizes;    /* random block multiples up to max_transfer */
	int flush;           /* backup: VDC_Flush before CloseDevice */
	uint32_t prefix;     /* client prefixZoneSize */
	uint32_t alignment;  /* client alignment */
	uint32_t timeout_ms; /* bound of every wait */
	int has_group;       /* client: vdi_client_set_group(group) */
	gid_t group;
};

static FLOW_UNUSED void flow_defaults(struct flow *f)
{
	memset(f, 0, sizeof(*f));
	tl_name(f->name);
	f->ndev = 1;
	f->direction = VDF_WriteMedia;
	f->block_size = 512;
	f->max_transfer = 65536;
	f->depth = 2;
	f->cdepth = 1;
	f->bytes = 1u << 20;
	f->seed = 1;
	f->timeout_ms = 10000;
}

/* Device i's name: the set's name for device 0, "<set>.d<i>" otherwise
 * (testlib's convention). */
static FLOW_UNUSED void flow_dev_name(const struct flow *f, uint32_t i, char *buf, size_t n)
{
	if (i == 0)
		snprintf(buf, n, "%s", f->name);
	else
		snprintf(buf, n, "%s.d%u", f->name, i);
}

/* Size of the next command: the whole rest up to max_transfer, or a
 * random block multiple. */
static FLOW_UNUSED uint32_t flow_next_size(const struct flow *f, uint64_t *rng, uint64_t left)
{
	uint32_t blocks = f->max_transfer / f->block_size, len;

	if (f->random_sizes)
		len = f->block_size * (uint32_t)(1 + rnd_next(rng) % blocks);
	else
		len = f->max_transfer;
	return left < len ? (uint32_t)left : len;
}

/* ---------------------------------------------------------------------
 * Server half.
 */
struct flow_scmd {
	VDS_Command c; /* first member: the routine finds the wrapper */
	struct flow_sdev *d;
	uint64_t off; /* stream offset of the data */
	int state;    /* 0 free, 1 sent, 2 completed (under d->mu) */
};

struct flow_sdev {
	const struct flow *f;
	struct vdi_server *s;
	struct vdi_server_device *d;
	uint32_t idx;
	pthread_t thread;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct flow_scmd *cmds; /* depth + 1 (the last for VDC_Flush) */
	uint32_t inflight;      /* under mu */
	uint64_t done_bytes;
	int failed;
	char err[FLOW_ERR];
};

static void flow_scmd_done(VDS_Command *c)
{
	struct flow_scmd *sc = (struct flow_scmd *)c;
	struct flow_sdev *d = sc->d;

	pthread_mutex_lock(&d->mu);
	sc->state = 2;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

/* The agent thread writes states: read them under the lock. */
static int flow_scmd_state(struct flow_sdev *d, const struct flow_scmd *sc)
{
	int st;

	pthread_mutex_lock(&d->mu);
	st = sc->state;
	pthread_mutex_unlock(&d->mu);
	return st;
}

/* Records the device's first failure; the device thread aborts the set
 * once it holds no lock (flow_sdev_main). */
static FLOW_PRINTF(2, 3) void flow_sdev_fail(struct flow_sdev *d, const char *fmt, ...)
{
	va_list ap;

	if (d->failed)
		return;
	d->failed = 1;
	va_start(ap, fmt);
	vsnprintf(d->err, sizeof(d->err), fmt, ap);
	va_end(ap);
}

/* Checks one completed command (caller holds d->mu). */
static void flow_sdev_check(struct flow_sdev *d, struct flow_scmd *sc)
{
	const VDS_Command *c = &sc->c;
	long bad;

	if (c->completionCode != ERROR_SUCCESS) {
		flow_sdev_fail(d, "server: device %u: %s at offset %llu completed with %s", d->idx,
		               vdi_strcommand(c->commandCode), (unsigned long long)sc->off,
		               vdi_strcompletion(c->completionCode));
		return;
	}
	if (c->commandCode == VDC_Flush)
		return;
	if (c->bytesTransferred != c->size) {
		flow_sdev_fail(d, "server: device %u: %s at offset %llu: %u of %u bytes", d->idx,
		               vdi_strcommand(c->commandCode), (unsigned long long)sc->off,
		               c->bytesTransferred, c->size);
		return;
	}
	if (c->commandCode == VDC_Read) {
		bad = pat_bad(c->buffer, c->size, pat_dev_seed(d->f->seed, d->idx), sc->off);
		if (bad >= 0)
			flow_sdev_fail(d, "server: device %u: restored byte %llu differs", d->idx,
			               (unsigned long long)(sc->off + (uint64_t)bad));
	}
	d->done_bytes += c->bytesTransferred;
}

/* Waits for at least one completion; handles all completed ones.
 * Returns -1 on timeout. */
static int flow_sdev_reap(struct flow_sdev *d, uint32_t ndata)
{
	struct timespec ts = tl_deadline_ms(d->f->timeout_ms);
	int got = 0;

	pthread_mutex_lock(&d->mu);
	while (!got) {
		for (uint32_t i = 0; i <= ndata; i++) {
			struct flow_scmd *sc = &d->cmds[i];
			if (sc->state != 2)
				continue;
			flow_sdev_check(d, sc);
			sc->state = 0;
			d->inflight--;
			got = 1;
		}
		if (!got && pthread_cond_timedwait(&d->cv, &d->mu, &ts) == ETIMEDOUT) {
			pthread_mutex_unlock(&d->mu);
			return -1;
		}
	}
	pthread_mutex_unlock(&d->mu);
	return 0;
}

/* Sends one command from slot sc.  The routine runs even on failure. */
static void flow_sdev_send(struct flow_sdev *d, struct flow_scmd *sc, uint32_t code, uint32_t len,
                           uint64_t off)
{
	int rc;

	sc->off = off;
	sc->c.commandCode = code;
	sc->c.size = len;
	sc->c.inPosition = off;
	sc->c.completionRoutine = flow_scmd_done;
	sc->c.completionContext = d;
	sc->c.completionCode = 0xdeadbeef;
	sc->c.bytesTransferred = 0;
	if (code == VDC_Write)
		pat_fill(sc->c.buffer, len, pat_dev_seed(d->f->seed, d->idx), off);
	pthread_mutex_lock(&d->mu);
	sc->state = 1;
	d->inflight++;
	pthread_mutex_unlock(&d->mu);
	rc = vdi_server_send_command(d->d, &sc->c);
	if (rc != 0) {
		pthread_mutex_lock(&d->mu);
		flow_sdev_fail(d, "server: device %u: SendCommand(%s, offset %llu) = %s (%s)",
		               d->idx, vdi_strcommand(code), (unsigned long long)off,
		               vdi_strerror(rc), vdi_last_error());
		pthread_mutex_unlock(&d->mu);
	}
}

static void *flow_sdev_main(void *arg)
{
	struct flow_sdev *d = arg;
	const struct flow *f = d->f;
	uint32_t depth = f->depth, code;
	uint64_t off = 0, rng = pat_mix(f->seed * 31 + d->idx);
	int rc;

	code = f->direction == VDF_WriteMedia ? VDC_Write : VDC_Read;
	for (uint32_t i = 0; i < depth; i++) {
		rc = vdi_server_allocate_buffer(d->s, &d->cmds[i].c.buffer, f->max_transfer, 0);
		if (rc != 0) {
			flow_sdev_fail(d, "server: AllocateBuffer(%u) = %s (%s)", f->max_transfer,
			               vdi_strerror(rc), vdi_last_error());
			goto out;
		}
	}
	while (!d->failed && (off < f->bytes || d->inflight > 0)) {
		for (uint32_t i = 0; i < depth && off < f->bytes && !d->failed; i++) {
			uint32_t len;
			if (flow_scmd_state(d, &d->cmds[i]) != 0)
				continue;
			len = flow_next_size(f, &rng, f->bytes - off);
			flow_sdev_send(d, &d->cmds[i], code, len, off);
			off += len;
		}
		if (d->inflight > 0 && flow_sdev_reap(d, depth) != 0) {
			flow_sdev_fail(d, "server: device %u: no completion within %u ms", d->idx,
			               f->timeout_ms);
			goto out;
		}
	}
	if (!d->failed && f->flush && f->direction == VDF_WriteMedia) {
		struct flow_scmd *fc = &d->cmds[depth];
		fc->c.buffer = NULL;
		flow_sdev_send(d, fc, VDC_Flush, 0, off);
		if (flow_sdev_reap(d, depth) != 0)
			flow_sdev_fail(d, "server: device %u: VDC_Flush not completed", d->idx);
	}
	if (!d->failed && d->done_bytes != f->bytes)
		flow_sdev_fail(d, "server: device %u: %llu of %llu bytes completed", d->idx,
		               (unsigned long long)d->done_bytes, (unsigned long long)f->bytes);
	if (!d->failed) {
		rc = vdi_server_close_device(d->d);
		if (rc != 0)
			flow_sdev_fail(d, "server: CloseDevice(%u) = %s (%s)", d->idx,
			               vdi_strerror(rc), vdi_last_error());
	}
	for (uint32_t i = 0; i < depth; i++)
		if (d->cmds[i].c.buffer && flow_scmd_state(d, &d->cmds[i]) == 0)
			vdi_server_free_buffer(d->s, d->cmds[i].c.buffer, f->max_transfer);
out:
	/* Outside d->mu: the abort may run completion routines at once. */
	if (d->failed)
		vdi_server_signal_abort(d->s);
	return NULL;
}

/* Waits for every command of the failed device to be completed (the
 * abort completes them); returns 1 if they all were. */
static int flow_sdev_quiesce(struct flow_sdev *d, uint32_t ms)
{
	struct timespec ts = tl_deadline_ms(ms);
	int all = 0;

	pthread_mutex_lock(&d->mu);
	for (;;) {
		all = 1;
		for (uint32_t i = 0; i <= d->f->depth; i++)
			if (d->cmds[i].state == 1)
				all = 0;
		if (all || pthread_cond_timedwait(&d->cv, &d->mu, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&d->mu);
	return all;
}

struct flow_server {
	const struct flow *f;
	struct vdi_server *s;
	struct tl_agent agent;
	struct flow_sdev *devs;
	VDConfig cfg; /* from GetConfiguration */
	char err[FLOW_ERR];
};

static FLOW_PRINTF(2, 3) int flow_server_fail(struct flow_server *fs, const char *fmt, ...)
{
	va_list ap;

	if (fs->err[0])
		return -1;
	va_start(ap, fmt);
	vsnprintf(fs->err, sizeof(fs->err), fmt, ap);
	va_end(ap);
	return -1;
}

#define FLOW_SCALL(fs, expr)                                                          \
	do {                                                                          \
		int rc_ = (expr);                                                     \
		if (rc_ != 0)                                                         \
			return flow_server_fail((fs), "server: %s = %s (%s)", #expr,  \
			                        vdi_strerror(rc_), vdi_last_error()); \
	} while (0)

/* Open and configure: everything before the devices. */
static int flow_server_setup(struct flow_server *fs)
{
	const struct flow *f = fs->f;

	FLOW_SCALL(fs, vdi_server_new(&fs->s));
	FLOW_SCALL(fs, vdi_server_open_wait(fs->s, NULL, f->name, f->timeout_ms));
	FLOW_SCALL(fs, vdi_server_get_configuration(fs->s, &fs->cfg));
	if (fs->cfg.deviceCount != f->ndev)
		return flow_server_fail(fs, "server: client asks for %u devices, want %u",
		                        fs->cfg.deviceCount, f->ndev);
	FLOW_SCALL(fs, vdi_server_begin_configuration(fs->s, f->direction, f->block_size, 0,
	                                              f->max_transfer, f->timeout_ms));
	FLOW_SCALL(fs, vdi_server_request_buffers(fs->s, f->max_transfer, 0, f->ndev * f->depth));
	FLOW_SCALL(fs, vdi_server_end_configuration(fs->s));
	FLOW_SCALL(fs, tl_agent_start(&fs->agent, fs->s));
	return 0;
}

/* Opens every device and starts its thread. */
static int flow_server_start_devices(struct flow_server *fs)
{
	const struct flow *f = fs->f;
	char dn[TL_NAME_MAX + 16];

	fs->devs = calloc(f->ndev, sizeof(*fs->devs));
	if (!fs->devs)
		return flow_server_fail(fs, "server: out of memory");
	for (uint32_t i = 0; i < f->ndev; i++) {
		struct flow_sdev *d = &fs->devs[i];
		d->f = f;
		d->s = fs->s;
		d->idx = i;
		pthread_mutex_init(&d->mu, NULL);
		pthread_cond_init(&d->cv, NULL);
		d->cmds = calloc(f->depth + 1, sizeof(*d->cmds));
		if (!d->cmds)
			return flow_server_fail(fs, "server: out of memory");
		for (uint32_t k = 0; k <= f->depth; k++)
			d->cmds[k].d = d;
		flow_dev_name(f, i, dn, sizeof(dn));
		FLOW_SCALL(fs, vdi_server_open_device(fs->s, dn, &d->d));
	}
	for (uint32_t i = 0; i < f->ndev; i++) {
		if (pthread_create(&fs->devs[i].thread, NULL, flow_sdev_main, &fs->devs[i]) != 0)
			return flow_server_fail(fs, "server: pthread_create failed");
		fs->devs[i].started = 1;
	}
	return 0;
}

/* Joins the device threads and the agent, closes, frees.  Returns 0 if
 * the whole flow succeeded. */
static int flow_server_finish(struct flow_server *fs)
{
	const struct flow *f = fs->f;
	int failed = fs->err[0] != 0, safe = 1, rc;

	for (uint32_t i = 0; fs->devs && i < f->ndev; i++) {
		struct flow_sdev *d = &fs->devs[i];
		if (d->started)
			pthread_join(d->thread, NULL);
		if (d->failed) {
			failed = 1;
			flow_server_fail(fs, "%s", d->err);
		}
	}
	if (failed && fs->s)
		vdi_server_signal_abort(fs->s);
	for (uint32_t i = 0; failed && fs->devs && i < f->ndev; i++)
		if (fs->devs[i].cmds && !flow_sdev_quiesce(&fs->devs[i], f->timeout_ms))
			safe = 0;
	if (fs->agent.started) {
		if (tl_agent_join(&fs->agent, f->timeout_ms) != 0) {
			flow_server_fail(fs, "server: completion agent still running after %u ms",
			                 f->timeout_ms);
			vdi_server_signal_abort(fs->s);
			if (tl_agent_join(&fs->agent, f->timeout_ms) != 0)
				safe = 0;
		} else if (fs->agent.rc != 0) {
			flow_server_fail(fs, "server: ExecuteCompletionAgent = %s",
			                 vdi_strerror(fs->agent.rc));
		}
	}
	if (!safe) {
		/* Something may still touch our commands: leak rather than
		 * free memory a routine could still write. */
		return flow_server_fail(fs, "server: commands or agent never finished");
	}
	if (fs->s) {
		rc = vdi_server_close(fs->s);
		if (rc != 0 && !fs->err[0])
			flow_server_fail(fs, "server: Close = %s (%s)", vdi_strerror(rc),
			                 vdi_last_error());
		vdi_server_free(fs->s);
		fs->s = NULL;
	}
	for (uint32_t i = 0; fs->devs && i < f->ndev; i++) {
		free(fs->devs[i].cmds);
		pthread_mutex_destroy(&fs->devs[i].mu);
		pthread_cond_destroy(&fs->devs[i].cv);
	}
	free(fs->devs);
	fs->devs = NULL;
	return fs->err[0] ? -1 : 0;
}

/* The whole server half.  0 on success; err gets the first failure. */
static FLOW_UNUSED int flow_server_run(const struct flow *f, char *err, size_t n)
{
	struct flow_server fs;
	int rc;

	memset(&fs, 0, sizeof(fs));
	fs.f = f;
	rc = flow_server_setup(&fs);
	if (rc == 0)
		rc = flow_server_start_devices(&fs);
	if (rc != 0 && fs.s)
		vdi_server_signal_abort(fs.s);
	rc = flow_server_finish(&fs);
	snprintf(err, n, "%s", fs.err);
	return rc;
}

/* For kid_start: the server half in a child process. */
static FLOW_UNUSED void flow_server_kid(void *arg)
{
	char err[FLOW_ERR];

	if (flow_server_run(arg, err, sizeof(err)) != 0)
		kid_fail("%s", err);
}

/* ---------------------------------------------------------------------
 * Client half.
 */
struct flow_client;
struct flow_cdev;

/* Called on every Read/Write command after the data was verified (Write)
 * or filled (Read) and before it is completed; off is its stream offset.
 * Returns 0, or -1 after writing a sentence into cd->err. */
typedef int (*flow_hook)(void *ctx, struct flow_cdev *cd, VDC_Command *cmd, uint64_t off);

struct flow_cdev {
	struct flow_client *fc;
	uint32_t idx;
	struct vdi_client_device *d;
	pthread_t thread;
	int started;
	uint64_t off; /* stream bytes handled */
	uint64_t commands;
	int closed; /* saw VD_E_CLOSE */
	int failed;
	uint64_t rng;
	char err[FLOW_ERR];
};

struct flow_client {
	const struct flow *f;
	int secondary;                  /* OpenInSecondary instead of Create */
	uint8_t drive[VDI_MAX_DEVICES]; /* devices this object drives */
	flow_hook hook;
	void *hook_ctx;
	struct vdi_client *c;
	VDConfig cfg; /* from GetConfiguration */
	struct flow_cdev devs[VDI_MAX_DEVICES];
	char err[FLOW_ERR];
};

static FLOW_PRINTF(2, 3) int flow_cdev_fail(struct flow_cdev *cd, const char *fmt, ...)
{
	va_list ap;

	if (!cd->failed) {
		cd->failed = 1;
		va_start(ap, fmt);
		vsnprintf(cd->err, sizeof(cd->err), fmt, ap);
		va_end(ap);
	}
	vdi_client_signal_abort(cd->fc->c);
	return -1;
}

/* Verifies (Write) or fills (Read) one command; returns the completion
 * code and sets *bytes, or -1 on a failure. */
static int flow_cdev_handle(struct flow_cdev *cd, VDC_Command *cmd, uint32_t *bytes)
{
	const struct flow *f = cd->fc->f;
	uint32_t align = f->alignment > f->block_size ? f->alignment : f->block_size;
	uint64_t dseed = pat_dev_seed(f->seed, cd->idx);
	long bad;

	*bytes = 0;
	if (cmd->commandCode == VDC_Flush && f->direction == VDF_WriteMedia)
		return ERROR_SUCCESS;
	if (cmd->commandCode != (f->direction == VDF_WriteMedia ? VDC_Write : VDC_Read))
		return flow_cdev_fail(cd, "client: device %u: unexpected %s at offset %llu",
		                      cd->idx, vdi_strcommand((uint32_t)cmd->commandCode),
		                      (unsigned long long)cd->off);
	if (cmd->size <= 0 || (uint32_t)cmd->size % f->block_size != 0 ||
	    (uint32_t)cmd->size > f->max_transfer || !cmd->buffer ||
	    (uintptr_t)cmd->buffer % align != 0 || (uint64_t)cmd->position != cd->off)
		return flow_cdev_fail(cd,
		                      "client: device %u: bad %s: size %d buffer %p "
		                      "position %lld at offset %llu",
		                      cd->idx, vdi_strcommand((uint32_t)cmd->commandCode),
		                      cmd->size, (void *)cmd->buffer, (long long)cmd->position,
		                      (unsigned long long)cd->off);
	if (cmd->commandCode == VDC_Write) {
		bad = pat_bad(cmd->buffer, (size_t)cmd->size, dseed, cd->off);
		if (bad >= 0)
			return flow_cdev_fail(cd, "client: device %u: backup byte %llu differs",
			                      cd->idx,
			                      (unsigned long long)(cd->off + (uint64_t)bad));
	} else {
		pat_fill(cmd->buffer, (size_t)cmd->size, dseed, cd->off);
	}
	/* The prefix zone is ours: scribbling on it must disturb nothing
	 * (the peer verifies every data byte). */
	if (f->prefix)
		memset(cmd->buffer - f->prefix, 0xa5, f->prefix);
	if (cd->fc->hook && cd->fc->hook(cd->fc->hook_ctx, cd, cmd, cd->off) != 0) {
		char why[FLOW_ERR];
		snprintf(why, sizeof(why), "%s", cd->err[0] ? cd->err : "client: hook failed");
		return flow_cdev_fail(cd, "%s", why);
	}
	cd->off += (uint64_t)cmd->size;
	*bytes = (uint32_t)cmd->size;
	return ERROR_SUCCESS;
}

/* A buffer completed by one device thread can come back to another thread
 * of this process with a later command.  The order between the two is
 * real (completion -> the server reuses the buffer -> the next command)
 * but it passes through another process, where ThreadSanitizer cannot
 * follow it; this process-local release/acquire pair states it. */
static int flow_buf_epoch;

/* Fetches one batch (one blocking GetCommand, then polls up to cdepth),
 * handles it in order, completes it in random order.  Returns 1 when the
 * device is closed, 0 to go on, -1 on failure. */
static int flow_cdev_batch(struct flow_cdev *cd)
{
	const struct flow *f = cd->fc->f;
	VDC_Command *held[VDI_QUEUE_DEPTH];
	uint32_t code[VDI_QUEUE_DEPTH], bytes[VDI_QUEUE_DEPTH], n = 0, max;
	int rc, closed = 0;

	max = f->cdepth ? f->cdepth : 1;
	if (max > VDI_QUEUE_DEPTH)
		max = VDI_QUEUE_DEPTH;
	rc = vdi_client_get_command(cd->d, f->timeout_ms, &held[0]);
	if (rc == VD_E_CLOSE)
		return 1;
	if (rc != 0)
		return flow_cdev_fail(cd, "client: device %u: GetCommand at offset %llu = %s (%s)",
		                      cd->idx, (unsigned long long)cd->off, vdi_strerror(rc),
		                      vdi_last_error());
	for (n = 1; n < max; n++) {
		rc = vdi_client_get_command(cd->d, 0, &held[n]);
		if (rc == VD_E_TIMEOUT)
			break;
		if (rc == VD_E_CLOSE) {
			closed = 1;
			break;
		}
		if (rc != 0)
			return flow_cdev_fail(cd, "client: device %u: GetCommand(0) = %s (%s)",
			                      cd->idx, vdi_strerror(rc), vdi_last_error());
	}
	/* Pairs with the release below in whichever thread of this process
	 * last completed a command on these buffers (see flow_buf_epoch). */
	(void)__atomic_load_n(&flow_buf_epoch, __ATOMIC_ACQUIRE);
	for (uint32_t i = 0; i < n; i++) {
		rc = flow_cdev_handle(cd, held[i], &bytes[i]);
		if (rc < 0)
			return -1;
		code[i] = (uint32_t)rc;
	}
	for (uint32_t i = n; i > 1; i--) {
		uint32_t j = (uint32_t)(rnd_next(&cd->rng) % i);
		VDC_Command *t = held[i - 1];
		uint32_t tc = code[i - 1], tb = bytes[i - 1];
		held[i - 1] = held[j], code[i - 1] = code[j], bytes[i - 1] = bytes[j];
		held[j] = t, code[j] = tc, bytes[j] = tb;
	}
	__atomic_fetch_add(&flow_buf_epoch, 1, __ATOMIC_RELEASE);
	for (uint32_t i = 0; i < n; i++) {
		rc = vdi_client_complete_command(cd->d, held[i], code[i], bytes[i], 0);
		if (rc != 0)
			return flow_cdev_fail(cd, "client: device %u: CompleteCommand = %s (%s)",
			                      cd->idx, vdi_strerror(rc), vdi_last_error());
		cd->commands++;
	}
	return closed;
}

static void *flow_cdev_main(void *arg)
{
	struct flow_cdev *cd = arg;
	int rc;

	while ((rc = flow_cdev_batch(cd)) == 0)
		;
	if (rc == 1)
		cd->closed = 1;
	return NULL;
}

static FLOW_PRINTF(2, 3) int flow_client_fail(struct flow_client *fc, const char *fmt, ...)
{
	va_list ap;

	if (fc->err[0])
		return -1;
	va_start(ap, fmt);
	vsnprintf(fc->err, sizeof(fc->err), fmt, ap);
	va_end(ap);
	return -1;
}

#define FLOW_CCALL(fc, expr)                                                          \
	do {                                                                          \
		int rc_ = (expr);                                                     \
		if (rc_ != 0)                                                         \
			return flow_client_fail((fc), "client: %s = %s (%s)", #expr,  \
			                        vdi_strerror(rc_), vdi_last_error()); \
	} while (0)

/* Prepares a client object: drive = NULL drives every device. */
static FLOW_UNUSED void flow_client_init(struct flow_client *fc, const struct flow *f,
                                         int secondary, const uint8_t *drive)
{
	memset(fc, 0, sizeof(*fc));
	fc->f = f;
	fc->secondary = secondary;
	for (uint32_t i = 0; i < f->ndev && i < VDI_MAX_DEVICES; i++)
		fc->drive[i] = drive ? drive[i] : 1;
}

/* OpenInSecondary as soon as the set is ready (D22: VD_E_PROTOCOL
 * before the server ended configuration). */
static int flow_client_attach(struct flow_client *fc)
{
	uint64_t end = now_us() + (uint64_t)fc->f->timeout_ms * 1000u;
	int rc;

	for (;;) {
		rc = vdi_client_open_in_secondary(fc->c, fc->f->name);
		if (rc == 0)
			return 0;
		if ((rc != VD_E_PROTOCOL && rc != VD_E_INVALID) || now_us() > end)
			return flow_client_fail(fc, "client: OpenInSecondary(%s) = %s (%s)",
			                        fc->f->name, vdi_strerror(rc), vdi_last_error());
		usleep(5000);
	}
}

/* Create (or attach), GetConfiguration, OpenDevice, start the threads. */
static FLOW_UNUSED int flow_client_start(struct flow_client *fc)
{
	const struct flow *f = fc->f;
	VDConfig cfg;
	char dn[TL_NAME_MAX + 16];

	FLOW_CCALL(fc, vdi_client_new(&fc->c));
	if (fc->secondary) {
		if (flow_client_attach(fc) != 0)
			return -1;
	} else {
		memset(&cfg, 0, sizeof(cfg));
		cfg.deviceCount = f->ndev;
		cfg.prefixZoneSize = f->prefix;
		cfg.alignment = f->alignment;
		if (f->has_group)
			FLOW_CCALL(fc, vdi_client_set_group(fc->c, f->group));
		FLOW_CCALL(fc, vdi_client_create(fc->c, f->name, &cfg));
	}
	FLOW_CCALL(fc, vdi_client_get_configuration(fc->c, f->timeout_ms, &fc->cfg));
	if (!(fc->cfg.features & f->direction) || fc->cfg.blockSize != f->block_size ||
	    fc->cfg.maxTransferSize != f->max_transfer || fc->cfg.deviceCount != f->ndev)
		return flow_client_fail(
			fc, "client: configuration features 0x%x block %u max %u devices %u",
			fc->cfg.features, fc->cfg.blockSize, fc->cfg.maxTransferSize,
			fc->cfg.deviceCount);
	for (uint32_t i = 0; i < f->ndev; i++) {
		struct flow_cdev *cd = &fc->devs[i];
		cd->fc = fc;
		cd->idx = i;
		cd->rng = pat_mix(f->seed ^ (0x77ull + i));
		if (!fc->drive[i])
			continue;
		flow_dev_name(f, i, dn, sizeof(dn));
		FLOW_CCALL(fc, vdi_client_open_device(fc->c, dn, &cd->d));
	}
	for (uint32_t i = 0; i < f->ndev; i++) {
		if (!fc->drive[i])
			continue;
		if (pthread_create(&fc->devs[i].thread, NULL, flow_cdev_main, &fc->devs[i]) != 0)
			return flow_client_fail(fc, "client: pthread_create failed");
		fc->devs[i].started = 1;
	}
	return 0;
}

/* Joins the device threads and checks every byte arrived. */
static FLOW_UNUSED int flow_client_join(struct flow_client *fc)
{
	const struct flow *f = fc->f;

	if (fc->err[0] && fc->c)
		vdi_client_signal_abort(fc->c);
	for (uint32_t i = 0; i < f->ndev; i++) {
		struct flow_cdev *cd = &fc->devs[i];
		if (!cd->started)
			continue;
		pthread_join(cd->thread, NULL);
		cd->started = 0;
		if (getenv("FLOW_DEBUG"))
			fprintf(stderr, "flow %s: device %u: %llu bytes, %llu commands%s\n",
			        f->name, i, (unsigned long long)cd->off,
			        (unsigned long long)cd->commands, cd->closed ? ", closed" : "");
		if (cd->failed)
			flow_client_fail(fc, "%s", cd->err);
		else if (!cd->closed || cd->off != f->bytes)
			flow_client_fail(fc, "client: device %u: %llu of %llu bytes, %s", i,
			                 (unsigned long long)cd->off, (unsigned long long)f->bytes,
			                 cd->closed ? "closed" : "not closed");
	}
	return fc->err[0] ? -1 : 0;
}

/* Close and free.  Returns 0 if everything before and Close succeeded. */
static FLOW_UNUSED int flow_client_close(struct flow_client *fc)
{
	int rc;

	if (!fc->c)
		return fc->err[0] ? -1 : 0;
	if (fc->err[0])
		vdi_client_signal_abort(fc->c);
	rc = vdi_client_close(fc->c);
	if (rc != 0)
		flow_client_fail(fc, "client: Close = %s (%s)", vdi_strerror(rc), vdi_last_error());
	vdi_client_free(fc->c);
	fc->c = NULL;
	return fc->err[0] ? -1 : 0;
}

/* The whole client half; drive = NULL drives every device. */
static FLOW_UNUSED int flow_client_run(const struct flow *f, int secondary, const uint8_t *drive,
                                       char *err, size_t n)
{
	struct flow_client *fc = malloc(sizeof(*fc));
	int rc;

	if (!fc) {
		snprintf(err, n, "client: out of memory");
		return -1;
	}
	flow_client_init(fc, f, secondary, drive);
	flow_client_start(fc);
	flow_client_join(fc);
	rc = flow_client_close(fc);
	snprintf(err, n, "%s", fc->err);
	free(fc);
	return rc;
}

/* For kid_start: a client half in a child process (arg: struct flow). */
static FLOW_UNUSED void flow_client_kid(void *arg)
{
	char err[FLOW_ERR];

	if (flow_client_run(arg, 0, NULL, err, sizeof(err)) != 0)
		kid_fail("%s", err);
}

#endif /* TESTS_UNIT_FLOW_H */
