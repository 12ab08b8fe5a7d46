/* SPDX-License-Identifier: MIT */
/*
 * host_loop.c - the host's event loop: one epoll set over the listen socket,
 * every guest's doorbell and socket, and a timer (hello deadlines, the end of
 * a doorbell throttle or of an accept pause); the sleep announced in every
 * segment with its no-lost-wake-up re-check (design §4), the post-serve spin,
 * and the semaphore backend's sliced wait.  What a wake-up means for
 * admission is host_accept.c's; the host's objects are host.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "internal.h"

/* Under load the doorbell fds are checked only every this many busy passes. */
#define BUSY_PASSES_PER_EPOLL 64

int hgsmi_int_epoll_add(int epfd, int fd, uint64_t data)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = data};

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static bool any_pending(const struct hgsmi_host *h)
{
	for (const struct hgsmi_conn *c = h->conns; c; c = c->next)
		if (hgsmi_int_conn_pending(c))
			return true;
	return false;
}

/*
 * The post-serve spin's poll: work, or keep spinning while some guest is
 * awake (it may submit again soon) or being woken: its IRQ is raised and not
 * yet acked, as after the completion we just sent.  Without the second a
 * ping-pong never spins: its guest sleeps while its call is served, so the
 * host found it asleep after every completion and slept too.  Once every
 * guest sleeps with no IRQ pending, only the host can wake them (it has
 * nothing to send), so stop.  (A guest can fake either word; what that buys
 * it is this spin, bounded by the budget and spin_us.)
 */
static int spin_poll(void *ctx)
{
	const struct hgsmi_host *h = ctx;
	bool awake = false;

	for (const struct hgsmi_conn *c = h->conns; c; c = c->next) {
		if (hgsmi_int_conn_pending(c))
			return 1;
		const struct hgsmi_segment_header *hdr = hgsmi_int_seg_hdr(&c->seg);

		if (c->alive && (!READ_ONCE(hdr->guest_waiting.value) ||
				 (READ_ONCE(hdr->host_flags.value) & HGSMI_HOSTFLAGS_IRQ)))
			awake = true;
	}
	return awake ? 0 : -1;
}

/* Announce (1) or withdraw (0) the host's sleep in every guest's segment. */
static void set_waiting(struct hgsmi_host *h, uint32_t v)
{
	for (struct hgsmi_conn *c = h->conns; c; c = c->next)
		if (c->alive)
			WRITE_ONCE(hgsmi_int_seg_hdr(&c->seg)->host_waiting.value, v);
}

