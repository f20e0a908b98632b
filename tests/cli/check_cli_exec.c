/* SPDX-License-Identifier: MIT */
/*
 * check_cli_exec.c - `vdi exec` seen from a raw client (issue 3.3, and
 * the device types of issue 12).
 *
 * The round trips (tests/integration/cli_*.sh) prove the bytes; this
 * suite proves the protocol `vdi exec` speaks, command by command, the
 * way a vendor's client would see it.  The server is `vdi exec` in a
 * forked process (cli_main, the same code as the binary); the client is
 * this process on libvdi's raw client half, one thread polling every
 * device, recording every command.  Checked:
 *   - the configuration: VDF_WriteMedia or VDF_ReadMedia (both with
 *     --both-media), and VDF_CompleteEnabled exactly when
 *     VDF_RequestComplete was asked of a backup (D19);
 *     the statement's BLOCKSIZE and MAXTRANSFERSIZE;
 *   - at most BUFFERCOUNT commands outstanding across all devices (the
 *     client holds everything it is sent until nothing more comes), and
 *     more than one (the server pipelines); not with extra flushes, as
 *     the server waits for each VDC_Flush before it goes on, nor on tape
 *     and disk, whose first commands are waited for one by one;
 *   - every data command is the direction's code, a BLOCKSIZE multiple
 *     up to MAXTRANSFERSIZE, at position = the device's byte offset;
 *   - backup: the stream ends with VDC_Flush, then VDC_Complete when
 *     negotiated, then VD_E_CLOSE; FAULT_EXTRA_FLUSHES=n adds n flushes
 *     mid-stream, before the last VDC_Write;
 *   - restore: the stripes captured from the backup fed back through
 *     VDC_Read (the last with ERROR_HANDLE_EOF) rebuild the database
 *     byte for byte; no VDC_Flush or VDC_Complete;
 *   - `vdi exec` exits 0, and nothing is left in /dev/shm.
 *
 * Device types (docs/vdi.1 "Device types", D50).  The client offers the
 * features of a type and models its medium itself, minimally, with no
 * help from core/cstream.c (an independent check of what exec sends):
 *   - tape (VDF_LikeTape): a list of records (one per VDC_Write) and
 *     filemarks, positions are block addresses; a Read returns one record;
 *     a Read at a mark completes ERROR_FILEMARK_DETECTED with 0 bytes, and
 *     so does every later Read until VDC_ClearError; a record larger than
 *     the Read completes ERROR_MORE_DATA (234).  Only one Read may be
 *     outstanding before VDC_SkipMarks: the first one is held until the
 *     server is quiet, and must then be alone;
 *   - disk (VDF_RandomAccess): positions are byte offsets, data commands
 *     must come at the current one;
 *   - removable (VDF_Removable, pipe-like): a backup medium holds
 *     `medium` bytes; the Write that does not fit stores what fits and
 *     completes ERROR_END_OF_MEDIA, later ones ERROR_END_OF_MEDIA with 0
 *     bytes until VDC_Load.  A restore reads the backup's media: a Read
 *     across a medium's end completes ERROR_HANDLE_EOF with the bytes
 *     before it, later ones too until VDC_Load.  After such an end the
 *     device holds what comes until the server is quiet: a VDC_Load that
 *     arrives while a data command is outstanding is a failure; every
 *     byte stored or served must come at the stream offset so far;
 *   - VDF_Discard: a failed restore sends VDC_Discard on every device
 *     before the abort, and none without it;
 *   - FAULT_FAIL_AT / FAULT_STALL_AT at the control commands.
 * Each device's commands, one letter each (letter()), must match the
 * type's pattern (expected_sequence()).
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "testlib.h"
#include "vdi.h"

#define NDEV_MAX      4
#define MAX_REC       4096
#define MAX_MEDIA     64
#define HOLD_QUIET_MS 300    /* no new command this long: the server is blocked */
#define RUN_MS        30000u /* bound of one whole exchange */

#ifndef ERROR_MORE_DATA
#define ERROR_MORE_DATA 234u /* Win32: a tape record larger than the Read */
#endif

struct rec {
	uint32_t code;
	int32_t size;
	int64_t position;
	uint64_t answer; /* position the client returned */
	uint64_t t_ms;   /* when it arrived (tl_now_ms) */
};

/* A command held, not yet completed, and its record. */
struct held {
	VDC_Command *cmd;
	unsigned rec;
};

/* A tape block: a record of len bytes at data + off, or a filemark (len 0). */
struct blk {
	size_t off;
	uint32_t len;
};

struct dev {
	char name[TL_NAME_MAX + 8];
	struct vdi_client_device *d;
	struct rec rec[MAX_REC];
	unsigned nrec;
	struct held held[VDI_QUEUE_DEPTH];
	unsigned nheld;
	uint8_t *data; /* backup: bytes received; restore: bytes to send */
	size_t len, cap, off;
	int closed, aborted;
	/* hold what comes until the server is quiet (see the header) */
	int hold;
	uint64_t last_ms; /* last command received */
	/* tape */
	struct blk *blk;
	unsigned nblk, blkcap, pos;
	int mark_hit, skipped;
	/* removable: the stream offsets where each medium but the last ends */
	size_t bound[MAX_MEDIA];
	unsigned nbound, medium;
	int eom, at_end;
};

/* One statement's geometry and device type.  mts 0: a tape restore
 * without MAXTRANSFERSIZE.  offer: the device type (VDF_LikeTape,
 * VDF_RandomAccess, VDF_Removable), | VDF_Discard. */
struct geo {
	uint32_t ndev, block, mts, bufcount;
	int ask_complete;  /* the client requests VDF_RequestComplete */
	uint32_t offer;    /* features the client offers */
	int both;          /* --both-media */
	const char *opts;  /* more statement options: ", FAULT_..." */
	const char *fails; /* the statement fails, its message says this */
	uint32_t never;    /* a command that must not reach the client */
	uint32_t stall_at; /* FAULT_STALL_AT: this command comes stall_ms late */
	uint32_t stall_ms;
};

struct ex {
	char dir[64];
	char set[TL_NAME_MAX];
	uint32_t ndev, block, mts, bufcount, offer, never, stall_at, stall_ms;
	int ask_complete, both, backup;
	const char *opts, *fails;
	size_t medium; /* removable backup: bytes per medium */
	struct vdi_client *c;
	VDConfig cfg;
	struct dev dev[NDEV_MAX];
	pid_t kid;
};

