/* SPDX-License-Identifier: MIT */
/*
 * vdi.h (sqlvdi) - Microsoft's Linux VDI client API, as libvdi offers it.
 *
 * Backup software written for SQL Server on Linux includes "vdi.h" and
 * "vdierror.h" and links -lsqlvdi.  This folder holds those two headers
 * for libvdi's libsqlvdi (installed as $(PREFIX)/include/sqlvdi/, so they
 * never shadow libvdi's own vdi.h; `pkg-config --cflags --libs sqlvdi`).
 * A program built against them runs over libvdi; a program built against
 * Microsoft's headers links with libvdi's libsqlvdi.so too, because the
 * two classes below have Microsoft's members, signatures and one-pointer
 * layout (shared/spec/sqlvdi-linux-abi.md), and non-virtual members are
 * called by their mangled names.
 *
 * The types, constants and codes are libvdi's (../vdi.h: one copy):
 * VDConfig, VDC_Command, VDS_Command, enum VDFeatures, VDCommands,
 * VDWhence, the ERROR_* completion codes and the VD_E_* return codes.
 *
 * Semantics (docs/decisions.md D40-D46):
 *   - Every member returns 0 (NOERROR) or a VD_E_* code, as libvdi's
 *     vdi_client_* call it forwards to; the state tables are libvdi's.
 *   - Timeouts are milliseconds in a time_t.  A negative value, and any
 *     value of 2^31 ms (24.8 days) or more, waits forever: a time the
 *     engine cannot count is never turned into a shorter wait or a poll.
 *     0 polls.
 *   - Objects: clients create the set with new and delete it; delete
 *     closes an open set (with the abort of Close, if devices are still
 *     open).  Device objects belong to their set: OpenDevice hands out a
 *     pointer valid until Close, which deletes them.  A client that
 *     deletes a device object itself may: the device leaves the set's
 *     table (RegisterDeviceClosed) and the set does not delete it again.
 *     Its VDI device stays open until Close, as in the API.
 *   - RegisterDeviceClosed: called by ~ClientVirtualDevice; a client has
 *     no reason to call it, and a call of its own changes nothing.
 *   - Access: the shared objects of a set are 0600, or 0660 for the
 *     caller's effective group when the process umask leaves group read
 *     and write (Microsoft's sample calls umask(0) so that SQL Server can
 *     open them); never world-accessible.
 *   - Names: 1..127 bytes, no '/', '\\' or control characters, not "."
 *     or ".."; a GUID, with or without braces, is fine.  Longer names
 *     and others are VD_E_INVALID, with the rule in the message (libvdi's
 *     vdi_last_error(); the library also logs it through libvdi's sink).
 *   - The set may be used from any thread; each device from one thread
 *     at a time.
 */
#ifndef SQLVDI_VDI_H
#define SQLVDI_VDI_H

#include <stdint.h>
#include <time.h>

#include "../vdi.h"

#ifdef __cplusplus

extern "C++" {

class ClientVirtualDeviceSet;
struct vdi_client_device;
struct vdi_client;
struct sqlvdi_set;

class ClientVirtualDevice {
public:
	ClientVirtualDevice();
	~ClientVirtualDevice();

	int GetCommand(time_t timeout, VDC_Command **ppCmd);
	int CompleteCommand(VDC_Command *pCmd, int completionCode,
			    unsigned long bytesTransferred, int64_t position);

private:
	struct sqlvdi_device *impl; /* NULL: not a device of an open set */
	friend class ClientVirtualDeviceSet;
};

class ClientVirtualDeviceSet {
public:
	int Create(char *name, VDConfig *cfg);
	int GetConfiguration(time_t timeout, VDConfig *cfg);
	int OpenDevice(char *name, ClientVirtualDevice **ppVirtualDevice);
	int Close();
	int SignalAbort();
	int OpenInSecondary(char *setName);
	int GetBufferHandle(uint8_t *pBuffer, unsigned int *pBufferHandle);
	int MapBufferHandle(int dwBuffer, uint8_t **ppBuffer);
	void RegisterDeviceClosed();

	ClientVirtualDeviceSet();
	~ClientVirtualDeviceSet();

private:
	struct sqlvdi_set *impl;
	friend class ClientVirtualDevice;
};

} /* extern "C++" */

#endif /* __cplusplus */
#endif /* SQLVDI_VDI_H */
