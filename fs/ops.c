/* SPDX-License-Identifier: MIT */
/*
 * ops.c - the FUSE low-level operations of vdifs.
 *
 * Why the low-level API: a device read must answer with the bytes that
 * sit in the set's shared buffers without copying them (fuse_reply_buf
 * on the memory vdi_cstream_peek points at: one writev straight into the
 * reader's pages), a device write must land straight in the buffer of
 * the server's pending VDC_Read (write_buf + fuse_buf_copy into
 * vdi_cstream_reserve memory, no staging buffer of ours), a request
 * waiting for the server must see FUSE interrupts and unmount, and -d
 * logs each request with its reply.  The high-level API hides the
 * request, the interrupt and the reply, and adds a path layer and a
 * copy we do not need.
 *
 * Device files (DESIGN.md decision 6; the data path is devfile.c)
 *   - open: waits for the server's configuration (bounded by
 *     open_timeout, EINTR on interrupt), then direct_io (no page cache:
 *     a size we do not know must not read as empty) and nonseekable;
 *     st_size 0 and st_blocks 0 so that copy tools see a plain
 *     non-sparse file and read to end of file (no SEEK_DATA, no "Illegal
 *     seek"); st_blksize = maxTransferSize once configured (cat and cp
 *     size their reads from it).
 *   - utimensat, chmod, chown, truncate to 0, fsync: accepted, ignored.
 *   - unlink hides the file until it is created again (tar -x unlinks
 *     before it creates); create of a device name opens it for writing.
 *   - attribute and entry timeouts are 0: sets come and go, blksize
 *     changes at configuration.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdifs.h"

/* ---------------------------------------------------------------------
 * Replies, each logged with -d.
 */
static void r_entry(struct fs_rq *r, const struct fuse_entry_param *e)
{
	fs_rq_end(r, (long)e->ino);
	fuse_reply_entry(r->req, e);
}

static void r_attr(struct fs_rq *r, const struct stat *st)
{
	fs_rq_end(r, 0);
	fuse_reply_attr(r->req, st, 0.0);
}

/* The kernel never sends RELEASE for an open whose reply it did not take
 * (the opener was interrupted at that moment): clean up here. */
static void handle_drop(struct fs_handle *h);

static void r_open(struct fs_rq *r, struct fs_handle *h, struct fuse_file_info *fi)
{
	fi->fh = (uint64_t)(uintptr_t)h;
	fs_rq_end(r, 0);
	if (fuse_reply_open(r->req, fi)) {
		fs_log(VDI_LOG_WARN, "open reply not delivered (interrupted)");
		handle_drop(h);
	}
}

/* ---------------------------------------------------------------------
 * Attributes.
 */
static gid_t file_gid(struct vdifs *fs, const struct fs_setcfg *cfg)
{
	return cfg->has_group ? cfg->group : fs->gid;
}

static void st_init(struct vdifs *fs, struct stat *st, fuse_ino_t ino, mode_t type, mode_t perm,
                    const struct fs_setcfg *cfg, time_t t)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = type | perm;
	st->st_nlink = type == S_IFDIR ? 2 : 1;
	st->st_uid = fs->uid;
	st->st_gid = file_gid(fs, cfg);
	st->st_blksize = FS_IO_SIZE;
	st->st_atime = st->st_mtime = st->st_ctime = t;
}

static mode_t perm_of(const struct fs_setcfg *cfg, mode_t owner)
{
	return cfg->has_group ? owner | (owner >> 3) : owner;
}

static int attr_root(struct vdifs *fs, fuse_ino_t ino, struct stat *st)
{
	const struct fs_setcfg *d = &fs->defaults;

	switch (FS_INO_SLOT(ino)) {
	case SLOT_ROOT:
		st_init(fs, st, ino, S_IFDIR, perm_of(d, 0755) | (d->has_group ? 0020 : 0), d,
		        fs->mounted_wall);
		return 0;
	case SLOT_ROOT_STATUS: st_init(fs, st, ino, S_IFREG, 0444, d, time(NULL)); return 0;
	case SLOT_CONFIG_DIR:
		st_init(fs, st, ino, S_IFDIR, perm_of(d, 0700), d, fs->mounted_wall);
		return 0;
	}
	return -ENOENT;
}

