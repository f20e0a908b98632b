/* SPDX-License-Identifier: MIT */
/*
 * vdifs.h - the FUSE filesystem whose files are the virtual devices of
 * VDI sets: shared declarations of the fs/ modules.  Never installed.
 *
 * fs/ is a thin adapter from FUSE requests to libvdi calls (STYLE.md rule
 * 1): it holds no protocol logic.  It creates sets through a client
 * backend of core/vdi.h (vdi_bset_*: libvdi's own client half, or a
 * library with Microsoft's ABI, per set) and moves bytes with the client
 * stream adapter (vdi_cstream_*), which owns every protocol decision
 * (which command completes when, VDC_Flush, VDC_Complete, end of stream,
 * abort).
 *
 * Modules, from the top down; each calls only the ones below it:
 *   main.c     command line, the session
 *   ops.c      the FUSE low-level operations: name space, attributes,
 *              open/create/release, text files, directories
 *   devfile.c  reading and writing device files (the data path)
 *   status.c   the text of the .status files
 *   watcher.c  the thread that sees sets end while no file is open
 *   devices.c  the streams of a set's devices: open, end, release
 *   sets.c     the registry of a mount (struct vdifs: sets and /.config
 *              files) and the life of a set: create, fail, end, remove
 *   media.c    removable media: the files <dev>.N of media 1, 2, ...
 *   snapshot.c the snapshot of a snapshot backup: the user's tool, or
 *              an answer through .control
 *   pump.c     the thread per open device that waits on its stream
 *   backends.c the client library of each configuration (libvdi, sqlvdi)
 *   config.c   the options of a set: one parser for mount options and
 *              .config texts
 *   base.c     the log, request tracing, the clock, the one VD_E_* ->
 *              errno mapping (fs_errno), the check of a waiting request
 *
 * Context: one struct vdifs per mount, created by main.c and handed to
 * the session as its userdata; requests find it with fuse_req_userdata,
 * a set through set->fs.  No module reaches a global.
 *
 * Tree (inode numbers are never reused while mounted, see FS_INO):
 *   /                      root
 *   /.status               status of every set (cat)
 *   /.config/<set>         per-set configuration, read by mkdir <set>
 *   /<set>/                one VDI set, created by mkdir
 *   /<set>/.status         state, devices, bytes, rate, last error
 *   /<set>/.control        `echo abort > .control` aborts the set
 *   /<set>/<set>           device 0 (named like the set, as VDI requires)
 *   /<set>/<set>1 ...      devices 1..N-1
 *   /<set>/<set>.tar       every device as one tar stream (vdi_tarstream):
 *                          set->dev[N], a device of its own in fs/, whose
 *                          stream is the tar stream over the N others;
 *                          not there for tape or removable sets (F35)
 *   /<set>/<dev>.<m>       removable sets: medium m >= 1 of a device
 *                          (medium 0 is <dev>), media.c
 *
 * Threads and locks
 *   The FUSE session runs multi-threaded: any request may run on any
 *   worker thread.  fs->lock protects the registry (sets and config
 *   files lists, ids).  set->lock protects a set's state fields and the
 *   short calls on set->client (create, open_device, info, signal_abort,
 *   close).  The one long call, GetConfiguration, runs on the set's
 *   configuration waiter (sets.c) without the lock, and the client is
 *   never closed under it.  dev->io serializes the requests of one
 *   device.  Stream calls that wait for the server run on the device's
 *   pump thread (pump.c), without a timeout: data, the server's end, or
 *   an abort of the set (server death seen by the engine, a reader
 *   closing early, a writer killed, .control, unmount) ends them.
 *   Requests sleep on condition variables, for the pump or for the
 *   server's configuration at open, and nothing wakes them but an event:
 *   the result, the FUSE interrupt of the request (fs_wake_on), an abort
 *   of the set (also the one the watcher raises when the session ends).
 *   Lock order:
 *   fs->lock, then set->lock; dev->io, then set->lock.  dev->io is never
 *   taken while holding set->lock.  A pump's own mutex is innermost, and
 *   the pump thread holds nothing while it is inside a stream call.
 *
 *   A set is reference counted: the registry holds one reference and
 *   each open file handle of the set holds one; the last fs_set_put frees
 *   it.  set->client is closed (shared memory released) once no device
 *   is open and the set has ended, or at rmdir, or at unmount.
 */
#ifndef VDIFS_H
#define VDIFS_H

#define FUSE_USE_VERSION 314

#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "vdi.h"

