/* SPDX-License-Identifier: MIT */
/*
 * vdi.h - libvdi, the SQL Server Virtual Device Interface on Linux.
 *
 * This header is the manual.  It carries both halves of the protocol
 * digested in shared/spec/vdi-protocol.md:
 *
 *   - the client half, used by backup software (a "virtual device set"
 *     created under a name, devices that receive commands);
 *   - the server half, used by a database engine (opens the set by name,
 *     configures it, allocates shared buffers, sends commands, runs the
 *     completion agent);
 *   - the stream adapter, the one place where a byte stream of any
 *     granularity meets the block-aligned buffer commands, for both sides.
 *
 * The two halves meet through POSIX shared memory; they may live in the
 * same process or in different processes.  Every value one side reads
 * from shared memory is validated, so a crashed or hostile peer produces
 * VD_E_ABORT, VD_E_PROTOCOL or VD_E_INVALID here, never a crash.
 *
 * Conventions
 *   - Every call returns 0 (NOERROR) or a negative VD_E_* code whose
 *     numeric value is the spec's HRESULT (0x8077000N read as int).
 *     Completion codes are Win32 numbers (ERROR_*).
 *   - Timeouts are milliseconds.  VDI_INFINITE (0xFFFFFFFF) and every
 *     value >= 0x80000000 (a negative int32, the Linux SDK's "infinite")
 *     wait forever; 0 polls.
 *   - Handles are opaque.  A set handle may be used from any thread of its
 *     process; a device handle must be driven by one thread at a time.
 *   - Objects are allocated with *_new and freed with *_free.  *_free on an
 *     open set first performs Close.
 *   - Where the spec is silent or contradicts itself, the decision taken
 *     is recorded in docs/decisions.md with its reason.
 *
 * Spec method -> C function
 *
 *   IClientVirtualDeviceSet2::Create              vdi_client_create
 *   IClientVirtualDeviceSet2::CreateEx            vdi_client_create_ex
 *   IClientVirtualDeviceSet2::GetConfiguration    vdi_client_get_configuration
 *   IClientVirtualDeviceSet2::OpenDevice          vdi_client_open_device
 *   IClientVirtualDeviceSet2::Close               vdi_client_close
 *   IClientVirtualDeviceSet2::SignalAbort         vdi_client_signal_abort
 *   IClientVirtualDeviceSet2::OpenInSecondary     vdi_client_open_in_secondary
 *   IClientVirtualDeviceSet2::OpenInSecondaryEx   vdi_client_open_in_secondary_ex
 *   IClientVirtualDeviceSet2::GetBufferHandle     vdi_client_get_buffer_handle
 *   IClientVirtualDeviceSet2::MapBufferHandle     vdi_client_map_buffer_handle
 *   IClientVirtualDevice::GetCommand              vdi_client_get_command
 *   IClientVirtualDevice::CompleteCommand         vdi_client_complete_command
 *
 *   IServerVirtualDeviceSet2::Open                vdi_server_open
 *   IServerVirtualDeviceSet2::GetConfiguration    vdi_server_get_configuration
 *   IServerVirtualDeviceSet2::BeginConfiguration  vdi_server_begin_configuration
 *   IServerVirtualDeviceSet2::RequestBuffers      vdi_server_request_buffers
 *   IServerVirtualDeviceSet2::QueryAvailableBuffers
 *                                                 vdi_server_query_available_buffers
 *   IServerVirtualDeviceSet2::EndConfiguration    vdi_server_end_configuration
 *   IServerVirtualDeviceSet2::ExecuteCompletionAgent
 *                                                 vdi_server_execute_completion_agent
 *   IServerVirtualDeviceSet2::OpenDevice          vdi_server_open_device
 *   IServerVirtualDeviceSet2::AllocateBuffer      vdi_server_allocate_buffer
 *   IServerVirtualDeviceSet2::FreeBuffer          vdi_server_free_buffer
 *   IServerVirtualDeviceSet2::IsSharedBuffer      vdi_server_is_shared_buffer
 *   IServerVirtualDeviceSet2::SignalAbort         vdi_server_signal_abort
 *   IServerVirtualDeviceSet2::Close               vdi_server_close
 *   IServerVirtualDevice::SendCommand             vdi_server_send_command
 *   IServerVirtualDevice::CloseDevice             vdi_server_close_device
 *
 *   (COM lifetime: CoCreateInstance = vdi_client_new / vdi_server_new,
 *    Release = vdi_client_free / vdi_server_free.)
 */
#ifndef VDI_H
#define VDI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What this header declares is libvdi's interface: the library is built
 * with hidden visibility, so these are the only names it exports. */
#pragma GCC visibility push(default)

/* ---------------------------------------------------------------------
 * Return codes (vdierror.h).  MAKE_HRESULT(1, 0x77, n) read as int.
 */
#define NOERROR            0
#define VD_E_NOTOPEN       ((int)0x80770002) /* object was not open */
#define VD_E_TIMEOUT       ((int)0x80770003) /* wait timed out */
#define VD_E_ABORT         ((int)0x80770004) /* abort in progress */
#define VD_E_SECURITY      ((int)0x80770005) /* no access / security setup failed */
#define VD_E_INVALID       ((int)0x80770006) /* invalid parameter */
#define VD_E_INSTANCE_NAME ((int)0x80770007) /* instance name not valid */
#define VD_E_NOTSUPPORTED  ((int)0x80770009) /* configuration not supported */
#define VD_E_MEMORY        ((int)0x8077000A) /* out of memory */
#define VD_E_UNEXPECTED    ((int)0x8077000B) /* unexpected internal error */
#define VD_E_PROTOCOL      ((int)0x8077000C) /* call not valid in this state */
#define VD_E_OPEN          ((int)0x8077000D) /* all devices open / still open */
#define VD_E_CLOSE         ((int)0x8077000E) /* device closed: normal end */
#define VD_E_BUSY          ((int)0x8077000F) /* resource busy (name in use) */
/* Used by the spec's SendCommand page but defined in no header: we take
 * the next two unused codes of facility 0x77 (docs/decisions.md D6). */
#define VD_E_QUEUE_FULL ((int)0x80770010) /* device command queue full */
#define VD_E_IO_ERROR   ((int)0x80770011) /* device in IO-ERROR state */

