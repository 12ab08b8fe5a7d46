/* SPDX-License-Identifier: MIT */
/*
 * guest_pci.c - a guest inside a QEMU VM, attached through the ivshmem-doorbell
 * PCI device instead of the control socket: BAR2 is the segment the host
 * created for this VM, BAR0 holds the Doorbell register.  Both are mapped
 * from sysfs, so no kernel driver is needed.  Everything the host wrote is
 * checked as for a segment passed by fd.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define PCI_DEVICES "/sys/bus/pci/devices"
#define IVSHMEM_VENDOR 0x1af4
#define IVSHMEM_DEVICE 0x1110
/* BAR0 registers (QEMU docs/specs/ivshmem-spec.rst) */
#define IVSHMEM_REG_IVPOSITION 0x08
#define IVSHMEM_REG_DOORBELL 0x0c
#define IVSHMEM_HOST_PEER 0u /* the hgsmi host is always peer 0 */
#define IVSHMEM_DOORBELL_VECTOR 0u

static unsigned read_hex(const char *dir, const char *file)
{
	char path[256], buf[32] = {0};
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	if (!(f = fopen(path, "re")))
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return (unsigned)strtoul(buf, NULL, 16);
}

/* A BDF as sysfs spells it: hex digits, ':' and '.', nothing else. */
static bool bdf_ok(const char *bdf)
{
	size_t n = strlen(bdf);

	return n > 0 && n < 32 && strspn(bdf, "0123456789abcdefABCDEF:.") == n;
}

/* The first ivshmem device's directory into dir (128 bytes). */
static int find_device(char *dir, size_t len)
{
	DIR *d = opendir(PCI_DEVICES);
	struct dirent *e;
	int rc = -ENOENT;

	if (!d)
		return -ENOENT;
	while (rc < 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.' || !bdf_ok(e->d_name))
			continue;
		snprintf(dir, len, PCI_DEVICES "/%s", e->d_name);
		if (read_hex(dir, "vendor") == IVSHMEM_VENDOR &&
		    read_hex(dir, "device") == IVSHMEM_DEVICE)
			rc = 0;
	}
	closedir(d);
	return rc;
}

/* Map a BAR's sysfs resource file whole; *len gets its size. */
static int map_bar(const char *dir, int bar, void **out, size_t *len)
{
	char path[256];
	struct stat st;
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/resource%d", dir, bar);
	fd = open(path, O_RDWR | O_SYNC | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		close(fd);
		return -ENOENT;
	}
	*len = (size_t)st.st_size;
	*out = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (*out == MAP_FAILED)
		rc = -errno;
	close(fd);
	return rc;
}

/* BAR2 as the segment: the host's header, checked against the BAR size. */
static int open_segment(const char *dir, struct hgsmi_segment *seg)
{
	void *base;
	size_t len;
	int rc;

	memset(seg, 0, sizeof(*seg));
	seg->fd = -1;
	seg->memfd = true; /* nothing to unlink from inside a VM */
	if ((rc = map_bar(dir, 2, &base, &len)) < 0)
		return rc;
	if (len > UINT32_MAX || len < sizeof(struct hgsmi_segment_header)) {
		munmap(base, len);
		return -EPROTO;
	}
	seg->base = base;
	seg->size = (uint32_t)len;
	snprintf(seg->name, sizeof(seg->name), "ivshmem");
	rc = hgsmi_int_segment_validate(hgsmi_int_seg_hdr(seg), seg->size, seg);
	if (rc < 0) {
		munmap(base, len);
		seg->base = NULL;
	}
	return rc;
}

int hgsmi_guest_attach_pci(const char *bdf, const struct hgsmi_guest_config *cfg,
			   struct hgsmi_guest **out)
{
	struct hgsmi_segment seg;
	struct hgsmi_notify db = {.backend = HGSMI_INT_BACKEND_MMIO, .fd = -1};
	struct hgsmi_notify irq = {.backend = HGSMI_INT_BACKEND_POLL, .fd = -1};
	struct hgsmi_segment_header *h;
	char dir[128];
	size_t len = 0;
	void *regs = NULL;
	int rc;

	if (!out)
		return -EINVAL;
	if (bdf && *bdf) {
		if (!bdf_ok(bdf))
			return -EINVAL;
		snprintf(dir, sizeof(dir), PCI_DEVICES "/%s", bdf);
		if (read_hex(dir, "vendor") != IVSHMEM_VENDOR ||
		    read_hex(dir, "device") != IVSHMEM_DEVICE)
			return -ENOENT;
	} else if ((rc = find_device(dir, sizeof(dir))) < 0) {
		return rc;
	}
	if ((rc = map_bar(dir, 0, &regs, &len)) < 0)
		return rc;
	if (len < IVSHMEM_REG_DOORBELL + 4) {
		munmap(regs, len);
		return -EPROTO;
	}
	db.map = regs;
	db.map_len = len;
	db.reg = (volatile uint32_t *)((uint8_t *)regs + IVSHMEM_REG_DOORBELL);
	db.reg_value = IVSHMEM_HOST_PEER << 16 | IVSHMEM_DOORBELL_VECTOR;
	if ((rc = open_segment(dir, &seg)) < 0) {
		hgsmi_int_notify_close(&db, false);
		return rc;
	}
	/*
	 * Experimental, asked for with HGSMI_PCI_IRQ=vfio: a real interrupt,
	 * with the device bound to vfio-pci.  Under TCG with q35 + intel-iommu
	 * the VM froze after a few interrupts, so polling is the default; it is
	 * also the fallback where VFIO refuses (no IOMMU group, not viable).
	 */
	const char *mode = getenv("HGSMI_PCI_IRQ");

	if (!mode || strcmp(mode, "vfio") != 0 ||
	    hgsmi_int_vfio_irq(dir, strrchr(dir, '/') + 1, &irq) < 0)
		irq = (struct hgsmi_notify){.backend = HGSMI_INT_BACKEND_POLL, .fd = -1};
	h = hgsmi_int_seg_hdr(&seg);
	irq.flags = &h->host_flags.value;
	irq.epoch = &h->epoch;
	irq.epoch_seen = READ_ONCE(h->epoch);
	return hgsmi_int_guest_create_mapped(&seg, &db, &irq, cfg ? cfg->spin_us : 0, out);
}
