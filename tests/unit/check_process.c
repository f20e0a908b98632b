/* SPDX-License-Identifier: MIT */
/*
 * check_process.c - backup and restore across processes (issue 2,
 * "Processes"): client and server in different processes (fork, and
 * fork + exec of this very binary), 1, 4 and 64 devices with one thread
 * per device on each side, every byte verified; a secondary client
 * process driving some devices while the primary drives the others;
 * buffer handles handed from a secondary to the primary through a pipe;
 * each process sees its own addresses (D24); the prefix zone below each
 * buffer; client and server in one process; the leftovers of dead
 * processes as `vdi doctor` sees and removes them (D16), beside a live
 * set that must be kept.
 *
 * Every set name comes from tl_name(); after each flow the test asserts
 * that /dev/shm holds nothing of the set (D27); main() sweeps the run's
 * names at the end whatever happened.
 */
#include <check.h>
#include <sys/mman.h>

#include "flow.h"

#define KID_MS 60000

/* Runs the server half in a forked child and the client half here. */
static void run_forked(struct flow *f)
{
	struct kid srv;
	char err[FLOW_ERR];
	int crc, src;

	ck_assert_int_eq(kid_start(&srv, flow_server_kid, f), 0);
	crc = flow_client_run(f, 0, NULL, err, sizeof(err));
	src = kid_wait(&srv, KID_MS);
	ck_assert_msg(src == 0, "server process %s", srv.msg);
	ck_assert_msg(crc == 0, "%s", err);
	ck_assert_int_eq(shm_of_set(f->name, 0), 0);
}

/* 1, 4 and 64 devices, both directions: loop index = dir * 3 + size. */
static const uint32_t ndevs[] = { 1, 4, 64 };

static void flow_for(struct flow *f, int i)
{
	flow_defaults(f);
	f->ndev = ndevs[i % 3];
	f->direction = i / 3 ? VDF_ReadMedia : VDF_WriteMedia;
	f->seed = 1000u + (unsigned)i;
	/* 16 MiB per set, split over the devices. */
	f->bytes = (16u << 20) / f->ndev;
	f->depth = f->ndev > 4 ? 2 : 4;
	f->cdepth = 2;
	f->random_sizes = 1;
	f->flush = 1;
	f->max_transfer = f->ndev > 4 ? 65536 : 262144;
}

START_TEST(test_fork_flow)
{
	struct flow f;

	flow_for(&f, _i);
	run_forked(&f);
}
END_TEST

/* ---------------------------------------------------------------------
 * fork + exec: the server is a fresh image of this binary, so nothing of
 * the client's address space is inherited.
 */
static int exec_server_main(int argc, char **argv)
{
	struct flow f;
	char err[FLOW_ERR];

	if (argc != 11)
		return 2;
	if (fcntl(3, F_GETFD) != -1)
		kid_msg_fd = 3;
	flow_defaults(&f);
	snprintf(f.name, sizeof(f.name), "%s", argv[2]);
	f.ndev = (uint32_t)strtoul(argv[3], NULL, 0);
	f.direction = (uint32_t)strtoul(argv[4], NULL, 0);
	f.block_size = (uint32_t)strtoul(argv[5], NULL, 0);
	f.max_transfer = (uint32_t)strtoul(argv[6], NULL, 0);
	f.depth = (uint32_t)strtoul(argv[7], NULL, 0);
	f.bytes = strtoull(argv[8], NULL, 0);
	f.seed = strtoull(argv[9], NULL, 0);
	f.random_sizes = atoi(argv[10]);
	if (flow_server_run(&f, err, sizeof(err)) != 0)
		kid_fail("%s", err);
	return 0;
}

static void exec_server_kid(void *arg)
{
	const struct flow *f = arg;
	char a[8][32];
	char *argv[12];
	int m;

	snprintf(a[0], 32, "%u", f->ndev);
	snprintf(a[1], 32, "%u", f->direction);
	snprintf(a[2], 32, "%u", f->block_size);
	snprintf(a[3], 32, "%u", f->max_transfer);
	snprintf(a[4], 32, "%u", f->depth);
	snprintf(a[5], 32, "%llu", (unsigned long long)f->bytes);
	snprintf(a[6], 32, "%llu", (unsigned long long)f->seed);
	snprintf(a[7], 32, "%d", f->random_sizes);
	argv[0] = (char *)"check_process";
	argv[1] = (char *)"--flow-server";
	argv[2] = (char *)f->name;
	for (int i = 0; i < 8; i++)
		argv[3 + i] = a[i];
	argv[11] = NULL;
	/* fd 3 carries the failure sentence across exec (dup2 drops
	 * O_CLOEXEC on the copy; via a high copy in case it is fd 3). */
	m = fcntl(kid_msg_fd, F_DUPFD_CLOEXEC, 100);

	if (m < 0 || dup2(m, 3) < 0)
		kid_fail("dup2: %s", strerror(errno));
	execv("/proc/self/exe", argv);
	kid_fail("exec /proc/self/exe: %s", strerror(errno));
}

