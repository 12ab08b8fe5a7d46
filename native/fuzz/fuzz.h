/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h - what the libFuzzer harnesses share: a cursor over the input, an
 * assertion that stays on in every build, and ASan's poisoning calls.
 *
 * The harnesses are white-box, like the C tests: they include src/internal.h
 * and link the core objects built with the same sanitizer flags.
 */
#ifndef HGSMI_FUZZ_H
#define HGSMI_FUZZ_H

#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/asan_interface.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An oracle failure is a crash: libFuzzer saves the input. */
#define FUZZ_CHECK(cond)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: oracle failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			abort();                                               \
		}                                                              \
	} while (0)

/* Open fds of this process: the same before and after an input, or one leaked. */
static inline int fuzz_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	FUZZ_CHECK(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

struct cursor {
	const uint8_t *p;
	size_t left;
};

/* Little-endian reads; past the end they give zeros. */
static inline uint32_t take_u32(struct cursor *c)
{
	uint32_t v = 0;

	for (int i = 0; i < 4 && c->left; i++, c->p++, c->left--)
		v |= (uint32_t)*c->p << (8 * i);
	return v;
}

static inline uint16_t take_u16(struct cursor *c)
{
	uint16_t v = 0;

	for (int i = 0; i < 2 && c->left; i++, c->p++, c->left--)
		v |= (uint16_t)(*c->p << (8 * i));
	return v;
}

static inline uint8_t take_u8(struct cursor *c)
{
	if (!c->left)
		return 0;
	c->left--;
	return *c->p++;
}

/* Up to n bytes; returns how many were taken. */
static inline size_t take_bytes(struct cursor *c, void *out, size_t n)
{
	if (n > c->left)
		n = c->left;
	memcpy(out, c->p, n);
	c->p += n;
	c->left -= n;
	return n;
}

#endif /* HGSMI_FUZZ_H */
