/* SPDX-License-Identifier: MIT */
/*
 * backend_sqlvdi.c - the client backend over a library with Microsoft's
 * Linux VDI ABI (libsqlvdi.so), loaded at run time.
 *
 * The library offers two C++ classes with non-virtual members
 * (shared/spec/sqlvdi-linux-abi.md).  Under the Itanium C++ ABI a
 * non-virtual member function is an ordinary function whose first
 * argument is `this`, exported under its mangled name, and a
 * constructor or destructor is the same with no result.  So this file
 * calls them from C: it resolves each mangled name with dlsym, keeps the
 * objects in memory of its own (the classes hold one pointer), runs the
 * complete-object constructor on it, and calls the members with the
 * object's address first.  No C++ compiler is needed to drive the
 * library, only to build one.
 *
 * Waiting.  Microsoft's GetCommand and GetConfiguration block with a
 * timeout (milliseconds in a time_t, negative = forever) and offer no
 * handle to poll; the API says SignalAbort wakes them.  An infinite wait
 * is still made of 1 s calls, so that an abort this process raised
 * through the seam (the user's .control, an unmount, a reader that went
 * away) ends it within a second even if a library failed to wake its
 * waiter (docs/decisions.md D46).  A finite wait is one call.
 *
 * The library's objects are used as the API allows: the set from any
 * thread, each device from one thread at a time.  Every failure leaves a
 * sentence naming the library, the member, the set or device and the
 * code: the library's own messages are its business (Microsoft's prints
 * to the console; libvdi's libsqlvdi logs through its own sink).
 */
#include <dlfcn.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend_ops.h"
#include "internal.h"

/* The member functions, as C sees them. */
typedef void (*sq_structor_fn)(void *self);
typedef int (*sq_create_fn)(void *self, char *name, VDConfig *cfg);
typedef int (*sq_get_configuration_fn)(void *self, time_t timeout, VDConfig *cfg);
typedef int (*sq_open_device_fn)(void *self, char *name, void **dev);
typedef int (*sq_noarg_fn)(void *self);
typedef int (*sq_get_command_fn)(void *self, time_t timeout, VDC_Command **cmd);
typedef int (*sq_complete_command_fn)(void *self, VDC_Command *cmd, int code, unsigned long bytes,
                                      int64_t position);

struct sq_syms {
	void *lib;
	sq_structor_fn set_ctor, set_dtor;
	sq_create_fn create;
	sq_get_configuration_fn get_configuration;
	sq_open_device_fn open_device;
	sq_noarg_fn close, signal_abort;
	sq_get_command_fn get_command;
	sq_complete_command_fn complete_command;
};

/* Every member the seam calls; the library must define them all. */
static const struct sq_member {
	const char *symbol;
	const char *what;
	size_t offset;
} sq_members[] = {
	{ "_ZN22ClientVirtualDeviceSetC1Ev", "ClientVirtualDeviceSet::ClientVirtualDeviceSet()",
	  offsetof(struct sq_syms, set_ctor) },
	{ "_ZN22ClientVirtualDeviceSetD1Ev", "ClientVirtualDeviceSet::~ClientVirtualDeviceSet()",
	  offsetof(struct sq_syms, set_dtor) },
	{ "_ZN22ClientVirtualDeviceSet6CreateEPcP8VDConfig",
	  "ClientVirtualDeviceSet::Create(char*, VDConfig*)", offsetof(struct sq_syms, create) },
	{ "_ZN22ClientVirtualDeviceSet16GetConfigurationElP8VDConfig",
	  "ClientVirtualDeviceSet::GetConfiguration(long, VDConfig*)",
	  offsetof(struct sq_syms, get_configuration) },
	{ "_ZN22ClientVirtualDeviceSet10OpenDeviceEPcPP19ClientVirtualDevice",
	  "ClientVirtualDeviceSet::OpenDevice(char*, ClientVirtualDevice**)",
	  offsetof(struct sq_syms, open_device) },
	{ "_ZN22ClientVirtualDeviceSet5CloseEv", "ClientVirtualDeviceSet::Close()",
	  offsetof(struct sq_syms, close) },
	{ "_ZN22ClientVirtualDeviceSet11SignalAbortEv", "ClientVirtualDeviceSet::SignalAbort()",
	  offsetof(struct sq_syms, signal_abort) },
	{ "_ZN19ClientVirtualDevice10GetCommandElPP11VDC_Command",
	  "ClientVirtualDevice::GetCommand(long, VDC_Command**)",
	  offsetof(struct sq_syms, get_command) },
	{ "_ZN19ClientVirtualDevice15CompleteCommandEP11VDC_Commandiml",
	  "ClientVirtualDevice::CompleteCommand(VDC_Command*, int, unsigned long, long)",
	  offsetof(struct sq_syms, complete_command) },
};

