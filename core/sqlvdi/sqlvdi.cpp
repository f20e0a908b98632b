/* SPDX-License-Identifier: MIT */
/*
 * sqlvdi.cpp - libsqlvdi: Microsoft's Linux VDI client classes over
 * libvdi's client half.  The semantics chosen where Microsoft's API is
 * silent are in vdi.h of this folder and docs/decisions.md (D40-D46).
 *
 * Each class holds one pointer, as Microsoft's do, to a private C struct:
 *
 *   ClientVirtualDeviceSet -> sqlvdi_set    { libvdi client object, the
 *                                              device objects handed out }
 *   ClientVirtualDevice    -> sqlvdi_device { libvdi device, its set }
 *
 * A set object keeps one struct vdi_client at a time: Close frees it and
 * takes a fresh one, so the next Create starts from the state table's DNE
 * with the access mode of the umask at that time.  Built without
 * exceptions and without RTTI; only operator new/delete come from the C++
 * runtime, because a client may delete a device object it was handed.
 */
#include <new>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include "vdi.h"
#include "vdierror.h"

extern "C" {
#include "../internal.h"
}

/* ------------------------------------------------------------------ */
/* The ABI of the fact sheet, pinned. */

static_assert(sizeof(ClientVirtualDeviceSet) == sizeof(void *), "one-pointer set object");
static_assert(sizeof(ClientVirtualDevice) == sizeof(void *), "one-pointer device object");
static_assert(sizeof(VDConfig) == 44, "VDConfig is 11 x uint32");
static_assert(offsetof(VDConfig, serverTimeOut) == 24 && offsetof(VDConfig, bufferAreaSize) == 40,
	      "VDConfig layout");
static_assert(sizeof(VDC_Command) == 24 && offsetof(VDC_Command, size) == 4 &&
		      offsetof(VDC_Command, position) == 8 && offsetof(VDC_Command, buffer) == 16,
	      "VDC_Command layout");
static_assert(sizeof(VDS_Command) == 56 && offsetof(VDS_Command, completionCode) == 48 &&
		      offsetof(VDS_Command, bytesTransferred) == 52,
	      "VDS_Command layout");
static_assert(VDF_LikeTape == 0x173 && VDF_LikeDisk == 0x200 && VDF_CompleteEnabled == 0x40000 &&
		      (unsigned)VDF_LatchStats == 0x80000000u,
	      "VDFeatures values");
static_assert(VDC_Read == 1 && VDC_Flush == 12 && VDC_Complete == 19, "VDCommands values");
static_assert(VDC_Beginning == 0 && VDC_End == 2, "VDWhence values");
static_assert(VD_E_TIMEOUT == (int)0x80770003 && VD_E_CLOSE == (int)0x8077000E, "VD_E values");
static_assert(sizeof(time_t) == 8 && sizeof(unsigned long) == 8 && sizeof(int64_t) == 8,
	      "LP64: the mangled names of the fact sheet");

/* ------------------------------------------------------------------ */
/* private state */

struct sqlvdi_device {
	ClientVirtualDeviceSet *owner; /* NULL once the set let it go */
	struct vdi_client_device *dev;
};

struct sqlvdi_set {
	pthread_mutex_t lock;          /* devs[], dinfo[], ndev, c, open */
	struct vdi_client *c;
	int open;                      /* a set is created or attached */
	unsigned ndev;
	ClientVirtualDevice *devs[VDI_MAX_DEVICES];
	sqlvdi_device *dinfo[VDI_MAX_DEVICES]; /* devs[i]'s private half */
};

/* A failure of a member: libvdi's sentence is in vdi_last_error(); it is
 * logged (warning level, libvdi's sink) because a client written for
 * Microsoft's API has no call that reads it. */
static int result(const char *member, int rc)
{
	if (rc && rc != VD_E_TIMEOUT && rc != VD_E_CLOSE)
		vdi_log(VDI_LOG_WARN, "sqlvdi %s: %s", member, vdi_last_error());
	return rc;
}

/* D41: milliseconds; negative, or more than the engine counts, is
 * forever; never a shorter wait. */
static uint32_t timeout_ms(time_t t)
{
	if (t < 0 || t >= (time_t)0x80000000LL)
		return VDI_INFINITE;
	return (uint32_t)t;
}

/* D43: 0660 for the caller's group when the umask leaves group read and
 * write, else 0600.  The umask is read from /proc (thread-safe, unlike
 * umask(2) twice); without /proc the safe answer is 0600. */
