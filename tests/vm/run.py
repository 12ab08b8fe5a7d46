"""``make test-vm``: a real QEMU VM as an hgsmi guest, through ivshmem-doorbell.

Boots one VM at a time (``-smp 1 -m 256M``; TCG unless HGSMI_VM_ACCEL=kvm)
with a Python :class:`hgsmi.Host` as its ivshmem server and checks, each as
one test whose outcome is printed:

- vm_guest's phases inside the VM: 1,000 calls of 1 B..1 MiB verified by
  CRC-32, 1,000 host posts through the FIFO and the IRQ, zero-copy buffers
  filled in place both ways, and the figures (64 B call RTT, streams);
- a process guest (the same vm_guest binary, attached over the control
  socket) served by the same host at the same time, and its figures;
- the VM killed in the middle of a stream: the host reclaims its guest and a
  new VM attaches (a larger epoch) and is served.

Ends with "N passed, N failed" and exits 0 only if all passed.  Where QEMU
cannot be found it prints one "skipped" line and exits 0.  Usage:
``run.py KERNEL INITRD PROCESS_GUEST``.
"""
from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from driver import Vm, VmHost  # noqa: E402

BOOT_TIMEOUT = 90.0  # TCG boots the kernel in ~5 s; generous for a loaded machine
PHASE_TIMEOUT = 240.0