/* Name of a return code ("VD_E_ABORT", "NOERROR", "0x80770099" style for
 * unknown values).  Returns a pointer to static storage. */
const char *vdi_strerror(int rc);

/* ---------------------------------------------------------------------
 * Win32 completion codes used with VDI (spec 6.6).
 */
#ifndef ERROR_SUCCESS
#define ERROR_SUCCESS 0
#endif
#define ERROR_INVALID_HANDLE      6
#define ERROR_ARENA_TRASHED       7
#define ERROR_HANDLE_EOF          38
#define ERROR_HANDLE_DISK_FULL    39
#define ERROR_NOT_SUPPORTED       50
#define ERROR_INVALID_PARAMETER   87
#define ERROR_DISK_FULL           112
#define ERROR_OPERATION_ABORTED   995
#define ERROR_END_OF_MEDIA        1100
#define ERROR_FILEMARK_DETECTED   1101
#define ERROR_NO_DATA_DETECTED    1104
#define ERROR_IO_DEVICE           1117
#define ERROR_EOM_OVERFLOW        1129
#define ERROR_NO_SYSTEM_RESOURCES 1450

/* Name of a Win32 completion code, or "ERROR_<n>" for others. */
const char *vdi_strcompletion(uint32_t code);

/* Copies text for display: control characters (bytes < 0x20 and 0x7f)
 * become \xNN, so a hostile name cannot move the cursor or clear the
 * terminal it is printed on.  Always NUL-terminates (len > 0); returns
 * out.  Every message of vdi_last_error() has been through it. */
char *vdi_escape_text(char *out, size_t len, const char *in);

#define VDI_INFINITE 0xFFFFFFFFu

/* ---------------------------------------------------------------------
 * Limits.
 */
#define VDI_MAX_DEVICES      64
#define VDI_MAX_NAME         127 /* bytes of a set or device name, no NUL */
#define VDI_MAX_INSTANCE     16  /* bytes of an instance name */
#define VDI_QUEUE_DEPTH      256 /* outstanding commands per device (D7) */
#define VDI_MIN_BLOCKSIZE    512
#define VDI_MAX_BLOCKSIZE    65536
#define VDI_MAXTRANSFER_UNIT 65536
#define VDI_MAX_MAXTRANSFER  4194304
#define VDI_MAX_ALIGNMENT    65536
#define VDI_MAX_PREFIX       65536

/* ---------------------------------------------------------------------
 * Feature bits.  The three enums carry the names of Microsoft's headers
 * (VDFeatures, VDCommands, VDWhence) so that core/sqlvdi/vdi.h, the
 * Microsoft-API header, takes them from here instead of a second copy.
 */
enum VDFeatures {
	VDF_Removable = 0x00000001,
	VDF_Rewind = 0x00000002,
	VDF_Position = 0x00000010,
	VDF_SkipBlocks = 0x00000020,
	VDF_ReversePosition = 0x00000040,
	VDF_Discard = 0x00000080,
	VDF_FileMarks = 0x00000100,
	VDF_RandomAccess = 0x00000200,
	VDF_SnapshotPrepare = 0x00000400,
	VDF_EnumFrozenFiles = 0x00000800,
	VDF_VSSWriter = 0x00001000,
	VDF_RequestComplete = 0x00002000,
	VDF_WriteMedia = 0x00010000,
	VDF_ReadMedia = 0x00020000,
	VDF_CompleteEnabled = 0x00040000,
	VDF_LatchStats = (int)0x80000000,
	VDF_LikePipe = 0x00000000,
	VDF_LikeTape = 0x00000173,
	VDF_LikeDisk = 0x00000200,
};

/* Command codes. */
enum VDCommands {
	VDC_Read = 1,
	VDC_Write = 2,
	VDC_ClearError = 3,
	VDC_Rewind = 4,
	VDC_WriteMark = 5,
	VDC_SkipMarks = 6,
	VDC_SkipBlocks = 7,
	VDC_Load = 8,
	VDC_GetPosition = 9,
	VDC_SetPosition = 10,
	VDC_Discard = 11,
	VDC_Flush = 12,
	VDC_Snapshot = 13,
	VDC_MountSnapshot = 14,
	VDC_PrepareToFreeze = 15,
	VDC_FileInfoBegin = 16,
	VDC_FileInfoEnd = 17,
	VDC_GetError = 18,
	VDC_Complete = 19,
};
#define VDC_MIN_CODE VDC_Read
#define VDC_MAX_CODE VDC_Complete

enum VDWhence { VDC_Beginning = 0, VDC_Current = 1, VDC_End = 2 };

/* Name of a command code ("VDC_Write"), or "VDC_<n>" for others. */
const char *vdi_strcommand(uint32_t code);

/* ---------------------------------------------------------------------
 * VDConfig: 11 x uint32, 44 bytes, same layout as the spec's headers.
 * Client inputs: deviceCount .. serverTimeOut.  Server outputs: the rest.
 * Zero it, then set deviceCount (1..64; CreateEx refuses 0 with
 * VD_E_NOTSUPPORTED): with every other field zero, that is a set of
 * pipe-like devices with no prefix zone and no alignment wish.
 */
typedef struct VDConfig {
	uint32_t deviceCount;           /* 1..64 */
	uint32_t features;              /* VDF_* (client in, server out) */
	uint32_t prefixZoneSize;        /* bytes below each data buffer */
	uint32_t alignment;             /* data start alignment, 0 or 2^n */
	uint32_t softFileMarkBlockSize; /* only with VDF_FileMarks */
	uint32_t EOMWarningSize;
	uint32_t serverTimeOut;   /* ms, 0 = infinite */
	uint32_t blockSize;       /* server: BLOCKSIZE */
	uint32_t maxIODepth;      /* server: always 4 */
	uint32_t maxTransferSize; /* server: MAXTRANSFERSIZE */
	uint32_t bufferAreaSize;  /* server: bytes of all buffer areas */
} VDConfig;

/* Client view of a command.  Read-only to the client; valid until it is
 * passed to vdi_client_complete_command (or the set is closed).  `buffer`
 * is this process's address of the shared data zone. */
typedef struct VDC_Command {
	int32_t commandCode;
	int32_t size;
	int64_t position;
	uint8_t *buffer;
} VDC_Command;

