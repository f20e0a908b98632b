/* SPDX-License-Identifier: MIT */
/*
 * check_states.c - the state machines of both halves, cell by cell.
 *
 * The client table (spec 3.1) and the server table (spec 3.2, Connected
 * column and † cells as decided in docs/decisions.md D2) are data below:
 * one row per cell, {function, state, expected return, expected next
 * state}.  For each row a fresh client + server pair in this process is
 * driven into the state (fixture), the function is called once, its
 * return is compared, and then the state reached is observed by a probe:
 * a short sequence of calls whose results differ between every pair of
 * states (see probe_client / probe_server; the server's Initializing and
 * Active are also told apart by the published phase, vdi_set_info_get).
 * The Abort column is run twice: abort signalled by the side under test
 * and by its peer.
 *
 * Refinements applied to the printed tables:
 *   D3  state is per device: OpenDevice of a device already open on that
 *       side is VD_E_PROTOCOL, VD_E_OPEN once every device is open.
 *   D4  client Close with open devices: VD_E_OPEN, abort, released;
 *       server Close with open devices: VD_E_PROTOCOL, abort, released.
 *   D5  in Abort everything returns VD_E_ABORT except Create/Open/
 *       OpenInSecondary (VD_E_PROTOCOL), SignalAbort, Close, FreeBuffer
 *       (NOERROR) and IsSharedBuffer (answers).
 *   D17 the client is Normally Terminated once every device it opened
 *       returned VD_E_CLOSE; the server after its last CloseDevice.
 *   D22 OpenInSecondary readiness.
 *
 * Cells that the C API cannot express are not rows, because the call
 * needs a device handle and none exists in that state (a handle comes
 * from OpenDevice, which itself moves the set to Active, and Close frees
 * it): client GetCommand / CompleteCommand in DNE, Configurable and
 * Initializing; server SendCommand / CloseDevice in DNE, Connected,
 * Configurable and Initializing.
 *
 * Further tcases: multi-device per-device states (D3, D15, D17), Close
 * with open devices (D4), abort waking waiters, timeouts (D13), the queue
 * limit (D7) with the synchronous callback (D8), malformed commands and
 * all 19 codes round trip (D11), CompleteCommand with foreign or
 * completed pointers (D21), secondaries (D22), buffer handles (D24),
 * return code names and values (spec 8) and the ABI (spec 4, 6.2).
 */
#include <check.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

#define WAIT_MS 2000u /* bound for waits that must succeed */
#define POLL_MS 0u

/* ---------------------------------------------------------------------
 * Shared fixture state (one test per forked child).
 */
static struct tl_pair P;
static struct tl_cmd CMDS[VDI_QUEUE_DEPTH + 8];
static uint8_t *BUF;            /* a server buffer allocated by the fixture */
static VDC_Command *HELD;       /* a client command kept by the fixture */
static const char *FIXTURE_ERR; /* first failing step of the fixture */

static void fixture_teardown(void)
{
	tl_pair_destroy(&P);
	tl_shm_cleanup();
	tl_shm_cleanup_instance(tl_instance());
}

static int fail_fixture(const char *what)
{
	static char msg[768];

	snprintf(msg, sizeof(msg), "fixture: %s: %s", what, tl_error());
	FIXTURE_ERR = msg;
	return -1;
}