def serve_until(vh: VmHost, vm: Vm, want: Callable[[str], bool], timeout: float,
                procs: list[subprocess.Popen[bytes]] | None = None) -> str:
    """Serve the host until a console line satisfies ``want``; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        vh.host.poll(0.02)
        vh.run_actions()
        try:
            while True:
                line = vm.lines.get_nowait()
                if "vm_guest:" in line and "FAIL" in line:
                    raise AssertionError(f"guest: {line}")
                if want(line):
                    return line
        except queue.Empty:
            pass
        if not vm.alive() and vm.lines.empty():
            raise AssertionError("the VM exited early; console tail:\n  " +
                                 "\n  ".join(vm.log[-15:]))
    raise AssertionError(f"timed out after {timeout:.0f} s; console tail:\n  " +
                         "\n  ".join(vm.log[-15:]))


def main() -> int:
    kernel, initrd, guest_bin = sys.argv[1:4]
    if not shutil.which("qemu-system-x86_64"):
        print("skipped: qemu-system-x86_64 is not installed and could not be")
        return 0
    accel = os.environ.get("HGSMI_VM_ACCEL", "tcg")
    tmp = tempfile.mkdtemp(prefix="hgsmi-vm-")
    sock = os.path.join(tmp, "ivshmem.sock")
    os.environ["HGSMI_RUNTIME_DIR"] = tmp
    name = f"vm{os.getpid() % 100000}"
    vh = VmHost(name, sock)
    results: list[tuple[str, bool]] = []
    vms: list[Vm] = []
    procs: list[subprocess.Popen[bytes]] = []
    print(f"vm test: accel={accel} (nested KVM hangs at boot here), interrupt mode: "
          "polling the IRQ bit; /dev/vhost-vsock "
          f"{'exists' if os.path.exists('/dev/vhost-vsock') else 'absent: no vsock baseline'}")

    def check(label: str, fn: Callable[[], None]) -> None:
        t0 = time.monotonic()
        try:
            fn()
            results.append((label, True))
            print(f"PASSED {label} ({time.monotonic() - t0:.1f} s)", flush=True)
        except Exception:
            results.append((label, False))
            print(f"FAILED {label}\n{traceback.format_exc()}", flush=True)

    state: dict[str, object] = {}

    def boot_and_attach() -> None:
        vm = Vm(kernel, initrd, sock, "all", accel)
        vms.append(vm)
        line = serve_until(vh, vm, lambda s: "vm_guest: attached" in s, BOOT_TIMEOUT)
        print("  " + line.strip())
        state["vm"] = vm
        assert len(vh.host.guests) == 1

    def calls_with_process_guest() -> None:
        vm = state["vm"]
        assert isinstance(vm, Vm)
        # A process guest at the same time, on the same host.
        p = subprocess.Popen([guest_bin, "--host", name, "--phase", "calls"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(p)
        serve_until(vh, vm, lambda s: "vm_guest: calls ok" in s, PHASE_TIMEOUT)
        while p.poll() is None:
            vh.host.poll(0.02)
        out = p.stdout.read().decode() if p.stdout else ""
        assert p.returncode == 0 and "calls ok n=1000" in out, out
        assert sum(1 for n in vh.calls.values() if n >= 1000) == 2, vh.calls

    def posts() -> None:
        serve_until(vh, state["vm"], lambda s: "vm_guest: posts ok n=1000" in s,  # type: ignore
                    PHASE_TIMEOUT)

    def zerocopy() -> None:
        serve_until(vh, state["vm"], lambda s: "vm_guest: zerocopy ok" in s,  # type: ignore
                    PHASE_TIMEOUT)

    def bench_vm() -> None:
        serve_until(vh, state["vm"], lambda s: "vm_guest: done" in s, PHASE_TIMEOUT)  # type: ignore
        vm = state["vm"]
        assert isinstance(vm, Vm)
        vm.proc.wait(timeout=30)
        for line in vm.log:
            if "vm_guest:" in line and ("rtt" in line or "stream" in line):
                print("  " + line[line.index("vm_guest:"):])

    def bench_process() -> None:
        p = subprocess.Popen([guest_bin, "--host", name, "--phase", "all"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(p)
        deadline = time.monotonic() + PHASE_TIMEOUT
        while p.poll() is None and time.monotonic() < deadline:
            vh.host.poll(0.02)
            vh.run_actions()
        out = p.stdout.read().decode() if p.stdout else ""
        assert p.returncode == 0, out
        for line in out.splitlines():
            if "rtt" in line or "stream" in line:
                print("  " + line)

    def kill_and_reattach() -> None:
        vm = Vm(kernel, initrd, sock, "stream", accel)
        vms.append(vm)
        serve_until(vh, vm, lambda s: "vm_guest: attached" in s, BOOT_TIMEOUT)
        first = vh.host.guests[0]
        epoch = first.stats()["epoch"]
        serve_until(vh, vm, lambda s: "vm_guest: calls ok" in s, PHASE_TIMEOUT)
        before = vh.calls.get(first.id, 0)
        t_end = time.monotonic() + 0.5
        while time.monotonic() < t_end:  # mid-transfer: calls keep coming
            vh.host.poll(0.01)
        assert vh.calls.get(first.id, 0) > before, "not streaming when killed"
        vm.kill()
        deadline = time.monotonic() + 10
        while vh.host.guests and time.monotonic() < deadline:
            vh.host.poll(0.05)
        assert not vh.host.guests, "the killed VM's guest was not reclaimed"
        gone = vh.host.departed[-1]
        assert gone["guest_id"] == first.id, gone
        vm2 = Vm(kernel, initrd, sock, "quick", accel)
        vms.append(vm2)
        serve_until(vh, vm2, lambda s: "vm_guest: done" in s, BOOT_TIMEOUT + 60)
        assert vh.calls.get(max(vh.calls), 0) >= 42
        print(f"  killed VM guest {first.id} (epoch {epoch}) reclaimed; new VM: "
              f"{[ln for ln in vm2.log if 'attached' in ln][0].strip()}")

    try:
        check("boot a VM whose ivshmem device the hgsmi host serves", boot_and_attach)
        if results[-1][1]:
            check("1,000 VM calls of 1 B..1 MiB (CRC-32) with a process guest at once",
                  calls_with_process_guest)
            check("1,000 host posts through the FIFO and the IRQ", posts)
            check("zero-copy buffers filled in place, both directions", zerocopy)
            check("VM figures", bench_vm)
        check("process guest figures on the same host", bench_process)
        check("VM killed mid-stream: reclaimed, a new VM attaches", kill_and_reattach)
    finally:
        for vm in vms:
            vm.kill()
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for r in vh.reports:
            print("  report " + r)
        vh.host.close()
        shutil.rmtree(tmp, ignore_errors=True)
    passed = sum(ok for _, ok in results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
