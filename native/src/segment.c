/* SPDX-License-Identifier: MIT */
/*
 * segment.c - the VRAM: create, lay out, map, validate and clean up the
 * shared-memory segment of one guest: a sealed memfd passed over the socket
 * (the default), or a named POSIX segment in /dev/shm.
 *
 * Layout: [header | pad to 4K][submit][gcomplete][hostfifo][hostack][guest
 * heap][host heap].  Each ring starts on a page; heaps are page aligned so a
 * block's placement within a page is the allocator's choice alone.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define PAGE 4096u
#define MAX_RING_ENTRIES (1u << 20)
#define MIN_HEAP 4096u
#define MAX_SEGMENT 0x80000000u

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008u /* Linux 6.3; older kernels: EINVAL */
#endif
/*
 * What makes a memfd safe to share with a guest: its size can never change,
 * so no page of either mapping can end up beyond EOF (SIGBUS), and nobody
 * can add or remove seals afterwards.
 */
#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static uint32_t round_up(uint32_t v, uint32_t a) { return (v + a - 1) & ~(a - 1); }

static int layout(uint32_t size, uint32_t entries, uint32_t guest_percent,
		  struct hgsmi_region *r)
{
	uint32_t ring = round_up(hgsmi_int_ring_bytes(entries), PAGE);
	uint32_t off = PAGE, heaps, guest;

	if (entries < 2 || entries > MAX_RING_ENTRIES || (entries & (entries - 1)))
		return -EINVAL;
	if (guest_percent == 0 || guest_percent > 99)
		return -EINVAL;
	if (size > MAX_SEGMENT || size < PAGE + 4 * ring + 2 * MIN_HEAP)
		return -EINVAL;
	memset(r, 0, sizeof(*r) * HGSMI_REGION_COUNT);
	for (int i = HGSMI_REGION_SUBMIT; i <= HGSMI_REGION_HOSTACK; i++) {
		r[i].offset = off;
		r[i].size = ring;
		off += ring;
	}
	heaps = (size - off) & ~(PAGE - 1);
	guest = (uint32_t)((uint64_t)heaps * guest_percent / 100) & ~(PAGE - 1);
	if (guest < MIN_HEAP || heaps - guest < MIN_HEAP)
		return -EINVAL;
	r[HGSMI_REGION_GUEST_HEAP] = (struct hgsmi_region){off, guest};
	r[HGSMI_REGION_HOST_HEAP] = (struct hgsmi_region){off + guest, heaps - guest};
	return 0;
}

int hgsmi_int_segment_check_layout(uint32_t size, uint32_t ring_entries,
				   uint32_t guest_heap_percent)
{
	struct hgsmi_region r[HGSMI_REGION_COUNT];

	return layout(size, ring_entries, guest_heap_percent, r);
}