#define FS_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Period of the watcher (watcher.c): the one timed loop, for what no
 * event tells. */
#define FS_POLL_MS 100u
/* How long rmdir waits for the RELEASE of files closed just before. */
#define FS_RMDIR_WAIT_MS 5000u
/* FUSE request size and default st_blksize before configuration. */
#define FS_IO_SIZE         (1u << 20)
#define FS_MAX_CONFIG_TEXT 4096

struct vdifs;

/* ---------------------------------------------------------------------
 * Logging, tracing, errors (base.c).
 */
void fs_log(enum vdi_log_level level, const char *fmt, ...) FS_PRINTF(2, 3);
/* debug: log level debug and one line per request (-d); use_syslog:
 * after daemonizing.  Call before threads start. */
void fs_log_setup(int debug, int use_syslog);
/* libvdi's log sink: its messages go where ours go. */
void fs_engine_sink(void *ctx, enum vdi_log_level level, const char *msg);
uint64_t fs_now_ms(void);
/* The CLOCK_REALTIME time ms from now, for pthread_cond_timedwait. */
void fs_deadline(struct timespec *ts, uint32_t ms);
/* The errno of an engine code: the one conversion (vdifs(1), ERRORS). */
int fs_errno(int rc);
/* The condition of a waiting request: 0 to go on, -EINTR on a FUSE
 * interrupt, -ESHUTDOWN when the session ends. */
int fs_req_check(fuse_req_t req);
/* A request about to sleep on c (with m) is woken when it is
 * interrupted: fs_wake_on before taking m, fs_wake_off after releasing
 * it (w lives until then).  The end of the session wakes it through the
 * abort of its set (watcher.c).  req NULL: nothing to register. */
struct fs_wake {
	pthread_mutex_t *m;
	pthread_cond_t *c;
};
void fs_wake_on(fuse_req_t req, struct fs_wake *w, pthread_mutex_t *m, pthread_cond_t *c);
void fs_wake_off(fuse_req_t req);

/* A request being served; with -d its reply is logged as one line:
 * "req <id> <op> ino <n> size <n> -> <result> <latency>us". */
struct fs_rq {
	fuse_req_t req;
	const char *op;
	uint64_t id;
	fuse_ino_t ino;
	size_t size;
	uint64_t t0_us;
};
void fs_rq_begin(struct fs_rq *r, fuse_req_t req, const char *op, fuse_ino_t ino, size_t size);
/* Logs "<result>" for the request (no reply sent here). */
void fs_rq_end(struct fs_rq *r, long result);
/* Replies, each logged with -d. */
void fs_reply_err(struct fs_rq *r, int err);
void fs_reply_write(struct fs_rq *r, size_t n);

/* ---------------------------------------------------------------------
 * Configuration of a set: mount options give the defaults, the file
 * /.config/<set> overrides them per set (config.c).
 */
struct fs_setcfg {
	uint32_t devices;           /* deviceCount, 1..64 */
	uint32_t features;          /* VDF_* requested */
	uint32_t open_timeout_ms;   /* open() waits this long for a server */
	uint32_t server_timeout_ms; /* VDConfig.serverTimeOut */
	uint32_t blksize;           /* st_blksize before configuration */
	uint64_t volume_size;       /* removable: stream bytes a backup medium holds */
	int has_group;
	gid_t group;
	char instance[VDI_MAX_INSTANCE + 1];
	char snapshot_cmd[1024];    /* the user's snapshot tool, or "" */
	int snapshot_manual;        /* snapshot=manual: .control answers */
	int sqlvdi;                 /* client backend: 0 libvdi, 1 sqlvdi */
	char sqlvdi_path[PATH_MAX]; /* its library ("" = the default path) */
};

void fs_cfg_defaults(struct fs_setcfg *c);
/* Applies one "key=value".  Returns 0, -ENOENT for a key that is not
 * ours, -EINVAL for a bad value (err gets the reason). */
int fs_cfg_apply(struct fs_setcfg *c, const char *kv, char *err, size_t errlen);
/* Applies a whole text: key=value items separated by blanks, commas or
 * new lines, '#' starts a comment.  Unknown keys are errors here.
 * c is unchanged on error. */
int fs_cfg_parse(struct fs_setcfg *c, const char *text, char *err, size_t errlen);
/* Options that exclude each other (group= or instance= with sqlvdi):
 * 0, or -EINVAL with the reason in err. */
