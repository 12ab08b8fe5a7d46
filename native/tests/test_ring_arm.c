/* SPDX-License-Identifier: MIT */
/*
 * test_ring_arm.c - the event-loop API (hgsmi_{guest,host}_{arm,disarm},
 * hgsmi_guest_irq_wait, hgsmi_host_doorbell_wait), the way hgsmi.aio uses
 * it, for both notification backends, plus a regression for the guest's
 * completion stash.
 *
 * loop_stress(): a host thread and a guest thread, each an "event loop":
 * disarm, do all the work there is, arm; if arm says work is ready go round
 * again, else sleep on the fd with poll(2).  For the semaphore backend there
 * is no fd to poll, so each side has a waiter thread that blocks in
 * irq_wait/doorbell_wait beside the loop thread and wakes it through a pipe,
 * as hgsmi.aio's fallback does with call_soon_threadsafe; under TSan this
 * checks that those two calls really touch nothing the loop thread changes.
 * The guest keeps up to IN_FLIGHT buffers on a ring of RING entries (so the
 * ring is full most of the time and the stash limit is hit) and checks every
 * reply.  A poll that sleeps LOST_MS is a lost wake-up and fails the test.
 *
 * stash_limit(): buffers completed but not yet reaped count against the ring:
 * with the ring's worth completed and unreaped, submit must queue nothing
 * (before the fix it queued more, and their completions overwrote the stash).
 *
 * The name starts with test_ring so that `make tsan` runs it too.
 * Standalone: exit 0 pass, 1 fail.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hgsmi.h"
#include "helpers.h"

#define RING 64
#define IN_FLIGHT 200 /* more than the ring: submit returns short counts */
#define TOTAL 20000
#define LOST_MS 1500
#define CH 0x20

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleep on fd (or the pipe a waiter thread writes); fail on a lost wake-up. */
static void sleep_on(int fd, const char *who)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	double t0 = now_s();
	int r = poll(&p, 1, LOST_MS);

	if (r == 0) {
		fprintf(stderr, "%s: LOST WAKE-UP: slept %.0f ms\n", who, (now_s() - t0) * 1e3);
		exit(1);
	}
	CHECK(r > 0);
}

static void drain_pipe(int fd)
{
	char buf[64];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* ---- the semaphore fallback: a waiter thread per side --------------------- */

struct waiter {
	pthread_t thread;
	int (*wait)(void *obj, int ms);
	void *obj;
	int pipe[2];
	int stop; /* atomic */
	uint64_t wakes;
};

static int guest_irq_wait(void *g, int ms) { return hgsmi_guest_irq_wait(g, ms); }
static int host_doorbell_wait(void *h, int ms) { return hgsmi_host_doorbell_wait(h, ms); }

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;

	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		int rc = w->wait(w->obj, 50);

		if (rc > 0) {
			w->wakes++;
			CHECK(write(w->pipe[1], "x", 1) == 1);
		}
		if (rc < 0)
			break;
	}
	return NULL;
}

static void waiter_start(struct waiter *w, int (*wait)(void *, int), void *obj)
{
	w->wait = wait;
	w->obj = obj;
	CHECK(pipe2(w->pipe, O_NONBLOCK | O_CLOEXEC) == 0);
	CHECK(pthread_create(&w->thread, NULL, waiter_main, w) == 0);
}

static void waiter_stop(struct waiter *w)
{
	__atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
	CHECK(pthread_join(w->thread, NULL) == 0);
	close(w->pipe[0]);
	close(w->pipe[1]);
}

/* ---- the host loop --------------------------------------------------------- */

struct host_ctx {
	char name[17];
	uint32_t backend;
	struct hgsmi_host *h;
	int stop; /* atomic */
	uint64_t served, sleeps, stalls;
};

