/* SPDX-License-Identifier: MIT */
/* util.c - directories, clocks and fd passing, shared by both sides. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

uint64_t hgsmi_int_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Below this a table stays on malloc: a mapping costs a syscall and a VMA. */
#define TABLE_MMAP_MIN (64u << 10)

void *hgsmi_int_table_alloc(size_t bytes)
{
	void *p;

	if (bytes < TABLE_MMAP_MIN)
		return calloc(1, bytes ? bytes : 1);
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void hgsmi_int_table_free(void *p, size_t bytes)
{
	if (!p)
		return;
	if (bytes < TABLE_MMAP_MIN)
		free(p);
	else
		munmap(p, bytes);
}

int hgsmi_int_remaining_ms(int timeout_ms, uint64_t start_ns)
{
	uint64_t spent;

	if (timeout_ms < 0)
		return -1;
	spent = (hgsmi_int_now_ns() - start_ns) / 1000000u;
	return spent >= (uint64_t)timeout_ms ? 0 : timeout_ms - (int)spent;
}

static int ensure_private_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (stat(dir, &st) < 0)
		return -errno;
	/* Somebody else's directory would let them swap our socket. */
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())
		return -EACCES;
	return 0;
}

int hgsmi_int_runtime_dir(const char *given, char *out, size_t len)
{
	const char *env;
	int n;

	if (given && *given)
		n = snprintf(out, len, "%s", given);
	else if ((env = getenv("HGSMI_RUNTIME_DIR")) && *env)
		n = snprintf(out, len, "%s", env);
	else if ((env = getenv("XDG_RUNTIME_DIR")) && *env)
		n = snprintf(out, len, "%s/hgsmi", env);
	else
		n = snprintf(out, len, "/tmp/hgsmi-%u", (unsigned)geteuid());
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return ensure_private_dir(out);
}

int hgsmi_int_send_fds(int sock, const void *buf, size_t len, const int *fds,
		       int nfds)
{
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t r;

	if (nfds > 4)
		return -EINVAL;
	if (nfds > 0) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	}
	do {
		r = sendmsg(sock, &mh, MSG_NOSIGNAL);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return (size_t)r == len ? 0 : -EPROTO;
}

/* Take every fd a message carried, so none leaks even if we refuse them. */
static void take_fds(struct msghdr *mh, int *fds, int maxfds, int *nfds)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		int got[4];
		memcpy(got, CMSG_DATA(c), (size_t)(n > 4 ? 4 : n) * sizeof(int));
		for (int i = 0; i < n && i < 4; i++) {
			if (*nfds < maxfds)
				fds[(*nfds)++] = got[i];
			else
				close(got[i]);
		}
	}
}

/*
 * One recvmsg of up to len bytes with these flags, retried on EINTR, into
 * room for 4 fds; every fd it carried is taken (see take_fds).  Returns what
 * recvmsg did (-1 with errno set); *mflags gets the message's flags.
 */
static ssize_t recv_taking_fds(int sock, void *buf, size_t len, int flags,
			       int *fds, int maxfds, int *nfds, int *mflags)
{
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	ssize_t r;

	do {
		r = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
	} while (r < 0 && errno == EINTR);
	if (r >= 0)
		take_fds(&mh, fds, maxfds, nfds);
	*mflags = mh.msg_flags;
	return r;
}

ssize_t hgsmi_int_recv_some(int sock, void *buf, size_t len)
{
	int none = 0, mflags;
	ssize_t r = recv_taking_fds(sock, buf, len, MSG_DONTWAIT, NULL, 0, &none, &mflags);

	if (r < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return r;
}

int hgsmi_int_recv_fds(int sock, void *buf, size_t len, int *fds, int maxfds,
		       int *nfds, int timeout_ms)
{
	struct pollfd p = {.fd = sock, .events = POLLIN};
	uint64_t start = hgsmi_int_now_ns();
	ssize_t r;
	int pr, mflags;

	*nfds = 0;
	do {
		pr = poll(&p, 1, timeout_ms);
	} while (pr < 0 && errno == EINTR);
	if (pr < 0)
		return -errno;
	if (pr == 0)
		return -ETIMEDOUT;
	/* A peer that sends part of the message and then nothing must not
	 * hold MSG_WAITALL forever: bound it by what is left of the timeout
	 * (a short read then fails the length check below). */
	if (timeout_ms >= 0) {
		int left = hgsmi_int_remaining_ms(timeout_ms, start);
		struct timeval tv = {.tv_sec = left / 1000,
				     .tv_usec = (left % 1000) * 1000 + (left ? 0 : 1000)};
		setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	r = recv_taking_fds(sock, buf, len, MSG_WAITALL, fds, maxfds, nfds, &mflags);
	if (timeout_ms >= 0) {
		struct timeval off = {0};
		int err = errno;
		setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &off, sizeof(off));
		errno = err;
	}
	if (r < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
	if (r == 0)
		return -EPIPE;
	if ((size_t)r != len || (mflags & (MSG_TRUNC | MSG_CTRUNC))) {
		for (int i = 0; i < *nfds; i++)
			close(fds[i]);
		*nfds = 0;
		return -EPROTO;
	}
	return 0;
}
