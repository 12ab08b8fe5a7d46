/* SPDX-License-Identifier: MIT */
/*
 * bench_common.h - what the two C ceiling programs share: options, the
 * clock, a shared mapping that is already unlinked, a child that dies with
 * its parent, and failing without leaving the child behind.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PAGE 4096u
#define BENCH_MAX_SIZE (64u << 20)

/* The check pattern, the same as hgsmi/bench/transports/base.py: byte i is
 * (i + 0x5A) & 0xFF, so the first byte is 0x5A. */
#define BENCH_FIRST 0x5Au
#define BENCH_LAST(size) ((unsigned char)(((size) - 1 + 0x5Au) & 0xFFu))

struct bench_opts {
	size_t size;		/* -s: payload bytes per message */
	uint64_t count;		/* -n: messages or calls (0: no bound) */
	double seconds;		/* -t: time bound (0: none) */
	unsigned timeout;	/* -T: hard bound, SIGALRM kills (default 60) */
	uint64_t warmup;	/* -w: untimed calls (ceiling_eventfd) */
	int cpu[2];		/* -p P,C: pin parent to P, child to C (-1: no) */
	/* Only hgsmi_c uses these; the ceiling programs ignore them. */
	const char *mode;	/* -m: workload (hgsmi_c: g2h, h2g, rtt) */
	unsigned spin_us;	/* -S: the library's adaptive spin (0: sleep only) */
	unsigned batch;		/* -b: messages per doorbell (0: the program's choice) */
};

/* The child's pid while it runs, so bench_fail() can kill it. */
static pid_t bench_child;

static inline void bench_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (bench_child > 0) {
		kill(bench_child, SIGKILL);
		waitpid(bench_child, NULL, 0);
	}
	exit(1);
}

static inline double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline size_t bench_round_up(size_t n, size_t to)
{
	return (n + to - 1) / to * to;
}

/*
 * One empty poll of a busy-wait loop; @spins counts them. Every 1024th
 * poll yields the CPU: a no-op while the peer has a core of its own, but
 * when the box is busy (2 vCPUs, other work) and both peers share a core,
 * pure spinning burns whole time slices and throughput collapses by 1000x.
 */
static inline void bench_spin(uint64_t *spins)
{
	if ((++*spins & 1023) == 0)
		sched_yield();
#if defined(__x86_64__) || defined(__i386__)
	else
		__builtin_ia32_pause();
#endif
}

static inline void bench_parse(int argc, char **argv, struct bench_opts *o)
{
	int c;

	*o = (struct bench_opts){ .size = 64, .timeout = 60, .warmup = 50, .cpu = { -1, -1 },
				   .mode = "" };
	while ((c = getopt(argc, argv, "s:n:t:T:w:p:m:S:b:")) != -1) {
		switch (c) {
		case 's': o->size = strtoul(optarg, NULL, 0); break;
		case 'n': o->count = strtoull(optarg, NULL, 0); break;
		case 't': o->seconds = strtod(optarg, NULL); break;
		case 'T': o->timeout = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'w': o->warmup = strtoull(optarg, NULL, 0); break;
		case 'm': o->mode = optarg; break;
		case 'S': o->spin_us = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'b': o->batch = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'p':
			if (sscanf(optarg, "%d,%d", &o->cpu[0], &o->cpu[1]) != 2 ||
			    o->cpu[0] < 0 || o->cpu[1] < 0 || o->cpu[0] >= CPU_SETSIZE ||
			    o->cpu[1] >= CPU_SETSIZE)
				bench_fail("-p wants parent_cpu,child_cpu");
			break;
		default:
			bench_fail("usage: %s -s size [-n count] [-t seconds] [-T timeout] [-w warmup]"
				   " [-p parent_cpu,child_cpu] [-m mode] [-S spin_us] [-b batch]",
				   argv[0]);
		}
	}
	if (o->size < 1 || o->size > BENCH_MAX_SIZE)
		bench_fail("size must be in 1..%u", BENCH_MAX_SIZE);
	if (o->count == 0 && !(o->seconds > 0))
		bench_fail("give -n count, -t seconds or both");
	if (o->timeout == 0)
		bench_fail("timeout must be positive");
}

/*
 * A fresh, zeroed shared mapping of @size bytes from shm_open(). The name
 * is unlinked as soon as the mapping exists (the forked child inherits the
 * mapping), so nothing is left in /dev/shm even if we are killed later.
 */
static inline void *bench_shm_map(const char *tag, size_t size)
{
	char name[64];
	void *p;
	int fd, err;

	snprintf(name, sizeof(name), "/hgsmi-ceiling-%s.%ld", tag, (long)getpid());
	fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
	if (fd < 0)
		bench_fail("shm_open %s: %s", name, strerror(errno));
	p = MAP_FAILED;
	err = ftruncate(fd, (off_t)size) ? errno : 0;
	if (!err) {
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		err = p == MAP_FAILED ? errno : 0;
	}
	shm_unlink(name);
	close(fd);
	if (err)
		bench_fail("mapping %s: %s", name, strerror(err));
	return p;
}

/* Pin the calling process to @cpu, unless it is -1. */
static inline void bench_pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		bench_fail("pinning to cpu %d: %s", cpu, strerror(errno));
}

/*
 * fork(); the child dies with the parent and after the timeout. Each side
 * is pinned as -p asks.
 */
static inline pid_t bench_fork(const struct bench_opts *o)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid < 0)
		bench_fail("fork: %s", strerror(errno));
	if (pid == 0) {
		bench_child = 0;
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
			_exit(1);
		alarm(o->timeout);
		bench_pin(o->cpu[1]);
		return 0;
	}
	bench_child = pid;
	bench_pin(o->cpu[0]);
	return pid;
}

/* Non-zero once the child has exited (reaped here) or cannot be found. */
static inline int bench_child_gone(void)
{
	if (bench_child > 0 && waitpid(bench_child, NULL, WNOHANG) == 0)
		return 0;
	bench_child = 0;
	return 1;
}

/* Wait for the child; fail unless it exited with status 0. */
static inline void bench_wait_child(void)
{
	int status;
	pid_t pid = bench_child;

	if (waitpid(pid, &status, 0) != pid)
		bench_fail("waitpid: %s", strerror(errno));
	bench_child = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		bench_fail("child failed (status 0x%x)", status);
}

#endif /* BENCH_COMMON_H */
