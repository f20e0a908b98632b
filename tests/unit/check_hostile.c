/* SPDX-License-Identifier: MIT */
/*
 * check_hostile.c - a corrupt or hostile peer (issue 2 item 7, D28): it
 * opens /dev/shm/vdi.* itself, maps it and writes whatever it likes.  The
 * other side must answer VD_E_PROTOCOL / VD_E_INVALID / VD_E_ABORT and
 * never crash, never hang.  Every victim runs in a forked child, so a
 * crash shows as a death by signal (or a sanitizer's exit status), a
 * hang as a child that does not finish in time.
 *
 *   - targeted, victim = client: this process is a real server that, after
 *     SendCommand, rewrites the command slot or the ring (codes 0, 20 and
 *     huge; sizes 0, off-block and above maxTransferSize; buffer handles
 *     of no area, past the area, 0 and ~0; a slot index out of range; a
 *     ring count out of range; a slot already outstanding; a bad final
 *     configuration) before the client's GetCommand;
 *   - targeted, victim = server: this process is a real client that
 *     pushes forged completions (a slot not outstanding, a slot index out
 *     of range, a ring count out of range, more bytes than the command
 *     had, a second completion of a completed slot);
 *   - forged buffer handles (D30): a secondary process maps what a peer
 *     hands it: only the handle GetBufferHandle gave out for a held
 *     command maps; that handle + 1 (the buffer + 512), - 1, the handle
 *     of a command in flight that was never given out, another area, 0,
 *     ~0, the handle once its command completed, and a registry entry
 *     forged in shared memory all give VD_E_INVALID, and the set lives on;
 *   - a set lock taken by a live process outside the set and never
 *     released: Open gives up after a bounded wait;
 *   - generic: random bytes at random offsets of the control region
 *     while a backup runs between two children, many seeds; and random
 *     bytes over a created set's header before a server opens it.
 *
 * Layout knowledge comes from core/shm.h only.
 */
#include <check.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "flow.h"
#include "shm.h"

#define KID_MS 20000

/* A mapping of a set's control region made behind the engine's back. */
struct raw {
	struct vdi_shm_header *hdr;
	size_t size;
};

static int raw_map(struct raw *r, const char *name)
{
	char path[256];
	struct stat st;
	int fd;

	memset(r, 0, sizeof(*r));
	shm_ctl_path(name, path, sizeof(path));
	fd = open(path, O_RDWR);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || st.st_size <= 0) {
		close(fd);
		return -1;
	}
	r->size = (size_t)st.st_size;
	r->hdr = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (r->hdr == MAP_FAILED) {
		r->hdr = NULL;
		return -1;
	}
	return 0;
}

static void raw_unmap(struct raw *r)
{
	if (r->hdr)
		munmap(r->hdr, r->size);
	r->hdr = NULL;
}

/* Pipes between this process and a victim: one byte or int at a time. */
struct line {
	int up[2];   /* victim -> us */
	int down[2]; /* us -> victim */
};

static void line_open(struct line *l)
{
	ck_assert_int_eq(pipe(l->up), 0);
	ck_assert_int_eq(pipe(l->down), 0);
}

static void line_close(struct line *l)
{
	close(l->up[0]);
	close(l->up[1]);
	close(l->down[0]);
	close(l->down[1]);
}

static void put_int(int fd, int v)
{
	if (write(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		kid_fail("pipe write: %s", strerror(errno));
}

/* Reads an int, at most 10 s; -1 on silence. */
static int get_int(int fd, int *v)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, 10000) != 1 || read(fd, v, sizeof(*v)) != (ssize_t)sizeof(*v))
		return -1;
	return 0;
}

/* ---------------------------------------------------------------------
 * Victim = client.
 */
enum cattack {
	CA_CODE_0,
	CA_CODE_20,
	CA_CODE_HUGE,
	CA_SIZE_BIG,
	CA_SIZE_0,
	CA_SIZE_ODD,
	CA_HANDLE_0,
	CA_HANDLE_ALL,
	CA_HANDLE_PAST,
	CA_HANDLE_AREA,
	CA_SLOT_RANGE,
	CA_RING_COUNT,
	CA_SLOT_DUP,
	CA_CFG_BLOCK,
	CA_CFG_MAXTRANSFER,
	CA_COUNT
};
static const char *const cattack_names[] = {
	"code 0",
	"code 20",
	"code 0xffffffff",
	"size above maxTransferSize",
	"size 0",
	"size not a block multiple",
	"buffer handle 0",
	"buffer handle 0xffffffff",
	"buffer handle past the area",
	"buffer handle of no area",
	"slot index 1000",
	"command ring count 1000",
	"slot already outstanding",
	"final blockSize 3",
	"final maxTransferSize 0xffffffff",
};