int fs_cfg_check(const struct fs_setcfg *c, char *err, size_t errlen);
/* "devices=2 features=pipe+complete ..." (for status files). */
void fs_cfg_format(const struct fs_setcfg *c, char *buf, size_t len);
/* Text of a features word list ("pipe+complete"). */
void fs_features_format(uint32_t features, char *buf, size_t len);

/* ---------------------------------------------------------------------
 * Sets and devices (sets.c).
 */
/* The thread that waits on a device's stream for FUSE requests (pump.c). */
struct fs_pump {
	pthread_t th;
	pthread_mutex_t m; /* protects the fields below */
	pthread_cond_t c;
	struct vdi_cstream *s;   /* a device's stream, or */
	struct vdi_tarstream *t; /* the set's tar stream */
	int writer;              /* reserve (restore) or peek (backup) */
	int started, quit;
	int busy;    /* inside a stream call */
	size_t want; /* a request asked for this many bytes */
	int have;    /* result below is ready */
	ssize_t n;   /* bytes (>= 0) or VD_E_* */
	void *p;
	char msg[320]; /* vdi_last_error() of a failed call */
};

/* One of s and t (the other NULL). */
int fs_pump_start(struct fs_pump *pm, struct vdi_cstream *s, struct vdi_tarstream *t, int writer);
/* 1 while a stream call is pending: stopping needs an abort of the set. */
int fs_pump_busy(struct fs_pump *pm);
void fs_pump_stop(struct fs_pump *pm);
/* Bytes available (peek) or room (reserve), at most len: >= 0 with *p
 * set, or -errno: the stream's failure through fs_errno (msg gets its
 * text), -EINTR when the request was interrupted, -ESHUTDOWN when the
 * session ends (nothing was consumed in either case). */
ssize_t fs_pump_get(struct fs_pump *pm, fuse_req_t req, size_t len, void **p, char *msg,
                    size_t msglen);
/* Backup: start the next peek now (the stream is the pump's until the
 * next fs_pump_get returns). */
void fs_pump_prefetch(struct fs_pump *pm, size_t len);

enum fs_dev_state {
	DEV_IDLE,   /* not opened by any file handle yet */
	DEV_OPEN,   /* a reader or writer holds the stream */
	DEV_DONE,   /* stream ended normally and was closed */
	DEV_FAILED, /* stream ended with an error or an abort */
};

struct fs_dev {
	char name[VDI_MAX_NAME + 8]; /* "<set>.tar" may pass 127 bytes */
	pthread_mutex_t io;          /* serializes the stream calls */
	/* fields below: set->lock, except s/pos which dev->io protects
	 * while the device is DEV_OPEN */
	enum fs_dev_state state;
	int hidden; /* unlinked (tar -x replaces files) */
	int writer; /* open for restore */
	struct vdi_bdev *vd;
	struct vdi_cstream *s;
	struct vdi_tarstream *t; /* the tar device: its stream */
	int by_tar;              /* a device whose stream the tar owns */
	int by_members;          /* fed by member files <dev>.<seq> */
	int member_open;         /* a member file of it is open */
	uint64_t next_seq;       /* the member it takes next */
	struct fs_pump pump;     /* waits on s (or t) for the requests */
	uint64_t pos;            /* bytes moved through the stream */
	int at_eof;              /* reader saw end of stream */
	/* removable media (media.c), under set->lock (medium_end: dev->io) */
	uint32_t medium;          /* the medium the device's file holds (0: <dev>) */
	int medium_end;           /* backup: the reader saw the end of this medium */
	int between;              /* this medium ended and its file was closed: the
	                   * stream waits for <dev>.<medium + 1> */
	uint64_t t_first, t_last; /* ms of first and last data */
};

enum fs_set_state {
	SET_WAITING,    /* created; no server configuration yet */
	SET_CONFIGURED, /* server ended configuration; streaming */
	SET_DONE,       /* every device ended normally; client closed */
	SET_FAILED,     /* aborted or failed; see last_error */
};

struct fs_set {
	struct vdifs *fs; /* the mount it belongs to */
	uint32_t id;      /* FS_INO(id, ...) */
	char name[VDI_MAX_NAME + 1];
	struct fs_setcfg cfg;
	int refs;    /* fs->lock */
	int removed; /* fs->lock: rmdir'ed or unmounting */

