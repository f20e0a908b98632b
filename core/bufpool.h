/* SPDX-License-Identifier: MIT */
/*
 * bufpool.h - the server's buffer areas and allocator (see bufpool.c).
 * Private to the server process; the caller serialises every call.
 */
#ifndef VDI_BUFPOOL_H
#define VDI_BUFPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

struct vdi_bufreq {
	uint32_t size, alignment, count;
};

struct vdi_buf {
	uint32_t area;
	uint64_t off;   /* data start within the area */
	uint32_t cap;   /* data bytes it can hold */
	uint32_t align; /* alignment it was laid out for */
	uint32_t size;  /* size given to AllocateBuffer */
	uint8_t in_use; /* allocated */
	uint8_t busy;   /* referenced by an outstanding command */
};

struct vdi_bufpool {
	uint32_t prefix, alignment;
	struct vdi_bufreq *reqs; /* pending, not yet laid out */
	size_t nreqs;
	struct vdi_buf *bufs; /* sorted by (area, off) */
	size_t nbufs;
	struct vdi_area_map areas[VDI_MAX_AREAS];
	uint32_t area_count;
};

void vdi_bufpool_init(struct vdi_bufpool *p, uint32_t prefix, uint32_t alignment);
void vdi_bufpool_release(struct vdi_bufpool *p);
int vdi_bufpool_request(struct vdi_bufpool *p, uint32_t size, uint32_t alignment, uint32_t count);
/* Lays the pending requests out in a new area (none if nothing pending);
 * *area_bytes receives its size.  The requests are consumed either way. */
int vdi_bufpool_commit(struct vdi_bufpool *p, struct vdi_region *r, uint64_t *area_bytes);
uint32_t vdi_bufpool_count_requested(const struct vdi_bufpool *p, uint32_t size,
                                     uint32_t alignment);
uint32_t vdi_bufpool_count_free(const struct vdi_bufpool *p, uint32_t size, uint32_t alignment);
struct vdi_buf *vdi_bufpool_alloc(struct vdi_bufpool *p, uint32_t size, uint32_t alignment);
/* The buffer whose data starts at addr, or NULL. */
struct vdi_buf *vdi_bufpool_find(struct vdi_bufpool *p, const uint8_t *addr);
uint8_t *vdi_bufpool_addr(const struct vdi_bufpool *p, const struct vdi_buf *b);
uint32_t vdi_bufpool_handle(const struct vdi_buf *b);

#endif /* VDI_BUFPOOL_H */
