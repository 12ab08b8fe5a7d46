/* SPDX-License-Identifier: MIT */
/*
 * test_heap.c - unit test of the private-metadata TLSF heap.  Standalone:
 * exits 0 on success, or prints the first failing check and exits 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h" /* hgsmi_int_heap_alloc_placed */
#include "rng.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, \
				__LINE__, #cond);                              \
			return 1;                                              \
		}                                                              \
	} while (0)

#define CHECK_HEAP(h) CHECK(hgsmi_heap_check(h) == 0)

/* A fixed seed makes every failure reproducible (rng.h). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) { return rng_next(&rng_state); }
static uint32_t rnd_below(uint32_t n) { return (uint32_t)(rnd() % n); }

/* Log-uniform in [1, max]: a uniform bit length, then a uniform value. */
static uint32_t rnd_size(unsigned max_log2)
{
	unsigned k = rnd_below(max_log2 + 1);
	uint32_t lo = 1u << k;

	return k == max_log2 ? lo : lo + rnd_below(lo);
}

static void shuffle(uint32_t *v, uint32_t n)
{
	for (uint32_t i = n; i > 1; i--) {
		uint32_t j = rnd_below(i), t = v[i - 1];

		v[i - 1] = v[j];
		v[j] = t;
	}
}

static struct hgsmi_heap_stats stats(const struct hgsmi_heap *h)
{
	struct hgsmi_heap_stats st;

	hgsmi_heap_stats(h, &st);
	return st;
}

/* A test's last word on its heap: still consistent, then destroyed.
 * Returns 0, or 1 (the heap left alone, as after any failed CHECK). */
static int check_destroy(struct hgsmi_heap *h)
{
	CHECK_HEAP(h);
	hgsmi_heap_destroy(h);
	return 0;
}

/* A fragmented population in a new heap of `size` bytes: n blocks of 1 B
 * to 16 KiB (their offsets in off[]), then every step-th of them freed. */
static int fragmented(uint32_t size, uint32_t *off, int n, int step,
		      struct hgsmi_heap **hp)
{
	CHECK(hgsmi_heap_create(0, size, hp) == 0);
	for (int i = 0; i < n; i++)
		CHECK(hgsmi_heap_alloc(*hp, rnd_size(14), &off[i]) == 0);
	for (int i = 0; i < n; i += step)
		CHECK(hgsmi_heap_free(*hp, off[i]) == 0);
	return 0;
}

static int test_create(void)
{
	struct hgsmi_heap *h = NULL;
	struct hgsmi_heap_stats st;
	uint32_t off;

	CHECK(hgsmi_heap_create(32, 4096, &h) == -EINVAL);
	CHECK(hgsmi_heap_create(65, 4096, &h) == -EINVAL);
	CHECK(hgsmi_heap_create(0, 0, &h) == -EINVAL);
	CHECK(hgsmi_heap_create(0, 63, &h) == -EINVAL);
	CHECK(hgsmi_heap_create(0xffffffc0u, 128, &h) == -EINVAL);
	CHECK(hgsmi_heap_create(0, 4096, NULL) == -EINVAL);
	CHECK(h == NULL);

	/* The size is rounded down to whole granules. */
	CHECK(hgsmi_heap_create(64, 1000, &h) == 0);
	st = stats(h);
	CHECK(st.capacity == 960 && st.used == 0 && st.free_bytes == 960);
	CHECK(st.largest_free == 960 && st.free_blocks == 1);
	CHECK(st.used_blocks == 0);
	CHECK(hgsmi_heap_max_alloc(h) == 960);
	CHECK_HEAP(h);
	hgsmi_heap_destroy(h);

	/* A range that ends exactly at 2^32; its memory is never touched. */
	CHECK(hgsmi_heap_create(0xffff0000u, 0x10000, &h) == 0);
	CHECK(hgsmi_heap_alloc(h, 0x10000 - 64, &off) == 0 && off == 0xffff0000u);
	CHECK(hgsmi_heap_alloc(h, 64, &off) == 0 && off == 0xffffffc0u);
	CHECK_HEAP(h);
	hgsmi_heap_destroy(h);
	hgsmi_heap_destroy(NULL);
	return 0;
}

