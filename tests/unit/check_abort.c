/* SPDX-License-Identifier: MIT */
/*
 * check_abort.c - nothing hangs, nothing leaks (issue 2 item 7, D5, D16,
 * D26, D27), timeouts (spec 10.3) and access (issue 2 item 8).
 *
 * The abort and kill tests share one harness: the client and the server
 * each run in their own child process, driven by this process (the
 * controller) through pipes, to a phase of the protocol:
 *
 *   CREATED       client Create, a thread waiting in GetConfiguration
 *   CONNECTED     + server Open
 *   CONFIGURING   + server GetConfiguration, BeginConfiguration,
 *                   RequestBuffers
 *   INITIALIZING  + server EndConfiguration and the agent on a thread;
 *                   the client's GetConfiguration returned
 *   ACTIVE        + both opened the two devices; the server sent three
 *                   VDC_Write on device 0; the client holds two of them
 *                   uncompleted and has a thread waiting in GetCommand
 *                   on device 1
 *   CLOSED        (instead of ACTIVE) one VDC_Write went through, the
 *                   server closed both devices, the client saw VD_E_CLOSE
 *                   on both, the agent returned
 *
 * Then one side calls SignalAbort (or this process calls vdi_set_abort,
 * as `vdi abort` does, or SIGKILLs one side) at time T0, and every surviving side checks, against the same
 * CLOCK_MONOTONIC, that its waiters returned VD_E_ABORT within one second
 * of T0, that every outstanding command's completion routine ran with
 * ERROR_OPERATION_ABORTED within one second, and that later calls return
 * VD_E_ABORT.  A side that has nothing blocked carries on with the
 * protocol as a real program would; the first call that waits must give
 * VD_E_ABORT within one second.  Finally each side Closes and the
 * controller checks that /dev/shm holds nothing of the set.
 */
#include <check.h>
#include <grp.h>
#include <sys/stat.h>

#include "flow.h"

#define NDEV         2
#define PROMPT_MS    1000  /* D26 / issue 2 item 7: "within one second" */
#define STEP_MS      10000 /* bound of every step of the harness */
#define KID_MS       20000
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

enum phase {
	PH_NONE,
	PH_CREATED,
	PH_CONNECTED,
	PH_CONFIGURING,
	PH_INITIALIZING,
	PH_ACTIVE,
	PH_CLOSED
};
static const char *const phase_names[] = { "none",         "created", "connected", "configuring",
	                                   "initializing", "active",  "closed" };

enum role { R_CLIENT, R_SECONDARY, R_SERVER };
static const char *const role_names[] = { "client", "secondary", "server" };

/* Controller <-> side messages (fixed size, one write each). */
enum op {
	OP_PHASE = 1,
	OP_ABORT,
	OP_CHECK,
	OP_CLOSE,
	EV_REACHED,
	EV_ABORTED,
	EV_CHECKED,
	EV_CLOSED,
	EV_FAIL
};

struct msg {
	int32_t op;
	int32_t arg;
	uint64_t t;     /* T0 in microseconds of CLOCK_MONOTONIC */
	char text[400]; /* "" = fine, else what failed */
};

/* A thread blocked in one call. */
struct waiter {
	pthread_t thread;
	int started;
	int done; /* atomic */
	int rc;
	uint64_t t_us; /* when the call returned */
	struct side *sd;
	uint32_t dev; /* GetCommand waiters */
};

/* One side, living in its own process. */
struct side {
	enum role role;
	char name[TL_NAME_MAX];
	uint8_t drive[NDEV]; /* client: devices this process drives */
	int in, out;         /* control pipe (read), event pipe (write) */
	enum phase phase;
	/* client */
	struct vdi_client *c;
	struct vdi_client_device *cd[NDEV];
	VDC_Command *held[2];
	int nheld;
	int closed_seen[NDEV];
	struct waiter w_cfg, w_cmd;
	/* server */
	struct vdi_server *s;
	struct vdi_server_device *sd[NDEV];
	struct tl_agent agent;
	struct tl_cmd cmds[3];
	int ncmds;
	uint8_t *bufs[3];
	int dev_closed;
	/* failure of the current step */
	char err[400];
};

static FLOW_PRINTF(2, 3) int side_fail(struct side *sd, const char *fmt, ...)
{
	va_list ap;
	char buf[300];

	if (sd->err[0])
		return -1;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	snprintf(sd->err, sizeof(sd->err), "%s at %s: %s", role_names[sd->role],
	         phase_names[sd->phase], buf);
	return -1;
}

#define SIDE_CALL(sd, expr)                                                              \
	do {                                                                             \
		int rc_ = (expr);                                                        \
		if (rc_ != 0)                                                            \
			return side_fail((sd), "%s = %s (%s)", #expr, vdi_strerror(rc_), \
			                 vdi_last_error());                              \
	} while (0)

#define SIDE_RC(sd, expr, want)                                                                   \
	do {                                                                                      \
		int rc_ = (expr);                                                                 \
		if (rc_ != (want))                                                                \
			return side_fail((sd), "%s = %s, want %s (%s)", #expr, vdi_strerror(rc_), \
			                 vdi_strerror(want), vdi_last_error());                   \
	} while (0)

static void dev_name(const struct side *sd, uint32_t i, char *buf, size_t n)
{
	if (i == 0)
		snprintf(buf, n, "%s", sd->name);
	else
		snprintf(buf, n, "%s.d%u", sd->name, i);
}

/* ---------------------------------------------------------------------
 * Waiters.
 */
static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	VDConfig cfg;
	VDC_Command *cmd;

	if (w == &w->sd->w_cfg)
		w->rc = vdi_client_get_configuration(w->sd->c, VDI_INFINITE, &cfg);
	else
		w->rc = vdi_client_get_command(w->sd->cd[w->dev], VDI_INFINITE, &cmd);
	w->t_us = now_us();
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int waiter_start(struct side *sd, struct waiter *w, uint32_t dev)
{
	memset(w, 0, sizeof(*w));
	w->sd = sd;
	w->dev = dev;
	if (pthread_create(&w->thread, NULL, waiter_main, w) != 0)
		return side_fail(sd, "pthread_create failed");
	w->started = 1;
	return 0;
}

/* Waits until deadline_us for the waiter's call to return; joins it. */
static int waiter_join(struct waiter *w, uint64_t deadline_us)
{
	while (!__atomic_load_n(&w->done, __ATOMIC_ACQUIRE) && now_us() < deadline_us)
		usleep(1000);
	if (!__atomic_load_n(&w->done, __ATOMIC_ACQUIRE))
		return -1;
	pthread_join(w->thread, NULL);
	w->started = 0;
	return 0;
}

/* The waiter must have returned `want` within PROMPT_MS of t0. */
static int waiter_expect(struct side *sd, struct waiter *w, const char *what, int want, uint64_t t0)
{
	if (!w->started)
		return 0;
	if (waiter_join(w, t0 + 3000000u) != 0)
		return side_fail(sd, "%s still blocked 3 s after the abort", what);
	if (w->rc != want)
		return side_fail(sd, "%s returned %s, want %s", what, vdi_strerror(w->rc),
		                 vdi_strerror(want));
	if (getenv("FLOW_DEBUG"))
		fprintf(stderr, "%s at %s: %s woke %.3f ms after T0\n", role_names[sd->role],
		        phase_names[sd->phase], what, ((double)w->t_us - (double)t0) / 1000.0);
	if (w->t_us < t0)
		return side_fail(sd, "%s returned %.3f ms before the abort", what,
		                 (double)(t0 - w->t_us) / 1000.0);
	if (w->t_us > t0 + PROMPT_MS * 1000u)
		return side_fail(sd, "%s returned %.0f ms after the abort (limit %d ms)", what,
		                 (double)(w->t_us - t0) / 1000.0, PROMPT_MS);
	return 0;
}