/* Room for the library's object: the class is one pointer; the rest is
 * margin that costs nothing. */
#define SQ_OBJECT_SIZE 64

struct sq_set {
	const struct vdi_backend *b;
	const struct sq_syms *sym;
	int aborted; /* atomic: this process signalled abort */
	char name[VDI_MAX_NAME + 1];
	alignas(16) unsigned char obj[SQ_OBJECT_SIZE];
};

struct sq_dev {
	struct sq_set *set;
	void *obj; /* the library's ClientVirtualDevice */
	char name[VDI_MAX_NAME + 1];
};

#define SQ_SLICE_MS 1000u

/* ------------------------------------------------------------------ */
/* loading */

int vdi_sqlvdi_load(struct vdi_backend *b, const char *path)
{
	struct sq_syms *sym;
	const char *err;
	size_t i;

	sym = calloc(1, sizeof(*sym));
	if (!sym)
		return vdi_fail(VD_E_MEMORY, "sqlvdi library '%s': out of memory", path);
	/* NOW: a library whose own dependencies are missing fails here, not
	 * at the first call.  NODELETE: a thread may still be returning
	 * through the library when the last set using it is freed. */
	dlerror();
	sym->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (!sym->lib) {
		err = dlerror();
		free(sym);
		return vdi_fail(VD_E_INVALID, "sqlvdi library '%s' cannot be loaded: %s", path,
		                err ? err : "unknown error");
	}
	for (i = 0; i < VDI_ARRAY_SIZE(sq_members); i++) {
		void *fn = dlsym(sym->lib, sq_members[i].symbol);

		if (!fn) {
			dlclose(sym->lib);
			free(sym);
			return vdi_fail(
				VD_E_INVALID,
				"sqlvdi library '%s' is not a library with Microsoft's Linux VDI ABI: "
				"it has no %s (symbol %s)",
				path, sq_members[i].what, sq_members[i].symbol);
		}
		/* POSIX: a function pointer converts to and from void *. */
		memcpy((char *)sym + sq_members[i].offset, &fn, sizeof(fn));
	}
	b->priv = sym;
	return 0;
}

void vdi_sqlvdi_unload(struct vdi_backend *b)
{
	struct sq_syms *sym = b->priv;

	if (!sym)
		return;
	dlclose(sym->lib); /* RTLD_NODELETE: the mapping stays */
	free(sym);
	b->priv = NULL;
}

/* ------------------------------------------------------------------ */
/* calls */

static time_t sq_timeout(uint32_t timeout_ms)
{
	return vdi_timeout_infinite(timeout_ms) ? (time_t)-1 : (time_t)timeout_ms;
}

/* What a code means when the library gives no reason of its own. */
static const char *sq_meaning(const struct sq_set *s, int rc)
{
	if (rc != VD_E_ABORT)
		return "";
	if (__atomic_load_n(&s->aborted, __ATOMIC_RELAXED))
		return ": this client signalled abort";
	return ": the set was aborted by the server, or the server process ended "
	       "(Microsoft's API does not tell which)";
}

static int sq_failed(const struct sq_set *s, int rc, const char *member, const char *dev)
{
	if (dev)
		return vdi_fail(rc, "%s: %s on device '%s' of set '%s' returned %s%s", s->b->name,
		                member, dev, s->name, vdi_strerror(rc), sq_meaning(s, rc));
	return vdi_fail(rc, "%s: %s of set '%s' returned %s%s", s->b->name, member, s->name,
	                vdi_strerror(rc), sq_meaning(s, rc));
}

static int sq_set_new(const struct vdi_backend *b, void **out)
{
	struct sq_set *s = calloc(1, sizeof(*s));

	if (!s)
		return vdi_fail(VD_E_MEMORY, "%s: cannot allocate a set object", b->name);
	s->b = b;
	s->sym = b->priv;
	s->sym->set_ctor(s->obj);
	*out = s;
	return 0;
}

static void sq_set_free(void *set)
{
	struct sq_set *s = set;

	s->sym->set_dtor(s->obj);
	free(s);
}

static int sq_create(void *set, const char *instance, const char *name, const VDConfig *cfg)
{
	struct sq_set *s = set;
	VDConfig copy = *cfg;
	int rc;

	if (instance)
		return vdi_fail(
			VD_E_INSTANCE_NAME,
			"%s: set '%s': instance '%s' refused: SQL Server on Linux has no named "
			"instances, and Microsoft's API takes none",
			s->b->name, name, instance);
	snprintf(s->name, sizeof(s->name), "%s", name);
	__atomic_store_n(&s->aborted, 0, __ATOMIC_RELAXED);
	/* The API takes char *: hand it a copy it may keep. */
	rc = s->sym->create(s->obj, s->name, &copy);
	return rc ? sq_failed(s, rc, "ClientVirtualDeviceSet::Create", NULL) : 0;
}

