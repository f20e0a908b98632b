/* SPDX-License-Identifier: MIT */
/*
 * exec.c - `vdi exec`: play the database engine for one BACKUP or
 * RESTORE statement (see exec.h for the threads).
 *
 * The protocol sequence is the real engine's (issue 3, item 3):
 *
 *   Open (waiting up to --timeout for the client's set)
 *   GetConfiguration            deviceCount must equal the clauses
 *   BeginConfiguration          VDF_WriteMedia (BACKUP) or VDF_ReadMedia,
 *                               | VDF_CompleteEnabled when the client asked
 *                               VDF_RequestComplete (BACKUP only, D19)
 *   RequestBuffers(MAXTRANSFERSIZE, BUFFERCOUNT), EndConfiguration
 *   ExecuteCompletionAgent on its own thread (Initializing -> Active),
 *   waited for until it runs, then OpenDevice per clause
 *   streams (exec_io.c), VDC_Flush, [VDC_Complete]
 *   CloseDevice per device only after everything verified, else abort
 *   Close
 *
 * Database names map to files: <data dir>/<db>.mdf, where the data dir
 * is --data-dir, else $VDI_DATA_DIR, else /var/lib/vdi.  RESTORE writes
 * a temporary file in the same directory and renames it over the
 * database only after every stripe verified; any failure leaves the
 * original untouched.
 */
#include "exec.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "cli.h"
#include "progress.h"

#define DEFAULT_DATA_DIR "/var/lib/vdi"
#define MAX_STATEMENT    (1 << 20)

/* ------------------------------------------------------------ options */

static char *read_all(FILE *f, const char *what)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);

	while (buf) {
		size_t n = fread(buf + len, 1, cap - len - 1, f);

		len += n;
		if (n == 0)
			break;
		if (len + 1 == cap) {
			char *nb = cap >= MAX_STATEMENT ? NULL : realloc(buf, cap * 2);

			if (!nb) {
				cli_err("cannot read statement from %s: longer than %d bytes", what,
				        MAX_STATEMENT);
				free(buf);
				return NULL;
			}
			buf = nb;
			cap *= 2;
		}
	}
	if (buf && ferror(f)) {
		cli_err("cannot read statement from %s: %s", what, strerror(errno));
		free(buf);
		return NULL;
	}
	if (buf)
		buf[len] = '\0';
	return buf;
}

static char *statement_text(int argc, char **argv, const char *file)
{
	if (file && argc > 0) {
		cli_err("exec: give the statement either with -f or as arguments, not both");
		return NULL;
	}
	if (argc > 0) {
		size_t len = 1;
		char *s;

		for (int i = 0; i < argc; i++)
			len += strlen(argv[i]) + 1;
		s = calloc(1, len);
		for (int i = 0; s && i < argc; i++) {
			strcat(s, argv[i]);
			if (i + 1 < argc)
				strcat(s, " ");
		}
		return s;
	}
	if (!file || strcmp(file, "-") == 0)
		return read_all(stdin, "standard input");
	{
		FILE *f = fopen(file, "r");
		char *s;

		if (!f) {
			cli_err("cannot open statement file '%s': %s", file, strerror(errno));
			return NULL;
		}
		s = read_all(f, file);
		fclose(f);
		return s;
	}
}

/* What the statement asks that this stand-in cannot do is refused before
 * anything starts; what it accepts without modelling is said in one line. */
static int check_supported(struct job *j)
{
	const struct stmt *st = &j->st;
	char line[2048];

	if (st->file > 1) {
		cli_err("%s: FILE=%u: a virtual device's media holds one backup set: only FILE=1",
		        stmt_name(st), st->file);
		return -1;
	}
	if ((st->given & OPT_SNAPSHOT) && st->ndev != 1) {
		cli_err("%s WITH SNAPSHOT: %u devices: a snapshot backup's metadata goes over exactly one virtual device (spec 12)",
		        stmt_name(st), st->ndev);
		return -1;
	}
	if (j->generated && (st->kind != STMT_BACKUP || st->log ||
	                     (st->given & (OPT_DIFFERENTIAL | OPT_SNAPSHOT)))) {
		cli_err("%s: --generate: only a full BACKUP DATABASE reads a generated database (it has no history and no file)",
		        stmt_name(st));
		return -1;
	}
	if (st->nmove > 1) {
		cli_err("%s: %u MOVE clauses: the stand-in's database has one file (logical name: the database name in the backup); give one MOVE",
		        stmt_name(st), st->nmove);
		return -1;
	}
	stmt_unmodelled(st, line, sizeof(line));
	if (line[0] && !j->quiet)
		cli_err("accepted without effect in this stand-in: %s", line);
	return 0;
}

