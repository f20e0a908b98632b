/* SPDX-License-Identifier: MIT */
/*
 * shm.h - the shared-memory layout of a virtual device set, and the
 * module (shm.c) that creates, maps, locks, watches and removes it.
 *
 * A set is two kinds of POSIX shared-memory objects:
 *
 *   /vdi.<instance>.<set>        the control region (this header's
 *                                structures), created by the primary
 *                                client at Create;
 *   /vdi-b<k>.<instance>.<set>   buffer area k (k < VDI_MAX_AREAS),
 *                                created by the server at
 *                                EndConfiguration (k = 0) or by a later
 *                                RequestBuffers (k > 0).
 *
 * Area names use another prefix so that no set name can ever collide
 * with another set's area name.  Shared memory holds offsets and
 * handles, never pointers.  Every field says who writes it; the other
 * side treats it as untrusted input and validates it before use.
 *
 * Per device, commands travel in two single-producer single-consumer
 * rings of slot indices (liburing style: power-of-two size, free-running
 * uint32_t head and tail, index & mask):
 *
 *   cmd ring   server -> client: slot filled by the server, then its
 *              index published (store-release of tail);
 *   done ring  client -> server: completion fields of the slot filled by
 *              the client, then its index published.
 *
 * A slot belongs to exactly one party at a time (server: free or being
 * filled; client: fetched; server again: completed), so slot fields need
 * no lock: the ring's release/acquire pair orders them.  Which slots are
 * outstanding is tracked privately by each side, never trusted from here.
 *
 * Changelog of the layout (bump VDI_SHM_VERSION on any change):
 *   1  first layout.
 *   2  phase holds enum vdi_set_state (CREATED = 1, was 0, and so on).
 *   3  slot.pad became slot.issued (D30).
 */
#ifndef VDI_SHM_H
#define VDI_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vdi.h"

#define VDI_SHM_MAGIC        0x53494456u /* "VDIS" little-endian */
#define VDI_SHM_VERSION      3u
#define VDI_MAX_AREAS        64
#define VDI_DEFAULT_INSTANCE "MSSQLSERVER"
#define VDI_RING_MASK        (VDI_QUEUE_DEPTH - 1)
#define VDI_REASON_MAX       160

_Static_assert((VDI_QUEUE_DEPTH & VDI_RING_MASK) == 0, "ring size is a power of two");

/* The server's view of the set (hdr->phase), written by the server
 * only: enum vdi_set_state, one of CREATED (the creator stores it
 * before publishing the region), CONNECTED, CONFIGURABLE, INITIALIZING
 * (configuration final), ACTIVE (a device opened or the agent running)
 * and TERMINATED (every device closed).  Those values are the layout's:
 * pinned here. */
_Static_assert(VDI_SET_CREATED == 1 && VDI_SET_CONNECTED == 2 && VDI_SET_CONFIGURABLE == 3 &&
                       VDI_SET_INITIALIZING == 4 && VDI_SET_ACTIVE == 5 && VDI_SET_TERMINATED == 6,
               "phase values are part of the layout");

/* Per-device states. */
enum vdi_dev_server_state {
	VDI_DEV_S_UNOPENED = 0, /* server has not opened it */
	VDI_DEV_S_OPEN = 1,     /* server may send commands */
	VDI_DEV_S_CLOSED = 2,   /* CloseDevice: client drains, then VD_E_CLOSE */
};
enum vdi_dev_client_state {
	VDI_DEV_C_UNOPENED = 0, /* no client process opened it */
	VDI_DEV_C_OPEN = 1,     /* a client process drives it */
	VDI_DEV_C_DONE = 2,     /* that client saw VD_E_CLOSE */
};

/* A process, identified beyond pid reuse by its start time. */
struct vdi_shm_proc {
	int32_t pid; /* 0 = none */
	uint32_t pad;
	uint64_t start_time; /* /proc/<pid>/stat field 22, clock ticks */
};
_Static_assert(sizeof(struct vdi_shm_proc) == 16, "proc layout");

/* One SPSC ring of slot indices.  head: written by the consumer only;
 * tail: written by the producer only; both on their own cache line. */
struct vdi_shm_ring {
	uint32_t head;
	uint32_t pad0[15];
	uint32_t tail;
	uint32_t pad1[15];
	uint32_t entries[VDI_QUEUE_DEPTH];
};
_Static_assert(sizeof(struct vdi_shm_ring) == 128 + 4 * VDI_QUEUE_DEPTH, "ring layout");

/* One command.  The server's fields are written before the index is
 * published in the cmd ring; the completion fields by the client before
 * the index is published in the done ring.  issued is the client's while
 * it holds the command: the handle GetBufferHandle gave out for its
 * buffer (equal to buffer_handle), 0 before that and again from the
 * completion on; any process of the set reads it in MapBufferHandle,
 * which maps only handles issued so (D30). */
