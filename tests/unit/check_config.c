/* SPDX-License-Identifier: MIT */
/*
 * check_config.c - configuration validation, both halves, table-driven.
 *
 *   client  CreateEx: every VDConfig field at and past its limits, the
 *           feature modes of D25 (and all 32 bits alone, with tape and
 *           with disk, against a model of D25), prefix and alignment
 *           limits (D10), softFileMarkBlockSize; set names, instance
 *           names (D27), busy and stale names (D16, D26).
 *   server  BeginConfiguration (D1, D18, D25), RequestBuffers,
 *           AllocateBuffer, FreeBuffer, QueryAvailableBuffers,
 *           IsSharedBuffer argument checks; prefix zone placement and
 *           alignment of the returned buffers (D10, D24); the final
 *           configuration both sides read (D9, D18, maxIODepth 4).
 *   both    NULL handles and out-pointers; access modes of the shared
 *           objects (0600, or 0660 + group with vdi_client_set_group).
 *
 * Every row runs in its own forked child with a fresh set name; the
 * teardown removes whatever the child left in /dev/shm.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define WAIT_MS 2000u
#define NS      VD_E_NOTSUPPORTED
#define INV     VD_E_INVALID

static struct tl_pair P;
static struct vdi_client *C;

static void teardown(void)
{
	tl_pair_destroy(&P);
	if (C) {
		vdi_client_free(C);
		C = NULL;
	}
	tl_shm_cleanup();
	tl_shm_cleanup_instance(tl_instance());
}

/* Creates a client with cfg under a fresh name, then closes it; returns
 * Create's code.  A successful Create must leave the set in /dev/shm and
 * its Close must remove it. */
static int try_create(const char *instance, const char *name, const VDConfig *cfg)
{
	int rc;

	ck_assert_int_eq(vdi_client_new(&C), 0);
	rc = vdi_client_create_ex(C, instance, name, cfg);
	if (rc == 0) {
		const char *in = instance && *instance ? instance : NULL;

		ck_assert_msg(name && tl_shm_count_set_in(in, name) > 0,
		              "Create succeeded but /dev/shm holds no set '%s'",
		              name ? name : "(null)");
		ck_assert_int_eq(vdi_client_close(C), 0);
		ck_assert_int_eq(tl_shm_count_set_in(in, name), 0);
	} else {
		/* A refused Create leaves the object usable (DNE). */
		VDConfig c2;
		ck_assert_int_eq(vdi_client_get_configuration(C, 0, &c2), VD_E_PROTOCOL);
	}
	vdi_client_free(C);
	C = NULL;
	return rc;
}

/* ---------------------------------------------------------------------
 * Client VDConfig (D10, D25).
 */
struct cfg_row {
	const char *what;
	VDConfig cfg;
	int rc;
};

#define CFG(...) ((VDConfig){ __VA_ARGS__ })

