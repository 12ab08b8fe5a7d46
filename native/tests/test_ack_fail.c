/* SPDX-License-Identifier: MIT */
/*
 * test_ack_fail.c - nothing taken off a ring is lost when giving buffers back
 * fails part-way, white-box, in one process: a real host conn
 * (hgsmi_int_conn_create over a memfd segment) and a guest adopted from its
 * welcome (hgsmi_int_guest_adopt, no socket), the host acting as the test
 * says, never as hgsmi's loop would.
 *
 *  - the host keeps its ack ring full (never drains acks) and posts a mix
 *    of commands the caller takes and ones a guest C handler serves: a recv
 *    whose own acks time out returns what it placed in out[], the error
 *    comes on the next call (recv or poll, at once), no batch is taken
 *    after the failure (what is left stays on the FIFO for later calls),
 *    and every entry taken is delivered, acked or counted in acks_dropped;
 *  - the same with room for some acks: those go, the rest are counted;
 *  - a hostile ack ring index: -EPROTO on the next call, the acks counted;
 *  - the host side: hgsmi_conn_complete with a bad offset past its first
 *    batch gives nothing back, and held (inflight_guest) stays exact.
 *
 * Standalone: exit 0 pass, 1 fail.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "helpers.h"

#define ENTRIES 256u /* more than two batches fit on a ring */
#define CH_USER 0x20 /* guest: returned by recv; host: returned by conn_recv */
#define CH_C 0x21    /* guest: a C handler */

struct pair {
	struct hgsmi_host host; /* conn.c reads its cfg, key, ids and channels */
	struct hgsmi_conn *c;
	struct hgsmi_guest *g;
	int peer_sock;
	struct hgsmi_ring fifo_view; /* the host FIFO as its consumer sees it */
	struct hgsmi_ring ack_view;  /* the ack ring, popped by the test only */
};

static uint64_t served_in_c;

static int count_c(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply)
{
	(void)m, (void)data;
	(*(uint64_t *)ctx)++;
	*reply = 0;
	return 0;
}

static void pair_open(struct pair *p)
{
	struct hgsmi_welcome w;
	int sp[2], fds[3], gfds[3], nfds = 0;

	memset(p, 0, sizeof(*p));
	p->host.cfg = (struct hgsmi_host_config){
		.segment_size = 1u << 20, .ring_entries = ENTRIES, .guest_heap_percent = 50,
		.backend = HGSMI_BACKEND_EVENTFD, .max_inflight = ENTRIES,
		.segment = HGSMI_SEGMENT_MEMFD};
	strcpy(p->host.key, "ackfail");
	p->host.next_id = 1;
	CHECK_RC(hgsmi_int_channel_set(p->host.channels, CH_USER, NULL, NULL));
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	CHECK_RC(hgsmi_int_conn_create(&p->host, sp[0], HGSMI_F_ALL, &p->c, &w, fds, &nfds));
	p->peer_sock = sp[1];
	/* SCM_RIGHTS would give the guest copies of the conn's fds. */
	CHECK(nfds == 3);
	for (int i = 0; i < nfds; i++)
		CHECK((gfds[i] = dup(fds[i])) >= 0);
	CHECK_RC(hgsmi_int_guest_adopt(&w, gfds, nfds, &p->g));
	CHECK_RC(hgsmi_guest_register(p->g, CH_USER, NULL, NULL));
	CHECK_RC(hgsmi_guest_register(p->g, CH_C, count_c, &served_in_c));
	hgsmi_int_ring_init(&p->fifo_view, p->c->seg.base,
			    &p->c->seg.regions[HGSMI_REGION_HOSTFIFO], ENTRIES, false);
	hgsmi_int_ring_init(&p->ack_view, p->c->seg.base,
			    &p->c->seg.regions[HGSMI_REGION_HOSTACK], ENTRIES, false);
	served_in_c = 0;
}

static void pair_close(struct pair *p)
{
	hgsmi_guest_detach(p->g);
	hgsmi_int_conn_destroy(p->c);
	close(p->peer_sock);
}

/* Post host commands on `ch`, without taking acks (hgsmi_conn_post would). */
static void post(struct pair *p, uint8_t ch, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct hgsmi_msg m;

		CHECK_RC(hgsmi_conn_alloc(p->c, 8, ch, (uint16_t)i, &m));
		CHECK(hgsmi_conn_submit(p->c, m.offset) == 0);
	}
}

static uint32_t fifo_left(struct pair *p)
{
	/* The guest's head, published by its pops. */
	return READ_ONCE(p->fifo_view.hdr->tail) - READ_ONCE(p->fifo_view.hdr->head);
}

static uint32_t acks_queued(struct pair *p)
{
	return hgsmi_int_ring_pending(&p->ack_view);
}

