/* SPDX-License-Identifier: MIT */
/*
 * fuse_ceiling.c - what FUSE itself can do on this machine (issue 11).
 *
 * A minimal libfuse3 filesystem, written apart from fs/ (it includes no
 * vdifs code), that moves a stream between a reader or writer of a file
 * and a SECOND process through POSIX shared memory, with the FUSE settings
 * vdifs uses (fs/ops.c op_init and open, fs/main.c run_loop):
 *   direct_io, nonseekable, no keep_cache; no asynchronous direct I/O, no
 *   splice of requests (SPLICE_READ off), no writeback cache, atomic
 *   O_TRUNC; max_write 1 MiB (so libfuse asks the kernel for 256 pages a
 *   request, and reads come as 1 MiB requests too); the multi-threaded
 *   loop with the same thread limits.
 *
 *   /read   every read is answered straight from a slot of a ring that a
 *           producer process fills with a pattern (fuse_reply_buf of the
 *           shared memory: the kernel's copy into the reader is the only
 *           one); the stream never ends, so measure it with
 *           `dd if=MNT/read of=/dev/null bs=1M count=N`.
 *   /write  every write is copied into a slot of a second ring (one
 *           fuse_buf_copy out of libfuse's request buffer, as vdifs does
 *           into a VDC_Read buffer) and a drainer process reads each slot
 *           (sums its 64-bit words) and frees it:
 *           `dd if=/dev/zero of=MNT/write bs=1M count=N`.
 *   /stats  a snapshot, taken at open once the drainer has emptied its
 *           ring (so `dd ...; cat MNT/stats` times the whole drain): bytes and requests each way, the largest request, what
 *           the drainer summed, and the context switches of the daemon
 *           (getrusage, every thread) and of each helper process.
 *
 * The pattern makes the read side checkable: the 64-bit word at stream
 * offset o holds o (the stream starts at 0 when the daemon starts, and
 * every open continues it).
 *
 * Rings (one per direction, SLOTS x 1 MiB, a power of two): free-running
 * uint32_t head (slots published, written by the filler only) and tail
 * (slots released, written by the emptier only), slot = counter & mask.
 * A side that finds the ring full or empty sleeps on the peer's counter
 * with a futex; the peer wakes it only if its sleep flag is set.  The
 * flag and counter accesses are sequentially consistent (Dekker): a
 * sleeper stores its flag and then loads the counter, a waker stores the
 * counter and then loads the flag, so one of the two always sees the
 * other's store and no wakeup is lost.  Waits are bounded to a second so
 * that a dead peer is noticed (a read then fails with EIO); there is no
 * timed polling while data moves.
 *
 * Usage: fuse_ceiling [-o slots=N] MOUNTPOINT [-f] [-d] [-s]  (libfuse's
 * options; -s runs the single-threaded loop).  Unmount with fusermount3
 * -u; the helpers die with the daemon (PR_SET_PDEATHSIG) and the shared
 * memory object is unlinked as soon as all three processes mapped it.
 */
#define FUSE_USE_VERSION 314

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOT_SIZE     (1u << 20) /* one request, one slot (FS_IO_SIZE of vdifs) */
#define MAX_SLOTS     64u
#define DEFAULT_SLOTS 16u         /* as BUFFERCOUNT=16 of the vdifs benchmark */
#define MAGIC         0x6c656963u /* "ceil" */
#define WAIT_MS       1000        /* a sleep longer than this checks the peer */

enum { INO_ROOT = 1, INO_READ, INO_WRITE, INO_STATS };

/* One direction.  head and its sleep flag are written by the filler,
 * tail and its flag by the emptier: each pair on its own cache line. */
struct ring {
	alignas(64) _Atomic uint32_t head;   /* slots published (filler) */
	_Atomic uint32_t tail_sleep;         /* the filler sleeps on tail (filler) */
	alignas(64) _Atomic uint32_t tail;   /* slots released (emptier) */
	_Atomic uint32_t head_sleep;         /* the emptier sleeps on head (emptier) */
	alignas(64) uint32_t len[MAX_SLOTS]; /* bytes in a slot, set before head moves (filler) */
	uint64_t data_off;                   /* the slots' offset in the region (creator) */
};

