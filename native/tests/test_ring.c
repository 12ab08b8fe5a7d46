/* SPDX-License-Identifier: MIT */
/*
 * test_ring.c - the SPSC ring of uint32_t offsets (src/ring.c), white-box.
 *
 *  - hostile indices, single-threaded: a consumer whose producer index is
 *    more than `entries` ahead or behind gets -EPROTO, as does a producer
 *    whose consumer index is ahead of it or too far behind; nothing is read,
 *    written or published then;
 *  - wraparound of the free-running indices at 2^32;
 *  - two threads over one malloc'd ring: 2M sequential values pushed in
 *    random batches of 1..64, popped in random batches; order, no loss, no
 *    duplicate, and the plain memory each value names is visible once it is
 *    popped.  The indices start 1M below 2^32 so the run wraps.
 *
 * Also built under ThreadSanitizer (`make tsan`).  The ring memory is exactly
 * one malloc'd block, so a slot index outside it is caught by ASan.
 * Standalone: exit 0 pass, 1 fail.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "helpers.h"
#include "rng.h"

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

struct fixture {
	uint8_t *mem; /* ring header + slots, one malloc'd block */
	struct hgsmi_region region;
	uint32_t entries;
	struct hgsmi_ring prod, cons;
};

static struct hgsmi_ring_header *H(struct fixture *f)
{
	return (struct hgsmi_ring_header *)(void *)f->mem;
}

static uint32_t *slots(struct fixture *f)
{
	return (uint32_t *)(void *)(f->mem + sizeof(struct hgsmi_ring_header));
}

/* A ring whose tail and head both start at `start`. */
static void fixture_init(struct fixture *f, uint32_t entries, uint32_t start)
{
	uint32_t bytes = hgsmi_int_ring_bytes(entries);

	CHECK(bytes == sizeof(struct hgsmi_ring_header) + entries * 4u);
	f->mem = aligned_alloc(64, (bytes + 63) & ~63u);
	CHECK(f->mem);
	/* Not a multiple of 64 when entries < 16: keep ASan's bound exact. */
	if (bytes % 64) {
		free(f->mem);
		f->mem = malloc(bytes);
		CHECK(f->mem);
	}
	memset(f->mem, 0, bytes);
	f->entries = entries;
	f->region = (struct hgsmi_region){0, bytes};
	H(f)->tail = start;
	H(f)->head = start;
	for (uint32_t i = 0; i < entries; i++)
		slots(f)[i] = 0xa5a5a5a5u;
	hgsmi_int_ring_init(&f->prod, f->mem, &f->region, entries, true);
	hgsmi_int_ring_init(&f->cons, f->mem, &f->region, entries, false);
	CHECK(f->prod.index == start && f->cons.index == start);
	CHECK(f->prod.mask == entries - 1 && f->cons.mask == entries - 1);
}

static void fixture_free(struct fixture *f)
{
	free(f->mem);
	f->mem = NULL;
}

/* ---- single-threaded: basics, full and empty ----------------------------- */

static void test_basic(uint32_t entries, uint32_t start)
{
	struct fixture f;
	uint32_t in[2048], out[2048];

	CHECK(entries <= 1024);
	fixture_init(&f, entries, start);
	CHECK(hgsmi_int_ring_pop(&f.cons, out, 8) == 0);
	CHECK(hgsmi_int_ring_pending(&f.cons) == 0);
	for (uint32_t i = 0; i < 2 * entries; i++)
		in[i] = 1000 + i;
	/* More than fits: exactly `entries` are taken. */
	CHECK(hgsmi_int_ring_push(&f.prod, in, 2 * entries) == (int)entries);
	CHECK(H(&f)->tail == start + entries);
	CHECK(hgsmi_int_ring_pending(&f.cons) == entries);
	CHECK(hgsmi_int_ring_push(&f.prod, in, 1) == 0); /* full */
	CHECK(hgsmi_int_ring_pop(&f.cons, out, 1) == 1 && out[0] == 1000);
	CHECK(H(&f)->head == start + 1);
	CHECK(hgsmi_int_ring_push(&f.prod, in + entries, 5) == 1);
	CHECK(hgsmi_int_ring_pop(&f.cons, out, 2 * entries) == (int)entries);
	for (uint32_t i = 0; i < entries; i++)
		CHECK(out[i] == 1001 + i);
	CHECK(hgsmi_int_ring_pending(&f.cons) == 0);
	CHECK(H(&f)->head == H(&f)->tail && H(&f)->tail == start + entries + 1);
	/* Zero-sized calls are harmless. */
	CHECK(hgsmi_int_ring_push(&f.prod, in, 0) == 0);
	CHECK(hgsmi_int_ring_pop(&f.cons, out, 0) == 0);
	/* A re-mapped ring continues from the published indices. */
	{
		struct hgsmi_ring p2, c2;

		hgsmi_int_ring_init(&p2, f.mem, &f.region, entries, true);
		hgsmi_int_ring_init(&c2, f.mem, &f.region, entries, false);
		CHECK(p2.index == start + entries + 1 && c2.index == p2.index);
		uint32_t k = entries < 3 ? entries : 3;
		CHECK(hgsmi_int_ring_push(&p2, in, 3) == (int)k);
		CHECK(hgsmi_int_ring_pop(&c2, out, 8) == (int)k && out[k - 1] == 999 + k);
	}
	fixture_free(&f);
}

