/* SPDX-License-Identifier: MIT */
/*
 * check_cli_exec.c - `vdi exec` seen from a raw client (issue 3.3).
 *
 * The round trips (tests/integration/cli_*.sh) prove the bytes; this
 * suite proves the protocol `vdi exec` speaks, command by command, the
 * way a vendor's client would see it.  The server is `vdi exec` in a
 * forked process (cli_main, the same code as the binary); the client is
 * this process on libvdi's raw client half, one thread polling every
 * device, recording every command.  Checked:
 *   - the configuration: VDF_WriteMedia or VDF_ReadMedia, and
 *     VDF_CompleteEnabled exactly when VDF_RequestComplete was asked
 *     of a backup (D19);
 *     the statement's BLOCKSIZE and MAXTRANSFERSIZE;
 *   - at most BUFFERCOUNT commands outstanding across all devices (the
 *     client holds everything it is sent until nothing more comes), and
 *     more than one (the server pipelines); not with extra flushes, as
 *     the server waits for each VDC_Flush before it goes on;
 *   - every data command is the direction's code, a BLOCKSIZE multiple
 *     up to MAXTRANSFERSIZE, at position = the device's byte offset;
 *   - backup: the stream ends with VDC_Flush, then VDC_Complete when
 *     negotiated, then VD_E_CLOSE; FAULT_EXTRA_FLUSHES=n adds n flushes
 *     mid-stream, before the last VDC_Write;
 *   - restore: the stripes captured from the backup fed back through
 *     VDC_Read (the last with ERROR_HANDLE_EOF) rebuild the database
 *     byte for byte; no VDC_Flush or VDC_Complete;
 *   - `vdi exec` exits 0, and nothing is left in /dev/shm.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#define HOLD_QUIET_MS 300    /* no new command this long: the server is blocked */
#define RUN_MS        30000u /* bound of one whole exchange */

struct rec {
	uint32_t code;
	int32_t size;
	int64_t position;
};

struct dev {
	char name[TL_NAME_MAX + 8];
	struct vdi_client_device *d;
	struct rec rec[MAX_REC];
	unsigned nrec;
	VDC_Command *held[VDI_QUEUE_DEPTH];
	unsigned nheld;
	uint8_t *data; /* backup: bytes received; restore: bytes to send */
	size_t len, cap, off;
	int closed;
};

struct ex {
	char dir[64];
	char set[TL_NAME_MAX];
	uint32_t ndev, block, mts, bufcount;
	int ask_complete;
	struct vdi_client *c;
	VDConfig cfg;
	struct dev dev[NDEV_MAX];
	pid_t kid;
};

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
	*n = (size_t)st.st_size;
	return p;
}

static void append(struct dev *v, const void *p, size_t n)
{
	if (v->len + n > v->cap) {
		v->cap = (v->len + n) * 2;
		v->data = realloc(v->data, v->cap);
		ck_assert_ptr_nonnull(v->data);
	}
	memcpy(v->data + v->len, p, n);
	v->len += n;
}

static void ex_init(struct ex *e, uint32_t ndev, uint32_t block, uint32_t mts, uint32_t bufcount,
                    int ask_complete)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->dir, sizeof(e->dir), "%s", g_dir);
	tl_name(e->set);
	e->ndev = ndev;
	e->block = block;
	e->mts = mts;
	e->bufcount = bufcount;
	e->ask_complete = ask_complete;
	for (uint32_t i = 0; i < ndev; i++)
		snprintf(e->dev[i].name, sizeof(e->dev[i].name), i ? "%s-%u" : "%s", e->set, i);
}

