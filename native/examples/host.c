/* SPDX-License-Identifier: MIT */
/*
 * host.c - a small hgsmi host in C: an echo channel, a sink channel, and
 * host-to-guest pushes through the host FIFO.
 *
 *   cc -std=c11 host.c $(pkg-config --cflags --libs hgsmi) -o host
 *   ./host NAME [--semaphore]
 *
 * It creates the host NAME (the control socket goes in $HGSMI_RUNTIME_DIR,
 * else $XDG_RUNTIME_DIR/hgsmi, else /tmp/hgsmi-<uid>), prints
 * "ready NAME SOCKETPATH" when guests can attach, and serves them until
 * SIGINT or SIGTERM.  Then it prints one summary line, removes everything it
 * created (socket, segments, semaphores) and exits 0.  --semaphore selects
 * the POSIX-semaphore doorbell instead of eventfds.
 *
 * The channels, shared with guest.c and the tests (tests/peers/example_proto.py):
 *
 *   0x02 HGSMI_CH_ECHO  reply with the request.
 *   0x03 HGSMI_CH_SINK  discard; count messages and bytes.
 *   0x30 PUSH_REQUEST   data: u32 count, u32 size, u32 seed (little-endian).
 *                       The host completes it at once with an empty reply,
 *                       then posts `count` (<= 65536) messages of `size`
 *                       bytes on channel 0x31 to the guest that asked.
 *   0x31 PUSH           host -> guest: message i has info = i and byte p
 *                       equal to example_byte(seed, i, p).
 *   0x32 INVERT         reply with every request byte XOR 0xff: the guest
 *                       sees that the host read each byte it wrote.
 *
 * example_byte(seed, i, p), all arithmetic in uint32_t (mod 2^32):
 *   start = (seed * 0x9e3779b1 + i * 0x85ebca6b) >> 16
 *   byte  = ((start + p) * 0x9e3779b1) >> 24
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <hgsmi.h>

#define CH_PUSH_REQUEST 0x30
#define CH_PUSH 0x31
#define CH_INVERT 0x32
#define MAX_PUSHES 16 /* push requests queued at once, over all guests */