/* ---------------------------------------------------------------------
 * Client steps.
 */
static int client_step(struct side *sd, enum phase p)
{
	VDConfig cfg;
	VDC_Command *cmd;
	char dn[TL_NAME_MAX + 8];
	int primary = sd->role == R_CLIENT;

	switch (p) {
	case PH_CREATED:
		SIDE_CALL(sd, vdi_client_new(&sd->c));
		if (!primary)
			return 0;
		memset(&cfg, 0, sizeof(cfg));
		cfg.deviceCount = NDEV;
		SIDE_CALL(sd, vdi_client_create(sd->c, sd->name, &cfg));
		return waiter_start(sd, &sd->w_cfg, 0);
	case PH_CONNECTED:
	case PH_CONFIGURING: return 0;
	case PH_INITIALIZING:
		if (primary) {
			if (waiter_join(&sd->w_cfg, now_us() + STEP_MS * 1000u) != 0)
				return side_fail(sd, "GetConfiguration did not return");
			if (sd->w_cfg.rc != 0)
				return side_fail(sd, "GetConfiguration = %s",
				                 vdi_strerror(sd->w_cfg.rc));
			return 0;
		}
		for (uint64_t end = now_us() + STEP_MS * 1000u;;) {
			int rc = vdi_client_open_in_secondary(sd->c, sd->name);
			if (rc == 0)
				break;
			if (now_us() > end)
				return side_fail(sd, "OpenInSecondary = %s", vdi_strerror(rc));
			usleep(5000);
		}
		SIDE_CALL(sd, vdi_client_get_configuration(sd->c, STEP_MS, &cfg));
		return 0;
	case PH_ACTIVE:
	case PH_CLOSED:
		for (uint32_t i = 0; i < NDEV; i++) {
			if (!sd->drive[i])
				continue;
			dev_name(sd, i, dn, sizeof(dn));
			SIDE_CALL(sd, vdi_client_open_device(sd->c, dn, &sd->cd[i]));
		}
		break;
	default: return 0;
	}
	if (p == PH_ACTIVE) {
		if (sd->drive[0])
			for (; sd->nheld < 2; sd->nheld++)
				SIDE_CALL(sd, vdi_client_get_command(sd->cd[0], STEP_MS,
				                                     &sd->held[sd->nheld]));
		if (sd->drive[1])
			return waiter_start(sd, &sd->w_cmd, 1);
		return 0;
	}
	if (sd->drive[0]) {
		SIDE_CALL(sd, vdi_client_get_command(sd->cd[0], STEP_MS, &cmd));
		if (cmd->commandCode != VDC_Write)
			return side_fail(sd, "got %s", vdi_strcommand((uint32_t)cmd->commandCode));
		SIDE_CALL(sd,
		          vdi_client_complete_command(sd->cd[0], cmd, 0, (uint32_t)cmd->size, 0));
	}
	for (uint32_t i = 0; i < NDEV; i++) {
		if (!sd->drive[i])
			continue;
		SIDE_RC(sd, vdi_client_get_command(sd->cd[i], STEP_MS, &cmd), VD_E_CLOSE);
		sd->closed_seen[i] = 1;
	}
	return 0;
}

/* ---------------------------------------------------------------------
 * Server steps.
 */
static int server_step(struct side *sd, enum phase p)
{
	VDConfig cfg;
	char dn[TL_NAME_MAX + 8];
	int n;

	switch (p) {
	case PH_CREATED: SIDE_CALL(sd, vdi_server_new(&sd->s)); return 0;
	case PH_CONNECTED:
		SIDE_CALL(sd, vdi_server_open_wait(sd->s, NULL, sd->name, STEP_MS));
		return 0;
	case PH_CONFIGURING:
		SIDE_CALL(sd, vdi_server_get_configuration(sd->s, &cfg));
		SIDE_CALL(sd,
		          vdi_server_begin_configuration(sd->s, VDF_WriteMedia, 512, 0, 65536, 0));
		SIDE_CALL(sd, vdi_server_request_buffers(sd->s, 65536, 0, 4));
		return 0;
	case PH_INITIALIZING:
		SIDE_CALL(sd, vdi_server_end_configuration(sd->s));
		SIDE_CALL(sd, tl_agent_start(&sd->agent, sd->s));
		return 0;
	case PH_ACTIVE:
	case PH_CLOSED: break;
	default: return 0;
	}
	for (uint32_t i = 0; i < NDEV; i++) {
		dev_name(sd, i, dn, sizeof(dn));
		SIDE_CALL(sd, vdi_server_open_device(sd->s, dn, &sd->sd[i]));
	}
	n = p == PH_ACTIVE ? 3 : 1;
	for (int i = 0; i < n; i++) {
		SIDE_CALL(sd, vdi_server_allocate_buffer(sd->s, &sd->bufs[i], 65536, 0));
		memset(sd->bufs[i], 0x40 + i, 65536);
		tl_cmd_init(&sd->cmds[i], VDC_Write, 65536, (uint64_t)i * 65536u, sd->bufs[i]);
		sd->ncmds++;
		SIDE_CALL(sd, vdi_server_send_command(sd->sd[0], &sd->cmds[i].cmd));
	}
	if (p == PH_ACTIVE)
		return 0;
	if (tl_cmd_wait(&sd->cmds[0], STEP_MS) != 0 || sd->cmds[0].code != 0)
		return side_fail(sd, "VDC_Write not completed with success (code %u)",
		                 sd->cmds[0].code);
	for (uint32_t i = 0; i < NDEV; i++)
		SIDE_CALL(sd, vdi_server_close_device(sd->sd[i]));
	sd->dev_closed = 1;
	sd->ncmds = 0; /* completed: nothing outstanding for the abort */
	if (tl_agent_join(&sd->agent, STEP_MS) != 0)
		return side_fail(sd, "agent did not return after the last CloseDevice");
	if (sd->agent.rc != 0)
		return side_fail(sd, "ExecuteCompletionAgent = %s", vdi_strerror(sd->agent.rc));
	return 0;
}

static int side_to(struct side *sd, enum phase target)
{
	for (int p = sd->phase + 1; p <= (int)target; p++) {
		if (p == PH_ACTIVE && target == PH_CLOSED)
			continue;
		if ((sd->role == R_SERVER ? server_step(sd, p) : client_step(sd, p)) != 0)
			return -1;
		sd->phase = p;
	}
	return 0;
}

/* ---------------------------------------------------------------------
 * After the abort (or the death of a peer) at t0.  `flagged`: the abort
 * was signalled through the set, so even calls that do not wait must
 * see it at once.
 */
