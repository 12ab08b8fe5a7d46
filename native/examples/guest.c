/* SPDX-License-Identifier: MIT */
/*
 * guest.c - a small hgsmi guest in C: send files to a host's sink channel,
 * call its echo channel, and (--verify) check every byte both ways.
 *
 *   cc -std=c11 guest.c $(pkg-config --cflags --libs hgsmi) -o guest
 *   ./guest NAME [--wait SECONDS] [FILE...]     # FILE "-" is standard input
 *   ./guest NAME [--wait SECONDS] --verify N
 *
 * --wait waits up to SECONDS for a host that is not running yet (started
 * beside it, say); without it a missing host is an error at once.
 *
 * Without --verify it attaches to the host NAME, sends each FILE in 64 KiB
 * chunks to the sink (copy mode, many chunks per doorbell, completions
 * reaped as they come), makes a few echo calls of different sizes, checks
 * the replies, and prints what it did.
 *
 * --verify N makes N calls of 1 B to 1 MiB on the INVERT channel and checks
 * every byte of every reply, then asks the host to push N messages of 1 B to
 * 1 MiB through the host FIFO and checks every byte of those in a host-command
 * handler.  Any mismatch is reported on stderr and the exit status is 1.
 *
 * The channels and the byte pattern are the ones documented in host.c; a
 * Python host (tests/peers/example_host.py) speaks the same protocol.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hgsmi.h>

#define CH_PUSH_REQUEST 0x30
#define CH_PUSH 0x31
#define CH_INVERT 0x32

#define CALL_SEED 0x5eedu  /* pattern seed of the --verify calls */
#define PUSH_SEED 0x9054u  /* pattern seed of the first push request */
#define CHUNK (64u * 1024) /* file chunk sent to the sink */
#define BATCH 16           /* chunks per hgsmi_guest_send (one doorbell) */
#define TIMEOUT_MS 10000
#define MIB (1u << 20)

/* The pattern of host.c: byte p of message i of a stream with this seed. */
static uint8_t example_byte(uint32_t seed, uint32_t i, uint32_t p)
{
	uint32_t start = (seed * 0x9e3779b1u + i * 0x85ebca6bu) >> 16;

	return (uint8_t)(((start + p) * 0x9e3779b1u) >> 24);
}

/*
 * Sizes for --verify: bucket b = i % 22 is 1 B (b = 0), exactly 1 MiB
 * (b = 21), or a size in [2^(b-1), 2^b): log-uniform from 1 B to 1 MiB.
 */
static uint32_t example_size(uint32_t i)
{
	uint32_t b = i % 22, h = (i * 0x9e3779b1u) >> 8;

	if (b == 0)
		return 1;
	if (b == 21)
		return MIB;
	return (1u << (b - 1)) + h % (1u << (b - 1));
}

static void put_le32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

/*
 * Take the completions that have come back.  Buffers queued by
 * hgsmi_guest_send are fire and forget: this frees them inside the library
 * and counts any the host failed in stats.remote_errors.  Reap would return
 * only buffers of hgsmi_guest_submit, which this program does not use.
 */
static int collect(struct hgsmi_guest *g)
{
	struct hgsmi_msg msgs[16];
	int n;

	while ((n = hgsmi_guest_reap(g, msgs, 16)) > 0)
		for (int k = 0; k < n; k++)
			hgsmi_guest_free(g, msgs[k].offset);
	return n;
}

static uint32_t inflight(const struct hgsmi_guest *g)
{
	struct hgsmi_guest_stats st;

	hgsmi_guest_stats(g, &st);
	return st.inflight;
}

static uint64_t remote_errors(const struct hgsmi_guest *g)
{
	struct hgsmi_guest_stats st;

	hgsmi_guest_stats(g, &st);
	return st.remote_errors;
}