static int test_max_alloc(void)
{
	static const uint32_t sizes[] = {64, 17 * 64, 1000 * 64 + 5,
					 (16u << 20) - 3 * 64, 0xffffffffu};

	for (unsigned k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		struct hgsmi_heap *h;
		uint32_t off, max;

		CHECK(hgsmi_heap_create(0, sizes[k], &h) == 0);
		max = hgsmi_heap_max_alloc(h);
		CHECK(max == sizes[k] / 64 * 64);
		CHECK(hgsmi_heap_alloc(h, max + 1, &off) == -ENOMEM);
		CHECK(hgsmi_heap_alloc(h, max, &off) == 0 && off == 0);
		CHECK(hgsmi_heap_block_size(h, off) == max);
		CHECK(stats(h).largest_free == 0 && stats(h).free_blocks == 0);
		CHECK_HEAP(h);
		CHECK(hgsmi_heap_free(h, off) == 0);
		CHECK(stats(h).largest_free == max);
		CHECK_HEAP(h);
		hgsmi_heap_destroy(h);
	}
	return 0;
}

static int test_alignment(void)
{
	enum { N = 300 };
	struct hgsmi_heap *h;
	uint32_t off[N], size[N];
	const uint32_t base = 4096, cap = 1u << 20;

	CHECK(hgsmi_heap_create(base, cap, &h) == 0);
	CHECK(hgsmi_heap_alloc(h, 0, &off[0]) == -EINVAL);
	CHECK(hgsmi_heap_alloc(h, cap + 1, &off[0]) == -ENOMEM);
	CHECK(stats(h).failures == 1);
	for (uint32_t i = 0; i < N; i++) {
		int64_t bs;

		size[i] = i + 1 + rnd_below(3000);
		CHECK(hgsmi_heap_alloc(h, size[i], &off[i]) == 0);
		CHECK(off[i] % HGSMI_HEAP_ALIGN == 0);
		CHECK(off[i] >= base && off[i] - base + size[i] <= cap);
		bs = hgsmi_heap_block_size(h, off[i]);
		CHECK(bs >= size[i] && bs % HGSMI_HEAP_ALIGN == 0);
		CHECK(bs - size[i] < HGSMI_HEAP_ALIGN);
		for (uint32_t j = 0; j < i; j++)
			CHECK(off[i] >= off[j] + size[j] ||
			      off[j] >= off[i] + size[i]);
	}
	CHECK(stats(h).allocs == N && stats(h).used_blocks == N);
	return check_destroy(h);
}

static int test_exhaustion(void)
{
	struct hgsmi_heap *h;
	struct hgsmi_heap_stats st;
	uint32_t off, n = 0;
	int r;

	CHECK(hgsmi_heap_create(0, 64 * 1024, &h) == 0);
	while ((r = hgsmi_heap_alloc(h, 1, &off)) == 0)
		n++;
	CHECK(r == -ENOMEM && n == 1024);
	st = stats(h);
	CHECK(st.failures == 1 && st.allocs == 1024);
	CHECK(st.used == st.capacity && st.peak == st.capacity);
	CHECK(st.free_bytes == 0 && st.largest_free == 0);
	CHECK(st.free_blocks == 0 && st.used_blocks == 1024);
	CHECK(hgsmi_heap_alloc(h, 64, &off) == -ENOMEM);
	CHECK(stats(h).failures == 2);
	CHECK_HEAP(h);

	/* One free granule in the middle: exactly that fits again. */
	CHECK(hgsmi_heap_free(h, 512 * 64) == 0);
	CHECK(hgsmi_heap_alloc(h, 65, &off) == -ENOMEM);
	CHECK(hgsmi_heap_alloc(h, 64, &off) == 0 && off == 512 * 64);
	CHECK(stats(h).failures == 3);
	return check_destroy(h);
}

