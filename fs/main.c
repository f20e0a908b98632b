/* SPDX-License-Identifier: MIT */
/*
 * main.c - vdifs: command line, logging, the FUSE session.
 *
 *   vdifs [SOURCE] MOUNTPOINT [-f] [-d] [-o opt[,opt...]]
 *
 * SOURCE is what /etc/fstab puts first (mount.fuse3 passes it); it only
 * names the mount (fsname).  Our options (config.c) set the defaults of
 * every set; the others go to libfuse (allow_other, ro, ...).  -d prints
 * one line per request through fs_log, not libfuse's debug dump.
 *
 * Teardown: the session loop returns on unmount or SIGINT/SIGTERM/SIGHUP.
 * The watcher sees the session end and aborts every set, which wakes the
 * requests blocked on one (so libfuse can join its workers); then
 * fs_sets_shutdown closes every set still active, and main waits for
 * the configuration waiters before the client libraries go: no server
 * waits forever for a filesystem that is gone.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "vdifs.h"

#define VDIFS_VERSION "0.1.0"

/* ---------------------------------------------------------------------
 * Command line.
 */
enum { K_HELP, K_VERSION, K_FG, K_DEBUG };

struct cmdline {
	struct vdifs *fs;
	int help, version, foreground, debug, bad;
	char *pos[2];
	int npos;
};

static const struct fuse_opt cmd_opts[] = {
	FUSE_OPT_KEY("-h", K_HELP),     FUSE_OPT_KEY("--help", K_HELP),
	FUSE_OPT_KEY("-V", K_VERSION),  FUSE_OPT_KEY("--version", K_VERSION),
	FUSE_OPT_KEY("-f", K_FG),       FUSE_OPT_KEY("-d", K_DEBUG),
	FUSE_OPT_KEY("debug", K_DEBUG), FUSE_OPT_END
};

static void usage(FILE *f)
{
	fprintf(f, "usage: vdifs [SOURCE] MOUNTPOINT [-f] [-d] [-o opt[,opt...]]\n"
	           "\n"
	           "A VDI client whose virtual devices are files:\n"
	           "  mkdir MOUNT/SET            create a virtual device set\n"
	           "  MOUNT/SET/SET, SET1, ...   its devices (read = backup, write = restore)\n"
	           "  cat MOUNT/SET/.status      state, devices, bytes, rate, last error\n"
	           "  echo abort > MOUNT/SET/.control\n"
	           "  MOUNT/.config/SET          per-set options, written before mkdir\n"
	           "\n"
	           "  -f                 stay in the foreground\n"
	           "  -d                 foreground, one log line per request\n"
	           "  -o devices=N       devices per set (1..64, default 1)\n"
	           "  -o features=W+W    pipe|tape|disk, removable, discard, complete,\n"
	           "                     nocomplete (default pipe+complete)\n"
	           "  -o volume_size=N   removable: bytes of a backup medium (k, m, g)\n"
	           "  -o open_timeout=MS open() waits that long for the server (60000, inf)\n"
	           "  -o server_timeout=MS  VDConfig.serverTimeOut (0 = infinite)\n"
	           "  -o blksize=N       st_blksize before configuration (1048576)\n"
	           "  -o group=G         share sets with group G (modes 0660/0770)\n"
	           "  -o instance=NAME   SQL Server instance name of the sets\n"
	           "  -o sqlvdi[=PATH]   client backend: a library with Microsoft's ABI, for\n"
	           "                     SQL Server on Linux (" VDI_SQLVDI_DEFAULT_PATH ")\n"
	           "  -o backend=libvdi  libvdi's own client half (default; vdi exec)\n"
	           "  -o allow_other     let other users in (modes and group apply)\n"
	           "\n"
	           "See vdifs(1).\n");
}

static int cmd_proc(void *data, const char *arg, int key, struct fuse_args *out)
{
	struct cmdline *c = data;
	char err[160];
	int rc;

	(void)out;
	switch (key) {
	case K_HELP: c->help = 1; return 0;
	case K_VERSION: c->version = 1; return 0;
	case K_FG: c->foreground = 1; return 0;
	case K_DEBUG: c->debug = c->foreground = 1; return 0;
	case FUSE_OPT_KEY_NONOPT:
		if (c->npos == 2) {
			fprintf(stderr, "vdifs: too many arguments: '%s'\n", arg);
			c->bad = 1;
			return -1;
		}
		c->pos[c->npos++] = strdup(arg);
		return 0;
	case FUSE_OPT_KEY_OPT:
		rc = fs_cfg_apply(&c->fs->defaults, arg, err, sizeof(err));
		if (rc == -ENOENT)
			return 1; /* libfuse's option */
		if (rc) {
			fprintf(stderr, "vdifs: %s\n", err);
			c->bad = 1;
			return -1;
		}
		return 0;
	}
	return 1;
}