/*
 * Send one file to the sink.  hgsmi_guest_send copies each chunk into the
 * guest heap and queues the batch with one doorbell, so the chunk buffers
 * can be reused as soon as it returns.  When the heap or the ring is full
 * (-ENOMEM, -EAGAIN), wait for the host to complete some.  At the end, wait
 * until none is in flight.
 */
static int send_file(struct hgsmi_guest *g, const char *path)
{
	static unsigned char chunks[BATCH][CHUNK];
	const void *datas[BATCH];
	uint32_t lens[BATCH];
	uint64_t bytes = 0, queued = 0, errors = remote_errors(g);
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	bool eof = false;
	int rc = 0;

	if (!f) {
		rc = -errno;
		fprintf(stderr, "guest: %s: %s\n", path, strerror(-rc));
		return rc;
	}
	while (!eof && rc >= 0) {
		unsigned n = 0, sent = 0;

		while (n < BATCH && !eof) {
			lens[n] = (uint32_t)fread(chunks[n], 1, CHUNK, f);
			datas[n] = chunks[n];
			bytes += lens[n];
			eof = lens[n] < CHUNK;
			n += lens[n] > 0;
		}
		while (sent < n && rc >= 0) {
			rc = hgsmi_guest_send(g, HGSMI_CH_SINK, 0, datas + sent, lens + sent, n - sent);
			if (rc == -ENOMEM || rc == -EAGAIN) {
				rc = hgsmi_guest_wait(g, TIMEOUT_MS);
				if (rc == 0)
					rc = -ETIMEDOUT;
			} else if (rc > 0) {
				sent += (unsigned)rc;
				queued += (unsigned)rc;
			}
			if (rc >= 0)
				rc = collect(g);
		}
	}
	while (rc >= 0 && inflight(g) > 0) {
		rc = hgsmi_guest_wait(g, TIMEOUT_MS);
		if (rc == 0)
			rc = -ETIMEDOUT;
		if (rc > 0)
			rc = collect(g);
	}
	if (ferror(f))
		rc = -EIO;
	if (f != stdin)
		fclose(f);
	errors = remote_errors(g) - errors;
	if (rc < 0) {
		fprintf(stderr, "guest: sending %s: %s\n", path, hgsmi_strerror(rc));
	} else if (errors) {
		fprintf(stderr, "guest: sending %s: the host failed %llu of %llu chunks\n",
			path, (unsigned long long)errors, (unsigned long long)queued);
		rc = -EIO;
	} else {
		printf("sent %s: %llu bytes in %llu messages\n", path,
		       (unsigned long long)bytes, (unsigned long long)queued);
	}
	return rc < 0 ? rc : 0;
}

/* One synchronous call; the reply must be the request, or its inverse. */
static int call_and_check(struct hgsmi_guest *g, uint8_t channel, uint32_t i,
			  uint32_t size, uint8_t *req, uint8_t *reply)
{
	uint8_t flip = channel == CH_INVERT ? 0xff : 0;
	int rc;

	for (uint32_t p = 0; p < size; p++)
		req[p] = example_byte(CALL_SEED, i, p);
	rc = hgsmi_guest_call(g, channel, (uint16_t)i, req, size, reply, size, TIMEOUT_MS);
	if (rc < 0) {
		fprintf(stderr, "guest: call %u (%u bytes) on channel 0x%02x: %s\n",
			(unsigned)i, (unsigned)size, channel, hgsmi_strerror(rc));
		return rc;
	}
	if ((uint32_t)rc != size) {
		fprintf(stderr, "guest: call %u: %d reply bytes, want %u\n",
			(unsigned)i, rc, (unsigned)size);
		return -EPROTO;
	}
	for (uint32_t p = 0; p < size; p++) {
		if (reply[p] != (uint8_t)(req[p] ^ flip)) {
			fprintf(stderr, "guest: call %u (%u bytes): byte %u is 0x%02x, want 0x%02x\n",
				(unsigned)i, (unsigned)size, (unsigned)p, reply[p],
				(uint8_t)(req[p] ^ flip));
			return -EBADMSG;
		}
	}
	return 0;
}

