/* SPDX-License-Identifier: MIT */
/*
 * test_buffer.c - the HGSMI buffer wire format: checksum known answers,
 * hgsmi_buffer_init/hgsmi_buffer_verify round trips, every header and tail
 * field flipped or out of range, and a million random headers at random
 * offsets.
 *
 * Every area under test is exactly one malloc'd block and the segment base
 * is derived from it (base = block - area_off), so a read one byte before or
 * after the area is a heap-buffer-overflow under ASan (`make asan`).
 * Standalone: exit 0 pass, 1 fail.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hgsmi.h"
#include "helpers.h"
#include "internal.h" /* the batched checksum, seal and verify */
#include "rng.h"

#define HDR ((uint32_t)sizeof(struct hgsmi_buffer_header))
#define OVH ((uint32_t)HGSMI_BUFFER_OVERHEAD)

/* A fixed seed makes every failure reproducible (rng.h). */
static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rnd(void) { return rng_next(&rng_state); }
static uint32_t rnd_below(uint32_t n) { return (uint32_t)(rnd() % n); }

/* ---- an area that is exactly one heap block ------------------------------ */

struct area {
	uint8_t *mem;  /* malloc'd, exactly `size` bytes (at least 1) */
	uint8_t *base; /* the segment base: base + off == mem */
	uint32_t off, size;
};

static struct area area_new(uint32_t off, uint32_t size)
{
	struct area a = {.off = off, .size = size};

	a.mem = malloc(size ? size : 1);
	CHECK(a.mem);
	CHECK((uintptr_t)a.mem > (uintptr_t)off); /* base must not wrap */
	/* Integer arithmetic: base is never dereferenced below `mem`. */
	a.base = (uint8_t *)((uintptr_t)a.mem - off);
	for (uint32_t i = 0; i < size; i++)
		a.mem[i] = (uint8_t)(0x5a ^ (i * 37));
	return a;
}

static void area_free(struct area *a)
{
	free(a->mem);
	a->mem = a->base = NULL;
}

static int verify(const struct area *a, uint32_t offset, struct hgsmi_msg *out)
{
	return hgsmi_buffer_verify(a->base, a->off, a->size, offset, out);
}

/* Header and tail as they sit in the area (offset must be inside it). */
static struct hgsmi_buffer_header *hdr_at(const struct area *a, uint32_t offset)
{
	return (struct hgsmi_buffer_header *)(void *)(a->base + offset);
}

static struct hgsmi_buffer_tail *tail_at(const struct area *a, uint32_t offset,
					 uint32_t data_size)
{
	return (struct hgsmi_buffer_tail *)(void *)(a->base + offset + HDR + data_size);
}

/*
 * Write a header and tail by hand and seal them with the right checksum, so
 * that the check under test, not the checksum, is what must refuse it.  The
 * tail is written only if it falls inside the area.
 */
static void forge(const struct area *a, uint32_t offset,
		  const struct hgsmi_buffer_header *h, uint32_t tail_reserved)
{
	struct hgsmi_buffer_tail t = {.reserved = tail_reserved};
	uint64_t tail_end = (uint64_t)offset + HDR + h->data_size + sizeof(t);

	CHECK(offset >= a->off && (uint64_t)offset + HDR <= (uint64_t)a->off + a->size);
	t.checksum = hgsmi_checksum(offset, h, &t);
	memcpy(a->base + offset, h, sizeof(*h));
	if (tail_end <= (uint64_t)a->off + a->size)
		memcpy(a->base + offset + HDR + h->data_size, &t, sizeof(t));
}

static const char *ename(int rc)
{
	switch (rc) {
	case 0: return "0";
	case -EINVAL: return "-EINVAL";
	case -ERANGE: return "-ERANGE";
	case -EPROTO: return "-EPROTO";
	case -EBADMSG: return "-EBADMSG";
	default: return "other";
	}
}