static int is_tape(const struct ex *e)
{
	return (e->offer & VDF_FileMarks) != 0;
}

static int is_disk(const struct ex *e)
{
	return (e->offer & VDF_RandomAccess) != 0;
}

/* Removable media that end (a tape offers VDF_Removable too, but this
 * client's tapes never fill). */
static int is_removable(const struct ex *e)
{
	return (e->offer & VDF_Removable) && !is_tape(e);
}

static const char *type_name(const struct ex *e)
{
	return is_tape(e) ? "tape" : is_disk(e) ? "disk" : is_removable(e) ? "removable" : "pipe";
}

/* ------------------------------------------------------------- helpers */

/* The data directory of each test: made and removed by the unchecked
 * fixture, which runs in the parent of the test's process, so it is
 * removed even when an assertion ends the test early. */
static char g_dir[64];

static void dir_make(void)
{
	snprintf(g_dir, sizeof(g_dir), "/tmp/vdi-exec-XXXXXX");
	if (!mkdtemp(g_dir)) {
		perror("mkdtemp");
		exit(1);
	}
}

static void dir_remove(void)
{
	char path[320];
	struct dirent *f;
	DIR *d = opendir(g_dir);

	while (d && (f = readdir(d)))
		if (f->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", g_dir, f->d_name);
			unlink(path);
		}
	if (d)
		closedir(d);
	rmdir(g_dir);
}

static void fill_random(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

static void write_file(const char *path, const uint8_t *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	ck_assert_msg(fd >= 0, "create %s: %s", path, strerror(errno));
	ck_assert_int_eq(write(fd, p, n), (ssize_t)n);
	close(fd);
}

/* The file's bytes, NUL-terminated; the caller frees. */
static uint8_t *read_file(const char *path, size_t *n)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	uint8_t *p;

	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(fstat(fd, &st), 0);
	p = malloc((size_t)st.st_size + 1);
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(read(fd, p, (size_t)st.st_size), st.st_size);
	close(fd);
	p[st.st_size] = '\0';
	*n = (size_t)st.st_size;
	return p;
}

static void append(struct dev *v, const void *p, size_t n)
{
	if (!n)
		return;
	if (v->len + n > v->cap) {
		v->cap = (v->len + n) * 2;
		v->data = realloc(v->data, v->cap);
		ck_assert_ptr_nonnull(v->data);
	}
	memcpy(v->data + v->len, p, n);
	v->len += n;
}

/* A tape block at the end of the tape: a record of len bytes just
 * appended to v->data, or a filemark (len 0). */
static void blk_add(struct dev *v, uint32_t len)
{
	if (v->nblk == v->blkcap) {
		v->blkcap = v->blkcap ? v->blkcap * 2 : 64;
		v->blk = realloc(v->blk, v->blkcap * sizeof(*v->blk));
		ck_assert_ptr_nonnull(v->blk);
	}
	v->blk[v->nblk++] = (struct blk){ v->len - len, len };
	v->pos = v->nblk;
}

static void ex_init(struct ex *e, const struct geo *g, size_t medium)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->dir, sizeof(e->dir), "%s", g_dir);
	tl_name(e->set);
	e->ndev = g->ndev;
	e->block = g->block;
	e->mts = g->mts;
	e->bufcount = g->bufcount;
	e->ask_complete = g->ask_complete;
	e->offer = g->offer;
	e->both = g->both;
	e->opts = g->opts ? g->opts : "";
	e->fails = g->fails;
	e->never = g->never;
	e->stall_at = g->stall_at;
	e->stall_ms = g->stall_ms;
	e->medium = medium;
	for (uint32_t i = 0; i < e->ndev; i++)
		snprintf(e->dev[i].name, sizeof(e->dev[i].name), i ? "%s-%u" : "%s", e->set, i);
}

static void ex_free(struct ex *e)
{
	for (uint32_t i = 0; i < e->ndev; i++) {
		free(e->dev[i].data);
		free(e->dev[i].blk);
	}
}

/* "VIRTUAL_DEVICE='a', VIRTUAL_DEVICE='b'" */
static void device_list(const struct ex *e, char *buf, size_t n)
{
	size_t k = 0;

	buf[0] = '\0';
	for (uint32_t i = 0; i < e->ndev; i++)
		k += (size_t)snprintf(buf + k, n - k, "%sVIRTUAL_DEVICE='%s'", i ? ", " : "",
		                      e->dev[i].name);
}

static void err_path(const struct ex *e, char *buf, size_t n)
{
	snprintf(buf, n, "%s/%s.err", e->dir, e->set);
}

/* The client creates the set, then `vdi exec stmt` starts as the server
 * (its stderr in dir/<set>.err). */
static void ex_start(struct ex *e, const char *stmt, int backup)
{
	char *argv[10] = { "vdi", "exec", "-q", "-D", e->dir, "-t", "10000" }, err[160];
	int argc = 7;
	VDConfig cfg;
	pid_t parent = getpid();

	if (e->both)
		argv[argc++] = "--both-media";
	argv[argc++] = (char *)stmt;
	e->backup = backup;
	err_path(e, err, sizeof(err));
	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = e->ndev;
	cfg.features = e->offer | (e->ask_complete ? VDF_RequestComplete : 0);
	TL_OK(vdi_client_new(&e->c));
	TL_OK(vdi_client_create(e->c, e->set, &cfg));
	e->kid = fork();
	ck_assert_int_ge(e->kid, 0);
	if (e->kid == 0) {
		int fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(3);
		if (fd >= 0)
			dup2(fd, 2);
		alarm(60);
		_exit(cli_main(argc, argv));
	}
	TL_OK(vdi_client_get_configuration(e->c, 10000, &e->cfg));
	ck_assert_uint_eq(e->cfg.deviceCount, e->ndev);
	ck_assert_uint_eq(e->cfg.blockSize, e->block);
	ck_assert_uint_eq(e->cfg.maxTransferSize, e->mts);
	/* VDC_Complete ends a backup only (D19). */
	ck_assert_msg(!(e->cfg.features & VDF_CompleteEnabled) == !(e->ask_complete && backup),
	              "features 0x%x, VDF_RequestComplete %s, %s", e->cfg.features,
	              e->ask_complete ? "asked" : "not asked", backup ? "backup" : "restore");
	ck_assert_msg((e->cfg.features & (VDF_WriteMedia | VDF_ReadMedia)) ==
	                      (e->both  ? VDF_WriteMedia | VDF_ReadMedia
	                       : backup ? VDF_WriteMedia
	                                : VDF_ReadMedia),
	              "%s%s: features 0x%x", backup ? "backup" : "restore",
	              e->both ? " with --both-media" : "", e->cfg.features);
	for (uint32_t i = 0; i < e->ndev; i++)
		TL_OK(vdi_client_open_device(e->c, e->dev[i].name, &e->dev[i].d));
}