struct region {
	uint32_t magic, slots;                      /* set before the fork, read-only after */
	struct ring rd;                             /* producer -> daemon (/read) */
	struct ring wr;                             /* daemon -> drainer (/write) */
	alignas(64) _Atomic uint64_t drained_bytes; /* drainer */
	_Atomic uint64_t drained_sum;               /* drainer: sum of 64-bit words */
	_Atomic uint64_t produced;                  /* producer: slots filled */
	_Atomic uint32_t stop;                      /* daemon: helpers exit */
};

/* The daemon's state: each side of each ring is touched under its lock
 * (several FUSE workers may call in; the kernel sends one request of a
 * stream at a time, so the locks are not contended). */
struct ceiling {
	struct region *reg;
	size_t map_len;
	pid_t producer, drainer;
	pthread_mutex_t rd_lock;
	uint32_t rd_off; /* bytes of the current slot already read (rd_lock) */
	uint64_t read_bytes, read_reqs, read_max;
	pthread_mutex_t wr_lock;
	uint32_t wr_fill; /* bytes in the slot being filled (wr_lock) */
	int wr_open;      /* a slot is being filled (wr_lock) */
	uint64_t write_bytes, write_reqs, write_max;
};

static struct ceiling C = {
	.rd_lock = PTHREAD_MUTEX_INITIALIZER,
	.wr_lock = PTHREAD_MUTEX_INITIALIZER,
};

/* ---------------------------------------------------------------------
 * Rings.
 */
static int futex_wait(_Atomic uint32_t *addr, uint32_t val, int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	/* shared (not FUTEX_PRIVATE): the peer is another process */
	return (int)syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, val, &ts, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static char *slot_ptr(struct region *reg, struct ring *r, uint32_t seq)
{
	return (char *)reg + r->data_off + (size_t)(seq & (reg->slots - 1)) * SLOT_SIZE;
}

/* peer_ok() is asked after every bounded sleep: 0 ends the wait. */
typedef int (*peer_ok_fn)(void);

/* Sleep until *ctr differs from seen: flag store, then counter load
 * (pairs with the waker's counter store, then flag load). */
static int sleep_while(_Atomic uint32_t *ctr, _Atomic uint32_t *flag, uint32_t seen,
                       peer_ok_fn peer_ok)
{
	int rc = 0;

	atomic_store(flag, 1);
	while (atomic_load(ctr) == seen) {
		/* woken with the counter unchanged (a timeout, a stop, a
		 * signal): is the peer still there? */
		futex_wait(ctr, seen, WAIT_MS);
		if (atomic_load(ctr) == seen && !peer_ok()) {
			rc = -EIO;
			break;
		}
	}
	atomic_store(flag, 0);
	return rc;
}

/* Filler: wait for a free slot; 0 or -EIO. */
static int ring_wait_space(struct region *reg, struct ring *r, peer_ok_fn peer_ok)
{
	uint32_t h = atomic_load_explicit(&r->head, memory_order_relaxed); /* own counter */
	uint32_t t = atomic_load(&r->tail);

	while (h - t >= reg->slots) {
		if (sleep_while(&r->tail, &r->tail_sleep, t, peer_ok))
			return -EIO;
		t = atomic_load(&r->tail);
	}
	return 0;
}

/* Filler: publish the slot at head with len bytes (the seq_cst store
 * orders the slot's bytes and len before it; then the flag load). */
static void ring_publish(struct ring *r, uint32_t len)
{
	uint32_t h = atomic_load_explicit(&r->head, memory_order_relaxed);

	r->len[h % MAX_SLOTS] = len;
	atomic_store(&r->head, h + 1);
	if (atomic_load(&r->head_sleep))
		futex_wake(&r->head);
}

/* Emptier: wait for a published slot; 0 or -EIO. */
static int ring_wait_data(struct ring *r, peer_ok_fn peer_ok)
{
	uint32_t t = atomic_load_explicit(&r->tail, memory_order_relaxed); /* own counter */

	while (atomic_load(&r->head) == t) {
		if (sleep_while(&r->head, &r->head_sleep, t, peer_ok))
			return -EIO;
	}
	return 0;
}

/* Emptier: the slot at tail, its length checked (the peer is untrusted). */
static int ring_front(struct region *reg, struct ring *r, char **p, uint32_t *len)
{
	uint32_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);

	*len = r->len[t % MAX_SLOTS];
	if (*len == 0 || *len > SLOT_SIZE)
		return -EIO;
	*p = slot_ptr(reg, r, t);
	return 0;
}