static int test_bogus_free(void)
{
	struct hgsmi_heap *h;
	uint32_t a, b, c;
	const uint32_t base = 1u << 16;

	CHECK(hgsmi_heap_create(base, 1u << 16, &h) == 0);
	CHECK(hgsmi_heap_alloc(h, 640, &a) == 0);
	CHECK(hgsmi_heap_alloc(h, 64, &b) == 0);
	CHECK(hgsmi_heap_alloc(h, 64, &c) == 0);
	CHECK(a == base && b == a + 640 && c == b + 64);

	CHECK(hgsmi_heap_free(h, a + 1) == -EINVAL);  /* misaligned */
	CHECK(hgsmi_heap_free(h, a + 64) == -EINVAL); /* inside a block */
	CHECK(hgsmi_heap_free(h, base - 64) == -EINVAL);
	CHECK(hgsmi_heap_free(h, 0) == -EINVAL);
	CHECK(hgsmi_heap_free(h, base + (1u << 16)) == -EINVAL);
	CHECK(hgsmi_heap_free(h, 0xffffffc0u) == -EINVAL);
	CHECK(hgsmi_heap_free(h, c + 64) == -EINVAL); /* the free remainder */
	CHECK(hgsmi_heap_free(h, c + 128) == -EINVAL);
	CHECK(hgsmi_heap_block_size(h, a + 64) == -EINVAL);
	CHECK(hgsmi_heap_block_size(h, c + 64) == -EINVAL);
	CHECK(hgsmi_heap_block_size(h, a) == 640);
	CHECK(hgsmi_heap_block_size(h, b) == 64);
	CHECK_HEAP(h);

	CHECK(hgsmi_heap_free(h, b) == 0);
	CHECK(hgsmi_heap_free(h, b) == -EINVAL); /* double free */
	CHECK(hgsmi_heap_block_size(h, b) == -EINVAL);
	CHECK(hgsmi_heap_free(h, a) == 0); /* merges with b */
	CHECK(hgsmi_heap_free(h, a) == -EINVAL);
	CHECK(hgsmi_heap_free(h, b) == -EINVAL); /* absorbed, no longer a block */
	CHECK(hgsmi_heap_free(h, c) == 0);
	CHECK(hgsmi_heap_free(h, c) == -EINVAL);
	CHECK(stats(h).frees == 3 && stats(h).free_blocks == 1);
	CHECK(stats(h).used == 0);
	return check_destroy(h);
}

static int test_largest_free(void)
{
	struct hgsmi_heap *h;
	uint32_t a, b, c, d, e;

	/* Exactly A(100) B(1) C(37) D(1) granules. */
	CHECK(hgsmi_heap_create(0, 139 * 64, &h) == 0);
	CHECK(hgsmi_heap_alloc(h, 100 * 64, &a) == 0);
	CHECK(hgsmi_heap_alloc(h, 64, &b) == 0);
	CHECK(hgsmi_heap_alloc(h, 37 * 64, &c) == 0);
	CHECK(hgsmi_heap_alloc(h, 64, &d) == 0);
	CHECK(stats(h).free_blocks == 0);
	CHECK(hgsmi_heap_free(h, c) == 0);
	CHECK(stats(h).largest_free == 37 * 64);
	CHECK(hgsmi_heap_free(h, a) == 0);
	CHECK(stats(h).largest_free == 100 * 64 && stats(h).free_blocks == 2);
	CHECK(stats(h).free_bytes == 137 * 64);
	CHECK(hgsmi_heap_alloc(h, 101 * 64, &e) == -ENOMEM);
	CHECK(hgsmi_heap_free(h, b) == 0); /* joins both neighbours */
	CHECK(stats(h).largest_free == 138 * 64 && stats(h).free_blocks == 1);
	CHECK_HEAP(h);
	CHECK(hgsmi_heap_alloc(h, 138 * 64, &a) == 0 && a == 0);
	return check_destroy(h);
}

