/*
 * test_conn_send.c - hgsmi_conn_send, host to guest in two processes: batches
 * of mixed sizes into a small host heap and a short FIFO, so that sends are
 * often partly accepted; the guest checks every byte; once every command is
 * acked the host heap is empty.  Both backends.
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
#define CH_START 0x22 /* guest -> host: its handlers are registered */
#define CH_CHECK 0x23 /* guest -> host: all seen; are all host buffers back? */
#define ROUNDS 150
#define PER 300
#define MAX_LEN (60u << 10)

/* Message i of round r: mostly small, sometimes large (heap pressure). */
static uint32_t len_of(int r, int i)
{
	return i % 41 == 0 ? MAX_LEN - (uint32_t)(r * 97 + i) % 4096
			   : 1 + (uint32_t)(i * 13 + r * 7) % 3000;
}

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

static int started;
static int on_start(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	(void)ctx, (void)m, (void)data;
	*reply = 0;
	started = 1;
	return 0;
}

/* Every host buffer acked and back in the host heap: the guest asks once it
 * has seen everything (its acks precede this call on the rings). */
static int on_check(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	struct hgsmi_conn_stats st;

	(void)m, (void)data;
	*reply = 0;
	hgsmi_conn_stats(hgsmi_host_conn(ctx, 0), &st);
	if (st.inflight_host != 0 || st.host_heap.used != 0 ||
	    st.msgs_out != (uint64_t)ROUNDS * PER || st.errors_protocol != 0) {
		fprintf(stderr, "host: conns %d id %u ", hgsmi_host_conn_count(ctx), hgsmi_conn_id(hgsmi_host_conn(ctx, 0)));
		fprintf(stderr, "host: inflight %u used %llu out %llu proto %llu\n",
			(unsigned)st.inflight_host, (unsigned long long)st.host_heap.used,
			(unsigned long long)st.msgs_out, (unsigned long long)st.errors_protocol);
		return -EIO;
	}
	return 0;
}

static void run_host(const char *name, uint32_t backend, int ready_fd)
{
	/* 1 MiB, 64-entry FIFO: both fill up under these batches. */
	struct hgsmi_host_config cfg = {.name = name, .segment_size = 1u << 20,
					.ring_entries = 64, .backend = backend};
	static uint8_t bufs[PER][MAX_LEN];
	const void *datas[PER];
	uint32_t lens[PER];
	unsigned partial = 0, no_room = 0;
	struct hgsmi_host *h;
	struct hgsmi_conn *c;

	signal(SIGTERM, on_term);
	CHECK_RC(hgsmi_host_create(&cfg, &h));
	CHECK_RC(hgsmi_host_register(h, CH_START, on_start, NULL));
	CHECK_RC(hgsmi_host_register(h, CH_CHECK, on_check, h));
	CHECK(write(ready_fd, "r", 1) == 1);
	while (!started)
		CHECK(hgsmi_host_poll(h, 100) >= 0);
	c = hgsmi_host_conn(h, 0);
	/* Misuse and a message that can never fit are refused up front. */
	lens[0] = 1u << 20;
	datas[0] = bufs[0];
	CHECK(hgsmi_conn_send(c, CH_DATA, 0, datas, lens, 1) == -EMSGSIZE);
	CHECK(hgsmi_conn_send(c, 0, 0, datas, lens, 1) == -EINVAL);
	for (int r = 0; r < ROUNDS; r++) {
		int sent = 0;

		for (int i = 0; i < PER; i++) {
			lens[i] = len_of(r, i);
			fill_pattern(bufs[i], lens[i], lens[i] + (uint32_t)r);
			datas[i] = bufs[i];
		}
		while (sent < PER) {
			int rc = hgsmi_conn_send(c, CH_DATA, (uint16_t)r, datas + sent, lens + sent,
						 (unsigned)(PER - sent));

			if (rc == -EAGAIN || rc == -ENOMEM) {
				no_room++;
				CHECK(hgsmi_host_poll(h, 1000) >= 0);
				continue;
			}
			CHECK_RC(rc);
			CHECK(rc <= PER - sent);
			partial += rc < PER - sent;
			sent += rc;
		}
	}
	/* The pressure was real: some sends were cut short, some refused. */
	CHECK(partial > 0 && no_room > 0);
	while (!stop)
		CHECK(hgsmi_host_poll(h, 100) >= 0);
	hgsmi_host_destroy(h);
	exit(0);
}

static uint64_t seen;
static int on_data(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	static uint8_t want[MAX_LEN];
	int r = m->info, i = (int)(seen % PER);

	(void)ctx, (void)reply;
	CHECK(r == (int)(seen / PER)); /* in order */
	CHECK(m->size == len_of(r, i));
	fill_pattern(want, m->size, m->size + (uint32_t)r);
	CHECK(memcmp(want, data, m->size) == 0);
	seen++;
	return 0;
}

static void run_guest(const char *name)
{
	struct hgsmi_guest *g;
	uint8_t in[1], out[1];
	int rc;

	seen = 0; /* one run per backend in this process */
	CHECK_RC(hgsmi_guest_attach(name, NULL, &g));
	CHECK_RC(hgsmi_guest_register(g, CH_DATA, on_data, NULL));
	CHECK(hgsmi_guest_call(g, CH_START, 0, in, 1, out, 1, 2000) >= 0);
	while (seen < (uint64_t)ROUNDS * PER)
		CHECK(hgsmi_guest_poll(g, 2000) >= 0);
	/* Our last acks went out before this call, but on another ring: a host
	 * that drained its ack ring just before they came and then popped the
	 * call sees them only in its next pass.  So ask again for up to 2 s; an
	 * ack that was lost stays missing and still fails. */
	for (int tries = 0; (rc = hgsmi_guest_call(g, CH_CHECK, 0, in, 1, out, 1, 2000)) < 0 &&
			    tries < 40; tries++)
		usleep(50000);
	CHECK(rc >= 0);
	detach_clean(g);
}

int main(void)
{
	return fork_host_run_guest_each_backend("cs", "test_conn_send", run_host, run_guest);
}