#define FIX(expr)                                                    \
	do {                                                         \
		if ((expr) != 0)                                     \
			return fail_fixture(#expr);                  \
	} while (0)

/* Fixture step that must return exactly `want`. */
static int fix_rc(int got, int want, const char *what)
{
	static char msg[768];

	if (got == want)
		return 0;
	snprintf(msg, sizeof(msg), "fixture: %s = %s, want %s (%s)", what,
		 vdi_strerror(got), vdi_strerror(want), vdi_last_error());
	FIXTURE_ERR = msg;
	return -1;
}
#define FIXRC(expr, want)                                            \
	do {                                                         \
		if (fix_rc((expr), (want), #expr) != 0)              \
			return -1;                                   \
	} while (0)

static int start_pair(uint32_t devices)
{
	struct tl_pair_opts o;

	tl_pair_opts_default(&o);
	o.devices = devices;
	o.timeout_ms = WAIT_MS;
	BUF = NULL;
	HELD = NULL;
	FIXTURE_ERR = NULL;
	FIX(tl_pair_init(&P, &o));
	return 0;
}

/* Server sends VDC_Write of one 64 KiB buffer on device i (CMDS[k]). */
static int send_write(uint32_t i, int k, uint8_t **buf)
{
	uint8_t *b = NULL;

	FIXRC(vdi_server_allocate_buffer(P.s, &b, 65536, 0), 0);
	memset(b, 0x5A, 65536);
	tl_cmd_init(&CMDS[k], VDC_Write, 65536, 0, b);
	FIXRC(vdi_server_send_command(P.sd[i], &CMDS[k].cmd), 0);
	if (buf)
		*buf = b;
	return 0;
}

/* ---------------------------------------------------------------------
 * Client table.
 */
enum cst {
	C_DNE,
	C_CONFIGURABLE,       /* created; the server has not ended config */
	C_CONFIGURABLE_ENDED, /* created; the server ended configuration */
	C_INITIALIZING,       /* GetConfiguration returned */
	C_ACTIVE,             /* device open, one VDC_Write queued */
	C_ACTIVE_CLOSING,     /* device open, server closed it, nothing queued */
	C_NT,                 /* device returned VD_E_CLOSE */
	C_ABORT,              /* client SignalAbort with a command held */
	C_ABORT_SRV,          /* server SignalAbort with a command held */
};
static const char *const cst_name[] = {
	"DNE", "Configurable", "Configurable(server ended)", "Initializing",
	"Active", "Active(closing)", "NormallyTerminated", "Abort",
	"Abort(by server)",
};

enum cfn {
	CF_CREATE, CF_GETCONFIG, CF_OPENDEVICE, CF_GETCOMMAND, CF_COMPLETE,
	CF_SIGNALABORT, CF_CLOSE, CF_OPENSECONDARY, CF_GETBUFHANDLE,
	CF_MAPBUFHANDLE,
};
static const char *const cfn_name[] = {
	"Create", "GetConfiguration", "OpenDevice", "GetCommand",
	"CompleteCommand", "SignalAbort", "Close", "OpenInSecondary",
	"GetBufferHandle", "MapBufferHandle",
};

struct crow {
	enum cfn fn;
	enum cst state;
	int rc;
	enum cst next;
};

#define PROT VD_E_PROTOCOL
#define ABRT VD_E_ABORT

static const struct crow crows[] = {
	/* Create, CreateEx */
	{ CF_CREATE, C_DNE, NOERROR, C_CONFIGURABLE },
	{ CF_CREATE, C_CONFIGURABLE, PROT, C_CONFIGURABLE },
	{ CF_CREATE, C_INITIALIZING, PROT, C_INITIALIZING },
	{ CF_CREATE, C_ACTIVE, PROT, C_ACTIVE },
	{ CF_CREATE, C_NT, PROT, C_NT },
	{ CF_CREATE, C_ABORT, PROT, C_ABORT },
	/* GetConfiguration (note 1: blocks until EndConfiguration) */
	{ CF_GETCONFIG, C_DNE, PROT, C_DNE },
	{ CF_GETCONFIG, C_CONFIGURABLE, VD_E_TIMEOUT, C_CONFIGURABLE },
	{ CF_GETCONFIG, C_CONFIGURABLE_ENDED, NOERROR, C_INITIALIZING },
	{ CF_GETCONFIG, C_INITIALIZING, NOERROR, C_INITIALIZING },
	{ CF_GETCONFIG, C_ACTIVE, NOERROR, C_ACTIVE },
	{ CF_GETCONFIG, C_NT, NOERROR, C_NT },
	{ CF_GETCONFIG, C_ABORT, ABRT, C_ABORT },
	/* OpenDevice (D3: single device already open = all open) */
	{ CF_OPENDEVICE, C_DNE, PROT, C_DNE },
	{ CF_OPENDEVICE, C_CONFIGURABLE, PROT, C_CONFIGURABLE },
	{ CF_OPENDEVICE, C_INITIALIZING, NOERROR, C_ACTIVE },
	{ CF_OPENDEVICE, C_ACTIVE, VD_E_OPEN, C_ACTIVE },
	{ CF_OPENDEVICE, C_NT, PROT, C_NT },
	{ CF_OPENDEVICE, C_ABORT, ABRT, C_ABORT },
	/* GetCommand */
	{ CF_GETCOMMAND, C_ACTIVE, NOERROR, C_ACTIVE },
	{ CF_GETCOMMAND, C_ACTIVE_CLOSING, VD_E_CLOSE, C_NT },
	{ CF_GETCOMMAND, C_NT, PROT, C_NT },
	{ CF_GETCOMMAND, C_ABORT, ABRT, C_ABORT },
	/* CompleteCommand.  NT: the table's PROTOCOL; the engine answers
	 * VD_E_INVALID (it checks the pointer before the state):
	 * ENGINE_BUGS.md "CompleteCommand in Normally Terminated". */
	{ CF_COMPLETE, C_ACTIVE, NOERROR, C_ACTIVE },
	{ CF_COMPLETE, C_NT, PROT, C_NT },
	{ CF_COMPLETE, C_ABORT, ABRT, C_ABORT },
	/* SignalAbort */
	{ CF_SIGNALABORT, C_DNE, PROT, C_DNE },
	{ CF_SIGNALABORT, C_CONFIGURABLE, NOERROR, C_ABORT },
	{ CF_SIGNALABORT, C_INITIALIZING, NOERROR, C_ABORT },
	{ CF_SIGNALABORT, C_ACTIVE, NOERROR, C_ABORT },
	{ CF_SIGNALABORT, C_NT, NOERROR, C_ABORT },
	{ CF_SIGNALABORT, C_ABORT, NOERROR, C_ABORT },
	/* Close (D4: open device -> VD_E_OPEN, released anyway) */
	{ CF_CLOSE, C_DNE, PROT, C_DNE },
	{ CF_CLOSE, C_CONFIGURABLE, NOERROR, C_DNE },
	{ CF_CLOSE, C_INITIALIZING, NOERROR, C_DNE },
	{ CF_CLOSE, C_ACTIVE, VD_E_OPEN, C_DNE },
	{ CF_CLOSE, C_NT, NOERROR, C_DNE },
	{ CF_CLOSE, C_ABORT, NOERROR, C_DNE },
	/* OpenInSecondary on this (primary) object: the set named does not
	 * exist yet in DNE; afterwards the object is in use (D5, D22). */
	{ CF_OPENSECONDARY, C_DNE, PROT, C_DNE },
	{ CF_OPENSECONDARY, C_CONFIGURABLE, PROT, C_CONFIGURABLE },
	{ CF_OPENSECONDARY, C_INITIALIZING, PROT, C_INITIALIZING },
	{ CF_OPENSECONDARY, C_ACTIVE, PROT, C_ACTIVE },
	{ CF_OPENSECONDARY, C_NT, PROT, C_NT },
	{ CF_OPENSECONDARY, C_ABORT, PROT, C_ABORT },
	/* GetBufferHandle of an address that is no buffer */
	{ CF_GETBUFHANDLE, C_DNE, PROT, C_DNE },
	{ CF_GETBUFHANDLE, C_CONFIGURABLE, VD_E_INVALID, C_CONFIGURABLE },
	{ CF_GETBUFHANDLE, C_INITIALIZING, VD_E_INVALID, C_INITIALIZING },
	{ CF_GETBUFHANDLE, C_ACTIVE, VD_E_INVALID, C_ACTIVE },
	{ CF_GETBUFHANDLE, C_NT, VD_E_INVALID, C_NT },
	{ CF_GETBUFHANDLE, C_ABORT, ABRT, C_ABORT },
	/* MapBufferHandle of a handle that names no buffer */
	{ CF_MAPBUFHANDLE, C_DNE, PROT, C_DNE },
	{ CF_MAPBUFHANDLE, C_CONFIGURABLE, VD_E_INVALID, C_CONFIGURABLE },
	{ CF_MAPBUFHANDLE, C_INITIALIZING, VD_E_INVALID, C_INITIALIZING },
	{ CF_MAPBUFHANDLE, C_ACTIVE, VD_E_INVALID, C_ACTIVE },
	{ CF_MAPBUFHANDLE, C_NT, VD_E_INVALID, C_NT },
	{ CF_MAPBUFHANDLE, C_ABORT, ABRT, C_ABORT },
	/* Abort signalled by the other side: the same column (D5). */
	{ CF_CREATE, C_ABORT_SRV, PROT, C_ABORT_SRV },
	{ CF_GETCONFIG, C_ABORT_SRV, ABRT, C_ABORT_SRV },
	{ CF_OPENDEVICE, C_ABORT_SRV, ABRT, C_ABORT_SRV },
	{ CF_GETCOMMAND, C_ABORT_SRV, ABRT, C_ABORT_SRV },
	{ CF_COMPLETE, C_ABORT_SRV, ABRT, C_ABORT_SRV },
	{ CF_SIGNALABORT, C_ABORT_SRV, NOERROR, C_ABORT_SRV },
	{ CF_CLOSE, C_ABORT_SRV, NOERROR, C_DNE },
	{ CF_OPENSECONDARY, C_ABORT_SRV, PROT, C_ABORT_SRV },
	{ CF_GETBUFHANDLE, C_ABORT_SRV, ABRT, C_ABORT_SRV },
	{ CF_MAPBUFHANDLE, C_ABORT_SRV, ABRT, C_ABORT_SRV },
};

static int drive_client(enum cst st)
{
	VDC_Command *cmd = NULL;

	FIX(start_pair(1));
	switch (st) {
	case C_DNE:
		return 0;
	case C_CONFIGURABLE:
		FIX(tl_pair_advance(&P, TL_CONNECTED));
		return 0;
	case C_CONFIGURABLE_ENDED:
		FIX(tl_pair_advance(&P, TL_ENDED));
		return 0;
	case C_INITIALIZING:
		FIX(tl_pair_advance(&P, TL_INITIALIZING));
		return 0;
	case C_ACTIVE:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		return send_write(0, 0, &BUF);
	case C_ACTIVE_CLOSING:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		FIXRC(vdi_server_close_device(P.sd[0]), 0);
		return 0;
	case C_NT:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		if (send_write(0, 0, &BUF))
			return -1;
		FIXRC(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd), 0);
		FIXRC(vdi_client_complete_command(P.cd[0], cmd, 0, 65536, 0), 0);
		HELD = cmd; /* completed: no longer outstanding */
		FIXRC(tl_cmd_wait(&CMDS[0], WAIT_MS), 0);
		FIXRC(vdi_server_close_device(P.sd[0]), 0);
		FIXRC(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd), VD_E_CLOSE);
		FIX(tl_agent_join(&P.agent, WAIT_MS));
		return 0;
	case C_ABORT:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		if (send_write(0, 0, &BUF))
			return -1;
		FIXRC(vdi_client_get_command(P.cd[0], WAIT_MS, &HELD), 0);
		FIXRC(vdi_client_signal_abort(P.c), 0);
		return 0;
	case C_ABORT_SRV:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		if (send_write(0, 0, &BUF))
			return -1;
		FIXRC(vdi_client_get_command(P.cd[0], WAIT_MS, &HELD), 0);
		FIXRC(vdi_server_signal_abort(P.s), 0);
		return 0;
	}
	return -1;
}

/* Calls the function of a client row; stores handles it creates. */
static int call_client(const struct crow *r)
{
	VDConfig cfg;
	VDC_Command *cmd = NULL;
	char other[TL_NAME_MAX];
	uint8_t local[16];
	uint32_t handle = 0;
	uint8_t *addr = NULL;
	int rc;

	switch (r->fn) {
	case CF_CREATE:
		memset(&cfg, 0, sizeof(cfg));
		cfg.deviceCount = 1;
		/* In DNE the pair's own name; else a fresh one, so that only
		 * the state can refuse it (not a name collision). */
		return vdi_client_create_ex(P.c, NULL,
					    r->state == C_DNE ? P.name : tl_name(other),
					    &cfg);
	case CF_GETCONFIG:
		return vdi_client_get_configuration(P.c, 100, &cfg);
	case CF_OPENDEVICE: {
		struct vdi_client_device *d = (struct vdi_client_device *)&cfg;

		rc = vdi_client_open_device(P.c, P.dev[0], &d);
		ck_assert_msg(rc == 0 ? d != NULL : d == NULL,
			      "OpenDevice: out pointer %p with %s", (void *)d,
			      vdi_strerror(rc));
		if (rc == 0)
			P.cd[0] = d;
		return rc;
	}
	case CF_GETCOMMAND:
		rc = vdi_client_get_command(P.cd[0], 1000, &cmd);
		if (rc == 0) {
			ck_assert_int_eq(cmd->commandCode, VDC_Write);
			ck_assert_int_eq(cmd->size, 65536);
			ck_assert_ptr_nonnull(cmd->buffer);
			ck_assert_int_eq(cmd->buffer[0], 0x5A);
			ck_assert_int_eq(cmd->buffer[65535], 0x5A);
		}
		return rc;
	case CF_COMPLETE:
		if (r->state == C_ACTIVE) {
			rc = vdi_client_get_command(P.cd[0], WAIT_MS, &HELD);
			ck_assert_msg(rc == 0, "prepare: GetCommand = %s",
				      vdi_strerror(rc));
		}
		return vdi_client_complete_command(P.cd[0], HELD, ERROR_SUCCESS,
						   65536, 0);
	case CF_SIGNALABORT:
		return vdi_client_signal_abort(P.c);
	case CF_CLOSE:
		rc = vdi_client_close(P.c);
		memset(P.cd, 0, sizeof(P.cd)); /* freed by Close */
		return rc;
	case CF_OPENSECONDARY:
		return vdi_client_open_in_secondary(P.c, P.name);
	case CF_GETBUFHANDLE:
		rc = vdi_client_get_buffer_handle(P.c, local, &handle);
		return rc;
	case CF_MAPBUFHANDLE:
		rc = vdi_client_map_buffer_handle(P.c, 0xFFFFFFFFu, &addr);
		return rc;
	}
	return VD_E_UNEXPECTED;
}

/* Observes the client state; fails the test with a message naming the
 * state seen when it is not `want`. */
static void probe_client(enum cst want, const char *row)
{
	VDConfig cfg;
	VDC_Command *cmd = NULL;
	int g = vdi_client_get_configuration(P.c, POLL_MS, &cfg);
	int rc;

	switch (want) {
	case C_DNE:
		ck_assert_msg(g == PROT, "%s: DNE probe: GetConfiguration = %s",
			      row, vdi_strerror(g));
		return;
	case C_CONFIGURABLE:
	case C_CONFIGURABLE_ENDED:
		ck_assert_msg(g == VD_E_TIMEOUT,
			      "%s: Configurable probe: GetConfiguration(0) = %s",
			      row, vdi_strerror(g));
		return;
	case C_ABORT:
	case C_ABORT_SRV:
		ck_assert_msg(g == ABRT, "%s: Abort probe: GetConfiguration = %s",
			      row, vdi_strerror(g));
		return;
	case C_INITIALIZING:
		ck_assert_msg(g == 0, "%s: Initializing probe: GetConfiguration = %s",
			      row, vdi_strerror(g));
		ck_assert_msg(P.cd[0] == NULL, "%s: a device is open", row);
		rc = vdi_client_open_device(P.c, P.dev[0], &P.cd[0]);
		ck_assert_msg(rc == 0, "%s: Initializing probe: OpenDevice = %s",
			      row, vdi_strerror(rc));
		return;
	case C_ACTIVE:
	case C_ACTIVE_CLOSING:
		ck_assert_msg(g == 0, "%s: Active probe: GetConfiguration = %s",
			      row, vdi_strerror(g));
		ck_assert_msg(P.cd[0] != NULL, "%s: no device open", row);
		rc = vdi_client_get_command(P.cd[0], POLL_MS, &cmd);
		ck_assert_msg(rc == 0 || rc == VD_E_TIMEOUT,
			      "%s: Active probe: GetCommand(0) = %s", row,
			      vdi_strerror(rc));
		return;
	case C_NT:
		ck_assert_msg(g == 0, "%s: NT probe: GetConfiguration = %s", row,
			      vdi_strerror(g));
		rc = vdi_client_get_command(P.cd[0], POLL_MS, &cmd);
		ck_assert_msg(rc == PROT, "%s: NT probe: GetCommand(0) = %s", row,
			      vdi_strerror(rc));
		return;
	}
}

START_TEST(client_cell)
{
	const struct crow *r = &crows[_i];
	char row[160];
	int rc;

	snprintf(row, sizeof(row), "client %s in %s", cfn_name[r->fn],
		 cst_name[r->state]);
	ck_assert_msg(drive_client(r->state) == 0, "%s: %s", row, FIXTURE_ERR);
	rc = call_client(r);
	ck_assert_msg(rc == r->rc, "%s = %s, want %s (%s)", row,
		      vdi_strerror(rc), vdi_strerror(r->rc), vdi_last_error());
	probe_client(r->next, row);
}
END_TEST

/* ---------------------------------------------------------------------
 * Server table.
 */
enum sst {
	S_DNE,          /* client created the set, server object fresh */
	S_CONNECTED,
	S_CONFIGURABLE,
	S_INITIALIZING, /* EndConfiguration done, BUF allocated */
	S_ACTIVE,       /* every device open both sides, agent running */
	S_NT,           /* server closed every device */
	S_ABORT,        /* server SignalAbort from Active */
	S_ABORT_CLI,    /* client SignalAbort from Active */
};
static const char *const sst_name[] = {
	"DNE", "Connected", "Configurable", "Initializing", "Active",
	"NormallyTerminated", "Abort", "Abort(by client)",
};

enum sfn {
	SF_OPEN, SF_GETCONFIG, SF_BEGIN, SF_REQUEST, SF_QUERY, SF_END,
	SF_OPENDEVICE, SF_AGENT, SF_ALLOCATE, SF_FREE, SF_ISSHARED,
	SF_SENDCOMMAND, SF_CLOSEDEVICE, SF_SIGNALABORT, SF_CLOSE,
};
static const char *const sfn_name[] = {
	"Open", "GetConfiguration", "BeginConfiguration", "RequestBuffers",
	"QueryAvailableBuffers", "EndConfiguration", "OpenDevice",
	"ExecuteCompletionAgent", "AllocateBuffer", "FreeBuffer",
	"IsSharedBuffer", "SendCommand", "CloseDevice", "SignalAbort", "Close",
};

/* Return value meaning "the call blocked, as it must" (agent). */
#define BLOCKS 0x7fff0001

struct srow {
	enum sfn fn;
	enum sst state;
	int rc;
	enum sst next;
	uint32_t callback; /* SendCommand failure: code the routine gets */
};

static const struct srow srows[] = {
	{ SF_OPEN, S_DNE, NOERROR, S_CONNECTED, 0 },
	{ SF_OPEN, S_CONNECTED, PROT, S_CONNECTED, 0 },
	{ SF_OPEN, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0 },
	{ SF_OPEN, S_INITIALIZING, PROT, S_INITIALIZING, 0 },
	{ SF_OPEN, S_ACTIVE, PROT, S_ACTIVE, 0 },
	{ SF_OPEN, S_NT, PROT, S_NT, 0 },
	{ SF_OPEN, S_ABORT, PROT, S_ABORT, 0 },

	{ SF_GETCONFIG, S_DNE, PROT, S_DNE, 0 },
	{ SF_GETCONFIG, S_CONNECTED, NOERROR, S_CONNECTED, 0 },
	{ SF_GETCONFIG, S_CONFIGURABLE, NOERROR, S_CONFIGURABLE, 0 },
	{ SF_GETCONFIG, S_INITIALIZING, NOERROR, S_INITIALIZING, 0 },
	{ SF_GETCONFIG, S_ACTIVE, NOERROR, S_ACTIVE, 0 },
	{ SF_GETCONFIG, S_NT, NOERROR, S_NT, 0 },
	{ SF_GETCONFIG, S_ABORT, ABRT, S_ABORT, 0 },

	{ SF_BEGIN, S_DNE, PROT, S_DNE, 0 },
	{ SF_BEGIN, S_CONNECTED, NOERROR, S_CONFIGURABLE, 0 },
	{ SF_BEGIN, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0 },
	{ SF_BEGIN, S_INITIALIZING, PROT, S_INITIALIZING, 0 },
	{ SF_BEGIN, S_ACTIVE, PROT, S_ACTIVE, 0 },
	{ SF_BEGIN, S_NT, PROT, S_NT, 0 },
	{ SF_BEGIN, S_ABORT, ABRT, S_ABORT, 0 }, /* D5 */

	{ SF_REQUEST, S_DNE, PROT, S_DNE, 0 },
	{ SF_REQUEST, S_CONNECTED, PROT, S_CONNECTED, 0 },
	{ SF_REQUEST, S_CONFIGURABLE, NOERROR, S_CONFIGURABLE, 0 },
	{ SF_REQUEST, S_INITIALIZING, NOERROR, S_INITIALIZING, 0 },
	{ SF_REQUEST, S_ACTIVE, NOERROR, S_ACTIVE, 0 },
	{ SF_REQUEST, S_NT, PROT, S_NT, 0 },
	{ SF_REQUEST, S_ABORT, ABRT, S_ABORT, 0 }, /* D5 */

	{ SF_QUERY, S_DNE, PROT, S_DNE, 0 },
	{ SF_QUERY, S_CONNECTED, PROT, S_CONNECTED, 0 },
	{ SF_QUERY, S_CONFIGURABLE, NOERROR, S_CONFIGURABLE, 0 },
	{ SF_QUERY, S_INITIALIZING, NOERROR, S_INITIALIZING, 0 },
	{ SF_QUERY, S_ACTIVE, NOERROR, S_ACTIVE, 0 },
	{ SF_QUERY, S_NT, PROT, S_NT, 0 },
	{ SF_QUERY, S_ABORT, ABRT, S_ABORT, 0 }, /* D5 */

	{ SF_END, S_DNE, PROT, S_DNE, 0 },
	{ SF_END, S_CONNECTED, PROT, S_CONNECTED, 0 },
	{ SF_END, S_CONFIGURABLE, NOERROR, S_INITIALIZING, 0 },
	{ SF_END, S_INITIALIZING, PROT, S_INITIALIZING, 0 },
	{ SF_END, S_ACTIVE, PROT, S_ACTIVE, 0 },
	{ SF_END, S_NT, PROT, S_NT, 0 },
	{ SF_END, S_ABORT, ABRT, S_ABORT, 0 },

	{ SF_OPENDEVICE, S_DNE, PROT, S_DNE, 0 },
	{ SF_OPENDEVICE, S_CONNECTED, PROT, S_CONNECTED, 0 },
	{ SF_OPENDEVICE, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0 },
	{ SF_OPENDEVICE, S_INITIALIZING, NOERROR, S_ACTIVE, 0 },
	{ SF_OPENDEVICE, S_ACTIVE, VD_E_OPEN, S_ACTIVE, 0 },
	{ SF_OPENDEVICE, S_NT, PROT, S_NT, 0 },
	{ SF_OPENDEVICE, S_ABORT, ABRT, S_ABORT, 0 },

	{ SF_AGENT, S_DNE, PROT, S_DNE, 0 },
	{ SF_AGENT, S_CONNECTED, PROT, S_CONNECTED, 0 },
	{ SF_AGENT, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0 },
	{ SF_AGENT, S_INITIALIZING, BLOCKS, S_ACTIVE, 0 },
	{ SF_AGENT, S_ACTIVE, PROT, S_ACTIVE, 0 }, /* already running */
	{ SF_AGENT, S_NT, PROT, S_NT, 0 },
	{ SF_AGENT, S_ABORT, ABRT, S_ABORT, 0 },

	{ SF_ALLOCATE, S_DNE, PROT, S_DNE, 0 },
	{ SF_ALLOCATE, S_CONNECTED, PROT, S_CONNECTED, 0 },
	{ SF_ALLOCATE, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0 },
	{ SF_ALLOCATE, S_INITIALIZING, NOERROR, S_INITIALIZING, 0 },
	{ SF_ALLOCATE, S_ACTIVE, NOERROR, S_ACTIVE, 0 },
	{ SF_ALLOCATE, S_NT, PROT, S_NT, 0 },
	{ SF_ALLOCATE, S_ABORT, ABRT, S_ABORT, 0 },

	{ SF_FREE, S_DNE, PROT, S_DNE, 0 },
	{ SF_FREE, S_CONNECTED, PROT, S_CONNECTED, 0 },
	{ SF_FREE, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0 },
	{ SF_FREE, S_INITIALIZING, NOERROR, S_INITIALIZING, 0 },
	{ SF_FREE, S_ACTIVE, NOERROR, S_ACTIVE, 0 },
	{ SF_FREE, S_NT, NOERROR, S_NT, 0 },   /* cleanup allowed */
	{ SF_FREE, S_ABORT, NOERROR, S_ABORT, 0 }, /* D5 */

	/* IsSharedBuffer answers 1/0 (D12): BUF where one exists. */
	{ SF_ISSHARED, S_DNE, 0, S_DNE, 0 },
	{ SF_ISSHARED, S_CONNECTED, 0, S_CONNECTED, 0 },
	{ SF_ISSHARED, S_CONFIGURABLE, 0, S_CONFIGURABLE, 0 },
	{ SF_ISSHARED, S_INITIALIZING, 1, S_INITIALIZING, 0 },
	{ SF_ISSHARED, S_ACTIVE, 1, S_ACTIVE, 0 },
	{ SF_ISSHARED, S_NT, 1, S_NT, 0 },
	{ SF_ISSHARED, S_ABORT, 1, S_ABORT, 0 },

	{ SF_SENDCOMMAND, S_ACTIVE, NOERROR, S_ACTIVE, 0 },
	{ SF_SENDCOMMAND, S_NT, PROT, S_NT, ERROR_INVALID_HANDLE },
	{ SF_SENDCOMMAND, S_ABORT, ABRT, S_ABORT, ERROR_OPERATION_ABORTED },

	{ SF_CLOSEDEVICE, S_ACTIVE, NOERROR, S_NT, 0 },
	{ SF_CLOSEDEVICE, S_NT, VD_E_CLOSE, S_NT, 0 },
	{ SF_CLOSEDEVICE, S_ABORT, ABRT, S_ABORT, 0 },

	{ SF_SIGNALABORT, S_DNE, PROT, S_DNE, 0 },
	{ SF_SIGNALABORT, S_CONNECTED, NOERROR, S_ABORT, 0 },
	{ SF_SIGNALABORT, S_CONFIGURABLE, NOERROR, S_ABORT, 0 },
	{ SF_SIGNALABORT, S_INITIALIZING, NOERROR, S_ABORT, 0 },
	{ SF_SIGNALABORT, S_ACTIVE, NOERROR, S_ABORT, 0 },
	{ SF_SIGNALABORT, S_NT, NOERROR, S_ABORT, 0 },
	{ SF_SIGNALABORT, S_ABORT, NOERROR, S_ABORT, 0 },

	{ SF_CLOSE, S_DNE, PROT, S_DNE, 0 },
	{ SF_CLOSE, S_CONNECTED, NOERROR, S_DNE, 0 },
	{ SF_CLOSE, S_CONFIGURABLE, NOERROR, S_DNE, 0 },
	{ SF_CLOSE, S_INITIALIZING, NOERROR, S_DNE, 0 },
	{ SF_CLOSE, S_ACTIVE, PROT, S_DNE, 0 }, /* D4: devices open */
	{ SF_CLOSE, S_NT, NOERROR, S_DNE, 0 },
	{ SF_CLOSE, S_ABORT, NOERROR, S_DNE, 0 },

	/* Abort signalled by the client: the same column (D5). */
	{ SF_OPEN, S_ABORT_CLI, PROT, S_ABORT_CLI, 0 },
	{ SF_GETCONFIG, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0 },
	{ SF_BEGIN, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0 },
	{ SF_REQUEST, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0 },
	{ SF_QUERY, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0 },
	{ SF_END, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0 },
	{ SF_OPENDEVICE, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0 },
	{ SF_AGENT, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0 },
	{ SF_ALLOCATE, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0 },
	{ SF_FREE, S_ABORT_CLI, NOERROR, S_ABORT_CLI, 0 },
	{ SF_ISSHARED, S_ABORT_CLI, 1, S_ABORT_CLI, 0 },
	{ SF_SENDCOMMAND, S_ABORT_CLI, ABRT, S_ABORT_CLI, ERROR_OPERATION_ABORTED },
	{ SF_CLOSEDEVICE, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0 },
	{ SF_SIGNALABORT, S_ABORT_CLI, NOERROR, S_ABORT_CLI, 0 },
	{ SF_CLOSE, S_ABORT_CLI, NOERROR, S_DNE, 0 },
};

static int drive_server(enum sst st)
{
	VDC_Command *cmd;

	FIX(start_pair(1));
	switch (st) {
	case S_DNE:
		FIX(tl_pair_advance(&P, TL_CREATED));
		return 0;
	case S_CONNECTED:
		FIX(tl_pair_advance(&P, TL_CONNECTED));
		return 0;
	case S_CONFIGURABLE:
		/* Two buffers requested, so that End, Query and the
		 * Initializing probe's AllocateBuffer have something. */
		FIX(tl_pair_advance(&P, TL_CONFIGURABLE));
		FIXRC(vdi_server_request_buffers(P.s, 65536, 0, 2), 0);
		return 0;
	case S_INITIALIZING:
		FIX(tl_pair_advance(&P, TL_INITIALIZING));
		FIXRC(vdi_server_allocate_buffer(P.s, &BUF, 65536, 0), 0);
		return 0;
	case S_ACTIVE:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		FIXRC(vdi_server_allocate_buffer(P.s, &BUF, 65536, 0), 0);
		return 0;
	case S_NT:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		FIX(tl_pair_sync_agent(&P));
		FIXRC(vdi_server_allocate_buffer(P.s, &BUF, 65536, 0), 0);
		FIXRC(vdi_server_close_device(P.sd[0]), 0);
		FIXRC(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd), VD_E_CLOSE);
		FIX(tl_agent_join(&P.agent, WAIT_MS));
		FIXRC(P.agent.rc, 0);
		return 0;
	case S_ABORT:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		FIXRC(vdi_server_allocate_buffer(P.s, &BUF, 65536, 0), 0);
		FIXRC(vdi_server_signal_abort(P.s), 0);
		FIX(tl_agent_join(&P.agent, WAIT_MS));
		return 0;
	case S_ABORT_CLI:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		FIXRC(vdi_server_allocate_buffer(P.s, &BUF, 65536, 0), 0);
		FIXRC(vdi_client_signal_abort(P.c), 0);
		/* The agent notices the client's abort and returns. */
		FIX(tl_agent_join(&P.agent, WAIT_MS));
		return 0;
	}
	return -1;
}