static int attr_cfgfile(struct vdifs *fs, fuse_ino_t ino, struct stat *st)
{
	struct fs_cfgfile f;

	if (fs_cfgfile_get_id(fs, FS_INO_ID(ino), &f))
		return -ENOENT;
	st_init(fs, st, ino, S_IFREG, perm_of(&fs->defaults, 0600), &fs->defaults, f.mtime);
	st->st_size = (off_t)f.len;
	st->st_blocks = (blkcnt_t)((f.len + 511) / 512);
	return 0;
}

static int attr_set(struct vdifs *fs, struct fs_set *set, fuse_ino_t ino, struct stat *st)
{
	unsigned slot = FS_INO_SLOT(ino);
	const struct fs_setcfg *c = &set->cfg;

	if (slot == SLOT_SET_DIR) {
		st_init(fs, st, ino, S_IFDIR, perm_of(c, 0700), c, set->created_wall);
	} else if (slot == SLOT_SET_STATUS) {
		st_init(fs, st, ino, S_IFREG, 0444, c, time(NULL));
	} else if (slot == SLOT_SET_CONTROL) {
		st_init(fs, st, ino, S_IFREG, perm_of(c, 0200), c, set->created_wall);
	} else if ((slot >= SLOT_DEV0 && slot - SLOT_DEV0 <= c->devices) ||
	           (slot >= SLOT_MEMBER0 && slot - SLOT_MEMBER0 < c->devices) ||
	           (slot >= SLOT_MEDIUM0 && slot - SLOT_MEDIUM0 < c->devices)) {
		/* size 0 and 0 blocks: not sparse, read to end of file */
		st_init(fs, st, ino, S_IFREG, perm_of(c, 0600), c, set->created_wall);
		st->st_blksize = fs_set_blksize(set);
	} else {
		return -ENOENT;
	}
	return 0;
}

static int fill_attr(struct vdifs *fs, fuse_ino_t ino, struct stat *st)
{
	struct fs_set *set;
	int rc;

	if (FS_INO_ID(ino) == 0)
		return attr_root(fs, ino, st);
	if (FS_INO_SLOT(ino) == SLOT_CFGFILE)
		return attr_cfgfile(fs, ino, st);
	set = fs_set_get_id(fs, FS_INO_ID(ino));
	if (!set)
		return -ENOENT;
	rc = attr_set(fs, set, ino, st);
	fs_set_put(set);
	return rc;
}

static void reply_entry_of(struct vdifs *fs, struct fs_rq *r, fuse_ino_t ino)
{
	struct fuse_entry_param e;
	int rc;

	memset(&e, 0, sizeof(e));
	rc = fill_attr(fs, ino, &e.attr);
	if (rc) {
		fs_reply_err(r, -rc);
		return;
	}
	e.ino = ino;
	e.generation = 1;
	/* timeouts 0: sets come and go, blksize changes at configuration */
	r_entry(r, &e);
}

/* ---------------------------------------------------------------------
 * Name space.
 */
static fuse_ino_t lookup_in_set(struct vdifs *fs, fuse_ino_t parent, const char *name)
{
	struct fs_set *set = fs_set_get_id(fs, FS_INO_ID(parent));
	fuse_ino_t ino = 0;
	uint32_t m;
	int k;

	if (!set)
		return 0;
	if (!strcmp(name, ".status")) {
		ino = FS_INO(set->id, SLOT_SET_STATUS);
	} else if (!strcmp(name, ".control")) {
		ino = FS_INO(set->id, SLOT_SET_CONTROL);
	} else if ((k = fs_set_dev_index(set, name)) >= 0) {
		pthread_mutex_lock(&set->lock);
		if (!set->dev[k].hidden && (!fs_is_tar(set, k) || fs_set_has_tar(set)))
			ino = FS_INO(set->id, SLOT_DEV0 + (unsigned)k);
		pthread_mutex_unlock(&set->lock);
	} else if (!fs_media_parse(set, name, &k, &m)) {
		pthread_mutex_lock(&set->lock);
		if (fs_media_visible_locked(set, k, m))
			ino = FS_INO_MED(set->id, (unsigned)k, m);
		pthread_mutex_unlock(&set->lock);
	}
	fs_set_put(set);
	return ino;
}