/* Waits for `vdi exec`: it exits 0, or, when the statement must fail,
 * non-zero with a message naming e->fails and every device aborted. */
static void ex_finish(struct ex *e)
{
	int st = 0, rc;
	uint64_t end = tl_now_ms() + 10000;
	char path[160];
	uint8_t *err;
	size_t n;

	while (waitpid(e->kid, &st, WNOHANG) == 0) {
		if (tl_now_ms() > end) {
			kill(e->kid, SIGKILL);
			waitpid(e->kid, &st, 0);
			ck_abort_msg("vdi exec still running 10 s after its devices closed");
		}
		tl_sleep_ms(5);
	}
	err_path(e, path, sizeof(path));
	err = read_file(path, &n);
	if (e->fails) {
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0,
		              "vdi exec: status 0x%x, expected a failure (%s)", st, e->fails);
		ck_assert_msg(strstr((char *)err, e->fails), "vdi exec failed without '%s': %s",
		              e->fails, err);
		for (uint32_t i = 0; i < e->ndev; i++)
			ck_assert_msg(e->dev[i].aborted, "device '%s': not aborted by the failure",
			              e->dev[i].name);
	} else {
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "vdi exec: status 0x%x: %s",
		              st, err);
	}
	free(err);
	rc = vdi_client_close(e->c);
	ck_assert_msg(rc == 0, "client Close: %s (%s)", vdi_strerror(rc), vdi_last_error());
	vdi_client_free(e->c);
	ck_assert_int_eq(tl_shm_count_set(e->set), 0);
}

static unsigned held_data(const struct dev *v)
{
	unsigned n = 0;

	for (unsigned k = 0; k < v->nheld; k++)
		n += v->held[k].cmd->commandCode == VDC_Read ||
		     v->held[k].cmd->commandCode == VDC_Write;
	return n;
}

/* A command arrived: recorded and held. */
static void receive(struct ex *e, struct dev *v, VDC_Command *cmd)
{
	ck_assert_uint_lt(v->nrec, MAX_REC);
	ck_assert_uint_lt(v->nheld, VDI_QUEUE_DEPTH);
	/* spec 10.5: the next medium once every data command completed */
	ck_assert_msg(cmd->commandCode != VDC_Load || held_data(v) == 0,
	              "device '%s': VDC_Load (command %u) while %u data commands are outstanding",
	              v->name, v->nrec, held_data(v));
	if (is_tape(e) && !e->backup && cmd->commandCode == VDC_Read && !v->skipped)
		v->hold = 1; /* the stripe header's block: alone until VDC_SkipMarks */
	v->rec[v->nrec] = (struct rec){ (uint32_t)cmd->commandCode, cmd->size, cmd->position, 0,
		                        tl_now_ms() };
	v->held[v->nheld++] = (struct held){ cmd, v->nrec++ };
	v->last_ms = tl_now_ms();
}

/* Polls every open device once; each command received is recorded and
 * held.  Returns how many arrived. */
static unsigned poll_all(struct ex *e)
{
	unsigned got = 0;

	for (uint32_t i = 0; i < e->ndev; i++) {
		struct dev *v = &e->dev[i];
		VDC_Command *cmd = NULL;
		int rc;

		if (v->closed)
			continue;
		rc = vdi_client_get_command(v->d, 0, &cmd);
		if (rc == VD_E_TIMEOUT)
			continue;
		if (rc == VD_E_CLOSE || (rc == VD_E_ABORT && e->fails)) {
			v->closed = 1;
			v->aborted = rc == VD_E_ABORT;
			v->nheld = 0; /* an abort completed them */
			continue;
		}
		ck_assert_msg(rc == 0, "device '%s': GetCommand: %s (%s)", v->name,
		              vdi_strerror(rc), vdi_last_error());
		receive(e, v, cmd);
		got++;
	}
	return got;
}

static unsigned held_total(const struct ex *e)
{
	unsigned n = 0;

	for (uint32_t i = 0; i < e->ndev; i++)
		n += e->dev[i].nheld;
	return n;
}

/* Takes everything the server sends without completing anything, until
 * it stops: then exactly what it keeps in flight is held. */
static void hold_until_blocked(struct ex *e)
{
	uint64_t quiet = tl_now_ms(), end = quiet + RUN_MS;

	while (tl_now_ms() - quiet < HOLD_QUIET_MS) {
		ck_assert_msg(tl_now_ms() < end, "the server never stopped sending");
		if (poll_all(e))
			quiet = tl_now_ms();
		else
			tl_sleep_ms(2);
	}
	ck_assert_msg(held_total(e) <= e->bufcount, "%u commands outstanding, BUFFERCOUNT=%u",
	              held_total(e), e->bufcount);
	ck_assert_msg(held_total(e) >= 2, "only %u command outstanding: no pipelining",
	              held_total(e));
}

/* 1 while a holding device waits for the server to be quiet; then what
 * it holds is checked and it goes on.  Removable media: held only while
 * data commands are (a VDC_Load among them fails in receive()). */
static int holding(const struct ex *e, struct dev *v)
{
	if (!v->hold)
		return 0;
	if (!is_tape(e) && held_data(v) == 0) {
		v->hold = 0;
		return 0;
	}
	if (tl_now_ms() - v->last_ms < HOLD_QUIET_MS)
		return 1;
	if (is_tape(e))
		ck_assert_msg(v->nheld == 1 && v->held[0].cmd->commandCode == VDC_Read,
		              "tape device '%s': %u commands outstanding (%u data) before "
		              "VDC_SkipMarks, expected the stripe header's VDC_Read alone",
		              v->name, v->nheld, held_data(v));
	v->hold = 0;
	return 0;
}

/* ------------------------------------------------------ the media model */

/* A completion: code, bytes transferred, position returned. */
struct ans {
	uint32_t code, bytes;
	uint64_t pos;
};

#define ANS(c, b, p) ((struct ans){ (c), (uint32_t)(b), (uint64_t)(p) })