/* Runs the agent on a thread; returns its code, or BLOCKS if it is still
 * running after wait_ms (the thread is then kept in P.agent). */
static int call_agent(uint32_t wait_ms)
{
	struct tl_agent *a = &P.agent;
	static struct tl_agent extra;

	if (a->started)
		a = &extra; /* the fixture's agent runs: a second one */
	ck_assert_int_eq(tl_agent_start(a, P.s), 0);
	if (tl_agent_join(a, wait_ms) != 0)
		return BLOCKS;
	return a->rc;
}

static int call_server(const struct srow *r)
{
	VDConfig cfg;
	uint32_t count = 0;
	uint8_t *b = NULL;
	uint8_t local[16];
	int rc;

	switch (r->fn) {
	case SF_OPEN:
		return vdi_server_open(P.s, NULL, P.name);
	case SF_GETCONFIG:
		return vdi_server_get_configuration(P.s, &cfg);
	case SF_BEGIN:
		return vdi_server_begin_configuration(P.s, VDF_WriteMedia, 512, 0,
						      65536, 1000);
	case SF_REQUEST:
		return vdi_server_request_buffers(P.s, 65536, 0, 1);
	case SF_QUERY:
		rc = vdi_server_query_available_buffers(P.s, 65536, 0, &count);
		if (rc == 0)
			ck_assert_uint_ge(count, 1);
		return rc;
	case SF_END:
		return vdi_server_end_configuration(P.s);
	case SF_OPENDEVICE: {
		struct vdi_server_device *d = (struct vdi_server_device *)&cfg;

		rc = vdi_server_open_device(P.s, NULL, &d);
		if (rc == 0)
			P.sd[0] = d;
		return rc;
	}
	case SF_AGENT:
		/* Initializing: must block; elsewhere: must return at once. */
		return call_agent(r->state == S_INITIALIZING ? 300 : WAIT_MS);
	case SF_ALLOCATE:
		rc = vdi_server_allocate_buffer(P.s, &b, 65536, 0);
		if (rc == 0) {
			ck_assert_ptr_nonnull(b);
			ck_assert_ptr_ne(b, BUF);
		}
		return rc;
	case SF_FREE:
		return vdi_server_free_buffer(P.s, BUF ? BUF : local, 65536);
	case SF_ISSHARED:
		return vdi_server_is_shared_buffer(P.s, BUF ? BUF : local);
	case SF_SENDCOMMAND:
		tl_cmd_init(&CMDS[0], VDC_Flush, 0, 0, NULL);
		rc = vdi_server_send_command(P.sd[0], &CMDS[0].cmd);
		if (rc != 0) {
			/* D8: routine already ran, on this thread, once. */
			ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 1);
			ck_assert_msg(pthread_equal(CMDS[0].thread, pthread_self()),
				      "callback not on the calling thread");
			ck_assert_uint_eq(CMDS[0].code, r->callback);
		}
		return rc;
	case SF_CLOSEDEVICE:
		return vdi_server_close_device(P.sd[0]);
	case SF_SIGNALABORT:
		return vdi_server_signal_abort(P.s);
	case SF_CLOSE:
		/* Close invalidates the device handles and buffers. */
		if (P.agent.started && r->state != S_ACTIVE)
			tl_agent_join(&P.agent, WAIT_MS);
		rc = vdi_server_close(P.s);
		memset(P.sd, 0, sizeof(P.sd));
		BUF = NULL;
		return rc;
	}
	return VD_E_UNEXPECTED;
}

