"""The host side of the VM test: a Python :class:`hgsmi.Host` that is also the
ivshmem server of a QEMU VM running ``native/examples/vm_guest.c``.

:class:`VmHost` serves the channels vm_guest.c speaks (see its header):
calls answered by their CRC-32, host commands posted when the guest asks,
zero-copy buffers checked and inverted in place, streams timed on the host
clock.  :class:`Vm` boots one VM (one at a time: the machine is small) and
collects its console lines.  ``tests/vm/run.py`` strings them together.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import struct
import subprocess
import threading
import time
import zlib
from typing import Any

from hgsmi import Host, Message
from hgsmi._native import ffi, lib

CH_CALL, CH_POST, CH_CTRL, CH_SINK, CH_ZC, CH_ZCPOST = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15
(CTRL_POSTS, CTRL_POSTS_OK, CTRL_ZCPOST, CTRL_STREAM, CTRL_STREAM_END, CTRL_HOSTSTREAM,
 CTRL_REPORT, CTRL_DONE) = range(1, 9)

_INVERT = bytes(255 - i for i in range(256))


def pattern(size: int, mul: int, add: int) -> bytes:
    """Byte k is (k * mul + add) & 0xff: what both sides fill in place."""
    period = bytes((k * mul + add) & 0xFF for k in range(256))
    return (period * (size // 256 + 1))[:size]


class VmHost:
    """An hgsmi host that is the ivshmem server, with the test's handlers."""

    def __init__(self, name: str, ivshmem: str) -> None:
        self.host = Host(name, 16 << 20, ivshmem=ivshmem, max_doorbells_per_s=0)
        self.calls: dict[int, int] = {}  # guest id -> verified calls
        self.actions: list[tuple[Any, ...]] = []  # run by the main loop, not in a handler
        self.reports: list[str] = []
        self.done: set[int] = set()
        self.posted_xor: dict[int, int] = {}
        self.sink_bytes = 0
        self.sink_t0 = 0.0
        self.stream_t0 = 0.0
        self.stream_mbs: dict[int, float] = {}
        for ch, fn in ((CH_CALL, self._call), (CH_CTRL, self._ctrl), (CH_SINK, self._sink),
                       (CH_ZC, self._zc)):
            self.host.register(ch, fn)

    # -- handlers --------------------------------------------------------------
    def _call(self, msg: Message) -> bytes:
        gid = msg.guest.id
        self.calls[gid] = self.calls.get(gid, 0) + 1
        return zlib.crc32(msg.data).to_bytes(4, "little")

    def _sink(self, msg: Message) -> None:
        if not self.sink_bytes:
            self.sink_t0 = time.monotonic()
        self.sink_bytes += len(msg.data)

    def _zc(self, msg: Message) -> None:
        data = msg.data
        if bytes(data) != pattern(len(data), 13, msg.info):
            raise ValueError("zero-copy buffer not as filled")
        data[:] = bytes(data).translate(_INVERT)  # the reply, in place

    def _ctrl(self, msg: Message) -> bytes | None:
        conn, info, data = msg.guest, msg.info, bytes(msg.data)
        if info == CTRL_POSTS:
            self.actions.append(("posts", conn, struct.unpack_from("<I", data)[0]))
        elif info == CTRL_POSTS_OK:
            count, bad, xor = struct.unpack_from("<III", data)
            ok = bad == 0 and xor == self.posted_xor.get(conn.id)
            return bytes([ok])
        elif info == CTRL_ZCPOST:
            self.actions.append(("zcpost", conn) + struct.unpack_from("<II", data))
        elif info == CTRL_STREAM:
            self.sink_bytes = 0
        elif info == CTRL_HOSTSTREAM:
            self.actions.append(("hoststream", conn) + struct.unpack_from("<II", data))
        elif info == CTRL_STREAM_END:
            size = struct.unpack_from("<I", data)[0]
            if self.stream_mbs.get(size) is None:  # guest -> host: timed here
                secs = time.monotonic() - self.sink_t0
                self.stream_mbs[size] = self.sink_bytes / secs / 1e6 if secs > 0 else 0.0
            mbs = self.stream_mbs.pop(size)
            return f"{mbs:.0f}".encode()
        elif info == CTRL_REPORT:
            self.reports.append(f"guest {conn.id}: {data.decode(errors='replace')}")
        elif info == CTRL_DONE:
            self.done.add(conn.id)
        return None

    # -- what a handler asked for, run between polls -----------------------------
    def run_actions(self) -> None:
        while self.actions:
            what, conn, *args = self.actions.pop(0)
            getattr(self, "_do_" + what)(conn, *args)

    def _do_posts(self, conn: Any, n: int) -> None:
        xor, datas = 0, []
        for seq in range(n):
            body = os.urandom(8 + seq * 37 % 4000)
            crc = zlib.crc32(body)
            xor ^= crc
            datas.append(struct.pack("<II", seq, crc) + body)
        self.posted_xor[conn.id] = xor
        conn.post_many(CH_POST, 0, datas, timeout=30)

    def _do_zcpost(self, conn: Any, n: int, size: int) -> None:
        msg = ffi.new("struct hgsmi_msg *")
        base = ffi.cast("char *", lib.hgsmi_conn_base(conn._c))
        for i in range(n):
            info = i & 0xFF
            while lib.hgsmi_conn_alloc(conn._c, size, CH_ZCPOST, info, msg) < 0:
                self.host.poll(0.001)  # acks give the host heap back
            ffi.buffer(base + msg.data, size)[:] = pattern(size, 7, info)  # in place
            while lib.hgsmi_conn_submit(conn._c, msg.offset) == -11:  # FIFO full
                self.host.poll(0.001)

    def _do_hoststream(self, conn: Any, size: int, n: int) -> None:
        payload = os.urandom(size)
        t0 = time.monotonic()
        conn.post_many(CH_SINK, 0, (payload for _ in range(n)), timeout=60)
        while conn.alive and conn.stats()["inflight_host"]:
            self.host.poll(0.001)
        secs = time.monotonic() - t0
        self.stream_mbs[size] = size * n / secs / 1e6


class Vm:
    """One QEMU VM whose ivshmem device talks to ``sock``; console lines queued."""

    def __init__(self, kernel: str, initrd: str, sock: str, phase: str, accel: str,
                 irq: str = "poll") -> None:
        qemu = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
        append = f"console=ttyS0 quiet panic=-1 hgsmi.phase={phase}"
        # MSI-X through VFIO needs an IOMMU group: q35 with an emulated VT-d.
        machine = ["-M", "q35", "-device", "intel-iommu"] if irq == "vfio" else ["-M", "pc"]
        if irq == "vfio":
            append += " intel_iommu=on hgsmi.irq=vfio"
        cmd = [qemu, *machine, "-accel", accel, "-cpu", "max" if accel == "tcg" else "host",
               # One vCPU, but maxcpus=2: TCG then translates the guest's locked
               # instructions and fences into host atomics and barriers.  With
               # a single possible vCPU it elides them (nobody else could see
               # the difference), and the host process is somebody else.
               "-smp", "1,maxcpus=2", "-m", "256M", "-kernel", kernel, "-initrd", initrd,
               "-append", append,
               "-chardev", f"socket,path={sock},id=iv",
               "-device", "ivshmem-doorbell,chardev=iv,vectors=1",
               "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"]
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            self.lines.put(line)

    def kill(self) -> None:
        """SIGKILL the VM (and wait for it)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc.poll() is None
