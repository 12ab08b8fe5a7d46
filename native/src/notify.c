/* SPDX-License-Identifier: MIT */
/*
 * notify.c - the doorbell and the IRQ line: an eventfd (pollable, passed
 * with SCM_RIGHTS) or a named POSIX semaphore.  A wait also watches the
 * control socket, so a dead peer ends it with -EPIPE instead of a hang.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int hgsmi_int_notify_create_eventfd(struct hgsmi_notify *n)
{
	memset(n, 0, sizeof(*n));
	n->backend = HGSMI_BACKEND_EVENTFD;
	n->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	return n->fd < 0 ? -errno : 0;
}

int hgsmi_int_notify_sem(struct hgsmi_notify *n, const char *name, bool create,
			 unsigned mode)
{
	memset(n, 0, sizeof(*n));
	n->backend = HGSMI_BACKEND_SEMAPHORE;
	n->fd = -1;
	if (strlen(name) >= sizeof(n->name))
		return -ENAMETOOLONG;
	strcpy(n->name, name);
	n->sem = create ? sem_open(name, O_CREAT | O_EXCL, mode, 0)
			: sem_open(name, 0);
	if (n->sem == SEM_FAILED) {
		n->sem = NULL;
		return -errno;
	}
	return 0;
}

int hgsmi_int_notify_signal(struct hgsmi_notify *n)
{
	uint64_t one = 1;

	if (n->backend == HGSMI_BACKEND_SEMAPHORE)
		return sem_post(n->sem) ? -errno : 0;
	if (n->backend == HGSMI_INT_BACKEND_MMIO) {
		/* The port write of the original: QEMU turns the store into a
		 * write to the eventfd the server gave for that peer/vector. */
		*n->reg = n->reg_value;
		return 0;
	}
	if (n->backend == HGSMI_INT_BACKEND_POLL)
		return 0;
	/* EAGAIN means the counter is saturated: the peer is signalled anyway. */
	if (write(n->fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

void hgsmi_int_notify_drain(struct hgsmi_notify *n)
{
	uint64_t v;

	if (n->backend == HGSMI_BACKEND_SEMAPHORE) {
		while (sem_trywait(n->sem) == 0)
			;
		return;
	}
	if (n->backend == HGSMI_INT_BACKEND_MMIO || n->backend == HGSMI_INT_BACKEND_POLL)
		return; /* no counter: the waiter acks the IRQ bit itself */
	/* An eventfd is a counter: one read empties it. */
	while (read(n->fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

int hgsmi_int_sock_closed(int fd)
{
	char c;
	ssize_t r;

	if (fd < 0)
		return 1;
	r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (r == 0)
		return 1;
	if (r < 0)
		return (errno == EAGAIN || errno == EINTR) ? 0 : 1;
	return 0;
}

/* How long bytes on the socket wait for an EOF behind them (see below). */
#define STRAY_EOF_MS 10

int hgsmi_int_sock_check(int fd)
{
	char buf[64];
	bool stray = false;

	if (fd < 0)
		return -EPIPE;
	/* Bounded: a host that streams bytes still gets an answer at once. */
	for (int i = 0; i < 16; i++) {
		ssize_t r = hgsmi_int_recv_some(fd, buf, sizeof(buf));

		if (r == 0)
			return -EPIPE; /* EOF: gone, whatever it sent before */
		if (r < 0 && r != -EAGAIN)
			return -EPIPE;
		if (r == -EAGAIN) {
			struct pollfd p = {.fd = fd, .events = POLLIN};

			if (!stray)
				return 0;
			/* A host that writes and dies: its EOF may be a moment
			 * behind the bytes.  Say PeerGone then, not a race's
			 * ProtocolError. */
			if (poll(&p, 1, STRAY_EOF_MS) == 1 &&
			    hgsmi_int_recv_some(fd, buf, sizeof(buf)) == 0)
				return -EPIPE;
			return -EPROTO;
		}
		stray = true;
	}
	return -EPROTO;
}

static int wait_eventfd(struct hgsmi_notify *n, int sockfd, int timeout_ms)
{
	struct pollfd p[2] = {{.fd = n->fd, .events = POLLIN},
			      {.fd = sockfd, .events = POLLIN}};
	int r;

	do {
		r = poll(p, sockfd >= 0 ? 2 : 1, timeout_ms);
	} while (r < 0 && errno == EINTR && timeout_ms < 0);
	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	if (p[0].revents & POLLIN) {
		hgsmi_int_notify_drain(n);
		return 1;
	}
	/* Readable: EOF, or bytes the protocol never sends (drained, so a
	 * stray byte cannot keep poll() returning at once: a busy loop). */
	if (sockfd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
		return hgsmi_int_sock_check(sockfd);
	return 0;
}

static int wait_sem(struct hgsmi_notify *n, int sockfd, int timeout_ms)
{
	uint64_t start = hgsmi_int_now_ns();

	for (;;) {
		int left = hgsmi_int_remaining_ms(timeout_ms, start);
		int slice = (left < 0 || left > SEM_SLICE_MS) ? SEM_SLICE_MS : left;
		struct timespec ts;
		uint64_t ns;
		int rc;

		if (sem_trywait(n->sem) == 0) {
			hgsmi_int_notify_drain(n);
			return 1;
		}
		if (sockfd >= 0 && (rc = hgsmi_int_sock_check(sockfd)) < 0)
			return rc;
		if (left == 0)
			return 0;
		clock_gettime(CLOCK_REALTIME, &ts);
		ns = (uint64_t)ts.tv_nsec + (uint64_t)slice * 1000000u;
		ts.tv_sec += (time_t)(ns / 1000000000u);
		ts.tv_nsec = (long)(ns % 1000000000u);
		if (sem_timedwait(n->sem, &ts) == 0) {
			hgsmi_int_notify_drain(n);
			return 1;
		}
		/* EINTR: return, so the caller's signal handlers get to run. */
		if (errno == EINTR)
			return 0;
		if (errno != ETIMEDOUT)
			return -errno;
	}
}

/*
 * No interrupt to sleep on: watch the level-triggered IRQ bit the host sets
 * (before it would write the eventfd) and the epoch it bumps when it drops
 * us.  Spin for POLL_SPIN_NS (a VM's round trip is ~100 us), then nap, 50 us
 * growing to 1 ms, so an idle guest costs little of its vCPU.  Return 0
 * after POLL_SLICE_NS asleep, so the caller looks at its rings again: a VM
 * whose vCPU emulation dropped a barrier or an atomic must not hang on a
 * lost IRQ bit.
 */
#define POLL_SPIN_NS 200000ull
#define POLL_SLICE_NS 5000000ull
static int wait_poll(struct hgsmi_notify *n, int timeout_ms)
{
	uint64_t start = hgsmi_int_now_ns(), t;
	struct timespec nap = {0, 50000};

	for (;;) {
		if (READ_ONCE(*n->flags) & HGSMI_HOSTFLAGS_IRQ)
			return 1;
		if (READ_ONCE(*n->epoch) != n->epoch_seen)
			return -EPIPE;
		if (hgsmi_int_remaining_ms(timeout_ms, start) == 0)
			return 0;
		t = hgsmi_int_now_ns() - start;
		if (t < POLL_SPIN_NS) {
			__builtin_ia32_pause();
			continue;
		}
		if (t > POLL_SPIN_NS + POLL_SLICE_NS)
			return 0;
		nanosleep(&nap, NULL);
		if (nap.tv_nsec < 1000000)
			nap.tv_nsec += nap.tv_nsec / 4;
	}
}

int hgsmi_int_notify_wait(struct hgsmi_notify *n, int sockfd, int timeout_ms)
{
	if (n->backend == HGSMI_INT_BACKEND_POLL)
		return wait_poll(n, timeout_ms);
	if (n->backend == HGSMI_INT_BACKEND_MMIO)
		return -EOPNOTSUPP;
	if (n->backend == HGSMI_BACKEND_SEMAPHORE)
		return wait_sem(n, sockfd, timeout_ms);
	return wait_eventfd(n, sockfd, timeout_ms);
}

void hgsmi_int_notify_close(struct hgsmi_notify *n, bool unlink)
{
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
	if (n->sem) {
		sem_close(n->sem);
		if (unlink)
			sem_unlink(n->name);
	}
	n->sem = NULL;
	while (n->n_extra > 0)
		close(n->extra_fds[--n->n_extra]);
	if (n->map)
		munmap(n->map, n->map_len);
	n->map = NULL;
	n->reg = NULL;
}
