/*
 * test_transport.c - a host and a guest in two processes: synchronous calls
 * of many sizes on a C echo handler, batched sends, host commands through
 * the FIFO, QUERY_CONF, an unregistered channel, and both backends.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hgsmi.h"
#include "helpers.h"

#define CH_ECHO_C 0x20
#define CH_POST 0x21
#define CH_SINK_C 0x22
#define CH_ASK_POST 0x23
#define CH_CHECK_C 0x24

static int echo(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	(void)ctx;
	(void)data;
	*reply = m->size;
	return 0;
}

static int sink(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	(void)m;
	(void)data;
	(*(uint64_t *)ctx)++;
	*reply = 0;
	return 0;
}

/* A sink that checks every byte: message of n bytes is fill_pattern(n, seed n). */
static int check_sink(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	uint8_t want[1024];

	(void)ctx;
	CHECK(m->size >= 1 && m->size <= sizeof(want));
	fill_pattern(want, m->size, m->size);
	CHECK(memcmp(want, data, m->size) == 0);
	*reply = 0;
	return 0;
}

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

static int ask_post_ctx_n;
static int ask_post(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	(void)m;
	(void)data;
	(void)reply;
	ask_post_ctx_n++;
	*(int *)ctx = 1;
	return 0;
}

static void run_host(const char *name, uint32_t backend, int ready_fd)
{
	struct hgsmi_host_config cfg = {.name = name, .segment_size = 8u << 20, .backend = backend};
	struct hgsmi_host *h;
	uint64_t sunk = 0;
	int want_post = 0;

	signal(SIGTERM, on_term);
	CHECK_RC(hgsmi_host_create(&cfg, &h));
	CHECK_RC(hgsmi_host_register(h, CH_ECHO_C, echo, NULL));
	CHECK_RC(hgsmi_host_register(h, CH_SINK_C, sink, &sunk));
	CHECK_RC(hgsmi_host_register(h, CH_ASK_POST, ask_post, &want_post));
	CHECK_RC(hgsmi_host_register(h, CH_CHECK_C, check_sink, NULL));
	CHECK(write(ready_fd, "r", 1) == 1);
	while (!stop) {
		int rc = hgsmi_host_poll(h, 100);
		CHECK(rc >= 0);
		if (want_post && hgsmi_host_conn_count(h) == 1) {
			struct hgsmi_conn *c = hgsmi_host_conn(h, 0);
			uint8_t buf[5000];
			/* 300 commands: more than the heap's first fit, so acks must
			 * flow back and free host buffers meanwhile. */
			for (uint32_t i = 0; i < 300; i++) {
				int64_t r;
				fill_pattern(buf, i * 13 % sizeof(buf) + 1, i);
				while ((r = hgsmi_conn_post(c, CH_POST, (uint16_t)i, buf,
							    i * 13 % sizeof(buf) + 1)) == -EAGAIN ||
				       r == -ENOMEM)
					hgsmi_host_poll(h, 1);
				CHECK_RC(r);
			}
			want_post = 0;
		}
	}
	hgsmi_host_destroy(h);
	exit(0);
}

static uint32_t posts_seen;
static int on_post(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	uint8_t want[5000];
	(void)ctx;
	(void)reply;
	CHECK(m->size == m->info * 13u % sizeof(want) + 1);
	fill_pattern(want, m->size, m->info);
	CHECK(memcmp(want, data, m->size) == 0);
	posts_seen++;
	return 0;
}

/* Send all n (copy mode), waiting for room while the heap or ring is full. */
static void send_all(struct hgsmi_guest *g, uint8_t ch, const void *const *datas,
		     const uint32_t *lens, int n)
{
	struct hgsmi_msg none[1];
	int sent = 0, rc;

	while (sent < n) {
		rc = hgsmi_guest_send(g, ch, 0, datas + sent, lens + sent, (unsigned)(n - sent));
		if (rc == -EAGAIN || rc == -ENOMEM) {
			CHECK(hgsmi_guest_wait(g, 1000) > 0);
			CHECK(hgsmi_guest_reap(g, none, 1) == 0);
		} else {
			CHECK_RC(rc);
			sent += rc;
		}
	}
}