/* A second ExecuteCompletionAgent while one runs must be refused. */
static int second_agent_refused(void)
{
	static struct tl_agent extra;

	if (tl_agent_start(&extra, P.s) != 0)
		return 0;
	if (tl_agent_join(&extra, WAIT_MS) != 0)
		return 0;
	return extra.rc == PROT;
}

static void probe_server(enum sst want, const char *row)
{
	VDConfig cfg;
	uint32_t count = 0;
	uint8_t *b = NULL;
	struct vdi_server_device *d = NULL;
	int g = vdi_server_get_configuration(P.s, &cfg);
	int rc;

	if (want == S_DNE) {
		ck_assert_msg(g == PROT, "%s: DNE probe: GetConfiguration = %s",
			      row, vdi_strerror(g));
		return;
	}
	if (want == S_ABORT || want == S_ABORT_CLI) {
		ck_assert_msg(g == ABRT, "%s: Abort probe: GetConfiguration = %s",
			      row, vdi_strerror(g));
		return;
	}
	ck_assert_msg(g == 0, "%s: %s probe: GetConfiguration = %s", row,
		      sst_name[want], vdi_strerror(g));
	switch (want) {
	case S_CONNECTED:
		rc = vdi_server_query_available_buffers(P.s, 65536, 0, &count);
		ck_assert_msg(rc == PROT, "%s: Connected probe: Query = %s", row,
			      vdi_strerror(rc));
		rc = vdi_server_begin_configuration(P.s, VDF_WriteMedia, 512, 0,
						    65536, 1000);
		ck_assert_msg(rc == 0, "%s: Connected probe: Begin = %s", row,
			      vdi_strerror(rc));
		return;
	case S_CONFIGURABLE:
		rc = vdi_server_query_available_buffers(P.s, 65536, 0, &count);
		ck_assert_msg(rc == 0, "%s: Configurable probe: Query = %s", row,
			      vdi_strerror(rc));
		rc = vdi_server_end_configuration(P.s);
		ck_assert_msg(rc == 0, "%s: Configurable probe: End = %s", row,
			      vdi_strerror(rc));
		return;
	case S_INITIALIZING:
	case S_ACTIVE:
		rc = vdi_server_end_configuration(P.s);
		ck_assert_msg(rc == PROT, "%s: probe: End = %s", row,
			      vdi_strerror(rc));
		rc = vdi_server_allocate_buffer(P.s, &b, 65536, 0);
		ck_assert_msg(rc == 0, "%s: probe: Allocate = %s", row,
			      vdi_strerror(rc));
		ck_assert_int_eq(vdi_server_free_buffer(P.s, b, 65536), 0);
		/* The agent alone also makes the set Active (spec 3.2), which
		 * only the published phase tells apart from Initializing. */
		struct vdi_set_info info;
		TL_OK(vdi_set_info_get(NULL, P.name, &info));
		ck_assert_msg(strcmp(info.state, want == S_INITIALIZING ?
					 "initializing" : "active") == 0,
			      "%s: %s probe: set info state '%s'", row,
			      sst_name[want], info.state);
		if (want == S_INITIALIZING) {
			rc = vdi_server_open_device(P.s, NULL, &d);
			ck_assert_msg(rc == 0, "%s: Initializing probe: OpenDevice = %s",
				      row, vdi_strerror(rc));
		} else if (P.agent.started) {
			ck_assert_msg(second_agent_refused(),
				      "%s: Active probe: second agent not refused",
				      row);
		} else {
			rc = vdi_server_open_device(P.s, NULL, &d);
			ck_assert_msg(rc == VD_E_OPEN,
				      "%s: Active probe: OpenDevice = %s", row,
				      vdi_strerror(rc));
		}
		return;
	case S_NT:
		rc = vdi_server_allocate_buffer(P.s, &b, 65536, 0);
		ck_assert_msg(rc == PROT, "%s: NT probe: Allocate = %s", row,
			      vdi_strerror(rc));
		rc = vdi_server_close_device(P.sd[0]);
		ck_assert_msg(rc == VD_E_CLOSE, "%s: NT probe: CloseDevice = %s",
			      row, vdi_strerror(rc));
		return;
	case S_DNE:
	case S_ABORT:
	case S_ABORT_CLI:
		break;
	}
}

START_TEST(server_cell)
{
	const struct srow *r = &srows[_i];
	char row[160];
	int rc;

	snprintf(row, sizeof(row), "server %s in %s", sfn_name[r->fn],
		 sst_name[r->state]);
	ck_assert_msg(drive_server(r->state) == 0, "%s: %s", row, FIXTURE_ERR);
	rc = call_server(r);
	if (r->rc == BLOCKS)
		ck_assert_msg(rc == BLOCKS, "%s returned %s instead of blocking",
			      row, vdi_strerror(rc));
	else
		ck_assert_msg(rc == r->rc, "%s = %s (%d), want %s (%s)", row,
			      vdi_strerror(rc), rc, vdi_strerror(r->rc),
			      vdi_last_error());
	probe_server(r->next, row);
}
END_TEST

