/* SPDX-License-Identifier: MIT */
/*
 * fuzz_shm.c - libFuzzer harness for the engine's validation of shared
 * memory written by a corrupt or malicious peer (D28, STYLE rule 7).
 *
 * Each input is a small program run against a real set: a client and a
 * server of libvdi in this process, over real POSIX shared memory, plus a
 * second mapping of the set's control region (/dev/shm/vdi.<inst>.fz,
 * layout in core/shm.h) through which the "peer" writes whatever the
 * input says, between the API calls.
 *
 *   byte 0   setup: bits 0-1 how far the set is brought before the
 *            program runs (0 created; 1 server configured; 2 both sides
 *            opened every device; 3 as 2 plus two commands sent per
 *            device), bit 2 two devices instead of one, bit 3 restore
 *            (VDF_ReadMedia) instead of backup, bit 4 the client asks for
 *            VDF_RequestComplete and the server grants it
 *   then     operations, one opcode byte each (see run_op):
 *            peer writes (raw bytes, a 32-bit field of a table of every
 *            header, ring and slot field, a fill), server steps, client
 *            steps, SendCommand, GetCommand (timeout 0 or 1 ms),
 *            CompleteCommand, GetBufferHandle/MapBufferHandle,
 *            vdi_set_info_get, vdi_client_info, OpenInSecondary, a rival
 *            Create of the same name, RequestBuffers after configuration
 *            (a second buffer area), CloseDevice
 *   then     the teardown of an orderly end: the completion agent on a
 *            thread, the client completes and drains everything, the
 *            server closes every device, both sides Close.
 *
 * Checked on every call, besides the sanitizers: the return code is one
 * the header documents for that call (a hostile peer may only cause
 * VD_E_ABORT, VD_E_PROTOCOL or VD_E_INVALID beyond a call's ordinary
 * codes); a command handed to the client is well formed (code 1..19,
 * data commands with a block-multiple size and a buffer whose every byte
 * can be written, the others with no buffer) and is not handed out
 * twice; a mapped buffer handle points at writable memory; the set info
 * strings are terminated; every completion routine runs exactly once
 * (synchronously on a failed SendCommand, with the code of D8), never
 * with more bytes than a data command had, and all have run once the
 * server's Close returned; the agent returns once the set is aborted;
 * after both sides closed, no file descriptor and no mapping of the set
 * is left in this process.
 * While the peer has written nothing, stronger rules hold: every setup
 * call succeeds, the client receives exactly the commands sent, in
 * order, with the server's bytes in the buffer, a handle GetBufferHandle
 * just gave out maps to that buffer (D30), and the agent returns without
 * an abort at the orderly end.
 *
 * Speed: one iteration creates and removes one set (two or three
 * shared-memory objects) and starts one agent thread: 1-2 ms, 500-700
 * runs/s on one core.  A set is not reused across iterations on purpose:
 * a forged write leaves state behind in both halves (private ring
 * indexes, the sticky abort), so a reused set would make every input
 * depend on the ones before it and no crash would replay alone.  Waits
 * are polls (timeout 0) or 1 ms, except the agent's, which is bounded;
 * the teardown meets the agent at the same point every time (see
 * agent_start), so an input replays the same way.
 *
 * After every peer write the set lock word is cleared if it names a live
 * process: such a lock makes every locking call wait its documented 2 s
 * before VD_E_PROTOCOL, which is correct but would only slow the fuzzer
 * down (a dead owner stays: the engine must take the lock over).
 *
 * Names: the instance is $VDI_FUZZ_INSTANCE or "FZ<pid>", so sets of
 * concurrent runs never meet.  Everything is unlinked after each
 * iteration; a reaper process removes what a crashed run left behind.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"
#include "vdi.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                             \
	do {                                                                  \
		fprintf(stderr, "fuzz_shm: contract violated: " __VA_ARGS__); \
		fprintf(stderr, " [last error: %s]\n", vdi_last_error());     \
		abort();                                                      \
	} while (0)

#define SET_NAME "fz"
#define MAX_DEV  2
#define NBUF     4 /* buffers allocated at configuration */
#define NBUF_MAX 6 /* and after a later RequestBuffers */
#define BUF_SIZE 65536u
#define MAX_CMDS 96
#define MAX_OPS  160
#define HELD_MAX VDI_QUEUE_DEPTH

/* ---------------------------------------------------------------------
 * Return codes allowed per call.
 */
enum {
	A_OK = 1 << 0,
	A_TIMEOUT = 1 << 1,
	A_ABORT = 1 << 2,
	A_INVALID = 1 << 3,
	A_PROTOCOL = 1 << 4,
	A_OPEN = 1 << 5,
	A_CLOSE = 1 << 6,
	A_BUSY = 1 << 7,
	A_QFULL = 1 << 8,
	A_MEMORY = 1 << 9,
	A_SECURITY = 1 << 10,
};
#define A_HOSTILE (A_ABORT | A_INVALID | A_PROTOCOL)

static unsigned rc_bit(int rc)
{
	switch (rc) {
	case 0: return A_OK;
	case VD_E_TIMEOUT: return A_TIMEOUT;
	case VD_E_ABORT: return A_ABORT;
	case VD_E_INVALID: return A_INVALID;
	case VD_E_PROTOCOL: return A_PROTOCOL;
	case VD_E_OPEN: return A_OPEN;
	case VD_E_CLOSE: return A_CLOSE;
	case VD_E_BUSY: return A_BUSY;
	case VD_E_QUEUE_FULL: return A_QFULL;
	case VD_E_MEMORY: return A_MEMORY;
	case VD_E_SECURITY: return A_SECURITY;
	default: return 1u << 31;
	}
}

static int g_verbose; /* VDI_FUZZ_VERBOSE=1: every call and its code */

static int check_rc(int rc, unsigned allowed, const char *call)
{
	if (g_verbose)
		fprintf(stderr, "  %s: %s%s%s\n", call, vdi_strerror(rc), rc ? " - " : "",
		        rc ? vdi_last_error() : "");
	if (!(rc_bit(rc) & allowed))
		FAIL("%s returned %s, not a documented code here", call, vdi_strerror(rc));
	if (rc && strnlen(vdi_last_error(), 4096) == 4096)
		FAIL("%s: vdi_last_error() not terminated", call);
	return rc;
}