static uint64_t acks_dropped(struct pair *p)
{
	struct hgsmi_guest_stats st;

	hgsmi_guest_stats(p->g, &st);
	return st.acks_dropped;
}

/* The guest takes ENTRIES commands and acks them all: the ack ring is full,
 * and the host never takes from it. */
static void fill_ack_ring(struct pair *p)
{
	struct hgsmi_msg out[ENTRIES];
	int n;

	post(p, CH_USER, ENTRIES);
	CHECK((n = hgsmi_guest_recv_timeout(p->g, out, ENTRIES, 0)) == (int)ENTRIES);
	for (int i = 0; i < n; i++)
		out[i].status = 0, out[i].size = 0;
	CHECK(hgsmi_guest_ack_timeout(p->g, out, ENTRIES, 0) == (int)ENTRIES);
	CHECK(acks_queued(p) == ENTRIES);
	CHECK(acks_dropped(p) == 0);
}

/* Every entry taken off the FIFO is delivered, acked or counted dropped. */
static void check_accounted(struct pair *p, uint32_t fifo_before, uint32_t acks_before,
			    uint64_t dropped_before, unsigned delivered)
{
	uint32_t taken = fifo_before - fifo_left(p);
	uint32_t acked = acks_queued(p) - acks_before;
	uint64_t dropped = acks_dropped(p) - dropped_before;

	if (taken != delivered + acked + dropped) {
		fprintf(stderr, "taken %u != delivered %u + acked %u + dropped %llu\n", taken,
			delivered, acked, (unsigned long long)dropped);
		exit(1);
	}
}

/*
 * The ack ring full; on the FIFO 4 for the caller and 60 for C (the first
 * batch), 64 for C (the second), 64 for the caller (the third).  One recv
 * takes the first two batches (the C acks are flushed before a third is
 * taken), its acks time out: it returns the 4, the next recv -ETIMEDOUT
 * at once, and the third batch is still there for the call after.
 */
static void test_full_ack_ring(void)
{
	struct hgsmi_msg out[3 * HGSMI_BATCH];
	struct pair p;
	uint32_t fifo0;
	uint64_t drop0, t0;
	int n;

	pair_open(&p);
	fill_ack_ring(&p);
	post(&p, CH_USER, 4);
	post(&p, CH_C, 60 + 64);
	post(&p, CH_USER, 64);
	fifo0 = fifo_left(&p);
	drop0 = acks_dropped(&p);
	CHECK(fifo0 == 192);

	n = hgsmi_guest_recv_timeout(p.g, out, 3 * HGSMI_BATCH, 0);
	CHECK(n == 4);
	for (int i = 0; i < n; i++)
		CHECK(out[i].channel == CH_USER && out[i].info == i);
	CHECK(served_in_c == 124);
	CHECK(acks_dropped(&p) - drop0 == 124);
	CHECK(fifo_left(&p) == 64);
	check_accounted(&p, fifo0, ENTRIES, drop0, 4);

	/* The error, once, without taking anything or waiting. */
	t0 = hgsmi_int_now_ns();
	CHECK(hgsmi_guest_recv_timeout(p.g, out, 3 * HGSMI_BATCH, 1000) == -ETIMEDOUT);
	CHECK(hgsmi_int_now_ns() - t0 < 200 * 1000000ull);
	CHECK(fifo_left(&p) == 64);

	/* The rest needs no ack of recv's own: all of it comes. */
	CHECK(hgsmi_guest_recv_timeout(p.g, out, 3 * HGSMI_BATCH, 0) == 64);
	for (int i = 0; i < 64; i++)
		CHECK(out[i].channel == CH_USER && out[i].info == i);
	check_accounted(&p, fifo0, ENTRIES, drop0, 4 + 64);
	pair_close(&p);
}

/*
 * Room for 10 acks; 3 for the caller then 20 for C.  10 acks go, 10 are
 * counted, the 3 come back, and poll returns the error at once (before its
 * wait, whose timeout would otherwise pass first).
 */
static void test_room_for_some(void)
{
	struct hgsmi_msg out[HGSMI_BATCH];
	uint32_t junk[10], fifo0, acks0;
	struct pair p;
	uint64_t drop0, t0;

	pair_open(&p);
	fill_ack_ring(&p);
	CHECK(hgsmi_int_ring_pop(&p.ack_view, junk, 10) == 10);
	post(&p, CH_USER, 3);
	post(&p, CH_C, 20);
	fifo0 = fifo_left(&p);
	acks0 = acks_queued(&p);
	drop0 = acks_dropped(&p);

	CHECK(hgsmi_guest_recv_timeout(p.g, out, HGSMI_BATCH, 0) == 3);
	CHECK(served_in_c == 20);
	CHECK(acks_queued(&p) - acks0 == 10);
	CHECK(acks_dropped(&p) - drop0 == 10);
	check_accounted(&p, fifo0, acks0, drop0, 3);

	t0 = hgsmi_int_now_ns();
	CHECK(hgsmi_guest_poll(p.g, 2000) == -ETIMEDOUT);
	CHECK(hgsmi_int_now_ns() - t0 < 200 * 1000000ull);
	CHECK(hgsmi_guest_recv_timeout(p.g, out, HGSMI_BATCH, 0) == 0);

	/* The caller's own ack of the 3 fails as hgsmi_guest_ack says: all
	 * counted. */
	for (int i = 0; i < 3; i++)
		out[i].status = 0, out[i].size = 0;
	CHECK(hgsmi_guest_ack_timeout(p.g, out, 3, 0) == -ETIMEDOUT);
	CHECK(acks_dropped(&p) - drop0 == 13);
	pair_close(&p);
}