static fuse_ino_t lookup_ino(struct vdifs *fs, fuse_ino_t parent, const char *name)
{
	struct fs_cfgfile f;
	struct fs_set *set;
	fuse_ino_t ino = 0;

	if (parent == FUSE_ROOT_ID) {
		if (!strcmp(name, ".status"))
			return FS_INO(0, SLOT_ROOT_STATUS);
		if (!strcmp(name, ".config"))
			return FS_INO(0, SLOT_CONFIG_DIR);
		set = fs_set_get_name(fs, name);
		if (set) {
			ino = FS_INO(set->id, SLOT_SET_DIR);
			fs_set_put(set);
		}
		return ino;
	}
	if (parent == FS_INO(0, SLOT_CONFIG_DIR))
		return fs_cfgfile_lookup(fs, name, &f) ? 0 : FS_INO(f.id, SLOT_CFGFILE);
	if (FS_INO_ID(parent) && FS_INO_SLOT(parent) == SLOT_SET_DIR)
		return lookup_in_set(fs, parent, name);
	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct vdifs *fs = fuse_req_userdata(req);
	struct fs_rq r;
	fuse_ino_t ino;

	fs_rq_begin(&r, req, "lookup", parent, 0);
	ino = lookup_ino(fs, parent, name);
	if (!ino)
		fs_reply_err(&r, ENOENT);
	else
		reply_entry_of(fs, &r, ino);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vdifs *fs = fuse_req_userdata(req);
	struct fs_rq r;
	struct stat st;
	int rc;

	(void)fi;
	fs_rq_begin(&r, req, "getattr", ino, 0);
	rc = fill_attr(fs, ino, &st);
	if (rc)
		fs_reply_err(&r, -rc);
	else
		r_attr(&r, &st);
}

/* Copy tools set times, modes and owners, and truncate before writing:
 * accepted and ignored on device files (DESIGN.md decision 6). */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
	struct vdifs *fs = fuse_req_userdata(req);
	struct fs_handle *h = fi ? (struct fs_handle *)(uintptr_t)fi->fh : NULL;
	struct fs_rq r;
	struct stat st;
	int rc;

	fs_rq_begin(&r, req, "setattr", ino, (size_t)attr->st_size);
	if ((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size != 0) {
		fs_reply_err(&r, EINVAL);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && FS_INO_SLOT(ino) == SLOT_CFGFILE) {
		rc = fs_cfgfile_store(fs, FS_INO_ID(ino), "", 0);
		if (!rc && h && h->kind == H_CFG)
			h->len = 0;
		if (rc) {
			fs_reply_err(&r, -rc);
			return;
		}
	}
	rc = fill_attr(fs, ino, &st);
	if (rc)
		fs_reply_err(&r, -rc);
	else
		r_attr(&r, &st);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct vdifs *fs = fuse_req_userdata(req);
	struct fs_rq r;
	struct fs_set *set;
	int rc;

	(void)mode;
	fs_rq_begin(&r, req, "mkdir", parent, 0);
	if (parent != FUSE_ROOT_ID) {
		fs_reply_err(&r, EPERM);
		return;
	}
	rc = fs_set_create(fs, name, &set);
	if (rc) {
		fs_reply_err(&r, -rc);
		return;
	}
	reply_entry_of(fs, &r, FS_INO(set->id, SLOT_SET_DIR));
	fs_set_put(set);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct vdifs *fs = fuse_req_userdata(req);
	struct fs_rq r;
	int rc;

	fs_rq_begin(&r, req, "rmdir", parent, 0);
	if (parent != FUSE_ROOT_ID) {
		fs_reply_err(&r, parent == FS_INO(0, SLOT_CONFIG_DIR) ? ENOTDIR : EPERM);
		return;
	}
	if (!strcmp(name, ".config")) {
		fs_reply_err(&r, EPERM);
		return;
	}
	rc = fs_set_remove(fs, name);
	fs_reply_err(&r, -rc);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct vdifs *fs = fuse_req_userdata(req);
	struct fs_rq r;
	struct fs_set *set;
	int k, rc = EPERM;

	fs_rq_begin(&r, req, "unlink", parent, 0);
	if (parent == FS_INO(0, SLOT_CONFIG_DIR)) {
		rc = -fs_cfgfile_remove(fs, name);
	} else if (FS_INO_ID(parent) && FS_INO_SLOT(parent) == SLOT_SET_DIR &&
	           (set = fs_set_get_id(fs, FS_INO_ID(parent)))) {
		k = fs_set_dev_index(set, name);
		if (k >= 0) {
			pthread_mutex_lock(&set->lock);
			rc = set->dev[k].hidden ? ENOENT : 0;
			set->dev[k].hidden = 1;
			pthread_mutex_unlock(&set->lock);
		}
		fs_set_put(set);
	}
	fs_reply_err(&r, rc);
}

