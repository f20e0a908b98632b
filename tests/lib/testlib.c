/* SPDX-License-Identifier: MIT */
/*
 * testlib.c - helpers shared by the engine tests; see testlib.h.
 *
 * Never calls libcheck (benchmarks link this file without it) and never
 * exits: every failure is a return code plus a sentence in tl_error().
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

static _Thread_local char tl_err[512];

const char *tl_error(void)
{
	return tl_err;
}

static int tl_fail(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int tl_fail(int rc, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(tl_err, sizeof(tl_err), "%s: %s (%s)", what, vdi_strerror(rc), vdi_last_error());
	return rc;
}

/* ---------------------------------------------------------------------
 * Names.
 */
static pid_t run_pid;
static pid_t tag_pid;
static char tag_buf[40];
static char run_tag_buf[24];
static unsigned name_counter;
static pthread_mutex_t name_lock = PTHREAD_MUTEX_INITIALIZER;

/* Caller holds name_lock. */
static void tl_tags_refresh(void)
{
	pid_t me = getpid();

	if (run_pid == 0) {
		run_pid = me;
		snprintf(run_tag_buf, sizeof(run_tag_buf), "t-%ld-", (long)run_pid);
	}
	if (tag_pid != me) {
		tag_pid = me;
		snprintf(tag_buf, sizeof(tag_buf), "t-%ld-%ld-", (long)run_pid, (long)me);
	}
}

void tl_init(void)
{
	pthread_mutex_lock(&name_lock);
	tl_tags_refresh();
	pthread_mutex_unlock(&name_lock);
}

const char *tl_tag(void)
{
	tl_init();
	return tag_buf;
}

const char *tl_run_tag(void)
{
	tl_init();
	return run_tag_buf;
}

char *tl_name(char *buf)
{
	pthread_mutex_lock(&name_lock);
	tl_tags_refresh();
	snprintf(buf, TL_NAME_MAX, "%s%u", tag_buf, name_counter++);
	pthread_mutex_unlock(&name_lock);
	return buf;
}

/* ---------------------------------------------------------------------
 * /dev/shm.
 */

/* 1 if entry contains tag at its start or right after a '.'. */
static int tl_entry_has_tag(const char *entry, const char *tag)
{
	size_t n = strlen(tag);
	const char *p = entry;

	while (p) {
		if (strncmp(p, tag, n) == 0)
			return 1;
		p = strchr(p, '.');
		if (p)
			p++;
	}
	return 0;
}

/* Length of the object-kind prefix of a libvdi entry: "vdi." (control
 * region) or "vdi-b<k>." (buffer area k, D27); 0 if the entry is not one
 * of ours. */
static size_t tl_entry_prefix(const char *entry)
{
	const char *p;

	if (strncmp(entry, "vdi.", 4) == 0)
		return 4;
	if (strncmp(entry, "vdi-b", 5) != 0)
		return 0;
	for (p = entry + 5; *p >= '0' && *p <= '9'; p++)
		;
	return p > entry + 5 && *p == '.' ? (size_t)(p + 1 - entry) : 0;
}

/* 1 if entry is one of a set's objects (instance NULL: any):
 * vdi.<instance>.<name>, vdi-b<k>.<instance>.<name> (D27), and also the
 * older form vdi.<instance>.<name>.b<k>. */
static int tl_entry_is_set(const char *entry, const char *instance, const char *name)
{
	const char *p, *inst;
	size_t n = strlen(name);
	size_t pre = tl_entry_prefix(entry);

	if (pre == 0)
		return 0;
	inst = entry + pre;
	p = strchr(inst, '.');
	if (!p || strncmp(p + 1, name, n) != 0)
		return 0;
	if (instance && ((size_t)(p - inst) != strlen(instance) ||
	                 strncmp(inst, instance, strlen(instance)) != 0))
		return 0;
	p += 1 + n;
	if (*p == '\0')
		return 1;
	if (p[0] != '.' || p[1] != 'b' || p[2] == '\0')
		return 0;
	for (p += 2; *p; p++)
		if (*p < '0' || *p > '9')
			return 0;
	return 1;
}

