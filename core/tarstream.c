/* SPDX-License-Identifier: MIT */
/*
 * tarstream.c - every device of a set as one POSIX tar stream, out and
 * back in (vdi.h, "Set stream").  Built on the client stream adapter
 * only: nothing here knows a command.
 *
 * The archive.  The data of each device is cut into members named
 * <device>.<sequence> (vdi_tar_member_name: ten zero-padded digits, so
 * name order is stream order), one member per chunk, a chunk being the
 * rest of the VDC_Write buffer at the head of the device's stream: its
 * size is known before its header is written.  A chunk is a multiple of
 * the block size, itself a multiple of 512, so no member needs padding.
 * Members of different devices interleave in the order the server
 * produces them.  When a device's stream ends cleanly, an empty member
 * <device>.<next sequence> marks it (so that `tar -x` into a restore set
 * can tell the end of a device, and concatenations are unchanged); the
 * standard end of archive (two zero blocks) follows only once every
 * device ended.  Names longer than ustar's 100 bytes travel in a pax
 * "path" record.
 *
 * Backup: one worker thread per device waits in vdi_cstream_peek for the
 * next chunk (the API's GetCommand blocks; nothing can wait on several
 * devices at once), and the reader takes the chunks in the order they
 * became ready: the header from a 512-byte buffer here, the data
 * straight from the shared buffer.  A worker peeks only when asked, and
 * the reader touches a stream only while its worker is idle, so no
 * stream is ever used by two threads at once.
 *
 * Restore: the writer's bytes are parsed as they come (reserve/commit:
 * headers land in a small buffer, member data straight in the buffer of
 * the device's pending VDC_Read).  The end marker of a device, or the end
 * of the archive, hands the orderly close of that device's stream to its
 * worker (it waits for the server's CloseDevice, which a server may give
 * only after the other devices' data: the writer must go on meanwhile).
 * Anything that is not the next member of a device of this set, a
 * truncated archive, garbage instead of tar: the stream fails with the
 * member's name and the archive offset, and closing it aborts the set,
 * so the server fails too and nothing is half-restored silently.
 *
 * Memory: a header buffer, a pax buffer (VDI_TAR_PAX_MAX), one worker
 * per device; no data is copied.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define BLK        512u
#define PAX_MAX    4096u
#define SEQ_DIGITS 10

/* ------------------------------------------------------------------ */
/* member names */

int vdi_tar_member_name(char *buf, size_t len, const char *device, uint64_t seq)
{
	int n;

	if (!buf || !device || seq > 9999999999ull)
		return vdi_fail(VD_E_INVALID, "tar member name: bad argument");
	n = snprintf(buf, len, "%s.%0*llu", device, SEQ_DIGITS, (unsigned long long)seq);
	if (n < 0 || (size_t)n >= len)
		return vdi_fail(VD_E_INVALID,
		                "tar member name of device '%s' does not fit %zu bytes", device,
		                len);
	return 0;
}