#define CHECK_EQ_RC(expr, want)                                                \
	do {                                                                   \
		int got_ = (expr), want_ = (want);                             \
		if (got_ != want_) {                                           \
			fprintf(stderr, "%s:%d: %s = %d (%s), want %d (%s)\n", \
				__FILE__, __LINE__, #expr, got_, ename(got_),  \
				want_, ename(want_));                          \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* ---- 1. checksum known answers ------------------------------------------ */

static void test_checksum_kat(void)
{
	static const struct {
		uint32_t offset, data_size;
		uint8_t channel;
		uint16_t info;
		uint32_t want;
	} kat[] = {
		{0x00000000u, 8, 1, 0, 0x4e7ddd50u},
		{0x00FF0000u, 8, 2, 1, 0x8228766eu},
		{0x00FF0020u, 8, 2, 12, 0xeaf0d496u},
	};

	for (unsigned i = 0; i < sizeof(kat) / sizeof(kat[0]); i++) {
		struct hgsmi_buffer_header h = {.data_size = kat[i].data_size,
						.channel = kat[i].channel,
						.channel_info = kat[i].info};
		struct hgsmi_buffer_tail t = {0};
		struct hgsmi_buffer_tail t2;
		struct hgsmi_msg m;
		uint32_t sum = hgsmi_checksum(kat[i].offset, &h, &t);

		if (sum != kat[i].want) {
			fprintf(stderr, "checksum KAT %u: got 0x%08x want 0x%08x\n", i,
				sum, kat[i].want);
			exit(1);
		}
		/* The checksum word itself is not covered. */
		t.checksum = 0xdeadbeef;
		CHECK(hgsmi_checksum(kat[i].offset, &h, &t) == kat[i].want);

		/* hgsmi_buffer_init seals the same bytes, at that offset. */
		{
			struct area a = area_new(kat[i].offset, OVH + 8);
			CHECK_RC(hgsmi_buffer_init(a.base, kat[i].offset, 8, kat[i].channel,
						   kat[i].info, 0));
			CHECK(memcmp(hdr_at(&a, kat[i].offset), &h, sizeof(h)) == 0);
			memcpy(&t2, tail_at(&a, kat[i].offset, 8), sizeof(t2));
			CHECK(t2.reserved == 0 && t2.checksum == kat[i].want);
			CHECK_EQ_RC(verify(&a, kat[i].offset, &m), kat[i].offset % 64 ? -EINVAL : 0);
			area_free(&a);
		}
	}
}

/* ---- 2. init + verify round trip ----------------------------------------- */

static void test_round_trip(void)
{
	static const uint32_t sizes[] = {0, 1, 7, 8, 40, 63, 64, 65, 1000, 4096};
	const uint32_t area_off = 0x10000, area_size = 8192 + 24;

	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		static const int32_t caps[] = {-1, 0, 1, 2, 100, 5000};

		for (unsigned j = 0; j < sizeof(caps) / sizeof(caps[0]); j++) {
			struct area a = area_new(area_off, area_size);
			uint32_t ds = sizes[i];
			/* -1: cap one less than the data; others are absolute
			 * or (1, 2) relative to the data size. */
			uint32_t cap = caps[j] < 0 ? (ds ? ds - 1 : 0)
				       : caps[j] == 1 ? ds
				       : caps[j] == 2 ? ds + 1 : (uint32_t)caps[j];
			uint32_t need = OVH + (cap > ds ? cap : ds);
			/* Both at the start and flush against the end of the area. */
			uint32_t offs[2] = {area_off,
					    (area_off + area_size - need) & ~63u};
			uint8_t pattern[5000];

			for (unsigned k = 0; k < 2; k++) {
				uint32_t off = offs[k];
				struct hgsmi_msg m;
				struct hgsmi_buffer_header h;

				memset(&m, 0xcc, sizeof(m));
				for (uint32_t b = 0; b < ds; b++)
					pattern[b] = (uint8_t)(b * 13 + k);
				memcpy(a.base + off + HDR, pattern, ds);
				CHECK_RC(hgsmi_buffer_init(a.base, off, ds, 0x42, 0xbeef, cap));
				/* The data is never touched by init. */
				CHECK(memcmp(a.base + off + HDR, pattern, ds) == 0);
				memcpy(&h, hdr_at(&a, off), sizeof(h));
				CHECK(h.data_size == ds && h.channel == 0x42 &&
				      h.channel_info == 0xbeef && h.u1 == 0);
				if (cap > ds)
					CHECK(h.flags == HGSMI_BUFFER_HEADER_F_REPLY_CAP &&
					      h.u0 == cap);
				else
					CHECK(h.flags == 0 && h.u0 == 0);
				CHECK_EQ_RC(verify(&a, off, &m), 0);
				CHECK(m.offset == off && m.data == off + HDR);
				CHECK(m.size == ds);
				CHECK(m.capacity == (cap > ds ? cap : ds));
				CHECK(m.channel == 0x42 && m.info == 0xbeef);
				CHECK(m.flags == h.flags && m.status == 0);
				/* Verify is read-only. */
				CHECK(memcmp(hdr_at(&a, off), &h, sizeof(h)) == 0);
				/* The same buffer is refused in an area that does
				 * not contain all of it. */
				CHECK_EQ_RC(hgsmi_buffer_verify(a.base, off + 64, area_size, off, &m),
					    -ERANGE);
				if (off + need - area_off > OVH)
					CHECK(hgsmi_buffer_verify(a.base, area_off,
								  off + need - area_off - 1,
								  off, &m) < 0);
			}
			area_free(&a);
		}
	}

	/* Misuse of init. */
	{
		struct area a = area_new(0, 256);
		CHECK_EQ_RC(hgsmi_buffer_init(NULL, 0, 8, 2, 0, 0), -EINVAL);
		CHECK_EQ_RC(hgsmi_buffer_init(a.base, HGSMI_OFFSET_VOID, 8, 2, 0, 0), -EINVAL);
		CHECK_EQ_RC(hgsmi_buffer_init(a.base, 64, UINT32_MAX, 2, 0, 0), -EINVAL);
		CHECK_EQ_RC(hgsmi_buffer_init(a.base, 64, UINT32_MAX - OVH - 63, 2, 0, 0),
			    -EINVAL);
		area_free(&a);
	}
}

/*
 * Regression (fixed in 03ddf0e): hgsmi_buffer_init's overflow check was done
 * in size_t (HGSMI_BUFFER_OVERHEAD is a sizeof), so for offset > UINT32_MAX -
 * 24 the subtraction wrapped to a huge value and the check passed: init then
 * wrote a header and tail that straddle 2^32.  The block [offset, offset + 24 + data_size) does not fit in
 * 32-bit offsets, so init must refuse it.  Two pages are mapped exactly where
 * a wrongly accepted buffer would be written, so the bug shows as a wrong
 * return code, never as a crash.
 */
static void test_init_wrap(void)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint8_t *q = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	CHECK(q != MAP_FAILED);
	/* From UINT32_MAX - 22 on, an empty buffer ends past 2^32. */
	for (uint32_t off = UINT32_MAX - OVH + 2; off < UINT32_MAX; off++) {
		/* base + off == q + pg - 32: header and tail land in page 0. */
		uint8_t *base = (uint8_t *)((uintptr_t)q + (uintptr_t)pg - 32 -
					    (uintptr_t)off);
		int rc = hgsmi_buffer_init(base, off, 0, 2, 0, 0);

		if (rc != -EINVAL) {
			fprintf(stderr,
				"core bug: hgsmi_buffer_init(offset 0x%08x, data_size 0) "
				"= %d, want -EINVAL: the block crosses 2^32 "
				"(src/buffer.c: the overflow check is done in size_t "
				"and wraps)\n",
				off, rc);
			exit(1);
		}
	}
	/* Below that the check works: a block ending at 2^32 - 1 is fine,
	 * one ending past 2^32 is not. */
	{
		uint32_t off = 0xffffff80u;
		uint8_t *base = (uint8_t *)((uintptr_t)q + (uintptr_t)pg - 128 -
					    (uintptr_t)off);

		CHECK_EQ_RC(hgsmi_buffer_init(base, off, 0x7f - OVH, 2, 0, 0), 0);
		CHECK_EQ_RC(hgsmi_buffer_init(base, off, 0x80 - OVH + 1, 2, 0, 0), -EINVAL);
	}
	munmap(q, (size_t)pg * 2);
}

