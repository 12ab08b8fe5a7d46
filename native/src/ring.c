/* SPDX-License-Identifier: MIT */
/*
 * ring.c - single-producer, single-consumer rings of uint32_t offsets.
 *
 * Each side keeps its own index privately and only publishes it; the other
 * side's index is read once with an acquire load and checked, because the
 * peer may have written anything there.
 */
#include <errno.h>

#include "internal.h"

uint32_t hgsmi_int_ring_bytes(uint32_t entries)
{
	return (uint32_t)sizeof(struct hgsmi_ring_header) + entries * 4u;
}

void hgsmi_int_ring_init(struct hgsmi_ring *r, void *base,
			 const struct hgsmi_region *region, uint32_t entries,
			 bool producer)
{
	uint8_t *p = (uint8_t *)base + region->offset;

	r->hdr = (struct hgsmi_ring_header *)(void *)p;
	r->slots = (uint32_t *)(void *)(p + sizeof(struct hgsmi_ring_header));
	r->mask = entries - 1;
	/* Start from what the segment says, so a re-mapped ring continues. */
	r->index = producer ? READ_ONCE(r->hdr->tail) : READ_ONCE(r->hdr->head);
}

int hgsmi_int_ring_push(struct hgsmi_ring *r, const uint32_t *v, unsigned n)
{
	/* Acquire: the consumer's reads of the slots it released happened
	 * before we overwrite them. */
	uint32_t head = load_acquire(&r->hdr->head);
	uint32_t used = r->index - head;
	uint32_t space, k;

	if (used > r->mask + 1)
		return -EPROTO;
	space = r->mask + 1 - used;
	k = n < space ? n : space;
	for (uint32_t i = 0; i < k; i++)
		WRITE_ONCE(r->slots[(r->index + i) & r->mask], v[i]);
	/* Release: the slots, and the buffers they name, are visible before
	 * the consumer can see the new tail.  Nothing pushed: no store, which
	 * would only pull the line from the consumer. */
	if (k)
		store_release(&r->hdr->tail, r->index + k);
	r->index += k;
	return (int)k;
}

int hgsmi_int_ring_pop(struct hgsmi_ring *r, uint32_t *out, unsigned max)
{
	/* Acquire: the slots and buffer contents written before this tail was
	 * published are visible to the reads below. */
	uint32_t tail = load_acquire(&r->hdr->tail);
	uint32_t avail = tail - r->index;
	uint32_t k;

	if (avail > r->mask + 1)
		return -EPROTO;
	k = max < avail ? max : avail;
	for (uint32_t i = 0; i < k; i++)
		out[i] = READ_ONCE(r->slots[(r->index + i) & r->mask]);
	/* Release: our slot reads are done before the producer may reuse them.
	 * Nothing taken (the common empty poll): no store to the shared line. */
	if (k)
		store_release(&r->hdr->head, r->index + k);
	r->index += k;
	return (int)k;
}

uint32_t hgsmi_int_ring_pending(const struct hgsmi_ring *r)
{
	uint32_t avail = load_acquire(&r->hdr->tail) - r->index;

	return avail > r->mask + 1 ? 0 : avail;
}
