/* SPDX-License-Identifier: MIT */
/*
 * cstream.c - stream adapter, client side: one device of a client set seen
 * as a byte stream (backup: read it; restore: write it).  Built only on the
 * client backend seam of vdi.h (vdi_bset / vdi_bdev), so the same adapter
 * runs over libvdi's client half and over a library with Microsoft's ABI;
 * it asks the seam for nothing Microsoft's API does not offer (a blocking
 * GetCommand with a timeout, CompleteCommand, SignalAbort, and the
 * configuration).
 *
 * Ordering.  Commands are handled strictly in the order GetCommand returns
 * them, one at a time: the command at the head (`cur`) is completed before
 * the next one is fetched.  A VDC_Flush or VDC_ClearError therefore reaches
 * the head only once every command before it was completed, and answering
 * it there keeps the rule "Flush completes after everything before it".
 * The server may keep many commands outstanding: they wait, in order, in
 * the device's queue in shared memory, which is the fetch-ahead buffer.
 * Data moves through the head command:
 *
 *   backup  (VDC_Write)  bytes [off, size) of cur->buffer are handed out by
 *                        peek; the advance that takes the last byte
 *                        completes the Write (ERROR_SUCCESS, size).
 *   restore (VDC_Read)   bytes [off, size) of cur->buffer are the room
 *                        handed out by reserve; the commit that fills it
 *                        completes the Read (ERROR_SUCCESS, size).
 *
 * read and write are loops over peek/advance and reserve/commit with one
 * memcpy each: one copy per byte; the zero-copy calls copy nothing.  Once a
 * read has taken some bytes it polls (timeout 0) for the next command
 * instead of waiting, so it returns what is available, like read(2) on a
 * pipe; only its first wait uses the stream timeout.  A write waits until
 * every byte found room (each wait bounded by the timeout).
 *
 * End of stream.  Backup: VDC_Complete at the head (it stays pending: the
 * server learns the outcome from vdi_cstream_close) or VD_E_CLOSE.
 * Restore: the writer calls vdi_cstream_close(ok=1), which completes the
 * partly filled Read with ERROR_HANDLE_EOF and answers every later Read
 * with ERROR_HANDLE_EOF and 0 bytes until VD_E_CLOSE.  A backup closed
 * while data is still unread, or any close(ok=0), aborts the set: a
 * truncated stream must never look complete to the server.
 *
 * Commands outside the stream (decision D11): VDC_ClearError and VDC_Flush
 * succeed; VDC_Complete ends a backup when VDF_CompleteEnabled was
 * negotiated (on a restore it just succeeds); a data command of the wrong
 * direction, a data command out of sequence on a VDF_RandomAccess set, and
 * every other code complete with ERROR_NOT_SUPPORTED.
 *
 * Snapshots (D47): VDC_PrepareToFreeze, VDC_Snapshot and VDC_MountSnapshot
 * go to the front end's handler (vdi_cstream_on_snapshot) when they reach
 * the head, so every command before them completed; its answer is their
 * completion code.  With VDF_EnumFrozenFiles offered, the VDC_Write data
 * between VDC_FileInfoBegin and VDC_FileInfoEnd is the list of frozen
 * files, not stream data: collected here and handed to the handler.
 *
 * Errors.  VD_E_TIMEOUT is returned and forgotten: the call may be
 * retried.  Every other failure is sticky and returned by every later call
 * (with the first message).  A call that moved bytes before a failure
 * returns the count; the next call returns the error.
 *
 * Ownership and threads.  The stream borrows the device and its set; both
 * must outlive it.  One thread at a time per stream, so no lock.  cur is
 * borrowed from the engine until completed; pointers from peek and reserve
 * are valid until the next call on the stream.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_ops.h"
#include "internal.h"

/*
 * ThreadSanitizer cannot see the engine order a buffer hand-off between two
 * client threads (the chain runs through the server's mapping of the rings,
 * or another process): say it here.  Completing a command releases what this
 * thread wrote into or read from its buffer; fetching one acquires it.
 */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define CS_TSAN_ACQUIRE(p) ((p) ? __tsan_acquire(p) : (void)0)
#define CS_TSAN_RELEASE(p) ((p) ? __tsan_release(p) : (void)0)
#else
#define CS_TSAN_ACQUIRE(p) ((void)(p))
#define CS_TSAN_RELEASE(p) ((void)(p))
#endif

/* AWS tape image (D50): each block is preceded by a 6-byte header:
 * length of this chunk and of the previous one (16-bit little endian),
 * flags, and a zero byte.  A record longer than CS_AWS_CHUNK bytes
 * spans chunks; a filemark is a header of length 0 with CS_AWS_MARK. */
#define CS_AWS_HDR         6u
#define CS_AWS_CHUNK       65535u
#define CS_AWS_BOR         0x80u /* chunk begins a record */
#define CS_AWS_MARK        0x40u /* filemark */
#define CS_AWS_EOR         0x20u /* chunk ends a record */
#define CS_SCRATCH         65536u
#define CS_ERROR_MORE_DATA 234u /* Win32: the block does not fit the buffer */

/* What a positioning command at the head of a restore waits to pass. */
enum cs_skip {
	CS_SKIP_NONE,
	CS_SKIP_MARKS,  /* VDC_SkipMarks: filemarks */
	CS_SKIP_BLOCKS, /* VDC_SkipBlocks: records, stopping at a filemark */
	CS_SKIP_TO,     /* VDC_SetPosition on a tape: records and filemarks */
	CS_SKIP_BYTES,  /* VDC_SetPosition on a disk: bytes */
};

struct vdi_cstream {
	struct vdi_bdev *dev;
	struct vdi_bset *set;
	int wrapped;                     /* dev wraps a libvdi device (vdi_cstream_new) */
	uint32_t timeout;                /* bounds each wait for a command */
	uint32_t features;               /* negotiated (VDConfig.features) */
	uint32_t direction;              /* VDF_WriteMedia, VDF_ReadMedia, 0 unknown */
	VDC_Command *cur;                /* head command: fetched, not completed */
	uint32_t off;                    /* bytes of cur taken (backup) / filled */
	uint64_t bytes;                  /* bytes moved through the stream */
	int closed;                      /* VD_E_CLOSE seen: no command will come */
	int writer_done;                 /* restore: close(ok=1) answers reads EOF */
	int complete_acked;              /* backup: VDC_Complete completed */
	vdi_cstream_snapshot_fn snap_fn; /* snapshot commands go here */
	void *snap_ctx;
	int in_fileinfo; /* between FileInfoBegin and FileInfoEnd */
	char *files;     /* frozen files, '\n'-separated (malloc'ed) */
	size_t files_len;
	/* media (D50): tape image, positions, removable media */
	int tape;                /* VDF_FileMarks: the stream is an AWS tape image */
	uint64_t block;          /* tape: block address on this medium */
	uint32_t volume;         /* medium, 0 first */
	uint64_t vol_size;       /* backup: stream bytes a medium holds, 0 unlimited */
	uint32_t block_size;     /* VDConfig.blockSize: Writes are multiples of it */
	uint64_t vol_bytes;      /* stream bytes on this medium */
	int vol_end;             /* at the end of this medium until VDC_Load */
	int vol_next;            /* backup: the reader moved on to the next medium */
	int rewound;             /* tape rewound after data: it cannot move again */
	uint64_t rec_at;         /* restore: offset in the medium of the record's first header */
	uint32_t cond;           /* restore: code of every Read until VDC_ClearError */
	uint32_t marks;          /* restore: filemarks parsed, not yet reported */
	uint8_t aws[CS_AWS_HDR]; /* block header handed out / being collected */
	uint32_t aws_len;        /* backup: header bytes to hand out; restore: collected */
	uint32_t aws_off;        /* backup: header bytes handed out */
	uint32_t aws_left;       /* data bytes left in the current chunk */
	uint32_t aws_prev;       /* length of the previous chunk (0 after a mark) */
	int aws_eor;             /* the current chunk ends its record */
	int aws_inrec;           /* restore: inside a record */
	int skip;                /* restore: CS_SKIP_* of the positioning command cur */
	uint64_t skip_left;      /* marks, blocks or bytes it still has to pass */
	uint8_t *scratch;        /* where skipped bytes go (malloc'ed) */
	uint32_t ans_bytes;      /* CS_ANSWER: bytes transferred to report */
	uint64_t ans_pos;        /* CS_ANSWER: position to report */
	int error;               /* sticky VD_E_* code, 0 if none */
	char msg[320];           /* message of the sticky error */
};

