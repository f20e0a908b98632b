/* SPDX-License-Identifier: MIT */
/*
 * config.c - the configuration of a set, from mount options (defaults)
 * and from the per-set file /.config/<set> (overrides).
 *
 * One parser serves both, so a key means the same thing in
 * `-o devices=4` and in `echo devices=4 > /mnt/vdi/.config/db`:
 *
 *   devices=N            deviceCount, 1..64                    (1)
 *   features=W[+W...]    pipe|tape|disk, removable, discard,
 *                        complete, nocomplete, or a number
 *                        (0x2000)                              (pipe+complete)
 *   volume_size=BYTES    removable media: a backup medium holds that
 *                        many stream bytes (k, m, g: KiB, MiB, GiB);
 *                        0 = one medium                        (0)
 *   open_timeout=MS      open() of a device waits that long for
 *                        the server; "inf" waits forever       (60000)
 *   server_timeout=MS    VDConfig.serverTimeOut, 0 = infinite   (0)
 *   blksize=BYTES        st_blksize before configuration       (1048576)
 *   group=NAME|GID|none  share the set with a group (0660/0770)
 *   instance=NAME        the instance of CreateEx              (default)
 *   sqlvdi[=PATH]        client backend: a library with Microsoft's ABI
 *                        (PATH: /opt/mssql/lib/libsqlvdi.so)
 *   backend=libvdi|sqlvdi the client backend                   (libvdi)
 *   snapshot_cmd=CMD     snapshot backups: /bin/sh -c CMD takes the
 *                        snapshot (in .config: the rest of the line)
 *   snapshot=manual|none snapshot backups answered by `echo snapshot-done
 *                        > .control` (snapshot.c)
 *
 * Features (F35): one device type, pipe (no bit), tape (VDF_LikeTape
 * whole, D50) or disk (VDF_RandomAccess), with removable, discard and
 * the complete bits;
 * what the client stream adapter answers, nothing more.  Two types, or a
 * number with other bits, are refused with the reason.
 *
 * group= and instance= need the libvdi backend (fs_cfg_check): a sqlvdi
 * library decides the modes of its objects from the umask, and SQL
 * Server on Linux has no named instances.
 *
 * VDF_RequestComplete is requested unless "nocomplete" is given, so the
 * server sends VDC_Complete and the backup completes only after the
 * reader took the last byte and closed (issue 4 item 8).
 *
 * Pure: no registry, no lock, no I/O (the files of /.config are the
 * registry's, sets.c); errors come back as -EINVAL with the reason.
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vdifs.h"

void fs_cfg_defaults(struct fs_setcfg *c)
{
	memset(c, 0, sizeof(*c));
	c->devices = 1;
	c->features = VDF_LikePipe | VDF_RequestComplete;
	c->open_timeout_ms = 60000;
	c->server_timeout_ms = 0;
	c->blksize = FS_IO_SIZE;
}

static int parse_u32(const char *s, uint32_t *out)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v > 0xFFFFFFFFull)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static int parse_timeout(const char *s, uint32_t *out)
{
	if (!strcmp(s, "inf") || !strcmp(s, "infinite")) {
		*out = VDI_INFINITE;
		return 0;
	}
	return parse_u32(s, out);
}

/* What a set may offer: only what the stream adapter answers (F31, F35,
 * vdi_cstream_check_features).  The snapshot bits come with a snapshot
 * configuration (snapshot.c), not with features=. */
#define FS_SNAPSHOT_BITS ((uint32_t)(VDF_SnapshotPrepare | VDF_EnumFrozenFiles))

/* A mask a set may offer: 0, or -EINVAL with the reason in err. */
static int features_check(const char *text, uint32_t f, char *err, size_t errlen)
{
	if (f & FS_SNAPSHOT_BITS) {
		snprintf(err, errlen,
		         "option 'features': '%s' is not offered: the snapshot bits 0x%x come "
		         "with snapshot_cmd= or snapshot=manual",
		         text, f & FS_SNAPSHOT_BITS);
		return -EINVAL;
	}
	if (vdi_cstream_check_features(f)) {
		snprintf(err, errlen, "option 'features': '%s' is not offered: %s", text,
		         vdi_last_error());
		return -EINVAL;
	}
	return 0;
}