struct VDS_Command;
typedef void (*VDS_CompletionRoutine)(struct VDS_Command *cmd);

/* Server view of a command.  The server owns the memory; it must stay
 * valid from vdi_server_send_command until its completion routine ran. */
typedef struct VDS_Command {
	uint32_t commandCode;
	uint32_t size;
	uint64_t inPosition;
	uint64_t outPosition;                    /* filled on completion */
	uint8_t *buffer;                         /* server address of data zone */
	VDS_CompletionRoutine completionRoutine; /* mandatory */
	void *completionContext;                 /* opaque to VDI */
	uint32_t completionCode;                 /* filled on completion */
	uint32_t bytesTransferred;               /* filled on completion */
} VDS_Command;

/* ---------------------------------------------------------------------
 * Logging.  The library never prints except through this sink.  The
 * default sink writes "vdi: <message>" lines to stderr for level <= the
 * current level (default VDI_LOG_ERROR; env VDI_LOG=debug|info|warn|error
 * changes it at first use).
 */
enum vdi_log_level { VDI_LOG_ERROR = 0, VDI_LOG_WARN, VDI_LOG_INFO, VDI_LOG_DEBUG };
typedef void (*vdi_log_fn)(void *ctx, enum vdi_log_level level, const char *msg);
/* Replace the sink (NULL restores the default).  Not thread-safe against
 * concurrent logging: call it before starting threads. */
void vdi_log_set_sink(vdi_log_fn fn, void *ctx);
void vdi_log_set_level(enum vdi_log_level level);

/* Last error detail of the calling thread: a human-readable sentence with
 * the cause (side, set, device, command, offset, errno) of the most recent
 * non-zero return of a vdi_* call on this thread.  Borrowed; valid until
 * the next vdi_* call on the same thread.  Never NULL. */
const char *vdi_last_error(void);

/* ---------------------------------------------------------------------
 * Client half.
 */
struct vdi_client;        /* IClientVirtualDeviceSet2 */
struct vdi_client_device; /* IClientVirtualDevice */

int vdi_client_new(struct vdi_client **out);
void vdi_client_free(struct vdi_client *c);

/* Access to the shared objects: by default owner read/write only (0600).
 * With a group, 0660 and that group (the calling user must be able to
 * chown to it).  Must be called before create.  VD_E_PROTOCOL after. */
int vdi_client_set_group(struct vdi_client *c, gid_t group);

/* Create: name is 1..VDI_MAX_NAME bytes with no '/', '\\' or control
 * characters, not "." or "..".  instance NULL or "" is the default
 * instance; otherwise 1..16 of [A-Za-z0-9_$].  A set of the same name
 * whose creator is alive gives VD_E_BUSY; one left by dead processes is
 * reclaimed.  Errors: VD_E_PROTOCOL (already created on this object),
 * VD_E_NOTSUPPORTED (bad cfg field), VD_E_INVALID (bad name),
 * VD_E_INSTANCE_NAME, VD_E_BUSY, VD_E_SECURITY, VD_E_MEMORY. */
int vdi_client_create(struct vdi_client *c, const char *name, const VDConfig *cfg);
int vdi_client_create_ex(struct vdi_client *c, const char *instance, const char *name,
                         const VDConfig *cfg);

/* Waits until the server ended configuration; copies the final config. */
int vdi_client_get_configuration(struct vdi_client *c, uint32_t timeout_ms, VDConfig *cfg);

/* Opens a device by name (the first device carries the set's name).  On
 * failure *out is NULL.  The device handle is freed by vdi_client_close. */
int vdi_client_open_device(struct vdi_client *c, const char *name, struct vdi_client_device **out);

int vdi_client_close(struct vdi_client *c);
int vdi_client_signal_abort(struct vdi_client *c);
int vdi_client_open_in_secondary(struct vdi_client *c, const char *name);
int vdi_client_open_in_secondary_ex(struct vdi_client *c, const char *instance, const char *name);
/* Buffer handles (D24, D30): GetBufferHandle turns the data address of
 * a Read/Write command this process holds into a 32-bit handle; any
 * process of the set maps it with MapBufferHandle until the command is
 * completed.  Errors: VD_E_PROTOCOL (no set), VD_E_ABORT, VD_E_INVALID
 * (not the buffer of a held command / not a handle given out, or its
 * command completed). */
int vdi_client_get_buffer_handle(struct vdi_client *c, const uint8_t *buffer, uint32_t *handle);
int vdi_client_map_buffer_handle(struct vdi_client *c, uint32_t handle, uint8_t **buffer);

/* Device: *cmd is borrowed until completed.  VD_E_CLOSE = normal end. */
int vdi_client_get_command(struct vdi_client_device *d, uint32_t timeout_ms, VDC_Command **cmd);
int vdi_client_complete_command(struct vdi_client_device *d, VDC_Command *cmd,
                                uint32_t completion_code, uint32_t bytes_transferred,
                                uint64_t position);

/* Name of an open device (borrowed, valid until close) and its set. */
const char *vdi_client_device_name(const struct vdi_client_device *d);
struct vdi_client *vdi_client_device_set(const struct vdi_client_device *d);

/* ---------------------------------------------------------------------
 * Server half.
 */
struct vdi_server;        /* IServerVirtualDeviceSet2 */
struct vdi_server_device; /* IServerVirtualDevice */

int vdi_server_new(struct vdi_server **out);
void vdi_server_free(struct vdi_server *s);

/* Open: waits at most timeout_ms for a client to create the set (0 =
 * do not wait, the spec's behaviour: VD_E_INVALID at once).  This wait is
 * a libvdi extension; vdi_server_open() below is the spec's call. */
int vdi_server_open_wait(struct vdi_server *s, const char *instance, const char *name,
                         uint32_t timeout_ms);
int vdi_server_open(struct vdi_server *s, const char *instance, const char *name);
int vdi_server_get_configuration(struct vdi_server *s, VDConfig *cfg);
/* Header argument order (spec 15.1): features, blockSize, alignment. */
int vdi_server_begin_configuration(struct vdi_server *s, uint32_t features, uint32_t block_size,
                                   uint32_t alignment, uint32_t max_transfer_size,
                                   uint32_t timeout_ms);