/* The frozen-file list of a VDC_Write between FileInfoBegin and End: one
 * path per line, NUL padding ignored.  The completion code. */
static uint32_t cs_fileinfo(struct vdi_cstream *s, const VDC_Command *cmd)
{
	int32_t i;

	if (!s->files && !(s->files = malloc(VDI_CSTREAM_FILES_MAX + 1)))
		return ERROR_NO_SYSTEM_RESOURCES;
	for (i = 0; i < cmd->size; i++) {
		char ch = (char)cmd->buffer[i];

		if (!ch)
			continue;
		if (s->files_len == VDI_CSTREAM_FILES_MAX) {
			vdi_log(VDI_LOG_WARN, "device '%s': frozen-file list over %u bytes refused",
			        vdi_bdev_name(s->dev), VDI_CSTREAM_FILES_MAX);
			return ERROR_INVALID_PARAMETER;
		}
		s->files[s->files_len++] = ch;
	}
	s->files[s->files_len] = '\0';
	return ERROR_SUCCESS;
}

/* The handler's answer to a snapshot command (ERROR_NOT_SUPPORTED if the
 * front end has none: nothing is offered that nobody answers). */
static uint32_t cs_snapshot(struct vdi_cstream *s, uint32_t code)
{
	if (!s->snap_fn)
		return ERROR_NOT_SUPPORTED;
	return s->snap_fn(s->snap_ctx, s, code, s->files ? s->files : "");
}

/* What the stream does with a command at the head. */
enum cs_kind {
	CS_DATA,   /* bytes to hand out (backup) or room to fill (restore) */
	CS_SKIP,   /* restore: a positioning command passing the writer's bytes */
	CS_END,    /* VDC_Complete of a backup: end of stream, keep pending */
	CS_HOLD,   /* backup: at the end of a medium, the reader has not moved on */
	CS_ANSWER, /* complete at once: code, s->ans_bytes, s->ans_pos */
};

static const char *cs_name(const struct vdi_cstream *s)
{
	return vdi_bdev_name(s->dev);
}

/* Records rc as the sticky error with the message the failing call left. */
static int cs_failed(struct vdi_cstream *s, int rc)
{
	const char *m = vdi_last_error();
	char tail[40];
	size_t n = strlen(m), t;

	snprintf(tail, sizeof(tail), " (%s)", vdi_strerror(rc));
	t = strlen(tail);
	if (n >= t && !strcmp(m + n - t, tail))
		n -= t; /* vdi_fail appends the code again when replayed */
	snprintf(s->msg, sizeof(s->msg), "%.*s", (int)n, m);
	s->error = rc;
	return rc;
}

static int cs_replay(const struct vdi_cstream *s)
{
	return vdi_fail(s->error, "%s", s->msg);
}

static int cs_is_data_code(int32_t code)
{
	return code == VDC_Read || code == VDC_Write;
}

/* ----------------------------------------------------------- media (D50) */

/* Position as GetPosition reports it: a block address on this medium for
 * a tape, the byte offset from the start of the data otherwise. */
static uint64_t cs_position(const struct vdi_cstream *s)
{
	if (s->rewound)
		return 0;
	return (s->features & VDF_RandomAccess) ? s->bytes : s->block;
}

/* Nothing moved on this medium yet: the stream is at its beginning.  A
 * tape restore takes the writer's chunk headers before any command asks
 * for them, so there the bytes received say nothing: only the position
 * does (no block reached the server or was skipped; a Rewind or Load
 * cannot reach the head while a Read holds part of one). */
static int cs_at_bom(const struct vdi_cstream *s)
{
	if (s->tape && s->direction == VDF_ReadMedia)
		return s->block == 0;
	return s->block == 0 && s->vol_bytes == 0;
}

static uint32_t cs_refuse(const struct vdi_cstream *s, const char *what, uint64_t want)
{
	vdi_log(VDI_LOG_INFO,
	        "device '%s': %s to %llu refused: a stream moves forward only (at %llu, medium %u)",
	        cs_name(s), what, (unsigned long long)want, (unsigned long long)cs_position(s),
	        s->volume);
	return ERROR_NOT_SUPPORTED;
}

/* VDC_Rewind: nothing to do at the beginning of the medium.  After data
 * it ends the medium's use (as a tape rewinds at the end of an operation):
 * the position is 0 again, and a data command or move after it is
 * refused, since a stream cannot be read or written twice. */
static uint32_t cs_rewind(struct vdi_cstream *s)
{
	if (cs_at_bom(s))
		return ERROR_SUCCESS;
	vdi_log(VDI_LOG_INFO,
	        "device '%s': rewound after %llu bytes of medium %u: it can be loaded or closed, "
	        "not moved again",
	        cs_name(s), (unsigned long long)s->vol_bytes, s->volume);
	s->rewound = 1;
	s->block = 0;
	s->cond = 0;
	return ERROR_SUCCESS;
}

/* VDC_Load: the next medium, after the end of this one. */
static uint32_t cs_load(struct vdi_cstream *s)
{
	if (!s->vol_end) {
		if (cs_at_bom(s))
			return ERROR_SUCCESS; /* this medium is loaded and unused */
		vdi_log(VDI_LOG_INFO,
		        "device '%s': VDC_Load refused in the middle of medium %u (%llu bytes on it)",
		        cs_name(s), s->volume, (unsigned long long)s->vol_bytes);
		return ERROR_NOT_SUPPORTED;
	}
	s->volume++;
	s->rewound = 0;
	s->vol_end = s->vol_next = 0;
	s->vol_bytes = 0;
	s->block = 0;
	s->cond = 0;
	s->marks = 0;
	s->aws_prev = 0;
	vdi_log(VDI_LOG_INFO, "device '%s': medium %u loaded", cs_name(s), s->volume);
	return ERROR_SUCCESS;
}

/* The chunk header of the backup's next piece: a filemark, or the next
 * chunk of the Write at the head. */