static const struct cfg_row cfg_rows[] = {
	/* deviceCount 1..64 */
	{ "deviceCount 0", CFG(.deviceCount = 0), NS },
	{ "deviceCount 1", CFG(.deviceCount = 1), NOERROR },
	{ "deviceCount 2", CFG(.deviceCount = 2), NOERROR },
	{ "deviceCount 64", CFG(.deviceCount = 64), NOERROR },
	{ "deviceCount 65", CFG(.deviceCount = 65), NS },
	{ "deviceCount 0xFFFFFFFF", CFG(.deviceCount = 0xFFFFFFFFu), NS },
	/* Modes: pipe, tape, disk (D25). */
	{ "pipe", CFG(.deviceCount = 1, .features = VDF_LikePipe), NOERROR },
	{ "pipe removable", CFG(.deviceCount = 1, .features = VDF_Removable), NOERROR },
	{ "tape", CFG(.deviceCount = 1, .features = VDF_LikeTape), NOERROR },
	{ "tape without ReversePosition (D50: only the whole mask)",
	  CFG(.deviceCount = 1, .features = VDF_LikeTape & ~VDF_ReversePosition), NS },
	{ "disk", CFG(.deviceCount = 1, .features = VDF_LikeDisk), NOERROR },
	{ "disk removable", CFG(.deviceCount = 1, .features = VDF_LikeDisk | VDF_Removable),
	  NOERROR },
	/* Partial tapes and mixtures. */
	{ "FileMarks alone", CFG(.deviceCount = 1, .features = VDF_FileMarks), NS },
	{ "Rewind alone", CFG(.deviceCount = 1, .features = VDF_Rewind), NS },
	{ "Position alone", CFG(.deviceCount = 1, .features = VDF_Position), NS },
	{ "SkipBlocks alone", CFG(.deviceCount = 1, .features = VDF_SkipBlocks), NS },
	{ "ReversePosition alone", CFG(.deviceCount = 1, .features = VDF_ReversePosition), NS },
	{ "tape without Removable",
	  CFG(.deviceCount = 1, .features = VDF_LikeTape & ~VDF_Removable), NS },
	{ "tape without FileMarks",
	  CFG(.deviceCount = 1, .features = VDF_LikeTape & ~VDF_FileMarks), NS },
	{ "tape + disk", CFG(.deviceCount = 1, .features = VDF_LikeTape | VDF_RandomAccess), NS },
	{ "disk + Position", CFG(.deviceCount = 1, .features = VDF_LikeDisk | VDF_Position), NS },
	{ "pipe + Rewind + Removable",
	  CFG(.deviceCount = 1, .features = VDF_Rewind | VDF_Removable), NS },
	/* Extras allowed with every mode. */
	{ "pipe + Discard", CFG(.deviceCount = 1, .features = VDF_Discard), NOERROR },
	{ "tape + Discard", CFG(.deviceCount = 1, .features = VDF_LikeTape | VDF_Discard),
	  NOERROR },
	{ "disk + Discard", CFG(.deviceCount = 1, .features = VDF_LikeDisk | VDF_Discard),
	  NOERROR },
	{ "pipe + SnapshotPrepare", CFG(.deviceCount = 1, .features = VDF_SnapshotPrepare),
	  NOERROR },
	{ "tape + SnapshotPrepare",
	  CFG(.deviceCount = 1, .features = VDF_LikeTape | VDF_SnapshotPrepare), NOERROR },
	{ "disk + SnapshotPrepare",
	  CFG(.deviceCount = 1, .features = VDF_LikeDisk | VDF_SnapshotPrepare), NOERROR },
	{ "pipe + EnumFrozenFiles", CFG(.deviceCount = 1, .features = VDF_EnumFrozenFiles),
	  NOERROR },
	{ "disk + EnumFrozenFiles",
	  CFG(.deviceCount = 1, .features = VDF_LikeDisk | VDF_EnumFrozenFiles), NOERROR },
	{ "pipe + VSSWriter", CFG(.deviceCount = 1, .features = VDF_VSSWriter), NOERROR },
	{ "tape + VSSWriter", CFG(.deviceCount = 1, .features = VDF_LikeTape | VDF_VSSWriter),
	  NOERROR },
	{ "pipe + RequestComplete", CFG(.deviceCount = 1, .features = VDF_RequestComplete),
	  NOERROR },
	{ "tape + RequestComplete",
	  CFG(.deviceCount = 1, .features = VDF_LikeTape | VDF_RequestComplete), NOERROR },
	{ "disk + RequestComplete",
	  CFG(.deviceCount = 1, .features = VDF_LikeDisk | VDF_RequestComplete), NOERROR },
	{ "pipe + LatchStats", CFG(.deviceCount = 1, .features = (uint32_t)VDF_LatchStats),
	  NOERROR },
	{ "disk removable + every extra",
	  CFG(.deviceCount = 1, .features = VDF_LikeDisk | VDF_Removable | VDF_Discard |
	                                    VDF_SnapshotPrepare | VDF_EnumFrozenFiles |
	                                    VDF_VSSWriter | VDF_RequestComplete |
	                                    (uint32_t)VDF_LatchStats),
	  NOERROR },
	/* Server bits and unknown bits are refused. */
	{ "WriteMedia", CFG(.deviceCount = 1, .features = VDF_WriteMedia), NS },
	{ "ReadMedia", CFG(.deviceCount = 1, .features = VDF_ReadMedia), NS },
	{ "CompleteEnabled",
	  CFG(.deviceCount = 1, .features = VDF_RequestComplete | VDF_CompleteEnabled), NS },
	{ "unknown 0x4", CFG(.deviceCount = 1, .features = 0x4), NS },
	{ "unknown 0x8", CFG(.deviceCount = 1, .features = 0x8), NS },
	{ "unknown 0x4000", CFG(.deviceCount = 1, .features = 0x4000), NS },
	{ "unknown 0x80000", CFG(.deviceCount = 1, .features = 0x80000), NS },
	{ "unknown 0x40000000", CFG(.deviceCount = 1, .features = 0x40000000), NS },
	/* prefixZoneSize <= 65536 (D10). */
	{ "prefix 0", CFG(.deviceCount = 1, .prefixZoneSize = 0), NOERROR },
	{ "prefix 1", CFG(.deviceCount = 1, .prefixZoneSize = 1), NOERROR },
	{ "prefix 512", CFG(.deviceCount = 1, .prefixZoneSize = 512), NOERROR },
	{ "prefix 65536", CFG(.deviceCount = 1, .prefixZoneSize = 65536), NOERROR },
	{ "prefix 65537", CFG(.deviceCount = 1, .prefixZoneSize = 65537), NS },
	{ "prefix 0xFFFFFFFF", CFG(.deviceCount = 1, .prefixZoneSize = 0xFFFFFFFFu), NS },
	/* alignment 0 or a power of two <= 65536 (D10). */
	{ "alignment 0", CFG(.deviceCount = 1, .alignment = 0), NOERROR },
	{ "alignment 1", CFG(.deviceCount = 1, .alignment = 1), NOERROR },
	{ "alignment 512", CFG(.deviceCount = 1, .alignment = 512), NOERROR },
	{ "alignment 4096", CFG(.deviceCount = 1, .alignment = 4096), NOERROR },
	{ "alignment 65536", CFG(.deviceCount = 1, .alignment = 65536), NOERROR },
	{ "alignment 3", CFG(.deviceCount = 1, .alignment = 3), NS },
	{ "alignment 1000", CFG(.deviceCount = 1, .alignment = 1000), NS },
	{ "alignment 4097", CFG(.deviceCount = 1, .alignment = 4097), NS },
	{ "alignment 131072", CFG(.deviceCount = 1, .alignment = 131072), NS },
	{ "alignment 0x80000000", CFG(.deviceCount = 1, .alignment = 0x80000000u), NS },
	/* softFileMarkBlockSize: only with FileMarks; 0 or a 512 multiple. */
	{ "softFM 512 without FileMarks", CFG(.deviceCount = 1, .softFileMarkBlockSize = 512), NS },
	{ "softFM 512 disk",
	  CFG(.deviceCount = 1, .features = VDF_LikeDisk, .softFileMarkBlockSize = 512), NS },
	{ "softFM 0 tape",
	  CFG(.deviceCount = 1, .features = VDF_LikeTape, .softFileMarkBlockSize = 0), NOERROR },
	{ "softFM 512 tape",
	  CFG(.deviceCount = 1, .features = VDF_LikeTape, .softFileMarkBlockSize = 512), NOERROR },
	{ "softFM 65536 tape",
	  CFG(.deviceCount = 1, .features = VDF_LikeTape, .softFileMarkBlockSize = 65536),
	  NOERROR },
	{ "softFM 100 tape",
	  CFG(.deviceCount = 1, .features = VDF_LikeTape, .softFileMarkBlockSize = 100), NS },
	{ "softFM 513 tape",
	  CFG(.deviceCount = 1, .features = VDF_LikeTape, .softFileMarkBlockSize = 513), NS },
	/* Fields without limits, and server fields, are accepted (D25). */
	{ "EOMWarningSize", CFG(.deviceCount = 1, .EOMWarningSize = 0xFFFFFFFFu), NOERROR },
	{ "serverTimeOut", CFG(.deviceCount = 1, .serverTimeOut = 1), NOERROR },
	{ "server fields ignored",
	  CFG(.deviceCount = 1, .blockSize = 7, .maxIODepth = 99, .maxTransferSize = 3,
	      .bufferAreaSize = 1),
	  NOERROR },
};

START_TEST(client_config_row)
{
	const struct cfg_row *r = &cfg_rows[_i];
	char name[TL_NAME_MAX];
	int rc = try_create(NULL, tl_name(name), &r->cfg);

	ck_assert_msg(rc == r->rc, "CreateEx(%s) = %s, want %s (%s)", r->what, vdi_strerror(rc),
	              vdi_strerror(r->rc), vdi_last_error());
}
END_TEST

/* Every one of the 32 feature bits, alone and on top of tape and disk,
 * against a model of D25 written from the decision's text: one mode
 * (pipe: 0 or Removable; tape: exactly VDF_LikeTape; disk: RandomAccess,
 * optionally Removable) plus any of the extras; nothing else. */
static int d25_accepts(uint32_t f)
{
	const uint32_t tape = VDF_LikeTape;
	const uint32_t extras = VDF_Discard | VDF_SnapshotPrepare | VDF_EnumFrozenFiles |
	                        VDF_VSSWriter | VDF_RequestComplete | (uint32_t)VDF_LatchStats;
	uint32_t mode = f & (tape | VDF_RandomAccess);

	if (f & ~(tape | VDF_RandomAccess | extras))
		return 0;
	return mode == 0 || mode == VDF_Removable || mode == tape || mode == VDF_RandomAccess ||
	       mode == (VDF_RandomAccess | VDF_Removable);
}

START_TEST(feature_bit_matrix)
{
	static const uint32_t base[] = { VDF_LikePipe, VDF_LikeTape, VDF_LikeDisk };
	static const char *const base_name[] = { "pipe", "tape", "disk" };
	uint32_t f = base[_i / 32] | (1u << (_i % 32));
	VDConfig cfg = { .deviceCount = 1, .features = f };
	char name[TL_NAME_MAX];
	int want = d25_accepts(f) ? NOERROR : NS;
	int rc = try_create(NULL, tl_name(name), &cfg);

	ck_assert_msg(rc == want, "CreateEx(%s | bit %d = 0x%x) = %s, want %s (%s)",
	              base_name[_i / 32], _i % 32, f, vdi_strerror(rc), vdi_strerror(want),
	              vdi_last_error());
}
END_TEST

