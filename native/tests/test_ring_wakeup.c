/* SPDX-License-Identifier: MIT */
/*
 * test_ring_wakeup.c - the lost-wake-up stress (docs/design.md §4: "No wake-up may
 * be lost; a stress test proves it"), on the real host and guest API, in one
 * process with two threads, for both notification backends.
 *
 * stress(): the host thread serves with hgsmi_host_poll(h, 50) until told to
 * stop.  The guest thread runs ROUNDS rounds of: queue a burst of 1..64
 * messages, then wait for exactly that many completions with
 * hgsmi_guest_wait(g, 2000) + hgsmi_guest_reap, then sleep 0..200 us so that
 * the host goes back to sleep between bursts (and the guest does too while it
 * waits).  Rounds therefore cross both sleep/announce/re-check paths: the
 * doorbell with host_waiting and the IRQ with guest_waiting.  A burst goes
 * out, at random, either fire-and-forget with hgsmi_guest_send (the library
 * frees each buffer as it collects the completion: done when inflight is 0)
 * or zero-copy with hgsmi_guest_alloc + hgsmi_guest_submit (each completion
 * is reaped, checked against what was sent, and freed); half the bursts go in
 * 2..4 chunks with random 0..100 us gaps (plan_chunks).
 *
 * What a lost wake-up looks like (see timed_wait): a lost IRQ leaves the
 * guest asleep until its 2 s timeout, after which hgsmi_guest_wait looks at
 * the rings once more and returns 1 if the completion had come; so any wait
 * of 1 s or more fails the test, as does a 0 return with completions due.  A
 * lost doorbell is healed by the host's own 50 ms poll timeout and shows as a
 * wait of about 50 ms where a healthy one takes < 5 ms (< 12 ms under TSan):
 * each is printed as a stall, and more than MAX_STALLS fail the test.  The
 * host-side windows (between the host's last look at the rings and its
 * announcement) are tens of nanoseconds wide, so a stress test on x86 rarely
 * hits them; the guest-side ones it does hit (removing the guest's IRQ
 * check and re-check fails the test in round 0-6).
 *
 * sleeping_host(): a host asleep in a 3 s poll must still wake for a guest
 * that attaches and for its hang-up, with both backends.
 *
 * Cleanup is checked: the socket, segments and semaphores are gone after
 * hgsmi_host_destroy and the private runtime directory can be removed.
 *
 * The name starts with test_ring so that `make tsan` runs it too.  Host and
 * guest map the segment separately here, as two processes would, so TSan sees
 * the two mappings as different memory: it checks the library's private
 * state and this test's, not the shared-memory protocol (test_ring.c does
 * that for the ring itself, with plain payload published by the indices).
 * Standalone: exit 0 pass, 1 fail.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hgsmi.h"
#include "helpers.h"
#include "rng.h"

/*
 * About 1 s per backend natively and 3 s under TSan on 2 cores, so TSan runs
 * the full count too.
 */
#define ROUNDS 3000
/* A stall every 1000 rounds is tolerated as a scheduling hiccup. */
#define MAX_STALLS (ROUNDS / 1000)

#define WAIT_MS 2000   /* the guest's wait timeout */
#define LOST_S 1.0      /* a wait this long lost its wake-up */
#define STALL_S 0.030   /* a wait this long probably waited out the host's poll */
#define HOST_POLL_MS 50
#define SLEEPY_POLL_MS 3000 /* sleeping_host(): longer than the connect timeout */

#define CH_ECHO_C 0x20
#define CH_SINK_C 0x21
#define MAX_BURST 64
#define MAX_LEN 256

/* ---- the host thread ------------------------------------------------------ */

struct host_ctx {
	const char *name;
	uint32_t backend;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int ready; /* 1 when the host listens, -errno if create failed */
	int stop;  /* atomic: set by main when the guest is done */
	int poll_ms; /* the host's hgsmi_host_poll timeout */
	char sock_path[108];
	pthread_t thread;
	/* written by the host thread only; read by main after the join */
	uint64_t echoed, sunk, bad_payload, polls, max_conns;
};

