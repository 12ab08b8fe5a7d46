/* SPDX-License-Identifier: MIT */
/*
 * host.c - the host's objects: its config with the defaults filled in, create
 * and destroy (the listen socket, the epoll set, the timer, the semaphore
 * doorbell), the channel table, the stat reply, and the list of attached
 * guests.  Admission and the handshake are host_accept.c's; waiting and the
 * pure C poll loop are host_loop.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "internal.h"

/* A setting the caller left 0 takes its default. */
static void or_default(uint32_t *setting, uint32_t value)
{
	if (!*setting)
		*setting = value;
}

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
	or_default(&c->segment_size, HGSMI_SEGMENT_SIZE_DEFAULT);
	or_default(&c->ring_entries, HGSMI_RING_ENTRIES_DEFAULT);
	or_default(&c->guest_heap_percent, HGSMI_GUEST_HEAP_PERCENT_DEFAULT);
	or_default(&c->backend, HGSMI_BACKEND_EVENTFD);
	or_default(&c->max_guests, HGSMI_MAX_GUESTS_DEFAULT);
	if (!c->max_inflight || c->max_inflight > c->ring_entries)
		c->max_inflight = c->ring_entries;
	or_default(&c->socket_mode, HGSMI_SOCKET_MODE_DEFAULT);
	or_default(&c->segment, HGSMI_SEGMENT_MEMFD);
	or_default(&c->max_doorbells_per_s, HGSMI_DOORBELLS_PER_S_DEFAULT);
	or_default(&c->max_pending_per_pid, HGSMI_PENDING_PER_PID_DEFAULT);
	/* A quarter of the slots, so that one process leaves room for three
	 * more; but never so few that a small host refuses an ordinary one. */
	or_default(&c->max_guests_per_pid, c->max_guests / 4 > 16 ? c->max_guests / 4 : 16);
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

int hgsmi_host_create(const struct hgsmi_host_config *cfg, struct hgsmi_host **out)
{
	struct hgsmi_host *h;
	char dir[sizeof(h->sock_path)];
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
	if ((rc = hgsmi_int_host_listen(h)) < 0)
		goto fail;
	h->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (h->epfd < 0 || (rc = hgsmi_int_epoll_add(h->epfd, h->listen_fd, HGSMI_EP_LISTEN)) < 0) {
		rc = h->epfd < 0 ? -errno : rc;
		goto fail_unlink;
	}
	h->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (h->timer_fd < 0 || (rc = hgsmi_int_epoll_add(h->epfd, h->timer_fd, HGSMI_EP_TIMER)) < 0) {
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
	     (rc = hgsmi_int_epoll_add(h->epfd, h->ivshmem_fd, HGSMI_EP_LISTEN)) < 0))
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
	return hgsmi_int_channel_clear(h->channels, ch);
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

/*
 * List a conn made outside the handshake (an ivshmem VM): watch its doorbell
 * and its socket (EOF: the VM is gone), as handshake() in host_accept.c does.
 */
int hgsmi_int_host_add_conn(struct hgsmi_host *h, struct hgsmi_conn *c)
{
	int rc;

	if ((rc = hgsmi_int_epoll_add(h->epfd, c->doorbell.fd, (uintptr_t)c)) < 0)
		return rc;
	if ((rc = hgsmi_int_epoll_add(h->epfd, c->sock, (uintptr_t)c | HGSMI_EP_SOCK)) < 0) {
		epoll_ctl(h->epfd, EPOLL_CTL_DEL, c->doorbell.fd, NULL);
		return rc;
	}
	c->next = h->conns;
	h->conns = c;
	h->n_conns++;
	return 0;
}