/* Create (no instance) validates the same way. */
START_TEST(client_create_plain)
{
	char name[TL_NAME_MAX];
	VDConfig bad = { .deviceCount = 65 };
	VDConfig good = { .deviceCount = 3, .features = VDF_LikeTape };

	ck_assert_int_eq(vdi_client_new(&C), 0);
	TL_RC(vdi_client_create(C, tl_name(name), &bad), NS);
	TL_OK(vdi_client_create(C, name, &good));
	TL_OK(vdi_client_close(C));
	/* Reusable after Close (spec 2.5). */
	TL_OK(vdi_client_create(C, name, &good));
	TL_RC(vdi_client_create(C, name, &good), VD_E_PROTOCOL);
	TL_OK(vdi_client_close(C));
	TL_RC(vdi_client_create(C, name, NULL), INV);
	ck_assert_int_eq(tl_shm_count_set(name), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Names.
 */
struct name_row {
	const char *what;
	const char *name; /* NULL = build in name_for() */
	int rc;
};

static char long127[VDI_MAX_NAME + 1];
static char long128[VDI_MAX_NAME + 2];

static const struct name_row name_rows[] = {
	{ "NULL", NULL, INV },
	{ "empty", "", INV },
	{ "127 bytes", long127, NOERROR },
	{ "128 bytes", long128, INV },
	{ "slash", "a/b", INV },
	{ "leading slash", "/ab", INV },
	{ "backslash", "a\\b", INV },
	{ "newline", "a\nb", INV },
	{ "tab", "a\tb", INV },
	{ "control 0x01", "a\x01", INV },
	{ "escape", "\x1b[0m", INV },
	{ "DEL", "a\x7f", INV },
	{ "dot", ".", INV },
	{ "dotdot", "..", INV },
	{ "GUID", "{0D0F5BA0-B21A-4519-A961-A6E2292A17CA}", NOERROR },
	{ "plain GUID", "0d0f5ba0-b21a-4519-a961-a6e2292a17ca", NOERROR },
	{ "three dots", "...", NOERROR },
	{ "dot prefix", ".hidden", NOERROR },
	{ "spaces", "my db backup", NOERROR },
	{ "punctuation", "db_1.full+log@2026=x", NOERROR },
	{ "UTF-8", "sauvegarde-\xc3\xa9t\xc3\xa9", NOERROR },
};

static void fill_long_names(void)
{
	/* Unique per process so concurrent runs never collide; the tag
	 * keeps teardown able to find them. */
	char name[TL_NAME_MAX];
	size_t n = strlen(tl_name(name));

	memset(long127, 'x', VDI_MAX_NAME);
	long127[VDI_MAX_NAME] = '\0';
	memcpy(long127, name, n);
	memset(long128, 'y', VDI_MAX_NAME + 1);
	long128[VDI_MAX_NAME + 1] = '\0';
	memcpy(long128, name, n);
}

START_TEST(client_name_row)
{
	const struct name_row *r = &name_rows[_i];
	VDConfig cfg = { .deviceCount = 1 };
	int rc;

	fill_long_names();
	ck_assert_uint_eq(strlen(long127), 127);
	ck_assert_uint_eq(strlen(long128), 128);
	/* Fixed names live in this process's own instance, so concurrent
	 * runs never collide. */
	rc = try_create(tl_instance(), r->name, &cfg);
	ck_assert_msg(rc == r->rc, "CreateEx(name %s) = %s, want %s (%s)", r->what,
	              vdi_strerror(rc), vdi_strerror(r->rc), vdi_last_error());
}
END_TEST

/* The names that are accepted work end to end: a server opens them and
 * the first device carries the set's name. */
START_TEST(guid_name_end_to_end)
{
	const char *guid = "{0D0F5BA0-B21A-4519-A961-A6E2292A17CA}";
	struct vdi_server *s = NULL;
	struct vdi_server_device *sd = NULL;
	struct vdi_client_device *cd = NULL;
	VDConfig cfg = { .deviceCount = 1 };
	VDConfig out;

	/* The GUID name is fixed: it lives in this process's own instance
	 * (teardown removes that instance). */
	const char *inst = tl_instance();

	ck_assert_int_eq(vdi_client_new(&C), 0);
	ck_assert_int_eq(vdi_server_new(&s), 0);
	TL_OK(vdi_client_create_ex(C, inst, guid, &cfg));
	ck_assert_int_gt(tl_shm_count_set_in(inst, guid), 0);
	TL_OK(vdi_server_open(s, inst, guid));
	TL_OK(vdi_server_begin_configuration(s, VDF_ReadMedia, 0, 0, 0, 0));
	TL_OK(vdi_server_request_buffers(s, 65536, 0, 1));
	TL_OK(vdi_server_end_configuration(s));
	TL_OK(vdi_client_get_configuration(C, WAIT_MS, &out));
	ck_assert_uint_eq(out.features, VDF_ReadMedia);
	TL_OK(vdi_server_open_device(s, NULL, &sd));
	ck_assert_str_eq(vdi_server_device_name(sd), guid);
	TL_OK(vdi_client_open_device(C, guid, &cd));
	ck_assert_str_eq(vdi_client_device_name(cd), guid);
	TL_RC(vdi_server_close(s), VD_E_PROTOCOL); /* device open: D4 */
	vdi_server_free(s);
	vdi_client_close(C);
	ck_assert_int_eq(tl_shm_count_set_in(inst, guid), 0);
}
END_TEST

/* D16: a live set's name is busy; after Close it is free again. */
START_TEST(name_busy)
{
	struct vdi_client *c2 = NULL;
	char name[TL_NAME_MAX];
	VDConfig cfg = { .deviceCount = 1 };

	ck_assert_int_eq(vdi_client_new(&C), 0);
	ck_assert_int_eq(vdi_client_new(&c2), 0);
	TL_OK(vdi_client_create(C, tl_name(name), &cfg));
	TL_RC(vdi_client_create(c2, name, &cfg), VD_E_BUSY);
	TL_OK(vdi_client_close(C));
	TL_OK(vdi_client_create(c2, name, &cfg));
	TL_OK(vdi_client_close(c2));
	vdi_client_free(c2);
}
END_TEST

/* D16, D26: a set whose creator died without Close is stale: a server
 * Open of it is refused, and a new Create of the name reclaims it. */
START_TEST(stale_set_reclaimed)
{
	char name[TL_NAME_MAX];
	VDConfig cfg = { .deviceCount = 1 };
	struct vdi_server *s = NULL;
	int status = 0;
	pid_t pid;

	tl_name(name);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct vdi_client *c = NULL;

		if (vdi_client_new(&c) != 0 || vdi_client_create(c, name, &cfg) != 0)
			_exit(1);
		_exit(0); /* dies holding the set */
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	              "child could not create the set");
	ck_assert_int_gt(tl_shm_count_set(name), 0);
	ck_assert_int_eq(vdi_server_new(&s), 0);
	TL_RC(vdi_server_open(s, NULL, name), INV);
	vdi_server_free(s);
	ck_assert_int_eq(vdi_client_new(&C), 0);
	TL_OK(vdi_client_create(C, name, &cfg));
	TL_OK(vdi_client_close(C));
	ck_assert_int_eq(tl_shm_count_set(name), 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Instance names (header, D27).
 */
struct inst_row {
	const char *what;
	const char *instance;
	int rc;
};

static const struct inst_row inst_rows[] = {
	{ "NULL", NULL, NOERROR },
	{ "empty", "", NOERROR },
	{ "SQL2019", "SQL2019", NOERROR },
	{ "underscore dollar", "A_b$9", NOERROR },
	{ "16 bytes", "ABCDEFGHIJKLMNOP", NOERROR },
	{ "17 bytes", "ABCDEFGHIJKLMNOPQ", VD_E_INSTANCE_NAME },
	{ "dash", "a-b", VD_E_INSTANCE_NAME },
	{ "dot", "a.b", VD_E_INSTANCE_NAME },
	{ "slash", "a/b", VD_E_INSTANCE_NAME },
	{ "backslash (machine\\instance)", "HOST\\SQL", VD_E_INSTANCE_NAME },
	{ "space", "a b", VD_E_INSTANCE_NAME },
	{ "control", "a\x01", VD_E_INSTANCE_NAME },
};

START_TEST(client_instance_row)
{
	const struct inst_row *r = &inst_rows[_i];
	VDConfig cfg = { .deviceCount = 1 };
	char name[TL_NAME_MAX];
	int rc = try_create(r->instance, tl_name(name), &cfg);

	ck_assert_msg(rc == r->rc, "CreateEx(instance %s) = %s, want %s (%s)", r->what,
	              vdi_strerror(rc), vdi_strerror(r->rc), vdi_last_error());
}
END_TEST

/* Instances are separate namespaces: the same set name twice, and a
 * server only finds the set in the right instance. */
START_TEST(instances_are_namespaces)
{
	struct vdi_client *c2 = NULL;
	struct vdi_server *s = NULL;
	char name[TL_NAME_MAX];
	VDConfig cfg = { .deviceCount = 1 };

	ck_assert_int_eq(vdi_client_new(&C), 0);
	ck_assert_int_eq(vdi_client_new(&c2), 0);
	ck_assert_int_eq(vdi_server_new(&s), 0);
	TL_OK(vdi_client_create_ex(C, "INSTA", tl_name(name), &cfg));
	TL_OK(vdi_client_create_ex(c2, "INSTB", name, &cfg));
	TL_RC(vdi_server_open(s, NULL, name), INV);
	TL_RC(vdi_server_open(s, "INSTC", name), INV);
	TL_RC(vdi_server_open(s, "bad-inst", name), VD_E_INSTANCE_NAME);
	TL_OK(vdi_server_open(s, "INSTB", name));
	TL_OK(vdi_server_close(s));
	vdi_server_free(s);
	TL_OK(vdi_client_close(c2));
	vdi_client_free(c2);
	TL_OK(vdi_client_close(C));
}
END_TEST

/* Server Open argument checks. */
START_TEST(server_open_args)
{
	struct vdi_server *s = NULL;
	char name[TL_NAME_MAX];

	ck_assert_int_eq(vdi_server_new(&s), 0);
	TL_RC(vdi_server_open(s, NULL, NULL), INV);
	TL_RC(vdi_server_open(s, NULL, ""), INV);
	TL_RC(vdi_server_open(s, NULL, "a/b"), INV);
	/* No set of that name: VD_E_INVALID at once (spec 7.3). */
	uint64_t t0 = tl_now_ms();
	TL_RC(vdi_server_open(s, NULL, tl_name(name)), INV);
	ck_assert_uint_lt(tl_now_ms() - t0, 500);
	/* open_wait gives up after about the time; the header does not say
	 * with which code: no set (INVALID) or the wait (TIMEOUT). */
	t0 = tl_now_ms();
	int rc = vdi_server_open_wait(s, NULL, name, 150);
	ck_assert_msg(rc == INV || rc == VD_E_TIMEOUT, "open_wait = %s", vdi_strerror(rc));
	ck_assert_uint_ge(tl_now_ms() - t0, 140);
	ck_assert_uint_lt(tl_now_ms() - t0, 2000);
	vdi_server_free(s);
}
END_TEST

/* ---------------------------------------------------------------------
 * BeginConfiguration (D1, D18, D25).
 */
struct begin_row {
	const char *what;
	uint32_t client_features;
	uint32_t features, block, align, mts;
	int rc;
	uint32_t want_block, want_mts; /* final values when rc == 0 */
};

#define WM VDF_WriteMedia
#define RM VDF_ReadMedia

static const struct begin_row begin_rows[] = {
	/* blockSize: power of two 512..65536, 0 = 512 */
	{ "block 0", 0, WM, 0, 0, 65536, NOERROR, 512, 65536 },
	{ "block 512", 0, WM, 512, 0, 65536, NOERROR, 512, 65536 },
	{ "block 1024", 0, WM, 1024, 0, 65536, NOERROR, 1024, 65536 },
	{ "block 4096", 0, WM, 4096, 0, 65536, NOERROR, 4096, 65536 },
	{ "block 65536", 0, WM, 65536, 0, 65536, NOERROR, 65536, 65536 },
	{ "block 1", 0, WM, 1, 0, 65536, INV, 0, 0 },
	{ "block 256", 0, WM, 256, 0, 65536, INV, 0, 0 },
	{ "block 513", 0, WM, 513, 0, 65536, INV, 0, 0 },
	{ "block 1000", 0, WM, 1000, 0, 65536, INV, 0, 0 },
	{ "block 3072", 0, WM, 3072, 0, 65536, INV, 0, 0 },
	{ "block 131072", 0, WM, 131072, 0, 4194304, INV, 0, 0 },
	{ "block 0x80000000", 0, WM, 0x80000000u, 0, 65536, INV, 0, 0 },
	/* maxTransferSize: multiple of 65536, 65536..4194304, 0 = 65536 */
	{ "mts 0", 0, WM, 512, 0, 0, NOERROR, 512, 65536 },
	{ "mts 131072", 0, WM, 512, 0, 131072, NOERROR, 512, 131072 },
	{ "mts 1 MiB", 0, WM, 512, 0, 1048576, NOERROR, 512, 1048576 },
	{ "mts 4 MiB", 0, WM, 512, 0, 4194304, NOERROR, 512, 4194304 },
	{ "mts 3 x 64 KiB", 0, WM, 512, 0, 196608, NOERROR, 512, 196608 },
	{ "mts 512", 0, WM, 512, 0, 512, INV, 0, 0 },
	{ "mts 65535", 0, WM, 512, 0, 65535, INV, 0, 0 },
	{ "mts 65537", 0, WM, 512, 0, 65537, INV, 0, 0 },
	{ "mts 100000", 0, WM, 512, 0, 100000, INV, 0, 0 },
	{ "mts 4 MiB + 1", 0, WM, 512, 0, 4194305, INV, 0, 0 },
	{ "mts 4 MiB + 64 KiB", 0, WM, 512, 0, 4259840, INV, 0, 0 },
	{ "mts 0xFFFF0000", 0, WM, 512, 0, 0xFFFF0000u, INV, 0, 0 },
	/* alignment: 0 = blockSize; power of two >= blockSize <= 65536 */
	{ "align = block", 0, WM, 4096, 4096, 65536, NOERROR, 4096, 65536 },
	{ "align 65536", 0, WM, 512, 65536, 65536, NOERROR, 512, 65536 },
	{ "align 8192 block 1024", 0, WM, 1024, 8192, 65536, NOERROR, 1024, 65536 },
	{ "align < block (doc order, D1)", 0, WM, 4096, 512, 65536, INV, 0, 0 },
	{ "align 768", 0, WM, 512, 768, 65536, INV, 0, 0 },
	{ "align 131072", 0, WM, 512, 131072, 65536, INV, 0, 0 },
	{ "align 3", 0, WM, 512, 3, 65536, INV, 0, 0 },
	/* features (D18) */
	{ "ReadMedia", 0, RM, 512, 0, 65536, NOERROR, 512, 65536 },
	{ "no direction", 0, 0, 512, 0, 65536, INV, 0, 0 },
	{ "both directions (spec 4: and/or)", 0, WM | RM, 512, 0, 65536, NOERROR, 512, 65536 },
	{ "CompleteEnabled not requested", 0, WM | VDF_CompleteEnabled, 512, 0, 65536, INV, 0, 0 },
	{ "CompleteEnabled requested", VDF_RequestComplete, WM | VDF_CompleteEnabled, 512, 0, 65536,
	  NOERROR, 512, 65536 },
	{ "RequestComplete not honoured", VDF_RequestComplete, WM, 512, 0, 65536, NOERROR, 512,
	  65536 },
	{ "client bit echoed", VDF_Discard, WM | VDF_Discard, 512, 0, 65536, NOERROR, 512, 65536 },
	{ "client bit not requested", 0, WM | VDF_Discard, 512, 0, 65536, INV, 0, 0 },
	{ "tape bits echoed", VDF_LikeTape, RM | VDF_LikeTape, 512, 0, 65536, NOERROR, 512, 65536 },
	{ "unknown bit", 0, WM | 0x4, 512, 0, 65536, INV, 0, 0 },
	{ "server-only set + unknown", 0, RM | 0x100000, 512, 0, 65536, INV, 0, 0 },
};

static void pair_up_to(enum tl_phase ph, const struct tl_pair_opts *o)
{
	ck_assert_int_eq(tl_pair_init(&P, o), 0);
	ck_assert_msg(tl_pair_advance(&P, ph) == 0, "%s", tl_error());
}

START_TEST(begin_row)
{
	const struct begin_row *r = &begin_rows[_i];
	struct tl_pair_opts o;
	VDConfig cfg, scfg;
	int rc;

	tl_pair_opts_default(&o);
	o.client_features = r->client_features;
	pair_up_to(TL_CONNECTED, &o);
	TL_OK(vdi_server_get_configuration(P.s, &scfg));
	ck_assert_uint_eq(scfg.deviceCount, 1);
	ck_assert_uint_eq(scfg.features, r->client_features);
	rc = vdi_server_begin_configuration(P.s, r->features, r->block, r->align, r->mts, 1000);
	ck_assert_msg(rc == r->rc, "BeginConfiguration(%s) = %s, want %s (%s)", r->what,
	              vdi_strerror(rc), vdi_strerror(r->rc), vdi_last_error());
	if (rc != 0) {
		/* Refused: still Connected, a valid call goes through. */
		TL_OK(vdi_server_begin_configuration(P.s, WM, 512, 0, 65536, 0));
		return;
	}
	P.phase = TL_CONFIGURABLE;
	/* Values are fixed: a second Begin is a protocol error. */
	TL_RC(vdi_server_begin_configuration(P.s, WM, 512, 0, 65536, 0), VD_E_PROTOCOL);
	TL_OK(vdi_server_request_buffers(P.s, r->want_mts, 0, 2));
	TL_OK(vdi_server_end_configuration(P.s));
	P.phase = TL_ENDED;
	TL_OK(vdi_client_get_configuration(P.c, WAIT_MS, &cfg));
	P.phase = TL_INITIALIZING;
	TL_OK(vdi_server_get_configuration(P.s, &scfg));
	/* Final configuration: D18 echo, D9 sizes, maxIODepth 4. */
	uint32_t want_features = r->client_features | r->features;
	ck_assert_uint_eq(cfg.features, want_features);
	ck_assert_uint_eq(cfg.blockSize, r->want_block);
	ck_assert_uint_eq(cfg.maxTransferSize, r->want_mts);
	ck_assert_uint_eq(cfg.maxIODepth, 4);
	ck_assert_uint_eq(cfg.deviceCount, 1);
	ck_assert_uint_ge(cfg.bufferAreaSize, 2 * r->want_mts);
	ck_assert_int_eq(memcmp(&cfg, &scfg, sizeof(cfg)), 0);
}
END_TEST

/* Client inputs reach the server unchanged; the client gets them back
 * with the server fields filled. */
START_TEST(config_round_trip)
{
	struct tl_pair_opts o;
	VDConfig req = { 0 }, scfg, cfg;

	tl_pair_opts_default(&o);
	ck_assert_int_eq(tl_pair_init(&P, &o), 0);
	req.deviceCount = 7;
	req.features = VDF_LikeTape | VDF_Discard;
	req.prefixZoneSize = 512;
	req.alignment = 4096;
	req.softFileMarkBlockSize = 1024;
	req.EOMWarningSize = 123456;
	req.serverTimeOut = 30000;
	req.blockSize = 99; /* server fields: ignored */
	TL_OK(vdi_client_create(P.c, P.name, &req));
	P.phase = TL_CREATED;
	TL_OK(vdi_server_open(P.s, NULL, P.name));
	P.phase = TL_CONNECTED;
	TL_OK(vdi_server_get_configuration(P.s, &scfg));
	ck_assert_uint_eq(scfg.deviceCount, 7);
	ck_assert_uint_eq(scfg.features, VDF_LikeTape | VDF_Discard);
	ck_assert_uint_eq(scfg.prefixZoneSize, 512);
	ck_assert_uint_eq(scfg.alignment, 4096);
	ck_assert_uint_eq(scfg.softFileMarkBlockSize, 1024);
	ck_assert_uint_eq(scfg.EOMWarningSize, 123456);
	ck_assert_uint_eq(scfg.serverTimeOut, 30000);
	TL_OK(vdi_server_begin_configuration(P.s, VDF_WriteMedia, 1024, 0, 1048576, 0));
	P.phase = TL_CONFIGURABLE;
	TL_OK(vdi_server_request_buffers(P.s, 1048576, 0, 3));
	TL_OK(vdi_server_request_buffers(P.s, 4096, 0, 2)); /* summed */
	TL_OK(vdi_server_end_configuration(P.s));
	P.phase = TL_ENDED;
	TL_OK(vdi_client_get_configuration(P.c, WAIT_MS, &cfg));
	P.phase = TL_INITIALIZING;
	ck_assert_uint_eq(cfg.deviceCount, 7);
	ck_assert_uint_eq(cfg.features, VDF_LikeTape | VDF_Discard | VDF_WriteMedia);
	ck_assert_uint_eq(cfg.prefixZoneSize, 512);
	ck_assert_uint_eq(cfg.alignment, 4096);
	ck_assert_uint_eq(cfg.softFileMarkBlockSize, 1024);
	ck_assert_uint_eq(cfg.EOMWarningSize, 123456);
	ck_assert_uint_eq(cfg.serverTimeOut, 30000);
	ck_assert_uint_eq(cfg.blockSize, 1024);
	ck_assert_uint_eq(cfg.maxIODepth, 4);
	ck_assert_uint_eq(cfg.maxTransferSize, 1048576);
	/* D9: all areas, prefixes and padding included. */
	uint32_t data = 3 * 1048576 + 2 * 4096;
	ck_assert_uint_ge(cfg.bufferAreaSize, data + 5 * 512);
	ck_assert_uint_le(cfg.bufferAreaSize, data + 5 * (512 + 4096) + 65536);
	/* After configuration, RequestBuffers creates another area at once
	 * and bufferAreaSize grows (D9). */
	uint32_t before = cfg.bufferAreaSize;
	TL_OK(vdi_server_request_buffers(P.s, 65536, 0, 2));
	TL_OK(vdi_client_get_configuration(P.c, 0, &cfg));
	ck_assert_uint_ge(cfg.bufferAreaSize, before + 2 * (65536 + 512));
	uint8_t *b = NULL;
	for (int i = 0; i < 3; i++)
		TL_OK(vdi_server_allocate_buffer(P.s, &b, 1048576, 0));
	for (int i = 0; i < 2; i++)
		TL_OK(vdi_server_allocate_buffer(P.s, &b, 65536, 0));
	/* NULL out-pointers. */
	TL_RC(vdi_client_get_configuration(P.c, 0, NULL), INV);
	TL_RC(vdi_server_get_configuration(P.s, NULL), INV);
}
END_TEST

/* serverTimeOut (spec 4): with commands pending and none completing for
 * two intervals, the agent aborts the set; commands end with 995. */
static struct tl_cmd timeout_cmd;

START_TEST(server_timeout_aborts)
{
	struct tl_pair_opts o;
	VDConfig cfg;
	uint64_t t0;
	VDC_Command *cmd = NULL;

	tl_pair_opts_default(&o);
	ck_assert_int_eq(tl_pair_init(&P, &o), 0);
	memset(&P.req, 0, sizeof(P.req));
	P.req.deviceCount = 1;
	P.req.serverTimeOut = 150;
	TL_OK(vdi_client_create(P.c, P.name, &P.req));
	P.phase = TL_CREATED;
	ck_assert_msg(tl_pair_advance(&P, TL_ACTIVE) == 0, "%s", tl_error());
	/* Progress first: a completed command does not trip it. */
	tl_cmd_init(&timeout_cmd, VDC_Flush, 0, 0, NULL);
	TL_OK(vdi_server_send_command(P.sd[0], &timeout_cmd.cmd));
	TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd));
	tl_sleep_ms(100);
	TL_OK(vdi_client_complete_command(P.cd[0], cmd, 0, 0, 0));
	TL_OK(tl_cmd_wait(&timeout_cmd, WAIT_MS));
	tl_sleep_ms(400); /* idle with nothing pending: no abort */
	TL_OK(vdi_client_get_configuration(P.c, 0, &cfg));
	/* Now a command the client never completes. */
	tl_cmd_init(&timeout_cmd, VDC_Flush, 0, 0, NULL);
	t0 = tl_now_ms();
	TL_OK(vdi_server_send_command(P.sd[0], &timeout_cmd.cmd));
	TL_OK(tl_cmd_wait(&timeout_cmd, 5000));
	uint64_t dt = tl_now_ms() - t0;
	ck_assert_uint_eq(timeout_cmd.code, ERROR_OPERATION_ABORTED);
	ck_assert_msg(dt >= 290 && dt < 3000, "aborted after %llu ms, want ~300",
	              (unsigned long long)dt);
	TL_RC(vdi_client_get_configuration(P.c, 0, &cfg), VD_E_ABORT);
	TL_RC(vdi_server_get_configuration(P.s, &cfg), VD_E_ABORT);
}
END_TEST

/* ---------------------------------------------------------------------
 * Buffers: argument checks, accounting, placement (D10, D11, D12).
 */
static void buffers_pair(uint32_t prefix, uint32_t client_align, uint32_t block, uint32_t align,
                         uint32_t count)
{
	struct tl_pair_opts o;

	tl_pair_opts_default(&o);
	o.prefix = prefix;
	o.client_alignment = client_align;
	o.block_size = block;
	o.alignment = align;
	o.buffer_count = count;
	pair_up_to(TL_CONFIGURABLE, &o);
}

START_TEST(request_buffers_args)
{
	uint32_t n = 0;

	buffers_pair(0, 0, 512, 0, 0);
	TL_RC(vdi_server_request_buffers(P.s, 0, 0, 1), INV);
	TL_RC(vdi_server_request_buffers(P.s, 65536, 3, 1), INV);
	TL_RC(vdi_server_request_buffers(P.s, 65536, 1000, 1), INV);
	TL_RC(vdi_server_query_available_buffers(P.s, 65536, 0, NULL), INV);
	TL_RC(vdi_server_query_available_buffers(P.s, 65536, 3, &n), INV);
	/* Nothing requested: nothing available. */
	TL_OK(vdi_server_query_available_buffers(P.s, 65536, 0, &n));
	ck_assert_uint_eq(n, 0);
	/* Configurable: how many would succeed after End (D11). */
	TL_OK(vdi_server_request_buffers(P.s, 65536, 0, 3));
	TL_OK(vdi_server_request_buffers(P.s, 65536, 0, 2));
	TL_OK(vdi_server_query_available_buffers(P.s, 65536, 0, &n));
	ck_assert_uint_eq(n, 5);
	TL_OK(vdi_server_query_available_buffers(P.s, 512, 0, &n));
	ck_assert_uint_ge(n, 5);
}
END_TEST

START_TEST(allocate_free_accounting)
{
	uint8_t *b[5] = { 0 };
	uint8_t *x = NULL;
	uint8_t local[64];
	uint32_t n = 0;

	buffers_pair(0, 0, 512, 0, 4);
	TL_OK(tl_pair_advance(&P, TL_INITIALIZING));
	TL_OK(vdi_server_query_available_buffers(P.s, 65536, 0, &n));
	ck_assert_uint_eq(n, 4);
	/* Argument checks. */
	TL_RC(vdi_server_allocate_buffer(P.s, NULL, 65536, 0), INV);
	TL_RC(vdi_server_allocate_buffer(P.s, &x, 0, 0), INV);
	TL_RC(vdi_server_allocate_buffer(P.s, &x, 65536, 3), INV);
	TL_RC(vdi_server_allocate_buffer(P.s, &x, 65536, 3000), INV);
	ck_assert_ptr_null(x);
	for (int i = 0; i < 4; i++) {
		TL_OK(vdi_server_allocate_buffer(P.s, &b[i], 65536, 0));
		ck_assert_ptr_nonnull(b[i]);
		ck_assert_int_eq(vdi_server_is_shared_buffer(P.s, b[i]), 1);
		memset(b[i], i + 1, 65536); /* writable, all of it */
		TL_OK(vdi_server_query_available_buffers(P.s, 65536, 0, &n));
		ck_assert_uint_eq(n, (uint32_t)(3 - i));
	}
	/* Exhausted. */
	TL_RC(vdi_server_allocate_buffer(P.s, &b[4], 65536, 0), VD_E_MEMORY);
	/* Buffers do not overlap. */
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 65536; j += 4096)
			ck_assert_int_eq(b[i][j], i + 1);
	/* IsSharedBuffer: data starts only (D12). */
	ck_assert_int_eq(vdi_server_is_shared_buffer(P.s, b[0] + 1), 0);
	ck_assert_int_eq(vdi_server_is_shared_buffer(P.s, local), 0);
	ck_assert_int_eq(vdi_server_is_shared_buffer(P.s, NULL), 0);
	/* FreeBuffer checks. */
	TL_RC(vdi_server_free_buffer(P.s, NULL, 65536), INV);
	TL_RC(vdi_server_free_buffer(P.s, local, 65536), INV);
	TL_RC(vdi_server_free_buffer(P.s, b[1] + 512, 65536), INV);
	TL_RC(vdi_server_free_buffer(P.s, b[1], 4096), INV); /* wrong size */
	TL_OK(vdi_server_free_buffer(P.s, b[1], 65536));
	TL_RC(vdi_server_free_buffer(P.s, b[1], 65536), INV); /* twice */
	TL_OK(vdi_server_query_available_buffers(P.s, 65536, 0, &n));
	ck_assert_uint_eq(n, 1);
	TL_OK(vdi_server_allocate_buffer(P.s, &b[4], 65536, 0));
	TL_OK(vdi_server_query_available_buffers(P.s, 65536, 0, &n));
	ck_assert_uint_eq(n, 0);
	/* Larger than anything requested (and than maxTransferSize): no
	 * room (MEMORY) or refused outright (INVALID); never a buffer. */
	TL_OK(vdi_server_free_buffer(P.s, b[0], 65536));
	int rc = vdi_server_allocate_buffer(P.s, &x, 8 * 1048576, 0);
	ck_assert_msg(rc == VD_E_MEMORY || rc == INV, "8 MiB = %s", vdi_strerror(rc));
	ck_assert_ptr_null(x);
}
END_TEST