/* Every message carries (seq, len) in its first 8 bytes and pattern_at(seq, i) after. */

static int payload_ok(const struct hgsmi_msg *m, const uint8_t *data)
{
	uint32_t seq, len;

	if (m->size < 8)
		return 0;
	memcpy(&seq, data, 4);
	memcpy(&len, data + 4, 4);
	if (len != m->size)
		return 0;
	for (uint32_t i = 8; i < len; i++)
		if (data[i] != pattern_at(seq, i))
			return 0;
	return 1;
}

/* Both channels check every payload; the echo replies with the request left
 * in place, the sink with nothing. */
static int serve(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	struct host_ctx *hc = ctx;
	bool echo = m->channel == CH_ECHO_C;

	if (!payload_ok(m, data)) {
		hc->bad_payload++;
		return -EBADMSG;
	}
	*(echo ? &hc->echoed : &hc->sunk) += 1;
	*reply = echo ? m->size : 0;
	return 0;
}

static void *host_main(void *arg)
{
	struct host_ctx *hc = arg;
	struct hgsmi_host_config cfg = {.name = hc->name, .segment_size = 4u << 20,
					.backend = hc->backend};
	struct hgsmi_host *h = NULL;
	int rc = hgsmi_host_create(&cfg, &h);

	if (rc == 0) {
		CHECK_RC(hgsmi_host_register(h, CH_ECHO_C, serve, hc));
		CHECK_RC(hgsmi_host_register(h, CH_SINK_C, serve, hc));
		snprintf(hc->sock_path, sizeof(hc->sock_path), "%s", hgsmi_host_socket_path(h));
	}
	pthread_mutex_lock(&hc->lock);
	hc->ready = rc < 0 ? rc : 1;
	pthread_cond_signal(&hc->cond);
	pthread_mutex_unlock(&hc->lock);
	if (rc < 0)
		return NULL;
	while (!__atomic_load_n(&hc->stop, __ATOMIC_ACQUIRE)) {
		int n = hgsmi_host_poll(h, hc->poll_ms);

		CHECK_RC(n);
		hc->polls++;
		if ((uint64_t)hgsmi_host_conn_count(h) > hc->max_conns)
			hc->max_conns = (uint64_t)hgsmi_host_conn_count(h);
	}
	hgsmi_host_destroy(h);
	return NULL;
}

/* ---- the guest thread ----------------------------------------------------- */