static int umask_shares_group(void)
{
	char line[128];
	unsigned mask = 077;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Umask: %o", &mask) == 1)
			break;
	fclose(f);
	return (mask & 060) == 0;
}

static sqlvdi_set *set_impl_new(void)
{
	sqlvdi_set *s = (sqlvdi_set *)calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	if (vdi_client_new(&s->c)) {
		free(s);
		return NULL;
	}
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

/* Lets every device object go (lock held): Close deletes them, the
 * destructor of the set too.  Objects the client deleted are gone
 * already (they left the table). */
static void drop_devices_locked(sqlvdi_set *s)
{
	for (unsigned i = 0; i < s->ndev; i++) {
		ClientVirtualDevice *d = s->devs[i];

		s->devs[i] = NULL;
		s->dinfo[i]->owner = NULL; /* its destructor must not look for it */
		delete d;
	}
	s->ndev = 0;
}

/* ------------------------------------------------------------------ */
/* ClientVirtualDeviceSet */

ClientVirtualDeviceSet::ClientVirtualDeviceSet() : impl(set_impl_new())
{
}

ClientVirtualDeviceSet::~ClientVirtualDeviceSet()
{
	if (!impl)
		return;
	if (impl->open)
		Close();
	pthread_mutex_lock(&impl->lock);
	drop_devices_locked(impl);
	pthread_mutex_unlock(&impl->lock);
	vdi_client_free(impl->c);
	pthread_mutex_destroy(&impl->lock);
	free(impl);
}

#define NEED_IMPL(member)                                                                \
	do {                                                                             \
		if (!impl)                                                               \
			return result(member, vdi_fail(VD_E_MEMORY, "%s: the object could " \
							   "not be constructed", member)); \
	} while (0)

int ClientVirtualDeviceSet::Create(char *name, VDConfig *cfg)
{
	const char *m = "ClientVirtualDeviceSet::Create";
	int rc = 0;

	NEED_IMPL(m);
	pthread_mutex_lock(&impl->lock);
	if (!impl->open && umask_shares_group())
		rc = vdi_client_set_group(impl->c, getegid());
	if (!rc)
		rc = vdi_client_create(impl->c, name, cfg);
	if (!rc)
		impl->open = 1;
	pthread_mutex_unlock(&impl->lock);
	return result(m, rc);
}

int ClientVirtualDeviceSet::GetConfiguration(time_t timeout, VDConfig *cfg)
{
	NEED_IMPL("ClientVirtualDeviceSet::GetConfiguration");
	/* No lock: SignalAbort from another thread must be able to wake it. */
	return result("ClientVirtualDeviceSet::GetConfiguration",
		      vdi_client_get_configuration(impl->c, timeout_ms(timeout), cfg));
}

int ClientVirtualDeviceSet::OpenDevice(char *name, ClientVirtualDevice **ppVirtualDevice)
{
	const char *m = "ClientVirtualDeviceSet::OpenDevice";
	struct vdi_client_device *dev = NULL;
	ClientVirtualDevice *obj;
	sqlvdi_device *di;
	int rc;

	NEED_IMPL(m);
	if (ppVirtualDevice)
		*ppVirtualDevice = NULL;
	if (!ppVirtualDevice)
		return result(m, vdi_fail(VD_E_INVALID, "client OpenDevice: NULL device pointer"));
	pthread_mutex_lock(&impl->lock);
	rc = vdi_client_open_device(impl->c, name, &dev);
	if (rc) {
		pthread_mutex_unlock(&impl->lock);
		return result(m, rc);
	}
	obj = new (std::nothrow) ClientVirtualDevice();
	di = (sqlvdi_device *)calloc(1, sizeof(*di));
	if (!obj || !di || impl->ndev == VDI_MAX_DEVICES) {
		/* The VDI device is open and cannot be given back: fail the
		 * set rather than leave it open with nobody to drive it. */
		delete obj;
		free(di);
		vdi_client_signal_abort(impl->c);
		pthread_mutex_unlock(&impl->lock);
		return result(m, vdi_fail(VD_E_MEMORY, "client OpenDevice '%s': no memory for the device "
					  "object; set aborted", name));
	}
	di->owner = this;
	di->dev = dev;
	obj->impl = di;
	impl->devs[impl->ndev] = obj;
	impl->dinfo[impl->ndev++] = di;
	pthread_mutex_unlock(&impl->lock);
	*ppVirtualDevice = obj;
	return 0;
}

int ClientVirtualDeviceSet::Close()
{
	const char *m = "ClientVirtualDeviceSet::Close";
	struct vdi_client *fresh = NULL;
	int rc;

	NEED_IMPL(m);
	pthread_mutex_lock(&impl->lock);
	rc = vdi_client_close(impl->c);
	if (rc != VD_E_PROTOCOL || impl->open) {
		drop_devices_locked(impl);
		impl->open = 0;
		/* A fresh object for the next Create (D42). */
		if (vdi_client_new(&fresh) == 0) {
			vdi_client_free(impl->c);
			impl->c = fresh;
		}
	}
	pthread_mutex_unlock(&impl->lock);
	return result(m, rc);
}

int ClientVirtualDeviceSet::SignalAbort()
{
	NEED_IMPL("ClientVirtualDeviceSet::SignalAbort");
	return result("ClientVirtualDeviceSet::SignalAbort", vdi_client_signal_abort(impl->c));
}

int ClientVirtualDeviceSet::OpenInSecondary(char *setName)
{
	const char *m = "ClientVirtualDeviceSet::OpenInSecondary";
	int rc;

	NEED_IMPL(m);
	pthread_mutex_lock(&impl->lock);
	rc = vdi_client_open_in_secondary(impl->c, setName);
	if (!rc)
		impl->open = 1;
	pthread_mutex_unlock(&impl->lock);
	return result(m, rc);
}

int ClientVirtualDeviceSet::GetBufferHandle(uint8_t *pBuffer, unsigned int *pBufferHandle)
{
	NEED_IMPL("ClientVirtualDeviceSet::GetBufferHandle");
	return result("ClientVirtualDeviceSet::GetBufferHandle",
		      vdi_client_get_buffer_handle(impl->c, pBuffer, pBufferHandle));
}

int ClientVirtualDeviceSet::MapBufferHandle(int dwBuffer, uint8_t **ppBuffer)
{
	NEED_IMPL("ClientVirtualDeviceSet::MapBufferHandle");
	return result("ClientVirtualDeviceSet::MapBufferHandle",
		      vdi_client_map_buffer_handle(impl->c, (uint32_t)dwBuffer, ppBuffer));
}

/* D44: the device destructor's notice; the device already left the
 * table, so there is nothing more to do here. */
void ClientVirtualDeviceSet::RegisterDeviceClosed()
{
}

/* ------------------------------------------------------------------ */
/* ClientVirtualDevice */

ClientVirtualDevice::ClientVirtualDevice() : impl(NULL)
{
}

ClientVirtualDevice::~ClientVirtualDevice()
{
	ClientVirtualDeviceSet *owner;

	if (!impl)
		return;
	owner = impl->owner;
	/* A device deleted by the client leaves its set's table; one the
	 * set deletes (Close) comes with owner NULL. */
	if (owner && owner->impl) {
		sqlvdi_set *s = owner->impl;

		pthread_mutex_lock(&s->lock);
		for (unsigned i = 0; i < s->ndev; i++) {
			if (s->devs[i] == this) {
				s->ndev--;
				s->devs[i] = s->devs[s->ndev];
				s->dinfo[i] = s->dinfo[s->ndev];
				break;
			}
		}
		pthread_mutex_unlock(&s->lock);
		owner->RegisterDeviceClosed();
	}
	free(impl);
	impl = NULL;
}

int ClientVirtualDevice::GetCommand(time_t timeout, VDC_Command **ppCmd)
{
	const char *m = "ClientVirtualDevice::GetCommand";

	if (!impl) {
		if (ppCmd)
			*ppCmd = NULL;
		return result(m, vdi_fail(VD_E_PROTOCOL,
					  "client GetCommand: this device object was not handed out by OpenDevice"));
	}
	return result(m, vdi_client_get_command(impl->dev, timeout_ms(timeout), ppCmd));
}

int ClientVirtualDevice::CompleteCommand(VDC_Command *pCmd, int completionCode,
					 unsigned long bytesTransferred, int64_t position)
{
	const char *m = "ClientVirtualDevice::CompleteCommand";

	if (!impl)
		return result(m, vdi_fail(VD_E_PROTOCOL,
					  "client CompleteCommand: this device object was not handed out by OpenDevice"));
	if (bytesTransferred > 0xFFFFFFFFul)
		return result(m, vdi_fail(VD_E_INVALID, "client CompleteCommand: %lu bytes transferred "
					  "does not fit the protocol's 32 bits",
					  bytesTransferred));
	return result(m, vdi_client_complete_command(impl->dev, pCmd, (uint32_t)completionCode,
						     (uint32_t)bytesTransferred, (uint64_t)position));
}
