/* SPDX-License-Identifier: MIT */
/*
 * vm_guest.c - an hgsmi guest inside a QEMU VM, through the ivshmem-doorbell
 * device (or, for comparison, an ordinary process guest on the host).
 *
 *   vm_guest [--pci BDF | --host NAME] [--phase PHASE] [--spin-us N]
 *
 * --pci "" (the default) takes the first ivshmem device; in the VM it needs
 * nothing but root and sysfs.  Link it statically to run from an initramfs:
 *   cc -O2 -static -Inative/include vm_guest.c native/build/libhgsmi.a -lpthread -lrt
 * The host side is tests/vm/driver.py (a Python hgsmi.Host that is also the
 * ivshmem server); its channels and control codes are below.  In the VM
 * without arguments the phase comes from the kernel command line
 * (hgsmi.phase=...).  Every line it prints starts with "vm_guest:"; a check
 * that fails prints "FAIL" and exits 1.
 *
 * Phases: calls (1,000 calls of 1 B..1 MiB, zero-copy, answered with the
 * CRC-32 of the request), posts (1,000 host commands through the FIFO and the
 * IRQ), zerocopy (buffers filled in place both ways), bench (64 B call RTT,
 * streaming both ways), stream (calls until the VM is killed), quick (a few
 * calls), all (calls, posts, zerocopy, bench).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hgsmi.h"

#define CH_CALL 0x10 /* reply: CRC-32 of the request, 4 bytes LE */
#define CH_POST 0x11 /* host -> guest: u32 seq, u32 crc of the rest, rest */
#define CH_CTRL 0x12 /* info: one of CTRL_* */
#define CH_SINK 0x13 /* counted and dropped by the host */
#define CH_ZC 0x14   /* guest -> host in place: host checks, inverts in place */
#define CH_ZCPOST 0x15 /* host -> guest in place: guest checks, inverts in place */

enum {
	CTRL_POSTS = 1,    /* data: u32 count wanted; host posts them after replying */
	CTRL_POSTS_OK = 2, /* data: u32 count, u32 bad, u32 crc xor; reply: u8 ok */
	CTRL_ZCPOST = 3,   /* data: u32 count, u32 size; host posts in place */
	CTRL_STREAM = 4,   /* data: u32 size; the host starts timing CH_SINK */
	CTRL_STREAM_END = 5, /* data: u32 size; reply: the host's MB/s as text */
	CTRL_HOSTSTREAM = 6, /* data: u32 size, u32 count: host posts, times acks */
	CTRL_REPORT = 7,   /* data: a line of text for the host's log */
	CTRL_DONE = 8,
};

#define TIMEOUT_MS 30000

static struct hgsmi_guest *g;
static const char *source = "";
static int spin_us;

