/* SPDX-License-Identifier: MIT */
/*
 * host.c - the listening host: the control socket, the handshake, one epoll
 * loop over every guest's doorbell and socket, and the channel table.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

#define HELLO_TIMEOUT_MS 1000 /* a connection's hello must be complete by then */
#define ACCEPT_PAUSE_NS 100000000ull /* out of fds: try accepting again after this */
/* Under load the doorbell fds are checked only every this many busy passes. */
#define BUSY_PASSES_PER_EPOLL 64
/*
 * epoll data: small constants for the host's own fds; a conn pointer (16-byte
 * aligned, never small) for its doorbell, with TAG_SOCK set for its socket.
 */
#define DATA_LISTEN 0u
#define DATA_PENDING 2u /* some connection's hello: look at the table */
#define DATA_TIMER 4u
#define TAG_SOCK 1u
/* Connections one accept step takes from the backlog: a flood of them cannot
 * hold the loop in accept4 while hellos and guests wait. */
#define ACCEPT_BATCH 64

static int fill_defaults(struct hgsmi_host *h, const struct hgsmi_host_config *cfg)
{
	struct hgsmi_host_config *c = &h->cfg;
	int rc;

	*c = *cfg;
	if ((rc = hgsmi_int_shm_key(cfg->name, h->key)) < 0)
		return rc;
	strcpy(h->name, cfg->name);
	c->name = h->name;
	c->runtime_dir = NULL; /* resolved into sock_path below */
	if (!c->segment_size)
		c->segment_size = HGSMI_SEGMENT_SIZE_DEFAULT;
	if (!c->ring_entries)
		c->ring_entries = HGSMI_RING_ENTRIES_DEFAULT;
	if (!c->guest_heap_percent)
		c->guest_heap_percent = HGSMI_GUEST_HEAP_PERCENT_DEFAULT;
	if (!c->backend)
		c->backend = HGSMI_BACKEND_EVENTFD;
	if (!c->max_guests)
		c->max_guests = HGSMI_MAX_GUESTS_DEFAULT;
	if (!c->max_inflight || c->max_inflight > c->ring_entries)
		c->max_inflight = c->ring_entries;
	if (!c->socket_mode)
		c->socket_mode = HGSMI_SOCKET_MODE_DEFAULT;
	if (!c->segment)
		c->segment = HGSMI_SEGMENT_MEMFD;
	if (!c->max_doorbells_per_s)
		c->max_doorbells_per_s = HGSMI_DOORBELLS_PER_S_DEFAULT;
	if (!c->max_pending_per_pid)
		c->max_pending_per_pid = HGSMI_PENDING_PER_PID_DEFAULT;
	/* A quarter of the slots, so that one process leaves room for three
	 * more; but never so few that a small host refuses an ordinary one. */
	if (!c->max_guests_per_pid)
		c->max_guests_per_pid = c->max_guests / 4 > 16 ? c->max_guests / 4 : 16;
	if (c->segment != HGSMI_SEGMENT_MEMFD && c->segment != HGSMI_SEGMENT_POSIX)
		return -EINVAL;
	if (c->backend != HGSMI_BACKEND_EVENTFD && c->backend != HGSMI_BACKEND_SEMAPHORE)
		return -EINVAL;
	if (c->ring_entries < 2 || (c->ring_entries & (c->ring_entries - 1)))
		return -EINVAL;
	/* Refuse a layout that cannot fit now, not at every guest's attach. */
	if ((rc = hgsmi_int_segment_check_layout(c->segment_size, c->ring_entries,
						 c->guest_heap_percent)) < 0)
		return rc;
	h->n_uids = cfg->n_allowed_uids ? cfg->n_allowed_uids : 1;
	h->uids = calloc(h->n_uids, sizeof(uint32_t));
	if (!h->uids)
		return -ENOMEM;
	if (cfg->n_allowed_uids)
		memcpy(h->uids, cfg->allowed_uids, h->n_uids * sizeof(uint32_t));
	else
		h->uids[0] = (uint32_t)geteuid();
	c->allowed_uids = h->uids;
	c->n_allowed_uids = h->n_uids;
	return 0;
}

