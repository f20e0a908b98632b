/* SPDX-License-Identifier: MIT */
/*
 * pipe.c - `vdi pipe`: a VDI client without FUSE.
 *
 * Creates the set through a client backend (libvdi's client half, or
 * with --sqlvdi[=PATH] a library with Microsoft's ABI: vdi.h "Client
 * backends"), waits for the server's configuration, then runs one
 * thread per device moving bytes between the device (client stream
 * adapter, vdi_cstream_*) and a file descriptor:
 *
 *   BACKUP  (server sent VDF_WriteMedia): device -> file or stdout
 *   RESTORE (VDF_ReadMedia):              file or stdin -> device
 *
 * Device 0 carries the set's name; device i > 0 is named <set><i>, the
 * convention of Microsoft's samples, so the statement reads
 * VIRTUAL_DEVICE='s', VIRTUAL_DEVICE='s1', ...
 *
 * Any failure (a write error such as EPIPE on a closed pipe, a read
 * error on the input, an abort or the death of the server) aborts the
 * set, so the server fails too, and the exit status is 1.  A backup file
 * is fsync'ed before the stream's orderly close, which is what completes
 * a pending VDC_Complete.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "stmt.h"
#include "vdi.h"

#define IO_CHUNK (1u << 20)

struct pdev {
	struct pipe_job *pj;
	unsigned k;
	char name[VDI_MAX_NAME + 1];
	const char *path; /* NULL or "-" = stdio */
	int fd;
	struct vdi_bdev *dev;
	struct vdi_cstream *s;
	pthread_t thread;
	int started;
	int ok;
};

struct pipe_job {
	const char *set;
	const char *instance;
	unsigned ndev;
	uint32_t features;
	uint32_t timeout_ms, server_timeout_ms, io_timeout_ms;
	const char *group;
	int quiet;
	int backup;               /* direction from the server */
	int sqlvdi;               /* --sqlvdi given */
	int tar;                  /* --tar: every device as one tar stream */
	const char *snapshot_cmd; /* --snapshot-cmd: the user's snapshot tool */
	const char *tar_path;     /* its file (NULL or "-" = stdio) */
	int tar_fd;
	const char *sqlvdi_path;           /* its library (NULL: the default) */
	struct vdi_backend *loaded;        /* the sqlvdi backend, if loaded */
	const struct vdi_backend *backend; /* libvdi or loaded */
	struct vdi_bset *c;
	struct pdev d[VDI_MAX_DEVICES];
	pthread_mutex_t lock;
	int failed;
	int signalled; /* (lock) signals received */
};

static void pipe_fail(struct pipe_job *pj)
{
	pthread_mutex_lock(&pj->lock);
	if (!pj->failed && pj->c)
		vdi_bset_signal_abort(pj->c);
	pj->failed = 1;
	pthread_mutex_unlock(&pj->lock);
}

/* ------------------------------------------------------------ options */

static int parse_features(const char *list, uint32_t *features)
{
	char *copy = strdup(list), *save = NULL;
	int rc = 0;

	for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
		if (strcmp(t, "discard") == 0)
			*features |= VDF_Discard;
		else if (strcmp(t, "request-complete") == 0)
			*features |= VDF_RequestComplete;
		else if (!strcmp(t, "removable") || !strcmp(t, "tape") || !strcmp(t, "disk")) {
			/* offered only what is answered (D48) */
			cli_err("invalid --features '%s': '%s' is not offered: vdi pipe answers pipe-like streams "
			        "only (discard, request-complete; --snapshot-cmd for snapshots)",
			        list, t);
			rc = -1;
		} else {
			cli_err("invalid --features '%s': unknown feature '%s' (discard, request-complete)",
			        list, t);
			rc = -1;
		}
	}
	free(copy);
	return rc;
}