/* Serves up to n bytes of v->data from v->off into buf. */
static uint32_t serve_bytes(struct dev *v, uint8_t *buf, size_t n, size_t end)
{
	size_t k = end - v->off < n ? end - v->off : n;

	memcpy(buf, v->data + v->off, k);
	v->off += k;
	return (uint32_t)k;
}

/* Tape: records and filemarks; positions are block addresses. */
static struct ans tape_answer(struct dev *v, const VDC_Command *cmd)
{
	const struct blk *b = v->pos < v->nblk ? &v->blk[v->pos] : NULL;

	switch (cmd->commandCode) {
	case VDC_Rewind: /* a stream is not read or written twice (D50) */
		return ANS(v->pos ? ERROR_NOT_SUPPORTED : ERROR_SUCCESS, 0, 0);
	case VDC_GetPosition: return ANS(ERROR_SUCCESS, 0, v->pos);
	case VDC_SetPosition: /* forward only */
		if (cmd->position < v->pos || cmd->position > v->nblk)
			return ANS(ERROR_NOT_SUPPORTED, 0, v->pos);
		v->pos = (unsigned)cmd->position;
		return ANS(ERROR_SUCCESS, 0, v->pos);
	case VDC_SkipMarks:
		for (int32_t n = cmd->size; n > 0; v->pos++) {
			if (v->pos == v->nblk)
				return ANS(ERROR_NO_DATA_DETECTED, 0, 0);
			n -= v->blk[v->pos].len == 0;
		}
		v->skipped = 1;
		return ANS(ERROR_SUCCESS, 0, 0);
	case VDC_WriteMark:
	case VDC_Write:
		ck_assert_msg(v->pos == v->nblk, "tape device '%s': %s at block %u of %u", v->name,
		              vdi_strcommand(cmd->commandCode), v->pos, v->nblk);
		if (cmd->commandCode == VDC_Write)
			append(v, cmd->buffer, (size_t)cmd->size);
		blk_add(v, cmd->commandCode == VDC_Write ? (uint32_t)cmd->size : 0);
		return ANS(ERROR_SUCCESS, cmd->commandCode == VDC_Write ? cmd->size : 0, 0);
	case VDC_Read:
		if (v->mark_hit) /* sticky until VDC_ClearError */
			return ANS(ERROR_FILEMARK_DETECTED, 0, 0);
		if (!b)
			return ANS(ERROR_NO_DATA_DETECTED, 0, 0);
		if (!b->len) {
			v->pos++;
			v->mark_hit = 1;
			return ANS(ERROR_FILEMARK_DETECTED, 0, 0);
		}
		if (b->len > (uint32_t)cmd->size)
			return ANS(ERROR_MORE_DATA, 0, 0);
		memcpy(cmd->buffer, v->data + b->off, b->len);
		v->pos++;
		return ANS(ERROR_SUCCESS, b->len, 0);
	default: return ANS(ERROR_NOT_SUPPORTED, 0, 0);
	}
}

/* Disk: positions are byte offsets; data comes at the current one. */
static struct ans disk_answer(struct ex *e, struct dev *v, const VDC_Command *cmd)
{
	size_t cur = e->backup ? v->len : v->off;
	uint64_t p = (uint64_t)cmd->position;

	switch (cmd->commandCode) {
	case VDC_GetPosition: return ANS(ERROR_SUCCESS, 0, cur);
	case VDC_SetPosition:
		if (cmd->size != VDC_Beginning || p < cur || (e->backup && p != cur) || p > v->len)
			return ANS(ERROR_NOT_SUPPORTED, 0, cur);
		if (!e->backup)
			v->off = (size_t)p;
		return ANS(ERROR_SUCCESS, 0, p);
	case VDC_Write:
		if (p != cur)
			return ANS(ERROR_NOT_SUPPORTED, 0, 0);
		append(v, cmd->buffer, (size_t)cmd->size);
		return ANS(ERROR_SUCCESS, cmd->size, 0);
	case VDC_Read: {
		uint32_t n;

		if (p >= v->len) /* behind the end */
			return ANS(ERROR_HANDLE_EOF, 0, 0);
		if (p != cur)
			return ANS(ERROR_NOT_SUPPORTED, 0, 0);
		n = serve_bytes(v, cmd->buffer, (size_t)cmd->size, v->len);
		return ANS(n < (uint32_t)cmd->size ? ERROR_HANDLE_EOF : ERROR_SUCCESS, n, 0);
	}
	default: return ANS(ERROR_NOT_SUPPORTED, 0, 0);
	}
}

static void hold_now(struct dev *v)
{
	v->hold = 1;
	v->last_ms = tl_now_ms();
}

/* Removable backup: e->medium bytes a medium; spec 10.5. */
static struct ans media_write(struct ex *e, struct dev *v, const VDC_Command *cmd)
{
	size_t used = v->len - (v->nbound ? v->bound[v->nbound - 1] : 0);
	size_t room = e->medium - used;

	if (v->eom)
		return ANS(ERROR_END_OF_MEDIA, 0, 0);
	ck_assert_msg(cmd->position == (int64_t)v->len,
	              "removable device '%s': VDC_Write at position %lld after %zu bytes stored: "
	              "not in stream order",
	              v->name, (long long)cmd->position, v->len);
	if ((size_t)cmd->size <= room) {
		append(v, cmd->buffer, (size_t)cmd->size);
		return ANS(ERROR_SUCCESS, cmd->size, 0);
	}
	append(v, cmd->buffer, room);
	v->eom = 1;
	hold_now(v);
	return ANS(ERROR_END_OF_MEDIA, room, 0);
}

/* Removable restore: the backup's media, medium after medium. */
static struct ans media_read(struct dev *v, const VDC_Command *cmd)
{
	size_t end = v->medium < v->nbound ? v->bound[v->medium] : v->len;
	uint32_t n;

	if (v->at_end)
		return ANS(ERROR_HANDLE_EOF, 0, 0);
	ck_assert_msg(cmd->position == (int64_t)v->off,
	              "removable device '%s': VDC_Read at position %lld after %zu bytes served: "
	              "not in stream order",
	              v->name, (long long)cmd->position, v->off);
	n = serve_bytes(v, cmd->buffer, (size_t)cmd->size, end);
	if (n == (uint32_t)cmd->size)
		return ANS(ERROR_SUCCESS, n, 0);
	v->at_end = 1;
	if (v->medium < v->nbound)
		hold_now(v);
	return ANS(ERROR_HANDLE_EOF, n, 0);
}