/* ---------------------------------------------------------------------
 * Open, create, release.
 */
/* Every handle, so that the ones the kernel never releases (the session
 * ended while files were open) are freed at unmount. */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fs_handle handles = { .prev = &handles, .next = &handles };

static struct fs_handle *handle_new(enum fs_hkind kind)
{
	struct fs_handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->kind = kind;
	pthread_mutex_lock(&handles_lock);
	h->next = &handles;
	h->prev = handles.prev;
	handles.prev->next = h;
	handles.prev = h;
	pthread_mutex_unlock(&handles_lock);
	return h;
}

static void handle_free(struct fs_handle *h)
{
	pthread_mutex_lock(&handles_lock);
	h->prev->next = h->next;
	h->next->prev = h->prev;
	pthread_mutex_unlock(&handles_lock);
	if (h->set)
		fs_set_put(h->set);
	free(h->text);
	free(h->ents);
	free(h);
}

static int open_dev(fuse_req_t req, struct fs_set *set, int k, struct fuse_file_info *fi,
                    struct fs_handle *h)
{
	int acc = fi->flags & O_ACCMODE;
	int writer = acc == O_RDONLY ? 0 : acc == O_WRONLY ? 1 : 2;
	int rc;

	rc = fs_dev_open(req, set, k, writer);
	if (rc < 0)
		return rc;
	h->kind = H_DEV;
	h->dev = k;
	h->writer = rc;
	h->append = (fi->flags & O_APPEND) != 0;
	fi->direct_io = 1;
	fi->nonseekable = 1;
	fi->keep_cache = 0;
	return 0;
}

static int open_text(struct vdifs *fs, struct fs_handle *h, struct fs_set *set,
                     struct fuse_file_info *fi)
{
	h->kind = H_TEXT;
	h->text = set ? fs_set_status(set, &h->len) : fs_root_status(fs, &h->len);
	if (!h->text)
		return -ENOMEM;
	fi->direct_io = 1;
	return 0;
}

static int open_cfg(struct vdifs *fs, struct fs_handle *h, uint32_t id, struct fuse_file_info *fi)
{
	struct fs_cfgfile f;
	int rc;

	if (fs_cfgfile_get_id(fs, id, &f))
		return -ENOENT;
	if (fi->flags & O_TRUNC) {
		rc = fs_cfgfile_store(fs, id, "", 0);
		if (rc)
			return rc;
		f.len = 0;
	}
	h->kind = H_CFG;
	h->cfg_id = id;
	h->text = malloc(FS_MAX_CONFIG_TEXT);
	if (!h->text)
		return -ENOMEM;
	memcpy(h->text, f.text, f.len);
	h->len = f.len;
	fi->direct_io = 1;
	return 0;
}

