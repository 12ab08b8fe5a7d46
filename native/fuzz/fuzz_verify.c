/* SPDX-License-Identifier: MIT */
/*
 * fuzz_verify.c - hgsmi_buffer_verify against any bytes, any area, any offset.
 *
 * Input (little-endian):
 *   u32 area_off   where the area starts in the (virtual) segment
 *   u32 offset     the offset the peer handed us (see mode)
 *   u8  mode       bit 0: offset is relative, offset = area_off + value
 *                  bit 1: seal: write the right checksum into the tail of the
 *                         header found at offset first, so the fuzzer gets
 *                         past the checksum without solving it
 *   ...            the area's bytes; area_size is exactly what is left
 *
 * The area is the tail of a heap block of exactly area_size bytes, with a
 * poisoned guard before it, so a single byte read outside it is an ASan
 * report.  Oracles: verify agrees with an independent 64-bit reference of
 * docs/design.md §3's rules, and what it accepts (data and reply capacity, then
 * the tail) lies in the area: the harness reads all of it.
 */
#define _GNU_SOURCE
#include <errno.h>

#include "fuzz.h"

#define GUARD 256 /* poisoned bytes before the area */

/* docs/design.md §3 in 64-bit arithmetic, where nothing can wrap. */
static int reference_verify(const uint8_t *area, uint64_t area_off,
			    uint64_t area_size, uint64_t offset)
{
	struct hgsmi_buffer_header h;
	struct hgsmi_buffer_tail t;
	uint64_t rel;

	if (offset % HGSMI_HEAP_ALIGN)
		return -EINVAL;
	if (offset < area_off)
		return -ERANGE;
	rel = offset - area_off;
	if (rel + HGSMI_BUFFER_OVERHEAD > area_size)
		return -ERANGE;
	memcpy(&h, area + rel, sizeof(h));
	if (rel + HGSMI_BUFFER_OVERHEAD + h.data_size > area_size)
		return -ERANGE;
	memcpy(&t, area + rel + sizeof(h) + h.data_size, sizeof(t));
	if (h.flags & ~HGSMI_BUFFER_HEADER_F_KNOWN)
		return -EPROTO;
	if (h.flags & HGSMI_BUFFER_HEADER_F_REPLY_CAP) {
		if (h.u1)
			return -EPROTO;
		if (h.u0 < h.data_size || rel + HGSMI_BUFFER_OVERHEAD + h.u0 > area_size)
			return -ERANGE;
	} else if (h.u0 || h.u1) {
		return -EPROTO;
	}
	if (t.reserved)
		return -EPROTO;
	if (hgsmi_checksum((uint32_t)offset, &h, &t) != t.checksum)
		return -EBADMSG;
	return 0;
}

/* Write the right checksum for whatever header sits at rel, if it fits. */
static void seal(uint8_t *area, uint32_t area_size, uint32_t rel, uint32_t offset)
{
	struct hgsmi_buffer_header h;
	struct hgsmi_buffer_tail t;
	uint64_t tail;

	if ((uint64_t)rel + sizeof(h) > area_size)
		return;
	memcpy(&h, area + rel, sizeof(h));
	tail = (uint64_t)rel + sizeof(h) + h.data_size;
	if (tail + sizeof(t) > area_size)
		return;
	memcpy(&t, area + tail, sizeof(t));
	t.checksum = hgsmi_checksum(offset, &h, &t);
	memcpy(area + tail, &t, sizeof(t));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* The known answers of docs/design.md §3: a wrong checksum would make
	 * every "accepted" verdict below meaningless. */
	static const struct {
		uint32_t off, size;
		uint8_t ch;
		uint16_t info;
		uint32_t sum;
	} kat[] = {{0x00000000, 8, 1, 0, 0x4e7ddd50},
		   {0x00FF0000, 8, 2, 1, 0x8228766e},
		   {0x00FF0020, 8, 2, 12, 0xeaf0d496}};

	(void)argc, (void)argv;
	for (size_t i = 0; i < sizeof(kat) / sizeof(kat[0]); i++) {
		struct hgsmi_buffer_header h = {.data_size = kat[i].size,
						.channel = kat[i].ch,
						.channel_info = kat[i].info};
		struct hgsmi_buffer_tail t = {0};

		FUZZ_CHECK(hgsmi_checksum(kat[i].off, &h, &t) == kat[i].sum);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cursor c = {data, size};
	uint32_t area_off = take_u32(&c), value = take_u32(&c), offset;
	uint8_t mode = take_u8(&c);
	uint32_t area_size = (uint32_t)c.left;
	struct hgsmi_msg m;
	uint8_t *block, *area;
	const uint8_t *base;
	int rc, ref;

	if (c.left > UINT32_MAX / 2)
		return 0;
	/* The caller's contract: the area lies within 32-bit offsets. */
	if (area_off > UINT32_MAX - area_size)
		area_off = UINT32_MAX - area_size;
	offset = (mode & 1) ? area_off + value : value;

	block = malloc(GUARD + (size_t)area_size);
	if (!block)
		return 0;
	area = block + GUARD;
	memcpy(area, c.p, area_size);
	if ((mode & 2) && offset >= area_off)
		seal(area, area_size, offset - area_off, offset);
	ASAN_POISON_MEMORY_REGION(block, GUARD);

	/* base + area_off is the area: base itself points outside the block,
	 * as the segment base does for a heap in the middle of the VRAM. */
	base = (const uint8_t *)((uintptr_t)area - area_off);
	memset(&m, 0xa5, sizeof(m));
	rc = hgsmi_buffer_verify(base, area_off, area_size, offset, &m);
	ref = reference_verify(area, area_off, area_size, offset);
	if (rc != ref) {
		fprintf(stderr, "verify(area_off=%#x, size=%#x, offset=%#x) = %d, reference %d\n",
			area_off, area_size, offset, rc, ref);
		FUZZ_CHECK(rc == ref);
	}
	if (rc == 0) {
		uint64_t rel = (uint64_t)offset - area_off, sum = 0;
		uint64_t room = m.capacity > m.size ? m.capacity : m.size;

		FUZZ_CHECK(m.offset == offset);
		FUZZ_CHECK(m.data == offset + sizeof(struct hgsmi_buffer_header));
		FUZZ_CHECK(m.capacity >= m.size);
		FUZZ_CHECK(m.status == 0);
		FUZZ_CHECK(!(m.flags & ~HGSMI_BUFFER_HEADER_F_KNOWN));
		FUZZ_CHECK(rel + HGSMI_BUFFER_OVERHEAD + room <= area_size);
		/* What a handler may touch, then the tail: all in the block. */
		for (uint64_t i = 0; i < room; i++)
			sum += base[m.data + i];
		for (uint64_t i = 0; i < sizeof(struct hgsmi_buffer_tail); i++)
			sum += base[m.data + m.size + i];
		__asm__ volatile("" : : "r"(sum));
	}
	ASAN_UNPOISON_MEMORY_REGION(block, GUARD);
	free(block);
	return 0;
}
