/* SPDX-License-Identifier: MIT */
/*
 * check_states.c - the state machines of both halves, cell by cell.
 *
 * The client table (spec 3.1) and the server table (spec 3.2, Connected
 * column and † cells as decided in docs/decisions.md D2) are data below:
 * one row per cell, {function, state, expected return, expected next
 * state}, written from the spec, not from the engine.  For each row the
 * engine's own table (core/state.c, the one both halves consult) must
 * hold the same cell: the expected return, or "allowed" for rows marked
 * OWN, whose return comes from the call's own rule (per device, per
 * argument, a wait; the row says which).  Then a fresh client + server
 * pair in this process is driven into the state (fixture), the function
 * is called once, its return is compared, and the state reached is
 * observed by a probe: a short sequence of calls whose results differ
 * between every pair of states (see probe_client / probe_server; the
 * server's Initializing and Active are also told apart by the published
 * phase, vdi_set_info_get).  The Abort column is run twice: abort
 * signalled by the side under test and by its peer.  A last test walks
 * every cell of the engine's table and finds it covered by a row or by
 * the list of cells the API cannot reach (below), so no cell goes
 * unchecked.
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
 * Configurable and Initializing.  Their cells are still checked against
 * the spec (unreachable[] below).
 *
 * Whole-set behaviour beyond the tables (multi-device, Close with open
 * devices, commands, secondaries, handles, codes, ABI) is check_sets.c.
 */
#include <check.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "state.h"
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
static uint32_t ISSUED;         /* GetBufferHandle of HELD, by the fixture */
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

