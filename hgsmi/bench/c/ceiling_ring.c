/* SPDX-License-Identifier: MIT */
/*
 * ceiling_ring - the C ceiling for streaming: a single-producer,
 * single-consumer ring of fixed-size slots in POSIX shared memory, with the
 * producer and the consumer in two processes (fork), both busy-polling
 * (with a sched_yield() every 1024 empty polls, see bench_spin()).
 *
 * The producer memcpy()s each payload from a private buffer into a slot,
 * then publishes it with a release store of head.  Neither side ever sleeps
 * or notifies the other: a transport that does (hgsmi's doorbell, an eventfd
 * write that costs its writer ~7-10 us when it wakes a sleeper on a 2-vCPU
 * KVM guest) pays that against this ceiling. The consumer
 * acquire-loads head, touches (checks) the first and last byte of the slot
 * and nothing else, then hands the slot back with a release store of tail.
 * The consumer times the steady state, from the first message to the last,
 * and the producer prints one JSON line after the consumer exits:
 *
 *   {"msgs": N, "bytes": B, "seconds": S, "size": ..., "slots": ..., "stride": ...}
 *
 * msgs excludes the first message, as in the Python transports.
 *
 * Slot layout and 4K aliasing: on AMD Zen 3 a memcpy of 4 KiB..256 KiB whose
 * destination lies 1..31 bytes above its source mod 4096 runs at ~2-3 GB/s
 * instead of 36-95 GB/s (measured 64 KiB: 2.8 against 45 GB/s at +0); on an
 * Intel Xeon (Ice Lake) 3-16 KiB copies 48..~900 bytes above run 2-3x
 * slower (docs/performance.md, "Bulk copies"). So
 * the control block has a page of its own, the slots start on a page, and
 * from 4 KiB up the slot stride is whole pages; the source buffer is
 * page-aligned too, so every large copy runs at delta 0 mod 4096. Smaller
 * slots have cache-line strides, so their delta is a multiple of 64 and
 * never falls in the 1..31 window.
 *
 *   usage: ceiling_ring -s size [-n count] [-t seconds] [-T timeout] [-p parent_cpu,child_cpu]
 */
#include "bench_common.h"

#include <stdatomic.h>

#define RING_BYTES (2u << 20)	/* aim for about 2 MiB of slots */
#define MIN_SLOTS 4u
#define MAX_SLOTS 256u

struct ring_ctl {
	_Alignas(64) _Atomic uint64_t head;	/* producer: messages published */
	_Alignas(64) _Atomic uint64_t tail;	/* consumer: messages released */
	_Alignas(64) _Atomic uint64_t stop_at;	/* producer: final head; ~0 while running */
	_Atomic uint32_t ready;			/* consumer: polling has started */
	/* The consumer's results, read by the producer after waitpid(). */
	uint64_t msgs;
	double seconds;
	uint32_t bad;
};
_Static_assert(sizeof(struct ring_ctl) <= BENCH_PAGE, "control block fits its page");

struct ring {
	struct ring_ctl *ctl;
	unsigned char *slots;
	size_t size, stride;
	uint64_t mask;		/* slots - 1; the slot count is a power of two */
};

static unsigned char *ring_slot(const struct ring *r, uint64_t i)
{
	return r->slots + (size_t)(i & r->mask) * r->stride;
}