/* ---- 3. every field flipped or out of range ------------------------------ */

/* Expected verdict for a bit flip in the sealed buffer at `off`. */
static void flip_all_bits(uint32_t area_off, uint32_t area_size, uint32_t off,
			  uint32_t ds, uint32_t cap)
{
	struct area a = area_new(area_off, area_size);
	uint8_t *pristine = malloc(area_size);
	uint32_t room = area_off + area_size - OVH - off;
	struct hgsmi_msg m;

	CHECK(pristine);
	CHECK_RC(hgsmi_buffer_init(a.base, off, ds, 0x33, 0x1234, cap));
	CHECK_EQ_RC(verify(&a, off, &m), 0);
	memcpy(pristine, a.mem, area_size);

	for (unsigned byte = 0; byte < OVH; byte++) {
		for (unsigned bit = 0; bit < 8; bit++) {
			uint8_t *p = byte < HDR ? a.base + off + byte
						: a.base + off + HDR + ds + (byte - HDR);
			struct hgsmi_buffer_header h;
			int rc, want;

			memcpy(a.mem, pristine, area_size);
			*p ^= (uint8_t)(1u << bit);
			memcpy(&h, hdr_at(&a, off), sizeof(h));
			rc = verify(&a, off, &m);
			if (byte < 4) {
				/* data_size: too big, or the tail is read from
				 * another place where it does not match. */
				want = h.data_size > room ? -ERANGE : 0;
				if (want == 0) {
					CHECK(rc == -EBADMSG || rc == -EPROTO ||
					      rc == -ERANGE);
					continue;
				}
			} else if (byte == 4) {
				/* flags */
				if ((h.flags & ~HGSMI_BUFFER_HEADER_F_KNOWN) != 0)
					want = -EPROTO; /* SEQ or unknown bits */
				else if (h.flags & HGSMI_BUFFER_HEADER_F_REPLY_CAP)
					want = h.u0 < h.data_size || h.u0 > room ? -ERANGE
										 : -EBADMSG;
				else
					want = h.u0 || h.u1 ? -EPROTO : -EBADMSG;
			} else if (byte < 8) {
				want = -EBADMSG; /* channel, channel_info */
			} else if (byte < 12) {
				/* u0: the reply capacity, or reserved */
				if (h.flags & HGSMI_BUFFER_HEADER_F_REPLY_CAP)
					want = h.u0 < h.data_size || h.u0 > room ? -ERANGE
										 : -EBADMSG;
				else
					want = -EPROTO;
			} else if (byte < 16) {
				/* u1: reserved either way ("u1 stays 0"). */
				want = -EPROTO;
			} else if (byte < 20) {
				want = -EPROTO; /* tail.reserved */
			} else {
				want = -EBADMSG; /* tail.checksum */
			}
			if (rc != want) {
				fprintf(stderr,
					"flip byte %u bit %u (buffer at 0x%x, data %u, cap %u): "
					"verify = %d (%s), want %d (%s)\n",
					byte, bit, off, ds, cap, rc, ename(rc), want,
					ename(want));
				if (byte >= 12 && byte < 16 && rc == -ERANGE)
					fprintf(stderr,
						"core bug: src/buffer.c hgsmi_buffer_verify "
						"returns -ERANGE for a nonzero u1 under "
						"F_REPLY_CAP; u1 is a reserved word (-EPROTO), "
						"and hgsmi_conn_recv counts it as an offset "
						"error\n");
				exit(1);
			}
		}
	}
	free(pristine);
	area_free(&a);
}