static int parse_cmdline(struct fuse_args *args, struct cmdline *c)
{
	char opt[VDI_MAX_NAME + 32], err[PATH_MAX + 256];
	const struct vdi_backend *b;

	if (fuse_opt_parse(args, c, cmd_opts, cmd_proc) || c->bad)
		return -1;
	if (c->help || c->version)
		return 0;
	/* A library that cannot serve refuses the mount: nothing half-works. */
	if (fs_cfg_check(&c->fs->defaults, err, sizeof(err)) ||
	    fs_backend_get(&c->fs->defaults, &b, err, sizeof(err))) {
		fprintf(stderr, "vdifs: %s\n", err);
		return -1;
	}
	if (c->npos == 0) {
		fprintf(stderr, "vdifs: no mount point given\n");
		usage(stderr);
		return -1;
	}
	snprintf(opt, sizeof(opt), "-ofsname=%s", c->npos == 2 ? c->pos[0] : "vdifs");
	/* the kernel checks modes: other users only with allow_other, and
	 * then the set's mode and group decide */
	if (fuse_opt_add_arg(args, "-odefault_permissions") ||
	    fuse_opt_add_arg(args, "-osubtype=vdifs") || fuse_opt_add_arg(args, opt))
		return -1;
	return 0;
}

/* ---------------------------------------------------------------------
 * Session.
 */
static int start_watcher(struct vdifs *fs)
{
	sigset_t all, old;
	int rc;

	/* signals go to libfuse's threads, which end the loop */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = fs_watcher_start(fs);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

static int run_loop(struct fuse_session *se)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int rc;

	if (!cfg)
		return -1;
	/* a blocked reader or writer holds a worker: allow one per device
	 * of a few full sets, plus room for status and metadata requests */
	fuse_loop_cfg_set_max_threads(cfg, 4 * VDI_MAX_DEVICES + 16);
	fuse_loop_cfg_set_idle_threads(cfg, 8);
	rc = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return rc;
}

static int mount_and_run(struct vdifs *fs, struct fuse_args *args, const char *mountpoint,
                         int foreground, int debug)
{
	struct fuse_session *se;
	int rc = 1;

	/* every request finds the mount's context: fuse_req_userdata */
	se = fuse_session_new(args, &fs_ops, sizeof(fs_ops), fs);
	if (!se)
		goto out;
	fs->se = se;
	if (fuse_set_signal_handlers(se))
		goto out_session;
	if (fuse_session_mount(se, mountpoint))
		goto out_signals;
	if (!foreground)
		openlog("vdifs", LOG_PID, LOG_DAEMON);
	fs_log_setup(debug, !foreground);
	if (fuse_daemonize(foreground))
		goto out_unmount;
	if (start_watcher(fs)) {
		fs_log(VDI_LOG_ERROR, "start of the watcher thread failed");
		goto out_unmount;
	}
	fs_log(VDI_LOG_INFO, "serving %s", mountpoint);
	rc = run_loop(se) ? 1 : 0;
	fs_handles_free_all();
	fs_watcher_stop(fs);
	fs_sets_shutdown(fs);
	fs_sets_wait_waiters(fs);
	fs_log(VDI_LOG_INFO, "unmounted %s", mountpoint);
out_unmount:
	fs_watcher_stop(fs);
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
	fs->se = NULL;
out:
	return rc;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct cmdline c;
	static struct vdifs g;
	int rc = 1;

	memset(&c, 0, sizeof(c));
	c.fs = &g;
	pthread_mutex_init(&g.lock, NULL);
	pthread_cond_init(&g.waiters_cond, NULL);
	fs_cfg_defaults(&g.defaults);
	g.uid = getuid();
	g.gid = getgid();
	g.mounted_wall = time(NULL);
	vdi_log_set_sink(fs_engine_sink, NULL);
	if (parse_cmdline(&args, &c))
		goto out;
	if (c.help) {
		usage(stdout);
		rc = 0;
		goto out;
	}
	if (c.version) {
		printf("vdifs %s (libfuse %s)\n", VDIFS_VERSION, fuse_pkgversion());
		rc = 0;
		goto out;
	}
	fs_log_setup(c.debug, 0);
	rc = mount_and_run(&g, &args, c.pos[c.npos - 1], c.foreground, c.debug);
out:
	fs_backends_free();
	fuse_opt_free_args(&args);
	free(c.pos[0]);
	free(c.pos[1]);
	return rc;
}