int hgsmi_int_segment_give(const struct hgsmi_segment *seg, uint32_t uid)
{
	int fd = shm_open(seg->name, O_RDWR | O_CLOEXEC, 0), rc = 0;

	if (fd < 0)
		return -errno;
	if (fchown(fd, (uid_t)uid, (gid_t)-1) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

int hgsmi_int_segment_validate(const struct hgsmi_segment_header *hp,
			       uint32_t size, struct hgsmi_segment *out)
{
	struct hgsmi_segment_header h;
	uint32_t ring_need;

	/* One copy, then only the copy is checked and used. */
	memcpy(&h, hp, sizeof(h));
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (h.magic != HGSMI_SEGMENT_MAGIC)
		return -EPROTO;
	if (h.endian != HGSMI_ENDIAN_MARK || h.abi_major != HGSMI_ABI_MAJOR)
		return -EPROTO;
	if (h.size != size || h.header_size < sizeof(h) || h.header_size > PAGE)
		return -EPROTO;
	if (h.ring_entries < 2 || h.ring_entries > MAX_RING_ENTRIES ||
	    (h.ring_entries & (h.ring_entries - 1)))
		return -EPROTO;
	ring_need = hgsmi_int_ring_bytes(h.ring_entries);
	for (int i = 0; i <= HGSMI_REGION_HOST_HEAP; i++) {
		struct hgsmi_region a = h.regions[i];

		if (a.offset < h.header_size || a.offset % HGSMI_HEAP_ALIGN ||
		    a.size == 0 || a.offset > size || a.size > size - a.offset)
			return -ERANGE;
		if (i <= HGSMI_REGION_HOSTACK && a.size < ring_need)
			return -ERANGE;
		/* A heap holds at least one block: the buffer checks subtract
		 * the buffer overhead from its size. */
		if (i >= HGSMI_REGION_GUEST_HEAP && a.size < HGSMI_HEAP_ALIGN)
			return -ERANGE;
		for (int j = 0; j < i; j++) {
			struct hgsmi_region b = h.regions[j];
			if (a.offset < b.offset + b.size && b.offset < a.offset + a.size)
				return -ERANGE;
		}
	}
	if (out) {
		memcpy(out->regions, h.regions, sizeof(out->regions));
		out->ring_entries = h.ring_entries;
		out->size = size;
	}
	return 0;
}

static int map(struct hgsmi_segment *seg, int fd, uint32_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	seg->base = p;
	seg->size = size;
	return 0;
}

/* A named segment, 0600, that must not exist yet. */
static int create_posix(const char *name, uint32_t size)
{
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, size) < 0) {
		int rc = -errno;

		close(fd);
		shm_unlink(name);
		return rc;
	}
	return fd;
}

/* An anonymous memfd of `size` bytes, sealed (SEALS) before anyone sees it. */
static int create_memfd(const char *label, uint32_t size)
{
	/* NOEXEC_SEAL keeps newer kernels from warning about exec-able memfds. */
	int fd = memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL), rc;

	if (fd < 0 && errno == EINVAL)
		fd = memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, size) < 0 || fcntl(fd, F_ADD_SEALS, SEALS) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int hgsmi_int_segment_create(struct hgsmi_segment *seg, const char *name,
			     uint32_t size, uint32_t ring_entries,
			     uint32_t guest_heap_percent, uint32_t guest_id,
			     uint32_t epoch, uint32_t features, bool memfd)
{
	struct hgsmi_region r[HGSMI_REGION_COUNT];
	struct hgsmi_segment_header *h;
	int fd, rc;

	memset(seg, 0, sizeof(*seg));
	seg->fd = -1;
	if ((rc = layout(size, ring_entries, guest_heap_percent, r)) < 0)
		return rc;
	if (strlen(name) >= sizeof(seg->name))
		return -ENAMETOOLONG;
	/* A memfd's label has no leading slash: /proc shows "memfd:<label>". */
	fd = memfd ? create_memfd(name + (name[0] == '/'), size) : create_posix(name, size);
	if (fd < 0)
		return fd;
	strcpy(seg->name, name);
	seg->memfd = memfd;
	if ((rc = map(seg, fd, size)) < 0) {
		close(fd);
		if (!memfd)
			shm_unlink(name);
		return rc;
	}
	if (memfd)
		seg->fd = fd; /* for the welcome; closed once passed */
	else
		close(fd);
	h = hgsmi_int_seg_hdr(seg);
	h->abi_major = HGSMI_ABI_MAJOR;
	h->abi_minor = HGSMI_ABI_MINOR;
	h->endian = HGSMI_ENDIAN_MARK;
	h->header_size = sizeof(*h);
	h->size = size;
	h->features = features;
	h->epoch = epoch;
	h->ring_entries = ring_entries;
	h->host_pid = (uint32_t)getpid();
	h->guest_id = guest_id;
	memcpy(h->regions, r, sizeof(r));
	memcpy(seg->regions, r, sizeof(r));
	seg->ring_entries = ring_entries;
	/* Release: a peer that sees the magic sees the whole header. */
	store_release(&h->magic, HGSMI_SEGMENT_MAGIC);
	return 0;
}

/*
 * Map `fd` (which the caller closes) and check the header it holds.  With
 * exact, its size must be `size` (a sealed memfd cannot change it later).
 */
