/* SPDX-License-Identifier: MIT */
/*
 * ivshmem.c - the host as an ivshmem server (QEMU docs/specs/ivshmem-spec.rst,
 * "server protocol"), so that a QEMU VM with an ivshmem-doorbell device is
 * one more guest.  On connect the server sends little-endian int64 messages,
 * each with at most one fd (SCM_RIGHTS): the protocol version (0), the VM's
 * own peer id, -1 with the shared memory, then for every peer its id with
 * one eventfd per vector.  Here there are two peers: the host is peer 0,
 * whose vector 0 is the guest's doorbell eventfd (the VM rings it by writing
 * 0 << 16 | 0 to the Doorbell register), and the VM itself, whose vector 0
 * is the IRQ eventfd (QEMU raises MSI-X vector 0 with it).  QEMU never
 * writes to the socket afterwards: EOF there is the VM's death, and the
 * socket is watched as a process guest's is.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <fcntl.h>
#include <unistd.h>

#include "internal.h"

#define IVSHMEM_PROTOCOL_VERSION 0
#define IVSHMEM_MAX_PEER 0xffff /* QEMU refuses larger ids */

int hgsmi_int_ivshmem_listen(struct hgsmi_host *h)
{
	const struct hgsmi_host_config *c = &h->cfg;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, rc;

	/* QEMU maps the segment as a BAR: a power of two, from an fd. */
	if ((c->segment_size & (c->segment_size - 1)) || c->segment != HGSMI_SEGMENT_MEMFD ||
	    c->backend != HGSMI_BACKEND_EVENTFD)
		return -EINVAL;
	if (strlen(c->ivshmem_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, c->ivshmem_path);
	strcpy(h->ivshmem_path, c->ivshmem_path);
	h->cfg.ivshmem_path = h->ivshmem_path; /* the caller's string may go */
	/* A live server on the path is refused, a dead one's socket removed. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(fd);
		return -EADDRINUSE;
	}
	if (fd >= 0)
		close(fd);
	unlink(sa.sun_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	h->ivshmem_fd = fd;
	if (chmod(sa.sun_path, c->socket_mode) < 0 || listen(fd, 16) < 0)
		return -errno; /* the caller's destroy closes and unlinks */
	return 0;
}

void hgsmi_int_ivshmem_close(struct hgsmi_host *h)
{
	if (h->ivshmem_fd < 0)
		return;
	close(h->ivshmem_fd);
	unlink(h->ivshmem_path);
	h->ivshmem_fd = -1;
}

static int send_msg(int sock, int64_t value, int fd)
{
	uint8_t le[8];

	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)((uint64_t)value >> (8 * i));
	return hgsmi_int_send_fds(sock, le, sizeof(le), fd >= 0 ? &fd : NULL, fd >= 0);
}

int hgsmi_int_ivshmem_accept(struct hgsmi_host *h, struct hgsmi_conn **out)
{
	struct hgsmi_welcome w;
	struct hgsmi_conn *c;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	int fd, fds[3], nfds, rc;
	uint32_t peer;

	if (h->ivshmem_fd < 0)
		return -EAGAIN;
	fd = accept4(h->ivshmem_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED
			       ? -EAGAIN : -errno;
	/* The same admission as a process guest: uid, then the guest limit. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    !hgsmi_int_host_uid_allowed(h, (uint32_t)cred.uid)) {
		close(fd);
		return -EACCES;
	}
	if ((uint32_t)h->n_conns >= h->cfg.max_guests) {
		close(fd);
		return -EUSERS;
	}
	rc = hgsmi_int_conn_create(h, fd, HGSMI_F_ALL, &c, &w, fds, &nfds);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	if (nfds != 3) { /* segment, doorbell, IRQ: what the checks above ensure */
		hgsmi_int_conn_destroy(c);
		return -EPROTO;
	}
	/* Peer ids are 16 bits and 0 is the host's. */
	peer = (c->id - 1) % IVSHMEM_MAX_PEER + 1;
	/* A send timeout: the messages are tiny, but a VM must not hang us. */
	{
		struct timeval tv = {.tv_sec = 1};

		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if ((rc = send_msg(fd, IVSHMEM_PROTOCOL_VERSION, -1)) < 0 ||
	    (rc = send_msg(fd, peer, -1)) < 0 ||
	    (rc = send_msg(fd, -1, fds[0])) < 0 ||
	    (rc = send_msg(fd, 0, fds[1])) < 0 ||
	    (rc = send_msg(fd, peer, fds[2])) < 0 ||
	    (rc = hgsmi_int_host_add_conn(h, c)) < 0) {
		hgsmi_int_conn_destroy(c);
		return rc;
	}
	/* QEMU has its own fd now; our mapping keeps the memfd alive. */
	close(c->seg.fd);
	c->seg.fd = -1;
	*out = c;
	return 0;
}
