/* SPDX-License-Identifier: MIT */
/*
 * log.c - the log sink, the per-thread last error, and the names of codes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "internal.h"

static void default_sink(void *ctx, enum vdi_log_level level, const char *msg)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };

	(void)ctx;
	fprintf(stderr, "vdi: %s: %s\n", names[level], msg);
}

static vdi_log_fn log_fn = default_sink;
static void *log_ctx;
static int log_level = -1; /* -1: not yet read from VDI_LOG */

static _Thread_local char last_error[512];

void vdi_log_set_sink(vdi_log_fn fn, void *ctx)
{
	log_fn = fn ? fn : default_sink;
	log_ctx = fn ? ctx : NULL;
}

void vdi_log_set_level(enum vdi_log_level level)
{
	__atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
}

static int current_level(void)
{
	int l = __atomic_load_n(&log_level, __ATOMIC_RELAXED);
	const char *env;

	if (l >= 0)
		return l;
	l = VDI_LOG_ERROR;
	env = getenv("VDI_LOG");
	if (env && !strcasecmp(env, "debug"))
		l = VDI_LOG_DEBUG;
	else if (env && !strcasecmp(env, "info"))
		l = VDI_LOG_INFO;
	else if (env && !strcasecmp(env, "warn"))
		l = VDI_LOG_WARN;
	__atomic_store_n(&log_level, l, __ATOMIC_RELAXED);
	return l;
}

static void vlog(enum vdi_log_level level, const char *fmt, va_list ap)
{
	char msg[512];

	if ((int)level > current_level())
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_fn(log_ctx, level, msg);
}

void vdi_log(enum vdi_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(level, fmt, ap);
	va_end(ap);
}

const char *vdi_last_error(void)
{
	return last_error;
}

void vdi_clear_error(void)
{
	last_error[0] = '\0';
}

char *vdi_escape_text(char *out, size_t len, const char *in)
{
	size_t o = 0;

	if (!len)
		return out;
	for (; in && *in && o + 1 < len; in++) {
		unsigned char ch = (unsigned char)*in;

		if (ch >= 0x20 && ch != 0x7f) {
			out[o++] = (char)ch;
		} else if (o + 4 < len) {
			snprintf(out + o, 5, "\\x%02x", ch);
			o += 4;
		} else {
			break;
		}
	}
	out[o] = '\0';
	return out;
}

int vdi_fail(int rc, const char *fmt, ...)
{
	va_list ap;
	char msg[400], safe[400];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Messages quote names the caller or the peer chose: escaped here,
	 * once, so no reader of vdi_last_error() prints raw control bytes. */
	vdi_escape_text(safe, sizeof(safe), msg);
	snprintf(last_error, sizeof(last_error), "%s (%s)", safe, vdi_strerror(rc));
	vdi_log(VDI_LOG_DEBUG, "%s", last_error);
	return rc;
}

int vdi_fail_errno(int err, const char *fmt, ...)
{
	va_list ap;
	char msg[400];
	int rc;

	switch (err) {
	case ENOMEM:
	case ENOSPC:
	case EFBIG:
	case EMFILE:
	case ENFILE: rc = VD_E_MEMORY; break;
	case EACCES:
	case EPERM: rc = VD_E_SECURITY; break;
	case ENOENT: rc = VD_E_INVALID; break;
	case EEXIST:
	case EBUSY: rc = VD_E_BUSY; break;
	default: rc = VD_E_UNEXPECTED; break;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return vdi_fail(rc, "%s: %s", msg, strerror(err));
}

uint64_t vdi_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *vdi_strerror(int rc)
{
	static _Thread_local char unknown[16];

	switch (rc) {
	case NOERROR: return "NOERROR";
	case VD_E_NOTOPEN: return "VD_E_NOTOPEN";
	case VD_E_TIMEOUT: return "VD_E_TIMEOUT";
	case VD_E_ABORT: return "VD_E_ABORT";
	case VD_E_SECURITY: return "VD_E_SECURITY";
	case VD_E_INVALID: return "VD_E_INVALID";
	case VD_E_INSTANCE_NAME: return "VD_E_INSTANCE_NAME";
	case VD_E_NOTSUPPORTED: return "VD_E_NOTSUPPORTED";
	case VD_E_MEMORY: return "VD_E_MEMORY";
	case VD_E_UNEXPECTED: return "VD_E_UNEXPECTED";
	case VD_E_PROTOCOL: return "VD_E_PROTOCOL";
	case VD_E_OPEN: return "VD_E_OPEN";
	case VD_E_CLOSE: return "VD_E_CLOSE";
	case VD_E_BUSY: return "VD_E_BUSY";
	case VD_E_QUEUE_FULL: return "VD_E_QUEUE_FULL";
	case VD_E_IO_ERROR: return "VD_E_IO_ERROR";
	}
	snprintf(unknown, sizeof(unknown), "0x%08x", (unsigned)rc);
	return unknown;
}

const char *vdi_strcompletion(uint32_t code)
{
	static _Thread_local char unknown[24];

	switch (code) {
	case ERROR_SUCCESS: return "ERROR_SUCCESS";
	case ERROR_INVALID_HANDLE: return "ERROR_INVALID_HANDLE";
	case ERROR_ARENA_TRASHED: return "ERROR_ARENA_TRASHED";
	case ERROR_HANDLE_EOF: return "ERROR_HANDLE_EOF";
	case ERROR_HANDLE_DISK_FULL: return "ERROR_HANDLE_DISK_FULL";
	case ERROR_NOT_SUPPORTED: return "ERROR_NOT_SUPPORTED";
	case ERROR_INVALID_PARAMETER: return "ERROR_INVALID_PARAMETER";
	case ERROR_DISK_FULL: return "ERROR_DISK_FULL";
	case ERROR_OPERATION_ABORTED: return "ERROR_OPERATION_ABORTED";
	case ERROR_END_OF_MEDIA: return "ERROR_END_OF_MEDIA";
	case ERROR_FILEMARK_DETECTED: return "ERROR_FILEMARK_DETECTED";
	case ERROR_NO_DATA_DETECTED: return "ERROR_NO_DATA_DETECTED";
	case ERROR_IO_DEVICE: return "ERROR_IO_DEVICE";
	case ERROR_EOM_OVERFLOW: return "ERROR_EOM_OVERFLOW";
	case ERROR_NO_SYSTEM_RESOURCES: return "ERROR_NO_SYSTEM_RESOURCES";
	case 13: return "ERROR_INVALID_DATA";
	case 234: return "ERROR_MORE_DATA";
	}
	snprintf(unknown, sizeof(unknown), "ERROR_%u", code);
	return unknown;
}

const char *vdi_strcommand(uint32_t code)
{
	static const char *const names[] = {
		NULL,
		"VDC_Read",
		"VDC_Write",
		"VDC_ClearError",
		"VDC_Rewind",
		"VDC_WriteMark",
		"VDC_SkipMarks",
		"VDC_SkipBlocks",
		"VDC_Load",
		"VDC_GetPosition",
		"VDC_SetPosition",
		"VDC_Discard",
		"VDC_Flush",
		"VDC_Snapshot",
		"VDC_MountSnapshot",
		"VDC_PrepareToFreeze",
		"VDC_FileInfoBegin",
		"VDC_FileInfoEnd",
		"VDC_GetError",
		"VDC_Complete",
	};
	static _Thread_local char unknown[24];

	if (code >= VDC_MIN_CODE && code <= VDC_MAX_CODE)
		return names[code];
	snprintf(unknown, sizeof(unknown), "VDC_%u", code);
	return unknown;
}
