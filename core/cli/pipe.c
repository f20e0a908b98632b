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
 * Media (F34): --features chooses pipe (the default), tape (the file is
 * an AWS tape image with its filemarks, D50) or disk, and removable
 * media; with --volume-size a backup medium holds that many bytes and
 * the media of a device are FILE, FILE.1, FILE.2 ...; a restore reads
 * them in that order, as the server loads them.
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
#include <limits.h>
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
	const char *path;     /* NULL or "-" = stdio: medium 0 */
	int fd;               /* the file of the current medium */
	uint32_t medium;      /* removable media: the current one, 0 first */
	uint64_t mstart;      /* stream bytes before the current medium */
	int mended;           /* restore: its medium ended, the server decides */
	char mpath[PATH_MAX]; /* medium > 0: FILE.<medium> */
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
	const char *type;     /* --features: "pipe", "tape", "disk"; NULL: pipe */
	uint64_t volume_size; /* --volume-size: stream bytes per backup medium, 0 = one */

	int backup;               /* direction from the server; -1 until known (both media) */
	int both;                 /* the server configured both directions (D18) */
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

/*
 * --features (F34): one device type (pipe, the default; tape; disk) and
 * the extras the spec allows with it (removable with pipe or disk; tape
 * includes it), discard and request-complete with any.  Tape is
 * VDF_LikeTape whole, the only tape mask the spec defines (D50: a move
 * back still fails loudly).  The list may be given in several options:
 * the type chosen first stays, another one is refused.
 */
static int parse_features(struct pipe_job *pj, const char *list)
{
	char *copy = strdup(list), *save = NULL;
	int rc = 0;

	if (!copy)
		return -1;
	for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
		uint32_t bits = 0;
		int kind = vdi_cstream_feature_word(t, strlen(t), &bits);
		const char *type = kind == 1 ? vdi_cstream_device_type(bits) : NULL;

		if (kind < 0) {
			cli_err("invalid --features '%s': unknown feature '%s' (pipe, tape, disk, "
			        "removable, discard, request-complete)",
			        list, t);
			rc = -1;
		} else if (type && pj->type && strcmp(type, pj->type) != 0) {
			cli_err("invalid --features '%s': '%s' and '%s' are two device types: a set "
			        "is one of pipe, tape or disk",
			        list, pj->type, type);
			rc = -1;
		} else {
			if (type)
				pj->type = type;
			pj->features |= bits;
		}
	}
	free(copy);
	return rc;
}

/* What the options allow together, once all were read. */
static int check_media_opts(const struct pipe_job *pj)
{
	if (pj->volume_size && !(pj->features & VDF_Removable)) {
		cli_err("invalid --volume-size %llu: only removable media have a size: add "
		        "--features removable (with pipe or disk) or --features tape",
		        (unsigned long long)pj->volume_size);
		return -1;
	}
	if (pj->volume_size && pj->tar) {
		cli_err("invalid --volume-size %llu with --tar: the archive is one medium for "
		        "the whole set",
		        (unsigned long long)pj->volume_size);
		return -1;
	}
	if (pj->tar && (pj->features & (VDF_FileMarks | VDF_Removable))) {
		/* as vdifs's <set>.tar (F35) */
		cli_err("invalid --tar with --features %s: a tar member is a chunk of a "
		        "VDC_Write buffer%s; pipe or disk only",
		        (pj->features & VDF_FileMarks) ? "tape" : "removable",
		        (pj->features & VDF_FileMarks)
		                ? ", which a tape image's block headers are not"
		                : ", and the archive has no end of medium");
		return -1;
	}
	return 0;
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
		{ "volume-size", required_argument, NULL, 'V' },
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
			if (parse_features(pj, optarg))
				return -1;
			break;
		case 'V':
			if (cli_parse_uint("--volume-size", optarg, VDI_CSTREAM_VOLUME_MIN,
			                   UINT64_MAX >> 1, &pj->volume_size))
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
	return check_media_opts(pj);
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
		if (pj->volume_size && (!d->path || !strcmp(d->path, "-"))) {
			cli_err("invalid --volume-size %llu: device '%s' is on standard input or "
			        "output, which holds one medium: give a FILE per device (media "
			        "FILE, FILE.1, FILE.2 ...)",
			        (unsigned long long)pj->volume_size, d->name);
			return -1;
		}
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
	switch (cfg.features & (VDF_WriteMedia | VDF_ReadMedia)) {
	case VDF_WriteMedia: pj->backup = 1; break;
	case VDF_ReadMedia: pj->backup = 0; break;
	default: pj->backup = -1; pj->both = 1; /* (D18): the first data command tells */
	}

	return 0;
}