static int is_aligned(const void *p, uint32_t a)
{
	return ((uintptr_t)p & (uintptr_t)(a - 1)) == 0;
}

/* Alignment = max(client, server, request) (D10) and the prefix zone
 * right below each data start, visible to the client only. */
struct place_row {
	const char *what;
	uint32_t prefix, client_align, block, server_align, req_align;
	uint32_t want_align;
};

static const struct place_row place_rows[] = {
	{ "defaults", 0, 0, 512, 0, 0, 512 },
	{ "block 4096", 0, 0, 4096, 0, 0, 4096 },
	{ "server 8192", 0, 0, 512, 8192, 0, 8192 },
	{ "client 16384", 0, 16384, 512, 0, 0, 16384 },
	{ "client 65536 beats server", 0, 65536, 512, 4096, 0, 65536 },
	{ "request 32768", 0, 0, 512, 0, 32768, 32768 },
	{ "prefix 512", 512, 0, 512, 0, 0, 512 },
	{ "prefix 100, align 4096", 100, 4096, 512, 0, 0, 4096 },
	{ "prefix 4096, align 4096", 4096, 4096, 4096, 0, 0, 4096 },
	{ "prefix 65536", 65536, 0, 512, 0, 0, 512 },
	{ "prefix 1000, request 65536", 1000, 0, 512, 0, 65536, 65536 },
};

