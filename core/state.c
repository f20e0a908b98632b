/* SPDX-License-Identifier: MIT */
/*
 * state.c - the state table of both halves (see state.h) and the names
 * of the states.
 *
 * Reading the table: one row per call, one column per state in the
 * spec's order.  0 = legal (the call's own per-device or per-argument
 * rules still apply); P = VD_E_PROTOCOL, the call is not legal in this
 * state; A = VD_E_ABORT; C = VD_E_CLOSE; "--" = the half is never in
 * this state.  Rows follow spec 3.1 (client) and 3.2 (server); where a
 * cell differs from the printed table, or the printed table has none,
 * the decision is named on the row.
 */
#include <stdio.h>

#include "internal.h"
#include "shm.h"
#include "state.h"

#define P  VD_E_PROTOCOL
#define A  VD_E_ABORT
#define C  VD_E_CLOSE
#define NO VD_E_UNEXPECTED

#define VDI_SET_STATE_COUNT (VDI_SET_CORRUPT + 1)

/* Columns as in the spec; the states no object is ever in read as NO. */
#define ROW(dne, connected, configurable, initializing, active, terminated, abort)                \
	{                                                                                         \
		[VDI_SET_DNE] = (dne), [VDI_SET_CREATED] = NO, [VDI_SET_CONNECTED] = (connected), \
		[VDI_SET_CONFIGURABLE] = (configurable), [VDI_SET_INITIALIZING] = (initializing), \
		[VDI_SET_ACTIVE] = (active), [VDI_SET_TERMINATED] = (terminated),                 \
		[VDI_SET_ABORTED] = (abort), [VDI_SET_CLOSED] = NO, [VDI_SET_CORRUPT] = NO,       \
	}

/* A matrix, aligned by column. */
/* clang-format off */
static const int table[VDI_CALL_COUNT][VDI_SET_STATE_COUNT] = {
	/*                                         DNE Conn Conf Init Act  NT Abort */
	/* D5: Create and OpenInSecondary on an object in use stay PROTOCOL. */
	[VDI_CALL_C_CREATE]                  = ROW(0,  NO,  P,   P,   P,   P,  P),
	/* Note 1: waits in Configurable for EndConfiguration. */
	[VDI_CALL_C_GET_CONFIGURATION]       = ROW(P,  NO,  0,   0,   0,   0,  A),
	/* D3: in Active, per device (PROTOCOL if open, VD_E_OPEN if all). */
	[VDI_CALL_C_OPEN_DEVICE]             = ROW(P,  NO,  P,   0,   0,   P,  A),
	/* Note 3: VD_E_CLOSE is per device, then Normally Terminated (D17). */
	[VDI_CALL_C_GET_COMMAND]             = ROW(P,  NO,  P,   P,   0,   P,  A),
	[VDI_CALL_C_COMPLETE_COMMAND]        = ROW(P,  NO,  P,   P,   0,   P,  A),
	[VDI_CALL_C_SIGNAL_ABORT]            = ROW(P,  NO,  0,   0,   0,   0,  0),
	/* D4: in Active, open devices make it VD_E_OPEN (and abort). */
	[VDI_CALL_C_CLOSE]                   = ROW(P,  NO,  0,   0,   0,   0,  0),
	/* D22: the set it names must be configured and not aborted. */
	[VDI_CALL_C_OPEN_IN_SECONDARY]       = ROW(0,  NO,  P,   P,   P,   P,  P),
	/* Spec 7.1: "set open"; the address or handle decides then (D24). */
	[VDI_CALL_C_GET_BUFFER_HANDLE]       = ROW(P,  NO,  0,   0,   0,   0,  A),
	[VDI_CALL_C_MAP_BUFFER_HANDLE]       = ROW(P,  NO,  0,   0,   0,   0,  A),
	/* libvdi: the access of the objects is fixed when they are made. */
	[VDI_CALL_C_SET_GROUP]               = ROW(0,  NO,  P,   P,   P,   P,  P),

	[VDI_CALL_S_OPEN]                    = ROW(0,  P,   P,   P,   P,   P,  P),
	/* D2: the Connected column as in the digest's 3.2. */
	[VDI_CALL_S_GET_CONFIGURATION]       = ROW(P,  0,   0,   0,   0,   0,  A),
	/* D5: ABORT in Abort (the printed table says PROTOCOL). */
	[VDI_CALL_S_BEGIN_CONFIGURATION]     = ROW(P,  0,   P,   P,   P,   P,  A),
	[VDI_CALL_S_REQUEST_BUFFERS]         = ROW(P,  P,   0,   0,   0,   P,  A),
	[VDI_CALL_S_QUERY_AVAILABLE_BUFFERS] = ROW(P,  P,   0,   0,   0,   P,  A),
	[VDI_CALL_S_END_CONFIGURATION]       = ROW(P,  P,   0,   P,   P,   P,  A),
	/* D3: in Active, VD_E_OPEN once every device was handed out. */
	[VDI_CALL_S_OPEN_DEVICE]             = ROW(P,  P,   P,   0,   0,   P,  A),
	/* In Active, PROTOCOL if an agent already runs. */
	[VDI_CALL_S_EXECUTE_COMPLETION_AGENT] = ROW(P, P,   P,   0,   0,   P,  A),
	[VDI_CALL_S_ALLOCATE_BUFFER]         = ROW(P,  P,   P,   0,   0,   P,  A),
	/* D5: cleanup is allowed after the end, normal or not. */
	[VDI_CALL_S_FREE_BUFFER]             = ROW(P,  P,   P,   0,   0,   0,  0),
	/* D12: answers 1 or 0 in every state. */
	[VDI_CALL_S_IS_SHARED_BUFFER]        = ROW(0,  0,   0,   0,   0,   0,  0),
	/* A closed device is PROTOCOL too; D8: the routine runs on failure. */
	[VDI_CALL_S_SEND_COMMAND]            = ROW(P,  P,   P,   P,   0,   P,  A),
	/* VD_E_CLOSE also for one device already closed in Active. */
	[VDI_CALL_S_CLOSE_DEVICE]            = ROW(P,  P,   P,   P,   0,   C,  A),
	[VDI_CALL_S_SIGNAL_ABORT]            = ROW(P,  0,   0,   0,   0,   0,  0),
	/* D4: in Active, devices still open make it PROTOCOL (and abort). */
	[VDI_CALL_S_CLOSE]                   = ROW(P,  0,   0,   0,   0,   0,  0),
};
/* clang-format on */