/* Applies fn-like matching to every /dev/shm entry: counts matches and
 * unlinks them when `remove`.  Returns the count or -1. */
enum { BY_TAG, BY_SET, BY_INSTANCE };

static int tl_shm_scan(const char *instance, const char *key, int by, int remove)
{
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	char path[512];
	int count = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL) {
		int hit;

		if (by == BY_SET)
			hit = tl_entry_is_set(e->d_name, instance, key);
		else if (by == BY_INSTANCE)
			hit = tl_entry_prefix(e->d_name) != 0 &&
			      strncmp(e->d_name + tl_entry_prefix(e->d_name), key, strlen(key)) ==
			              0 &&
			      e->d_name[tl_entry_prefix(e->d_name) + strlen(key)] == '.';
		else
			hit = tl_entry_has_tag(e->d_name, key);
		if (!hit)
			continue;
		if (remove) {
			snprintf(path, sizeof(path), "/dev/shm/%s", e->d_name);
			if (unlink(path) != 0 && errno != ENOENT)
				continue;
		}
		count++;
	}
	closedir(d);
	return count;
}

int tl_shm_count(const char *tag)
{
	return tl_shm_scan(NULL, tag ? tag : tl_tag(), BY_TAG, 0);
}

int tl_shm_count_set(const char *name)
{
	return tl_shm_scan(NULL, name, BY_SET, 0);
}

int tl_shm_count_set_in(const char *instance, const char *name)
{
	return tl_shm_scan(instance, name, BY_SET, 0);
}

int tl_shm_cleanup_instance(const char *instance)
{
	int n = tl_shm_scan(NULL, instance, BY_INSTANCE, 1);

	return n < 0 ? 0 : n;
}

const char *tl_instance(void)
{
	static _Thread_local char buf[24];

	snprintf(buf, sizeof(buf), "T%ld", (long)getpid());
	return buf;
}

int tl_shm_cleanup_tag(const char *tag)
{
	int n = tl_shm_scan(NULL, tag ? tag : tl_tag(), BY_TAG, 1);

	return n < 0 ? 0 : n;
}

int tl_shm_cleanup(void)
{
	return tl_shm_cleanup_tag(tl_tag());
}

int tl_shm_cleanup_run(void)
{
	return tl_shm_cleanup_tag(tl_run_tag());
}

/* ---------------------------------------------------------------------
 * Time.
 */
uint64_t tl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void tl_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---------------------------------------------------------------------
 * Completion agent.
 */
static void *tl_agent_main(void *arg)
{
	struct tl_agent *a = arg;
	int rc;

	__atomic_store_n(&a->entering, 1, __ATOMIC_RELEASE);
	rc = vdi_server_execute_completion_agent(a->s);

	a->rc = rc;
	a->returned_ms = tl_now_ms();
	__atomic_store_n(&a->returned, 1, __ATOMIC_RELEASE);
	return NULL;
}

int tl_agent_start(struct tl_agent *a, struct vdi_server *s)
{
	int err;

	memset(a, 0, sizeof(*a));
	a->s = s;
	err = pthread_create(&a->thread, NULL, tl_agent_main, a);
	if (err != 0) {
		snprintf(tl_err, sizeof(tl_err), "start agent thread: %s", strerror(err));
		return VD_E_UNEXPECTED;
	}
	a->started = 1;
	for (int i = 0; i < 2000 && !__atomic_load_n(&a->entering, __ATOMIC_ACQUIRE); i++)
		tl_sleep_ms(1);
	tl_sleep_ms(5);
	return 0;
}

int tl_agent_returned(const struct tl_agent *a)
{
	return __atomic_load_n(&a->returned, __ATOMIC_ACQUIRE);
}

int tl_agent_join(struct tl_agent *a, uint32_t timeout_ms)
{
	uint64_t end = tl_now_ms() + timeout_ms;

	if (!a->started)
		return 0;
	while (!tl_agent_returned(a)) {
		if (tl_now_ms() >= end) {
			snprintf(tl_err, sizeof(tl_err),
			         "completion agent still running after %u ms", timeout_ms);
			return VD_E_TIMEOUT;
		}
		tl_sleep_ms(2);
	}
	pthread_join(a->thread, NULL);
	a->started = 0;
	return 0;
}