static int test_coalescing(void)
{
	enum { MAX = 20000 };
	static uint32_t off[MAX];
	struct hgsmi_heap *h;
	struct hgsmi_heap_stats st;
	uint32_t n = 0;

	CHECK(hgsmi_heap_create(0, 1u << 20, &h) == 0);
	while (n < MAX && hgsmi_heap_alloc(h, rnd_size(12), &off[n]) == 0)
		n++;
	while (n < MAX && hgsmi_heap_alloc(h, 1, &off[n]) == 0)
		n++;
	st = stats(h);
	CHECK(n < MAX && st.used == st.capacity && st.free_blocks == 0);
	CHECK_HEAP(h);
	shuffle(off, n);
	for (uint32_t i = 0; i < n; i++) {
		CHECK(hgsmi_heap_free(h, off[i]) == 0);
		if (i % 16 == 0 || i + 1 == n)
			CHECK_HEAP(h);
	}
	st = stats(h);
	CHECK(st.used == 0 && st.used_blocks == 0 && st.free_blocks == 1);
	CHECK(st.largest_free == st.capacity && st.frees == n);
	hgsmi_heap_destroy(h);
	return 0;
}

struct live {
	uint32_t off, size;
};

/*
 * 200k random operations on 16 MiB, checked against a shadow map of the
 * granules so that overlapping blocks cannot go unnoticed.
 */
static int test_random(void)
{
	enum { STEPS = 200000, CAP = 16u << 20, GRANS = CAP / 64 };
	static struct live live[GRANS];
	static uint8_t shadow[GRANS];
	struct hgsmi_heap *h;
	struct hgsmi_heap_stats st;
	uint32_t n = 0, nfail = 0;
	uint64_t used = 0;
	const uint32_t base = 1u << 24;

	CHECK(hgsmi_heap_create(base, CAP, &h) == 0);
	for (uint32_t step = 0; step < STEPS; step++) {
		if (n == 0 || rnd_below(2)) {
			uint32_t size = rnd_size(20), off, g;
			int64_t bs;
			int r = hgsmi_heap_alloc(h, size, &off);

			if (r) {
				/* Good fit: refused only if no block was big enough. */
				uint64_t want = (size + 63ull) / 64 * 64;

				CHECK(r == -ENOMEM);
				CHECK(stats(h).largest_free <
				      want + want / 16 + 64);
				nfail++;
			} else {
				bs = hgsmi_heap_block_size(h, off);
				CHECK(off % 64 == 0 && off >= base);
				CHECK(bs >= size && bs - size < 64);
				CHECK(off - base + (uint64_t)bs <= CAP);
				for (g = (off - base) / 64;
				     g < (off - base + bs) / 64; g++) {
					CHECK(!shadow[g]);
					shadow[g] = 1;
				}
				live[n++] = (struct live){off, (uint32_t)bs};
				used += (uint64_t)bs;
			}
		} else {
			uint32_t k = rnd_below(n);
			struct live l = live[k];

			CHECK(hgsmi_heap_free(h, l.off) == 0);
			memset(&shadow[(l.off - base) / 64], 0, l.size / 64);
			used -= l.size;
			live[k] = live[--n];
		}
		st = stats(h);
		CHECK(st.used == used && st.used_blocks == n);
		if (step < 20000 || step % 1000 == 0)
			CHECK_HEAP(h);
	}
	CHECK(nfail > 0 && stats(h).failures == nfail);
	CHECK_HEAP(h);

	while (n) {
		uint32_t k = rnd_below(n);

		CHECK(hgsmi_heap_free(h, live[k].off) == 0);
		live[k] = live[--n];
	}
	st = stats(h);
	CHECK(st.used == 0 && st.free_blocks == 1 && st.used_blocks == 0);
	CHECK(st.largest_free == CAP && st.allocs == st.frees);
	CHECK(st.peak <= CAP && st.peak > CAP / 2);
	return check_destroy(h);
}