#define FIX(expr)                                   \
	do {                                        \
		if ((expr) != 0)                    \
			return fail_fixture(#expr); \
	} while (0)

/* Fixture step that must return exactly `want`. */
static int fix_rc(int got, int want, const char *what)
{
	static char msg[768];

	if (got == want)
		return 0;
	snprintf(msg, sizeof(msg), "fixture: %s = %s, want %s (%s)", what, vdi_strerror(got),
	         vdi_strerror(want), vdi_last_error());
	FIXTURE_ERR = msg;
	return -1;
}
#define FIXRC(expr, want)                               \
	do {                                            \
		if (fix_rc((expr), (want), #expr) != 0) \
			return -1;                      \
	} while (0)

static int start_pair(uint32_t devices)
{
	struct tl_pair_opts o;

	tl_pair_opts_default(&o);
	o.devices = devices;
	o.timeout_ms = WAIT_MS;
	BUF = NULL;
	HELD = NULL;
	ISSUED = 0;
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
	"DNE",
	"Configurable",
	"Configurable(server ended)",
	"Initializing",
	"Active",
	"Active(closing)",
	"NormallyTerminated",
	"Abort",
	"Abort(by server)",
};

/* The engine's state for each fixture state (its table's column). */
static const enum vdi_set_state cst_engine[] = {
	[C_DNE] = VDI_SET_DNE,
	[C_CONFIGURABLE] = VDI_SET_CONFIGURABLE,
	[C_CONFIGURABLE_ENDED] = VDI_SET_CONFIGURABLE,
	[C_INITIALIZING] = VDI_SET_INITIALIZING,
	[C_ACTIVE] = VDI_SET_ACTIVE,
	[C_ACTIVE_CLOSING] = VDI_SET_ACTIVE,
	[C_NT] = VDI_SET_TERMINATED,
	[C_ABORT] = VDI_SET_ABORTED,
	[C_ABORT_SRV] = VDI_SET_ABORTED,
};

enum cfn {
	CF_CREATE,
	CF_GETCONFIG,
	CF_OPENDEVICE,
	CF_GETCOMMAND,
	CF_COMPLETE,
	CF_SIGNALABORT,
	CF_CLOSE,
	CF_OPENSECONDARY,
	CF_GETBUFHANDLE,
	CF_MAPBUFHANDLE,
	CF_MAPISSUED,
	CF_MAPFORGED,
	CF_SETGROUP,
};
static const char *const cfn_name[] = {
	"Create",          "GetConfiguration",        "OpenDevice",
	"GetCommand",      "CompleteCommand",         "SignalAbort",
	"Close",           "OpenInSecondary",         "GetBufferHandle",
	"MapBufferHandle", "MapBufferHandle(issued)", "MapBufferHandle(issued + 1)",
	"set_group",
};
static const enum vdi_call cfn_engine[] = {
	[CF_CREATE] = VDI_CALL_C_CREATE,
	[CF_GETCONFIG] = VDI_CALL_C_GET_CONFIGURATION,
	[CF_OPENDEVICE] = VDI_CALL_C_OPEN_DEVICE,
	[CF_GETCOMMAND] = VDI_CALL_C_GET_COMMAND,
	[CF_COMPLETE] = VDI_CALL_C_COMPLETE_COMMAND,
	[CF_SIGNALABORT] = VDI_CALL_C_SIGNAL_ABORT,
	[CF_CLOSE] = VDI_CALL_C_CLOSE,
	[CF_OPENSECONDARY] = VDI_CALL_C_OPEN_IN_SECONDARY,
	[CF_GETBUFHANDLE] = VDI_CALL_C_GET_BUFFER_HANDLE,
	[CF_MAPBUFHANDLE] = VDI_CALL_C_MAP_BUFFER_HANDLE,
	[CF_MAPISSUED] = VDI_CALL_C_MAP_BUFFER_HANDLE,
	[CF_MAPFORGED] = VDI_CALL_C_MAP_BUFFER_HANDLE,
	[CF_SETGROUP] = VDI_CALL_C_SET_GROUP,
};

struct crow {
	enum cfn fn;
	enum cst state;
	int rc;
	enum cst next;
	int own; /* OWN: the table allows it; rc is the call's own rule */
};

#define PROT VD_E_PROTOCOL
#define ABRT VD_E_ABORT
#define OWN  1 /* the table allows the call: rc comes from its own rule */
#define TBL  0 /* rc is the table's cell */

static const char *cell_name(int cell)
{
	return cell ? vdi_strerror(cell) : "allowed";
}

/* The engine's table must hold the row's cell: its return, or "allowed"
 * for an OWN row (whose return is then the call's own rule). */
static void check_cell(const char *row, enum vdi_call call, enum vdi_set_state st, int rc, int own)
{
	int want = own ? 0 : rc, got = vdi_state_cell(call, st);

	ck_assert_msg(own || rc == NOERROR || rc == PROT || rc == ABRT || rc == VD_E_CLOSE,
	              "%s: row data: %s is no cell of a state table; mark the row OWN", row,
	              vdi_strerror(rc));
	ck_assert_msg(got == want, "%s: the engine's table says %s, the spec %s", row,
	              cell_name(got), cell_name(want));
}

/* A refusal by the table names the call, as vdi_call_name() spells it. */
static void check_refusal_names(const char *row, enum vdi_call call, int rc, int own)
{
	if (own || rc == NOERROR)
		return;
	ck_assert_msg(strstr(vdi_last_error(), vdi_call_name(call)) != NULL,
	              "%s: message '%s' does not name '%s'", row, vdi_last_error(),
	              vdi_call_name(call));
}

static const struct crow crows[] = {
	/* Create, CreateEx */
	{ CF_CREATE, C_DNE, NOERROR, C_CONFIGURABLE, TBL },
	{ CF_CREATE, C_CONFIGURABLE, PROT, C_CONFIGURABLE, TBL },
	{ CF_CREATE, C_INITIALIZING, PROT, C_INITIALIZING, TBL },
	{ CF_CREATE, C_ACTIVE, PROT, C_ACTIVE, TBL },
	{ CF_CREATE, C_NT, PROT, C_NT, TBL },
	{ CF_CREATE, C_ABORT, PROT, C_ABORT, TBL },
	/* GetConfiguration (note 1: blocks until EndConfiguration; OWN:
	 * the wait times out) */
	{ CF_GETCONFIG, C_DNE, PROT, C_DNE, TBL },
	{ CF_GETCONFIG, C_CONFIGURABLE, VD_E_TIMEOUT, C_CONFIGURABLE, OWN },
	{ CF_GETCONFIG, C_CONFIGURABLE_ENDED, NOERROR, C_INITIALIZING, TBL },
	{ CF_GETCONFIG, C_INITIALIZING, NOERROR, C_INITIALIZING, TBL },
	{ CF_GETCONFIG, C_ACTIVE, NOERROR, C_ACTIVE, TBL },
	{ CF_GETCONFIG, C_NT, NOERROR, C_NT, TBL },
	{ CF_GETCONFIG, C_ABORT, ABRT, C_ABORT, TBL },
	/* OpenDevice (D3, OWN: single device already open = all open) */
	{ CF_OPENDEVICE, C_DNE, PROT, C_DNE, TBL },
	{ CF_OPENDEVICE, C_CONFIGURABLE, PROT, C_CONFIGURABLE, TBL },
	{ CF_OPENDEVICE, C_INITIALIZING, NOERROR, C_ACTIVE, TBL },
	{ CF_OPENDEVICE, C_ACTIVE, VD_E_OPEN, C_ACTIVE, OWN },
	{ CF_OPENDEVICE, C_NT, PROT, C_NT, TBL },
	{ CF_OPENDEVICE, C_ABORT, ABRT, C_ABORT, TBL },
	/* GetCommand */
	{ CF_GETCOMMAND, C_ACTIVE, NOERROR, C_ACTIVE, TBL },
	{ CF_GETCOMMAND, C_ACTIVE_CLOSING, VD_E_CLOSE, C_NT, OWN },
	{ CF_GETCOMMAND, C_NT, PROT, C_NT, TBL },
	{ CF_GETCOMMAND, C_ABORT, ABRT, C_ABORT, TBL },
	/* CompleteCommand.  NT: the table's PROTOCOL, also for a command
	 * that was completed before (the state decides first). */
	{ CF_COMPLETE, C_ACTIVE, NOERROR, C_ACTIVE, TBL },
	{ CF_COMPLETE, C_NT, PROT, C_NT, TBL },
	{ CF_COMPLETE, C_ABORT, ABRT, C_ABORT, TBL },
	/* SignalAbort */
	{ CF_SIGNALABORT, C_DNE, PROT, C_DNE, TBL },
	{ CF_SIGNALABORT, C_CONFIGURABLE, NOERROR, C_ABORT, TBL },
	{ CF_SIGNALABORT, C_INITIALIZING, NOERROR, C_ABORT, TBL },
	{ CF_SIGNALABORT, C_ACTIVE, NOERROR, C_ABORT, TBL },
	{ CF_SIGNALABORT, C_NT, NOERROR, C_ABORT, TBL },
	{ CF_SIGNALABORT, C_ABORT, NOERROR, C_ABORT, TBL },
	/* Close (D4, OWN: open device -> VD_E_OPEN, released anyway) */
	{ CF_CLOSE, C_DNE, PROT, C_DNE, TBL },
	{ CF_CLOSE, C_CONFIGURABLE, NOERROR, C_DNE, TBL },
	{ CF_CLOSE, C_INITIALIZING, NOERROR, C_DNE, TBL },
	{ CF_CLOSE, C_ACTIVE, VD_E_OPEN, C_DNE, OWN },
	{ CF_CLOSE, C_NT, NOERROR, C_DNE, TBL },
	{ CF_CLOSE, C_ABORT, NOERROR, C_DNE, TBL },
	/* OpenInSecondary on this (primary) object: the set named does not
	 * exist yet in DNE (OWN, D22); afterwards the object is in use (D5). */
	{ CF_OPENSECONDARY, C_DNE, PROT, C_DNE, OWN },
	{ CF_OPENSECONDARY, C_CONFIGURABLE, PROT, C_CONFIGURABLE, TBL },
	{ CF_OPENSECONDARY, C_INITIALIZING, PROT, C_INITIALIZING, TBL },
	{ CF_OPENSECONDARY, C_ACTIVE, PROT, C_ACTIVE, TBL },
	{ CF_OPENSECONDARY, C_NT, PROT, C_NT, TBL },
	{ CF_OPENSECONDARY, C_ABORT, PROT, C_ABORT, TBL },
	/* GetBufferHandle of an address that is no buffer (OWN: D24) */
	{ CF_GETBUFHANDLE, C_DNE, PROT, C_DNE, TBL },
	{ CF_GETBUFHANDLE, C_CONFIGURABLE, VD_E_INVALID, C_CONFIGURABLE, OWN },
	{ CF_GETBUFHANDLE, C_INITIALIZING, VD_E_INVALID, C_INITIALIZING, OWN },
	{ CF_GETBUFHANDLE, C_ACTIVE, VD_E_INVALID, C_ACTIVE, OWN },
	{ CF_GETBUFHANDLE, C_NT, VD_E_INVALID, C_NT, OWN },
	{ CF_GETBUFHANDLE, C_ABORT, ABRT, C_ABORT, TBL },
	/* MapBufferHandle of a handle that names no buffer (OWN: D24) */
	{ CF_MAPBUFHANDLE, C_DNE, PROT, C_DNE, TBL },
	{ CF_MAPBUFHANDLE, C_CONFIGURABLE, VD_E_INVALID, C_CONFIGURABLE, OWN },
	{ CF_MAPBUFHANDLE, C_INITIALIZING, VD_E_INVALID, C_INITIALIZING, OWN },
	{ CF_MAPBUFHANDLE, C_ACTIVE, VD_E_INVALID, C_ACTIVE, OWN },
	{ CF_MAPBUFHANDLE, C_NT, VD_E_INVALID, C_NT, OWN },
	{ CF_MAPBUFHANDLE, C_ABORT, ABRT, C_ABORT, TBL },
	/* MapBufferHandle of the handle GetBufferHandle gave out for a held
	 * command (D30): it maps while the command is held, and no more once
	 * completed (NT); the buffer + 512 never does (OWN: D30). */
	{ CF_MAPISSUED, C_ACTIVE, NOERROR, C_ACTIVE, TBL },
	{ CF_MAPISSUED, C_NT, VD_E_INVALID, C_NT, OWN },
	{ CF_MAPISSUED, C_ABORT, ABRT, C_ABORT, TBL },
	{ CF_MAPFORGED, C_ACTIVE, VD_E_INVALID, C_ACTIVE, OWN },
	/* set_group (libvdi): only before Create */
	{ CF_SETGROUP, C_DNE, NOERROR, C_DNE, TBL },
	{ CF_SETGROUP, C_CONFIGURABLE, PROT, C_CONFIGURABLE, TBL },
	{ CF_SETGROUP, C_INITIALIZING, PROT, C_INITIALIZING, TBL },
	{ CF_SETGROUP, C_ACTIVE, PROT, C_ACTIVE, TBL },
	{ CF_SETGROUP, C_NT, PROT, C_NT, TBL },
	{ CF_SETGROUP, C_ABORT, PROT, C_ABORT, TBL },
	/* Abort signalled by the other side: the same column (D5). */
	{ CF_CREATE, C_ABORT_SRV, PROT, C_ABORT_SRV, TBL },
	{ CF_GETCONFIG, C_ABORT_SRV, ABRT, C_ABORT_SRV, TBL },
	{ CF_OPENDEVICE, C_ABORT_SRV, ABRT, C_ABORT_SRV, TBL },
	{ CF_GETCOMMAND, C_ABORT_SRV, ABRT, C_ABORT_SRV, TBL },
	{ CF_COMPLETE, C_ABORT_SRV, ABRT, C_ABORT_SRV, TBL },
	{ CF_SIGNALABORT, C_ABORT_SRV, NOERROR, C_ABORT_SRV, TBL },
	{ CF_CLOSE, C_ABORT_SRV, NOERROR, C_DNE, TBL },
	{ CF_OPENSECONDARY, C_ABORT_SRV, PROT, C_ABORT_SRV, TBL },
	{ CF_GETBUFHANDLE, C_ABORT_SRV, ABRT, C_ABORT_SRV, TBL },
	{ CF_MAPBUFHANDLE, C_ABORT_SRV, ABRT, C_ABORT_SRV, TBL },
	{ CF_MAPISSUED, C_ABORT_SRV, ABRT, C_ABORT_SRV, TBL },
	{ CF_SETGROUP, C_ABORT_SRV, PROT, C_ABORT_SRV, TBL },
};

static int drive_client(enum cst st)
{
	VDC_Command *cmd = NULL;

	FIX(start_pair(1));
	switch (st) {
	case C_DNE: return 0;
	case C_CONFIGURABLE: FIX(tl_pair_advance(&P, TL_CONNECTED)); return 0;
	case C_CONFIGURABLE_ENDED: FIX(tl_pair_advance(&P, TL_ENDED)); return 0;
	case C_INITIALIZING: FIX(tl_pair_advance(&P, TL_INITIALIZING)); return 0;
	case C_ACTIVE: FIX(tl_pair_advance(&P, TL_ACTIVE)); return send_write(0, 0, &BUF);
	case C_ACTIVE_CLOSING:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		FIXRC(vdi_server_close_device(P.sd[0]), 0);
		return 0;
	case C_NT:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		if (send_write(0, 0, &BUF))
			return -1;
		FIXRC(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd), 0);
		FIXRC(vdi_client_get_buffer_handle(P.c, cmd->buffer, &ISSUED), 0);
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
		FIXRC(vdi_client_get_buffer_handle(P.c, HELD->buffer, &ISSUED), 0);
		FIXRC(vdi_client_signal_abort(P.c), 0);
		return 0;
	case C_ABORT_SRV:
		FIX(tl_pair_advance(&P, TL_ACTIVE));
		if (send_write(0, 0, &BUF))
			return -1;
		FIXRC(vdi_client_get_command(P.cd[0], WAIT_MS, &HELD), 0);
		FIXRC(vdi_client_get_buffer_handle(P.c, HELD->buffer, &ISSUED), 0);
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
		return vdi_client_create_ex(P.c, NULL, r->state == C_DNE ? P.name : tl_name(other),
		                            &cfg);
	case CF_GETCONFIG: return vdi_client_get_configuration(P.c, 100, &cfg);
	case CF_OPENDEVICE: {
		struct vdi_client_device *d = (struct vdi_client_device *)&cfg;

		rc = vdi_client_open_device(P.c, P.dev[0], &d);
		ck_assert_msg(rc == 0 ? d != NULL : d == NULL, "OpenDevice: out pointer %p with %s",
		              (void *)d, vdi_strerror(rc));
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
			ck_assert_msg(rc == 0, "prepare: GetCommand = %s", vdi_strerror(rc));
		}
		return vdi_client_complete_command(P.cd[0], HELD, ERROR_SUCCESS, 65536, 0);
	case CF_SIGNALABORT: return vdi_client_signal_abort(P.c);
	case CF_CLOSE:
		rc = vdi_client_close(P.c);
		memset(P.cd, 0, sizeof(P.cd)); /* freed by Close */
		return rc;
	case CF_OPENSECONDARY: return vdi_client_open_in_secondary(P.c, P.name);
	case CF_GETBUFHANDLE: rc = vdi_client_get_buffer_handle(P.c, local, &handle); return rc;
	case CF_MAPBUFHANDLE: rc = vdi_client_map_buffer_handle(P.c, 0xFFFFFFFFu, &addr); return rc;
	case CF_MAPISSUED:
	case CF_MAPFORGED:
		if (r->state == C_ACTIVE) {
			rc = vdi_client_get_command(P.cd[0], WAIT_MS, &HELD);
			ck_assert_msg(rc == 0, "prepare: GetCommand = %s", vdi_strerror(rc));
			rc = vdi_client_get_buffer_handle(P.c, HELD->buffer, &ISSUED);
			ck_assert_msg(rc == 0, "prepare: GetBufferHandle = %s", vdi_strerror(rc));
		}
		ck_assert_uint_ne(ISSUED, 0);
		rc = vdi_client_map_buffer_handle(P.c, ISSUED + (r->fn == CF_MAPFORGED), &addr);
		if (rc == 0)
			ck_assert_ptr_eq(addr, HELD->buffer);
		return rc;
	case CF_SETGROUP: return vdi_client_set_group(P.c, getgid());
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
		ck_assert_msg(g == PROT, "%s: DNE probe: GetConfiguration = %s", row,
		              vdi_strerror(g));
		return;
	case C_CONFIGURABLE:
	case C_CONFIGURABLE_ENDED:
		ck_assert_msg(g == VD_E_TIMEOUT, "%s: Configurable probe: GetConfiguration(0) = %s",
		              row, vdi_strerror(g));
		return;
	case C_ABORT:
	case C_ABORT_SRV:
		ck_assert_msg(g == ABRT, "%s: Abort probe: GetConfiguration = %s", row,
		              vdi_strerror(g));
		return;
	case C_INITIALIZING:
		ck_assert_msg(g == 0, "%s: Initializing probe: GetConfiguration = %s", row,
		              vdi_strerror(g));
		ck_assert_msg(P.cd[0] == NULL, "%s: a device is open", row);
		rc = vdi_client_open_device(P.c, P.dev[0], &P.cd[0]);
		ck_assert_msg(rc == 0, "%s: Initializing probe: OpenDevice = %s", row,
		              vdi_strerror(rc));
		return;
	case C_ACTIVE:
	case C_ACTIVE_CLOSING:
		ck_assert_msg(g == 0, "%s: Active probe: GetConfiguration = %s", row,
		              vdi_strerror(g));
		ck_assert_msg(P.cd[0] != NULL, "%s: no device open", row);
		rc = vdi_client_get_command(P.cd[0], POLL_MS, &cmd);
		ck_assert_msg(rc == 0 || rc == VD_E_TIMEOUT, "%s: Active probe: GetCommand(0) = %s",
		              row, vdi_strerror(rc));
		return;
	case C_NT:
		ck_assert_msg(g == 0, "%s: NT probe: GetConfiguration = %s", row, vdi_strerror(g));
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

	snprintf(row, sizeof(row), "client %s in %s", cfn_name[r->fn], cst_name[r->state]);
	check_cell(row, cfn_engine[r->fn], cst_engine[r->state], r->rc, r->own);
	ck_assert_msg(drive_client(r->state) == 0, "%s: %s", row, FIXTURE_ERR);
	rc = call_client(r);
	ck_assert_msg(rc == r->rc, "%s = %s, want %s (%s)", row, vdi_strerror(rc),
	              vdi_strerror(r->rc), vdi_last_error());
	check_refusal_names(row, cfn_engine[r->fn], rc, r->own);
	probe_client(r->next, row);
}
END_TEST

/* ---------------------------------------------------------------------
 * Server table.
 */
enum sst {
	S_DNE, /* client created the set, server object fresh */
	S_CONNECTED,
	S_CONFIGURABLE,
	S_INITIALIZING, /* EndConfiguration done, BUF allocated */
	S_ACTIVE,       /* every device open both sides, agent running */
	S_NT,           /* server closed every device */
	S_ABORT,        /* server SignalAbort from Active */
	S_ABORT_CLI,    /* client SignalAbort from Active */
};
static const char *const sst_name[] = {
	"DNE",    "Connected",          "Configurable", "Initializing",
	"Active", "NormallyTerminated", "Abort",        "Abort(by client)",
};
static const enum vdi_set_state sst_engine[] = {
	[S_DNE] = VDI_SET_DNE,
	[S_CONNECTED] = VDI_SET_CONNECTED,
	[S_CONFIGURABLE] = VDI_SET_CONFIGURABLE,
	[S_INITIALIZING] = VDI_SET_INITIALIZING,
	[S_ACTIVE] = VDI_SET_ACTIVE,
	[S_NT] = VDI_SET_TERMINATED,
	[S_ABORT] = VDI_SET_ABORTED,
	[S_ABORT_CLI] = VDI_SET_ABORTED,
};

enum sfn {
	SF_OPEN,
	SF_GETCONFIG,
	SF_BEGIN,
	SF_REQUEST,
	SF_QUERY,
	SF_END,
	SF_OPENDEVICE,
	SF_AGENT,
	SF_ALLOCATE,
	SF_FREE,
	SF_ISSHARED,
	SF_SENDCOMMAND,
	SF_CLOSEDEVICE,
	SF_SIGNALABORT,
	SF_CLOSE,
};
static const char *const sfn_name[] = {
	"Open",
	"GetConfiguration",
	"BeginConfiguration",
	"RequestBuffers",
	"QueryAvailableBuffers",
	"EndConfiguration",
	"OpenDevice",
	"ExecuteCompletionAgent",
	"AllocateBuffer",
	"FreeBuffer",
	"IsSharedBuffer",
	"SendCommand",
	"CloseDevice",
	"SignalAbort",
	"Close",
};
static const enum vdi_call sfn_engine[] = {
	[SF_OPEN] = VDI_CALL_S_OPEN,
	[SF_GETCONFIG] = VDI_CALL_S_GET_CONFIGURATION,
	[SF_BEGIN] = VDI_CALL_S_BEGIN_CONFIGURATION,
	[SF_REQUEST] = VDI_CALL_S_REQUEST_BUFFERS,
	[SF_QUERY] = VDI_CALL_S_QUERY_AVAILABLE_BUFFERS,
	[SF_END] = VDI_CALL_S_END_CONFIGURATION,
	[SF_OPENDEVICE] = VDI_CALL_S_OPEN_DEVICE,
	[SF_AGENT] = VDI_CALL_S_EXECUTE_COMPLETION_AGENT,
	[SF_ALLOCATE] = VDI_CALL_S_ALLOCATE_BUFFER,
	[SF_FREE] = VDI_CALL_S_FREE_BUFFER,
	[SF_ISSHARED] = VDI_CALL_S_IS_SHARED_BUFFER,
	[SF_SENDCOMMAND] = VDI_CALL_S_SEND_COMMAND,
	[SF_CLOSEDEVICE] = VDI_CALL_S_CLOSE_DEVICE,
	[SF_SIGNALABORT] = VDI_CALL_S_SIGNAL_ABORT,
	[SF_CLOSE] = VDI_CALL_S_CLOSE,
};

/* Return value meaning "the call blocked, as it must" (agent). */
#define BLOCKS 0x7fff0001

struct srow {
	enum sfn fn;
	enum sst state;
	int rc;
	enum sst next;
	uint32_t callback; /* SendCommand failure: code the routine gets */
	int own;           /* OWN: the table allows it; rc is the call's rule */
};

static const struct srow srows[] = {
	{ SF_OPEN, S_DNE, NOERROR, S_CONNECTED, 0, TBL },
	{ SF_OPEN, S_CONNECTED, PROT, S_CONNECTED, 0, TBL },
	{ SF_OPEN, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0, TBL },
	{ SF_OPEN, S_INITIALIZING, PROT, S_INITIALIZING, 0, TBL },
	{ SF_OPEN, S_ACTIVE, PROT, S_ACTIVE, 0, TBL },
	{ SF_OPEN, S_NT, PROT, S_NT, 0, TBL },
	{ SF_OPEN, S_ABORT, PROT, S_ABORT, 0, TBL },

	{ SF_GETCONFIG, S_DNE, PROT, S_DNE, 0, TBL },
	{ SF_GETCONFIG, S_CONNECTED, NOERROR, S_CONNECTED, 0, TBL },
	{ SF_GETCONFIG, S_CONFIGURABLE, NOERROR, S_CONFIGURABLE, 0, TBL },
	{ SF_GETCONFIG, S_INITIALIZING, NOERROR, S_INITIALIZING, 0, TBL },
	{ SF_GETCONFIG, S_ACTIVE, NOERROR, S_ACTIVE, 0, TBL },
	{ SF_GETCONFIG, S_NT, NOERROR, S_NT, 0, TBL },
	{ SF_GETCONFIG, S_ABORT, ABRT, S_ABORT, 0, TBL },

	{ SF_BEGIN, S_DNE, PROT, S_DNE, 0, TBL },
	{ SF_BEGIN, S_CONNECTED, NOERROR, S_CONFIGURABLE, 0, TBL },
	{ SF_BEGIN, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0, TBL },
	{ SF_BEGIN, S_INITIALIZING, PROT, S_INITIALIZING, 0, TBL },
	{ SF_BEGIN, S_ACTIVE, PROT, S_ACTIVE, 0, TBL },
	{ SF_BEGIN, S_NT, PROT, S_NT, 0, TBL },
	{ SF_BEGIN, S_ABORT, ABRT, S_ABORT, 0, TBL }, /* D5 */

	{ SF_REQUEST, S_DNE, PROT, S_DNE, 0, TBL },
	{ SF_REQUEST, S_CONNECTED, PROT, S_CONNECTED, 0, TBL },
	{ SF_REQUEST, S_CONFIGURABLE, NOERROR, S_CONFIGURABLE, 0, TBL },
	{ SF_REQUEST, S_INITIALIZING, NOERROR, S_INITIALIZING, 0, TBL },
	{ SF_REQUEST, S_ACTIVE, NOERROR, S_ACTIVE, 0, TBL },
	{ SF_REQUEST, S_NT, PROT, S_NT, 0, TBL },
	{ SF_REQUEST, S_ABORT, ABRT, S_ABORT, 0, TBL }, /* D5 */

	{ SF_QUERY, S_DNE, PROT, S_DNE, 0, TBL },
	{ SF_QUERY, S_CONNECTED, PROT, S_CONNECTED, 0, TBL },
	{ SF_QUERY, S_CONFIGURABLE, NOERROR, S_CONFIGURABLE, 0, TBL },
	{ SF_QUERY, S_INITIALIZING, NOERROR, S_INITIALIZING, 0, TBL },
	{ SF_QUERY, S_ACTIVE, NOERROR, S_ACTIVE, 0, TBL },
	{ SF_QUERY, S_NT, PROT, S_NT, 0, TBL },
	{ SF_QUERY, S_ABORT, ABRT, S_ABORT, 0, TBL }, /* D5 */

	{ SF_END, S_DNE, PROT, S_DNE, 0, TBL },
	{ SF_END, S_CONNECTED, PROT, S_CONNECTED, 0, TBL },
	{ SF_END, S_CONFIGURABLE, NOERROR, S_INITIALIZING, 0, TBL },
	{ SF_END, S_INITIALIZING, PROT, S_INITIALIZING, 0, TBL },
	{ SF_END, S_ACTIVE, PROT, S_ACTIVE, 0, TBL },
	{ SF_END, S_NT, PROT, S_NT, 0, TBL },
	{ SF_END, S_ABORT, ABRT, S_ABORT, 0, TBL },

	{ SF_OPENDEVICE, S_DNE, PROT, S_DNE, 0, TBL },
	{ SF_OPENDEVICE, S_CONNECTED, PROT, S_CONNECTED, 0, TBL },
	{ SF_OPENDEVICE, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0, TBL },
	{ SF_OPENDEVICE, S_INITIALIZING, NOERROR, S_ACTIVE, 0, TBL },
	{ SF_OPENDEVICE, S_ACTIVE, VD_E_OPEN, S_ACTIVE, 0, OWN },
	{ SF_OPENDEVICE, S_NT, PROT, S_NT, 0, TBL },
	{ SF_OPENDEVICE, S_ABORT, ABRT, S_ABORT, 0, TBL },

	{ SF_AGENT, S_DNE, PROT, S_DNE, 0, TBL },
	{ SF_AGENT, S_CONNECTED, PROT, S_CONNECTED, 0, TBL },
	{ SF_AGENT, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0, TBL },
	{ SF_AGENT, S_INITIALIZING, BLOCKS, S_ACTIVE, 0, OWN },
	{ SF_AGENT, S_ACTIVE, PROT, S_ACTIVE, 0, OWN }, /* already running */
	{ SF_AGENT, S_NT, PROT, S_NT, 0, TBL },
	{ SF_AGENT, S_ABORT, ABRT, S_ABORT, 0, TBL },

	{ SF_ALLOCATE, S_DNE, PROT, S_DNE, 0, TBL },
	{ SF_ALLOCATE, S_CONNECTED, PROT, S_CONNECTED, 0, TBL },
	{ SF_ALLOCATE, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0, TBL },
	{ SF_ALLOCATE, S_INITIALIZING, NOERROR, S_INITIALIZING, 0, TBL },
	{ SF_ALLOCATE, S_ACTIVE, NOERROR, S_ACTIVE, 0, TBL },
	{ SF_ALLOCATE, S_NT, PROT, S_NT, 0, TBL },
	{ SF_ALLOCATE, S_ABORT, ABRT, S_ABORT, 0, TBL },

	{ SF_FREE, S_DNE, PROT, S_DNE, 0, TBL },
	{ SF_FREE, S_CONNECTED, PROT, S_CONNECTED, 0, TBL },
	{ SF_FREE, S_CONFIGURABLE, PROT, S_CONFIGURABLE, 0, TBL },
	{ SF_FREE, S_INITIALIZING, NOERROR, S_INITIALIZING, 0, TBL },
	{ SF_FREE, S_ACTIVE, NOERROR, S_ACTIVE, 0, TBL },
	{ SF_FREE, S_NT, NOERROR, S_NT, 0, TBL },       /* cleanup allowed */
	{ SF_FREE, S_ABORT, NOERROR, S_ABORT, 0, TBL }, /* D5 */

	/* IsSharedBuffer answers 1/0 (D12, OWN): BUF where one exists. */
	{ SF_ISSHARED, S_DNE, 0, S_DNE, 0, OWN },
	{ SF_ISSHARED, S_CONNECTED, 0, S_CONNECTED, 0, OWN },
	{ SF_ISSHARED, S_CONFIGURABLE, 0, S_CONFIGURABLE, 0, OWN },
	{ SF_ISSHARED, S_INITIALIZING, 1, S_INITIALIZING, 0, OWN },
	{ SF_ISSHARED, S_ACTIVE, 1, S_ACTIVE, 0, OWN },
	{ SF_ISSHARED, S_NT, 1, S_NT, 0, OWN },
	{ SF_ISSHARED, S_ABORT, 1, S_ABORT, 0, OWN },

	{ SF_SENDCOMMAND, S_ACTIVE, NOERROR, S_ACTIVE, 0, TBL },
	{ SF_SENDCOMMAND, S_NT, PROT, S_NT, ERROR_INVALID_HANDLE, TBL },
	{ SF_SENDCOMMAND, S_ABORT, ABRT, S_ABORT, ERROR_OPERATION_ABORTED, TBL },

	{ SF_CLOSEDEVICE, S_ACTIVE, NOERROR, S_NT, 0, TBL },
	{ SF_CLOSEDEVICE, S_NT, VD_E_CLOSE, S_NT, 0, TBL },
	{ SF_CLOSEDEVICE, S_ABORT, ABRT, S_ABORT, 0, TBL },

	{ SF_SIGNALABORT, S_DNE, PROT, S_DNE, 0, TBL },
	{ SF_SIGNALABORT, S_CONNECTED, NOERROR, S_ABORT, 0, TBL },
	{ SF_SIGNALABORT, S_CONFIGURABLE, NOERROR, S_ABORT, 0, TBL },
	{ SF_SIGNALABORT, S_INITIALIZING, NOERROR, S_ABORT, 0, TBL },
	{ SF_SIGNALABORT, S_ACTIVE, NOERROR, S_ABORT, 0, TBL },
	{ SF_SIGNALABORT, S_NT, NOERROR, S_ABORT, 0, TBL },
	{ SF_SIGNALABORT, S_ABORT, NOERROR, S_ABORT, 0, TBL },

	{ SF_CLOSE, S_DNE, PROT, S_DNE, 0, TBL },
	{ SF_CLOSE, S_CONNECTED, NOERROR, S_DNE, 0, TBL },
	{ SF_CLOSE, S_CONFIGURABLE, NOERROR, S_DNE, 0, TBL },
	{ SF_CLOSE, S_INITIALIZING, NOERROR, S_DNE, 0, TBL },
	{ SF_CLOSE, S_ACTIVE, PROT, S_DNE, 0, OWN }, /* D4: devices open */
	{ SF_CLOSE, S_NT, NOERROR, S_DNE, 0, TBL },
	{ SF_CLOSE, S_ABORT, NOERROR, S_DNE, 0, TBL },

	/* Abort signalled by the client: the same column (D5). */
	{ SF_OPEN, S_ABORT_CLI, PROT, S_ABORT_CLI, 0, TBL },
	{ SF_GETCONFIG, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0, TBL },
	{ SF_BEGIN, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0, TBL },
	{ SF_REQUEST, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0, TBL },
	{ SF_QUERY, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0, TBL },
	{ SF_END, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0, TBL },
	{ SF_OPENDEVICE, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0, TBL },
	{ SF_AGENT, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0, TBL },
	{ SF_ALLOCATE, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0, TBL },
	{ SF_FREE, S_ABORT_CLI, NOERROR, S_ABORT_CLI, 0, TBL },
	{ SF_ISSHARED, S_ABORT_CLI, 1, S_ABORT_CLI, 0, OWN },
	{ SF_SENDCOMMAND, S_ABORT_CLI, ABRT, S_ABORT_CLI, ERROR_OPERATION_ABORTED, TBL },
	{ SF_CLOSEDEVICE, S_ABORT_CLI, ABRT, S_ABORT_CLI, 0, TBL },
	{ SF_SIGNALABORT, S_ABORT_CLI, NOERROR, S_ABORT_CLI, 0, TBL },
	{ SF_CLOSE, S_ABORT_CLI, NOERROR, S_DNE, 0, TBL },
};

static int drive_server(enum sst st)
{
	VDC_Command *cmd;

	FIX(start_pair(1));
	switch (st) {
	case S_DNE: FIX(tl_pair_advance(&P, TL_CREATED)); return 0;
	case S_CONNECTED: FIX(tl_pair_advance(&P, TL_CONNECTED)); return 0;
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
	case SF_OPEN: return vdi_server_open(P.s, NULL, P.name);
	case SF_GETCONFIG: return vdi_server_get_configuration(P.s, &cfg);
	case SF_BEGIN:
		return vdi_server_begin_configuration(P.s, VDF_WriteMedia, 512, 0, 65536, 1000);
	case SF_REQUEST: return vdi_server_request_buffers(P.s, 65536, 0, 1);
	case SF_QUERY:
		rc = vdi_server_query_available_buffers(P.s, 65536, 0, &count);
		if (rc == 0)
			ck_assert_uint_ge(count, 1);
		return rc;
	case SF_END: return vdi_server_end_configuration(P.s);
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
	case SF_FREE: return vdi_server_free_buffer(P.s, BUF ? BUF : local, 65536);
	case SF_ISSHARED: return vdi_server_is_shared_buffer(P.s, BUF ? BUF : local);
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
	case SF_CLOSEDEVICE: return vdi_server_close_device(P.sd[0]);
	case SF_SIGNALABORT: return vdi_server_signal_abort(P.s);
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
		ck_assert_msg(g == PROT, "%s: DNE probe: GetConfiguration = %s", row,
		              vdi_strerror(g));
		return;
	}
	if (want == S_ABORT || want == S_ABORT_CLI) {
		ck_assert_msg(g == ABRT, "%s: Abort probe: GetConfiguration = %s", row,
		              vdi_strerror(g));
		return;
	}
	ck_assert_msg(g == 0, "%s: %s probe: GetConfiguration = %s", row, sst_name[want],
	              vdi_strerror(g));
	switch (want) {
	case S_CONNECTED:
		rc = vdi_server_query_available_buffers(P.s, 65536, 0, &count);
		ck_assert_msg(rc == PROT, "%s: Connected probe: Query = %s", row, vdi_strerror(rc));
		rc = vdi_server_begin_configuration(P.s, VDF_WriteMedia, 512, 0, 65536, 1000);
		ck_assert_msg(rc == 0, "%s: Connected probe: Begin = %s", row, vdi_strerror(rc));
		return;
	case S_CONFIGURABLE:
		rc = vdi_server_query_available_buffers(P.s, 65536, 0, &count);
		ck_assert_msg(rc == 0, "%s: Configurable probe: Query = %s", row, vdi_strerror(rc));
		rc = vdi_server_end_configuration(P.s);
		ck_assert_msg(rc == 0, "%s: Configurable probe: End = %s", row, vdi_strerror(rc));
		return;
	case S_INITIALIZING:
	case S_ACTIVE:
		rc = vdi_server_end_configuration(P.s);
		ck_assert_msg(rc == PROT, "%s: probe: End = %s", row, vdi_strerror(rc));
		rc = vdi_server_allocate_buffer(P.s, &b, 65536, 0);
		ck_assert_msg(rc == 0, "%s: probe: Allocate = %s", row, vdi_strerror(rc));
		ck_assert_int_eq(vdi_server_free_buffer(P.s, b, 65536), 0);
		/* The agent alone also makes the set Active (spec 3.2), which
		 * only the published phase tells apart from Initializing. */
		struct vdi_set_info info;
		TL_OK(vdi_set_info_get(NULL, P.name, &info));
		ck_assert_msg(info.state == sst_engine[want], "%s: %s probe: set info state '%s'",
		              row, sst_name[want], vdi_set_state_name(info.state));
		if (want == S_INITIALIZING) {
			rc = vdi_server_open_device(P.s, NULL, &d);
			ck_assert_msg(rc == 0, "%s: Initializing probe: OpenDevice = %s", row,
			              vdi_strerror(rc));
		} else if (P.agent.started) {
			ck_assert_msg(second_agent_refused(),
			              "%s: Active probe: second agent not refused", row);
		} else {
			rc = vdi_server_open_device(P.s, NULL, &d);
			ck_assert_msg(rc == VD_E_OPEN, "%s: Active probe: OpenDevice = %s", row,
			              vdi_strerror(rc));
		}
		return;
	case S_NT:
		rc = vdi_server_allocate_buffer(P.s, &b, 65536, 0);
		ck_assert_msg(rc == PROT, "%s: NT probe: Allocate = %s", row, vdi_strerror(rc));
		rc = vdi_server_close_device(P.sd[0]);
		ck_assert_msg(rc == VD_E_CLOSE, "%s: NT probe: CloseDevice = %s", row,
		              vdi_strerror(rc));
		return;
	case S_DNE:
	case S_ABORT:
	case S_ABORT_CLI: break;
	}
}

START_TEST(server_cell)
{
	const struct srow *r = &srows[_i];
	char row[160];
	int rc;

	snprintf(row, sizeof(row), "server %s in %s", sfn_name[r->fn], sst_name[r->state]);
	check_cell(row, sfn_engine[r->fn], sst_engine[r->state], r->rc, r->own);
	ck_assert_msg(drive_server(r->state) == 0, "%s: %s", row, FIXTURE_ERR);
	rc = call_server(r);
	if (r->rc == BLOCKS)
		ck_assert_msg(rc == BLOCKS, "%s returned %s instead of blocking", row,
		              vdi_strerror(rc));
	else
		ck_assert_msg(rc == r->rc, "%s = %s (%d), want %s (%s)", row, vdi_strerror(rc), rc,
		              vdi_strerror(r->rc), vdi_last_error());
	/* The agent ran on its own thread, where its message stays. */
	if (r->fn != SF_AGENT)
		check_refusal_names(row, sfn_engine[r->fn], rc, r->own);
	probe_server(r->next, row);
}
END_TEST

/* ---------------------------------------------------------------------
 * Every cell of the engine's table.
 */

/* The cells no fixture reaches (see the top), with the spec's value. */
static const struct {
	enum vdi_call call;
	enum vdi_set_state st;
	int cell;
} unreachable[] = {
	{ VDI_CALL_C_GET_COMMAND, VDI_SET_DNE, PROT },
	{ VDI_CALL_C_GET_COMMAND, VDI_SET_CONFIGURABLE, PROT },
	{ VDI_CALL_C_GET_COMMAND, VDI_SET_INITIALIZING, PROT },
	{ VDI_CALL_C_COMPLETE_COMMAND, VDI_SET_DNE, PROT },
	{ VDI_CALL_C_COMPLETE_COMMAND, VDI_SET_CONFIGURABLE, PROT },
	{ VDI_CALL_C_COMPLETE_COMMAND, VDI_SET_INITIALIZING, PROT },
	{ VDI_CALL_S_SEND_COMMAND, VDI_SET_DNE, PROT },
	{ VDI_CALL_S_SEND_COMMAND, VDI_SET_CONNECTED, PROT },
	{ VDI_CALL_S_SEND_COMMAND, VDI_SET_CONFIGURABLE, PROT },
	{ VDI_CALL_S_SEND_COMMAND, VDI_SET_INITIALIZING, PROT },
	{ VDI_CALL_S_CLOSE_DEVICE, VDI_SET_DNE, PROT },
	{ VDI_CALL_S_CLOSE_DEVICE, VDI_SET_CONNECTED, PROT },
	{ VDI_CALL_S_CLOSE_DEVICE, VDI_SET_CONFIGURABLE, PROT },
	{ VDI_CALL_S_CLOSE_DEVICE, VDI_SET_INITIALIZING, PROT },
};

/* Rows and unreachable entries that check cell (call, st). */
static int covering(enum vdi_call call, enum vdi_set_state st)
{
	int n = 0;
	size_t i;

	for (i = 0; i < sizeof(crows) / sizeof(crows[0]); i++)
		n += cfn_engine[crows[i].fn] == call && cst_engine[crows[i].state] == st;
	for (i = 0; i < sizeof(srows) / sizeof(srows[0]); i++)
		n += sfn_engine[srows[i].fn] == call && sst_engine[srows[i].state] == st;
	for (i = 0; i < sizeof(unreachable) / sizeof(unreachable[0]); i++) {
		if (unreachable[i].call != call || unreachable[i].st != st)
			continue;
		ck_assert_msg(vdi_state_cell(call, st) == unreachable[i].cell,
		              "%s in %s: the engine's table says %s, the spec %s",
		              vdi_call_name(call), vdi_set_state_name(st),
		              cell_name(vdi_state_cell(call, st)), cell_name(unreachable[i].cell));
		n++;
	}
	return n;
}

/* An object of this half can be in state st. */
static int object_state(enum vdi_call call, enum vdi_set_state st)
{
	int client = call <= VDI_CALL_C_SET_GROUP;

	if (st == VDI_SET_CREATED || st == VDI_SET_CLOSED || st == VDI_SET_CORRUPT)
		return 0;
	return !(client && st == VDI_SET_CONNECTED);
}

START_TEST(every_cell)
{
	int call, st;

	for (call = 0; call < VDI_CALL_COUNT; call++) {
		for (st = VDI_SET_DNE; st <= VDI_SET_CORRUPT + 1; st++) {
			const char *cn = vdi_call_name((enum vdi_call)call);
			const char *sn = vdi_set_state_name((enum vdi_set_state)st);

			if (st > VDI_SET_CORRUPT ||
			    !object_state((enum vdi_call)call, (enum vdi_set_state)st)) {
				ck_assert_msg(
					vdi_state_cell((enum vdi_call)call,
				                       (enum vdi_set_state)st) == VD_E_UNEXPECTED,
					"%s in %s: no object is in that state, yet the cell is %s",
					cn, sn,
					cell_name(vdi_state_cell((enum vdi_call)call,
				                                 (enum vdi_set_state)st)));
				continue;
			}
			ck_assert_msg(covering((enum vdi_call)call, (enum vdi_set_state)st) > 0,
			              "%s in %s: no row checks this cell", cn, sn);
		}
	}
	ck_assert_int_eq(vdi_state_cell(VDI_CALL_COUNT, VDI_SET_ACTIVE), VD_E_UNEXPECTED);
	ck_assert_int_eq(vdi_state_cell((enum vdi_call) - 1, VDI_SET_ACTIVE), VD_E_UNEXPECTED);
}
END_TEST

/* Every state has its own name; other values are "unknown". */
START_TEST(state_names)
{
	int a, b;

	for (a = VDI_SET_DNE; a <= VDI_SET_CORRUPT; a++) {
		const char *na = vdi_set_state_name((enum vdi_set_state)a);

		ck_assert_str_ne(na, "unknown");
		for (b = a + 1; b <= VDI_SET_CORRUPT; b++)
			ck_assert_str_ne(na, vdi_set_state_name((enum vdi_set_state)b));
	}
	ck_assert_str_eq(vdi_set_state_name(VDI_SET_TERMINATED), "finished");
	ck_assert_str_eq(vdi_set_state_name((enum vdi_set_state)(VDI_SET_CORRUPT + 1)), "unknown");
	ck_assert_str_eq(vdi_set_state_name((enum vdi_set_state) - 1), "unknown");
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

	tc = tcase_create("engine table");
	tcase_add_test(tc, every_cell);
	tcase_add_test(tc, state_names);
	tcase_set_timeout(tc, 10);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return tl_run_suite(states_suite());
}
