/* SPDX-License-Identifier: MIT */
/*
 * bkfmt.h - the backup format written by `vdi exec` BACKUP and read by
 * RESTORE, VERIFYONLY and HEADERONLY.
 *
 * Pure: byte streams in and out through callbacks, no engine.  The
 * format does not depend on BLOCKSIZE or MAXTRANSFERSIZE, so a restore
 * may use other values than the backup.
 *
 * A backup of a database of T bytes over N devices is N stripes.  The
 * database is cut into chunks of chunk_size bytes (1 MiB when written;
 * any power of two 4 KiB..64 MiB is read); chunk i lives in stripe
 * i mod N, so stripe k holds chunks k, k+N, k+2N, ... in that order.
 * Each stripe is one byte stream, all integers little-endian:
 *
 *   header  512 bytes: magic "VDIBAKv1", format version, header size,
 *           backup id (uuid, same in every stripe), stripe index, stripe
 *           count, block size, max transfer size, chunk size, total size,
 *           chunk count, time (Unix seconds), database name (128 bytes),
 *           description (256 bytes); version 2 adds at byte 464: kind
 *           (0 full, 1 differential, 2 log, 3 snapshot metadata), flags
 *           (1 copy-only), the database's backup lineage (uuid), this
 *           backup's sequence number (LSN) and the LSN it starts from
 *           (differential: its full; log: the log chain's previous
 *           point); CRC32C of the first 508 bytes
 *   chunk   32-byte record header: tag "VDIC", data length, chunk index,
 *           byte offset in the database, CRC32C of the data (version 3:
 *           0), CRC32C of the first 28 bytes; then the data; version 3
 *           then 8 bytes: the data's CRC32C and the CRC32C of (chunk
 *           index, that CRC), so a writer can read the database straight
 *           into the stream and checksum it there
 *   trailer 64 bytes: tag "VDIT", stripe index, chunk count, data bytes,
 *           backup id, CRC32C of every stripe byte before the trailer
 *           (the whole-stream checksum); version 2: the database's size
 *           and bk_db_hash at the backup's point; CRC32C of the first
 *           60 bytes
 *   padding zero bytes up to the next BLOCKSIZE multiple (< 65536)
 *
 * A differential or log backup (version 2) holds only some chunks: the
 * header's chunk count is theirs, slot j of them lives in stripe j mod N,
 * and their database chunk indexes rise strictly within a stripe.  A
 * snapshot's metadata holds no chunk at all.
 *
 * Every stripe can be checked alone against its own header: chunk
 * indexes, lengths and offsets are fully determined by (stripe, stripes,
 * total size, chunk size).  A set of stripes is then complete when the
 * headers agree (same backup id and fields) and every index 0..N-1 is
 * present exactly once, whatever order the devices are given in.
 *
 * Error messages are written into the reader's or set's `err` buffer:
 * what failed, the device quoted, the byte offset; no trailing period.
 */
#ifndef VDI_CLI_BKFMT_H
#define VDI_CLI_BKFMT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BK_MAGIC            "VDIBAKv1"
#define BK_VERSION          3 /* written; 1 and 2 are still read */
#define BK_CHUNK_CHECK_SIZE 8
#define BK_HEADER_SIZE      512
#define BK_CHUNK_HDR_SIZE   32
#define BK_TRAILER_SIZE     64
#define BK_CHUNK_SIZE       (1u << 20)
#define BK_MIN_CHUNK        (1u << 12)
#define BK_MAX_CHUNK        (1u << 26)
#define BK_MAX_PADDING      65535
#define BK_MAX_STRIPES      64
#define BK_DB_LEN           128
#define BK_DESC_LEN         256
#define BK_ERR_LEN          512

/* CRC32C (Castagnoli), chainable: crc32c(crc32c(0, a), b) equals
 * crc32c(0, a followed by b).  Uses SSE4.2 when the CPU has it. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
/* The table-driven implementation alone (tests compare the two). */
uint32_t crc32c_portable(uint32_t crc, const void *buf, size_t len);
/* CRC of A followed by B, from crc_a = crc32c(0, A), crc_b = crc32c(0, B)
 * and len_b = length of B (no pass over the data). */
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

enum bk_kind { BK_FULL, BK_DIFF, BK_LOG, BK_SNAPSHOT };
#define BK_F_COPY_ONLY 1u