	pthread_mutex_t lock;
	pthread_cond_t cond; /* state changes (set->lock) */
	enum fs_set_state state;
	/* snapshot backups (snapshot.c), under set->lock */
	uint32_t snap_phase; /* command being answered, 0 none */
	char snap_dev[VDI_MAX_NAME + 1];
	uint32_t snap_answer;                      /* manual: .control's answer, */
	int snap_answered;                         /* once given */
	int snap_waiting;                          /* manual: waiting for .control */
	char snap_last[256];                       /* what happened last, for .status */
	int waiter_active;                         /* the configuration waiter is in its call */
	int close_pending;                         /* close the client when it returns */
	const struct vdi_backend *backend;         /* the client library of the set */
	struct vdi_bset *client;                   /* NULL once closed */
	VDConfig vcfg;                             /* valid from SET_CONFIGURED */
	int open_handles;                          /* device handles open */
	uint64_t t_created, t_configured, t_ended; /* ms, monotonic */
	time_t created_wall;
	struct vdi_set_info last_info; /* snapshot taken before close */
	int have_info;
	char last_error[384];
	struct fs_dev dev[]; /* cfg.devices entries, then the tar */
};

/* A file written in /.config. */
struct fs_cfgfile {
	struct fs_cfgfile *next;
	uint32_t id;
	char name[VDI_MAX_NAME + 1];
	char text[FS_MAX_CONFIG_TEXT];
	size_t len;
	time_t mtime;
};

struct fs_set_link {
	struct fs_set_link *next;
	struct fs_set *set;
};

/* The context of a mount. */
struct vdifs {
	struct fuse_session *se;
	struct fs_setcfg defaults;
	uid_t uid;
	gid_t gid;
	time_t mounted_wall;

	pthread_mutex_t lock; /* registry */
	struct fs_set_link *sets;
	struct fs_cfgfile *cfgfiles;
	uint32_t next_id;
	char last_error[384]; /* of the last failed mkdir/rmdir */

	pthread_t watcher;
	int watcher_started;
	int stopping;                /* atomic: unmount or signal */
	int waiters;                 /* configuration waiters running (lock) */
	pthread_cond_t waiters_cond; /* waiters reached 0 (lock) */
};

/* Inode numbers: (id << 8) | slot.  id 0 is the root's objects; set and
 * config-file ids come from one counter and are never reused. */
#define FS_INO(id, slot) (((fuse_ino_t)(id) << 8) | (fuse_ino_t)(slot))
#define FS_INO_ID(ino)   ((uint32_t)((ino) >> 8))
#define FS_INO_SLOT(ino) ((unsigned)((ino)&0xff))
enum {
	SLOT_ROOT = 1,        /* id 0: FUSE_ROOT_ID */
	SLOT_ROOT_STATUS = 2, /* id 0 */
	SLOT_CONFIG_DIR = 3,  /* id 0 */
	SLOT_SET_DIR = 0,     /* id = set */
	SLOT_SET_STATUS = 1,
	SLOT_SET_CONTROL = 2,
	SLOT_DEV0 = 3,                                  /* device k: SLOT_DEV0 + k; the tar file is
			       * device cfg.devices */
	SLOT_MEMBER0 = SLOT_DEV0 + VDI_MAX_DEVICES + 1, /* an open member
			       * file <dev>.<seq> of device k: + k */
	SLOT_MEDIUM0 = SLOT_MEMBER0 + VDI_MAX_DEVICES,  /* medium file <dev>.<m> of
			       * device k: + k, m in FS_INO_MEDIUM */
	SLOT_CFGFILE = 0xff,                            /* id = config file */
};
/* A medium file's inode carries its medium number above the id, which
 * FS_INO_ID's 32 bits leave out: each <dev>.<m> is a file of its own. */
#define FS_INO_MED(id, k, m) (FS_INO(id, SLOT_MEDIUM0 + (k)) | ((fuse_ino_t)(m) << 40))
#define FS_INO_MEDIUM(ino)   ((uint32_t)((ino) >> 40))
_Static_assert(SLOT_MEDIUM0 + VDI_MAX_DEVICES <= SLOT_CFGFILE, "inode slots overlap");

/* Sets (sets.c). */
int fs_set_create(struct vdifs *fs, const char *name, struct fs_set **out);
/* Looks a set up by id or name; takes a reference.  NULL if none. */
struct fs_set *fs_set_get_id(struct vdifs *fs, uint32_t id);
struct fs_set *fs_set_get_name(struct vdifs *fs, const char *name);
void fs_set_ref(struct fs_set *set);
void fs_set_put(struct fs_set *set);
/* rmdir: 0, -EBUSY, -ENOENT. */
int fs_set_remove(struct vdifs *fs, const char *name);
int fs_set_abort(struct fs_set *set, const char *fmt, ...) FS_PRINTF(2, 3);
/* Records the first error of a set (set->lock held). */
void fs_set_error_locked(struct fs_set *set, const char *fmt, ...) FS_PRINTF(2, 3);
/* Marks the set failed and aborts it (set->lock held). */
void fs_set_fail_locked(struct fs_set *set);
/* Keeps the engine's snapshot of the set, and its abort reason as the
 * set's error (set->lock held). */