static void cs_aws_build(struct vdi_cstream *s)
{
	uint32_t len = 0, flags = CS_AWS_MARK;

	if (s->cur->commandCode == VDC_Write) {
		uint32_t left = (uint32_t)s->cur->size - s->off;

		len = left < CS_AWS_CHUNK ? left : CS_AWS_CHUNK;
		flags = (s->off == 0 ? CS_AWS_BOR : 0) | (len == left ? CS_AWS_EOR : 0);
	}
	s->aws[0] = (uint8_t)len;
	s->aws[1] = (uint8_t)(len >> 8);
	s->aws[2] = (uint8_t)s->aws_prev;
	s->aws[3] = (uint8_t)(s->aws_prev >> 8);
	s->aws[4] = (uint8_t)flags;
	s->aws[5] = 0;
	s->aws_len = CS_AWS_HDR;
	s->aws_off = 0;
	s->aws_left = len;
	s->aws_prev = len;
}

/* Bytes a record of size bytes takes in the tape image. */
static uint64_t cs_aws_size(uint32_t size)
{
	uint64_t chunks = size ? (size + CS_AWS_CHUNK - 1) / CS_AWS_CHUNK : 1;

	return size + chunks * CS_AWS_HDR;
}

/* A backup Write at the head: end of medium?  CS_DATA, or CS_ANSWER
 * with ERROR_END_OF_MEDIA and the bytes that fit (a tape record is never
 * split: 0), or CS_HOLD. */
static enum cs_kind cs_write_room(struct vdi_cstream *s, const VDC_Command *cmd, uint32_t *code)
{
	if (s->vol_end) {
		if (!s->vol_next)
			return CS_HOLD;
		*code = ERROR_END_OF_MEDIA; /* queued behind the end: 0 bytes */
		return CS_ANSWER;
	}
	if (!s->vol_size || s->vol_bytes == 0)
		return CS_DATA;
	if (s->tape ? s->off == 0 && s->aws_off == s->aws_len && s->aws_left == 0 &&
	                      s->vol_bytes + cs_aws_size((uint32_t)cmd->size) > s->vol_size
	            : s->vol_bytes >= s->vol_size) {
		s->vol_end = 1;
		s->ans_bytes = s->off;
		*code = ERROR_END_OF_MEDIA;
		vdi_log(VDI_LOG_INFO, "device '%s': end of medium %u after %llu bytes", cs_name(s),
		        s->volume, (unsigned long long)s->vol_bytes);
		return CS_ANSWER;
	}
	return CS_DATA;
}

/* A restore Read at the head: a condition to report, or CS_DATA.  The
 * condition comes first: the Reads behind a reported filemark repeat it
 * and must not take the next filemark parsed (that one is for the Read
 * after VDC_ClearError). */
static enum cs_kind cs_read_room(struct vdi_cstream *s, uint32_t *code)
{
	if (!s->cond && s->marks) {
		s->marks--;
		s->block++;
		s->cond = ERROR_FILEMARK_DETECTED;
	}
	if (s->cond) {
		*code = s->cond;
		return CS_ANSWER;
	}
	if (s->vol_end || s->writer_done) {
		*code = ERROR_HANDLE_EOF;
		return CS_ANSWER;
	}
	return CS_DATA;
}

/* VDC_SkipMarks, VDC_SkipBlocks (restore of a tape): filemarks already
 * parsed count first; the rest waits for the writer's bytes. */
static enum cs_kind cs_skip_begin(struct vdi_cstream *s, const VDC_Command *cmd, uint32_t *code)
{
	int marks = cmd->commandCode == VDC_SkipMarks;
	uint64_t n;

	*code = ERROR_NOT_SUPPORTED;
	if (s->direction != VDF_ReadMedia || !s->tape ||
	    !(s->features & (marks ? VDF_FileMarks : VDF_SkipBlocks)))
		return CS_ANSWER;
	if (cmd->size < 0) {
		vdi_log(VDI_LOG_INFO,
		        "device '%s': %s of %d refused: a stream moves forward only (at %llu, "
		        "medium %u)",
		        cs_name(s), vdi_strcommand((uint32_t)cmd->commandCode), (int)cmd->size,
		        (unsigned long long)cs_position(s), s->volume);
		return CS_ANSWER;
	}
	n = (uint64_t)cmd->size;
	s->cond = 0;
	*code = ERROR_SUCCESS;
	if (marks) {
		uint64_t k = s->marks < n ? s->marks : n;

		s->marks -= (uint32_t)k;
		s->block += k;
		n -= k;
	} else if (n && s->marks) { /* skipping blocks stops at a filemark */
		s->marks--;
		s->block++;
		s->cond = *code = ERROR_FILEMARK_DETECTED;
		return CS_ANSWER;
	}
	if (!n)
		return CS_ANSWER;
	if (s->vol_end || s->writer_done) {
		*code = ERROR_NO_DATA_DETECTED;
		return CS_ANSWER;
	}
	s->skip = marks ? CS_SKIP_MARKS : CS_SKIP_BLOCKS;
	s->skip_left = n;
	return CS_SKIP;
}

/* VDC_SetPosition: to where the stream is, or (restore) forward. */
static enum cs_kind cs_set_position(struct vdi_cstream *s, const VDC_Command *cmd, uint32_t *code)
{
	uint64_t at = cs_position(s), to = (uint64_t)cmd->position;

	if (s->features & VDF_RandomAccess) {
		switch (cmd->size) {
		case VDC_Beginning: break;
		case VDC_Current: to = at + (uint64_t)cmd->position; break;
		case VDC_End:
			vdi_log(VDI_LOG_INFO,
			        "device '%s': VDC_SetPosition from the end refused: "
			        "a stream's end is not known",
			        cs_name(s));
			*code = ERROR_NOT_SUPPORTED;
			return CS_ANSWER;
		default: *code = ERROR_INVALID_PARAMETER; return CS_ANSWER;
		}
	}
	s->ans_pos = at;
	*code = ERROR_SUCCESS;
	if (to == at)
		return CS_ANSWER;
	if (to < at || s->direction != VDF_ReadMedia) {
		*code = cs_refuse(s, "VDC_SetPosition", to);
		return CS_ANSWER;
	}
	s->cond = 0;
	if (s->vol_end || s->writer_done) {
		*code = ERROR_NO_DATA_DETECTED;
		return CS_ANSWER;
	}
	s->skip = (s->features & VDF_RandomAccess) ? CS_SKIP_BYTES : CS_SKIP_TO;
	s->skip_left = to - at;
	return CS_SKIP;
}

/* Classifies the media commands; CS_ANSWER with ERROR_NOT_SUPPORTED for
 * a feature not offered. */
static enum cs_kind cs_classify_media(struct vdi_cstream *s, const VDC_Command *cmd, uint32_t *code)
{
	uint32_t f = s->features;

	*code = ERROR_NOT_SUPPORTED;
	switch (cmd->commandCode) {
	case VDC_Load:
		/* a backup's reader has to see the end of its medium first */
		if ((f & VDF_Removable) && s->direction == VDF_WriteMedia && s->vol_end &&
		    !s->vol_next)
			return CS_HOLD;
		if (f & VDF_Removable)
			*code = cs_load(s);
		return CS_ANSWER;
	case VDC_Rewind:
		if (f & VDF_Rewind)
			*code = cs_rewind(s);
		return CS_ANSWER;
	case VDC_WriteMark:
		if (!s->direction)
			s->direction = VDF_WriteMedia;
		if (!(f & VDF_FileMarks) || !s->tape || s->direction != VDF_WriteMedia)
			return CS_ANSWER;
		if (s->vol_end) { /* like a Write behind the end of the medium */
			if (!s->vol_next)
				return CS_HOLD;
			*code = ERROR_END_OF_MEDIA;
			return CS_ANSWER;
		}
		if (s->aws_off == s->aws_len) /* first time at the head */
			cs_aws_build(s);
		return CS_DATA;
	case VDC_SkipMarks:
	case VDC_SkipBlocks: return cs_skip_begin(s, cmd, code);
	case VDC_GetPosition:
		if (f & (VDF_Position | VDF_RandomAccess)) {
			s->ans_pos = cs_position(s);
			*code = ERROR_SUCCESS;
		}
		return CS_ANSWER;
	case VDC_SetPosition:
		if (f & (VDF_Position | VDF_RandomAccess))
			return cs_set_position(s, cmd, code);
		return CS_ANSWER;
	}
	return CS_ANSWER;
}