static void ex_free(struct ex *e)
{
	for (uint32_t i = 0; i < e->ndev; i++)
		free(e->dev[i].data);
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

/* The client creates the set, then `vdi exec stmt` starts as the server. */
static void ex_start(struct ex *e, const char *stmt, int backup)
{
	char *argv[] = { "vdi", "exec", "-q", "-D", e->dir, "-t", "10000", (char *)stmt, NULL };
	VDConfig cfg;
	pid_t parent = getpid();

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = e->ndev;
	cfg.features = e->ask_complete ? VDF_RequestComplete : 0;
	TL_OK(vdi_client_new(&e->c));
	TL_OK(vdi_client_create(e->c, e->set, &cfg));
	e->kid = fork();
	ck_assert_int_ge(e->kid, 0);
	if (e->kid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(3);
		alarm(60);
		_exit(cli_main(8, argv));
	}
	TL_OK(vdi_client_get_configuration(e->c, 10000, &e->cfg));
	ck_assert_uint_eq(e->cfg.deviceCount, e->ndev);
	ck_assert_uint_eq(e->cfg.blockSize, e->block);
	ck_assert_uint_eq(e->cfg.maxTransferSize, e->mts);
	/* VDC_Complete ends a backup only (D19). */
	ck_assert_msg(!(e->cfg.features & VDF_CompleteEnabled) == !(e->ask_complete && backup),
	              "features 0x%x, VDF_RequestComplete %s, %s", e->cfg.features,
	              e->ask_complete ? "asked" : "not asked", backup ? "backup" : "restore");
	for (uint32_t i = 0; i < e->ndev; i++)
		TL_OK(vdi_client_open_device(e->c, e->dev[i].name, &e->dev[i].d));
}

static void ex_finish(struct ex *e)
{
	int st = 0;
	uint64_t end = tl_now_ms() + 10000;

	while (waitpid(e->kid, &st, WNOHANG) == 0) {
		if (tl_now_ms() > end) {
			kill(e->kid, SIGKILL);
			waitpid(e->kid, &st, 0);
			ck_abort_msg("vdi exec still running 10 s after its devices closed");
		}
		tl_sleep_ms(5);
	}
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "vdi exec: status 0x%x", st);
	TL_OK(vdi_client_close(e->c));
	vdi_client_free(e->c);
	ck_assert_int_eq(tl_shm_count_set(e->set), 0);
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
		if (rc == VD_E_CLOSE) {
			v->closed = 1;
			continue;
		}
		ck_assert_msg(rc == 0, "device '%s': GetCommand: %s (%s)", v->name,
		              vdi_strerror(rc), vdi_last_error());
		ck_assert_uint_lt(v->nrec, MAX_REC);
		ck_assert_uint_lt(v->nheld, VDI_QUEUE_DEPTH);
		v->rec[v->nrec++] =
			(struct rec){ (uint32_t)cmd->commandCode, cmd->size, cmd->position };
		v->held[v->nheld++] = cmd;
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

/* Completes what a device holds, oldest first: VDC_Write data is taken,
 * VDC_Read is served from v->data (ERROR_HANDLE_EOF at its end). */
static void complete_held(struct dev *v)
{
	for (unsigned k = 0; k < v->nheld; k++) {
		VDC_Command *cmd = v->held[k];
		uint32_t code = ERROR_SUCCESS, bytes = 0;

		if (cmd->commandCode == VDC_Write) {
			append(v, cmd->buffer, (size_t)cmd->size);
			bytes = (uint32_t)cmd->size;
		} else if (cmd->commandCode == VDC_Read) {
			size_t left = v->len - v->off;

			bytes = left < (size_t)cmd->size ? (uint32_t)left : (uint32_t)cmd->size;
			memcpy(cmd->buffer, v->data + v->off, bytes);
			v->off += bytes;
			if (bytes < (uint32_t)cmd->size)
				code = ERROR_HANDLE_EOF;
		}
		TL_OK(vdi_client_complete_command(v->d, cmd, code, bytes, 0));
	}
	v->nheld = 0;
}

/* Serves every device to its end (VD_E_CLOSE). */
static void serve(struct ex *e)
{
	uint64_t end = tl_now_ms() + RUN_MS;
	uint32_t open;

	for (;;) {
		open = 0;
		for (uint32_t i = 0; i < e->ndev; i++) {
			complete_held(&e->dev[i]);
			open += !e->dev[i].closed;
		}
		if (!open)
			break;
		ck_assert_msg(tl_now_ms() < end, "devices not closed within %u ms", RUN_MS);
		if (!poll_all(e))
			tl_sleep_ms(1);
	}
}

/* Data commands of one device: code, size, position. */
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
		ck_assert_msg(r->position == off,
		              "device '%s' command %u: position %lld, offset %lld", v->name, k,
		              (long long)r->position, (long long)off);
		off += r->size;
	}
}

/* Backup order: data (and extra flushes), VDC_Flush, [VDC_Complete]. */
static void check_backup_order(const struct ex *e, const struct dev *v, unsigned extra)
{
	unsigned n = v->nrec, flushes = 0, last_write = 0, before_last_write = 0;

	ck_assert_uint_ge(n, 2);
	for (unsigned k = 0; k < n; k++) {
		uint32_t c = v->rec[k].code;

		ck_assert_msg(c == VDC_Write || c == VDC_Flush || (c == VDC_Complete && k == n - 1),
		              "device '%s' command %u of %u: %s", v->name, k, n, vdi_strcommand(c));
		if (c == VDC_Write)
			last_write = k;
	}
	for (unsigned k = 0; k < n; k++) {
		flushes += v->rec[k].code == VDC_Flush;
		before_last_write += v->rec[k].code == VDC_Flush && k < last_write;
	}
	if (e->ask_complete) {
		ck_assert_msg(v->rec[n - 1].code == VDC_Complete, "device '%s': last command %s",
		              v->name, vdi_strcommand(v->rec[n - 1].code));
		n--;
	}
	ck_assert_msg(v->rec[n - 1].code == VDC_Flush,
	              "device '%s': %s before the end, not VDC_Flush", v->name,
	              vdi_strcommand(v->rec[n - 1].code));
	ck_assert_uint_eq(flushes, extra + 1);
	ck_assert_msg(before_last_write == extra, "device '%s': %u of %u extra flushes mid-stream",
	              v->name, before_last_write, extra);
}

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
		"FAULT_EXTRA_FLUSHES=%u",
		e->set, devs, e->block, e->bufcount, e->mts, extra);
	ex_start(e, stmt, 1);
	ck_assert_msg((e->cfg.features & (VDF_WriteMedia | VDF_ReadMedia)) == VDF_WriteMedia,
	              "backup features 0x%x", e->cfg.features);
	/* A flush is waited for: while one is held nothing else comes. */
	if (!extra)
		hold_until_blocked(e);
	serve(e);
	ex_finish(e);
	for (uint32_t i = 0; i < e->ndev; i++) {
		check_data(e, &e->dev[i], VDC_Write);
		check_backup_order(e, &e->dev[i], extra);
		/* the stripe header travels alone where BLOCKSIZE allows */
		if (512 % e->block == 0)
			ck_assert_msg(
				e->dev[i].rec[0].code == VDC_Write && e->dev[i].rec[0].size == 512,
				"device '%s': first command %s of %d bytes, not the 512-byte header",
				e->dev[i].name, vdi_strcommand(e->dev[i].rec[0].code),
				e->dev[i].rec[0].size);
	}
}