static int client_check(struct side *sd, uint64_t t0, int flagged)
{
	VDConfig cfg;
	VDC_Command *cmd;
	char dn[TL_NAME_MAX + 8];
	int rc;

	if (waiter_expect(sd, &sd->w_cfg, "GetConfiguration", VD_E_ABORT, t0) != 0 ||
	    waiter_expect(sd, &sd->w_cmd, "GetCommand(device 1)", VD_E_ABORT, t0) != 0)
		return -1;
	if (sd->phase >= PH_ACTIVE) {
		/* A side with nothing blocked (a secondary holding commands)
		 * learns of a death through its next call: poll one that
		 * changes nothing. */
		while ((rc = vdi_client_get_configuration(sd->c, 0, &cfg)) == 0 &&
		       now_us() < t0 + 3000000u)
			usleep(1000);
		if (rc != VD_E_ABORT || now_us() > t0 + PROMPT_MS * 1000u + 2000u)
			return side_fail(sd, "GetConfiguration = %s %.0f ms after the abort",
			                 vdi_strerror(rc), (double)(now_us() - t0) / 1000.0);
	}
	if (sd->phase == PH_INITIALIZING) {
		/* Nothing blocked: carry on; the first wait must fail. */
		for (uint32_t i = 0; i < NDEV; i++) {
			if (!sd->drive[i])
				continue;
			dev_name(sd, i, dn, sizeof(dn));
			rc = vdi_client_open_device(sd->c, dn, &sd->cd[i]);
			if (rc == VD_E_ABORT)
				continue;
			if (rc != 0 || flagged)
				return side_fail(sd, "OpenDevice after abort = %s, want VD_E_ABORT",
				                 vdi_strerror(rc));
			rc = vdi_client_get_command(sd->cd[i], 3000, &cmd);
			if (rc != VD_E_ABORT || now_us() > t0 + PROMPT_MS * 1000u)
				return side_fail(
					sd, "GetCommand after the peer died = %s after %.0f ms",
					vdi_strerror(rc), (double)(now_us() - t0) / 1000.0);
		}
	}
	for (int i = 0; i < sd->nheld; i++)
		SIDE_RC(sd, vdi_client_complete_command(sd->cd[0], sd->held[i], 0, 65536, 0),
		        VD_E_ABORT);
	for (uint32_t i = 0; i < NDEV; i++)
		if (sd->cd[i])
			SIDE_RC(sd, vdi_client_get_command(sd->cd[i], 0, &cmd), VD_E_ABORT);
	if (sd->phase >= PH_INITIALIZING || flagged)
		SIDE_RC(sd, vdi_client_get_configuration(sd->c, 0, &cfg), VD_E_ABORT);
	SIDE_RC(sd, vdi_client_signal_abort(sd->c), 0);
	return 0;
}

/* Every command still outstanding must be completed with 995 by the
 * abort, within PROMPT_MS of t0. */
static int server_check_cmds(struct side *sd, uint64_t t0)
{
	int all = 0;

	while (!all && now_us() < t0 + 3000000u) {
		all = 1;
		for (int i = 0; i < sd->ncmds; i++)
			if (tl_cmd_calls(&sd->cmds[i]) == 0)
				all = 0;
		if (!all)
			usleep(1000);
	}
	if (!all)
		return side_fail(sd, "outstanding commands not completed 3 s after the abort");
	if (now_us() > t0 + PROMPT_MS * 1000u + 2000u)
		return side_fail(sd, "outstanding commands completed %.0f ms after the abort",
		                 (double)(now_us() - t0) / 1000.0);
	usleep(20000); /* a second call of a routine would show now */
	for (int i = 0; i < sd->ncmds; i++)
		if (tl_cmd_calls(&sd->cmds[i]) != 1 || sd->cmds[i].code != ERROR_OPERATION_ABORTED)
			return side_fail(sd, "command %d: routine ran %d times with %s", i,
			                 tl_cmd_calls(&sd->cmds[i]),
			                 vdi_strcompletion(sd->cmds[i].code));
	return 0;
}

static int server_check(struct side *sd, uint64_t t0, int flagged)
{
	VDConfig cfg;
	struct tl_cmd extra;
	uint8_t *buf;
	int rc = 0;

	/* Nothing blocked before the agent runs: carry on configuring; a
	 * flagged abort must stop the very first call (D5). */
	if (sd->phase == PH_CONNECTED)
		rc = vdi_server_begin_configuration(sd->s, VDF_WriteMedia, 512, 0, 65536, 0);
	else if (sd->phase == PH_CONFIGURING)
		rc = vdi_server_request_buffers(sd->s, 65536, 0, 1);
	if (sd->phase == PH_CONNECTED || sd->phase == PH_CONFIGURING) {
		if (flagged && rc != VD_E_ABORT)
			return side_fail(sd,
			                 "configuration call after the abort = %s, want VD_E_ABORT",
			                 vdi_strerror(rc));
		if (rc == 0 && sd->phase == PH_CONNECTED)
			rc = vdi_server_request_buffers(sd->s, 65536, 0, 4);
		if (rc == 0)
			rc = vdi_server_end_configuration(sd->s);
		if (rc == 0 && tl_agent_start(&sd->agent, sd->s) != 0)
			return side_fail(sd, "agent: %s", tl_error());
		if (rc != 0 && rc != VD_E_ABORT)
			return side_fail(sd, "configuration after the abort = %s (%s)",
			                 vdi_strerror(rc), vdi_last_error());
	}
	if (sd->agent.started) {
		uint64_t now = now_us();
		uint64_t left = t0 + 3000000u > now ? t0 + 3000000u - now : 0;
		if (tl_agent_join(&sd->agent, (uint32_t)(left / 1000u)) != 0)
			return side_fail(sd, "completion agent still running 3 s after the abort");
		if (getenv("FLOW_DEBUG"))
			fprintf(stderr, "server at %s: agent returned %.0f ms after T0\n",
			        phase_names[sd->phase],
			        (double)sd->agent.returned_ms - (double)t0 / 1000.0);
		if (sd->agent.returned_ms * 1000u > t0 + PROMPT_MS * 1000u + 1000u)
			return side_fail(sd, "completion agent returned %.0f ms after the abort",
			                 (double)sd->agent.returned_ms - (double)t0 / 1000.0);
	}
	if (server_check_cmds(sd, t0) != 0)
		return -1;
	SIDE_RC(sd, vdi_server_get_configuration(sd->s, &cfg), VD_E_ABORT);
	if (sd->phase >= PH_INITIALIZING) {
		SIDE_RC(sd, vdi_server_allocate_buffer(sd->s, &buf, 65536, 0), VD_E_ABORT);
		if (!sd->sd[0])
			SIDE_RC(sd, vdi_server_open_device(sd->s, sd->name, &sd->sd[0]),
			        VD_E_ABORT);
	}
	if (sd->sd[0]) {
		/* SendCommand in Abort: VD_E_ABORT and the routine, at once,
		 * with 995 (spec 7.3, D8). */
		tl_cmd_init(&extra, VDC_Write, 65536, 0, sd->bufs[0]);
		SIDE_RC(sd, vdi_server_send_command(sd->sd[0], &extra.cmd), VD_E_ABORT);
		if (tl_cmd_calls(&extra) != 1 || extra.code != ERROR_OPERATION_ABORTED)
			return side_fail(sd, "SendCommand in abort: routine ran %d times with %s",
			                 tl_cmd_calls(&extra), vdi_strcompletion(extra.code));
		SIDE_RC(sd, vdi_server_close_device(sd->sd[0]), VD_E_ABORT);
	}
	SIDE_RC(sd, vdi_server_signal_abort(sd->s), 0);
	return 0;
}