static int parse_pipe_opts(struct pipe_job *pj, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "set", required_argument, NULL, 's' },
		{ "devices", required_argument, NULL, 'n' },
		{ "request-complete", no_argument, NULL, 'R' },
		{ "features", required_argument, NULL, 'F' },
		{ "timeout", required_argument, NULL, 't' },
		{ "server-timeout", required_argument, NULL, 'S' },
		{ "io-timeout", required_argument, NULL, 'T' },
		{ "group", required_argument, NULL, 'g' },
		{ "instance", required_argument, NULL, 'I' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "sqlvdi", optional_argument, NULL, 'L' },
		{ "tar", no_argument, NULL, 'X' },
		{ "snapshot-cmd", required_argument, NULL, 'P' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+s:n:RF:t:S:T:g:I:q", longopts, NULL)) != -1) {
		switch (c) {
		case 's': pj->set = optarg; break;
		case 'n':
			if (cli_parse_uint("--devices", optarg, 1, VDI_MAX_DEVICES, &v))
				return -1;
			pj->ndev = (unsigned)v;
			break;
		case 'R': pj->features |= VDF_RequestComplete; break;
		case 'F':
			if (parse_features(optarg, &pj->features))
				return -1;
			break;
		case 't':
			if (cli_parse_ms("--timeout", optarg, &pj->timeout_ms))
				return -1;
			break;
		case 'S':
			if (cli_parse_ms("--server-timeout", optarg, &pj->server_timeout_ms))
				return -1;
			break;
		case 'T':
			if (cli_parse_ms("--io-timeout", optarg, &pj->io_timeout_ms))
				return -1;
			break;
		case 'g': pj->group = optarg; break;
		case 'I': pj->instance = optarg; break;
		case 'q': pj->quiet = 1; break;
		case 'X': pj->tar = 1; break;
		case 'P':
			pj->snapshot_cmd = optarg;
			/* offered only because it is answered */
			pj->features |= VDF_SnapshotPrepare | VDF_EnumFrozenFiles;
			break;
		case 'L':
			pj->sqlvdi = 1;
			pj->sqlvdi_path = optarg && *optarg ? optarg : NULL;
			break;
		default: cli_err("pipe: bad option (vdi --help)"); return -1;
		}
	}
	return 0;
}

static int setup_devices(struct pipe_job *pj, int nfiles, char **files)
{
	const char *why;

	if (!pj->set) {
		cli_err("pipe: missing -s SET (the set name)");
		return -1;
	}
	if ((why = stmt_name_problem(pj->set))) {
		cli_err("invalid set name '%s': %s", pj->set, why);
		return -1;
	}
	if (pj->tar && nfiles > 1) {
		cli_err("pipe --tar: one archive FILE (or none: stdio) for all devices, got %d",
		        nfiles);
		return -1;
	}
	if (pj->tar) {
		pj->tar_path = nfiles ? files[0] : NULL;
		nfiles = 0;
		if (!pj->ndev)
			pj->ndev = 1;
	}
	if (!pj->ndev)
		pj->ndev = nfiles ? (unsigned)nfiles : 1;
	if (pj->tar) {
		/* the devices carry no file of their own */
	} else if (nfiles > VDI_MAX_DEVICES || (nfiles && (unsigned)nfiles != pj->ndev) ||
	           (!nfiles && pj->ndev != 1)) {
		cli_err("pipe: %u device%s need %u FILE argument%s, got %d", pj->ndev,
		        pj->ndev == 1 ? "" : "s", pj->ndev, pj->ndev == 1 ? " (or none)" : "s",
		        nfiles);
		return -1;
	}
	for (int i = 0, stdio = 0; i < nfiles; i++) {
		if (strcmp(files[i], "-") == 0 && stdio++) {
			cli_err("pipe: '-' (standard input or output) given for more than one device");
			return -1;
		}
	}
	for (unsigned k = 0; k < pj->ndev; k++) {
		struct pdev *d = &pj->d[k];
		int n = k ? snprintf(d->name, sizeof(d->name), "%s%u", pj->set, k)
		          : snprintf(d->name, sizeof(d->name), "%s", pj->set);

		if (n < 0 || (size_t)n >= sizeof(d->name)) {
			cli_err("invalid set name '%s': device name '%s%u' would be longer than 127 bytes",
			        pj->set, pj->set, k);
			return -1;
		}
		d->pj = pj;
		d->k = k;
		d->fd = -1;
		d->path = nfiles ? files[k] : NULL;
	}
	return 0;
}

/* ---------------------------------------------------------- the set */

/* The client backend: libvdi, or the library --sqlvdi names, which must
 * load and have every member before anything is created. */
static int pick_backend(struct pipe_job *pj)
{
	int rc;

	pj->backend = vdi_backend_libvdi();
	if (!pj->sqlvdi)
		return 0;
	if (pj->group || pj->instance) {
		cli_err("pipe: --%s needs the libvdi backend: %s", pj->group ? "group" : "instance",
		        pj->group
		                ? "a sqlvdi library sets the modes of its shared objects from the umask "
		                  "(run with umask 007 as a member of the group)"
		                : "SQL Server on Linux has no named instances");
		return -1;
	}
	rc = vdi_backend_load(pj->sqlvdi_path, &pj->loaded);
	if (rc < 0) {
		cli_vdi_err(rc, "--sqlvdi: cannot use the library");
		return -1;
	}
	pj->backend = pj->loaded;
	return 0;
}