int vdi_server_request_buffers(struct vdi_server *s, uint32_t size, uint32_t alignment,
                               uint32_t count);
int vdi_server_query_available_buffers(struct vdi_server *s, uint32_t size, uint32_t alignment,
                                       uint32_t *count);
int vdi_server_end_configuration(struct vdi_server *s);
/* Blocks on the calling thread, running completion routines, until all
 * devices are closed and all commands completed, or abort, or close. */
int vdi_server_execute_completion_agent(struct vdi_server *s);
/* name NULL or "" hands out the next unopened device.  VD_E_OPEN when
 * every device has been handed out.  *out is freed by vdi_server_close. */
int vdi_server_open_device(struct vdi_server *s, const char *name, struct vdi_server_device **out);
int vdi_server_allocate_buffer(struct vdi_server *s, uint8_t **buffer, uint32_t size,
                               uint32_t alignment);
int vdi_server_free_buffer(struct vdi_server *s, uint8_t *buffer, uint32_t size);
/* 1 if buffer is the data start of one of this set's buffers, else 0. */
int vdi_server_is_shared_buffer(struct vdi_server *s, const uint8_t *buffer);
/* Outstanding commands end with ERROR_OPERATION_ABORTED on the agent's
 * thread, or, when no agent is running, on the calling thread before
 * this returns: do not hold a lock their routines take. */
int vdi_server_signal_abort(struct vdi_server *s);
int vdi_server_close(struct vdi_server *s);

/* On failure the completion routine has also been called, synchronously
 * on this thread, with the code of spec 7.3 (D8): handle it in one place. */
int vdi_server_send_command(struct vdi_server_device *d, VDS_Command *cmd);
int vdi_server_close_device(struct vdi_server_device *d);
const char *vdi_server_device_name(const struct vdi_server_device *d);

/* ---------------------------------------------------------------------
 * Set states: the spec's state tables (3.1, 3.2) and what an outsider
 * sees of a set.  A client or server object is in one of DNE,
 * CONNECTED (server only: a client's Configurable lasts until its
 * GetConfiguration returns), CONFIGURABLE, INITIALIZING, ACTIVE,
 * TERMINATED or ABORTED, and every call of both halves is legal or not
 * by one table over these (decisions D2-D5, D17).  CREATED, CLOSED and
 * CORRUPT are only seen from outside, in struct vdi_set_info.
 * The values are fixed (they are stored in shared memory).
 */
enum vdi_set_state {
	VDI_SET_DNE = 0,          /* "not open": no set (on this object) */
	VDI_SET_CREATED = 1,      /* "waiting for server": no server opened it yet */
	VDI_SET_CONNECTED = 2,    /* "connected": server Open */
	VDI_SET_CONFIGURABLE = 3, /* "configurable": server BeginConfiguration;
				   * a client until GetConfiguration returns */
	VDI_SET_INITIALIZING = 4, /* "initializing": configuration final */
	VDI_SET_ACTIVE = 5,       /* "active": devices open, commands flow */
	VDI_SET_TERMINATED = 6,   /* "finished": normally terminated (D17) */
	VDI_SET_ABORTED = 7,      /* "aborted": sticky, the reason says why */
	VDI_SET_CLOSED = 8,       /* "closed": the creator closed it before the end */
	VDI_SET_CORRUPT = 9,      /* "corrupt": shared memory holds no state */
};

/* The name in quotes above; "unknown" for other values.  Static storage. */
const char *vdi_set_state_name(enum vdi_set_state state);

/* ---------------------------------------------------------------------
 * Inspection (for `vdi ls`, status files).  Reads shared memory only;
 * every field is a snapshot.
 */
struct vdi_set_info {
	char instance[VDI_MAX_INSTANCE + 1];
	char name[VDI_MAX_NAME + 1];
	enum vdi_set_state state; /* CREATED .. CORRUPT, never DNE */
	uint32_t device_count;
	uint32_t features;
	uint32_t block_size;
	uint32_t max_transfer_size;
	uint64_t bytes;    /* data bytes completed, all devices */
	uint64_t commands; /* commands completed, all devices */
	pid_t client_pid;  /* 0 if none */
	pid_t server_pid;  /* 0 if none */
	int client_alive, server_alive;
	char abort_reason[160]; /* empty unless aborted */
};
/* Calls fn for each set on the machine visible to this user; stops and
 * returns fn's value if non-zero.  Returns 0 or a VD_E_* code. */
int vdi_list_sets(int (*fn)(void *ctx, const struct vdi_set_info *info), void *ctx);
/* Snapshot of one set by name (instance NULL = default). */
int vdi_set_info_get(const char *instance, const char *name, struct vdi_set_info *info);
/* Abort a set from outside (`vdi abort`): any process with access. */
int vdi_set_abort(const char *instance, const char *name);
/* Snapshot of the set a client object has open. */
int vdi_client_info(struct vdi_client *c, struct vdi_set_info *info);

/* Leftovers (`vdi doctor`): shared objects in /dev/shm that nothing
 * will use again.  A set is left over once its creator is dead and its
 * server dead or closed, the rule by which Create reclaims a name (D16);
 * an object is debris when it is named like a set but holds none, and a
 * buffer area an orphan when its set's control region is gone; objects
 * younger than 2 s are never reported (they may be being created). */
enum vdi_leftover_kind {
	VDI_LEFTOVER_SET = 1,    /* a set of dead processes, with its areas */
	VDI_LEFTOVER_DEBRIS = 2, /* a control region that holds no set */
	VDI_LEFTOVER_AREA = 3,   /* a buffer area whose set is gone */
};
struct vdi_leftover {
	enum vdi_leftover_kind kind;
	char object[256]; /* its name in /dev/shm */
	char instance[VDI_MAX_INSTANCE + 1];
	char name[VDI_MAX_NAME + 1];  /* of the set */
	int area;                     /* AREA: its index k; else -1 */
	pid_t client_pid, server_pid; /* SET: its creator and server (0: none) */
	uint64_t bytes;               /* SET: the region and its areas */
	uint8_t set_id[16];           /* SET: which set it was */
};
/* Calls fn for each leftover this user can inspect; stops and returns
 * fn's value if non-zero.  0 or a VD_E_* code. */