static int side_close(struct side *sd)
{
	int rc, open_devs = 0;

	if (sd->role == R_SERVER && sd->phase < PH_CONNECTED) {
		vdi_server_free(sd->s); /* never opened: nothing to close */
		sd->s = NULL;
		return 0;
	}
	if (sd->role == R_SERVER) {
		open_devs = sd->sd[0] && !sd->dev_closed;
		if (sd->agent.started && tl_agent_join(&sd->agent, STEP_MS) != 0)
			return side_fail(sd, "agent still running at Close");
		rc = vdi_server_close(sd->s);
		vdi_server_free(sd->s);
		sd->s = NULL;
		/* D4: Close with devices still open says VD_E_PROTOCOL. */
		if (rc != 0 && !(open_devs && rc == VD_E_PROTOCOL))
			return side_fail(sd, "Close = %s (%s)", vdi_strerror(rc), vdi_last_error());
		return 0;
	}
	for (uint32_t i = 0; i < NDEV; i++)
		if (sd->cd[i] && !sd->closed_seen[i])
			open_devs = 1;
	if (sd->w_cfg.started)
		waiter_join(&sd->w_cfg, now_us() + STEP_MS * 1000u);
	if (sd->w_cmd.started)
		waiter_join(&sd->w_cmd, now_us() + STEP_MS * 1000u);
	if (sd->w_cfg.started || sd->w_cmd.started)
		return side_fail(sd, "a waiter is still blocked at Close");
	rc = vdi_client_close(sd->c);
	vdi_client_free(sd->c);
	sd->c = NULL;
	/* D4: Close with devices that never saw VD_E_CLOSE says VD_E_OPEN. */
	if (rc != 0 && !(open_devs && rc == VD_E_OPEN))
		return side_fail(sd, "Close = %s (%s)", vdi_strerror(rc), vdi_last_error());
	return 0;
}

/* ---------------------------------------------------------------------
 * The side's process: obeys the controller.
 */
static void side_send(struct side *sd, int op, int arg, uint64_t t)
{
	struct msg m;

	memset(&m, 0, sizeof(m));
	m.op = op;
	m.arg = arg;
	m.t = t;
	snprintf(m.text, sizeof(m.text), "%s", sd->err);
	if (write(sd->out, &m, sizeof(m)) != (ssize_t)sizeof(m))
		_exit(4);
}

static void side_kid(void *arg)
{
	struct side *sd = arg;
	struct msg m;
	uint64_t t0;
	int rc;

	while (read(sd->in, &m, sizeof(m)) == (ssize_t)sizeof(m)) {
		sd->err[0] = '\0';
		switch (m.op) {
		case OP_PHASE:
			side_to(sd, (enum phase)m.arg);
			side_send(sd, sd->err[0] ? EV_FAIL : EV_REACHED, sd->phase, 0);
			break;
		case OP_ABORT:
			t0 = now_us();
			rc = sd->role == R_SERVER ? vdi_server_signal_abort(sd->s)
			                          : vdi_client_signal_abort(sd->c);
			if (rc != 0)
				side_fail(sd, "SignalAbort = %s", vdi_strerror(rc));
			side_send(sd, sd->err[0] ? EV_FAIL : EV_ABORTED, 0, t0);
			break;
		case OP_CHECK:
			if (sd->role == R_SERVER)
				server_check(sd, m.t, m.arg);
			else
				client_check(sd, m.t, m.arg);
			side_send(sd, sd->err[0] ? EV_FAIL : EV_CHECKED, 0, 0);
			break;
		case OP_CLOSE:
			side_close(sd);
			side_send(sd, sd->err[0] ? EV_FAIL : EV_CLOSED, 0, 0);
			return;
		}
	}
}

/* ---------------------------------------------------------------------
 * The controller.
 */
struct party {
	struct side sd; /* copied into the child at fork */
	struct kid k;
	int to, from; /* our ends of its pipes */
	int alive;
};

struct harness {
	char name[TL_NAME_MAX];
	struct party p[3]; /* client, server, secondary (optional) */
	int n;
};

static void harness_cleanup(struct harness *h)
{
	for (int i = 0; i < h->n; i++) {
		kid_reap(&h->p[i].k);
		if (h->p[i].to >= 0)
			close(h->p[i].to);
		if (h->p[i].from >= 0)
			close(h->p[i].from);
		h->p[i].to = h->p[i].from = -1;
	}
	shm_of_set(h->name, 1);
}

#define H_ASSERT(h, cond, ...)                     \
	do {                                       \
		if (!(cond)) {                     \
			harness_cleanup(h);        \
			ck_abort_msg(__VA_ARGS__); \
		}                                  \
	} while (0)

static void harness_start(struct harness *h, int with_secondary)
{
	memset(h, 0, sizeof(*h));
	tl_name(h->name);
	h->n = with_secondary ? 3 : 2;
	for (int i = 0; i < h->n; i++) {
		struct party *pa = &h->p[i];
		int a[2], b[2];
		pa->to = pa->from = -1;
		pa->sd.role = i == 0 ? R_CLIENT : i == 1 ? R_SERVER : R_SECONDARY;
		memcpy(pa->sd.name, h->name, sizeof(pa->sd.name));
		pa->sd.drive[0] = i == 0 ? !with_secondary : i == 2;
		pa->sd.drive[1] = i == 0;
		H_ASSERT(h, pipe(a) == 0 && pipe(b) == 0, "pipe: %s", strerror(errno));
		pa->sd.in = a[0];
		pa->sd.out = b[1];
		H_ASSERT(h, kid_start(&pa->k, side_kid, &pa->sd) == 0, "fork: %s", strerror(errno));
		close(a[0]);
		close(b[1]);
		pa->to = a[1];
		pa->from = b[0];
		pa->alive = 1;
	}
}

static void harness_send(struct harness *h, int i, int op, int arg, uint64_t t)
{
	struct msg m;

	memset(&m, 0, sizeof(m));
	m.op = op;
	m.arg = arg;
	m.t = t;
	H_ASSERT(h, write(h->p[i].to, &m, sizeof(m)) == (ssize_t)sizeof(m), "write to %s: %s",
	         role_names[h->p[i].sd.role], strerror(errno));
}

/* Waits for party i's answer; fails the test on EV_FAIL or silence. */
static struct msg harness_recv(struct harness *h, int i, int want)
{
	struct pollfd pfd = { .fd = h->p[i].from, .events = POLLIN };
	struct msg m;
	int r;

	memset(&m, 0, sizeof(m));
	r = poll(&pfd, 1, KID_MS);
	if (r == 1 && read(h->p[i].from, &m, sizeof(m)) == (ssize_t)sizeof(m) && m.op == want)
		return m;
	if (r == 1 && m.op == EV_FAIL)
		H_ASSERT(h, 0, "%s", m.text);
	kid_wait(&h->p[i].k, 1000);
	H_ASSERT(h, 0, "%s: no answer (%s)", role_names[h->p[i].sd.role],
	         h->p[i].k.msg[0] ? h->p[i].k.msg : "timeout");
	return m;
}

static void harness_phase(struct harness *h, enum phase ph)
{
	for (int i = 0; i < h->n; i++)
		harness_send(h, i, OP_PHASE, ph, 0);
	for (int i = 0; i < h->n; i++)
		harness_recv(h, i, EV_REACHED);
}