static int parse_args(struct job *j, int argc, char **argv, char **text)
{
	static const struct option longopts[] = {
		{ "file", required_argument, NULL, 'f' },
		{ "data-dir", required_argument, NULL, 'D' },
		{ "timeout", required_argument, NULL, 't' },
		{ "io-timeout", required_argument, NULL, 'T' },
		{ "instance", required_argument, NULL, 'I' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "freeze-timeout", required_argument, NULL, 'Z' },
		{ "generate", required_argument, NULL, 'G' },
		{ "both-media", no_argument, NULL, 'B' },
		{ NULL, 0, NULL, 0 },
	};
	const char *file = NULL;
	char err[1024];
	int c;

	j->timeout_ms = 30000;
	j->io_timeout_ms = VDI_INFINITE;
	j->freeze_ms = 10000;
	j->data_dir = getenv("VDI_DATA_DIR");
	if (!j->data_dir || !*j->data_dir)
		j->data_dir = DEFAULT_DATA_DIR;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+f:D:t:T:I:q", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': file = optarg; break;
		case 'D': j->data_dir = optarg; break;
		case 't':
			if (cli_parse_ms("--timeout", optarg, &j->timeout_ms))
				return -1;
			break;
		case 'T':
			if (cli_parse_ms("--io-timeout", optarg, &j->io_timeout_ms))
				return -1;
			break;
		case 'I': j->instance = optarg; break;
		case 'G':
			if (cli_parse_uint("--generate", optarg, 0, UINT64_MAX >> 2, &j->generate))
				return -1;
			j->generated = 1;
			break;
		case 'Z':
			if (cli_parse_ms("--freeze-timeout", optarg, &j->freeze_ms))
				return -1;
			if (j->freeze_ms & 0x80000000u) {
				cli_err("invalid --freeze-timeout 'infinite': a freeze must end");
				return -1;
			}
			break;
		case 'q': j->quiet = 1; break;
		case 'B': j->both_media = 1; break;
		default: cli_err("exec: bad option (vdi --help)"); return -1;
		}
	}
	*text = statement_text(argc - optind, argv + optind, file);
	if (!*text)
		return -1;
	if (stmt_parse(*text, &j->st, err, sizeof(err)) < 0) {
		cli_err("%s", err);
		return -1;
	}
	return check_supported(j);
}

/* ------------------------------------------------------------ the set */

static int srv_call(struct job *j, int rc, const char *call)
{
	if (rc == 0)
		return 0;
	job_fail(j, "virtual device set '%s': %s failed: %s: %s", j->st.dev[0], call,
	         vdi_strerror(rc), vdi_last_error());
	return -1;
}

/* Waits for the client's set in slices, so that a signal (which only
 * marks the job failed while no set is open) ends the wait promptly. */
static int open_wait(struct job *j, struct vdi_server *srv)
{
	int infinite = (j->timeout_ms & 0x80000000u) != 0;
	double t0 = cli_now();
	int rc;

	for (;;) {
		double waited_ms = (cli_now() - t0) * 1000;
		uint32_t left = infinite                    ? 100
		                : waited_ms < j->timeout_ms ? (uint32_t)(j->timeout_ms - waited_ms)
		                                            : 0;

		rc = vdi_server_open_wait(srv, j->instance, j->st.dev[0], left < 100 ? left : 100);
		if ((rc != VD_E_TIMEOUT && rc != VD_E_INVALID) || left <= 100 || job_failed(j))
			return rc;
	}
}

static int open_set(struct job *j)
{
	struct vdi_server *srv = NULL;
	int rc = vdi_server_new(&srv);

	if (rc < 0) {
		job_fail(j, "cannot create a server object: %s: %s", vdi_strerror(rc),
		         vdi_last_error());
		return -1;
	}
	rc = open_wait(j, srv);
	/* Published only now (under the lock): job_fail aborts through it
	 * from other threads, which must see the completed Open. */
	pthread_mutex_lock(&j->lock);
	j->srv = srv;
	pthread_mutex_unlock(&j->lock);
	if (job_failed(j))
		return -1;
	if (rc == VD_E_TIMEOUT || rc == VD_E_INVALID) {
		job_fail(
			j,
			"cannot open virtual device set '%s': no client created it within %u ms (%s: %s)",
			j->st.dev[0], j->timeout_ms, vdi_strerror(rc), vdi_last_error());
		return -1;
	}
	return srv_call(j, rc, "Open");
}