START_TEST(buffer_placement_row)
{
	const struct place_row *r = &place_rows[_i];
	struct tl_pair_opts o;
	uint8_t *b[3] = { 0 };
	VDC_Command *cmd[3];
	const uint32_t size = 65536;

	tl_pair_opts_default(&o);
	o.prefix = r->prefix;
	o.client_alignment = r->client_align;
	o.block_size = r->block;
	o.alignment = r->server_align;
	o.buffer_count = 0;
	pair_up_to(TL_CONFIGURABLE, &o);
	TL_OK(vdi_server_request_buffers(P.s, size, r->req_align, 3));
	TL_OK(tl_pair_advance(&P, TL_ACTIVE));
	ck_assert_uint_eq(P.cfg.prefixZoneSize, r->prefix);
	for (int i = 0; i < 3; i++) {
		TL_OK(vdi_server_allocate_buffer(P.s, &b[i], size, r->req_align));
		ck_assert_msg(is_aligned(b[i], r->want_align),
		              "%s: buffer %d at %p not aligned to %u", r->what, i, (void *)b[i],
		              r->want_align);
		memset(b[i], 0xA0 + i, size);
	}
	/* Server view: data zones plus prefixes never overlap. */
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 3; j++) {
			if (i == j)
				continue;
			uintptr_t lo = (uintptr_t)b[i] - r->prefix;
			uintptr_t hi = (uintptr_t)b[i] + size;
			uintptr_t oj = (uintptr_t)b[j];
			ck_assert_msg(oj + size <= lo || oj >= hi, "%s: buffers %d and %d overlap",
			              r->what, i, j);
		}
	/* Client view: same alignment; the prefix zone is the client's,
	 * right below the data, and writing it never touches data. */
	for (int i = 0; i < 3; i++) {
		static struct tl_cmd t[3];

		tl_cmd_init(&t[i], VDC_Write, size, 0, b[i]);
		TL_OK(vdi_server_send_command(P.sd[0], &t[i].cmd));
		TL_OK(vdi_client_get_command(P.cd[0], WAIT_MS, &cmd[i]));
		ck_assert_msg(is_aligned(cmd[i]->buffer, r->want_align),
		              "%s: client buffer %p not aligned to %u", r->what,
		              (void *)cmd[i]->buffer, r->want_align);
		ck_assert_int_eq(cmd[i]->buffer[0], 0xA0 + i);
		ck_assert_int_eq(cmd[i]->buffer[size - 1], 0xA0 + i);
	}
	for (int i = 0; i < 3; i++)
		if (r->prefix)
			memset(cmd[i]->buffer - r->prefix, 0x11, r->prefix);
	for (int i = 0; i < 3; i++) {
		for (uint32_t k = 0; k < size; k += 512)
			ck_assert_msg(b[i][k] == 0xA0 + i,
			              "%s: prefix write reached data of buffer %d", r->what, i);
		ck_assert_int_eq(b[i][size - 1], 0xA0 + i);
		TL_OK(vdi_client_complete_command(P.cd[0], cmd[i], 0, size, 0));
	}
}
END_TEST