/* ---------------------------------------------------------------------
 * Per-device states, multi-device sets (D3, D15, D17).
 */
static void setup_multi(uint32_t n)
{
	ck_assert_msg(start_pair(n) == 0, "%s", FIXTURE_ERR);
}

/* Server OpenDevice(NULL) loop: n devices, then VD_E_OPEN; names. */
START_TEST(server_open_device_loop)
{
	struct vdi_server_device *d;
	int rc;
	uint32_t n = 5;

	setup_multi(n);
	TL_OK(tl_pair_advance(&P, TL_ENDED));
	for (uint32_t i = 0; i < n; i++) {
		d = NULL;
		TL_OK(vdi_server_open_device(P.s, i % 2 ? "" : NULL, &d));
		ck_assert_ptr_nonnull(d);
		for (uint32_t j = 0; j < i; j++)
			ck_assert_ptr_ne(d, P.sd[j]);
		P.sd[i] = d;
	}
	/* The first device handed out carries the set's name (D15). */
	ck_assert_str_eq(vdi_server_device_name(P.sd[0]), P.name);
	d = (struct vdi_server_device *)&rc;
	rc = vdi_server_open_device(P.s, NULL, &d);
	ck_assert_msg(rc == VD_E_OPEN, "OpenDevice #%u = %s", n + 1,
		      vdi_strerror(rc));
	ck_assert_ptr_null(d);
	TL_RC(vdi_server_open_device(P.s, NULL, &d), VD_E_OPEN);
	TL_RC(vdi_server_open_device(P.s, P.name, &d), VD_E_OPEN);
}
END_TEST

/* Server OpenDevice by name (D15): a name picks that device; the client
 * opening the same name talks to it. */
START_TEST(server_open_device_by_name)
{
	struct vdi_server_device *d = NULL, *d0 = NULL, *d1 = NULL;
	VDC_Command *cmd = NULL;

	setup_multi(3);
	TL_OK(tl_pair_advance(&P, TL_INITIALIZING));
	TL_OK(vdi_server_open_device(P.s, P.dev[2], &d));
	ck_assert_str_eq(vdi_server_device_name(d), P.dev[2]);
	/* Already opened by the server, others still closed: PROTOCOL (D3). */
	TL_RC(vdi_server_open_device(P.s, P.dev[2], &d1), PROT);
	ck_assert_ptr_null(d1);
	TL_OK(vdi_server_open_device(P.s, NULL, &d0));
	ck_assert_str_eq(vdi_server_device_name(d0), P.name);
	TL_OK(vdi_server_open_device(P.s, P.dev[1], &d1));
	ck_assert_str_eq(vdi_server_device_name(d1), P.dev[1]);
	P.sd[0] = d0;
	P.sd[1] = d1;
	P.sd[2] = d;
	TL_RC(vdi_server_open_device(P.s, NULL, &d), VD_E_OPEN);
	TL_OK(tl_agent_start(&P.agent, P.s));
	/* Every slot is named now: an unknown name is INVALID (D15). */
	struct vdi_client_device *cd = NULL;
	TL_RC(vdi_client_open_device(P.c, "no-such-device", &cd), VD_E_INVALID);
	ck_assert_ptr_null(cd);
	TL_OK(vdi_client_open_device(P.c, P.dev[2], &P.cd[2]));
	ck_assert_str_eq(vdi_client_device_name(P.cd[2]), P.dev[2]);
	ck_assert_ptr_eq(vdi_client_device_set(P.cd[2]), P.c);
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[2], &CMDS[0].cmd));
	TL_OK(vdi_client_get_command(P.cd[2], WAIT_MS, &cmd));
	ck_assert_int_eq(cmd->commandCode, VDC_Flush);
	TL_OK(vdi_client_complete_command(P.cd[2], cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	ck_assert_uint_eq(CMDS[0].code, 0);
}
END_TEST

/* D15: whichever side names a device first registers the name; the
 * other side's OpenDevice of that name reaches the same device. */
START_TEST(client_names_device_first)
{
	struct vdi_client_device *cd = NULL, *bad = NULL;
	struct vdi_server_device *sd = NULL;
	VDC_Command *cmd = NULL;
	char longname[VDI_MAX_NAME + 2];

	setup_multi(3);
	TL_OK(tl_pair_advance(&P, TL_INITIALIZING));
	/* Device names obey the set-name rules. */
	memset(longname, 'd', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	TL_RC(vdi_client_open_device(P.c, longname, &bad), VD_E_INVALID);
	TL_RC(vdi_client_open_device(P.c, "", &bad), VD_E_INVALID);
	TL_RC(vdi_client_open_device(P.c, "a/b", &bad), VD_E_INVALID);
	ck_assert_ptr_null(bad);
	TL_OK(vdi_client_open_device(P.c, "stripe-two", &cd));
	ck_assert_str_eq(vdi_client_device_name(cd), "stripe-two");
	TL_OK(vdi_server_open_device(P.s, "stripe-two", &sd));
	ck_assert_str_eq(vdi_server_device_name(sd), "stripe-two");
	TL_OK(tl_agent_start(&P.agent, P.s));
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 77, NULL);
	TL_OK(vdi_server_send_command(sd, &CMDS[0].cmd));
	TL_OK(vdi_client_get_command(cd, WAIT_MS, &cmd));
	ck_assert_int_eq(cmd->position, 77);
	TL_OK(vdi_client_complete_command(cd, cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
}
END_TEST

/* Client OpenDevice per device (D3): a device already open is PROTOCOL
 * while others are not; VD_E_OPEN once all are; the loop terminator. */
START_TEST(client_open_device_per_device)
{
	struct vdi_client_device *d = NULL;
	uint32_t n = 3;
	int rc;

	setup_multi(n);
	TL_OK(tl_pair_advance(&P, TL_SERVER_OPEN));
	TL_OK(vdi_client_open_device(P.c, P.dev[0], &P.cd[0]));
	d = (struct vdi_client_device *)&rc;
	TL_RC(vdi_client_open_device(P.c, P.dev[0], &d), PROT);
	ck_assert_ptr_null(d);
	/* The set is Active and device 1 still opens. */
	TL_OK(vdi_client_open_device(P.c, P.dev[1], &P.cd[1]));
	ck_assert_ptr_ne(P.cd[0], P.cd[1]);
	TL_RC(vdi_client_open_device(P.c, P.dev[1], &d), PROT);
	/* Loop until VD_E_OPEN, as the spec allows. */
	uint32_t opened = 2;
	for (uint32_t i = 2; i < n + 2; i++) {
		rc = vdi_client_open_device(P.c, P.dev[i < n ? i : 0],
					    &P.cd[i < n ? i : 0]);
		if (rc == VD_E_OPEN)
			break;
		ck_assert_msg(rc == 0, "OpenDevice %u = %s", i, vdi_strerror(rc));
		opened++;
	}
	ck_assert_uint_eq(opened, n);
	TL_RC(vdi_client_open_device(P.c, P.dev[1], &d), VD_E_OPEN);
}
END_TEST

/* Multi-device termination (D17): the client is not Normally Terminated
 * until every device returned VD_E_CLOSE; a device closed while others
 * are not keeps the set Active. */
START_TEST(multi_device_termination)
{
	VDC_Command *cmd = NULL;
	VDConfig cfg;

	setup_multi(2);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	TL_OK(vdi_server_close_device(P.sd[0]));
	TL_RC(vdi_server_close_device(P.sd[0]), VD_E_CLOSE); /* twice */
	TL_RC(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd), VD_E_CLOSE);
	/* Device 1 still works. */
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[1], &CMDS[0].cmd));
	/* Device 0 is closed: sending on it fails with the D8 callback. */
	tl_cmd_init(&CMDS[1], VDC_Flush, 0, 0, NULL);
	TL_RC(vdi_server_send_command(P.sd[0], &CMDS[1].cmd), PROT);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[1]), 1);
	ck_assert_uint_eq(CMDS[1].code, ERROR_INVALID_HANDLE);
	TL_OK(vdi_client_get_command(P.cd[1], WAIT_MS, &cmd));
	TL_OK(vdi_client_complete_command(P.cd[1], cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	/* The agent keeps running while device 1 is open. */
	tl_sleep_ms(50);
	ck_assert(!tl_agent_returned(&P.agent));
	TL_OK(vdi_client_get_configuration(P.c, 0, &cfg));
	TL_OK(vdi_server_close_device(P.sd[1]));
	TL_RC(vdi_client_get_command(P.cd[1], WAIT_MS, &cmd), VD_E_CLOSE);
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	ck_assert_int_eq(P.agent.rc, 0);
	/* Now NT: GetCommand is PROTOCOL on both devices. */
	TL_RC(vdi_client_get_command(P.cd[0], 0, &cmd), PROT);
	TL_RC(vdi_client_get_command(P.cd[1], 0, &cmd), PROT);
	P.client_closed = 1;
	TL_OK(vdi_client_close(P.c));
	P.server_closed = 1;
	TL_OK(vdi_server_close(P.s));
	ck_assert_int_eq(tl_shm_count_set(P.name), 0);
}
END_TEST

/* Devices the server closed before the client opened them (D17): the
 * client still opens one while it is not Normally Terminated (Active
 * with no device done yet counts as not done) and is told VD_E_CLOSE;
 * from then on every device it opened returned VD_E_CLOSE and the
 * server closed them all, so the client is Normally Terminated and the
 * table's OpenDevice cell holds for the devices never opened:
 * VD_E_PROTOCOL, *ppVirtualDevice NULL.  (Found by fuzz_shm, whose
 * contract had expected success.) */
START_TEST(open_device_after_server_closed_it)
{
	struct vdi_client_device *d;
	VDC_Command *cmd = NULL;
	int rc;

	setup_multi(3);
	TL_OK(tl_pair_advance(&P, TL_SERVER_OPEN));
	for (uint32_t i = 0; i < 3; i++)
		TL_OK(vdi_server_close_device(P.sd[i]));
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	ck_assert_int_eq(P.agent.rc, 0);
	/* Not NT yet: the first device opens, and is closed. */
	TL_OK(vdi_client_open_device(P.c, P.dev[1], &P.cd[1]));
	ck_assert_ptr_nonnull(P.cd[1]);
	TL_RC(vdi_client_get_command(P.cd[1], WAIT_MS, &cmd), VD_E_CLOSE);
	ck_assert_ptr_null(cmd);
	/* Every opened device saw VD_E_CLOSE and the server closed all. */
	for (uint32_t i = 0; i < 3; i += 2) {
		d = (struct vdi_client_device *)&rc;
		TL_RC(vdi_client_open_device(P.c, P.dev[i], &d), PROT);
		ck_assert_ptr_null(d);
		ck_assert_msg(strstr(vdi_last_error(), "normally terminated") != NULL, "%s",
			      vdi_last_error());
	}
	TL_RC(vdi_client_get_command(P.cd[1], 0, &cmd), PROT);
	P.client_closed = 1;
	TL_OK(vdi_client_close(P.c));
	P.server_closed = 1;
	TL_OK(vdi_server_close(P.s));
	ck_assert_int_eq(tl_shm_count_set(P.name), 0);
}
END_TEST

/* Normal end through the helper; nothing left in /dev/shm. */
START_TEST(normal_end_releases_everything)
{
	setup_multi(4);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	/* The control region and buffer area 0 at least. */
	ck_assert_int_ge(tl_shm_count_set(P.name), 2);
	TL_OK(tl_pair_finish(&P));
	ck_assert_int_eq(tl_shm_count_set(P.name), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Close with open devices (D4).
 */
START_TEST(client_close_with_open_device)
{
	VDC_Command *cmd = NULL;
	VDConfig cfg;

	setup_multi(2);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	/* Device 0 saw VD_E_CLOSE, device 1 did not: still open. */
	TL_OK(vdi_server_close_device(P.sd[0]));
	TL_RC(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd), VD_E_CLOSE);
	P.client_closed = 1;
	TL_RC(vdi_client_close(P.c), VD_E_OPEN);
	memset(P.cd, 0, sizeof(P.cd));
	/* The internal abort reached the server. */
	TL_RC(vdi_server_get_configuration(P.s, &cfg), ABRT);
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 0, NULL);
	TL_RC(vdi_server_send_command(P.sd[1], &CMDS[0].cmd), ABRT);
	ck_assert_uint_eq(CMDS[0].code, ERROR_OPERATION_ABORTED);
	/* The client object is back in DNE. */
	TL_RC(vdi_client_get_configuration(P.c, 0, &cfg), PROT);
}
END_TEST

START_TEST(server_close_with_open_device)
{
	VDC_Command *cmd = NULL, *held = NULL;
	uint64_t t0;

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	TL_OK(send_write(0, 0, NULL));
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &held));
	P.server_closed = 1;
	TL_RC(vdi_server_close(P.s), PROT);
	memset(P.sd, 0, sizeof(P.sd));
	/* The outstanding command was completed with 995 (callback ran). */
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 1);
	ck_assert_uint_eq(CMDS[0].code, ERROR_OPERATION_ABORTED);
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	/* The client sees the abort at once. */
	t0 = tl_now_ms();
	TL_RC(vdi_client_get_command(P.cd[0], 5000, &cmd), ABRT);
	ck_assert_uint_lt(tl_now_ms() - t0, 1000);
	ck_assert_ptr_null(cmd);
	TL_RC(vdi_client_complete_command(P.cd[0], held, 0, 0, 0), ABRT);
}
END_TEST