static void consume(struct ring *r)
{
	struct ring_ctl *c = r->ctl;
	const unsigned char last = BENCH_LAST(r->size);
	uint64_t tail = 0, head = 0, spins = 0;
	unsigned bad = 0;
	double t0 = 0;

	atomic_store_explicit(&c->ready, 1, memory_order_release);
	for (;;) {
		if (tail == head) {
			head = atomic_load_explicit(&c->head, memory_order_acquire);
			if (tail == head) {
				if (atomic_load_explicit(&c->stop_at, memory_order_acquire) == tail)
					break;
				bench_spin(&spins);
				continue;
			}
		}
		/* Acquire on head made the producer's copy into this slot visible. */
		const volatile unsigned char *p = ring_slot(r, tail);
		bad |= (unsigned)(p[0] ^ BENCH_FIRST) | (unsigned)(p[r->size - 1] ^ last);
		if (tail == 0)
			t0 = bench_now();
		/* Our reads of the slot happen before the producer may reuse it. */
		atomic_store_explicit(&c->tail, ++tail, memory_order_release);
	}
	c->seconds = tail ? bench_now() - t0 : 0;
	c->msgs = tail ? tail - 1 : 0;
	c->bad = bad;
}

static void produce(struct ring *r, const unsigned char *src, const struct bench_opts *o)
{
	struct ring_ctl *c = r->ctl;
	const uint64_t slots = r->mask + 1;
	const uint64_t count = o->count ? o->count : UINT64_MAX;
	/* Read the clock every message from 4 KiB up, else every 256. */
	const uint64_t clock_mask = r->size >= BENCH_PAGE ? 0 : 255;
	uint64_t head = 0, tail = 0, spins = 0;
	double end;

	while (!atomic_load_explicit(&c->ready, memory_order_acquire)) {
		bench_spin(&spins);
		if ((spins & 0xFFFFF) == 0 && bench_child_gone())
			bench_fail("consumer died before starting");
	}
	end = o->seconds > 0 ? bench_now() + o->seconds : 1e300;
	while (head < count) {
		if ((head & clock_mask) == 0 && bench_now() >= end)
			break;
		while (head - tail >= slots) {
			/* Acquire: the consumer is done reading the slot we reuse. */
			tail = atomic_load_explicit(&c->tail, memory_order_acquire);
			if (head - tail < slots)
				break;
			bench_spin(&spins);
			if ((spins & 0xFFFFF) == 0 && bench_child_gone())
				bench_fail("consumer died");
		}
		memcpy(ring_slot(r, head), src, r->size);
		/* Release: the payload is visible before the new head. */
		atomic_store_explicit(&c->head, ++head, memory_order_release);
	}
	atomic_store_explicit(&c->stop_at, head, memory_order_release);
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	struct ring r;
	unsigned char *shm, *src;
	size_t slots, src_len;

	bench_parse(argc, argv, &o);
	alarm(o.timeout);
	r.size = o.size;
	r.stride = o.size < BENCH_PAGE ? bench_round_up(o.size, 64) : bench_round_up(o.size, BENCH_PAGE);
	slots = MAX_SLOTS;
	while (slots > MIN_SLOTS && slots * r.stride > RING_BYTES)
		slots >>= 1;
	r.mask = slots - 1;

	src_len = bench_round_up(o.size, BENCH_PAGE);
	src = aligned_alloc(BENCH_PAGE, src_len);
	if (!src)
		bench_fail("out of memory");
	for (size_t i = 0; i < o.size; i++)
		src[i] = (unsigned char)((i + BENCH_FIRST) & 0xFF);

	shm = bench_shm_map("ring", BENCH_PAGE + slots * r.stride);
	r.ctl = (struct ring_ctl *)shm;
	r.slots = shm + BENCH_PAGE;
	atomic_store(&r.ctl->stop_at, UINT64_MAX);

	if (bench_fork(&o) == 0) {
		consume(&r);
		_exit(0);
	}
	produce(&r, src, &o);
	bench_wait_child();
	if (r.ctl->bad)
		bench_fail("consumer saw corrupt payloads");
	printf("{\"msgs\": %llu, \"bytes\": %llu, \"seconds\": %.9f, \"size\": %zu, "
	       "\"slots\": %zu, \"stride\": %zu}\n",
	       (unsigned long long)r.ctl->msgs, (unsigned long long)(r.ctl->msgs * o.size),
	       r.ctl->seconds, o.size, slots, r.stride);
	free(src);
	return 0;
}