/* ---------------------------------------------------------------------
 * Process-wide state.
 */
static char g_inst[VDI_MAX_INSTANCE + 1];
static char g_ctl[300];     /* shm name of the control region */
static char g_area[2][300]; /* and of the buffer areas it can have */

/* Also called in the reaper child: no allocation, no formatting. */
static void unlink_all(void)
{
	shm_unlink(g_ctl);
	shm_unlink(g_area[0]);
	shm_unlink(g_area[1]);
}

/* A child that outlives us by a moment: when our end of the pipe closes
 * (exit, crash, SIGKILL) it removes our set. */
static void start_reaper(void)
{
	int p[2];
	pid_t pid;
	char c;

	if (pipe(p) != 0)
		return;
	pid = fork();
	if (pid == 0) {
		close(p[1]);
		setsid(); /* not killed with our process group */
		while (read(p[0], &c, 1) < 0 && errno == EINTR)
			;
		unlink_all();
		_exit(0);
	}
	close(p[0]);
	if (pid < 0)
		close(p[1]);
	/* p[1] stays open for the life of this process. */
}

static void quiet_sink(void *ctx, enum vdi_log_level level, const char *msg)
{
	(void)ctx;
	(void)level;
	(void)msg;
}

/* Offsets of every 32-bit word of the layout worth aiming at. */
static uint32_t g_fields[512];
static unsigned g_nfields;

static void add_field(size_t off)
{
	if (g_nfields < sizeof(g_fields) / sizeof(g_fields[0]))
		g_fields[g_nfields++] = (uint32_t)off;
}

#define HF(f) add_field(offsetof(struct vdi_shm_header, f))