static int cs_is_media_code(int32_t code)
{
	switch (code) {
	case VDC_Load:
	case VDC_Rewind:
	case VDC_WriteMark:
	case VDC_SkipMarks:
	case VDC_SkipBlocks:
	case VDC_GetPosition:
	case VDC_SetPosition: return 1;
	}
	return 0;
}

/* ------------------------------------------------------------- commands */

/* Classifies cmd; for CS_ANSWER *code is the completion code to give.
 * Called again for a head command partly moved: idempotent then. */
static enum cs_kind cs_classify(struct vdi_cstream *s, const VDC_Command *cmd, uint32_t *code)
{
	enum cs_kind kind;
	int32_t want;

	*code = ERROR_NOT_SUPPORTED;
	s->ans_bytes = 0;
	s->ans_pos = 0;
	if (s->skip)
		return CS_SKIP;
	if (!s->direction && cs_is_data_code(cmd->commandCode))
		s->direction = cmd->commandCode == VDC_Read ? VDF_ReadMedia : VDF_WriteMedia;
	want = s->direction == VDF_ReadMedia ? VDC_Read : VDC_Write;
	if (s->rewound && cmd->commandCode != VDC_Load && cmd->commandCode != VDC_Rewind &&
	    cmd->commandCode != VDC_GetPosition &&
	    (cs_is_data_code(cmd->commandCode) || cs_is_media_code(cmd->commandCode))) {
		vdi_log(VDI_LOG_INFO,
		        "device '%s': %s refused: the medium was rewound after its data",
		        cs_name(s), vdi_strcommand((uint32_t)cmd->commandCode));
		return CS_ANSWER; /* ERROR_NOT_SUPPORTED */
	}
	if (cs_is_media_code(cmd->commandCode))
		return cs_classify_media(s, cmd, code);
	switch (cmd->commandCode) {
	case VDC_ClearError:
		s->cond = 0;
		*code = ERROR_SUCCESS;
		return CS_ANSWER;
	case VDC_Flush: *code = ERROR_SUCCESS; return CS_ANSWER;
	case VDC_Discard:
		/* the stream keeps nothing to discard: offered, it succeeds */
		if (s->features & VDF_Discard) {
			vdi_log(VDI_LOG_INFO,
			        "device '%s': VDC_Discard: the server gave up this operation after "
			        "%llu bytes",
			        cs_name(s), (unsigned long long)s->bytes);
			*code = ERROR_SUCCESS;
		}
		return CS_ANSWER;
	case VDC_PrepareToFreeze:
	case VDC_Snapshot:
	case VDC_MountSnapshot:
		*code = cs_snapshot(s, (uint32_t)cmd->commandCode);
		return CS_ANSWER;
	case VDC_FileInfoBegin:
	case VDC_FileInfoEnd:
		if (!(s->features & VDF_EnumFrozenFiles))
			return CS_ANSWER;
		s->in_fileinfo = cmd->commandCode == VDC_FileInfoBegin;
		if (s->in_fileinfo && s->files)
			s->files_len = 0, s->files[0] = '\0';
		*code = ERROR_SUCCESS;
		return CS_ANSWER;
	case VDC_Complete:
		if (!(s->features & VDF_CompleteEnabled))
			return CS_ANSWER;
		if (s->direction == VDF_ReadMedia) {
			*code = ERROR_SUCCESS;
			return CS_ANSWER;
		}
		return CS_END;
	}
	if (cmd->commandCode == VDC_Write && s->in_fileinfo && cmd->size > 0 && cmd->buffer) {
		*code = cs_fileinfo(s, cmd);
		if (*code == ERROR_SUCCESS)
			s->ans_bytes = (uint32_t)cmd->size;
		return CS_ANSWER;
	}
	if (cmd->commandCode != want)
		return CS_ANSWER;
	if (cmd->size <= 0 || !cmd->buffer) {
		*code = ERROR_INVALID_PARAMETER;
		return CS_ANSWER;
	}
	kind = want == VDC_Write ? cs_write_room(s, cmd, code) : cs_read_room(s, code);
	if (kind == CS_DATA && (s->features & VDF_RandomAccess) &&
	    (uint64_t)cmd->position != s->bytes - s->off) {
		/* a stream only moves forward: SetPosition moves it */
		*code = cs_refuse(s, vdi_strcommand((uint32_t)cmd->commandCode),
		                  (uint64_t)cmd->position);
		return CS_ANSWER;
	}
	return kind;
}

/* Fetches the next command into cur.  1: got one; 0: VD_E_CLOSE; < 0. */
static int cs_fetch(struct vdi_cstream *s, uint32_t timeout)
{
	int rc;

	if (s->error)
		return cs_replay(s);
	if (s->closed)
		return 0;
	rc = vdi_bdev_get_command(s->dev, timeout, &s->cur);
	if (rc == NOERROR) {
		s->off = 0;
		CS_TSAN_ACQUIRE(s->cur->buffer);
		return 1;
	}
	s->cur = NULL;
	if (rc == VD_E_CLOSE) {
		s->closed = 1;
		return 0;
	}
	if (rc == VD_E_TIMEOUT)
		return rc;
	return cs_failed(s, rc);
}

/* Completes cur with code, bytes and position; cur is gone afterwards. */
static int cs_finish_at(struct vdi_cstream *s, uint32_t code, uint32_t bytes, uint64_t pos)
{
	VDC_Command *cmd = s->cur;
	int rc;

	s->cur = NULL;
	s->off = 0;
	s->skip = CS_SKIP_NONE;
	CS_TSAN_RELEASE(cmd->buffer);
	rc = vdi_bdev_complete_command(s->dev, cmd, code, bytes, pos);
	return rc ? cs_failed(s, rc) : 0;
}

static int cs_finish(struct vdi_cstream *s, uint32_t code, uint32_t bytes)
{
	return cs_finish_at(s, code, bytes, 0);
}

/*
 * Brings a command with bytes (backup) or room (restore) left to the
 * head, answering the commands before it.  Returns 1 when cur is such a
 * command (CS_DATA, or CS_SKIP on a restore), 0 at end of stream
 * (VDC_Complete at the head, VD_E_CLOSE, or the end of a medium the
 * reader has not moved on from), or a negative code.
 */
static int cs_ready(struct vdi_cstream *s, uint32_t timeout)
{
	uint32_t code;
	int rc;

	for (;;) {
		if (!s->cur) {
			rc = cs_fetch(s, timeout);
			if (rc <= 0)
				return rc;
		}
		switch (cs_classify(s, s->cur, &code)) {
		case CS_DATA:
		case CS_SKIP: return 1;
		case CS_END:
		case CS_HOLD: return 0;
		case CS_ANSWER:
			if (code != ERROR_SUCCESS)
				vdi_log(VDI_LOG_INFO, "device '%s': %s completed with %s",
				        cs_name(s), vdi_strcommand((uint32_t)s->cur->commandCode),
				        vdi_strcompletion(code));
			rc = cs_finish_at(s, code, s->ans_bytes, s->ans_pos);
			if (rc)
				return rc;
		}
	}
}