/* What the push handler expects next, and what it has seen. */
struct push_check {
	uint32_t seed, size, count; /* the current push request */
	uint32_t received;          /* messages of it so far */
	uint64_t total_msgs, total_bytes, mismatches;
};

/*
 * A host-command handler: runs inside hgsmi_guest_poll() for each verified
 * buffer on CH_PUSH, which is acked when it returns.  The host FIFO keeps
 * order, so message i of a request comes i-th.
 */
static int on_push(void *ctx, const struct hgsmi_msg *msg, void *data, uint32_t *reply_len)
{
	struct push_check *pc = ctx;
	const uint8_t *d = data;
	uint32_t i = pc->received++;

	*reply_len = 0;
	pc->total_msgs++;
	pc->total_bytes += msg->size;
	if (msg->info != (uint16_t)i || msg->size != pc->size) {
		fprintf(stderr, "guest: push %u: info %u size %u, want info %u size %u\n",
			(unsigned)i, msg->info, (unsigned)msg->size, (unsigned)i,
			(unsigned)pc->size);
		pc->mismatches++;
		return -EPROTO;
	}
	for (uint32_t p = 0; p < msg->size; p++) {
		if (d[p] != example_byte(pc->seed, i, p)) {
			fprintf(stderr, "guest: push %u (%u bytes): byte %u is 0x%02x, want 0x%02x\n",
				(unsigned)i, (unsigned)msg->size, (unsigned)p, d[p],
				example_byte(pc->seed, i, p));
			pc->mismatches++;
			return -EBADMSG;
		}
	}
	return 0;
}

/* Ask for `count` pushes of `size` bytes and serve them as they come. */
static int push_and_check(struct hgsmi_guest *g, struct push_check *pc,
			  uint32_t count, uint32_t size, uint32_t seed)
{
	unsigned char req[12];
	int rc, idle = 0;

	*pc = (struct push_check){.seed = seed, .size = size, .count = count,
				  .total_msgs = pc->total_msgs,
				  .total_bytes = pc->total_bytes,
				  .mismatches = pc->mismatches};
	put_le32(req, count);
	put_le32(req + 4, size);
	put_le32(req + 8, seed);
	rc = hgsmi_guest_call(g, CH_PUSH_REQUEST, 0, req, sizeof(req), req, sizeof(req),
			      TIMEOUT_MS);
	if (rc < 0) {
		fprintf(stderr, "guest: push request: %s\n", hgsmi_strerror(rc));
		return rc;
	}
	while (pc->received < count && !pc->mismatches) {
		rc = hgsmi_guest_poll(g, TIMEOUT_MS);
		if (rc == 0 && ++idle < 2)
			continue; /* woken by something else: once is fine */
		if (rc == 0) {
			fprintf(stderr, "guest: push: %u of %u messages, then nothing for %d ms\n",
				(unsigned)pc->received, (unsigned)count, TIMEOUT_MS);
			return -ETIMEDOUT;
		}
		if (rc < 0) {
			fprintf(stderr, "guest: poll: %s\n", hgsmi_strerror(rc));
			return rc;
		}
		if (rc > 0)
			idle = 0;
	}
	return pc->mismatches ? -EBADMSG : 0;
}