/* One word of features=: vdi_cstream_feature_word, and nocomplete. */
static int feature_word(const char *w, size_t n, uint32_t *f, const char **mode, int *nocomplete)
{
	uint32_t bits = 0;
	int type;

	if (n == 10 && !strncmp(w, "nocomplete", n)) {
		*nocomplete = 1;
		return 0;
	}
	type = vdi_cstream_feature_word(w, n, &bits);
	if (type < 0)
		return -EINVAL;
	if (type) {
		const char *name = vdi_cstream_device_type(bits);

		if (*mode && strcmp(*mode, name))
			return -EEXIST;
		*mode = name;
	}
	*f |= bits;
	return 0;
}

static int parse_features(const char *s, uint32_t *out, char *err, size_t errlen)
{
	const char *p = s, *mode = NULL;
	uint32_t f = 0;
	int nocomplete = 0;

	if (isdigit((unsigned char)*s)) {
		if (parse_u32(s, &f)) {
			snprintf(err, errlen, "option 'features': bad value '%s'", s);
			return -EINVAL;
		}
		if (features_check(s, f, err, errlen))
			return -EINVAL;
		*out = f;
		return 0;
	}
	while (*p) {
		size_t n = strcspn(p, "+|");
		int rc = n ? feature_word(p, n, &f, &mode, &nocomplete) : -EINVAL;

		if (rc == -EEXIST) {
			snprintf(err, errlen,
			         "option 'features': '%s' names two device types: a device is one "
			         "of pipe, tape or disk",
			         s);
			return -EINVAL;
		}
		if (rc) {
			snprintf(
				err, errlen,
				"option 'features': unknown word '%.*s' in '%s' (pipe, tape, disk, "
				"removable, discard, complete, nocomplete, or a number)",
				(int)n, p, s);
			return -EINVAL;
		}
		p += n;
		if (*p)
			p++;
	}
	*out = nocomplete ? f & ~(uint32_t)VDF_RequestComplete : f | VDF_RequestComplete;
	return 0;
}

/* BYTES with an optional k, m or g (KiB, MiB, GiB). */
static int parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end == 'k' || *end == 'K')
		shift = 10;
	else if (*end == 'm' || *end == 'M')
		shift = 20;
	else if (*end == 'g' || *end == 'G')
		shift = 30;
	if (shift)
		end++;
	if (errno || *end || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_group(const char *s, gid_t *out)
{
	uint32_t v;
	struct group *gr;

	if (!parse_u32(s, &v)) {
		*out = (gid_t)v;
		return 0;
	}
	gr = getgrnam(s);
	if (!gr)
		return -EINVAL;
	*out = gr->gr_gid;
	return 0;
}

static int parse_instance(const char *s, char *out)
{
	size_t i, n = strlen(s);

	if (n > VDI_MAX_INSTANCE)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '$')
			return -EINVAL;
	memcpy(out, s, n + 1);
	return 0;
}