static void ring_release(struct ring *r)
{
	atomic_store(&r->tail, atomic_load_explicit(&r->tail, memory_order_relaxed) + 1);
	if (atomic_load(&r->tail_sleep))
		futex_wake(&r->tail);
}

/* ---------------------------------------------------------------------
 * The helper processes.
 */
static int parent_alive(void)
{
	return getppid() != 1 && !atomic_load(&C.reg->stop);
}

/* The pattern: each 64-bit word holds its offset in the stream. */
static void fill_pattern(char *p, uint64_t base)
{
	uint64_t *w = (uint64_t *)(void *)p;
	size_t i;

	for (i = 0; i < SLOT_SIZE / 8; i++)
		w[i] = base + 8 * i;
}

static void producer_main(void)
{
	struct region *reg = C.reg;
	struct ring *r = &reg->rd;
	uint64_t seq;

	for (seq = 0; !atomic_load(&reg->stop); seq++) {
		if (ring_wait_space(reg, r, parent_alive))
			break;
		if (atomic_load(&reg->stop))
			break;
		fill_pattern(slot_ptr(reg, r, (uint32_t)seq), seq * SLOT_SIZE);
		ring_publish(r, SLOT_SIZE);
		atomic_store_explicit(&reg->produced, seq + 1, memory_order_relaxed);
	}
}

static uint64_t sum_words(const char *p, uint32_t len)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	uint64_t s = 0;
	uint32_t i;

	for (i = 0; i < len / 8; i++)
		s += w[i];
	for (i = len & ~7u; i < len; i++)
		s += (unsigned char)p[i];
	return s;
}

static void drainer_main(void)
{
	struct region *reg = C.reg;
	struct ring *r = &reg->wr;
	uint32_t len;
	char *p;

	while (!atomic_load(&reg->stop)) {
		if (ring_wait_data(r, parent_alive) || atomic_load(&reg->stop))
			break;
		if (ring_front(reg, r, &p, &len))
			break;
		atomic_fetch_add_explicit(&reg->drained_sum, sum_words(p, len),
		                          memory_order_relaxed);
		/* the bytes count comes after the sum: /stats waits for it */
		atomic_fetch_add(&reg->drained_bytes, len);
		ring_release(r);
	}
}

static pid_t start_helper(void (*fn)(void))
{
	pid_t parent = getpid(), pid = fork();

	if (pid != 0)
		return pid;
	/* not libfuse's handlers, inherited from the daemon: a signal ends a helper */
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	fn();
	_exit(0);
}

static int producer_ok(void)
{
	return kill(C.producer, 0) == 0 && waitpid(C.producer, NULL, WNOHANG) == 0;
}

static int drainer_ok(void)
{
	return kill(C.drainer, 0) == 0 && waitpid(C.drainer, NULL, WNOHANG) == 0;
}

/* ---------------------------------------------------------------------
 * Shared memory.
 */