/* The server configured both media directions: each device's first data
 * command tells its direction, which must be the same on every device
 * (one file, or stdio, per device: read or written). */
static int learn_direction(struct pipe_job *pj, struct pdev *d)
{
	uint32_t dir = 0;
	int rc = vdi_cstream_await_direction(d->s, &dir);

	if (rc < 0) {
		cli_vdi_err(rc, "device '%s': waiting for the server's first data command",
		            d->name);
		return -1;
	}
	if (pj->backup < 0) {
		pj->backup = dir == VDF_WriteMedia;
		return 0;
	}
	if (pj->backup != (dir == VDF_WriteMedia)) {
		cli_err("device '%s': the server %s it while it %s the others: vdi pipe moves one "
		        "direction per set",
		        d->name, dir == VDF_WriteMedia ? "writes" : "reads",
		        pj->backup ? "writes" : "reads");
		return -1;
	}
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

		if (!pj->both && open_file(d) < 0)
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
		if (pj->both && (learn_direction(pj, d) < 0 || open_file(d) < 0))
			return -1;
		if (pj->backup && pj->volume_size &&
		    (rc = vdi_cstream_set_volume_size(d->s, pj->volume_size)) < 0) {
			cli_vdi_err(rc, "device '%s': cannot set the medium size", d->name);
			return -1;
		}
	}
	return 0;
}

/* ---------------------------------------------------------- streaming */

static const char *fd_desc(const struct pdev *d)
{
	if (d->medium)
		return d->mpath;
	return d->path && strcmp(d->path, "-") ? d->path
	       : d->pj->backup                 ? "standard output"
	                                       : "standard input";
}

/* ------------------------------------------------------------- media */

/*
 * Removable media (F34): medium 0 is FILE, medium m > 0 is FILE.m.  A
 * backup medium ends when the stream adapter says so (its size, set
 * with --volume-size, is full): the file is made durable and closed,
 * and the next one is created.  A restore medium ends with its file;
 * the server then loads the next medium (the stream hands out room
 * again, on medium m + 1) or closes the device.
 */
static int removable(const struct pdev *d)
{
	return (d->pj->features & VDF_Removable) != 0;
}

/* One line per medium, at its end. */
static void medium_line(const struct pdev *d)
{
	if (!removable(d) || d->pj->quiet)
		return;
	cli_err("device '%s': medium %u: %llu bytes %s '%s'", d->name, d->medium,
	        (unsigned long long)(vdi_cstream_bytes(d->s) - d->mstart),
	        d->pj->backup ? "on" : "from", fd_desc(d));
}

static int flush_medium(struct pdev *d)
{
	/* Durable before the orderly close completes VDC_Complete. */
	if (fsync(d->fd) != 0 && errno != EINVAL && errno != EROFS) {
		cli_err("device '%s': cannot flush '%s' (medium %u): %s", d->name, fd_desc(d),
		        d->medium, strerror(errno));
		return -1;
	}
	medium_line(d);
	return 0;
}

/* Closes the file of the medium that ended (not stdio: it holds one). */
static int close_medium(struct pdev *d)
{
	int fd = d->fd;

	d->fd = -1;
	if (fd > STDERR_FILENO && close(fd) != 0 && d->pj->backup) {
		cli_err("device '%s': cannot close '%s' (medium %u): %s", d->name, fd_desc(d),
		        d->medium, strerror(errno));
		return -1;
	}
	return 0;
}