static int apply_value(struct fs_setcfg *c, const char *key, const char *val)
{
	uint32_t v;

	if (!strcmp(key, "devices")) {
		if (parse_u32(val, &v) || v < 1 || v > VDI_MAX_DEVICES)
			return -EINVAL;
		c->devices = v;
	} else if (!strcmp(key, "volume_size")) {
		if (parse_size(val, &c->volume_size) ||
		    (c->volume_size && c->volume_size < VDI_CSTREAM_VOLUME_MIN))
			return -EINVAL;
	} else if (!strcmp(key, "open_timeout")) {
		return parse_timeout(val, &c->open_timeout_ms);
	} else if (!strcmp(key, "server_timeout")) {
		return parse_u32(val, &c->server_timeout_ms);
	} else if (!strcmp(key, "blksize")) {
		/* the kernel reports a power of two: insist on one */
		if (parse_u32(val, &v) || v < 512 || v > VDI_MAX_MAXTRANSFER || (v & (v - 1)))
			return -EINVAL;
		c->blksize = v;
	} else if (!strcmp(key, "group") && !strcmp(val, "none")) {
		c->has_group = 0; /* a set's .config undoes the mount's */
	} else if (!strcmp(key, "group")) {
		if (parse_group(val, &c->group))
			return -EINVAL;
		c->has_group = 1;
	} else if (!strcmp(key, "instance")) {
		return parse_instance(val, c->instance);
	} else if (!strcmp(key, "sqlvdi")) {
		if (strlen(val) >= sizeof(c->sqlvdi_path) || (*val && *val != '/'))
			return -EINVAL; /* absolute: the daemon's cwd is / */
		memcpy(c->sqlvdi_path, val, strlen(val) + 1);
		c->sqlvdi = 1;
	} else if (!strcmp(key, "snapshot_cmd")) {
		if (strlen(val) >= sizeof(c->snapshot_cmd))
			return -EINVAL;
		memcpy(c->snapshot_cmd, val, strlen(val) + 1);
	} else if (!strcmp(key, "snapshot")) {
		if (strcmp(val, "manual") && strcmp(val, "none"))
			return -EINVAL;
		c->snapshot_manual = !strcmp(val, "manual");
	} else if (!strcmp(key, "backend")) {
		if (strcmp(val, "libvdi") && strcmp(val, "sqlvdi"))
			return -EINVAL;
		c->sqlvdi = !strcmp(val, "sqlvdi");
	} else {
		return -ENOENT;
	}
	return 0;
}

int fs_cfg_apply(struct fs_setcfg *c, const char *kv, char *err, size_t errlen)
{
	char key[32];
	const char *eq = strchr(kv, '=');
	size_t n;
	int rc;

	if (!strcmp(kv, "sqlvdi"))
		return apply_value(c, "sqlvdi", "");
	if (!eq || eq == kv || (n = (size_t)(eq - kv)) >= sizeof(key)) {
		snprintf(err, errlen, "'%s': not a key=value option", kv);
		return -ENOENT;
	}
	memcpy(key, kv, n);
	key[n] = '\0';
	if (!strcmp(key, "features"))
		return parse_features(eq + 1, &c->features, err, errlen);
	rc = apply_value(c, key, eq + 1);
	if (rc == -EINVAL && !strcmp(key, "volume_size"))
		snprintf(err, errlen,
		         "option 'volume_size': bad value '%s' (bytes, k/m/g suffix, at least 12; "
		         "0 = one medium)",
		         eq + 1);
	else if (rc == -EINVAL && !strcmp(key, "sqlvdi"))
		snprintf(err, errlen, "option 'sqlvdi': '%s' is not an absolute path of a library",
		         eq + 1);
	else if (rc == -EINVAL && !strcmp(key, "backend"))
		snprintf(err, errlen, "option 'backend': '%s' is neither libvdi nor sqlvdi",
		         eq + 1);
	else if (rc == -EINVAL)
		snprintf(err, errlen, "option '%s': bad value '%s'", key, eq + 1);
	else if (rc == -ENOENT)
		snprintf(err, errlen, "option '%s': unknown", key);
	return rc;
}