static int region_create(uint32_t slots)
{
	size_t head = (sizeof(struct region) + 4095) & ~(size_t)4095;
	size_t len = head + 2 * (size_t)slots * SLOT_SIZE;
	char name[64];
	void *p;
	int fd;

	snprintf(name, sizeof(name), "/vdi-ceiling.%ld", (long)getpid());
	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		fprintf(stderr, "fuse_ceiling: shm_open %s: %s\n", name, strerror(errno));
		return -1;
	}
	/* the children inherit the mapping: the name is needed no longer */
	shm_unlink(name);
	if (ftruncate(fd, (off_t)len)) {
		fprintf(stderr, "fuse_ceiling: ftruncate %s to %zu bytes: %s\n", name, len,
		        strerror(errno));
		close(fd);
		return -1;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		fprintf(stderr, "fuse_ceiling: mmap of %zu bytes: %s\n", len, strerror(errno));
		return -1;
	}
	C.reg = p;
	C.map_len = len;
	C.reg->magic = MAGIC;
	C.reg->slots = slots;
	C.reg->rd.data_off = head;
	C.reg->wr.data_off = head + (size_t)slots * SLOT_SIZE;
	return 0;
}

/* ---------------------------------------------------------------------
 * FUSE operations.
 */
static void fill_attr(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_nlink = 1;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_blksize = SLOT_SIZE;
	/* size 0, as vdifs' device files: a stream of unknown length */
	if (ino == INO_ROOT) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | (ino == INO_READ || ino == INO_STATS ? 0444 : 0644);
	}
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->want &= ~(unsigned)FUSE_CAP_ASYNC_DIO;
	conn->want &= ~(unsigned)FUSE_CAP_SPLICE_READ;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	conn->max_write = SLOT_SIZE;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	fuse_ino_t ino = !strcmp(name, "read")    ? INO_READ
	                 : !strcmp(name, "write") ? INO_WRITE
	                 : !strcmp(name, "stats") ? INO_STATS
	                                          : 0;

	if (parent != INO_ROOT || !ino) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = ino;
	e.attr_timeout = 1.0;
	e.entry_timeout = 1.0;
	fill_attr(ino, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (ino < INO_ROOT || ino > INO_STATS) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(ino, &st);
	fuse_reply_attr(req, &st, 1.0);
}

/* truncation of a stream is accepted and changes nothing (dd of=) */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
	(void)attr;
	(void)to_set;
	op_getattr(req, ino, fi);
}

static uint64_t ctxsw_of(pid_t pid)
{
	char path[64], line[256];
	uint64_t v, sum = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "voluntary_ctxt_switches: %" SCNu64, &v) == 1 ||
		    sscanf(line, "nonvoluntary_ctxt_switches: %" SCNu64, &v) == 1)
			sum += v;
	}
	fclose(f);
	return sum;
}

/* Wait until the drainer has taken every published slot (wr_lock held:
 * the filler's side of the ring, its sleep flag included, is ours). */
static void wait_drained(void)
{
	struct ring *r = &C.reg->wr;
	uint32_t h = atomic_load_explicit(&r->head, memory_order_relaxed), t;

	while ((t = atomic_load(&r->tail)) != h) {
		if (sleep_while(&r->tail, &r->tail_sleep, t, drainer_ok))
			break;
	}
}