struct cvictim {
	char name[TL_NAME_MAX];
	enum cattack a;
	struct line l;
};

static int is_cfg_attack(enum cattack a)
{
	return a == CA_CFG_BLOCK || a == CA_CFG_MAXTRANSFER;
}

/* The client: reports each return code up the pipe; waits for a byte
 * from us before each call the attack targets. */
static void client_victim(void *arg)
{
	struct cvictim *v = arg;
	struct vdi_client *c;
	struct vdi_client_device *d;
	VDC_Command *cmd;
	VDConfig cfg;
	int go, rc;

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	if (vdi_client_new(&c) != 0 || vdi_client_create(c, v->name, &cfg) != 0)
		kid_fail("client create: %s", vdi_last_error());
	if (is_cfg_attack(v->a)) {
		if (get_int(v->l.down[0], &go) != 0)
			kid_fail("no go");
		put_int(v->l.up[1], vdi_client_get_configuration(c, 5000, &cfg));
		put_int(v->l.up[1], vdi_client_get_configuration(c, 0, &cfg));
		vdi_client_close(c);
		vdi_client_free(c);
		return;
	}
	rc = vdi_client_get_configuration(c, 5000, &cfg);
	if (rc == 0)
		rc = vdi_client_open_device(c, v->name, &d);
	if (rc != 0)
		kid_fail("client setup: %s (%s)", vdi_strerror(rc), vdi_last_error());
	put_int(v->l.up[1], 0); /* ready */
	if (get_int(v->l.down[0], &go) != 0)
		kid_fail("no go");
	if (v->a == CA_SLOT_DUP) {
		rc = vdi_client_get_command(d, 5000, &cmd); /* the honest one */
		put_int(v->l.up[1], rc);
		if (get_int(v->l.down[0], &go) != 0)
			kid_fail("no second go");
	}
	put_int(v->l.up[1], vdi_client_get_command(d, 3000, &cmd));
	put_int(v->l.up[1], vdi_client_get_command(d, 0, &cmd));
	rc = vdi_client_close(c);
	vdi_client_free(c);
	put_int(v->l.up[1], rc);
}

/* Rewrites what the client is about to fetch on device 0. */
static void attack_command(struct raw *r, enum cattack a)
{
	struct vdi_shm_device *dv = vdi_shm_dev(r->hdr, 0);
	uint32_t head = __atomic_load_n(&dv->cmd.head, __ATOMIC_ACQUIRE);
	uint32_t idx = dv->cmd.entries[head & VDI_RING_MASK];
	struct vdi_shm_slot *s = &dv->slots[idx & VDI_RING_MASK];

	switch (a) {
	case CA_CODE_0: s->command_code = 0; break;
	case CA_CODE_20: s->command_code = 20; break;
	case CA_CODE_HUGE: s->command_code = 0xffffffffu; break;
	case CA_SIZE_BIG: s->size = 65536 + 512; break;
	case CA_SIZE_0: s->size = 0; break;
	case CA_SIZE_ODD: s->size = 1000; break;
	case CA_HANDLE_0: s->buffer_handle = 0; break;
	case CA_HANDLE_ALL: s->buffer_handle = 0xffffffffu; break;
	case CA_HANDLE_PAST: s->buffer_handle = (s->buffer_handle & 0xff000000u) | 0xffffffu; break;
	case CA_HANDLE_AREA: s->buffer_handle = (41u << 24) | (s->buffer_handle & 0xffffffu); break;
	case CA_SLOT_RANGE: dv->cmd.entries[head & VDI_RING_MASK] = 1000; break;
	case CA_RING_COUNT: __atomic_store_n(&dv->cmd.tail, head + 1000, __ATOMIC_RELEASE); break;
	case CA_SLOT_DUP: {
		/* The entry after the fetched one names the fetched slot. */
		uint32_t prev = dv->cmd.entries[(head - 1) & VDI_RING_MASK];
		dv->cmd.entries[head & VDI_RING_MASK] = prev;
		break;
	}
	default: break;
	}
	/* The pipe write that tells the victim to go comes after these
	 * stores (a system call): it sees them. */
}

