/* SPDX-License-Identifier: MIT */
/* buffer.c - sealing a buffer, and verifying one that a peer handed us. */
#include <errno.h>
#include <string.h>

#include "internal.h"

int hgsmi_buffer_init(void *base, uint32_t offset, uint32_t data_size,
		      uint8_t channel, uint16_t info, uint32_t reply_cap)
{
	struct hgsmi_buffer_header h = {0};
	struct hgsmi_buffer_tail t = {0};
	uint8_t *p = (uint8_t *)base + offset;

	/* In 32-bit arithmetic: the whole block must end below 2^32. */
	if (!base || offset > UINT32_MAX - (uint32_t)HGSMI_BUFFER_OVERHEAD ||
	    data_size > UINT32_MAX - (uint32_t)HGSMI_BUFFER_OVERHEAD - offset)
		return -EINVAL;
	h.data_size = data_size;
	h.channel = channel;
	h.channel_info = info;
	if (reply_cap > data_size) {
		h.flags = HGSMI_BUFFER_HEADER_F_REPLY_CAP;
		h.u0 = reply_cap;
	}
	t.checksum = hgsmi_checksum(offset, &h, &t);
	memcpy(p, &h, sizeof(h));
	memcpy(p + sizeof(h) + data_size, &t, sizeof(t));
	return 0;
}

int hgsmi_buffer_verify(const void *base, uint32_t area_off, uint32_t area_size,
			uint32_t offset, struct hgsmi_msg *out)
{
	struct hgsmi_buffer_header h;
	struct hgsmi_buffer_tail t;
	const uint8_t *p;
	uint32_t rel, room, cap;

	/* Alignment first: every heap block starts on a cache line. */
	if (offset % HGSMI_HEAP_ALIGN != 0)
		return -EINVAL;
	/* Inside the area with room for header and tail, in unsigned 32-bit
	 * arithmetic that cannot wrap: rel < area_size is checked first. */
	if (offset < area_off)
		return -ERANGE;
	rel = offset - area_off;
	if (area_size < HGSMI_BUFFER_OVERHEAD || rel > area_size - HGSMI_BUFFER_OVERHEAD)
		return -ERANGE;
	room = area_size - HGSMI_BUFFER_OVERHEAD - rel; /* largest data that fits */

	/* The peer may rewrite the header while we look: copy it once, then a
	 * compiler barrier so no later check re-reads shared memory. */
	p = (const uint8_t *)base + offset;
	memcpy(&h, p, sizeof(h));
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (h.data_size > room)
		return -ERANGE;
	memcpy(&t, p + sizeof(h) + h.data_size, sizeof(t));
	__atomic_signal_fence(__ATOMIC_SEQ_CST);

	if (h.flags & ~HGSMI_BUFFER_HEADER_F_KNOWN)
		return -EPROTO;
	if (h.flags & HGSMI_BUFFER_HEADER_F_REPLY_CAP) {
		cap = h.u0;
		if (h.u1 != 0)
			return -EPROTO;
		if (cap < h.data_size || cap > room)
			return -ERANGE;
	} else {
		if (h.u0 != 0 || h.u1 != 0)
			return -EPROTO;
		cap = h.data_size;
	}
	if (t.reserved != 0)
		return -EPROTO;
	if (hgsmi_checksum(offset, &h, &t) != t.checksum)
		return -EBADMSG;

	out->offset = offset;
	out->data = offset + (uint32_t)sizeof(h);
	out->size = h.data_size;
	out->capacity = cap;
	out->channel = h.channel;
	out->flags = h.flags;
	out->info = h.channel_info;
	out->status = 0;
	return 0;
}

void hgsmi_int_buffer_result(uint8_t *base, const struct hgsmi_msg *m)
{
	struct hgsmi_buffer_header *h = (struct hgsmi_buffer_header *)(void *)(base + m->offset);

	WRITE_ONCE(h->u0, (uint32_t)m->status);
	WRITE_ONCE(h->u1, m->size);
}
