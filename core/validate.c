/* SPDX-License-Identifier: MIT */
/*
 * validate.c - the rules for what callers pass in: set and instance
 * names (D27) and the client's configuration (D10, D25).  Used by both
 * halves on their arguments and by the server on the configuration it
 * reads from shared memory, so one rule serves both.  Pure functions.
 */
#include <string.h>

#include "internal.h"
#include "shm.h"
#include "validate.h"

int vdi_check_set_name(const char *name, const char *what)
{
	size_t n;
	const unsigned char *p;

	if (!name)
		return vdi_fail(VD_E_INVALID, "%s name is NULL", what);
	n = strlen(name);
	if (n == 0)
		return vdi_fail(VD_E_INVALID, "%s name is empty", what);
	if (n > VDI_MAX_NAME)
		return vdi_fail(VD_E_INVALID,
		                "%s name '%.40s...' is %zu bytes long; at most %d allowed", what,
		                name, n, VDI_MAX_NAME);
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return vdi_fail(VD_E_INVALID, "%s name '%s' is not allowed", what, name);
	for (p = (const unsigned char *)name; *p; p++) {
		if (*p == '/' || *p == '\\' || *p < 0x20 || *p == 0x7f)
			return vdi_fail(
				VD_E_INVALID,
				"%s name has character 0x%02x at byte %zu; '/', '\\' and control characters are not allowed",
				what, *p, (size_t)(p - (const unsigned char *)name));
	}
	return 0;
}

int vdi_check_instance(const char *instance, const char **canonical)
{
	size_t n;
	const char *p;

	if (!instance || !*instance) {
		*canonical = VDI_DEFAULT_INSTANCE;
		return 0;
	}
	n = strlen(instance);
	if (n > VDI_MAX_INSTANCE)
		return vdi_fail(VD_E_INSTANCE_NAME,
		                "instance name '%.20s' is %zu bytes long; at most %d allowed",
		                instance, n, VDI_MAX_INSTANCE);
	for (p = instance; *p; p++) {
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '$'))
			return vdi_fail(
				VD_E_INSTANCE_NAME,
				"instance name '%s' has character 0x%02x; letters, digits, '_' and '$' are allowed",
				instance, (unsigned char)*p);
	}
	*canonical = instance;
	return 0;
}

static int is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

#define VDF_CLIENT_OPTIONAL                                                        \
	(VDF_Discard | VDF_SnapshotPrepare | VDF_EnumFrozenFiles | VDF_VSSWriter | \
	 VDF_RequestComplete | (uint32_t)VDF_LatchStats)

static int check_features(uint32_t f)
{
	uint32_t mode = f & ~(uint32_t)VDF_CLIENT_OPTIONAL;

	/* tape with or without VDF_ReversePosition: D50 offers it without */
	if (mode == VDF_LikePipe || mode == VDF_Removable ||
	    (mode | VDF_ReversePosition) == VDF_LikeTape || mode == VDF_LikeDisk ||
	    mode == (VDF_LikeDisk | VDF_Removable))
		return 0;
	return vdi_fail(
		VD_E_NOTSUPPORTED,
		"features 0x%08x are not supported: the mode bits 0x%08x must be pipe (0 or 0x1), tape (0x173 or 0x133) or disk (0x200 or 0x201), plus optional 0x%08x",
		f, mode, (uint32_t)VDF_CLIENT_OPTIONAL);
}

int vdi_check_client_config(const VDConfig *cfg)
{
	int rc;

	if (!cfg)
		return vdi_fail(VD_E_INVALID, "configuration is NULL");
	if (cfg->deviceCount < 1 || cfg->deviceCount > VDI_MAX_DEVICES)
		return vdi_fail(VD_E_NOTSUPPORTED, "deviceCount %u is out of range 1..%d",
		                cfg->deviceCount, VDI_MAX_DEVICES);
	rc = check_features(cfg->features);
	if (rc)
		return rc;
	if (cfg->alignment && (!is_pow2(cfg->alignment) || cfg->alignment > VDI_MAX_ALIGNMENT))
		return vdi_fail(VD_E_NOTSUPPORTED,
		                "alignment %u is not 0 or a power of two up to %d", cfg->alignment,
		                VDI_MAX_ALIGNMENT);
	if (cfg->prefixZoneSize > VDI_MAX_PREFIX)
		return vdi_fail(VD_E_NOTSUPPORTED, "prefixZoneSize %u is above the limit %d",
		                cfg->prefixZoneSize, VDI_MAX_PREFIX);
	if (cfg->softFileMarkBlockSize && !(cfg->features & VDF_FileMarks))
		return vdi_fail(VD_E_NOTSUPPORTED,
		                "softFileMarkBlockSize %u needs VDF_FileMarks (0x100) in features",
		                cfg->softFileMarkBlockSize);
	if (cfg->softFileMarkBlockSize % 512)
		return vdi_fail(VD_E_NOTSUPPORTED,
		                "softFileMarkBlockSize %u is not a multiple of 512",
		                cfg->softFileMarkBlockSize);
	return 0;
}