static int verify(struct hgsmi_guest *g, uint32_t n)
{
	uint8_t *req = malloc(MIB), *reply = malloc(MIB);
	struct push_check pc = {0};
	uint64_t call_bytes = 0;
	uint32_t i, j;
	int rc = 0;

	if (!req || !reply) {
		free(req);
		free(reply);
		return -ENOMEM;
	}
	/* guest -> host -> guest: every byte read and rewritten by the host */
	for (i = 0; i < n && rc == 0; i++) {
		rc = call_and_check(g, CH_INVERT, i, example_size(i), req, reply);
		call_bytes += example_size(i);
	}
	/* host -> guest through the FIFO: requests of 1..8 messages each */
	if (rc == 0)
		rc = hgsmi_guest_register(g, CH_PUSH, on_push, &pc);
	for (i = 0, j = 0; i < n && rc == 0; j++) {
		uint32_t count = 1 + j % 8;

		if (count > n - i)
			count = n - i;
		rc = push_and_check(g, &pc, count, example_size(j), PUSH_SEED + j);
		i += count;
	}
	free(req);
	free(reply);
	if (rc == 0)
		printf("verify: %u calls (%llu bytes) and %llu pushes (%llu bytes) "
		       "in %u requests checked, ok\n", (unsigned)n,
		       (unsigned long long)call_bytes, (unsigned long long)pc.total_msgs,
		       (unsigned long long)pc.total_bytes, (unsigned)j);
	return rc;
}

/* A few echo calls of different sizes. */
static int echo(struct hgsmi_guest *g)
{
	static const uint32_t sizes[] = {1, 100, 4096, 65536, MIB};
	uint8_t *req = malloc(MIB), *reply = malloc(MIB);
	int rc = req && reply ? 0 : -ENOMEM;

	for (unsigned k = 0; k < sizeof(sizes) / sizeof(sizes[0]) && rc == 0; k++)
		rc = call_and_check(g, HGSMI_CH_ECHO, k, sizes[k], req, reply);
	if (rc == 0)
		printf("echo: %u calls of 1 B to 1 MiB, replies ok\n",
		       (unsigned)(sizeof(sizes) / sizeof(sizes[0])));
	free(req);
	free(reply);
	return rc;
}

int main(int argc, char **argv)
{
	struct hgsmi_guest_config cfg = {0};
	struct hgsmi_guest *g;
	struct hgsmi_guest_stats st;
	long n = -1;
	int rc;

	if (argc >= 4 && !strcmp(argv[2], "--wait")) {
		char *end;
		double secs = strtod(argv[3], &end);

		if (*end || !(secs >= 0 && secs <= 86400)) {
			fprintf(stderr, "%s: --wait takes seconds, not %s\n", argv[0], argv[3]);
			return 2;
		}
		cfg.wait_ms = (int)(secs * 1000);
		/* drop "--wait S": the program and NAME move up two */
		argv[3] = argv[1];
		argv[2] = argv[0];
		argv += 2;
		argc -= 2;
	}
	if (argc >= 3 && !strcmp(argv[2], "--verify")) {
		char *end;

		n = argc == 4 ? strtol(argv[3], &end, 10) : -1;
		if (n < 0 || n > 1000000 || *end) {
			fprintf(stderr, "usage: %s NAME [--wait S] --verify N\n", argv[0]);
			return 2;
		}
	} else if (argc < 2) {
		fprintf(stderr, "usage: %s NAME [--wait S] [FILE... | --verify N]\n", argv[0]);
		return 2;
	}

	rc = hgsmi_guest_attach(argv[1], &cfg, &g);
	if (rc < 0) {
		fprintf(stderr, "guest: cannot attach to %s: %s\n", argv[1], hgsmi_strerror(rc));
		return 1;
	}
	if (n >= 0) {
		rc = verify(g, (uint32_t)n);
	} else {
		for (int k = 2; k < argc && rc == 0; k++)
			rc = send_file(g, argv[k]);
		if (rc == 0)
			rc = echo(g);
	}

	hgsmi_guest_stats(g, &st);
	printf("guest %s: %s; %llu messages out (%llu bytes), %llu in (%llu bytes), "
	       "%llu doorbells, %llu irqs\n", argv[1], rc == 0 ? "ok" : "FAILED",
	       (unsigned long long)st.msgs_out, (unsigned long long)st.bytes_out,
	       (unsigned long long)st.msgs_in, (unsigned long long)st.bytes_in,
	       (unsigned long long)st.doorbells, (unsigned long long)st.irqs);
	hgsmi_guest_detach(g);
	return rc == 0 ? 0 : 1;
}
