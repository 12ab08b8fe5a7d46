/* SPDX-License-Identifier: MIT */
/*
 * hgsmi_c - the hgsmi workloads driven from C through libhgsmi, no Python:
 * the "hgsmi-c" transport of `hgsmi bench`.
 *
 * The parent is the host (hgsmi_host_create, C handlers served by
 * hgsmi_host_poll); a forked child is the guest (hgsmi_guest_attach).  They
 * share nothing but what the library shares: the child only learns, through
 * a flag in an anonymous shared page, that the host's socket exists.  The
 * measuring side writes its figures into that page and the parent prints one
 * JSON line after the child has exited:
 *
 *   -m g2h  the guest streams with hgsmi_guest_send (copy mode: alloc, copy,
 *           seal, queue; -b messages per call, one doorbell per call); a host
 *           handler checks the first and last byte of each message.
 *   -m h2g  the host streams with hgsmi_conn_send (copy mode: alloc, copy,
 *           seal, queue; -b messages per call, one IRQ per call); a guest
 *           handler checks the first and last byte of each message.
 *   -m rtt  synchronous hgsmi_guest_call of -s bytes (alloc, copy, submit,
 *           wait, copy the reply back, free); the host handler checks the
 *           request and echoes it in place.  The guest times every call.
 *
 * Streams print {"msgs", "bytes", "seconds"} of the receiver's steady state:
 * the clock starts at the first message and stops at the end marker, and msgs
 * excludes the first message, as in the Python transports.  rtt prints
 * {"samples_us": [...]}.  Every buffer is checksummed and verified by the
 * library on the way, as for any hgsmi user.  -S sets spin_us on both sides
 * (0: sleep only).  Any failed call ends the program with a message on stderr
 * and exit status 1; the host's socket, segment and directory are removed.
 *
 *   usage: hgsmi_c -m g2h|h2g|rtt -s size [-n count] [-t seconds] [-w warmup]
 *                  [-S spin_us] [-b batch] [-T timeout] [-p host_cpu,guest_cpu]
 */
#include "bench_common.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <hgsmi.h>

#define DATA_CH 16
#define END_CH 17
#define TIMEOUT_MS 10000
#define SEGMENT (64u << 20) /* several 1 MiB messages in flight, as in Python */
#define MAX_BATCH 256u

enum mode { G2H, H2G, RTT };

/* The anonymous shared page(s): the host's readiness and the results. */
struct shared {
	_Atomic uint32_t host_ready; /* the host's socket accepts guests */
	uint64_t msgs;               /* stream: messages after the first */
	double seconds;              /* stream: first message to end marker */
	uint64_t nsamples;           /* rtt: timed calls */
	double samples_us[];         /* rtt: one per timed call */
};

/* What a receiving handler keeps: runs inside hgsmi_*_poll. */
struct rx {
	uint32_t size;
	bool echo;      /* rtt: the reply is the request, in place */
	bool done;      /* the end marker arrived */
	uint64_t n;     /* messages seen */
	double t0, t1;  /* first message, end marker */
};

static struct hgsmi_host *host;     /* the parent's, for cleanup */
static char rundir[64];

static void cleanup(void)
{
	if (host)
		hgsmi_host_destroy(host); /* unlinks socket and segments */
	host = NULL;
	if (rundir[0])
		rmdir(rundir);
}

static void check(int rc, const char *what)
{
	if (rc < 0)
		bench_fail("hgsmi_c: %s: %s", what, hgsmi_strerror(rc));
}

/*
 * The data channel.  The peer may rewrite the buffer while we look, but we
 * only compare two bytes and never index with them, so reading once is safe.
 */
static int on_data(void *ctx, const struct hgsmi_msg *msg, void *data, uint32_t *reply_len)
{
	struct rx *r = ctx;
	const volatile unsigned char *p = data;

	if (msg->size != r->size || p[0] != BENCH_FIRST || p[r->size - 1] != BENCH_LAST(r->size))
		bench_fail("hgsmi_c: corrupt message: %u bytes, want %u", (unsigned)msg->size,
			   (unsigned)r->size);
	if (r->n++ == 0)
		r->t0 = bench_now();
	*reply_len = r->echo ? msg->size : 0;
	return 0;
}