START_TEST(test_client_victim)
{
	struct cvictim v;
	struct kid k;
	struct vdi_server *s;
	struct vdi_server_device *sd = NULL;
	struct tl_agent agent;
	struct tl_cmd cmds[2];
	uint8_t *bufs[2];
	struct raw r;
	VDConfig cfg;
	int ready, rc1 = 0, rc2 = 0, rc3 = 0, honest = 0, n;

	memset(&v, 0, sizeof(v));
	tl_name(v.name);
	v.a = (enum cattack)_i;
	line_open(&v.l);
	ck_assert_int_eq(kid_start(&k, client_victim, &v), 0);
	TL_OK(vdi_server_new(&s));
	TL_OK(vdi_server_open_wait(s, NULL, v.name, 5000));
	TL_OK(vdi_server_get_configuration(s, &cfg));
	TL_OK(vdi_server_begin_configuration(s, VDF_WriteMedia, 512, 0, 65536, 0));
	TL_OK(vdi_server_request_buffers(s, 65536, 0, 2));
	TL_OK(vdi_server_end_configuration(s));
	ck_assert_int_eq(raw_map(&r, v.name), 0);
	TL_OK(tl_agent_start(&agent, s));
	if (is_cfg_attack(v.a)) {
		if (v.a == CA_CFG_BLOCK)
			r.hdr->final_cfg.blockSize = 3;
		else
			r.hdr->final_cfg.maxTransferSize = 0xffffffffu;
		put_int(v.l.down[1], 1);
		ck_assert_int_eq(get_int(v.l.up[0], &rc1), 0);
		ck_assert_int_eq(get_int(v.l.up[0], &rc2), 0);
	} else {
		TL_OK(vdi_server_open_device(s, v.name, &sd));
		ck_assert_int_eq(get_int(v.l.up[0], &ready), 0);
		n = v.a == CA_SLOT_DUP ? 2 : 1;
		for (int i = 0; i < n; i++) {
			TL_OK(vdi_server_allocate_buffer(s, &bufs[i], 65536, 0));
			tl_cmd_init(&cmds[i], VDC_Write, 65536, 0, bufs[i]);
		}
		TL_OK(vdi_server_send_command(sd, &cmds[0].cmd));
		if (v.a == CA_SLOT_DUP) {
			put_int(v.l.down[1], 1);
			ck_assert_int_eq(get_int(v.l.up[0], &honest), 0);
			TL_OK(vdi_server_send_command(sd, &cmds[1].cmd));
		}
		attack_command(&r, v.a);
		put_int(v.l.down[1], 1);
		ck_assert_int_eq(get_int(v.l.up[0], &rc1), 0);
		ck_assert_int_eq(get_int(v.l.up[0], &rc2), 0);
		ck_assert_int_eq(get_int(v.l.up[0], &rc3), 0);
		/* Our commands end with 995: the client aborted the set. */
		for (int i = 0; i < n; i++) {
			TL_OK(tl_cmd_wait(&cmds[i], 3000));
			ck_assert_uint_eq(cmds[i].code, ERROR_OPERATION_ABORTED);
		}
	}
	ck_assert_msg(kid_wait(&k, KID_MS) == 0, "client victim of %s: %s", cattack_names[v.a],
	              k.msg);
	ck_assert_msg(honest == 0, "honest GetCommand = %s", vdi_strerror(honest));
	ck_assert_msg(rc1 == VD_E_PROTOCOL, "%s: client got %s, want VD_E_PROTOCOL",
	              cattack_names[v.a], vdi_strerror(rc1));
	ck_assert_msg(rc2 == VD_E_ABORT, "%s: next call %s, want VD_E_ABORT", cattack_names[v.a],
	              vdi_strerror(rc2));
	ck_assert_msg(rc3 == 0 || rc3 == VD_E_OPEN, "%s: client Close = %s", cattack_names[v.a],
	              vdi_strerror(rc3));
	/* The server learns of it too. */
	ck_assert_int_eq(tl_agent_join(&agent, 3000), 0);
	TL_RC(vdi_server_allocate_buffer(s, &bufs[0], 65536, 0), VD_E_ABORT);
	raw_unmap(&r);
	vdi_server_close(s);
	vdi_server_free(s);
	line_close(&v.l);
	ck_assert_int_eq(shm_of_set(v.name, 0), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Victim = server.
 */
enum sattack { SA_NOT_OUTSTANDING, SA_SLOT_RANGE, SA_RING_COUNT, SA_BYTES, SA_TWICE, SA_COUNT };
static const char *const sattack_names[] = {
	"completion of a slot not outstanding", "completion slot index 5000",
	"completion ring count 1000",           "bytes transferred above the size",
	"second completion of a slot",
};

struct svictim {
	char name[TL_NAME_MAX];
	enum sattack a;
	struct line l;
};

/* The server: two VDC_Write; every routine must run once, the second
 * command with 995, the agent must return, and SendCommand must then
 * fail with VD_E_ABORT. */
static void server_victim(void *arg)
{
	struct svictim *v = arg;
	struct vdi_server *s;
	struct vdi_server_device *sd;
	struct tl_agent agent;
	struct tl_cmd cmds[3];
	uint8_t *bufs[2];
	VDConfig cfg;
	int rc;

#define SV(expr)                                                                  \
	do {                                                                      \
		if ((rc = (expr)) != 0)                                           \
			kid_fail("server: %s = %s (%s)", #expr, vdi_strerror(rc), \
			         vdi_last_error());                               \
	} while (0)
	SV(vdi_server_new(&s));
	SV(vdi_server_open_wait(s, NULL, v->name, 5000));
	SV(vdi_server_get_configuration(s, &cfg));
	SV(vdi_server_begin_configuration(s, VDF_WriteMedia, 512, 0, 65536, 0));
	SV(vdi_server_request_buffers(s, 65536, 0, 2));
	SV(vdi_server_end_configuration(s));
	SV(tl_agent_start(&agent, s));
	SV(vdi_server_open_device(s, v->name, &sd));
	for (int i = 0; i < 2; i++) {
		SV(vdi_server_allocate_buffer(s, &bufs[i], 65536, 0));
		tl_cmd_init(&cmds[i], VDC_Write, 65536, 0, bufs[i]);
		SV(vdi_server_send_command(sd, &cmds[i].cmd));
	}
	put_int(v->l.up[1], 0);
	for (int i = 0; i < 2; i++)
		if (tl_cmd_wait(&cmds[i], 5000) != 0)
			kid_fail("server: command %d never completed after %s", i,
			         sattack_names[v->a]);
	if (cmds[1].code != ERROR_OPERATION_ABORTED)
		kid_fail("server: second command completed with %s after %s",
		         vdi_strcompletion(cmds[1].code), sattack_names[v->a]);
	if (cmds[0].code != (v->a == SA_TWICE ? 0u : ERROR_OPERATION_ABORTED))
		kid_fail("server: first command completed with %s after %s",
		         vdi_strcompletion(cmds[0].code), sattack_names[v->a]);
	if (tl_agent_join(&agent, 3000) != 0)
		kid_fail("server: agent still running after %s", sattack_names[v->a]);
	usleep(20000);
	if (tl_cmd_calls(&cmds[0]) != 1 || tl_cmd_calls(&cmds[1]) != 1)
		kid_fail("server: routines ran %d and %d times", tl_cmd_calls(&cmds[0]),
		         tl_cmd_calls(&cmds[1]));
	tl_cmd_init(&cmds[2], VDC_Write, 65536, 0, bufs[0]);
	rc = vdi_server_send_command(sd, &cmds[2].cmd);
	if (rc != VD_E_ABORT)
		kid_fail("server: SendCommand after %s = %s", sattack_names[v->a],
		         vdi_strerror(rc));
	vdi_server_close(s);
	vdi_server_free(s);
#undef SV
}

/* Pushes slot idx onto device 0's done ring, as a client would. */
static void push_done(struct vdi_shm_device *dv, uint32_t idx)
{
	uint32_t tail = __atomic_load_n(&dv->done.tail, __ATOMIC_ACQUIRE);

	__atomic_store_n(&dv->done.entries[tail & VDI_RING_MASK], idx, __ATOMIC_RELAXED);
	__atomic_store_n(&dv->done.tail, tail + 1, __ATOMIC_RELEASE);
}

START_TEST(test_server_victim)
{
	struct svictim v;
	struct kid k;
	struct vdi_client *c;
	struct vdi_client_device *d;
	struct vdi_shm_device *dv;
	VDC_Command *cmd;
	struct raw r;
	VDConfig cfg;
	uint32_t idx;
	uint64_t t0;
	int sent, rc;

	memset(&v, 0, sizeof(v));
	tl_name(v.name);
	v.a = (enum sattack)_i;
	line_open(&v.l);
	ck_assert_int_eq(kid_start(&k, server_victim, &v), 0);
	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	TL_OK(vdi_client_new(&c));
	TL_OK(vdi_client_create(c, v.name, &cfg));
	TL_OK(vdi_client_get_configuration(c, 5000, &cfg));
	TL_OK(vdi_client_open_device(c, v.name, &d));
	ck_assert_int_eq(get_int(v.l.up[0], &sent), 0);
	TL_OK(vdi_client_get_command(d, 3000, &cmd));
	ck_assert_int_eq(raw_map(&r, v.name), 0);
	dv = vdi_shm_dev(r.hdr, 0);
	idx = dv->cmd.entries[(dv->cmd.head - 1) & VDI_RING_MASK];
	switch (v.a) {
	case SA_NOT_OUTSTANDING: push_done(dv, (idx + 7) & VDI_RING_MASK); break;
	case SA_SLOT_RANGE: push_done(dv, 5000); break;
	case SA_RING_COUNT:
		__atomic_store_n(&dv->done.tail, dv->done.tail + 1000, __ATOMIC_RELEASE);
		break;
	case SA_BYTES:
		dv->slots[idx].completion_code = 0;
		dv->slots[idx].bytes_transferred = 65536 + 1;
		push_done(dv, idx);
		break;
	case SA_TWICE:
		TL_OK(vdi_client_complete_command(d, cmd, 0, 65536, 0));
		usleep(50000);
		push_done(dv, idx);
		break;
	default: break;
	}
	/* The server aborts; this client hears of it within a second. */
	t0 = now_us();
	/* The second command may still be delivered before the abort. */
	for (int i = 0; i < 3; i++)
		if ((rc = vdi_client_get_command(d, 2000, &cmd)) != 0)
			break;
	ck_assert_msg(kid_wait(&k, KID_MS) == 0, "server victim of %s: %s", sattack_names[v.a],
	              k.msg);
	ck_assert_msg(rc == VD_E_ABORT, "client after %s: %s", sattack_names[v.a],
	              vdi_strerror(rc));
	ck_assert_msg(now_us() - t0 < 1500000u, "abort seen after %llu ms",
	              (unsigned long long)((now_us() - t0) / 1000));
	raw_unmap(&r);
	rc = vdi_client_close(c);
	vdi_client_free(c);
	ck_assert_msg(rc == 0 || rc == VD_E_OPEN, "client Close = %s", vdi_strerror(rc));
	line_close(&v.l);
	ck_assert_int_eq(shm_of_set(v.name, 0), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Forged buffer handles (D30).
 */

/* The secondary: reads the set name, then handles; answers each with
 * MapBufferHandle's code and, when it mapped, the first byte there. */
static void handle_victim(void *arg)
{
	struct line *l = arg;
	char name[TL_NAME_MAX];
	struct vdi_client *c;
	uint8_t *p;
	int h, rc;

	if (read(l->down[0], name, sizeof(name)) != (ssize_t)sizeof(name))
		kid_fail("no set name");
	name[sizeof(name) - 1] = '\0';
	if (vdi_client_new(&c) != 0 || vdi_client_open_in_secondary(c, name) != 0)
		kid_fail("secondary: %s", vdi_last_error());
	put_int(l->up[1], 0);
	while (get_int(l->down[0], &h) == 0) {
		p = NULL;
		rc = vdi_client_map_buffer_handle(c, (uint32_t)h, &p);
		put_int(l->up[1], rc);
		put_int(l->up[1], rc == 0 && p ? p[0] : -1);
	}
	vdi_client_free(c);
}

/* Asks the victim to map h; returns its code, *byte the byte it read. */
static int victim_map(struct line *l, uint32_t h, int *byte)
{
	int rc = 1;

	put_int(l->down[1], (int)h);
	ck_assert_int_eq(get_int(l->up[0], &rc), 0);
	ck_assert_int_eq(get_int(l->up[0], byte), 0);
	return rc;
}

START_TEST(test_forged_handles)
{
	static struct tl_pair P;
	struct tl_pair_opts o;
	struct tl_cmd cmds[2];
	struct vdi_set_info info;
	struct vdi_shm_slot *sb = NULL;
	VDC_Command *ca = NULL, *cb = NULL;
	uint8_t *bufs[2];
	uint32_t ha = 0, hb;
	struct line l;
	struct kid k;
	struct raw r;
	int byte, ready;

	line_open(&l);
	/* Forked before the pair has threads; it waits for the name. */
	ck_assert_int_eq(kid_start(&k, handle_victim, &l), 0);
	tl_pair_opts_default(&o);
	TL_OK(tl_pair_init(&P, &o));
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	for (int i = 0; i < 2; i++) {
		TL_OK(vdi_server_allocate_buffer(P.s, &bufs[i], 65536, 0));
		memset(bufs[i], 0xA1 + i, 65536);
		tl_cmd_init(&cmds[i], VDC_Write, 65536, 0, bufs[i]);
		TL_OK(vdi_server_send_command(P.sd[0], &cmds[i].cmd));
	}
	TL_OK(vdi_client_get_command(P.cd[0], 3000, &ca));
	TL_OK(vdi_client_get_command(P.cd[0], 3000, &cb));
	TL_OK(vdi_client_get_buffer_handle(P.c, ca->buffer, &ha));
	/* The peer reads the handle of the command never given out. */
	ck_assert_int_eq(raw_map(&r, P.name), 0);
	for (uint32_t i = 0; i < VDI_QUEUE_DEPTH && !sb; i++) {
		struct vdi_shm_slot *ss = &vdi_shm_dev(r.hdr, 0)->slots[i];

		if (ss->buffer_handle && ss->buffer_handle != ha)
			sb = ss;
	}
	ck_assert_ptr_nonnull(sb);
	hb = sb->buffer_handle;
	ck_assert_int_eq(write(l.down[1], P.name, TL_NAME_MAX), TL_NAME_MAX);
	ck_assert_int_eq(get_int(l.up[0], &ready), 0);

	ck_assert_int_eq(victim_map(&l, ha, &byte), 0);
	ck_assert_int_eq(byte, 0xA1);
	const uint32_t forged[] = { ha + 1, ha - 1, hb, ha + (1u << 24), 0, 0xffffffffu };
	for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++)
		ck_assert_msg(victim_map(&l, forged[i], &byte) == VD_E_INVALID,
		              "forged handle 0x%08x (given out: 0x%08x) mapped", forged[i], ha);
	/* A registry entry forged by the peer: past the area it is refused
	 * by the bounds, one that names another buffer than the slot's by
	 * the match; neither crashes. */
	__atomic_store_n(&sb->issued, hb + 1, __ATOMIC_RELEASE);
	ck_assert_int_eq(victim_map(&l, hb + 1, &byte), VD_E_INVALID);
	sb->buffer_handle = hb | 0xffffffu;
	__atomic_store_n(&sb->issued, hb | 0xffffffu, __ATOMIC_RELEASE);
	ck_assert_int_eq(victim_map(&l, hb | 0xffffffu, &byte), VD_E_INVALID);
	/* Completed: the handle given out maps no more. */
	TL_OK(vdi_client_complete_command(P.cd[0], ca, 0, 65536, 0));
	ck_assert_int_eq(victim_map(&l, ha, &byte), VD_E_INVALID);
	/* A refused handle is the caller's error, not the peer's: the set
	 * is not aborted. */
	TL_OK(vdi_set_info_get(NULL, P.name, &info));
	ck_assert_msg(info.state == VDI_SET_ACTIVE, "set is %s: %s", vdi_set_state_name(info.state),
	              info.abort_reason);
	close(l.down[1]);
	l.down[1] = -1;
	ck_assert_msg(kid_wait(&k, KID_MS) == 0, "secondary: %s", k.msg);
	raw_unmap(&r);
	tl_pair_destroy(&P);
	line_close(&l);
	ck_assert_int_eq(shm_of_set(P.name, 0), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Generic scribbling while a backup runs between two children.
 */
static void quiet_flow_server(void *arg)
{
	char err[FLOW_ERR];

	/* Any outcome is fine; only a crash or a hang is not. */
	if (flow_server_run(arg, err, sizeof(err)) != 0 && getenv("FLOW_DEBUG"))
		fprintf(stderr, "scribbled %s\n", err);
}

static void quiet_flow_client(void *arg)
{
	char err[FLOW_ERR];

	if (flow_client_run(arg, 0, NULL, err, sizeof(err)) != 0 && getenv("FLOW_DEBUG"))
		fprintf(stderr, "scribbled %s\n", err);
}

static void scribble(struct raw *r, uint64_t *rng)
{
	size_t hdr = sizeof(struct vdi_shm_header);
	size_t len = 1 + rnd_next(rng) % 16, off;
	uint8_t *base = (uint8_t *)r->hdr;

	/* Half of the hits in the header, half anywhere. */
	if (rnd_next(rng) & 1)
		off = rnd_next(rng) % hdr;
	else
		off = rnd_next(rng) % r->size;
	if (off + len > r->size)
		len = r->size - off;
	for (size_t i = 0; i < len; i++)
		__atomic_store_n(&base[off + i], (uint8_t)rnd_next(rng), __ATOMIC_RELAXED);
}

START_TEST(test_scribble_running)
{
	struct flow f;
	struct kid srv, cli;
	struct raw r;
	uint64_t rng = pat_mix(0x5c0bb1e + (uint64_t)_i), end;
	int hits = 0, mapped = 0;

	flow_defaults(&f);
	f.ndev = 2;
	f.bytes = 256u << 20;
	f.depth = 4;
	f.cdepth = 2;
	f.random_sizes = 1;
	f.timeout_ms = 2000;
	f.seed = (uint64_t)_i;
	ck_assert_int_eq(kid_start(&srv, quiet_flow_server, &f), 0);
	ck_assert_int_eq(kid_start(&cli, quiet_flow_client, &f), 0);
	for (end = now_us() + 3000000u; now_us() < end && !mapped; usleep(1000))
		mapped = raw_map(&r, f.name) == 0;
	/* Let the stream start, then hit it for up to 400 ms. */
	usleep(10000 + (useconds_t)(rnd_next(&rng) % 40000));
	for (end = now_us() + 400000u; mapped && now_us() < end; hits++) {
		scribble(&r, &rng);
		usleep(200 + (useconds_t)(rnd_next(&rng) % 2000));
	}
	if (mapped)
		raw_unmap(&r);
	ck_assert_msg(kid_wait(&cli, KID_MS) == 0, "seed %d: client %s", _i, cli.msg);
	ck_assert_msg(kid_wait(&srv, KID_MS) == 0, "seed %d: server %s", _i, srv.msg);
	ck_assert_msg(mapped, "seed %d: the set never appeared", _i);
	/* A scribbled set id may leave the objects behind: not a crash. */
	shm_of_set(f.name, 1);
}
END_TEST

/* Random bytes over a created set's header; then a server (in a child)
 * opens it and, if that works, configures it. */
static void opener_kid(void *arg)
{
	struct vdi_server *s;
	struct vdi_set_info info;
	VDConfig cfg;
	int rc;

	vdi_set_info_get(NULL, arg, &info);
	if (vdi_server_new(&s) != 0)
		kid_fail("vdi_server_new");
	rc = vdi_server_open(s, NULL, arg);
	if (rc == 0 && vdi_server_get_configuration(s, &cfg) == 0 &&
	    vdi_server_begin_configuration(s, VDF_WriteMedia, 512, 0, 65536, 0) == 0 &&
	    vdi_server_request_buffers(s, 65536, 0, 2) == 0)
		vdi_server_end_configuration(s);
	/* VD_E_BUSY: a scribbled phase or server pid says "taken". */
	if (rc != 0 && rc != VD_E_PROTOCOL && rc != VD_E_INVALID && rc != VD_E_ABORT &&
	    rc != VD_E_BUSY)
		kid_fail("server Open of a scribbled set = %s (%s)", vdi_strerror(rc),
		         vdi_last_error());
	vdi_server_close(s);
	vdi_server_free(s);
}

START_TEST(test_scribble_header)
{
	char name[TL_NAME_MAX];
	struct vdi_client *c;
	struct raw r;
	struct kid k;
	VDConfig cfg;
	uint64_t rng = pat_mix(0xbadc0de + (uint64_t)_i);
	uint8_t *base;
	int n = 1 + (int)(rnd_next(&rng) % 8);

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1 + (uint32_t)(rnd_next(&rng) % 4);
	TL_OK(vdi_client_new(&c));
	TL_OK(vdi_client_create(c, tl_name(name), &cfg));
	ck_assert_int_eq(raw_map(&r, name), 0);
	base = (uint8_t *)r.hdr;
	for (int i = 0; i < n; i++) {
		size_t off = rnd_next(&rng) % sizeof(struct vdi_shm_header);
		uint32_t v = (uint32_t)rnd_next(&rng);
		size_t len = off + 4 <= sizeof(struct vdi_shm_header) ? 4 : 1;
		memcpy(base + off, &v, len);
	}
	ck_assert_int_eq(kid_start(&k, opener_kid, name), 0);
	ck_assert_msg(kid_wait(&k, KID_MS) == 0, "seed %d: %s", _i, k.msg);
	raw_unmap(&r);
	vdi_client_close(c);
	vdi_client_free(c);
	shm_of_set(name, 1);
}
END_TEST

/* A peer that takes the set lock and never lets go: the lock word holds
 * the pid of a live process that is not in the set.  A server Open must
 * give up with an error after a bounded wait, not hang (shm.h: 2 s). */
static void lock_victim(void *arg)
{
	struct vdi_server *s;
	uint64_t t0 = now_us();
	int rc;

	if (vdi_server_new(&s) != 0)
		kid_fail("vdi_server_new");
	rc = vdi_server_open(s, NULL, arg);
	if (rc != VD_E_PROTOCOL && rc != VD_E_BUSY && rc != VD_E_ABORT)
		kid_fail("server Open under a stuck lock = %s (%s)", vdi_strerror(rc),
		         vdi_last_error());
	if (now_us() - t0 > 5000000u)
		kid_fail("server Open under a stuck lock took %llu ms",
		         (unsigned long long)((now_us() - t0) / 1000));
	vdi_server_free(s);
}

static void sleeper(void *arg)
{
	(void)arg;
	pause();
}

START_TEST(test_stuck_lock)
{
	char name[TL_NAME_MAX];
	struct vdi_client *c;
	struct kid holder, k;
	struct raw r;
	VDConfig cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	TL_OK(vdi_client_new(&c));
	TL_OK(vdi_client_create(c, tl_name(name), &cfg));
	ck_assert_int_eq(raw_map(&r, name), 0);
	ck_assert_int_eq(kid_start(&holder, sleeper, NULL), 0);
	__atomic_store_n(&r.hdr->lock, (uint32_t)holder.pid, __ATOMIC_SEQ_CST);
	ck_assert_int_eq(kid_start(&k, lock_victim, name), 0);
	ck_assert_msg(kid_wait(&k, KID_MS) == 0, "%s", k.msg);
	kid_reap(&holder);
	raw_unmap(&r);
	vdi_client_close(c);
	vdi_client_free(c);
	shm_of_set(name, 1);
}
END_TEST

static Suite *hostile_suite(void)
{
	Suite *s = suite_create("hostile");
	TCase *tc;

	tc = tcase_create("client-victim");
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, test_client_victim, 0, CA_COUNT);
	suite_add_tcase(s, tc);

	tc = tcase_create("server-victim");
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, test_server_victim, 0, SA_COUNT);
	suite_add_tcase(s, tc);

	tc = tcase_create("forged handles");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_forged_handles);
	suite_add_tcase(s, tc);

	tc = tcase_create("lock");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_stuck_lock);
	suite_add_tcase(s, tc);

	tc = tcase_create("scribble");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_scribble_running, 0, 24);
	tcase_add_loop_test(tc, test_scribble_header, 0, 32);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tl_run_suite(hostile_suite());
}