static int create_set(struct pipe_job *pj)
{
	VDConfig cfg;
	int rc;

	rc = vdi_bset_new(pj->backend, &pj->c);
	if (rc < 0) {
		pj->c = NULL;
		cli_vdi_err(rc, "cannot create a client object");
		return -1;
	}
	if (pj->group) {
		struct group *g = getgrnam(pj->group);

		if (!g) {
			cli_err("invalid --group '%s': no such group", pj->group);
			return -1;
		}
		if ((rc = vdi_bset_set_group(pj->c, g->gr_gid)) < 0) {
			cli_vdi_err(rc, "cannot share set '%s' with group '%s'", pj->set,
			            pj->group);
			return -1;
		}
	}
	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = pj->ndev;
	cfg.features = pj->features;
	cfg.serverTimeOut = pj->server_timeout_ms;
	rc = vdi_bset_create(pj->c, pj->instance, pj->set, &cfg);
	if (rc < 0) {
		cli_vdi_err(rc, "cannot create virtual device set '%s'", pj->set);
		return -1;
	}
	return 0;
}

static int wait_server(struct pipe_job *pj)
{
	VDConfig cfg;
	int rc = vdi_bset_get_configuration(pj->c, pj->timeout_ms, &cfg);

	if (rc == VD_E_TIMEOUT) {
		cli_err("virtual device set '%s': no server configured it within %u ms", pj->set,
		        pj->timeout_ms);
		return -1;
	}
	if (rc < 0) {
		cli_vdi_err(rc, "virtual device set '%s': waiting for the server failed", pj->set);
		return -1;
	}
	pj->backup = (cfg.features & VDF_WriteMedia) != 0;
	return 0;
}

/* path NULL or "-": stdout (backup) or stdin (restore). */
static int open_path(const char *path, int backup, const char *whose, int *fd)
{
	if (!path || strcmp(path, "-") == 0) {
		*fd = backup ? STDOUT_FILENO : STDIN_FILENO;
		return 0;
	}
	*fd = backup ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)
	             : open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0) {
		cli_err("%s: cannot open '%s' for %s: %s", whose, path,
		        backup ? "the backup" : "the restore", strerror(errno));
		return -1;
	}
	return 0;
}

static int open_file(struct pdev *d)
{
	char whose[VDI_MAX_NAME + 16];

	if (d->pj->tar)
		return 0; /* the archive is opened once, for all */
	snprintf(whose, sizeof(whose), "device '%s'", d->name);
	return open_path(d->path, d->pj->backup, whose, &d->fd);
}

/* --snapshot-cmd: the user's tool takes the snapshot (vdi_snapshot_run);
 * a failure is printed here, and the server fails the backup. */
static uint32_t snapshot_handler(void *ctx, struct vdi_cstream *s, uint32_t code, const char *files)
{
	struct pdev *d = ctx;
	char err[512];
	uint32_t answer = vdi_snapshot_run(s, d->pj->snapshot_cmd, code, files, err, sizeof(err));

	if (answer != ERROR_SUCCESS)
		cli_err("device '%s': %s", d->name, err);
	return answer;
}

static int open_devices(struct pipe_job *pj)
{
	for (unsigned k = 0; k < pj->ndev; k++) {
		struct pdev *d = &pj->d[k];
		int rc;

		if (open_file(d) < 0)
			return -1;
		rc = vdi_bset_open_device(pj->c, d->name, &d->dev);
		if (rc < 0) {
			cli_vdi_err(rc, "device '%s': OpenDevice failed", d->name);
			return -1;
		}
		rc = vdi_cstream_open(d->dev, pj->io_timeout_ms, &d->s);
		if (rc < 0) {
			d->s = NULL;
			cli_vdi_err(rc, "device '%s': cannot start the stream", d->name);
			return -1;
		}
		if (pj->snapshot_cmd)
			vdi_cstream_on_snapshot(d->s, snapshot_handler, d);
	}
	return 0;
}

/* ---------------------------------------------------------- streaming */

static const char *fd_desc(const struct pdev *d)
{
	return d->path && strcmp(d->path, "-") ? d->path
	       : d->pj->backup                 ? "standard output"
	                                       : "standard input";
}