/* Is a live host answering on this path? */
static bool socket_live(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool live = fd >= 0 && connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;

	if (fd >= 0)
		close(fd);
	return live;
}

static int epoll_add(int epfd, int fd, uint64_t data)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = data};

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int hgsmi_host_create(const struct hgsmi_host_config *cfg, struct hgsmi_host **out)
{
	struct hgsmi_host *h;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char dir[sizeof(sa.sun_path)];
	int rc;

	if (!cfg || !out)
		return -EINVAL;
	if (!(h = calloc(1, sizeof(*h))))
		return -ENOMEM;
	h->listen_fd = h->epfd = h->timer_fd = h->ivshmem_fd = -1;
	h->sem_doorbell.fd = -1;
	h->next_id = 1;
	hgsmi_int_spin_init(&h->spin, cfg->spin_us);
	/* The whole name is in the socket path: the bound is sun_path's, for
	 * this runtime directory and this name together, checked before the
	 * directory is made. */
	if ((rc = fill_defaults(h, cfg)) < 0 ||
	    (rc = hgsmi_int_runtime_dir(cfg->runtime_dir, dir,
					hgsmi_int_socket_dir_max(h->name))) < 0 ||
	    (rc = hgsmi_int_socket_path(dir, h->name, h->sock_path, sizeof(h->sock_path))) < 0)
		goto fail;
	strcpy(sa.sun_path, h->sock_path);
	if (socket_live(&sa)) {
		rc = -EADDRINUSE;
		goto fail;
	}
	/* Nobody answers: whatever carries this name is a dead host's. */
	unlink(h->sock_path);
	hgsmi_int_segment_cleanup(h->key, true);

	h->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (h->listen_fd < 0 || bind(h->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		goto fail;
	}
	if (chmod(h->sock_path, h->cfg.socket_mode) < 0 || listen(h->listen_fd, 64) < 0) {
		rc = -errno;
		goto fail_unlink;
	}
	h->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (h->epfd < 0 || (rc = epoll_add(h->epfd, h->listen_fd, DATA_LISTEN)) < 0) {
		rc = h->epfd < 0 ? -errno : rc;
		goto fail_unlink;
	}
	h->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (h->timer_fd < 0 || (rc = epoll_add(h->epfd, h->timer_fd, DATA_TIMER)) < 0) {
		rc = h->timer_fd < 0 ? -errno : rc;
		goto fail_unlink;
	}
	if (h->cfg.backend == HGSMI_BACKEND_SEMAPHORE) {
		char name[64];

		snprintf(name, sizeof(name), "/hgsmi-%s.db", h->key);
		if ((rc = hgsmi_int_notify_sem(&h->sem_doorbell, name, true, 0600)) < 0)
			goto fail_unlink;
	}
	/* QEMU VMs knock here; a knock wakes the loop as an attach does. */
	if (h->cfg.ivshmem_path &&
	    ((rc = hgsmi_int_ivshmem_listen(h)) < 0 ||
	     (rc = epoll_add(h->epfd, h->ivshmem_fd, DATA_LISTEN)) < 0))
		goto fail_unlink;
	*out = h;
	return 0;
fail_unlink:
	unlink(h->sock_path);
fail:
	hgsmi_host_destroy(h);
	return rc;
}

void hgsmi_host_destroy(struct hgsmi_host *h)
{
	if (!h)
		return;
	while (h->conns)
		hgsmi_conn_close(h->conns);
	for (unsigned i = 0; i < h->n_pending; i++)
		close(h->pending[i].fd);
	if (h->timer_fd >= 0)
		close(h->timer_fd);
	hgsmi_int_ivshmem_close(h);
	if (h->listen_fd >= 0) {
		close(h->listen_fd);
		unlink(h->sock_path);
	}
	if (h->epfd >= 0)
		close(h->epfd);
	hgsmi_int_notify_close(&h->sem_doorbell, true);
	free(h->uids);
	free(h->stat_reply);
	free(h);
}

const char *hgsmi_host_socket_path(const struct hgsmi_host *h) { return h->sock_path; }
int hgsmi_host_fileno(const struct hgsmi_host *h) { return h->epfd; }

int hgsmi_host_register(struct hgsmi_host *h, uint8_t ch, hgsmi_handler_fn fn, void *ctx)
{
	return hgsmi_int_channel_set(h->channels, ch, fn, ctx);
}

int hgsmi_host_unregister(struct hgsmi_host *h, uint8_t ch)
{
	if (!h->channels[ch].registered)
		return -ENOENT;
	h->channels[ch] = (struct hgsmi_channel){0};
	return 0;
}

int hgsmi_host_set_stat_reply(struct hgsmi_host *h, const void *data, size_t len)
{
	void *copy = malloc(len ? len : 1);

	if (!copy || len > UINT32_MAX) {
		free(copy);
		return -ENOMEM;
	}
	memcpy(copy, data, len);
	free(h->stat_reply);
	h->stat_reply = copy;
	h->stat_len = len;
	return 0;
}

int hgsmi_host_conn_count(const struct hgsmi_host *h) { return h->n_conns; }

struct hgsmi_conn *hgsmi_host_conn(const struct hgsmi_host *h, int i)
{
	struct hgsmi_conn *c = h->conns;

	while (c && i-- > 0)
		c = c->next;
	return c;
}

void hgsmi_conn_keep_mapping(struct hgsmi_conn *c)
{
	c->seg.keep_mapping = true;
}

void hgsmi_conn_close(struct hgsmi_conn *c)
{
	struct hgsmi_host *h = c->host;

	for (struct hgsmi_conn **p = &h->conns; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			h->n_conns--;
			break;
		}
	}
	/* Remove the fds explicitly: closing them would not, because the guest
	 * holds duplicates of the eventfd (and epoll watches the open file, not
	 * the fd), and a stale entry would hand us a freed conn. */
	if (c->own_doorbell)
		epoll_ctl(h->epfd, EPOLL_CTL_DEL, c->doorbell.fd, NULL);
	if (c->sock >= 0)
		epoll_ctl(h->epfd, EPOLL_CTL_DEL, c->sock, NULL);
	hgsmi_int_conn_destroy(c);
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
 * awake (it may submit again soon); once every guest announced its sleep,
 * only the host can wake them (it has nothing to send), so stop.
 */
static int spin_poll(void *ctx)
{
	const struct hgsmi_host *h = ctx;
	bool awake = false;

	for (const struct hgsmi_conn *c = h->conns; c; c = c->next) {
		if (hgsmi_int_conn_pending(c))
			return 1;
		if (c->alive && !READ_ONCE(hgsmi_int_seg_hdr(&c->seg)->guest_waiting.value))
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
static void rearm_timer(struct hgsmi_host *h)
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
	rearm_timer(h);
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
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = DATA_LISTEN};

		h->accept_paused_until_ns = 0;
		epoll_ctl(h->epfd, EPOLL_CTL_MOD, h->listen_fd, &ev);
		mask |= HGSMI_EV_ACCEPT; /* what waited in the backlog */
	}
	rearm_timer(h);
	return mask;
}