static int test_reset(void)
{
	struct hgsmi_heap *h;
	struct hgsmi_heap_stats st;
	uint32_t off[64], o;

	CHECK(fragmented(1u << 20, off, 64, 3, &h) == 0);
	CHECK(hgsmi_heap_alloc(h, 2u << 20, &o) == -ENOMEM);
	hgsmi_heap_reset(h);
	CHECK_HEAP(h);
	st = stats(h);
	CHECK(st.used == 0 && st.used_blocks == 0 && st.free_blocks == 1);
	CHECK(st.largest_free == st.capacity && st.peak > 0);
	CHECK(st.allocs == 64 && st.frees == 22 && st.failures == 1);
	for (int i = 0; i < 64; i++)
		CHECK(hgsmi_heap_free(h, off[i]) == -EINVAL);
	CHECK(hgsmi_heap_alloc(h, hgsmi_heap_max_alloc(h), &o) == 0 && o == 0);
	return check_destroy(h);
}

/* 1M alloc/free pairs among a fragmented population; no timing asserted. */
static int test_churn(void)
{
	enum { POP = 4096 };
	static uint32_t off[POP];
	struct hgsmi_heap *h;

	CHECK(fragmented(64u << 20, off, POP, 2, &h) == 0);
	for (uint32_t i = 0; i < 1000000; i++) {
		uint32_t o;

		CHECK(hgsmi_heap_alloc(h, rnd_size(16), &o) == 0);
		CHECK(hgsmi_heap_free(h, o) == 0);
	}
	CHECK_HEAP(h);
	CHECK(stats(h).used_blocks == POP / 2);
	hgsmi_heap_destroy(h);
	return 0;
}

/*
 * Placed allocation (the copy paths' defence against 4K aliasing): a placed
 * block starts at the asked phase modulo a page, its leading trim goes back
 * to the free lists, and free, block_size and the invariant checker see an
 * ordinary block.  A heap too tight for the trim falls back to a plain block.
 */
static int test_placed(void)
{
	enum { STEPS = 100000, CAP = 8u << 20, GRANS = CAP / 64 };
	static struct live live[GRANS];
	static uint8_t shadow[GRANS];
	struct hgsmi_heap *h;
	uint32_t n = 0, placed = 0, plain = 0, off;
	const uint32_t base = 0x12340; /* not page-aligned: phase is absolute */

	CHECK(hgsmi_heap_create(base, CAP, &h) == 0);
	CHECK(hgsmi_int_heap_alloc_placed(h, 100, 4096, &off) == -EINVAL);
	CHECK(hgsmi_int_heap_alloc_placed(h, 100, 32, &off) == -EINVAL);
	CHECK(hgsmi_int_heap_alloc_placed(h, 0, 0, &off) == -EINVAL);
	/* An empty heap always has room to place. */
	for (uint32_t ph = 0; ph < 4096; ph += 64) {
		CHECK(hgsmi_int_heap_alloc_placed(h, 5000, ph, &off) == 1);
		CHECK(off % 4096 == ph);
		CHECK(hgsmi_heap_block_size(h, off) == 5056);
		CHECK_HEAP(h);
		CHECK(hgsmi_heap_free(h, off) == 0);
		CHECK(stats(h).free_blocks == 1 && stats(h).used == 0);
	}
	CHECK_HEAP(h);

	/* Random placed and plain allocations and frees: no overlap, exact
	 * accounting, invariants after every step early on. */
	for (uint32_t step = 0; step < STEPS; step++) {
		if (n == 0 || rnd_below(2)) {
			uint32_t size = rnd_size(18), ph = rnd_below(64) * 64, g;
			int r = rnd_below(4) ? hgsmi_int_heap_alloc_placed(h, size, ph, &off)
					     : hgsmi_heap_alloc(h, size, &off);
			int64_t bs;

			if (r == -ENOMEM)
				continue;
			CHECK(r >= 0);
			if (r == 1) {
				CHECK(off % 4096 == ph);
				placed++;
			}
			plain += r == 0;
			bs = hgsmi_heap_block_size(h, off);
			CHECK(bs >= size && bs - size < 64);
			CHECK(off >= base && off - base + (uint64_t)bs <= CAP);
			for (g = (off - base) / 64; g < (off - base + bs) / 64; g++) {
				CHECK(!shadow[g]);
				shadow[g] = 1;
			}
			live[n++] = (struct live){off, (uint32_t)bs};
		} else {
			uint32_t k = rnd_below(n);

			CHECK(hgsmi_heap_free(h, live[k].off) == 0);
			memset(&shadow[(live[k].off - base) / 64], 0, live[k].size / 64);
			live[k] = live[--n];
		}
		CHECK(stats(h).used_blocks == n);
		if (step < 10000 || step % 1000 == 0)
			CHECK_HEAP(h);
	}
	CHECK(placed > STEPS / 8 && plain > 0);
	while (n) {
		CHECK(hgsmi_heap_free(h, live[--n].off) == 0);
	}
	CHECK(stats(h).free_blocks == 1 && stats(h).used == 0);
	CHECK_HEAP(h);

	/* Too tight for the trim: the whole heap minus a page still comes,
	 * unplaced; the whole heap comes too. */
	CHECK(hgsmi_int_heap_alloc_placed(h, CAP - 1024, 64, &off) == 0);
	CHECK(off == base && hgsmi_heap_free(h, off) == 0);
	CHECK(hgsmi_int_heap_alloc_placed(h, CAP, 0, &off) == 0);
	CHECK(hgsmi_int_heap_alloc_placed(h, 64, 0, &off) == -ENOMEM);
	CHECK(hgsmi_heap_free(h, base) == 0);
	return check_destroy(h);
}