struct guest_ctx {
	const char *name;
	uint32_t backend;
	uint64_t sent_echo, sent_sink, waits, stalls, chunks;
	double max_wait;
	struct hgsmi_guest_stats st;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * One hgsmi_guest_wait while `burst - got` completions are due.  A lost IRQ
 * would leave it asleep until the timeout: it returns 0 if the completion
 * never came, and 1 if it came but the IRQ for it was lost (the wait looks
 * at the rings once more when it times out), so the time it slept is what
 * shows a lost wake-up, not only its return value.  A lost doorbell is
 * healed by the host's own 50 ms poll timeout: it shows as a wait of about
 * 50 ms, counted as a stall.
 */
static void timed_wait(struct guest_ctx *gc, struct hgsmi_guest *g, uint32_t round,
		       const char *how, uint32_t got, uint32_t burst)
{
	double t0 = now_s(), dt;
	int rc = hgsmi_guest_wait(g, WAIT_MS);

	dt = now_s() - t0;
	gc->waits++;
	if (dt > gc->max_wait)
		gc->max_wait = dt;
	if (dt >= STALL_S) {
		gc->stalls++;
		fprintf(stderr, "stall: round %u (%s): hgsmi_guest_wait slept %.1f ms "
			"with %u of %u completions in\n", round, how, dt * 1e3, got, burst);
	}
	if (rc == 0 || dt >= LOST_S) {
		struct hgsmi_guest_stats st;

		hgsmi_guest_stats(g, &st);
		fprintf(stderr,
			"LOST WAKE-UP: round %u (%s): hgsmi_guest_wait(%d) = %d after "
			"%.3f s with %u of %u completions in (inflight %u, irqs %llu, "
			"doorbells %llu, suppressed %llu)\n",
			round, how, WAIT_MS, rc, dt, got, burst, st.inflight,
			(unsigned long long)st.irqs, (unsigned long long)st.doorbells,
			(unsigned long long)st.doorbells_suppressed);
		exit(1);
	}
	CHECK_RC(rc);
}

/* Busy-wait: sub-microsecond control over when the next doorbell rings. */
static void spin_us(uint32_t us)
{
	double end = now_s() + us / 1e6;

	while (now_s() < end)
		;
}

/*
 * Half of the bursts go out in 2..4 chunks, one doorbell each, with a
 * random 0..100 us spin between them: later chunks land while the host is
 * serving the first one or on its way back to sleep, which sweeps the
 * narrow announce/re-check windows on both sides.  Returns the number of
 * chunks; size[i] is the i-th chunk's length and gap[i] the spin before it.
 */
static uint32_t plan_chunks(uint64_t *rs, uint32_t burst, uint32_t *size, uint32_t *gap)
{
	uint32_t n = 1, left = burst;

	if (burst > 1 && (rng_next(rs) & 1))
		n = 2 + (uint32_t)(rng_next(rs) % 3);
	if (n > burst)
		n = burst;
	for (uint32_t i = 0; i < n; i++) {
		size[i] = i + 1 == n ? left : 1 + (uint32_t)(rng_next(rs) % (left - (n - 1 - i)));
		left -= size[i];
		gap[i] = i ? (uint32_t)(rng_next(rs) % 101) : 0;
	}
	return n;
}

static void fill(uint8_t *p, uint32_t seq, uint32_t len)
{
	memcpy(p, &seq, 4);
	memcpy(p + 4, &len, 4);
	for (uint32_t b = 8; b < len; b++)
		p[b] = pattern_at(seq, b);
}

/*
 * Hand a burst over in the chunks plan_chunks() draws, with its gaps: copies
 * through hgsmi_guest_send (datas, lens), or offsets through
 * hgsmi_guest_submit (offs; datas NULL).  Then count it as sent.
 */
static void hand_over(struct guest_ctx *gc, struct hgsmi_guest *g, uint32_t round,
		      uint32_t burst, uint8_t ch, uint64_t *rs, const void *const *datas,
		      const uint32_t *lens, const uint32_t *offs)
{
	uint32_t size[4], gap[4], nchunks = plan_chunks(rs, burst, size, gap);

	for (uint32_t c = 0, at = 0; c < nchunks; at += size[c++]) {
		int rc;

		spin_us(gap[c]);
		rc = datas ? hgsmi_guest_send(g, ch, (uint16_t)round, datas + at, lens + at, size[c])
			   : hgsmi_guest_submit(g, offs + at, size[c]);
		if (rc != (int)size[c]) {
			fprintf(stderr, "round %u: hgsmi_guest_%s(%u) = %d (%s)\n", round,
				datas ? "send" : "submit", size[c], rc,
				rc < 0 ? hgsmi_strerror(rc) : "short");
			exit(1);
		}
	}
	gc->chunks += nchunks;
	if (ch == CH_SINK_C)
		gc->sent_sink += burst;
	else
		gc->sent_echo += burst;
}

/*
 * Fire and forget: hgsmi_guest_send per chunk; the library frees each buffer as its
 * completion is collected, so "all completed" is inflight == 0.
 */
static void round_send(struct guest_ctx *gc, struct hgsmi_guest *g, uint32_t round,
		       uint32_t burst, uint8_t ch, uint32_t *seq, uint64_t *rs)
{
	static uint8_t bufs[MAX_BURST][MAX_LEN];
	const void *datas[MAX_BURST];
	uint32_t lens[MAX_BURST];
	struct hgsmi_guest_stats st;
	struct hgsmi_msg done[MAX_BURST];

	for (uint32_t i = 0; i < burst; i++, (*seq)++) {
		lens[i] = 8 + (uint32_t)(rng_next(rs) % (MAX_LEN - 7));
		fill(bufs[i], *seq, lens[i]);
		datas[i] = bufs[i];
	}
	hand_over(gc, g, round, burst, ch, rs, datas, lens, NULL);
	for (;;) {
		/* Collects (and frees) the sent buffers; returns none of them. */
		CHECK(hgsmi_guest_reap(g, done, MAX_BURST) == 0);
		hgsmi_guest_stats(g, &st);
		if (st.inflight == 0)
			break;
		timed_wait(gc, g, round, "send", burst - st.inflight, burst);
	}
	CHECK(st.guest_heap.used == 0);
}

/*
 * Zero copy: alloc and fill each buffer, one hgsmi_guest_submit per chunk,
 * then reap exactly `burst` completions, check and free each.
 */
static void round_submit(struct guest_ctx *gc, struct hgsmi_guest *g, uint32_t round,
			 uint32_t burst, uint8_t ch, uint32_t *seq, uint64_t *rs)
{
	uint8_t *base = hgsmi_guest_base(g);
	uint32_t offs[MAX_BURST], lens[MAX_BURST], first = *seq, got = 0;
	struct hgsmi_msg done[MAX_BURST];
	uint64_t seen = 0; /* bit i: message first + i completed */

	for (uint32_t i = 0; i < burst; i++, (*seq)++) {
		struct hgsmi_msg m;

		lens[i] = 8 + (uint32_t)(rng_next(rs) % (MAX_LEN - 7));
		CHECK_RC(hgsmi_guest_alloc(g, lens[i], 0, ch, (uint16_t)round, &m));
		fill(base + m.data, *seq, lens[i]);
		offs[i] = m.offset;
	}
	hand_over(gc, g, round, burst, ch, rs, NULL, NULL, offs);
	for (;;) {
		int n = hgsmi_guest_reap(g, done, MAX_BURST);

		CHECK_RC(n);
		for (int k = 0; k < n; k++) {
			const struct hgsmi_msg *m = &done[k];
			uint32_t s, i;

			if (m->status != 0) {
				fprintf(stderr, "round %u: completion status %d (%s)\n", round,
					m->status, hgsmi_strerror(m->status));
				exit(1);
			}
			memcpy(&s, base + m->data, 4);
			CHECK(s - first < burst);
			i = s - first;
			CHECK(!(seen & (1ull << i))); /* each completes once */
			seen |= 1ull << i;
			CHECK(m->offset == offs[i]);
			CHECK(m->channel == ch && m->info == (uint16_t)round);
			if (ch == CH_ECHO_C) {
				uint8_t want[MAX_LEN];

				/* The echo leaves the request in place as the reply. */
				CHECK(m->size == lens[i]);
				fill(want, s, lens[i]);
				CHECK(memcmp(base + m->data, want, lens[i]) == 0);
			} else {
				CHECK(m->size == 0);
			}
			CHECK_RC(hgsmi_guest_free(g, m->offset));
			got++;
		}
		if (got == burst)
			break;
		timed_wait(gc, g, round, "submit", got, burst);
	}
}

static void *guest_main(void *arg)
{
	struct guest_ctx *gc = arg;
	uint64_t rs = 0x853c49e6748fea9bull ^ gc->backend;
	uint32_t seq = 0;
	struct hgsmi_guest *g;

	CHECK_RC(hgsmi_guest_attach(gc->name, NULL, &g));
	for (uint32_t round = 0; round < ROUNDS; round++) {
		uint32_t burst = 1 + (uint32_t)(rng_next(&rs) % MAX_BURST);
		uint8_t ch = round % 4 == 3 ? CH_SINK_C : CH_ECHO_C;

		if (rng_next(&rs) & 1)
			round_send(gc, g, round, burst, ch, &seq, &rs);
		else
			round_submit(gc, g, round, burst, ch, &seq, &rs);
		/* Let the host (and our own IRQ line) go idle: 0..200 us. */
		{
			uint32_t us = (uint32_t)(rng_next(&rs) % 201);
			struct timespec ts = {0, (long)us * 1000};

			if (us)
				nanosleep(&ts, NULL);
		}
	}
	hgsmi_guest_stats(g, &gc->st);
	CHECK(gc->st.inflight == 0);
	CHECK(gc->st.guest_heap.used == 0);
	CHECK(gc->st.errors == 0 && gc->st.remote_errors == 0);
	hgsmi_guest_detach(g);
	return NULL;
}

/* ---- one backend ------------------------------------------------------------ */

/* Names in /dev/shm that this instance could have left behind. */
static int leftovers(const char *name)
{
	char seg[64], sem[64];
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	int n = 0;

	if (!d)
		return 0;
	snprintf(seg, sizeof(seg), "hgsmi-%s.", name);
	snprintf(sem, sizeof(sem), "sem.hgsmi-%s.", name);
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, seg, strlen(seg)) == 0 ||
		    strncmp(e->d_name, sem, strlen(sem)) == 0) {
			fprintf(stderr, "left behind: /dev/shm/%s\n", e->d_name);
			n++;
		}
	}
	closedir(d);
	return n;
}