static int on_end(void *ctx, const struct hgsmi_msg *msg, void *data, uint32_t *reply_len)
{
	struct rx *r = ctx;

	(void)msg;
	(void)data;
	r->t1 = bench_now();
	r->done = true;
	*reply_len = 0;
	return 0;
}

static void store_stream(struct shared *sh, const struct rx *r)
{
	if (r->n < 2)
		bench_fail("hgsmi_c: the stream ended before its second message");
	sh->msgs = r->n - 1;
	sh->seconds = r->t1 - r->t0;
}

/* Messages per doorbell: 256 small ones, at most ~2 MiB (as hgsmi-batch). */
static unsigned batch_for(const struct bench_opts *o)
{
	unsigned b = o->batch ? o->batch : (unsigned)((2u << 20) / o->size);

	return b < 1 ? 1 : b > MAX_BATCH ? MAX_BATCH : b;
}

/* ---- host (parent) -------------------------------------------------------- */

/* One host pass; a quiet pass is where we notice a dead guest. */
static int host_pass(int timeout_ms)
{
	int rc = hgsmi_host_poll(host, timeout_ms);

	if (rc < 0 && rc != -EINTR)
		check(rc, "hgsmi_host_poll");
	if (rc <= 0 && bench_child_gone())
		bench_fail("hgsmi_c: the guest died");
	return rc;
}

/* Serve until the guest has detached (its end call is answered meanwhile). */
static void host_drain(void)
{
	double end = bench_now() + 5;

	while (hgsmi_host_conn_count(host) > 0 && bench_now() < end) {
		int rc = hgsmi_host_poll(host, 50);

		if (rc < 0 && rc != -EINTR)
			check(rc, "hgsmi_host_poll");
	}
}

/*
 * h2g: up to -b messages per hgsmi_conn_send (one IRQ a call).  A full heap
 * or FIFO waits for the guest's acks (hgsmi_conn_recv and the next send take
 * them).
 */
static void host_stream(struct hgsmi_conn *c, const unsigned char *src,
			const struct bench_opts *o)
{
	const unsigned b = batch_for(o);
	const uint64_t count = o->count ? o->count : UINT64_MAX;
	static const void *datas[MAX_BATCH];
	static uint32_t lens[MAX_BATCH];
	struct hgsmi_msg out[64];
	uint64_t n = 0;
	double end = o->seconds > 0 ? bench_now() + o->seconds : 1e300;
	int rc;

	for (unsigned i = 0; i < b; i++) {
		datas[i] = src;
		lens[i] = (uint32_t)o->size;
	}
	while (n < count && bench_now() < end) {
		unsigned want = count - n < b ? (unsigned)(count - n) : b;

		rc = hgsmi_conn_send(c, DATA_CH, 0, datas, lens, want);
		if (rc > 0) {
			n += (unsigned)rc;
			if ((unsigned)rc == want)
				continue;
		} else if (rc != -ENOMEM && rc != -EAGAIN) {
			check(rc, "hgsmi_conn_send");
		}
		rc = hgsmi_host_wait(host, TIMEOUT_MS);
		check(rc, "hgsmi_host_wait");
		if (rc == 0)
			bench_fail("hgsmi_c: no acks from the guest for %d ms", TIMEOUT_MS);
		/* Take acks (they free host buffers); the guest sends nothing else. */
		while ((rc = hgsmi_conn_recv(c, out, 64)) > 0)
			bench_fail("hgsmi_c: unexpected guest buffer on channel %u", out[0].channel);
		check(rc, "hgsmi_conn_recv");
	}
	for (;;) {
		int64_t p = hgsmi_conn_post(c, END_CH, 0, "end", 3);

		if (p >= 0)
			break;
		if (p != -ENOMEM && p != -EAGAIN)
			check((int)p, "hgsmi_conn_post (end)");
		check(hgsmi_host_wait(host, TIMEOUT_MS), "hgsmi_host_wait");
		check(hgsmi_conn_recv(c, out, 64), "hgsmi_conn_recv");
	}
}