/*
 * A stream of equal messages reuses the block freed last (warm in the cache)
 * instead of splitting fresh heap: TLSF's rounded-up search alone never
 * finds a block of exactly the request's class.
 */
static int test_reuse(void)
{
	struct hgsmi_heap *h;
	uint32_t a, b, c, d;
	const uint32_t size = 65536 + 24;

	CHECK(hgsmi_heap_create(0, 4u << 20, &h) == 0);
	CHECK(hgsmi_heap_alloc(h, size, &a) == 0);
	CHECK(hgsmi_heap_alloc(h, size, &b) == 0);
	CHECK(hgsmi_heap_free(h, a) == 0); /* b keeps it from coalescing */
	CHECK(hgsmi_heap_alloc(h, size, &c) == 0);
	CHECK(c == a);
	/* Placed: reused too when the phase fits in the freed block... */
	CHECK(hgsmi_heap_free(h, c) == 0);
	CHECK(hgsmi_int_heap_alloc_placed(h, size, a % 4096, &c) == 1 && c == a);
	/* ...and not when the leading gap does not fit in it. */
	CHECK(hgsmi_heap_free(h, c) == 0);
	CHECK(hgsmi_int_heap_alloc_placed(h, size, (a + 128) % 4096, &d) == 1);
	CHECK(d != a && d % 4096 == (a + 128) % 4096);
	CHECK_HEAP(h);
	CHECK(hgsmi_heap_free(h, b) == 0 && hgsmi_heap_free(h, d) == 0);
	CHECK(stats(h).used == 0 && stats(h).free_blocks == 1);
	return check_destroy(h);
}

int main(void)
{
	static const struct {
		const char *name;
		int (*fn)(void);
	} tests[] = {
		{"create", test_create},
		{"max_alloc", test_max_alloc},
		{"alignment", test_alignment},
		{"exhaustion", test_exhaustion},
		{"bogus_free", test_bogus_free},
		{"largest_free", test_largest_free},
		{"coalescing", test_coalescing},
		{"random", test_random},
		{"reset", test_reset},
		{"churn", test_churn},
		{"placed", test_placed},
		{"reuse", test_reuse},
	};

	for (unsigned i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		if (tests[i].fn()) {
			fprintf(stderr, "test_heap: %s FAILED\n", tests[i].name);
			return 1;
		}
		printf("test_heap: %s ok\n", tests[i].name);
	}
	return 0;
}
