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

/*
 * The same hash over many buffers at once, one buffer per vector lane.
 *
 * One buffer's hash is a serial chain of 24 rounds (add, shift-add,
 * shift-xor: ~5 cycles of latency each), so a lone checksum costs ~120
 * cycles however wide the core is: it was 17% of the sender's and 12% of the
 * receiver's cycles in 64 B g2h streaming (perf, before this function).  The
 * lanes are independent chains, so 16 of them run in about the time of one.
 * GCC's generic vectors compile to whatever the target has (SSE2 on any
 * x86-64, NEON on arm64) and to scalar code elsewhere; no intrinsics.
 */
#define CSUM_LANES 16
/*
 * 4-lane vectors, four of them side by side: the target's native width.  A
 * 16-lane (64-byte) generic vector is lowered through the stack without
 * AVX-512, every round a store and a reload (9.5 against 4 ns a buffer).
 */
typedef uint32_t csum_vec __attribute__((vector_size(16)));

/* Fewer than this many buffers: the scalar function (a vector group costs
 * the same whatever its fill). */
#define CSUM_MIN_VECTOR 4

void hgsmi_int_checksum_many(const uint32_t *offsets,
			     const struct hgsmi_buffer_header *headers,
			     const uint32_t *tail_reserved, unsigned n, uint32_t *out)
{
	unsigned i = 0;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	for (unsigned m = 0; i < n && n - i >= CSUM_MIN_VECTOR; i += m) {
		uint32_t wa[6][CSUM_LANES] __attribute__((aligned(64)));
		csum_vec h0 = {0}, h1 = {0}, h2 = {0}, h3 = {0};

		m = n - i < CSUM_LANES ? n - i : CSUM_LANES;
		/*
		 * Transpose: word j of every buffer into row j, with scalar
		 * stores into a plain array.  Inserting lane by lane into a
		 * vector instead compiled to a read-modify-write of the whole
		 * vector per lane, a store-forwarding stall each (14 against
		 * ~4 ns a buffer in a single-thread loop of 64).  Unused
		 * lanes are zero and their results are dropped.
		 */
		for (unsigned l = 0; l < m; l++) {
			uint32_t hw[4];

			memcpy(hw, &headers[i + l], sizeof(hw));
			wa[0][l] = offsets[i + l];
			wa[1][l] = hw[0];
			wa[2][l] = hw[1];
			wa[3][l] = hw[2];
			wa[4][l] = hw[3];
			wa[5][l] = tail_reserved ? tail_reserved[i + l] : 0;
		}
		for (unsigned l = m; l < CSUM_LANES; l++)
			for (int j = 0; j < 6; j++)
				wa[j][l] = 0;
		/* Each word's four bytes, lowest first: its little-endian byte
		 * order.  Unrolled, constant shifts, four independent chains. */
#define CSUM_ROUND(h, b) do { h += (b); h += h << 10; h ^= h >> 6; } while (0)
#define CSUM_WORD(h, w) do { CSUM_ROUND(h, (w) & 0xff); CSUM_ROUND(h, ((w) >> 8) & 0xff); \
			     CSUM_ROUND(h, ((w) >> 16) & 0xff); CSUM_ROUND(h, (w) >> 24); } while (0)
#define CSUM_FINAL(h) do { h += h << 3; h ^= h >> 11; h += h << 15; } while (0)
		for (int j = 0; j < 6; j++) {
			csum_vec w0, w1, w2, w3;

			memcpy(&w0, &wa[j][0], sizeof(w0));
			memcpy(&w1, &wa[j][4], sizeof(w1));
			memcpy(&w2, &wa[j][8], sizeof(w2));
			memcpy(&w3, &wa[j][12], sizeof(w3));
			CSUM_WORD(h0, w0);
			CSUM_WORD(h1, w1);
			CSUM_WORD(h2, w2);
			CSUM_WORD(h3, w3);
		}
		CSUM_FINAL(h0);
		CSUM_FINAL(h1);
		CSUM_FINAL(h2);
		CSUM_FINAL(h3);
#undef CSUM_ROUND
#undef CSUM_WORD
#undef CSUM_FINAL
		memcpy(&wa[0][0], &h0, sizeof(h0));
		memcpy(&wa[0][4], &h1, sizeof(h1));
		memcpy(&wa[0][8], &h2, sizeof(h2));
		memcpy(&wa[0][12], &h3, sizeof(h3));
		memcpy(out + i, wa[0], m * sizeof(out[0]));
	}
#endif
	for (; i < n; i++) {
		struct hgsmi_buffer_tail t = {.reserved = tail_reserved ? tail_reserved[i] : 0};

		out[i] = hgsmi_checksum(offsets[i], &headers[i], &t);
	}
}