int vdi_tar_member_parse(const char *name, char *device, size_t devlen, uint64_t *seq)
{
	const char *dot;
	uint64_t v = 0;
	size_t n, i;

	if (!name || !device || !seq)
		return -1;
	dot = strrchr(name, '.');
	if (!dot || dot == name || strlen(dot + 1) != SEQ_DIGITS)
		return -1;
	for (i = 1; i <= SEQ_DIGITS; i++) {
		if (dot[i] < '0' || dot[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(dot[i] - '0');
	}
	n = (size_t)(dot - name);
	if (n >= devlen || n > VDI_MAX_NAME)
		return -1;
	memcpy(device, name, n);
	device[n] = '\0';
	*seq = v;
	return 0;
}

/* ------------------------------------------------------------------ */
/* headers */

struct ustar {
	char name[100], mode[8], uid[8], gid[8], size[12], mtime[12], chksum[8];
	char typeflag, linkname[100], magic[6], version[2], uname[32], gname[32];
	char devmajor[8], devminor[8], prefix[155], pad[12];
};
_Static_assert(sizeof(struct ustar) == BLK, "ustar header is one block");

/* width - 1 octal digits, zero-padded, then NUL (the ustar form). */
static void octal(char *field, size_t width, uint64_t v)
{
	size_t i = width - 1;

	field[i] = '\0';
	while (i--) {
		field[i] = (char)('0' + (v & 7));
		v >>= 3;
	}
}

static unsigned sum_header(const unsigned char *b)
{
	unsigned s = 0, i;

	for (i = 0; i < BLK; i++)
		s += (i >= 148 && i < 156) ? ' ' : b[i];
	return s;
}

static void ustar_fill(struct ustar *h, const char *name, char type, uint64_t size, time_t mtime)
{
	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%.99s", name);
	octal(h->mode, sizeof(h->mode), 0600);
	octal(h->uid, sizeof(h->uid), (uint64_t)getuid() & 07777777);
	octal(h->gid, sizeof(h->gid), (uint64_t)getgid() & 07777777);
	octal(h->size, sizeof(h->size), size);
	octal(h->mtime, sizeof(h->mtime), (uint64_t)mtime);
	h->typeflag = type;
	memcpy(h->magic, "ustar", 6);
	memcpy(h->version, "00", 2);
	octal(h->chksum, 7, sum_header((const unsigned char *)h));
	h->chksum[7] = ' ';
}

/* The header blocks of a member into out (1 block, or 3 with a pax
 * record for a long name); returns their length. */
static size_t member_header(unsigned char *out, const char *name, uint64_t size, time_t mtime)
{
	struct ustar *h = (struct ustar *)out;
	char rec[300];
	size_t n = strlen(name), rl, d;

	if (n < sizeof(h->name)) {
		ustar_fill(h, name, '0', size, mtime);
		return BLK;
	}
	/* "<len> path=<name>\n", where <len> counts itself */
	rl = n + strlen(" path=\n");
	for (d = 1; d < 5; d++)
		if (snprintf(rec, sizeof(rec), "%zu", rl + d) == (int)d)
			break;
	snprintf(rec, sizeof(rec), "%zu path=%s\n", rl + d, name);
	ustar_fill(h, "PaxHeader", 'x', strlen(rec), mtime);
	memset(out + BLK, 0, BLK);
	memcpy(out + BLK, rec, strlen(rec));
	ustar_fill((struct ustar *)(out + 2 * BLK), name, '0', size, mtime);
	return 3 * BLK;
}

/* ------------------------------------------------------------------ */
/* the object */

enum job { JOB_NONE, JOB_PEEK, JOB_CLOSE, JOB_QUIT };

struct tdev {
	struct vdi_tarstream *t;
	struct vdi_cstream *s;
	char name[VDI_MAX_NAME + 1];
	unsigned k;
	pthread_t th;
	int started;
	enum job job; /* t->m: what the worker is asked to do */
	int busy;     /* t->m: the worker is inside a stream call */
	int have;     /* t->m: a peek result is ready */
	ssize_t n;    /* t->m: its bytes, 0 = end of stream, or VD_E_* */
	const void *p;
	char msg[320]; /* its vdi_last_error() */
	int closed;    /* t->m: the stream was closed (rc below) */
	int close_rc;
	uint64_t seq;        /* next member sequence (caller's thread) */
	int ended;           /* end marker emitted / seen (caller's thread) */
	unsigned ready_next; /* position in the ready queue */
};

struct vdi_tarstream {
	uint32_t direction;
	unsigned n;
	struct vdi_bset *set; /* of every stream: aborting it wakes them all */
	pthread_mutex_t m;
	pthread_cond_t c;                        /* workers -> caller */
	pthread_cond_t jobs;                     /* caller -> workers */
	unsigned ready[VDI_MAX_DEVICES], nready; /* t->m: devices with a result, in order */
	time_t mtime;
	uint64_t bytes; /* archive bytes moved */
	int error;      /* sticky VD_E_*; msg says why */
	char msg[480];
	/* backup: what the reader is handed next */
	unsigned char hdr[3 * BLK];
	size_t hdr_len, hdr_off;
	int cur; /* device whose chunk is being read, -1 */
	uint64_t chunk_left;
	int eoa; /* end-of-archive blocks handed out */
	/* restore: the parser */
	size_t fill; /* bytes of hdr (one block) or pax collected */
	int in_pax;  /* collecting a pax / GNU long name body */
	char pax_type;
	uint64_t pax_left;
	char pax[PAX_MAX + 1];
	size_t pax_len;
	char longname[PAX_MAX + 1];
	int zero_blocks;
	uint64_t member_off; /* archive offset of the current header */
	char member[PAX_MAX + 160];
	struct tdev d[];
};

static int t_fail(struct vdi_tarstream *t, int rc, const char *fmt, ...) VDI_PRINTF(3, 4);
static int t_fail(struct vdi_tarstream *t, int rc, const char *fmt, ...)
{
	va_list ap;

	if (!t->error) {
		va_start(ap, fmt);
		vsnprintf(t->msg, sizeof(t->msg), fmt, ap);
		va_end(ap);
		t->error = rc;
	}
	return vdi_fail(t->error, "%s", t->msg);
}

static int t_replay(struct vdi_tarstream *t)
{
	return vdi_fail(t->error, "%s", t->msg);
}

/* ------------------------------------------------------------------ */
/* workers */

static void *worker(void *arg)
{
	struct tdev *d = arg;
	struct vdi_tarstream *t = d->t;

	pthread_mutex_lock(&t->m);
	for (;;) {
		enum job job;

		while (d->job == JOB_NONE)
			pthread_cond_wait(&t->jobs, &t->m);
		job = d->job;
		if (job == JOB_QUIT)
			break;
		d->busy = 1;
		pthread_mutex_unlock(&t->m);
		if (job == JOB_PEEK) {
			const void *p = NULL;
			ssize_t n = vdi_cstream_peek(d->s, &p, SIZE_MAX);

			pthread_mutex_lock(&t->m);
			if (n < 0)
				snprintf(d->msg, sizeof(d->msg), "%s", vdi_last_error());
			d->n = n;
			d->p = p;
			d->have = 1;
			t->ready[t->nready++] = d->k;
		} else {
			int rc = vdi_cstream_close(d->s, 1);

			pthread_mutex_lock(&t->m);
			if (rc)
				snprintf(d->msg, sizeof(d->msg), "%s", vdi_last_error());
			d->close_rc = rc;
			d->closed = 1;
			d->s = NULL;
		}
		d->busy = 0;
		d->job = JOB_NONE;
		pthread_cond_broadcast(&t->c);
	}
	pthread_mutex_unlock(&t->m);
	return NULL;
}

static void ask(struct tdev *d, enum job job)
{
	struct vdi_tarstream *t = d->t;

	pthread_mutex_lock(&t->m);
	d->job = job;
	pthread_cond_broadcast(&t->jobs);
	pthread_mutex_unlock(&t->m);
}

static int workers_start(struct vdi_tarstream *t)
{
	sigset_t all, old;
	unsigned k;
	int rc = 0;

	/* the library's threads take no signal of the program's */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (k = 0; k < t->n && !rc; k++) {
		rc = pthread_create(&t->d[k].th, NULL, worker, &t->d[k]);
		t->d[k].started = !rc;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc ? vdi_fail(VD_E_MEMORY, "tar stream: cannot start a worker thread: %s",
	                     strerror(rc))
	          : 0;
}

/* ------------------------------------------------------------------ */
/* open */

int vdi_tarstream_open(struct vdi_cstream *const *streams, unsigned n, struct vdi_tarstream **out)
{
	struct vdi_tarstream *t;
	unsigned k;
	int rc;

	if (!out)
		return vdi_fail(VD_E_INVALID, "tar stream: no result pointer");
	*out = NULL;
	if (!streams || !n || n > VDI_MAX_DEVICES)
		return vdi_fail(VD_E_INVALID, "tar stream: needs 1..%d device streams",
		                VDI_MAX_DEVICES);
	t = calloc(1, sizeof(*t) + n * sizeof(t->d[0]));
	if (!t)
		return vdi_fail(VD_E_MEMORY, "tar stream: out of memory");
	pthread_mutex_init(&t->m, NULL);
	pthread_cond_init(&t->c, NULL);
	pthread_cond_init(&t->jobs, NULL);
	t->n = n;
	t->cur = -1;
	t->mtime = time(NULL);
	t->direction = streams[0] ? vdi_cstream_direction(streams[0]) : 0;
	t->set = streams[0] ? vdi_bdev_set(vdi_cstream_device(streams[0])) : NULL;
	for (k = 0; k < n; k++) {
		struct tdev *d = &t->d[k];

		d->t = t;
		d->k = k;
		d->s = streams[k];
		if (!d->s || !t->direction || vdi_cstream_direction(d->s) != t->direction ||
		    vdi_bdev_set(vdi_cstream_device(d->s)) != t->set) {
			pthread_mutex_destroy(&t->m);
			pthread_cond_destroy(&t->c);
			pthread_cond_destroy(&t->jobs);
			free(t);
			return vdi_fail(VD_E_INVALID,
			                "tar stream: device %u is not a stream of the same set "
			                "and direction as device 0",
			                k);
		}
		snprintf(d->name, sizeof(d->name), "%s", vdi_bdev_name(vdi_cstream_device(d->s)));
	}
	rc = workers_start(t);
	*out = t; /* even on failure: close frees what started */
	if (rc) {
		vdi_tarstream_close(t, 0);
		*out = NULL;
		return rc;
	}
	if (t->direction == VDF_WriteMedia)
		for (k = 0; k < n; k++)
			ask(&t->d[k], JOB_PEEK);
	return 0;
}

uint32_t vdi_tarstream_direction(const struct vdi_tarstream *t)
{
	return t ? t->direction : 0;
}

uint64_t vdi_tarstream_bytes(const struct vdi_tarstream *t)
{
	return t ? t->bytes : 0;
}

/* ------------------------------------------------------------------ */
/* backup */

static int all_ended(const struct vdi_tarstream *t)
{
	unsigned k;

	for (k = 0; k < t->n; k++)
		if (!t->d[k].ended)
			return 0;
	return 1;
}

/* The next ready device's result becomes the next header (lock held). */
static int next_piece_locked(struct vdi_tarstream *t)
{
	char name[VDI_MAX_NAME + 16];
	struct tdev *d;
	unsigned k;
	ssize_t n;

	while (!t->nready)
		pthread_cond_wait(&t->c, &t->m);
	k = t->ready[0];
	memmove(t->ready, t->ready + 1, --t->nready * sizeof(t->ready[0]));
	d = &t->d[k];
	d->have = 0;
	n = d->n;
	if (n < 0)
		return t_fail(t, (int)n,
		              "tar stream: device '%s' failed after archive byte %llu: %s", d->name,
		              (unsigned long long)t->bytes, d->msg);
	vdi_tar_member_name(name, sizeof(name), d->name, d->seq++);
	t->hdr_len = member_header(t->hdr, name, (uint64_t)n, t->mtime);
	t->hdr_off = 0;
	if (n == 0) {
		d->ended = 1; /* its end marker; the stream waits for close */
		return 0;
	}
	t->cur = (int)k;
	t->chunk_left = (uint64_t)n;
	return 0;
}

ssize_t vdi_tarstream_peek(struct vdi_tarstream *t, const void **ptr, size_t len)
{
	int rc;

	if (!t || !ptr)
		return vdi_fail(VD_E_INVALID, "tar stream peek: NULL argument");
	*ptr = NULL;
	if (t->direction != VDF_WriteMedia)
		return vdi_fail(VD_E_PROTOCOL, "tar stream: cannot read a restore stream");
	if (t->error)
		return t_replay(t);
	if (!len)
		return 0;
	for (;;) {
		if (t->hdr_off < t->hdr_len) {
			*ptr = t->hdr + t->hdr_off;
			return (ssize_t)(len < t->hdr_len - t->hdr_off ? len
			                                               : t->hdr_len - t->hdr_off);
		}
		if (t->cur >= 0) {
			const void *p;
			size_t want = len < t->chunk_left ? len : (size_t)t->chunk_left;
			/* the worker is idle: its result is the current buffer */
			ssize_t n = vdi_cstream_peek(t->d[t->cur].s, &p, want);

			if (n <= 0)
				return t_fail(
					t, n ? (int)n : VD_E_UNEXPECTED,
					"tar stream: device '%s' lost its chunk at archive byte %llu: %s",
					t->d[t->cur].name, (unsigned long long)t->bytes,
					n ? vdi_last_error() : "end of stream");
			*ptr = p;
			return n;
		}
		if (all_ended(t)) {
			if (t->eoa)
				return 0;
			memset(t->hdr, 0, 2 * BLK);
			t->hdr_len = 2 * BLK;
			t->hdr_off = 0;
			t->eoa = 1;
			continue;
		}
		pthread_mutex_lock(&t->m);
		rc = next_piece_locked(t);
		pthread_mutex_unlock(&t->m);
		if (rc)
			return rc;
	}
}

int vdi_tarstream_advance(struct vdi_tarstream *t, size_t n)
{
	struct tdev *d;
	int rc;

	if (!t)
		return vdi_fail(VD_E_INVALID, "tar stream advance: NULL stream");
	if (t->error)
		return t_replay(t);
	if (!n)
		return 0;
	if (t->hdr_off < t->hdr_len) {
		if (n > t->hdr_len - t->hdr_off)
			return vdi_fail(VD_E_INVALID,
			                "tar stream: advance of %zu bytes past a header", n);
		t->hdr_off += n;
		t->bytes += n;
		return 0;
	}
	if (t->cur < 0 || n > t->chunk_left)
		return vdi_fail(VD_E_INVALID,
		                "tar stream: advance of %zu bytes that were not peeked", n);
	d = &t->d[t->cur];
	rc = vdi_cstream_advance(d->s, n);
	if (rc)
		return t_fail(t, rc, "tar stream: device '%s' at archive byte %llu: %s", d->name,
		              (unsigned long long)t->bytes, vdi_last_error());
	t->bytes += n;
	t->chunk_left -= n;
	if (!t->chunk_left) {
		t->cur = -1;
		ask(d, JOB_PEEK); /* the next chunk of this device */
	}
	return 0;
}

ssize_t vdi_tarstream_read(struct vdi_tarstream *t, void *buf, size_t len)
{
	size_t done = 0;

	if (!t || (!buf && len))
		return vdi_fail(VD_E_INVALID, "tar stream read: NULL argument");
	while (done < len) {
		const void *p;
		ssize_t n = vdi_tarstream_peek(t, &p, len - done);

		if (n <= 0)
			return done ? (ssize_t)done : n;
		memcpy((char *)buf + done, p, (size_t)n);
		if (vdi_tarstream_advance(t, (size_t)n))
			return done ? (ssize_t)done : t_replay(t);
		done += (size_t)n;
		if (t->cur < 0 && t->hdr_off == t->hdr_len)
			break; /* like a pipe: what is here, not a wait for more */
	}
	return (ssize_t)done;
}

/* ------------------------------------------------------------------ */
/* restore: the parser */

static int bad_member(struct vdi_tarstream *t, const char *why)
{
	if (t->member[0])
		return t_fail(t, VD_E_INVALID, "tar stream: member '%s' at archive offset %llu: %s",
		              t->member, (unsigned long long)t->member_off, why);
	return t_fail(t, VD_E_INVALID, "tar stream: %s at archive offset %llu", why,
	              (unsigned long long)t->member_off);
}

static int parse_octal(const char *f, size_t w, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	while (i < w && f[i] == ' ')
		i++;
	if (i == w || f[i] < '0' || f[i] > '7')
		return -1;
	for (; i < w && f[i] >= '0' && f[i] <= '7'; i++)
		v = v * 8 + (uint64_t)(f[i] - '0');
	for (; i < w; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return -1;
	*out = v;
	return 0;
}

/* The member's name: a pax "path" or GNU long name if one came, else
 * prefix/name; a leading "./" is dropped (an archive made with tar -c of
 * the extracted files). */
static void member_name(struct vdi_tarstream *t, const struct ustar *h)
{
	char raw[PAX_MAX + 160];
	const char *p;

	if (t->longname[0])
		snprintf(raw, sizeof(raw), "%s", t->longname);
	else if (h->prefix[0])
		snprintf(raw, sizeof(raw), "%.155s/%.100s", h->prefix, h->name);
	else
		snprintf(raw, sizeof(raw), "%.100s", h->name);
	t->longname[0] = '\0';
	for (p = raw; p[0] == '.' && p[1] == '/';)
		p += 2;
	snprintf(t->member, sizeof(t->member), "%s", p);
}

/* A pax record set: keeps "path", ignores the other keys. */
static int pax_records(struct vdi_tarstream *t)
{
	size_t off = 0;

	while (off < t->pax_len) {
		char *sp, *eq, *end = t->pax + off;
		unsigned long rl = strtoul(end, &sp, 10);

		if (sp == end || *sp != ' ' || !rl || rl > t->pax_len - off ||
		    t->pax[off + rl - 1] != '\n')
			return bad_member(t, "corrupt pax header");
		eq = memchr(sp + 1, '=', rl - (size_t)(sp + 1 - end));
		if (!eq)
			return bad_member(t, "corrupt pax record");
		if (eq - (sp + 1) == 4 && !memcmp(sp + 1, "path", 4))
			snprintf(t->longname, sizeof(t->longname), "%.*s",
			         (int)(end + rl - 1 - (eq + 1)), eq + 1);
		off += rl;
	}
	return 0;
}

static int device_of(struct vdi_tarstream *t, const char *name)
{
	unsigned k;

	for (k = 0; k < t->n; k++)
		if (!strcmp(t->d[k].name, name))
			return (int)k;
	return -1;
}

/* A member header of a device: the next sequence of that device, or
 * refused. */
static int start_member(struct vdi_tarstream *t, uint64_t size)
{
	char dev[VDI_MAX_NAME + 1], why[VDI_MAX_NAME + 96];
	struct tdev *d;
	uint64_t seq;
	int k;

	if (vdi_tar_member_parse(t->member, dev, sizeof(dev), &seq))
		return bad_member(t,
		                  "not a member <device>.<10-digit sequence> of a vdifs archive");
	k = device_of(t, dev);
	if (k < 0)
		return bad_member(t,
		                  "no device of this set has that name (the restore set needs the "
		                  "backup set's name)");
	d = &t->d[k];
	if (d->ended)
		return bad_member(t, "data after the end of that device's stream");
	if (seq != d->seq) {
		snprintf(why, sizeof(why), "out of sequence: device '%s' expects member %llu",
		         d->name, (unsigned long long)d->seq);
		return bad_member(t, why);
	}
	d->seq++;
	if (!size) {
		/* its end marker: the device's stream ends, on its worker */
		d->ended = 1;
		ask(d, JOB_CLOSE);
		return 0;
	}
	t->cur = k;
	t->chunk_left = size;
	return 0;
}

static int is_zero(const unsigned char *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (b[i])
			return 0;
	return 1;
}

/* One complete header block in t->hdr. */
static int header_block(struct vdi_tarstream *t)
{
	const struct ustar *h = (const struct ustar *)t->hdr;
	uint64_t size, sum;

	t->member[0] = '\0';
	if (is_zero(t->hdr, BLK)) {
		t->zero_blocks++;
		return 0;
	}
	if (t->zero_blocks)
		return bad_member(t, "data after the end of the archive");
	if (parse_octal(h->chksum, sizeof(h->chksum), &sum) || sum != sum_header(t->hdr) ||
	    (memcmp(h->magic, "ustar", 5)))
		return bad_member(t, "not a tar header (garbage, or not a ustar/pax archive)");
	if (parse_octal(h->size, sizeof(h->size), &size))
		return bad_member(t, "bad member size");
	switch (h->typeflag) {
	case 'x': /* pax extended header of the next member */
	case 'g': /* pax global header: keys we do not use */
	case 'L': /* GNU long name of the next member */
		if (size > PAX_MAX)
			return bad_member(t, "extended header larger than 4096 bytes");
		t->in_pax = 1;
		t->pax_type = h->typeflag;
		t->pax_left = size;
		t->pax_len = 0;
		return 0;
	case '5':
		member_name(t, h);
		if (!strcmp(t->member, ".") || !strcmp(t->member, "./") || !t->member[0])
			return 0; /* the directory of the members */
		return bad_member(t, "a directory");
	case '0':
	case '\0': member_name(t, h); return start_member(t, size);
	default: member_name(t, h); return bad_member(t, "not a regular file");
	}
}

static int pax_done(struct vdi_tarstream *t)
{
	t->in_pax = 0;
	t->pax[t->pax_len] = '\0';
	if (t->pax_type == 'L')
		snprintf(t->longname, sizeof(t->longname), "%s", t->pax);
	else if (t->pax_type == 'x')
		return pax_records(t);
	return 0;
}

ssize_t vdi_tarstream_reserve(struct vdi_tarstream *t, void **ptr, size_t len)
{
	if (!t || !ptr)
		return vdi_fail(VD_E_INVALID, "tar stream reserve: NULL argument");
	*ptr = NULL;
	if (t->direction != VDF_ReadMedia)
		return vdi_fail(VD_E_PROTOCOL, "tar stream: cannot write a backup stream");
	if (t->error)
		return t_replay(t);
	if (!len)
		return 0;
	if (t->cur >= 0) {
		struct tdev *d = &t->d[t->cur];
		size_t want = len < t->chunk_left ? len : (size_t)t->chunk_left;
		ssize_t n = vdi_cstream_reserve(d->s, ptr, want);

		if (n <= 0)
			return t_fail(
				t, n ? (int)n : VD_E_UNEXPECTED,
				"tar stream: member '%s' at archive offset %llu: device '%s' takes no more: %s",
				t->member, (unsigned long long)t->member_off, d->name,
				n ? vdi_last_error() : "no room");
		return n;
	}
	/* a header block, or a pax body padded to whole blocks */
	*ptr = t->hdr + t->fill;
	return (ssize_t)(len < BLK - t->fill ? len : BLK - t->fill);
}

/* A whole block of the pax body arrived in t->hdr. */
static void pax_block(struct vdi_tarstream *t)
{
	size_t take = t->pax_left < BLK ? (size_t)t->pax_left : BLK;

	memcpy(t->pax + t->pax_len, t->hdr, take);
	t->pax_len += take;
	t->pax_left -= take;
}

int vdi_tarstream_commit(struct vdi_tarstream *t, size_t n)
{
	int rc;

	if (!t)
		return vdi_fail(VD_E_INVALID, "tar stream commit: NULL stream");
	if (t->error)
		return t_replay(t);
	if (!n)
		return 0;
	if (t->cur >= 0) {
		struct tdev *d = &t->d[t->cur];

		if (n > t->chunk_left)
			return vdi_fail(VD_E_INVALID,
			                "tar stream: commit of %zu bytes that were not reserved",
			                n);
		rc = vdi_cstream_commit(d->s, n);
		if (rc)
			return t_fail(t, rc, "tar stream: member '%s' at archive offset %llu: %s",
			              t->member, (unsigned long long)t->member_off,
			              vdi_last_error());
		t->bytes += n;
		t->chunk_left -= n;
		if (!t->chunk_left)
			t->cur = -1; /* chunks are block multiples: no padding */
		return 0;
	}
	if (n > BLK - t->fill)
		return vdi_fail(VD_E_INVALID,
		                "tar stream: commit of %zu bytes that were not reserved", n);
	t->fill += n;
	t->bytes += n;
	if (t->fill < BLK)
		return 0;
	t->fill = 0;
	if (t->in_pax) {
		pax_block(t);
		return t->pax_left ? 0 : pax_done(t);
	}
	t->member_off = t->bytes - BLK;
	rc = header_block(t);
	if (!rc && t->in_pax && !t->pax_left)
		rc = pax_done(t);
	return rc;
}

ssize_t vdi_tarstream_write(struct vdi_tarstream *t, const void *buf, size_t len)
{
	size_t done = 0;

	if (!t || (!buf && len))
		return vdi_fail(VD_E_INVALID, "tar stream write: NULL argument");
	while (done < len) {
		void *p;
		ssize_t n = vdi_tarstream_reserve(t, &p, len - done);

		if (n <= 0)
			return done ? (ssize_t)done : n;
		memcpy(p, (const char *)buf + done, (size_t)n);
		if (vdi_tarstream_commit(t, (size_t)n))
			return done ? (ssize_t)done : t_replay(t);
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* ------------------------------------------------------------------ */
/* close */

/* Restore, orderly: the end of the archive came after every device's
 * end marker.  Anything else is a truncated or broken archive. */
static int restore_complete(struct vdi_tarstream *t)
{
	unsigned k;

	if (t->error)
		return t_replay(t);
	if (t->cur >= 0 || t->fill || t->in_pax)
		return t_fail(
			t, VD_E_ABORT,
			"tar stream: archive truncated inside member '%s' at archive offset %llu",
			t->member, (unsigned long long)t->bytes);
	for (k = 0; k < t->n; k++)
		if (!t->d[k].ended)
			return t_fail(
				t, VD_E_ABORT,
				"tar stream: archive ended at offset %llu before the end of device '%s' "
				"(%llu members; truncated archive?)",
				(unsigned long long)t->bytes, t->d[k].name,
				(unsigned long long)t->d[k].seq);
	if (t->zero_blocks < 2)
		return t_fail(
			t, VD_E_ABORT,
			"tar stream: no end-of-archive blocks at offset %llu (truncated archive?)",
			(unsigned long long)t->bytes);
	return 0;
}

/* Stops the workers; closes the streams still open (ok: orderly, on the
 * workers at once; else abort).  Returns the first close failure. */
static int finish(struct vdi_tarstream *t, int ok)
{
	unsigned k;
	int rc = 0;

	for (k = 0; k < t->n; k++)
		if (t->d[k].started && ok && t->d[k].s && !t->d[k].closed &&
		    t->direction == VDF_WriteMedia)
			vdi_cstream_end(
				t->d[k].s); /* acknowledge VDC_Complete first, all devices */
	/* A worker blocked in its stream wakes by the abort of the set
	 * (the set, not a stream: a worker may be freeing its stream). */
	if (!ok && t->set)
		vdi_bset_signal_abort(t->set);
	pthread_mutex_lock(&t->m);
	for (k = 0; ok && k < t->n; k++) {
		struct tdev *d = &t->d[k];

		if (d->started && d->s && !d->closed && d->job == JOB_NONE && !d->busy)
			d->job = JOB_CLOSE;
	}
	pthread_cond_broadcast(&t->jobs);
	for (k = 0; k < t->n; k++) {
		struct tdev *d = &t->d[k];

		while (d->started && (d->busy || d->job != JOB_NONE))
			pthread_cond_wait(&t->c, &t->m);
		if (d->closed && d->close_rc && !rc) {
			rc = d->close_rc;
			t_fail(t, rc, "tar stream: device '%s' did not end normally: %s", d->name,
			       d->msg);
		}
		if (d->started) {
			d->job = JOB_QUIT;
			pthread_cond_broadcast(&t->jobs);
		}
	}
	pthread_mutex_unlock(&t->m);
	for (k = 0; k < t->n; k++) {
		if (t->d[k].started)
			pthread_join(t->d[k].th, NULL);
		if (t->d[k].s)
			vdi_cstream_close(t->d[k].s, 0);
	}
	return rc;
}

int vdi_tarstream_end(struct vdi_tarstream *t)
{
	unsigned k;
	int rc;

	if (!t)
		return vdi_fail(VD_E_INVALID, "tar stream end: NULL stream");
	if (t->error)
		return t_replay(t);
	if (t->direction != VDF_WriteMedia || !t->eoa || t->hdr_off < t->hdr_len)
		return vdi_fail(VD_E_PROTOCOL,
		                "tar stream: not at the end of a backup archive (byte %llu)",
		                (unsigned long long)t->bytes);
	/* every worker is idle: each device's end marker was its last job */
	for (k = 0; k < t->n; k++) {
		rc = vdi_cstream_end(t->d[k].s);
		if (rc)
			return t_fail(t, rc, "tar stream: the end of device '%s' failed: %s",
			              t->d[k].name, vdi_last_error());
	}
	return 0;
}

int vdi_tarstream_close(struct vdi_tarstream *t, int ok)
{
	int rc = 0;

	if (!t)
		return vdi_fail(VD_E_INVALID, "tar stream close: NULL stream");
	if (ok && t->direction == VDF_WriteMedia && (!t->eoa || t->hdr_off < t->hdr_len) &&
	    !t->error)
		t_fail(t, VD_E_ABORT,
		       "tar stream closed before the end of the archive, at byte %llu; set aborted",
		       (unsigned long long)t->bytes);
	if (ok && t->direction == VDF_ReadMedia)
		restore_complete(t);
	if (t->error)
		ok = 0;
	rc = finish(t, ok);
	if (t->error)
		rc = t_replay(t);
	pthread_mutex_destroy(&t->m);
	pthread_cond_destroy(&t->c);
	pthread_cond_destroy(&t->jobs);
	free(t);
	return rc;
}