static void *host_main(void *arg)
{
	struct host_ctx *hc = arg;
	struct hgsmi_msg msgs[64];
	struct waiter w = {0};
	int fd = hgsmi_host_fileno(hc->h);

	if (hc->backend == HGSMI_BACKEND_SEMAPHORE) {
		waiter_start(&w, host_doorbell_wait, hc->h);
		fd = w.pipe[0];
	}
	while (!__atomic_load_n(&hc->stop, __ATOMIC_ACQUIRE)) {
		int mask = hgsmi_host_disarm(hc->h), timed_out = 0;

		CHECK_RC(mask);
		if (fd != hgsmi_host_fileno(hc->h))
			drain_pipe(fd);
		if (mask & HGSMI_EV_ACCEPT) {
			struct hgsmi_conn *c;

			while (hgsmi_host_accept(hc->h, &c) != -EAGAIN)
				;
		}
		for (int i = 0; i < hgsmi_host_conn_count(hc->h); i++) {
			struct hgsmi_conn *c = hgsmi_host_conn(hc->h, i);
			int n;

			while ((n = hgsmi_conn_recv(c, msgs, 64)) > 0) {
				uint8_t *base = hgsmi_conn_base(c);

				for (int k = 0; k < n; k++) /* reply: every byte + 1 */
					for (uint32_t j = 0; j < msgs[k].size; j++)
						base[msgs[k].data + j]++;
				CHECK_RC(hgsmi_conn_complete(c, msgs, (unsigned)n));
				hc->served += (unsigned)n;
			}
		}
		if (hgsmi_host_arm(hc->h) == 0) {
			/* 50 ms slices, to see `stop`; the semaphore backend
			 * also watches the fd itself (attaches, hang-ups). */
			struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
					      {.fd = hgsmi_host_fileno(hc->h), .events = POLLIN}};
			int r = poll(p, fd != hgsmi_host_fileno(hc->h) ? 2 : 1, 50);

			CHECK(r >= 0);
			timed_out = r == 0;
			hc->sleeps++;
		}
		/* Slept a whole slice with work on a ring: a lost doorbell. */
		if (timed_out && (hgsmi_host_arm(hc->h) == 1))
			hc->stalls++;
	}
	if (hc->backend == HGSMI_BACKEND_SEMAPHORE)
		waiter_stop(&w);
	return NULL;
}

/* ---- the guest loop -------------------------------------------------------- */

static uint8_t pat(uint32_t seq, uint32_t i) { return (uint8_t)(seq * 31u + i); }

static void guest_loop(const char *name, uint32_t backend)
{
	struct hgsmi_guest *g;
	struct hgsmi_guest_config cfg = {.connect_timeout_ms = 2000};
	struct hgsmi_msg m, done[RING];
	struct hgsmi_guest_stats st;
	struct waiter w = {0};
	uint32_t queue[IN_FLIGHT], *seqs, nq = 0, sent = 0, got = 0;
	uint64_t sleeps = 0;
	uint8_t *base;
	int fd;

	CHECK_RC(hgsmi_guest_attach(name, &cfg, &g));
	base = hgsmi_guest_base(g);
	seqs = calloc(hgsmi_guest_size(g) / 64 + 1, sizeof(*seqs)); /* by offset / 64 */
	CHECK(seqs);
	fd = hgsmi_guest_fileno(g);
	if (backend == HGSMI_BACKEND_SEMAPHORE) {
		CHECK(fd == -EOPNOTSUPP);
		waiter_start(&w, guest_irq_wait, g);
		fd = w.pipe[0];
	}
	while (got < TOTAL) {
		int n, rc = hgsmi_guest_disarm(g);

		CHECK_RC(rc);
		if (backend == HGSMI_BACKEND_SEMAPHORE)
			drain_pipe(fd);
		while ((n = hgsmi_guest_reap(g, done, RING)) > 0) {
			for (int k = 0; k < n; k++) {
				uint32_t seq = seqs[done[k].offset / 64];

				CHECK(done[k].status == 0 && done[k].size == 8 + seq % 57);
				for (uint32_t j = 0; j < done[k].size; j++)
					CHECK(base[done[k].data + j] == (uint8_t)(pat(seq, j) + 1));
				CHECK_RC(hgsmi_guest_free(g, done[k].offset));
			}
			got += (unsigned)n;
		}
		CHECK_RC(n);
		/* Keep IN_FLIGHT allocated: queued here or on the ring. */
		while (sent + nq < TOTAL && nq < IN_FLIGHT && got + IN_FLIGHT > sent + nq) {
			uint32_t len = 8 + (sent + nq) % 57;

			CHECK_RC(hgsmi_guest_alloc(g, len, 0, CH, 0, &m));
			for (uint32_t j = 0; j < len; j++)
				base[m.data + j] = pat(sent + nq, j);
			seqs[m.offset / 64] = sent + nq;
			queue[nq++] = m.offset;
		}
		if (nq) {
			rc = hgsmi_guest_submit(g, queue, nq); /* short when the ring is full */
			CHECK_RC(rc);
			memmove(queue, queue + rc, (nq - (unsigned)rc) * sizeof(*queue));
			nq -= (unsigned)rc;
			sent += (unsigned)rc;
		}
		rc = hgsmi_guest_arm(g);
		CHECK_RC(rc);
		if (rc == 0 && got < TOTAL) {
			sleep_on(fd, "guest");
			sleeps++;
		}
	}
	hgsmi_guest_stats(g, &st);
	CHECK(st.inflight == 0 && st.guest_heap.used == 0);
	printf("%s: %u calls through a %u-entry ring, guest slept %llu times, irqs %llu, "
	       "doorbells %llu (suppressed %llu)\n",
	       backend == HGSMI_BACKEND_EVENTFD ? "eventfd" : "semaphore", TOTAL, RING,
	       (unsigned long long)sleeps, (unsigned long long)st.irqs,
	       (unsigned long long)st.doorbells, (unsigned long long)st.doorbells_suppressed);
	if (backend == HGSMI_BACKEND_SEMAPHORE)
		waiter_stop(&w);
	hgsmi_guest_detach(g);
	free(seqs);
}