/* Every live party checks, then closes; the set must be gone. */
static void harness_finish(struct harness *h, uint64_t t0, int flagged)
{
	for (int i = 0; i < h->n; i++)
		if (h->p[i].alive)
			harness_send(h, i, OP_CHECK, flagged, t0);
	for (int i = 0; i < h->n; i++)
		if (h->p[i].alive)
			harness_recv(h, i, EV_CHECKED);
	for (int i = 0; i < h->n; i++)
		if (h->p[i].alive)
			harness_send(h, i, OP_CLOSE, 0, 0);
	for (int i = 0; i < h->n; i++) {
		if (!h->p[i].alive)
			continue;
		harness_recv(h, i, EV_CLOSED);
		H_ASSERT(h, kid_wait(&h->p[i].k, KID_MS) == 0, "%s process %s",
		         role_names[h->p[i].sd.role], h->p[i].k.msg);
	}
	/* D27: after Close (and a SIGKILL of the other side) nothing stays. */
	H_ASSERT(h, shm_of_set(h->name, 0) == 0, "%d /dev/shm objects of '%s' left",
	         shm_of_set(h->name, 0), h->name);
	harness_cleanup(h);
}

/* ---------------------------------------------------------------------
 * SignalAbort from each side in each phase.
 */
struct abort_case {
	int from; /* 0 client, 1 server, 2 a third process */
	enum phase ph;
};
static const struct abort_case abort_cases[] = {
	{ 0, PH_CREATED },
	{ 0, PH_CONNECTED },
	{ 0, PH_CONFIGURING },
	{ 0, PH_INITIALIZING },
	{ 0, PH_ACTIVE },
	{ 0, PH_CLOSED },
	{ 1, PH_CONNECTED },
	{ 1, PH_CONFIGURING },
	{ 1, PH_INITIALIZING },
	{ 1, PH_ACTIVE },
	{ 1, PH_CLOSED },
	/* `vdi abort`: vdi_set_abort from a process outside the set. */
	{ 2, PH_CONNECTED },
	{ 2, PH_ACTIVE },
};

START_TEST(test_signal_abort)
{
	const struct abort_case *ac = &abort_cases[_i];
	struct harness h;
	struct msg m;

	harness_start(&h, 0);
	harness_phase(&h, ac->ph);
	if (ac->from == 2) {
		int rc;
		m.t = now_us();
		rc = vdi_set_abort(NULL, h.name);
		H_ASSERT(&h, rc == 0, "vdi_set_abort = %s (%s)", vdi_strerror(rc),
		         vdi_last_error());
		harness_finish(&h, m.t, 1);
		return;
	}
	harness_send(&h, ac->from, OP_ABORT, 0, 0);
	m = harness_recv(&h, ac->from, EV_ABORTED);
	if (ac->ph == PH_CREATED) {
		/* The server never opened: it only goes away. */
		harness_send(&h, 1, OP_CLOSE, 0, 0);
		harness_recv(&h, 1, EV_CLOSED);
		H_ASSERT(&h, kid_wait(&h.p[1].k, KID_MS) == 0, "server %s", h.p[1].k.msg);
		h.p[1].alive = 0;
	}
	harness_finish(&h, m.t, 1);
}
END_TEST

/* ---------------------------------------------------------------------
 * SIGKILL of each side in each phase (D26).
 */
struct kill_case {
	int victim; /* 0 client, 1 server, 2 secondary */
	enum phase ph;
	int secondary; /* a secondary drives device 0 */
};
static const struct kill_case kill_cases[] = {
	{ 1, PH_CONNECTED, 0 },
	{ 1, PH_CONFIGURING, 0 },
	{ 1, PH_INITIALIZING, 0 },
	{ 1, PH_ACTIVE, 0 },
	{ 0, PH_CONNECTED, 0 },
	{ 0, PH_CONFIGURING, 0 },
	{ 0, PH_INITIALIZING, 0 },
	{ 0, PH_ACTIVE, 0 },
	{ 2, PH_ACTIVE, 1 },
	/* The primary dies while a secondary holds commands. */
	{ 0, PH_ACTIVE, 1 },
};

START_TEST(test_sigkill)
{
	const struct kill_case *kc = &kill_cases[_i];
	struct harness h;
	struct party *v;
	uint64_t t0;

	harness_start(&h, kc->secondary);
	harness_phase(&h, kc->ph);
	v = &h.p[kc->victim];
	t0 = now_us();
	kill(v->k.pid, SIGKILL);
	kid_reap(&v->k);
	v->alive = 0;
	harness_finish(&h, t0, 0);
}
END_TEST

/* Both sides killed mid-stream: the next Create of the name reclaims
 * every object of the dead set (D16, D27). */
START_TEST(test_both_killed)
{
	struct harness h;
	struct vdi_client *c;
	VDConfig cfg;
	int rc;

	harness_start(&h, 0);
	harness_phase(&h, PH_ACTIVE);
	for (int i = 0; i < 2; i++) {
		kill(h.p[i].k.pid, SIGKILL);
		kid_reap(&h.p[i].k);
		h.p[i].alive = 0;
	}
	H_ASSERT(&h, shm_of_set(h.name, 0) > 0, "dead set vanished by itself");
	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	H_ASSERT(&h, vdi_client_new(&c) == 0, "vdi_client_new");
	rc = vdi_client_create(c, h.name, &cfg);
	H_ASSERT(&h, rc == 0, "Create over a dead set = %s (%s)", vdi_strerror(rc),
	         vdi_last_error());
	rc = vdi_client_close(c);
	vdi_client_free(c);
	H_ASSERT(&h, rc == 0, "Close = %s", vdi_strerror(rc));
	H_ASSERT(&h, shm_of_set(h.name, 0) == 0, "%d objects of the dead set left",
	         shm_of_set(h.name, 0));
	harness_cleanup(&h);
}
END_TEST

/* A server waiting in Open that is killed leaves nothing that stops the
 * next server. */
static void open_wait_kid(void *arg)
{
	struct vdi_server *s;

	if (vdi_server_new(&s) != 0)
		kid_fail("vdi_server_new");
	vdi_server_open_wait(s, NULL, arg, 30000);
	kid_fail("open_wait returned");
}