/* Wait until nothing sent is in flight; *st holds the final stats. */
static void drain(struct hgsmi_guest *g, struct hgsmi_guest_stats *st)
{
	struct hgsmi_msg none[1];

	do {
		CHECK(hgsmi_guest_wait(g, 2000) >= 0);
		CHECK(hgsmi_guest_reap(g, none, 1) == 0);
		hgsmi_guest_stats(g, st);
	} while (st->inflight);
}

static void run_guest(const char *name)
{
	struct hgsmi_guest *g;
	static uint8_t in[1 << 20], out[1 << 20];
	struct hgsmi_guest_stats before_st;
	uint32_t v;
	int rc;

	CHECK_RC(hgsmi_guest_attach(name, NULL, &g));
	CHECK_RC(hgsmi_guest_query_conf(g, HGSMI_CONF_RING_ENTRIES, &v));
	CHECK(v == 1024);
	CHECK_RC(hgsmi_guest_query_conf(g, HGSMI_CONF_ECHO, &v));
	CHECK(v == HGSMI_CONF_ECHO);
	/* calls, sizes 1 B .. 1 MiB */
	for (uint32_t i = 0; i < 400; i++) {
		uint32_t n = 1u + (uint32_t)((uint64_t)i * i * 6553 % (1u << 20));
		fill_pattern(in, n, i);
		memset(out, 0, n);
		rc = hgsmi_guest_call(g, CH_ECHO_C, 1, in, n, out, n, 2000);
		CHECK(rc == (int)n);
		CHECK(memcmp(in, out, n) == 0);
	}
	/* unregistered channel: an error completion, never silence */
	rc = hgsmi_guest_call(g, 0x77, 0, in, 8, out, 8, 2000);
	CHECK(rc == -ENOENT);
	/* batched fire-and-forget sends to the sink: flow control by waiting */
	{
		const void *datas[100];
		uint32_t lens[100];
		struct hgsmi_guest_stats st;
		for (int i = 0; i < 100; i++)
			datas[i] = in, lens[i] = (uint32_t)(1 + i * 997);
		for (int round = 0; round < 50; round++)
			send_all(g, CH_SINK_C, datas, lens, 100);
		drain(g, &st);
		CHECK(st.remote_errors == 0 && st.msgs_out >= 5000);
	}
	/*
	 * Batches of small sends, carved from one heap block each (slabs),
	 * mixed with runs of larger ones and partial pushes into a full ring:
	 * every byte arrives, and the heap is empty once all is back.
	 */
	{
		static uint8_t bufs[1024][1024];
		const void *datas[300];
		uint32_t lens[300];
		struct hgsmi_guest_stats st;
		uint64_t before;

		hgsmi_guest_stats(g, &before_st);
		before = before_st.msgs_out;
		for (uint32_t n = 1; n <= 1024; n++)
			fill_pattern(bufs[n - 1], n, n);
		for (int round = 0; round < 200; round++) {
			for (int i = 0; i < 300; i++) {
				/* Mostly 1..232 B (slab-sized), sometimes runs above. */
				uint32_t n = (i / 7 + round) % 5 == 0 ? 233 + (uint32_t)(i * 37 + round) % 700
									: 1 + (uint32_t)(i * 13 + round) % 232;
				lens[i] = n;
				datas[i] = bufs[n - 1];
			}
			send_all(g, CH_CHECK_C, datas, lens, 300);
		}
		drain(g, &st);
		CHECK(st.remote_errors == 0 && st.errors == 0);
		CHECK(st.msgs_out - before == 200u * 300u);
		CHECK(st.guest_heap.used == 0);
	}
	/* host -> guest: ask for 300 posts, serve them with a C handler */
	CHECK_RC(hgsmi_guest_register(g, CH_POST, on_post, NULL));
	CHECK(hgsmi_guest_call(g, CH_ASK_POST, 0, in, 1, out, 1, 2000) >= 0);
	while (posts_seen < 300)
		CHECK(hgsmi_guest_poll(g, 2000) >= 0);
	detach_clean(g);
}

int main(void)
{
	return fork_host_run_guest_each_backend("ct", "test_transport", run_host, run_guest);
}
