/* SPDX-License-Identifier: MIT */
/*
 * guest_vfio.c - a real interrupt for a VM guest: with the ivshmem device
 * bound to vfio-pci (behind an IOMMU, e.g. QEMU's q35 + intel-iommu), VFIO
 * routes MSI-X vector 0, which the host raises through QEMU, to an eventfd.
 * That eventfd is exactly what a process guest sleeps on, so every wait and
 * hgsmi_guest_fileno work as for one.  Only the IRQ goes through VFIO; the
 * BARs stay mapped through sysfs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/vfio.h>

#include "internal.h"

/* The basename of a sysfs link (driver, iommu_group) of the device. */
static int link_name(const char *devdir, const char *link, char *out, size_t len)
{
	char path[256], target[PATH_MAX];
	ssize_t n;
	const char *base;

	snprintf(path, sizeof(path), "%s/%s", devdir, link);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return -ENODEV;
	target[n] = 0;
	base = strrchr(target, '/');
	base = base ? base + 1 : target;
	if (strlen(base) >= len)
		return -ENAMETOOLONG;
	strcpy(out, base);
	return 0;
}

int hgsmi_int_vfio_irq(const char *devdir, const char *bdf, struct hgsmi_notify *irq)
{
	struct vfio_group_status status = {.argsz = sizeof(status)};
	char driver[64], group[32], path[64];
	/* vfio_irq_set ends in a flexible array: here one eventfd. */
	union {
		struct vfio_irq_set set;
		uint8_t bytes[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
	} req;
	int32_t fd;
	int container = -1, grp = -1, dev = -1, efd = -1, rc;

	if (link_name(devdir, "driver", driver, sizeof(driver)) < 0 ||
	    strcmp(driver, "vfio-pci") != 0 ||
	    link_name(devdir, "iommu_group", group, sizeof(group)) < 0)
		return -ENODEV;
	snprintf(path, sizeof(path), "/dev/vfio/%s", group);
	if ((container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC)) < 0 ||
	    (grp = open(path, O_RDWR | O_CLOEXEC)) < 0)
		goto fail;
	if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION ||
	    ioctl(grp, VFIO_GROUP_GET_STATUS, &status) < 0 ||
	    !(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		errno = ENODEV;
		goto fail;
	}
	/* A group joins a container, the container gets an IOMMU model; only
	 * then does the group hand out the device. */
	if (ioctl(grp, VFIO_GROUP_SET_CONTAINER, &container) < 0 ||
	    ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0 ||
	    (dev = ioctl(grp, VFIO_GROUP_GET_DEVICE_FD, bdf)) < 0 ||
	    (efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
		goto fail;
	req.set = (struct vfio_irq_set){
		.argsz = sizeof(req), .index = VFIO_PCI_MSIX_IRQ_INDEX, .start = 0, .count = 1,
		.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER};
	fd = efd;
	memcpy(req.set.data, &fd, sizeof(fd));
	if (ioctl(dev, VFIO_DEVICE_SET_IRQS, &req) < 0)
		goto fail;
	*irq = (struct hgsmi_notify){.backend = HGSMI_BACKEND_EVENTFD, .fd = efd,
				     .extra_fds = {container, grp, dev}, .n_extra = 3};
	return 0;
fail:
	rc = -errno;
	if (efd >= 0)
		close(efd);
	if (dev >= 0)
		close(dev);
	if (grp >= 0)
		close(grp);
	if (container >= 0)
		close(container);
	return rc;
}
