#!/bin/sh
# SPDX-License-Identifier: MIT
#
# tests/vm/ensure-deps.sh - install what the VM test needs and is missing
# (Debian: qemu-system-x86, linux-image-amd64, busybox-static), then print
# the kernel to boot.  Exit 3 with a one-line reason where that is impossible
# (make test-vm then reports the test as skipped).
set -u
kernel() { ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1; }
missing=
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$missing qemu-system-x86"
[ -n "$(kernel)" ] || missing="$missing linux-image-amd64"
command -v busybox >/dev/null 2>&1 || missing="$missing busybox-static"
if [ -n "$missing" ]; then
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "skipped: no apt-get to install$missing" >&2
		exit 3
	fi
	echo "test-vm: installing$missing" >&2
	{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends $missing; } >/dev/null 2>&1
	if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || [ -z "$(kernel)" ] ||
	   ! command -v busybox >/dev/null 2>&1; then
		echo "skipped: could not install$missing (apt-get failed)" >&2
		exit 3
	fi
fi
kernel