int vdi_cstream_open(struct vdi_bdev *d, uint32_t timeout_ms, struct vdi_cstream **out)
{
	struct vdi_cstream *s;
	VDConfig cfg;
	int rc;

	if (!out)
		return vdi_fail(VD_E_INVALID, "cannot open stream: no result pointer");
	*out = NULL;
	if (!d)
		return vdi_fail(VD_E_INVALID, "cannot open stream: no device");
	memset(&cfg, 0, sizeof(cfg));
	rc = vdi_bset_get_configuration(vdi_bdev_set(d), 0, &cfg);
	if (rc)
		return rc;
	s = calloc(1, sizeof(*s));
	if (!s)
		return vdi_fail(VD_E_MEMORY, "cannot open stream on device '%s': out of memory",
		                vdi_bdev_name(d));
	s->dev = d;
	s->set = vdi_bdev_set(d);
	s->timeout = timeout_ms;
	s->features = cfg.features;
	s->block_size = cfg.blockSize;
	s->tape = (cfg.features & VDF_FileMarks) != 0;
	if ((cfg.features & (VDF_WriteMedia | VDF_ReadMedia)) != (VDF_WriteMedia | VDF_ReadMedia))
		s->direction = cfg.features & (VDF_WriteMedia | VDF_ReadMedia);
	*out = s;
	return 0;
}

int vdi_cstream_new(struct vdi_client_device *d, uint32_t timeout_ms, struct vdi_cstream **out)
{
	struct vdi_bdev *bd;
	int rc;

	if (!out)
		return vdi_fail(VD_E_INVALID, "cannot open stream: no result pointer");
	*out = NULL;
	rc = vdi_bdev_wrap(d, &bd);
	if (rc)
		return rc;
	rc = vdi_cstream_open(bd, timeout_ms, out);
	if (rc) {
		vdi_bdev_unwrap(bd);
		return rc;
	}
	(*out)->wrapped = 1;
	return 0;
}

struct vdi_bdev *vdi_cstream_device(const struct vdi_cstream *s)
{
	return s ? s->dev : NULL;
}

void vdi_cstream_on_snapshot(struct vdi_cstream *s, vdi_cstream_snapshot_fn fn, void *ctx)
{
	if (!s)
		return;
	s->snap_fn = fn;
	s->snap_ctx = ctx;
}

uint32_t vdi_cstream_direction(const struct vdi_cstream *s)
{
	return s ? s->direction : 0;
}

int vdi_cstream_await_direction(struct vdi_cstream *s, uint32_t *direction)
{
	int rc;

	if (!s || !direction)
		return vdi_fail(VD_E_INVALID, "cannot wait for the direction: null argument");
	*direction = s->direction;
	if (s->direction)
		return 0;
	rc = cs_ready(s, s->timeout);
	if (rc == 0)
		return vdi_fail(VD_E_CLOSE,
		                "device '%s': the server closed it before its first data command",
		                cs_name(s));
	if (rc < 0)
		return rc;
	*direction = s->direction;
	return 0;
}

uint64_t vdi_cstream_bytes(const struct vdi_cstream *s)
{
	return s ? s->bytes : 0;
}

/* VD_E_PROTOCOL if the stream's direction is known and not dir. */
static int cs_check(const struct vdi_cstream *s, uint32_t dir, const char *what)
{
	if (s->direction && s->direction != dir)
		return vdi_fail(VD_E_PROTOCOL, "cannot %s device '%s': it is a %s stream", what,
		                cs_name(s), dir == VDF_WriteMedia ? "restore" : "backup");
	if (dir == VDF_ReadMedia && s->writer_done)
		return vdi_fail(VD_E_PROTOCOL, "cannot write device '%s': stream closed",
		                cs_name(s));
	return 0;
}

/* ---------------------------------------------------------------- backup */

/* peek with an explicit wait; the public peek uses the stream timeout. */
static ssize_t cs_peek(struct vdi_cstream *s, const void **ptr, size_t len, uint32_t timeout)
{
	size_t left;
	int rc;

	rc = cs_ready(s, timeout);
	if (rc <= 0)
		return rc;
	if (s->direction != VDF_WriteMedia) /* both configured: a Read came */
		return cs_check(s, VDF_WriteMedia, "read");
	if (s->tape) {
		if (s->aws_off == s->aws_len && s->aws_left == 0)
			cs_aws_build(s); /* the next chunk of the Write */
		if (s->aws_off < s->aws_len) {
			*ptr = s->aws + s->aws_off;
			left = s->aws_len - s->aws_off;
			return (ssize_t)(len < left ? len : left);
		}
		left = s->aws_left;
	} else {
		left = (size_t)s->cur->size - s->off;
		if (s->vol_size && s->vol_size - s->vol_bytes < left)
			left = (size_t)(s->vol_size - s->vol_bytes);
	}
	*ptr = s->cur->buffer + s->off;
	return (ssize_t)(len < left ? len : left);
}

static ssize_t cs_peek_checked(struct vdi_cstream *s, const void **ptr, size_t len, int wait)
{
	int rc;

	if (!s || !ptr)
		return vdi_fail(VD_E_INVALID, "cannot peek stream: null argument");
	*ptr = NULL;
	rc = cs_check(s, VDF_WriteMedia, "read");
	if (rc || !len)
		return rc;
	return cs_peek(s, ptr, len, wait ? s->timeout : 0);
}

ssize_t vdi_cstream_peek(struct vdi_cstream *s, const void **ptr, size_t len)
{
	return cs_peek_checked(s, ptr, len, 1);
}

ssize_t vdi_cstream_peek_nowait(struct vdi_cstream *s, const void **ptr, size_t len)
{
	return cs_peek_checked(s, ptr, len, 0);
}

static int cs_bad_take(struct vdi_cstream *s, size_t n, size_t had, const char *what)
{
	return vdi_fail(VD_E_INVALID, "cannot %s %zu bytes on device '%s': only %zu %s", what, n,
	                cs_name(s), had,
	                !strcmp(what, "advance") ? "bytes were peeked" : "bytes were reserved");
}

/* Takes n bytes handed out by cs_peek. */
static int cs_take_out(struct vdi_cstream *s, size_t n)
{
	size_t had;

	if (!n)
		return 0;
	if (!s->cur || (s->cur->commandCode != VDC_Write && s->cur->commandCode != VDC_WriteMark))
		return cs_bad_take(s, n, 0, "advance");
	if (s->tape && s->aws_off < s->aws_len) {
		had = s->aws_len - s->aws_off;
		if (n > had)
			return cs_bad_take(s, n, had, "advance");
		s->aws_off += (uint32_t)n;
		s->vol_bytes += n;
		s->bytes += n;
		if (s->aws_off < s->aws_len || s->cur->commandCode != VDC_WriteMark)
			return 0;
		s->block++; /* the filemark is on the medium */
		return cs_finish(s, ERROR_SUCCESS, 0);
	}
	had = s->tape ? s->aws_left : (size_t)s->cur->size - s->off;
	if (s->vol_size && !s->tape && s->vol_size - s->vol_bytes < had)
		had = (size_t)(s->vol_size - s->vol_bytes);
	if (n > had)
		return cs_bad_take(s, n, had, "advance");
	s->off += (uint32_t)n;
	s->bytes += n;
	s->vol_bytes += n;
	if (s->tape)
		s->aws_left -= (uint32_t)n;
	if (s->off == (uint32_t)s->cur->size) {
		s->block++;
		return cs_finish(s, ERROR_SUCCESS, (uint32_t)s->cur->size);
	}
	if (s->vol_size && !s->tape && s->vol_bytes >= s->vol_size) {
		uint32_t code;

		/* the medium is full: the server re-issues the rest (spec 10.5) */
		if (cs_write_room(s, s->cur, &code) == CS_ANSWER)
			return cs_finish(s, code, s->off);
	}
	return 0;
}

