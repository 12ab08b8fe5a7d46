#!/bin/sh
# SPDX-License-Identifier: MIT
#
# tests/vm/build-initramfs.sh OUT GUEST [MODULES] - a minimal initramfs for
# the VM test: busybox-static, the static vm_guest, and an /init that mounts
# proc, sysfs and devtmpfs, enables the ivshmem device, runs the guest (its
# phase comes from the kernel command line, hgsmi.phase=...) and powers off.
# With MODULES (a kernel's /lib/modules/<version>), the VFIO modules go in
# too, and hgsmi.irq=vfio on the command line loads them and binds the
# device to vfio-pci, so the guest gets MSI-X as an eventfd; without, it
# polls the IRQ bit (see README, "A virtual machine as a guest").
set -eu
out=$1
guest=$2
modules=${3:-}
busybox=$(command -v busybox)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev"
cp "$busybox" "$root/bin/busybox"
cp "$guest" "$root/vm_guest"
if [ -n "$modules" ]; then
	mkdir -p "$root/lib/vfio"
	# In load order: each after what it depends on.
	for m in drivers/vfio/vfio drivers/vfio/vfio_iommu_type1 drivers/vfio/vfio_virqfd \
		 virt/lib/irqbypass drivers/vfio/pci/vfio-pci-core drivers/vfio/pci/vfio-pci; do
		cp "$modules/kernel/$m.ko" "$root/lib/vfio/"
	done
	printf '%s\n' vfio vfio_iommu_type1 vfio_virqfd irqbypass vfio-pci-core vfio-pci \
		> "$root/lib/vfio/order"
fi
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
if grep -q 'hgsmi.irq=vfio' /proc/cmdline && [ -f /lib/vfio/order ]; then
	while read -r m; do insmod "/lib/vfio/$m.ko"; done < /lib/vfio/order
	echo 1af4 1110 > /sys/bus/pci/drivers/vfio-pci/new_id
	echo "vm_guest: vfio: $(ls /dev/vfio | tr '\n' ' ')"
	export HGSMI_PCI_IRQ=vfio
fi
/vm_guest
echo "vm_guest: exit $?"
grep vfio /proc/interrupts | sed 's/^/vm_guest: interrupts: /'
poweroff -f
INIT
chmod 755 "$root/init" "$root/vm_guest"
(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) > "$out"