static int configure(struct job *j)
{
	uint32_t features;

	exec_test_pause(j, "opened");
	if (srv_call(j, vdi_server_get_configuration(j->srv, &j->cfg), "GetConfiguration"))
		return -1;
	if (j->cfg.deviceCount != j->st.ndev) {
		job_fail(j, "virtual device set '%s' has %u device%s but the statement names %u",
		         j->st.dev[0], j->cfg.deviceCount, j->cfg.deviceCount == 1 ? "" : "s",
		         j->st.ndev);
		return -1;
	}
	if (j->st.kind != STMT_BACKUP && (j->cfg.features & VDF_FileMarks) &&
	    !(j->st.given & OPT_MAXTRANSFERSIZE)) {
		/* A tape block is read whole: without MAXTRANSFERSIZE, any size
		 * the backup may have used fits (D50). */
		j->st.maxtransfersize = VDI_MAX_MAXTRANSFER;
		if ((uint64_t)j->st.buffercount * j->st.maxtransfersize > STMT_MAX_BUFFER_BYTES)
			j->st.buffercount =
				(uint32_t)(STMT_MAX_BUFFER_BYTES / j->st.maxtransfersize);
	}
	features = j->st.kind == STMT_BACKUP ? VDF_WriteMedia : VDF_ReadMedia;
	if (j->both_media) /* spec 4 "and/or" (D18): each device's first data command tells */
		features |= VDF_WriteMedia | VDF_ReadMedia;
	if (j->st.kind == STMT_BACKUP && (j->cfg.features & VDF_RequestComplete))
		features |= VDF_CompleteEnabled;
	j->features = features;
	if (srv_call(j,
	             vdi_server_begin_configuration(j->srv, features, j->st.blocksize, 0,
	                                            j->st.maxtransfersize, j->timeout_ms),
	             "BeginConfiguration") ||
	    srv_call(
		    j,
		    vdi_server_request_buffers(j->srv, j->st.maxtransfersize, 0, j->st.buffercount),
		    "RequestBuffers"))
		return -1;
	exec_test_pause(j, "configuring");
	if (srv_call(j, vdi_server_end_configuration(j->srv), "EndConfiguration"))
		return -1;
	exec_test_pause(j, "configured");
	return 0;
}