static int handle_events(struct hgsmi_host *h, struct epoll_event *evs, int n)
{
	int mask = 0;

	for (int i = 0; i < n; i++) {
		uint64_t d = evs[i].data.u64;
		struct hgsmi_conn *c = (struct hgsmi_conn *)(uintptr_t)(d & ~(uint64_t)TAG_SOCK);

		if (d == DATA_LISTEN || d == DATA_PENDING) {
			mask |= HGSMI_EV_ACCEPT;
		} else if (d == DATA_TIMER) {
			mask |= on_timer(h);
		} else if (d & TAG_SOCK) {
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

bool hgsmi_int_host_uid_allowed(const struct hgsmi_host *h, uint32_t uid)
{
	for (uint32_t i = 0; i < h->n_uids; i++)
		if (h->uids[i] == uid)
			return true;
	return false;
}

/*
 * List a conn made outside the handshake (an ivshmem VM): watch its doorbell
 * and its socket (EOF: the VM is gone), as handshake() does.
 */
int hgsmi_int_host_add_conn(struct hgsmi_host *h, struct hgsmi_conn *c)
{
	int rc;

	if ((rc = epoll_add(h->epfd, c->doorbell.fd, (uintptr_t)c)) < 0)
		return rc;
	if ((rc = epoll_add(h->epfd, c->sock, (uintptr_t)c | TAG_SOCK)) < 0) {
		epoll_ctl(h->epfd, EPOLL_CTL_DEL, c->doorbell.fd, NULL);
		return rc;
	}
	c->next = h->conns;
	h->conns = c;
	h->n_conns++;
	return 0;
}


/* Each refusal is counted under the limit it names. */
static void count_refusal(struct hgsmi_host *h, int status)
{
	struct hgsmi_host_stats *s = &h->adm;

	switch (-status) {
	case EACCES: s->refused_uid++; break;
	case EPROTO: s->refused_protocol++; break;
	case EUSERS: s->refused_host_full++; break;
	case EDQUOT: s->refused_guests_per_pid++; break;
	case ETOOMANYREFS: s->refused_pending_per_pid++; break;
	default: s->refused_other++; break;
	}
}

static int refuse(struct hgsmi_host *h, int fd, struct hgsmi_welcome *w, int status)
{
	count_refusal(h, status);
	/* conn_create may have cleared w: the guest must still see our magic. */
	w->magic = HGSMI_CTL_MAGIC;
	w->abi_major = HGSMI_ABI_MAJOR;
	w->abi_minor = HGSMI_ABI_MINOR;
	w->status = status;
	hgsmi_int_send_fds(fd, w, sizeof(*w), NULL, 0);
	close(fd);
	return status;
}

/*
 * The segment is created 0600 for the host's uid.  A guest of another
 * allowed uid gets it handed over (this needs CAP_CHOWN).  The semaphore
 * doorbell is one per host and cannot be handed over, so that is refused.
 */
static int give_to(const struct hgsmi_host *h, struct hgsmi_conn *c, uint32_t uid)
{
	if (h->cfg.backend == HGSMI_BACKEND_SEMAPHORE)
		return -EACCES;
	/* A memfd is reached only through the fd the guest is given. */
	if (c->seg.memfd)
		return 0;
	return hgsmi_int_segment_give(&c->seg, uid);
}

/* Guests that process has attached (a cut-off one counts until reaped). */
static uint32_t guests_of(const struct hgsmi_host *h, int32_t pid)
{
	uint32_t n = 0;

	for (const struct hgsmi_conn *c = h->conns; c; c = c->next)
		n += c->pid == pid;
	return n;
}

/* The handshake after a complete hello: refuse, answer a stat, or attach. */
static int handshake(struct hgsmi_host *h, int fd, const struct hgsmi_hello *hello,
		     uint32_t uid, int32_t pid, struct hgsmi_conn **out)
{
	struct hgsmi_welcome w = {.magic = HGSMI_CTL_MAGIC, .abi_major = HGSMI_ABI_MAJOR,
				  .abi_minor = HGSMI_ABI_MINOR};
	struct hgsmi_conn *c;
	int fds[3], nfds, rc;
	uint32_t features;

	if (hello->magic != HGSMI_CTL_MAGIC || hello->abi_major != HGSMI_ABI_MAJOR)
		return refuse(h, fd, &w, -EPROTO);
	if (!hgsmi_int_host_uid_allowed(h, uid)) /* take_new refused it at accept: belt and braces */
		return refuse(h, fd, &w, -EACCES);
	if (hello->kind == HGSMI_HELLO_STAT) {
		uint32_t len = (uint32_t)h->stat_len;

		hgsmi_int_send_fds(fd, &w, sizeof(w), NULL, 0);
		hgsmi_int_send_fds(fd, &len, sizeof(len), NULL, 0);
		if (len)
			hgsmi_int_send_fds(fd, h->stat_reply, len, NULL, 0);
		close(fd);
		return 0;
	}
	if (hello->kind != HGSMI_HELLO_ATTACH)
		return refuse(h, fd, &w, -EPROTO);
	if ((uint32_t)h->n_conns >= h->cfg.max_guests)
		return refuse(h, fd, &w, -EUSERS);
	if (guests_of(h, pid) >= h->cfg.max_guests_per_pid)
		return refuse(h, fd, &w, -EDQUOT);
	/* The features both sides understand.  A memfd segment can only be
	 * given to a guest that takes it as an fd; a named one never is. */
	features = hello->features & HGSMI_F_ALL;
	if (h->cfg.segment == HGSMI_SEGMENT_POSIX)
		features &= ~HGSMI_F_SEGMENT_FD;
	else if (!(features & HGSMI_F_SEGMENT_FD))
		return refuse(h, fd, &w, -EPROTO);
	rc = hgsmi_int_conn_create(h, fd, features, &c, &w, fds, &nfds);
	if (rc < 0)
		return refuse(h, fd, &w, rc);
	if (uid != (uint32_t)geteuid() && give_to(h, c, uid) < 0) {
		c->sock = -1; /* refuse() closes it */
		hgsmi_int_conn_destroy(c);
		return refuse(h, fd, &w, -EACCES);
	}
	w.magic = HGSMI_CTL_MAGIC;
	w.abi_major = HGSMI_ABI_MAJOR;
	w.abi_minor = HGSMI_ABI_MINOR;
	if ((rc = hgsmi_int_send_fds(fd, &w, sizeof(w), fds, nfds)) < 0 ||
	    (c->own_doorbell && (rc = epoll_add(h->epfd, c->doorbell.fd, (uintptr_t)c)) < 0) ||
	    (rc = epoll_add(h->epfd, fd, (uintptr_t)c | TAG_SOCK)) < 0) {
		if (c->own_doorbell)
			epoll_ctl(h->epfd, EPOLL_CTL_DEL, c->doorbell.fd, NULL);
		hgsmi_int_conn_destroy(c);
		return rc;
	}
	/* The guest has its own fd now; our mapping keeps the memfd alive. */
	if (c->seg.fd >= 0)
		close(c->seg.fd);
	c->seg.fd = -1;
	c->pid = pid;
	c->next = h->conns;
	h->conns = c;
	h->n_conns++;
	*out = c;
	return 0;
}

/* Forget pending connection i (the caller closes or keeps its fd). */
static int unpend(struct hgsmi_host *h, unsigned i)
{
	int fd = h->pending[i].fd;

	epoll_ctl(h->epfd, EPOLL_CTL_DEL, fd, NULL);
	h->pending[i] = h->pending[--h->n_pending];
	rearm_timer(h);
	return fd;
}

/* Handshakes under way for that process. */
static uint32_t pending_of(const struct hgsmi_host *h, int32_t pid)
{
	uint32_t n = 0;

	for (unsigned i = 0; i < h->n_pending; i++)
		n += h->pending[i].pid == pid;
	return n;
}

/*
 * The table is full (many processes, each under its cap): refuse the oldest
 * handshake of the process that holds the most, so that a newcomer always
 * gets a slot and a flood only ever displaces itself.  Returns the refusal.
 */
static int evict(struct hgsmi_host *h)
{
	struct hgsmi_welcome w = {0};
	unsigned victim = 0;
	uint32_t most = 0;

	for (unsigned i = 0; i < h->n_pending; i++) {
		uint32_t n = pending_of(h, h->pending[i].pid);

		if (n > most || (n == most && h->pending[i].deadline_ns <
					      h->pending[victim].deadline_ns))
			victim = i, most = n;
	}
	h->adm.evicted_pending++;
	return refuse(h, unpend(h, victim), &w, -ETOOMANYREFS);
}

/*
 * Take new connections into the pending table, where each waits for its
 * hello in the epoll set: a client that sends nothing, or half a hello,
 * holds a slot until its deadline and nobody else.  Who connects is known
 * at accept (SO_PEERCRED), so a uid off the allow-list, or a process with
 * max_pending_per_pid handshakes under way, is refused before a byte is
 * read.  Returns 0, or what to tell the caller (one outcome per call).
 */
static int take_new(struct hgsmi_host *h)
{
	struct hgsmi_welcome w = {0};
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	int fd, rc;

	for (int n = 0; n < ACCEPT_BATCH && !h->accept_paused_until_ns; n++) {
		fd = accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0 && (errno == EINTR || errno == ECONNABORTED || errno == EPROTO))
			continue; /* that client is gone: the next one */
		if (fd < 0 && errno == EWOULDBLOCK)
			return 0;
		if (fd < 0) {
			/* Out of fds or memory: the connection stays in the backlog
			 * and the level-triggered listen fd would wake every wait.
			 * Unwatch it for a tick, and report it once. */
			struct epoll_event ev = {.events = 0, .data.u64 = DATA_LISTEN};
			int err = errno;

			h->accept_paused_until_ns = hgsmi_int_now_ns() + ACCEPT_PAUSE_NS;
			epoll_ctl(h->epfd, EPOLL_CTL_MOD, h->listen_fd, &ev);
			rearm_timer(h);
			return -err;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
		    !hgsmi_int_host_uid_allowed(h, (uint32_t)cred.uid))
			return refuse(h, fd, &w, -EACCES);
		if (pending_of(h, (int32_t)cred.pid) >= h->cfg.max_pending_per_pid)
			return refuse(h, fd, &w, -ETOOMANYREFS);
		if (epoll_add(h->epfd, fd, DATA_PENDING) < 0) {
			close(fd);
			return -ENOMEM;
		}
		rc = h->n_pending == HGSMI_PENDING_MAX ? evict(h) : 0;
		h->pending[h->n_pending++] = (struct hgsmi_pending){
			.fd = fd, .uid = (uint32_t)cred.uid, .pid = (int32_t)cred.pid,
			.deadline_ns = hgsmi_int_now_ns() + HELLO_TIMEOUT_MS * 1000000ull};
		if (h->n_pending > h->adm.pending_peak)
			h->adm.pending_peak = h->n_pending;
		rearm_timer(h);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* The handshake of one complete hello in the table, or -EAGAIN if none. */
static int step_pending(struct hgsmi_host *h, struct hgsmi_conn **out)
{
	for (unsigned i = 0; i < h->n_pending; i++) {
		struct hgsmi_pending *p = &h->pending[i], done;
		ssize_t r;
		int fd;

		/* What has arrived may come in pieces (a message that carried
		 * fds ends a read): take all of it. */
		do {
			r = hgsmi_int_recv_some(p->fd, (uint8_t *)&p->hello + p->got,
						sizeof(p->hello) - p->got);
			if (r > 0)
				p->got += (uint32_t)r;
		} while (r > 0 && p->got < sizeof(p->hello));
		if (r == 0 || (r < 0 && r != -EAGAIN)) {
			/* EOF before a whole hello: it left (or probed) */
			close(unpend(h, i));
			return r == 0 ? -EPIPE : (int)r;
		}
		if (p->got < sizeof(p->hello))
			continue;
		done = *p;
		fd = unpend(h, i);
		/* From here the socket blocks: the replies are small, and a stat
		 * reply must not be cut short by a full buffer. */
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		return handshake(h, fd, &done.hello, done.uid, done.pid, out);
	}
	return -EAGAIN;
}

int hgsmi_host_accept(struct hgsmi_host *h, struct hgsmi_conn **out)
{
	uint64_t now = hgsmi_int_now_ns();
	int rc;

	*out = NULL;
	/* A VM on the ivshmem socket needs no hello: attach it first. */
	if ((rc = hgsmi_int_ivshmem_accept(h, out)) != -EAGAIN)
		return rc;
	/* One outcome per call: a dropped, refused, served or attached client. */
	for (unsigned i = 0; i < h->n_pending; i++) {
		if (now >= h->pending[i].deadline_ns) {
			h->adm.hello_timeouts++;
			close(unpend(h, i));
			return -ETIMEDOUT;
		}
	}
	/* The hellos already here first: a stream of newcomers to refuse (one
	 * per call) must not keep a complete one waiting. */
	if ((rc = step_pending(h, out)) != -EAGAIN)
		return rc;
	if ((rc = take_new(h)) < 0)
		return rc;
	return step_pending(h, out);
}

void hgsmi_host_stats(const struct hgsmi_host *h, struct hgsmi_host_stats *out)
{
	*out = h->adm;
	out->pending = h->n_pending;
	out->max_pending_per_pid = h->cfg.max_pending_per_pid;
	out->max_guests_per_pid = h->cfg.max_guests_per_pid;
	out->max_doorbells_per_s = h->cfg.max_doorbells_per_s;
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
		for (int n = 0; n < ACCEPT_BATCH && hgsmi_host_accept(h, &nc) != -EAGAIN; n++)
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