static void test_flips(void)
{
	/* A small buffer in the middle, one flush with the end of the area,
	 * with and without a reply capacity. */
	flip_all_bits(0x4000, 4096, 0x4000 + 1024, 40, 0);
	flip_all_bits(0x4000, 4096, 0x4000 + 1024, 40, 100);
	flip_all_bits(0x4000, 1024 + OVH + 40, 0x4000 + 1024, 40, 0);
	flip_all_bits(0x4000, 1024 + OVH + 100, 0x4000 + 1024, 40, 100);
	flip_all_bits(0x4000, 4096, 0x4000, 0, 0);
}

static void test_offsets(void)
{
	const uint32_t area_off = 0x8000, area_size = 4096;
	struct area a = area_new(area_off, area_size);
	struct hgsmi_msg m;
	static const uint32_t bad_aligned[] = {
		0, 64, area_off - 64, area_off - 4096, /* below */
		area_off + area_size, area_off + area_size + 64, /* after */
		0x80000000u, 0xffffff00u, 0xffffffc0u,
	};

	CHECK_RC(hgsmi_buffer_init(a.base, area_off, 8, 2, 0, 0));
	CHECK_EQ_RC(verify(&a, area_off, &m), 0);
	/* Misaligned: -EINVAL before anything else, even out of the area. */
	for (uint32_t d = 1; d < 64; d++) {
		CHECK_EQ_RC(verify(&a, area_off + d, &m), -EINVAL);
		CHECK_EQ_RC(verify(&a, area_off - d, &m), -EINVAL);
	}
	/* UINT32_MAX (HGSMI_OFFSET_VOID) is misaligned too: the documented
	 * order (alignment first) makes it -EINVAL, not -ERANGE. */
	CHECK_EQ_RC(verify(&a, UINT32_MAX, &m), -EINVAL);
	CHECK_EQ_RC(verify(&a, UINT32_MAX - 63, &m), -ERANGE);
	for (unsigned i = 0; i < sizeof(bad_aligned) / sizeof(bad_aligned[0]); i++)
		CHECK_EQ_RC(verify(&a, bad_aligned[i], &m), -ERANGE);
	/* Areas too small to hold any buffer. */
	for (uint32_t s = 0; s < OVH; s++)
		CHECK_EQ_RC(hgsmi_buffer_verify(a.base, area_off, s, area_off, &m), -ERANGE);
	area_free(&a);

	/*
	 * Exhaustive edge: areas of every size 0..400 at an aligned and at an
	 * unaligned start; every aligned offset from 128 below to 128 past the
	 * area.  An offset is acceptable iff the 24 bytes of an empty buffer
	 * fit; then a buffer with data_size == room is accepted and one byte
	 * more is -ERANGE (with a valid checksum, so the range check must be
	 * what refuses it).
	 */
	for (uint32_t aoff = 0x10000; aoff <= 0x10000 + 40; aoff += 40) {
		for (uint32_t size = 0; size <= 400; size++) {
			struct area b = area_new(aoff, size);
			uint64_t end = (uint64_t)aoff + size;

			for (uint32_t off = (aoff - 128) & ~63u; off < end + 128; off += 64) {
				bool fits = off >= aoff && (uint64_t)off + OVH <= end;

				if (!fits) {
					CHECK_EQ_RC(verify(&b, off, &m), -ERANGE);
					continue;
				}
				{
					uint32_t room = (uint32_t)(end - OVH - off);
					struct hgsmi_buffer_header h = {.data_size = room,
									.channel = 9};

					forge(&b, off, &h, 0);
					CHECK_EQ_RC(verify(&b, off, &m), 0);
					CHECK(m.size == room && m.capacity == room);
					h.data_size = room + 1;
					forge(&b, off, &h, 0);
					CHECK_EQ_RC(verify(&b, off, &m), -ERANGE);
					h.data_size = 0;
					h.flags = HGSMI_BUFFER_HEADER_F_REPLY_CAP;
					h.u0 = room;
					forge(&b, off, &h, 0);
					CHECK_EQ_RC(verify(&b, off, &m), 0);
					CHECK(m.size == 0 && m.capacity == room);
					h.u0 = room + 1;
					forge(&b, off, &h, 0);
					CHECK_EQ_RC(verify(&b, off, &m), -ERANGE);
				}
			}
			area_free(&b);
		}
	}
}

