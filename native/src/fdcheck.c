/* SPDX-License-Identifier: MIT */
/*
 * fdcheck.c - what a guest checks about an eventfd the host passed it.
 *
 * A host may pass anything in the welcome: a pipe, a regular file, a socket,
 * a blocking eventfd at its maximum count, or one in EFD_SEMAPHORE mode.  A
 * blocking write() to a full pipe or counter would hang the guest's call
 * past any timeout, and a semaphore-mode eventfd stays readable after one
 * read (a busy loop).  So only a plain eventfd is taken, and made
 * non-blocking here: a doorbell write that would block is then -EAGAIN,
 * which means the counter is saturated, i.e. the wake-up is pending anyway.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* 1 if /proc/self/fdinfo/<fd> says the eventfd is in semaphore mode. */
static int semaphore_mode(int fd)
{
	char path[48], line[128];
	int sem = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (!(f = fopen(path, "re")))
		return -EPROTO;
	/* The field exists since Linux 6.6; older kernels do not say. */
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "eventfd-semaphore: %d", &sem) == 1)
			break;
	fclose(f);
	return sem != 0;
}

int hgsmi_int_eventfd_adopt(int fd)
{
	static const char want[] = "anon_inode:[eventfd]";
	char path[48], target[sizeof(want) + 1];
	ssize_t n;
	int fl;

	if (fd < 0)
		return -EPROTO;
	/* The kernel's own name for the file: a host cannot fake it. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target));
	if (n != (ssize_t)sizeof(want) - 1 || memcmp(target, want, sizeof(want) - 1))
		return -EPROTO;
	if (semaphore_mode(fd) != 0)
		return -EPROTO;
	/*
	 * The flag is on the open file description, which the host shares: a
	 * host that clears it again afterwards is not defended against (see
	 * the README's Security model).
	 */
	if ((fl = fcntl(fd, F_GETFL)) < 0 ||
	    (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
		return -EPROTO;
	return 0;
}