/* ---------------------------------------------------------------------
 * Abort: every outstanding command ends with 995, waits wake (spec 2.5).
 */
static void *blocked_get_command(void *arg)
{
	VDC_Command *cmd = NULL;
	intptr_t rc = vdi_client_get_command(arg, VDI_INFINITE, &cmd);

	return (void *)rc;
}

START_TEST(abort_wakes_and_completes)
{
	pthread_t th;
	void *ret;
	uint64_t t0;

	setup_multi(2);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	TL_OK(send_write(0, 0, NULL));
	TL_OK(send_write(0, 1, NULL));
	/* Device 1: a GetCommand blocked forever. */
	ck_assert_int_eq(pthread_create(&th, NULL, blocked_get_command, P.cd[1]), 0);
	tl_sleep_ms(50);
	t0 = tl_now_ms();
	TL_OK(vdi_server_signal_abort(P.s));
	ck_assert_int_eq(pthread_join(th, &ret), 0);
	ck_assert_int_eq((int)(intptr_t)ret, ABRT);
	ck_assert_uint_lt(tl_now_ms() - t0, 1000);
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	TL_OK(tl_cmd_wait(&CMDS[1], WAIT_MS));
	ck_assert_uint_eq(CMDS[0].code, ERROR_OPERATION_ABORTED);
	ck_assert_uint_eq(CMDS[1].code, ERROR_OPERATION_ABORTED);
	TL_OK(tl_agent_join(&P.agent, WAIT_MS));
	/* Exactly once each. */
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 1);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[1]), 1);
	/* Abort is sticky, for the client too (D5). */
	VDConfig cfg;
	TL_RC(vdi_client_get_configuration(P.c, 0, &cfg), ABRT);
	TL_RC(vdi_client_signal_abort(P.c), 0);
	TL_RC(vdi_server_signal_abort(P.s), 0);
}
END_TEST

/* Waits end at their timeout; VDI_INFINITE and negative values (D13)
 * wait until the event. */
struct waiter {
	struct tl_pair *p;
	uint32_t timeout;
	int which; /* 0: GetConfiguration, 1: GetCommand */
	int rc;
	VDConfig cfg;
	VDC_Command *cmd;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;

	if (w->which == 0)
		w->rc = vdi_client_get_configuration(w->p->c, w->timeout, &w->cfg);
	else
		w->rc = vdi_client_get_command(w->p->cd[0], w->timeout, &w->cmd);
	return NULL;
}

START_TEST(waits_time_out)
{
	struct waiter w = { .p = &P };
	pthread_t th;
	VDConfig cfg;
	VDC_Command *cmd;
	uint64_t t0, dt;

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_CONFIGURABLE));
	t0 = tl_now_ms();
	TL_RC(vdi_client_get_configuration(P.c, 150, &cfg), VD_E_TIMEOUT);
	dt = tl_now_ms() - t0;
	ck_assert_msg(dt >= 140 && dt < 2000, "GetConfiguration(150) took %llu ms",
		      (unsigned long long)dt);
	/* Infinite wait released by EndConfiguration. */
	w.which = 0;
	w.timeout = VDI_INFINITE;
	ck_assert_int_eq(pthread_create(&th, NULL, waiter_main, &w), 0);
	tl_sleep_ms(100);
	TL_OK(tl_pair_advance(&P, TL_ENDED));
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	TL_OK(w.rc);
	ck_assert_uint_eq(w.cfg.maxIODepth, 4);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	t0 = tl_now_ms();
	TL_RC(vdi_client_get_command(P.cd[0], 150, &cmd), VD_E_TIMEOUT);
	dt = tl_now_ms() - t0;
	ck_assert_msg(dt >= 140 && dt < 2000, "GetCommand(150) took %llu ms",
		      (unsigned long long)dt);
	/* A negative timeout (the Linux SDK's infinite) waits for a command. */
	w.which = 1;
	w.timeout = 0x80000000u;
	ck_assert_int_eq(pthread_create(&th, NULL, waiter_main, &w), 0);
	tl_sleep_ms(200);
	tl_cmd_init(&CMDS[0], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[0], &CMDS[0].cmd));
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	TL_OK(w.rc);
	ck_assert_int_eq(w.cmd->commandCode, VDC_Flush);
	TL_OK(vdi_client_complete_command(P.cd[0], w.cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
}
END_TEST

/* ---------------------------------------------------------------------
 * Queue limit (D7) and failure callbacks (D8).
 */
START_TEST(queue_full)
{
	VDC_Command *cmd = NULL;
	const int n = VDI_QUEUE_DEPTH;

	setup_multi(2);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	for (int i = 0; i < n; i++) {
		tl_cmd_init(&CMDS[i], VDC_Flush, 0, (uint64_t)i, NULL);
		TL_OK(vdi_server_send_command(P.sd[0], &CMDS[i].cmd));
	}
	tl_cmd_init(&CMDS[n], VDC_Flush, 0, 0, NULL);
	TL_RC(vdi_server_send_command(P.sd[0], &CMDS[n].cmd), VD_E_QUEUE_FULL);
	/* D8: routine ran once, synchronously, on this thread. */
	ck_assert_int_eq(tl_cmd_calls(&CMDS[n]), 1);
	ck_assert(pthread_equal(CMDS[n].thread, pthread_self()));
	ck_assert_uint_eq(CMDS[n].code, ERROR_NO_SYSTEM_RESOURCES);
	ck_assert_ptr_eq(CMDS[n].context_seen, &CMDS[n]);
	/* The limit is per device: device 1 still takes commands. */
	tl_cmd_init(&CMDS[n + 3], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[1], &CMDS[n + 3].cmd));
	ck_assert_int_eq(tl_cmd_calls(&CMDS[n + 3]), 0);
	/* Fetched but not completed still counts as outstanding. */
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
	ck_assert_int_eq(cmd->commandCode, VDC_Flush);
	tl_cmd_init(&CMDS[n + 1], VDC_Flush, 0, 0, NULL);
	TL_RC(vdi_server_send_command(P.sd[0], &CMDS[n + 1].cmd), VD_E_QUEUE_FULL);
	/* Completing one frees one slot. */
	TL_OK(vdi_client_complete_command(P.cd[0], cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	tl_cmd_init(&CMDS[n + 2], VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[0], &CMDS[n + 2].cmd));
	/* The failed commands were never delivered nor called again. */
	tl_sleep_ms(20);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[n]), 1);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[n + 1]), 1);
	/* The client may take several and complete them out of order (D7). */
	VDC_Command *a = NULL, *b = NULL;
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &a));
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &b));
	ck_assert_int_eq(a->position, 1);
	ck_assert_int_eq(b->position, 2);
	TL_OK(vdi_client_complete_command(P.cd[0], b, 0, 0, 22));
	TL_OK(tl_cmd_wait(&CMDS[2], WAIT_MS));
	ck_assert_int_eq(tl_cmd_calls(&CMDS[1]), 0);
	TL_OK(vdi_client_complete_command(P.cd[0], a, 0, 0, 11));
	TL_OK(tl_cmd_wait(&CMDS[1], WAIT_MS));
	ck_assert_uint_eq(CMDS[1].out_position, 11);
	ck_assert_uint_eq(CMDS[2].out_position, 22);
}
END_TEST

/* Malformed commands: VD_E_INVALID with callback 87; NULL command or
 * routine: VD_E_INVALID without callback (D8, D11). */