static void test_fields(void)
{
	const uint32_t area_off = 0x20000, area_size = 2048;
	struct area a = area_new(area_off, area_size);
	const uint32_t off = area_off + 512, room = area_size - 512 - OVH;
	struct hgsmi_msg m;
	struct hgsmi_buffer_header h0 = {.data_size = 100, .channel = 0x20, .channel_info = 7};
	struct hgsmi_buffer_header h;
	static const uint32_t huge[] = {
		0xffffffffu, 0xfffffffeu, 0xffffffe8u, 0xffffffe7u, 0x80000000u,
		0x7fffffffu, 0x10000000u,
	};

	/* data_size huge, near UINT32_MAX, or making offset + 16 + size wrap
	 * around to a small offset inside the area. */
	for (unsigned i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
		h = h0;
		h.data_size = huge[i];
		forge(&a, off, &h, 0);
		CHECK_EQ_RC(verify(&a, off, &m), -ERANGE);
	}
	for (uint32_t back = 0; back <= off + HDR; back += 8) {
		/* off + 16 + data_size == back (mod 2^32) */
		h = h0;
		h.data_size = back - off - HDR;
		if (h.data_size <= room)
			continue;
		forge(&a, off, &h, 0);
		CHECK_EQ_RC(verify(&a, off, &m), -ERANGE);
	}
	h = h0;
	h.data_size = room + 1;
	forge(&a, off, &h, 0);
	CHECK_EQ_RC(verify(&a, off, &m), -ERANGE);
	h.data_size = room;
	forge(&a, off, &h, 0);
	CHECK_EQ_RC(verify(&a, off, &m), 0);

	/* Flags: SEQ bits and unknown bits, each with a valid checksum. */
	for (unsigned f = 1; f < 256; f++) {
		h = h0;
		h.flags = (uint8_t)f;
		if (f & HGSMI_BUFFER_HEADER_F_REPLY_CAP)
			h.u0 = 200;
		forge(&a, off, &h, 0);
		CHECK_EQ_RC(verify(&a, off, &m),
			    (f & ~HGSMI_BUFFER_HEADER_F_KNOWN) ? -EPROTO : 0);
	}
	/* A nonzero union without F_REPLY_CAP. */
	for (unsigned w = 0; w < 2; w++) {
		for (unsigned bit = 0; bit < 32; bit++) {
			h = h0;
			if (w == 0)
				h.u0 = 1u << bit;
			else
				h.u1 = 1u << bit;
			forge(&a, off, &h, 0);
			CHECK_EQ_RC(verify(&a, off, &m), -EPROTO);
		}
	}
	/* Reply capacity below the data, beyond the area, or at the edges. */
	{
		static const struct { uint32_t cap; int want; } caps[] = {
			{0, -ERANGE}, {99, -ERANGE}, {100, 0}, {101, 0},
			{1000, 0}, {0, 0} /* room, below */, {1, -ERANGE} /* room + 1 */,
			{0xffffffffu, -ERANGE}, {0x80000000u, -ERANGE},
		};
		for (unsigned i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
			h = h0;
			h.flags = HGSMI_BUFFER_HEADER_F_REPLY_CAP;
			h.u0 = i == 5 ? room : i == 6 ? room + 1 : caps[i].cap;
			forge(&a, off, &h, 0);
			CHECK_EQ_RC(verify(&a, off, &m), caps[i].want);
			if (caps[i].want == 0)
				CHECK(m.capacity == h.u0 && m.size == 100 &&
				      m.flags == HGSMI_BUFFER_HEADER_F_REPLY_CAP);
		}
		/* u1 stays 0 under F_REPLY_CAP: it is reserved. */
		h = h0;
		h.flags = HGSMI_BUFFER_HEADER_F_REPLY_CAP;
		h.u0 = 200;
		h.u1 = 1;
		forge(&a, off, &h, 0);
		{
			int rc = verify(&a, off, &m);
			if (rc != -EPROTO) {
				fprintf(stderr,
					"core bug: src/buffer.c hgsmi_buffer_verify: "
					"F_REPLY_CAP with u1 = 1 gives %d (%s), want "
					"-EPROTO (a reserved word; hgsmi_conn_recv counts "
					"-ERANGE as an offset error)\n",
					rc, ename(rc));
				exit(1);
			}
		}
	}
	/* tail.reserved != 0, every bit, with a valid checksum. */
	for (unsigned bit = 0; bit < 32; bit++) {
		forge(&a, off, &h0, 1u << bit);
		CHECK_EQ_RC(verify(&a, off, &m), -EPROTO);
	}
	/* The checksum binds the buffer to its offset: a sealed header and
	 * tail copied elsewhere fail, wherever they land. */
	forge(&a, off, &h0, 0);
	CHECK_EQ_RC(verify(&a, off, &m), 0);
	for (uint32_t to = area_off; to + OVH + h0.data_size <= area_off + area_size; to += 64) {
		if (to == off)
			continue;
		{
			struct area b = area_new(area_off, area_size);
			memcpy(b.base + to, a.base + off, HDR);
			memcpy(b.base + to + HDR + h0.data_size, a.base + off + HDR + h0.data_size,
			       sizeof(struct hgsmi_buffer_tail));
			CHECK_EQ_RC(verify(&b, to, &m), -EBADMSG);
			area_free(&b);
		}
	}
	/* A stale checksum (header changed, not resealed). */
	hdr_at(&a, off)->channel_info = 8;
	CHECK_EQ_RC(verify(&a, off, &m), -EBADMSG);
	area_free(&a);

	/*
	 * An area that ends exactly at 2^32, where offset + 24 + data_size
	 * wraps to 0 in 32 bits.  The base sits 4 GiB below the block, which
	 * is only possible when the heap is mapped above 4 GiB.
	 */
	{
		struct area b = area_new(0, 1);
		bool high = (uintptr_t)b.mem > ((uintptr_t)1 << 33);

		area_free(&b);
		if (high) {
			const uint32_t top_off = 0xfffff000u, top_size = 0x1000;
			struct area t = area_new(top_off, top_size);
			const uint32_t boff = 0xffffffc0u; /* 64 bytes to 2^32 */

			h = h0;
			h.data_size = 64 - OVH; /* ends exactly at 2^32 */
			forge(&t, boff, &h, 0);
			CHECK_EQ_RC(verify(&t, boff, &m), 0);
			CHECK(m.size == 40 && m.capacity == 40);
			h.data_size = 64 - OVH + 1;
			forge(&t, boff, &h, 0);
			CHECK_EQ_RC(verify(&t, boff, &m), -ERANGE);
			h.data_size = 0u - boff - HDR; /* the tail would start at 2^32 */
			forge(&t, boff, &h, 0);
			CHECK_EQ_RC(verify(&t, boff, &m), -ERANGE);
			h.data_size = 40;
			h.flags = HGSMI_BUFFER_HEADER_F_REPLY_CAP;
			h.u0 = 41;
			forge(&t, boff, &h, 0);
			CHECK_EQ_RC(verify(&t, boff, &m), -ERANGE);
			area_free(&t);
		}
	}
}