static int open_mapped(struct hgsmi_segment *seg, int fd, uint32_t size, bool exact)
{
	struct stat st;
	int rc;

	/* A segment shorter than the host says would fault on access. */
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size < size ||
	    (exact && (uint64_t)st.st_size != size))
		return -EPROTO;
	if ((rc = map(seg, fd, size)) < 0)
		return rc;
	if (load_acquire(&hgsmi_int_seg_hdr(seg)->magic) != HGSMI_SEGMENT_MAGIC)
		rc = -EPROTO;
	else
		rc = hgsmi_int_segment_validate(hgsmi_int_seg_hdr(seg), size, seg);
	if (rc < 0) {
		munmap(seg->base, size);
		seg->base = NULL;
	}
	return rc;
}

int hgsmi_int_segment_open(struct hgsmi_segment *seg, const char *name,
			   uint32_t size)
{
	int fd, rc;

	memset(seg, 0, sizeof(*seg));
	seg->fd = -1;
	if (strlen(name) >= sizeof(seg->name))
		return -ENAMETOOLONG;
	fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	strcpy(seg->name, name);
	rc = open_mapped(seg, fd, size, false);
	close(fd);
	return rc;
}

int hgsmi_int_segment_open_fd(struct hgsmi_segment *seg, int fd,
			      const char *label, uint32_t size)
{
	int seals, rc = -EPROTO;

	memset(seg, 0, sizeof(*seg));
	seg->fd = -1;
	seg->memfd = true;
	snprintf(seg->name, sizeof(seg->name), "%s", label);
	/*
	 * Unsealed, the host could shrink it under our mapping (SIGBUS).  Only
	 * a memfd (shmem) has these seals: a pipe, a socket or a file on disk
	 * fails F_GET_SEALS, a /dev/shm file has only F_SEAL_SEAL.
	 */
	seals = fcntl(fd, F_GET_SEALS);
	if (seals >= 0 && (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) == (F_SEAL_SHRINK | F_SEAL_GROW))
		rc = open_mapped(seg, fd, size, true);
	close(fd);
	return rc;
}

void hgsmi_int_segment_close(struct hgsmi_segment *seg, bool unlink)
{
	if (seg->base && !seg->keep_mapping)
		munmap(seg->base, seg->size);
	seg->base = NULL;
	if (seg->fd >= 0)
		close(seg->fd);
	seg->fd = -1;
	/* A memfd has no name to remove: it goes with its last fd and mapping. */
	if (unlink && seg->name[0] && !seg->memfd)
		shm_unlink(seg->name);
}

static bool owner_alive(const char *shm)
{
	struct hgsmi_segment_header h;
	int fd = shm_open(shm, O_RDONLY | O_CLOEXEC, 0);
	bool alive = false;

	if (fd < 0)
		return false;
	if (pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
	    h.magic == HGSMI_SEGMENT_MAGIC && h.host_pid != (uint32_t)getpid() &&
	    h.host_pid != 0)
		alive = kill((pid_t)h.host_pid, 0) == 0 || errno == EPERM;
	close(fd);
	return alive;
}

int hgsmi_int_segment_cleanup(const char *key, bool all_stale)
{
	char prefix[HGSMI_NAME_MAX], path[sizeof(((struct dirent *)0)->d_name) + 1];
	size_t plen;
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	int removed = 0;

	if (!d)
		return 0;
	plen = (size_t)snprintf(prefix, sizeof(prefix), "hgsmi-%s.", key);
	while ((e = readdir(d))) {
		const char *n = e->d_name;

		if (strncmp(n, prefix, plen) == 0) {
			snprintf(path, sizeof(path), "/%s", n);
			if (all_stale || !owner_alive(path)) {
				if (shm_unlink(path) == 0)
					removed++;
			}
		} else if (strncmp(n, "sem.", 4) == 0 && strncmp(n + 4, prefix, plen) == 0) {
			snprintf(path, sizeof(path), "/%s", n + 4);
			if (all_stale && sem_unlink(path) == 0)
				removed++;
		}
	}
	closedir(d);
	return removed;
}

int hgsmi_unmap(void *base, uint32_t size)
{
	return munmap(base, size) < 0 ? -errno : 0;
}
