/* SPDX-License-Identifier: MIT */
/*
 * bufpool.c - the server's buffer areas and the allocator over them.
 *
 * RequestBuffers declares groups of buffers (size, alignment, count).
 * While the set is Configurable the groups are only summed; at
 * EndConfiguration they are laid out in area 0; after that each
 * RequestBuffers lays its group out in a new area at once (spec 9).
 *
 * Layout of one buffer: [prefix zone][data], the data start aligned to
 * max(set alignment, request alignment, 512) (D10), the prefix placed
 * just below it.  Offsets are multiples of 512 so that a handle, (area+1)
 * << 24 | offset >> 9, fits 32 bits (D24); an area is at most 8 GiB.
 *
 * The allocator is private to the server process (nothing here lives in
 * shared memory) and is protected by the server's lock.  Buffers are kept
 * sorted by (area, offset) so an address resolves by binary search.
 */
#include <stdlib.h>
#include <string.h>

#include "bufpool.h"
#include "internal.h"

#define AREA_LIMIT (1ull << 33) /* 24-bit handle offset in 512-byte units */

void vdi_bufpool_init(struct vdi_bufpool *p, uint32_t prefix, uint32_t alignment)
{
	memset(p, 0, sizeof(*p));
	p->prefix = prefix;
	p->alignment = alignment;
}

void vdi_bufpool_release(struct vdi_bufpool *p)
{
	uint32_t k;

	for (k = 0; k < p->area_count; k++)
		vdi_area_unmap(&p->areas[k]);
	free(p->bufs);
	free(p->reqs);
	memset(p, 0, sizeof(*p));
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

int vdi_bufpool_request(struct vdi_bufpool *p, uint32_t size, uint32_t alignment, uint32_t count)
{
	struct vdi_bufreq *n;

	n = realloc(p->reqs, (p->nreqs + 1) * sizeof(*n));
	if (!n)
		return vdi_fail(VD_E_MEMORY, "server RequestBuffers: out of memory");
	p->reqs = n;
	p->reqs[p->nreqs++] = (struct vdi_bufreq){ size, alignment, count };
	return 0;
}

/* Bytes an area needs for the pending requests. */
static uint64_t layout_size(const struct vdi_bufpool *p)
{
	uint64_t cursor = 0;
	size_t i;
	uint32_t j;

	for (i = 0; i < p->nreqs; i++) {
		for (j = 0; j < p->reqs[i].count; j++) {
			cursor = align_up(cursor + p->prefix, p->reqs[i].alignment) +
			         p->reqs[i].size;
			if (cursor > AREA_LIMIT)
				return UINT64_MAX;
		}
	}
	return align_up(cursor, 4096);
}

static int add_buffers(struct vdi_bufpool *p, uint32_t area)
{
	uint64_t cursor = 0, total = 0;
	struct vdi_buf *n;
	size_t i;
	uint32_t j;

	for (i = 0; i < p->nreqs; i++)
		total += p->reqs[i].count;
	n = realloc(p->bufs, (p->nbufs + total) * sizeof(*n));
	if (!n)
		return vdi_fail(VD_E_MEMORY, "server: out of memory for %llu buffer records",
		                (unsigned long long)total);
	p->bufs = n;
	for (i = 0; i < p->nreqs; i++) {
		for (j = 0; j < p->reqs[i].count; j++) {
			struct vdi_buf *b = &p->bufs[p->nbufs++];

			cursor = align_up(cursor + p->prefix, p->reqs[i].alignment);
			*b = (struct vdi_buf){ .area = area,
				               .off = cursor,
				               .cap = p->reqs[i].size,
				               .align = p->reqs[i].alignment };
			cursor += p->reqs[i].size;
		}
	}
	return 0;
}

int vdi_bufpool_commit(struct vdi_bufpool *p, struct vdi_region *r, uint64_t *area_bytes)
{
	uint64_t size = layout_size(p);
	uint32_t k = p->area_count;
	int rc;

	*area_bytes = 0;
	if (!p->nreqs)
		return 0;
	if (k >= VDI_MAX_AREAS)
		rc = vdi_fail(VD_E_MEMORY, "set '%s': all %d buffer areas are in use", r->name,
		              VDI_MAX_AREAS);
	else if (size == UINT64_MAX)
		rc = vdi_fail(VD_E_MEMORY,
		              "set '%s': requested buffers exceed %llu bytes in one area", r->name,
		              (unsigned long long)AREA_LIMIT);
	else
		rc = vdi_area_create(r, k, size, &p->areas[k]);
	if (!rc)
		rc = add_buffers(p, k);
	if (!rc) {
		p->area_count++;
		*area_bytes = size;
	} else if (k < VDI_MAX_AREAS && p->areas[k].base) {
		vdi_area_unmap(&p->areas[k]);
	}
	/* Spec: on VD_E_MEMORY the set keeps no buffer space; the server
	 * may request less and try again. */
	free(p->reqs);
	p->reqs = NULL;
	p->nreqs = 0;
	return rc;
}

uint32_t vdi_bufpool_count_requested(const struct vdi_bufpool *p, uint32_t size, uint32_t alignment)
{
	uint32_t n = 0;
	size_t i;

	for (i = 0; i < p->nreqs; i++)
		if (p->reqs[i].size >= size && p->reqs[i].alignment % alignment == 0)
			n += p->reqs[i].count;
	return n;
}

static int fits(const struct vdi_buf *b, uint32_t size, uint32_t alignment)
{
	return !b->in_use && b->cap >= size && b->off % alignment == 0;
}

uint32_t vdi_bufpool_count_free(const struct vdi_bufpool *p, uint32_t size, uint32_t alignment)
{
	uint32_t n = 0;
	size_t i;

	for (i = 0; i < p->nbufs; i++)
		n += fits(&p->bufs[i], size, alignment);
	return n;
}

struct vdi_buf *vdi_bufpool_alloc(struct vdi_bufpool *p, uint32_t size, uint32_t alignment)
{
	struct vdi_buf *best = NULL;
	size_t i;

	/* Best fit: the smallest free buffer that holds size bytes. */
	for (i = 0; i < p->nbufs; i++) {
		struct vdi_buf *b = &p->bufs[i];

		if (fits(b, size, alignment) && (!best || b->cap < best->cap))
			best = b;
	}
	if (best) {
		best->in_use = 1;
		best->size = size;
	}
	return best;
}

struct vdi_buf *vdi_bufpool_find(struct vdi_bufpool *p, const uint8_t *addr)
{
	uint32_t k;

	for (k = 0; k < p->area_count; k++) {
		const struct vdi_area_map *m = &p->areas[k];
		size_t lo = 0, hi = p->nbufs;
		uint64_t off;

		if (addr < m->base || addr >= m->base + m->size)
			continue;
		off = (uint64_t)(addr - m->base);
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			const struct vdi_buf *b = &p->bufs[mid];

			if (b->area < k || (b->area == k && b->off < off))
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < p->nbufs && p->bufs[lo].area == k && p->bufs[lo].off == off)
			return &p->bufs[lo];
		return NULL;
	}
	return NULL;
}

uint8_t *vdi_bufpool_addr(const struct vdi_bufpool *p, const struct vdi_buf *b)
{
	return p->areas[b->area].base + b->off;
}

uint32_t vdi_bufpool_handle(const struct vdi_buf *b)
{
	return ((b->area + 1) << 24) | (uint32_t)(b->off >> 9);
}