void fs_set_note_abort_locked(struct fs_set *set);
/* End the set when every device ended, or it failed and nothing is open
 * (set->lock held). */
void fs_set_maybe_finish_locked(struct fs_set *set);
/* Index of a device file by name (the tar file: cfg.devices), or -1. */
int fs_set_dev_index(const struct fs_set *set, const char *name);
/* Is device index k the set's tar file? */
static inline int fs_is_tar(const struct fs_set *set, int k)
{
	return k == (int)set->cfg.devices;
}
uint32_t fs_set_blksize(struct fs_set *set);
/* Does the set have a <set>.tar file?  Not for tape images or removable
 * media, which a tar member cannot carry (F35). */
int fs_set_has_tar(const struct fs_set *set);
/* References to every registered set (caller puts each, frees *out). */
int fs_sets_snapshot(struct vdifs *fs, struct fs_set ***out);
/* Records the mount's last error, shown by /.status (fs->lock held). */
void fs_root_error_locked(struct vdifs *fs, const char *fmt, ...) FS_PRINTF(2, 3);
/* Unmount: abort and close every set (no request runs any more). */
void fs_sets_shutdown(struct vdifs *fs);
/* Returns once every configuration waiter left (after fs_sets_shutdown,
 * before the backends are freed). */
void fs_sets_wait_waiters(struct vdifs *fs);

/* Config files of /.config (sets.c: they belong to the registry). */
int fs_cfgfile_lookup(struct vdifs *fs, const char *name, struct fs_cfgfile *copy);
int fs_cfgfile_get_id(struct vdifs *fs, uint32_t id, struct fs_cfgfile *copy);
int fs_cfgfile_create(struct vdifs *fs, const char *name, struct fs_cfgfile *copy);
int fs_cfgfile_store(struct vdifs *fs, uint32_t id, const char *text, size_t len);
int fs_cfgfile_remove(struct vdifs *fs, const char *name);

/* Device streams (devices.c).  Each returns 0 or -errno. */
int fs_dev_open(fuse_req_t req, struct fs_set *set, int k, int writer);
/* One wait of an open on set->cond (lock held), interruptible (the
 * request's interrupt), until end unless open_timeout is infinite: 0
 * (check again), -ETIMEDOUT, or the request's -errno. */
int fs_open_wait_locked(fuse_req_t req, struct fs_set *set, const struct timespec *end);
void fs_dev_release(struct fs_set *set, int k, int ok, const char *why);
/* tar -x into a restore set: a member file <dev>.<seq> created in the
 * set directory appends to device k when seq is its next member
 * (vdi_tar_member_name); the first opens the device's stream, an empty
 * one (the archive's end marker) ends it.  Returns 1 (a writer) or
 * -errno; a member out of sequence fails the set, with its name. */
int fs_member_open(fuse_req_t req, struct fs_set *set, int k, uint64_t seq, const char *name);
/* The member file was closed normally: the device waits for the next
 * (empty = 0), or its stream ends (empty = 1, fs_dev_release). */
void fs_member_close(struct fs_set *set, int k, int empty);
/* A backup reader at end of file closes: acknowledges VDC_Complete
 * without waiting for the server (fs_dev_release follows).  0 or -EIO
 * (the set failed: the backup did not complete; the status says why). */
int fs_dev_end(struct fs_set *set, int k);

struct fs_handle;
/* Removable media (media.c).  A name <dev>.<m> (m >= 1, decimal) of a
 * removable set: 0 with the device index and medium, or -1. */
int fs_media_parse(const struct fs_set *set, const char *name, int *k, uint32_t *m);
/* Is medium file m of device k there (set->lock held)?  Backup: the
 * media read so far and the next once the current one ended. */
int fs_media_visible_locked(const struct fs_set *set, int k, uint32_t m);
/* Open of <dev>.<m>: waits (bounded by open_timeout, interruptible) until
 * medium m - 1 ended and its file was closed, then hands the stream to
 * the new file (backup: vdi_cstream_next_volume).  Returns 1 (writer) or
 * 0 (reader), or -errno; a restore medium out of order fails the set. */