static struct ans media_load(struct ex *e, struct dev *v)
{
	if (e->backup) {
		size_t used = v->len - (v->nbound ? v->bound[v->nbound - 1] : 0);

		if (!v->eom) /* at the beginning of an unused medium it is nothing */
			return ANS(used ? ERROR_NOT_SUPPORTED : ERROR_SUCCESS, 0, 0);
		ck_assert_uint_lt(v->nbound, MAX_MEDIA);
		v->bound[v->nbound++] = v->len;
		v->eom = 0;
		return ANS(ERROR_SUCCESS, 0, 0);
	}
	if (!v->at_end || v->medium == v->nbound)
		return ANS(ERROR_NOT_SUPPORTED, 0, 0);
	v->medium++;
	v->at_end = 0;
	return ANS(ERROR_SUCCESS, 0, 0);
}

/* Pipe, and pipe-like removable media. */
static struct ans stream_answer(struct ex *e, struct dev *v, const VDC_Command *cmd)
{
	uint32_t n;

	switch (cmd->commandCode) {
	case VDC_Write:
		if (is_removable(e))
			return media_write(e, v, cmd);
		append(v, cmd->buffer, (size_t)cmd->size);
		return ANS(ERROR_SUCCESS, cmd->size, 0);
	case VDC_Read:
		if (is_removable(e))
			return media_read(v, cmd);
		n = serve_bytes(v, cmd->buffer, (size_t)cmd->size, v->len);
		return ANS(n < (uint32_t)cmd->size ? ERROR_HANDLE_EOF : ERROR_SUCCESS, n, 0);
	case VDC_Load:
		if (is_removable(e))
			return media_load(e, v);
		return ANS(ERROR_NOT_SUPPORTED, 0, 0);
	default: return ANS(ERROR_NOT_SUPPORTED, 0, 0);
	}
}

/* Completes one held command as the device type does. */
static void answer(struct ex *e, struct dev *v, const struct held *h)
{
	VDC_Command *cmd = h->cmd;
	struct ans a = ANS(ERROR_SUCCESS, 0, 0);
	int rc;

	switch (cmd->commandCode) {
	case VDC_Flush:
		/* everything before it must be stored: never at a full medium */
		ck_assert_msg(!v->eom,
		              "device '%s': VDC_Flush (command %u) while the medium is full",
		              v->name, v->nrec);
		break;
	case VDC_Complete: break;
	case VDC_ClearError: v->mark_hit = 0; break;
	case VDC_Discard:
		if (!(e->offer & VDF_Discard))
			a.code = ERROR_NOT_SUPPORTED;
		break;
	default:
		a = is_tape(e)   ? tape_answer(v, cmd)
		    : is_disk(e) ? disk_answer(e, v, cmd)
		                 : stream_answer(e, v, cmd);
	}
	v->rec[h->rec].answer = a.pos;
	rc = vdi_client_complete_command(v->d, cmd, a.code, a.bytes, a.pos);
	if (rc == VD_E_ABORT && e->fails)
		return; /* GetCommand says so next */
	ck_assert_msg(rc == 0, "device '%s': CompleteCommand(%s): %s (%s)", v->name,
	              vdi_strcommand(cmd->commandCode), vdi_strerror(rc), vdi_last_error());
}

/* Completes what a device holds, oldest first, unless it holds for the
 * server to be quiet. */
static void complete_held(struct ex *e, struct dev *v)
{
	while (v->nheld && !holding(e, v)) {
		struct held h = v->held[0];

		memmove(v->held, v->held + 1, --v->nheld * sizeof(h));
		answer(e, v, &h);
	}
}

/* Serves every device to its end (VD_E_CLOSE, or VD_E_ABORT when the
 * statement must fail). */
static void serve(struct ex *e)
{
	uint64_t end = tl_now_ms() + RUN_MS;
	uint32_t open;

	for (;;) {
		open = 0;
		for (uint32_t i = 0; i < e->ndev; i++) {
			complete_held(e, &e->dev[i]);
			open += !e->dev[i].closed;
		}
		if (!open)
			break;
		ck_assert_msg(tl_now_ms() < end, "devices not closed within %u ms", RUN_MS);
		if (!poll_all(e))
			tl_sleep_ms(1);
	}
}

/* -------------------------------------------------------------- checks */

/* Data commands of one device: code, size, position (on removable media
 * the positions of re-issued rests and of reads after VDC_Load are
 * checked by the client as it stores or serves them). */
static void check_data(const struct ex *e, const struct dev *v, uint32_t code)
{
	int64_t off = 0;

	for (unsigned k = 0; k < v->nrec; k++) {
		const struct rec *r = &v->rec[k];

		if (r->code != VDC_Read && r->code != VDC_Write)
			continue;
		ck_assert_msg(r->code == code, "device '%s' command %u: %s in a %s", v->name, k,
		              vdi_strcommand(r->code), code == VDC_Write ? "backup" : "restore");
		ck_assert_msg(r->size > 0 && (uint32_t)r->size <= e->mts &&
		                      (uint32_t)r->size % e->block == 0,
		              "device '%s' command %u: %d bytes (BLOCKSIZE %u, MAXTRANSFERSIZE %u)",
		              v->name, k, r->size, e->block, e->mts);
		ck_assert_msg(is_removable(e) || r->position == off,
		              "device '%s' command %u: position %lld, offset %lld", v->name, k,
		              (long long)r->position, (long long)off);
		off += r->size;
	}
}

/* One letter a command: r Read, W Write, E ClearError, R Rewind, M
 * WriteMark, K SkipMarks, B SkipBlocks, L Load, P GetPosition, S
 * SetPosition, D Discard, F Flush, C Complete. */
static char letter(uint32_t code)
{
	static const char map[] = "?rWERMKBLPSDF??????C";

	return code < sizeof(map) - 1 ? map[code] : '?';
}

/* What `vdi exec` sends, per device type (docs/vdi.1 "Device types"). */
static const char *expected_sequence(const struct ex *e)
{
	if (is_tape(e))
		return e->backup ? "^RPWMPW+MMPFC?$" : "^RPrKPSr+E$";
	if (is_disk(e))
		return e->backup ? "^SPW+FC?$" : "^SPr+PE$";
	if (is_removable(e))
		return e->backup ? "^W[WLF]*WFC?$" : "^r[rL]*E$"; /* F: extra flushes */
	return e->backup ? "^[WF]+C?$" : "^r+E$";
}