static const char *const call_names[VDI_CALL_COUNT] = {
	[VDI_CALL_C_CREATE] = "client Create",
	[VDI_CALL_C_GET_CONFIGURATION] = "client GetConfiguration",
	[VDI_CALL_C_OPEN_DEVICE] = "client OpenDevice",
	[VDI_CALL_C_GET_COMMAND] = "client GetCommand",
	[VDI_CALL_C_COMPLETE_COMMAND] = "client CompleteCommand",
	[VDI_CALL_C_SIGNAL_ABORT] = "client SignalAbort",
	[VDI_CALL_C_CLOSE] = "client Close",
	[VDI_CALL_C_OPEN_IN_SECONDARY] = "client OpenInSecondary",
	[VDI_CALL_C_GET_BUFFER_HANDLE] = "client GetBufferHandle",
	[VDI_CALL_C_MAP_BUFFER_HANDLE] = "client MapBufferHandle",
	[VDI_CALL_C_SET_GROUP] = "client set_group",
	[VDI_CALL_S_OPEN] = "server Open",
	[VDI_CALL_S_GET_CONFIGURATION] = "server GetConfiguration",
	[VDI_CALL_S_BEGIN_CONFIGURATION] = "server BeginConfiguration",
	[VDI_CALL_S_REQUEST_BUFFERS] = "server RequestBuffers",
	[VDI_CALL_S_QUERY_AVAILABLE_BUFFERS] = "server QueryAvailableBuffers",
	[VDI_CALL_S_END_CONFIGURATION] = "server EndConfiguration",
	[VDI_CALL_S_OPEN_DEVICE] = "server OpenDevice",
	[VDI_CALL_S_EXECUTE_COMPLETION_AGENT] = "server ExecuteCompletionAgent",
	[VDI_CALL_S_ALLOCATE_BUFFER] = "server AllocateBuffer",
	[VDI_CALL_S_FREE_BUFFER] = "server FreeBuffer",
	[VDI_CALL_S_IS_SHARED_BUFFER] = "server IsSharedBuffer",
	[VDI_CALL_S_SEND_COMMAND] = "server SendCommand",
	[VDI_CALL_S_CLOSE_DEVICE] = "server CloseDevice",
	[VDI_CALL_S_SIGNAL_ABORT] = "server SignalAbort",
	[VDI_CALL_S_CLOSE] = "server Close",
};

const char *vdi_set_state_name(enum vdi_set_state st)
{
	static const char *const names[VDI_SET_STATE_COUNT] = {
		[VDI_SET_DNE] = "not open",
		[VDI_SET_CREATED] = "waiting for server",
		[VDI_SET_CONNECTED] = "connected",
		[VDI_SET_CONFIGURABLE] = "configurable",
		[VDI_SET_INITIALIZING] = "initializing",
		[VDI_SET_ACTIVE] = "active",
		[VDI_SET_TERMINATED] = "finished",
		[VDI_SET_ABORTED] = "aborted",
		[VDI_SET_CLOSED] = "closed",
		[VDI_SET_CORRUPT] = "corrupt",
	};

	/* Unsigned compare: an enum holding a stray negative is unknown too. */
	return (unsigned)st < VDI_SET_STATE_COUNT ? names[st] : "unknown";
}

const char *vdi_call_name(enum vdi_call call)
{
	return (unsigned)call < VDI_CALL_COUNT ? call_names[call] : "unknown call";
}

int vdi_state_cell(enum vdi_call call, enum vdi_set_state st)
{
	if ((unsigned)call >= VDI_CALL_COUNT || (unsigned)st >= VDI_SET_STATE_COUNT)
		return NO;
	return table[call][st];
}

int vdi_state_check(const struct vdi_region *r, enum vdi_call call, enum vdi_set_state st)
{
	const char *name = vdi_call_name(call);
	char why[VDI_REASON_MAX];
	int cell = vdi_state_cell(call, st);

	switch (cell) {
	case 0: return 0;
	case A:
		vdi_region_reason(r, why, sizeof(why));
		return vdi_fail(A, "%s: set '%s' is aborted: %s", name, r->name, why);
	case C: return vdi_fail(C, "%s: every device of set '%s' is already closed", name, r->name);
	case P:
		if (st == VDI_SET_DNE)
			return vdi_fail(P, "%s: no set is open on this object", name);
		if (vdi_state_cell(call, VDI_SET_DNE) == 0)
			return vdi_fail(P, "%s: a set is already open on this object (it is %s)",
			                name, vdi_set_state_name(st));
		return vdi_fail(P, "%s: not valid while the set is %s", name,
		                vdi_set_state_name(st));
	default:
		return vdi_fail(VD_E_UNEXPECTED, "%s: internal error: the object is in state %d",
		                name, (int)st);
	}
}