/* ---- 4. random headers at random offsets --------------------------------- */

static void check_verdict(const struct area *a, uint32_t off, int rc,
			  const struct hgsmi_msg *m)
{
	uint64_t end = (uint64_t)a->off + a->size;

	if (rc == 0) {
		CHECK(off % 64 == 0 && off >= a->off);
		CHECK(m->offset == off && m->data == off + HDR);
		CHECK(m->capacity >= m->size);
		CHECK((uint64_t)off + OVH + m->size <= end);
		CHECK((uint64_t)off + OVH + m->capacity <= end);
		CHECK((m->flags & ~HGSMI_BUFFER_HEADER_F_KNOWN) == 0);
		CHECK(m->status == 0);
	} else {
		CHECK(rc == -EINVAL || rc == -ERANGE || rc == -EPROTO || rc == -EBADMSG);
	}
}

/* verdicts[]: verified, -EINVAL, -ERANGE, -EPROTO, -EBADMSG (anything else). */
static void count_verdict(unsigned verdicts[5], int rc)
{
	verdicts[rc == 0 ? 0 : rc == -EINVAL ? 1 : rc == -ERANGE ? 2 : rc == -EPROTO ? 3 : 4]++;
}

/* Print the tally; each verdict must have been reached more than `min` times. */
static void report_verdicts(const char *what, const unsigned verdicts[5], unsigned min)
{
	printf("%s: %u verified, %u -EINVAL, %u -ERANGE, %u -EPROTO, %u -EBADMSG\n", what,
	       verdicts[0], verdicts[1], verdicts[2], verdicts[3], verdicts[4]);
	for (unsigned i = 0; i < 5; i++)
		CHECK(verdicts[i] > min);
}