static void run_host(enum mode mode, struct shared *sh, const unsigned char *src,
		     const struct bench_opts *o, const char *name)
{
	struct hgsmi_host_config cfg = {
		.name = name, .runtime_dir = rundir, .segment_size = SEGMENT,
		.spin_us = o->spin_us,
	};
	struct rx rx = {.size = (uint32_t)o->size, .echo = mode == RTT};
	double end;

	check(hgsmi_host_create(&cfg, &host), "hgsmi_host_create");
	if (mode != H2G) {
		check(hgsmi_host_register(host, DATA_CH, on_data, &rx), "hgsmi_host_register");
		check(hgsmi_host_register(host, END_CH, on_end, &rx), "hgsmi_host_register");
	}
	atomic_store_explicit(&sh->host_ready, 1, memory_order_release);
	if (mode != H2G) {
		while (!rx.done)
			host_pass(500);
		host_drain();
		if (mode == G2H)
			store_stream(sh, &rx);
		return;
	}
	end = bench_now() + TIMEOUT_MS / 1000.0;
	while (hgsmi_host_conn_count(host) < 1) {
		if (bench_now() > end)
			bench_fail("hgsmi_c: the guest did not attach");
		host_pass(100);
	}
	host_stream(hgsmi_host_conn(host, 0), src, o);
	host_drain();
}

/* ---- guest (child) -------------------------------------------------------- */

static struct hgsmi_guest *attach(struct shared *sh, const struct bench_opts *o,
				  const char *name)
{
	struct hgsmi_guest_config cfg = {
		.runtime_dir = rundir, .spin_us = o->spin_us, .connect_timeout_ms = TIMEOUT_MS,
	};
	struct hgsmi_guest *g;
	double end = bench_now() + TIMEOUT_MS / 1000.0;

	while (!atomic_load_explicit(&sh->host_ready, memory_order_acquire)) {
		if (bench_now() > end)
			bench_fail("hgsmi_c: the host never became ready");
		usleep(1000);
	}
	check(hgsmi_guest_attach(name, &cfg, &g), "hgsmi_guest_attach");
	return g;
}

/* Wait for room after -ENOMEM / -EAGAIN: completions free guest buffers. */
static void guest_wait_room(struct hgsmi_guest *g)
{
	int rc = hgsmi_guest_wait(g, TIMEOUT_MS);

	check(rc, "hgsmi_guest_wait");
	if (rc == 0)
		bench_fail("hgsmi_c: no completions from the host for %d ms", TIMEOUT_MS);
}

/* The synchronous end marker: the host has seen everything before it. */
static void guest_end(struct hgsmi_guest *g)
{
	int rc;

	while ((rc = hgsmi_guest_call(g, END_CH, 0, "end", 3, NULL, 0, TIMEOUT_MS)) == -ENOMEM ||
	       rc == -EAGAIN)
		guest_wait_room(g);
	check(rc, "hgsmi_guest_call (end)");
}

static void guest_stream(struct hgsmi_guest *g, const unsigned char *src,
			 const struct bench_opts *o)
{
	const unsigned b = batch_for(o);
	const uint64_t count = o->count ? o->count : UINT64_MAX;
	const void *datas[MAX_BATCH];
	uint32_t lens[MAX_BATCH];
	uint64_t n = 0;
	double end = o->seconds > 0 ? bench_now() + o->seconds : 1e300;

	for (unsigned k = 0; k < b; k++) {
		datas[k] = src;
		lens[k] = (uint32_t)o->size;
	}
	while (n < count && bench_now() < end) {
		unsigned k = count - n < b ? (unsigned)(count - n) : b;
		int rc = hgsmi_guest_send(g, DATA_CH, 0, datas, lens, k);

		if (rc == -ENOMEM || rc == -EAGAIN) {
			guest_wait_room(g);
			continue;
		}
		check(rc, "hgsmi_guest_send");
		n += (unsigned)rc;
	}
	guest_end(g);
}

static void guest_rtt(struct hgsmi_guest *g, struct shared *sh, const unsigned char *src,
		      const struct bench_opts *o)
{
	unsigned char *reply = malloc(o->size);
	double end = o->seconds > 0 ? bench_now() + o->seconds : 1e300;

	if (!reply)
		bench_fail("hgsmi_c: out of memory");
	for (uint64_t i = 0; i < o->warmup + o->count; i++) {
		double t0 = bench_now(), t1;
		int rc = hgsmi_guest_call(g, DATA_CH, 0, src, (uint32_t)o->size, reply,
					  (uint32_t)o->size, TIMEOUT_MS);

		t1 = bench_now();
		check(rc, "hgsmi_guest_call");
		if ((size_t)rc != o->size || reply[0] != BENCH_FIRST ||
		    reply[o->size - 1] != BENCH_LAST(o->size))
			bench_fail("hgsmi_c: corrupt reply: %d bytes, want %zu", rc, o->size);
		if (i < o->warmup)
			continue;
		sh->samples_us[sh->nsamples++] = (t1 - t0) * 1e6;
		if (t1 >= end)
			break;
	}
	free(reply);
	guest_end(g);
}