static int open_ino(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct fs_handle *h)
{
	struct vdifs *fs = fuse_req_userdata(req);
	unsigned slot = FS_INO_SLOT(ino);
	struct fs_set *set;

	if (FS_INO_ID(ino) == 0)
		return slot == SLOT_ROOT_STATUS ? open_text(fs, h, NULL, fi) : -EISDIR;
	if (slot == SLOT_CFGFILE)
		return open_cfg(fs, h, FS_INO_ID(ino), fi);
	set = fs_set_get_id(fs, FS_INO_ID(ino));
	if (!set)
		return -ENOENT;
	h->set = set; /* the handle owns the reference from here */
	if (slot == SLOT_SET_STATUS)
		return open_text(fs, h, set, fi);
	if (slot == SLOT_SET_CONTROL) {
		h->kind = H_CONTROL;
		fi->direct_io = 1;
		return 0;
	}
	if (slot >= SLOT_DEV0 && slot - SLOT_DEV0 <= set->cfg.devices)
		return open_dev(req, set, (int)(slot - SLOT_DEV0), fi, h);
	if (slot >= SLOT_MEDIUM0 && slot - SLOT_MEDIUM0 < set->cfg.devices)
		return fs_media_open(req, set, (int)(slot - SLOT_MEDIUM0), FS_INO_MEDIUM(ino), fi,
		                     h);
	return -EISDIR;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_handle *h = handle_new(H_TEXT);
	struct fs_rq r;
	int rc;

	fs_rq_begin(&r, req, "open", ino, 0);
	if (!h) {
		fs_reply_err(&r, ENOMEM);
		return;
	}
	rc = open_ino(req, ino, fi, h);
	if (rc) {
		handle_free(h);
		fs_reply_err(&r, -rc);
		return;
	}
	r_open(&r, h, fi);
}

/* tar -x of a set's archive into the set directory creates its members
 * <dev>.<seq> (vdi.h, "Set stream"): each appends to its device. */
static int create_member(fuse_req_t req, struct fs_set *set, const char *name,
                         struct fuse_file_info *fi, struct fs_handle *h, fuse_ino_t *ino)
{
	char dev[VDI_MAX_NAME + 1];
	uint64_t seq;
	int k, rc;

	if (vdi_tar_member_parse(name, dev, sizeof(dev), &seq))
		return -EPERM; /* only the set's devices and their members */
	k = fs_set_dev_index(set, dev);
	if (k < 0 || fs_is_tar(set, k)) {
		pthread_mutex_lock(&set->lock);
		fs_set_error_locked(
			set,
			"member '%s': no device '%s' in this set (the restore set needs the "
			"backup set's name)",
			name, dev);
		fs_set_fail_locked(set);
		pthread_mutex_unlock(&set->lock);
		return -EINVAL;
	}
	rc = fs_member_open(req, set, k, seq, name);
	if (rc < 0)
		return rc;
	h->kind = H_DEV;
	h->dev = k;
	h->writer = 1;
	h->member = 1;
	pthread_mutex_lock(&set->lock);
	h->base = set->dev[k].pos;
	pthread_mutex_unlock(&set->lock);
	fi->direct_io = 1;
	fi->nonseekable = 1;
	*ino = FS_INO(set->id, SLOT_MEMBER0 + (unsigned)k);
	return 0;
}

static int create_dev(fuse_req_t req, fuse_ino_t parent, const char *name,
                      struct fuse_file_info *fi, struct fs_handle *h, fuse_ino_t *ino)
{
	struct vdifs *fs = fuse_req_userdata(req);
	struct fs_set *set = fs_set_get_id(fs, FS_INO_ID(parent));
	uint32_t m;
	int k;

	if (!set)
		return -ENOENT;
	h->set = set;
	k = fs_set_dev_index(set, name);
	if (k < 0 && !fs_media_parse(set, name, &k, &m)) {
		*ino = FS_INO_MED(set->id, (unsigned)k, m);
		return fs_media_open(req, set, k, m, fi, h);
	}
	if (k < 0)
		return create_member(req, set, name, fi, h, ino);
	pthread_mutex_lock(&set->lock);
	set->dev[k].hidden = 0;
	pthread_mutex_unlock(&set->lock);
	*ino = FS_INO(set->id, SLOT_DEV0 + (unsigned)k);
	return open_dev(req, set, k, fi, h);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
	struct vdifs *fs = fuse_req_userdata(req);
	struct fs_handle *h = handle_new(H_TEXT);
	struct fuse_entry_param e;
	struct fs_cfgfile f;
	struct fs_rq r;
	fuse_ino_t ino = 0;
	int rc = -EPERM;