/* ---------------------------------------------------------------------
 * Recording commands.
 */
static pthread_mutex_t cmd_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cmd_cond = PTHREAD_COND_INITIALIZER;

void tl_cmd_routine(VDS_Command *cmd)
{
	struct tl_cmd *t = (struct tl_cmd *)cmd;

	pthread_mutex_lock(&cmd_lock);
	t->calls++;
	t->thread = pthread_self();
	t->code = cmd->completionCode;
	t->bytes = cmd->bytesTransferred;
	t->out_position = cmd->outPosition;
	t->context_seen = cmd->completionContext;
	pthread_cond_broadcast(&cmd_cond);
	pthread_mutex_unlock(&cmd_lock);
}

void tl_cmd_init(struct tl_cmd *t, uint32_t code, uint32_t size, uint64_t position, uint8_t *buffer)
{
	memset(t, 0, sizeof(*t));
	t->cmd.commandCode = code;
	t->cmd.size = size;
	t->cmd.inPosition = position;
	t->cmd.buffer = buffer;
	t->cmd.completionRoutine = tl_cmd_routine;
	t->cmd.completionContext = t;
	/* Sentinels so a test sees whether the engine filled them. */
	t->cmd.completionCode = 0xDEADBEEFu;
	t->cmd.bytesTransferred = 0xDEADBEEFu;
}

int tl_cmd_calls(struct tl_cmd *t)
{
	int n;

	pthread_mutex_lock(&cmd_lock);
	n = t->calls;
	pthread_mutex_unlock(&cmd_lock);
	return n;
}