/* Wake at the next hello deadline or end of a throttle, whichever is first. */
void hgsmi_int_host_rearm_timer(struct hgsmi_host *h)
{
	struct itimerspec its = {0};
	uint64_t next = UINT64_MAX;

	for (unsigned i = 0; i < h->n_pending; i++)
		if (h->pending[i].deadline_ns < next)
			next = h->pending[i].deadline_ns;
	for (const struct hgsmi_conn *c = h->conns; c; c = c->next)
		if (c->throttle_until_ns && c->throttle_until_ns < next)
			next = c->throttle_until_ns;
	if (h->accept_paused_until_ns && h->accept_paused_until_ns < next)
		next = h->accept_paused_until_ns;
	if (next != UINT64_MAX) { /* absolute; a time passed fires at once */
		next++; /* never 0, which would disarm; split after, so nsec < 1e9 */
		its.it_value.tv_sec = (time_t)(next / 1000000000u);
		its.it_value.tv_nsec = (long)(next % 1000000000u);
	}
	timerfd_settime(h->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Stop (events 0) or resume watching a guest's doorbell. */
static void watch_doorbell(struct hgsmi_host *h, struct hgsmi_conn *c, bool on)
{
	struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.u64 = (uintptr_t)c};

	epoll_ctl(h->epfd, EPOLL_CTL_MOD, c->doorbell.fd, &ev);
}

/*
 * Over its rate, a guest's doorbell is not watched until the next tick: its
 * writes then cost the host nothing.  Its ring is still served whenever the
 * host is awake, and at the tick at the latest: nothing is lost, it batches.
 */
static void throttle(struct hgsmi_host *h, struct hgsmi_conn *c, uint64_t now)
{
	c->st.doorbells_throttled++;
	c->throttle_until_ns = now + HGSMI_THROTTLE_TICK_NS;
	watch_doorbell(h, c, false);
	hgsmi_int_host_rearm_timer(h);
}

static int on_timer(struct hgsmi_host *h)
{
	uint64_t now = hgsmi_int_now_ns(), ticks;
	int mask = 0;

	if (read(h->timer_fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		return -errno;
	for (struct hgsmi_conn *c = h->conns; c; c = c->next) {
		if (c->throttle_until_ns && now >= c->throttle_until_ns) {
			c->throttle_until_ns = 0;
			watch_doorbell(h, c, true);
			mask |= HGSMI_EV_WORK; /* what it rang for meanwhile */
		}
	}
	for (unsigned i = 0; i < h->n_pending; i++)
		if (now >= h->pending[i].deadline_ns)
			mask |= HGSMI_EV_ACCEPT; /* accept drops it */
	if (h->accept_paused_until_ns && now >= h->accept_paused_until_ns) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = HGSMI_EP_LISTEN};

		h->accept_paused_until_ns = 0;
		epoll_ctl(h->epfd, EPOLL_CTL_MOD, h->listen_fd, &ev);
		mask |= HGSMI_EV_ACCEPT; /* what waited in the backlog */
	}
	hgsmi_int_host_rearm_timer(h);
	return mask;
}

static int handle_events(struct hgsmi_host *h, struct epoll_event *evs, int n)
{
	int mask = 0;

	for (int i = 0; i < n; i++) {
		uint64_t d = evs[i].data.u64;
		struct hgsmi_conn *c = (struct hgsmi_conn *)(uintptr_t)(d & ~(uint64_t)HGSMI_EP_SOCK);

		if (d == HGSMI_EP_LISTEN || d == HGSMI_EP_PENDING) {
			mask |= HGSMI_EV_ACCEPT;
		} else if (d == HGSMI_EP_TIMER) {
			mask |= on_timer(h);
		} else if (d & HGSMI_EP_SOCK) {
			/* A guest sends nothing after its hello: readable means it
			 * left, or broke the protocol.  Either way it is cut off
			 * (and unwatched: a level-triggered fd would spin). */
			if (!hgsmi_int_sock_closed(c->sock))
				c->st.errors_protocol++;
			else if (c->alive)
				c->left = true;
			epoll_ctl(h->epfd, EPOLL_CTL_DEL, c->sock, NULL);
			c->alive = false;
			mask |= HGSMI_EV_HANGUP;
		} else {
			uint64_t now = hgsmi_int_now_ns();

			hgsmi_int_notify_drain(&c->doorbell);
			if (!hgsmi_int_conn_doorbell_ok(c, now)) {
				throttle(h, c, now);
				continue;
			}
			c->st.doorbells++;
			mask |= HGSMI_EV_WORK;
		}
	}
	return mask;
}

/*
 * A semaphore cannot sit in the epoll set, so sleep on it in short slices
 * and look at the sockets (attaches, hang-ups) between them.
 */
static int wait_sem(struct hgsmi_host *h, int timeout_ms)
{
	uint64_t start = hgsmi_int_now_ns();
	struct epoll_event evs[64];

	for (;;) {
		int left = hgsmi_int_remaining_ms(timeout_ms, start);
		int n = epoll_wait(h->epfd, evs, 64, 0);

		if (n > 0)
			return handle_events(h, evs, n);
		n = hgsmi_int_notify_wait(&h->sem_doorbell, -1,
					  left < 0 || left > SEM_SLICE_MS ? SEM_SLICE_MS : left);
		if (n < 0)
			return n;
		if (n > 0) {
			for (struct hgsmi_conn *c = h->conns; c; c = c->next)
				c->st.doorbells++;
			return HGSMI_EV_WORK;
		}
		if (hgsmi_int_remaining_ms(timeout_ms, start) == 0)
			return 0;
	}
}

static int wait_once(struct hgsmi_host *h, int timeout_ms)
{
	struct epoll_event evs[64];
	uint64_t start = hgsmi_int_now_ns();
	int n, mask = 0;

	if (any_pending(h)) {
		/* Busy: still look at sockets now and then, so a busy guest
		 * cannot starve attaches and hang-ups. */
		if (++h->busy_passes % BUSY_PASSES_PER_EPOLL == 0 &&
		    (n = epoll_wait(h->epfd, evs, 64, 0)) > 0)
			mask = handle_events(h, evs, n);
		return mask | HGSMI_EV_WORK;
	}
	/* Spin only right after serving: a wait that began idle (a timeout,
	 * an attach) would spin for nothing. */
	if (h->worked && hgsmi_int_spin(&h->spin, spin_poll, h) > 0)
		return HGSMI_EV_WORK;
	/*
	 * Announce the sleep, then a full barrier, then look once more: a
	 * guest that published before it could see host_waiting is caught by
	 * the re-check, one that publishes after will see it and ring.
	 */
	set_waiting(h, 1);
	full_fence();
	if (any_pending(h)) {
		set_waiting(h, 0);
		return HGSMI_EV_WORK;
	}
	timeout_ms = hgsmi_int_remaining_ms(timeout_ms, start);
	if (h->cfg.backend == HGSMI_BACKEND_SEMAPHORE) {
		mask = wait_sem(h, timeout_ms);
	} else {
		n = epoll_wait(h->epfd, evs, 64, timeout_ms);
		mask = n < 0 ? (errno == EINTR ? 0 : -errno) : handle_events(h, evs, n);
	}
	set_waiting(h, 0);
	return mask;
}

int hgsmi_host_wait(struct hgsmi_host *h, int timeout_ms)
{
	int mask = wait_once(h, timeout_ms);

	h->worked = mask > 0 && (mask & HGSMI_EV_WORK);
	hgsmi_int_spin_settle(&h->spin, h->worked);
	return mask;
}

int hgsmi_host_arm(struct hgsmi_host *h)
{
	if (any_pending(h))
		return 1;
	/* As in hgsmi_host_wait: announce, full barrier, look once more. */
	set_waiting(h, 1);
	full_fence();
	if (any_pending(h)) {
		set_waiting(h, 0);
		return 1;
	}
	return 0;
}

int hgsmi_host_disarm(struct hgsmi_host *h)
{
	struct epoll_event evs[64];
	int n, mask = 0;

	set_waiting(h, 0);
	/* Drains the doorbell eventfds and notes attaches and hang-ups. */
	do {
		n = epoll_wait(h->epfd, evs, 64, 0);
		if (n > 0)
			mask |= handle_events(h, evs, n);
	} while (n == 64);
	if (n < 0 && errno != EINTR)
		return -errno;
	if (__atomic_exchange_n(&h->doorbell_seen, 0, __ATOMIC_ACQ_REL)) {
		for (struct hgsmi_conn *c = h->conns; c; c = c->next)
			c->st.doorbells++;
		mask |= HGSMI_EV_WORK;
	}
	if (any_pending(h))
		mask |= HGSMI_EV_WORK;
	return mask;
}

int hgsmi_host_doorbell_wait(struct hgsmi_host *h, int timeout_ms)
{
	struct pollfd p = {.fd = h->epfd, .events = POLLIN};
	int rc;

	if (h->cfg.backend == HGSMI_BACKEND_SEMAPHORE) {
		/* Only the shared semaphore: nothing another thread changes. */
		rc = hgsmi_int_notify_wait(&h->sem_doorbell, -1, timeout_ms);
		if (rc > 0)
			__atomic_store_n(&h->doorbell_seen, 1, __ATOMIC_RELEASE);
		return rc;
	}
	rc = poll(&p, 1, timeout_ms);
	if (rc < 0)
		return errno == EINTR ? 0 : -errno;
	return rc > 0;
}

int hgsmi_host_poll(struct hgsmi_host *h, int timeout_ms)
{
	struct hgsmi_msg msgs[HGSMI_BATCH];
	struct hgsmi_conn *c, *next;
	int ev = hgsmi_host_wait(h, timeout_ms), served = 0;

	if (ev < 0)
		return ev;
	if (ev & HGSMI_EV_ACCEPT) {
		struct hgsmi_conn *nc;

		/* Bounded: a flood of connections waits for the next pass
		 * (the listen fd stays readable) while the guests are served. */
		for (int n = 0; n < HGSMI_ACCEPT_BATCH && hgsmi_host_accept(h, &nc) != -EAGAIN; n++)
			;
	}
	for (c = h->conns; c; c = next) {
		uint64_t before = c->st.msgs_in;
		int n;

		next = c->next;
		/* A few batches per guest per pass: a full ring cannot starve
		 * the others (the next wait returns at once while work is left). */
		for (int round = 0; round < 4 && (n = hgsmi_conn_recv(c, msgs, HGSMI_BATCH)) > 0;
		     round++) {
			/* Channels registered without a handler have nobody to
			 * serve them in a pure C loop. */
			for (int i = 0; i < n; i++)
				msgs[i].status = -ENOSYS, msgs[i].size = 0;
			hgsmi_conn_complete(c, msgs, (unsigned)n);
		}
		served += (int)(c->st.msgs_in - before);
		if (!c->alive)
			hgsmi_conn_close(c);
	}
	return served;
}