struct bk_header {
	uint32_t version;
	uint32_t kind, flags; /* version 2; version 1 reads as BK_FULL, 0 */
	uint8_t lineage[16];
	uint64_t lsn, first_lsn;
	uint8_t id[16];
	uint32_t stripe, stripes;
	uint32_t block_size, max_transfer_size, chunk_size;
	uint64_t total_size, chunk_count;
	int64_t time;
	char db[BK_DB_LEN]; /* NUL-terminated */
	char description[BK_DESC_LEN];
	uint32_t crc; /* filled by encode / decode */
};

struct bk_trailer {
	uint32_t stripe;
	uint64_t chunks, data_bytes;
	uint8_t id[16];
	uint32_t stream_crc;
	uint64_t db_size, db_hash; /* version 2 */
};

/* 64-bit hash of one chunk of the database (its change detector), and the
 * hash of a whole database from the hashes of its n chunks. */
uint64_t bk_hash64(const void *buf, size_t len);
/* The same hash over bytes that come in pieces. */
struct bk_hasher {
	uint64_t v[4], len;
	uint8_t tail[32];
	unsigned nt;
};
void bk_hasher_init(struct bk_hasher *x);
void bk_hasher_update(struct bk_hasher *x, const void *buf, size_t len);
uint64_t bk_hasher_final(const struct bk_hasher *x);
uint64_t bk_db_hash(const uint64_t *chunk_hash, uint64_t n, uint64_t size);
/* Fills map[i] for every chunk of the first size bytes of fd (chunk_size
 * bytes each); buf holds chunk_size bytes.  0, or -errno. */
int bk_hash_file(int fd, uint64_t size, uint32_t chunk_size, uint8_t *buf, uint64_t *map);
/* Whether the header's kind holds only some chunks. */
int bk_is_partial(const struct bk_header *h);
/* Chunks of the database the header describes (not of the backup). */
uint64_t bk_db_chunks(const struct bk_header *h);

/* Number of chunks stripe `stripe` holds, and the length of chunk i. */
uint64_t bk_stripe_chunks(const struct bk_header *h, uint32_t stripe);
uint32_t bk_chunk_len(const struct bk_header *h, uint64_t index);
/* Fills chunk_count from total_size and chunk_size. */
void bk_header_init(struct bk_header *h, const uint8_t id[16], const char *db, uint64_t total_size,
                    uint32_t stripes);
void bk_header_encode(struct bk_header *h, uint8_t out[BK_HEADER_SIZE]);
/* 0, or -1 with a message (without device context) in err. */
int bk_header_decode(struct bk_header *h, const uint8_t in[BK_HEADER_SIZE], char *err,
                     size_t errlen);
void bk_id_format(const uint8_t id[16], char out[37]);

/* ------------------------------------------------------------ writing */

/* Writes all len bytes or returns a negative value. */
typedef int (*bk_write_fn)(void *ctx, const void *buf, size_t len);
/* Optional zero-copy sink (version 3): reserve points *ptr at free room
 * and returns its size (> 0, or < 0 on error); commit takes n of it. */
typedef ssize_t (*bk_reserve_fn)(void *ctx, void **ptr);
/* Optional database source instead of pread(fd): fills len bytes from
 * database offset off; 0 or -errno. */
typedef int (*bk_fill_fn)(void *ctx, uint8_t *buf, uint32_t len, uint64_t off);
typedef int (*bk_commit_fn)(void *ctx, size_t n);

struct bk_writer {
	bk_write_fn write;
	void *ctx;
	struct bk_header h;
	uint32_t stream_crc;
	uint64_t offset; /* stripe bytes written */
	uint64_t chunks, data_bytes;
	/* optional */
	bk_reserve_fn reserve; /* with commit: chunks read in place */
	bk_commit_fn commit;
	bk_fill_fn fill;           /* the database from here, not from fd */
	const uint64_t *select;    /* partial: database chunk index of each slot */
	uint64_t *map;             /* full: filled with each chunk's bk_hash64 */
	uint64_t db_size, db_hash; /* for the version 2 trailer */
};