int fs_media_open(fuse_req_t req, struct fs_set *set, int k, uint32_t m, struct fuse_file_info *fi,
                  struct fs_handle *h);
/* Backup: a read of device k returned 0 at the end of a medium, not of
 * the stream (vdi_cstream_volume_ended): <dev>.<m+1> appears. */
void fs_media_ended(struct fs_set *set, int k);
/* Release of a device or medium file of a removable set, orderly: ends
 * the medium (a reader at its end; a writer: vdi_cstream_end_volume and
 * the server's answer, the next medium or the device's end).  1 if it
 * took care of the file, 0 if fs_dev_release must end the stream. */
int fs_media_release(struct fs_handle *h);
/* Whether a configuration names a snapshot tool or snapshot=manual
 * (config.c: a fact of the configuration, used by sets.c and snapshot.c). */
int fs_snapshot_configured(const struct fs_setcfg *c);
/* Snapshots (snapshot.c): the handler a set's device streams get when
 * its configuration takes snapshots; and .control's "snapshot-done" /
 * "snapshot-failed" (0, or -EINVAL when no snapshot waits). */
void fs_snapshot_attach(struct fs_set *set, struct vdi_cstream *s);
int fs_snapshot_answer(struct fs_set *set, int ok);
/* The .status line (set->lock held). */
void fs_snapshot_status_locked(struct fs_set *set, char *buf, size_t len);

/* The watcher (watcher.c). */
int fs_watcher_start(struct vdifs *fs);
void fs_watcher_stop(struct vdifs *fs);

/* Status texts (status.c; malloc'ed, caller frees). */
char *fs_set_status(struct fs_set *set, size_t *len);
char *fs_root_status(struct vdifs *fs, size_t *len);

/* Client backends (backends.c): the library of a configuration, loaded
 * once per path and kept until unmount.  0, or -EINVAL with the reason
 * (path, missing symbol) in err. */
int fs_backend_get(const struct fs_setcfg *c, const struct vdi_backend **out, char *err,
                   size_t errlen);
void fs_backends_free(void);

/* ---------------------------------------------------------------------
 * File handles (fi->fh) and the FUSE side (ops.c, devfile.c).
 */
enum fs_hkind { H_DEV, H_TEXT, H_CONTROL, H_CFG, H_DIR };

struct fs_dirent {
	char name[VDI_MAX_NAME + 8];
	fuse_ino_t ino;
	mode_t mode;
};

struct fs_handle {
	struct fs_handle *prev, *next; /* all handles: handles_lock */
	enum fs_hkind kind;
	struct fs_set *set; /* H_DEV, H_TEXT of a set, H_CONTROL: a ref */
	int dev;            /* H_DEV: index */
	int writer;         /* H_DEV: restore direction */
	int append;         /* H_DEV: O_APPEND, offsets mean nothing */
	int killed;         /* H_DEV: signal that killed the closer */
	int failed;         /* H_DEV: an I/O error happened */
	int ended;          /* H_DEV: stream already ended (at flush) */
	int member;         /* H_DEV: a member file <dev>.<seq> */
	uint32_t medium;    /* H_DEV: the medium this file is (0: <dev>) */
	uint64_t base;      /* H_DEV: stream position at its open */
	uint32_t cfg_id;    /* H_CFG */
	char *text;         /* H_TEXT, H_CFG: contents */
	size_t len;
	struct fs_dirent *ents; /* H_DIR */
	size_t nents;
};

/* Device files (devfile.c). */
void fs_devfile_read(struct fs_rq *r, struct fs_handle *h, size_t size);
void fs_devfile_write(struct fs_rq *r, struct fs_handle *h, struct fuse_bufvec *bufv, off_t off);
/* FLUSH by process pid: notes a killed closer; ends a reader at EOF
 * (fs_dev_end), then sets *end: after replying (0 or -EIO, the result),
 * the caller must fs_dev_release(set, dev, ok = result == 0, ...), which
 * waits for the server's CloseDevice, with a reference on the set. */
int fs_devfile_flush(struct fs_handle *h, pid_t pid, int *end);
/* RELEASE: ends the stream (orderly or abort) unless flush did. */
void fs_devfile_release(struct fs_handle *h);

extern const struct fuse_lowlevel_ops fs_ops;
/* After the session loop: free the handles the kernel never released. */
void fs_handles_free_all(void);

#endif /* VDIFS_H */