int fs_cfg_parse(struct fs_setcfg *c, const char *text, char *err, size_t errlen)
{
	struct fs_setcfg tmp = *c;
	char item[FS_MAX_CONFIG_TEXT];
	const char *p = text;

	while (*p) {
		size_t n;
		int rc;

		if (*p == '#') {
			p += strcspn(p, "\n");
			continue;
		}
		/* a command takes the rest of its line: blanks, commas, '#' */
		n = strncmp(p, "snapshot_cmd=", 13) ? strcspn(p, " \t\r\n,#") : strcspn(p, "\r\n");
		if (!n) {
			p++;
			continue;
		}
		if (n >= sizeof(item)) {
			snprintf(err, errlen, "option too long");
			return -EINVAL;
		}
		memcpy(item, p, n);
		item[n] = '\0';
		rc = fs_cfg_apply(&tmp, item, err, errlen);
		if (rc)
			return -EINVAL;
		p += n;
	}
	if (fs_cfg_check(&tmp, err, errlen))
		return -EINVAL;
	*c = tmp;
	return 0;
}

int fs_cfg_check(const struct fs_setcfg *c, char *err, size_t errlen)
{
	if (c->volume_size && !(c->features & VDF_Removable)) {
		snprintf(err, errlen,
		         "option 'volume_size' needs removable media: features=tape, or "
		         "pipe+removable / disk+removable");
		return -EINVAL;
	}
	if (c->sqlvdi && c->has_group) {
		snprintf(
			err, errlen,
			"option 'group' needs backend=libvdi: a sqlvdi library sets the "
			"modes of its shared objects from the umask (start vdifs with umask 007 by a "
			"member of the group, see vdifs(1))");
		return -EINVAL;
	}
	if (c->sqlvdi && c->instance[0]) {
		snprintf(err, errlen,
		         "option 'instance' needs backend=libvdi: SQL Server on Linux has "
		         "no named instances");
		return -EINVAL;
	}
	return 0;
}

void fs_features_format(uint32_t f, char *buf, size_t len)
{
	const uint32_t snap = FS_SNAPSHOT_BITS;
	const char *type = vdi_cstream_device_type(f);
	int removable;

	if (!type || vdi_cstream_check_features(f)) {
		snprintf(buf, len, "0x%x", f);
		return;
	}
	removable = (f & VDF_Removable) && strcmp(type, "tape");
	snprintf(buf, len, "%s%s%s%s%s", type, removable ? "+removable" : "",
	         (f & VDF_RequestComplete) ? "+complete" : "+nocomplete",
	         (f & VDF_Discard) ? "+discard" : "", (f & snap) ? "+snapshot" : "");
}

void fs_cfg_format(const struct fs_setcfg *c, char *buf, size_t len)
{
	char feat[64], tmo[16], grp[24] = "", vol[40] = "";

	fs_features_format(c->features, feat, sizeof(feat));
	if (c->open_timeout_ms == VDI_INFINITE)
		snprintf(tmo, sizeof(tmo), "inf");
	else
		snprintf(tmo, sizeof(tmo), "%u", c->open_timeout_ms);
	if (c->has_group)
		snprintf(grp, sizeof(grp), " group=%u", (unsigned)c->group);
	if (c->volume_size)
		snprintf(vol, sizeof(vol), " volume_size=%llu", (unsigned long long)c->volume_size);
	snprintf(buf, len,
	         "devices=%u features=%s%s open_timeout=%s server_timeout=%u blksize=%u%s%s%s%s%s",
	         c->devices, feat, vol, tmo, c->server_timeout_ms, c->blksize, grp,
	         c->instance[0] ? " instance=" : "", c->instance, c->sqlvdi ? " sqlvdi=" : "",
	         c->sqlvdi ? (c->sqlvdi_path[0] ? c->sqlvdi_path : VDI_SQLVDI_DEFAULT_PATH) : "");
	if (c->snapshot_manual || c->snapshot_cmd[0]) {
		size_t n = strlen(buf);

		snprintf(buf + n, len - n, "%s%s",
		         c->snapshot_manual ? " snapshot=manual" : " snapshot_cmd=",
		         c->snapshot_manual ? "" : c->snapshot_cmd);
	}
}

/* A set answers the snapshot commands (and offers them) only when one of
 * the two ways of taking a snapshot is configured. */
int fs_snapshot_configured(const struct fs_setcfg *c)
{
	return c->snapshot_manual || c->snapshot_cmd[0];
}