static void *agent_main(void *arg)
{
	struct job *j = arg;

	j->agent_rc = vdi_server_execute_completion_agent(j->srv);
	if (j->agent_rc < 0) /* the message is this thread's: keep it */
		snprintf(j->agent_err, sizeof(j->agent_err), "%s", vdi_last_error());
	__atomic_store_n(&j->agent_returned, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * The spec requires the agent to run before any command is sent (F6).
 * The agent moves the set from Initializing to Active when it starts,
 * and before the first OpenDevice nothing else does, so the agent is
 * known to run once the set's state reads VDI_SET_ACTIVE.
 */
static int start_agent(struct job *j)
{
	struct vdi_set_info info;
	double t0 = cli_now();

	if (pthread_create(&j->agent, NULL, agent_main, j) != 0) {
		job_fail(j, "cannot start the completion agent thread");
		return -1;
	}
	j->agent_started = 1;
	while (!job_failed(j)) {
		if (__atomic_load_n(&j->agent_returned, __ATOMIC_ACQUIRE)) {
			job_fail(
				j,
				"virtual device set '%s': ExecuteCompletionAgent returned before the set was active: %s: %s",
				j->st.dev[0],
				vdi_strerror(j->agent_rc ? j->agent_rc : VD_E_UNEXPECTED),
				j->agent_rc ? j->agent_err : "returned success at once");
			return -1;
		}
		if (vdi_set_info_get(j->instance, j->st.dev[0], &info) == 0 &&
		    info.state == VDI_SET_ACTIVE)
			return 0;
		if (cli_now() - t0 > 10) {
			job_fail(j, "the completion agent did not start within 10 s");
			return -1;
		}
		usleep(500);
	}
	return -1;
}

static int open_devices(struct job *j)
{
	if (start_agent(j) < 0)
		return -1;
	for (unsigned k = 0; k < j->st.ndev; k++) {
		char call[200];

		j->d[k].j = j;
		j->d[k].k = k;
		snprintf(call, sizeof(call), "OpenDevice('%s')", j->st.dev[k]);
		if (srv_call(j, vdi_server_open_device(j->srv, j->st.dev[k], &j->d[k].dev), call))
			return -1;
	}
	if (srv_call(j, vdi_sstream_pool_new(j->srv, j->st.buffercount, j->io_timeout_ms, &j->pool),
	             "allocating the buffer pool"))
		return -1;
	vdi_sstream_pool_on_command(j->pool, exec_before_command, j);
	return 0;
}

static void backup_header(struct job *j)
{
	uuid_t id;

	uuid_generate(id);
	bk_header_init(&j->hdr, id, j->st.db, j->total, j->st.ndev);
	j->hdr.block_size = j->st.blocksize;
	j->hdr.max_transfer_size = j->st.maxtransfersize;
	j->hdr.time = (int64_t)time(NULL);
	snprintf(j->hdr.description, sizeof(j->hdr.description), "%s", j->st.description);
	/* the chain (chain.h): COPY_ONLY is ignored with DIFFERENTIAL */
	j->hdr.kind = j->st.log                          ? BK_LOG
	              : (j->st.given & OPT_DIFFERENTIAL) ? BK_DIFF
	              : (j->st.given & OPT_SNAPSHOT)     ? BK_SNAPSHOT
	                                                 : BK_FULL;
	if ((j->st.given & OPT_COPY_ONLY) && j->hdr.kind != BK_DIFF)
		j->hdr.flags |= BK_F_COPY_ONLY;
	memcpy(j->hdr.lineage, j->hist.lineage, 16);
	j->hdr.lsn = j->hist.next_lsn;
	j->hdr.first_lsn = j->hdr.kind == BK_DIFF  ? chain_diff_base(&j->hist)->lsn
	                   : j->hdr.kind == BK_LOG ? chain_log_point(&j->hist)->lsn
	                                           : j->hdr.lsn;
	j->work = j->total;
	if (j->hdr.kind == BK_SNAPSHOT) { /* metadata only: the data is the snapshot */
		j->hdr.chunk_count = 0;
		j->work = 0;
	}
	if (bk_is_partial(&j->hdr)) {
		j->hdr.chunk_count = j->nselect;
		j->work = 0;
		for (uint64_t i = 0; i < j->nselect; i++)
			j->work += bk_chunk_len(&j->hdr, j->select[i]);
	}
}

/* After the streams: the set-wide checks, then CloseDevice (success) or
 * leave the abort in place (failure). */
static void finish_devices(struct job *j)
{
	char err[BK_ERR_LEN];

	if (!job_failed(j) && j->st.kind != STMT_BACKUP &&
	    bk_set_complete(&j->set, err, sizeof(err)) < 0)
		job_fail(j, "%s", err);
	if (!job_failed(j))
		exec_test_pause(j, "close");
	for (unsigned k = 0; k < j->st.ndev && !job_failed(j); k++) {
		int rc = vdi_server_close_device(j->d[k].dev);

		if (rc < 0)
			job_fail(j, "device '%s': CloseDevice failed: %s: %s", j->st.dev[k],
			         vdi_strerror(rc), vdi_last_error());
	}
}

static void teardown_set(struct job *j)
{
	struct vdi_server *srv;

	if (j->pool)
		vdi_sstream_pool_free(j->pool);
	j->pool = NULL;
	if (j->agent_started) {
		pthread_join(j->agent, NULL);
		if (j->agent_rc < 0 && !job_failed(j))
			job_fail(j, "completion agent failed: %s: %s", vdi_strerror(j->agent_rc),
			         j->agent_err);
	}
	pthread_mutex_lock(&j->lock);
	srv = j->srv;
	j->srv = NULL; /* job_fail no longer aborts through it */
	pthread_mutex_unlock(&j->lock);
	if (srv) {
		int rc = vdi_server_close(srv);

		if (rc < 0 && !job_failed(j))
			job_fail(j, "closing virtual device set '%s' failed: %s: %s", j->st.dev[0],
			         vdi_strerror(rc), vdi_last_error());
		vdi_server_free(srv);
	}
}

/* -------------------------------------------------------------- run */

/* First signal: abort the set and fail.  A signal after the job failed
 * (teardown stuck, or a second ^C) ends the process at once. */
static void on_signal(void *ctx, int signo)
{
	struct job *j = ctx;

	if (job_failed(j)) {
		cli_err("%s: terminated by signal %d (%s) after: %s", stmt_name(&j->st), signo,
		        strsignal(signo), j->err);
		_exit(CLI_EXIT_FAIL);
	}
	job_fail(j, "interrupted by signal %d (%s)", signo, strsignal(signo));
}

static void run_set(struct job *j)
{
	struct progress prog;
	enum progress_mode mode = progress_mode_pick(j->quiet, isatty(2), j->st.given & OPT_STATS);

	if (j->st.kind == STMT_BACKUP)
		backup_header(j);
	else
		bk_set_init(&j->set, j->st.ndev,
		            j->st.kind == STMT_HEADERONLY || j->st.kind == STMT_FILELISTONLY);
	if (open_set(j) == 0 && configure(j) == 0 && open_devices(j) == 0) {
		progress_start(&prog, mode, &j->done, &j->work, j->st.stats);
		exec_run_devices(j);
		progress_stop(&prog);
		finish_devices(j);
	}
	teardown_set(j); /* a failure already aborted the set (job_fail) */
}

static void report(struct job *j, double elapsed)
{
	char line[512];
	char what[200];

	if (j->st.kind == STMT_HEADERONLY && !job_failed(j))
		exec_print_headers(j);
	if (j->st.kind == STMT_FILELISTONLY && !job_failed(j) && j->set.have_ref) {
		/* one file: its logical name is the database's, restored to */
		printf("LogicalName       %s\n", j->set.ref.db);
		printf("PhysicalName      %s/%s.mdf\n", j->data_dir, j->set.ref.db);
		printf("Type              D\n");
		printf("Size              %" PRIu64 "\n", j->set.ref.total_size);
		fflush(stdout);
	}
	if (j->st.kind == STMT_VERIFYONLY && !job_failed(j)) {
		char id[37];

		bk_id_format(j->set.ref.id, id);
		printf("The backup set of '%s' (%s, %u stripe%s, %" PRIu64 " bytes) is valid\n",
		       j->set.ref.db, id, j->set.ref.stripes, j->set.ref.stripes == 1 ? "" : "s",
		       j->set.ref.total_size);
		fflush(stdout);
	}
	if (job_failed(j)) {
		cli_err("%s %s%s%sfailed: %s", stmt_name(&j->st), j->st.db[0] ? "'" : "", j->st.db,
		        j->st.db[0] ? "' " : "", j->err);
		return;
	}
	if (!j->quiet && isatty(2)) {
		snprintf(what, sizeof(what), "%s%s%s", stmt_name(&j->st), j->st.db[0] ? " " : "",
		         j->st.db);
		progress_summary(line, sizeof(line), what, j->done, j->st.ndev, elapsed);
		cli_err("%s", line);
	}
}

int cmd_exec(int argc, char **argv)
{
	return cmd_exec_outcome(argc, argv, NULL);
}

int cmd_exec_outcome(int argc, char **argv, struct exec_outcome *out)
{
	struct job *j = calloc(1, sizeof(*j));
	char *text = NULL;
	int status = CLI_EXIT_USAGE;
	double t0 = 0;

	if (out)
		memset(out, 0, sizeof(*out));
	if (!j)
		return CLI_EXIT_FAIL;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->prep_cond, NULL);
	pthread_mutex_init(&j->discard_lock, NULL);
	pthread_cond_init(&j->discard_cond, NULL);
	j->db_fd = -1;
	if (parse_args(j, argc, argv, &text) < 0)
		goto out;
	exec_test_pause_init(j);
	status = CLI_EXIT_FAIL;
	if (exec_prepare_files(j) < 0)
		goto out;
	cli_signals_block();
	cli_signal_start(on_signal, j);
	t0 = cli_now();
	run_set(j);
	cli_signal_stop();
	if (!job_failed(j) && j->st.kind == STMT_BACKUP && !j->generated)
		exec_record_backup(j);
	if (!job_failed(j) && j->st.kind == STMT_RESTORE) {
		exec_test_pause(j, "commit");
		if (j->st.given & OPT_SNAPSHOT)
			exec_verify_mounted(j);
		else
			exec_commit_target(j);
	}
	report(j, cli_now() - t0);
	if (!job_failed(j))
		status = CLI_EXIT_OK;
	if (out) {
		out->bytes = j->done;
		out->seconds = cli_now() - t0;
	}
	if (j->st.kind != STMT_BACKUP)
		bk_set_release(&j->set);
out:
	if (out && j->st.kind) {
		snprintf(out->statement, sizeof(out->statement), "%s", stmt_name(&j->st));
		out->kind_moves_data = j->st.kind == STMT_BACKUP || j->st.kind == STMT_RESTORE;
	}
	exec_close_files(j);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->prep_cond);
	pthread_mutex_destroy(&j->discard_lock);
	pthread_cond_destroy(&j->discard_cond);
	free(text);
	free(j);
	return status;
}