static char *stats_text(void)
{
	struct rusage ru;
	char *t = malloc(1024);

	if (!t)
		return NULL;
	pthread_mutex_lock(&C.rd_lock);
	pthread_mutex_lock(&C.wr_lock);
	wait_drained();
	getrusage(RUSAGE_SELF, &ru);
	snprintf(t, 1024,
	         "read_bytes %" PRIu64 "\nread_requests %" PRIu64 "\nread_max %" PRIu64
	         "\nwrite_bytes %" PRIu64 "\nwrite_requests %" PRIu64 "\nwrite_max %" PRIu64
	         "\ndrained_bytes %" PRIu64 "\ndrained_sum %" PRIu64 "\nproduced_slots %" PRIu64
	         "\nslots %u\nctxsw_daemon %ld\nctxsw_producer %" PRIu64 "\nctxsw_drainer %" PRIu64
	         "\n",
	         C.read_bytes, C.read_reqs, C.read_max, C.write_bytes, C.write_reqs, C.write_max,
	         atomic_load(&C.reg->drained_bytes), atomic_load(&C.reg->drained_sum),
	         atomic_load(&C.reg->produced), C.reg->slots, ru.ru_nvcsw + ru.ru_nivcsw,
	         ctxsw_of(C.producer), ctxsw_of(C.drainer));
	pthread_mutex_unlock(&C.wr_lock);
	pthread_mutex_unlock(&C.rd_lock);
	return t;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int acc = fi->flags & O_ACCMODE;

	if (ino == INO_ROOT) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((ino == INO_READ || ino == INO_STATS) && acc != O_RDONLY) {
		fuse_reply_err(req, EACCES);
		return;
	}
	if (ino == INO_WRITE && acc != O_WRONLY) {
		fuse_reply_err(req, EACCES);
		return;
	}
	fi->direct_io = 1;
	fi->keep_cache = 0;
	if (ino == INO_STATS) {
		char *t = stats_text();

		if (!t) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		fi->fh = (uint64_t)(uintptr_t)t;
	} else {
		fi->nonseekable = 1;
	}
	if (fuse_reply_open(req, fi) && ino == INO_STATS)
		free((char *)(uintptr_t)fi->fh);
}

static void read_stats(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi)
{
	const char *t = (const char *)(uintptr_t)fi->fh;
	size_t len = strlen(t);

	if ((size_t)off >= len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	fuse_reply_buf(req, t + off, len - (size_t)off < size ? len - (size_t)off : size);
}

/* /read: the reply comes straight from the producer's slot; the slot is
 * released once the kernel took all of it. */
static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
	struct region *reg = C.reg;
	uint32_t len;
	size_t n;
	char *p;

	if (ino == INO_STATS) {
		read_stats(req, size, off, fi);
		return;
	}
	pthread_mutex_lock(&C.rd_lock);
	if (ring_wait_data(&reg->rd, producer_ok) || ring_front(reg, &reg->rd, &p, &len)) {
		pthread_mutex_unlock(&C.rd_lock);
		fuse_reply_err(req, EIO);
		return;
	}
	n = len - C.rd_off < size ? len - C.rd_off : size;
	if (fuse_reply_buf(req, p + C.rd_off, n) == 0) {
		C.rd_off += (uint32_t)n;
		C.read_bytes += n;
		C.read_reqs++;
		C.read_max = n > C.read_max ? n : C.read_max;
		if (C.rd_off == len) {
			C.rd_off = 0;
			ring_release(&reg->rd);
		}
	}
	pthread_mutex_unlock(&C.rd_lock);
}

/* Publish the slot being filled (wr_lock held). */
static void write_flush(void)
{
	if (C.wr_open && C.wr_fill) {
		ring_publish(&C.reg->wr, C.wr_fill);
		C.wr_open = 0;
		C.wr_fill = 0;
	}
}

/* /write: the request's bytes go into the drainer's ring, one copy. */
static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *bufv, off_t off,
                         struct fuse_file_info *fi)
{
	struct region *reg = C.reg;
	size_t total = fuse_buf_size(bufv), done = 0;
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(0);
	ssize_t c;

	(void)off;
	(void)fi;
	if (ino != INO_WRITE) {
		fuse_reply_err(req, EBADF);
		return;
	}
	pthread_mutex_lock(&C.wr_lock);
	while (done < total) {
		if (!C.wr_open) {
			if (ring_wait_space(reg, &reg->wr, drainer_ok))
				break;
			C.wr_open = 1;
			C.wr_fill = 0;
		}
		dst.buf[0].mem =
			slot_ptr(reg, &reg->wr,
		                 atomic_load_explicit(&reg->wr.head, memory_order_relaxed)) +
			C.wr_fill;
		dst.buf[0].size =
			SLOT_SIZE - C.wr_fill < total - done ? SLOT_SIZE - C.wr_fill : total - done;
		dst.idx = 0;
		dst.off = 0;
		c = fuse_buf_copy(&dst, bufv, 0);
		if (c <= 0)
			break;
		done += (size_t)c;
		C.wr_fill += (uint32_t)c;
		if (C.wr_fill == SLOT_SIZE)
			write_flush();
	}
	C.write_bytes += done;
	C.write_reqs++;
	C.write_max = total > C.write_max ? total : C.write_max;
	pthread_mutex_unlock(&C.wr_lock);
	if (done < total)
		fuse_reply_err(req, EIO);
	else
		fuse_reply_write(req, total);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino == INO_STATS)
		free((char *)(uintptr_t)fi->fh);
	if (ino == INO_WRITE) {
		pthread_mutex_lock(&C.wr_lock);
		write_flush();
		pthread_mutex_unlock(&C.wr_lock);
	}
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.open = op_open,
	.read = op_read,
	.write_buf = op_write_buf,
	.release = op_release,
};