/* A private runtime directory and a unique instance name; start the host. */
static void host_start(struct host_ctx *hc, char *dir, char *name, size_t name_len,
		       const char *tag)
{
	CHECK(mkdtemp(dir));
	/* Set before any thread starts: both sides read it with getenv. */
	CHECK(setenv("HGSMI_RUNTIME_DIR", dir, 1) == 0);
	snprintf(name, name_len, "%s%d_%u", tag, (int)getpid() % 100000, hc->backend);
	hc->name = name;
	pthread_mutex_init(&hc->lock, NULL);
	pthread_cond_init(&hc->cond, NULL);
	CHECK(pthread_create(&hc->thread, NULL, host_main, hc) == 0);
	pthread_mutex_lock(&hc->lock);
	while (!hc->ready)
		pthread_cond_wait(&hc->cond, &hc->lock);
	pthread_mutex_unlock(&hc->lock);
	CHECK_RC(hc->ready);
}

/* After the host thread ended: a clean stop leaves nothing behind. */
static void host_gone_clean(struct host_ctx *hc, char *dir)
{
	struct stat st;

	/* Socket, segments and semaphores gone, the directory empty. */
	CHECK(stat(hc->sock_path, &st) < 0 && errno == ENOENT);
	CHECK(leftovers(hc->name) == 0);
	CHECK(rmdir(dir) == 0);
	CHECK(unsetenv("HGSMI_RUNTIME_DIR") == 0);
	pthread_mutex_destroy(&hc->lock);
	pthread_cond_destroy(&hc->cond);
}