int vdi_cstream_advance(struct vdi_cstream *s, size_t n)
{
	if (!s)
		return vdi_fail(VD_E_INVALID, "cannot advance stream: null stream");
	return cs_take_out(s, n);
}

ssize_t vdi_cstream_read(struct vdi_cstream *s, void *buf, size_t len)
{
	uint32_t timeout;
	size_t done = 0;
	const void *p;
	ssize_t n;
	int rc;

	if (!s || (!buf && len))
		return vdi_fail(VD_E_INVALID, "cannot read stream: null argument");
	rc = cs_check(s, VDF_WriteMedia, "read");
	if (rc)
		return rc;
	timeout = s->timeout;
	while (done < len) {
		n = cs_peek(s, &p, len - done, timeout);
		if (n <= 0)
			return done ? (ssize_t)done : n;
		memcpy((uint8_t *)buf + done, p, (size_t)n);
		done += (size_t)n;
		rc = cs_take_out(s, (size_t)n);
		if (rc)
			return (ssize_t)done; /* sticky: next call reports */
		timeout = 0;
	}
	return (ssize_t)done;
}

/* --------------------------------------------------------------- restore */

/* A chunk header just taken is wrong: the offset is the header's own, in
 * the medium's file (where a user looks: FILE.m, <dev>.m). */
static int cs_not_tape(struct vdi_cstream *s, const char *why, unsigned v1, unsigned v2)
{
	char m[160];

	snprintf(m, sizeof(m), why, v1, v2);
	return cs_failed(s, vdi_fail(VD_E_PROTOCOL,
	                             "device '%s': not a tape image at byte offset %llu "
	                             "(medium %u): %s",
	                             cs_name(s), (unsigned long long)(s->vol_bytes - CS_AWS_HDR),
	                             s->volume, m));
}

/* A record ended on a restore: the Read at the head returns it, or the
 * skip at the head counts it. */
static int cs_record_end(struct vdi_cstream *s)
{
	s->aws_inrec = 0;
	s->block++;
	if (s->skip == CS_SKIP_NONE)
		return s->cur ? cs_finish(s, ERROR_SUCCESS, s->off) : 0;
	if (s->skip == CS_SKIP_MARKS || --s->skip_left)
		return 0;
	return cs_finish_at(s, ERROR_SUCCESS, 0, s->block);
}

/* A filemark was parsed on a restore. */
static int cs_mark(struct vdi_cstream *s)
{
	switch (s->skip) {
	case CS_SKIP_BLOCKS:
		s->block++;
		s->cond = ERROR_FILEMARK_DETECTED;
		return cs_finish(s, ERROR_FILEMARK_DETECTED, 0);
	case CS_SKIP_MARKS:
	case CS_SKIP_TO:
		s->block++;
		if (--s->skip_left)
			return 0;
		return cs_finish_at(s, ERROR_SUCCESS, 0, s->block);
	}
	s->marks++; /* reported to the next Read (cs_read_room) */
	return 0;
}

/* The chunk header collected on a restore: check it and act on it. */
static int cs_aws_parse(struct vdi_cstream *s)
{
	uint32_t len = s->aws[0] | (uint32_t)s->aws[1] << 8;
	uint32_t prev = s->aws[2] | (uint32_t)s->aws[3] << 8;
	uint32_t flags = s->aws[4];

	s->aws_len = 0;
	if ((flags & ~(CS_AWS_BOR | CS_AWS_MARK | CS_AWS_EOR)) || s->aws[5])
		return cs_not_tape(s, "chunk flags 0x%02x 0x%02x", flags, s->aws[5]);
	if (prev != s->aws_prev)
		return cs_not_tape(s, "chunk says the previous one had %u bytes, it had %u", prev,
		                   s->aws_prev);
	s->aws_prev = len;
	if (!len && !(flags & CS_AWS_MARK))
		return cs_not_tape(s, "empty chunk (flags 0x%02x%.0u)", flags, 0);
	if (flags & CS_AWS_MARK) {
		if (len || flags != CS_AWS_MARK || s->aws_inrec)
			return cs_not_tape(s, "filemark with length %u inside a record (%u)", len,
			                   (unsigned)s->aws_inrec);
		return cs_mark(s);
	}
	if (!!(flags & CS_AWS_BOR) == s->aws_inrec)
		return cs_not_tape(s,
		                   s->aws_inrec ? "record begins inside record (flags 0x%02x%.0u)"
		                                : "chunk outside a record (flags 0x%02x%.0u)",
		                   flags, 0);
	if (flags & CS_AWS_BOR)
		s->rec_at = s->vol_bytes - CS_AWS_HDR;
	s->aws_inrec = 1;
	s->aws_left = len;
	s->aws_eor = (flags & CS_AWS_EOR) != 0;
	return 0;
}

/* Room for the writer's bytes: the header being collected, the skipped
 * bytes' scratch, or the Read at the head. */
static ssize_t cs_room(struct vdi_cstream *s, void **ptr, size_t len, uint32_t timeout)
{
	int header = s->tape && s->aws_left == 0;
	size_t left;
	int rc;

	/* a chunk header needs no command, but the next medium's first one
	 * waits for the VDC_Load that starts that medium (and its chain) */
	if (!header || s->vol_end) {
		rc = cs_ready(s, timeout);
		if (rc == 0)
			return vdi_fail(
				VD_E_CLOSE,
				"cannot write device '%s': the server closed it after %llu bytes",
				cs_name(s), (unsigned long long)s->bytes);
		if (rc < 0)
			return rc;
	}
	if (header) {
		*ptr = s->aws + s->aws_len;
		left = CS_AWS_HDR - s->aws_len;
		return (ssize_t)(len < left ? len : left);
	}
	if (s->direction != VDF_ReadMedia) /* both configured: a Write came */
		return cs_check(s, VDF_ReadMedia, "write");
	if (s->skip) {
		if (!s->scratch && !(s->scratch = malloc(CS_SCRATCH)))
			return vdi_fail(VD_E_MEMORY, "device '%s': out of memory", cs_name(s));
		left = s->tape                     ? s->aws_left
		       : s->skip_left < CS_SCRATCH ? s->skip_left
		                                   : CS_SCRATCH;
		*ptr = s->scratch;
		if (left > CS_SCRATCH)
			left = CS_SCRATCH;
		return (ssize_t)(len < left ? len : left);
	}
	left = (size_t)s->cur->size - s->off;
	if (s->tape && s->aws_left < left)
		left = s->aws_left;
	*ptr = s->cur->buffer + s->off;
	return (ssize_t)(len < left ? len : left);
}