struct vdi_shm_slot {
	uint32_t command_code;      /* server */
	uint32_t size;              /* server */
	uint64_t position;          /* server: inPosition */
	uint32_t buffer_handle;     /* server: 0 = no buffer (D24) */
	uint32_t issued;            /* client: handle given out, 0 = none */
	uint32_t completion_code;   /* client */
	uint32_t bytes_transferred; /* client */
	uint64_t out_position;      /* client */
};
_Static_assert(sizeof(struct vdi_shm_slot) == 40, "slot layout");

struct vdi_shm_device {
	char name[VDI_MAX_NAME + 1]; /* under the set lock; valid if named */
	uint32_t named;              /* 0/1, set under the set lock */
	uint32_t server_state;       /* server; enum vdi_dev_server_state */
	uint32_t client_state;       /* client; enum vdi_dev_client_state */
	uint32_t pad0;
	struct vdi_shm_proc client; /* client process driving it (lock) */
	uint32_t cmd_seq;           /* futex: server bumps on push/close */
	uint32_t cmd_waiters;       /* client sleepers on cmd_seq */
	uint64_t bytes;             /* client: data bytes completed */
	uint64_t commands;          /* client: commands completed */
	uint32_t pad1[18];
	struct vdi_shm_ring cmd;  /* server -> client */
	struct vdi_shm_ring done; /* client -> server */
	struct vdi_shm_slot slots[VDI_QUEUE_DEPTH];
};
_Static_assert(offsetof(struct vdi_shm_device, cmd) % 64 == 0, "ring alignment");
_Static_assert(sizeof(struct vdi_shm_device) % 64 == 0, "device alignment");

struct vdi_shm_area {
	uint64_t size; /* server, before area_count covers it */
	uint64_t pad;
};

struct vdi_shm_header {
	uint32_t magic;                           /* creator, stored last (release) */
	uint32_t version;                         /* creator */
	uint32_t header_size;                     /* creator: sizeof(struct vdi_shm_header) */
	uint32_t device_size;                     /* creator: sizeof(struct vdi_shm_device) */
	uint64_t total_size;                      /* creator: bytes of the region */
	uint8_t set_id[16];                       /* creator: random, tells reuse apart */
	char instance[VDI_MAX_INSTANCE + 1 + 15]; /* creator */
	char name[VDI_MAX_NAME + 1];              /* creator */
	uint32_t mode;                            /* creator: 0600 or 0660 */
	uint32_t gid;                             /* creator: group if mode is 0660 */
	VDConfig client_cfg;                      /* creator: the client's inputs */
	uint32_t pad0;
	VDConfig final_cfg; /* server, before phase INITIALIZING */
	uint32_t pad1;
	uint32_t phase;        /* server; enum vdi_set_state, above */
	uint32_t abort;        /* anyone: 0 -> 1 once (CAS), sticky */
	uint32_t reason_ready; /* abort winner: reason is complete */
	uint32_t lock;         /* set lock: owner pid or 0 (shm.c) */
	uint32_t lock_waiters;
	uint32_t config_seq; /* futex: phase change, abort */
	uint32_t config_waiters;
	uint32_t done_seq; /* futex: completion pushed, abort */
	uint32_t done_waiters;
	uint32_t area_count;         /* server: areas[0..n) are valid */
	uint32_t client_closed;      /* primary client: Close done */
	uint32_t server_closed;      /* server: Close done */
	struct vdi_shm_proc creator; /* primary client (creator) */
	struct vdi_shm_proc server;  /* server, under the set lock */
	struct vdi_shm_area areas[VDI_MAX_AREAS];
	char abort_reason[VDI_REASON_MAX]; /* abort winner */
	uint8_t pad2[96];
};
_Static_assert(sizeof(VDConfig) == 44, "VDConfig is 11 x uint32");
_Static_assert(sizeof(struct vdi_shm_header) == 1664, "header layout");
_Static_assert(sizeof(struct vdi_shm_device) == 12800, "device layout");

static inline size_t vdi_shm_region_size(uint32_t device_count)
{
	return sizeof(struct vdi_shm_header) + (size_t)device_count * sizeof(struct vdi_shm_device);
}

static inline struct vdi_shm_device *vdi_shm_dev(struct vdi_shm_header *h, uint32_t i)
{
	return (struct vdi_shm_device *)((char *)h + sizeof(*h)) + i;
}

/* ---------------------------------------------------------------------
 * shm.c: the module.
 */

/* A mapped control region as seen by one process. */
struct vdi_region {
	struct vdi_shm_header *hdr; /* NULL when not mapped */
	size_t size;
	uint32_t device_count; /* validated copy */
	uint8_t set_id[16];    /* validated copy */
	char instance[VDI_MAX_INSTANCE + 1];
	char name[VDI_MAX_NAME + 1];
	char shm_name[256];
};

