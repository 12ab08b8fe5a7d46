/*
 * test_loan.c - hgsmi_guest_loan / publish / unloan in two processes: batches
 * of mixed sizes (slab-sized and not) into a small segment with a short ring,
 * so that loans come back short and publishes are partly accepted; some
 * loans are given back unpublished.  The host checks every byte; once all
 * is back the guest heap is empty, and no completion was ever reaped.
 * Both backends.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hgsmi.h"
#include "helpers.h"

#define CH_DATA 0x21
#define CH_COUNT 0x22 /* guest -> host: how many data messages were checked? */
#define ROUNDS 300
#define PER 100

static void fill(uint8_t *p, uint32_t n, uint32_t seed)
{
	for (uint32_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 131 + i * 7);
}

/* A message of n bytes is fill(n, seed n). */
static int check_data(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	static uint8_t want[8192];

	CHECK(m->size >= 1 && m->size <= sizeof(want));
	fill(want, m->size, m->size);
	CHECK(memcmp(want, data, m->size) == 0);
	(*(uint64_t *)ctx)++;
	*reply = 0;
	return 0;
}

static int count(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	CHECK(m->capacity >= 8);
	memcpy(data, ctx, 8);
	*reply = 8;
	return 0;
}

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

static void run_host(const char *name, uint32_t backend, int ready_fd)
{
	/* 1 MiB and a 64-entry ring: loans and publishes both run short. */
	struct hgsmi_host_config cfg = {.name = name, .segment_size = 1u << 20,
					.ring_entries = 64, .backend = backend};
	struct hgsmi_host *h;
	uint64_t seen = 0;

	signal(SIGTERM, on_term);
	CHECK_RC(hgsmi_host_create(&cfg, &h));
	CHECK_RC(hgsmi_host_register(h, CH_DATA, check_data, &seen));
	CHECK_RC(hgsmi_host_register(h, CH_COUNT, count, &seen));
	CHECK(write(ready_fd, "r", 1) == 1);
	while (!stop)
		CHECK(hgsmi_host_poll(h, 100) >= 0);
	hgsmi_host_destroy(h);
	exit(0);
}

static void run_guest(const char *name)
{
	struct hgsmi_guest *g;
	struct hgsmi_guest_stats st;
	uint8_t *base;
	uint32_t offs[PER];
	uint64_t published = 0, seen = 0;
	unsigned short_loans = 0, short_pubs = 0;

	CHECK_RC(hgsmi_guest_attach(name, NULL, &g));
	base = hgsmi_guest_base(g);
	for (int r = 0; r < ROUNDS; r++) {
		/* Mostly slab-sized, every fifth round larger ones. */
		uint32_t size = r % 5 == 4 ? 233 + (uint32_t)(r * 37) % 7000
					   : 1 + (uint32_t)(r * 13) % 232;
		unsigned want = 1 + (unsigned)(r * 7) % PER, got, done = 0;
		int rc;

		while ((rc = hgsmi_guest_loan(g, CH_DATA, 0, size, want, offs)) == -ENOMEM)
			CHECK(hgsmi_guest_wait(g, 2000) >= 0);
		CHECK_RC(rc);
		got = (unsigned)rc;
		CHECK(got >= 1 && got <= want);
		short_loans += got < want;
		for (unsigned i = 0; i < got; i++)
			fill(base + offs[i] + 16, size, size);
		if (r % 11 == 3) { /* give the last few back instead */
			unsigned back = got / 2;
			CHECK(hgsmi_guest_unloan(g, offs + got - back, back) == 0);
			got -= back;
		}
		while (done < got) {
			rc = hgsmi_guest_publish(g, offs + done, got - done);
			if (rc == -EAGAIN) {
				short_pubs++;
				CHECK(hgsmi_guest_wait(g, 2000) >= 0);
				continue;
			}
			CHECK_RC(rc);
			short_pubs += (unsigned)rc < got - done;
			done += (unsigned)rc;
		}
		CHECK(hgsmi_guest_publish(g, offs, 1) == -EINVAL); /* not loaned any more */
		published += got;
	}
	/* The call completes after everything published before it. */
	CHECK(hgsmi_guest_call(g, CH_COUNT, 0, &seen, 8, &seen, 8, 5000) == 8);
	CHECK(seen == published);
	do {
		struct hgsmi_msg none[1];

		CHECK(hgsmi_guest_reap(g, none, 1) == 0); /* loans never come back to the caller */
		hgsmi_guest_stats(g, &st);
	} while (st.inflight && hgsmi_guest_wait(g, 2000) >= 0);
	CHECK(st.inflight == 0 && st.guest_heap.used == 0);
	CHECK(st.remote_errors == 0 && st.errors == 0);
	CHECK(short_loans > 0 && short_pubs > 0); /* the full paths ran */
	hgsmi_guest_detach(g);
}

int main(void)
{
	fork_host_run_guest("cl", HGSMI_BACKEND_EVENTFD, run_host, run_guest);
	fork_host_run_guest("cl", HGSMI_BACKEND_SEMAPHORE, run_host, run_guest);
	printf("test_loan: ok\n");
	return 0;
}