/* A request no machine can back (2^32 - 1 buffers of 4 MiB) fails with
 * VD_E_MEMORY, at RequestBuffers or at EndConfiguration (spec 7.3); the
 * set stays Configurable and nothing crashes or wraps around. */
START_TEST(end_configuration_memory)
{
	uint32_t n = 0;
	int rc;

	buffers_pair(0, 0, 512, 0, 0);
	rc = vdi_server_request_buffers(P.s, 4194304, 0, 0xFFFFFFFFu);
	if (rc == 0)
		rc = vdi_server_end_configuration(P.s);
	ck_assert_msg(rc == VD_E_MEMORY, "2^32 x 4 MiB = %s (%s)", vdi_strerror(rc),
	              vdi_last_error());
	TL_OK(vdi_server_query_available_buffers(P.s, 65536, 0, &n));
	VDConfig cfg;
	TL_RC(vdi_client_get_configuration(P.c, 0, &cfg), VD_E_TIMEOUT);
}
END_TEST

/* ---------------------------------------------------------------------
 * NULL handles and NULL out-pointers: VD_E_INVALID, never a crash.
 */
START_TEST(null_arguments)
{
	VDConfig cfg = { .deviceCount = 1 };
	struct tl_cmd t;
	uint8_t *b = NULL;
	uint32_t n = 0, h = 0;
	VDC_Command *cc = NULL;
	struct vdi_client_device *cd = NULL;
	struct vdi_server_device *sd = NULL;

	TL_RC(vdi_client_new(NULL), INV);
	TL_RC(vdi_server_new(NULL), INV);
	vdi_client_free(NULL);
	vdi_server_free(NULL);
	TL_RC(vdi_client_set_group(NULL, 0), INV);
	TL_RC(vdi_client_create(NULL, "x", &cfg), INV);
	TL_RC(vdi_client_create_ex(NULL, NULL, "x", &cfg), INV);
	TL_RC(vdi_client_get_configuration(NULL, 0, &cfg), INV);
	TL_RC(vdi_client_open_device(NULL, "x", &cd), INV);
	TL_RC(vdi_client_close(NULL), INV);
	TL_RC(vdi_client_signal_abort(NULL), INV);
	TL_RC(vdi_client_open_in_secondary(NULL, "x"), INV);
	TL_RC(vdi_client_open_in_secondary_ex(NULL, NULL, "x"), INV);
	TL_RC(vdi_client_get_buffer_handle(NULL, b, &h), INV);
	TL_RC(vdi_client_map_buffer_handle(NULL, 1, &b), INV);
	TL_RC(vdi_client_get_command(NULL, 0, &cc), INV);
	TL_RC(vdi_client_complete_command(NULL, cc, 0, 0, 0), INV);
	TL_RC(vdi_server_open(NULL, NULL, "x"), INV);
	TL_RC(vdi_server_open_wait(NULL, NULL, "x", 0), INV);
	TL_RC(vdi_server_get_configuration(NULL, &cfg), INV);
	TL_RC(vdi_server_begin_configuration(NULL, VDF_WriteMedia, 0, 0, 0, 0), INV);
	TL_RC(vdi_server_request_buffers(NULL, 65536, 0, 1), INV);
	TL_RC(vdi_server_query_available_buffers(NULL, 65536, 0, &n), INV);
	TL_RC(vdi_server_end_configuration(NULL), INV);
	TL_RC(vdi_server_execute_completion_agent(NULL), INV);
	TL_RC(vdi_server_open_device(NULL, NULL, &sd), INV);
	TL_RC(vdi_server_allocate_buffer(NULL, &b, 65536, 0), INV);
	TL_RC(vdi_server_free_buffer(NULL, b, 65536), INV);
	ck_assert_int_eq(vdi_server_is_shared_buffer(NULL, b), 0);
	TL_RC(vdi_server_signal_abort(NULL), INV);
	TL_RC(vdi_server_close(NULL), INV);
	TL_RC(vdi_server_close_device(NULL), INV);
	TL_RC(vdi_server_send_command(NULL, NULL), INV);
	tl_cmd_init(&t, VDC_Flush, 0, 0, NULL);
	TL_RC(vdi_server_send_command(NULL, &t.cmd), INV);

	/* NULL out-pointers on a live set. */
	pair_up_to(TL_ACTIVE, NULL);
	TL_RC(vdi_client_open_device(P.c, P.dev[0], NULL), INV);
	TL_RC(vdi_server_open_device(P.s, NULL, NULL), INV);
	TL_RC(vdi_client_get_command(P.cd[0], 0, NULL), INV);
	TL_RC(vdi_client_get_buffer_handle(P.c, NULL, NULL), INV);
	TL_RC(vdi_client_map_buffer_handle(P.c, 1u << 24, NULL), INV);
	TL_RC(vdi_server_query_available_buffers(P.s, 65536, 0, NULL), INV);
	TL_RC(vdi_client_open_device(P.c, NULL, &cd), INV);
	ck_assert_ptr_null(cd);
	/* The set is still healthy. */
	TL_OK(tl_pair_finish(&P));
}
END_TEST