START_TEST(send_command_invalid)
{
	uint8_t *b = NULL;
	struct {
		uint32_t code, size;
		int with_buffer;
	} bad[] = {
		{ 0, 0, 0 },                       /* code below 1 */
		{ VDC_MAX_CODE + 1, 0, 0 },        /* code above 19 */
		{ VDC_Write, 0, 1 },               /* empty write */
		{ VDC_Write, 100, 1 },             /* not a blockSize multiple */
		{ VDC_Write, 65536 * 2, 1 },       /* above maxTransferSize */
		{ VDC_Read, 512, 0 },              /* no buffer */
		{ VDC_Write, 512, 2 },             /* not a shared buffer */
	};

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	TL_OK(vdi_server_allocate_buffer(P.s, &b, 65536, 0));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		static uint8_t local[512];

		tl_cmd_init(&CMDS[i], bad[i].code, bad[i].size, 0,
			    bad[i].with_buffer == 1 ? b :
			    bad[i].with_buffer == 2 ? local : NULL);
		int rc = vdi_server_send_command(P.sd[0], &CMDS[i].cmd);
		ck_assert_msg(rc == VD_E_INVALID, "bad command %zu = %s", i,
			      vdi_strerror(rc));
		ck_assert_int_eq(tl_cmd_calls(&CMDS[i]), 1);
		ck_assert_uint_eq(CMDS[i].code, ERROR_INVALID_PARAMETER);
	}
	TL_RC(vdi_server_send_command(P.sd[0], NULL), VD_E_INVALID);
	tl_cmd_init(&CMDS[10], VDC_Flush, 0, 0, NULL);
	CMDS[10].cmd.completionRoutine = NULL;
	TL_RC(vdi_server_send_command(P.sd[0], &CMDS[10].cmd), VD_E_INVALID);
	ck_assert_int_eq(CMDS[10].calls, 0);
	/* Nothing reached the client. */
	VDC_Command *cmd;
	TL_RC(vdi_client_get_command(P.cd[0], 0, &cmd), VD_E_TIMEOUT);
}
END_TEST

/* Completion data travels back: code, bytes, position; every command
 * code 1..19 is carried with its size and position (D11). */
START_TEST(all_command_codes_round_trip)
{
	VDC_Command *cmd = NULL;
	uint8_t *b = NULL;

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	TL_OK(vdi_server_allocate_buffer(P.s, &b, 65536, 0));
	for (uint32_t code = VDC_MIN_CODE; code <= VDC_MAX_CODE; code++) {
		int data = code == VDC_Read || code == VDC_Write;
		uint32_t size = data ? 4096 : code;

		tl_cmd_init(&CMDS[code], code, size, 1000 + code, data ? b : NULL);
		TL_OK(vdi_server_send_command(P.sd[0], &CMDS[code].cmd));
		TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
		ck_assert_int_eq(cmd->commandCode, (int32_t)code);
		ck_assert_int_eq(cmd->size, (int32_t)size);
		ck_assert_int_eq(cmd->position, 1000 + code);
		if (data)
			ck_assert_ptr_nonnull(cmd->buffer);
		else
			ck_assert_ptr_null(cmd->buffer);
		TL_OK(vdi_client_complete_command(P.cd[0], cmd, 7000 + code,
						  data ? 2048 : 0, 5000 + code));
		TL_OK(tl_cmd_wait(&CMDS[code], WAIT_MS));
		ck_assert_uint_eq(CMDS[code].code, 7000 + code);
		ck_assert_uint_eq(CMDS[code].bytes, data ? 2048 : 0);
		ck_assert_uint_eq(CMDS[code].out_position, 5000 + code);
		ck_assert_ptr_eq(CMDS[code].context_seen, &CMDS[code]);
		ck_assert(!pthread_equal(CMDS[code].thread, pthread_self()));
	}
}
END_TEST

/* ---------------------------------------------------------------------
 * CompleteCommand with a pointer that is not outstanding (D21).
 */