static void build_fields(void)
{
	size_t hs = sizeof(struct vdi_shm_header), ds = sizeof(struct vdi_shm_device);

	HF(magic);
	HF(version);
	HF(header_size);
	HF(device_size);
	HF(total_size);
	add_field(offsetof(struct vdi_shm_header, total_size) + 4);
	HF(set_id);
	HF(instance);
	HF(name);
	HF(mode);
	HF(gid);
	for (unsigned i = 0; i < sizeof(VDConfig) / 4; i++) {
		add_field(offsetof(struct vdi_shm_header, client_cfg) + 4 * i);
		add_field(offsetof(struct vdi_shm_header, final_cfg) + 4 * i);
	}
	HF(phase);
	HF(abort);
	HF(reason_ready);
	HF(config_seq);
	HF(config_waiters);
	HF(done_seq);
	HF(done_waiters);
	HF(area_count);
	HF(client_closed);
	HF(server_closed);
	HF(creator.pid);
	HF(creator.start_time);
	HF(server.pid);
	HF(server.start_time);
	HF(areas[0].size);
	add_field(offsetof(struct vdi_shm_header, areas[0].size) + 4);
	HF(areas[1].size);
	HF(abort_reason);
	for (unsigned d = 0; d < MAX_DEV; d++) {
		size_t b = hs + d * ds;

#define DF(f) add_field(b + offsetof(struct vdi_shm_device, f))
		DF(name);
		DF(named);
		DF(server_state);
		DF(client_state);
		DF(client.pid);
		DF(client.start_time);
		DF(cmd_seq);
		DF(cmd_waiters);
		DF(cmd.head);
		DF(cmd.tail);
		DF(done.head);
		DF(done.tail);
		for (unsigned k = 0; k < 4; k++) {
			DF(cmd.entries[k]);
			DF(done.entries[k]);
		}
		DF(cmd.entries[VDI_QUEUE_DEPTH - 1]);
		DF(done.entries[VDI_QUEUE_DEPTH - 1]);
		for (unsigned k = 0; k < 4; k++) {
			DF(slots[k].command_code);
			DF(slots[k].size);
			DF(slots[k].position);
			DF(slots[k].buffer_handle);
			DF(slots[k].completion_code);
			DF(slots[k].bytes_transferred);
			DF(slots[k].out_position);
		}
		for (unsigned k = VDI_QUEUE_DEPTH - 3; k < VDI_QUEUE_DEPTH; k++) {
			DF(slots[k].command_code);
			DF(slots[k].size);
			DF(slots[k].buffer_handle);
		}
#undef DF
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *env = getenv("VDI_FUZZ_INSTANCE");

	(void)argc;
	(void)argv;
	if (env && *env && strlen(env) <= VDI_MAX_INSTANCE)
		snprintf(g_inst, sizeof(g_inst), "%s", env);
	else
		snprintf(g_inst, sizeof(g_inst), "FZ%d", (int)getpid());
	snprintf(g_ctl, sizeof(g_ctl), "/vdi.%s.%s", g_inst, SET_NAME);
	for (int k = 0; k < 2; k++)
		snprintf(g_area[k], sizeof(g_area[k]), "/vdi-b%d.%s.%s", k, g_inst, SET_NAME);
	vdi_log_set_sink(quiet_sink, NULL);
	build_fields();
	g_verbose = getenv("VDI_FUZZ_VERBOSE") != NULL;
	if (g_verbose)
		fprintf(stderr, "fuzz_shm: instance %s, %u fields\n", g_inst, g_nfields);
	start_reaper();
	atexit(unlink_all);
	return 0;
}

/* ---------------------------------------------------------------------
 * One iteration.
 */
struct cmdrec {
	VDS_Command cmd; /* first: the routine finds the record */
	int calls;       /* routine runs (atomic) */
	int busy_buf;    /* buffer index marked busy, or -1 */
	uint32_t seq;    /* order of sending on its device */
};

struct run {
	const uint8_t *in;
	size_t len, pos;
	int peer_wrote; /* the peer changed shared memory */

	uint32_t ndev, server_features;
	struct vdi_client *c;
	struct vdi_server *s;
	int created, sopen, sconfigured, cconfigured;
	VDConfig ccfg; /* from the client's GetConfiguration */
	struct vdi_client_device *cd[MAX_DEV];
	struct vdi_server_device *sd[MAX_DEV];
	int sclosed[MAX_DEV];
	int csaw_close[MAX_DEV]; /* the client's GetCommand returned VD_E_CLOSE */
	uint8_t *bufs[NBUF_MAX];
	unsigned nbufs;
	int buf_busy[NBUF_MAX]; /* atomic: set by SendCommand, cleared by routine */
	int extra_area;         /* the later RequestBuffers was made */

	struct cmdrec cmds[MAX_CMDS];
	unsigned ncmds;
	unsigned sent_per_dev[MAX_DEV];
	unsigned seen_per_dev[MAX_DEV]; /* commands the client fetched */
	struct cmdrec *sent_order[MAX_DEV][MAX_CMDS];

	VDC_Command *held[MAX_DEV][HELD_MAX];
	unsigned nheld[MAX_DEV];

	struct vdi_shm_header *raw;
	size_t raw_size;

	pthread_t agent;
	int agent_started, agent_returned, agent_rc;
};

static uint8_t in_u8(struct run *r)
{
	return r->pos < r->len ? r->in[r->pos++] : 0;
}

static uint16_t in_u16(struct run *r)
{
	uint16_t lo = in_u8(r);

	return (uint16_t)(lo | in_u8(r) << 8);
}

static uint32_t in_u32(struct run *r)
{
	uint32_t lo = in_u16(r);

	return lo | (uint32_t)in_u16(r) << 16;
}

/* Signalled by every completion routine and by the agent's return, so
 * the teardown waits for them without polling. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;

static void signal_progress(void)
{
	pthread_mutex_lock(&g_lock);
	pthread_cond_broadcast(&g_cond);
	pthread_mutex_unlock(&g_lock);
}

/* The completion routine of every command the harness sends. */
static void routine(VDS_Command *cmd)
{
	struct cmdrec *rec = (struct cmdrec *)cmd;
	struct run *r = cmd->completionContext;

	if (__atomic_add_fetch(&rec->calls, 1, __ATOMIC_SEQ_CST) != 1)
		FAIL("completion routine of command %u ran twice", rec->seq);
	if ((cmd->commandCode == VDC_Read || cmd->commandCode == VDC_Write) &&
	    cmd->bytesTransferred > cmd->size)
		FAIL("data command of %u bytes completed with %u bytes", cmd->size,
		     cmd->bytesTransferred);
	if (rec->busy_buf >= 0)
		__atomic_store_n(&r->buf_busy[rec->busy_buf], 0, __ATOMIC_SEQ_CST);
	signal_progress();
}

/* ------------------------------------------------------------ peer */

static int raw_map(struct run *r)
{
	char path[320];
	struct stat st;
	void *p;
	int fd;

	snprintf(path, sizeof(path), "/dev/shm%s", g_ctl);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof(struct vdi_shm_header)) {
		close(fd);
		return -1;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return -1;
	r->raw = p;
	r->raw_size = (size_t)st.st_size;
	return 0;
}

static void peer_done(struct run *r)
{
	uint32_t owner = __atomic_load_n(&r->raw->lock, __ATOMIC_SEQ_CST);

	if (g_verbose)
		fprintf(stderr, "  peer write\n");
	/* See the top: the set lock may name a dead process (the engine
	 * takes it over), never a live one (a 2 s wait). */
	if (owner && !(kill((pid_t)owner, 0) < 0 && errno == ESRCH))
		__atomic_store_n(&r->raw->lock, 0u, __ATOMIC_SEQ_CST);
	r->peer_wrote = 1;
}

static const uint32_t interesting[] = {
	0,          1,          2,          3,          4,          5,          7,
	19,         20,         38,         63,         64,         65,         127,
	128,        255,        256,        257,        511,        512,        513,
	1000,       4096,       65535,      65536,      65537,      0x01000000, 0x01000001,
	0x02000000, 0x40ffffff, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
};

static void peer_raw(struct run *r)
{
	size_t off = in_u16(r) % r->raw_size, n = (size_t)(in_u8(r) % 32) + 1;

	if (g_verbose)
		fprintf(stderr, "  peer: %zu raw bytes at offset %zu\n", n, off);
	for (size_t i = 0; i < n && off + i < r->raw_size; i++)
		((uint8_t *)r->raw)[off + i] = in_u8(r);
	peer_done(r);
}

static void peer_field(struct run *r, int pick_interesting)
{
	uint32_t off = g_fields[in_u8(r) % g_nfields];
	uint32_t v =
		pick_interesting ? interesting[in_u8(r) % (sizeof(interesting) / 4)] : in_u32(r);

	if (off + 4 > r->raw_size)
		return;
	if (g_verbose)
		fprintf(stderr, "  peer: u32 at offset %u := 0x%08x\n", off, v);
	__atomic_store_n((uint32_t *)((char *)r->raw + off), v, __ATOMIC_SEQ_CST);
	peer_done(r);
}

static void peer_fill(struct run *r)
{
	size_t off = in_u16(r) % r->raw_size, n = (size_t)in_u16(r) % 16384 + 1;
	uint8_t v = in_u8(r);

	if (n > r->raw_size - off)
		n = r->raw_size - off;
	if (g_verbose)
		fprintf(stderr, "  peer: fill %zu bytes at offset %zu with 0x%02x\n", n, off, v);
	memset((char *)r->raw + off, v, n);
	peer_done(r);
}

/* ------------------------------------------------------------ server */

static void server_step(struct run *r)
{
	int rc;

	if (!r->s)
		return;
	if (!r->sopen) {
		rc = check_rc(vdi_server_open(r->s, g_inst, SET_NAME), A_OK | A_HOSTILE | A_BUSY,
		              "server Open");
		if (!rc)
			r->sopen = 1;
		else if (!r->peer_wrote)
			FAIL("server Open failed with no peer write: %s", vdi_strerror(rc));
		return;
	}
	if (!r->sconfigured) {
		VDConfig cfg;

		r->sconfigured = -1; /* one attempt */
		rc = check_rc(vdi_server_get_configuration(r->s, &cfg), A_OK | A_HOSTILE,
		              "server GetConfiguration");
		if (!rc)
			rc = check_rc(vdi_server_begin_configuration(r->s, r->server_features, 512,
			                                             0, BUF_SIZE, 0),
			              A_OK | A_HOSTILE, "server BeginConfiguration");
		if (!rc)
			rc = check_rc(vdi_server_request_buffers(r->s, BUF_SIZE, 0, NBUF),
			              A_OK | A_HOSTILE | A_MEMORY, "server RequestBuffers");
		if (!rc)
			rc = check_rc(vdi_server_end_configuration(r->s),
			              A_OK | A_HOSTILE | A_MEMORY | A_SECURITY | A_BUSY,
			              "server EndConfiguration");
		for (int i = 0; !rc && i < NBUF; i++) {
			rc = check_rc(vdi_server_allocate_buffer(r->s, &r->bufs[i], BUF_SIZE, 0),
			              A_OK | A_HOSTILE, "server AllocateBuffer");
			r->nbufs += !rc;
		}
		if (!rc)
			r->sconfigured = 1;
		else if (!r->peer_wrote)
			FAIL("server configuration failed with no peer write: %s",
			     vdi_strerror(rc));
		return;
	}
	if (r->sconfigured < 0)
		return;
	for (uint32_t i = 0; i < r->ndev; i++) {
		if (r->sd[i])
			continue;
		rc = check_rc(vdi_server_open_device(r->s, NULL, &r->sd[i]),
		              A_OK | A_HOSTILE | A_OPEN, "server OpenDevice");
		if (rc) {
			if (r->sd[i])
				FAIL("server OpenDevice failed but handed out a device");
			if (!r->peer_wrote)
				FAIL("server OpenDevice failed with no peer write: %s",
				     vdi_strerror(rc));
		}
		return;
	}
}

static int free_buffer(struct run *r, unsigned pick)
{
	for (unsigned k = 0; k < r->nbufs; k++) {
		unsigned b = (pick + k) % r->nbufs;

		if (!__atomic_load_n(&r->buf_busy[b], __ATOMIC_SEQ_CST))
			return (int)b;
	}
	return -1;
}

static uint32_t failure_code(int rc)
{
	switch (rc) {
	case VD_E_QUEUE_FULL: return ERROR_NO_SYSTEM_RESOURCES;
	case VD_E_ABORT: return ERROR_OPERATION_ABORTED;
	case VD_E_INVALID: return ERROR_INVALID_PARAMETER;
	default: return ERROR_INVALID_HANDLE;
	}
}

/* Sends one command: op chooses a data command on a free buffer (size
 * and buffer from the input, sometimes wrong) or another code 0..20. */
static void server_send(struct run *r, uint32_t dev, uint8_t kind, uint8_t arg)
{
	struct cmdrec *rec;
	VDS_Command *cmd;
	int rc, b = -1, want_ok = 1;

	dev %= r->ndev;
	if (!r->sd[dev] || r->ncmds == MAX_CMDS)
		return;
	rec = &r->cmds[r->ncmds++];
	memset(rec, 0, sizeof(*rec));
	rec->busy_buf = -1;
	cmd = &rec->cmd;
	cmd->completionRoutine = routine;
	cmd->completionContext = r;
	cmd->inPosition = (uint64_t)r->sent_per_dev[dev] * 4096;
	if (kind % 4 == 0) {
		cmd->commandCode = (r->server_features & VDF_ReadMedia) ? VDC_Read : VDC_Write;
		b = free_buffer(r, arg);
		if (b < 0) {
			b = arg % NBUF_MAX; /* busy or none: must be refused */
			want_ok = 0;
		}
		cmd->buffer = r->bufs[b];
		cmd->size = (uint32_t)(arg % 128 + 1) * 512;
		if (kind & 0x80) { /* malformed on purpose */
			uint8_t skew;

			cmd->size = in_u32(r);
			skew = in_u8(r);
			if (cmd->buffer) /* (a missing buffer stays NULL) */
				cmd->buffer += skew;
		}
		if (cmd->size == 0 || cmd->size % 512 || cmd->size > BUF_SIZE || !r->bufs[b] ||
		    cmd->buffer != r->bufs[b])
			want_ok = 0;
		if (want_ok)
			memset(cmd->buffer, (int)(r->ncmds & 0xff), 512);
	} else {
		cmd->commandCode = (uint32_t)(kind % 21);
		cmd->size = arg;
		if (cmd->commandCode < 1 || cmd->commandCode > 19)
			want_ok = 0;
		else if (cmd->commandCode == VDC_Read || cmd->commandCode == VDC_Write)
			want_ok = 0; /* no buffer */
	}
	rc = check_rc(vdi_server_send_command(r->sd[dev], cmd), A_OK | A_HOSTILE | A_QFULL,
	              "server SendCommand");
	if (rc) {
		if (__atomic_load_n(&rec->calls, __ATOMIC_SEQ_CST) != 1)
			FAIL("SendCommand failed (%s) and its routine ran %d times",
			     vdi_strerror(rc), rec->calls);
		if (cmd->completionCode != failure_code(rc))
			FAIL("SendCommand failed (%s) with completion code %u", vdi_strerror(rc),
			     cmd->completionCode);
		if (!r->peer_wrote && want_ok && !r->sclosed[dev])
			FAIL("SendCommand of a good command failed with no peer write: %s",
			     vdi_strerror(rc));
		return;
	}
	if (!want_ok)
		FAIL("SendCommand accepted a bad command (code %u, size %u, buffer %s)",
		     cmd->commandCode, cmd->size,
		     b >= 0 && __atomic_load_n(&r->buf_busy[b], __ATOMIC_SEQ_CST) ? "busy" : "?");
	if (b >= 0) {
		__atomic_store_n(&r->buf_busy[b], 1, __ATOMIC_SEQ_CST);
		rec->busy_buf = b;
	}
	rec->seq = r->sent_per_dev[dev];
	r->sent_order[dev][r->sent_per_dev[dev]++] = rec;
}

static void server_close_device(struct run *r, uint32_t dev)
{
	int rc;

	dev %= r->ndev;
	if (!r->sd[dev])
		return;
	rc = check_rc(vdi_server_close_device(r->sd[dev]), A_OK | A_ABORT | A_CLOSE | A_PROTOCOL,
	              "server CloseDevice");
	if (rc == VD_E_CLOSE && !r->sclosed[dev])
		FAIL("CloseDevice: first close of a device said already closed");
	if (!rc)
		r->sclosed[dev] = 1;
}

/* ------------------------------------------------------------ client */

static int server_terminated(const struct run *r);

/* The client object is Normally Terminated (D17): it opened a device,
 * the server closed every device, and each device the client opened
 * returned VD_E_CLOSE and holds no command. */
static int client_terminated(const struct run *r)
{
	int any = 0;

	for (uint32_t d = 0; d < r->ndev; d++) {
		if (r->cd[d] && (!r->csaw_close[d] || r->nheld[d]))
			return 0;
		any |= r->cd[d] != NULL;
	}
	return any && server_terminated(r);
}

static void client_step(struct run *r)
{
	int rc, nt;

	if (!r->created)
		return;
	if (!r->cconfigured) {
		rc = check_rc(vdi_client_get_configuration(r->c, 0, &r->ccfg),
		              A_OK | A_TIMEOUT | A_ABORT | A_PROTOCOL, "client GetConfiguration");
		if (!rc) {
			r->cconfigured = 1;
			if (r->ccfg.blockSize < 512 || r->ccfg.maxTransferSize < r->ccfg.blockSize)
				FAIL("client GetConfiguration accepted block %u, max transfer %u",
				     r->ccfg.blockSize, r->ccfg.maxTransferSize);
		} else if (!r->peer_wrote && r->sconfigured > 0) {
			FAIL("client GetConfiguration failed after EndConfiguration with no peer write: %s",
			     vdi_strerror(rc));
		}
		return;
	}
	for (uint32_t i = 0; i < r->ndev; i++) {
		char name[32];

		if (r->cd[i])
			continue;
		snprintf(name, sizeof(name), i ? "%s%u" : "%s", SET_NAME, i);
		nt = client_terminated(r);
		rc = check_rc(vdi_client_open_device(r->c, name, &r->cd[i]),
		              A_OK | A_HOSTILE | A_OPEN, "client OpenDevice");
		if (rc && r->cd[i])
			FAIL("client OpenDevice failed but handed out a device");
		/* Normally Terminated: the table's PROTOCOL cell. */
		if (!r->peer_wrote && (nt ? rc != VD_E_PROTOCOL : rc != 0))
			FAIL("client OpenDevice '%s' %s: %s with no peer write", name,
			     nt ? "after normal termination" : "before normal termination",
			     vdi_strerror(rc));
		return;
	}
}

/* A command the client received: well formed, not already held, and
 * (while the peer wrote nothing) the next one the server sent. */
static void check_fetched(struct run *r, uint32_t dev, VDC_Command *cmd)
{
	int data = cmd->commandCode == VDC_Read || cmd->commandCode == VDC_Write;

	if (cmd->commandCode < VDC_MIN_CODE || cmd->commandCode > VDC_MAX_CODE)
		FAIL("client got command code %d", cmd->commandCode);
	if (data) {
		if (cmd->size <= 0 || (uint32_t)cmd->size > r->ccfg.maxTransferSize ||
		    (uint32_t)cmd->size % r->ccfg.blockSize)
			FAIL("client got a data command of %d bytes", cmd->size);
		if (!cmd->buffer)
			FAIL("client got a data command without a buffer");
		/* Every byte must be mapped and writable (SIGSEGV otherwise). */
		for (int32_t i = 0; i < cmd->size; i += 4096)
			((volatile uint8_t *)cmd->buffer)[i] ^= 0;
		((volatile uint8_t *)cmd->buffer)[cmd->size - 1] ^= 0;
	} else if (cmd->buffer) {
		FAIL("client got a buffer with command code %d", cmd->commandCode);
	}
	for (uint32_t d = 0; d < r->ndev; d++)
		for (unsigned k = 0; k < r->nheld[d]; k++)
			if (r->held[d][k] == cmd)
				FAIL("client got a command it already holds");
	if (!r->peer_wrote) {
		unsigned n = r->seen_per_dev[dev];
		struct cmdrec *rec = n < r->sent_per_dev[dev] ? r->sent_order[dev][n] : NULL;

		if (!rec)
			FAIL("client got a command the server never sent");
		if ((uint32_t)cmd->commandCode != rec->cmd.commandCode ||
		    (uint64_t)cmd->position != rec->cmd.inPosition ||
		    (data && (uint32_t)cmd->size != rec->cmd.size))
			FAIL("client got command %d/%d/%lld, server sent %u/%u/%llu",
			     cmd->commandCode, cmd->size, (long long)cmd->position,
			     rec->cmd.commandCode, rec->cmd.size,
			     (unsigned long long)rec->cmd.inPosition);
		if (data && memcmp(cmd->buffer, rec->cmd.buffer, 512) != 0)
			FAIL("client buffer does not hold the server's bytes");
	}
	r->seen_per_dev[dev]++;
}

static int client_get_wait(struct run *r, uint32_t dev, uint32_t timeout_ms)
{
	VDC_Command *cmd = NULL;
	int rc;

	dev %= r->ndev;
	if (!r->cd[dev])
		return VD_E_PROTOCOL;
	rc = check_rc(vdi_client_get_command(r->cd[dev], timeout_ms, &cmd),
	              A_OK | A_TIMEOUT | A_CLOSE | A_ABORT | A_PROTOCOL, "client GetCommand");
	if (rc) {
		if (cmd)
			FAIL("GetCommand failed but set *cmd");
		if (rc == VD_E_CLOSE)
			r->csaw_close[dev] = 1;
		return rc;
	}
	if (!cmd)
		FAIL("GetCommand succeeded with no command");
	check_fetched(r, dev, cmd);
	if (r->nheld[dev] == HELD_MAX)
		FAIL("client holds more than %d commands", HELD_MAX);
	r->held[dev][r->nheld[dev]++] = cmd;
	return 0;
}

static int client_get(struct run *r, uint32_t dev)
{
	return client_get_wait(r, dev, 0);
}

static void client_complete(struct run *r, uint32_t dev, unsigned which, uint32_t code,
                            uint32_t bytes, uint64_t pos)
{
	VDC_Command *cmd;
	int rc, data;

	dev %= r->ndev;
	if (!r->cd[dev] || !r->nheld[dev])
		return;
	which %= r->nheld[dev];
	cmd = r->held[dev][which];
	data = cmd->commandCode == VDC_Read || cmd->commandCode == VDC_Write;
	rc = check_rc(vdi_client_complete_command(r->cd[dev], cmd, code, bytes, pos),
	              A_OK | A_HOSTILE, "client CompleteCommand");
	if (!rc && data && bytes > (uint32_t)cmd->size)
		FAIL("CompleteCommand accepted %u bytes for a %d-byte command", bytes, cmd->size);
	if (rc == VD_E_INVALID && (!data || bytes <= (uint32_t)cmd->size) && !r->peer_wrote)
		FAIL("CompleteCommand refused a good completion with no peer write");
	if (rc == VD_E_INVALID && data && bytes > (uint32_t)cmd->size)
		return; /* still held: refused, nothing changed */
	/* Completed, or dropped by the state (abort): no longer held. */
	r->held[dev][which] = r->held[dev][--r->nheld[dev]];
}

static void client_buffers(struct run *r, uint8_t sel, uint32_t handle)
{
	const uint8_t *given = NULL;
	uint8_t *p = NULL;
	uint32_t h = 0;
	int rc;

	if (!r->created)
		return;
	if (sel & 1) {
		uint32_t dev = (sel >> 1) % r->ndev;
		const uint8_t *b = r->nheld[dev] ? r->held[dev][0]->buffer : r->bufs[0];

		rc = check_rc(vdi_client_get_buffer_handle(r->c, b, &h), A_OK | A_HOSTILE,
		              "client GetBufferHandle");
		if (!rc && (!b || !h))
			FAIL("GetBufferHandle gave handle %u for %p", h, (const void *)b);
		if (!rc) {
			handle = h;
			given = b;
		}
	}
	rc = check_rc(vdi_client_map_buffer_handle(r->c, handle, &p), A_OK | A_HOSTILE,
	              "client MapBufferHandle");
	if (!rc) {
		if (!p)
			FAIL("MapBufferHandle succeeded with NULL");
		((volatile uint8_t *)p)[0] ^= 0;
	}
	/* D30: the handle just given out maps to the same buffer. */
	if (given && !r->peer_wrote && (rc || p != given))
		FAIL("MapBufferHandle of the handle 0x%08x just given out = %s, %p", h,
		     vdi_strerror(rc), (void *)p);
}

static void check_info(const struct vdi_set_info *info, const char *call)
{
	if (strnlen(info->instance, sizeof(info->instance)) == sizeof(info->instance) ||
	    strnlen(info->name, sizeof(info->name)) == sizeof(info->name) ||
	    strnlen(info->abort_reason, sizeof(info->abort_reason)) == sizeof(info->abort_reason))
		FAIL("%s: unterminated string", call);
	if (info->state < VDI_SET_CREATED || info->state > VDI_SET_CORRUPT)
		FAIL("%s: state %d is none an outsider can see", call, (int)info->state);
	if (info->device_count < 1 || info->device_count > VDI_MAX_DEVICES)
		FAIL("%s: %u devices", call, info->device_count);
}

/* The server closed every device: Normally Terminated. */
static int server_terminated(const struct run *r)
{
	for (uint32_t d = 0; d < r->ndev; d++)
		if (!r->sd[d] || !r->sclosed[d])
			return 0;
	return 1;
}

/* RequestBuffers after the configuration ended: a second buffer area,
 * whose size and count the peer can then forge. */
static void server_more_buffers(struct run *r)
{
	int rc;

	if (r->sconfigured <= 0 || r->extra_area)
		return;
	r->extra_area = 1;
	rc = check_rc(vdi_server_request_buffers(r->s, BUF_SIZE, 0, NBUF_MAX - NBUF),
	              A_OK | A_HOSTILE | A_MEMORY | A_SECURITY | A_BUSY,
	              "server RequestBuffers (area 1)");
	for (unsigned i = NBUF; !rc && i < NBUF_MAX; i++) {
		rc = check_rc(vdi_server_allocate_buffer(r->s, &r->bufs[i], BUF_SIZE, 0),
		              A_OK | A_HOSTILE, "server AllocateBuffer (area 1)");
		if (!rc)
			r->nbufs = i + 1;
	}
	if (rc && !r->peer_wrote && !server_terminated(r))
		FAIL("RequestBuffers after configuration failed with no peer write: %s",
		     vdi_strerror(rc));
}

/* Another client Creates the same name: the engine must tell the live
 * set (VD_E_BUSY) from a stale one by reading the peer-written header. */
static void rival_create(struct run *r)
{
	struct vdi_client *c;
	VDConfig cfg;
	int rc;

	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = 1;
	if (vdi_client_new(&c) != 0)
		abort();
	rc = check_rc(vdi_client_create_ex(c, g_inst, SET_NAME, &cfg), A_OK | A_BUSY | A_HOSTILE,
	              "rival client Create");
	if (rc != VD_E_BUSY && !r->peer_wrote)
		FAIL("Create over a live set returned %s", vdi_strerror(rc));
	if (!rc)
		check_rc(vdi_client_close(c), A_OK, "rival client Close");
	vdi_client_free(c);
}

static void inspect(struct run *r, uint8_t sel)
{
	struct vdi_set_info info;
	int rc;

	rc = check_rc(vdi_set_info_get(g_inst, SET_NAME, &info), A_OK | A_INVALID | A_PROTOCOL,
	              "vdi_set_info_get");
	if (!rc)
		check_info(&info, "vdi_set_info_get");
	if (r->created) {
		rc = check_rc(vdi_client_info(r->c, &info), A_OK | A_PROTOCOL, "vdi_client_info");
		if (!rc)
			check_info(&info, "vdi_client_info");
	}
	if (sel & 1) {
		struct vdi_client *sec;
		VDConfig cfg;

		if (vdi_client_new(&sec) != 0)
			abort();
		rc = check_rc(vdi_client_open_in_secondary_ex(sec, g_inst, SET_NAME),
		              A_OK | A_HOSTILE, "client OpenInSecondary");
		if (!rc)
			check_rc(vdi_client_get_configuration(sec, 0, &cfg), A_OK | A_HOSTILE,
			         "secondary GetConfiguration");
		if (!rc)
			check_rc(vdi_client_close(sec), A_OK | A_OPEN | A_PROTOCOL,
			         "secondary Close");
		vdi_client_free(sec);
	}
	if (sel & 2)
		rival_create(r);
	if (sel & 4)
		server_more_buffers(r);
}

/* ------------------------------------------------------------ program */

static void run_op(struct run *r)
{
	uint8_t op = in_u8(r), a, b;

	switch (op % 14) {
	case 0: peer_raw(r); break;
	case 1: peer_field(r, 0); break;
	case 2: peer_field(r, 1); break;
	case 3: peer_fill(r); break;
	case 4: server_step(r); break;
	case 5: client_step(r); break;
	case 6:
		a = in_u8(r);
		b = in_u8(r);
		server_send(r, a >> 6, a, b);
		break;
	case 7: /* bit 7: wait 1 ms (a wait slice) instead of polling */
		client_get_wait(r, op >> 4, op >> 7);
		break;
	case 8: {
		static const uint32_t codes[] = { ERROR_SUCCESS,       ERROR_HANDLE_EOF,
			                          ERROR_NOT_SUPPORTED, ERROR_OPERATION_ABORTED,
			                          ERROR_DISK_FULL,     0xffffffffu };
		uint32_t dev = op >> 4;
		unsigned which = in_u8(r);
		uint32_t code = codes[in_u8(r) % 6];
		uint32_t bytes = (op & 0x80) ? in_u32(r) : (uint32_t)in_u8(r) * 512;

		client_complete(r, dev, which, code, bytes, in_u32(r));
		break;
	}
	case 9: client_buffers(r, op >> 4, in_u32(r)); break;
	case 10: inspect(r, op >> 4); break;
	case 11: server_close_device(r, op >> 4); break;
	case 12: /* the client drains a device */
		for (int i = 0; i < 8 && client_get(r, op >> 4) == 0; i++)
			;
		break;
	case 13: /* the client completes everything it holds, successfully */
		for (uint32_t d = 0; d < r->ndev; d++)
			while (r->nheld[d]) {
				VDC_Command *c = r->held[d][0];

				client_complete(r, d, 0, ERROR_SUCCESS,
				                c->commandCode <= VDC_Write ? (uint32_t)c->size : 0,
				                0);
			}
		break;
	}
}

static void setup(struct run *r, uint8_t flags)
{
	VDConfig cfg;
	int rc;

	r->ndev = (flags & 4) ? 2 : 1;
	r->server_features = (flags & 8) ? VDF_ReadMedia : VDF_WriteMedia;
	memset(&cfg, 0, sizeof(cfg));
	cfg.deviceCount = r->ndev;
	if (flags & 16) {
		cfg.features = VDF_RequestComplete;
		r->server_features |= VDF_CompleteEnabled;
	}
	if (vdi_client_new(&r->c) != 0 || vdi_server_new(&r->s) != 0)
		FAIL("cannot allocate the objects");
	rc = vdi_client_create_ex(r->c, g_inst, SET_NAME, &cfg);
	if (rc == VD_E_BUSY) { /* left over by an iteration that crashed */
		unlink_all();
		rc = vdi_client_create_ex(r->c, g_inst, SET_NAME, &cfg);
	}
	if (rc)
		FAIL("client Create: %s", vdi_strerror(rc));
	r->created = 1;
	if (raw_map(r) != 0)
		FAIL("cannot map %s: %s", g_ctl, strerror(errno));
	if ((flags & 3) >= 1) {
		server_step(r); /* Open */
		server_step(r); /* configuration and buffers */
	}
	if ((flags & 3) >= 2) {
		client_step(r);
		for (uint32_t i = 0; i < r->ndev; i++) {
			server_step(r);
			client_step(r);
		}
	}
	if ((flags & 3) == 3)
		for (uint32_t i = 0; i < 2 * r->ndev; i++)
			server_send(r, i % r->ndev, 0, (uint8_t)(8 * i + 7));
}

/* ------------------------------------------------------------ teardown */

static void *agent_main(void *arg)
{
	struct run *r = arg;

	r->agent_rc = vdi_server_execute_completion_agent(r->s);
	__atomic_store_n(&r->agent_returned, 1, __ATOMIC_SEQ_CST);
	signal_progress();
	return NULL;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits at most ms until cond(r) holds; returns cond(r). */
static int wait_for(struct run *r, int (*cond)(struct run *r), unsigned ms)
{
	struct timespec ts;
	int ok;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&g_lock);
	while (!(ok = cond(r)) && pthread_cond_timedwait(&g_cond, &g_lock, &ts) == 0)
		;
	pthread_mutex_unlock(&g_lock);
	return ok || cond(r);
}

static int agent_has_returned(struct run *r)
{
	return __atomic_load_n(&r->agent_returned, __ATOMIC_SEQ_CST);
}

static int all_routines_ran(struct run *r)
{
	for (unsigned i = 0; i < r->ncmds; i++)
		if (__atomic_load_n(&r->cmds[i].calls, __ATOMIC_SEQ_CST) != 1)
			return 0;
	return 1;
}

/* Waits at most ms for the agent; 1 if it returned. */
static int agent_wait(struct run *r, unsigned ms)
{
	return wait_for(r, agent_has_returned, ms);
}

static void client_finish(struct run *r)
{
	for (uint32_t d = 0; d < r->ndev; d++) {
		if (!r->cd[d])
			continue;
		for (int i = 0; i < 2 * VDI_QUEUE_DEPTH; i++) {
			while (r->nheld[d]) {
				VDC_Command *c = r->held[d][0];

				client_complete(r, d, 0, ERROR_SUCCESS,
				                c->commandCode <= VDC_Write ? (uint32_t)c->size : 0,
				                0);
			}
			if (client_get(r, d) != 0)
				break;
		}
	}
}

/* Starts the agent and waits until it has drained what the program
 * completed and sleeps (its wait slice raises done_waiters), or has
 * returned: the rest of the teardown then meets the agent at the same
 * point every time, so a crash input replays the same way. */
static void agent_start(struct run *r)
{
	uint32_t w0 = __atomic_load_n(&r->raw->done_waiters, __ATOMIC_SEQ_CST);
	uint64_t end;

	if (pthread_create(&r->agent, NULL, agent_main, r) != 0)
		FAIL("cannot start the agent thread");
	r->agent_started = 1;
	end = now_ms() + 2000;
	while (!__atomic_load_n(&r->agent_returned, __ATOMIC_SEQ_CST) &&
	       __atomic_load_n(&r->raw->done_waiters, __ATOMIC_SEQ_CST) == w0 && now_ms() < end)
		sched_yield();
}

/* Proves the agent runs before the devices are closed (else it could
 * start after the set terminated and rightly refuse, VD_E_PROTOCOL):
 * a VDC_Flush goes through, and every routine must then have run,
 * which only the agent does. */
static void agent_sync(struct run *r)
{
	uint32_t d;

	for (d = 0; d < r->ndev && r->sclosed[d]; d++)
		;
	if (d == r->ndev)
		return;
	server_send(r, d, 33 /* kind % 21 == VDC_Flush */, 0);
	client_finish(r);
	if (!wait_for(r, all_routines_ran, 5000))
		FAIL("agent delivered not every completion within 5 s");
}

static void teardown(struct run *r)
{
	int all_open = r->sconfigured > 0 && r->cconfigured, any_dev = 0, closed_first = 1, orderly,
	    rc;

	for (uint32_t d = 0; d < r->ndev; d++) {
		any_dev |= r->sd[d] != NULL;
		all_open &= r->sd[d] != NULL && r->cd[d] != NULL;
		closed_first &= r->sd[d] != NULL && r->sclosed[d];
	}
	/* Orderly: nothing was forged and both sides opened every device,
	 * so every command reaches the client and the set must end
	 * normally. */
	orderly = !r->peer_wrote && all_open;
	if (any_dev)
		agent_start(r);
	client_finish(r);
	if (orderly && !closed_first)
		agent_sync(r);
	for (uint32_t d = 0; d < r->ndev; d++)
		if (r->sd[d] && !r->sclosed[d])
			server_close_device(r, d);
	client_finish(r); /* now up to VD_E_CLOSE */
	if (r->agent_started) {
		if (!agent_wait(r, orderly ? 5000 : r->peer_wrote ? 5 : 0)) {
			if (orderly)
				FAIL("agent still running 5 s after an orderly end");
			/* A forging peer may legitimately keep the agent
			 * waiting (commands it never completes), and so does
			 * a device one side never opened: abort, as a server
			 * would after serverTimeOut. */
			check_rc(vdi_server_signal_abort(r->s), A_OK, "server SignalAbort");
			if (!agent_wait(r, 5000))
				FAIL("agent still running 5 s after SignalAbort");
		}
		pthread_join(r->agent, NULL);
		check_rc(r->agent_rc, A_OK | A_ABORT | A_PROTOCOL, "server ExecuteCompletionAgent");
		if (orderly && r->agent_rc && !closed_first)
			FAIL("agent returned %s at an orderly end", vdi_strerror(r->agent_rc));
	}
	if (r->sopen) {
		rc = check_rc(vdi_server_close(r->s), A_OK | A_PROTOCOL, "server Close");
		if (rc && orderly)
			FAIL("server Close failed at an orderly end: %s", vdi_strerror(rc));
	}
	for (unsigned i = 0; i < r->ncmds; i++)
		if (__atomic_load_n(&r->cmds[i].calls, __ATOMIC_SEQ_CST) != 1)
			FAIL("after server Close, the routine of command %u ran %d times", i,
			     r->cmds[i].calls);
	if (r->created) {
		rc = check_rc(vdi_client_close(r->c), A_OK | A_OPEN | A_PROTOCOL, "client Close");
		if (rc && orderly)
			FAIL("client Close failed at an orderly end: %s", vdi_strerror(rc));
	}
	vdi_server_free(r->s);
	vdi_client_free(r->c);
	if (r->raw)
		munmap(r->raw, r->raw_size);
	unlink_all();
}

/* Resources an iteration must give back, counted before and after it. */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the DIR's own descriptor */
}

