/* SPDX-License-Identifier: MIT */
/*
 * names.c - instance names: what a name may be, the socket path it gives,
 * and the short key that stands for it in shm and semaphore names.
 *
 * The socket keeps the whole name (sun_path bounds it).  Shm and semaphore
 * names travel in the welcome's HGSMI_NAME_MAX-byte fields, which an ABI 1
 * guest reads: "/hgsmi-KEY.ID" plus the irq semaphore's "i" and a NUL, with
 * ids of up to 5 digits, leaves 17 bytes for KEY; it gets 16.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "internal.h"

#define KEY_PREFIX 7 /* characters of a long name kept in its key */

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

/* No '/', and no leading '.': "." and ".." must not become the store
 * directory hgsmi/NAME, nor a name hide its socket. */
int hgsmi_int_check_name(const char *name)
{
	size_t n;

	if (!name || !*name || *name == '.')
		return -EINVAL;
	n = strnlen(name, HGSMI_INSTANCE_NAME_MAX + 1);
	if (n > HGSMI_INSTANCE_NAME_MAX)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < n; i++)
		if (!name_char(name[i]))
			return -EINVAL;
	return 0;
}

/* FNV-1a: deterministic across builds and hosts, which the stale cleanup of
 * a later run relies on. */
static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 16777619u;
	return h;
}

/*
 * The name itself when it fits and has no '.' (the '.' ends KEY in
 * "hgsmi-KEY.ID", so the cleanup's prefix "hgsmi-KEY." never matches another
 * instance's).  Otherwise its first 7 characters, '.' as '_', then '~' (never
 * in a name, so a short form never equals a plain one) and the hash of the
 * whole name: names sharing a prefix still get different keys.
 */
int hgsmi_int_shm_key(const char *name, char out[HGSMI_SHM_KEY_MAX + 1])
{
	size_t n;
	int rc;

	if ((rc = hgsmi_int_check_name(name)) < 0)
		return rc;
	n = strlen(name);
	if (n <= HGSMI_SHM_KEY_MAX && !strchr(name, '.')) {
		memcpy(out, name, n + 1);
		return (int)n;
	}
	for (n = 0; n < KEY_PREFIX && name[n]; n++)
		out[n] = name[n] == '.' ? '_' : name[n];
	return (int)n + snprintf(out + n, HGSMI_SHM_KEY_MAX + 1 - n, "~%08x", name_hash(name));
}

size_t hgsmi_int_socket_dir_max(const char *name)
{
	/* A checked name has at most 64 characters: never below 37 bytes. */
	return sizeof(((struct sockaddr_un *)0)->sun_path) - strlen(name) - strlen("/.sock");
}

int hgsmi_int_socket_path(const char *dir, const char *name, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/%s.sock", dir, name);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int hgsmi_shm_prefix(const char *name, char *out, size_t len)
{
	char key[HGSMI_SHM_KEY_MAX + 1];
	int n, rc;

	if (!out)
		return -EINVAL;
	if ((rc = hgsmi_int_shm_key(name, key)) < 0)
		return rc;
	n = snprintf(out, len, "hgsmi-%s.", key);
	return n < 0 || (size_t)n >= len ? -ERANGE : n;
}