static uint8_t example_byte(uint32_t seed, uint32_t i, uint32_t p)
{
	uint32_t start = (seed * 0x9e3779b1u + i * 0x85ebca6bu) >> 16;

	return (uint8_t)(((start + p) * 0x9e3779b1u) >> 24);
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* One push request: which guest, what to send, how far we got. */
struct push {
	bool active;
	bool resolved;     /* conn_id is known */
	uintptr_t where;   /* the request's data address: in the asker's segment */
	uint32_t conn_id;
	uint32_t count, size, seed;
	uint32_t next;     /* index of the next message to post */
};

struct host_state {
	uint64_t echo_msgs, invert_msgs, sink_msgs, sink_bytes;
	uint64_t pushed_msgs, pushed_bytes;
	struct push pushes[MAX_PUSHES];
};

/*
 * Handlers run inside hgsmi_host_poll() for every verified buffer.  `data`
 * is the buffer in the guest's segment; the guest may rewrite it while we
 * run, so anything we decide on is copied out once first.
 */
static int on_echo(void *ctx, const struct hgsmi_msg *msg, void *data,
		   uint32_t *reply_len)
{
	struct host_state *st = ctx;

	(void)data;
	st->echo_msgs++;
	*reply_len = msg->size; /* the request, left in place, is the reply */
	return 0;
}

static int on_sink(void *ctx, const struct hgsmi_msg *msg, void *data,
		   uint32_t *reply_len)
{
	struct host_state *st = ctx;

	(void)data;
	st->sink_msgs++;
	st->sink_bytes += msg->size;
	*reply_len = 0;
	return 0;
}

static int on_invert(void *ctx, const struct hgsmi_msg *msg, void *data,
		     uint32_t *reply_len)
{
	struct host_state *st = ctx;
	unsigned char *p = data;

	for (uint32_t k = 0; k < msg->size; k++)
		p[k] ^= 0xff;
	st->invert_msgs++;
	*reply_len = msg->size;
	return 0;
}

/*
 * A push request is only recorded here: the guest is waiting for this very
 * completion, so posting now could fill the host heap before it can ack.
 * The main loop posts once hgsmi_host_poll() has returned.
 */
static int on_push_request(void *ctx, const struct hgsmi_msg *msg, void *data,
			   uint32_t *reply_len)
{
	struct host_state *st = ctx;
	unsigned char req[12];
	struct push *p = NULL;

	if (msg->size < sizeof(req))
		return -EINVAL;
	memcpy(req, data, sizeof(req)); /* one copy, then only the copy */
	if (le32(req) > 65536) /* the index travels in the u16 info */
		return -EINVAL;
	for (int k = 0; k < MAX_PUSHES && !p; k++)
		if (!st->pushes[k].active)
			p = &st->pushes[k];
	if (!p)
		return -EBUSY;
	*p = (struct push){.active = true, .where = (uintptr_t)data,
			   .count = le32(req), .size = le32(req + 4),
			   .seed = le32(req + 8)};
	*reply_len = 0;
	return 0;
}

static struct hgsmi_conn *conn_by_id(struct hgsmi_host *h, uint32_t id)
{
	for (int i = 0; i < hgsmi_host_conn_count(h); i++) {
		struct hgsmi_conn *c = hgsmi_host_conn(h, i);

		if (hgsmi_conn_id(c) == id)
			return c;
	}
	return NULL;
}

/*
 * A C handler is not told which guest sent the buffer, but its data pointer
 * lies inside that guest's segment.  Right after the hgsmi_host_poll() that
 * ran the handler, the asker is either still attached (and found here) or
 * was closed by that same poll (and the request is dropped).  From then on
 * the guest is named by its id, because a later poll may free its conn.
 */
static void resolve_pushes(struct hgsmi_host *h, struct host_state *st)
{
	for (int k = 0; k < MAX_PUSHES; k++) {
		struct push *p = &st->pushes[k];

		if (!p->active || p->resolved)
			continue;
		p->active = false;
		for (int i = 0; i < hgsmi_host_conn_count(h); i++) {
			struct hgsmi_conn *c = hgsmi_host_conn(h, i);
			uintptr_t base = (uintptr_t)hgsmi_conn_base(c);

			if (p->where - base < hgsmi_conn_size(c)) {
				p->conn_id = hgsmi_conn_id(c);
				p->active = p->resolved = true;
				break;
			}
		}
	}
}

/*
 * Post what fits.  Zero-copy: allocate in the host heap, fill the buffer in
 * place, submit it on the host FIFO (which raises the IRQ).  A full heap
 * (-ENOMEM) or FIFO (-EAGAIN) is not an error: the guest's acks free room,
 * and the next hgsmi_host_poll() takes them.  Returns true while work is left.
 */
static bool run_pushes(struct hgsmi_host *h, struct host_state *st)
{
	bool more = false;

	for (int k = 0; k < MAX_PUSHES; k++) {
		struct push *p = &st->pushes[k];
		struct hgsmi_conn *c;

		if (!p->active)
			continue;
		c = conn_by_id(h, p->conn_id);
		while (c && p->next < p->count) {
			struct hgsmi_msg m;
			uint8_t *buf;
			int rc = hgsmi_conn_alloc(c, p->size, CH_PUSH, (uint16_t)p->next, &m);

			if (rc == -ENOMEM)
				break;
			if (rc < 0) {
				fprintf(stderr, "host: push to guest %u: %s\n",
					(unsigned)p->conn_id, hgsmi_strerror(rc));
				c = NULL;
				break;
			}
			buf = (uint8_t *)hgsmi_conn_base(c) + m.data;
			for (uint32_t b = 0; b < p->size; b++)
				buf[b] = example_byte(p->seed, p->next, b);
			rc = hgsmi_conn_submit(c, m.offset);
			if (rc < 0) {
				hgsmi_conn_free(c, m.offset);
				if (rc == -EAGAIN)
					break;
				c = NULL; /* the guest is gone */
				break;
			}
			p->next++;
			st->pushed_msgs++;
			st->pushed_bytes += p->size;
		}
		if (!c || p->next == p->count)
			p->active = false;
		else
			more = true;
	}
	return more;
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	struct hgsmi_host_config cfg = {0};
	static struct host_state st;
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART */
	struct hgsmi_host *h;
	uint64_t served = 0;
	bool busy = false;
	int rc;

	if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--semaphore"))) {
		fprintf(stderr, "usage: %s NAME [--semaphore]\n", argv[0]);
		return 2;
	}
	cfg.name = argv[1];
	cfg.backend = argc == 3 ? HGSMI_BACKEND_SEMAPHORE : HGSMI_BACKEND_EVENTFD;
	/* The adaptive spin, as a Python host has it by default: a guest's call
	 * answered in microseconds, not after a wake-up (in a config struct, 0
	 * means never spin).  It backs off by itself on an idle or busy machine. */
	cfg.spin_us = HGSMI_SPIN_US_DEFAULT;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	rc = hgsmi_host_create(&cfg, &h);
	if (rc < 0) {
		fprintf(stderr, "host: cannot create %s: %s\n", cfg.name, hgsmi_strerror(rc));
		return 1;
	}
	if ((rc = hgsmi_host_register(h, HGSMI_CH_ECHO, on_echo, &st)) < 0 ||
	    (rc = hgsmi_host_register(h, HGSMI_CH_SINK, on_sink, &st)) < 0 ||
	    (rc = hgsmi_host_register(h, CH_PUSH_REQUEST, on_push_request, &st)) < 0 ||
	    (rc = hgsmi_host_register(h, CH_INVERT, on_invert, &st)) < 0) {
		fprintf(stderr, "host: register: %s\n", hgsmi_strerror(rc));
		hgsmi_host_destroy(h);
		return 1;
	}
	printf("ready %s %s\n", cfg.name, hgsmi_host_socket_path(h));
	fflush(stdout);

	/*
	 * One pass: wait for a doorbell or a knock (briefly while pushes wait
	 * for acks; a signal also ends the wait), accept, serve every guest
	 * through the handlers, reap the dead.  Then post the pushes.
	 */
	while (!stop) {
		rc = hgsmi_host_poll(h, busy ? 1 : 200);
		if (rc < 0 && rc != -EINTR) {
			fprintf(stderr, "host: poll: %s\n", hgsmi_strerror(rc));
			break;
		}
		if (rc > 0)
			served += (uint64_t)rc;
		resolve_pushes(h, &st);
		busy = run_pushes(h, &st);
	}

	printf("host %s: %llu buffers served; echo %llu, invert %llu, "
	       "sink %llu msgs %llu bytes, pushed %llu msgs %llu bytes\n",
	       cfg.name, (unsigned long long)served,
	       (unsigned long long)st.echo_msgs, (unsigned long long)st.invert_msgs,
	       (unsigned long long)st.sink_msgs, (unsigned long long)st.sink_bytes,
	       (unsigned long long)st.pushed_msgs, (unsigned long long)st.pushed_bytes);
	fflush(stdout);
	hgsmi_host_destroy(h);
	return rc < 0 && rc != -EINTR ? 1 : 0;
}