int vdi_leftovers_list(int (*fn)(void *ctx, const struct vdi_leftover *l), void *ctx);
/* Removes one leftover vdi_leftovers_list reported, after checking it
 * still is one: VD_E_BUSY if it is in use again or the name now holds
 * another set (it is kept), VD_E_INVALID if it is gone, VD_E_SECURITY
 * if it is not this user's to remove. */
int vdi_leftover_remove(const struct vdi_leftover *l);

/* ---------------------------------------------------------------------
 * Client backends: the seam between a front end and a client library.
 *
 * A VDI client (vdifs, `vdi pipe`, the client stream adapter below) can
 * run over either of two client libraries, chosen at run time:
 *
 *   libvdi  the client half above (vdi_client_*): its peer is a server
 *           built on libvdi, such as `vdi exec`;
 *   sqlvdi  any library with Microsoft's Linux ABI (the two C++ classes
 *           ClientVirtualDeviceSet and ClientVirtualDevice of
 *           libsqlvdi.so), loaded with dlopen: Microsoft's own
 *           /opt/mssql/lib/libsqlvdi.so, whose peer is SQL Server on
 *           Linux, or libvdi's build/libsqlvdi.so, whose peer is again
 *           a libvdi server.
 *
 * The two protocols do not meet: a set created through one backend can
 * only be opened by a server of the same protocol.  The seam offers
 * exactly the calls of Microsoft's API (no pollable handle, no inspection
 * of the peer: GetCommand and GetConfiguration block with a timeout), so
 * whatever works over it works over both.  What libvdi knows beyond that
 * (peer pids, the abort reason, statistics kept in shared memory) comes
 * through vdi_bset_info, which fills what the backend can tell.
 *
 * Objects: a backend (immutable, shared by any number of sets and
 * threads), a set created through it (struct vdi_bset: the set calls of
 * the client API, from any thread, as the API allows), and the devices of a
 * set (struct vdi_bdev: one thread at a time each, like the API's
 * devices).  The return codes are the VD_E_* codes of the library that
 * answered; every failure leaves a sentence in vdi_last_error() naming
 * the backend, the call, the set or device and the code.
 */
struct vdi_backend;
struct vdi_bset;
struct vdi_bdev;

/* Default path of Microsoft's library (mssql-server package). */
#define VDI_SQLVDI_DEFAULT_PATH "/opt/mssql/lib/libsqlvdi.so"

/* The built-in backend: libvdi's own client half.  Never freed. */
const struct vdi_backend *vdi_backend_libvdi(void);
/* Loads a library with Microsoft's ABI from path (NULL or "" =
 * VDI_SQLVDI_DEFAULT_PATH) and checks that it defines every member the
 * seam calls.  VD_E_INVALID if it cannot be loaded or a symbol is missing
 * (the message names the path and the first missing member).  The
 * library stays mapped for the life of the process (a thread may still
 * return through it); vdi_backend_free frees the handle only. */
int vdi_backend_load(const char *path, struct vdi_backend **out);
void vdi_backend_free(struct vdi_backend *b);
/* "libvdi", or "sqlvdi:<path>" (borrowed, valid while b is). */
const char *vdi_backend_name(const struct vdi_backend *b);
/* 1 for a backend loaded with vdi_backend_load. */
int vdi_backend_is_sqlvdi(const struct vdi_backend *b);

/* A set through backend b; freed with vdi_bset_free (which closes it
 * first if it is open). */
int vdi_bset_new(const struct vdi_backend *b, struct vdi_bset **out);
void vdi_bset_free(struct vdi_bset *s);
/* libvdi only (vdi_client_set_group); VD_E_NOTSUPPORTED on sqlvdi, whose
 * library chooses the modes of its objects from the process umask. */
int vdi_bset_set_group(struct vdi_bset *s, gid_t group);
/* Create: instance NULL or "" is the default; a named instance is
 * VD_E_INSTANCE_NAME on sqlvdi (SQL Server on Linux has none). */
int vdi_bset_create(struct vdi_bset *s, const char *instance, const char *name,
                    const VDConfig *cfg);
int vdi_bset_get_configuration(struct vdi_bset *s, uint32_t timeout_ms, VDConfig *cfg);
/* *out is freed by vdi_bset_close. */
int vdi_bset_open_device(struct vdi_bset *s, const char *name, struct vdi_bdev **out);
int vdi_bset_signal_abort(struct vdi_bset *s);
/* Close: the set's Close (VD_E_OPEN and an abort when a device is still
 * open); the object may create a set again afterwards. */
int vdi_bset_close(struct vdi_bset *s);
/* What the backend can tell about the set.  libvdi: everything of
 * vdi_client_info.  sqlvdi: what the calls of this object returned
 * (state, configuration, bytes and commands completed through it, the
 * first abort seen as the reason); pids are 0, *_alive 0. */
int vdi_bset_info(struct vdi_bset *s, struct vdi_set_info *info);
const struct vdi_backend *vdi_bset_backend(const struct vdi_bset *s);

/* GetCommand / CompleteCommand of the API, with libvdi's timeout
 * convention (VDI_INFINITE waits forever; it becomes a negative time_t
 * on sqlvdi). */
int vdi_bdev_get_command(struct vdi_bdev *d, uint32_t timeout_ms, VDC_Command **cmd);
int vdi_bdev_complete_command(struct vdi_bdev *d, VDC_Command *cmd, uint32_t completion_code,
                              uint32_t bytes_transferred, uint64_t position);
const char *vdi_bdev_name(const struct vdi_bdev *d);
struct vdi_bset *vdi_bdev_set(const struct vdi_bdev *d);