/* A mapped buffer area as seen by one process. */
struct vdi_area_map {
	uint8_t *base; /* data of the area, aligned to VDI_MAX_ALIGNMENT */
	size_t size;   /* length validated with fstat */
	void *reserve; /* the whole reservation, for munmap */
	size_t reserve_size;
};

/* Control region.  create: O_EXCL, reclaiming a stale one (D16). */
int vdi_region_create(struct vdi_region *r, const char *instance, const char *name,
                      const VDConfig *cfg, uint32_t mode, gid_t gid);
/* Maps an existing region and validates everything in its header. */
int vdi_region_open(struct vdi_region *r, const char *instance, const char *name);
void vdi_region_unmap(struct vdi_region *r);
/* Unlinks the control region and every area name, if they still belong
 * to this set (same set_id). */
void vdi_region_unlink(struct vdi_region *r);

/* Leftovers (D16, vdi doctor): what an object of a set's names holds. */
enum vdi_probe_state {
	VDI_PROBE_LIVE,   /* a set a live process may use, or an object
			   * younger than 2 s (being created) */
	VDI_PROBE_STALE,  /* a set whose creator is dead and whose server
			   * is dead or closed: nothing will use it again */
	VDI_PROBE_DEBRIS, /* a control region that holds no set */
	VDI_PROBE_ORPHAN, /* a buffer area whose control region is gone */
};
struct vdi_shm_probe {
	enum vdi_probe_state state;
	int32_t creator_pid, server_pid; /* STALE: as recorded (untrusted) */
	uint8_t set_id[16];              /* STALE: which set */
	uint64_t bytes;                  /* the object; STALE: with its areas */
};
/* Probes the control region of (instance, name) (area < 0) or its
 * buffer area `area`.  0, VD_E_INVALID if it does not exist, or the
 * error of inspecting it (VD_E_SECURITY: another user's). */
int vdi_shm_probe(const char *instance, const char *name, int area, struct vdi_shm_probe *p);
/* Removes what a probe found left over (`seen`), if it still is: a
 * control region with every area of its set, or one orphan area.
 * VD_E_BUSY if it is in use now or is another set than seen. */
int vdi_shm_reclaim(const char *instance, const char *name, int area,
                    const struct vdi_shm_probe *seen);

/* Buffer areas. */
int vdi_area_create(struct vdi_region *r, uint32_t k, size_t size, struct vdi_area_map *m);
int vdi_area_map(struct vdi_region *r, uint32_t k, struct vdi_area_map *m);
void vdi_area_unmap(struct vdi_area_map *m);

/* The set lock: a pid word, robust against a dead owner, bounded (2 s)
 * against a hostile one (then VD_E_PROTOCOL). */
int vdi_region_lock(struct vdi_region *r);
void vdi_region_unlock(struct vdi_region *r);

/* Device naming (D15), with the set lock held: the index of the device
 * called name, naming the first unnamed slot after it if none is;
 * VD_E_INVALID if every slot carries another name.  side: "client" or
 * "server", for the message. */
int vdi_region_find_device(struct vdi_region *r, const char *name, const char *side);

/* Processes. */
void vdi_proc_self(struct vdi_shm_proc *p);
/* 1 alive, 0 dead (gone, zombie, or pid reused).  Reads untrusted input. */
int vdi_shm_proc_alive(const struct vdi_shm_proc *p);

/* Abort: sets the sticky flag (first reason wins) and wakes every
 * sleeper of the set.  Returns 1 if this call set it. */
int vdi_region_abort(struct vdi_region *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int vdi_region_aborted(const struct vdi_region *r);
/* Copies the abort reason (empty if none yet). */
void vdi_region_reason(const struct vdi_region *r, char *buf, size_t len);

/* Wakes every sleeper of the set (abort, close). */
void vdi_region_wake_all(struct vdi_region *r);

/* One slice of a wait: sleeps on seq/waiters while cond(ctx) is false,
 * at most min(remaining, 100 ms).  Returns 1 if cond became true. */
int vdi_wait_slice(uint32_t *seq, uint32_t *waiters, int (*cond)(void *ctx), void *ctx,
                   uint32_t slice_ms);

/* Deadline helpers for the sliced waits. */
struct vdi_deadline {
	uint64_t end_ms; /* UINT64_MAX = forever */
};
void vdi_deadline_start(struct vdi_deadline *d, uint32_t timeout_ms);
/* Remaining slice (<= 100 ms), 0 if expired. */
uint32_t vdi_deadline_slice(const struct vdi_deadline *d);

#endif /* VDI_SHM_H */
