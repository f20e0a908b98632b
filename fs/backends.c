/* SPDX-License-Identifier: MIT */
/*
 * backends.c - the client library of each set: libvdi's own client half,
 * or a library with Microsoft's ABI loaded with dlopen (vdi.h, "Client
 * backends").  A library is loaded once per path, the first time a
 * configuration names it (the mount's options at start, so that a wrong
 * path refuses the mount; a set's .config at its mkdir), and kept until
 * unmount: sets of any age may use it, and a library is never unloaded
 * under a running thread anyway.
 *
 * The list has its own lock, a leaf: it is taken with fs->lock held
 * (mkdir) and takes nothing itself.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdifs.h"

struct loaded {
	struct loaded *next;
	char path[PATH_MAX];
	struct vdi_backend *b;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct loaded *list; /* lock */

int fs_backend_get(const struct fs_setcfg *c, const struct vdi_backend **out, char *err,
                   size_t errlen)
{
	const char *path = c->sqlvdi_path[0] ? c->sqlvdi_path : VDI_SQLVDI_DEFAULT_PATH;
	struct loaded *l;
	int rc = 0;

	if (!c->sqlvdi) {
		*out = vdi_backend_libvdi();
		return 0;
	}
	pthread_mutex_lock(&lock);
	for (l = list; l && strcmp(l->path, path); l = l->next)
		;
	if (!l) {
		l = calloc(1, sizeof(*l));
		if (!l) {
			snprintf(err, errlen, "sqlvdi library '%s': out of memory", path);
			rc = -ENOMEM;
		} else if (vdi_backend_load(path, &l->b)) {
			snprintf(err, errlen, "%s", vdi_last_error());
			free(l);
			l = NULL;
			rc = -EINVAL;
		} else {
			snprintf(l->path, sizeof(l->path), "%s", path);
			l->next = list;
			list = l;
			fs_log(VDI_LOG_INFO, "client backend %s loaded", vdi_backend_name(l->b));
		}
	}
	if (l)
		*out = l->b;
	pthread_mutex_unlock(&lock);
	return rc;
}

void fs_backends_free(void)
{
	pthread_mutex_lock(&lock);
	while (list) {
		struct loaded *l = list;

		list = l->next;
		vdi_backend_free(l->b);
		free(l);
	}
	pthread_mutex_unlock(&lock);
}