/* ---------------------------------------------------------------------
 * Stream adapter, client side: a device as a byte stream.
 *
 * Backup (the server sends VDC_Write): vdi_cstream_read hands out the
 * bytes of VDC_Write buffers in order.  Each VDC_Write is completed
 * (ERROR_SUCCESS, all bytes) once all its bytes were taken; VDC_Flush is
 * completed only once every command before it was completed; returns 0
 * (end of stream) after VDC_Complete (which stays pending until
 * vdi_cstream_close(ok=1)) or after VD_E_CLOSE.
 *
 * Restore (the server sends VDC_Read): vdi_cstream_write fills VDC_Read
 * buffers in order, completing each when full; vdi_cstream_close(ok=1)
 * completes the pending read with the bytes given and ERROR_HANDLE_EOF,
 * answers any later reads with ERROR_HANDLE_EOF and 0 bytes, and waits
 * (bounded by the timeout) for VD_E_CLOSE.
 *
 * Both: VDC_ClearError succeeds; VDC_Flush succeeds (in order); every
 * other command outside the features offered completes with
 * ERROR_NOT_SUPPORTED.  vdi_cstream_close(ok=0), or a close before end of
 * stream, aborts the set so that the server fails too: a truncated backup
 * never looks complete.
 *
 * One thread at a time per stream.  Returns of the byte calls: count of
 * bytes (> 0), 0 at end of stream, or a negative VD_E_* code.
 */
struct vdi_cstream;

/* A stream over a device of any backend (vdi_bset_open_device), or over
 * a device of libvdi's client half opened with vdi_client_open_device.
 * The device and its set are borrowed: they must outlive the stream. */
int vdi_cstream_open(struct vdi_bdev *d, uint32_t timeout_ms, struct vdi_cstream **out);
int vdi_cstream_new(struct vdi_client_device *d, uint32_t timeout_ms, struct vdi_cstream **out);
/* Direction negotiated by the server (known from creation, since the
 * device exists only after configuration): VDF_WriteMedia (backup: read
 * the stream) or VDF_ReadMedia (restore: write it). */
uint32_t vdi_cstream_direction(const struct vdi_cstream *s);
/* The server may configure both VDF_WriteMedia and VDF_ReadMedia (D18):
 * vdi_cstream_direction is then 0 until the first data command, which
 * this waits for (answering the commands before it, each wait bounded by
 * the timeout) and leaves at the head; *direction is then known.
 * Returns at once when it already is. */
int vdi_cstream_await_direction(struct vdi_cstream *s, uint32_t *direction);
ssize_t vdi_cstream_read(struct vdi_cstream *s, void *buf, size_t len);
/* Zero-copy read: points *ptr at up to len bytes of the current buffer
 * (valid until the next call on s); consume them with _advance. */
ssize_t vdi_cstream_peek(struct vdi_cstream *s, const void **ptr, size_t len);
/* The same without waiting: VD_E_TIMEOUT (nothing consumed, the stream
 * unharmed) while the server has sent nothing more to hand out. */
ssize_t vdi_cstream_peek_nowait(struct vdi_cstream *s, const void **ptr, size_t len);
int vdi_cstream_advance(struct vdi_cstream *s, size_t n);
ssize_t vdi_cstream_write(struct vdi_cstream *s, const void *buf, size_t len);
/* Zero-copy write: room in the current VDC_Read buffer; _commit n bytes. */
ssize_t vdi_cstream_reserve(struct vdi_cstream *s, void **ptr, size_t len);
/* The same without waiting: VD_E_TIMEOUT while no VDC_Read is pending. */
ssize_t vdi_cstream_reserve_nowait(struct vdi_cstream *s, void **ptr, size_t len);
int vdi_cstream_commit(struct vdi_cstream *s, size_t n);
/* Backup: the reader read to end of stream and is done: acknowledges a
 * pending VDC_Complete now, without waiting for the server's CloseDevice
 * (vdi_cstream_close(ok=1) still waits for it later).  0, also when there
 * is nothing to acknowledge (VD_E_CLOSE already seen, or called twice);
 * VD_E_PROTOCOL if the stream is not at its end or is a restore stream;
 * or the stream's failure (VD_E_ABORT: the set was aborted, the backup
 * did not complete). */
int vdi_cstream_end(struct vdi_cstream *s);
/* ok=1: orderly end (see above).  ok=0: abort.  Frees s in all cases.
 * Writing a restore stream after the server closed the device returns
 * VD_E_CLOSE. */
int vdi_cstream_close(struct vdi_cstream *s, int ok);
/* Bytes moved through the stream so far. */
uint64_t vdi_cstream_bytes(const struct vdi_cstream *s);
/* Snapshot backups (D47).  VDC_PrepareToFreeze, VDC_Snapshot (backup) and
 * VDC_MountSnapshot (restore) reach fn on the stream's thread once every
 * command before them completed; fn's return is their completion code
 * (ERROR_SUCCESS: the snapshot was taken / prepared / mounted; another
 * code fails the operation).  files: the frozen files the server listed
 * (VDF_EnumFrozenFiles: the VDC_Write data between VDC_FileInfoBegin and
 * VDC_FileInfoEnd, one path per line), "" if none.  Without a handler
 * these commands complete with ERROR_NOT_SUPPORTED. */
#define VDI_CSTREAM_FILES_MAX 65536u
typedef uint32_t (*vdi_cstream_snapshot_fn)(void *ctx, struct vdi_cstream *s, uint32_t command,
                                            const char *files);
void vdi_cstream_on_snapshot(struct vdi_cstream *s, vdi_cstream_snapshot_fn fn, void *ctx);
/* A ready-made answer for a snapshot handler: runs `/bin/sh -c command`
 * with VDI_SET, VDI_DEVICE, VDI_PHASE (prepare, snapshot or mount) and
 * VDI_FILES (the frozen files, one per line) in its environment, and
 * returns ERROR_SUCCESS if it exits 0, else ERROR_OPERATION_ABORTED with
 * the reason (exit status or signal, the last line of its stderr) in
 * err.  If the set is aborted while it runs (the server's freeze limit,
 * its death, a user's abort) its process group is killed. */
uint32_t vdi_snapshot_run(struct vdi_cstream *s, const char *command, uint32_t code,
                          const char *files, char *err, size_t errlen);