static void guest_recv(struct hgsmi_guest *g, struct shared *sh, const struct bench_opts *o)
{
	struct rx rx = {.size = (uint32_t)o->size};

	check(hgsmi_guest_register(g, DATA_CH, on_data, &rx), "hgsmi_guest_register");
	check(hgsmi_guest_register(g, END_CH, on_end, &rx), "hgsmi_guest_register");
	while (!rx.done) {
		int rc = hgsmi_guest_poll(g, 500);

		check(rc, "hgsmi_guest_poll");
		if (rc == 0 && getppid() == 1)
			bench_fail("hgsmi_c: the host died");
	}
	store_stream(sh, &rx);
}

static void run_guest(enum mode mode, struct shared *sh, const unsigned char *src,
		      const struct bench_opts *o, const char *name)
{
	struct hgsmi_guest *g = attach(sh, o, name);

	if (mode == G2H)
		guest_stream(g, src, o);
	else if (mode == RTT)
		guest_rtt(g, sh, src, o);
	else
		guest_recv(g, sh, o);
	hgsmi_guest_detach(g);
}

/* ---- main ----------------------------------------------------------------- */

int main(int argc, char **argv)
{
	struct bench_opts o;
	struct shared *sh;
	enum mode mode;
	unsigned char *src;
	size_t shared_len;
	char name[32];

	bench_parse(argc, argv, &o);
	alarm(o.timeout);
	if (!strcmp(o.mode, "g2h"))
		mode = G2H;
	else if (!strcmp(o.mode, "h2g"))
		mode = H2G;
	else if (!strcmp(o.mode, "rtt"))
		mode = RTT;
	else
		bench_fail("hgsmi_c: -m must be g2h, h2g or rtt");
	if (mode == RTT && (o.count == 0 || o.count > (1u << 24)))
		bench_fail("hgsmi_c: rtt needs -n count (at most 2^24)");
	if (o.size > SEGMENT / 4)
		bench_fail("hgsmi_c: size must be at most %u", SEGMENT / 4);

	/* Page-aligned source, so the copy into the VRAM avoids 4K aliasing. */
	src = aligned_alloc(BENCH_PAGE, bench_round_up(o.size, BENCH_PAGE));
	if (!src)
		bench_fail("hgsmi_c: out of memory");
	for (size_t i = 0; i < o.size; i++)
		src[i] = (unsigned char)((i + BENCH_FIRST) & 0xFF);

	shared_len = bench_round_up(sizeof(*sh) + (mode == RTT ? o.count : 0) * sizeof(double),
				    BENCH_PAGE);
	sh = mmap(NULL, shared_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		bench_fail("hgsmi_c: mmap: %s", strerror(errno));
	snprintf(name, sizeof(name), "bc%ld", (long)getpid());
	snprintf(rundir, sizeof(rundir), "/tmp/hgsmi-bench-c-XXXXXX");
	if (!mkdtemp(rundir))
		bench_fail("hgsmi_c: mkdtemp: %s", strerror(errno));

	if (bench_fork(&o) == 0) {
		run_guest(mode, sh, src, &o, name);
		_exit(0);
	}
	/* Only the parent cleans up (registered after fork: the child must not). */
	if (atexit(cleanup) != 0)
		bench_fail("hgsmi_c: atexit failed");
	run_host(mode, sh, src, &o, name);
	bench_wait_child();
	cleanup();

	if (mode == RTT) {
		printf("{\"samples_us\": [");
		for (uint64_t i = 0; i < sh->nsamples; i++)
			printf("%s%.3f", i ? ", " : "", sh->samples_us[i]);
		printf("]}\n");
	} else {
		printf("{\"msgs\": %llu, \"bytes\": %llu, \"seconds\": %.9f, \"size\": %zu, "
		       "\"batch\": %u, \"spin_us\": %u}\n",
		       (unsigned long long)sh->msgs, (unsigned long long)(sh->msgs * o.size),
		       sh->seconds, o.size, batch_for(&o), o.spin_us);
	}
	free(src);
	return 0;
}
