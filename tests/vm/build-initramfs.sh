#!/bin/sh
# SPDX-License-Identifier: MIT
#
# tests/vm/build-initramfs.sh OUT GUEST - a minimal initramfs for the VM test:
# busybox-static, the static vm_guest, and an /init that mounts proc, sysfs
# and devtmpfs, enables the ivshmem device, runs the guest (its phase comes
# from the kernel command line, hgsmi.phase=...) and powers off.  No kernel
# modules: the guest polls the IRQ bit (see README, "A virtual machine as a
# guest").
set -eu
out=$1
guest=$2
busybox=$(command -v busybox)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev"
cp "$busybox" "$root/bin/busybox"
cp "$guest" "$root/vm_guest"
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for d in /sys/bus/pci/devices/*; do
	if [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ]; then
		echo 1 > "$d/enable" 2>/dev/null
	fi
done
/vm_guest
echo "vm_guest: exit $?"
poweroff -f
INIT
chmod 755 "$root/init" "$root/vm_guest"
(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) > "$out"