	(void)mode;
	fs_rq_begin(&r, req, "create", parent, 0);
	if (!h) {
		fs_reply_err(&r, ENOMEM);
		return;
	}
	if (parent == FS_INO(0, SLOT_CONFIG_DIR)) {
		rc = fs_cfgfile_create(fs, name, &f);
		if (!rc) {
			ino = FS_INO(f.id, SLOT_CFGFILE);
			rc = open_cfg(fs, h, f.id, fi);
		}
	} else if (FS_INO_ID(parent) && FS_INO_SLOT(parent) == SLOT_SET_DIR) {
		rc = create_dev(req, parent, name, fi, h, &ino);
	}
	memset(&e, 0, sizeof(e));
	if (!rc)
		rc = fill_attr(fs, ino, &e.attr);
	if (rc) {
		if (h->kind == H_DEV) {
			h->failed = 1;
			fs_devfile_release(h);
		}
		handle_free(h);
		fs_reply_err(&r, -rc);
		return;
	}
	e.ino = ino;
	e.generation = 1;
	fi->fh = (uint64_t)(uintptr_t)h;
	fs_rq_end(&r, (long)ino);
	if (fuse_reply_create(req, &e, fi)) {
		fs_log(VDI_LOG_WARN, "create reply not delivered (interrupted)");
		handle_drop(h);
	}
}

/* FLUSH comes with every close(2); see fs_devfile_flush.  A reader that
 * ended is answered first; then this worker waits for the server to
 * close the device.  The RELEASE may free h meanwhile: the set is held
 * by its own reference. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	struct fs_set *set = NULL;
	struct fs_rq r;
	int rc = 0, end = 0, k = 0;

	fs_rq_begin(&r, req, "flush", ino, 0);
	if (h->kind == H_DEV)
		rc = fs_devfile_flush(h, fuse_req_ctx(req)->pid, &end);
	if (end) {
		set = h->set;
		k = h->dev;
		fs_set_ref(set);
	}
	fs_reply_err(&r, -rc);
	if (end) {
		fs_dev_release(set, k, rc == 0, "end of stream failed");
		fs_set_put(set);
	}
}

static void handle_drop(struct fs_handle *h)
{
	if (h->kind == H_DEV) {
		h->failed = 1; /* the opener never got the file: no stream */
		fs_devfile_release(h);
	}
	handle_free(h);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	struct fs_rq r;

	fs_rq_begin(&r, req, "release", ino, 0);
	/*
	 * Reply first, then end the stream on this worker.  The kernel sends
	 * RELEASE as a background request and keeps at most max_background
	 * (12) of them outstanding on the whole mount.  Ending a restore
	 * device waits until the server closes it, which vdi exec (like SQL
	 * Server) does only once every stripe arrived: twelve such waits held
	 * back the RELEASE of the very devices they waited for, and every
	 * restore on the mount hung (16 sets x 4 devices at once, load.sh).
	 * The closer's close(2) never waits for RELEASE, so nothing changes
	 * for it.
	 */
	fs_reply_err(&r, 0);
	if (h->kind == H_DEV)
		fs_devfile_release(h);
	handle_free(h);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs_rq r;

	(void)datasync;
	(void)fi;
	fs_rq_begin(&r, req, "fsync", ino, 0);
	fs_reply_err(&r, 0);
}

/* ---------------------------------------------------------------------
 * Data: text files.
 */
static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	struct fs_rq r;
	size_t n = 0;

	fs_rq_begin(&r, req, "read", ino, size);
	if (h->kind == H_DEV) {
		fs_devfile_read(&r, h, size);
		return;
	}
	if (h->kind == H_TEXT || h->kind == H_CFG) {
		char *copy = NULL;

		if (off >= 0 && (size_t)off < h->len)
			n = h->len - (size_t)off < size ? h->len - (size_t)off : size;
		/* once the reply is in, the reader may close and RELEASE may
		 * free h on another thread, even before fuse_reply_buf
		 * returns here: reply from a copy of our own */
		if (n && !(copy = malloc(n))) {
			fs_reply_err(&r, ENOMEM);
			return;
		}
		if (n)
			memcpy(copy, h->text + off, n);
		fs_rq_end(&r, (long)n);
		fuse_reply_buf(req, copy, n);
		free(copy);
		return;
	}
	fs_reply_err(&r, EBADF);
}