/* ---- single-threaded: wraparound at 2^32 --------------------------------- */

static void test_wrap(void)
{
	static const uint32_t starts[] = {UINT32_MAX - 5, UINT32_MAX, 0x7ffffffdu,
					  UINT32_MAX - 1000};

	for (unsigned s = 0; s < sizeof(starts) / sizeof(starts[0]); s++) {
		for (uint32_t entries = 2; entries <= 64; entries *= 4) {
			struct fixture f;
			uint32_t next_in = 1, next_out = 1, v[64];

			fixture_init(&f, entries, starts[s]);
			/* Push and pop in uneven steps across the wrap. */
			for (unsigned step = 0; step < 3000; step++) {
				unsigned n = 1 + step % 7, m = 1 + (step * 5) % 6;
				int k;

				for (unsigned i = 0; i < n; i++)
					v[i] = next_in + i;
				k = hgsmi_int_ring_push(&f.prod, v, n);
				CHECK(k >= 0 && (unsigned)k <= n);
				next_in += (uint32_t)k;
				CHECK(hgsmi_int_ring_pending(&f.cons) == next_in - next_out);
				CHECK(next_in - next_out <= entries);
				k = hgsmi_int_ring_pop(&f.cons, v, m);
				CHECK(k >= 0 && (unsigned)k <= m);
				for (int i = 0; i < k; i++)
					CHECK(v[i] == next_out++);
			}
			CHECK(H(&f)->tail == starts[s] + next_in - 1);
			CHECK(H(&f)->head == starts[s] + next_out - 1);
			/* The indices really crossed 2^32 (except the start in the middle). */
			if (starts[s] > 0x80000000u)
				CHECK(H(&f)->tail < starts[s]);
			fixture_free(&f);
		}
	}
}

/* ---- single-threaded: hostile indices ------------------------------------ */

static void test_hostile_consumer_side(uint32_t entries, uint32_t start)
{
	/* What a hostile producer may write as its tail, relative to our head. */
	const uint32_t bad[] = {entries + 1, entries + 2, 2 * entries, 0x80000000u,
				UINT32_MAX, UINT32_MAX - entries, (uint32_t)-2};
	struct fixture f;
	uint32_t out[1024], snapshot[1024];

	CHECK(entries <= 1024);
	fixture_init(&f, entries, start);
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(snapshot, slots(&f), entries * 4u);
		H(&f)->tail = start + bad[i];
		CHECK(hgsmi_int_ring_pop(&f.cons, out, entries) == -EPROTO);
		CHECK(hgsmi_int_ring_pop(&f.cons, out, 1) == -EPROTO);
		CHECK(hgsmi_int_ring_pending(&f.cons) == 0);
		/* Nothing was consumed or published. */
		CHECK(f.cons.index == start && H(&f)->head == start);
	}
	/* Exactly `entries` ahead is a full ring, not an error. */
	for (uint32_t i = 0; i < entries; i++)
		slots(&f)[(start + i) & (entries - 1)] = 7000 + i;
	H(&f)->tail = start + entries;
	CHECK(hgsmi_int_ring_pending(&f.cons) == entries);
	CHECK(hgsmi_int_ring_pop(&f.cons, out, 1024) == (int)entries);
	for (uint32_t i = 0; i < entries; i++)
		CHECK(out[i] == 7000 + i);
	CHECK(H(&f)->head == start + entries);
	/* Behind our head by one: -EPROTO again. */
	H(&f)->tail = start + entries - 1;
	CHECK(hgsmi_int_ring_pop(&f.cons, out, 4) == -EPROTO);
	CHECK(hgsmi_int_ring_pending(&f.cons) == 0);
	fixture_free(&f);
}

static void test_hostile_producer_side(uint32_t entries, uint32_t start)
{
	/* What a hostile consumer may write as its head, relative to our tail. */
	const uint32_t bad[] = {1, 2, entries, 0x80000000u, UINT32_MAX - entries,
				(uint32_t)-(int32_t)(entries + 1),
				(uint32_t)-(int32_t)(2 * entries)};
	struct fixture f;
	uint32_t in[64], snapshot[1024];

	CHECK(entries <= 1024);
	for (uint32_t i = 0; i < 64; i++)
		in[i] = 0x1000 + i;
	fixture_init(&f, entries, start);
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(snapshot, slots(&f), entries * 4u);
		H(&f)->head = start + bad[i]; /* ahead of our tail, or too far behind */
		CHECK(hgsmi_int_ring_push(&f.prod, in, 64) == -EPROTO);
		CHECK(hgsmi_int_ring_push(&f.prod, in, 1) == -EPROTO);
		/* No slot written, no tail published. */
		CHECK(memcmp(snapshot, slots(&f), entries * 4u) == 0);
		CHECK(f.prod.index == start && H(&f)->tail == start);
	}
	/* Exactly `entries` behind is a full ring: nothing pushed, no error. */
	H(&f)->head = start - entries;
	CHECK(hgsmi_int_ring_push(&f.prod, in, 64) == 0);
	CHECK(H(&f)->tail == start);
	/* entries - 1 behind: room for one. */
	H(&f)->head = start - entries + 1;
	CHECK(hgsmi_int_ring_push(&f.prod, in, 64) == 1);
	CHECK(slots(&f)[start & (entries - 1)] == 0x1000);
	CHECK(H(&f)->tail == start + 1);
	fixture_free(&f);
}