static void check_sequence(const struct ex *e, const struct dev *v, const char *pattern)
{
	char s[MAX_REC + 1];
	regex_t re;
	int ok;

	for (unsigned k = 0; k < v->nrec; k++)
		s[k] = letter(v->rec[k].code);
	s[v->nrec] = '\0';
	ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
	ok = regexec(&re, s, 0, NULL, 0) == 0;
	regfree(&re);
	ck_assert_msg(ok, "%s device '%s', %s: commands %s, expected %s", type_name(e), v->name,
	              e->backup ? "backup" : "restore", s, pattern);
}

static unsigned count(const struct dev *v, uint32_t code)
{
	unsigned n = 0;

	for (unsigned k = 0; k < v->nrec; k++)
		n += v->rec[k].code == code;
	return n;
}

/* Backup order: data (and extra flushes), VDC_Flush, [VDC_Complete]. */
static void check_backup_order(const struct ex *e, const struct dev *v, unsigned extra)
{
	unsigned n = v->nrec, last_write = 0, before_last_write = 0;

	ck_assert_uint_ge(n, 2);
	for (unsigned k = 0; k < n; k++)
		if (v->rec[k].code == VDC_Write)
			last_write = k;
	for (unsigned k = 0; k < n; k++)
		before_last_write += v->rec[k].code == VDC_Flush && k < last_write;
	if (e->ask_complete) {
		ck_assert_msg(v->rec[n - 1].code == VDC_Complete, "device '%s': last command %s",
		              v->name, vdi_strcommand(v->rec[n - 1].code));
		n--;
	}
	ck_assert_msg(v->rec[n - 1].code == VDC_Flush,
	              "device '%s': %s before the end, not VDC_Flush", v->name,
	              vdi_strcommand(v->rec[n - 1].code));
	ck_assert_uint_eq(count(v, VDC_Flush), extra + 1);
	ck_assert_msg(before_last_write == extra, "device '%s': %u of %u extra flushes mid-stream",
	              v->name, before_last_write, extra);
}

/* The inputs of the media commands, and what the medium holds after the
 * backup (the sequence was checked). */
static void check_media_backup(const struct ex *e, const struct dev *v)
{
	const struct rec *r = v->rec;

	if (is_tape(e)) {
		ck_assert_msg(r[2].size == (int32_t)e->block,
		              "tape device '%s': the stripe header's block is %d bytes, "
		              "BLOCKSIZE %u",
		              v->name, r[2].size, e->block);
		ck_assert_uint_eq(r[v->nrec - (e->ask_complete ? 3 : 2)].answer, v->nblk);
	}
	if (is_disk(e))
		ck_assert_msg(r[0].size == VDC_Beginning && r[0].position == 0,
		              "disk device '%s': VDC_SetPosition(%lld, whence %d), expected (0, "
		              "VDC_Beginning)",
		              v->name, (long long)r[0].position, r[0].size);
	if (is_removable(e)) {
		ck_assert_msg(v->nbound >= 1 && count(v, VDC_Load) == v->nbound,
		              "removable device '%s': %u VDC_Load, %u media filled", v->name,
		              count(v, VDC_Load), v->nbound);
		for (unsigned i = 0; i < v->nbound; i++)
			ck_assert_msg(v->bound[i] == (i + 1) * e->medium,
			              "removable device '%s': medium %u ends at stream byte %zu, "
			              "not full (%zu bytes a medium)",
			              v->name, i, v->bound[i], e->medium);
	}
}

static void check_media_restore(const struct ex *e, const struct dev *v)
{
	const struct rec *r = v->rec;

	if (is_tape(e)) {
		ck_assert_msg(r[3].size == 1 && r[5].position == 2,
		              "tape device '%s': VDC_SkipMarks(%d), VDC_SetPosition(%lld), "
		              "expected 1 and block 2",
		              v->name, r[3].size, (long long)r[5].position);
		/* every record read, up to the filemark after the data */
		ck_assert_msg(v->pos == v->nblk - 1 && !v->mark_hit,
		              "tape device '%s': at block %u of %u, filemark condition %s", v->name,
		              v->pos, v->nblk, v->mark_hit ? "not cleared" : "cleared");
		return;
	}
	ck_assert_msg(v->off == v->len, "device '%s': the server read %zu of %zu stripe bytes",
	              v->name, v->off, v->len);
	if (is_disk(e)) {
		ck_assert_msg(r[0].size == VDC_Beginning && r[0].position == 0,
		              "disk device '%s': VDC_SetPosition(%lld, whence %d)", v->name,
		              (long long)r[0].position, r[0].size);
		ck_assert_uint_eq(r[v->nrec - 2].answer, v->len);
	}
	if (is_removable(e))
		ck_assert_msg(count(v, VDC_Load) == v->nbound && v->medium == v->nbound,
		              "removable device '%s': %u VDC_Load for %u media, at medium %u",
		              v->name, count(v, VDC_Load), v->nbound + 1, v->medium);
}

/* FAULT_STALL_AT: each such command came at least stall_ms after the one
 * before it (the server waits that long before sending it; a lower bound,
 * which a loaded machine only lengthens). */
static void check_stall(const struct ex *e, const struct dev *v)
{
	unsigned seen = 0;

	if (!e->stall_at)
		return;
	for (unsigned k = 1; k < v->nrec; k++) {
		if (v->rec[k].code != e->stall_at)
			continue;
		seen++;
		ck_assert_msg(v->rec[k].t_ms - v->rec[k - 1].t_ms >= e->stall_ms,
		              "device '%s': %s (command %u) came %llu ms after the one before it, "
		              "FAULT_STALL is %u ms",
		              v->name, vdi_strcommand(e->stall_at), k,
		              (unsigned long long)(v->rec[k].t_ms - v->rec[k - 1].t_ms),
		              e->stall_ms);
	}
	ck_assert_msg(seen > 0, "device '%s': no %s to stall", v->name,
	              vdi_strcommand(e->stall_at));
}

/* A failed statement: what must not have reached any device. */
static void check_failed(const struct ex *e)
{
	for (uint32_t i = 0; i < e->ndev; i++)
		ck_assert_msg(!e->never || count(&e->dev[i], e->never) == 0,
		              "device '%s' got %s after the statement failed before it",
		              e->dev[i].name, vdi_strcommand(e->never));
}