/* ---------------------------------------------------------------------
 * Main: options, shared memory and helpers, session, teardown.
 */
struct options {
	unsigned slots;
};

static const struct fuse_opt opt_spec[] = {
	{ "slots=%u", offsetof(struct options, slots), 0 },
	FUSE_OPT_END,
};

static int run_loop(struct fuse_session *se, int single)
{
	struct fuse_loop_config *cfg;
	int rc;

	if (single)
		return fuse_session_loop(se);
	cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -1;
	/* fs/main.c run_loop: 4 * VDI_MAX_DEVICES + 16 workers, 8 idle */
	fuse_loop_cfg_set_max_threads(cfg, 4 * 64 + 16);
	fuse_loop_cfg_set_idle_threads(cfg, 8);
	rc = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return rc;
}

static void stop_helpers(void)
{
	atomic_store(&C.reg->stop, 1);
	futex_wake(&C.reg->rd.tail);
	futex_wake(&C.reg->wr.head);
	if (C.producer > 0) {
		kill(C.producer, SIGTERM);
		waitpid(C.producer, NULL, 0);
	}
	if (C.drainer > 0) {
		kill(C.drainer, SIGTERM);
		waitpid(C.drainer, NULL, 0);
	}
}

static int serve(struct fuse_args *args, struct fuse_cmdline_opts *co)
{
	struct fuse_session *se;
	int rc = 1;

	se = fuse_session_new(args, &ops, sizeof(ops), NULL);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se))
		goto out_session;
	if (fuse_session_mount(se, co->mountpoint))
		goto out_signals;
	if (fuse_daemonize(co->foreground))
		goto out_unmount;
	/* helpers after daemonize (their parent is the daemon) and before
	 * the loop starts threads */
	C.producer = start_helper(producer_main);
	C.drainer = start_helper(drainer_main);
	if (C.producer < 0 || C.drainer < 0) {
		fprintf(stderr, "fuse_ceiling: fork: %s\n", strerror(errno));
		goto out_helpers;
	}
	rc = run_loop(se, co->singlethread) ? 1 : 0;
out_helpers:
	stop_helpers();
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out:
	return rc;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts co;
	struct options o = { .slots = DEFAULT_SLOTS };
	int rc = 1;

	if (fuse_opt_parse(&args, &o, opt_spec, NULL) || fuse_parse_cmdline(&args, &co))
		return 1;
	if (co.show_help || !co.mountpoint) {
		printf("usage: %s [-o slots=N] MOUNTPOINT [-f] [-d] [-s]\n", argv[0]);
		fuse_cmdline_help();
		goto out;
	}
	if (o.slots < 2 || o.slots > MAX_SLOTS || (o.slots & (o.slots - 1))) {
		fprintf(stderr, "fuse_ceiling: slots=%u: a power of two from 2 to %u is allowed\n",
		        o.slots, MAX_SLOTS);
		goto out;
	}
	if (fuse_opt_add_arg(&args, "-ofsname=fuse_ceiling") || region_create(o.slots))
		goto out;
	rc = serve(&args, &co);
	munmap(C.reg, C.map_len);
out:
	free(co.mountpoint);
	fuse_opt_free_args(&args);
	return rc;
}
