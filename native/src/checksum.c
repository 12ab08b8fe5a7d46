/* SPDX-License-Identifier: MIT */
/* checksum.c - HGSMI's buffer checksum, byte for byte the original's. */
#include <string.h>

#include "internal.h"

static inline uint32_t oaat_add(uint32_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h += p[i];
		h += h << 10;
		h ^= h >> 6;
	}
	return h;
}

/*
 * Bob Jenkins' one-at-a-time hash over the offset (little-endian), the
 * header and the tail's reserved word.  The offset binds the buffer to where
 * it sits; the data is not covered because handlers rewrite it in place.
 */
uint32_t hgsmi_checksum(uint32_t offset, const struct hgsmi_buffer_header *header,
			const struct hgsmi_buffer_tail *tail)
{
	const uint8_t off_le[4] = {(uint8_t)offset, (uint8_t)(offset >> 8),
				   (uint8_t)(offset >> 16), (uint8_t)(offset >> 24)};
	uint32_t h = 0;

	h = oaat_add(h, off_le, sizeof(off_le));
	h = oaat_add(h, (const uint8_t *)header, sizeof(*header));
	h = oaat_add(h, (const uint8_t *)tail, offsetof(struct hgsmi_buffer_tail, checksum));
	h += h << 3;
	h ^= h >> 11;
	h += h << 15;
	return h;
}
