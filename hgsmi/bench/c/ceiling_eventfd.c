/* SPDX-License-Identifier: MIT */
/*
 * ceiling_eventfd - the C ceiling for a synchronous call: eventfd ping-pong
 * between two processes (fork), with blocking read()/write() on two
 * eventfds (guest->host kick, host->guest IRQ) and the payload (64 B by
 * default) in POSIX shared memory.
 *
 * One round trip: the guest copies its request into shm and kicks; the
 * host wakes, copies the request out, checks its first and last byte,
 * copies the reply into shm and raises the IRQ; the guest wakes and copies
 * the reply out. The guest times every round trip after -w untimed ones
 * and prints one JSON line:
 *
 *   {"count": N, "median_us": M, "p99_us": P, "samples_us": [...]}
 *
 * Request and reply areas each start on a page of their own, and the
 * private buffers are page-aligned (no 4K aliasing, see ceiling_ring.c).
 *
 *   usage: ceiling_eventfd [-s size] -n count [-t seconds] [-w warmup] [-T timeout]
 *                        [-p parent_cpu,child_cpu]
 */
#include "bench_common.h"

#include <stdatomic.h>
#include <sys/eventfd.h>

struct call_ctl {
	_Atomic uint32_t stop;	/* guest: no more calls; the host exits */
	_Atomic uint32_t bad;	/* host: a request was corrupt; it exits */
};

static void efd_signal(int fd)
{
	uint64_t one = 1;

	while (write(fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		if (errno != EINTR)
			bench_fail("eventfd write: %s", strerror(errno));
}

static void efd_wait(int fd)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		if (errno != EINTR)
			bench_fail("eventfd read: %s", strerror(errno));
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void *page_alloc(size_t size)
{
	void *p = aligned_alloc(BENCH_PAGE, bench_round_up(size, BENCH_PAGE));

	if (!p)
		bench_fail("out of memory");
	return p;
}

static void serve(struct call_ctl *ctl, const unsigned char *req, unsigned char *rep,
		  size_t size, int kick, int irq)
{
	unsigned char *buf = page_alloc(size);
	const unsigned char last = BENCH_LAST(size);

	for (;;) {
		efd_wait(kick);
		if (atomic_load_explicit(&ctl->stop, memory_order_acquire))
			break;
		memcpy(buf, req, size);
		if (buf[0] != BENCH_FIRST || buf[size - 1] != last) {
			/* Wake the guest so that it fails instead of waiting. */
			atomic_store_explicit(&ctl->bad, 1, memory_order_release);
			efd_signal(irq);
			_exit(2);
		}
		memcpy(rep, buf, size);
		efd_signal(irq);
	}
	free(buf);
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	unsigned char *shm, *req, *rep, *src, *dst;
	struct call_ctl *ctl;
	double *lat, end, t0, t1;
	uint64_t n = 0, total;
	size_t area;
	int kick, irq;

	bench_parse(argc, argv, &o);
	if (o.count == 0)
		bench_fail("-n count is required");
	alarm(o.timeout);
	area = bench_round_up(o.size, BENCH_PAGE);
	shm = bench_shm_map("eventfd", BENCH_PAGE + 2 * area);
	ctl = (struct call_ctl *)shm;
	req = shm + BENCH_PAGE;
	rep = req + area;
	kick = eventfd(0, EFD_CLOEXEC);
	irq = eventfd(0, EFD_CLOEXEC);
	if (kick < 0 || irq < 0)
		bench_fail("eventfd: %s", strerror(errno));

	if (bench_fork(&o) == 0) {
		serve(ctl, req, rep, o.size, kick, irq);
		_exit(0);
	}

	src = page_alloc(o.size);
	dst = page_alloc(o.size);
	lat = malloc(o.count * sizeof(*lat));
	if (!lat)
		bench_fail("out of memory");
	for (size_t i = 0; i < o.size; i++)
		src[i] = (unsigned char)((i + BENCH_FIRST) & 0xFF);
	end = 1e300;
	total = o.warmup + o.count;
	for (uint64_t i = 0; i < total; i++) {
		if (i == o.warmup && o.seconds > 0)
			end = bench_now() + o.seconds;
		t0 = bench_now();
		memcpy(req, src, o.size);
		efd_signal(kick);
		efd_wait(irq);
		memcpy(dst, rep, o.size);
		t1 = bench_now();
		if (atomic_load_explicit(&ctl->bad, memory_order_acquire))
			bench_fail("the host saw a corrupt request in call %llu",
				   (unsigned long long)i);
		if (dst[0] != BENCH_FIRST || dst[o.size - 1] != BENCH_LAST(o.size))
			bench_fail("corrupt reply in call %llu", (unsigned long long)i);
		if (i >= o.warmup) {
			lat[n++] = t1 - t0;
			if (t1 >= end)
				break;
		}
	}
	atomic_store_explicit(&ctl->stop, 1, memory_order_release);
	efd_signal(kick);
	bench_wait_child();

	printf("{\"count\": %llu, ", (unsigned long long)n);
	if (n) {
		double *sorted = malloc(n * sizeof(*sorted));

		if (!sorted)
			bench_fail("out of memory");
		memcpy(sorted, lat, n * sizeof(*sorted));
		qsort(sorted, n, sizeof(*sorted), cmp_double);
		printf("\"median_us\": %.3f, \"p99_us\": %.3f, ",
		       sorted[n / 2] * 1e6, sorted[(n * 99) / 100] * 1e6);
		free(sorted);
	}
	printf("\"samples_us\": [");
	for (uint64_t i = 0; i < n; i++)
		printf("%s%.3f", i ? ", " : "", lat[i] * 1e6);
	printf("]}\n");
	free(lat);
	free(src);
	free(dst);
	return 0;
}