/* Mappings of this run's shared-memory objects (ours and the engine's). */
static int count_set_mappings(void)
{
	char line[512], tag[64];
	FILE *f = fopen("/proc/self/maps", "r");
	int n = 0;

	if (!f)
		return -1;
	snprintf(tag, sizeof(tag), ".%s.%s", g_inst, SET_NAME);
	while (fgets(line, sizeof(line), f))
		n += strstr(line, "/dev/shm/vdi") && strstr(line, tag);
	fclose(f);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run *r;
	int fds = count_fds(), maps;

	if (size < 1)
		return 0;
	r = calloc(1, sizeof(*r));
	if (!r)
		abort();
	r->in = data;
	r->len = size;
	r->pos = 1;
	if (g_verbose)
		fprintf(stderr, "fuzz_shm: input of %zu bytes, setup 0x%02x\n", size, data[0]);
	setup(r, data[0]);
	for (int n = 0; n < MAX_OPS && r->pos < r->len; n++)
		run_op(r);
	teardown(r);
	free(r);
	if (count_fds() != fds)
		FAIL("%d file descriptors open after the set was closed, %d before", count_fds(),
		     fds);
	maps = count_set_mappings();
	if (maps != 0)
		FAIL("%d mappings of the set left after both sides closed it", maps);
	return 0;
}