struct timespec tl_deadline_ms(uint32_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

int tl_cmd_wait(struct tl_cmd *t, uint32_t timeout_ms)
{
	struct timespec ts = tl_deadline_ms(timeout_ms);
	int rc = 0;

	pthread_mutex_lock(&cmd_lock);
	while (t->calls == 0 && rc == 0)
		rc = pthread_cond_timedwait(&cmd_cond, &cmd_lock, &ts);
	rc = t->calls ? 0 : VD_E_TIMEOUT;
	pthread_mutex_unlock(&cmd_lock);
	if (rc)
		snprintf(tl_err, sizeof(tl_err), "command %u: no completion after %u ms",
		         t->cmd.commandCode, timeout_ms);
	return rc;
}

/* ---------------------------------------------------------------------
 * Pair.
 */
void tl_pair_opts_default(struct tl_pair_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->devices = 1;
	o->server_features = VDF_WriteMedia;
	o->block_size = 512;
	o->max_transfer = 65536;
	o->buffer_count = 4;
	o->timeout_ms = 5000;
}

int tl_pair_init(struct tl_pair *p, const struct tl_pair_opts *opts)
{
	int rc;

	memset(p, 0, sizeof(*p));
	if (opts)
		p->o = *opts;
	else
		tl_pair_opts_default(&p->o);
	if (p->o.devices > VDI_MAX_DEVICES)
		return tl_fail(VD_E_INVALID, "pair: %u devices", p->o.devices);
	tl_name(p->name);
	snprintf(p->dev[0], sizeof(p->dev[0]), "%s", p->name);
	for (uint32_t i = 1; i < VDI_MAX_DEVICES; i++)
		snprintf(p->dev[i], sizeof(p->dev[i]), "%s.d%u", p->name, i);
	rc = vdi_client_new(&p->c);
	if (rc)
		return tl_fail(rc, "vdi_client_new");
	rc = vdi_server_new(&p->s);
	if (rc)
		return tl_fail(rc, "vdi_server_new");
	p->phase = TL_NEW;
	return 0;
}

static int tl_step_create(struct tl_pair *p)
{
	int rc;

	memset(&p->req, 0, sizeof(p->req));
	p->req.deviceCount = p->o.devices;
	p->req.features = p->o.client_features;
	p->req.prefixZoneSize = p->o.prefix;
	p->req.alignment = p->o.client_alignment;
	rc = vdi_client_create_ex(p->c, p->o.instance, p->name, &p->req);
	return rc ? tl_fail(rc, "client create '%s'", p->name) : 0;
}

static int tl_step_configure(struct tl_pair *p)
{
	int rc = vdi_server_get_configuration(p->s, &p->scfg);

	if (rc)
		return tl_fail(rc, "server get configuration '%s'", p->name);
	rc = vdi_server_begin_configuration(p->s, p->o.server_features, p->o.block_size,
	                                    p->o.alignment, p->o.max_transfer, p->o.timeout_ms);
	return rc ? tl_fail(rc, "server begin configuration '%s'", p->name) : 0;
}

static int tl_step_end(struct tl_pair *p)
{
	int rc;

	if (p->o.buffer_count) {
		rc = vdi_server_request_buffers(p->s, p->o.max_transfer, 0, p->o.buffer_count);
		if (rc)
			return tl_fail(rc, "server request buffers '%s'", p->name);
	}
	rc = vdi_server_end_configuration(p->s);
	return rc ? tl_fail(rc, "server end configuration '%s'", p->name) : 0;
}

static int tl_step_server_open(struct tl_pair *p)
{
	int rc;

	for (uint32_t i = 0; i < p->o.devices; i++) {
		if (p->sd[i])
			continue;
		rc = vdi_server_open_device(p->s, p->dev[i], &p->sd[i]);
		if (rc)
			return tl_fail(rc, "server open device '%s'", p->dev[i]);
	}
	if (p->o.no_agent || p->agent.started)
		return 0;
	return tl_agent_start(&p->agent, p->s);
}

static int tl_step_client_open(struct tl_pair *p)
{
	int rc;

	for (uint32_t i = 0; i < p->o.devices; i++) {
		if (p->cd[i])
			continue;
		rc = vdi_client_open_device(p->c, p->dev[i], &p->cd[i]);
		if (rc)
			return tl_fail(rc, "client open device '%s'", p->dev[i]);
	}
	return 0;
}

static int tl_step(struct tl_pair *p, enum tl_phase next)
{
	int rc;

	switch (next) {
	case TL_CREATED: return tl_step_create(p);
	case TL_CONNECTED:
		rc = vdi_server_open(p->s, p->o.instance, p->name);
		return rc ? tl_fail(rc, "server open '%s'", p->name) : 0;
	case TL_CONFIGURABLE: return tl_step_configure(p);
	case TL_ENDED: return tl_step_end(p);
	case TL_INITIALIZING:
		rc = vdi_client_get_configuration(p->c, p->o.timeout_ms, &p->cfg);
		return rc ? tl_fail(rc, "client get configuration '%s'", p->name) : 0;
	case TL_SERVER_OPEN: return tl_step_server_open(p);
	case TL_ACTIVE: return tl_step_client_open(p);
	case TL_NEW: break;
	}
	return tl_fail(VD_E_INVALID, "pair: no step to phase %d", (int)next);
}

int tl_pair_advance(struct tl_pair *p, enum tl_phase to)
{
	int rc;

	while (p->phase < to) {
		rc = tl_step(p, (enum tl_phase)(p->phase + 1));
		if (rc)
			return rc;
		p->phase = (enum tl_phase)(p->phase + 1);
	}
	return 0;
}

/* Client side of a normal end on one device: completes whatever arrives
 * until VD_E_CLOSE. */
static int tl_drain_device(struct tl_pair *p, uint32_t i)
{
	VDC_Command *cmd;
	int rc;

	for (;;) {
		rc = vdi_client_get_command(p->cd[i], p->o.timeout_ms, &cmd);
		if (rc == VD_E_CLOSE)
			return 0;
		if (rc)
			return tl_fail(rc, "client get command '%s'", p->dev[i]);
		rc = vdi_client_complete_command(p->cd[i], cmd, ERROR_SUCCESS, (uint32_t)cmd->size,
		                                 0);
		if (rc)
			return tl_fail(rc, "client complete command '%s'", p->dev[i]);
	}
}

int tl_pair_sync_agent(struct tl_pair *p)
{
	struct tl_cmd t;
	VDC_Command *cmd = NULL;
	uint32_t i;
	int rc;

	for (i = 0; i < p->o.devices; i++)
		if (p->sd[i] && p->cd[i])
			break;
	if (i == p->o.devices)
		return tl_fail(VD_E_PROTOCOL, "sync agent '%s': no device open on both sides",
		               p->name);
	tl_cmd_init(&t, VDC_Flush, 0, 0x5C5C, NULL); /* position marks ours */
	rc = vdi_server_send_command(p->sd[i], &t.cmd);
	if (rc)
		return tl_fail(rc, "sync agent: send VDC_Flush to '%s'", p->dev[i]);
	/* Commands queued before ours are completed with success, as
	 * tl_pair_finish's drain would. */
	for (;;) {
		rc = vdi_client_get_command(p->cd[i], p->o.timeout_ms, &cmd);
		if (rc)
			return tl_fail(rc, "sync agent: get command '%s'", p->dev[i]);
		int ours = cmd->commandCode == VDC_Flush && cmd->position == 0x5C5C;
		rc = vdi_client_complete_command(p->cd[i], cmd, ERROR_SUCCESS,
		                                 ours ? 0 : (uint32_t)cmd->size, 0);
		if (rc)
			return tl_fail(rc, "sync agent: complete on '%s'", p->dev[i]);
		if (ours)
			break;
	}
	/* t lives on this stack: wait for the routine without a limit
	 * shorter than the set's life would allow. */
	rc = tl_cmd_wait(&t, p->o.timeout_ms);
	if (rc) {
		vdi_server_signal_abort(p->s);
		tl_cmd_wait(&t, p->o.timeout_ms);
		return tl_fail(rc, "sync agent: no completion of VDC_Flush on '%s'", p->dev[i]);
	}
	return 0;
}

int tl_pair_finish(struct tl_pair *p)
{
	int rc;

	if (p->phase >= TL_ACTIVE && p->agent.started && (rc = tl_pair_sync_agent(p)) != 0)
		return rc;

	for (uint32_t i = 0; i < p->o.devices; i++) {
		if (!p->sd[i])
			continue;
		rc = vdi_server_close_device(p->sd[i]);
		if (rc)
			return tl_fail(rc, "server close device '%s'", p->dev[i]);
	}
	for (uint32_t i = 0; i < p->o.devices; i++) {
		if (p->cd[i] && (rc = tl_drain_device(p, i)) != 0)
			return rc;
	}
	rc = tl_agent_join(&p->agent, p->o.timeout_ms);
	if (rc)
		return rc;
	if (p->agent.rc)
		return tl_fail(p->agent.rc, "completion agent '%s'", p->name);
	p->client_closed = 1;
	rc = vdi_client_close(p->c);
	if (rc)
		return tl_fail(rc, "client close '%s'", p->name);
	p->server_closed = 1;
	rc = vdi_server_close(p->s);
	if (rc)
		return tl_fail(rc, "server close '%s'", p->name);
	return 0;
}

void tl_pair_destroy(struct tl_pair *p)
{
	int agent_stuck = 0;

	if (p->agent.started && !tl_agent_returned(&p->agent) && p->s)
		vdi_server_signal_abort(p->s);
	if (p->agent.started && tl_agent_join(&p->agent, 5000) != 0)
		agent_stuck = 1;
	if (p->c) {
		if (!p->client_closed && p->phase >= TL_CREATED)
			vdi_client_close(p->c);
		vdi_client_free(p->c);
		p->c = NULL;
	}
	if (p->s && !agent_stuck) {
		if (!p->server_closed && p->phase >= TL_CONNECTED)
			vdi_server_close(p->s);
		vdi_server_free(p->s);
		p->s = NULL;
	}
	/* The agent thread still uses s: leak it rather than free it under
	 * the thread; the test has failed anyway. */
	if (p->name[0])
		tl_shm_scan(NULL, p->name, BY_SET, 1);
	memset(p->cd, 0, sizeof(p->cd));
	memset(p->sd, 0, sizeof(p->sd));
	p->client_closed = p->server_closed = 1;
}
