/* SPDX-License-Identifier: MIT */
/*
 * host_accept.c - who may attach, and how: the listen socket, the table of
 * connections whose hello is still arriving, admission per peer process
 * (SO_PEERCRED at accept: uid, pending and guest caps, eviction when the
 * table is full), the handshake, and each refusal with its counter (design
 * §1, §5).  The loop (host_loop.c) only says that something knocked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

#define HELLO_TIMEOUT_MS 1000 /* a connection's hello must be complete by then */
#define ACCEPT_PAUSE_NS 100000000ull /* out of fds: try accepting again after this */

/* Is a live host answering on this path? */
static bool socket_live(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool live = fd >= 0 && connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;

	if (fd >= 0)
		close(fd);
	return live;
}

/* The socket is made cfg.socket_mode before it listens: nobody else connects first. */
int hgsmi_int_host_listen(struct hgsmi_host *h)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int rc;

	strcpy(sa.sun_path, h->sock_path);
	if (socket_live(&sa))
		return -EADDRINUSE;
	/* Nobody answers: whatever carries this name is a dead host's. */
	unlink(h->sock_path);
	hgsmi_int_segment_cleanup(h->key, true);

	h->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (h->listen_fd < 0 || bind(h->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	if (chmod(h->sock_path, h->cfg.socket_mode) < 0 || listen(h->listen_fd, 64) < 0) {
		rc = -errno;
		unlink(h->sock_path);
		return rc;
	}
	return 0;
}

bool hgsmi_int_host_uid_allowed(const struct hgsmi_host *h, uint32_t uid)
{
	for (uint32_t i = 0; i < h->n_uids; i++)
		if (h->uids[i] == uid)
			return true;
	return false;
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
	    (c->own_doorbell && (rc = hgsmi_int_epoll_add(h->epfd, c->doorbell.fd, (uintptr_t)c)) < 0) ||
	    (rc = hgsmi_int_epoll_add(h->epfd, fd, (uintptr_t)c | HGSMI_EP_SOCK)) < 0) {
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
	hgsmi_int_host_rearm_timer(h);
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

	for (int n = 0; n < HGSMI_ACCEPT_BATCH && !h->accept_paused_until_ns; n++) {
		fd = accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0 && (errno == EINTR || errno == ECONNABORTED || errno == EPROTO))
			continue; /* that client is gone: the next one */
		if (fd < 0 && errno == EWOULDBLOCK)
			return 0;
		if (fd < 0) {
			/* Out of fds or memory: the connection stays in the backlog
			 * and the level-triggered listen fd would wake every wait.
			 * Unwatch it for a tick, and report it once. */
			struct epoll_event ev = {.events = 0, .data.u64 = HGSMI_EP_LISTEN};
			int err = errno;

			h->accept_paused_until_ns = hgsmi_int_now_ns() + ACCEPT_PAUSE_NS;
			epoll_ctl(h->epfd, EPOLL_CTL_MOD, h->listen_fd, &ev);
			hgsmi_int_host_rearm_timer(h);
			return -err;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
		    !hgsmi_int_host_uid_allowed(h, (uint32_t)cred.uid))
			return refuse(h, fd, &w, -EACCES);
		if (pending_of(h, (int32_t)cred.pid) >= h->cfg.max_pending_per_pid)
			return refuse(h, fd, &w, -ETOOMANYREFS);
		if (hgsmi_int_epoll_add(h->epfd, fd, HGSMI_EP_PENDING) < 0) {
			close(fd);
			return -ENOMEM;
		}
		rc = h->n_pending == HGSMI_PENDING_MAX ? evict(h) : 0;
		h->pending[h->n_pending++] = (struct hgsmi_pending){
			.fd = fd, .uid = (uint32_t)cred.uid, .pid = (int32_t)cred.pid,
			.deadline_ns = hgsmi_int_now_ns() + HELLO_TIMEOUT_MS * 1000000ull};
		if (h->n_pending > h->adm.pending_peak)
			h->adm.pending_peak = h->n_pending;
		hgsmi_int_host_rearm_timer(h);
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