static int control_command(struct fs_handle *h, const char *text)
{
	char word[32];

	if (sscanf(text, " %31s", word) != 1)
		return 0; /* empty write: nothing to do */
	if (!strcmp(word, "abort"))
		return fs_set_abort(h->set, "aborted from .control");
	if (!strcmp(word, "snapshot-done") || !strcmp(word, "snapshot-failed"))
		return fs_snapshot_answer(h->set, !strcmp(word, "snapshot-done"));
	return -EINVAL;
}

static int text_write(struct vdifs *fs, struct fs_handle *h, struct fuse_bufvec *bufv, off_t off,
                      size_t total)
{
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(total);
	char buf[FS_MAX_CONFIG_TEXT];
	ssize_t c;

	if (h->kind == H_CONTROL)
		off = 0;
	if (off < 0 || (size_t)off + total >= FS_MAX_CONFIG_TEXT)
		return -EFBIG;
	dst.buf[0].mem = buf;
	c = fuse_buf_copy(&dst, bufv, 0);
	if (c != (ssize_t)total)
		return -EIO;
	buf[total] = '\0';
	if (h->kind == H_CONTROL)
		return control_command(h, buf);
	memcpy(h->text + off, buf, total);
	if ((size_t)off + total > h->len)
		h->len = (size_t)off + total;
	return fs_cfgfile_store(fs, h->cfg_id, h->text, h->len);
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *bufv, off_t off,
                         struct fuse_file_info *fi)
{
	struct vdifs *fs = fuse_req_userdata(req);
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	size_t total = fuse_buf_size(bufv);
	struct fs_rq r;
	int rc;

	fs_rq_begin(&r, req, "write", ino, total);
	if (h->kind == H_DEV) {
		fs_devfile_write(&r, h, bufv, off);
		return;
	}
	if (h->kind != H_CONTROL && h->kind != H_CFG) {
		fs_reply_err(&r, EBADF);
		return;
	}
	rc = text_write(fs, h, bufv, off, total);
	if (rc)
		fs_reply_err(&r, -rc);
	else
		fs_reply_write(&r, total);
}

/* ---------------------------------------------------------------------
 * Directories: a snapshot taken at opendir, served by index.
 */