/* ---------------------------------------------------------------------
 * Access (DESIGN 5, D27): 0600 by default; 0660 and the group with
 * vdi_client_set_group; buffer areas inherit the set's mode.
 */
static void check_modes(const char *name, mode_t want, int check_gid, gid_t gid)
{
	char path[512];
	struct stat st;
	int seen = 0;

	/* Buffer areas: vdi-b<k>.<inst>.<set> (D27), or the older form
	 * vdi.<inst>.<set>.b<k>. */
	for (int k = -1; k < 4; k++) {
		if (k < 0)
			snprintf(path, sizeof(path), "/dev/shm/vdi.MSSQLSERVER.%s", name);
		else if (k < 2)
			snprintf(path, sizeof(path), "/dev/shm/vdi-b%d.MSSQLSERVER.%s", k, name);
		else
			snprintf(path, sizeof(path), "/dev/shm/vdi.MSSQLSERVER.%s.b%d", name,
			         k - 2);
		if (stat(path, &st) != 0)
			continue;
		seen++;
		ck_assert_msg((st.st_mode & 07777) == want, "%s: mode %o, want %o", path,
		              (unsigned)(st.st_mode & 07777), (unsigned)want);
		ck_assert_uint_eq(st.st_uid, getuid());
		if (check_gid)
			ck_assert_uint_eq(st.st_gid, gid);
	}
	/* Control region and buffer area 0. */
	ck_assert_int_ge(seen, 2);
}