static void fail(const char *what, int rc)
{
	printf("vm_guest: FAIL %s: %d (%s)\n", what, rc, rc < 0 ? hgsmi_strerror(rc) : "");
	fflush(stdout);
	exit(1);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

/* CRC-32 (zlib's): what the host computes with zlib.crc32. */
static uint32_t crc32_of(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t c = 0xffffffffu;

	while (n--)
		c = crc_table[(c ^ *b++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

/* Pseudo-random fill, 8 bytes a step (xorshift64). */
static void fill(uint8_t *p, uint32_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	uint32_t i = 0;

	for (; i + 8 <= n; i += 8) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		memcpy(p + i, &x, 8);
	}
	for (; i < n; i++)
		p[i] = (uint8_t)(x >> (8 * (i & 7)));
}

static uint8_t *at(uint32_t off)
{
	return (uint8_t *)hgsmi_guest_base(g) + off;
}

static int ctrl(uint16_t info, const void *data, uint32_t len, void *reply, uint32_t cap)
{
	int rc = hgsmi_guest_call(g, CH_CTRL, info, data, len ? len : 1, reply, cap, TIMEOUT_MS);

	if (rc < 0)
		fail("control call", rc);
	return rc;
}

static void report(const char *fmt, double a, double b)
{
	char line[200];

	snprintf(line, sizeof(line), fmt, a, b);
	printf("vm_guest: %s\n", line);
	fflush(stdout);
	ctrl(CTRL_REPORT, line, (uint32_t)strlen(line), NULL, 0);
}

/* ---- calls: zero-copy guest buffers, answered by their CRC ---------------- */
static void phase_calls(int n)
{
	uint64_t bytes = 0;
	double t0 = now_s();

	for (int i = 0; i < n; i++) {
		uint32_t top = 1u << (i % 21), size = i % 2 ? 1 + (uint32_t)(i * 2654435761u) % top : top;
		struct hgsmi_msg m, r;
		uint32_t got, want;
		int rc;

		if ((rc = hgsmi_guest_alloc(g, size, 4, CH_CALL, (uint16_t)i, &m)) < 0)
			fail("alloc", rc);
		fill(at(m.data), size, (uint64_t)i);
		want = crc32_of(at(m.data), size); /* the reply overwrites the data */
		if ((rc = hgsmi_guest_call_buffer(g, m.offset, TIMEOUT_MS, &r)) != 4)
			fail("call", rc);
		memcpy(&got, at(r.data), 4); /* the reply, read in place */
		if (got != want) {
			printf("vm_guest: FAIL call %d size %u: crc %08x\n", i, size, got);
			exit(1);
		}
		hgsmi_guest_free(g, m.offset);
		bytes += size;
	}
	printf("vm_guest: calls ok n=%d bytes=%llu secs=%.2f\n", n,
	       (unsigned long long)bytes, now_s() - t0);
	fflush(stdout);
}

/* ---- posts: host commands through the FIFO and the IRQ ------------------- */
struct posts {
	uint32_t want, count, bad, xor, next_seq;
};

static int on_post(void *ctx, const struct hgsmi_msg *msg, void *data, uint32_t *reply_len)
{
	struct posts *p = ctx;
	uint32_t seq, crc;

	*reply_len = 0;
	if (msg->size < 8) {
		p->bad++;
		return -EINVAL;
	}
	memcpy(&seq, data, 4);
	memcpy(&crc, (uint8_t *)data + 4, 4);
	if (seq != p->next_seq++ || crc != crc32_of((uint8_t *)data + 8, msg->size - 8))
		p->bad++;
	p->xor ^= crc;
	p->count++;
	return 0;
}

static void serve_until(const uint32_t *count, uint32_t want)
{
	double deadline = now_s() + TIMEOUT_MS / 1000.0;

	while (*count < want) {
		int rc = hgsmi_guest_poll(g, 100);

		if (rc < 0)
			fail("poll", rc);
		if (now_s() > deadline)
			fail("waiting for host commands", -ETIMEDOUT);
	}
}

static void phase_posts(uint32_t n)
{
	struct posts p = {.want = n};
	uint32_t sum[3], want = n;
	uint8_t ok = 0;
	int rc;

	if ((rc = hgsmi_guest_register(g, CH_POST, on_post, &p)) < 0)
		fail("register", rc);
	ctrl(CTRL_POSTS, &want, 4, NULL, 0);
	serve_until(&p.count, n);
	sum[0] = p.count, sum[1] = p.bad, sum[2] = p.xor;
	ctrl(CTRL_POSTS_OK, sum, sizeof(sum), &ok, 1);
	if (p.bad || !ok)
		fail("posts verified", -(int)p.bad);
	printf("vm_guest: posts ok n=%u\n", p.count);
	fflush(stdout);
	hgsmi_guest_unregister(g, CH_POST);
}

/* ---- zero copy both ways ------------------------------------------------- */
struct zc {
	uint32_t count, bad;
};

static int on_zcpost(void *ctx, const struct hgsmi_msg *msg, void *data, uint32_t *reply_len)
{
	struct zc *z = ctx;
	uint8_t *b = data;

	/* The host filled byte i with (i * 7 + info) & 0xff, in place. */
	for (uint32_t i = 0; i < msg->size; i++)
		if (b[i] != (uint8_t)(i * 7 + msg->info))
			return z->bad++, -EBADMSG;
	z->count++;
	*reply_len = 0;
	return 0;
}

static void phase_zerocopy(void)
{
	struct zc z = {0};
	uint32_t req[2] = {16, 256 << 10};
	int rc;

	/* guest -> host: filled in place, checked and inverted in place there */
	for (int i = 0; i < 16; i++) {
		uint32_t size = 64u << i % 15;
		struct hgsmi_msg m, r;

		if ((rc = hgsmi_guest_alloc(g, size, 0, CH_ZC, (uint16_t)i, &m)) < 0)
			fail("alloc", rc);
		for (uint32_t k = 0; k < size; k++)
			at(m.data)[k] = (uint8_t)(k * 13 + i);
		if ((rc = hgsmi_guest_call_buffer(g, m.offset, TIMEOUT_MS, &r)) != (int)size)
			fail("zero-copy call", rc);
		for (uint32_t k = 0; k < size; k++)
			if (at(r.data)[k] != (uint8_t)~(k * 13 + i))
				fail("zero-copy reply in place", (int)k);
		hgsmi_guest_free(g, m.offset);
	}
	/* host -> guest: the host allocates in its heap, fills, submits */
	if ((rc = hgsmi_guest_register(g, CH_ZCPOST, on_zcpost, &z)) < 0)
		fail("register", rc);
	ctrl(CTRL_ZCPOST, req, sizeof(req), NULL, 0);
	serve_until(&z.count, req[0]);
	if (z.bad)
		fail("zero-copy host buffers", -(int)z.bad);
	hgsmi_guest_unregister(g, CH_ZCPOST);
	printf("vm_guest: zerocopy ok\n");
	fflush(stdout);
}

/* ---- bench ---------------------------------------------------------------- */
static void rtt(const char *label)
{
	uint8_t req[64] = {1}, rep[64];
	int n = 0, rc;
	double t0 = now_s(), t;

	/* Warm, then as many as fit in about half a second. */
	for (int i = 0; i < 20; i++)
		hgsmi_guest_call(g, CH_CALL, 0, req, 64, rep, 4, TIMEOUT_MS);
	t0 = now_s();
	do {
		if ((rc = hgsmi_guest_call(g, CH_CALL, 0, req, 64, rep, 4, TIMEOUT_MS)) < 0)
			fail("rtt call", rc);
		n++;
	} while ((t = now_s()) - t0 < 0.5);
	char fmt[120];

	snprintf(fmt, sizeof(fmt), "%s rtt64_us=%%.1f calls=%%.0f", label);
	report(fmt, (t - t0) / n * 1e6, n);
}

static void stream_out(uint32_t size, uint32_t total_mib)
{
	uint32_t n = (uint32_t)(((uint64_t)total_mib << 20) / size), sent = 0, req = size;
	static uint8_t *payload;
	char reply[64] = {0};
	const void *datas[16];
	uint32_t lens[16];
	int rc;

	payload = realloc(payload, size);
	fill(payload, size, size);
	for (int i = 0; i < 16; i++)
		datas[i] = payload, lens[i] = size;
	ctrl(CTRL_STREAM, &req, 4, NULL, 0);
	while (sent < n) {
		unsigned batch = n - sent < 16 ? n - sent : 16;

		rc = hgsmi_guest_send(g, CH_SINK, 0, datas, lens, batch);
		if (rc == -ENOMEM || rc == -EAGAIN) {
			hgsmi_guest_wait(g, 100); /* completions free the heap */
			continue;
		}
		if (rc < 0)
			fail("send", rc);
		sent += (uint32_t)rc;
	}
	rc = ctrl(CTRL_STREAM_END, &req, 4, reply, sizeof(reply) - 1);
	printf("vm_guest: %s stream guest->host size=%u MB/s=%s\n", source, size, reply);
	fflush(stdout);
}

static int on_sink(void *ctx, const struct hgsmi_msg *msg, void *data, uint32_t *reply_len)
{
	(void)data;
	(void)msg;
	++*(uint32_t *)ctx;
	*reply_len = 0;
	return 0;
}

static void stream_in(uint32_t size, uint32_t total_mib)
{
	uint32_t n = (uint32_t)(((uint64_t)total_mib << 20) / size), count = 0;
	uint32_t req[2] = {size, n};
	char reply[64] = {0};

	hgsmi_guest_register(g, CH_SINK, on_sink, &count);
	ctrl(CTRL_HOSTSTREAM, req, sizeof(req), NULL, 0);
	serve_until(&count, n);
	hgsmi_guest_unregister(g, CH_SINK);
	ctrl(CTRL_STREAM_END, &size, 4, reply, sizeof(reply) - 1);
	printf("vm_guest: %s stream host->guest size=%u MB/s=%s\n", source, size, reply);
	fflush(stdout);
}

static void phase_bench(void)
{
	static const uint32_t sizes[3] = {4096, 64 << 10, 1 << 20};
	static const uint32_t mib[3] = {8, 32, 64};

	rtt(spin_us ? "spin" : "nospin");
	for (int i = 0; i < 3; i++)
		stream_out(sizes[i], mib[i]);
	for (int i = 0; i < 3; i++)
		stream_in(sizes[i], mib[i]);
}

/* ---- stream until killed ---------------------------------------------------- */
static void phase_stream(void)
{
	printf("vm_guest: streaming\n");
	fflush(stdout);
	for (;;)
		phase_calls(21);
}

/* Wait until every fire-and-forget send has come back. */
static void drain(void)
{
	struct hgsmi_guest_stats st;

	for (hgsmi_guest_stats(g, &st); st.inflight; hgsmi_guest_stats(g, &st))
		if (hgsmi_guest_wait(g, 100) < 0)
			fail("drain", -EPIPE);
}

static const char *cmdline_phase(void)
{
	static char buf[512];
	FILE *f = fopen("/proc/cmdline", "re");
	char *p;

	if (!f)
		return "all";
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	if (!(p = strstr(buf, "hgsmi.phase=")))
		return "all";
	p += strlen("hgsmi.phase=");
	p[strcspn(p, " \n")] = 0;
	return p;
}

static void attach(const char *pci, const char *host)
{
	struct hgsmi_guest_config cfg = {.spin_us = (uint32_t)spin_us};
	int rc = host ? hgsmi_guest_attach(host, &cfg, &g) : hgsmi_guest_attach_pci(pci, &cfg, &g);
	struct hgsmi_guest_stats st;

	if (rc < 0)
		fail("attach", rc);
	hgsmi_guest_stats(g, &st);
	printf("vm_guest: attached %s id=%u epoch=%u size=%u backend=%u\n", source,
	       st.guest_id, st.epoch, hgsmi_guest_size(g), st.backend);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *pci = "", *host = NULL, *phase = NULL;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--pci"))
			pci = argv[i + 1];
		else if (!strcmp(argv[i], "--host"))
			host = argv[i + 1];
		else if (!strcmp(argv[i], "--phase"))
			phase = argv[i + 1];
		else if (!strcmp(argv[i], "--spin-us"))
			spin_us = atoi(argv[i + 1]);
	}
	if (!phase)
		phase = host ? "all" : cmdline_phase();
	source = host ? "process" : "vm";
	crc_init();
	attach(pci, host);
	if (!strcmp(phase, "quick")) {
		phase_calls(42);
	} else if (!strcmp(phase, "stream")) {
		phase_stream();
	} else if (!strcmp(phase, "calls")) {
		phase_calls(1000);
	} else {
		phase_calls(1000);
		phase_posts(1000);
		phase_zerocopy();
		if (!strcmp(phase, "all") || !strcmp(phase, "bench")) {
			phase_bench();
			/* The same with an adaptive spin: detach and attach again
			 * once nothing is in flight, so the rings carry on. */
			drain();
			hgsmi_guest_detach(g);
			spin_us = HGSMI_SPIN_US_DEFAULT;
			attach(pci, host);
			rtt("spin");
		}
	}
	ctrl(CTRL_DONE, "", 1, NULL, 0);
	printf("vm_guest: done %s\n", source);
	hgsmi_guest_detach(g);
	return 0;
}