static void test_random(void)
{
	const unsigned iters = 1000000;
	unsigned verdicts[5] = {0};
	struct area a = {0};

	for (unsigned it = 0; it < iters; it++) {
		struct hgsmi_msg m;
		uint32_t off;
		int rc;

		if (it % 512 == 0) {
			/* A new small area, at an offset that need not be aligned. */
			if (a.mem)
				area_free(&a);
			a = area_new(0x1000 + rnd_below(256), rnd_below(700));
		}
		/* Offsets near the area most of the time, anything sometimes. */
		switch (rnd_below(8)) {
		case 0:
			off = (uint32_t)rnd();
			break;
		case 1:
			off = ((uint32_t)rnd()) & ~63u;
			break;
		case 2:
			off = a.off + a.size - rnd_below(100);
			break;
		default:
			off = ((a.off + rnd_below(a.size + 128)) & ~63u) - (rnd_below(8) ? 0 : 64);
			break;
		}
		if (off >= a.off && (uint64_t)off + HDR <= (uint64_t)a.off + a.size) {
			struct hgsmi_buffer_header h;
			uint64_t r = rnd();

			/* Random bytes, then often plausible fields, then often a
			 * correct seal, so every check gets reached. */
			memcpy(&h, &r, 8);
			r = rnd();
			memcpy((uint8_t *)&h + 8, &r, 8);
			if (rnd_below(4))
				h.data_size = rnd_below(a.size + 32);
			if (rnd_below(4))
				h.flags &= rnd_below(2) ? HGSMI_BUFFER_HEADER_F_REPLY_CAP : 0xff;
			if (rnd_below(4)) {
				h.u0 = (h.flags & HGSMI_BUFFER_HEADER_F_REPLY_CAP)
					       ? h.data_size + rnd_below(64)
					       : 0;
				h.u1 = rnd_below(8) ? 0 : h.u1;
			}
			if (rnd_below(2)) {
				forge(&a, off, &h, rnd_below(8) ? 0 : (uint32_t)rnd());
			} else {
				memcpy(a.base + off, &h, sizeof(h));
				/* Sometimes a random tail where the header says. */
				if ((uint64_t)off + OVH + h.data_size <= (uint64_t)a.off + a.size) {
					r = rnd();
					if (rnd_below(2))
						r &= 0xffffffff00000000ull; /* reserved 0 */
					memcpy(a.base + off + HDR + h.data_size, &r, 8);
				}
			}
		}
		memset(&m, 0, sizeof(m));
		rc = verify(&a, off, &m);
		check_verdict(&a, off, rc, &m);
		count_verdict(verdicts, rc);
	}
	area_free(&a);
	/* Every verdict must have been reached, or the generator is too weak. */
	report_verdicts("random", verdicts, 1000);
}

/* ---- batched checksum, seal and verify ----------------------------------- */

/* hgsmi_int_checksum_many equals hgsmi_checksum: the known answers, then
 * random inputs at every batch size around the vector width. */
static void test_checksum_many(void)
{
	static const uint32_t ko[3] = {0x00000000u, 0x00FF0000u, 0x00FF0020u};
	static const uint32_t kw[3] = {0x4e7ddd50u, 0x8228766eu, 0xeaf0d496u};
	struct hgsmi_buffer_header kh[3] = {
		{.data_size = 8, .channel = 1, .channel_info = 0},
		{.data_size = 8, .channel = 2, .channel_info = 1},
		{.data_size = 8, .channel = 2, .channel_info = 12},
	};
	enum { MAXN = 70 };
	struct hgsmi_buffer_header h[MAXN];
	uint32_t o[MAXN], tr[MAXN], got[MAXN], ko8[24], kw8[24];
	struct hgsmi_buffer_header kh8[24];

	hgsmi_int_checksum_many(ko, kh, NULL, 3, got);
	for (unsigned i = 0; i < 3; i++)
		CHECK(got[i] == kw[i]);
	/* The known answers again inside a vector-sized batch, every lane. */
	for (unsigned i = 0; i < 24; i++)
		ko8[i] = ko[i % 3], kh8[i] = kh[i % 3], kw8[i] = kw[i % 3];
	hgsmi_int_checksum_many(ko8, kh8, NULL, 24, got);
	for (unsigned i = 0; i < 24; i++)
		CHECK(got[i] == kw8[i]);

	for (unsigned it = 0; it < 20000; it++) {
		unsigned n = rnd_below(MAXN + 1);
		bool zero_tail = rnd_below(2);

		for (unsigned i = 0; i < n; i++) {
			uint64_t r = rnd();

			memcpy(&h[i], &r, 8);
			r = rnd();
			memcpy((uint8_t *)&h[i] + 8, &r, 8);
			o[i] = (uint32_t)rnd();
			tr[i] = (uint32_t)rnd();
		}
		hgsmi_int_checksum_many(o, h, zero_tail ? NULL : tr, n, got);
		for (unsigned i = 0; i < n; i++) {
			struct hgsmi_buffer_tail t = {.reserved = zero_tail ? 0 : tr[i],
						      .checksum = (uint32_t)rnd()};

			CHECK(got[i] == hgsmi_checksum(o[i], &h[i], &t));
		}
	}
}