START_TEST(test_server_killed_before_open)
{
	struct flow f;
	struct kid dead, srv;
	struct vdi_client *c;
	VDConfig cfg;
	char err[FLOW_ERR];
	uint64_t t;
	int rc;

	flow_defaults(&f);
	f.ndev = 2;
	ck_assert_int_eq(kid_start(&dead, open_wait_kid, f.name), 0);
	usleep(100000);
	kill(dead.pid, SIGKILL);
	kid_reap(&dead);
	/* Nobody configures: GetConfiguration times out, nothing more. */
	ck_assert_int_eq(vdi_client_new(&c), 0);
	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 2;
	ck_assert_int_eq(vdi_client_create(c, f.name, &cfg), 0);
	t = now_us();
	rc = vdi_client_get_configuration(c, 200, &cfg);
	ck_assert_msg(rc == VD_E_TIMEOUT, "GetConfiguration = %s", vdi_strerror(rc));
	ck_assert_msg(now_us() - t < 1000000u, "GetConfiguration(200) took %llu us",
	              (unsigned long long)(now_us() - t));
	ck_assert_int_eq(vdi_client_close(c), 0);
	vdi_client_free(c);
	/* A real server then runs the whole flow. */
	ck_assert_int_eq(kid_start(&srv, flow_server_kid, &f), 0);
	rc = flow_client_run(&f, 0, NULL, err, sizeof(err));
	ck_assert_msg(kid_wait(&srv, KID_MS) == 0, "server %s", srv.msg);
	ck_assert_msg(rc == 0, "%s", err);
	ck_assert_int_eq(shm_of_set(f.name, 0), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Stale and live names (D16, D26).
 */
static void create_and_die_kid(void *arg)
{
	struct vdi_client *c;
	VDConfig cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 2;
	if (vdi_client_new(&c) != 0 || vdi_client_create(c, arg, &cfg) != 0)
		kid_fail("create: %s", vdi_last_error());
	_exit(0); /* no Close: the set is left behind */
}

START_TEST(test_stale_reclaimed)
{
	struct flow f;
	struct kid k, srv;
	struct vdi_server *s;
	struct vdi_client *c;
	VDConfig cfg;
	char err[FLOW_ERR];
	int rc;

	flow_defaults(&f);
	f.ndev = 2;
	ck_assert_int_eq(kid_start(&k, create_and_die_kid, f.name), 0);
	ck_assert_msg(kid_wait(&k, KID_MS) == 0, "creator %s", k.msg);
	ck_assert_msg(shm_of_set(f.name, 0) > 0, "the dead creator left nothing to reclaim");
	/* D26: a server cannot open a set whose creator is dead. */
	ck_assert_int_eq(vdi_server_new(&s), 0);
	rc = vdi_server_open(s, NULL, f.name);
	vdi_server_free(s);
	ck_assert_msg(rc == VD_E_INVALID, "server Open of a dead set = %s", vdi_strerror(rc));
	/* D16: Create reclaims it (and Close removes it, D27)... */
	ck_assert_int_eq(vdi_client_new(&c), 0);
	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 2;
	rc = vdi_client_create(c, f.name, &cfg);
	ck_assert_msg(rc == 0, "Create over a dead set = %s (%s)", vdi_strerror(rc),
	              vdi_last_error());
	ck_assert_int_eq(vdi_client_close(c), 0);
	vdi_client_free(c);
	ck_assert_int_eq(shm_of_set(f.name, 0), 0);
	/* ... and the name then serves a whole flow. */
	ck_assert_int_eq(kid_start(&srv, flow_server_kid, &f), 0);
	rc = flow_client_run(&f, 0, NULL, err, sizeof(err));
	ck_assert_msg(kid_wait(&srv, KID_MS) == 0, "server %s", srv.msg);
	ck_assert_msg(rc == 0, "%s", err);
	ck_assert_int_eq(shm_of_set(f.name, 0), 0);
}
END_TEST

struct live_ctx {
	char name[TL_NAME_MAX];
	int go[2];    /* controller -> holder: "close now" */
	int ready[2]; /* holder -> controller: "created" */
};

static void live_holder_kid(void *arg)
{
	struct live_ctx *lc = arg;
	struct vdi_client *c;
	VDConfig cfg;
	char b = 'r';
	int rc;

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	if (vdi_client_new(&c) != 0 || vdi_client_create(c, lc->name, &cfg) != 0)
		kid_fail("create: %s", vdi_last_error());
	if (write(lc->ready[1], &b, 1) != 1 || read(lc->go[0], &b, 1) != 1)
		kid_fail("controller went away");
	rc = vdi_client_close(c);
	if (rc != 0)
		kid_fail("Close = %s", vdi_strerror(rc));
	vdi_client_free(c);
}

START_TEST(test_live_busy)
{
	struct live_ctx lc;
	struct kid k;
	struct vdi_client *c;
	VDConfig cfg;
	char b;
	int rc;

	tl_name(lc.name);
	ck_assert_int_eq(pipe(lc.go), 0);
	ck_assert_int_eq(pipe(lc.ready), 0);
	ck_assert_int_eq(kid_start(&k, live_holder_kid, &lc), 0);
	ck_assert_int_eq(read(lc.ready[0], &b, 1), 1);
	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	ck_assert_int_eq(vdi_client_new(&c), 0);
	rc = vdi_client_create(c, lc.name, &cfg);
	vdi_client_free(c);
	ck_assert_int_eq(write(lc.go[1], "c", 1), 1);
	ck_assert_msg(kid_wait(&k, KID_MS) == 0, "holder %s", k.msg);
	ck_assert_msg(rc == VD_E_BUSY, "Create of a live set's name = %s", vdi_strerror(rc));
	ck_assert_int_eq(shm_of_set(lc.name, 0), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Timeouts (spec 10.3), in one process.
 */
/* A poll (timeout 0) must not wait a slice (100 ms): ten that waited
 * would take a second, ten that did not stay far below half of it even
 * when a busy machine preempts them. */
#define POLLS    10
#define POLLS_MS 500

static double ms_since(uint64_t t)
{
	return (double)(now_us() - t) / 1000.0;
}

START_TEST(test_timeout_get_configuration)
{
	struct tl_pair p;
	VDConfig cfg;
	uint64_t t;
	double ms;

	TL_OK(tl_pair_init(&p, NULL));
	TL_OK(tl_pair_advance(&p, TL_CREATED));
	t = now_us();
	for (int i = 0; i < POLLS; i++)
		TL_RC(vdi_client_get_configuration(p.c, 0, &cfg), VD_E_TIMEOUT);
	ck_assert_msg(ms_since(t) < POLLS_MS, "%d polls took %.1f ms", POLLS, ms_since(t));
	t = now_us();
	TL_RC(vdi_client_get_configuration(p.c, 300, &cfg), VD_E_TIMEOUT);
	ms = ms_since(t);
	ck_assert_msg(ms >= 295 && ms < 650, "GetConfiguration(300) took %.1f ms", ms);
	/* Also while the server is configuring. */
	TL_OK(tl_pair_advance(&p, TL_CONFIGURABLE));
	t = now_us();
	TL_RC(vdi_client_get_configuration(p.c, 250, &cfg), VD_E_TIMEOUT);
	ms = ms_since(t);
	ck_assert_msg(ms >= 245 && ms < 600, "GetConfiguration(250) took %.1f ms", ms);
	tl_pair_destroy(&p);
	ck_assert_int_eq(shm_of_set(p.name, 0), 0);
}
END_TEST

START_TEST(test_timeout_get_command)
{
	struct tl_pair p;
	VDC_Command *cmd;
	uint64_t t;
	double ms;

	TL_OK(tl_pair_init(&p, NULL));
	TL_OK(tl_pair_advance(&p, TL_ACTIVE));
	t = now_us();
	for (int i = 0; i < POLLS; i++)
		TL_RC(vdi_client_get_command(p.cd[0], 0, &cmd), VD_E_TIMEOUT);
	ck_assert_msg(ms_since(t) < POLLS_MS, "%d polls took %.1f ms", POLLS, ms_since(t));
	t = now_us();
	TL_RC(vdi_client_get_command(p.cd[0], 300, &cmd), VD_E_TIMEOUT);
	ms = ms_since(t);
	ck_assert_msg(ms >= 295 && ms < 650, "GetCommand(300) took %.1f ms", ms);
	t = now_us();
	TL_RC(vdi_client_get_command(p.cd[0], 1100, &cmd), VD_E_TIMEOUT);
	ms = ms_since(t);
	ck_assert_msg(ms >= 1095 && ms < 1450, "GetCommand(1100) took %.1f ms", ms);
	TL_OK(tl_pair_finish(&p));
	tl_pair_destroy(&p);
	ck_assert_int_eq(shm_of_set(p.name, 0), 0);
}
END_TEST

/* serverTimeOut: one pair, set up by hand because the client's VDConfig
 * carries it. */
struct st_pair {
	char name[TL_NAME_MAX];
	struct vdi_client *c;
	struct vdi_server *s;
	struct vdi_client_device *cd;
	struct vdi_server_device *sd;
	struct tl_agent agent;
	uint8_t *buf;
};

static void st_pair_up(struct st_pair *p, uint32_t server_timeout)
{
	VDConfig cfg;

	memset(p, 0, sizeof(*p));
	tl_name(p->name);
	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	cfg.serverTimeOut = server_timeout;
	TL_OK(vdi_client_new(&p->c));
	TL_OK(vdi_server_new(&p->s));
	TL_OK(vdi_client_create(p->c, p->name, &cfg));
	TL_OK(vdi_server_open(p->s, NULL, p->name));
	TL_OK(vdi_server_get_configuration(p->s, &cfg));
	ck_assert_uint_eq(cfg.serverTimeOut, server_timeout);
	TL_OK(vdi_server_begin_configuration(p->s, VDF_WriteMedia, 512, 0, 65536, 0));
	TL_OK(vdi_server_request_buffers(p->s, 65536, 0, 1));
	TL_OK(vdi_server_end_configuration(p->s));
	TL_OK(vdi_client_get_configuration(p->c, 1000, &cfg));
	TL_OK(vdi_server_open_device(p->s, p->name, &p->sd));
	TL_OK(vdi_client_open_device(p->c, p->name, &p->cd));
	TL_OK(tl_agent_start(&p->agent, p->s));
	TL_OK(vdi_server_allocate_buffer(p->s, &p->buf, 65536, 0));
}

static void st_pair_down(struct st_pair *p)
{
	vdi_server_signal_abort(p->s);
	ck_assert_int_eq(tl_agent_join(&p->agent, 3000), 0);
	vdi_server_close(p->s);
	vdi_client_close(p->c);
	vdi_server_free(p->s);
	vdi_client_free(p->c);
	ck_assert_int_eq(shm_of_set(p->name, 0), 0);
}

START_TEST(test_server_timeout_aborts)
{
	struct st_pair p;
	struct tl_cmd t;
	VDC_Command *cmd;
	uint64_t t0;
	double ms;

	st_pair_up(&p, 200);
	tl_cmd_init(&t, VDC_Write, 65536, 0, p.buf);
	t0 = now_us();
	TL_OK(vdi_server_send_command(p.sd, &t.cmd));
	TL_OK(vdi_client_get_command(p.cd, 1000, &cmd));
	/* The client holds the command and never completes it: after two
	 * intervals (400 ms) with nothing completing, the agent aborts. */
	TL_OK(tl_cmd_wait(&t, 3000));
	ms = ms_since(t0);
	ck_assert_uint_eq(t.code, ERROR_OPERATION_ABORTED);
	ck_assert_msg(ms >= 390 && ms < 1200, "serverTimeOut 200 ms aborted after %.0f ms", ms);
	ck_assert_int_eq(tl_agent_join(&p.agent, 1000), 0);
	TL_RC(vdi_client_complete_command(p.cd, cmd, 0, 65536, 0), VD_E_ABORT);
	TL_RC(vdi_client_get_command(p.cd, 0, &cmd), VD_E_ABORT);
	st_pair_down(&p);
}
END_TEST

START_TEST(test_server_timeout_responsive)
{
	struct st_pair p;
	struct tl_cmd t;
	VDC_Command *cmd;

	st_pair_up(&p, 500);
	/* Each command completes after 100 ms, far under the abort delay of
	 * two intervals (1 s: a busy machine may add 900 ms): fourteen of
	 * them (1.4 s, beyond the delay) must all pass. */
	for (int i = 0; i < 14; i++) {
		tl_cmd_init(&t, VDC_Write, 65536, 0, p.buf);
		TL_OK(vdi_server_send_command(p.sd, &t.cmd));
		TL_OK(vdi_client_get_command(p.cd, 1000, &cmd));
		usleep(100000);
		TL_OK(vdi_client_complete_command(p.cd, cmd, 0, 65536, 0));
		TL_OK(tl_cmd_wait(&t, 1000));
		ck_assert_uint_eq(t.code, 0);
	}
	/* Idle (nothing pending) for longer than two intervals: no abort. */
	usleep(1200000);
	tl_cmd_init(&t, VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(p.sd, &t.cmd));
	TL_OK(vdi_client_get_command(p.cd, 1000, &cmd));
	TL_OK(vdi_client_complete_command(p.cd, cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&t, 1000));
	ck_assert_uint_eq(t.code, 0);
	st_pair_down(&p);
}
END_TEST

/* ---------------------------------------------------------------------
 * Access (issue 2 item 8, D27): the tests run as root; children drop to
 * nobody (65534), with or without the set's group.
 */
#define OTHER_UID 65534
#define SHARE_GID 54321

static void become(int with_group)
{
	gid_t g = SHARE_GID;

	if (setgroups(with_group ? 1 : 0, with_group ? &g : NULL) != 0 || setgid(OTHER_UID) != 0 ||
	    setuid(OTHER_UID) != 0)
		kid_fail("dropping privileges: %s", strerror(errno));
	/* A credential change clears the parent-death signal. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getuid() != OTHER_UID || geteuid() != OTHER_UID)
		kid_fail("still uid %d", (int)geteuid());
}

static void stranger_kid(void *arg)
{
	struct vdi_server *s;
	struct vdi_client *c;
	int rc;

	become(0);
	if (vdi_server_new(&s) != 0)
		kid_fail("vdi_server_new");
	rc = vdi_server_open(s, NULL, arg);
	vdi_server_free(s);
	if (rc != VD_E_SECURITY && rc != VD_E_INVALID)
		kid_fail("server Open by another user = %s, want VD_E_SECURITY or VD_E_INVALID",
		         vdi_strerror(rc));
	if (vdi_client_new(&c) != 0)
		kid_fail("vdi_client_new");
	rc = vdi_client_open_in_secondary(c, arg);
	vdi_client_free(c);
	if (rc == 0)
		kid_fail("OpenInSecondary by another user succeeded");
}

static void member_server_kid(void *arg)
{
	char err[FLOW_ERR];

	become(1);
	if (flow_server_run(arg, err, sizeof(err)) != 0)
		kid_fail("server of uid %d, group %d: %s", OTHER_UID, SHARE_GID, err);
}

/* Waits until the control region of the set exists and stats it. */
static int stat_set(const char *name, struct stat *st)
{
	char path[256];

	shm_ctl_path(name, path, sizeof(path));
	for (int i = 0; i < 2000; i++) {
		if (stat(path, st) == 0)
			return 0;
		usleep(5000);
	}
	return -1;
}

START_TEST(test_access_private)
{
	struct flow f;
	struct kid cli, str;
	struct vdi_client *c;
	struct stat st;

	flow_defaults(&f);
	f.timeout_ms = 1500;
	ck_assert_int_eq(kid_start(&cli, flow_client_kid, &f), 0);
	ck_assert_msg(stat_set(f.name, &st) == 0, "set not created");
	ck_assert_msg((st.st_mode & 0777) == 0600 && st.st_uid == getuid(),
	              "control region mode %o uid %d", st.st_mode & 0777, (int)st.st_uid);
	ck_assert_int_eq(kid_start(&str, stranger_kid, f.name), 0);
	ck_assert_msg(kid_wait(&str, KID_MS) == 0, "stranger %s", str.msg);
	/* The client times out waiting for a server; then it is gone. */
	ck_assert_msg(kid_wait(&cli, KID_MS) != 0, "client ran without a server");
	ck_assert_int_eq(shm_of_set(f.name, 0), 0);
	/* vdi_client_set_group after Create is refused. */
	ck_assert_int_eq(vdi_client_new(&c), 0);
	{
		VDConfig cfg;
		char name[TL_NAME_MAX];
		memset(&cfg, 0, sizeof(cfg));
		cfg.deviceCount = 1;
		TL_OK(vdi_client_create(c, tl_name(name), &cfg));
		TL_RC(vdi_client_set_group(c, SHARE_GID), VD_E_PROTOCOL);
		TL_OK(vdi_client_close(c));
	}
	vdi_client_free(c);
}
END_TEST

START_TEST(test_access_group)
{
	struct flow f;
	struct kid cli, str, mem;
	struct stat st;

	flow_defaults(&f);
	f.ndev = 2;
	f.has_group = 1;
	f.group = SHARE_GID;
	f.timeout_ms = 8000;
	ck_assert_int_eq(kid_start(&cli, flow_client_kid, &f), 0);
	ck_assert_msg(stat_set(f.name, &st) == 0, "set not created");
	ck_assert_msg((st.st_mode & 0777) == 0660 && st.st_gid == SHARE_GID,
	              "control region mode %o gid %d", st.st_mode & 0777, (int)st.st_gid);
	/* Not in the group: still refused. */
	ck_assert_int_eq(kid_start(&str, stranger_kid, f.name), 0);
	ck_assert_msg(kid_wait(&str, KID_MS) == 0, "stranger %s", str.msg);
	/* In the group: runs the whole server half. */
	ck_assert_int_eq(kid_start(&mem, member_server_kid, &f), 0);
	ck_assert_msg(kid_wait(&mem, KID_MS) == 0, "group member %s", mem.msg);
	ck_assert_msg(kid_wait(&cli, KID_MS) == 0, "client %s", cli.msg);
	ck_assert_int_eq(shm_of_set(f.name, 0), 0);
}
END_TEST

/* An abort that arrives before the completion agent ever ran: commands
 * already sent still end, exactly once, with ERROR_OPERATION_ABORTED
 * when the agent finally starts (found by the CLI's FAULT_ABORT_AFTER
 * test: the server waited forever).  _i: 0 client aborts, 1 server. */
START_TEST(test_abort_before_agent)
{
	struct tl_pair_opts o;
	struct tl_pair p;
	struct tl_cmd cmds[3];
	uint8_t *buf;
	int i;

	tl_pair_opts_default(&o);
	o.no_agent = 1;
	o.buffer_count = 3;
	TL_OK(tl_pair_init(&p, &o));
	TL_OK(tl_pair_advance(&p, TL_SERVER_OPEN));
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(vdi_server_allocate_buffer(p.s, &buf, 65536, 0), 0);
		tl_cmd_init(&cmds[i], VDC_Write, 65536, 0, buf);
		ck_assert_int_eq(vdi_server_send_command(p.sd[0], &cmds[i].cmd), 0);
	}
	if (_i == 0) {
		ck_assert_int_eq(vdi_client_signal_abort(p.c), 0);
	} else {
		/* The server's own abort ends them at once, agent or not. */
		ck_assert_int_eq(vdi_server_signal_abort(p.s), 0);
		for (i = 0; i < 3; i++)
			ck_assert_int_eq(tl_cmd_calls(&cmds[i]), 1);
	}
	ck_assert_int_eq(vdi_server_execute_completion_agent(p.s), VD_E_ABORT);
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(tl_cmd_calls(&cmds[i]), 1);
		ck_assert_uint_eq(cmds[i].code, ERROR_OPERATION_ABORTED);
	}
	tl_pair_destroy(&p);
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(tl_cmd_calls(&cmds[i]), 1); /* not again at Close */
}
END_TEST

/* A client that only polls (timeout 0) still learns that the server
 * died: found by the fault matrix, where vdifs polls GetConfiguration. */
START_TEST(test_poll_sees_dead_server)
{
	struct tl_pair_opts o;
	struct tl_pair p;
	VDConfig cfg;
	uint64_t t0;
	pid_t kid;
	int rc, st;

	tl_pair_opts_default(&o);
	TL_OK(tl_pair_init(&p, &o));
	TL_OK(tl_pair_advance(&p, TL_CREATED));
	kid = fork();
	ck_assert_int_ge(kid, 0);
	if (kid == 0) {
		struct vdi_server *s;

		if (vdi_server_new(&s) || vdi_server_open(s, NULL, p.name))
			_exit(1);
		pause(); /* killed below, before configuring anything */
		_exit(0);
	}
	/* Wait until the server has claimed the set, then kill it. */
	for (t0 = tl_now_ms(); tl_now_ms() - t0 < 5000; tl_sleep_ms(5)) {
		struct vdi_set_info info;

		if (!vdi_set_info_get(NULL, p.name, &info) && info.server_pid == kid)
			break;
	}
	kill(kid, SIGKILL);
	waitpid(kid, &st, 0);
	t0 = tl_now_ms();
	do {
		rc = vdi_client_get_configuration(p.c, 0, &cfg);
	} while (rc == VD_E_TIMEOUT && tl_now_ms() - t0 < 3000);
	ck_assert_int_eq(rc, VD_E_ABORT);
	ck_assert_uint_lt(tl_now_ms() - t0, 1000);
	tl_pair_destroy(&p);
}
END_TEST

static Suite *abort_suite(void)
{
	Suite *s = suite_create("abort");
	TCase *tc;

	tc = tcase_create("signal-abort");
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, test_signal_abort, 0, (int)ARRAY_LEN(abort_cases));
	tcase_add_loop_test(tc, test_abort_before_agent, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("sigkill");
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, test_sigkill, 0, (int)ARRAY_LEN(kill_cases));
	tcase_add_test(tc, test_both_killed);
	tcase_add_test(tc, test_poll_sees_dead_server);
	tcase_add_test(tc, test_server_killed_before_open);
	suite_add_tcase(s, tc);

	tc = tcase_create("names");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_stale_reclaimed);
	tcase_add_test(tc, test_live_busy);
	suite_add_tcase(s, tc);

	tc = tcase_create("timeouts");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_timeout_get_configuration);
	tcase_add_test(tc, test_timeout_get_command);
	tcase_add_test(tc, test_server_timeout_aborts);
	tcase_add_test(tc, test_server_timeout_responsive);
	suite_add_tcase(s, tc);

	tc = tcase_create("access");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_access_private);
	tcase_add_test(tc, test_access_group);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tl_run_suite(abort_suite());
}