/* --------------------------------------------------------------- runs */

/* BACKUP of a database of `size` bytes through the raw client; leaves
 * each device's stripe in e->dev[i].data and the database in
 * dir/<set>.mdf. */
static void run_backup(struct ex *e, size_t size, unsigned extra, uint8_t **db)
{
	char stmt[1024], devs[512], path[160];

	*db = malloc(size + 1);
	ck_assert_ptr_nonnull(*db);
	fill_random(*db, size, (uint32_t)size);
	snprintf(path, sizeof(path), "%s/%s.mdf", e->dir, e->set);
	write_file(path, *db, size);
	device_list(e, devs, sizeof(devs));
	snprintf(
		stmt, sizeof(stmt),
		"BACKUP DATABASE [%s] TO %s WITH BLOCKSIZE=%u, BUFFERCOUNT=%u, MAXTRANSFERSIZE=%u, "
		"FAULT_EXTRA_FLUSHES=%u%s",
		e->set, devs, e->block, e->bufcount, e->mts, extra, e->opts);
	ex_start(e, stmt, 1);
	/* A flush is waited for: while one is held nothing else comes; so is
	 * each media command of a tape or disk before the data. */
	if (!extra && !e->fails && !is_tape(e) && !is_disk(e))
		hold_until_blocked(e);
	serve(e);
	ex_finish(e);
	if (e->fails) {
		check_failed(e);
		return;
	}
	for (uint32_t i = 0; i < e->ndev; i++) {
		const struct dev *v = &e->dev[i];
		unsigned first = is_tape(e) ? 2 : is_disk(e) ? 2 : 0;

		check_sequence(e, v, expected_sequence(e));
		check_stall(e, v);
		check_data(e, v, VDC_Write);
		check_backup_order(e, v, extra);
		check_media_backup(e, v);
		/* the stripe header travels alone where BLOCKSIZE allows */
		if (!is_tape(e) && 512 % e->block == 0)
			ck_assert_msg(v->rec[first].size == 512,
			              "device '%s': first VDC_Write of %d bytes, not the 512-byte "
			              "header",
			              v->name, v->rec[first].size);
	}
}

/* RESTORE into a new database (named after this set) from the stripes of
 * a backup, devices given in reverse order; the file must equal the
 * original.  corrupt: one byte of the first device's stripe is flipped,
 * and the restore must fail. */
static void run_restore(struct ex *e, const struct ex *from, const uint8_t *db, size_t size,
                        int corrupt)
{
	char stmt[1024], devs[512], path[160], mts[40] = "";
	uint8_t *got;
	size_t n;

	for (uint32_t i = 0; i < e->ndev; i++) {
		struct dev *v = &e->dev[i];
		const struct dev *src = &from->dev[e->ndev - 1 - i];

		append(v, src->data, src->len);
		v->blk = malloc((src->nblk + 1) * sizeof(*v->blk));
		ck_assert_ptr_nonnull(v->blk);
		if (src->nblk)
			memcpy(v->blk, src->blk, src->nblk * sizeof(*v->blk));
		v->nblk = v->blkcap = src->nblk;
		memcpy(v->bound, src->bound, sizeof(v->bound));
		v->nbound = src->nbound;
	}
	if (corrupt)
		e->dev[0].data[e->dev[0].len / 2] ^= 0x5a;
	device_list(e, devs, sizeof(devs));
	if (e->mts)
		snprintf(mts, sizeof(mts), ", MAXTRANSFERSIZE=%u", e->mts);
	else /* a tape block is read whole: any size the backup used fits */
		e->mts = VDI_MAX_MAXTRANSFER;
	snprintf(stmt, sizeof(stmt),
	         "RESTORE DATABASE [%s] FROM %s WITH BLOCKSIZE=%u, BUFFERCOUNT=%u%s%s", e->set,
	         devs, e->block, e->bufcount, mts, e->opts);
	ex_start(e, stmt, 0);
	if (!is_tape(e) && !is_disk(e))
		hold_until_blocked(e);
	serve(e);
	ex_finish(e);
	snprintf(path, sizeof(path), "%s/%s.mdf", e->dir, e->set);
	if (e->fails) {
		check_failed(e);
		for (uint32_t i = 0; i < e->ndev; i++)
			ck_assert_msg(count(&e->dev[i], VDC_Discard) == !!(e->offer & VDF_Discard),
			              "device '%s': %u VDC_Discard, VDF_Discard %s", e->dev[i].name,
			              count(&e->dev[i], VDC_Discard),
			              e->offer & VDF_Discard ? "offered" : "not offered");
		ck_assert_msg(access(path, F_OK) != 0, "the failed restore left %s", path);
		return;
	}
	for (uint32_t i = 0; i < e->ndev; i++) {
		const struct dev *v = &e->dev[i];

		check_sequence(e, v, expected_sequence(e));
		check_stall(e, v);
		check_data(e, v, VDC_Read);
		check_media_restore(e, v);
	}
	got = read_file(path, &n);
	ck_assert_uint_eq(n, size);
	ck_assert_msg(memcmp(got, db, size) == 0, "restored database differs");
	free(got);
}

/* ---------------------------------------------------------------- tests */

/* ndev, BLOCKSIZE, MAXTRANSFERSIZE, BUFFERCOUNT, VDF_RequestComplete */
#define GEO(n, bs, xfer, bc, cmpl) \
	.ndev = (n), .block = (bs), .mts = (xfer), .bufcount = (bc), .ask_complete = (cmpl)
#define TAPE      .offer = VDF_LikeTape
#define DISK      .offer = VDF_RandomAccess
#define REMOVABLE .offer = VDF_Removable

/* Each row: a backup with one geometry, then a restore of its stripes
 * with another (same device count; none if r.ndev is 0), then another
 * restore of the same stripes (if r2.ndev). */