/* hgsmi_int_buffer_seal_many writes what hgsmi_buffer_init writes. */
static void test_seal_many(void)
{
	enum { N = 100, STRIDE = 192 };
	struct area a = area_new(0x4000, N * STRIDE), b = area_new(0x4000, N * STRIDE);
	struct hgsmi_buffer_header h[N];
	uint32_t o[N];

	for (unsigned it = 0; it < 200; it++) {
		unsigned n = 1 + rnd_below(N);

		for (unsigned i = 0; i < n; i++) {
			uint32_t size = rnd_below(STRIDE - OVH + 1);
			uint32_t cap = rnd_below(2) ? 0 : size + rnd_below(STRIDE - OVH + 1 - size);
			uint8_t ch = (uint8_t)rnd();
			uint16_t info = (uint16_t)rnd();

			o[i] = a.off + i * STRIDE;
			hgsmi_int_buffer_header(&h[i], size, ch, info, cap);
			CHECK_RC(hgsmi_buffer_init(b.base, o[i], size, ch, info, cap));
		}
		hgsmi_int_buffer_seal_many(a.base, o, h, n);
		CHECK(memcmp(a.mem, b.mem, n * STRIDE) == 0);
	}
	area_free(&a);
	area_free(&b);
}

/*
 * hgsmi_int_buffer_verify_many returns, offset by offset, what
 * hgsmi_buffer_verify returns: an area full of random, plausible and
 * correctly sealed buffers, checked in random batches of random offsets.
 */
static void test_verify_many(void)
{
	enum { MAXN = 150 };
	uint32_t offs[MAXN];
	struct hgsmi_msg got[MAXN];
	int rcs[MAXN];
	unsigned verdicts[5] = {0};

	for (unsigned round = 0; round < 200; round++) {
		struct area a = area_new(0x1000 + rnd_below(256), 64 + rnd_below(8192));

		/* Fill: sealed buffers on most lines, some broken in one field. */
		for (uint32_t off = (a.off + 63) & ~63u; off + OVH <= a.off + a.size; off += 64) {
			uint32_t room = a.off + a.size - off - OVH;
			uint32_t size = rnd_below(4) ? rnd_below(room < 200 ? room + 1 : 200)
						     : rnd_below(room + 64);
			struct hgsmi_buffer_header h;

			if (size > room || rnd_below(8) == 0) {
				uint64_t r = rnd();

				memcpy(&h, &r, 8);
				r = rnd();
				memcpy((uint8_t *)&h + 8, &r, 8);
				if (rnd_below(2))
					h.data_size = rnd_below(room + 32);
				if (rnd_below(2))
					h.flags &= HGSMI_BUFFER_HEADER_F_REPLY_CAP;
				if (rnd_below(2))
					h.u1 = 0;
				forge(&a, off, &h, rnd_below(4) ? 0 : (uint32_t)rnd());
			} else {
				CHECK_RC(hgsmi_buffer_init(a.base, off, size, (uint8_t)rnd(),
							   (uint16_t)rnd(), rnd_below(2) ? 0 : size + rnd_below(32)));
				if (rnd_below(8) == 0) /* a stale checksum */
					a.base[off + (rnd_below(2) ? 4 : 6)] ^= (uint8_t)(1 + rnd_below(255));
			}
		}
		for (unsigned it = 0; it < 50; it++) {
			unsigned n = rnd_below(MAXN + 1);

			for (unsigned i = 0; i < n; i++) {
				switch (rnd_below(6)) {
				case 0:
					offs[i] = (uint32_t)rnd();
					break;
				case 1:
					offs[i] = a.off + rnd_below(a.size + 64);
					break;
				default:
					offs[i] = ((a.off + rnd_below(a.size + 64)) & ~63u);
				}
			}
			memset(got, 0xa5, sizeof(got));
			hgsmi_int_buffer_verify_many(a.base, a.off, a.size, offs, n, got, rcs);
			for (unsigned i = 0; i < n; i++) {
				struct hgsmi_msg m;
				int rc;

				memset(&m, 0xa5, sizeof(m)); /* fields verify leaves alone match */
				rc = verify(&a, offs[i], &m);
				CHECK_EQ_RC(rcs[i], rc);
				if (rc == 0)
					CHECK(memcmp(&got[i], &m, sizeof(m)) == 0);
				count_verdict(verdicts, rc);
			}
		}
		area_free(&a);
	}
	report_verdicts("verify_many", verdicts, 100);
}

int main(void)
{
	test_checksum_kat();
	test_checksum_many();
	test_seal_many();
	test_verify_many();
	test_round_trip();
	test_offsets();
	test_fields();
	test_flips();
	test_random();
	test_init_wrap(); /* regression: the size_t overflow check of init */
	printf("test_buffer: ok\n");
	return 0;
}