/* ---- two threads ----------------------------------------------------------- */

#define TOTAL 2000000u

struct rng {
	uint64_t s;
};

static uint32_t rnd(struct rng *r)
{
	return (uint32_t)(rng_next(&r->s) >> 32);
}

static struct fixture tf;
static uint64_t producer_full, consumer_empty;
/*
 * The "buffers" the offsets name: plain (non-atomic) memory written by the
 * producer before it pushes an index and read by the consumer after it pops
 * it, so TSan checks that the ring's release/acquire publishes them.  One
 * cell per value, never reused.
 */
static uint32_t *payload;

static uint32_t stamp(uint32_t v) { return v * 2654435761u ^ 0x5bd1e995u; }

static void *producer(void *arg)
{
	struct rng r = {0x9e3779b97f4a7c15ull};
	uint32_t next = 0, v[64];

	(void)arg;
	while (next < TOTAL) {
		uint32_t n = 1 + rnd(&r) % 64, done = 0;

		if (n > TOTAL - next)
			n = TOTAL - next;
		for (uint32_t i = 0; i < n; i++) {
			v[i] = next + i;
			payload[next + i] = stamp(next + i);
		}
		while (done < n) {
			int k = hgsmi_int_ring_push(&tf.prod, v + done, n - done);

			CHECK(k >= 0);
			if (k == 0) {
				producer_full++;
				sched_yield();
			}
			done += (uint32_t)k;
		}
		next += n;
	}
	return NULL;
}

static void *consumer(void *arg)
{
	struct rng r = {0xdeadbeefcafef00dull};
	uint32_t expect = 0, v[64];

	(void)arg;
	while (expect < TOTAL) {
		uint32_t n = 1 + rnd(&r) % 64, pend = hgsmi_int_ring_pending(&tf.cons);
		int k;

		CHECK(pend <= tf.entries);
		k = hgsmi_int_ring_pop(&tf.cons, v, n);
		CHECK(k >= 0 && (uint32_t)k <= n);
		CHECK((uint32_t)k >= (pend < n ? pend : n)); /* never fewer than seen */
		if (k == 0) {
			consumer_empty++;
			sched_yield();
		}
		for (int i = 0; i < k; i++) {
			if (v[i] != expect || payload[v[i]] != stamp(v[i])) {
				fprintf(stderr, "consumer: got %u, want %u (lost or duplicated), "
					"payload %s\n", v[i], expect,
					payload[v[i]] == stamp(v[i]) ? "ok" : "not visible");
				exit(1);
			}
			expect++;
		}
	}
	return NULL;
}

static void test_threads(uint32_t entries, uint32_t start)
{
	pthread_t p, c;
	struct timespec t0, t1;

	fixture_init(&tf, entries, start);
	payload = calloc(TOTAL, sizeof(*payload));
	CHECK(payload);
	producer_full = consumer_empty = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK(pthread_create(&c, NULL, consumer, NULL) == 0);
	CHECK(pthread_create(&p, NULL, producer, NULL) == 0);
	CHECK(pthread_join(p, NULL) == 0);
	CHECK(pthread_join(c, NULL) == 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK(H(&tf)->tail == start + TOTAL && H(&tf)->head == start + TOTAL);
	CHECK(hgsmi_int_ring_pending(&tf.cons) == 0);
	printf("threads: %u values through %u entries from 0x%08x in %.2f s "
	       "(producer found it full %llu times, consumer empty %llu)\n",
	       TOTAL, entries, start,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
	       (unsigned long long)producer_full, (unsigned long long)consumer_empty);
	fixture_free(&tf);
	free(payload);
}

int main(void)
{
	static const uint32_t sizes[] = {2, 4, 8, 64, 1024};

	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		test_basic(sizes[i], 0);
		test_basic(sizes[i], UINT32_MAX - sizes[i] / 2);
		test_hostile_consumer_side(sizes[i], 0);
		test_hostile_consumer_side(sizes[i], UINT32_MAX - 1);
		test_hostile_producer_side(sizes[i], 0);
		test_hostile_producer_side(sizes[i], UINT32_MAX);
	}
	test_wrap();
	/* Start 1M below 2^32: the run wraps halfway. */
	test_threads(256, UINT32_MAX - 999999u);
	test_threads(8, UINT32_MAX - 999999u);
#ifndef UNDER_TSAN
	test_threads(1024, 0);
#endif
	printf("test_ring: ok\n");
	return 0;
}