static int dir_add(struct fs_handle *h, size_t *cap, const char *name, fuse_ino_t ino, mode_t mode)
{
	if (h->nents == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		struct fs_dirent *n = realloc(h->ents, ncap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		h->ents = n;
		*cap = ncap;
	}
	snprintf(h->ents[h->nents].name, sizeof(h->ents[0].name), "%s", name);
	h->ents[h->nents].ino = ino;
	h->ents[h->nents].mode = mode;
	h->nents++;
	return 0;
}

static int dir_fill_root(struct vdifs *fs, struct fs_handle *h, size_t *cap)
{
	struct fs_set_link *l;
	int rc = 0;

	rc |= dir_add(h, cap, ".status", FS_INO(0, SLOT_ROOT_STATUS), S_IFREG);
	rc |= dir_add(h, cap, ".config", FS_INO(0, SLOT_CONFIG_DIR), S_IFDIR);
	pthread_mutex_lock(&fs->lock);
	for (l = fs->sets; l && !rc; l = l->next)
		rc = dir_add(h, cap, l->set->name, FS_INO(l->set->id, SLOT_SET_DIR), S_IFDIR);
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

static int dir_fill_config(struct vdifs *fs, struct fs_handle *h, size_t *cap)
{
	struct fs_cfgfile *f;
	int rc = 0;

	pthread_mutex_lock(&fs->lock);
	for (f = fs->cfgfiles; f && !rc; f = f->next)
		rc = dir_add(h, cap, f->name, FS_INO(f->id, SLOT_CFGFILE), S_IFREG);
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

static int dir_fill_set(struct vdifs *fs, struct fs_handle *h, size_t *cap, uint32_t id)
{
	struct fs_set *set = fs_set_get_id(fs, id);
	uint32_t k;
	int rc = 0;

	if (!set)
		return -ENOENT;
	rc |= dir_add(h, cap, ".status", FS_INO(id, SLOT_SET_STATUS), S_IFREG);
	rc |= dir_add(h, cap, ".control", FS_INO(id, SLOT_SET_CONTROL), S_IFREG);
	pthread_mutex_lock(&set->lock);
	for (k = 0; k <= set->cfg.devices && !rc; k++)
		if (!set->dev[k].hidden && (!fs_is_tar(set, (int)k) || fs_set_has_tar(set)))
			rc = dir_add(h, cap, set->dev[k].name, FS_INO(id, SLOT_DEV0 + k), S_IFREG);
	for (k = 0; k < set->cfg.devices && !rc; k++) {
		char name[VDI_MAX_NAME + 24];
		uint32_t m;

		for (m = 1; fs_media_visible_locked(set, (int)k, m) && !rc; m++) {
			snprintf(name, sizeof(name), "%s.%u", set->dev[k].name, m);
			rc = dir_add(h, cap, name, FS_INO_MED(id, k, m), S_IFREG);
		}
	}
	pthread_mutex_unlock(&set->lock);
	fs_set_put(set);
	return rc;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vdifs *fs = fuse_req_userdata(req);
	struct fs_handle *h = handle_new(H_DIR);
	struct fs_rq r;
	size_t cap = 0;
	int rc;

	fs_rq_begin(&r, req, "opendir", ino, 0);
	if (!h) {
		fs_reply_err(&r, ENOMEM);
		return;
	}
	rc = dir_add(h, &cap, ".", ino, S_IFDIR);
	rc |= dir_add(h, &cap, "..", FUSE_ROOT_ID, S_IFDIR);
	if (rc)
		rc = -ENOMEM;
	else if (ino == FUSE_ROOT_ID)
		rc = dir_fill_root(fs, h, &cap);
	else if (ino == FS_INO(0, SLOT_CONFIG_DIR))
		rc = dir_fill_config(fs, h, &cap);
	else if (FS_INO_ID(ino) && FS_INO_SLOT(ino) == SLOT_SET_DIR)
		rc = dir_fill_set(fs, h, &cap, FS_INO_ID(ino));
	else
		rc = -ENOTDIR;
	if (rc) {
		handle_free(h);
		fs_reply_err(&r, -rc);
		return;
	}
	r_open(&r, h, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	struct fs_rq r;
	char *buf;
	size_t pos = 0, i;

	fs_rq_begin(&r, req, "readdir", ino, size);
	buf = calloc(1, size);
	if (!buf) {
		fs_reply_err(&r, ENOMEM);
		return;
	}
	for (i = off > 0 ? (size_t)off : 0; i < h->nents; i++) {
		struct stat st = { .st_ino = h->ents[i].ino, .st_mode = h->ents[i].mode };
		size_t n = fuse_add_direntry(req, buf + pos, size - pos, h->ents[i].name, &st,
		                             (off_t)(i + 1));

		if (n > size - pos)
			break;
		pos += n;
	}
	fs_rq_end(&r, (long)pos);
	fuse_reply_buf(req, buf, pos);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_rq r;

	fs_rq_begin(&r, req, "releasedir", ino, 0);
	handle_free((struct fs_handle *)(uintptr_t)fi->fh);
	fs_reply_err(&r, 0);
}

void fs_handles_free_all(void)
{
	while (handles.next != &handles)
		handle_free(handles.next);
}

/* ---------------------------------------------------------------------
 * Session.
 */
static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* one write(2) arrives as consecutive requests, never concurrent */
	conn->want &= ~(unsigned)FUSE_CAP_ASYNC_DIO;
	/*
	 * No splice for requests: with it, write data would move from the
	 * writer's pages through a pipe into the shared buffer in one copy,
	 * but on this machine (kernel 6.18, libfuse 3.14) a 1 GiB restore
	 * with dd bs=1M took 2.3-4.0 s with splice against 1.2 s without
	 * (one copy into libfuse's buffer, one by fuse_buf_copy into the
	 * VDC_Read buffer): the pipe round trips cost more than the copy.
	 */
	conn->want &= ~(unsigned)FUSE_CAP_SPLICE_READ;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	conn->max_write = FS_IO_SIZE;
	fs_log(VDI_LOG_INFO, "mounted: protocol %u.%u, max_write %u, splice read %s",
	       conn->proto_major, conn->proto_minor, conn->max_write,
	       conn->want & FUSE_CAP_SPLICE_READ ? "on" : "off");
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mkdir = op_mkdir,
	.rmdir = op_rmdir,
	.unlink = op_unlink,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write_buf = op_write_buf,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
};