static int write_full(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int backup_loop(struct pdev *d)
{
	for (;;) {
		const void *p;
		ssize_t n = vdi_cstream_peek(d->s, &p, IO_CHUNK);

		if (n == 0)
			break;
		if (n < 0) {
			cli_vdi_err((int)n, "device '%s': backup stream failed after %llu bytes",
			            d->name, (unsigned long long)vdi_cstream_bytes(d->s));
			return -1;
		}
		if (write_full(d->fd, p, (size_t)n) < 0) {
			cli_err("device '%s': cannot write '%s' after %llu bytes: %s", d->name,
			        fd_desc(d), (unsigned long long)vdi_cstream_bytes(d->s),
			        strerror(errno));
			return -1;
		}
		vdi_cstream_advance(d->s, (size_t)n);
	}
	/* Durable before the orderly close completes VDC_Complete. */
	if (fsync(d->fd) != 0 && errno != EINVAL && errno != EROFS) {
		cli_err("device '%s': cannot flush '%s': %s", d->name, fd_desc(d), strerror(errno));
		return -1;
	}
	return 0;
}

static ssize_t read_some(int fd, void *p, size_t len)
{
	ssize_t n;

	do
		n = read(fd, p, len);
	while (n < 0 && errno == EINTR);
	return n;
}

static int restore_loop(struct pdev *d)
{
	for (;;) {
		void *p;
		ssize_t room = vdi_cstream_reserve(d->s, &p, IO_CHUNK), n;

		if (room <= 0) {
			cli_vdi_err(room ? (int)room : VD_E_CLOSE,
			            "device '%s': the server stopped reading after %llu bytes",
			            d->name, (unsigned long long)vdi_cstream_bytes(d->s));
			return -1;
		}
		n = read_some(d->fd, p, (size_t)room);
		if (n < 0) {
			cli_err("device '%s': cannot read '%s' after %llu bytes: %s", d->name,
			        fd_desc(d), (unsigned long long)vdi_cstream_bytes(d->s),
			        strerror(errno));
			return -1;
		}
		if (n == 0)
			return 0;
		if (vdi_cstream_commit(d->s, (size_t)n) < 0) {
			cli_vdi_err(VD_E_ABORT,
			            "device '%s': restore stream failed after %llu bytes", d->name,
			            (unsigned long long)vdi_cstream_bytes(d->s));
			return -1;
		}
	}
}

static void *dev_main(void *arg)
{
	struct pdev *d = arg;
	int rc = d->pj->backup ? backup_loop(d) : restore_loop(d);
	struct vdi_cstream *s = d->s;

	d->s = NULL;
	if (rc < 0) {
		pipe_fail(d->pj);
		vdi_cstream_close(s, 0);
		return NULL;
	}
	rc = vdi_cstream_close(s, 1);
	if (rc < 0) {
		cli_vdi_err(rc, "device '%s': the %s did not end normally", d->name,
		            d->pj->backup ? "backup" : "restore");
		pipe_fail(d->pj);
		return NULL;
	}
	d->ok = 1;
	return NULL;
}

/* --tar: every device of the set through one tar stream (vdi.h, "Set
 * stream") on stdout or stdin, or the FILE given. */
static int tar_backup(struct pipe_job *pj, struct vdi_tarstream *t)
{
	for (;;) {
		const void *p;
		ssize_t n = vdi_tarstream_peek(t, &p, IO_CHUNK);

		if (n == 0)
			break;
		if (n < 0) {
			cli_vdi_err((int)n, "tar backup of set '%s' failed", pj->set);
			return -1;
		}
		if (write_full(pj->tar_fd, p, (size_t)n) < 0) {
			cli_err("tar backup of set '%s': cannot write the archive after %llu bytes: %s",
			        pj->set, (unsigned long long)vdi_tarstream_bytes(t),
			        strerror(errno));
			return -1;
		}
		vdi_tarstream_advance(t, (size_t)n);
	}
	if (fsync(pj->tar_fd) != 0 && errno != EINVAL && errno != EROFS) {
		cli_err("tar backup of set '%s': cannot flush the archive: %s", pj->set,
		        strerror(errno));
		return -1;
	}
	return 0;
}

static int tar_restore(struct pipe_job *pj, struct vdi_tarstream *t)
{
	for (;;) {
		void *p;
		ssize_t room = vdi_tarstream_reserve(t, &p, IO_CHUNK), n;

		if (room <= 0) {
			cli_vdi_err(room ? (int)room : VD_E_CLOSE, "tar restore of set '%s' failed",
			            pj->set);
			return -1;
		}
		n = read_some(pj->tar_fd, p, (size_t)room);
		if (n < 0) {
			cli_err("tar restore of set '%s': cannot read the archive after %llu bytes: %s",
			        pj->set, (unsigned long long)vdi_tarstream_bytes(t),
			        strerror(errno));
			return -1;
		}
		if (n == 0)
			return 0; /* close checks that the archive was whole */
		if (vdi_tarstream_commit(t, (size_t)n) < 0) {
			cli_vdi_err(VD_E_INVALID, "tar restore of set '%s' failed", pj->set);
			return -1;
		}
	}
}

static void run_tar(struct pipe_job *pj)
{
	struct vdi_cstream *s[VDI_MAX_DEVICES];
	struct vdi_tarstream *t;
	int rc;

	for (unsigned k = 0; k < pj->ndev; k++) {
		s[k] = pj->d[k].s;
		pj->d[k].s = NULL; /* the tar stream owns them now */
	}
	if (open_path(pj->tar_path, pj->backup, "the archive", &pj->tar_fd) < 0) {
		pipe_fail(pj);
		for (unsigned k = 0; k < pj->ndev; k++)
			vdi_cstream_close(s[k], 0);
		return;
	}
	rc = vdi_tarstream_open(s, pj->ndev, &t);
	if (rc < 0) {
		cli_vdi_err(rc, "cannot start the tar stream of set '%s'", pj->set);
		pipe_fail(pj);
		return;
	}
	rc = pj->backup ? tar_backup(pj, t) : tar_restore(pj, t);
	if (rc < 0)
		pipe_fail(pj);
	rc = vdi_tarstream_close(t, rc == 0);
	if (rc < 0 && !pj->failed) {
		cli_vdi_err(rc, "the tar %s of set '%s' did not end normally",
		            pj->backup ? "backup" : "restore", pj->set);
		pipe_fail(pj);
	}
	if (pj->tar_fd > STDERR_FILENO && close(pj->tar_fd) != 0 && pj->backup && !pj->failed) {
		cli_err("cannot close the archive '%s': %s", pj->tar_path, strerror(errno));
		pipe_fail(pj);
	}
}

static void run_devices(struct pipe_job *pj)
{
	for (unsigned k = 0; k < pj->ndev; k++) {
		if (pthread_create(&pj->d[k].thread, NULL, dev_main, &pj->d[k]) != 0) {
			cli_err("cannot start the thread of device '%s'", pj->d[k].name);
			pipe_fail(pj);
			break;
		}
		pj->d[k].started = 1;
	}
	for (unsigned k = 0; k < pj->ndev; k++)
		if (pj->d[k].started)
			pthread_join(pj->d[k].thread, NULL);
}

static void teardown(struct pipe_job *pj)
{
	for (unsigned k = 0; k < pj->ndev; k++) {
		struct pdev *d = &pj->d[k];

		if (d->s)
			vdi_cstream_close(d->s, 0);
		if (d->fd > STDERR_FILENO && close(d->fd) != 0 && d->ok && pj->backup) {
			cli_err("device '%s': cannot close '%s': %s", d->name, d->path,
			        strerror(errno));
			pj->failed = 1;
		}
	}
	if (pj->c) {
		int rc;

		if (pj->failed)
			vdi_bset_signal_abort(pj->c);
		rc = vdi_bset_close(pj->c);
		if (rc < 0 && !pj->failed) {
			cli_vdi_err(rc, "closing virtual device set '%s' failed", pj->set);
			pj->failed = 1;
		}
		vdi_bset_free(pj->c);
	}
}

static void on_signal(void *ctx, int signo)
{
	struct pipe_job *pj = ctx;
	int again;

	pthread_mutex_lock(&pj->lock);
	again = pj->signalled++;
	pthread_mutex_unlock(&pj->lock);
	cli_err("virtual device set '%s': interrupted by signal %d (%s)%s", pj->set, signo,
	        strsignal(signo), again ? ", exiting" : "");
	if (again) /* the orderly abort did not end the process: stop now */
		_exit(CLI_EXIT_FAIL);
	pipe_fail(pj);
}

int cmd_pipe(int argc, char **argv)
{
	struct pipe_job *pj = calloc(1, sizeof(*pj));
	int status = CLI_EXIT_USAGE;

	if (!pj)
		return CLI_EXIT_FAIL;
	pthread_mutex_init(&pj->lock, NULL);
	pj->timeout_ms = 60000;
	pj->io_timeout_ms = VDI_INFINITE;
	if (parse_pipe_opts(pj, argc, argv) < 0 ||
	    setup_devices(pj, argc - optind, argv + optind) < 0 || pick_backend(pj) < 0)
		goto out;
	cli_signals_block();
	cli_signal_start(on_signal, pj);
	if (create_set(pj) < 0 || wait_server(pj) < 0 || open_devices(pj) < 0)
		pipe_fail(pj);
	else if (pj->tar)
		run_tar(pj);
	else
		run_devices(pj);
	cli_signal_stop();
	teardown(pj);
	status = pj->failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
	vdi_backend_free(pj->loaded);
	pthread_mutex_destroy(&pj->lock);
	free(pj);
	return status;
}