void bk_writer_init(struct bk_writer *w, const struct bk_header *h, bk_write_fn fn, void *ctx);
int bk_write_header(struct bk_writer *w);
int bk_write_chunk(struct bk_writer *w, uint64_t index, const void *data, uint32_t len);
int bk_write_trailer(struct bk_writer *w);
/* Writes the whole stripe w->h.stripe, reading the database from fd
 * (pread).  buf holds chunk_size bytes.  *done (if not NULL) is
 * incremented atomically by each chunk's length.  Returns 0, -1 with
 * err filled for a read error, or the sink's negative value. */
int bk_backup_stripe(struct bk_writer *w, int fd, uint8_t *buf, uint64_t *done, char *err,
                     size_t errlen);

/* ------------------------------------------------------------ reading */

/* Returns bytes read (> 0), 0 at end of stream, or a negative value. */
typedef ssize_t (*bk_read_fn)(void *ctx, void *buf, size_t len);

/* Optional zero-copy source: peek points *ptr at up to len bytes in
 * place (returns the count, 0 at the end, < 0 on error); advance consumes
 * n of them (0 or < 0).  Chunk data is then checksummed and written to
 * the database straight from the source's memory. */
typedef ssize_t (*bk_peek_fn)(void *ctx, const void **ptr, size_t len);
typedef int (*bk_advance_fn)(void *ctx, size_t n);

struct bk_reader {
	bk_read_fn read;
	bk_peek_fn peek; /* NULL: chunk data goes through read */
	bk_advance_fn advance;
	void *ctx;
	const char *device; /* for messages; borrowed */
	struct bk_header h;
	struct bk_trailer t;
	uint32_t stream_crc;
	uint32_t stream_crc_before_record; /* checksum up to the last record */
	uint64_t offset;                   /* stripe bytes consumed */
	uint64_t next_index;               /* next chunk (partial: slot) expected */
	uint64_t prev_db_index;            /* partial: last database index + 1 */
	uint64_t chunks, data_bytes;
	int source_error; /* the read callback failed (not a format error) */
	int trailer_ok;   /* the trailer was read and checked: only padding follows */
	char err[BK_ERR_LEN];
};

void bk_reader_init(struct bk_reader *r, bk_read_fn fn, void *ctx, const char *device);
/* Chunk data through peek/advance (same ctx as read).  Data is written
 * before its checksum is known, so the file must be a temporary one that
 * is discarded unless bk_read_body succeeds. */
void bk_reader_set_peek(struct bk_reader *r, bk_peek_fn peek, bk_advance_fn advance);
int bk_read_header(struct bk_reader *r);
/* Reads every chunk and the trailer; writes chunk data to fd at its
 * offset (pwrite) unless fd < 0; then checks that only zero padding
 * follows.  buf holds h.chunk_size bytes.  *done as for backup. */
int bk_read_body(struct bk_reader *r, int fd, uint8_t *buf, uint64_t *done);

/* ------------------------------------------------------------ the set */

/* Collects the stripe headers of one restore, from several threads. */
struct bk_set {
	pthread_mutex_t lock;
	unsigned ndev; /* devices given */
	int have_ref;
	struct bk_header ref; /* first header seen */
	const char *ref_device;
	const char *owner[BK_MAX_STRIPES]; /* device holding stripe k */
	int lenient;                       /* HEADERONLY: a missing stripe is no error */
	char err[BK_ERR_LEN];
};

void bk_set_init(struct bk_set *s, unsigned ndev, int lenient);
void bk_set_release(struct bk_set *s);
/* Registers a stripe header read from `device` (borrowed for the life
 * of the set).  0, or -1 with s->err (also copied into err). */
int bk_set_add(struct bk_set *s, const struct bk_header *h, const char *device, char *err,
               size_t errlen);
/* After every device was added: 0 if every stripe is present. */
int bk_set_complete(struct bk_set *s, char *err, size_t errlen);

/* The generated database of `vdi exec --generate` (a source that costs
 * no read): the little-endian 64-bit word at offset off (a multiple of 8)
 * is off * 0x9e3779b97f4a7c15 + 1, so every word differs and a reader
 * can check any byte alone.  bk_generate fills len bytes from off. */
static inline uint64_t bk_generated_word(uint64_t off)
{
	return off * 0x9e3779b97f4a7c15ull + 1;
}
void bk_generate(uint8_t *buf, uint32_t len, uint64_t off);

#endif /* VDI_CLI_BKFMT_H */