START_TEST(access_modes)
{
	struct tl_pair_opts o;
	/* root may give any group; others only their own. */
	gid_t gid = getuid() == 0 ? (gid_t)4242 : getgid();

	tl_pair_opts_default(&o);
	pair_up_to(TL_INITIALIZING, &o);
	check_modes(P.name, 0600, 0, 0);
	TL_RC(vdi_client_set_group(P.c, gid), VD_E_PROTOCOL); /* after Create */
	tl_pair_destroy(&P);

	ck_assert_int_eq(tl_pair_init(&P, &o), 0);
	TL_OK(vdi_client_set_group(P.c, gid));
	ck_assert_msg(tl_pair_advance(&P, TL_INITIALIZING) == 0, "%s", tl_error());
	check_modes(P.name, 0660, 1, gid);
}
END_TEST

/* ---------------------------------------------------------------------
 * Suite.
 */
static TCase *tc_new(Suite *s, const char *name, int timeout)
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, timeout);
	suite_add_tcase(s, tc);
	return tc;
}

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Messages quote names escaped: control bytes become \xNN, and the
 * engine's own messages never carry a raw one. */
START_TEST(test_escape_text)
{
	char out[32];
	struct vdi_client *c;
	VDConfig cfg = { .deviceCount = 1 };
	const char *p;

	ck_assert_str_eq(vdi_escape_text(out, sizeof(out), "a\tb\x1b[2J\x7f"),
	                 "a\\x09b\\x1b[2J\\x7f");
	ck_assert_str_eq(vdi_escape_text(out, 4, "abcdef"), "abc");
	ck_assert_str_eq(vdi_escape_text(out, 5, "a\nb"), "a"); /* no half escape */
	ck_assert_int_eq(vdi_client_new(&c), 0);
	char long_name[200];

	/* A too-long name is quoted in the message: with an ESC inside. */
	memset(long_name, 'L', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	memcpy(long_name, "x\x1b[2J", 5); /* without the NUL */
	ck_assert_int_eq(vdi_client_create(c, long_name, &cfg), VD_E_INVALID);
	ck_assert_ptr_nonnull(strstr(vdi_last_error(), "x\\x1b[2J"));
	for (p = vdi_last_error(); *p; p++)
		ck_assert_msg((unsigned char)*p >= 0x20 && *p != 0x7f, "raw control byte in: %s",
		              vdi_last_error());
	vdi_client_free(c);
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tc_new(s, "client config", 10);
	tcase_add_loop_test(tc, client_config_row, 0, N(cfg_rows));
	tcase_add_loop_test(tc, feature_bit_matrix, 0, 96);
	tcase_add_test(tc, client_create_plain);
	tcase_add_test(tc, test_escape_text);
	tc = tc_new(s, "names", 10);
	tcase_add_loop_test(tc, client_name_row, 0, N(name_rows));
	tcase_add_test(tc, guid_name_end_to_end);
	tcase_add_test(tc, name_busy);
	tcase_add_test(tc, stale_set_reclaimed);
	tc = tc_new(s, "instances", 10);
	tcase_add_loop_test(tc, client_instance_row, 0, N(inst_rows));
	tcase_add_test(tc, instances_are_namespaces);
	tcase_add_test(tc, server_open_args);
	tc = tc_new(s, "begin configuration", 10);
	tcase_add_loop_test(tc, begin_row, 0, N(begin_rows));
	tcase_add_test(tc, config_round_trip);
	tcase_add_test(tc, server_timeout_aborts);
	tc = tc_new(s, "buffers", 10);
	tcase_add_test(tc, request_buffers_args);
	tcase_add_test(tc, allocate_free_accounting);
	tcase_add_loop_test(tc, buffer_placement_row, 0, N(place_rows));
	tcase_add_test(tc, end_configuration_memory);
	tc = tc_new(s, "arguments and access", 10);
	tcase_add_test(tc, null_arguments);
	tcase_add_test(tc, access_modes);
	return s;
}

int main(void)
{
	return tl_run_suite(config_suite());
}
