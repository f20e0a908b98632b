/* SPDX-License-Identifier: MIT */
/*
 * state.h - the state machine of a virtual device set as one table: for
 * every call of both halves and every state an object can be in, whether
 * the call is legal there or which error it returns (state.c).  Private
 * to libvdi; never installed.
 *
 * The states are the public enum vdi_set_state (vdi.h).  An object of
 * either half is in one of seven: DNE, Connected (server only),
 * Configurable, Initializing, Active, Normally Terminated, Abort.  The
 * other values of the enum (Created, Closed, Corrupt) describe a set as
 * an outsider sees it (vdi_set_info) and are never an object's state.
 *
 * The table is the spec's (vdi-protocol.md 3.1 and 3.2) with the
 * decisions D2 (the server's Connected column), D5 (Abort) and D17
 * applied.  What the table allows, the call then refines by its own
 * rules, which are per device or per argument and so are not states:
 * D3 (OpenDevice of a device already open), D4 (Close with open
 * devices), the completion agent already running, a closed device, a
 * wait that times out.  Every call of client.c and server.c asks the
 * table first; tests/unit/check_states.c holds the spec's cells as data
 * and checks each one against this table and against the behaviour.
 *
 * Threads: the table is constant; every function here may be called from
 * any thread.
 */
#ifndef VDI_STATE_H
#define VDI_STATE_H

#include "vdi.h"

struct vdi_region;

/* Every call of the two halves that depends on the state. */
enum vdi_call {
	/* client half: IClientVirtualDeviceSet2, IClientVirtualDevice */
	VDI_CALL_C_CREATE, /* Create, CreateEx */
	VDI_CALL_C_GET_CONFIGURATION,
	VDI_CALL_C_OPEN_DEVICE,
	VDI_CALL_C_GET_COMMAND,
	VDI_CALL_C_COMPLETE_COMMAND,
	VDI_CALL_C_SIGNAL_ABORT,
	VDI_CALL_C_CLOSE,
	VDI_CALL_C_OPEN_IN_SECONDARY, /* OpenInSecondary(Ex) */
	VDI_CALL_C_GET_BUFFER_HANDLE,
	VDI_CALL_C_MAP_BUFFER_HANDLE,
	VDI_CALL_C_SET_GROUP, /* libvdi: vdi_client_set_group */
	/* server half: IServerVirtualDeviceSet2, IServerVirtualDevice */
	VDI_CALL_S_OPEN,
	VDI_CALL_S_GET_CONFIGURATION,
	VDI_CALL_S_BEGIN_CONFIGURATION,
	VDI_CALL_S_REQUEST_BUFFERS,
	VDI_CALL_S_QUERY_AVAILABLE_BUFFERS,
	VDI_CALL_S_END_CONFIGURATION,
	VDI_CALL_S_OPEN_DEVICE,
	VDI_CALL_S_EXECUTE_COMPLETION_AGENT,
	VDI_CALL_S_ALLOCATE_BUFFER,
	VDI_CALL_S_FREE_BUFFER,
	VDI_CALL_S_IS_SHARED_BUFFER,
	VDI_CALL_S_SEND_COMMAND,
	VDI_CALL_S_CLOSE_DEVICE,
	VDI_CALL_S_SIGNAL_ABORT,
	VDI_CALL_S_CLOSE,
	VDI_CALL_COUNT
};

/* The cell of the table: 0 if the call is legal in state st (its own
 * rules still apply), else the error it returns there: VD_E_PROTOCOL,
 * VD_E_ABORT or VD_E_CLOSE.  VD_E_UNEXPECTED for a state the calling
 * half is never in (a client is never Connected; Created, Closed and
 * Corrupt are no object's state) and for values outside the enums. */
int vdi_state_cell(enum vdi_call call, enum vdi_set_state st);

/* The gate every call passes: 0 if the cell is 0, else vdi_fail() with
 * the cell's code and a sentence naming the call and the state (the
 * abort reason in Abort, read from r, which must then be mapped; r is
 * not read in any other state). */
int vdi_state_check(const struct vdi_region *r, enum vdi_call call, enum vdi_set_state st);

/* "client OpenDevice", "server CloseDevice": static storage. */
const char *vdi_call_name(enum vdi_call call);

#endif /* VDI_STATE_H */
