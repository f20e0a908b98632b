/* SPDX-License-Identifier: MIT */
/*
 * internal.h - private helpers shared by the modules of libvdi: the error
 * convention, logging, time.  Never installed.
 *
 * Error convention (STYLE.md rule 4): every failing path returns
 *
 *	return vdi_fail(VD_E_xxx, "set '%s': device '%s': %s", ...);
 *
 * which records the sentence as the thread's vdi_last_error(), logs it at
 * debug level, and returns the code.  OS failures go through
 * vdi_fail_errno(), the one place where errno becomes a VD_E_* code.
 */
#ifndef VDI_INTERNAL_H
#define VDI_INTERNAL_H

#include <stdint.h>
#include "vdi.h"

#define VDI_PRINTF(a, b) __attribute__((format(printf, a, b)))

int vdi_fail(int rc, const char *fmt, ...) VDI_PRINTF(2, 3);
/* Maps err (an errno value) to a VD_E_* code, records "<msg>: <strerror>"
 * and returns the code.  ENOMEM/ENOSPC -> VD_E_MEMORY, EACCES/EPERM ->
 * VD_E_SECURITY, ENOENT -> VD_E_INVALID, EEXIST/EBUSY -> VD_E_BUSY, others
 * -> VD_E_UNEXPECTED. */
int vdi_fail_errno(int err, const char *fmt, ...) VDI_PRINTF(2, 3);
void vdi_log(enum vdi_log_level level, const char *fmt, ...) VDI_PRINTF(2, 3);
/* Clears the thread's last error (called on entry of public calls that
 * want a fresh message). */
void vdi_clear_error(void);

/* Monotonic clock in milliseconds. */
uint64_t vdi_now_ms(void);
/* Timeout conventions (D13): returns 1 if timeout_ms means "forever". */
static inline int vdi_timeout_infinite(uint32_t timeout_ms)
{
	return (timeout_ms & 0x80000000u) != 0;
}

/* ---------------------------------------------------------------------
 * What the two halves offer the modules above them, beyond vdi.h.
 */
struct vdi_client;
struct vdi_server;
struct vdi_region;
/* Devices the server has opened so far (server.c; takes its lock, so
 * never call it with that lock held). */
uint32_t vdi_server_devices_opened(struct vdi_server *s);
/* The region of the set a client object has open, NULL if none
 * (client.c, for info.c).  Borrowed: valid until vdi_client_close. */
struct vdi_region *vdi_client_region(struct vdi_client *c);

#define VDI_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The start of every public call on an object: no error left from an
 * earlier call, and a NULL object refused with VD_E_INVALID ("server
 * object is NULL").  Returns from the calling function. */
#define VDI_ENTER(obj, what)                                                   \
	do {                                                                   \
		vdi_clear_error();                                             \
		if (!(obj))                                                    \
			return vdi_fail(VD_E_INVALID, what " object is NULL"); \
	} while (0)

#endif /* VDI_INTERNAL_H */