static ssize_t cs_reserve_checked(struct vdi_cstream *s, void **ptr, size_t len, int wait)
{
	int rc;

	if (!s || !ptr)
		return vdi_fail(VD_E_INVALID, "cannot reserve stream: null argument");
	*ptr = NULL;
	if (s->error)
		return cs_replay(s);
	rc = cs_check(s, VDF_ReadMedia, "write");
	if (rc || !len)
		return rc;
	return cs_room(s, ptr, len, wait ? s->timeout : 0);
}

/* Takes n bytes of the room cs_room gave. */
static int cs_take_in(struct vdi_cstream *s, size_t n)
{
	size_t had;

	if (!n)
		return 0;
	if (s->tape && s->aws_left == 0) {
		had = CS_AWS_HDR - s->aws_len;
		if (n > had)
			return cs_bad_take(s, n, had, "commit");
		s->aws_len += (uint32_t)n;
		s->bytes += n;
		s->vol_bytes += n;
		return s->aws_len == CS_AWS_HDR ? cs_aws_parse(s) : 0;
	}
	if (!s->cur || (!s->skip && s->cur->commandCode != VDC_Read))
		return cs_bad_take(s, n, 0, "commit");
	had = s->skip ? (s->tape ? s->aws_left : s->skip_left) : (size_t)s->cur->size - s->off;
	if (s->tape && !s->skip && s->aws_left < had)
		had = s->aws_left;
	if (n > had || (s->skip && n > CS_SCRATCH))
		return cs_bad_take(s, n, had, "commit");
	s->bytes += n;
	s->vol_bytes += n;
	if (s->skip == CS_SKIP_BYTES) {
		s->skip_left -= n;
		return s->skip_left ? 0 : cs_finish_at(s, ERROR_SUCCESS, 0, s->bytes);
	}
	if (!s->skip)
		s->off += (uint32_t)n;
	if (!s->tape)
		return s->off < (uint32_t)s->cur->size
		               ? 0
		               : cs_finish(s, ERROR_SUCCESS, (uint32_t)s->cur->size);
	s->aws_left -= (uint32_t)n;
	if (s->aws_left == 0 && s->aws_eor)
		return cs_record_end(s);
	if (!s->skip && s->off == (uint32_t)s->cur->size) {
		uint32_t size = (uint32_t)s->cur->size;
		int rc = cs_finish(s, CS_ERROR_MORE_DATA, size);

		return rc ? rc
		          : cs_failed(s, vdi_fail(VD_E_PROTOCOL,
		                                  "device '%s': the tape block at byte offset %llu "
		                                  "(medium %u) is larger than the server's read of "
		                                  "%u bytes",
		                                  cs_name(s), (unsigned long long)s->rec_at,
		                                  s->volume, size));
	}
	return 0;
}

ssize_t vdi_cstream_reserve(struct vdi_cstream *s, void **ptr, size_t len)
{
	return cs_reserve_checked(s, ptr, len, 1);
}

ssize_t vdi_cstream_reserve_nowait(struct vdi_cstream *s, void **ptr, size_t len)
{
	return cs_reserve_checked(s, ptr, len, 0);
}

int vdi_cstream_commit(struct vdi_cstream *s, size_t n)
{
	if (!s)
		return vdi_fail(VD_E_INVALID, "cannot commit stream: null stream");
	return cs_take_in(s, n);
}

ssize_t vdi_cstream_write(struct vdi_cstream *s, const void *buf, size_t len)
{
	size_t done = 0;
	ssize_t n;
	void *p;

	if (!s || (!buf && len))
		return vdi_fail(VD_E_INVALID, "cannot write stream: null argument");
	while (done < len) {
		n = vdi_cstream_reserve(s, &p, len - done);
		if (n <= 0)
			return done ? (ssize_t)done : n;
		memcpy(p, (const uint8_t *)buf + done, (size_t)n);
		done += (size_t)n;
		if (cs_take_in(s, (size_t)n))
			return (ssize_t)done; /* sticky: next call reports */
	}
	return (ssize_t)done;
}

/* ----------------------------------------------------------- media calls */

/* The device type bits of a mask (VDF_Removable is an extra of pipe and
 * disk, and part of tape). */
#define CS_TYPE_BITS ((uint32_t)((VDF_LikeTape | VDF_LikeDisk) & ~VDF_Removable))
#define CS_ANSWERED                                                                   \
	((uint32_t)(VDF_LikeTape | VDF_LikeDisk | VDF_Discard | VDF_RequestComplete | \
	            VDF_SnapshotPrepare | VDF_EnumFrozenFiles))

int vdi_cstream_feature_word(const char *word, size_t len, uint32_t *bits)
{
	static const struct {
		const char *name;
		int type;
		uint32_t bits;
	} words[] = {
		{ "pipe", 1, VDF_LikePipe },
		{ "tape", 1, VDF_LikeTape },
		{ "disk", 1, VDF_LikeDisk },
		{ "removable", 0, VDF_Removable },
		{ "discard", 0, VDF_Discard },
		{ "complete", 0, VDF_RequestComplete },
		{ "request-complete", 0, VDF_RequestComplete },
	};

	for (size_t i = 0; word && bits && i < sizeof(words) / sizeof(words[0]); i++)
		if (strlen(words[i].name) == len && !strncmp(word, words[i].name, len)) {
			*bits |= words[i].bits;
			return words[i].type;
		}
	return -1;
}

const char *vdi_cstream_device_type(uint32_t f)
{
	switch (f & CS_TYPE_BITS) {
	case 0: return "pipe";
	case VDF_LikeTape &CS_TYPE_BITS: return (f & VDF_Removable) ? "tape" : NULL;
	case VDF_RandomAccess: return "disk";
	}
	return NULL;
}

int vdi_cstream_check_features(uint32_t f)
{
	if (f & ~CS_ANSWERED)
		return vdi_fail(VD_E_NOTSUPPORTED,
		                "bits 0x%x of features 0x%x are not answered by a client stream "
		                "(pipe 0, tape 0x%x, disk 0x%x, removable 0x%x, discard 0x%x, "
		                "complete 0x%x, snapshot 0x%x)",
		                f & ~CS_ANSWERED, f, VDF_LikeTape, VDF_LikeDisk, VDF_Removable,
		                VDF_Discard, VDF_RequestComplete,
		                VDF_SnapshotPrepare | VDF_EnumFrozenFiles);
	if (!vdi_cstream_device_type(f))
		return vdi_fail(VD_E_NOTSUPPORTED,
		                "the device type bits 0x%x of features 0x%x are none of pipe (0), "
		                "tape (0x%x, whole) or disk (0x%x)",
		                f & (CS_TYPE_BITS | VDF_Removable), f, VDF_LikeTape, VDF_LikeDisk);
	return 0;
}

int vdi_cstream_set_volume_size(struct vdi_cstream *s, uint64_t bytes)
{
	uint64_t room;

	if (!s)
		return vdi_fail(VD_E_INVALID, "cannot set the medium size: null stream");
	if (bytes && !(s->features & VDF_Removable))
		return vdi_fail(VD_E_INVALID,
		                "cannot set the medium size of device '%s': VDF_Removable not "
		                "offered",
		                cs_name(s));
	if (bytes && bytes < VDI_CSTREAM_VOLUME_MIN)
		return vdi_fail(VD_E_INVALID,
		                "cannot set the medium size of device '%s' to %llu bytes: at least "
		                "%u",
		                cs_name(s), (unsigned long long)bytes, VDI_CSTREAM_VOLUME_MIN);
	/* The server re-issues the rest of a Write stored in part, and a
	 * Write is whole blocks: a pipe's or disk's medium ends on a block. */
	room = bytes;
	if (!s->tape && s->block_size > 1)
		room -= room % s->block_size;
	if (bytes && !room)
		return vdi_fail(VD_E_INVALID,
		                "cannot set the medium size of device '%s' to %llu bytes: less "
		                "than one block (%u bytes)",
		                cs_name(s), (unsigned long long)bytes, s->block_size);
	s->vol_size = room;
	return 0;
}