START_TEST(complete_foreign_pointer)
{
	VDC_Command *cmd = NULL, *other = NULL;
	VDC_Command fake;

	setup_multi(2);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	TL_OK(send_write(0, 0, NULL));
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
	/* A copy on the stack is not the command. */
	fake = *cmd;
	TL_RC(vdi_client_complete_command(P.cd[0], &fake, 0, 65536, 0), VD_E_INVALID);
	TL_RC(vdi_client_complete_command(P.cd[0], NULL, 0, 65536, 0), VD_E_INVALID);
	/* Device 0's command completed on device 1. */
	TL_RC(vdi_client_complete_command(P.cd[1], cmd, 0, 65536, 0), VD_E_INVALID);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 0);
	/* More bytes than the command carries: refused, and the command
	 * stays outstanding (the client's own argument, not a peer's). */
	TL_RC(vdi_client_complete_command(P.cd[0], cmd, 0, 65537, 0), VD_E_INVALID);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 0);
	TL_OK(vdi_client_complete_command(P.cd[0], cmd, 0, 65536, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	ck_assert_uint_eq(CMDS[0].bytes, 65536);
	/* Completed once: a second time is INVALID and not delivered (D21). */
	TL_RC(vdi_client_complete_command(P.cd[0], cmd, 0, 65536, 0), VD_E_INVALID);
	tl_sleep_ms(20);
	ck_assert_int_eq(tl_cmd_calls(&CMDS[0]), 1);
	/* The set still works. */
	TL_OK(send_write(1, 1, NULL));
	TL_OK(vdi_client_get_command(P.cd[1], WAIT_MS, &other));
	TL_OK(vdi_client_complete_command(P.cd[1], other, 0, 65536, 0));
	TL_OK(tl_cmd_wait(&CMDS[1], WAIT_MS));
}
END_TEST

/* ---------------------------------------------------------------------
 * Secondaries (D22, D17).
 */
START_TEST(secondary_readiness)
{
	struct vdi_client *sec = NULL, *sec2 = NULL;
	struct vdi_client_device *d = NULL;
	VDConfig cfg;
	VDC_Command *cmd = NULL;
	char missing[TL_NAME_MAX];

	setup_multi(2);
	TL_OK(vdi_client_new(&sec));
	/* No such set. */
	TL_RC(vdi_client_open_in_secondary(sec, tl_name(missing)), PROT);
	TL_OK(tl_pair_advance(&P, TL_CREATED));
	TL_RC(vdi_client_open_in_secondary(sec, P.name), PROT);
	TL_OK(tl_pair_advance(&P, TL_CONFIGURABLE));
	TL_RC(vdi_client_open_in_secondary(sec, P.name), PROT);
	/* Ready once the server ended configuration, even before the
	 * primary's GetConfiguration (D22). */
	TL_OK(tl_pair_advance(&P, TL_ENDED));
	TL_OK(vdi_client_open_in_secondary(sec, P.name));
	TL_RC(vdi_client_open_in_secondary(sec, P.name), PROT); /* in use */
	TL_RC(vdi_client_create(sec, P.name, &P.req), PROT);
	TL_OK(vdi_client_get_configuration(sec, WAIT_MS, &cfg));
	ck_assert_uint_eq(cfg.deviceCount, 2);
	ck_assert_uint_eq(cfg.features & VDF_WriteMedia, VDF_WriteMedia);
	TL_OK(tl_pair_advance(&P, TL_SERVER_OPEN));
	/* Primary drives device 0, the secondary device 1. */
	TL_OK(vdi_client_get_configuration(P.c, WAIT_MS, &cfg));
	TL_OK(vdi_client_open_device(P.c, P.dev[0], &P.cd[0]));
	TL_OK(vdi_client_open_device(sec, P.dev[1], &d));
	TL_OK(send_write(1, 0, NULL));
	TL_OK(vdi_client_get_command(d, WAIT_MS, &cmd));
	ck_assert_int_eq(cmd->buffer[100], 0x5A);
	TL_OK(vdi_client_complete_command(d, cmd, 0, 65536, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	TL_OK(vdi_server_close_device(P.sd[1]));
	TL_RC(vdi_client_get_command(d, WAIT_MS, &cmd), VD_E_CLOSE);
	/* Close in a secondary only detaches (D17). */
	TL_OK(vdi_client_close(sec));
	ck_assert_int_gt(tl_shm_count_set(P.name), 0);
	TL_OK(send_write(0, 1, NULL));
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
	TL_OK(vdi_client_complete_command(P.cd[0], cmd, 0, 65536, 0));
	TL_OK(tl_cmd_wait(&CMDS[1], WAIT_MS));
	/* Aborted: ABORT for a new secondary. */
	TL_OK(vdi_client_signal_abort(P.c));
	TL_OK(vdi_client_new(&sec2));
	TL_RC(vdi_client_open_in_secondary(sec2, P.name), ABRT);
	vdi_client_free(sec2);
	vdi_client_free(sec);
}
END_TEST

/* OpenInSecondaryEx finds the set in its instance only. */
START_TEST(secondary_in_instance)
{
	struct tl_pair_opts o;
	struct vdi_client *sec = NULL;
	VDConfig cfg;

	tl_pair_opts_default(&o);
	o.instance = tl_instance();
	o.timeout_ms = WAIT_MS;
	ck_assert_int_eq(tl_pair_init(&P, &o), 0);
	TL_OK(tl_pair_advance(&P, TL_INITIALIZING));
	TL_OK(vdi_client_new(&sec));
	TL_RC(vdi_client_open_in_secondary(sec, P.name), PROT);
	TL_RC(vdi_client_open_in_secondary_ex(sec, "OTHER", P.name), PROT);
	TL_RC(vdi_client_open_in_secondary_ex(sec, "bad-inst", P.name),
	      VD_E_INSTANCE_NAME);
	TL_OK(vdi_client_open_in_secondary_ex(sec, tl_instance(), P.name));
	TL_OK(vdi_client_get_configuration(sec, 0, &cfg));
	ck_assert_uint_eq(cfg.features, VDF_WriteMedia);
	TL_OK(vdi_client_close(sec));
	vdi_client_free(sec);
}
END_TEST

/* ---------------------------------------------------------------------
 * Buffer handles (D24).
 */
START_TEST(buffer_handles)
{
	VDC_Command *cmd = NULL;
	uint32_t h = 0, h2 = 0;
	uint8_t *addr = NULL;
	struct vdi_client *sec = NULL;

	setup_multi(1);
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	TL_OK(send_write(0, 0, NULL));
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
	TL_OK(vdi_client_get_buffer_handle(P.c, cmd->buffer, &h));
	ck_assert_uint_ne(h, 0);
	ck_assert_uint_ge(h >> 24, 1); /* area + 1 */
	TL_OK(vdi_client_map_buffer_handle(P.c, h, &addr));
	ck_assert_ptr_eq(addr, cmd->buffer);
	/* Not the data start of a held command. */
	TL_RC(vdi_client_get_buffer_handle(P.c, cmd->buffer + 1, &h2), VD_E_INVALID);
	TL_RC(vdi_client_get_buffer_handle(P.c, NULL, &h2), VD_E_INVALID);
	TL_RC(vdi_client_map_buffer_handle(P.c, 0, &addr), VD_E_INVALID);
	TL_RC(vdi_client_map_buffer_handle(P.c, h + 0x10000000u, &addr), VD_E_INVALID);
	/* Another client object of the set (secondary) maps the same bytes. */
	TL_OK(vdi_client_new(&sec));
	TL_OK(vdi_client_open_in_secondary(sec, P.name));
	TL_OK(vdi_client_map_buffer_handle(sec, h, &addr));
	ck_assert_int_eq(addr[0], 0x5A);
	ck_assert_int_eq(memcmp(addr, cmd->buffer, 65536), 0);
	addr[7] = 0x11;
	ck_assert_int_eq(cmd->buffer[7], 0x11);
	vdi_client_free(sec);
	uint8_t *data = cmd->buffer; /* cmd is invalid once completed */
	TL_OK(vdi_client_complete_command(P.cd[0], cmd, 0, 65536, 0));
	TL_OK(tl_cmd_wait(&CMDS[0], WAIT_MS));
	/* The buffer written through the client is the server's buffer. */
	ck_assert_int_eq(CMDS[0].cmd.buffer[7], 0x11);
	/* Completed: no longer a buffer this process holds (D24). */
	TL_RC(vdi_client_get_buffer_handle(P.c, data, &h2), VD_E_INVALID);
}
END_TEST

/* ---------------------------------------------------------------------
 * Return codes (spec 8) and ABI (spec 4, 6.2).
 */
START_TEST(error_values_and_names)
{
	static const struct {
		int rc;
		long long value;
		const char *name;
	} t[] = {
		{ NOERROR, 0, "NOERROR" },
		{ VD_E_NOTOPEN, -2139684862LL, "VD_E_NOTOPEN" },
		{ VD_E_TIMEOUT, -2139684861LL, "VD_E_TIMEOUT" },
		{ VD_E_ABORT, -2139684860LL, "VD_E_ABORT" },
		{ VD_E_SECURITY, -2139684859LL, "VD_E_SECURITY" },
		{ VD_E_INVALID, -2139684858LL, "VD_E_INVALID" },
		{ VD_E_INSTANCE_NAME, -2139684857LL, "VD_E_INSTANCE_NAME" },
		{ VD_E_NOTSUPPORTED, -2139684855LL, "VD_E_NOTSUPPORTED" },
		{ VD_E_MEMORY, -2139684854LL, "VD_E_MEMORY" },
		{ VD_E_UNEXPECTED, -2139684853LL, "VD_E_UNEXPECTED" },
		{ VD_E_PROTOCOL, -2139684852LL, "VD_E_PROTOCOL" },
		{ VD_E_OPEN, -2139684851LL, "VD_E_OPEN" },
		{ VD_E_CLOSE, -2139684850LL, "VD_E_CLOSE" },
		{ VD_E_BUSY, -2139684849LL, "VD_E_BUSY" },
		{ VD_E_QUEUE_FULL, (int)0x80770010, "VD_E_QUEUE_FULL" },
		{ VD_E_IO_ERROR, (int)0x80770011, "VD_E_IO_ERROR" },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		ck_assert_msg((long long)t[i].rc == t[i].value, "%s = %d",
			      t[i].name, t[i].rc);
		ck_assert_str_eq(vdi_strerror(t[i].rc), t[i].name);
	}
	ck_assert_int_eq(VD_E_ABORT, (int)0x80770004);
	ck_assert_str_eq(vdi_strerror((int)0x80770099), "0x80770099");
	ck_assert_str_eq(vdi_strerror((int)0x80770008), "0x80770008");
	ck_assert_str_eq(vdi_strcompletion(ERROR_OPERATION_ABORTED),
			 "ERROR_OPERATION_ABORTED");
	ck_assert_str_eq(vdi_strcompletion(ERROR_SUCCESS), "ERROR_SUCCESS");
	ck_assert_str_eq(vdi_strcompletion(ERROR_HANDLE_EOF), "ERROR_HANDLE_EOF");
	ck_assert_str_eq(vdi_strcompletion(12345), "ERROR_12345");
	ck_assert_str_eq(vdi_strcommand(VDC_Write), "VDC_Write");
	ck_assert_str_eq(vdi_strcommand(VDC_Complete), "VDC_Complete");
	ck_assert_str_eq(vdi_strcommand(0), "VDC_0");
	ck_assert_str_eq(vdi_strcommand(20), "VDC_20");
	/* Win32 completion codes (spec 6.6). */
	ck_assert_int_eq(ERROR_INVALID_HANDLE, 6);
	ck_assert_int_eq(ERROR_HANDLE_EOF, 38);
	ck_assert_int_eq(ERROR_NOT_SUPPORTED, 50);
	ck_assert_int_eq(ERROR_INVALID_PARAMETER, 87);
	ck_assert_int_eq(ERROR_DISK_FULL, 112);
	ck_assert_int_eq(ERROR_OPERATION_ABORTED, 995);
	ck_assert_int_eq(ERROR_END_OF_MEDIA, 1100);
	ck_assert_int_eq(ERROR_FILEMARK_DETECTED, 1101);
	ck_assert_int_eq(ERROR_NO_DATA_DETECTED, 1104);
	ck_assert_int_eq(ERROR_IO_DEVICE, 1117);
	ck_assert_int_eq(ERROR_EOM_OVERFLOW, 1129);
	ck_assert_int_eq(ERROR_NO_SYSTEM_RESOURCES, 1450);
}
END_TEST

START_TEST(abi_layout)
{
	ck_assert_uint_eq(sizeof(VDConfig), 44);
	ck_assert_uint_eq(offsetof(VDConfig, deviceCount), 0);
	ck_assert_uint_eq(offsetof(VDConfig, features), 4);
	ck_assert_uint_eq(offsetof(VDConfig, prefixZoneSize), 8);
	ck_assert_uint_eq(offsetof(VDConfig, alignment), 12);
	ck_assert_uint_eq(offsetof(VDConfig, softFileMarkBlockSize), 16);
	ck_assert_uint_eq(offsetof(VDConfig, EOMWarningSize), 20);
	ck_assert_uint_eq(offsetof(VDConfig, serverTimeOut), 24);
	ck_assert_uint_eq(offsetof(VDConfig, blockSize), 28);
	ck_assert_uint_eq(offsetof(VDConfig, maxIODepth), 32);
	ck_assert_uint_eq(offsetof(VDConfig, maxTransferSize), 36);
	ck_assert_uint_eq(offsetof(VDConfig, bufferAreaSize), 40);
#if defined(__x86_64__) || defined(__aarch64__)
	ck_assert_uint_eq(sizeof(VDC_Command), 24);
	ck_assert_uint_eq(offsetof(VDC_Command, commandCode), 0);
	ck_assert_uint_eq(offsetof(VDC_Command, size), 4);
	ck_assert_uint_eq(offsetof(VDC_Command, position), 8);
	ck_assert_uint_eq(offsetof(VDC_Command, buffer), 16);
	ck_assert_uint_eq(sizeof(VDS_Command), 56);
	ck_assert_uint_eq(offsetof(VDS_Command, commandCode), 0);
	ck_assert_uint_eq(offsetof(VDS_Command, size), 4);
	ck_assert_uint_eq(offsetof(VDS_Command, inPosition), 8);
	ck_assert_uint_eq(offsetof(VDS_Command, outPosition), 16);
	ck_assert_uint_eq(offsetof(VDS_Command, buffer), 24);
	ck_assert_uint_eq(offsetof(VDS_Command, completionRoutine), 32);
	ck_assert_uint_eq(offsetof(VDS_Command, completionContext), 40);
	ck_assert_uint_eq(offsetof(VDS_Command, completionCode), 48);
	ck_assert_uint_eq(offsetof(VDS_Command, bytesTransferred), 52);
#endif
	/* Feature and command values (spec 5, 6.1). */
	ck_assert_uint_eq((uint32_t)VDF_LikeTape,
			  (uint32_t)(VDF_FileMarks | VDF_Removable | VDF_Rewind |
				     VDF_Position | VDF_SkipBlocks |
				     VDF_ReversePosition));
	ck_assert_uint_eq((uint32_t)VDF_LikeDisk, (uint32_t)VDF_RandomAccess);
	ck_assert_uint_eq((uint32_t)VDF_LatchStats, 0x80000000u);
	ck_assert_uint_eq(VDF_RequestComplete, 0x2000);
	ck_assert_uint_eq(VDF_CompleteEnabled, 0x40000);
	ck_assert_int_eq(VDC_Read, 1);
	ck_assert_int_eq(VDC_Flush, 12);
	ck_assert_int_eq(VDC_GetError, 18);
	ck_assert_int_eq(VDC_Complete, 19);
	ck_assert_int_eq(VDC_End, 2);
}
END_TEST

/* ---------------------------------------------------------------------
 * Suite.
 */
static void add_fixture_tcase(Suite *s, TCase *tc, int timeout)
{
	tcase_add_checked_fixture(tc, NULL, fixture_teardown);
	tcase_set_timeout(tc, timeout);
	suite_add_tcase(s, tc);
}

static Suite *states_suite(void)
{
	Suite *s = suite_create("states");
	TCase *tc;

	tc = tcase_create("client table");
	tcase_add_loop_test(tc, client_cell, 0, (int)(sizeof(crows) / sizeof(crows[0])));
	add_fixture_tcase(s, tc, 10);

	tc = tcase_create("server table");
	tcase_add_loop_test(tc, server_cell, 0, (int)(sizeof(srows) / sizeof(srows[0])));
	add_fixture_tcase(s, tc, 10);

	tc = tcase_create("per device");
	tcase_add_test(tc, server_open_device_loop);
	tcase_add_test(tc, server_open_device_by_name);
	tcase_add_test(tc, client_open_device_per_device);
	tcase_add_test(tc, client_names_device_first);
	tcase_add_test(tc, multi_device_termination);
	tcase_add_test(tc, open_device_after_server_closed_it);
	tcase_add_test(tc, normal_end_releases_everything);
	add_fixture_tcase(s, tc, 10);

	tc = tcase_create("close and abort");
	tcase_add_test(tc, client_close_with_open_device);
	tcase_add_test(tc, server_close_with_open_device);
	tcase_add_test(tc, abort_wakes_and_completes);
	tcase_add_test(tc, waits_time_out);
	add_fixture_tcase(s, tc, 10);

	tc = tcase_create("commands");
	tcase_add_test(tc, queue_full);
	tcase_add_test(tc, send_command_invalid);
	tcase_add_test(tc, all_command_codes_round_trip);
	tcase_add_test(tc, complete_foreign_pointer);
	add_fixture_tcase(s, tc, 10);

	tc = tcase_create("secondaries and handles");
	tcase_add_test(tc, secondary_readiness);
	tcase_add_test(tc, secondary_in_instance);
	tcase_add_test(tc, buffer_handles);
	add_fixture_tcase(s, tc, 10);

	tc = tcase_create("codes and abi");
	tcase_add_test(tc, error_values_and_names);
	tcase_add_test(tc, abi_layout);
	tcase_set_timeout(tc, 5);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tl_run_suite(states_suite());
}