static void with_host(uint32_t backend, const char *tag, void (*body)(const char *, uint32_t))
{
	char dir[] = "/tmp/hgsmi-ra-XXXXXX";
	struct host_ctx hc = {.backend = backend};
	struct hgsmi_host_config cfg = {.segment_size = 4u << 20, .ring_entries = RING,
					.backend = backend};
	pthread_t t;

	CHECK(mkdtemp(dir));
	CHECK(setenv("HGSMI_RUNTIME_DIR", dir, 1) == 0);
	snprintf(hc.name, sizeof(hc.name), "%s%d_%u", tag, (int)getpid() % 100000, backend);
	cfg.name = hc.name;
	CHECK_RC(hgsmi_host_create(&cfg, &hc.h));
	CHECK_RC(hgsmi_host_register(hc.h, CH, NULL, NULL));
	CHECK(pthread_create(&t, NULL, host_main, &hc) == 0);
	body(hc.name, backend);
	__atomic_store_n(&hc.stop, 1, __ATOMIC_RELEASE);
	CHECK(pthread_join(t, NULL) == 0);
	if (hc.stalls > 2) {
		fprintf(stderr, "host: LOST DOORBELLS? %llu slices slept with work waiting\n",
			(unsigned long long)hc.stalls);
		exit(1);
	}
	hgsmi_host_destroy(hc.h);
	CHECK(rmdir(dir) == 0);
	CHECK(unsetenv("HGSMI_RUNTIME_DIR") == 0);
}

/* ---- the stash limit ----------------------------------------------------------- */

/* Wait and reap until n completions came (5 s at most); how many came. */
static int reap_at_least(struct hgsmi_guest *g, struct hgsmi_msg *done, int n)
{
	double t0 = now_s();
	int got = 0;

	while (got < n) {
		int k;

		CHECK_RC(hgsmi_guest_wait(g, 100));
		k = hgsmi_guest_reap(g, done, RING);
		CHECK_RC(k);
		got += k;
		CHECK(now_s() - t0 < 5);
	}
	return got;
}

static void stash_limit(const char *name, uint32_t backend)
{
	struct hgsmi_guest *g;
	struct hgsmi_msg m, done[RING];
	uint32_t offs[2 * RING];
	struct hgsmi_guest_stats st;
	double t0;

	(void)backend;
	CHECK_RC(hgsmi_guest_attach(name, NULL, &g));
	for (int i = 0; i < 2 * RING; i++) {
		CHECK_RC(hgsmi_guest_alloc(g, 8, 0, CH, 0, &m));
		offs[i] = m.offset;
	}
	CHECK(hgsmi_guest_submit(g, offs, RING) == RING);
	/* Wait until all are completed; hgsmi_guest_wait collects them into the
	 * stash without handing them out. */
	t0 = now_s();
	for (;;) {
		CHECK_RC(hgsmi_guest_wait(g, 100));
		hgsmi_guest_stats(g, &st);
		if (st.inflight == 0)
			break;
		CHECK(now_s() - t0 < 5);
	}
	/* The ring is empty, but a ring's worth of completions is unreaped. */
	CHECK(hgsmi_guest_submit(g, offs + RING, RING) == 0);
	CHECK(hgsmi_guest_reap(g, done, RING / 2) == RING / 2);
	CHECK(hgsmi_guest_submit(g, offs + RING, RING) == RING / 2);
	CHECK(hgsmi_guest_reap(g, done + RING / 2, RING / 2) == RING / 2);
	CHECK(reap_at_least(g, done, RING / 2) == RING / 2);
	CHECK(hgsmi_guest_submit(g, offs + RING + RING / 2, RING / 2) == RING / 2);
	reap_at_least(g, done, RING / 2);
	for (int i = 0; i < 2 * RING; i++)
		CHECK_RC(hgsmi_guest_free(g, offs[i]));
	detach_clean(g);
	printf("stash limit: ok\n");
}

int main(void)
{
	with_host(HGSMI_BACKEND_EVENTFD, "ra", guest_loop);
	with_host(HGSMI_BACKEND_SEMAPHORE, "ra", guest_loop);
	with_host(HGSMI_BACKEND_EVENTFD, "rs", stash_limit);
	printf("test_ring_arm: ok\n");
	return 0;
}