START_TEST(test_exec_flow)
{
	struct flow f;
	struct kid srv;
	char err[FLOW_ERR];
	int crc;

	flow_defaults(&f);
	f.ndev = 4;
	f.direction = _i ? VDF_ReadMedia : VDF_WriteMedia;
	f.block_size = 4096;
	f.max_transfer = 1u << 20;
	f.depth = 3;
	f.cdepth = 3;
	f.bytes = 8u << 20;
	f.seed = 77 + (unsigned)_i;
	f.random_sizes = 1;
	ck_assert_int_eq(kid_start(&srv, exec_server_kid, &f), 0);
	crc = flow_client_run(&f, 0, NULL, err, sizeof(err));
	ck_assert_msg(kid_wait(&srv, KID_MS) == 0, "exec'd server %s", srv.msg);
	ck_assert_msg(crc == 0, "%s", err);
	ck_assert_int_eq(shm_of_set(f.name, 0), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Secondary client process: the primary drives devices 0 and 1, the
 * secondary devices 2 and 3.
 */
static void secondary_kid(void *arg)
{
	const struct flow *f = arg;
	uint8_t drive[VDI_MAX_DEVICES] = { 0, 0, 1, 1 };
	char err[FLOW_ERR];

	if (flow_client_run(f, 1, drive, err, sizeof(err)) != 0)
		kid_fail("secondary: %s", err);
}

START_TEST(test_secondary)
{
	static const uint8_t mine[VDI_MAX_DEVICES] = { 1, 1, 0, 0 };
	struct flow f;
	struct flow_client *fc = malloc(sizeof(*fc));
	struct kid srv, sec;
	int src, sc, rc;

	ck_assert_ptr_nonnull(fc);
	flow_defaults(&f);
	f.ndev = 4;
	f.direction = _i ? VDF_ReadMedia : VDF_WriteMedia;
	f.bytes = 4u << 20;
	f.depth = 3;
	f.cdepth = 2;
	f.random_sizes = 1;
	f.seed = 4242 + (unsigned)_i;
	ck_assert_int_eq(kid_start(&srv, flow_server_kid, &f), 0);
	ck_assert_int_eq(kid_start(&sec, secondary_kid, &f), 0);
	flow_client_init(fc, &f, 0, mine);
	flow_client_start(fc);
	flow_client_join(fc);
	/* The primary owns the set (D4): it closes after the secondary. */
	sc = kid_wait(&sec, KID_MS);
	rc = flow_client_close(fc);
	src = kid_wait(&srv, KID_MS);
	ck_assert_msg(sc == 0, "secondary process %s", sec.msg);
	ck_assert_msg(src == 0, "server process %s", srv.msg);
	ck_assert_msg(rc == 0, "primary: %s", fc->err);
	for (uint32_t i = 0; i < 2; i++)
		ck_assert_uint_eq(fc->devs[i].off, f.bytes);
	free(fc);
	ck_assert_int_eq(shm_of_set(f.name, 0), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Buffer handles (D24): the secondary, holding a VDC_Write, turns its
 * buffer into a handle and hands it through a pipe to the primary, which
 * maps it, verifies the bytes, leaves a mark in the buffer and answers;
 * the secondary sees the mark at its own (different) address and only
 * then completes the command.  The pipes are plain fds, so they survive
 * the secondary's exec.
 */
struct handoff {
	uint32_t handle;
	uint32_t size;
	uint64_t off;
	uint64_t addr; /* the secondary's address, for comparison */
	uint32_t dev;
	uint32_t pad;
};

struct handle_ctx {
	int to_primary;   /* secondary writes struct handoff */
	int to_secondary; /* primary answers with a status byte */
	int from_secondary;
	int from_primary;
	const struct flow *f;
	struct vdi_client *primary;
	int handoffs; /* primary: handles verified */
	char err[FLOW_ERR];
};

static const char handle_mark[16] = "mapped-by-prim!";

/* Secondary hook: every 4th command of the device goes to the primary. */
static int handle_hook(void *ctx, struct flow_cdev *cd, VDC_Command *cmd, uint64_t off)
{
	struct handle_ctx *h = ctx;
	struct handoff m;
	uint8_t *back = NULL;
	char st = 0;
	int rc;

	if ((cd->commands % 4) != 0)
		return 0;
	memset(&m, 0, sizeof(m));
	rc = vdi_client_get_buffer_handle(cd->fc->c, cmd->buffer, &m.handle);
	if (rc != 0) {
		snprintf(cd->err, sizeof(cd->err), "secondary: GetBufferHandle = %s (%s)",
		         vdi_strerror(rc), vdi_last_error());
		return -1;
	}
	/* The handle maps back to the same address in this process. */
	rc = vdi_client_map_buffer_handle(cd->fc->c, m.handle, &back);
	if (rc != 0 || back != cmd->buffer) {
		snprintf(cd->err, sizeof(cd->err),
		         "secondary: MapBufferHandle(0x%x) = %s, %p != %p", m.handle,
		         vdi_strerror(rc), (void *)back, (void *)cmd->buffer);
		return -1;
	}
	m.size = (uint32_t)cmd->size;
	m.off = off;
	m.addr = (uint64_t)(uintptr_t)cmd->buffer;
	m.dev = cd->idx;
	if (write(h->to_primary, &m, sizeof(m)) != (ssize_t)sizeof(m) ||
	    read(h->from_primary, &st, 1) != 1 || st != 'k') {
		snprintf(cd->err, sizeof(cd->err), "secondary: primary refused handle 0x%x ('%c')",
		         m.handle, st ? st : '?');
		return -1;
	}
	if (memcmp(cmd->buffer, handle_mark, sizeof(handle_mark)) != 0) {
		snprintf(cd->err, sizeof(cd->err),
		         "secondary: primary's mark not visible at %p (handle 0x%x)",
		         (void *)cmd->buffer, m.handle);
		return -1;
	}
	return 0;
}

/* The secondary is a fresh image of this binary (fork + exec), so its
 * address space is laid out independently of the primary's (ASLR) and
 * the same buffer is expected at another address.  fd 3 carries its
 * failure sentence, fd 4 goes to the primary, fd 5 comes from it. */
static int handle_secondary_main(int argc, char **argv)
{
	static struct flow f;
	static struct handle_ctx h;
	uint8_t drive[VDI_MAX_DEVICES] = { 0, 1 };
	struct flow_client *fc = malloc(sizeof(*fc));

	if (argc != 6)
		return 2;
	if (fcntl(3, F_GETFD) != -1)
		kid_msg_fd = 3;
	if (!fc)
		kid_fail("out of memory");
	flow_defaults(&f);
	snprintf(f.name, sizeof(f.name), "%s", argv[2]);
	f.ndev = (uint32_t)strtoul(argv[3], NULL, 0);
	f.bytes = strtoull(argv[4], NULL, 0);
	f.seed = strtoull(argv[5], NULL, 0);
	memset(&h, 0, sizeof(h));
	h.f = &f;
	h.to_primary = 4;
	h.from_primary = 5;
	flow_client_init(fc, &f, 1, drive);
	fc->hook = handle_hook;
	fc->hook_ctx = &h;
	flow_client_start(fc);
	flow_client_join(fc);
	close(h.to_primary);
	if (flow_client_close(fc) != 0)
		kid_fail("%s", fc->err);
	free(fc);
	return 0;
}

static void handle_secondary_kid(void *arg)
{
	struct handle_ctx *h = arg;
	char ndev[16], bytes[32], seed[32];
	char *argv[] = { (char *)"check_process",
		         (char *)"--handle-secondary",
		         (char *)h->f->name,
		         ndev,
		         bytes,
		         seed,
		         NULL };
	int m, to, from;

	snprintf(ndev, sizeof(ndev), "%u", h->f->ndev);
	snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)h->f->bytes);
	snprintf(seed, sizeof(seed), "%llu", (unsigned long long)h->f->seed);
	m = fcntl(kid_msg_fd, F_DUPFD_CLOEXEC, 100);
	to = fcntl(h->to_primary, F_DUPFD_CLOEXEC, 100);
	from = fcntl(h->from_primary, F_DUPFD_CLOEXEC, 100);

	/* Via high copies, so that no target fd clobbers a source. */
	if (m < 0 || to < 0 || from < 0 || dup2(m, 3) < 0 || dup2(to, 4) < 0 || dup2(from, 5) < 0)
		kid_fail("dup2: %s", strerror(errno));
	execv("/proc/self/exe", argv);
	kid_fail("exec /proc/self/exe: %s", strerror(errno));
}

/* Primary side: answers handoffs until the secondary closes its pipe. */
static void *handle_primary_main(void *arg)
{
	struct handle_ctx *h = arg;
	struct handoff m;
	uint8_t *p;
	long bad;
	char st;
	int rc;

	while (read(h->from_secondary, &m, sizeof(m)) == (ssize_t)sizeof(m)) {
		st = 'x';
		rc = vdi_client_map_buffer_handle(h->primary, m.handle, &p);
		if (rc != 0) {
			snprintf(h->err, sizeof(h->err), "primary: MapBufferHandle(0x%x) = %s (%s)",
			         m.handle, vdi_strerror(rc), vdi_last_error());
		} else if ((uint64_t)(uintptr_t)p == m.addr) {
			snprintf(h->err, sizeof(h->err),
			         "primary: handle 0x%x maps to the secondary's own address %p",
			         m.handle, (void *)p);
		} else if ((bad = pat_bad(p, m.size, pat_dev_seed(h->f->seed, m.dev), m.off)) >=
		           0) {
			snprintf(h->err, sizeof(h->err),
			         "primary: byte %ld of handle 0x%x (device %u offset %llu) differs",
			         bad, m.handle, m.dev, (unsigned long long)m.off);
		} else {
			memcpy(p, handle_mark, sizeof(handle_mark));
			h->handoffs++;
			st = 'k';
		}
		if (write(h->to_secondary, &st, 1) != 1)
			break;
		if (st != 'k')
			break;
	}
	return NULL;
}

START_TEST(test_buffer_handles)
{
	static const uint8_t mine[VDI_MAX_DEVICES] = { 1, 0 };
	struct flow f;
	struct flow_client *fc = malloc(sizeof(*fc));
	struct handle_ctx h;
	struct kid srv, sec;
	pthread_t t;
	int p1[2], p2[2], sc, rc, src;
	uint32_t handle;
	uint8_t *p, local[64];

	ck_assert_ptr_nonnull(fc);
	flow_defaults(&f);
	f.ndev = 2;
	f.direction = VDF_WriteMedia;
	f.bytes = 2u << 20;
	f.depth = 4;
	f.random_sizes = 1;
	f.seed = 99;
	memset(&h, 0, sizeof(h));
	h.f = &f;
	/* The server is forked before the pipes exist, so only the two
	 * clients hold them and EOF means the secondary is done. */
	ck_assert_int_eq(kid_start(&srv, flow_server_kid, &f), 0);
	ck_assert_int_eq(pipe2(p1, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(p2, O_CLOEXEC), 0);
	h.from_secondary = p1[0];
	h.to_primary = p1[1];
	h.from_primary = p2[0];
	h.to_secondary = p2[1];
	ck_assert_int_eq(kid_start(&sec, handle_secondary_kid, &h), 0);
	close(h.to_primary);
	close(h.from_primary);
	flow_client_init(fc, &f, 0, mine);
	rc = flow_client_start(fc);
	ck_assert_msg(rc == 0, "%s", fc->err);
	h.primary = fc->c;
	/* Bad handles and foreign addresses are refused. */
	ck_assert_int_eq(vdi_client_map_buffer_handle(fc->c, 0, &p), VD_E_INVALID);
	ck_assert_int_eq(vdi_client_map_buffer_handle(fc->c, 0xffffffffu, &p), VD_E_INVALID);
	ck_assert_int_eq(vdi_client_get_buffer_handle(fc->c, local, &handle), VD_E_INVALID);
	ck_assert_int_eq(pthread_create(&t, NULL, handle_primary_main, &h), 0);
	flow_client_join(fc);
	sc = kid_wait(&sec, KID_MS);
	/* The secondary is gone, so the answering thread saw EOF. */
	pthread_join(t, NULL);
	close(h.to_secondary);
	close(h.from_secondary);
	rc = flow_client_close(fc);
	src = kid_wait(&srv, KID_MS);
	ck_assert_msg(sc == 0, "secondary process %s", sec.msg);
	ck_assert_msg(h.err[0] == 0, "%s", h.err);
	ck_assert_msg(src == 0, "server process %s", srv.msg);
	ck_assert_msg(rc == 0, "primary: %s", fc->err);
	ck_assert_msg(h.handoffs >= 4, "only %d handles handed over", h.handoffs);
	free(fc);
	ck_assert_int_eq(shm_of_set(f.name, 0), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Prefix zone: the client scribbles over prefixZoneSize bytes below every
 * buffer it holds (several at once) while the peer verifies every data
 * byte; data starts are aligned to the client's alignment.
 */
START_TEST(test_prefix_zone)
{
	struct flow f;

	flow_defaults(&f);
	f.ndev = 2;
	f.direction = _i & 1 ? VDF_ReadMedia : VDF_WriteMedia;
	f.prefix = _i & 2 ? 512 : 4096;
	f.alignment = _i & 2 ? 0 : 8192;
	f.depth = 6;
	f.cdepth = 6;
	f.bytes = 4u << 20;
	f.random_sizes = 1;
	f.seed = 555 + (unsigned)_i;
	run_forked(&f);
}
END_TEST

/* ---------------------------------------------------------------------
 * Client and server in one process, on threads.
 */
struct srv_thread {
	const struct flow *f;
	int rc;
	char err[FLOW_ERR];
};

static void *srv_thread_main(void *arg)
{
	struct srv_thread *st = arg;

	st->rc = flow_server_run(st->f, st->err, sizeof(st->err));
	return NULL;
}

struct cli_thread {
	const struct flow *f;
	int rc;
	char err[FLOW_ERR];
};

static void *cli_thread_main(void *arg)
{
	struct cli_thread *ct = arg;

	ct->rc = flow_client_run(ct->f, 0, NULL, ct->err, sizeof(ct->err));
	return NULL;
}

START_TEST(test_one_process)
{
	struct flow f;
	struct srv_thread st;
	pthread_t t;
	char err[FLOW_ERR];
	int crc;

	flow_defaults(&f);
	f.ndev = 4;
	f.direction = _i ? VDF_ReadMedia : VDF_WriteMedia;
	f.bytes = 4u << 20;
	f.depth = 4;
	f.cdepth = 3;
	f.random_sizes = 1;
	f.flush = 1;
	f.seed = 31337 + (unsigned)_i;
	memset(&st, 0, sizeof(st));
	st.f = &f;
	ck_assert_int_eq(pthread_create(&t, NULL, srv_thread_main, &st), 0);
	crc = flow_client_run(&f, 0, NULL, err, sizeof(err));
	pthread_join(t, NULL);
	ck_assert_msg(st.rc == 0, "%s", st.err);
	ck_assert_msg(crc == 0, "%s", err);
	ck_assert_int_eq(shm_of_set(f.name, 0), 0);
}
END_TEST

/* Two sets at once in one process, a backup and a restore, each with its
 * own server thread: neither disturbs the other. */
START_TEST(test_two_sets)
{
	struct flow f[2];
	struct srv_thread st[2];
	struct cli_thread ct[2];
	pthread_t ts[2], tc[2];

	for (int i = 0; i < 2; i++) {
		flow_defaults(&f[i]);
		f[i].ndev = 3;
		f[i].direction = i ? VDF_ReadMedia : VDF_WriteMedia;
		f[i].bytes = 4u << 20;
		f[i].depth = 3;
		f[i].cdepth = 2;
		f[i].random_sizes = 1;
		f[i].seed = 8080 + (unsigned)i;
		memset(&st[i], 0, sizeof(st[i]));
		st[i].f = &f[i];
		memset(&ct[i], 0, sizeof(ct[i]));
		ct[i].f = &f[i];
	}
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(pthread_create(&ts[i], NULL, srv_thread_main, &st[i]), 0);
		ck_assert_int_eq(pthread_create(&tc[i], NULL, cli_thread_main, &ct[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(ts[i], NULL);
		pthread_join(tc[i], NULL);
	}
	for (int i = 0; i < 2; i++) {
		ck_assert_msg(st[i].rc == 0, "set %d: %s", i, st[i].err);
		ck_assert_msg(ct[i].rc == 0, "set %d: %s", i, ct[i].err);
		ck_assert_int_eq(shm_of_set(f[i].name, 0), 0);
	}
}
END_TEST

/* The pattern itself: a changed byte is found at its index, another
 * offset or device gives other bytes (so a misplaced buffer is caught). */
START_TEST(test_pattern)
{
	uint8_t a[4096], b[4096];
	uint64_t s0 = pat_dev_seed(1, 0), s1 = pat_dev_seed(1, 1);

	pat_fill(a, sizeof(a), s0, 8192);
	ck_assert_int_eq(pat_bad(a, sizeof(a), s0, 8192), -1);
	ck_assert_int_eq(pat_bad(a, sizeof(a), s0, 8192 + 512), 0);
	ck_assert_int_eq(pat_bad(a, sizeof(a), s1, 8192), 0);
	memcpy(b, a, sizeof(a));
	b[1234] ^= 0x10;
	ck_assert_int_eq(pat_bad(b, sizeof(b), s0, 8192), 1234);
}
END_TEST

/* ---------------------------------------------------------------------
 * Leftovers (vdi doctor, D16).
 */

#define MAX_LEFT 8

struct left_list {
	int n;
	struct vdi_leftover l[MAX_LEFT];
};

/* Collects the leftovers of this process's instance only: other runs
 * on the machine may leave their own. */
static int collect_left(void *arg, const struct vdi_leftover *l)
{
	struct left_list *ll = arg;

	if (strcmp(l->instance, tl_instance()) == 0 && ll->n < MAX_LEFT)
		ll->l[ll->n++] = *l;
	return 0;
}

static const struct vdi_leftover *find_left(const struct left_list *ll, const char *name)
{
	for (int i = 0; i < ll->n; i++)
		if (strcmp(ll->l[i].name, name) == 0)
			return &ll->l[i];
	return NULL;
}

static void list_left(struct left_list *ll)
{
	memset(ll, 0, sizeof(*ll));
	TL_OK(vdi_leftovers_list(collect_left, ll));
}

struct doomed {
	char instance[VDI_MAX_INSTANCE + 1]; /* the parent's tl_instance() */
	char name[TL_NAME_MAX];
};

/* The child creates a set and dies without Close: a stale set. */
static void create_and_die(void *arg)
{
	struct doomed *d = arg;
	struct vdi_client *c;
	VDConfig cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 2;
	if (vdi_client_new(&c) != 0 || vdi_client_create_ex(c, d->instance, d->name, &cfg) != 0)
		kid_fail("create: %s", vdi_last_error());
}

/* A /dev/shm object of n bytes made behind the engine's back. */
static void plant(const char *obj, size_t n)
{
	int fd = shm_open(obj, O_RDWR | O_CREAT | O_EXCL, 0600);

	ck_assert_msg(fd >= 0, "shm_open %s: %s", obj, strerror(errno));
	ck_assert_int_eq(ftruncate(fd, (off_t)n), 0);
	close(fd);
}

START_TEST(test_leftovers)
{
	char live[TL_NAME_MAX], junk[TL_NAME_MAX], orphan[TL_NAME_MAX];
	char obj[256];
	struct doomed d;
	const char *stale = d.name;
	const char *inst = tl_instance();
	struct left_list ll;
	struct vdi_leftover old;
	const struct vdi_leftover *l;
	struct vdi_client *c, *c2;
	struct kid k;
	pid_t dead_pid;
	VDConfig cfg;

	snprintf(d.instance, sizeof(d.instance), "%s", inst);
	tl_name(d.name);
	tl_name(live);
	tl_name(junk);
	tl_name(orphan);
	ck_assert_int_eq(kid_start(&k, create_and_die, &d), 0);
	dead_pid = k.pid;
	ck_assert_msg(kid_wait(&k, KID_MS) == 0, "%s", k.msg);
	ck_assert_int_gt(tl_shm_count_set_in(inst, stale), 0);
	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	TL_OK(vdi_client_new(&c));
	TL_OK(vdi_client_create_ex(c, inst, live, &cfg));
	snprintf(obj, sizeof(obj), "/vdi.%s.%s", inst, junk);
	plant(obj, 10);
	snprintf(obj, sizeof(obj), "/vdi-b3.%s.%s", inst, orphan);
	plant(obj, 4096);

	/* The dead creator's set at once; the young objects not yet. */
	list_left(&ll);
	ck_assert_int_eq(ll.n, 1);
	l = find_left(&ll, stale);
	ck_assert_ptr_nonnull(l);
	ck_assert_int_eq(l->kind, VDI_LEFTOVER_SET);
	ck_assert_int_eq(l->client_pid, dead_pid);
	ck_assert_int_eq(l->server_pid, 0);
	ck_assert_int_eq(l->area, -1);
	ck_assert_uint_ge(l->bytes, 2 * 4096); /* a header and two devices */
	old = *l;

	/* Two seconds on, the debris and the orphan area too. */
	tl_sleep_ms(2100);
	list_left(&ll);
	ck_assert_int_eq(ll.n, 3);
	ck_assert_ptr_null(find_left(&ll, live));
	ck_assert_int_eq(find_left(&ll, junk)->kind, VDI_LEFTOVER_DEBRIS);
	l = find_left(&ll, orphan);
	ck_assert_int_eq(l->kind, VDI_LEFTOVER_AREA);
	ck_assert_int_eq(l->area, 3);
	ck_assert_uint_eq(l->bytes, 4096);
	for (int i = 0; i < ll.n; i++)
		TL_OK(vdi_leftover_remove(&ll.l[i]));
	ck_assert_int_eq(tl_shm_count_set_in(inst, stale), 0);
	ck_assert_int_eq(tl_shm_count_set_in(inst, junk), 0);
	ck_assert_int_eq(tl_shm_count_set_in(inst, orphan), 0);
	list_left(&ll);
	ck_assert_int_eq(ll.n, 0);
	TL_RC(vdi_leftover_remove(&old), VD_E_INVALID); /* gone */

	/* The live set is kept and untouched. */
	ck_assert_int_gt(tl_shm_count_set_in(inst, live), 0);
	TL_RC(vdi_client_get_configuration(c, 0, &cfg), VD_E_TIMEOUT);

	/* The name taken again by a live set: the old report removes
	 * nothing. */
	TL_OK(vdi_client_new(&c2));
	TL_OK(vdi_client_create_ex(c2, inst, stale, &cfg));
	TL_RC(vdi_leftover_remove(&old), VD_E_BUSY);
	TL_RC(vdi_client_get_configuration(c2, 0, &cfg), VD_E_TIMEOUT);
	TL_OK(vdi_client_close(c2));
	TL_OK(vdi_client_close(c));
	vdi_client_free(c2);
	vdi_client_free(c);
	TL_RC(vdi_leftover_remove(NULL), VD_E_INVALID);
	ck_assert_int_eq(tl_shm_count_set_in(inst, live), 0);
}
END_TEST

static void leftovers_teardown(void)
{
	tl_shm_cleanup_instance(tl_instance());
}

static Suite *process_suite(void)
{
	Suite *s = suite_create("process");
	TCase *tc;

	tc = tcase_create("pattern");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_pattern);
	suite_add_tcase(s, tc);

	tc = tcase_create("fork");
	tcase_set_timeout(tc, 90);
	tcase_add_loop_test(tc, test_fork_flow, 0, 6);
	suite_add_tcase(s, tc);

	tc = tcase_create("exec");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_exec_flow, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("secondary");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_secondary, 0, 2);
	tcase_add_test(tc, test_buffer_handles);
	suite_add_tcase(s, tc);

	tc = tcase_create("prefix");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_prefix_zone, 0, 4);
	suite_add_tcase(s, tc);

	tc = tcase_create("one-process");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_one_process, 0, 2);
	tcase_add_test(tc, test_two_sets);
	suite_add_tcase(s, tc);

	tc = tcase_create("leftovers");
	tcase_set_timeout(tc, 30);
	tcase_add_checked_fixture(tc, NULL, leftovers_teardown);
	tcase_add_test(tc, test_leftovers);
	suite_add_tcase(s, tc);
	return s;
}

int main(int argc, char **argv)
{
	SRunner *sr;
	int failed;

	if (argc > 1 && strcmp(argv[1], "--flow-server") == 0)
		return exec_server_main(argc, argv);
	if (argc > 1 && strcmp(argv[1], "--handle-secondary") == 0)
		return handle_secondary_main(argc, argv);
	tl_init();
	sr = srunner_create(process_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tl_shm_cleanup_run();
	return failed ? 1 : 0;
}