/* Names and opens the file of medium d->medium + 1. */
static int open_next_medium(struct pdev *d)
{
	int n;

	if (!d->path || !strcmp(d->path, "-")) {
		cli_err("device '%s': the server wants medium %u, but %s holds one medium: give "
		        "a FILE (media FILE, FILE.1 ...)",
		        d->name, d->medium + 1, fd_desc(d));
		return -1;
	}
	n = snprintf(d->mpath, sizeof(d->mpath), "%s.%u", d->path, d->medium + 1);
	if (n < 0 || (size_t)n >= sizeof(d->mpath)) {
		cli_err("device '%s': the name of medium %u of '%s' is too long", d->name,
		        d->medium + 1, d->path);
		return -1;
	}
	d->medium++;
	d->mstart = vdi_cstream_bytes(d->s);
	d->fd = d->pj->backup ? open(d->mpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)
	                      : open(d->mpath, O_RDONLY | O_CLOEXEC);
	if (d->fd < 0) {
		cli_err("device '%s': cannot open '%s' for medium %u of the %s: %s", d->name,
		        d->mpath, d->medium, d->pj->backup ? "backup" : "restore", strerror(errno));
		return -1;
	}
	return 0;
}

/* Backup: the medium is full; go on on the next one. */
static int next_backup_medium(struct pdev *d)
{
	int rc;

	if (flush_medium(d) < 0 || close_medium(d) < 0 || open_next_medium(d) < 0)
		return -1;
	rc = vdi_cstream_next_volume(d->s);
	if (rc < 0) {
		cli_vdi_err(rc, "device '%s': cannot start medium %u", d->name, d->medium);
		return -1;
	}
	return 0;
}

/* Restore: the file of this medium ended. */
static int end_restore_medium(struct pdev *d)
{
	int rc;

	medium_line(d);
	if (close_medium(d) < 0)
		return -1;
	rc = vdi_cstream_end_volume(d->s);
	if (rc < 0) {
		cli_vdi_err(rc, "device '%s': cannot end medium %u after %llu bytes", d->name,
		            d->medium, (unsigned long long)vdi_cstream_bytes(d->s));
		return -1;
	}
	d->mended = 1;
	return 0;
}

/* Restore: the stream has room again after the end of a medium: the
 * server loaded the next one. */
static int start_restore_medium(struct pdev *d)
{
	uint32_t want = vdi_cstream_volume(d->s);

	d->mended = 0;
	if (want != d->medium + 1) {
		cli_err("device '%s': the stream asks for bytes of medium %u after the end of "
		        "medium %u, before the server loaded medium %u",
		        d->name, want, d->medium, d->medium + 1);
		return -1;
	}
	return open_next_medium(d);
}

/* ---------------------------------------------------------- streaming */

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

		if (n == 0 && vdi_cstream_volume_ended(d->s)) {
			if (next_backup_medium(d) < 0)
				return -1;
			continue;
		}
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
	return flush_medium(d);
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

		if (room == VD_E_CLOSE && d->mended)
			return 0; /* the server needs no further medium */
		if (room <= 0) {
			cli_vdi_err(room ? (int)room : VD_E_CLOSE,
			            "device '%s': the server stopped reading after %llu bytes",
			            d->name, (unsigned long long)vdi_cstream_bytes(d->s));
			return -1;
		}
		if (d->mended && start_restore_medium(d) < 0)
			return -1;
		n = read_some(d->fd, p, (size_t)room);
		if (n < 0) {
			cli_err("device '%s': cannot read '%s' after %llu bytes: %s", d->name,
			        fd_desc(d), (unsigned long long)vdi_cstream_bytes(d->s),
			        strerror(errno));
			return -1;
		}
		if (n == 0 && !removable(d))
			return 0;
		if (n == 0) {
			if (end_restore_medium(d) < 0)
				return -1;
			continue;
		}
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
			cli_err("device '%s': cannot close '%s': %s", d->name, fd_desc(d),
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