/* RESTORE into a new database (named after this set) from the stripes of a backup, devices given in
 * reverse order; the file must equal the original. */
static void run_restore(struct ex *e, const struct ex *from, const uint8_t *db, size_t size)
{
	char stmt[1024], devs[512], path[160];
	uint8_t *got;
	size_t n;

	for (uint32_t i = 0; i < e->ndev; i++) {
		struct dev *v = &e->dev[i];

		append(v, from->dev[e->ndev - 1 - i].data, from->dev[e->ndev - 1 - i].len);
	}
	device_list(e, devs, sizeof(devs));
	snprintf(
		stmt, sizeof(stmt),
		"RESTORE DATABASE [%s] FROM %s WITH BLOCKSIZE=%u, BUFFERCOUNT=%u, MAXTRANSFERSIZE=%u",
		e->set, devs, e->block, e->bufcount, e->mts);
	ex_start(e, stmt, 0);
	ck_assert_msg((e->cfg.features & (VDF_WriteMedia | VDF_ReadMedia)) == VDF_ReadMedia,
	              "restore features 0x%x", e->cfg.features);
	hold_until_blocked(e);
	serve(e);
	ex_finish(e);
	for (uint32_t i = 0; i < e->ndev; i++) {
		const struct dev *v = &e->dev[i];

		check_data(e, v, VDC_Read);
		/* reads, then one VDC_ClearError after the end of the stream */
		ck_assert_uint_ge(v->nrec, 2);
		for (unsigned k = 0; k + 1 < v->nrec; k++)
			ck_assert_msg(v->rec[k].code == VDC_Read, "restore device '%s' got %s",
			              v->name, vdi_strcommand(v->rec[k].code));
		ck_assert_msg(v->rec[v->nrec - 1].code == VDC_ClearError,
		              "restore device '%s' ended with %s, not VDC_ClearError", v->name,
		              vdi_strcommand(v->rec[v->nrec - 1].code));
		ck_assert_msg(v->off == v->len,
		              "device '%s': the server read %zu of %zu stripe bytes", v->name,
		              v->off, v->len);
	}
	snprintf(path, sizeof(path), "%s/%s.mdf", e->dir, e->set);
	got = read_file(path, &n);
	ck_assert_uint_eq(n, size);
	ck_assert_msg(memcmp(got, db, size) == 0, "restored database differs");
	free(got);
}

/* ---------------------------------------------------------------- tests */

struct geo {
	uint32_t ndev, block, mts, bufcount;
	int ask_complete; /* the client requests VDF_RequestComplete */
};

/* Each row: a backup with one geometry, then a restore of its stripes
 * with another (same device count). */
static const struct row {
	const char *what;
	size_t size;
	unsigned extra_flushes;
	struct geo b, r;
} rows[] = {
	{ "one device, VDC_Complete, three extra flushes",
	  3 * 1048576 + 777,
	  3,
	  { 1, 4096, 131072, 5, 1 },
	  { 1, 4096, 65536, 3, 0 } }, /* the same BLOCKSIZE: spec 4.1 */
	{ "three devices share BUFFERCOUNT, no VDC_Complete",
	  7 * 1048576 + 4095,
	  0,
	  { 3, 65536, 262144, 7, 0 },
	  { 3, 65536, 1048576, 4, 1 } },
	{ "empty database: every device still opens, flushes, closes",
	  0,
	  1,
	  { 2, 512, 65536, 2, 1 },
	  { 2, 512, 65536, 2, 0 } },
};

START_TEST(backup_then_restore)
{
	const struct row *w = &rows[_i];
	struct ex b, r;
	uint8_t *db;

	fprintf(stderr, "check_cli_exec: %s\n", w->what);
	ex_init(&b, w->b.ndev, w->b.block, w->b.mts, w->b.bufcount, w->b.ask_complete);
	run_backup(&b, w->size, w->extra_flushes, &db);
	ex_init(&r, w->r.ndev, w->r.block, w->r.mts, w->r.bufcount, w->r.ask_complete);
	run_restore(&r, &b, db, w->size);
	ex_free(&r);
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
