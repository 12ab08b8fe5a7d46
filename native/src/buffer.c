/* SPDX-License-Identifier: MIT */
/* buffer.c - sealing a buffer, and verifying one that a peer handed us. */
#include <errno.h>
#include <string.h>

#include "internal.h"

void hgsmi_int_buffer_header(struct hgsmi_buffer_header *h, uint32_t data_size,
			     uint8_t channel, uint16_t info, uint32_t reply_cap)
{
	*h = (struct hgsmi_buffer_header){.data_size = data_size, .channel = channel,
					  .channel_info = info};
	if (reply_cap > data_size) {
		h->flags = HGSMI_BUFFER_HEADER_F_REPLY_CAP;
		h->u0 = reply_cap;
	}
}

static inline void put_sealed(uint8_t *base, uint32_t offset,
			      const struct hgsmi_buffer_header *h, uint32_t checksum)
{
	struct hgsmi_buffer_tail t = {.reserved = 0, .checksum = checksum};
	uint8_t *p = base + offset;

	memcpy(p, h, sizeof(*h));
	memcpy(p + sizeof(*h) + h->data_size, &t, sizeof(t));
}

int hgsmi_buffer_init(void *base, uint32_t offset, uint32_t data_size,
		      uint8_t channel, uint16_t info, uint32_t reply_cap)
{
	struct hgsmi_buffer_header h;
	struct hgsmi_buffer_tail t = {0};

	/* In 32-bit arithmetic: the whole block must end below 2^32. */
	if (!base || offset > UINT32_MAX - (uint32_t)HGSMI_BUFFER_OVERHEAD ||
	    data_size > UINT32_MAX - (uint32_t)HGSMI_BUFFER_OVERHEAD - offset)
		return -EINVAL;
	hgsmi_int_buffer_header(&h, data_size, channel, info, reply_cap);
	put_sealed(base, offset, &h, hgsmi_checksum(offset, &h, &t));
	return 0;
}

void hgsmi_int_buffer_seal_many(uint8_t *base, const uint32_t *offs,
				const struct hgsmi_buffer_header *hdrs, unsigned n)
{
	uint32_t sums[HGSMI_BATCH];

	for (unsigned i = 0; i < n; i += HGSMI_BATCH) {
		unsigned k = n - i < HGSMI_BATCH ? n - i : HGSMI_BATCH;

		hgsmi_int_checksum_many(offs + i, hdrs + i, NULL, k, sums);
		for (unsigned j = 0; j < k; j++)
			put_sealed(base, offs[i + j], &hdrs[i + j], sums[j]);
	}
}

/*
 * Every check of hgsmi_buffer_verify but the checksum, in its order, on
 * private copies: *h and *t are read from shared memory once here and never
 * again.  Returns 0 (then *cap is set) or the error.
 */
static inline int verify_fields(const uint8_t *base, uint32_t area_off, uint32_t area_size,
				uint32_t offset, struct hgsmi_buffer_header *h,
				struct hgsmi_buffer_tail *t, uint32_t *cap)
{
	const uint8_t *p;
	uint32_t rel, room;

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
	p = base + offset;
	memcpy(h, p, sizeof(*h));
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (h->data_size > room)
		return -ERANGE;
	memcpy(t, p + sizeof(*h) + h->data_size, sizeof(*t));
	__atomic_signal_fence(__ATOMIC_SEQ_CST);

	if (h->flags & ~HGSMI_BUFFER_HEADER_F_KNOWN)
		return -EPROTO;
	if (h->flags & HGSMI_BUFFER_HEADER_F_REPLY_CAP) {
		*cap = h->u0;
		if (h->u1 != 0)
			return -EPROTO;
		if (*cap < h->data_size || *cap > room)
			return -ERANGE;
	} else {
		if (h->u0 != 0 || h->u1 != 0)
			return -EPROTO;
		*cap = h->data_size;
	}
	if (t->reserved != 0)
		return -EPROTO;
	return 0;
}

static inline void verified_msg(struct hgsmi_msg *out, uint32_t offset,
				const struct hgsmi_buffer_header *h, uint32_t cap)
{
	out->offset = offset;
	out->data = offset + (uint32_t)sizeof(*h);
	out->size = h->data_size;
	out->capacity = cap;
	out->channel = h->channel;
	out->flags = h->flags;
	out->info = h->channel_info;
	out->status = 0;
}

int hgsmi_buffer_verify(const void *base, uint32_t area_off, uint32_t area_size,
			uint32_t offset, struct hgsmi_msg *out)
{
	struct hgsmi_buffer_header h;
	struct hgsmi_buffer_tail t;
	uint32_t cap;
	int rc = verify_fields(base, area_off, area_size, offset, &h, &t, &cap);

	if (rc < 0)
		return rc;
	if (hgsmi_checksum(offset, &h, &t) != t.checksum)
		return -EBADMSG;
	verified_msg(out, offset, &h, cap);
	return 0;
}

/*
 * The checks per buffer first, then one hgsmi_int_checksum_many over the
 * private copies of those that passed (the checksum is still the last check
 * of each buffer, as in hgsmi_buffer_verify).
 */
void hgsmi_int_buffer_verify_many(const uint8_t *base, uint32_t area_off,
				  uint32_t area_size, const uint32_t *offs,
				  unsigned n, struct hgsmi_msg *out, int *rcs)
{
	struct hgsmi_buffer_header h[HGSMI_BATCH];
	uint32_t o[HGSMI_BATCH], sums[HGSMI_BATCH], want[HGSMI_BATCH], cap[HGSMI_BATCH];
	unsigned idx[HGSMI_BATCH];

	for (unsigned i = 0; i < n; i += HGSMI_BATCH) {
		unsigned k = n - i < HGSMI_BATCH ? n - i : HGSMI_BATCH, m = 0;

		for (unsigned j = 0; j < k; j++) {
			struct hgsmi_buffer_tail t;

			rcs[i + j] = verify_fields(base, area_off, area_size, offs[i + j],
						   &h[m], &t, &cap[m]);
			if (rcs[i + j] == 0) {
				o[m] = offs[i + j];
				want[m] = t.checksum;
				idx[m++] = i + j;
			}
		}
		/* Every tail word that got here is zero (verify_fields). */
		hgsmi_int_checksum_many(o, h, NULL, m, sums);
		for (unsigned j = 0; j < m; j++) {
			if (sums[j] != want[j])
				rcs[idx[j]] = -EBADMSG;
			else
				verified_msg(&out[idx[j]], o[j], &h[j], cap[j]);
		}
	}
}

void hgsmi_int_buffer_result(uint8_t *base, const struct hgsmi_msg *m)
{
	struct hgsmi_buffer_header *h = (struct hgsmi_buffer_header *)(void *)(base + m->offset);

	WRITE_ONCE(h->u0, (uint32_t)m->status);
	WRITE_ONCE(h->u1, m->size);
}