static const char *backend_name(uint32_t backend)
{
	return backend == HGSMI_BACKEND_EVENTFD ? "eventfd" : "semaphore";
}

/* The stress: see the top of the file. */
static void stress(uint32_t backend)
{
	char dir[] = "/tmp/hgsmi-rw-XXXXXX", name[17];
	struct host_ctx hc = {.backend = backend, .poll_ms = HOST_POLL_MS};
	struct guest_ctx gc = {.backend = backend};
	pthread_t gt;
	double t0 = now_s();

	host_start(&hc, dir, name, sizeof(name), "rw");
	gc.name = name;
	CHECK(pthread_create(&gt, NULL, guest_main, &gc) == 0);
	CHECK(pthread_join(gt, NULL) == 0);
	__atomic_store_n(&hc.stop, 1, __ATOMIC_RELEASE);
	CHECK(pthread_join(hc.thread, NULL) == 0);

	CHECK(hc.bad_payload == 0);
	CHECK(hc.echoed == gc.sent_echo && hc.sunk == gc.sent_sink);
	CHECK(hc.max_conns == 1);
	/* A lost doorbell is healed by the host's poll timeout: it shows as
	 * waits of about HOST_POLL_MS, where a healthy wait takes < 5 ms. */
	if (gc.stalls > MAX_STALLS) {
		fprintf(stderr, "LOST DOORBELLS? %llu waits over %.0f ms (longest %.1f ms)\n",
			(unsigned long long)gc.stalls, STALL_S * 1e3, gc.max_wait * 1e3);
		exit(1);
	}
	printf("%s: %u rounds, %llu chunks, %llu messages (%llu echo, %llu sink) in %.2f s; "
	       "guest waited %llu times (longest %.1f ms, %llu over %.0f ms); "
	       "irqs %llu, doorbells rung %llu, suppressed %llu; host polls %llu\n",
	       backend_name(backend), ROUNDS, (unsigned long long)gc.chunks,
	       (unsigned long long)(gc.sent_echo + gc.sent_sink),
	       (unsigned long long)gc.sent_echo, (unsigned long long)gc.sent_sink,
	       now_s() - t0, (unsigned long long)gc.waits, gc.max_wait * 1e3,
	       (unsigned long long)gc.stalls, STALL_S * 1e3,
	       (unsigned long long)gc.st.irqs, (unsigned long long)gc.st.doorbells,
	       (unsigned long long)gc.st.doorbells_suppressed,
	       (unsigned long long)hc.polls);
	host_gone_clean(&hc, dir);
}