/*
 * Media (D50).  A set offering VDF_FileMarks is a tape: its stream is an
 * AWS tape image (each block, one VDC_Write, behind 6-byte chunk headers;
 * a filemark is a header of its own), positions are block addresses on
 * the medium (records and filemarks), VDC_WriteMark writes a filemark,
 * and on restore a Read that meets a filemark completes with
 * ERROR_FILEMARK_DETECTED, as does every later Read until VDC_ClearError;
 * VDC_SkipMarks, VDC_SkipBlocks and VDC_SetPosition move forward over the
 * writer's bytes.  VDF_RandomAccess: positions are byte offsets, data
 * commands must come in order (SetPosition moves a restore forward).  A
 * stream never moves backwards: VDC_Rewind succeeds at the beginning of
 * a medium, and a move back completes with ERROR_NOT_SUPPORTED.
 *
 * VDF_Removable: a backup medium holds set_volume_size bytes of the
 * stream (0: no limit; a pipe's or disk's rounded down to whole blocks,
 * since the rest of a Write stored in part is re-issued); the Write that does not fit is answered
 * ERROR_END_OF_MEDIA with the bytes that fit (a tape record is never
 * split: 0), and read returns 0 with vdi_cstream_volume_ended 1.  The
 * reader calls vdi_cstream_next_volume to go on: later Writes are
 * answered ERROR_END_OF_MEDIA with 0 bytes until VDC_Load, after which
 * read returns the next medium's bytes.  Restore: vdi_cstream_end_volume
 * says the writer has no more bytes on this medium (the pending Read
 * ends with ERROR_HANDLE_EOF, later ones too until VDC_Load); what is
 * written next goes on the next medium, or fails with VD_E_CLOSE if the
 * server closed the device instead.  vdi_cstream_volume: the medium the
 * next bytes belong to, 0 first, +1 at each VDC_Load.
 */
/* What a client stream answers, for front ends that let users choose the
 * features (F31, D50).  A word names a device type (pipe; tape, which is
 * VDF_LikeTape whole; disk, VDF_LikeDisk) or an extra (removable,
 * discard, complete or request-complete: VDF_RequestComplete);
 * vdi_cstream_feature_word ORs its bits into *bits and returns 1 for a
 * type, 0 for an extra, -1 for an unknown word.  vdi_cstream_check_features
 * returns 0 if a stream answers every bit (the snapshot bits need a
 * handler, vdi_cstream_on_snapshot) and they make one device type the
 * spec defines, else VD_E_NOTSUPPORTED with the reason.
 * vdi_cstream_device_type: "pipe", "tape" or "disk" for such a mask, NULL
 * for another. */
int vdi_cstream_feature_word(const char *word, size_t len, uint32_t *bits);
int vdi_cstream_check_features(uint32_t features);
const char *vdi_cstream_device_type(uint32_t features);
/* The smallest medium (two tape chunk headers); a pipe's or disk's medium
 * is rounded down to whole blocks (the server re-issues whole blocks), and
 * must hold one. */
#define VDI_CSTREAM_VOLUME_MIN 12u
int vdi_cstream_set_volume_size(struct vdi_cstream *s, uint64_t bytes);
int vdi_cstream_next_volume(struct vdi_cstream *s);
int vdi_cstream_end_volume(struct vdi_cstream *s);
uint32_t vdi_cstream_volume(const struct vdi_cstream *s);
int vdi_cstream_volume_ended(const struct vdi_cstream *s);
/* The device the stream runs over (borrowed; for a stream made with
 * vdi_cstream_new, a wrapping of it that lives as long as the stream). */
struct vdi_bdev *vdi_cstream_device(const struct vdi_cstream *s);

/* ---------------------------------------------------------------------
 * Set stream: every device of a set as one POSIX tar stream.
 *
 * Backup: the archive holds members named <device>.<sequence> (ten
 * zero-padded digits: name order is stream order), one per chunk of a
 * device (the rest of the VDC_Write buffer at its head, a multiple of
 * 512 bytes), interleaved as the server produces them; an empty member
 * <device>.<next sequence> marks the clean end of each device; the
 * end-of-archive blocks follow once every device ended.  `tar -xOf a.tar
 * --wildcards '<device>.*'` is that device's stream; `tar -xf a.tar`
 * gives files whose concatenation in name order is.  Names over 100
 * bytes travel in pax "path" records.  One reader drains every device;
 * data is handed out straight from the shared buffers.
 *
 * Restore: writing such an archive feeds every device: members must be
 * the next sequence of a device of this set (so the restore set has the
 * backup set's name); ustar, pax and GNU headers are read, "./" prefixes
 * and the "." directory are accepted.  Anything else (an unknown device,
 * a sequence out of order, a missing end of a device, a truncated
 * archive, garbage) fails the stream with the member's name and archive
 * offset, and closing the failed stream aborts the set.
 *
 * The stream takes the device streams (vdi_cstream_open, one per device
 * of the set, all of one direction) and closes them at its own close; it
 * runs one worker thread per device (GetCommand waits on one device
 * only).  One caller thread at a time.  Returns as the cstream calls.
 */
struct vdi_tarstream;

int vdi_tarstream_open(struct vdi_cstream *const *streams, unsigned n, struct vdi_tarstream **out);
uint32_t vdi_tarstream_direction(const struct vdi_tarstream *t);
/* Backup: the next bytes of the archive (valid until the next call). */
ssize_t vdi_tarstream_peek(struct vdi_tarstream *t, const void **ptr, size_t len);
int vdi_tarstream_advance(struct vdi_tarstream *t, size_t n);
ssize_t vdi_tarstream_read(struct vdi_tarstream *t, void *buf, size_t len);
/* Restore: room for the next bytes of the archive (a header buffer, or
 * the pending VDC_Read buffer of the member's device). */
ssize_t vdi_tarstream_reserve(struct vdi_tarstream *t, void **ptr, size_t len);
int vdi_tarstream_commit(struct vdi_tarstream *t, size_t n);
ssize_t vdi_tarstream_write(struct vdi_tarstream *t, const void *buf, size_t len);
/* Backup read to the end of the archive: acknowledges every device's end
 * (a pending VDC_Complete) now, without waiting for the server; close
 * (ok=1) still waits.  0, VD_E_PROTOCOL before the end, or the failure
 * (the backup did not complete). */
int vdi_tarstream_end(struct vdi_tarstream *t);
/* ok=1: a backup read to the end of the archive acknowledges every
 * device's end and waits for the server to close them; a restore must
 * have received the whole archive.  Anything else, or ok=0, aborts the
 * set.  Frees t and the device streams. */
int vdi_tarstream_close(struct vdi_tarstream *t, int ok);
/* Archive bytes moved so far. */
uint64_t vdi_tarstream_bytes(const struct vdi_tarstream *t);

