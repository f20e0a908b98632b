/* SPDX-License-Identifier: MIT */
/*
 * backend_ops.h - private side of the client backend seam (vdi.h, "Client
 * backends"): the operations table each backend implements, and the
 * wrapping of a bare libvdi device for the stream adapter.  Never
 * installed.
 *
 * backend.c owns the public objects (struct vdi_bset, struct vdi_bdev):
 * argument checks, the bookkeeping every backend shares (state, counts,
 * the first abort), and the messages.  A backend only translates calls:
 *
 *   backend.c         struct vdi_bset / vdi_bdev, and the libvdi backend
 *                     (the vdi_client_* calls)
 *   backend_sqlvdi.c  a library with Microsoft's ABI, through dlopen
 *
 * Every operation returns 0 or a negative VD_E_* and, on failure, has
 * left its sentence in vdi_last_error().  Set operations may run on any
 * thread, also at the same time (SignalAbort must be able to wake a
 * thread blocked in GetConfiguration); a device's operations run on one
 * thread at a time.
 */
#ifndef VDI_BACKEND_OPS_H
#define VDI_BACKEND_OPS_H

#include <limits.h>

#include "vdi.h"

struct vdi_backend_ops {
	const char *kind; /* "libvdi", "sqlvdi" */
	int (*set_new)(const struct vdi_backend *b, void **set);
	void (*set_free)(void *set);
	int (*set_group)(void *set, gid_t group);
	int (*create)(void *set, const char *instance, const char *name, const VDConfig *cfg);
	int (*get_configuration)(void *set, uint32_t timeout_ms, VDConfig *cfg);
	int (*open_device)(void *set, const char *name, void **dev);
	/* Frees what open_device allocated (after close; NULL: nothing). */
	void (*dev_free)(void *dev);
	int (*signal_abort)(void *set);
	int (*close)(void *set);
	/* NULL: backend.c answers from its own bookkeeping. */
	int (*info)(void *set, struct vdi_set_info *info);
	int (*get_command)(void *dev, uint32_t timeout_ms, VDC_Command **cmd);
	int (*complete_command)(void *dev, VDC_Command *cmd, uint32_t code, uint32_t bytes,
	                        uint64_t position);
};

struct vdi_backend {
	const struct vdi_backend_ops *ops;
	char name[PATH_MAX + 8]; /* "libvdi" or "sqlvdi:<path>" */
	void *priv;              /* backend's own (sqlvdi: symbols) */
};

/* backend_sqlvdi.c */
extern const struct vdi_backend_ops vdi_sqlvdi_ops;
/* Loads and checks the library; fills b->priv.  0 or VD_E_INVALID. */
int vdi_sqlvdi_load(struct vdi_backend *b, const char *path);
void vdi_sqlvdi_unload(struct vdi_backend *b);

/* A libvdi device the caller opened, seen through the seam (for
 * vdi_cstream_new): the set and the device stay the caller's, and
 * vdi_bdev_unwrap frees only the wrapping. */
int vdi_bdev_wrap(struct vdi_client_device *d, struct vdi_bdev **out);
void vdi_bdev_unwrap(struct vdi_bdev *d);

#endif /* VDI_BACKEND_OPS_H */