static int sq_aborted(const struct sq_set *s, const char *call, const char *dev)
{
	return vdi_fail(VD_E_ABORT, "%s: %s%s%s%s of set '%s' ended: this client signalled abort",
	                s->b->name, call, dev ? " on device '" : "", dev ? dev : "", dev ? "'" : "",
	                s->name);
}

/* A wait of timeout_ms: one call, or 1 s calls for ever (see the top). */
static int sq_get_configuration(void *set, uint32_t timeout_ms, VDConfig *cfg)
{
	struct sq_set *s = set;
	int forever = vdi_timeout_infinite(timeout_ms), rc;

	do {
		if (__atomic_load_n(&s->aborted, __ATOMIC_RELAXED))
			return sq_aborted(s, "ClientVirtualDeviceSet::GetConfiguration", NULL);
		rc = s->sym->get_configuration(
			s->obj, forever ? (time_t)SQ_SLICE_MS : sq_timeout(timeout_ms), cfg);
	} while (forever && rc == VD_E_TIMEOUT);
	return rc ? sq_failed(s, rc, "ClientVirtualDeviceSet::GetConfiguration", NULL) : 0;
}

static int sq_open_device(void *set, const char *name, void **out)
{
	struct sq_set *s = set;
	struct sq_dev *d = calloc(1, sizeof(*d));
	int rc;

	if (!d)
		return vdi_fail(VD_E_MEMORY, "%s: OpenDevice '%s': out of memory", s->b->name,
		                name);
	snprintf(d->name, sizeof(d->name), "%s", name);
	rc = s->sym->open_device(s->obj, d->name, &d->obj);
	if (!rc && !d->obj)
		rc = VD_E_UNEXPECTED;
	if (rc) {
		free(d);
		return vdi_fail(
			rc,
			"%s: ClientVirtualDeviceSet::OpenDevice('%s') of set '%s' returned %s%s",
			s->b->name, name, s->name, vdi_strerror(rc),
			rc == VD_E_UNEXPECTED ? " (success with no device)" : "");
	}
	d->set = s;
	*out = d;
	return 0;
}

static void sq_dev_free(void *dev)
{
	free(dev);
}

static int sq_signal_abort(void *set)
{
	struct sq_set *s = set;
	int rc;

	__atomic_store_n(&s->aborted, 1, __ATOMIC_RELAXED);
	rc = s->sym->signal_abort(s->obj);
	return rc ? sq_failed(s, rc, "ClientVirtualDeviceSet::SignalAbort", NULL) : 0;
}

/* The device objects are the library's: they die with its Close.  Our
 * wrappers of them are freed by backend.c's close, after this. */
static int sq_close(void *set)
{
	struct sq_set *s = set;
	int rc = s->sym->close(s->obj);

	return rc ? sq_failed(s, rc, "ClientVirtualDeviceSet::Close", NULL) : 0;
}

static int sq_get_command(void *dev, uint32_t timeout_ms, VDC_Command **cmd)
{
	struct sq_dev *d = dev;
	struct sq_set *s = d->set;
	int forever = vdi_timeout_infinite(timeout_ms), rc;

	do {
		if (__atomic_load_n(&s->aborted, __ATOMIC_RELAXED))
			return sq_aborted(s, "ClientVirtualDevice::GetCommand", d->name);
		rc = s->sym->get_command(
			d->obj, forever ? (time_t)SQ_SLICE_MS : sq_timeout(timeout_ms), cmd);
	} while (forever && rc == VD_E_TIMEOUT);
	if (rc == VD_E_CLOSE)
		return VD_E_CLOSE; /* the normal end: no message */
	if (!rc && !*cmd)
		return vdi_fail(VD_E_UNEXPECTED,
		                "%s: GetCommand on device '%s' succeeded with no command",
		                s->b->name, d->name);
	return rc ? sq_failed(s, rc, "ClientVirtualDevice::GetCommand", d->name) : 0;
}

static int sq_complete_command(void *dev, VDC_Command *cmd, uint32_t code, uint32_t bytes,
                               uint64_t position)
{
	struct sq_dev *d = dev;
	int rc = d->set->sym->complete_command(d->obj, cmd, (int)code, bytes, (int64_t)position);

	return rc ? sq_failed(d->set, rc, "ClientVirtualDevice::CompleteCommand", d->name) : 0;
}

const struct vdi_backend_ops vdi_sqlvdi_ops = {
	.kind = "sqlvdi",
	.set_new = sq_set_new,
	.set_free = sq_set_free,
	.set_group = NULL, /* the library's modes follow the umask */
	.create = sq_create,
	.get_configuration = sq_get_configuration,
	.open_device = sq_open_device,
	.dev_free = sq_dev_free,
	.signal_abort = sq_signal_abort,
	.close = sq_close,
	.info = NULL,
	.get_command = sq_get_command,
	.complete_command = sq_complete_command,
};
