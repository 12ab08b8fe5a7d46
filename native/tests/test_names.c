/* SPDX-License-Identifier: MIT */
/*
 * test_names.c - instance names: the 64-character bound, the short key
 * that must fit the welcome's 32-byte fields for every name, and the
 * sun_path bound checked against the actual runtime directory before the
 * directory is made.  Exits 0 on success, 1 at the first failed check.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "helpers.h"

static void check_rule(void)
{
	char name[HGSMI_INSTANCE_NAME_MAX + 2];

	memset(name, 'a', sizeof(name));
	name[HGSMI_INSTANCE_NAME_MAX] = 0;
	CHECK(hgsmi_int_check_name(name) == 0);
	name[HGSMI_INSTANCE_NAME_MAX] = 'a';
	name[HGSMI_INSTANCE_NAME_MAX + 1] = 0;
	CHECK(hgsmi_int_check_name(name) == -ENAMETOOLONG);
	CHECK(hgsmi_int_check_name("plugin-host.sandbox-12") == 0);
	CHECK(hgsmi_int_check_name("") == -EINVAL);
	CHECK(hgsmi_int_check_name("..") == -EINVAL);
	CHECK(hgsmi_int_check_name(".hidden") == -EINVAL);
	CHECK(hgsmi_int_check_name("a/b") == -EINVAL);
	CHECK(hgsmi_int_check_name("a~b") == -EINVAL); /* '~' marks the short form */
	CHECK(hgsmi_int_check_name(NULL) == -EINVAL);
}

/* Every length, with and without a '.': the longest name the host makes
 * from the key (an irq semaphore of the largest id) fits HGSMI_NAME_MAX. */
static void check_keys_fit(void)
{
	char name[HGSMI_INSTANCE_NAME_MAX + 1], key[HGSMI_SHM_KEY_MAX + 1];
	char shm[64], prefix[HGSMI_SHM_PREFIX_MAX];

	for (size_t n = 1; n <= HGSMI_INSTANCE_NAME_MAX; n++) {
		for (int dot = 0; dot < 2; dot++) {
			memset(name, 'x', n);
			name[n] = 0;
			if (dot && n > 1)
				name[n / 2] = '.';
			CHECK(hgsmi_int_shm_key(name, key) == (int)strlen(key));
			CHECK(!strchr(key, '.'));
			CHECK(snprintf(shm, sizeof(shm), "/hgsmi-%s.%ui", key, 99999u) <
			      HGSMI_NAME_MAX);
			CHECK(hgsmi_shm_prefix(name, prefix, sizeof(prefix)) ==
			      (int)strlen("hgsmi-.") + (int)strlen(key));
		}
	}
	CHECK(hgsmi_shm_prefix("hgsmi", prefix, 6) == -ERANGE);
	CHECK(hgsmi_shm_prefix("a.", prefix, sizeof(prefix)) > 0);
	CHECK(hgsmi_shm_prefix("a", prefix, sizeof(prefix)) > 0 && !strcmp(prefix, "hgsmi-a."));
}

/* A runtime directory that leaves exactly room for the name works; one
 * byte more is -ENAMETOOLONG, and that directory is never made. */
static void check_socket_bound(void)
{
	char base[] = "/tmp/hgsmi-names-XXXXXX", dir[128], name[HGSMI_INSTANCE_NAME_MAX + 1];
	struct hgsmi_host_config cfg = {.segment_size = 1u << 20};
	struct hgsmi_host *h;
	struct stat st;
	size_t room;

	CHECK(mkdtemp(base));
	/* t<pid>nnn...: unique, and the longest name */
	memset(name, 'n', HGSMI_INSTANCE_NAME_MAX);
	name[HGSMI_INSTANCE_NAME_MAX] = 0;
	name[snprintf(name, 16, "t%d", (int)getpid())] = 'n';
	room = hgsmi_int_socket_dir_max(name) - 1; /* characters of the directory */
	CHECK(room == 107 - HGSMI_INSTANCE_NAME_MAX - 6);
	snprintf(dir, sizeof(dir), "%s/%0*d", base, (int)(room - strlen(base) - 1), 0);
	CHECK(strlen(dir) == room);
	cfg.name = name;
	cfg.runtime_dir = dir;
	CHECK_RC(hgsmi_host_create(&cfg, &h));
	hgsmi_host_destroy(h);
	CHECK(rmdir(dir) == 0);
	strcat(dir, "0");
	CHECK(hgsmi_host_create(&cfg, &h) == -ENAMETOOLONG);
	CHECK(stat(dir, &st) < 0 && errno == ENOENT);
	CHECK(rmdir(base) == 0);
}

int main(void)
{
	check_rule();
	check_keys_fit();
	check_socket_bound();
	return 0;
}