/* "<device>.<10-digit seq>"; VD_E_INVALID if it does not fit. */
int vdi_tar_member_name(char *buf, size_t len, const char *device, uint64_t seq);
/* The device and sequence of such a name; -1 if it is not one. */
int vdi_tar_member_parse(const char *name, char *device, size_t devlen, uint64_t *seq);

/* ---------------------------------------------------------------------
 * Stream adapter, server side: byte streams in and out of a set whose
 * configuration has ended.  One writer or reader per device, all sharing
 * a budget of `buffer_count` buffers of maxTransferSize bytes allocated
 * from the set (the caller requested them with RequestBuffers).  The
 * stream adapter owns the completion routines of the commands it sends;
 * the caller must be running the completion agent.
 */
struct vdi_sstream_pool;
struct vdi_sstream;

int vdi_sstream_pool_new(struct vdi_server *s, uint32_t buffer_count, uint32_t timeout_ms,
                         struct vdi_sstream_pool **out);
void vdi_sstream_pool_free(struct vdi_sstream_pool *p);
/* fn runs on the sending thread before every control command a stream of
 * the pool sends (vdi_sstream_command, _control, _resume, and the
 * VDC_Load of removable media); a nonzero return is returned instead of
 * sending it.  For fault injection and tracing; set before streams open. */
typedef int (*vdi_sstream_command_fn)(void *ctx, struct vdi_sstream *w, uint32_t code);
void vdi_sstream_pool_on_command(struct vdi_sstream_pool *p, vdi_sstream_command_fn fn, void *ctx);

/* Backup: bytes written are sent as VDC_Write commands of transfer_size
 * bytes (a blockSize multiple <= maxTransferSize, 0 = maxTransferSize);
 * the last one is zero-padded to a blockSize multiple.  Restore: reads
 * are served from VDC_Read commands of transfer_size bytes, several in
 * flight; returns 0 once the client answered ERROR_HANDLE_EOF (or
 * ERROR_NO_DATA_DETECTED) and every byte before it was returned.  A
 * restore stream keeps up to its share of the pool in flight: buffer
 * count / the devices the server opened (or the streams open, if more),
 * so one that starts first leaves room for the others. */
int vdi_sstream_open(struct vdi_sstream_pool *p, struct vdi_server_device *d,
                     uint32_t transfer_size, struct vdi_sstream **out);
ssize_t vdi_sstream_write(struct vdi_sstream *w, const void *buf, size_t len);
/* Zero-copy backup: points *ptr at the free room of the buffer being
 * filled (waiting for a buffer as write does) and returns its size (> 0),
 * or a negative VD_E_*.  The caller fills some of it in place and
 * commits n <= that many bytes, which then count as written; a full
 * buffer is sent at once.  Nothing else may write between the two. */
ssize_t vdi_sstream_reserve(struct vdi_sstream *w, void **ptr);
int vdi_sstream_commit(struct vdi_sstream *w, size_t n);
ssize_t vdi_sstream_read(struct vdi_sstream *r, void *buf, size_t len);
/* Zero-copy restore: points *ptr at up to len bytes of the oldest
 * completed VDC_Read buffer (waiting for it as read does); returns the
 * count, 0 at end of stream, or a negative VD_E_*.  The bytes stay valid
 * until they are consumed with vdi_sstream_advance (n <= the count). */
ssize_t vdi_sstream_peek(struct vdi_sstream *r, const void **ptr, size_t len);
int vdi_sstream_advance(struct vdi_sstream *r, size_t n);
/* Send one non-data command (VDC_Flush, VDC_Complete, ...) after all
 * data sent so far, wait for it; returns its completion code (>= 0) or a
 * negative VD_E_*.  A partly filled buffer is not sent: call
 * vdi_sstream_drain first. */
int vdi_sstream_command(struct vdi_sstream *w, uint32_t code);
/* A control command with its inputs (size: a count, or the whence of a
 * disk's VDC_SetPosition; position) and, in *out_position if not NULL,
 * the position the client returned.  Returns like vdi_sstream_command. */
int vdi_sstream_control(struct vdi_sstream *w, uint32_t code, uint32_t size, uint64_t position,
                        uint64_t *out_position);
/*
 * Media (D50).  Restore: read returns 0 at ERROR_HANDLE_EOF,
 * ERROR_NO_DATA_DETECTED or ERROR_FILEMARK_DETECTED; end_code says which
 * (0 before an end).  resume goes on past it: it waits for the reads sent
 * behind the end (one that carried bytes fails the stream: they would be
 * lost), sends code (VDC_ClearError after a filemark, VDC_Load for the
 * next medium; 0: none) and reads on.  Backup on VDF_Removable media:
 * ERROR_END_OF_MEDIA makes the stream send VDC_Load once every Write in
 * flight completed, and the rest of a Write stored in part is re-issued
 * (spec 10.5); loads counts the VDC_Load sent.
 */
uint32_t vdi_sstream_end_code(const struct vdi_sstream *r);
int vdi_sstream_resume(struct vdi_sstream *r, uint32_t code);
uint32_t vdi_sstream_loads(const struct vdi_sstream *w);
/* Restore: at most reads VDC_Read in flight from now on (0: the fair
 * share of the pool, the default).  1 reads a tape block by block, so
 * that the server can position (VDC_SkipMarks) after a block with no
 * read sent past it. */
int vdi_sstream_set_window(struct vdi_sstream *r, uint32_t reads);
/* Backup: send the padded tail, wait for every command; no close.  */
int vdi_sstream_drain(struct vdi_sstream *w);
/* Ends the stream: waits for outstanding commands and frees w.  Does not
 * close the device (the caller decides between CloseDevice and abort).
 * Returns VD_E_PROTOCOL if written bytes were never drained, so that a
 * forgotten drain cannot pass for a complete backup.  A data command the
 * client completed with an error code makes the stream calls return
 * VD_E_IO_ERROR (code and offset: vdi_sstream_error). */
int vdi_sstream_close(struct vdi_sstream *w);
uint64_t vdi_sstream_bytes(const struct vdi_sstream *w);
/* Completion code of the first failed command of the stream (0 if none),
 * and the byte offset at which it happened. */
uint32_t vdi_sstream_error(const struct vdi_sstream *w, uint64_t *offset);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* VDI_H */