/* Restore: the partly filled Read ends with ERROR_HANDLE_EOF, a skip in
 * progress with ERROR_NO_DATA_DETECTED; a record cut short is an error. */
static int cs_end_data(struct vdi_cstream *s)
{
	if (s->tape && (s->aws_inrec || s->aws_len))
		return cs_failed(s, vdi_fail(VD_E_PROTOCOL,
		                             "device '%s': tape image ends inside a %s at byte "
		                             "offset %llu (medium %u)",
		                             cs_name(s), s->aws_inrec ? "record" : "chunk header",
		                             (unsigned long long)s->vol_bytes, s->volume));
	if (s->cur && s->skip)
		return cs_finish(s, ERROR_NO_DATA_DETECTED, 0);
	if (s->cur && s->cur->commandCode == VDC_Read)
		return cs_finish(s, ERROR_HANDLE_EOF, s->off);
	return 0;
}

int vdi_cstream_end_volume(struct vdi_cstream *s)
{
	if (!s)
		return vdi_fail(VD_E_INVALID, "cannot end the medium: null stream");
	if (s->error)
		return cs_replay(s);
	if (s->direction != VDF_ReadMedia || !(s->features & VDF_Removable) || s->vol_end)
		return vdi_fail(VD_E_PROTOCOL, "cannot end medium %u of device '%s': %s", s->volume,
		                cs_name(s),
		                s->direction != VDF_ReadMedia    ? "not a restore stream"
		                : !(s->features & VDF_Removable) ? "VDF_Removable not offered"
		                                                 : "it has ended already");
	s->vol_end = 1;
	return cs_end_data(s);
}

int vdi_cstream_next_volume(struct vdi_cstream *s)
{
	if (!s)
		return vdi_fail(VD_E_INVALID, "cannot move to the next medium: null stream");
	if (s->error)
		return cs_replay(s);
	if (s->direction != VDF_WriteMedia || !s->vol_end || s->vol_next)
		return vdi_fail(VD_E_PROTOCOL, "cannot move device '%s' to the medium after %u: %s",
		                cs_name(s), s->volume,
		                s->direction != VDF_WriteMedia ? "not a backup stream"
		                                               : "this medium has not ended");
	s->vol_next = 1;
	return 0;
}

uint32_t vdi_cstream_volume(const struct vdi_cstream *s)
{
	return s ? s->volume : 0;
}

int vdi_cstream_volume_ended(const struct vdi_cstream *s)
{
	return s && s->vol_end && !s->vol_next;
}

/* ----------------------------------------------------------------- close */

/* Aborts the set so that the server fails too; returns rc. */
static int cs_abort(struct vdi_cstream *s, int rc)
{
	int arc = vdi_bset_signal_abort(s->set);

	vdi_log(VDI_LOG_INFO, "device '%s': stream aborted the set", cs_name(s));
	return rc ? rc : arc;
}

static int cs_truncated(struct vdi_cstream *s)
{
	uint32_t left = s->cur ? (uint32_t)s->cur->size - s->off : 0;

	cs_abort(s, 0);
	if (s->vol_end && !s->vol_next)
		return vdi_fail(VD_E_ABORT,
		                "stream on device '%s' closed at the end of medium %u after %llu "
		                "bytes: the backup goes on on the next medium, set aborted",
		                cs_name(s), s->volume, (unsigned long long)s->bytes);
	return vdi_fail(VD_E_ABORT,
	                "stream on device '%s' closed before its end: %u bytes at byte offset %llu "
	                "unread, set aborted",
	                cs_name(s), left, (unsigned long long)s->bytes);
}

/*
 * Backup, orderly close: every byte must have been taken.  Answers the
 * control commands still coming, acknowledges VDC_Complete and waits for
 * VD_E_CLOSE.  Any unread data means truncation: abort.
 */
static int cs_close_backup(struct vdi_cstream *s)
{
	int rc;

	for (;;) {
		rc = cs_ready(s, s->timeout);
		if (rc > 0 || (rc == 0 && s->cur && s->cur->commandCode != VDC_Complete))
			return cs_truncated(s);
		if (rc == VD_E_TIMEOUT && !s->complete_acked) {
			cs_abort(s, 0);
			return vdi_fail(VD_E_ABORT,
			                "stream on device '%s' closed before its end: no end of "
			                "stream within %u ms after %llu bytes, set aborted",
			                cs_name(s), s->timeout, (unsigned long long)s->bytes);
		}
		if (rc < 0)
			return rc;
		if (s->closed)
			return 0;
		rc = cs_finish(s, ERROR_SUCCESS, 0); /* VDC_Complete */
		if (rc)
			return rc;
		s->complete_acked = 1;
	}
}

/*
 * Restore, orderly close: the partly filled Read ends the data with
 * ERROR_HANDLE_EOF; later Reads get the filemarks still to report, then
 * ERROR_HANDLE_EOF and 0 bytes (see cs_read_room) while we wait for
 * VD_E_CLOSE.
 */
static int cs_close_restore(struct vdi_cstream *s)
{
	int rc = s->vol_end ? 0 : cs_end_data(s);

	if (rc) {
		cs_abort(s, 0);
		return cs_replay(s); /* the abort's call cleared the message */
	}
	s->writer_done = 1;
	rc = cs_ready(s, s->timeout);
	return rc > 0 ? vdi_fail(VD_E_UNEXPECTED, "device '%s': data command after end", cs_name(s))
	              : rc;
}

int vdi_cstream_end(struct vdi_cstream *s)
{
	int rc;

	if (!s)
		return vdi_fail(VD_E_INVALID, "cannot end stream: null stream");
	if (s->direction != VDF_WriteMedia)
		return vdi_fail(
			VD_E_PROTOCOL,
			"cannot end stream on device '%s' early: a restore stream ends at close",
			cs_name(s));
	if (s->error)
		return cs_replay(s);
	if (s->complete_acked || (s->closed && !s->cur))
		return 0;
	if (!s->cur || s->cur->commandCode != VDC_Complete)
		return vdi_fail(
			VD_E_PROTOCOL,
			"cannot end stream on device '%s': not at its end (byte offset %llu)",
			cs_name(s), (unsigned long long)s->bytes);
	rc = cs_finish(s, ERROR_SUCCESS, 0);
	if (rc)
		return rc;
	s->complete_acked = 1;
	return 0;
}

int vdi_cstream_close(struct vdi_cstream *s, int ok)
{
	int rc;

	if (!s)
		return vdi_fail(VD_E_INVALID, "cannot close stream: null stream");
	if (!ok) {
		rc = cs_abort(s, 0);
	} else if (s->error) {
		cs_abort(s, 0); /* a failed stream must fail the server too */
		rc = cs_replay(s);
	} else if (s->direction == VDF_ReadMedia) {
		rc = cs_close_restore(s);
	} else {
		rc = cs_close_backup(s);
	}
	if (s->wrapped)
		vdi_bdev_unwrap(s->dev);
	free(s->files);
	free(s->scratch);
	free(s);
	return rc;
}