/* The host makes its ack ring index hostile: -EPROTO comes on the next
 * call, the 2 for the caller on this one, the 3 acks counted. */
static void test_hostile_ack_index(void)
{
	struct hgsmi_msg out[HGSMI_BATCH];
	struct pair p;
	uint32_t fifo0;

	pair_open(&p);
	post(&p, CH_USER, 2);
	post(&p, CH_C, 3);
	fifo0 = fifo_left(&p);
	/* The consumer index far ahead of the guest's tail. */
	WRITE_ONCE(p.ack_view.hdr->head, READ_ONCE(p.ack_view.hdr->tail) + 5 * ENTRIES);

	CHECK(hgsmi_guest_recv_timeout(p.g, out, HGSMI_BATCH, 0) == 2);
	CHECK(served_in_c == 3);
	CHECK(acks_dropped(&p) == 3);
	CHECK(fifo0 - fifo_left(&p) == 5);
	CHECK(hgsmi_guest_recv_timeout(p.g, out, HGSMI_BATCH, 0) == -EPROTO);
	/* A bad offset is the caller's to fix: nothing sent, nothing counted. */
	out[0].offset = 8;
	CHECK(hgsmi_guest_ack_timeout(p.g, out, 2, 0) == -EINVAL);
	CHECK(acks_dropped(&p) == 3);
	pair_close(&p);
}

/*
 * The host takes 100 guest buffers, then completes them with a bad offset
 * at 80 (past the first batch of 64): -EINVAL, none goes back, held stays
 * 100.  Completed again with the offset fixed: 100 go, held 0, and the
 * guest reaps each once.
 */
static void test_conn_complete_held(void)
{
	struct hgsmi_msg out[128], reaped[128];
	struct hgsmi_conn_stats cst;
	struct hgsmi_guest_stats gst;
	struct hgsmi_ring done_view;
	uint32_t offs[100], good;
	struct pair p;
	int n, got = 0;

	pair_open(&p);
	hgsmi_int_ring_init(&done_view, p.c->seg.base,
			    &p.c->seg.regions[HGSMI_REGION_GCOMPLETE], ENTRIES, false);
	for (int i = 0; i < 100; i++) {
		CHECK_RC(hgsmi_guest_alloc(p.g, 8, 0, CH_USER, (uint16_t)i, &out[i]));
		offs[i] = out[i].offset;
	}
	CHECK(hgsmi_guest_submit(p.g, offs, 100) == 100);
	CHECK(hgsmi_conn_recv(p.c, out, 128) == 100);
	hgsmi_conn_stats(p.c, &cst);
	CHECK(cst.inflight_guest == 100);

	good = out[80].offset;
	out[80].offset = 8; /* not a guest buffer */
	CHECK(hgsmi_conn_complete(p.c, out, 100) == -EINVAL);
	hgsmi_conn_stats(p.c, &cst);
	CHECK(cst.inflight_guest == 100);
	CHECK(hgsmi_int_ring_pending(&done_view) == 0);

	out[80].offset = good;
	CHECK(hgsmi_conn_complete(p.c, out, 100) == 100);
	hgsmi_conn_stats(p.c, &cst);
	CHECK(cst.inflight_guest == 0);
	CHECK(hgsmi_int_ring_pending(&done_view) == 100);
	while ((n = hgsmi_guest_reap(p.g, reaped, 128)) > 0) {
		for (int i = 0; i < n; i++)
			CHECK_RC(hgsmi_guest_free(p.g, reaped[i].offset));
		got += n;
	}
	CHECK(n == 0 && got == 100);
	hgsmi_guest_stats(p.g, &gst);
	CHECK(gst.errors == 0 && gst.inflight == 0 && gst.guest_heap.used == 0);
	pair_close(&p);
}

int main(void)
{
	test_full_ack_ring();
	test_room_for_some();
	test_hostile_ack_index();
	test_conn_complete_held();
	printf("test_ack_fail: ok\n");
	return 0;
}