static const struct row {
	const char *what;
	size_t size;
	unsigned extra_flushes;
	struct geo b, r, r2;
	size_t medium; /* removable backup: bytes a medium */
	int corrupt;   /* the restore's first stripe has a byte flipped */
} rows[] = {
	{ .what = "one device, VDC_Complete, three extra flushes",
	  .size = 3 * 1048576 + 777,
	  .extra_flushes = 3,
	  .b = { GEO(1, 4096, 131072, 5, 1) },
	  .r = { GEO(1, 4096, 65536, 3, 0) } }, /* the same BLOCKSIZE: spec 4.1 */
	{ .what = "three devices share BUFFERCOUNT, no VDC_Complete",
	  .size = 7 * 1048576 + 4095,
	  .b = { GEO(3, 65536, 262144, 7, 0) },
	  .r = { GEO(3, 65536, 1048576, 4, 1) } },
	{ .what = "empty database: every device still opens, flushes, closes",
	  .size = 0,
	  .extra_flushes = 1,
	  .b = { GEO(2, 512, 65536, 2, 1) },
	  .r = { GEO(2, 512, 65536, 2, 0) } },
	{ .what = "tape, one device, BLOCKSIZE 512",
	  .size = 1048576 + 333,
	  .b = { GEO(1, 512, 65536, 4, 1), TAPE },
	  .r = { GEO(1, 512, 65536, 4, 0), TAPE } },
	{ .what = "tape, one device, BLOCKSIZE 4096",
	  .size = 1048576 + 4444,
	  .b = { GEO(1, 4096, 131072, 3, 0), TAPE },
	  .r = { GEO(1, 4096, 131072, 5, 0), TAPE } },
	{ .what = "tape, three devices, BLOCKSIZE 512",
	  .size = 3 * 1048576 + 55,
	  .b = { GEO(3, 512, 65536, 6, 0), TAPE },
	  .r = { GEO(3, 512, 65536, 6, 0), TAPE } },
	{ .what = "tape, three devices, BLOCKSIZE 4096, VDC_Complete",
	  .size = 3 * 1048576 + 8191,
	  .b = { GEO(3, 4096, 262144, 9, 1), TAPE },
	  .r = { GEO(3, 4096, 262144, 4, 0), TAPE } },
	{ .what = "tape, restore without MAXTRANSFERSIZE: reads of 4 MiB",
	  .size = 1048576 + 4097,
	  .b = { GEO(2, 4096, 1048576, 4, 0), TAPE },
	  .r = { GEO(2, 4096, 0, 4, 0), TAPE } },
	{ .what = "tape, restore with a smaller MAXTRANSFERSIZE: ERROR_MORE_DATA fails it",
	  .size = 1048576,
	  .b = { GEO(1, 512, 131072, 4, 0), TAPE },
	  .r = { GEO(1, 512, 65536, 4, 0), TAPE, .fails = "larger than MAXTRANSFERSIZE" } },
	{ .what = "disk, two devices: byte positions from VDC_SetPosition(0)",
	  .size = 2 * 1048576 + 99,
	  .b = { GEO(2, 4096, 131072, 4, 1), DISK },
	  .r = { GEO(2, 4096, 65536, 6, 0), DISK } },
	{ .what = "removable, two devices, media of 2.5 transfers: restored from the media, "
	          "then as one pipe stream",
	  .size = 2 * 1048576 + 1234,
	  .b = { GEO(2, 512, 65536, 6, 1), REMOVABLE },
	  .r = { GEO(2, 512, 131072, 6, 0), REMOVABLE },
	  .r2 = { GEO(2, 512, 65536, 4, 0) },
	  .medium = 5 * 65536 / 2 },
	{ .what = "removable, extra flushes: each after every byte before it is stored",
	  .size = 2 * 1048576 + 1234,
	  .extra_flushes = 6,
	  .b = { GEO(1, 512, 65536, 6, 1), REMOVABLE },
	  .medium = 5 * 65536 / 2 },
	{ .what = "corrupt stripe, VDF_Discard offered: VDC_Discard on every device",
	  .size = 3 * 1048576 + 17,
	  .b = { GEO(2, 512, 65536, 4, 0) },
	  .r = { GEO(2, 512, 65536, 4, 0), .offer = VDF_Discard, .fails = "corrupt" },
	  .corrupt = 1 },
	{ .what = "corrupt stripe, VDF_Discard not offered: no VDC_Discard",
	  .size = 3 * 1048576 + 17,
	  .b = { GEO(2, 512, 65536, 4, 0) },
	  .r = { GEO(2, 512, 65536, 4, 0), .fails = "corrupt" },
	  .corrupt = 1 },
	{ .what = "tape, FAULT_FAIL_AT='VDC_WriteMark': no filemark, the set aborted",
	  .size = 1048576,
	  .b = { GEO(3, 512, 65536, 6, 0), TAPE, .opts = ", FAULT_FAIL_AT='VDC_WriteMark'",
	         .fails = "FAULT_FAIL_AT", .never = VDC_WriteMark } },
	{ .what = "tape, FAULT_STALL_AT='VDC_GetPosition', FAULT_STALL=300",
	  .size = 1048576 + 1,
	  .b = { GEO(2, 512, 65536, 4, 0), TAPE,
	         .opts = ", FAULT_STALL_AT='VDC_GetPosition', FAULT_STALL=300",
	         .stall_at = VDC_GetPosition, .stall_ms = 300 },
	  .r = { GEO(2, 512, 65536, 4, 0), TAPE } },
	{ .what = "--both-media: VDF_WriteMedia|VDF_ReadMedia, Writes only in a backup",
	  .size = 2 * 1048576 + 3,
	  .b = { GEO(2, 4096, 131072, 4, 1), .both = 1 },
	  .r = { GEO(2, 4096, 131072, 4, 0), .both = 1 } },
};

START_TEST(backup_then_restore)
{
	const struct row *w = &rows[_i];
	struct ex b, r;
	uint8_t *db;

	fprintf(stderr, "check_cli_exec: %s\n", w->what);
	ex_init(&b, &w->b, w->medium);
	run_backup(&b, w->size, w->extra_flushes, &db);
	if (w->r.ndev) {
		ex_init(&r, &w->r, w->medium);
		run_restore(&r, &b, db, w->size, w->corrupt);
		ex_free(&r);
	}
	if (w->r2.ndev) {
		ex_init(&r, &w->r2, w->medium);
		run_restore(&r, &b, db, w->size, 0);
		ex_free(&r);
	}
	ex_free(&b);
	free(db);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cli_exec");
	TCase *tc = tcase_create("protocol");

	tcase_set_timeout(tc, 120);
	tcase_add_unchecked_fixture(tc, dir_make, dir_remove);
	tcase_add_loop_test(tc, backup_then_restore, 0, (int)(sizeof(rows) / sizeof(rows[0])));
	suite_add_tcase(s, tc);
	return tl_run_suite(s);
}