/*
 * The other wake-ups of a sleeping host: a guest knocking on the socket and a
 * guest hanging up.  hgsmi_host_wait sleeps "on the doorbells and sockets"
 * (hgsmi.h), so a host asleep in a long hgsmi_host_poll must accept a guest
 * well within the guest's 2 s connect timeout, and notice its hang-up
 * promptly, with either backend.
 */
static void sleeping_host(uint32_t backend)
{
	char dir[] = "/tmp/hgsmi-rs-XXXXXX", name[17];
	struct host_ctx hc = {.backend = backend, .poll_ms = SLEEPY_POLL_MS};
	struct hgsmi_guest_config gcfg = {.connect_timeout_ms = 2000};
	struct hgsmi_guest *g = NULL;
	struct timespec nap = {0, 100 * 1000 * 1000};
	double t0, attach_s, hangup_s;
	int rc;

	host_start(&hc, dir, name, sizeof(name), "rs");
	nanosleep(&nap, NULL); /* the host is asleep in its poll now */
	t0 = now_s();
	rc = hgsmi_guest_attach(name, &gcfg, &g);
	attach_s = now_s() - t0;
	if (rc == 0) {
		uint32_t v;

		CHECK_RC(hgsmi_guest_query_conf(g, HGSMI_CONF_ECHO, &v));
		CHECK(v == HGSMI_CONF_ECHO);
	}
	/* Stop first: the hang-up below is what must wake the host. */
	__atomic_store_n(&hc.stop, 1, __ATOMIC_RELEASE);
	t0 = now_s();
	hgsmi_guest_detach(g);
	CHECK(pthread_join(hc.thread, NULL) == 0);
	hangup_s = now_s() - t0;
	printf("%s, host asleep in hgsmi_host_poll(%d): attach = %d after %.1f ms, "
	       "host saw the hang-up after %.1f ms\n",
	       backend_name(backend), SLEEPY_POLL_MS, rc, attach_s * 1e3, hangup_s * 1e3);
	host_gone_clean(&hc, dir);
	if (rc < 0 || attach_s > 1.0 || hangup_s > 1.0) {
		fprintf(stderr,
			"core bug (%s backend): a host asleep in hgsmi_host_poll(h, %d) "
			"did not wake for %s: src/host_loop.c wait_sem() sleeps on the shared "
			"doorbell semaphore alone and looks at the listening socket and "
			"the guests' sockets (epoll) only once, before it sleeps\n",
			backend_name(backend), SLEEPY_POLL_MS,
			rc < 0 || attach_s > 1.0 ? "a guest's attach" : "a guest's hang-up");
		exit(1);
	}
}

int main(void)
{
	stress(HGSMI_BACKEND_EVENTFD);
	stress(HGSMI_BACKEND_SEMAPHORE);
	sleeping_host(HGSMI_BACKEND_EVENTFD);
	sleeping_host(HGSMI_BACKEND_SEMAPHORE);
	printf("test_ring_wakeup: ok\n");
	return 0;
}
