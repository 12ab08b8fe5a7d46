/* SPDX-License-Identifier: MIT */
/*
 * rng.h - the C tests' random numbers: xorshift64* from a seed each test
 * fixes, so that any failure replays exactly.
 */
#ifndef HGSMI_TEST_RNG_H
#define HGSMI_TEST_RNG_H
#include <stdint.h>

static inline uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}
#endif
