/* SPDX-License-Identifier: MIT */
/*
 * validate.h - the rules for names and the client's configuration
 * (validate.c).  Private to libvdi.  Each returns 0 or a VD_E_* code with
 * vdi_last_error() saying what was wrong and what is allowed.
 */
#ifndef VDI_VALIDATE_H
#define VDI_VALIDATE_H

#include "vdi.h"

/* A set or device name (D27, vdi.h); what: "set" or "device". */
int vdi_check_set_name(const char *name, const char *what);
/* An instance name; NULL or "" is the default instance.  *canonical
 * receives the name to use (borrowed: instance or a constant). */
int vdi_check_instance(const char *instance, const char **canonical);
/* The client's inputs of a VDConfig (D10, D25): VD_E_NOTSUPPORTED, or
 * VD_E_INVALID for NULL. */
int vdi_check_client_config(const VDConfig *cfg);

#endif /* VDI_VALIDATE_H */
